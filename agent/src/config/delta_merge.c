#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "config/delta_merge.h"

/*
 * Incremental snapshots (docs/control-plane.md, "Incremental updates"). The resource set in service is
 * not kept decoded: its encoding is the persisted snapshot (config/control_client.c). A delta is merged into it message by message:
 * each of the delta's resources replaces the one of its kind, namespace and name (or is added), `removed` ones leave, and the
 * result, sorted as the control plane sorts, is encoded as a full snapshot: translated, applied and persisted exactly like one.
 */

/* ResourceKind (meta.proto) -> the Snapshot field of that kind. */
static const char *const kind_fields[] = {
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_SERVICE] = "services",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_HTTP_ROUTE] = "http_routes",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_GRPC_ROUTE] = "grpc_routes",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_FAULT_INJECTION] = "fault_injections",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_BACKEND_TRAFFIC_POLICY] = "backend_traffic_policies",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_RATE_LIMIT_POLICY] = "rate_limit_policies",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_TELEMETRY] = "telemetries",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_MESH_TLS] = "mesh_tls",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_AUTHORIZATION_POLICY] = "authorization_policies",
    [REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_EGRESS_POLICY] = "egress_policies",
};
#define NUM_KIND_FIELDS (sizeof(kind_fields) / sizeof(kind_fields[0]))

typedef struct st_entry_t {
    const char *ns, *name;
    ProtobufCMessage *msg;
    /* 1: from the delta (wins over the base's entry of the same name) */
    int from_delta;
} entry_t;

static int
cmp_entry(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    if (c == 0)
        c = strcmp(x->name, y->name);
    return c != 0 ? c : y->from_delta - x->from_delta;
}

/* By namespace and name only. */
static int
cmp_name(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c != 0 ? c : strcmp(x->name, y->name);
}

/* The metadata of a resource message, through its descriptor; NULL when it has none. */
static const Remora__V1__ObjectMeta *
meta_of(const ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "metadata");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor != &remora__v1__object_meta__descriptor)
        return NULL;
    return *(const Remora__V1__ObjectMeta *const *)((const char *)msg + f->offset);
}

/* The repeated field of kind `field` in `snap`: its count and array. */
static size_t *
field_count(Remora__V1__Snapshot *snap, const ProtobufCFieldDescriptor *f)
{
    return (size_t *)((char *)snap + f->quantifier_offset);
}

static ProtobufCMessage ***
field_array(Remora__V1__Snapshot *snap, const ProtobufCFieldDescriptor *f)
{
    return (ProtobufCMessage ***)((char *)snap + f->offset);
}

size_t
rm_delta_num_changed(const Remora__V1__Snapshot *delta)
{
    size_t n = 0;
    for (size_t k = 0; k != NUM_KIND_FIELDS; ++k) {
        if (kind_fields[k] == NULL)
            continue;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, kind_fields[k]);
        if (f != NULL)
            n += *field_count((Remora__V1__Snapshot *)delta, f);
    }
    return n;
}

uint8_t *
rm_delta_merge(const uint8_t *base_bytes, size_t base_len, uint64_t base_version, const Remora__V1__Snapshot *delta, size_t *len,
               char *err, size_t errlen)
{
    for (size_t i = 0; i != delta->n_removed; ++i) {
        unsigned k = (unsigned)delta->removed[i]->kind;
        if (k >= NUM_KIND_FIELDS || kind_fields[k] == NULL) {
            snprintf(err, errlen, "incremental snapshot %llu removes a resource of unknown kind %u",
                     (unsigned long long)delta->version, k);
            return NULL;
        }
    }
    Remora__V1__Snapshot *base = remora__v1__snapshot__unpack(NULL, base_len, base_bytes);
    if (base == NULL || base->version != base_version) {
        snprintf(err, errlen, "the resource set of version %llu is not available: the persisted snapshot %s",
                 (unsigned long long)base_version, base == NULL ? "does not parse" : "holds another version");
        if (base != NULL)
            remora__v1__snapshot__free_unpacked(base, NULL);
        return NULL;
    }
    /* the merged snapshot points at messages of `base` and `delta`; only its arrays are its own */
    Remora__V1__Snapshot merged = REMORA__V1__SNAPSHOT__INIT;
    merged.version = delta->version;
    merged.store_id = delta->store_id;
    /* whether the set is a scope's (on-demand discovery) is the newest snapshot's word, kept in the state directory */
    merged.scoped = delta->scoped;
    void *arrays[NUM_KIND_FIELDS] = {0};
    int ok = 1;
    for (size_t k = 0; k != NUM_KIND_FIELDS && ok; ++k) {
        if (kind_fields[k] == NULL)
            continue;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, kind_fields[k]);
        if (f == NULL)
            continue;
        size_t nb = *field_count(base, f), nd = *field_count((Remora__V1__Snapshot *)delta, f);
        ProtobufCMessage **mb = *field_array(base, f), **md = *field_array((Remora__V1__Snapshot *)delta, f);
        entry_t *entries = rm_calloc(nb + nd + 1, sizeof(entries[0]));
        size_t n = 0;
        for (size_t i = 0; i != nb + nd && ok; ++i) {
            ProtobufCMessage *m = i < nb ? mb[i] : md[i - nb];
            const Remora__V1__ObjectMeta *meta = meta_of(m);
            if (meta == NULL) {
                snprintf(err, errlen, "incremental snapshot %llu: a resource of %s without metadata",
                         (unsigned long long)delta->version, kind_fields[k]);
                ok = 0;
                break;
            }
            entries[n++] = (entry_t){meta->namespace_, meta->name, m, i >= nb};
        }
        qsort(entries, n, sizeof(entries[0]), cmp_entry);
        /* the removed names of this kind, sorted likewise, looked up by binary search */
        entry_t *gone = rm_calloc(delta->n_removed + 1, sizeof(gone[0]));
        size_t ngone = 0;
        for (size_t r = 0; r != delta->n_removed; ++r)
            if ((size_t)delta->removed[r]->kind == k)
                gone[ngone++] = (entry_t){delta->removed[r]->namespace_, delta->removed[r]->name, NULL, 0};
        qsort(gone, ngone, sizeof(gone[0]), cmp_entry);
        ProtobufCMessage **out = rm_calloc(n + 1, sizeof(out[0]));
        size_t nout = 0;
        for (size_t i = 0; i != n; ++i) {
            /* the delta's copy sorts first among equal names: later ones are the replaced */
            if (i != 0 && strcmp(entries[i].ns, entries[i - 1].ns) == 0 && strcmp(entries[i].name, entries[i - 1].name) == 0)
                continue;
            entry_t key = {entries[i].ns, entries[i].name, NULL, 0};
            if (ngone == 0 || bsearch(&key, gone, ngone, sizeof(gone[0]), cmp_name) == NULL)
                out[nout++] = entries[i].msg;
        }
        free(gone);
        free(entries);
        *field_count(&merged, f) = nout;
        *field_array(&merged, f) = out;
        arrays[k] = out;
    }
    uint8_t *bytes = NULL;
    if (ok) {
        *len = protobuf_c_message_get_packed_size(&merged.base);
        bytes = rm_malloc(*len + 1);
        protobuf_c_message_pack(&merged.base, bytes);
        /* protobuf-c reads field number 0 written as a longer varint ("\x80\x00") as an unknown field, and writes it
         * back as "\x00", which it refuses to read: such a resource, in the base or the delta, would leave a merged set
         * that no longer parses (tests/fuzz/corpus/delta/regress_field_zero_unknown) */
        Remora__V1__Snapshot *check = remora__v1__snapshot__unpack(NULL, *len, bytes);
        if (check == NULL) {
            snprintf(err, errlen, "incremental snapshot %llu: the merged resource set does not parse once encoded again",
                     (unsigned long long)delta->version);
            free(bytes);
            bytes = NULL;
        } else {
            remora__v1__snapshot__free_unpacked(check, NULL);
        }
    }
    for (size_t k = 0; k != NUM_KIND_FIELDS; ++k)
        free(arrays[k]);
    remora__v1__snapshot__free_unpacked(base, NULL);
    return bytes;
}
