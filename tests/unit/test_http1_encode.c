/* HTTP/1 encoders: exact bytes, and a parse -> encode -> parse round trip. */
#include "test_http1_util.h"

static h2o_buffer_prototype_t proto = {.allocator = {.max = 16}, ._initial_buf = {.capacity = 256}};

typedef struct st_enc_t {
    h2o_mem_pool_t pool;
    h2o_buffer_t *buf;
} enc_t;

static int
setup(void **state)
{
    enc_t *e = calloc(1, sizeof(*e));
    h2o_mem_init_pool(&e->pool);
    h2o_buffer_init(&e->buf, &proto);
    *state = e;
    return 0;
}

static int
teardown(void **state)
{
    enc_t *e = *state;
    h2o_buffer_dispose(&e->buf);
    h2o_mem_clear_pool(&e->pool);
    free(e);
    return 0;
}

#define IOV(s) h2o_iovec_init(H2O_STRLIT(s))

static void
assert_buf(enc_t *e, size_t ret, const char *expected)
{
    assert_int_equal(ret, strlen(expected));
    assert_int_equal(e->buf->size, strlen(expected));
    if (e->buf->size != 0 && memcmp(e->buf->bytes, expected, e->buf->size) != 0) {
        print_error("got:\n%.*s\nexpected:\n%s\n", (int)e->buf->size, e->buf->bytes, expected);
        fail();
    }
    h2o_buffer_consume(&e->buf, e->buf->size);
}

static rm_req_head_t
make_req(enc_t *e)
{
    rm_req_head_t h;
    memset(&h, 0, sizeof(h));
    h.method = IOV("POST");
    h.scheme = IOV("http");
    h.authority = IOV("svc.local:8080");
    h.path = IOV("/a/b?c=d");
    h.content_length = 5;
    rm_headers_add(&e->pool, &h.headers, IOV("x-a"), IOV("1"));
    rm_headers_add(&e->pool, &h.headers, IOV("host"), IOV("ignored"));
    rm_headers_add(&e->pool, &h.headers, IOV("content-length"), IOV("99"));
    rm_headers_add(&e->pool, &h.headers, IOV("connection"), IOV("close"));
    rm_headers_add(&e->pool, &h.headers, IOV("transfer-encoding"), IOV("gzip"));
    rm_headers_add(&e->pool, &h.headers, IOV(":authority"), IOV("pseudo"));
    rm_headers_add(&e->pool, &h.headers, IOV("te"), IOV("trailers"));
    rm_headers_add(&e->pool, &h.headers, IOV("x-empty"), IOV(""));
    rm_headers_add(&e->pool, &h.headers, IOV("x-obs"), IOV("caf\xc3\xa9\tx"));
    return h;
}

static void
test_request_head(void **state)
{
    enc_t *e = *state;
    rm_req_head_t h = make_req(e);
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0),
               "POST /a/b?c=d HTTP/1.1\r\nhost: svc.local:8080\r\nx-a: 1\r\nte: trailers\r\nx-empty: \r\n"
               "x-obs: caf\xc3\xa9\tx\r\ncontent-length: 5\r\n\r\n");
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 1),
               "POST /a/b?c=d HTTP/1.1\r\nhost: svc.local:8080\r\nx-a: 1\r\nte: trailers\r\nx-empty: \r\n"
               "x-obs: caf\xc3\xa9\tx\r\ntransfer-encoding: chunked\r\n\r\n");
    h.content_length = -1;
    h.headers.size = 1;
    h.authority = h2o_iovec_init(NULL, 0);
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0), "POST /a/b?c=d HTTP/1.1\r\nhost: \r\nx-a: 1\r\n\r\n");
    h.content_length = 0;
    h.headers.size = 0;
    h.method = IOV("OPTIONS");
    h.path = IOV("*");
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0), "OPTIONS * HTTP/1.1\r\nhost: \r\ncontent-length: 0\r\n\r\n");
    h.content_length = INT64_MAX;
    h.method = IOV("PUT");
    h.path = IOV("/caf\xc3\xa9");
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0),
               "PUT /caf\xc3\xa9 HTTP/1.1\r\nhost: \r\ncontent-length: 9223372036854775807\r\n\r\n");
}

static void
test_request_head_refuses_unsafe_input(void **state)
{
    enc_t *e = *state;
    static const struct {
        const char *what;
        const char *method, *authority, *path, *name, *value;
    } cases[] = {
        {"space in method", "GE T", "a", "/", "x", "y"},
        {"empty method", "", "a", "/", "x", "y"},
        {"empty path", "GET", "a", "", "x", "y"},
        {"space in path", "GET", "a", "/a b", "x", "y"},
        {"LF in path", "GET", "a", "/a\nb", "x", "y"},
        {"CR in path", "GET", "a", "/a\rb", "x", "y"},
        {"space in authority", "GET", "a b", "/", "x", "y"},
        {"CRLF in authority", "GET", "a\r\nx: y", "/", "x", "y"},
        {"space in name", "GET", "a", "/", "x y", "v"},
        {"colon in name", "GET", "a", "/", "x:y", "v"},
        {"empty name", "GET", "a", "/", "", "v"},
        {"CRLF in value", "GET", "a", "/", "x", "v\r\nInjected: 1"},
        {"LF in value", "GET", "a", "/", "x", "v\nInjected: 1"},
        {"DEL in value", "GET", "a", "/", "x", "v\x7f"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        rm_req_head_t h;
        memset(&h, 0, sizeof(h));
        h.method = h2o_iovec_init(cases[i].method, strlen(cases[i].method));
        h.authority = h2o_iovec_init(cases[i].authority, strlen(cases[i].authority));
        h.path = h2o_iovec_init(cases[i].path, strlen(cases[i].path));
        h.content_length = -1;
        rm_headers_add(&e->pool, &h.headers, h2o_iovec_init(cases[i].name, strlen(cases[i].name)),
                       h2o_iovec_init(cases[i].value, strlen(cases[i].value)));
        if (rm_h1_encode_request_head(&e->buf, &h, 0) != 0 || e->buf->size != 0) {
            print_error("case \"%s\" was encoded\n", cases[i].what);
            fail();
        }
    }
    /* a NUL inside a value is not visible to strlen: built by hand */
    rm_req_head_t h;
    memset(&h, 0, sizeof(h));
    h.method = IOV("GET");
    h.path = IOV("/");
    rm_headers_add(&e->pool, &h.headers, IOV("x"), h2o_iovec_init("a\0b", 3));
    assert_int_equal(rm_h1_encode_request_head(&e->buf, &h, 0), 0);
    assert_int_equal(e->buf->size, 0);
}

static void
test_response_head(void **state)
{
    enc_t *e = *state;
    rm_resp_head_t h;
    memset(&h, 0, sizeof(h));
    h.status = 200;
    h.content_length = 5;
    rm_headers_add(&e->pool, &h.headers, IOV("content-type"), IOV("text/plain"));
    rm_headers_add(&e->pool, &h.headers, IOV("content-length"), IOV("5"));
    rm_headers_add(&e->pool, &h.headers, IOV("keep-alive"), IOV("timeout=1"));
    rm_headers_add(&e->pool, &h.headers, IOV("te"), IOV("trailers"));
    rm_headers_add(&e->pool, &h.headers, IOV(":status"), IOV("200"));
    rm_headers_add(&e->pool, &h.headers, IOV("host"), IOV("kept-in-responses"));
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 0, 0),
               "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nhost: kept-in-responses\r\ncontent-length: 5\r\n\r\n");
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 1, 1),
               "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nhost: kept-in-responses\r\ntransfer-encoding: chunked\r\n"
               "connection: close\r\n\r\n");
    h.headers.size = 0;
    h.content_length = -1;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 0, 1), "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
    h.status = 404;
    h.content_length = 0;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 0, 0), "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    /* statuses without a body get no framing fields, except the representation length of a 304 */
    h.status = 204;
    h.content_length = 0;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 1, 0), "HTTP/1.1 204 No Content\r\n\r\n");
    h.status = 304;
    h.content_length = 10;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 0, 0), "HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n");
    h.content_length = -1;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 1, 0), "HTTP/1.1 304 Not Modified\r\n\r\n");
    h.status = 103;
    rm_headers_add(&e->pool, &h.headers, IOV("link"), IOV("</a>; rel=preload"));
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 1, 0), "HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n");
    h.headers.size = 0;
    h.status = 599;
    h.content_length = 2;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &h, 0, 0), "HTTP/1.1 599 \r\ncontent-length: 2\r\n\r\n");
    h.status = 42;
    assert_int_equal(rm_h1_encode_response_head(&e->buf, &h, 0, 0), 0);
    h.status = 1000;
    assert_int_equal(rm_h1_encode_response_head(&e->buf, &h, 0, 0), 0);
    h.status = 200;
    rm_headers_add(&e->pool, &h.headers, IOV("x"), IOV("a\r\nSet-Cookie: evil"));
    assert_int_equal(rm_h1_encode_response_head(&e->buf, &h, 0, 0), 0);
    assert_int_equal(e->buf->size, 0);
}

static void
test_small_encoders(void **state)
{
    enc_t *e = *state;
    assert_buf(e, rm_h1_encode_continue(&e->buf), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_buf(e, rm_h1_encode_chunk_header(&e->buf, 1), "1\r\n");
    assert_buf(e, rm_h1_encode_chunk_header(&e->buf, 255), "ff\r\n");
    assert_buf(e, rm_h1_encode_chunk_header(&e->buf, 0x10000), "10000\r\n");
    assert_buf(e, rm_h1_encode_chunk_header(&e->buf, 0), "");
    assert_buf(e, rm_h1_encode_chunk_end(&e->buf), "\r\n");
    assert_buf(e, rm_h1_encode_last_chunk(&e->buf, NULL), "0\r\n\r\n");
    rm_headers_t t = {NULL, 0, 0};
    assert_buf(e, rm_h1_encode_last_chunk(&e->buf, &t), "0\r\n\r\n");
    rm_headers_add(&e->pool, &t, IOV("grpc-status"), IOV("0"));
    rm_headers_add(&e->pool, &t, IOV("connection"), IOV("close"));
    rm_headers_add(&e->pool, &t, IOV("x-bad"), IOV("a\nb"));
    rm_headers_add(&e->pool, &t, IOV("grpc-message"), IOV("fine%20"));
    assert_buf(e, rm_h1_encode_last_chunk(&e->buf, &t), "0\r\ngrpc-status: 0\r\ngrpc-message: fine%20\r\n\r\n");
    assert_buf(e, rm_h1_append(&e->buf, "abc", 3), "abc");
    assert_buf(e, rm_h1_append(&e->buf, NULL, 0), "");

    /* appending grows the buffer */
    char big[10000];
    memset(big, 'z', sizeof(big));
    for (int i = 0; i != 10; ++i)
        assert_int_equal(rm_h1_append(&e->buf, big, sizeof(big)), sizeof(big));
    assert_int_equal(e->buf->size, 10 * sizeof(big));
    h2o_buffer_consume(&e->buf, e->buf->size);
}

static void
test_reason_phrases(void **state)
{
    assert_string_equal(rm_h1_reason_phrase(100), "Continue");
    assert_string_equal(rm_h1_reason_phrase(200), "OK");
    assert_string_equal(rm_h1_reason_phrase(204), "No Content");
    assert_string_equal(rm_h1_reason_phrase(404), "Not Found");
    assert_string_equal(rm_h1_reason_phrase(429), "Too Many Requests");
    assert_string_equal(rm_h1_reason_phrase(431), "Request Header Fields Too Large");
    assert_string_equal(rm_h1_reason_phrase(502), "Bad Gateway");
    assert_string_equal(rm_h1_reason_phrase(503), "Service Unavailable");
    assert_string_equal(rm_h1_reason_phrase(504), "Gateway Timeout");
    assert_string_equal(rm_h1_reason_phrase(505), "HTTP Version Not Supported");
    assert_string_equal(rm_h1_reason_phrase(418), "");
    assert_string_equal(rm_h1_reason_phrase(0), "");
    assert_string_equal(rm_h1_reason_phrase(-1), "");
}

/* parse -> encode -> parse gives the same request */
static void
test_round_trip(void **state)
{
    enc_t *e = *state;
    static const char in[] =
        "POST http://svc:81/x?y HTTP/1.1\r\nHost: svc:81\r\nX-A:  1 \r\nConnection: close, x-b\r\nX-B: gone\r\n"
        "TE: trailers\r\nContent-Length: 3\r\nContent-Type: application/grpc\r\n\r\nabc";
    rec_t r1;
    rec_init(&r1);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r1, 0, 0);
    assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), sizeof(in) - 1);
    rm_h1_parser_destroy(p);
    assert_non_null(r1.last_req);

    size_t n = rm_h1_encode_request_head(&e->buf, r1.last_req, 0);
    assert_true(n > 0);
    rm_h1_append(&e->buf, "abc", 3);
    /* names keep the client's spelling (rm_header_t.orig_name) */
    assert_buf(e, n + 3,
               "POST /x?y HTTP/1.1\r\nHost: svc:81\r\nX-A: 1\r\nTE: trailers\r\nContent-Type: application/grpc\r\n"
               "Content-Length: 3\r\n\r\nabc");

    static const char again[] = "POST /x?y HTTP/1.1\r\nhost: svc:81\r\nx-a: 1\r\nte: trailers\r\ncontent-type: application/grpc\r\n"
                                "content-length: 3\r\n\r\nabc";
    char *log = parse_log(RM_H1_PARSE_REQUESTS, again, sizeof(again) - 1, 0, 0, 0, 0, NULL, NULL);
    /* same request, except that the connection's own options are gone */
    assert_string_equal(log, "begin\nreq POST http svc:81 /x?y cl=3 body=1 te=1 grpc=1 expect=0\n  x-a: 1\n  te: trailers\n"
                             "  content-type: application/grpc\n  content-length: 3\nbody 3:abc\ncomplete ka=1\n");
    free(log);
    rec_dispose(&r1);
}

/* Parses one request head; returns it (pool memory of `r`). */
static rm_req_head_t *
parse_req(rec_t *r, const char *in, size_t len, size_t step)
{
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, r, 0, 0);
    assert_int_equal(drive(r, p, in, len, step, 0), 0);
    rm_h1_parser_destroy(p);
    assert_non_null(r->last_req);
    return r->last_req;
}

/* The parser keeps each name as sent (orig_name) beside the lower-case one, whatever the split of the input; a
 * lower-case name gets no copy. */
static void
test_case_kept_by_parser(void **state)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Legacy-Header: 1\r\nx-lower: 2\r\nCONTENT-TYPE: t\r\n"
                             "X-Split-Name-Quite-Long: 3\r\n\r\n";
    for (size_t i = 0; i != sizeof(test_steps) / sizeof(test_steps[0]); ++i) {
        rec_t r;
        rec_init(&r);
        rm_req_head_t *h = parse_req(&r, in, sizeof(in) - 1, test_steps[i]);
        assert_int_equal(h->headers.size, 4);
        const rm_header_t *f = h->headers.entries;
        assert_true(h2o_memis(f[0].name.base, f[0].name.len, H2O_STRLIT("x-legacy-header")));
        assert_non_null(f[0].orig_name);
        assert_memory_equal(f[0].orig_name, "X-Legacy-Header", f[0].name.len);
        assert_true(h2o_memis(f[1].name.base, f[1].name.len, H2O_STRLIT("x-lower")));
        assert_null(f[1].orig_name);
        assert_true(h2o_memis(f[2].name.base, f[2].name.len, H2O_STRLIT("content-type")));
        assert_memory_equal(f[2].orig_name, "CONTENT-TYPE", f[2].name.len);
        assert_memory_equal(f[3].orig_name, "X-Split-Name-Quite-Long", f[3].name.len);
        /* the lower-case names stay NUL-terminated strings */
        assert_string_equal(f[0].name.base, "x-legacy-header");
        assert_string_equal(f[3].name.base, "x-split-name-quite-long");
        assert_int_equal(h->orig_h1, 1);
        assert_memory_equal(h->host_orig_name, "Host", 4);
        rec_dispose(&r);
    }
}

/* HTTP/1.1 encoders write orig_name when there is one, both ways. */
static void
test_case_written_by_encoders(void **state)
{
    enc_t *e = *state;
    rm_req_head_t h;
    memset(&h, 0, sizeof(h));
    h.method = IOV("GET");
    h.authority = IOV("a");
    h.path = IOV("/");
    h.content_length = -1;
    rm_headers_add(&e->pool, &h.headers, IOV("x-legacy-header"), IOV("1"));
    rm_headers_add(&e->pool, &h.headers, IOV("x-lower"), IOV("2"));
    h.headers.entries[0].orig_name = "X-Legacy-Header";
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0),
               "GET / HTTP/1.1\r\nhost: a\r\nX-Legacy-Header: 1\r\nx-lower: 2\r\n\r\n");

    rm_resp_head_t r;
    memset(&r, 0, sizeof(r));
    r.status = 200;
    r.content_length = 0;
    r.headers = h.headers;
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &r, 0, 0),
               "HTTP/1.1 200 OK\r\nX-Legacy-Header: 1\r\nx-lower: 2\r\ncontent-length: 0\r\n\r\n");
}

/* The marker that carries name case across an HTTP/2 hop: bounded, deduplicated, nothing allocated when all names are
 * lower-case; applying it restores orig_name; taking markers removes them. */
static void
test_case_marker(void **state)
{
    enc_t *e = *state;
    rm_headers_t h = {NULL, 0, 0};
    rm_headers_add(&e->pool, &h, IOV("x-lower"), IOV("1"));
    h2o_iovec_t m = rm_headers_case_marker(&e->pool, &h);
    assert_null(m.base);
    assert_int_equal(m.len, 0);

    rm_headers_add(&e->pool, &h, IOV("x-legacy-header"), IOV("1"));
    rm_headers_add(&e->pool, &h, IOV("content-type"), IOV("t"));
    rm_headers_add(&e->pool, &h, IOV("x-legacy-header"), IOV("2"));
    h.entries[1].orig_name = "X-Legacy-Header";
    h.entries[2].orig_name = "Content-Type";
    h.entries[3].orig_name = "X-Legacy-Header";
    m = rm_headers_case_marker(&e->pool, &h);
    assert_string_equal(m.base, "X-Legacy-Header,Content-Type");

    /* the far side: lower-case names, the marker among them */
    rm_headers_t far = {NULL, 0, 0};
    rm_headers_add(&e->pool, &far, IOV("x-legacy-header"), IOV("1"));
    rm_headers_add(&e->pool, &far, IOV(RM_MARKER_H1_CASE), m);
    rm_headers_add(&e->pool, &far, IOV("content-type"), IOV("t"));
    rm_headers_add(&e->pool, &far, IOV(RM_MARKER_ORIG_PROTO), IOV("HTTP/1.1"));
    rm_headers_add(&e->pool, &far, IOV("x-remora-other"), IOV("kept"));
    rm_headers_add(&e->pool, &far, IOV("x-legacy-header"), IOV("2"));
    rm_headers_add(&e->pool, &far, IOV("x-lower"), IOV("3"));
    h2o_iovec_t cm, op;
    rm_headers_take_markers(&far, &cm, &op);
    assert_int_equal(far.size, 5);
    assert_true(h2o_memis(op.base, op.len, H2O_STRLIT("HTTP/1.1")));
    assert_int_equal(rm_headers_apply_case_marker(&far, cm), 3);
    assert_memory_equal(far.entries[0].orig_name, "X-Legacy-Header", 15);
    assert_memory_equal(far.entries[1].orig_name, "Content-Type", 12);
    assert_null(far.entries[2].orig_name); /* x-remora-other */
    assert_memory_equal(far.entries[3].orig_name, "X-Legacy-Header", 15);
    assert_null(far.entries[4].orig_name);
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &(rm_resp_head_t){.status = 204, .headers = far}, 0, 0),
               "HTTP/1.1 204 No Content\r\nX-Legacy-Header: 1\r\nContent-Type: t\r\nx-remora-other: kept\r\n"
               "X-Legacy-Header: 2\r\nx-lower: 3\r\n\r\n");

    /* a request's Host spelling travels first; applying it restores host_orig_name */
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.headers = h;
    req.host_orig_name = "HOST";
    m = rm_req_case_marker(&e->pool, &req);
    assert_string_equal(m.base, "HOST,X-Legacy-Header,Content-Type");
    req.headers.size = 1; /* x-lower only */
    m = rm_req_case_marker(&e->pool, &req);
    assert_string_equal(m.base, "HOST");
    rm_req_head_t far_req;
    memset(&far_req, 0, sizeof(far_req));
    far_req.method = IOV("GET");
    far_req.path = IOV("/");
    far_req.authority = IOV("a");
    far_req.content_length = -1;
    rm_headers_add(&e->pool, &far_req.headers, IOV("x-legacy-header"), IOV("1"));
    assert_int_equal(rm_req_apply_case_marker(&far_req, IOV("Host,X-Legacy-Header")), 2);
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &far_req, 0), "GET / HTTP/1.1\r\nHost: a\r\nX-Legacy-Header: 1\r\n\r\n");
    far_req.host_orig_name = NULL;
    assert_int_equal(rm_req_apply_case_marker(&far_req, IOV("Hostile,host,X-Nope")), 0);
    assert_null(far_req.host_orig_name);

    /* elements that do not name a field, differ in length, or are malformed change nothing */
    assert_int_equal(rm_headers_apply_case_marker(&far, IOV("X-Nope,,X-Lower-Longer,x-lower")), 0);

    /* bounded: a marker never exceeds RM_CASE_MARKER_MAX_BYTES */
    rm_headers_t many = {NULL, 0, 0};
    static char names[400][24], origs[400][24];
    for (int i = 0; i != 400; ++i) {
        snprintf(names[i], sizeof(names[i]), "x-field-number-%04d", i);
        snprintf(origs[i], sizeof(origs[i]), "X-Field-Number-%04d", i);
        rm_headers_add(&e->pool, &many, h2o_iovec_init(names[i], strlen(names[i])), IOV("v"));
        many.entries[i].orig_name = origs[i];
    }
    m = rm_headers_case_marker(&e->pool, &many);
    assert_true(m.len <= RM_CASE_MARKER_MAX_BYTES);
    assert_true(m.len > RM_CASE_MARKER_MAX_BYTES - 24);
    assert_int_equal(strlen(m.base), m.len);
}

/* Parses one response head; returns it (pool memory of `r`). */
static rm_resp_head_t *
parse_resp(rec_t *r, const char *in, size_t len, size_t step)
{
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_RESPONSES, &rec_callbacks, r, 0, 0);
    assert_int_equal(drive(r, p, in, len, step, 0), 0);
    rm_h1_parser_destroy(p);
    assert_non_null(r->last_resp);
    return r->last_resp;
}

/* The framing fields keep their spelling too (length_orig_name, chunked_orig_name), whatever the split of the input;
 * lower-case ones get no copy. */
static void
test_framing_case_kept_by_parser(void **state)
{
    static const char cl[] = "POST / HTTP/1.1\r\nhost: h\r\nContent-Length: 3\r\n\r\nabc";
    static const char te[] = "POST / HTTP/1.1\r\nhost: h\r\nTRANSFER-ENCODING: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char lower[] = "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc";
    static const char resp_cl[] = "HTTP/1.1 200 OK\r\nContent-length: 2\r\n\r\nok";
    static const char resp_te[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    for (size_t i = 0; i != sizeof(test_steps) / sizeof(test_steps[0]); ++i) {
        rec_t r;
        rec_init(&r);
        rm_req_head_t *h = parse_req(&r, cl, sizeof(cl) - 1, test_steps[i]);
        assert_int_equal(h->content_length, 3);
        assert_non_null(h->length_orig_name);
        assert_memory_equal(h->length_orig_name, "Content-Length", 14);
        assert_null(h->chunked_orig_name);
        assert_null(h->host_orig_name);
        rec_dispose(&r);

        rec_init(&r);
        h = parse_req(&r, te, sizeof(te) - 1, test_steps[i]);
        assert_non_null(h->chunked_orig_name);
        assert_memory_equal(h->chunked_orig_name, "TRANSFER-ENCODING", 17);
        assert_null(h->length_orig_name);
        rec_dispose(&r);

        rec_init(&r);
        h = parse_req(&r, lower, sizeof(lower) - 1, test_steps[i]);
        assert_null(h->length_orig_name);
        assert_null(h->chunked_orig_name);
        rec_dispose(&r);

        rec_init(&r);
        rm_resp_head_t *resp = parse_resp(&r, resp_cl, sizeof(resp_cl) - 1, test_steps[i]);
        assert_int_equal(resp->content_length, 2);
        assert_memory_equal(resp->length_orig_name, "Content-length", 14);
        assert_null(resp->chunked_orig_name);
        rec_dispose(&r);

        rec_init(&r);
        resp = parse_resp(&r, resp_te, sizeof(resp_te) - 1, test_steps[i]);
        assert_memory_equal(resp->chunked_orig_name, "Transfer-Encoding", 17);
        assert_null(resp->length_orig_name);
        rec_dispose(&r);
    }
}

/* The encoders write the framing fields with the kept spelling, lower-case without one; the marker carries them across
 * an HTTP/2 hop (right after Host) and applying it restores them. */
static void
test_framing_case_written_and_carried(void **state)
{
    enc_t *e = *state;
    rm_req_head_t h;
    memset(&h, 0, sizeof(h));
    h.method = IOV("POST");
    h.authority = IOV("a");
    h.path = IOV("/");
    h.content_length = 7;
    h.length_orig_name = "Content-Length";
    h.chunked_orig_name = "Transfer-Encoding";
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 0), "POST / HTTP/1.1\r\nhost: a\r\nContent-Length: 7\r\n\r\n");
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &h, 1), "POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\n\r\n");

    rm_resp_head_t r;
    memset(&r, 0, sizeof(r));
    r.status = 200;
    r.content_length = 9;
    r.length_orig_name = "CONTENT-LENGTH";
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &r, 0, 0), "HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 9\r\n\r\n");
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &r, 1, 0), "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");

    /* nothing to carry when all is lower case: no allocation */
    rm_req_head_t plain;
    memset(&plain, 0, sizeof(plain));
    assert_null(rm_req_case_marker(&e->pool, &plain).base);
    rm_resp_head_t plain_resp;
    memset(&plain_resp, 0, sizeof(plain_resp));
    assert_null(rm_resp_case_marker(&e->pool, &plain_resp).base);

    /* the marker: Host, then the framing names; a content-length field among the fields is not listed again */
    h.host_orig_name = "Host";
    rm_headers_add(&e->pool, &h.headers, IOV("content-length"), IOV("7"));
    rm_headers_add(&e->pool, &h.headers, IOV("x-a"), IOV("1"));
    h.headers.entries[0].orig_name = "Content-Length";
    h.headers.entries[1].orig_name = "X-A";
    h2o_iovec_t m = rm_req_case_marker(&e->pool, &h);
    assert_string_equal(m.base, "Host,Content-Length,Transfer-Encoding,X-A");
    m = rm_resp_case_marker(&e->pool, &r);
    assert_string_equal(m.base, "CONTENT-LENGTH");

    rm_req_head_t far;
    memset(&far, 0, sizeof(far));
    far.method = IOV("POST");
    far.authority = IOV("a");
    far.path = IOV("/");
    far.content_length = 7;
    rm_headers_add(&e->pool, &far.headers, IOV("x-a"), IOV("1"));
    assert_int_equal(rm_req_apply_case_marker(&far, IOV("Host,Content-Length,Transfer-Encoding,X-A")), 4);
    assert_buf(e, rm_h1_encode_request_head(&e->buf, &far, 0), "POST / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nContent-Length: 7\r\n\r\n");
    /* lower-case, longer or shorter look-alikes change nothing */
    far.length_orig_name = far.chunked_orig_name = NULL;
    assert_int_equal(rm_req_apply_case_marker(&far, IOV("content-length,Content-Lengths,Transfer-Encodin,transfer-encoding")), 0);
    assert_null(far.length_orig_name);
    assert_null(far.chunked_orig_name);

    rm_resp_head_t far_resp;
    memset(&far_resp, 0, sizeof(far_resp));
    far_resp.status = 200;
    far_resp.content_length = 2;
    assert_int_equal(rm_resp_apply_case_marker(&far_resp, IOV("X-Nope,Content-Length")), 1);
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &far_resp, 0, 0), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
}

/* parse -> encode -> parse keeps the framing spelling, both ways */
static void
test_framing_case_round_trip(void **state)
{
    enc_t *e = *state;
    static const char in[] = "PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
    rec_t r1;
    rec_init(&r1);
    rm_req_head_t *h = parse_req(&r1, in, sizeof(in) - 1, 0);
    size_t n = rm_h1_encode_request_head(&e->buf, h, 0);
    assert_true(n > 0);
    assert_int_equal(n, sizeof(in) - 3);
    assert_memory_equal(e->buf->bytes, in, n);
    rec_t r2;
    rec_init(&r2);
    rm_req_head_t *h2 = parse_req(&r2, e->buf->bytes, n, 0);
    assert_memory_equal(h2->length_orig_name, "Content-Length", 14);
    h2o_buffer_consume(&e->buf, e->buf->size);
    rec_dispose(&r2);
    rec_dispose(&r1);

    static const char resp[] = "HTTP/1.1 200 OK\r\nX-B: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    rec_init(&r1);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_RESPONSES, &rec_callbacks, &r1, 0, 0);
    rm_h1_parser_execute(p, resp, sizeof(resp) - 1);
    rm_h1_parser_destroy(p);
    assert_non_null(r1.last_resp);
    assert_buf(e, rm_h1_encode_response_head(&e->buf, r1.last_resp, 1, 0), resp);
    rec_dispose(&r1);
}

/* Upgrade: the parser reports it only for a bodyless HTTP/1.1 request naming it in Connection; the encoders write
 * "Connection: Upgrade" and "Upgrade" for such a request and for a 101. */
static void
test_upgrade(void **state)
{
    enc_t *e = *state;
    static const char ws[] = "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                             "Sec-WebSocket-Key: k\r\n\r\n";
    rec_t r;
    rec_init(&r);
    rm_req_head_t *h = parse_req(&r, ws, sizeof(ws) - 1, 0);
    assert_true(h2o_memis(h->upgrade.base, h->upgrade.len, H2O_STRLIT("websocket")));
    assert_int_equal(h->headers.size, 1); /* connection and upgrade are gone */
    assert_buf(e, rm_h1_encode_request_head(&e->buf, h, 0),
               "GET /chat HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    rec_dispose(&r);

    static const char *const no_upgrade[] = {
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", /* not in Connection */
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\nx", /* body */
        "GET / HTTP/1.0\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",                        /* HTTP/1.0 */
    };
    for (size_t i = 0; i != sizeof(no_upgrade) / sizeof(no_upgrade[0]); ++i) {
        rec_init(&r);
        h = parse_req(&r, no_upgrade[i], strlen(no_upgrade[i]), 0);
        assert_int_equal(h->upgrade.len, 0);
        assert_int_equal(rm_h1_encode_request_head(&e->buf, h, 0) != 0, 1);
        assert_int_equal(h2o_strstr(e->buf->bytes, e->buf->size, H2O_STRLIT("upgrade")), SIZE_MAX);
        h2o_buffer_consume(&e->buf, e->buf->size);
        rec_dispose(&r);
    }

    rm_resp_head_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = 101;
    resp.content_length = -1;
    resp.upgrade = IOV("websocket");
    rm_headers_add(&e->pool, &resp.headers, IOV("sec-websocket-accept"), IOV("x"));
    resp.headers.entries[0].orig_name = "Sec-WebSocket-Accept";
    assert_buf(e, rm_h1_encode_response_head(&e->buf, &resp, 0, 1),
               "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    resp.upgrade = IOV("bad\r\nvalue");
    assert_int_equal(rm_h1_encode_response_head(&e->buf, &resp, 0, 0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_head_refuses_unsafe_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_encoders, setup, teardown),
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test(test_case_kept_by_parser),
        cmocka_unit_test_setup_teardown(test_case_written_by_encoders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade, setup, teardown),
        cmocka_unit_test(test_framing_case_kept_by_parser),
        cmocka_unit_test_setup_teardown(test_framing_case_written_and_carried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing_case_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
