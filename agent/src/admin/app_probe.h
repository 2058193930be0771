/*
 * Application probes through the agent's health port (docs/lifecycle.md, "Probes"): the injector rewrites the HTTP
 * and gRPC probes of a pod's containers to `GET /app-health/<container>/<livez|readyz|startupz>` on port 15020 and
 * describes the original probes in the agent's environment variable REMORA_APP_PROBES (JSON, parsed with jansson):
 *
 *   {"/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP",
 *                                           "httpHeaders": [{"name": "X", "value": "y"}]},
 *                               "timeoutSeconds": 2},
 *    "/app-health/api/livez":  {"grpc": {"port": 9090, "service": ""}}}
 *
 * A GET of such a path performs the original probe against 127.0.0.1 (so STRICT mesh mTLS does not stand between
 * the kubelet and the application) and answers:
 *   httpGet: the application's status code (the kubelet counts 200-399 as success); 503 when the connection fails,
 *            the answer is not HTTP or nothing arrives within the timeout; scheme HTTPS is not supported: 501.
 *   grpc:    grpc.health.v1.Health/Check over h2c: 200 for SERVING, else 503 (the body says why).
 * Each probe runs on the main loop without blocking it, bounded by timeoutSeconds (default 1 s). Unknown paths: 404.
 * Bounds: at most RM_APP_PROBES_MAX probes, RM_APP_PROBES_MAX_RUNNING running at once (more: 503), 16 headers each.
 *
 * Thread: main thread only.
 */
#ifndef remora__app_probe_h
#define remora__app_probe_h

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include <uv.h>
#include "upstream/health.h"

#define RM_APP_PROBES_MAX 64
#define RM_APP_PROBES_MAX_RUNNING 64

typedef struct st_rm_app_probes_t rm_app_probes_t;

/**
 * Parses the JSON of REMORA_APP_PROBES. `h2` is the one-request HTTP/2 codec (http2/h2probe.h) and `serving_status`
 * reads a HealthCheckResponse (upstream/health.h); both are used for gRPC probes. Returns the probes, or NULL with a
 * message in `err` naming the offending key. Main thread.
 */
rm_app_probes_t *rm_app_probes_create(uv_loop_t *loop, const char *json, const rm_health_h2_codec_t *h2,
                                      int (*serving_status)(const uint8_t *body, size_t len), char *err, size_t errlen);
/** Number of probes described. */
size_t rm_app_probes_count(const rm_app_probes_t *probes);
/**
 * Serves `req` (a GET of a path under /app-health/): starts the probe and answers when it ends; the request may go
 * away first (its pool's dispose detaches it). 404 for a path not described. Main thread.
 */
void rm_app_probes_serve(rm_app_probes_t *probes, h2o_req_t *req);
/** Ends every running probe (answering 503 "shutting down" to requests still waiting) and frees the rest once the loop
 * has closed their handles. NULL is ignored. Main thread. */
void rm_app_probes_destroy(rm_app_probes_t *probes);

#endif
