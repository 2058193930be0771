#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/yamlutil.h"
#include "manifest.h"

/* aliases may reference a node many times: what a document may expand to, in values */
#define MAX_VALUES_PER_DOC (4u << 20)

typedef struct st_conv_t {
    yaml_document_t *doc;
    const char *name;
    char *err;
    size_t errsz;
    size_t values;
} conv_t;

static int
is_one_of(const char *s, const char *const *list)
{
    for (; *list != NULL; ++list)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

static const char *const null_words[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", NULL};
static const char *const false_words[] = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", NULL};

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int
looks_float(const char *s)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        ++p;
    size_t lead = strspn(p, "0123456789");
    p += lead;
    if (*p == '.') {
        ++p;
        size_t frac = strspn(p, "0123456789");
        if (lead == 0 && frac == 0)
            return 0;
        p += frac;
    } else if (lead == 0) {
        return 0;
    }
    if (*p == 'e' || *p == 'E') {
        ++p;
        if (*p == '-' || *p == '+')
            ++p;
        size_t exp = strspn(p, "0123456789");
        if (exp == 0)
            return 0;
        p += exp;
    }
    return *p == '\0';
}

/* An integer as Go's strconv.ParseInt(s, 0, 64) reads it (go-yaml v2): 0 when it is not one. */
static int
parse_int(const char *s, long long *out)
{
    const char *p = s;
    int neg = 0;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16, p += 2;
    } else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O')) {
        base = 8, p += 2;
    } else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
        base = 2, p += 2;
    } else if (p[0] == '0' && p[1] != '\0') {
        base = 8, p += 1;
    }
    if (*p == '\0' || *p == '-' || *p == '+' || *p == ' ')
        return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, base);
    if (*end != '\0' || errno != 0 || v > (neg ? 9223372036854775808ull : 9223372036854775807ull))
        return 0;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
}

/* A plain scalar, typed as Kubernetes' YAML reader types it. */
static json_t *
plain_scalar(const char *s, size_t len)
{
    if (strlen(s) != len) /* an escaped NUL cannot be in a plain scalar, but be sure */
        return json_stringn(s, len);
    if (is_one_of(s, null_words))
        return json_null();
    if (is_one_of(s, true_words))
        return json_true();
    if (is_one_of(s, false_words))
        return json_false();
    long long i;
    if (parse_int(s, &i))
        return json_integer(i);
    if (looks_float(s)) {
        double d = strtod(s, NULL);
        json_t *r = json_real(d);
        if (r != NULL)
            return r;
    }
    return json_stringn(s, len);
}

/* 1 when writing `s` as a plain scalar would read back as something other than this string. */
static int
string_needs_quotes(const char *s, size_t len)
{
    if (strlen(s) != len)
        return 1;
    json_t *v = plain_scalar(s, len);
    int r = !json_is_string(v);
    json_decref(v);
    /* the YAML 1.1 specials jansson cannot hold as numbers */
    if (!r) {
        const char *p = s[0] == '-' || s[0] == '+' ? s + 1 : s;
        static const char *const specials[] = {".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN", NULL};
        r = is_one_of(p, specials);
    }
    return r;
}

static json_t *
convert(conv_t *c, yaml_node_t *node, unsigned depth)
{
    if (depth > RM_MANIFEST_MAX_DEPTH) {
        snprintf(c->err, c->errsz, "%s:%u: nested more than %u levels deep", c->name, rm_yaml_line(node), RM_MANIFEST_MAX_DEPTH);
        return NULL;
    }
    if (++c->values > MAX_VALUES_PER_DOC) {
        snprintf(c->err, c->errsz, "%s:%u: the document expands to more than %u values (aliases?)", c->name, rm_yaml_line(node),
                 MAX_VALUES_PER_DOC);
        return NULL;
    }
    /* an escaped NUL ("\0" in a double-quoted scalar): refused, as the JSON reader refuses \u0000, so that what is
     * read can always be written back (found by tests/fuzz/fuzz_manifest.c) */
    if (node->type == YAML_SCALAR_NODE && memchr(node->data.scalar.value, '\0', node->data.scalar.length) != NULL) {
        snprintf(c->err, c->errsz, "%s:%u: a string holds a NUL character", c->name, rm_yaml_line(node));
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)node->data.scalar.value;
        size_t len = node->data.scalar.length;
        const char *tag = (const char *)node->tag;
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (tag == NULL || strcmp(tag, YAML_DEFAULT_SCALAR_TAG) == 0 || strcmp(tag, "!") == 0))
            return plain_scalar(s, len);
        if (tag != NULL && strcmp(tag, YAML_INT_TAG) == 0) {
            long long i;
            if (parse_int(s, &i))
                return json_integer(i);
        }
        return json_stringn(s, len);
    }
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; ++it) {
            json_t *v = convert(c, yaml_document_get_node(c->doc, *it), depth + 1);
            if (v == NULL) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; ++p) {
            yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
            if (k->type != YAML_SCALAR_NODE) {
                snprintf(c->err, c->errsz, "%s:%u: a mapping key must be a scalar, got %s", c->name, rm_yaml_line(k),
                         rm_yaml_type_name(k));
                json_decref(obj);
                return NULL;
            }
            if (memchr(k->data.scalar.value, '\0', k->data.scalar.length) != NULL) {
                snprintf(c->err, c->errsz, "%s:%u: a key holds a NUL character", c->name, rm_yaml_line(k));
                json_decref(obj);
                return NULL;
            }
            char *key = rm_strndup((const char *)k->data.scalar.value, k->data.scalar.length);
            if (json_object_get(obj, key) != NULL) {
                snprintf(c->err, c->errsz, "%s:%u: duplicate key '%.100s'", c->name, rm_yaml_line(k), key);
                free(key);
                json_decref(obj);
                return NULL;
            }
            json_t *v = convert(c, yaml_document_get_node(c->doc, p->value), depth + 1);
            if (v == NULL) {
                free(key);
                json_decref(obj);
                return NULL;
            }
            json_object_set_new(obj, key, v);
            free(key);
        }
        return obj;
    }
    default:
        return json_null();
    }
}

json_t *
rm_manifest_node_to_json(yaml_document_t *doc, yaml_node_t *node, const char *name, char *err, size_t errsz)
{
    conv_t c = {.doc = doc, .name = name, .err = err, .errsz = errsz};
    return convert(&c, node, 0);
}

static void
push_doc(rm_manifest_t *m, json_t *doc, unsigned line)
{
    m->docs = rm_realloc(m->docs, (m->num_docs + 1) * sizeof(*m->docs));
    m->lines = rm_realloc(m->lines, (m->num_docs + 1) * sizeof(*m->lines));
    m->docs[m->num_docs] = doc;
    m->lines[m->num_docs] = line;
    ++m->num_docs;
}

static int
parse_json(const char *text, size_t len, const char *name, rm_manifest_t *m, char *err, size_t errsz)
{
    size_t off = 0;
    unsigned line = 1;
    for (;;) {
        while (off < len && (text[off] == ' ' || text[off] == '\t' || text[off] == '\r' || text[off] == '\n'))
            line += text[off++] == '\n';
        if (off == len)
            return 0;
        if (m->num_docs == RM_MANIFEST_MAX_DOCS) {
            snprintf(err, errsz, "%s:%u: more than %u documents", name, line, RM_MANIFEST_MAX_DOCS);
            return -1;
        }
        json_error_t jerr;
        json_t *v = json_loadb(text + off, len - off, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (v == NULL) {
            snprintf(err, errsz, "%s:%d: %s", name, jerr.line > 0 ? (int)line - 1 + jerr.line : (int)line, jerr.text);
            return -1;
        }
        push_doc(m, v, line);
        for (size_t i = 0; i < (size_t)jerr.position && off + i < len; ++i)
            line += text[off + i] == '\n';
        off += (size_t)jerr.position;
    }
}

static int
parse_yaml(const char *text, size_t len, const char *name, rm_manifest_t *m, char *err, size_t errsz)
{
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            snprintf(err, errsz, "%s:%zu: %s%s%s", name, parser.problem_mark.line + 1, parser.problem ? parser.problem : "bad YAML",
                     parser.context ? " " : "", parser.context ? parser.context : "");
            rc = -1;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root == NULL) { /* the end of the stream */
            yaml_document_delete(&doc);
            break;
        }
        int empty = root->type == YAML_SCALAR_NODE && rm_yaml_is_null(root);
        if (!empty) {
            if (m->num_docs == RM_MANIFEST_MAX_DOCS) {
                snprintf(err, errsz, "%s:%u: more than %u documents", name, rm_yaml_line(root), RM_MANIFEST_MAX_DOCS);
                yaml_document_delete(&doc);
                rc = -1;
                break;
            }
            json_t *v = rm_manifest_node_to_json(&doc, root, name, err, errsz);
            if (v == NULL) {
                yaml_document_delete(&doc);
                rc = -1;
                break;
            }
            push_doc(m, v, rm_yaml_line(root));
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int
rm_manifest_parse(const char *text, size_t len, const char *name, rm_manifest_t *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    if (len > RM_MANIFEST_MAX_BYTES) {
        snprintf(err, errsz, "%s: larger than %u bytes", name, RM_MANIFEST_MAX_BYTES);
        return -1;
    }
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        ++i;
    out->format = i < len && (text[i] == '{' || text[i] == '[') ? RM_MANIFEST_JSON : RM_MANIFEST_YAML;
    int rc = out->format == RM_MANIFEST_JSON ? parse_json(text, len, name, out, err, errsz)
                                             : parse_yaml(text, len, name, out, err, errsz);
    if (rc != 0)
        rm_manifest_dispose(out);
    return rc;
}

void
rm_manifest_dispose(rm_manifest_t *m)
{
    for (size_t i = 0; i != m->num_docs; ++i)
        json_decref(m->docs[i]);
    free(m->docs);
    free(m->lines);
    memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------------------------------- output */

typedef struct st_outbuf_t {
    char *data;
    size_t len, cap;
} outbuf_t;

static void
out_append(outbuf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->data = rm_realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static int
write_handler(void *data, unsigned char *buffer, size_t size)
{
    out_append(data, buffer, size);
    return 1;
}

static void
emit(yaml_emitter_t *e, yaml_event_t *ev)
{
    /* events built from valid trees: a failure is a broken invariant (or OOM) */
    if (!yaml_emitter_emit(e, ev))
        rm_fatal("YAML emitter: %s", e->problem ? e->problem : "failed");
}

static void
emit_scalar(yaml_emitter_t *e, const char *s, size_t len, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1, style))
        rm_fatal("out of memory");
    emit(e, &ev);
}

static void
emit_string(yaml_emitter_t *e, const char *s, size_t len)
{
    yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
    if (string_needs_quotes(s, len))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (memchr(s, '\n', len) != NULL)
        style = YAML_LITERAL_SCALAR_STYLE; /* libyaml falls back to quotes where a block scalar cannot be */
    emit_scalar(e, s, len, style);
}

static void
emit_value(yaml_emitter_t *e, json_t *v)
{
    yaml_event_t ev;
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                 json_object_size(v) == 0 ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE))
            rm_fatal("out of memory");
        emit(e, &ev);
        const char *key;
        json_t *val;
        json_object_foreach(v, key, val)
        {
            emit_string(e, key, strlen(key));
            emit_value(e, val);
        }
        yaml_mapping_end_event_initialize(&ev);
        emit(e, &ev);
        break;
    }
    case JSON_ARRAY: {
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                  json_array_size(v) == 0 ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE))
            rm_fatal("out of memory");
        emit(e, &ev);
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
        {
            emit_value(e, val);
        }
        yaml_sequence_end_event_initialize(&ev);
        emit(e, &ev);
        break;
    }
    case JSON_STRING:
        emit_string(e, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
        break;
    case JSON_REAL: {
        /* jansson's own formatting (shortest that reads back, always with a '.' or an exponent) */
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        emit_scalar(e, s, strlen(s), YAML_PLAIN_SCALAR_STYLE);
        free(s);
        break;
    }
    case JSON_TRUE:
        emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE);
        break;
    case JSON_FALSE:
        emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
        break;
    case JSON_NULL:
        emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
        break;
    }
}

char *
rm_manifest_emit(json_t *const *docs, size_t num_docs, rm_manifest_format_t format)
{
    outbuf_t b = {NULL, 0, 0};
    out_append(&b, "", 0);
    if (format == RM_MANIFEST_JSON) {
        for (size_t i = 0; i != num_docs; ++i) {
            char *s = json_dumps(docs[i], JSON_INDENT(2) | JSON_ENCODE_ANY);
            if (s == NULL)
                rm_fatal("out of memory");
            out_append(&b, s, strlen(s));
            out_append(&b, "\n", 1);
            free(s);
        }
        return b.data;
    }
    yaml_emitter_t e;
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&e))
        rm_fatal("out of memory");
    yaml_emitter_set_output(&e, write_handler, &b);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    emit(&e, &ev);
    for (size_t i = 0; i != num_docs; ++i) {
        /* an empty collection is written in flow style, "{}" or "[]": with an implicit start, a stream beginning with
         * it would be read back as JSON (found by tests/fuzz/fuzz_manifest.c) */
        int empty = (json_is_object(docs[i]) && json_object_size(docs[i]) == 0) ||
                    (json_is_array(docs[i]) && json_array_size(docs[i]) == 0);
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, i == 0 && !empty);
        emit(&e, &ev);
        emit_value(&e, docs[i]);
        yaml_document_end_event_initialize(&ev, 1);
        emit(&e, &ev);
    }
    yaml_stream_end_event_initialize(&ev);
    emit(&e, &ev);
    yaml_emitter_delete(&e);
    return b.data;
}
