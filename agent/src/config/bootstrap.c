/*
 * The bootstrap YAML producer: libyaml document -> rm_config_t. The YAML tree never leaves this file.
 *
 * Checks that concern one value (types, ports, ranges, file readability) are made here, where the
 * exact line of the value is known; checks across objects are left to rm_config_validate(), so
 * every producer gets them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "remora/yamlutil.h"
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/config.h"
#include "config/config_priv.h"
#include "config/regex.h"

/* Aliases let a small document expand into a huge tree; no legitimate bootstrap file comes near this. */
#define NODE_BUDGET 1000000
#define MAX_FILE_BYTES (16 * 1024 * 1024)

/* A cluster named by a route (mirror == NO_MIRROR) or by one of its mirrors, checked once every cluster is known. */
#define NO_MIRROR SIZE_MAX
typedef struct st_route_ref_t {
    size_t listener, index;
    unsigned line;
    size_t mirror;
} route_ref_t;

typedef struct st_parser_t {
    yaml_document_t doc;
    const char *file;
    /* base directory for relative paths, "" for the current directory */
    char *dir;
    rm_config_error_t *err;
    rm_config_t *config;
    size_t budget;
    route_ref_t *refs;
    size_t num_refs;
} parser_t;

static int fail(parser_t *p, const yaml_node_t *node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(parser_t *p, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    snprintf(p->err->file, sizeof(p->err->file), "%s", p->file);
    p->err->line = rm_yaml_line(node);
    va_start(ap, fmt);
    vsnprintf(p->err->message, sizeof(p->err->message), fmt, ap);
    va_end(ap);
    return -1;
}

static int
spend(parser_t *p, const yaml_node_t *node, size_t n)
{
    if (n > p->budget)
        return fail(p, node, "document too large (too many nodes, or aliases expanding too far)");
    p->budget -= n;
    return 0;
}

/*
 * Looks up the keys of a mapping. `keys` is NULL-terminated; out[i] receives the value of keys[i]
 * or NULL when absent or null. Unknown and repeated keys are errors: a typo must not silently fall
 * back to a default.
 */
static int
fields(parser_t *p, yaml_node_t *map, const char *pfx, const char *what, const char *const *keys, yaml_node_t **out)
{
    size_t nkeys = 0;
    while (keys[nkeys] != NULL)
        out[nkeys++] = NULL;
    if (map->type != YAML_MAPPING_NODE)
        return fail(p, map, "%s%s must be a mapping, got %s", pfx, what, rm_yaml_type_name(map));
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *end = map->data.mapping.pairs.top;
    if (spend(p, map, end - start) != 0)
        return -1;
    for (yaml_node_pair_t *pair = start; pair != end; ++pair) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key), *v = yaml_document_get_node(&p->doc, pair->value);
        if (k->type != YAML_SCALAR_NODE)
            return fail(p, k, "%skeys must be plain names, got %s", pfx, rm_yaml_type_name(k));
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
            if (best != NULL)
                return fail(p, k, "%sunknown key '%s' in %s (did you mean '%s'?)", pfx, name, what, best);
            return fail(p, k, "%sunknown key '%s' in %s", pfx, name, what);
        }
        for (yaml_node_pair_t *prev = start; prev != pair; ++prev) {
            yaml_node_t *pk = yaml_document_get_node(&p->doc, prev->key);
            if (pk->type == YAML_SCALAR_NODE && strcmp((const char *)pk->data.scalar.value, name) == 0)
                return fail(p, k, "%skey '%s' is given twice (first on line %u)", pfx, name, rm_yaml_line(pk));
        }
        out[i] = rm_yaml_is_null(v) ? NULL : v;
    }
    return 0;
}

/* The key node of `key` in mapping `map` (for errors about a whole value, on the line of its key), or `map`. */
static yaml_node_t *
key_of(parser_t *p, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair != map->data.mapping.pairs.top; ++pair) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return k;
    }
    return map;
}

/* The "name" of a mapping, if it is a plain string, so that messages about the object's other keys can use it. */
static const char *
peek_name(parser_t *p, yaml_node_t *map)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair != map->data.mapping.pairs.top; ++pair) {
        yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key), *v = yaml_document_get_node(&p->doc, pair->value);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, "name") == 0 && v->type == YAML_SCALAR_NODE &&
            !rm_yaml_is_null(v) && strlen((const char *)v->data.scalar.value) == v->data.scalar.length &&
            v->data.scalar.length <= 128)
            return (const char *)v->data.scalar.value;
    }
    return NULL;
}

static int
require(parser_t *p, yaml_node_t *map, const char *pfx, yaml_node_t *value, const char *key)
{
    if (value == NULL)
        return fail(p, map, "%s'%s' is required", pfx, key);
    return 0;
}

static int
get_string(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, const char **out)
{
    *out = NULL; /* set on every path (GCC's Release build cannot tell that callers read it only on success) */
    if (node->type != YAML_SCALAR_NODE || rm_yaml_is_null(node))
        return fail(p, node, "%s%s must be a string, got %s", pfx, key, rm_yaml_type_name(node));
    if (strlen((const char *)node->data.scalar.value) != node->data.scalar.length)
        return fail(p, node, "%s%s must not contain NUL characters", pfx, key);
    *out = (const char *)node->data.scalar.value;
    return 0;
}

static int
dup_string(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, char **out)
{
    const char *s = NULL;
    if (get_string(p, node, pfx, key, &s) != 0)
        return -1;
    *out = rm_strdup(s);
    return 0;
}

static int
get_u32(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
    *out = 0;
    uint64_t v = 0;
    if (node->type != YAML_SCALAR_NODE)
        return fail(p, node, "%s%s must be a number, got %s", pfx, key, rm_yaml_type_name(node));
    const char *s = (const char *)node->data.scalar.value;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, node, "%s%s must be a number, got the quoted string \"%s\"", pfx, key, s);
    if (*s == '\0')
        return fail(p, node, "%s%s must be a number", pfx, key);
    for (const char *c = s; *c != '\0'; ++c) {
        if (*c < '0' || *c > '9')
            return fail(p, node, "%s%s must be a whole number %u-%u, got '%s'", pfx, key, min, max, s);
        v = v * 10 + (uint64_t)(*c - '0');
        if (v > UINT32_MAX)
            return fail(p, node, "%s%s must be %u-%u, got %s", pfx, key, min, max, s);
    }
    if (v < min || v > max)
        return fail(p, node, "%s%s must be %u-%u, got %s", pfx, key, min, max, s);
    *out = (uint32_t)v;
    return 0;
}

/* A list of nodes; a lone scalar stands for a list of one when `allow_scalar`. The caller frees *items. */
static int
get_list(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, int allow_scalar, yaml_node_t ***items, size_t *n)
{
    if (node->type == YAML_SCALAR_NODE && allow_scalar) {
        *items = rm_malloc(sizeof(**items));
        (*items)[0] = node;
        *n = 1;
        return 0;
    }
    if (node->type != YAML_SEQUENCE_NODE)
        return fail(p, node, "%s%s must be a list%s, got %s", pfx, key, allow_scalar ? " or a string" : "",
                    rm_yaml_type_name(node));
    yaml_node_item_t *start = node->data.sequence.items.start, *end = node->data.sequence.items.top;
    if (spend(p, node, end - start) != 0)
        return -1;
    *n = end - start;
    *items = rm_calloc(*n, sizeof(**items));
    for (size_t i = 0; i != *n; ++i)
        (*items)[i] = yaml_document_get_node(&p->doc, start[i]);
    return 0;
}

static int
get_bool(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, int *out)
{
    *out = 0;
    const char *s = node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
    if (s != NULL && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)) {
        *out = s[0] == 't';
        return 0;
    }
    if (s != NULL)
        return fail(p, node, "%s%s must be true or false, got '%s'", pfx, key, s);
    return fail(p, node, "%s%s must be true or false, got %s", pfx, key, rm_yaml_type_name(node));
}

/* A percentage 0-100 with up to 4 decimals, stored in parts per million. */
static int
get_percent(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, uint32_t *per_million)
{
    if (node->type != YAML_SCALAR_NODE)
        return fail(p, node, "%s%s must be a number 0-100, got %s", pfx, key, rm_yaml_type_name(node));
    const char *s = (const char *)node->data.scalar.value;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail(p, node, "%s%s must be a number 0-100, got the quoted string \"%s\"", pfx, key, s);
    if (rm_config__parse_percent(s, per_million) != 0)
        return fail(p, node, "%s%s must be a number 0-100 with at most 4 decimals (10, 0.5), got '%s'", pfx, key, s);
    return 0;
}

/* A gRPC status: its upper-case name as in the gRPC spec, or its number; `min` excludes OK where it makes no sense. */
static int
get_grpc_status(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, int min, int *code)
{
    *code = 0;
    const char *s;
    if (get_string(p, node, pfx, key, &s) != 0)
        return -1;
    if (s[0] >= '0' && s[0] <= '9' && node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        uint32_t v;
        if (get_u32(p, node, pfx, key, (uint32_t)min, RM_GRPC_NUM_STATUSES - 1, &v) != 0)
            return -1;
        *code = (int)v;
        return 0;
    }
    int c = rm_config__grpc_status_code(s);
    if (c >= min) {
        *code = c;
        return 0;
    }
    if (c >= 0)
        return fail(p, node, "%s%s: %s is not allowed here, use a status %d-16", pfx, key, s, min);
    const char *best = NULL;
    size_t best_d = 3;
    for (int i = min; i != RM_GRPC_NUM_STATUSES; ++i) {
        size_t d = rm_edit_distance(s, rm_grpc_status_names[i], 2);
        if (d < best_d) {
            best_d = d;
            best = rm_grpc_status_names[i];
        }
    }
    if (best != NULL)
        return fail(p, node, "%s%s '%s' is not a gRPC status (did you mean '%s'?)", pfx, key, s, best);
    return fail(p, node, "%s%s '%s' is not a gRPC status: use an upper-case name such as UNAVAILABLE or a number %d-16", pfx, key,
                s, min);
}

static char *
resolve_path(parser_t *p, const char *path)
{
    if (path[0] == '/' || p->dir[0] == '\0')
        return rm_strdup(path);
    size_t dl = strlen(p->dir), pl = strlen(path);
    char *s = rm_malloc(dl + 1 + pl + 1), *d = s;
    memcpy(d, p->dir, dl);
    d += dl;
    if (d[-1] != '/') /* the root directory already ends in one */
        *d++ = '/';
    memcpy(d, path, pl + 1);
    return s;
}

/* Reads a file path setting, resolves it against the config's directory and checks it can be read. */
static int
get_file(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, char **out)
{
    const char *s = NULL, *reason;
    char buf[256];
    if (get_string(p, node, pfx, key, &s) != 0)
        return -1;
    if (s[0] == '\0')
        return fail(p, node, "%s%s must be a file path, got an empty string", pfx, key);
    *out = resolve_path(p, s);
    if ((reason = rm_config__check_readable(*out, buf, sizeof(buf))) != NULL)
        return fail(p, node, "%s%s '%s': %s", pfx, key, *out, reason);
    return 0;
}

static int
get_bind_addr(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, rm_config_addr_t *addr)
{
    const char *s, *reason;
    if (get_string(p, node, pfx, key, &s) != 0)
        return -1;
    if ((reason = rm_config__parse_bind_addr(s, addr)) != NULL)
        return fail(p, node, "%s%s '%s': %s", pfx, key, s, reason);
    addr->line = rm_yaml_line(node);
    return 0;
}

static int
parse_dns(parser_t *p, yaml_node_t *node)
{
    static const char *const keys[] = {"servers", NULL};
    yaml_node_t *v[1], **items = NULL;
    size_t n = 0;
    int ret = -1;

    if (fields(p, node, "", "dns", keys, v) != 0)
        return -1;
    if (v[0] == NULL)
        return 0;
    if (get_list(p, v[0], "", "dns.servers", 1, &items, &n) != 0)
        return -1;
    p->config->dns_servers = rm_calloc(n, sizeof(char *));
    for (size_t i = 0; i != n; ++i) {
        const char *s, *reason;
        if (get_string(p, items[i], "", "dns.servers[]", &s) != 0)
            goto Exit;
        if ((p->config->dns_servers[i] = rm_config__normalize_dns_server(s, &reason)) == NULL) {
            fail(p, items[i], "dns.servers '%s': %s", s, reason);
            goto Exit;
        }
        p->config->num_dns_servers = i + 1;
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

/* As parse_ranges, also giving the value nodes (NULL when absent) in `v` (at least 16), for cross checks. */
static int
parse_ranges_nodes(parser_t *p, yaml_node_t *node, const char *pfx, const char *what, const rm_config_range_t *ranges, size_t n,
                   void *base, yaml_node_t **v)
{
    const char *keys[32];
    char key[96];
    if (n >= sizeof(keys) / sizeof(keys[0]))
        abort();
    for (size_t i = 0; i != n; ++i)
        keys[i] = ranges[i].name;
    keys[n] = NULL;
    if (fields(p, node, pfx, what, keys, v) != 0)
        return -1;
    for (size_t i = 0; i != n; ++i) {
        snprintf(key, sizeof(key), "%s.%s", what, ranges[i].name);
        if (v[i] != NULL &&
            get_u32(p, v[i], pfx, key, ranges[i].min, ranges[i].max, (uint32_t *)((char *)base + ranges[i].offset)) != 0)
            return -1;
    }
    return 0;
}

static int
parse_ranges(parser_t *p, yaml_node_t *node, const char *pfx, const char *what, const rm_config_range_t *ranges, size_t n,
             void *base)
{
    yaml_node_t *v[32];
    return parse_ranges_nodes(p, node, pfx, what, ranges, n, base, v);
}

static int
parse_match(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_route_t *r)
{
    static const char *const keys[] = {"authority", "path", "headers", "method", NULL};
    enum { AUTHORITY, PATH, HEADERS, METHOD };
    yaml_node_t *v[4], **items = NULL;
    size_t n;
    int ret = -1;

    if (fields(p, node, pfx, "match", keys, v) != 0)
        return -1;

    if (v[AUTHORITY] != NULL) {
        if (get_list(p, v[AUTHORITY], pfx, "match.authority", 1, &items, &n) != 0)
            return -1;
        r->authorities = rm_calloc(n, sizeof(char *));
        for (size_t i = 0; i != n; ++i) {
            if (dup_string(p, items[i], pfx, "match.authority", &r->authorities[i]) != 0)
                goto Exit;
            r->num_authorities = i + 1;
        }
        free(items);
        items = NULL;
    }

    if (v[PATH] != NULL) {
        static const char *const pkeys[] = {"prefix", "exact", "regex", NULL};
        static const rm_path_match_t kinds[] = {RM_PATH_MATCH_PREFIX, RM_PATH_MATCH_EXACT, RM_PATH_MATCH_REGEX};
        yaml_node_t *pv[3], *pn = NULL;
        size_t which = 0;
        char kind[32], msg[300];
        if (fields(p, v[PATH], pfx, "match.path", pkeys, pv) != 0)
            goto Exit;
        for (size_t i = 0; i != 3; ++i) {
            if (pv[i] == NULL)
                continue;
            if (pn != NULL) {
                fail(p, v[PATH], "%smatch.path: give only one of 'prefix', 'exact' or 'regex'", pfx);
                goto Exit;
            }
            pn = pv[i];
            which = i;
        }
        if (pn == NULL) {
            fail(p, v[PATH], "%smatch.path needs 'prefix', 'exact' or 'regex'", pfx);
            goto Exit;
        }
        snprintf(kind, sizeof(kind), "match.path.%s", pkeys[which]);
        if (dup_string(p, pn, pfx, kind, &r->path) != 0)
            goto Exit;
        r->path_match = kinds[which];
        if (r->path_match == RM_PATH_MATCH_REGEX) {
            if (r->path[0] == '\0') {
                fail(p, pn, "%s%s must be a non-empty regular expression", pfx, kind);
                goto Exit;
            }
            if (rm_regex_check(r->path, msg, sizeof(msg)) != 0) {
                fail(p, pn, "%s%s '%.*s%s': %s", pfx, kind, RM_REGEX_QUOTE(r->path), msg);
                goto Exit;
            }
        } else if (r->path[0] != '/') {
            fail(p, pn, "%s%s '%s' must start with '/'", pfx, kind, r->path);
            goto Exit;
        }
    }

    if (v[HEADERS] != NULL) {
        if (get_list(p, v[HEADERS], pfx, "match.headers", 0, &items, &n) != 0)
            goto Exit;
        r->headers = rm_calloc(n, sizeof(*r->headers));
        for (size_t i = 0; i != n; ++i) {
            static const char *const hkeys[] = {"name", "value", "regex", NULL};
            yaml_node_t *hv[3];
            rm_config_header_match_t *h = r->headers + i;
            char msg[300];
            r->num_headers = i + 1;
            if (fields(p, items[i], pfx, "match.headers[]", hkeys, hv) != 0)
                goto Exit;
            if (require(p, items[i], pfx, hv[0], "match.headers[].name") != 0 ||
                dup_string(p, hv[0], pfx, "match.headers[].name", &h->name) != 0)
                goto Exit;
            if (hv[1] != NULL && dup_string(p, hv[1], pfx, "match.headers[].value", &h->value) != 0)
                goto Exit;
            if (hv[2] != NULL && get_bool(p, hv[2], pfx, "match.headers[].regex", &h->is_regex) != 0)
                goto Exit;
            if (h->is_regex) {
                if (h->value == NULL) {
                    fail(p, hv[2], "%smatch.headers '%s': regex: true needs a value (the pattern)", pfx, h->name);
                    goto Exit;
                }
                if (rm_regex_check(h->value, msg, sizeof(msg)) != 0) {
                    fail(p, hv[1], "%smatch.headers '%s': regex '%.*s%s': %s", pfx, h->name, RM_REGEX_QUOTE(h->value), msg);
                    goto Exit;
                }
            }
        }
    }
    if (v[METHOD] != NULL && dup_string(p, v[METHOD], pfx, "match.method", &r->method) != 0)
        goto Exit;
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_retry(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_retry_t *rt)
{
    static const char *const keys[] = {"attempts",      "backoff_ms",    "max_backoff_ms",   "on",
                                       "http_statuses", "grpc_statuses", "max_replay_bytes", NULL};
    enum { ATTEMPTS, BACKOFF, MAX_BACKOFF, ON, HTTP_STATUSES, GRPC_STATUSES, MAX_REPLAY };
    yaml_node_t *v[7], **items = NULL;
    size_t n;
    int ret = -1;

    if (fields(p, node, pfx, "retry", keys, v) != 0)
        return -1;
    rm_config_retry_set_defaults(rt);
    rt->attempts = 1;
    /* the failures where the request surely never reached the application are always safe to retry */
    rt->conditions = RM_RETRY_ON_CONNECT_FAILURE | RM_RETRY_ON_REFUSED_STREAM;
    if (v[ATTEMPTS] != NULL && get_u32(p, v[ATTEMPTS], pfx, "retry.attempts", 0, RM_CONFIG_MAX_RETRY_ATTEMPTS, &rt->attempts) != 0)
        return -1;
    if (v[BACKOFF] != NULL &&
        get_u32(p, v[BACKOFF], pfx, "retry.backoff_ms", 1, RM_CONFIG_MAX_BACKOFF_MS, &rt->backoff_base_ms) != 0)
        return -1;
    rt->backoff_max_ms = rt->backoff_base_ms * 10;
    if (v[MAX_BACKOFF] != NULL) {
        if (get_u32(p, v[MAX_BACKOFF], pfx, "retry.max_backoff_ms", 1, RM_CONFIG_MAX_MAX_BACKOFF_MS, &rt->backoff_max_ms) != 0)
            return -1;
        if (rt->backoff_max_ms < rt->backoff_base_ms)
            return fail(p, v[MAX_BACKOFF], "%sretry.max_backoff_ms (%u) must not be below retry.backoff_ms (%u)", pfx,
                        rt->backoff_max_ms, rt->backoff_base_ms);
    }
    if (v[MAX_REPLAY] != NULL &&
        get_u32(p, v[MAX_REPLAY], pfx, "retry.max_replay_bytes", 0, RM_CONFIG_MAX_REPLAY_BYTES, &rt->max_replay_bytes) != 0)
        return -1;

    if (v[ON] != NULL) {
        if (get_list(p, v[ON], pfx, "retry.on", 1, &items, &n) != 0)
            return -1;
        rt->conditions = 0;
        for (size_t i = 0; i != n; ++i) {
            const char *s, *best = NULL;
            const rm_config_flag_name_t *f;
            size_t best_d = 3;
            if (get_string(p, items[i], pfx, "retry.on[]", &s) != 0)
                goto Exit;
            for (f = rm_config__retry_conditions; f->name != NULL; ++f) {
                size_t d = rm_edit_distance(s, f->name, 2);
                if (strcmp(s, f->name) == 0)
                    break;
                if (d < best_d) {
                    best_d = d;
                    best = f->name;
                }
            }
            if (f->name == NULL) {
                fail(p, items[i], "%sretry.on '%s' is not a retry condition%s%s%s: use connect-failure, refused-stream or reset",
                     pfx, s, best != NULL ? " (did you mean '" : "", best != NULL ? best : "", best != NULL ? "'?)" : "");
                goto Exit;
            }
            rt->conditions |= f->bit;
        }
        free(items);
        items = NULL;
    }

    if (v[HTTP_STATUSES] != NULL) {
        if (get_list(p, v[HTTP_STATUSES], pfx, "retry.http_statuses", 0, &items, &n) != 0)
            return -1;
        rt->http_statuses = rm_calloc(n != 0 ? n : 1, sizeof(*rt->http_statuses));
        for (size_t i = 0; i != n; ++i) {
            uint32_t status;
            if (get_u32(p, items[i], pfx, "retry.http_statuses[]", 100, 599, &status) != 0)
                goto Exit;
            rt->http_statuses[rt->num_http_statuses++] = (uint16_t)status; /* sorted and deduplicated by the validator */
        }
        free(items);
        items = NULL;
    }

    if (v[GRPC_STATUSES] != NULL) {
        if (get_list(p, v[GRPC_STATUSES], pfx, "retry.grpc_statuses", 1, &items, &n) != 0)
            return -1;
        for (size_t i = 0; i != n; ++i) {
            int code;
            if (get_grpc_status(p, items[i], pfx, "retry.grpc_statuses[]", 0, &code) != 0)
                goto Exit;
            rt->grpc_status_mask |= 1u << code;
        }
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

/* A list of {name, value} for a header modifier's `set` or `add`. */
static int
parse_header_list(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, int request, rm_config_header_op_t op,
                  rm_config_header_t **out, size_t *num)
{
    yaml_node_t **items = NULL;
    size_t n;
    char k[64];
    int ret = -1;

    if (get_list(p, node, pfx, key, 0, &items, &n) != 0)
        return -1;
    *out = rm_calloc(n != 0 ? n : 1, sizeof(**out));
    for (size_t i = 0; i != n; ++i) {
        static const char *const hkeys[] = {"name", "value", NULL};
        yaml_node_t *hv[2];
        rm_config_header_t *h = *out + i;
        const char *reason;
        *num = i + 1;
        snprintf(k, sizeof(k), "%s[]", key);
        if (fields(p, items[i], pfx, k, hkeys, hv) != 0)
            goto Exit;
        snprintf(k, sizeof(k), "%s[].name", key);
        if (require(p, items[i], pfx, hv[0], k) != 0 || dup_string(p, hv[0], pfx, k, &h->name) != 0)
            goto Exit;
        if ((reason = rm_config__check_mod_header(h->name, request, op)) != NULL) {
            fail(p, hv[0], "%s%s '%s' %s", pfx, key, h->name, reason);
            goto Exit;
        }
        snprintf(k, sizeof(k), "%s[].value", key);
        if (require(p, items[i], pfx, hv[1], k) != 0 || dup_string(p, hv[1], pfx, k, &h->value) != 0)
            goto Exit;
        for (const char *c = h->value; *c != '\0'; ++c) {
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) {
                fail(p, hv[1], "%s%s '%s': the value contains control characters", pfx, key, h->name);
                goto Exit;
            }
        }
        if (op == RM_CONFIG_HEADER_SET) {
            for (size_t j = 0; j != i; ++j) {
                if (strcasecmp((*out)[j].name, h->name) == 0) {
                    fail(p, hv[0], "%s%s '%s' is listed twice", pfx, key, h->name);
                    goto Exit;
                }
            }
        }
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_header_mod(parser_t *p, yaml_node_t *node, const char *pfx, const char *what, int request, rm_config_header_mod_t *m)
{
    static const char *const keys[] = {"set", "add", "remove", NULL};
    enum { SET, ADD, REMOVE };
    yaml_node_t *v[3], **items = NULL;
    size_t n;
    char key[64];
    int ret = -1;

    if (fields(p, node, pfx, what, keys, v) != 0)
        return -1;
    snprintf(key, sizeof(key), "%s.set", what);
    if (v[SET] != NULL && parse_header_list(p, v[SET], pfx, key, request, RM_CONFIG_HEADER_SET, &m->set, &m->num_set) != 0)
        return -1;
    snprintf(key, sizeof(key), "%s.add", what);
    if (v[ADD] != NULL && parse_header_list(p, v[ADD], pfx, key, request, RM_CONFIG_HEADER_ADD, &m->add, &m->num_add) != 0)
        return -1;
    if (v[REMOVE] != NULL) {
        snprintf(key, sizeof(key), "%s.remove", what);
        if (get_list(p, v[REMOVE], pfx, key, 1, &items, &n) != 0)
            return -1;
        m->remove = rm_calloc(n != 0 ? n : 1, sizeof(char *));
        for (size_t i = 0; i != n; ++i) {
            const char *reason;
            if (dup_string(p, items[i], pfx, key, &m->remove[i]) != 0)
                goto Exit;
            m->num_remove = i + 1;
            if ((reason = rm_config__check_mod_header(m->remove[i], request, RM_CONFIG_HEADER_REMOVE)) != NULL) {
                fail(p, items[i], "%s%s '%s' %s", pfx, key, m->remove[i], reason);
                goto Exit;
            }
            for (size_t j = 0; j != i; ++j) {
                if (strcasecmp(m->remove[j], m->remove[i]) == 0) {
                    fail(p, items[i], "%s%s '%s' is listed twice", pfx, key, m->remove[i]);
                    goto Exit;
                }
            }
            for (size_t j = 0; j != m->num_set; ++j) {
                if (strcasecmp(m->set[j].name, m->remove[i]) == 0) {
                    fail(p, items[i], "%s%s: '%s' is both set and removed", pfx, what, m->remove[i]);
                    goto Exit;
                }
            }
        }
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_mirrors(parser_t *p, yaml_node_t *node, const char *pfx, size_t li, size_t ri, rm_config_route_t *r)
{
    yaml_node_t **items = NULL;
    size_t n;
    int ret = -1;

    if (get_list(p, node, pfx, "mirrors", 0, &items, &n) != 0)
        return -1;
    r->mirrors = rm_calloc(n != 0 ? n : 1, sizeof(*r->mirrors));
    for (size_t i = 0; i != n; ++i) {
        static const char *const mkeys[] = {"cluster", "percent", NULL};
        yaml_node_t *mv[2];
        rm_config_mirror_t *m = r->mirrors + i;
        r->num_mirrors = i + 1;
        m->per_million = 1000000;
        if (fields(p, items[i], pfx, "mirrors[]", mkeys, mv) != 0 || require(p, items[i], pfx, mv[0], "mirrors[].cluster") != 0 ||
            dup_string(p, mv[0], pfx, "mirrors[].cluster", &m->cluster_name) != 0 ||
            (mv[1] != NULL && get_percent(p, mv[1], pfx, "mirrors[].percent", &m->per_million) != 0))
            goto Exit;
        p->refs = rm_realloc(p->refs, (p->num_refs + 1) * sizeof(*p->refs));
        p->refs[p->num_refs++] = (route_ref_t){li, ri, rm_yaml_line(mv[0]), i};
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_fault(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_route_t *r)
{
    static const char *const keys[] = {"delay_ms",          "delay_percent", "abort_http_status",
                                       "abort_grpc_status", "abort_percent", NULL};
    enum { DELAY, DELAY_PERCENT, ABORT_HTTP, ABORT_GRPC, ABORT_PERCENT };
    yaml_node_t *v[5];

    if (fields(p, node, pfx, "fault", keys, v) != 0)
        return -1;
    rm_config_fault_t *f = r->fault = rm_calloc(1, sizeof(*r->fault));
    f->abort_grpc_status = -1;
    if (v[DELAY_PERCENT] != NULL && v[DELAY] == NULL)
        return fail(p, v[DELAY_PERCENT], "%sfault.delay_percent needs delay_ms", pfx);
    if (v[ABORT_PERCENT] != NULL && v[ABORT_HTTP] == NULL && v[ABORT_GRPC] == NULL)
        return fail(p, v[ABORT_PERCENT], "%sfault.abort_percent needs abort_http_status or abort_grpc_status", pfx);
    if (v[DELAY] == NULL && v[ABORT_HTTP] == NULL && v[ABORT_GRPC] == NULL)
        return fail(p, node, "%sfault needs delay_ms, abort_http_status or abort_grpc_status", pfx);
    if (v[DELAY] != NULL) {
        if (get_u32(p, v[DELAY], pfx, "fault.delay_ms", 0, RM_CONFIG_MAX_ROUTE_MS, &f->delay_ms) != 0)
            return -1;
        f->delay_per_million = 1000000;
        if (v[DELAY_PERCENT] != NULL && get_percent(p, v[DELAY_PERCENT], pfx, "fault.delay_percent", &f->delay_per_million) != 0)
            return -1;
    }
    if (v[ABORT_HTTP] != NULL) {
        uint32_t status;
        if (get_u32(p, v[ABORT_HTTP], pfx, "fault.abort_http_status", 200, 599, &status) != 0)
            return -1;
        f->abort_http_status = (uint16_t)status;
    }
    if (v[ABORT_GRPC] != NULL && get_grpc_status(p, v[ABORT_GRPC], pfx, "fault.abort_grpc_status", 1, &f->abort_grpc_status) != 0)
        return -1;
    if (v[ABORT_HTTP] != NULL || v[ABORT_GRPC] != NULL) {
        f->abort_per_million = 1000000;
        if (v[ABORT_PERCENT] != NULL && get_percent(p, v[ABORT_PERCENT], pfx, "fault.abort_percent", &f->abort_per_million) != 0)
            return -1;
    }
    return 0;
}

/* `path: {type: full|prefix, value: /x}` of a redirect or a URL rewrite. */
static int
parse_rewrite_path(parser_t *p, yaml_node_t *node, const char *pfx, const char *what, const rm_config_route_t *r,
                   rm_path_rewrite_t *type, char **path)
{
    static const char *const keys[] = {"type", "value", NULL};
    yaml_node_t *v[2];
    char key[64];
    const char *s, *reason;

    snprintf(key, sizeof(key), "%s.path", what);
    if (fields(p, node, pfx, key, keys, v) != 0)
        return -1;
    snprintf(key, sizeof(key), "%s.path.type", what);
    if (require(p, node, pfx, v[0], key) != 0 || get_string(p, v[0], pfx, key, &s) != 0)
        return -1;
    if (strcmp(s, "full") == 0)
        *type = RM_PATH_REWRITE_FULL;
    else if (strcmp(s, "prefix") == 0)
        *type = RM_PATH_REWRITE_PREFIX;
    else
        return fail(p, v[0], "%s%s '%s' must be full or prefix", pfx, key, s);
    snprintf(key, sizeof(key), "%s.path.value", what);
    if (require(p, node, pfx, v[1], key) != 0 || dup_string(p, v[1], pfx, key, path) != 0)
        return -1;
    /* the value on its own first, then whether the type fits the route's path match */
    if ((reason = rm_config__check_rewrite_path(*type, *path, RM_PATH_MATCH_PREFIX)) != NULL)
        return fail(p, v[1], "%s%s.path: %s", pfx, what, reason);
    if ((reason = rm_config__check_rewrite_path(*type, *path, r->path_match)) != NULL)
        return fail(p, v[0], "%s%s.path: %s", pfx, what, reason);
    return 0;
}

static int
get_hostname(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, char **out)
{
    if (dup_string(p, node, pfx, key, out) != 0)
        return -1;
    if (!rm_config__valid_hostname(*out))
        return fail(p, node, "%s%s '%s' must be a DNS name (letters, digits, '-', '_' and dots)", pfx, key, *out);
    return 0;
}

static int
parse_redirect(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_route_t *r)
{
    static const char *const keys[] = {"scheme", "hostname", "port", "status_code", "path", NULL};
    enum { SCHEME, HOSTNAME, PORT, STATUS, PATH };
    yaml_node_t *v[5];
    uint32_t u;

    if (fields(p, node, pfx, "redirect", keys, v) != 0)
        return -1;
    rm_config_redirect_t *rd = r->redirect = rm_calloc(1, sizeof(*r->redirect));
    rd->status_code = 302;
    if (v[SCHEME] != NULL) {
        if (dup_string(p, v[SCHEME], pfx, "redirect.scheme", &rd->scheme) != 0)
            return -1;
        if (strcmp(rd->scheme, "http") != 0 && strcmp(rd->scheme, "https") != 0)
            return fail(p, v[SCHEME], "%sredirect.scheme must be http or https, got '%s'", pfx, rd->scheme);
    }
    if (v[HOSTNAME] != NULL && get_hostname(p, v[HOSTNAME], pfx, "redirect.hostname", &rd->hostname) != 0)
        return -1;
    if (v[PORT] != NULL) {
        if (get_u32(p, v[PORT], pfx, "redirect.port", 1, 65535, &u) != 0)
            return -1;
        rd->port = (int)u;
    }
    if (v[STATUS] != NULL) {
        if (get_u32(p, v[STATUS], pfx, "redirect.status_code", 0, UINT32_MAX, &u) != 0)
            return -1;
        if (u != 301 && u != 302 && u != 303 && u != 307 && u != 308)
            return fail(p, v[STATUS], "%sredirect.status_code must be 301, 302, 303, 307 or 308, got %u", pfx, u);
        rd->status_code = (uint16_t)u;
    }
    if (v[PATH] != NULL && parse_rewrite_path(p, v[PATH], pfx, "redirect", r, &rd->path_type, &rd->path) != 0)
        return -1;
    return 0;
}

static int
parse_url_rewrite(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_route_t *r)
{
    static const char *const keys[] = {"hostname", "path", NULL};
    yaml_node_t *v[2];

    if (fields(p, node, pfx, "url_rewrite", keys, v) != 0)
        return -1;
    rm_config_url_rewrite_t *rw = r->url_rewrite = rm_calloc(1, sizeof(*r->url_rewrite));
    if (v[0] == NULL && v[1] == NULL)
        return fail(p, node, "%surl_rewrite needs 'hostname' or 'path'", pfx);
    if (v[0] != NULL && get_hostname(p, v[0], pfx, "url_rewrite.hostname", &rw->hostname) != 0)
        return -1;
    if (v[1] != NULL && parse_rewrite_path(p, v[1], pfx, "url_rewrite", r, &rw->path_type, &rw->path) != 0)
        return -1;
    return 0;
}

/* `{requests_per_second, burst}` of a rate limit; an absent burst is the rate. */
static int
parse_rate(parser_t *p, yaml_node_t *node, const char *pfx, const char *what, uint32_t *rps, uint32_t *burst)
{
    static const char *const keys[] = {"requests_per_second", "burst", NULL};
    yaml_node_t *v[2];
    char key[96];

    if (fields(p, node, pfx, what, keys, v) != 0)
        return -1;
    snprintf(key, sizeof(key), "%s.requests_per_second", what);
    if (require(p, node, pfx, v[0], key) != 0 || get_u32(p, v[0], pfx, key, 1, RM_CONFIG_MAX_RATE, rps) != 0)
        return -1;
    *burst = *rps;
    snprintf(key, sizeof(key), "%s.burst", what);
    if (v[1] != NULL && get_u32(p, v[1], pfx, key, 0, RM_CONFIG_MAX_RATE, burst) != 0)
        return -1;
    return 0;
}

static int
parse_rate_overrides(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_rate_limit_t *rl)
{
    yaml_node_t **items = NULL, **clients = NULL;
    size_t n, nc;
    int ret = -1;

    if (get_list(p, node, pfx, "rate_limit.overrides", 0, &items, &n) != 0)
        return -1;
    rl->overrides = rm_calloc(n != 0 ? n : 1, sizeof(*rl->overrides));
    for (size_t i = 0; i != n; ++i) {
        static const char *const okeys[] = {"requests_per_second", "burst", "clients", NULL};
        yaml_node_t *ov[3];
        rm_config_rate_override_t *o = rl->overrides + i;
        rl->num_overrides = i + 1;
        if (fields(p, items[i], pfx, "rate_limit.overrides[]", okeys, ov) != 0 ||
            require(p, items[i], pfx, ov[0], "rate_limit.overrides[].requests_per_second") != 0 ||
            get_u32(p, ov[0], pfx, "rate_limit.overrides[].requests_per_second", 1, RM_CONFIG_MAX_RATE, &o->requests_per_second) !=
                0)
            goto Exit;
        o->burst = o->requests_per_second;
        if (ov[1] != NULL && get_u32(p, ov[1], pfx, "rate_limit.overrides[].burst", 0, RM_CONFIG_MAX_RATE, &o->burst) != 0)
            goto Exit;
        if (require(p, items[i], pfx, ov[2], "rate_limit.overrides[].clients") != 0 ||
            get_list(p, ov[2], pfx, "rate_limit.overrides[].clients", 1, &clients, &nc) != 0)
            goto Exit;
        if (nc < 1 || nc > RM_CONFIG_MAX_OVERRIDE_CLIENTS) {
            fail(p, ov[2], "%srate_limit.overrides[].clients must list 1-%d clients, got %zu", pfx, RM_CONFIG_MAX_OVERRIDE_CLIENTS,
                 nc);
            goto Exit;
        }
        o->clients = rm_calloc(nc, sizeof(char *));
        for (size_t j = 0; j != nc; ++j) {
            if (dup_string(p, clients[j], pfx, "rate_limit.overrides[].clients[]", &o->clients[j]) != 0)
                goto Exit;
            o->num_clients = j + 1;
            if (o->clients[j][0] == '\0') {
                fail(p, clients[j], "%srate_limit.overrides[].clients[] must not be empty", pfx);
                goto Exit;
            }
        }
        free(clients);
        clients = NULL;
    }
    ret = 0;
Exit:
    free(clients);
    free(items);
    return ret;
}

/* A route's or a cluster's `rate_limit`; names and cross-object rules are the validator's. */
static int
parse_rate_limit(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_rate_limit_t **out)
{
    static const char *const keys[] = {"name", "total", "per_client", "client_key", "overrides", "max_clients", NULL};
    enum { NAME, TOTAL, PER_CLIENT, CLIENT_KEY, OVERRIDES, MAX_CLIENTS };
    yaml_node_t *v[6];

    if (fields(p, node, pfx, "rate_limit", keys, v) != 0)
        return -1;
    rm_config_rate_limit_t *rl = *out = rm_calloc(1, sizeof(**out));
    rl->max_clients = RM_CONFIG_DEFAULT_RATE_CLIENTS;
    if (v[NAME] != NULL) {
        if (dup_string(p, v[NAME], pfx, "rate_limit.name", &rl->name) != 0)
            return -1;
        if (!rm_config__valid_rate_limit_name(rl->name))
            return fail(p, v[NAME], "%srate_limit.name '%s' may only contain letters, digits and . _ - / (1-%d)", pfx, rl->name,
                        RM_CONFIG_MAX_RATE_NAME);
    }
    if (v[TOTAL] == NULL && v[PER_CLIENT] == NULL)
        return fail(p, node, "%srate_limit needs 'total' or 'per_client'", pfx);
    if (v[TOTAL] != NULL && parse_rate(p, v[TOTAL], pfx, "rate_limit.total", &rl->total_rps, &rl->total_burst) != 0)
        return -1;
    if (v[PER_CLIENT] != NULL &&
        parse_rate(p, v[PER_CLIENT], pfx, "rate_limit.per_client", &rl->per_client_rps, &rl->per_client_burst) != 0)
        return -1;
    if (v[PER_CLIENT] == NULL) {
        /* they only shape the per-client buckets: without them they would silently do nothing */
        static const int per_client_only[] = {CLIENT_KEY, OVERRIDES, MAX_CLIENTS};
        for (size_t i = 0; i != sizeof(per_client_only) / sizeof(per_client_only[0]); ++i)
            if (v[per_client_only[i]] != NULL)
                return fail(p, v[per_client_only[i]], "%srate_limit.%s needs per_client", pfx, keys[per_client_only[i]]);
    }
    if (v[CLIENT_KEY] != NULL) {
        static const char *const ckeys[] = {"type", "header", NULL};
        yaml_node_t *cv[2];
        const char *t;
        size_t k;
        if (fields(p, v[CLIENT_KEY], pfx, "rate_limit.client_key", ckeys, cv) != 0 ||
            require(p, v[CLIENT_KEY], pfx, cv[0], "rate_limit.client_key.type") != 0 ||
            get_string(p, cv[0], pfx, "rate_limit.client_key.type", &t) != 0)
            return -1;
        for (k = 0; k != RM_CONFIG_NUM_CLIENT_KEYS; ++k)
            if (strcmp(t, rm_config__client_key_names[k]) == 0)
                break;
        if (k == RM_CONFIG_NUM_CLIENT_KEYS)
            return fail(p, cv[0], "%srate_limit.client_key.type '%s' must be identity, source_address or header", pfx, t);
        rl->client_key = (rm_client_key_t)k;
        if (rl->client_key == RM_CLIENT_KEY_HEADER) {
            if (cv[1] == NULL)
                return fail(p, v[CLIENT_KEY], "%srate_limit.client_key: type header needs 'header'", pfx);
            if (dup_string(p, cv[1], pfx, "rate_limit.client_key.header", &rl->client_header) != 0)
                return -1;
            if (!rm_config__valid_token(rl->client_header))
                return fail(p, cv[1], "%srate_limit.client_key.header '%s' is not a valid header name", pfx, rl->client_header);
        } else if (cv[1] != NULL) {
            return fail(p, cv[1], "%srate_limit.client_key.header is only used with type header", pfx);
        }
    }
    if (v[MAX_CLIENTS] != NULL &&
        get_u32(p, v[MAX_CLIENTS], pfx, "rate_limit.max_clients", 1, RM_CONFIG_MAX_RATE_CLIENTS, &rl->max_clients) != 0)
        return -1;
    if (v[OVERRIDES] != NULL && parse_rate_overrides(p, v[OVERRIDES], pfx, rl) != 0)
        return -1;
    return 0;
}

/* A list of strings of an authorization rule, each checked as `type`. */
static int
parse_authz_values(parser_t *p, yaml_node_t *node, const char *pfx, const char *key, rm_config_authz_value_t type, char ***out,
                   size_t *n_out)
{
    yaml_node_t **items = NULL;
    size_t n;
    int ret = -1;
    if (get_list(p, node, pfx, key, 0, &items, &n) != 0)
        return -1;
    if (n == 0 || n > RM_CONFIG_MAX_AUTHZ_VALUES) {
        fail(p, node, "%s%s must list 1-%d values, got %zu", pfx, key, RM_CONFIG_MAX_AUTHZ_VALUES, n);
        goto Exit;
    }
    *out = rm_calloc(n, sizeof(**out));
    for (size_t i = 0; i != n; ++i) {
        if (dup_string(p, items[i], pfx, key, &(*out)[i]) != 0)
            goto Exit;
        *n_out = i + 1;
        const char *why = rm_config__authz_value_error(type, (*out)[i]);
        if (why != NULL) {
            fail(p, items[i], "%s%s: '%s' %s", pfx, key, (*out)[i], why);
            goto Exit;
        }
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_authz_rule(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_authz_rule_t *r)
{
    static const char *const keys[] = {"from", "to", NULL};
    static const char *const fkeys[] = {"identities", "namespaces", NULL};
    static const char *const tkeys[] = {"methods", "paths", "grpc_methods", NULL};
    yaml_node_t *v[2], **items = NULL;
    size_t n;
    if (fields(p, node, pfx, "authorization[].rules[]", keys, v) != 0)
        return -1;
    if (v[0] != NULL) {
        if (get_list(p, v[0], pfx, "authorization[].rules[].from", 0, &items, &n) != 0)
            return -1;
        if (n == 0 || n > RM_CONFIG_MAX_AUTHZ_ENTRIES) {
            free(items);
            return fail(p, v[0], "%sauthorization[].rules[].from must list 1-%d entries, got %zu (omit it to match any caller)",
                        pfx, RM_CONFIG_MAX_AUTHZ_ENTRIES, n);
        }
        r->from = rm_calloc(n, sizeof(*r->from));
        for (size_t i = 0; i != n; ++i) {
            yaml_node_t *fv[2];
            rm_config_authz_from_t *f = &r->from[i];
            r->num_from = i + 1;
            if (fields(p, items[i], pfx, "authorization[].rules[].from[]", fkeys, fv) != 0)
                goto Fail;
            if ((fv[0] == NULL) == (fv[1] == NULL)) {
                fail(p, items[i], "%sauthorization[].rules[].from[] needs exactly one of identities and namespaces", pfx);
                goto Fail;
            }
            if (fv[0] != NULL && parse_authz_values(p, fv[0], pfx, "authorization[].rules[].from[].identities",
                                                    RM_CONFIG_AUTHZ_IDENTITY, &f->identities, &f->num_identities) != 0)
                goto Fail;
            if (fv[1] != NULL && parse_authz_values(p, fv[1], pfx, "authorization[].rules[].from[].namespaces",
                                                    RM_CONFIG_AUTHZ_NAMESPACE, &f->namespaces, &f->num_namespaces) != 0)
                goto Fail;
        }
        free(items);
        items = NULL;
    }
    if (v[1] != NULL) {
        if (get_list(p, v[1], pfx, "authorization[].rules[].to", 0, &items, &n) != 0)
            return -1;
        if (n == 0 || n > RM_CONFIG_MAX_AUTHZ_ENTRIES) {
            free(items);
            return fail(p, v[1], "%sauthorization[].rules[].to must list 1-%d entries, got %zu (omit it to match any request)", pfx,
                        RM_CONFIG_MAX_AUTHZ_ENTRIES, n);
        }
        r->to = rm_calloc(n, sizeof(*r->to));
        for (size_t i = 0; i != n; ++i) {
            yaml_node_t *tv[3];
            rm_config_authz_to_t *t = &r->to[i];
            r->num_to = i + 1;
            if (fields(p, items[i], pfx, "authorization[].rules[].to[]", tkeys, tv) != 0)
                goto Fail;
            if (tv[0] == NULL && tv[1] == NULL && tv[2] == NULL) {
                fail(p, items[i], "%sauthorization[].rules[].to[] needs methods, paths or grpc_methods", pfx);
                goto Fail;
            }
            if (tv[1] != NULL && tv[2] != NULL) {
                fail(p, tv[2],
                     "%sauthorization[].rules[].to[]: paths and grpc_methods cannot be combined (a gRPC method is the path): "
                     "use two entries",
                     pfx);
                goto Fail;
            }
            if ((tv[0] != NULL && parse_authz_values(p, tv[0], pfx, "authorization[].rules[].to[].methods", RM_CONFIG_AUTHZ_METHOD,
                                                     &t->methods, &t->num_methods) != 0) ||
                (tv[1] != NULL && parse_authz_values(p, tv[1], pfx, "authorization[].rules[].to[].paths", RM_CONFIG_AUTHZ_PATH,
                                                     &t->paths, &t->num_paths) != 0) ||
                (tv[2] != NULL && parse_authz_values(p, tv[2], pfx, "authorization[].rules[].to[].grpc_methods",
                                                     RM_CONFIG_AUTHZ_GRPC_METHOD, &t->grpc_methods, &t->num_grpc_methods) != 0))
                goto Fail;
        }
        free(items);
    }
    return 0;
Fail:
    free(items);
    return -1;
}

/* A route's or a cluster's `authorization`: a list of policies (their semantics: filters/authz.h). */
static int
parse_authz(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_authz_t **out)
{
    static const char *const keys[] = {"name", "action", "rules", NULL};
    yaml_node_t **items = NULL, **rules = NULL;
    size_t n, nr;
    int ret = -1;
    if (get_list(p, node, pfx, "authorization", 0, &items, &n) != 0)
        return -1;
    if (n == 0 || n > RM_CONFIG_MAX_AUTHZ_POLICIES) {
        fail(p, node, "%sauthorization must list 1-%d policies, got %zu", pfx, RM_CONFIG_MAX_AUTHZ_POLICIES, n);
        goto Exit;
    }
    rm_config_authz_t *a = *out = rm_calloc(1, sizeof(**out));
    a->policies = rm_calloc(n, sizeof(*a->policies));
    for (size_t i = 0; i != n; ++i) {
        yaml_node_t *v[3];
        const char *action;
        rm_config_authz_policy_t *pol = &a->policies[i];
        a->num_policies = i + 1;
        if (fields(p, items[i], pfx, "authorization[]", keys, v) != 0 ||
            require(p, items[i], pfx, v[0], "authorization[].name") != 0 ||
            dup_string(p, v[0], pfx, "authorization[].name", &pol->name) != 0)
            goto Exit;
        if (!rm_config__valid_rate_limit_name(pol->name)) {
            fail(p, v[0], "%sauthorization[].name '%s' may only contain letters, digits and . _ - / (1-%d)", pfx, pol->name,
                 RM_CONFIG_MAX_RATE_NAME);
            goto Exit;
        }
        for (size_t j = 0; j != i; ++j) {
            if (strcmp(a->policies[j].name, pol->name) == 0) {
                fail(p, v[0], "%sauthorization: policy '%s' is listed twice", pfx, pol->name);
                goto Exit;
            }
        }
        if (require(p, items[i], pfx, v[1], "authorization[].action") != 0 ||
            get_string(p, v[1], pfx, "authorization[].action", &action) != 0)
            goto Exit;
        size_t k;
        for (k = 0; k != 3; ++k)
            if (strcmp(action, rm_config__authz_action_names[k]) == 0)
                break;
        if (k == 3) {
            fail(p, v[1], "%sauthorization[].action '%s' must be allow, deny or audit", pfx, action);
            goto Exit;
        }
        pol->action = (rm_authz_action_t)k;
        if (v[2] != NULL) {
            if (get_list(p, v[2], pfx, "authorization[].rules", 0, &rules, &nr) != 0)
                goto Exit;
            if (nr > RM_CONFIG_MAX_AUTHZ_RULES) {
                fail(p, v[2], "%sauthorization[].rules: at most %d rules, got %zu", pfx, RM_CONFIG_MAX_AUTHZ_RULES, nr);
                goto Exit;
            }
            pol->rules = rm_calloc(nr + 1, sizeof(*pol->rules));
            for (size_t j = 0; j != nr; ++j) {
                pol->num_rules = j + 1;
                if (parse_authz_rule(p, rules[j], pfx, &pol->rules[j]) != 0)
                    goto Exit;
            }
            free(rules);
            rules = NULL;
        }
    }
    ret = 0;
Exit:
    free(rules);
    free(items);
    return ret;
}

static int
parse_session_persistence(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_route_t *r)
{
    static const char *const keys[] = {"type", "name", NULL};
    yaml_node_t *v[2];
    const char *t;

    if (fields(p, node, pfx, "session_persistence", keys, v) != 0 || require(p, node, pfx, v[0], "session_persistence.type") != 0 ||
        get_string(p, v[0], pfx, "session_persistence.type", &t) != 0)
        return -1;
    if (strcmp(t, "header") == 0)
        r->session_persistence = RM_SESSION_HEADER;
    else if (strcmp(t, "cookie") == 0)
        r->session_persistence = RM_SESSION_COOKIE;
    else
        return fail(p, v[0], "%ssession_persistence.type '%s' must be header or cookie", pfx, t);
    if (require(p, node, pfx, v[1], "session_persistence.name") != 0 ||
        dup_string(p, v[1], pfx, "session_persistence.name", &r->session_name) != 0)
        return -1;
    if (!rm_config__valid_token(r->session_name))
        return fail(p, v[1], "%ssession_persistence.name '%s' is not a valid %s", pfx, r->session_name,
                    r->session_persistence == RM_SESSION_HEADER ? "header name" : "cookie name (an RFC 6265 token)");
    return 0;
}

static int
parse_route(parser_t *p, yaml_node_t *node, size_t li, size_t ri)
{
    static const char *const keys[] = {"name",
                                       "match",
                                       "cluster",
                                       "backends",
                                       "timeout_ms",
                                       "per_try_timeout_ms",
                                       "retry",
                                       "request_headers",
                                       "response_headers",
                                       "mirrors",
                                       "fault",
                                       "redirect",
                                       "url_rewrite",
                                       "session_persistence",
                                       "rate_limit",
                                       "authorization",
                                       NULL};
    enum {
        NAME,
        MATCH,
        CLUSTER,
        BACKENDS,
        TIMEOUT,
        PER_TRY_TIMEOUT,
        RETRY,
        REQUEST_HEADERS,
        RESPONSE_HEADERS,
        MIRRORS,
        FAULT,
        REDIRECT,
        URL_REWRITE,
        SESSION_PERSISTENCE,
        RATE_LIMIT,
        AUTHORIZATION,
        NUM_KEYS
    };
    rm_config_listener_t *l = p->config->listeners + li;
    rm_config_route_t *r = l->routes + ri;
    yaml_node_t *v[NUM_KEYS];
    char pfx[320];

    const char *name = peek_name(p, node);
    if (name != NULL)
        snprintf(pfx, sizeof(pfx), "listener '%s': route '%s': ", l->name, name);
    else
        snprintf(pfx, sizeof(pfx), "listener '%s': route #%zu: ", l->name, ri + 1);
    if (fields(p, node, pfx, "route", keys, v) != 0)
        return -1;
    r->line = rm_yaml_line(node);
    if (v[NAME] != NULL) {
        if (dup_string(p, v[NAME], pfx, "name", &r->name) != 0)
            return -1;
    }
    /* before redirect and url_rewrite, whose prefix rewrites depend on the path match */
    if (v[MATCH] != NULL && parse_match(p, v[MATCH], pfx, r) != 0)
        return -1;
    if (v[TIMEOUT] != NULL && get_u32(p, v[TIMEOUT], pfx, "timeout_ms", 0, RM_CONFIG_MAX_ROUTE_MS, &r->timeout_ms) != 0)
        return -1;
    if (v[PER_TRY_TIMEOUT] != NULL) {
        if (get_u32(p, v[PER_TRY_TIMEOUT], pfx, "per_try_timeout_ms", 0, RM_CONFIG_MAX_ROUTE_MS, &r->per_try_timeout_ms) != 0)
            return -1;
        if (r->timeout_ms != 0 && r->per_try_timeout_ms > r->timeout_ms)
            return fail(p, v[PER_TRY_TIMEOUT], "%sper_try_timeout_ms (%u) must not exceed timeout_ms (%u)", pfx,
                        r->per_try_timeout_ms, r->timeout_ms);
    }
    if (v[RETRY] != NULL && parse_retry(p, v[RETRY], pfx, rm_config_route_retry(p->config, r)) != 0)
        return -1;
    if (v[REQUEST_HEADERS] != NULL &&
        parse_header_mod(p, v[REQUEST_HEADERS], pfx, "request_headers", 1, rm_config_route_header_mod(p->config, r, 0)) != 0)
        return -1;
    if (v[RESPONSE_HEADERS] != NULL &&
        parse_header_mod(p, v[RESPONSE_HEADERS], pfx, "response_headers", 0, rm_config_route_header_mod(p->config, r, 1)) != 0)
        return -1;
    if (v[MIRRORS] != NULL && parse_mirrors(p, v[MIRRORS], pfx, li, ri, r) != 0)
        return -1;
    if (v[FAULT] != NULL && parse_fault(p, v[FAULT], pfx, r) != 0)
        return -1;
    if (v[REDIRECT] != NULL) {
        /* a redirect never reaches an upstream: settings that only act there would silently do nothing */
        static const int upstream_only[] = {URL_REWRITE, MIRRORS, RETRY, PER_TRY_TIMEOUT, SESSION_PERSISTENCE};
        for (size_t i = 0; i != sizeof(upstream_only) / sizeof(upstream_only[0]); ++i)
            if (v[upstream_only[i]] != NULL)
                return fail(p, v[upstream_only[i]], "%s'%s' cannot be combined with 'redirect', which answers the request itself",
                            pfx, keys[upstream_only[i]]);
        if (parse_redirect(p, v[REDIRECT], pfx, r) != 0)
            return -1;
    }
    if (v[URL_REWRITE] != NULL && parse_url_rewrite(p, v[URL_REWRITE], pfx, r) != 0)
        return -1;
    if (v[SESSION_PERSISTENCE] != NULL && parse_session_persistence(p, v[SESSION_PERSISTENCE], pfx, r) != 0)
        return -1;
    if (v[RATE_LIMIT] != NULL && parse_rate_limit(p, v[RATE_LIMIT], pfx, &r->rate_limit) != 0)
        return -1;
    if (v[AUTHORIZATION] != NULL && parse_authz(p, v[AUTHORIZATION], pfx, &r->authz) != 0)
        return -1;

    if (v[CLUSTER] != NULL && v[BACKENDS] != NULL) {
        fail(p, v[BACKENDS], "%sgive either 'cluster' or 'backends', not both", pfx);
        return -1;
    }
    if (v[BACKENDS] != NULL) {
        yaml_node_t **items = NULL;
        size_t n;
        if (get_list(p, v[BACKENDS], pfx, "backends", 0, &items, &n) != 0)
            return -1;
        if (n == 0) {
            free(items);
            fail(p, v[BACKENDS], "%sbackends must list at least one {cluster, weight}", pfx);
            return -1;
        }
        r->backends = rm_calloc(n, sizeof(*r->backends));
        for (size_t i = 0; i != n; ++i) {
            static const char *const bkeys[] = {"cluster", "weight", NULL};
            yaml_node_t *bv[2];
            rm_config_backend_t *b = r->backends + i;
            r->num_backends = i + 1;
            b->weight = 1;
            if (fields(p, items[i], pfx, "backends[]", bkeys, bv) != 0 ||
                require(p, items[i], pfx, bv[0], "backends[].cluster") != 0 ||
                dup_string(p, bv[0], pfx, "backends[].cluster", &b->cluster_name) != 0 ||
                (bv[1] != NULL && get_u32(p, bv[1], pfx, "backends[].weight", 0, 1000000, &b->weight) != 0)) {
                free(items);
                return -1;
            }
        }
        free(items);
        return 0; /* backend names are checked by the validator */
    }
    if (v[CLUSTER] == NULL) {
        if (v[REDIRECT] != NULL)
            return 0;
        return fail(p, node, "%s'cluster' is required (or 'backends'; a route with 'redirect' needs neither)", pfx);
    }
    if (dup_string(p, v[CLUSTER], pfx, "cluster", &r->cluster_name) != 0)
        return -1;
    p->refs = rm_realloc(p->refs, (p->num_refs + 1) * sizeof(*p->refs));
    p->refs[p->num_refs++] = (route_ref_t){li, ri, rm_yaml_line(v[CLUSTER]), NO_MIRROR};
    return 0;
}

static int
parse_listener(parser_t *p, yaml_node_t *node, size_t li)
{
    static const char *const keys[] = {"name",      "address",      "tls",  "routes",          "protocol", "cluster",
                                       "direction", "opaque_ports", "peer", "max_connections", NULL};
    enum { NAME, ADDRESS, TLS, ROUTES, PROTOCOL, CLUSTER, DIRECTION, OPAQUE_PORTS, PEER, MAX_CONNECTIONS };
    rm_config_listener_t *l = p->config->listeners + li;
    yaml_node_t *v[10], **items = NULL;
    size_t n;
    char pfx[200];
    int ret = -1;

    const char *name = peek_name(p, node);
    if (name != NULL)
        snprintf(pfx, sizeof(pfx), "listener '%s': ", name);
    else
        snprintf(pfx, sizeof(pfx), "listener 'listener%zu': ", li);
    if (fields(p, node, pfx, "listener", keys, v) != 0)
        return -1;
    l->line = rm_yaml_line(node);
    if (v[NAME] != NULL) {
        if (dup_string(p, v[NAME], pfx, "name", &l->name) != 0)
            return -1;
    } else {
        /* named as the validator would, so messages use the name stats will show */
        snprintf(pfx, sizeof(pfx), "listener%zu", li);
        l->name = rm_strdup(pfx);
    }
    snprintf(pfx, sizeof(pfx), "listener '%s': ", l->name);

    if (require(p, node, pfx, v[ADDRESS], "address") != 0 || get_bind_addr(p, v[ADDRESS], pfx, "address", &l->addr) != 0)
        return -1;

    if (v[TLS] != NULL) {
        static const char *const tkeys[] = {"certificate", "key", NULL};
        yaml_node_t *tv[2];
        if (fields(p, v[TLS], pfx, "tls", tkeys, tv) != 0)
            return -1;
        if (tv[0] == NULL || tv[1] == NULL)
            return fail(p, v[TLS], "%stls needs both 'certificate' and 'key' (%s is missing)", pfx,
                        tv[0] == NULL ? "certificate" : "key");
        if (get_file(p, tv[0], pfx, "tls.certificate", &l->tls_cert_file) != 0 ||
            get_file(p, tv[1], pfx, "tls.key", &l->tls_key_file) != 0)
            return -1;
    }

    /* transparent interception and opaque TCP (docs/transparent.md) */
    if (v[PROTOCOL] != NULL) {
        const char *proto;
        if (get_string(p, v[PROTOCOL], pfx, "protocol", &proto) != 0)
            return -1;
        if (strcmp(proto, "tcp") == 0)
            l->opaque = 1;
        else if (strcmp(proto, "h2") == 0)
            l->h2_only = 1;
        else if (strcmp(proto, "http") != 0)
            return fail(p, v[PROTOCOL], "%sprotocol '%s' must be http, h2 or tcp", pfx, proto);
    }
    if (v[MAX_CONNECTIONS] != NULL &&
        get_u32(p, v[MAX_CONNECTIONS], pfx, "max_connections", 0, UINT32_MAX, &l->max_connections) != 0)
        return -1;
    if (v[CLUSTER] != NULL && dup_string(p, v[CLUSTER], pfx, "cluster", &l->tcp_cluster_name) != 0)
        return -1;
    if (v[PEER] != NULL) {
        /* callers are agents: marker fields (x-remora-h1-case, x-remora-orig-proto) are honoured (docs/architecture.md) */
        const char *peer;
        if (get_string(p, v[PEER], pfx, "peer", &peer) != 0)
            return -1;
        if (strcmp(peer, "agent") == 0)
            l->peer_agent = 1;
        else if (strcmp(peer, "any") != 0)
            return fail(p, v[PEER], "%speer '%s' must be agent or any", pfx, peer);
    }
    if (v[DIRECTION] != NULL) {
        const char *dir;
        if (get_string(p, v[DIRECTION], pfx, "direction", &dir) != 0)
            return -1;
        if (strcmp(dir, "outbound") == 0)
            l->direction = RM_DIRECTION_OUTBOUND;
        else if (strcmp(dir, "inbound") == 0)
            l->direction = RM_DIRECTION_INBOUND;
        else
            return fail(p, v[DIRECTION], "%sdirection '%s' must be outbound or inbound", pfx, dir);
    }
    if (v[OPAQUE_PORTS] != NULL) {
        if (get_list(p, v[OPAQUE_PORTS], pfx, "opaque_ports", 0, &items, &n) != 0)
            return -1;
        l->opaque_ports = rm_calloc(n + 1, sizeof(uint16_t));
        for (size_t i = 0; i != n; ++i) {
            uint32_t port;
            if (get_u32(p, items[i], pfx, "opaque_ports[]", 1, 65535, &port) != 0)
                goto Exit;
            l->opaque_ports[i] = (uint16_t)port;
            l->num_opaque_ports = i + 1;
        }
        free(items);
        items = NULL;
    }
    if (v[ROUTES] == NULL && (l->opaque || l->direction != RM_DIRECTION_NONE))
        return 0; /* opaque TCP, or a transparent listener whose unknown destinations pass through */
    if (l->opaque && v[ROUTES] != NULL)
        return fail(p, v[ROUTES], "%sprotocol tcp relays bytes: it takes 'cluster', not 'routes'", pfx);
    if (require(p, node, pfx, v[ROUTES], "routes") != 0 || get_list(p, v[ROUTES], pfx, "routes", 0, &items, &n) != 0)
        return -1;
    if (n == 0) {
        fail(p, v[ROUTES], "%sneeds at least one route", pfx);
        goto Exit;
    }
    l->routes = rm_calloc(n, sizeof(*l->routes));
    for (size_t i = 0; i != n; ++i) {
        l->num_routes = i + 1;
        if (parse_route(p, items[i], li, i) != 0)
            goto Exit;
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_cluster_tls(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_cluster_t *cl)
{
    static const char *const keys[] = {"ca", "server_name", "certificate", "key", NULL};
    enum { CA, SERVER_NAME, CERT, KEY };
    yaml_node_t *v[4];

    cl->tls = 1;
    /* "tls: {}" is meaningful (TLS with the system trust store) and arrives as an empty mapping */
    if (fields(p, node, pfx, "tls", keys, v) != 0)
        return -1;
    if ((v[CERT] == NULL) != (v[KEY] == NULL))
        return fail(p, node, "%stls needs both 'certificate' and 'key' for a client certificate (%s is missing)", pfx,
                    v[CERT] == NULL ? "certificate" : "key");
    if (v[CA] != NULL && get_file(p, v[CA], pfx, "tls.ca", &cl->tls_ca_file) != 0)
        return -1;
    if (v[SERVER_NAME] != NULL && dup_string(p, v[SERVER_NAME], pfx, "tls.server_name", &cl->tls_server_name) != 0)
        return -1;
    if (v[CERT] != NULL && (get_file(p, v[CERT], pfx, "tls.certificate", &cl->tls_cert_file) != 0 ||
                            get_file(p, v[KEY], pfx, "tls.key", &cl->tls_key_file) != 0))
        return -1;
    return 0;
}

static int
parse_load_balancer(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_cluster_t *cl)
{
    static const char *const keys[] = {"type", "ring_min_size", NULL};
    yaml_node_t *v[2];
    const char *t, *best = NULL;
    size_t best_d = 3, k;

    if (fields(p, node, pfx, "load_balancer", keys, v) != 0 || require(p, node, pfx, v[0], "load_balancer.type") != 0 ||
        get_string(p, v[0], pfx, "load_balancer.type", &t) != 0)
        return -1;
    /* "default" is how the dump shows an unset balancer, not a type one writes */
    for (k = RM_LB_ROUND_ROBIN; k != RM_CONFIG_NUM_LB_TYPES; ++k) {
        size_t d = rm_edit_distance(t, rm_config__lb_type_names[k], 2);
        if (strcmp(t, rm_config__lb_type_names[k]) == 0)
            break;
        if (d < best_d) {
            best_d = d;
            best = rm_config__lb_type_names[k];
        }
    }
    if (k == RM_CONFIG_NUM_LB_TYPES)
        return fail(p, v[0], "%sload_balancer.type '%s' must be round_robin, least_request, peak_ewma or ring_hash%s%s%s", pfx, t,
                    best != NULL ? " (did you mean '" : "", best != NULL ? best : "", best != NULL ? "'?)" : "");
    cl->lb = (rm_lb_type_t)k;
    if (v[1] != NULL) {
        if (cl->lb != RM_LB_RING_HASH)
            return fail(p, v[1], "%sload_balancer.ring_min_size is only used with type ring_hash", pfx);
        if (get_u32(p, v[1], pfx, "load_balancer.ring_min_size", 1, RM_CONFIG_MAX_RING_SIZE, &cl->ring_min_size) != 0)
            return -1;
    }
    return 0;
}

static int
parse_outlier(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_cluster_t *cl)
{
    enum { CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY, INTERVAL, BASE_EJECTION, MAX_EJECTION, MAX_PERCENT };
    yaml_node_t *v[16];
    rm_config_outlier_t *o = &cl->outlier;

    /* present means on, even as `outlier_detection: {}` (every default) */
    o->enabled = 1;
    if (parse_ranges_nodes(p, node, pfx, "outlier_detection", rm_config__outlier_ranges, rm_config__num_outlier_ranges, o, v) != 0)
        return -1;
    if (o->max_ejection_ms < o->base_ejection_ms)
        return fail(p, v[MAX_EJECTION] != NULL ? v[MAX_EJECTION] : v[BASE_EJECTION],
                    "%soutlier_detection.max_ejection_ms (%u) must not be below base_ejection_ms (%u)", pfx, o->max_ejection_ms,
                    o->base_ejection_ms);
    if (o->consecutive_5xx == 0 && o->consecutive_gateway_errors == 0)
        return fail(p, v[CONSECUTIVE_5XX] != NULL ? v[CONSECUTIVE_5XX] : v[CONSECUTIVE_GATEWAY],
                    "%soutlier_detection needs consecutive_5xx or consecutive_gateway_errors above 0", pfx);
    return 0;
}

/* health_check: {http: {path} | grpc: {service}, interval_ms, timeout_ms, healthy_threshold, unhealthy_threshold} */
static int
parse_health_check(parser_t *p, yaml_node_t *node, const char *pfx, rm_config_cluster_t *cl)
{
    static const char *const keys[] = {"http", "grpc", "interval_ms", "timeout_ms", "healthy_threshold", "unhealthy_threshold",
                                       NULL};
    enum { HTTP, GRPC, NUMS };
    yaml_node_t *v[6], *sv[1];
    rm_config_health_check_t *h = &cl->health_check;
    char key[64];

    if (fields(p, node, pfx, "health_check", keys, v) != 0)
        return -1;
    if ((v[HTTP] != NULL) == (v[GRPC] != NULL))
        return fail(p, v[HTTP] != NULL ? key_of(p, node, "grpc") : node,
                    "%shealth_check needs exactly one of http: {path: ...} and grpc: {service: ...}", pfx);
    h->enabled = 1;
    if (v[HTTP] != NULL) {
        static const char *const hkeys[] = {"path", NULL};
        if (fields(p, v[HTTP], pfx, "health_check.http", hkeys, sv) != 0 ||
            require(p, v[HTTP], pfx, sv[0], "health_check.http.path") != 0 ||
            dup_string(p, sv[0], pfx, "health_check.http.path", &h->http_path) != 0)
            return -1;
        if (h->http_path[0] != '/')
            return fail(p, sv[0], "%shealth_check.http.path '%s' must start with '/'", pfx, h->http_path);
        for (const char *q = h->http_path; *q != '\0'; ++q)
            if ((unsigned char)*q <= ' ' || *q == 0x7f)
                return fail(p, sv[0], "%shealth_check.http.path must not contain spaces or control characters", pfx);
    } else {
        static const char *const gkeys[] = {"service", NULL};
        h->grpc = 1;
        /* `grpc: {}` checks the whole server (service "") */
        if (v[GRPC]->type == YAML_MAPPING_NODE && v[GRPC]->data.mapping.pairs.start == v[GRPC]->data.mapping.pairs.top) {
            h->grpc_service = rm_strdup("");
        } else {
            if (fields(p, v[GRPC], pfx, "health_check.grpc", gkeys, sv) != 0)
                return -1;
            if (sv[0] == NULL)
                h->grpc_service = rm_strdup("");
            else if (dup_string(p, sv[0], pfx, "health_check.grpc.service", &h->grpc_service) != 0)
                return -1;
        }
        if (cl->protocol == RM_UPSTREAM_HTTP1)
            return fail(p, v[GRPC], "%shealth_check.grpc needs an h2 or auto cluster (gRPC is HTTP/2)", pfx);
    }
    for (size_t i = 0; i != rm_config__num_health_ranges; ++i) {
        const rm_config_range_t *rg = rm_config__health_ranges + i;
        snprintf(key, sizeof(key), "health_check.%s", rg->name);
        if (v[NUMS + i] != NULL && get_u32(p, v[NUMS + i], pfx, key, rg->min, rg->max, (uint32_t *)((char *)h + rg->offset)) != 0)
            return -1;
    }
    if (h->timeout_ms >= h->interval_ms)
        return fail(p,
                    v[NUMS + 1] != NULL ? v[NUMS + 1]
                    : v[NUMS] != NULL   ? v[NUMS]
                                        : node,
                    "%shealth_check.timeout_ms (%u) must be below interval_ms (%u)", pfx, h->timeout_ms, h->interval_ms);
    return 0;
}

static int
parse_cluster(parser_t *p, yaml_node_t *node, size_t ci)
{
    static const char *const keys[] = {"name",
                                       "protocol",
                                       "endpoints",
                                       "connect_timeout_ms",
                                       "h2_connections",
                                       "h1_max_idle",
                                       "tls",
                                       "dns",
                                       "pool_idle_timeout_ms",
                                       "stream_idle_timeout_ms",
                                       "retry_budget",
                                       "load_balancer",
                                       "circuit_breakers",
                                       "outlier_detection",
                                       "health_check",
                                       "rate_limit",
                                       "addresses",
                                       "peer",
                                       "authorization",
                                       "mesh_identity",
                                       NULL};
    enum {
        NAME,
        PROTOCOL,
        ENDPOINTS,
        CONNECT_TIMEOUT,
        H2_CONNECTIONS,
        H1_MAX_IDLE,
        TLS,
        DNS,
        POOL_IDLE_TIMEOUT,
        STREAM_IDLE_TIMEOUT,
        RETRY_BUDGET,
        LOAD_BALANCER,
        CIRCUIT_BREAKERS,
        OUTLIER_DETECTION,
        HEALTH_CHECK,
        RATE_LIMIT,
        ADDRESSES,
        PEER,
        AUTHORIZATION,
        MESH_IDENTITY,
        NUM_KEYS
    };
    rm_config_cluster_t *cl = p->config->clusters + ci;
    yaml_node_t *v[NUM_KEYS], **items = NULL;
    size_t n;
    char pfx[200];
    const char *s;
    int ret = -1;

    const char *name = peek_name(p, node);
    if (name != NULL)
        snprintf(pfx, sizeof(pfx), "cluster '%s': ", name);
    else
        snprintf(pfx, sizeof(pfx), "cluster #%zu: ", ci + 1);
    if (fields(p, node, pfx, "cluster", keys, v) != 0)
        return -1;
    cl->line = rm_yaml_line(node);
    if (require(p, node, pfx, v[NAME], "name") != 0 || dup_string(p, v[NAME], pfx, "name", &cl->name) != 0)
        return -1;
    snprintf(pfx, sizeof(pfx), "cluster '%s': ", cl->name);

    if (v[PROTOCOL] != NULL) {
        if (get_string(p, v[PROTOCOL], pfx, "protocol", &s) != 0)
            return -1;
        if (strcmp(s, "h2") == 0)
            cl->protocol = RM_UPSTREAM_H2;
        else if (strcmp(s, "http1") == 0)
            cl->protocol = RM_UPSTREAM_HTTP1;
        else if (strcmp(s, "auto") == 0)
            cl->protocol = RM_UPSTREAM_AUTO;
        else if (strcmp(s, "tcp") == 0)
            cl->protocol = RM_UPSTREAM_TCP;
        else
            return fail(p, v[PROTOCOL], "%sprotocol '%s' must be h2, http1, auto or tcp", pfx, s);
    }
    if (v[PEER] != NULL) {
        /* the endpoints are agents: HTTP/1.1 requests ride HTTP/2 with marker fields (docs/architecture.md) */
        if (get_string(p, v[PEER], pfx, "peer", &s) != 0)
            return -1;
        if (strcmp(s, "agent") == 0)
            cl->peer_agent = 1;
        else if (strcmp(s, "any") != 0)
            return fail(p, v[PEER], "%speer '%s' must be agent or any", pfx, s);
    }
    if (v[ADDRESSES] != NULL) {
        /* virtual addresses (docs/transparent.md): IP literal and port, as a Service's spec.addresses */
        if (get_list(p, v[ADDRESSES], pfx, "addresses", 1, &items, &n) != 0)
            return -1;
        cl->addresses = rm_calloc(n + 1, sizeof(*cl->addresses));
        for (size_t i = 0; i != n; ++i) {
            const char *reason;
            if (get_string(p, items[i], pfx, "addresses[]", &s) != 0)
                goto Exit;
            if ((reason = rm_config__parse_bind_addr(s, cl->addresses + i)) != NULL) {
                fail(p, items[i], "%saddress '%s': %s", pfx, s, reason);
                goto Exit;
            }
            cl->addresses[i].line = rm_yaml_line(items[i]);
            cl->num_addresses = i + 1;
        }
        free(items);
        items = NULL;
    }

    if (require(p, node, pfx, v[ENDPOINTS], "endpoints") != 0 || get_list(p, v[ENDPOINTS], pfx, "endpoints", 1, &items, &n) != 0)
        return -1;
    if (n == 0) {
        fail(p, v[ENDPOINTS], "%sneeds at least one endpoint", pfx);
        goto Exit;
    }
    cl->endpoints = rm_calloc(n, sizeof(*cl->endpoints));
    for (size_t i = 0; i != n; ++i) {
        const char *reason;
        yaml_node_t *addr = items[i], *weight = NULL;
        if (items[i]->type == YAML_MAPPING_NODE) {
            static const char *const ekeys[] = {"address", "weight", NULL};
            yaml_node_t *ev[2];
            if (fields(p, items[i], pfx, "endpoints[]", ekeys, ev) != 0 ||
                require(p, items[i], pfx, ev[0], "endpoints[].address") != 0)
                goto Exit;
            addr = ev[0];
            weight = ev[1];
        }
        if (get_string(p, addr, pfx, "endpoints[]", &s) != 0)
            goto Exit;
        if ((reason = rm_config__parse_endpoint(s, cl->endpoints + i)) != NULL) {
            fail(p, addr, "%sendpoint '%s': %s", pfx, s, reason);
            goto Exit;
        }
        cl->endpoints[i].addr.line = rm_yaml_line(addr);
        cl->endpoints[i].weight = 1;
        cl->num_endpoints = i + 1;
        if (weight != NULL &&
            get_u32(p, weight, pfx, "endpoints[].weight", 1, RM_CONFIG_MAX_ENDPOINT_WEIGHT, &cl->endpoints[i].weight) != 0)
            goto Exit;
        for (size_t j = 0; j != i; ++j) {
            if (cl->endpoints[j].port == cl->endpoints[i].port && strcasecmp(cl->endpoints[j].host, cl->endpoints[i].host) == 0) {
                fail(p, items[i], "%sendpoint '%s' is listed twice", pfx, s);
                goto Exit;
            }
        }
    }

    const struct {
        int key;
        size_t range;
    } nums[] = {{CONNECT_TIMEOUT, 0}, {H2_CONNECTIONS, 1}, {H1_MAX_IDLE, 2}, {POOL_IDLE_TIMEOUT, 5}, {STREAM_IDLE_TIMEOUT, 6}};
    for (size_t i = 0; i != sizeof(nums) / sizeof(nums[0]); ++i) {
        const rm_config_range_t *rg = rm_config__cluster_ranges + nums[i].range;
        if (v[nums[i].key] != NULL &&
            get_u32(p, v[nums[i].key], pfx, rg->name, rg->min, rg->max, (uint32_t *)((char *)cl + rg->offset)) != 0)
            goto Exit;
    }

    if (v[TLS] != NULL && parse_cluster_tls(p, v[TLS], pfx, cl) != 0)
        goto Exit;
    if (v[RETRY_BUDGET] != NULL &&
        parse_ranges(p, v[RETRY_BUDGET], pfx, "retry_budget", rm_config__budget_ranges, rm_config__num_budget_ranges, cl) != 0)
        goto Exit;
    if (v[LOAD_BALANCER] != NULL && parse_load_balancer(p, v[LOAD_BALANCER], pfx, cl) != 0)
        goto Exit;
    if (v[CIRCUIT_BREAKERS] != NULL && parse_ranges(p, v[CIRCUIT_BREAKERS], pfx, "circuit_breakers", rm_config__breaker_ranges,
                                                    rm_config__num_breaker_ranges, &cl->breakers) != 0)
        goto Exit;
    if (v[OUTLIER_DETECTION] != NULL && parse_outlier(p, v[OUTLIER_DETECTION], pfx, cl) != 0)
        goto Exit;
    if (v[HEALTH_CHECK] != NULL && parse_health_check(p, v[HEALTH_CHECK], pfx, cl) != 0)
        goto Exit;
    if (v[RATE_LIMIT] != NULL && parse_rate_limit(p, v[RATE_LIMIT], pfx, &cl->rate_limit) != 0)
        goto Exit;
    if (v[AUTHORIZATION] != NULL && parse_authz(p, v[AUTHORIZATION], pfx, &cl->authz) != 0)
        goto Exit;
    if (v[MESH_IDENTITY] != NULL) {
        /* the SPIFFE ID the endpoints' agents present on the mesh mTLS hop (docs/mesh-tls.md) */
        if (get_string(p, v[MESH_IDENTITY], pfx, "mesh_identity", &s) != 0)
            goto Exit;
        if (strncmp(s, "spiffe://", 9) != 0 || strlen(s) > 200 || strchr(s + 9, '/') == NULL || s[9] == '/') {
            fail(p, v[MESH_IDENTITY], "%smesh_identity '%s' must be a SPIFFE ID such as spiffe://remora.local/ns/default/sa/api",
                 pfx, s);
            goto Exit;
        }
        if (!cl->peer_agent) {
            fail(p, v[MESH_IDENTITY], "%smesh_identity needs 'peer: agent' (only agents terminate mesh mTLS)", pfx);
            goto Exit;
        }
        cl->peer_identity = rm_strdup(s);
    }

    if (v[DNS] != NULL) {
        static const char *const dkeys[] = {"min_refresh_ms", "max_refresh_ms", NULL};
        yaml_node_t *dv[2];
        if (fields(p, v[DNS], pfx, "dns", dkeys, dv) != 0)
            goto Exit;
        for (size_t i = 0; i != 2; ++i) {
            const rm_config_range_t *rg = rm_config__cluster_ranges + 3 + i;
            if (dv[i] != NULL && get_u32(p, dv[i], pfx, rg->name, rg->min, rg->max, (uint32_t *)((char *)cl + rg->offset)) != 0)
                goto Exit;
        }
        if (cl->dns_min_refresh_ms > cl->dns_max_refresh_ms) {
            fail(p, v[DNS], "%sdns.min_refresh_ms (%u) must not exceed dns.max_refresh_ms (%u)", pfx, cl->dns_min_refresh_ms,
                 cl->dns_max_refresh_ms);
            goto Exit;
        }
    }
    ret = 0;
Exit:
    free(items);
    return ret;
}

static int
parse_tracing(parser_t *p, yaml_node_t *node)
{
    static const char *const keys[] = {"otlp",       "sampling_percent", "propagation", "service_name",
                                       "batch_size", "batch_timeout_ms", "queue_size",  NULL};
    enum { OTLP, SAMPLING, PROPAGATION, SERVICE_NAME, BATCH_SIZE, BATCH_TIMEOUT, QUEUE_SIZE };
    static const char pfx[] = "telemetry.tracing: ";
    rm_config_tracing_t *t = &p->config->telemetry.tracing;
    yaml_node_t *v[7], **items = NULL;
    size_t n;
    const char *s, *reason;

    if (fields(p, node, pfx, "telemetry.tracing", keys, v) != 0)
        return -1;
    t->enabled = 1;
    t->line = rm_yaml_line(node);
    if (require(p, node, pfx, v[OTLP], "otlp") != 0)
        return -1;
    {
        static const char *const okeys[] = {"endpoint", "protocol", NULL};
        yaml_node_t *ov[2];
        if (fields(p, v[OTLP], pfx, "otlp", okeys, ov) != 0 || require(p, v[OTLP], pfx, ov[0], "otlp.endpoint") != 0 ||
            get_string(p, ov[0], pfx, "otlp.endpoint", &s) != 0)
            return -1;
        if ((reason = rm_config__check_otlp_endpoint(s)) != NULL)
            return fail(p, ov[0], "%sotlp.endpoint '%s': %s", pfx, s, reason);
        t->otlp_endpoint = rm_strdup(s);
        if (ov[1] != NULL) {
            if (get_string(p, ov[1], pfx, "otlp.protocol", &s) != 0)
                return -1;
            if (strcmp(s, "grpc") == 0)
                t->protocol = RM_OTLP_GRPC;
            else if (strcmp(s, "http") == 0)
                t->protocol = RM_OTLP_HTTP;
            else
                return fail(p, ov[1], "%sotlp.protocol must be grpc or http, got '%s'", pfx, s);
        }
    }
    if (v[SAMPLING] != NULL) {
        uint32_t per_million;
        if (get_percent(p, v[SAMPLING], pfx, "sampling_percent", &per_million) != 0)
            return -1;
        t->sampling_percent = per_million / 10000.0;
    }
    if (v[PROPAGATION] != NULL) {
        if (get_list(p, v[PROPAGATION], pfx, "propagation", 1, &items, &n) != 0)
            return -1;
        t->propagate_w3c = t->propagate_b3 = 0;
        for (size_t i = 0; i != n; ++i) {
            if (get_string(p, items[i], pfx, "propagation", &s) != 0)
                goto Error;
            if (strcmp(s, "w3c") == 0) {
                t->propagate_w3c = 1;
            } else if (strcmp(s, "b3") == 0) {
                t->propagate_b3 = 1;
            } else {
                fail(p, items[i], "%spropagation: unknown format '%s' (use w3c and/or b3)", pfx, s);
                goto Error;
            }
        }
        free(items);
        items = NULL;
    }
    if (v[SERVICE_NAME] != NULL) {
        if (get_string(p, v[SERVICE_NAME], pfx, "service_name", &s) != 0)
            return -1;
        if (s[0] == '\0' || strlen(s) > RM_CONFIG_MAX_SERVICE_NAME)
            return fail(p, v[SERVICE_NAME], "%sservice_name must be 1-%d characters", pfx, RM_CONFIG_MAX_SERVICE_NAME);
        t->service_name = rm_strdup(s);
    }
    if (v[BATCH_SIZE] != NULL && get_u32(p, v[BATCH_SIZE], pfx, "batch_size", 1, RM_CONFIG_MAX_TRACE_BATCH, &t->batch_size) != 0)
        return -1;
    if (v[BATCH_TIMEOUT] != NULL &&
        get_u32(p, v[BATCH_TIMEOUT], pfx, "batch_timeout_ms", 1, RM_CONFIG_MAX_TRACE_BATCH_TIMEOUT_MS, &t->batch_timeout_ms) != 0)
        return -1;
    if (v[QUEUE_SIZE] != NULL && get_u32(p, v[QUEUE_SIZE], pfx, "queue_size", 1, RM_CONFIG_MAX_TRACE_QUEUE, &t->queue_size) != 0)
        return -1;
    if (t->queue_size < t->batch_size)
        return fail(p,
                    v[QUEUE_SIZE] != NULL   ? v[QUEUE_SIZE]
                    : v[BATCH_SIZE] != NULL ? v[BATCH_SIZE]
                                            : node,
                    "%squeue_size (%u) must not be smaller than batch_size (%u)", pfx, t->queue_size, t->batch_size);
    return 0;
Error:
    free(items);
    return -1;
}

static int
parse_access_log(parser_t *p, yaml_node_t *node)
{
    static const char *const keys[] = {"path", "buffer_bytes", NULL};
    static const char pfx[] = "telemetry.access_log: ";
    rm_config_access_log_t *a = &p->config->telemetry.access_log;
    yaml_node_t *v[2];
    const char *s, *reason;
    char buf[512];

    if (fields(p, node, pfx, "telemetry.access_log", keys, v) != 0)
        return -1;
    a->enabled = 1;
    a->line = rm_yaml_line(node);
    if (v[0] != NULL) {
        if (get_string(p, v[0], pfx, "path", &s) != 0)
            return -1;
        if (s[0] == '\0')
            return fail(p, v[0], "%spath must be stdout or a file path, got an empty string", pfx);
        a->path = strcmp(s, "stdout") == 0 ? rm_strdup(s) : resolve_path(p, s);
        if ((reason = rm_config__check_log_path(a->path, buf, sizeof(buf))) != NULL)
            return fail(p, v[0], "%spath '%s': %s", pfx, a->path, reason);
    } else {
        a->path = rm_strdup("stdout");
    }
    if (v[1] != NULL && get_u32(p, v[1], pfx, "buffer_bytes", RM_CONFIG_MIN_ACCESS_LOG_BUFFER, RM_CONFIG_MAX_ACCESS_LOG_BUFFER,
                                &a->buffer_bytes) != 0)
        return -1;
    return 0;
}

static int
parse_telemetry(parser_t *p, yaml_node_t *node)
{
    static const char *const keys[] = {"tracing", "access_log", NULL};
    yaml_node_t *v[2];
    if (fields(p, node, "", "telemetry", keys, v) != 0)
        return -1;
    if (v[0] != NULL && parse_tracing(p, v[0]) != 0)
        return -1;
    if (v[1] != NULL && parse_access_log(p, v[1]) != 0)
        return -1;
    return 0;
}

/* `mesh_tls: {mode: STRICT|PERMISSIVE|DISABLE, identity_dir: DIR}` (docs/mesh-tls.md) */
static int
parse_mesh_tls(parser_t *p, yaml_node_t *node)
{
    static const char *const keys[] = {"mode", "identity_dir", NULL};
    yaml_node_t *v[2];
    const char *s;
    if (fields(p, node, "", "mesh_tls", keys, v) != 0)
        return -1;
    p->config->mesh_tls.line = rm_yaml_line(node);
    if (v[0] != NULL) {
        if (get_string(p, v[0], "", "mesh_tls.mode", &s) != 0)
            return -1;
        if (strcmp(s, "STRICT") == 0)
            p->config->mesh_tls.mode = RM_MESH_TLS_STRICT;
        else if (strcmp(s, "PERMISSIVE") == 0)
            p->config->mesh_tls.mode = RM_MESH_TLS_PERMISSIVE;
        else if (strcmp(s, "DISABLE") == 0)
            p->config->mesh_tls.mode = RM_MESH_TLS_DISABLE;
        else
            return fail(p, v[0], "mesh_tls.mode '%s' must be STRICT, PERMISSIVE or DISABLE", s);
    }
    if (v[1] != NULL) {
        if (get_string(p, v[1], "", "mesh_tls.identity_dir", &s) != 0)
            return -1;
        if (s[0] == '\0')
            return fail(p, v[1], "mesh_tls.identity_dir must not be empty");
        p->config->mesh_tls.identity_dir = resolve_path(p, s);
    }
    return 0;
}

/* Route -> cluster references are checked here rather than only in the validator to point at the line of `cluster:`. */
static int
check_refs(parser_t *p)
{
    rm_config_t *c = p->config;
    for (size_t i = 0; i != p->num_refs; ++i) {
        rm_config_listener_t *l = c->listeners + p->refs[i].listener;
        rm_config_route_t *r = l->routes + p->refs[i].index;
        int mirror = p->refs[i].mirror != NO_MIRROR;
        const char *name = mirror ? r->mirrors[p->refs[i].mirror].cluster_name : r->cluster_name;
        if (rm_config_find_cluster(c, name) >= 0)
            continue;
        const char *best = NULL;
        size_t best_d = 3;
        for (size_t j = 0; j != c->num_clusters; ++j) {
            size_t d = rm_edit_distance(name, c->clusters[j].name, 2);
            if (d < best_d) {
                best_d = d;
                best = c->clusters[j].name;
            }
        }
        char route[160];
        if (r->name != NULL)
            snprintf(route, sizeof(route), "route '%s'", r->name);
        else
            snprintf(route, sizeof(route), "route #%zu", p->refs[i].index + 1);
        p->err->line = p->refs[i].line;
        snprintf(p->err->file, sizeof(p->err->file), "%s", p->file);
        if (best != NULL)
            snprintf(p->err->message, sizeof(p->err->message),
                     "listener '%s': %s: %scluster '%s' is not defined (did you mean '%s'?)", l->name, route,
                     mirror ? "mirrors: " : "", name, best);
        else
            snprintf(p->err->message, sizeof(p->err->message), "listener '%s': %s: %scluster '%s' is not defined", l->name, route,
                     mirror ? "mirrors: " : "", name);
        return -1;
    }
    return 0;
}

static int
parse_root(parser_t *p, yaml_node_t *root)
{
    static const char *const keys[] = {"version", "workers",   "admin",    "health",    "drain_timeout_ms", "dns",
                                       "limits",  "listeners", "clusters", "telemetry", "mesh_tls",         NULL};
    enum { VERSION, WORKERS, ADMIN, HEALTH, DRAIN, DNS, LIMITS, LISTENERS, CLUSTERS, TELEMETRY, MESH_TLS };
    rm_config_t *c = p->config;
    yaml_node_t *v[11], **items = NULL;
    size_t n;
    int ret = -1;

    if (root->type != YAML_MAPPING_NODE)
        return fail(p, root, "the configuration must be a mapping (workers:, listeners:, clusters: ...), got %s",
                    rm_yaml_type_name(root));
    if (fields(p, root, "", "the configuration", keys, v) != 0)
        return -1;
    if (v[VERSION] != NULL && dup_string(p, v[VERSION], "", "version", &c->version) != 0)
        return -1;
    if (v[WORKERS] != NULL && get_u32(p, v[WORKERS], "", "workers", 1, RM_CONFIG_MAX_WORKERS, &c->num_workers) != 0)
        return -1;
    if (v[ADMIN] != NULL && get_bind_addr(p, v[ADMIN], "", "admin", &c->admin_addr) != 0)
        return -1;
    if (v[HEALTH] != NULL && get_bind_addr(p, v[HEALTH], "", "health", &c->health_addr) != 0)
        return -1;
    if (v[DRAIN] != NULL && get_u32(p, v[DRAIN], "", "drain_timeout_ms", 0, UINT32_MAX, &c->drain_timeout_ms) != 0)
        return -1;
    if (v[DNS] != NULL && parse_dns(p, v[DNS]) != 0)
        return -1;
    if (v[LIMITS] != NULL &&
        parse_ranges(p, v[LIMITS], "", "limits", rm_config__limit_ranges, rm_config__num_limit_ranges, &c->limits) != 0)
        return -1;
    if (v[TELEMETRY] != NULL && parse_telemetry(p, v[TELEMETRY]) != 0)
        return -1;
    if (v[MESH_TLS] != NULL && parse_mesh_tls(p, v[MESH_TLS]) != 0)
        return -1;

    if (v[CLUSTERS] != NULL) {
        if (get_list(p, v[CLUSTERS], "", "clusters", 0, &items, &n) != 0)
            return -1;
        c->clusters = rm_calloc(n, sizeof(*c->clusters));
        for (size_t i = 0; i != n; ++i) {
            rm_config_cluster_set_defaults(c->clusters + i);
            c->num_clusters = i + 1;
            if (parse_cluster(p, items[i], i) != 0)
                goto Exit;
        }
        free(items);
        items = NULL;
    }

    if (v[LISTENERS] != NULL) {
        if (get_list(p, v[LISTENERS], "", "listeners", 0, &items, &n) != 0)
            goto Exit;
        c->listeners = rm_calloc(n, sizeof(*c->listeners));
        for (size_t i = 0; i != n; ++i) {
            c->num_listeners = i + 1;
            if (parse_listener(p, items[i], i) != 0)
                goto Exit;
        }
    }

    ret = check_refs(p);
Exit:
    free(items);
    return ret;
}

static unsigned
line_at_offset(const char *s, size_t len, size_t offset)
{
    unsigned line = 1;
    for (size_t i = 0; i < offset && i < len; ++i)
        line += s[i] == '\n';
    return line;
}

static void
yaml_failure(parser_t *p, yaml_parser_t *parser, const char *yaml, size_t len)
{
    unsigned line = parser->error == YAML_READER_ERROR ? line_at_offset(yaml, len, parser->problem_offset)
                                                       : (unsigned)parser->problem_mark.line + 1;
    snprintf(p->err->file, sizeof(p->err->file), "%s", p->file);
    p->err->line = line;
    if (parser->error == YAML_MEMORY_ERROR)
        snprintf(p->err->message, sizeof(p->err->message), "out of memory while parsing YAML");
    else if (parser->context != NULL)
        snprintf(p->err->message, sizeof(p->err->message), "invalid YAML: %s %s",
                 parser->problem != NULL ? parser->problem : "error", parser->context);
    else
        snprintf(p->err->message, sizeof(p->err->message), "invalid YAML: %s", parser->problem != NULL ? parser->problem : "error");
}

rm_config_t *
rm_config_load_string(const char *yaml, size_t len, const char *name, rm_config_error_t *err)
{
    parser_t p = {.file = name, .err = err, .budget = NODE_BUDGET};
    yaml_parser_t parser;
    int have_doc = 0;
    rm_config_t *ret = NULL;

    const char *slash = strrchr(name, '/');
    p.dir = slash != NULL ? rm_strndup(name, slash == name ? 1 : (size_t)(slash - name)) : rm_strdup("");

    if (!yaml_parser_initialize(&parser))
        rm_fatal("yaml_parser_initialize failed");
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &p.doc)) {
        yaml_failure(&p, &parser, yaml, len);
        goto Exit;
    }
    have_doc = 1;

    yaml_node_t *root = yaml_document_get_root_node(&p.doc);
    if (root == NULL) {
        rm_config__error(err, name, 0, "the configuration is empty");
        goto Exit;
    }
    /* a second document would be silently ignored otherwise */
    yaml_document_t next;
    if (!yaml_parser_load(&parser, &next)) {
        yaml_failure(&p, &parser, yaml, len);
        goto Exit;
    }
    yaml_node_t *next_root = yaml_document_get_root_node(&next);
    unsigned next_line = rm_yaml_line(next_root);
    yaml_document_delete(&next);
    if (next_root != NULL) {
        rm_config__error(err, name, next_line, "only one YAML document is allowed (remove the extra '---')");
        goto Exit;
    }

    p.config = rm_config_create_defaults();
    p.config->source = rm_strdup(name);
    if (parse_root(&p, root) != 0 || rm_config_validate(p.config, err) != 0) {
        rm_config_unref(p.config);
        goto Exit;
    }
    ret = p.config;

Exit:
    if (have_doc)
        yaml_document_delete(&p.doc);
    yaml_parser_delete(&parser);
    free(p.refs);
    free(p.dir);
    return ret;
}

rm_config_t *
rm_config_load_file(const char *path, rm_config_error_t *err)
{
    FILE *fp;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    rm_config_t *c = NULL;

    if ((fp = fopen(path, "rb")) == NULL) {
        rm_config__error(err, path, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_FILE_BYTES) {
                rm_config__error(err, path, 0, "file is larger than %d bytes", MAX_FILE_BYTES);
                goto Exit;
            }
            cap = cap == 0 ? 8192 : cap * 2;
            buf = rm_realloc(buf, cap);
        }
        size_t r = fread(buf + len, 1, cap - len, fp);
        len += r;
        if (r == 0) {
            if (ferror(fp)) {
                rm_config__error(err, path, 0, "cannot read: %s", strerror(errno));
                goto Exit;
            }
            break;
        }
    }
    c = rm_config_load_string(buf, len, path, err);
Exit:
    fclose(fp);
    free(buf);
    return c;
}
