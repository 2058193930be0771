/*
 * Regular expressions for route matching, and the compiled form of a route's match conditions.
 *
 * PCRE2 (8-bit, byte semantics: no UTF, no UCP) behind a small interface; regex.c is the only file
 * that includes pcre2.h. A pattern always matches the whole subject: it is compiled with
 * PCRE2_ANCHORED | PCRE2_ENDANCHORED, as if written "^(?:pattern)$" (Gateway API RE2 habit), so
 * "/v1" does not match "/v10" and a pattern need not (but may) carry its own ^ and $.
 *
 * Every match is bounded, so that no pattern and no subject can stall a worker:
 *   - RM_REGEX_MATCH_LIMIT: PCRE2 match limit (pcre2_set_match_limit), the number of backtracking
 *     steps one match may take (JIT and interpreter alike);
 *   - RM_REGEX_DEPTH_LIMIT and RM_REGEX_HEAP_LIMIT_KIB: the interpreter's backtracking depth and
 *     heap (pcre2_set_depth_limit / pcre2_set_heap_limit), used only if JIT compilation failed;
 *   - RM_REGEX_JIT_STACK_BYTES: the fixed-size JIT stack of each thread.
 * A match that hits a limit counts as no match (and is counted, rm_regex_limit_hits); it never
 * aborts and never loops. Patterns may lower these limits with (*LIMIT_MATCH=n) and the like, never
 * raise them.
 *
 * Threads: compiled objects are immutable and shared by every worker. Matching uses per-thread
 * scratch (match data, match context, JIT stack), created on a thread's first match (the only
 * allocation on the match path) and freed when the thread exits.
 */
#ifndef remora__config_regex_h
#define remora__config_regex_h

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config/config.h"

/** Longest accepted pattern, in bytes. */
#define RM_REGEX_MAX_PATTERN_BYTES 4096
/** Backtracking steps one match may take (PCRE2's own default is 10000000). */
#define RM_REGEX_MATCH_LIMIT 100000
/** Interpreter only: nesting depth of backtracking, and the heap its frames may use (KiB). */
#define RM_REGEX_DEPTH_LIMIT 10000
#define RM_REGEX_HEAP_LIMIT_KIB 2048
/** Size of each thread's JIT stack (start = maximum: it never grows). */
#define RM_REGEX_JIT_STACK_BYTES (256 * 1024)

typedef struct st_rm_regex_t rm_regex_t;

/**
 * Compiles `pattern` (NUL-terminated, at most RM_REGEX_MAX_PATTERN_BYTES) anchored at both ends and
 * JIT-compiles it when the platform allows (falling back to the bounded interpreter). Returns a
 * new object (caller destroys), or NULL with PCRE2's message and the offset of the error written
 * into `errbuf` ("missing closing parenthesis at offset 4"). Any thread. Aborts on OOM.
 */
rm_regex_t *rm_regex_compile(const char *pattern, char *errbuf, size_t bufsz);
/** Checks that `pattern` compiles (no JIT, nothing kept). Returns 0, or -1 with the message as rm_regex_compile. */
int rm_regex_check(const char *pattern, char *errbuf, size_t bufsz);
/**
 * 1 if the whole of s[0..len) matches, else 0 (including when a limit was hit). `s` may be NULL
 * when len is 0. Any thread, concurrently on the same object; allocation-free except for the
 * calling thread's first match.
 */
int rm_regex_match(const rm_regex_t *re, const char *s, size_t len);
/** Arguments for a "%.*s%s" format that quotes a pattern in a message, cut at 80 bytes ("..."). */
#define RM_REGEX_QUOTE(s) (strlen(s) > 80 ? 77 : (int)strlen(s)), (s), (strlen(s) > 80 ? "..." : "")
/** Frees a compiled expression; NULL is ignored. */
void rm_regex_destroy(rm_regex_t *re);
/** Matches, process-wide, that hit a limit and were therefore reported as no match (relaxed atomic). */
uint64_t rm_regex_limit_hits(void);

/**
 * What rm_config_route_t._compiled points to: the route's regular expressions, built by
 * rm_config_validate and owned by the snapshot.
 */
typedef struct st_rm_route_compiled_t {
    /** RM_PATH_MATCH_REGEX: the path expression, else NULL */
    rm_regex_t *path;
    /** one per rm_config_route_t.headers entry: the value expression where is_regex, else NULL */
    rm_regex_t **headers;
    size_t num_headers;
} rm_route_compiled_t;

/**
 * (Re)builds route->_compiled from the route's path and header matches; leaves it NULL when the
 * route has no regular expression. Returns 0, or -1 with a message naming the match that failed
 * ("match.path.regex '(': missing closing parenthesis at offset 1") in `errbuf`; route->_compiled
 * is then NULL. Called by rm_config_validate before a snapshot is published.
 */
int rm_route_compile(rm_config_route_t *route, char *errbuf, size_t bufsz);
/** Frees route->_compiled and sets it to NULL. */
void rm_route_compiled_free(rm_config_route_t *route);

#endif
