/*
 * Mesh mTLS for the opaque relay (ALPN remora.mesh/tcp, docs/mesh-tls.md): one TLS 1.3 session driven
 * over the relay's plain socket, with no I/O of its own.
 *
 * h2o's TLS sockets cannot half-close (no close_notify on demand, a received one is an error), which an
 * opaque relay needs: TCP clients shut down their write side and go on reading. So the relay keeps plain
 * h2o sockets and runs OpenSSL through a BIO of its own: the SSL reads ciphertext straight from the
 * socket's input buffer (`*in`, consumed record by record) and writes it into an output buffer the
 * caller sends. TLS 1.3 half-close (checked with OpenSSL 3.0): after sending close_notify
 * (rm_mesh_relay_close_notify) the SSL still reads; after receiving one (RM_MESH_RELAY_EOF) it still writes.
 *
 * The contexts, peer verification (the SPIFFE ID checked against the expected one on the client, captured
 * on the server), session tickets and counters are the mesh's (tls/mesh.h); the handshake state is tied to
 * the SSL (rm_mesh_handshake_attach), not to a socket. close_notify is sent (the contexts' quiet shutdown is
 * turned off on this SSL).
 *
 * Bounds: the output is two buffers, one being written (at most one write in flight, as h2o wants) and one
 * filling; the caller encrypts only while no output is pending (rm_mesh_relay_has_output), so what is held
 * is what it passed in one rm_mesh_relay_write (tcp/tcp_proxy.c: at most RM_TCP_READ_AHEAD + one read),
 * encrypted, plus handshake and post-handshake messages.
 * Decryption appends at most `max` bytes to the caller's buffer per call and leaves the rest of the
 * ciphertext in `*in`; OpenSSL holds at most one record (16 KiB + 256) of its own.
 *
 * Thread: the worker that owns the socket.
 */
#ifndef remora__tls_mesh_relay_h
#define remora__tls_mesh_relay_h

#include <h2o.h>
#include "tls/mesh.h"

typedef struct st_rm_mesh_relay_t rm_mesh_relay_t;

typedef enum en_rm_mesh_relay_status_t {
    RM_MESH_RELAY_ERROR = -1, /* a TLS error (the handshake's is in rm_mesh_relay_handshake_state()->why) */
    RM_MESH_RELAY_WANT = 0,   /* needs more ciphertext in *in */
    RM_MESH_RELAY_DONE = 1,   /* handshake finished / some plaintext appended */
    RM_MESH_RELAY_EOF = 2,    /* the peer sent close_notify: no more plaintext this way */
} rm_mesh_relay_status_t;

/**
 * A client offering remora.mesh/tcp to a peer agent that must present `expected` (copied); `sock` is the plain
 * socket to the peer: `&sock->input` is where ciphertext is read from, and its peer address keys the session cache.
 * Returns NULL when the agent has no identity (nothing is counted).
 */
rm_mesh_relay_t *rm_mesh_relay_client(const char *expected, h2o_socket_t *sock);
/** A server (the mesh context: client certificate required and verified) reading from `&sock->input`; NULL without an
 * identity. */
rm_mesh_relay_t *rm_mesh_relay_server(h2o_socket_t *sock);
void rm_mesh_relay_destroy(rm_mesh_relay_t *t);

/** Advances the handshake with what `*in` holds. DONE once finished (then check rm_mesh_relay_alpn_ok). */
rm_mesh_relay_status_t rm_mesh_relay_handshake(rm_mesh_relay_t *t);
/** The handshake's state: the peer's SPIFFE ID, failure and message (owned by `t`). */
rm_mesh_handshake_t *rm_mesh_relay_handshake_state(rm_mesh_relay_t *t);
/** 1 if the handshake negotiated remora.mesh/tcp. */
int rm_mesh_relay_alpn_ok(rm_mesh_relay_t *t);

/** Decrypts what `*in` holds, appending at most `max` bytes of plaintext to `*plain`. DONE (bytes appended), WANT, EOF
 * (close_notify; bytes appended before it are kept), ERROR (the message in `err`). */
rm_mesh_relay_status_t rm_mesh_relay_read(rm_mesh_relay_t *t, h2o_buffer_t **plain, size_t max, char *err, size_t errlen);
/** Encrypts `len` bytes into the output. 0, or -1 (the session was shut down, or OpenSSL failed). */
int rm_mesh_relay_write(rm_mesh_relay_t *t, const void *data, size_t len);
/** Queues close_notify (once). The SSL keeps reading what the peer still sends. */
void rm_mesh_relay_close_notify(rm_mesh_relay_t *t);

/** 1 while output is queued or being written. */
int rm_mesh_relay_has_output(rm_mesh_relay_t *t);
/** The output to write now (the queued bytes move to the in-flight buffer), or an empty iovec when there is none or a
 * write is already in flight. The bytes stay valid until rm_mesh_relay_output_done. */
h2o_iovec_t rm_mesh_relay_take_output(rm_mesh_relay_t *t);
/** The write of the taken output completed. */
void rm_mesh_relay_output_done(rm_mesh_relay_t *t);

#endif
