/*
 * The gRPC glue (remora/rpc.h) against the control plane's server, in one process on loopback: unary
 * admin calls, the discovery stream (Hello, snapshots, ACK, NACK, timeouts, half-close), waiting for
 * a version, failures (unreachable server, server shutdown), and the protobuf helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/admin.pb-c.h"
#include "remora/v1/discovery.pb-c.h"
#include "server.h"
#include "store.h"

#define STREAM "/remora.v1.Discovery/StreamSnapshots"
#define SVC(ep)                                                                                                                    \
    "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo}\nspec: {protocol: grpc, endpoints: [\"" ep "\"]}\n"

typedef struct st_fixture_t {
    char dir[256];
    rm_store_t *store;
    rm_control_server_t *server;
    rm_rpc_client_t *client;
    char addr[64];
} fixture_t;

static int
setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char err[256];
    snprintf(f->dir, sizeof(f->dir), "/tmp/rm_rpc_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    if ((f->store = rm_store_open(f->dir, err, sizeof(err))) == NULL)
        return -1;
    rm_log_set_level_by_name("warn");
    rm_rpc_init();
    if ((f->server = rm_control_server_start("127.0.0.1:0", f->store, err, sizeof(err))) == NULL)
        return -1;
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", rm_control_server_port(f->server));
    f->client = rm_rpc_client_create(f->addr, NULL);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    rm_rpc_client_destroy(f->client);
    if (f->server != NULL)
        rm_control_server_destroy(f->server);
    rm_store_close(f->store);
    rm_rpc_shutdown();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static Remora__V1__ApplyResponse *
apply(fixture_t *f, const char *yaml)
{
    Remora__V1__Document doc = REMORA__V1__DOCUMENT__INIT, *docs[] = {&doc};
    doc.file = "t.yaml";
    doc.content.data = (uint8_t *)yaml;
    doc.content.len = strlen(yaml);
    Remora__V1__ApplyRequest req = REMORA__V1__APPLY_REQUEST__INIT;
    req.n_documents = 1;
    req.documents = docs;
    ProtobufCMessage *resp;
    rm_rpc_status_t st;
    assert_int_equal(
        rm_rpc_unary(f->client, "/remora.v1.Admin/Apply", &req.base, &remora__v1__apply_response__descriptor, 5000, &resp, &st), 0);
    assert_int_equal(st.code, GRPC_STATUS_OK);
    return (Remora__V1__ApplyResponse *)resp;
}

static Remora__V1__StatusResponse *
status(fixture_t *f)
{
    Remora__V1__StatusRequest req = REMORA__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp;
    rm_rpc_status_t st;
    assert_int_equal(
        rm_rpc_unary(f->client, "/remora.v1.Admin/Status", &req.base, &remora__v1__status_response__descriptor, 5000, &resp, &st),
        0);
    return (Remora__V1__StatusResponse *)resp;
}

static void
send_hello(rm_rpc_stream_t *s, const char *node)
{
    Remora__V1__Hello hello = REMORA__V1__HELLO__INIT;
    Remora__V1__AgentMessage m = REMORA__V1__AGENT_MESSAGE__INIT;
    hello.node_id = (char *)node;
    m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO;
    m.hello = &hello;
    rm_rpc_status_t st;
    assert_int_equal(rm_rpc_stream_send(s, &m.base, 5000, &st), RM_RPC_OK);
}

static void
send_answer(rm_rpc_stream_t *s, const Remora__V1__Snapshot *snap, const char *nack_reason)
{
    Remora__V1__Ack ack = REMORA__V1__ACK__INIT;
    Remora__V1__Nack nack = REMORA__V1__NACK__INIT;
    Remora__V1__AgentMessage m = REMORA__V1__AGENT_MESSAGE__INIT;
    if (nack_reason == NULL) {
        ack.version = snap->version;
        ack.nonce = snap->nonce;
        m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_ACK;
        m.ack = &ack;
    } else {
        nack.version = snap->version;
        nack.nonce = snap->nonce;
        nack.reason = (char *)nack_reason;
        m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_NACK;
        m.nack = &nack;
    }
    rm_rpc_status_t st;
    assert_int_equal(rm_rpc_stream_send(s, &m.base, 5000, &st), RM_RPC_OK);
}

static Remora__V1__Snapshot *
recv_snapshot(rm_rpc_stream_t *s)
{
    ProtobufCMessage *msg;
    rm_rpc_status_t st;
    rm_rpc_result_t r = rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st);
    if (r != RM_RPC_OK)
        fail_msg("recv: result %d, status %s: %s", (int)r, rm_rpc_status_name(st.code), st.message);
    return (Remora__V1__Snapshot *)msg;
}

/* Waits until the Status RPC shows `node` with applied version `v` (the ACK travels asynchronously). */
static Remora__V1__AgentStatus *
wait_applied(fixture_t *f, const char *node, uint64_t v, Remora__V1__StatusResponse **keep)
{
    for (int i = 0; i != 500; ++i) {
        Remora__V1__StatusResponse *resp = status(f);
        for (size_t j = 0; j != resp->n_agents; ++j) {
            if (strcmp(resp->agents[j]->node_id, node) == 0 && resp->agents[j]->applied_version == v) {
                *keep = resp;
                return resp->agents[j];
            }
        }
        remora__v1__status_response__free_unpacked(resp, NULL);
        usleep(10000);
    }
    fail_msg("%s never reached version %llu", node, (unsigned long long)v);
    return NULL;
}

static void
test_stream(void **state)
{
    fixture_t *f = *state;
    Remora__V1__ApplyResponse *ar = apply(f, SVC("127.0.0.1:1"));
    assert_int_equal(ar->n_errors, 0);
    assert_int_equal(ar->version, 1);
    remora__v1__apply_response__free_unpacked(ar, NULL);

    rm_rpc_stream_t *s = rm_rpc_stream_open(f->client, STREAM, 0);
    send_hello(s, "node-1");
    Remora__V1__Snapshot *snap = recv_snapshot(s);
    assert_int_equal(snap->version, 1);
    assert_true(snap->nonce[0] != '\0');
    assert_int_equal(snap->n_services, 1);
    assert_string_equal(snap->services[0]->spec->endpoints[0]->address, "127.0.0.1:1");
    send_answer(s, snap, NULL);
    remora__v1__snapshot__free_unpacked(snap, NULL);
    Remora__V1__StatusResponse *sr = NULL; /* set by wait_applied, which fails the test otherwise */
    Remora__V1__AgentStatus *as = wait_applied(f, "node-1", 1, &sr);
    assert_true(as->connected);
    assert_int_equal(as->nack_version, 0);
    assert_true(as->last_seen != NULL && as->last_seen->seconds > 0);
    remora__v1__status_response__free_unpacked(sr, NULL);

    /* nothing new: a receive times out and stays pending */
    ProtobufCMessage *msg;
    rm_rpc_status_t st;
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 50, &msg, &st), RM_RPC_TIMEOUT);
    assert_null(msg);

    /* a change is pushed; the pending receive gets it */
    ar = apply(f, SVC("127.0.0.1:2"));
    assert_int_equal(ar->version, 2);
    assert_true(ar->changed);
    remora__v1__apply_response__free_unpacked(ar, NULL);
    snap = recv_snapshot(s);
    assert_int_equal(snap->version, 2);
    assert_string_equal(snap->services[0]->spec->endpoints[0]->address, "127.0.0.1:2");

    /* a NACK: visible in status, and WaitForVersion reports the refusal */
    send_answer(s, snap, "cannot use it");
    remora__v1__snapshot__free_unpacked(snap, NULL);
    Remora__V1__WaitForVersionRequest wreq = REMORA__V1__WAIT_FOR_VERSION_REQUEST__INIT;
    wreq.version = 2;
    ProtobufCMessage *wresp;
    assert_int_equal(rm_rpc_unary(f->client, "/remora.v1.Admin/WaitForVersion", &wreq.base,
                                  &remora__v1__wait_for_version_response__descriptor, 5000, &wresp, &st),
                     0);
    Remora__V1__WaitForVersionResponse *w = (Remora__V1__WaitForVersionResponse *)wresp;
    assert_int_equal(w->outcome, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_REFUSED);
    assert_int_equal(w->n_agents, 1);
    assert_string_equal(w->agents[0]->nack_reason, "cannot use it");
    assert_int_equal(w->agents[0]->applied_version, 1);
    remora__v1__wait_for_version_response__free_unpacked(w, NULL);

    /* a version that does not exist yet */
    wreq.version = 99;
    assert_int_equal(rm_rpc_unary(f->client, "/remora.v1.Admin/WaitForVersion", &wreq.base,
                                  &remora__v1__wait_for_version_response__descriptor, 5000, &wresp, &st),
                     -1);
    assert_int_equal(st.code, GRPC_STATUS_OUT_OF_RANGE);

    /* the agent leaves politely: half-close, the server ends the stream with OK */
    assert_int_equal(rm_rpc_stream_close_send(s, 5000, &st), RM_RPC_OK);
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st), RM_RPC_CLOSED);
    assert_int_equal(st.code, GRPC_STATUS_OK);
    rm_rpc_stream_destroy(s);
    for (int i = 0; i != 500; ++i) {
        sr = status(f);
        int connected = sr->agents[0]->connected;
        remora__v1__status_response__free_unpacked(sr, NULL);
        if (!connected)
            break;
        usleep(10000);
    }
    sr = status(f);
    assert_false(sr->agents[0]->connected);
    assert_int_equal(sr->agents[0]->nack_version, 2);
    remora__v1__status_response__free_unpacked(sr, NULL);
}

static void
test_wait_timeout_and_applied(void **state)
{
    fixture_t *f = *state;
    remora__v1__apply_response__free_unpacked(apply(f, SVC("127.0.0.1:1")), NULL);
    rm_rpc_stream_t *s = rm_rpc_stream_open(f->client, STREAM, 1);
    send_hello(s, "slow");
    Remora__V1__Snapshot *snap = recv_snapshot(s);
    Remora__V1__WaitForVersionRequest wreq = REMORA__V1__WAIT_FOR_VERSION_REQUEST__INIT;
    Remora__V1__Duration d = REMORA__V1__DURATION__INIT;
    d.nanos = 200 * 1000 * 1000;
    wreq.version = 1;
    wreq.timeout = &d;
    ProtobufCMessage *wresp;
    rm_rpc_status_t st;
    uint64_t t0 = rm_now_ms();
    assert_int_equal(rm_rpc_unary(f->client, "/remora.v1.Admin/WaitForVersion", &wreq.base,
                                  &remora__v1__wait_for_version_response__descriptor, 5000, &wresp, &st),
                     0);
    uint64_t took = rm_now_ms() - t0;
    Remora__V1__WaitForVersionResponse *w = (Remora__V1__WaitForVersionResponse *)wresp;
    assert_int_equal(w->outcome, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_TIMED_OUT);
    assert_int_equal(w->n_agents, 1);
    assert_string_equal(w->agents[0]->node_id, "slow");
    assert_true(took >= 190 && took < 3000);
    remora__v1__wait_for_version_response__free_unpacked(w, NULL);

    send_answer(s, snap, NULL);
    remora__v1__snapshot__free_unpacked(snap, NULL);
    d.nanos = 0;
    d.seconds = 5;
    assert_int_equal(rm_rpc_unary(f->client, "/remora.v1.Admin/WaitForVersion", &wreq.base,
                                  &remora__v1__wait_for_version_response__descriptor, 10000, &wresp, &st),
                     0);
    w = (Remora__V1__WaitForVersionResponse *)wresp;
    assert_int_equal(w->outcome, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_APPLIED);
    remora__v1__wait_for_version_response__free_unpacked(w, NULL);

    /* the server goes away under an open stream: the receive ends, it does not hang */
    rm_control_server_destroy(f->server);
    f->server = NULL;
    ProtobufCMessage *msg;
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st), RM_RPC_CLOSED);
    assert_int_not_equal(st.code, GRPC_STATUS_OK);
    rm_rpc_stream_destroy(s);
}

static void
test_errors(void **state)
{
    fixture_t *f = *state;
    /* a stream that does not start with Hello */
    rm_rpc_stream_t *s = rm_rpc_stream_open(f->client, STREAM, 0);
    Remora__V1__Ack ack = REMORA__V1__ACK__INIT;
    Remora__V1__AgentMessage m = REMORA__V1__AGENT_MESSAGE__INIT;
    m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_ACK;
    m.ack = &ack;
    rm_rpc_status_t st;
    assert_int_equal(rm_rpc_stream_send(s, &m.base, 5000, &st), RM_RPC_OK);
    ProtobufCMessage *msg;
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st), RM_RPC_CLOSED);
    assert_int_equal(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "first message must be a Hello"));
    /* further use reports the same end */
    assert_int_equal(rm_rpc_stream_send(s, &m.base, 5000, &st), RM_RPC_CLOSED);
    rm_rpc_stream_destroy(s);

    /* an unknown method */
    Remora__V1__StatusRequest req = REMORA__V1__STATUS_REQUEST__INIT;
    assert_int_equal(
        rm_rpc_unary(f->client, "/remora.v1.Admin/Nope", &req.base, &remora__v1__status_response__descriptor, 5000, &msg, &st), -1);
    assert_int_equal(st.code, GRPC_STATUS_UNIMPLEMENTED);

    /* nobody listens: UNAVAILABLE at once, for unary calls and streams */
    rm_rpc_client_t *c = rm_rpc_client_create("127.0.0.1:1", NULL);
    uint64_t t0 = rm_now_ms();
    assert_int_equal(
        rm_rpc_unary(c, "/remora.v1.Admin/Status", &req.base, &remora__v1__status_response__descriptor, 5000, &msg, &st), -1);
    assert_int_equal(st.code, GRPC_STATUS_UNAVAILABLE);
    assert_true(rm_now_ms() - t0 < 3000);
    s = rm_rpc_stream_open(c, STREAM, 0);
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st), RM_RPC_CLOSED);
    assert_int_equal(st.code, GRPC_STATUS_UNAVAILABLE);
    rm_rpc_stream_destroy(s);
    /* a stream that waits for the server can be cancelled from outside */
    s = rm_rpc_stream_open(c, STREAM, 1);
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 100, &msg, &st), RM_RPC_TIMEOUT);
    rm_rpc_stream_cancel(s);
    assert_int_equal(rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 5000, &msg, &st), RM_RPC_CLOSED);
    assert_int_equal(st.code, GRPC_STATUS_CANCELLED);
    rm_rpc_stream_destroy(s);
    rm_rpc_client_destroy(c);
}

static void
test_helpers(void **state)
{
    char buf[128];
    assert_string_equal(rm_rpc_target("127.0.0.1:15010", buf, sizeof(buf)), "ipv4:127.0.0.1:15010");
    assert_string_equal(rm_rpc_target("[::1]:15010", buf, sizeof(buf)), "ipv6:[::1]:15010");
    assert_string_equal(rm_rpc_target("control.mesh:15010", buf, sizeof(buf)), "control.mesh:15010");
    assert_string_equal(rm_rpc_target("unix:/run/remora.sock", buf, sizeof(buf)), "unix:/run/remora.sock");
    assert_string_equal(rm_rpc_status_name(GRPC_STATUS_UNAVAILABLE), "UNAVAILABLE");
    assert_string_equal(rm_rpc_status_name((grpc_status_code)99), "UNKNOWN");

    /* hand-assembled encodings: a cached part plus a nonce field parse as one message */
    rm_rpc_buf_t b = {0};
    rm_rpc_buf_append_varint_field(&b, 1, 300);
    rm_rpc_buf_append_bytes_field(&b, 2, "abc", 3);
    Remora__V1__Snapshot *m = remora__v1__snapshot__unpack(NULL, b.len, b.base);
    assert_non_null(m);
    assert_int_equal(m->version, 300);
    assert_string_equal(m->nonce, "abc");
    remora__v1__snapshot__free_unpacked(m, NULL);
    rm_rpc_buf_dispose(&b);

    Remora__V1__Hello hello = REMORA__V1__HELLO__INIT;
    hello.node_id = "n";
    hello.applied_version = 7;
    rm_rpc_buf_append_message_field(&b, 1, &hello.base); /* AgentMessage.hello */
    Remora__V1__AgentMessage *am = remora__v1__agent_message__unpack(NULL, b.len, b.base);
    assert_non_null(am);
    assert_int_equal(am->message_case, REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO);
    assert_int_equal(am->hello->applied_version, 7);
    remora__v1__agent_message__free_unpacked(am, NULL);
    rm_rpc_buf_dispose(&b);

    /* pack / unpack through a byte buffer, and garbage */
    rm_rpc_init();
    grpc_byte_buffer *bb = rm_rpc_pack(&hello.base);
    Remora__V1__Hello *h = (Remora__V1__Hello *)rm_rpc_unpack(&remora__v1__hello__descriptor, bb);
    assert_string_equal(h->node_id, "n");
    remora__v1__hello__free_unpacked(h, NULL);
    grpc_byte_buffer_destroy(bb);
    grpc_slice junk = grpc_slice_from_static_string("\xff\xff\xff");
    bb = grpc_raw_byte_buffer_create(&junk, 1);
    assert_null(rm_rpc_unpack(&remora__v1__hello__descriptor, bb));
    grpc_byte_buffer_destroy(bb);
    rm_rpc_shutdown();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_timeout_and_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
