/*
 * A hierarchical timing wheel: every per-request timer of a worker (request and per-try timeouts,
 * idle timeouts, retry backoff, ...) lives in the worker's one wheel, and the worker drives the wheel
 * from a single uv_timer_t armed for rm_timerwheel_next_expiry_ms(). (h2o 2.2.5, the version we
 * link, has no timer wheel of its own.)
 *
 * Resolution is one millisecond. Linking and unlinking are O(1); a run costs O(timers fired) plus
 * O(1) per slot cascaded, and each timer is cascaded at most once per level (4 levels of 64 slots,
 * covering 2^24 ms, about 4.7 hours, ahead of the wheel's time). Timers farther out are parked on
 * one list and re-examined only when the wheel's time reaches the earliest of them, so memory is a
 * fixed ~4 KiB per wheel whatever the timers and the time jumps.
 *
 * Times are milliseconds on a monotonic clock (uv_now()); they must stay below 2^63.
 *
 * Thread: a wheel and the timers linked to it belong to one thread (the worker's loop); nothing here
 * locks. Errors: none; misuse (a run from inside a callback, a timer freed while linked) is a bug
 * and is caught by assertions where that is cheap.
 */
#ifndef remora__timerwheel_h
#define remora__timerwheel_h

#include <stddef.h>
#include <stdint.h>

#define RM_TIMERWHEEL_BITS 6
#define RM_TIMERWHEEL_SLOTS (1u << RM_TIMERWHEEL_BITS)
#define RM_TIMERWHEEL_LEVELS 4

typedef struct st_rm_timer_t rm_timer_t;
typedef struct st_rm_timerwheel_t rm_timerwheel_t;

/**
 * Called from rm_timerwheel_run() when `timer` is due. The timer is already unlinked; the callback
 * may link it again, link or unlink any other timer of the wheel, and free `timer` (the wheel does
 * not touch it after the call). It must not run or dispose the wheel.
 */
typedef void (*rm_timer_cb)(rm_timer_t *timer);

/** Intrusive list node; private. */
typedef struct st_rm_timer_link_t {
    struct st_rm_timer_link_t *_prev, *_next;
} rm_timer_link_t;

/**
 * A timer, embedded in its owner (a stream, a connection). Owned by the embedder, who must unlink
 * it before freeing it. Read `expire_at_ms` freely; change it only through rm_timerwheel_link().
 */
struct st_rm_timer_t {
    rm_timer_cb cb;
    /** when it fires (absolute, ms); meaningful while linked and inside the callback */
    uint64_t expire_at_ms;
    rm_timer_link_t _link;
    /** the wheel it is linked to, NULL when not linked */
    rm_timerwheel_t *_wheel;
    /** where it is linked: level * RM_TIMERWHEEL_SLOTS + slot, or past those: parked, or on the firing list */
    unsigned _slot;
};

/** Embedded in the worker. All fields are private. */
struct st_rm_timerwheel_t {
    /** the wheel's time: every timer due at or before it has been handed to the firing list */
    uint64_t _now_ms;
    /** timers linked (slots, parking and firing list) */
    size_t _num_linked;
    /** bit s of _occupied[l] is set iff _slots[l][s] is not empty */
    uint64_t _occupied[RM_TIMERWHEEL_LEVELS];
    rm_timer_link_t _slots[RM_TIMERWHEEL_LEVELS][RM_TIMERWHEEL_SLOTS];
    /** timers 2^24 ms or more ahead; no earlier than _parked_min_ms */
    rm_timer_link_t _parked;
    uint64_t _parked_min_ms;
    /** timers due in the run in progress, in firing order */
    rm_timer_link_t _firing;
    int _running;
};

/** Initializes an unlinked timer that will call `cb`. Any thread (before it is shared). */
void rm_timer_init(rm_timer_t *timer, rm_timer_cb cb);
/** 1 if the timer is linked to a wheel (and so will fire unless unlinked), else 0. The wheel's thread. */
static int rm_timer_is_linked(const rm_timer_t *timer);
/** Unlinks the timer from whichever wheel holds it; no-op if it is not linked. O(1). The wheel's thread. */
void rm_timer_unlink(rm_timer_t *timer);

/** Initializes an empty wheel whose time is `now_ms`. */
void rm_timerwheel_init(rm_timerwheel_t *wheel, uint64_t now_ms);
/**
 * Unlinks every timer still linked (their owners remain responsible for them; nothing fires and
 * nothing is freed). The wheel may be initialized again afterwards. Not from inside a callback.
 */
void rm_timerwheel_dispose(rm_timerwheel_t *wheel);
/**
 * Links `timer` to fire at `expire_at_ms`, first unlinking it if it is linked (to this or another
 * wheel). A time at or before the wheel's time fires at the next rm_timerwheel_run(), even when
 * linked from a callback of the run in progress. O(1).
 */
void rm_timerwheel_link(rm_timerwheel_t *wheel, rm_timer_t *timer, uint64_t expire_at_ms);
/**
 * Advances the wheel's time to `now_ms` and fires every timer whose expire_at_ms <= now_ms, in order
 * of expiry at millisecond granularity (timers linked in the past first; timers of the same
 * millisecond in an unspecified order). A timer that is not yet due never fires. A due timer that a
 * callback unlinks, or links again for a later time, does not fire; one linked from a callback for a
 * time <= now_ms fires at the next run, so a run always ends. Returns the number of callbacks made.
 * A `now_ms` earlier than the wheel's time (a clock that went back) fires only timers that are due
 * by it and leaves the wheel's time alone. Not reentrant: not from inside a callback.
 */
size_t rm_timerwheel_run(rm_timerwheel_t *wheel, uint64_t now_ms);
/**
 * A time at or before the earliest expiry of the linked timers: the exact expiry for timers within
 * 64 ms of the wheel's time, otherwise the start of the wheel slot holding the earliest one (a run at
 * that time cascades it closer, possibly firing nothing). Timers linked in the past count as due at
 * the wheel's time. UINT64_MAX when no timer is linked. O(levels), meant to be called once per loop
 * iteration.
 */
uint64_t rm_timerwheel_next_expiry_ms(const rm_timerwheel_t *wheel);
/** Number of timers linked to the wheel. */
static size_t rm_timerwheel_num_linked(const rm_timerwheel_t *wheel);

/* inline definitions */

inline int
rm_timer_is_linked(const rm_timer_t *timer)
{
    return timer->_link._next != NULL;
}

inline size_t
rm_timerwheel_num_linked(const rm_timerwheel_t *wheel)
{
    return wheel->_num_linked;
}

#endif
