/*
 * Fuzz target for the agent's merge of an incremental snapshot (agent/src/config/delta_merge.c, rm_delta_merge), the
 * step between a delta from the control stream and the translation of the merged full snapshot.
 *
 * Input: a 4-byte big-endian length L, then L bytes of the base (the encoding of the full snapshot in service, as
 * the agent persisted it), then the delta (a serialized remora.v1.Snapshot). L is clamped to what the input holds.
 * The merge runs as control_client.c runs it: on the version the delta names as its base.
 *
 * Besides "no crash, no leak, no UB" it checks, for any input:
 *   - a refused merge has a reason;
 *   - a merged snapshot unpacks, holds delta->version, delta->store_id and delta->scoped, is not incremental and removes
 *     nothing;
 *   - per kind: its resources are sorted by (namespace, name) with no two of the same name; every resource of the
 *     delta whose name is not removed is in it, as the delta has it (the same encoding as one of the delta's copies
 *     of that name); no removed name is in it; every base resource neither replaced nor removed is kept as it was;
 *     nothing else is in it (its count is that of the names of the base and the delta less the removed ones);
 *   - the merged snapshot then goes through rm_translate_snapshot as fuzz_snapshot.c does it: a refusal has a reason,
 *     an accepted one keeps the base configuration's listeners and has the merged version.
 * regress_field_zero_unknown: a resource protobuf-c reads but cannot write back (field number 0 as a two-byte varint)
 * made a merged set that did not parse; rm_delta_merge now refuses it. A violated property aborts.
 * FUZZ_DELTA_TRACE=1 in the environment prints one line per input (merged or why not).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config/config.h"
#include "config/delta_merge.h"
#include "config/translate.h"
#include "fuzz_common.h"
#include "remora/v1/discovery.pb-c.h"

/* The Snapshot fields of the resource kinds, indexed by remora.v1.ResourceKind (meta.proto). */
static const char *const kind_fields[] = {
    NULL,
    "services",
    "http_routes",
    "grpc_routes",
    "fault_injections",
    "backend_traffic_policies",
    "rate_limit_policies",
    "telemetries",
    "mesh_tls",
    "authorization_policies",
    "egress_policies",
};
#define NUM_KINDS (sizeof(kind_fields) / sizeof(kind_fields[0]))

static const char base_yaml[] = "listeners:\n"
                                "  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
                                "clusters:\n"
                                "  - {name: c, endpoints: \"127.0.0.1:1\"}\n";

static rm_config_t *base_cfg;

static void
cleanup(void)
{
    rm_config_unref(base_cfg);
}

typedef struct st_list_t {
    size_t n;
    ProtobufCMessage **msgs;
} list_t;

static list_t
list_of(const Remora__V1__Snapshot *snap, const char *field)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, field);
    FUZZ_CHECK(f != NULL && f->label == PROTOBUF_C_LABEL_REPEATED, "a kind's field exists");
    return (list_t){*(const size_t *)((const char *)snap + f->quantifier_offset),
                    *(ProtobufCMessage * *const *)((const char *)snap + f->offset)};
}

/* The metadata of a resource message; NULL when unset. */
static const Remora__V1__ObjectMeta *
meta_of(const ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "metadata");
    if (f == NULL || f->descriptor != &remora__v1__object_meta__descriptor)
        return NULL;
    return *(const Remora__V1__ObjectMeta *const *)((const char *)msg + f->offset);
}

static int
same_name(const Remora__V1__ObjectMeta *m, const char *ns, const char *name)
{
    return strcmp(m->namespace_, ns) == 0 && strcmp(m->name, name) == 0;
}

static int
same_encoding(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la = protobuf_c_message_get_packed_size(a), lb = protobuf_c_message_get_packed_size(b);
    if (la != lb)
        return 0;
    uint8_t *ba = malloc(la + 1), *bb = malloc(lb + 1);
    protobuf_c_message_pack(a, ba);
    protobuf_c_message_pack(b, bb);
    int same = memcmp(ba, bb, la) == 0;
    free(ba);
    free(bb);
    return same;
}

static int
removed(const Remora__V1__Snapshot *delta, unsigned kind, const char *ns, const char *name)
{
    for (size_t i = 0; i != delta->n_removed; ++i)
        if ((unsigned)delta->removed[i]->kind == kind && strcmp(delta->removed[i]->namespace_, ns) == 0 &&
            strcmp(delta->removed[i]->name, name) == 0)
            return 1;
    return 0;
}

/* The resource of that name in `l`, or NULL; with `count`, how many there are. */
static const ProtobufCMessage *
find(list_t l, const char *ns, const char *name, size_t *count)
{
    const ProtobufCMessage *found = NULL;
    size_t c = 0;
    for (size_t i = 0; i != l.n; ++i) {
        const Remora__V1__ObjectMeta *m = meta_of(l.msgs[i]);
        if (m != NULL && same_name(m, ns, name)) {
            found = found != NULL ? found : l.msgs[i];
            ++c;
        }
    }
    if (count != NULL)
        *count = c;
    return found;
}

/* Whether one of the copies of that name in `l` has the encoding of `msg`. */
static int
has_copy(list_t l, const char *ns, const char *name, const ProtobufCMessage *msg)
{
    for (size_t i = 0; i != l.n; ++i) {
        const Remora__V1__ObjectMeta *m = meta_of(l.msgs[i]);
        if (m != NULL && same_name(m, ns, name) && same_encoding(l.msgs[i], msg))
            return 1;
    }
    return 0;
}

static void
check_kind(const Remora__V1__Snapshot *base, const Remora__V1__Snapshot *delta, const Remora__V1__Snapshot *merged, unsigned kind)
{
    list_t b = list_of(base, kind_fields[kind]), d = list_of(delta, kind_fields[kind]), m = list_of(merged, kind_fields[kind]);
    /* sorted, no duplicates; each merged resource is the delta's (when it has the name) or else the base's */
    for (size_t i = 0; i != m.n; ++i) {
        const Remora__V1__ObjectMeta *mi = meta_of(m.msgs[i]);
        FUZZ_CHECK(mi != NULL, "merged resources have metadata");
        if (i != 0) {
            const Remora__V1__ObjectMeta *prev = meta_of(m.msgs[i - 1]);
            int c = strcmp(prev->namespace_, mi->namespace_);
            FUZZ_CHECK(c < 0 || (c == 0 && strcmp(prev->name, mi->name) < 0), "sorted by (namespace, name), no duplicates");
        }
        FUZZ_CHECK(!removed(delta, kind, mi->namespace_, mi->name), "no removed name is kept");
        if (find(d, mi->namespace_, mi->name, NULL) != NULL)
            FUZZ_CHECK(has_copy(d, mi->namespace_, mi->name, m.msgs[i]), "a name the delta carries has the delta's content");
        else
            FUZZ_CHECK(has_copy(b, mi->namespace_, mi->name, m.msgs[i]), "a name only the base has keeps the base's content");
    }
    /* every name of the delta and the base that is not removed is in it */
    size_t names = 0;
    for (size_t i = 0; i != d.n + b.n; ++i) {
        const ProtobufCMessage *msg = i < d.n ? d.msgs[i] : b.msgs[i - d.n];
        const Remora__V1__ObjectMeta *mi = meta_of(msg);
        FUZZ_CHECK(mi != NULL, "an accepted merge had metadata everywhere");
        if (removed(delta, kind, mi->namespace_, mi->name))
            continue;
        size_t count;
        FUZZ_CHECK(find(m, mi->namespace_, mi->name, &count) != NULL && count == 1, "every name not removed is kept once");
        /* count each name once: at its first occurrence in delta-then-base order */
        int first = 1;
        for (size_t j = 0; j != i && first; ++j) {
            const Remora__V1__ObjectMeta *mj = meta_of(j < d.n ? d.msgs[j] : b.msgs[j - d.n]);
            first = !same_name(mj, mi->namespace_, mi->name);
        }
        names += first;
    }
    FUZZ_CHECK(m.n == names, "nothing else is in the merged snapshot");
}

static void
translate(const uint8_t *bytes, size_t len, uint64_t version)
{
    if (base_cfg == NULL) {
        rm_config_error_t e;
        if ((base_cfg = rm_config_load_string(base_yaml, strlen(base_yaml), "base.yaml", &e)) == NULL) {
            fprintf(stderr, "fuzz_delta: base.yaml:%u: %s\n", e.line, e.message);
            abort();
        }
        atexit(cleanup);
    }
    char err[1024] = "";
    rm_config_t *cfg = rm_translate_snapshot(bytes, len, base_cfg, err, sizeof(err));
    if (cfg == NULL) {
        FUZZ_CHECK(err[0] != '\0', "a refused snapshot has a reason");
        return;
    }
    FUZZ_CHECK(cfg->num_listeners == base_cfg->num_listeners, "the base's listeners are kept");
    char v[32];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)version);
    FUZZ_CHECK(cfg->version != NULL && strcmp(cfg->version, v) == 0, "the version is the merged one");
    rm_config_unref(cfg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t base_len = (size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
    if (base_len > size - 4)
        base_len = size - 4;
    const uint8_t *base_bytes = data + 4, *delta_bytes = base_bytes + base_len;
    size_t delta_len = size - 4 - base_len;
    Remora__V1__Snapshot *delta = remora__v1__snapshot__unpack(NULL, delta_len, delta_bytes);
    if (delta == NULL)
        return 0;
    char err[1024] = "";
    size_t len = 0;
    uint8_t *out = rm_delta_merge(base_bytes, base_len, delta->base_version, delta, &len, err, sizeof(err));
    if (getenv("FUZZ_DELTA_TRACE") != NULL)
        fprintf(stderr, "fuzz_delta: base %zu bytes, delta %zu bytes (%zu resources, %zu removed): %s\n", base_len, delta_len,
                rm_delta_num_changed(delta), delta->n_removed, out != NULL ? "merged" : err);
    if (out == NULL) {
        FUZZ_CHECK(err[0] != '\0', "a refused merge has a reason");
        remora__v1__snapshot__free_unpacked(delta, NULL);
        return 0;
    }
    Remora__V1__Snapshot *base = remora__v1__snapshot__unpack(NULL, base_len, base_bytes);
    FUZZ_CHECK(base != NULL && base->version == delta->base_version, "a merge is made only on the base of the right version");
    Remora__V1__Snapshot *merged = remora__v1__snapshot__unpack(NULL, len, out);
    FUZZ_CHECK(merged != NULL, "the merged snapshot unpacks");
    FUZZ_CHECK(merged->version == delta->version, "the merged snapshot holds the delta's version");
    FUZZ_CHECK(merged->store_id.len == delta->store_id.len &&
                   (delta->store_id.len == 0 || memcmp(merged->store_id.data, delta->store_id.data, delta->store_id.len) == 0),
               "the merged snapshot holds the delta's store_id");
    FUZZ_CHECK(!merged->incremental && merged->n_removed == 0 && merged->base_version == 0, "the merged snapshot is a full one");
    FUZZ_CHECK(merged->scoped == delta->scoped, "the merged snapshot is scoped as the delta is");
    for (unsigned k = 1; k != NUM_KINDS; ++k)
        check_kind(base, delta, merged, k);
    translate(out, len, delta->version);
    remora__v1__snapshot__free_unpacked(merged, NULL);
    remora__v1__snapshot__free_unpacked(base, NULL);
    remora__v1__snapshot__free_unpacked(delta, NULL);
    free(out);
    return 0;
}
