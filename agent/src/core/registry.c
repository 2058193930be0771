#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "core/registry.h"

rm_registry_entry_t *
rm_registry_acquire(rm_registry_t *registry, const char *name, rm_registry_entry_t *(*create)(void *arg),
                    void (*found)(rm_registry_entry_t *entry, void *arg), void *arg)
{
    pthread_mutex_lock(&registry->mutex);
    rm_registry_entry_t *e;
    for (e = registry->head; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0)
            break;
    if (e == NULL) {
        e = create(arg);
        e->name = rm_strdup(name);
        e->next = registry->head;
        registry->head = e;
    } else if (found != NULL) {
        found(e, arg);
    }
    ++e->refcnt;
    pthread_mutex_unlock(&registry->mutex);
    return e;
}

void
rm_registry_ref(rm_registry_t *registry, rm_registry_entry_t *entry)
{
    pthread_mutex_lock(&registry->mutex);
    ++entry->refcnt;
    pthread_mutex_unlock(&registry->mutex);
}

int
rm_registry_release(rm_registry_t *registry, rm_registry_entry_t *entry)
{
    pthread_mutex_lock(&registry->mutex);
    assert(entry->refcnt != 0);
    if (--entry->refcnt != 0) {
        pthread_mutex_unlock(&registry->mutex);
        return 0;
    }
    rm_registry_entry_t **p = &registry->head;
    while (*p != entry)
        p = &(*p)->next;
    *p = entry->next;
    pthread_mutex_unlock(&registry->mutex);
    free(entry->name);
    entry->name = NULL;
    return 1;
}
