/*
 * Protocol detection of a new downstream connection from its first bytes (no I/O: the listener
 * feeds what it has read; docs/transparent.md).
 *
 * Transparent listeners tell apart: the HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
 * an HTTP/1.x request line start (an RFC 9110 method token of at most RM_DETECT_MAX_METHOD_LEN
 * characters followed by a space), a TLS record header (0x16 0x03), and anything else (opaque). A
 * prefix of the preface or of a method token asks for more bytes. Explicit listeners keep their
 * historical rule: a first byte 0x16 is TLS, the preface or anything else starting "PRI " is HTTP/2
 * (nghttp2 answers a damaged preface with GOAWAY PROTOCOL_ERROR), anything else HTTP/1.1 (whose
 * parser answers what is not HTTP).
 *
 * Thread: any; pure functions.
 */
#ifndef remora__detect_h
#define remora__detect_h

#include <stddef.h>

/** The longest method token waited for (the longest registered method, UPDATEREDIRECTREF, is 17). */
#define RM_DETECT_MAX_METHOD_LEN 24

typedef enum en_rm_detect_verdict_t {
    RM_DETECT_NEED_MORE = 0,
    RM_DETECT_IS_HTTP1 = 1,
    RM_DETECT_IS_H2 = 2,
    RM_DETECT_IS_TLS = 3,
    RM_DETECT_IS_OPAQUE = 4, /* transparent listeners only */
} rm_detect_verdict_t;

/** Classifies the first `len` (> 0) bytes of a connection. `transparent`: the listener's rule, see above. */
rm_detect_verdict_t rm_detect_classify(const char *in, size_t len, int transparent);

/** The outcome of rm_detect_mesh_alpn. */
typedef enum en_rm_detect_alpn_t {
    RM_DETECT_ALPN_NEED_MORE = 0, /* the first TLS record is not complete yet */
    RM_DETECT_ALPN_MESH = 1,      /* a ClientHello whose ALPN offers an id starting with "remora.mesh/" */
    RM_DETECT_ALPN_OTHER = 2,     /* any other ClientHello (no ALPN, other ids), or what cannot be parsed */
} rm_detect_alpn_t;

/** The longest TLS record waited for by rm_detect_mesh_alpn: a record's header plus 2^14 bytes. */
#define RM_DETECT_MAX_CLIENT_HELLO (5 + 16384)

/**
 * Mesh mTLS detection (docs/mesh-tls.md): parses the ClientHello in the first TLS record of `in`
 * (bytes starting with the record header) and reports whether its ALPN extension offers a mesh
 * protocol id. Only the first record is read (bounded by
 * RM_DETECT_MAX_CLIENT_HELLO); a ClientHello split over several records is OTHER, as are malformed ones (the application's TLS is
 * relayed as is).
 */
rm_detect_alpn_t rm_detect_mesh_alpn(const unsigned char *in, size_t len);
/** The same, and *tcp = 1 when the mesh ids offered include "remora.mesh/tcp" (the opaque relay's: tcp/tcp_proxy.h), else 0. */
rm_detect_alpn_t rm_detect_mesh_alpn_ex(const unsigned char *in, size_t len, int *tcp);

#endif
