/*
 * Policy documents: YAML text in the Kubernetes resource shape (apiVersion remora.dev/v1, kind,
 * metadata, spec) -> validated resources, or errors that name the file and line.
 *
 * An apply is one batch: every document of every file is parsed, each valid document becomes one
 * resource, each invalid one produces (at least) one error, and then the batch is checked as a
 * whole (the same resource defined twice, references to resources that neither the batch nor the
 * store holds). The caller accepts the batch only when it has no error at all.
 *
 * YAML trees never leave document.c. Not thread-safe per batch; no global state. Aborts only on OOM.
 */
#ifndef remora_control__document_h
#define remora_control__document_h

#include <stddef.h>
#include "resource.h"

/* Bounds on what one apply may carry. */
#define RM_DOCUMENT_MAX_BYTES (8 * 1024 * 1024)
#define RM_DOCUMENT_MAX_NODES 1000000
/* EgressPolicy: at most this many hosts per policy */
#define RM_EGRESS_MAX_HOSTS 64

/**
 * A reference from one resource to another (a route to a Service or a FaultInjection, a
 * BackendTrafficPolicy to a Service), checked once the whole batch is parsed.
 */
typedef struct st_rm_ref_t {
    /** the kind of the resource referred to */
    rm_kind_t kind;
    char *ns, *name;
    char *file;
    unsigned line;
    /** "httproute/echo-split: spec.rules[0].backendRefs[1]" */
    char *what;
} rm_ref_t;

typedef struct st_rm_batch_t {
    /** The valid documents' resources, in document order. */
    rm_resource_list_t resources;
    rm_doc_errors_t errors;
    rm_ref_t *refs;
    size_t num_refs;
    /** Documents seen (empty ones excluded). */
    size_t num_documents;
} rm_batch_t;

void rm_batch_init(rm_batch_t *batch);
/** Frees the batch and every resource still in it. */
void rm_batch_dispose(rm_batch_t *batch);

/**
 * Parses `len` bytes of YAML (one or more documents separated by "---") from `file` (a name for
 * messages only). Appends a resource per valid document and errors for the others; a YAML syntax
 * error ends the file (errors name the line of the problem).
 */
void rm_batch_parse(rm_batch_t *batch, const char *file, const void *text, size_t len);

/** Answers whether the store holds the resource (used for references outside the batch). */
typedef int (*rm_batch_exists_cb)(void *ctx, rm_kind_t kind, const char *ns, const char *name);

/**
 * Checks the batch as a whole: a resource defined twice, and every reference (to a Service or a
 * FaultInjection) that is neither in the batch nor known to `exists` (may be NULL: nothing outside
 * the batch). Appends errors.
 */
void rm_batch_check(rm_batch_t *batch, rm_batch_exists_cb exists, void *ctx);

/**
 * Parses a duration in the Gateway API format ("10s", "500ms", "1h30m"; units h, m, s, ms; at most
 * 4 parts of at most 5 digits) into milliseconds. Returns 0 or -1.
 */
int rm_document_parse_duration(const char *s, uint64_t *ms);

#endif
