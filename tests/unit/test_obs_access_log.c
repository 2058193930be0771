/* The access log writer: lines from several worker threads arrive whole and counted; a full buffer drops and
 * counts without blocking; the ring set can be replaced while workers write; reopen follows a rename. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "obs/access_log.h"

#define WORKERS 4

static char dir[] = "/tmp/remora-access-log-XXXXXX";

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t
count_file_lines(const char *path, size_t *bad)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return 0;
    char line[512];
    size_t n = 0;
    while (fgets(line, sizeof(line), fp) != NULL) {
        ++n;
        /* every line whole: "{w:N,i:N}" then the newline */
        if (line[0] != '{' || strstr(line, "}\n") == NULL)
            ++*bad;
    }
    fclose(fp);
    return n;
}

static void
wait_idle(uint64_t total)
{
    uint64_t deadline = now_ms() + 5000;
    while (rm_access_log_written() + rm_access_log_dropped() < total && now_ms() < deadline)
        usleep(1000);
}

typedef struct st_worker_arg_t {
    unsigned id;
    size_t lines, ok;
    int *stop; /* read with __atomic_load_n: the main thread sets it while the writers run */
} worker_arg_t;

static void *
worker_main(void *p)
{
    worker_arg_t *a = p;
    char line[128];
    /* relaxed: the flag orders nothing; lines and ok are read after pthread_join */
    for (size_t i = 0; a->stop != NULL ? !__atomic_load_n(a->stop, __ATOMIC_RELAXED) : i != a->lines; ++i) {
        int len = snprintf(line, sizeof(line), "{\"w\":%u,\"i\":%zu,\"pad\":\"%040d\"}\n", a->id, i, 0);
        if (rm_access_log_write(a->id, line, (size_t)len) == 0)
            ++a->ok;
        if (a->stop != NULL)
            a->lines = i + 1;
    }
    return NULL;
}

static void
test_lines_from_every_worker_arrive_whole(void **state)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/all.log", dir);
    uint64_t w0 = rm_access_log_written(), d0 = rm_access_log_dropped();
    rm_access_log_configure(1, path, 4 * 1024 * 1024);
    pthread_t th[WORKERS];
    worker_arg_t args[WORKERS];
    for (unsigned i = 0; i != WORKERS; ++i) {
        args[i] = (worker_arg_t){.id = i, .lines = 5000};
        pthread_create(&th[i], NULL, worker_main, &args[i]);
    }
    for (unsigned i = 0; i != WORKERS; ++i)
        pthread_join(th[i], NULL);
    wait_idle(w0 + d0 + WORKERS * 5000);
    size_t ok = 0;
    for (unsigned i = 0; i != WORKERS; ++i)
        ok += args[i].ok;
    assert_int_equal(ok, WORKERS * 5000); /* 4 MiB hold them all */
    assert_int_equal(rm_access_log_written() - w0, WORKERS * 5000);
    assert_int_equal(rm_access_log_dropped() - d0, 0);
    size_t bad = 0;
    assert_int_equal(count_file_lines(path, &bad), WORKERS * 5000);
    assert_int_equal(bad, 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
}

static void
test_full_buffer_drops_without_blocking(void **state)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/stuck.fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    int reader = open(path, O_RDONLY | O_NONBLOCK); /* opened, never read: the pipe fills up */
    assert_true(reader >= 0);
    uint64_t w0 = rm_access_log_written(), d0 = rm_access_log_dropped();
    rm_access_log_configure(1, path, WORKERS * 4096);
    usleep(50000); /* let the writer open the FIFO */
    worker_arg_t a = {.id = 1, .lines = 20000};
    uint64_t t0 = now_ms();
    worker_main(&a);
    assert_true(now_ms() - t0 < 2000); /* 20000 lines, never waiting for the reader */
    assert_true(a.ok < a.lines);
    /* what was accepted is written once the reader reads; the rest was dropped and counted */
    char buf[65536];
    uint64_t deadline = now_ms() + 5000;
    size_t got = 0;
    while (rm_access_log_written() - w0 < a.ok && now_ms() < deadline) {
        ssize_t r = read(reader, buf, sizeof(buf));
        for (ssize_t i = 0; i < r; ++i)
            got += buf[i] == '\n';
        if (r <= 0)
            usleep(1000);
    }
    for (ssize_t r; (r = read(reader, buf, sizeof(buf))) > 0;)
        for (ssize_t i = 0; i < r; ++i)
            got += buf[i] == '\n';
    assert_int_equal(rm_access_log_written() - w0, a.ok);
    assert_int_equal(rm_access_log_dropped() - d0, a.lines - a.ok);
    assert_int_equal(got, a.ok);
    close(reader);
}

static void
test_resize_while_writing(void **state)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/resize.log", dir);
    uint64_t w0 = rm_access_log_written(), d0 = rm_access_log_dropped();
    rm_access_log_configure(1, path, WORKERS * 8192);
    int stop = 0;
    pthread_t th[WORKERS];
    worker_arg_t args[WORKERS];
    for (unsigned i = 0; i != WORKERS; ++i) {
        args[i] = (worker_arg_t){.id = i, .stop = &stop};
        pthread_create(&th[i], NULL, worker_main, &args[i]);
    }
    for (unsigned k = 0; k != 40; ++k) {
        usleep(2000);
        rm_access_log_configure(k % 5 != 4, path, WORKERS * (8192 << (k % 3))); /* also off now and then */
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    size_t lines = 0;
    for (unsigned i = 0; i != WORKERS; ++i) {
        pthread_join(th[i], NULL);
        lines += args[i].lines;
    }
    wait_idle(w0 + d0 + lines);
    /* every line is either written (whole) or dropped */
    assert_int_equal(rm_access_log_written() - w0 + rm_access_log_dropped() - d0, lines);
    size_t bad = 0;
    assert_int_equal(count_file_lines(path, &bad), rm_access_log_written() - w0);
    assert_int_equal(bad, 0);
}

static void
test_reopen_after_rename(void **state)
{
    char path[256], moved[300];
    snprintf(path, sizeof(path), "%s/rot.log", dir);
    snprintf(moved, sizeof(moved), "%s.1", path);
    uint64_t w0 = rm_access_log_written();
    rm_access_log_configure(1, path, 65536);
    assert_int_equal(rm_access_log_write(0, "{\"a\":1}\n", 8), 0);
    wait_idle(rm_access_log_dropped() + w0 + 1);
    assert_int_equal(rename(path, moved), 0);
    rm_access_log_reopen();
    uint64_t deadline = now_ms() + 2000;
    while (access(path, F_OK) != 0 && now_ms() < deadline)
        usleep(1000);
    assert_int_equal(rm_access_log_write(0, "{\"b\":2}\n", 8), 0);
    wait_idle(rm_access_log_dropped() + w0 + 2);
    size_t bad = 0;
    assert_int_equal(count_file_lines(moved, &bad), 1);
    assert_int_equal(count_file_lines(path, &bad), 1);
    assert_int_equal(bad, 0);
    rm_access_log_stop();
}

static void
test_prometheus(void **state)
{
    char *text = rm_access_log_render_prometheus();
    assert_non_null(strstr(text, "# TYPE remora_access_log_lines_total counter\n"));
    assert_non_null(strstr(text, "remora_access_log_lines_total{result=\"written\"} "));
    assert_non_null(strstr(text, "remora_access_log_lines_total{result=\"dropped\"} "));
    free(text);
}

int
main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    rm_access_log_init(WORKERS);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_from_every_worker_arrive_whole),
        cmocka_unit_test(test_full_buffer_drops_without_blocking),
        cmocka_unit_test(test_resize_while_writing),
        cmocka_unit_test(test_reopen_after_rename),
        cmocka_unit_test(test_prometheus),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        r = r != 0 ? r : 1;
    return r;
}
