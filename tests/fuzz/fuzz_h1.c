/*
 * Fuzz target for the HTTP/1 parser (requests, or responses when built with -DFUZZ_H1_RESPONSES).
 *
 * Besides "no crash, no leak, no UB" it checks properties that must hold for any input:
 *   - feeding the input in one piece and byte by byte gives the same events (bodies compared as one stream) or the
 *     same error;
 *   - every head the parser hands up is well formed (lower-case token names, values without CR/LF/NUL,
 *     NUL-terminated strings) and the encoders can write it;
 *   - a request head re-encoded and parsed again is accepted with the same method, target and fields.
 * A violated property aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o/string_.h>
#include "http1/h1codec.h"

#ifdef FUZZ_H1_RESPONSES
#define PARSER_TYPE RM_H1_PARSE_RESPONSES
#else
#define PARSER_TYPE RM_H1_PARSE_REQUESTS
#endif

#define MAX_INPUT 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static h2o_buffer_prototype_t proto = {.allocator = {.max = 16}, ._initial_buf = {.capacity = 512}};

typedef struct st_fuzz_ctx_t {
    h2o_mem_pool_t pool;
    uint64_t hash;
    int completes;
    int check_round_trip;
    int expect_head;
} fuzz_ctx_t;

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_h1: property violated: %s\n", what);
        abort();
    }
}

static void
mix(fuzz_ctx_t *c, const void *p, size_t len)
{
    /* FNV-1a: byte-sequential, so a body hashed in pieces hashes like the whole */
    const uint8_t *b = p;
    for (size_t i = 0; i != len; ++i) {
        c->hash ^= b[i];
        c->hash *= 0x100000001b3ULL;
    }
}

static void
mix_event(fuzz_ctx_t *c, char ev)
{
    static const char marker[] = "\xff\xfe";
    mix(c, marker, 2);
    mix(c, &ev, 1);
}

static void
check_string(h2o_iovec_t s)
{
    check(s.len == 0 || s.base != NULL, "string without a base");
    if (s.base != NULL)
        check(s.base[s.len] == '\0', "string not NUL-terminated");
}

static void
check_fields(fuzz_ctx_t *c, const rm_headers_t *h)
{
    check(h->size <= h->capacity, "field array overflow");
    for (size_t i = 0; i != h->size; ++i) {
        const rm_header_t *f = h->entries + i;
        check_string(f->name);
        check_string(f->value);
        check(f->name.len != 0, "empty field name");
        for (size_t j = 0; j != f->name.len; ++j)
            check(f->name.base[j] > 0x20 && f->name.base[j] < 0x7f && f->name.base[j] != ':' &&
                      !(f->name.base[j] >= 'A' && f->name.base[j] <= 'Z'),
                  "field name not a lower-case token");
        for (size_t j = 0; j != f->value.len; ++j)
            check(f->value.base[j] != '\r' && f->value.base[j] != '\n' && f->value.base[j] != '\0', "CR, LF or NUL in a value");
        check(!rm_header_is_hop_by_hop(f->name.base, f->name.len), "connection-specific field handed up");
        /* the spelling as sent: the same name but for case, kept only when it differs (no copy for lower-case names) */
        if (f->orig_name != NULL)
            check(h2o_lcstris(f->orig_name, f->name.len, f->name.base, f->name.len) &&
                      memcmp(f->orig_name, f->name.base, f->name.len) != 0,
                  "orig_name is not the name in another case");
        mix(c, f->name.base, f->name.len);
        mix_event(c, ':');
        mix(c, f->value.base, f->value.len);
        mix_event(c, ';');
    }
}

static h2o_mem_pool_t *
on_message_begin(void *ctx)
{
    fuzz_ctx_t *c = ctx;
    mix_event(c, 'b');
    return &c->pool;
}

static void round_trip(const rm_req_head_t *head);

static int
on_request_head(void *ctx, rm_req_head_t *h)
{
    fuzz_ctx_t *c = ctx;
    mix_event(c, 'q');
    check_string(h->method);
    check_string(h->scheme);
    check_string(h->authority);
    check_string(h->path);
    check(h->path.len != 0, "empty path");
    check(h->content_length >= -1, "negative content length");
    check(!h->has_body || h->content_length != 0, "body with length 0");
    mix(c, h->method.base, h->method.len);
    mix(c, h->authority.base, h->authority.len);
    mix(c, h->path.base, h->path.len);
    mix(c, &h->content_length, sizeof(h->content_length));
    uint8_t flags = (uint8_t)(h->has_body | h->te_trailers << 1 | h->is_grpc << 2 | h->expect_continue << 3);
    mix(c, &flags, 1);
    check_fields(c, &h->headers);
    check(h->host_orig_name == NULL ||
              (h2o_lcstris(h->host_orig_name, 4, H2O_STRLIT("host")) && memcmp(h->host_orig_name, "host", 4)),
          "host_orig_name is not Host in another case");
    check(h->upgrade.len == 0 || (h->orig_h1 && !h->has_body), "upgrade on a request with a body");

    h2o_buffer_t *buf;
    h2o_buffer_init(&buf, &proto);
    check(rm_h1_encode_request_head(&buf, h, 0) != 0, "a parsed request head cannot be encoded");
    check(rm_h1_encode_request_head(&buf, h, 1) != 0, "a parsed request head cannot be encoded (chunked)");
    h2o_buffer_dispose(&buf);
    if (c->check_round_trip)
        round_trip(h);
    return 0;
}

static int
on_response_head(void *ctx, rm_resp_head_t *h)
{
    fuzz_ctx_t *c = ctx;
    mix_event(c, 'r');
    check(h->status >= 100 && h->status <= 599, "status out of range");
    check(h->content_length >= -1, "negative content length");
    mix(c, &h->status, sizeof(h->status));
    mix(c, &h->content_length, sizeof(h->content_length));
    check_fields(c, &h->headers);

    h2o_buffer_t *buf;
    h2o_buffer_init(&buf, &proto);
    check(rm_h1_encode_response_head(&buf, h, 0, 0) != 0, "a parsed response head cannot be encoded");
    h2o_buffer_dispose(&buf);
    return 0;
}

static int
on_body(void *ctx, const char *data, size_t len)
{
    fuzz_ctx_t *c = ctx;
    check(len != 0, "empty body piece");
    mix(c, data, len);
    return 0;
}

static int
on_trailers(void *ctx, rm_headers_t *t)
{
    fuzz_ctx_t *c = ctx;
    mix_event(c, 't');
    check(t->size != 0, "empty trailers reported");
    check_fields(c, t);
    h2o_buffer_t *buf;
    h2o_buffer_init(&buf, &proto);
    check(rm_h1_encode_last_chunk(&buf, t) > 5, "trailers dropped by the encoder");
    h2o_buffer_dispose(&buf);
    return 0;
}

static int
on_message_complete(void *ctx, int keep_alive)
{
    fuzz_ctx_t *c = ctx;
    mix_event(c, keep_alive ? 'K' : 'C');
    ++c->completes;
    return 0;
}

static const rm_h1_callbacks_t callbacks = {
    on_message_begin, on_request_head, on_response_head, on_body, on_trailers, on_message_complete,
};

/* Feeds in pieces of `step` bytes (0: all at once), resuming after each message. Returns 0 or the error. */
static int
run(fuzz_ctx_t *c, const char *in, size_t len, size_t step, uint32_t max_headers, uint32_t max_bytes)
{
    rm_h1_parser_t *p = rm_h1_parser_create(PARSER_TYPE, &callbacks, c, max_headers, max_bytes);
    rm_h1_parser_expect_head_response(p, c->expect_head);
    size_t off = 0;
    int err = 0;
    while (off < len) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        int before = c->completes;
        ssize_t rv = rm_h1_parser_execute(p, in + off, n);
        if (rv < 0) {
            err = (int)rv;
            check(rm_h1_parser_execute(p, in, len) == rv, "error not sticky");
            break;
        }
        check((size_t)rv <= n, "consumed more than given");
        off += (size_t)rv;
        if (c->completes != before) {
            check(rm_h1_parser_execute(p, in + off, len - off) == 0, "a paused parser consumed bytes");
            rm_h1_parser_resume(p);
            rm_h1_parser_expect_head_response(p, c->expect_head);
        } else {
            check((size_t)rv == n, "short read without a complete message");
        }
    }
    if (err == 0)
        err = rm_h1_parser_finish(p);
    mix_event(c, 'E');
    mix(c, &err, sizeof(err));
    rm_h1_parser_destroy(p);
    return err;
}

static void
round_trip(const rm_req_head_t *head)
{
    h2o_buffer_t *buf;
    h2o_buffer_init(&buf, &proto);
    rm_req_head_t copy = *head;
    if (copy.content_length > 0)
        copy.content_length = 0; /* the head only: no body follows */
    /* HTTP/1.0 requests may come without a host; the encoder always writes one, maybe empty */
    size_t n = rm_h1_encode_request_head(&buf, &copy, 0);
    check(n != 0, "cannot encode for the round trip");

    fuzz_ctx_t c2;
    memset(&c2, 0, sizeof(c2));
    h2o_mem_init_pool(&c2.pool);
    /* the encoding may be a little longer (host, content-length, ": ") than what the limits let through */
    int err = run(&c2, buf->bytes, buf->size, 0, 64, 16384);
    check(err == 0 && c2.completes == 1, "a re-encoded request head is refused");
    h2o_mem_clear_pool(&c2.pool);
    h2o_buffer_dispose(&buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    const char *in = (const char *)data;

    fuzz_ctx_t one, split;
    memset(&one, 0, sizeof(one));
    memset(&split, 0, sizeof(split));
    h2o_mem_init_pool(&one.pool);
    h2o_mem_init_pool(&split.pool);
    one.check_round_trip = PARSER_TYPE == RM_H1_PARSE_REQUESTS;
    one.expect_head = split.expect_head = size % 3 == 0;

    /* small limits, so that the fuzzer reaches them */
    int err1 = run(&one, in, size, 0, 16, 4096);
    int err2 = run(&split, in, size, 1, 16, 4096);
    check(err1 == err2, "one-shot and byte-by-byte parsing end differently");
    if (err1 == 0)
        check(one.hash == split.hash && one.completes == split.completes, "one-shot and byte-by-byte events differ");

    h2o_mem_clear_pool(&one.pool);
    h2o_mem_clear_pool(&split.pool);
    return 0;
}
