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

/**
 * A request's memory pool with its first chunk from a per-thread cache of up to RM_POOL_CHUNKS_KEPT chunks (4 KiB each,
 * 1 MiB per worker; none under the sanitizers). h2o's own recycler keeps 16 chunks per thread, fewer than the requests
 * a worker has in flight, so without this nearly every request mallocs and frees its pool's first chunk. The chunk is
 * laid in the pool as h2o_mem_alloc_pool lays its own (checked once per thread against libh2o, which then allocates
 * from it as usual: a different layout turns the cache off); rm_pool_clear takes it back and clears the rest as
 * h2o_mem_clear_pool does.
 */
#define RM_POOL_CHUNKS_KEPT 256
void rm_pool_init(h2o_mem_pool_t *pool);
void rm_pool_clear(h2o_mem_pool_t *pool);

/** Buffers for body pipes and connection output: 8 KiB to start, up to 256 kept per worker for reuse. */
extern __thread h2o_buffer_prototype_t rm_pipe_buffer_prototype;

/** Frees every object kept by the calling thread's allocators (and h2o's buffer recycle lists). */
void rm_alloc_thread_exit(void);

#endif
