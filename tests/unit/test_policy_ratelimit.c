/* GCRA decisions and the agent-wide bucket tables (policy/ratelimit_table.h). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "policy/ratelimit_table.h"

#define MS 1000000ull
#define SEC 1000000000ull

static void
test_gcra_burst(void **unused)
{
    uint64_t tat = 0, wait = 0, now = 1000 * SEC;
    /* 10 rps, burst 5: five at once, the sixth refused */
    for (int i = 0; i != 5; ++i)
        assert_true(rm_gcra_take(&tat, now, 10, 5, &wait));
    assert_false(rm_gcra_take(&tat, now, 10, 5, &wait));
    /* the next one passes one emission interval (100 ms) later */
    assert_int_equal(wait, 100 * MS);
    assert_false(rm_gcra_take(&tat, now + 99 * MS, 10, 5, &wait));
    assert_int_equal(wait, 1 * MS);
    assert_true(rm_gcra_take(&tat, now + 100 * MS, 10, 5, &wait));
}

static void
test_gcra_burst_default(void **unused)
{
    /* burst 0 means the rate itself */
    uint64_t tat = 0, wait, now = 5 * SEC;
    int n = 0;
    while (rm_gcra_take(&tat, now, 20, 0, &wait))
        ++n;
    assert_int_equal(n, 20);
}

static void
test_gcra_steady_rate(void **unused)
{
    /* offered 300/s for 10 s against 100/s burst 10: 100/s + the burst */
    uint64_t tat = 0, wait, now = 7 * SEC;
    int allowed = 0;
    for (int i = 0; i != 3000; ++i)
        allowed += rm_gcra_take(&tat, now + (uint64_t)i * SEC / 300, 100, 10, &wait);
    assert_in_range(allowed, 1000, 1011);
}

static void
test_gcra_disabled(void **unused)
{
    uint64_t tat = 0, wait;
    for (int i = 0; i != 1000; ++i)
        assert_true(rm_gcra_take(&tat, SEC, 0, 0, &wait));
}

static void
test_retry_after(void **unused)
{
    assert_int_equal(rm_gcra_retry_after_s(0), 1);
    assert_int_equal(rm_gcra_retry_after_s(1), 1);
    assert_int_equal(rm_gcra_retry_after_s(SEC), 1);
    assert_int_equal(rm_gcra_retry_after_s(SEC + 1), 2);
    uint64_t tat = 0, wait, now = SEC;
    /* 1 request per 2 s... expressed as a 1 rps limit with burst 1, refused at once: wait 1 s */
    assert_true(rm_gcra_take(&tat, now, 1, 1, &wait));
    assert_false(rm_gcra_take(&tat, now, 1, 1, &wait));
    assert_int_equal(rm_gcra_retry_after_s(wait), 1);
    assert_false(rm_gcra_take(&tat, now + 300 * MS, 1, 1, &wait));
    assert_int_equal(wait, 700 * MS);
    assert_int_equal(rm_gcra_retry_after_s(wait), 1);
}

static void
test_table_per_client_and_total(void **unused)
{
    rm_ratelimit_table_t *t = rm_ratelimit_table_acquire("t1", 100);
    rm_ratelimit_rates_t r = {.total_rps = 0, .client_rps = 10, .client_burst = 2};
    uint64_t wait, now = 3 * SEC;
    assert_true(rm_ratelimit_table_check(t, &r, "a", 1, now, &wait));
    assert_true(rm_ratelimit_table_check(t, &r, "a", 1, now, &wait));
    assert_false(rm_ratelimit_table_check(t, &r, "a", 1, now, &wait));
    /* another client has its own bucket */
    assert_true(rm_ratelimit_table_check(t, &r, "b", 1, now, &wait));
    /* no key: the total only (unlimited here) */
    assert_true(rm_ratelimit_table_check(t, &r, NULL, 0, now, &wait));
    uint64_t a, l;
    rm_ratelimit_table_counts(t, &a, &l);
    assert_int_equal(a, 4);
    assert_int_equal(l, 1);

    /* a total refusal does not charge the client's bucket */
    rm_ratelimit_rates_t r2 = {.total_rps = 1, .total_burst = 1, .client_rps = 1, .client_burst = 1};
    rm_ratelimit_table_t *t2 = rm_ratelimit_table_acquire("t2", 100);
    assert_true(rm_ratelimit_table_check(t2, &r2, "x", 1, now, &wait));
    assert_false(rm_ratelimit_table_check(t2, &r2, "y", 1, now, &wait)); /* total spent */
    r2.total_rps = 0;
    assert_true(rm_ratelimit_table_check(t2, &r2, "y", 1, now, &wait)); /* y's bucket untouched */
    rm_ratelimit_table_release(t2);
    rm_ratelimit_table_release(t);
}

static void
test_table_registry(void **unused)
{
    rm_ratelimit_table_t *a = rm_ratelimit_table_acquire("shared", 0);
    rm_ratelimit_table_t *b = rm_ratelimit_table_acquire("shared", 0);
    assert_ptr_equal(a, b);
    assert_int_equal(rm_ratelimit_table_capacity(a), 10000);
    rm_ratelimit_rates_t r = {.total_rps = 1, .total_burst = 1};
    uint64_t wait;
    assert_true(rm_ratelimit_table_check(a, &r, NULL, 0, SEC, &wait));
    assert_false(rm_ratelimit_table_check(b, &r, NULL, 0, SEC, &wait));
    /* a new bound re-allocates the clients, keeps the total bucket */
    rm_ratelimit_table_t *c = rm_ratelimit_table_acquire("shared", 32);
    assert_ptr_equal(a, c);
    assert_int_equal(rm_ratelimit_table_capacity(a), 32);
    assert_false(rm_ratelimit_table_check(c, &r, NULL, 0, SEC, &wait));
    char *text = rm_ratelimit_render_prometheus();
    assert_non_null(strstr(text, "remora_rate_limit_decisions_total{policy=\"shared\",decision=\"limited\"} 2\n"));
    free(text);
    rm_ratelimit_table_release(a);
    rm_ratelimit_table_release(b);
    rm_ratelimit_table_release(c);
    assert_null(rm_ratelimit_render_prometheus());
}

static void
test_table_lru_bound(void **unused)
{
    rm_ratelimit_table_t *t = rm_ratelimit_table_acquire("lru", 160);
    rm_ratelimit_rates_t r = {.client_rps = 1, .client_burst = 1};
    uint64_t wait, now = SEC;
    char key[64];
    for (int i = 0; i != 100000; ++i) {
        int n = snprintf(key, sizeof(key), "client-%d", i);
        rm_ratelimit_table_check(t, &r, key, (size_t)n, now, &wait);
        assert_true(rm_ratelimit_table_num_clients(t) <= 160);
    }
    assert_int_equal(rm_ratelimit_table_num_clients(t), 160);
    /* the most recent clients are still tracked (refused), the oldest were evicted (fresh) */
    int n = snprintf(key, sizeof(key), "client-%d", 99999);
    assert_false(rm_ratelimit_table_check(t, &r, key, (size_t)n, now, &wait));
    n = snprintf(key, sizeof(key), "client-%d", 0);
    assert_true(rm_ratelimit_table_check(t, &r, key, (size_t)n, now, &wait));
    /* long keys: identified by prefix, length and hash */
    char long1[100], long2[100];
    memset(long1, 'k', sizeof(long1));
    memcpy(long2, long1, sizeof(long2));
    long2[99] = 'z';
    assert_true(rm_ratelimit_table_check(t, &r, long1, sizeof(long1), now, &wait));
    assert_true(rm_ratelimit_table_check(t, &r, long2, sizeof(long2), now, &wait));
    assert_false(rm_ratelimit_table_check(t, &r, long1, sizeof(long1), now, &wait));
    rm_ratelimit_table_release(t);
}

/* 4 threads: distinct clients churn the bounded table while all share one total bucket */
typedef struct st_thread_arg_t {
    rm_ratelimit_table_t *t;
    int id;
    int allowed;
} thread_arg_t;

static void *
run_thread(void *p)
{
    thread_arg_t *arg = p;
    rm_ratelimit_rates_t r = {.total_rps = 1000, .total_burst = 1, .client_rps = 1000, .client_burst = 1000};
    char key[32];
    uint64_t wait;
    /* 10 simulated seconds at 4 x 1000 offered/s: the total allows about 10000 */
    for (int i = 0; i != 10000; ++i) {
        int n = snprintf(key, sizeof(key), "%d-%d", arg->id, i % 5000);
        uint64_t now = SEC + (uint64_t)i * MS;
        arg->allowed += rm_ratelimit_table_check(arg->t, &r, key, (size_t)n, now, &wait);
    }
    return NULL;
}

static void
test_table_threads(void **unused)
{
    rm_ratelimit_table_t *t = rm_ratelimit_table_acquire("threads", 1000);
    pthread_t th[4];
    thread_arg_t args[4];
    for (int i = 0; i != 4; ++i) {
        args[i] = (thread_arg_t){t, i, 0};
        pthread_create(&th[i], NULL, run_thread, &args[i]);
    }
    int total = 0;
    for (int i = 0; i != 4; ++i) {
        pthread_join(th[i], NULL);
        total += args[i].allowed;
    }
    /* threads' clocks interleave loosely; the bound holds to the emission schedule: at most 10 s x 1000 + 1 */
    assert_in_range(total, 9000, 10001);
    assert_true(rm_ratelimit_table_num_clients(t) <= rm_ratelimit_table_capacity(t));
    assert_int_equal(rm_ratelimit_table_capacity(t), 1008);
    uint64_t a, l;
    rm_ratelimit_table_counts(t, &a, &l);
    assert_int_equal(a + l, 40000);
    rm_ratelimit_table_release(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_burst),       cmocka_unit_test(test_gcra_burst_default),
        cmocka_unit_test(test_gcra_steady_rate), cmocka_unit_test(test_gcra_disabled),
        cmocka_unit_test(test_retry_after),      cmocka_unit_test(test_table_per_client_and_total),
        cmocka_unit_test(test_table_registry),   cmocka_unit_test(test_table_lru_bound),
        cmocka_unit_test(test_table_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
