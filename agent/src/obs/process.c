/*
 * Process, build and configuration families (process.h).
 */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "remora/strutil.h"
#include "obs/process.h"
#include "obs/stats.h"

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static char *build_version;
static char *config_version;
static double config_applied_at;
static uint64_t config_rejected[RM_OBS_CONFIG_SOURCES];
static const char *const source_names[RM_OBS_CONFIG_SOURCES] = {"control_plane", "file"};

static double
now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void
rm_obs_set_build_info(const char *version)
{
    pthread_mutex_lock(&mutex);
    free(build_version);
    build_version = rm_strdup(version);
    pthread_mutex_unlock(&mutex);
}

void
rm_obs_config_applied(const char *version, unsigned long long generation)
{
    char buf[32];
    if (version == NULL) {
        snprintf(buf, sizeof(buf), "%llu", generation);
        version = buf;
    }
    pthread_mutex_lock(&mutex);
    free(config_version);
    config_version = rm_strdup(version);
    config_applied_at = now_unix();
    pthread_mutex_unlock(&mutex);
}

void
rm_obs_config_rejected(rm_obs_config_source_t source)
{
    __atomic_fetch_add(&config_rejected[source], 1, __ATOMIC_RELAXED);
}

/* -- /proc --------------------------------------------------------------------------------------------------------------------- */

static double process_start_time;
static pthread_once_t process_start_once = PTHREAD_ONCE_INIT;

/* /proc/self/stat gives the start in clock ticks since boot and /proc/stat the boot time; fall back to "now". */
static void
init_process_start_time(void)
{
    unsigned long long start_ticks = 0, btime = 0;
    char buf[1024], *p;
    FILE *fp;
    int ok = 0;

    if ((fp = fopen("/proc/self/stat", "r")) != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        /* the command name may contain spaces and parentheses: fields are counted after the last ')' */
        if ((p = strrchr(buf, ')')) != NULL) {
            int field = 2;
            for (; *p != '\0' && field < 22; ++p)
                if (*p == ' ')
                    ++field;
            ok = field == 22 && sscanf(p, "%llu", &start_ticks) == 1;
        }
    }
    if (ok && (fp = fopen("/proc/stat", "r")) != NULL) {
        ok = 0;
        while (fgets(buf, sizeof(buf), fp) != NULL)
            if (sscanf(buf, "btime %llu", &btime) == 1) {
                ok = 1;
                break;
            }
        fclose(fp);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (ok && hz > 0)
        process_start_time = (double)btime + (double)start_ticks / (double)hz;
    else
        process_start_time = now_unix();
}

/* Virtual and resident memory in bytes, from /proc/self/statm (0 when unreadable). */
static void
memory_bytes(uint64_t *virtual_bytes, uint64_t *resident_bytes)
{
    unsigned long long size = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    int n = 0;

    *virtual_bytes = *resident_bytes = 0;
    if (fp == NULL)
        return;
    n = fscanf(fp, "%llu %llu", &size, &resident);
    fclose(fp);
    long page = sysconf(_SC_PAGESIZE);
    if (n == 2 && page > 0) {
        *virtual_bytes = (uint64_t)size * (uint64_t)page;
        *resident_bytes = (uint64_t)resident * (uint64_t)page;
    }
}

static long
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        ++n;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

static void
gauge(FILE *fp, const char *name, const char *help)
{
    fprintf(fp, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

void
rm_obs_render_process(FILE *fp)
{
    uint64_t vsz, rss;
    struct rusage ru;
    struct rlimit rl;

    pthread_once(&process_start_once, init_process_start_time);
    memory_bytes(&vsz, &rss);

    /* the names kept since the first release */
    gauge(fp, "remora_process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.");
    fprintf(fp, "remora_process_start_time_seconds %.2f\n", process_start_time);
    gauge(fp, "remora_process_resident_memory_bytes", "Resident memory size in bytes.");
    fprintf(fp, "remora_process_resident_memory_bytes %" PRIu64 "\n", rss);

    /* the process collector's names (Prometheus client libraries), so stock dashboards work */
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu =
            (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        fprintf(fp,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n",
                cpu);
    }
    long fds = open_fds();
    if (fds >= 0) {
        gauge(fp, "process_open_fds", "Number of open file descriptors.");
        fprintf(fp, "process_open_fds %ld\n", fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        gauge(fp, "process_max_fds", "Maximum number of open file descriptors.");
        fprintf(fp, "process_max_fds %llu\n", rl.rlim_cur == RLIM_INFINITY ? 0ull : (unsigned long long)rl.rlim_cur);
    }
    gauge(fp, "process_resident_memory_bytes", "Resident memory size in bytes.");
    fprintf(fp, "process_resident_memory_bytes %" PRIu64 "\n", rss);
    gauge(fp, "process_virtual_memory_bytes", "Virtual memory size in bytes.");
    fprintf(fp, "process_virtual_memory_bytes %" PRIu64 "\n", vsz);
    gauge(fp, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
    fprintf(fp, "process_start_time_seconds %.2f\n", process_start_time);

    pthread_mutex_lock(&mutex);
    gauge(fp, "remora_build_info", "Build information: always 1, the labels carry it.");
    fputs("remora_build_info{version=\"", fp);
    rm_stats_fprint_label_value(fp, build_version != NULL ? build_version : "unknown");
    fputs("\",compiler=\"", fp);
#ifdef __clang__
    fputs("clang ", fp);
#else
    fputs("gcc ", fp);
#endif
    rm_stats_fprint_label_value(fp, __VERSION__);
    fputs("\"} 1\n", fp);
    if (config_version != NULL) {
        gauge(fp, "remora_config_version_info",
              "The configuration in service: always 1; `version` is the control plane's snapshot version, or the generation for "
              "a bootstrap file.");
        fputs("remora_config_version_info{version=\"", fp);
        rm_stats_fprint_label_value(fp, config_version);
        fputs("\"} 1\n", fp);
        gauge(fp, "remora_config_last_applied_timestamp_seconds",
              "When the configuration in service was applied, since the Unix epoch.");
        fprintf(fp, "remora_config_last_applied_timestamp_seconds %.3f\n", config_applied_at);
    }
    pthread_mutex_unlock(&mutex);
    fprintf(fp, "# HELP remora_config_nacks_total Configuration updates refused (the previous configuration stays in service), by "
                "source.\n# TYPE remora_config_nacks_total counter\n");
    for (int i = 0; i != RM_OBS_CONFIG_SOURCES; ++i)
        fprintf(fp, "remora_config_nacks_total{source=\"%s\"} %" PRIu64 "\n", source_names[i],
                __atomic_load_n(&config_rejected[i], __ATOMIC_RELAXED));
}
