/*
 * The agent's two small HTTP servers, both on the main thread's libuv loop, built on h2o's HTTP
 * server (it is fine for these: plain request/response, no streaming, no trailers):
 *
 *   health listener (default 0.0.0.0:15020):
 *     GET /live      200 "live" while the process runs
 *     GET /ready     200 "ready" once listeners accept and config is loaded; 503 "draining" / "not ready"
 *     GET /metrics   Prometheus text 0.0.4, or OpenMetrics 1.0 when the Accept header prefers
 *                    application/openmetrics-text (as Prometheus' scraper does)
 *     GET /app-health/<container>/<livez|readyz|startupz>
 *                    the application's own probe, performed by the agent (admin/app_probe.h); 404 without one
 *   admin listener (loopback only, default 127.0.0.1:15000):
 *     GET  /config_dump          JSON of the running snapshot
 *     GET  /ready                as above
 *     POST /logging?level=debug  change the log level (error|warn|info|debug); GET shows it
 *     POST /drain                start a graceful drain, as SIGTERM does
 *     POST /shutdown             end the outbound grace (or start the drain); the agent exits 0 once drained
 *                                (docs/lifecycle.md; `remoractl await` calls it when its command ends)
 *     GET  /                      a plain-text index of these endpoints
 * Anything else: 404; a wrong method: 405.
 *
 * Thread: main thread only.
 */
#ifndef remora__admin_h
#define remora__admin_h

#include <sys/socket.h>
#include <uv.h>

typedef struct st_rm_admin_callbacks_t {
    /** 1 if ready to serve traffic */
    int (*is_ready)(void *ctx);
    /** 1 once a drain has started */
    int (*is_draining)(void *ctx);
    /** Prometheus text, malloc'ed; the server frees it */
    char *(*render_metrics)(void *ctx);
    /** JSON, malloc'ed; the server frees it */
    char *(*config_dump)(void *ctx);
    /** starts a drain (idempotent) */
    void (*start_drain)(void *ctx);
    /** GET /clusters: plain text, one line per cluster with outlier detection (ejections, circuit state); malloc'ed */
    char *(*clusters)(void *ctx);
    /** OpenMetrics 1.0 text (served when the scraper's Accept prefers it), malloc'ed; may be NULL (text only) */
    char *(*render_openmetrics)(void *ctx);
    /** GET /identity: plain text (tls/identity.h), malloc'ed; NULL when the agent has no workload identity (404) */
    char *(*identity)(void *ctx);
    /** POST /shutdown: end the outbound grace or start the drain (idempotent); NULL: 404 */
    void (*shutdown)(void *ctx);
    /** GET /app-health/...: the application probes (admin/app_probe.h), NULL when none are described */
    struct st_rm_app_probes_t *app_probes;
} rm_admin_callbacks_t;

typedef struct st_rm_admin_t rm_admin_t;

/**
 * Binds and starts both servers on `loop`. `health` or `admin` may be NULL to skip that server.
 * Returns the server, or NULL with a message in errbuf (e.g. "bind 127.0.0.1:15000: Address in use").
 */
rm_admin_t *rm_admin_start(uv_loop_t *loop, const struct sockaddr *health, const struct sockaddr *admin,
                           const rm_admin_callbacks_t *cb, void *ctx, char *errbuf, size_t errbuf_size);
/** Stops accepting and closes every connection (callbacks no longer called). Safe to call once; frees on loop close. */
void rm_admin_stop(rm_admin_t *admin);

/**
 * Serves one admin command from outside HTTP, with the same callbacks and answers as the endpoints
 * (`remoractl proxy` through the control plane, config/control_client.h): "stats" as GET /metrics
 * (Prometheus text), "config" as GET /config_dump, "clusters" as GET /clusters, "log-level" as GET
 * /logging, or POST /logging?level=ARGUMENT when `argument` is not empty. Anything else is 404;
 * nothing that drains or stops. Sets *status, *content_type (static) and *body (malloc'ed, *body_len
 * bytes, the caller frees it). After rm_admin_stop: 503. Main thread only.
 */
void rm_admin_command(rm_admin_t *admin, const char *command, const char *argument, unsigned *status, const char **content_type,
                      char **body, size_t *body_len);

#endif
