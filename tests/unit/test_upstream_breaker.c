/* Circuit breakers (upstream/breaker.c): the agent-wide registry by cluster name, slots taken with a
 * CAS loop against the limit (never exceeded, whatever the threads), released exactly once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "upstream/breaker.h"

static rm_config_breakers_t
limits(uint32_t connections, uint32_t pending, uint32_t requests, uint32_t retries)
{
    rm_config_breakers_t l = {connections, pending, requests, retries};
    return l;
}

static void
test_registry_by_name(void **state)
{
    rm_breaker_t *a = rm_breaker_acquire("api"), *b = rm_breaker_acquire("api"), *c = rm_breaker_acquire("web");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    rm_config_breakers_t l = limits(1, 2, 3, 4);
    rm_breaker_configure(a, &l);
    assert_int_equal(rm_breaker_limit(b, RM_BREAKER_REQUESTS), 3);
    assert_int_equal(rm_breaker_limit(c, RM_BREAKER_REQUESTS), 0);
    /* the entry and its counts survive while one reference remains (a runtime rebuilt by a reload) */
    assert_true(rm_breaker_try_acquire(a, RM_BREAKER_REQUESTS));
    rm_breaker_release_ref(a);
    rm_breaker_t *again = rm_breaker_acquire("api");
    assert_ptr_equal(again, b);
    assert_int_equal(rm_breaker_count(again, RM_BREAKER_REQUESTS), 1);
    rm_breaker_release(again, RM_BREAKER_REQUESTS);
    rm_breaker_release_ref(again);
    rm_breaker_release_ref(b);
    rm_breaker_release_ref(c);
    rm_breaker_release_ref(NULL);
}

static void
test_limit_and_release(void **state)
{
    rm_breaker_t *b = rm_breaker_acquire("limits");
    rm_config_breakers_t l = limits(0, 1, 3, 2);
    rm_breaker_configure(b, &l);
    for (int i = 0; i != 3; ++i)
        assert_true(rm_breaker_try_acquire(b, RM_BREAKER_REQUESTS));
    assert_false(rm_breaker_try_acquire(b, RM_BREAKER_REQUESTS));
    assert_int_equal(rm_breaker_count(b, RM_BREAKER_REQUESTS), 3);
    /* each limit is its own count */
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_RETRIES));
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_PENDING));
    assert_false(rm_breaker_try_acquire(b, RM_BREAKER_PENDING));
    rm_breaker_release(b, RM_BREAKER_REQUESTS);
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_REQUESTS));
    /* 0: no limit */
    for (int i = 0; i != 10000; ++i)
        assert_true(rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS));
    for (int i = 0; i != 10000; ++i)
        rm_breaker_release(b, RM_BREAKER_CONNECTIONS);
    /* a lower limit takes nothing back, it only refuses new slots until the count is under it */
    l = limits(0, 1, 1, 2);
    rm_breaker_configure(b, &l);
    assert_false(rm_breaker_try_acquire(b, RM_BREAKER_REQUESTS));
    for (int i = 0; i != 3; ++i)
        rm_breaker_release(b, RM_BREAKER_REQUESTS);
    assert_int_equal(rm_breaker_count(b, RM_BREAKER_REQUESTS), 0);
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_REQUESTS));
    rm_breaker_release(b, RM_BREAKER_REQUESTS);
    rm_breaker_release(b, RM_BREAKER_RETRIES);
    rm_breaker_release(b, RM_BREAKER_PENDING);
    /* a forced slot (a worker's first connection to an endpoint) goes over the limit and is counted */
    l = limits(2, 1, 1, 2);
    rm_breaker_configure(b, &l);
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS));
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS));
    rm_breaker_acquire_forced(b, RM_BREAKER_CONNECTIONS);
    assert_int_equal(rm_breaker_count(b, RM_BREAKER_CONNECTIONS), 3);
    rm_breaker_release(b, RM_BREAKER_CONNECTIONS);
    assert_false(rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS));
    rm_breaker_release(b, RM_BREAKER_CONNECTIONS);
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS));
    rm_breaker_release(b, RM_BREAKER_CONNECTIONS);
    rm_breaker_release(b, RM_BREAKER_CONNECTIONS);
    assert_int_equal(rm_breaker_count(b, RM_BREAKER_CONNECTIONS), 0);
    rm_breaker_release_ref(b);
}

#define THREADS 4
#define ROUNDS 200000
#define LIMIT 3

typedef struct st_race_t {
    rm_breaker_t *b;
    /* holders counted independently of the breaker: what it lets in at once */
    uint32_t holders, max_holders;
    uint64_t taken, refused;
} race_t;

static void *
race_thread(void *arg)
{
    race_t *r = arg;
    uint64_t taken = 0, refused = 0;
    for (int i = 0; i != ROUNDS; ++i) {
        if (!rm_breaker_try_acquire(r->b, RM_BREAKER_REQUESTS)) {
            ++refused;
            continue;
        }
        ++taken;
        uint32_t now = __atomic_add_fetch(&r->holders, 1, __ATOMIC_ACQ_REL);
        uint32_t max = __atomic_load_n(&r->max_holders, __ATOMIC_RELAXED);
        while (now > max && !__atomic_compare_exchange_n(&r->max_holders, &max, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        __atomic_sub_fetch(&r->holders, 1, __ATOMIC_ACQ_REL);
        rm_breaker_release(r->b, RM_BREAKER_REQUESTS);
    }
    __atomic_add_fetch(&r->taken, taken, __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->refused, refused, __ATOMIC_RELAXED);
    return NULL;
}

static void
test_four_threads_never_exceed(void **state)
{
    race_t r;
    memset(&r, 0, sizeof(r));
    r.b = rm_breaker_acquire("race");
    rm_config_breakers_t l = limits(0, 0, LIMIT, 0);
    rm_breaker_configure(r.b, &l);
    pthread_t th[THREADS];
    for (int i = 0; i != THREADS; ++i)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r), 0);
    for (int i = 0; i != THREADS; ++i)
        pthread_join(th[i], NULL);
    printf("# %d threads x %d rounds, limit %d: %llu taken, %llu refused, at most %u held at once\n", THREADS, ROUNDS, LIMIT,
           (unsigned long long)r.taken, (unsigned long long)r.refused, r.max_holders);
    assert_true(r.max_holders <= LIMIT);
    assert_true(r.max_holders >= 1);
    assert_int_equal(r.taken + r.refused, (uint64_t)THREADS * ROUNDS);
    /* every slot came back */
    assert_int_equal(rm_breaker_count(r.b, RM_BREAKER_REQUESTS), 0);
    rm_breaker_release_ref(r.b);
}

static void
test_render(void **state)
{
    rm_breaker_t *b = rm_breaker_acquire("we\"ird");
    rm_config_breakers_t l = limits(10, 20, 30, 40);
    rm_breaker_configure(b, &l);
    assert_true(rm_breaker_try_acquire(b, RM_BREAKER_RETRIES));
    char *text = rm_breaker_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "# TYPE remora_upstream_breaker_active gauge\n"));
    assert_non_null(strstr(text, "remora_upstream_breaker_active{cluster=\"we\\\"ird\",limit=\"retries\"} 1\n"));
    assert_non_null(strstr(text, "remora_upstream_breaker_limit{cluster=\"we\\\"ird\",limit=\"requests\"} 30\n"));
    free(text);
    rm_breaker_release(b, RM_BREAKER_RETRIES);
    rm_breaker_release_ref(b);
    assert_null(rm_breaker_render());
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_by_name),
        cmocka_unit_test(test_limit_and_release),
        cmocka_unit_test(test_four_threads_never_exceed),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
