/* sbom.h - the software bill of materials of a pushed image (CycloneDX 1.5)
 *
 * What the image is made of, as the runner saw it, never as the build said:
 *   - every regular file of the app's layer with its sha256, hashed by the
 *     runner while it read the build's outputs (pipeline.c, sink_data);
 *   - the base image by manifest digest, and the Debian packages its
 *     `org.buildvm.base.packages` label names (buildvm-image/base);
 *   - the packages the lock files at the root of the commit's source tree
 *     pin: package-lock.json, requirements.txt (with --hash), go.sum and
 *     Cargo.lock, read from the git tree by the runner.
 *
 * CycloneDX 1.5 JSON rather than SPDX 2.3: a file is a component with
 * SHA-256 hashes (SPDX 2.3 asks for a SHA-1 of every file and a package
 * verification code on top), and every package carries its purl and the
 * lock file's hash directly.
 *
 * Everything a lock file can grow is capped: the file's size (the caller's
 * read cap) and the number of components (sbom_new). Going over the count
 * is a BVM_E_LIMIT error, not a truncated SBOM.
 */
#ifndef BUILDVM_SBOM_H
#define BUILDVM_SBOM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

#define SBOM_MEDIA_TYPE "application/vnd.cyclonedx+json"
#define SBOM_LOCKFILE_MAX (16u << 20) /* bytes of one lock file */
#define SBOM_COMPONENTS_MAX 200000    /* the default cap of sbom_new */

/* The lock files looked for at the root of the source tree, NULL-terminated. */
extern const char *const sbom_lockfiles[];

struct sbom;

int sbom_new (struct sbom **out, size_t max_components, bvm_error_t *err);
void sbom_free (struct sbom *s);

DEFINE_CLEANUP_FUNC (sbom_freep, struct sbom, sbom_free)
#define cleanup_sbom __attribute__ ((cleanup (sbom_freep)))

/* A regular file of the layer: its path in the image and "sha256:<hex>". */
int sbom_add_file (struct sbom *s, const char *path, const char *digest, uint64_t size,
                   bvm_error_t *err);

/* The base image: its reference, manifest digest, and the value of its
 * `org.buildvm.base.packages` label ("name=version ..."; may be NULL). */
int sbom_set_base (struct sbom *s, const char *ref, const char *digest, const char *packages,
                   bvm_error_t *err);

/* A lock file's packages; `name` is one of sbom_lockfiles. A malformed
 * lock file is a BVM_E_INVALID error naming it. */
int sbom_add_lockfile (struct sbom *s, const char *name, const char *data, size_t len,
                       bvm_error_t *err);

/* Counts, for the job's log. */
size_t sbom_file_count (const struct sbom *s);
size_t sbom_package_count (const struct sbom *s);

/* SLSA ResourceDescriptors ({"uri": purl, "digest": {...}, "name"}) of
 * the lock files' packages, for the provenance's resolvedDependencies. */
json_t *sbom_dependencies (const struct sbom *s);

struct sbom_meta
{
  const char *name;      /* the image's repository */
  const char *version;   /* the commit */
  const char *digest;    /* the image manifest's "sha256:" */
  const char *timestamp; /* RFC 3339 */
  const char *tool_version;
};

/* The CycloneDX 1.5 document (compact JSON, caller frees). */
int sbom_to_json (char **out, size_t *len, const struct sbom *s, const struct sbom_meta *m,
                  bvm_error_t *err);

#endif
