/* attest.h - signed provenance: DSSE envelopes over in-toto Statements
 *
 * For every pushed image the runner signs an in-toto Statement v1 with a
 * SLSA Provenance v1 predicate (attest_statement) in a DSSE envelope
 * (attest_sign): the signature is over PAE(payloadType, payload), the
 * DSSE v1.0.0 pre-authentication encoding
 *
 *   "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
 *
 * with LEN the ASCII decimal byte length, so the payload's type is signed
 * too. Keys are ECDSA P-256 (signatures: SHA-256, DER, as cosign and
 * `openssl dgst -sha256 -sign` make them) or Ed25519, in PEM files; the
 * private key is the runner's, never the build's (docs/security.md,
 * "Provenance"; docs/operations.md for generating and rotating it).
 *
 * Every field of the statement comes from the runner's side of the job (the
 * request, the plan, the role, the VM image manifest, the digests the runner
 * computed); nothing the build printed or wrote is read here.
 *
 * attest_verify and attest_check are what `buildvm verify` runs: each
 * refusal is a BVM_E_DENIED error whose message is the one-line reason.
 */
#ifndef BUILDVM_ATTEST_H
#define BUILDVM_ATTEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "digest.h"
#include "error.h"
#include "util.h"

#define ATTEST_PAYLOAD_TYPE "application/vnd.in-toto+json"
#define ATTEST_STATEMENT_TYPE "https://in-toto.io/Statement/v1"
#define ATTEST_PREDICATE_SLSA "https://slsa.dev/provenance/v1"
#define ATTEST_BUILD_TYPE "https://buildvm.dev/build-types/vm/v1"
#define ATTEST_MEDIA_DSSE "application/vnd.dsse.envelope.v1+json"

#define ATTEST_ENVELOPE_MAX (4u << 20) /* an envelope read back from a registry */
#define ATTEST_KEY_FILE_MAX (64 * 1024)
#define ATTEST_KEY_ID_MAX (7 + 64)

/* --- keys ------------------------------------------------------------------------- */

struct attest_key;

/* A new ECDSA P-256 key. */
int attest_key_generate (struct attest_key **out, bvm_error_t *err);
/* A key from PEM text: a private key (PKCS#8 or traditional) or a public
 * key (SubjectPublicKeyInfo). Only P-256 and Ed25519 keys are accepted. */
int attest_key_from_pem (struct attest_key **out, const char *pem, size_t len, bvm_error_t *err);
/* A key file. want_private: a private key, in a file only its owner (us or
 * root) can read, like the registry credentials; otherwise either kind. */
int attest_key_load (struct attest_key **out, const char *path, bool want_private,
                     bvm_error_t *err);
/* The runner's key at `path`; when there is none, a new one is written
 * there (mode 0600, its directory created 0700) and *created is set, so
 * the caller can warn that a key was generated. Two runners racing here
 * end with the same key: the file is linked into place, never replaced. */
int attest_key_load_or_create (struct attest_key **out, bool *created, const char *path,
                               bvm_error_t *err);
/* The public half as PEM (caller frees). */
int attest_key_public_pem (char **out, const struct attest_key *k, bvm_error_t *err);
/* "sha256:<hex>" of the DER SubjectPublicKeyInfo: the DSSE keyid hint. */
const char *attest_key_id (const struct attest_key *k);
bool attest_key_is_private (const struct attest_key *k);
void attest_key_free (struct attest_key *k);

DEFINE_CLEANUP_FUNC (attest_key_freep, struct attest_key, attest_key_free)
#define cleanup_attest_key __attribute__ ((cleanup (attest_key_freep)))

/* --- DSSE ------------------------------------------------------------------------- */

/* PAE(payload_type, payload) appended to out. */
int attest_pae (struct buf *out, const char *payload_type, const void *payload, size_t len);

/* A DSSE envelope (JSON, NUL-terminated, caller frees) over payload. */
int attest_sign (char **out, size_t *out_len, const struct attest_key *k, const char *payload_type,
                 const void *payload, size_t len, bvm_error_t *err);

/* Parse an envelope (at most ATTEST_ENVELOPE_MAX bytes), check its
 * payloadType and that one of its signatures verifies with k; *payload
 * (NUL-terminated, caller frees) is what was signed. The keyid is a hint
 * only and never decides anything. */
int attest_verify (char **payload, size_t *payload_len, const struct attest_key *k,
                   const char *envelope, size_t len, const char *payload_type, bvm_error_t *err);

/* --- the statement ---------------------------------------------------------------- */

/* What the provenance says, all of it from the runner's side. NULL fields
 * (and NULL json) are left out. */
struct attest_provenance
{
  const char *builder_id; /* the runner's configured identity (attest.builder_id) */
  const char *version;    /* buildvm's version */
  /* the deploy request */
  const char *app, *repo, *commit, *ref, *job_id;
  unsigned attempt;
  const json_t *request; /* job_to_json: trigger and the rest */
  /* the build definition */
  const json_t *spec;      /* the resolved build spec (spec_to_json) */
  const char *spec_digest; /* "sha256:" of buildvm.json's bytes at the commit */
  const json_t *role;      /* the minted role (role_to_json) */
  const json_t *egress;    /* the egress record (decisions), or NULL */
  const json_t *resources; /* vCPUs, memory, disk, timeout */
  /* the build platform */
  const char *profile, *kernel, *rootfs; /* the VM image: profile and "sha256:" digests */
  const char *started, *finished;        /* RFC 3339 */
  /* subjects and what they were made from */
  const char *image_name;       /* the repository, e.g. apps/hello */
  const char *image_digest;     /* the manifest's "sha256:" */
  const char *artifacts_name;   /* the artifact index's key, or NULL */
  const char *artifacts_digest; /* its "sha256:", or NULL */
  const char *base_name;        /* the base image reference, or NULL */
  const char *base_digest;      /* its manifest's "sha256:", or NULL */
  const char *sbom_digest;      /* the SBOM's "sha256:", or NULL */
  const char *sbom_media_type;
  const json_t *dependencies; /* more resolvedDependencies (the lock files' packages) */
};

/* The in-toto Statement v1 with a SLSA Provenance v1 predicate. Its
 * subjects: the image, the artifact index, or both (one at least). */
int attest_statement (json_t **out, const struct attest_provenance *p, bvm_error_t *err);

/* What `buildvm verify` asks of a statement; NULL fields are not checked. */
struct attest_expect
{
  const char *digest; /* required: the image manifest's "sha256:" */
  const char *app, *repo, *commit, *kernel, *rootfs, *builder_id;
  /* the subject with that digest must also have this name (the image's
   * repository): an app cannot pass another app's attested image off as
   * its own by copying both into its repository */
  const char *subject_name;
};

/* Parse a verified payload and check it: the in-toto and SLSA v1 layout,
 * a subject with the digest, then each expectation. *statement (may be
 * NULL) gets the parsed statement. BVM_E_DENIED with the reason. */
int attest_check (json_t **statement, const char *payload, size_t len,
                  const struct attest_expect *want, bvm_error_t *err);

/* A field of a checked statement ("app", "commit", "repo", "ref", "job",
 * "builder", "kernel", "rootfs", "profile", "finished"), or NULL. */
const char *attest_field (const json_t *statement, const char *name);

/* --- base64 (RFC 4648), exposed for the tests ------------------------------------- */

int attest__b64_encode (char **out, const void *data, size_t len);
/* Standard or URL-safe, padded or not; -1 on anything else. */
int attest__b64_decode (unsigned char **out, size_t *out_len, const char *s, size_t len);

#endif
