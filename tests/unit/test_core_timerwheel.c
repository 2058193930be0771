/* The timing wheel: ordering, unlink/relink, callbacks that change the wheel, far timers, time jumps, a brute-force model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "core/timerwheel.h"

#define HOUR_MS (3600ull * 1000)
#define DAY_MS (24 * HOUR_MS)

/* A timer plus what the tests record about it. */
typedef struct st_test_timer_t {
    rm_timer_t timer;
    size_t fired;
    uint64_t fired_at;
    size_t fire_seq;
} test_timer_t;

static rm_timerwheel_t wheel;
static uint64_t now;
static size_t seq;

static test_timer_t *
of(rm_timer_t *t)
{
    return (test_timer_t *)((char *)t - offsetof(test_timer_t, timer));
}

static void
on_fire(rm_timer_t *t)
{
    test_timer_t *tt = of(t);
    assert_false(rm_timer_is_linked(t));
    ++tt->fired;
    tt->fired_at = now;
    tt->fire_seq = seq++;
}

static void
init_timers(test_timer_t *timers, size_t n, rm_timer_cb cb)
{
    memset(timers, 0, n * sizeof(*timers));
    for (size_t i = 0; i != n; ++i)
        rm_timer_init(&timers[i].timer, cb);
}

static size_t
run(uint64_t at)
{
    now = at;
    return rm_timerwheel_run(&wheel, at);
}

static int
setup(void **state)
{
    now = 1000;
    seq = 0;
    rm_timerwheel_init(&wheel, now);
    return 0;
}

static int
teardown(void **state)
{
    rm_timerwheel_dispose(&wheel);
    return 0;
}

static void
test_empty(void **state)
{
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), UINT64_MAX);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
    assert_int_equal(run(5000), 0);
    assert_int_equal(run(5000 + 10 * DAY_MS), 0);
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), UINT64_MAX);
}

/* Stepping one millisecond at a time, each timer fires exactly at its expiry and in expiry order. */
static void
test_order_step_by_step(void **state)
{
    static const uint64_t delays[] = {0, 1, 1, 2, 63, 64, 65, 127, 128, 500, 4095, 4096, 4097, 70000, 262143, 262144, 300000};
    enum { N = sizeof(delays) / sizeof(delays[0]) };
    test_timer_t timers[N];
    init_timers(timers, N, on_fire);
    /* link in reverse so that linking order does not explain the firing order */
    for (size_t i = N; i-- != 0;)
        rm_timerwheel_link(&wheel, &timers[i].timer, now + delays[i]);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), N);
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), now);

    uint64_t start = now;
    size_t total = 0;
    for (uint64_t t = start; t <= start + 300001; ++t)
        total += run(t);
    assert_int_equal(total, N);
    for (size_t i = 0; i != N; ++i) {
        assert_int_equal(timers[i].fired, 1);
        assert_int_equal(timers[i].fired_at, start + delays[i]);
        if (i != 0 && delays[i] != delays[i - 1])
            assert_true(timers[i].fire_seq > timers[i - 1].fire_seq);
    }
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), UINT64_MAX);
}

/* One run covering many expiries fires them in expiry order, never one that is not due. */
static void
test_order_single_run(void **state)
{
    enum { N = 200 };
    test_timer_t timers[N];
    init_timers(timers, N, on_fire);
    uint64_t start = now;
    for (size_t i = 0; i != N; ++i) /* expiries 0, 997, 1994, ... modulo 200000: scattered over all levels */
        rm_timerwheel_link(&wheel, &timers[i].timer, start + (i * 997 * 1013) % 200000);
    size_t fired = run(start + 100000);
    size_t expected = 0;
    for (size_t i = 0; i != N; ++i) {
        uint64_t at = timers[i].timer.expire_at_ms;
        if (at <= now) {
            ++expected;
            assert_int_equal(timers[i].fired, 1);
            for (size_t j = 0; j != N; ++j)
                if (timers[j].fired && timers[j].timer.expire_at_ms < at)
                    assert_true(timers[j].fire_seq < timers[i].fire_seq);
        } else {
            assert_int_equal(timers[i].fired, 0);
            assert_true(rm_timer_is_linked(&timers[i].timer));
        }
    }
    assert_int_equal(fired, expected);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), N - expected);
    /* the timers live on this stack frame: off the wheel before it returns */
    rm_timerwheel_dispose(&wheel);
}

static void
test_unlink(void **state)
{
    test_timer_t timers[3];
    init_timers(timers, 3, on_fire);

    /* unlinking a timer that was never linked is a no-op */
    rm_timer_unlink(&timers[0].timer);
    assert_false(rm_timer_is_linked(&timers[0].timer));

    rm_timerwheel_link(&wheel, &timers[0].timer, now + 10);
    rm_timerwheel_link(&wheel, &timers[1].timer, now + 10);
    rm_timerwheel_link(&wheel, &timers[2].timer, now + 100000);
    assert_true(rm_timer_is_linked(&timers[0].timer));
    rm_timer_unlink(&timers[0].timer);
    rm_timer_unlink(&timers[0].timer);
    assert_false(rm_timer_is_linked(&timers[0].timer));
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 2);

    assert_int_equal(run(now + 50), 1);
    assert_int_equal(timers[0].fired, 0);
    assert_int_equal(timers[1].fired, 1);

    /* the far one is unlinked: the wheel is empty, and its next expiry says so */
    rm_timer_unlink(&timers[2].timer);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), UINT64_MAX);
    assert_int_equal(run(now + 200000), 0);
    assert_int_equal(timers[2].fired, 0);
}

static void
test_relink(void **state)
{
    test_timer_t t;
    init_timers(&t, 1, on_fire);
    uint64_t start = now;

    rm_timerwheel_link(&wheel, &t.timer, start + 100);
    rm_timerwheel_link(&wheel, &t.timer, start + 5000); /* later: moves, does not duplicate */
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 1);
    assert_int_equal(t.timer.expire_at_ms, start + 5000);
    assert_int_equal(run(start + 4999), 0);
    assert_int_equal(run(start + 5000), 1);
    assert_int_equal(t.fired_at, start + 5000);

    rm_timerwheel_link(&wheel, &t.timer, now + 10 * DAY_MS);
    rm_timerwheel_link(&wheel, &t.timer, now + 3); /* earlier: from the parking to level 0 */
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), now + 3);
    assert_int_equal(run(now + 3), 1);
    assert_int_equal(t.fired, 2);

    /* relinking to another wheel takes it off the first one */
    rm_timerwheel_t other;
    rm_timerwheel_init(&other, now);
    rm_timerwheel_link(&wheel, &t.timer, now + 7);
    rm_timerwheel_link(&other, &t.timer, now + 7);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
    assert_int_equal(rm_timerwheel_num_linked(&other), 1);
    assert_int_equal(rm_timerwheel_run(&other, now + 7), 1);
    rm_timerwheel_dispose(&other);
}

static void
test_past_and_now(void **state)
{
    test_timer_t timers[3];
    init_timers(timers, 3, on_fire);
    assert_int_equal(run(50000), 0);

    rm_timerwheel_link(&wheel, &timers[0].timer, 10); /* long past */
    rm_timerwheel_link(&wheel, &timers[1].timer, 0);
    rm_timerwheel_link(&wheel, &timers[2].timer, 50000); /* exactly now */
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), 50000);
    /* fires at the next run, even at the same time */
    assert_int_equal(run(50000), 3);
    for (size_t i = 0; i != 3; ++i)
        assert_int_equal(timers[i].fired, 1);
}

/* A clock that goes back fires only what is due by it and does not move the wheel back. */
static void
test_clock_back(void **state)
{
    test_timer_t timers[3];
    init_timers(timers, 3, on_fire);
    assert_int_equal(run(50000), 0);
    rm_timerwheel_link(&wheel, &timers[0].timer, 40000);
    rm_timerwheel_link(&wheel, &timers[1].timer, 49000);
    rm_timerwheel_link(&wheel, &timers[2].timer, 50010);
    assert_int_equal(run(45000), 1);
    assert_int_equal(timers[0].fired, 1);
    assert_int_equal(timers[1].fired, 0);
    assert_int_equal(run(50000), 1);
    assert_int_equal(timers[1].fired, 1);
    assert_int_equal(run(50009), 0);
    assert_int_equal(run(50010), 1);
}

/* Callbacks that change the wheel during a run. */
static test_timer_t cb_timers[8];

static void
on_fire_unlink_next(rm_timer_t *t)
{
    on_fire(t);
    rm_timer_unlink(&cb_timers[1].timer);                        /* due in this run as well: must not fire */
    rm_timerwheel_link(&wheel, &cb_timers[2].timer, now + 1000); /* due, moved later: must not fire now */
    rm_timerwheel_link(&wheel, &cb_timers[3].timer, now - 5);    /* not linked before, due: next run */
    rm_timerwheel_link(&wheel, t, now);                          /* itself, due: next run, no loop */
}

static void
test_callbacks_change_wheel(void **state)
{
    init_timers(cb_timers, 8, on_fire);
    cb_timers[0].timer.cb = on_fire_unlink_next;
    uint64_t start = now;
    rm_timerwheel_link(&wheel, &cb_timers[0].timer, start + 10);
    rm_timerwheel_link(&wheel, &cb_timers[1].timer, start + 20);
    rm_timerwheel_link(&wheel, &cb_timers[2].timer, start + 30);
    rm_timerwheel_link(&wheel, &cb_timers[4].timer, start + 25);

    assert_int_equal(run(start + 100), 2);
    assert_int_equal(cb_timers[0].fired, 1);
    assert_int_equal(cb_timers[1].fired, 0);
    assert_false(rm_timer_is_linked(&cb_timers[1].timer));
    assert_int_equal(cb_timers[2].fired, 0);
    assert_int_equal(cb_timers[2].timer.expire_at_ms, start + 1100);
    assert_int_equal(cb_timers[3].fired, 0);
    assert_int_equal(cb_timers[4].fired, 1);
    assert_true(rm_timer_is_linked(&cb_timers[0].timer));
    assert_true(rm_timer_is_linked(&cb_timers[3].timer));
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), start + 100);

    /* the next run (same time) fires those linked in the past by the callback; timer 0 relinks itself again */
    assert_int_equal(run(start + 100), 2);
    assert_int_equal(cb_timers[0].fired, 2);
    assert_int_equal(cb_timers[3].fired, 1);
    assert_int_equal(cb_timers[1].fired, 0);
    /* and now no more: 0 and 3 (linked in the past by the second run's callback) and 2 at its new time */
    cb_timers[0].timer.cb = on_fire;
    assert_int_equal(run(start + 1100), 3);
    assert_int_equal(cb_timers[3].fired, 2);
    assert_int_equal(cb_timers[2].fired, 1);
    assert_int_equal(cb_timers[2].fired_at, start + 1100);
}

/* A callback may free (here: reuse) the timer it is called for. */
static void
on_fire_reinit(rm_timer_t *t)
{
    on_fire(t);
    memset(t, 0xa5, sizeof(*t));
    rm_timer_init(t, on_fire);
}

static void
test_callback_reuses_timer(void **state)
{
    test_timer_t timers[2];
    init_timers(timers, 2, on_fire_reinit);
    rm_timerwheel_link(&wheel, &timers[0].timer, now + 1);
    rm_timerwheel_link(&wheel, &timers[1].timer, now + 1);
    assert_int_equal(run(now + 1), 2);
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
}

/* Drives the wheel the way the worker does: sleep until next_expiry, run. Returns the number of runs. */
static size_t
drive_until_empty(size_t max_runs)
{
    size_t runs = 0;
    while (rm_timerwheel_num_linked(&wheel) != 0) {
        uint64_t next = rm_timerwheel_next_expiry_ms(&wheel);
        assert_true(next != UINT64_MAX);
        assert_true(next >= now);
        run(next);
        if (++runs > max_runs)
            fail_msg("more than %zu runs", max_runs);
    }
    return runs;
}

static void
test_far_future(void **state)
{
    static const uint64_t delays[] = {DAY_MS,           DAY_MS + 1, 7 * DAY_MS,       30 * DAY_MS + 12345, 365 * DAY_MS,
                                      (1ull << 24) - 1, 1ull << 24, (1ull << 24) + 1, 5 * HOUR_MS,         3};
    enum { N = sizeof(delays) / sizeof(delays[0]) };
    test_timer_t timers[N];
    init_timers(timers, N, on_fire);
    uint64_t start = now;
    for (size_t i = 0; i != N; ++i)
        rm_timerwheel_link(&wheel, &timers[i].timer, start + delays[i]);

    /* next_expiry may be early (slot starts), never late; each timer fires exactly at its expiry */
    size_t runs = drive_until_empty(N * 8);
    for (size_t i = 0; i != N; ++i) {
        assert_int_equal(timers[i].fired, 1);
        assert_int_equal(timers[i].fired_at, start + delays[i]);
    }
    /* a year ahead costs a handful of wake-ups, not one per slot boundary */
    assert_true(runs <= N * 6);
}

static void
test_time_jumps(void **state)
{
    enum { N = 1000 };
    static test_timer_t timers[N];
    init_timers(timers, N, on_fire);
    uint64_t start = now;
    for (size_t i = 0; i != N; ++i) /* one every ~18 minutes over 12.5 days */
        rm_timerwheel_link(&wheel, &timers[i].timer, start + (uint64_t)i * 1080001);

    /* jump by hours: every timer due fires in that run, none later */
    size_t total = 0;
    for (uint64_t t = start; t < start + 13 * DAY_MS; t += 3 * HOUR_MS + 17) {
        total += run(t);
        for (size_t i = 0; i != N; ++i)
            assert_int_equal(timers[i].fired, timers[i].timer.expire_at_ms <= t ? 1 : 0);
    }
    assert_int_equal(total, N);

    /* one giant jump over everything */
    for (size_t i = 0; i != N; ++i)
        rm_timerwheel_link(&wheel, &timers[i].timer, now + 1 + (uint64_t)i * 7919 * 977);
    assert_int_equal(run(now + 400 * DAY_MS), N);
    assert_int_equal(rm_timerwheel_next_expiry_ms(&wheel), UINT64_MAX);
}

/* A far timer whose parking bound falls just inside the current 64 ms block still fires in order. */
static void
test_parked_in_order(void **state)
{
    test_timer_t timers[2];
    init_timers(timers, 2, on_fire);
    uint64_t start = now, far = start + (1ull << 25);
    rm_timerwheel_link(&wheel, &timers[0].timer, far);
    /* walk the wheel to just before it without ever reaching the parking bound */
    for (uint64_t t = start; t < far - 10; t += 1234567)
        assert_int_equal(run(t), 0);
    assert_int_equal(run(far - 10), 0);
    rm_timerwheel_link(&wheel, &timers[1].timer, far + 5);
    assert_true(rm_timerwheel_next_expiry_ms(&wheel) <= far);
    assert_int_equal(run(far + 20), 2);
    assert_true(timers[0].fire_seq < timers[1].fire_seq);
}

/* The parking's lower bound must not outlive its timers (regression: next_expiry went below the wheel's time). */
static void
test_parked_bound_reset(void **state)
{
    test_timer_t timers[2];
    init_timers(timers, 2, on_fire);
    uint64_t start = now;
    rm_timerwheel_link(&wheel, &timers[0].timer, start + DAY_MS);
    rm_timer_unlink(&timers[0].timer);
    assert_int_equal(run(start + 2 * DAY_MS), 0);
    rm_timerwheel_link(&wheel, &timers[1].timer, now + DAY_MS);
    uint64_t next = rm_timerwheel_next_expiry_ms(&wheel);
    assert_true(next >= now && next <= now + DAY_MS);
    uint64_t expected = now + DAY_MS;
    drive_until_empty(8);
    assert_int_equal(timers[1].fired_at, expected);
}

static void
test_dispose(void **state)
{
    test_timer_t timers[4];
    init_timers(timers, 4, on_fire);
    rm_timerwheel_link(&wheel, &timers[0].timer, now);
    rm_timerwheel_link(&wheel, &timers[1].timer, now + 100);
    rm_timerwheel_link(&wheel, &timers[2].timer, now + 100000);
    rm_timerwheel_link(&wheel, &timers[3].timer, now + 100 * DAY_MS);
    rm_timerwheel_dispose(&wheel);
    for (size_t i = 0; i != 4; ++i) {
        assert_false(rm_timer_is_linked(&timers[i].timer));
        rm_timer_unlink(&timers[i].timer); /* still a no-op */
    }
    assert_int_equal(rm_timerwheel_num_linked(&wheel), 0);
    rm_timerwheel_init(&wheel, now);
    rm_timerwheel_link(&wheel, &timers[1].timer, now + 1);
    assert_int_equal(run(now + 1), 1);
    assert_int_equal(timers[0].fired + timers[2].fired + timers[3].fired, 0);
}

/*
 * Randomized comparison with a brute-force model: random links (past, near, far, very far), unlinks,
 * time advances (1 ms to months), and callbacks that themselves link and unlink random timers.
 */
#define MODEL_N 512

static struct {
    int linked;
    uint64_t expire;
    /* linked during the current run for a time <= its now: must wait for the next run */
    int deferred;
} model[MODEL_N];
static test_timer_t model_timers[MODEL_N];
static uint64_t rng_state;
static int in_run;
static uint64_t run_prev_now;
static uint64_t last_fired_key;
static size_t model_callbacks;

static uint64_t
rng(void)
{
    /* splitmix64: fixed seed, reproducible */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t
random_expiry(void)
{
    uint64_t r = rng() % 100;
    if (r < 10)
        return now - rng() % (now < 1000 ? now + 1 : 1000);
    if (r < 50)
        return now + rng() % 200;
    if (r < 75)
        return now + rng() % 100000;
    if (r < 90)
        return now + rng() % (1ull << 26);
    return now + rng() % (1ull << 34);
}

static void
model_link(size_t i, uint64_t at)
{
    rm_timerwheel_link(&wheel, &model_timers[i].timer, at);
    model[i].linked = 1;
    model[i].expire = at;
    model[i].deferred = in_run && at <= now;
}

static void
model_unlink(size_t i)
{
    rm_timer_unlink(&model_timers[i].timer);
    model[i].linked = 0;
    model[i].deferred = 0;
}

static void
model_check(void)
{
    size_t linked = 0;
    uint64_t min_key = UINT64_MAX;
    for (size_t i = 0; i != MODEL_N; ++i) {
        assert_int_equal(rm_timer_is_linked(&model_timers[i].timer), model[i].linked);
        if (model[i].linked) {
            ++linked;
            uint64_t key = model[i].expire > now ? model[i].expire : now;
            if (key < min_key)
                min_key = key;
        }
    }
    assert_int_equal(rm_timerwheel_num_linked(&wheel), linked);
    uint64_t next = rm_timerwheel_next_expiry_ms(&wheel);
    if (linked == 0) {
        assert_int_equal(next, UINT64_MAX);
    } else {
        /* never later than the real next expiry, never before the wheel's time */
        if (next > min_key)
            fail_msg("next_expiry %llu > real %llu (now %llu)", (unsigned long long)next, (unsigned long long)min_key,
                     (unsigned long long)now);
        assert_true(next >= now);
    }
}

static void
on_model_fire(rm_timer_t *t)
{
    size_t i = (size_t)(of(t) - model_timers);
    assert_true(i < MODEL_N);
    assert_true(in_run);
    assert_false(rm_timer_is_linked(t));
    if (!model[i].linked || model[i].deferred || model[i].expire > now)
        fail_msg("timer %zu fired: linked %d deferred %d expire %llu now %llu", i, model[i].linked, model[i].deferred,
                 (unsigned long long)model[i].expire, (unsigned long long)now);
    /* expiry order within a run, timers linked in the past counting as due at the previous run's time */
    uint64_t key = model[i].expire > run_prev_now ? model[i].expire : run_prev_now;
    assert_true(key >= last_fired_key);
    last_fired_key = key;
    model[i].linked = 0;
    ++model_callbacks;

    /* change the wheel from inside the callback */
    uint64_t r = rng() % 100;
    if (r < 10) {
        model_link(i, now - rng() % 3); /* itself, due: must wait for the next run */
    } else if (r < 25) {
        model_link(i, random_expiry());
    } else if (r < 35) {
        model_unlink((size_t)(rng() % MODEL_N));
    } else if (r < 45) {
        model_link((size_t)(rng() % MODEL_N), random_expiry());
    }
}

static void
test_random_against_model(void **state)
{
    memset(model, 0, sizeof(model));
    init_timers(model_timers, MODEL_N, on_model_fire);
    rng_state = 20240607;
    size_t fired_total = 0;

    for (size_t op = 0; op != 100000; ++op) {
        uint64_t r = rng() % 100;
        if (r < 40) {
            model_link((size_t)(rng() % MODEL_N), random_expiry());
        } else if (r < 55) {
            model_unlink((size_t)(rng() % MODEL_N));
        } else {
            uint64_t a = rng() % 1000, step;
            if (a < 600)
                step = rng() % 50;
            else if (a < 900)
                step = rng() % 5000;
            else if (a < 990)
                step = rng() % (1ull << 25);
            else
                step = rng() % (1ull << 33);
            if (a < 100) { /* sometimes wake exactly when the wheel asks */
                uint64_t next = rm_timerwheel_next_expiry_ms(&wheel);
                if (next != UINT64_MAX)
                    step = next - now;
            }
            in_run = 1;
            run_prev_now = now;
            last_fired_key = 0;
            model_callbacks = 0;
            size_t fired = run(now + step);
            in_run = 0;
            assert_int_equal(fired, model_callbacks);
            fired_total += fired;
            /* everything due fired, except what callbacks linked for now or earlier */
            for (size_t i = 0; i != MODEL_N; ++i) {
                if (model[i].linked && !model[i].deferred && model[i].expire <= now)
                    fail_msg("op %zu: timer %zu due at %llu not fired by %llu", op, i, (unsigned long long)model[i].expire,
                             (unsigned long long)now);
                model[i].deferred = 0;
            }
        }
        model_check();
    }
    /* the mix really exercised firing */
    assert_true(fired_total > 10000);
    print_message("timerwheel model: %zu fired, final time %llu ms\n", fired_total, (unsigned long long)now);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_step_by_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_single_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_past_and_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_change_wheel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_reuses_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_far_future, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_jumps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parked_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parked_bound_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispose, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_against_model, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
