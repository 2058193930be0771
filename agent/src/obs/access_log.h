/*
 * The access log writer: preformatted lines (JSON, one per request) from the workers to stdout or a
 * file, without ever blocking a worker.
 *
 * Each worker has its own single-producer ring of bytes (buffer_bytes split evenly among the
 * workers); a dedicated writer thread drains the rings into the file descriptor. A line that does
 * not fit in its worker's ring is dropped and counted; a worker takes no lock (a worker-owned flag
 * guards the ring set against being replaced under it). The writer may block on a slow stdout
 * reader; a file it opened itself is non-blocking and waited for with poll(), so reconfiguring and
 * stopping never wait on a reader. SIGUSR1 (rm_access_log_reopen) reopens the file after rotation.
 *
 * Threads: rm_access_log_write from workers (each with its own index); everything else from the
 * main thread. Errors (a file that cannot be opened or written) are logged and the lines counted as
 * dropped; they never stop the agent.
 */
#ifndef remora__obs_access_log_h
#define remora__obs_access_log_h

#include <stddef.h>
#include <stdint.h>

/** Workers that may write (worker indexes 0 .. RM_ACCESS_LOG_MAX_WORKERS - 1). */
#define RM_ACCESS_LOG_MAX_WORKERS 64
/** The smallest ring of one worker, in bytes: a line longer than its ring can never be written. */
#define RM_ACCESS_LOG_MIN_RING_BYTES 4096

/** Sets the number of workers that write (before they run). Main thread, once. */
void rm_access_log_init(unsigned num_workers);
/**
 * Applies a configuration: `enabled` 0 turns the log off (the rings are released once drained);
 * otherwise `path` ("stdout" or a file path, copied) and `buffer_bytes` (the sum of the rings'
 * sizes). Rings exist when this returns, so call it before workers see a snapshot that enables the
 * log. A path change reopens; the writer thread starts on first use. Main thread.
 */
void rm_access_log_configure(int enabled, const char *path, size_t buffer_bytes);
/** Reopens the file (log rotation; SIGUSR1). Lines written before go to the old file. Main thread. */
void rm_access_log_reopen(void);
/**
 * Queues one line (`len` bytes, ending in '\n', at most the ring size) from worker `worker`.
 * Never blocks. Returns 0, or -1 when the line was dropped (counted) because the ring is full or the
 * log is off.
 */
int rm_access_log_write(unsigned worker, const char *line, size_t len);
/** Writes what is queued (waiting at most about a second for a stuck reader) and stops the writer. Main thread, after the workers
 * stopped. */
void rm_access_log_stop(void);
/** Lines written and dropped so far (any thread). */
uint64_t rm_access_log_written(void);
uint64_t rm_access_log_dropped(void);
/** remora_access_log_lines_total{result="written|dropped"} as Prometheus text (malloc'ed), for rm_stats_register_renderer. */
char *rm_access_log_render_prometheus(void);

#endif
