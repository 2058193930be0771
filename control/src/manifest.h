/*
 * Kubernetes manifests as jansson trees (docs/injection.md): a YAML or JSON stream in, the same
 * format out. YAML is read and written with libyaml, JSON with jansson; nothing here parses text
 * by hand.
 *
 * YAML scalars are typed as Kubernetes' YAML reader (go-yaml v2, YAML 1.1) types them: a plain
 * scalar is null ("", ~, null), a boolean (true/false/yes/no/on/off/y/n in their usual cases), an
 * integer (decimal, 0x hex, 0o octal), a float (1.5, 1e3, .inf, .nan) or else a string; quoted
 * scalars are always strings. Writing, a string that would read back as something else is
 * double-quoted, so a document survives a round trip. Aliases are expanded (libyaml's loader);
 * comments are not kept.
 *
 * Bounds: RM_MANIFEST_MAX_BYTES of input, RM_MANIFEST_MAX_DOCS documents, RM_MANIFEST_MAX_DEPTH
 * levels of nesting. Pure functions; any thread. Allocation failures abort.
 */
#ifndef remora_control__manifest_h
#define remora_control__manifest_h

#include <stddef.h>
#include <jansson.h>
#include <yaml.h>

#define RM_MANIFEST_MAX_BYTES (64u << 20)
#define RM_MANIFEST_MAX_DOCS 10000
#define RM_MANIFEST_MAX_DEPTH 100

typedef enum en_rm_manifest_format_t {
    RM_MANIFEST_YAML = 0,
    RM_MANIFEST_JSON = 1,
} rm_manifest_format_t;

typedef struct st_rm_manifest_t {
    /** the documents in order (owned; empty YAML documents are left out) */
    json_t **docs;
    /** 1-based line where each document starts (for messages) */
    unsigned *lines;
    size_t num_docs;
    /** JSON when the first non-blank character is '{' or '[', else YAML */
    rm_manifest_format_t format;
} rm_manifest_t;

/**
 * Parses `len` bytes of `text` (a stream of YAML documents separated by "---", or of JSON values).
 * `name` names the input in messages ("FILE:LINE: ..."). Returns 0 and fills `out` (free it with
 * rm_manifest_dispose), or -1 with the message in `err`.
 */
int rm_manifest_parse(const char *text, size_t len, const char *name, rm_manifest_t *out, char *err, size_t errsz);
void rm_manifest_dispose(rm_manifest_t *m);

/**
 * Writes documents as a YAML stream ("---" between documents; block style, two-space indent,
 * keys in the trees' order) or as JSON (each value indented, one after another). Returns a
 * malloc'ed NUL-terminated string (the caller frees it).
 */
char *rm_manifest_emit(json_t *const *docs, size_t num_docs, rm_manifest_format_t format);

/**
 * Converts one node of a loaded libyaml document to a jansson value with the typing above
 * (new reference). Returns NULL with "NAME:LINE: ..." in `err` when nesting is too deep.
 */
json_t *rm_manifest_node_to_json(yaml_document_t *doc, yaml_node_t *node, const char *name, char *err, size_t errsz);

#endif
