/*
 * Design note. Debian builds libhttp_parser with HTTP_PARSER_STRICT=0: it then accepts "Host : x", chunk data not
 * followed by CRLF, a CR followed by anything where CRLF is required, "HTTX/1.1", obs-fold, tabs in the target, and
 * it keeps the chunked flag of an earlier Transfer-Encoding line. So it cannot be the only judge of framing.
 *
 * Every byte therefore goes through two parsers in lock-step. A small "guard" state machine below validates the
 * syntax of every line-oriented part of a message (start line, field lines, chunk-size lines, the CRLF after chunk
 * data, trailer lines), counts head bytes and fields for the limits, and skips body data by count without looking
 * at it. http-parser then parses exactly the bytes the guard accepted and produces the callbacks. The guard stops at
 * each framing event (end of head, end of a chunk-size line, end of message) so that the two parsers' view of the
 * framing can be compared after every event; any disagreement is an error. Semantic rules (Content-Length vs
 * Transfer-Encoding, Host, request target, connection options) are applied on the accumulated head.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <http_parser.h>
#include <h2o/string_.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "http1/h1codec.h"

#define DEFAULT_MAX_HEADERS 100
#define DEFAULT_MAX_HEADER_BYTES 65536
/* HTTP_MAX_HEADER_SIZE compiled into libhttp_parser: above it, the library fails first */
#define HP_MAX_HEADER_BYTES (80 * 1024)
#define MAX_CHUNK_LINE_BYTES 4096
#define MAX_CONNECTION_OPTIONS 32
#define SCRATCH_INITIAL 2048
#define SCRATCH_KEEP 16384
#define FIELDS_INITIAL 32
#define FIELDS_KEEP 256
/* room left in a head's field array for the fields the proxy adds (forwarding, tracing) */
#define FIELDS_HEADROOM 8

/* character classes; see the table */
#define CC_TCHAR 1
#define CC_FIELD 2 /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define CC_VCHAR 4 /* request-target byte */
#define CC_AUTHORITY 8

static const uint8_t char_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  7,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

#define IS(c, cls) ((char_class[(unsigned char)(c)] & (cls)) != 0)

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

typedef enum en_guard_state_t {
    /* head and trailer lines: bytes count against max_header_bytes */
    G_START,
    G_START_LF,
    G_RL_METHOD,
    G_RL_TARGET_FIRST,
    G_RL_TARGET,
    G_RL_VERSION,
    G_SL_VERSION,
    G_SL_CODE,
    G_SL_AFTER_CODE,
    G_SL_REASON,
    G_LINE_LF,
    G_FIELD_START,
    G_FIELD_NAME,
    G_FIELD_VALUE,
    G_FIELD_LF,
    G_END_LF,
    /* chunk-size lines and the CRLF after chunk data: count against MAX_CHUNK_LINE_BYTES */
    G_CHUNK_SIZE,
    G_CHUNK_SIZE_MORE,
    G_CHUNK_BWS,
    G_CHUNK_EXT,
    G_CHUNK_LF,
    G_CHUNK_DATA_CR,
    G_CHUNK_DATA_LF,
    /* data, skipped by count */
    G_CHUNK_DATA,
    G_BODY_LENGTH,
    G_BODY_EOF,
    /* waiting for http-parser to report the event the guard has seen */
    G_HEAD_DONE,
    G_MSG_DONE,
} guard_state_t;

enum { EV_NONE, EV_HEAD_END, EV_CHUNK_LINE, EV_MSG_END };

enum { LAST_NONE, LAST_URL, LAST_FIELD, LAST_VALUE };

enum { FRAMING_NONE, FRAMING_LENGTH, FRAMING_CHUNKED, FRAMING_EOF };

typedef struct st_field_ref_t {
    uint32_t name_off;
    uint32_t name_len;
    uint32_t value_off;
    uint32_t value_len;
    /* the name as sent when it has upper-case letters (name_off then holds a lower-cased copy) */
    uint32_t orig_off;
    unsigned has_upper : 1;
    int disp; /* KEEP, DROP, KEEP_TE_TRAILERS: decided when the section is complete */
} field_ref_t;

struct st_rm_h1_parser_t {
    http_parser hp;
    const rm_h1_callbacks_t *cb;
    void *ctx;
    rm_h1_parser_type_t type;
    uint32_t max_headers;
    uint32_t max_header_bytes;
    uint32_t max_uri_bytes; /* 0: bounded by max_header_bytes only */
    rm_h1_error_t error;
    const char *reason;
    int http_minor; /* of the last head reported */

    unsigned paused : 1;
    unsigned closed : 1;     /* the last message had keep_alive == 0: later bytes are discarded */
    unsigned in_message : 1; /* on_message_begin was called and the message is not complete */
    unsigned interim : 1;    /* the current response head is 1xx (not 101) */
    unsigned after_interim : 1;
    unsigned expect_head : 1;
    unsigned in_trailers : 1;
    unsigned keep_alive : 1;
    /* set by the http-parser callbacks during one http_parser_execute, compared with the guard's event */
    unsigned saw_headers_complete : 1;
    unsigned saw_chunk_header : 1;
    unsigned saw_message_complete : 1;

    h2o_mem_pool_t *pool;

    /* names (lower-cased), values and the request target of the current head or trailer section, each followed by a
     * NUL; copied to the pool in one piece when the section is complete */
    char *scratch;
    size_t scratch_len;
    size_t scratch_cap;
    field_ref_t *fields;
    size_t num_fields;
    size_t fields_cap;
    size_t url_len;
    int last;

    struct {
        guard_state_t state;
        uint32_t bytes;
        uint32_t fields;
        uint32_t chunk_line_bytes;
        uint32_t target_bytes;
        uint8_t idx;
        uint8_t major;
        uint8_t minor;
        unsigned trailers : 1;
        int status;
        uint64_t remaining;
        uint64_t chunk_size;
    } g;
};

static int on_message_begin(http_parser *hp);
static int on_url(http_parser *hp, const char *at, size_t len);
static int on_header_field(http_parser *hp, const char *at, size_t len);
static int on_header_value(http_parser *hp, const char *at, size_t len);
static int on_headers_complete(http_parser *hp);
static int on_body(http_parser *hp, const char *at, size_t len);
static int on_message_complete(http_parser *hp);
static int on_chunk_header(http_parser *hp);

static const http_parser_settings hp_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/*
 * Errors
 */

static rm_h1_error_t
fail(rm_h1_parser_t *p, rm_h1_error_t err, const char *reason)
{
    /* the first error wins: later ones are consequences */
    if (p->error == RM_H1_OK) {
        /* a response is the upstream's fault whatever the rule it broke: the caller answers 502 */
        if (p->type == RM_H1_PARSE_RESPONSES && err != RM_H1_ERR_CALLBACK && err != RM_H1_ERR_INCOMPLETE)
            err = RM_H1_ERR_BAD_RESPONSE;
        p->error = err;
        p->reason = reason;
    }
    return p->error;
}

static rm_h1_error_t
bad(rm_h1_parser_t *p, const char *reason)
{
    return fail(p, RM_H1_ERR_BAD_REQUEST, reason);
}

/*
 * Guard
 */

static void
guard_reset(rm_h1_parser_t *p)
{
    memset(&p->g, 0, sizeof(p->g));
    p->g.state = G_START;
}

static void
guard_start_chunk_line(rm_h1_parser_t *p)
{
    p->g.state = G_CHUNK_SIZE;
    p->g.chunk_line_bytes = 0;
    p->g.chunk_size = 0;
}

/**
 * Scans up to `len` bytes. Returns an EV_* (and the bytes scanned, up to and including the byte that completed the
 * event, in *used), or -1 on error (p->error set, and the number of valid bytes before the offending one in *used).
 */
/* Byte `idx` (0-7) of the "HTTP/" DIGIT "." DIGIT part of a request or status line; records the
 * digits. Returns 0, or -1 for a byte that does not belong there. */
static int
version_byte(rm_h1_parser_t *p, unsigned idx, unsigned char c)
{
    if (idx == 5 || idx == 7) {
        if (c < '0' || c > '9')
            return -1;
        if (idx == 5)
            p->g.major = c - '0';
        else
            p->g.minor = c - '0';
        return 0;
    }
    return c == (unsigned char)"HTTP/?."[idx] ? 0 : -1;
}

static int
guard_scan(rm_h1_parser_t *p, const unsigned char *s, size_t len, size_t *used)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        *used = i;

        switch (p->g.state) {
        case G_CHUNK_DATA:
        case G_BODY_LENGTH: {
            size_t n = len - i < p->g.remaining ? len - i : (size_t)p->g.remaining;
            i += n;
            p->g.remaining -= n;
            if (p->g.remaining == 0) {
                if (p->g.state == G_CHUNK_DATA) {
                    p->g.state = G_CHUNK_DATA_CR;
                } else {
                    p->g.state = G_MSG_DONE;
                    *used = i;
                    return EV_MSG_END;
                }
            }
            continue;
        }
        case G_BODY_EOF:
            i = len;
            continue;
        case G_HEAD_DONE:
        case G_MSG_DONE:
            /* the previous event was not confirmed by http-parser; execute() catches that before we get here */
            bad(p, "internal framing disagreement");
            return -1;
        default:
            break;
        }

        if (p->g.state < G_CHUNK_SIZE) {
            if (++p->g.bytes > p->max_header_bytes) {
                fail(p, RM_H1_ERR_HEADERS_TOO_LARGE, p->g.trailers ? "trailer section too large" : "head too large");
                return -1;
            }
        } else if (++p->g.chunk_line_bytes > MAX_CHUNK_LINE_BYTES) {
            bad(p, "chunk-size line too long");
            return -1;
        }

        switch (p->g.state) {

        /* start line */
        case G_START:
            if (c == '\r') {
                /* RFC 9112 2.2: empty lines before the start line are ignored */
                p->g.state = G_START_LF;
            } else if (p->type == RM_H1_PARSE_REQUESTS) {
                if (!IS(c, CC_TCHAR))
                    goto BadStartLine;
                p->g.state = G_RL_METHOD;
            } else {
                if (c != 'H')
                    goto BadStartLine;
                p->g.state = G_SL_VERSION;
                p->g.idx = 1;
            }
            break;
        case G_START_LF:
            if (c != '\n')
                goto BareCR;
            p->g.state = G_START;
            break;
        case G_RL_METHOD:
            if (c == ' ')
                p->g.state = G_RL_TARGET_FIRST;
            else if (!IS(c, CC_TCHAR))
                goto BadStartLine;
            break;
        case G_RL_TARGET_FIRST:
            if (!IS(c, CC_VCHAR))
                goto BadStartLine;
            p->g.state = G_RL_TARGET;
            p->g.target_bytes = 0;
            goto TargetByte;
        case G_RL_TARGET:
            if (c == ' ') {
                p->g.state = G_RL_VERSION;
                p->g.idx = 0;
                break;
            } else if (!IS(c, CC_VCHAR)) {
                goto BadStartLine;
            }
        TargetByte:
            if (++p->g.target_bytes > p->max_uri_bytes && p->max_uri_bytes != 0) {
                fail(p, RM_H1_ERR_URI_TOO_LONG, "request target too long");
                return -1;
            }
            break;
        case G_RL_VERSION:
            /* "HTTP/" DIGIT "." DIGIT CRLF */
            if (p->g.idx < 8) {
                if (version_byte(p, p->g.idx++, c) != 0)
                    goto BadStartLine;
                break;
            }
            if (p->g.idx++ == 8) {
                if (c != '\r')
                    goto BadStartLine;
                break;
            }
            if (c != '\n')
                goto BareCR;
            if (p->g.major != 1 || p->g.minor > 1) {
                fail(p, RM_H1_ERR_VERSION, "unsupported HTTP version");
                return -1;
            }
            p->g.state = G_FIELD_START;
            break;
        case G_SL_VERSION:
            /* "HTTP/" DIGIT "." DIGIT SP */
            if (p->g.idx < 8) {
                if (version_byte(p, p->g.idx++, c) != 0)
                    goto BadStartLine;
                break;
            }
            if (c != ' ')
                goto BadStartLine;
            if (p->g.major != 1) {
                fail(p, RM_H1_ERR_VERSION, "unsupported HTTP version");
                return -1;
            }
            p->g.state = G_SL_CODE;
            p->g.idx = 0;
            p->g.status = 0;
            break;
        case G_SL_CODE:
            if (c < '0' || c > '9')
                goto BadStartLine;
            p->g.status = p->g.status * 10 + (c - '0');
            if (++p->g.idx == 3) {
                if (p->g.status < 100 || p->g.status > 599) {
                    bad(p, "invalid status code");
                    return -1;
                }
                p->g.state = G_SL_AFTER_CODE;
            }
            break;
        case G_SL_AFTER_CODE:
            /* the reason phrase and the SP before it are tolerated when missing (RFC 9112 4 says SP is required,
             * but servers omitting it are common and the line is still unambiguous) */
            if (c == ' ')
                p->g.state = G_SL_REASON;
            else if (c == '\r')
                p->g.state = G_LINE_LF;
            else
                goto BadStartLine;
            break;
        case G_SL_REASON:
            if (c == '\r')
                p->g.state = G_LINE_LF;
            else if (!IS(c, CC_FIELD))
                goto BadStartLine;
            break;
        case G_LINE_LF:
            if (c != '\n')
                goto BareCR;
            p->g.state = G_FIELD_START;
            break;

        /* field lines (head and trailers) */
        case G_FIELD_START:
            if (c == '\r') {
                p->g.state = G_END_LF;
            } else if (IS(c, CC_TCHAR)) {
                if (++p->g.fields > p->max_headers) {
                    fail(p, RM_H1_ERR_HEADERS_TOO_LARGE, p->g.trailers ? "too many trailer fields" : "too many header fields");
                    return -1;
                }
                p->g.state = G_FIELD_NAME;
            } else if (c == ' ' || c == '\t') {
                bad(p, "obsolete line folding or whitespace before a field line");
                return -1;
            } else {
                goto BadFieldName;
            }
            break;
        case G_FIELD_NAME:
            if (c == ':') {
                p->g.state = G_FIELD_VALUE;
            } else if (!IS(c, CC_TCHAR)) {
                if (c == ' ' || c == '\t') {
                    bad(p, "whitespace between field name and colon");
                    return -1;
                }
                goto BadFieldName;
            }
            break;
        case G_FIELD_VALUE: {
            /* values are the bulk of a head: skip valid bytes in one go, up to the byte limit (the byte beyond it is
             * then counted, and refused, by the next iteration) */
            size_t j = i, budget = p->max_header_bytes - (p->g.bytes - 1);
            while (j < len && j - i < budget && IS(s[j], CC_FIELD))
                ++j;
            if (j != i) {
                p->g.bytes += (uint32_t)(j - i) - 1;
                i = j;
                continue;
            }
            if (c == '\r') {
                p->g.state = G_FIELD_LF;
            } else if (c == '\n') {
                bad(p, "bare LF in a field line");
                return -1;
            } else {
                bad(p, "invalid byte in a field value");
                return -1;
            }
        } break;
        case G_FIELD_LF:
            if (c != '\n')
                goto BareCR;
            p->g.state = G_FIELD_START;
            break;
        case G_END_LF:
            if (c != '\n')
                goto BareCR;
            *used = i + 1;
            if (p->g.trailers) {
                p->g.state = G_MSG_DONE;
                return EV_MSG_END;
            }
            p->g.state = G_HEAD_DONE;
            return EV_HEAD_END;

        /* chunked framing */
        case G_CHUNK_SIZE:
            if (hexval(c) < 0) {
                bad(p, "invalid chunk size");
                return -1;
            }
            p->g.chunk_size = hexval(c);
            p->g.state = G_CHUNK_SIZE_MORE;
            break;
        case G_CHUNK_SIZE_MORE:
            if (hexval(c) >= 0) {
                if (p->g.chunk_size >> 59 != 0) {
                    bad(p, "chunk size too large");
                    return -1;
                }
                p->g.chunk_size = p->g.chunk_size * 16 + hexval(c);
            } else if (c == ' ' || c == '\t') {
                p->g.state = G_CHUNK_BWS;
            } else if (c == ';') {
                p->g.state = G_CHUNK_EXT;
            } else if (c == '\r') {
                p->g.state = G_CHUNK_LF;
            } else {
                bad(p, "invalid chunk size");
                return -1;
            }
            break;
        case G_CHUNK_BWS:
            if (c == ';') {
                p->g.state = G_CHUNK_EXT;
            } else if (c != ' ' && c != '\t') {
                bad(p, "invalid chunk size");
                return -1;
            }
            break;
        case G_CHUNK_EXT:
            /* extensions are ignored, but their bytes must not hide a line break */
            if (c == '\r') {
                p->g.state = G_CHUNK_LF;
            } else if (!IS(c, CC_FIELD)) {
                bad(p, "invalid byte in a chunk extension");
                return -1;
            }
            break;
        case G_CHUNK_LF:
            if (c != '\n')
                goto BareCR;
            if (p->g.chunk_size == 0) {
                p->g.state = G_FIELD_START;
                p->g.trailers = 1;
                p->g.bytes = 0;
                p->g.fields = 0;
            } else {
                p->g.state = G_CHUNK_DATA;
                p->g.remaining = p->g.chunk_size;
            }
            *used = i + 1;
            return EV_CHUNK_LINE;
        case G_CHUNK_DATA_CR:
            if (c != '\r') {
                bad(p, "chunk data not followed by CRLF");
                return -1;
            }
            p->g.state = G_CHUNK_DATA_LF;
            break;
        case G_CHUNK_DATA_LF:
            if (c != '\n')
                goto BareCR;
            guard_start_chunk_line(p);
            break;

        default:
            bad(p, "internal guard state");
            return -1;
        }
        ++i;
    }

    *used = len;
    return EV_NONE;

BadStartLine:
    bad(p, p->type == RM_H1_PARSE_REQUESTS ? "malformed request line" : "malformed status line");
    return -1;
BareCR:
    bad(p, "CR not followed by LF");
    return -1;
BadFieldName:
    bad(p, "invalid byte in a field name");
    return -1;
}

/*
 * Accumulation of the pieces http-parser reports (a name, value or target may be split across execute calls)
 */

static size_t
scratch_limit(const rm_h1_parser_t *p)
{
    /* the guard bounds the section's bytes; each string adds a NUL, and a name with upper-case letters is kept twice
     * (as sent, and lower-cased) */
    return 2 * (size_t)p->max_header_bytes + 3 * ((size_t)p->max_headers + 1);
}

static int
scratch_append(rm_h1_parser_t *p, const char *s, size_t len, int lower)
{
    if (p->scratch_len + len + 1 > scratch_limit(p)) {
        bad(p, "head larger than the guard allowed");
        return -1;
    }
    if (p->scratch_len + len + 1 > p->scratch_cap) {
        size_t cap = p->scratch_cap * 2;
        while (cap < p->scratch_len + len + 1)
            cap *= 2;
        p->scratch = rm_realloc(p->scratch, cap);
        p->scratch_cap = cap;
    }
    char *dst = p->scratch + p->scratch_len;
    if (lower) {
        for (size_t i = 0; i != len; ++i)
            dst[i] = h2o_tolower(s[i]);
    } else {
        memcpy(dst, s, len);
    }
    p->scratch_len += len;
    return 0;
}

static void
scratch_nul(rm_h1_parser_t *p)
{
    /* scratch_append always leaves room for one more byte */
    p->scratch[p->scratch_len++] = '\0';
}

/* The name of the current field is complete: NUL-terminate it and, if it has upper-case letters, add the lower-cased copy
 * the rest of the codec works with (the spelling as sent stays for HTTP/1.1 encoders: rm_header_t.orig_name). */
static int
finish_name(rm_h1_parser_t *p)
{
    field_ref_t *f = p->fields + p->num_fields;
    f->name_len = (uint32_t)(p->scratch_len - f->name_off);
    scratch_nul(p);
    if (f->has_upper) {
        f->orig_off = f->name_off;
        size_t len = f->name_len;
        if (p->scratch_len + len + 1 > scratch_limit(p)) {
            bad(p, "head larger than the guard allowed");
            return -1;
        }
        if (p->scratch_len + len + 1 > p->scratch_cap) {
            size_t cap = p->scratch_cap * 2;
            while (cap < p->scratch_len + len + 1)
                cap *= 2;
            p->scratch = rm_realloc(p->scratch, cap);
            p->scratch_cap = cap;
        }
        char *dst = p->scratch + p->scratch_len;
        const char *src = p->scratch + f->orig_off;
        for (size_t i = 0; i != len; ++i)
            dst[i] = h2o_tolower(src[i]);
        f->name_off = (uint32_t)p->scratch_len;
        p->scratch_len += len;
        scratch_nul(p);
    }
    f->value_off = (uint32_t)p->scratch_len;
    return 0;
}

static void
finish_value(rm_h1_parser_t *p)
{
    field_ref_t *f = p->fields + p->num_fields;
    size_t len = p->scratch_len - f->value_off;
    /* http-parser skips leading OWS but keeps trailing OWS, which is not part of the value (RFC 9110 5.5) */
    while (len != 0 && (p->scratch[f->value_off + len - 1] == ' ' || p->scratch[f->value_off + len - 1] == '\t'))
        --len;
    f->value_len = (uint32_t)len;
    p->scratch_len = f->value_off + len;
    scratch_nul(p);
    ++p->num_fields;
}

static void
finish_section(rm_h1_parser_t *p)
{
    switch (p->last) {
    case LAST_URL:
        p->url_len = p->scratch_len;
        scratch_nul(p);
        break;
    case LAST_FIELD: {
        /* the guard requires a colon, after which http-parser always reports a value: unreachable, but harmless */
        if (finish_name(p) != 0)
            break;
        finish_value(p);
    } break;
    case LAST_VALUE:
        finish_value(p);
        break;
    default:
        break;
    }
    p->last = LAST_NONE;
}

static void
reset_section(rm_h1_parser_t *p)
{
    p->scratch_len = 0;
    p->num_fields = 0;
    p->url_len = 0;
    p->last = LAST_NONE;
}

static int
on_url(http_parser *hp, const char *at, size_t len)
{
    rm_h1_parser_t *p = hp->data;
    if (p->last != LAST_NONE && p->last != LAST_URL) {
        bad(p, "request target after a field");
        return -1;
    }
    p->last = LAST_URL;
    return scratch_append(p, at, len, 0);
}

static int
on_header_field(http_parser *hp, const char *at, size_t len)
{
    rm_h1_parser_t *p = hp->data;
    if (p->last != LAST_FIELD) {
        finish_section(p);
        if (p->num_fields >= p->max_headers) {
            bad(p, "more fields than the guard allowed");
            return -1;
        }
        if (p->num_fields == p->fields_cap) {
            p->fields_cap *= 2;
            p->fields = rm_realloc(p->fields, sizeof(*p->fields) * p->fields_cap);
        }
        p->fields[p->num_fields].name_off = (uint32_t)p->scratch_len;
        p->fields[p->num_fields].has_upper = 0;
        p->last = LAST_FIELD;
    }
    /* kept as sent: finish_name lower-cases a copy only if needed, so all-lower-case heads cost nothing more */
    for (size_t i = 0; i != len; ++i)
        if (at[i] >= 'A' && at[i] <= 'Z') {
            p->fields[p->num_fields].has_upper = 1;
            break;
        }
    return scratch_append(p, at, len, 0);
}

static int
on_header_value(http_parser *hp, const char *at, size_t len)
{
    rm_h1_parser_t *p = hp->data;
    if (p->last == LAST_FIELD) {
        if (finish_name(p) != 0)
            return -1;
        p->last = LAST_VALUE;
    } else if (p->last != LAST_VALUE) {
        bad(p, "field value without a name");
        return -1;
    }
    /* the guard rejects obs-fold, so consecutive value pieces are always one value split by the caller's reads */
    return scratch_append(p, at, len, 0);
}

/*
 * Head semantics
 */

static int
lc_eq(const char *s, size_t len, const char *lit, size_t lit_len)
{
    return len == lit_len && memcmp(s, lit, len) == 0;
}

#define NAME_IS(name, len, lit) lc_eq((name), (len), H2O_STRLIT(lit))

static const char *
skip_ows(const char *p, const char *end)
{
    while (p != end && (*p == ' ' || *p == '\t'))
        ++p;
    return p;
}

/**
 * Iterates over the elements of a comma-separated list (RFC 9110 5.6.1). Returns 1 and the element (OWS trimmed,
 * possibly empty) in *elem and *elem_len, or 0 at the end.
 */
static int
next_list_element(const char **cur, const char *end, const char **elem, size_t *elem_len)
{
    if (*cur == NULL)
        return 0;
    const char *p = skip_ows(*cur, end), *comma = memchr(p, ',', (size_t)(end - p)), *e = comma != NULL ? comma : end;
    while (e != p && (e[-1] == ' ' || e[-1] == '\t'))
        --e;
    *elem = p;
    *elem_len = (size_t)(e - p);
    *cur = comma != NULL ? comma + 1 : NULL;
    return 1;
}

static int
parse_content_length(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18)
        return -1; /* 18 digits keep the value below INT64_MAX without overflow checks */
    int64_t v = 0;
    for (size_t i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int
is_valid_authority(const char *s, size_t len)
{
    for (size_t i = 0; i != len; ++i)
        if (!IS(s[i], CC_AUTHORITY))
            return 0;
    return 1;
}

typedef struct st_head_info_t {
    int num_host;
    h2o_iovec_t host;
    size_t host_field;
    int num_content_length;
    int64_t content_length;
    size_t length_field;
    /* the first Transfer-Encoding field (valid when has_te) */
    size_t te_field;
    /* transfer codings, in order, over every Transfer-Encoding line */
    int has_te;
    int te_empty_element;
    int te_chunked_not_last;
    int te_other_coding;
    int te_last_is_chunked;
    int conn_close;
    int conn_keep_alive;
    size_t num_options;
    h2o_iovec_t options[MAX_CONNECTION_OPTIONS];
    int te_trailers;
    int expect_continue;
    int is_grpc;
    /* "Connection: upgrade" and the Upgrade field's value (in scratch; len 0: none) */
    int conn_upgrade;
    int num_upgrade;
    h2o_iovec_t upgrade;
} head_info_t;

/* field dispositions while building a head */
enum { KEEP, DROP, KEEP_TE_TRAILERS };

static int
classify_transfer_encoding(head_info_t *info, const char *v, size_t len)
{
    const char *cur = v, *end = v + len, *elem;
    size_t elem_len;
    info->has_te = 1;
    while (next_list_element(&cur, end, &elem, &elem_len)) {
        if (elem_len == 0) {
            /* "chunked," is read differently by different parsers: refuse rather than guess */
            info->te_empty_element = 1;
            continue;
        }
        if (info->te_last_is_chunked)
            info->te_chunked_not_last = 1;
        info->te_last_is_chunked = h2o_lcstris(elem, elem_len, H2O_STRLIT("chunked"));
        if (!info->te_last_is_chunked)
            info->te_other_coding = 1;
    }
    return DROP;
}

static int
classify_connection(rm_h1_parser_t *p, head_info_t *info, const char *v, size_t len)
{
    const char *cur = v, *end = v + len, *elem;
    size_t elem_len;
    while (next_list_element(&cur, end, &elem, &elem_len)) {
        if (elem_len == 0)
            continue;
        if (h2o_lcstris(elem, elem_len, H2O_STRLIT("close"))) {
            info->conn_close = 1;
        } else if (h2o_lcstris(elem, elem_len, H2O_STRLIT("keep-alive"))) {
            info->conn_keep_alive = 1;
        } else {
            if (h2o_lcstris(elem, elem_len, H2O_STRLIT("upgrade")))
                info->conn_upgrade = 1;
            if (info->num_options == MAX_CONNECTION_OPTIONS) {
                bad(p, "too many connection options");
                return -1;
            }
            info->options[info->num_options++] = h2o_iovec_init(elem, elem_len);
        }
    }
    return DROP;
}

static int
classify_te(head_info_t *info, const char *v, size_t len)
{
    const char *cur = v, *end = v + len, *elem;
    size_t elem_len;
    while (next_list_element(&cur, end, &elem, &elem_len)) {
        /* "trailers" takes no parameters; a weighted "trailers;q=1" is not the keyword */
        if (h2o_lcstris(elem, elem_len, H2O_STRLIT("trailers"))) {
            info->te_trailers = 1;
            return KEEP_TE_TRAILERS;
        }
    }
    return DROP;
}

static int
is_grpc_content_type(const char *v, size_t len)
{
    /* gRPC PROTOCOL-HTTP2.md: "application/grpc" [("+proto" / "+json" / {custom})] */
    static const char prefix[] = "application/grpc";
    size_t plen = sizeof(prefix) - 1;
    if (len < plen || !h2o_lcstris(v, plen, prefix, plen))
        return 0;
    return len == plen || v[plen] == '+' || v[plen] == ';';
}

static int
is_option_named(const head_info_t *info, const char *name, size_t len)
{
    for (size_t i = 0; i != info->num_options; ++i)
        if (h2o_lcstris(info->options[i].base, info->options[i].len, name, len))
            return 1;
    return 0;
}

/**
 * Classifies the fields of the head in scratch; fills `info` and `disp` (one entry per field). Returns 0 or -1 (p->error
 * set).
 */
static int
classify_fields(rm_h1_parser_t *p, head_info_t *info)
{
    int is_request = p->type == RM_H1_PARSE_REQUESTS;
    memset(info, 0, sizeof(*info));
    info->content_length = -1;

    for (size_t i = 0; i != p->num_fields; ++i) {
        const field_ref_t *f = p->fields + i;
        const char *name = p->scratch + f->name_off, *value = p->scratch + f->value_off;
        size_t nlen = f->name_len, vlen = f->value_len;
        int d = KEEP;

        if (NAME_IS(name, nlen, "host")) {
            if (is_request) {
                ++info->num_host;
                info->host = h2o_iovec_init(value, vlen);
                info->host_field = i;
                d = DROP;
            }
        } else if (NAME_IS(name, nlen, "content-length")) {
            int64_t cl;
            if (parse_content_length(value, vlen, &cl) != 0) {
                bad(p, "invalid content-length");
                return -1;
            }
            if (info->num_content_length++ != 0) {
                /* http-parser refuses a second Content-Length even with the same value (RFC 9110 8.6 allows it) */
                bad(p, "several content-length fields");
                return -1;
            }
            info->content_length = cl;
            info->length_field = i;
        } else if (NAME_IS(name, nlen, "transfer-encoding")) {
            if (!info->has_te)
                info->te_field = i;
            d = classify_transfer_encoding(info, value, vlen);
        } else if (nlen > 17 && memcmp(name, "transfer-encoding", 17) == 0) {
            /* http-parser takes any name starting with "transfer-encoding" for one (uses_transfer_encoding stays
             * set), so such a message would be framed differently by the two parsers depending on the other fields */
            bad(p, "field name starting with transfer-encoding");
            return -1;
        } else if (NAME_IS(name, nlen, "connection")) {
            if ((d = classify_connection(p, info, value, vlen)) < 0)
                return -1;
        } else if (NAME_IS(name, nlen, "te")) {
            d = is_request ? classify_te(info, value, vlen) : DROP;
        } else if (NAME_IS(name, nlen, "expect")) {
            if (is_request && h2o_lcstris(value, vlen, H2O_STRLIT("100-continue"))) {
                /* RFC 9110 10.1.1: an HTTP/1.0 client's expectation is ignored */
                info->expect_continue = p->hp.http_minor >= 1;
                d = DROP;
            }
        } else if (NAME_IS(name, nlen, "content-type")) {
            info->is_grpc = is_grpc_content_type(value, vlen);
        } else if (NAME_IS(name, nlen, "upgrade")) {
            ++info->num_upgrade;
            info->upgrade = h2o_iovec_init(value, vlen);
            d = DROP;
        } else if (rm_header_is_hop_by_hop(name, nlen)) {
            d = DROP;
        }
        p->fields[i].disp = d;
    }

    /* RFC 9110 7.6.1: fields named by Connection are hop-by-hop too; "te" stays ("Connection: te" is required with
     * it) and so does anything the codec has already pulled out of the list */
    if (info->num_options != 0) {
        for (size_t i = 0; i != p->num_fields; ++i) {
            field_ref_t *f = p->fields + i;
            if (f->disp == KEEP && is_option_named(info, p->scratch + f->name_off, f->name_len))
                f->disp = DROP;
        }
    }
    return 0;
}

/* The spelling of field `i` as sent (in the pool copy at `base`), NULL when lower-case: no copy is made. */
static const char *
orig_name_of(const rm_h1_parser_t *p, const char *base, size_t i)
{
    return p->fields[i].has_upper ? base + p->fields[i].orig_off : NULL;
}

/**
 * Moves the scratch strings into the pool and builds the field list of the kept fields. Returns the base of the copy.
 */
static char *
build_fields(rm_h1_parser_t *p, rm_headers_t *out)
{
    char *base = h2o_mem_alloc_pool(p->pool, p->scratch_len != 0 ? p->scratch_len : 1);
    memcpy(base, p->scratch, p->scratch_len);

    size_t kept = 0;
    for (size_t i = 0; i != p->num_fields; ++i)
        kept += p->fields[i].disp != DROP;
    out->size = 0;
    out->capacity = kept + FIELDS_HEADROOM;
    out->entries = h2o_mem_alloc_pool(p->pool, sizeof(*out->entries) * out->capacity);
    for (size_t i = 0; i != p->num_fields; ++i) {
        const field_ref_t *f = p->fields + i;
        if (f->disp == DROP)
            continue;
        rm_header_t *h = out->entries + out->size++;
        h->name = h2o_iovec_init(base + f->name_off, f->name_len);
        h->orig_name = f->has_upper ? base + f->orig_off : NULL;
        if (f->disp == KEEP_TE_TRAILERS)
            h->value = h2o_iovec_init(H2O_STRLIT("trailers"));
        else
            h->value = h2o_iovec_init(base + f->value_off, f->value_len);
    }
    return base;
}

/**
 * Checks that http-parser frames the body the way we decided to. Returns 0 or -1 (p->error set).
 */
static int
check_framing_agreement(rm_h1_parser_t *p, int framing, int64_t content_length)
{
    unsigned flags = p->hp.flags;
    int ok;
    switch (framing) {
    case FRAMING_CHUNKED:
        ok = (flags & F_CHUNKED) != 0 && (flags & F_CONTENTLENGTH) == 0;
        break;
    case FRAMING_LENGTH:
        ok = (flags & (F_CHUNKED | F_CONTENTLENGTH)) == F_CONTENTLENGTH && p->hp.content_length == (uint64_t)content_length &&
             !p->hp.uses_transfer_encoding;
        break;
    default: /* no body, or (responses) until close */
        ok = (flags & F_CHUNKED) == 0 && !p->hp.uses_transfer_encoding &&
             ((flags & F_CONTENTLENGTH) == 0 || (content_length == 0 && p->hp.content_length == 0));
        break;
    }
    if (!ok) {
        bad(p, "message framing is ambiguous");
        return -1;
    }
    return 0;
}

static void
set_body_framing(rm_h1_parser_t *p, int framing, int64_t content_length)
{
    switch (framing) {
    case FRAMING_LENGTH:
        p->g.state = G_BODY_LENGTH;
        p->g.remaining = (uint64_t)content_length;
        break;
    case FRAMING_CHUNKED:
        guard_start_chunk_line(p);
        break;
    case FRAMING_EOF:
        p->g.state = G_BODY_EOF;
        break;
    default:
        p->g.state = G_MSG_DONE;
        break;
    }
}

/**
 * Parses an absolute-form target (RFC 9112 3.2.2). Only http and https; no userinfo.
 */
static int
parse_absolute_form(rm_h1_parser_t *p, char *url, size_t len, rm_req_head_t *head)
{
    size_t scheme_len = 0;
    while (scheme_len != len && url[scheme_len] != ':')
        ++scheme_len;
    if (len - scheme_len < 3 || memcmp(url + scheme_len, "://", 3) != 0)
        return -1;
    if (h2o_lcstris(url, scheme_len, H2O_STRLIT("http")))
        head->scheme = h2o_iovec_init(H2O_STRLIT("http"));
    else if (h2o_lcstris(url, scheme_len, H2O_STRLIT("https")))
        head->scheme = h2o_iovec_init(H2O_STRLIT("https"));
    else
        return -1;

    char *auth = url + scheme_len + 3, *end = url + len, *auth_end = auth;
    while (auth_end != end && *auth_end != '/' && *auth_end != '?')
        ++auth_end;
    if (auth_end == auth || !is_valid_authority(auth, (size_t)(auth_end - auth)))
        return -1; /* '@' (userinfo) is not in the authority class */
    /* copied: in place it would be followed by the path, not by a NUL */
    head->authority = h2o_strdup(p->pool, auth, (size_t)(auth_end - auth));

    if (auth_end == end) {
        /* RFC 9112 3.2.4: an empty path is "*" for OPTIONS, "/" otherwise */
        if (head->method.len == 7 && memcmp(head->method.base, "OPTIONS", 7) == 0)
            head->path = h2o_iovec_init(H2O_STRLIT("*"));
        else
            head->path = h2o_iovec_init(H2O_STRLIT("/"));
    } else if (*auth_end == '?') {
        size_t qlen = (size_t)(end - auth_end);
        char *path = h2o_mem_alloc_pool(p->pool, qlen + 2);
        path[0] = '/';
        memcpy(path + 1, auth_end, qlen);
        path[qlen + 1] = '\0';
        head->path = h2o_iovec_init(path, qlen + 1);
    } else {
        head->path = h2o_iovec_init(auth_end, (size_t)(end - auth_end));
    }
    return 0;
}

static int
request_head_complete(rm_h1_parser_t *p)
{
    head_info_t info;
    int is_11 = p->hp.http_minor == 1;

    if (p->hp.http_major != p->g.major || p->hp.http_minor != p->g.minor)
        return bad(p, "internal version disagreement"), -1;
    if (p->hp.method == HTTP_CONNECT)
        return fail(p, RM_H1_ERR_NOT_IMPLEMENTED, "CONNECT is not supported"), -1;
    if (classify_fields(p, &info) != 0)
        return -1;

    /* framing (RFC 9112 6.1, 6.3) */
    int framing = FRAMING_NONE;
    if (info.has_te) {
        if (!is_11)
            return bad(p, "transfer-encoding in an HTTP/1.0 request"), -1;
        if (info.num_content_length != 0)
            return bad(p, "both transfer-encoding and content-length"), -1;
        if (info.te_empty_element || !info.te_last_is_chunked || info.te_chunked_not_last)
            return bad(p, "chunked is not the final transfer coding"), -1;
        if (info.te_other_coding)
            return fail(p, RM_H1_ERR_NOT_IMPLEMENTED, "unsupported transfer coding"), -1;
        framing = FRAMING_CHUNKED;
    } else if (info.content_length > 0) {
        framing = FRAMING_LENGTH;
    }
    if (check_framing_agreement(p, framing, info.content_length) != 0)
        return -1;

    /* RFC 9112 3.2 */
    if (info.num_host > 1 || (is_11 && info.num_host == 0))
        return bad(p, "a request needs exactly one host field"), -1;
    if (info.num_host == 1 && !is_valid_authority(info.host.base, info.host.len))
        return bad(p, "invalid host"), -1;

    rm_req_head_t *head = h2o_mem_alloc_pool(p->pool, sizeof(*head));
    memset(head, 0, sizeof(*head));
    const char *method = http_method_str(p->hp.method);
    head->method = h2o_iovec_init(method, strlen(method));
    head->scheme = h2o_iovec_init(H2O_STRLIT("http"));
    char *base = build_fields(p, &head->headers);
    if (info.num_host == 1) {
        head->authority = h2o_iovec_init(base + (info.host.base - p->scratch), info.host.len);
        if (p->fields[info.host_field].has_upper)
            head->host_orig_name = base + p->fields[info.host_field].orig_off;
    } else {
        head->authority = h2o_iovec_init(base + p->url_len, 0); /* points at the url's NUL: an empty string */
    }

    /* request target (RFC 9112 3.2) */
    char *url = base;
    size_t url_len = p->url_len;
    if (url_len == 0 || memchr(url, '#', url_len) != NULL)
        return bad(p, "invalid request target"), -1;
    if (url[0] == '/') {
        head->path = h2o_iovec_init(url, url_len);
    } else if (url[0] == '*') {
        if (url_len != 1 || p->hp.method != HTTP_OPTIONS)
            return bad(p, "asterisk-form is only for OPTIONS"), -1;
        head->path = h2o_iovec_init(url, 1);
    } else if (parse_absolute_form(p, url, url_len, head) != 0) {
        return bad(p, "invalid request target"), -1;
    }

    head->content_length = info.num_content_length != 0 ? info.content_length : -1;
    if (info.num_content_length != 0)
        head->length_orig_name = orig_name_of(p, base, info.length_field);
    if (info.has_te)
        head->chunked_orig_name = orig_name_of(p, base, info.te_field);
    head->has_body = framing != FRAMING_NONE;
    head->te_trailers = info.te_trailers;
    head->is_grpc = info.is_grpc;
    head->expect_continue = info.expect_continue;
    head->orig_h1 = 1;
    /* RFC 9110 7.8: only in HTTP/1.1, named by Connection; one Upgrade field; no body to tell from the new protocol */
    if (is_11 && info.conn_upgrade && info.num_upgrade == 1 && info.upgrade.len != 0 && framing == FRAMING_NONE)
        head->upgrade = h2o_iovec_init(base + (info.upgrade.base - p->scratch), info.upgrade.len);

    p->keep_alive = is_11 ? !info.conn_close : info.conn_keep_alive && !info.conn_close;
    p->http_minor = p->g.minor;
    set_body_framing(p, framing, info.content_length);
    reset_section(p);

    if (p->cb->on_request_head(p->ctx, head) != 0)
        return fail(p, RM_H1_ERR_CALLBACK, "on_request_head failed"), -1;
    return 0;
}

static int
response_head_complete(rm_h1_parser_t *p)
{
    head_info_t info;
    int status = p->g.status;

    if (p->hp.http_major != p->g.major || p->hp.http_minor != p->g.minor || p->hp.status_code != (unsigned)status)
        return bad(p, "internal status line disagreement"), -1;
    if (classify_fields(p, &info) != 0)
        return -1;

    p->interim = status < 200 && status != 101;
    /* RFC 9112 6.3: these have no body whatever their fields say */
    int skip_body = status < 200 || status == 204 || status == 304 || p->expect_head;

    int framing;
    if (info.has_te) {
        if (p->g.minor == 0)
            return bad(p, "transfer-encoding in an HTTP/1.0 response"), -1;
        if (info.num_content_length != 0)
            return bad(p, "both transfer-encoding and content-length"), -1;
        /* a transfer coding other than chunked could not be removed before forwarding */
        if (info.te_empty_element || !info.te_last_is_chunked || info.te_chunked_not_last || info.te_other_coding)
            return bad(p, "unsupported transfer coding"), -1;
        framing = FRAMING_CHUNKED;
    } else if (info.num_content_length != 0) {
        framing = info.content_length > 0 ? FRAMING_LENGTH : FRAMING_NONE;
    } else {
        framing = FRAMING_EOF;
    }
    if (skip_body)
        framing = FRAMING_NONE;
    else if (check_framing_agreement(p, framing, info.content_length) != 0)
        return -1;

    rm_resp_head_t *head = h2o_mem_alloc_pool(p->pool, sizeof(*head));
    memset(head, 0, sizeof(*head));
    head->status = status;
    char *base = build_fields(p, &head->headers);
    head->content_length = info.num_content_length != 0 ? info.content_length : -1;
    if (info.num_content_length != 0)
        head->length_orig_name = orig_name_of(p, base, info.length_field);
    if (info.has_te)
        head->chunked_orig_name = orig_name_of(p, base, info.te_field);
    if (status == 101 && info.num_upgrade == 1 && info.upgrade.len != 0)
        head->upgrade = h2o_iovec_init(base + (info.upgrade.base - p->scratch), info.upgrade.len);

    p->keep_alive =
        (p->g.minor >= 1 ? !info.conn_close : info.conn_keep_alive && !info.conn_close) && framing != FRAMING_EOF && status != 101;
    p->http_minor = p->g.minor >= 1 ? 1 : 0;
    set_body_framing(p, framing, info.content_length);
    reset_section(p);

    if (p->cb->on_response_head(p->ctx, head) != 0)
        return fail(p, RM_H1_ERR_CALLBACK, "on_response_head failed"), -1;
    return skip_body;
}

/*
 * http-parser callbacks
 */

static int
on_message_begin(http_parser *hp)
{
    rm_h1_parser_t *p = hp->data;
    /* the final response after interim ones belongs to the same exchange: same pool */
    if (!p->after_interim) {
        p->pool = p->cb->on_message_begin(p->ctx);
        if (p->pool == NULL)
            rm_fatal("h1: on_message_begin returned no pool");
    }
    p->in_message = 1;
    p->in_trailers = 0;
    reset_section(p);
    return 0;
}

static int
on_headers_complete(http_parser *hp)
{
    rm_h1_parser_t *p = hp->data;
    p->saw_headers_complete = 1;
    if (p->g.state != G_HEAD_DONE) {
        bad(p, "head ends where the guard saw none");
        return -1;
    }
    finish_section(p);
    return p->type == RM_H1_PARSE_REQUESTS ? request_head_complete(p) : response_head_complete(p);
}

static int
on_body(http_parser *hp, const char *at, size_t len)
{
    rm_h1_parser_t *p = hp->data;
    if (len != 0 && p->cb->on_body(p->ctx, at, len) != 0) {
        fail(p, RM_H1_ERR_CALLBACK, "on_body failed");
        return -1;
    }
    return 0;
}

static int
on_chunk_header(http_parser *hp)
{
    rm_h1_parser_t *p = hp->data;
    p->saw_chunk_header = 1;
    if (hp->content_length != p->g.chunk_size || !(p->g.state == G_CHUNK_DATA || (p->g.trailers && p->g.state == G_FIELD_START))) {
        bad(p, "chunk size disagreement");
        return -1;
    }
    if (hp->content_length == 0)
        p->in_trailers = 1;
    return 0;
}

static int
deliver_trailers(rm_h1_parser_t *p)
{
    size_t kept = 0;
    for (size_t i = 0; i != p->num_fields; ++i) {
        field_ref_t *f = p->fields + i;
        const char *name = p->scratch + f->name_off;
        size_t nlen = f->name_len;
        /* RFC 9110 6.5.1: fields that frame, route or control the connection have no meaning as trailers */
        int drop = rm_header_is_hop_by_hop(name, nlen) || NAME_IS(name, nlen, "te") || NAME_IS(name, nlen, "content-length") ||
                   NAME_IS(name, nlen, "host") || NAME_IS(name, nlen, "trailer");
        f->disp = drop ? DROP : KEEP;
        kept += !drop;
    }
    if (kept == 0)
        return 0;
    rm_headers_t *trailers = h2o_mem_alloc_pool(p->pool, sizeof(*trailers));
    build_fields(p, trailers);
    if (p->cb->on_trailers(p->ctx, trailers) != 0) {
        fail(p, RM_H1_ERR_CALLBACK, "on_trailers failed");
        return -1;
    }
    return 0;
}

static void
shrink_scratch(rm_h1_parser_t *p)
{
    /* one huge head must not pin its memory for the life of a keep-alive connection */
    if (p->scratch_cap > SCRATCH_KEEP) {
        free(p->scratch);
        p->scratch = rm_malloc(SCRATCH_INITIAL);
        p->scratch_cap = SCRATCH_INITIAL;
    }
    if (p->fields_cap > FIELDS_KEEP) {
        free(p->fields);
        p->fields = rm_malloc(sizeof(*p->fields) * FIELDS_INITIAL);
        p->fields_cap = FIELDS_INITIAL;
    }
}

static int
on_message_complete(http_parser *hp)
{
    rm_h1_parser_t *p = hp->data;
    p->saw_message_complete = 1;
    if (p->g.state != G_MSG_DONE) {
        bad(p, "message ends where the guard saw no end");
        return -1;
    }
    guard_reset(p);

    if (p->in_trailers) {
        finish_section(p);
        if (p->num_fields != 0 && deliver_trailers(p) != 0)
            return -1;
        p->in_trailers = 0;
    }
    reset_section(p);

    if (p->interim) {
        p->interim = 0;
        p->after_interim = 1;
        return 0;
    }
    p->after_interim = 0;
    p->in_message = 0;
    p->expect_head = 0;
    shrink_scratch(p);

    int keep_alive = p->keep_alive;
    if (!keep_alive)
        p->closed = 1;
    /* pause first: the callback may resume the parser to go on with the next message right away */
    http_parser_pause(hp, 1);
    p->paused = 1;
    if (p->cb->on_message_complete(p->ctx, keep_alive) != 0) {
        fail(p, RM_H1_ERR_CALLBACK, "on_message_complete failed");
        return -1;
    }
    return 0;
}

/*
 * Public API
 */

rm_h1_parser_t *
rm_h1_parser_create(rm_h1_parser_type_t type, const rm_h1_callbacks_t *cb, void *ctx, uint32_t max_headers,
                    uint32_t max_header_bytes)
{
    rm_h1_parser_t *p = rm_calloc(1, sizeof(*p));
    http_parser_init(&p->hp, type == RM_H1_PARSE_REQUESTS ? HTTP_REQUEST : HTTP_RESPONSE);
    p->hp.data = p;
    p->cb = cb;
    p->ctx = ctx;
    p->type = type;
    p->http_minor = -1;
    p->max_headers = max_headers != 0 ? max_headers : DEFAULT_MAX_HEADERS;
    p->max_header_bytes = max_header_bytes != 0 ? max_header_bytes : DEFAULT_MAX_HEADER_BYTES;
    if (p->max_header_bytes > HP_MAX_HEADER_BYTES)
        p->max_header_bytes = HP_MAX_HEADER_BYTES;
    p->scratch = rm_malloc(SCRATCH_INITIAL);
    p->scratch_cap = SCRATCH_INITIAL;
    p->fields = rm_malloc(sizeof(*p->fields) * FIELDS_INITIAL);
    p->fields_cap = FIELDS_INITIAL;
    guard_reset(p);
    return p;
}

void
rm_h1_parser_set_max_uri_bytes(rm_h1_parser_t *p, uint32_t max_uri_bytes)
{
    p->max_uri_bytes = max_uri_bytes;
}

void
rm_h1_parser_destroy(rm_h1_parser_t *p)
{
    if (p == NULL)
        return;
    free(p->scratch);
    free(p->fields);
    free(p);
}

static rm_h1_error_t
map_http_errno(rm_h1_parser_t *p, enum http_errno e)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        return fail(p, RM_H1_ERR_HEADERS_TOO_LARGE, "head too large");
    case HPE_INVALID_METHOD:
        /* the guard has checked the token syntax: this is a method http-parser does not know */
        return fail(p, RM_H1_ERR_NOT_IMPLEMENTED, "unknown method");
    case HPE_INVALID_EOF_STATE:
        return fail(p, RM_H1_ERR_INCOMPLETE, "connection closed in the middle of a message");
    default:
        if (e >= HPE_CB_message_begin && e <= HPE_CB_chunk_complete)
            return fail(p, RM_H1_ERR_CALLBACK, "callback failed");
        return bad(p, http_errno_description(e));
    }
}

ssize_t
rm_h1_parser_execute(rm_h1_parser_t *p, const char *data, size_t len)
{
    if (p->error != RM_H1_OK)
        return p->error;
    if (p->paused)
        return 0;
    if (p->closed)
        return (ssize_t)len;

    size_t off = 0;
    while (off < len) {
        size_t n;
        int ev = guard_scan(p, (const unsigned char *)data + off, len - off, &n);
        if (ev < 0) {
            /* errors are reported in byte order whatever the split of the input: an error http-parser finds in the
             * bytes before the guard's wins */
            rm_h1_error_t guard_error = p->error;
            const char *guard_reason = p->reason;
            p->error = RM_H1_OK;
            if (n != 0) {
                /* (never with 0 bytes: http-parser takes that for EOF) */
                http_parser_execute(&p->hp, &hp_settings, data + off, n);
                enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
                if (p->error == RM_H1_OK && e != HPE_OK && e != HPE_PAUSED)
                    map_http_errno(p, e);
            }
            if (p->error == RM_H1_OK) {
                p->error = guard_error;
                p->reason = guard_reason;
            }
            return p->error;
        }

        p->saw_headers_complete = 0;
        p->saw_chunk_header = 0;
        p->saw_message_complete = 0;
        size_t parsed = http_parser_execute(&p->hp, &hp_settings, data + off, n);
        if (p->error != RM_H1_OK)
            return p->error;
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e != HPE_OK && e != HPE_PAUSED)
            return map_http_errno(p, e);

        /* every event must be seen by both parsers at the same byte */
        int agree = parsed == n;
        switch (ev) {
        case EV_HEAD_END:
            agree = agree && p->saw_headers_complete && !p->saw_chunk_header;
            break;
        case EV_CHUNK_LINE:
            agree = agree && p->saw_chunk_header && !p->saw_headers_complete && !p->saw_message_complete;
            break;
        case EV_MSG_END:
            agree = agree && p->saw_message_complete && !p->saw_headers_complete && !p->saw_chunk_header;
            break;
        default:
            agree = agree && !p->saw_headers_complete && !p->saw_chunk_header && !p->saw_message_complete;
            break;
        }
        if (!agree)
            return bad(p, "message framing disagreement");
        off += n;

        if (p->paused)
            break;
        if (p->closed) {
            /* the callback resumed after the last message of the connection */
            off = len;
            break;
        }
    }
    return (ssize_t)off;
}

int
rm_h1_parser_finish(rm_h1_parser_t *p)
{
    if (p->error != RM_H1_OK)
        return p->error;
    if (p->paused || p->closed)
        return 0;
    if (p->g.state == G_BODY_EOF) {
        p->g.state = G_MSG_DONE;
        p->saw_message_complete = 0;
        http_parser_execute(&p->hp, &hp_settings, "", 0);
        if (p->error != RM_H1_OK)
            return p->error;
        enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
        if (e != HPE_OK && e != HPE_PAUSED)
            return map_http_errno(p, e);
        if (!p->saw_message_complete)
            return bad(p, "message framing disagreement");
        return 0;
    }
    if (p->g.state == G_START && !p->in_message)
        return 0;
    return fail(p, RM_H1_ERR_INCOMPLETE, "connection closed in the middle of a message");
}

void
rm_h1_parser_resume(rm_h1_parser_t *p)
{
    if (!p->paused)
        return;
    p->paused = 0;
    if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
        http_parser_pause(&p->hp, 0);
}

void
rm_h1_parser_expect_head_response(rm_h1_parser_t *p, int is_head)
{
    p->expect_head = is_head != 0;
}

int
rm_h1_parser_http_minor(const rm_h1_parser_t *p)
{
    return p->http_minor;
}

const char *
rm_h1_parser_error_reason(const rm_h1_parser_t *p)
{
    return p->reason != NULL ? p->reason : "";
}

int
rm_h1_error_status(rm_h1_error_t err)
{
    switch (err) {
    case RM_H1_ERR_HEADERS_TOO_LARGE:
        return 431;
    case RM_H1_ERR_URI_TOO_LONG:
        return 414;
    case RM_H1_ERR_NOT_IMPLEMENTED:
        return 501;
    case RM_H1_ERR_VERSION:
        return 505;
    case RM_H1_ERR_BAD_RESPONSE:
        return 502;
    case RM_H1_ERR_CALLBACK:
        return 500;
    default:
        return 400;
    }
}

/*
 * Encoders
 */

static char *
reserve(h2o_buffer_t **buf, size_t len)
{
    h2o_iovec_t v = h2o_buffer_reserve(buf, len);
    if (v.base == NULL)
        rm_fatal("h1: out of memory reserving %zu bytes", len);
    return v.base;
}

static char *
put(char *dst, const void *src, size_t len)
{
    /* an empty iovec may have a NULL base, which memcpy must not see */
    if (len != 0)
        memcpy(dst, src, len);
    return dst + len;
}

#define PUT_LIT(dst, lit) put((dst), (lit), sizeof(lit) - 1)

static int
is_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (!IS(s[i], CC_TCHAR))
            return 0;
    return 1;
}

static int
is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i != len; ++i)
        if (!IS(s[i], CC_FIELD))
            return 0;
    return 1;
}

enum { FIELD_WRITE, FIELD_SKIP, FIELD_INVALID };

/**
 * Decides whether an encoder writes a field of a message model head: fields the encoder writes itself or that are
 * connection-specific are skipped, pseudo fields too; a field that cannot be written safely is invalid.
 */
static int
field_disposition(const rm_header_t *h, int is_request)
{
    const char *name = h->name.base;
    size_t len = h->name.len;
    if (len != 0 && name[0] == ':')
        return FIELD_SKIP;
    if (rm_header_is_hop_by_hop(name, len) || h2o_lcstris(name, len, H2O_STRLIT("content-length")))
        return FIELD_SKIP;
    if (is_request ? h2o_lcstris(name, len, H2O_STRLIT("host")) : h2o_lcstris(name, len, H2O_STRLIT("te")))
        return FIELD_SKIP;
    if (!is_token(name, len) || !is_field_value(h->value.base, h->value.len))
        return FIELD_INVALID;
    return FIELD_WRITE;
}

/** Size of the written fields, or SIZE_MAX if one is invalid. */
static size_t
fields_size(const rm_headers_t *headers, int is_request)
{
    size_t total = 0;
    for (size_t i = 0; i != headers->size; ++i) {
        const rm_header_t *h = headers->entries + i;
        switch (field_disposition(h, is_request)) {
        case FIELD_WRITE:
            total += h->name.len + 2 + h->value.len + 2;
            break;
        case FIELD_INVALID:
            return SIZE_MAX;
        default:
            break;
        }
    }
    return total;
}

static char *
put_fields(char *dst, const rm_headers_t *headers, int is_request)
{
    for (size_t i = 0; i != headers->size; ++i) {
        const rm_header_t *h = headers->entries + i;
        if (field_disposition(h, is_request) != FIELD_WRITE)
            continue;
        /* the spelling an HTTP/1.1 peer used (legacy applications may match names case-sensitively) */
        dst = put(dst, h->orig_name != NULL ? h->orig_name : h->name.base, h->name.len);
        dst = PUT_LIT(dst, ": ");
        dst = put(dst, h->value.base, h->value.len);
        dst = PUT_LIT(dst, "\r\n");
    }
    return dst;
}

#define CONTENT_LENGTH_MAX_BYTES (sizeof("content-length: 9223372036854775807\r\n") - 1)
#define UPGRADE_FIELDS_BYTES (sizeof("Connection: Upgrade\r\nUpgrade: \r\n") - 1)

static char *
put_upgrade(char *dst, h2o_iovec_t upgrade)
{
    /* spelt as RFC 6455 and every WebSocket peer do: the fields are the codec's, their original case is not kept */
    dst = PUT_LIT(dst, "Connection: Upgrade\r\nUpgrade: ");
    dst = put(dst, upgrade.base, upgrade.len);
    return PUT_LIT(dst, "\r\n");
}

/* the decimal digits of v (snprintf costs some 700 instructions a call, twice per response) */
static char *
put_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return put(dst, tmp + sizeof(tmp) - n, n);
}

/* the framing fields, spelt as the peer that sent the message did (orig_name: 14 / 17 bytes; NULL: lower case); cl >= 0 */
static char *
put_content_length(char *dst, int64_t cl, const char *orig_name)
{
    dst = put(dst, orig_name != NULL ? orig_name : "content-length", 14);
    dst = PUT_LIT(dst, ": ");
    dst = put_u64(dst, (uint64_t)cl);
    return PUT_LIT(dst, "\r\n");
}

static char *
put_chunked(char *dst, const char *orig_name)
{
    dst = put(dst, orig_name != NULL ? orig_name : "transfer-encoding", 17);
    return PUT_LIT(dst, ": chunked\r\n");
}

/**
 * The encoders check only what could break the framing of what they write (the other side of the proxy has validated
 * the rest): no whitespace or control byte in the request line or the host field.
 */
static int
has_no_space_or_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

size_t
rm_h1_encode_request_head(h2o_buffer_t **buf, const rm_req_head_t *head, int chunked)
{
    if (!is_token(head->method.base, head->method.len) || head->path.len == 0 ||
        !has_no_space_or_ctl(head->path.base, head->path.len) || !has_no_space_or_ctl(head->authority.base, head->authority.len))
        return 0;
    size_t fields = fields_size(&head->headers, 1);
    if (fields == SIZE_MAX || !is_field_value(head->upgrade.base, head->upgrade.len))
        return 0;

    size_t max = head->method.len + 1 + head->path.len + sizeof(" HTTP/1.1\r\n") - 1 + sizeof("host: \r\n") - 1 +
                 head->authority.len + fields + sizeof("transfer-encoding: chunked\r\n") - 1 + CONTENT_LENGTH_MAX_BYTES +
                 UPGRADE_FIELDS_BYTES + head->upgrade.len + 2;
    char *start = reserve(buf, max), *dst = start;
    dst = put(dst, head->method.base, head->method.len);
    *dst++ = ' ';
    dst = put(dst, head->path.base, head->path.len);
    dst = PUT_LIT(dst, " HTTP/1.1\r\n");
    dst = put(dst, head->host_orig_name != NULL ? head->host_orig_name : "host", 4);
    dst = PUT_LIT(dst, ": ");
    dst = put(dst, head->authority.base, head->authority.len);
    dst = PUT_LIT(dst, "\r\n");
    dst = put_fields(dst, &head->headers, 1);
    if (head->upgrade.len != 0)
        dst = put_upgrade(dst, head->upgrade);
    if (chunked)
        dst = put_chunked(dst, head->chunked_orig_name);
    else if (head->content_length >= 0)
        dst = put_content_length(dst, head->content_length, head->length_orig_name);
    dst = PUT_LIT(dst, "\r\n");
    (*buf)->size += (size_t)(dst - start);
    return (size_t)(dst - start);
}

size_t
rm_h1_encode_response_head(h2o_buffer_t **buf, const rm_resp_head_t *head, int chunked, int close)
{
    int status = head->status;
    if (status < 100 || status > 999)
        return 0;
    size_t fields = fields_size(&head->headers, 0);
    int upgrade = status == 101 && head->upgrade.len != 0;
    if (fields == SIZE_MAX || (upgrade && !is_field_value(head->upgrade.base, head->upgrade.len)))
        return 0;
    const char *reason = rm_h1_reason_phrase(status);
    size_t reason_len = strlen(reason);
    /* RFC 9110 8.6, 6.4.1: 1xx and 204 carry no framing fields; 304 may carry the length of the representation */
    int may_frame = status >= 200 && status != 204;
    if (status == 304)
        chunked = 0;

    size_t max = sizeof("HTTP/1.1 999 \r\n") - 1 + reason_len + fields + sizeof("transfer-encoding: chunked\r\n") - 1 +
                 CONTENT_LENGTH_MAX_BYTES + sizeof("connection: close\r\n") - 1 + UPGRADE_FIELDS_BYTES + head->upgrade.len + 2;
    char *start = reserve(buf, max), *dst = start;
    dst = PUT_LIT(dst, "HTTP/1.1 ");
    dst = put_u64(dst, (uint64_t)status); /* 100-999: three digits */
    dst = PUT_LIT(dst, " ");
    dst = put(dst, reason, reason_len);
    dst = PUT_LIT(dst, "\r\n");
    dst = put_fields(dst, &head->headers, 0);
    if (may_frame) {
        if (chunked)
            dst = put_chunked(dst, head->chunked_orig_name);
        else if (head->content_length >= 0)
            dst = put_content_length(dst, head->content_length, head->length_orig_name);
    }
    if (upgrade)
        dst = put_upgrade(dst, head->upgrade);
    else if (close)
        dst = PUT_LIT(dst, "connection: close\r\n");
    dst = PUT_LIT(dst, "\r\n");
    (*buf)->size += (size_t)(dst - start);
    return (size_t)(dst - start);
}

size_t
rm_h1_append(h2o_buffer_t **buf, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    char *dst = reserve(buf, len);
    memcpy(dst, data, len);
    (*buf)->size += len;
    return len;
}

size_t
rm_h1_encode_continue(h2o_buffer_t **buf)
{
    static const char s[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return rm_h1_append(buf, s, sizeof(s) - 1);
}

size_t
rm_h1_encode_chunk_header(h2o_buffer_t **buf, size_t len)
{
    /* a zero-size chunk would end the body */
    if (len == 0)
        return 0;
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%zx\r\n", len);
    return rm_h1_append(buf, tmp, (size_t)n);
}

size_t
rm_h1_encode_chunk_end(h2o_buffer_t **buf)
{
    return rm_h1_append(buf, "\r\n", 2);
}

size_t
rm_h1_encode_last_chunk(h2o_buffer_t **buf, const rm_headers_t *trailers)
{
    size_t fields = 0;
    if (trailers != NULL) {
        for (size_t i = 0; i != trailers->size; ++i) {
            const rm_header_t *h = trailers->entries + i;
            if (field_disposition(h, 0) == FIELD_WRITE)
                fields += h->name.len + 2 + h->value.len + 2;
        }
    }
    char *start = reserve(buf, 3 + fields + 2), *dst = start;
    dst = PUT_LIT(dst, "0\r\n");
    if (trailers != NULL) {
        /* unlike a head, the terminator must go out whatever: an unwritable trailer is dropped, not fatal */
        for (size_t i = 0; i != trailers->size; ++i) {
            const rm_header_t *h = trailers->entries + i;
            if (field_disposition(h, 0) != FIELD_WRITE)
                continue;
            dst = put(dst, h->name.base, h->name.len);
            dst = PUT_LIT(dst, ": ");
            dst = put(dst, h->value.base, h->value.len);
            dst = PUT_LIT(dst, "\r\n");
        }
    }
    dst = PUT_LIT(dst, "\r\n");
    (*buf)->size += (size_t)(dst - start);
    return (size_t)(dst - start);
}

const char *
rm_h1_reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 207:
        return "Multi-Status";
    case 208:
        return "Already Reported";
    case 226:
        return "IM Used";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 506:
        return "Variant Also Negotiates";
    case 507:
        return "Insufficient Storage";
    case 508:
        return "Loop Detected";
    case 510:
        return "Not Extended";
    case 511:
        return "Network Authentication Required";
    default:
        return "";
    }
}
