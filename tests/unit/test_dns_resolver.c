/*
 * Resolver tests against tests/tools/dns_responder.py, started on a free loopback port: the system
 * resolver is never used (every resolver here is given explicit loopback servers).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include "remora/strutil.h"
#include "net/resolver.h"

#ifndef RM_SOURCE_DIR
#error "RM_SOURCE_DIR must be defined (see tests/CMakeLists.txt)"
#endif

#define PYTHON "/usr/bin/python3"
#define RESPONDER RM_SOURCE_DIR "/tests/tools/dns_responder.py"
#define MAX_ADDRS 64

extern char **environ;

static pid_t responder_pid = -1;
static char tmpdir[64];
static char records_path[128];
static char server_v4[64], server_v6[64];

/* set around every rm_resolver_resolve call: a callback that sees it set was invoked synchronously */
static int in_resolve_call;
/* incremented by every callback, to check the order of delivery */
static int callback_seq;

typedef struct st_capture_t {
    int called;
    int called_synchronously;
    int status;
    int error_set;
    size_t num_addrs;
    struct sockaddr_storage addrs[MAX_ADDRS];
    uint32_t ttl_s;
    uint64_t at_ms;
    int seq;
    /* optional actions run from inside the callback */
    rm_resolver_query_t *cancel_other;
    rm_resolver_t *destroy;
    rm_resolver_t *resolve_again_with;
    struct st_capture_t *resolve_again_capture;
} capture_t;

typedef struct st_fixture_t {
    uv_loop_t loop;
    rm_resolver_t *resolver;
} fixture_t;

static rm_resolver_query_t *resolve(rm_resolver_t *r, const char *host, uint16_t port, capture_t *c);

static void
on_resolved(const rm_resolver_result_t *result, void *data)
{
    capture_t *c = data;
    ++c->called;
    c->called_synchronously |= in_resolve_call;
    c->status = result->status;
    c->error_set = result->error != NULL;
    c->num_addrs = result->num_addrs < MAX_ADDRS ? result->num_addrs : MAX_ADDRS;
    if (result->num_addrs != 0)
        memcpy(c->addrs, result->addrs, c->num_addrs * sizeof(c->addrs[0]));
    c->ttl_s = result->ttl_s;
    c->at_ms = rm_now_ms();
    c->seq = ++callback_seq;
    if (c->cancel_other != NULL)
        rm_resolver_cancel(c->cancel_other);
    if (c->resolve_again_with != NULL)
        resolve(c->resolve_again_with, "svc.test", 443, c->resolve_again_capture);
    if (c->destroy != NULL)
        rm_resolver_destroy(c->destroy);
}

static rm_resolver_query_t *
resolve(rm_resolver_t *r, const char *host, uint16_t port, capture_t *c)
{
    in_resolve_call = 1;
    rm_resolver_query_t *q = rm_resolver_resolve(r, host, port, on_resolved, c);
    in_resolve_call = 0;
    return q;
}

static int
has_addr(const capture_t *c, const char *expected)
{
    char buf[128];
    for (size_t i = 0; i < c->num_addrs; ++i)
        if (strcmp(rm_format_sockaddr((const struct sockaddr *)&c->addrs[i], buf, sizeof(buf)), expected) == 0)
            return 1;
    return 0;
}

static void
on_guard(uv_timer_t *timer)
{
}

/* Runs the loop until *flag becomes non-zero or timeout_ms elapse; returns *flag. */
static int
run_until(uv_loop_t *loop, const int *flag, uint64_t timeout_ms)
{
    uint64_t deadline = rm_now_ms() + timeout_ms;
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, on_guard, timeout_ms, 0);
    while (!*flag && rm_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

/* Runs the loop until it has nothing left to do, at most timeout_ms; returns the time it took. */
static uint64_t
run_to_completion(uv_loop_t *loop, uint64_t timeout_ms)
{
    uint64_t start = rm_now_ms(), deadline = start + timeout_ms;
    while (uv_run(loop, UV_RUN_NOWAIT) != 0 && rm_now_ms() < deadline)
        usleep(1000);
    return rm_now_ms() - start;
}

static void
write_records(const char *json)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", records_path);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fputs(json, fp);
    fclose(fp);
    /* rename: the responder sees a new inode even within one mtime tick */
    assert_int_equal(rename(tmp, records_path), 0);
}

/* A UDP socket on loopback that never reads: queries sent to it are never answered. */
static int
open_black_hole(char *server, size_t serverlen)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    snprintf(server, serverlen, "127.0.0.1:%u", ntohs(sin.sin_port));
    return fd;
}

static int
group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rm-dns-test-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(records_path, sizeof(records_path), "%s/records.json", tmpdir);
    write_records("{\"dyn.test\": {\"addrs\": [\"10.2.0.1\"], \"ttl\": 1}}");

    /* 40 addresses do not fit in a 512-byte UDP answer: the client must retry over TCP */
    char big[1024] = "big.test=";
    for (int i = 1; i <= 40; ++i)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s10.3.0.%d", i == 1 ? "" : ",", i);
    strcat(big, ";60");

    char *const argv[] = {PYTHON,
                          RESPONDER,
                          "--listen",
                          "127.0.0.1:0",
                          "--listen",
                          "[::1]:0",
                          "--records-file",
                          records_path,
                          "--record",
                          "svc.test=10.1.2.3,10.1.2.4,fd00::1;42",
                          "--record",
                          "v4only.test=10.0.0.7;300",
                          "--record",
                          "v6only.test=fd00::7",
                          "--record",
                          "alias.test=cname:svc.test;7",
                          "--record",
                          "empty.test=;60",
                          "--record",
                          "refused.test=rcode:REFUSED",
                          "--record",
                          "servfail.test=rcode:SERVFAIL",
                          "--record",
                          "drop.test=drop",
                          "--record",
                          "slow.test=10.0.0.9;delay_ms=300",
                          "--record",
                          big,
                          NULL};
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    posix_spawn_file_actions_addclose(&fa, pipefd[1]);
    int ret = posix_spawn(&responder_pid, PYTHON, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (ret != 0) {
        fprintf(stderr, "posix_spawn %s: %s\n", PYTHON, strerror(ret));
        responder_pid = -1;
        close(pipefd[0]);
        return -1;
    }

    /* the responder prints its port once its sockets are bound */
    char line[32];
    size_t len = 0;
    uint64_t deadline = rm_now_ms() + 15000;
    while (len < sizeof(line) - 1 && memchr(line, '\n', len) == NULL && rm_now_ms() < deadline) {
        struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = read(pipefd[0], line + len, sizeof(line) - 1 - len);
        if (n <= 0)
            break;
        len += n;
    }
    close(pipefd[0]);
    line[len] = '\0';
    unsigned port = (unsigned)atoi(line);
    if (port == 0 || port > 65535) {
        fprintf(stderr, "dns_responder did not report its port (got \"%s\")\n", line);
        return -1;
    }
    snprintf(server_v4, sizeof(server_v4), "127.0.0.1:%u", port);
    snprintf(server_v6, sizeof(server_v6), "[::1]:%u", port);
    return 0;
}

static int
group_teardown(void **state)
{
    if (responder_pid > 0) {
        kill(responder_pid, SIGTERM);
        int status;
        uint64_t deadline = rm_now_ms() + 5000;
        while (waitpid(responder_pid, &status, WNOHANG) == 0) {
            if (rm_now_ms() > deadline) {
                kill(responder_pid, SIGKILL);
                waitpid(responder_pid, &status, 0);
                break;
            }
            usleep(10000);
        }
        responder_pid = -1;
    }
    unlink(records_path);
    rmdir(tmpdir);
    return 0;
}

static rm_resolver_t *
create_resolver(uv_loop_t *loop, const char *server, uint32_t timeout_ms, uint32_t tries)
{
    char err[256] = "";
    const char *servers[] = {server};
    rm_resolver_options_t opts = {.servers = servers, .num_servers = 1, .timeout_ms = timeout_ms, .tries = tries};
    rm_resolver_t *r = rm_resolver_create_with_options(loop, &opts, err, sizeof(err));
    if (r == NULL)
        fail_msg("rm_resolver_create: %s", err);
    return r;
}

static int
setup(void **state)
{
    fixture_t *f = rm_calloc(1, sizeof(*f));
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    f->resolver = create_resolver(&f->loop, server_v4, 500, 2);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture_t *f = *state;
    if (f->resolver != NULL)
        rm_resolver_destroy(f->resolver);
    run_to_completion(&f->loop, 5000);
    int ret = uv_loop_close(&f->loop);
    free(f);
    assert_int_equal(ret, 0);
    return 0;
}

static void
test_resolve_v4_and_v6(void **state)
{
    fixture_t *f = *state;
    capture_t c = {0};
    resolve(f->resolver, "svc.test", 8080, &c);
    assert_int_equal(c.called, 0);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_false(c.called_synchronously);
    assert_int_equal(c.status, RM_RESOLVER_OK);
    assert_false(c.error_set);
    assert_int_equal(c.num_addrs, 3);
    assert_true(has_addr(&c, "10.1.2.3:8080"));
    assert_true(has_addr(&c, "10.1.2.4:8080"));
    assert_true(has_addr(&c, "[fd00::1]:8080"));
    assert_int_equal(c.ttl_s, 42);
}

static void
test_resolve_single_family(void **state)
{
    fixture_t *f = *state;
    capture_t c4 = {0}, c6 = {0};
    resolve(f->resolver, "v4only.test", 80, &c4);
    resolve(f->resolver, "V6ONLY.test.", 81, &c6);
    assert_true(run_until(&f->loop, &c4.called, 5000));
    assert_true(run_until(&f->loop, &c6.called, 5000));
    assert_int_equal(c4.status, RM_RESOLVER_OK);
    assert_int_equal(c4.num_addrs, 1);
    assert_true(has_addr(&c4, "10.0.0.7:80"));
    assert_int_equal(c4.ttl_s, 300);
    assert_int_equal(c6.status, RM_RESOLVER_OK);
    assert_int_equal(c6.num_addrs, 1);
    assert_true(has_addr(&c6, "[fd00::7]:81"));
    assert_int_equal(c6.ttl_s, 30);
}

static void
test_cname_ttl_is_minimum(void **state)
{
    fixture_t *f = *state;
    capture_t c = {0};
    resolve(f->resolver, "alias.test", 9000, &c);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_int_equal(c.status, RM_RESOLVER_OK);
    assert_int_equal(c.num_addrs, 3);
    assert_true(has_addr(&c, "10.1.2.3:9000"));
    assert_int_equal(c.ttl_s, 7);
}

static void
test_tcp_fallback(void **state)
{
    fixture_t *f = *state;
    capture_t c = {0};
    resolve(f->resolver, "big.test", 1, &c);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_int_equal(c.status, RM_RESOLVER_OK);
    assert_int_equal(c.num_addrs, 40);
    assert_true(has_addr(&c, "10.3.0.1:1"));
    assert_true(has_addr(&c, "10.3.0.40:1"));
    assert_int_equal(c.ttl_s, 60);
}

static void
test_ipv6_server(void **state)
{
    fixture_t *f = *state;
    rm_resolver_destroy(f->resolver);
    f->resolver = create_resolver(&f->loop, server_v6, 500, 2);
    capture_t c = {0};
    resolve(f->resolver, "svc.test", 53, &c);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_int_equal(c.status, RM_RESOLVER_OK);
    assert_int_equal(c.num_addrs, 3);
}

static void
test_errors(void **state)
{
    fixture_t *f = *state;
    static const struct {
        const char *name;
        int status;
    } cases[] = {
        {"nx.test", RM_RESOLVER_ENOTFOUND},
        {"empty.test", RM_RESOLVER_ENODATA},
        {"refused.test", RM_RESOLVER_EREFUSED},
        {"servfail.test", RM_RESOLVER_ESERVFAIL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        capture_t c = {0};
        resolve(f->resolver, cases[i].name, 80, &c);
        assert_true(run_until(&f->loop, &c.called, 5000));
        if (c.status != cases[i].status)
            fail_msg("%s: status %d (%s), expected %d", cases[i].name, c.status, rm_resolver_strerror(c.status), cases[i].status);
        assert_true(c.error_set);
        assert_int_equal(c.num_addrs, 0);
        assert_int_equal(c.called, 1);
    }
}

static void
test_timeout_is_bounded(void **state)
{
    fixture_t *f = *state;
    char server[64];
    int fd = open_black_hole(server, sizeof(server));
    rm_resolver_destroy(f->resolver);
    /* 100 ms, then 200 ms: about 300 ms in all */
    f->resolver = create_resolver(&f->loop, server, 100, 2);

    capture_t c = {0}, literal = {0};
    uint64_t start = rm_now_ms();
    resolve(f->resolver, "svc.test", 80, &c);
    /* literals never wait for a server */
    resolve(f->resolver, "10.0.0.1", 80, &literal);
    assert_true(run_until(&f->loop, &literal.called, 5000));
    assert_int_equal(literal.status, RM_RESOLVER_OK);
    assert_true(literal.at_ms - start < 200);
    assert_int_equal(c.called, 0);
    assert_true(run_until(&f->loop, &c.called, 5000));
    uint64_t elapsed = c.at_ms - start;
    close(fd);
    assert_int_equal(c.status, RM_RESOLVER_ETIMEOUT);
    assert_true(c.error_set);
    assert_true(elapsed >= 250);
    assert_true(elapsed < 2000);
}

static void
test_unreachable_server(void **state)
{
    fixture_t *f = *state;
    char server[64];
    /* a port that was free a moment ago: nothing listens, the kernel answers with port unreachable */
    close(open_black_hole(server, sizeof(server)));
    rm_resolver_destroy(f->resolver);
    f->resolver = create_resolver(&f->loop, server, 100, 2);

    capture_t c = {0};
    resolve(f->resolver, "svc.test", 80, &c);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_true(c.status == RM_RESOLVER_ECONNREFUSED || c.status == RM_RESOLVER_ETIMEOUT);
}

static void
test_ip_literals_are_asynchronous(void **state)
{
    fixture_t *f = *state;
    capture_t c4 = {0}, c6 = {0};
    resolve(f->resolver, "127.0.0.1", 15001, &c4);
    resolve(f->resolver, "::1", 15002, &c6);
    assert_int_equal(c4.called + c6.called, 0);
    assert_true(run_until(&f->loop, &c6.called, 5000));
    assert_int_equal(c4.called, 1);
    assert_false(c4.called_synchronously || c6.called_synchronously);
    assert_int_equal(c4.status, RM_RESOLVER_OK);
    assert_int_equal(c4.num_addrs, 1);
    assert_true(has_addr(&c4, "127.0.0.1:15001"));
    assert_int_equal(c6.status, RM_RESOLVER_OK);
    assert_int_equal(c6.num_addrs, 1);
    assert_true(has_addr(&c6, "[::1]:15002"));
}

static void
test_localhost_from_hosts_file(void **state)
{
    fixture_t *f = *state;
    capture_t c = {0};
    /* the responder has no "localhost": an answer can only come from /etc/hosts */
    resolve(f->resolver, "localhost", 8000, &c);
    assert_int_equal(c.called, 0);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_false(c.called_synchronously);
    assert_int_equal(c.status, RM_RESOLVER_OK);
    assert_true(has_addr(&c, "127.0.0.1:8000") || has_addr(&c, "[::1]:8000"));
}

static void
test_bad_name(void **state)
{
    fixture_t *f = *state;
    capture_t c = {0};
    char longlabel[100];
    memset(longlabel, 'a', 70);
    strcpy(longlabel + 70, ".test");
    resolve(f->resolver, longlabel, 80, &c);
    assert_true(run_until(&f->loop, &c.called, 5000));
    assert_true(c.status < 0);
    assert_true(c.error_set);
}

static void
test_cancel_in_flight(void **state)
{
    fixture_t *f = *state;
    capture_t cancelled = {0}, kept = {0};
    rm_resolver_query_t *q = resolve(f->resolver, "slow.test", 80, &cancelled);
    resolve(f->resolver, "slow.test", 80, &kept);
    rm_resolver_cancel(q);
    assert_true(run_until(&f->loop, &kept.called, 5000));
    assert_int_equal(kept.status, RM_RESOLVER_OK);
    run_to_completion(&f->loop, 2000);
    assert_int_equal(cancelled.called, 0);
}

static void
test_cancel_releases_the_loop(void **state)
{
    fixture_t *f = *state;
    rm_resolver_destroy(f->resolver);
    /* default timeouts: if the abandoned request stayed, the loop would live for seconds */
    f->resolver = create_resolver(&f->loop, server_v4, 0, 0);
    capture_t c = {0};
    rm_resolver_query_t *q = resolve(f->resolver, "drop.test", 80, &c);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    rm_resolver_cancel(q);
    uint64_t elapsed = run_to_completion(&f->loop, 5000);
    assert_true(elapsed < 1000);
    assert_int_equal(c.called, 0);
}

static void
test_cancel_answered(void **state)
{
    fixture_t *f = *state;
    capture_t c[5] = {{0}};
    /* IP literals are answered inside rm_resolver_resolve, and wait for delivery */
    rm_resolver_query_t *first = resolve(f->resolver, "10.0.0.1", 80, &c[0]);
    resolve(f->resolver, "10.0.0.2", 80, &c[1]);
    rm_resolver_query_t *last = resolve(f->resolver, "10.0.0.3", 80, &c[2]);
    rm_resolver_cancel(first);
    rm_resolver_cancel(last);
    resolve(f->resolver, "10.0.0.4", 80, &c[3]);
    resolve(f->resolver, "10.0.0.5", 80, &c[4]);
    assert_true(run_until(&f->loop, &c[4].called, 5000));
    run_to_completion(&f->loop, 2000);
    assert_int_equal(c[0].called, 0);
    assert_int_equal(c[2].called, 0);
    assert_int_equal(c[1].called + c[3].called + c[4].called, 3);
    /* the others arrive in order */
    assert_true(c[1].seq < c[3].seq && c[3].seq < c[4].seq);
    assert_true(has_addr(&c[3], "10.0.0.4:80"));
}

static void
test_cancel_from_callback(void **state)
{
    fixture_t *f = *state;
    capture_t first = {0}, second = {0};
    resolve(f->resolver, "10.0.0.1", 80, &first);
    first.cancel_other = resolve(f->resolver, "10.0.0.2", 80, &second);
    run_to_completion(&f->loop, 2000);
    assert_int_equal(first.called, 1);
    assert_int_equal(second.called, 0);
}

static void
test_resolve_from_callback(void **state)
{
    fixture_t *f = *state;
    capture_t first = {0}, second = {0};
    first.resolve_again_with = f->resolver;
    first.resolve_again_capture = &second;
    resolve(f->resolver, "127.0.0.1", 80, &first);
    assert_true(run_until(&f->loop, &second.called, 5000));
    assert_int_equal(second.status, RM_RESOLVER_OK);
    assert_true(has_addr(&second, "10.1.2.3:443"));
}

static void
test_destroy_in_flight(void **state)
{
    fixture_t *f = *state;
    capture_t c[4] = {{0}};
    resolve(f->resolver, "drop.test", 80, &c[0]);
    resolve(f->resolver, "slow.test", 80, &c[1]);
    resolve(f->resolver, "svc.test", 80, &c[2]);
    /* let the requests leave, then add an answer waiting for delivery */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    resolve(f->resolver, "127.0.0.1", 80, &c[3]);
    rm_resolver_destroy(f->resolver);
    f->resolver = NULL;
    uint64_t elapsed = run_to_completion(&f->loop, 5000);
    assert_true(elapsed < 1000);
    for (int i = 0; i < 4; ++i)
        assert_int_equal(c[i].called, 0);
    /* teardown checks uv_loop_close */
}

static void
test_destroy_from_callback(void **state)
{
    fixture_t *f = *state;
    capture_t first = {0}, pending = {0}, in_flight = {0};
    resolve(f->resolver, "drop.test", 80, &in_flight);
    resolve(f->resolver, "127.0.0.1", 80, &first);
    resolve(f->resolver, "127.0.0.2", 80, &pending);
    first.destroy = f->resolver;
    f->resolver = NULL;
    uint64_t elapsed = run_to_completion(&f->loop, 5000);
    assert_true(elapsed < 1000);
    assert_int_equal(first.called, 1);
    assert_int_equal(pending.called, 0);
    assert_int_equal(in_flight.called, 0);
}

static void
test_many_concurrent(void **state)
{
    fixture_t *f = *state;
    enum { N = 50 };
    capture_t c[N];
    memset(c, 0, sizeof(c));
    for (int i = 0; i < N; ++i)
        resolve(f->resolver, i % 2 == 0 ? "svc.test" : "v4only.test", (uint16_t)(1000 + i), &c[i]);
    for (int i = 0; i < N; ++i) {
        assert_true(run_until(&f->loop, &c[i].called, 5000));
        assert_int_equal(c[i].status, RM_RESOLVER_OK);
        assert_int_equal(c[i].num_addrs, i % 2 == 0 ? 3 : 1);
    }
}

typedef struct st_refresher_t {
    rm_resolver_t *resolver;
    uv_timer_t timer;
    capture_t answers[2];
    int round;
    int done;
} refresher_t;

static void on_refresh_resolved(const rm_resolver_result_t *result, void *data);

static void
on_refresh_timer(uv_timer_t *timer)
{
    refresher_t *rf = timer->data;
    rm_resolver_resolve(rf->resolver, "dyn.test", 7000, on_refresh_resolved, rf);
}

static void
on_refresh_resolved(const rm_resolver_result_t *result, void *data)
{
    refresher_t *rf = data;
    on_resolved(result, &rf->answers[rf->round]);
    if (++rf->round == 2 || result->status != RM_RESOLVER_OK) {
        rf->done = 1;
        return;
    }
    /* what an upstream cluster does: the records change, and the TTL tells when to look again */
    write_records("{\"dyn.test\": {\"addrs\": [\"10.2.0.2\", \"fd00::2:2\"], \"ttl\": 5}}");
    uv_timer_start(&rf->timer, on_refresh_timer, rm_resolver_refresh_ms(result->ttl_s, 200, 60000), 0);
}

static void
test_reresolve_after_ttl(void **state)
{
    fixture_t *f = *state;
    refresher_t rf = {.resolver = f->resolver};
    uv_timer_init(&f->loop, &rf.timer);
    rf.timer.data = &rf;
    uint64_t start = rm_now_ms();
    rm_resolver_resolve(f->resolver, "dyn.test", 7000, on_refresh_resolved, &rf);
    int done = run_until(&f->loop, &rf.done, 10000);
    uv_close((uv_handle_t *)&rf.timer, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(done);
    assert_int_equal(rf.round, 2);
    assert_int_equal(rf.answers[0].num_addrs, 1);
    assert_true(has_addr(&rf.answers[0], "10.2.0.1:7000"));
    assert_int_equal(rf.answers[0].ttl_s, 1);
    assert_int_equal(rf.answers[1].status, RM_RESOLVER_OK);
    assert_int_equal(rf.answers[1].num_addrs, 2);
    assert_true(has_addr(&rf.answers[1], "10.2.0.2:7000"));
    assert_true(has_addr(&rf.answers[1], "[fd00::2:2]:7000"));
    assert_int_equal(rf.answers[1].ttl_s, 5);
    assert_true(rf.answers[1].at_ms - start >= 1000);
}

static void
test_bad_servers(void **state)
{
    static const char *const bad[] = {"nonsense", "127.0.0.1", "localhost:53", "::1:53", "[::1]:0", "10.0.0.1:70000"};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        char err[256] = "";
        rm_resolver_t *r = rm_resolver_create(&loop, &bad[i], 1, err, sizeof(err));
        if (r != NULL)
            fail_msg("server \"%s\" was accepted", bad[i]);
        assert_true(strlen(err) > 0);
    }
    /* a good list with several servers, v4 and v6 */
    const char *const good[] = {server_v4, server_v6};
    char err[256] = "";
    rm_resolver_t *r = rm_resolver_create(&loop, good, 2, err, sizeof(err));
    assert_non_null(r);
    rm_resolver_destroy(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_refresh_ms(void **state)
{
    assert_int_equal(rm_resolver_refresh_ms(30, 1000, 300000), 30000);
    assert_int_equal(rm_resolver_refresh_ms(0, 1000, 300000), 1000);
    assert_int_equal(rm_resolver_refresh_ms(86400, 1000, 300000), 300000);
    assert_int_equal(rm_resolver_refresh_ms(UINT32_MAX, 1000, UINT32_MAX), UINT32_MAX);
    assert_int_equal(rm_resolver_refresh_ms(5000000, 0, UINT32_MAX), 4294967295u);
    assert_int_equal(rm_resolver_refresh_ms(10, 5000, 2000), 5000);
}

static void
test_strerror(void **state)
{
    assert_string_equal(rm_resolver_strerror(0), "success");
    for (int s = RM_RESOLVER_ENOTFOUND; s >= RM_RESOLVER_EOTHER; --s)
        assert_string_not_equal(rm_resolver_strerror(s), "unknown error");
    assert_string_equal(rm_resolver_strerror(-1000), "unknown error");
}

int
main(void)
{
    /* a dead responder must not kill the test with SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resolve_v4_and_v6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_single_family, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cname_ttl_is_minimum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_literals_are_asynchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_localhost_from_hosts_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_releases_the_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reresolve_after_ttl, setup, teardown),
        cmocka_unit_test(test_bad_servers),
        cmocka_unit_test(test_refresh_ms),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
