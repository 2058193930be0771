/*
 * Resources -> documents: the inverse of document.c, for `remoractl get -o yaml|json`.
 *
 * A resource is first turned into a small tree (maps keep insertion order), which is then written as
 * YAML (block style, the shape `remoractl apply` reads back to identical content) or JSON. Pure
 * functions, any thread; abort only on OOM.
 */
#ifndef remora_control__render_h
#define remora_control__render_h

#include <stdint.h>
#include "remora/rpc.h"
#include "resource.h"

typedef enum en_rm_node_type_t {
    RM_NODE_MAP,
    RM_NODE_LIST,
    RM_NODE_STRING,
    RM_NODE_NUMBER,
    RM_NODE_BOOL,
} rm_node_type_t;

typedef struct st_rm_node_t rm_node_t;
struct st_rm_node_t {
    rm_node_type_t type;
    /** The key when the node is a value in a map. */
    char *key;
    char *str;
    int64_t num;
    rm_node_t **items;
    size_t size;
};

rm_node_t *rm_node_map(void);
rm_node_t *rm_node_list(void);
rm_node_t *rm_node_string(const char *s);
rm_node_t *rm_node_number(int64_t v);
/** A number with a fraction (at most 4 decimals are kept); a whole value is an rm_node_number. */
rm_node_t *rm_node_decimal(double v);
rm_node_t *rm_node_bool(int v);
/** Appends `child` (now owned by `parent`); `key` is required for maps and ignored for lists. Returns child. */
rm_node_t *rm_node_add(rm_node_t *parent, const char *key, rm_node_t *child);
/** Frees the node and its children. */
void rm_node_free(rm_node_t *node);

/** The document of a resource message (Remora__V1__Service *, ...): apiVersion, kind, metadata, spec. */
rm_node_t *rm_render_resource(rm_kind_t kind, const ProtobufCMessage *msg);

/** Appends the node as a YAML block (a document body, no "---") ending in a newline. */
void rm_render_yaml(const rm_node_t *node, rm_rpc_buf_t *out);
/** Appends the node as indented JSON followed by a newline. */
void rm_render_json(const rm_node_t *node, rm_rpc_buf_t *out);

/** Formats milliseconds in the Gateway API duration format ("1m30s", "250ms", "0s"). */
const char *rm_render_duration(uint64_t ms, char *buf, size_t bufsz);

#endif
