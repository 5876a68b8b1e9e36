/* secrets.h - the per-app build secret store: envelope encryption at rest
 *
 * Each app has its own credential store under the secrets directory:
 *
 *   <dir>/apps/<app>/.kek            the app's key-encryption key (KEK),
 *                                    wrapped with the master key
 *   <dir>/apps/<app>/<name>.secret   one secret: a fresh data key (DEK)
 *                                    wrapped with the KEK, and the value
 *                                    encrypted with the DEK
 *
 * All three layers are AES-256-GCM (OpenSSL) with random 96-bit nonces. The
 * associated data binds a secret file to its app, its name and its version,
 * and a KEK file to its app and master key, so a file copied to another app
 * or name fails to decrypt. A corrupt, truncated or tampered file fails
 * closed: no plaintext is ever returned, and the error names the app and the
 * secret. The file format, the key hierarchy and the threat model are in
 * docs/secrets.md.
 *
 * The master key is a file of exactly SECRETS_KEY_BYTES random bytes that
 * only its owner (us or root) may read: secrets_init_master_key makes one.
 *
 * Plaintext (values, data keys, KEKs, the master key) lives only in memory
 * from secrets__mem_alloc: pages excluded from core dumps (MADV_DONTDUMP),
 * locked in RAM where RLIMIT_MEMLOCK allows, and wiped before they are
 * unmapped. Error messages never contain secret bytes.
 *
 * A `struct secrets` is immutable after secrets_open and may be shared
 * between threads; writers of the same app are serialized by a lock on the
 * app's directory (flock), so concurrent `set`s never lose a version.
 */
#ifndef BUILDVM_SECRETS_H
#define BUILDVM_SECRETS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "util.h"

#define SECRETS_KEY_BYTES 32          /* AES-256: master key, KEK, DEK */
#define SECRETS_VALUE_MAX (64 * 1024) /* one secret value */
#define SECRETS_NAME_MAX 64           /* ^[A-Za-z0-9_.-]{1,64}$, no leading `.` */
#define SECRETS_KEY_ID_HEX 16         /* a master key's id, in hex */

struct secrets;
struct role;

/* A decrypted value: `data` (NUL-terminated for convenience, len bytes) is in
 * memory from secrets__mem_alloc. secret_value_free wipes it. */
struct secret_value
{
  unsigned char *data;
  size_t len;
  size_t alloc; /* bytes mapped at data */
};

/* Open the store: read the master key at `master_key_path` (refusing a file
 * that is not regular, is accessible by group or others, is owned by anyone
 * but us or root, or is not exactly SECRETS_KEY_BYTES long) and create `dir`
 * (mode 0700) if needed. A `dir` that group or others can access, or that is
 * owned by someone else, is refused. */
int secrets_open (struct secrets **out, const char *dir, const char *master_key_path,
                  bvm_error_t *err);
void secrets_close (struct secrets *s);

/* Create a new random master key file at `path`, mode 0600, atomically; its
 * directory is created (0700) if missing. Refuses to overwrite an existing
 * file. `id_out` (may be NULL, else SECRETS_KEY_ID_HEX + 1 bytes) gets its id. */
int secrets_init_master_key (const char *path, char *id_out, bvm_error_t *err);

/* The id of the open store's master key (SECRETS_KEY_ID_HEX hex digits): the
 * first 8 bytes of SHA-256("buildvm master key id v1" || key). Recorded in
 * every KEK file so that a wrong master key is named as such. */
const char *secrets_master_key_id (const struct secrets *s);

/* Store a value (1..SECRETS_VALUE_MAX bytes) as the next version of
 * `name` (1 for a new secret). The app's KEK is created on its first secret.
 * The write is atomic: a temporary file, fsync, rename, fsync of the
 * directory. `version_out` may be NULL. */
int secrets_set (struct secrets *s, const char *app, const char *name, const void *value,
                 size_t len, unsigned *version_out, bvm_error_t *err);

/* Decrypt the current version. On any failure *out is NULL. A missing secret
 * is a BVM_E_INVALID error "app `A` has no secret `N`"; a corrupt or
 * tampered file (or KEK) is BVM_E_INVALID "secret `N` of app `A`: the file is
 * corrupt or was tampered with (...)"; a wrong master key says so.
 * `version_out` may be NULL. */
int secrets_get (struct secrets *s, const char *app, const char *name, struct secret_value **out,
                 unsigned *version_out, bvm_error_t *err);

/* For the pipeline: secrets_get after asking the job's role for
 * `secrets:GetSecret` on `secrets:apps/<app>/<name>`. A denial is the role's
 * BVM_E_DENIED error and nothing is read. */
int secrets_get_for_job (struct secrets *s, const struct role *role, const char *app,
                         const char *name, struct secret_value **out, unsigned *version_out,
                         bvm_error_t *err);

/* The app's secrets, sorted by name: [{"name", "version", "updated_at"
 * (RFC 3339)}], never values. Only the headers are read (not authenticated);
 * a file whose header is malformed or names another app or secret fails the
 * listing. An app without secrets gives []. */
int secrets_list (struct secrets *s, const char *app, json_t **out, bvm_error_t *err);

/* Remove a secret; BVM_E_INVALID "app `A` has no secret `N`" if missing. */
int secrets_remove (struct secrets *s, const char *app, const char *name, bvm_error_t *err);

/* Re-wrap every app's KEK under the master key in `new_master_key_path`
 * (checked like secrets_open's). Resumable: an app already wrapped under the
 * new key is skipped, one wrapped under neither key is an error. The secret
 * files and the KEKs themselves are unchanged. Afterwards the store must be
 * opened with the new key. `n_out` (may be NULL) gets the number re-wrapped. */
int secrets_rotate_master_key (struct secrets *s, const char *new_master_key_path, size_t *n_out,
                               bvm_error_t *err);

/* A key for `purpose` (e.g. "seal") of the app: HKDF-SHA256 of the app's KEK
 * with the info "buildvm <purpose> v1|<app>", so each app and purpose has its
 * own key and none of them can be derived from another's. The app's KEK is
 * created if it has none yet. The caller wipes out. */
int secrets_derive_app_key (struct secrets *s, const char *app, const char *purpose,
                            unsigned char out[SECRETS_KEY_BYTES], bvm_error_t *err);

void secret_value_free (struct secret_value *v);

/* ^[A-Za-z0-9_.-]{1,64}$ and not starting with `.` (the rule of the build
 * spec's `secrets[].name`). App ids are checked with job_app_id_problem.
 * Returns NULL, or why not. */
const char *secrets_name_problem (const char *name);

/* The policy resource of a secret into buf: "secrets:apps/<app>/<name>";
 * 0, or -1 (errno ENAMETOOLONG) when it does not fit. */
int secrets_resource (char *buf, size_t size, const char *app, const char *name);

/* Cross-module internal (secrets, redact): memory for plaintext. Zeroed,
 * page-granular mmap with MADV_DONTDUMP and a best-effort mlock; NULL with
 * errno on failure. secrets__mem_free wipes before unmapping; `n` must be
 * the size given to secrets__mem_alloc. */
void *secrets__mem_alloc (size_t n);
void secrets__mem_free (void *p, size_t n);

DEFINE_CLEANUP_FUNC (secrets_closep, struct secrets, secrets_close)
DEFINE_CLEANUP_FUNC (secret_value_freep, struct secret_value, secret_value_free)
#define cleanup_secrets __attribute__ ((cleanup (secrets_closep)))
#define cleanup_secret_value __attribute__ ((cleanup (secret_value_freep)))

#endif
