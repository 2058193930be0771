/*
 * The Telemetry kind in control-plane snapshots -> the agent's config.telemetry (agent/src/config/translate.c):
 * the root namespace's applies, another namespace's does not (the agent does not know its namespace yet), the
 * bootstrap's block stays without one and keeps what the kind does not say, and what the agent cannot apply is
 * refused with a reason naming the resource.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
                                "clusters:\n"
                                "  - {name: c, endpoints: \"127.0.0.1:1\"}\n"
                                "telemetry:\n"
                                "  tracing: {otlp: {endpoint: \"127.0.0.1:4317\"}, service_name: web, batch_size: 64,\n"
                                "            queue_size: 128, sampling_percent: 3}\n"
                                "  access_log: {path: stdout, buffer_bytes: 65536}\n";

static char reason[1024];

static rm_config_t *
translate_with(const char *yaml, Remora__V1__Snapshot *snap)
{
    rm_config_error_t err;
    rm_config_t *base = rm_config_load_string(yaml, strlen(yaml), "base.yaml", &err);
    if (base == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    size_t len = remora__v1__snapshot__get_packed_size(snap);
    uint8_t *bytes = malloc(len + 1);
    remora__v1__snapshot__pack(snap, bytes);
    reason[0] = '\0';
    rm_config_t *c = rm_translate_snapshot(bytes, len, base, reason, sizeof(reason));
    free(bytes);
    rm_config_unref(base);
    return c;
}

typedef struct st_tel_t {
    Remora__V1__Telemetry msg;
    Remora__V1__ObjectMeta meta;
    Remora__V1__TelemetrySpec spec;
    Remora__V1__TelemetryTracing tracing;
    Remora__V1__OtlpExporter otlp;
    Remora__V1__TracePropagation prop[2];
    Remora__V1__TelemetryAccessLog access_log;
} tel_t;

static void
tel_init(tel_t *t, const char *ns, const char *name, const char *endpoint, const char *path)
{
    remora__v1__telemetry__init(&t->msg);
    remora__v1__object_meta__init(&t->meta);
    remora__v1__telemetry_spec__init(&t->spec);
    t->meta.name = (char *)name;
    t->meta.namespace_ = (char *)ns;
    t->msg.metadata = &t->meta;
    t->msg.spec = &t->spec;
    if (endpoint != NULL) {
        remora__v1__telemetry_tracing__init(&t->tracing);
        remora__v1__otlp_exporter__init(&t->otlp);
        t->otlp.endpoint = (char *)endpoint;
        t->otlp.protocol = REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_HTTP;
        t->tracing.otlp = &t->otlp;
        t->tracing.sampling_percent = 12.5;
        t->prop[0] = REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_B3;
        t->tracing.propagation = t->prop;
        t->tracing.n_propagation = 1;
        t->spec.tracing = &t->tracing;
    }
    if (path != NULL) {
        remora__v1__telemetry_access_log__init(&t->access_log);
        t->access_log.path = (char *)path;
        t->spec.access_log = &t->access_log;
    }
}

static void
test_root_namespace_applies(void **state)
{
    tel_t root, other;
    tel_init(&root, "remora-system", "default", "[::1]:4318", "/dev/null");
    tel_init(&other, "shop", "default", "127.0.0.9:4317", NULL);
    Remora__V1__Telemetry *list[] = {&root.msg, &other.msg};
    Remora__V1__Snapshot snap = REMORA__V1__SNAPSHOT__INIT;
    snap.version = 3;
    snap.telemetries = list;
    snap.n_telemetries = 2;
    rm_config_t *c = translate_with(base_yaml, &snap);
    if (c == NULL)
        fail_msg("refused: %s", reason);
    const rm_config_tracing_t *t = &c->telemetry.tracing;
    assert_true(t->enabled);
    assert_string_equal(t->otlp_endpoint, "[::1]:4318");
    assert_int_equal(t->protocol, RM_OTLP_HTTP);
    assert_true(t->sampling_percent == 12.5);
    assert_true(!t->propagate_w3c && t->propagate_b3);
    /* what the kind does not say keeps the bootstrap's values */
    assert_string_equal(t->service_name, "web");
    assert_int_equal(t->batch_size, 64);
    assert_int_equal(t->queue_size, 128);
    assert_true(c->telemetry.access_log.enabled);
    assert_string_equal(c->telemetry.access_log.path, "/dev/null");
    assert_int_equal(c->telemetry.access_log.buffer_bytes, 65536);
    rm_config_unref(c);

    /* tracing only: the access log goes off, even though the bootstrap had one */
    root.spec.access_log = NULL;
    c = translate_with(base_yaml, &snap);
    assert_non_null(c);
    assert_true(c->telemetry.tracing.enabled && !c->telemetry.access_log.enabled);
    rm_config_unref(c);
}

static void
test_without_root_telemetry_the_bootstrap_stays(void **state)
{
    tel_t other;
    tel_init(&other, "shop", "default", "127.0.0.9:4317", NULL);
    Remora__V1__Telemetry *list[] = {&other.msg};
    Remora__V1__Snapshot snap = REMORA__V1__SNAPSHOT__INIT;
    snap.telemetries = list;
    snap.n_telemetries = 1;
    rm_config_t *c = translate_with(base_yaml, &snap);
    assert_non_null(c);
    assert_string_equal(c->telemetry.tracing.otlp_endpoint, "127.0.0.1:4317");
    assert_true(c->telemetry.tracing.sampling_percent == 3);
    assert_true(c->telemetry.access_log.enabled);
    assert_string_equal(c->telemetry.access_log.path, "stdout");
    rm_config_unref(c);

    /* and a bootstrap without telemetry stays off */
    static const char plain[] = "listeners:\n  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
                                "clusters:\n  - {name: c, endpoints: \"127.0.0.1:1\"}\n";
    c = translate_with(plain, &snap);
    assert_non_null(c);
    assert_false(c->telemetry.tracing.enabled);
    assert_false(c->telemetry.access_log.enabled);
    rm_config_unref(c);
}

static void
test_refusals(void **state)
{
    tel_t root;
    Remora__V1__Telemetry *list[] = {&root.msg};
    Remora__V1__Snapshot snap = REMORA__V1__SNAPSHOT__INIT;
    snap.telemetries = list;
    snap.n_telemetries = 1;

    /* a log file the agent cannot create: the agent's own validation decides */
    tel_init(&root, "remora-system", "mesh", NULL, "/nonexistent-remora-dir/a.log");
    assert_null(translate_with(base_yaml, &snap));
    assert_non_null(strstr(reason, "telemetry.access_log.path '/nonexistent-remora-dir/a.log': cannot be created"));

    tel_init(&root, "remora-system", "mesh", "collector:4317", NULL);
    assert_null(translate_with(base_yaml, &snap));
    assert_non_null(strstr(reason, "telemetry.tracing.otlp.endpoint 'collector:4317'"));

    tel_init(&root, "remora-system", "mesh", "127.0.0.1:4317", NULL);
    root.tracing.sampling_percent = 150;
    assert_null(translate_with(base_yaml, &snap));
    assert_non_null(strstr(reason, "sampling_percent must be 0-100"));

    tel_init(&root, "remora-system", "mesh", "127.0.0.1:4317", NULL);
    root.otlp.protocol = 7;
    assert_null(translate_with(base_yaml, &snap));
    assert_non_null(strstr(reason, "Telemetry remora-system/mesh: spec.tracing.otlp.protocol 7 is not known to this agent"));

    /* a newer control plane's field: not applied in part */
    tel_init(&root, "remora-system", "mesh", "127.0.0.1:4317", NULL);
    ProtobufCMessageUnknownField unknown = {
        .tag = 9, .wire_type = PROTOBUF_C_WIRE_TYPE_VARINT, .len = 1, .data = (uint8_t *)"\x01"};
    root.tracing.base.n_unknown_fields = 1;
    root.tracing.base.unknown_fields = &unknown;
    assert_null(translate_with(base_yaml, &snap));
    assert_non_null(strstr(reason, "Telemetry remora-system/mesh: spec.tracing carries field 9"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_namespace_applies),
        cmocka_unit_test(test_without_root_telemetry_the_bootstrap_stays),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
