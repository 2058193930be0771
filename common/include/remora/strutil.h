/*
 * Small string and memory helpers shared by every Remora program. All allocation failures abort
 * (out of memory is not a recoverable condition in Remora).
 */
#ifndef remora__strutil_h
#define remora__strutil_h

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** malloc/calloc/realloc/strdup that abort on failure. */
void *rm_malloc(size_t sz);
void *rm_calloc(size_t n, size_t sz);
void *rm_realloc(void *p, size_t sz);
char *rm_strdup(const char *s);
char *rm_strndup(const char *s, size_t len);

/**
 * Parses "ADDR:PORT", "[V6]:PORT" or ":PORT" (any address) into `ss`. `ADDR` must be an IP
 * literal. Returns 0, or -1 with a reason in `err` (a static string).
 */
int rm_parse_ip_port(const char *s, struct sockaddr_storage *ss, socklen_t *len, const char **err);

/**
 * Splits "HOST:PORT" or "[V6]:PORT" into a newly allocated host (brackets removed) and a port.
 * Returns 0, or -1 with a reason in `err`. The caller frees *host.
 */
int rm_split_host_port(const char *s, char **host, uint16_t *port, const char **err);

/** Formats a socket address as "1.2.3.4:80" or "[::1]:80" into buf (at least 64 bytes). */
const char *rm_format_sockaddr(const struct sockaddr *sa, char *buf, size_t bufsz);

/** Case-insensitive ASCII comparison of a counted string with a C string. */
int rm_lcstreq(const char *s, size_t len, const char *lit);

/**
 * ASCII case-insensitive edit distance between two strings, for "did you mean" hints: returns the
 * distance, or cap + 1 as soon as it is known to exceed `cap` (and for strings over 63 bytes).
 */
size_t rm_edit_distance(const char *a, const char *b, size_t cap);

/** Removes leading and trailing spaces, tabs, CRs and LFs in place (the text moves to `s`); returns the length left. */
size_t rm_trim_space(char *s);

/**
 * Reads a whole (small) file into a NUL-terminated malloc'ed string: a token, a PEM bundle. Returns it, or NULL
 * with "PATH: reason" in `err` (missing, unreadable, empty, larger than `max` bytes).
 */
char *rm_read_file(const char *path, size_t max, char *err, size_t errsz);

/** gRPC's status codes by name, "OK" (0) to "UNAUTHENTICATED" (16): the one table of every program. */
#define RM_GRPC_NUM_STATUSES 17
extern const char *const rm_grpc_status_names[RM_GRPC_NUM_STATUSES];
/** The name of a gRPC status code; "UNKNOWN" for a code out of range. */
const char *rm_grpc_status_name(int code);

/** The most ports a port list may hold once its ranges are expanded (rm_parse_port_list). */
#define RM_PORT_LIST_MAX 1024

/**
 * Parses a comma-separated list of TCP ports and inclusive ranges, "25, 3306,9000-9010" (blanks
 * around an element allowed; "" or only blanks: no port), into out[], sorted, duplicates dropped,
 * at most `max` ports once ranges are expanded. Returns the number of ports, or -1 with the reason
 * in `err`, prefixed with "WHAT: " unless `what` is NULL. The one grammar of every port list of the
 * agent's flags, remora-init's and the injector's annotations.
 */
long rm_parse_port_list(const char *s, const char *what, uint16_t *out, size_t max, char *err, size_t errsz);

/** Writes sorted ports as a list rm_parse_port_list reads, runs as ranges ("25,9000-9010"); -1 if bufsz is too small. */
int rm_format_port_list(const uint16_t *ports, size_t n, char *buf, size_t bufsz);

/** FNV-1a, 64 bits, of `len` bytes, continuing from `h` (RM_FNV1A_INIT to start): hash tables and keys. */
#define RM_FNV1A_INIT 0xcbf29ce484222325ull
static inline uint64_t
rm_fnv1a(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i != len; ++i)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/** Monotonic clock in milliseconds / microseconds. */
uint64_t rm_now_ms(void);
uint64_t rm_now_us(void);

#endif
