/*
 * Per-thread recycling allocators for the objects created per request (streams and their codec
 * halves), and the prototype for body-pipe buffers. Freed objects are kept on a thread-local free
 * list (up to `max`) so a busy worker allocates nothing in steady state; rm_alloc_thread_exit()
 * releases every list of the calling thread.
 *
 * Thread: lists are per thread; an object must be freed on the thread that allocated it (always
 * true here: a stream never leaves its worker).
 */
#ifndef remora__alloc_h
#define remora__alloc_h

#include <stddef.h>
#include <h2o/memory.h>

/* Under AddressSanitizer nothing is recycled, so a use after free is caught instead of hidden. */
#if defined(__SANITIZE_ADDRESS__)
#define RM_SANITIZING 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RM_SANITIZING 1
#endif
#endif
#ifndef RM_SANITIZING
#define RM_SANITIZING 0
#endif

typedef struct st_rm_recycle_t {
    size_t size; /* every object of one allocator has this size */
    size_t max;  /* objects kept for reuse */
    size_t cnt;
    void *_head;
    struct st_rm_recycle_t *_next_registered;
    int _registered;
} rm_recycle_t;

#define RM_RECYCLE_INITIALIZER(type, max)                                                                                          \
    {                                                                                                                              \
        sizeof(type), (max), 0, NULL, NULL, 0                                                                                      \
    }

/** A zeroed object. Aborts on out of memory. */
void *rm_recycle_alloc(rm_recycle_t *r);
void rm_recycle_free(rm_recycle_t *r, void *p);

/** Buffers for body pipes and connection output: 8 KiB to start, up to 256 kept per worker for reuse. */
extern __thread h2o_buffer_prototype_t rm_pipe_buffer_prototype;

/** Frees every object kept by the calling thread's allocators (and h2o's buffer recycle lists). */
void rm_alloc_thread_exit(void);

#endif
