/* The path modifier shared by URLRewrite and RequestRedirect, and the redirect Location (Gateway API rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "filters/redirect.h"
#include "filters/url_rewrite.h"

static rm_config_route_t
prefix_route(const char *prefix)
{
    rm_config_route_t route;
    memset(&route, 0, sizeof(route));
    route.path_match = prefix != NULL ? RM_PATH_MATCH_PREFIX : RM_PATH_MATCH_ANY;
    route.path = (char *)prefix;
    return route;
}

static void
check_path(const char *route_prefix, rm_path_rewrite_t type, const char *value, const char *path, const char *expected)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    rm_config_route_t route = prefix_route(route_prefix);
    h2o_iovec_t out = rm_url_rewrite_path(&pool, &route, type, value, h2o_iovec_init(path, strlen(path)));
    if (!h2o_memis(out.base, out.len, expected, strlen(expected)))
        fail_msg("prefix %s, %s %s on %s: \"%.*s\", expected \"%s\"", route_prefix != NULL ? route_prefix : "(none)",
                 type == RM_PATH_REWRITE_FULL ? "full" : "prefix", value, path, (int)out.len, out.base, expected);
    h2o_mem_clear_pool(&pool);
}

static void
test_replace_prefix_gateway_table(void **state)
{
    /* the table of the Gateway API's HTTPPathModifier.ReplacePrefixMatch */
    static const struct {
        const char *path, *prefix, *value, *expected;
    } cases[] = {
        {"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
        {"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
        {"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
        {"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
        {"/foo", "/foo", "/xyz", "/xyz"},
        {"/foo/", "/foo", "/xyz", "/xyz/"},
        {"/foo/bar", "/foo", "", "/bar"},
        {"/foo/", "/foo", "", "/"},
        {"/foo", "/foo", "", "/"},
        {"/foo/", "/foo", "/", "/"},
        {"/foo", "/foo", "/", "/"},
        {"/foo/bar", "/foo", "/", "/bar"},
        {"/foo/bar", "/foo/", "/", "/bar"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i)
        check_path(cases[i].prefix, RM_PATH_REWRITE_PREFIX, cases[i].value, cases[i].path, cases[i].expected);
}

static void
test_replace_prefix_more(void **state)
{
    /* the query string is kept */
    check_path("/old/", RM_PATH_REWRITE_PREFIX, "/v2/", "/old/a/b?x=1", "/v2/a/b?x=1");
    check_path("/old/", RM_PATH_REWRITE_PREFIX, "/v2/", "/old/?x=/old/", "/v2/?x=/old/");
    check_path("/strip/", RM_PATH_REWRITE_PREFIX, "/", "/strip/a/b", "/a/b");
    check_path("/strip", RM_PATH_REWRITE_PREFIX, "/", "/strip?q", "/?q");
    /* a route without a path match counts as prefix "/" */
    check_path(NULL, RM_PATH_REWRITE_PREFIX, "/v2/", "/a/b?c", "/v2/a/b?c");
    check_path(NULL, RM_PATH_REWRITE_PREFIX, "/", "/a/b", "/a/b");
    check_path("/", RM_PATH_REWRITE_PREFIX, "/v2", "/", "/v2/");
    /* a byte-wise match that ended inside a segment: the matched bytes are replaced as written */
    check_path("/foo", RM_PATH_REWRITE_PREFIX, "/xyz", "/foobar", "/xyzbar");
    check_path("/foo", RM_PATH_REWRITE_PREFIX, "/", "/foobar", "/bar");
    /* nothing to do: the asterisk form, a path outside the prefix */
    check_path(NULL, RM_PATH_REWRITE_PREFIX, "/v2/", "*", "*");
    check_path("/foo/", RM_PATH_REWRITE_PREFIX, "/v2/", "/bar", "/bar");
}

static void
test_replace_full(void **state)
{
    check_path("/full/", RM_PATH_REWRITE_FULL, "/replaced", "/full/a/b", "/replaced");
    check_path("/full/", RM_PATH_REWRITE_FULL, "/replaced", "/full/a/b?x=1&y", "/replaced?x=1&y");
    check_path(NULL, RM_PATH_REWRITE_FULL, "/", "/a?", "/?");
    check_path(NULL, RM_PATH_REWRITE_NONE, NULL, "/a?b", "/a?b");
}

static void
check_location(const char *prefix, const rm_config_redirect_t *redirect, const char *scheme, const char *authority,
               const char *path, const char *expected)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    rm_config_route_t route = prefix_route(prefix);
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.scheme = h2o_iovec_init(scheme, strlen(scheme));
    req.authority = h2o_iovec_init(authority, strlen(authority));
    req.path = h2o_iovec_init(path, strlen(path));
    h2o_iovec_t loc = rm_redirect_location(&pool, &route, redirect, &req);
    if (!h2o_memis(loc.base, loc.len, expected, strlen(expected)))
        fail_msg("%s://%s%s: \"%.*s\", expected \"%s\"", scheme, authority, path, (int)loc.len, loc.base, expected);
    h2o_mem_clear_pool(&pool);
}

static void
test_location_scheme_host_port(void **state)
{
    rm_config_redirect_t r = {.scheme = "https",
                              .hostname = "x.example",
                              .port = 8443,
                              .status_code = 301,
                              .path_type = RM_PATH_REWRITE_PREFIX,
                              .path = "/new/"};
    check_location("/redir/", &r, "http", "127.0.0.1:8080", "/redir/a/b?q=1", "https://x.example:8443/new/a/b?q=1");
    /* the configured port is left out when it is the scheme's well-known one */
    r.port = 443;
    check_location("/redir/", &r, "http", "127.0.0.1:8080", "/redir/a/b", "https://x.example/new/a/b");
    r.scheme = "http";
    r.port = 80;
    check_location("/redir/", &r, "https", "a:8443", "/redir/", "http://x.example/new/");
    r.port = 443;
    check_location("/redir/", &r, "https", "a:8443", "/redir/", "http://x.example:443/new/");
}

static void
test_location_scheme_only(void **state)
{
    /* a scheme without a port: the scheme's well-known port, not the request's */
    rm_config_redirect_t r = {.scheme = "https"};
    check_location("/redir2/", &r, "http", "app.test:8080", "/redir2/x?y=2", "https://app.test/redir2/x?y=2");
    check_location("/redir2/", &r, "http", "app.test", "/redir2/x", "https://app.test/redir2/x");
    check_location("/redir2/", &r, "http", "[::1]:8080", "/redir2/x", "https://[::1]/redir2/x");
    r.scheme = "http";
    check_location("/redir2/", &r, "https", "app.test:8443", "/redir2/x", "http://app.test/redir2/x");
}

static void
test_location_no_scheme(void **state)
{
    /* no scheme: the request's scheme and the port it used */
    rm_config_redirect_t r = {.hostname = "other.example", .path_type = RM_PATH_REWRITE_FULL, .path = "/full"};
    check_location("/redir3/", &r, "http", "127.0.0.1:8080", "/redir3/deep/er", "http://other.example:8080/full");
    check_location("/redir3/", &r, "http", "127.0.0.1:8080", "/redir3/deep/er?k=v", "http://other.example:8080/full?k=v");
    check_location("/redir3/", &r, "http", "127.0.0.1", "/redir3/x", "http://other.example/full");
    check_location("/redir3/", &r, "https", "a.test:443", "/redir3/x", "https://other.example/full");
    check_location("/redir3/", &r, "http", "a.test:80", "/redir3/x", "http://other.example/full");
    /* the request's host, IPv6 literals stay bracketed */
    rm_config_redirect_t same = {.port = 9000};
    check_location(NULL, &same, "http", "[2001:db8::1]:8080", "/p?q", "http://[2001:db8::1]:9000/p?q");
    check_location(NULL, &same, "http", "[2001:db8::1]", "/p", "http://[2001:db8::1]:9000/p");
    rm_config_redirect_t keep = {0};
    check_location(NULL, &keep, "http", "[2001:db8::1]:8080", "/p", "http://[2001:db8::1]:8080/p");
    check_location(NULL, &keep, "https", "h.test", "/p", "https://h.test/p");
    /* a port that is not one is dropped */
    check_location(NULL, &keep, "http", "h.test:99999", "/p", "http://h.test/p");
    check_location(NULL, &keep, "http", "h.test:", "/p", "http://h.test/p");
    /* no authority and no hostname: a relative reference */
    check_location(NULL, &keep, "http", "", "/p?q", "/p?q");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replace_prefix_gateway_table),
        cmocka_unit_test(test_replace_prefix_more),
        cmocka_unit_test(test_replace_full),
        cmocka_unit_test(test_location_scheme_host_port),
        cmocka_unit_test(test_location_scheme_only),
        cmocka_unit_test(test_location_no_scheme),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
