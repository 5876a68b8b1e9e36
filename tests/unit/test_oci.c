/* test_oci.c - layers, image config, manifests, image layouts (with skopeo and umoci) */
#include "support.h"

#include "digest.h"
#include "jsonx.h"
#include "oci.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- helpers --------------------------------------------------------------- */

static void
add_entry (struct oci_layer *l, const char *path, int type, mode_t perm, const char *data,
           size_t len, const char *target)
{
  struct archive *a = oci_layer_archive (l);
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, path);
  archive_entry_set_filetype (e, (unsigned) type);
  archive_entry_set_perm (e, perm);
  archive_entry_set_uid (e, 0);
  archive_entry_set_gid (e, 0);
  archive_entry_set_mtime (e, 1700000000, 0);
  if (type == AE_IFREG)
    archive_entry_set_size (e, (la_int64_t) len);
  if (target)
    archive_entry_set_symlink (e, target);
  if (archive_write_header (a, e) != ARCHIVE_OK)
    fail_msg ("header %s: %s", path, archive_error_string (a));
  if (type == AE_IFREG && len > 0 && archive_write_data (a, data, len) != (la_ssize_t) len)
    fail_msg ("data %s: %s", path, archive_error_string (a));
  archive_entry_free (e);
}

/* Deterministic incompressible-ish bytes (xorshift), so the compressed
 * stream spans several 1 MiB output buffers. */
static char *
noise (size_t n)
{
  char *p = malloc (n);
  uint64_t x = 88172645463325252ull;
  assert_non_null (p);
  for (size_t i = 0; i < n; i++)
    {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      p[i] = (char) (x & 0xff);
    }
  return p;
}

#define BIG_SIZE (3u << 20)

/* The sample layer: a directory, a file, an executable, a symlink and a big
 * file. */
static void
build_layer (const char *blob, int level, struct oci_descriptor *d,
             char diff_id[DIGEST_STR_LEN + 1])
{
  struct oci_layer *l = NULL;
  bvm_error_t err = NULL;
  char *big = noise (BIG_SIZE);

  assert_ok (oci_layer_new (&l, blob, level, &err), &err);
  assert_ok (oci_layer_add_dir (l, "app/", 0755, 0, 0, 1700000000, &err), &err);
  add_entry (l, "app/hello.txt", AE_IFREG, 0644, "hello world\n", 12, NULL);
  add_entry (l, "app/run.sh", AE_IFREG, 0755, "#!/bin/sh\necho hi\n", 18, NULL);
  add_entry (l, "app/link", AE_IFLNK, 0777, NULL, 0, "hello.txt");
  add_entry (l, "app/big.bin", AE_IFREG, 0600, big, BIG_SIZE, NULL);
  assert_ok (oci_layer_finish (l, d, diff_id, &err), &err);
  assert_true (oci_layer_tar_size (l) > BIG_SIZE);
  oci_layer_free (l);
  free (big);
}

static char *
sha_of (const char *cmd_fmt, const char *path)
{
  char *cmd = NULL, *out, *r;
  if (asprintf (&cmd, cmd_fmt, path) < 0)
    abort ();
  out = t_sh_out ("%s | sha256sum | cut -d' ' -f1", cmd);
  free (cmd);
  if (asprintf (&r, "sha256:%s", out) < 0)
    abort ();
  free (out);
  return r;
}

/* --- names ------------------------------------------------------------------ */

static void
test_names (void **state)
{
  (void) state;
  assert_null (oci_repository_problem ("apps/hello"));
  assert_null (oci_repository_problem ("a"));
  assert_null (oci_repository_problem ("base/alpine-ish"));
  assert_null (oci_repository_problem ("a.b__c--d/e_f/0"));
  /* the cases of the copy spec.c had (the build spec's base image) */
  assert_null (oci_repository_problem ("a/b.c/d__e/f-g--h"));
  assert_non_null (oci_repository_problem ("apps/hello-"));
  assert_non_null (oci_repository_problem ("apps/Hello"));
  assert_non_null (oci_repository_problem (""));
  assert_non_null (oci_repository_problem ("Apps/hello"));
  assert_non_null (oci_repository_problem ("apps//hello"));
  assert_non_null (oci_repository_problem ("/apps"));
  assert_non_null (oci_repository_problem ("apps/"));
  assert_non_null (oci_repository_problem ("apps/-x"));
  assert_non_null (oci_repository_problem ("a..b"));
  assert_non_null (oci_repository_problem ("a___b"));
  assert_non_null (oci_repository_problem ("a._b"));
  assert_non_null (oci_repository_problem ("apps/../x"));
  assert_non_null (oci_repository_problem ("apps/x?y"));
  assert_non_null (oci_repository_problem ("apps/x%2f"));
  {
    char longname[300];
    memset (longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_non_null (oci_repository_problem (longname));
    longname[256] = '\0';
    assert_non_null (oci_repository_problem (longname));
    longname[255] = '\0';
    assert_null (oci_repository_problem (longname));
  }
  assert_null (oci_tag_problem ("0123456789abcdef0123456789abcdef01234567"));
  assert_null (oci_tag_problem ("_v1.2-rc"));
  assert_null (oci_tag_problem ("_"));
  assert_null (oci_tag_problem ("v1.0-rc_1"));
  assert_null (oci_tag_problem ("V1"));
  assert_non_null (oci_tag_problem (".v1"));
  assert_non_null (oci_tag_problem ("-v1"));
  assert_non_null (oci_tag_problem (""));
  assert_non_null (oci_tag_problem ("a/b"));
  assert_non_null (oci_tag_problem ("a:b"));
  {
    char t[130];
    memset (t, 'a', 129);
    t[129] = '\0';
    assert_non_null (oci_tag_problem (t));
    t[128] = '\0';
    assert_null (oci_tag_problem (t));
  }
  assert_null (oci_reference_problem (
      "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
  assert_non_null (oci_reference_problem ("sha256:0123"));
}

/* --- layers ----------------------------------------------------------------- */

static void
test_layer_digests (void **state)
{
  char *d = t_tmpdir ();
  char blob[512], blob2[512], blob9[512];
  struct oci_descriptor desc, desc2, desc9;
  char diff[DIGEST_STR_LEN + 1], diff2[DIGEST_STR_LEN + 1], diff9[DIGEST_STR_LEN + 1];
  char *s, *list;
  (void) state;

  snprintf (blob, sizeof blob, "%s/layer.tar.gz", d);
  build_layer (blob, 1, &desc, diff);
  assert_string_equal (desc.media_type, OCI_MEDIA_LAYER_GZIP);

  s = sha_of ("cat '%s'", blob);
  assert_string_equal (desc.digest, s);
  free (s);
  s = sha_of ("gzip -dc '%s'", blob);
  assert_string_equal (diff, s);
  free (s);
  s = t_sh_out ("stat -c %%s '%s'", blob);
  assert_int_equal (strtoull (s, NULL, 10), desc.size);
  free (s);
  /* the blob is larger than one 1 MiB output buffer */
  assert_true (desc.size > (2u << 20));

  list = t_sh_out ("tar --numeric-owner -tvzf '%s' | tr -s ' '", blob);
  assert_non_null (strstr (list, "drwxr-xr-x 0/0 0 "));
  assert_non_null (strstr (list, "-rwxr-xr-x 0/0 18 "));
  assert_non_null (strstr (list, "app/link -> hello.txt"));
  assert_non_null (strstr (list, "-rw------- 0/0 3145728 "));
  free (list);
  assert_int_equal (t_sh ("tar -xOzf '%s' app/hello.txt | grep -qx 'hello world'", blob), 0);

  /* the same input gives the same bytes; another level only changes the blob */
  snprintf (blob2, sizeof blob2, "%s/layer2.tar.gz", d);
  build_layer (blob2, 1, &desc2, diff2);
  assert_string_equal (desc.digest, desc2.digest);
  assert_string_equal (diff, diff2);
  assert_int_equal (t_sh ("cmp -s '%s' '%s'", blob, blob2), 0);
  snprintf (blob9, sizeof blob9, "%s/layer9.tar.gz", d);
  build_layer (blob9, 9, &desc9, diff9);
  assert_string_not_equal (desc.digest, desc9.digest);
  assert_string_equal (diff, diff9);
  /* compressed in the caller's thread alone: the same bytes as with the
   * compressing threads (the blocks and their dictionaries depend on the
   * bytes only) */
  oci_layer_set_threads (0);
  build_layer (blob2, 1, &desc2, diff2);
  oci_layer_set_threads (2);
  assert_string_equal (desc.digest, desc2.digest);
  assert_int_equal (t_sh ("cmp -s '%s' '%s'", blob, blob2), 0);
  /* text over several blocks: its matches reach back into the block
   * before (the dictionary); gzip -dc gives the tar back */
  {
    size_t n = (5u << 20) / 2 + 12345, off = 0;
    char *text = malloc (n);
    struct oci_layer *l = NULL;
    bvm_error_t err = NULL;
    char blobt[512], blobt0[512];
    struct oci_descriptor dt, dt0;
    char difft[DIGEST_STR_LEN + 1], difft0[DIGEST_STR_LEN + 1];
    assert_non_null (text);
    for (unsigned i = 0; off < n; i++)
      {
        int k = snprintf (text + off, n - off, "line %u of a text that repeats %u\n", i % 977,
                          i % 13);
        off += k > 0 && (size_t) k < n - off ? (size_t) k : n - off;
      }
    snprintf (blobt, sizeof blobt, "%s/text.tar.gz", d);
    snprintf (blobt0, sizeof blobt0, "%s/text0.tar.gz", d);
    for (int pass = 0; pass < 2; pass++)
      {
        oci_layer_set_threads (pass == 0 ? 2 : 0);
        assert_ok (oci_layer_new (&l, pass == 0 ? blobt : blobt0, 1, &err), &err);
        add_entry (l, "text.txt", AE_IFREG, 0644, text, n, NULL);
        assert_ok (oci_layer_finish (l, pass == 0 ? &dt : &dt0, pass == 0 ? difft : difft0, &err),
                   &err);
        oci_layer_free (l);
      }
    oci_layer_set_threads (2);
    assert_true (dt.size < n / 4); /* it did compress, across blocks */
    assert_string_equal (dt.digest, dt0.digest);
    s = sha_of ("gzip -dc '%s'", blobt);
    assert_string_equal (difft, s);
    free (s);
    s = t_sh_out ("tar -xOzf '%s' text.txt | wc -c", blobt);
    assert_int_equal (strtoull (s, NULL, 10), n);
    free (s);
    free (text);
  }
  /* one gzip member, read whole by zlib itself (gzip -t checks the CRC and
   * the length; python's zlib refuses trailing garbage or a second member) */
  assert_int_equal (t_sh ("gzip -t '%s'", blob), 0);
  assert_int_equal (t_sh ("python3 -c 'import sys, zlib; d = zlib.decompressobj(31); "
                          "d.decompress(open(sys.argv[1], \"rb\").read()); "
                          "sys.exit(0 if d.eof and not d.unused_data else 1)' '%s'",
                          blob),
                    0);
  t_tmpdir_free (d);
}

static void
test_layer_errors (void **state)
{
  char *d = t_tmpdir ();
  char blob[512];
  struct oci_layer *l = NULL;
  bvm_error_t err = NULL;
  (void) state;

  snprintf (blob, sizeof blob, "%s/partial.tar.gz", d);
  assert_ok (oci_layer_new (&l, blob, 1, &err), &err);
  assert_fails_with (oci_layer_add_dir (l, "../up", 0755, 0, 0, 0, &err), &err,
                     "must be relative");
  assert_fails_with (oci_layer_add_dir (l, "/abs", 0755, 0, 0, 0, &err), &err, "must be relative");
  assert_fails_with (oci_layer_add_dir (l, "a/./b", 0755, 0, 0, 0, &err), &err,
                     "must be relative");
  add_entry (l, "x", AE_IFREG, 0644, "x", 1, NULL);
  assert_int_equal (access (blob, F_OK), 0);
  /* not finished: free removes the partial blob */
  oci_layer_free (l);
  assert_int_equal (access (blob, F_OK), -1);

  assert_fails_with (oci_layer_new (&l, "/nonexistent/dir/blob", 1, &err), &err,
                     "create layer blob `/nonexistent/dir/blob`");
  assert_fails_with (oci_layer_new (&l, blob, 10, &err), &err, "gzip level 10");

  /* a write error (here: the file size limit) surfaces through libarchive's
   * error string or oci_layer_finish, and the partial blob is removed.
   * Compressed in the caller's thread, the block is written as soon as it
   * is full, so archive_write_data fails; with the compressing threads a
   * block may still be in flight then, and the error comes at the latest
   * from oci_layer_finish. */
  for (unsigned threads = 0; threads <= 2; threads += 2)
    {
      struct oci_descriptor desc;
      char diff[DIGEST_STR_LEN + 1];
      char *big = noise (BIG_SIZE);
      struct archive_entry *e = archive_entry_new ();
      struct rlimit old, small = { 1 << 20, 1 << 20 };
      la_ssize_t r;

      signal (SIGXFSZ, SIG_IGN);
      assert_int_equal (getrlimit (RLIMIT_FSIZE, &old), 0);
      small.rlim_max = old.rlim_max;
      oci_layer_set_threads (threads);
      assert_ok (oci_layer_new (&l, blob, 0, &err), &err);
      assert_int_equal (setrlimit (RLIMIT_FSIZE, &small), 0);
      archive_entry_set_pathname (e, "big");
      archive_entry_set_filetype (e, AE_IFREG);
      archive_entry_set_perm (e, 0644);
      archive_entry_set_size (e, BIG_SIZE);
      assert_int_equal (archive_write_header (oci_layer_archive (l), e), ARCHIVE_OK);
      r = archive_write_data (oci_layer_archive (l), big, BIG_SIZE);
      if (threads == 0 || r < 0)
        {
          assert_true (r < 0);
          assert_non_null (
              strstr (archive_error_string (oci_layer_archive (l)), "File too large"));
        }
      assert_fails_with (oci_layer_finish (l, &desc, diff, &err), &err, "partial.tar.gz");
      assert_int_equal (setrlimit (RLIMIT_FSIZE, &old), 0);
      archive_entry_free (e);
      oci_layer_free (l);
      assert_int_equal (access (blob, F_OK), -1);
      free (big);
    }
  /* never a device or anything but a regular file: free would unlink it */
  assert_fails_with (oci_layer_new (&l, "/dev/null", 1, &err), &err, "not a regular file");
  t_tmpdir_free (d);
}

/* --- config and manifest ------------------------------------------------------- */

static const char *const test_env[] = { "PATH=/usr/bin:/bin", "APP_ENV=prod", NULL };
static const char *const test_entry[] = { "/app/run.sh", NULL };
static const char *const test_cmd[] = { "--serve", NULL };
static const char *const test_ports[] = { "8080/tcp", "53/udp", "9000", NULL };

static json_t *
test_labels (void)
{
  return json_pack ("{s:s, s:s}", "org.opencontainers.image.revision",
                    "0123456789abcdef0123456789abcdef01234567", "buildvm.vm-image",
                    "sha256:1111111111111111111111111111111111111111111111111111111111111111");
}

static void
test_config_build (void **state)
{
  cleanup_json json_t *labels = test_labels ();
  struct oci_image_spec spec = {
    .created = "2024-01-02T03:04:05Z",
    .entrypoint = test_entry,
    .cmd = test_cmd,
    .env = test_env,
    .workdir = "/app",
    .exposed_ports = test_ports,
    .labels = labels,
    .history_created_by = "buildvm deploy hello@0123456",
  };
  const char *diff_ids[] = {
    "sha256:2222222222222222222222222222222222222222222222222222222222222222"
  };
  char *out = NULL, *out2 = NULL;
  size_t len = 0, len2 = 0;
  bvm_error_t err = NULL;
  json_t *doc = NULL;
  (void) state;

  assert_ok (oci_config_build (&out, &len, &spec, NULL, 0, diff_ids, 1, &err), &err);
  assert_ok (oci_config_build (&out2, &len2, &spec, NULL, 0, diff_ids, 1, &err), &err);
  assert_int_equal (len, len2);
  assert_memory_equal (out, out2, len);
  /* canonical: compact with sorted keys */
  assert_int_equal (strncmp (out, "{\"architecture\":\"amd64\",\"config\":{", 34), 0);
  assert_ok (jsonx_parse (&doc, out, len, 1 << 20, "config", &err), &err);
  assert_string_equal (json_string_value (json_object_get (doc, "os")), "linux");
  assert_string_equal (json_string_value (json_object_get (doc, "created")),
                       "2024-01-02T03:04:05Z");
  {
    json_t *cfg = json_object_get (doc, "config");
    assert_string_equal (json_string_value (json_array_get (json_object_get (cfg, "Env"), 1)),
                         "APP_ENV=prod");
    assert_string_equal (json_string_value (
                             json_array_get (json_object_get (cfg, "Entrypoint"), 0)),
                         "/app/run.sh");
    assert_string_equal (json_string_value (json_array_get (json_object_get (cfg, "Cmd"), 0)),
                         "--serve");
    assert_string_equal (json_string_value (json_object_get (cfg, "WorkingDir")), "/app");
    assert_non_null (json_object_get (json_object_get (cfg, "ExposedPorts"), "9000/tcp"));
    assert_non_null (json_object_get (json_object_get (cfg, "ExposedPorts"), "53/udp"));
    assert_string_equal (json_string_value (json_object_get (json_object_get (cfg, "Labels"),
                                                             "org.opencontainers.image.revision")),
                         "0123456789abcdef0123456789abcdef01234567");
    assert_string_equal (json_string_value (
                             json_array_get (json_object_get (json_object_get (doc, "rootfs"),
                                                              "diff_ids"),
                                             0)),
                         diff_ids[0]);
    assert_int_equal (json_array_size (json_object_get (doc, "history")), 1);
  }
  json_decref (doc);
  free (out);
  free (out2);

  /* bad input is refused with the field named */
  {
    static const char *const bad_env[] = { "NOEQUALS", NULL };
    static const char *const bad_port[] = { "80/icmp", NULL };
    static const char *const bad_port2[] = { "70000", NULL };
    struct oci_image_spec s2 = { .env = bad_env };
    assert_fails_with (oci_config_build (&out, &len, &s2, NULL, 0, diff_ids, 1, &err), &err,
                       "env entry `NOEQUALS` is not KEY=VALUE");
    s2.env = NULL;
    s2.exposed_ports = bad_port;
    assert_fails_with (oci_config_build (&out, &len, &s2, NULL, 0, diff_ids, 1, &err), &err,
                       "protocol other than");
    s2.exposed_ports = bad_port2;
    assert_fails_with (oci_config_build (&out, &len, &s2, NULL, 0, diff_ids, 1, &err), &err,
                       "not PORT[/PROTO]");
    s2.exposed_ports = NULL;
    {
      const char *bad_ids[] = { "sha256:xyz" };
      assert_fails_with (oci_config_build (&out, &len, &s2, NULL, 0, bad_ids, 1, &err), &err,
                         "diff_id `sha256:xyz`");
    }
  }
}

static void
test_config_base_merge (void **state)
{
  static const char base[]
      = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2020-01-01T00:00:00Z\","
        "\"config\":{\"Env\":[\"PATH=/usr/sbin:/usr/bin\",\"LANG=C\"],\"Cmd\":[\"/bin/sh\"],"
        "\"Labels\":{\"base\":\"yes\",\"org.opencontainers.image.revision\":\"old\"},"
        "\"ExposedPorts\":{\"22/tcp\":{}},\"StopSignal\":\"SIGTERM\"},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:"
        "3333333333333333333333333333333333333333333333333333333333333333\"]},"
        "\"history\":[{\"created_by\":\"base layer\"}]}";
  static const char *const env[] = { "PATH=/app/bin:/usr/bin", "X=1", NULL };
  static const char *const ports[] = { "8080", NULL };
  cleanup_json json_t *labels = test_labels ();
  struct oci_image_spec spec = {
    .entrypoint = test_entry,
    .env = env,
    .exposed_ports = ports,
    .labels = labels,
  };
  const char *diff_ids[] = {
    "sha256:2222222222222222222222222222222222222222222222222222222222222222"
  };
  char *out = NULL;
  size_t len = 0;
  bvm_error_t err = NULL;
  json_t *doc = NULL, *cfg, *ids;
  (void) state;

  assert_ok (oci_config_build (&out, &len, &spec, base, sizeof base - 1, diff_ids, 1, &err), &err);
  assert_ok (jsonx_parse (&doc, out, len, 1 << 20, "config", &err), &err);
  cfg = json_object_get (doc, "config");
  /* env: PATH replaced in place, LANG kept, X appended */
  assert_int_equal (json_array_size (json_object_get (cfg, "Env")), 3);
  assert_string_equal (json_string_value (json_array_get (json_object_get (cfg, "Env"), 0)),
                       "PATH=/app/bin:/usr/bin");
  assert_string_equal (json_string_value (json_array_get (json_object_get (cfg, "Env"), 1)),
                       "LANG=C");
  /* a new entrypoint drops the inherited cmd */
  assert_null (json_object_get (cfg, "Cmd"));
  assert_string_equal (json_string_value (json_object_get (cfg, "StopSignal")), "SIGTERM");
  assert_non_null (json_object_get (json_object_get (cfg, "ExposedPorts"), "22/tcp"));
  assert_non_null (json_object_get (json_object_get (cfg, "ExposedPorts"), "8080/tcp"));
  assert_string_equal (json_string_value (
                           json_object_get (json_object_get (cfg, "Labels"), "base")),
                       "yes");
  assert_string_equal (json_string_value (json_object_get (json_object_get (cfg, "Labels"),
                                                           "org.opencontainers.image.revision")),
                       "0123456789abcdef0123456789abcdef01234567");
  /* the base's created date is not ours */
  assert_null (json_object_get (doc, "created"));
  ids = json_object_get (json_object_get (doc, "rootfs"), "diff_ids");
  assert_int_equal (json_array_size (ids), 2);
  assert_string_equal (json_string_value (json_array_get (ids, 1)), diff_ids[0]);
  assert_int_equal (json_array_size (json_object_get (doc, "history")), 2);
  assert_string_equal (json_string_value (
                           json_object_get (json_array_get (json_object_get (doc, "history"), 0),
                                            "created_by")),
                       "base layer");
  json_decref (doc);
  free (out);

  /* hostile or mismatched bases */
  {
    struct oci_image_spec arm = { .architecture = "arm64" };
    assert_fails_with (oci_config_build (&out, &len, &arm, base, sizeof base - 1, diff_ids, 1,
                                         &err),
                       &err, "base image is for architecture `amd64`, not `arm64`");
  }
  {
    static const char b1[] = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"md5:x\"]}}";
    static const char b2[] = "{\"config\":{\"Env\":\"PATH=/\"},\"rootfs\":{\"type\":\"layers\","
                             "\"diff_ids\":[]}}";
    static const char b3[] = "{\"os\":\"linux\"}";
    static const char b4[] = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},\"a\":1,\"a\":2}";
    assert_fails_with (oci_config_build (&out, &len, &spec, b1, sizeof b1 - 1, diff_ids, 1, &err),
                       &err, "rootfs.diff_ids[0]");
    assert_fails_with (oci_config_build (&out, &len, &spec, b2, sizeof b2 - 1, diff_ids, 1, &err),
                       &err, "`config.Env` is not an array");
    assert_fails_with (oci_config_build (&out, &len, &spec, b3, sizeof b3 - 1, diff_ids, 1, &err),
                       &err, "missing required field `rootfs`");
    assert_fails_with (oci_config_build (&out, &len, &spec, b4, sizeof b4 - 1, diff_ids, 1, &err),
                       &err, "duplicate");
  }
}

static void
test_manifest_roundtrip (void **state)
{
  struct oci_descriptor cfg = {
    OCI_MEDIA_CONFIG, "sha256:4444444444444444444444444444444444444444444444444444444444444444",
    123
  };
  struct oci_descriptor layers[2] = {
    { OCI_MEDIA_LAYER_GZIP,
      "sha256:5555555555555555555555555555555555555555555555555555555555555555", 10 },
    { OCI_MEDIA_LAYER_GZIP,
      "sha256:6666666666666666666666666666666666666666666666666666666666666666", 5000000000ull },
  };
  cleanup_json json_t *ann = json_pack ("{s:s}", "org.opencontainers.image.revision", "abc");
  char *out = NULL;
  size_t len = 0, n = 0;
  struct oci_manifest *m = NULL;
  const struct oci_descriptor *l;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (oci_manifest_build (&out, &len, &cfg, layers, 2, ann, &err), &err);
  assert_non_null (strstr (out, "\"schemaVersion\":2"));
  assert_non_null (strstr (out, "\"mediaType\":\"" OCI_MEDIA_MANIFEST "\""));
  assert_ok (oci_manifest_parse (&m, out, len, OCI_MEDIA_MANIFEST "; charset=utf-8", NULL, NULL,
                                 &err),
             &err);
  assert_int_equal (oci_manifest_kind (m), OCI_MANIFEST_IMAGE);
  assert_string_equal (oci_manifest_config (m)->digest, cfg.digest);
  assert_int_equal (oci_manifest_config (m)->size, 123);
  l = oci_manifest_layers (m, &n);
  assert_int_equal (n, 2);
  assert_string_equal (l[1].digest, layers[1].digest);
  assert_int_equal (l[1].size, 5000000000ull);
  assert_null (oci_manifest_selected (m));
  oci_manifest_free (m);
  free (out);

  {
    struct oci_descriptor bad = cfg;
    snprintf (bad.digest, sizeof bad.digest, "sha256:abc");
    assert_fails_with (oci_manifest_build (&out, &len, &bad, layers, 2, NULL, &err), &err,
                       "config digest `sha256:abc`");
  }
}

static void
test_manifest_parse_docker_and_index (void **state)
{
  static const char docker[]
      = "{\"schemaVersion\":2,\"mediaType\":\"" DOCKER_MEDIA_MANIFEST "\","
        "\"config\":{\"mediaType\":\"" DOCKER_MEDIA_CONFIG "\",\"size\":7,\"digest\":\"sha256:"
        "7777777777777777777777777777777777777777777777777777777777777777\"},"
        "\"layers\":[{\"mediaType\":\"" DOCKER_MEDIA_LAYER_GZIP
        "\",\"size\":8,\"digest\":\"sha256:"
        "8888888888888888888888888888888888888888888888888888888888888888\"}]}";
  static const char index[]
      = "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MEDIA_INDEX "\",\"manifests\":["
        "{\"mediaType\":\"" OCI_MEDIA_MANIFEST "\",\"size\":1,\"digest\":\"sha256:"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
        "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
        "{\"mediaType\":\"" OCI_MEDIA_MANIFEST "\",\"size\":2,\"digest\":\"sha256:"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\","
        "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"" OCI_MEDIA_MANIFEST "\",\"size\":3,\"digest\":\"sha256:"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\","
        "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}}]}";
  struct oci_manifest *m = NULL;
  const struct oci_descriptor *l;
  size_t n;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (oci_manifest_parse (&m, docker, sizeof docker - 1, DOCKER_MEDIA_MANIFEST, NULL, NULL,
                                 &err),
             &err);
  l = oci_manifest_layers (m, &n);
  assert_int_equal (n, 1);
  /* Docker's gzip layer type is reported as the OCI one */
  assert_string_equal (l[0].media_type, OCI_MEDIA_LAYER_GZIP);
  assert_string_equal (oci_manifest_media_type (m), DOCKER_MEDIA_MANIFEST);
  oci_manifest_free (m);

  assert_ok (oci_manifest_parse (&m, index, sizeof index - 1, NULL, NULL, NULL, &err), &err);
  assert_int_equal (oci_manifest_kind (m), OCI_MANIFEST_INDEX);
  assert_string_equal (oci_manifest_selected (m)->digest,
                       "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
  assert_null (oci_manifest_config (m));
  oci_manifest_free (m);
  assert_ok (oci_manifest_parse (&m, index, sizeof index - 1, NULL, "linux", "arm64", &err), &err);
  assert_int_equal (oci_manifest_selected (m)->size, 1);
  oci_manifest_free (m);
  assert_fails_with (oci_manifest_parse (&m, index, sizeof index - 1, NULL, "linux", "s390x",
                                         &err),
                     &err, "no `linux/s390x` image");
  /* a manifest served under another type than it claims */
  assert_fails_with (oci_manifest_parse (&m, docker, sizeof docker - 1, OCI_MEDIA_MANIFEST, NULL,
                                         NULL, &err),
                     &err, "served as");
}

static void
test_manifest_parse_hostile (void **state)
{
  static const struct
  {
    const char *body;
    const char *needle;
  } cases[] = {
    { "[]", "not a JSON object" },
    { "{\"schemaVersion\":1,\"fsLayers\":[]}", "schema 1" },
    { "{\"schemaVersion\":3,\"config\":{},\"layers\":[]}", "schemaVersion 3" },
    { "{\"schemaVersion\":\"2\"}", "must be an integer" },
    { "{\"schemaVersion\":2,\"layers\":[]}", "missing required field `config`" },
    { "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" OCI_MEDIA_CONFIG "\",\"size\":1,"
      "\"digest\":\"sha256:../../etc/passwd\"},\"layers\":[]}",
      "not a sha256 digest" },
    { "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" OCI_MEDIA_CONFIG "\",\"size\":-1,"
      "\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"},"
      "\"layers\":[]}",
      "outside the range" },
    { "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.cncf.helm.config.v1+json\","
      "\"size\":1,\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"},"
      "\"layers\":[]}",
      "not a container image config" },
    { "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" OCI_MEDIA_CONFIG "\",\"size\":1,"
      "\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"},"
      "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\","
      "\"size\":1,\"digest\":\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"}]}",
      "unsupported media type" },
    { "{\"schemaVersion\":2,\"mediaType\":\"text/html\"}", "not supported" },
    { "{\"schemaVersion\":2,\"mediaType\":\"" OCI_MEDIA_INDEX "\",\"manifests\":{}}",
      "must be an array" },
  };
  struct oci_manifest *m = NULL;
  bvm_error_t err = NULL;
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    assert_fails_with (oci_manifest_parse (&m, cases[i].body, strlen (cases[i].body), NULL, NULL,
                                           NULL, &err),
                       &err, cases[i].needle);
  /* over the cap */
  {
    size_t n = OCI_MANIFEST_MAX + 10;
    char *big = malloc (n);
    memset (big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    assert_fails_with (oci_manifest_parse (&m, big, n, NULL, NULL, NULL, &err), &err,
                       "over the limit");
    free (big);
  }
  /* too many layers */
  {
    struct buf_s
    {
      char *p;
      size_t len;
    } b = { NULL, 0 };
    FILE *f = open_memstream (&b.p, &b.len);
    fprintf (f,
             "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"%s\",\"size\":1,\"digest\":"
             "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"},"
             "\"layers\":[",
             OCI_MEDIA_CONFIG);
    for (int i = 0; i <= OCI_MAX_LAYERS; i++)
      fprintf (f,
               "%s{\"mediaType\":\"%s\",\"size\":1,\"digest\":\"sha256:"
               "1111111111111111111111111111111111111111111111111111111111111111\"}",
               i ? "," : "", OCI_MEDIA_LAYER_GZIP);
    fprintf (f, "]}");
    fclose (f);
    assert_fails_with (oci_manifest_parse (&m, b.p, b.len, NULL, NULL, NULL, &err), &err,
                       "more than 256 layers");
    free (b.p);
  }
}

/* --- image layout with skopeo and umoci ------------------------------------------ */

static void
test_layout_skopeo_umoci (void **state)
{
  char *d = t_tmpdir ();
  char blob[512], layout[512], bundle[600], p[700];
  struct oci_descriptor layer, cfgd;
  char diff[DIGEST_STR_LEN + 1];
  cleanup_json json_t *labels = test_labels ();
  struct oci_image_spec spec = {
    .created = "2024-01-02T03:04:05Z",
    .entrypoint = test_entry,
    .env = test_env,
    .workdir = "/app",
    .exposed_ports = test_ports,
    .labels = labels,
  };
  const char *ids[1];
  const char *paths[1];
  char *config = NULL, *manifest = NULL, *out;
  size_t config_len = 0, manifest_len = 0;
  bvm_error_t err = NULL;
  struct stat st;
  (void) state;

  snprintf (blob, sizeof blob, "%s/layer.tar.gz", d);
  build_layer (blob, 1, &layer, diff);
  ids[0] = diff;
  assert_ok (oci_config_build (&config, &config_len, &spec, NULL, 0, ids, 1, &err), &err);
  memset (&cfgd, 0, sizeof cfgd);
  snprintf (cfgd.media_type, sizeof cfgd.media_type, "%s", OCI_MEDIA_CONFIG);
  assert_ok (digest_buffer (cfgd.digest, config, config_len, &err), &err);
  cfgd.size = config_len;
  assert_ok (oci_manifest_build (&manifest, &manifest_len, &cfgd, &layer, 1, NULL, &err), &err);

  snprintf (layout, sizeof layout, "%s/layout", d);
  paths[0] = blob;
  assert_ok (oci_layout_write (layout, "v1", manifest, manifest_len, config, config_len, paths,
                               &layer, 1, &err),
             &err);
  /* a second tag in the same layout keeps the first */
  assert_ok (oci_layout_write (layout, "v2", manifest, manifest_len, config, config_len, paths,
                               &layer, 1, &err),
             &err);
  assert_ok (oci_layout_write (layout, "v2", manifest, manifest_len, config, config_len, paths,
                               &layer, 1, &err),
             &err);
  out = t_sh_out (
      "jq -r '.manifests[].annotations[\"org.opencontainers.image.ref.name\"]' %s/index.json "
      "| tr '\\n' ' '",
      layout);
  assert_string_equal (out, "v1 v2 ");
  free (out);

  out = t_sh_out (
      "skopeo inspect oci:%s:v1 | jq -c '[.Architecture, .Os, .Env, .Labels[\"buildvm.vm-image\"], (.Layers|length)]'",
      layout);
  assert_string_equal (
      out, "[\"amd64\",\"linux\",[\"PATH=/usr/bin:/bin\",\"APP_ENV=prod\"],"
           "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\",1]");
  free (out);
  out = t_sh_out ("skopeo inspect --config oci:%s:v2 | jq -r '.config.Entrypoint[0]'", layout);
  assert_string_equal (out, "/app/run.sh");
  free (out);

  snprintf (bundle, sizeof bundle, "%s/bundle", d);
  assert_int_equal (t_sh ("umoci unpack --image %s:v1 %s >/dev/null 2>&1", layout, bundle), 0);
  snprintf (p, sizeof p, "%s/rootfs/app/run.sh", bundle);
  assert_int_equal (stat (p, &st), 0);
  assert_int_equal (st.st_mode & 07777, 0755);
  snprintf (p, sizeof p, "%s/rootfs/app/big.bin", bundle);
  assert_int_equal (stat (p, &st), 0);
  assert_int_equal (st.st_size, BIG_SIZE);
  assert_int_equal (st.st_mode & 07777, 0600);
  snprintf (p, sizeof p, "%s/rootfs/app/link", bundle);
  assert_int_equal (lstat (p, &st), 0);
  assert_true (S_ISLNK (st.st_mode));
  out = t_sh_out ("readlink %s", p);
  assert_string_equal (out, "hello.txt");
  free (out);
  out = t_sh_out ("cat %s/rootfs/app/hello.txt", bundle);
  assert_string_equal (out, "hello world");
  free (out);
  /* the runtime config umoci derives from our image config */
  out = t_sh_out ("jq -r '.process.cwd' %s/config.json", bundle);
  assert_string_equal (out, "/app");
  free (out);

  /* a manifest that does not describe the given blobs is refused */
  {
    struct oci_descriptor other = layer;
    other.size++;
    assert_fails_with (oci_layout_write (layout, "v3", manifest, manifest_len, config, config_len,
                                         paths, &other, 1, &err),
                       &err, "manifest layer 0 is not the given layer");
    assert_fails_with (oci_layout_write (layout, "bad/tag", manifest, manifest_len, config,
                                         config_len, paths, &layer, 1, &err),
                       &err, "not a valid tag");
  }
  free (config);
  free (manifest);
  t_tmpdir_free (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_names),
    cmocka_unit_test (test_layer_digests),
    cmocka_unit_test (test_layer_errors),
    cmocka_unit_test (test_config_build),
    cmocka_unit_test (test_config_base_merge),
    cmocka_unit_test (test_manifest_roundtrip),
    cmocka_unit_test (test_manifest_parse_docker_and_index),
    cmocka_unit_test (test_manifest_parse_hostile),
    cmocka_unit_test (test_layout_skopeo_umoci),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
