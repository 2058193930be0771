/*
 * Bootstrap tokens (docs/identity.md): a secret that `remoractl token create` obtains for one
 * workload identity (namespace, service account) and that an agent presents with its CSR.
 *
 * A token is "rmt1." followed by 64 hex digits (256 random bits); only its SHA-256 is stored.
 * - Its ttl bounds the time to its first use.
 * - The first successful Certify binds it to the agent's node id; another node presenting it is
 *   refused (RM_TOKEN_IN_USE).
 * - The bound node renews with it as long as the last certificate issued for it has not expired
 *   (a token whose chain of certificates lapsed is refused: RM_TOKEN_LAPSED).
 * Tokens never used within their ttl and tokens whose last certificate expired more than a day ago
 * are dropped from the file at the next write.
 *
 * Durable: DIR/tokens.db, one line per token ("v1 <sha256-hex> <ns> <sa> <expires> <node|-> <cert-not-after>"),
 * rewritten as a whole (tmp, fsync, rename) before any change is acknowledged; mode 0600.
 *
 * Not thread-safe: the server's thread owns it. Errors are returned with a message.
 */
#ifndef remora_control__token_h
#define remora_control__token_h

#include <stddef.h>
#include <stdint.h>

typedef struct st_rm_tokens_t rm_tokens_t;

#define RM_TOKENS_FILE "tokens.db"
#define RM_TOKEN_PREFIX "rmt1."
#define RM_TOKEN_LEN (5 + 64)
#define RM_TOKEN_MAX_TTL_S (30 * 24 * 3600)
#define RM_TOKEN_DEFAULT_TTL_S 3600
/* at most this many tokens are kept; creating one more is refused until some expire */
#define RM_TOKENS_MAX 100000

typedef enum en_rm_token_result_t {
    RM_TOKEN_OK = 0,
    RM_TOKEN_UNKNOWN,
    RM_TOKEN_EXPIRED,
    RM_TOKEN_IN_USE,
    RM_TOKEN_LAPSED,
} rm_token_result_t;

/** Opens (and loads) DIR/tokens.db. NULL with the reason when the file exists but cannot be read or parsed. */
rm_tokens_t *rm_tokens_open(const char *dir, char *err, size_t errsz);
void rm_tokens_close(rm_tokens_t *tokens);
size_t rm_tokens_count(const rm_tokens_t *tokens);

/** 1 when `s` is a DNS-1123 label (a namespace or service-account name). */
int rm_token_valid_name(const char *s);

/**
 * Creates a token for (ns, sa) usable for the first time until now + ttl_s. Writes it into `token`
 * (RM_TOKEN_LEN + 1 bytes). Returns 0, or -1 with the reason (too many tokens, write failure).
 */
int rm_tokens_create(rm_tokens_t *tokens, const char *ns, const char *sa, uint32_t ttl_s, char *token, int64_t *expires, char *err,
                     size_t errsz);

/**
 * Checks `token` for `node_id` without changing anything (`node_id` NULL: for any node, the
 * binding is not checked). RM_TOKEN_OK sets *ns and *sa (owned by
 * the store, valid until the next change).
 */
rm_token_result_t rm_tokens_check(rm_tokens_t *tokens, const char *token, const char *node_id, const char **ns, const char **sa,
                                  char *why, size_t whysz);

/**
 * Records that a certificate valid until `not_after` was issued to `node_id` with `token` (checked
 * with rm_tokens_check just before): binds the token to the node. Returns 0, or -1 when the file
 * could not be written (then nothing changed: the caller must not hand out the certificate).
 */
int rm_tokens_record(rm_tokens_t *tokens, const char *token, const char *node_id, int64_t not_after, char *err, size_t errsz);

/*
 * The admin credential (docs/identity.md, "The control plane's own doors"): the secret remoractl
 * presents on the Admin service as `authorization: Bearer <token>`. "rma1." followed by 64 hex
 * digits, a prefix no bootstrap token ("rmt1.") has, so that neither can be taken for the other.
 */
#define RM_ADMIN_TOKEN_FILE "admin.token"
#define RM_ADMIN_TOKEN_PREFIX "rma1."
#define RM_ADMIN_TOKEN_LEN (5 + 64)

/** 1 when `s` has the admin credential's shape (prefix and 64 lower-case hex digits). */
int rm_admin_token_valid(const char *s);

/**
 * The admin credential: read from `file` when given (surrounding whitespace ignored; it must have
 * the shape above), else from DIR/admin.token, which is created (random, mode 0600, written to a
 * temporary file, fsynced and renamed) when missing. Writes it into `token` (RM_ADMIN_TOKEN_LEN + 1
 * bytes). Returns 0, or -1 with the reason naming the file.
 */
int rm_admin_token_load(const char *state_dir, const char *file, char *token, char *err, size_t errsz);

/** Compares two strings in time independent of where they differ. 1 when equal. */
int rm_token_equal(const char *a, const char *b);

#endif
