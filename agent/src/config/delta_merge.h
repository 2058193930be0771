/*
 * Merging an incremental snapshot into the resource set in service (docs/control-plane.md,
 * "Incremental updates"). Used by the control-plane client (config/control_client.c) and replayed by
 * tests/fuzz/fuzz_delta.c; like translate.c, it is part of the control module.
 *
 * Thread: any; a function of its inputs.
 */
#ifndef remora__delta_merge_h
#define remora__delta_merge_h

#include <stddef.h>
#include <stdint.h>
#include "remora/v1/discovery.pb-c.h"

/*
 * Merges `delta` (Snapshot.incremental set) into `base_bytes`, the encoding of the full snapshot at
 * `base_version`: each of the delta's resources replaces the one of its kind, namespace and name (or is
 * added), the `removed` ones leave, and the result is sorted by namespace and name within each kind; its version,
 * store_id and `scoped` are the delta's.
 * Returns the encoding of the merged full snapshot at delta->version (malloc'ed, `*len` bytes), or NULL
 * with the reason in `err` (a removal of an unknown kind, a resource without metadata, a base that does
 * not parse or holds another version, a merged set that does not parse once encoded: a resource protobuf-c
 * reads but cannot write back). The caller checks delta->base_version against its own.
 */
uint8_t *rm_delta_merge(const uint8_t *base_bytes, size_t base_len, uint64_t base_version, const Remora__V1__Snapshot *delta,
                        size_t *len, char *err, size_t errlen);

/* The number of resources `delta` carries, all kinds together. */
size_t rm_delta_num_changed(const Remora__V1__Snapshot *delta);

#endif
