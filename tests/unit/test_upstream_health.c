/*
 * The active health check state machine (upstream/health.h, rm_health_sm_record): Envoy's
 * semantics, step by step.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "upstream/health.h"

#define HEALTHY_T 2
#define UNHEALTHY_T 3

static int
rec(rm_health_sm_t *sm, rm_health_result_t r)
{
    return rm_health_sm_record(sm, r, HEALTHY_T, UNHEALTHY_T);
}

static void
test_first_result_decides(void **state)
{
    rm_health_sm_t sm = {0};
    assert_int_equal(sm.state, RM_HEALTH_PENDING);
    assert_int_equal(rec(&sm, RM_HEALTH_SUCCESS), 1);
    assert_int_equal(sm.state, RM_HEALTH_HEALTHY);

    static const rm_health_result_t bad[] = {RM_HEALTH_FAILURE, RM_HEALTH_TIMEOUT, RM_HEALTH_CONNECT_FAILURE};
    for (size_t i = 0; i != 3; ++i) {
        rm_health_sm_t p = {0};
        assert_int_equal(rec(&p, bad[i]), 1);
        assert_int_equal(p.state, RM_HEALTH_UNHEALTHY);
    }
}

static void
test_silence_needs_the_threshold(void **state)
{
    rm_health_sm_t sm = {RM_HEALTH_HEALTHY, 0, 0};
    assert_int_equal(rec(&sm, RM_HEALTH_TIMEOUT), 0);
    assert_int_equal(rec(&sm, RM_HEALTH_CONNECT_FAILURE), 0);
    /* a success in between starts the count again */
    assert_int_equal(rec(&sm, RM_HEALTH_SUCCESS), 0);
    assert_int_equal(rec(&sm, RM_HEALTH_TIMEOUT), 0);
    assert_int_equal(rec(&sm, RM_HEALTH_TIMEOUT), 0);
    assert_int_equal(sm.state, RM_HEALTH_HEALTHY);
    assert_int_equal(rec(&sm, RM_HEALTH_CONNECT_FAILURE), 1);
    assert_int_equal(sm.state, RM_HEALTH_UNHEALTHY);
}

static void
test_explicit_bad_answer_is_believed_at_once(void **state)
{
    rm_health_sm_t sm = {RM_HEALTH_HEALTHY, 0, 0};
    assert_int_equal(rec(&sm, RM_HEALTH_FAILURE), 1);
    assert_int_equal(sm.state, RM_HEALTH_UNHEALTHY);
}

static void
test_recovery_needs_consecutive_successes(void **state)
{
    rm_health_sm_t sm = {RM_HEALTH_UNHEALTHY, 0, 0};
    assert_int_equal(rec(&sm, RM_HEALTH_SUCCESS), 0);
    assert_int_equal(rec(&sm, RM_HEALTH_TIMEOUT), 0); /* the count starts again */
    assert_int_equal(rec(&sm, RM_HEALTH_SUCCESS), 0);
    assert_int_equal(sm.state, RM_HEALTH_UNHEALTHY);
    assert_int_equal(rec(&sm, RM_HEALTH_SUCCESS), 1);
    assert_int_equal(sm.state, RM_HEALTH_HEALTHY);
    assert_int_equal(sm.successes, 0);
    assert_int_equal(sm.failures, 0);
    /* thresholds of 1: every result decides */
    assert_int_equal(rm_health_sm_record(&sm, RM_HEALTH_TIMEOUT, 1, 1), 1);
    assert_int_equal(rm_health_sm_record(&sm, RM_HEALTH_SUCCESS, 1, 1), 1);
    assert_int_equal(sm.state, RM_HEALTH_HEALTHY);
}

static void
test_names(void **state)
{
    assert_string_equal(rm_health_result_name(RM_HEALTH_SUCCESS), "success");
    assert_string_equal(rm_health_result_name(RM_HEALTH_FAILURE), "failure");
    assert_string_equal(rm_health_result_name(RM_HEALTH_TIMEOUT), "timeout");
    assert_string_equal(rm_health_result_name(RM_HEALTH_CONNECT_FAILURE), "connect_failure");
    assert_string_equal(rm_health_state_name(RM_HEALTH_PENDING), "pending");
    assert_string_equal(rm_health_state_name(RM_HEALTH_HEALTHY), "healthy");
    assert_string_equal(rm_health_state_name(RM_HEALTH_UNHEALTHY), "unhealthy");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_result_decides),
        cmocka_unit_test(test_silence_needs_the_threshold),
        cmocka_unit_test(test_explicit_bad_answer_is_believed_at_once),
        cmocka_unit_test(test_recovery_needs_consecutive_successes),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
