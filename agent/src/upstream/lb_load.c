/*
 * The agent-wide endpoint load registry (upstream/lb.h): entries keyed by cluster name + endpoint
 * address, in a small hash table under a mutex taken only when endpoint objects come and go; the
 * counts themselves are atomics read and written by every worker without a lock.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "upstream/lb.h"

struct st_rm_lb_load_t {
    struct st_rm_lb_load_t *_next;
    char *_key; /* "cluster\naddress" */
    uint64_t _hash;
    /** references (under the registry mutex); 0: lingering since `_idle_since_ms` */
    size_t _refcnt;
    uint64_t _idle_since_ms;
    uint32_t _active;
    /** the peak-EWMA estimate in ns as a double's bits, and when it was last updated (us); stamp 0: no sample yet */
    uint64_t _rtt_bits;
    uint64_t _stamp_us;
};

#define NUM_BUCKETS 256

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static rm_lb_load_t *buckets[NUM_BUCKETS];
static uint64_t last_sweep_ms;

/* Frees entries nobody has referenced for the linger time (called with the mutex held, at most once a second). */
static void
sweep(uint64_t now_ms)
{
    if (now_ms - last_sweep_ms < 1000)
        return;
    last_sweep_ms = now_ms;
    for (size_t b = 0; b != NUM_BUCKETS; ++b) {
        for (rm_lb_load_t **p = &buckets[b]; *p != NULL;) {
            rm_lb_load_t *l = *p;
            if (l->_refcnt == 0 && now_ms - l->_idle_since_ms >= RM_LB_LOAD_LINGER_MS) {
                *p = l->_next;
                free(l->_key);
                free(l);
            } else {
                p = &l->_next;
            }
        }
    }
}

rm_lb_load_t *
rm_lb_load_acquire(const char *cluster, const char *address)
{
    size_t clen = strlen(cluster), alen = strlen(address);
    char *key = rm_malloc(clen + alen + 2);
    memcpy(key, cluster, clen);
    key[clen] = '\n';
    memcpy(key + clen + 1, address, alen + 1);
    uint64_t hash = rm_lb_hash64(key, clen + alen + 1, 0);
    pthread_mutex_lock(&registry_mutex);
    sweep(rm_now_ms());
    rm_lb_load_t *l;
    for (l = buckets[hash % NUM_BUCKETS]; l != NULL; l = l->_next)
        if (l->_hash == hash && strcmp(l->_key, key) == 0)
            break;
    if (l == NULL) {
        l = rm_calloc(1, sizeof(*l));
        l->_key = key;
        key = NULL;
        l->_hash = hash;
        l->_next = buckets[hash % NUM_BUCKETS];
        buckets[hash % NUM_BUCKETS] = l;
    }
    ++l->_refcnt;
    pthread_mutex_unlock(&registry_mutex);
    free(key);
    return l;
}

void
rm_lb_load_release(rm_lb_load_t *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&registry_mutex);
    if (--l->_refcnt == 0)
        l->_idle_since_ms = rm_now_ms();
    pthread_mutex_unlock(&registry_mutex);
}

void
rm_lb_load_start(rm_lb_load_t *l)
{
    __atomic_add_fetch(&l->_active, 1, __ATOMIC_RELAXED);
}

void
rm_lb_load_finish(rm_lb_load_t *l)
{
    uint32_t prev = __atomic_fetch_sub(&l->_active, 1, __ATOMIC_RELAXED);
    if (prev == 0)
        abort(); /* a completion without its pick: the accounting is broken */
}

uint32_t
rm_lb_load_active(const rm_lb_load_t *l)
{
    return __atomic_load_n(&l->_active, __ATOMIC_RELAXED);
}

static double
bits_to_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t
double_to_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

void
rm_lb_load_sample(rm_lb_load_t *l, uint64_t latency_us, uint64_t now_us)
{
    /* Concurrent samples from several workers race on the pair (estimate, stamp): the CAS keeps the
     * estimate a blend of real samples, and a stamp off by one update only shifts the decay slightly. */
    double rtt = (double)latency_us;
    uint64_t old_bits = __atomic_load_n(&l->_rtt_bits, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t stamp = __atomic_load_n(&l->_stamp_us, __ATOMIC_RELAXED);
        double est = bits_to_double(old_bits), next;
        if (stamp == 0 || rtt >= est) {
            next = rtt; /* the first sample replaces the default; a peak replaces the estimate */
        } else {
            double elapsed = now_us > stamp ? (double)(now_us - stamp) : 0;
            double decay = exp(-elapsed / RM_LB_EWMA_DECAY_US);
            next = est * decay + rtt * (1 - decay);
        }
        if (__atomic_compare_exchange_n(&l->_rtt_bits, &old_bits, double_to_bits(next), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            break;
    }
    __atomic_store_n(&l->_stamp_us, now_us != 0 ? now_us : 1, __ATOMIC_RELAXED);
}

double
rm_lb_load_rtt_us(const rm_lb_load_t *l, uint64_t now_us)
{
    uint64_t stamp = __atomic_load_n(&l->_stamp_us, __ATOMIC_RELAXED);
    if (stamp == 0)
        return RM_LB_EWMA_DEFAULT_RTT_US;
    double est = bits_to_double(__atomic_load_n(&l->_rtt_bits, __ATOMIC_RELAXED));
    if (now_us <= stamp)
        return est;
    return est * exp(-(double)(now_us - stamp) / RM_LB_EWMA_DECAY_US);
}
