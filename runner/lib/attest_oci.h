/* attest_oci.h - attestations and SBOMs stored with the image in the registry
 *
 * Each is an OCI 1.1 artifact: an image manifest with an `artifactType`, the
 * empty config, one layer (the DSSE envelope, or the SBOM) and a `subject`
 * naming the image manifest, pushed by digest into the image's repository.
 * A registry with the referrers API (distribution-spec 1.1) lists it by its
 * subject; one without (distribution 2.8, Debian 12's docker-registry) gets
 * the spec's fallback: an image index tagged `sha256-<hex of the image
 * digest>` listing the artifacts, which this module reads, extends and
 * writes back. Readers (`buildvm verify`, `oras discover`) look in the
 * same two places.
 *
 * The registry calls are registry.h's; which tags the job may write is the
 * caller's to authorize (pipeline.c, phase_attest).
 */
#ifndef BUILDVM_ATTEST_OCI_H
#define BUILDVM_ATTEST_OCI_H

#include <jansson.h>
#include <stdbool.h>

#include "attest.h"
#include "oci.h"
#include "registry.h"

#define ATTEST_OCI_TAG_MAX (7 + 64)
#define ATTEST_OCI_KEEP 64 /* entries of one artifact type a referrers tag keeps */

/* "sha256-<hex>" for "sha256:<hex>": the referrers tag of the fallback. */
int attest_oci_fallback_tag (char out[ATTEST_OCI_TAG_MAX + 1], const char *digest,
                             bvm_error_t *err);

/* Push `data` as an artifact whose subject is `subject`: the empty config
 * and the layer blob, then the manifest by digest (no tag). *out is the
 * manifest's descriptor. tmp_dir holds the blob files while they go up. */
int attest_oci_push (struct oci_descriptor *out, struct registry *reg, const char *repo,
                     const struct oci_descriptor *subject, const char *artifact_type,
                     const char *layer_type, const void *data, size_t len,
                     const json_t *annotations, const char *tmp_dir, bvm_error_t *err);

/* The referrers of `digest` in `repo`: the fallback tag's index when there
 * is one, else the API's when the registry has it (*via_api). *out is the
 * index, or NULL when there is none. */
int attest_oci_referrers (json_t **out, bool *via_api, struct registry *reg, const char *repo,
                          const char *digest, bvm_error_t *err);

/* One artifact to list among an image's referrers. */
struct attest_oci_ref
{
  struct oci_descriptor desc;
  const char *artifact_type;
  const json_t *annotations; /* may be NULL */
};

/* List refs[0..n) among the referrers of `digest`: nothing to do when the
 * registry has the API and there is no fallback tag; otherwise read the
 * fallback index (or start one), add the refs it does not list yet (and
 * drop the oldest of their types beyond ATTEST_OCI_KEEP), and put it back
 * under the fallback tag, once. */
int attest_oci_index_add (bool *via_api, struct registry *reg, const char *repo,
                          const char *digest, const struct attest_oci_ref *refs, size_t n,
                          bvm_error_t *err);

/* Read an artifact back: its manifest by digest, which must name `subject`
 * and have exactly one layer of `layer_type`, and that layer (at most max
 * bytes, digest verified). BVM_E_DENIED with the reason otherwise. */
int attest_oci_fetch_layer (char **out, size_t *len, json_t **manifest, struct registry *reg,
                            const char *repo, const char *digest, const char *subject,
                            const char *layer_type, size_t max, bvm_error_t *err);

#endif
