/* Sidecar injection (control/src/inject.c), manifests (manifest.c) and the webhook's review (webhook.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include "inject.h"
#include "manifest.h"
#include "webhook.h"

static json_t *
parse_one(const char *yaml)
{
    rm_manifest_t m;
    char err[512];
    if (rm_manifest_parse(yaml, strlen(yaml), "test", &m, err, sizeof(err)) != 0)
        fail_msg("parse: %s", err);
    assert_int_equal(m.num_docs, 1);
    json_t *d = json_incref(m.docs[0]);
    rm_manifest_dispose(&m);
    return d;
}

static const char *
op_path(const json_t *patch, size_t i)
{
    return json_string_value(json_object_get(json_array_get(patch, i), "path"));
}

static const char *
op_kind(const json_t *patch, size_t i)
{
    return json_string_value(json_object_get(json_array_get(patch, i), "op"));
}

static json_t *
find_named(const json_t *list, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach((json_t *)list, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    }
    return NULL;
}

static const char *
env_of(const json_t *container, const char *name)
{
    json_t *e = find_named(json_object_get(container, "env"), name);
    return e != NULL ? json_string_value(json_object_get(e, "value")) : NULL;
}

static const char simple_pod[] = "apiVersion: v1\n"
                                 "kind: Pod\n"
                                 "metadata: {name: web, namespace: shop}\n"
                                 "spec:\n"
                                 "  containers:\n"
                                 "  - name: web\n"
                                 "    image: nginx\n"
                                 "    ports: [{name: http, containerPort: 8080}]\n"
                                 "    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 5}\n"
                                 "    livenessProbe: {tcpSocket: {port: 8080}}\n"
                                 "  - name: api\n"
                                 "    image: api\n"
                                 "    livenessProbe: {grpc: {port: 9090}, timeoutSeconds: 3}\n";

/* Injects and applies; returns the injected pod. */
static json_t *
inject(const rm_inject_config_t *cfg, const json_t *pod, json_t **patch_out)
{
    json_t *patch = NULL;
    char reason[600];
    rm_inject_result_t r = rm_inject_pod(cfg, pod, &patch, NULL, reason, sizeof(reason));
    if (r != RM_INJECT_PATCH)
        fail_msg("not injected: %s", reason);
    json_t *out = json_deep_copy(pod);
    char err[600];
    if (rm_jsonpatch_apply(out, patch, err, sizeof(err)) != 0)
        fail_msg("apply: %s", err);
    if (patch_out != NULL)
        *patch_out = patch;
    else
        json_decref(patch);
    return out;
}

static void
test_manifest_typing(void **state)
{
    json_t *d = parse_one("a: yes\nb: 'yes'\nc: 0x10\nd: 1.5\ne: ~\nf: \"8080\"\ng: 010\nh: 12abc\ni: [1, true]\n");
    assert_true(json_is_true(json_object_get(d, "a")));
    assert_string_equal(json_string_value(json_object_get(d, "b")), "yes");
    assert_int_equal(json_integer_value(json_object_get(d, "c")), 16);
    assert_true(json_is_real(json_object_get(d, "d")));
    assert_true(json_is_null(json_object_get(d, "e")));
    assert_string_equal(json_string_value(json_object_get(d, "f")), "8080");
    assert_int_equal(json_integer_value(json_object_get(d, "g")), 8);
    assert_string_equal(json_string_value(json_object_get(d, "h")), "12abc");
    /* strings that would read back as something else are quoted; the round trip is exact */
    char *out = rm_manifest_emit(&d, 1, RM_MANIFEST_YAML);
    assert_non_null(strstr(out, "b: \"yes\""));
    assert_non_null(strstr(out, "f: \"8080\""));
    json_t *back = parse_one(out);
    assert_true(json_equal(d, back));
    free(out);
    json_decref(back);
    json_decref(d);
}

static void
test_manifest_streams_and_errors(void **state)
{
    rm_manifest_t m;
    char err[512];
    const char *yaml = "a: 1\n---\n---\nb: 2\n";
    assert_int_equal(rm_manifest_parse(yaml, strlen(yaml), "f.yaml", &m, err, sizeof(err)), 0);
    assert_int_equal(m.num_docs, 2); /* the empty document is left out */
    assert_int_equal(m.format, RM_MANIFEST_YAML);
    assert_int_equal(m.lines[1], 4);
    rm_manifest_dispose(&m);
    const char *json = "{\"a\": 1}\n{\"b\": [2]}\n";
    assert_int_equal(rm_manifest_parse(json, strlen(json), "f.json", &m, err, sizeof(err)), 0);
    assert_int_equal(m.num_docs, 2);
    assert_int_equal(m.format, RM_MANIFEST_JSON);
    rm_manifest_dispose(&m);
    const char *dup = "a: 1\nb: 2\na: 3\n";
    assert_int_equal(rm_manifest_parse(dup, strlen(dup), "f.yaml", &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "f.yaml:3: duplicate key 'a'"));
    const char *bad = "a: [1,\n";
    assert_int_equal(rm_manifest_parse(bad, strlen(bad), "f.yaml", &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "f.yaml:"));
    const char *badjson = "{\"a\": 1}\n{\"b\": }\n";
    assert_int_equal(rm_manifest_parse(badjson, strlen(badjson), "f.json", &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "f.json:2:"));
}

static void
test_pointer_escaping(void **state)
{
    char *p = rm_json_pointer_join("/metadata/annotations", "remora.dev/injected");
    assert_string_equal(p, "/metadata/annotations/remora.dev~1injected");
    free(p);
    p = rm_json_pointer_join("", "a~b/c");
    assert_string_equal(p, "/a~0b~1c");
    free(p);
}

static void
test_jsonpatch_rfc6902(void **state)
{
    json_t *doc = json_loads("{\"foo\":[\"bar\",\"baz\"],\"a/b\":1,\"m~n\":2,\"q\":{\"x\":1}}", 0, NULL);
    json_t *patch = json_loads("[{\"op\":\"add\",\"path\":\"/foo/1\",\"value\":\"qux\"},"
                               "{\"op\":\"add\",\"path\":\"/foo/-\",\"value\":\"end\"},"
                               "{\"op\":\"replace\",\"path\":\"/a~1b\",\"value\":10},"
                               "{\"op\":\"remove\",\"path\":\"/m~0n\"},"
                               "{\"op\":\"copy\",\"from\":\"/q\",\"path\":\"/r\"},"
                               "{\"op\":\"move\",\"from\":\"/q/x\",\"path\":\"/q/y\"},"
                               "{\"op\":\"test\",\"path\":\"/foo/0\",\"value\":\"bar\"},"
                               "{\"op\":\"add\",\"path\":\"/new\",\"value\":[]}]",
                               0, NULL);
    char err[512];
    assert_int_equal(rm_jsonpatch_apply(doc, patch, err, sizeof(err)), 0);
    json_t *want =
        json_loads("{\"foo\":[\"bar\",\"qux\",\"baz\",\"end\"],\"a/b\":10,\"q\":{\"y\":1},\"r\":{\"x\":1},\"new\":[]}", 0, NULL);
    assert_true(json_equal(doc, want));
    json_decref(patch);
    /* errors: a missing parent, an index past the end, a leading zero, a failed test */
    static const char *const bad[] = {
        "[{\"op\":\"add\",\"path\":\"/nope/x\",\"value\":1}]",
        "[{\"op\":\"add\",\"path\":\"/foo/9\",\"value\":1}]",
        "[{\"op\":\"remove\",\"path\":\"/foo/01\"}]",
        "[{\"op\":\"test\",\"path\":\"/a~1b\",\"value\":11}]",
        "[{\"op\":\"replace\",\"path\":\"/missing\",\"value\":1}]",
        "[{\"op\":\"frobnicate\",\"path\":\"/a\"}]",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        patch = json_loads(bad[i], 0, NULL);
        assert_int_equal(rm_jsonpatch_apply(doc, patch, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "operation 0"));
        json_decref(patch);
    }
    json_decref(want);
    json_decref(doc);
}

static void
test_inject_native(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    json_t *pod = parse_one(simple_pod), *patch;
    json_t *out = inject(&cfg, pod, &patch);
    /* no annotations, volumes or init containers: each list is made by one "add" */
    assert_string_equal(op_kind(patch, 0), "add");
    assert_string_equal(op_path(patch, 0), "/metadata/annotations");
    int saw_init = 0, saw_vol = 0;
    for (size_t i = 0; i != json_array_size(patch); ++i) {
        saw_init |= strcmp(op_path(patch, i), "/spec/initContainers") == 0;
        saw_vol |= strcmp(op_path(patch, i), "/spec/volumes") == 0;
    }
    assert_true(saw_init && saw_vol);
    json_t *spec = json_object_get(out, "spec"), *init = json_object_get(spec, "initContainers");
    assert_int_equal(json_array_size(init), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(init, 0), "name")), "remora-init");
    json_t *proxy = json_array_get(init, 1);
    assert_string_equal(json_string_value(json_object_get(proxy, "name")), "remora-proxy");
    assert_string_equal(json_string_value(json_object_get(proxy, "restartPolicy")), "Always");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(proxy, "startupProbe"), "httpGet"), "path")), "/ready");
    assert_string_equal(env_of(proxy, "REMORA_NODE_ID"), "$(POD_NAME).$(POD_NAMESPACE)");
    assert_string_equal(env_of(proxy, "REMORA_TRANSPARENT"), "1");
    assert_string_equal(env_of(proxy, "REMORA_IDENTITY_TOKEN_FILE"), "/var/run/remora/tokens/token");
    assert_null(env_of(proxy, "REMORA_OUTBOUND_GRACE_MS"));
    /* the downward API variables come first, so that $(POD_NAME) expands */
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(proxy, "env"), 0), "name")), "POD_NAME");
    assert_int_equal(json_array_size(json_object_get(spec, "containers")), 2);
    /* the init container: root with NET_ADMIN and NET_RAW only */
    json_t *sc = json_object_get(json_array_get(init, 0), "securityContext");
    assert_int_equal(json_integer_value(json_object_get(sc, "runAsUser")), 0);
    json_t *add = json_object_get(json_object_get(sc, "capabilities"), "add");
    assert_int_equal(json_array_size(add), 2);
    assert_string_equal(json_string_value(json_array_get(add, 0)), "NET_ADMIN");
    /* probes: the HTTP one (a named port) and the gRPC one rewritten, the TCP one left */
    json_t *web = json_array_get(json_object_get(spec, "containers"), 0);
    json_t *rp = json_object_get(json_object_get(web, "readinessProbe"), "httpGet");
    assert_string_equal(json_string_value(json_object_get(rp, "path")), "/app-health/web/readyz");
    assert_int_equal(json_integer_value(json_object_get(rp, "port")), 15020);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(web, "readinessProbe"), "periodSeconds")), 5);
    assert_non_null(json_object_get(json_object_get(web, "livenessProbe"), "tcpSocket"));
    json_t *probes = json_loads(env_of(proxy, "REMORA_APP_PROBES"), 0, NULL);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(json_object_get(probes, "/app-health/web/readyz"), "httpGet"), "port")),
        8080);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(json_object_get(probes, "/app-health/api/livez"), "grpc"), "port")),
        9090);
    json_decref(probes);
    json_t *ann = json_object_get(json_object_get(out, "metadata"), "annotations");
    assert_string_equal(json_string_value(json_object_get(ann, "remora.dev/injected")), "0.1.0");
    assert_non_null(json_object_get(ann, "remora.dev/original-probes"));
    /* idempotent */
    json_t *again = NULL;
    char reason[600];
    assert_int_equal(rm_inject_pod(&cfg, out, &again, NULL, reason, sizeof(reason)), RM_INJECT_SKIP);
    assert_null(again);
    assert_non_null(strstr(reason, "already injected"));
    /* uninject gives the pod back */
    json_t *un;
    assert_int_equal(rm_uninject_pod(out, &un, reason, sizeof(reason)), RM_INJECT_PATCH);
    char err[600];
    assert_int_equal(rm_jsonpatch_apply(out, un, err, sizeof(err)), 0);
    assert_true(json_equal(out, pod));
    json_decref(un);
    json_decref(patch);
    json_decref(out);
    json_decref(pod);
    rm_inject_config_dispose(&cfg);
}

static void
test_inject_existing_lists_and_regular_sidecar(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    json_t *pod =
        parse_one("metadata:\n"
                  "  name: job\n"
                  "  annotations: {config.remora.dev/native-sidecar: \"false\", config.remora.dev/proxy-cpu-limit: 500m,\n"
                  "                config.remora.dev/skip-inbound-ports: \"22, 2222\", config.remora.dev/opaque-ports: \"5432\"}\n"
                  "spec:\n"
                  "  initContainers: [{name: migrate, image: m}]\n"
                  "  volumes: [{name: data, emptyDir: {}}]\n"
                  "  containers: [{name: app, image: a}]\n");
    json_t *patch;
    json_t *out = inject(&cfg, pod, &patch);
    /* existing lists: inserts at 0 and 1, appends with "-", annotations one by one (escaped) */
    int saw_escaped = 0, saw_append = 0, saw_index0 = 0;
    for (size_t i = 0; i != json_array_size(patch); ++i) {
        saw_escaped |= strcmp(op_path(patch, i), "/metadata/annotations/remora.dev~1injected") == 0;
        saw_append |= strcmp(op_path(patch, i), "/spec/volumes/-") == 0;
        saw_index0 |= strcmp(op_path(patch, i), "/spec/initContainers/0") == 0;
    }
    assert_true(saw_escaped && saw_append && saw_index0);
    json_t *spec = json_object_get(out, "spec");
    json_t *init = json_object_get(spec, "initContainers"), *containers = json_object_get(spec, "containers");
    assert_int_equal(json_array_size(init), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(init, 0), "name")), "remora-init");
    assert_string_equal(json_string_value(json_object_get(json_array_get(init, 1), "name")), "migrate");
    assert_int_equal(json_array_size(json_object_get(spec, "volumes")), 4);
    /* a regular container first, with the postStart hook and the outbound grace */
    json_t *proxy = json_array_get(containers, 0);
    assert_string_equal(json_string_value(json_object_get(proxy, "name")), "remora-proxy");
    assert_null(json_object_get(proxy, "restartPolicy"));
    json_t *cmd =
        json_object_get(json_object_get(json_object_get(json_object_get(proxy, "lifecycle"), "postStart"), "exec"), "command");
    assert_string_equal(json_string_value(json_array_get(cmd, 1)), "await");
    assert_string_equal(env_of(proxy, "REMORA_OUTBOUND_GRACE_MS"), "10000");
    assert_string_equal(env_of(proxy, "REMORA_OPAQUE_PORTS"), "5432");
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(proxy, "resources"), "limits"), "cpu")),
                        "500m");
    json_t *args = json_object_get(json_array_get(init, 0), "args");
    int saw_ports = 0;
    for (size_t i = 0; i + 1 < json_array_size(args); ++i)
        saw_ports |= strcmp(json_string_value(json_array_get(args, i)), "--exclude-inbound-ports") == 0 &&
                     strcmp(json_string_value(json_array_get(args, i + 1)), "22,2222") == 0;
    assert_true(saw_ports);
    char reason[600];
    json_t *un;
    assert_int_equal(rm_uninject_pod(out, &un, reason, sizeof(reason)), RM_INJECT_PATCH);
    char err[600];
    assert_int_equal(rm_jsonpatch_apply(out, un, err, sizeof(err)), 0);
    assert_true(json_equal(out, pod));
    json_decref(un);
    json_decref(patch);
    json_decref(out);
    json_decref(pod);
    rm_inject_config_dispose(&cfg);
}

static void
test_inject_skips_and_refusals(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    static const struct {
        const char *yaml;
        rm_inject_result_t want;
        const char *reason;
    } cases[] = {
        {"spec: {hostNetwork: true, containers: [{name: a}]}", RM_INJECT_SKIP, "hostNetwork"},
        {"metadata: {annotations: {remora.dev/inject: disabled}}\nspec: {containers: [{name: a}]}", RM_INJECT_SKIP, "disabled"},
        {"metadata: {annotations: {remora.dev/injected: 0.0.9}}\nspec: {containers: [{name: a}]}", RM_INJECT_SKIP,
         "already injected"},
        {"spec: {containers: [{name: remora-proxy}]}", RM_INJECT_SKIP, "already injected"},
        {"metadata: {annotations: {remora.dev/inject: maybe}}\nspec: {containers: [{name: a}]}", RM_INJECT_INVALID,
         "enabled or disabled"},
        {"metadata: {annotations: {config.remora.dev/opaque-ports: \"80,http\"}}\nspec: {containers: [{name: a}]}",
         RM_INJECT_INVALID, "\"http\" is not a port"},
        {"metadata: {annotations: {config.remora.dev/proxy-memory-limit: lots}}\nspec: {containers: [{name: a}]}",
         RM_INJECT_INVALID, "not a resource quantity"},
        {"metadata: {annotations: {config.remora.dev/native-sidecar: yes}}\nspec: {containers: [{name: a}]}", RM_INJECT_INVALID,
         "must be a string"},
        {"spec: {volumes: [{name: remora-token}], containers: [{name: a}]}", RM_INJECT_INVALID, "reserved"},
        {"metadata: {name: x}", RM_INJECT_INVALID, "no spec"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        json_t *pod = parse_one(cases[i].yaml), *patch = NULL;
        char reason[600];
        rm_inject_result_t r = rm_inject_pod(&cfg, pod, &patch, NULL, reason, sizeof(reason));
        if (r != cases[i].want || strstr(reason, cases[i].reason) == NULL)
            fail_msg("case %zu: got %d (%s), want %d (%s)", i, r, reason, cases[i].want, cases[i].reason);
        assert_null(patch);
        json_decref(pod);
    }
    rm_inject_config_dispose(&cfg);
}

static void
test_probes_the_agent_cannot_perform(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    json_t *pod = parse_one("spec:\n"
                            "  containers:\n"
                            "  - name: tls\n"
                            "    readinessProbe: {httpGet: {path: /ready, port: 8443, scheme: HTTPS}}\n"
                            "    livenessProbe: {httpGet: {path: live, port: 8080}, timeoutSeconds: 600}\n"
                            "    startupProbe: {httpGet: {path: /s, port: nosuchport}}\n"
                            "  - name: other\n"
                            "    livenessProbe: {httpGet: {host: 10.0.0.1, path: /x, port: 80}}\n");
    json_t *patch = NULL, *warnings = json_array();
    char reason[600];
    assert_int_equal(rm_inject_pod(&cfg, pod, &patch, warnings, reason, sizeof(reason)), RM_INJECT_PATCH);
    json_t *out = json_deep_copy(pod);
    char err[600];
    assert_int_equal(rm_jsonpatch_apply(out, patch, err, sizeof(err)), 0);
    json_t *c0 = json_array_get(json_object_get(json_object_get(out, "spec"), "containers"), 0);
    /* HTTPS, an unknown named port, another host: left alone, each with a warning */
    assert_true(json_equal(
        json_object_get(c0, "readinessProbe"),
        json_object_get(json_array_get(json_object_get(json_object_get(pod, "spec"), "containers"), 0), "readinessProbe")));
    assert_int_equal(json_array_size(warnings), 3);
    assert_non_null(strstr(json_string_value(json_array_get(warnings, 0)), "plain HTTP only"));
    /* a relative path gets its slash, a long timeout is the agent's at most 60 s; the kubelet keeps 600 */
    json_t *proxy = json_array_get(json_object_get(json_object_get(out, "spec"), "initContainers"), 1);
    json_t *probes = json_loads(env_of(proxy, "REMORA_APP_PROBES"), 0, NULL);
    assert_int_equal(json_object_size(probes), 1);
    json_t *live = json_object_get(probes, "/app-health/tls/livez");
    assert_string_equal(json_string_value(json_object_get(json_object_get(live, "httpGet"), "path")), "/live");
    assert_int_equal(json_integer_value(json_object_get(live, "timeoutSeconds")), 60);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c0, "livenessProbe"), "timeoutSeconds")), 600);
    json_decref(probes);
    json_decref(out);
    json_decref(patch);
    json_decref(warnings);
    json_decref(pod);
    rm_inject_config_dispose(&cfg);
}

/* Replaces, with probability 1/rate, each value of the tree with one of another type (a deterministic generator). */
static uint32_t mutate_seed = 12345;

static uint32_t
next_rand(void)
{
    mutate_seed = mutate_seed * 1103515245u + 12345u;
    return mutate_seed >> 8;
}

static json_t *
random_value(void)
{
    switch (next_rand() % 7) {
    case 0:
        return json_null();
    case 1:
        return json_integer((json_int_t)(next_rand() % 70000));
    case 2:
        return json_string("x/~y");
    case 3:
        return json_array();
    case 4:
        return json_object();
    case 5:
        return json_true();
    default:
        return json_string("remora-proxy");
    }
}

static void
mutate(json_t *v, unsigned rate)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        void *tmp;
        json_object_foreach_safe(v, tmp, k, c)
        {
            if (next_rand() % rate == 0)
                json_object_set_new(v, k, random_value());
            else
                mutate(c, rate);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i != json_array_size(v); ++i) {
            if (next_rand() % rate == 0)
                json_array_set_new(v, i, random_value());
            else
                mutate(json_array_get(v, i), rate);
        }
    }
}

/* Pods of any shape: never a crash; a patch always applies, re-injection is a skip, uninjection applies. */
static void
test_inject_survives_mutated_pods(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    json_t *base = parse_one(simple_pod);
    json_object_set_new(json_object_get(base, "metadata"), "annotations",
                        json_pack("{s:s,s:s}", "config.remora.dev/opaque-ports", "80", "a/b~c", "d"));
    size_t patched = 0;
    for (unsigned i = 0; i != 3000; ++i) {
        json_t *pod = json_deep_copy(base);
        mutate(pod, 4 + i % 12);
        json_t *patch = NULL, *warnings = json_array();
        char reason[600], err[600];
        rm_inject_result_t r = rm_inject_pod(&cfg, pod, &patch, warnings, reason, sizeof(reason));
        if (r == RM_INJECT_PATCH) {
            ++patched;
            if (rm_jsonpatch_apply(pod, patch, err, sizeof(err)) != 0)
                fail_msg("iteration %u: %s", i, err);
            json_t *again = NULL;
            assert_int_equal(rm_inject_pod(&cfg, pod, &again, NULL, reason, sizeof(reason)), RM_INJECT_SKIP);
            json_t *un = NULL;
            assert_int_equal(rm_uninject_pod(pod, &un, reason, sizeof(reason)), RM_INJECT_PATCH);
            if (rm_jsonpatch_apply(pod, un, err, sizeof(err)) != 0)
                fail_msg("iteration %u: uninject: %s", i, err);
            json_decref(un);
        } else {
            assert_null(patch);
        }
        json_decref(patch);
        json_decref(warnings);
        json_decref(pod);
    }
    assert_true(patched > 100);
    json_decref(base);
    rm_inject_config_dispose(&cfg);
}

static void
test_config(void **state)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    char err[600];
    const char *good = "proxyImage: registry.local/proxy:1\n"
                       "nativeSidecar: false\n"
                       "outboundGraceMs: 2500\n"
                       "skipOutboundPorts: \"25, 3306\"\n"
                       "controlAddress: control.mesh:9000\n"
                       "resources: {requests: {cpu: 50m}}\n";
    assert_int_equal(rm_inject_config_parse(&cfg, good, strlen(good), "cfg.yaml", err, sizeof(err)), 0);
    assert_string_equal(cfg.proxy_image, "registry.local/proxy:1");
    assert_int_equal(cfg.native_sidecar, 0);
    assert_int_equal(cfg.outbound_grace_ms, 2500);
    assert_string_equal(cfg.skip_outbound_ports, "25,3306");
    json_t *pod = parse_one("spec: {containers: [{name: a}]}");
    json_t *out = inject(&cfg, pod, NULL);
    json_t *init = json_array_get(json_object_get(json_object_get(out, "spec"), "initContainers"), 0);
    char *args = json_dumps(json_object_get(init, "args"), JSON_COMPACT);
    assert_string_equal(args, "[\"--proxy-uid\",\"2102\",\"--control-port\",\"9000\",\"--exclude-outbound-ports\",\"25,3306\"]");
    assert_string_equal(json_string_value(json_object_get(init, "image")), "registry.local/proxy:1");
    free(args);
    json_decref(out);
    json_decref(pod);
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"proxyImage: a\nfoo: 1\n", "cfg.yaml:2: unknown key 'foo'"},
        {"nativeSidecar: maybe\n", "cfg.yaml:1: nativeSidecar must be true or false"},
        {"logLevel: loud\n", "cfg.yaml:1: logLevel"},
        {"\n\nopaquePorts: \"0\"\n", "cfg.yaml:3: opaquePorts"},
        {"resources: {requests: {cpu: fast}}\n", "cfg.yaml:1: resources: requests.cpu"},
        {"proxyUID: 0\n", "cfg.yaml:1: proxyUID"},
        {"- a\n", "cfg.yaml:1: expected a mapping"},
        {"a: [\n", "cfg.yaml:"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        assert_int_equal(rm_inject_config_parse(&cfg, bad[i].text, strlen(bad[i].text), "cfg.yaml", err, sizeof(err)), -1);
        if (strstr(err, bad[i].msg) == NULL)
            fail_msg("case %zu: '%s' does not contain '%s'", i, err, bad[i].msg);
    }
    rm_inject_config_dispose(&cfg);
}

static json_t *
review_body(const char *body, int *status)
{
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    char *resp = rm_webhook_review(&cfg, body, strlen(body), status, NULL, 0);
    rm_inject_config_dispose(&cfg);
    json_t *j = *status == 200 ? json_loads(resp, 0, NULL) : json_string(resp);
    free(resp);
    return j;
}

static void
test_webhook_review(void **state)
{
    int status;
    json_t *r = review_body("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"abc\","
                            "\"kind\":{\"kind\":\"Pod\"},\"operation\":\"CREATE\",\"object\":{\"spec\":{\"containers\":[{\"name\":"
                            "\"a\"}]}}}}",
                            &status);
    assert_int_equal(status, 200);
    json_t *resp = json_object_get(r, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "uid")), "abc");
    assert_true(json_is_true(json_object_get(resp, "allowed")));
    assert_string_equal(json_string_value(json_object_get(resp, "patchType")), "JSONPatch");
    const char *b64 = json_string_value(json_object_get(resp, "patch"));
    unsigned char *raw = calloc(1, strlen(b64) + 1);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)strlen(b64));
    assert_true(n > 0);
    /* the decoded length counts the padding as zero bytes: the JSON ends at the first NUL */
    json_t *patch = json_loads((const char *)raw, 0, NULL);
    assert_true(json_is_array(patch));
    json_decref(patch);
    free(raw);
    json_decref(r);
    /* skipped: allowed, no patch, the reason as a warning */
    r = review_body("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u2\","
                    "\"object\":{\"spec\":{\"hostNetwork\":true,\"containers\":[{\"name\":\"a\"}]}}}}",
                    &status);
    assert_int_equal(status, 200);
    resp = json_object_get(r, "response");
    assert_null(json_object_get(resp, "patch"));
    assert_true(json_is_true(json_object_get(resp, "allowed")));
    assert_non_null(strstr(json_string_value(json_array_get(json_object_get(resp, "warnings"), 0)), "hostNetwork"));
    json_decref(r);
    /* refused: a bad override */
    r = review_body("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u3\","
                    "\"object\":{\"metadata\":{\"annotations\":{\"config.remora.dev/proxy-log-level\":\"loud\"}},"
                    "\"spec\":{\"containers\":[{\"name\":\"a\"}]}}}}",
                    &status);
    resp = json_object_get(r, "response");
    assert_true(json_is_false(json_object_get(resp, "allowed")));
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(resp, "status"), "message")), "proxy-log-level"));
    json_decref(r);
    /* bad requests */
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"{nope", "malformed JSON"},
        {"[]", "not an AdmissionReview"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "no request with a uid"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"x\"}}", "no object"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        r = review_body(bad[i].body, &status);
        assert_int_equal(status, 400);
        assert_non_null(strstr(json_string_value(r), bad[i].msg));
        json_decref(r);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_typing),
        cmocka_unit_test(test_manifest_streams_and_errors),
        cmocka_unit_test(test_pointer_escaping),
        cmocka_unit_test(test_jsonpatch_rfc6902),
        cmocka_unit_test(test_inject_native),
        cmocka_unit_test(test_inject_existing_lists_and_regular_sidecar),
        cmocka_unit_test(test_inject_skips_and_refusals),
        cmocka_unit_test(test_probes_the_agent_cannot_perform),
        cmocka_unit_test(test_inject_survives_mutated_pods),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_webhook_review),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
