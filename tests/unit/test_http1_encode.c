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
    assert_buf(e, n + 3,
               "POST /x?y HTTP/1.1\r\nhost: svc:81\r\nx-a: 1\r\nte: trailers\r\ncontent-type: application/grpc\r\n"
               "content-length: 3\r\n\r\nabc");

    static const char again[] = "POST /x?y HTTP/1.1\r\nhost: svc:81\r\nx-a: 1\r\nte: trailers\r\ncontent-type: application/grpc\r\n"
                                "content-length: 3\r\n\r\nabc";
    char *log = parse_log(RM_H1_PARSE_REQUESTS, again, sizeof(again) - 1, 0, 0, 0, 0, NULL, NULL);
    /* same request, except that the connection's own options are gone */
    assert_string_equal(log, "begin\nreq POST http svc:81 /x?y cl=3 body=1 te=1 grpc=1 expect=0\n  x-a: 1\n  te: trailers\n"
                             "  content-type: application/grpc\n  content-length: 3\nbody 3:abc\ncomplete ka=1\n");
    free(log);
    rec_dispose(&r1);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
