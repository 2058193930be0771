#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "inject.h"
#include "manifest.h"
#include "remoractl_inject.h"

#define MAX_FILES 64
#define MAX_LIST_DEPTH 4

const char rm_ctl_inject_help[] =
    "Usage: remoractl inject [-f FILE|-]... [--config FILE]\n"
    "\n"
    "Adds the Remora sidecar to every pod and pod template of Kubernetes manifests, offline, exactly as\n"
    "remora-control's injection webhook does: the remora-init init container, the agent remora-proxy (a\n"
    "native sidecar unless nativeSidecar is false), its volumes, and HTTP and gRPC probes of the\n"
    "application rewritten to pass through the agent's health port. Pods, Deployments, StatefulSets,\n"
    "DaemonSets, ReplicaSets, ReplicationControllers, Jobs and CronJobs are injected, Lists item by\n"
    "item; other kinds pass through unchanged. Injecting an injected pod changes nothing.\n"
    "\n"
    "The manifests are written to standard output in their input format (YAML or JSON; comments are\n"
    "not kept), ready for `| kubectl apply -f -`; one line per object on standard error says what\n"
    "happened to it. If an object cannot be injected (a bad config.remora.dev/ annotation...), nothing\n"
    "is written and the exit code is 1.\n"
    "\n"
    "  -f, --filename FILE   a manifest file, '-' for standard input (default); may be repeated\n"
    "  --config FILE         the injector configuration (YAML, as remora-control --injector-config;\n"
    "                        default: the built-in defaults, see docs/injection.md)\n";

const char rm_ctl_uninject_help[] = "Usage: remoractl uninject [-f FILE|-]...\n"
                                    "\n"
                                    "Removes what `remoractl inject` (or the webhook) added: the remora-init and remora-proxy\n"
                                    "containers, the remora-* volumes and annotations, and puts the application's original probes\n"
                                    "back. Output and report as for inject.\n"
                                    "\n"
                                    "  -f, --filename FILE   a manifest file, '-' for standard input (default); may be repeated\n";

/* Where each kind keeps its pod template (NULL-terminated path of keys; empty: the object is the pod). */
static const struct {
    const char *kind;
    const char *path[5];
} template_paths[] = {
    {"Pod", {NULL}},
    {"Deployment", {"spec", "template", NULL}},
    {"StatefulSet", {"spec", "template", NULL}},
    {"DaemonSet", {"spec", "template", NULL}},
    {"ReplicaSet", {"spec", "template", NULL}},
    {"ReplicationController", {"spec", "template", NULL}},
    {"Job", {"spec", "template", NULL}},
    {"CronJob", {"spec", "jobTemplate", "spec", "template", NULL}},
};

typedef struct st_run_t {
    int uninject;
    const rm_inject_config_t *cfg;
    size_t injected, skipped, passed, failed;
} run_t;

static char *
read_input(const char *path, size_t *len)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "remoractl: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = rm_malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > RM_MANIFEST_MAX_BYTES) {
                fprintf(stderr, "remoractl: %s: larger than %u bytes\n", path, RM_MANIFEST_MAX_BYTES);
                free(buf);
                if (fp != stdin)
                    fclose(fp);
                return NULL;
            }
            buf = rm_realloc(buf, cap *= 2);
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(fp);
    if (fp != stdin)
        fclose(fp);
    if (bad) {
        fprintf(stderr, "remoractl: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Transforms one object (recursing into Lists); reports on stderr. */
static void
transform(run_t *r, json_t *obj, const char *where, unsigned depth)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    char who[400];
    snprintf(who, sizeof(who), "%s: %s/%s", where, kind != NULL ? kind : "(no kind)", name != NULL ? name : "(no name)");
    json_t *items = json_object_get(obj, "items");
    size_t klen = kind != NULL ? strlen(kind) : 0;
    if (klen >= 4 && strcmp(kind + klen - 4, "List") == 0 && json_is_array(items)) {
        if (depth == MAX_LIST_DEPTH) {
            fprintf(stderr, "%s: Lists nested more than %u deep: error\n", who, MAX_LIST_DEPTH);
            ++r->failed;
            return;
        }
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            char sub[300];
            snprintf(sub, sizeof(sub), "%s items[%zu]", where, i);
            transform(r, item, sub, depth + 1);
        }
        return;
    }
    json_t *pod = NULL;
    for (size_t i = 0; kind != NULL && i != sizeof(template_paths) / sizeof(template_paths[0]); ++i) {
        if (strcmp(kind, template_paths[i].kind) != 0)
            continue;
        pod = obj;
        for (size_t k = 0; pod != NULL && template_paths[i].path[k] != NULL; ++k)
            pod = json_object_get(pod, template_paths[i].path[k]);
        if (!json_is_object(pod)) {
            fprintf(stderr, "%s: error: no pod template (spec.template) to %s\n", who, r->uninject ? "uninject" : "inject");
            ++r->failed;
            return;
        }
        break;
    }
    if (pod == NULL) {
        fprintf(stderr, "%s: passed through\n", who);
        ++r->passed;
        return;
    }
    json_t *patch = NULL, *warnings = json_array();
    char reason[600];
    rm_inject_result_t res = r->uninject ? rm_uninject_pod(pod, &patch, reason, sizeof(reason))
                                         : rm_inject_pod(r->cfg, pod, &patch, warnings, reason, sizeof(reason));
    size_t i;
    json_t *w;
    json_array_foreach(warnings, i, w)
    {
        fprintf(stderr, "%s: warning: %s\n", who, json_string_value(w));
    }
    json_decref(warnings);
    if (res == RM_INJECT_SKIP) {
        fprintf(stderr, "%s: skipped: %s\n", who, reason);
        ++r->skipped;
    } else if (res == RM_INJECT_INVALID) {
        fprintf(stderr, "%s: error: %s\n", who, reason);
        ++r->failed;
    } else if (rm_jsonpatch_apply(pod, patch, reason, sizeof(reason)) != 0) {
        /* our own patch on the tree it was made from: a broken invariant */
        fprintf(stderr, "%s: error: internal: the patch does not apply: %s\n", who, reason);
        ++r->failed;
    } else {
        fprintf(stderr, "%s: %s\n", who, r->uninject ? "uninjected" : "injected");
        ++r->injected;
    }
    json_decref(patch);
}

int
rm_ctl_inject(int argc, char **argv)
{
    static const struct option opts[] = {{"filename", required_argument, NULL, 'f'},
                                         {"config", required_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    run_t r = {.uninject = strcmp(argv[0], "uninject") == 0};
    const char *help = r.uninject ? rm_ctl_uninject_help : rm_ctl_inject_help;
    const char *files[MAX_FILES], *config = NULL;
    size_t num_files = 0;
    int c;
    while ((c = getopt_long(argc, argv, r.uninject ? "f:h" : "f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (num_files == MAX_FILES) {
                fprintf(stderr, "remoractl: at most %u files\n", MAX_FILES);
                return 2;
            }
            files[num_files++] = optarg;
            break;
        case 'C':
            if (r.uninject) {
                fprintf(stderr, "remoractl: uninject takes no --config\nTry 'remoractl uninject --help'.\n");
                return 2;
            }
            config = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return 0;
        default:
            fprintf(stderr, "Try 'remoractl %s --help'.\n", argv[0]);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "remoractl: %s takes files with -f; unexpected '%s'\nTry 'remoractl %s --help'.\n", argv[0], argv[optind],
                argv[0]);
        return 2;
    }
    if (num_files == 0)
        files[num_files++] = "-";
    rm_inject_config_t cfg;
    rm_inject_config_init(&cfg);
    char err[700];
    if (config != NULL && rm_inject_config_load(&cfg, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "remoractl: --config %s\n", err);
        rm_inject_config_dispose(&cfg);
        return 2;
    }
    r.cfg = &cfg;
    json_t *all = json_array();
    rm_manifest_format_t format = RM_MANIFEST_YAML;
    int rc = 0;
    for (size_t f = 0; f != num_files && rc == 0; ++f) {
        const char *name = strcmp(files[f], "-") == 0 ? "<stdin>" : files[f];
        size_t len = 0;
        char *text = read_input(files[f], &len);
        if (text == NULL) {
            rc = 2;
            break;
        }
        rm_manifest_t m;
        if (rm_manifest_parse(text, len, name, &m, err, sizeof(err)) != 0) {
            fprintf(stderr, "remoractl: %s\n", err);
            free(text);
            rc = 2;
            break;
        }
        free(text);
        if (f == 0)
            format = m.format;
        for (size_t d = 0; d != m.num_docs; ++d) {
            char where[300];
            snprintf(where, sizeof(where), "%s:%u", name, m.lines[d]);
            if (!json_is_object(m.docs[d])) {
                fprintf(stderr, "%s: not an object: passed through\n", where);
                ++r.passed;
            } else {
                transform(&r, m.docs[d], where, 0);
            }
            json_array_append(all, m.docs[d]);
        }
        rm_manifest_dispose(&m);
    }
    if (rc == 0 && r.failed != 0) {
        fprintf(stderr, "remoractl: %zu object(s) could not be %s: nothing written\n", r.failed,
                r.uninject ? "uninjected" : "injected");
        rc = 1;
    }
    if (rc == 0) {
        size_t n = json_array_size(all);
        json_t **docs = rm_malloc((n != 0 ? n : 1) * sizeof(*docs));
        for (size_t i = 0; i != n; ++i)
            docs[i] = json_array_get(all, i);
        char *out = rm_manifest_emit(docs, n, format);
        fputs(out, stdout);
        free(out);
        free(docs);
        if (fflush(stdout) != 0) {
            fprintf(stderr, "remoractl: cannot write the output: %s\n", strerror(errno));
            rc = 2;
        }
    }
    json_decref(all);
    rm_inject_config_dispose(&cfg);
    return rc;
}
