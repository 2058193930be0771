#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/strutil.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "render.h"

static rm_node_t *
node_new(rm_node_type_t type)
{
    rm_node_t *n = rm_calloc(1, sizeof(*n));
    n->type = type;
    return n;
}

rm_node_t *
rm_node_map(void)
{
    return node_new(RM_NODE_MAP);
}

rm_node_t *
rm_node_list(void)
{
    return node_new(RM_NODE_LIST);
}

rm_node_t *
rm_node_string(const char *s)
{
    rm_node_t *n = node_new(RM_NODE_STRING);
    n->str = rm_strdup(s);
    return n;
}

rm_node_t *
rm_node_number(int64_t v)
{
    rm_node_t *n = node_new(RM_NODE_NUMBER);
    n->num = v;
    return n;
}

rm_node_t *
rm_node_decimal(double v)
{
    char buf[64];
    if (v == (double)(int64_t)v)
        return rm_node_number((int64_t)v);
    rm_node_t *n = node_new(RM_NODE_NUMBER);
    snprintf(buf, sizeof(buf), "%.4f", v);
    /* at most 4 decimals, without trailing zeros */
    for (size_t len = strlen(buf); len > 0 && buf[len - 1] == '0'; --len)
        buf[len - 1] = '\0';
    n->str = rm_strdup(buf);
    return n;
}

rm_node_t *
rm_node_bool(int v)
{
    rm_node_t *n = node_new(RM_NODE_BOOL);
    n->num = v != 0;
    return n;
}

rm_node_t *
rm_node_add(rm_node_t *parent, const char *key, rm_node_t *child)
{
    if (parent->type == RM_NODE_MAP)
        child->key = rm_strdup(key);
    parent->items = rm_realloc(parent->items, (parent->size + 1) * sizeof(parent->items[0]));
    parent->items[parent->size++] = child;
    return child;
}

void
rm_node_free(rm_node_t *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i != n->size; ++i)
        rm_node_free(n->items[i]);
    free(n->items);
    free(n->key);
    free(n->str);
    free(n);
}

const char *
rm_render_duration(uint64_t ms, char *buf, size_t bufsz)
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
    size_t off = 0;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, bufsz, "0s");
        return buf;
    }
    for (size_t i = 0; i != sizeof(units) / sizeof(units[0]) && off < bufsz; ++i) {
        uint64_t v = ms / units[i].ms;
        if (v == 0)
            continue;
        ms -= v * units[i].ms;
        off += snprintf(buf + off, bufsz - off, "%" PRIu64 "%s", v, units[i].unit);
    }
    return buf;
}

/* ------------------------------------------------------------------------------------- resources */

static void
add_str(rm_node_t *map, const char *key, const char *s)
{
    rm_node_add(map, key, rm_node_string(s));
}

static void
render_string_map(rm_node_t *meta, const char *key, size_t n, Remora__V1__ObjectMeta__LabelsEntry **entries)
{
    if (n == 0)
        return;
    rm_node_t *m = rm_node_add(meta, key, rm_node_map());
    for (size_t i = 0; i != n; ++i)
        add_str(m, entries[i]->key, entries[i]->value);
}

static rm_node_t *
render_meta(const Remora__V1__ObjectMeta *meta)
{
    rm_node_t *m = rm_node_map();
    add_str(m, "name", meta->name);
    add_str(m, "namespace", meta->namespace_);
    render_string_map(m, "labels", meta->n_labels, meta->labels);
    render_string_map(m, "annotations", meta->n_annotations, (Remora__V1__ObjectMeta__LabelsEntry **)meta->annotations);
    return m;
}

static rm_node_t *
render_service_spec(const Remora__V1__ServiceSpec *spec)
{
    rm_node_t *s = rm_node_map();
    const char *proto = "unspecified";
    switch (spec->protocol) {
    case REMORA__V1__PROTOCOL__PROTOCOL_GRPC:
        proto = "grpc";
        break;
    case REMORA__V1__PROTOCOL__PROTOCOL_HTTP2:
        proto = "http2";
        break;
    case REMORA__V1__PROTOCOL__PROTOCOL_HTTP1:
        proto = "http1";
        break;
    case REMORA__V1__PROTOCOL__PROTOCOL_TCP:
        proto = "tcp";
        break;
    default:
        break;
    }
    add_str(s, "protocol", proto);
    if (!spec->meshed)
        rm_node_add(s, "meshed", rm_node_bool(0));
    if (spec->service_account != NULL && spec->service_account[0] != '\0')
        add_str(s, "serviceAccount", spec->service_account);
    if (spec->n_addresses != 0) {
        rm_node_t *addrs = rm_node_add(s, "addresses", rm_node_list());
        for (size_t i = 0; i != spec->n_addresses; ++i)
            rm_node_add(addrs, NULL, rm_node_string(spec->addresses[i]));
    }
    rm_node_t *eps = rm_node_add(s, "endpoints", rm_node_list());
    for (size_t i = 0; i != spec->n_endpoints; ++i) {
        const Remora__V1__Endpoint *e = spec->endpoints[i];
        if (e->target_case == REMORA__V1__ENDPOINT__TARGET_DNS) {
            rm_node_t *m = rm_node_add(eps, NULL, rm_node_map());
            add_str(m, "dns", e->dns);
        } else if (e->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS && e->weight == 0 &&
                   (e->service_account == NULL || e->service_account[0] == '\0')) {
            rm_node_add(eps, NULL, rm_node_string(e->address));
        } else if (e->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS) {
            rm_node_t *m = rm_node_add(eps, NULL, rm_node_map());
            add_str(m, "address", e->address);
        }
        /* a weighted endpoint, or one with its own service account, is always a map (above) */
        if (e->weight != 0 && e->target_case != REMORA__V1__ENDPOINT__TARGET__NOT_SET)
            rm_node_add(eps->items[eps->size - 1], "weight", rm_node_number(e->weight));
        if (e->service_account != NULL && e->service_account[0] != '\0' && e->target_case != REMORA__V1__ENDPOINT__TARGET__NOT_SET)
            add_str(eps->items[eps->size - 1], "serviceAccount", e->service_account);
    }
    return s;
}

static void
render_ref(rm_node_t *m, const char *kind, const char *name, const char *ns, uint32_t port)
{
    add_str(m, "kind", kind[0] != '\0' ? kind : "Service");
    add_str(m, "name", name);
    add_str(m, "namespace", ns);
    if (port != 0)
        rm_node_add(m, "port", rm_node_number(port));
}

static void
render_parent_refs(rm_node_t *spec, size_t n, Remora__V1__ParentReference **refs)
{
    rm_node_t *l = rm_node_add(spec, "parentRefs", rm_node_list());
    for (size_t i = 0; i != n; ++i)
        render_ref(rm_node_add(l, NULL, rm_node_map()), refs[i]->kind, refs[i]->name, refs[i]->namespace_, refs[i]->port);
}

static void
render_backend_refs(rm_node_t *rule, size_t n, Remora__V1__BackendReference **refs)
{
    rm_node_t *l = rm_node_add(rule, "backendRefs", rm_node_list());
    for (size_t i = 0; i != n; ++i) {
        rm_node_t *m = rm_node_add(l, NULL, rm_node_map());
        render_ref(m, refs[i]->kind, refs[i]->name, refs[i]->namespace_, refs[i]->port);
        rm_node_add(m, "weight", rm_node_number(refs[i]->weight));
    }
}

static uint64_t
duration_ms(const Remora__V1__Duration *d)
{
    if (d->seconds < 0 || d->nanos < 0)
        return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

static void
render_timeouts(rm_node_t *rule, const Remora__V1__RouteTimeouts *t)
{
    char buf[64];
    if (t == NULL || (t->request == NULL && t->backend_request == NULL))
        return;
    rm_node_t *m = rm_node_add(rule, "timeouts", rm_node_map());
    if (t->request != NULL)
        add_str(m, "request", rm_render_duration(duration_ms(t->request), buf, sizeof(buf)));
    if (t->backend_request != NULL)
        add_str(m, "backendRequest", rm_render_duration(duration_ms(t->backend_request), buf, sizeof(buf)));
}

static void
add_duration(rm_node_t *map, const char *key, const Remora__V1__Duration *d)
{
    char buf[64];
    if (d != NULL)
        add_str(map, key, rm_render_duration(duration_ms(d), buf, sizeof(buf)));
}

static const char *
grpc_status_name(Remora__V1__GRPCStatusCode c)
{
    return rm_grpc_status_name((int)c);
}

/* Lists are always written, empty ones too: an empty list is not the same as an absent one (which takes the default). */
static void
render_retry(rm_node_t *rule, uint32_t attempts, const Remora__V1__Duration *backoff, size_t n_conditions,
             const Remora__V1__RetryCondition *conditions, rm_node_t *codes)
{
    static const char *const names[] = {[REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE] = "connect-failure",
                                        [REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_REFUSED_STREAM] = "refused-stream",
                                        [REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_RESET] = "reset"};
    rm_node_t *m = rm_node_add(rule, "retry", rm_node_map());
    rm_node_add(m, "attempts", rm_node_number(attempts));
    add_duration(m, "backoff", backoff);
    rm_node_add(m, "codes", codes);
    rm_node_t *l = rm_node_add(m, "conditions", rm_node_list());
    for (size_t i = 0; i != n_conditions; ++i)
        if ((unsigned)conditions[i] < sizeof(names) / sizeof(names[0]) && names[conditions[i]] != NULL)
            rm_node_add(l, NULL, rm_node_string(names[conditions[i]]));
}

static void
render_session_persistence(rm_node_t *rule, const Remora__V1__SessionPersistence *sp)
{
    if (sp == NULL)
        return;
    rm_node_t *m = rm_node_add(rule, "sessionPersistence", rm_node_map());
    add_str(m, "type", sp->type == REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER ? "Header" : "Cookie");
    add_str(m, "sessionName", sp->session_name);
}

static void
render_header_filter(rm_node_t *filter, const char *key, const Remora__V1__HTTPHeaderFilter *h)
{
    rm_node_t *m = rm_node_add(filter, key, rm_node_map());
    if (h->n_set_headers != 0) {
        rm_node_t *l = rm_node_add(m, "set", rm_node_list());
        for (size_t i = 0; i != h->n_set_headers; ++i) {
            rm_node_t *e = rm_node_add(l, NULL, rm_node_map());
            add_str(e, "name", h->set_headers[i]->name);
            add_str(e, "value", h->set_headers[i]->value);
        }
    }
    if (h->n_add_headers != 0) {
        rm_node_t *l = rm_node_add(m, "add", rm_node_list());
        for (size_t i = 0; i != h->n_add_headers; ++i) {
            rm_node_t *e = rm_node_add(l, NULL, rm_node_map());
            add_str(e, "name", h->add_headers[i]->name);
            add_str(e, "value", h->add_headers[i]->value);
        }
    }
    if (h->n_remove_headers != 0) {
        rm_node_t *l = rm_node_add(m, "remove", rm_node_list());
        for (size_t i = 0; i != h->n_remove_headers; ++i)
            rm_node_add(l, NULL, rm_node_string(h->remove_headers[i]));
    }
}

static void
render_mirror(rm_node_t *filter, const Remora__V1__HTTPRequestMirrorFilter *m)
{
    rm_node_t *mm = rm_node_add(filter, "requestMirror", rm_node_map());
    if (m->backend_ref != NULL) {
        rm_node_t *r = rm_node_add(mm, "backendRef", rm_node_map());
        render_ref(r, m->backend_ref->kind, m->backend_ref->name, m->backend_ref->namespace_, m->backend_ref->port);
    }
    if (m->share_case == REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_FRACTION) {
        rm_node_t *f = rm_node_add(mm, "fraction", rm_node_map());
        rm_node_add(f, "numerator", rm_node_number(m->fraction->numerator));
        rm_node_add(f, "denominator", rm_node_number(m->fraction->denominator));
    } else {
        rm_node_add(mm, "percent",
                    rm_node_number(m->share_case == REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT ? m->percent : 100));
    }
}

static void
render_path_modifier(rm_node_t *parent, const Remora__V1__HTTPPathModifier *pm)
{
    if (pm == NULL)
        return;
    rm_node_t *m = rm_node_add(parent, "path", rm_node_map());
    if (pm->modifier_case == REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH) {
        add_str(m, "type", "ReplacePrefixMatch");
        add_str(m, "replacePrefixMatch", pm->replace_prefix_match);
    } else if (pm->modifier_case == REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_FULL_PATH) {
        add_str(m, "type", "ReplaceFullPath");
        add_str(m, "replaceFullPath", pm->replace_full_path);
    }
}

static void
render_extension_ref(rm_node_t *filter, const Remora__V1__LocalObjectReference *r)
{
    rm_node_t *m = rm_node_add(filter, "extensionRef", rm_node_map());
    add_str(m, "group", r->group[0] != '\0' ? r->group : "remora.dev");
    add_str(m, "kind", r->kind[0] != '\0' ? r->kind : "FaultInjection");
    add_str(m, "name", r->name);
}

static void
render_http_filters(rm_node_t *rule, size_t n, Remora__V1__HTTPRouteFilter **fs)
{
    if (n == 0)
        return;
    rm_node_t *l = rm_node_add(rule, "filters", rm_node_list());
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HTTPRouteFilter *f = fs[i];
        rm_node_t *m = rm_node_add(l, NULL, rm_node_map());
        switch (f->filter_case) {
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER:
            add_str(m, "type", "RequestHeaderModifier");
            render_header_filter(m, "requestHeaderModifier", f->request_header_modifier);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER:
            add_str(m, "type", "ResponseHeaderModifier");
            render_header_filter(m, "responseHeaderModifier", f->response_header_modifier);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR:
            add_str(m, "type", "RequestMirror");
            render_mirror(m, f->request_mirror);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_REDIRECT: {
            const Remora__V1__HTTPRequestRedirectFilter *r = f->request_redirect;
            add_str(m, "type", "RequestRedirect");
            rm_node_t *rr = rm_node_add(m, "requestRedirect", rm_node_map());
            if (r->scheme[0] != '\0')
                add_str(rr, "scheme", r->scheme);
            if (r->hostname[0] != '\0')
                add_str(rr, "hostname", r->hostname);
            if (r->port != 0)
                rm_node_add(rr, "port", rm_node_number(r->port));
            rm_node_add(rr, "statusCode", rm_node_number(r->status_code != 0 ? r->status_code : 302));
            render_path_modifier(rr, r->path);
        } break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_URL_REWRITE: {
            const Remora__V1__HTTPURLRewriteFilter *r = f->url_rewrite;
            add_str(m, "type", "URLRewrite");
            rm_node_t *rr = rm_node_add(m, "urlRewrite", rm_node_map());
            if (r->hostname[0] != '\0')
                add_str(rr, "hostname", r->hostname);
            render_path_modifier(rr, r->path);
        } break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF:
            add_str(m, "type", "ExtensionRef");
            render_extension_ref(m, f->extension_ref);
            break;
        default:
            break;
        }
    }
}

static void
render_grpc_filters(rm_node_t *rule, size_t n, Remora__V1__GRPCRouteFilter **fs)
{
    if (n == 0)
        return;
    rm_node_t *l = rm_node_add(rule, "filters", rm_node_list());
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__GRPCRouteFilter *f = fs[i];
        rm_node_t *m = rm_node_add(l, NULL, rm_node_map());
        switch (f->filter_case) {
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER:
            add_str(m, "type", "RequestHeaderModifier");
            render_header_filter(m, "requestHeaderModifier", f->request_header_modifier);
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER:
            add_str(m, "type", "ResponseHeaderModifier");
            render_header_filter(m, "responseHeaderModifier", f->response_header_modifier);
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_MIRROR:
            add_str(m, "type", "RequestMirror");
            render_mirror(m, f->request_mirror);
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_EXTENSION_REF:
            add_str(m, "type", "ExtensionRef");
            render_extension_ref(m, f->extension_ref);
            break;
        default:
            break;
        }
    }
}

static void
render_headers(rm_node_t *match, size_t n, Remora__V1__HeaderMatch **hs)
{
    if (n == 0)
        return;
    rm_node_t *l = rm_node_add(match, "headers", rm_node_list());
    for (size_t i = 0; i != n; ++i) {
        rm_node_t *m = rm_node_add(l, NULL, rm_node_map());
        int re = hs[i]->match_case == REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION;
        add_str(m, "type", re ? "RegularExpression" : "Exact");
        add_str(m, "name", hs[i]->name);
        add_str(m, "value",
                re                                                           ? hs[i]->regular_expression
                : hs[i]->match_case == REMORA__V1__HEADER_MATCH__MATCH_EXACT ? hs[i]->exact
                                                                             : "");
    }
}

static rm_node_t *
render_http_spec(const Remora__V1__HTTPRouteSpec *spec)
{
    rm_node_t *s = rm_node_map();
    render_parent_refs(s, spec->n_parent_refs, spec->parent_refs);
    rm_node_t *rules = rm_node_add(s, "rules", rm_node_list());
    for (size_t i = 0; i != spec->n_rules; ++i) {
        const Remora__V1__HTTPRouteRule *r = spec->rules[i];
        rm_node_t *rule = rm_node_add(rules, NULL, rm_node_map());
        if (r->n_matches != 0) {
            rm_node_t *ms = rm_node_add(rule, "matches", rm_node_list());
            for (size_t j = 0; j != r->n_matches; ++j) {
                const Remora__V1__HTTPRouteMatch *m = r->matches[j];
                rm_node_t *match = rm_node_add(ms, NULL, rm_node_map());
                if (m->path != NULL) {
                    rm_node_t *path = rm_node_add(match, "path", rm_node_map());
                    switch (m->path->match_case) {
                    case REMORA__V1__HTTPPATH_MATCH__MATCH_EXACT:
                        add_str(path, "type", "Exact");
                        add_str(path, "value", m->path->exact);
                        break;
                    case REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION:
                        add_str(path, "type", "RegularExpression");
                        add_str(path, "value", m->path->regular_expression);
                        break;
                    default:
                        add_str(path, "type", "PathPrefix");
                        add_str(path, "value",
                                m->path->match_case == REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX ? m->path->prefix : "/");
                        break;
                    }
                }
                render_headers(match, m->n_headers, m->headers);
                if (m->method[0] != '\0')
                    add_str(match, "method", m->method);
            }
        }
        render_http_filters(rule, r->n_filters, r->filters);
        if (r->n_backend_refs != 0)
            render_backend_refs(rule, r->n_backend_refs, r->backend_refs);
        render_timeouts(rule, r->timeouts);
        if (r->retry != NULL) {
            rm_node_t *codes = rm_node_list();
            for (size_t j = 0; j != r->retry->n_codes; ++j)
                rm_node_add(codes, NULL, rm_node_number(r->retry->codes[j]));
            render_retry(rule, r->retry->attempts, r->retry->backoff, r->retry->n_conditions, r->retry->conditions, codes);
        }
        render_session_persistence(rule, r->session_persistence);
    }
    return s;
}

static rm_node_t *
render_grpc_spec(const Remora__V1__GRPCRouteSpec *spec)
{
    rm_node_t *s = rm_node_map();
    render_parent_refs(s, spec->n_parent_refs, spec->parent_refs);
    rm_node_t *rules = rm_node_add(s, "rules", rm_node_list());
    for (size_t i = 0; i != spec->n_rules; ++i) {
        const Remora__V1__GRPCRouteRule *r = spec->rules[i];
        rm_node_t *rule = rm_node_add(rules, NULL, rm_node_map());
        if (r->n_matches != 0) {
            rm_node_t *ms = rm_node_add(rule, "matches", rm_node_list());
            for (size_t j = 0; j != r->n_matches; ++j) {
                const Remora__V1__GRPCRouteMatch *m = r->matches[j];
                rm_node_t *match = rm_node_add(ms, NULL, rm_node_map());
                if (m->method != NULL) {
                    rm_node_t *mm = rm_node_add(match, "method", rm_node_map());
                    add_str(mm, "type",
                            m->method->type == REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION ? "RegularExpression"
                                                                                                           : "Exact");
                    if (m->method->service[0] != '\0')
                        add_str(mm, "service", m->method->service);
                    if (m->method->method[0] != '\0')
                        add_str(mm, "method", m->method->method);
                }
                render_headers(match, m->n_headers, m->headers);
            }
        }
        render_grpc_filters(rule, r->n_filters, r->filters);
        render_backend_refs(rule, r->n_backend_refs, r->backend_refs);
        render_timeouts(rule, r->timeouts);
        if (r->retry != NULL) {
            rm_node_t *codes = rm_node_list();
            for (size_t j = 0; j != r->retry->n_codes; ++j)
                rm_node_add(codes, NULL, rm_node_string(grpc_status_name(r->retry->codes[j])));
            render_retry(rule, r->retry->attempts, r->retry->backoff, r->retry->n_conditions, r->retry->conditions, codes);
        }
        render_session_persistence(rule, r->session_persistence);
    }
    return s;
}

static rm_node_t *
render_fault_spec(const Remora__V1__FaultInjectionSpec *spec)
{
    rm_node_t *s = rm_node_map();
    if (spec->delay != NULL) {
        rm_node_t *d = rm_node_add(s, "delay", rm_node_map());
        add_duration(d, "fixedDelay", spec->delay->fixed_delay);
        rm_node_add(d, "percent", rm_node_number(spec->delay->percent));
    }
    if (spec->abort != NULL) {
        rm_node_t *a = rm_node_add(s, "abort", rm_node_map());
        if (spec->abort->status_case == REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS)
            add_str(a, "grpcStatus", grpc_status_name(spec->abort->grpc_status));
        else
            rm_node_add(a, "httpStatus", rm_node_number(spec->abort->http_status));
        rm_node_add(a, "percent", rm_node_number(spec->abort->percent));
    }
    return s;
}

static void
render_target_refs(rm_node_t *s, size_t n, Remora__V1__PolicyTargetReference *const *refs)
{
    rm_node_t *l = rm_node_add(s, "targetRefs", rm_node_list());
    for (size_t i = 0; i != n; ++i) {
        rm_node_t *t = rm_node_add(l, NULL, rm_node_map());
        if (refs[i]->group[0] != '\0')
            add_str(t, "group", refs[i]->group);
        add_str(t, "kind", refs[i]->kind[0] != '\0' ? refs[i]->kind : "Service");
        add_str(t, "name", refs[i]->name);
    }
}

static rm_node_t *
render_backend_policy_spec(const Remora__V1__BackendTrafficPolicySpec *spec)
{
    rm_node_t *s = rm_node_map();
    render_target_refs(s, spec->n_target_refs, spec->target_refs);
    const Remora__V1__RetryConstraint *rc = spec->retry_constraint;
    if (rc != NULL) {
        rm_node_t *r = rm_node_add(s, "retryConstraint", rm_node_map());
        if (rc->budget != NULL) {
            rm_node_t *b = rm_node_add(r, "budget", rm_node_map());
            rm_node_add(b, "percent", rm_node_number(rc->budget->percent));
            add_duration(b, "interval", rc->budget->interval);
        }
        if (rc->min_retry_rate != NULL) {
            rm_node_t *m = rm_node_add(r, "minRetryRate", rm_node_map());
            rm_node_add(m, "count", rm_node_number(rc->min_retry_rate->count));
            add_duration(m, "interval", rc->min_retry_rate->interval);
        }
    }
    const Remora__V1__BackendConnectionPool *cp = spec->connection_pool;
    if (cp != NULL) {
        rm_node_t *c = rm_node_add(s, "connectionPool", rm_node_map());
        add_duration(c, "connectTimeout", cp->connect_timeout);
        add_duration(c, "idleTimeout", cp->idle_timeout);
        add_duration(c, "streamIdleTimeout", cp->stream_idle_timeout);
        const uint32_t limits[] = {cp->max_connections, cp->max_pending_requests, cp->max_requests, cp->max_retries};
        const char *const names[] = {"maxConnections", "maxPendingRequests", "maxRequests", "maxRetries"};
        for (size_t i = 0; i != 4; ++i)
            if (limits[i] != 0)
                rm_node_add(c, names[i], rm_node_number(limits[i]));
    }
    const Remora__V1__BackendLoadBalancer *lb = spec->load_balancer;
    if (lb != NULL) {
        static const char *const types[] = {"Default", "RoundRobin", "LeastRequest", "PeakEWMA", "RingHash"};
        rm_node_t *m = rm_node_add(s, "loadBalancer", rm_node_map());
        add_str(m, "type", (unsigned)lb->type < 5 ? types[lb->type] : "Default");
        if (lb->minimum_ring_size != 0) {
            rm_node_t *r = rm_node_add(m, "ringHash", rm_node_map());
            rm_node_add(r, "minimumRingSize", rm_node_number(lb->minimum_ring_size));
        }
    }
    const Remora__V1__OutlierDetection *od = spec->outlier_detection;
    if (od != NULL) {
        rm_node_t *m = rm_node_add(s, "outlierDetection", rm_node_map());
        rm_node_add(m, "consecutive5xxErrors", rm_node_number(od->consecutive_5xx_errors));
        rm_node_add(m, "consecutiveGatewayErrors", rm_node_number(od->consecutive_gateway_errors));
        add_duration(m, "interval", od->interval);
        add_duration(m, "baseEjectionTime", od->base_ejection_time);
        add_duration(m, "maxEjectionTime", od->max_ejection_time);
        rm_node_add(m, "maxEjectionPercent", rm_node_number(od->max_ejection_percent));
    }
    const Remora__V1__HealthCheck *hc = spec->health_check;
    if (hc != NULL) {
        rm_node_t *m = rm_node_add(s, "healthCheck", rm_node_map());
        if (hc->http != NULL)
            add_str(rm_node_add(m, "http", rm_node_map()), "path", hc->http->path);
        if (hc->grpc != NULL)
            add_str(rm_node_add(m, "grpc", rm_node_map()), "service", hc->grpc->service);
        add_duration(m, "interval", hc->interval);
        add_duration(m, "timeout", hc->timeout);
        rm_node_add(m, "healthyThreshold", rm_node_number(hc->healthy_threshold));
        rm_node_add(m, "unhealthyThreshold", rm_node_number(hc->unhealthy_threshold));
    }
    return s;
}

static void
render_rate(rm_node_t *m, uint32_t rps, uint32_t burst)
{
    rm_node_add(m, "requestsPerSecond", rm_node_number(rps));
    if (burst != 0)
        rm_node_add(m, "burst", rm_node_number(burst));
}

static rm_node_t *
render_rate_limit_policy_spec(const Remora__V1__RateLimitPolicySpec *spec)
{
    rm_node_t *s = rm_node_map();
    render_target_refs(s, spec->n_target_refs, spec->target_refs);
    if (spec->total != NULL)
        render_rate(rm_node_add(s, "total", rm_node_map()), spec->total->requests_per_second, spec->total->burst);
    if (spec->per_client != NULL)
        render_rate(rm_node_add(s, "perClient", rm_node_map()), spec->per_client->requests_per_second, spec->per_client->burst);
    if (spec->client_key != NULL && spec->per_client != NULL) {
        static const char *const types[] = {"Identity", "SourceAddress", "Header"};
        rm_node_t *m = rm_node_add(s, "clientKey", rm_node_map());
        add_str(m, "type", (unsigned)spec->client_key->type < 3 ? types[spec->client_key->type] : "Identity");
        if (spec->client_key->header[0] != '\0')
            add_str(m, "header", spec->client_key->header);
    }
    if (spec->n_overrides != 0) {
        rm_node_t *l = rm_node_add(s, "overrides", rm_node_list());
        for (size_t i = 0; i != spec->n_overrides; ++i) {
            const Remora__V1__RateLimitOverride *o = spec->overrides[i];
            rm_node_t *m = rm_node_add(l, NULL, rm_node_map());
            render_rate(m, o->requests_per_second, o->burst);
            rm_node_t *c = rm_node_add(m, "clients", rm_node_list());
            for (size_t j = 0; j != o->n_clients; ++j)
                rm_node_add(c, NULL, rm_node_string(o->clients[j]));
        }
    }
    return s;
}

static void
render_str_list(rm_node_t *m, const char *key, size_t n, char *const *v)
{
    if (n == 0)
        return;
    rm_node_t *l = rm_node_add(m, key, rm_node_list());
    for (size_t i = 0; i != n; ++i)
        rm_node_add(l, NULL, rm_node_string(v[i]));
}

static rm_node_t *
render_authorization_policy_spec(const Remora__V1__AuthorizationPolicySpec *spec)
{
    static const char *const actions[] = {"ALLOW", "DENY", "AUDIT"};
    rm_node_t *s = rm_node_map();
    render_target_refs(s, spec->n_target_refs, spec->target_refs);
    add_str(s, "action", (unsigned)spec->action < 3 ? actions[spec->action] : "ALLOW");
    rm_node_t *rules = rm_node_add(s, "rules", rm_node_list());
    for (size_t i = 0; i != spec->n_rules; ++i) {
        const Remora__V1__AuthorizationRule *r = spec->rules[i];
        rm_node_t *m = rm_node_add(rules, NULL, rm_node_map());
        if (r->n_from != 0) {
            rm_node_t *l = rm_node_add(m, "from", rm_node_list());
            for (size_t j = 0; j != r->n_from; ++j) {
                rm_node_t *f = rm_node_add(l, NULL, rm_node_map());
                render_str_list(f, "identities", r->from[j]->n_identities, r->from[j]->identities);
                render_str_list(f, "namespaces", r->from[j]->n_namespaces, r->from[j]->namespaces);
            }
        }
        if (r->n_to != 0) {
            rm_node_t *l = rm_node_add(m, "to", rm_node_list());
            for (size_t j = 0; j != r->n_to; ++j) {
                rm_node_t *t = rm_node_add(l, NULL, rm_node_map());
                render_str_list(t, "methods", r->to[j]->n_methods, r->to[j]->methods);
                render_str_list(t, "paths", r->to[j]->n_paths, r->to[j]->paths);
                render_str_list(t, "grpcMethods", r->to[j]->n_grpc_methods, r->to[j]->grpc_methods);
            }
        }
    }
    return s;
}

static rm_node_t *
render_telemetry_spec(const Remora__V1__TelemetrySpec *spec)
{
    rm_node_t *s = rm_node_map();
    const Remora__V1__TelemetryTracing *t = spec->tracing;
    if (t != NULL) {
        rm_node_t *m = rm_node_add(s, "tracing", rm_node_map());
        if (t->otlp != NULL) {
            rm_node_t *o = rm_node_add(m, "otlp", rm_node_map());
            add_str(o, "endpoint", t->otlp->endpoint);
            add_str(o, "protocol", t->otlp->protocol == REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_HTTP ? "http" : "grpc");
        }
        rm_node_add(m, "samplingPercent", rm_node_decimal(t->sampling_percent));
        rm_node_t *l = rm_node_add(m, "propagation", rm_node_list());
        for (size_t i = 0; i != t->n_propagation; ++i)
            rm_node_add(l, NULL,
                        rm_node_string(t->propagation[i] == REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_B3 ? "b3" : "w3c"));
    }
    if (spec->access_log != NULL) {
        rm_node_t *m = rm_node_add(s, "accessLog", rm_node_map());
        add_str(m, "format", "json");
        add_str(m, "path", spec->access_log->path);
    }
    return s;
}

rm_node_t *
rm_render_resource(rm_kind_t kind, const ProtobufCMessage *msg)
{
    rm_node_t *doc = rm_node_map();
    add_str(doc, "apiVersion", "remora.dev/v1");
    add_str(doc, "kind", rm_kind_name(kind));
    const Remora__V1__ObjectMeta *meta = rm_resource_meta(kind, msg);
    if (meta != NULL)
        rm_node_add(doc, "metadata", render_meta(meta));
    rm_node_t *spec = NULL;
    switch (kind) {
    case RM_KIND_SERVICE: {
        const Remora__V1__Service *s = (const void *)msg;
        if (s->spec != NULL)
            spec = render_service_spec(s->spec);
    } break;
    case RM_KIND_HTTP_ROUTE: {
        const Remora__V1__HTTPRoute *r = (const void *)msg;
        if (r->spec != NULL)
            spec = render_http_spec(r->spec);
    } break;
    case RM_KIND_GRPC_ROUTE: {
        const Remora__V1__GRPCRoute *r = (const void *)msg;
        if (r->spec != NULL)
            spec = render_grpc_spec(r->spec);
    } break;
    case RM_KIND_FAULT_INJECTION: {
        const Remora__V1__FaultInjection *f = (const void *)msg;
        if (f->spec != NULL)
            spec = render_fault_spec(f->spec);
    } break;
    case RM_KIND_BACKEND_TRAFFIC_POLICY: {
        const Remora__V1__BackendTrafficPolicy *b = (const void *)msg;
        if (b->spec != NULL)
            spec = render_backend_policy_spec(b->spec);
    } break;
    case RM_KIND_RATE_LIMIT_POLICY: {
        const Remora__V1__RateLimitPolicy *r = (const void *)msg;
        if (r->spec != NULL)
            spec = render_rate_limit_policy_spec(r->spec);
    } break;
    case RM_KIND_AUTHORIZATION_POLICY: {
        const Remora__V1__AuthorizationPolicy *a = (const void *)msg;
        if (a->spec != NULL)
            spec = render_authorization_policy_spec(a->spec);
    } break;
    case RM_KIND_TELEMETRY: {
        const Remora__V1__Telemetry *t = (const void *)msg;
        if (t->spec != NULL)
            spec = render_telemetry_spec(t->spec);
    } break;
    case RM_KIND_EGRESS_POLICY: {
        const Remora__V1__EgressPolicy *e = (const void *)msg;
        if (e->spec != NULL) {
            spec = rm_node_map();
            if (e->spec->n_target_refs != 0)
                render_target_refs(spec, e->spec->n_target_refs, e->spec->target_refs);
            rm_node_t *l = rm_node_add(spec, "hosts", rm_node_list());
            for (size_t i = 0; i != e->spec->n_hosts; ++i)
                rm_node_add(l, NULL, rm_node_string(e->spec->hosts[i]));
        }
    } break;
    case RM_KIND_MESH_TLS: {
        const Remora__V1__MeshTLS *t = (const void *)msg;
        if (t->spec != NULL) {
            static const char *const modes[] = {"PERMISSIVE", "STRICT", "PERMISSIVE", "DISABLE"};
            spec = rm_node_map();
            add_str(spec, "mode", (unsigned)t->spec->mode < 4 ? modes[t->spec->mode] : "PERMISSIVE");
        }
    } break;
    default:
        break;
    }
    rm_node_add(doc, "spec", spec != NULL ? spec : rm_node_map());
    return doc;
}

/* ------------------------------------------------------------------------------------------ YAML */

static void
puts_buf(rm_rpc_buf_t *out, const char *s)
{
    rm_rpc_buf_append(out, s, strlen(s));
}

static void
indent(rm_rpc_buf_t *out, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        rm_rpc_buf_append(out, " ", 1);
}

/* A JSON string literal; also a valid YAML double-quoted scalar. */
static void
quoted(rm_rpc_buf_t *out, const char *s)
{
    rm_rpc_buf_append(out, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; ++c) {
        char esc[8];
        switch (*c) {
        case '"':
            puts_buf(out, "\\\"");
            break;
        case '\\':
            puts_buf(out, "\\\\");
            break;
        case '\n':
            puts_buf(out, "\\n");
            break;
        case '\t':
            puts_buf(out, "\\t");
            break;
        case '\r':
            puts_buf(out, "\\r");
            break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04x", *c);
                puts_buf(out, esc);
            } else {
                rm_rpc_buf_append(out, c, 1);
            }
        }
    }
    rm_rpc_buf_append(out, "\"", 1);
}

/* Strings that YAML reads back as the same string when written plain. */
static int
plain_safe(const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", NULL};
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '/' || s[0] == '_'))
        return 0;
    for (const char *c = s; *c != '\0'; ++c)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("_./-", *c) != NULL))
            return 0;
    for (size_t i = 0; words[i] != NULL; ++i)
        if (strcasecmp(s, words[i]) == 0)
            return 0;
    return 1;
}

static void
yaml_scalar(const rm_node_t *n, rm_rpc_buf_t *out)
{
    char buf[32];
    switch (n->type) {
    case RM_NODE_STRING:
        if (plain_safe(n->str))
            puts_buf(out, n->str);
        else
            quoted(out, n->str);
        break;
    case RM_NODE_NUMBER:
        /* a decimal number (rm_node_decimal) keeps its text */
        if (n->str != NULL)
            snprintf(buf, sizeof(buf), "%s", n->str);
        else
            snprintf(buf, sizeof(buf), "%" PRId64, n->num);
        puts_buf(out, buf);
        break;
    case RM_NODE_BOOL:
        puts_buf(out, n->num ? "true" : "false");
        break;
    case RM_NODE_MAP:
        puts_buf(out, "{}");
        break;
    case RM_NODE_LIST:
        puts_buf(out, "[]");
        break;
    }
}

static int
is_block(const rm_node_t *n)
{
    return (n->type == RM_NODE_MAP || n->type == RM_NODE_LIST) && n->size != 0;
}

static void yaml_node(const rm_node_t *n, rm_rpc_buf_t *out, size_t depth, int inline_first);

/* Map entries at `depth` spaces; the first one continues the current line when `inline_first` ("- key: v"). */
static void
yaml_map(const rm_node_t *n, rm_rpc_buf_t *out, size_t depth, int inline_first)
{
    for (size_t i = 0; i != n->size; ++i) {
        const rm_node_t *v = n->items[i];
        if (i != 0 || !inline_first)
            indent(out, depth);
        if (plain_safe(v->key))
            puts_buf(out, v->key);
        else
            quoted(out, v->key);
        rm_rpc_buf_append(out, ":", 1);
        if (is_block(v)) {
            rm_rpc_buf_append(out, "\n", 1);
            /* lists under a key stay at the key's indentation, as kubectl writes them */
            yaml_node(v, out, v->type == RM_NODE_LIST ? depth : depth + 2, 0);
        } else {
            rm_rpc_buf_append(out, " ", 1);
            yaml_scalar(v, out);
            rm_rpc_buf_append(out, "\n", 1);
        }
    }
}

static void
yaml_node(const rm_node_t *n, rm_rpc_buf_t *out, size_t depth, int inline_first)
{
    if (n->type == RM_NODE_MAP && n->size != 0) {
        yaml_map(n, out, depth, inline_first);
    } else if (n->type == RM_NODE_LIST && n->size != 0) {
        for (size_t i = 0; i != n->size; ++i) {
            const rm_node_t *v = n->items[i];
            indent(out, depth);
            puts_buf(out, "- ");
            if (v->type == RM_NODE_MAP && v->size != 0) {
                yaml_map(v, out, depth + 2, 1);
            } else if (v->type == RM_NODE_LIST && v->size != 0) {
                rm_rpc_buf_append(out, "\n", 1);
                yaml_node(v, out, depth + 2, 0);
            } else {
                yaml_scalar(v, out);
                rm_rpc_buf_append(out, "\n", 1);
            }
        }
    } else {
        indent(out, depth);
        yaml_scalar(n, out);
        rm_rpc_buf_append(out, "\n", 1);
    }
}

void
rm_render_yaml(const rm_node_t *n, rm_rpc_buf_t *out)
{
    yaml_node(n, out, 0, 0);
}

/* ------------------------------------------------------------------------------------------ JSON */

static void
json_node(const rm_node_t *n, rm_rpc_buf_t *out, size_t depth)
{
    char buf[32];
    switch (n->type) {
    case RM_NODE_STRING:
        quoted(out, n->str);
        return;
    case RM_NODE_NUMBER:
        /* a decimal number (rm_node_decimal) keeps its text */
        if (n->str != NULL)
            snprintf(buf, sizeof(buf), "%s", n->str);
        else
            snprintf(buf, sizeof(buf), "%" PRId64, n->num);
        puts_buf(out, buf);
        return;
    case RM_NODE_BOOL:
        puts_buf(out, n->num ? "true" : "false");
        return;
    case RM_NODE_MAP:
    case RM_NODE_LIST:
        break;
    }
    int map = n->type == RM_NODE_MAP;
    if (n->size == 0) {
        puts_buf(out, map ? "{}" : "[]");
        return;
    }
    puts_buf(out, map ? "{\n" : "[\n");
    for (size_t i = 0; i != n->size; ++i) {
        indent(out, depth + 2);
        if (map) {
            quoted(out, n->items[i]->key);
            puts_buf(out, ": ");
        }
        json_node(n->items[i], out, depth + 2);
        puts_buf(out, i + 1 != n->size ? ",\n" : "\n");
    }
    indent(out, depth);
    puts_buf(out, map ? "}" : "]");
}

void
rm_render_json(const rm_node_t *n, rm_rpc_buf_t *out)
{
    json_node(n, out, 0);
    rm_rpc_buf_append(out, "\n", 1);
}
