/* store.h - the artifact store
 *
 * A build's artifacts are kept under `apps/<app>/<commit>/` in an object
 * store. All artifacts of one job are written in a transaction: objects are
 * staged, and become visible only at store_txn_commit(), together with an
 * index `<prefix>index.json`:
 *
 *   {"objects":[{"key":"apps/hello/<commit>/bin/app","sha256":"<64 hex>","size":123}, ...],
 *    "prefix":"apps/hello/<commit>/"}
 *
 * (objects sorted by key, keys of each object sorted, no timestamps: the same
 * content always gives the same bytes, so re-running a commit is idempotent).
 *
 * Backends sit behind struct store_backend. The embedded default, "dir", is a
 * local directory: a transaction stages its objects in a private directory
 * `<root>/.staging/txn.XXXXXX/tree` on the same file system; commit writes
 * the index there, fsyncs, and swaps the whole tree into `<root>/<prefix>` with
 * renameat2(RENAME_EXCHANGE) (a first commit just renames it), so readers see
 * either the previous complete prefix or the new one, never a mix; the old
 * tree is then removed. A crash leaves only a staging directory, which a later
 * transaction removes once nobody holds its lock.
 *
 * Keys: relative, valid UTF-8 without control characters, no `.`, `..` or
 * empty components, no trailing `/`, at most STORE_KEY_MAX bytes, components
 * at most 255 bytes, starting with the transaction's prefix; `<prefix>index.json`
 * is reserved. A prefix follows the same rules, ends with `/`, and its first
 * component may not start with `.` (the backend's own names do).
 */
#ifndef BUILDVM_STORE_H
#define BUILDVM_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "digest.h"
#include "error.h"
#include "seal.h"
#include "util.h"

#define STORE_KEY_MAX 1024
#define STORE_MAX_OBJECTS 100000 /* per transaction */

struct store;
struct store_txn;

/* spec: "dir:/path" or a plain path (the dir backend). The directory is
 * created if missing. */
int store_open (struct store **out, const char *spec, bvm_error_t *err);
void store_free (struct store *s);

/* The job's end: a backend that mints credentials per transaction (s3)
 * makes them last no longer than this (0: the backend's own bound). */
void store_set_expiry (struct store *s, time_t expires);

/* Begin a transaction for everything under prefix (e.g. "apps/hello/<commit>/").
 * One transaction owns the whole prefix: at commit it replaces what was there. */
int store_txn_begin (struct store_txn **out, struct store *s, const char *prefix,
                     bvm_error_t *err);

/* One object at a time: begin, write (sha256 computed while writing), end. */
int store_put_begin (struct store_txn *t, const char *key, bvm_error_t *err);
int store_put_write (struct store_txn *t, const void *buf, size_t len, bvm_error_t *err);
int store_put_end (struct store_txn *t, bvm_error_t *err);

/* Another key with the content of an object already put in this transaction
 * (a hardlink in the output tar). The dir backend hardlinks the staged file. */
int store_put_link (struct store_txn *t, const char *key, const char *existing_key,
                    bvm_error_t *err);

/* What a committed transaction wrote, small whatever the number of objects:
 * this, not the index, goes into the job record (a record holding the whole
 * index grew past the queue's record cap with a few thousand artifacts). */
struct store_summary
{
  char prefix[STORE_KEY_MAX + 1];
  char index_key[STORE_KEY_MAX + 1];     /* `<prefix>index.json` */
  char index_digest[DIGEST_STR_LEN + 1]; /* "sha256:<hex>" of the index's bytes */
  uint64_t index_bytes;
  uint64_t count; /* objects in the index, links included */
  uint64_t bytes; /* the sum of their sizes */
  bool sealed;    /* store_txn_seal */
  /* server-side encryption (s3 with sse=): what was asked of the store and
   * what every object's reply confirmed ("" when a reply did not) */
  char sse_requested[16];
  char sse_confirmed[16];
};

/* Make everything visible and write the index. Consumes t, also on failure
 * (which aborts it). *summary (may be NULL) is filled on success; *index_out
 * (may be NULL) receives the index (caller owns). */
int store_txn_commit (struct store_txn *t, struct store_summary *summary, json_t **index_out,
                      bvm_error_t *err);

/* {"prefix", "count", "bytes", "index": {"path", "digest", "size"}}, plus
 * "sealed" and "server_side_encryption": {"requested", "confirmed" (null when
 * the store did not confirm it)} when they apply, where
 * path is the index's key (for the dir backend: relative to the store's
 * directory). NULL on ENOMEM. */
json_t *store_summary_to_json (const struct store_summary *s);

/* Drop the transaction and its staging area; nothing becomes visible. NULL is
 * fine. */
void store_txn_abort (struct store_txn *t);

/* Encryption at rest (seal.h): every object put from now on is sealed with
 * the app's key, with the prefix as context, before the backend sees it; the
 * index (which stays readable: keys, plaintext sizes and digests) says
 * `"sealed":"buildvm-seal-v1"`, and so does the summary. Call it right after
 * store_txn_begin. key is copied. A backend with a `seal` op is told, so it
 * can add its own encryption (S3: server-side encryption). */
int store_txn_seal (struct store_txn *t, const unsigned char key[SEAL_KEY_BYTES],
                    bvm_error_t *err);

/* Where store_get's bytes go (the plaintext, one piece at a time). */
typedef int (*store_sink_fn) (void *opaque, const void *buf, size_t len, bvm_error_t *err);

/* Read one committed object: `<prefix>index.json` is read (capped at
 * STORE_INDEX_MAX), the key must be in it, and the object's bytes are
 * streamed to sink, opened with key (which must be given when the index says
 * sealed, and is refused when it does not: a sealed prefix cannot be
 * replaced by a plain one unnoticed), and checked against the index's size
 * and sha256 at the end: an object swapped with another of the same commit
 * fails here. The sink may have seen bytes of an object that then fails: a
 * caller that must not keep them writes to a temporary file. Needs a backend
 * with a `get` op. */
int store_get (struct store *s, const char *prefix, const char *key, const unsigned char *seal_key,
               store_sink_fn sink, void *opaque, bvm_error_t *err);

#define STORE_INDEX_MAX (64u * 1024 * 1024)

/* Check a key against the rules above (prefix may be NULL: no prefix rule). */
int store_check_key (const char *key, const char *prefix, bvm_error_t *err);

DEFINE_CLEANUP_FUNC (store_txn_abortp, struct store_txn, store_txn_abort)
DEFINE_CLEANUP_FUNC (store_freep, struct store, store_free)
#define cleanup_store_txn __attribute__ ((cleanup (store_txn_abortp)))
#define cleanup_store __attribute__ ((cleanup (store_freep)))

/* --- for backends ------------------------------------------------------------
 * The generic layer validates keys, rejects duplicates, computes sizes and
 * digests and builds the index; a backend only stores bytes. A new backend
 * adds its table to the list in store.c; "s3" is store_s3.c. */
struct store_backend
{
  const char *name; /* the scheme in "name:location" */
  int (*open) (void **state, const char *location, bvm_error_t *err);
  void (*close) (void *state);
  int (*txn_begin) (void **txn, void *state, const char *prefix, bvm_error_t *err);
  int (*put_begin) (void *txn, const char *key, bvm_error_t *err);
  int (*put_write) (void *txn, const void *buf, size_t len, bvm_error_t *err);
  int (*put_end) (void *txn, bvm_error_t *err);
  int (*put_link) (void *txn, const char *key, const char *existing_key, bvm_error_t *err);
  /* store the index under index_key, make it all visible, free txn */
  int (*commit) (void *txn, const char *index_key, const void *index, size_t len,
                 bvm_error_t *err);
  void (*abort) (void *txn); /* free txn; NULL is fine */
  /* optional: the transaction's objects are sealed (store_txn_seal) */
  int (*seal) (void *txn, bvm_error_t *err);
  /* optional: stream the stored bytes of a committed key (store_get), at
   * most max of them (more is an error) */
  int (*get) (void *state, const char *key, uint64_t max, store_sink_fn sink, void *opaque,
              bvm_error_t *err);
  /* optional: what the last successful commit on this store adds to its
   * summary (server-side encryption) */
  void (*last_commit) (void *state, struct store_summary *sum);
  /* optional: store_set_expiry */
  void (*set_expiry) (void *state, time_t expires);
};

#endif
