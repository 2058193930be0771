/*
 * JSON rendering of a snapshot for the admin API's /config_dump. Mirrors the bootstrap YAML shape
 * so that what an operator reads back can be compared with what they wrote.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/config.h"
#include "config/config_priv.h"

static void
put_str(FILE *fp, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        fputs("null", fp);
        return;
    }
    fputc('"', fp);
    for (; *s != '\0'; ++s) {
        unsigned char c = *s;
        switch (c) {
        case '"':
            fputs("\\\"", fp);
            break;
        case '\\':
            fputs("\\\\", fp);
            break;
        case '\n':
            fputs("\\n", fp);
            break;
        case '\r':
            fputs("\\r", fp);
            break;
        case '\t':
            fputs("\\t", fp);
            break;
        default:
            /* bytes >= 0x80 pass through: producers only hand us UTF-8 (libyaml rejects anything else) */
            if (c < 0x20 || c == 0x7f) {
                fputs("\\u00", fp);
                fputc(hex[c >> 4], fp);
                fputc(hex[c & 15], fp);
            } else {
                fputc(c, fp);
            }
            break;
        }
    }
    fputc('"', fp);
}

static void
put_key(FILE *fp, int *first, const char *key)
{
    if (!*first)
        fputc(',', fp);
    *first = 0;
    put_str(fp, key);
    fputc(':', fp);
}

static void
put_addr(FILE *fp, const rm_config_addr_t *a)
{
    char buf[96];
    if (a->addr.ss_family == 0) {
        fputs("null", fp);
        return;
    }
    put_str(fp, rm_format_sockaddr((const struct sockaddr *)&a->addr, buf, sizeof(buf)));
}

static void
put_u(FILE *fp, int *first, const char *key, unsigned long long v)
{
    put_key(fp, first, key);
    fprintf(fp, "%llu", v);
}

static void
put_strs(FILE *fp, char *const *v, size_t n)
{
    fputc('[', fp);
    for (size_t i = 0; i != n; ++i) {
        if (i != 0)
            fputc(',', fp);
        put_str(fp, v[i]);
    }
    fputc(']', fp);
}

static const char *
cluster_name(const rm_config_t *c, size_t index, const char *fallback)
{
    return index < c->num_clusters ? c->clusters[index].name : fallback;
}

static void
put_percent(FILE *fp, int *first, const char *key, uint32_t per_million)
{
    char buf[32];
    put_key(fp, first, key);
    fputs(rm_config__format_percent(per_million, buf, sizeof(buf)), fp);
}

static void
put_grpc_status(FILE *fp, int code)
{
    if (code >= 0 && code < RM_GRPC_NUM_STATUSES)
        put_str(fp, rm_grpc_status_names[code]);
    else
        fputs("null", fp);
}

static void
put_retry(FILE *fp, const rm_config_retry_t *rt)
{
    int first = 1;
    if (rt == NULL || rt->attempts == 0) {
        fputs("null", fp);
        return;
    }
    fputc('{', fp);
    put_u(fp, &first, "attempts", rt->attempts);
    put_u(fp, &first, "backoff_ms", rt->backoff_base_ms);
    put_u(fp, &first, "max_backoff_ms", rt->backoff_max_ms);
    put_key(fp, &first, "on");
    fputc('[', fp);
    int ofirst = 1;
    for (const rm_config_flag_name_t *f = rm_config__retry_conditions; f->name != NULL; ++f) {
        if ((rt->conditions & f->bit) == 0)
            continue;
        if (!ofirst)
            fputc(',', fp);
        ofirst = 0;
        put_str(fp, f->name);
    }
    fputc(']', fp);
    put_key(fp, &first, "http_statuses");
    fputc('[', fp);
    for (size_t i = 0; i != rt->num_http_statuses; ++i)
        fprintf(fp, i != 0 ? ",%u" : "%u", rt->http_statuses[i]);
    fputc(']', fp);
    put_key(fp, &first, "grpc_statuses");
    fputc('[', fp);
    int gfirst = 1;
    for (int code = 0; code != RM_GRPC_NUM_STATUSES; ++code) {
        if ((rt->grpc_status_mask & (1u << code)) == 0)
            continue;
        if (!gfirst)
            fputc(',', fp);
        gfirst = 0;
        put_grpc_status(fp, code);
    }
    fputc(']', fp);
    put_u(fp, &first, "max_replay_bytes", rt->max_replay_bytes);
    fputc('}', fp);
}

static void
put_header_list(FILE *fp, const rm_config_header_t *h, size_t n)
{
    fputc('[', fp);
    for (size_t i = 0; i != n; ++i) {
        fputs(i != 0 ? ",{\"name\":" : "{\"name\":", fp);
        put_str(fp, h[i].name);
        fputs(",\"value\":", fp);
        put_str(fp, h[i].value);
        fputc('}', fp);
    }
    fputc(']', fp);
}

static void
put_header_mod(FILE *fp, const rm_config_header_mod_t *m)
{
    static const rm_config_header_mod_t none;
    if (m == NULL) /* none: empty lists */
        m = &none;
    fputs("{\"set\":", fp);
    put_header_list(fp, m->set, m->num_set);
    fputs(",\"add\":", fp);
    put_header_list(fp, m->add, m->num_add);
    fputs(",\"remove\":", fp);
    put_strs(fp, m->remove, m->num_remove);
    fputc('}', fp);
}

static void
put_rewrite_path(FILE *fp, int *first, rm_path_rewrite_t type, const char *path)
{
    put_key(fp, first, "path");
    if (type == RM_PATH_REWRITE_NONE) {
        fputs("null", fp);
        return;
    }
    fprintf(fp, "{\"type\":\"%s\",\"value\":", type == RM_PATH_REWRITE_PREFIX ? "prefix" : "full");
    put_str(fp, path);
    fputc('}', fp);
}

static void
put_route_policy(FILE *fp, int *first, const rm_config_t *c, const rm_config_route_t *r)
{
    put_u(fp, first, "per_try_timeout_ms", r->per_try_timeout_ms);
    put_key(fp, first, "retry");
    put_retry(fp, r->retry);
    put_key(fp, first, "request_headers");
    put_header_mod(fp, r->request_headers);
    put_key(fp, first, "response_headers");
    put_header_mod(fp, r->response_headers);

    put_key(fp, first, "mirrors");
    fputc('[', fp);
    for (size_t i = 0; i != r->num_mirrors; ++i) {
        const rm_config_mirror_t *m = r->mirrors + i;
        int mfirst = 1;
        fputs(i != 0 ? ",{" : "{", fp);
        put_key(fp, &mfirst, "cluster");
        put_str(fp, cluster_name(c, m->cluster_index, m->cluster_name));
        put_percent(fp, &mfirst, "percent", m->per_million);
        fputc('}', fp);
    }
    fputc(']', fp);

    put_key(fp, first, "fault");
    if (r->fault != NULL) {
        const rm_config_fault_t *f = r->fault;
        int ffirst = 1;
        fputc('{', fp);
        put_u(fp, &ffirst, "delay_ms", f->delay_ms);
        put_percent(fp, &ffirst, "delay_percent", f->delay_per_million);
        put_key(fp, &ffirst, "abort_http_status");
        if (f->abort_http_status != 0)
            fprintf(fp, "%u", f->abort_http_status);
        else
            fputs("null", fp);
        put_key(fp, &ffirst, "abort_grpc_status");
        put_grpc_status(fp, f->abort_grpc_status);
        put_percent(fp, &ffirst, "abort_percent", f->abort_per_million);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }

    put_key(fp, first, "redirect");
    if (r->redirect != NULL) {
        const rm_config_redirect_t *rd = r->redirect;
        int rfirst = 1;
        fputc('{', fp);
        put_key(fp, &rfirst, "scheme");
        put_str(fp, rd->scheme);
        put_key(fp, &rfirst, "hostname");
        put_str(fp, rd->hostname);
        put_key(fp, &rfirst, "port");
        if (rd->port != 0)
            fprintf(fp, "%d", rd->port);
        else
            fputs("null", fp);
        put_u(fp, &rfirst, "status_code", rd->status_code);
        put_rewrite_path(fp, &rfirst, rd->path_type, rd->path);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }

    put_key(fp, first, "url_rewrite");
    if (r->url_rewrite != NULL) {
        int wfirst = 1;
        fputc('{', fp);
        put_key(fp, &wfirst, "hostname");
        put_str(fp, r->url_rewrite->hostname);
        put_rewrite_path(fp, &wfirst, r->url_rewrite->path_type, r->url_rewrite->path);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
}

static void
put_rate(FILE *fp, int *first, const char *key, uint32_t rps, uint32_t burst)
{
    put_key(fp, first, key);
    if (rps == 0)
        fputs("null", fp);
    else
        fprintf(fp, "{\"requests_per_second\":%u,\"burst\":%u}", rps, burst);
}

static void
put_rate_limit(FILE *fp, const rm_config_rate_limit_t *rl)
{
    int first = 1;
    if (rl == NULL) {
        fputs("null", fp);
        return;
    }
    fputc('{', fp);
    put_key(fp, &first, "name");
    put_str(fp, rl->name);
    put_rate(fp, &first, "total", rl->total_rps, rl->total_burst);
    put_rate(fp, &first, "per_client", rl->per_client_rps, rl->per_client_burst);
    put_key(fp, &first, "client_key");
    fputs("{\"type\":", fp);
    put_str(fp, (unsigned)rl->client_key < RM_CONFIG_NUM_CLIENT_KEYS ? rm_config__client_key_names[rl->client_key] : "unknown");
    fputs(",\"header\":", fp);
    put_str(fp, rl->client_header);
    fputc('}', fp);
    put_key(fp, &first, "overrides");
    fputc('[', fp);
    for (size_t i = 0; i != rl->num_overrides; ++i) {
        const rm_config_rate_override_t *o = rl->overrides + i;
        fprintf(fp, "%s{\"requests_per_second\":%u,\"burst\":%u,\"clients\":", i != 0 ? "," : "", o->requests_per_second, o->burst);
        put_strs(fp, o->clients, o->num_clients);
        fputc('}', fp);
    }
    fputc(']', fp);
    put_u(fp, &first, "max_clients", rl->max_clients);
    fputc('}', fp);
}

/* A list key of an authorization entry, only when the list is not empty. */
static void
put_authz_list(FILE *fp, int *first, const char *key, char *const *v, size_t n)
{
    if (n == 0)
        return;
    put_key(fp, first, key);
    put_strs(fp, v, n);
}

/* In the bootstrap's shape: [{name, action, rules: [{from: [...], to: [...]}]}]. */
static void
put_authz(FILE *fp, const rm_config_authz_t *a)
{
    if (a == NULL) {
        fputs("null", fp);
        return;
    }
    fputc('[', fp);
    for (size_t i = 0; i != a->num_policies; ++i) {
        const rm_config_authz_policy_t *pol = &a->policies[i];
        int first = 1;
        fputs(i != 0 ? ",{" : "{", fp);
        put_key(fp, &first, "name");
        put_str(fp, pol->name);
        put_key(fp, &first, "action");
        put_str(fp, (unsigned)pol->action < 3 ? rm_config__authz_action_names[pol->action] : "unknown");
        put_key(fp, &first, "rules");
        fputc('[', fp);
        for (size_t j = 0; j != pol->num_rules; ++j) {
            const rm_config_authz_rule_t *r = &pol->rules[j];
            fputs(j != 0 ? ",{\"from\":[" : "{\"from\":[", fp);
            for (size_t k = 0; k != r->num_from; ++k) {
                int ffirst = 1;
                fputs(k != 0 ? ",{" : "{", fp);
                put_authz_list(fp, &ffirst, "identities", r->from[k].identities, r->from[k].num_identities);
                put_authz_list(fp, &ffirst, "namespaces", r->from[k].namespaces, r->from[k].num_namespaces);
                fputc('}', fp);
            }
            fputs("],\"to\":[", fp);
            for (size_t k = 0; k != r->num_to; ++k) {
                int tfirst = 1;
                fputs(k != 0 ? ",{" : "{", fp);
                put_authz_list(fp, &tfirst, "methods", r->to[k].methods, r->to[k].num_methods);
                put_authz_list(fp, &tfirst, "paths", r->to[k].paths, r->to[k].num_paths);
                put_authz_list(fp, &tfirst, "grpc_methods", r->to[k].grpc_methods, r->to[k].num_grpc_methods);
                fputc('}', fp);
            }
            fputs("]}", fp);
        }
        fputs("]}", fp);
    }
    fputc(']', fp);
}

static void
put_route(FILE *fp, const rm_config_t *c, const rm_config_route_t *r)
{
    int first = 1, mfirst = 1;
    put_key(fp, &first, "name");
    put_str(fp, r->name);
    put_key(fp, &first, "match");
    fputc('{', fp);
    put_key(fp, &mfirst, "authority");
    put_strs(fp, r->authorities, r->num_authorities);
    put_key(fp, &mfirst, "path");
    if (r->path_match == RM_PATH_MATCH_ANY) {
        fputs("null", fp);
    } else {
        fprintf(fp, "{\"%s\":",
                r->path_match == RM_PATH_MATCH_PREFIX  ? "prefix"
                : r->path_match == RM_PATH_MATCH_REGEX ? "regex"
                                                       : "exact");
        put_str(fp, r->path);
        fputc('}', fp);
    }
    put_key(fp, &mfirst, "headers");
    fputc('[', fp);
    for (size_t i = 0; i != r->num_headers; ++i) {
        fputs(i != 0 ? ",{\"name\":" : "{\"name\":", fp);
        put_str(fp, r->headers[i].name);
        fputs(",\"value\":", fp);
        put_str(fp, r->headers[i].value);
        fputs(r->headers[i].is_regex ? ",\"regex\":true}" : ",\"regex\":false}", fp);
    }
    fputs("]", fp);
    put_key(fp, &mfirst, "method");
    if (r->method != NULL)
        put_str(fp, r->method);
    else
        fputs("null", fp);
    fputs("}", fp);
    if (r->num_backends != 0) {
        put_key(fp, &first, "backends");
        fputc('[', fp);
        for (size_t i = 0; i != r->num_backends; ++i) {
            const rm_config_backend_t *b = r->backends + i;
            fputs(i != 0 ? ",{\"cluster\":" : "{\"cluster\":", fp);
            put_str(fp, cluster_name(c, b->cluster_index, b->cluster_name));
            fprintf(fp, ",\"weight\":%u}", b->weight);
        }
        fputc(']', fp);
    } else {
        put_key(fp, &first, "cluster");
        /* null for a redirect without a cluster (RM_CONFIG_NO_CLUSTER) */
        put_str(fp, cluster_name(c, r->cluster_index, r->cluster_name));
    }
    put_u(fp, &first, "timeout_ms", r->timeout_ms);
    put_route_policy(fp, &first, c, r);
    put_key(fp, &first, "session_persistence");
    if (r->session_persistence == RM_SESSION_NONE) {
        fputs("null", fp);
    } else {
        fprintf(fp, "{\"type\":\"%s\",\"name\":", r->session_persistence == RM_SESSION_COOKIE ? "cookie" : "header");
        put_str(fp, r->session_name);
        fputc('}', fp);
    }
    put_key(fp, &first, "rate_limit");
    put_rate_limit(fp, r->rate_limit);
    put_key(fp, &first, "authorization");
    put_authz(fp, r->authz);
    put_u(fp, &first, "line", r->line);
}

static void
put_listener(FILE *fp, const rm_config_t *c, const rm_config_listener_t *l)
{
    int first = 1;
    put_key(fp, &first, "name");
    put_str(fp, l->name);
    put_key(fp, &first, "address");
    put_addr(fp, &l->addr);
    put_key(fp, &first, "tls");
    if (l->tls_cert_file != NULL || l->tls_key_file != NULL) {
        fputs("{\"certificate\":", fp);
        put_str(fp, l->tls_cert_file);
        fputs(",\"key\":", fp);
        put_str(fp, l->tls_key_file);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    put_key(fp, &first, "routes");
    fputc('[', fp);
    for (size_t i = 0; i != l->num_routes; ++i) {
        fputs(i != 0 ? ",{" : "{", fp);
        put_route(fp, c, l->routes + i);
        fputc('}', fp);
    }
    fputc(']', fp);
    if (l->direction != RM_DIRECTION_NONE) {
        put_key(fp, &first, "direction");
        put_str(fp, rm_config_direction_name(l->direction));
        put_key(fp, &first, "opaque_ports");
        fputc('[', fp);
        for (size_t i = 0; i != l->num_opaque_ports; ++i)
            fprintf(fp, i != 0 ? ",%u" : "%u", l->opaque_ports[i]);
        fputc(']', fp);
    }
    if (l->opaque) {
        put_key(fp, &first, "protocol");
        put_str(fp, "tcp");
        put_key(fp, &first, "cluster");
        put_str(fp, l->tcp_cluster_name);
    }
    if (l->peer_agent) {
        put_key(fp, &first, "peer");
        put_str(fp, "agent");
    }
    if (l->h2_only) {
        put_key(fp, &first, "protocol");
        put_str(fp, "h2");
    }
    if (l->max_connections != 0)
        put_u(fp, &first, "max_connections", l->max_connections);
    put_u(fp, &first, "line", l->line);
}

static void
put_cluster(FILE *fp, const rm_config_cluster_t *cl)
{
    static const char *const protocols[] = {"http1", "h2", "auto", "tcp"};
    int first = 1;
    char buf[96];
    put_key(fp, &first, "name");
    put_str(fp, cl->name);
    put_key(fp, &first, "protocol");
    put_str(fp, (unsigned)cl->protocol < 4 ? protocols[cl->protocol] : "unknown");
    if (cl->peer_agent) {
        put_key(fp, &first, "peer");
        put_str(fp, "agent");
    }
    if (cl->meshed) {
        put_key(fp, &first, "meshed");
        fputs("true", fp);
    }
    if (cl->agent_hop) {
        /* HTTP/2 with the markers to the endpoints' agents, whatever `protocol` says (docs/transparent.md) */
        put_key(fp, &first, "agent_hop");
        fputs("true", fp);
    }
    if (cl->peer_identity != NULL) {
        /* the SPIFFE ID the endpoints' agents must present on the mesh mTLS hop (docs/mesh-tls.md) */
        put_key(fp, &first, "mesh_identity");
        put_str(fp, cl->peer_identity);
    }
    if (cl->num_addresses != 0) {
        put_key(fp, &first, "addresses");
        fputc('[', fp);
        for (size_t i = 0; i != cl->num_addresses; ++i) {
            if (i != 0)
                fputc(',', fp);
            put_addr(fp, cl->addresses + i);
        }
        fputc(']', fp);
    }
    put_key(fp, &first, "endpoints");
    fputc('[', fp);
    for (size_t i = 0; i != cl->num_endpoints; ++i) {
        const rm_config_endpoint_t *ep = cl->endpoints + i;
        if (i != 0)
            fputc(',', fp);
        /* written back as it would be in YAML: IPv6 literals need brackets, a weight other than 1 needs the long form */
        snprintf(buf, sizeof(buf), strchr(ep->host, ':') != NULL ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
        if (ep->weight == 1 && ep->peer_identity == NULL) {
            put_str(fp, buf);
        } else {
            fputs("{\"address\":", fp);
            put_str(fp, buf);
            if (ep->weight != 1)
                fprintf(fp, ",\"weight\":%u", ep->weight);
            if (ep->peer_identity != NULL) {
                fputs(",\"mesh_identity\":", fp);
                put_str(fp, ep->peer_identity);
            }
            fputc('}', fp);
        }
    }
    fputc(']', fp);
    put_u(fp, &first, "connect_timeout_ms", cl->connect_timeout_ms);
    put_u(fp, &first, "h2_connections", cl->h2_connections);
    put_u(fp, &first, "h1_max_idle", cl->h1_max_idle);
    put_key(fp, &first, "tls");
    if (cl->tls) {
        fputs("{\"ca\":", fp);
        put_str(fp, cl->tls_ca_file);
        fputs(",\"server_name\":", fp);
        put_str(fp, cl->tls_server_name);
        fputs(",\"certificate\":", fp);
        put_str(fp, cl->tls_cert_file);
        fputs(",\"key\":", fp);
        put_str(fp, cl->tls_key_file);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    put_key(fp, &first, "dns");
    fprintf(fp, "{\"min_refresh_ms\":%u,\"max_refresh_ms\":%u}", cl->dns_min_refresh_ms, cl->dns_max_refresh_ms);
    put_u(fp, &first, "pool_idle_timeout_ms", cl->pool_idle_timeout_ms);
    put_u(fp, &first, "stream_idle_timeout_ms", cl->stream_idle_timeout_ms);
    put_key(fp, &first, "retry_budget");
    int bfirst = 1;
    fputc('{', fp);
    for (size_t i = 0; i != rm_config__num_budget_ranges; ++i)
        put_u(fp, &bfirst, rm_config__budget_ranges[i].name,
              *(const uint32_t *)((const char *)cl + rm_config__budget_ranges[i].offset));
    fputc('}', fp);

    /* the balancer in force: an unset type is shown resolved by protocol */
    rm_lb_type_t lb = rm_config__effective_lb(cl);
    put_key(fp, &first, "load_balancer");
    fputs("{\"type\":", fp);
    put_str(fp, (unsigned)lb < RM_CONFIG_NUM_LB_TYPES ? rm_config__lb_type_names[lb] : "unknown");
    if (lb == RM_LB_RING_HASH)
        fprintf(fp, ",\"ring_min_size\":%u}", cl->ring_min_size);
    else
        fputs(",\"ring_min_size\":null}", fp);
    put_key(fp, &first, "circuit_breakers");
    int cfirst = 1;
    fputc('{', fp);
    for (size_t i = 0; i != rm_config__num_breaker_ranges; ++i)
        put_u(fp, &cfirst, rm_config__breaker_ranges[i].name,
              *(const uint32_t *)((const char *)&cl->breakers + rm_config__breaker_ranges[i].offset));
    fputc('}', fp);
    put_key(fp, &first, "outlier_detection");
    if (cl->outlier.enabled) {
        int ofirst = 1;
        fputc('{', fp);
        for (size_t i = 0; i != rm_config__num_outlier_ranges; ++i)
            put_u(fp, &ofirst, rm_config__outlier_ranges[i].name,
                  *(const uint32_t *)((const char *)&cl->outlier + rm_config__outlier_ranges[i].offset));
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    put_key(fp, &first, "health_check");
    if (cl->health_check.enabled) {
        const rm_config_health_check_t *h = &cl->health_check;
        int hfirst = 1;
        fputc('{', fp);
        if (h->grpc) {
            put_key(fp, &hfirst, "grpc");
            fputs("{\"service\":", fp);
            put_str(fp, h->grpc_service != NULL ? h->grpc_service : "");
        } else {
            put_key(fp, &hfirst, "http");
            fputs("{\"path\":", fp);
            put_str(fp, h->http_path);
        }
        fputc('}', fp);
        for (size_t i = 0; i != rm_config__num_health_ranges; ++i)
            put_u(fp, &hfirst, rm_config__health_ranges[i].name,
                  *(const uint32_t *)((const char *)h + rm_config__health_ranges[i].offset));
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    put_key(fp, &first, "rate_limit");
    put_rate_limit(fp, cl->rate_limit);
    put_key(fp, &first, "authorization");
    put_authz(fp, cl->authz);
    put_u(fp, &first, "line", cl->line);
}

/* The `telemetry` block: a disabled part is null, as it is absent from the bootstrap file. */
static void
put_telemetry(FILE *fp, const rm_config_telemetry_t *tm)
{
    const rm_config_tracing_t *t = &tm->tracing;
    const rm_config_access_log_t *a = &tm->access_log;
    int first = 1;
    fputc('{', fp);
    put_key(fp, &first, "tracing");
    if (t->enabled) {
        int tfirst = 1;
        fputc('{', fp);
        put_key(fp, &tfirst, "otlp");
        fputs("{\"endpoint\":", fp);
        put_str(fp, t->otlp_endpoint);
        fputs(",\"protocol\":", fp);
        put_str(fp, t->protocol == RM_OTLP_HTTP ? "http" : "grpc");
        fputc('}', fp);
        put_key(fp, &tfirst, "sampling_percent");
        fprintf(fp, "%.6g", t->sampling_percent);
        put_key(fp, &tfirst, "propagation");
        fprintf(fp, "[%s%s%s]", t->propagate_w3c ? "\"w3c\"" : "", t->propagate_w3c && t->propagate_b3 ? "," : "",
                t->propagate_b3 ? "\"b3\"" : "");
        put_key(fp, &tfirst, "service_name");
        put_str(fp, t->service_name != NULL ? t->service_name : "remora-agent");
        put_u(fp, &tfirst, "batch_size", t->batch_size);
        put_u(fp, &tfirst, "batch_timeout_ms", t->batch_timeout_ms);
        put_u(fp, &tfirst, "queue_size", t->queue_size);
        put_u(fp, &tfirst, "line", t->line);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    put_key(fp, &first, "access_log");
    if (a->enabled) {
        int afirst = 1;
        fputc('{', fp);
        put_key(fp, &afirst, "path");
        put_str(fp, a->path);
        put_u(fp, &afirst, "buffer_bytes", a->buffer_bytes);
        put_u(fp, &afirst, "line", a->line);
        fputc('}', fp);
    } else {
        fputs("null", fp);
    }
    fputc('}', fp);
}

char *
rm_config_to_json(const rm_config_t *c)
{
    char *out = NULL;
    size_t outlen = 0;
    FILE *fp;
    int first = 1;

    if ((fp = open_memstream(&out, &outlen)) == NULL)
        rm_fatal("open_memstream failed");
    fputc('{', fp);
    put_key(fp, &first, "source");
    put_str(fp, c->source);
    put_u(fp, &first, "generation", c->generation);
    put_key(fp, &first, "version");
    put_str(fp, c->version);
    put_u(fp, &first, "workers", c->num_workers);
    put_key(fp, &first, "admin");
    put_addr(fp, &c->admin_addr);
    put_key(fp, &first, "health");
    put_addr(fp, &c->health_addr);
    put_u(fp, &first, "drain_timeout_ms", c->drain_timeout_ms);
    put_key(fp, &first, "dns");
    fputs("{\"servers\":", fp);
    put_strs(fp, c->dns_servers, c->num_dns_servers);
    fputc('}', fp);

    int lfirst = 1;
    put_key(fp, &first, "limits");
    fputc('{', fp);
    put_u(fp, &lfirst, "max_headers", c->limits.max_headers);
    put_u(fp, &lfirst, "max_header_bytes", c->limits.max_header_bytes);
    put_u(fp, &lfirst, "h2_max_concurrent_streams", c->limits.h2_max_concurrent_streams);
    put_u(fp, &lfirst, "stream_window_bytes", c->limits.stream_window_bytes);
    put_u(fp, &lfirst, "connection_window_bytes", c->limits.connection_window_bytes);
    put_u(fp, &lfirst, "idle_timeout_ms", c->limits.idle_timeout_ms);
    put_u(fp, &lfirst, "detect_timeout_ms", c->limits.detect_timeout_ms);
    put_u(fp, &lfirst, "mesh_sniff_timeout_ms", c->limits.mesh_sniff_timeout_ms);
    put_u(fp, &lfirst, "max_series_per_family", c->limits.max_series_per_family);
    put_u(fp, &lfirst, "h2_premature_reset_min_streams", c->limits.h2_premature_reset_min_streams);
    put_u(fp, &lfirst, "h2_premature_reset_window_ms", c->limits.h2_premature_reset_window_ms);
    put_u(fp, &lfirst, "h2_max_consecutive_empty_frames", c->limits.h2_max_consecutive_empty_frames);
    put_u(fp, &lfirst, "h2_max_priority_frames_per_stream", c->limits.h2_max_priority_frames_per_stream);
    put_u(fp, &lfirst, "h2_max_window_update_frames_per_data_frame_sent",
          c->limits.h2_max_window_update_frames_per_data_frame_sent);
    put_u(fp, &lfirst, "h2_max_outbound_control_frames", c->limits.h2_max_outbound_control_frames);
    put_u(fp, &lfirst, "h2_max_outbound_frames", c->limits.h2_max_outbound_frames);
    put_u(fp, &lfirst, "max_request_uri_bytes", c->limits.max_request_uri_bytes);
    put_u(fp, &lfirst, "request_headers_timeout_ms", c->limits.request_headers_timeout_ms);
    put_u(fp, &lfirst, "max_request_body_bytes", c->limits.max_request_body_bytes);
    fputc('}', fp);

    put_key(fp, &first, "listeners");
    fputc('[', fp);
    for (size_t i = 0; i != c->num_listeners; ++i) {
        fputs(i != 0 ? ",{" : "{", fp);
        put_listener(fp, c, c->listeners + i);
        fputc('}', fp);
    }
    fputc(']', fp);

    put_key(fp, &first, "clusters");
    fputc('[', fp);
    for (size_t i = 0; i != c->num_clusters; ++i) {
        fputs(i != 0 ? ",{" : "{", fp);
        put_cluster(fp, c->clusters + i);
        fputc('}', fp);
    }
    fputc(']', fp);
    put_key(fp, &first, "telemetry");
    put_telemetry(fp, &c->telemetry);
    put_key(fp, &first, "mesh_tls");
    fputs("{\"mode\":", fp);
    put_str(fp, rm_config_mesh_tls_mode_name(c->mesh_tls.mode));
    if (c->mesh_tls.identity_dir != NULL) {
        fputs(",\"identity_dir\":", fp);
        put_str(fp, c->mesh_tls.identity_dir);
    }
    fputc('}', fp);
    fputs("}\n", fp);
    if (fclose(fp) != 0 || out == NULL)
        rm_fatal("rendering the configuration as JSON failed");
    return out;
}
