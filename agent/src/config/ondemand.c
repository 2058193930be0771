#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/ondemand.h"

enum { ST_FREE = 0, ST_PENDING, ST_INFLIGHT, ST_ANSWERED, ST_UNKNOWN };

typedef struct st_entry_t {
    char name[RM_ONDEMAND_MAX_NAME_BYTES + 1];
    uint8_t state;
    /* ST_INFLIGHT: when it was sent; ST_UNKNOWN: until when (monotonic ms) */
    uint64_t at_ms;
    /* ST_ANSWERED: the generation of the config that holds the answer (a worker's config of it or later decides) */
    uint64_t generation;
} entry_t;

static struct {
    pthread_mutex_t mutex;
    /* allocated at the first name; entries [0, used) have been in use */
    entry_t *entries;
    size_t used;
    /* the control thread's wakeup while a stream is open (NULL: none) */
    void (*wake)(void *ctx);
    void *wake_ctx;
    void (*notify)(void);
    int ever_attached;
} table = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static _Atomic uint32_t timeout_ms = RM_ONDEMAND_DEFAULT_TIMEOUT_MS;
static _Atomic uint64_t results[RM_ONDEMAND_NUM_RESULTS];
static _Atomic long held_now;

static const char *const result_names[RM_ONDEMAND_NUM_RESULTS] = {"found", "unknown", "timeout", "overflow"};

void
rm_ondemand_set_timeout_ms(uint32_t ms)
{
    atomic_store(&timeout_ms, ms);
}

uint32_t
rm_ondemand_timeout_ms(void)
{
    return atomic_load_explicit(&timeout_ms, memory_order_relaxed);
}

size_t
rm_ondemand_host(const char *authority, size_t len, char *out)
{
    /* "host:port": the port goes (an IPv6 literal starts with '[', which no name has) */
    for (size_t i = len; i != 0; --i) {
        char c = authority[i - 1];
        if (c == ':') {
            len = i - 1;
            break;
        }
        if (c < '0' || c > '9')
            break;
    }
    if (len > 1 && authority[len - 1] == '.')
        --len;
    if (len == 0 || len > RM_ONDEMAND_MAX_NAME_BYTES)
        return 0;
    int letters = 0;
    for (size_t i = 0; i != len; ++i) {
        char c = authority[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c >= 'a' && c <= 'z')
            letters = 1;
        else if (!((c >= '0' && c <= '9') || c == '-' || c == '.'))
            return 0;
        out[i] = c;
    }
    out[len] = '\0';
    /* digits and dots only: an IPv4 address, never a Service's name */
    return letters ? len : 0;
}

/* The entry of `name`, or NULL. Lock held. */
static entry_t *
find(const char *name)
{
    for (size_t i = 0; i != table.used; ++i)
        if (table.entries[i].state != ST_FREE && strcmp(table.entries[i].name, name) == 0)
            return &table.entries[i];
    return NULL;
}

/* A slot for a new name: a free one, else the answered or unknown name that matters least. Lock held. */
static entry_t *
new_entry(uint64_t now)
{
    if (table.entries == NULL)
        table.entries = rm_calloc(RM_ONDEMAND_MAX_NAMES, sizeof(*table.entries));
    entry_t *best = NULL;
    for (size_t i = 0; i != table.used; ++i) {
        entry_t *e = &table.entries[i];
        if (e->state == ST_FREE || (e->state == ST_UNKNOWN && e->at_ms <= now))
            return e;
        /* an answered name next (a config in service decides it), else the unknown one expiring first */
        if (e->state == ST_ANSWERED && (best == NULL || best->state != ST_ANSWERED))
            best = e;
        else if (e->state == ST_UNKNOWN && (best == NULL || (best->state == ST_UNKNOWN && e->at_ms < best->at_ms)))
            best = e;
    }
    if (table.used != RM_ONDEMAND_MAX_NAMES)
        return &table.entries[table.used++];
    return best;
}

static void
queue(entry_t *e)
{
    e->state = ST_PENDING;
    if (table.wake != NULL)
        table.wake(table.wake_ctx);
}

rm_ondemand_ask_t
rm_ondemand_ask(const char *host, uint64_t generation)
{
    uint32_t timeout = rm_ondemand_timeout_ms();
    if (timeout == 0)
        return RM_ONDEMAND_ASK_OFF;
    uint64_t now = rm_now_ms();
    rm_ondemand_ask_t ret = RM_ONDEMAND_ASK_HOLD;
    pthread_mutex_lock(&table.mutex);
    entry_t *e = table.wake != NULL ? find(host) : NULL;
    if (table.wake == NULL) {
        /* no stream: nobody to ask (a name remembered unknown is answered as today all the same) */
        ret = RM_ONDEMAND_ASK_OFF;
    } else if (e == NULL) {
        if ((e = new_entry(now)) == NULL) {
            ret = RM_ONDEMAND_ASK_FULL;
        } else {
            memcpy(e->name, host, strlen(host) + 1);
            queue(e);
        }
    } else {
        switch (e->state) {
        case ST_PENDING:
            break;
        case ST_INFLIGHT:
            /* unanswered for a whole timeout (a control plane that ignores Discover, or lost it): ask again */
            if (now - e->at_ms >= timeout)
                queue(e);
            break;
        case ST_ANSWERED:
            if (generation >= e->generation) {
                e->state = ST_UNKNOWN;
                e->at_ms = now + RM_ONDEMAND_UNKNOWN_MS;
                ret = RM_ONDEMAND_ASK_UNKNOWN;
            }
            /* else the config that answers it is on its way to this worker */
            break;
        case ST_UNKNOWN:
            if (now < e->at_ms)
                ret = RM_ONDEMAND_ASK_UNKNOWN;
            else
                queue(e);
            break;
        }
    }
    pthread_mutex_unlock(&table.mutex);
    return ret;
}

int
rm_ondemand_settle(const char *host, uint64_t generation)
{
    int ret = 0;
    uint64_t now = rm_now_ms();
    pthread_mutex_lock(&table.mutex);
    entry_t *e = find(host);
    if (e != NULL) {
        if (e->state == ST_ANSWERED && generation >= e->generation) {
            e->state = ST_UNKNOWN;
            e->at_ms = now + RM_ONDEMAND_UNKNOWN_MS;
            ret = 1;
        } else if (e->state == ST_UNKNOWN && now < e->at_ms) {
            ret = 1;
        }
    }
    pthread_mutex_unlock(&table.mutex);
    return ret;
}

void
rm_ondemand_forget(const char *host)
{
    pthread_mutex_lock(&table.mutex);
    entry_t *e = find(host);
    if (e != NULL && (e->state == ST_ANSWERED || e->state == ST_UNKNOWN))
        e->state = ST_FREE;
    pthread_mutex_unlock(&table.mutex);
}

void
rm_ondemand_count(rm_ondemand_result_t result)
{
    atomic_fetch_add_explicit(&results[result], 1, memory_order_relaxed);
}

void
rm_ondemand_held_add(long delta)
{
    atomic_fetch_add_explicit(&held_now, delta, memory_order_relaxed);
}

char *
rm_ondemand_render(void)
{
    pthread_mutex_lock(&table.mutex);
    int show = table.ever_attached;
    pthread_mutex_unlock(&table.mutex);
    if (!show)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    fprintf(fp, "# HELP remora_ondemand_requests_total Requests for a name outside the agent's scope, held for on-demand "
                "discovery or answered at once, by outcome.\n# TYPE remora_ondemand_requests_total counter\n");
    for (int i = 0; i != RM_ONDEMAND_NUM_RESULTS; ++i)
        fprintf(fp, "remora_ondemand_requests_total{result=\"%s\"} %" PRIu64 "\n", result_names[i],
                atomic_load_explicit(&results[i], memory_order_relaxed));
    long held = atomic_load_explicit(&held_now, memory_order_relaxed);
    fprintf(fp,
            "# HELP remora_ondemand_held Requests held now while the agent asks the control plane for their name, all "
            "workers.\n# TYPE remora_ondemand_held gauge\nremora_ondemand_held %ld\n",
            held > 0 ? held : 0);
    fclose(fp);
    return text;
}

void
rm_ondemand_set_notify(void (*notify)(void))
{
    table.notify = notify;
}

void
rm_ondemand_attach(void (*wake)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&table.mutex);
    table.wake = wake;
    table.wake_ctx = ctx;
    table.ever_attached = 1;
    for (size_t i = 0; i != table.used; ++i) {
        if (table.entries[i].state == ST_PENDING) {
            wake(ctx);
            break;
        }
    }
    pthread_mutex_unlock(&table.mutex);
}

void
rm_ondemand_detach(void)
{
    pthread_mutex_lock(&table.mutex);
    table.wake = NULL;
    table.wake_ctx = NULL;
    /* the answers to names in flight are lost with the stream: the next stream asks again */
    for (size_t i = 0; i != table.used; ++i)
        if (table.entries[i].state == ST_INFLIGHT)
            table.entries[i].state = ST_PENDING;
    pthread_mutex_unlock(&table.mutex);
}

size_t
rm_ondemand_take(char names[][RM_ONDEMAND_MAX_NAME_BYTES + 1], size_t max)
{
    size_t n = 0;
    if (max > RM_ONDEMAND_MAX_PER_MESSAGE)
        max = RM_ONDEMAND_MAX_PER_MESSAGE;
    uint64_t now = rm_now_ms();
    pthread_mutex_lock(&table.mutex);
    for (size_t i = 0; i != table.used && n != max; ++i) {
        entry_t *e = &table.entries[i];
        if (e->state == ST_PENDING) {
            memcpy(names[n++], e->name, strlen(e->name) + 1);
            e->state = ST_INFLIGHT;
            e->at_ms = now;
        }
    }
    pthread_mutex_unlock(&table.mutex);
    return n;
}

void
rm_ondemand_answered(char *const *names, size_t n, uint64_t generation)
{
    size_t marked = 0;
    pthread_mutex_lock(&table.mutex);
    for (size_t i = 0; i != n; ++i) {
        char host[RM_ONDEMAND_MAX_NAME_BYTES + 1];
        if (rm_ondemand_host(names[i], strlen(names[i]), host) == 0)
            continue;
        entry_t *e = find(host);
        if (e != NULL && (e->state == ST_PENDING || e->state == ST_INFLIGHT || e->state == ST_ANSWERED)) {
            e->state = ST_ANSWERED;
            e->generation = generation;
            ++marked;
        }
    }
    pthread_mutex_unlock(&table.mutex);
    rm_log_debug("ondemand", "%zu name(s) answered (config generation %" PRIu64 "), %zu asked by this agent", n, generation,
                 marked);
    if (table.notify != NULL)
        table.notify();
}
