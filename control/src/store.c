#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/admin.pb-c.h"
#include "remora/v1/discovery.pb-c.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "cp_metrics.h"
#include "store.h"

#define MAGIC "RMSTORE1"
#define HEADER_SIZE 20
#define TMP_FILE RM_STORE_FILE ".tmp"
/* a state file larger than this is not ours */
#define MAX_STATE_BYTES (512 * 1024 * 1024)

/* The memory store's versions are hashes: the last this many are mapped to their change sequence. */
#define VERSION_RING 64

/*
 * A kind's resources, sorted by (namespace, name), and for each the change sequence (see below) that
 * last created or changed it: `modified` runs parallel to `entries`.
 */
typedef struct st_kind_list_t {
    rm_resource_t **entries;
    uint64_t *modified;
    size_t size;
} kind_list_t;

/* One deletion: what, and the change sequence that removed it. */
typedef struct st_removal_t {
    rm_kind_t kind;
    char *ns, *name;
    uint64_t seq;
} removal_t;

/*
 * Incremental updates (rm_store_delta): every change has a sequence number `seq`, counting up. In the
 * file store it is the version itself; in the memory store (versions are content hashes) it counts the
 * replacements, and `ring` maps the last VERSION_RING versions to theirs. Each resource remembers the
 * sequence that last modified it; deletions are kept in `removals`, a ring of at most `removals_max`.
 * What changed after sequence B is then the resources modified after B plus the removals after B, as
 * long as B >= `horizon`: the sequence of the newest removal dropped from the ring, or of the state
 * loaded at start (whose history is not known).
 */
struct st_rm_store_t {
    char *dir;
    int dir_fd, lock_fd;
    uint64_t version;
    kind_list_t kinds[RM_KIND__ALL];
    rm_rpc_buf_t snapshot;
    uint64_t seq, horizon;
    int hashed_versions;
    uint64_t ring_version[VERSION_RING], ring_seq[VERSION_RING];
    size_t ring_len, ring_next;
    removal_t *removals;
    size_t removals_max, removals_len, removals_first;
    /* the store's identity (rm_store_id), in store.pb and in every encoding */
    uint8_t id[RM_STORE_ID_BYTES];
};

static uint32_t
crc32(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xffffffff;
    for (size_t i = 0; i != len; ++i) {
        crc ^= p[i];
        for (int k = 0; k != 8; ++k)
            crc = (crc >> 1) ^ (0xedb88320 & (0u - (crc & 1)));
    }
    return ~crc;
}

static void
put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i != n; ++i)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

/* Field numbers come from the generated descriptor so that the hand-assembled encoding cannot drift from the .proto. */
static uint32_t
snapshot_field(const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, name);
    if (f == NULL)
        rm_fatal("remora.v1.Snapshot has no field %s", name);
    return f->id;
}

static void
encode_view(rm_rpc_buf_t *buf, uint64_t version, const kind_list_t *kinds, const uint8_t *id, const uint8_t *const *view)
{
    buf->len = 0;
    if (version != 0)
        rm_rpc_buf_append_varint_field(buf, snapshot_field("version"), version);
    rm_rpc_buf_append_bytes_field(buf, snapshot_field("store_id"), id, RM_STORE_ID_BYTES);
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        uint32_t field = snapshot_field(rm_kind_field((rm_kind_t)k));
        for (size_t i = 0; i != kinds[k].size; ++i)
            if (view == NULL || view[k][i])
                rm_rpc_buf_append_bytes_field(buf, field, kinds[k].entries[i]->bytes, kinds[k].entries[i]->len);
    }
}

static void
encode(rm_rpc_buf_t *buf, uint64_t version, kind_list_t *kinds, const uint8_t *id)
{
    encode_view(buf, version, kinds, id, NULL);
}

static int
write_all(int fd, const uint8_t *p, size_t len)
{
    while (len != 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* temp file, fsync, rename, fsync of the directory: the rename is the commit point. */
static int
write_state(rm_store_t *s, const rm_rpc_buf_t *snapshot, char *err, size_t errsz)
{
    uint8_t header[HEADER_SIZE];
    memcpy(header, MAGIC, 8);
    put_le(header + 8, crc32(snapshot->base, snapshot->len), 4);
    put_le(header + 12, snapshot->len, 8);
    int fd = openat(s->dir_fd, TMP_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot create %s/%s: %s", s->dir, TMP_FILE, strerror(errno));
        return -1;
    }
    if (write_all(fd, header, sizeof(header)) != 0 || write_all(fd, snapshot->base, snapshot->len) != 0 || fsync(fd) != 0) {
        snprintf(err, errsz, "cannot write %s/%s: %s", s->dir, TMP_FILE, strerror(errno));
        close(fd);
        unlinkat(s->dir_fd, TMP_FILE, 0);
        return -1;
    }
    if (close(fd) != 0) {
        snprintf(err, errsz, "cannot write %s/%s: %s", s->dir, TMP_FILE, strerror(errno));
        unlinkat(s->dir_fd, TMP_FILE, 0);
        return -1;
    }
    if (renameat(s->dir_fd, TMP_FILE, s->dir_fd, RM_STORE_FILE) != 0) {
        snprintf(err, errsz, "cannot rename %s/%s to %s: %s", s->dir, TMP_FILE, RM_STORE_FILE, strerror(errno));
        unlinkat(s->dir_fd, TMP_FILE, 0);
        return -1;
    }
    if (fsync(s->dir_fd) != 0) {
        /* the new file is in place but its name may not be durable yet; the next write retries that */
        snprintf(err, errsz, "cannot sync directory %s: %s", s->dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int
cmp_entry(const void *a, const void *b)
{
    return rm_resource_cmp(a, b);
}

typedef struct st_pair_t {
    rm_resource_t *r;
    uint64_t modified;
} pair_t;

static int
cmp_pair(const void *a, const void *b)
{
    return rm_resource_cmp(&((const pair_t *)a)->r, &((const pair_t *)b)->r);
}

/* Sorts a list by (namespace, name), its modification sequences along. */
static void
sort_list(kind_list_t *l)
{
    if (l->size < 2)
        return;
    pair_t *pairs = rm_malloc(l->size * sizeof(pairs[0]));
    for (size_t i = 0; i != l->size; ++i)
        pairs[i] = (pair_t){l->entries[i], l->modified[i]};
    qsort(pairs, l->size, sizeof(pairs[0]), cmp_pair);
    for (size_t i = 0; i != l->size; ++i) {
        l->entries[i] = pairs[i].r;
        l->modified[i] = pairs[i].modified;
    }
    free(pairs);
}

static void
free_list(kind_list_t *l)
{
    free(l->entries);
    free(l->modified);
    l->entries = NULL;
    l->modified = NULL;
    l->size = 0;
}

/* The bound of the removal log: RM_STORE_REMOVALS_MAX, or REMORA_CONTROL_REMOVAL_LOG (tests) when valid. */
static size_t
removals_bound(void)
{
    const char *env = getenv("REMORA_CONTROL_REMOVAL_LOG");
    if (env != NULL && env[0] != '\0') {
        char *end;
        unsigned long v = strtoul(env, &end, 10);
        if (*end == '\0' && v >= 1 && v <= 1000000)
            return (size_t)v;
        rm_log_warn("store", "REMORA_CONTROL_REMOVAL_LOG=%s is not a number from 1 to 1000000; using %d", env,
                    RM_STORE_REMOVALS_MAX);
    }
    return RM_STORE_REMOVALS_MAX;
}

/* Logs the deletion of a resource at change sequence `seq`; the oldest entry leaves a full log, and the horizon moves. */
static void
log_removal(rm_store_t *s, const rm_resource_t *r, uint64_t seq)
{
    if (s->removals_len == s->removals_max) {
        removal_t *old = &s->removals[s->removals_first];
        if (old->seq > s->horizon)
            s->horizon = old->seq;
        free(old->ns);
        free(old->name);
        s->removals_first = (s->removals_first + 1) % s->removals_max;
        --s->removals_len;
    }
    removal_t *e = &s->removals[(s->removals_first + s->removals_len) % s->removals_max];
    *e = (removal_t){r->kind, rm_strdup(r->ns), rm_strdup(r->name), seq};
    ++s->removals_len;
}

static void
init_history(rm_store_t *s)
{
    s->removals_max = removals_bound();
    s->removals = rm_calloc(s->removals_max, sizeof(s->removals[0]));
}

static int
add_loaded(rm_store_t *s, rm_kind_t kind, size_t n, ProtobufCMessage **msgs, char *err, size_t errsz)
{
    kind_list_t *l = &s->kinds[kind];
    l->entries = rm_calloc(n + 1, sizeof(l->entries[0]));
    l->modified = rm_calloc(n + 1, sizeof(l->modified[0]));
    for (size_t i = 0; i != n; ++i) {
        size_t len = protobuf_c_message_get_packed_size(msgs[i]);
        uint8_t *bytes = rm_malloc(len);
        protobuf_c_message_pack(msgs[i], bytes);
        rm_resource_t *r = rm_resource_create(kind, bytes, len);
        free(bytes);
        if (r == NULL) {
            snprintf(err, errsz, "%s/%s: a %s without a name or namespace", s->dir, RM_STORE_FILE, rm_kind_name(kind));
            return -1;
        }
        /* the history before this start is not known: the loaded version is the horizon (set by the caller) */
        l->modified[l->size] = s->version;
        l->entries[l->size++] = r;
    }
    sort_list(l);
    return 0;
}

static int
load(rm_store_t *s, int *has_id, char *err, size_t errsz)
{
    int fd = openat(s->dir_fd, RM_STORE_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errsz, "cannot open %s/%s: %s", s->dir, RM_STORE_FILE, strerror(errno));
        return -1;
    }
    struct stat st;
    uint8_t *data = NULL;
    int ret = -1;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errsz, "cannot stat %s/%s: %s", s->dir, RM_STORE_FILE, strerror(errno));
        goto out;
    }
    if (st.st_size < HEADER_SIZE || st.st_size > MAX_STATE_BYTES) {
        snprintf(err, errsz, "%s/%s is not a remora-control state file (size %lld)", s->dir, RM_STORE_FILE, (long long)st.st_size);
        goto out;
    }
    data = rm_malloc((size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errsz, "cannot read %s/%s: %s", s->dir, RM_STORE_FILE, n < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)n;
    }
    uint64_t len = get_le(data + 12, 8);
    if (memcmp(data, MAGIC, 8) != 0 || len != (uint64_t)st.st_size - HEADER_SIZE) {
        snprintf(err, errsz, "%s/%s is not a remora-control state file, or is truncated", s->dir, RM_STORE_FILE);
        goto out;
    }
    if (crc32(data + HEADER_SIZE, len) != (uint32_t)get_le(data + 8, 4)) {
        snprintf(err, errsz, "%s/%s is corrupt (checksum mismatch)", s->dir, RM_STORE_FILE);
        goto out;
    }
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, data + HEADER_SIZE);
    if (snap == NULL) {
        snprintf(err, errsz, "%s/%s is corrupt (does not parse)", s->dir, RM_STORE_FILE);
        goto out;
    }
    s->version = snap->version;
    if (snap->store_id.len == RM_STORE_ID_BYTES) {
        memcpy(s->id, snap->store_id.data, RM_STORE_ID_BYTES);
        *has_id = 1;
    }
    ret = 0;
    for (int k = 0; k != RM_KIND__ALL && ret == 0; ++k) {
        /* the kind's repeated field, found through the descriptor as encode() does */
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, rm_kind_field((rm_kind_t)k));
        size_t n = *(const size_t *)((const char *)snap + f->quantifier_offset);
        ProtobufCMessage **msgs = *(ProtobufCMessage ***)((char *)snap + f->offset);
        ret = add_loaded(s, (rm_kind_t)k, n, msgs, err, errsz);
    }
    remora__v1__snapshot__free_unpacked(snap, NULL);
out:
    free(data);
    close(fd);
    return ret;
}

rm_store_t *
rm_store_open(const char *dir, char *err, size_t errsz)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create the state directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    rm_store_t *s = rm_calloc(1, sizeof(*s));
    s->dir = rm_strdup(dir);
    s->lock_fd = -1;
    init_history(s);
    if ((s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errsz, "cannot open the state directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((s->lock_fd = openat(s->dir_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        snprintf(err, errsz, "cannot create %s/LOCK: %s", dir, strerror(errno));
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            snprintf(err, errsz, "the state directory %s is in use by another remora-control", dir);
        else
            snprintf(err, errsz, "cannot lock %s/LOCK: %s", dir, strerror(errno));
        goto fail;
    }
    /* a temp file left by a crash before its rename is garbage */
    unlinkat(s->dir_fd, TMP_FILE, 0);
    int has_id = 0;
    if (load(s, &has_id, err, errsz) != 0)
        goto fail;
    s->seq = s->horizon = s->version;
    if (!has_id) {
        /* a new state directory (or one from before store identities): its identity is made now and written at
         * once, so that the versions counted from here on are never mistaken for another directory's */
        ssize_t got;
        while ((got = getrandom(s->id, sizeof(s->id), 0)) < 0 && errno == EINTR)
            ;
        if (got != (ssize_t)sizeof(s->id)) {
            snprintf(err, errsz, "cannot make the identity of the state directory %s: %s", dir,
                     got < 0 ? strerror(errno) : "short read from getrandom");
            goto fail;
        }
        encode(&s->snapshot, s->version, s->kinds, s->id);
        if (write_state(s, &s->snapshot, err, errsz) != 0)
            goto fail;
    } else {
        encode(&s->snapshot, s->version, s->kinds, s->id);
    }
    return s;
fail:
    rm_store_close(s);
    return NULL;
}

rm_store_t *
rm_store_open_memory(void)
{
    rm_store_t *s = rm_calloc(1, sizeof(*s));
    s->dir_fd = s->lock_fd = -1;
    s->hashed_versions = 1;
    init_history(s);
    /* constant: its versions are content hashes, which name the same content in every process (store.h) */
    memcpy(s->id, "remora-kube-hash", RM_STORE_ID_BYTES);
    encode(&s->snapshot, 0, s->kinds, s->id);
    return s;
}

static ssize_t find_index(const kind_list_t *l, rm_kind_t kind, const char *ns, const char *name);

void
rm_store_replace(rm_store_t *s, rm_resource_list_t *list, uint64_t version)
{
    uint64_t seq = ++s->seq;
    kind_list_t next[RM_KIND__ALL];
    memset(next, 0, sizeof(next));
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        next[k].entries = rm_calloc(list->size + 1, sizeof(next[k].entries[0]));
        next[k].modified = rm_calloc(list->size + 1, sizeof(next[k].modified[0]));
    }
    for (size_t i = 0; i != list->size; ++i) {
        rm_resource_t *r = list->entries[i];
        next[r->kind].entries[next[r->kind].size++] = r;
        list->entries[i] = NULL;
    }
    list->size = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        kind_list_t *n = &next[k], *o = &s->kinds[k];
        qsort(n->entries, n->size, sizeof(n->entries[0]), cmp_entry);
        /* what is byte for byte as before keeps its modification; the rest is new at `seq` */
        for (size_t i = 0; i != n->size; ++i) {
            const rm_resource_t *r = n->entries[i];
            ssize_t at = find_index(o, r->kind, r->ns, r->name);
            const rm_resource_t *old = at >= 0 ? o->entries[at] : NULL;
            n->modified[i] = old != NULL && old->len == r->len && memcmp(old->bytes, r->bytes, r->len) == 0 ? o->modified[at] : seq;
        }
        for (size_t i = 0; i != o->size; ++i) {
            if (find_index(n, o->entries[i]->kind, o->entries[i]->ns, o->entries[i]->name) < 0)
                log_removal(s, o->entries[i], seq);
            rm_resource_destroy(o->entries[i]);
        }
        free_list(o);
        *o = *n;
    }
    s->version = version;
    s->ring_version[s->ring_next] = version;
    s->ring_seq[s->ring_next] = seq;
    s->ring_next = (s->ring_next + 1) % VERSION_RING;
    if (s->ring_len < VERSION_RING)
        ++s->ring_len;
    encode(&s->snapshot, version, s->kinds, s->id);
}

void
rm_store_close(rm_store_t *s)
{
    if (s == NULL)
        return;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        for (size_t i = 0; i != s->kinds[k].size; ++i)
            rm_resource_destroy(s->kinds[k].entries[i]);
        free_list(&s->kinds[k]);
    }
    for (size_t i = 0; i != s->removals_len; ++i) {
        removal_t *e = &s->removals[(s->removals_first + i) % s->removals_max];
        free(e->ns);
        free(e->name);
    }
    free(s->removals);
    rm_rpc_buf_dispose(&s->snapshot);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    free(s->dir);
    free(s);
}

const uint8_t *
rm_store_id(const rm_store_t *s)
{
    return s->id;
}

uint64_t
rm_store_version(const rm_store_t *s)
{
    return s->version;
}

rm_resource_t *const *
rm_store_list(const rm_store_t *s, rm_kind_t kind, size_t *n)
{
    *n = s->kinds[kind].size;
    return s->kinds[kind].entries;
}

static ssize_t
find_index(const kind_list_t *l, rm_kind_t kind, const char *ns, const char *name)
{
    if (l->size == 0)
        return -1;
    rm_resource_t key = {.kind = kind, .ns = ns, .name = name}, *kp = &key;
    rm_resource_t **found = bsearch(&kp, l->entries, l->size, sizeof(l->entries[0]), cmp_entry);
    return found != NULL ? found - l->entries : -1;
}

const rm_resource_t *
rm_store_find(const rm_store_t *s, rm_kind_t kind, const char *ns, const char *name)
{
    ssize_t i = find_index(&s->kinds[kind], kind, ns, name);
    return i >= 0 ? s->kinds[kind].entries[i] : NULL;
}

int
rm_store_exists_cb(void *ctx, rm_kind_t kind, const char *ns, const char *name)
{
    return rm_store_find(ctx, kind, ns, name) != NULL;
}

/* Writes `next` as version+1 and makes it current, or leaves everything as it was. */
static int
commit(rm_store_t *s, kind_list_t *next, char *err, size_t errsz)
{
    rm_rpc_buf_t buf = {0};
    encode(&buf, s->version + 1, next, s->id);
    if (s->dir != NULL && rm_cp_metrics_store_write(write_state(s, &buf, err, errsz), buf.len) != 0) {
        rm_rpc_buf_dispose(&buf);
        return -1;
    }
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        free_list(&s->kinds[k]);
        s->kinds[k] = next[k];
    }
    rm_rpc_buf_dispose(&s->snapshot);
    s->snapshot = buf;
    ++s->version;
    s->seq = s->version;
    return 0;
}

static void
copy_lists(const rm_store_t *s, kind_list_t *next, size_t extra)
{
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        next[k].entries = rm_calloc(s->kinds[k].size + extra + 1, sizeof(next[k].entries[0]));
        next[k].modified = rm_calloc(s->kinds[k].size + extra + 1, sizeof(next[k].modified[0]));
        if (s->kinds[k].size != 0) {
            memcpy(next[k].entries, s->kinds[k].entries, s->kinds[k].size * sizeof(next[k].entries[0]));
            memcpy(next[k].modified, s->kinds[k].modified, s->kinds[k].size * sizeof(next[k].modified[0]));
        }
        next[k].size = s->kinds[k].size;
    }
}

int
rm_store_apply(rm_store_t *s, rm_batch_t *batch, int dry_run, rm_store_action_t *actions, int *changed, char *err, size_t errsz)
{
    rm_resource_list_t *list = &batch->resources;
    *changed = 0;
    for (size_t i = 0; i != list->size; ++i) {
        const rm_resource_t *r = list->entries[i], *old = rm_store_find(s, r->kind, r->ns, r->name);
        if (old == NULL)
            actions[i] = RM_STORE_CREATED;
        else if (old->len == r->len && memcmp(old->bytes, r->bytes, r->len) == 0)
            actions[i] = RM_STORE_UNCHANGED;
        else
            actions[i] = RM_STORE_CONFIGURED;
        if (actions[i] != RM_STORE_UNCHANGED)
            *changed = 1;
    }
    if (!*changed || dry_run) {
        *changed = 0;
        return 0;
    }
    kind_list_t next[RM_KIND__ALL];
    copy_lists(s, next, list->size);
    rm_resource_t **replaced = rm_calloc(list->size + 1, sizeof(replaced[0]));
    size_t num_replaced = 0;
    for (size_t i = 0; i != list->size; ++i) {
        rm_resource_t *r = list->entries[i];
        kind_list_t *l = &next[r->kind];
        if (actions[i] == RM_STORE_CONFIGURED) {
            ssize_t at = find_index(l, r->kind, r->ns, r->name);
            replaced[num_replaced++] = l->entries[at];
            l->entries[at] = r;
            l->modified[at] = s->version + 1;
        } else if (actions[i] == RM_STORE_CREATED) {
            l->modified[l->size] = s->version + 1;
            l->entries[l->size++] = r;
        }
    }
    for (int k = 0; k != RM_KIND__ALL; ++k)
        sort_list(&next[k]);
    if (commit(s, next, err, errsz) != 0) {
        for (int k = 0; k != RM_KIND__ALL; ++k)
            free_list(&next[k]);
        free(replaced);
        *changed = 0;
        return -1;
    }
    for (size_t i = 0; i != num_replaced; ++i)
        rm_resource_destroy(replaced[i]);
    free(replaced);
    for (size_t i = 0; i != list->size; ++i)
        if (actions[i] != RM_STORE_UNCHANGED)
            list->entries[i] = NULL;
    return 0;
}

/* Do the filters of a rule refer to the resource (a mirror's Service, an ExtensionRef's FaultInjection)? */
static int
filters_use(void *const *filters, size_t n, int grpc, const char *route_ns, rm_kind_t kind, const char *ns, const char *name)
{
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HTTPRequestMirrorFilter *mirror;
        const Remora__V1__LocalObjectReference *ext;
        rm_route_filter_refs(filters[i], grpc, &mirror, &ext);
        if (kind == RM_KIND_SERVICE && mirror != NULL && mirror->backend_ref != NULL &&
            strcmp(mirror->backend_ref->name, name) == 0 && strcmp(mirror->backend_ref->namespace_, ns) == 0)
            return 1;
        if (kind == RM_KIND_FAULT_INJECTION && ext != NULL && strcmp(ext->name, name) == 0 && strcmp(route_ns, ns) == 0)
            return 1;
    }
    return 0;
}

/* Does a route refer to the resource: a Service as parent, backend or mirror, a FaultInjection by an ExtensionRef? */
static int
route_uses(const rm_resource_t *route, rm_kind_t kind, const char *ns, const char *name)
{
    size_t n_parents, n_rules;
    Remora__V1__ParentReference **parents;
    void **rules;
    int grpc = route->kind == RM_KIND_GRPC_ROUTE;
    if (!rm_route_refs(route, &n_parents, &parents, &n_rules, &rules))
        return 0;
    for (size_t i = 0; kind == RM_KIND_SERVICE && i != n_parents; ++i)
        if (strcmp(parents[i]->name, name) == 0 && strcmp(parents[i]->namespace_, ns) == 0)
            return 1;
    for (size_t i = 0; i != n_rules; ++i) {
        size_t n_backends, n_filters;
        Remora__V1__BackendReference **backends;
        void **filters;
        rm_route_rule_refs(rules[i], grpc, &n_backends, &backends, &n_filters, &filters);
        for (size_t j = 0; kind == RM_KIND_SERVICE && j != n_backends; ++j)
            if (strcmp(backends[j]->name, name) == 0 && strcmp(backends[j]->namespace_, ns) == 0)
                return 1;
        if (filters_use(filters, n_filters, grpc, route->ns, kind, ns, name))
            return 1;
    }
    return 0;
}

/* Do a policy's targetRefs (local to its namespace `policy_ns`) name the resource (kind, ns, name)? */
static int
targets(Remora__V1__PolicyTargetReference *const *refs, size_t n, const char *policy_ns, rm_kind_t kind, const char *ns,
        const char *name)
{
    if (strcmp(policy_ns, ns) != 0)
        return 0;
    for (size_t i = 0; i != n; ++i) {
        /* an empty kind is a Service: resources stored before targets could name routes */
        const char *k = refs[i]->kind[0] != '\0' ? refs[i]->kind : "Service";
        if (strcmp(refs[i]->name, name) == 0 && strcasecmp(k, rm_kind_name(kind)) == 0)
            return 1;
    }
    return 0;
}

/* Does `r` refer to the resource (kind, ns, name)? */
static int
uses(const rm_resource_t *r, rm_kind_t kind, const char *ns, const char *name)
{
    switch (r->kind) {
    case RM_KIND_HTTP_ROUTE:
    case RM_KIND_GRPC_ROUTE:
        return route_uses(r, kind, ns, name);
    case RM_KIND_BACKEND_TRAFFIC_POLICY: {
        const Remora__V1__BackendTrafficPolicySpec *spec = ((const Remora__V1__BackendTrafficPolicy *)r->msg)->spec;
        return spec != NULL && targets(spec->target_refs, spec->n_target_refs, r->ns, kind, ns, name);
    }
    case RM_KIND_RATE_LIMIT_POLICY: {
        const Remora__V1__RateLimitPolicySpec *spec = ((const Remora__V1__RateLimitPolicy *)r->msg)->spec;
        return spec != NULL && targets(spec->target_refs, spec->n_target_refs, r->ns, kind, ns, name);
    }
    case RM_KIND_AUTHORIZATION_POLICY: {
        const Remora__V1__AuthorizationPolicySpec *spec = ((const Remora__V1__AuthorizationPolicy *)r->msg)->spec;
        return spec != NULL && targets(spec->target_refs, spec->n_target_refs, r->ns, kind, ns, name);
    }
    default:
        return 0;
    }
}

int
rm_store_check_delete(const rm_store_t *s, rm_kind_t kind, const char *ns, const char *name, char *err, size_t errsz)
{
    ssize_t at = find_index(&s->kinds[kind], kind, ns, name);
    if (at < 0) {
        snprintf(err, errsz, "%s/%s not found in namespace %s", rm_kind_lower(kind), name, ns);
        return RM_STORE_ENOENT;
    }
    /* as an apply refuses a reference to nothing, a delete refuses to leave one behind */
    size_t users = 0, off = 0;
    off += snprintf(err, errsz, "%s/%s is used by", rm_kind_lower(kind), name);
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        for (size_t i = 0; i != s->kinds[k].size; ++i) {
            const rm_resource_t *r = s->kinds[k].entries[i];
            if (!uses(r, kind, ns, name))
                continue;
            if (users < 5 && off < errsz)
                off += snprintf(err + off, errsz - off, "%s %s/%s (namespace %s)", users != 0 ? "," : "", rm_kind_lower(r->kind),
                                r->name, r->ns);
            ++users;
        }
    }
    if (users != 0) {
        if (off < errsz)
            snprintf(err + off, errsz - off, "%s; delete those or remove the reference first", users > 5 ? " and more" : "");
        return RM_STORE_EINUSE;
    }
    return 0;
}

int
rm_store_delete(rm_store_t *s, rm_kind_t kind, const char *ns, const char *name, char *err, size_t errsz)
{
    int rc = rm_store_check_delete(s, kind, ns, name, err, errsz);
    if (rc != 0)
        return rc;
    ssize_t at = find_index(&s->kinds[kind], kind, ns, name);
    kind_list_t next[RM_KIND__ALL];
    copy_lists(s, next, 0);
    rm_resource_t *victim = next[kind].entries[at];
    memmove(next[kind].entries + at, next[kind].entries + at + 1, (next[kind].size - at - 1) * sizeof(next[kind].entries[0]));
    memmove(next[kind].modified + at, next[kind].modified + at + 1, (next[kind].size - at - 1) * sizeof(next[kind].modified[0]));
    --next[kind].size;
    if (commit(s, next, err, errsz) != 0) {
        for (int k = 0; k != RM_KIND__ALL; ++k)
            free_list(&next[k]);
        return -1;
    }
    log_removal(s, victim, s->seq);
    rm_resource_destroy(victim);
    return 0;
}

const uint8_t *
rm_store_snapshot(const rm_store_t *s, size_t *len)
{
    *len = s->snapshot.len;
    return s->snapshot.base;
}

/* The change sequence of `version`, or 0 when the store does not know it (then no delta from it). */
static uint64_t
seq_of(const rm_store_t *s, uint64_t version)
{
    if (version == 0)
        return 0;
    if (!s->hashed_versions)
        return version <= s->version ? version : 0;
    for (size_t i = 0; i != s->ring_len; ++i) {
        size_t at = (s->ring_next + VERSION_RING - 1 - i) % VERSION_RING;
        if (s->ring_version[at] == version)
            return s->ring_seq[at];
    }
    return 0;
}

static int
cmp_ref(const void *a, const void *b)
{
    const removal_t *x = *(removal_t *const *)a, *y = *(removal_t *const *)b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    int c = strcmp(x->ns, y->ns);
    return c != 0 ? c : strcmp(x->name, y->name);
}

uint8_t *
rm_store_snapshot_view(const rm_store_t *s, const uint8_t *const *view, const uint8_t *id, size_t *len)
{
    rm_rpc_buf_t buf = {0};
    encode_view(&buf, s->version, s->kinds, id != NULL ? id : s->id, view);
    *len = buf.len;
    return buf.base;
}

ssize_t
rm_store_index(const rm_store_t *s, rm_kind_t kind, const char *ns, const char *name)
{
    return find_index(&s->kinds[kind], kind, ns, name);
}

uint64_t
rm_store_modified(const rm_store_t *s, rm_kind_t kind, size_t i)
{
    return s->kinds[kind].modified[i];
}

uint8_t *
rm_store_delta(const rm_store_t *s, uint64_t base_version, const uint8_t *const *view, const uint8_t *id, size_t *len,
               rm_store_delta_info_t *info)
{
    uint64_t base = seq_of(s, base_version);
    if (base == 0 || base < s->horizon || base > s->seq)
        return NULL;
    rm_store_delta_info_t st = {0};
    rm_rpc_buf_t buf = {0};
    if (s->version != 0)
        rm_rpc_buf_append_varint_field(&buf, snapshot_field("version"), s->version);
    rm_rpc_buf_append_bytes_field(&buf, snapshot_field("store_id"), id != NULL ? id : s->id, RM_STORE_ID_BYTES);
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        const kind_list_t *l = &s->kinds[k];
        uint32_t field = snapshot_field(rm_kind_field((rm_kind_t)k));
        for (size_t i = 0; i != l->size; ++i) {
            if (l->modified[i] <= base || (view != NULL && !view[k][i]))
                continue;
            rm_rpc_buf_append_bytes_field(&buf, field, l->entries[i]->bytes, l->entries[i]->len);
            ++st.changed;
        }
    }
    rm_rpc_buf_append_varint_field(&buf, snapshot_field("incremental"), 1);
    rm_rpc_buf_append_varint_field(&buf, snapshot_field("base_version"), base_version);
    /* deletions after the base, of what does not exist again now, each once */
    removal_t **gone = rm_calloc(s->removals_len + 1, sizeof(gone[0]));
    size_t n = 0;
    for (size_t i = 0; i != s->removals_len; ++i) {
        removal_t *e = &s->removals[(s->removals_first + i) % s->removals_max];
        if (e->seq <= base)
            continue;
        ssize_t at = find_index(&s->kinds[e->kind], e->kind, e->ns, e->name);
        if (at < 0 || (view != NULL && !view[e->kind][at]))
            gone[n++] = e;
    }
    qsort(gone, n, sizeof(gone[0]), cmp_ref);
    uint32_t removed_field = snapshot_field("removed");
    for (size_t i = 0; i != n; ++i) {
        if (i != 0 && cmp_ref(&gone[i - 1], &gone[i]) == 0)
            continue;
        Remora__V1__ResourceRef ref = REMORA__V1__RESOURCE_REF__INIT;
        ref.kind = rm_kind_to_proto(gone[i]->kind);
        ref.namespace_ = gone[i]->ns;
        ref.name = gone[i]->name;
        rm_rpc_buf_append_message_field(&buf, removed_field, &ref.base);
        ++st.removed;
    }
    free(gone);
    if (info != NULL)
        *info = st;
    *len = buf.len;
    if (buf.base == NULL)
        buf.base = rm_malloc(1);
    return buf.base;
}
