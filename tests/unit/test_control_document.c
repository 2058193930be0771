/*
 * Policy documents: YAML -> validated resources. Good documents give the expected protobuf content
 * with defaults filled in; each class of mistake gives an error on the right line whose message
 * names what to fix; a batch is checked as a whole (duplicates, references).
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
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"

/* Parses and checks `yaml` as file "t.yaml" against an empty store. */
static void
parse(rm_batch_t *b, const char *yaml)
{
    rm_batch_init(b);
    rm_batch_parse(b, "t.yaml", yaml, strlen(yaml));
    rm_batch_check(b, NULL, NULL);
}

static int mismatches;

/* Expects exactly one error, on `line`, containing `text`; a mismatch is printed and counted (all are shown at once). */
static void
expect_error(const char *yaml, unsigned line, const char *text)
{
    rm_batch_t b;
    parse(&b, yaml);
    if (b.errors.size != 1 || b.errors.entries[0].line != line || strstr(b.errors.entries[0].message, text) == NULL) {
        fprintf(stderr, "for:\n%s\nwant line %u containing '%s'; got %zu error(s):\n", yaml, line, text, b.errors.size);
        for (size_t i = 0; i != b.errors.size; ++i)
            fprintf(stderr, "  %s:%u: %s\n", b.errors.entries[i].file, b.errors.entries[i].line, b.errors.entries[i].message);
        ++mismatches;
    }
    rm_batch_dispose(&b);
}

#define SVC "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  protocol: grpc\n"
#define SVC2 "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo-v2}\nspec: {protocol: http2}\n"
#define ROUTE_HEAD "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: echo}]\n"

static void
test_issue_example(void **state)
{
    const char *yaml = "apiVersion: remora.dev/v1\n"
                       "kind: Service\n"
                       "metadata: {name: echo}\n"
                       "spec:\n"
                       "  protocol: grpc                    # grpc | http2 | http1\n"
                       "  endpoints: [\"127.0.0.1:27201\"]    # or dns: \"name:port\"\n"
                       "---\n" SVC2 "---\n"
                       "apiVersion: remora.dev/v1\n"
                       "kind: HTTPRoute\n"
                       "metadata: {name: echo-split}\n"
                       "spec:\n"
                       "  parentRefs: [{kind: Service, name: echo}]\n"
                       "  rules:\n"
                       "  - matches: [{path: {type: PathPrefix, value: /}}]\n"
                       "    backendRefs: [{name: echo, weight: 90}, {name: echo-v2, weight: 10}]\n";
    rm_batch_t b;
    parse(&b, yaml);
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.num_documents, 3);
    assert_int_equal(b.resources.size, 3);

    rm_resource_t *r = b.resources.entries[0];
    assert_int_equal(r->kind, RM_KIND_SERVICE);
    assert_string_equal(r->name, "echo");
    assert_string_equal(r->ns, "default");
    assert_int_equal(r->line, 1);
    const Remora__V1__Service *svc = (const void *)r->msg;
    assert_int_equal(svc->spec->protocol, REMORA__V1__PROTOCOL__PROTOCOL_GRPC);
    assert_int_equal(svc->spec->n_endpoints, 1);
    assert_int_equal(svc->spec->endpoints[0]->target_case, REMORA__V1__ENDPOINT__TARGET_ADDRESS);
    assert_string_equal(svc->spec->endpoints[0]->address, "127.0.0.1:27201");
    assert_int_equal(b.resources.entries[1]->line, 8);

    r = b.resources.entries[2];
    assert_int_equal(r->kind, RM_KIND_HTTP_ROUTE);
    const Remora__V1__HTTPRoute *route = (const void *)r->msg;
    assert_int_equal(route->spec->n_parent_refs, 1);
    assert_string_equal(route->spec->parent_refs[0]->kind, "Service");
    assert_string_equal(route->spec->parent_refs[0]->namespace_, "default");
    const Remora__V1__HTTPRouteRule *rule = route->spec->rules[0];
    assert_int_equal(rule->n_matches, 1);
    assert_int_equal(rule->matches[0]->path->match_case, REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX);
    assert_string_equal(rule->matches[0]->path->prefix, "/");
    assert_int_equal(rule->n_backend_refs, 2);
    assert_string_equal(rule->backend_refs[0]->name, "echo");
    assert_int_equal(rule->backend_refs[0]->weight, 90);
    assert_int_equal(rule->backend_refs[1]->weight, 10);
    assert_null(rule->timeouts);
    rm_batch_dispose(&b);
}

static void
test_full_route(void **state)
{
    const char *yaml =
        SVC "---\n" SVC2 "---\n"
            "apiVersion: remora.dev/v1\n"
            "kind: httproutes\n"
            "metadata:\n"
            "  name: r\n"
            "  namespace: default\n"
            "  labels: {b: \"2\", a: x}\n"
            "spec:\n"
            "  parentRefs: [{group: \"\", kind: Service, name: echo, port: 8080}]\n"
            "  rules:\n"
            "  - matches:\n"
            "    - path: {type: Exact, value: /healthz}\n"
            "      method: GET\n"
            "      headers: [{name: X-Canary, value: \"yes\"}, {type: RegularExpression, name: x-id, value: \"^a+$\"}]\n"
            "    - {}\n"
            "    backendRefs: [{name: echo-v2}]\n"
            "    timeouts: {request: 1m30s, backendRequest: 250ms}\n"
            "  - backendRefs: [{name: echo, namespace: default, port: 9090, weight: 0}, {name: echo-v2, weight: 3}]\n"
            "---\n"
            "apiVersion: remora.dev/v1\n"
            "kind: GRPCRoute\n"
            "metadata: {name: g}\n"
            "spec:\n"
            "  parentRefs: [{name: echo}]\n"
            "  rules:\n"
            "  - matches:\n"
            "    - method: {service: echo.Echo, method: Unary}\n"
            "    - method: {type: RegularExpression, service: \"echo\\\\..*\"}\n"
            "      headers: [{name: x-env, value: prod}]\n"
            "    backendRefs: [{name: echo-v2}]\n";
    rm_batch_t b;
    parse(&b, yaml);
    for (size_t i = 0; i != b.errors.size; ++i)
        fprintf(stderr, "%s:%u: %s\n", b.errors.entries[i].file, b.errors.entries[i].line, b.errors.entries[i].message);
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.resources.size, 4);

    const Remora__V1__HTTPRoute *route = (const void *)b.resources.entries[2]->msg;
    /* labels are sorted, so equal maps encode equally */
    assert_int_equal(route->metadata->n_labels, 2);
    assert_string_equal(route->metadata->labels[0]->key, "a");
    assert_string_equal(route->metadata->labels[1]->value, "2");
    assert_int_equal(route->spec->parent_refs[0]->port, 8080);
    assert_int_equal(route->spec->n_rules, 2);
    const Remora__V1__HTTPRouteRule *rule = route->spec->rules[0];
    assert_int_equal(rule->n_matches, 2);
    const Remora__V1__HTTPRouteMatch *m = rule->matches[0];
    assert_int_equal(m->path->match_case, REMORA__V1__HTTPPATH_MATCH__MATCH_EXACT);
    assert_string_equal(m->path->exact, "/healthz");
    assert_string_equal(m->method, "GET");
    assert_int_equal(m->n_headers, 2);
    assert_string_equal(m->headers[0]->name, "x-canary"); /* lower-cased */
    assert_int_equal(m->headers[0]->match_case, REMORA__V1__HEADER_MATCH__MATCH_EXACT);
    assert_string_equal(m->headers[0]->exact, "yes");
    assert_int_equal(m->headers[1]->match_case, REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION);
    /* an empty match is a prefix "/" */
    assert_string_equal(rule->matches[1]->path->prefix, "/");
    assert_int_equal(rule->backend_refs[0]->weight, 1);
    assert_int_equal(rule->timeouts->request->seconds, 90);
    assert_int_equal(rule->timeouts->request->nanos, 0);
    assert_int_equal(rule->timeouts->backend_request->seconds, 0);
    assert_int_equal(rule->timeouts->backend_request->nanos, 250000000);
    rule = route->spec->rules[1];
    assert_int_equal(rule->n_matches, 0);
    assert_int_equal(rule->backend_refs[0]->port, 9090);
    assert_int_equal(rule->backend_refs[0]->weight, 0);

    const Remora__V1__GRPCRoute *g = (const void *)b.resources.entries[3]->msg;
    assert_int_equal(g->spec->rules[0]->n_matches, 2);
    const Remora__V1__GRPCMethodMatch *mm = g->spec->rules[0]->matches[0]->method;
    assert_int_equal(mm->type, REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_EXACT);
    assert_string_equal(mm->service, "echo.Echo");
    assert_string_equal(mm->method, "Unary");
    mm = g->spec->rules[0]->matches[1]->method;
    assert_int_equal(mm->type, REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION);
    assert_string_equal(mm->method, "");
    assert_int_equal(g->spec->rules[0]->matches[1]->n_headers, 1);
    rm_batch_dispose(&b);
}

static void
test_kinds(void **state)
{
    static const char *const names[] = {"Service", "service", "SERVICES", "svc", NULL};
    for (size_t i = 0; names[i] != NULL; ++i) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml), "apiVersion: remora.dev/v1\nkind: %s\nmetadata: {name: a}\nspec: {protocol: http1}\n",
                 names[i]);
        rm_batch_t b;
        parse(&b, yaml);
        assert_int_equal(b.errors.size, 0);
        assert_int_equal(b.resources.entries[0]->kind, RM_KIND_SERVICE);
        rm_batch_dispose(&b);
    }
    rm_kind_t k;
    assert_int_equal(rm_kind_parse("HTTPRoutes", &k), 0);
    assert_int_equal(k, RM_KIND_HTTP_ROUTE);
    assert_int_equal(rm_kind_parse("grpcroute", &k), 0);
    assert_int_equal(k, RM_KIND_GRPC_ROUTE);
    assert_int_equal(rm_kind_parse("gateway", &k), -1);
}

static void
test_endpoints(void **state)
{
    rm_batch_t b;
    parse(&b, SVC "  endpoints: [\"10.0.0.1:80\", \"[::1]:8080\", {address: \"127.0.0.1:1\"}, {dns: \"echo.internal:443\"},"
                  " {dns: \"svc_a.ns.svc.cluster.local.:80\"}]\n");
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__ServiceSpec *spec = ((const Remora__V1__Service *)b.resources.entries[0]->msg)->spec;
    assert_int_equal(spec->n_endpoints, 5);
    assert_int_equal(spec->endpoints[1]->target_case, REMORA__V1__ENDPOINT__TARGET_ADDRESS);
    assert_string_equal(spec->endpoints[1]->address, "[::1]:8080");
    assert_int_equal(spec->endpoints[3]->target_case, REMORA__V1__ENDPOINT__TARGET_DNS);
    assert_string_equal(spec->endpoints[3]->dns, "echo.internal:443");
    rm_batch_dispose(&b);

    expect_error(SVC "  endpoints: [\"127.0.0.1:70000\"]\n", 6, "port 70000 is out of range 1-65535");
    expect_error(SVC "  endpoints: [\"127.0.0.1:0\"]\n", 6, "port 0 is out of range 1-65535");
    expect_error(SVC "  endpoints: [\"127.0.0.1\"]\n", 6, "has no port");
    expect_error(SVC "  endpoints: [\"127.0.0.1:http\"]\n", 6, "the port must be a number");
    expect_error(SVC "  endpoints: [\"::1:80\"]\n", 6, "write IPv6 addresses in brackets");
    expect_error(SVC "  endpoints: [\"[fe80::zz]:80\"]\n", 6, "is not an IP address");
    expect_error(SVC "  endpoints: [\"256.1.1.1:80\"]\n", 6, "'256.1.1.1' is not a valid IPv4 address");
    expect_error(SVC "  endpoints: [\"echo:80\"]\n", 6, "for a DNS name write {dns: \"echo:80\"}");
    expect_error(SVC "  endpoints: [{dns: \"10.0.0.1:80\"}]\n", 6, "is an IP address: write it as {address");
    expect_error(SVC "  endpoints: [{dns: \"bad..name:80\"}]\n", 6, "not a valid DNS name");
    expect_error(SVC "  endpoints: [{dns: \"-bad:80\"}]\n", 6, "not a valid DNS name");
    expect_error(SVC "  endpoints: [{address: \"1.2.3.4:80\", dns: \"a:80\"}]\n", 6, "exactly one of 'address'");
    expect_error(SVC "  endpoints: [{}]\n", 6, "exactly one of 'address'");
    expect_error(SVC "  endpoints: [\"1.2.3.4:80\", \"1.2.3.4:80\"]\n", 6, "listed twice");
    expect_error(SVC "  endpoints: \"1.2.3.4:80\"\n", 6, "spec.endpoints: must be a list");
    assert_int_equal(mismatches, 0);
}

static void
test_errors(void **state)
{
    /* document shape */
    expect_error("- a\n- b\n", 1, "a document must be a mapping");
    expect_error("kind: Service\nmetadata: {name: a}\nspec: {protocol: grpc}\n", 1, "apiVersion: is required (remora.dev/v1)");
    expect_error("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: grpc}\n", 1,
                 "'v1' is not supported: use remora.dev/v1");
    expect_error("apiVersion: remora.dev/v1\nmetadata: {name: a}\n", 1, "kind: is required");
    expect_error("apiVersion: remora.dev/v1\nkind: Gateway\nmetadata: {name: a}\nspec: {}\n", 2,
                 "unknown kind 'Gateway' (known: Service");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nspec: {protocol: grpc}\n", 1, "metadata: is required");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\n", 1, "service/a: spec: is required");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: grpc}\nstatus: {}\n", 5,
                 "unknown field 'status' (known: apiVersion, kind, metadata, spec)");
    /* metadata */
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: Echo}\nspec: {protocol: grpc}\n", 3,
                 "metadata.name: 'Echo' is not a valid name");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a, namespace: \"-x\"}\nspec: {protocol: grpc}\n", 3,
                 "metadata.namespace: '-x' is not a valid name");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata:\n  name: a\n  nmae: b\nspec: {protocol: grpc}\n", 5,
                 "unknown field 'nmae' (did you mean 'name'?)");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata:\n  name: a\n  labels: {x: [1]}\nspec: {protocol: grpc}\n", 5,
                 "metadata.labels.x: must be a string");
    /* service */
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n", 4,
                 "service/a: spec.protocol: is required");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: tcp}\n", 4,
                 "unknown protocol 'tcp' (use grpc, http2 or http1)");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  protocol: grpc\n  protocol: http1\n", 6,
                 "field 'protocol' is given twice (first on line 5)");
    /* routes */
    expect_error(SVC "---\n" ROUTE_HEAD, 11, "httproute/r: spec.rules: is required");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules: []\n", 12, "spec.rules: needs at least one rule");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules: [{}]\n", 12, "spec.rules[0].backendRefs: is required");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules: [{backendRefs: []}]\n", 12,
                 "spec.rules[0].backendRefs: needs at least one backend");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo, weight: -1}]\n", 13,
                 "spec.rules[0].backendRefs[0].weight: must not be negative, got -1");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo, weight: 1000001}]\n", 13,
                 "must be from 0 to 1000000, got 1000001");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo, weight: \"5\"}]\n", 13,
                 "must be a number, got the quoted string \"5\"");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo, weight: 0}, {name: echo, weight: 0}]\n", 13,
                 "every weight is 0: at least one backend needs a positive weight");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{kind: Pod, name: echo}]\n", 13,
                 "kind 'Pod' is not supported: references name a Service");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{group: apps, name: echo}]\n", 13,
                 "group 'apps' is not supported");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo, port: 0}]\n", 13,
                 "must be from 1 to 65535, got 0");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{weight: 1}]\n", 13, "backendRefs[0].name: is required");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    timeouts: {request: 10}\n", 14,
                 "'10' is not a duration: write it as 10s, 500ms, 1m30s or 1h");
    expect_error(SVC "---\n" ROUTE_HEAD
                     "  rules:\n  - backendRefs: [{name: echo}]\n    timeouts: {request: 1s, backendRequest: 2s}\n",
                 14, "backendRequest: must not be longer than request (1s)");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{path: {value: foo}}]\n", 14,
                 "matches[0].path.value: 'foo' must start with '/'");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{path: {type: Prefix}}]\n", 14,
                 "unknown type 'Prefix' (use Exact, PathPrefix or RegularExpression)");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n"
                     "    matches: [{path: {type: RegularExpression, value: \"/(a\"}}]\n",
                 14, "invalid regular expression '/(a'");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{method: FETCH}]\n", 14,
                 "unknown method 'FETCH'");
    expect_error(SVC "---\n" ROUTE_HEAD
                     "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{headers: [{name: \"a b\", value: x}]}]\n",
                 14, "'a b' is not a valid header name");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{headers: [{name: a}]}]\n", 14,
                 "headers[0].value: is required");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{query: {a: b}}]\n", 14,
                 "unknown field 'query'");
    expect_error(SVC "---\napiVersion: remora.dev/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  parentRefs: [{name: echo}]\n"
                     "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{method: {type: Exact}}]\n",
                 14, "give a service, a method, or both");
    expect_error(SVC "---\napiVersion: remora.dev/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  parentRefs: [{name: echo}]\n"
                     "  rules:\n  - backendRefs: [{name: echo}]\n    matches: [{method: {service: \"a/b\"}}]\n",
                 14, "'a/b' is not a gRPC service name");
    /* YAML itself */
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a\n", 4, "YAML syntax error");
    assert_int_equal(mismatches, 0);
}

static void
test_references(void **state)
{
    /* a route may refer to a Service defined later in the same batch */
    rm_batch_t b;
    parse(&b, ROUTE_HEAD "  rules: [{backendRefs: [{name: echo}]}]\n---\n" SVC);
    assert_int_equal(b.errors.size, 0);
    rm_batch_dispose(&b);

    expect_error(SVC2 "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo-v2}]\n", 10,
                 "httproute/r: spec.parentRefs[0]: Service 'echo' does not exist in namespace 'default'");
    /* references default to the route's namespace */
    expect_error(SVC "---\napiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: other}\nspec:\n"
                     "  parentRefs: [{name: echo, namespace: default}]\n  rules:\n  - backendRefs:\n    - name: echo\n",
                 14, "Service 'echo' does not exist in namespace 'other'");
    expect_error(SVC "---\n" SVC, 7, "service/echo (namespace default) is defined twice; first at t.yaml:1");
    assert_int_equal(mismatches, 0);

    /* errors of several documents are all reported, in line order */
    rm_batch_init(&b);
    const char *yaml = ROUTE_HEAD "  rules: [{backendRefs: [{name: nope}]}]\n---\n"
                                  "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: x}\n";
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    rm_batch_check(&b, NULL, NULL);
    assert_int_equal(b.errors.size, 3);
    assert_int_equal(b.errors.entries[0].line, 5);
    assert_int_equal(b.errors.entries[1].line, 6);
    assert_int_equal(b.errors.entries[2].line, 11);
    assert_non_null(strstr(b.errors.entries[2].message, "unknown protocol"));
    rm_batch_dispose(&b);
}

static int
exists_echo(void *ctx, rm_kind_t kind, const char *ns, const char *name)
{
    ++*(int *)ctx;
    return kind == RM_KIND_SERVICE && strcmp(ns, "default") == 0 && strcmp(name, "echo") == 0;
}

static void
test_references_to_store(void **state)
{
    int calls = 0;
    rm_batch_t b;
    rm_batch_init(&b);
    const char *yaml = ROUTE_HEAD "  rules: [{backendRefs: [{name: echo}]}]\n";
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    rm_batch_check(&b, exists_echo, &calls);
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(calls, 2);
    rm_batch_dispose(&b);
}

static void
test_empty_and_many_documents(void **state)
{
    rm_batch_t b;
    parse(&b, "");
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.num_documents, 0);
    rm_batch_dispose(&b);
    parse(&b, "---\n# only a comment\n---\n---\n" SVC "---\n");
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.num_documents, 1);
    assert_int_equal(b.resources.entries[0]->line, 5);
    rm_batch_dispose(&b);

    /* at most RM_DOC_ERRORS_MAX errors, then one that says so */
    size_t cap = 300 * 80, len = 0;
    char *big = malloc(cap);
    for (int i = 0; i != 300; ++i)
        len += (size_t)snprintf(big + len, cap - len, "apiVersion: remora.dev/v1\nkind: X\n---\n");
    rm_batch_init(&b);
    rm_batch_parse(&b, "t.yaml", big, len);
    assert_int_equal(b.errors.size, RM_DOC_ERRORS_MAX + 1);
    assert_non_null(strstr(b.errors.entries[RM_DOC_ERRORS_MAX].message, "too many errors"));
    rm_batch_dispose(&b);
    free(big);
}

static void
test_alias_bomb(void **state)
{
    /* 200 rules x 200 matches x 200 headers through aliases: a few KiB that would expand to 8 million headers */
    size_t cap = 16384, len = 0;
    char *y = malloc(cap);
    len += (size_t)snprintf(y + len, cap - len,
                            SVC "---\n" ROUTE_HEAD "  rules:\n  - &rule\n    backendRefs: [{name: echo}]\n"
                                "    matches: [&m {headers: [&h {name: a, value: b}");
    for (int i = 1; i != 200; ++i)
        len += (size_t)snprintf(y + len, cap - len, ", *h");
    len += (size_t)snprintf(y + len, cap - len, "]}");
    for (int i = 1; i != 200; ++i)
        len += (size_t)snprintf(y + len, cap - len, ", *m");
    len += (size_t)snprintf(y + len, cap - len, "]\n");
    for (int i = 1; i != 200; ++i)
        len += (size_t)snprintf(y + len, cap - len, "  - *rule\n");
    assert_true(len < cap);
    rm_batch_t b;
    parse(&b, y);
    assert_int_equal(b.errors.size, 1);
    assert_non_null(strstr(b.errors.entries[0].message, "document too large"));
    rm_batch_dispose(&b);
    free(y);
}

static void
test_durations(void **state)
{
    uint64_t ms;
    assert_int_equal(rm_document_parse_duration("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(rm_document_parse_duration("1h30m", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(rm_document_parse_duration("1s500ms", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(rm_document_parse_duration("0s", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(rm_document_parse_duration("", &ms), -1);
    assert_int_equal(rm_document_parse_duration("10", &ms), -1);
    assert_int_equal(rm_document_parse_duration("1.5s", &ms), -1);
    assert_int_equal(rm_document_parse_duration("100000s", &ms), -1);     /* at most 5 digits per part */
    assert_int_equal(rm_document_parse_duration("1h1m1s1ms1h", &ms), -1); /* at most 4 parts */
    assert_int_equal(rm_document_parse_duration("-1s", &ms), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_example),
        cmocka_unit_test(test_full_route),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_references_to_store),
        cmocka_unit_test(test_empty_and_many_documents),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
