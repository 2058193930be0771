/*
 * The filter chain: the seam every request policy plugs into. A stream runs the chain's filters in
 * order on the request head; each may continue, stop (and later resume the chain with
 * rm_stream_resume, e.g. after a delay), or answer locally (rm_stream_send_local_reply, then stop).
 * The router is the last filter: it starts the upstream attempts. On the response head the filters
 * that ran are called in reverse order and may edit stream->resp.
 *
 * A filter is a static table of hooks (any may be NULL) plus the size of its per-stream state,
 * which the stream allocates zeroed from its pool when the chain starts. Filters read their
 * settings from the matched route (stream->route) of the stream's snapshot; a filter whose setting
 * is absent returns at once.
 *
 * Thread: hooks run on the stream's worker.
 */
#ifndef remora__proxy_filter_h
#define remora__proxy_filter_h

#include <stddef.h>

typedef struct st_rm_stream_t rm_stream_t;

typedef enum en_rm_filter_status_t {
    RM_FILTER_CONTINUE = 0,
    /** the filter keeps the request (it resumes the chain later, or has answered locally) */
    RM_FILTER_STOP = 1,
} rm_filter_status_t;

typedef struct st_rm_filter_t {
    const char *name;
    /** bytes of per-stream state (zeroed, pool memory), 0 for none */
    size_t state_size;
    rm_filter_status_t (*on_request_head)(rm_stream_t *s, void *state);
    /** request body bytes, eos or trailers arrived in stream->req_body */
    void (*on_request_body)(rm_stream_t *s, void *state);
    /** stream->resp holds the response head about to go downstream (upstream or local) */
    void (*on_response_head)(rm_stream_t *s, void *state);
    /** n response body bytes were taken downstream */
    void (*on_response_consumed)(rm_stream_t *s, void *state, size_t n);
    /** the downstream is gone or the stream answers locally: stop upstream work (timers, attempts) */
    void (*on_abort)(rm_stream_t *s, void *state);
    /** the stream is being freed */
    void (*on_destroy)(rm_stream_t *s, void *state);
} rm_filter_t;

typedef struct st_rm_filter_chain_t {
    const rm_filter_t *const *filters;
    size_t num_filters;
} rm_filter_chain_t;

#endif
