/*
 * The version-neutral message model shared by the codecs, the router and everything between them.
 *
 * A request or response head is a list of header fields plus the HTTP/2-style pseudo values pulled
 * out into fields of their own. Names are lower-case, connection-specific fields (connection,
 * keep-alive, proxy-connection, transfer-encoding, upgrade, and "te" other than "trailers") have
 * already been removed by the codec that produced the head, so code above the codecs never sees
 * how a message arrived. All memory (field arrays and strings) lives in the stream's pool
 * (h2o_mem_pool_t) and is released with it.
 *
 * Thread: a message belongs to its stream's worker.
 */
#ifndef remora__proxy_message_h
#define remora__proxy_message_h

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <h2o/memory.h>

typedef struct st_rm_header_t {
    h2o_iovec_t name; /* lower-case */
    h2o_iovec_t value;
    /**
     * The name as an HTTP/1.1 peer spelled it (name.len bytes, equal to `name` but for case), or NULL when that is `name`
     * itself (every lower-case name: no copy is made). Set by the HTTP/1.1 parser and by rm_headers_apply_case_marker;
     * HTTP/1.1 encoders write it instead of `name`, HTTP/2 ignores it. Whoever builds an entry by hand sets it to NULL.
     */
    const char *orig_name;
} rm_header_t;

typedef struct st_rm_headers_t {
    rm_header_t *entries;
    size_t size;
    size_t capacity;
} rm_headers_t;

typedef struct st_rm_req_head_t {
    h2o_iovec_t method;
    h2o_iovec_t scheme;    /* "http" | "https" */
    h2o_iovec_t authority; /* Host / :authority; may be empty (len 0) */
    h2o_iovec_t path;      /* origin-form, "*" for OPTIONS * */
    rm_headers_t headers;
    /** Content-Length if given, else -1 */
    int64_t content_length;
    /** 1 if the request may carry a body (Content-Length > 0, chunked, or an HTTP/2 DATA frame may follow) */
    unsigned has_body : 1;
    /** the client sent "te: trailers" (kept in `headers` too) */
    unsigned te_trailers : 1;
    /** content-type starts with application/grpc */
    unsigned is_grpc : 1;
    /** the HTTP/1.1 client sent "Expect: 100-continue" (removed from `headers`) */
    unsigned expect_continue : 1;
    /** the request came to the mesh as HTTP/1.1 (its downstream codec, or RM_MARKER_ORIG_PROTO from an agent) */
    unsigned orig_h1 : 1;
    /**
     * The protocol an HTTP/1.1 client asks to switch to ("Connection: upgrade" + "Upgrade: websocket"; the Upgrade
     * value), {NULL, 0} for none. Only a bodyless request carries it; both fields are gone from `headers`. On a 101
     * answer the exchange becomes a byte tunnel: the request and response pipes carry the two directions.
     */
    h2o_iovec_t upgrade;
    /** the Host field's name as an HTTP/1.1 client spelt it ("Host"; 4 bytes), NULL when "host" (see orig_name) */
    const char *host_orig_name;
    /**
     * The framing fields' names as an HTTP/1.1 peer spelt them ("Content-Length", 14 bytes; "Transfer-Encoding", 17
     * bytes), NULL when lower-case: the HTTP/1.1 encoders write them when they write that framing (see orig_name).
     */
    const char *length_orig_name;
    const char *chunked_orig_name;
} rm_req_head_t;

typedef struct st_rm_resp_head_t {
    int status;
    rm_headers_t headers;
    /** Content-Length if given, else -1 */
    int64_t content_length;
    /** a 101 response's Upgrade value ({NULL, 0}: none, or not a 101) */
    h2o_iovec_t upgrade;
    /** as in rm_req_head_t */
    const char *length_orig_name;
    const char *chunked_orig_name;
} rm_resp_head_t;

/*
 * Marker fields: only agents emit and accept them (docs/architecture.md, "Names to keep"). Every codec removes them from
 * what it receives; an HTTP/2 codec applies them only on a hop between two agents (a cluster with `peer: agent`, a
 * listener with `mesh_inbound: true`).
 */
/** original spellings of the names of an HTTP/1.1 message, comma-separated (RM_CASE_MARKER_MAX_BYTES at most) */
#define RM_MARKER_H1_CASE "x-remora-h1-case"
/** the protocol the request came to the mesh with ("HTTP/1.1"), when an agent carries it over HTTP/2 */
#define RM_MARKER_ORIG_PROTO "x-remora-orig-proto"
#define RM_CASE_MARKER_MAX_BYTES 4096

/**
 * Appends a field; name and value are referenced, not copied (they must live as long as the pool). Grows the array in
 * `pool` (doubling; the old array stays in the pool). Out of memory aborts.
 */
void rm_headers_add(h2o_mem_pool_t *pool, rm_headers_t *headers, h2o_iovec_t name, h2o_iovec_t value);
/** Same, copying name (lower-cased) and value into `pool`; both copies are NUL-terminated. */
void rm_headers_add_copy(h2o_mem_pool_t *pool, rm_headers_t *headers, const char *name, size_t name_len, const char *value,
                         size_t value_len);
/**
 * Returns the index of the first field named `name` (lower-case; compared exactly) at or after `from` (a negative `from`
 * counts as 0), or -1.
 */
ssize_t rm_headers_find(const rm_headers_t *headers, const char *name, size_t name_len, ssize_t from);
#define rm_headers_find_lit(h, lit, from) rm_headers_find((h), (lit), sizeof(lit) - 1, (from))

/** Removes every field named `name` (lower-case literal), keeping the order of the others. */
void rm_headers_remove(rm_headers_t *headers, const char *name, size_t name_len);
#define rm_headers_remove_lit(h, lit) rm_headers_remove((h), (lit), sizeof(lit) - 1)

/**
 * The value of an RM_MARKER_H1_CASE field for `headers`: the orig_name of each field that has one, once per name, comma-
 * separated, at most RM_CASE_MARKER_MAX_BYTES (names that do not fit are left out: they arrive lower-case). Returns
 * {NULL, 0} without allocating when no field has an orig_name; else a string in `pool`.
 */
h2o_iovec_t rm_headers_case_marker(h2o_mem_pool_t *pool, const rm_headers_t *headers);
/**
 * Same for a request head: its Host spelling (host_orig_name) comes first, then those of its framing fields
 * (length_orig_name, chunked_orig_name).
 */
h2o_iovec_t rm_req_case_marker(h2o_mem_pool_t *pool, const rm_req_head_t *req);
/** Same for a response head: the spellings of its framing fields come first. */
h2o_iovec_t rm_resp_case_marker(h2o_mem_pool_t *pool, const rm_resp_head_t *resp);
/**
 * Applies an RM_MARKER_H1_CASE value: each element that equals a field name but for case becomes that field's orig_name
 * (pointing into `marker`, which must live as long as the headers). Malformed elements are ignored. Returns the number of
 * fields changed.
 */
size_t rm_headers_apply_case_marker(rm_headers_t *headers, h2o_iovec_t marker);
/**
 * Same for a request head: a "Host" element sets host_orig_name, a "Content-Length" or "Transfer-Encoding" element (any
 * spelling but lower case) length_orig_name or chunked_orig_name.
 */
size_t rm_req_apply_case_marker(rm_req_head_t *req, h2o_iovec_t marker);
/** Same for a response head: only the framing fields' elements. */
size_t rm_resp_apply_case_marker(rm_resp_head_t *resp, h2o_iovec_t marker);
/**
 * Removes the marker fields (RM_MARKER_*) from `headers`. Their values, if wanted, go to *case_marker and *orig_proto
 * (either may be NULL; {NULL, 0} when absent). Cost when none is present: one comparison of the first bytes per field.
 */
void rm_headers_take_markers(rm_headers_t *headers, h2o_iovec_t *case_marker, h2o_iovec_t *orig_proto);

/**
 * Classifies a header name (lower-case) as connection-specific per RFC 9110 §7.6.1 / RFC 9113 §8.2.2:
 * such fields are dropped when a message crosses the proxy. "te" is handled separately (only
 * "trailers" survives). Returns 1 if the field must be dropped.
 */
int rm_header_is_hop_by_hop(const char *name, size_t len);

/**
 * gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html) used by the proxy.
 */
enum {
    RM_GRPC_OK = 0,
    RM_GRPC_CANCELLED = 1,
    RM_GRPC_UNKNOWN = 2,
    RM_GRPC_INVALID_ARGUMENT = 3,
    RM_GRPC_DEADLINE_EXCEEDED = 4,
    RM_GRPC_NOT_FOUND = 5,
    RM_GRPC_ALREADY_EXISTS = 6,
    RM_GRPC_PERMISSION_DENIED = 7,
    RM_GRPC_RESOURCE_EXHAUSTED = 8,
    RM_GRPC_FAILED_PRECONDITION = 9,
    RM_GRPC_ABORTED = 10,
    RM_GRPC_OUT_OF_RANGE = 11,
    RM_GRPC_UNIMPLEMENTED = 12,
    RM_GRPC_INTERNAL = 13,
    RM_GRPC_UNAVAILABLE = 14,
    RM_GRPC_DATA_LOSS = 15,
    RM_GRPC_UNAUTHENTICATED = 16,
};

/**
 * HTTP/2 error codes as seen by the proxy (values equal RFC 9113's), so code above the codecs can
 * talk about resets without including nghttp2.h.
 */
enum {
    RM_H2_NO_ERROR = 0x0,
    RM_H2_PROTOCOL_ERROR = 0x1,
    RM_H2_INTERNAL_ERROR = 0x2,
    RM_H2_FLOW_CONTROL_ERROR = 0x3,
    RM_H2_SETTINGS_TIMEOUT = 0x4,
    RM_H2_STREAM_CLOSED = 0x5,
    RM_H2_FRAME_SIZE_ERROR = 0x6,
    RM_H2_REFUSED_STREAM = 0x7,
    RM_H2_CANCEL = 0x8,
    RM_H2_COMPRESSION_ERROR = 0x9,
    RM_H2_CONNECT_ERROR = 0xa,
    RM_H2_ENHANCE_YOUR_CALM = 0xb,
    RM_H2_INADEQUATE_SECURITY = 0xc,
    RM_H2_HTTP_1_1_REQUIRED = 0xd,
};

/**
 * gRPC status for an HTTP/2 RST_STREAM error code received from upstream (gRPC PROTOCOL-HTTP2.md): REFUSED_STREAM ->
 * UNAVAILABLE, CANCEL -> CANCELLED, ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED, INADEQUATE_SECURITY -> PERMISSION_DENIED,
 * anything else (NO_ERROR included) -> INTERNAL. Pure function; any thread.
 */
int rm_grpc_status_from_h2_error(uint32_t h2_error);
/** The value of the grpc-status field of `headers` (NULL allowed): 0..99, or -1 when absent or malformed. */
int rm_headers_grpc_status(const rm_headers_t *headers);
/**
 * gRPC status for an HTTP status of a response that carries no grpc-status (http-grpc-status-mapping.md): 400 INTERNAL,
 * 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN.
 */
int rm_grpc_status_from_http_status(int http_status);
/**
 * HTTP status the proxy answers a non-gRPC request with, for a local failure mapped to a gRPC status: UNAVAILABLE 503,
 * DEADLINE_EXCEEDED 504, RESOURCE_EXHAUSTED 429, PERMISSION_DENIED 403, UNIMPLEMENTED 404, anything else 500.
 */
int rm_http_status_from_grpc_status(int grpc_status);

/**
 * Percent-encodes a grpc-message value as the gRPC spec requires (bytes outside 0x20-0x7e and '%' become "%XX", upper-case
 * hex). Returns a NUL-terminated string allocated in `pool` (the NUL is not counted in len).
 */
h2o_iovec_t rm_grpc_encode_message(h2o_mem_pool_t *pool, const char *msg, size_t len);

#endif
