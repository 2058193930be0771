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
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "remora/yamlutil.h"
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "document.h"

#define API_VERSION "remora.dev/v1"
#define MAX_WEIGHT 1000000
/* the agent's bounds (agent/src/config/config_priv.h): a larger value would be NACKed */
#define MAX_RATE 10000000

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

/*
 * Fields that belong to the document's shape but that this version does not take yet: naming them
 * says so, instead of "unknown field". Call before fields().
 */
static int
reject_planned(parser_t *p, yaml_node_t *map, const char *path, const char *const *planned)
{
    if (map->type != YAML_MAPPING_NODE)
        return 0;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair != map->data.mapping.pairs.top; ++pair) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
        if (k->type != YAML_SCALAR_NODE)
            continue;
        for (const char *const *q = planned; *q != NULL; ++q) {
            if (strcmp(*q, (const char *)k->data.scalar.value) == 0) {
                char sub[256];
                return fail(p, k, join(sub, sizeof(sub), path, *q), "is not supported yet by this version of Remora");
            }
        }
    }
    return 0;
}

/* A scalar as a string; points into the YAML document. */
static int
get_str(parser_t *p, yaml_node_t *node, const char *path, const char **out)
{
    *out = NULL; /* on every path: GCC's Release build cannot tell that callers read it only on success */
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
    *out = 0;
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
    *items = NULL;
    *n = 0;
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
    *out = NULL;
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

/* The agent matches with PCRE2, anchored at both ends, bytes rather than UTF-8 (agent/src/router/match.c):
 * checking with the same engine, options and size limit here means a pattern that passes is one the
 * agent compiles. */
#define MAX_REGEX_BYTES 4096
#define REGEX_OPTIONS (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP)

static int
check_regex(parser_t *p, yaml_node_t *node, const char *path, const char *re)
{
    int code;
    PCRE2_SIZE offset;
    if (strlen(re) > MAX_REGEX_BYTES)
        return fail(p, node, path, "the regular expression is longer than %d bytes", MAX_REGEX_BYTES);
    pcre2_code *rx = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, REGEX_OPTIONS, &code, &offset, NULL);
    if (rx == NULL) {
        PCRE2_UCHAR err[128];
        if (pcre2_get_error_message(code, err, sizeof(err)) < 0)
            snprintf((char *)err, sizeof(err), "error %d", code);
        return fail(p, node, path, "invalid regular expression '%s': %s at offset %zu (PCRE2 syntax)", re, (const char *)err,
                    (size_t)offset);
    }
    pcre2_code_free(rx);
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
        static const char *const keys[] = {"address", "dns", "weight", "serviceAccount", NULL};
        yaml_node_t *v[4];
        if (fields(p, node, path, keys, v) != 0)
            return -1;
        if (v[3] != NULL) {
            /* this endpoint's workload runs as another service account than the Service's (docs/mesh-tls.md) */
            if (get_name(p, v[3], join(sub, sizeof(sub), path, "serviceAccount"), &s) != 0)
                return -1;
            ep->service_account = arena_strdup(&p->arena, s);
        }
        if ((v[0] == NULL) == (v[1] == NULL))
            return fail(p, node, path, "give exactly one of 'address' (IP:PORT) or 'dns' (NAME:PORT)");
        int64_t weight = 1;
        if (v[2] != NULL && get_int(p, v[2], join(sub, sizeof(sub), path, "weight"), 1, MAX_WEIGHT, &weight) != 0)
            return -1;
        /* 1 is the default: left out of the resource, so that old documents keep their bytes */
        ep->weight = weight != 1 ? (uint32_t)weight : 0;
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
    static const char *const keys[] = {"protocol", "endpoints", "addresses", "meshed", "serviceAccount", NULL};
    yaml_node_t *v[5];
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
    else if (strcasecmp(proto, "tcp") == 0)
        spec->protocol = REMORA__V1__PROTOCOL__PROTOCOL_TCP;
    else
        return fail(p, v[0], "spec.protocol", "unknown protocol '%s' (use grpc, http2, http1 or tcp)", proto);
    /* the endpoints run an agent unless told otherwise (docs/transparent.md, "Agent to agent") */
    spec->meshed = 1;
    if (v[3] != NULL) {
        const char *m;
        if (get_str(p, v[3], "spec.meshed", &m) != 0)
            return -1;
        if (strcmp(m, "true") == 0)
            spec->meshed = 1;
        else if (strcmp(m, "false") == 0)
            spec->meshed = 0;
        else
            return fail(p, v[3], "spec.meshed", "'%s' must be true or false", m);
    }
    if (v[4] != NULL) {
        /* the endpoints' workloads' service account: the sa of the SPIFFE ID their agents present (docs/mesh-tls.md) */
        const char *sa;
        if (get_name(p, v[4], "spec.serviceAccount", &sa) != 0)
            return -1;
        if (strcmp(sa, "default") != 0)
            spec->service_account = arena_strdup(&p->arena, sa);
    }
    if (v[2] != NULL) {
        /* virtual addresses (docs/transparent.md): IP literals with a port, no wildcard, no repeat */
        yaml_node_item_t *items;
        size_t n;
        if (get_seq(p, v[2], "spec.addresses", &items, &n) != 0)
            return -1;
        spec->addresses = arena_alloc(&p->arena, sizeof(spec->addresses[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char sub[64], host[256];
            unsigned port;
            const char *s;
            yaml_node_t *it = item(p, items, i);
            index_path(sub, sizeof(sub), "spec.addresses", i);
            if (get_str(p, it, sub, &s) != 0 || check_address(p, it, sub, s, 0) != 0 ||
                split_host_port(p, it, sub, s, host, sizeof(host), &port) != 0)
                return -1;
            if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
                return fail(p, it, sub, "'%s' is a wildcard, not a virtual address", s);
            for (size_t j = 0; j != i; ++j)
                if (strcmp(spec->addresses[j], s) == 0)
                    return fail(p, it, sub, "'%s' is listed twice", s);
            spec->addresses[i] = arena_strdup(&p->arena, s);
        }
        spec->n_addresses = n;
    }
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
add_ref(parser_t *p, yaml_node_t *node, const char *path, rm_kind_t kind, const char *ns, const char *name)
{
    p->refs = rm_realloc(p->refs, (p->num_refs + 1) * sizeof(p->refs[0]));
    rm_ref_t *r = &p->refs[p->num_refs++];
    r->kind = kind;
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
        add_ref(p, v[2], path, RM_KIND_SERVICE, ns, name);
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
        add_ref(p, v[2], path, RM_KIND_SERVICE, ns, name);
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
            /* the agent matches "/(?:service)/(?:method)" as one expression */
            if (strlen(service) + strlen(method) + 16 > MAX_REGEX_BYTES)
                return fail(p, v[0], mpath, "service and method together must be shorter than %d bytes", MAX_REGEX_BYTES - 16);
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

/* ------------------------------------------------------------------------------------ durations */

/* A duration within [min_ms, max_ms]; `range` says so in the error ("must be from 1ms to 1h"). */
static int
parse_duration_in(parser_t *p, yaml_node_t *node, const char *path, uint64_t min_ms, uint64_t max_ms, const char *range,
                  uint64_t *ms, Remora__V1__Duration **out)
{
    if (parse_duration(p, node, path, ms, out) != 0)
        return -1;
    if (*ms < min_ms || *ms > max_ms)
        return fail(p, node, path, "%s, got %s", range, (const char *)node->data.scalar.value);
    return 0;
}

static Remora__V1__Duration *
duration_of(parser_t *p, uint64_t ms)
{
    Remora__V1__Duration *d = arena_alloc(&p->arena, sizeof(*d));
    remora__v1__duration__init(d);
    d->seconds = (int64_t)(ms / 1000);
    d->nanos = (int32_t)(ms % 1000) * 1000000;
    return d;
}

#define HOUR_MS (3600 * (uint64_t)1000)
#define DAY_MS (24 * HOUR_MS)

/* ---------------------------------------------------------------------------------- gRPC status */

/* A gRPC status name other than OK ("UNAVAILABLE"; case-insensitive, as gRPC's own tools take them). */
static int
parse_grpc_status(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__GRPCStatusCode *out)
{
    const char *s;
    if (get_str(p, node, path, &s) != 0)
        return -1;
    if (strcasecmp(s, "OK") == 0)
        return fail(p, node, path, "OK is not an error status: use one such as UNAVAILABLE");
    for (int i = 1; i != RM_GRPC_NUM_STATUSES; ++i) {
        if (strcasecmp(rm_grpc_status_names[i], s) == 0) {
            *out = (Remora__V1__GRPCStatusCode)i;
            return 0;
        }
    }
    return fail(p, node, path,
                "'%s' is not a gRPC status name (use CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, "
                "ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, "
                "UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS or UNAUTHENTICATED)",
                s);
}

/* ----------------------------------------------------------------------------------------- retry */

static const struct {
    const char *name;
    Remora__V1__RetryCondition value;
} retry_conditions[] = {
    {"connect-failure", REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE},
    {"refused-stream", REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_REFUSED_STREAM},
    {"reset", REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_RESET},
};

#define MAX_RETRY_ATTEMPTS 10
#define DEFAULT_RETRY_ATTEMPTS 1
#define DEFAULT_RETRY_BACKOFF_MS 25

/* HTTPRouteRetry and GRPCRouteRetry share everything but the type of `codes`. */
typedef struct st_retry_out_t {
    uint32_t *attempts;
    Remora__V1__Duration **backoff;
    size_t *n_conditions;
    Remora__V1__RetryCondition **conditions;
} retry_out_t;

static int
parse_retry(parser_t *p, yaml_node_t *node, const char *rule_path, int grpc, ProtobufCMessage **out)
{
    static const char *const keys[] = {"attempts", "backoff", "codes", "conditions", NULL};
    char path[128], sub[160];
    yaml_node_t *v[4];
    join(path, sizeof(path), rule_path, "retry");
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    retry_out_t o;
    if (grpc) {
        Remora__V1__GRPCRouteRetry *r = arena_alloc(&p->arena, sizeof(*r));
        remora__v1__grpcroute_retry__init(r);
        o = (retry_out_t){&r->attempts, &r->backoff, &r->n_conditions, &r->conditions};
        yaml_node_item_t *items = NULL;
        size_t n = 1;
        if (v[2] != NULL && get_seq(p, v[2], join(sub, sizeof(sub), path, "codes"), &items, &n) != 0)
            return -1;
        r->codes = arena_alloc(&p->arena, sizeof(r->codes[0]) * (n + 1));
        if (v[2] == NULL) {
            r->codes[0] = REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE;
        } else {
            for (size_t i = 0; i != n; ++i) {
                char ipath[192];
                index_path(ipath, sizeof(ipath), sub, i);
                if (parse_grpc_status(p, item(p, items, i), ipath, &r->codes[i]) != 0)
                    return -1;
                for (size_t j = 0; j != i; ++j)
                    if (r->codes[j] == r->codes[i])
                        return fail(p, item(p, items, i), ipath, "%s is listed twice", rm_grpc_status_names[r->codes[i]]);
            }
        }
        r->n_codes = n;
        *out = &r->base;
    } else {
        Remora__V1__HTTPRouteRetry *r = arena_alloc(&p->arena, sizeof(*r));
        remora__v1__httproute_retry__init(r);
        o = (retry_out_t){&r->attempts, &r->backoff, &r->n_conditions, &r->conditions};
        yaml_node_item_t *items = NULL;
        size_t n = 1;
        if (v[2] != NULL && get_seq(p, v[2], join(sub, sizeof(sub), path, "codes"), &items, &n) != 0)
            return -1;
        r->codes = arena_alloc(&p->arena, sizeof(r->codes[0]) * (n + 1));
        if (v[2] == NULL) {
            r->codes[0] = 503;
        } else {
            for (size_t i = 0; i != n; ++i) {
                char ipath[192];
                int64_t code;
                index_path(ipath, sizeof(ipath), sub, i);
                if (get_int(p, item(p, items, i), ipath, 400, 599, &code) != 0)
                    return -1;
                r->codes[i] = (uint32_t)code;
                for (size_t j = 0; j != i; ++j)
                    if (r->codes[j] == r->codes[i])
                        return fail(p, item(p, items, i), ipath, "%u is listed twice", r->codes[i]);
            }
        }
        r->n_codes = n;
        *out = &r->base;
    }
    int64_t attempts = DEFAULT_RETRY_ATTEMPTS;
    if (v[0] != NULL && get_int(p, v[0], join(sub, sizeof(sub), path, "attempts"), 0, MAX_RETRY_ATTEMPTS, &attempts) != 0)
        return -1;
    *o.attempts = (uint32_t)attempts;
    uint64_t ms;
    if (v[1] != NULL) {
        if (parse_duration_in(p, v[1], join(sub, sizeof(sub), path, "backoff"), 1, 60000, "must be from 1ms to 1m", &ms,
                              o.backoff) != 0)
            return -1;
    } else {
        *o.backoff = duration_of(p, DEFAULT_RETRY_BACKOFF_MS);
    }
    /* Without a list, the failures where the backend surely never saw the request (what the Gateway
     * API says implementations SHOULD retry); `reset` may replay a processed request, so it is opt-in. */
    yaml_node_item_t *items = NULL;
    size_t n = 2;
    if (v[3] != NULL && get_seq(p, v[3], join(sub, sizeof(sub), path, "conditions"), &items, &n) != 0)
        return -1;
    Remora__V1__RetryCondition *conds = arena_alloc(&p->arena, sizeof(conds[0]) * (n + 1));
    if (v[3] == NULL) {
        conds[0] = REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE;
        conds[1] = REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_REFUSED_STREAM;
    } else {
        for (size_t i = 0; i != n; ++i) {
            char ipath[192];
            const char *s;
            index_path(ipath, sizeof(ipath), sub, i);
            if (get_str(p, item(p, items, i), ipath, &s) != 0)
                return -1;
            size_t k;
            for (k = 0; k != sizeof(retry_conditions) / sizeof(retry_conditions[0]); ++k)
                if (strcmp(retry_conditions[k].name, s) == 0)
                    break;
            if (k == sizeof(retry_conditions) / sizeof(retry_conditions[0]))
                return fail(p, item(p, items, i), ipath, "unknown condition '%s' (use connect-failure, refused-stream or reset)",
                            s);
            conds[i] = retry_conditions[k].value;
            for (size_t j = 0; j != i; ++j)
                if (conds[j] == conds[i])
                    return fail(p, item(p, items, i), ipath, "'%s' is listed twice", s);
        }
    }
    *o.n_conditions = n;
    *o.conditions = conds;
    return 0;
}

/* --------------------------------------------------------------------------------------- filters */

#define MAX_FILTERS 16
#define MAX_HEADER_ACTIONS 16

/* `op` 0 set, 1 add, 2 remove; `request`: a RequestHeaderModifier. The fields the agent manages
 * itself cannot be modified. */
static int
get_header_name(parser_t *p, yaml_node_t *node, const char *path, int request, int op, char **out)
{
    *out = NULL;
    static const char *const managed[] = {"connection",        "keep-alive", "proxy-connection", "te",
                                          "transfer-encoding", "upgrade",    "content-length"};
    const char *name;
    if (get_str(p, node, path, &name) != 0)
        return -1;
    if (!is_token(name) || strlen(name) > 256)
        return fail(p, node, path, "'%s' is not a valid header name (letters, digits and !#$%%&'*+-.^_`|~; at most 256)", name);
    for (size_t i = 0; i != sizeof(managed) / sizeof(managed[0]); ++i)
        if (strcasecmp(name, managed[i]) == 0)
            return fail(p, node, path, "'%s' cannot be modified: the agent manages it per connection and message", name);
    if (request && op != 0 && strcasecmp(name, "host") == 0)
        return fail(p, node, path, "'host' can only be set (which sets the request's authority)");
    char *lower = arena_strdup(&p->arena, name);
    for (char *c = lower; *c != '\0'; ++c)
        *c = (char)tolower((unsigned char)*c);
    *out = lower;
    return 0;
}

/* Gateway API HTTPHeaderFilter; names are stored lower-case, and each appears in one action only. */
static int
parse_header_filter(parser_t *p, yaml_node_t *node, const char *path, int request, Remora__V1__HTTPHeaderFilter **out)
{
    static const char *const keys[] = {"set", "add", "remove", NULL};
    static const char *const hkeys[] = {"name", "value", NULL};
    yaml_node_t *v[3];
    char sub[224], ipath[256], fpath[288];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__HTTPHeaderFilter *f = arena_alloc(&p->arena, sizeof(*f));
    remora__v1__httpheader_filter__init(f);
    /* every name seen so far, for the one-action-per-name rule */
    const char *seen[3 * MAX_HEADER_ACTIONS];
    yaml_node_t *seen_at[3 * MAX_HEADER_ACTIONS];
    size_t num_seen = 0;
    for (int list = 0; list != 3; ++list) {
        yaml_node_item_t *items;
        size_t n;
        if (v[list] == NULL)
            continue;
        join(sub, sizeof(sub), path, keys[list]);
        if (get_seq(p, v[list], sub, &items, &n) != 0)
            return -1;
        if (n > MAX_HEADER_ACTIONS)
            return fail(p, v[list], sub, "at most %d entries, got %zu", MAX_HEADER_ACTIONS, n);
        Remora__V1__HTTPHeader **hs = list != 2 ? arena_alloc(&p->arena, sizeof(hs[0]) * (n + 1)) : NULL;
        char **names = list == 2 ? arena_alloc(&p->arena, sizeof(names[0]) * (n + 1)) : NULL;
        for (size_t i = 0; i != n; ++i) {
            yaml_node_t *it = item(p, items, i), *hv[2], *name_node = it;
            char *name;
            index_path(ipath, sizeof(ipath), sub, i);
            if (list == 2) {
                if (get_header_name(p, it, ipath, request, list, &name) != 0)
                    return -1;
                names[i] = name;
            } else {
                const char *value;
                if (fields(p, it, ipath, hkeys, hv) != 0 || require(p, it, ipath, hv[0], "name") != 0 ||
                    require(p, it, ipath, hv[1], "value") != 0 ||
                    get_header_name(p, hv[0], join(fpath, sizeof(fpath), ipath, "name"), request, list, &name) != 0 ||
                    get_str(p, hv[1], join(fpath, sizeof(fpath), ipath, "value"), &value) != 0)
                    return -1;
                if (value[0] == '\0' || strlen(value) > 4096)
                    return fail(p, hv[1], fpath, "must be 1 to 4096 characters");
                for (const char *c = value; *c != '\0'; ++c)
                    if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
                        return fail(p, hv[1], fpath, "must not contain line breaks or control characters");
                Remora__V1__HTTPHeader *h = arena_alloc(&p->arena, sizeof(*h));
                remora__v1__httpheader__init(h);
                h->name = name;
                h->value = arena_strdup(&p->arena, value);
                hs[i] = h;
                name_node = hv[0];
            }
            for (size_t j = 0; j != num_seen; ++j)
                if (strcmp(seen[j], name) == 0)
                    return fail(p, name_node, ipath,
                                "header '%s' is already modified on line %u: only one action (set, add or remove) per header name",
                                name, rm_yaml_line(seen_at[j]));
            seen[num_seen] = name;
            seen_at[num_seen++] = name_node;
        }
        if (list == 0)
            f->n_set_headers = n, f->set_headers = hs;
        else if (list == 1)
            f->n_add_headers = n, f->add_headers = hs;
        else
            f->n_remove_headers = n, f->remove_headers = names;
    }
    *out = f;
    return 0;
}

static int
parse_mirror(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__HTTPRequestMirrorFilter **out)
{
    static const char *const keys[] = {"backendRef", "percent", "fraction", NULL};
    static const char *const rkeys[] = {"group", "kind", "name", "namespace", "port", NULL};
    static const char *const fkeys[] = {"numerator", "denominator", NULL};
    yaml_node_t *v[3], *rv[5], *fv[2];
    char sub[224], fpath[256];
    if (fields(p, node, path, keys, v) != 0 || require(p, node, path, v[0], "backendRef") != 0)
        return -1;
    Remora__V1__HTTPRequestMirrorFilter *m = arena_alloc(&p->arena, sizeof(*m));
    remora__v1__httprequest_mirror_filter__init(m);
    join(sub, sizeof(sub), path, "backendRef");
    const char *name, *ns;
    if (fields(p, v[0], sub, rkeys, rv) != 0 || parse_ref_target(p, v[0], sub, rv[0], rv[1], rv[2], rv[3], &name, &ns) != 0)
        return -1;
    int64_t port = 0;
    if (rv[4] != NULL && get_int(p, rv[4], join(fpath, sizeof(fpath), sub, "port"), 1, 65535, &port) != 0)
        return -1;
    Remora__V1__BackendReference *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__backend_reference__init(r);
    r->kind = "Service";
    r->name = arena_strdup(&p->arena, name);
    r->namespace_ = arena_strdup(&p->arena, ns);
    r->port = (uint32_t)port;
    m->backend_ref = r;
    if (v[1] != NULL && v[2] != NULL)
        return fail(p, v[2], path, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter");
    if (v[2] != NULL) {
        int64_t num, den = 100;
        join(sub, sizeof(sub), path, "fraction");
        if (fields(p, v[2], sub, fkeys, fv) != 0 || require(p, v[2], sub, fv[0], "numerator") != 0 ||
            get_int(p, fv[0], join(fpath, sizeof(fpath), sub, "numerator"), 0, 1000000, &num) != 0)
            return -1;
        if (fv[1] != NULL && get_int(p, fv[1], join(fpath, sizeof(fpath), sub, "denominator"), 1, 1000000, &den) != 0)
            return -1;
        if (num > den)
            return fail(p, v[2], sub, "numerator must be less than or equal to denominator (%lld > %lld)", (long long)num,
                        (long long)den);
        Remora__V1__Fraction *f = arena_alloc(&p->arena, sizeof(*f));
        remora__v1__fraction__init(f);
        f->numerator = (uint32_t)num;
        f->denominator = (uint32_t)den;
        m->share_case = REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_FRACTION;
        m->fraction = f;
    } else {
        int64_t percent = 100;
        if (v[1] != NULL && get_int(p, v[1], join(sub, sizeof(sub), path, "percent"), 0, 100, &percent) != 0)
            return -1;
        m->share_case = REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT;
        m->percent = (uint32_t)percent;
    }
    add_ref(p, rv[2], join(sub, sizeof(sub), path, "backendRef"), RM_KIND_SERVICE, ns, name);
    *out = m;
    return 0;
}

/* Gateway API PreciseHostname: lower-case DNS labels, no wildcard, no trailing dot. */
static int
is_precise_hostname(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253 || s[len - 1] == '.')
        return 0;
    for (const char *c = s; *c != '\0'; ++c)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '.'))
            return 0;
    return is_dns_name(s);
}

static int
parse_hostname(parser_t *p, yaml_node_t *node, const char *path, char **out)
{
    const char *s;
    if (get_str(p, node, path, &s) != 0)
        return -1;
    if (!is_precise_hostname(s))
        return fail(p, node, path, "'%s' is not a valid hostname (lower-case DNS labels, no wildcard, no IP address)", s);
    if (strspn(s, "0123456789.") == strlen(s))
        return fail(p, node, path, "'%s' is an IP address: a hostname is required", s);
    *out = arena_strdup(&p->arena, s);
    return 0;
}

/* HTTPPathModifier; *is_prefix tells the caller to check the rule's matches. */
static int
parse_path_modifier(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__HTTPPathModifier **out, int *is_prefix)
{
    static const char *const keys[] = {"type", "replaceFullPath", "replacePrefixMatch", NULL};
    yaml_node_t *v[3];
    char sub[256];
    const char *type, *value;
    if (fields(p, node, path, keys, v) != 0 || require(p, node, path, v[0], "type") != 0 ||
        get_str(p, v[0], join(sub, sizeof(sub), path, "type"), &type) != 0)
        return -1;
    Remora__V1__HTTPPathModifier *m = arena_alloc(&p->arena, sizeof(*m));
    remora__v1__httppath_modifier__init(m);
    yaml_node_t *vn;
    if (strcmp(type, "ReplaceFullPath") == 0) {
        if (v[2] != NULL)
            return fail(p, v[2], path, "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
        if (v[1] == NULL)
            return fail(p, node, path, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'");
        vn = v[1];
        join(sub, sizeof(sub), path, "replaceFullPath");
        m->modifier_case = REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_FULL_PATH;
        *is_prefix = 0;
    } else if (strcmp(type, "ReplacePrefixMatch") == 0) {
        if (v[1] != NULL)
            return fail(p, v[1], path, "type must be 'ReplaceFullPath' when replaceFullPath is set");
        if (v[2] == NULL)
            return fail(p, node, path, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'");
        vn = v[2];
        join(sub, sizeof(sub), path, "replacePrefixMatch");
        m->modifier_case = REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH;
        *is_prefix = 1;
    } else {
        return fail(p, v[0], sub, "unknown type '%s' (use ReplaceFullPath or ReplacePrefixMatch)", type);
    }
    /* an empty (quoted) prefix replacement removes the prefix */
    if (get_str(p, vn, sub, &value) != 0)
        return -1;
    if (strlen(value) > 1024)
        return fail(p, vn, sub, "must be at most 1024 characters");
    if (value[0] != '\0' && value[0] != '/')
        return fail(p, vn, sub, "'%s' must start with '/'", value);
    if (!*is_prefix && value[0] == '\0')
        return fail(p, vn, sub, "must not be empty (write '/' for the root)");
    if (strpbrk(value, "?# \t\r\n") != NULL)
        return fail(p, vn, sub, "'%s' must not contain '?', '#' or white space", value);
    if (*is_prefix)
        m->replace_prefix_match = arena_strdup(&p->arena, value);
    else
        m->replace_full_path = arena_strdup(&p->arena, value);
    *out = m;
    return 0;
}

static int
parse_redirect(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__HTTPRequestRedirectFilter **out, int *prefix)
{
    static const char *const keys[] = {"scheme", "hostname", "port", "statusCode", "path", NULL};
    yaml_node_t *v[5];
    char sub[256];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__HTTPRequestRedirectFilter *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__httprequest_redirect_filter__init(r);
    if (v[0] != NULL) {
        const char *scheme;
        if (get_str(p, v[0], join(sub, sizeof(sub), path, "scheme"), &scheme) != 0)
            return -1;
        if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
            return fail(p, v[0], sub, "unsupported value '%s' (use http or https)", scheme);
        r->scheme = arena_strdup(&p->arena, scheme);
    }
    if (v[1] != NULL && parse_hostname(p, v[1], join(sub, sizeof(sub), path, "hostname"), &r->hostname) != 0)
        return -1;
    int64_t port = 0, status = 302;
    if (v[2] != NULL && get_int(p, v[2], join(sub, sizeof(sub), path, "port"), 1, 65535, &port) != 0)
        return -1;
    if (v[3] != NULL) {
        if (get_int(p, v[3], join(sub, sizeof(sub), path, "statusCode"), 300, 399, &status) != 0)
            return -1;
        if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
            return fail(p, v[3], sub, "unsupported value %lld (use 301, 302, 303, 307 or 308)", (long long)status);
    }
    r->port = (uint32_t)port;
    r->status_code = (uint32_t)status;
    *prefix = 0;
    if (v[4] != NULL && parse_path_modifier(p, v[4], join(sub, sizeof(sub), path, "path"), &r->path, prefix) != 0)
        return -1;
    *out = r;
    return 0;
}

static int
parse_url_rewrite(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__HTTPURLRewriteFilter **out, int *prefix)
{
    static const char *const keys[] = {"hostname", "path", NULL};
    yaml_node_t *v[2];
    char sub[256];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__HTTPURLRewriteFilter *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__httpurlrewrite_filter__init(r);
    if (v[0] != NULL && parse_hostname(p, v[0], join(sub, sizeof(sub), path, "hostname"), &r->hostname) != 0)
        return -1;
    *prefix = 0;
    if (v[1] != NULL && parse_path_modifier(p, v[1], join(sub, sizeof(sub), path, "path"), &r->path, prefix) != 0)
        return -1;
    if (v[0] == NULL && v[1] == NULL)
        return fail(p, node, path, "give a hostname, a path, or both");
    *out = r;
    return 0;
}

#define REMORA_GROUP "remora.dev"

/* Remora's own filters, by reference to a resource in the route's namespace: FaultInjection today. */
static int
parse_extension_ref(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__LocalObjectReference **out)
{
    static const char *const keys[] = {"group", "kind", "name", NULL};
    yaml_node_t *v[3];
    char sub[256];
    const char *s, *name;
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    if (v[0] != NULL) {
        if (get_str(p, v[0], join(sub, sizeof(sub), path, "group"), &s) != 0)
            return -1;
        if (strcmp(s, REMORA_GROUP) != 0)
            return fail(p, v[0], sub, "group '%s' is not supported: an extensionRef names a Remora resource (group %s)", s,
                        REMORA_GROUP);
    }
    if (v[1] != NULL) {
        if (get_str(p, v[1], join(sub, sizeof(sub), path, "kind"), &s) != 0)
            return -1;
        if (strcasecmp(s, "FaultInjection") != 0)
            return fail(p, v[1], sub, "kind '%s' is not supported: an extensionRef names a FaultInjection", s);
    }
    if (require(p, node, path, v[2], "name") != 0 || get_name(p, v[2], join(sub, sizeof(sub), path, "name"), &name) != 0)
        return -1;
    Remora__V1__LocalObjectReference *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__local_object_reference__init(r);
    r->group = REMORA_GROUP;
    r->kind = "FaultInjection";
    r->name = arena_strdup(&p->arena, name);
    add_ref(p, v[2], path, RM_KIND_FAULT_INJECTION, p->ns, name);
    *out = r;
    return 0;
}

enum {
    FILTER_REQUEST_HEADER_MODIFIER,
    FILTER_RESPONSE_HEADER_MODIFIER,
    FILTER_REQUEST_MIRROR,
    FILTER_REQUEST_REDIRECT,
    FILTER_URL_REWRITE,
    FILTER_EXTENSION_REF,
    FILTER__COUNT
};

/* `type` values and the field each takes, in the Gateway API's spelling. */
static const struct {
    const char *type, *field;
    int http_only;
} filter_types[FILTER__COUNT] = {
    [FILTER_REQUEST_HEADER_MODIFIER] = {"RequestHeaderModifier", "requestHeaderModifier", 0},
    [FILTER_RESPONSE_HEADER_MODIFIER] = {"ResponseHeaderModifier", "responseHeaderModifier", 0},
    [FILTER_REQUEST_MIRROR] = {"RequestMirror", "requestMirror", 0},
    [FILTER_REQUEST_REDIRECT] = {"RequestRedirect", "requestRedirect", 1},
    [FILTER_URL_REWRITE] = {"URLRewrite", "urlRewrite", 1},
    [FILTER_EXTENSION_REF] = {"ExtensionRef", "extensionRef", 0},
};

/* What the rule-level checks need to know about a rule's filters. */
typedef struct st_filter_summary_t {
    unsigned count[FILTER__COUNT];
    yaml_node_t *first[FILTER__COUNT];
    /* the RequestRedirect / URLRewrite filter with a ReplacePrefixMatch path, if any */
    yaml_node_t *prefix_modifier;
    int prefix_modifier_type;
} filter_summary_t;

/* One HTTPRouteFilter or GRPCRouteFilter (a oneof whose case is the document's `type`). */
static int
parse_filter(parser_t *p, yaml_node_t *node, const char *path, int grpc, ProtobufCMessage **out, filter_summary_t *sum)
{
    static const char *const keys[] = {
        "type", "requestHeaderModifier", "responseHeaderModifier", "requestMirror", "requestRedirect", "urlRewrite", "extensionRef",
        NULL};
    static const char *const planned[] = {"cors", "externalAuth", NULL};
    yaml_node_t *v[7];
    char sub[224];
    const char *type;
    /* a GRPCRoute's filter takes the same keys, so that a redirect or rewrite is refused by name below */
    if (reject_planned(p, node, path, planned) != 0 || fields(p, node, path, keys, v) != 0)
        return -1;
    if (v[0] == NULL)
        return fail(p, node, join(sub, sizeof(sub), path, "type"),
                    "is required (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, %sExtensionRef)",
                    grpc ? "" : "RequestRedirect, URLRewrite, ");
    if (get_str(p, v[0], join(sub, sizeof(sub), path, "type"), &type) != 0)
        return -1;
    int t;
    for (t = 0; t != FILTER__COUNT; ++t)
        if (strcmp(filter_types[t].type, type) == 0)
            break;
    if (t == FILTER__COUNT) {
        if (strcmp(type, "CORS") == 0 || strcmp(type, "ExternalAuth") == 0)
            return fail(p, v[0], sub, "filter type '%s' is not supported yet by this version of Remora", type);
        return fail(p, v[0], sub,
                    "unknown filter type '%s' (use RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, %sExtensionRef)",
                    type, grpc ? "" : "RequestRedirect, URLRewrite, ");
    }
    if (grpc && filter_types[t].http_only)
        return fail(p, v[0], sub,
                    "filter type '%s' is not supported in a GRPCRoute (use RequestHeaderModifier, ResponseHeaderModifier, "
                    "RequestMirror or ExtensionRef)",
                    type);
    /* the Gateway API's union rules: the field of the type is given, no other one is */
    for (int k = 0; k != FILTER__COUNT; ++k) {
        if (k != t && v[k + 1] != NULL)
            return fail(p, v[k + 1], path, "filter.%s must be nil if the filter.type is not %s", filter_types[k].field,
                        filter_types[k].type);
    }
    if (v[t + 1] == NULL)
        return fail(p, node, path, "filter.%s must be specified for %s filter.type", filter_types[t].field, type);
    join(sub, sizeof(sub), path, filter_types[t].field);
    if (sum->count[t]++ == 0)
        sum->first[t] = node;
    Remora__V1__HTTPRouteFilter *hf = NULL;
    Remora__V1__GRPCRouteFilter *gf = NULL;
    if (grpc) {
        gf = arena_alloc(&p->arena, sizeof(*gf));
        remora__v1__grpcroute_filter__init(gf);
        *out = &gf->base;
    } else {
        hf = arena_alloc(&p->arena, sizeof(*hf));
        remora__v1__httproute_filter__init(hf);
        *out = &hf->base;
    }
    int prefix = 0;
    switch (t) {
    case FILTER_REQUEST_HEADER_MODIFIER:
    case FILTER_RESPONSE_HEADER_MODIFIER: {
        Remora__V1__HTTPHeaderFilter *h = NULL;
        if (parse_header_filter(p, v[t + 1], sub, t == FILTER_REQUEST_HEADER_MODIFIER, &h) != 0)
            return -1;
        if (t == FILTER_REQUEST_HEADER_MODIFIER) {
            if (grpc)
                gf->filter_case = REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER, gf->request_header_modifier = h;
            else
                hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER, hf->request_header_modifier = h;
        } else {
            if (grpc)
                gf->filter_case = REMORA__V1__GRPCROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER, gf->response_header_modifier = h;
            else
                hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER, hf->response_header_modifier = h;
        }
    } break;
    case FILTER_REQUEST_MIRROR: {
        Remora__V1__HTTPRequestMirrorFilter *m = NULL;
        if (parse_mirror(p, v[t + 1], sub, &m) != 0)
            return -1;
        if (grpc)
            gf->filter_case = REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_MIRROR, gf->request_mirror = m;
        else
            hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR, hf->request_mirror = m;
    } break;
    case FILTER_REQUEST_REDIRECT:
        hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_REDIRECT;
        if (parse_redirect(p, v[t + 1], sub, &hf->request_redirect, &prefix) != 0)
            return -1;
        break;
    case FILTER_URL_REWRITE:
        hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_URL_REWRITE;
        if (parse_url_rewrite(p, v[t + 1], sub, &hf->url_rewrite, &prefix) != 0)
            return -1;
        break;
    case FILTER_EXTENSION_REF: {
        Remora__V1__LocalObjectReference *r = NULL;
        if (parse_extension_ref(p, v[t + 1], sub, &r) != 0)
            return -1;
        if (grpc)
            gf->filter_case = REMORA__V1__GRPCROUTE_FILTER__FILTER_EXTENSION_REF, gf->extension_ref = r;
        else
            hf->filter_case = REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF, hf->extension_ref = r;
    } break;
    }
    if (prefix) {
        sum->prefix_modifier = node;
        sum->prefix_modifier_type = t;
    }
    return 0;
}

static int
parse_filters(parser_t *p, yaml_node_t *node, const char *rule_path, int grpc, size_t *n_out, void ***out, filter_summary_t *sum)
{
    char list_path[128];
    yaml_node_item_t *items;
    size_t n;
    join(list_path, sizeof(list_path), rule_path, "filters");
    if (get_seq(p, node, list_path, &items, &n) != 0)
        return -1;
    if (n > MAX_FILTERS)
        return fail(p, node, list_path, "at most %d filters, got %zu", MAX_FILTERS, n);
    void **fs = arena_alloc(&p->arena, sizeof(fs[0]) * (n + 1));
    for (size_t i = 0; i != n; ++i) {
        char path[160];
        if (parse_filter(p, item(p, items, i), index_path(path, sizeof(path), list_path, i), grpc, (ProtobufCMessage **)&fs[i],
                         sum) != 0)
            return -1;
    }
    /* the Gateway API's rule-level filter rules */
    static const int once[] = {FILTER_REQUEST_HEADER_MODIFIER, FILTER_RESPONSE_HEADER_MODIFIER, FILTER_REQUEST_REDIRECT,
                               FILTER_URL_REWRITE};
    for (size_t i = 0; i != sizeof(once) / sizeof(once[0]); ++i)
        if (sum->count[once[i]] > 1)
            return fail(p, node, list_path, "%s filter cannot be repeated", filter_types[once[i]].type);
    if (sum->count[FILTER_REQUEST_REDIRECT] != 0 && sum->count[FILTER_URL_REWRITE] != 0)
        return fail(p, node, list_path, "may specify either RequestRedirect or URLRewrite, but not both");
    /* the agent applies one fault per request */
    if (sum->count[FILTER_EXTENSION_REF] > 1)
        return fail(p, node, list_path, "at most one ExtensionRef (FaultInjection) per rule");
    *n_out = n;
    *out = fs;
    return 0;
}

/* ----------------------------------------------------------------------------------------- routes */

/* HTTPRoute and GRPCRoute rules differ only in the types of their matches, filters and retry. */
typedef struct st_rule_out_t {
    size_t *n_matches;
    void ***matches;
    size_t *n_backend_refs;
    Remora__V1__BackendReference ***backend_refs;
    Remora__V1__RouteTimeouts **timeouts;
    size_t *n_filters;
    void ***filters;
    ProtobufCMessage **retry;
    Remora__V1__SessionPersistence **session_persistence;
} rule_out_t;

/* GEP-1619, the part the agent implements: a header or a cookie whose value keys the endpoint. */
static int
parse_session_persistence(parser_t *p, yaml_node_t *node, const char *rule_path, Remora__V1__SessionPersistence **out)
{
    static const char *const keys[] = {"type", "sessionName", NULL};
    static const char *const planned[] = {"absoluteTimeout", "idleTimeout", "cookieConfig", NULL};
    yaml_node_t *v[2];
    char path[128], sub[160];
    const char *type = "Cookie", *name;
    join(path, sizeof(path), rule_path, "sessionPersistence");
    if (reject_planned(p, node, path, planned) != 0 || fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__SessionPersistence *sp = arena_alloc(&p->arena, sizeof(*sp));
    remora__v1__session_persistence__init(sp);
    /* the Gateway API's default type */
    if (v[0] != NULL && get_str(p, v[0], join(sub, sizeof(sub), path, "type"), &type) != 0)
        return -1;
    if (strcmp(type, "Header") == 0)
        sp->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER;
    else if (strcmp(type, "Cookie") == 0)
        sp->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_COOKIE;
    else
        return fail(p, v[0], sub, "Unsupported value: \"%s\": supported values: \"Cookie\", \"Header\"", type);
    join(sub, sizeof(sub), path, "sessionName");
    if (v[1] == NULL)
        return fail(p, node, sub, "is required: Remora does not make up a %s name", type);
    if (get_str(p, v[1], sub, &name) != 0)
        return -1;
    if (!is_token(name) || strlen(name) > 128)
        return fail(p, v[1], sub, "'%s' is not a valid %s name (letters, digits and !#$%%&'*+-.^_`|~; at most 128)", name, type);
    sp->session_name = arena_strdup(&p->arena, name);
    if (sp->type == REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER)
        for (char *c = sp->session_name; *c != '\0'; ++c)
            *c = (char)tolower((unsigned char)*c);
    *out = sp;
    return 0;
}

static int
parse_rule(parser_t *p, yaml_node_t *node, const char *path, int grpc, rule_out_t *out)
{
    static const char *const keys[] = {"matches", "backendRefs", "timeouts", "filters", "retry", "sessionPersistence", NULL};
    yaml_node_t *v[6];
    char sub[128];
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
    filter_summary_t sum;
    memset(&sum, 0, sizeof(sum));
    if (v[3] != NULL && parse_filters(p, v[3], path, grpc, out->n_filters, out->filters, &sum) != 0)
        return -1;
    if (sum.count[FILTER_REQUEST_REDIRECT] != 0) {
        /* a redirect answers the request itself */
        if (v[1] != NULL)
            return fail(p, v[1], join(sub, sizeof(sub), path, "backendRefs"),
                        "RequestRedirect filter must not be used together with backendRefs");
    } else if (parse_backend_refs(p, node, path, v[1], out->n_backend_refs, out->backend_refs) != 0) {
        return -1;
    }
    if (sum.prefix_modifier != NULL) {
        /* no matches is the default match, one PathPrefix "/" */
        Remora__V1__HTTPRouteMatch **ms = (Remora__V1__HTTPRouteMatch **)*out->matches;
        size_t n = *out->n_matches;
        if (n > 1 || (n == 1 && ms[0]->path->match_case != REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX))
            return fail(p, sum.prefix_modifier, join(sub, sizeof(sub), path, "filters"),
                        "When using %s filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
                        filter_types[sum.prefix_modifier_type].type);
    }
    if (v[2] != NULL && parse_timeouts(p, v[2], path, out->timeouts) != 0)
        return -1;
    if (v[4] != NULL && parse_retry(p, v[4], path, grpc, out->retry) != 0)
        return -1;
    if (v[5] != NULL && parse_session_persistence(p, v[5], path, out->session_persistence) != 0)
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
            o = (rule_out_t){&r->n_matches,          (void ***)&r->matches, &r->n_backend_refs,    &r->backend_refs,
                             &r->timeouts,           &r->n_filters,         (void ***)&r->filters, (ProtobufCMessage **)&r->retry,
                             &r->session_persistence};
            rules[i] = r;
        } else {
            Remora__V1__HTTPRouteRule *r = arena_alloc(&p->arena, sizeof(*r));
            remora__v1__httproute_rule__init(r);
            o = (rule_out_t){&r->n_matches,          (void ***)&r->matches, &r->n_backend_refs,    &r->backend_refs,
                             &r->timeouts,           &r->n_filters,         (void ***)&r->filters, (ProtobufCMessage **)&r->retry,
                             &r->session_persistence};
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

/* ---------------------------------------------------------------------------------- policy kinds */

static int
parse_fault_spec(parser_t *p, yaml_node_t *node, Remora__V1__FaultInjectionSpec **out)
{
    static const char *const keys[] = {"delay", "abort", NULL};
    static const char *const dkeys[] = {"fixedDelay", "percent", NULL};
    static const char *const akeys[] = {"httpStatus", "grpcStatus", "percent", NULL};
    yaml_node_t *v[2], *dv[2], *av[3];
    char sub[64];
    uint64_t ms;
    if (fields(p, node, "spec", keys, v) != 0)
        return -1;
    if (v[0] == NULL && v[1] == NULL)
        return fail(p, node, "spec", "give a delay, an abort, or both");
    Remora__V1__FaultInjectionSpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__fault_injection_spec__init(spec);
    if (v[0] != NULL) {
        Remora__V1__FaultDelay *d = arena_alloc(&p->arena, sizeof(*d));
        remora__v1__fault_delay__init(d);
        int64_t percent = 100;
        if (fields(p, v[0], "spec.delay", dkeys, dv) != 0 || require(p, v[0], "spec.delay", dv[0], "fixedDelay") != 0 ||
            parse_duration_in(p, dv[0], "spec.delay.fixedDelay", 1, HOUR_MS, "must be from 1ms to 1h", &ms, &d->fixed_delay) != 0)
            return -1;
        if (dv[1] != NULL && get_int(p, dv[1], "spec.delay.percent", 0, 100, &percent) != 0)
            return -1;
        d->percent = (uint32_t)percent;
        spec->delay = d;
    }
    if (v[1] != NULL) {
        Remora__V1__FaultAbort *a = arena_alloc(&p->arena, sizeof(*a));
        remora__v1__fault_abort__init(a);
        int64_t percent = 100, status;
        if (fields(p, v[1], "spec.abort", akeys, av) != 0)
            return -1;
        if ((av[0] == NULL) == (av[1] == NULL))
            return fail(p, av[1] != NULL ? av[1] : v[1], "spec.abort", "give exactly one of httpStatus or grpcStatus");
        if (av[0] != NULL) {
            if (get_int(p, av[0], "spec.abort.httpStatus", 200, 599, &status) != 0)
                return -1;
            a->status_case = REMORA__V1__FAULT_ABORT__STATUS_HTTP_STATUS;
            a->http_status = (uint32_t)status;
        } else {
            if (parse_grpc_status(p, av[1], "spec.abort.grpcStatus", &a->grpc_status) != 0)
                return -1;
            a->status_case = REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS;
        }
        if (av[2] != NULL && get_int(p, av[2], join(sub, sizeof(sub), "spec.abort", "percent"), 0, 100, &percent) != 0)
            return -1;
        a->percent = (uint32_t)percent;
        spec->abort = a;
    }
    *out = spec;
    return 0;
}

#define MAX_TARGET_REFS 16

/* Budget and minimum rate intervals: GEP-3388's bounds and message. */
static int
parse_retry_interval(parser_t *p, yaml_node_t *node, const char *path, uint64_t dflt_ms, Remora__V1__Duration **out)
{
    uint64_t ms;
    if (node == NULL) {
        *out = duration_of(p, dflt_ms);
        return 0;
    }
    return parse_duration_in(p, node, path, 1000, HOUR_MS, "interval can not be greater than one hour or less than one second", &ms,
                             out);
}

static int
parse_retry_constraint(parser_t *p, yaml_node_t *node, Remora__V1__RetryConstraint **out)
{
    static const char *const keys[] = {"budget", "minRetryRate", NULL};
    static const char *const bkeys[] = {"percent", "interval", NULL};
    static const char *const rkeys[] = {"count", "interval", NULL};
    yaml_node_t *v[2], *bv[2] = {NULL, NULL}, *rv[2] = {NULL, NULL};
    if (fields(p, node, "spec.retryConstraint", keys, v) != 0)
        return -1;
    Remora__V1__RetryConstraint *rc = arena_alloc(&p->arena, sizeof(*rc));
    remora__v1__retry_constraint__init(rc);
    rc->budget = arena_alloc(&p->arena, sizeof(*rc->budget));
    remora__v1__retry_budget__init(rc->budget);
    rc->min_retry_rate = arena_alloc(&p->arena, sizeof(*rc->min_retry_rate));
    remora__v1__request_rate__init(rc->min_retry_rate);
    /* the Gateway API's defaults: budget {percent: 20, interval: 10s}, minRetryRate {count: 10, interval: 1s} */
    int64_t percent = 20, count = 10;
    if (v[0] != NULL && fields(p, v[0], "spec.retryConstraint.budget", bkeys, bv) != 0)
        return -1;
    if (bv[0] != NULL && get_int(p, bv[0], "spec.retryConstraint.budget.percent", 0, 100, &percent) != 0)
        return -1;
    if (parse_retry_interval(p, bv[1], "spec.retryConstraint.budget.interval", 10000, &rc->budget->interval) != 0)
        return -1;
    if (v[1] != NULL && fields(p, v[1], "spec.retryConstraint.minRetryRate", rkeys, rv) != 0)
        return -1;
    if (rv[0] != NULL && get_int(p, rv[0], "spec.retryConstraint.minRetryRate.count", 0, 1000000, &count) != 0)
        return -1;
    if (parse_retry_interval(p, rv[1], "spec.retryConstraint.minRetryRate.interval", 1000, &rc->min_retry_rate->interval) != 0)
        return -1;
    rc->budget->percent = (uint32_t)percent;
    rc->min_retry_rate->count = (uint32_t)count;
    *out = rc;
    return 0;
}

static int
parse_connection_pool(parser_t *p, yaml_node_t *node, Remora__V1__BackendConnectionPool **out)
{
    static const char *const keys[] = {"connectTimeout",     "idleTimeout", "streamIdleTimeout", "maxConnections",
                                       "maxPendingRequests", "maxRequests", "maxRetries",        NULL};
    yaml_node_t *v[7];
    uint64_t ms;
    if (fields(p, node, "spec.connectionPool", keys, v) != 0)
        return -1;
    Remora__V1__BackendConnectionPool *cp = arena_alloc(&p->arena, sizeof(*cp));
    remora__v1__backend_connection_pool__init(cp);
    if (v[0] != NULL && parse_duration_in(p, v[0], "spec.connectionPool.connectTimeout", 1, HOUR_MS, "must be from 1ms to 1h", &ms,
                                          &cp->connect_timeout) != 0)
        return -1;
    if (v[1] != NULL && parse_duration_in(p, v[1], "spec.connectionPool.idleTimeout", 1, DAY_MS, "must be from 1ms to 24h", &ms,
                                          &cp->idle_timeout) != 0)
        return -1;
    if (v[2] != NULL && parse_duration_in(p, v[2], "spec.connectionPool.streamIdleTimeout", 0, DAY_MS,
                                          "must be at most 24h (0s: no limit)", &ms, &cp->stream_idle_timeout) != 0)
        return -1;
    /* circuit breakers; 0 in the resource means the agent's default, so a limit is at least 1 */
    uint32_t *limits[] = {&cp->max_connections, &cp->max_pending_requests, &cp->max_requests, &cp->max_retries};
    for (size_t i = 0; i != 4; ++i) {
        char sub[96];
        int64_t n;
        if (v[3 + i] == NULL)
            continue;
        if (get_int(p, v[3 + i], join(sub, sizeof(sub), "spec.connectionPool", keys[3 + i]), 1, 1000000, &n) != 0)
            return -1;
        *limits[i] = (uint32_t)n;
    }
    *out = cp;
    return 0;
}

#define ROUTE_GROUP "gateway.networking.k8s.io"

/*
 * GEP-713 targetRefs, local to the policy's namespace: Services, and with `routes` HTTPRoutes and
 * GRPCRoutes too. A target that does not exist is a dangling reference, refused as a route's
 * backendRef to nothing is.
 */
static int
parse_target_refs(parser_t *p, yaml_node_t *spec, yaml_node_t *node, int routes, size_t *n_out,
                  Remora__V1__PolicyTargetReference ***out)
{
    static const char *const tkeys[] = {"group", "kind", "name", "namespace", NULL};
    const char *what = routes ? "Service, HTTPRoute or GRPCRoute" : "Service";
    yaml_node_item_t *items;
    size_t n;
    if (require(p, spec, "spec", node, "targetRefs") != 0 || get_seq(p, node, "spec.targetRefs", &items, &n) != 0)
        return -1;
    if (n == 0)
        return fail(p, node, "spec.targetRefs", "needs at least one %s", what);
    if (n > MAX_TARGET_REFS)
        return fail(p, node, "spec.targetRefs", "at most %d targets, got %zu", MAX_TARGET_REFS, n);
    Remora__V1__PolicyTargetReference **refs = arena_alloc(&p->arena, sizeof(refs[0]) * n);
    for (size_t i = 0; i != n; ++i) {
        char path[64], sub[96];
        yaml_node_t *it = item(p, items, i), *tv[4];
        const char *name, *group = "", *kind_name = "Service";
        rm_kind_t kind = RM_KIND_SERVICE;
        index_path(path, sizeof(path), "spec.targetRefs", i);
        if (fields(p, it, path, tkeys, tv) != 0)
            return -1;
        /* GEP-713 local references: a policy attaches only within its namespace */
        if (tv[3] != NULL)
            return fail(p, tv[3], join(sub, sizeof(sub), path, "namespace"),
                        "targetRefs are local: the %s must be in the policy's namespace (%s)", what, p->ns);
        if (tv[1] != NULL) {
            if (get_str(p, tv[1], join(sub, sizeof(sub), path, "kind"), &kind_name) != 0)
                return -1;
            if (strcasecmp(kind_name, "Service") == 0)
                kind = RM_KIND_SERVICE;
            else if (routes && strcasecmp(kind_name, "HTTPRoute") == 0)
                kind = RM_KIND_HTTP_ROUTE;
            else if (routes && strcasecmp(kind_name, "GRPCRoute") == 0)
                kind = RM_KIND_GRPC_ROUTE;
            else
                return fail(p, tv[1], sub, "kind '%s' is not supported: a target is a %s", kind_name, what);
        }
        if (tv[0] != NULL) {
            if (get_str(p, tv[0], join(sub, sizeof(sub), path, "group"), &group) != 0)
                return -1;
            int ok = kind == RM_KIND_SERVICE ? group[0] == '\0' || strcmp(group, "core") == 0
                                             : group[0] == '\0' || strcmp(group, ROUTE_GROUP) == 0;
            if (!ok)
                return fail(p, tv[0], sub, "group '%s' is not supported for kind %s (use \"%s\")", group, rm_kind_name(kind),
                            kind == RM_KIND_SERVICE ? "" : ROUTE_GROUP);
        }
        if (require(p, it, path, tv[2], "name") != 0 || get_name(p, tv[2], join(sub, sizeof(sub), path, "name"), &name) != 0)
            return -1;
        for (size_t j = 0; j != i; ++j)
            if (strcmp(refs[j]->name, name) == 0 && strcmp(refs[j]->kind, rm_kind_name(kind)) == 0)
                return fail(p, tv[2], sub, "%s '%s' is listed twice", rm_kind_name(kind), name);
        Remora__V1__PolicyTargetReference *t = arena_alloc(&p->arena, sizeof(*t));
        remora__v1__policy_target_reference__init(t);
        t->group = kind == RM_KIND_SERVICE ? "" : ROUTE_GROUP;
        t->kind = (char *)rm_kind_name(kind);
        t->name = arena_strdup(&p->arena, name);
        refs[i] = t;
        add_ref(p, tv[2], path, kind, p->ns, name);
    }
    *n_out = n;
    *out = refs;
    return 0;
}

static int
parse_load_balancer(parser_t *p, yaml_node_t *node, Remora__V1__BackendLoadBalancer **out)
{
    static const char *const keys[] = {"type", "ringHash", NULL};
    static const char *const rkeys[] = {"minimumRingSize", NULL};
    static const struct {
        const char *name;
        Remora__V1__LoadBalancerType type;
    } types[] = {{"RoundRobin", REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_ROUND_ROBIN},
                 {"LeastRequest", REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_LEAST_REQUEST},
                 {"PeakEWMA", REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_PEAK_EWMA},
                 {"RingHash", REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH}};
    yaml_node_t *v[2], *rv[1] = {NULL};
    const char *type;
    if (fields(p, node, "spec.loadBalancer", keys, v) != 0 || require(p, node, "spec.loadBalancer", v[0], "type") != 0 ||
        get_str(p, v[0], "spec.loadBalancer.type", &type) != 0)
        return -1;
    Remora__V1__BackendLoadBalancer *lb = arena_alloc(&p->arena, sizeof(*lb));
    remora__v1__backend_load_balancer__init(lb);
    for (size_t i = 0; i != sizeof(types) / sizeof(types[0]); ++i)
        if (strcmp(type, types[i].name) == 0)
            lb->type = types[i].type;
    if (lb->type == REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_UNSPECIFIED)
        return fail(p, v[0], "spec.loadBalancer.type",
                    "Unsupported value: \"%s\": supported values: \"RoundRobin\", \"LeastRequest\", \"PeakEWMA\", "
                    "\"RingHash\"",
                    type);
    if (v[1] != NULL) {
        if (lb->type != REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH)
            return fail(p, v[1], "spec.loadBalancer.ringHash", "is only allowed with type RingHash, got %s", type);
        if (fields(p, v[1], "spec.loadBalancer.ringHash", rkeys, rv) != 0)
            return -1;
    }
    if (lb->type == REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH) {
        int64_t size = 1024;
        if (rv[0] != NULL && get_int(p, rv[0], "spec.loadBalancer.ringHash.minimumRingSize", 1, 8388608, &size) != 0)
            return -1;
        lb->minimum_ring_size = (uint32_t)size;
    }
    *out = lb;
    return 0;
}

/* Envoy's outlier detection, with its (and Istio's) defaults for what the document leaves out. */
static int
parse_outlier_detection(parser_t *p, yaml_node_t *node, Remora__V1__OutlierDetection **out)
{
    static const char *const keys[] = {"consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime",
                                       "maxEjectionTime",      "maxEjectionPercent",       NULL};
    yaml_node_t *v[6];
    if (fields(p, node, "spec.outlierDetection", keys, v) != 0)
        return -1;
    Remora__V1__OutlierDetection *od = arena_alloc(&p->arena, sizeof(*od));
    remora__v1__outlier_detection__init(od);
    int64_t c5xx = 5, cgw = 5, percent = 50;
    uint64_t interval = 10000, base = 30000, max = 300000;
    if (v[0] != NULL && get_int(p, v[0], "spec.outlierDetection.consecutive5xxErrors", 0, 1000000, &c5xx) != 0)
        return -1;
    if (v[1] != NULL && get_int(p, v[1], "spec.outlierDetection.consecutiveGatewayErrors", 0, 1000000, &cgw) != 0)
        return -1;
    if (v[2] != NULL && parse_duration_in(p, v[2], "spec.outlierDetection.interval", 1, HOUR_MS, "must be from 1ms to 1h",
                                          &interval, &od->interval) != 0)
        return -1;
    if (v[3] != NULL && parse_duration_in(p, v[3], "spec.outlierDetection.baseEjectionTime", 1, HOUR_MS, "must be from 1ms to 1h",
                                          &base, &od->base_ejection_time) != 0)
        return -1;
    if (v[4] != NULL && parse_duration_in(p, v[4], "spec.outlierDetection.maxEjectionTime", 1, DAY_MS, "must be from 1ms to 24h",
                                          &max, &od->max_ejection_time) != 0)
        return -1;
    if (v[5] != NULL && get_int(p, v[5], "spec.outlierDetection.maxEjectionPercent", 0, 100, &percent) != 0)
        return -1;
    if (max < base)
        return fail(p, v[4] != NULL ? v[4] : v[3],
                    v[4] != NULL ? "spec.outlierDetection.maxEjectionTime" : "spec.outlierDetection.baseEjectionTime",
                    "maxEjectionTime (%llums) must not be shorter than baseEjectionTime (%llums)", (unsigned long long)max,
                    (unsigned long long)base);
    if (c5xx == 0 && cgw == 0)
        return fail(p, node, "spec.outlierDetection",
                    "consecutive5xxErrors and consecutiveGatewayErrors are both 0: nothing would ever be ejected");
    od->consecutive_5xx_errors = (uint32_t)c5xx;
    od->consecutive_gateway_errors = (uint32_t)cgw;
    if (od->interval == NULL)
        od->interval = duration_of(p, interval);
    if (od->base_ejection_time == NULL)
        od->base_ejection_time = duration_of(p, base);
    if (od->max_ejection_time == NULL)
        od->max_ejection_time = duration_of(p, max);
    od->max_ejection_percent = (uint32_t)percent;
    *out = od;
    return 0;
}

/* Active health checks: {http: {path} | grpc: {service}, interval, timeout, healthyThreshold, unhealthyThreshold}. */
static int
parse_health_check(parser_t *p, yaml_node_t *node, Remora__V1__HealthCheck **out)
{
    static const char *const keys[] = {"http", "grpc", "interval", "timeout", "healthyThreshold", "unhealthyThreshold", NULL};
    static const char *const hkeys[] = {"path", NULL};
    static const char *const gkeys[] = {"service", NULL};
    yaml_node_t *v[6], *sv[1];
    const char *s;
    if (fields(p, node, "spec.healthCheck", keys, v) != 0)
        return -1;
    if ((v[0] != NULL) == (v[1] != NULL))
        return fail(p, v[1] != NULL ? v[1] : node, "spec.healthCheck",
                    "needs exactly one of http: {path: ...} and grpc: {service: ...}");
    Remora__V1__HealthCheck *hc = arena_alloc(&p->arena, sizeof(*hc));
    remora__v1__health_check__init(hc);
    if (v[0] != NULL) {
        if (fields(p, v[0], "spec.healthCheck.http", hkeys, sv) != 0 ||
            require(p, v[0], "spec.healthCheck.http", sv[0], "path") != 0 ||
            get_str(p, sv[0], "spec.healthCheck.http.path", &s) != 0)
            return -1;
        if (s[0] != '/')
            return fail(p, sv[0], "spec.healthCheck.http.path", "must start with '/', got \"%s\"", s);
        for (const char *q = s; *q != '\0'; ++q)
            if ((unsigned char)*q <= ' ' || *q == 0x7f)
                return fail(p, sv[0], "spec.healthCheck.http.path", "must not contain spaces or control characters");
        hc->http = arena_alloc(&p->arena, sizeof(*hc->http));
        remora__v1__httphealth_check__init(hc->http);
        hc->http->path = arena_strdup(&p->arena, s);
    } else {
        if (fields(p, v[1], "spec.healthCheck.grpc", gkeys, sv) != 0)
            return -1;
        s = "";
        if (sv[0] != NULL && get_str(p, sv[0], "spec.healthCheck.grpc.service", &s) != 0)
            return -1;
        hc->grpc = arena_alloc(&p->arena, sizeof(*hc->grpc));
        remora__v1__grpchealth_check__init(hc->grpc);
        hc->grpc->service = arena_strdup(&p->arena, s);
    }
    uint64_t interval = 5000, timeout = 1000;
    int64_t healthy = 2, unhealthy = 3;
    if (v[2] != NULL && parse_duration_in(p, v[2], "spec.healthCheck.interval", 100, HOUR_MS, "must be from 100ms to 1h", &interval,
                                          &hc->interval) != 0)
        return -1;
    if (v[3] != NULL &&
        parse_duration_in(p, v[3], "spec.healthCheck.timeout", 1, HOUR_MS, "must be from 1ms to 1h", &timeout, &hc->timeout) != 0)
        return -1;
    if (timeout >= interval)
        return fail(p, v[3] != NULL ? v[3] : v[2], v[3] != NULL ? "spec.healthCheck.timeout" : "spec.healthCheck.interval",
                    "timeout (%llums) must be shorter than interval (%llums)", (unsigned long long)timeout,
                    (unsigned long long)interval);
    if (v[4] != NULL && get_int(p, v[4], "spec.healthCheck.healthyThreshold", 1, 1000000, &healthy) != 0)
        return -1;
    if (v[5] != NULL && get_int(p, v[5], "spec.healthCheck.unhealthyThreshold", 1, 1000000, &unhealthy) != 0)
        return -1;
    if (hc->interval == NULL)
        hc->interval = duration_of(p, interval);
    if (hc->timeout == NULL)
        hc->timeout = duration_of(p, timeout);
    hc->healthy_threshold = (uint32_t)healthy;
    hc->unhealthy_threshold = (uint32_t)unhealthy;
    *out = hc;
    return 0;
}

static int
parse_backend_policy_spec(parser_t *p, yaml_node_t *node, Remora__V1__BackendTrafficPolicySpec **out)
{
    static const char *const keys[] = {
        "targetRefs", "retryConstraint", "connectionPool", "loadBalancer", "outlierDetection", "healthCheck", NULL};
    yaml_node_t *v[6];
    if (node->type == YAML_MAPPING_NODE)
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair != node->data.mapping.pairs.top; ++pair) {
            yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
            if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, "sessionPersistence") == 0)
                return fail(p, k, "spec.sessionPersistence",
                            "is set on a route rule in Remora (HTTPRoute/GRPCRoute rules[].sessionPersistence), not on a "
                            "BackendTrafficPolicy");
        }
    if (fields(p, node, "spec", keys, v) != 0)
        return -1;
    Remora__V1__BackendTrafficPolicySpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__backend_traffic_policy_spec__init(spec);
    if (parse_target_refs(p, node, v[0], 0, &spec->n_target_refs, &spec->target_refs) != 0)
        return -1;
    if (v[1] != NULL && parse_retry_constraint(p, v[1], &spec->retry_constraint) != 0)
        return -1;
    if (v[2] != NULL && parse_connection_pool(p, v[2], &spec->connection_pool) != 0)
        return -1;
    if (v[3] != NULL && parse_load_balancer(p, v[3], &spec->load_balancer) != 0)
        return -1;
    if (v[4] != NULL && parse_outlier_detection(p, v[4], &spec->outlier_detection) != 0)
        return -1;
    if (v[5] != NULL && parse_health_check(p, v[5], &spec->health_check) != 0)
        return -1;
    *out = spec;
    return 0;
}

/* {requestsPerSecond, burst}: a rate above 0; burst absent means "as many as the rate". */
static int
parse_rate(parser_t *p, yaml_node_t *node, const char *path, yaml_node_t *rps, yaml_node_t *burst, uint32_t *rps_out,
           uint32_t *burst_out)
{
    char sub[128];
    int64_t r, b = 0;
    if (require(p, node, path, rps, "requestsPerSecond") != 0 ||
        get_int(p, rps, join(sub, sizeof(sub), path, "requestsPerSecond"), 1, MAX_RATE, &r) != 0)
        return -1;
    if (burst != NULL && get_int(p, burst, join(sub, sizeof(sub), path, "burst"), 0, MAX_RATE, &b) != 0)
        return -1;
    *rps_out = (uint32_t)r;
    *burst_out = (uint32_t)b;
    return 0;
}

static int
parse_rate_limit(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__RateLimit **out)
{
    static const char *const keys[] = {"requestsPerSecond", "burst", NULL};
    yaml_node_t *v[2];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__RateLimit *rl = arena_alloc(&p->arena, sizeof(*rl));
    remora__v1__rate_limit__init(rl);
    if (parse_rate(p, node, path, v[0], v[1], &rl->requests_per_second, &rl->burst) != 0)
        return -1;
    *out = rl;
    return 0;
}

static int
parse_rate_limit_policy_spec(parser_t *p, yaml_node_t *node, Remora__V1__RateLimitPolicySpec **out)
{
    static const char *const keys[] = {"targetRefs", "total", "perClient", "clientKey", "overrides", NULL};
    static const char *const ckeys[] = {"type", "header", NULL};
    static const char *const okeys[] = {"requestsPerSecond", "burst", "clients", NULL};
    yaml_node_t *v[5];
    if (fields(p, node, "spec", keys, v) != 0)
        return -1;
    Remora__V1__RateLimitPolicySpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__rate_limit_policy_spec__init(spec);
    if (parse_target_refs(p, node, v[0], 1, &spec->n_target_refs, &spec->target_refs) != 0)
        return -1;
    if (v[1] == NULL && v[2] == NULL)
        return fail(p, node, "spec", "needs at least one of 'total' and 'perClient'");
    if (v[1] != NULL && parse_rate_limit(p, v[1], "spec.total", &spec->total) != 0)
        return -1;
    if (v[2] != NULL && parse_rate_limit(p, v[2], "spec.perClient", &spec->per_client) != 0)
        return -1;
    spec->client_key = arena_alloc(&p->arena, sizeof(*spec->client_key));
    remora__v1__client_key__init(spec->client_key);
    if (v[3] != NULL) {
        yaml_node_t *cv[2];
        const char *type = "Identity";
        if (fields(p, v[3], "spec.clientKey", ckeys, cv) != 0 ||
            (cv[0] != NULL && get_str(p, cv[0], "spec.clientKey.type", &type) != 0))
            return -1;
        if (strcmp(type, "Identity") == 0)
            spec->client_key->type = REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_IDENTITY;
        else if (strcmp(type, "SourceAddress") == 0)
            spec->client_key->type = REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_SOURCE_ADDRESS;
        else if (strcmp(type, "Header") == 0)
            spec->client_key->type = REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER;
        else
            return fail(p, cv[0], "spec.clientKey.type",
                        "Unsupported value: \"%s\": supported values: \"Identity\", \"SourceAddress\", \"Header\"", type);
        if (spec->client_key->type == REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER) {
            if (cv[1] == NULL)
                return fail(p, v[3], "spec.clientKey.header", "is required with type Header");
            if (get_header_name(p, cv[1], "spec.clientKey.header", 0, 0, &spec->client_key->header) != 0)
                return -1;
        } else if (cv[1] != NULL) {
            return fail(p, cv[1], "spec.clientKey.header", "is only allowed with type Header, got %s", type);
        }
        if (v[2] == NULL)
            return fail(p, v[3], "spec.clientKey", "keys per-client limits: it needs 'perClient'");
    }
    if (v[4] != NULL) {
        yaml_node_item_t *items;
        size_t n;
        if (get_seq(p, v[4], "spec.overrides", &items, &n) != 0)
            return -1;
        if (n != 0 && v[2] == NULL)
            return fail(p, v[4], "spec.overrides", "override per-client limits: they need 'perClient'");
        spec->overrides = arena_alloc(&p->arena, sizeof(spec->overrides[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char path[64], sub[96];
            yaml_node_t *it = item(p, items, i), *ov[3];
            yaml_node_item_t *citems;
            size_t nc;
            index_path(path, sizeof(path), "spec.overrides", i);
            if (fields(p, it, path, okeys, ov) != 0)
                return -1;
            Remora__V1__RateLimitOverride *o = arena_alloc(&p->arena, sizeof(*o));
            remora__v1__rate_limit_override__init(o);
            if (parse_rate(p, it, path, ov[0], ov[1], &o->requests_per_second, &o->burst) != 0)
                return -1;
            join(sub, sizeof(sub), path, "clients");
            if (require(p, it, path, ov[2], "clients") != 0 || get_seq(p, ov[2], sub, &citems, &nc) != 0)
                return -1;
            if (nc == 0)
                return fail(p, ov[2], sub, "needs at least one client");
            o->clients = arena_alloc(&p->arena, sizeof(o->clients[0]) * nc);
            for (size_t j = 0; j != nc; ++j) {
                char csub[128];
                const char *c;
                if (get_str(p, item(p, citems, j), index_path(csub, sizeof(csub), sub, j), &c) != 0)
                    return -1;
                if (c[0] == '\0')
                    return fail(p, item(p, citems, j), csub, "must not be empty");
                o->clients[j] = arena_strdup(&p->arena, c);
            }
            o->n_clients = nc;
            spec->overrides[i] = o;
        }
        spec->n_overrides = n;
    }
    *out = spec;
    return 0;
}

/* -------------------------------------------------------------------------- AuthorizationPolicy */

/* Bounds of a policy, as the agent's bootstrap file has them (docs/control-plane.md). */
#define MAX_AUTHZ_RULES 32
#define MAX_AUTHZ_ENTRIES 16
#define MAX_AUTHZ_VALUES 32
#define MAX_AUTHZ_VALUE_BYTES 512

typedef enum en_authz_value_t {
    AUTHZ_IDENTITY,
    AUTHZ_NAMESPACE,
    AUTHZ_METHOD,
    AUTHZ_PATH,
    AUTHZ_GRPC_METHOD,
} authz_value_t;

/* A pattern may end in '*' (a prefix); '*' elsewhere, spaces and control characters are refused. */
static int
authz_pattern_ok(const char *s)
{
    for (const char *c = s; *c != '\0'; ++c) {
        if ((unsigned char)*c <= ' ' || *c == 0x7f || (*c == '*' && c[1] != '\0'))
            return 0;
    }
    return 1;
}

static int
authz_value_ok(parser_t *p, yaml_node_t *node, const char *path, authz_value_t type, const char *s)
{
    if (strlen(s) > MAX_AUTHZ_VALUE_BYTES)
        return fail(p, node, path, "is longer than %d bytes", MAX_AUTHZ_VALUE_BYTES);
    switch (type) {
    case AUTHZ_IDENTITY:
        if (strncmp(s, "spiffe://", 9) != 0 || s[9] == '\0' || !authz_pattern_ok(s))
            return fail(p, node, path,
                        "'%s' is not a SPIFFE ID: use spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, or a prefix "
                        "ending in '*'",
                        s);
        return 0;
    case AUTHZ_NAMESPACE:
        if (!is_dns_label(s))
            return fail(p, node, path, "'%s' is not a valid namespace", s);
        return 0;
    case AUTHZ_METHOD:
        for (const char *c = s; *c != '\0'; ++c)
            if (islower((unsigned char)*c))
                return fail(p, node, path, "'%s': methods are upper case (e.g. GET)", s);
        if (!is_token(s))
            return fail(p, node, path, "'%s' is not a valid HTTP method", s);
        return 0;
    case AUTHZ_PATH:
        if (s[0] != '/' || !authz_pattern_ok(s) || strchr(s, '?') != NULL || strchr(s, '#') != NULL)
            return fail(p, node, path, "'%s' is not a path: start with '/', no query, no spaces; a prefix ends in '*' (\"/v1/*\")",
                        s);
        return 0;
    case AUTHZ_GRPC_METHOD: {
        const char *slash = strchr(s, '/');
        char svc[MAX_AUTHZ_VALUE_BYTES + 1];
        int ok = slash != NULL && slash != s && strchr(slash + 1, '/') == NULL;
        if (ok) {
            memcpy(svc, s, (size_t)(slash - s));
            svc[slash - s] = '\0';
            ok = is_grpc_name(svc, 1) && (strcmp(slash + 1, "*") == 0 || is_grpc_name(slash + 1, 0));
        }
        if (!ok)
            return fail(p, node, path, "'%s' is not a gRPC method: use \"pkg.Service/Method\" or \"pkg.Service/*\"", s);
        return 0;
    }
    }
    return 0;
}

static int
parse_authz_values(parser_t *p, yaml_node_t *node, const char *path, authz_value_t type, size_t *n_out, char ***out)
{
    yaml_node_item_t *items;
    size_t n;
    if (get_seq(p, node, path, &items, &n) != 0)
        return -1;
    if (n == 0 || n > MAX_AUTHZ_VALUES)
        return fail(p, node, path, "must list 1-%d values, got %zu", MAX_AUTHZ_VALUES, n);
    char **v = arena_alloc(&p->arena, sizeof(v[0]) * n);
    for (size_t i = 0; i != n; ++i) {
        char sub[160];
        const char *s;
        yaml_node_t *it = item(p, items, i);
        index_path(sub, sizeof(sub), path, i);
        if (get_str(p, it, sub, &s) != 0 || authz_value_ok(p, it, sub, type, s) != 0)
            return -1;
        for (size_t j = 0; j != i; ++j)
            if (strcmp(v[j], s) == 0)
                return fail(p, it, sub, "'%s' is listed twice", s);
        v[i] = arena_strdup(&p->arena, s);
    }
    *n_out = n;
    *out = v;
    return 0;
}

static int
parse_authz_rule(parser_t *p, yaml_node_t *node, const char *path, Remora__V1__AuthorizationRule **out)
{
    static const char *const keys[] = {"from", "to", NULL};
    static const char *const fkeys[] = {"identities", "namespaces", NULL};
    static const char *const tkeys[] = {"methods", "paths", "grpcMethods", NULL};
    yaml_node_t *v[2];
    if (fields(p, node, path, keys, v) != 0)
        return -1;
    Remora__V1__AuthorizationRule *r = arena_alloc(&p->arena, sizeof(*r));
    remora__v1__authorization_rule__init(r);
    for (int side = 0; side != 2; ++side) {
        char lpath[96];
        yaml_node_item_t *items;
        size_t n;
        if (v[side] == NULL)
            continue;
        join(lpath, sizeof(lpath), path, side == 0 ? "from" : "to");
        if (get_seq(p, v[side], lpath, &items, &n) != 0)
            return -1;
        if (n == 0 || n > MAX_AUTHZ_ENTRIES)
            return fail(p, v[side], lpath, "must list 1-%d entries, got %zu (omit it to match any %s)", MAX_AUTHZ_ENTRIES, n,
                        side == 0 ? "caller" : "request");
        if (side == 0) {
            r->from = arena_alloc(&p->arena, sizeof(r->from[0]) * n);
            r->n_from = n;
        } else {
            r->to = arena_alloc(&p->arena, sizeof(r->to[0]) * n);
            r->n_to = n;
        }
        for (size_t i = 0; i != n; ++i) {
            char epath[128], sub[160];
            yaml_node_t *it = item(p, items, i), *ev[3];
            index_path(epath, sizeof(epath), lpath, i);
            if (fields(p, it, epath, side == 0 ? fkeys : tkeys, ev) != 0)
                return -1;
            if (side == 0) {
                Remora__V1__AuthorizationSource *f = arena_alloc(&p->arena, sizeof(*f));
                remora__v1__authorization_source__init(f);
                if ((ev[0] == NULL) == (ev[1] == NULL))
                    return fail(p, it, epath, "needs exactly one of 'identities' and 'namespaces'");
                if (ev[0] != NULL && parse_authz_values(p, ev[0], join(sub, sizeof(sub), epath, "identities"), AUTHZ_IDENTITY,
                                                        &f->n_identities, &f->identities) != 0)
                    return -1;
                if (ev[1] != NULL && parse_authz_values(p, ev[1], join(sub, sizeof(sub), epath, "namespaces"), AUTHZ_NAMESPACE,
                                                        &f->n_namespaces, &f->namespaces) != 0)
                    return -1;
                r->from[i] = f;
            } else {
                Remora__V1__AuthorizationOperation *o = arena_alloc(&p->arena, sizeof(*o));
                remora__v1__authorization_operation__init(o);
                if (ev[0] == NULL && ev[1] == NULL && ev[2] == NULL)
                    return fail(p, it, epath, "needs at least one of 'methods', 'paths' and 'grpcMethods'");
                if (ev[0] != NULL && parse_authz_values(p, ev[0], join(sub, sizeof(sub), epath, "methods"), AUTHZ_METHOD,
                                                        &o->n_methods, &o->methods) != 0)
                    return -1;
                if (ev[1] != NULL &&
                    parse_authz_values(p, ev[1], join(sub, sizeof(sub), epath, "paths"), AUTHZ_PATH, &o->n_paths, &o->paths) != 0)
                    return -1;
                if (ev[2] != NULL && parse_authz_values(p, ev[2], join(sub, sizeof(sub), epath, "grpcMethods"), AUTHZ_GRPC_METHOD,
                                                        &o->n_grpc_methods, &o->grpc_methods) != 0)
                    return -1;
                if (ev[1] != NULL && ev[2] != NULL)
                    return fail(p, ev[2], sub,
                                "cannot be combined with 'paths' in one entry (a gRPC method is the path): use two entries");
                r->to[i] = o;
            }
        }
    }
    *out = r;
    return 0;
}

static int
parse_authorization_policy_spec(parser_t *p, yaml_node_t *node, Remora__V1__AuthorizationPolicySpec **out)
{
    static const char *const keys[] = {"targetRefs", "action", "rules", NULL};
    yaml_node_t *v[3];
    if (fields(p, node, "spec", keys, v) != 0)
        return -1;
    Remora__V1__AuthorizationPolicySpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__authorization_policy_spec__init(spec);
    if (parse_target_refs(p, node, v[0], 1, &spec->n_target_refs, &spec->target_refs) != 0)
        return -1;
    const char *action;
    if (require(p, node, "spec", v[1], "action") != 0 || get_str(p, v[1], "spec.action", &action) != 0)
        return -1;
    if (strcmp(action, "ALLOW") == 0)
        spec->action = REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_ALLOW;
    else if (strcmp(action, "DENY") == 0)
        spec->action = REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_DENY;
    else if (strcmp(action, "AUDIT") == 0)
        spec->action = REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_AUDIT;
    else
        return fail(p, v[1], "spec.action", "Unsupported value: \"%s\": supported values: \"ALLOW\", \"DENY\", \"AUDIT\"", action);
    if (v[2] != NULL) {
        yaml_node_item_t *items;
        size_t n;
        if (get_seq(p, v[2], "spec.rules", &items, &n) != 0)
            return -1;
        if (n > MAX_AUTHZ_RULES)
            return fail(p, v[2], "spec.rules", "at most %d rules, got %zu", MAX_AUTHZ_RULES, n);
        spec->rules = arena_alloc(&p->arena, sizeof(spec->rules[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char path[64];
            index_path(path, sizeof(path), "spec.rules", i);
            if (parse_authz_rule(p, item(p, items, i), path, &spec->rules[i]) != 0)
                return -1;
        }
        spec->n_rules = n;
    }
    *out = spec;
    return 0;
}

/* ------------------------------------------------------------------------------------ Telemetry */

/* A percentage 0-100 with at most 4 decimals ("1", "0.5", "99.9999"), as the agent takes it. */
static int
get_percent(parser_t *p, yaml_node_t *node, const char *path, double *out)
{
    *out = 0;
    if (node->type != YAML_SCALAR_NODE || rm_yaml_is_null(node))
        return fail(p, node, path, "must be a number from 0 to 100, got %s", rm_yaml_type_name(node));
    const char *s = (const char *)node->data.scalar.value;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, node, path, "must be a number, got the quoted string \"%s\"", s);
    size_t ip = strspn(s, "0123456789"), fp = 0;
    if (s[ip] == '.')
        fp = strspn(s + ip + 1, "0123456789");
    if (ip == 0 || ip > 3 || (s[ip] == '.' && (fp == 0 || fp > 4)) || s[ip + (s[ip] == '.' ? fp + 1 : 0)] != '\0')
        return fail(p, node, path, "must be a number from 0 to 100 with at most 4 decimals (1, 0.5), got '%s'", s);
    double v = strtod(s, NULL);
    if (v > 100)
        return fail(p, node, path, "must be from 0 to 100, got %s", s);
    *out = v;
    return 0;
}

static int
parse_telemetry_spec(parser_t *p, yaml_node_t *node, Remora__V1__TelemetrySpec **out)
{
    static const char *const keys[] = {"tracing", "accessLog", NULL};
    static const char *const tkeys[] = {"otlp", "samplingPercent", "propagation", NULL};
    static const char *const okeys[] = {"endpoint", "protocol", NULL};
    static const char *const akeys[] = {"format", "path", NULL};
    static const char *const planned[] = {"metrics", NULL};
    yaml_node_t *v[2], *tv[3], *ov[2], *av[2];
    const char *s;
    char sub[96];
    if (reject_planned(p, node, "spec", planned) != 0 || fields(p, node, "spec", keys, v) != 0)
        return -1;
    if (v[0] == NULL && v[1] == NULL)
        return fail(p, node, "spec", "give tracing, accessLog, or both");
    Remora__V1__TelemetrySpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__telemetry_spec__init(spec);
    if (v[0] != NULL) {
        Remora__V1__TelemetryTracing *t = arena_alloc(&p->arena, sizeof(*t));
        remora__v1__telemetry_tracing__init(t);
        Remora__V1__OtlpExporter *o = arena_alloc(&p->arena, sizeof(*o));
        remora__v1__otlp_exporter__init(o);
        t->otlp = o;
        if (fields(p, v[0], "spec.tracing", tkeys, tv) != 0 || require(p, v[0], "spec.tracing", tv[0], "otlp") != 0 ||
            fields(p, tv[0], "spec.tracing.otlp", okeys, ov) != 0 ||
            require(p, tv[0], "spec.tracing.otlp", ov[0], "endpoint") != 0 ||
            get_str(p, ov[0], "spec.tracing.otlp.endpoint", &s) != 0)
            return -1;
        if (check_address(p, ov[0], "spec.tracing.otlp.endpoint", s, 0) != 0)
            return -1;
        o->endpoint = arena_strdup(&p->arena, s);
        if (ov[1] != NULL) {
            if (get_str(p, ov[1], "spec.tracing.otlp.protocol", &s) != 0)
                return -1;
            if (strcmp(s, "grpc") == 0)
                o->protocol = REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_GRPC;
            else if (strcmp(s, "http") == 0)
                o->protocol = REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_HTTP;
            else
                return fail(p, ov[1], "spec.tracing.otlp.protocol", "must be grpc or http, got '%s'", s);
        }
        if (tv[1] != NULL && get_percent(p, tv[1], "spec.tracing.samplingPercent", &t->sampling_percent) != 0)
            return -1;
        int w3c = 1, b3 = 1;
        if (tv[2] != NULL) {
            yaml_node_item_t *items;
            size_t n;
            if (get_seq(p, tv[2], "spec.tracing.propagation", &items, &n) != 0)
                return -1;
            if (n == 0)
                return fail(p, tv[2], "spec.tracing.propagation", "must name w3c, b3 or both");
            w3c = b3 = 0;
            for (size_t i = 0; i != n; ++i) {
                yaml_node_t *it = item(p, items, i);
                index_path(sub, sizeof(sub), "spec.tracing.propagation", i);
                if (get_str(p, it, sub, &s) != 0)
                    return -1;
                int *flag = strcmp(s, "w3c") == 0 ? &w3c : strcmp(s, "b3") == 0 ? &b3 : NULL;
                if (flag == NULL)
                    return fail(p, it, sub, "unknown propagation '%s' (known: w3c, b3)", s);
                if (*flag)
                    return fail(p, it, sub, "'%s' is listed twice", s);
                *flag = 1;
            }
        }
        t->propagation = arena_alloc(&p->arena, 2 * sizeof(*t->propagation));
        if (w3c)
            t->propagation[t->n_propagation++] = REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_W3C;
        if (b3)
            t->propagation[t->n_propagation++] = REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_B3;
        spec->tracing = t;
    }
    if (v[1] != NULL) {
        Remora__V1__TelemetryAccessLog *a = arena_alloc(&p->arena, sizeof(*a));
        remora__v1__telemetry_access_log__init(a);
        if (fields(p, v[1], "spec.accessLog", akeys, av) != 0)
            return -1;
        if (av[0] != NULL) {
            if (get_str(p, av[0], "spec.accessLog.format", &s) != 0)
                return -1;
            if (strcmp(s, "json") != 0)
                return fail(p, av[0], "spec.accessLog.format", "must be json, got '%s'", s);
        }
        a->format = REMORA__V1__ACCESS_LOG_FORMAT__ACCESS_LOG_FORMAT_JSON;
        a->path = "stdout";
        if (av[1] != NULL) {
            if (get_str(p, av[1], "spec.accessLog.path", &s) != 0)
                return -1;
            if (strcmp(s, "stdout") != 0 && s[0] != '/')
                return fail(p, av[1], "spec.accessLog.path", "must be stdout or an absolute file path, got '%s'", s);
            if (strlen(s) > 4000)
                return fail(p, av[1], "spec.accessLog.path", "is longer than 4000 bytes");
            a->path = arena_strdup(&p->arena, s);
        }
        spec->access_log = a;
    }
    *out = spec;
    return 0;
}

/* ---------------------------------------------------------------------------------------- MeshTLS */

static int
parse_mesh_tls_spec(parser_t *p, yaml_node_t *node, const Remora__V1__ObjectMeta *meta, Remora__V1__MeshTLSSpec **out)
{
    static const char *const keys[] = {"mode", NULL};
    yaml_node_t *v[1];
    const char *s;
    if (fields(p, node, "spec", keys, v) != 0 || require(p, node, "spec", v[0], "mode") != 0 ||
        get_str(p, v[0], "spec.mode", &s) != 0)
        return -1;
    if (strcmp(meta->namespace_, "remora-system") != 0)
        return fail(p, node, "metadata.namespace",
                    "MeshTLS is mesh-wide: put it in the root namespace remora-system (it is in '%s')", meta->namespace_);
    Remora__V1__MeshTLSSpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__mesh_tlsspec__init(spec);
    if (strcmp(s, "STRICT") == 0)
        spec->mode = REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_STRICT;
    else if (strcmp(s, "PERMISSIVE") == 0)
        spec->mode = REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_PERMISSIVE;
    else if (strcmp(s, "DISABLE") == 0)
        spec->mode = REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_DISABLE;
    else
        return fail(p, v[0], "spec.mode", "'%s' must be STRICT, PERMISSIVE or DISABLE", s);
    *out = spec;
    return 0;
}

/* ----------------------------------------------------------------------------------- EgressPolicy */

/*
 * Istio's Sidecar egress hosts for Remora's Services (docs/control-plane.md, "Scoping"): targetRefs name
 * ServiceAccounts of the policy's namespace (none: every workload of it), hosts are "NAMESPACE/NAME" with
 * "." for the policy's namespace and "*" for any namespace or name. A ServiceAccount is no resource of the
 * store, so a target is not checked for existence (a workload may start later).
 */
static int
parse_egress_policy_spec(parser_t *p, yaml_node_t *node, Remora__V1__EgressPolicySpec **out)
{
    static const char *const keys[] = {"targetRefs", "hosts", NULL};
    static const char *const tkeys[] = {"group", "kind", "name", "namespace", NULL};
    yaml_node_t *v[2];
    yaml_node_item_t *items;
    size_t n;
    if (fields(p, node, "spec", keys, v) != 0)
        return -1;
    Remora__V1__EgressPolicySpec *spec = arena_alloc(&p->arena, sizeof(*spec));
    remora__v1__egress_policy_spec__init(spec);
    if (v[0] != NULL) {
        if (get_seq(p, v[0], "spec.targetRefs", &items, &n) != 0)
            return -1;
        if (n > MAX_TARGET_REFS)
            return fail(p, v[0], "spec.targetRefs", "at most %d targets, got %zu", MAX_TARGET_REFS, n);
        spec->target_refs = arena_alloc(&p->arena, sizeof(spec->target_refs[0]) * (n + 1));
        for (size_t i = 0; i != n; ++i) {
            char path[64], sub[96];
            yaml_node_t *it = item(p, items, i), *tv[4];
            const char *name, *s;
            index_path(path, sizeof(path), "spec.targetRefs", i);
            if (fields(p, it, path, tkeys, tv) != 0)
                return -1;
            if (tv[3] != NULL)
                return fail(p, tv[3], join(sub, sizeof(sub), path, "namespace"),
                            "targetRefs are local: the ServiceAccount must be in the policy's namespace (%s)", p->ns);
            if (tv[1] != NULL) {
                if (get_str(p, tv[1], join(sub, sizeof(sub), path, "kind"), &s) != 0)
                    return -1;
                if (strcasecmp(s, "ServiceAccount") != 0)
                    return fail(p, tv[1], sub, "kind '%s' is not supported: an EgressPolicy targets a ServiceAccount", s);
            }
            if (tv[0] != NULL) {
                if (get_str(p, tv[0], join(sub, sizeof(sub), path, "group"), &s) != 0)
                    return -1;
                if (s[0] != '\0' && strcmp(s, "core") != 0)
                    return fail(p, tv[0], sub, "group '%s' is not supported for kind ServiceAccount (use \"\")", s);
            }
            if (require(p, it, path, tv[2], "name") != 0 || get_name(p, tv[2], join(sub, sizeof(sub), path, "name"), &name) != 0)
                return -1;
            for (size_t j = 0; j != i; ++j)
                if (strcmp(spec->target_refs[j]->name, name) == 0)
                    return fail(p, tv[2], sub, "ServiceAccount '%s' is listed twice", name);
            Remora__V1__PolicyTargetReference *t = arena_alloc(&p->arena, sizeof(*t));
            remora__v1__policy_target_reference__init(t);
            t->group = "";
            t->kind = "ServiceAccount";
            t->name = arena_strdup(&p->arena, name);
            spec->target_refs[spec->n_target_refs++] = t;
        }
    }
    if (require(p, node, "spec", v[1], "hosts") != 0 || get_seq(p, v[1], "spec.hosts", &items, &n) != 0)
        return -1;
    if (n == 0)
        return fail(p, v[1], "spec.hosts", "needs at least one host (\"./*\": the Services of the policy's namespace)");
    if (n > RM_EGRESS_MAX_HOSTS)
        return fail(p, v[1], "spec.hosts", "at most %d hosts, got %zu", RM_EGRESS_MAX_HOSTS, n);
    spec->hosts = arena_alloc(&p->arena, sizeof(spec->hosts[0]) * (n + 1));
    for (size_t i = 0; i != n; ++i) {
        char path[64];
        yaml_node_t *it = item(p, items, i);
        const char *s;
        index_path(path, sizeof(path), "spec.hosts", i);
        if (get_str(p, it, path, &s) != 0)
            return -1;
        const char *slash = strchr(s, '/');
        char ns[64];
        size_t nslen = slash != NULL ? (size_t)(slash - s) : 0;
        if (slash == NULL || nslen >= sizeof(ns))
            return fail(p, it, path, "'%s' must be NAMESPACE/NAME (\"./api\", \"shop/*\", \"*/echo\")", s);
        memcpy(ns, s, nslen);
        ns[nslen] = '\0';
        const char *name = slash + 1;
        if (strcmp(ns, ".") != 0 && strcmp(ns, "*") != 0 && !is_dns_label(ns))
            return fail(p, it, path, "'%s': the namespace must be a namespace name, '.' (the policy's) or '*' (any)", s);
        if (strcmp(name, "*") != 0 && !is_dns_label(name))
            return fail(p, it, path, "'%s': the name must be a Service's name or '*' (every Service of the namespace)", s);
        for (size_t j = 0; j != i; ++j)
            if (strcmp(spec->hosts[j], s) == 0)
                return fail(p, it, path, "'%s' is listed twice", s);
        spec->hosts[spec->n_hosts++] = arena_strdup(&p->arena, s);
    }
    *out = spec;
    return 0;
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
    switch (kind) {
    case RM_KIND_SERVICE: {
        Remora__V1__Service *svc = arena_alloc(&p->arena, sizeof(*svc));
        remora__v1__service__init(svc);
        svc->metadata = meta;
        if (parse_service_spec(p, v[3], &svc->spec) != 0)
            return;
        msg = &svc->base;
    } break;
    case RM_KIND_HTTP_ROUTE:
    case RM_KIND_GRPC_ROUTE:
        if ((msg = parse_route(p, v[3], meta, kind == RM_KIND_GRPC_ROUTE)) == NULL)
            return;
        break;
    case RM_KIND_FAULT_INJECTION: {
        Remora__V1__FaultInjection *fi = arena_alloc(&p->arena, sizeof(*fi));
        remora__v1__fault_injection__init(fi);
        fi->metadata = meta;
        if (parse_fault_spec(p, v[3], &fi->spec) != 0)
            return;
        msg = &fi->base;
    } break;
    case RM_KIND_BACKEND_TRAFFIC_POLICY: {
        Remora__V1__BackendTrafficPolicy *btp = arena_alloc(&p->arena, sizeof(*btp));
        remora__v1__backend_traffic_policy__init(btp);
        btp->metadata = meta;
        if (parse_backend_policy_spec(p, v[3], &btp->spec) != 0)
            return;
        msg = &btp->base;
    } break;
    case RM_KIND_RATE_LIMIT_POLICY: {
        Remora__V1__RateLimitPolicy *rlp = arena_alloc(&p->arena, sizeof(*rlp));
        remora__v1__rate_limit_policy__init(rlp);
        rlp->metadata = meta;
        if (parse_rate_limit_policy_spec(p, v[3], &rlp->spec) != 0)
            return;
        msg = &rlp->base;
    } break;
    case RM_KIND_AUTHORIZATION_POLICY: {
        Remora__V1__AuthorizationPolicy *ap = arena_alloc(&p->arena, sizeof(*ap));
        remora__v1__authorization_policy__init(ap);
        ap->metadata = meta;
        if (parse_authorization_policy_spec(p, v[3], &ap->spec) != 0)
            return;
        msg = &ap->base;
    } break;
    case RM_KIND_TELEMETRY: {
        Remora__V1__Telemetry *tm = arena_alloc(&p->arena, sizeof(*tm));
        remora__v1__telemetry__init(tm);
        tm->metadata = meta;
        if (parse_telemetry_spec(p, v[3], &tm->spec) != 0)
            return;
        msg = &tm->base;
    } break;
    case RM_KIND_EGRESS_POLICY: {
        Remora__V1__EgressPolicy *ep = arena_alloc(&p->arena, sizeof(*ep));
        remora__v1__egress_policy__init(ep);
        ep->metadata = meta;
        if (parse_egress_policy_spec(p, v[3], &ep->spec) != 0)
            return;
        msg = &ep->base;
    } break;
    case RM_KIND_MESH_TLS: {
        Remora__V1__MeshTLS *mt = arena_alloc(&p->arena, sizeof(*mt));
        remora__v1__mesh_tls__init(mt);
        mt->metadata = meta;
        if (parse_mesh_tls_spec(p, v[3], meta, &mt->spec) != 0)
            return;
        msg = &mt->base;
    } break;
    default:
        rm_fatal("document kind %d has no parser", (int)kind);
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
    /* a virtual address means one Service (docs/transparent.md); agents also refuse a snapshot that repeats one */
    for (size_t i = 0; i != b->resources.size; ++i) {
        rm_resource_t *r = b->resources.entries[i];
        const Remora__V1__Service *svc = (const Remora__V1__Service *)r->msg;
        if (r->kind != RM_KIND_SERVICE || svc->spec == NULL)
            continue;
        for (size_t k = 0; k != svc->spec->n_addresses; ++k) {
            for (size_t j = 0; j != i; ++j) {
                rm_resource_t *q = b->resources.entries[j];
                const Remora__V1__Service *other = (const Remora__V1__Service *)q->msg;
                if (q->kind != RM_KIND_SERVICE || other->spec == NULL)
                    continue;
                for (size_t l = 0; l != other->spec->n_addresses; ++l)
                    if (strcmp(svc->spec->addresses[k], other->spec->addresses[l]) == 0)
                        rm_doc_errors_add(
                            &b->errors, r->file, r->line,
                            "service/%s: spec.addresses: '%s' is also an address of service/%s (namespace %s) at %s:%u", r->name,
                            svc->spec->addresses[k], q->name, q->ns, q->file, q->line);
            }
        }
    }
    for (size_t i = 0; i != b->num_refs; ++i) {
        rm_ref_t *ref = &b->refs[i];
        if (find_in_batch(b, ref->kind, ref->ns, ref->name) || (exists != NULL && exists(ctx, ref->kind, ref->ns, ref->name)))
            continue;
        rm_doc_errors_add(&b->errors, ref->file, ref->line,
                          "%s: %s '%s' does not exist in namespace '%s' (apply it first, or in the same apply)", ref->what,
                          rm_kind_name(ref->kind), ref->name, ref->ns);
    }
    sort_errors(b);
}
