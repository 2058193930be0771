#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/strutil.h"
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
    default:
        break;
    }
    add_str(s, "protocol", proto);
    rm_node_t *eps = rm_node_add(s, "endpoints", rm_node_list());
    for (size_t i = 0; i != spec->n_endpoints; ++i) {
        const Remora__V1__Endpoint *e = spec->endpoints[i];
        if (e->target_case == REMORA__V1__ENDPOINT__TARGET_DNS) {
            rm_node_t *m = rm_node_add(eps, NULL, rm_node_map());
            add_str(m, "dns", e->dns);
        } else if (e->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS) {
            rm_node_add(eps, NULL, rm_node_string(e->address));
        }
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
        render_backend_refs(rule, r->n_backend_refs, r->backend_refs);
        render_timeouts(rule, r->timeouts);
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
        render_backend_refs(rule, r->n_backend_refs, r->backend_refs);
        render_timeouts(rule, r->timeouts);
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
