/*
 * On-demand discovery, the agent-wide part (docs/control-plane.md, "On-demand discovery" and "The agent's
 * side"): the names that requests met and the agent's scoped snapshot does not know, from the moment a
 * worker holds a request for one until the control plane has answered it.
 *
 * A worker whose config is `scoped` and finds no route for a request's authority asks here
 * (rm_ondemand_ask) whether to hold the request: the name is queued for the control thread, which takes
 * the queued names (rm_ondemand_take, at most RM_ONDEMAND_MAX_PER_MESSAGE per Discover message) as soon as
 * it is woken, and reports the names a Snapshot answered (rm_ondemand_answered) once that snapshot is in
 * service on every worker. The workers then route their held requests again: a name with a route now was found
 * (rm_ondemand_forget); a name answered and still without a route is unknown to the control plane, and is
 * not asked again for RM_ONDEMAND_UNKNOWN_MS (rm_ondemand_settle, rm_ondemand_ask answer at once).
 *
 * States of a name: pending (queued, not sent), in flight (sent, no answer yet; sent again when the
 * answer has not come within the discovery timeout or the stream was lost), answered (with the config of
 * some generation: that config or a later one decides), unknown (until a time).
 *
 * Bounds: at most RM_ONDEMAND_MAX_NAMES names are remembered agent-wide (pending and in flight ones are
 * never dropped: beyond, rm_ondemand_ask says FULL; answered and unknown ones are replaced first), each at
 * most RM_ONDEMAND_MAX_NAME_BYTES; the table (about 270 KB) is allocated at the first name asked, so an
 * agent without scoping never has it.
 *
 * Threads: everything here is thread-safe (one mutex, taken only on the no-route path of a scoped
 * config and by the control thread). No function reports errors: FULL and OFF are answers.
 */
#ifndef remora__config_ondemand_h
#define remora__config_ondemand_h

#include <stddef.h>
#include <stdint.h>

/** names remembered agent-wide (pending, in flight, answered, unknown) */
#define RM_ONDEMAND_MAX_NAMES 1024
/** a DNS name's longest text form */
#define RM_ONDEMAND_MAX_NAME_BYTES 253
/** names per Discover message (discovery.proto) */
#define RM_ONDEMAND_MAX_PER_MESSAGE 32
/** requests held per worker; beyond, answered at once as today and counted "overflow" */
#define RM_ONDEMAND_MAX_HELD_PER_WORKER 256
/** how long a name the control plane did not know is answered at once without asking again */
#define RM_ONDEMAND_UNKNOWN_MS 5000
/** --discovery-timeout-ms when not given */
#define RM_ONDEMAND_DEFAULT_TIMEOUT_MS 1000
/** --discovery-timeout-ms at most */
#define RM_ONDEMAND_MAX_TIMEOUT_MS 60000

/** Outcomes of held or short-circuited requests (remora_ondemand_requests_total{result}). */
typedef enum en_rm_ondemand_result_t {
    RM_ONDEMAND_FOUND = 0,
    RM_ONDEMAND_UNKNOWN,
    RM_ONDEMAND_TIMEOUT,
    RM_ONDEMAND_OVERFLOW,
    RM_ONDEMAND_NUM_RESULTS
} rm_ondemand_result_t;

/** What a worker does with a request whose authority has no route (rm_ondemand_ask). */
typedef enum en_rm_ondemand_ask_t {
    /** answer as today, not counted: discovery is off (timeout 0), or no control stream is connected */
    RM_ONDEMAND_ASK_OFF = 0,
    /** hold the request: the name is pending or in flight */
    RM_ONDEMAND_ASK_HOLD,
    /** answer as today at once, counted "unknown": the control plane said it does not know the name */
    RM_ONDEMAND_ASK_UNKNOWN,
    /** answer as today at once, counted "overflow": RM_ONDEMAND_MAX_NAMES names are pending or in flight */
    RM_ONDEMAND_ASK_FULL,
} rm_ondemand_ask_t;

/** --discovery-timeout-ms (0: on-demand discovery off). Main thread, before the workers start. */
void rm_ondemand_set_timeout_ms(uint32_t timeout_ms);
/** The discovery timeout in ms (0: off). Any thread. */
uint32_t rm_ondemand_timeout_ms(void);

/**
 * The host of `authority` ("Host:port", "host.") as Discover names it: lowercase, without the port and a
 * trailing dot, into `out` (RM_ONDEMAND_MAX_NAME_BYTES + 1 bytes, NUL-terminated). Returns its length, or 0
 * when it is not a DNS name that a Service could answer (empty, too long, an IP address, a character other
 * than letters, digits, '-' and '.'). Pure; any thread.
 */
size_t rm_ondemand_host(const char *authority, size_t len, char *out);

/**
 * A worker met `host` (rm_ondemand_host's form) without a route under the scoped config of generation
 * `generation` (rm_config_t.generation). Queues the name and wakes the control thread when it is new (or its last ask
 * went unanswered for the discovery timeout). Any thread.
 */
rm_ondemand_ask_t rm_ondemand_ask(const char *host, uint64_t generation);

/**
 * A held request for `host` still has no route under the config of generation `generation`: returns 1
 * when the control plane has answered the name with that config or an earlier one (the name is unknown: it is
 * remembered so for RM_ONDEMAND_UNKNOWN_MS), 0 to keep holding. Any thread.
 */
int rm_ondemand_settle(const char *host, uint64_t generation);

/** A held request for `host` found its route: the name needs nothing more. Any thread. */
void rm_ondemand_forget(const char *host);

/** Counts one request under `result`. Any thread. */
void rm_ondemand_count(rm_ondemand_result_t result);
/** Adds `delta` to the requests held now (all workers). Any thread. */
void rm_ondemand_held_add(long delta);

/**
 * remora_ondemand_requests_total{result} and remora_ondemand_held as Prometheus text (malloc'ed), or NULL
 * for an agent that never had a control stream. For rm_stats_register_renderer.
 */
char *rm_ondemand_render(void);

/**
 * The workers' side: `notify` is called (on the control thread, without the lock held) after
 * rm_ondemand_answered, and must make every worker route its held requests again. Main thread, at start.
 */
void rm_ondemand_set_notify(void (*notify)(void));

/**
 * Control thread: a stream to the control plane is open (its Hello sent); `wake(ctx)` makes the thread's
 * wait for the next message return at once, so that names asked from now on are sent without delay. It is
 * called with the table's lock held: it must only signal. Names still queued wake it at once.
 */
void rm_ondemand_attach(void (*wake)(void *ctx), void *ctx);
/** Control thread: the stream is gone (before it is freed): no request is held from now on, names in
 * flight are queued again for the next stream. After it returns, `wake` is never called. */
void rm_ondemand_detach(void);

/**
 * Control thread: moves up to `max` (at most RM_ONDEMAND_MAX_PER_MESSAGE) queued names into `names` (in
 * flight from now on). Returns how many.
 */
size_t rm_ondemand_take(char names[][RM_ONDEMAND_MAX_NAME_BYTES + 1], size_t max);

/**
 * Control thread: a snapshot answered `names` (Snapshot.discovered; names never asked are ignored), and the
 * config of `generation` that holds the answer is posted to every worker (0: whichever config a worker
 * has decides, as for an answer that changed nothing). Then calls the notify hook.
 */
void rm_ondemand_answered(char *const *names, size_t n, uint64_t generation);

#endif
