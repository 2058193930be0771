#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "policy/retry.h"

#define GRPC_STATUS_MAX 16

static const char *const reason_names[RM_RETRY_REASON_COUNT_] = {
    [RM_RETRY_REASON_NONE] = "none",
    [RM_RETRY_REASON_CONNECT_FAILURE] = "connect_failure",
    [RM_RETRY_REASON_REFUSED_STREAM] = "refused_stream",
    [RM_RETRY_REASON_RESET] = "reset",
    [RM_RETRY_REASON_PER_TRY_TIMEOUT] = "per_try_timeout",
    [RM_RETRY_REASON_HTTP_STATUS] = "http_status",
    [RM_RETRY_REASON_GRPC_STATUS] = "grpc_status",
};

static int
status_listed(const uint16_t *statuses, size_t num, int status)
{
    if (status < 0 || status > UINT16_MAX)
        return 0;
    size_t lo = 0, hi = num;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (statuses[mid] == status)
            return 1;
        if (statuses[mid] < status)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

unsigned
rm_retry_classify(const rm_config_retry_t *policy, unsigned cause, int http_status, int grpc_status)
{
    if (policy == NULL || policy->attempts == 0)
        return RM_RETRY_REASON_NONE;

    switch (cause) {
    case RM_RETRY_ON_CONNECT_FAILURE:
        return (policy->conditions & RM_RETRY_ON_CONNECT_FAILURE) != 0 ? RM_RETRY_REASON_CONNECT_FAILURE : RM_RETRY_REASON_NONE;
    case RM_RETRY_ON_REFUSED_STREAM:
        return (policy->conditions & RM_RETRY_ON_REFUSED_STREAM) != 0 ? RM_RETRY_REASON_REFUSED_STREAM : RM_RETRY_REASON_NONE;
    case RM_RETRY_ON_RESET:
        return (policy->conditions & RM_RETRY_ON_RESET) != 0 ? RM_RETRY_REASON_RESET : RM_RETRY_REASON_NONE;
    case RM_RETRY_ON_PER_TRY_TIMEOUT:
        return RM_RETRY_REASON_PER_TRY_TIMEOUT;
    case 0:
        if (status_listed(policy->http_statuses, policy->num_http_statuses, http_status))
            return RM_RETRY_REASON_HTTP_STATUS;
        if (grpc_status >= 0 && grpc_status <= GRPC_STATUS_MAX && (policy->grpc_status_mask >> grpc_status) & 1)
            return RM_RETRY_REASON_GRPC_STATUS;
        return RM_RETRY_REASON_NONE;
    default:
        return RM_RETRY_REASON_NONE;
    }
}

const char *
rm_retry_reason_name(unsigned reason)
{
    return reason < RM_RETRY_REASON_COUNT_ ? reason_names[reason] : "unknown";
}

uint64_t
rm_retry_backoff_ms(uint32_t base_ms, uint32_t max_ms, unsigned retry_index, uint64_t random64)
{
    uint64_t cap = max_ms;
    /* base < 2^32, so the shift cannot overflow below 32; past that the cap always wins */
    if (retry_index < 32 && ((uint64_t)base_ms << retry_index) < cap)
        cap = (uint64_t)base_ms << retry_index;
    if (base_ms == 0)
        cap = 0;
    return random64 % (cap + 1);
}

/* Retry budget ---------------------------------------------------------------------------------- */

static uint32_t
bucket_ms_for(uint32_t interval_ms)
{
    uint32_t ms = interval_ms / RM_RETRY_BUDGET_BUCKETS;
    return ms != 0 ? ms : 1;
}

static void
set_params(rm_retry_budget_t *b, uint32_t percent, uint32_t interval_ms, uint32_t min_count, uint32_t min_interval_ms)
{
    __atomic_store_n(&b->_percent, percent, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_interval_ms, interval_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_min_count, min_count, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_min_interval_ms, min_interval_ms, __ATOMIC_RELAXED);
}

void
rm_retry_budget_init(rm_retry_budget_t *budget, uint32_t percent, uint32_t interval_ms, uint32_t min_count,
                     uint32_t min_interval_ms)
{
    memset(budget, 0, sizeof(*budget));
    pthread_mutex_init(&budget->_mutex, NULL);
    set_params(budget, percent, interval_ms, min_count, min_interval_ms);
    budget->_bucket_ms = bucket_ms_for(interval_ms);
}

void
rm_retry_budget_configure(rm_retry_budget_t *budget, uint32_t percent, uint32_t interval_ms, uint32_t min_count,
                          uint32_t min_interval_ms)
{
    pthread_mutex_lock(&budget->_mutex);
    set_params(budget, percent, interval_ms, min_count, min_interval_ms);
    uint32_t bucket_ms = bucket_ms_for(interval_ms);
    if (bucket_ms != budget->_bucket_ms) {
        /* the epoch is in units of the old width: re-anchor at the next call, keeping the counts */
        budget->_bucket_ms = bucket_ms;
        budget->_anchored = 0;
    }
    pthread_mutex_unlock(&budget->_mutex);
}

void
rm_retry_budget_dispose(rm_retry_budget_t *budget)
{
    pthread_mutex_destroy(&budget->_mutex);
}

/* Moves the window so that its newest bucket holds `now_ms`. Called with the mutex held. */
static size_t
advance(rm_retry_budget_t *b, uint64_t now_ms)
{
    uint64_t epoch = now_ms / b->_bucket_ms;
    if (!b->_anchored) {
        /* first call, or the bucket width changed: the old bucket times mean nothing in the new width, so the
         * counts are kept whole in the newest bucket (they expire one full window later, never earlier) */
        size_t newest = (size_t)(epoch % RM_RETRY_BUDGET_BUCKETS);
        memset(b->_requests, 0, sizeof(b->_requests));
        memset(b->_retries, 0, sizeof(b->_retries));
        b->_requests[newest] = (uint32_t)(b->_window_requests < UINT32_MAX ? b->_window_requests : UINT32_MAX);
        b->_retries[newest] = (uint32_t)(b->_window_retries < UINT32_MAX ? b->_window_retries : UINT32_MAX);
        b->_window_requests = b->_requests[newest];
        b->_window_retries = b->_retries[newest];
        b->_epoch = epoch;
        b->_anchored = 1;
    } else if (epoch > b->_epoch) {
        uint64_t expired = epoch - b->_epoch;
        if (expired >= RM_RETRY_BUDGET_BUCKETS) {
            memset(b->_requests, 0, sizeof(b->_requests));
            memset(b->_retries, 0, sizeof(b->_retries));
            b->_window_requests = 0;
            b->_window_retries = 0;
        } else {
            for (uint64_t e = b->_epoch + 1; e <= epoch; ++e) {
                size_t i = (size_t)(e % RM_RETRY_BUDGET_BUCKETS);
                b->_window_requests -= b->_requests[i];
                b->_window_retries -= b->_retries[i];
                b->_requests[i] = 0;
                b->_retries[i] = 0;
            }
        }
        b->_epoch = epoch;
    }
    /* an earlier time (another worker's clock lagging a little) counts in the newest bucket */
    return (size_t)(b->_epoch % RM_RETRY_BUDGET_BUCKETS);
}

void
rm_retry_budget_on_request(rm_retry_budget_t *budget, uint64_t now_ms)
{
    pthread_mutex_lock(&budget->_mutex);
    size_t i = advance(budget, now_ms);
    ++budget->_requests[i];
    ++budget->_window_requests;
    pthread_mutex_unlock(&budget->_mutex);
}

/* max(floor(R * percent / 100), ceil(min_count * W / min_interval)); called with the mutex held */
static uint64_t
window_limit(const rm_retry_budget_t *b)
{
    uint64_t requests = b->_window_requests, percent = b->_percent;
    /* split so that R * percent cannot overflow whatever the parameters */
    uint64_t by_percent = requests / 100 * percent + requests % 100 * percent / 100;
    uint64_t window_ms = (uint64_t)b->_bucket_ms * RM_RETRY_BUDGET_BUCKETS, minimum = b->_min_count;
    if (b->_min_interval_ms != 0)
        minimum = (minimum * window_ms + b->_min_interval_ms - 1) / b->_min_interval_ms;
    return by_percent > minimum ? by_percent : minimum;
}

int
rm_retry_budget_try_withdraw(rm_retry_budget_t *budget, uint64_t now_ms)
{
    int allowed = 0;
    pthread_mutex_lock(&budget->_mutex);
    size_t i = advance(budget, now_ms);
    if (budget->_window_retries < window_limit(budget)) {
        ++budget->_retries[i];
        ++budget->_window_retries;
        allowed = 1;
    }
    pthread_mutex_unlock(&budget->_mutex);
    return allowed;
}

void
rm_retry_budget_get_window(rm_retry_budget_t *budget, uint64_t now_ms, uint64_t *requests, uint64_t *retries)
{
    pthread_mutex_lock(&budget->_mutex);
    advance(budget, now_ms);
    *requests = budget->_window_requests;
    *retries = budget->_window_retries;
    pthread_mutex_unlock(&budget->_mutex);
}

/* The registry: few entries (one per cluster name), touched only when cluster runtimes are built. */
static rm_registry_t registry = RM_REGISTRY_INITIALIZER;

static rm_registry_entry_t *
create_budget(void *unused)
{
    rm_retry_budget_t *b = rm_malloc(sizeof(*b));
    rm_retry_budget_init(b, RM_RETRY_BUDGET_DEFAULT_PERCENT, RM_RETRY_BUDGET_DEFAULT_INTERVAL_MS, RM_RETRY_BUDGET_DEFAULT_MIN_COUNT,
                         RM_RETRY_BUDGET_DEFAULT_MIN_INTERVAL_MS);
    return &b->_entry;
}

rm_retry_budget_t *
rm_retry_budget_acquire(const char *cluster_name)
{
    return RM_REGISTRY_OWNER(rm_retry_budget_t, _entry, rm_registry_acquire(&registry, cluster_name, create_budget, NULL, NULL));
}

void
rm_retry_budget_release(rm_retry_budget_t *budget)
{
    if (budget == NULL || !rm_registry_release(&registry, &budget->_entry))
        return;
    rm_retry_budget_dispose(budget);
    free(budget);
}
