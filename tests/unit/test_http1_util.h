/*
 * Shared by the tests of the HTTP/1 codec: a recorder that turns parser callbacks into a canonical text log (body
 * pieces are joined, so that any way of splitting the input must give the same log), and a driver that feeds input in
 * pieces of a given size and resumes after each message like a connection would.
 */
#ifndef remora__test_http1_util_h
#define remora__test_http1_util_h

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <h2o/string_.h>
#include "http1/h1codec.h"

/* each test file uses a subset of these helpers */
#pragma GCC diagnostic ignored "-Wunused-function"

typedef struct st_rec_t {
    h2o_mem_pool_t pool;
    char *log;
    size_t log_len;
    size_t log_cap;
    char *body;
    size_t body_len;
    size_t body_cap;
    int begins;
    int completes;
    const char *fail_in;                  /* name of the callback that returns -1 */
    const char *head_flags;               /* responses: 'H' at index n makes response n answer a HEAD request */
    rm_h1_parser_t *resume_from_callback; /* if set, on_message_complete resumes this parser itself */
    rm_req_head_t *last_req;
    rm_resp_head_t *last_resp;
    rm_headers_t *last_trailers;
} rec_t;

static void rec_printf(rec_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
rec_printf(rec_t *r, const char *fmt, ...)
{
    va_list args;
    for (;;) {
        va_start(args, fmt);
        int n = vsnprintf(r->log + r->log_len, r->log_cap - r->log_len, fmt, args);
        va_end(args);
        if ((size_t)n < r->log_cap - r->log_len) {
            r->log_len += (size_t)n;
            return;
        }
        r->log_cap = r->log_cap * 2 + (size_t)n;
        r->log = realloc(r->log, r->log_cap);
    }
}

static void
rec_init(rec_t *r)
{
    memset(r, 0, sizeof(*r));
    h2o_mem_init_pool(&r->pool);
    r->log_cap = 256;
    r->log = malloc(r->log_cap);
    r->log[0] = '\0';
}

static void
rec_dispose(rec_t *r)
{
    h2o_mem_clear_pool(&r->pool);
    free(r->log);
    free(r->body);
}

static void
rec_flush_body(rec_t *r)
{
    if (r->body_len != 0) {
        /* NUL is written as "\\0" so that logs stay C strings */
        rec_printf(r, "body %zu:", r->body_len);
        for (size_t i = 0; i != r->body_len; ++i)
            if (r->body[i] == '\0')
                rec_printf(r, "\\0");
            else
                rec_printf(r, "%c", r->body[i]);
        rec_printf(r, "\n");
        r->body_len = 0;
    }
}

static void
rec_fields(rec_t *r, const char *prefix, const rm_headers_t *h)
{
    for (size_t i = 0; i != h->size; ++i) {
        const rm_header_t *e = h->entries + i;
        /* the codec promises NUL-terminated strings */
        assert_int_equal(e->name.base[e->name.len], '\0');
        assert_int_equal(e->value.base[e->value.len], '\0');
        rec_printf(r, "%s%.*s: %.*s\n", prefix, (int)e->name.len, e->name.base, (int)e->value.len, e->value.base);
    }
}

static h2o_mem_pool_t *
rec_on_message_begin(void *ctx)
{
    rec_t *r = ctx;
    ++r->begins;
    rec_printf(r, "begin\n");
    return &r->pool;
}

static int
rec_on_request_head(void *ctx, rm_req_head_t *h)
{
    rec_t *r = ctx;
    r->last_req = h;
    assert_int_equal(h->method.base[h->method.len], '\0');
    assert_int_equal(h->scheme.base[h->scheme.len], '\0');
    assert_int_equal(h->authority.base[h->authority.len], '\0');
    assert_int_equal(h->path.base[h->path.len], '\0');
    rec_printf(r, "req %.*s %.*s %.*s %.*s cl=%lld body=%d te=%d grpc=%d expect=%d\n", (int)h->method.len, h->method.base,
               (int)h->scheme.len, h->scheme.base, (int)h->authority.len, h->authority.base, (int)h->path.len, h->path.base,
               (long long)h->content_length, h->has_body, h->te_trailers, h->is_grpc, h->expect_continue);
    rec_fields(r, "  ", &h->headers);
    return r->fail_in != NULL && strcmp(r->fail_in, "head") == 0 ? -1 : 0;
}

static int
rec_on_response_head(void *ctx, rm_resp_head_t *h)
{
    rec_t *r = ctx;
    r->last_resp = h;
    rec_printf(r, "resp %d cl=%lld\n", h->status, (long long)h->content_length);
    rec_fields(r, "  ", &h->headers);
    return r->fail_in != NULL && strcmp(r->fail_in, "head") == 0 ? -1 : 0;
}

static int
rec_on_body(void *ctx, const char *data, size_t len)
{
    rec_t *r = ctx;
    assert_true(len > 0);
    if (r->body_len + len > r->body_cap) {
        r->body_cap = (r->body_len + len) * 2;
        r->body = realloc(r->body, r->body_cap);
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    return r->fail_in != NULL && strcmp(r->fail_in, "body") == 0 ? -1 : 0;
}

static int
rec_on_trailers(void *ctx, rm_headers_t *t)
{
    rec_t *r = ctx;
    r->last_trailers = t;
    rec_flush_body(r);
    rec_printf(r, "trailers\n");
    rec_fields(r, "  ", t);
    return r->fail_in != NULL && strcmp(r->fail_in, "trailers") == 0 ? -1 : 0;
}

static int
rec_on_message_complete(void *ctx, int keep_alive)
{
    rec_t *r = ctx;
    rec_flush_body(r);
    rec_printf(r, "complete ka=%d\n", keep_alive);
    ++r->completes;
    if (r->resume_from_callback != NULL)
        rm_h1_parser_resume(r->resume_from_callback);
    return r->fail_in != NULL && strcmp(r->fail_in, "complete") == 0 ? -1 : 0;
}

static const rm_h1_callbacks_t rec_callbacks = {
    rec_on_message_begin, rec_on_request_head, rec_on_response_head, rec_on_body, rec_on_trailers, rec_on_message_complete,
};

static void
set_head_flag(rec_t *r, rm_h1_parser_t *p)
{
    if (r->head_flags != NULL && (size_t)r->completes < strlen(r->head_flags))
        rm_h1_parser_expect_head_response(p, r->head_flags[r->completes] == 'H');
}

/**
 * Feeds `len` bytes in pieces of `step` (0: all at once), resuming after each complete message, and then tells the
 * parser about EOF if `eof`. Returns the first error (logged as "error N") or 0.
 */
static int
drive(rec_t *r, rm_h1_parser_t *p, const char *in, size_t len, size_t step, int eof)
{
    size_t off = 0;
    set_head_flag(r, p);
    while (off < len) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        int before = r->completes;
        ssize_t rv = rm_h1_parser_execute(p, in + off, n);
        if (rv < 0) {
            rec_flush_body(r);
            rec_printf(r, "error %d\n", (int)rv);
            return (int)rv;
        }
        assert_true((size_t)rv <= n);
        off += (size_t)rv;
        if (r->completes != before) {
            /* a paused parser consumes nothing more */
            assert_int_equal(rm_h1_parser_execute(p, in + off, len - off), 0);
            rm_h1_parser_resume(p);
            set_head_flag(r, p);
        } else {
            assert_int_equal((size_t)rv, n);
        }
    }
    if (eof) {
        int rv = rm_h1_parser_finish(p);
        if (rv != 0) {
            rec_flush_body(r);
            rec_printf(r, "error %d\n", rv);
            return rv;
        }
        rec_printf(r, "eof\n");
    }
    return 0;
}

/** Parses `in` with a fresh parser, returns the log (caller frees) and the error in *err. */
static char *
parse_log(rm_h1_parser_type_t type, const char *in, size_t len, size_t step, int eof, uint32_t max_headers, uint32_t max_bytes,
          const char *head_flags, int *err)
{
    rec_t r;
    rec_init(&r);
    r.head_flags = head_flags;
    rm_h1_parser_t *p = rm_h1_parser_create(type, &rec_callbacks, &r, max_headers, max_bytes);
    int e = drive(&r, p, in, len, step, eof);
    rec_flush_body(&r);
    if (err != NULL)
        *err = e;
    rm_h1_parser_destroy(p);
    char *log = strdup(r.log);
    rec_dispose(&r);
    return log;
}

static const size_t test_steps[] = {0, 1, 2, 3, 5, 7, 13, 64};

/**
 * Parses `in` once in one piece and again split in many ways; every run must give `expected` (if not NULL) and the
 * same log, or, for input that fails, the same error (what was delivered before the error legitimately depends on
 * how the input was split). Returns the error of the one-shot run.
 */
static int
check_parse_ex(rm_h1_parser_type_t type, const char *in, size_t len, int eof, uint32_t max_headers, uint32_t max_bytes,
               const char *head_flags, const char *expected)
{
    int err0 = 0;
    char *first = parse_log(type, in, len, 0, eof, max_headers, max_bytes, head_flags, &err0);
    if (expected != NULL && strcmp(first, expected) != 0) {
        print_error("log mismatch for input:\n%.*s\n--- got:\n%s--- expected:\n%s", (int)len, in, first, expected);
        fail();
    }
    for (size_t i = 1; i != sizeof(test_steps) / sizeof(test_steps[0]); ++i) {
        int err = 0;
        char *log = parse_log(type, in, len, test_steps[i], eof, max_headers, max_bytes, head_flags, &err);
        if (err0 == 0 && strcmp(first, log) != 0) {
            print_error("step %zu differs from one shot:\n--- step:\n%s--- one shot:\n%s", test_steps[i], log, first);
            fail();
        }
        assert_int_equal(err, err0);
        free(log);
    }
    free(first);
    return err0;
}

#define check_req(in, expected) check_parse_ex(RM_H1_PARSE_REQUESTS, (in), sizeof(in) - 1, 0, 0, 0, NULL, (expected))
#define check_resp(in, eof, flags, expected)                                                                                       \
    check_parse_ex(RM_H1_PARSE_RESPONSES, (in), sizeof(in) - 1, (eof), 0, 0, (flags), (expected))

/** The error a request gives, whatever the split (asserted equal for all splits). */
#define req_error(in) check_parse_ex(RM_H1_PARSE_REQUESTS, (in), sizeof(in) - 1, 0, 0, 0, NULL, NULL)
#define resp_error(in, eof) check_parse_ex(RM_H1_PARSE_RESPONSES, (in), sizeof(in) - 1, (eof), 0, 0, NULL, NULL)

#endif
