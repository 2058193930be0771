#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include "remora/log.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "http2/h2conn.h"
#include "obs/stats.h"
#include "net/sockio.h"

static void do_flush(rm_flushable_t *f);
static void on_read(h2o_socket_t *sock, const char *err);
static void release_input(h2o_socket_t *sock);

const char *const rm_h2_abuse_names[RM_H2_ABUSE_KINDS] = {"premature_reset", "empty_frames",     "priority",
                                                          "window_update",   "outbound_control", "outbound_frames"};

/*
 * nghttp2's allocator: size classes of 16, 32, 48, 64, 96, ... 3072, 4096 bytes (powers of two and
 * halfway between them) with a 16-byte header that records the class, so free and realloc need no
 * lookup. The halfway classes matter for the blocks every session holds for its whole life (the
 * session 2928 bytes, the two HPACK rings 1024, the stream map 4096: nghttp2 1.52): with powers of
 * two only they took 12.0 KiB instead of 9.1 (docs/hardening.md, "Memory per connection").
 */
#define NUM_CLASSES 16
#define MAX_CLASS_SIZE 4096
#define BLOCK_HEADER 16
/* the byte after the class in a block's header: a block of a class, or a malloc'd one; a slot (below) has no header of
 * its own, and the 16 bytes before it, the unused end of the slot before, always read as zeros */
#define TAG_CLASS 1
#define TAG_LARGE 2
/* freed blocks kept per class: 512, or 512 KiB of the larger classes (3.9 MiB per worker at most, as much as the 512 of
 * each power of two kept before the halfway classes) */
#define MAX_CACHED_PER_CLASS 512
#define MAX_CACHED_BYTES_PER_CLASS (512 * 1024)

static const uint32_t class_size[NUM_CLASSES] = {16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096};
/* MAX_CACHED_PER_CLASS, then MAX_CACHED_BYTES_PER_CLASS / class_size from 1536 bytes on */
static const uint16_t max_cached[NUM_CLASSES] = {512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 341, 256, 170, 128};

static __thread struct {
    void *head[NUM_CLASSES];
    size_t count[NUM_CLASSES];
} block_cache;

/* The smallest class holding `size` bytes (size <= MAX_CLASS_SIZE): 2^(b+1) or 1.5 * 2^b where 2^b < size <= 2^(b+1). */
static unsigned
compute_class(size_t size)
{
    if (size <= 16)
        return 0;
    unsigned b = 63 - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    if (b >= 5 && size <= (size_t)3 << (b - 1))
        return 2 * b - 8; /* 1.5 * 2^b */
    return 2 * b - 7;     /* 2^(b+1) */
}

/* class by (size + 15) / 16: every class size is a multiple of 16 (filled once, by rm_h2_mem) */
static uint8_t class_by_16[MAX_CLASS_SIZE / 16 + 1];

static void
init_classes(void)
{
    for (size_t i = 0; i <= MAX_CLASS_SIZE / 16; ++i)
        class_by_16[i] = (uint8_t)compute_class(i * 16);
}

static inline unsigned
class_of(size_t size)
{
    return class_by_16[(size + 15) >> 4];
}

/*
 * Two blocks every session allocates when it is created hold nothing an idle connection needs, yet would stay resident:
 * - the frame buffer, one chunk of 16394 bytes (NGHTTP2_FRAMEBUF_CHUNKLEN of nghttp2 1.52: a frame header, a pad length
 *   byte and 16 KiB of payload), written only inside nghttp2_session_mem_send: between frames nothing in it is live, yet
 *   its pages stay resident once a frame was written (the first page always: every frame starts there);
 * - the stream map's table, 4096 zeroed bytes (256 buckets of 16 bytes in nghttp2 1.52), written only while a stream
 *   is open: removing a stream zeroes its bucket, so the table of a connection with no stream is all zeros again.
 * So both come from a slot of a per-worker region reserved once (SLOTS slots of SLOT_SIZE bytes, page-aligned, no
 * header: a pointer in the region is a slot's frame buffer or map): untouched pages of the region read as zeros without
 * being resident, so the map costs nothing until a stream is opened (calloc's zeroing is skipped: the pages are zeros),
 * and rm_h2conn_release_idle gives an idle connection's pages back to the kernel (MADV_DONTNEED: they read as zeros and
 * are faulted in again by the next frame): the frame buffer's always, the map's when it is all zeros (no stream
 * left, so dropping it changes nothing). A freed block's pages are given back too. Past SLOTS sessions per worker, or
 * if the region cannot be reserved, the blocks come from malloc and stay resident (docs/hardening.md, "Memory per
 * connection").
 */
#define FRAMEBUF_AREA (20 * 1024)
#define MAP_AREA 4096
/* a slot: the frame buffer at 0, the map at FRAMEBUF_AREA, then a page never used, so that the 16 bytes before every
 * block in the region (read by mem_free as a header) are zeros never written: the unused end of the frame buffer's area
 * before a map, that spare page before the next slot's frame buffer */
#define SLOT_SIZE (FRAMEBUF_AREA + MAP_AREA + 4096)
#define SLOTS 16384 /* 448 MiB of address space per worker, reserved without memory (MAP_NORESERVE) */
#define SLOT_MIN_SIZE (16 * 1024)
/* slot i is at base + (i + 1) * SLOT_SIZE: the first one is never used, so that the 16 bytes before every slot are in the
 * region (read by mem_free as a header: zeros, never written) */
#define REGION_SIZE ((size_t)(SLOTS + 1) * SLOT_SIZE)
/* slots.parts[i]: the blocks of slot i in use */
#define PART_FRAMEBUF 1
#define PART_MAP 2

static __thread struct {
    unsigned char *base; /* NULL: not reserved yet */
    int failed;
    rm_h2conn_t **owner; /* per slot: the connection whose blocks it holds, or NULL */
    uint8_t *parts;
    uint32_t *free_list;
    uint32_t num_free, used; /* slots on free_list; slots ever handed out (the rest are untouched) */
} slots;

/* the connection whose session is being created (rm_h2conn_session_new): its frame buffer takes a slot */
static __thread rm_h2conn_t *creating;

static inline int
in_slots(const void *p)
{
    return slots.base != NULL && (uintptr_t)((const unsigned char *)p - slots.base) < REGION_SIZE;
}

/* The block `part` of the slot of the session being created (a slot is taken for it by its first block: its pages are all
 * zeros, fresh or given back), or NULL (no slot, or that block already taken). */
static void *
slot_alloc(unsigned part)
{
    if (creating->_framebuf == NULL) {
        if (slots.base == NULL) {
            if (slots.failed)
                return NULL;
            void *base = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            /* large arrays: calloc maps them, their pages are touched only as slots are used */
            slots.owner = calloc(SLOTS, sizeof(*slots.owner));
            slots.parts = calloc(SLOTS, sizeof(*slots.parts));
            slots.free_list = calloc(SLOTS, sizeof(*slots.free_list));
            if (base == MAP_FAILED || slots.owner == NULL || slots.parts == NULL || slots.free_list == NULL) {
                if (base != MAP_FAILED)
                    munmap(base, REGION_SIZE);
                free(slots.owner);
                free(slots.parts);
                free(slots.free_list);
                slots.owner = NULL;
                slots.parts = NULL;
                slots.free_list = NULL;
                slots.failed = 1;
                return NULL;
            }
            slots.base = base;
        }
        uint32_t i;
        if (slots.num_free != 0)
            i = slots.free_list[--slots.num_free];
        else if (slots.used < SLOTS)
            i = slots.used++;
        else
            return NULL;
        slots.owner[i] = creating;
        slots.parts[i] = 0;
        creating->_framebuf = slots.base + (size_t)(i + 1) * SLOT_SIZE;
    }
    unsigned char *slot = creating->_framebuf;
    uint32_t i = (uint32_t)((slot - slots.base) / SLOT_SIZE) - 1;
    if ((slots.parts[i] & part) != 0)
        return NULL;
    slots.parts[i] |= (uint8_t)part;
    return part == PART_MAP ? slot + FRAMEBUF_AREA : slot;
}

static void
slot_free(void *p)
{
    size_t off = (size_t)((unsigned char *)p - slots.base);
    uint32_t i = (uint32_t)(off / SLOT_SIZE) - 1;
    int map = off % SLOT_SIZE == FRAMEBUF_AREA;
    madvise(p, map ? MAP_AREA : FRAMEBUF_AREA, MADV_DONTNEED); /* zeros again, for the slot's next session */
    slots.parts[i] &= (uint8_t) ~(map ? PART_MAP : PART_FRAMEBUF);
    if (slots.parts[i] != 0)
        return; /* the session lives on: its map grew into a malloc'd table */
    if (slots.owner[i] != NULL)
        slots.owner[i]->_framebuf = NULL;
    slots.owner[i] = NULL;
    slots.free_list[slots.num_free++] = i;
}

static void *
mem_malloc(size_t size, void *user)
{
    unsigned char *block;
    if (size > MAX_CLASS_SIZE) {
        if (creating != NULL && size > SLOT_MIN_SIZE && size <= FRAMEBUF_AREA && (block = slot_alloc(PART_FRAMEBUF)) != NULL)
            return block;
        if (size > SIZE_MAX - BLOCK_HEADER || (block = malloc(size + BLOCK_HEADER)) == NULL)
            return NULL; /* nghttp2 reports NGHTTP2_ERR_NOMEM */
        *(size_t *)block = size;
        block[sizeof(size_t)] = TAG_LARGE;
        return block + BLOCK_HEADER;
    }
    unsigned k = class_of(size);
    if (block_cache.head[k] != NULL) {
        block = block_cache.head[k];
        block_cache.head[k] = *(void **)block;
        --block_cache.count[k];
    } else if ((block = malloc(class_size[k] + BLOCK_HEADER)) == NULL) {
        return NULL;
    }
    *(size_t *)block = k;
    block[sizeof(size_t)] = TAG_CLASS;
    return block + BLOCK_HEADER;
}

static void
mem_free(void *ptr, void *user)
{
    if (ptr == NULL)
        return;
    unsigned char *block = (unsigned char *)ptr - BLOCK_HEADER;
    if (block[sizeof(size_t)] != TAG_CLASS) {
        if (block[sizeof(size_t)] == TAG_LARGE)
            free(block);
        else if (in_slots(ptr))
            slot_free(ptr);
        else
            rm_fatal("nghttp2 freed a block it did not allocate");
        return;
    }
    size_t k = *(size_t *)block;
    if (block_cache.count[k] >= max_cached[k] || RM_SANITIZING) {
        free(block);
        return;
    }
    *(void **)block = block_cache.head[k];
    block_cache.head[k] = block;
    ++block_cache.count[k];
}

static void *
mem_calloc(size_t n, size_t size, void *user)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p;
    /* the stream map's table (the one zeroed page-sized block of a new session): zeros that stay untouched until used */
    if (creating != NULL && n * size == MAP_AREA && (p = slot_alloc(PART_MAP)) != NULL)
        return p;
    p = mem_malloc(n * size, user);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

static void *
mem_realloc(void *ptr, size_t size, void *user)
{
    if (ptr == NULL)
        return mem_malloc(size, user);
    unsigned char *block = (unsigned char *)ptr - BLOCK_HEADER;
    size_t capacity = block[sizeof(size_t)] == TAG_CLASS                             ? class_size[*(size_t *)block]
                      : block[sizeof(size_t)] == TAG_LARGE                           ? *(size_t *)block
                      : (size_t)((unsigned char *)ptr - slots.base) % SLOT_SIZE == 0 ? FRAMEBUF_AREA
                                                                                     : MAP_AREA;
    if (size <= capacity)
        return ptr;
    void *p = mem_malloc(size, user);
    if (p == NULL)
        return NULL;
    memcpy(p, ptr, capacity);
    mem_free(ptr, user);
    return p;
}

static nghttp2_mem h2_mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

nghttp2_mem *
rm_h2_mem(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_classes);
    return &h2_mem;
}

void
rm_h2_mem_thread_exit(void)
{
    for (unsigned k = 0; k != NUM_CLASSES; ++k) {
        while (block_cache.head[k] != NULL) {
            void *next = *(void **)block_cache.head[k];
            free(block_cache.head[k]);
            block_cache.head[k] = next;
        }
        block_cache.count[k] = 0;
    }
    if (slots.base != NULL && slots.num_free == slots.used) { /* else a session outlives its worker: keep its slot */
        munmap(slots.base, REGION_SIZE);
        free(slots.owner);
        free(slots.parts);
        free(slots.free_list);
        memset(&slots, 0, sizeof(slots));
    }
}

int
rm_h2conn_session_new(rm_h2conn_t *conn, int server, const nghttp2_session_callbacks *callbacks, void *user_data,
                      const nghttp2_option *options)
{
    creating = conn;
    int r = server ? nghttp2_session_server_new3(&conn->ng, callbacks, user_data, options, rm_h2_mem())
                   : nghttp2_session_client_new3(&conn->ng, callbacks, user_data, options, rm_h2_mem());
    creating = NULL;
    return r;
}

void
rm_h2conn_release_idle(rm_h2conn_t *conn)
{
    /* the frame buffer holds nothing live once nghttp2_session_mem_send has said it has nothing more to send */
    if (conn->dead || conn->ng == NULL || !conn->_send_idle || (conn->sock != NULL && h2o_socket_is_writing(conn->sock)))
        return;
    if (conn->_framebuf != NULL) {
        /* the map's page too when no stream is left in it (all zeros: dropping it changes nothing) */
        unsigned char *slot = conn->_framebuf;
        uint32_t i = (uint32_t)((slot - slots.base) / SLOT_SIZE) - 1;
        static unsigned char zeros[MAP_AREA]; /* .bss: read, never written (the zero page, not resident) */
        int empty = (slots.parts[i] & PART_MAP) != 0 && memcmp(slot + FRAMEBUF_AREA, zeros, MAP_AREA) == 0;
        madvise(slot, empty ? FRAMEBUF_AREA + MAP_AREA : FRAMEBUF_AREA, MADV_DONTNEED);
    }
    if (conn->sock != NULL)
        release_input(conn->sock);
}

size_t
rm_h2_format_u64(char *buf, uint64_t v)
{
    if (v < 1000) {
        /* statuses, small lengths: no division loop */
        size_t n = v >= 100 ? 3 : v >= 10 ? 2 : 1;
        buf[n] = '\0';
        for (size_t i = n; i-- != 0; v /= 10)
            buf[i] = (char)('0' + v % 10);
        return n;
    }
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i != n; ++i)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}

void
rm_h2conn_init(rm_h2conn_t *conn, rm_worker_t *worker, h2o_socket_t *sock, void (*on_dead)(rm_h2conn_t *, const char *))
{
    conn->worker = worker;
    conn->sock = sock;
    conn->on_dead = on_dead;
    h2o_buffer_init(&conn->_out, &rm_pipe_buffer_prototype);
    h2o_buffer_init(&conn->_inflight, &rm_pipe_buffer_prototype);
    conn->_flush.cb = do_flush;
}

void
rm_h2conn_fail(rm_h2conn_t *conn, const char *reason)
{
    if (conn->dead)
        return;
    conn->dead = 1;
    if (conn->sock != NULL)
        h2o_socket_read_stop(conn->sock);
    conn->on_dead(conn, reason);
}

/*
 * An empty input buffer goes back to its prototype (whose recycle list keeps a few per worker), so an idle connection
 * holds none: h2o 2.2.5 frees a buffer consumed to its end, but not one reserved for a read that found nothing (libuv
 * reserves before each read and reports EAGAIN as an empty read). The next read takes one again.
 */
static void
release_input(h2o_socket_t *sock)
{
    if (sock->input->size == 0 && sock->input->bytes != NULL) {
        h2o_buffer_prototype_t *prototype = sock->input->_prototype;
        h2o_buffer_dispose(&sock->input);
        h2o_buffer_init(&sock->input, prototype);
    }
}

void
rm_h2_closed_init(rm_h2_closed_t *c)
{
    memset(c, 0, sizeof(*c));
    c->skip = NGHTTP2_CLIENT_MAGIC_LEN;
}

/* 1 if the frame of header `h` is DATA or HEADERS on a noted stream; notes the stream of a client's RST_STREAM */
static inline int
closed_frame(rm_h2_closed_t *c, const uint8_t *h)
{
    uint8_t type = h[3];
    if (type > NGHTTP2_RST_STREAM || type == NGHTTP2_PRIORITY)
        return 0;
    uint32_t id = ((uint32_t)h[5] & 0x7f) << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
    if ((id & 1) == 0)
        return 0; /* the connection's own frames, or a server id: nghttp2 judges them */
    int32_t *slot = &c->ids[(id >> 1) % RM_H2_CLOSED_IDS];
    if (type == NGHTTP2_RST_STREAM) {
        /* the client's side ends here, whatever nghttp2 makes of the frame (on an idle stream it ends the connection) */
        *slot = (int32_t)id;
        return 0;
    }
    return *slot == (int32_t)id;
}

static inline size_t
frame_end(const uint8_t *h)
{
    return 9 + ((size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2]);
}

size_t
rm_h2_closed_scan(rm_h2_closed_t *c, const uint8_t *data, size_t len)
{
    size_t off = c->skip; /* where the next frame header starts; beyond `len` while a payload goes on */
    if (c->hdr_len != 0) {
        /* the rest of a header split between reads (its frame begins before this read: nghttp2 has the first bytes) */
        size_t want = 9 - (size_t)c->hdr_len, n = want < len ? want : len;
        memcpy(c->hdr + c->hdr_len, data, n);
        c->hdr_len += (uint8_t)n;
        if (c->hdr_len != 9)
            return len;
        c->hdr_len = 0;
        if (closed_frame(c, c->hdr))
            return 0;
        off = n + frame_end(c->hdr) - 9;
    }
    while (off + 9 <= len) {
        const uint8_t *h = data + off;
        if (closed_frame(c, h))
            return off;
        off += frame_end(h);
    }
    if (off >= len) {
        c->skip = (uint32_t)(off - len);
    } else {
        c->skip = 0;
        c->hdr_len = (uint8_t)(len - off);
        memcpy(c->hdr, data + off, len - off);
    }
    return len;
}

static void
read_batch(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    if (err != NULL) {
        rm_h2conn_fail(conn, err);
        return;
    }
    size_t len = sock->input->size;
    if (conn->bytes_rx_stat != NULL)
        RM_STAT_ADD(*conn->bytes_rx_stat, len);
    /* with a frame on a stream the client closed, only the frames before it are parsed */
    size_t parse = conn->closed != NULL ? rm_h2_closed_scan(conn->closed, (const uint8_t *)sock->input->bytes, len) : len;
    ssize_t r = nghttp2_session_mem_recv(conn->ng, (const uint8_t *)sock->input->bytes, parse);
    if (r >= 0 && parse != len) {
        if (!conn->dead && !conn->lingering) {
            /* RFC 9113 5.1: a connection error, as nghttp2 raises it for the closed streams it keeps */
            rm_log_debug("h2", "DATA or HEADERS on a stream the client closed");
            nghttp2_session_terminate_session(conn->ng, NGHTTP2_STREAM_CLOSED);
            h2o_socket_read_stop(sock);
            rm_h2conn_schedule_flush(conn);
        }
        h2o_buffer_consume(&sock->input, len);
        release_input(sock);
        return;
    }
    if (r < 0) {
        /* a connection error: make sure a GOAWAY is queued (nghttp2 queues one itself for protocol
         * errors, not for callback failures), send it, then end once nothing is left to write */
        rm_log_debug("h2", "session error: %s", nghttp2_strerror((int)r));
        if (r == NGHTTP2_ERR_FLOODED && conn->on_abuse != NULL) {
            /* nghttp2's queue of ACKs and RST_STREAMs (nghttp2_option_set_max_outbound_ack) is full: the peer
             * sends SETTINGS, PINGs or reset-provoking frames and does not read the answers */
            h2o_buffer_consume(&sock->input, len);
            release_input(sock);
            conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_CONTROL);
            return;
        }
        nghttp2_session_terminate_session(conn->ng, r == NGHTTP2_ERR_BAD_CLIENT_MAGIC || r == NGHTTP2_ERR_FLOODED
                                                        ? NGHTTP2_PROTOCOL_ERROR
                                                        : NGHTTP2_INTERNAL_ERROR);
        h2o_buffer_consume(&sock->input, len);
        release_input(sock);
        if (!conn->lingering) /* else a callback chose to linger: input goes on being read and dropped */
            h2o_socket_read_stop(sock);
        rm_h2conn_schedule_flush(conn);
        return;
    }
    h2o_buffer_consume(&sock->input, (size_t)r);
    release_input(sock);
    if (conn->after_recv != NULL && !conn->dead)
        conn->after_recv(conn);
    /* replies queued inside nghttp2 (HEADERS, RST_STREAM, ACKs, WINDOW_UPDATE) plus those pulled and not written */
    if (conn->max_out_frames != 0 && conn->on_abuse != NULL && !conn->dead &&
        nghttp2_session_get_outbound_queue_size(conn->ng) + conn->_out_frames + conn->_inflight_frames > conn->max_out_frames) {
        conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_FRAMES);
        return;
    }
    rm_h2conn_schedule_flush(conn);
}

static void
on_read_discard(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    if (err != NULL) {
        rm_h2conn_fail(conn, err); /* the peer closed (or failed): nothing left to wait for */
        return;
    }
    h2o_buffer_consume(&sock->input, sock->input->size);
    release_input(sock);
}

void
rm_h2conn_linger(rm_h2conn_t *conn)
{
    if (conn->dead || conn->lingering || conn->sock == NULL)
        return;
    conn->lingering = 1;
    conn->sock->data = conn;
    h2o_socket_read_start(conn->sock, on_read_discard);
}

void
rm_h2conn_start_reading(rm_h2conn_t *conn)
{
    conn->sock->data = conn;
    h2o_socket_read_start(conn->sock, on_read);
    if (conn->sock->input->size != 0)
        on_read(conn->sock, NULL);
}

void
rm_h2conn_schedule_flush(rm_h2conn_t *conn)
{
    if (!conn->dead)
        rm_worker_schedule_flush(conn->worker, &conn->_flush);
}

static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    h2o_buffer_consume(&conn->_inflight, conn->_inflight->size);
    conn->_inflight_frames = 0;
    if (err != NULL) {
        rm_h2conn_fail(conn, err);
        return;
    }
    do_flush(&conn->_flush);
}

/* direct writes per flush before the rest waits for the loop (h2o's write), so that one busy connection does not keep
 * the worker from the others */
#define MAX_DIRECT_WRITES 4

static int fill_out(rm_h2conn_t *conn);

static void
on_read(h2o_socket_t *sock, const char *err)
{
    rm_clock_batch_begin();
    read_batch(sock, err);
    rm_clock_batch_end();
}

static void
flush_batch(rm_flushable_t *f)
{
    rm_h2conn_t *conn = H2O_STRUCT_FROM_MEMBER(rm_h2conn_t, _flush, f);
    if (conn->dead || h2o_socket_is_writing(conn->sock))
        return; /* the write callback flushes again */
    for (int direct = 0;; ++direct) {
        if (!fill_out(conn))
            return;
        if (conn->_out->size == 0)
            break;
        /* swap: the filled buffer goes out, the empty one collects the next frames */
        h2o_buffer_t *tmp = conn->_inflight;
        conn->_inflight = conn->_out;
        conn->_out = tmp;
        conn->_inflight_frames = conn->_out_frames;
        conn->_out_frames = 0;
        if (conn->bytes_tx_stat != NULL)
            RM_STAT_ADD(*conn->bytes_tx_stat, conn->_inflight->size);
        size_t done =
            direct < MAX_DIRECT_WRITES ? rm_socket_write_now(conn->sock, conn->_inflight->bytes, conn->_inflight->size) : 0;
        if (done == conn->_inflight->size) {
            h2o_buffer_consume(&conn->_inflight, done);
            conn->_inflight_frames = 0;
            continue;
        }
        h2o_buffer_consume(&conn->_inflight, done);
        h2o_iovec_t buf = h2o_iovec_init(conn->_inflight->bytes, conn->_inflight->size);
        h2o_socket_write(conn->sock, &buf, 1, on_write_complete);
        return;
    }
    if (!nghttp2_session_want_read(conn->ng) && !nghttp2_session_want_write(conn->ng) && !conn->lingering)
        rm_h2conn_fail(conn, "session finished");
}

static void
do_flush(rm_flushable_t *f)
{
    rm_clock_batch_begin();
    flush_batch(f);
    rm_clock_batch_end();
}

/* Moves nghttp2's pending frames into conn->_out, up to RM_H2_OUT_HIGH_WATER. Returns 0 if the connection failed. */
static int
fill_out(rm_h2conn_t *conn)
{
    while (conn->_out->size < RM_H2_OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(conn->ng, &data);
        if (n < 0) {
            rm_h2conn_fail(conn, nghttp2_strerror((int)n));
            return 0;
        }
        if (n == 0) {
            conn->_send_idle = 1;
            break;
        }
        conn->_send_idle = 0;
        h2o_iovec_t dst = h2o_buffer_reserve(&conn->_out, n);
        if (dst.base == NULL)
            rm_fatal("out of memory");
        memcpy(dst.base, data, n);
        conn->_out->size += n;
        /* nghttp2_session_mem_send returns one frame per call */
        if (++conn->_out_frames + conn->_inflight_frames > conn->max_out_frames && conn->max_out_frames != 0 &&
            conn->on_abuse != NULL) {
            conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_FRAMES);
            return 0;
        }
    }
    return 1;
}

void
rm_h2conn_dispose(rm_h2conn_t *conn)
{
    conn->dead = 1;
    rm_worker_cancel_flush(conn->worker, &conn->_flush);
    if (conn->sock != NULL) {
        rm_socket_close(conn->sock);
        conn->sock = NULL;
    }
    if (conn->ng != NULL) {
        nghttp2_session_del(conn->ng);
        conn->ng = NULL;
    }
    h2o_buffer_dispose(&conn->_out);
    h2o_buffer_dispose(&conn->_inflight);
}

void
rm_h2_nvs_grow(h2o_mem_pool_t *pool, rm_h2_nvs_t *nvs)
{
    size_t cap = nvs->cap * 2;
    nghttp2_nv *nva = h2o_mem_alloc_pool(pool, cap * sizeof(*nva));
    memcpy(nva, nvs->nva, nvs->len * sizeof(*nva));
    nvs->nva = nva;
    nvs->cap = cap;
}

void
rm_h2_end_data(nghttp2_session *ng, int32_t stream_id, h2o_mem_pool_t *pool, const rm_headers_t *trailers, int copy,
               uint32_t *data_flags)
{
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers == NULL || trailers->size == 0)
        return;
    rm_h2_nvs_t nvs;
    rm_h2_nvs_init(&nvs, copy);
    for (size_t i = 0; i != trailers->size; ++i)
        rm_h2_nvs_add(pool, &nvs, trailers->entries[i].name.base, trailers->entries[i].name.len, trailers->entries[i].value.base,
                      trailers->entries[i].value.len);
    if (nghttp2_submit_trailer(ng, stream_id, nvs.nva, nvs.len) == 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
}

static void
h2_thread_exit(rm_worker_t *worker, void *state)
{
    rm_h2_mem_thread_exit();
}

const rm_worker_module_t rm_http2_module = {
    .name = "http2",
    .thread_exit = h2_thread_exit,
};
