/*
 * The durable store: versions, idempotency, atomic writes (a failed write changes nothing), reload
 * after a restart, the directory lock, deletion rules and corrupt-file detection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "remora/v1/discovery.pb-c.h"
#include "store.h"

static char dir[256];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/rm_store_test.XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#define SVC(name, ep)                                                                                                              \
    "apiVersion: remora.dev/v1\nkind: Service\nmetadata: {name: " name "}\nspec: {protocol: grpc, endpoints: [\"" ep "\"]}\n"
#define ROUTE(name, svc)                                                                                                           \
    "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: " name "}\nspec:\n  parentRefs: [{name: " svc "}]\n"             \
    "  rules: [{backendRefs: [{name: " svc "}]}]\n"

static char *
state_path(const char *name, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "%s/state/%s", dir, name);
    return buf;
}

static rm_store_t *
open_store(void)
{
    char path[300], err[256];
    rm_store_t *s = rm_store_open(state_path("", path, sizeof(path)), err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "rm_store_open: %s\n", err);
    return s;
}

/* Applies YAML; returns 0 / -1 like rm_store_apply and the actions of its resources. */
static int
apply(rm_store_t *s, const char *yaml, int dry_run, int *changed, rm_store_action_t *actions, size_t max_actions)
{
    rm_batch_t b;
    char err[256];
    rm_batch_init(&b);
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    rm_batch_check(&b, rm_store_exists_cb, s);
    assert_int_equal(b.errors.size, 0);
    rm_store_action_t acts[16];
    assert_true(b.resources.size <= 16);
    int rc = rm_store_apply(s, &b, dry_run, acts, changed, err, sizeof(err));
    if (actions != NULL)
        memcpy(actions, acts, sizeof(acts[0]) * (b.resources.size < max_actions ? b.resources.size : max_actions));
    rm_batch_dispose(&b);
    return rc;
}

static void
test_versions_and_idempotency(void **state)
{
    rm_store_t *s = open_store();
    assert_non_null(s);
    assert_int_equal(rm_store_version(s), 0);
    char path[300];
    struct stat st;
    /* a new directory gets its identity at once: store.pb at version 0, no resources */
    assert_int_equal(stat(state_path(RM_STORE_FILE, path, sizeof(path)), &st), 0);

    int changed;
    rm_store_action_t acts[4];
    assert_int_equal(apply(s, SVC("b", "127.0.0.1:2") "---\n" SVC("a", "127.0.0.1:1"), 0, &changed, acts, 4), 0);
    assert_true(changed);
    assert_int_equal(acts[0], RM_STORE_CREATED);
    assert_int_equal(rm_store_version(s), 1);
    size_t n;
    rm_resource_t *const *list = rm_store_list(s, RM_KIND_SERVICE, &n);
    assert_int_equal(n, 2);
    assert_string_equal(list[0]->name, "a"); /* sorted */
    assert_non_null(rm_store_find(s, RM_KIND_SERVICE, "default", "b"));
    assert_null(rm_store_find(s, RM_KIND_SERVICE, "other", "b"));
    assert_int_equal(stat(path, &st), 0);

    /* the same content again: no new version, the file is not rewritten */
    struct stat st2;
    assert_int_equal(apply(s, SVC("a", "127.0.0.1:1"), 0, &changed, acts, 4), 0);
    assert_false(changed);
    assert_int_equal(acts[0], RM_STORE_UNCHANGED);
    assert_int_equal(rm_store_version(s), 1);
    assert_int_equal(stat(path, &st2), 0);
    assert_int_equal(st.st_ino, st2.st_ino);

    /* a dry run reports what would happen and changes nothing */
    assert_int_equal(apply(s, SVC("a", "127.0.0.1:9") "---\n" SVC("c", "127.0.0.1:3"), 1, &changed, acts, 4), 0);
    assert_false(changed);
    assert_int_equal(acts[0], RM_STORE_CONFIGURED);
    assert_int_equal(acts[1], RM_STORE_CREATED);
    assert_int_equal(rm_store_version(s), 1);
    assert_null(rm_store_find(s, RM_KIND_SERVICE, "default", "c"));

    /* one change of several resources is one version */
    assert_int_equal(
        apply(s, SVC("a", "127.0.0.1:9") "---\n" SVC("c", "127.0.0.1:3") "---\n" SVC("b", "127.0.0.1:2"), 0, &changed, acts, 4), 0);
    assert_true(changed);
    assert_int_equal(acts[0], RM_STORE_CONFIGURED);
    assert_int_equal(acts[1], RM_STORE_CREATED);
    assert_int_equal(acts[2], RM_STORE_UNCHANGED);
    assert_int_equal(rm_store_version(s), 2);
    rm_store_close(s);
}

static void
test_reload(void **state)
{
    rm_store_t *s = open_store();
    int changed;
    assert_int_equal(apply(s, SVC("echo", "127.0.0.1:1") "---\n" ROUTE("r", "echo"), 0, &changed, NULL, 0), 0);
    assert_int_equal(apply(s, SVC("echo", "127.0.0.1:2"), 0, &changed, NULL, 0), 0);
    size_t len;
    const uint8_t *snap = rm_store_snapshot(s, &len);
    uint8_t *before = malloc(len);
    memcpy(before, snap, len);
    size_t before_len = len;
    rm_store_close(s);

    s = open_store();
    assert_non_null(s);
    assert_int_equal(rm_store_version(s), 2);
    snap = rm_store_snapshot(s, &len);
    assert_int_equal(len, before_len);
    assert_memory_equal(snap, before, len);
    free(before);

    /* the snapshot is a remora.v1.Snapshot without a nonce */
    Remora__V1__Snapshot *m = remora__v1__snapshot__unpack(NULL, len, snap);
    assert_non_null(m);
    assert_int_equal(m->version, 2);
    assert_string_equal(m->nonce, "");
    assert_int_equal(m->n_services, 1);
    assert_string_equal(m->services[0]->spec->endpoints[0]->address, "127.0.0.1:2");
    assert_int_equal(m->n_http_routes, 1);
    remora__v1__snapshot__free_unpacked(m, NULL);

    /* versions keep growing after a reload */
    assert_int_equal(apply(s, SVC("x", "127.0.0.1:3"), 0, &changed, NULL, 0), 0);
    assert_int_equal(rm_store_version(s), 3);
    rm_store_close(s);
}

static void
test_lock(void **state)
{
    char path[300], err[256];
    rm_store_t *s = open_store();
    assert_non_null(s);
    assert_null(rm_store_open(state_path("", path, sizeof(path)), err, sizeof(err)));
    assert_non_null(strstr(err, "is in use by another remora-control"));
    rm_store_close(s);
    s = open_store();
    assert_non_null(s);
    rm_store_close(s);
}

static void
test_failed_write_changes_nothing(void **state)
{
    char path[300];
    rm_store_t *s = open_store();
    int changed;
    assert_int_equal(apply(s, SVC("echo", "127.0.0.1:1"), 0, &changed, NULL, 0), 0);
    /* a directory where the temp file goes makes the write fail */
    assert_int_equal(mkdir(state_path(RM_STORE_FILE ".tmp", path, sizeof(path)), 0700), 0);
    rm_batch_t b;
    char err[256];
    const char *yaml = SVC("echo", "127.0.0.1:2") "---\n" SVC("new", "127.0.0.1:3");
    rm_batch_init(&b);
    rm_batch_parse(&b, "t.yaml", yaml, strlen(yaml));
    rm_store_action_t acts[2];
    assert_int_equal(rm_store_apply(s, &b, 0, acts, &changed, err, sizeof(err)), -1);
    assert_false(changed);
    assert_non_null(strstr(err, "cannot create"));
    /* the resources stay with the batch; the store is as before */
    assert_non_null(b.resources.entries[0]);
    rm_batch_dispose(&b);
    assert_int_equal(rm_store_version(s), 1);
    assert_null(rm_store_find(s, RM_KIND_SERVICE, "default", "new"));
    const Remora__V1__Service *svc = (const void *)rm_store_find(s, RM_KIND_SERVICE, "default", "echo")->msg;
    assert_string_equal(svc->spec->endpoints[0]->address, "127.0.0.1:1");
    char err2[256];
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "echo", err2, sizeof(err2)), -1);
    assert_non_null(rm_store_find(s, RM_KIND_SERVICE, "default", "echo"));
    rmdir(path);
    assert_int_equal(apply(s, yaml, 0, &changed, NULL, 0), 0);
    assert_int_equal(rm_store_version(s), 2);
    rm_store_close(s);

    /* no temp file survives, and the state on disk is the last good one */
    DIR *d = opendir(state_path("", path, sizeof(path)));
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') {
            ++files;
            assert_true(strcmp(e->d_name, "LOCK") == 0 || strcmp(e->d_name, RM_STORE_FILE) == 0);
        }
    closedir(d);
    assert_int_equal(files, 2);
    s = open_store();
    assert_int_equal(rm_store_version(s), 2);
    assert_non_null(rm_store_find(s, RM_KIND_SERVICE, "default", "new"));
    rm_store_close(s);
}

static void
test_delete(void **state)
{
    rm_store_t *s = open_store();
    int changed;
    char err[512];
    assert_int_equal(
        apply(s, SVC("echo", "127.0.0.1:1") "---\n" SVC("v2", "127.0.0.1:2") "---\n" ROUTE("r", "echo"), 0, &changed, NULL, 0), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "nope", err, sizeof(err)), RM_STORE_ENOENT);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "echo", err, sizeof(err)), RM_STORE_EINUSE);
    assert_string_equal(err, "service/echo is used by httproute/r (namespace default); delete those or remove the reference first");
    assert_int_equal(rm_store_version(s), 1);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "v2", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_HTTP_ROUTE, "default", "r", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "echo", err, sizeof(err)), 0);
    assert_int_equal(rm_store_version(s), 4);
    size_t n;
    rm_store_list(s, RM_KIND_SERVICE, &n);
    assert_int_equal(n, 0);
    rm_store_close(s);
    s = open_store();
    assert_int_equal(rm_store_version(s), 4);
    rm_store_list(s, RM_KIND_SERVICE, &n);
    assert_int_equal(n, 0);
    rm_store_close(s);
}

static void
corrupt(long offset, int truncate_to)
{
    char path[300];
    state_path(RM_STORE_FILE, path, sizeof(path));
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    if (truncate_to >= 0) {
        assert_int_equal(ftruncate(fileno(fp), truncate_to), 0);
    } else {
        fseek(fp, offset, offset < 0 ? SEEK_END : SEEK_SET);
        int c = fgetc(fp);
        fseek(fp, offset, offset < 0 ? SEEK_END : SEEK_SET);
        fputc(c ^ 0x5a, fp);
    }
    fclose(fp);
}

/* A RateLimitPolicy protects its targets, a route as well as a Service, and has its own Snapshot field. */
static void
test_rate_limit_policy(void **state)
{
    rm_store_t *s = open_store();
    int changed;
    char err[512];
    assert_int_equal(
        apply(s,
              SVC("echo", "127.0.0.1:1") "---\n"
                                         "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n"
                                         "  parentRefs: [{name: echo}]\n  rules:\n  - backendRefs: [{name: echo}]\n---\n"
                                         "apiVersion: remora.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: l}\n"
                                         "spec: {targetRefs: [{kind: HTTPRoute, name: r}, {name: echo}], "
                                         "total: {requestsPerSecond: 10}}\n",
              0, &changed, NULL, 0),
        0);
    assert_int_equal(rm_store_delete(s, RM_KIND_HTTP_ROUTE, "default", "r", err, sizeof(err)), RM_STORE_EINUSE);
    assert_string_equal(err, "httproute/r is used by ratelimitpolicy/l (namespace default); delete those or remove the "
                             "reference first");
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "echo", err, sizeof(err)), RM_STORE_EINUSE);
    assert_non_null(strstr(err, "ratelimitpolicy/l (namespace default)"));
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(s, &len);
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    assert_non_null(snap);
    assert_int_equal(snap->n_rate_limit_policies, 1);
    assert_string_equal(snap->rate_limit_policies[0]->spec->target_refs[0]->kind, "HTTPRoute");
    remora__v1__snapshot__free_unpacked(snap, NULL);
    assert_int_equal(rm_store_delete(s, RM_KIND_RATE_LIMIT_POLICY, "default", "l", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_HTTP_ROUTE, "default", "r", err, sizeof(err)), 0);
    rm_store_close(s);
}

/* Policy kinds are stored, reloaded and protected like the others: a FaultInjection that a route names and a
 * Service that a mirror or a BackendTrafficPolicy names cannot be deleted. */
static void
test_policy_kinds(void **state)
{
    rm_store_t *s = open_store();
    int changed;
    char err[512];
    assert_int_equal(
        apply(s,
              SVC("echo", "127.0.0.1:1") "---\n" SVC("shadow", "127.0.0.1:2") "---\n" SVC(
                  "db", "127.0.0.1:3") "---\n"
                                       "apiVersion: remora.dev/v1\nkind: FaultInjection\nmetadata: {name: chaos}\n"
                                       "spec: {delay: {fixedDelay: 10ms}}\n---\n"
                                       "apiVersion: remora.dev/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: "
                                       "[{name: echo}]\n"
                                       "  rules:\n  - backendRefs: [{name: echo}]\n"
                                       "    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}, "
                                       "{type: ExtensionRef, extensionRef: {name: chaos}}]\n---\n"
                                       "apiVersion: remora.dev/v1\nkind: BackendTrafficPolicy\nmetadata: {name: p}\n"
                                       "spec: {targetRefs: [{name: db}], retryConstraint: {}}\n",
              0, &changed, NULL, 0),
        0);
    assert_int_equal(rm_store_version(s), 1);
    assert_int_equal(rm_store_delete(s, RM_KIND_FAULT_INJECTION, "default", "chaos", err, sizeof(err)), RM_STORE_EINUSE);
    assert_string_equal(err, "faultinjection/chaos is used by httproute/r (namespace default); delete those or remove the "
                             "reference first");
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "shadow", err, sizeof(err)), RM_STORE_EINUSE);
    assert_non_null(strstr(err, "service/shadow is used by httproute/r"));
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "db", err, sizeof(err)), RM_STORE_EINUSE);
    assert_non_null(strstr(err, "service/db is used by backendtrafficpolicy/p (namespace default)"));
    assert_int_equal(rm_store_version(s), 1);

    /* the snapshot carries them in their own fields, and they survive a restart */
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(s, &len);
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    assert_non_null(snap);
    assert_int_equal(snap->n_fault_injections, 1);
    assert_int_equal(snap->n_backend_traffic_policies, 1);
    assert_string_equal(snap->backend_traffic_policies[0]->spec->target_refs[0]->name, "db");
    remora__v1__snapshot__free_unpacked(snap, NULL);
    rm_store_close(s);
    s = open_store();
    assert_non_null(rm_store_find(s, RM_KIND_FAULT_INJECTION, "default", "chaos"));
    assert_non_null(rm_store_find(s, RM_KIND_BACKEND_TRAFFIC_POLICY, "default", "p"));

    /* once nothing refers to them, they go */
    assert_int_equal(rm_store_delete(s, RM_KIND_HTTP_ROUTE, "default", "r", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_FAULT_INJECTION, "default", "chaos", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "shadow", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_BACKEND_TRAFFIC_POLICY, "default", "p", err, sizeof(err)), 0);
    assert_int_equal(rm_store_delete(s, RM_KIND_SERVICE, "default", "db", err, sizeof(err)), 0);
    assert_int_equal(rm_store_version(s), 6);
    rm_store_close(s);
}

static void
test_corrupt(void **state)
{
    char path[300], err[256];
    state_path("", path, sizeof(path));
    rm_store_t *s = open_store();
    int changed;
    assert_int_equal(apply(s, SVC("echo", "127.0.0.1:1"), 0, &changed, NULL, 0), 0);
    rm_store_close(s);
    struct {
        long offset;
        int truncate_to;
        const char *want;
    } cases[] = {{-2, -1, "checksum mismatch"}, {0, -1, "not a remora-control state file"}, {0, 30, "truncated"}, {0, 5, "size 5"}};
    char saved[4096];
    char file[300];
    state_path(RM_STORE_FILE, file, sizeof(file));
    FILE *fp = fopen(file, "rb");
    size_t len = fread(saved, 1, sizeof(saved), fp);
    fclose(fp);
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        corrupt(cases[i].offset, cases[i].truncate_to);
        assert_null(rm_store_open(path, err, sizeof(err)));
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].want);
        fp = fopen(file, "wb");
        fwrite(saved, 1, len, fp);
        fclose(fp);
    }
    /* a temp file left by a crash is ignored and removed */
    char tmp[300];
    fp = fopen(state_path(RM_STORE_FILE ".tmp", tmp, sizeof(tmp)), "wb");
    fputs("half-written", fp);
    fclose(fp);
    s = open_store();
    assert_non_null(s);
    assert_int_equal(rm_store_version(s), 1);
    assert_int_equal(access(tmp, F_OK), -1);
    rm_store_close(s);
}

/* The store's identity: made with the directory, kept across restarts, another for another directory, in every
 * encoding (full and delta); the memory store's is a constant. */
static void
test_identity(void **state)
{
    (void)state;
    uint8_t id[RM_STORE_ID_BYTES], zero[RM_STORE_ID_BYTES] = {0};
    rm_store_t *s = open_store();
    assert_non_null(s);
    memcpy(id, rm_store_id(s), sizeof(id));
    assert_memory_not_equal(id, zero, sizeof(id));
    int changed;
    assert_int_equal(apply(s, SVC("a", "127.0.0.1:1"), 0, &changed, NULL, 0), 0);
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(s, &len);
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    assert_non_null(snap);
    assert_int_equal(snap->store_id.len, RM_STORE_ID_BYTES);
    assert_memory_equal(snap->store_id.data, id, sizeof(id));
    remora__v1__snapshot__free_unpacked(snap, NULL);
    uint8_t *delta = rm_store_delta(s, 1, NULL, NULL, &len, NULL);
    assert_non_null(delta);
    snap = remora__v1__snapshot__unpack(NULL, len, delta);
    assert_non_null(snap);
    assert_true(snap->incremental);
    assert_memory_equal(snap->store_id.data, id, sizeof(id));
    remora__v1__snapshot__free_unpacked(snap, NULL);
    free(delta);
    rm_store_close(s);
    /* reopened: the same identity, and a delta from the version loaded (empty) but none from before it */
    s = open_store();
    assert_memory_equal(rm_store_id(s), id, sizeof(id));
    assert_int_equal(rm_store_version(s), 1);
    delta = rm_store_delta(s, 1, NULL, NULL, &len, NULL);
    assert_non_null(delta);
    free(delta);
    rm_store_close(s);
    /* another directory: another identity */
    char other[300], err[256];
    snprintf(other, sizeof(other), "%s/other", dir);
    rm_store_t *o = rm_store_open(other, err, sizeof(err));
    assert_non_null(o);
    assert_memory_not_equal(rm_store_id(o), id, sizeof(id));
    rm_store_close(o);
    rm_store_t *m1 = rm_store_open_memory(), *m2 = rm_store_open_memory();
    assert_memory_equal(rm_store_id(m1), rm_store_id(m2), RM_STORE_ID_BYTES);
    rm_store_close(m1);
    rm_store_close(m2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_versions_and_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
