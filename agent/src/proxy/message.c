#include <string.h>
#include <h2o/string_.h>
#include "proxy/message.h"

void
rm_headers_add(h2o_mem_pool_t *pool, rm_headers_t *headers, h2o_iovec_t name, h2o_iovec_t value)
{
    if (headers->size == headers->capacity) {
        /* pool memory cannot be resized in place: double, so that n additions cost O(n) copies */
        size_t capacity = headers->capacity != 0 ? headers->capacity * 2 : 8;
        rm_header_t *entries = h2o_mem_alloc_pool(pool, sizeof(*entries) * capacity);
        if (headers->size != 0)
            memcpy(entries, headers->entries, sizeof(*entries) * headers->size);
        headers->entries = entries;
        headers->capacity = capacity;
    }
    headers->entries[headers->size].name = name;
    headers->entries[headers->size].value = value;
    headers->entries[headers->size].orig_name = NULL;
    ++headers->size;
}

void
rm_headers_add_copy(h2o_mem_pool_t *pool, rm_headers_t *headers, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    char *lname = h2o_mem_alloc_pool(pool, name_len + 1);
    for (size_t i = 0; i != name_len; ++i)
        lname[i] = h2o_tolower(name[i]);
    lname[name_len] = '\0';
    rm_headers_add(pool, headers, h2o_iovec_init(lname, name_len), h2o_strdup(pool, value, value_len));
}

ssize_t
rm_headers_find(const rm_headers_t *headers, const char *name, size_t name_len, ssize_t from)
{
    for (size_t i = from > 0 ? (size_t)from : 0; i < headers->size; ++i) {
        const rm_header_t *h = headers->entries + i;
        if (h->name.len == name_len && memcmp(h->name.base, name, name_len) == 0)
            return (ssize_t)i;
    }
    return -1;
}

int
rm_header_is_hop_by_hop(const char *name, size_t len)
{
    /* case-insensitive although names are lower-case by contract: this is the last line of defence
     * before a field is forwarded, so a producer's mistake must not leak a framing field */
    switch (len) {
    case 7:
        return h2o_lcstris(name, len, H2O_STRLIT("upgrade"));
    case 10:
        return h2o_lcstris(name, len, H2O_STRLIT("connection")) || h2o_lcstris(name, len, H2O_STRLIT("keep-alive"));
    case 16:
        return h2o_lcstris(name, len, H2O_STRLIT("proxy-connection"));
    case 17:
        return h2o_lcstris(name, len, H2O_STRLIT("transfer-encoding"));
    default:
        return 0;
    }
}

int
rm_grpc_status_from_h2_error(uint32_t h2_error)
{
    /* gRPC doc/PROTOCOL-HTTP2.md, "Errors"; CANCEL caused by an expired deadline is the caller's
     * business (it knows about the deadline, we do not) */
    switch (h2_error) {
    case RM_H2_REFUSED_STREAM:
        return RM_GRPC_UNAVAILABLE;
    case RM_H2_CANCEL:
        return RM_GRPC_CANCELLED;
    case RM_H2_ENHANCE_YOUR_CALM:
        return RM_GRPC_RESOURCE_EXHAUSTED;
    case RM_H2_INADEQUATE_SECURITY:
        return RM_GRPC_PERMISSION_DENIED;
    default:
        /* NO_ERROR, PROTOCOL, INTERNAL, FLOW_CONTROL, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE,
         * COMPRESSION, CONNECT, HTTP_1_1_REQUIRED and codes unknown to RFC 9113 */
        return RM_GRPC_INTERNAL;
    }
}

int
rm_grpc_status_from_http_status(int http_status)
{
    /* gRPC doc/http-grpc-status-mapping.md */
    switch (http_status) {
    case 400:
        return RM_GRPC_INTERNAL;
    case 401:
        return RM_GRPC_UNAUTHENTICATED;
    case 403:
        return RM_GRPC_PERMISSION_DENIED;
    case 404:
        return RM_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RM_GRPC_UNAVAILABLE;
    default:
        return RM_GRPC_UNKNOWN;
    }
}

int
rm_http_status_from_grpc_status(int grpc_status)
{
    switch (grpc_status) {
    case RM_GRPC_UNAVAILABLE:
        return 503;
    case RM_GRPC_DEADLINE_EXCEEDED:
        return 504;
    case RM_GRPC_RESOURCE_EXHAUSTED:
        return 429;
    case RM_GRPC_PERMISSION_DENIED:
        return 403;
    case RM_GRPC_UNIMPLEMENTED:
        return 404;
    default:
        return 500;
    }
}

static int
grpc_message_byte_needs_escape(unsigned char c)
{
    return c < 0x20 || c > 0x7e || c == '%';
}

h2o_iovec_t
rm_grpc_encode_message(h2o_mem_pool_t *pool, const char *msg, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t escaped = 0;
    for (size_t i = 0; i != len; ++i)
        escaped += grpc_message_byte_needs_escape((unsigned char)msg[i]);

    char *dst = h2o_mem_alloc_pool(pool, len + escaped * 2 + 1), *p = dst;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)msg[i];
        if (grpc_message_byte_needs_escape(c)) {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        } else {
            *p++ = (char)c;
        }
    }
    *p = '\0';
    return h2o_iovec_init(dst, (size_t)(p - dst));
}

void
rm_headers_remove(rm_headers_t *headers, const char *name, size_t name_len)
{
    size_t w = 0;
    for (size_t r = 0; r != headers->size; ++r)
        if (!h2o_memis(headers->entries[r].name.base, headers->entries[r].name.len, name, name_len))
            headers->entries[w++] = headers->entries[r];
    headers->size = w;
}

int
rm_headers_grpc_status(const rm_headers_t *headers)
{
    if (headers == NULL)
        return -1;
    ssize_t i = rm_headers_find(headers, H2O_STRLIT("grpc-status"), -1);
    if (i < 0)
        return -1;
    const h2o_iovec_t v = headers->entries[i].value;
    if (v.len == 0 || v.len > 2)
        return -1;
    int code = 0;
    for (size_t k = 0; k != v.len; ++k) {
        if (v.base[k] < '0' || v.base[k] > '9')
            return -1;
        code = code * 10 + (v.base[k] - '0');
    }
    return code;
}

/* names a head carries outside its fields, listed first in a case marker (they fit whatever the fields need) */
typedef struct st_head_names_t {
    const char *host;    /* 4 bytes */
    const char *length;  /* 14 bytes */
    const char *chunked; /* 17 bytes */
} head_names_t;

static int
is_head_level_name(const rm_header_t *h)
{
    /* content-length is written from the head's content_length, never from the fields: its spelling is the head's */
    return h2o_memis(h->name.base, h->name.len, H2O_STRLIT("content-length"));
}

static h2o_iovec_t
build_case_marker(h2o_mem_pool_t *pool, const rm_headers_t *headers, const head_names_t *names)
{
    size_t total = (names->host != NULL ? 5 : 0) + (names->length != NULL ? 15 : 0) + (names->chunked != NULL ? 18 : 0);
    for (size_t i = 0; i != headers->size; ++i)
        if (headers->entries[i].orig_name != NULL && !is_head_level_name(headers->entries + i))
            total += headers->entries[i].name.len + 1;
    if (total == 0)
        return h2o_iovec_init(NULL, 0);
    if (total > RM_CASE_MARKER_MAX_BYTES + 1)
        total = RM_CASE_MARKER_MAX_BYTES + 1;
    char *dst = h2o_mem_alloc_pool(pool, total + 1);
    size_t len = 0;
    /* Host first (rm_req_apply_case_marker looks for it there), then the framing names: 38 bytes at most */
    const char *fixed[3] = {names->host, names->length, names->chunked};
    const size_t fixed_len[3] = {4, 14, 17};
    for (size_t k = 0; k != 3; ++k) {
        if (fixed[k] == NULL)
            continue;
        if (len != 0)
            dst[len++] = ',';
        memcpy(dst + len, fixed[k], fixed_len[k]);
        len += fixed_len[k];
    }
    for (size_t i = 0; i != headers->size; ++i) {
        const rm_header_t *h = headers->entries + i;
        if (h->orig_name == NULL || is_head_level_name(h))
            continue;
        /* a repeated name (set-cookie...) is listed once */
        int seen = 0;
        for (size_t j = 0; j != i && !seen; ++j)
            seen = headers->entries[j].orig_name != NULL &&
                   h2o_memis(headers->entries[j].name.base, headers->entries[j].name.len, h->name.base, h->name.len);
        if (seen)
            continue;
        size_t need = (len != 0) + h->name.len;
        if (len + need > RM_CASE_MARKER_MAX_BYTES)
            continue; /* bounded: this name arrives lower-case */
        if (len != 0)
            dst[len++] = ',';
        memcpy(dst + len, h->orig_name, h->name.len);
        len += h->name.len;
    }
    dst[len] = '\0';
    return h2o_iovec_init(dst, len);
}

h2o_iovec_t
rm_headers_case_marker(h2o_mem_pool_t *pool, const rm_headers_t *headers)
{
    head_names_t names = {NULL, NULL, NULL};
    return build_case_marker(pool, headers, &names);
}

h2o_iovec_t
rm_req_case_marker(h2o_mem_pool_t *pool, const rm_req_head_t *req)
{
    head_names_t names = {req->host_orig_name, req->length_orig_name, req->chunked_orig_name};
    return build_case_marker(pool, &req->headers, &names);
}

h2o_iovec_t
rm_resp_case_marker(h2o_mem_pool_t *pool, const rm_resp_head_t *resp)
{
    head_names_t names = {NULL, resp->length_orig_name, resp->chunked_orig_name};
    return build_case_marker(pool, &resp->headers, &names);
}

/* sets *length / *chunked from the marker's "Content-Length" / "Transfer-Encoding" elements (not lower case) */
static size_t
apply_framing_names(h2o_iovec_t marker, const char **length, const char **chunked)
{
    size_t changed = 0;
    const char *p = marker.base, *end = marker.base + marker.len;
    if (marker.len > RM_CASE_MARKER_MAX_BYTES)
        return 0;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma != NULL ? comma : end;
        size_t len = (size_t)(e - p);
        if (len == 14 && h2o_lcstris(p, len, H2O_STRLIT("content-length")) && memcmp(p, "content-length", 14) != 0) {
            *length = p;
            ++changed;
        } else if (len == 17 && h2o_lcstris(p, len, H2O_STRLIT("transfer-encoding")) && memcmp(p, "transfer-encoding", 17) != 0) {
            *chunked = p;
            ++changed;
        }
        p = e + 1;
    }
    return changed;
}

size_t
rm_req_apply_case_marker(rm_req_head_t *req, h2o_iovec_t marker)
{
    size_t changed = rm_headers_apply_case_marker(&req->headers, marker);
    if (marker.len >= 4 && marker.len <= RM_CASE_MARKER_MAX_BYTES && (marker.len == 4 || marker.base[4] == ',') &&
        h2o_lcstris(marker.base, 4, H2O_STRLIT("host")) && memcmp(marker.base, "host", 4) != 0) {
        /* Host is not among the fields (it is the authority): the marker lists it first when it has one */
        req->host_orig_name = marker.base;
        ++changed;
    }
    return changed + apply_framing_names(marker, &req->length_orig_name, &req->chunked_orig_name);
}

size_t
rm_resp_apply_case_marker(rm_resp_head_t *resp, h2o_iovec_t marker)
{
    size_t changed = rm_headers_apply_case_marker(&resp->headers, marker);
    return changed + apply_framing_names(marker, &resp->length_orig_name, &resp->chunked_orig_name);
}

size_t
rm_headers_apply_case_marker(rm_headers_t *headers, h2o_iovec_t marker)
{
    size_t changed = 0;
    const char *p = marker.base, *end = marker.base + marker.len;
    if (marker.len > RM_CASE_MARKER_MAX_BYTES)
        return 0;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma != NULL ? comma : end;
        size_t len = (size_t)(e - p);
        for (size_t i = 0; len != 0 && i != headers->size; ++i) {
            rm_header_t *h = headers->entries + i;
            if (h->name.len == len && h2o_lcstris(p, len, h->name.base, len) && memcmp(p, h->name.base, len) != 0) {
                h->orig_name = p;
                ++changed;
            }
        }
        p = e + 1;
    }
    return changed;
}

void
rm_headers_take_markers(rm_headers_t *headers, h2o_iovec_t *case_marker, h2o_iovec_t *orig_proto)
{
    static const char prefix[] = "x-remora-";
    if (case_marker != NULL)
        *case_marker = h2o_iovec_init(NULL, 0);
    if (orig_proto != NULL)
        *orig_proto = h2o_iovec_init(NULL, 0);
    size_t w = 0;
    for (size_t r = 0; r != headers->size; ++r) {
        const rm_header_t *h = headers->entries + r;
        if (h->name.len > sizeof(prefix) - 1 && h->name.base[0] == 'x' && memcmp(h->name.base, prefix, sizeof(prefix) - 1) == 0) {
            if (h2o_memis(h->name.base, h->name.len, H2O_STRLIT(RM_MARKER_H1_CASE))) {
                if (case_marker != NULL)
                    *case_marker = h->value;
                continue;
            }
            if (h2o_memis(h->name.base, h->name.len, H2O_STRLIT(RM_MARKER_ORIG_PROTO))) {
                if (orig_proto != NULL)
                    *orig_proto = h->value;
                continue;
            }
        }
        if (w != r) /* nothing to move until a marker was taken out */
            headers->entries[w] = *h;
        ++w;
    }
    headers->size = w;
}
