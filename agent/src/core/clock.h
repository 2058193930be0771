/*
 * The worker's clock for per-request timestamps (a stream's start and end, an attempt's start): taken once per batch of
 * work, as h2o's loop time, instead of one clock_gettime per timestamp. A socket's read callback or a connection's flush
 * is a batch (rm_clock_batch_begin / _end, which nest); inside one, rm_clock_now_us returns the time of its first call in
 * the batch, so a timestamp is early by at most the work done before it in that callback (microseconds). Outside a batch
 * it reads the clock. Thread: any (the state is per thread).
 */
#ifndef remora__clock_h
#define remora__clock_h

#include <stdint.h>
#include "remora/strutil.h"

typedef struct st_rm_clock_t {
    uint64_t now_us; /* 0: not read yet in this batch */
    unsigned depth;  /* open batches */
} rm_clock_t;

extern __thread rm_clock_t rm_clock_;

static inline void
rm_clock_batch_begin(void)
{
    if (rm_clock_.depth++ == 0)
        rm_clock_.now_us = 0;
}

static inline void
rm_clock_batch_end(void)
{
    if (--rm_clock_.depth == 0)
        rm_clock_.now_us = 0;
}

/** Microseconds of CLOCK_MONOTONIC (as rm_now_us), read once per batch. */
static inline uint64_t
rm_clock_now_us(void)
{
    if (rm_clock_.depth == 0)
        return rm_now_us();
    if (rm_clock_.now_us == 0)
        rm_clock_.now_us = rm_now_us();
    return rm_clock_.now_us;
}

#endif
