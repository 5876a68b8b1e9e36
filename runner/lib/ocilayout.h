/* ocilayout.h - a Dockerfile build's image, as the builder left it: hostile
 *
 * A Dockerfile job (issue 17) runs buildah as root in the guest, and the
 * guest hands back the image as an OCI image layout under the output root
 * `oci/` (oci-layout, index.json, blobs/sha256/<hex>). Root in the guest can
 * write anything there, so nothing in it is taken on its word:
 *
 *   1. while ingest streams the output tar, every blob is written to the work
 *      directory (`<dir>/<hex>`) and hashed; a blob whose content is not the
 *      digest its name says is refused at its end (ocilayout_file_*);
 *   2. ocilayout_verify() then reads index.json (at most 64 KiB, strict JSON:
 *      exactly one image manifest), the manifest (64 KiB, strict, an OCI or
 *      Docker image manifest, every descriptor a blob of this output with the
 *      same size: naming a blob that is not in the output - another app's -
 *      is refused), the config (OCI_CONFIG_MAX, linux/amd64, rootfs type
 *      `layers`, one sha256 diffID per layer) and every layer: streamed once
 *      (gzip or plain tar) through libarchive and never extracted; each entry
 *      named without `..` and not absolute, of a type an image may hold, its
 *      declared size within the caps (a sparse entry claiming 2^60 bytes is
 *      refused by its declared size before a byte of it is read), and the
 *      uncompressed stream's sha256 equal to its diffID;
 *   3. layers are split: a leading run whose diffIDs are, in order, all the
 *      diffIDs of one resolved base image are that base's layers, pushed as
 *      the base's own blobs (mounted from its repository, not re-uploaded);
 *      every other layer is gzip-compressed by the runner (zlib, fixed level:
 *      the same tar gives the same blob) into `<dir>/layer-<i>.tar.gz`, and
 *      its regular files are reported (path, sha256, size) for the SBOM.
 *
 * From the builder's config only the fields ocilayout_verify() lists are
 * kept, each checked and capped; ocilayout_config_build() writes the
 * runner's own config from them.
 */
#ifndef BUILDVM_OCILAYOUT_H
#define BUILDVM_OCILAYOUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"
#include "oci.h"

#define OCILAYOUT_SMALL_MAX (64u * 1024) /* oci-layout, index.json, the manifest */
#define OCILAYOUT_MAX_BLOBS 1024
#define OCILAYOUT_HISTORY_MAX 1024       /* history entries */
#define OCILAYOUT_CREATED_BY_MAX 4096    /* a history entry's text, cut beyond */
#define OCILAYOUT_MAX_ENTRIES (1u << 20) /* tar entries of all layers */
#define OCILAYOUT_PATH_MAX 4096          /* a layer entry's name or link target */

struct ocilayout_limits
{
  uint64_t max_blobs;
  uint64_t max_entries;     /* tar entries of all layers together */
  uint64_t max_entry_bytes; /* one file's declared size */
  uint64_t max_total_bytes; /* uncompressed bytes of all layers together */
  int gzip_level;           /* of the runner's new blobs, 1..9 */
  int64_t deadline_ms;      /* now_ms() after which verifying fails, 0 = none */
};

#define OCILAYOUT_LIMITS_INIT                                                                     \
  {                                                                                               \
    .max_blobs = OCILAYOUT_MAX_BLOBS, .max_entries = OCILAYOUT_MAX_ENTRIES,                       \
    .max_entry_bytes = UINT64_C (1) << 30, .max_total_bytes = UINT64_C (4) << 30,                 \
    .gzip_level = 1, .deadline_ms = 0,                                                            \
  }

/* The names an output layout may hold (relative to `oci/`): the one grammar,
 * ingest.c asks it. */
enum ocilayout_name
{
  OCILAYOUT_NAME_BAD = -1,
  OCILAYOUT_NAME_DIR,    /* `blobs`, `blobs/sha256` */
  OCILAYOUT_NAME_LAYOUT, /* `oci-layout` */
  OCILAYOUT_NAME_INDEX,  /* `index.json` */
  OCILAYOUT_NAME_BLOB,   /* `blobs/sha256/<64 lowercase hex>` */
};
enum ocilayout_name ocilayout_name_kind (const char *path);

struct ocilayout;

/* Blobs go to `dir` (created, mode 0700). */
int ocilayout_new (struct ocilayout **out, const char *dir, const struct ocilayout_limits *lim,
                   bvm_error_t *err);
void ocilayout_free (struct ocilayout *l);

/* One regular file of the output: `path` relative to `oci/`, of `size`
 * bytes, its data in ocilayout_file_write() calls. A blob's name must be its
 * content's digest (checked at its end). */
int ocilayout_file_begin (struct ocilayout *l, const char *path, uint64_t size, bvm_error_t *err);
int ocilayout_file_write (struct ocilayout *l, const void *buf, size_t len, bvm_error_t *err);
int ocilayout_file_end (struct ocilayout *l, bvm_error_t *err);

/* A resolved base image (pipeline.c's struct run_base): its manifest and
 * config as pulled by digest from the runner's registry, and its layer blobs
 * in the work directory. */
struct ocilayout_base
{
  const char *name; /* for messages and the record */
  const struct oci_manifest *manifest;
  const char *config;
  size_t config_len;
  char *const *layer_paths;
};

struct ocilayout_layer
{
  struct oci_descriptor desc; /* what the runner's manifest names */
  char diff_id[DIGEST_STR_LEN + 1];
  char *path;         /* the blob desc names: the base's, or the runner's gzip */
  int base;           /* index into the bases, -1: a new layer */
  uint64_t tar_bytes; /* uncompressed */
};

struct ocilayout_image
{
  char manifest_digest[DIGEST_STR_LEN + 1]; /* the builder's */
  char config_digest[DIGEST_STR_LEN + 1];   /* the builder's */
  /* The builder's config.{Env, Entrypoint, Cmd, WorkingDir, User,
   * ExposedPorts, Labels, StopSignal, Volumes}, each checked and capped, the
   * others dropped; and its history, capped, its non-empty entries one per
   * layer. Owned. */
  json_t *config;
  json_t *history;
  struct ocilayout_layer *layers;
  size_t n_layers;
  int base;             /* the base whose layers lead, -1: none (FROM scratch) */
  size_t n_base_layers; /* layers[0..n_base_layers) are its */
  uint64_t files;       /* regular files of the new layers */
  uint64_t bytes;       /* their bytes */
};

/* A regular file of a new layer: its path in the image (no leading `/` or
 * `./`), its data's sha256, its size. */
typedef int (*ocilayout_file_fn) (void *opaque, const char *path, const char *digest,
                                  uint64_t size, bvm_error_t *err);

/* Verify the layout received (see the top of this file) and fill *out;
 * `file` (may be NULL) sees every regular file of the new layers. Errors are
 * BVM_E_INVALID (BVM_E_LIMIT for a cap, BVM_E_TIMEOUT for the deadline),
 * one line naming the blob or entry. */
int ocilayout_verify (struct ocilayout_image *out, struct ocilayout *l,
                      const struct ocilayout_base *bases, size_t n_bases, ocilayout_file_fn file,
                      void *opaque, bvm_error_t *err);
void ocilayout_image_dispose (struct ocilayout_image *img);

/* The runner's image config for a verified image, canonical JSON (sorted
 * keys, compact): linux/amd64, `created`, img->config with `labels` (an
 * object of strings, the runner's provenance) set over the builder's - whose
 * own `dev.buildvm.` labels are dropped: those are the runner's to say -,
 * rootfs with the verified diffIDs, and img->history with one empty-layer
 * entry `history_created_by` appended. */
int ocilayout_config_build (char **out, size_t *len, const struct ocilayout_image *img,
                            const char *created, const json_t *labels,
                            const char *history_created_by, bvm_error_t *err);

#endif
