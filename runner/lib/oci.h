/* oci.h - OCI images: layers, image config, manifests, image layouts
 *
 * The image phase of a deploy builds one layer in a single pass over the data:
 * a libarchive tar writer whose output callback sha256s the uncompressed
 * stream (the diffID), gzips it with zlib, sha256s the compressed bytes (the
 * blob digest) and writes them to the blob file. Nothing is read twice.
 *
 *     struct oci_layer *l;
 *     oci_layer_new (&l, "/work/j-1/layer.tar.gz", 1, &err);
 *     archive_write_header (oci_layer_archive (l), entry); ...
 *     oci_layer_finish (l, &blob, diff_id, &err);
 *     oci_layer_free (l);
 *
 * The image config and the manifest are serialized canonically (sorted keys,
 * compact), so the same inputs always give the same digests: re-running a job
 * pushes nothing new.
 *
 * Manifests received from a registry are untrusted: oci_manifest_parse() is
 * strict about every field it uses and caps sizes and counts.
 */
#ifndef BUILDVM_OCI_H
#define BUILDVM_OCI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "digest.h"
#include "error.h"

struct archive;

#define OCI_MEDIA_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_MEDIA_INDEX "application/vnd.oci.image.index.v1+json"
#define OCI_MEDIA_CONFIG "application/vnd.oci.image.config.v1+json"
#define OCI_MEDIA_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define OCI_MEDIA_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define OCI_MEDIA_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define DOCKER_MEDIA_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define DOCKER_MEDIA_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define DOCKER_MEDIA_CONFIG "application/vnd.docker.container.image.v1+json"
#define DOCKER_MEDIA_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"

/* Caps on documents received from a registry. */
#define OCI_MANIFEST_MAX (4u << 20)
#define OCI_CONFIG_MAX (8u << 20)
#define OCI_MAX_LAYERS 256

#define OCI_MEDIA_TYPE_MAX 95

struct oci_descriptor
{
  char media_type[OCI_MEDIA_TYPE_MAX + 1];
  char digest[DIGEST_STR_LEN + 1];
  uint64_t size;
};

/* --- names ------------------------------------------------------------------ */

/* OCI distribution grammar, checked before any name goes into a URL:
 * repository `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
 * at most 255 bytes; tag `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. The one
 * implementation: the build spec, the config's templates and the registry
 * client all call these. Each returns NULL, or why not. */
const char *oci_repository_problem (const char *name);
const char *oci_tag_problem (const char *tag);
/* A tag or a digest. */
const char *oci_reference_problem (const char *ref);

/* --- layers ----------------------------------------------------------------- */

struct oci_layer;

/* Create `blob_path` (truncated, mode 0600) and a pax (restricted) tar writer
 * into it. gzip_level 0..9 (1 is the default of the deploy pipeline). */
int oci_layer_new (struct oci_layer **out, const char *blob_path, int gzip_level,
                   bvm_error_t *err);
/* The tar writer, for writers that make their own entries (tests). A
 * failure inside the output callback (disk full) makes archive calls return
 * ARCHIVE_FATAL with the reason in archive_error_string(). */
struct archive *oci_layer_archive (struct oci_layer *l);

/* One entry of the layer, owned by root, as the pipeline takes it from the
 * guest's (already checked) output: a directory, a symlink to `link`, a
 * hard link to the earlier entry `link` (type S_IFREG), or a regular file of
 * `size` bytes whose data follows with oci_layer_write. */
struct oci_layer_entry
{
  const char *path;
  mode_t type; /* S_IFDIR, S_IFLNK or S_IFREG */
  mode_t perm;
  uint64_t size;
  const char *link;
  int64_t mtime;
};
int oci_layer_add (struct oci_layer *l, const struct oci_layer_entry *e, bvm_error_t *err);
int oci_layer_write (struct oci_layer *l, const void *buf, size_t len, bvm_error_t *err);
/* A directory entry (e.g. the parents of the app's destination, "app/").
 * `path` is relative, without "..". */
int oci_layer_add_dir (struct oci_layer *l, const char *path, mode_t mode, uid_t uid, gid_t gid,
                       int64_t mtime, bvm_error_t *err);
/* Close the tar stream, flush the gzip stream and the file. `blob` gets the
 * layer media type, the compressed digest and size; `diff_id` the digest of
 * the uncompressed tar. The blob file stays in place. */
int oci_layer_finish (struct oci_layer *l, struct oci_descriptor *blob,
                      char diff_id[DIGEST_STR_LEN + 1], bvm_error_t *err);
/* Free; a layer that was not finished has its partial blob unlinked. */
void oci_layer_free (struct oci_layer *l);
/* Bytes of uncompressed tar written so far. */
uint64_t oci_layer_tar_size (const struct oci_layer *l);
/* How many threads compress each layer made after this call (at most 2;
 * the default). 0 compresses in the caller's thread; the blob's bytes are
 * the same either way. */
void oci_layer_set_threads (unsigned n);

/* --- image config ------------------------------------------------------------ */

/* Array fields are NULL-terminated; a NULL array means "not set" (inherit the
 * base's), an empty array means "set to empty". */
struct oci_image_spec
{
  const char *architecture; /* NULL: the base's, else "amd64" */
  const char *os;           /* NULL: the base's, else "linux" */
  const char *created;      /* RFC 3339; fixed per commit for reproducibility; NULL omits */
  const char *const *entrypoint;
  const char *const *cmd;
  const char *const *env; /* "K=V"; a K of the base is replaced in place */
  const char *workdir;
  const char *user;
  const char *const *exposed_ports; /* "8080/tcp", "53/udp"; "8080" means tcp */
  json_t *labels;                   /* object of strings, borrowed; override the base's */
  const char *history_created_by;   /* the history entry of our layer */
};

/* Serialize an image config (OCI image-spec) into *out (malloc'd, *len bytes,
 * NUL-terminated). With base_config (JSON text of the base image's config,
 * untrusted), the base's config fields are kept unless the spec sets them,
 * env and labels are merged, exposed ports are united, its diff_ids come
 * before ours and its history is kept with one entry appended. Setting
 * `entrypoint` without `cmd` clears an inherited Cmd, as Docker does. */
int oci_config_build (char **out, size_t *len, const struct oci_image_spec *spec,
                      const char *base_config, size_t base_len, const char *const *diff_ids,
                      size_t n_diff_ids, bvm_error_t *err);

/* --- manifests ---------------------------------------------------------------- */

/* An OCI image manifest (schemaVersion 2) over config and layers (base
 * layers first). annotations: object of strings or NULL. */
int oci_manifest_build (char **out, size_t *len, const struct oci_descriptor *config,
                        const struct oci_descriptor *layers, size_t n_layers,
                        const json_t *annotations, bvm_error_t *err);

enum oci_manifest_kind
{
  OCI_MANIFEST_IMAGE, /* an OCI image manifest or a Docker v2 schema 2 manifest */
  OCI_MANIFEST_INDEX, /* an OCI index or a Docker manifest list */
};

struct oci_manifest;

/* Parse a manifest received from a registry (at most OCI_MANIFEST_MAX bytes).
 * media_type is the Content-Type the registry sent (parameters allowed) or
 * NULL; when both it and the body's mediaType are present they must agree.
 * For an index the entry for os/arch (NULL: "linux"/"amd64") is selected and
 * the caller fetches it by digest; do not follow an index more than once.
 * Docker layer media types are reported as their OCI equivalents (same bytes),
 * so the layers can go into an OCI manifest as they are. */
int oci_manifest_parse (struct oci_manifest **out, const char *body, size_t len,
                        const char *media_type, const char *os, const char *arch,
                        bvm_error_t *err);
enum oci_manifest_kind oci_manifest_kind (const struct oci_manifest *m);
const char *oci_manifest_media_type (const struct oci_manifest *m);
/* Image manifests only. */
const struct oci_descriptor *oci_manifest_config (const struct oci_manifest *m);
const struct oci_descriptor *oci_manifest_layers (const struct oci_manifest *m, size_t *n);
/* Index only: the manifest selected for the platform. */
const struct oci_descriptor *oci_manifest_selected (const struct oci_manifest *m);
void oci_manifest_free (struct oci_manifest *m);

/* --- image layout ---------------------------------------------------------- */

/* Write an OCI image layout in `dir` (created if needed): oci-layout,
 * blobs/sha256/<hex> for the config, the manifest and each layer (hard link of
 * blob_paths[i] when possible, else a copy), and index.json naming the
 * manifest with org.opencontainers.image.ref.name = tag (an existing entry
 * with the same tag is replaced, others are kept). The manifest must describe
 * exactly `config` and `layers`. Readable by `skopeo inspect oci:DIR:TAG` and
 * `umoci unpack --image DIR:TAG`. */
int oci_layout_write (const char *dir, const char *tag, const char *manifest, size_t manifest_len,
                      const char *config, size_t config_len, const char *const *blob_paths,
                      const struct oci_descriptor *layers, size_t n_layers, bvm_error_t *err);

#endif
