/*
 * The access log writer (see access_log.h). One single-producer ring per worker, one consumer: the
 * writer thread. Workers never lock and never wait: a line that does not fit is dropped and counted.
 *
 * Replacing the ring set (buffer size change, log turned off) must not free a ring a worker is
 * still copying into. Each worker raises its `busy` flag before loading the set pointer and lowers
 * it when done; the main thread swaps the pointer and then waits until every flag has been seen
 * low once (all sequentially consistent, so a worker that loaded the old pointer is seen busy). The
 * old set then goes to the writer, which writes what it holds and frees it.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "obs/access_log.h"

#define LOG "access_log"
/* how long a stuck reader may hold the writer when stopping, and the retry period of a failed open */
#define STOP_WAIT_MS 1000
#define REOPEN_RETRY_MS 1000
/* naps of the writer after it found work, before it goes to sleep until a worker wakes it */
#define NAP_MS 5
#define IDLE_NAPS 4

typedef struct st_ring_t {
    uint64_t head; /* bytes ever queued: the worker writes it (seq_cst), the writer reads it */
    char _pad1[56];
    uint64_t tail; /* bytes ever taken: the writer writes it (release), the worker reads it */
    char _pad2[56];
    size_t cap;
    char *buf;
} ring_t;

typedef struct st_ring_set_t {
    struct st_ring_set_t *next; /* in the retired list */
    size_t ring_bytes;
    unsigned n;
    ring_t **rings;
} ring_set_t;

typedef struct st_padded_t {
    uint64_t v;
    char _pad[56];
} padded_t;

static struct {
    unsigned num_workers;
    ring_set_t *cur; /* atomic */
    padded_t busy[RM_ACCESS_LOG_MAX_WORKERS];
    padded_t dropped[RM_ACCESS_LOG_MAX_WORKERS];
    uint64_t written, writer_dropped; /* atomic; the writer's */
    int sleeping;                     /* atomic: the writer is about to wait on efd */
    int efd;
    pthread_t thread;
    int started;

    pthread_mutex_t mutex; /* main <-> writer; never held during I/O */
    char *path;
    int enabled, changed, reopen, stop;
    ring_set_t *retired;
} al = {.efd = -1, .mutex = PTHREAD_MUTEX_INITIALIZER};

static ring_set_t *
set_create(unsigned n, size_t ring_bytes)
{
    ring_set_t *set = rm_calloc(1, sizeof(*set));
    set->ring_bytes = ring_bytes;
    set->n = n;
    set->rings = rm_calloc(n, sizeof(*set->rings));
    for (unsigned i = 0; i != n; ++i) {
        set->rings[i] = rm_calloc(1, sizeof(ring_t));
        set->rings[i]->cap = ring_bytes;
        set->rings[i]->buf = rm_malloc(ring_bytes);
    }
    return set;
}

static void
set_destroy(ring_set_t *set)
{
    for (unsigned i = 0; i != set->n; ++i) {
        free(set->rings[i]->buf);
        free(set->rings[i]);
    }
    free(set->rings);
    free(set);
}

static void
wake_writer(void)
{
    uint64_t one = 1;
    if (al.efd >= 0 && write(al.efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is saturated, the writer is awake anyway */
    }
}

static size_t
count_lines(const char *p, size_t n)
{
    size_t lines = 0;
    const char *end = p + n;
    while (p != end && (p = memchr(p, '\n', end - p)) != NULL) {
        ++lines;
        ++p;
    }
    return lines;
}

void
rm_access_log_init(unsigned num_workers)
{
    if (num_workers > RM_ACCESS_LOG_MAX_WORKERS)
        rm_fatal("access log: %u workers, at most %d", num_workers, RM_ACCESS_LOG_MAX_WORKERS);
    al.num_workers = num_workers;
}

int
rm_access_log_write(unsigned worker, const char *line, size_t len)
{
    int ret = -1;
    __atomic_store_n(&al.busy[worker].v, 1, __ATOMIC_SEQ_CST);
    ring_set_t *set = __atomic_load_n(&al.cur, __ATOMIC_SEQ_CST);
    if (set != NULL && worker < set->n) {
        ring_t *r = set->rings[worker];
        uint64_t head = r->head, tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        if (r->cap - (head - tail) >= len) {
            size_t off = head % r->cap, first = r->cap - off < len ? r->cap - off : len;
            memcpy(r->buf + off, line, first);
            memcpy(r->buf, line + first, len - first);
            __atomic_store_n(&r->head, head + len, __ATOMIC_SEQ_CST);
            ret = 0;
        }
    }
    __atomic_store_n(&al.busy[worker].v, 0, __ATOMIC_RELEASE);
    if (ret != 0) {
        __atomic_add_fetch(&al.dropped[worker].v, 1, __ATOMIC_RELAXED);
    } else if (__atomic_load_n(&al.sleeping, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&al.sleeping, 0, __ATOMIC_SEQ_CST)) {
        wake_writer();
    }
    return ret;
}

/* ----------------------------------------------------------------------------- the writer thread */

typedef struct st_writer_t {
    int fd, own_fd;
    char *path;
    int enabled;
    uint64_t next_open_ms;
    int last_errno; /* of the last failed open or write, logged once */
    int blocked;    /* the fd answered EAGAIN: wait for POLLOUT */
} writer_t;

static void
writer_close(writer_t *w)
{
    if (w->fd >= 0 && w->own_fd)
        close(w->fd);
    w->fd = -1;
    w->blocked = 0;
}

static void
writer_open(writer_t *w)
{
    uint64_t now = rm_now_ms();
    if (w->fd >= 0 || !w->enabled || now < w->next_open_ms)
        return;
    if (strcmp(w->path, "stdout") == 0) {
        w->fd = STDOUT_FILENO;
        w->own_fd = 0;
        return;
    }
    /* non-blocking: a FIFO reader that stops reading must not hold up reconfiguring or stopping */
    int fd = open(w->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
        if (errno != w->last_errno)
            rm_log_error(LOG, "cannot open %s: %s (lines are kept while the buffer has room; retrying every %d ms)", w->path,
                         errno == ENXIO ? "a FIFO without a reader" : strerror(errno), REOPEN_RETRY_MS);
        w->last_errno = errno;
        w->next_open_ms = now + REOPEN_RETRY_MS;
        return;
    }
    if (w->last_errno != 0)
        rm_log_info(LOG, "%s is open again", w->path);
    w->last_errno = 0;
    w->fd = fd;
    w->own_fd = 1;
}

static void
count_dropped(size_t lines)
{
    if (lines != 0)
        __atomic_add_fetch(&al.writer_dropped, lines, __ATOMIC_RELAXED);
}

/* Writes what the ring holds (or discards it when `discard`). Returns 1 if bytes left the ring. */
static int
drain_ring(writer_t *w, ring_t *r, int discard)
{
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST), tail = r->tail;
    if (head == tail)
        return 0;
    size_t n = head - tail, off = tail % r->cap, first = r->cap - off < n ? r->cap - off : n;
    if (discard) {
        count_dropped(count_lines(r->buf + off, first) + count_lines(r->buf, n - first));
        __atomic_store_n(&r->tail, head, __ATOMIC_RELEASE);
        return 1;
    }
    if (w->fd < 0 || w->blocked)
        return 0;
    struct iovec iov[2] = {{r->buf + off, first}, {r->buf, n - first}};
    ssize_t wr = writev(w->fd, iov, n - first != 0 ? 2 : 1);
    if (wr < 0) {
        if (errno == EINTR)
            return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            w->blocked = 1;
            return 0;
        }
        if (errno != w->last_errno)
            rm_log_error(LOG, "writing to %s: %s (lines are dropped; reopening in %d ms)", w->path, strerror(errno),
                         REOPEN_RETRY_MS);
        w->last_errno = errno;
        count_dropped(count_lines(r->buf + off, first) + count_lines(r->buf, n - first));
        __atomic_store_n(&r->tail, head, __ATOMIC_RELEASE);
        writer_close(w);
        w->next_open_ms = rm_now_ms() + REOPEN_RETRY_MS;
        return 1;
    }
    size_t done = (size_t)wr, a = done < first ? done : first;
    size_t lines = count_lines(r->buf + off, a) + count_lines(r->buf, done - a);
    __atomic_add_fetch(&al.written, lines, __ATOMIC_RELAXED);
    __atomic_store_n(&r->tail, tail + done, __ATOMIC_RELEASE);
    return 1;
}

static int
drain_set(writer_t *w, ring_set_t *set, int discard)
{
    int progress = 0;
    for (unsigned i = 0; set != NULL && i != set->n; ++i)
        progress |= drain_ring(w, set->rings[i], discard);
    return progress;
}

static int
set_pending(const ring_set_t *set)
{
    for (unsigned i = 0; set != NULL && i != set->n; ++i)
        if (__atomic_load_n(&set->rings[i]->head, __ATOMIC_SEQ_CST) != set->rings[i]->tail)
            return 1;
    return 0;
}

/* Waits for a wakeup, for the fd to take bytes again, or for `timeout_ms`. */
static void
writer_wait(writer_t *w, int timeout_ms)
{
    struct pollfd pfd[2] = {{.fd = al.efd, .events = POLLIN}, {.fd = w->fd, .events = POLLOUT}};
    int n = poll(pfd, w->blocked && w->fd >= 0 ? 2 : 1, timeout_ms);
    if (n > 0 && (pfd[0].revents & POLLIN) != 0) {
        uint64_t v;
        if (read(al.efd, &v, sizeof(v)) < 0) {
            /* EAGAIN: another read took it */
        }
    }
    if (w->blocked && (n > 0 && pfd[1].revents != 0))
        w->blocked = 0; /* writable, or an error that the next write reports */
}

static void *
writer_main(void *arg)
{
    writer_t w = {.fd = -1};
    uint64_t stop_deadline = 0;
    /* signals are the main thread's business; a FIFO whose reader left must give EPIPE here, not SIGPIPE */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    unsigned idle_naps = IDLE_NAPS;
    for (;;) {
        int need_reopen = 0, stopping;
        pthread_mutex_lock(&al.mutex);
        ring_set_t *retired = al.retired;
        al.retired = NULL;
        if (al.changed) {
            if (al.enabled && (w.path == NULL || strcmp(w.path, al.path) != 0)) {
                free(w.path);
                w.path = rm_strdup(al.path);
                need_reopen = 1;
            }
            w.enabled = al.enabled;
            al.changed = 0;
        }
        if (al.reopen) {
            al.reopen = 0;
            need_reopen = 1;
        }
        stopping = al.stop;
        pthread_mutex_unlock(&al.mutex);

        /* lines of a replaced ring set are older than those of the current one: they go first */
        while (retired != NULL) {
            ring_set_t *next = retired->next;
            uint64_t until = rm_now_ms() + STOP_WAIT_MS;
            while (set_pending(retired) && w.fd >= 0 && rm_now_ms() < until) {
                if (!drain_set(&w, retired, 0))
                    writer_wait(&w, 50);
            }
            drain_set(&w, retired, 1);
            set_destroy(retired);
            retired = next;
        }
        if (need_reopen || (!w.enabled && w.fd >= 0)) {
            /* what was queued before the rotation or the change belongs to the old file */
            ring_set_t *queued = __atomic_load_n(&al.cur, __ATOMIC_ACQUIRE);
            uint64_t until = rm_now_ms() + STOP_WAIT_MS;
            while (set_pending(queued) && w.fd >= 0 && rm_now_ms() < until)
                if (!drain_set(&w, queued, 0))
                    writer_wait(&w, 50);
            writer_close(&w);
            w.next_open_ms = 0;
            w.last_errno = 0;
        }
        writer_open(&w);

        ring_set_t *set = __atomic_load_n(&al.cur, __ATOMIC_ACQUIRE);
        /* with the log off (or not openable while stopping) queued lines have nowhere to go */
        int discard = !w.enabled || (stopping && w.fd < 0);
        int progress = drain_set(&w, set, discard);
        if (stopping) {
            if (stop_deadline == 0)
                stop_deadline = rm_now_ms() + STOP_WAIT_MS;
            if (!set_pending(set))
                break;
            if (rm_now_ms() >= stop_deadline) {
                drain_set(&w, set, 1);
                break;
            }
        }
        if (progress) {
            idle_naps = 0;
            continue;
        }
        /* while traffic flows, nap a few ms instead of sleeping: lines batch up and workers never pay a
         * wakeup syscall; only after a quiet spell does a worker's line have to wake the writer */
        if (!stopping && idle_naps < IDLE_NAPS && w.fd >= 0 && !w.blocked) {
            ++idle_naps;
            writer_wait(&w, NAP_MS);
            continue;
        }
        __atomic_store_n(&al.sleeping, 1, __ATOMIC_SEQ_CST);
        if (!stopping && set_pending(set) && w.fd >= 0 && !w.blocked) {
            __atomic_store_n(&al.sleeping, 0, __ATOMIC_SEQ_CST);
            continue;
        }
        writer_wait(&w, stopping ? 50 : (w.fd < 0 && w.enabled) ? REOPEN_RETRY_MS : 1000);
        __atomic_store_n(&al.sleeping, 0, __ATOMIC_SEQ_CST);
    }
    writer_close(&w);
    free(w.path);
    return NULL;
}

/* ---------------------------------------------------------------------------------- main thread */

static void
quiesce(void)
{
    for (unsigned i = 0; i != RM_ACCESS_LOG_MAX_WORKERS; ++i)
        while (__atomic_load_n(&al.busy[i].v, __ATOMIC_SEQ_CST) != 0)
            sched_yield();
}

void
rm_access_log_configure(int enabled, const char *path, size_t buffer_bytes)
{
    unsigned n = al.num_workers != 0 ? al.num_workers : 1;
    size_t ring_bytes = buffer_bytes / n;
    if (ring_bytes < RM_ACCESS_LOG_MIN_RING_BYTES)
        ring_bytes = RM_ACCESS_LOG_MIN_RING_BYTES;
    ring_set_t *cur = __atomic_load_n(&al.cur, __ATOMIC_ACQUIRE), *next = cur;
    if (!enabled)
        next = NULL;
    else if (cur == NULL || cur->ring_bytes != ring_bytes)
        next = set_create(n, ring_bytes);
    if (next != cur) {
        __atomic_store_n(&al.cur, next, __ATOMIC_SEQ_CST);
        quiesce();
    }
    pthread_mutex_lock(&al.mutex);
    if (next != cur && cur != NULL) {
        ring_set_t **p = &al.retired;
        while (*p != NULL)
            p = &(*p)->next;
        *p = cur;
    }
    int changed = al.enabled != enabled || (enabled && (al.path == NULL || strcmp(al.path, path) != 0));
    if (enabled && changed) {
        free(al.path);
        al.path = rm_strdup(path);
    }
    al.enabled = enabled;
    al.changed |= changed;
    pthread_mutex_unlock(&al.mutex);
    if (changed && enabled)
        rm_log_info(LOG, "access log to %s (buffer %zu bytes per worker)", path, ring_bytes);
    else if (changed)
        rm_log_info(LOG, "access log off");
    if (enabled && !al.started) {
        al.stop = 0; /* after an rm_access_log_stop (tests) */
        if ((al.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            rm_fatal("access log: eventfd: %s", strerror(errno));
        int r = rm_thread_create(&al.thread, writer_main, NULL);
        if (r != 0)
            rm_fatal("access log: cannot start the writer thread: %s", strerror(r));
        al.started = 1;
    }
    wake_writer();
}

void
rm_access_log_reopen(void)
{
    pthread_mutex_lock(&al.mutex);
    al.reopen = 1;
    pthread_mutex_unlock(&al.mutex);
    wake_writer();
}

void
rm_access_log_stop(void)
{
    ring_set_t *set = __atomic_exchange_n(&al.cur, NULL, __ATOMIC_SEQ_CST);
    if (!al.started) {
        if (set != NULL)
            set_destroy(set);
        return;
    }
    quiesce();
    /* the writer drains the set as a retired one, then stops */
    pthread_mutex_lock(&al.mutex);
    if (set != NULL) {
        ring_set_t **p = &al.retired;
        while (*p != NULL)
            p = &(*p)->next;
        *p = set;
    }
    al.stop = 1;
    pthread_mutex_unlock(&al.mutex);
    wake_writer();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    int r = pthread_timedjoin_np(al.thread, NULL, &ts);
    if (r != 0) {
        /* blocked writing to a stdout nobody reads: leave it; the process is exiting */
        rm_log_warn(LOG, "the writer is stuck writing to %s; exiting without it", al.path != NULL ? al.path : "?");
        pthread_detach(al.thread);
        return;
    }
    al.started = 0;
    close(al.efd);
    al.efd = -1;
    free(al.path);
    al.path = NULL;
}

uint64_t
rm_access_log_written(void)
{
    return __atomic_load_n(&al.written, __ATOMIC_RELAXED);
}

uint64_t
rm_access_log_dropped(void)
{
    uint64_t n = __atomic_load_n(&al.writer_dropped, __ATOMIC_RELAXED);
    for (unsigned i = 0; i != RM_ACCESS_LOG_MAX_WORKERS; ++i)
        n += __atomic_load_n(&al.dropped[i].v, __ATOMIC_RELAXED);
    return n;
}

char *
rm_access_log_render_prometheus(void)
{
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    fputs("# HELP remora_access_log_lines_total Access log lines: written to the log, or dropped (buffer full, log turned off, "
          "write error).\n"
          "# TYPE remora_access_log_lines_total counter\n",
          fp);
    fprintf(fp, "remora_access_log_lines_total{result=\"written\"} %llu\n", (unsigned long long)rm_access_log_written());
    fprintf(fp, "remora_access_log_lines_total{result=\"dropped\"} %llu\n", (unsigned long long)rm_access_log_dropped());
    if (fclose(fp) != 0)
        rm_fatal("rendering access log metrics failed");
    return out;
}
