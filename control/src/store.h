/*
 * The embedded durable store: every resource, at one version, in one file of the state directory.
 *
 * Layout of DIR: `store.pb` holds the state, `LOCK` is flock()ed by the process that owns the
 * directory (a second remora-control on the same directory refuses to start). `store.pb` is an
 * 8-byte magic, a 4-byte CRC-32 and an 8-byte length (little-endian) followed by the encoding of a
 * remora.v1.Snapshot without a nonce: the same bytes agents receive. Every change writes a new file
 * (store.pb.tmp, fsync, rename over store.pb, fsync of the directory), so a crash leaves either the
 * old or the new state, never a mix; the in-memory state changes only after the write succeeded.
 *
 * Each accepted change bumps the version by one; applying content identical to what is stored
 * changes nothing and keeps the version.
 *
 * Not thread-safe: one thread (the server's completion-queue thread) owns the store. Errors are
 * returned with a message; only OOM aborts.
 */
#ifndef remora_control__store_h
#define remora_control__store_h

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "document.h"
#include "resource.h"

typedef struct st_rm_store_t rm_store_t;

#define RM_STORE_FILE "store.pb"

/**
 * Opens the store in `dir` (created if missing, mode 0700; its parent must exist): locks it and
 * loads store.pb when present (version 0 and no resources otherwise). Returns NULL with the reason
 * in `err` (locked by another process, unreadable or corrupt state file, ...).
 */
rm_store_t *rm_store_open(const char *dir, char *err, size_t errsz);
/** Releases the lock and frees everything. */
void rm_store_close(rm_store_t *store);

/**
 * A store without a directory (remora-control --kubernetes, docs/kubernetes-mode.md): empty at
 * version 0; its content comes only from rm_store_replace(). Apply and delete never write anything.
 */
rm_store_t *rm_store_open_memory(void);
/**
 * Replaces the whole content with `list` (its entries move into the store; the list is left empty)
 * at `version` (a hash of the content: versions of this store are not ordered).
 */
void rm_store_replace(rm_store_t *store, rm_resource_list_t *list, uint64_t version);

uint64_t rm_store_version(const rm_store_t *store);

/*
 * The store's identity: RM_STORE_ID_BYTES random bytes made when the state directory is first opened (and
 * written to store.pb at once, with version 0 for a new directory), kept in store.pb and sent in every
 * encoding (Snapshot.store_id). A version number names the same content only within one identity: a
 * directory that was lost and made again counts from 1 again under a new identity. The memory store's
 * identity is a constant ("remora-kube-hash"): its versions are content hashes, the same for the same
 * content in every process and replica, so there is nothing to tell apart.
 */
#define RM_STORE_ID_BYTES 16
/** The identity, RM_STORE_ID_BYTES bytes owned by the store. */
const uint8_t *rm_store_id(const rm_store_t *store);
/** The resources of a kind, sorted by namespace then name; owned by the store, valid until the next change. */
rm_resource_t *const *rm_store_list(const rm_store_t *store, rm_kind_t kind, size_t *n);
/** The resource, or NULL. */
const rm_resource_t *rm_store_find(const rm_store_t *store, rm_kind_t kind, const char *ns, const char *name);
/** An rm_batch_exists_cb over a store (ctx is the rm_store_t *). */
int rm_store_exists_cb(void *ctx, rm_kind_t kind, const char *ns, const char *name);

typedef enum en_rm_store_action_t {
    RM_STORE_UNCHANGED = 0,
    RM_STORE_CREATED,
    RM_STORE_CONFIGURED,
} rm_store_action_t;

/**
 * Stores every resource of a batch that rm_batch_check() found free of errors, as one change.
 * `actions` (batch->resources.size entries) receives what happens to each resource. Created and
 * configured resources move from the batch into the store (their batch entries become NULL).
 * Returns 0 with *changed telling whether a new version was made (never on a dry run, never when
 * every resource is unchanged), or -1 when the state could not be written: then nothing changed and
 * `err` says why.
 */
int rm_store_apply(rm_store_t *store, rm_batch_t *batch, int dry_run, rm_store_action_t *actions, int *changed, char *err,
                   size_t errsz);

#define RM_STORE_ENOENT -2
#define RM_STORE_EINUSE -3
/**
 * Deletes one resource as one change. Returns 0, RM_STORE_ENOENT when there is no such resource,
 * RM_STORE_EINUSE when other resources still refer to it (routes to a Service or a FaultInjection,
 * BackendTrafficPolicies to a Service; `err` names them), or -1 when the state could not be written
 * (nothing changed; `err` says why).
 */
int rm_store_delete(rm_store_t *store, rm_kind_t kind, const char *ns, const char *name, char *err, size_t errsz);
/** The checks of rm_store_delete without the change: 0, RM_STORE_ENOENT or RM_STORE_EINUSE (with `err`). */
int rm_store_check_delete(const rm_store_t *store, rm_kind_t kind, const char *ns, const char *name, char *err, size_t errsz);

/** The encoding of the current state as a remora.v1.Snapshot without a nonce. Owned by the store, valid until the next change. */
const uint8_t *rm_store_snapshot(const rm_store_t *store, size_t *len);

/*
 * Incremental updates (docs/control-plane.md, "Incremental updates"). The store remembers, for every
 * resource, the change that last created or modified it, and logs deletions in a ring of at most
 * RM_STORE_REMOVALS_MAX entries (REMORA_CONTROL_REMOVAL_LOG=N overrides it, 1 to 1000000: for tests).
 * When the ring is full the oldest deletion is dropped, and versions older than it can no longer
 * get a delta. The history starts when the store is opened: the version loaded from store.pb is the
 * oldest that can get one. The memory store (--kubernetes) maps its last 64 versions (hashes) to its
 * changes; older ones get no delta.
 */
#define RM_STORE_REMOVALS_MAX 4096

typedef struct st_rm_store_delta_info_t {
    /** resources created or changed after the base, and deletions, in the delta */
    size_t changed, removed;
} rm_store_delta_info_t;

/**
 * Encodes what changed from `base_version` to the current version as an incremental remora.v1.Snapshot
 * without a nonce (version, the created or changed resources in their fields, incremental, base_version
 * and removed). Returns the malloc'ed encoding (`*len` bytes; the caller frees it) and fills `info` (may
 * be NULL), or NULL when no delta can be made from that version: 0, unknown, newer than the current one,
 * or older than the history kept. A base equal to the current version gives an empty delta.
 */
uint8_t *rm_store_delta(const rm_store_t *store, uint64_t base_version, const uint8_t *const *view, const uint8_t *id, size_t *len,
                        rm_store_delta_info_t *info);

/*
 * Views (scoping, docs/control-plane.md "Scoping"): `view[kind][i]` non-zero keeps the i-th resource of
 * rm_store_list(kind) (RM_KIND__ALL arrays, each as long as its list; made for the current version). A delta
 * with a view holds the view's resources changed after the base, and in `removed` every resource deleted
 * after the base or present but outside the view (the agent ignores one it does not hold); whether the
 * agent's set at the base was that view's is the caller's to know. NULL: everything.
 */
/**
 * The encoding of the current version with only the resources of `view` (malloc'ed; `*len` bytes). `id`
 * (RM_STORE_ID_BYTES; NULL: rm_store_id) is the store_id the encoding carries, here and in rm_store_delta: a
 * view's encodings carry an id of their own (the server derives it from the store's and the scope's), so that
 * an agent's Hello tells which view the set it kept is of.
 */
uint8_t *rm_store_snapshot_view(const rm_store_t *store, const uint8_t *const *view, const uint8_t *id, size_t *len);
/** The index of the resource in rm_store_list(kind), or -1. */
ssize_t rm_store_index(const rm_store_t *store, rm_kind_t kind, const char *ns, const char *name);
/** The change that last created or changed the i-th resource of rm_store_list(kind): its version in the file store. */
uint64_t rm_store_modified(const rm_store_t *store, rm_kind_t kind, size_t i);

#endif
