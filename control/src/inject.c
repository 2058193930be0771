#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "remora/strutil.h"
#include "remora/yamlutil.h"
#include "inject.h"
#include "manifest.h"

#ifndef REMORA_VERSION
#define REMORA_VERSION "0.1.0"
#endif

#define DEFAULT_PROXY_IMAGE "ghcr.io/remora-mesh/proxy:" REMORA_VERSION
#define DEFAULT_CONTROL_ADDRESS "remora-control.remora-system.svc:15010"
#define DEFAULT_PROXY_UID 2102
#define DEFAULT_OUTBOUND_GRACE_MS 10000
#define MAX_OUTBOUND_GRACE_MS 3600000
#define MAX_CONFIG_BYTES (1u << 20)

#define STATE_DIR "/var/run/remora/state"
#define TOKEN_DIR "/var/run/remora/tokens"
#define TRUST_DIR "/var/run/remora/trust"
#define TRUST_CONFIGMAP "remora-trust-anchor"
#define TRUST_KEY "trust-anchor.pem"
#define TOKEN_AUDIENCE "remora"
#define TOKEN_EXPIRATION_S 3600
#define VOLUME_STATE "remora-state"
#define VOLUME_TOKEN "remora-token"
#define VOLUME_TRUST "remora-trust"
#define ANNOTATION_PREFIX "config.remora.dev/"
/* what the agent's /app-health handler takes (agent/src/admin/app_probe.c) */
#define MAX_PROBE_PATH_BYTES 2048
#define MAX_PROBE_HEADERS 16
#define MAX_PROBE_SERVICE_BYTES 512

static const char *const volume_names[] = {VOLUME_STATE, VOLUME_TOKEN, VOLUME_TRUST, NULL};
/* the probes of a container and the last segment of their /app-health path */
static const struct {
    const char *field, *segment;
} probe_kinds[] = {{"livenessProbe", "livez"}, {"readinessProbe", "readyz"}, {"startupProbe", "startupz"}};
#define NUM_PROBE_KINDS (sizeof(probe_kinds) / sizeof(probe_kinds[0]))

static void __attribute__((format(printf, 3, 4))) say(char *buf, size_t bufsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, bufsz, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------ value checks */

/*
 * "80, 443,9000-9010,8080" -> "80,443,8080,9000-9010": the common port-list grammar (rm_parse_port_list), at
 * most RM_INJECT_MAX_PORTS ports once ranges are expanded, written back sorted with runs as ranges, which
 * remora-init and the agent read. Returns a malloc'ed string, or NULL with the reason in `why`.
 */
static char *
normalize_ports(const char *in, char *why, size_t whysz)
{
    uint16_t ports[RM_INJECT_MAX_PORTS];
    long n = rm_parse_port_list(in, NULL, ports, RM_INJECT_MAX_PORTS, why, whysz);
    if (n < 0)
        return NULL;
    /* at worst "65535-65535," per port: the bound is far below RM_INJECT_MAX_VALUE_BYTES' scale */
    size_t cap = (size_t)n * 12 + 1;
    char *out = rm_malloc(cap);
    if (rm_format_port_list(ports, (size_t)n, out, cap) != 0) {
        say(why, whysz, "port list '%.100s' too long", in);
        free(out);
        return NULL;
    }
    return out;
}

/* A Kubernetes resource quantity: [+-]?(digits[.digits]|.digits)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|e[+-]?digits)? */
static int
valid_quantity(const char *s)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        ++p;
    size_t lead = strspn(p, "0123456789");
    p += lead;
    size_t frac = 0;
    if (*p == '.') {
        ++p;
        frac = strspn(p, "0123456789");
        p += frac;
    }
    if (lead == 0 && frac == 0)
        return 0;
    if (*p == '\0')
        return 1;
    static const char *const suffixes[] = {"Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", NULL};
    for (size_t i = 0; suffixes[i] != NULL; ++i)
        if (strcmp(p, suffixes[i]) == 0)
            return 1;
    if (*p == 'e' || *p == 'E') {
        ++p;
        if (*p == '+' || *p == '-')
            ++p;
        size_t exp = strspn(p, "0123456789");
        return exp > 0 && p[exp] == '\0';
    }
    return 0;
}

static int
valid_log_level(const char *s)
{
    return strcmp(s, "error") == 0 || strcmp(s, "warn") == 0 || strcmp(s, "info") == 0 || strcmp(s, "debug") == 0;
}

/* -------------------------------------------------------------------------------- configuration */

static json_t *
default_resources(void)
{
    return json_pack("{s:{s:s,s:s},s:{s:s}}", "requests", "cpu", "10m", "memory", "20Mi", "limits", "memory", "256Mi");
}

void
rm_inject_config_init(rm_inject_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->proxy_image = rm_strdup(DEFAULT_PROXY_IMAGE);
    cfg->proxy_image_pull_policy = rm_strdup("IfNotPresent");
    cfg->init_image = rm_strdup("");
    cfg->control_address = rm_strdup(DEFAULT_CONTROL_ADDRESS);
    cfg->log_level = rm_strdup("info");
    cfg->opaque_ports = rm_strdup("");
    cfg->skip_inbound_ports = rm_strdup("");
    cfg->skip_outbound_ports = rm_strdup("");
    cfg->proxy_uid = DEFAULT_PROXY_UID;
    cfg->native_sidecar = 1;
    cfg->outbound_grace_ms = DEFAULT_OUTBOUND_GRACE_MS;
    cfg->resources = default_resources();
    cfg->version = rm_strdup(REMORA_VERSION);
}

void
rm_inject_config_dispose(rm_inject_config_t *cfg)
{
    free(cfg->proxy_image);
    free(cfg->proxy_image_pull_policy);
    free(cfg->init_image);
    free(cfg->control_address);
    free(cfg->log_level);
    free(cfg->opaque_ports);
    free(cfg->skip_inbound_ports);
    free(cfg->skip_outbound_ports);
    json_decref(cfg->resources);
    free(cfg->version);
    memset(cfg, 0, sizeof(*cfg));
}

/* Checks a ResourceRequirements object: requests/limits of quantities (strings or numbers). */
static int
check_resources(const json_t *r, char *why, size_t whysz)
{
    if (!json_is_object(r)) {
        say(why, whysz, "must be a mapping with requests and/or limits");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)r, k, v)
    {
        if (strcmp(k, "requests") != 0 && strcmp(k, "limits") != 0) {
            say(why, whysz, "unknown key '%.64s' (requests, limits)", k);
            return -1;
        }
        if (!json_is_object(v)) {
            say(why, whysz, "%s must be a mapping of resource names to quantities", k);
            return -1;
        }
        const char *rk;
        json_t *q;
        json_object_foreach(v, rk, q)
        {
            if (!(json_is_string(q) && valid_quantity(json_string_value(q))) && !json_is_integer(q)) {
                say(why, whysz, "%s.%.64s: not a quantity (e.g. 100m, 64Mi)", k, rk);
                return -1;
            }
        }
    }
    return 0;
}

/* A scalar as text for the string-valued keys: strings as they are, integers printed. NULL for anything else. */
static char *
scalar_text(const json_t *v)
{
    if (json_is_string(v))
        return rm_strdup(json_string_value(v));
    if (json_is_integer(v)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return rm_strdup(buf);
    }
    return NULL;
}

static void
replace_str(char **dst, char *v)
{
    free(*dst);
    *dst = v;
}

/* One key of the configuration: 0, or -1 with the reason (without file:line) */
static int
config_key(rm_inject_config_t *cfg, const char *key, const json_t *v, char *why, size_t whysz)
{
    char *s = scalar_text(v);
    int rc = -1;
    if (strcmp(key, "proxyImage") == 0 || strcmp(key, "initImage") == 0) {
        if (s == NULL || (s[0] == '\0' && key[0] == 'p')) {
            say(why, whysz, "%s must be an image reference (e.g. " DEFAULT_PROXY_IMAGE ")", key);
        } else {
            replace_str(key[0] == 'p' ? &cfg->proxy_image : &cfg->init_image, s);
            s = NULL, rc = 0;
        }
    } else if (strcmp(key, "proxyImagePullPolicy") == 0) {
        if (s == NULL || (strcmp(s, "Always") != 0 && strcmp(s, "IfNotPresent") != 0 && strcmp(s, "Never") != 0)) {
            say(why, whysz, "proxyImagePullPolicy must be Always, IfNotPresent or Never");
        } else {
            replace_str(&cfg->proxy_image_pull_policy, s);
            s = NULL, rc = 0;
        }
    } else if (strcmp(key, "controlAddress") == 0) {
        char *host = NULL;
        uint16_t port;
        const char *e;
        if (s == NULL || rm_split_host_port(s, &host, &port, &e) != 0 || host[0] == '\0' || port == 0) {
            say(why, whysz, "controlAddress must be HOST:PORT (e.g. " DEFAULT_CONTROL_ADDRESS ")");
        } else {
            replace_str(&cfg->control_address, s);
            s = NULL, rc = 0;
        }
        free(host);
    } else if (strcmp(key, "proxyUID") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4294967294ll) {
            say(why, whysz, "proxyUID must be a UID from 1 to 4294967294 (the agent runs as non-root)");
        } else {
            cfg->proxy_uid = (uint32_t)json_integer_value(v);
            rc = 0;
        }
    } else if (strcmp(key, "nativeSidecar") == 0) {
        if (!json_is_boolean(v)) {
            say(why, whysz, "nativeSidecar must be true or false");
        } else {
            cfg->native_sidecar = json_is_true(v);
            rc = 0;
        }
    } else if (strcmp(key, "outboundGraceMs") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_OUTBOUND_GRACE_MS) {
            say(why, whysz, "outboundGraceMs must be milliseconds from 0 to %u", MAX_OUTBOUND_GRACE_MS);
        } else {
            cfg->outbound_grace_ms = (uint32_t)json_integer_value(v);
            rc = 0;
        }
    } else if (strcmp(key, "logLevel") == 0) {
        if (s == NULL || !valid_log_level(s)) {
            say(why, whysz, "logLevel must be error, warn, info or debug");
        } else {
            replace_str(&cfg->log_level, s);
            s = NULL, rc = 0;
        }
    } else if (strcmp(key, "opaquePorts") == 0 || strcmp(key, "skipInboundPorts") == 0 || strcmp(key, "skipOutboundPorts") == 0) {
        char **dst = key[0] == 'o' ? &cfg->opaque_ports : key[4] == 'I' ? &cfg->skip_inbound_ports : &cfg->skip_outbound_ports;
        char inner[300];
        char *norm = s != NULL ? normalize_ports(s, inner, sizeof(inner)) : NULL;
        if (json_is_null(v)) {
            norm = rm_strdup("");
        } else if (s == NULL) {
            say(why, whysz, "%s must be a comma-separated list of ports, e.g. \"25,3306\"", key);
        } else if (norm == NULL) {
            say(why, whysz, "%s: %s", key, inner);
        }
        if (norm != NULL) {
            replace_str(dst, norm);
            rc = 0;
        }
    } else if (strcmp(key, "resources") == 0) {
        char inner[300];
        if (check_resources(v, inner, sizeof(inner)) != 0) {
            say(why, whysz, "resources: %s", inner);
        } else {
            json_decref(cfg->resources);
            cfg->resources = json_deep_copy(v);
            rc = 0;
        }
    } else {
        say(why, whysz,
            "unknown key '%.64s' (proxyImage, proxyImagePullPolicy, initImage, controlAddress, proxyUID, nativeSidecar, "
            "outboundGraceMs, logLevel, opaquePorts, skipInboundPorts, skipOutboundPorts, resources)",
            key);
    }
    free(s);
    return rc;
}

int
rm_inject_config_parse(rm_inject_config_t *cfg, const char *text, size_t len, const char *name, char *err, size_t errsz)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        say(err, errsz, "%s:%zu: %s", name, parser.problem_mark.line + 1, parser.problem ? parser.problem : "bad YAML");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || rm_yaml_is_null(root))
        goto Exit; /* an empty file: the defaults */
    if (root->type != YAML_MAPPING_NODE) {
        say(err, errsz, "%s:%u: expected a mapping of settings, got %s", name, rm_yaml_line(root), rm_yaml_type_name(root));
        rc = -1;
        goto Exit;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; ++p) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            say(err, errsz, "%s:%u: a key must be a scalar", name, rm_yaml_line(k));
            rc = -1;
            goto Exit;
        }
        json_t *jv = rm_manifest_node_to_json(&doc, v, name, err, errsz);
        if (jv == NULL) {
            rc = -1;
            goto Exit;
        }
        char why[512];
        if (config_key(cfg, (const char *)k->data.scalar.value, jv, why, sizeof(why)) != 0) {
            say(err, errsz, "%s:%u: %s", name, rm_yaml_line(k), why);
            rc = -1;
        }
        json_decref(jv);
        if (rc != 0)
            goto Exit;
    }
Exit:
    yaml_document_delete(&doc);
    return rc;
}

int
rm_inject_config_load(rm_inject_config_t *cfg, const char *path, char *err, size_t errsz)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        say(err, errsz, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = rm_malloc(MAX_CONFIG_BYTES + 1);
    size_t n = fread(buf, 1, MAX_CONFIG_BYTES + 1, fp);
    int bad = ferror(fp);
    fclose(fp);
    int rc = -1;
    if (bad)
        say(err, errsz, "%s: cannot read the file", path);
    else if (n > MAX_CONFIG_BYTES)
        say(err, errsz, "%s: larger than %u bytes", path, MAX_CONFIG_BYTES);
    else
        rc = rm_inject_config_parse(cfg, buf, n, path, err, errsz);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------ JSON Patch */

char *
rm_json_pointer_join(const char *prefix, const char *token)
{
    size_t plen = strlen(prefix), extra = 0;
    for (const char *p = token; *p; ++p)
        extra += *p == '~' || *p == '/';
    char *out = rm_malloc(plen + 1 + strlen(token) + extra + 1), *o = out;
    memcpy(o, prefix, plen);
    o += plen;
    *o++ = '/';
    for (const char *p = token; *p; ++p) {
        if (*p == '~') {
            *o++ = '~', *o++ = '0';
        } else if (*p == '/') {
            *o++ = '~', *o++ = '1';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* Appends {"op": op, "path": path[, "value": value]} (value stolen). */
static void
add_op(json_t *patch, const char *op, const char *path, json_t *value)
{
    json_t *o = json_pack("{s:s,s:s}", "op", op, "path", path);
    if (value != NULL)
        json_object_set_new(o, "value", value);
    json_array_append_new(patch, o);
}

static void add_opf(json_t *patch, const char *op, json_t *value, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void
add_opf(json_t *patch, const char *op, json_t *value, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    add_op(patch, op, path, value);
}

/* One reference token of a pointer, unescaped into `buf`; -1 for a bad escape. */
static int
unescape_token(const char *s, size_t len, char *buf, size_t bufsz)
{
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        char c = s[i];
        if (c == '~') {
            if (i + 1 >= len || (s[i + 1] != '0' && s[i + 1] != '1'))
                return -1;
            c = s[++i] == '0' ? '~' : '/';
        }
        if (o + 1 >= bufsz)
            return -1;
        buf[o++] = c;
    }
    buf[o] = '\0';
    return 0;
}

/* An array index token: 0 or digits without a leading zero; -1 when it is not one. */
static long
array_index(const char *tok)
{
    if (tok[0] == '\0' || (tok[0] == '0' && tok[1] != '\0') || strlen(tok) > 9)
        return -1;
    for (const char *p = tok; *p; ++p)
        if (*p < '0' || *p > '9')
            return -1;
    return atol(tok);
}

/*
 * Resolves `path` but for its last token: *parent is the container, `last` its unescaped last token.
 * Returns 0, or -1 with the reason.
 */
static int
resolve_parent(json_t *doc, const char *path, json_t **parent, char *last, size_t lastsz, char *why, size_t whysz)
{
    if (path[0] != '/') {
        say(why, whysz, "path '%.200s' is not a JSON Pointer to a member", path);
        return -1;
    }
    json_t *cur = doc;
    const char *p = path + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        if (unescape_token(p, len, last, lastsz) != 0) {
            say(why, whysz, "path '%.200s': bad token", path);
            return -1;
        }
        if (slash == NULL) {
            *parent = cur;
            return 0;
        }
        json_t *next = NULL;
        if (json_is_object(cur)) {
            next = json_object_get(cur, last);
        } else if (json_is_array(cur)) {
            long i = array_index(last);
            next = i >= 0 ? json_array_get(cur, (size_t)i) : NULL;
        }
        if (next == NULL) {
            say(why, whysz, "path '%.200s': '%.100s' does not exist", path, last);
            return -1;
        }
        cur = next;
        p = slash + 1;
    }
}

static json_t *
get_pointer(json_t *doc, const char *path, char *why, size_t whysz)
{
    if (path[0] == '\0')
        return doc;
    json_t *parent;
    char last[1024];
    if (resolve_parent(doc, path, &parent, last, sizeof(last), why, whysz) != 0)
        return NULL;
    json_t *v = NULL;
    if (json_is_object(parent)) {
        v = json_object_get(parent, last);
    } else if (json_is_array(parent)) {
        long i = array_index(last);
        v = i >= 0 ? json_array_get(parent, (size_t)i) : NULL;
    }
    if (v == NULL)
        say(why, whysz, "path '%.200s' does not exist", path);
    return v;
}

/* add (value stolen) */
static int
ptr_add(json_t *doc, const char *path, json_t *value, char *why, size_t whysz)
{
    json_t *parent;
    char last[1024];
    if (resolve_parent(doc, path, &parent, last, sizeof(last), why, whysz) != 0) {
        json_decref(value);
        return -1;
    }
    if (json_is_object(parent)) {
        json_object_set_new(parent, last, value);
        return 0;
    }
    if (json_is_array(parent)) {
        if (strcmp(last, "-") == 0) {
            json_array_append_new(parent, value);
            return 0;
        }
        long i = array_index(last);
        if (i >= 0 && (size_t)i <= json_array_size(parent)) {
            json_array_insert_new(parent, (size_t)i, value);
            return 0;
        }
    }
    say(why, whysz, "path '%.200s': cannot add there", path);
    json_decref(value);
    return -1;
}

/* remove; *removed (if not NULL) gets the removed value (new reference) */
static int
ptr_remove(json_t *doc, const char *path, json_t **removed, char *why, size_t whysz)
{
    json_t *parent;
    char last[1024];
    if (resolve_parent(doc, path, &parent, last, sizeof(last), why, whysz) != 0)
        return -1;
    if (json_is_object(parent) && json_object_get(parent, last) != NULL) {
        if (removed != NULL)
            *removed = json_incref(json_object_get(parent, last));
        json_object_del(parent, last);
        return 0;
    }
    long i = json_is_array(parent) ? array_index(last) : -1;
    if (i >= 0 && (size_t)i < json_array_size(parent)) {
        if (removed != NULL)
            *removed = json_incref(json_array_get(parent, (size_t)i));
        json_array_remove(parent, (size_t)i);
        return 0;
    }
    say(why, whysz, "path '%.200s' does not exist", path);
    return -1;
}

/* replace, in place (an object member keeps its position); value stolen */
static int
ptr_replace(json_t *doc, const char *path, json_t *value, char *why, size_t whysz)
{
    json_t *parent;
    char last[1024];
    if (resolve_parent(doc, path, &parent, last, sizeof(last), why, whysz) != 0) {
        json_decref(value);
        return -1;
    }
    if (json_is_object(parent) && json_object_get(parent, last) != NULL) {
        json_object_set_new(parent, last, value);
        return 0;
    }
    long i = json_is_array(parent) ? array_index(last) : -1;
    if (i >= 0 && (size_t)i < json_array_size(parent)) {
        json_array_set_new(parent, (size_t)i, value);
        return 0;
    }
    say(why, whysz, "path '%.200s' does not exist", path);
    json_decref(value);
    return -1;
}

int
rm_jsonpatch_apply(json_t *doc, const json_t *patch, char *err, size_t errsz)
{
    if (!json_is_array(patch)) {
        say(err, errsz, "a JSON Patch is a list of operations");
        return -1;
    }
    size_t i;
    json_t *o;
    char why[512];
    json_array_foreach(patch, i, o)
    {
        const char *op = json_string_value(json_object_get(o, "op")), *path = json_string_value(json_object_get(o, "path"));
        const char *from = json_string_value(json_object_get(o, "from"));
        json_t *value = json_object_get(o, "value");
        int rc = -1;
        if (op == NULL || path == NULL || path[0] == '\0') {
            say(why, sizeof(why), "an operation needs op and a non-root path");
        } else if (strcmp(op, "add") == 0 && value != NULL) {
            rc = ptr_add(doc, path, json_deep_copy(value), why, sizeof(why));
        } else if (strcmp(op, "remove") == 0) {
            rc = ptr_remove(doc, path, NULL, why, sizeof(why));
        } else if (strcmp(op, "replace") == 0 && value != NULL) {
            rc = ptr_replace(doc, path, json_deep_copy(value), why, sizeof(why));
        } else if ((strcmp(op, "move") == 0 || strcmp(op, "copy") == 0) && from != NULL) {
            json_t *v = NULL;
            if (op[0] == 'm') {
                rc = ptr_remove(doc, from, &v, why, sizeof(why));
            } else {
                json_t *src = get_pointer(doc, from, why, sizeof(why));
                rc = src != NULL ? 0 : -1;
                v = src != NULL ? json_deep_copy(src) : NULL;
            }
            if (rc == 0)
                rc = ptr_add(doc, path, v, why, sizeof(why));
        } else if (strcmp(op, "test") == 0 && value != NULL) {
            json_t *v = get_pointer(doc, path, why, sizeof(why));
            rc = v != NULL && json_equal(v, value) ? 0 : -1;
            if (v != NULL && rc != 0)
                say(why, sizeof(why), "test failed at '%.200s'", path);
        } else {
            say(why, sizeof(why), "unknown or incomplete operation");
        }
        if (rc != 0) {
            say(err, errsz, "operation %zu: %s", i, why);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ injection */

static const char *
annotation(const json_t *annotations, const char *key)
{
    return json_string_value(json_object_get(annotations, key));
}

static int
has_container_named(const json_t *list, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach((json_t *)list, i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

/* The effective settings of one pod: the configuration with the pod's override annotations. */
typedef struct st_settings_t {
    int native_sidecar;
    const char *log_level;
    char *opaque_ports, *skip_inbound_ports, *skip_outbound_ports;
    json_t *resources;
} settings_t;

static void
settings_dispose(settings_t *s)
{
    free(s->opaque_ports);
    free(s->skip_inbound_ports);
    free(s->skip_outbound_ports);
    json_decref(s->resources);
}

static int
set_resource(json_t *resources, const char *section, const char *name, const char *value, const char *annotation_name, char *why,
             size_t whysz)
{
    if (!valid_quantity(value)) {
        say(why, whysz, "annotation %s: '%.64s' is not a resource quantity (e.g. 100m, 64Mi)", annotation_name, value);
        return -1;
    }
    json_t *sec = json_object_get(resources, section);
    if (!json_is_object(sec)) {
        sec = json_object();
        json_object_set_new(resources, section, sec);
    }
    json_object_set_new(sec, name, json_string(value));
    return 0;
}

static int
settings_init(settings_t *s, const rm_inject_config_t *cfg, const json_t *annotations, json_t *warnings, char *why, size_t whysz)
{
    memset(s, 0, sizeof(*s));
    s->native_sidecar = cfg->native_sidecar;
    s->log_level = cfg->log_level;
    s->resources = json_deep_copy(cfg->resources);
    const char *v;
    const char *k;
    json_t *jv;
    /* every value of ours must be a string of bounded size */
    json_object_foreach((json_t *)annotations, k, jv)
    {
        if (strncmp(k, ANNOTATION_PREFIX, strlen(ANNOTATION_PREFIX)) != 0)
            continue;
        if (!json_is_string(jv) || json_string_length(jv) > RM_INJECT_MAX_VALUE_BYTES) {
            say(why, whysz, "annotation %.100s: must be a string of at most %u bytes", k, RM_INJECT_MAX_VALUE_BYTES);
            return -1;
        }
        static const char *const known[] = {
            "opaque-ports",    "skip-inbound-ports", "skip-outbound-ports", "proxy-cpu-request", "proxy-memory-request",
            "proxy-cpu-limit", "proxy-memory-limit", "proxy-log-level",     "native-sidecar",    NULL};
        int found = 0;
        for (size_t i = 0; known[i] != NULL && !found; ++i)
            found = strcmp(k + strlen(ANNOTATION_PREFIX), known[i]) == 0;
        /* a newer injector's setting is not a reason to refuse the pod */
        if (!found && warnings != NULL)
            json_array_append_new(warnings, json_sprintf("unknown annotation %.100s ignored (config.remora.dev/: opaque-ports, "
                                                         "skip-inbound-ports, skip-outbound-ports, proxy-cpu-request, "
                                                         "proxy-memory-request, proxy-cpu-limit, proxy-memory-limit, "
                                                         "proxy-log-level, native-sidecar)",
                                                         k));
    }
    if ((v = annotation(annotations, ANNOTATION_PREFIX "native-sidecar")) != NULL) {
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
            say(why, whysz, "annotation " ANNOTATION_PREFIX "native-sidecar must be \"true\" or \"false\", got '%.64s'", v);
            return -1;
        }
        s->native_sidecar = v[0] == 't';
    }
    if ((v = annotation(annotations, ANNOTATION_PREFIX "proxy-log-level")) != NULL) {
        if (!valid_log_level(v)) {
            say(why, whysz, "annotation " ANNOTATION_PREFIX "proxy-log-level must be error, warn, info or debug, got '%.64s'", v);
            return -1;
        }
        s->log_level = v;
    }
    static const struct {
        const char *annotation;
        size_t offset;
        size_t cfg_offset;
    } lists[] = {{ANNOTATION_PREFIX "opaque-ports", offsetof(settings_t, opaque_ports), offsetof(rm_inject_config_t, opaque_ports)},
                 {ANNOTATION_PREFIX "skip-inbound-ports", offsetof(settings_t, skip_inbound_ports),
                  offsetof(rm_inject_config_t, skip_inbound_ports)},
                 {ANNOTATION_PREFIX "skip-outbound-ports", offsetof(settings_t, skip_outbound_ports),
                  offsetof(rm_inject_config_t, skip_outbound_ports)}};
    for (size_t i = 0; i != sizeof(lists) / sizeof(lists[0]); ++i) {
        char **dst = (char **)((char *)s + lists[i].offset);
        const char *dflt = *(char *const *)((const char *)cfg + lists[i].cfg_offset);
        if ((v = annotation(annotations, lists[i].annotation)) == NULL) {
            *dst = rm_strdup(dflt);
            continue;
        }
        char inner[300];
        if ((*dst = normalize_ports(v, inner, sizeof(inner))) == NULL) {
            say(why, whysz, "annotation %s: %s", lists[i].annotation, inner);
            return -1;
        }
    }
    static const struct {
        const char *annotation, *section, *name;
    } res[] = {{ANNOTATION_PREFIX "proxy-cpu-request", "requests", "cpu"},
               {ANNOTATION_PREFIX "proxy-memory-request", "requests", "memory"},
               {ANNOTATION_PREFIX "proxy-cpu-limit", "limits", "cpu"},
               {ANNOTATION_PREFIX "proxy-memory-limit", "limits", "memory"}};
    for (size_t i = 0; i != sizeof(res) / sizeof(res[0]); ++i)
        if ((v = annotation(annotations, res[i].annotation)) != NULL &&
            set_resource(s->resources, res[i].section, res[i].name, v, res[i].annotation, why, whysz) != 0)
            return -1;
    return 0;
}

static json_t *
env_value(const char *name, const char *value)
{
    return json_pack("{s:s,s:s}", "name", name, "value", value);
}

static json_t *
env_field(const char *name, const char *field)
{
    return json_pack("{s:s,s:{s:{s:s}}}", "name", name, "valueFrom", "fieldRef", "fieldPath", field);
}

static json_t *
http_probe(const char *path, int period_s, int failure_threshold)
{
    return json_pack("{s:{s:s,s:i,s:s},s:i,s:i,s:i}", "httpGet", "path", path, "port", RM_INJECT_HEALTH_PORT, "scheme", "HTTP",
                     "periodSeconds", period_s, "failureThreshold", failure_threshold, "timeoutSeconds", 1);
}

/*
 * The port number of an httpGet/grpc probe: an integer, a decimal string, or the name of one of the
 * container's ports. 0 when it cannot be resolved.
 */
static int
probe_port(const json_t *container, const json_t *port)
{
    if (json_is_integer(port))
        return json_integer_value(port) > 0 && json_integer_value(port) <= 65535 ? (int)json_integer_value(port) : 0;
    if (!json_is_string(port))
        return 0;
    const char *s = json_string_value(port);
    if (s[0] >= '0' && s[0] <= '9') {
        char *end;
        long v = strtol(s, &end, 10);
        return *end == '\0' && v > 0 && v <= 65535 ? (int)v : 0;
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(container, "ports"), i, p)
    {
        const char *n = json_string_value(json_object_get(p, "name"));
        json_t *cp = json_object_get(p, "containerPort");
        if (n != NULL && strcmp(n, s) == 0 && json_is_integer(cp))
            return json_integer_value(cp) > 0 && json_integer_value(cp) <= 65535 ? (int)json_integer_value(cp) : 0;
    }
    return 0;
}

/*
 * What the agent performs for a rewritten probe (REMORA_APP_PROBES), or NULL with a warning when
 * the probe stays as it is (tcpSocket and exec probes never reach the agent: see docs/injection.md).
 */
static json_t *
app_probe(const json_t *container, const char *cname, const char *field, const json_t *probe, json_t *warnings)
{
    json_t *http = json_object_get(probe, "httpGet"), *grpc = json_object_get(probe, "grpc"), *entry = NULL;
    if (json_is_object(http)) {
        const char *host = json_string_value(json_object_get(http, "host"));
        int port = probe_port(container, json_object_get(http, "port"));
        if (host != NULL && host[0] != '\0' && strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0) {
            if (warnings != NULL)
                json_array_append_new(
                    warnings, json_sprintf("container %s: %s probes host %s, not the pod: left as it is", cname, field, host));
            return NULL;
        }
        if (port == 0) {
            if (warnings != NULL)
                json_array_append_new(
                    warnings, json_sprintf("container %s: %s: its port does not resolve to a number: left as it is", cname, field));
            return NULL;
        }
        const char *path = json_string_value(json_object_get(http, "path"));
        const char *scheme = json_string_value(json_object_get(http, "scheme"));
        json_t *headers = json_object_get(http, "httpHeaders");
        /* what the agent cannot perform stays with the kubelet (docs/injection.md) */
        const char *unfit = NULL;
        if (scheme != NULL && strcmp(scheme, "HTTP") != 0)
            unfit = "the agent probes the application over plain HTTP only";
        else if (path != NULL && (strlen(path) > MAX_PROBE_PATH_BYTES || strpbrk(path, " \r\n") != NULL))
            unfit = "its path is longer than 2048 bytes or has spaces";
        else if (headers != NULL && (!json_is_array(headers) || json_array_size(headers) > MAX_PROBE_HEADERS))
            unfit = "it has more than 16 httpHeaders";
        if (unfit != NULL) {
            if (warnings != NULL)
                json_array_append_new(warnings, json_sprintf("container %s: %s left as it is: %s", cname, field, unfit));
            return NULL;
        }
        char slash_path[MAX_PROBE_PATH_BYTES + 2];
        snprintf(slash_path, sizeof(slash_path), "%s%s", path != NULL && path[0] == '/' ? "" : "/", path != NULL ? path : "");
        json_t *h = json_pack("{s:s,s:i,s:s}", "path", slash_path, "port", port, "scheme", "HTTP");
        if (json_is_array(headers) && json_array_size(headers) != 0)
            json_object_set(h, "httpHeaders", headers);
        entry = json_pack("{s:o}", "httpGet", h);
    } else if (json_is_object(grpc)) {
        int port = probe_port(container, json_object_get(grpc, "port"));
        if (port == 0) {
            if (warnings != NULL)
                json_array_append_new(
                    warnings, json_sprintf("container %s: %s: gRPC probe without a valid port: left as it is", cname, field));
            return NULL;
        }
        const char *service = json_string_value(json_object_get(grpc, "service"));
        if (service != NULL && strlen(service) > MAX_PROBE_SERVICE_BYTES) {
            if (warnings != NULL)
                json_array_append_new(warnings, json_sprintf("container %s: %s left as it is: its gRPC service name is longer "
                                                             "than 512 bytes",
                                                             cname, field));
            return NULL;
        }
        entry = json_pack("{s:{s:i,s:s}}", "grpc", "port", port, "service", service != NULL ? service : "");
    } else {
        return NULL;
    }
    /* the agent's own timeout: 1..60 s (the kubelet keeps the probe's timeout on the rewritten probe) */
    json_t *t = json_object_get(probe, "timeoutSeconds");
    if (json_is_integer(t)) {
        json_int_t v = json_integer_value(t);
        json_object_set_new(entry, "timeoutSeconds", json_integer(v < 1 ? 1 : v > 60 ? 60 : v));
    }
    return entry;
}

/* The probe the kubelet gets instead: the original's timing, the handler on the agent's health port. */
static json_t *
rewritten_probe(const json_t *original, const char *path)
{
    json_t *p = json_object();
    const char *k;
    json_t *v;
    /* the handler where it was, so that the pod reads as before */
    json_object_foreach((json_t *)original, k, v)
    {
        if (strcmp(k, "httpGet") == 0 || strcmp(k, "grpc") == 0)
            json_object_set_new(p, "httpGet",
                                json_pack("{s:s,s:i,s:s}", "path", path, "port", RM_INJECT_HEALTH_PORT, "scheme", "HTTP"));
        else
            json_object_set_new(p, k, json_deep_copy(v));
    }
    return p;
}

/* The control plane's port in "host:port" (for remora-init --control-port); 0 if there is none. */
static unsigned
control_port(const char *addr)
{
    char *host = NULL;
    uint16_t port = 0;
    const char *e;
    if (rm_split_host_port(addr, &host, &port, &e) != 0)
        port = 0;
    free(host);
    return port;
}

static json_t *
init_container(const rm_inject_config_t *cfg, const settings_t *s)
{
    char buf[32];
    json_t *args = json_array();
    snprintf(buf, sizeof(buf), "%u", (unsigned)cfg->proxy_uid);
    json_array_append_new(args, json_string("--proxy-uid"));
    json_array_append_new(args, json_string(buf));
    unsigned cport = control_port(cfg->control_address);
    if (cport != 0) {
        snprintf(buf, sizeof(buf), "%u", cport);
        json_array_append_new(args, json_string("--control-port"));
        json_array_append_new(args, json_string(buf));
    }
    if (s->skip_inbound_ports[0] != '\0') {
        json_array_append_new(args, json_string("--exclude-inbound-ports"));
        json_array_append_new(args, json_string(s->skip_inbound_ports));
    }
    if (s->skip_outbound_ports[0] != '\0') {
        json_array_append_new(args, json_string("--exclude-outbound-ports"));
        json_array_append_new(args, json_string(s->skip_outbound_ports));
    }
    return json_pack("{s:s,s:s,s:s,s:[s],s:o,s:o,s:{s:i,s:i,s:b,s:b,s:b,s:b,s:{s:[s],s:[s,s]}}}", "name", RM_INJECT_INIT_NAME,
                     "image", cfg->init_image[0] != '\0' ? cfg->init_image : cfg->proxy_image, "imagePullPolicy",
                     cfg->proxy_image_pull_policy, "command", "/usr/local/bin/remora-init", "args", args, "resources",
                     json_deep_copy(s->resources), "securityContext", "runAsUser", 0, "runAsGroup", 0, "runAsNonRoot", 0,
                     "privileged", 0, "allowPrivilegeEscalation", 0, "readOnlyRootFilesystem", 0, "capabilities", "drop", "ALL",
                     "add", "NET_ADMIN", "NET_RAW");
}

static json_t *
proxy_container(const rm_inject_config_t *cfg, const settings_t *s, const json_t *app_probes)
{
    json_t *env = json_array();
    json_array_append_new(env, env_field("POD_NAME", "metadata.name"));
    json_array_append_new(env, env_field("POD_NAMESPACE", "metadata.namespace"));
    json_array_append_new(env, env_field("POD_IP", "status.podIP"));
    json_array_append_new(env, env_field("SERVICE_ACCOUNT", "spec.serviceAccountName"));
    json_array_append_new(env, env_value("REMORA_CONTROL", cfg->control_address));
    json_array_append_new(env, env_value("REMORA_NODE_ID", "$(POD_NAME).$(POD_NAMESPACE)"));
    json_array_append_new(env, env_value("REMORA_NAMESPACE", "$(POD_NAMESPACE)"));
    json_array_append_new(env, env_value("REMORA_TRANSPARENT", "1"));
    json_array_append_new(env, env_value("REMORA_STATE_DIR", STATE_DIR));
    json_array_append_new(env, env_value("REMORA_LOG_LEVEL", s->log_level));
    if (s->opaque_ports[0] != '\0')
        json_array_append_new(env, env_value("REMORA_OPAQUE_PORTS", s->opaque_ports));
    json_array_append_new(env, env_value("REMORA_IDENTITY_TOKEN_FILE", TOKEN_DIR "/token"));
    json_array_append_new(env, env_value("REMORA_TRUST_ANCHOR_FILE", TRUST_DIR "/" TRUST_KEY));
    if (!s->native_sidecar) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%u", (unsigned)cfg->outbound_grace_ms);
        json_array_append_new(env, env_value("REMORA_OUTBOUND_GRACE_MS", buf));
    }
    if (json_object_size(app_probes) != 0) {
        char *probes = json_dumps(app_probes, JSON_COMPACT);
        json_array_append_new(env, env_value("REMORA_APP_PROBES", probes));
        free(probes);
    }
    json_t *c = json_pack("{s:s,s:s,s:s}", "name", RM_INJECT_PROXY_NAME, "image", cfg->proxy_image, "imagePullPolicy",
                          cfg->proxy_image_pull_policy);
    if (s->native_sidecar)
        json_object_set_new(c, "restartPolicy", json_string("Always"));
    json_object_set_new(
        c, "ports",
        json_pack("[{s:s,s:i,s:s}]", "name", "remora-health", "containerPort", RM_INJECT_HEALTH_PORT, "protocol", "TCP"));
    json_object_set_new(c, "env", env);
    json_object_set_new(c, "resources", json_deep_copy(s->resources));
    json_object_set_new(c, "volumeMounts",
                        json_pack("[{s:s,s:s},{s:s,s:s,s:b},{s:s,s:s,s:b}]", "name", VOLUME_STATE, "mountPath", STATE_DIR, "name",
                                  VOLUME_TOKEN, "mountPath", TOKEN_DIR, "readOnly", 1, "name", VOLUME_TRUST, "mountPath", TRUST_DIR,
                                  "readOnly", 1));
    json_object_set_new(c, "securityContext",
                        json_pack("{s:I,s:I,s:b,s:b,s:b,s:b,s:{s:[s]}}", "runAsUser", (json_int_t)cfg->proxy_uid, "runAsGroup",
                                  (json_int_t)cfg->proxy_uid, "runAsNonRoot", 1, "privileged", 0, "allowPrivilegeEscalation", 0,
                                  "readOnlyRootFilesystem", 1, "capabilities", "drop", "ALL"));
    json_object_set_new(c, "startupProbe", http_probe("/ready", 1, 120));
    json_object_set_new(c, "readinessProbe", http_probe("/ready", 2, 3));
    json_object_set_new(c, "livenessProbe", http_probe("/live", 10, 3));
    if (!s->native_sidecar)
        json_object_set_new(c, "lifecycle",
                            json_pack("{s:{s:{s:[s,s]}}}", "postStart", "exec", "command", "/usr/local/bin/remoractl", "await"));
    return c;
}

static json_t *
volumes(void)
{
    return json_pack("[{s:s,s:{}},{s:s,s:{s:[{s:{s:s,s:i,s:s}}]}},{s:s,s:{s:s}}]", "name", VOLUME_STATE, "emptyDir", "name",
                     VOLUME_TOKEN, "projected", "sources", "serviceAccountToken", "audience", TOKEN_AUDIENCE, "expirationSeconds",
                     TOKEN_EXPIRATION_S, "path", "token", "name", VOLUME_TRUST, "configMap", "name", TRUST_CONFIGMAP);
}

/* The pod's metadata, annotations, spec and container lists, each checked for its type. */
typedef struct st_pod_view_t {
    json_t *metadata, *annotations, *spec, *containers, *init_containers, *volumes;
} pod_view_t;

static int
view_pod(const json_t *pod, pod_view_t *v, char *why, size_t whysz)
{
    memset(v, 0, sizeof(*v));
    if (!json_is_object(pod)) {
        say(why, whysz, "the pod is not an object");
        return -1;
    }
    v->metadata = json_object_get(pod, "metadata");
    v->spec = json_object_get(pod, "spec");
    if (v->metadata != NULL && !json_is_object(v->metadata)) {
        say(why, whysz, "metadata is not a mapping");
        return -1;
    }
    v->annotations = json_object_get(v->metadata, "annotations");
    if (v->annotations != NULL && !json_is_object(v->annotations) && !json_is_null(v->annotations)) {
        say(why, whysz, "metadata.annotations is not a mapping");
        return -1;
    }
    if (!json_is_object(v->spec)) {
        say(why, whysz, "the pod has no spec");
        return -1;
    }
    v->containers = json_object_get(v->spec, "containers");
    v->init_containers = json_object_get(v->spec, "initContainers");
    v->volumes = json_object_get(v->spec, "volumes");
    if (!json_is_array(v->containers)) {
        say(why, whysz, "spec.containers is not a list");
        return -1;
    }
    if ((v->init_containers != NULL && !json_is_array(v->init_containers) && !json_is_null(v->init_containers)) ||
        (v->volumes != NULL && !json_is_array(v->volumes) && !json_is_null(v->volumes))) {
        say(why, whysz, "spec.initContainers and spec.volumes must be lists");
        return -1;
    }
    if (json_array_size(v->containers) > RM_INJECT_MAX_CONTAINERS ||
        json_array_size(v->init_containers) > RM_INJECT_MAX_CONTAINERS) {
        say(why, whysz, "more than %u containers", RM_INJECT_MAX_CONTAINERS);
        return -1;
    }
    return 0;
}

/* Adds `key: value` to the annotations, creating metadata or annotations when absent. */
static void
add_annotations(json_t *patch, const pod_view_t *v, json_t *entries)
{
    if (v->metadata == NULL) {
        add_op(patch, "add", "/metadata", json_pack("{s:O}", "annotations", entries));
    } else if (!json_is_object(v->annotations)) {
        add_op(patch, "add", "/metadata/annotations", json_incref(entries));
    } else {
        const char *k;
        json_t *val;
        json_object_foreach(entries, k, val)
        {
            char *path = rm_json_pointer_join("/metadata/annotations", k);
            add_op(patch, "add", path, json_incref(val));
            free(path);
        }
    }
    json_decref(entries);
}

rm_inject_result_t
rm_inject_pod(const rm_inject_config_t *cfg, const json_t *pod, json_t **patch, json_t *warnings, char *reason, size_t reasonsz)
{
    return rm_inject_pod_why(cfg, pod, patch, warnings, reason, reasonsz, NULL);
}

/* RM_INJECT_SKIP with its code */
static rm_inject_result_t
skip_as(rm_inject_skip_t *skip, rm_inject_skip_t code)
{
    if (skip != NULL)
        *skip = code;
    return RM_INJECT_SKIP;
}

rm_inject_result_t
rm_inject_pod_why(const rm_inject_config_t *cfg, const json_t *pod, json_t **patch, json_t *warnings, char *reason, size_t reasonsz,
                  rm_inject_skip_t *skip)
{
    pod_view_t v;
    *patch = NULL;
    if (skip != NULL)
        *skip = RM_INJECT_SKIP_NONE;
    if (view_pod(pod, &v, reason, reasonsz) != 0)
        return RM_INJECT_INVALID;
    const char *a = annotation(v.annotations, RM_INJECT_ANNOTATION_INJECT);
    if (a != NULL && strcmp(a, "disabled") == 0) {
        say(reason, reasonsz, "pod annotation " RM_INJECT_ANNOTATION_INJECT ": disabled");
        return skip_as(skip, RM_INJECT_SKIP_DISABLED);
    }
    if (a != NULL && strcmp(a, "enabled") != 0) {
        say(reason, reasonsz, "pod annotation " RM_INJECT_ANNOTATION_INJECT " must be enabled or disabled, got '%.64s'", a);
        return RM_INJECT_INVALID;
    }
    if ((a = annotation(v.annotations, RM_INJECT_ANNOTATION_INJECTED)) != NULL) {
        say(reason, reasonsz, "already injected (" RM_INJECT_ANNOTATION_INJECTED ": %.64s)", a);
        return skip_as(skip, RM_INJECT_SKIP_ALREADY_INJECTED);
    }
    if (has_container_named(v.containers, RM_INJECT_PROXY_NAME) || has_container_named(v.init_containers, RM_INJECT_PROXY_NAME)) {
        say(reason, reasonsz, "already injected (it has a container named " RM_INJECT_PROXY_NAME ")");
        return skip_as(skip, RM_INJECT_SKIP_ALREADY_INJECTED);
    }
    if (json_is_true(json_object_get(v.spec, "hostNetwork"))) {
        say(reason, reasonsz, "hostNetwork pod: its traffic is the node's, which the sidecar must not redirect");
        return skip_as(skip, RM_INJECT_SKIP_HOST_NETWORK);
    }
    if (has_container_named(v.containers, RM_INJECT_INIT_NAME) || has_container_named(v.init_containers, RM_INJECT_INIT_NAME)) {
        say(reason, reasonsz, "the pod has a container named " RM_INJECT_INIT_NAME " already (the name is reserved for injection)");
        return RM_INJECT_INVALID;
    }
    for (size_t i = 0; volume_names[i] != NULL; ++i) {
        if (has_container_named(v.volumes, volume_names[i])) {
            say(reason, reasonsz, "the pod has a volume named %s already (the name is reserved for injection)", volume_names[i]);
            return RM_INJECT_INVALID;
        }
    }
    settings_t s;
    if (settings_init(&s, cfg, v.annotations, warnings, reason, reasonsz) != 0) {
        settings_dispose(&s);
        return RM_INJECT_INVALID;
    }

    json_t *ops = json_array(), *app_probes = json_object(), *originals = json_object();
    /* the application's HTTP and gRPC probes, through the agent's health port */
    size_t i;
    json_t *c;
    json_array_foreach(v.containers, i, c)
    {
        const char *cname = json_string_value(json_object_get(c, "name"));
        if (cname == NULL)
            continue;
        json_t *kept = NULL;
        for (size_t k = 0; k != NUM_PROBE_KINDS; ++k) {
            json_t *probe = json_object_get(c, probe_kinds[k].field);
            if (!json_is_object(probe))
                continue;
            json_t *entry = app_probe(c, cname, probe_kinds[k].field, probe, warnings);
            if (entry == NULL)
                continue;
            char path[400];
            snprintf(path, sizeof(path), "/app-health/%s/%s", cname, probe_kinds[k].segment);
            json_object_set_new(app_probes, path, entry);
            if (kept == NULL) {
                kept = json_object();
                json_object_set_new(originals, cname, kept);
            }
            json_object_set(kept, probe_kinds[k].field, probe);
            add_opf(ops, "replace", rewritten_probe(probe, path), "/spec/containers/%zu/%s", i, probe_kinds[k].field);
        }
    }
    json_t *entries = json_pack("{s:s}", RM_INJECT_ANNOTATION_INJECTED, cfg->version);
    if (json_object_size(originals) != 0) {
        char *dumped = json_dumps(originals, JSON_COMPACT);
        json_object_set_new(entries, RM_INJECT_ANNOTATION_PROBES, json_string(dumped));
        free(dumped);
    }
    /* the probe replacements above use the original indices: the annotations go first, containers last */
    json_t *probe_ops = ops;
    ops = json_array();
    add_annotations(ops, &v, entries);
    json_array_extend(ops, probe_ops);
    json_decref(probe_ops);

    if (!json_is_array(v.volumes)) {
        add_op(ops, "add", "/spec/volumes", volumes());
    } else {
        json_t *vols = volumes(), *vol;
        json_array_foreach(vols, i, vol)
        {
            add_op(ops, "add", "/spec/volumes/-", json_incref(vol));
        }
        json_decref(vols);
    }
    json_t *init = json_array();
    json_array_append_new(init, init_container(cfg, &s));
    json_t *proxy = proxy_container(cfg, &s, app_probes);
    if (s.native_sidecar)
        json_array_append(init, proxy);
    if (!json_is_array(v.init_containers)) {
        add_op(ops, "add", "/spec/initContainers", json_incref(init));
    } else {
        json_t *ic;
        json_array_foreach(init, i, ic)
        {
            add_opf(ops, "add", json_incref(ic), "/spec/initContainers/%zu", i);
        }
    }
    if (!s.native_sidecar)
        add_op(ops, "add", "/spec/containers/0", json_incref(proxy));
    json_decref(init);
    json_decref(proxy);
    json_decref(app_probes);
    json_decref(originals);
    settings_dispose(&s);
    *patch = ops;
    return RM_INJECT_PATCH;
}

/* Removes, last first so that indices stay valid, the items of `list` named in `names`. Returns how many remain. */
static size_t
remove_named(json_t *ops, const json_t *list, const char *path, const char *const *names)
{
    size_t remain = 0;
    for (size_t i = json_array_size(list); i-- > 0;) {
        const char *n = json_string_value(json_object_get(json_array_get(list, i), "name"));
        int ours = 0;
        for (size_t k = 0; n != NULL && names[k] != NULL; ++k)
            ours |= strcmp(n, names[k]) == 0;
        if (ours)
            add_opf(ops, "remove", NULL, "%s/%zu", path, i);
        else
            ++remain;
    }
    return remain;
}

rm_inject_result_t
rm_uninject_pod(const json_t *pod, json_t **patch, char *reason, size_t reasonsz)
{
    pod_view_t v;
    *patch = NULL;
    if (view_pod(pod, &v, reason, reasonsz) != 0)
        return RM_INJECT_INVALID;
    int annotated = annotation(v.annotations, RM_INJECT_ANNOTATION_INJECTED) != NULL;
    if (!annotated && !has_container_named(v.containers, RM_INJECT_PROXY_NAME) &&
        !has_container_named(v.init_containers, RM_INJECT_PROXY_NAME)) {
        say(reason, reasonsz, "not injected");
        return RM_INJECT_SKIP;
    }
    json_t *ops = json_array();
    /* the original probes first, while the containers' indices are still those of the pod */
    const char *orig = annotation(v.annotations, RM_INJECT_ANNOTATION_PROBES);
    json_t *originals = orig != NULL ? json_loads(orig, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (orig != NULL && !json_is_object(originals)) {
        say(reason, reasonsz, "annotation " RM_INJECT_ANNOTATION_PROBES " is not a JSON object: cannot restore the probes");
        json_decref(originals);
        json_decref(ops);
        return RM_INJECT_INVALID;
    }
    size_t i;
    json_t *c;
    json_array_foreach(v.containers, i, c)
    {
        const char *cname = json_string_value(json_object_get(c, "name"));
        json_t *kept = cname != NULL ? json_object_get(originals, cname) : NULL;
        for (size_t k = 0; json_is_object(kept) && k != NUM_PROBE_KINDS; ++k) {
            json_t *p = json_object_get(kept, probe_kinds[k].field);
            if (p != NULL)
                add_opf(ops, json_object_get(c, probe_kinds[k].field) != NULL ? "replace" : "add", json_incref(p),
                        "/spec/containers/%zu/%s", i, probe_kinds[k].field);
        }
    }
    json_decref(originals);
    static const char *const proxy_names[] = {RM_INJECT_PROXY_NAME, NULL};
    static const char *const init_names[] = {RM_INJECT_PROXY_NAME, RM_INJECT_INIT_NAME, NULL};
    remove_named(ops, v.containers, "/spec/containers", proxy_names);
    size_t before = json_array_size(ops);
    if (json_is_array(v.init_containers) && remove_named(ops, v.init_containers, "/spec/initContainers", init_names) == 0 &&
        json_array_size(ops) != before) {
        /* injection made the list: the pod had none */
        while (json_array_size(ops) > before)
            json_array_remove(ops, json_array_size(ops) - 1);
        add_op(ops, "remove", "/spec/initContainers", NULL);
    }
    before = json_array_size(ops);
    if (json_is_array(v.volumes) && remove_named(ops, v.volumes, "/spec/volumes", volume_names) == 0 &&
        json_array_size(ops) != before) {
        while (json_array_size(ops) > before)
            json_array_remove(ops, json_array_size(ops) - 1);
        add_op(ops, "remove", "/spec/volumes", NULL);
    }
    if (json_is_object(v.annotations)) {
        size_t ours = 0;
        static const char *const keys[] = {RM_INJECT_ANNOTATION_INJECTED, RM_INJECT_ANNOTATION_PROBES};
        for (size_t k = 0; k != 2; ++k)
            ours += json_object_get(v.annotations, keys[k]) != NULL;
        if (ours != 0 && ours == json_object_size(v.annotations)) {
            /* injection made the annotations (or the metadata): the pod had none */
            if (json_object_size(v.metadata) == 1)
                add_op(ops, "remove", "/metadata", NULL);
            else
                add_op(ops, "remove", "/metadata/annotations", NULL);
        } else {
            for (size_t k = 0; k != 2; ++k) {
                if (json_object_get(v.annotations, keys[k]) == NULL)
                    continue;
                char *path = rm_json_pointer_join("/metadata/annotations", keys[k]);
                add_op(ops, "remove", path, NULL);
                free(path);
            }
        }
    }
    *patch = ops;
    return RM_INJECT_PATCH;
}
