/* test_ocilayout.c - a hostile builder's OCI image layout (issue 17)
 *
 * Every layout here is crafted in the test: tars built header by header (so
 * entries no tar writer would produce, `../x` or a 2^60-byte sparse file,
 * are easy), blobs named by their digests (or not), index, manifest and
 * config written as a compromised builder could. A good multi-layer layout
 * must give the base's blobs for its leading layers and the runner's own
 * gzip for the new one; each hostile one must be refused with its reason.
 */
#include "support.h"

#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "ocilayout.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512

/* --- tars, by hand --------------------------------------------------------- */

struct tbuf
{
  unsigned char *p;
  size_t len;
};

static void
tb_add (struct tbuf *t, const void *data, size_t len)
{
  t->p = realloc (t->p, t->len + len + 1);
  assert_non_null (t->p);
  memcpy (t->p + t->len, data, len);
  t->len += len;
}

static void
tb_pad (struct tbuf *t)
{
  static const unsigned char z[BLOCK];
  if (t->len % BLOCK)
    tb_add (t, z, BLOCK - t->len % BLOCK);
}

/* One ustar header (as tests/data/ingest/gen.py writes them). */
static void
ustar (struct tbuf *t, const char *name, uint64_t size, char type, unsigned mode, const char *link)
{
  unsigned char h[BLOCK];
  unsigned sum = 0;

  memset (h, 0, sizeof h);
  snprintf ((char *) h, 100, "%s", name);
  snprintf ((char *) h + 100, 8, "%07o", mode);
  snprintf ((char *) h + 108, 8, "%07o", 0);
  snprintf ((char *) h + 116, 8, "%07o", 0);
  snprintf ((char *) h + 124, 12, "%011llo", (unsigned long long) size);
  snprintf ((char *) h + 136, 12, "%011o", 1700000000);
  memset (h + 148, ' ', 8);
  h[156] = (unsigned char) type;
  if (link)
    snprintf ((char *) h + 157, 100, "%s", link);
  memcpy (h + 257,
          "ustar\0"
          "00",
          8);
  for (size_t i = 0; i < BLOCK; i++)
    sum += h[i];
  snprintf ((char *) h + 148, 8, "%06o", sum);
  h[155] = ' ';
  tb_add (t, h, BLOCK);
}

static void
tar_file (struct tbuf *t, const char *name, const char *data)
{
  ustar (t, name, strlen (data), '0', 0644, NULL);
  tb_add (t, data, strlen (data));
  tb_pad (t);
}

static void
tar_end (struct tbuf *t)
{
  static const unsigned char z[2 * BLOCK];
  tb_add (t, z, sizeof z);
}

/* A pax extended header with `records` ("key=value" each). */
static void
pax (struct tbuf *t, const char *const *records)
{
  struct tbuf body = { 0 };
  for (size_t i = 0; records[i]; i++)
    {
      size_t l = strlen (records[i]) + 2, n = l + 1;
      char rec[512];
      while (snprintf (NULL, 0, "%zu", n) + l != n)
        n = (size_t) snprintf (NULL, 0, "%zu", n) + l;
      snprintf (rec, sizeof rec, "%zu %s\n", n, records[i]);
      tb_add (&body, rec, strlen (rec));
    }
  ustar (t, "PaxHeader/x", body.len, 'x', 0644, NULL);
  tb_add (t, body.p, body.len);
  tb_pad (t);
  free (body.p);
}

/* --- layouts --------------------------------------------------------------- */

static void
digest_of (char out[DIGEST_STR_LEN + 1], const void *p, size_t n)
{
  bvm_error_t err = NULL;
  assert_ok (digest_buffer (out, p, n, &err), &err);
}

static int
feed (struct ocilayout *l, const char *path, const void *data, size_t len, bvm_error_t *err)
{
  const unsigned char *p = data;
  if (ocilayout_file_begin (l, path, len, err) < 0)
    return -1;
  /* in pieces, as ingest delivers them */
  for (size_t off = 0; off < len;)
    {
      size_t n = len - off > 7000 ? 7000 : len - off;
      if (ocilayout_file_write (l, p + off, n, err) < 0)
        return -1;
      off += n;
    }
  return ocilayout_file_end (l, err);
}

/* A blob under its own name; its digest in `out`. */
static void
feed_blob (struct ocilayout *l, const void *data, size_t len, char out[DIGEST_STR_LEN + 1])
{
  char path[128];
  bvm_error_t err = NULL;
  digest_of (out, data, len);
  snprintf (path, sizeof path, "blobs/sha256/%s", out + 7);
  assert_ok (feed (l, path, data, len, &err), &err);
}

struct img
{
  struct tbuf layers[4];
  size_t n;
  const char *config_extra; /* inside "config": {...} */
  const char *history;      /* the history array, or NULL */
  int diff_ids;             /* -1: one per layer, else that many */
  bool wrong_diff;          /* the last diffID is someone else's */
  bool skip_layer_blob;     /* the last layer's blob is not written */
  int index_count;          /* manifests in index.json (default 1) */
  const char *foreign;      /* a digest the manifest names as its last layer */
};

static struct ocilayout *
layout_new (const char *dir)
{
  struct ocilayout *l = NULL;
  bvm_error_t err = NULL;
  struct ocilayout_limits lim = OCILAYOUT_LIMITS_INIT;
  lim.max_entry_bytes = 1u << 20;
  assert_ok (ocilayout_new (&l, dir, &lim, &err), &err);
  return l;
}

/* Write the whole layout of `im` into l. */
static void
feed_image (struct ocilayout *l, const struct img *im)
{
  char ldig[4][DIGEST_STR_LEN + 1], diff[4][DIGEST_STR_LEN + 1], cdig[DIGEST_STR_LEN + 1],
      mdig[DIGEST_STR_LEN + 1];
  json_t *ids = json_array (), *layers = json_array (), *cfg, *man, *idx, *list;
  char *s;
  bvm_error_t err = NULL;
  int nd = im->diff_ids < 0 ? (int) im->n : im->diff_ids;

  assert_ok (feed (l, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30, &err), &err);
  for (size_t i = 0; i < im->n; i++)
    {
      digest_of (diff[i], im->layers[i].p, im->layers[i].len);
      if (im->skip_layer_blob && i + 1 == im->n)
        digest_of (ldig[i], im->layers[i].p, im->layers[i].len);
      else
        feed_blob (l, im->layers[i].p, im->layers[i].len, ldig[i]);
      json_array_append_new (layers,
                             json_pack ("{s:s, s:s, s:I}", "mediaType", OCI_MEDIA_LAYER_TAR,
                                        "digest",
                                        im->foreign && i + 1 == im->n ? im->foreign : ldig[i],
                                        "size", (json_int_t) im->layers[i].len));
    }
  for (int i = 0; i < nd; i++)
    json_array_append_new (
        ids, json_string (
                 im->wrong_diff && i == nd - 1
                     ? "sha256:1111111111111111111111111111111111111111111111111111111111111111"
                     : diff[i < (int) im->n ? i : 0]));
  {
    char *text = NULL;
    if (asprintf (&text,
                  "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{%s},"
                  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":%s}%s%s}",
                  im->config_extra ? im->config_extra : "", s = json_dumps (ids, JSON_COMPACT),
                  im->history ? ",\"history\":" : "", im->history ? im->history : "")
        < 0)
      fail ();
    free (s);
    feed_blob (l, text, strlen (text), cdig);
    cfg = json_pack ("{s:s, s:s, s:I}", "mediaType", OCI_MEDIA_CONFIG, "digest", cdig, "size",
                     (json_int_t) strlen (text));
    free (text);
  }
  man = json_pack ("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType", OCI_MEDIA_MANIFEST,
                   "config", cfg, "layers", layers);
  s = json_dumps (man, JSON_COMPACT);
  feed_blob (l, s, strlen (s), mdig);
  list = json_array ();
  for (int i = 0; i < (im->index_count ? im->index_count : 1); i++)
    json_array_append_new (list, json_pack ("{s:s, s:s, s:I}", "mediaType", OCI_MEDIA_MANIFEST,
                                            "digest", mdig, "size", (json_int_t) strlen (s)));
  free (s);
  idx = json_pack ("{s:i, s:o}", "schemaVersion", 2, "manifests", list);
  s = json_dumps (idx, JSON_COMPACT);
  assert_ok (feed (l, "index.json", s, strlen (s), &err), &err);
  free (s);
  json_decref (man);
  json_decref (idx);
  json_decref (ids);
}

static void
img_dispose (struct img *im)
{
  for (size_t i = 0; i < im->n; i++)
    free (im->layers[i].p);
}

/* The base layer: a small root file system. */
static void
base_layer (struct tbuf *t)
{
  ustar (t, "bin/", 0, '5', 0755, NULL);
  tar_file (t, "bin/sh", "#!fake shell\n");
  ustar (t, "usr/bin/passwd", 0, '0', 04755, NULL); /* setuid in a base: allowed */
  tar_end (t);
}

static void
app_layer (struct tbuf *t)
{
  ustar (t, "app/", 0, '5', 0755, NULL);
  tar_file (t, "app/server.js", "console.log('hi')\n");
  ustar (t, "app/link", 0, '2', 0777, "/usr/bin/node"); /* absolute symlinks are normal */
  ustar (t, "app/hard", 0, '1', 0644, "app/server.js");
  tar_file (t, "app/.wh.old", "");
  tar_end (t);
}

/* A base image whose one layer is `layer` (its manifest names a gzip blob
 * of it in `blob_path`). */
struct base
{
  struct oci_manifest *m;
  char *config;
  char *paths[2];
  struct ocilayout_base b;
};

static void
base_make (struct base *b, const struct tbuf *layer, const char *dir)
{
  char diff[DIGEST_STR_LEN + 1], cdig[DIGEST_STR_LEN + 1];
  char *man = NULL;
  bvm_error_t err = NULL;

  memset (b, 0, sizeof *b);
  digest_of (diff, layer->p, layer->len);
  assert_true (asprintf (&b->config,
                         "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                         "\"layers\",\"diff_ids\":[\"%s\"]}}",
                         diff)
               > 0);
  digest_of (cdig, b->config, strlen (b->config));
  assert_true (
      asprintf (
          &man,
          "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
          "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\","
          "\"digest\":\"sha256:2222222222222222222222222222222222222222222222222222222222222222\","
          "\"size\":99}]}",
          OCI_MEDIA_MANIFEST, OCI_MEDIA_CONFIG, cdig, strlen (b->config), OCI_MEDIA_LAYER_GZIP)
      > 0);
  assert_ok (oci_manifest_parse (&b->m, man, strlen (man), NULL, NULL, NULL, &err), &err);
  free (man);
  assert_true (asprintf (&b->paths[0], "%s/base0-0.blob", dir) > 0);
  b->b.name = "base/debian:12";
  b->b.manifest = b->m;
  b->b.config = b->config;
  b->b.config_len = strlen (b->config);
  b->b.layer_paths = b->paths;
}

static void
base_dispose (struct base *b)
{
  oci_manifest_free (b->m);
  free (b->config);
  free (b->paths[0]);
}

struct files
{
  char paths[16][128];
  char digests[16][DIGEST_STR_LEN + 1];
  size_t n;
};

static int
on_file (void *opaque, const char *path, const char *digest, uint64_t size, bvm_error_t *err)
{
  struct files *f = opaque;
  (void) size;
  (void) err;
  assert_true (f->n < 16);
  snprintf (f->paths[f->n], sizeof f->paths[0], "%s", path);
  snprintf (f->digests[f->n], sizeof f->digests[0], "%s", digest);
  f->n++;
  return 0;
}

/* --- cases ----------------------------------------------------------------- */

static void
test_names (void **state)
{
  (void) state;
  assert_int_equal (ocilayout_name_kind ("oci-layout"), OCILAYOUT_NAME_LAYOUT);
  assert_int_equal (ocilayout_name_kind ("index.json"), OCILAYOUT_NAME_INDEX);
  assert_int_equal (ocilayout_name_kind ("blobs"), OCILAYOUT_NAME_DIR);
  assert_int_equal (ocilayout_name_kind ("blobs/sha256"), OCILAYOUT_NAME_DIR);
  assert_int_equal (
      ocilayout_name_kind (
          "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
      OCILAYOUT_NAME_BLOB);
  assert_int_equal (
      ocilayout_name_kind (
          "blobs/sha256/0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"),
      OCILAYOUT_NAME_BAD);
  assert_int_equal (ocilayout_name_kind ("blobs/sha256/abc"), OCILAYOUT_NAME_BAD);
  assert_int_equal (ocilayout_name_kind ("blobs/sha512"), OCILAYOUT_NAME_BAD);
  assert_int_equal (ocilayout_name_kind ("index.json.bak"), OCILAYOUT_NAME_BAD);
  assert_int_equal (ocilayout_name_kind ("x"), OCILAYOUT_NAME_BAD);
  assert_int_equal (ocilayout_name_kind (NULL), OCILAYOUT_NAME_BAD);
}

static void
test_good_multi_layer (void **state)
{
  char *dir = t_tmpdir (), *bdir = NULL, *cfg = NULL;
  struct img im = { .n = 2, .diff_ids = -1 };
  struct ocilayout *l;
  struct ocilayout_image out;
  struct base b;
  struct files files = { .n = 0 };
  bvm_error_t err = NULL;
  json_t *labels, *doc;
  size_t cfg_len = 0;
  char digest[DIGEST_STR_LEN + 1];
  uint64_t size = 0;

  (void) state;
  base_layer (&im.layers[0]);
  app_layer (&im.layers[1]);
  im.config_extra = "\"Env\":[\"PATH=/usr/bin:/bin\",\"NODE_ENV=production\"],"
                    "\"Cmd\":[\"node\",\"/app/server.js\"],\"WorkingDir\":\"/app\","
                    "\"User\":\"1000\",\"ExposedPorts\":{\"8080/tcp\":{}},"
                    "\"Labels\":{\"a\":\"b\",\"dev.buildvm.commit\":\"forged\"},"
                    "\"StopSignal\":\"SIGTERM\",\"Volumes\":{\"/data\":{}},"
                    "\"Healthcheck\":{\"Test\":[\"CMD\",\"true\"]},\"OnBuild\":[\"RUN evil\"]";
  im.history = "[{\"created_by\":\"base\"},{\"created_by\":\"ENV x\",\"empty_layer\":true},"
               "{\"created_by\":\"COPY . /app\"}]";
  assert_true (asprintf (&bdir, "%s/blobs", dir) > 0);
  base_make (&b, &im.layers[0], dir);
  l = layout_new (bdir);
  feed_image (l, &im);
  assert_ok (ocilayout_verify (&out, l, &b.b, 1, on_file, &files, &err), &err);

  assert_int_equal (out.n_layers, 2);
  assert_int_equal (out.base, 0);
  assert_int_equal (out.n_base_layers, 1);
  /* the base's layer: pushed as the base's own blob */
  assert_string_equal (out.layers[0].desc.digest,
                       "sha256:2222222222222222222222222222222222222222222222222222222222222222");
  assert_string_equal (out.layers[0].path, b.paths[0]);
  assert_int_equal (out.layers[0].base, 0);
  /* the new one: the runner's gzip of it, whose content is the diffID */
  assert_int_equal (out.layers[1].base, -1);
  assert_string_equal (out.layers[1].desc.media_type, OCI_MEDIA_LAYER_GZIP);
  assert_ok (digest_file (digest, &size, out.layers[1].path, &err), &err);
  assert_string_equal (digest, out.layers[1].desc.digest);
  assert_int_equal (size, out.layers[1].desc.size);
  {
    char *sum = t_sh_out ("gzip -dc '%s' | sha256sum | cut -c1-64", out.layers[1].path);
    assert_string_equal (sum, out.layers[1].diff_id + 7);
    free (sum);
  }
  /* the SBOM sees the new layer's regular files only: no link, no whiteout */
  assert_int_equal (files.n, 1);
  assert_string_equal (files.paths[0], "app/server.js");
  assert_int_equal (out.files, 1);

  /* the runner's config: the kept fields, our labels, the verified rootfs */
  labels = json_pack ("{s:s, s:s}", "dev.buildvm.app", "x", "dev.buildvm.commit", "abc");
  assert_ok (ocilayout_config_build (&cfg, &cfg_len, &out, "2024-01-01T00:00:00Z", labels,
                                     "buildvm: x@abc (Dockerfile)", &err),
             &err);
  json_decref (labels);
  assert_ok (jsonx_parse (&doc, cfg, cfg_len, OCI_CONFIG_MAX, "config", &err), &err);
  {
    json_t *c = json_object_get (doc, "config");
    assert_string_equal (json_string_value (json_object_get (doc, "os")), "linux");
    assert_string_equal (json_string_value (json_object_get (c, "WorkingDir")), "/app");
    assert_string_equal (json_string_value (json_object_get (c, "User")), "1000");
    assert_non_null (json_object_get (json_object_get (c, "ExposedPorts"), "8080/tcp"));
    assert_non_null (json_object_get (json_object_get (c, "Volumes"), "/data"));
    assert_null (json_object_get (c, "Healthcheck"));
    assert_null (json_object_get (c, "OnBuild"));
    assert_string_equal (json_string_value (json_object_get (json_object_get (c, "Labels"),
                                                             "dev.buildvm.commit")),
                         "abc");
    assert_string_equal (json_string_value (json_object_get (json_object_get (c, "Labels"), "a")),
                         "b");
    assert_int_equal (json_array_size (
                          json_object_get (json_object_get (doc, "rootfs"), "diff_ids")),
                      2);
    assert_int_equal (json_array_size (json_object_get (doc, "history")), 4);
    assert_string_equal (json_string_value (
                             json_object_get (json_array_get (json_object_get (doc, "history"), 3),
                                              "created_by")),
                         "buildvm: x@abc (Dockerfile)");
  }
  json_decref (doc);
  free (cfg);
  ocilayout_image_dispose (&out);
  ocilayout_free (l);
  base_dispose (&b);
  img_dispose (&im);
  free (bdir);
  t_tmpdir_free (dir);
}

/* FROM scratch, gzip layers from the builder: every layer is new. */
static void
test_no_base_gzip (void **state)
{
  char *dir = t_tmpdir ();
  struct ocilayout *l = layout_new (dir);
  struct ocilayout_image out;
  struct tbuf t = { 0 };
  bvm_error_t err = NULL;
  char ldig[DIGEST_STR_LEN + 1], diff[DIGEST_STR_LEN + 1], cdig[DIGEST_STR_LEN + 1],
      mdig[DIGEST_STR_LEN + 1];
  char *gz = NULL, *text = NULL, *man = NULL, *idx = NULL;
  size_t gz_len = 0;

  (void) state;
  app_layer (&t);
  digest_of (diff, t.p, t.len);
  {
    char path[4096];
    snprintf (path, sizeof path, "%s/in.tar", dir);
    assert_ok (fs_write_atomic (path, t.p, t.len, 0600, &err), &err);
    assert_int_equal (t_sh ("gzip -n -c '%s' > '%s.gz'", path, path), 0);
    strcat (path, ".gz");
    assert_ok (fs_read_file (&gz, &gz_len, path, 1 << 20, &err), &err);
  }
  assert_ok (feed (l, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30, &err), &err);
  feed_blob (l, gz, gz_len, ldig);
  assert_true (asprintf (&text,
                         "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
                         "\"layers\",\"diff_ids\":[\"%s\"]}}",
                         diff)
               > 0);
  feed_blob (l, text, strlen (text), cdig);
  assert_true (
      asprintf (&man,
                "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
                "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\","
                "\"digest\":\"%s\",\"size\":%zu}]}",
                OCI_MEDIA_MANIFEST, OCI_MEDIA_CONFIG, cdig, strlen (text), OCI_MEDIA_LAYER_GZIP,
                ldig, gz_len)
      > 0);
  feed_blob (l, man, strlen (man), mdig);
  assert_true (asprintf (&idx,
                         "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":"
                         "\"%s\",\"size\":%zu,\"platform\":{\"os\":\"linux\",\"architecture\":"
                         "\"amd64\"}}]}",
                         OCI_MEDIA_MANIFEST, mdig, strlen (man))
               > 0);
  assert_ok (feed (l, "index.json", idx, strlen (idx), &err), &err);
  assert_ok (ocilayout_verify (&out, l, NULL, 0, NULL, NULL, &err), &err);
  assert_int_equal (out.base, -1);
  assert_int_equal (out.n_layers, 1);
  assert_string_equal (out.layers[0].diff_id, diff);
  assert_string_equal (out.manifest_digest, mdig);
  ocilayout_image_dispose (&out);
  ocilayout_free (l);
  free (gz);
  free (text);
  free (man);
  free (idx);
  free (t.p);
  t_tmpdir_free (dir);
}

static void
test_blob_name_mismatch (void **state)
{
  char *dir = t_tmpdir ();
  struct ocilayout *l = layout_new (dir);
  bvm_error_t err = NULL;
  struct stat st;
  char path[4096];

  (void) state;
  /* named as the sha256 of "" */
  assert_fails_with (
      feed (l, "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "not empty", 9, &err),
      &err, "does not match its name: its content is sha256:");
  /* and nothing is left of it */
  snprintf (path, sizeof path,
            "%s/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", dir);
  assert_int_equal (stat (path, &st), -1);
  assert_fails_with (feed (l, "blobs/sha256/x", "x", 1, &err), &err,
                     "is not a file of an OCI image layout");
  assert_ok (feed (l, "index.json", "{}", 2, &err), &err);
  assert_fails_with (feed (l, "index.json", "{}", 2, &err), &err, "twice");
  ocilayout_free (l);
  t_tmpdir_free (dir);
}

/* Build im, verify, expect the error. */
static void
expect_refused (struct img *im, int code, const char *needle)
{
  char *dir = t_tmpdir ();
  struct ocilayout *l = layout_new (dir);
  struct ocilayout_image out;
  bvm_error_t err = NULL;
  int r;

  feed_image (l, im);
  r = ocilayout_verify (&out, l, NULL, 0, NULL, NULL, &err);
  if (r == 0)
    fail_msg ("accepted, expected \"%s\"", needle);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  assert_int_equal (bvm_error_get_code (&err), code);
  assert_int_equal (out.n_layers, 0);
  assert_null (out.layers);
  bvm_error_free (&err);
  ocilayout_free (l);
  img_dispose (im);
  t_tmpdir_free (dir);
}

static void
test_dotdot_entry (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1 };
  (void) state;
  tar_file (&im.layers[0], "ok", "x");
  tar_file (&im.layers[0], "../x", "escaped");
  tar_end (&im.layers[0]);
  expect_refused (&im, BVM_E_INVALID, "entry `../x` has a `..` component");
}

static void
test_absolute_entry (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1 };
  (void) state;
  tar_file (&im.layers[0], "/etc/passwd", "root::0:0::/:/bin/sh\n");
  tar_end (&im.layers[0]);
  expect_refused (&im, BVM_E_INVALID, "entry `/etc/passwd` has an absolute path");
}

static void
test_hardlink_dotdot (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1 };
  (void) state;
  ustar (&im.layers[0], "h", 0, '1', 0644, "a/../../etc/shadow");
  tar_end (&im.layers[0]);
  expect_refused (&im, BVM_E_INVALID, "hardlink `h` has a target with a `..` component");
}

static void
test_device_node (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1 };
  (void) state;
  ustar (&im.layers[0], "dev/mem", 0, '3', 0666, NULL);
  tar_end (&im.layers[0]);
  expect_refused (&im, BVM_E_INVALID, "entry `dev/mem` is a device node");
}

static void
test_sparse_huge (void **state)
{
  static const char *const recs[] = { "GNU.sparse.major=1", "GNU.sparse.minor=0",
                                      "GNU.sparse.name=huge",
                                      "GNU.sparse.realsize=1152921504606846976", NULL };
  struct img im = { .n = 1, .diff_ids = -1 };
  char map[BLOCK];

  (void) state;
  memset (map, 0, sizeof map);
  snprintf (map, sizeof map, "1\n%llu\n1\n", (1ull << 60) - 1);
  pax (&im.layers[0], recs);
  ustar (&im.layers[0], "GNUSparseFile.0/huge", BLOCK + 1, '0', 0644, NULL);
  tb_add (&im.layers[0], map, BLOCK);
  tb_add (&im.layers[0], "x", 1);
  tb_pad (&im.layers[0]);
  tar_end (&im.layers[0]);
  expect_refused (&im, BVM_E_LIMIT, "declares 1152921504606846976 bytes, over the limit of");
}

static void
test_foreign_blob (void **state)
{
  struct img im = { .n = 2, .diff_ids = -1, .skip_layer_blob = true };
  (void) state;
  base_layer (&im.layers[0]);
  app_layer (&im.layers[1]);
  /* another app's layer: in the registry, not in this build's output */
  im.foreign = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
  expect_refused (
      &im, BVM_E_INVALID,
      "names layer 1 sha256:3333333333333333333333333333333333333333333333333333333333333333, which is not in the build's output");
}

static void
test_oversized_config (void **state)
{
  char *dir = t_tmpdir ();
  struct ocilayout *l = layout_new (dir);
  struct ocilayout_image out;
  bvm_error_t err = NULL;
  size_t big = OCI_CONFIG_MAX + 1;
  char *cfg = malloc (big), cdig[DIGEST_STR_LEN + 1], mdig[DIGEST_STR_LEN + 1];
  char *man = NULL, *idx = NULL;

  (void) state;
  assert_non_null (cfg);
  memset (cfg, ' ', big);
  cfg[0] = '{';
  cfg[big - 1] = '}';
  assert_ok (feed (l, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30, &err), &err);
  feed_blob (l, cfg, big, cdig);
  assert_true (
      asprintf (&man,
                "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
                "\"digest\":\"%s\",\"size\":%zu},\"layers\":[]}",
                OCI_MEDIA_MANIFEST, OCI_MEDIA_CONFIG, cdig, big)
      > 0);
  feed_blob (l, man, strlen (man), mdig);
  assert_true (asprintf (&idx,
                         "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\",\"digest\":"
                         "\"%s\",\"size\":%zu}]}",
                         OCI_MEDIA_MANIFEST, mdig, strlen (man))
               > 0);
  assert_ok (feed (l, "index.json", idx, strlen (idx), &err), &err);
  assert_fails_with (ocilayout_verify (&out, l, NULL, 0, NULL, NULL, &err), &err,
                     "config sha256:");
  feed_blob (l, "x", 1, cdig); /* the layout still takes files after a refusal */
  ocilayout_free (l);
  free (cfg);
  free (man);
  free (idx);
  t_tmpdir_free (dir);
}

static void
test_diff_ids_count (void **state)
{
  struct img im = { .n = 2, .diff_ids = 1 };
  (void) state;
  base_layer (&im.layers[0]);
  app_layer (&im.layers[1]);
  expect_refused (&im, BVM_E_INVALID,
                  "`rootfs.diff_ids` has 1 entries but the manifest has 2 layers");
}

static void
test_diff_id_mismatch (void **state)
{
  struct img im = { .n = 2, .diff_ids = -1, .wrong_diff = true };
  (void) state;
  base_layer (&im.layers[0]);
  app_layer (&im.layers[1]);
  expect_refused (&im, BVM_E_INVALID, "its uncompressed content is sha256:");
}

static void
test_two_manifests (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1, .index_count = 2 };
  (void) state;
  app_layer (&im.layers[0]);
  expect_refused (&im, BVM_E_INVALID, "`oci/index.json` names 2 manifests");
}

static void
test_config_fields (void **state)
{
  struct img a = { .n = 1, .diff_ids = -1, .config_extra = "\"Env\":[\"NOEQUALS\"]" };
  struct img b = { .n = 1, .diff_ids = -1, .config_extra = "\"ExposedPorts\":{\"99999/tcp\":{}}" };
  struct img c = { .n = 1,
                   .diff_ids = -1,
                   .history = "[{\"created_by\":\"a\"},{\"created_by\":\"b\"}]" };
  struct img d = { .n = 1, .diff_ids = -1, .config_extra = "\"Cmd\":\"sh -c x\"" };
  (void) state;
  app_layer (&a.layers[0]);
  app_layer (&b.layers[0]);
  app_layer (&c.layers[0]);
  app_layer (&d.layers[0]);
  expect_refused (&a, BVM_E_INVALID, "`config.Env[0]` is not KEY=VALUE");
  expect_refused (&b, BVM_E_INVALID, "`config.ExposedPorts` has an invalid key `99999/tcp`");
  expect_refused (&c, BVM_E_INVALID, "`history` has 2 entries with a layer, but the image has 1");
  expect_refused (&d, BVM_E_INVALID, "`config.Cmd` is not an array");
}

static void
test_truncated_layer (void **state)
{
  struct img im = { .n = 1, .diff_ids = -1 };
  (void) state;
  ustar (&im.layers[0], "big", 10000, '0', 0644, NULL);
  tb_add (&im.layers[0], "yyyy", 4);
  expect_refused (&im, BVM_E_INVALID, "layer 0 (sha256:");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_names),
    cmocka_unit_test (test_good_multi_layer),
    cmocka_unit_test (test_no_base_gzip),
    cmocka_unit_test (test_blob_name_mismatch),
    cmocka_unit_test (test_dotdot_entry),
    cmocka_unit_test (test_absolute_entry),
    cmocka_unit_test (test_hardlink_dotdot),
    cmocka_unit_test (test_device_node),
    cmocka_unit_test (test_sparse_huge),
    cmocka_unit_test (test_foreign_blob),
    cmocka_unit_test (test_oversized_config),
    cmocka_unit_test (test_diff_ids_count),
    cmocka_unit_test (test_diff_id_mismatch),
    cmocka_unit_test (test_two_manifests),
    cmocka_unit_test (test_config_fields),
    cmocka_unit_test (test_truncated_layer),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
