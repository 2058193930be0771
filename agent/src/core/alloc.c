#include <stdlib.h>
#include <string.h>
#include <h2o/socket.h>
#include "remora/strutil.h"
#include "core/alloc.h"

__thread h2o_buffer_prototype_t rm_pipe_buffer_prototype = {.allocator = {.max = RM_SANITIZING ? 0 : 256},
                                                            ._initial_buf = {.capacity = 8192}};

/* h2o's pool chunk (libh2o 0.13, lib/common/memory.c): the next chunk, a word of padding, then the bytes; a pool's
 * chunk_offset is the offset of the free space in the first chunk's bytes, and h2o_mem_init_pool sets it to their size */
#define POOL_CHUNK_SIZE 4096
#define POOL_CHUNK_HEADER (2 * sizeof(void *))

static __thread struct {
    int layout; /* 0: not checked yet, 1: as above, -1: not (no seeding) */
    void *head; /* cached chunks, linked through their first word */
    size_t cnt;
} pool_chunks;

static int
pool_layout_ok(void)
{
    if (pool_chunks.layout == 0) {
        h2o_mem_pool_t p;
        h2o_mem_init_pool(&p);
        int ok = p.chunks == NULL && p.chunk_offset == POOL_CHUNK_SIZE - POOL_CHUNK_HEADER;
        if (ok) {
            char *a = h2o_mem_alloc_pool(&p, 16), *b = h2o_mem_alloc_pool(&p, 32);
            ok = p.chunks != NULL && *(void **)p.chunks == NULL && a == (char *)p.chunks + POOL_CHUNK_HEADER && b == a + 16 &&
                 p.chunk_offset == 48;
        }
        h2o_mem_clear_pool(&p);
        pool_chunks.layout = ok ? 1 : -1;
    }
    return pool_chunks.layout > 0;
}

void
rm_pool_init(h2o_mem_pool_t *pool)
{
    h2o_mem_init_pool(pool);
    if (!pool_layout_ok())
        return;
    void *chunk = pool_chunks.head;
    if (chunk != NULL) {
        pool_chunks.head = *(void **)chunk;
        --pool_chunks.cnt;
    } else if ((chunk = malloc(POOL_CHUNK_SIZE)) == NULL) {
        return; /* h2o allocates (or dies) on first use */
    }
    *(void **)chunk = NULL;
    pool->chunks = chunk;
    pool->chunk_offset = 0;
}

void
rm_pool_clear(h2o_mem_pool_t *pool)
{
    void *first = NULL;
    if (pool_layout_ok() && pool->chunks != NULL) {
        /* the first chunk is the last of the list (h2o links new chunks in front); any chunk of a pool is a malloc'd
         * block of POOL_CHUNK_SIZE bytes, h2o's own recycler's too */
        void **link = (void **)&pool->chunks;
        while (*(void **)*link != NULL)
            link = (void **)*link;
        first = *link;
        *link = NULL;
    }
    h2o_mem_clear_pool(pool);
    if (first == NULL)
        return;
    if (pool_chunks.cnt >= RM_POOL_CHUNKS_KEPT || RM_SANITIZING) {
        free(first);
        return;
    }
    *(void **)first = pool_chunks.head;
    pool_chunks.head = first;
    ++pool_chunks.cnt;
}

/* the allocators this thread has used, for rm_alloc_thread_exit */
static __thread rm_recycle_t *registered;

void *
rm_recycle_alloc(rm_recycle_t *r)
{
    void *p;
    if (r->_head != NULL) {
        p = r->_head;
        r->_head = *(void **)p;
        --r->cnt;
        memset(p, 0, r->size);
        return p;
    }
    if (!r->_registered) {
        r->_registered = 1;
        r->_next_registered = registered;
        registered = r;
    }
    return rm_calloc(1, r->size < sizeof(void *) ? sizeof(void *) : r->size);
}

void
rm_recycle_free(rm_recycle_t *r, void *p)
{
    if (r->cnt >= r->max || RM_SANITIZING) {
        free(p);
        return;
    }
    *(void **)p = r->_head;
    r->_head = p;
    ++r->cnt;
}

/* h2o 2.2.5 keeps its recycled chunks as a singly linked list whose first word is the next pointer
 * and offers no call to empty it */
static void
clear_h2o_recycle(h2o_mem_recycle_t *a)
{
    void *p = a->_link;
    while (p != NULL) {
        void *next = *(void **)p;
        free(p);
        p = next;
    }
    a->_link = NULL;
    a->cnt = 0;
}

void
rm_alloc_thread_exit(void)
{
    for (rm_recycle_t *r = registered; r != NULL; r = r->_next_registered) {
        while (r->_head != NULL) {
            void *next = *(void **)r->_head;
            free(r->_head);
            r->_head = next;
        }
        r->cnt = 0;
        r->_registered = 0;
    }
    registered = NULL;
    while (pool_chunks.head != NULL) {
        void *next = *(void **)pool_chunks.head;
        free(pool_chunks.head);
        pool_chunks.head = next;
    }
    pool_chunks.cnt = 0;
    clear_h2o_recycle(&rm_pipe_buffer_prototype.allocator);
    clear_h2o_recycle(&h2o_socket_buffer_prototype.allocator);
}
