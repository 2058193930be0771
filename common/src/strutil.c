#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>
#include <time.h>
#include "remora/log.h"
#include "remora/strutil.h"

void *
rm_malloc(size_t sz)
{
    void *p = malloc(sz != 0 ? sz : 1);
    if (p == NULL)
        rm_fatal("out of memory allocating %zu bytes", sz);
    return p;
}

void *
rm_calloc(size_t n, size_t sz)
{
    void *p = calloc(n != 0 ? n : 1, sz != 0 ? sz : 1);
    if (p == NULL)
        rm_fatal("out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *
rm_realloc(void *p, size_t sz)
{
    p = realloc(p, sz != 0 ? sz : 1);
    if (p == NULL)
        rm_fatal("out of memory reallocating %zu bytes", sz);
    return p;
}

char *
rm_strdup(const char *s)
{
    return rm_strndup(s, strlen(s));
}

char *
rm_strndup(const char *s, size_t len)
{
    char *p = rm_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int
parse_port(const char *s, uint16_t *port)
{
    char *end;
    if (*s == '\0')
        return -1;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int
rm_split_host_port(const char *s, char **host, uint16_t *port, const char **err)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            *err = "expected [IPV6]:PORT";
            return -1;
        }
        if (parse_port(close + 2, port) != 0) {
            *err = "port must be a number from 0 to 65535";
            return -1;
        }
        *host = rm_strndup(s + 1, close - s - 1);
        return 0;
    }
    if ((colon = strrchr(s, ':')) == NULL) {
        *err = "expected HOST:PORT";
        return -1;
    }
    if (memchr(s, ':', colon - s) != NULL) {
        *err = "IPv6 addresses must be written in brackets, as [::1]:PORT";
        return -1;
    }
    if (parse_port(colon + 1, port) != 0) {
        *err = "port must be a number from 0 to 65535";
        return -1;
    }
    *host = rm_strndup(s, colon - s);
    return 0;
}

int
rm_parse_ip_port(const char *s, struct sockaddr_storage *ss, socklen_t *len, const char **err)
{
    char *host;
    uint16_t port;
    if (rm_split_host_port(s, &host, &port, err) != 0)
        return -1;
    memset(ss, 0, sizeof(*ss));
    int ret = 0;
    struct sockaddr_in *sin = (void *)ss;
    struct sockaddr_in6 *sin6 = (void *)ss;
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
    } else if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
    } else {
        *err = "address must be an IP literal";
        ret = -1;
    }
    free(host);
    return ret;
}

const char *
rm_format_sockaddr(const struct sockaddr *sa, char *buf, size_t bufsz)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const void *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, bufsz, "%s:%u", host, ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const void *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, bufsz, "[%s]:%u", host, ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, bufsz, "(family %d)", sa->sa_family);
    }
    return buf;
}

int
rm_lcstreq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

uint64_t
rm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t
rm_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

size_t
rm_edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];
    if (la >= 64 || lb >= 64)
        return cap + 1;
    for (size_t j = 0; j <= lb; ++j)
        row[j] = j;
    for (size_t i = 1; i <= la; ++i) {
        size_t diag = row[0], best;
        row[0] = i;
        best = row[0];
        for (size_t j = 1; j <= lb; ++j) {
            size_t up = row[j];
            size_t v = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (up + 1 < v)
                v = up + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
            if (v < best)
                best = v;
        }
        if (best > cap)
            return cap + 1;
    }
    return row[lb] > cap ? cap + 1 : row[lb];
}

static int
is_trim_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t
rm_trim_space(char *s)
{
    const char *start = s;
    while (is_trim_space(*start))
        ++start;
    size_t len = strlen(start);
    while (len != 0 && is_trim_space(start[len - 1]))
        --len;
    memmove(s, start, len);
    s[len] = '\0';
    return len;
}

const char *const rm_grpc_status_names[RM_GRPC_NUM_STATUSES] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *
rm_grpc_status_name(int code)
{
    return code >= 0 && code < RM_GRPC_NUM_STATUSES ? rm_grpc_status_names[code] : "UNKNOWN";
}

char *
rm_read_file(const char *path, size_t max, char *err, size_t errsz)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* the buffer grows with what is read (the file's size as the first guess), never to `max` up front: a 1 MiB
     * malloc for a 1 KiB file would also raise glibc's dynamic mmap and trim thresholds for the whole process */
    struct stat st;
    size_t cap = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    if (cap > max + 1)
        cap = max + 1;
    char *buf = rm_malloc(cap + 1);
    size_t n = 0;
    int failed = 0;
    for (;;) {
        n += fread(buf + n, 1, cap - n, fp);
        if ((failed = ferror(fp)) != 0 || feof(fp) || n > max)
            break;
        if (n == cap) { /* full: the file is longer than its size said, or not a regular file */
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            buf = rm_realloc(buf, cap + 1);
        }
    }
    fclose(fp);
    if (failed || n == 0 || n > max) {
        snprintf(err, errsz, "%s: %s", path, failed ? "read error" : n == 0 ? "the file is empty" : "the file is too large");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int
cmp_port(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* A decimal port 1..65535 of exactly `len` bytes at p, or 0. */
static unsigned
port_at(const char *p, size_t len)
{
    unsigned v = 0;
    if (len == 0 || len > 5)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v <= 65535 ? v : 0;
}

long
rm_parse_port_list(const char *s, const char *what, uint16_t *out, size_t max, char *err, size_t errsz)
{
    const char *pfx = what != NULL ? what : "", *sep = what != NULL ? ": " : "";
    size_t n = 0;
    const char *p = s;
    while (*p == ' ' || *p == '\t')
        ++p;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *q = p, *e = end;
        while (q < e && (*q == ' ' || *q == '\t'))
            ++q;
        while (e > q && (e[-1] == ' ' || e[-1] == '\t'))
            --e;
        if (q == e) {
            snprintf(err, errsz, "%s%sempty element in \"%.64s\" (expected a comma-separated list of ports)", pfx, sep, s);
            return -1;
        }
        const char *dash = memchr(q, '-', (size_t)(e - q));
        unsigned lo = port_at(q, (size_t)((dash != NULL ? dash : e) - q)), hi = lo;
        if (dash != NULL)
            hi = port_at(dash + 1, (size_t)(e - dash - 1));
        if (lo == 0 || hi == 0 || hi < lo) {
            snprintf(err, errsz, "%s%s\"%.*s\" is not a port (1..65535) or a range of ports A-B", pfx, sep,
                     (int)(e - q > 64 ? 64 : e - q), q);
            return -1;
        }
        if (hi - lo + 1 > max - n) {
            snprintf(err, errsz, "%s%smore than %zu ports in \"%.64s\"", pfx, sep, max, s);
            return -1;
        }
        for (unsigned port = lo; port <= hi; ++port)
            out[n++] = (uint16_t)port;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    qsort(out, n, sizeof(*out), cmp_port);
    size_t k = 0;
    for (size_t i = 0; i != n; ++i)
        if (k == 0 || out[k - 1] != out[i])
            out[k++] = out[i];
    return (long)k;
}

int
rm_format_port_list(const uint16_t *ports, size_t n, char *buf, size_t bufsz)
{
    size_t len = 0;
    if (bufsz == 0)
        return -1;
    buf[0] = '\0';
    for (size_t i = 0; i != n;) {
        size_t j = i;
        while (j + 1 != n && ports[j + 1] == ports[j] + 1)
            ++j;
        int w = j == i ? snprintf(buf + len, bufsz - len, "%s%u", len ? "," : "", ports[i])
                       : snprintf(buf + len, bufsz - len, "%s%u-%u", len ? "," : "", ports[i], ports[j]);
        if (w < 0 || (size_t)w >= bufsz - len)
            return -1;
        len += (size_t)w;
        i = j + 1;
    }
    return 0;
}
