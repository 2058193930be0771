/*
 * Fuzz target for the opaque relay's mesh mTLS engine (agent/src/tls/mesh_relay.c: OpenSSL over the relay's own
 * buffers): the bytes a peer agent (or whoever sits on the wire) sends, fed to the server side and the client side.
 *
 * The process has a real workload identity (a CA of control/src/ca.c, a certificate issued for ns "shop" sa "web",
 * published as the agent's: tls/identity.h), made once. Each relay reads from the input buffer of an h2o socket that
 * is never connected (so no peer address: the client's session cache stays off and inputs do not depend on each
 * other). The first byte of the input picks the mode:
 *   - bit 1 clear, "alone": one relay (bit 0: 0 the server, 1 the client); the rest of the input is the peer's bytes
 *     in chunks, each a length byte L (its low 7 bits) and L bytes; after each chunk the relay steps (handshake until
 *     it ends, then read); with the length byte's high bit, it also tries to write and to read whatever the state.
 *   - bit 1 set, "wire": a real client and a real server relay, and the input is a script of one-byte operations on
 *     the wire between them (op & 7 the operation, bit 3 the side, op >> 4 an argument): 0 step (handshake, then
 *     read), 1 carry the side's output to the other unchanged, 2 carry it with one byte changed (2 bytes of offset,
 *     1 byte of XOR follow), 3 carry only a prefix of it (2 bytes of length follow), 4 inject bytes into the other's
 *     input (a length byte and the bytes follow), 5 write (arg + 1) * 97 bytes of plaintext, 6 close_notify, 7 carry
 *     the side's last carried bytes again (a replay).
 *
 * Besides "no crash, no leak, no UB" it checks, for any input:
 *   - a relay's handshake ends DONE only with the peer verified: no failure recorded, the peer's SPIFFE ID the
 *     identity's (on the client, the expected one), remora.mesh/tcp negotiated; a failed handshake has a reason;
 *   - no plaintext is read before a verified handshake (a read that appends bytes finds the handshake done and
 *     verified; regress_read_then_error: a read may append a record's bytes and then fail on the next record);
 *     a read appends at most its `max`; a failed read has a reason;
 *   - what a relay reads is a prefix of what the other relay was given to write, in order (no byte altered,
 *     repeated or made up, whatever the wire did), and nothing after the other's close_notify;
 *   - the plaintext given to write (every byte of it carries a marker) never appears on the wire.
 * A violated property aborts. FUZZ_MESH_RELAY_TRACE=1 in the environment prints each relay's end state per input.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>
#include <h2o.h>
#include <h2o/socket/uv-binding.h>
#include "ca.h"
#include "fuzz_common.h"
#include "tls/identity.h"
#include "tls/mesh_relay.h"

/* what the relays are given to write: MARKER, repeated (a write of n bytes writes its first n) */
#define MARKER "<remora-plaintext-marker>"
#define MARKER_LEN (sizeof(MARKER) - 1)
/* written plaintext kept per side, to check what the other reads (longer streams are cut: writes beyond are refused) */
#define MAX_WRITTEN (256 * 1024)
/* the most a replay (op 7) keeps of what a side carried last */
#define MAX_REPLAY (64 * 1024)

static uv_loop_t loop;
static h2o_socket_t *socks[2];
static char expected[512];
static uint8_t pattern[MAX_WRITTEN];

typedef struct st_side_t {
    rm_mesh_relay_t *t;
    h2o_socket_t *sock;
    int client;
    int done;
    int dead;
    int eof;
    int closed;
    /* what this side was given to write (accepted by rm_mesh_relay_write) */
    size_t written;
    /* what this side read */
    size_t read;
    /* written when this side sent close_notify: the other reads no more than that */
    size_t written_at_close;
    h2o_buffer_t *plain;
    uint8_t *last;
    size_t last_len;
} side_t;

static h2o_socket_t *
unconnected_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    FUZZ_CHECK(fd >= 0, "a socket");
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    uv_tcp_init(&loop, tcp);
    FUZZ_CHECK(uv_tcp_open(tcp, fd) == 0, "uv_tcp_open");
    return h2o_uv_socket_create((uv_stream_t *)tcp, (uv_close_cb)free);
}

static void
close_sockets(void)
{
    for (int i = 0; i != 2; ++i)
        h2o_socket_close(socks[i]);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
}

/* The agent's identity: a CA in a temporary directory (removed at once), one certificate, published. */
static void
init_once(void)
{
    char dir[] = "/tmp/rm_fuzz_mesh_relay.XXXXXX";
    FUZZ_CHECK(mkdtemp(dir) != NULL, "a temporary directory");
    rm_ca_options_t o = {.state_dir = dir, .cert_lifetime_s = 7 * 86400};
    char err[512];
    rm_ca_t *ca = rm_ca_open(&o, err, sizeof(err));
    if (ca == NULL) {
        fprintf(stderr, "fuzz_mesh_relay: %s\n", err);
        abort();
    }
    EVP_PKEY *key;
    uint8_t *csr, *leaf;
    size_t csr_len, leaf_len, issuer_len;
    int64_t not_after;
    FUZZ_CHECK(rm_identity_make_csr(&key, &csr, &csr_len, err, sizeof(err)) == 0, "a CSR");
    FUZZ_CHECK(rm_ca_issue(ca, csr, csr_len, "shop", "web", &leaf, &leaf_len, &not_after, err, sizeof(err)) == 0, "a certificate");
    const uint8_t *ders[2] = {leaf, rm_ca_issuer_der(ca, &issuer_len)};
    size_t lens[2] = {leaf_len, issuer_len};
    rm_identity_t *id = rm_identity_create(key, ders, lens, 2, rm_ca_bundle_pem(ca), err, sizeof(err));
    if (id == NULL) {
        fprintf(stderr, "fuzz_mesh_relay: %s\n", err);
        abort();
    }
    snprintf(expected, sizeof(expected), "%s", id->spiffe_id);
    FUZZ_CHECK(strlen(expected) < RM_MESH_MAX_ID, "the SPIFFE ID fits the mesh's bound");
    rm_identity_publish(id);
    rm_identity_unref(id);
    EVP_PKEY_free(key);
    free(csr);
    free(leaf);
    rm_ca_destroy(ca);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    FUZZ_CHECK(system(cmd) == 0, "the temporary directory is removed");
    rm_mesh_tls_init();
    uv_loop_init(&loop);
    socks[0] = unconnected_socket();
    socks[1] = unconnected_socket();
    for (size_t i = 0; i != MAX_WRITTEN; ++i)
        pattern[i] = (uint8_t)MARKER[i % MARKER_LEN];
    atexit(close_sockets);
}

static void
side_init(side_t *s, int client, h2o_socket_t *sock)
{
    memset(s, 0, sizeof(*s));
    s->client = client;
    s->sock = sock;
    s->t = client ? rm_mesh_relay_client(expected, sock) : rm_mesh_relay_server(sock);
    FUZZ_CHECK(s->t != NULL, "a relay (the identity is published)");
    h2o_buffer_init(&s->plain, &h2o_socket_buffer_prototype);
}

static void
side_dispose(side_t *s)
{
    if (getenv("FUZZ_MESH_RELAY_TRACE") != NULL)
        fprintf(stderr, "fuzz_mesh_relay: %s: %s%s%s%s written %zu read %zu%s%s\n", s->client ? "client" : "server",
                s->done ? "verified" : "unverified", s->dead ? " failed" : "", s->eof ? " eof" : "", s->closed ? " closed" : "",
                s->written, s->read, rm_mesh_relay_handshake_state(s->t)->why[0] != '\0' ? ": " : "",
                rm_mesh_relay_handshake_state(s->t)->why);
    rm_mesh_relay_destroy(s->t);
    h2o_buffer_dispose(&s->plain);
    h2o_buffer_consume(&s->sock->input, s->sock->input->size);
    free(s->last);
}

static void
check_verified(side_t *s)
{
    rm_mesh_handshake_t *hs = rm_mesh_relay_handshake_state(s->t);
    FUZZ_CHECK(hs->failure == RM_MESH_SUCCESS, "a finished handshake recorded no failure");
    FUZZ_CHECK(strcmp(hs->peer_id, expected) == 0, "a finished handshake verified the peer's SPIFFE ID");
    FUZZ_CHECK(rm_mesh_relay_alpn_ok(s->t), "a finished handshake negotiated remora.mesh/tcp");
}

static void
handshake(side_t *s)
{
    rm_mesh_relay_status_t r = rm_mesh_relay_handshake(s->t);
    FUZZ_CHECK(r == RM_MESH_RELAY_DONE || r == RM_MESH_RELAY_WANT || r == RM_MESH_RELAY_ERROR, "a handshake status");
    if (r == RM_MESH_RELAY_DONE) {
        check_verified(s);
        s->done = 1;
    } else if (r == RM_MESH_RELAY_ERROR) {
        FUZZ_CHECK(rm_mesh_relay_handshake_state(s->t)->why[0] != '\0', "a failed handshake has a reason");
        s->dead = 1;
    }
}

/* Reads with `max`; `peer`: the side that wrote (NULL: nobody did, so nothing may be read). */
static void
read_some(side_t *s, size_t max, const side_t *peer)
{
    char err[512] = "";
    size_t before = s->plain->size;
    rm_mesh_relay_status_t r = rm_mesh_relay_read(s->t, &s->plain, max, err, sizeof(err));
    size_t n = s->plain->size - before;
    FUZZ_CHECK(n <= max, "a read appends at most max bytes");
    if (getenv("FUZZ_MESH_RELAY_TRACE") != NULL)
        fprintf(stderr, "fuzz_mesh_relay: %s read %zu (max %zu): status %d%s%s\n", s->client ? "client" : "server", n, max, (int)r,
                err[0] != '\0' ? ": " : "", err);
    if (n != 0) {
        /* plaintext only after a verified handshake: done before this read, or within it (SSL_read drives the
         * handshake) and then over unless the same read went on to fail on a later record (the SSL is then in error) */
        if (!s->done)
            FUZZ_CHECK(r == RM_MESH_RELAY_ERROR || rm_mesh_relay_handshake(s->t) == RM_MESH_RELAY_DONE,
                       "no plaintext before the handshake ended");
        check_verified(s);
        s->done = 1;
        FUZZ_CHECK(peer != NULL && s->read + n <= peer->written, "nothing is read that the peer did not write");
        FUZZ_CHECK(memcmp(s->plain->bytes + before, pattern + s->read, n) == 0, "what is read is what the peer wrote, in order");
        if (peer->closed)
            FUZZ_CHECK(s->read + n <= peer->written_at_close, "nothing is read past the peer's close_notify");
        s->read += n;
        h2o_buffer_consume(&s->plain, s->plain->size);
    }
    switch (r) {
    case RM_MESH_RELAY_DONE:
        FUZZ_CHECK(n != 0, "DONE appended bytes");
        break;
    case RM_MESH_RELAY_WANT:
        break;
    case RM_MESH_RELAY_EOF:
        /* before the handshake a plaintext alert may end it (no plaintext was read); after it, alerts are encrypted */
        if (s->done)
            FUZZ_CHECK(peer != NULL && peer->closed, "after the handshake, close_notify only from a peer that sent it");
        s->eof = 1;
        break;
    case RM_MESH_RELAY_ERROR:
        FUZZ_CHECK(err[0] != '\0', "a failed read has a reason");
        s->dead = 1;
        break;
    default:
        FUZZ_CHECK(0, "a read status");
    }
}

static void
step(side_t *s, size_t max, const side_t *peer)
{
    if (s->dead)
        return;
    if (!s->done)
        handshake(s);
    else if (!s->eof)
        read_some(s, max, peer);
}

static void
write_some(side_t *s, size_t n)
{
    if (s->dead || s->written + n > MAX_WRITTEN)
        return;
    if (rm_mesh_relay_write(s->t, pattern + s->written, n) == 0) {
        FUZZ_CHECK(!s->closed, "no write after our own close_notify");
        /* encrypted for a peer not verified yet (TLS 1.3 lets a server send before the client's Finished): refused */
        FUZZ_CHECK(rm_mesh_relay_handshake(s->t) == RM_MESH_RELAY_DONE, "no write accepted before the handshake ended");
        check_verified(s);
        s->done = 1;
        s->written += n;
    }
}

static void
close_notify(side_t *s)
{
    if (s->dead || s->closed)
        return;
    rm_mesh_relay_close_notify(s->t);
    s->closed = 1;
    s->written_at_close = s->written;
}

/* The side's output as the wire has it, or an empty iovec; rm_mesh_relay_output_done after use. */
static h2o_iovec_t
take(side_t *s)
{
    h2o_iovec_t out = rm_mesh_relay_take_output(s->t);
    if (out.len == 0)
        return out;
    FUZZ_CHECK(rm_mesh_relay_take_output(s->t).len == 0, "one output in flight");
    FUZZ_CHECK(rm_mesh_relay_has_output(s->t), "output in flight is output");
    FUZZ_CHECK(memmem(out.base, out.len, MARKER, MARKER_LEN) == NULL, "no plaintext on the wire");
    return out;
}

static void
deliver(h2o_socket_t *to, const void *bytes, size_t len)
{
    if (len == 0)
        return;
    h2o_iovec_t dst = h2o_buffer_reserve(&to->input, len);
    FUZZ_CHECK(dst.base != NULL, "buffer space");
    memcpy(dst.base, bytes, len);
    to->input->size += len;
}

static void
remember(side_t *s, const void *bytes, size_t len)
{
    free(s->last);
    s->last_len = len < MAX_REPLAY ? len : MAX_REPLAY;
    s->last = malloc(s->last_len + 1);
    memcpy(s->last, bytes, s->last_len);
}

/* Reads a big-endian 16-bit argument; 0 past the end. */
static size_t
arg16(const uint8_t **p, const uint8_t *end)
{
    size_t v = 0;
    for (int i = 0; i != 2; ++i)
        v = v << 8 | (*p < end ? *(*p)++ : 0);
    return v;
}

static void
run_wire(const uint8_t *p, const uint8_t *end)
{
    side_t sides[2];
    side_init(&sides[0], 0, socks[0]);
    side_init(&sides[1], 1, socks[1]);
    while (p < end) {
        uint8_t op = *p++;
        side_t *s = &sides[(op >> 3) & 1], *o = &sides[!((op >> 3) & 1)];
        unsigned arg = op >> 4;
        switch (op & 7) {
        case 0:
            step(s, 1 + (size_t)arg * 4096, o);
            break;
        case 1:
        case 2:
        case 3: {
            h2o_iovec_t out = take(s);
            size_t off = (op & 7) == 1 ? 0 : arg16(&p, end), x = (op & 7) == 2 && p < end ? *p++ : 0;
            if (out.len == 0)
                break;
            size_t len = out.len;
            uint8_t *copy = malloc(len);
            memcpy(copy, out.base, len);
            rm_mesh_relay_output_done(s->t);
            if ((op & 7) == 2)
                copy[off % len] ^= (uint8_t)(x | 1);
            else if ((op & 7) == 3)
                len = off % (len + 1);
            deliver(o->sock, copy, len);
            remember(s, copy, len);
            free(copy);
        } break;
        case 4: {
            size_t n = p < end ? *p++ : 0;
            if (n > (size_t)(end - p))
                n = (size_t)(end - p);
            deliver(o->sock, p, n);
            p += n;
        } break;
        case 5:
            write_some(s, ((size_t)arg + 1) * 97);
            break;
        case 6:
            close_notify(s);
            break;
        case 7:
            deliver(o->sock, s->last, s->last_len);
            break;
        }
    }
    /* what is still queued is checked too */
    for (int i = 0; i != 2; ++i)
        if (take(&sides[i]).len != 0)
            rm_mesh_relay_output_done(sides[i].t);
    side_dispose(&sides[0]);
    side_dispose(&sides[1]);
}

static void
run_alone(int client, const uint8_t *p, const uint8_t *end)
{
    side_t s;
    side_init(&s, client, socks[0]);
    while (p < end && !s.dead) {
        uint8_t l = *p++;
        size_t n = l & 0x7f;
        if (n > (size_t)(end - p))
            n = (size_t)(end - p);
        deliver(s.sock, p, n);
        p += n;
        if ((l & 0x80) != 0) {
            /* whatever the state: nothing may be read from a peer that cannot have a session with us */
            write_some(&s, 97);
            read_some(&s, 65536, NULL);
        }
        step(&s, 65536, NULL);
        if (take(&s).len != 0)
            rm_mesh_relay_output_done(s.t);
    }
    side_dispose(&s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (socks[0] == NULL)
        init_once();
    if (size == 0)
        return 0;
    if ((data[0] & 2) != 0)
        run_wire(data + 1, data + size);
    else
        run_alone(data[0] & 1, data + 1, data + size);
    return 0;
}
