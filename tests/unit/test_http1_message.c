/* The version-neutral message model helpers (proxy/message.c) and the gRPC mappings. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <h2o/string_.h>
#include "proxy/message.h"

#define IOV(s) h2o_iovec_init(H2O_STRLIT(s))

static void
test_headers_add_and_find(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    rm_headers_t h = {NULL, 0, 0};
    char names[200][8];
    for (int i = 0; i != 200; ++i) {
        snprintf(names[i], sizeof(names[i]), "x-%d", i);
        rm_headers_add(&pool, &h, h2o_iovec_init(names[i], strlen(names[i])), IOV("v"));
        assert_true(h.size <= h.capacity);
    }
    assert_int_equal(h.size, 200);
    for (int i = 0; i != 200; ++i) {
        assert_ptr_equal(h.entries[i].name.base, names[i]); /* referenced, not copied */
        assert_int_equal(rm_headers_find(&h, names[i], strlen(names[i]), 0), i);
    }
    rm_headers_add(&pool, &h, IOV("x-1"), IOV("second"));
    assert_int_equal(rm_headers_find_lit(&h, "x-1", 0), 1);
    assert_int_equal(rm_headers_find_lit(&h, "x-1", 2), 200);
    assert_int_equal(rm_headers_find_lit(&h, "x-1", 201), -1);
    assert_int_equal(rm_headers_find_lit(&h, "x-1", -5), 1);
    assert_int_equal(rm_headers_find_lit(&h, "x-", 0), -1);
    assert_int_equal(rm_headers_find_lit(&h, "X-1", 0), -1); /* exact: names are lower-case by contract */

    rm_headers_t empty = {NULL, 0, 0};
    assert_int_equal(rm_headers_find_lit(&empty, "x", 0), -1);
    h2o_mem_clear_pool(&pool);
}

static void
test_headers_add_copy(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    rm_headers_t h = {NULL, 0, 0};
    char name[] = "Grpc-Status", value[] = "14";
    rm_headers_add_copy(&pool, &h, name, strlen(name), value, strlen(value));
    name[0] = 'X';
    value[0] = '9';
    assert_int_equal(h.size, 1);
    assert_string_equal(h.entries[0].name.base, "grpc-status");
    assert_int_equal(h.entries[0].name.len, 11);
    assert_string_equal(h.entries[0].value.base, "14");
    assert_int_equal(h.entries[0].value.len, 2);
    rm_headers_add_copy(&pool, &h, "E", 1, "", 0);
    assert_string_equal(h.entries[1].name.base, "e");
    assert_string_equal(h.entries[1].value.base, "");
    h2o_mem_clear_pool(&pool);
}

static void
test_hop_by_hop(void **state)
{
    static const char *yes[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                "upgrade",    "Connection", "TRANSFER-ENCODING"};
    static const char *no[] = {"te",        "trailer",     "content-length", "host", "upgrade-insecure-requests",
                               "connectio", "keep-alive2", "x-connection",   ""};
    for (size_t i = 0; i != sizeof(yes) / sizeof(yes[0]); ++i)
        assert_true(rm_header_is_hop_by_hop(yes[i], strlen(yes[i])));
    for (size_t i = 0; i != sizeof(no) / sizeof(no[0]); ++i)
        assert_false(rm_header_is_hop_by_hop(no[i], strlen(no[i])));
}

static void
test_grpc_from_h2_error(void **state)
{
    static const struct {
        uint32_t h2;
        int grpc;
    } map[] = {
        {RM_H2_NO_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_PROTOCOL_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_INTERNAL_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_FLOW_CONTROL_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_SETTINGS_TIMEOUT, RM_GRPC_INTERNAL},
        {RM_H2_STREAM_CLOSED, RM_GRPC_INTERNAL},
        {RM_H2_FRAME_SIZE_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_REFUSED_STREAM, RM_GRPC_UNAVAILABLE},
        {RM_H2_CANCEL, RM_GRPC_CANCELLED},
        {RM_H2_COMPRESSION_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_CONNECT_ERROR, RM_GRPC_INTERNAL},
        {RM_H2_ENHANCE_YOUR_CALM, RM_GRPC_RESOURCE_EXHAUSTED},
        {RM_H2_INADEQUATE_SECURITY, RM_GRPC_PERMISSION_DENIED},
        {RM_H2_HTTP_1_1_REQUIRED, RM_GRPC_INTERNAL},
        {0x42, RM_GRPC_INTERNAL},
        {0xffffffff, RM_GRPC_INTERNAL},
    };
    for (size_t i = 0; i != sizeof(map) / sizeof(map[0]); ++i)
        assert_int_equal(rm_grpc_status_from_h2_error(map[i].h2), map[i].grpc);
    /* the numeric values of the spec */
    assert_int_equal(rm_grpc_status_from_h2_error(0x7), 14);
    assert_int_equal(rm_grpc_status_from_h2_error(0x8), 1);
    assert_int_equal(rm_grpc_status_from_h2_error(0xb), 8);
    assert_int_equal(rm_grpc_status_from_h2_error(0xc), 7);
    assert_int_equal(rm_grpc_status_from_h2_error(0x1), 13);
}

static void
test_grpc_from_http_status(void **state)
{
    assert_int_equal(rm_grpc_status_from_http_status(400), RM_GRPC_INTERNAL);
    assert_int_equal(rm_grpc_status_from_http_status(401), RM_GRPC_UNAUTHENTICATED);
    assert_int_equal(rm_grpc_status_from_http_status(401), 16);
    assert_int_equal(rm_grpc_status_from_http_status(403), RM_GRPC_PERMISSION_DENIED);
    assert_int_equal(rm_grpc_status_from_http_status(404), RM_GRPC_UNIMPLEMENTED);
    assert_int_equal(rm_grpc_status_from_http_status(429), RM_GRPC_UNAVAILABLE);
    assert_int_equal(rm_grpc_status_from_http_status(502), RM_GRPC_UNAVAILABLE);
    assert_int_equal(rm_grpc_status_from_http_status(503), RM_GRPC_UNAVAILABLE);
    assert_int_equal(rm_grpc_status_from_http_status(504), RM_GRPC_UNAVAILABLE);
    static const int unknown[] = {100, 200, 201, 302, 405, 408, 418, 500, 501, 505, 0, 999};
    for (size_t i = 0; i != sizeof(unknown) / sizeof(unknown[0]); ++i)
        assert_int_equal(rm_grpc_status_from_http_status(unknown[i]), RM_GRPC_UNKNOWN);
}

static void
test_http_from_grpc_status(void **state)
{
    assert_int_equal(rm_http_status_from_grpc_status(RM_GRPC_UNAVAILABLE), 503);
    assert_int_equal(rm_http_status_from_grpc_status(RM_GRPC_DEADLINE_EXCEEDED), 504);
    assert_int_equal(rm_http_status_from_grpc_status(RM_GRPC_RESOURCE_EXHAUSTED), 429);
    assert_int_equal(rm_http_status_from_grpc_status(RM_GRPC_PERMISSION_DENIED), 403);
    assert_int_equal(rm_http_status_from_grpc_status(RM_GRPC_UNIMPLEMENTED), 404);
    static const int other[] = {RM_GRPC_OK,
                                RM_GRPC_CANCELLED,
                                RM_GRPC_UNKNOWN,
                                RM_GRPC_INVALID_ARGUMENT,
                                RM_GRPC_NOT_FOUND,
                                RM_GRPC_ALREADY_EXISTS,
                                RM_GRPC_INTERNAL,
                                RM_GRPC_UNAUTHENTICATED,
                                RM_GRPC_DATA_LOSS,
                                17,
                                -1};
    for (size_t i = 0; i != sizeof(other) / sizeof(other[0]); ++i)
        assert_int_equal(rm_http_status_from_grpc_status(other[i]), 500);
}

static void
check_encode(const char *in, size_t len, const char *expected)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t v = rm_grpc_encode_message(&pool, in, len);
    assert_int_equal(v.len, strlen(expected));
    assert_string_equal(v.base, expected); /* also checks the NUL */
    h2o_mem_clear_pool(&pool);
}

static void
test_grpc_encode_message(void **state)
{
    check_encode("", 0, "");
    check_encode(NULL, 0, "");
    check_encode("upstream connect error", 22, "upstream connect error");
    static const char printable[] = " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~";
    check_encode(printable, sizeof(printable) - 1, printable);
    check_encode("50% off", 7, "50%25 off");
    check_encode("line1\nline2\r\t", 13, "line1%0Aline2%0D%09");
    check_encode("caf\xc3\xa9", 5, "caf%C3%A9");
    check_encode("\x7f\x1f", 2, "%7F%1F");
    check_encode("a\0b", 3, "a%00b");
    check_encode("\xff", 1, "%FF");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_add_and_find),
        cmocka_unit_test(test_headers_add_copy),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_grpc_from_h2_error),
        cmocka_unit_test(test_grpc_from_http_status),
        cmocka_unit_test(test_http_from_grpc_status),
        cmocka_unit_test(test_grpc_encode_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
