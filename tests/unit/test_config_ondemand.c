/*
 * config/ondemand.c: the agent-wide table of names asked by on-demand discovery (hosts, states, bounds).
 * The table is process-wide: the tests run in order and use names of their own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "config/ondemand.h"

static int wakes, notices;

static void
wake(void *ctx)
{
    ++wakes;
}

static void
notify(void)
{
    ++notices;
}

static char names[RM_ONDEMAND_MAX_PER_MESSAGE][RM_ONDEMAND_MAX_NAME_BYTES + 1];

static size_t
host(const char *authority, char *out)
{
    return rm_ondemand_host(authority, strlen(authority), out);
}

static void
test_host(void **state)
{
    char out[RM_ONDEMAND_MAX_NAME_BYTES + 1];
    assert_int_equal(host("Svc-1.Default:8080", out), 13);
    assert_string_equal(out, "svc-1.default");
    assert_int_equal(host("svc.default.svc.cluster.local.", out), 29);
    assert_string_equal(out, "svc.default.svc.cluster.local");
    assert_int_equal(host("a", out), 1);
    /* not names a Service answers: IP addresses, empty, other characters, too long */
    assert_int_equal(host("10.0.0.1:80", out), 0);
    assert_int_equal(host("[::1]:80", out), 0);
    assert_int_equal(host("", out), 0);
    assert_int_equal(host(":80", out), 0);
    assert_int_equal(host("a_b", out), 0);
    assert_int_equal(host("a b", out), 0);
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    longname[RM_ONDEMAND_MAX_NAME_BYTES] = '\0';
    assert_int_equal(host(longname, out), RM_ONDEMAND_MAX_NAME_BYTES);
    longname[RM_ONDEMAND_MAX_NAME_BYTES] = 'a';
    longname[RM_ONDEMAND_MAX_NAME_BYTES + 1] = '\0';
    assert_int_equal(host(longname, out), 0);
}

static void
test_off_without_stream_or_timeout(void **state)
{
    assert_int_equal(rm_ondemand_timeout_ms(), RM_ONDEMAND_DEFAULT_TIMEOUT_MS);
    assert_int_equal(rm_ondemand_ask("off", 1), RM_ONDEMAND_ASK_OFF); /* no stream */
    assert_null(rm_ondemand_render());                                /* never had one: no metrics */
    rm_ondemand_attach(wake, NULL);
    rm_ondemand_set_timeout_ms(0);
    assert_int_equal(rm_ondemand_ask("off", 1), RM_ONDEMAND_ASK_OFF);
    rm_ondemand_set_timeout_ms(RM_ONDEMAND_DEFAULT_TIMEOUT_MS);
    rm_ondemand_detach();
    assert_int_equal(wakes, 0);
}

static void
test_found_and_unknown(void **state)
{
    rm_ondemand_set_notify(notify);
    rm_ondemand_attach(wake, NULL);
    wakes = 0;
    /* one wakeup per new name; a name in flight is not asked twice */
    assert_int_equal(rm_ondemand_ask("found", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(rm_ondemand_ask("found", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(rm_ondemand_ask("gone", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(wakes, 2);
    assert_int_equal(rm_ondemand_take(names, RM_ONDEMAND_MAX_PER_MESSAGE), 2);
    assert_string_equal(names[0], "found");
    assert_string_equal(names[1], "gone");
    assert_int_equal(rm_ondemand_take(names, RM_ONDEMAND_MAX_PER_MESSAGE), 0);
    assert_int_equal(rm_ondemand_ask("found", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(wakes, 2);

    /* answered with the config of generation 3: an older config does not decide, that one does */
    char *answered[] = {"found", "GONE", "never-asked"};
    rm_ondemand_answered(answered, 3, 3);
    assert_int_equal(notices, 1);
    assert_int_equal(rm_ondemand_settle("gone", 2), 0);
    assert_int_equal(rm_ondemand_ask("gone", 2), RM_ONDEMAND_ASK_HOLD);
    /* found: forgotten */
    rm_ondemand_forget("found");
    assert_int_equal(rm_ondemand_settle("found", 3), 0);
    /* still no route with generation 3: unknown, and answered at once from now on without asking */
    assert_int_equal(rm_ondemand_settle("gone", 3), 1);
    assert_int_equal(rm_ondemand_ask("gone", 3), RM_ONDEMAND_ASK_UNKNOWN);
    assert_int_equal(rm_ondemand_ask("gone", 4), RM_ONDEMAND_ASK_UNKNOWN);
    assert_int_equal(rm_ondemand_take(names, RM_ONDEMAND_MAX_PER_MESSAGE), 0);
    /* an answer that changed nothing (generation 0): any config decides */
    assert_int_equal(rm_ondemand_ask("nothing", 7), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(rm_ondemand_take(names, 1), 1);
    char *nothing[] = {"nothing"};
    rm_ondemand_answered(nothing, 1, 0);
    assert_int_equal(rm_ondemand_ask("nothing", 7), RM_ONDEMAND_ASK_UNKNOWN);
    rm_ondemand_detach();
}

static void
test_batches_retries_and_streams(void **state)
{
    rm_ondemand_attach(wake, NULL);
    char name[32];
    for (int i = 0; i != 40; ++i) {
        snprintf(name, sizeof(name), "batch-%d", i);
        assert_int_equal(rm_ondemand_ask(name, 1), RM_ONDEMAND_ASK_HOLD);
    }
    /* at most 32 names a message */
    assert_int_equal(rm_ondemand_take(names, 100), RM_ONDEMAND_MAX_PER_MESSAGE);
    assert_int_equal(rm_ondemand_take(names, 100), 8);
    assert_string_equal(names[7], "batch-39");
    /* a name in flight unanswered for the whole timeout is asked again */
    rm_ondemand_set_timeout_ms(30);
    usleep(50 * 1000);
    wakes = 0;
    assert_int_equal(rm_ondemand_ask("batch-1", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(wakes, 1);
    assert_int_equal(rm_ondemand_take(names, 100), 1);
    assert_string_equal(names[0], "batch-1");
    rm_ondemand_set_timeout_ms(RM_ONDEMAND_DEFAULT_TIMEOUT_MS);
    /* the stream is lost: nothing is held meanwhile, and what was in flight goes on the next stream at once */
    rm_ondemand_detach();
    assert_int_equal(rm_ondemand_ask("batch-2", 1), RM_ONDEMAND_ASK_OFF);
    wakes = 0;
    rm_ondemand_attach(wake, NULL);
    assert_int_equal(wakes, 1);
    assert_int_equal(rm_ondemand_take(names, 100), RM_ONDEMAND_MAX_PER_MESSAGE);
    assert_int_equal(rm_ondemand_take(names, 100), 8);
    rm_ondemand_detach();
}

static void
test_bounds(void **state)
{
    rm_ondemand_attach(wake, NULL);
    char name[32];
    /* fill the table with pending names: answered and unknown ones give way, pending and in flight ones never
     * (40 are in flight from the test above) */
    int held = 0;
    for (int i = 0; i != RM_ONDEMAND_MAX_NAMES + 10; ++i) {
        snprintf(name, sizeof(name), "full-%d", i);
        rm_ondemand_ask_t r = rm_ondemand_ask(name, 1);
        if (r == RM_ONDEMAND_ASK_FULL)
            break;
        assert_int_equal(r, RM_ONDEMAND_ASK_HOLD);
        ++held;
    }
    assert_int_equal(held, RM_ONDEMAND_MAX_NAMES - 40);
    assert_int_equal(rm_ondemand_ask("one-more", 1), RM_ONDEMAND_ASK_FULL);
    /* answered names make room */
    char *answered[] = {"full-0", "full-1"};
    rm_ondemand_answered(answered, 2, 1);
    assert_int_equal(rm_ondemand_ask("one-more", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(rm_ondemand_ask("two-more", 1), RM_ONDEMAND_ASK_HOLD);
    assert_int_equal(rm_ondemand_ask("three-more", 1), RM_ONDEMAND_ASK_FULL);

    /* counters */
    rm_ondemand_count(RM_ONDEMAND_FOUND);
    rm_ondemand_count(RM_ONDEMAND_OVERFLOW);
    rm_ondemand_count(RM_ONDEMAND_OVERFLOW);
    rm_ondemand_held_add(3);
    rm_ondemand_held_add(-1);
    char *text = rm_ondemand_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "remora_ondemand_requests_total{result=\"found\"} 1\n"));
    assert_non_null(strstr(text, "remora_ondemand_requests_total{result=\"overflow\"} 2\n"));
    assert_non_null(strstr(text, "remora_ondemand_requests_total{result=\"timeout\"} 0\n"));
    assert_non_null(strstr(text, "remora_ondemand_held 2\n"));
    free(text);
    rm_ondemand_detach();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_off_without_stream_or_timeout),
        cmocka_unit_test(test_found_and_unknown),
        cmocka_unit_test(test_batches_retries_and_streams),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
