/*
 * Control-plane snapshots -> the agent's config (agent/src/config/translate.c): snapshots are built
 * by hand as protobuf-c messages, packed, translated onto a bootstrap with two listeners, and the
 * config fields are checked on both (the listeners share one list of routes). What the agent
 * cannot apply must be refused with a reason that names the resource.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "config/config.h"
#include "config/translate.h"
#include "remora/v1/discovery.pb-c.h"

static const char base_yaml[] = "listeners:\n"
                                "  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
                                "  - {name: b, address: \"127.0.0.1:15002\", routes: [{cluster: c}]}\n"
                                "clusters:\n"
                                "  - {name: c, endpoints: \"127.0.0.1:1\"}\n";

static rm_config_t *base;

static int
setup(void **state)
{
    rm_config_error_t err;
    base = rm_config_load_string(base_yaml, strlen(base_yaml), "base.yaml", &err);
    if (base == NULL)
        fprintf(stderr, "%s:%u: %s\n", err.file, err.line, err.message);
    return base != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    rm_config_unref(base);
    return 0;
}

/* --------------------------------------------------------------------------- building snapshots */

/* Everything a test snapshot points to lives in one arena, freed after the translation. */
typedef struct st_arena_t {
    void *blocks[8192];
    size_t n;
} arena_t;

static arena_t arena;

static void *
alloc(size_t sz)
{
    assert_true(arena.n < sizeof(arena.blocks) / sizeof(arena.blocks[0]));
    return arena.blocks[arena.n++] = calloc(1, sz);
}

static void
arena_free(void)
{
    for (size_t i = 0; i != arena.n; ++i)
        free(arena.blocks[i]);
    arena.n = 0;
}

#define NEW(type, init) ((type *)init_msg(alloc(sizeof(type)), (void (*)(void *))init))

static void *
init_msg(void *p, void (*init)(void *))
{
    init(p);
    return p;
}

/* a NULL-terminated list of pointers into an arena array; returns the count through *n */
static void **
list(size_t *n, ...)
{
    void **items = alloc(sizeof(void *) * 32);
    va_list ap;
    va_start(ap, n);
    size_t i = 0;
    for (void *p; (p = va_arg(ap, void *)) != NULL;)
        items[i++] = p;
    va_end(ap);
    *n = i;
    return items;
}

static Remora__V1__ObjectMeta *
meta(const char *name)
{
    Remora__V1__ObjectMeta *m = NEW(Remora__V1__ObjectMeta, remora__v1__object_meta__init);
    m->name = (char *)name;
    m->namespace_ = "default";
    return m;
}

static Remora__V1__Duration *
dur(int64_t ms)
{
    Remora__V1__Duration *d = NEW(Remora__V1__Duration, remora__v1__duration__init);
    d->seconds = ms / 1000;
    d->nanos = (int32_t)(ms % 1000) * 1000000;
    return d;
}

static Remora__V1__Service *
service(const char *name, const char *address)
{
    Remora__V1__Service *s = NEW(Remora__V1__Service, remora__v1__service__init);
    s->metadata = meta(name);
    s->spec = NEW(Remora__V1__ServiceSpec, remora__v1__service_spec__init);
    s->spec->protocol = REMORA__V1__PROTOCOL__PROTOCOL_HTTP1;
    Remora__V1__Endpoint *e = NEW(Remora__V1__Endpoint, remora__v1__endpoint__init);
    e->target_case = REMORA__V1__ENDPOINT__TARGET_ADDRESS;
    e->address = (char *)address;
    s->spec->endpoints = (Remora__V1__Endpoint **)list(&s->spec->n_endpoints, e, NULL);
    return s;
}

static Remora__V1__BackendReference *
backend(const char *name, uint32_t weight)
{
    Remora__V1__BackendReference *r = NEW(Remora__V1__BackendReference, remora__v1__backend_reference__init);
    r->kind = "Service";
    r->name = (char *)name;
    r->namespace_ = "default";
    r->weight = weight;
    return r;
}

static Remora__V1__ParentReference *
parent(const char *name)
{
    Remora__V1__ParentReference *r = NEW(Remora__V1__ParentReference, remora__v1__parent_reference__init);
    r->kind = "Service";
    r->name = (char *)name;
    r->namespace_ = "default";
    return r;
}

static Remora__V1__HTTPRoute *
http_route(const char *name, const char *parent_name, Remora__V1__HTTPRouteRule *rule)
{
    Remora__V1__HTTPRoute *r = NEW(Remora__V1__HTTPRoute, remora__v1__httproute__init);
    r->metadata = meta(name);
    r->spec = NEW(Remora__V1__HTTPRouteSpec, remora__v1__httproute_spec__init);
    r->spec->parent_refs = (Remora__V1__ParentReference **)list(&r->spec->n_parent_refs, parent(parent_name), NULL);
    r->spec->rules = (Remora__V1__HTTPRouteRule **)list(&r->spec->n_rules, rule, NULL);
    return r;
}

static Remora__V1__HTTPRouteRule *
http_rule(const char *backend_name)
{
    Remora__V1__HTTPRouteRule *r = NEW(Remora__V1__HTTPRouteRule, remora__v1__httproute_rule__init);
    if (backend_name != NULL)
        r->backend_refs = (Remora__V1__BackendReference **)list(&r->n_backend_refs, backend(backend_name, 1), NULL);
    return r;
}

static Remora__V1__HTTPRouteFilter *
http_filter(Remora__V1__HTTPRouteFilter__FilterCase c, void *f)
{
    Remora__V1__HTTPRouteFilter *r = NEW(Remora__V1__HTTPRouteFilter, remora__v1__httproute_filter__init);
    r->filter_case = c;
    r->request_header_modifier = f; /* a union: every member is a pointer */
    return r;
}

static Remora__V1__HTTPHeader *
header(const char *name, const char *value)
{
    Remora__V1__HTTPHeader *h = NEW(Remora__V1__HTTPHeader, remora__v1__httpheader__init);
    h->name = (char *)name;
    h->value = (char *)value;
    return h;
}

static Remora__V1__HTTPRequestMirrorFilter *
mirror(const char *name, uint32_t percent, uint32_t num, uint32_t den)
{
    Remora__V1__HTTPRequestMirrorFilter *m = NEW(Remora__V1__HTTPRequestMirrorFilter, remora__v1__httprequest_mirror_filter__init);
    m->backend_ref = backend(name, 0);
    if (den != 0) {
        m->share_case = REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_FRACTION;
        m->fraction = NEW(Remora__V1__Fraction, remora__v1__fraction__init);
        m->fraction->numerator = num;
        m->fraction->denominator = den;
    } else {
        m->share_case = REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT;
        m->percent = percent;
    }
    return m;
}

static Remora__V1__LocalObjectReference *
extension_ref(const char *name)
{
    Remora__V1__LocalObjectReference *r = NEW(Remora__V1__LocalObjectReference, remora__v1__local_object_reference__init);
    r->group = "remora.dev";
    r->kind = "FaultInjection";
    r->name = (char *)name;
    return r;
}

static Remora__V1__FaultInjection *
fault(const char *name, int64_t delay_ms, uint32_t delay_percent, uint32_t http_status, int grpc_status, uint32_t abort_percent)
{
    Remora__V1__FaultInjection *f = NEW(Remora__V1__FaultInjection, remora__v1__fault_injection__init);
    f->metadata = meta(name);
    f->spec = NEW(Remora__V1__FaultInjectionSpec, remora__v1__fault_injection_spec__init);
    if (delay_ms != 0) {
        f->spec->delay = NEW(Remora__V1__FaultDelay, remora__v1__fault_delay__init);
        f->spec->delay->fixed_delay = dur(delay_ms);
        f->spec->delay->percent = delay_percent;
    }
    if (http_status != 0 || grpc_status != 0) {
        Remora__V1__FaultAbort *a = f->spec->abort = NEW(Remora__V1__FaultAbort, remora__v1__fault_abort__init);
        if (http_status != 0) {
            a->status_case = REMORA__V1__FAULT_ABORT__STATUS_HTTP_STATUS;
            a->http_status = http_status;
        } else {
            a->status_case = REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS;
            a->grpc_status = (Remora__V1__GRPCStatusCode)grpc_status;
        }
        a->percent = abort_percent;
    }
    return f;
}

static Remora__V1__BackendTrafficPolicy *
backend_policy(const char *name, const char *target, uint32_t budget_percent, int64_t connect_ms)
{
    Remora__V1__BackendTrafficPolicy *p = NEW(Remora__V1__BackendTrafficPolicy, remora__v1__backend_traffic_policy__init);
    p->metadata = meta(name);
    p->spec = NEW(Remora__V1__BackendTrafficPolicySpec, remora__v1__backend_traffic_policy_spec__init);
    Remora__V1__PolicyTargetReference *t = NEW(Remora__V1__PolicyTargetReference, remora__v1__policy_target_reference__init);
    t->kind = "Service";
    t->name = (char *)target;
    p->spec->target_refs = (Remora__V1__PolicyTargetReference **)list(&p->spec->n_target_refs, t, NULL);
    Remora__V1__RetryConstraint *rc = p->spec->retry_constraint =
        NEW(Remora__V1__RetryConstraint, remora__v1__retry_constraint__init);
    rc->budget = NEW(Remora__V1__RetryBudget, remora__v1__retry_budget__init);
    rc->budget->percent = budget_percent;
    rc->budget->interval = dur(30000);
    rc->min_retry_rate = NEW(Remora__V1__RequestRate, remora__v1__request_rate__init);
    rc->min_retry_rate->count = 3;
    rc->min_retry_rate->interval = dur(2000);
    if (connect_ms != 0) {
        Remora__V1__BackendConnectionPool *cp = p->spec->connection_pool =
            NEW(Remora__V1__BackendConnectionPool, remora__v1__backend_connection_pool__init);
        cp->connect_timeout = dur(connect_ms);
        cp->idle_timeout = dur(60000);
        cp->stream_idle_timeout = dur(0);
    }
    return p;
}

/* A RateLimitPolicy on one target; a zero rate leaves that part out. */
static Remora__V1__RateLimitPolicy *
rate_limit_policy(const char *name, const char *kind, const char *target, uint32_t total_rps, uint32_t per_client_rps)
{
    Remora__V1__RateLimitPolicy *p = NEW(Remora__V1__RateLimitPolicy, remora__v1__rate_limit_policy__init);
    p->metadata = meta(name);
    p->spec = NEW(Remora__V1__RateLimitPolicySpec, remora__v1__rate_limit_policy_spec__init);
    Remora__V1__PolicyTargetReference *t = NEW(Remora__V1__PolicyTargetReference, remora__v1__policy_target_reference__init);
    t->kind = (char *)kind;
    t->group = strcmp(kind, "Service") == 0 ? "" : "gateway.networking.k8s.io";
    t->name = (char *)target;
    p->spec->target_refs = (Remora__V1__PolicyTargetReference **)list(&p->spec->n_target_refs, t, NULL);
    if (total_rps != 0) {
        p->spec->total = NEW(Remora__V1__RateLimit, remora__v1__rate_limit__init);
        p->spec->total->requests_per_second = total_rps;
        p->spec->total->burst = total_rps * 2;
    }
    if (per_client_rps != 0) {
        p->spec->per_client = NEW(Remora__V1__RateLimit, remora__v1__rate_limit__init);
        p->spec->per_client->requests_per_second = per_client_rps;
    }
    p->spec->client_key = NEW(Remora__V1__ClientKey, remora__v1__client_key__init);
    return p;
}

static Remora__V1__Snapshot *
snapshot(void)
{
    Remora__V1__Snapshot *s = NEW(Remora__V1__Snapshot, remora__v1__snapshot__init);
    s->version = 7;
    s->services = (Remora__V1__Service **)list(&s->n_services, service("echo", "127.0.0.1:1001"),
                                               service("shadow", "127.0.0.1:1002"), service("db", "127.0.0.1:1003"), NULL);
    return s;
}

static char reason[1024];

/* Packs and translates; NULL with `reason` when refused. */
static rm_config_t *
translate(Remora__V1__Snapshot *snap)
{
    size_t len = remora__v1__snapshot__get_packed_size(snap);
    uint8_t *bytes = malloc(len + 1);
    remora__v1__snapshot__pack(snap, bytes);
    reason[0] = '\0';
    rm_config_t *c = rm_translate_snapshot(bytes, len, base, reason, sizeof(reason));
    free(bytes);
    arena_free();
    return c;
}

static void
expect_nack(Remora__V1__Snapshot *snap, const char *text)
{
    rm_config_t *c = translate(snap);
    if (c != NULL || strstr(reason, text) == NULL)
        fail_msg("want a NACK containing '%s'; got %s '%s'", text, c != NULL ? "a config and" : "the reason", reason);
}

/* A route's retry policy and header modifiers, absent ones as their empty defaults (they are NULL then) */
static const rm_config_retry_t *
retry_of(const rm_config_route_t *r)
{
    static const rm_config_retry_t none;
    return r->retry != NULL ? r->retry : &none;
}

static const rm_config_header_mod_t *
mod_of(const rm_config_header_mod_t *m)
{
    static const rm_config_header_mod_t none;
    return m != NULL ? m : &none;
}

static const rm_config_route_t *
find_route(const rm_config_listener_t *l, const char *prefix, size_t nth)
{
    for (size_t i = 0; i != l->num_routes; ++i)
        if (strncmp(l->routes[i].name, prefix, strlen(prefix)) == 0 && nth-- == 0)
            return &l->routes[i];
    fail_msg("no route %s #%zu", prefix, nth);
    return NULL;
}

static const rm_config_cluster_t *
find_cluster(const rm_config_t *c, const char *name)
{
    ssize_t i = rm_config_find_cluster(c, name);
    assert_true(i >= 0);
    return &c->clusters[i];
}

/* ----------------------------------------------------------------------------------------- tests */

static void
test_http_rule_policy(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    Remora__V1__HTTPRouteRule *rule = http_rule("echo");
    Remora__V1__HTTPRouteMatch *m = NEW(Remora__V1__HTTPRouteMatch, remora__v1__httproute_match__init);
    m->path = NEW(Remora__V1__HTTPPathMatch, remora__v1__httppath_match__init);
    m->path->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX;
    m->path->prefix = "/v1";
    Remora__V1__HeaderMatch *hm = NEW(Remora__V1__HeaderMatch, remora__v1__header_match__init);
    hm->name = "x-id";
    hm->match_case = REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION;
    hm->regular_expression = "[0-9]+";
    m->headers = (Remora__V1__HeaderMatch **)list(&m->n_headers, hm, NULL);
    rule->matches = (Remora__V1__HTTPRouteMatch **)list(&rule->n_matches, m, NULL);

    rule->timeouts = NEW(Remora__V1__RouteTimeouts, remora__v1__route_timeouts__init);
    rule->timeouts->request = dur(10000);
    rule->timeouts->backend_request = dur(2000);
    Remora__V1__HTTPRouteRetry *retry = rule->retry = NEW(Remora__V1__HTTPRouteRetry, remora__v1__httproute_retry__init);
    retry->attempts = 2;
    retry->backoff = dur(100);
    retry->codes = alloc(sizeof(uint32_t) * 2);
    retry->codes[0] = 503, retry->codes[1] = 502, retry->n_codes = 2;
    retry->conditions = alloc(sizeof(Remora__V1__RetryCondition) * 2);
    retry->conditions[0] = REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE;
    retry->conditions[1] = REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_RESET;
    retry->n_conditions = 2;

    Remora__V1__HTTPHeaderFilter *req = NEW(Remora__V1__HTTPHeaderFilter, remora__v1__httpheader_filter__init);
    req->set_headers = (Remora__V1__HTTPHeader **)list(&req->n_set_headers, header("x-env", "prod"), NULL);
    req->add_headers = (Remora__V1__HTTPHeader **)list(&req->n_add_headers, header("x-via", "remora"), NULL);
    req->remove_headers = (char **)list(&req->n_remove_headers, "x-debug", NULL);
    Remora__V1__HTTPHeaderFilter *resp = NEW(Remora__V1__HTTPHeaderFilter, remora__v1__httpheader_filter__init);
    resp->remove_headers = (char **)list(&resp->n_remove_headers, "server", NULL);
    Remora__V1__HTTPURLRewriteFilter *rw = NEW(Remora__V1__HTTPURLRewriteFilter, remora__v1__httpurlrewrite_filter__init);
    rw->hostname = "api.internal";
    rw->path = NEW(Remora__V1__HTTPPathModifier, remora__v1__httppath_modifier__init);
    rw->path->modifier_case = REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH;
    rw->path->replace_prefix_match = "/v2";
    rule->filters = (Remora__V1__HTTPRouteFilter **)list(
        &rule->n_filters, http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER, req),
        http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER, resp),
        http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR, mirror("shadow", 10, 0, 0)),
        http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR, mirror("db", 0, 1, 3)),
        http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_URL_REWRITE, rw),
        http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF, extension_ref("chaos")), NULL);

    /* a second route: a regex path answered with a redirect */
    Remora__V1__HTTPRouteRule *redirect_rule = http_rule(NULL);
    Remora__V1__HTTPRouteMatch *rm = NEW(Remora__V1__HTTPRouteMatch, remora__v1__httproute_match__init);
    rm->path = NEW(Remora__V1__HTTPPathMatch, remora__v1__httppath_match__init);
    rm->path->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION;
    rm->path->regular_expression = "/old/.*";
    redirect_rule->matches = (Remora__V1__HTTPRouteMatch **)list(&redirect_rule->n_matches, rm, NULL);
    Remora__V1__HTTPRequestRedirectFilter *rd =
        NEW(Remora__V1__HTTPRequestRedirectFilter, remora__v1__httprequest_redirect_filter__init);
    rd->scheme = "https";
    rd->hostname = "new.example";
    rd->port = 8443;
    rd->status_code = 308;
    rd->path = NEW(Remora__V1__HTTPPathModifier, remora__v1__httppath_modifier__init);
    rd->path->modifier_case = REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_FULL_PATH;
    rd->path->replace_full_path = "/new";
    redirect_rule->filters = (Remora__V1__HTTPRouteFilter **)list(
        &redirect_rule->n_filters, http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_REDIRECT, rd), NULL);

    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("api", "echo", rule),
                                                       http_route("moved", "echo", redirect_rule), NULL);
    snap->fault_injections =
        (Remora__V1__FaultInjection **)list(&snap->n_fault_injections, fault("chaos", 50, 10, 503, 0, 5), NULL);

    rm_config_t *c = translate(snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    assert_string_equal(c->version, "7");
    assert_int_equal(c->num_listeners, 2);
    for (size_t li = 0; li != 2; ++li) {
        const rm_config_route_t *r = find_route(&c->listeners[li], "echo.default/api/", 0);
        assert_int_equal(r->path_match, RM_PATH_MATCH_PREFIX);
        assert_string_equal(r->path, "/v1");
        assert_int_equal(r->num_headers, 1);
        assert_string_equal(r->headers[0].value, "[0-9]+");
        assert_int_equal(r->headers[0].is_regex, 1);
        assert_int_equal(r->timeout_ms, 10000);
        assert_int_equal(r->per_try_timeout_ms, 2000);
        assert_int_equal(retry_of(r)->attempts, 2);
        assert_int_equal(retry_of(r)->backoff_base_ms, 100);
        assert_int_equal(retry_of(r)->backoff_max_ms, 1000);
        assert_int_equal(retry_of(r)->max_replay_bytes, 65536);
        assert_int_equal(retry_of(r)->conditions, RM_RETRY_ON_CONNECT_FAILURE | RM_RETRY_ON_RESET);
        assert_int_equal(retry_of(r)->num_http_statuses, 2);
        assert_int_equal(retry_of(r)->http_statuses[0], 502); /* sorted at validation */
        assert_int_equal(retry_of(r)->http_statuses[1], 503);
        assert_int_equal(retry_of(r)->grpc_status_mask, 0);
        assert_int_equal(mod_of(r->request_headers)->num_set, 1);
        assert_string_equal(mod_of(r->request_headers)->set[0].name, "x-env");
        assert_string_equal(mod_of(r->request_headers)->set[0].value, "prod");
        assert_string_equal(mod_of(r->request_headers)->add[0].name, "x-via");
        assert_string_equal(mod_of(r->request_headers)->remove[0], "x-debug");
        assert_int_equal(mod_of(r->response_headers)->num_remove, 1);
        assert_string_equal(mod_of(r->response_headers)->remove[0], "server");
        assert_int_equal(r->num_mirrors, 2);
        assert_string_equal(r->mirrors[0].cluster_name, "shadow.default");
        assert_int_equal(r->mirrors[0].cluster_index, (size_t)rm_config_find_cluster(c, "shadow.default"));
        assert_int_equal(r->mirrors[0].per_million, 100000);
        assert_string_equal(r->mirrors[1].cluster_name, "db.default");
        assert_int_equal(r->mirrors[1].per_million, 333333);
        assert_non_null(r->url_rewrite);
        assert_string_equal(r->url_rewrite->hostname, "api.internal");
        assert_int_equal(r->url_rewrite->path_type, RM_PATH_REWRITE_PREFIX);
        assert_string_equal(r->url_rewrite->path, "/v2");
        assert_null(r->redirect);
        assert_non_null(r->fault);
        assert_int_equal(r->fault->delay_ms, 50);
        assert_int_equal(r->fault->delay_per_million, 100000);
        assert_int_equal(r->fault->abort_http_status, 503);
        assert_int_equal(r->fault->abort_grpc_status, -1);
        assert_int_equal(r->fault->abort_per_million, 50000);
        assert_non_null(r->_compiled); /* the header regex */

        r = find_route(&c->listeners[li], "echo.default/moved/", 0);
        assert_int_equal(r->path_match, RM_PATH_MATCH_REGEX);
        assert_string_equal(r->path, "/old/.*");
        assert_non_null(r->_compiled);
        assert_non_null(r->redirect);
        assert_string_equal(r->redirect->scheme, "https");
        assert_string_equal(r->redirect->hostname, "new.example");
        assert_int_equal(r->redirect->port, 8443);
        assert_int_equal(r->redirect->status_code, 308);
        assert_int_equal(r->redirect->path_type, RM_PATH_REWRITE_FULL);
        assert_string_equal(r->redirect->path, "/new");
        assert_int_equal(r->num_backends, 0);
        assert_null(r->cluster_name);
        assert_int_equal(r->cluster_index, RM_CONFIG_NO_CLUSTER);
    }
    /* one list for every listener (the first owns it): no per-listener copies */
    assert_ptr_equal(find_route(&c->listeners[0], "echo.default/api/", 0), find_route(&c->listeners[1], "echo.default/api/", 0));
    assert_false(c->listeners[0].routes_borrowed);
    assert_true(c->listeners[1].routes_borrowed);
    rm_config_unref(c);
}

/* A mesh of many Services on the four transparent listeners: one route list for all of them, each
 * Service's routes sharing one authority list, no catch-all route after a route that takes every
 * request, and Service listeners found by address (binary search) with the right fallbacks. */
#define MESH_SERVICES 250

/* prefix, i, suffix in the test arena */
static char *
fmt(const char *prefix, int i, const char *suffix)
{
    char *s = alloc(64);
    snprintf(s, 64, "%s%d%s", prefix, i, suffix);
    return s;
}

static void
test_many_services_transparent(void **state)
{
    static const char y[] = "listeners:\n"
                            "  - {name: out4, address: \"127.0.0.1:15001\", direction: outbound}\n"
                            "  - {name: out6, address: \"[::1]:15001\", direction: outbound}\n"
                            "  - {name: in4, address: \"0.0.0.0:15006\", direction: inbound}\n"
                            "  - {name: in6, address: \"[::]:15006\", direction: inbound}\n"
                            "clusters:\n"
                            "  - {name: c, endpoints: \"127.0.0.1:1\"}\n";
    rm_config_error_t err;
    rm_config_t *transparent = rm_config_load_string(y, sizeof(y) - 1, "t.yaml", &err);
    if (transparent == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    Remora__V1__Snapshot *snap = NEW(Remora__V1__Snapshot, remora__v1__snapshot__init);
    snap->version = 7;
    snap->services = alloc(sizeof(void *) * MESH_SERVICES);
    snap->http_routes = alloc(sizeof(void *) * MESH_SERVICES);
    for (int i = 0; i != MESH_SERVICES; ++i) {
        Remora__V1__Service *svc = service(fmt("svc-", i, ""), fmt("127.1.0.", i + 1, ":8080"));
        svc->spec->addresses = alloc(sizeof(char *));
        svc->spec->addresses[0] = fmt("10.96.1.", i + 1, ":80");
        svc->spec->n_addresses = 1;
        snap->services[snap->n_services++] = svc;
        Remora__V1__HTTPRouteRule *rule = http_rule(svc->metadata->name);
        if (i % 2 == 1) { /* odd: /api only, so the Service keeps its own catch-all route */
            Remora__V1__HTTPRouteMatch *m = NEW(Remora__V1__HTTPRouteMatch, remora__v1__httproute_match__init);
            m->path = NEW(Remora__V1__HTTPPathMatch, remora__v1__httppath_match__init);
            m->path->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX;
            m->path->prefix = "/api";
            rule->matches = (Remora__V1__HTTPRouteMatch **)list(&rule->n_matches, m, NULL);
        }
        snap->http_routes[snap->n_http_routes++] = http_route(fmt("route-", i, ""), svc->metadata->name, rule);
    }
    rm_config_t *saved = base;
    base = transparent;
    rm_config_t *c = translate(snap);
    base = saved;
    if (c == NULL)
        fail_msg("%s", reason);
    assert_int_equal(c->num_listeners, 4);
    assert_int_equal(c->listeners[0].num_routes, MESH_SERVICES + MESH_SERVICES / 2);
    for (size_t li = 1; li != 4; ++li) {
        assert_ptr_equal(c->listeners[li].routes, c->listeners[0].routes);
        assert_true(c->listeners[li].routes_borrowed);
    }
    const rm_config_route_t *routes = c->listeners[0].routes;
    for (size_t ri = 0; ri != c->listeners[0].num_routes; ++ri) {
        const rm_config_route_t *r = &routes[ri];
        assert_true(r->has_service);
        assert_int_equal(r->cluster_index, r->service_cluster);
        assert_string_equal(r->authorities[0], c->clusters[r->service_cluster].name);
        if (r->service_cluster % 2 == 1 && r->path_match == RM_PATH_MATCH_ANY) { /* the catch-all after /api */
            assert_int_equal(r[-1].service_cluster, r->service_cluster);
            assert_ptr_equal(r->authorities, r[-1].authorities);
            assert_true(r->authorities_borrowed);
        }
    }
    /* one outbound Service listener per address (IPv4: not on [::1]) and one inbound per endpoint */
    assert_int_equal(c->num_service_listeners, 2 * MESH_SERVICES);
    for (int i = 0; i != MESH_SERVICES; ++i) {
        struct sockaddr_in vip = {.sin_family = AF_INET, .sin_port = htons(80)}, ep = vip;
        char a[32];
        snprintf(a, sizeof(a), "10.96.1.%d", i + 1);
        inet_pton(AF_INET, a, &vip.sin_addr);
        size_t si = rm_config_find_service_listener(c, 0, (struct sockaddr *)&vip);
        assert_int_not_equal(si, SIZE_MAX);
        const rm_config_listener_t *sl = &c->service_listeners[si];
        assert_int_equal(sl->service_cluster, (size_t)i);
        assert_ptr_equal(sl->routes, routes);
        /* the fallback is the Service's own route that takes everything: never a copy */
        assert_true(sl->fallback_route >= routes && sl->fallback_route < routes + c->listeners[0].num_routes);
        assert_int_equal(sl->fallback_route->service_cluster, (size_t)i);
        assert_int_equal(rm_config_find_service_listener(c, 1, (struct sockaddr *)&vip), SIZE_MAX);
        vip.sin_port = htons(81);
        assert_int_equal(rm_config_find_service_listener(c, 0, (struct sockaddr *)&vip), SIZE_MAX);

        snprintf(a, sizeof(a), "127.1.0.%d", i + 1);
        inet_pton(AF_INET, a, &ep.sin_addr);
        ep.sin_port = htons(8080);
        si = rm_config_find_service_listener(c, 2, (struct sockaddr *)&ep);
        assert_int_not_equal(si, SIZE_MAX);
        sl = &c->service_listeners[si];
        assert_true(c->clusters[sl->service_cluster].inbound);
        assert_int_equal(c->clusters[sl->service_cluster].inbound_service, (size_t)i);
        assert_int_equal(sl->fallback_route->cluster_index, sl->service_cluster);
        assert_int_equal(rm_config_find_service_listener(c, 3, (struct sockaddr *)&ep), SIZE_MAX);
    }
    /* a second validation rebuilds the same */
    assert_int_equal(rm_config_validate(c, &err), 0);
    assert_int_equal(c->num_service_listeners, 2 * MESH_SERVICES);
    assert_int_equal(c->num_clusters, 2 * MESH_SERVICES);
    rm_config_unref(c);
    rm_config_unref(transparent);
}

static void
test_grpc_rules(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    Remora__V1__GRPCRoute *g = NEW(Remora__V1__GRPCRoute, remora__v1__grpcroute__init);
    g->metadata = meta("g");
    g->spec = NEW(Remora__V1__GRPCRouteSpec, remora__v1__grpcroute_spec__init);
    g->spec->parent_refs = (Remora__V1__ParentReference **)list(&g->spec->n_parent_refs, parent("echo"), NULL);
    Remora__V1__GRPCRouteRule *rule = NEW(Remora__V1__GRPCRouteRule, remora__v1__grpcroute_rule__init);
    rule->backend_refs = (Remora__V1__BackendReference **)list(&rule->n_backend_refs, backend("echo", 1), NULL);
    const char *const services[] = {"^echo\\..*$", "", "echo.Echo"}, *const methods[] = {"Get.*", "Unary", ""};
    const Remora__V1__GRPCMethodMatch__Type types[] = {REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION,
                                                       REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_EXACT,
                                                       REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_EXACT};
    rule->matches = alloc(sizeof(void *) * 3);
    for (size_t i = 0; i != 3; ++i) {
        Remora__V1__GRPCRouteMatch *m = NEW(Remora__V1__GRPCRouteMatch, remora__v1__grpcroute_match__init);
        m->method = NEW(Remora__V1__GRPCMethodMatch, remora__v1__grpcmethod_match__init);
        m->method->type = types[i];
        m->method->service = (char *)services[i];
        m->method->method = (char *)methods[i];
        rule->matches[i] = m;
    }
    rule->n_matches = 3;
    Remora__V1__GRPCRouteRetry *retry = rule->retry = NEW(Remora__V1__GRPCRouteRetry, remora__v1__grpcroute_retry__init);
    retry->attempts = 3;
    retry->codes = alloc(sizeof(Remora__V1__GRPCStatusCode) * 2);
    retry->codes[0] = REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE;
    retry->codes[1] = REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_CANCELLED;
    retry->n_codes = 2;
    Remora__V1__GRPCRouteFilter *f = NEW(Remora__V1__GRPCRouteFilter, remora__v1__grpcroute_filter__init);
    f->filter_case = REMORA__V1__GRPCROUTE_FILTER__FILTER_EXTENSION_REF;
    f->extension_ref = extension_ref("unavailable");
    rule->filters = (Remora__V1__GRPCRouteFilter **)list(&rule->n_filters, f, NULL);
    g->spec->rules = (Remora__V1__GRPCRouteRule **)list(&g->spec->n_rules, rule, NULL);
    snap->grpc_routes = (Remora__V1__GRPCRoute **)list(&snap->n_grpc_routes, g, NULL);
    snap->fault_injections = (Remora__V1__FaultInjection **)list(
        &snap->n_fault_injections, fault("unavailable", 0, 0, 0, REMORA__V1__GRPCSTATUS_CODE__GRPC_STATUS_CODE_UNAVAILABLE, 100),
        NULL);

    rm_config_t *c = translate(snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    const rm_config_route_t *r = find_route(&c->listeners[0], "echo.default/g/", 0);
    assert_int_equal(r->path_match, RM_PATH_MATCH_REGEX);
    assert_string_equal(r->path, "/(?:echo\\..*)/(?:Get.*)"); /* the user's anchors are dropped inside the path */
    assert_int_equal(retry_of(r)->attempts, 3);
    assert_int_equal(retry_of(r)->grpc_status_mask, (1u << 14) | (1u << 1));
    assert_int_equal(retry_of(r)->backoff_base_ms, 25); /* absent backoff: the default */
    assert_int_equal(r->fault->abort_grpc_status, 14);
    assert_int_equal(r->fault->abort_http_status, 0);
    assert_int_equal(r->fault->abort_per_million, 1000000);
    assert_int_equal(r->fault->delay_per_million, 0);
    r = find_route(&c->listeners[0], "echo.default/g/", 1);
    assert_int_equal(r->path_match, RM_PATH_MATCH_REGEX);
    assert_string_equal(r->path, "/[^/]+/Unary");
    r = find_route(&c->listeners[0], "echo.default/g/", 2);
    assert_int_equal(r->path_match, RM_PATH_MATCH_PREFIX);
    assert_string_equal(r->path, "/echo.Echo/");
    rm_config_unref(c);
}

static void
test_backend_policy(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    /* two policies on db: the first by name wins there (GEP-713); the other still applies to echo */
    Remora__V1__BackendTrafficPolicy *second = backend_policy("b-second", "db", 50, 5000);
    Remora__V1__PolicyTargetReference *t = NEW(Remora__V1__PolicyTargetReference, remora__v1__policy_target_reference__init);
    t->kind = "Service";
    t->name = "echo";
    second->spec->target_refs =
        (Remora__V1__PolicyTargetReference **)list(&second->spec->n_target_refs, second->spec->target_refs[0], t, NULL);
    snap->backend_traffic_policies = (Remora__V1__BackendTrafficPolicy **)list(
        &snap->n_backend_traffic_policies, backend_policy("a-first", "db", 30, 250), second, NULL);
    rm_config_t *c = translate(snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    const rm_config_cluster_t *db = find_cluster(c, "db.default"), *echo = find_cluster(c, "echo.default"),
                              *shadow = find_cluster(c, "shadow.default");
    assert_int_equal(db->budget_percent, 30);
    assert_int_equal(db->budget_interval_ms, 30000);
    assert_int_equal(db->min_retry_count, 3);
    assert_int_equal(db->min_retry_interval_ms, 2000);
    assert_int_equal(db->connect_timeout_ms, 250);
    assert_int_equal(db->pool_idle_timeout_ms, 60000);
    assert_int_equal(db->stream_idle_timeout_ms, 0);
    assert_int_equal(echo->budget_percent, 50);
    assert_int_equal(echo->connect_timeout_ms, 5000);
    /* untouched: the agent's defaults */
    assert_int_equal(shadow->budget_percent, 20);
    assert_int_equal(shadow->budget_interval_ms, 10000);
    assert_int_equal(shadow->pool_idle_timeout_ms, 4000);
    assert_int_equal(shadow->stream_idle_timeout_ms, 300000);
    rm_config_unref(c);
}

static void
test_backend_policy_balancing(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    /* weighted endpoints: 0 in the resource is the default weight 1 */
    Remora__V1__Endpoint *e2 = NEW(Remora__V1__Endpoint, remora__v1__endpoint__init);
    e2->target_case = REMORA__V1__ENDPOINT__TARGET_ADDRESS;
    e2->address = "127.0.0.1:1004";
    e2->weight = 3;
    Remora__V1__ServiceSpec *db_spec = snap->services[2]->spec;
    db_spec->endpoints = (Remora__V1__Endpoint **)list(&db_spec->n_endpoints, db_spec->endpoints[0], e2, NULL);
    Remora__V1__BackendTrafficPolicy *p = backend_policy("p", "db", 20, 100);
    Remora__V1__BackendConnectionPool *cp = p->spec->connection_pool;
    cp->max_connections = 10;
    cp->max_pending_requests = 20;
    cp->max_requests = 30;
    /* max_retries 0: the default stays */
    p->spec->load_balancer = NEW(Remora__V1__BackendLoadBalancer, remora__v1__backend_load_balancer__init);
    p->spec->load_balancer->type = REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH;
    p->spec->load_balancer->minimum_ring_size = 2048;
    Remora__V1__OutlierDetection *od = p->spec->outlier_detection =
        NEW(Remora__V1__OutlierDetection, remora__v1__outlier_detection__init);
    od->consecutive_5xx_errors = 7;
    od->consecutive_gateway_errors = 0;
    od->interval = dur(2000);
    od->base_ejection_time = dur(15000);
    od->max_ejection_time = dur(60000);
    od->max_ejection_percent = 100;
    Remora__V1__HealthCheck *hc = p->spec->health_check = NEW(Remora__V1__HealthCheck, remora__v1__health_check__init);
    hc->http = NEW(Remora__V1__HTTPHealthCheck, remora__v1__httphealth_check__init);
    hc->http->path = "/healthz";
    hc->interval = dur(300);
    hc->timeout = dur(100);
    hc->healthy_threshold = 1;
    hc->unhealthy_threshold = 4;
    Remora__V1__BackendTrafficPolicy *q = backend_policy("q", "echo", 20, 0);
    q->spec->load_balancer = NEW(Remora__V1__BackendLoadBalancer, remora__v1__backend_load_balancer__init);
    q->spec->load_balancer->type = REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_LEAST_REQUEST;
    snap->backend_traffic_policies = (Remora__V1__BackendTrafficPolicy **)list(&snap->n_backend_traffic_policies, p, q, NULL);
    rm_config_t *c = translate(snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    const rm_config_cluster_t *db = find_cluster(c, "db.default"), *echo = find_cluster(c, "echo.default"),
                              *shadow = find_cluster(c, "shadow.default");
    assert_int_equal(db->num_endpoints, 2);
    assert_int_equal(db->endpoints[0].weight, 1);
    assert_int_equal(db->endpoints[1].weight, 3);
    assert_int_equal(db->lb, RM_LB_RING_HASH);
    assert_int_equal(db->ring_min_size, 2048);
    assert_int_equal(db->breakers.max_connections, 10);
    assert_int_equal(db->breakers.max_pending_requests, 20);
    assert_int_equal(db->breakers.max_requests, 30);
    assert_int_equal(db->breakers.max_retries, 64);
    assert_int_equal(db->outlier.enabled, 1);
    assert_int_equal(db->outlier.consecutive_5xx, 7);
    assert_int_equal(db->outlier.consecutive_gateway_errors, 0);
    assert_int_equal(db->outlier.interval_ms, 2000);
    assert_int_equal(db->outlier.base_ejection_ms, 15000);
    assert_int_equal(db->outlier.max_ejection_ms, 60000);
    assert_int_equal(db->outlier.max_ejection_percent, 100);
    assert_int_equal(db->health_check.enabled, 1);
    assert_int_equal(db->health_check.grpc, 0);
    assert_string_equal(db->health_check.http_path, "/healthz");
    assert_int_equal(db->health_check.interval_ms, 300);
    assert_int_equal(db->health_check.timeout_ms, 100);
    assert_int_equal(db->health_check.healthy_threshold, 1);
    assert_int_equal(db->health_check.unhealthy_threshold, 4);
    assert_int_equal(echo->health_check.enabled, 0);
    assert_int_equal(echo->lb, RM_LB_LEAST_REQUEST);
    assert_int_equal(echo->outlier.enabled, 0);
    assert_int_equal(echo->breakers.max_connections, 1024);
    assert_int_equal(shadow->lb, RM_LB_DEFAULT);
    assert_int_equal(shadow->outlier.enabled, 0);
    rm_config_unref(c);
}

static void
test_session_and_rate_limits(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    Remora__V1__HTTPRouteRule *rule = http_rule("echo");
    rule->session_persistence = NEW(Remora__V1__SessionPersistence, remora__v1__session_persistence__init);
    rule->session_persistence->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER;
    rule->session_persistence->session_name = "x-user";
    Remora__V1__HTTPRouteRule *other = http_rule("echo");
    other->session_persistence = NEW(Remora__V1__SessionPersistence, remora__v1__session_persistence__init);
    other->session_persistence->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_COOKIE;
    other->session_persistence->session_name = "Session";
    Remora__V1__GRPCRoute *gr = NEW(Remora__V1__GRPCRoute, remora__v1__grpcroute__init);
    gr->metadata = meta("g");
    gr->spec = NEW(Remora__V1__GRPCRouteSpec, remora__v1__grpcroute_spec__init);
    gr->spec->parent_refs = (Remora__V1__ParentReference **)list(&gr->spec->n_parent_refs, parent("db"), NULL);
    Remora__V1__GRPCRouteRule *grule = NEW(Remora__V1__GRPCRouteRule, remora__v1__grpcroute_rule__init);
    grule->backend_refs = (Remora__V1__BackendReference **)list(&grule->n_backend_refs, backend("db", 1), NULL);
    grule->session_persistence = NEW(Remora__V1__SessionPersistence, remora__v1__session_persistence__init);
    grule->session_persistence->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER;
    grule->session_persistence->session_name = "x-tenant";
    gr->spec->rules = (Remora__V1__GRPCRouteRule **)list(&gr->spec->n_rules, grule, NULL);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("sticky", "echo", rule),
                                                       http_route("plain", "shadow", other), NULL);
    snap->grpc_routes = (Remora__V1__GRPCRoute **)list(&snap->n_grpc_routes, gr, NULL);
    /* on the route "sticky" (wins there) and on Service echo (the rest of echo's traffic); a second policy on echo,
     * later by name, is ignored there (GEP-713) */
    Remora__V1__RateLimitPolicy *route_limit = rate_limit_policy("a-route", "HTTPRoute", "sticky", 0, 20);
    route_limit->spec->client_key->type = REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER;
    route_limit->spec->client_key->header = "x-client-id";
    Remora__V1__RateLimitOverride *o = NEW(Remora__V1__RateLimitOverride, remora__v1__rate_limit_override__init);
    o->requests_per_second = 200;
    o->clients = alloc(2 * sizeof(char *));
    o->clients[0] = "batch";
    o->clients[1] = "10.0.0.7";
    o->n_clients = 2;
    route_limit->spec->overrides = (Remora__V1__RateLimitOverride **)list(&route_limit->spec->n_overrides, o, NULL);
    snap->rate_limit_policies = (Remora__V1__RateLimitPolicy **)list(
        &snap->n_rate_limit_policies, route_limit, rate_limit_policy("b-svc", "Service", "echo", 1000, 0),
        rate_limit_policy("c-svc", "Service", "echo", 5, 0), rate_limit_policy("d-grpc", "GRPCRoute", "g", 50, 0), NULL);
    rm_config_t *c = translate(snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    for (size_t li = 0; li != 2; ++li) {
        const rm_config_listener_t *l = &c->listeners[li];
        const rm_config_route_t *sticky = find_route(l, "echo.default/sticky/", 0);
        assert_int_equal(sticky->session_persistence, RM_SESSION_HEADER);
        assert_string_equal(sticky->session_name, "x-user");
        assert_non_null(sticky->rate_limit);
        assert_string_equal(sticky->rate_limit->name, "default/a-route");
        assert_int_equal(sticky->rate_limit->total_rps, 0);
        assert_int_equal(sticky->rate_limit->per_client_rps, 20);
        assert_int_equal(sticky->rate_limit->client_key, RM_CLIENT_KEY_HEADER);
        assert_string_equal(sticky->rate_limit->client_header, "x-client-id");
        assert_int_equal(sticky->rate_limit->num_overrides, 1);
        assert_int_equal(sticky->rate_limit->overrides[0].requests_per_second, 200);
        assert_int_equal(sticky->rate_limit->overrides[0].num_clients, 2);
        assert_string_equal(sticky->rate_limit->overrides[0].clients[1], "10.0.0.7");
        const rm_config_route_t *plain = find_route(l, "shadow.default/plain/", 0);
        assert_int_equal(plain->session_persistence, RM_SESSION_COOKIE);
        assert_string_equal(plain->session_name, "Session");
        assert_null(plain->rate_limit);
        const rm_config_route_t *g = find_route(l, "db.default/g/", 0);
        assert_int_equal(g->session_persistence, RM_SESSION_HEADER);
        assert_string_equal(g->session_name, "x-tenant");
        assert_non_null(g->rate_limit);
        assert_string_equal(g->rate_limit->name, "default/d-grpc");
        assert_int_equal(g->rate_limit->total_rps, 50);
        assert_int_equal(g->rate_limit->total_burst, 100);
    }
    const rm_config_cluster_t *echo = find_cluster(c, "echo.default"), *db = find_cluster(c, "db.default");
    assert_non_null(echo->rate_limit);
    assert_string_equal(echo->rate_limit->name, "default/b-svc");
    assert_int_equal(echo->rate_limit->total_rps, 1000);
    assert_int_equal(echo->rate_limit->client_key, RM_CLIENT_KEY_IDENTITY);
    assert_null(db->rate_limit);
    rm_config_unref(c);
}

static void
test_timeouts(void **state)
{
    /* request and backendRequest are separate now: timeout_ms bounds the whole exchange, per_try_timeout_ms each try */
    Remora__V1__Snapshot *snap = snapshot();
    Remora__V1__HTTPRouteRule *rule = http_rule("echo");
    rule->timeouts = NEW(Remora__V1__RouteTimeouts, remora__v1__route_timeouts__init);
    rule->timeouts->backend_request = dur(1500);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("t", "echo", rule), NULL);
    rm_config_t *c = translate(snap);
    assert_non_null(c);
    const rm_config_route_t *r = find_route(&c->listeners[0], "echo.default/t/", 0);
    assert_int_equal(r->timeout_ms, 0);
    assert_int_equal(r->per_try_timeout_ms, 1500);
    assert_int_equal(retry_of(r)->attempts, 0);
    rm_config_unref(c);
}

/* A meshed Service's expected peer identity (namespace + serviceAccount) and the MeshTLS mode (docs/mesh-tls.md). */
static void
test_mesh_tls(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    snap->services[0]->spec->meshed = 1;
    snap->services[0]->spec->service_account = "echo-sa";
    snap->services[1]->spec->meshed = 1; /* no serviceAccount: "default" */
    /* endpoints with their own service account: their own expected identity, unless it is the Service's */
    Remora__V1__Endpoint *e1 = snap->services[0]->spec->endpoints[0];
    e1->service_account = "canary-sa";
    Remora__V1__Endpoint *e2 = NEW(Remora__V1__Endpoint, remora__v1__endpoint__init);
    e2->target_case = REMORA__V1__ENDPOINT__TARGET_ADDRESS;
    e2->address = "10.0.0.9:9090";
    e2->service_account = "echo-sa";
    snap->services[0]->spec->endpoints = (Remora__V1__Endpoint **)list(&snap->services[0]->spec->n_endpoints, e1, e2, NULL);
    Remora__V1__MeshTLS *other = NEW(Remora__V1__MeshTLS, remora__v1__mesh_tls__init);
    other->metadata = meta("elsewhere"); /* namespace default: not applied */
    other->spec = NEW(Remora__V1__MeshTLSSpec, remora__v1__mesh_tlsspec__init);
    other->spec->mode = REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_DISABLE;
    Remora__V1__MeshTLS *root = NEW(Remora__V1__MeshTLS, remora__v1__mesh_tls__init);
    root->metadata = meta("default");
    root->metadata->namespace_ = "remora-system";
    root->spec = NEW(Remora__V1__MeshTLSSpec, remora__v1__mesh_tlsspec__init);
    root->spec->mode = REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_STRICT;
    snap->mesh_tls = (Remora__V1__MeshTLS **)list(&snap->n_mesh_tls, other, root, NULL);
    rm_config_t *c = translate(snap);
    assert_non_null(c);
    assert_int_equal(c->mesh_tls.mode, RM_MESH_TLS_STRICT);
    assert_string_equal(find_cluster(c, "echo.default")->peer_identity, "/ns/default/sa/echo-sa");
    assert_int_equal(find_cluster(c, "echo.default")->num_endpoints, 2);
    assert_string_equal(find_cluster(c, "echo.default")->endpoints[0].peer_identity, "/ns/default/sa/canary-sa");
    assert_null(find_cluster(c, "echo.default")->endpoints[1].peer_identity);
    assert_string_equal(find_cluster(c, "shadow.default")->peer_identity, "/ns/default/sa/default");
    assert_null(find_cluster(c, "db.default")->peer_identity); /* not meshed */
    rm_config_unref(c);
    /* without a MeshTLS: the bootstrap's mode (PERMISSIVE) */
    c = translate(snapshot());
    assert_non_null(c);
    assert_int_equal(c->mesh_tls.mode, RM_MESH_TLS_PERMISSIVE);
    rm_config_unref(c);
}

static void
test_refusals(void **state)
{
    Remora__V1__Snapshot *snap = snapshot();
    Remora__V1__HTTPRouteRule *rule = http_rule("echo");
    rule->filters = (Remora__V1__HTTPRouteFilter **)list(
        &rule->n_filters, http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF, extension_ref("nope")), NULL);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "HTTPRoute default/r: ExtensionRef names FaultInjection default/nope, which does not exist");

    snap = snapshot();
    rule = http_rule("echo");
    Remora__V1__HTTPRequestMirrorFilter *m = mirror("shadow", 100, 0, 0);
    m->backend_ref->port = 8080;
    rule->filters = (Remora__V1__HTTPRouteFilter **)list(&rule->n_filters,
                                                         http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR, m), NULL);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "RequestMirror backendRef port is not supported by this agent");

    snap = snapshot();
    rule = http_rule("echo");
    rule->filters = (Remora__V1__HTTPRouteFilter **)list(
        &rule->n_filters, http_filter(REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR, mirror("ghost", 100, 0, 0)), NULL);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "RequestMirror names service default/ghost, which does not exist");

    snap = snapshot();
    snap->backend_traffic_policies =
        (Remora__V1__BackendTrafficPolicy **)list(&snap->n_backend_traffic_policies, backend_policy("p", "ghost", 20, 0), NULL);
    expect_nack(snap, "BackendTrafficPolicy default/p: targetRef names service default/ghost, which does not exist");

    /* a field from a newer control plane (here: spec field 7 of BackendTrafficPolicySpec, kept for what comes
     * after healthCheck: the agent must refuse rather than run without that policy) */
    snap = snapshot();
    Remora__V1__BackendTrafficPolicy *p = backend_policy("p", "db", 20, 0);
    ProtobufCMessageUnknownField *u = alloc(sizeof(*u));
    static uint8_t lb[] = {0x02, 0x08, 0x01}; /* protobuf-c keeps the length prefix with the data */
    u->tag = 7;
    u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    u->len = sizeof(lb);
    u->data = lb;
    p->spec->base.n_unknown_fields = 1;
    p->spec->base.unknown_fields = u;
    snap->backend_traffic_policies = (Remora__V1__BackendTrafficPolicy **)list(&snap->n_backend_traffic_policies, p, NULL);
    expect_nack(snap, "BackendTrafficPolicy default/p: spec carries field 7, which this agent does not know");

    /* the same for a route rule (field 7, kept for per-rule policies to come) */
    snap = snapshot();
    rule = http_rule("echo");
    rule->base.n_unknown_fields = 1;
    u = alloc(sizeof(*u));
    u->tag = 7;
    u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    u->len = sizeof(lb);
    u->data = lb;
    rule->base.unknown_fields = u;
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "HTTPRoute default/r: a rule carries field 7");

    /* RateLimitPolicy: dangling targets, impossible limits */
    snap = snapshot();
    snap->rate_limit_policies = (Remora__V1__RateLimitPolicy **)list(&snap->n_rate_limit_policies,
                                                                     rate_limit_policy("l", "HTTPRoute", "ghost", 10, 0), NULL);
    expect_nack(snap, "RateLimitPolicy default/l: targetRef names HTTPRoute default/ghost, which does not exist");
    snap = snapshot();
    snap->rate_limit_policies =
        (Remora__V1__RateLimitPolicy **)list(&snap->n_rate_limit_policies, rate_limit_policy("l", "Service", "ghost", 10, 0), NULL);
    expect_nack(snap, "RateLimitPolicy default/l: targetRef names Service default/ghost, which does not exist");
    snap = snapshot();
    snap->rate_limit_policies =
        (Remora__V1__RateLimitPolicy **)list(&snap->n_rate_limit_policies, rate_limit_policy("l", "Service", "db", 0, 0), NULL);
    expect_nack(snap, "RateLimitPolicy default/l: neither total nor perClient is set");
    snap = snapshot();
    Remora__V1__RateLimitPolicy *rl = rate_limit_policy("l", "Service", "db", 0, 5);
    rl->spec->client_key->type = REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER;
    snap->rate_limit_policies = (Remora__V1__RateLimitPolicy **)list(&snap->n_rate_limit_policies, rl, NULL);
    expect_nack(snap, "RateLimitPolicy default/l: clientKey type Header has no header");

    /* session persistence without a name (a control plane never sends it) */
    snap = snapshot();
    rule = http_rule("echo");
    rule->session_persistence = NEW(Remora__V1__SessionPersistence, remora__v1__session_persistence__init);
    rule->session_persistence->type = REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_COOKIE;
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "HTTPRoute default/r: sessionPersistence has no sessionName");

    snap = snapshot();
    rule = http_rule("echo");
    rule->retry = NEW(Remora__V1__HTTPRouteRetry, remora__v1__httproute_retry__init);
    rule->retry->attempts = 1;
    rule->retry->conditions = alloc(sizeof(Remora__V1__RetryCondition));
    rule->retry->conditions[0] = (Remora__V1__RetryCondition)9;
    rule->retry->n_conditions = 1;
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "retry condition 9 is not supported by this agent");

    /* the agent's own validation still has the last word (an invalid regex slipped past a control plane) */
    snap = snapshot();
    rule = http_rule("echo");
    Remora__V1__HTTPRouteMatch *hm = NEW(Remora__V1__HTTPRouteMatch, remora__v1__httproute_match__init);
    hm->path = NEW(Remora__V1__HTTPPathMatch, remora__v1__httppath_match__init);
    hm->path->match_case = REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION;
    hm->path->regular_expression = "/(";
    rule->matches = (Remora__V1__HTTPRouteMatch **)list(&rule->n_matches, hm, NULL);
    snap->http_routes = (Remora__V1__HTTPRoute **)list(&snap->n_http_routes, http_route("r", "echo", rule), NULL);
    expect_nack(snap, "/(");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_rule_policy),
        cmocka_unit_test(test_grpc_rules),
        cmocka_unit_test(test_many_services_transparent),
        cmocka_unit_test(test_backend_policy),
        cmocka_unit_test(test_backend_policy_balancing),
        cmocka_unit_test(test_session_and_rate_limits),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_mesh_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
