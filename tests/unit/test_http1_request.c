/* Request parsing: heads, bodies, pipelining, limits. Every case is also fed split in many ways (see check_req). */
#include "test_http1_util.h"

static void
test_simple_get(void **state)
{
    check_req("GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n",
              "begin\n"
              "req GET http example.com /a/b?c=d cl=-1 body=0 te=0 grpc=0 expect=0\n"
              "  user-agent: t/1\n"
              "  accept: */*\n"
              "complete ka=1\n");
}

static void
test_names_lowercased_values_trimmed(void **state)
{
    check_req("GET / HTTP/1.1\r\nHOST: h\r\nX-Mixed-Case:   padded value \t \r\nX-Empty:\r\nX-Empty2:   \r\nX-Tab:\tv\t\r\n"
              "X-Obs: caf\xc3\xa9\r\n\r\n",
              "begin\n"
              "req GET http h / cl=-1 body=0 te=0 grpc=0 expect=0\n"
              "  x-mixed-case: padded value\n"
              "  x-empty: \n"
              "  x-empty2: \n"
              "  x-tab: v\n"
              "  x-obs: caf\xc3\xa9\n"
              "complete ka=1\n");
}

static void
test_http10(void **state)
{
    check_req("GET / HTTP/1.0\r\n\r\n", "begin\nreq GET http  / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    check_req("GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    check_req("GET / HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n",
              "begin\nreq GET http  / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    /* an HTTP/1.0 client's expectation is ignored (and not forwarded) */
    check_req("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
              "begin\nreq POST http  / cl=2 body=1 te=0 grpc=0 expect=0\n  content-length: 2\nbody 2:hi\ncomplete ka=0\n");
}

static void
test_connection_close(void **state)
{
    check_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    check_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: CLOSE\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    /* bytes after the last message of a connection are discarded, not parsed */
    check_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    check_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\x01garbage",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
}

static void
test_content_length_body(void **state)
{
    check_req("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
              "begin\n"
              "req POST http a /upload cl=11 body=1 te=0 grpc=0 expect=0\n"
              "  content-length: 11\n"
              "  content-type: text/plain\n"
              "body 11:hello world\n"
              "complete ka=1\n");
    check_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
              "begin\nreq POST http a / cl=0 body=0 te=0 grpc=0 expect=0\n  content-length: 0\ncomplete ka=1\n");
    check_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567",
              "begin\nreq POST http a / cl=7 body=1 te=0 grpc=0 expect=0\n  content-length: 007\nbody 7:1234567\ncomplete ka=1\n");
}

static void
test_body_bytes_are_not_parsed(void **state)
{
    /* a body that looks like a request must not be parsed as one */
    check_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: b\r\n\r\n",
              "begin\n"
              "req POST http a / cl=35 body=1 te=0 grpc=0 expect=0\n"
              "  content-length: 35\n"
              "body 35:GET /smuggled HTTP/1.1\r\nHost: b\r\n\r\n\n"
              "complete ka=1\n");
}

static void
test_chunked_with_trailers(void **state)
{
    check_req("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
              "5\r\nhello\r\n"
              "6;name=value;flag\r\n world\r\n"
              "A \t;x=\"quoted; \\\"string\"\r\n0123456789\r\n"
              "0\r\n"
              "Grpc-Status: 0\r\n"
              "X-Trailer: t\r\n"
              "Content-Length: 5\r\n"
              "Connection: close\r\n"
              "\r\n",
              "begin\n"
              "req POST http a /c cl=-1 body=1 te=1 grpc=0 expect=0\n"
              "  te: trailers\n"
              "body 21:hello world0123456789\n"
              "trailers\n"
              "  grpc-status: 0\n"
              "  x-trailer: t\n"
              "complete ka=1\n");
}

static void
test_chunked_without_trailers(void **state)
{
    check_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n00000\r\n\r\n",
              "begin\nreq POST http a / cl=-1 body=1 te=0 grpc=0 expect=0\nbody 3:abc\ncomplete ka=1\n");
    /* trailers that are all dropped are not reported */
    check_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: x\r\nTE: trailers\r\n\r\n",
              "begin\nreq POST http a / cl=-1 body=1 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    /* a large chunk size in hex, upper and lower case */
    static const char big[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1aB\r\n";
    char in[sizeof(big) + 0x1ab + 16];
    memcpy(in, big, sizeof(big) - 1);
    memset(in + sizeof(big) - 1, 'x', 0x1ab);
    memcpy(in + sizeof(big) - 1 + 0x1ab, "\r\n0\r\n\r\n", 7);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, sizeof(big) - 1 + 0x1ab + 7, 0, 0, 0, NULL, NULL), 0);
}

static void
test_expect_continue(void **state)
{
    check_req("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
              "begin\nreq PUT http a /x cl=3 body=1 te=0 grpc=0 expect=1\n  content-length: 3\nbody 3:abc\ncomplete ka=1\n");
    /* other expectations are left to the next hop */
    check_req("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n",
              "begin\nreq PUT http a /x cl=-1 body=0 te=0 grpc=0 expect=0\n  expect: something\ncomplete ka=1\n");
}

static void
test_absolute_form(void **state)
{
    check_req("GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
              "begin\nreq GET http example.com:8080 /p?q=1 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    check_req("GET HTTPS://[::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n",
              "begin\nreq GET https [::1]:443 / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    check_req("GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
              "begin\nreq GET http h /?x=1 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    check_req("OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n",
              "begin\nreq OPTIONS http h * cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    /* HTTP/1.0 needs no Host with an absolute target */
    check_req("GET http://h/ HTTP/1.0\r\n\r\n", "begin\nreq GET http h / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
}

static void
test_absolute_form_invalid(void **state)
{
    assert_int_equal(req_error("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET http:/h/p HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET h/p HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET http://h/p#frag HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("GET /p#frag HTTP/1.1\r\nHost: h\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
}

static void
test_asterisk_form(void **state)
{
    check_req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
              "begin\nreq OPTIONS http a * cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    assert_int_equal(req_error("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(req_error("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
}

static void
test_methods(void **state)
{
    check_req("DELETE /r HTTP/1.1\r\nHost: a\r\n\r\n",
              "begin\nreq DELETE http a /r cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    assert_int_equal(req_error("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_BAD_REQUEST); /* "*" is for OPTIONS */
    assert_int_equal(req_error("BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_NOT_IMPLEMENTED);
    assert_int_equal(req_error("get / HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_NOT_IMPLEMENTED);
    assert_int_equal(req_error("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), RM_H1_ERR_NOT_IMPLEMENTED);
}

static void
test_te_and_grpc(void **state)
{
    check_req("POST /svc/M HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc+proto\r\nTE: deflate, Trailers\r\n"
              "Connection: te\r\nContent-Length: 0\r\n\r\n",
              "begin\n"
              "req POST http a /svc/M cl=0 body=0 te=1 grpc=1 expect=0\n"
              "  content-type: application/grpc+proto\n"
              "  te: trailers\n"
              "  content-length: 0\n"
              "complete ka=1\n");
    check_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\nTE: gzip\r\n\r\n",
              "begin\nreq POST http a / cl=-1 body=0 te=0 grpc=1 expect=0\n  content-type: application/grpc\ncomplete ka=1\n");
    check_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc-web\r\n\r\n",
              "begin\nreq POST http a / cl=-1 body=0 te=0 grpc=0 expect=0\n  content-type: application/grpc-web\ncomplete ka=1\n");
    check_req(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: Application/GRPC;charset=x\r\n\r\n",
        "begin\nreq POST http a / cl=-1 body=0 te=0 grpc=1 expect=0\n  content-type: Application/GRPC;charset=x\ncomplete ka=1\n");
}

static void
test_connection_options(void **state)
{
    /* list syntax: empty elements and OWS around elements */
    check_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: , x-a ,\t, close \t\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\n  x-b: 2\ncomplete ka=0\n");
    /* a bounded number of options */
    char in[2048];
    size_t len = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nConnection: o0");
    for (int i = 1; i != 32; ++i)
        len += (size_t)snprintf(in + len, sizeof(in) - len, ", o%d", i);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len + (size_t)snprintf(in + len, sizeof(in) - len, "\r\n\r\n"), 0, 0,
                                    0, NULL, NULL),
                     0);
    len += (size_t)snprintf(in + len, sizeof(in) - len, ", o32\r\n\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 0, NULL, NULL), RM_H1_ERR_BAD_REQUEST);
}

static void
test_hop_by_hop_removed(void **state)
{
    check_req("GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
              "HTTP2-Settings: AAA\r\nConnection: Upgrade, HTTP2-Settings, X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\n  x-kept: k\ncomplete ka=1\n");
}

static void
test_pipelining(void **state)
{
#define REQ1 "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
#define REQ2 "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
#define REQ3 "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
#define REQ4 "\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n" /* an empty line between requests is ignored */
    static const char in[] = REQ1 REQ2 REQ3 REQ4;
    check_req(in, "begin\nreq GET http a /1 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n"
                  "begin\nreq POST http a /2 cl=3 body=1 te=0 grpc=0 expect=0\n  content-length: 3\nbody 3:abc\ncomplete ka=1\n"
                  "begin\nreq POST http a /3 cl=-1 body=1 te=0 grpc=0 expect=0\nbody 1:x\ncomplete ka=1\n"
                  "begin\nreq GET http a /4 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");

    /* execute stops at the end of each message and consumes nothing while paused */
    rec_t r;
    rec_init(&r);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, 0);
    size_t len = sizeof(in) - 1, off = 0;
    static const size_t ends[] = {sizeof(REQ1) - 1, sizeof(REQ1 REQ2) - 1, sizeof(REQ1 REQ2 REQ3) - 1,
                                  sizeof(REQ1 REQ2 REQ3 REQ4) - 1};
    for (size_t i = 0; i != 4; ++i) {
        ssize_t n = rm_h1_parser_execute(p, in + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
        assert_int_equal(off, ends[i]);
        assert_int_equal(r.completes, (int)i + 1);
        assert_int_equal(rm_h1_parser_execute(p, in + off, len - off), 0);
        rm_h1_parser_resume(p);
    }
    assert_int_equal(off, len);
    assert_int_equal(rm_h1_parser_finish(p), 0);
    rm_h1_parser_destroy(p);
    rec_dispose(&r);
}

static void
test_leading_empty_lines(void **state)
{
    check_req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
              "begin\nreq GET http a / cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n");
    assert_int_equal(req_error("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), RM_H1_ERR_BAD_REQUEST);
}

static void
test_limits(void **state)
{
    char in[8192];
    int err;

    /* exactly max_headers fields pass, one more is 431 */
    size_t len = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i != 9; ++i)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "X-%d: v\r\n", i);
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 10, 0, NULL, NULL), 0);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 9, 0, NULL, NULL), RM_H1_ERR_HEADERS_TOO_LARGE);

    /* exactly max_header_bytes bytes of head pass (the whole head, CRLFs included), one more is 431 */
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, (uint32_t)len, NULL, NULL), 0);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, (uint32_t)len - 1, NULL, NULL),
                     RM_H1_ERR_HEADERS_TOO_LARGE);

    /* a long value, and a long target */
    len = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(in + len, 'v', 3000);
    len += 3000;
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 2048, NULL, NULL), RM_H1_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 4096, NULL, NULL), 0);
    len = (size_t)snprintf(in, sizeof(in), "GET /");
    memset(in + len, 'p', 3000);
    len += 3000;
    len += (size_t)snprintf(in + len, sizeof(in) - len, " HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 2048, NULL, NULL), RM_H1_ERR_HEADERS_TOO_LARGE);

    /* endless empty lines before a request are bounded too */
    for (len = 0; len + 2 <= 4096; len += 2)
        memcpy(in + len, "\r\n", 2);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 1024, NULL, NULL), RM_H1_ERR_HEADERS_TOO_LARGE);

    /* trailers have the same limits */
    len = (size_t)snprintf(in, sizeof(in), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i != 5; ++i)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "T-%d: v\r\n", i);
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 5, 0, NULL, NULL), 0);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_REQUESTS, in, len, 0, 4, 0, NULL, NULL), RM_H1_ERR_HEADERS_TOO_LARGE);

    /* the default limit: 100 fields */
    len = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i != 100; ++i)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "X-%d: v\r\n", i);
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n");
    char *log = parse_log(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 0, 0, NULL, &err);
    free(log);
    assert_int_equal(err, RM_H1_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(rm_h1_error_status(err), 431);
}

static void
test_large_head_scratch_shrinks(void **state)
{
    /* a head near the limit, then small ones on the same connection */
    size_t cap = 90000, len;
    char *in = malloc(cap);
    len = (size_t)snprintf(in, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i != 60; ++i) {
        len += (size_t)snprintf(in + len, cap - len, "X-%d: ", i);
        memset(in + len, 'a' + i % 26, 1000);
        len += 1000;
        len += (size_t)snprintf(in + len, cap - len, "\r\n");
    }
    len += (size_t)snprintf(in + len, cap - len, "\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    int err;
    char *log = parse_log(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 0, 0, NULL, &err);
    assert_int_equal(err, 0);
    assert_non_null(strstr(log, "req GET http a /next"));
    free(log);

    /* many fields, then a small head */
    len = (size_t)snprintf(in, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i != 400; ++i)
        len += (size_t)snprintf(in + len, cap - len, "X-%d: v\r\n", i);
    len += (size_t)snprintf(in + len, cap - len, "\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    log = parse_log(RM_H1_PARSE_REQUESTS, in, len, 7, 0, 1000, 0, NULL, &err);
    assert_int_equal(err, 0);
    assert_non_null(strstr(log, "  x-399: v\n"));
    assert_non_null(strstr(log, "req GET http a /next"));
    free(log);

    /* max_header_bytes is capped at http-parser's own limit, 80 KiB */
    len = (size_t)snprintf(in, cap, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(in + len, 'v', 81 * 1024 - len);
    len = 81 * 1024;
    len += (size_t)snprintf(in + len, cap - len, "\r\n\r\n");
    log = parse_log(RM_H1_PARSE_REQUESTS, in, len, 0, 0, 0, 1 << 20, NULL, &err);
    assert_int_equal(err, RM_H1_ERR_HEADERS_TOO_LARGE);
    free(log);
    free(in);
}

static void
test_errors_are_sticky(void **state)
{
    rec_t r;
    rec_init(&r);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, 0);
    static const char bad[] = "GET / HTTP/1.1\r\nHost : a\r\n\r\n";
    assert_int_equal(rm_h1_parser_execute(p, bad, sizeof(bad) - 1), RM_H1_ERR_BAD_REQUEST);
    assert_string_equal(rm_h1_parser_error_reason(p), "whitespace between field name and colon");
    static const char good[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(rm_h1_parser_execute(p, good, sizeof(good) - 1), RM_H1_ERR_BAD_REQUEST);
    assert_int_equal(rm_h1_parser_finish(p), RM_H1_ERR_BAD_REQUEST);
    rm_h1_parser_destroy(p);
    rec_dispose(&r);
}

static void
test_callback_errors(void **state)
{
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: b\r\n\r\n";
    static const char *where[] = {"head", "body", "trailers", "complete"};
    for (size_t i = 0; i != 4; ++i) {
        rec_t r;
        rec_init(&r);
        r.fail_in = where[i];
        rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, 0);
        assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), RM_H1_ERR_CALLBACK);
        assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), RM_H1_ERR_CALLBACK);
        rm_h1_parser_destroy(p);
        rec_dispose(&r);
    }
}

static void
test_finish(void **state)
{
    int err;
    char *log;
    /* clean EOF between requests */
    log = parse_log(RM_H1_PARSE_REQUESTS, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, 0, 1, 0, 0, NULL, &err);
    assert_int_equal(err, 0);
    free(log);
    log = parse_log(RM_H1_PARSE_REQUESTS, "", 0, 0, 1, 0, 0, NULL, &err);
    assert_int_equal(err, 0);
    free(log);
    /* EOF in a head, in a body, in a chunked body */
    log = parse_log(RM_H1_PARSE_REQUESTS, "GET / HTTP/1.1\r\nHo", 18, 0, 1, 0, 0, NULL, &err);
    assert_int_equal(err, RM_H1_ERR_INCOMPLETE);
    free(log);
    static const char body[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabc";
    log = parse_log(RM_H1_PARSE_REQUESTS, body, sizeof(body) - 1, 0, 1, 0, 0, NULL, &err);
    assert_int_equal(err, RM_H1_ERR_INCOMPLETE);
    free(log);
    static const char chunked[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    log = parse_log(RM_H1_PARSE_REQUESTS, chunked, sizeof(chunked) - 1, 0, 1, 0, 0, NULL, &err);
    assert_int_equal(err, RM_H1_ERR_INCOMPLETE);
    free(log);
}

static void
test_resume_inside_callback(void **state)
{
    /* resuming from on_message_complete goes on with the next pipelined message in the same execute call */
    static const char in[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /3";
    rec_t r;
    rec_init(&r);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, 0);
    r.resume_from_callback = p;
    assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(r.completes, 2);
    assert_string_equal(r.log, "begin\nreq GET http a /1 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=1\n"
                               "begin\nreq GET http a /2 cl=-1 body=0 te=0 grpc=0 expect=0\ncomplete ka=0\n");
    rm_h1_parser_destroy(p);
    rec_dispose(&r);
}

static void
test_http_minor(void **state)
{
    static const char in[] = "GET / HTTP/1.0\r\n\r\n";
    static const char in11[] = "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n";
    rec_t r;
    rec_init(&r);
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, 0);
    assert_int_equal(rm_h1_parser_http_minor(p), -1);
    assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(rm_h1_parser_http_minor(p), 0);
    rm_h1_parser_destroy(p);
    p = rm_h1_parser_create(RM_H1_PARSE_RESPONSES, &rec_callbacks, &r, 0, 0);
    assert_int_equal(rm_h1_parser_execute(p, in11, sizeof(in11) - 1), sizeof(in11) - 1);
    assert_int_equal(rm_h1_parser_http_minor(p), 1);
    rm_h1_parser_destroy(p);
    rec_dispose(&r);
}

/* The error of a request parsed with a URI limit, the same for every split of the input. */
static int
uri_limit_error(const char *in, uint32_t max_uri_bytes, uint32_t max_header_bytes)
{
    int first = 1, err0 = 0;
    for (size_t i = 0; i != sizeof(test_steps) / sizeof(test_steps[0]); ++i) {
        rec_t r;
        rec_init(&r);
        rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &rec_callbacks, &r, 0, max_header_bytes);
        rm_h1_parser_set_max_uri_bytes(p, max_uri_bytes);
        int err = drive(&r, p, in, strlen(in), test_steps[i], 0);
        rm_h1_parser_destroy(p);
        rec_dispose(&r);
        if (first)
            err0 = err, first = 0;
        assert_int_equal(err, err0);
    }
    return err0;
}

static void
test_uri_limit(void **state)
{
    char in[4096];
    /* a target of exactly the limit passes; one byte more is 414, found at that byte (before the head ends) */
    snprintf(in, sizeof(in), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 99, 0);
    assert_int_equal(uri_limit_error(in, 100, 0), 0);
    assert_int_equal(uri_limit_error(in, 99, 0), RM_H1_ERR_URI_TOO_LONG);
    snprintf(in, sizeof(in), "GET /%0*d", 500, 0);
    assert_int_equal(uri_limit_error(in, 100, 0), RM_H1_ERR_URI_TOO_LONG);
    /* absolute form counts whole */
    assert_int_equal(uri_limit_error("GET http://a/bcd HTTP/1.1\r\nHost: a\r\n\r\n", 12, 0), 0);
    assert_int_equal(uri_limit_error("GET http://a/bcd HTTP/1.1\r\nHost: a\r\n\r\n", 11, 0), RM_H1_ERR_URI_TOO_LONG);
    /* 0: no URI limit of its own; the head limit, when lower, comes first */
    snprintf(in, sizeof(in), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 2000, 0);
    assert_int_equal(uri_limit_error(in, 0, 0), 0);
    assert_int_equal(uri_limit_error(in, 1500, 1024), RM_H1_ERR_HEADERS_TOO_LARGE);
    /* the second request on a connection is judged on its own target */
    assert_int_equal(uri_limit_error("GET /12345 HTTP/1.1\r\nHost: a\r\n\r\nGET /123456 HTTP/1.1\r\nHost: a\r\n\r\n", 6, 0),
                     RM_H1_ERR_URI_TOO_LONG);
    assert_int_equal(uri_limit_error("GET /12345 HTTP/1.1\r\nHost: a\r\n\r\nGET /12345 HTTP/1.1\r\nHost: a\r\n\r\n", 6, 0), 0);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_URI_TOO_LONG), 414);
}

static void
test_error_status(void **state)
{
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_BAD_REQUEST), 400);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_HEADERS_TOO_LARGE), 431);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_NOT_IMPLEMENTED), 501);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_VERSION), 505);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_BAD_RESPONSE), 502);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_names_lowercased_values_trimmed),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_connection_close),
        cmocka_unit_test(test_content_length_body),
        cmocka_unit_test(test_body_bytes_are_not_parsed),
        cmocka_unit_test(test_chunked_with_trailers),
        cmocka_unit_test(test_chunked_without_trailers),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_absolute_form_invalid),
        cmocka_unit_test(test_asterisk_form),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_te_and_grpc),
        cmocka_unit_test(test_connection_options),
        cmocka_unit_test(test_hop_by_hop_removed),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_large_head_scratch_shrinks),
        cmocka_unit_test(test_errors_are_sticky),
        cmocka_unit_test(test_callback_errors),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_resume_inside_callback),
        cmocka_unit_test(test_http_minor),
        cmocka_unit_test(test_error_status),
        cmocka_unit_test(test_uri_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
