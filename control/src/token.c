/*
 * Bootstrap tokens (see token.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "token.h"

#define LOG "token"
#define MAX_NAME 63
#define MAX_NODE 253
/* a lapsed token is kept (and refused with a clear reason) this long before it is forgotten */
#define LAPSED_KEEP_S (24 * 3600)

typedef struct st_entry_t {
    char hash[65];
    char ns[MAX_NAME + 1], sa[MAX_NAME + 1];
    int64_t expires;
    char node[MAX_NODE + 1]; /* "" while unused */
    int64_t cert_not_after;
} entry_t;

struct st_rm_tokens_t {
    char *path;
    entry_t *entries;
    size_t n;
};

int
rm_token_valid_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > MAX_NAME || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (const char *p = s; *p != '\0'; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return 0;
    return 1;
}

static void
hash_token(const char *token, char *out)
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
    for (unsigned i = 0; i != 32; ++i)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[64] = '\0';
}

static int
save(rm_tokens_t *t, const entry_t *entries, size_t n, char *err, size_t errsz)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", t->path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fp == NULL) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (size_t i = 0; i != n; ++i)
        fprintf(fp, "v1 %s %s %s %lld %s %lld\n", entries[i].hash, entries[i].ns, entries[i].sa, (long long)entries[i].expires,
                entries[i].node[0] != '\0' ? entries[i].node : "-", (long long)entries[i].cert_not_after);
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        fclose(fp);
        unlink(tmp);
        return -1;
    }
    if (fclose(fp) != 0 || rename(tmp, t->path) != 0) {
        snprintf(err, errsz, "%s: %s", t->path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* 1 when the entry is of no use any more and can be forgotten */
static int
is_stale(const entry_t *e, int64_t now)
{
    if (e->node[0] == '\0')
        return e->expires <= now;
    return e->cert_not_after + LAPSED_KEEP_S <= now;
}

/* Writes entries (plus `extra` if not NULL, minus stale ones) and makes them the state. */
static int
commit(rm_tokens_t *t, entry_t *entries, size_t n, const entry_t *extra, char *err, size_t errsz)
{
    int64_t now = time(NULL);
    entry_t *next = rm_calloc(n + 2, sizeof(*next));
    size_t m = 0;
    for (size_t i = 0; i != n; ++i)
        if (!is_stale(&entries[i], now))
            next[m++] = entries[i];
    if (extra != NULL)
        next[m++] = *extra;
    if (save(t, next, m, err, errsz) != 0) {
        free(next);
        return -1;
    }
    free(t->entries);
    t->entries = next;
    t->n = m;
    return 0;
}

rm_tokens_t *
rm_tokens_open(const char *dir, char *err, size_t errsz)
{
    rm_tokens_t *t = rm_calloc(1, sizeof(*t));
    size_t plen = strlen(dir) + sizeof(RM_TOKENS_FILE) + 2;
    t->path = rm_malloc(plen);
    snprintf(t->path, plen, "%s/%s", dir, RM_TOKENS_FILE);
    FILE *fp = fopen(t->path, "r");
    if (fp == NULL) {
        if (errno == ENOENT)
            return t;
        snprintf(err, errsz, "%s: %s", t->path, strerror(errno));
        rm_tokens_close(t);
        return NULL;
    }
    char line[1024];
    unsigned lineno = 0;
    size_t cap = 0;
    while (fgets(line, sizeof(line), fp) != NULL) {
        ++lineno;
        entry_t e;
        memset(&e, 0, sizeof(e));
        long long expires, not_after;
        if (sscanf(line, "v1 %64s %63s %63s %lld %253s %lld", e.hash, e.ns, e.sa, &expires, e.node, &not_after) != 6 ||
            strlen(e.hash) != 64) {
            snprintf(err, errsz, "%s:%u: not a token record (the file is damaged; remove it to forget every token)", t->path,
                     lineno);
            fclose(fp);
            rm_tokens_close(t);
            return NULL;
        }
        if (strcmp(e.node, "-") == 0)
            e.node[0] = '\0';
        e.expires = expires;
        e.cert_not_after = not_after;
        if (t->n == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            t->entries = rm_realloc(t->entries, cap * sizeof(*t->entries));
        }
        t->entries[t->n++] = e;
    }
    fclose(fp);
    return t;
}

void
rm_tokens_close(rm_tokens_t *t)
{
    if (t == NULL)
        return;
    free(t->path);
    free(t->entries);
    free(t);
}

size_t
rm_tokens_count(const rm_tokens_t *t)
{
    return t->n;
}

int
rm_tokens_create(rm_tokens_t *t, const char *ns, const char *sa, uint32_t ttl_s, char *token, int64_t *expires, char *err,
                 size_t errsz)
{
    if (t->n >= RM_TOKENS_MAX) {
        snprintf(err, errsz, "%d tokens are stored already; wait for unused ones to expire", RM_TOKENS_MAX);
        return -1;
    }
    unsigned char secret[32];
    if (RAND_bytes(secret, sizeof(secret)) != 1) {
        snprintf(err, errsz, "no randomness for a token");
        return -1;
    }
    strcpy(token, RM_TOKEN_PREFIX);
    for (unsigned i = 0; i != sizeof(secret); ++i)
        sprintf(token + strlen(RM_TOKEN_PREFIX) + 2 * i, "%02x", secret[i]);
    OPENSSL_cleanse(secret, sizeof(secret));
    entry_t e;
    memset(&e, 0, sizeof(e));
    hash_token(token, e.hash);
    snprintf(e.ns, sizeof(e.ns), "%s", ns);
    snprintf(e.sa, sizeof(e.sa), "%s", sa);
    e.expires = (int64_t)time(NULL) + ttl_s;
    if (commit(t, t->entries, t->n, &e, err, errsz) != 0)
        return -1;
    *expires = e.expires;
    return 0;
}

static entry_t *
find(rm_tokens_t *t, const char *token)
{
    char hash[65];
    hash_token(token, hash);
    for (size_t i = 0; i != t->n; ++i)
        if (CRYPTO_memcmp(t->entries[i].hash, hash, 64) == 0)
            return &t->entries[i];
    return NULL;
}

rm_token_result_t
rm_tokens_check(rm_tokens_t *t, const char *token, const char *node_id, const char **ns, const char **sa, char *why, size_t whysz)
{
    int64_t now = time(NULL);
    entry_t *e = find(t, token);
    if (e == NULL) {
        snprintf(why, whysz, "the bootstrap token is not known to this control plane");
        return RM_TOKEN_UNKNOWN;
    }
    if (e->node[0] == '\0') {
        if (e->expires <= now) {
            snprintf(why, whysz, "the bootstrap token for ns/%s/sa/%s expired unused %lld s ago; create a new one", e->ns, e->sa,
                     (long long)(now - e->expires));
            return RM_TOKEN_EXPIRED;
        }
    } else if (node_id != NULL && strcmp(e->node, node_id) != 0) {
        snprintf(why, whysz,
                 "the bootstrap token for ns/%s/sa/%s is already bound to another node (%s); a token serves one workload", e->ns,
                 e->sa, e->node);
        return RM_TOKEN_IN_USE;
    } else if (e->cert_not_after <= now) {
        snprintf(why, whysz, "the last certificate issued with this token expired %lld s ago; create a new token",
                 (long long)(now - e->cert_not_after));
        return RM_TOKEN_LAPSED;
    }
    *ns = e->ns;
    *sa = e->sa;
    return RM_TOKEN_OK;
}

int
rm_tokens_record(rm_tokens_t *t, const char *token, const char *node_id, int64_t not_after, char *err, size_t errsz)
{
    entry_t *e = find(t, token);
    if (e == NULL) {
        snprintf(err, errsz, "the token disappeared");
        return -1;
    }
    /* commit() replaces the array only once the file is written: change a copy */
    entry_t *copy = rm_calloc(t->n + 1, sizeof(*copy));
    memcpy(copy, t->entries, t->n * sizeof(*copy));
    entry_t *c = &copy[e - t->entries];
    snprintf(c->node, sizeof(c->node), "%s", node_id);
    c->cert_not_after = not_after;
    int r = commit(t, copy, t->n, NULL, err, errsz);
    free(copy);
    return r;
}

int
rm_admin_token_valid(const char *s)
{
    if (strlen(s) != RM_ADMIN_TOKEN_LEN || strncmp(s, RM_ADMIN_TOKEN_PREFIX, 5) != 0)
        return 0;
    for (const char *p = s + 5; *p != '\0'; ++p)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

int
rm_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

static int
read_admin_token(const char *path, char *token, char *err, size_t errsz)
{
    char buf[256];
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    rm_trim_space(buf);
    const char *p = buf;
    int ok = rm_admin_token_valid(p);
    if (ok)
        memcpy(token, p, RM_ADMIN_TOKEN_LEN + 1);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!ok) {
        snprintf(err, errsz, "%s: not an admin credential (\"" RM_ADMIN_TOKEN_PREFIX "\" followed by 64 hex digits)", path);
        return -1;
    }
    return 0;
}

int
rm_admin_token_load(const char *state_dir, const char *file, char *token, char *err, size_t errsz)
{
    if (file != NULL)
        return read_admin_token(file, token, err, errsz);
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", state_dir, RM_ADMIN_TOKEN_FILE);
    if (access(path, F_OK) == 0)
        return read_admin_token(path, token, err, errsz);
    unsigned char rnd[32];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        snprintf(err, errsz, "no randomness for the admin credential");
        return -1;
    }
    memcpy(token, RM_ADMIN_TOKEN_PREFIX, 5);
    for (unsigned i = 0; i != 32; ++i)
        sprintf(token + 5 + 2 * i, "%02x", rnd[i]);
    OPENSSL_cleanse(rnd, sizeof(rnd));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[RM_ADMIN_TOKEN_LEN + 2];
    snprintf(line, sizeof(line), "%s\n", token);
    int ok = write(fd, line, RM_ADMIN_TOKEN_LEN + 1) == RM_ADMIN_TOKEN_LEN + 1 && fsync(fd) == 0;
    OPENSSL_cleanse(line, sizeof(line));
    if (close(fd) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    rm_log_info(LOG, "created the admin credential %s (remoractl --admin-token %s)", path, path);
    return 0;
}
