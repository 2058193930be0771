/*
 * A small blocking gRPC client over libnghttp2 and OpenSSL, for the agent's two control-plane calls
 * (control_client.c: /remora.v1.Discovery/StreamSnapshots, identity_client.c: /remora.v1.Identity/Certify).
 * It replaces gRPC C core in the agent: gRPC core and its C++ dependencies cost about 5 MB of
 * resident memory once loaded, nghttp2 and OpenSSL are already in the executable.
 *
 * One call owns one connection (both clients make a fresh connection per attempt, so that a rotated
 * trust bundle or token is used at once). The connection is made by the first send or receive, within
 * that operation's timeout and RM_H2RPC_CONNECT_TIMEOUT_MS in all: TCP (the address may be a DNS name,
 * resolved with getaddrinfo on the calling thread), then TLS 1.2+ with ALPN h2, the server's
 * certificate verified against the trust anchor and the name RM_H2RPC_SERVER_NAME (what gRPC core
 * checked, through its target name override), or cleartext HTTP/2 with prior knowledge when insecure.
 *
 * Wire: HTTP/2 POST with `content-type: application/grpc`, `te: trailers`, `authorization: Bearer
 * TOKEN` when a token is given (TLS only), 5-byte length-prefixed messages, never compressed (a
 * compressed message from the server is refused with INTERNAL); the status comes from grpc-status and
 * grpc-message in the trailers or a trailers-only response, an HTTP status other than 200 is mapped as
 * gRPC maps it, RST_STREAM and GOAWAY as gRPC core reports them. No grpc-timeout is sent: the calls
 * have no deadline (the clients bound each operation locally, as they did with gRPC core). No
 * keepalive PINGs are sent either (the gRPC core channel had none configured); remora-control pings
 * every 20 s, which the idle bound below relies on.
 *
 * Bounds: a message in either direction is at most RM_H2RPC_MAX_MESSAGE_BYTES (bigger: RESOURCE_EXHAUSTED,
 * the call is cancelled); the receive window is RM_H2RPC_WINDOW_BYTES per stream and connection and the
 * bytes of messages not yet taken by rm_h2rpc_recv hold it back (explicit backpressure), so what is
 * buffered is at most one message being assembled plus one window; grpc-message is kept to 511 bytes;
 * a connection that receives nothing at all for RM_H2RPC_IDLE_TIMEOUT_MS (remora-control pings every 20 s)
 * is closed as UNAVAILABLE.
 *
 * Threads: a call is used by one thread; rm_h2rpc_cancel and rm_h2rpc_wake may be called from any thread
 * and wake a blocked operation (an eventfd in the poll set).
 */
#ifndef remora__h2rpc_h
#define remora__h2rpc_h

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#define RM_H2RPC_MAX_MESSAGE_BYTES (16u * 1024 * 1024)
#define RM_H2RPC_WINDOW_BYTES (1u * 1024 * 1024)
#define RM_H2RPC_CONNECT_TIMEOUT_MS 10000
#define RM_H2RPC_IDLE_TIMEOUT_MS 90000

/** The DNS name in remora-control's certificate (RM_RPC_CONTROL_SERVER_NAME in remora/rpc.h). */
#define RM_H2RPC_SERVER_NAME "remora-control.remora-system.svc"

/** gRPC status codes (the same numbers as grpc_status_code). */
typedef enum en_rm_h2rpc_code_t {
    RM_H2RPC_OK = 0,
    RM_H2RPC_CANCELLED = 1,
    RM_H2RPC_UNKNOWN = 2,
    RM_H2RPC_INVALID_ARGUMENT = 3,
    RM_H2RPC_DEADLINE_EXCEEDED = 4,
    RM_H2RPC_NOT_FOUND = 5,
    RM_H2RPC_ALREADY_EXISTS = 6,
    RM_H2RPC_PERMISSION_DENIED = 7,
    RM_H2RPC_RESOURCE_EXHAUSTED = 8,
    RM_H2RPC_FAILED_PRECONDITION = 9,
    RM_H2RPC_ABORTED = 10,
    RM_H2RPC_OUT_OF_RANGE = 11,
    RM_H2RPC_UNIMPLEMENTED = 12,
    RM_H2RPC_INTERNAL = 13,
    RM_H2RPC_UNAVAILABLE = 14,
    RM_H2RPC_DATA_LOSS = 15,
    RM_H2RPC_UNAUTHENTICATED = 16,
} rm_h2rpc_code_t;

/** The outcome of a call: a gRPC status code and its message (NUL-terminated, possibly truncated). */
typedef struct st_rm_h2rpc_status_t {
    int code;
    char message[512];
} rm_h2rpc_status_t;

/** "OK", "UNAVAILABLE", ...: the name of a gRPC status code (a static string). */
const char *rm_h2rpc_code_name(int code);

/** How the call reaches the control plane (everything is copied by rm_h2rpc_open). */
typedef struct st_rm_h2rpc_security_t {
    /** 1: cleartext HTTP/2 and no verification (remora-control --insecure); the rest is ignored */
    int insecure;
    /** the trust bundle (PEM) the server's certificate must chain to; required unless insecure */
    const char *root_pem;
    /** a client certificate chain and its key (PEM), both NULL for none */
    const char *cert_chain_pem, *key_pem;
    /** sent as `authorization: Bearer <token>`; NULL for none */
    const char *bearer_token;
} rm_h2rpc_security_t;

typedef struct st_rm_h2rpc_call_t rm_h2rpc_call_t;

typedef enum en_rm_h2rpc_result_t {
    RM_H2RPC_DONE = 0,
    /** Nothing happened within the timeout; the call is still open and the operation still pending. */
    RM_H2RPC_TIMEOUT = 1,
    /** The call has ended; its final status is in the rm_h2rpc_status_t. */
    RM_H2RPC_CLOSED = 2,
} rm_h2rpc_result_t;

/**
 * A streaming call of `method` ("/remora.v1.Discovery/StreamSnapshots") to `addr` ("HOST:PORT",
 * "[v6]:PORT"). Never fails: an unusable address, a connection or TLS failure shows as RM_H2RPC_CLOSED
 * (UNAVAILABLE) from the first send or receive.
 */
rm_h2rpc_call_t *rm_h2rpc_open(const char *addr, const rm_h2rpc_security_t *sec, const char *method);

/**
 * Sends one message (copied) and waits until it is written to the socket, at most `timeout_ms`
 * (negative: no limit). A send that timed out is still pending: the next send or close_send waits for
 * it first. RM_H2RPC_DONE, RM_H2RPC_TIMEOUT, or RM_H2RPC_CLOSED with the final status.
 */
rm_h2rpc_result_t rm_h2rpc_send(rm_h2rpc_call_t *call, const ProtobufCMessage *msg, int64_t timeout_ms, rm_h2rpc_status_t *st);

/** Half-closes the call (END_STREAM after the messages sent), waiting at most `timeout_ms` for it to be written. */
rm_h2rpc_result_t rm_h2rpc_close_send(rm_h2rpc_call_t *call, int64_t timeout_ms, rm_h2rpc_status_t *st);

/**
 * Waits at most `timeout_ms` for the next message. RM_H2RPC_DONE: *msg is a message of type `desc`
 * owned by the caller (protobuf_c_message_free_unpacked). RM_H2RPC_TIMEOUT: none yet. RM_H2RPC_CLOSED:
 * the call ended (or the server sent a message that does not parse, too big or compressed: INTERNAL or
 * RESOURCE_EXHAUSTED, and the call is cancelled); the final status is in *st.
 */
rm_h2rpc_result_t rm_h2rpc_recv(rm_h2rpc_call_t *call, const ProtobufCMessageDescriptor *desc, int64_t timeout_ms,
                                ProtobufCMessage **msg, rm_h2rpc_status_t *st);

/** Cancels the call: a blocked or later operation returns RM_H2RPC_CLOSED (CANCELLED). Any thread. */
void rm_h2rpc_cancel(rm_h2rpc_call_t *call);

/**
 * Makes a receive that is waiting (or the next one) return RM_H2RPC_TIMEOUT at once, the call untouched:
 * the thread that owns the call has something to send (on-demand discovery). Any thread.
 */
void rm_h2rpc_wake(rm_h2rpc_call_t *call);

/** Cancels the call if it is still running (RST_STREAM, best effort), closes the connection and frees it. */
void rm_h2rpc_destroy(rm_h2rpc_call_t *call);

#endif
