#include <string.h>
#include "net/detect.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

/* RFC 9110 tchar */
static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static rm_detect_verdict_t
classify_method(const char *in, size_t len)
{
    for (size_t i = 0; i != len; ++i) {
        if (in[i] == ' ')
            return i != 0 ? RM_DETECT_IS_HTTP1 : RM_DETECT_IS_OPAQUE;
        if (!is_tchar((unsigned char)in[i]) || i == RM_DETECT_MAX_METHOD_LEN)
            return RM_DETECT_IS_OPAQUE;
    }
    return RM_DETECT_NEED_MORE;
}

rm_detect_verdict_t
rm_detect_classify(const char *in, size_t len, int transparent)
{
    if (len == 0)
        return RM_DETECT_NEED_MORE;
    if ((unsigned char)in[0] == 0x16) {
        if (!transparent)
            return RM_DETECT_IS_TLS;
        if (len < 2)
            return RM_DETECT_NEED_MORE;
        if (in[1] == 0x03)
            return RM_DETECT_IS_TLS;
    }
    size_t cmp = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;
    if (memcmp(in, H2_PREFACE, cmp) == 0)
        return len < H2_PREFACE_LEN ? RM_DETECT_NEED_MORE : RM_DETECT_IS_H2;
    if (!transparent) {
        /* "PRI " is no HTTP/1.1 method (RFC 9113 3.4 chose it so): a damaged preface is HTTP/2's to refuse, with a
         * GOAWAY PROTOCOL_ERROR (RFC 9113 3.4), not an HTTP/1.1 error response */
        return len >= 4 && memcmp(in, H2_PREFACE, 4) == 0 ? RM_DETECT_IS_H2 : RM_DETECT_IS_HTTP1;
    }
    return classify_method(in, len);
}

#define MESH_ALPN_PREFIX "remora.mesh/"
#define MESH_ALPN_TCP "remora.mesh/tcp"

static size_t
be(const unsigned char *p, size_t n)
{
    size_t v = 0;
    for (size_t i = 0; i != n; ++i)
        v = (v << 8) | p[i];
    return v;
}

rm_detect_alpn_t
rm_detect_mesh_alpn(const unsigned char *in, size_t len)
{
    int tcp;
    return rm_detect_mesh_alpn_ex(in, len, &tcp);
}

rm_detect_alpn_t
rm_detect_mesh_alpn_ex(const unsigned char *in, size_t len, int *tcp)
{
    *tcp = 0;
    if (len < 5)
        return RM_DETECT_ALPN_NEED_MORE;
    if (in[0] != 0x16 || in[1] != 0x03)
        return RM_DETECT_ALPN_OTHER;
    size_t rlen = be(in + 3, 2);
    if (rlen == 0 || rlen > 16384)
        return RM_DETECT_ALPN_OTHER;
    if (len < 5 + rlen)
        return RM_DETECT_ALPN_NEED_MORE;
    const unsigned char *p = in + 5, *end = p + rlen;
    /* handshake header: ClientHello (1), 24-bit length, which must fit in this record */
    if (end - p < 4 || p[0] != 1)
        return RM_DETECT_ALPN_OTHER;
    size_t hlen = be(p + 1, 3);
    p += 4;
    if (hlen > (size_t)(end - p))
        return RM_DETECT_ALPN_OTHER;
    end = p + hlen;
    /* legacy_version (2), random (32), session id, cipher suites, compression methods */
    if (end - p < 34 + 1)
        return RM_DETECT_ALPN_OTHER;
    p += 34;
    size_t n = *p++;
    if ((size_t)(end - p) < n + 2)
        return RM_DETECT_ALPN_OTHER;
    p += n;
    n = be(p, 2);
    p += 2;
    if ((size_t)(end - p) < n + 1)
        return RM_DETECT_ALPN_OTHER;
    p += n;
    n = *p++;
    if ((size_t)(end - p) < n)
        return RM_DETECT_ALPN_OTHER;
    p += n;
    if (end - p < 2)
        return RM_DETECT_ALPN_OTHER; /* no extensions */
    n = be(p, 2);
    p += 2;
    if ((size_t)(end - p) < n)
        return RM_DETECT_ALPN_OTHER;
    end = p + n;
    while (end - p >= 4) {
        size_t type = be(p, 2), elen = be(p + 2, 2);
        p += 4;
        if ((size_t)(end - p) < elen)
            return RM_DETECT_ALPN_OTHER;
        if (type == 16) { /* application_layer_protocol_negotiation */
            const unsigned char *q = p, *qend = p + elen;
            if (qend - q < 2 || be(q, 2) != elen - 2)
                return RM_DETECT_ALPN_OTHER;
            q += 2;
            rm_detect_alpn_t found = RM_DETECT_ALPN_OTHER;
            while (q < qend) {
                size_t plen = *q++;
                if (plen == 0 || (size_t)(qend - q) < plen) {
                    *tcp = 0;
                    return RM_DETECT_ALPN_OTHER;
                }
                if (plen > sizeof(MESH_ALPN_PREFIX) - 1 && memcmp(q, MESH_ALPN_PREFIX, sizeof(MESH_ALPN_PREFIX) - 1) == 0) {
                    found = RM_DETECT_ALPN_MESH;
                    /* the opaque relay's id wins: such a hello is the relay's to terminate, whatever else it offers */
                    if (plen == sizeof(MESH_ALPN_TCP) - 1 && memcmp(q, MESH_ALPN_TCP, plen) == 0)
                        *tcp = 1;
                }
                q += plen;
            }
            return found;
        }
        p += elen;
    }
    return RM_DETECT_ALPN_OTHER;
}
