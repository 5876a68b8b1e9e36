/* image.h - build VM images: a kernel, a rootfs and the manifest naming them
 *
 * `buildvm-image/build-image.sh` writes <images_dir>/<profile>.json; the
 * runner loads it for every job and records its digests in the job record.
 */
#ifndef BUILDVM_IMAGE_H
#define BUILDVM_IMAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct vm_image
{
  char *profile;
  char *manifest_path;
  char *kernel;        /* absolute path */
  char *kernel_sha256; /* "sha256:..." */
  char *cmdline;
  char *fragment_sha256;
  char *rootfs; /* absolute path */
  char *rootfs_sha256;
  uint64_t rootfs_size;
  char *agent_sha256;
  json_t *packages; /* [{"name","version"}] */
};

/* ^[a-z0-9][a-z0-9-]{0,31}$: the images directory, the build spec's
 * `profile` and the config's `images.default_profile` */
const char *image_profile_problem (const char *profile);

/* Load <dir>/<profile>.json and check that the files it names exist with the
 * recorded size. A missing image is an error that says how to build it. */
int image_load (struct vm_image **out, const char *dir, const char *profile, bvm_error_t *err);
/* The profiles of `dir`: every <profile>.json with a valid profile name,
 * sorted, NULL-terminated (free with strv_free); a missing directory has
 * none. At most IMAGE_LIST_MAX. */
#define IMAGE_LIST_MAX 64
int image_list (char ***out, size_t *n, const char *dir, bvm_error_t *err);

/* The upstream part of a Debian package version, for people: no epoch, no
 * Debian revision, no repack suffix (`1:2.39.5-0+deb12u3` -> `2.39.5`,
 * `18.20.4+dfsg-1~deb12u2` -> `18.20.4`). */
void image_upstream_version (char *out, size_t size, const char *debian_version);

/* The toolchains the image's package list has, for `buildvm image list`:
 * "gcc 12.2.0, make 4.3, node 18.20.4, ..." ("" when it has none of them);
 * truncated at `size`. */
void image_toolchains (char *out, size_t size, const struct vm_image *img);

/* Whether <dir>/<profile>.json exists (a valid profile name only). */
bool image_present (const char *dir, const char *profile);

/* Hash the kernel and rootfs and compare with the manifest. */
int image_verify (const struct vm_image *img, bvm_error_t *err);
/* {"profile","kernel":{"sha256"...},"rootfs":{"sha256"...},"agent_sha256"} */
json_t *image_to_json (const struct vm_image *img);
void image_free (struct vm_image *img);

/* The default image directory: $BUILDVM_IMAGES, else <exe dir>/images. */
int image_default_dir (char **out, bvm_error_t *err);

#endif
