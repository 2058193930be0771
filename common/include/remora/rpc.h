/*
 * gRPC C core + protobuf-c glue shared by remora-control, remoractl and the agent's control client.
 *
 * gRPC C core has no code generator for C: messages are protobuf-c structures packed into and
 * unpacked from grpc_byte_buffers here, and calls are made with grpc_call_start_batch. The client
 * side below is blocking: each rm_rpc_client_t owns a completion queue that is only ever plucked
 * (grpc_completion_queue_pluck) by the one thread that uses the client, which is how a dedicated
 * control thread (agent) or a CLI wants it. Servers drive their own completion queue.
 *
 * Only the control plane, the CLI and the agent's control client and translation code include this
 * header: gRPC and protobuf-c types must not spread further (docs/control-plane.md).
 *
 * Errors: functions that talk to the network report gRPC status codes in an rm_rpc_status_t and
 * never abort on peer input; misuse of the gRPC API (an op rejected by grpc_call_start_batch) is a
 * bug and aborts.
 */
#ifndef remora__rpc_h
#define remora__rpc_h

#include <stddef.h>
#include <stdint.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

/** Starts / stops the gRPC library (gRPC counts the calls; every init needs one shutdown). Any thread. */
void rm_rpc_init(void);
void rm_rpc_shutdown(void);

/** Serializes `msg` into a new byte buffer owned by the caller (grpc_byte_buffer_destroy). Aborts on OOM. */
grpc_byte_buffer *rm_rpc_pack(const ProtobufCMessage *msg);

/**
 * Parses `bb` (still owned by the caller; may be compressed) as a message of type `desc`. Returns a
 * message the caller frees with protobuf_c_message_free_unpacked(msg, NULL), or NULL when the bytes
 * are not a valid encoding (peer input: not fatal).
 */
ProtobufCMessage *rm_rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/** A deadline `ms` milliseconds from now on the monotonic clock; negative `ms` means never. */
gpr_timespec rm_rpc_deadline_in_ms(int64_t ms);

/**
 * Turns a user-supplied "HOST:PORT" into a gRPC target: IP literals get the "ipv4:" / "ipv6:" scheme
 * so that gRPC never consults a resolver for them; a target with a scheme ("unix:", "dns:") or a host
 * name is passed through. Writes into `buf` and returns it (truncated when too small).
 */
const char *rm_rpc_target(const char *addr, char *buf, size_t bufsz);

/** The outcome of a call: a gRPC status code and its message (NUL-terminated, possibly truncated). */
typedef struct st_rm_rpc_status_t {
    grpc_status_code code;
    char message[512];
} rm_rpc_status_t;

/** "OK", "UNAVAILABLE", ...: the name of a gRPC status code (a static string). */
const char *rm_rpc_status_name(grpc_status_code code);

/** A channel plus a completion queue for blocking calls. Not thread-safe: one thread uses it at a time. */
typedef struct st_rm_rpc_client_t rm_rpc_client_t;

/**
 * The DNS name in remora-control's certificate that clients check (docs/identity.md, "The control
 * plane's own doors"). Clients connect by IP literal, so they pass this name to gRPC as the target
 * name override instead of the address.
 */
#define RM_RPC_CONTROL_SERVER_NAME "remora-control.remora-system.svc"

/** How a client reaches the control plane. */
typedef struct st_rm_rpc_security_t {
    /** 1: plaintext and no server verification (remora-control --insecure; development only); the rest is ignored */
    int insecure;
    /** the trust bundle (PEM) the server's certificate must chain to; required unless insecure */
    const char *root_pem;
    /** a client certificate chain and its key (PEM), both NULL for none */
    const char *cert_chain_pem, *key_pem;
    /** sent as `authorization: Bearer <token>` with every call; NULL for none */
    const char *bearer_token;
} rm_rpc_security_t;

/**
 * Creates a channel to `addr` ("127.0.0.1:15010", "[::1]:15010", "unix:/path", or a target gRPC
 * understands) over TLS as `sec` says (everything copied), checking the server's certificate
 * against sec->root_pem and the name RM_RPC_CONTROL_SERVER_NAME. `args` may be NULL; it is copied.
 * Never fails: the connection is made by the first call (a server that does not verify shows as
 * UNAVAILABLE there). Call rm_rpc_init() first.
 */
rm_rpc_client_t *rm_rpc_client_create_secure(const char *addr, const grpc_channel_args *args, const rm_rpc_security_t *sec);

/**
 * The same without credentials: plaintext, no verification. Only for servers that are plaintext by
 * design (an OTLP collector on loopback, remora-control --insecure, the unit tests).
 */
rm_rpc_client_t *rm_rpc_client_create(const char *addr, const grpc_channel_args *args);

/** Destroys the client. Every stream opened on it must have been destroyed. */
void rm_rpc_client_destroy(rm_rpc_client_t *client);
/** The gRPC target the client connects to (owned by the client). */
const char *rm_rpc_client_target(rm_rpc_client_t *client);

/**
 * Makes one unary call of `method` ("/remora.v1.Admin/Apply") and waits for it, at most `timeout_ms`
 * (negative: no limit). Returns 0 with *resp set (free it with protobuf_c_message_free_unpacked) and
 * status->code == GRPC_STATUS_OK, or -1 with *resp NULL and the failure in *status (an unparsable
 * response is reported as GRPC_STATUS_INTERNAL).
 */
int rm_rpc_unary(rm_rpc_client_t *client, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms, ProtobufCMessage **resp, rm_rpc_status_t *status);

/** A bidirectional streaming call. Used by one thread, except rm_rpc_stream_cancel. */
typedef struct st_rm_rpc_stream_t rm_rpc_stream_t;

typedef enum en_rm_rpc_result_t {
    RM_RPC_OK = 0,
    /** Nothing happened within the timeout; the stream is still open and the operation still pending. */
    RM_RPC_TIMEOUT = 1,
    /** The stream has ended; its final status is in the rm_rpc_status_t. */
    RM_RPC_CLOSED = 2,
} rm_rpc_result_t;

/**
 * Starts a streaming call of `method`. Never fails: a connection failure shows as RM_RPC_CLOSED
 * from the first send or receive. `wait_for_ready` makes the call wait for the channel to connect
 * instead of failing at once when the server is unreachable.
 */
rm_rpc_stream_t *rm_rpc_stream_open(rm_rpc_client_t *client, const char *method, int wait_for_ready);

/**
 * Sends one message (copied) and waits until gRPC has taken it, at most `timeout_ms`. A send that
 * timed out is still pending: the next send waits for it first. Returns RM_RPC_OK, RM_RPC_TIMEOUT,
 * or RM_RPC_CLOSED with the final status in *status.
 */
rm_rpc_result_t rm_rpc_stream_send(rm_rpc_stream_t *stream, const ProtobufCMessage *msg, int64_t timeout_ms,
                                   rm_rpc_status_t *status);

/**
 * Waits at most `timeout_ms` for the next message. RM_RPC_OK: *msg is a message of type `desc`
 * owned by the caller (protobuf_c_message_free_unpacked). RM_RPC_TIMEOUT: no message yet; the
 * receive stays pending and the next call continues it (pass the same `desc`). RM_RPC_CLOSED: the
 * stream ended (or the server sent bytes that do not parse, reported as INTERNAL and the call is
 * cancelled); the final status is in *status.
 */
rm_rpc_result_t rm_rpc_stream_recv(rm_rpc_stream_t *stream, const ProtobufCMessageDescriptor *desc, int64_t timeout_ms,
                                   ProtobufCMessage **msg, rm_rpc_status_t *status);

/** Half-closes the stream (no more sends). Waits for gRPC to take it, at most `timeout_ms`. */
rm_rpc_result_t rm_rpc_stream_close_send(rm_rpc_stream_t *stream, int64_t timeout_ms, rm_rpc_status_t *status);

/** Cancels the call: a blocked send or receive returns RM_RPC_CLOSED (CANCELLED). Thread-safe. */
void rm_rpc_stream_cancel(rm_rpc_stream_t *stream);

/** Cancels the call if it is still running, waits for its pending operations and frees it. */
void rm_rpc_stream_destroy(rm_rpc_stream_t *stream);

/**
 * A growable byte string, used to assemble protobuf encodings from already-encoded parts (a cached
 * snapshot plus a per-stream nonce) without unpacking them.
 */
typedef struct st_rm_rpc_buf_t {
    uint8_t *base;
    size_t len, capacity;
} rm_rpc_buf_t;

/** Appends raw bytes. Aborts on OOM. */
void rm_rpc_buf_append(rm_rpc_buf_t *buf, const void *p, size_t len);
/** Appends field `field` with wire type "length-delimited" and the given payload (an encoded sub-message or a string). */
void rm_rpc_buf_append_bytes_field(rm_rpc_buf_t *buf, uint32_t field, const void *p, size_t len);
/** Appends field `field` with wire type varint. */
void rm_rpc_buf_append_varint_field(rm_rpc_buf_t *buf, uint32_t field, uint64_t value);
/** Appends `msg`, packed, as a length-delimited field `field`. */
void rm_rpc_buf_append_message_field(rm_rpc_buf_t *buf, uint32_t field, const ProtobufCMessage *msg);
/** Frees the bytes and empties the buffer. */
void rm_rpc_buf_dispose(rm_rpc_buf_t *buf);

#endif
