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
    if (!transparent)
        return RM_DETECT_IS_HTTP1;
    return classify_method(in, len);
}
