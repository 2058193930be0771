/*
 * Sidecar injection, the pure part (docs/injection.md): a pod (or a pod template) and the injector
 * configuration in, an RFC 6902 JSON Patch out, or the reason the pod is left alone. The webhook
 * (webhook.c) and `remoractl inject|uninject` (remoractl_inject.c) both call it, so both give the
 * same pod.
 *
 * What injection adds (the names are the contract of issue 11, docs/injection.md):
 * - init container `remora-init` FIRST in spec.initContainers (the iptables step, as root with
 *   NET_ADMIN and NET_RAW only);
 * - the agent `remora-proxy`: a native sidecar (second init container, restartPolicy Always, a
 *   startup probe on /ready so the application starts once its proxy is ready), or, with
 *   nativeSidecar false, the first regular container with a postStart hook `remoractl await`
 *   and an outbound grace period;
 * - volumes remora-state (emptyDir), remora-token (projected service-account token, audience
 *   remora) and remora-trust (ConfigMap remora-trust-anchor);
 * - annotation remora.dev/injected: "<version>", and remora.dev/original-probes when HTTP or gRPC
 *   probes of the application were rewritten to /app-health/<container>/<livez|readyz|startupz>
 *   on the agent's health port.
 *
 * Bounds: at most RM_INJECT_MAX_CONTAINERS containers (and as many init containers) per pod, at
 * most RM_INJECT_MAX_PORTS ports in a port list, annotation values of at most
 * RM_INJECT_MAX_VALUE_BYTES bytes.
 *
 * Pure functions: any thread; the configuration is read-only once loaded. Allocation failures abort.
 */
#ifndef remora_control__inject_h
#define remora_control__inject_h

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "remora/strutil.h"

#define RM_INJECT_MAX_CONTAINERS 256
#define RM_INJECT_MAX_PORTS RM_PORT_LIST_MAX
#define RM_INJECT_MAX_VALUE_BYTES 1024

#define RM_INJECT_PROXY_NAME "remora-proxy"
#define RM_INJECT_INIT_NAME "remora-init"
#define RM_INJECT_ANNOTATION_INJECTED "remora.dev/injected"
#define RM_INJECT_ANNOTATION_INJECT "remora.dev/inject"
#define RM_INJECT_ANNOTATION_PROBES "remora.dev/original-probes"
#define RM_INJECT_HEALTH_PORT 15020

/** The injector configuration (the file of --injector-config / `remoractl inject --config`). */
typedef struct st_rm_inject_config_t {
    char *proxy_image, *proxy_image_pull_policy, *init_image, *control_address, *log_level;
    /** normalized comma-separated port lists ("" when empty) */
    char *opaque_ports, *skip_inbound_ports, *skip_outbound_ports;
    uint32_t proxy_uid;
    int native_sidecar;
    uint32_t outbound_grace_ms;
    /** the agent's resources, a Kubernetes ResourceRequirements object (owned) */
    json_t *resources;
    /** what remora.dev/injected says: the project version */
    char *version;
} rm_inject_config_t;

/** Fills the built-in defaults (docs/injection.md). Dispose with rm_inject_config_dispose. */
void rm_inject_config_init(rm_inject_config_t *cfg);
void rm_inject_config_dispose(rm_inject_config_t *cfg);

/**
 * Reads a YAML injector configuration over the defaults already in `cfg`: every key optional,
 * unknown keys and bad values are errors "NAME:LINE: ...". Returns 0 or -1 with the message.
 */
int rm_inject_config_parse(rm_inject_config_t *cfg, const char *text, size_t len, const char *name, char *err, size_t errsz);
/** The same from a file (at most 1 MiB). */
int rm_inject_config_load(rm_inject_config_t *cfg, const char *path, char *err, size_t errsz);

typedef enum en_rm_inject_result_t {
    /** *patch is set: a JSON array of RFC 6902 operations (new reference) */
    RM_INJECT_PATCH = 0,
    /** left alone on purpose; the reason says why (hostNetwork, already injected, opted out) */
    RM_INJECT_SKIP = 1,
    /** the pod cannot be injected as asked (a bad override annotation, a name clash): the reason says what to fix */
    RM_INJECT_INVALID = 2,
} rm_inject_result_t;

/** Why a pod was left alone (RM_INJECT_SKIP), as a code: the reason string is for people, this for metrics. */
typedef enum en_rm_inject_skip_t {
    RM_INJECT_SKIP_NONE = 0,         /* not skipped (injected, or invalid) */
    RM_INJECT_SKIP_DISABLED,         /* annotation remora.dev/inject: disabled */
    RM_INJECT_SKIP_ALREADY_INJECTED, /* annotated remora.dev/injected, or it has a container named remora-proxy */
    RM_INJECT_SKIP_HOST_NETWORK,     /* a hostNetwork pod: its traffic is the node's */
} rm_inject_skip_t;

/**
 * Injects the pod `pod` (an object with "metadata" and "spec": a Pod or a pod template; borrowed,
 * not modified). The patch's paths are relative to `pod` and valid when applied in order.
 * `warnings` (may be NULL) receives strings about probes left as they were (new references appended).
 */
rm_inject_result_t rm_inject_pod(const rm_inject_config_t *cfg, const json_t *pod, json_t **patch, json_t *warnings, char *reason,
                                 size_t reasonsz);
/** The same, and `*skip` (may be NULL) says why in a code: RM_INJECT_SKIP_NONE unless the result is RM_INJECT_SKIP. */
rm_inject_result_t rm_inject_pod_why(const rm_inject_config_t *cfg, const json_t *pod, json_t **patch, json_t *warnings,
                                     char *reason, size_t reasonsz, rm_inject_skip_t *skip);

/**
 * The inverse: a patch removing exactly what rm_inject_pod added and restoring the original probes
 * (from remora.dev/original-probes). RM_INJECT_SKIP when the pod is not injected.
 */
rm_inject_result_t rm_uninject_pod(const json_t *pod, json_t **patch, char *reason, size_t reasonsz);

/**
 * Applies an RFC 6902 patch (add, remove, replace, move, copy, test) to `doc` in place. Returns 0,
 * or -1 with the failing operation's index and reason (the document may be half patched then).
 * Replacing the root is not supported (never produced here).
 */
int rm_jsonpatch_apply(json_t *doc, const json_t *patch, char *err, size_t errsz);

/** Appends the RFC 6901 escaping of `token` ('~' -> "~0", '/' -> "~1") to "prefix/"; returns a malloc'ed pointer. */
char *rm_json_pointer_join(const char *prefix, const char *token);

#endif
