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
#include "remora/v1/policy.pb-c.h"
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
    assert_true(svc->spec->meshed); /* the default: the endpoints run an agent (docs/transparent.md) */
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

/* Service spec.serviceAccount and the MeshTLS kind (docs/mesh-tls.md). */
static void
test_mesh_tls(void **state)
{
    rm_batch_t b;
    parse(&b, SVC "  serviceAccount: echo-sa\n");
    assert_int_equal(b.errors.size, 0);
    assert_string_equal(((const Remora__V1__Service *)b.resources.entries[0]->msg)->spec->service_account, "echo-sa");
    rm_batch_dispose(&b);
    /* "default" is the default: not stored */
    parse(&b, SVC "  serviceAccount: default\n");
    assert_int_equal(b.errors.size, 0);
    assert_string_equal(((const Remora__V1__Service *)b.resources.entries[0]->msg)->spec->service_account, "");
    rm_batch_dispose(&b);
    expect_error(SVC "  serviceAccount: Echo_SA\n", 6, "spec.serviceAccount: 'Echo_SA' is not a valid name");
    /* an endpoint whose workload runs as another service account */
    parse(&b,
          SVC "  serviceAccount: echo-sa\n  endpoints: [{address: \"10.0.0.1:80\", serviceAccount: canary-sa}, \"10.0.0.2:80\"]\n");
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__ServiceSpec *spec = ((const Remora__V1__Service *)b.resources.entries[0]->msg)->spec;
    assert_string_equal(spec->endpoints[0]->service_account, "canary-sa");
    assert_string_equal(spec->endpoints[1]->service_account, "");
    rm_batch_dispose(&b);
    expect_error(SVC "  endpoints: [{address: \"10.0.0.1:80\", serviceAccount: \"a b\"}]\n", 6,
                 "spec.endpoints[0].serviceAccount: 'a b' is not a valid name");

#define MTLS "apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {name: default, namespace: remora-system}\n"
    parse(&b, MTLS "spec: {mode: STRICT}\n");
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.resources.entries[0]->kind, RM_KIND_MESH_TLS);
    assert_int_equal(((const Remora__V1__MeshTLS *)b.resources.entries[0]->msg)->spec->mode,
                     REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_STRICT);
    rm_batch_dispose(&b);
    expect_error(MTLS "spec: {mode: strict}\n", 4, "spec.mode: 'strict' must be STRICT, PERMISSIVE or DISABLE");
    expect_error(MTLS "spec: {}\n", 4, "mode");
    expect_error("apiVersion: remora.dev/v1\nkind: MeshTLS\nmetadata: {name: default}\nspec:\n  mode: DISABLE\n", 5,
                 "MeshTLS is mesh-wide: put it in the root namespace remora-system");
#undef MTLS
    assert_int_equal(mismatches, 0);
}

static void
test_service_not_meshed(void **state)
{
    rm_batch_t b;
    parse(&b, SVC "  meshed: false\n");
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__Service *svc = (const void *)b.resources.entries[0]->msg;
    assert_false(svc->spec->meshed);
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
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: udp}\n", 4,
                 "unknown protocol 'udp' (use grpc, http2, http1 or tcp)");
    /* virtual addresses (docs/transparent.md) */
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  protocol: tcp\n"
                 "  addresses: [\"10.96.0.1:80\", \"10.96.0.1\"]\n",
                 6, "spec.addresses[1]: '10.96.0.1' has no port");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  protocol: tcp\n"
                 "  addresses: [\"0.0.0.0:80\"]\n",
                 6, "spec.addresses[0]: '0.0.0.0:80' is a wildcard, not a virtual address");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  protocol: tcp\n"
                 "  addresses: [\"10.96.0.1:80\", \"10.96.0.1:80\"]\n",
                 6, "spec.addresses[1]: '10.96.0.1:80' is listed twice");
    expect_error("apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  protocol: tcp\n"
                 "  addresses: [\"web.local:80\"]\n",
                 6, "spec.addresses[0]: 'web.local:80': 'web.local' is not an IP address");
    expect_error(
        "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {protocol: tcp, addresses: [\"10.96.0.1:80\"]}\n"
        "---\napiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: b}\n"
        "spec: {protocol: http1, addresses: [\"10.96.0.1:80\"]}\n",
        6, "service/b: spec.addresses: '10.96.0.1:80' is also an address of service/a");
    expect_error(SVC "  meshed: yes\n", 6, "spec.meshed: 'yes' must be true or false");
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

/* ------------------------------------------------------------------------------ request policy */

#define RULE SVC "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n"
#define GRULE                                                                                                                      \
    SVC "---\napiVersion: remora.dev/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  parentRefs: [{name: echo}]\n"              \
        "  rules:\n  - backendRefs: [{name: echo}]\n"
#define FI_HEAD "apiVersion: remora.dev/v1\nkind: FaultInjection\nmetadata: {name: chaos}\nspec:\n"
#define BTP_HEAD "apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: p}\nspec:\n"
#define RLP_HEAD "apiVersion: remora.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: l}\nspec:\n"

static void
test_policy_route(void **state)
{
    const char *yaml = SVC "---\n" SVC2 "---\n" FI_HEAD "  delay: {fixedDelay: 50ms, percent: 10}\n"
                           "  abort: {httpStatus: 503, percent: 5}\n"
                           "---\n" ROUTE_HEAD "  rules:\n"
                           "  - matches: [{path: {type: PathPrefix, value: /v1/}}]\n"
                           "    filters:\n"
                           "    - type: RequestHeaderModifier\n"
                           "      requestHeaderModifier:\n"
                           "        set: [{name: X-Env, value: prod}]\n"
                           "        add: [{name: x-via, value: remora}]\n"
                           "        remove: [X-Debug]\n"
                           "    - type: ResponseHeaderModifier\n"
                           "      responseHeaderModifier: {remove: [server]}\n"
                           "    - {type: RequestMirror, requestMirror: {backendRef: {name: echo-v2}, percent: 10}}\n"
                           "    - {type: RequestMirror, requestMirror: {backendRef: {name: echo}, fraction: {numerator: 1}}}\n"
                           "    - {type: URLRewrite, urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, "
                           "replacePrefixMatch: /v2/}}}\n"
                           "    - type: ExtensionRef\n"
                           "      extensionRef: {group: remora.dev, kind: FaultInjection, name: chaos}\n"
                           "    backendRefs: [{name: echo, weight: 90}, {name: echo-v2, weight: 10}]\n"
                           "    timeouts: {request: 10s, backendRequest: 2s}\n"
                           "    retry:\n"
                           "      attempts: 2\n"
                           "      backoff: 100ms\n"
                           "      codes: [502, 503, 504]\n"
                           "      conditions: [connect-failure, refused-stream, reset]\n"
                           "  - matches: [{path: {type: Exact, value: /old}}]\n"
                           "    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: new.example, port: "
                           "8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]\n"
                           "  - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, "
                           "replacePrefixMatch: \"\"}}}]\n";
    rm_batch_t b;
    parse(&b, yaml);
    for (size_t i = 0; i != b.errors.size; ++i)
        fprintf(stderr, "%s:%u: %s\n", b.errors.entries[i].file, b.errors.entries[i].line, b.errors.entries[i].message);
    assert_int_equal(b.errors.size, 0);
    assert_int_equal(b.resources.size, 4);

    rm_resource_t *r = b.resources.entries[2];
    assert_int_equal(r->kind, RM_KIND_FAULT_INJECTION);
    const Remora__V1__FaultInjection *fi = (const void *)r->msg;
    assert_int_equal(fi->spec->delay->fixed_delay->nanos, 50000000);
    assert_int_equal(fi->spec->delay->percent, 10);
    assert_int_equal(fi->spec->abort->status_case, REMORA__V1__FAULT_ABORT__STATUS_HTTP_STATUS);
    assert_int_equal(fi->spec->abort->http_status, 503);
    assert_int_equal(fi->spec->abort->percent, 5);

    const Remora__V1__HTTPRoute *route = (const void *)b.resources.entries[3]->msg;
    assert_int_equal(route->spec->n_rules, 3);
    const Remora__V1__HTTPRouteRule *rule = route->spec->rules[0];
    assert_int_equal(rule->n_filters, 6);
    const Remora__V1__HTTPHeaderFilter *h = rule->filters[0]->request_header_modifier;
    assert_int_equal(rule->filters[0]->filter_case, REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER);
    assert_string_equal(h->set_headers[0]->name, "x-env"); /* stored lower-case */
    assert_string_equal(h->set_headers[0]->value, "prod");
    assert_string_equal(h->add_headers[0]->name, "x-via");
    assert_string_equal(h->remove_headers[0], "x-debug");
    assert_int_equal(rule->filters[1]->filter_case, REMORA__V1__HTTPROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER);
    assert_string_equal(rule->filters[1]->response_header_modifier->remove_headers[0], "server");
    const Remora__V1__HTTPRequestMirrorFilter *m = rule->filters[2]->request_mirror;
    assert_string_equal(m->backend_ref->name, "echo-v2");
    assert_string_equal(m->backend_ref->namespace_, "default");
    assert_int_equal(m->share_case, REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT);
    assert_int_equal(m->percent, 10);
    m = rule->filters[3]->request_mirror;
    assert_int_equal(m->share_case, REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_FRACTION);
    assert_int_equal(m->fraction->numerator, 1);
    assert_int_equal(m->fraction->denominator, 100); /* the Gateway API's default */
    const Remora__V1__HTTPURLRewriteFilter *rw = rule->filters[4]->url_rewrite;
    assert_string_equal(rw->hostname, "api.internal");
    assert_int_equal(rw->path->modifier_case, REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH);
    assert_string_equal(rw->path->replace_prefix_match, "/v2/");
    const Remora__V1__LocalObjectReference *ext = rule->filters[5]->extension_ref;
    assert_string_equal(ext->group, "remora.dev");
    assert_string_equal(ext->kind, "FaultInjection");
    assert_string_equal(ext->name, "chaos");
    assert_int_equal(rule->timeouts->request->seconds, 10);
    assert_int_equal(rule->timeouts->backend_request->seconds, 2);
    assert_int_equal(rule->retry->attempts, 2);
    assert_int_equal(rule->retry->backoff->nanos, 100000000);
    assert_int_equal(rule->retry->n_codes, 3);
    assert_int_equal(rule->retry->codes[2], 504);
    assert_int_equal(rule->retry->n_conditions, 3);
    assert_int_equal(rule->retry->conditions[2], REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_RESET);

    rule = route->spec->rules[1];
    assert_int_equal(rule->n_backend_refs, 0); /* a redirect needs no backend */
    const Remora__V1__HTTPRequestRedirectFilter *rd = rule->filters[0]->request_redirect;
    assert_string_equal(rd->scheme, "https");
    assert_string_equal(rd->hostname, "new.example");
    assert_int_equal(rd->port, 8443);
    assert_int_equal(rd->status_code, 301);
    assert_string_equal(rd->path->replace_full_path, "/new");
    rule = route->spec->rules[2];
    rd = rule->filters[0]->request_redirect;
    assert_int_equal(rd->status_code, 302); /* the default */
    assert_int_equal(rd->path->modifier_case, REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH);
    assert_string_equal(rd->path->replace_prefix_match, "");
    rm_batch_dispose(&b);
}

static void
test_policy_defaults(void **state)
{
    rm_batch_t b;
    parse(&b, RULE "    retry: {}\n"
                   "    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: echo}}}]\n");
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__HTTPRouteRule *rule = ((const Remora__V1__HTTPRoute *)b.resources.entries[1]->msg)->spec->rules[0];
    assert_int_equal(rule->retry->attempts, 1);
    assert_int_equal(rule->retry->backoff->nanos, 25000000);
    assert_int_equal(rule->retry->n_codes, 1);
    assert_int_equal(rule->retry->codes[0], 503);
    assert_int_equal(rule->retry->n_conditions, 2);
    assert_int_equal(rule->retry->conditions[0], REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE);
    assert_int_equal(rule->retry->conditions[1], REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_REFUSED_STREAM);
    assert_int_equal(rule->filters[0]->request_mirror->share_case, REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT);
    assert_int_equal(rule->filters[0]->request_mirror->percent, 100);
    rm_batch_dispose(&b);

    /* explicit empty lists stay empty: nothing but attempts is retried */
    parse(&b, RULE "    retry: {attempts: 0, codes: [], conditions: []}\n");
    assert_int_equal(b.errors.size, 0);
    rule = ((const Remora__V1__HTTPRoute *)b.resources.entries[1]->msg)->spec->rules[0];
    assert_int_equal(rule->retry->attempts, 0);
    assert_int_equal(rule->retry->n_codes, 0);
    assert_int_equal(rule->retry->n_conditions, 0);
    rm_batch_dispose(&b);

    /* GRPCRoute: gRPC status names, default UNAVAILABLE */
    parse(&b, GRULE "    retry: {attempts: 3, codes: [UNAVAILABLE, cancelled, RESOURCE_EXHAUSTED]}\n"
                    "  - backendRefs: [{name: echo}]\n    retry: {}\n"
                    "    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-a, value: b}]}}]\n");
    for (size_t i = 0; i != b.errors.size; ++i)
        fprintf(stderr, "%s:%u: %s\n", b.errors.entries[i].file, b.errors.entries[i].line, b.errors.entries[i].message);
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__GRPCRouteSpec *gs = ((const Remora__V1__GRPCRoute *)b.resources.entries[1]->msg)->spec;
    assert_int_equal(gs->rules[0]->retry->n_codes, 3);
    assert_int_equal(gs->rules[0]->retry->codes[0], REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE);
    assert_int_equal(gs->rules[0]->retry->codes[1], REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_CANCELLED);
    assert_int_equal(gs->rules[1]->retry->n_codes, 1);
    assert_int_equal(gs->rules[1]->retry->codes[0], REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE);
    assert_int_equal(gs->rules[1]->filters[0]->filter_case, REMORA__V1__GRPCROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER);
    rm_batch_dispose(&b);

    /* FaultInjection: percent 100 by default; a gRPC abort */
    parse(&b, FI_HEAD "  abort: {grpcStatus: UNAVAILABLE}\n");
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__FaultInjectionSpec *fs = ((const Remora__V1__FaultInjection *)b.resources.entries[0]->msg)->spec;
    assert_null(fs->delay);
    assert_int_equal(fs->abort->status_case, REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS);
    assert_int_equal(fs->abort->grpc_status, REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE);
    assert_int_equal(fs->abort->percent, 100);
    rm_batch_dispose(&b);

    /* BackendTrafficPolicy: GEP-3388's defaults inside a given retryConstraint; connectionPool fields as given */
    parse(&b, SVC "---\n" BTP_HEAD "  targetRefs: [{kind: Service, name: echo}]\n"
                  "  retryConstraint: {budget: {percent: 30}}\n"
                  "  connectionPool: {connectTimeout: 1s, idleTimeout: 60s, streamIdleTimeout: 5m}\n");
    assert_int_equal(b.errors.size, 0);
    rm_resource_t *r = b.resources.entries[1];
    assert_int_equal(r->kind, RM_KIND_BACKEND_TRAFFIC_POLICY);
    const Remora__V1__BackendTrafficPolicySpec *ps = ((const Remora__V1__BackendTrafficPolicy *)r->msg)->spec;
    assert_int_equal(ps->n_target_refs, 1);
    assert_string_equal(ps->target_refs[0]->kind, "Service");
    assert_string_equal(ps->target_refs[0]->name, "echo");
    assert_int_equal(ps->retry_constraint->budget->percent, 30);
    assert_int_equal(ps->retry_constraint->budget->interval->seconds, 10);
    assert_int_equal(ps->retry_constraint->min_retry_rate->count, 10);
    assert_int_equal(ps->retry_constraint->min_retry_rate->interval->seconds, 1);
    assert_int_equal(ps->connection_pool->connect_timeout->seconds, 1);
    assert_int_equal(ps->connection_pool->idle_timeout->seconds, 60);
    assert_int_equal(ps->connection_pool->stream_idle_timeout->seconds, 300);
    rm_batch_dispose(&b);
    parse(&b, SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  connectionPool: {streamIdleTimeout: 0s}\n");
    assert_int_equal(b.errors.size, 0);
    ps = ((const Remora__V1__BackendTrafficPolicy *)b.resources.entries[1]->msg)->spec;
    assert_null(ps->retry_constraint);
    assert_null(ps->connection_pool->connect_timeout);
    assert_non_null(ps->connection_pool->stream_idle_timeout);
    rm_batch_dispose(&b);

    rm_kind_t k;
    assert_int_equal(rm_kind_parse("FaultInjections", &k), 0);
    assert_int_equal(k, RM_KIND_FAULT_INJECTION);
    assert_int_equal(rm_kind_parse("btp", &k), 0);
    assert_int_equal(k, RM_KIND_BACKEND_TRAFFIC_POLICY);
    assert_int_equal(rm_kind_parse("backendtrafficpolicies", &k), 0);
}

#define FILTER(f) RULE "    filters: [" f "]\n"

static void
test_policy_errors(void **state)
{
    /* retry (line 14) */
    expect_error(RULE "    retry: {attempts: -1}\n", 14, "httproute/r: spec.rules[0].retry.attempts: must not be negative, got -1");
    expect_error(RULE "    retry: {attempts: 11}\n", 14, "retry.attempts: must be from 0 to 10, got 11");
    expect_error(RULE "    retry: {codes: [200]}\n", 14, "retry.codes[0]: must be from 400 to 599, got 200");
    expect_error(RULE "    retry: {codes: [503, 503]}\n", 14, "retry.codes[1]: 503 is listed twice");
    expect_error(RULE "    retry: {codes: 503}\n", 14, "retry.codes: must be a list");
    expect_error(RULE "    retry: {conditions: [timeout]}\n", 14,
                 "unknown condition 'timeout' (use connect-failure, refused-stream or reset)");
    expect_error(RULE "    retry: {backoff: 0s}\n", 14, "retry.backoff: must be from 1ms to 1m, got 0s");
    expect_error(RULE "    retry: {backoff: 2m}\n", 14, "retry.backoff: must be from 1ms to 1m, got 2m");
    expect_error(RULE "    retry: {attempt: 2}\n", 14, "unknown field 'attempt' (did you mean 'attempts'?)");
    expect_error(GRULE "    retry: {codes: [NOPE]}\n", 14,
                 "grpcroute/g: spec.rules[0].retry.codes[0]: 'NOPE' is not a gRPC status name");
    expect_error(GRULE "    retry: {codes: [503]}\n", 14, "'503' is not a gRPC status name");
    /* sessionPersistence (GEP-1619; line 14) */
    expect_error(RULE "    sessionPersistence: {type: Cookie}\n", 14,
                 "spec.rules[0].sessionPersistence.sessionName: is required: Remora does not make up a Cookie name");
    expect_error(RULE "    sessionPersistence: {type: Query, sessionName: a}\n", 14,
                 "spec.rules[0].sessionPersistence.type: Unsupported value: \"Query\": supported values: \"Cookie\", \"Header\"");
    expect_error(RULE "    sessionPersistence: {type: Header, sessionName: \"x user\"}\n", 14,
                 "spec.rules[0].sessionPersistence.sessionName: 'x user' is not a valid Header name");
    expect_error(RULE "    sessionPersistence: {sessionName: s, idleTimeout: 1h}\n", 14,
                 "spec.rules[0].sessionPersistence.idleTimeout: is not supported yet by this version of Remora");
    expect_error(GRULE "    sessionPersistence: {type: Header}\n", 14,
                 "grpcroute/g: spec.rules[0].sessionPersistence.sessionName: is required");

    /* filters (line 14) */
    expect_error(FILTER("{type: Foo}"), 14, "unknown filter type 'Foo' (use RequestHeaderModifier");
    expect_error(FILTER("{requestHeaderModifier: {}}"), 14, "filters[0].type: is required");
    expect_error(FILTER("{type: RequestHeaderModifier}"), 14,
                 "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {}, responseHeaderModifier: {}}"), 14,
                 "filter.responseHeaderModifier must be nil if the filter.type is not ResponseHeaderModifier");
    expect_error(FILTER("{type: CORS}"), 14, "filter type 'CORS' is not supported yet");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: \"1\"}], remove: [x-a]}}"),
                 14, "header 'x-a' is already modified on line 14: only one action (set, add or remove) per header name");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [Connection]}}"), 14,
                 "'Connection' cannot be modified");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: host, value: a}]}}"), 14,
                 "'host' can only be set");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: \"a:b\", value: x}]}}"), 14,
                 "'a:b' is not a valid header name");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: \"\"}]}}"), 14,
                 "value: must be 1 to 4096 characters");
    expect_error(FILTER("{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: RequestHeaderModifier, "
                        "requestHeaderModifier: {}}"),
                 14, "spec.rules[0].filters: RequestHeaderModifier filter cannot be repeated");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: echo}, percent: 101}}"), 14,
                 "requestMirror.percent: must be from 0 to 100, got 101");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: echo}, percent: 1, fraction: {numerator: 1}}}"),
                 14, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: echo}, fraction: {numerator: 3, "
                        "denominator: 2}}}"),
                 14, "numerator must be less than or equal to denominator");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: echo}, fraction: {numerator: 1, "
                        "denominator: 0}}}"),
                 14, "denominator: must be from 1 to 1000000, got 0");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {percent: 5}}"), 14, "requestMirror.backendRef: is required");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: echo, weight: 1}}}"), 14,
                 "unknown field 'weight'");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {}}"), 14, "urlRewrite: give a hostname, a path, or both");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {hostname: Bad_Host}}"), 14, "'Bad_Host' is not a valid hostname");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}"), 14,
                 "replaceFullPath must be specified when type is set to 'ReplaceFullPath'");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /a}}}"), 14,
                 "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: a}}}"), 14,
                 "replaceFullPath: 'a' must start with '/'");
    expect_error(FILTER("{type: URLRewrite, urlRewrite: {path: {type: Replace, replaceFullPath: /a}}}"), 14,
                 "unknown type 'Replace' (use ReplaceFullPath or ReplacePrefixMatch)");
    expect_error(FILTER("{type: RequestRedirect, requestRedirect: {statusCode: 301}}"), 13,
                 "spec.rules[0].backendRefs: RequestRedirect filter must not be used together with backendRefs");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]\n",
                 13, "requestRedirect.statusCode: unsupported value 304 (use 301, 302, 303, 307 or 308)");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]\n", 13,
                 "requestRedirect.scheme: unsupported value 'ftp' (use http or https)");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {port: 0}}]\n", 13,
                 "requestRedirect.port: must be from 1 to 65535, got 0");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, "
                     "urlRewrite: {hostname: a}}]\n",
                 13, "may specify either RequestRedirect or URLRewrite, but not both");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - matches: [{path: {type: Exact, value: /a}}]\n"
                     "    filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
                     "replacePrefixMatch: /b}}}\n    backendRefs: [{name: echo}]\n",
                 15, "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
    expect_error(SVC "---\n" ROUTE_HEAD "  rules:\n  - matches: [{path: {value: /a}}, {path: {value: /b}}]\n"
                     "    filters:\n    - {type: RequestRedirect, requestRedirect: {path: {type: "
                     "ReplacePrefixMatch, replacePrefixMatch: /b}}}\n",
                 15, "When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match");
    expect_error(FILTER("{type: ExtensionRef, extensionRef: {group: example.com, kind: FaultInjection, name: x}}"), 14,
                 "group 'example.com' is not supported: an extensionRef names a Remora resource (group remora.dev)");
    expect_error(FILTER("{type: ExtensionRef, extensionRef: {kind: RateLimit, name: x}}"), 14,
                 "kind 'RateLimit' is not supported: an extensionRef names a FaultInjection");
    expect_error(FILTER("{type: ExtensionRef, extensionRef: {name: a}}, {type: ExtensionRef, extensionRef: {name: b}}"), 14,
                 "at most one ExtensionRef (FaultInjection) per rule");
    expect_error(GRULE "    filters: [{type: RequestRedirect, requestRedirect: {}}]\n", 14,
                 "filter type 'RequestRedirect' is not supported in a GRPCRoute");
    expect_error(GRULE "    filters: [{type: URLRewrite, urlRewrite: {hostname: a}}]\n", 14,
                 "filter type 'URLRewrite' is not supported in a GRPCRoute");

    /* FaultInjection (the spec starts on line 5) */
    expect_error(FI_HEAD "  delay: {percent: 10}\n", 5, "faultinjection/chaos: spec.delay.fixedDelay: is required");
    expect_error("apiVersion: remora.dev/v1\nkind: FaultInjection\nmetadata: {name: chaos}\nspec: {}\n", 4,
                 "spec: give a delay, an abort, or both");
    expect_error(FI_HEAD "  delay: {fixedDelay: 0s}\n", 5, "spec.delay.fixedDelay: must be from 1ms to 1h, got 0s");
    expect_error(FI_HEAD "  delay: {fixedDelay: 1s, percent: 101}\n", 5, "spec.delay.percent: must be from 0 to 100, got 101");
    expect_error(FI_HEAD "  abort: {percent: 5}\n", 5, "spec.abort: give exactly one of httpStatus or grpcStatus");
    expect_error(FI_HEAD "  abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}\n", 5,
                 "give exactly one of httpStatus or grpcStatus");
    expect_error(FI_HEAD "  abort: {httpStatus: 600}\n", 5, "spec.abort.httpStatus: must be from 200 to 599, got 600");
    expect_error(FI_HEAD "  abort: {grpcStatus: OK}\n", 5, "OK is not an error status");
    expect_error(FI_HEAD "  abort: {grpcStatus: UNAVAILABLE, percent: -5}\n", 5, "spec.abort.percent: must not be negative");
    expect_error(FI_HEAD "  dealy: {fixedDelay: 1s}\n", 5, "unknown field 'dealy' (did you mean 'delay'?)");

    /* BackendTrafficPolicy (the spec starts on line 11, after SVC and "---") */
    expect_error(SVC "---\n" BTP_HEAD "  retryConstraint: {}\n", 11, "backendtrafficpolicy/p: spec.targetRefs: is required");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: []\n", 11, "spec.targetRefs: needs at least one Service");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  healthCheck: {interval: 5s}\n", 12,
                 "spec.healthCheck: needs exactly one of http: {path: ...} and grpc: {service: ...}");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  healthCheck:\n    http: {path: healthz}\n", 13,
                 "spec.healthCheck.http.path: must start with '/', got \"healthz\"");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  healthCheck:\n    grpc: {}\n    interval: 50ms\n", 14,
                 "spec.healthCheck.interval: must be from 100ms to 1h, got 50ms");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  healthCheck:\n    grpc: {}\n    interval: 1s\n"
                     "    timeout: 1s\n",
                 15, "spec.healthCheck.timeout: timeout (1000ms) must be shorter than interval (1000ms)");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  healthCheck:\n    grpc: {}\n"
                     "    healthyThreshold: 0\n",
                 14, "spec.healthCheck.healthyThreshold: must be from 1 to 1000000, got 0");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  sessionPersistence: {}\n", 12,
                 "spec.sessionPersistence: is set on a route rule in Remora");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  loadBalancer: {type: Random}\n", 12,
                 "spec.loadBalancer.type: Unsupported value: \"Random\"");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  loadBalancer: {}\n", 12,
                 "spec.loadBalancer.type: is required");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  loadBalancer:\n    type: PeakEWMA\n"
                     "    ringHash: {minimumRingSize: 10}\n",
                 14, "spec.loadBalancer.ringHash: is only allowed with type RingHash, got PeakEWMA");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  loadBalancer:\n    type: RingHash\n"
                     "    ringHash: {minimumRingSize: 0}\n",
                 14, "spec.loadBalancer.ringHash.minimumRingSize: must be from 1 to 8388608, got 0");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  outlierDetection: {maxEjectionPercent: 101}\n", 12,
                 "spec.outlierDetection.maxEjectionPercent: must be from 0 to 100, got 101");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  outlierDetection:\n    baseEjectionTime: 60s\n"
                     "    maxEjectionTime: 10s\n",
                 14, "spec.outlierDetection.maxEjectionTime: maxEjectionTime (10000ms) must not be shorter than baseEjectionTime");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  outlierDetection:\n    consecutive5xxErrors: 0\n"
                     "    consecutiveGatewayErrors: 0\n",
                 13, "spec.outlierDetection: consecutive5xxErrors and consecutiveGatewayErrors are both 0");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  outlierDetection: {interval: 0s}\n", 12,
                 "spec.outlierDetection.interval: must be from 1ms to 1h, got 0s");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  outlierDetection: {consecutive5xx: 3}\n", 12,
                 "unknown field 'consecutive5xx' (known: consecutive5xxErrors");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  connectionPool: {maxConnections: 0}\n", 12,
                 "spec.connectionPool.maxConnections: must be from 1 to 1000000, got 0");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  connectionPool: {maxRetries: -1}\n", 12,
                 "spec.connectionPool.maxRetries: must not be negative");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{kind: HTTPRoute, name: r}]\n", 11,
                 "kind 'HTTPRoute' is not supported: a target is a Service");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  rateLimit: {}\n", 12, "unknown field 'rateLimit'");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{kind: Pod, name: echo}]\n", 11, "kind 'Pod' is not supported");

    /* RateLimitPolicy (the spec starts on line 11, after SVC and "---") */
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n", 11,
                 "ratelimitpolicy/l: spec: needs at least one of 'total' and 'perClient'");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  total: {requestsPerSecond: 0}\n", 12,
                 "spec.total.requestsPerSecond: must be from 1 to 10000000, got 0");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  total: {burst: 5}\n", 12,
                 "spec.total.requestsPerSecond: is required");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5, burst: -1}\n", 12,
                 "spec.perClient.burst: must not be negative");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5}\n"
                     "  clientKey: {type: Header}\n",
                 13, "spec.clientKey.header: is required with type Header");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5}\n"
                     "  clientKey: {type: Cookie}\n",
                 13, "spec.clientKey.type: Unsupported value: \"Cookie\"");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5}\n"
                     "  clientKey: {type: SourceAddress, header: x-id}\n",
                 13, "spec.clientKey.header: is only allowed with type Header, got SourceAddress");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  total: {requestsPerSecond: 5}\n"
                     "  overrides: [{requestsPerSecond: 9, clients: [a]}]\n",
                 13, "spec.overrides: override per-client limits: they need 'perClient'");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5}\n"
                     "  overrides: [{requestsPerSecond: 9, clients: []}]\n",
                 13, "spec.overrides[0].clients: needs at least one client");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  perClient: {requestsPerSecond: 5}\n"
                     "  overrides: [{clients: [a]}]\n",
                 13, "spec.overrides[0].requestsPerSecond: is required");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{kind: Pod, name: echo}]\n  total: {requestsPerSecond: 5}\n", 11,
                 "kind 'Pod' is not supported: a target is a Service, HTTPRoute or GRPCRoute");
    expect_error(SVC "---\n" RLP_HEAD "  targetRefs: [{group: example.com, kind: HTTPRoute, name: r}]\n"
                     "  total: {requestsPerSecond: 5}\n",
                 11, "group 'example.com' is not supported for kind HTTPRoute (use \"gateway.networking.k8s.io\")");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo, namespace: other}]\n", 11,
                 "targetRefs[0].namespace: targetRefs are local: the Service must be in the policy's namespace (default)");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}, {name: echo}]\n", 11, "Service 'echo' is listed twice");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  retryConstraint: {budget: {percent: 101}}\n", 12,
                 "spec.retryConstraint.budget.percent: must be from 0 to 100, got 101");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  retryConstraint: {budget: {interval: 500ms}}\n", 12,
                 "budget.interval: interval can not be greater than one hour or less than one second, got 500ms");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  retryConstraint: {minRetryRate: {interval: 2h}}\n", 12,
                 "minRetryRate.interval: interval can not be greater than one hour or less than one second");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  connectionPool: {connectTimeout: 0s}\n", 12,
                 "spec.connectionPool.connectTimeout: must be from 1ms to 1h, got 0s");
    expect_error(SVC "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n  connectionPool: {idleTimeout: 0s}\n", 12,
                 "spec.connectionPool.idleTimeout: must be from 1ms to 24h");
    assert_int_equal(mismatches, 0);
}

static void
test_policy_references(void **state)
{
    /* a FaultInjection and a route that names it, in either order */
    rm_batch_t b;
    parse(&b, RULE "    filters: [{type: ExtensionRef, extensionRef: {name: chaos}}]\n---\n" FI_HEAD "  delay: {fixedDelay: 1s}\n");
    assert_int_equal(b.errors.size, 0);
    rm_batch_dispose(&b);

    expect_error(
        RULE "    filters: [{type: ExtensionRef, extensionRef: {name: chaos}}]\n", 14,
        "httproute/r: spec.rules[0].filters[0].extensionRef: FaultInjection 'chaos' does not exist in namespace 'default'");
    /* the FaultInjection is looked up in the route's namespace */
    expect_error(SVC
                 "---\n" FI_HEAD "  delay: {fixedDelay: 1s}\n---\n"
                 "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: other}\nspec:\n"
                 "  parentRefs: [{name: echo, namespace: default}]\n  rules:\n  - backendRefs: [{name: echo, namespace: default}]\n"
                 "    filters: [{type: ExtensionRef, extensionRef: {name: chaos}}]\n",
                 20, "FaultInjection 'chaos' does not exist in namespace 'other'");
    expect_error(FILTER("{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}"), 14,
                 "spec.rules[0].filters[0].requestMirror.backendRef: Service 'shadow' does not exist in namespace 'default'");
    expect_error(BTP_HEAD "  targetRefs: [{name: nope}]\n", 5,
                 "backendtrafficpolicy/p: spec.targetRefs[0]: Service 'nope' does not exist in namespace 'default'");
    expect_error(RLP_HEAD "  targetRefs: [{kind: HTTPRoute, name: nope}]\n  total: {requestsPerSecond: 5}\n", 5,
                 "ratelimitpolicy/l: spec.targetRefs[0]: HTTPRoute 'nope' does not exist in namespace 'default'");
    expect_error(RLP_HEAD "  targetRefs: [{group: gateway.networking.k8s.io, kind: GRPCRoute, name: g}]\n"
                          "  total: {requestsPerSecond: 5}\n",
                 5, "ratelimitpolicy/l: spec.targetRefs[0]: GRPCRoute 'g' does not exist in namespace 'default'");
    /* a route and a policy on it in one apply */
    rm_batch_t b2;
    parse(&b2, RULE "---\n" RLP_HEAD "  targetRefs: [{kind: HTTPRoute, name: r}, {name: echo}]\n  total: {requestsPerSecond: 5}\n");
    assert_int_equal(b2.errors.size, 0);
    rm_batch_dispose(&b2);
    assert_int_equal(mismatches, 0);
}

static void
test_backend_and_rate_limit_policies(void **state)
{
    rm_batch_t b;
    parse(&b,
          "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  protocol: http1\n"
          "  endpoints: [\"127.0.0.1:1\", {address: \"127.0.0.1:2\", weight: 3}, {dns: \"a.example:80\", weight: 1}]\n"
          "---\n" BTP_HEAD "  targetRefs: [{name: echo}]\n"
          "  loadBalancer: {type: RingHash}\n"
          "  connectionPool: {connectTimeout: 1s, maxConnections: 100, maxPendingRequests: 10, maxRequests: 50, maxRetries: 3}\n"
          "  outlierDetection: {consecutive5xxErrors: 3}\n"
          "  healthCheck: {http: {path: /healthz}, unhealthyThreshold: 5}\n"
          "---\n" ROUTE_HEAD "  rules:\n  - backendRefs: [{name: echo}]\n"
          "    sessionPersistence: {type: Header, sessionName: X-User}\n"
          "  - backendRefs: [{name: echo}]\n    sessionPersistence: {sessionName: sid}\n"
          "---\n" RLP_HEAD "  targetRefs: [{name: echo}, {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n"
          "  perClient: {requestsPerSecond: 20, burst: 40}\n  clientKey: {type: Header, header: X-Client-ID}\n"
          "  overrides: [{requestsPerSecond: 200, clients: [\"spiffe://remora.local/ns/default/sa/batch\", 10.0.0.7]}]\n");
    for (size_t i = 0; i != b.errors.size; ++i)
        fprintf(stderr, "%s:%u: %s\n", b.errors.entries[i].file, b.errors.entries[i].line, b.errors.entries[i].message);
    assert_int_equal(b.errors.size, 0);
    const Remora__V1__ServiceSpec *svc = ((const Remora__V1__Service *)b.resources.entries[0]->msg)->spec;
    assert_int_equal(svc->endpoints[0]->weight, 0);
    assert_int_equal(svc->endpoints[1]->weight, 3);
    assert_int_equal(svc->endpoints[2]->weight, 0);
    const Remora__V1__BackendTrafficPolicySpec *btp = ((const Remora__V1__BackendTrafficPolicy *)b.resources.entries[1]->msg)->spec;
    assert_int_equal(btp->load_balancer->type, REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH);
    assert_int_equal(btp->load_balancer->minimum_ring_size, 1024);
    assert_int_equal(btp->connection_pool->max_connections, 100);
    assert_int_equal(btp->connection_pool->max_pending_requests, 10);
    assert_int_equal(btp->connection_pool->max_requests, 50);
    assert_int_equal(btp->connection_pool->max_retries, 3);
    /* Envoy's defaults for what the document leaves out */
    const Remora__V1__OutlierDetection *od = btp->outlier_detection;
    assert_int_equal(od->consecutive_5xx_errors, 3);
    assert_int_equal(od->consecutive_gateway_errors, 5);
    assert_int_equal(od->interval->seconds, 10);
    assert_int_equal(od->base_ejection_time->seconds, 30);
    assert_int_equal(od->max_ejection_time->seconds, 300);
    assert_int_equal(od->max_ejection_percent, 50);
    const Remora__V1__HealthCheck *hc = btp->health_check;
    assert_string_equal(hc->http->path, "/healthz");
    assert_null(hc->grpc);
    assert_int_equal(hc->interval->seconds, 5);
    assert_int_equal(hc->timeout->seconds, 1);
    assert_int_equal(hc->healthy_threshold, 2);
    assert_int_equal(hc->unhealthy_threshold, 5);
    const Remora__V1__HTTPRouteSpec *route = ((const Remora__V1__HTTPRoute *)b.resources.entries[2]->msg)->spec;
    assert_int_equal(route->rules[0]->session_persistence->type,
                     REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER);
    assert_string_equal(route->rules[0]->session_persistence->session_name, "x-user");
    /* the Gateway API's default type, Cookie; cookie names keep their case */
    assert_int_equal(route->rules[1]->session_persistence->type,
                     REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_COOKIE);
    assert_string_equal(route->rules[1]->session_persistence->session_name, "sid");
    const Remora__V1__RateLimitPolicySpec *rlp = ((const Remora__V1__RateLimitPolicy *)b.resources.entries[3]->msg)->spec;
    assert_int_equal(b.resources.entries[3]->kind, RM_KIND_RATE_LIMIT_POLICY);
    assert_int_equal(rlp->n_target_refs, 2);
    assert_string_equal(rlp->target_refs[0]->kind, "Service");
    assert_string_equal(rlp->target_refs[0]->group, "");
    assert_string_equal(rlp->target_refs[1]->kind, "HTTPRoute");
    assert_string_equal(rlp->target_refs[1]->group, "gateway.networking.k8s.io");
    assert_null(rlp->total);
    assert_int_equal(rlp->per_client->requests_per_second, 20);
    assert_int_equal(rlp->per_client->burst, 40);
    assert_int_equal(rlp->client_key->type, REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER);
    assert_string_equal(rlp->client_key->header, "x-client-id");
    assert_int_equal(rlp->n_overrides, 1);
    assert_int_equal(rlp->overrides[0]->n_clients, 2);
    assert_string_equal(rlp->overrides[0]->clients[1], "10.0.0.7");
    rm_batch_dispose(&b);

    /* the kind by its short name, and an empty clientKey: Identity */
    rm_kind_t k;
    assert_int_equal(rm_kind_parse("rlp", &k), 0);
    assert_int_equal(k, RM_KIND_RATE_LIMIT_POLICY);
    parse(&b, SVC "---\n" RLP_HEAD "  targetRefs: [{name: echo}]\n  total: {requestsPerSecond: 5}\n");
    assert_int_equal(b.errors.size, 0);
    rlp = ((const Remora__V1__RateLimitPolicy *)b.resources.entries[1]->msg)->spec;
    assert_int_equal(rlp->client_key->type, REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_IDENTITY);
    assert_int_equal(rlp->total->burst, 0);
    rm_batch_dispose(&b);
}

static void
test_regex_dialect(void **state)
{
    /* PCRE2, the agent's engine: Perl classes, lazy quantifiers and inline flags are fine; an invalid pattern gets PCRE2's
     * reason */
    rm_batch_t b;
    parse(&b, RULE "    matches: [{path: {type: RegularExpression, value: \"/v\\\\d+/.*?\"}, headers: [{type: RegularExpression, "
                   "name: x-id, value: \"(?i)^abc\"}]}]\n");
    assert_int_equal(b.errors.size, 0);
    rm_batch_dispose(&b);
    expect_error(RULE "    matches: [{path: {type: RegularExpression, value: \"/a[[:alpha:]\"}}]\n", 14, "(PCRE2 syntax)");
    assert_int_equal(mismatches, 0);
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
        cmocka_unit_test(test_policy_route),
        cmocka_unit_test(test_policy_defaults),
        cmocka_unit_test(test_policy_errors),
        cmocka_unit_test(test_policy_references),
        cmocka_unit_test(test_backend_and_rate_limit_policies),
        cmocka_unit_test(test_regex_dialect),
        cmocka_unit_test(test_service_not_meshed),
        cmocka_unit_test(test_mesh_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
