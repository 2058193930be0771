/*
 * gRPC C core + protobuf-c glue (see remora/rpc.h).
 *
 * Client calls use a pluck completion queue and the addresses of fields of the call's own structure
 * as tags, so one thread can wait for exactly the operation it needs while others stay pending.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"

void
rm_rpc_init(void)
{
    grpc_init();
}

void
rm_rpc_shutdown(void)
{
    grpc_shutdown();
}

grpc_byte_buffer *
rm_rpc_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *
rm_rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

gpr_timespec
rm_rpc_deadline_in_ms(int64_t ms)
{
    if (ms < 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

const char *
rm_rpc_target(const char *addr, char *buf, size_t bufsz)
{
    unsigned char tmp[16];
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close != NULL && close - addr - 1 < 64) {
            char host[64];
            memcpy(host, addr + 1, close - addr - 1);
            host[close - addr - 1] = '\0';
            if (inet_pton(AF_INET6, host, tmp) == 1) {
                snprintf(buf, bufsz, "ipv6:%s", addr);
                return buf;
            }
        }
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon != NULL && colon - addr < 64 && strchr(addr, ':') == colon) {
            char host[64];
            memcpy(host, addr, colon - addr);
            host[colon - addr] = '\0';
            if (inet_pton(AF_INET, host, tmp) == 1) {
                snprintf(buf, bufsz, "ipv4:%s", addr);
                return buf;
            }
        }
    }
    snprintf(buf, bufsz, "%s", addr);
    return buf;
}

const char *
rm_rpc_status_name(grpc_status_code code)
{
    return rm_grpc_status_name((int)code);
}

static void
set_status(rm_rpc_status_t *st, grpc_status_code code, const char *msg, size_t len)
{
    if (st == NULL)
        return;
    st->code = code;
    if (len >= sizeof(st->message))
        len = sizeof(st->message) - 1;
    memcpy(st->message, msg, len);
    st->message[len] = '\0';
}

static void
set_status_slice(rm_rpc_status_t *st, grpc_status_code code, grpc_slice details)
{
    set_status(st, code, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
}

static void
start_batch(grpc_call *call, const grpc_op *ops, size_t n, void *tag)
{
    grpc_call_error err = grpc_call_start_batch(call, ops, n, tag, NULL);
    if (err != GRPC_CALL_OK)
        rm_fatal("grpc_call_start_batch rejected a batch of %zu ops: error %d", n, (int)err);
}

struct st_rm_rpc_client_t {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    char *target;
    /* `authorization: Bearer ...` sent with every call, when num_md is 1 */
    grpc_metadata md;
    size_t num_md;
};

rm_rpc_client_t *
rm_rpc_client_create_secure(const char *addr, const grpc_channel_args *args, const rm_rpc_security_t *sec)
{
    char buf[512];
    rm_rpc_client_t *c = rm_calloc(1, sizeof(*c));
    c->target = rm_strdup(rm_rpc_target(addr, buf, sizeof(buf)));
    grpc_channel_credentials *creds;
    grpc_channel_args *all = NULL;
    if (sec->insecure) {
        creds = grpc_insecure_credentials_create();
    } else {
        grpc_ssl_pem_key_cert_pair pair = {sec->key_pem, sec->cert_chain_pem};
        creds = grpc_ssl_credentials_create_ex(sec->root_pem, sec->key_pem != NULL && sec->cert_chain_pem != NULL ? &pair : NULL,
                                               NULL, NULL);
        /* the caller's arguments plus the name the server's certificate must carry */
        size_t n = args != NULL ? args->num_args : 0;
        all = rm_calloc(1, sizeof(*all));
        all->args = rm_calloc(n + 1, sizeof(grpc_arg));
        if (n != 0)
            memcpy(all->args, args->args, n * sizeof(grpc_arg));
        all->args[n].type = GRPC_ARG_STRING;
        all->args[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        all->args[n].value.string = (char *)RM_RPC_CONTROL_SERVER_NAME;
        all->num_args = n + 1;
        args = all;
    }
    c->channel = grpc_channel_create(c->target, creds, args);
    grpc_channel_credentials_release(creds);
    if (all != NULL) {
        free(all->args);
        free(all);
    }
    if (!sec->insecure && sec->bearer_token != NULL) {
        char *value = rm_malloc(strlen(sec->bearer_token) + 8);
        sprintf(value, "Bearer %s", sec->bearer_token);
        c->md.key = grpc_slice_from_static_string("authorization");
        c->md.value = grpc_slice_from_copied_string(value);
        free(value);
        c->num_md = 1;
    }
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    return c;
}

rm_rpc_client_t *
rm_rpc_client_create(const char *addr, const grpc_channel_args *args)
{
    rm_rpc_security_t sec = {.insecure = 1};
    return rm_rpc_client_create_secure(addr, args, &sec);
}

void
rm_rpc_client_destroy(rm_rpc_client_t *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->channel);
    grpc_completion_queue_shutdown(c->cq);
    /* a pluck queue reports its shutdown to pluck(NULL) once every pending event is gone */
    while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    if (c->num_md != 0)
        grpc_slice_unref(c->md.value);
    free(c->target);
    free(c);
}

const char *
rm_rpc_client_target(rm_rpc_client_t *c)
{
    return c->target;
}

static grpc_event
pluck(rm_rpc_client_t *c, void *tag, gpr_timespec deadline)
{
    return grpc_completion_queue_pluck(c->cq, tag, deadline, NULL);
}

int
rm_rpc_unary(rm_rpc_client_t *c, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
             int64_t timeout_ms, ProtobufCMessage **resp, rm_rpc_status_t *status)
{
    *resp = NULL;
    grpc_slice method_slice = grpc_slice_from_static_string(method);
    grpc_call *call =
        grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, method_slice, NULL,
                                 timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_REALTIME) : rm_rpc_deadline_in_ms(timeout_ms), NULL);
    grpc_byte_buffer *send_bb = rm_rpc_pack(req), *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->num_md;
    ops[0].data.send_initial_metadata.metadata = c->num_md != 0 ? &c->md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    start_batch(call, ops, 6, call);
    /* the call's own deadline bounds the wait */
    grpc_event ev = pluck(c, call, gpr_inf_future(GPR_CLOCK_REALTIME));
    int ret = -1;
    if (ev.type != GRPC_OP_COMPLETE) {
        set_status(status, GRPC_STATUS_INTERNAL, "completion queue failure", 25);
    } else if (code != GRPC_STATUS_OK) {
        set_status_slice(status, code, details);
    } else if (recv_bb == NULL) {
        set_status(status, GRPC_STATUS_INTERNAL, "the server sent no response message", 35);
    } else if ((*resp = rm_rpc_unpack(resp_desc, recv_bb)) == NULL) {
        set_status(status, GRPC_STATUS_INTERNAL, "the server's response does not parse", 36);
    } else {
        set_status(status, GRPC_STATUS_OK, "", 0);
        ret = 0;
    }
    if (recv_bb != NULL)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_byte_buffer_destroy(send_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    return ret;
}

struct st_rm_rpc_stream_t {
    rm_rpc_client_t *client;
    grpc_call *call;
    /* tags: the address of each field identifies one kind of operation */
    char tag_start, tag_send, tag_recv, tag_close, tag_status;
    unsigned start_pending : 1, send_pending : 1, recv_pending : 1, close_pending : 1, status_pending : 1;
    unsigned closed : 1, got_initial_md : 1;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code code;
    grpc_slice details;
};

rm_rpc_stream_t *
rm_rpc_stream_open(rm_rpc_client_t *c, const char *method, int wait_for_ready)
{
    rm_rpc_stream_t *s = rm_calloc(1, sizeof(*s));
    s->client = c;
    s->details = grpc_empty_slice();
    s->code = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, grpc_slice_from_static_string(method),
                                       NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = c->num_md;
    op.data.send_initial_metadata.metadata = c->num_md != 0 ? &c->md : NULL;
    if (wait_for_ready)
        op.flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY | GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    start_batch(s->call, &op, 1, &s->tag_start);
    s->start_pending = 1;
    /* the status op alone in its batch: it always "succeeds" and would hide the others' failures */
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    op.data.recv_status_on_client.status = &s->code;
    op.data.recv_status_on_client.status_details = &s->details;
    start_batch(s->call, &op, 1, &s->tag_status);
    s->status_pending = 1;
    return s;
}

/* The stream has failed or ended: wait for the final status (it follows promptly once the call is over). */
static rm_rpc_result_t
finish(rm_rpc_stream_t *s, rm_rpc_status_t *st)
{
    if (s->status_pending) {
        pluck(s->client, &s->tag_status, gpr_inf_future(GPR_CLOCK_REALTIME));
        s->status_pending = 0;
    }
    s->closed = 1;
    set_status_slice(st, s->code, s->details);
    return RM_RPC_CLOSED;
}

/* Waits for a pending op; returns 1 when it completed (success in *ok), 0 on timeout. */
static int
wait_op(rm_rpc_stream_t *s, void *tag, gpr_timespec deadline, int *ok)
{
    grpc_event ev = pluck(s->client, tag, deadline);
    if (ev.type == GRPC_QUEUE_TIMEOUT)
        return 0;
    *ok = ev.type == GRPC_OP_COMPLETE && ev.success;
    return 1;
}

static void
fail_cancelled(rm_rpc_stream_t *s)
{
    /* a failed op means the call is over; cancelling makes sure the status arrives */
    grpc_call_cancel(s->call, NULL);
}

rm_rpc_result_t
rm_rpc_stream_send(rm_rpc_stream_t *s, const ProtobufCMessage *msg, int64_t timeout_ms, rm_rpc_status_t *st)
{
    gpr_timespec deadline = rm_rpc_deadline_in_ms(timeout_ms);
    int ok;
    if (s->closed)
        return finish(s, st);
    if (s->start_pending) {
        if (!wait_op(s, &s->tag_start, deadline, &ok))
            return RM_RPC_TIMEOUT;
        s->start_pending = 0;
        if (!ok) {
            fail_cancelled(s);
            return finish(s, st);
        }
    }
    if (s->send_pending) {
        if (!wait_op(s, &s->tag_send, deadline, &ok))
            return RM_RPC_TIMEOUT;
        s->send_pending = 0;
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
        if (!ok) {
            fail_cancelled(s);
            return finish(s, st);
        }
    }
    s->send_bb = rm_rpc_pack(msg);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_bb;
    start_batch(s->call, &op, 1, &s->tag_send);
    s->send_pending = 1;
    if (!wait_op(s, &s->tag_send, deadline, &ok))
        return RM_RPC_TIMEOUT;
    s->send_pending = 0;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (!ok) {
        fail_cancelled(s);
        return finish(s, st);
    }
    set_status(st, GRPC_STATUS_OK, "", 0);
    return RM_RPC_OK;
}

rm_rpc_result_t
rm_rpc_stream_recv(rm_rpc_stream_t *s, const ProtobufCMessageDescriptor *desc, int64_t timeout_ms, ProtobufCMessage **msg,
                   rm_rpc_status_t *st)
{
    *msg = NULL;
    if (s->closed)
        return finish(s, st);
    if (!s->recv_pending) {
        grpc_op ops[2];
        size_t n = 0;
        memset(ops, 0, sizeof(ops));
        if (!s->got_initial_md) {
            ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
            s->got_initial_md = 1;
        }
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &s->recv_bb;
        start_batch(s->call, ops, n, &s->tag_recv);
        s->recv_pending = 1;
    }
    int ok;
    if (!wait_op(s, &s->tag_recv, rm_rpc_deadline_in_ms(timeout_ms), &ok))
        return RM_RPC_TIMEOUT;
    s->recv_pending = 0;
    if (!ok || s->recv_bb == NULL) {
        /* NULL without failure: the server closed its side; the status follows */
        if (!ok)
            fail_cancelled(s);
        return finish(s, st);
    }
    *msg = rm_rpc_unpack(desc, s->recv_bb);
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    if (*msg == NULL) {
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL, "message does not parse", NULL);
        finish(s, NULL);
        set_status(st, GRPC_STATUS_INTERNAL, "the server sent a message that does not parse", 45);
        return RM_RPC_CLOSED;
    }
    set_status(st, GRPC_STATUS_OK, "", 0);
    return RM_RPC_OK;
}

rm_rpc_result_t
rm_rpc_stream_close_send(rm_rpc_stream_t *s, int64_t timeout_ms, rm_rpc_status_t *st)
{
    gpr_timespec deadline = rm_rpc_deadline_in_ms(timeout_ms);
    int ok;
    if (s->closed)
        return finish(s, st);
    if (s->send_pending) {
        if (!wait_op(s, &s->tag_send, deadline, &ok))
            return RM_RPC_TIMEOUT;
        s->send_pending = 0;
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
    }
    if (!s->close_pending) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        start_batch(s->call, &op, 1, &s->tag_close);
        s->close_pending = 1;
    }
    if (!wait_op(s, &s->tag_close, deadline, &ok))
        return RM_RPC_TIMEOUT;
    s->close_pending = 0;
    set_status(st, GRPC_STATUS_OK, "", 0);
    return RM_RPC_OK;
}

void
rm_rpc_stream_cancel(rm_rpc_stream_t *s)
{
    grpc_call_cancel(s->call, NULL);
}

void
rm_rpc_stream_destroy(rm_rpc_stream_t *s)
{
    if (s == NULL)
        return;
    grpc_call_cancel(s->call, NULL);
    gpr_timespec forever = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (s->start_pending)
        pluck(s->client, &s->tag_start, forever);
    if (s->send_pending)
        pluck(s->client, &s->tag_send, forever);
    if (s->recv_pending)
        pluck(s->client, &s->tag_recv, forever);
    if (s->close_pending)
        pluck(s->client, &s->tag_close, forever);
    if (s->status_pending)
        pluck(s->client, &s->tag_status, forever);
    if (s->send_bb != NULL)
        grpc_byte_buffer_destroy(s->send_bb);
    if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    free(s);
}

static void
reserve(rm_rpc_buf_t *buf, size_t extra)
{
    if (buf->len + extra <= buf->capacity)
        return;
    size_t cap = buf->capacity != 0 ? buf->capacity : 256;
    while (cap < buf->len + extra)
        cap *= 2;
    buf->base = rm_realloc(buf->base, cap);
    buf->capacity = cap;
}

void
rm_rpc_buf_append(rm_rpc_buf_t *buf, const void *p, size_t len)
{
    reserve(buf, len);
    if (len != 0)
        memcpy(buf->base + buf->len, p, len);
    buf->len += len;
}

static void
append_varint(rm_rpc_buf_t *buf, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = v & 0x7f;
        v >>= 7;
        if (v != 0)
            tmp[n] |= 0x80;
        ++n;
    } while (v != 0);
    rm_rpc_buf_append(buf, tmp, n);
}

void
rm_rpc_buf_append_bytes_field(rm_rpc_buf_t *buf, uint32_t field, const void *p, size_t len)
{
    append_varint(buf, ((uint64_t)field << 3) | 2);
    append_varint(buf, len);
    rm_rpc_buf_append(buf, p, len);
}

void
rm_rpc_buf_append_varint_field(rm_rpc_buf_t *buf, uint32_t field, uint64_t value)
{
    append_varint(buf, (uint64_t)field << 3);
    append_varint(buf, value);
}

void
rm_rpc_buf_append_message_field(rm_rpc_buf_t *buf, uint32_t field, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    append_varint(buf, ((uint64_t)field << 3) | 2);
    append_varint(buf, len);
    reserve(buf, len);
    size_t at = buf->len;
    protobuf_c_message_pack(msg, buf->base + at);
    buf->len += len;
}

void
rm_rpc_buf_dispose(rm_rpc_buf_t *buf)
{
    free(buf->base);
    buf->base = NULL;
    buf->len = buf->capacity = 0;
}
