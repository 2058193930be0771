/*
 * Bootstrap YAML parsing: good files give the expected snapshot, each class of mistake gives an
 * error with the right line and a message naming what to fix.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <cmocka.h>
#include "config/config.h"

static char tmpdir[256];

static void
write_file(const char *dir, const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static int
setup_dir(void **state)
{
    char path[512];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rm_config_test.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/certs", tmpdir);
    mkdir(path, 0700);
    write_file(tmpdir, "certs/server.pem", "not really a certificate\n");
    write_file(tmpdir, "certs/server.key", "not really a key\n");
    write_file(tmpdir, "certs/ca.pem", "not really a CA\n");
    write_file(tmpdir, "certs/client.pem", "not really a certificate\n");
    write_file(tmpdir, "certs/client.key", "not really a key\n");
    return 0;
}

static int
teardown_dir(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static rm_config_t *
load(const char *yaml, rm_config_error_t *err)
{
    return rm_config_load_string(yaml, strlen(yaml), "test.yaml", err);
}

/* A route's retry policy and header modifiers, absent ones as their empty defaults (they are NULL then) */
static const rm_config_retry_t *
retry_of(const rm_config_route_t *r)
{
    static const rm_config_retry_t none;
    return r->retry != NULL ? r->retry : &none;
}

static const rm_config_header_mod_t *
mod_of(const rm_config_header_mod_t *m)
{
    static const rm_config_header_mod_t none;
    return m != NULL ? m : &none;
}

static unsigned
port_of(const rm_config_addr_t *a)
{
    return a->addr.ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)&a->addr)->sin_port)
                                        : ntohs(((const struct sockaddr_in6 *)&a->addr)->sin6_port);
}

static const char *
ip_of(const rm_config_addr_t *a, char *buf)
{
    if (a->addr.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->addr)->sin_addr, buf, INET6_ADDRSTRLEN);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->addr)->sin6_addr, buf, INET6_ADDRSTRLEN);
}

static const char full_yaml[] =
    "# a full bootstrap file\n"                       /* 1 */
    "workers: 2\n"                                    /* 2 */
    "admin: 127.0.0.1:15100\n"                        /* 3 */
    "health: 0.0.0.0:15120\n"                         /* 4 */
    "drain_timeout_ms: 5000\n"                        /* 5 */
    "dns: {servers: [\"127.0.0.1:5353\", \"::1\"]}\n" /* 6 */
    "limits: {max_headers: 50, max_header_bytes: 32768, h2_max_concurrent_streams: 100,"
    " stream_window_bytes: 65536, connection_window_bytes: 1048576, idle_timeout_ms: 60000,"
    " detect_timeout_ms: 2000, max_series_per_family: 50}\n" /* 7 */
    "listeners:\n"                                           /* 8 */
    "  - name: outbound\n"                                   /* 9 */
    "    address: 127.0.0.1:15001\n"
    "    tls: {certificate: certs/server.pem, key: certs/server.key}\n"
    "    routes:\n"
    "      - name: grpc-echo\n" /* 13 */
    "        match:\n"
    "          authority: [Echo, \"echo:80\", \"*.echo.svc\"]\n"
    "          path: {prefix: /echo.Echo/}\n"
    "          headers: [{name: X-Canary, value: \"1\"}, {name: x-debug}]\n"
    "        cluster: echo\n"
    "      - cluster: other\n" /* 19 */
    "        match: {path: {exact: /x}, authority: other}\n"
    "  - address: \"[::1]:15006\"\n" /* 21 */
    "    routes: [{cluster: echo}]\n"
    "clusters:\n"
    "  - name: echo\n" /* 24 */
    "    protocol: h2\n"
    "    endpoints: [\"127.0.0.1:27201\", \"echo.local:27201\", \"[::1]:27201\"]\n"
    "    connect_timeout_ms: 250\n"
    "    h2_connections: 2\n"
    "    h1_max_idle: 8\n"
    "    tls: {ca: certs/ca.pem, server_name: echo.local, certificate: certs/server.pem, key: certs/server.key}\n"
    "    dns: {min_refresh_ms: 500, max_refresh_ms: 60000}\n"
    "  - name: other\n" /* 32 */
    "    endpoints: other.local:80\n";

static void
test_full(void **state)
{
    rm_config_error_t err;
    char path[512], buf[INET6_ADDRSTRLEN], msg[1024];

    snprintf(path, sizeof(path), "%s/agent.yaml", tmpdir);
    write_file(tmpdir, "agent.yaml", full_yaml);
    rm_config_t *c = rm_config_load_file(path, &err);
    if (c == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));

    assert_string_equal(c->source, path);
    assert_int_equal(c->_refcnt, 1);
    assert_int_equal(c->num_workers, 2);
    assert_string_equal(ip_of(&c->admin_addr, buf), "127.0.0.1");
    assert_int_equal(port_of(&c->admin_addr), 15100);
    assert_int_equal(c->admin_addr.line, 3);
    assert_string_equal(ip_of(&c->health_addr, buf), "0.0.0.0");
    assert_int_equal(port_of(&c->health_addr), 15120);
    assert_int_equal(c->drain_timeout_ms, 5000);
    assert_int_equal(c->num_dns_servers, 2);
    assert_string_equal(c->dns_servers[0], "127.0.0.1:5353");
    assert_string_equal(c->dns_servers[1], "[::1]:53");
    assert_int_equal(c->limits.max_headers, 50);
    assert_int_equal(c->limits.max_header_bytes, 32768);
    assert_int_equal(c->limits.h2_max_concurrent_streams, 100);
    assert_int_equal(c->limits.stream_window_bytes, 65536);
    assert_int_equal(c->limits.connection_window_bytes, 1048576);
    assert_int_equal(c->limits.idle_timeout_ms, 60000);
    assert_int_equal(c->limits.detect_timeout_ms, 2000);
    assert_int_equal(c->limits.max_series_per_family, 50);

    assert_int_equal(c->num_listeners, 2);
    rm_config_listener_t *l = c->listeners;
    assert_string_equal(l->name, "outbound");
    assert_int_equal(l->line, 9);
    assert_string_equal(ip_of(&l->addr, buf), "127.0.0.1");
    assert_int_equal(port_of(&l->addr), 15001);
    snprintf(path, sizeof(path), "%s/certs/server.pem", tmpdir);
    assert_string_equal(l->tls_cert_file, path);
    snprintf(path, sizeof(path), "%s/certs/server.key", tmpdir);
    assert_string_equal(l->tls_key_file, path);
    assert_int_equal(l->num_routes, 2);
    rm_config_route_t *r = l->routes;
    assert_string_equal(r->name, "grpc-echo");
    assert_int_equal(r->line, 13);
    assert_int_equal(r->num_authorities, 3);
    assert_string_equal(r->authorities[0], "echo"); /* lower-cased */
    assert_string_equal(r->authorities[1], "echo:80");
    assert_string_equal(r->authorities[2], "*.echo.svc");
    assert_int_equal(r->path_match, RM_PATH_MATCH_PREFIX);
    assert_string_equal(r->path, "/echo.Echo/");
    assert_int_equal(r->num_headers, 2);
    assert_string_equal(r->headers[0].name, "x-canary");
    assert_string_equal(r->headers[0].value, "1");
    assert_string_equal(r->headers[1].name, "x-debug");
    assert_null(r->headers[1].value);
    assert_int_equal(r->cluster_index, 0);
    r = l->routes + 1;
    assert_null(r->name);
    assert_int_equal(r->line, 19);
    assert_int_equal(r->cluster_index, 1);
    assert_int_equal(r->path_match, RM_PATH_MATCH_EXACT);
    assert_string_equal(r->path, "/x");
    assert_int_equal(r->num_authorities, 1);
    assert_string_equal(r->authorities[0], "other");
    assert_int_equal(r->num_headers, 0);

    l = c->listeners + 1;
    assert_string_equal(l->name, "listener1");
    assert_int_equal(l->addr.addr.ss_family, AF_INET6);
    assert_string_equal(ip_of(&l->addr, buf), "::1");
    assert_int_equal(port_of(&l->addr), 15006);
    assert_null(l->tls_cert_file);
    assert_null(l->tls_key_file);
    assert_int_equal(l->num_routes, 1);
    assert_int_equal(l->routes[0].path_match, RM_PATH_MATCH_ANY);
    assert_null(l->routes[0].path);
    assert_int_equal(l->routes[0].num_authorities, 0);

    assert_int_equal(c->num_clusters, 2);
    rm_config_cluster_t *cl = c->clusters;
    assert_string_equal(cl->name, "echo");
    assert_int_equal(cl->line, 24);
    assert_int_equal(cl->protocol, RM_UPSTREAM_H2);
    assert_int_equal(cl->num_endpoints, 3);
    assert_string_equal(cl->endpoints[0].host, "127.0.0.1");
    assert_int_equal(cl->endpoints[0].port, 27201);
    assert_true(cl->endpoints[0].is_ip);
    assert_int_equal(cl->endpoints[0].addr.family, AF_INET);
    assert_int_equal(cl->endpoints[0].addr.port, 27201);
    assert_string_equal(cl->endpoints[1].host, "echo.local");
    assert_false(cl->endpoints[1].is_ip);
    assert_string_equal(cl->endpoints[2].host, "::1");
    assert_true(cl->endpoints[2].is_ip);
    assert_int_equal(cl->endpoints[2].addr.family, AF_INET6);
    assert_int_equal(cl->connect_timeout_ms, 250);
    assert_int_equal(cl->h2_connections, 2);
    assert_int_equal(cl->h1_max_idle, 8);
    assert_true(cl->tls);
    snprintf(path, sizeof(path), "%s/certs/ca.pem", tmpdir);
    assert_string_equal(cl->tls_ca_file, path);
    assert_string_equal(cl->tls_server_name, "echo.local");
    assert_non_null(cl->tls_cert_file);
    assert_non_null(cl->tls_key_file);
    assert_int_equal(cl->dns_min_refresh_ms, 500);
    assert_int_equal(cl->dns_max_refresh_ms, 60000);

    cl = c->clusters + 1;
    assert_string_equal(cl->name, "other");
    assert_int_equal(cl->protocol, RM_UPSTREAM_HTTP1);
    assert_int_equal(cl->num_endpoints, 1);
    assert_string_equal(cl->endpoints[0].host, "other.local");
    assert_int_equal(cl->endpoints[0].port, 80);
    assert_false(cl->tls);
    assert_int_equal(cl->connect_timeout_ms, 1000);
    assert_int_equal(cl->h2_connections, 1);
    assert_int_equal(cl->h1_max_idle, 64);
    assert_int_equal(cl->dns_min_refresh_ms, 1000);
    assert_int_equal(cl->dns_max_refresh_ms, 300000);

    assert_int_equal(rm_config_find_cluster(c, "other"), 1);
    assert_int_equal(rm_config_find_cluster(c, "nope"), -1);

    assert_ptr_equal(rm_config_ref(c), c);
    assert_int_equal(c->_refcnt, 2);
    rm_config_unref(c);
    assert_int_equal(c->_refcnt, 1);
    rm_config_unref(c);
}

static void
test_peer_agent(void **state)
{
    rm_config_error_t err;
    rm_config_t *c = load("listeners: [{address: \"127.0.0.1:15001\", peer: agent, routes: [{cluster: c}]}]\n"
                          "clusters: [{name: c, protocol: h2, peer: agent, endpoints: [\"127.0.0.1:1\"]},\n"
                          "           {name: d, peer: any, endpoints: [\"127.0.0.1:2\"]}]\n",
                          &err);
    assert_non_null(c);
    assert_int_equal(c->listeners[0].peer_agent, 1);
    assert_int_equal(c->clusters[0].peer_agent, 1);
    assert_int_equal(c->clusters[1].peer_agent, 0);
    rm_config_unref(c);
}

static void
test_defaults(void **state)
{
    rm_config_error_t err;
    char buf[INET6_ADDRSTRLEN];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    rm_config_t *c = load("listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c}]}]\n"
                          "clusters: [{name: c, endpoints: [\"127.0.0.1:1\"]}]\n",
                          &err);
    assert_non_null(c);
    assert_int_equal(c->listeners[0].peer_agent, 0);
    assert_int_equal(c->clusters[0].peer_agent, 0);
    assert_int_equal(c->num_workers, ncpu > 64 ? 64 : ncpu < 1 ? 1 : ncpu);
    assert_string_equal(ip_of(&c->admin_addr, buf), "127.0.0.1");
    assert_int_equal(port_of(&c->admin_addr), 15000);
    assert_string_equal(ip_of(&c->health_addr, buf), "0.0.0.0");
    assert_int_equal(port_of(&c->health_addr), 15020);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_int_equal(c->limits.max_headers, 100);
    assert_int_equal(c->limits.max_header_bytes, 65536);
    assert_int_equal(c->limits.h2_max_concurrent_streams, 1024);
    assert_int_equal(c->limits.stream_window_bytes, 262144);
    assert_int_equal(c->limits.connection_window_bytes, 4194304);
    assert_int_equal(c->limits.idle_timeout_ms, 300000);
    assert_int_equal(c->limits.detect_timeout_ms, 10000);
    assert_int_equal(c->limits.max_series_per_family, 2000);
    assert_int_equal(c->num_dns_servers, 0);
    assert_null(c->version);
    assert_string_equal(c->listeners[0].name, "listener0");
    rm_config_unref(c);

    rm_config_t *d = rm_config_create_defaults();
    assert_int_equal(d->_refcnt, 1);
    assert_int_equal(d->num_listeners, 0);
    assert_int_equal(d->num_clusters, 0);
    assert_int_equal(port_of(&d->admin_addr), 15000);
    rm_config_unref(d);
    rm_config_unref(NULL);

    /* comments, anchors and a version string */
    c = load("version: \"v1\"\n"
             "workers: 64\n"
             "clusters:\n"
             "  - &c {name: a, endpoints: \"127.0.0.1:80\"}\n"
             "  - {name: b, endpoints: \"127.0.0.1:81\", protocol: auto, tls: {}}\n"
             "listeners: [{address: \":8080\", routes: [{cluster: b, name: r}]}]\n",
             &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    assert_string_equal(c->version, "v1");
    assert_int_equal(c->num_workers, 64);
    assert_int_equal(c->clusters[1].protocol, RM_UPSTREAM_AUTO);
    assert_true(c->clusters[1].tls);
    assert_null(c->clusters[1].tls_ca_file);
    assert_string_equal(ip_of(&c->listeners[0].addr, buf), "0.0.0.0");
    assert_int_equal(port_of(&c->listeners[0].addr), 8080);
    rm_config_unref(c);
}

static const char policy_yaml[] =
    "listeners:\n"                   /* 1 */
    "  - name: l\n"                  /* 2 */
    "    address: 127.0.0.1:15001\n" /* 3 */
    "    routes:\n"                  /* 4 */
    "      - name: full\n"           /* 5 */
    "        match:\n"               /* 6 */
    "          path: {regex: \"/v[0-9]+/.*\"}\n"
    "          headers: [{name: X-Env, value: \"a.*\", regex: true}, {name: x-plain, value: \"b.*\", regex: false}]\n"
    "        cluster: c\n" /* 9 */
    "        timeout_ms: 10000\n"
    "        per_try_timeout_ms: 200\n"
    "        retry:\n"
    "          attempts: 2\n"
    "          backoff_ms: 30\n"
    "          max_backoff_ms: 400\n"
    "          on: [reset, connect-failure]\n"
    "          http_statuses: [503, 502, 503, 504]\n"
    "          grpc_statuses: [UNAVAILABLE, CANCELLED, 14, 4]\n"
    "          max_replay_bytes: 0\n"
    "        request_headers:\n"
    "          set: [{name: X-Env, value: prod}, {name: Host, value: api.internal}]\n"
    "          add: [{name: x-a, value: \"1\"}, {name: x-a, value: \"\"}]\n"
    "          remove: [X-Debug, x-trace]\n"
    "        response_headers: {remove: server}\n"
    "        mirrors: [{cluster: shadow, percent: 0.5}, {cluster: c}, {cluster: shadow, percent: 0}]\n"
    "        fault: {delay_ms: 50, delay_percent: 10, abort_http_status: 503, abort_grpc_status: UNAVAILABLE, abort_percent: 5}\n"
    "      - name: moved\n" /* 27 */
    "        match: {path: {prefix: /old/}}\n"
    "        redirect: {scheme: https, hostname: X.Example, port: 8443, status_code: 308, path: {type: prefix, value: /new/}}\n"
    "      - name: moved-default\n" /* 30 */
    "        redirect: {path: {type: full, value: /}}\n"
    "      - name: rewrite\n" /* 32 */
    "        match: {path: {prefix: /v1/}}\n"
    "        cluster: shadow\n"
    "        url_rewrite: {hostname: y.example, path: {type: prefix, value: /v2/}}\n"
    "      - name: defaults\n" /* 36 */
    "        cluster: c\n"
    "        retry: {}\n"
    "        fault: {abort_grpc_status: 8}\n"
    "        url_rewrite: {path: {type: full, value: /x}}\n"
    "      - name: no-retry\n" /* 41 */
    "        cluster: c\n"
    "        retry: {attempts: 0, on: []}\n"
    "        fault: {delay_ms: 5}\n"
    "clusters:\n"
    "  - name: c\n" /* 46 */
    "    endpoints: 127.0.0.1:1\n"
    "    pool_idle_timeout_ms: 2000\n"
    "    stream_idle_timeout_ms: 0\n"
    "    retry_budget: {percent: 50, interval_ms: 5000, min_retry_count: 3, min_retry_interval_ms: 2000}\n"
    "  - name: shadow\n" /* 51 */
    "    endpoints: 127.0.0.1:2\n";

static void
test_policy(void **state)
{
    rm_config_error_t err;
    char msg[1024];
    rm_config_t *c = load(policy_yaml, &err);
    if (c == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
    rm_config_listener_t *l = c->listeners;
    assert_int_equal(l->num_routes, 6);

    rm_config_route_t *r = l->routes;
    assert_int_equal(r->line, 5);
    assert_int_equal(r->path_match, RM_PATH_MATCH_REGEX);
    assert_string_equal(r->path, "/v[0-9]+/.*");
    assert_non_null(r->_compiled);
    assert_int_equal(r->num_headers, 2);
    assert_string_equal(r->headers[0].name, "x-env");
    assert_true(r->headers[0].is_regex);
    assert_false(r->headers[1].is_regex);
    assert_int_equal(r->timeout_ms, 10000);
    assert_int_equal(r->per_try_timeout_ms, 200);
    assert_int_equal(retry_of(r)->attempts, 2);
    assert_int_equal(retry_of(r)->backoff_base_ms, 30);
    assert_int_equal(retry_of(r)->backoff_max_ms, 400);
    assert_int_equal(retry_of(r)->conditions, RM_RETRY_ON_RESET | RM_RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(retry_of(r)->num_http_statuses, 3); /* sorted, deduplicated */
    assert_int_equal(retry_of(r)->http_statuses[0], 502);
    assert_int_equal(retry_of(r)->http_statuses[1], 503);
    assert_int_equal(retry_of(r)->http_statuses[2], 504);
    assert_int_equal(retry_of(r)->grpc_status_mask, (1u << 14) | (1u << 1) | (1u << 4));
    assert_int_equal(retry_of(r)->max_replay_bytes, 0); /* an explicit 0 stays: only requests without a body are retried */
    assert_int_equal(mod_of(r->request_headers)->num_set, 2);
    assert_string_equal(mod_of(r->request_headers)->set[0].name, "x-env");
    assert_string_equal(mod_of(r->request_headers)->set[0].value, "prod");
    assert_string_equal(mod_of(r->request_headers)->set[1].name, "host");
    assert_int_equal(mod_of(r->request_headers)->num_add, 2); /* add may repeat a name */
    assert_string_equal(mod_of(r->request_headers)->add[1].value, "");
    assert_int_equal(mod_of(r->request_headers)->num_remove, 2);
    assert_string_equal(mod_of(r->request_headers)->remove[0], "x-debug");
    assert_int_equal(mod_of(r->response_headers)->num_set, 0);
    assert_int_equal(mod_of(r->response_headers)->num_remove, 1);
    assert_string_equal(mod_of(r->response_headers)->remove[0], "server");
    assert_int_equal(r->num_mirrors, 3);
    assert_int_equal(r->mirrors[0].cluster_index, 1);
    assert_int_equal(r->mirrors[0].per_million, 5000);
    assert_int_equal(r->mirrors[1].cluster_index, 0);
    assert_int_equal(r->mirrors[1].per_million, 1000000);
    assert_int_equal(r->mirrors[2].per_million, 0);
    assert_non_null(r->fault);
    assert_int_equal(r->fault->delay_ms, 50);
    assert_int_equal(r->fault->delay_per_million, 100000);
    assert_int_equal(r->fault->abort_http_status, 503);
    assert_int_equal(r->fault->abort_grpc_status, 14);
    assert_int_equal(r->fault->abort_per_million, 50000);
    assert_null(r->redirect);
    assert_null(r->url_rewrite);

    r = l->routes + 1;
    assert_int_equal(r->line, 27);
    assert_non_null(r->redirect);
    assert_string_equal(r->redirect->scheme, "https");
    assert_string_equal(r->redirect->hostname, "x.example");
    assert_int_equal(r->redirect->port, 8443);
    assert_int_equal(r->redirect->status_code, 308);
    assert_int_equal(r->redirect->path_type, RM_PATH_REWRITE_PREFIX);
    assert_string_equal(r->redirect->path, "/new/");
    assert_null(r->cluster_name);
    assert_true(r->cluster_index == RM_CONFIG_NO_CLUSTER);
    assert_int_equal(retry_of(r)->attempts, 0);
    assert_null(r->_compiled);

    r = l->routes + 2; /* prefix rewrites are allowed on a route without a path match (Gateway API: PathPrefix "/") */
    assert_null(r->redirect->scheme);
    assert_null(r->redirect->hostname);
    assert_int_equal(r->redirect->port, 0);
    assert_int_equal(r->redirect->status_code, 302);
    assert_int_equal(r->redirect->path_type, RM_PATH_REWRITE_FULL);
    assert_true(r->cluster_index == RM_CONFIG_NO_CLUSTER);

    r = l->routes + 3;
    assert_int_equal(r->cluster_index, 1);
    assert_string_equal(r->url_rewrite->hostname, "y.example");
    assert_int_equal(r->url_rewrite->path_type, RM_PATH_REWRITE_PREFIX);
    assert_string_equal(r->url_rewrite->path, "/v2/");

    r = l->routes + 4; /* an empty retry block: one retry, defaults, the always-safe conditions */
    assert_int_equal(retry_of(r)->attempts, 1);
    assert_int_equal(retry_of(r)->backoff_base_ms, 25);
    assert_int_equal(retry_of(r)->backoff_max_ms, 250);
    assert_int_equal(retry_of(r)->conditions, RM_RETRY_ON_CONNECT_FAILURE | RM_RETRY_ON_REFUSED_STREAM);
    assert_int_equal(retry_of(r)->num_http_statuses, 0);
    assert_int_equal(retry_of(r)->grpc_status_mask, 0);
    assert_int_equal(retry_of(r)->max_replay_bytes, 65536);
    assert_int_equal(r->fault->abort_grpc_status, 8);
    assert_int_equal(r->fault->abort_http_status, 0);
    assert_int_equal(r->fault->abort_per_million, 1000000);
    assert_int_equal(r->fault->delay_per_million, 0);
    assert_null(r->url_rewrite->hostname);
    assert_int_equal(r->url_rewrite->path_type, RM_PATH_REWRITE_FULL);

    r = l->routes + 5;
    assert_int_equal(retry_of(r)->attempts, 0);
    assert_int_equal(retry_of(r)->conditions, 0);
    assert_int_equal(r->fault->delay_ms, 5);
    assert_int_equal(r->fault->delay_per_million, 1000000);
    assert_int_equal(r->fault->abort_per_million, 0);
    assert_int_equal(r->fault->abort_grpc_status, -1);

    rm_config_cluster_t *cl = c->clusters;
    assert_int_equal(cl->pool_idle_timeout_ms, 2000);
    assert_int_equal(cl->stream_idle_timeout_ms, 0);
    assert_int_equal(cl->budget_percent, 50);
    assert_int_equal(cl->budget_interval_ms, 5000);
    assert_int_equal(cl->min_retry_count, 3);
    assert_int_equal(cl->min_retry_interval_ms, 2000);
    cl = c->clusters + 1; /* defaults */
    assert_int_equal(cl->pool_idle_timeout_ms, 4000);
    assert_int_equal(cl->stream_idle_timeout_ms, 300000);
    assert_int_equal(cl->budget_percent, 20);
    assert_int_equal(cl->budget_interval_ms, 10000);
    assert_int_equal(cl->min_retry_count, 10);
    assert_int_equal(cl->min_retry_interval_ms, 1000);

    /* validating again (a producer may) rebuilds the compiled expressions without leaking the old ones */
    assert_int_equal(rm_config_validate(c, &err), 0);
    assert_non_null(c->listeners[0].routes[0]._compiled);
    rm_config_unref(c);
}

typedef struct st_bad_case_t {
    const char *yaml;
    unsigned line;
    const char *message; /* substring */
} bad_case_t;

#define L "listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c}]}]\n"
#define C "clusters: [{name: c, endpoints: [\"127.0.0.1:1\"]}]\n"
/* a route 'r' declared on line 4, whose further keys follow from line 6 on, 8 columns in */
#define R "listeners:\n  - address: 127.0.0.1:15001\n    routes:\n      - name: r\n        cluster: c\n"
/* C as a block list, so that a case can add clusters */
#define CB "clusters:\n  - {name: c, endpoints: [\"127.0.0.1:1\"]}\n"

static const bad_case_t bad_cases[] = {
    /* YAML syntax */
    {"workers: [1, 2\n", 2, "invalid YAML"},
    {"", 0, "empty"},
    {"a: 1\n---\nb: 2\n", 3, "only one YAML document"},
    {"- 1\n- 2\n", 1, "must be a mapping"},
    /* unknown keys, with a suggestion */
    {L C "wrkers: 2\n", 3, "unknown key 'wrkers' in the configuration (did you mean 'workers'?)"},
    {"listeners:\n  - address: 127.0.0.1:15001\n    rutes: []\n" C, 3, "unknown key 'rutes' in listener (did you mean 'routes'?)"},
    {L "clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n    conect_timeout_ms: 5\n", 5,
     "cluster 'c': unknown key 'conect_timeout_ms' in cluster (did you mean 'connect_timeout_ms'?)"},
    {L C "limits: {max_headerz: 5}\n", 3, "did you mean 'max_headers'?"},
    {L C "bogus: 1\n", 3, "unknown key 'bogus'"},
    {L C "workers: 2\nworkers: 3\n", 4, "key 'workers' is given twice (first on line 3)"},
    /* wrong types */
    {L C "workers: two\n", 3, "workers must be a whole number 1-64, got 'two'"},
    {L C "workers: \"2\"\n", 3, "workers must be a number, got the quoted string"},
    {L C "workers: [2]\n", 3, "workers must be a number, got a list"},
    {L C "limits: []\n", 3, "limits must be a mapping, got a list"},
    {"listeners: {name: x}\n" C, 1, "listeners must be a list, got a mapping"},
    {L "clusters: [{name: [c], endpoints: [\"127.0.0.1:1\"]}]\n", 2, "name must be a string, got a list"},
    {L "clusters: [{name: c, endpoints: [[x]]}]\n", 2, "endpoints[] must be a string, got a list"},
    {L "clusters: [{name: c, endpoints: [{host: x}]}]\n", 2, "unknown key 'host' in endpoints[]"},
    /* ranges */
    {L C "workers: 0\n", 3, "workers must be 1-64, got 0"},
    {L C "workers: 65\n", 3, "workers must be 1-64, got 65"},
    {L C "workers: -1\n", 3, "workers must be a whole number"},
    {L C "drain_timeout_ms: 99999999999\n", 3, "drain_timeout_ms must be 0-4294967295"},
    {L C "limits:\n  connection_window_bytes: 1000\n", 4, "limits.connection_window_bytes must be 65535-2147483647, got 1000"},
    {L "clusters: [{name: c, endpoints: [\"127.0.0.1:1\"], h2_connections: 0}]\n", 2, "cluster 'c': h2_connections must be 1-64"},
    {L "clusters: [{name: c, endpoints: [\"127.0.0.1:1\"], dns: {min_refresh_ms: 10, max_refresh_ms: 5}}]\n", 2,
     "dns.min_refresh_ms (10) must not exceed dns.max_refresh_ms (5)"},
    /* missing required fields */
    {"listeners: [{routes: [{cluster: c}]}]\n" C, 1, "listener 'listener0': 'address' is required"},
    {"listeners: [{address: \"127.0.0.1:15001\"}]\n" C, 1, "listener 'listener0': 'routes' is required"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: []}]\n" C, 1, "needs at least one route"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{name: r}]}]\n" C, 1, "route 'r': 'cluster' is required"},
    {L "clusters: [{endpoints: [\"127.0.0.1:1\"]}]\n", 2, "cluster #1: 'name' is required"},
    {L "clusters:\n  - name: c\n", 3, "cluster 'c': 'endpoints' is required"},
    {L "clusters: [{name: c, endpoints: []}]\n", 2, "cluster 'c': needs at least one endpoint"},
    /* duplicates */
    {"listeners:\n  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
     "  - {name: a, address: \"127.0.0.1:15002\", routes: [{cluster: c}]}\n" C,
     3, "listener 'a' is defined twice (first on line 2)"},
    {L "clusters:\n  - {name: c, endpoints: \"127.0.0.1:1\"}\n  - {name: c, endpoints: \"127.0.0.1:2\"}\n", 4,
     "cluster 'c' is defined twice (first on line 3)"},
    {"listeners:\n  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
     "  - {name: b, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n" C,
     3, "listener 'b': address 127.0.0.1:15001 overlaps listener 'a' (127.0.0.1:15001, line 2)"},
    {"listeners:\n  - {name: a, address: \"0.0.0.0:15001\", routes: [{cluster: c}]}\n"
     "  - {name: b, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n" C,
     3, "overlaps listener 'a' (0.0.0.0:15001, line 2)"},
    {"listeners:\n  - {name: a, address: \"127.0.0.1:15000\", routes: [{cluster: c}]}\n" C, 2, "collides with the admin address"},
    {L C "admin: 127.0.0.1:15020\n", 3, "health address 0.0.0.0:15020 collides with the admin address 127.0.0.1:15020"},
    {L "clusters: [{name: c, endpoints: [\"127.0.0.1:1\", \"127.0.0.1:1\"]}]\n", 2, "endpoint '127.0.0.1:1' is listed twice"},
    {"listeners:\n  - address: 127.0.0.1:15001\n    routes:\n      - {name: r, cluster: c}\n      - {name: r, cluster: c}\n" C, 5,
     "route 'r' is defined twice (first on line 4)"},
    /* references */
    {"listeners:\n  - name: out\n    address: 127.0.0.1:15001\n    routes:\n      - name: r\n        cluster: ech\n"
     "clusters: [{name: echo, endpoints: \"127.0.0.1:1\"}]\n",
     6, "listener 'out': route 'r': cluster 'ech' is not defined (did you mean 'echo'?)"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: zzzzzz}]}]\n" C, 1,
     "route #1: cluster 'zzzzzz' is not defined"},
    /* addresses and ports */
    {L "clusters:\n  - name: echo\n    endpoints:\n      - 127.0.0.1:1\n      - 10.0.0.1:99999\n", 6,
     "cluster 'echo': endpoint '10.0.0.1:99999': port must be 1-65535"},
    {L "clusters: [{name: c, endpoints: [\"127.0.0.1:0\"]}]\n", 2, "port must be 1-65535"},
    {L "clusters: [{name: c, endpoints: [\"127.0.0.1\"]}]\n", 2, "expected HOST:PORT"},
    {L "clusters: [{name: c, endpoints: [\"::1:80\"]}]\n", 2, "IPv6 addresses must be written in brackets"},
    {L "clusters: [{name: c, endpoints: [\"[::g]:80\"]}]\n", 2, "not a valid IPv6 address"},
    {L "clusters: [{name: c, endpoints: [\"bad host:80\"]}]\n", 2, "host must be an IP literal or a DNS name"},
    {"listeners: [{address: \"localhost:15001\", routes: [{cluster: c}]}]\n" C, 1,
     "address 'localhost:15001': address must be an IP literal"},
    {"listeners: [{address: \"127.0.0.1:http\", routes: [{cluster: c}]}]\n" C, 1, "port must be 1-65535"},
    {L C "admin: 127.0.0.1\n", 3, "admin '127.0.0.1': expected HOST:PORT"},
    {L C "dns: {servers: [\"resolver.local:53\"]}\n", 3, "dns.servers 'resolver.local:53': a DNS server must be an IP literal"},
    /* protocol */
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", protocol: http2}]\n", 2,
     "protocol 'http2' must be h2, http1, auto or tcp"},
    /* transparent interception and opaque TCP (docs/transparent.md) */
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", addresses: [\"10.96.0.1\"]}]\n", 2, "address '10.96.0.1'"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", addresses: [\"0.0.0.0:80\"]}]\n", 2,
     "is a wildcard, not a virtual address"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", addresses: [\"10.96.0.1:80\"]},\n"
       "           {name: d, endpoints: \"127.0.0.1:1\", addresses: [\"10.96.0.1:80\"]}]\n",
     3, "address 10.96.0.1:80 is also a virtual address of cluster 'c'"},
    {"listeners: [{address: \"127.0.0.1:15001\", protocol: tcp}]\nclusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n", 1,
     "protocol tcp needs 'cluster'"},
    {"listeners: [{address: \"127.0.0.1:15001\", protocol: tcp, cluster: d}]\nclusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n",
     1, "cluster 'd' is not defined"},
    {"listeners: [{address: \"127.0.0.1:15001\", protocol: udp, cluster: c}]\nclusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n",
     1, "protocol 'udp' must be http, h2 or tcp"},
    {"listeners: [{address: \"127.0.0.1:15001\", protocol: h2, direction: outbound}]\nclusters: [{name: c, endpoints: "
     "\"127.0.0.1:1\"}]\n",
     1, "protocol h2 is for explicit listeners"},
    {"listeners: [{address: \"127.0.0.1:15001\", protocol: h2, peer: agent, routes: [{cluster: c}]}]\n"
     "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n",
     1, "protocol h2 is not for 'peer: agent' listeners"},
    {"listeners: [{address: \"127.0.0.1:15001\", max_connections: -1, routes: [{cluster: c}]}]\n"
     "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n",
     1, "max_connections"},
    {"limits: {request_headers_timeout_ms: x}\nlisteners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c}]}]\n"
     "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n",
     1, "request_headers_timeout_ms"},
    {"listeners: [{address: \"127.0.0.1:15001\", direction: sideways}]\nclusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n", 1,
     "direction 'sideways' must be outbound or inbound"},
    /* agent-to-agent hops (docs/architecture.md) */
    {"listeners: [{address: \"127.0.0.1:15001\", peer: mesh, routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: "
     "\"127.0.0.1:1\"}]\n",
     1, "peer 'mesh' must be agent or any"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c}]}]\nclusters: [{name: c, peer: [agent], endpoints: "
     "\"127.0.0.1:1\"}]\n",
     2, "peer must be a string"},
    {"listeners: [{address: \"127.0.0.1:15001\", direction: outbound, opaque_ports: [0]}]\nclusters: [{name: c, endpoints: "
     "\"127.0.0.1:1\"}]\n",
     1, "opaque_ports[]"},
    /* TLS */
    {"listeners: [{address: \"127.0.0.1:15001\", tls: {certificate: certs/server.pem}, routes: [{cluster: c}]}]\n" C, 1,
     "tls needs both 'certificate' and 'key' (key is missing)"},
    {"listeners:\n  - address: \"127.0.0.1:15001\"\n    tls:\n      certificate: /nonexistent/x.pem\n      key: "
     "/nonexistent/x.key\n"
     "    routes: [{cluster: c}]\n" C,
     4, "tls.certificate '/nonexistent/x.pem': cannot read: No such file or directory"},
    {"listeners: [{address: \"127.0.0.1:15001\", tls: {certificate: /tmp, key: /tmp}, routes: [{cluster: c}]}]\n" C, 1,
     "not a regular file"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", tls: {ca: /nonexistent/ca.pem}}]\n", 2,
     "cluster 'c': tls.ca '/nonexistent/ca.pem': cannot read"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", tls: {key: /nonexistent/k}}]\n", 2, "(certificate is missing)"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", tls: {sni: x}}]\n", 2, "unknown key 'sni' in tls"},
    /* route matching */
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {path: {prefix: api}}}]}]\n" C, 1,
     "match.path.prefix 'api' must start with '/'"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {path: {prefix: /a, exact: /b}}}]}]\n" C, 1,
     "give only one of 'prefix', 'exact' or 'regex'"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {path: {}}}]}]\n" C, 1,
     "needs 'prefix', 'exact' or 'regex'"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {path: {exact: \"/a?b=1\"}}}]}]\n" C, 1,
     "must not contain '?'"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {headers: [{value: x}]}}]}]\n" C, 1,
     "'match.headers[].name' is required"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {headers: [{name: \"bad name\"}]}}]}]\n" C, 1,
     "name 'bad name' is not a valid header name"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {authority: \"a*.b\"}}]}]\n" C, 1,
     "a wildcard is only allowed as a leading '*.'"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {authority: \"a:99999\"}}]}]\n" C, 1,
     "match.authority 'a:99999': port must be 1-65535"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c, match: {verb: GET}}]}]\n" C, 1,
     "unknown key 'verb' in match"},
    /* names */
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}, {name: \"a b\", endpoints: \"127.0.0.1:1\"}]\n", 2,
     "cluster name 'a b' may only contain"},

    /* regular expressions: PCRE2's message and offset, on the line of the pattern */
    {R "        match:\n          path: {regex: \"/v(1\"}\n" C, 7,
     "match.path.regex '/v(1': missing closing parenthesis at offset 4"},
    {R "        match: {path: {regex: \"\"}}\n" C, 6, "match.path.regex must be a non-empty regular expression"},
    {R "        match: {path: {regex: /a, prefix: /b}}\n" C, 6, "give only one of 'prefix', 'exact' or 'regex'"},
    {R "        match:\n          headers:\n            - name: x\n              value: \"a[\"\n              regex: true\n" C, 9,
     "match.headers 'x': regex 'a[': missing terminating ] for character class at offset 2"},
    {R "        match:\n          headers:\n            - {name: x, regex: true}\n" C, 8,
     "match.headers 'x': regex: true needs a value (the pattern)"},
    {R "        match:\n          headers:\n            - {name: x, value: a, regex: yes}\n" C, 8,
     "match.headers[].regex must be true or false, got 'yes'"},
    /* timeouts */
    {R "        timeout_ms: 100\n        per_try_timeout_ms: 200\n" C, 7,
     "per_try_timeout_ms (200) must not exceed timeout_ms (100)"},
    {R "        per_try_timeout_ms: 86400001\n" C, 6, "per_try_timeout_ms must be 0-86400000, got 86400001"},
    /* retry */
    {R "        retry:\n          attempts: 11\n" C, 7, "retry.attempts must be 0-10, got 11"},
    {R "        retry:\n          atempts: 1\n" C, 7, "unknown key 'atempts' in retry (did you mean 'attempts'?)"},
    {R "        retry: {backoff_ms: 0}\n" C, 6, "retry.backoff_ms must be 1-60000, got 0"},
    {R "        retry: {backoff_ms: 60001}\n" C, 6, "retry.backoff_ms must be 1-60000, got 60001"},
    {R "        retry:\n          backoff_ms: 100\n          max_backoff_ms: 50\n" C, 8,
     "retry.max_backoff_ms (50) must not be below retry.backoff_ms (100)"},
    {R "        retry: {max_backoff_ms: 600001}\n" C, 6, "retry.max_backoff_ms must be 1-600000"},
    {R "        retry:\n          on:\n            - reset\n            - refused-streams\n" C, 9,
     "retry.on 'refused-streams' is not a retry condition (did you mean 'refused-stream'?): use connect-failure, refused-stream "
     "or reset"},
    {R "        retry: {on: [5xx]}\n" C, 6, "retry.on '5xx' is not a retry condition: use connect-failure"},
    {R "        retry:\n          http_statuses: [502,\n            600]\n" C, 8, "retry.http_statuses[] must be 100-599, got 600"},
    {R "        retry: {http_statuses: 503}\n" C, 6, "retry.http_statuses must be a list, got a scalar"},
    {R "        retry:\n          grpc_statuses: [UNAVAILABLE, UNAVAILBLE]\n" C, 7,
     "retry.grpc_statuses[] 'UNAVAILBLE' is not a gRPC status (did you mean 'UNAVAILABLE'?)"},
    {R "        retry: {grpc_statuses: [unavailable]}\n" C, 6, "(did you mean 'UNAVAILABLE'?)"},
    {R "        retry: {grpc_statuses: [17]}\n" C, 6, "retry.grpc_statuses[] must be 0-16, got 17"},
    {R "        retry: {grpc_statuses: [NOPE_NOPE_NOPE]}\n" C, 6, "use an upper-case name such as UNAVAILABLE or a number 0-16"},
    {R "        retry: {max_replay_bytes: 16777217}\n" C, 6, "retry.max_replay_bytes must be 0-16777216, got 16777217"},
    {R "        retry: [attempts]\n" C, 6, "retry must be a mapping, got a list"},
    /* header modifiers */
    {R "        request_headers:\n          set:\n            - {name: Connection, value: close}\n" C, 8,
     "request_headers.set 'Connection' is a hop-by-hop field: the agent manages it per connection"},
    {R "        request_headers: {add: [{name: transfer-encoding, value: chunked}]}\n" C, 6, "is a hop-by-hop field"},
    {R "        response_headers: {remove: [te]}\n" C, 6, "response_headers.remove 'te' is a hop-by-hop field"},
    {R "        response_headers: {set: [{name: keep-alive, value: x}]}\n" C, 6, "hop-by-hop"},
    {R "        request_headers: {remove: [upgrade, Proxy-Connection]}\n" C, 6, "request_headers.remove 'upgrade' is a hop-by-hop"},
    {R "        request_headers: {set: [{name: \":path\", value: /x}]}\n" C, 6,
     "request_headers.set ':path' is a pseudo-header field, which cannot be modified (to change the authority, set 'host')"},
    {R "        request_headers: {set: [{name: \"x y\", value: a}]}\n" C, 6,
     "request_headers.set 'x y' is not a valid header name"},
    {R "        request_headers: {set: [{name: content-length, value: \"1\"}]}\n" C, 6, "is part of the message framing"},
    {R "        request_headers: {add: [{name: host, value: a}]}\n" C, 6,
     "request_headers.add 'host' can only be set (setting it sets the request's authority)"},
    {R "        request_headers: {remove: [Host]}\n" C, 6, "'Host' can only be set"},
    {R "        request_headers: {set: [{name: x}]}\n" C, 6, "'request_headers.set[].value' is required"},
    {R "        request_headers: {set: [{value: x}]}\n" C, 6, "'request_headers.set[].name' is required"},
    {R "        request_headers:\n          set:\n            - {name: x-a, value: \"1\"}\n            - {name: X-A, value: "
       "\"2\"}\n" C,
     9, "request_headers.set 'X-A' is listed twice"},
    {R "        request_headers:\n          set: [{name: x-a, value: \"1\"}]\n          remove: [X-A]\n" C, 8,
     "request_headers: 'X-A' is both set and removed"},
    {R "        request_headers: {remove: [a, a]}\n" C, 6, "request_headers.remove 'a' is listed twice"},
    {R "        request_headers: {set: [{name: a, value: \"x\\ny\"}]}\n" C, 6, "the value contains control characters"},
    {R "        request_headers: {append: []}\n" C, 6, "unknown key 'append' in request_headers"},
    /* mirrors */
    {R "        mirrors:\n          - {cluster: shadw}\n" CB "  - {name: shadow, endpoints: \"127.0.0.1:2\"}\n", 7,
     "route 'r': mirrors: cluster 'shadw' is not defined (did you mean 'shadow'?)"},
    {R "        mirrors: [{cluster: c, percent: 101}]\n" C, 6, "mirrors[].percent must be a number 0-100 with at most 4 decimals"},
    {R "        mirrors: [{cluster: c, percent: 0.00001}]\n" C, 6, "got '0.00001'"},
    {R "        mirrors: [{cluster: c, percent: -1}]\n" C, 6, "mirrors[].percent must be a number 0-100"},
    {R "        mirrors: [{cluster: c, percent: \"10\"}]\n" C, 6,
     "mirrors[].percent must be a number 0-100, got the quoted string"},
    {R "        mirrors: [{percent: 10}]\n" C, 6, "'mirrors[].cluster' is required"},
    /* fault */
    {R "        fault: {delay_ms: 10, delay_percent: 100.5}\n" C, 6, "fault.delay_percent must be a number 0-100"},
    {R "        fault:\n          abort_percent: 5\n" C, 7, "fault.abort_percent needs abort_http_status or abort_grpc_status"},
    {R "        fault:\n          delay_percent: 5\n" C, 7, "fault.delay_percent needs delay_ms"},
    {R "        fault: {}\n" C, 6, "fault needs delay_ms, abort_http_status or abort_grpc_status"},
    {R "        fault: {abort_http_status: 600}\n" C, 6, "fault.abort_http_status must be 200-599, got 600"},
    {R "        fault: {abort_grpc_status: OK}\n" C, 6, "fault.abort_grpc_status: OK is not allowed here, use a status 1-16"},
    {R "        fault: {abort_grpc_status: 0}\n" C, 6, "fault.abort_grpc_status must be 1-16, got 0"},
    {R "        fault: {abort_grpc_status: UNAVAILABLE, abort: 5}\n" C, 6, "unknown key 'abort' in fault"},
    /* redirect */
    {R "        redirect: {status_code: 304}\n" C, 6, "redirect.status_code must be 301, 302, 303, 307 or 308, got 304"},
    {R "        redirect: {scheme: ftp}\n" C, 6, "redirect.scheme must be http or https, got 'ftp'"},
    {R "        redirect: {port: 0}\n" C, 6, "redirect.port must be 1-65535, got 0"},
    {R "        redirect: {hostname: \"a b\"}\n" C, 6, "redirect.hostname 'a b' must be a DNS name"},
    {R "        redirect:\n          path: {type: middle, value: /x}\n" C, 7, "redirect.path.type 'middle' must be full or prefix"},
    {R "        redirect:\n          path: {type: full}\n" C, 7, "'redirect.path.value' is required"},
    {R "        redirect:\n          path:\n            type: full\n            value: x\n" C, 9,
     "redirect.path: value must start with '/'"},
    {R "        redirect:\n          path:\n            type: full\n            value: \"/a?b\"\n" C, 9,
     "redirect.path: value must not contain '?'"},
    {R
     "        match: {path: {exact: /a}}\n        redirect:\n          path:\n            type: prefix\n            value: /b\n" C,
     9, "redirect.path: type 'prefix' replaces the prefix the route matched, so the route must match with match.path.prefix"},
    {R "        match: {path: {regex: /a.*}}\n        url_rewrite: {path: {type: prefix, value: /b}}\n" C, 7,
     "url_rewrite.path: type 'prefix' replaces the prefix"},
    {R "        redirect: {hostname: x.example}\n        url_rewrite: {hostname: y.example}\n" C, 7,
     "'url_rewrite' cannot be combined with 'redirect', which answers the request itself"},
    {R "        redirect: {hostname: x.example}\n        retry: {attempts: 1}\n" C, 7,
     "'retry' cannot be combined with 'redirect'"},
    {R "        redirect: {hostname: x.example}\n        mirrors: [{cluster: c}]\n" C, 7, "'mirrors' cannot be combined"},
    {"listeners: [{address: \"127.0.0.1:15001\", routes: [{name: r}]}]\n" C, 1,
     "route 'r': 'cluster' is required (or 'backends'; a route with 'redirect' needs neither)"},
    /* url_rewrite */
    {R "        url_rewrite: {}\n" C, 6, "url_rewrite needs 'hostname' or 'path'"},
    {R "        url_rewrite: {hostname: \"-?\"}\n" C, 6, "url_rewrite.hostname '-?' must be a DNS name"},
    {R "        url_rewrite: {hostnam: x}\n" C, 6, "unknown key 'hostnam' in url_rewrite (did you mean 'hostname'?)"},
    /* cluster pool, stream and budget settings */
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", pool_idle_timeout_ms: 0}]\n", 2,
     "cluster 'c': pool_idle_timeout_ms must be 1-86400000, got 0"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", stream_idle_timeout_ms: 86400001}]\n", 2,
     "stream_idle_timeout_ms must be 0-86400000"},
    {L "clusters:\n  - name: c\n    endpoints: \"127.0.0.1:1\"\n    retry_budget:\n      percent: 101\n", 6,
     "cluster 'c': retry_budget.percent must be 0-100, got 101"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", retry_budget: {interval_ms: 0}}]\n", 2,
     "retry_budget.interval_ms must be 1000-3600000, got 0"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", retry_budget: {min_retries: 1}}]\n", 2,
     "unknown key 'min_retries' in retry_budget"},
    {L "clusters: [{name: c, endpoints: \"127.0.0.1:1\", pool_idle_timout_ms: 5}]\n", 2,
     "unknown key 'pool_idle_timout_ms' in cluster (did you mean 'pool_idle_timeout_ms'?)"},
};

static void
test_bad(void **state)
{
    size_t failures = 0;
    for (size_t i = 0; i != sizeof(bad_cases) / sizeof(bad_cases[0]); ++i) {
        const bad_case_t *bc = bad_cases + i;
        rm_config_error_t err;
        memset(&err, 0, sizeof(err));
        rm_config_t *c = load(bc->yaml, &err);
        if (c != NULL) {
            rm_config_unref(c);
            print_error("case %zu accepted:\n%s\n", i, bc->yaml);
            ++failures;
        } else if (strcmp(err.file, "test.yaml") != 0 || err.line != bc->line || strstr(err.message, bc->message) == NULL) {
            print_error("case %zu:\n%s\nwant line %u and \"%s\"\ngot %s:%u: %s\n\n", i, bc->yaml, bc->line, bc->message, err.file,
                        err.line, err.message);
            ++failures;
        }
    }
    assert_int_equal(failures, 0);
}

static void
test_error_format(void **state)
{
    rm_config_error_t err = {"config.yaml", 12, "cluster 'echo': endpoint '10.0.0.1:99999': port must be 1-65535"};
    char buf[1024];
    assert_string_equal(rm_config_error_format(&err, buf, sizeof(buf)),
                        "config.yaml:12: cluster 'echo': endpoint '10.0.0.1:99999': port must be 1-65535");
    err.line = 0;
    snprintf(err.file, sizeof(err.file), "command line");
    snprintf(err.message, sizeof(err.message), "x");
    assert_string_equal(rm_config_error_format(&err, buf, sizeof(buf)), "command line: x");
}

static void
test_load_file_missing(void **state)
{
    rm_config_error_t err;
    assert_null(rm_config_load_file("/nonexistent/agent.yaml", &err));
    assert_string_equal(err.file, "/nonexistent/agent.yaml");
    assert_int_equal(err.line, 0);
    assert_non_null(strstr(err.message, "cannot open"));
}

static void
test_relative_paths(void **state)
{
    rm_config_error_t err;
    char path[512], want[2048];
    /* relative to the file's directory, not to the current directory */
    snprintf(path, sizeof(path), "%s/sub.yaml", tmpdir);
    write_file(tmpdir, "sub.yaml",
               "listeners: [{address: \"127.0.0.1:15001\", tls: {certificate: certs/server.pem, key: certs/server.key},"
               " routes: [{cluster: c}]}]\n" C);
    assert_int_equal(chdir("/"), 0);
    rm_config_t *c = rm_config_load_file(path, &err);
    assert_non_null(c);
    snprintf(want, sizeof(want), "%s/certs/server.pem", tmpdir);
    assert_string_equal(c->listeners[0].tls_cert_file, want);
    rm_config_unref(c);

    /* absolute paths are kept */
    snprintf(want, sizeof(want),
             "listeners: [{address: \"127.0.0.1:15001\", tls: {certificate: %s/certs/server.pem, key: %s/certs/server.key},"
             " routes: [{cluster: c}]}]\n" C,
             tmpdir, tmpdir);
    c = rm_config_load_string(want, strlen(want), "/elsewhere/x.yaml", &err);
    assert_non_null(c);
    snprintf(path, sizeof(path), "%s/certs/server.pem", tmpdir);
    assert_string_equal(c->listeners[0].tls_cert_file, path);
    rm_config_unref(c);
}

static void
test_quick(void **state)
{
    rm_config_error_t err;
    char buf[INET6_ADDRSTRLEN];
    rm_config_quick_t q = {.listen = "127.0.0.1:15001", .upstream = "echo.local:8080"};
    rm_config_t *c = rm_config_from_quick(&q, &err);
    assert_non_null(c);
    assert_string_equal(c->source, "command line");
    assert_int_equal(c->num_listeners, 1);
    assert_string_equal(c->listeners[0].name, "main");
    assert_string_equal(ip_of(&c->listeners[0].addr, buf), "127.0.0.1");
    assert_int_equal(port_of(&c->listeners[0].addr), 15001);
    assert_int_equal(c->listeners[0].num_routes, 1);
    const rm_config_route_t *r = c->listeners[0].routes;
    assert_int_equal(r->num_authorities, 0);
    assert_int_equal(r->path_match, RM_PATH_MATCH_ANY);
    assert_int_equal(r->num_headers, 0);
    assert_int_equal(r->cluster_index, 0);
    assert_int_equal(c->num_clusters, 1);
    assert_string_equal(c->clusters[0].name, "upstream");
    assert_int_equal(c->clusters[0].protocol, RM_UPSTREAM_HTTP1);
    assert_string_equal(c->clusters[0].endpoints[0].host, "echo.local");
    assert_int_equal(c->clusters[0].endpoints[0].port, 8080);
    assert_false(c->clusters[0].endpoints[0].is_ip);
    assert_int_equal(c->clusters[0].connect_timeout_ms, 1000);
    assert_int_equal(port_of(&c->admin_addr), 15000);
    rm_config_unref(c);

    q = (rm_config_quick_t){.listen = "[::1]:15001", .upstream = "[::1]:9", .upstream_protocol = "h2", .workers = 3};
    c = rm_config_from_quick(&q, &err);
    assert_non_null(c);
    assert_int_equal(c->num_workers, 3);
    assert_int_equal(c->clusters[0].protocol, RM_UPSTREAM_H2);
    assert_true(c->clusters[0].endpoints[0].is_ip);
    assert_int_equal(c->listeners[0].addr.addr.ss_family, AF_INET6);
    rm_config_unref(c);

    static const struct {
        rm_config_quick_t q;
        const char *message;
    } bad[] = {
        {{.listen = "127.0.0.1:15001", .upstream = "x:99999"}, "upstream 'x:99999': port must be 1-65535"},
        {{.listen = "localhost:1", .upstream = "x:1"}, "listen address 'localhost:1': address must be an IP literal"},
        {{.listen = "127.0.0.1:1", .upstream = "x:1", .upstream_protocol = "h3"},
         "upstream protocol 'h3' must be h2, http1 or auto"},
        {{.listen = "127.0.0.1:1", .upstream = "x:1", .workers = 65}, "workers must be 1-64, got 65"},
        {{.listen = "127.0.0.1:15000", .upstream = "x:1"}, "collides with the admin address"},
        {{.upstream = "x:1"}, "listen"},
        {{.listen = "127.0.0.1:1"}, "upstream"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        memset(&err, 0, sizeof(err));
        c = rm_config_from_quick(&bad[i].q, &err);
        if (c != NULL)
            fail_msg("quick case %zu accepted", i);
        assert_string_equal(err.file, "command line");
        if (strstr(err.message, bad[i].message) == NULL)
            fail_msg("quick case %zu: want \"%s\", got \"%s\"", i, bad[i].message, err.message);
    }
}

/* A producer other than the YAML parser (like the control-plane translation) builds by hand and validates. */
static void
test_validate_by_hand(void **state)
{
    rm_config_error_t err;
    rm_config_t *c = rm_config_create_defaults();
    c->source = strdup("control plane");
    c->clusters = calloc(1, sizeof(*c->clusters));
    c->num_clusters = 1;
    rm_config_cluster_set_defaults(c->clusters);
    c->clusters[0].name = strdup("c");
    c->clusters[0].endpoints = calloc(1, sizeof(rm_config_endpoint_t));
    c->clusters[0].endpoints[0].host = strdup("x.local");
    c->clusters[0].endpoints[0].port = 80;
    c->clusters[0].num_endpoints = 1;
    c->listeners = calloc(1, sizeof(*c->listeners));
    c->num_listeners = 1;
    struct sockaddr_in *sin = (void *)&c->listeners[0].addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(15001);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->listeners[0].addr.addrlen = sizeof(*sin);
    c->listeners[0].routes = calloc(1, sizeof(rm_config_route_t));
    c->listeners[0].num_routes = 1;
    c->listeners[0].routes[0].cluster_index = 1; /* out of range */
    c->listeners[0].routes[0].line = 7;
    assert_int_equal(rm_config_validate(c, &err), -1);
    assert_string_equal(err.file, "control plane");
    assert_int_equal(err.line, 7);
    assert_non_null(strstr(err.message, "out of range"));
    c->listeners[0].routes[0].cluster_index = 0;
    c->listeners[0].routes[0].num_authorities = 1;
    c->listeners[0].routes[0].authorities = calloc(1, sizeof(char *));
    c->listeners[0].routes[0].authorities[0] = strdup("EXAMPLE.com");
    assert_int_equal(rm_config_validate(c, &err), 0);
    assert_string_equal(c->listeners[0].name, "listener0");
    assert_string_equal(c->listeners[0].routes[0].authorities[0], "example.com");
    rm_config_unref(c);
}

/* A snapshot as the control-plane translation builds it: clusters "api" and "shadow", one route (line 7) to "api". */
static rm_config_t *
by_hand(void)
{
    rm_config_t *c = rm_config_create_defaults();
    c->source = strdup("control plane");
    c->clusters = calloc(2, sizeof(*c->clusters));
    c->num_clusters = 2;
    for (size_t i = 0; i != 2; ++i) {
        rm_config_cluster_set_defaults(c->clusters + i);
        c->clusters[i].name = strdup(i == 0 ? "api" : "shadow");
        c->clusters[i].line = 20 + i;
    }
    c->listeners = calloc(1, sizeof(*c->listeners));
    c->num_listeners = 1;
    struct sockaddr_in *sin = (void *)&c->listeners[0].addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(15001);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->listeners[0].addr.addrlen = sizeof(*sin);
    c->listeners[0].routes = calloc(1, sizeof(rm_config_route_t));
    c->listeners[0].num_routes = 1;
    c->listeners[0].routes[0].cluster_name = strdup("api");
    c->listeners[0].routes[0].line = 7;
    return c;
}

static rm_config_route_t *
route_of(rm_config_t *c)
{
    return c->listeners[0].routes;
}

static rm_config_header_t *
headers(size_t n, ...)
{
    rm_config_header_t *h = calloc(n, sizeof(*h));
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i != n; ++i) {
        h[i].name = strdup(va_arg(ap, const char *));
        h[i].value = strdup(va_arg(ap, const char *));
    }
    va_end(ap);
    return h;
}

/* Validates and expects an error on `line` whose message contains `want`; frees the snapshot. */
static void
expect_invalid_at(rm_config_t *c, unsigned line, const char *want, int src_line)
{
    rm_config_error_t err;
    memset(&err, 0, sizeof(err));
    if (rm_config_validate(c, &err) == 0)
        fail_msg("line %d: accepted, want \"%s\"", src_line, want);
    if (strcmp(err.file, "control plane") != 0 || err.line != line || strstr(err.message, want) == NULL)
        fail_msg("line %d: want %u \"%s\", got %s:%u: %s", src_line, line, want, err.file, err.line, err.message);
    rm_config_unref(c);
}
#define expect_invalid(c, want) expect_invalid_at((c), 7, (want), __LINE__)

static void
expect_valid(rm_config_t *c)
{
    rm_config_error_t err;
    char msg[1024];
    if (rm_config_validate(c, &err) != 0)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
}

/* Every producer gets the same checks, defaults and normalization from rm_config_validate. */
static void
test_validate_policy(void **state)
{
    rm_config_t *c;
    rm_config_route_t *r;

    /* retry: a policy with only attempts gets every default */
    c = by_hand();
    r = route_of(c);
    rm_config_route_retry(c, r)->attempts = 2;
    expect_valid(c);
    assert_int_equal(retry_of(r)->backoff_base_ms, 25);
    assert_int_equal(retry_of(r)->backoff_max_ms, 250);
    assert_int_equal(retry_of(r)->max_replay_bytes, 65536);
    assert_true(r->cluster_index == 0);
    rm_config_unref(c);
    /* ... but once its numbers are set, a zero replay bound is kept */
    c = by_hand();
    r = route_of(c);
    rm_config_route_retry(c, r)->attempts = 1;
    rm_config_route_retry(c, r)->backoff_base_ms = 40;
    expect_valid(c);
    assert_int_equal(retry_of(r)->backoff_max_ms, 400);
    assert_int_equal(retry_of(r)->max_replay_bytes, 0);
    rm_config_unref(c);
    c = by_hand();
    r = route_of(c);
    rm_config_retry_set_defaults(rm_config_route_retry(c, r));
    assert_int_equal(retry_of(r)->attempts, 0);
    assert_int_equal(retry_of(r)->max_replay_bytes, 65536);
    rm_config_route_retry(c, r)->attempts = 3;
    rm_config_route_retry(c, r)->http_statuses = calloc(5, sizeof(uint16_t));
    memcpy(rm_config_route_retry(c, r)->http_statuses, (uint16_t[]){504, 502, 504, 502, 503}, 5 * sizeof(uint16_t));
    rm_config_route_retry(c, r)->num_http_statuses = 5;
    expect_valid(c);
    assert_int_equal(retry_of(r)->num_http_statuses, 3);
    assert_int_equal(retry_of(r)->http_statuses[0], 502);
    assert_int_equal(retry_of(r)->http_statuses[1], 503);
    assert_int_equal(retry_of(r)->http_statuses[2], 504);
    rm_config_unref(c);
    c = by_hand();
    rm_config_route_retry(c, route_of(c))->attempts = 11;
    expect_invalid(c, "retry.attempts must be 0-10, got 11");
    c = by_hand();
    r = route_of(c);
    rm_config_route_retry(c, r)->attempts = 1;
    rm_config_route_retry(c, r)->http_statuses = calloc(1, sizeof(uint16_t));
    rm_config_route_retry(c, r)->http_statuses[0] = 99;
    rm_config_route_retry(c, r)->num_http_statuses = 1;
    expect_invalid(c, "retry.http_statuses must be 100-599, got 99");
    c = by_hand();
    rm_config_route_retry(c, route_of(c))->conditions = 0x8;
    expect_invalid(c, "retry.on has unknown condition bits 0x8");
    c = by_hand();
    rm_config_route_retry(c, route_of(c))->grpc_status_mask = 1u << 17;
    expect_invalid(c, "retry.grpc_statuses: gRPC status codes are 0-16");
    c = by_hand();
    r = route_of(c);
    rm_config_route_retry(c, r)->attempts = 1;
    rm_config_route_retry(c, r)->backoff_base_ms = 100;
    rm_config_route_retry(c, r)->backoff_max_ms = 99;
    expect_invalid(c, "retry.max_backoff_ms must be retry.backoff_ms (100)-600000, got 99");
    c = by_hand();
    rm_config_route_retry(c, route_of(c))->max_replay_bytes = 16 * 1024 * 1024 + 1;
    expect_invalid(c, "retry.max_replay_bytes must be 0-16777216");
    c = by_hand();
    route_of(c)->timeout_ms = 100;
    route_of(c)->per_try_timeout_ms = 101;
    expect_invalid(c, "per_try_timeout_ms (101) must not exceed timeout_ms (100)");

    /* header modifiers: names lower-cased, hop-by-hop and pseudo-headers refused, host only set in requests */
    c = by_hand();
    r = route_of(c);
    rm_config_route_header_mod(c, r, 0)->set = headers(2, "X-Env", "prod", "Host", "api.internal");
    rm_config_route_header_mod(c, r, 0)->num_set = 2;
    rm_config_route_header_mod(c, r, 0)->remove = calloc(1, sizeof(char *));
    rm_config_route_header_mod(c, r, 0)->remove[0] = strdup("X-Debug");
    rm_config_route_header_mod(c, r, 0)->num_remove = 1;
    rm_config_route_header_mod(c, r, 1)->add = headers(1, "Host", "x");
    rm_config_route_header_mod(c, r, 1)->num_add = 1;
    expect_valid(c);
    assert_string_equal(mod_of(r->request_headers)->set[0].name, "x-env");
    assert_string_equal(mod_of(r->request_headers)->set[1].name, "host");
    assert_string_equal(mod_of(r->request_headers)->remove[0], "x-debug");
    assert_string_equal(mod_of(r->response_headers)->add[0].name, "host");
    rm_config_unref(c);
    static const struct {
        int response, op;
        const char *name, *want;
    } bad_headers[] = {
        {0, 0, "Connection", "request_headers.set 'Connection' is a hop-by-hop field"},
        {1, 1, "Keep-Alive", "response_headers.add 'Keep-Alive' is a hop-by-hop field"},
        {0, 2, "proxy-connection", "is a hop-by-hop field"},
        {1, 2, "TE", "is a hop-by-hop field"},
        {0, 1, "Transfer-Encoding", "is a hop-by-hop field"},
        {1, 0, "upgrade", "is a hop-by-hop field"},
        {0, 0, "content-length", "is part of the message framing"},
        {0, 0, ":authority", "is a pseudo-header field, which cannot be modified"},
        {1, 2, ":status", "is a pseudo-header field"},
        {0, 1, "host", "request_headers.add 'host' can only be set"},
        {0, 2, "HOST", "request_headers.remove 'HOST' can only be set"},
        {0, 0, "x y", "is not a valid header name"},
        {0, 0, "", "is not a valid header name"},
    };
    for (size_t i = 0; i != sizeof(bad_headers) / sizeof(bad_headers[0]); ++i) {
        c = by_hand();
        r = route_of(c);
        rm_config_header_mod_t *m = rm_config_route_header_mod(c, r, bad_headers[i].response);
        if (bad_headers[i].op == 2) {
            m->remove = calloc(1, sizeof(char *));
            m->remove[0] = strdup(bad_headers[i].name);
            m->num_remove = 1;
        } else if (bad_headers[i].op == 1) {
            m->add = headers(1, bad_headers[i].name, "v");
            m->num_add = 1;
        } else {
            m->set = headers(1, bad_headers[i].name, "v");
            m->num_set = 1;
        }
        expect_invalid(c, bad_headers[i].want);
    }
    c = by_hand();
    rm_config_route_header_mod(c, route_of(c), 0)->set = headers(2, "X-A", "1", "x-a", "2");
    rm_config_route_header_mod(c, route_of(c), 0)->num_set = 2;
    expect_invalid(c, "request_headers.set 'x-a' is listed twice");
    c = by_hand();
    rm_config_route_header_mod(c, route_of(c), 1)->set = headers(1, "x-a", "1\r\n");
    rm_config_route_header_mod(c, route_of(c), 1)->num_set = 1;
    expect_invalid(c, "response_headers.set 'x-a': the value is missing or contains control characters");

    /* mirrors: names resolved, with a hint when unknown */
    c = by_hand();
    r = route_of(c);
    r->mirrors = calloc(2, sizeof(*r->mirrors));
    r->num_mirrors = 2;
    r->mirrors[0].cluster_name = strdup("shadow");
    r->mirrors[0].per_million = 1000000;
    r->mirrors[1].cluster_index = 0; /* a producer may set the index itself */
    expect_valid(c);
    assert_int_equal(r->mirrors[0].cluster_index, 1);
    assert_int_equal(r->mirrors[1].cluster_index, 0);
    rm_config_unref(c);
    c = by_hand();
    r = route_of(c);
    r->mirrors = calloc(1, sizeof(*r->mirrors));
    r->num_mirrors = 1;
    r->mirrors[0].cluster_name = strdup("shadw");
    expect_invalid(c, "mirrors: cluster 'shadw' is not defined (did you mean 'shadow'?)");
    c = by_hand();
    r = route_of(c);
    r->mirrors = calloc(1, sizeof(*r->mirrors));
    r->num_mirrors = 1;
    r->mirrors[0].cluster_index = 2;
    expect_invalid(c, "mirrors: cluster index 2 is out of range (2 clusters)");
    c = by_hand();
    r = route_of(c);
    r->mirrors = calloc(1, sizeof(*r->mirrors));
    r->num_mirrors = 1;
    r->mirrors[0].per_million = 1000001;
    expect_invalid(c, "mirrors: percent must be 0-100");

    /* fault */
    c = by_hand();
    route_of(c)->fault = calloc(1, sizeof(rm_config_fault_t));
    route_of(c)->fault->abort_grpc_status = -1;
    route_of(c)->fault->abort_per_million = 10;
    expect_invalid(c, "fault: an abort needs abort_http_status or abort_grpc_status");
    c = by_hand();
    route_of(c)->fault = calloc(1, sizeof(rm_config_fault_t)); /* abort_grpc_status left 0: OK */
    expect_invalid(c, "fault.abort_grpc_status must be a gRPC status 1-16 (-1 for none; OK is not an abort), got 0");
    c = by_hand();
    route_of(c)->fault = calloc(1, sizeof(rm_config_fault_t));
    route_of(c)->fault->abort_grpc_status = -1;
    route_of(c)->fault->delay_per_million = 1000001;
    expect_invalid(c, "fault: delay_percent and abort_percent must be 0-100");
    c = by_hand();
    route_of(c)->fault = calloc(1, sizeof(rm_config_fault_t));
    route_of(c)->fault->abort_grpc_status = -1;
    route_of(c)->fault->abort_http_status = 199;
    expect_invalid(c, "fault.abort_http_status must be 200-599, got 199");

    /* redirect: no cluster needed, status defaulted, prefix rewrites only after a prefix match */
    c = by_hand();
    r = route_of(c);
    free(r->cluster_name);
    r->cluster_name = NULL;
    r->redirect = calloc(1, sizeof(*r->redirect));
    r->redirect->scheme = strdup("HTTPS");
    r->redirect->hostname = strdup("New.Example");
    r->redirect->path_type = RM_PATH_REWRITE_PREFIX;
    r->redirect->path = strdup("/n/");
    r->path_match = RM_PATH_MATCH_PREFIX;
    r->path = strdup("/o/");
    expect_valid(c);
    assert_true(r->cluster_index == RM_CONFIG_NO_CLUSTER);
    assert_int_equal(r->redirect->status_code, 302);
    assert_string_equal(r->redirect->scheme, "https");
    assert_string_equal(r->redirect->hostname, "new.example");
    char *json = rm_config_to_json(c);
    assert_non_null(strstr(json, "\"cluster\":null"));
    free(json);
    rm_config_unref(c);
    c = by_hand();
    r = route_of(c);
    r->redirect = calloc(1, sizeof(*r->redirect));
    r->redirect->path_type = RM_PATH_REWRITE_PREFIX;
    r->redirect->path = strdup("/n/");
    r->path_match = RM_PATH_MATCH_EXACT;
    r->path = strdup("/o");
    expect_invalid(c, "redirect.path: type 'prefix' replaces the prefix the route matched");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->redirect->status_code = 304;
    expect_invalid(c, "redirect.status_code must be 301, 302, 303, 307 or 308, got 304");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->redirect->scheme = strdup("ftp");
    expect_invalid(c, "redirect.scheme must be http or https, got 'ftp'");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->redirect->hostname = strdup("bad host");
    expect_invalid(c, "redirect.hostname 'bad host' must be a DNS name");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->redirect->port = 65536;
    expect_invalid(c, "redirect.port must be 1-65535, got 65536");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->redirect->path = strdup("/x");
    expect_invalid(c, "redirect.path: a value is set without a type");
    c = by_hand();
    route_of(c)->redirect = calloc(1, sizeof(rm_config_redirect_t));
    route_of(c)->url_rewrite = calloc(1, sizeof(rm_config_url_rewrite_t));
    route_of(c)->url_rewrite->hostname = strdup("x");
    expect_invalid(c, "give either 'redirect' or 'url_rewrite', not both");

    /* url_rewrite */
    c = by_hand();
    route_of(c)->url_rewrite = calloc(1, sizeof(rm_config_url_rewrite_t));
    expect_invalid(c, "url_rewrite needs a hostname or a path");
    c = by_hand();
    route_of(c)->url_rewrite = calloc(1, sizeof(rm_config_url_rewrite_t));
    route_of(c)->url_rewrite->path_type = RM_PATH_REWRITE_FULL;
    route_of(c)->url_rewrite->path = strdup("/a b");
    expect_invalid(c, "url_rewrite.path: value must not contain");

    /* regular expressions: PCRE2's message and offset, on the route's line */
    c = by_hand();
    route_of(c)->path_match = RM_PATH_MATCH_REGEX;
    route_of(c)->path = strdup("/a(b");
    expect_invalid(c, "match.path.regex '/a(b': missing closing parenthesis at offset 4");
    c = by_hand();
    route_of(c)->path_match = RM_PATH_MATCH_REGEX;
    expect_invalid(c, "match.path.regex must be a non-empty regular expression");
    c = by_hand();
    r = route_of(c);
    r->headers = calloc(1, sizeof(*r->headers));
    r->num_headers = 1;
    r->headers[0].name = strdup("X-Id");
    r->headers[0].value = strdup("a{2,1}");
    r->headers[0].is_regex = 1;
    expect_invalid(c, "match.headers 'x-id': regex 'a{2,1}': numbers out of order in {} quantifier at offset 5");
    c = by_hand();
    r = route_of(c);
    r->headers = calloc(1, sizeof(*r->headers));
    r->num_headers = 1;
    r->headers[0].name = strdup("x-id");
    r->headers[0].is_regex = 1;
    expect_invalid(c, "match.headers 'x-id': regex needs a value (the pattern)");
    c = by_hand();
    route_of(c)->path_match = RM_PATH_MATCH_REGEX;
    route_of(c)->path = calloc(1, 5000);
    memset(route_of(c)->path, 'a', 4999);
    expect_invalid(c, "the pattern is longer than 4096 bytes");

    /* cluster settings */
    c = by_hand();
    c->clusters[1].budget_percent = 101;
    expect_invalid_at(c, 21, "cluster 'shadow': retry_budget.percent must be 0-100, got 101", __LINE__);
    c = by_hand();
    c->clusters[0].pool_idle_timeout_ms = 0;
    expect_invalid_at(c, 20, "cluster 'api': pool_idle_timeout_ms must be 1-86400000, got 0", __LINE__);
    c = by_hand();
    c->clusters[0].min_retry_interval_ms = 0;
    expect_invalid_at(c, 20, "retry_budget.min_retry_interval_ms must be 1000-3600000, got 0", __LINE__);
}

/* Truncations and byte flips of the policy file fail cleanly or parse (regexes included; no leak under ASan). */
static void
test_policy_mutations(void **state)
{
    static const char flips[] = " :[]{}-\n0*(\"";
    size_t len = sizeof(policy_yaml) - 1, parsed = 0;
    char *buf = malloc(len);
    rm_config_error_t err;
    for (size_t i = 0; i <= len; ++i) {
        rm_config_t *c = rm_config_load_string(policy_yaml, i, "m.yaml", &err);
        parsed += c != NULL;
        rm_config_unref(c);
    }
    for (size_t i = 0; i != len; ++i) {
        for (const char *f = flips; *f != '\0'; ++f) {
            memcpy(buf, policy_yaml, len);
            buf[i] = *f;
            rm_config_t *c = rm_config_load_string(buf, len, "m.yaml", &err);
            parsed += c != NULL;
            rm_config_unref(c);
        }
    }
    free(buf);
    print_message("%zu mutated policy documents parsed\n", parsed);
}

/* The example files in examples/ stay loadable. The TLS one is copied next to stand-in certificate files. */
static void
test_examples(void **state)
{
    char dir[512], path[600], msg[1024], *slash;
    rm_config_error_t err;
    rm_config_t *c;

    snprintf(dir, sizeof(dir), "%s", __FILE__); /* .../tests/unit/test_config_bootstrap.c */
    for (int i = 0; i != 3; ++i) {
        assert_non_null(slash = strrchr(dir, '/'));
        *slash = '\0';
    }
    snprintf(path, sizeof(path), "%s/examples/agent.yaml", dir);
    if ((c = rm_config_load_file(path, &err)) == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
    assert_int_equal(c->num_listeners, 2);
    assert_int_equal(c->num_clusters, 4);
    rm_config_unref(c);

    snprintf(path, sizeof(path), "%s/examples/agent-policy.yaml", dir);
    if ((c = rm_config_load_file(path, &err)) == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
    assert_int_equal(retry_of(&c->listeners[0].routes[0])->attempts, 2);
    assert_non_null(c->listeners[0].routes[0]._compiled);
    assert_true(c->listeners[0].routes[3].cluster_index == RM_CONFIG_NO_CLUSTER);
    rm_config_unref(c);

    snprintf(path, sizeof(path), "%s/examples/agent-tls.yaml", dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char yaml[65536];
    size_t len = fread(yaml, 1, sizeof(yaml), fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/agent-tls.yaml", tmpdir);
    if ((c = rm_config_load_string(yaml, len, path, &err)) == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
    assert_non_null(c->listeners[0].tls_cert_file);
    assert_true(c->clusters[0].tls);
    assert_non_null(c->clusters[0].tls_cert_file);
    rm_config_unref(c);
}

/* Truncations and byte flips of a good file must fail cleanly (no crash, no leak under ASan) or parse. */
static void
test_mutations(void **state)
{
    static const char flips[] = " :[]{}-\n0*&\"'#";
    size_t len = sizeof(full_yaml) - 1, parsed = 0;
    char *buf = malloc(len), name[512];
    rm_config_error_t err;
    snprintf(name, sizeof(name), "%s/m.yaml", tmpdir); /* so that the relative certificate paths resolve */
    for (size_t i = 0; i <= len; ++i) {
        rm_config_t *c = rm_config_load_string(full_yaml, i, name, &err);
        parsed += c != NULL;
        rm_config_unref(c);
    }
    for (size_t i = 0; i != len; ++i) {
        for (const char *f = flips; *f != '\0'; ++f) {
            memcpy(buf, full_yaml, len);
            buf[i] = *f;
            rm_config_t *c = rm_config_load_string(buf, len, name, &err);
            parsed += c != NULL;
            rm_config_unref(c);
        }
    }
    free(buf);
    print_message("%zu mutated documents parsed\n", parsed);
}

/* Aliases cannot make a small file expand into a huge tree. */
static void
test_alias_bomb(void **state)
{
    size_t cap = 1 << 20, len = 0;
    char *y = malloc(cap);
    rm_config_error_t err;
    len += snprintf(y + len, cap - len,
                    "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\nlisteners:\n"
                    "  - &l\n    address: 127.0.0.1:15001\n    routes:\n"
                    "      - &r\n        cluster: c\n        match:\n          headers:\n"
                    "            - &h {name: x}\n");
    for (int i = 0; i != 200; ++i)
        len += snprintf(y + len, cap - len, "            - *h\n");
    for (int i = 0; i != 200; ++i)
        len += snprintf(y + len, cap - len, "      - *r\n");
    for (int i = 0; i != 200; ++i)
        len += snprintf(y + len, cap - len, "  - *l\n");
    assert_null(rm_config_load_string(y, len, "bomb.yaml", &err));
    if (strstr(err.message, "document too large") == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    free(y);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_peer_agent),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_load_file_missing),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_quick),
        cmocka_unit_test(test_validate_by_hand),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_validate_policy),
        cmocka_unit_test(test_policy_mutations),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
