/*
 * PCRE2 behind rm_regex_*: the only file that sees pcre2.h; PCRE2 error codes become messages here.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/regex.h"

struct st_rm_regex_t {
    pcre2_code *code;
};

/* byte semantics: paths are ASCII and header values may hold obs-text, which must not make a match fail as invalid UTF-8 */
#define COMPILE_OPTIONS (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP)

typedef struct st_thread_scratch_t {
    pcre2_match_data *match_data;
    pcre2_match_context *context;
    pcre2_jit_stack *jit_stack;
} thread_scratch_t;

static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
/* the key's value is only there for its destructor; this is the fast path */
static __thread thread_scratch_t *scratch;
static uint64_t limit_hits;

static void
free_scratch(void *p)
{
    thread_scratch_t *s = p;
    /* runs on the exiting thread itself: a later match from another key's destructor starts afresh */
    scratch = NULL;
    pcre2_match_data_free(s->match_data);
    pcre2_match_context_free(s->context);
    pcre2_jit_stack_free(s->jit_stack);
    free(s);
}

static void
init_key(void)
{
    if (pthread_key_create(&scratch_key, free_scratch) != 0)
        rm_fatal("pthread_key_create failed");
}

static thread_scratch_t *
get_scratch(void)
{
    if (scratch != NULL)
        return scratch;
    pthread_once(&scratch_once, init_key);
    thread_scratch_t *s = rm_calloc(1, sizeof(*s));
    /* we only ask "does it match", so one pair is enough whatever the pattern's captures (a match then returns 0) */
    if ((s->match_data = pcre2_match_data_create(1, NULL)) == NULL || (s->context = pcre2_match_context_create(NULL)) == NULL)
        rm_fatal("out of memory creating the regular expression scratch space");
    pcre2_set_match_limit(s->context, RM_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(s->context, RM_REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(s->context, RM_REGEX_HEAP_LIMIT_KIB);
    /* NULL where PCRE2 was built without JIT: then every match is interpreted and this stack is never needed */
    if ((s->jit_stack = pcre2_jit_stack_create(RM_REGEX_JIT_STACK_BYTES, RM_REGEX_JIT_STACK_BYTES, NULL)) != NULL)
        pcre2_jit_stack_assign(s->context, NULL, s->jit_stack);
    if (pthread_setspecific(scratch_key, s) != 0)
        rm_fatal("pthread_setspecific failed");
    scratch = s;
    return s;
}

static pcre2_code *
compile(const char *pattern, char *errbuf, size_t bufsz)
{
    size_t len = strlen(pattern);
    PCRE2_SIZE offset;
    int rc;

    if (len > RM_REGEX_MAX_PATTERN_BYTES) {
        snprintf(errbuf, bufsz, "the pattern is longer than %d bytes", RM_REGEX_MAX_PATTERN_BYTES);
        return NULL;
    }
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, COMPILE_OPTIONS, &rc, &offset, NULL);
    if (code == NULL) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(rc, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", rc);
        snprintf(errbuf, bufsz, "%s at offset %zu", (const char *)msg, (size_t)offset);
    }
    return code;
}

rm_regex_t *
rm_regex_compile(const char *pattern, char *errbuf, size_t bufsz)
{
    pcre2_code *code = compile(pattern, errbuf, bufsz);
    if (code == NULL)
        return NULL;
    /* without JIT (unsupported CPU, or (*NO_JIT) in the pattern) pcre2_match interprets, under the same limits */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    rm_regex_t *re = rm_malloc(sizeof(*re));
    re->code = code;
    return re;
}

int
rm_regex_check(const char *pattern, char *errbuf, size_t bufsz)
{
    pcre2_code *code = compile(pattern, errbuf, bufsz);
    if (code == NULL)
        return -1;
    pcre2_code_free(code);
    return 0;
}

int
rm_regex_match(const rm_regex_t *re, const char *s, size_t len)
{
    thread_scratch_t *st = get_scratch();
    /* PCRE2 10.42 refuses a NULL subject even when it is empty */
    int rc = pcre2_match(re->code, (PCRE2_SPTR)(s != NULL ? s : ""), len, 0, 0, st->match_data, st->context);
    if (rc >= 0) /* 0: matched, the one-pair ovector too small for the captures */
        return 1;
    if (rc != PCRE2_ERROR_NOMATCH) /* match/depth/heap/JIT-stack limit: no match, never a stall */
        __atomic_add_fetch(&limit_hits, 1, __ATOMIC_RELAXED);
    return 0;
}

void
rm_regex_destroy(rm_regex_t *re)
{
    if (re == NULL)
        return;
    pcre2_code_free(re->code);
    free(re);
}

uint64_t
rm_regex_limit_hits(void)
{
    return __atomic_load_n(&limit_hits, __ATOMIC_RELAXED);
}

void
rm_route_compiled_free(rm_config_route_t *route)
{
    rm_route_compiled_t *rc = route->_compiled;
    if (rc == NULL)
        return;
    rm_regex_destroy(rc->path);
    for (size_t i = 0; i != rc->num_headers; ++i)
        rm_regex_destroy(rc->headers[i]);
    free(rc->headers);
    free(rc);
    route->_compiled = NULL;
}

int
rm_route_compile(rm_config_route_t *route, char *errbuf, size_t bufsz)
{
    char msg[300];
    int any = route->path_match == RM_PATH_MATCH_REGEX;

    rm_route_compiled_free(route);
    for (size_t i = 0; i != route->num_headers; ++i)
        any |= route->headers[i].is_regex;
    if (!any)
        return 0;

    rm_route_compiled_t *rc = rm_calloc(1, sizeof(*rc));
    route->_compiled = rc;
    if (route->path_match == RM_PATH_MATCH_REGEX) {
        const char *pattern = route->path != NULL ? route->path : "";
        if ((rc->path = rm_regex_compile(pattern, msg, sizeof(msg))) == NULL) {
            snprintf(errbuf, bufsz, "match.path.regex '%.*s%s': %s", RM_REGEX_QUOTE(pattern), msg);
            goto Error;
        }
    }
    rc->headers = rm_calloc(route->num_headers != 0 ? route->num_headers : 1, sizeof(*rc->headers));
    rc->num_headers = route->num_headers;
    for (size_t i = 0; i != route->num_headers; ++i) {
        const rm_config_header_match_t *h = route->headers + i;
        if (!h->is_regex)
            continue;
        const char *pattern = h->value != NULL ? h->value : "";
        if ((rc->headers[i] = rm_regex_compile(pattern, msg, sizeof(msg))) == NULL) {
            snprintf(errbuf, bufsz, "match.headers '%s': regex '%.*s%s': %s", h->name != NULL ? h->name : "",
                     RM_REGEX_QUOTE(pattern), msg);
            goto Error;
        }
    }
    return 0;
Error:
    rm_route_compiled_free(route);
    return -1;
}
