/*
 * remoractl await (remoractl_await.h). HTTP through libcurl (linked into the control plane already); the URLs are
 * the agent's loopback health and admin ports.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include "remora/strutil.h"
#include "remoractl_await.h"
#include "remoractl_util.h"

#define DEFAULT_READY_URL "http://127.0.0.1:15020/ready"
#define DEFAULT_SHUTDOWN_URL "http://127.0.0.1:15000/shutdown"
#define DEFAULT_TIMEOUT_MS 120000
#define POLL_INTERVAL_MS 200
#define REQUEST_TIMEOUT_MS 1000
#define SHUTDOWN_TIMEOUT_MS 5000

const char rm_ctl_await_help[] =
    "Usage: remoractl await [--ready-url URL] [--shutdown-url URL] [--timeout D] [-- CMD [ARGS...]]\n"
    "\n"
    "Waits until the pod's agent is ready (the ready URL answers 200), then runs CMD; when CMD ends, asks the\n"
    "agent to exit (POST to the shutdown URL) and exits with CMD's status (128 + N if a signal N ended it), so\n"
    "that a Job's pod completes. SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are passed on to CMD.\n"
    "Without CMD it only waits (a postStart hook that holds the application's start until the agent is ready).\n"
    "`await` must be the first argument of remoractl.\n"
    "\n"
    "  --ready-url URL     polled every 200 ms (default " DEFAULT_READY_URL ")\n"
    "  --shutdown-url URL  POSTed once CMD has ended (default " DEFAULT_SHUTDOWN_URL ")\n"
    "  --timeout D         give up waiting after D: 500ms, 30s, 2m or a number of seconds (default 120s);\n"
    "                      then exit 1 without running CMD\n"
    "\n"
    "Exit codes: CMD's status; 1 the agent was not ready in time; 2 usage error; 127 CMD could not be started.\n";

static volatile sig_atomic_t child_pid;

static void
forward_signal(int sig)
{
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NUM_FORWARDED (sizeof(forwarded) / sizeof(forwarded[0]))

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return size * nmemb;
}

/* One request; the HTTP status, or 0 with the failure in `why`. */
static long
request(const char *url, int post, long timeout_ms, char *why, size_t whylen)
{
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(why, whylen, "libcurl could not start");
        return 0;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*"); /* loopback URLs: never through a proxy from the environment */
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    if (post) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    long status = 0;
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(why, whylen, "%s", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
    curl_easy_cleanup(curl);
    return status;
}

static int
wait_ready(const char *url, long timeout_ms)
{
    long deadline = (long)rm_now_ms() + timeout_ms;
    char last[CURL_ERROR_SIZE + 32] = "no answer yet";
    for (;;) {
        long left = deadline - (long)rm_now_ms();
        char why[CURL_ERROR_SIZE] = "";
        long status = request(url, 0, left < REQUEST_TIMEOUT_MS ? (left > 1 ? left : 1) : REQUEST_TIMEOUT_MS, why, sizeof(why));
        if (status == 200)
            return 0;
        if (status != 0)
            snprintf(last, sizeof(last), "HTTP status %ld", status);
        else
            snprintf(last, sizeof(last), "%s", why);
        left = deadline - (long)rm_now_ms();
        if (left <= 0) {
            fprintf(stderr, "remoractl await: %s did not answer 200 within %ld ms (last: %s)\n", url, timeout_ms, last);
            return -1;
        }
        struct timespec ts = {0, (left < POLL_INTERVAL_MS ? left : POLL_INTERVAL_MS) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Runs argv with the forwarded signals passed on; its exit status as a shell reports it. */
static int
run_command(char **argv)
{
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i != NUM_FORWARDED; ++i)
        sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "remoractl await: fork: %s\n", strerror(errno));
        sigprocmask(SIG_SETMASK, &old, NULL);
        return 127;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[0], argv);
        fprintf(stderr, "remoractl await: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    child_pid = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i != NUM_FORWARDED; ++i)
        sigaction(forwarded[i], &sa, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "remoractl await: waitpid: %s\n", strerror(errno));
            return 127;
        }
    }
    child_pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int
rm_ctl_await(int argc, char **argv)
{
    static const struct option opts[] = {{"ready-url", required_argument, NULL, 'r'},
                                         {"shutdown-url", required_argument, NULL, 's'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *ready_url = DEFAULT_READY_URL, *shutdown_url = DEFAULT_SHUTDOWN_URL;
    long timeout_ms = DEFAULT_TIMEOUT_MS;
    int c;
    optind = 0;
    /* "+": stop at the command, whose own options are its business */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            ready_url = optarg;
            break;
        case 's':
            shutdown_url = optarg;
            break;
        case 't':
            if ((timeout_ms = rm_ctl_parse_duration_ms(optarg)) < 0) {
                fprintf(stderr, "remoractl await: --timeout '%s': use 500ms, 30s, 2m, 1h or a number of seconds (at most 24h)\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            fputs(rm_ctl_await_help, stdout);
            return 0;
        default:
            fputs(rm_ctl_await_help, stderr);
            return 2;
        }
    }
    char **cmd = optind < argc ? argv + optind : NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (wait_ready(ready_url, timeout_ms) != 0) {
        curl_global_cleanup();
        return 1;
    }
    if (cmd == NULL) {
        curl_global_cleanup();
        return 0;
    }
    int rc = run_command(cmd);
    char why[CURL_ERROR_SIZE] = "";
    long status = request(shutdown_url, 1, SHUTDOWN_TIMEOUT_MS, why, sizeof(why));
    if (status == 0)
        fprintf(stderr, "remoractl await: POST %s: %s\n", shutdown_url, why);
    else if (status < 200 || status > 299)
        fprintf(stderr, "remoractl await: POST %s: HTTP status %ld\n", shutdown_url, status);
    curl_global_cleanup();
    return rc;
}
