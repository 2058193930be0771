/*
 * Authorization policies as configuration data: freeing, copying and checking them (the bootstrap
 * parser, the validator and the control-plane translation share these). What they mean is in
 * filters/authz.h.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "config/config.h"
#include "config/config_priv.h"

const char *const rm_config__authz_action_names[3] = {"allow", "deny", "audit"};

static void
free_strings(char **v, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        free(v[i]);
    free(v);
}

void
rm_config_authz_free(rm_config_authz_t *authz)
{
    if (authz == NULL)
        return;
    for (size_t i = 0; i != authz->num_policies; ++i) {
        rm_config_authz_policy_t *p = &authz->policies[i];
        for (size_t j = 0; j != p->num_rules; ++j) {
            rm_config_authz_rule_t *r = &p->rules[j];
            for (size_t k = 0; k != r->num_from; ++k) {
                free_strings(r->from[k].identities, r->from[k].num_identities);
                free_strings(r->from[k].namespaces, r->from[k].num_namespaces);
            }
            free(r->from);
            for (size_t k = 0; k != r->num_to; ++k) {
                free_strings(r->to[k].methods, r->to[k].num_methods);
                free_strings(r->to[k].paths, r->to[k].num_paths);
                free_strings(r->to[k].grpc_methods, r->to[k].num_grpc_methods);
            }
            free(r->to);
        }
        free(p->rules);
        free(p->name);
    }
    free(authz->policies);
    free(authz);
}

static char **
copy_strings(char *const *v, size_t n)
{
    if (n == 0)
        return NULL;
    char **out = rm_calloc(n, sizeof(*out));
    for (size_t i = 0; i != n; ++i)
        out[i] = rm_strdup(v[i]);
    return out;
}

rm_config_authz_t *
rm_config_authz_copy(const rm_config_authz_t *from)
{
    if (from == NULL)
        return NULL;
    rm_config_authz_t *to = rm_calloc(1, sizeof(*to));
    to->policies = rm_calloc(from->num_policies + 1, sizeof(*to->policies));
    to->num_policies = from->num_policies;
    for (size_t i = 0; i != from->num_policies; ++i) {
        const rm_config_authz_policy_t *fp = &from->policies[i];
        rm_config_authz_policy_t *tp = &to->policies[i];
        tp->name = fp->name != NULL ? rm_strdup(fp->name) : NULL;
        tp->action = fp->action;
        tp->rules = rm_calloc(fp->num_rules + 1, sizeof(*tp->rules));
        tp->num_rules = fp->num_rules;
        for (size_t j = 0; j != fp->num_rules; ++j) {
            const rm_config_authz_rule_t *fr = &fp->rules[j];
            rm_config_authz_rule_t *tr = &tp->rules[j];
            tr->from = rm_calloc(fr->num_from + 1, sizeof(*tr->from));
            tr->num_from = fr->num_from;
            for (size_t k = 0; k != fr->num_from; ++k) {
                tr->from[k].identities = copy_strings(fr->from[k].identities, fr->from[k].num_identities);
                tr->from[k].num_identities = fr->from[k].num_identities;
                tr->from[k].namespaces = copy_strings(fr->from[k].namespaces, fr->from[k].num_namespaces);
                tr->from[k].num_namespaces = fr->from[k].num_namespaces;
            }
            tr->to = rm_calloc(fr->num_to + 1, sizeof(*tr->to));
            tr->num_to = fr->num_to;
            for (size_t k = 0; k != fr->num_to; ++k) {
                tr->to[k].methods = copy_strings(fr->to[k].methods, fr->to[k].num_methods);
                tr->to[k].num_methods = fr->to[k].num_methods;
                tr->to[k].paths = copy_strings(fr->to[k].paths, fr->to[k].num_paths);
                tr->to[k].num_paths = fr->to[k].num_paths;
                tr->to[k].grpc_methods = copy_strings(fr->to[k].grpc_methods, fr->to[k].num_grpc_methods);
                tr->to[k].num_grpc_methods = fr->to[k].num_grpc_methods;
            }
        }
    }
    return to;
}

/* Patterns may end in '*' (a prefix); '*' elsewhere, spaces and control characters are refused. */
static int
pattern_ok(const char *s)
{
    for (const char *c = s; *c != '\0'; ++c)
        if ((unsigned char)*c <= ' ' || *c == 0x7f || (*c == '*' && c[1] != '\0'))
            return 0;
    return 1;
}

static int
grpc_name_ok(const char *s, size_t len, int dots)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || (dots && s[i] == '.')))
            return 0;
    return 1;
}

const char *
rm_config__authz_value_error(rm_config_authz_value_t type, const char *s)
{
    if (strlen(s) > RM_CONFIG_MAX_AUTHZ_VALUE_BYTES)
        return "is longer than 512 bytes";
    switch (type) {
    case RM_CONFIG_AUTHZ_IDENTITY:
        if (strncmp(s, "spiffe://", 9) != 0 || s[9] == '\0' || !pattern_ok(s))
            return "is not a SPIFFE ID: use spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, or a prefix ending in '*'";
        return NULL;
    case RM_CONFIG_AUTHZ_NAMESPACE: {
        size_t len = strlen(s);
        if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
            return "is not a valid namespace (1-63 lower-case letters, digits and '-')";
        for (const char *c = s; *c != '\0'; ++c)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
                return "is not a valid namespace (1-63 lower-case letters, digits and '-')";
        return NULL;
    }
    case RM_CONFIG_AUTHZ_METHOD:
        for (const char *c = s; *c != '\0'; ++c)
            if (islower((unsigned char)*c))
                return "is not upper case: methods are written GET, POST, ...";
        if (!rm_config__valid_token(s))
            return "is not a valid HTTP method";
        return NULL;
    case RM_CONFIG_AUTHZ_PATH:
        if (s[0] != '/' || !pattern_ok(s) || strchr(s, '?') != NULL || strchr(s, '#') != NULL)
            return "is not a path: start with '/', no query, no spaces; a prefix ends in '*' (\"/v1/*\")";
        return NULL;
    case RM_CONFIG_AUTHZ_GRPC_METHOD: {
        const char *slash = strchr(s, '/');
        if (slash == NULL || strchr(slash + 1, '/') != NULL || !grpc_name_ok(s, (size_t)(slash - s), 1) ||
            !(strcmp(slash + 1, "*") == 0 || grpc_name_ok(slash + 1, strlen(slash + 1), 0)))
            return "is not a gRPC method: use \"pkg.Service/Method\" or \"pkg.Service/*\"";
        return NULL;
    }
    }
    return "unknown value type";
}

static int
check_values(const rm_config_t *c, char *const *v, size_t n, rm_config_authz_value_t type, unsigned line, const char *what,
             const char *policy, const char *key, rm_config_error_t *err)
{
    if (n > RM_CONFIG_MAX_AUTHZ_VALUES)
        return rm_config__error(err, c->source, line, "%sauthorization '%s': %s lists more than %d values", what, policy, key,
                                RM_CONFIG_MAX_AUTHZ_VALUES);
    for (size_t i = 0; i != n; ++i) {
        const char *why = rm_config__authz_value_error(type, v[i]);
        if (why != NULL)
            return rm_config__error(err, c->source, line, "%sauthorization '%s': %s '%s' %s", what, policy, key, v[i], why);
    }
    return 0;
}

int
rm_config__validate_authz(const rm_config_t *c, const rm_config_authz_t *authz, unsigned line, const char *what,
                          rm_config_error_t *err)
{
    if (authz->num_policies == 0 || authz->num_policies > RM_CONFIG_MAX_AUTHZ_POLICIES)
        return rm_config__error(err, c->source, line, "%sauthorization must list 1-%d policies, got %zu", what,
                                RM_CONFIG_MAX_AUTHZ_POLICIES, authz->num_policies);
    for (size_t i = 0; i != authz->num_policies; ++i) {
        const rm_config_authz_policy_t *p = &authz->policies[i];
        if (p->name == NULL || !rm_config__valid_rate_limit_name(p->name))
            return rm_config__error(err, c->source, line,
                                    "%sauthorization[%zu].name must be letters, digits and . _ - / (1-%d characters)", what, i,
                                    RM_CONFIG_MAX_RATE_NAME);
        for (size_t j = 0; j != i; ++j)
            if (strcmp(authz->policies[j].name, p->name) == 0)
                return rm_config__error(err, c->source, line, "%sauthorization: policy '%s' is listed twice", what, p->name);
        if ((unsigned)p->action > RM_AUTHZ_AUDIT)
            return rm_config__error(err, c->source, line, "%sauthorization '%s': unknown action %d", what, p->name, (int)p->action);
        if (p->num_rules > RM_CONFIG_MAX_AUTHZ_RULES)
            return rm_config__error(err, c->source, line, "%sauthorization '%s': at most %d rules, got %zu", what, p->name,
                                    RM_CONFIG_MAX_AUTHZ_RULES, p->num_rules);
        for (size_t j = 0; j != p->num_rules; ++j) {
            const rm_config_authz_rule_t *r = &p->rules[j];
            if (r->num_from > RM_CONFIG_MAX_AUTHZ_ENTRIES || r->num_to > RM_CONFIG_MAX_AUTHZ_ENTRIES)
                return rm_config__error(err, c->source, line, "%sauthorization '%s': rules[%zu]: at most %d from and %d to entries",
                                        what, p->name, j, RM_CONFIG_MAX_AUTHZ_ENTRIES, RM_CONFIG_MAX_AUTHZ_ENTRIES);
            for (size_t k = 0; k != r->num_from; ++k) {
                const rm_config_authz_from_t *f = &r->from[k];
                if ((f->num_identities == 0) == (f->num_namespaces == 0))
                    return rm_config__error(err, c->source, line,
                                            "%sauthorization '%s': rules[%zu].from[%zu] needs exactly one of identities and "
                                            "namespaces",
                                            what, p->name, j, k);
                if (check_values(c, f->identities, f->num_identities, RM_CONFIG_AUTHZ_IDENTITY, line, what, p->name, "identities",
                                 err) != 0 ||
                    check_values(c, f->namespaces, f->num_namespaces, RM_CONFIG_AUTHZ_NAMESPACE, line, what, p->name, "namespaces",
                                 err) != 0)
                    return -1;
            }
            for (size_t k = 0; k != r->num_to; ++k) {
                const rm_config_authz_to_t *t = &r->to[k];
                if (t->num_methods + t->num_paths + t->num_grpc_methods == 0)
                    return rm_config__error(err, c->source, line,
                                            "%sauthorization '%s': rules[%zu].to[%zu] needs methods, paths or grpc_methods", what,
                                            p->name, j, k);
                if (t->num_paths != 0 && t->num_grpc_methods != 0)
                    return rm_config__error(err, c->source, line,
                                            "%sauthorization '%s': rules[%zu].to[%zu]: paths and grpc_methods cannot be combined "
                                            "(a gRPC method is the path): use two entries",
                                            what, p->name, j, k);
                if (check_values(c, t->methods, t->num_methods, RM_CONFIG_AUTHZ_METHOD, line, what, p->name, "methods", err) != 0 ||
                    check_values(c, t->paths, t->num_paths, RM_CONFIG_AUTHZ_PATH, line, what, p->name, "paths", err) != 0 ||
                    check_values(c, t->grpc_methods, t->num_grpc_methods, RM_CONFIG_AUTHZ_GRPC_METHOD, line, what, p->name,
                                 "grpc_methods", err) != 0)
                    return -1;
            }
        }
    }
    return 0;
}
