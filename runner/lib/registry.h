/* registry.h - push and pull images with the OCI distribution API (libcurl)
 *
 * One `struct registry` is one registry endpoint with its credentials and one
 * reused curl handle (keep-alive). Every operation:
 *   - validates repository names, tags and digests before building a URL;
 *   - authenticates lazily: anonymous first, then on a 401 the
 *     `WWW-Authenticate` challenge decides between Basic (our credentials)
 *     and Bearer (a token from the realm, cached per scope);
 *   - retries connection errors, 5xx and 429 with exponential backoff and
 *     jitter, up to max_attempts and the deadline; never another 4xx;
 *   - re-sends a retried upload from its first byte (a failed blob upload
 *     restarts with a new upload session);
 *   - caps every response body it reads.
 *
 * Errors: BVM_E_NETWORK for transport failures and 5xx after the retries,
 * BVM_E_DENIED for 401/403 after authentication, BVM_E_INVALID for a request
 * the registry refused (other 4xx) or a malformed reply, BVM_E_TIMEOUT when
 * the deadline stopped the retries, BVM_E_CANCELED when *cancel was set.
 *
 * The push order (blobs, then the manifest, which is the tag) is the
 * caller's: nothing here puts a manifest on its own.
 */
#ifndef BUILDVM_REGISTRY_H
#define BUILDVM_REGISTRY_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"

struct registry_options
{
  const char *url; /* "http://127.0.0.1:5000" or "https://registry.example"; no path */
  /* Credentials: username/password, or a credentials file (JSON
   * {"username":..,"password":..} or {"token":..}, refused when group or
   * others can read it). A token is sent as a Bearer token as it is. */
  const char *username;
  const char *password;
  const char *credentials_file;
  const char *ca_file;    /* extra CA bundle for https, or NULL for the system's */
  int max_attempts;       /* tries per operation, >= 1 */
  int64_t backoff_ms;     /* first retry delay; doubled each retry, with jitter */
  int64_t backoff_max_ms; /* cap of one delay */
  uint64_t chunk_size;    /* blobs larger than this go up in PATCH chunks; 0: never */
  int64_t connect_timeout_ms;
  int64_t
      stall_timeout_ms; /* a transfer that moves nothing for this long fails (and is retried) */
  int64_t deadline_ms;  /* absolute, on the now_ms() clock; 0: none */
  const char *user_agent;
  const volatile sig_atomic_t *cancel; /* when non-NULL and set, stop with BVM_E_CANCELED */
};

#define REGISTRY_OPTIONS_INIT                                                                     \
  {                                                                                               \
    .url = NULL, .username = NULL, .password = NULL, .credentials_file = NULL, .ca_file = NULL,   \
    .max_attempts = 5, .backoff_ms = 200, .backoff_max_ms = 10000, .chunk_size = 64ull << 20,     \
    .connect_timeout_ms = 10000, .stall_timeout_ms = 60000, .deadline_ms = 0,                     \
    .user_agent = "buildvm", .cancel = NULL,                                                      \
  }

struct registry;

/* Counters for logs, benchmarks and tests. */
struct registry_stats
{
  uint64_t requests;       /* HTTP requests sent to the registry (token requests included) */
  uint64_t retries;        /* operations re-run after a retryable failure */
  uint64_t token_requests; /* bearer token fetches */
  uint64_t blobs_uploaded;
  uint64_t blobs_mounted;
  uint64_t bytes_uploaded; /* blob bytes sent, retries included */
};

/* No network traffic: credentials are read and the URL checked. */
int registry_open (struct registry **out, const struct registry_options *o, bvm_error_t *err);
void registry_free (struct registry *r);
void registry_get_stats (const struct registry *r, struct registry_stats *out);

/* GET /v2/: reachability and credentials, early. */
int registry_ping (struct registry *r, bvm_error_t *err);

/* HEAD the blob. *size (may be NULL) is its size when it exists. */
int registry_blob_exists (struct registry *r, const char *repo, const char *digest, bool *exists,
                          uint64_t *size, bvm_error_t *err);

/* HEAD first; when absent upload the file at `path` (which must be `size`
 * bytes): POST then PUT ?digest=, or PATCH chunks then PUT when size >
 * chunk_size. The digest the registry reports must be ours. *uploaded
 * (may be NULL) tells whether bytes were sent. */
int registry_blob_push (struct registry *r, const char *repo, const char *digest, uint64_t size,
                        const char *path, bool *uploaded, bvm_error_t *err);

/* Cross-repository mount: POST ?mount=<digest>&from=<from_repo>. *mounted
 * is false (and no error) when the registry declines (202): copy instead. */
int registry_blob_mount (struct registry *r, const char *repo, const char *from_repo,
                         const char *digest, bool *mounted, bvm_error_t *err);

/* Download a blob to `dest` (created, mode 0600), verifying the digest while
 * streaming and refusing more than `size` bytes. Removed on failure. */
int registry_blob_get (struct registry *r, const char *repo, const char *digest, uint64_t size,
                       const char *dest, bvm_error_t *err);

/* Read a small blob (an image config) into memory: at most `max` bytes,
 * digest verified. *out is NUL-terminated. */
int registry_blob_read (struct registry *r, const char *repo, const char *digest, size_t max,
                        char **out, size_t *len, bvm_error_t *err);

/* The mount fallback: when `repo` lacks the blob, GET it from from_repo into
 * a temporary file under tmp_dir, then push it. */
int registry_blob_copy (struct registry *r, const char *repo, const char *from_repo,
                        const char *digest, uint64_t size, const char *tmp_dir, bvm_error_t *err);

/* GET a manifest by tag or digest, accepting OCI and Docker manifests and
 * indexes. *body (NUL-terminated, at most OCI_MANIFEST_MAX bytes) and
 * *media_type are malloc'd. `digest` is computed here and must match the
 * reference when that is a digest, and Docker-Content-Digest when sent. */
int registry_manifest_get (struct registry *r, const char *repo, const char *reference,
                           char **body, size_t *len, char **media_type,
                           char digest[DIGEST_STR_LEN + 1], bvm_error_t *err);

/* The same, for a tag that may not exist: *found is false (and nothing is
 * allocated) when the registry answers 404 (no such tag or repository). */
int registry_manifest_find (struct registry *r, const char *repo, const char *reference,
                            bool *found, char **body, size_t *len, char **media_type,
                            char digest[DIGEST_STR_LEN + 1], bvm_error_t *err);

/* PUT a manifest under a tag or its digest. `digest` receives its digest
 * (may be NULL); the registry's Docker-Content-Digest must agree. */
int registry_manifest_put (struct registry *r, const char *repo, const char *reference,
                           const char *media_type, const char *body, size_t len,
                           char digest[DIGEST_STR_LEN + 1], bvm_error_t *err);

/* The OCI 1.1 referrers API: GET /v2/<repo>/referrers/<digest>, an image
 * index of the manifests whose `subject` is `digest`. *supported is false
 * (and nothing is allocated) when the registry does not have the API (a
 * 404, or a reply that is not an index): distribution 2.8, Debian 12's
 * docker-registry, has none, and clients fall back to the referrers tag
 * `sha256-<hex>` then (distribution-spec 1.1, "Unavailable Referrers
 * API"). *body is NUL-terminated, at most OCI_MANIFEST_MAX bytes. */
int registry_referrers_get (struct registry *r, const char *repo, const char *digest,
                            bool *supported, char **body, size_t *len, bvm_error_t *err);

/* Registry credentials: {"username", "password"} or {"token"}. */
struct registry_credentials
{
  char *username; /* NULL with a token */
  char *password; /* NULL with a token */
  char *token;    /* NULL with username/password */
};

#define REGISTRY_CREDENTIALS_MAX (64 * 1024)

/* Read a credentials file (the runner config's registry.credentials) after
 * checking, on the open file, that it is a regular file owned by us or root
 * and not accessible by group or others. *out is NULL when path is NULL.
 * Parse errors never quote the file's content. */
int registry_credentials_load (struct registry_credentials **out, const char *path,
                               bvm_error_t *err);
/* Wipes the secrets before freeing. */
void registry_credentials_free (struct registry_credentials *cr);

/* Internal, exposed for the unit tests: parse one WWW-Authenticate challenge.
 * *scheme is 1 for Basic, 2 for Bearer. -1 on anything malformed. */
int registry__parse_challenge (const char *h, int *scheme, char *realm, size_t realm_size,
                               char *service, size_t service_size, char *scope, size_t scope_size);

#endif
