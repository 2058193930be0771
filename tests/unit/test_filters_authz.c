/*
 * Authorization: the matcher (filters/authz.h) on policies parsed from the bootstrap YAML, including
 * the identity and namespace rules against a set peer identity (the SPIFFE ID the mesh mTLS will
 * put on stream->peer_identity), the evaluation order (DENY, AUDIT, ALLOW) and what is counted, the
 * SPIFFE namespace extraction, and the bootstrap's errors on their lines.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "config/config.h"
#include "filters/authz.h"

#define WEB "spiffe://remora.local/ns/default/sa/web"
#define OPS "spiffe://remora.local/ns/ops/sa/admin"
#define BATCH "spiffe://remora.local/ns/default/sa/batch"

static const char yaml[] = "listeners:\n"
                           "  - name: in\n"
                           "    address: 127.0.0.1:15006\n"
                           "    routes:\n"
                           "      - name: r\n"
                           "        cluster: c\n"
                           "        authorization:\n"
                           "          - name: no-batch\n"
                           "            action: deny\n"
                           "            rules:\n"
                           "              - from: [{identities: [\"" BATCH "\"]}]\n"
                           "              - to: [{paths: [/admin, \"/internal/*\"]}]\n"
                           "          - name: readers\n"
                           "            action: allow\n"
                           "            rules:\n"
                           "              - from: [{identities: [\"" WEB "\"]}, {namespaces: [ops]}]\n"
                           "                to: [{methods: [GET], paths: [\"/v1/*\"]}, {grpc_methods: [\"echo.Echo/*\"]}]\n"
                           "              - to: [{methods: [GET], paths: [/healthz]}]\n"
                           "          - name: watch\n"
                           "            action: audit\n"
                           "            rules:\n"
                           "              - from: [{identities: [\"spiffe://remora.local/ns/default/*\"]}]\n"
                           "clusters:\n"
                           "  - name: c\n"
                           "    endpoints: [\"127.0.0.1:8080\"]\n";

typedef struct st_counts_t {
    char log[512];
} counts_t;

static void
record(void *ctx, const rm_config_authz_policy_t *p, rm_authz_decision_t d)
{
    static const char *const names[] = {"allow", "deny", "audit_deny"};
    counts_t *c = ctx;
    size_t len = strlen(c->log);
    snprintf(c->log + len, sizeof(c->log) - len, "%s%s:%s", len != 0 ? " " : "", p->name, names[d]);
}

static rm_authz_request_t
req(const char *method, const char *path, int grpc, const char *identity)
{
    return (rm_authz_request_t){method, strlen(method), path, strlen(path), grpc, identity};
}

static rm_config_t *
load(void)
{
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "authz.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    return c;
}

static int
decide(const rm_config_authz_t *a, rm_authz_request_t r, const char *want_log)
{
    counts_t c = {""};
    int ok = rm_authz_evaluate(a, &r, record, &c);
    assert_string_equal(c.log, want_log);
    return ok;
}

static void
test_identity_and_namespace_rules(void **state)
{
    rm_config_t *c = load();
    const rm_config_authz_t *a = c->listeners[0].routes[0].authz;
    assert_non_null(a);
    assert_int_equal(a->num_policies, 3);
    assert_true((c->listeners[0].filters & RM_LISTENER_USES_AUTHZ) != 0);

    /* the web identity: GET under /v1/ only */
    assert_true(decide(a, req("GET", "/v1/items?x=1", 0, WEB), "watch:allow readers:allow"));
    assert_false(decide(a, req("POST", "/v1/items", 0, WEB), "watch:allow readers:deny"));
    assert_false(decide(a, req("GET", "/v2/items", 0, WEB), "watch:allow readers:deny"));
    assert_false(decide(a, req("GET", "/v1", 0, WEB), "watch:allow readers:deny")); /* the prefix is "/v1/" */
    /* a namespace rule: any identity of namespace ops; the audit policy would deny it (not in default) */
    assert_true(decide(a, req("GET", "/v1/x", 0, OPS), "watch:audit_deny readers:allow"));
    assert_false(decide(a, req("GET", "/v1/x", 0, "spiffe://remora.local/ns/opsx/sa/admin"), "watch:audit_deny readers:deny"));
    /* no identity (plaintext): only the rule without `from` */
    assert_false(decide(a, req("GET", "/v1/x", 0, NULL), "watch:audit_deny readers:deny"));
    assert_true(decide(a, req("GET", "/healthz", 0, NULL), "watch:audit_deny readers:allow"));
    /* an identity that is not a SPIFFE workload ID has no namespace */
    assert_false(decide(a, req("GET", "/v1/x", 0, "spiffe://remora.local/ops"), "watch:audit_deny readers:deny"));

    /* gRPC methods: only gRPC requests, matched on the path */
    assert_true(decide(a, req("POST", "/echo.Echo/Unary", 1, WEB), "watch:allow readers:allow"));
    assert_false(decide(a, req("POST", "/echo.Echo/Unary", 0, WEB), "watch:allow readers:deny"));
    assert_false(decide(a, req("POST", "/echo.Control/Stats", 1, WEB), "watch:allow readers:deny"));
    assert_false(decide(a, req("POST", "/echo.EchoX/Unary", 1, WEB), "watch:allow readers:deny"));

    /* DENY first, whatever ALLOW says; a DENY stops the evaluation (no audit, no allow counted) */
    assert_false(decide(a, req("GET", "/v1/x", 0, BATCH), "no-batch:deny"));
    assert_false(decide(a, req("GET", "/admin", 0, WEB), "no-batch:deny"));
    assert_false(decide(a, req("GET", "/internal/metrics", 0, OPS), "no-batch:deny"));
    /* "/admin" is exact: /admin2 is not denied by no-batch (readers refuses it) */
    assert_false(decide(a, req("GET", "/admin2", 0, NULL), "watch:audit_deny readers:deny"));
    rm_config_unref(c);
}

static int
decide_connection(const rm_config_authz_t *a, const char *identity, const char *want_log)
{
    counts_t c = {""};
    int ok = rm_authz_evaluate_connection(a, identity, record, &c);
    assert_string_equal(c.log, want_log);
    return ok;
}

/* Opaque TCP (tcp/tcp_proxy.c): no method or path; ALLOW/AUDIT rules with `to` match no connection, a DENY rule's `to`
 * is ignored; the order and what is counted are a request's. */
static void
test_connection_rules(void **state)
{
    rm_config_t *c = load();
    const rm_config_authz_t *a = c->listeners[0].routes[0].authz;
    /* no-batch's second rule is `to` only: ignored `to` makes it match every connection (the stricter reading) */
    assert_false(decide_connection(a, WEB, "no-batch:deny"));
    assert_false(decide_connection(a, NULL, "no-batch:deny"));
    rm_config_unref(c);

    static const char y[] = "listeners: [{address: \"127.0.0.1:15006\", routes: [{cluster: c}]}]\n"
                            "clusters:\n"
                            "  - name: c\n"
                            "    endpoints: [\"127.0.0.1:8080\"]\n"
                            "    authorization:\n"
                            "      - {name: no-batch, action: deny, rules: [{from: [{identities: [\"" BATCH "\"]}]}]}\n"
                            "      - {name: watch, action: audit, rules: [{from: [{namespaces: [default]}]}]}\n"
                            "      - {name: gets, action: allow, rules: [{to: [{methods: [GET]}]}]}\n"
                            "      - {name: ops, action: allow, rules: [{from: [{namespaces: [ops]}]}]}\n";
    rm_config_error_t err;
    if ((c = rm_config_load_string(y, sizeof(y) - 1, "t.yaml", &err)) == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    a = c->clusters[0].authz;
    assert_false(decide_connection(a, BATCH, "no-batch:deny"));
    /* `gets` has `to` conditions: no connection matches it; every ALLOW policy counts the refusal */
    assert_false(decide_connection(a, WEB, "watch:allow gets:deny ops:deny"));
    assert_true(decide_connection(a, OPS, "watch:audit_deny ops:allow"));
    assert_false(decide_connection(a, NULL, "watch:audit_deny gets:deny ops:deny"));
    rm_config_unref(c);
}

static void
test_no_allow_policy_allows(void **state)
{
    static const char y[] = "listeners: [{address: \"127.0.0.1:15006\", routes: [{cluster: c}]}]\n"
                            "clusters:\n"
                            "  - name: c\n"
                            "    endpoints: [\"127.0.0.1:8080\"]\n"
                            "    authorization:\n"
                            "      - {name: d, action: deny, rules: [{to: [{methods: [DELETE]}]}]}\n"
                            "      - {name: a, action: audit, rules: [{to: [{methods: [GET]}]}]}\n"
                            "      - {name: nothing, action: deny}\n";
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(y, sizeof(y) - 1, "t.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    const rm_config_authz_t *a = c->clusters[0].authz;
    assert_non_null(a);
    /* a cluster's policies are the router's: no filter on the listener */
    assert_true((c->listeners[0].filters & RM_LISTENER_USES_AUTHZ) == 0);
    assert_true(decide(a, req("GET", "/", 0, NULL), "a:allow"));
    assert_true(decide(a, req("POST", "/", 0, NULL), "a:audit_deny")); /* audited, let through */
    assert_false(decide(a, req("DELETE", "/", 0, WEB), "d:deny"));
    /* a policy without rules matches nothing: "nothing" never denies */
    rm_config_unref(c);
}

static void
test_spiffe_namespace(void **state)
{
    const char *ns;
    size_t len;
    assert_true(rm_authz_identity_namespace(WEB, &ns, &len));
    assert_int_equal(len, 7);
    assert_memory_equal(ns, "default", 7);
    assert_true(rm_authz_identity_namespace("spiffe://td/ns/a/sa/b", &ns, &len));
    assert_int_equal(len, 1);
    assert_false(rm_authz_identity_namespace(NULL, &ns, &len));
    assert_false(rm_authz_identity_namespace("spiffe:///ns/a/sa/b", &ns, &len));
    assert_false(rm_authz_identity_namespace("spiffe://td/ns//sa/b", &ns, &len));
    assert_false(rm_authz_identity_namespace("spiffe://td/ns/a/sa/", &ns, &len));
    assert_false(rm_authz_identity_namespace("spiffe://td/ns/a/sa/b/c", &ns, &len));
    assert_false(rm_authz_identity_namespace("spiffe://td/sa/b/ns/a", &ns, &len));
    assert_false(rm_authz_identity_namespace("https://td/ns/a/sa/b", &ns, &len));
}

static void
expect_error(const char *authz, unsigned line, const char *text)
{
    char y[2048];
    snprintf(y, sizeof(y),
             "listeners: [{address: \"127.0.0.1:15006\", routes: [{cluster: c}]}]\n" /* 1 */
             "clusters:\n"                                                           /* 2 */
             "  - name: c\n"                                                         /* 3 */
             "    endpoints: [\"127.0.0.1:8080\"]\n"                                 /* 4 */
             "    authorization:\n"                                                  /* 5 */
             "%s",
             authz);
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(y, strlen(y), "bad.yaml", &err);
    if (c != NULL) {
        rm_config_unref(c);
        fail_msg("accepted: %s", authz);
    }
    if (err.line != line || strstr(err.message, text) == NULL)
        fail_msg("for %s: got %u: %s; want %u: ...%s...", authz, err.line, err.message, line, text);
}

static void
test_bootstrap_errors(void **state)
{
    expect_error("      - {action: allow}\n", 6, "'authorization[].name' is required");
    expect_error("      - {name: x, action: permit}\n", 6, "action 'permit' must be allow, deny or audit");
    expect_error("      - name: x\n        action: allow\n        rules: [{from: [{identities: [web]}]}]\n", 8,
                 "'web' is not a SPIFFE ID");
    expect_error(
        "      - name: x\n        action: allow\n        rules: [{from: [{namespaces: [a], identities: [\"spiffe://t/x\"]}]}]\n", 8,
        "needs exactly one of identities and namespaces");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{paths: [v1]}]}]\n", 8, "'v1' is not a path");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{paths: [\"/a*b\"]}]}]\n", 8, "is not a path");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{methods: [get]}]}]\n", 8, "is not upper case");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{grpc_methods: [Echo]}]}]\n", 8,
                 "is not a gRPC method");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{paths: [/a], grpc_methods: [a.B/C]}]}]\n", 8,
                 "cannot be combined");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: []}]\n", 8, "must list 1-16 entries");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{}]}]\n", 8,
                 "needs methods, paths or grpc_methods");
    expect_error("      - {name: x, action: allow}\n      - {name: x, action: deny}\n", 7, "policy 'x' is listed twice");
    expect_error("      - name: x\n        action: allow\n        rules: [{to: [{verbs: [GET]}]}]\n", 8, "unknown key 'verbs'");
}

/* Policies built by hand (as the control-plane translation does) are checked by rm_config_validate too. */
static void
test_validate_by_hand(void **state)
{
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "authz.yaml", &err);
    assert_non_null(c);
    rm_config_authz_t *a = c->listeners[0].routes[0].authz;
    char *saved = a->policies[1].rules[0].to[0].paths[0];
    a->policies[1].rules[0].to[0].paths[0] = strdup("no-slash");
    assert_int_equal(rm_config_validate(c, &err), -1);
    assert_non_null(strstr(err.message, "authorization 'readers': paths 'no-slash' is not a path"));
    free(a->policies[1].rules[0].to[0].paths[0]);
    a->policies[1].rules[0].to[0].paths[0] = saved;
    /* a deep copy decides as the original */
    rm_config_authz_t *copy = rm_config_authz_copy(a);
    assert_true(decide(copy, req("GET", "/v1/x", 0, OPS), "watch:audit_deny readers:allow"));
    assert_false(decide(copy, req("GET", "/v1/x", 0, BATCH), "no-batch:deny"));
    rm_config_authz_free(copy);
    rm_config_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_and_namespace_rules),
        cmocka_unit_test(test_no_allow_policy_allows),
        cmocka_unit_test(test_connection_rules),
        cmocka_unit_test(test_spiffe_namespace),
        cmocka_unit_test(test_bootstrap_errors),
        cmocka_unit_test(test_validate_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
