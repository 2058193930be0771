#include <stdlib.h>
#include <string.h>
#include <h2o/socket.h>
#include "remora/strutil.h"
#include "core/alloc.h"

__thread h2o_buffer_prototype_t rm_pipe_buffer_prototype = {.allocator = {.max = RM_SANITIZING ? 0 : 256},
                                                            ._initial_buf = {.capacity = 8192}};

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
    clear_h2o_recycle(&rm_pipe_buffer_prototype.allocator);
    clear_h2o_recycle(&h2o_socket_buffer_prototype.allocator);
}
