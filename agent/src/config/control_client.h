/*
 * The agent's control-plane client: one thread holding the remora.v1.Discovery stream.
 *
 * It says Hello with the node id and the version it serves, then for every Snapshot received:
 * translates it (config/translate.h), hands the result to `apply` (which puts it in service and
 * returns once it is), persists the snapshot in the state directory, and ACKs; a snapshot that does
 * not translate or apply is NACKed with the reason and the previous config stays in service. A
 * lost stream is re-opened with jittered exponential backoff (100 ms doubling to 10 s).
 *
 * The persisted snapshot lets an agent that starts while the control plane is unreachable serve
 * the last configuration it had (rm_control_load_persisted).
 *
 * Incremental updates (docs/control-plane.md): the Hello sets accepts_incremental, and a Snapshot with
 * `incremental` set is merged into the resource set in service (read back from the persisted snapshot,
 * or kept in memory when there is no state directory or the last write failed) and then handled as a
 * full snapshot of the merged set: translated, applied, persisted (the merged, full set), ACKed. A
 * delta whose base_version is not the version in service, or whose base cannot be read, is NACKed with
 * the reason, and the control plane follows with the full snapshot. Received snapshots are counted by
 * kind (rm_control_count_update, control_stats.h).
 *
 * The control plane may also send an admin request (Snapshot.admin_request, `remoractl proxy NODE
 * stats|config|clusters|log-level`) instead of a snapshot: it is answered with an AdminResponse from
 * `admin_command`, read-only commands and the log level only, the body cut at
 * RM_CONTROL_ADMIN_MAX_BODY_BYTES.
 *
 * Between snapshots the same thread sends a Stats summary every `stats_interval_ms` (control_stats.h):
 * sends on the stream are made one at a time from this thread only, so the ACKs and the summaries never
 * have two sends outstanding (gRPC's rule).
 *
 * The stream runs over TLS (docs/identity.md, "The control plane's own doors"): the control plane's
 * certificate is verified against the trust bundle file and the name RM_H2RPC_SERVER_NAME (h2rpc.h);
 * the agent authenticates with its bootstrap token (`authorization: Bearer`) and, when it has an
 * unexpired workload certificate in service, with that as TLS client certificate. The files and
 * the identity are read again for every new stream, so a rotated token, certificate or bundle is
 * used at the next connection.
 *
 * Thread: start/stop from the main thread; `apply` is called on the control thread.
 */
#ifndef remora__control_client_h
#define remora__control_client_h

#include <stddef.h>
#include <stdint.h>
#include "config/config.h"

typedef struct st_rm_control_client_t rm_control_client_t;

/** The largest admin answer sent to the control plane (`remoractl proxy`); a longer body is cut and marked truncated. */
#define RM_CONTROL_ADMIN_MAX_BODY_BYTES (4u * 1024 * 1024)

/** An admin command's answer (rm_control_options_t.admin_command). */
typedef struct st_rm_control_admin_reply_t {
    /** as the admin API answers: 200, 400, 404, 503 */
    unsigned status;
    /** a static string */
    const char *content_type;
    /** malloc'ed (the client frees it), `body_len` bytes; NULL for none */
    char *body;
    size_t body_len;
} rm_control_admin_reply_t;

typedef struct st_rm_control_options_t {
    /** control plane address "IP:PORT" (copied) */
    const char *address;
    /** this agent's node id (copied) */
    const char *node_id;
    /** where the last good snapshot is kept (copied), NULL for none */
    const char *state_dir;
    /** the agent's own settings (listeners, workers, admin...): a reference is taken */
    rm_config_t *base;
    /** the version already in service (from the persisted snapshot), 0 for none */
    uint64_t applied_version;
    /**
     * Puts `config` in service (takes the reference). Returns 0, or -1 with a reason in `err`.
     * Called on the control thread; may block until the main thread has published it.
     */
    int (*apply)(void *ctx, rm_config_t *config, char *err, size_t errlen);
    /** a snapshot was NACKed (it did not translate or apply), for metrics; may be NULL. Called on the control thread */
    void (*on_nack)(void *ctx);
    void *ctx;
    /**
     * Every this many ms (0: 10000; at least 1000) the client sends a remora.v1.Stats built from the
     * source of config/control_stats.h on the stream (nothing when no source is set).
     */
    uint32_t stats_interval_ms;
    /** the trust bundle (PEM) the control plane's certificate must chain to (copied); NULL only when insecure */
    const char *trust_anchor_file;
    /** the bootstrap token's file (copied), NULL for none */
    const char *token_file;
    /** plaintext, no credentials (remora-agent --control-insecure, for remora-control --insecure: development only) */
    int insecure;
    /**
     * The workload identity in service as PEM: *chain_pem (certificate then intermediates) and *key_pem,
     * both malloc'ed; returns 0, or -1 when there is none (or it expired). May be NULL. Control thread.
     */
    int (*client_identity)(void *ctx, char **chain_pem, char **key_pem);
    /**
     * Serves one admin command the control plane relays on the stream (discovery.proto, AdminRequest;
     * `remoractl proxy`): `command` is one of "stats", "config", "clusters", "log-level" (the client
     * refuses anything else itself), `argument` the new level or "". Fills `reply`. Called on the
     * control thread; may block until the main thread has answered. NULL: the Hello does not offer
     * admin requests, and the control plane sends none.
     */
    void (*admin_command)(void *ctx, const char *command, const char *argument, rm_control_admin_reply_t *reply);
} rm_control_options_t;

/** Starts the client thread. Returns NULL with a message if the thread cannot start. */
rm_control_client_t *rm_control_client_start(const rm_control_options_t *opts, char *err, size_t errlen);
/** Closes the stream, joins the thread and frees the client. */
void rm_control_client_stop(rm_control_client_t *client);

/** What a connection to the control plane presents and verifies (files read at connection time). */
typedef struct st_rm_control_credentials_t {
    int insecure;
    /** the trust bundle, the bootstrap token (trimmed), a client certificate chain and key: malloc'ed or NULL */
    char *root_pem, *token, *cert_chain_pem, *key_pem;
} rm_control_credentials_t;

/**
 * Reads the trust bundle (required unless `insecure`; at most 1 MiB, PEM) and the token file (when
 * not NULL; at most 8 KiB, surrounding whitespace ignored). Returns 0, or -1 with a message naming
 * the file (then nothing is held).
 */
int rm_control_credentials_load(rm_control_credentials_t *cr, int insecure, const char *trust_anchor_file, const char *token_file,
                                char *err, size_t errlen);
/** Frees (and wipes the secrets of) what rm_control_credentials_load and the caller put in `cr`. */
void rm_control_credentials_dispose(rm_control_credentials_t *cr);

/**
 * Reads the snapshot persisted in `state_dir` and translates it against `base`. Returns the config
 * (refcount 1) with *version set, NULL with err[0] == '\0' when there is none, or NULL with a reason.
 */
rm_config_t *rm_control_load_persisted(const char *state_dir, rm_config_t *base, uint64_t *version, char *err, size_t errlen);

#endif
