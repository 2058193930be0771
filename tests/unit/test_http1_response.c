/* Response parsing: every way a response body can be delimited, interim responses, HEAD. */
#include "test_http1_util.h"

static void
test_content_length(void **state)
{
    check_resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 0, NULL,
               "begin\nresp 200 cl=5\n  content-type: text/plain\n  content-length: 5\nbody 5:hello\ncomplete ka=1\n");
    check_resp("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, NULL,
               "begin\nresp 404 cl=0\n  content-length: 0\ncomplete ka=1\n");
}

static void
test_chunked_with_trailers(void **state)
{
    check_resp("HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
               "7\r\n\0\0\0\0\x02hi\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
               0, NULL,
               "begin\nresp 200 cl=-1\n  content-type: application/grpc\n  trailer: grpc-status\n"
               "body 7:\\0\\0\\0\\0\x02hi\ntrailers\n  grpc-status: 0\n  grpc-message: ok\ncomplete ka=1\n");
}

static void
test_close_delimited(void **state)
{
    check_resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 1, NULL,
               "begin\nresp 200 cl=-1\n  content-type: text/plain\nbody 13:until the end\ncomplete ka=0\neof\n");
    check_resp("HTTP/1.0 200 OK\r\n\r\nold", 1, NULL, "begin\nresp 200 cl=-1\nbody 3:old\ncomplete ka=0\neof\n");
    /* an empty close-delimited body */
    check_resp("HTTP/1.1 200 OK\r\n\r\n", 1, NULL, "begin\nresp 200 cl=-1\ncomplete ka=0\neof\n");
    /* no EOF yet: not complete */
    check_resp("HTTP/1.1 200 OK\r\n\r\nabc", 0, NULL, "begin\nresp 200 cl=-1\nbody 3:abc\n");
}

static void
test_keep_alive(void **state)
{
    check_resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", 0, NULL,
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:x\ncomplete ka=0\n");
    check_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, NULL,
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:x\ncomplete ka=0\n");
    check_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nx", 0, NULL,
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:x\ncomplete ka=1\n");
}

static void
test_head_response(void **state)
{
    /* the length describes the representation the GET would have returned: reported, no body read */
    check_resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
               0, "HG",
               "begin\nresp 200 cl=1234\n  content-length: 1234\ncomplete ka=1\n"
               "begin\nresp 200 cl=2\n  content-length: 2\nbody 2:ok\ncomplete ka=1\n");
    check_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, "H", "begin\nresp 200 cl=-1\ncomplete ka=1\n");
    /* no length at all: still complete at the end of the head, and the connection stays usable */
    check_resp("HTTP/1.1 200 OK\r\n\r\n", 0, "H", "begin\nresp 200 cl=-1\ncomplete ka=1\n");
}

static void
test_no_body_statuses(void **state)
{
    check_resp("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
               0, NULL,
               "begin\nresp 204 cl=-1\ncomplete ka=1\n"
               "begin\nresp 304 cl=10\n  content-length: 10\n  etag: \"x\"\ncomplete ka=1\n"
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:z\ncomplete ka=1\n");
    /* a 304 that says chunked has no body either */
    check_resp("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0, NULL,
               "begin\nresp 304 cl=-1\ncomplete ka=1\n");
}

static void
test_interim(void **state)
{
    /* one message for the exchange: begin once, every head reported, complete once */
    check_resp("HTTP/1.1 100 Continue\r\n\r\n"
               "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
               0, NULL,
               "begin\nresp 100 cl=-1\nresp 103 cl=-1\n  link: </s.css>; rel=preload\n"
               "resp 200 cl=2\n  content-length: 2\nbody 2:ok\ncomplete ka=1\n");
    /* EOF after an interim response is an incomplete exchange */
    assert_int_equal(resp_error("HTTP/1.1 100 Continue\r\n\r\n", 1), RM_H1_ERR_INCOMPLETE);
    /* the interim response answering a HEAD does not end the HEAD exchange */
    check_resp("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
               0, "HG",
               "begin\nresp 100 cl=-1\nresp 200 cl=5\n  content-length: 5\ncomplete ka=1\n"
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:x\ncomplete ka=1\n");
}

static void
test_switching_protocols(void **state)
{
    /* final, and the connection cannot carry HTTP/1.1 afterwards */
    check_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello", 0, NULL,
               "begin\nresp 101 cl=-1\ncomplete ka=0\n");
}

static void
test_hop_by_hop(void **state)
{
    check_resp("HTTP/1.1 200 OK\r\nConnection: X-Conn\r\nX-Conn: 1\r\nKeep-Alive: 1\r\nUpgrade: h2\r\nTE: trailers\r\n"
               "Proxy-Connection: close\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n",
               0, NULL, "begin\nresp 200 cl=0\n  x-kept: 2\n  content-length: 0\ncomplete ka=1\n");
}

static void
test_finish_states(void **state)
{
    assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 1), RM_H1_ERR_INCOMPLETE);
    assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1), RM_H1_ERR_INCOMPLETE);
    assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nContent-", 1), RM_H1_ERR_INCOMPLETE);
    assert_int_equal(resp_error("", 1), RM_H1_OK);
    assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1), RM_H1_OK);
}

static void
test_limits(void **state)
{
    char in[4096];
    size_t len = (size_t)snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i != 20; ++i)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "X-%d: v\r\n", i);
    len += (size_t)snprintf(in + len, sizeof(in) - len, "Content-Length: 0\r\n\r\n");
    assert_int_equal(check_parse_ex(RM_H1_PARSE_RESPONSES, in, len, 0, 21, 0, NULL, NULL), 0);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_RESPONSES, in, len, 0, 20, 0, NULL, NULL), RM_H1_ERR_BAD_RESPONSE);
    assert_int_equal(check_parse_ex(RM_H1_PARSE_RESPONSES, in, len, 0, 0, 100, NULL, NULL), RM_H1_ERR_BAD_RESPONSE);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_BAD_RESPONSE), 502);
}

static void
test_unsolicited_bytes_after_close(void **state)
{
    /* after a "Connection: close" response, further bytes are discarded */
    check_resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n", 1, NULL,
               "begin\nresp 200 cl=1\n  content-length: 1\nbody 1:x\ncomplete ka=0\neof\n");
}

static void
test_callback_failure(void **state)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    rec_t r;
    rec_init(&r);
    r.fail_in = "head";
    rm_h1_parser_t *p = rm_h1_parser_create(RM_H1_PARSE_RESPONSES, &rec_callbacks, &r, 0, 0);
    assert_int_equal(rm_h1_parser_execute(p, in, sizeof(in) - 1), RM_H1_ERR_CALLBACK);
    assert_int_equal(rm_h1_error_status(RM_H1_ERR_CALLBACK), 500);
    rm_h1_parser_destroy(p);
    rec_dispose(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),   cmocka_unit_test(test_chunked_with_trailers),
        cmocka_unit_test(test_close_delimited),  cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_head_response),    cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_interim),          cmocka_unit_test(test_switching_protocols),
        cmocka_unit_test(test_hop_by_hop),       cmocka_unit_test(test_finish_states),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_unsolicited_bytes_after_close),
        cmocka_unit_test(test_callback_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
