/*
 * A process-wide registry of reference-counted objects keyed by name: the agent-wide state that
 * must outlive configuration snapshots while something of that name exists (retry budgets,
 * circuit breakers, outlier records, rate-limit tables). The object embeds an rm_registry_entry_t;
 * the registry owns the entry's name and links. Lookups happen when runtimes are built, not per
 * request: one mutex per registry, held for a short list walk.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef remora__core_registry_h
#define remora__core_registry_h

#include <pthread.h>
#include <stddef.h>

typedef struct st_rm_registry_entry_t {
    /** the key (owned by the registry, valid while the entry is acquired) */
    char *name;
    size_t refcnt;
    struct st_rm_registry_entry_t *next;
} rm_registry_entry_t;

typedef struct st_rm_registry_t {
    pthread_mutex_t mutex;
    /** the entries; walk only with `mutex` held (rm_registry_lock) */
    rm_registry_entry_t *head;
} rm_registry_t;

#define RM_REGISTRY_INITIALIZER                                                                                                    \
    {                                                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, NULL                                                                                            \
    }
/** The object that embeds `entry` as its `member`. */
#define RM_REGISTRY_OWNER(type, member, entry) ((type *)((char *)(entry)-offsetof(type, member)))

/**
 * Takes a reference on the entry named `name`. A new one comes from `create(arg)` (a new object,
 * its entry zeroed); an existing one is passed to `found(entry, arg)` if set. Both run with the
 * registry's mutex held and must not call into this registry. Never NULL; aborts on OOM.
 */
rm_registry_entry_t *rm_registry_acquire(rm_registry_t *registry, const char *name, rm_registry_entry_t *(*create)(void *arg),
                                         void (*found)(rm_registry_entry_t *entry, void *arg), void *arg);
/** Takes one more reference on an entry the caller already holds. */
void rm_registry_ref(rm_registry_t *registry, rm_registry_entry_t *entry);
/**
 * Drops a reference. Returns 1 if it was the last: the entry is unlinked and its name freed, and
 * the caller disposes of the object; else 0.
 */
int rm_registry_release(rm_registry_t *registry, rm_registry_entry_t *entry);
static inline void
rm_registry_lock(rm_registry_t *registry)
{
    pthread_mutex_lock(&registry->mutex);
}
static inline void
rm_registry_unlock(rm_registry_t *registry)
{
    pthread_mutex_unlock(&registry->mutex);
}

#endif
