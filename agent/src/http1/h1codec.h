/*
 * HTTP/1.1 codec: parses requests (server side) and responses (client side) into the
 * version-neutral message model, and serializes heads, chunks and trailers. It does no I/O: the
 * connection feeds it bytes and writes what it produces.
 *
 * Built on http-parser (streaming: bodies are delivered chunk by chunk, never buffered). The
 * framing and request-smuggling rules of RFC 9112 are enforced here on top of it:
 *   - Transfer-Encoding together with Content-Length: rejected (400);
 *   - Transfer-Encoding whose final coding is not "chunked" on a request: 400 (any other coding: 501);
 *   - several Content-Length fields with different values, or a non-numeric one: 400;
 *   - obs-fold (line folding), whitespace before the colon, invalid name/value bytes, bare CR: 400;
 *   - HTTP/1.1 request without exactly one Host: 400; HTTP versions other than 1.0/1.1: 505;
 *   - more than `max_headers` fields or a head larger than `max_header_bytes`: 431 (requests) or
 *     an error (responses);
 *   - a request target longer than the server's URI limit (rm_h1_parser_set_max_uri_bytes): 414.
 * Connection-specific fields are removed from the head handed up (see message.h); "te: trailers"
 * is kept and reflected in rm_req_head_t.te_trailers; "Expect: 100-continue" is removed and
 * reflected in expect_continue. The absolute-form request target supplies the authority.
 *
 * Details of the rules above: bare LF is refused like bare CR; so are a request target with bytes
 * outside VCHAR or with a fragment, chunk-size lines that are malformed or longer than 4 KiB, and
 * chunk data not followed by CRLF (400). Identical duplicate Content-Length fields are refused too
 * (RFC 9110 8.6 allows either). Transfer-Encoding in an HTTP/1.0 message: 400. Methods http-parser
 * does not know, and CONNECT: 501. A field name that starts with "transfer-encoding" but is longer:
 * 400 (http-parser would count it as Transfer-Encoding). Responses must use exactly "chunked" if
 * they use Transfer-Encoding (another coding could not be removed); a 101 response is final, with
 * keep_alive == 0: the bytes after its head (left unconsumed: the parser pauses) belong to the upgraded protocol, as do
 * the bytes after the head of a request that carries `upgrade` (rm_req_head_t.upgrade: "Connection: upgrade", exactly
 * one Upgrade field, HTTP/1.1, no body; the caller decides whether to switch). max_header_bytes is capped at 80 KiB (http-parser's
 * own limit); trailer sections have the same limits as heads. When an input has several errors,
 * the first in byte order is reported, however the input was split. (Debian's libhttp_parser is
 * built non-strict, so these checks are ours, not the library's.)
 *
 * Heads handed up: names are lower-case, and a name sent with upper-case letters keeps that spelling in orig_name (no
 * copy is made for a name already in lower case); every string is NUL-terminated (the NUL is not counted)
 * and lives in the pool, except method and scheme which may point to static strings. "host" is
 * removed and becomes `authority`; "content-length" stays in `headers` and is reflected in
 * content_length; fields named by the Connection field are removed too (except "te"). `scheme` is
 * "http" unless an absolute-form target says otherwise: the connection sets "https" itself on TLS.
 * Trailers lose connection-specific fields and te, host, content-length and trailer.
 *
 * Thread: a parser is used by one thread at a time. Errors are returned as values, never asserted.
 */
#ifndef remora__h1codec_h
#define remora__h1codec_h

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <h2o/memory.h>
#include "proxy/message.h"

typedef struct st_rm_h1_parser_t rm_h1_parser_t;

typedef enum en_rm_h1_error_t {
    RM_H1_OK = 0,
    RM_H1_ERR_BAD_REQUEST = -1,       /* answer 400 and close */
    RM_H1_ERR_HEADERS_TOO_LARGE = -2, /* answer 431 and close */
    RM_H1_ERR_NOT_IMPLEMENTED = -3,   /* answer 501 and close (unknown transfer coding) */
    RM_H1_ERR_VERSION = -4,           /* answer 505 and close */
    RM_H1_ERR_BAD_RESPONSE = -5,      /* upstream sent an unparsable response: treat as a 502 */
    RM_H1_ERR_CALLBACK = -6,          /* a callback returned non-zero */
    RM_H1_ERR_INCOMPLETE = -7,        /* EOF in the middle of a message */
    RM_H1_ERR_URI_TOO_LONG = -8,      /* answer 414 and close (rm_h1_parser_set_max_uri_bytes) */
} rm_h1_error_t;

typedef struct st_rm_h1_callbacks_t {
    /**
     * A new message starts. Returns the pool in which the head, trailers and their strings are
     * allocated (typically the new stream's pool); must not return NULL (that aborts). Client side:
     * called once per exchange, not again for the final response after interim ones.
     *
     * Every callback runs inside rm_h1_parser_execute/finish and must not destroy the parser; one
     * returning non-zero makes that call fail with RM_H1_ERR_CALLBACK.
     */
    h2o_mem_pool_t *(*on_message_begin)(void *ctx);
    /** Server side: the request head is complete. `head` lives in the pool. Return 0 or non-zero to stop. */
    int (*on_request_head)(void *ctx, rm_req_head_t *head);
    /**
     * Client side: a response head is complete. Interim (1xx other than 101) responses are reported
     * too, and parsing continues with the final response of the same request.
     */
    int (*on_response_head)(void *ctx, rm_resp_head_t *head);
    /** A piece of the body (de-chunked). `data` points into the caller's input buffer. */
    int (*on_body)(void *ctx, const char *data, size_t len);
    /** Trailer fields of a chunked message (only if there were any). */
    int (*on_trailers)(void *ctx, rm_headers_t *trailers);
    /**
     * The message is complete. The parser pauses after this: rm_h1_parser_execute returns the bytes
     * consumed so far and parses nothing more until rm_h1_parser_resume (pipelined requests wait
     * for their turn). `keep_alive` says whether the connection may carry another message.
     */
    int (*on_message_complete)(void *ctx, int keep_alive);
} rm_h1_callbacks_t;

typedef enum en_rm_h1_parser_type_t {
    RM_H1_PARSE_REQUESTS = 0,
    RM_H1_PARSE_RESPONSES = 1,
} rm_h1_parser_type_t;

/**
 * Creates a parser (heap; free with rm_h1_parser_destroy). `max_headers` and `max_header_bytes`
 * bound a head (0: defaults 100 and 65536). `cb` must outlive the parser.
 */
rm_h1_parser_t *rm_h1_parser_create(rm_h1_parser_type_t type, const rm_h1_callbacks_t *cb, void *ctx, uint32_t max_headers,
                                    uint32_t max_header_bytes);
void rm_h1_parser_destroy(rm_h1_parser_t *parser);
/**
 * Server side: a request target longer than `max_uri_bytes` bytes is RM_H1_ERR_URI_TOO_LONG (414), reported at the byte
 * that crosses the limit (0, the default: only max_header_bytes bounds it; that limit, checked first, wins when lower).
 */
void rm_h1_parser_set_max_uri_bytes(rm_h1_parser_t *parser, uint32_t max_uri_bytes);

/**
 * Feeds bytes. Returns the number of bytes consumed (may be less than `len` when paused after a
 * complete message; the caller keeps the rest), or a negative rm_h1_error_t. After an error the
 * parser is dead; rm_h1_parser_error_reason() says why (static string). While paused it returns 0.
 * After a message with keep_alive == 0 no further message is parsed: later bytes are consumed and
 * discarded. Body pieces point into `data`; nothing of a body is copied or buffered.
 */
ssize_t rm_h1_parser_execute(rm_h1_parser_t *parser, const char *data, size_t len);
/**
 * Tells the parser the peer closed. For a response delimited by close this completes it (through
 * on_message_complete). Returns 0 (nothing in progress, or completed), RM_H1_ERR_INCOMPLETE if a
 * message was cut short, or the earlier error.
 */
int rm_h1_parser_finish(rm_h1_parser_t *parser);
/** Un-pauses after on_message_complete. */
void rm_h1_parser_resume(rm_h1_parser_t *parser);
/**
 * Client side: the next response answers a HEAD request (no body whatever the headers say). Call it
 * before the response arrives; it is cleared when the final response of the exchange completes.
 */
void rm_h1_parser_expect_head_response(rm_h1_parser_t *parser, int is_head);
const char *rm_h1_parser_error_reason(const rm_h1_parser_t *parser);
/**
 * Minor HTTP version (0 or 1) of the last head reported by the parser (valid from on_request_head or
 * on_response_head on; -1 before the first head). A server must not answer an HTTP/1.0 request with
 * a chunked response: a body of unknown length is then delimited by closing the connection.
 */
int rm_h1_parser_http_minor(const rm_h1_parser_t *parser);
/** HTTP status to answer a request-side error with (400, 414, 431, 501, 505). */
int rm_h1_error_status(rm_h1_error_t err);

/*
 * Encoders. Each appends to *buf (h2o_buffer_t, grown as needed; out of memory aborts) and returns
 * the number of bytes appended. Field names are written as the HTTP/1.1 peer spelled them when known
 * (rm_header_t.orig_name), else as stored (lower-case is valid HTTP/1.1). A request head with `upgrade` and a 101
 * response head with `upgrade` get "Connection: Upgrade" and "Upgrade: <value>". The head encoders skip the fields they write
 * themselves or that are connection-specific (host for requests, content-length, transfer-encoding, connection, keep-alive,
 * proxy-connection, upgrade, te for responses, names starting with ':'), and return 0 and append nothing if the head cannot be
 * written safely: method not a token, empty path, SP or a control byte in the path or the authority, a field name that is not a
 * token, a field value with a control byte other than HTAB. Callers must treat 0 as a failure of the exchange (never send a body
 * after it).
 */

/**
 * Request head for an upstream HTTP/1.1 connection: "METHOD PATH HTTP/1.1", "host" from the
 * authority, every field of head->headers, and "transfer-encoding: chunked" if `chunked`
 * ("content-length" is written when head->content_length >= 0 and not chunked).
 */
size_t rm_h1_encode_request_head(h2o_buffer_t **buf, const rm_req_head_t *head, int chunked);
/**
 * Response head for a downstream HTTP/1.1 connection: status line with the standard reason phrase,
 * every field, "transfer-encoding: chunked" if `chunked`, "content-length" if known and not chunked,
 * and "connection: close" if `close`. 1xx and 204 get neither framing field, 304 never gets
 * transfer-encoding (they have no body). Status outside 100-999: returns 0.
 */
size_t rm_h1_encode_response_head(h2o_buffer_t **buf, const rm_resp_head_t *head, int chunked, int close);
/** "HTTP/1.1 100 Continue\r\n\r\n" */
size_t rm_h1_encode_continue(h2o_buffer_t **buf);
/**
 * Chunk header "%zx\r\n" (len > 0: len == 0 appends nothing and returns 0, since a zero-size chunk
 * would end the body); the caller appends the data then rm_h1_encode_chunk_end.
 */
size_t rm_h1_encode_chunk_header(h2o_buffer_t **buf, size_t len);
size_t rm_h1_encode_chunk_end(h2o_buffer_t **buf);
/**
 * Last chunk "0\r\n", trailer fields if any (may be NULL), "\r\n". Trailer fields that cannot be
 * written (see above) are dropped rather than failing: the terminator is always written.
 */
size_t rm_h1_encode_last_chunk(h2o_buffer_t **buf, const rm_headers_t *trailers);
/** Appends raw bytes. */
size_t rm_h1_append(h2o_buffer_t **buf, const void *data, size_t len);
/** Reason phrase for a status ("OK", ...; "" if unknown). */
const char *rm_h1_reason_phrase(int status);

#endif
