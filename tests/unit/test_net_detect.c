/* net/detect.c: protocol detection from the first bytes (docs/transparent.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include "net/detect.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

static rm_detect_verdict_t
classify(const char *s, int transparent)
{
    return rm_detect_classify(s, strlen(s), transparent);
}

static void
test_transparent(void **state)
{
    assert_int_equal(classify("GET / HTTP/1.1\r\n", 1), RM_DETECT_IS_HTTP1);
    assert_int_equal(classify("POST ", 1), RM_DETECT_IS_HTTP1);
    assert_int_equal(classify("M-SEARCH * HTTP/1.1\r\n", 1), RM_DETECT_IS_HTTP1);
    assert_int_equal(classify("G", 1), RM_DETECT_NEED_MORE);
    assert_int_equal(classify("DELETE", 1), RM_DETECT_NEED_MORE);
    assert_int_equal(classify(PREFACE, 1), RM_DETECT_IS_H2);
    assert_int_equal(classify("PRI * HTTP/2.0\r\n", 1), RM_DETECT_NEED_MORE);
    assert_int_equal(classify("PRI * HTTP/1.1\r\n", 1), RM_DETECT_IS_HTTP1); /* a method token "PRI": the parser decides */
    /* TLS: a handshake record of any version */
    assert_int_equal(rm_detect_classify("\x16\x03\x01\x02\x00", 5, 1), RM_DETECT_IS_TLS);
    assert_int_equal(rm_detect_classify("\x16", 1, 1), RM_DETECT_NEED_MORE);
    assert_int_equal(rm_detect_classify("\x16\x01", 2, 1), RM_DETECT_IS_OPAQUE);
    /* what cannot start a request line is opaque at once */
    assert_int_equal(rm_detect_classify("\0\1binary", 8, 1), RM_DETECT_IS_OPAQUE);
    assert_int_equal(classify(" GET / HTTP/1.1", 1), RM_DETECT_IS_OPAQUE);
    assert_int_equal(classify("GET\t/", 1), RM_DETECT_IS_OPAQUE);
    assert_int_equal(classify("SSH-2.0-OpenSSH_9.2\r\n", 1), RM_DETECT_IS_OPAQUE);
    assert_int_equal(classify("*1\r\n$4\r\nPING\r\n", 1), RM_DETECT_IS_OPAQUE); /* Redis RESP */
    /* a method token longer than any real one is not waited for */
    assert_int_equal(classify("ABCDEFGHIJKLMNOPQRSTUVWXY", 1), RM_DETECT_IS_OPAQUE);
    assert_int_equal(classify("ABCDEFGHIJKLMNOPQRSTUVWX", 1), RM_DETECT_NEED_MORE);
    assert_int_equal(classify("ABCDEFGHIJKLMNOPQRSTUVWX ", 1), RM_DETECT_IS_HTTP1);
}

static void
test_explicit_keeps_its_rule(void **state)
{
    assert_int_equal(classify("GET / HTTP/1.1\r\n", 0), RM_DETECT_IS_HTTP1);
    assert_int_equal(rm_detect_classify("\0\1binary", 8, 0), RM_DETECT_IS_HTTP1); /* the HTTP/1.1 parser answers 400 */
    assert_int_equal(rm_detect_classify("\x16", 1, 0), RM_DETECT_IS_TLS);
    assert_int_equal(classify(PREFACE, 0), RM_DETECT_IS_H2);
    assert_int_equal(classify("PRI * HTTP", 0), RM_DETECT_NEED_MORE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transparent),
        cmocka_unit_test(test_explicit_keeps_its_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
