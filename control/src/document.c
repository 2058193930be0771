/*
 * YAML documents -> resources (see document.h). The YAML tree and the arena-built protobuf-c
 * structures never leave this file: a document that passes is packed, and the resource is
 * re-created from those bytes, so what the store holds is exactly what goes on the wire.
 *
 * Each document reports its first error only: later errors in the same document are often
 * consequences of the first. Every document of the batch is still parsed, so one apply lists every
 * broken document.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "remora/yamlutil.h"
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "document.h"

#define API_VERSION "remora.dev/v1"
#define MAX_WEIGHT 1000000

/* ------------------------------------------------------------------------------------------ arena */

/* Builds one document's protobuf-c structures; freed at once when the document is packed. */
typedef struct st_arena_block_t {
    struct st_arena_block_t *next;
    size_t used, size;
    _Alignas(16) char data[];
} arena_block_t;

typedef struct st_arena_t {
    arena_block_t *blocks;
} arena_t;

static void *
arena_alloc(arena_t *a, size_t sz)
{
    sz = (sz + 15) & ~(size_t)15;
    if (a->blocks == NULL || a->blocks->size - a->blocks->used < sz) {
        size_t bsz = sz > 8192 ? sz : 8192;
        arena_block_t *b = rm_malloc(sizeof(*b) + bsz);
        b->next = a->blocks;
        b->used = 0;
        b->size = bsz;
        a->blocks = b;
    }
    void *p = a->blocks->data + a->blocks->used;
    a->blocks->used += sz;
    memset(p, 0, sz);
    return p;
}

static char *
arena_strdup(arena_t *a, const char *s)
{
    size_t len = strlen(s);
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len + 1);
    return p;
}

static void
arena_dispose(arena_t *a)
{
    while (a->blocks != NULL) {
        arena_block_t *b = a->blocks;
        a->blocks = b->next;
        free(b);
    }
}

/* ----------------------------------------------------------------------------------------- parser */

typedef struct st_parser_t {
    rm_batch_t *batch;
    yaml_document_t doc;
    const char *file;
    arena_t arena;
    /* "service/echo: " once kind and name are known */
    char prefix[200];
    /* route namespace, the default of references */
    const char *ns;
    size_t budget;
    /* references found in this document; handed to the batch only if the document passes */
    rm_ref_t *refs;
    size_t num_refs;
} parser_t;

static int fail(parser_t *p, const yaml_node_t *node, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
fail(parser_t *p, const yaml_node_t *node, const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rm_doc_errors_add(&p->batch->errors, p->file, rm_yaml_line(node), "%s%s%s%s", p->prefix, path, path[0] != '\0' ? ": " : "",
                      msg);
    return -1;
}

static int
spend(parser_t *p, const yaml_node_t *node, size_t n)
{
    if (n > p->budget)
        return fail(p, node, "", "document too large (too many nodes, or aliases expanding too far)");
    p->budget -= n;
    return 0;
}

static const char *
join(char *buf, size_t bufsz, const char *path, const char *key)
{
    /* a truncated path only shortens an error message */
    if (snprintf(buf, bufsz, "%s%s%s", path, path[0] != '\0' ? "." : "", key) >= (int)bufsz)
        buf[bufsz - 1] = '\0';
    return buf;
}

static const char *
index_path(char *buf, size_t bufsz, const char *path, size_t i)
{
    if (snprintf(buf, bufsz, "%s[%zu]", path, i) >= (int)bufsz)
        buf[bufsz - 1] = '\0';
    return buf;
}

/*
 * Looks up the keys of a mapping. `keys` is NULL-terminated; out[i] receives the value of keys[i],
 * or NULL when absent or null. Unknown and repeated keys are errors: a typo must never fall back to
 * a default silently.
 */
static int
fields(parser_t *p, yaml_node_t *map, const char *path, const char *const *keys, yaml_node_t **out)
{
    size_t nkeys = 0;
    while (keys[nkeys] != NULL)
        out[nkeys++] = NULL;
    if (map->type != YAML_MAPPING_NODE)
        return fail(p, map, path, "must be a mapping, got %s", rm_yaml_type_name(map));
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *end = map->data.mapping.pairs.top;
    if (spend(p, map, end - start + 1) != 0)
        return -1;
    for (yaml_node_pair_t *pair = start; pair != end; ++pair) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key), *v = yaml_document_get_node(&p->doc, pair->value);
        if (k->type != YAML_SCALAR_NODE)
            return fail(p, k, path, "keys must be plain names, got %s", rm_yaml_type_name(k));
        const char *name = (const char *)k->data.scalar.value;
        size_t i;
        for (i = 0; i != nkeys; ++i)
            if (strcmp(keys[i], name) == 0)
                break;
        if (i == nkeys) {
            const char *best = NULL;
            size_t best_d = 3;
            for (size_t j = 0; j != nkeys; ++j) {
                size_t d = rm_edit_distance(name, keys[j], 2);
                if (d < best_d) {
                    best_d = d;
                    best = keys[j];
                }
            }
            char known[256] = "";
            for (size_t j = 0; j != nkeys; ++j)
                snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s", j != 0 ? ", " : "", keys[j]);
            if (best != NULL)
                return fail(p, k, path, "unknown field '%s' (did you mean '%s'?)", name, best);
            return fail(p, k, path, "unknown field '%s' (known: %s)", name, known);
        }
        for (yaml_node_pair_t *prev = start; prev != pair; ++prev) {
            yaml_node_t *pk = yaml_document_get_node(&p->doc, prev->key);
            if (pk->type == YAML_SCALAR_NODE && strcmp((const char *)pk->data.scalar.value, name) == 0)
                return fail(p, k, path, "field '%s' is given twice (first on line %u)", name, rm_yaml_line(pk));
        }
        out[i] = rm_yaml_is_null(v) ? NULL : v;
    }
    return 0;
}

static int
require(parser_t *p, yaml_node_t *parent, const char *path, yaml_node_t *value, const char *key)
{
    if (value == NULL) {
        char sub[256];
        return fail(p, parent, join(sub, sizeof(sub), path, key), "is required");
    }
    return 0;
}

/* A scalar as a string; points into the YAML document. */
static int
get_str(parser_t *p, yaml_node_t *node, const char *path, const char **out)
{
    if (node->type != YAML_SCALAR_NODE || rm_yaml_is_null(node))
        return fail(p, node, path, "must be a string, got %s", rm_yaml_type_name(node));
    if (strlen((const char *)node->data.scalar.value) != node->data.scalar.length)
        return fail(p, node, path, "must not contain NUL characters");
    *out = (const char *)node->data.scalar.value;
    return 0;
}

static int
get_int(parser_t *p, yaml_node_t *node, const char *path, int64_t min, int64_t max, int64_t *out)
{
    if (node->type != YAML_SCALAR_NODE || rm_yaml_is_null(node))
        return fail(p, node, path, "must be a number, got %s", rm_yaml_type_name(node));
    const char *s = (const char *)node->data.scalar.value;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, node, path, "must be a number, got the quoted string \"%s\"", s);
    const char *d = s[0] == '-' || s[0] == '+' ? s + 1 : s;
    if (*d == '\0' || strspn(d, "0123456789") != strlen(d) || strlen(d) > 12)
        return fail(p, node, path, "must be a whole number, got '%s'", s);
    int64_t v = strtoll(s, NULL, 10);
    if (v < 0 && min >= 0)
        return fail(p, node, path, "must not be negative, got %s", s);
    if (v < min || v > max)
        return fail(p, node, path, "must be from %lld to %lld, got %s", (long long)min, (long long)max, s);
    *out = v;
    return 0;
}

static int
get_seq(parser_t *p, yaml_node_t *node, const char *path, yaml_node_item_t **items, size_t *n)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return fail(p, node, path, "must be a list, got %s", rm_yaml_type_name(node));
    *items = node->data.sequence.items.start;
    *n = node->data.sequence.items.top - node->data.sequence.items.start;
    return spend(p, node, *n + 1);
}

static yaml_node_t *
item(parser_t *p, yaml_node_item_t *items, size_t i)
{
    return yaml_document_get_node(&p->doc, items[i]);
}

/* DNS-1123 label: what Kubernetes requires of names and namespaces. */
static int
is_dns_label(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (const char *c = s; *c != '\0'; ++c)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
            return 0;
    return 1;
}

static int
get_name(parser_t *p, yaml_node_t *node, const char *path, const char **out)
{
    if (get_str(p, node, path, out) != 0)
        return -1;
    if (!is_dns_label(*out))
        return fail(p, node, path,
                    "'%s' is not a valid name: use 1-63 lower-case letters, digits and '-', starting and ending with a letter "
                    "or digit",
                    *out);
    return 0;
}

static int
is_dns_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return 0;
    const char *label = s;
    for (const char *c = s;; ++c) {
        if (*c == '.' || *c == '\0') {
            size_t l = c - label;
            if (l == 0)
                return *c == '\0' && c != s && c[-1] == '.'; /* one trailing dot is fine */
            if (l > 63 || label[0] == '-' || c[-1] == '-')
                return 0;
            if (*c == '\0')
                return 1;
            label = c + 1;
        } else if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_') {
            return 0;
        }
    }
}

static int
check_regex(parser_t *p, yaml_node_t *node, const char *path, const char *re)
{
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char err[128];
        regerror(rc, &rx, err, sizeof(err));
        regfree(&rx);
        return fail(p, node, path, "invalid regular expression '%s': %s (POSIX extended syntax)", re, err);
    }
    regfree(&rx);
    return 0;
}

/* ------------------------------------------------------------------------------------- metadata */

static int
cmp_label(const void *a, const void *b)
{
    const Remora__V1__ObjectMeta__LabelsEntry *x = *(void *const *)a, *y = *(void *const *)b;
    return strcmp(x->key, y->key);
}

/* labels and annotations share one shape; the entry types are identical apart from the descriptor. */
static int
parse_string_map(parser_t *p, yaml_node_t *node, const char *path, const ProtobufCMessageDescriptor *desc, size_t *n_out,
                 Remora__V1__ObjectMeta__LabelsEntry ***out)
{
    if (node->type != YAML_MAPPING_NODE)
        return fail(p, node, path, "must be a mapping of strings, got %s", rm_yaml_type_name(node));
    yaml_node_pair_t *start = node->data.mapping.pairs.start, *end = node->data.mapping.pairs.top;
    size_t n = end - start;
    if (spend(p, node, n + 1) != 0)
        return -1;
    Remora__V1__ObjectMeta__LabelsEntry **entries = arena_alloc(&p->arena, sizeof(entries[0]) * (n + 1));
    for (size_t i = 0; i != n; ++i) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, start[i].key), *v = yaml_document_get_node(&p->doc, start[i].value);
        const char *ks, *vs;
        char sub[256];
        if (get_str(p, k, path, &ks) != 0)
            return -1;
        snprintf(sub, sizeof(sub), "%s.%s", path, ks);
        if (v->type != YAML_SCALAR_NODE)
            return fail(p, v, sub, "must be a string, got %s", rm_yaml_type_name(v));
        if (rm_yaml_is_null(v))
            vs = "";
        else if (get_str(p, v, sub, &vs) != 0)
            return -1;
        for (size_t j = 0; j != i; ++j)
            if (strcmp(entries[j]->key, ks) == 0)
                return fail(p, k, sub, "is given twice");
        Remora__V1__ObjectMeta__LabelsEntry *e = arena_alloc(&p->arena, sizeof(*e));
        remora__v1__object_meta__labels_entry__init(e);
        e->base.descriptor = desc;
        e->key = arena_strdup(&p->arena, ks);
        e->value = arena_strdup(&p->arena, vs);
        entries[i] = e;
    }
    /* a map's encoding follows the order of its entries: sort them so equal maps encode equally */
    qsort(entries, n, sizeof(entries[0]), cmp_label);
    *n_out = n;
    *out = entries;
    return 0;
}

static int
parse_metadata(parser_t *p, yaml_node_t *node, rm_kind_t kind, Remora__V1__ObjectMeta **out)
{
    static const char *const keys[] = {"name", "namespace", "labels", "annotations", NULL};
    yaml_node_t *v[4];
    if (fields(p, node, "metadata", keys, v) != 0 || require(p, node, "metadata", v[0], "name") != 0)
        return -1;
    Remora__V1__ObjectMeta *meta = arena_alloc(&p->arena, sizeof(*meta));
    remora__v1__object_meta__init(meta);
    const char *name, *ns = "default";
    if (get_name(p, v[0], "metadata.name", &name) != 0)
        return -1;
    snprintf(p->prefix, sizeof(p->prefix), "%s/%s: ", rm_kind_lower(kind), name);
    if (v[1] != NULL && get_name(p, v[1], "metadata.namespace", &ns) != 0)
        return -1;
    meta->name = arena_strdup(&p->arena, name);
    meta->namespace_ = arena_strdup(&p->arena, ns);
    if (v[2] != NULL && parse_string_map(p, v[2], "metadata.labels", &remora__v1__object_meta__labels_entry__descriptor,
                                         &meta->n_labels, &meta->labels) != 0)
        return -1;
    if (v[3] != NULL && parse_string_map(p, v[3], "metadata.annotations", &remora__v1__object_meta__annotations_entry__descriptor,
                                         &meta->n_annotations, (Remora__V1__ObjectMeta__LabelsEntry ***)&meta->annotations) != 0)
        return -1;
    p->ns = meta->namespace_;
    *out = meta;
    return 0;
}

/* -------------------------------------------------------------------------------------- Service */

/* "HOST:PORT" or "[V6]:PORT" -> host (into buf) and port 1-65535. */
static int
split_host_port(parser_t *p, yaml_node_t *node, const char *path, const char *s, char *host, size_t hostsz, unsigned *port)
{
    const char *colon, *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return fail(p, node, path, "'%s' is not [IPV6]:PORT", s);
        h = s + 1;
        hlen = close - s - 1;
        colon = close + 1;
    } else {
        if ((colon = strrchr(s, ':')) == NULL)
            return fail(p, node, path, "'%s' has no port: write HOST:PORT", s);
        if (memchr(s, ':', colon - s) != NULL)
            return fail(p, node, path, "'%s': write IPv6 addresses in brackets, as [::1]:PORT", s);
        hlen = colon - s;
    }
    const char *ps = colon + 1;
    if (*ps == '\0' || strspn(ps, "0123456789") != strlen(ps) || strlen(ps) > 6)
        return fail(p, node, path, "'%s': the port must be a number from 1 to 65535", s);
    long v = strtol(ps, NULL, 10);
    if (v < 1 || v > 65535)
        return fail(p, node, path, "'%s': port %ld is out of range 1-65535", s, v);
    if (hlen == 0 || hlen >= hostsz)
        return fail(p, node, path, "'%s' has no host", s);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (unsigned)v;
    return 0;
}

static int
is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static int
check_address(parser_t *p, yaml_node_t *node, const char *path, const char *s, int from_plain_string)
{
    char host[256];
    unsigned port;
    if (split_host_port(p, node, path, s, host, sizeof(host), &port) != 0)
        return -1;
    if (!is_ip(host)) {
        if (strspn(host, "0123456789.") == strlen(host))
            return fail(p, node, path, "'%s': '%s' is not a valid IPv4 address", s, host);
        if (from_plain_string && is_dns_name(host))
            return fail(p, node, path, "'%s' is not an IP address and port; for a DNS name write {dns: \"%s\"}", s, s);
        return fail(p, node, path, "'%s': '%s' is not an IP address", s, host);
    }
    if (s[0] != '[' && strchr(host, ':') != NULL)
        return fail(p, node, path, "'%s': write IPv6 addresses in brackets, as [::1]:PORT", s);
    return 0;
}

static int
parse_endpoint(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__Endpoint **out)
{
    Remora__V1__Endpoint *ep = arena_alloc(&p->arena, sizeof(*ep));
    remora__v1__endpoint__init(ep);
    const char *s;
    char sub[256];
    if (node->type == YAML_SCALAR_NODE) {
        if (get_str(p, node, path, &s) != 0 || check_address(p, node, path, s, 1) != 0)
            return -1;
        ep->target_case = REMORA__V1__ENDPOINT__TARGET_ADDRESS;
        ep->address = arena_strdup(&p->arena, s);
    } else {
        static const char *const keys[] = {"address", "dns", NULL};
        yaml_node_t *v[2];
        if (fields(p, node, path, keys, v) != 0)
            return -1;
        if ((v[0] == NULL) == (v[1] == NULL))
            return fail(p, node, path, "give exactly one of 'address' (IP:PORT) or 'dns' (NAME:PORT)");
        if (v[0] != NULL) {
            join(sub, sizeof(sub), path, "address");
            if (get_str(p, v[0], sub, &s) != 0 || check_address(p, v[0], sub, s, 0) != 0)
                return -1;
            ep->target_case = REMORA__V1__ENDPOINT__TARGET_ADDRESS;
            ep->address = arena_strdup(&p->arena, s);
        } else {
            char host[256];
            unsigned port;
            join(sub, sizeof(sub), path, "dns");
            if (get_str(p, v[1], sub, &s) != 0 || split_host_port(p, v[1], sub, s, host, sizeof(host), &port) != 0)
                return -1;
            if (is_ip(host))
                return fail(p, v[1], sub, "'%s' is an IP address: write it as {address: \"%s\"}", host, s);
            if (!is_dns_name(host))
                return fail(p, v[1], sub, "'%s' is not a valid DNS name", host);
            ep->target_case = REMORA__V1__ENDPOINT__TARGET_DNS;
            ep->dns = arena_strdup(&p->arena, s);
        }
    }
    *out = ep;
    return 0;
}

static int
parse_service_spec(parser_t *p, yaml_node_t *node, Remora__V1__ServiceSpec **out)
{
    static const char *const keys[] = {"protocol", "endpoints", NULL};
    yaml_node_t *v[2];
    if (fields(p, node, "spec", keys, v) != 0 || require(p, node, "spec", v[0], "protocol") != 0)
        return -1;
    Remora__V1__ServiceSpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__service_spec__init(spec);
    const char *proto;
    if (get_str(p, v[0], "spec.protocol", &proto) != 0)
        return -1;
    if (strcasecmp(proto, "grpc") == 0)
        spec->protocol = REMORA__V1__PROTOCOL__PROTOCOL_GRPC;
    else if (strcasecmp(proto, "http2") == 0)
        spec->protocol = REMORA__V1__PROTOCOL__PROTOCOL_HTTP2;
    else if (strcasecmp(proto, "http1") == 0)
        spec->protocol = REMORA__V1__PROTOCOL__PROTOCOL_HTTP1;
    else
        return fail(p, v[0], "spec.protocol", "unknown protocol '%s' (use grpc, http2 or http1)", proto);
    if (v[1] != NULL) {
        yaml_node_item_t *items;
        size_t n;
        if (get_seq(p, v[1], "spec.endpoints", &items, &n) != 0)
            return -1;
        spec->endpoints = arena_alloc(&p->arena, sizeof(spec->endpoints[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char sub[64];
            if (parse_endpoint(p, item(p, items, i), index_path(sub, sizeof(sub), "spec.endpoints", i), &spec->endpoints[i]) != 0)
                return -1;
            const Remora__V1__Endpoint *e = spec->endpoints[i];
            for (size_t j = 0; j != i; ++j) {
                const Remora__V1__Endpoint *f = spec->endpoints[j];
                if (e->target_case == f->target_case && strcmp(e->address, f->address) == 0)
                    return fail(p, item(p, items, i), sub, "'%s' is listed twice", e->address);
            }
        }
        spec->n_endpoints = n;
    }
    *out = spec;
    return 0;
}

/* ------------------------------------------------------------------------------------- references */

static void
add_ref(parser_t *p, yaml_node_t *node, const char *path, const char *ns, const char *name)
{
    p->refs = rm_realloc(p->refs, (p->num_refs + 1) * sizeof(p->refs[0]));
    rm_ref_t *r = &p->refs[p->num_refs++];
    r->ns = rm_strdup(ns);
    r->name = rm_strdup(name);
    r->file = rm_strdup(p->file);
    r->line = rm_yaml_line(node);
    char what[512];
    snprintf(what, sizeof(what), "%s%s", p->prefix, path);
    r->what = rm_strdup(what);
}

static void
free_ref(rm_ref_t *r)
{
    free(r->ns);
    free(r->name);
    free(r->file);
    free(r->what);
}

/* group, kind, name, namespace: shared by parent and backend references. */
static int
parse_ref_target(parser_t *p, yaml_node_t *node, const char *path, yaml_node_t *group, yaml_node_t *kind, yaml_node_t *name,
                 yaml_node_t *ns, const char **name_out, const char **ns_out)
{
    char sub[256];
    const char *s;
    if (group != NULL) {
        if (get_str(p, group, join(sub, sizeof(sub), path, "group"), &s) != 0)
            return -1;
        if (s[0] != '\0' && strcmp(s, "core") != 0)
            return fail(p, group, sub, "group '%s' is not supported: references name a Service (group \"\")", s);
    }
    if (kind != NULL) {
        if (get_str(p, kind, join(sub, sizeof(sub), path, "kind"), &s) != 0)
            return -1;
        if (strcasecmp(s, "Service") != 0)
            return fail(p, kind, sub, "kind '%s' is not supported: references name a Service", s);
    }
    if (require(p, node, path, name, "name") != 0 || get_name(p, name, join(sub, sizeof(sub), path, "name"), name_out) != 0)
        return -1;
    *ns_out = p->ns;
    if (ns != NULL && get_name(p, ns, join(sub, sizeof(sub), path, "namespace"), ns_out) != 0)
        return -1;
    return 0;
}

static int
parse_parent_refs(parser_t *p, yaml_node_t *spec, yaml_node_t *node, size_t *n_out, Remora__V1__ParentReference ***out)
{
    static const char *const keys[] = {"group", "kind", "name", "namespace", "port", NULL};
    yaml_node_item_t *items;
    size_t n;
    if (require(p, spec, "spec", node, "parentRefs") != 0 || get_seq(p, node, "spec.parentRefs", &items, &n) != 0)
        return -1;
    if (n == 0)
        return fail(p, node, "spec.parentRefs", "needs at least one Service");
    Remora__V1__ParentReference **refs = arena_alloc(&p->arena, sizeof(refs[0]) * n);
    for (size_t i = 0; i != n; ++i) {
        char path[64], sub[128];
        yaml_node_t *it = item(p, items, i), *v[5];
        index_path(path, sizeof(path), "spec.parentRefs", i);
        if (fields(p, it, path, keys, v) != 0)
            return -1;
        Remora__V1__ParentReference *r = arena_alloc(&p->arena, sizeof(*r));
        remora__v1__parent_reference__init(r);
        const char *name, *ns;
        if (parse_ref_target(p, it, path, v[0], v[1], v[2], v[3], &name, &ns) != 0)
            return -1;
        int64_t port = 0;
        if (v[4] != NULL && get_int(p, v[4], join(sub, sizeof(sub), path, "port"), 1, 65535, &port) != 0)
            return -1;
        r->kind = "Service";
        r->name = arena_strdup(&p->arena, name);
        r->namespace_ = arena_strdup(&p->arena, ns);
        r->port = (uint32_t)port;
        add_ref(p, v[2], path, ns, name);
        refs[i] = r;
    }
    *n_out = n;
    *out = refs;
    return 0;
}

static int
parse_backend_refs(parser_t *p, yaml_node_t *rule, const char *rule_path, yaml_node_t *node, size_t *n_out,
                   Remora__V1__BackendReference ***out)
{
    static const char *const keys[] = {"group", "kind", "name", "namespace", "port", "weight", NULL};
    char list_path[96];
    yaml_node_item_t *items;
    size_t n;
    join(list_path, sizeof(list_path), rule_path, "backendRefs");
    if (require(p, rule, rule_path, node, "backendRefs") != 0 || get_seq(p, node, list_path, &items, &n) != 0)
        return -1;
    if (n == 0)
        return fail(p, node, list_path, "needs at least one backend");
    Remora__V1__BackendReference **refs = arena_alloc(&p->arena, sizeof(refs[0]) * n);
    uint64_t total = 0;
    for (size_t i = 0; i != n; ++i) {
        char path[128], sub[160];
        yaml_node_t *it = item(p, items, i), *v[6];
        index_path(path, sizeof(path), list_path, i);
        if (fields(p, it, path, keys, v) != 0)
            return -1;
        Remora__V1__BackendReference *r = arena_alloc(&p->arena, sizeof(*r));
        remora__v1__backend_reference__init(r);
        const char *name, *ns;
        if (parse_ref_target(p, it, path, v[0], v[1], v[2], v[3], &name, &ns) != 0)
            return -1;
        int64_t port = 0, weight = 1;
        if (v[4] != NULL && get_int(p, v[4], join(sub, sizeof(sub), path, "port"), 1, 65535, &port) != 0)
            return -1;
        if (v[5] != NULL && get_int(p, v[5], join(sub, sizeof(sub), path, "weight"), 0, MAX_WEIGHT, &weight) != 0)
            return -1;
        r->kind = "Service";
        r->name = arena_strdup(&p->arena, name);
        r->namespace_ = arena_strdup(&p->arena, ns);
        r->port = (uint32_t)port;
        r->weight = (uint32_t)weight;
        total += (uint64_t)weight;
        add_ref(p, v[2], path, ns, name);
        refs[i] = r;
    }
    if (total == 0)
        return fail(p, node, list_path, "every weight is 0: at least one backend needs a positive weight");
    *n_out = n;
    *out = refs;
    return 0;
}

/* -------------------------------------------------------------------------------------- timeouts */

int
rm_document_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t total = 0;
    int parts = 0;
    const char *c = s;
    if (*c == '\0')
        return -1;
    while (*c != '\0') {
        size_t digits = strspn(c, "0123456789");
        if (digits == 0 || digits > 5 || ++parts > 4)
            return -1;
        uint64_t v = strtoull(c, NULL, 10);
        c += digits;
        if (c[0] == 'm' && c[1] == 's') {
            c += 2;
        } else if (*c == 'h') {
            v *= 3600000;
            ++c;
        } else if (*c == 'm') {
            v *= 60000;
            ++c;
        } else if (*c == 's') {
            v *= 1000;
            ++c;
        } else {
            return -1;
        }
        total += v;
    }
    *ms = total;
    return 0;
}

static int
parse_duration(parser_t *p, yaml_node_t *node, const char *path, uint64_t *ms, Remora__V1__Duration **out)
{
    const char *s;
    if (get_str(p, node, path, &s) != 0)
        return -1;
    if (rm_document_parse_duration(s, ms) != 0)
        return fail(p, node, path, "'%s' is not a duration: write it as 10s, 500ms, 1m30s or 1h (units h, m, s, ms)", s);
    Remora__V1__Duration *d = arena_alloc(&p->arena, sizeof(*d));
    remora__v1__duration__init(d);
    d->seconds = (int64_t)(*ms / 1000);
    d->nanos = (int32_t)(*ms % 1000) * 1000000;
    *out = d;
    return 0;
}

static int
parse_timeouts(parser_t *p, yaml_node_t *node, const char *rule_path, Remora__V1__RouteTimeouts **out)
{
    static const char *const keys[] = {"request", "backendRequest", NULL};
    char path[96], sub[128];
    yaml_node_t *v[2];
    join(path, sizeof(path), rule_path, "timeouts");
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__RouteTimeouts *t = arena_alloc(&p->arena, sizeof(*t));
    remora__v1__route_timeouts__init(t);
    uint64_t req = 0, backend = 0;
    if (v[0] != NULL && parse_duration(p, v[0], join(sub, sizeof(sub), path, "request"), &req, &t->request) != 0)
        return -1;
    if (v[1] != NULL && parse_duration(p, v[1], join(sub, sizeof(sub), path, "backendRequest"), &backend, &t->backend_request) != 0)
        return -1;
    if (req != 0 && backend > req)
        return fail(p, v[1], join(sub, sizeof(sub), path, "backendRequest"), "must not be longer than request (%s)",
                    (const char *)v[0]->data.scalar.value);
    *out = t;
    return 0;
}

/* --------------------------------------------------------------------------------------- matches */

static int
is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; ++s)
        if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return 0;
    return 1;
}

static int
parse_header_matches(parser_t *p, yaml_node_t *node, const char *match_path, size_t *n_out, Remora__V1__HeaderMatch ***out)
{
    static const char *const keys[] = {"type", "name", "value", NULL};
    char list_path[160];
    yaml_node_item_t *items;
    size_t n;
    join(list_path, sizeof(list_path), match_path, "headers");
    if (get_seq(p, node, list_path, &items, &n) != 0)
        return -1;
    Remora__V1__HeaderMatch **hs = arena_alloc(&p->arena, sizeof(hs[0]) * (n + 1));
    for (size_t i = 0; i != n; ++i) {
        char path[192], sub[224];
        yaml_node_t *it = item(p, items, i), *v[3];
        index_path(path, sizeof(path), list_path, i);
        if (fields(p, it, path, keys, v) != 0 || require(p, it, path, v[1], "name") != 0 ||
            require(p, it, path, v[2], "value") != 0)
            return -1;
        Remora__V1__HeaderMatch *h = arena_alloc(&p->arena, sizeof(*h));
        remora__v1__header_match__init(h);
        const char *type = "Exact", *name, *value;
        if (v[0] != NULL && get_str(p, v[0], join(sub, sizeof(sub), path, "type"), &type) != 0)
            return -1;
        if (get_str(p, v[1], join(sub, sizeof(sub), path, "name"), &name) != 0)
            return -1;
        if (!is_token(name) || name[0] == ':')
            return fail(p, v[1], sub, "'%s' is not a valid header name", name);
        if (get_str(p, v[2], join(sub, sizeof(sub), path, "value"), &value) != 0)
            return -1;
        if (strpbrk(value, "\r\n") != NULL)
            return fail(p, v[2], sub, "must not contain line breaks");
        char *lower = arena_strdup(&p->arena, name);
        for (char *c = lower; *c != '\0'; ++c)
            *c = (char)tolower((unsigned char)*c);
        h->name = lower;
        if (strcmp(type, "Exact") == 0) {
            h->match_case = REMORA__V1__HEADER_MATCH__MATCH_EXACT;
            h->exact = arena_strdup(&p->arena, value);
        } else if (strcmp(type, "RegularExpression") == 0) {
            if (check_regex(p, v[2], sub, value) != 0)
                return -1;
            h->match_case = REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION;
            h->regular_expression = arena_strdup(&p->arena, value);
        } else {
            return fail(p, v[0], join(sub, sizeof(sub), path, "type"), "unknown type '%s' (use Exact or RegularExpression)", type);
        }
        hs[i] = h;
    }
    *n_out = n;
    *out = hs;
    return 0;
}

static int
parse_path_match(parser_t *p, yaml_node_t *node, const char *match_path, Remora__V1__HTTPPathMatch **out)
{
    static const char *const keys[] = {"type", "value", NULL};
    char path[160], sub[192];
    yaml_node_t *v[2] = {NULL, NULL};
    const char *type = "PathPrefix", *value = "/";
    join(path, sizeof(path), match_path, "path");
    if (node != NULL) {
        if (fields(p, node, path, keys, v) != 0)
            return -1;
        if (v[0] != NULL && get_str(p, v[0], join(sub, sizeof(sub), path, "type"), &type) != 0)
            return -1;
        if (v[1] != NULL && get_str(p, v[1], join(sub, sizeof(sub), path, "value"), &value) != 0)
            return -1;
    }
    Remora__V1__HTTPPathMatch *m = arena_alloc(&p->arena, sizeof(*m));
    remora__v1__httppath_match__init(m);
    join(sub, sizeof(sub), path, "value");
    if (strcmp(type, "Exact") == 0 || strcmp(type, "PathPrefix") == 0) {
        if (value[0] != '/')
            return fail(p, v[1] != NULL ? v[1] : node, sub, "'%s' must start with '/'", value);
        if (strpbrk(value, "?# \t\r\n") != NULL)
            return fail(p, v[1], sub, "'%s' must not contain '?', '#' or white space", value);
        if (type[0] == 'E') {
            m->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_EXACT;
            m->exact = arena_strdup(&p->arena, value);
        } else {
            m->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX;
            m->prefix = arena_strdup(&p->arena, value);
        }
    } else if (strcmp(type, "RegularExpression") == 0) {
        if (check_regex(p, v[1] != NULL ? v[1] : node, sub, value) != 0)
            return -1;
        m->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION;
        m->regular_expression = arena_strdup(&p->arena, value);
    } else {
        return fail(p, v[0], join(sub, sizeof(sub), path, "type"), "unknown type '%s' (use Exact, PathPrefix or RegularExpression)",
                    type);
    }
    *out = m;
    return 0;
}

static int
parse_http_match(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__HTTPRouteMatch **out)
{
    static const char *const keys[] = {"path", "headers", "method", NULL};
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL};
    yaml_node_t *v[3];
    char sub[192];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__HTTPRouteMatch *m = arena_alloc(&p->arena, sizeof(*m));
    remora__v1__httproute_match__init(m);
    if (parse_path_match(p, v[0], path, &m->path) != 0)
        return -1;
    if (v[1] != NULL && parse_header_matches(p, v[1], path, &m->n_headers, &m->headers) != 0)
        return -1;
    if (v[2] != NULL) {
        const char *method;
        if (get_str(p, v[2], join(sub, sizeof(sub), path, "method"), &method) != 0)
            return -1;
        size_t i;
        for (i = 0; methods[i] != NULL; ++i)
            if (strcmp(methods[i], method) == 0)
                break;
        if (methods[i] == NULL)
            return fail(p, v[2], sub, "unknown method '%s' (use GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH)",
                        method);
        m->method = (char *)methods[i];
    }
    *out = m;
    return 0;
}

static int
is_grpc_name(const char *s, int dots)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; ++s)
        if (!(isalnum((unsigned char)*s) || *s == '_' || (dots && *s == '.')))
            return 0;
    return 1;
}

static int
parse_grpc_match(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__GRPCRouteMatch **out)
{
    static const char *const keys[] = {"method", "headers", NULL};
    static const char *const mkeys[] = {"type", "service", "method", NULL};
    yaml_node_t *v[2], *mv[3];
    char mpath[192], sub[224];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__GRPCRouteMatch *m = arena_alloc(&p->arena, sizeof(*m));
    remora__v1__grpcroute_match__init(m);
    if (v[0] != NULL) {
        join(mpath, sizeof(mpath), path, "method");
        if (fields(p, v[0], mpath, mkeys, mv) != 0)
            return -1;
        Remora__V1__GRPCMethodMatch *mm = arena_alloc(&p->arena, sizeof(*mm));
        remora__v1__grpcmethod_match__init(mm);
        const char *type = "Exact", *service = "", *method = "";
        if (mv[0] != NULL && get_str(p, mv[0], join(sub, sizeof(sub), mpath, "type"), &type) != 0)
            return -1;
        if (mv[1] != NULL && get_str(p, mv[1], join(sub, sizeof(sub), mpath, "service"), &service) != 0)
            return -1;
        if (mv[2] != NULL && get_str(p, mv[2], join(sub, sizeof(sub), mpath, "method"), &method) != 0)
            return -1;
        if (strcmp(type, "Exact") == 0) {
            mm->type = REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_EXACT;
            if (service[0] == '\0' && method[0] == '\0')
                return fail(p, v[0], mpath, "give a service, a method, or both");
            if (service[0] != '\0' && !is_grpc_name(service, 1))
                return fail(p, mv[1], join(sub, sizeof(sub), mpath, "service"),
                            "'%s' is not a gRPC service name (letters, digits, '_' and '.', as in pkg.Service)", service);
            if (method[0] != '\0' && !is_grpc_name(method, 0))
                return fail(p, mv[2], join(sub, sizeof(sub), mpath, "method"),
                            "'%s' is not a gRPC method name (letters, digits and '_')", method);
        } else if (strcmp(type, "RegularExpression") == 0) {
            mm->type = REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION;
            if (service[0] != '\0' && check_regex(p, mv[1], join(sub, sizeof(sub), mpath, "service"), service) != 0)
                return -1;
            if (method[0] != '\0' && check_regex(p, mv[2], join(sub, sizeof(sub), mpath, "method"), method) != 0)
                return -1;
        } else {
            return fail(p, mv[0], join(sub, sizeof(sub), mpath, "type"), "unknown type '%s' (use Exact or RegularExpression)",
                        type);
        }
        mm->service = arena_strdup(&p->arena, service);
        mm->method = arena_strdup(&p->arena, method);
        m->method = mm;
    }
    if (v[1] != NULL && parse_header_matches(p, v[1], path, &m->n_headers, &m->headers) != 0)
        return -1;
    *out = m;
    return 0;
}

/* ----------------------------------------------------------------------------------------- routes */

/* HTTPRoute and GRPCRoute rules differ only in their match type. */
typedef struct st_rule_out_t {
    size_t *n_matches;
    void ***matches;
    size_t *n_backend_refs;
    Remora__V1__BackendReference ***backend_refs;
    Remora__V1__RouteTimeouts **timeouts;
} rule_out_t;

static int
parse_rule(parser_t *p, yaml_node_t *node, const char *path, int grpc, rule_out_t *out)
{
    static const char *const keys[] = {"matches", "backendRefs", "timeouts", NULL};
    yaml_node_t *v[3];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    if (v[0] != NULL) {
        char list_path[128];
        yaml_node_item_t *items;
        size_t n;
        join(list_path, sizeof(list_path), path, "matches");
        if (get_seq(p, v[0], list_path, &items, &n) != 0)
            return -1;
        void **ms = arena_alloc(&p->arena, sizeof(ms[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char mpath[160];
            index_path(mpath, sizeof(mpath), list_path, i);
            int rc = grpc ? parse_grpc_match(p, item(p, items, i), mpath, (Remora__V1__GRPCRouteMatch **)&ms[i])
                          : parse_http_match(p, item(p, items, i), mpath, (Remora__V1__HTTPRouteMatch **)&ms[i]);
            if (rc != 0)
                return -1;
        }
        *out->n_matches = n;
        *out->matches = ms;
    }
    if (parse_backend_refs(p, node, path, v[1], out->n_backend_refs, out->backend_refs) != 0)
        return -1;
    if (v[2] != NULL && parse_timeouts(p, v[2], path, out->timeouts) != 0)
        return -1;
    return 0;
}

static int
parse_rules(parser_t *p, yaml_node_t *spec, yaml_node_t *node, int grpc, size_t *n_out, void ***out)
{
    yaml_node_item_t *items;
    size_t n;
    if (require(p, spec, "spec", node, "rules") != 0 || get_seq(p, node, "spec.rules", &items, &n) != 0)
        return -1;
    if (n == 0)
        return fail(p, node, "spec.rules", "needs at least one rule");
    void **rules = arena_alloc(&p->arena, sizeof(rules[0]) * n);
    for (size_t i = 0; i != n; ++i) {
        char path[64];
        index_path(path, sizeof(path), "spec.rules", i);
        rule_out_t o;
        if (grpc) {
            Remora__V1__GRPCRouteRule *r = arena_alloc(&p->arena, sizeof(*r));
            remora__v1__grpcroute_rule__init(r);
            o = (rule_out_t){&r->n_matches, (void ***)&r->matches, &r->n_backend_refs, &r->backend_refs, &r->timeouts};
            rules[i] = r;
        } else {
            Remora__V1__HTTPRouteRule *r = arena_alloc(&p->arena, sizeof(*r));
            remora__v1__httproute_rule__init(r);
            o = (rule_out_t){&r->n_matches, (void ***)&r->matches, &r->n_backend_refs, &r->backend_refs, &r->timeouts};
            rules[i] = r;
        }
        if (parse_rule(p, item(p, items, i), path, grpc, &o) != 0)
            return -1;
    }
    *n_out = n;
    *out = rules;
    return 0;
}

static ProtobufCMessage *
parse_route(parser_t *p, yaml_node_t *node, Remora__V1__ObjectMeta *meta, int grpc)
{
    static const char *const keys[] = {"parentRefs", "rules", NULL};
    yaml_node_t *v[2];
    if (fields(p, node, "spec", keys, v) != 0)
        return NULL;
    if (grpc) {
        Remora__V1__GRPCRoute *r = arena_alloc(&p->arena, sizeof(*r));
        remora__v1__grpcroute__init(r);
        r->metadata = meta;
        r->spec = arena_alloc(&p->arena, sizeof(*r->spec));
        remora__v1__grpcroute_spec__init(r->spec);
        if (parse_parent_refs(p, node, v[0], &r->spec->n_parent_refs, &r->spec->parent_refs) != 0 ||
            parse_rules(p, node, v[1], 1, &r->spec->n_rules, (void ***)&r->spec->rules) != 0)
            return NULL;
        return &r->base;
    }
    Remora__V1__HTTPRoute *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__httproute__init(r);
    r->metadata = meta;
    r->spec = arena_alloc(&p->arena, sizeof(*r->spec));
    remora__v1__httproute_spec__init(r->spec);
    if (parse_parent_refs(p, node, v[0], &r->spec->n_parent_refs, &r->spec->parent_refs) != 0 ||
        parse_rules(p, node, v[1], 0, &r->spec->n_rules, (void ***)&r->spec->rules) != 0)
        return NULL;
    return &r->base;
}

/* --------------------------------------------------------------------------------------- document */

static void
parse_document(parser_t *p, yaml_node_t *root)
{
    static const char *const keys[] = {"apiVersion", "kind", "metadata", "spec", NULL};
    yaml_node_t *v[4];
    const char *s;
    rm_kind_t kind;
    p->prefix[0] = '\0';
    if (root->type != YAML_MAPPING_NODE) {
        fail(p, root, "", "a document must be a mapping with apiVersion, kind, metadata and spec; got %s", rm_yaml_type_name(root));
        return;
    }
    if (fields(p, root, "", keys, v) != 0 || require(p, root, "", v[1], "kind") != 0 || get_str(p, v[1], "kind", &s) != 0)
        return;
    if (rm_kind_parse(s, &kind) != 0) {
        fail(p, v[1], "", "unknown kind '%s' (known: %s)", s, rm_kind_list());
        return;
    }
    if (v[0] == NULL) {
        fail(p, root, "apiVersion", "is required (%s)", API_VERSION);
        return;
    }
    if (get_str(p, v[0], "apiVersion", &s) != 0)
        return;
    if (strcmp(s, API_VERSION) != 0) {
        fail(p, v[0], "apiVersion", "'%s' is not supported: use %s", s, API_VERSION);
        return;
    }
    Remora__V1__ObjectMeta *meta;
    if (require(p, root, "", v[2], "metadata") != 0 || parse_metadata(p, v[2], kind, &meta) != 0 ||
        require(p, root, "", v[3], "spec") != 0)
        return;
    ProtobufCMessage *msg = NULL;
    if (kind == RM_KIND_SERVICE) {
        Remora__V1__Service *svc = arena_alloc(&p->arena, sizeof(*svc));
        remora__v1__service__init(svc);
        svc->metadata = meta;
        if (parse_service_spec(p, v[3], &svc->spec) != 0)
            return;
        msg = &svc->base;
    } else if ((msg = parse_route(p, v[3], meta, kind == RM_KIND_GRPC_ROUTE)) == NULL) {
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *bytes = rm_malloc(len);
    protobuf_c_message_pack(msg, bytes);
    rm_resource_t *r = rm_resource_create(kind, bytes, len);
    free(bytes);
    if (r == NULL)
        rm_fatal("a resource built from a valid document does not unpack");
    r->file = rm_strdup(p->file);
    r->line = rm_yaml_line(root);
    rm_resource_list_push(&p->batch->resources, r);
    /* the references become the batch's only now that the document passed */
    rm_batch_t *b = p->batch;
    if (p->num_refs != 0) {
        b->refs = rm_realloc(b->refs, (b->num_refs + p->num_refs) * sizeof(b->refs[0]));
        memcpy(b->refs + b->num_refs, p->refs, p->num_refs * sizeof(p->refs[0]));
        b->num_refs += p->num_refs;
        p->num_refs = 0;
    }
}

void
rm_batch_init(rm_batch_t *b)
{
    memset(b, 0, sizeof(*b));
}

void
rm_batch_dispose(rm_batch_t *b)
{
    rm_resource_list_dispose(&b->resources);
    rm_doc_errors_dispose(&b->errors);
    for (size_t i = 0; i != b->num_refs; ++i)
        free_ref(&b->refs[i]);
    free(b->refs);
    memset(b, 0, sizeof(*b));
}

void
rm_batch_parse(rm_batch_t *b, const char *file, const void *text, size_t len)
{
    if (len > RM_DOCUMENT_MAX_BYTES) {
        rm_doc_errors_add(&b->errors, file, 0, "file too large (%zu bytes; at most %d)", len, RM_DOCUMENT_MAX_BYTES);
        return;
    }
    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp))
        rm_fatal("out of memory initializing libyaml");
    /* libyaml asserts on a NULL input, which an empty protobuf bytes field is */
    yaml_parser_set_input_string(&yp, len != 0 ? text : (const void *)"", len);
    parser_t p = {.batch = b, .file = file, .budget = RM_DOCUMENT_MAX_NODES};
    for (;;) {
        if (!yaml_parser_load(&yp, &p.doc)) {
            unsigned line = (unsigned)(yp.problem_mark.line + 1);
            if (yp.context != NULL)
                rm_doc_errors_add(&b->errors, file, line, "YAML syntax error: %s %s", yp.problem ? yp.problem : "error",
                                  yp.context);
            else
                rm_doc_errors_add(&b->errors, file, line, "YAML syntax error: %s", yp.problem ? yp.problem : "error");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&p.doc);
        if (root == NULL) { /* end of the stream */
            yaml_document_delete(&p.doc);
            break;
        }
        if (!rm_yaml_is_null(root)) { /* an empty document between two "---" is not an error */
            ++b->num_documents;
            parse_document(&p, root);
            for (size_t i = 0; i != p.num_refs; ++i)
                free_ref(&p.refs[i]);
            p.num_refs = 0;
            arena_dispose(&p.arena);
        }
        yaml_document_delete(&p.doc);
    }
    free(p.refs);
    yaml_parser_delete(&yp);
}

static int
find_in_batch(rm_batch_t *b, rm_kind_t kind, const char *ns, const char *name)
{
    for (size_t i = 0; i != b->resources.size; ++i) {
        rm_resource_t *r = b->resources.entries[i];
        if (r != NULL && r->kind == kind && strcmp(r->ns, ns) == 0 && strcmp(r->name, name) == 0)
            return 1;
    }
    return 0;
}

/* Errors in file order, then line order, whichever check found them (stable: insertion sort of at most ~100). */
static void
sort_errors(rm_batch_t *b)
{
    rm_doc_error_t *e = b->errors.entries;
    size_t n = b->errors.size, *rank = rm_calloc(n + 1, sizeof(*rank));
    for (size_t i = 0; i != n; ++i) {
        rank[i] = i;
        for (size_t j = 0; j != i; ++j) {
            if (strcmp(e[j].file, e[i].file) == 0) {
                rank[i] = rank[j];
                break;
            }
        }
    }
    for (size_t i = 1; i < n; ++i) {
        rm_doc_error_t x = e[i];
        size_t r = rank[i], j = i;
        while (j > 0 && (rank[j - 1] > r || (rank[j - 1] == r && e[j - 1].line > x.line && x.line != 0))) {
            e[j] = e[j - 1];
            rank[j] = rank[j - 1];
            --j;
        }
        e[j] = x;
        rank[j] = r;
    }
    free(rank);
}

void
rm_batch_check(rm_batch_t *b, rm_batch_exists_cb exists, void *ctx)
{
    for (size_t i = 0; i != b->resources.size; ++i) {
        rm_resource_t *r = b->resources.entries[i];
        for (size_t j = 0; j != i; ++j) {
            rm_resource_t *q = b->resources.entries[j];
            if (q->kind == r->kind && strcmp(q->ns, r->ns) == 0 && strcmp(q->name, r->name) == 0) {
                rm_doc_errors_add(&b->errors, r->file, r->line, "%s/%s (namespace %s) is defined twice; first at %s:%u",
                                  rm_kind_lower(r->kind), r->name, r->ns, q->file, q->line);
                break;
            }
        }
    }
    for (size_t i = 0; i != b->num_refs; ++i) {
        rm_ref_t *ref = &b->refs[i];
        if (find_in_batch(b, RM_KIND_SERVICE, ref->ns, ref->name) ||
            (exists != NULL && exists(ctx, RM_KIND_SERVICE, ref->ns, ref->name)))
            continue;
        rm_doc_errors_add(&b->errors, ref->file, ref->line,
                          "%s: Service '%s' does not exist in namespace '%s' (apply it first, or in the same apply)", ref->what,
                          ref->name, ref->ns);
    }
    sort_errors(b);
}
