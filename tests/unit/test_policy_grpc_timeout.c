/* grpc-timeout: every unit, bounds, malformed values, formatting and round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "policy/grpc_timeout.h"

static int
parse(const char *s, uint64_t *us)
{
    return rm_grpc_timeout_parse(s, strlen(s), us);
}

static void
test_parse_units(void **state)
{
    static const struct {
        const char *s;
        uint64_t us;
    } cases[] = {
        {"1H", 3600000000ull},
        {"2M", 120000000ull},
        {"3S", 3000000ull},
        {"4m", 4000ull},
        {"5u", 5ull},
        {"6000n", 6ull},
        {"0S", 0}, /* an expired deadline */
        {"0n", 0},
        {"00000001S", 1000000ull}, /* leading zeros, 8 digits */
        {"99999999H", 99999999ull * 3600000000ull},
        {"99999999M", 99999999ull * 60000000ull},
        {"99999999S", 99999999000000ull},
        {"99999999m", 99999999000ull},
        {"99999999u", 99999999ull},
        {"99999999n", 100000ull}, /* 99999.999 us, rounded up */
        /* nanoseconds round up: a tiny deadline is not "no time" */
        {"1n", 1},
        {"999n", 1},
        {"1000n", 1},
        {"1001n", 2},
        {"1999n", 2},
        {"2000n", 2},
        {"100m", 100000},
        {"30S", 30000000},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        uint64_t us = 12345;
        if (parse(cases[i].s, &us) != 0)
            fail_msg("\"%s\" rejected", cases[i].s);
        if (us != cases[i].us)
            fail_msg("\"%s\": %llu us, expected %llu", cases[i].s, (unsigned long long)us, (unsigned long long)cases[i].us);
    }
}

static void
test_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "",           /* empty */
        "S",          /* no digits */
        "1",          /* no unit */
        "12345678",   /* no unit, 8 digits */
        "123456789S", /* 9 digits */
        "000000001S", /* 9 digits, even if the value is small */
        "1h",         /* units are case-sensitive */
        "1s",         /* ... */
        "1U",         /* ... */
        "1N",         /* ... */
        "1x",         /* not a unit */
        "1ms",        /* two units */
        "1SS",        /* ... */
        "1S ",        /* spaces anywhere */
        " 1S",        /* ... */
        "1 S",        /* ... */
        "+1S",        /* a sign */
        "-1S",        /* ... */
        "1.5S",       /* a fraction */
        "0x10S",      /* another base */
        "1,0S",       /* a separator */
        "\xd9\xa1S",  /* ARABIC-INDIC DIGIT ONE */
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        uint64_t us = 777;
        if (parse(bad[i], &us) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_int_equal(us, 777); /* untouched on error */
    }
}

/* The length is the caller's: bytes after it are not read, a NUL inside is just a bad byte. */
static void
test_parse_counted(void **state)
{
    uint64_t us = 0;
    assert_int_equal(rm_grpc_timeout_parse("10Sgarbage", 3, &us), 0);
    assert_int_equal(us, 10000000);
    assert_int_equal(rm_grpc_timeout_parse("10S", 2, &us), -1);
    assert_int_equal(rm_grpc_timeout_parse("1\0S", 3, &us), -1);
    assert_int_equal(rm_grpc_timeout_parse(NULL, 0, &us), -1);
}

static void
test_format(void **state)
{
    static const struct {
        uint64_t us;
        const char *s;
    } cases[] = {
        {0, "0u"},
        {1, "1u"},
        {999, "999u"},
        {1000, "1000u"},
        {99999999, "99999999u"}, /* the largest in microseconds */
        {100000000, "100000m"},  /* from here milliseconds */
        {100000999, "100000m"},  /* truncated, never rounded up */
        {99999999999, "99999999m"},
        {100000000000, "100000S"}, /* from here seconds */
        {99999999999999, "99999999S"},
        {100000000000000, "1666666M"},
        {99999999ull * 60000000, "99999999M"},
        {99999999ull * 60000000 + 60000000, "1666666H"},
        {99999999ull * 3600000000, "99999999H"},
        {99999999ull * 3600000000 + 3599999999, "99999999H"},
        {UINT64_MAX, "99999999H"}, /* saturates, still less than asked */
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char buf[RM_GRPC_TIMEOUT_FORMAT_SIZE];
        memset(buf, 'X', sizeof(buf));
        size_t len = rm_grpc_timeout_format(cases[i].us, buf);
        assert_int_equal(len, strlen(buf));
        if (strcmp(buf, cases[i].s) != 0)
            fail_msg("%llu us: \"%s\", expected \"%s\"", (unsigned long long)cases[i].us, buf, cases[i].s);
    }
}

static uint64_t
splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
check_round_trip(uint64_t us)
{
    char buf[RM_GRPC_TIMEOUT_FORMAT_SIZE + 6];
    memset(buf, 'X', sizeof(buf));
    size_t len = rm_grpc_timeout_format(us, buf);
    assert_true(len >= 2 && len <= RM_GRPC_TIMEOUT_FORMAT_SIZE - 1);
    assert_int_equal(buf[len], '\0');
    assert_int_equal(buf[RM_GRPC_TIMEOUT_FORMAT_SIZE], 'X'); /* stays within 10 bytes */
    uint64_t back;
    if (rm_grpc_timeout_parse(buf, len, &back) != 0)
        fail_msg("%llu us formatted as unparsable \"%s\"", (unsigned long long)us, buf);
    /* never more time than asked, and at most 1/10^5 less (below the cap) */
    assert_true(back <= us);
    if (us <= 99999999ull * 3600000000)
        assert_true(us - back <= us / 100000);
    /* what the header states is formatted without loss (each unit divides the next) */
    char again[RM_GRPC_TIMEOUT_FORMAT_SIZE];
    uint64_t back_again;
    assert_int_equal(rm_grpc_timeout_parse(again, rm_grpc_timeout_format(back, again), &back_again), 0);
    assert_int_equal(back_again, back);
}

static void
test_round_trip(void **state)
{
    /* every power of ten and its neighbours, every power of two and its neighbours */
    for (uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) {
        check_round_trip(p - 1);
        check_round_trip(p);
        check_round_trip(p + 1);
    }
    for (unsigned b = 0; b != 64; ++b) {
        uint64_t p = (uint64_t)1 << b;
        check_round_trip(p - 1);
        check_round_trip(p);
        check_round_trip(p + 1);
    }
    check_round_trip(UINT64_MAX);
    /* random durations, log-uniform over the whole range */
    uint64_t rng = 7;
    for (int i = 0; i != 200000; ++i) {
        uint64_t r = splitmix64(&rng);
        check_round_trip(r >> (r % 64));
    }
    /* every parsable value of every unit near the boundaries parses and formats consistently */
    static const char units[] = "HMSmun";
    for (size_t u = 0; u != sizeof(units) - 1; ++u) {
        for (uint64_t v = 0; v != 2000; ++v) {
            char s[16];
            uint64_t us;
            int n = snprintf(s, sizeof(s), "%llu%c", (unsigned long long)(99999999 - v), units[u]);
            assert_int_equal(rm_grpc_timeout_parse(s, (size_t)n, &us), 0);
            check_round_trip(us);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_units), cmocka_unit_test(test_parse_malformed), cmocka_unit_test(test_parse_counted),
        cmocka_unit_test(test_format),      cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
