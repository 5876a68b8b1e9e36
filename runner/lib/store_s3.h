/* store_s3.h - the "s3" artifact store backend (S3-compatible object stores)
 *
 *   artifacts: "s3://BUCKET/ROOT?endpoint=URL&region=R&role=ARN&credentials=FILE"
 *
 * optional: &sse=AES256: server-side encryption (SSE-S3) requested on every
 * object of a sealed transaction (store_txn_seal), on top of the runner's
 * own sealing (SSE-KMS is refused: curl 7.88 signs its headers in the wrong
 * order); &owner=ID: the bucket owner's canonical id,
 * granted full control of every object instead of the canned
 * bucket-owner-full-control ACL (which also lets the runner's own user read
 * what its sessions wrote, on RGW); &part_mb=N (5..512, default 8): the
 * multipart part size; &session_max=S (900..43200, default 3600): the longest
 * session the role allows. ROOT may be empty; BUCKET follows S3's DNS rules.
 *
 * Credentials: FILE is JSON {"access_key_id": "...", "secret_access_key":
 * "..."}, readable by its owner only. These are the runner's own: they are
 * used for nothing but STS AssumeRole (POST to the endpoint, SigV4 service
 * `sts`). Every transaction assumes ARN anew with a session policy allowing
 * only s3:PutObject and s3:AbortMultipartUpload on
 * arn:aws:s3:::BUCKET/ROOT/<the transaction's prefix>* (apps/<app>/<commit>/
 * for a job's artifacts, logs/apps/<app>/<job>/ for its log), for as long as
 * the job may still run (store_set_expiry), at least 900 s (STS's minimum).
 * A read (store_get) assumes it with s3:GetObject on the key's prefix only.
 * The store enforces the prefix, not only the runner.
 *
 * Staging: each object is a multipart upload at its final key, started when
 * its first part is full or the object ends, and completed only at commit,
 * after the fence check: an incomplete upload is invisible to readers and
 * listings. Commit completes every upload, copies hard links (with a second
 * session that may also read the prefix; where the store cannot copy, as
 * RGW 16 for objects it encrypted, the link is read back and uploaded
 * again), and writes the index last with one PUT. Abort aborts the uploads; a crashed runner's are removed by the
 * bucket's lifecycle rule (docs/operations.md). Requests that fail with a
 * 5xx, 429 or a transport error are retried with backoff; other 4xx are not,
 * except ExpiredToken, which assumes the role again once. Keys of an earlier
 * run of the same commit that the new index lacks stay in the bucket (the
 * index is what readers follow); the same content rewrites the same keys.
 */
#ifndef BUILDVM_STORE_S3_H
#define BUILDVM_STORE_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "error.h"
#include "store.h"

#define S3_URL_MAX 8192
#define S3_REPLY_MAX (64u * 1024) /* an XML reply we parse */
#define S3_TOKEN_MAX 4096         /* a session token */
#define S3_MIN_SESSION_S 900      /* STS's minimum DurationSeconds */
#define S3_MAX_PARTS 10000

struct s3_location
{
  char *bucket;
  char *root;     /* "" or "a/b" (no leading or trailing slash) */
  char *endpoint; /* scheme://host[:port], no trailing slash */
  char *region;
  char *role;        /* the role's ARN */
  char *credentials; /* the runner's key file */
  char *sse;         /* NULL or "AES256" */
  char *owner;
  uint64_t part_size;
  int64_t session_max;
};

struct s3_creds
{
  char *access_key;
  char *secret_key;
  char *token;       /* NULL for the runner's own key */
  time_t expiration; /* 0: unknown */
};

/* location: what follows "s3:" ("//BUCKET/ROOT?..."). No I/O. */
int s3_parse_location (struct s3_location *out, const char *location, bvm_error_t *err);
void s3_location_dispose (struct s3_location *l);

/* The object's URL: endpoint/BUCKET/ROOT/KEY, path-style, every byte of the
 * key but [A-Za-z0-9-._~/] percent-encoded (so `%2e%2e` stays three
 * literal characters and curl never normalizes a dot segment), then
 * `?query` when query is not NULL (already canonical: sorted, encoded). */
int s3_object_url (char **out, const struct s3_location *l, const char *key, const char *query,
                   bvm_error_t *err);
/* Percent-encode s into b (RFC 3986 unreserved kept; '/' kept if keep_slash). */
int s3_uri_encode (struct buf *b, const char *s, bool keep_slash);

/* "aws:amz:REGION:SERVICE" for CURLOPT_AWS_SIGV4. */
int s3_sigv4_provider (char *buf, size_t size, const char *region, const char *service,
                       bvm_error_t *err);

/* The session policy for a scope (the part of a key that a session may
 * touch, e.g. "apps/hello/<commit>/"): `actions` ("s3:PutObject", ...,
 * NULL-ended) on arn:aws:s3:::BUCKET/ROOT/<scope>*. Compact JSON (RGW does
 * not decode a `+` in the form body). Refuses a scope with a policy
 * wildcard or variable character (`*`, `?`, `$`). */
int s3_session_policy (char **out, const struct s3_location *l, const char *scope,
                       const char *const *actions, bvm_error_t *err);

/* The first three components of a key ("apps/<app>/<commit>/"), the scope a
 * read is granted; -1 when the key has fewer. */
int s3_key_scope (char *buf, size_t size, const char *key, bvm_error_t *err);

/* DurationSeconds for a session that must last until `expires` (0: no
 * bound, take session_max): at least S3_MIN_SESSION_S, at most max. */
int64_t s3_session_seconds (time_t expires, time_t now, int64_t max);

/* An AssumeRole reply: the Credentials element (AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration), each value capped and checked
 * to be printable ASCII. */
int s3_parse_assume_role (struct s3_creds *out, const char *xml, size_t len, bvm_error_t *err);
/* The text of the first <tag> element in xml, entities decoded, at most
 * size-1 bytes: 0, or -1 when missing, too long or not printable. */
int s3_xml_text (char *buf, size_t size, const char *xml, size_t len, const char *tag);

void s3_creds_dispose (struct s3_creds *c);

/* Load the runner's key file (owner-only permissions). */
int s3_load_credentials (struct s3_creds *out, const char *path, bvm_error_t *err);

/* AssumeRole for `scope` with `actions` (see s3_session_policy), lasting
 * until `expires` (s3_session_seconds). A network round trip; for the
 * backend and the test helper that shows what such credentials may do. */
int s3_assume (struct s3_creds *out, const struct s3_location *l, const char *scope,
               const char *const *actions, time_t expires, bvm_error_t *err);

extern const struct store_backend store_s3_backend;

#endif
