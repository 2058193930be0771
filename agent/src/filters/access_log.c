#include <stdio.h>
#include <string.h>
#include <time.h>
#include "remora/strutil.h"
#include "core/worker.h"
#include "filters/access_log.h"
#include "filters/trace.h"
#include "obs/access_log.h"
#include "obs/stats.h"
#include "proxy/stream.h"

/* Output caps per value (escaped bytes, quotes excluded): their sum plus the fixed part stays under
 * RM_ACCESS_LOG_MAX_LINE, so a line is never cut in the middle. */
#define MAX_METHOD 64
#define MAX_AUTHORITY 512
#define MAX_PATH 1792
#define MAX_NAME 256
#define MAX_SHORT 96

typedef struct st_out_t {
    char *p;
    size_t len;
} out_t;

static void
put(out_t *o, const char *s, size_t n)
{
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* Length of the valid UTF-8 sequence starting at s[0] (a byte >= 0x80), or 0 if it is not one (RFC 3629). */
static size_t
utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* at most U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; ++i)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* A JSON string of at most `max` escaped bytes (plus quotes); a longer value is cut and ends in "...". */
static void
put_str(out_t *o, const char *str, size_t len, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t start = o->len;
    o->p[o->len++] = '"';
    for (size_t i = 0; i < len;) {
        char esc[8];
        size_t n = 1, elen;
        const char *e = esc;
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, elen = 2;
        } else if (c == '\n') {
            e = "\\n", elen = 2;
        } else if (c == '\r') {
            e = "\\r", elen = 2;
        } else if (c == '\t') {
            e = "\\t", elen = 2;
        } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && (n = utf8_len(s + i, len - i)) == 0)) {
            n = 1;
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15], elen = 6;
        } else {
            e = (const char *)s + i, elen = n;
        }
        if (o->len - start - 1 + elen > max - 3) {
            PUT_LIT(o, "...");
            break;
        }
        put(o, e, elen);
        i += n;
    }
    o->p[o->len++] = '"';
}

static void
put_cstr(out_t *o, const char *s, size_t max)
{
    if (s == NULL)
        PUT_LIT(o, "null");
    else
        put_str(o, s, strlen(s), max);
}

static void
put_key(out_t *o, const char *key)
{
    o->p[o->len++] = ',';
    put(o, key, strlen(key));
}

static void
put_u64(out_t *o, uint64_t v)
{
    o->len += (size_t)snprintf(o->p + o->len, 24, "%llu", (unsigned long long)v);
}

size_t
rm_access_log_format(rm_stream_t *s, char *buf)
{
    out_t o = {buf, 0};
    const rm_stream_info_t *info = &s->info;
    char tmp[96];

    /* the stream's times are on the monotonic clock: place its start on the wall clock */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t mono_now = rm_now_us(), end_us = info->ended_at_us != 0 ? info->ended_at_us : mono_now;
    uint64_t wall_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
    uint64_t start_wall_us = wall_us - (mono_now > s->started_at_us ? mono_now - s->started_at_us : 0);
    time_t secs = (time_t)(start_wall_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    PUT_LIT(&o, "{\"start_time\":\"");
    o.len += strftime(o.p + o.len, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    o.len += (size_t)snprintf(o.p + o.len, 8, ".%03uZ\"", (unsigned)(start_wall_us / 1000 % 1000));
    uint64_t dur_us = end_us > s->started_at_us ? end_us - s->started_at_us : 0;
    put_key(&o, "\"duration_ms\":");
    o.len += (size_t)snprintf(o.p + o.len, 32, "%llu.%03u", (unsigned long long)(dur_us / 1000), (unsigned)(dur_us % 1000));

    put_key(&o, "\"method\":");
    put_str(&o, s->req.method.base, s->req.method.len, MAX_METHOD);
    put_key(&o, "\"authority\":");
    if (s->req.authority.len != 0)
        put_str(&o, s->req.authority.base, s->req.authority.len, MAX_AUTHORITY);
    else
        PUT_LIT(&o, "null");
    put_key(&o, "\"path\":");
    put_str(&o, s->req.path.base, s->req.path.len, MAX_PATH);
    put_key(&o, "\"protocol\":");
    put_cstr(&o, info->protocol, MAX_SHORT);
    /* as the golden metrics' label; null without one */
    put_key(&o, "\"direction\":");
    const char *direction = rm_stream_direction(s);
    put_cstr(&o, direction[0] != '\0' ? direction : NULL, MAX_SHORT);

    put_key(&o, "\"status\":");
    if (info->status != 0)
        put_u64(&o, (uint64_t)info->status);
    else
        PUT_LIT(&o, "null");
    put_key(&o, "\"grpc_status\":");
    if (info->grpc_status >= 0)
        put_u64(&o, (uint64_t)info->grpc_status);
    else
        PUT_LIT(&o, "null");
    put_key(&o, "\"response_flag\":");
    put_cstr(&o, info->flag != NULL ? info->flag : "-", MAX_SHORT);
    put_key(&o, "\"route\":");
    put_cstr(&o, s->route != NULL ? s->route->name : NULL, MAX_NAME);
    put_key(&o, "\"backend\":");
    put_cstr(&o, info->backend, MAX_NAME);
    put_key(&o, "\"upstream_address\":");
    put_cstr(&o, info->upstream_addr[0] != '\0' ? info->upstream_addr : NULL, MAX_SHORT);
    put_key(&o, "\"attempts\":");
    put_u64(&o, info->attempts);
    put_key(&o, "\"bytes_received\":");
    put_u64(&o, s->req_body.bytes_in);
    put_key(&o, "\"bytes_sent\":");
    put_u64(&o, info->resp_bytes);

    char tbuf[33];
    /* TRACE-ID HOOK: the tracing filter's id of this stream's trace (filters/trace.h), null without one */
    const char *trace_id = rm_trace_stream_trace_id(s, tbuf, NULL) ? tbuf : NULL;
    put_key(&o, "\"trace_id\":");
    put_cstr(&o, trace_id, MAX_SHORT);
    put_key(&o, "\"peer_identity\":");
    put_cstr(&o, s->peer_identity, MAX_NAME);
    put_key(&o, "\"downstream_address\":");
    put_cstr(&o, s->peerlen != 0 ? rm_format_sockaddr((const struct sockaddr *)&s->peer, tmp, sizeof(tmp)) : NULL, MAX_SHORT);
    PUT_LIT(&o, "}\n");
    return o.len;
}

static void
on_end(rm_stream_t *s)
{
    /* the stream's own snapshot decides, so a line is never half-configured across a reload */
    if (!s->config->telemetry.access_log.enabled)
        return;
    char line[RM_ACCESS_LOG_MAX_LINE];
    size_t len = rm_access_log_format(s, line);
    rm_access_log_write(s->worker->id, line, len);
}

static const rm_stream_observer_t observer = {.on_end = on_end};

void
rm_access_log_observer_register(void)
{
    rm_stream_register_observer(&observer);
    rm_stats_register_renderer(rm_access_log_render_prometheus);
}

void
rm_access_log_apply_config(const rm_config_t *config)
{
    const rm_config_access_log_t *a = &config->telemetry.access_log;
    rm_access_log_configure(a->enabled, a->path != NULL ? a->path : "stdout", a->buffer_bytes);
}
