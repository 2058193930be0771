/*
 * The small HTTP/1.1 server of remora-control's side ports: the injection webhook (webhook.c, over
 * TLS) and the monitoring listener (cp_metrics.c, plaintext). One thread of its own, poll(), a fixed
 * array of connections, http_parser for the requests (only httpd.c includes http_parser.h), one
 * request at a time per connection (a pipelined one waits in the input buffer for the response
 * before it), keep-alive, and a deadline on every phase, so that a slow or hostile client costs
 * one slot until its timeout and never blocks the thread that owns the caller's state.
 *
 * What each server decides is its own: the handler answers every request (and every request that
 * broke a bound or the parser); the server only carries bytes, counts bounds and keeps time.
 *
 * Bounds (all from rm_httpd_config_t, fixed at creation): `max_conns` connections (more are
 * accepted and closed at once, with a warning logged at the 1st, 2nd, 4th, 8th... refusal),
 * `in_buf_bytes` of unparsed input per connection, request targets kept up to `max_url_bytes`
 * (longer ones flagged), Content-Type values up to RM_HTTPD_MAX_CTYPE_BYTES, request heads up to
 * `max_head_bytes` (0: http_parser's own 80 KiB header limit only), bodies up to `max_body_bytes`
 * (0: a body is read and dropped), `read_timeout_ms` for a TLS handshake, a request once it began
 * and a response to be sent, `idle_timeout_ms` between keep-alive requests.
 */
#ifndef remora_control__httpd_h
#define remora_control__httpd_h

#include <stddef.h>
#include <stdint.h>

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/** What a Content-Type header value is kept to (a longer one is cut there). */
#define RM_HTTPD_MAX_CTYPE_BYTES 256

typedef struct st_rm_httpd_t rm_httpd_t;
/** A connection, valid only during the handler call that receives it. */
typedef struct st_rm_httpd_conn_t rm_httpd_conn_t;

typedef enum {
    RM_HTTPD_OTHER = 0,
    RM_HTTPD_GET,
    RM_HTTPD_HEAD,
    RM_HTTPD_POST,
} rm_httpd_method_t;

/** Why a request did not arrive whole. After any of these the connection closes once the answer (if any) is sent. */
typedef enum {
    RM_HTTPD_OK = 0,
    RM_HTTPD_HEAD_TOO_LARGE, /* over max_head_bytes (counted here, or http_parser's own limit when max_head_bytes != 0) */
    RM_HTTPD_BODY_TOO_LARGE, /* Content-Length or the body read so far over max_body_bytes */
    RM_HTTPD_MALFORMED,      /* http_parser refused the bytes; `error_text` says why */
    RM_HTTPD_INPUT_FULL,     /* the input buffer is full and the parser took none of it (does not happen with http_parser) */
} rm_httpd_error_t;

/** One request as the handler sees it; every pointer is valid during the handler call only. */
typedef struct st_rm_httpd_request_t {
    rm_httpd_error_t error;
    /** with RM_HTTPD_MALFORMED: http_parser's description of the error (static); NULL otherwise */
    const char *error_text;
    rm_httpd_method_t method;
    /** the request target as sent (query included), NUL-terminated, its first max_url_bytes bytes */
    const char *url;
    size_t url_len;
    /** the target was longer than max_url_bytes: `url` holds its beginning only */
    int url_too_long;
    /** the Content-Type value (NUL-terminated, "" without one), cut at RM_HTTPD_MAX_CTYPE_BYTES */
    const char *content_type;
    size_t content_type_len;
    /** the body (NULL when empty, or when max_body_bytes is 0) */
    const char *body;
    size_t body_len;
} rm_httpd_request_t;

/** Connection events for a server's counters and logs. `detail` (may be NULL) is a reason for a log line. */
typedef enum {
    RM_HTTPD_EV_REFUSED = 0,       /* a connection over max_conns, closed at once (already logged as a warning) */
    RM_HTTPD_EV_TLS_FAILED,        /* a TLS handshake failed (`detail`: OpenSSL's reason) */
    RM_HTTPD_EV_HANDSHAKE_TIMEOUT, /* closed: the TLS handshake timed out */
    RM_HTTPD_EV_REQUEST_TIMEOUT,   /* closed: no (whole) request in time, or idle past idle_timeout_ms */
    RM_HTTPD_EV_RESPONSE_TIMEOUT,  /* closed: the response was not taken in time */
} rm_httpd_event_t;

typedef struct st_rm_httpd_config_t {
    /** "ADDR:PORT" (an IP literal; port 0 picks a free port) */
    const char *listen;
    /** the flag that gave `listen` and an example address, for error messages ("--webhook-listen", "0.0.0.0:15017") */
    const char *listen_flag, *listen_example;
    /** the log component ("webhook") and what the thread is called in an error ("the webhook's thread") */
    const char *log_tag, *thread_name;
    size_t max_conns;
    int backlog;
    size_t in_buf_bytes, max_url_bytes, max_head_bytes, max_body_bytes;
    uint64_t read_timeout_ms, idle_timeout_ms;
    /**
     * Answers one request with rm_httpd_respond (any status; the request's error says whether it is a
     * whole one). A handler that does not respond closes the connection. Called on the server's thread.
     */
    void (*handler)(void *arg, rm_httpd_conn_t *conn, const rm_httpd_request_t *req);
    /** optional; on the server's thread */
    void (*on_event)(void *arg, rm_httpd_event_t ev, const char *detail);
    /**
     * optional; called first in every turn of the loop with the time (rm_now_ms), returns the time by
     * which it wants to be called again (the loop also turns at least once a second). Server's thread.
     */
    uint64_t (*tick)(void *arg, uint64_t now_ms);
    /**
     * optional, and the TLS layer with it: the context a new connection is made with (borrowed: the
     * connection takes its own reference, so the owner may replace it from `tick`). A connection whose
     * handshake fails is counted (RM_HTTPD_EV_TLS_FAILED) and closed. Server's thread.
     */
    struct ssl_ctx_st *(*tls_ctx)(void *arg);
    void *arg;
} rm_httpd_config_t;

/**
 * Checks the address and makes the server, not yet bound. `cfg` is copied (its strings are borrowed:
 * they must outlive the server). Returns NULL with "FLAG ADDR: reason (write ADDR:PORT ...)" in `err`.
 * Main thread.
 */
rm_httpd_t *rm_httpd_create(const rm_httpd_config_t *cfg, char *err, size_t errsz);
/** Binds, listens and starts the thread. Returns 0, or -1 with the reason in `err` (then only rm_httpd_destroy). */
int rm_httpd_start(rm_httpd_t *s, char *err, size_t errsz);
/** The bound port (after rm_httpd_start). */
int rm_httpd_port(const rm_httpd_t *s);
/** Stops the thread if it runs, closes every connection and the socket, frees everything. NULL is a no-op. Main thread. */
void rm_httpd_destroy(rm_httpd_t *s);

/** Flags of rm_httpd_respond. */
#define RM_HTTPD_HEAD_ONLY 1u /* the head only (Content-Length still the body's): the answer to HEAD */
#define RM_HTTPD_CLOSE 2u     /* close the connection after this response ("Connection: close") */

/**
 * Queues the response to the request being handled (the handler's thread, during the call): status
 * line, Content-Type, Content-Length, "Connection: close" when the connection closes after it (the
 * client asked, the request broke a bound, or RM_HTTPD_CLOSE), `extra_headers` (each line ending in
 * CRLF; may be NULL), and `body` (copied). A second call replaces the first.
 */
void rm_httpd_respond(rm_httpd_conn_t *conn, int status, const char *content_type, const char *body, size_t body_len,
                      unsigned flags, const char *extra_headers);
/** The response queued so far (its first bytes are the status line), for a log line; *len its length. */
const char *rm_httpd_response(const rm_httpd_conn_t *conn, size_t *len);

/** The oldest OpenSSL error of this thread as text ("unknown OpenSSL error" without one); clears the thread's queue. */
void rm_httpd_tls_error(char *buf, size_t bufsz);

#endif
