/*
 * The store's incremental updates (rm_store_delta): what changed since a version, deletions, the
 * removal log's horizon, a reopened store's history, and the memory store's hashed versions.
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
#include "remora/v1/discovery.pb-c.h"
#include "scope.h"
#include "store.h"

static char dir[256];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/rm_delta_test.XXXXXX");
    unsetenv("REMORA_CONTROL_REMOVAL_LOG");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    unsetenv("REMORA_CONTROL_REMOVAL_LOG");
    return system(cmd) == 0 ? 0 : -1;
}

#define SVC(name, ep)                                                                                                              \
    "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: " name "}\nspec: {protocol: grpc, endpoints: [\"" ep "\"]}\n"

static rm_store_t *
open_store(void)
{
    char path[300], err[256];
    snprintf(path, sizeof(path), "%s/state", dir);
    rm_store_t *s = rm_store_open(path, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "rm_store_open: %s\n", err);
    return s;
}

static void
apply(rm_store_t *s, const char *yaml)
{
    rm_batch_t b;
    char err[256];
    int changed;
    rm_batch_init(&b);
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    rm_batch_check(&b, rm_store_exists_cb, s);
    assert_int_equal(b.errors.size, 0);
    rm_store_action_t acts[16];
    assert_int_equal(rm_store_apply(s, &b, 0, acts, &changed, err, sizeof(err)), 0);
    assert_true(changed);
    rm_batch_dispose(&b);
}

static void
delete_svc(rm_store_t *s, const char *name)
{
    char err[256];
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", name, err, sizeof(err)), 0);
}

/* The delta from `base`, decoded (NULL when none can be made). */
static Remora__V1__Snapshot *
delta(rm_store_t *s, uint64_t base, rm_store_delta_info_t *info)
{
    size_t len;
    uint8_t *bytes = rm_store_delta(s, base, NULL, NULL, &len, info);
    if (bytes == NULL)
        return NULL;
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    free(bytes);
    assert_non_null(snap);
    assert_true(snap->incremental);
    assert_int_equal(snap->base_version, base);
    assert_int_equal(snap->version, rm_store_version(s));
    return snap;
}

static void
test_changes_since_a_version(void **state)
{
    rm_store_t *s = open_store();
    assert_non_null(s);
    assert_null(rm_store_delta(s, 0, NULL, NULL, &(size_t){0}, NULL)); /* nothing served: no delta */
    apply(s, SVC("a", "127.0.0.1:1") "---\n" SVC("b", "127.0.0.1:2") "---\n" SVC("c", "127.0.0.1:3")); /* v1 */
    apply(s, SVC("b", "127.0.0.1:22"));                                                                /* v2 */
    delete_svc(s, "c");                                                                                /* v3 */
    apply(s, SVC("d", "127.0.0.1:4"));                                                                 /* v4 */

    rm_store_delta_info_t info;
    Remora__V1__Snapshot *d = delta(s, 1, &info);
    assert_int_equal(d->n_services, 2); /* b changed, d created; a untouched */
    assert_string_equal(d->services[0]->metadata->name, "b");
    assert_string_equal(d->services[1]->metadata->name, "d");
    assert_int_equal(d->n_removed, 1);
    assert_int_equal(d->removed[0]->kind, REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_SERVICE);
    assert_string_equal(d->removed[0]->namespace_, "default");
    assert_string_equal(d->removed[0]->name, "c");
    assert_int_equal(info.changed, 2);
    assert_int_equal(info.removed, 1);
    remora__v1__snapshot__free_unpacked(d, NULL);

    d = delta(s, 3, NULL);
    assert_int_equal(d->n_services, 1);
    assert_string_equal(d->services[0]->metadata->name, "d");
    assert_int_equal(d->n_removed, 0);
    remora__v1__snapshot__free_unpacked(d, NULL);

    /* the current version: an empty delta; a future one: none */
    d = delta(s, 4, &info);
    assert_int_equal(d->n_services + d->n_removed, 0);
    remora__v1__snapshot__free_unpacked(d, NULL);
    assert_null(rm_store_delta(s, 5, NULL, NULL, &(size_t){0}, NULL));

    /* deleted, then created again: sent as a resource, not as a removal */
    apply(s, SVC("c", "127.0.0.1:33")); /* v5 */
    d = delta(s, 2, NULL);
    assert_int_equal(d->n_services, 2); /* c, d */
    assert_int_equal(d->n_removed, 0);
    remora__v1__snapshot__free_unpacked(d, NULL);
    rm_store_close(s);

    /* after a restart the history starts at the loaded version */
    s = open_store();
    assert_null(rm_store_delta(s, 4, NULL, NULL, &(size_t){0}, NULL));
    d = delta(s, 5, NULL);
    assert_int_equal(d->n_services + d->n_removed, 0);
    remora__v1__snapshot__free_unpacked(d, NULL);
    apply(s, SVC("a", "127.0.0.1:11")); /* v6 */
    d = delta(s, 5, NULL);
    assert_int_equal(d->n_services, 1);
    assert_string_equal(d->services[0]->metadata->name, "a");
    remora__v1__snapshot__free_unpacked(d, NULL);
    rm_store_close(s);
}

static void
test_removal_log_horizon(void **state)
{
    setenv("REMORA_CONTROL_REMOVAL_LOG", "2", 1);
    rm_store_t *s = open_store();
    apply(s, SVC("a", "127.0.0.1:1") "---\n" SVC("b", "127.0.0.1:2") "---\n" SVC("c", "127.0.0.1:3") "---\n" SVC(
                 "d", "127.0.0.1:4")); /* v1 */
    delete_svc(s, "a");                /* v2 */
    delete_svc(s, "b");                /* v3 */
    Remora__V1__Snapshot *d = delta(s, 1, NULL);
    assert_int_equal(d->n_removed, 2);
    remora__v1__snapshot__free_unpacked(d, NULL);
    delete_svc(s, "c"); /* v4: the log drops a's removal (v2) */
    assert_null(rm_store_delta(s, 1, NULL, NULL, &(size_t){0}, NULL));
    d = delta(s, 2, NULL);
    assert_int_equal(d->n_removed, 2);
    assert_string_equal(d->removed[0]->name, "b");
    assert_string_equal(d->removed[1]->name, "c");
    remora__v1__snapshot__free_unpacked(d, NULL);
    rm_store_close(s);
}

static rm_resource_t *
service(const char *yaml)
{
    rm_batch_t b;
    rm_batch_init(&b);
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    assert_int_equal(b.resources.size, 1);
    rm_resource_t *r = b.resources.entries[0];
    b.resources.entries[0] = NULL;
    rm_batch_dispose(&b);
    return r;
}

static void
replace(rm_store_t *s, uint64_t version, const char *a, const char *b)
{
    rm_resource_list_t list = {0};
    if (a != NULL)
        rm_resource_list_push(&list, service(a));
    if (b != NULL)
        rm_resource_list_push(&list, service(b));
    rm_store_replace(s, &list, version);
    rm_resource_list_dispose(&list);
}

static void
test_memory_store_hashed_versions(void **state)
{
    rm_store_t *s = rm_store_open_memory();
    replace(s, 0xaaaa, SVC("a", "127.0.0.1:1"), SVC("b", "127.0.0.1:2"));
    replace(s, 0x1234, SVC("a", "127.0.0.1:1"), SVC("b", "127.0.0.1:22")); /* b changed */
    replace(s, 0x0042, SVC("b", "127.0.0.1:22"), NULL);                    /* a gone */
    Remora__V1__Snapshot *d = delta(s, 0xaaaa, NULL);
    assert_int_equal(d->n_services, 1);
    assert_string_equal(d->services[0]->metadata->name, "b");
    assert_int_equal(d->n_removed, 1);
    assert_string_equal(d->removed[0]->name, "a");
    remora__v1__snapshot__free_unpacked(d, NULL);
    d = delta(s, 0x1234, NULL);
    assert_int_equal(d->n_services, 0);
    assert_int_equal(d->n_removed, 1);
    remora__v1__snapshot__free_unpacked(d, NULL);
    assert_null(rm_store_delta(s, 0x9999, NULL, NULL, &(size_t){0}, NULL)); /* never served here */
    rm_store_close(s);
}

/* Scoping (scope.h): hosts, the closure over a route and a policy, own Services, and a delta through a view. */
static void
test_scope_view(void **state)
{
    (void)state;
    assert_true(rm_scope_host_matches("./a", "shop", "shop", "a"));
    assert_false(rm_scope_host_matches("./a", "shop", "other", "a"));
    assert_true(rm_scope_host_matches("*/a", "shop", "other", "a"));
    assert_true(rm_scope_host_matches("other/*", "shop", "other", "zz"));
    assert_false(rm_scope_host_matches("other/*", "shop", "othe", "zz"));
    assert_false(rm_scope_host_matches("oth/*", "shop", "other", "zz"));
    rm_store_t *s = open_store();
    apply(s,
          SVC("a", "127.0.0.1:1") "---\n" SVC("b", "127.0.0.1:2") "---\n" SVC("c", "127.0.0.1:3") "---\n" SVC(
              "d",
              "127.0.0.1:4") "---\napiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: own}\nspec: {protocol: grpc, "
                             "serviceAccount: web, "
                             "endpoints: [\"127.0.0.1:5\"]}\n---\n"
                             "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: ra}\nspec:\n  parentRefs: [{name: a}]\n"
                             "  rules: [{backendRefs: [{name: b}]}]\n---\n"
                             "apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: pb}\nspec:\n"
                             "  targetRefs: [{name: b}, {name: c}]\n  connectionPool: {connectTimeout: 1s}\n---\n"
                             "apiVersion: remora.dev/v1\nkind: EgressPolicy\nmetadata: {name: web}\nspec:\n"
                             "  targetRefs: [{kind: ServiceAccount, name: web}]\n  hosts: [\"./a\"]\n");
    assert_null(rm_scope_policy(s, "default", "other"));
    assert_null(rm_scope_policy(s, "shop", "web"));
    const rm_resource_t *p = rm_scope_policy(s, "default", "web");
    assert_non_null(p);
    uint8_t *view[RM_KIND__ALL];
    /* a (host), its route ra, b (the route's backend), pb (b's policy), c (pb's other target), own: 6 */
    assert_int_equal(rm_scope_view(s, p, "web", view), 6);
    size_t n;
    rm_resource_t *const *svcs = rm_store_list(s, RM_KIND_SERVICE, &n);
    assert_int_equal(n, 5);
    for (size_t i = 0; i != n; ++i)
        assert_int_equal(view[RM_KIND_SERVICE][i], strcmp(svcs[i]->name, "d") != 0);
    size_t len;
    uint8_t *bytes = rm_store_snapshot_view(s, (const uint8_t *const *)view, NULL, &len);
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    assert_non_null(snap);
    assert_int_equal(snap->n_services, 4);
    assert_int_equal(snap->n_http_routes, 1);
    assert_int_equal(snap->n_backend_traffic_policies, 1);
    assert_int_equal(snap->n_egress_policies, 0);
    remora__v1__snapshot__free_unpacked(snap, NULL);
    free(bytes);
    uint64_t v = rm_store_version(s);
    for (int k = 0; k != RM_KIND__ALL; ++k)
        free(view[k]);
    /* d (outside) changes and c (inside) too: the delta through the view carries c only */
    apply(s, SVC("d", "127.0.0.1:9") "---\n" SVC("c", "127.0.0.1:8"));
    p = rm_scope_policy(s, "default", "web");
    rm_scope_view(s, p, "web", view);
    rm_store_delta_info_t info;
    bytes = rm_store_delta(s, v, (const uint8_t *const *)view, NULL, &len, &info);
    assert_non_null(bytes);
    assert_int_equal(info.changed, 1);
    assert_int_equal(info.removed, 0);
    snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    assert_int_equal(snap->n_services, 1);
    assert_string_equal(snap->services[0]->metadata->name, "c");
    remora__v1__snapshot__free_unpacked(snap, NULL);
    free(bytes);
    for (int k = 0; k != RM_KIND__ALL; ++k)
        free(view[k]);
    rm_store_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changes_since_a_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removal_log_horizon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_store_hashed_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scope_view, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
