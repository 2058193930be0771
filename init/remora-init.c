/*
 * remora-init: the init-container step. Reads what the nat table holds of ours (`*-save -t nat`),
 * renders one batch per address family (rules.c) and feeds it to `iptables-restore --noflush` /
 * `ip6tables-restore --noflush` of the chosen backend on stdin, so that each family changes in
 * one atomic commit. Tools are run with fork/exec, never through a shell, each bounded in time.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "remora/strutil.h"
#include "cmdline.h"
#include "rules.h"

#define TOOL_TIMEOUT_MS 30000
#define EXIT_FAILED 1
#define EXIT_USAGE 2 /* also: CAP_NET_ADMIN missing */

/* Says which capability is missing; the legacy tools also open a raw socket to reach the kernel. */
static void
print_cap_message(int legacy, int have_raw)
{
    if (legacy && have_raw < 0) {
        fputs("remora-init: CAP_NET_ADMIN and CAP_NET_RAW (the legacy backend talks to the kernel over a raw socket) "
              "are required to change netfilter rules: run it as root or give the init container the NET_ADMIN and "
              "NET_RAW capabilities (--dry-run needs none)\n",
              stderr);
    } else if (legacy && !have_raw) {
        fputs("remora-init: CAP_NET_RAW is required by the legacy backend (it talks to the kernel over a raw socket) "
              "besides CAP_NET_ADMIN: give the init container the NET_RAW capability, or use --backend nft\n",
              stderr);
    } else {
        fputs("remora-init: CAP_NET_ADMIN is required to change netfilter rules: run it as root or give the init "
              "container the NET_ADMIN capability (--dry-run needs none)\n",
              stderr);
    }
}

typedef struct st_family_t {
    unsigned family;
    const char *label;  /* "IPv4" */
    char restore[64];   /* "iptables-nft-restore" */
    char save[64];      /* "iptables-nft-save" */
    char *restore_path; /* NULL if not found */
    char *save_path;
    rm_init_state_t state;
    char *batch;
    int legacy;
} family_t;

/* Finds an executable in PATH, then in the sbin directories (often missing from a non-login PATH). */
static char *
find_tool(const char *name)
{
    const char *path = getenv("PATH");
    char *dirs, *save = NULL;
    size_t need = (path != NULL ? strlen(path) : 0) + 64;

    dirs = rm_malloc(need);
    snprintf(dirs, need, "%s%s/usr/sbin:/sbin:/usr/bin:/bin", path != NULL ? path : "", path != NULL && *path ? ":" : "");
    for (char *d = strtok_r(dirs, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
        size_t len = strlen(d) + strlen(name) + 2;
        char *full = rm_malloc(len);
        snprintf(full, len, "%s/%s", d, name);
        if (*d == '/' && access(full, X_OK) == 0) {
            free(dirs);
            return full;
        }
        free(full);
    }
    free(dirs);
    return NULL;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = rm_realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/*
 * Runs `argv` (argv[0] a full path) with `input` on its stdin, collecting stdout and stderr
 * (NUL-terminated, caller frees). Returns the exit status, 128+N for a signal, or -1 if it could
 * not be started or ran past the timeout (then killed).
 */
static int
run_tool(char *const argv[], const char *input, char **out, char **errout)
{
    int in[2], o[2], e[2];
    size_t outlen = 0, errlen = 0, inlen = input != NULL ? strlen(input) : 0, inoff = 0;
    pid_t pid;
    int status, timed_out = 0;

    *out = rm_strdup("");
    *errout = rm_strdup("");
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(o, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    if (pipe2(e, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        close(o[0]);
        close(o[1]);
        return -1;
    }
    if ((pid = fork()) == -1) {
        close(in[0]), close(in[1]), close(o[0]), close(o[1]), close(e[0]), close(e[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(o[1], 1);
        dup2(e[1], 2);
        execv(argv[0], argv);
        dprintf(2, "cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(o[1]);
    close(e[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    if (inlen == 0) {
        close(in[1]);
        in[1] = -1;
    }

    int64_t deadline = now_ms() + TOOL_TIMEOUT_MS;
    while (o[0] != -1 || e[0] != -1) {
        struct pollfd pfd[3] = {{.fd = o[0], .events = POLLIN}, {.fd = e[0], .events = POLLIN}, {.fd = in[1], .events = POLLOUT}};
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(pfd, 3, (int)left) < 0) {
            if (errno == EINTR)
                continue;
            kill(pid, SIGKILL);
            timed_out = 1;
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (pfd[i].fd == -1 || (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
                continue;
            char buf[4096];
            ssize_t n = read(pfd[i].fd, buf, sizeof(buf));
            if (n > 0) {
                if (i == 0)
                    append(out, &outlen, buf, (size_t)n);
                else
                    append(errout, &errlen, buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(pfd[i].fd);
                if (i == 0)
                    o[0] = -1;
                else
                    e[0] = -1;
            }
        }
        if (in[1] != -1 && (pfd[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            ssize_t n = write(in[1], input + inoff, inlen - inoff);
            if (n > 0)
                inoff += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || inoff == inlen) {
                close(in[1]);
                in[1] = -1;
            }
        }
    }
    if (in[1] != -1)
        close(in[1]);
    if (o[0] != -1)
        close(o[0]);
    if (e[0] != -1)
        close(e[0]);
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
        ;
    if (timed_out)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* Is `cap` in our effective set? */
static int
has_cap(int cap)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) != 0)
        return 0;
    return (data[CAP_TO_INDEX(cap)].effective & CAP_TO_MASK(cap)) != 0;
}

static int
looks_like_permission_error(const char *msg)
{
    return strstr(msg, "Permission denied") != NULL || strstr(msg, "Operation not permitted") != NULL ||
           strstr(msg, "you must be root") != NULL;
}

/* "nft" or "legacy" from what the system's `iptables` reports, as iptables-wrapper scripts do. */
static rm_init_backend_t
detect_backend(void)
{
    char *iptables = find_tool("iptables"), *out, *err;
    rm_init_backend_t backend = RM_INIT_BACKEND_AUTO;

    if (iptables != NULL) {
        char *argv[] = {iptables, "--version", NULL};
        if (run_tool(argv, NULL, &out, &err) == 0) {
            if (strstr(out, "nf_tables") != NULL)
                backend = RM_INIT_BACKEND_NFT;
            else if (strstr(out, "legacy") != NULL)
                backend = RM_INIT_BACKEND_LEGACY;
        }
        free(out);
        free(err);
        free(iptables);
    }
    if (backend == RM_INIT_BACKEND_AUTO) {
        /* no `iptables`, or one that does not say: nf_tables is the default of current distributions */
        char *nft = find_tool("iptables-nft-restore"), *legacy = find_tool("iptables-legacy-restore");
        backend = nft == NULL && legacy != NULL ? RM_INIT_BACKEND_LEGACY : RM_INIT_BACKEND_NFT;
        free(nft);
        free(legacy);
    }
    return backend;
}

static void
print_tool_error(const char *tool, int rc, const char *errout)
{
    if (*errout != '\0')
        fprintf(stderr, "%s", errout);
    if (rc < 0)
        fprintf(stderr, "remora-init: %s did not finish within %d s (killed)\n", tool, TOOL_TIMEOUT_MS / 1000);
    else
        fprintf(stderr, "remora-init: %s failed (exit status %d)\n", tool, rc);
}

/* Reads what the nat table of `f` holds of ours. Returns 0, or an exit code. */
static int
read_state(family_t *f)
{
    char *out, *err;
    if (f->save_path == NULL) {
        fprintf(stderr, "remora-init: %s not found (install Debian's iptables package)\n", f->save);
        return EXIT_FAILED;
    }
    char *argv[] = {f->save_path, "-t", "nat", NULL};
    int rc = run_tool(argv, NULL, &out, &err);
    if (rc != 0) {
        print_tool_error(f->save, rc, err);
        int perm = looks_like_permission_error(err);
        if (perm)
            print_cap_message(f->legacy, -1);
        free(out);
        free(err);
        return perm ? EXIT_USAGE : EXIT_FAILED;
    }
    rm_init_state_parse(&f->state, out);
    free(out);
    free(err);
    return 0;
}

static int
apply_batch(family_t *f)
{
    char *out, *err;
    if (f->restore_path == NULL) {
        fprintf(stderr, "remora-init: %s not found (install Debian's iptables package)\n", f->restore);
        return EXIT_FAILED;
    }
    char *argv[] = {f->restore_path, "--noflush", NULL};
    int rc = run_tool(argv, f->batch, &out, &err);
    if (rc != 0) {
        print_tool_error(f->restore, rc, err);
        int perm = looks_like_permission_error(err);
        if (perm)
            print_cap_message(f->legacy, -1);
        free(out);
        free(err);
        return perm ? EXIT_USAGE : EXIT_FAILED;
    }
    free(out);
    free(err);
    return 0;
}

int
main(int argc, char **argv)
{
    rm_init_cmdline_t cmd;
    char err[256];
    family_t fams[2];
    size_t nfams = 0;
    int rc = 0;

    signal(SIGPIPE, SIG_IGN);
    if (rm_init_cmdline_parse(&cmd, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "remora-init: %s\n(remora-init --help lists the options)\n", err);
        rm_init_cmdline_dispose(&cmd);
        return EXIT_USAGE;
    }
    if (cmd.help) {
        fputs(rm_init_usage, stdout);
        rm_init_cmdline_dispose(&cmd);
        return 0;
    }

    unsigned families = cmd.opts.families;
    if ((families & RM_INIT_IPV6) != 0 && access("/proc/net/if_inet6", F_OK) != 0) {
        if (families == RM_INIT_IPV6) {
            fprintf(stderr, "remora-init: --ipv6-only, but IPv6 is disabled in this kernel or network namespace\n");
            rm_init_cmdline_dispose(&cmd);
            return EXIT_FAILED;
        }
        fprintf(stderr, "remora-init: IPv6 is disabled here: programming IPv4 only\n");
        families &= ~RM_INIT_IPV6;
    }

    rm_init_backend_t backend = cmd.backend == RM_INIT_BACKEND_AUTO ? detect_backend() : cmd.backend;
    const char *flavour = backend == RM_INIT_BACKEND_LEGACY ? "legacy" : "nft";
    memset(fams, 0, sizeof(fams));
    if ((families & RM_INIT_IPV4) != 0)
        fams[nfams++] = (family_t){.family = RM_INIT_IPV4, .label = "IPv4"};
    if ((families & RM_INIT_IPV6) != 0)
        fams[nfams++] = (family_t){.family = RM_INIT_IPV6, .label = "IPv6"};
    for (size_t i = 0; i < nfams; ++i) {
        const char *bin = fams[i].family == RM_INIT_IPV4 ? "iptables" : "ip6tables";
        snprintf(fams[i].restore, sizeof(fams[i].restore), "%s-%s-restore", bin, flavour);
        snprintf(fams[i].save, sizeof(fams[i].save), "%s-%s-save", bin, flavour);
        fams[i].restore_path = find_tool(fams[i].restore);
        fams[i].save_path = find_tool(fams[i].save);
        fams[i].legacy = backend == RM_INIT_BACKEND_LEGACY;
    }

    int cap = has_cap(CAP_NET_ADMIN), have_raw = backend != RM_INIT_BACKEND_LEGACY || has_cap(CAP_NET_RAW);
    if (!cmd.dry_run && (!cap || !have_raw)) {
        print_cap_message(backend == RM_INIT_BACKEND_LEGACY, cap ? have_raw : -1);
        rc = EXIT_USAGE;
        goto Exit;
    }
    cap = cap && have_raw;

    /* Read every family's state before changing any, so that a failure to read changes nothing. */
    for (size_t i = 0; i < nfams; ++i) {
        if (!cap || (cmd.dry_run && fams[i].save_path == NULL)) {
            fprintf(stderr, "remora-init: cannot read the current %s nat table (%s): showing the batch for an empty one\n",
                    fams[i].label, !cap ? "capability missing" : "no save tool");
            continue;
        }
        if ((rc = read_state(&fams[i])) != 0)
            goto Exit;
    }
    for (size_t i = 0; i < nfams; ++i)
        fams[i].batch =
            cmd.remove ? rm_init_render_remove(&fams[i].state) : rm_init_render_install(&cmd.opts, fams[i].family, &fams[i].state);

    if (cmd.dry_run) {
        /* the header is a comment, which restore accepts too: each batch can be fed as printed */
        for (size_t i = 0; i < nfams; ++i)
            printf("# %s: %s --noflush\n%s", fams[i].label, fams[i].restore, fams[i].batch);
        goto Exit;
    }
    for (size_t i = 0; i < nfams; ++i) {
        if (cmd.remove && fams[i].state.num_chains == 0 && fams[i].state.num_jumps == 0) {
            printf("remora-init: %s: nothing of ours in the nat table\n", fams[i].label);
            continue;
        }
        if ((rc = apply_batch(&fams[i])) != 0) {
            if (i > 0)
                fprintf(stderr, "remora-init: the %s rules were applied already; run again (or --remove) once fixed\n",
                        fams[0].label);
            goto Exit;
        }
        printf("remora-init: %s rules %s (%s)\n", fams[i].label, cmd.remove ? "removed" : "installed", fams[i].restore);
    }

Exit:
    for (size_t i = 0; i < nfams; ++i) {
        free(fams[i].restore_path);
        free(fams[i].save_path);
        free(fams[i].batch);
        rm_init_state_dispose(&fams[i].state);
    }
    rm_init_cmdline_dispose(&cmd);
    return rc;
}
