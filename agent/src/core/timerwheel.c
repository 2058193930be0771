/*
 * Placement rule: a timer with key k = max(expire_at_ms, wheel time t) sits on the level of the most
 * significant 6-bit digit in which k and t differ (level 0 if they differ only in the lowest digit or
 * not at all), in the slot named by k's digit on that level. Because k >= t and the digits above
 * agree, k's digit on its level is above t's (level 0: at or above), so each level only holds slots
 * "ahead" of t: no wrap-around, the lowest occupied bit of a level is its earliest slot, and the
 * lowest occupied level holds the earliest timers. When t enters a slot of level l >= 1 the slot's
 * timers agree with t in one more digit, so they are re-placed (cascaded) on lower levels.
 *
 * Timers whose key differs from t above the top level are parked on one list with a lower bound of
 * their keys (exact when lowered by a link, possibly stale after unlinks). The wheel's time never
 * passes that bound without re-placing the parked timers, so they are not re-examined at every 2^24 ms
 * boundary; in exchange, t may come within 2^24 ms of a parked timer, and the bound is a stop of its
 * own (next_cascade_at) that can even fall inside the current 64 ms block.
 */
#include <assert.h>
#include <stddef.h>
#include "core/timerwheel.h"

#define SLOT_PARKED (RM_TIMERWHEEL_LEVELS * RM_TIMERWHEEL_SLOTS)
#define SLOT_FIRING (SLOT_PARKED + 1)

static void
list_init(rm_timer_link_t *head)
{
    head->_prev = head->_next = head;
}

static int
list_is_empty(const rm_timer_link_t *head)
{
    return head->_next == head;
}

static void
list_insert_tail(rm_timer_link_t *head, rm_timer_link_t *node)
{
    node->_prev = head->_prev;
    node->_next = head;
    head->_prev->_next = node;
    head->_prev = node;
}

static void
list_remove(rm_timer_link_t *node)
{
    node->_prev->_next = node->_next;
    node->_next->_prev = node->_prev;
    node->_prev = node->_next = NULL;
}

/* moves every node of `from` to the tail of `to`, leaving `from` empty */
static void
list_splice_tail(rm_timer_link_t *to, rm_timer_link_t *from)
{
    if (list_is_empty(from))
        return;
    from->_next->_prev = to->_prev;
    to->_prev->_next = from->_next;
    from->_prev->_next = to;
    to->_prev = from->_prev;
    list_init(from);
}

static rm_timer_t *
timer_of(rm_timer_link_t *node)
{
    return (rm_timer_t *)((char *)node - offsetof(rm_timer_t, _link));
}

static uint64_t
key_of(const rm_timerwheel_t *w, const rm_timer_t *t)
{
    return t->expire_at_ms > w->_now_ms ? t->expire_at_ms : w->_now_ms;
}

static uint64_t
low_mask(unsigned bits)
{
    return bits >= 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1;
}

/* puts a timer that is on no list into the slot the placement rule gives for the wheel's time */
static void
place(rm_timerwheel_t *w, rm_timer_t *t)
{
    uint64_t key = key_of(w, t), diff = key ^ w->_now_ms;
    unsigned level = diff == 0 ? 0 : (unsigned)(63 - __builtin_clzll(diff)) / RM_TIMERWHEEL_BITS;

    if (level >= RM_TIMERWHEEL_LEVELS) {
        /* an empty parking's bound may be stale (its timers were unlinked, and the time has moved on): start afresh */
        if (list_is_empty(&w->_parked) || key < w->_parked_min_ms)
            w->_parked_min_ms = key;
        list_insert_tail(&w->_parked, &t->_link);
        t->_slot = SLOT_PARKED;
        return;
    }
    unsigned slot = (unsigned)(key >> (level * RM_TIMERWHEEL_BITS)) & (RM_TIMERWHEEL_SLOTS - 1);
    list_insert_tail(&w->_slots[level][slot], &t->_link);
    w->_occupied[level] |= (uint64_t)1 << slot;
    t->_slot = level * RM_TIMERWHEEL_SLOTS + slot;
}

/*
 * The earliest time at which the wheel must stop to cascade: the start of the earliest occupied slot
 * of levels >= 1, or the parked lower bound if that is earlier; UINT64_MAX if neither exists.
 */
static uint64_t
next_cascade_at(const rm_timerwheel_t *w)
{
    uint64_t at = list_is_empty(&w->_parked) ? UINT64_MAX : w->_parked_min_ms;
    for (unsigned level = 1; level < RM_TIMERWHEEL_LEVELS; ++level) {
        if (w->_occupied[level] != 0) {
            unsigned shift = level * RM_TIMERWHEEL_BITS;
            uint64_t slot = (uint64_t)__builtin_ctzll(w->_occupied[level]);
            uint64_t start = (w->_now_ms & ~low_mask(shift + RM_TIMERWHEEL_BITS)) | (slot << shift);
            return start < at ? start : at;
        }
    }
    return at;
}

static void
cascade_slot(rm_timerwheel_t *w, unsigned level, unsigned slot)
{
    rm_timer_link_t *head = &w->_slots[level][slot];
    w->_occupied[level] &= ~((uint64_t)1 << slot);
    /* the wheel's time now shares this slot's digit, so every timer lands on a lower level, never back here */
    while (!list_is_empty(head)) {
        rm_timer_t *t = timer_of(head->_next);
        list_remove(&t->_link);
        place(w, t);
    }
}

static void
cascade_parked(rm_timerwheel_t *w)
{
    rm_timer_link_t pending;
    list_init(&pending);
    /* some go straight back to parking: detach the list first so the loop ends */
    list_splice_tail(&pending, &w->_parked);
    w->_parked_min_ms = UINT64_MAX;
    while (!list_is_empty(&pending)) {
        rm_timer_t *t = timer_of(pending._next);
        list_remove(&t->_link);
        place(w, t);
    }
}

/* Moves the level-0 timers with keys in [wheel time, up_to] (same 64 ms block) to the firing list. */
static void
collect_level0(rm_timerwheel_t *w, uint64_t up_to)
{
    unsigned from = (unsigned)(w->_now_ms & (RM_TIMERWHEEL_SLOTS - 1)), to = (unsigned)(up_to & (RM_TIMERWHEEL_SLOTS - 1));
    uint64_t bits = w->_occupied[0] & (low_mask(to + 1) & ~low_mask(from));
    while (bits != 0) {
        unsigned slot = (unsigned)__builtin_ctzll(bits);
        bits &= bits - 1;
        rm_timer_link_t *head = &w->_slots[0][slot];
        for (rm_timer_link_t *n = head->_next; n != head; n = n->_next)
            timer_of(n)->_slot = SLOT_FIRING;
        list_splice_tail(&w->_firing, head);
        w->_occupied[0] &= ~((uint64_t)1 << slot);
    }
}

void
rm_timer_init(rm_timer_t *timer, rm_timer_cb cb)
{
    timer->cb = cb;
    timer->expire_at_ms = 0;
    timer->_link._prev = timer->_link._next = NULL;
    timer->_wheel = NULL;
    timer->_slot = 0;
}

void
rm_timer_unlink(rm_timer_t *timer)
{
    if (!rm_timer_is_linked(timer))
        return;
    rm_timerwheel_t *w = timer->_wheel;
    list_remove(&timer->_link);
    timer->_wheel = NULL;
    --w->_num_linked;
    if (timer->_slot < SLOT_PARKED) {
        unsigned level = timer->_slot / RM_TIMERWHEEL_SLOTS, slot = timer->_slot % RM_TIMERWHEEL_SLOTS;
        if (list_is_empty(&w->_slots[level][slot]))
            w->_occupied[level] &= ~((uint64_t)1 << slot);
    }
    /* _parked_min_ms stays a lower bound when a parked timer leaves; it is recomputed on the next cascade */
}

void
rm_timerwheel_init(rm_timerwheel_t *wheel, uint64_t now_ms)
{
    wheel->_now_ms = now_ms;
    wheel->_num_linked = 0;
    for (unsigned level = 0; level < RM_TIMERWHEEL_LEVELS; ++level) {
        wheel->_occupied[level] = 0;
        for (unsigned slot = 0; slot < RM_TIMERWHEEL_SLOTS; ++slot)
            list_init(&wheel->_slots[level][slot]);
    }
    list_init(&wheel->_parked);
    wheel->_parked_min_ms = UINT64_MAX;
    list_init(&wheel->_firing);
    wheel->_running = 0;
}

static void
unlink_all(rm_timer_link_t *head)
{
    while (!list_is_empty(head)) {
        rm_timer_t *t = timer_of(head->_next);
        list_remove(&t->_link);
        t->_wheel = NULL;
    }
}

void
rm_timerwheel_dispose(rm_timerwheel_t *wheel)
{
    assert(!wheel->_running);
    for (unsigned level = 0; level < RM_TIMERWHEEL_LEVELS; ++level) {
        for (unsigned slot = 0; slot < RM_TIMERWHEEL_SLOTS; ++slot)
            unlink_all(&wheel->_slots[level][slot]);
        wheel->_occupied[level] = 0;
    }
    unlink_all(&wheel->_parked);
    wheel->_parked_min_ms = UINT64_MAX;
    unlink_all(&wheel->_firing);
    wheel->_num_linked = 0;
}

void
rm_timerwheel_link(rm_timerwheel_t *wheel, rm_timer_t *timer, uint64_t expire_at_ms)
{
    rm_timer_unlink(timer);
    timer->expire_at_ms = expire_at_ms;
    timer->_wheel = wheel;
    ++wheel->_num_linked;
    place(wheel, timer);
}

static size_t
fire(rm_timerwheel_t *w)
{
    size_t fired = 0;
    /* callbacks may unlink or relink what is still on the firing list; take one entry at a time */
    while (!list_is_empty(&w->_firing)) {
        rm_timer_t *t = timer_of(w->_firing._next);
        rm_timer_unlink(t);
        ++fired;
        t->cb(t);
    }
    return fired;
}

size_t
rm_timerwheel_run(rm_timerwheel_t *wheel, uint64_t now_ms)
{
    assert(!wheel->_running);

    if (now_ms < wheel->_now_ms) {
        /* only timers linked in the past can be due: they sit in the slot of the wheel's time */
        rm_timer_link_t *head = &wheel->_slots[0][wheel->_now_ms & (RM_TIMERWHEEL_SLOTS - 1)];
        for (rm_timer_link_t *n = head->_next, *next; n != head; n = next) {
            next = n->_next;
            rm_timer_t *t = timer_of(n);
            if (t->expire_at_ms <= now_ms) {
                list_remove(n);
                list_insert_tail(&wheel->_firing, n);
                t->_slot = SLOT_FIRING;
            }
        }
        if (list_is_empty(head))
            wheel->_occupied[0] &= ~((uint64_t)1 << (wheel->_now_ms & (RM_TIMERWHEEL_SLOTS - 1)));
    } else {
        /*
         * Collect first, fire afterwards with the wheel's time at now_ms: a timer linked by a callback
         * is then placed relative to now_ms like any other, and one linked in the past waits for the
         * next run instead of being collected again.
         */
        for (;;) {
            /* jump straight to the next slot that needs cascading: an idle hour costs one iteration, not 56k */
            uint64_t next = next_cascade_at(wheel), up_to = wheel->_now_ms | (RM_TIMERWHEEL_SLOTS - 1);
            /* a parked lower bound can fall inside this 64 ms block: stop short of it to keep firing in expiry order */
            if (up_to > now_ms)
                up_to = now_ms;
            if (up_to >= next)
                up_to = next - 1;
            collect_level0(wheel, up_to);
            if (next > now_ms)
                break;
            assert(next > wheel->_now_ms);
            wheel->_now_ms = next;
            if (!list_is_empty(&wheel->_parked) && wheel->_parked_min_ms == next)
                cascade_parked(wheel);
            for (unsigned level = RM_TIMERWHEEL_LEVELS - 1; level >= 1; --level) {
                unsigned slot = (unsigned)(next >> (level * RM_TIMERWHEEL_BITS)) & (RM_TIMERWHEEL_SLOTS - 1);
                if ((wheel->_occupied[level] >> slot) & 1)
                    cascade_slot(wheel, level, slot);
            }
        }
        wheel->_now_ms = now_ms;
    }

    wheel->_running = 1;
    size_t fired = fire(wheel);
    wheel->_running = 0;
    return fired;
}

uint64_t
rm_timerwheel_next_expiry_ms(const rm_timerwheel_t *wheel)
{
    if (wheel->_num_linked == 0)
        return UINT64_MAX;
    if (!list_is_empty(&wheel->_firing))
        return wheel->_now_ms;
    uint64_t at = next_cascade_at(wheel);
    if (wheel->_occupied[0] != 0) {
        uint64_t first = (wheel->_now_ms & ~(uint64_t)(RM_TIMERWHEEL_SLOTS - 1)) | (uint64_t)__builtin_ctzll(wheel->_occupied[0]);
        if (first < at)
            at = first;
    }
    return at;
}
