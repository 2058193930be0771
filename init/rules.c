/*
 * The chain layout follows the shape of Istio's istio-iptables (own chains hung off PREROUTING and
 * OUTPUT, RETURN rules for what must not be captured, one REDIRECT chain per direction); see
 * docs/remora-init.md for the rule listing and why the proxy's own loopback traffic is never
 * captured. Rules are written in the canonical form `iptables-save` prints (`-p tcp -m tcp
 * --dport`, prefixes with host bits cleared) so that --dry-run output compares line for line with
 * what the kernel holds after installation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "rules.h"

#define CHAIN_INBOUND "REMORA_INBOUND"
#define CHAIN_IN_REDIRECT "REMORA_IN_REDIRECT"
#define CHAIN_OUTPUT "REMORA_OUTPUT"
#define CHAIN_REDIRECT "REMORA_REDIRECT"

static const char *const own_chains[] = {CHAIN_INBOUND, CHAIN_IN_REDIRECT, CHAIN_OUTPUT, CHAIN_REDIRECT};
#define NUM_OWN_CHAINS (sizeof(own_chains) / sizeof(own_chains[0]))

/* A growing text buffer. */
typedef struct st_sbuf_t {
    char *base;
    size_t len, cap;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static void
sbuf_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->base + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->base = rm_realloc(b->base, b->cap);
    }
}

static void
sbuf_init(sbuf_t *b)
{
    b->cap = 1024;
    b->len = 0;
    b->base = rm_malloc(b->cap);
    b->base[0] = '\0';
}

void
rm_init_options_init(rm_init_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->proxy_uid = 2102;
    opts->inbound_port = 15006;
    opts->outbound_port = 15001;
    opts->admin_port = 15000;
    opts->health_port = 15020;
    opts->control_port = 15010;
    opts->families = RM_INIT_IPV4 | RM_INIT_IPV6;
}

void
rm_init_options_dispose(rm_init_options_t *opts)
{
    free(opts->exclude_inbound_ports.ports);
    free(opts->exclude_outbound_ports.ports);
    free(opts->exclude_inbound_cidrs.cidrs);
    free(opts->exclude_outbound_cidrs.cidrs);
    memset(opts, 0, sizeof(*opts));
}

/* Parsers ----------------------------------------------------------------------------------------- */

/* Strict unsigned decimal: digits only, no sign, no spaces, at most `max`. */
static int
parse_decimal(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static int
parse_port_n(const char *s, size_t len, const char *what, uint16_t *port, char *err, size_t errsz)
{
    unsigned long long v;
    if (parse_decimal(s, len, 65535, &v) != 0 || v == 0) {
        snprintf(err, errsz, "%s: \"%.*s\" is not a port (1..65535)", what, (int)(len > 64 ? 64 : len), s);
        return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int
rm_init_parse_port(const char *s, const char *what, uint16_t *port, char *err, size_t errsz)
{
    return parse_port_n(s, strlen(s), what, port, err, errsz);
}

int
rm_init_parse_uid(const char *s, uint32_t *uid, char *err, size_t errsz)
{
    unsigned long long v;
    /* (uid_t)-1 means "no change" to the kernel: never a real owner */
    if (parse_decimal(s, strlen(s), 4294967294ull, &v) != 0) {
        snprintf(err, errsz, "--proxy-uid: \"%.64s\" is not a numeric UID (0..4294967294)", s);
        return -1;
    }
    *uid = (uint32_t)v;
    return 0;
}

/* Calls `item` for each comma-separated element of `s`; empty elements ("80,,443", "80,") are errors. */
static int
each_item(const char *s, const char *what, char *err, size_t errsz,
          int (*item)(const char *p, size_t len, const char *what, void *ctx, char *err, size_t errsz), void *ctx)
{
    if (*s == '\0')
        return 0;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            snprintf(err, errsz, "%s: empty element in \"%.64s\" (expected a comma-separated list)", what, s);
            return -1;
        }
        if (item(p, len, what, ctx, err, errsz) != 0)
            return -1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

int
rm_init_parse_ports(const char *s, const char *what, rm_init_ports_t *list, char *err, size_t errsz)
{
    uint16_t *parsed = rm_malloc(RM_PORT_LIST_MAX * sizeof(*parsed));
    long n = rm_parse_port_list(s, what, parsed, RM_PORT_LIST_MAX, err, errsz);
    if (n < 0) {
        free(parsed);
        return -1;
    }
    /* a repeated flag adds to the list: merged, sorted, duplicates dropped, within the same bound */
    uint16_t *all = rm_malloc((list->len + (size_t)n + 1) * sizeof(*all));
    size_t len = 0, i = 0, j = 0;
    while (i < list->len || j < (size_t)n) {
        uint16_t next = j == (size_t)n || (i < list->len && list->ports[i] <= parsed[j]) ? list->ports[i++] : parsed[j++];
        if (len == 0 || all[len - 1] != next)
            all[len++] = next;
    }
    free(parsed);
    if (len > RM_PORT_LIST_MAX) {
        snprintf(err, errsz, "%s: more than %d ports in all", what, RM_PORT_LIST_MAX);
        free(all);
        return -1;
    }
    free(list->ports);
    list->ports = all;
    list->len = len;
    return 0;
}

static int
cidr_item(const char *p, size_t len, const char *what, void *ctx, char *err, size_t errsz)
{
    rm_init_cidrs_t *list = ctx;
    rm_init_cidr_t c = {0};
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = memchr(p, '/', len);
    size_t addrlen = slash != NULL ? (size_t)(slash - p) : len;

    if (addrlen == 0 || addrlen >= sizeof(addr))
        goto BadAddr;
    memcpy(addr, p, addrlen);
    addr[addrlen] = '\0';
    if (inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = RM_INIT_IPV4;
    } else if (inet_pton(AF_INET6, addr, c.addr) == 1) {
        c.family = RM_INIT_IPV6;
    } else {
        goto BadAddr;
    }
    unsigned max = c.family == RM_INIT_IPV4 ? 32 : 128;
    c.prefix = max;
    if (slash != NULL) {
        unsigned long long v;
        size_t plen = len - addrlen - 1;
        if (parse_decimal(slash + 1, plen, max, &v) != 0) {
            snprintf(err, errsz, "%s: \"%.*s\": the prefix length must be 0..%u", what, (int)(len > 64 ? 64 : len), p, max);
            return -1;
        }
        c.prefix = (unsigned)v;
    }
    /* clear the host bits, as iptables does when it stores the rule */
    for (unsigned bit = c.prefix; bit < max; ++bit)
        c.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    for (size_t i = 0; i < list->len; ++i)
        if (list->cidrs[i].family == c.family && list->cidrs[i].prefix == c.prefix &&
            memcmp(list->cidrs[i].addr, c.addr, sizeof(c.addr)) == 0)
            return 0;
    list->cidrs = rm_realloc(list->cidrs, (list->len + 1) * sizeof(*list->cidrs));
    list->cidrs[list->len++] = c;
    return 0;

BadAddr:
    snprintf(err, errsz, "%s: \"%.*s\" is not an IPv4 or IPv6 address or prefix (ADDR or ADDR/LEN)", what,
             (int)(len > 64 ? 64 : len), p);
    return -1;
}

int
rm_init_parse_cidrs(const char *s, const char *what, rm_init_cidrs_t *list, char *err, size_t errsz)
{
    return each_item(s, what, err, errsz, cidr_item, list);
}

/* State ------------------------------------------------------------------------------------------- */

static int
is_own_chain(const char *name, size_t len)
{
    size_t plen = sizeof(RM_INIT_CHAIN_PREFIX) - 1;
    return len > plen && memcmp(name, RM_INIT_CHAIN_PREFIX, plen) == 0;
}

static void
push(char ***arr, size_t *n, char *s)
{
    *arr = rm_realloc(*arr, (*n + 1) * sizeof(**arr));
    (*arr)[(*n)++] = s;
}

/* Does the rule spec (after "CHAIN ") jump or go to an own chain? */
static int
targets_own_chain(const char *spec, size_t len)
{
    for (size_t i = 0; i + 3 < len; ++i) {
        if ((memcmp(spec + i, " -j ", 4) == 0 || memcmp(spec + i, " -g ", 4) == 0)) {
            const char *t = spec + i + 4;
            size_t tlen = 0;
            while (t + tlen < spec + len && t[tlen] != ' ')
                ++tlen;
            if (is_own_chain(t, tlen))
                return 1;
        }
    }
    return 0;
}

void
rm_init_state_parse(rm_init_state_t *state, const char *save_text)
{
    int in_nat = 0;
    memset(state, 0, sizeof(*state));
    for (const char *line = save_text; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            --len;
        if (len > 0 && line[0] == '*') {
            in_nat = len == 4 && memcmp(line, "*nat", 4) == 0;
        } else if (in_nat && len > 1 && line[0] == ':') {
            size_t nlen = 0;
            while (1 + nlen < len && line[1 + nlen] != ' ')
                ++nlen;
            if (is_own_chain(line + 1, nlen))
                push(&state->chains, &state->num_chains, rm_strndup(line + 1, nlen));
        } else if (in_nat && len > 3 && memcmp(line, "-A ", 3) == 0) {
            const char *spec = line + 3;
            size_t slen = len - 3, clen = 0;
            while (clen < slen && spec[clen] != ' ')
                ++clen;
            if (!is_own_chain(spec, clen) && targets_own_chain(spec + clen, slen - clen))
                push(&state->jumps, &state->num_jumps, rm_strndup(spec, slen));
        }
        if (nl == NULL)
            break;
        line = nl + 1;
    }
}

void
rm_init_state_dispose(rm_init_state_t *state)
{
    for (size_t i = 0; i < state->num_chains; ++i)
        free(state->chains[i]);
    for (size_t i = 0; i < state->num_jumps; ++i)
        free(state->jumps[i]);
    free(state->chains);
    free(state->jumps);
    memset(state, 0, sizeof(*state));
}

/* Rendering --------------------------------------------------------------------------------------- */

static const char *
format_cidr(const rm_init_cidr_t *c, char *buf, size_t bufsz)
{
    char addr[INET6_ADDRSTRLEN];
    inet_ntop(c->family == RM_INIT_IPV4 ? AF_INET : AF_INET6, c->addr, addr, sizeof(addr));
    snprintf(buf, bufsz, "%s/%u", addr, c->prefix);
    return buf;
}

static int
is_in_own_set(const char *name)
{
    for (size_t i = 0; i < NUM_OWN_CHAINS; ++i)
        if (strcmp(own_chains[i], name) == 0)
            return 1;
    return 0;
}

/* Appends `port` to `ports` unless present. */
static void
add_port(uint16_t *ports, size_t *n, uint16_t port)
{
    for (size_t i = 0; i < *n; ++i)
        if (ports[i] == port)
            return;
    ports[(*n)++] = port;
}

/* One RETURN rule per port, or per run of consecutive ports ("--dport 9000:9010": ranges stay one rule). */
static void
add_port_returns(sbuf_t *b, const char *chain, const uint16_t *ports, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && ports[j + 1] == ports[j] + 1)
            ++j;
        if (j == i)
            sbuf_printf(b, "-A %s -p tcp -m tcp --dport %u -j RETURN\n", chain, ports[i]);
        else
            sbuf_printf(b, "-A %s -p tcp -m tcp --dport %u:%u -j RETURN\n", chain, ports[i], ports[j]);
        i = j + 1;
    }
}

char *
rm_init_render_install(const rm_init_options_t *opts, unsigned family, const rm_init_state_t *state)
{
    static const rm_init_state_t empty;
    sbuf_t b;
    char cidr[INET6_ADDRSTRLEN + 8];

    if (state == NULL)
        state = &empty;
    sbuf_init(&b);
    sbuf_printf(&b, "*nat\n");
    /* with --noflush, declaring an existing chain flushes it: the chains are rebuilt from scratch */
    for (size_t i = 0; i < NUM_OWN_CHAINS; ++i)
        sbuf_printf(&b, ":%s - [0:0]\n", own_chains[i]);
    /* own chains this version no longer uses: emptied first, deleted once nothing jumps to them */
    for (size_t i = 0; i < state->num_chains; ++i)
        if (!is_in_own_set(state->chains[i]))
            sbuf_printf(&b, "-F %s\n", state->chains[i]);
    /* jumps are deleted exactly as saved and re-added below, so that a re-run leaves one copy */
    for (size_t i = 0; i < state->num_jumps; ++i)
        sbuf_printf(&b, "-D %s\n", state->jumps[i]);
    for (size_t i = 0; i < state->num_chains; ++i)
        if (!is_in_own_set(state->chains[i]))
            sbuf_printf(&b, "-X %s\n", state->chains[i]);

    /* Inbound: everything that reaches the pod over TCP, except the excluded sources and ports. Locally
     * generated connections never traverse nat PREROUTING, so loopback needs no rule here. */
    for (size_t i = 0; i < opts->exclude_inbound_cidrs.len; ++i)
        if (opts->exclude_inbound_cidrs.cidrs[i].family == family)
            sbuf_printf(&b, "-A %s -s %s -j RETURN\n", CHAIN_INBOUND,
                        format_cidr(&opts->exclude_inbound_cidrs.cidrs[i], cidr, sizeof(cidr)));
    {
        size_t n = 0;
        uint16_t *ports = rm_malloc((opts->exclude_inbound_ports.len + 2) * sizeof(*ports));
        add_port(ports, &n, opts->health_port);
        add_port(ports, &n, opts->admin_port);
        for (size_t i = 0; i < opts->exclude_inbound_ports.len; ++i)
            add_port(ports, &n, opts->exclude_inbound_ports.ports[i]);
        add_port_returns(&b, CHAIN_INBOUND, ports, n);
        free(ports);
    }
    sbuf_printf(&b, "-A %s -p tcp -j %s\n", CHAIN_INBOUND, CHAIN_IN_REDIRECT);
    sbuf_printf(&b, "-A %s -p tcp -j REDIRECT --to-ports %u\n", CHAIN_IN_REDIRECT, opts->inbound_port);

    /* Outbound: the proxy's own connections first (they must never loop back into it), then
     * loopback (app to itself, to 127.0.0.1/::1 or to its own pod address), then the exclusions. */
    sbuf_printf(&b, "-A %s -m owner --uid-owner %u -j RETURN\n", CHAIN_OUTPUT, opts->proxy_uid);
    sbuf_printf(&b, "-A %s -o lo -j RETURN\n", CHAIN_OUTPUT);
    for (size_t i = 0; i < opts->exclude_outbound_cidrs.len; ++i)
        if (opts->exclude_outbound_cidrs.cidrs[i].family == family)
            sbuf_printf(&b, "-A %s -d %s -j RETURN\n", CHAIN_OUTPUT,
                        format_cidr(&opts->exclude_outbound_cidrs.cidrs[i], cidr, sizeof(cidr)));
    {
        size_t n = 0;
        uint16_t *ports = rm_malloc((opts->exclude_outbound_ports.len + 1) * sizeof(*ports));
        add_port(ports, &n, opts->control_port);
        for (size_t i = 0; i < opts->exclude_outbound_ports.len; ++i)
            add_port(ports, &n, opts->exclude_outbound_ports.ports[i]);
        add_port_returns(&b, CHAIN_OUTPUT, ports, n);
        free(ports);
    }
    sbuf_printf(&b, "-A %s -j %s\n", CHAIN_OUTPUT, CHAIN_REDIRECT);
    sbuf_printf(&b, "-A %s -p tcp -j REDIRECT --to-ports %u\n", CHAIN_REDIRECT, opts->outbound_port);

    /* the hooks last: the chains they jump to are complete when the batch commits (atomically anyway) */
    sbuf_printf(&b, "-A PREROUTING -p tcp -j %s\n", CHAIN_INBOUND);
    sbuf_printf(&b, "-A OUTPUT -p tcp -j %s\n", CHAIN_OUTPUT);
    sbuf_printf(&b, "COMMIT\n");
    return b.base;
}

char *
rm_init_render_remove(const rm_init_state_t *state)
{
    sbuf_t b;
    sbuf_init(&b);
    sbuf_printf(&b, "*nat\n");
    /* own chains may jump to each other: empty them all before deleting any */
    for (size_t i = 0; i < state->num_chains; ++i)
        sbuf_printf(&b, "-F %s\n", state->chains[i]);
    for (size_t i = 0; i < state->num_jumps; ++i)
        sbuf_printf(&b, "-D %s\n", state->jumps[i]);
    for (size_t i = 0; i < state->num_chains; ++i)
        sbuf_printf(&b, "-X %s\n", state->chains[i]);
    sbuf_printf(&b, "COMMIT\n");
    return b.base;
}
