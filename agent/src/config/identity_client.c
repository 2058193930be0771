/*
 * The agent's identity client (see identity_client.h).
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "remora/v1/identity.pb-c.h"
#include "config/control_client.h"
#include "config/h2rpc.h"
#include "config/identity_client.h"

#define LOG "identity"
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define CALL_TIMEOUT_MS 2000
#define MAX_TOKEN_BYTES 8192

struct st_rm_identity_client_t {
    rm_identity_client_options_t opts;
    char *address, *node_id, *token_file, *trust_anchor_file;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int stopping;
    rm_h2rpc_call_t *stream; /* the call in flight, guarded by mutex, for cancel */
    unsigned seed;
};

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the token file into buf (trimmed). Returns 0, or -1 with a message. */
static int
read_token(const char *path, char *buf, size_t bufsz, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "--identity-token %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, bufsz - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    if (rm_trim_space(buf) == 0) {
        snprintf(err, errlen, "--identity-token %s: the file is empty", path);
        return -1;
    }
    return 0;
}

/*
 * The Certify call, made as a stream on a fresh connection (one per attempt: the trust bundle is read
 * again each time), fail-fast: a control plane that is away or does not verify ends the attempt at
 * once with the reason; CALL_TIMEOUT_MS at most per step. The wire format is the same as a unary
 * call's. Returns 0 with *resp set, or -1 with the status.
 */
static int
certify(rm_identity_client_t *c, const ProtobufCMessage *req, ProtobufCMessage **resp, rm_h2rpc_status_t *st)
{
    rm_control_credentials_t cr;
    if (rm_control_credentials_load(&cr, c->opts.insecure, c->trust_anchor_file, NULL, st->message, sizeof(st->message)) != 0) {
        st->code = RM_H2RPC_FAILED_PRECONDITION;
        return -1;
    }
    rm_h2rpc_security_t sec = {.insecure = cr.insecure, .root_pem = cr.root_pem};
    rm_h2rpc_call_t *s = rm_h2rpc_open(c->address, &sec, "/remora.v1.Identity/Certify");
    rm_control_credentials_dispose(&cr);
    pthread_mutex_lock(&c->mutex);
    c->stream = s;
    if (c->stopping)
        rm_h2rpc_cancel(s);
    pthread_mutex_unlock(&c->mutex);
    rm_h2rpc_result_t r = rm_h2rpc_send(s, req, CALL_TIMEOUT_MS, st);
    if (r == RM_H2RPC_DONE)
        r = rm_h2rpc_close_send(s, CALL_TIMEOUT_MS, st);
    if (r == RM_H2RPC_DONE)
        r = rm_h2rpc_recv(s, &remora__v1__certify_response__descriptor, CALL_TIMEOUT_MS, resp, st);
    if (r == RM_H2RPC_TIMEOUT) {
        st->code = RM_H2RPC_DEADLINE_EXCEEDED;
        snprintf(st->message, sizeof(st->message), "no answer within %d ms (is the control plane up?)", CALL_TIMEOUT_MS);
    }
    pthread_mutex_lock(&c->mutex);
    c->stream = NULL;
    pthread_mutex_unlock(&c->mutex);
    rm_h2rpc_destroy(s);
    return r == RM_H2RPC_DONE ? 0 : -1;
}

/* One Certify. Returns 0 once the new identity is in service, or -1 with the reason. */
static int
attempt(rm_identity_client_t *c, char *err, size_t errlen)
{
    char *token = rm_malloc(MAX_TOKEN_BYTES);
    if (read_token(c->token_file, token, MAX_TOKEN_BYTES, err, errlen) != 0) {
        free(token);
        return -1;
    }
    void *key;
    uint8_t *csr;
    size_t csr_len;
    if (c->opts.make_csr(c->opts.ctx, &key, &csr, &csr_len, err, errlen) != 0) {
        free(token);
        return -1;
    }
    Remora__V1__CertifyRequest req = REMORA__V1__CERTIFY_REQUEST__INIT;
    req.csr_der.data = csr;
    req.csr_der.len = csr_len;
    req.token = token;
    req.node_id = c->node_id;
    ProtobufCMessage *m = NULL;
    rm_h2rpc_status_t st;
    int r = certify(c, &req.base, &m, &st);
    free(csr);
    memset(token, 0, MAX_TOKEN_BYTES);
    free(token);
    if (r != 0) {
        c->opts.release_key(c->opts.ctx, key);
        snprintf(err, errlen, "Certify at %s: %s: %s", c->address, rm_h2rpc_code_name(st.code), st.message);
        return -1;
    }
    Remora__V1__CertifyResponse *resp = (Remora__V1__CertifyResponse *)m;
    const uint8_t **ders = rm_calloc(resp->n_cert_chain_der + 1, sizeof(*ders));
    size_t *lens = rm_calloc(resp->n_cert_chain_der + 1, sizeof(*lens));
    for (size_t i = 0; i != resp->n_cert_chain_der; ++i) {
        ders[i] = resp->cert_chain_der[i].data;
        lens[i] = resp->cert_chain_der[i].len;
    }
    r = c->opts.install(c->opts.ctx, key, ders, lens, resp->n_cert_chain_der, resp->trust_bundle_pem, err, errlen);
    if (r == 0)
        rm_log_info(LOG, "certificate for %s in service, expires in %lld s", resp->spiffe_id,
                    resp->expires != NULL ? (long long)(resp->expires->seconds - wall_ms() / 1000) : 0ll);
    free(ders);
    free(lens);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

/* When to renew the identity in service: 70% of its lifetime +- 5%; now when there is none. */
static int64_t
renew_at_ms(rm_identity_client_t *c)
{
    int64_t nb, na;
    if (c->opts.validity(c->opts.ctx, &nb, &na) != 0 || na <= nb)
        return 0;
    int64_t life_ms = (na - nb) * 1000;
    int64_t jitter = (int64_t)(rand_r(&c->seed) % 1001) - 500; /* per mille of 10% */
    return nb * 1000 + life_ms * 7 / 10 + life_ms / 10 * jitter / 1000;
}

/* Waits until `until_ms` (wall clock) or stop. Returns 1 when stopping. */
static int
sleep_until(rm_identity_client_t *c, int64_t until_ms)
{
    struct timespec until = {.tv_sec = until_ms / 1000, .tv_nsec = (long)(until_ms % 1000) * 1000000};
    pthread_mutex_lock(&c->mutex);
    while (!c->stopping && wall_ms() < until_ms && pthread_cond_timedwait(&c->cond, &c->mutex, &until) != ETIMEDOUT)
        ;
    int stopping = c->stopping;
    pthread_mutex_unlock(&c->mutex);
    return stopping;
}

static void *
thread_main(void *arg)
{
    rm_identity_client_t *c = arg;
    /* a fresh connection per attempt (certify): no reconnect backoff of a channel delays the first
     * renewal after the control plane returns; our own backoff paces the calls */
    int64_t backoff_ms = BACKOFF_MIN_MS;
    int64_t next_ms = renew_at_ms(c);
    for (;;) {
        if (sleep_until(c, next_ms))
            break;
        char err[1024];
        int ok = attempt(c, err, sizeof(err)) == 0;
        /* the TLS connection and the CSR are gone: give their memory back until the next renewal (hours) */
        malloc_trim(0);
        if (ok) {
            c->opts.on_result(c->opts.ctx, 1, NULL);
            backoff_ms = BACKOFF_MIN_MS;
            next_ms = renew_at_ms(c);
            /* a certificate whose 70% point is already behind us (skewed clocks) must not make us spin */
            if (next_ms < wall_ms() + BACKOFF_MIN_MS)
                next_ms = wall_ms() + BACKOFF_MIN_MS;
            continue;
        }
        c->opts.on_result(c->opts.ctx, 0, err);
        int64_t nb, na, now = wall_ms(), wait = backoff_ms;
        if (c->opts.validity(c->opts.ctx, &nb, &na) == 0) {
            int64_t left_ms = na * 1000 - now;
            if (wait > left_ms / 4)
                wait = left_ms / 4 > BACKOFF_MIN_MS ? left_ms / 4 : BACKOFF_MIN_MS;
            rm_log_warn(LOG, "%s; the certificate in service expires in %lld s; retrying in %lld ms", err,
                        (long long)(left_ms / 1000), (long long)wait);
        } else {
            rm_log_warn(LOG, "%s; no identity yet; retrying in %lld ms", err, (long long)wait);
        }
        /* jitter: half to full of the wait */
        wait = wait / 2 + (int64_t)(rand_r(&c->seed) % (unsigned)(wait / 2 + 1));
        next_ms = now + wait;
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    }
    return NULL;
}

rm_identity_client_t *
rm_identity_client_start(const rm_identity_client_options_t *opts, char *err, size_t errlen)
{
    rm_identity_client_t *c = rm_calloc(1, sizeof(*c));
    c->opts = *opts;
    c->address = rm_strdup(opts->address);
    c->node_id = rm_strdup(opts->node_id);
    c->token_file = rm_strdup(opts->token_file);
    c->trust_anchor_file = opts->trust_anchor_file != NULL ? rm_strdup(opts->trust_anchor_file) : NULL;
    c->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)c;
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->cond, NULL);
    int r = rm_thread_create(&c->thread, thread_main, c);
    if (r != 0) {
        snprintf(err, errlen, "cannot start the identity thread: %s", strerror(r));
        free(c->address);
        free(c->node_id);
        free(c->token_file);
        free(c->trust_anchor_file);
        free(c);
        return NULL;
    }
    return c;
}

void
rm_identity_client_stop(rm_identity_client_t *c)
{
    pthread_mutex_lock(&c->mutex);
    c->stopping = 1;
    if (c->stream != NULL)
        rm_h2rpc_cancel(c->stream);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mutex);
    pthread_cond_destroy(&c->cond);
    free(c->address);
    free(c->node_id);
    free(c->token_file);
    free(c->trust_anchor_file);
    free(c);
}
