/* fuzz_ocilayout.c - a Dockerfile builder's OCI layout (ocilayout.h): blobs,
 * documents and layer tars written by root in the guest
 *
 * The first byte chooses:
 *   even: the rest is the one layer of an otherwise well-formed layout (tar,
 *     or gzip when it starts so), whose config's diffID is the input's own
 *     sha256, so a plain tar that libarchive takes goes through every check
 *     to the end: the layer scanner, the decompressor and the runner's gzip;
 *   odd: the rest is index.json, over a layout that has one small blob.
 * A refusal is one printable line. An accepted layout has one layer whose
 * runner blob is the digest and size it says, and the runner's config is
 * built from it.
 */
#include "fuzz.h"

#include "digest.h"
#include "fs.h"
#include "oci.h"
#include "ocilayout.h"

#include <stdio.h>

static int
put (struct ocilayout *l, const char *path, const void *data, size_t len, bvm_error_t *err)
{
  if (ocilayout_file_begin (l, path, len, err) < 0 || ocilayout_file_write (l, data, len, err) < 0
      || ocilayout_file_end (l, err) < 0)
    return -1;
  return 0;
}

static int
put_blob (struct ocilayout *l, const void *data, size_t len, char digest[DIGEST_STR_LEN + 1],
          bvm_error_t *err)
{
  char path[128];
  if (digest_buffer (digest, data, len, err) < 0)
    return -1;
  snprintf (path, sizeof path, "blobs/sha256/%s", digest + 7);
  return put (l, path, data, len, err);
}

static int
count_file (void *opaque, const char *path, const char *digest, uint64_t size, bvm_error_t *err)
{
  (void) err;
  (void) size;
  FUZZ_CHECK (path[0] != '/' && digest_problem (digest) == NULL);
  (*(size_t *) opaque)++;
  return 0;
}

static void
one (const uint8_t *data, size_t size, const char *dir)
{
  struct ocilayout_limits lim = OCILAYOUT_LIMITS_INIT;
  struct ocilayout *l = NULL;
  struct ocilayout_image img;
  bvm_error_t err = NULL;
  char ld[DIGEST_STR_LEN + 1], cd[DIGEST_STR_LEN + 1], md[DIGEST_STR_LEN + 1];
  char cfg[512], man[1024], idx[512];
  size_t files = 0;
  int ret;
  bool layer_mode = (data[0] & 1) == 0;

  data++;
  size--;
  lim.max_entry_bytes = 1u << 20;
  lim.max_total_bytes = 8u << 20;
  lim.max_entries = 4096;
  if (ocilayout_new (&l, dir, &lim, &err) < 0)
    abort ();
  ret = put (l, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30, &err);
  if (layer_mode)
    {
      bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
      if (ret == 0)
        ret = put_blob (l, data, size, ld, &err);
      snprintf (cfg, sizeof cfg,
                "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/x\"]},"
                "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
                ret == 0 ? ld : "");
      if (ret == 0)
        ret = put_blob (l, cfg, strlen (cfg), cd, &err);
      snprintf (man, sizeof man,
                "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
                "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
                "\"%s\",\"size\":%zu}]}",
                OCI_MEDIA_MANIFEST, OCI_MEDIA_CONFIG, cd, strlen (cfg),
                gz ? OCI_MEDIA_LAYER_GZIP : OCI_MEDIA_LAYER_TAR, ld, size);
      if (ret == 0)
        ret = put_blob (l, man, strlen (man), md, &err);
      snprintf (idx, sizeof idx,
                "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":\"%s\","
                "\"size\":%zu}]}",
                OCI_MEDIA_MANIFEST, md, strlen (man));
      if (ret == 0)
        ret = put (l, "index.json", idx, strlen (idx), &err);
    }
  else
    {
      if (ret == 0)
        ret = put_blob (l, "{}", 2, ld, &err);
      if (ret == 0)
        ret = put (l, "index.json", data, size, &err);
    }
  if (ret == 0)
    ret = ocilayout_verify (&img, l, NULL, 0, count_file, &files, &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);
  else
    {
      char d[DIGEST_STR_LEN + 1], *c = NULL;
      uint64_t n = 0;
      size_t len = 0;

      FUZZ_CHECK (layer_mode && img.n_layers == 1 && img.base == -1);
      FUZZ_CHECK (img.files == files);
      if (digest_file (d, &n, img.layers[0].path, &err) < 0)
        abort ();
      FUZZ_CHECK (strcmp (d, img.layers[0].desc.digest) == 0 && n == img.layers[0].desc.size);
      if (ocilayout_config_build (&c, &len, &img, NULL, NULL, "fuzz", &err) < 0)
        abort ();
      free (c);
      ocilayout_image_dispose (&img);
    }
  ocilayout_free (l);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char dir[] = "/tmp/fuzz-ocilayout.XXXXXX";
  bvm_error_t err = NULL;

  if (size < 1 || size > (4u << 20))
    return 0;
  if (mkdtemp (dir) == NULL)
    abort ();
  one (data, size, dir);
  if (fs_rm_rf (dir, &err) < 0)
    abort ();
  return 0;
}
