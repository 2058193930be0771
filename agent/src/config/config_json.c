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
        fprintf(fp, "{\"%s\":", r->path_match == RM_PATH_MATCH_PREFIX ? "prefix" : "exact");
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
        fputc('}', fp);
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
            put_str(fp, b->cluster_index < c->num_clusters ? c->clusters[b->cluster_index].name : b->cluster_name);
            fprintf(fp, ",\"weight\":%u}", b->weight);
        }
        fputc(']', fp);
    } else {
        put_key(fp, &first, "cluster");
        put_str(fp, r->cluster_index < c->num_clusters ? c->clusters[r->cluster_index].name : r->cluster_name);
    }
    put_u(fp, &first, "timeout_ms", r->timeout_ms);
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
    put_u(fp, &first, "line", l->line);
}

static void
put_cluster(FILE *fp, const rm_config_cluster_t *cl)
{
    static const char *const protocols[] = {"http1", "h2", "auto"};
    int first = 1;
    char buf[96];
    put_key(fp, &first, "name");
    put_str(fp, cl->name);
    put_key(fp, &first, "protocol");
    put_str(fp, (unsigned)cl->protocol < 3 ? protocols[cl->protocol] : "unknown");
    put_key(fp, &first, "endpoints");
    fputc('[', fp);
    for (size_t i = 0; i != cl->num_endpoints; ++i) {
        const rm_config_endpoint_t *ep = cl->endpoints + i;
        if (i != 0)
            fputc(',', fp);
        /* written back as it would be in YAML: IPv6 literals need brackets */
        snprintf(buf, sizeof(buf), strchr(ep->host, ':') != NULL ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
        put_str(fp, buf);
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
    put_u(fp, &first, "line", cl->line);
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
    fputs("]}\n", fp);
    if (fclose(fp) != 0 || out == NULL)
        rm_fatal("rendering the configuration as JSON failed");
    return out;
}
