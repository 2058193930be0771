/*
 * Rendering resources back to documents (`remoractl get -o yaml|json`): what is rendered as YAML
 * parses back to the identical encoding, strings that YAML would misread are quoted, JSON is valid.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "document.h"
#include "render.h"

static const char *const docs =
    "apiVersion: remora.dev/v1\n"
    "kind: Service\n"
    "metadata:\n"
    "  name: echo\n"
    "  labels: {app: echo, \"example.com/tier\": \"yes\", version: \"2\", empty: \"\", q: \"a \\\"b\\\": #c\\n\"}\n"
    "  annotations: {note: \"- not a list\"}\n"
    "spec: {protocol: grpc, endpoints: [\"127.0.0.1:1\", \"[::1]:2\", {dns: \"echo.internal:3\"}]}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: Service\n"
    "metadata: {name: bare, namespace: team-a}\n"
    "spec: {protocol: http1, meshed: false}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: HTTPRoute\n"
    "metadata: {name: r}\n"
    "spec:\n"
    "  parentRefs: [{name: echo, port: 80}]\n"
    "  rules:\n"
    "  - matches:\n"
    "    - path: {type: RegularExpression, value: \"^/v[0-9]+/.*$\"}\n"
    "      headers: [{name: x-a, value: \"true\"}, {type: RegularExpression, name: x-b, value: \"[a-z]+\"}]\n"
    "      method: POST\n"
    "    - path: {type: Exact, value: /exact}\n"
    "    - {}\n"
    "    backendRefs: [{name: echo, weight: 0}, {name: bare, namespace: team-a, port: 8080, weight: 7}]\n"
    "    timeouts: {request: 1h2m3s4ms, backendRequest: 0s}\n"
    "  - backendRefs: [{name: echo}]\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: GRPCRoute\n"
    "metadata: {name: g}\n"
    "spec:\n"
    "  parentRefs: [{name: echo}]\n"
    "  rules:\n"
    "  - matches: [{method: {method: Get}}, {method: {type: RegularExpression, service: \"a\\\\.b\", method: \".*\"}}, "
    "{headers: [{name: k, value: v}]}]\n"
    "    backendRefs: [{name: echo}]\n";

static void
parse_ok(rm_batch_t *b, const char *yaml, size_t len)
{
    rm_batch_init(b);
    rm_batch_parse(b, "t.yaml", yaml, len);
    rm_batch_check(b, NULL, NULL);
    for (size_t i = 0; i != b->errors.size; ++i)
        fprintf(stderr, "%s:%u: %s\n---\n%.*s\n", b->errors.entries[i].file, b->errors.entries[i].line,
                b->errors.entries[i].message, (int)len, yaml);
    assert_int_equal(b->errors.size, 0);
}

static const char *const policy_docs =
    "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo}\nspec: {protocol: http1}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: FaultInjection\n"
    "metadata: {name: chaos}\n"
    "spec: {delay: {fixedDelay: 1m500ms, percent: 0}, abort: {grpcStatus: resource_exhausted}}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: FaultInjection\n"
    "metadata: {name: plain}\n"
    "spec: {abort: {httpStatus: 503, percent: 5}}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: BackendTrafficPolicy\n"
    "metadata: {name: p}\n"
    "spec:\n"
    "  targetRefs: [{name: echo}]\n"
    "  retryConstraint: {minRetryRate: {count: 0}}\n"
    "  connectionPool: {streamIdleTimeout: 0s, idleTimeout: 90s}\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: HTTPRoute\n"
    "metadata: {name: r}\n"
    "spec:\n"
    "  parentRefs: [{name: echo}]\n"
    "  rules:\n"
    "  - matches: [{path: {value: /api}}]\n"
    "    filters:\n"
    "    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: \"true\"}], add: [{name: x-b, value: "
    "\"1, 2\"}], remove: [x-c]}}\n"
    "    - {type: ResponseHeaderModifier, responseHeaderModifier: {}}\n"
    "    - {type: RequestMirror, requestMirror: {backendRef: {name: echo, port: 8080}, fraction: {numerator: 1, denominator: 3}}}\n"
    "    - {type: RequestMirror, requestMirror: {backendRef: {name: echo}}}\n"
    "    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: \"\"}}}\n"
    "    - {type: ExtensionRef, extensionRef: {name: chaos}}\n"
    "    backendRefs: [{name: echo}]\n"
    "    retry: {codes: [], conditions: [reset]}\n"
    "  - filters: [{type: RequestRedirect, requestRedirect: {hostname: a.example, path: {type: ReplaceFullPath, replaceFullPath: "
    "/x}}}]\n"
    "---\n"
    "apiVersion: remora.dev/v1\n"
    "kind: GRPCRoute\n"
    "metadata: {name: g}\n"
    "spec:\n"
    "  parentRefs: [{name: echo}]\n"
    "  rules:\n"
    "  - backendRefs: [{name: echo}]\n"
    "    filters: [{type: ExtensionRef, extensionRef: {name: plain}}]\n"
    "    retry: {attempts: 0, backoff: 1s, codes: [UNAVAILABLE, INTERNAL]}\n";

/* Renders every resource of `yaml` as YAML, parses that back and checks the encodings are identical; returns the YAML. */
static void
round_trip(const char *yaml, size_t expect, rm_rpc_buf_t *out)
{
    rm_batch_t a, b;
    parse_ok(&a, yaml, strlen(yaml));
    assert_int_equal(a.resources.size, expect);
    for (size_t i = 0; i != a.resources.size; ++i) {
        rm_node_t *n = rm_render_resource(a.resources.entries[i]->kind, a.resources.entries[i]->msg);
        if (i != 0)
            rm_rpc_buf_append(out, "---\n", 4);
        rm_render_yaml(n, out);
        rm_node_free(n);
    }
    parse_ok(&b, (const char *)out->base, out->len);
    assert_int_equal(b.resources.size, a.resources.size);
    for (size_t i = 0; i != a.resources.size; ++i) {
        rm_resource_t *x = a.resources.entries[i], *y = b.resources.entries[i];
        assert_int_equal(x->kind, y->kind);
        if (x->len != y->len || memcmp(x->bytes, y->bytes, x->len) != 0)
            fail_msg("resource %zu differs after a round trip through:\n%.*s", i, (int)out->len, (const char *)out->base);
    }
    rm_batch_dispose(&a);
    rm_batch_dispose(&b);
    rm_rpc_buf_append(out, "", 1);
}

static void
test_yaml_round_trip(void **state)
{
    rm_rpc_buf_t out = {0};
    round_trip(docs, 4, &out);
    /* quoting: YAML would read these as booleans, numbers, comments or lists */
    const char *text = (const char *)out.base;
    assert_non_null(strstr(text, "example.com/tier: \"yes\""));
    assert_non_null(strstr(text, "version: \"2\""));
    assert_non_null(strstr(text, "empty: \"\""));
    assert_non_null(strstr(text, "note: \"- not a list\""));
    assert_non_null(strstr(text, "value: \"true\""));
    assert_non_null(strstr(text, "  endpoints:\n  - \"127.0.0.1:1\"\n  - \"[::1]:2\"\n  - dns: \"echo.internal:3\"\n"));
    assert_non_null(strstr(text, "request: \"1h2m3s4ms\""));
    assert_non_null(strstr(text, "kind: GRPCRoute"));
    rm_rpc_buf_dispose(&out);
}

static void
test_policy_round_trip(void **state)
{
    rm_rpc_buf_t out = {0};
    round_trip(policy_docs, 6, &out);
    /* defaults are spelled out; empty lists stay (they differ from absent ones, which take the defaults) */
    const char *text = (const char *)out.base;
    assert_non_null(strstr(text, "kind: FaultInjection\n"));
    assert_non_null(strstr(text,
                           "  delay:\n    fixedDelay: \"1m500ms\"\n    percent: 0\n  abort:\n    grpcStatus: RESOURCE_EXHAUSTED\n"
                           "    percent: 100\n"));
    assert_non_null(strstr(text, "  retryConstraint:\n    budget:\n      percent: 20\n      interval: \"10s\"\n"
                                 "    minRetryRate:\n      count: 0\n      interval: \"1s\"\n"));
    assert_non_null(strstr(text, "  connectionPool:\n    idleTimeout: \"1m30s\"\n    streamIdleTimeout: \"0s\"\n"));
    assert_non_null(strstr(text, "    retry:\n      attempts: 1\n      backoff: \"25ms\"\n      codes: []\n      conditions:\n"
                                 "      - reset\n"));
    assert_non_null(strstr(text, "      codes:\n      - UNAVAILABLE\n      - INTERNAL\n"));
    assert_non_null(strstr(text, "      requestMirror:\n        backendRef:\n          kind: Service\n          name: echo\n"
                                 "          namespace: default\n        percent: 100\n"));
    assert_non_null(strstr(text, "replacePrefixMatch: \"\""));
    assert_non_null(strstr(text, "      requestRedirect:\n        hostname: a.example\n        statusCode: 302\n"));
    assert_non_null(
        strstr(text, "      extensionRef:\n        group: remora.dev\n        kind: FaultInjection\n        name: chaos\n"));
    rm_rpc_buf_dispose(&out);
}

static void
test_json(void **state)
{
    rm_batch_t a;
    parse_ok(&a, docs, strlen(docs));
    rm_node_t *root = rm_node_map();
    rm_node_add(root, "kind", rm_node_string("List"));
    rm_node_t *items = rm_node_add(root, "items", rm_node_list());
    for (size_t i = 0; i != a.resources.size; ++i)
        rm_node_add(items, NULL, rm_render_resource(a.resources.entries[i]->kind, a.resources.entries[i]->msg));
    rm_node_add(root, "n", rm_node_number(-3));
    rm_node_add(root, "ok", rm_node_bool(1));
    rm_node_add(root, "none", rm_node_list());
    rm_rpc_buf_t out = {0};
    rm_render_json(root, &out);
    rm_rpc_buf_append(&out, "", 1);
    const char *text = (const char *)out.base;
    assert_true(strncmp(text, "{\n  \"kind\": \"List\",\n  \"items\": [\n    {\n      \"apiVersion\": \"remora.dev/v1\",", 70) ==
                0);
    assert_non_null(strstr(text, "\"q\": \"a \\\"b\\\": #c\\n\""));
    assert_non_null(strstr(text, "\"weight\": 7"));
    assert_non_null(strstr(text, "\"n\": -3,\n  \"ok\": true,\n  \"none\": []\n}\n"));
    rm_rpc_buf_dispose(&out);
    rm_node_free(root);
    rm_batch_dispose(&a);
}

static void
test_durations(void **state)
{
    char buf[64];
    assert_string_equal(rm_render_duration(0, buf, sizeof(buf)), "0s");
    assert_string_equal(rm_render_duration(250, buf, sizeof(buf)), "250ms");
    assert_string_equal(rm_render_duration(90000, buf, sizeof(buf)), "1m30s");
    assert_string_equal(rm_render_duration(3600000 * 25 + 1, buf, sizeof(buf)), "25h1ms");
    uint64_t ms;
    assert_int_equal(rm_document_parse_duration(rm_render_duration(3723004, buf, sizeof(buf)), &ms), 0);
    assert_int_equal(ms, 3723004);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_round_trip),
        cmocka_unit_test(test_policy_round_trip),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
