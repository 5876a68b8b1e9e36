/* test_registry.c - push and pull against real registries (docker-registry 2.8)
 *
 * Runs under tests/with-services.sh: BUILDVM_TEST_REGISTRY (htpasswd auth)
 * and BUILDVM_TEST_REGISTRY_OPEN. Starts its own helpers where a test needs
 * to break something: tests/lib/faulty-proxy.py in front of a registry, and
 * a token-auth registry with tests/lib/token-server.py. Images are checked
 * with skopeo and umoci, not with our own code.
 */
#include "support.h"

#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "registry.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define ABSENT "sha256:0000000000000000000000000000000000000000000000000000000000000000"

static char *tmp; /* per-run scratch directory */

/* Repository names unique to this process: the registries of a
 * with-services.sh session are shared with other test binaries. */
static const char *
R (const char *name)
{
  static char bufs[8][128];
  static unsigned next;
  char *b = bufs[next++ % 8];
  snprintf (b, sizeof bufs[0], "%s-p%d", name, (int) getpid ());
  return b;
}

/* --- background helpers ---------------------------------------------------------- */

/* What we started, so that teardown stops it even after a failed assertion
 * jumped out of a test. */
static pid_t spawned[16];

static pid_t
spawn_bg (const char *log, char *const argv[])
{
  posix_spawn_file_actions_t fa;
  pid_t pid;

  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2 (&fa, 1, 2);
  if (posix_spawnp (&pid, argv[0], &fa, NULL, argv, environ) != 0)
    fail_msg ("spawn %s", argv[0]);
  posix_spawn_file_actions_destroy (&fa);
  for (size_t i = 0; i < ARRAY_SIZE (spawned); i++)
    if (spawned[i] == 0)
      {
        spawned[i] = pid;
        break;
      }
  return pid;
}

static void
stop_bg (pid_t pid)
{
  if (pid <= 0)
    return;
  kill (pid, SIGTERM);
  waitpid (pid, NULL, 0);
  for (size_t i = 0; i < ARRAY_SIZE (spawned); i++)
    if (spawned[i] == pid)
      spawned[i] = 0;
}

static void
wait_tcp (int port)
{
  for (int i = 0; i < 200; i++)
    {
      struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
      int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      inet_pton (AF_INET, "127.0.0.1", &sa.sin_addr);
      if (connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0)
        {
          close (fd);
          return;
        }
      close (fd);
      usleep (50000);
    }
  fail_msg ("nothing listens on 127.0.0.1:%d", port);
}

static int
wait_port_file (const char *path)
{
  for (int i = 0; i < 200; i++)
    {
      if (access (path, F_OK) == 0)
        {
          char *s = t_read (path);
          int port = atoi (s);
          free (s);
          wait_tcp (port);
          return port;
        }
      usleep (50000);
    }
  fail_msg ("no port file %s", path);
  return -1;
}

static int
free_port (void)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;
  inet_pton (AF_INET, "127.0.0.1", &sa.sin_addr);
  assert_int_equal (bind (fd, (struct sockaddr *) &sa, sizeof sa), 0);
  getsockname (fd, (struct sockaddr *) &sa, &len);
  port = ntohs (sa.sin_port);
  close (fd);
  return port;
}

struct proxy
{
  pid_t pid;
  int port;
  char addr[64];
};

static void
proxy_start (struct proxy *p, const char *upstream, const char *name)
{
  char pf[600], log[600];
  snprintf (pf, sizeof pf, "%s/%s.port", tmp, name);
  snprintf (log, sizeof log, "%s/%s.log", tmp, name);
  unlink (pf);
  {
    char *argv[] = { "python3",     "tests/lib/faulty-proxy.py",
                     "--upstream",  (char *) upstream,
                     "--port-file", pf,
                     NULL };
    if (access ("tests/lib/faulty-proxy.py", R_OK) != 0)
      fail_msg ("run from the source tree: tests/lib/faulty-proxy.py not found");
    p->pid = spawn_bg (log, argv);
  }
  p->port = wait_port_file (pf);
  snprintf (p->addr, sizeof p->addr, "127.0.0.1:%d", p->port);
}

static void
proxy_rules (struct proxy *p, const char *json)
{
  assert_int_equal (t_sh ("curl -sf -X POST --data '%s' http://%s/__proxy__/rules >/dev/null",
                          json, p->addr),
                    0);
}

/* How many proxied requests match an extended regex ("PUT .*blobs/uploads"). */
static int
proxy_count (struct proxy *p, const char *re)
{
  char *s
      = t_sh_out ("curl -sf http://%s/__proxy__/log | jq '[.[] | select(test(\"%s\"))] | length'",
                  p->addr, re);
  int n = atoi (s);
  free (s);
  return n;
}

static void
proxy_reset (struct proxy *p)
{
  assert_int_equal (t_sh ("curl -sf -X POST http://%s/__proxy__/reset >/dev/null", p->addr), 0);
}

/* --- images ------------------------------------------------------------------------ */

static void
add_entry (struct oci_layer *l, const char *path, int type, mode_t perm, const char *data,
           size_t len, const char *target)
{
  struct archive *a = oci_layer_archive (l);
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, path);
  archive_entry_set_filetype (e, (unsigned) type);
  archive_entry_set_perm (e, perm);
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

struct image
{
  struct oci_descriptor layers[4]; /* base layers, then ours */
  const char *paths[4];            /* local blob of each layer; NULL for base layers */
  size_t n_layers;
  char layer_path[600];
  struct oci_descriptor config;
  char config_path[600];
  char *manifest;
  size_t manifest_len;
};

/* An image whose layer holds `prefix`/hello.txt (= content), run.sh (0755), a
 * symlink and `big` bytes of noise, optionally on top of a base. */
static void
image_build (struct image *img, const char *name, const char *prefix, const char *content,
             size_t big, const char *base_config, size_t base_len,
             const struct oci_descriptor *base_layers, size_t n_base)
{
  struct oci_layer *l = NULL;
  bvm_error_t err = NULL;
  char diff[DIGEST_STR_LEN + 1], p[300];
  const char *ids[1] = { diff };
  static const char *const env[] = { "PATH=/app:/usr/bin:/bin", "GREETING=hello", NULL };
  static const char *const entry[] = { "/app/run.sh", NULL };
  static const char *const ports[] = { "8080/tcp", NULL };
  cleanup_json json_t *labels
      = json_pack ("{s:s, s:s}", "org.opencontainers.image.revision", COMMIT, "buildvm.vm-image",
                   "sha256:1111111111111111111111111111111111111111111111111111111111111111");
  struct oci_image_spec spec = {
    .created = "2024-01-02T03:04:05Z",
    .entrypoint = entry,
    .env = env,
    .workdir = "/app",
    .exposed_ports = ports,
    .labels = labels,
    .history_created_by = "buildvm test",
  };
  char *config = NULL;
  size_t config_len = 0;

  memset (img, 0, sizeof *img);
  snprintf (img->layer_path, sizeof img->layer_path, "%s/%s.layer", tmp, name);
  assert_ok (oci_layer_new (&l, img->layer_path, 1, &err), &err);
  snprintf (p, sizeof p, "%s/", prefix);
  assert_ok (oci_layer_add_dir (l, p, 0755, 0, 0, 1700000000, &err), &err);
  snprintf (p, sizeof p, "%s/hello.txt", prefix);
  add_entry (l, p, AE_IFREG, 0644, content, strlen (content), NULL);
  snprintf (p, sizeof p, "%s/run.sh", prefix);
  add_entry (l, p, AE_IFREG, 0755, "#!/bin/sh\necho hi\n", 18, NULL);
  snprintf (p, sizeof p, "%s/link", prefix);
  add_entry (l, p, AE_IFLNK, 0777, NULL, 0, "hello.txt");
  if (big > 0)
    {
      char *noise = malloc (big);
      uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t) strlen (name);
      for (size_t i = 0; i < big; i++)
        {
          x ^= x << 13;
          x ^= x >> 7;
          x ^= x << 17;
          noise[i] = (char) x;
        }
      snprintf (p, sizeof p, "%s/big.bin", prefix);
      add_entry (l, p, AE_IFREG, 0644, noise, big, NULL);
      free (noise);
    }
  for (size_t i = 0; i < n_base; i++)
    img->layers[img->n_layers++] = base_layers[i];
  assert_ok (oci_layer_finish (l, &img->layers[img->n_layers], diff, &err), &err);
  img->paths[img->n_layers] = img->layer_path;
  img->n_layers++;
  oci_layer_free (l);

  assert_ok (oci_config_build (&config, &config_len, &spec, base_config, base_len, ids, 1, &err),
             &err);
  snprintf (img->config.media_type, sizeof img->config.media_type, "%s", OCI_MEDIA_CONFIG);
  assert_ok (digest_buffer (img->config.digest, config, config_len, &err), &err);
  img->config.size = config_len;
  snprintf (img->config_path, sizeof img->config_path, "%s/%s.config", tmp, name);
  assert_ok (fs_write_atomic (img->config_path, config, config_len, 0600, &err), &err);
  free (config);
  assert_ok (oci_manifest_build (&img->manifest, &img->manifest_len, &img->config, img->layers,
                                 img->n_layers, NULL, &err),
             &err);
}

static void
image_dispose (struct image *img)
{
  free (img->manifest);
  unlink (img->layer_path);
  unlink (img->config_path);
}

/* The deploy pipeline's push order: every blob, then the manifest (the tag). */
static int
push_image (struct registry *r, const char *repo, const char *tag, const struct image *img,
            int *uploads, char digest[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  bool up = false;
  *uploads = 0;
  for (size_t i = 0; i < img->n_layers; i++)
    {
      if (img->paths[i] == NULL)
        continue;
      if (registry_blob_push (r, repo, img->layers[i].digest, img->layers[i].size, img->paths[i],
                              &up, err)
          < 0)
        return -1;
      *uploads += up;
    }
  if (registry_blob_push (r, repo, img->config.digest, img->config.size, img->config_path, &up,
                          err)
      < 0)
    return -1;
  *uploads += up;
  return registry_manifest_put (r, repo, tag, OCI_MEDIA_MANIFEST, img->manifest, img->manifest_len,
                                digest, err);
}

static struct registry *
open_registry (const char *addr, const char *user, const char *pass, int attempts)
{
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry *r = NULL;
  bvm_error_t err = NULL;
  char url[128];

  snprintf (url, sizeof url, "http://%s", addr);
  o.url = url;
  o.username = user;
  o.password = pass;
  o.max_attempts = attempts;
  o.backoff_ms = 20;
  o.backoff_max_ms = 200;
  assert_ok (registry_open (&r, &o, &err), &err);
  return r;
}

static struct registry *
open_auth (void)
{
  return open_registry (t_service ("BUILDVM_TEST_REGISTRY"),
                        t_service ("BUILDVM_TEST_REGISTRY_USER"),
                        t_service ("BUILDVM_TEST_REGISTRY_PASS"), 5);
}

/* skopeo inspect [--config] of an image in the auth registry, through jq -c. */
static char *
skopeo_auth (bool config, const char *repo, const char *tag, const char *jq)
{
  return t_sh_out (
      "skopeo inspect %s --tls-verify=false --creds '%s:%s' docker://%s/%s:%s 2>&1 | jq -c '%s'",
      config ? "--config" : "", t_service ("BUILDVM_TEST_REGISTRY_USER"),
      t_service ("BUILDVM_TEST_REGISTRY_PASS"), t_service ("BUILDVM_TEST_REGISTRY"), repo, tag,
      jq);
}

/* --- tests -------------------------------------------------------------------------- */

static void
test_push_verify_idempotent (void **state)
{
  struct image img;
  struct registry *r = open_auth ();
  struct registry_stats st;
  bvm_error_t err = NULL;
  char d1[DIGEST_STR_LEN + 1], d2[DIGEST_STR_LEN + 1], gd[DIGEST_STR_LEN + 1];
  char oci_dir[600], bundle[600], p[700];
  int uploads = 0;
  char *out, *body = NULL, *type = NULL;
  size_t len = 0;
  bool exists = true;
  uint64_t size = 0;
  struct stat sb;
  (void) state;

  image_build (&img, "hello", "app", "hello world\n", 0, NULL, 0, NULL, 0);
  assert_ok (registry_ping (r, &err), &err);
  assert_ok (push_image (r, R ("apps/hello"), COMMIT, &img, &uploads, d1, &err), &err);
  assert_int_equal (uploads, 2);

  /* independent clients see the image */
  out = skopeo_auth (
      false, R ("apps/hello"), COMMIT,
      "[.Env, .Labels[\"org.opencontainers.image.revision\"], (.Layers|length), .Architecture]");
  assert_string_equal (out, "[[\"PATH=/app:/usr/bin:/bin\",\"GREETING=hello\"],\"" COMMIT
                            "\",1,\"amd64\"]");
  free (out);
  out = skopeo_auth (true, R ("apps/hello"), COMMIT,
                     "[.config.Entrypoint, .config.WorkingDir, .config.ExposedPorts]");
  assert_string_equal (out, "[[\"/app/run.sh\"],\"/app\",{\"8080/tcp\":{}}]");
  free (out);
  out = t_sh_out (
      "skopeo inspect --raw --tls-verify=false --creds '%s:%s' docker://%s/%s:%s | sha256sum | cut -c1-64",
      t_service ("BUILDVM_TEST_REGISTRY_USER"), t_service ("BUILDVM_TEST_REGISTRY_PASS"),
      t_service ("BUILDVM_TEST_REGISTRY"), R ("apps/hello"), COMMIT);
  assert_string_equal (out, d1 + 7);
  free (out);

  snprintf (oci_dir, sizeof oci_dir, "%s/copied", tmp);
  snprintf (bundle, sizeof bundle, "%s/bundle", tmp);
  assert_int_equal (
      t_sh (
          "skopeo copy -q --src-tls-verify=false --src-creds '%s:%s' docker://%s/%s:%s oci:%s:x >/dev/null",
          t_service ("BUILDVM_TEST_REGISTRY_USER"), t_service ("BUILDVM_TEST_REGISTRY_PASS"),
          t_service ("BUILDVM_TEST_REGISTRY"), R ("apps/hello"), COMMIT, oci_dir),
      0);
  assert_int_equal (t_sh ("umoci unpack --image %s:x %s >/dev/null 2>&1", oci_dir, bundle), 0);
  snprintf (p, sizeof p, "%s/rootfs/app/run.sh", bundle);
  assert_int_equal (stat (p, &sb), 0);
  assert_int_equal (sb.st_mode & 07777, 0755);
  snprintf (p, sizeof p, "%s/rootfs/app/link", bundle);
  assert_int_equal (lstat (p, &sb), 0);
  assert_true (S_ISLNK (sb.st_mode));
  out = t_sh_out ("cat %s/rootfs/app/link", bundle);
  assert_string_equal (out, "hello world");
  free (out);

  /* a re-run (a new process: a new registry object) uploads nothing and
   * produces the same digest */
  registry_free (r);
  r = open_auth ();
  assert_ok (push_image (r, R ("apps/hello"), COMMIT, &img, &uploads, d2, &err), &err);
  assert_int_equal (uploads, 0);
  assert_string_equal (d1, d2);
  registry_get_stats (r, &st);
  assert_int_equal (st.bytes_uploaded, 0);
  assert_int_equal (st.blobs_uploaded, 0);

  /* pull side: the manifest by tag and by digest, blob presence */
  assert_ok (registry_manifest_get (r, R ("apps/hello"), COMMIT, &body, &len, &type, gd, &err),
             &err);
  assert_string_equal (gd, d1);
  assert_int_equal (len, img.manifest_len);
  assert_memory_equal (body, img.manifest, len);
  assert_string_equal (type, OCI_MEDIA_MANIFEST);
  free (body);
  free (type);
  assert_ok (registry_manifest_get (r, R ("apps/hello"), d1, &body, &len, &type, gd, &err), &err);
  free (body);
  free (type);
  assert_ok (registry_blob_exists (r, R ("apps/hello"), img.layers[0].digest, &exists, &size,
                                   &err),
             &err);
  assert_true (exists);
  assert_int_equal (size, img.layers[0].size);
  assert_ok (registry_blob_exists (r, R ("apps/hello"), ABSENT, &exists, NULL, &err), &err);
  assert_false (exists);
  assert_fails_with (registry_manifest_get (r, R ("apps/hello"), "nosuchtag", &body, &len, &type,
                                            gd, &err),
                     &err, "returned HTTP 404 (MANIFEST_UNKNOWN");
  /* the tag phase asks whether a tag exists: a 404 is an answer */
  {
    bool found = true;
    assert_ok (registry_manifest_find (r, R ("apps/hello"), "nosuchtag", &found, &body, &len,
                                       &type, gd, &err),
               &err);
    assert_false (found);
    assert_null (body);
    assert_ok (registry_manifest_find (r, R ("apps/nosuchrepo"), "x", &found, &body, &len, &type,
                                       gd, &err),
               &err);
    assert_false (found);
    assert_ok (registry_manifest_find (r, R ("apps/hello"), COMMIT, &found, &body, &len, &type, gd,
                                       &err),
               &err);
    assert_true (found);
    assert_string_equal (gd, d1);
    free (body);
    free (type);
  }
  {
    char *cfg = NULL;
    size_t cl = 0;
    assert_ok (registry_blob_read (r, R ("apps/hello"), img.config.digest, 1 << 20, &cfg, &cl,
                                   &err),
               &err);
    assert_int_equal (cl, img.config.size);
    free (cfg);
    assert_fails_with (registry_blob_read (r, R ("apps/hello"), img.config.digest, 10, &cfg, &cl,
                                           &err),
                       &err, "larger than");
  }
  registry_free (r);
  image_dispose (&img);
}

static void
test_base_image_mount (void **state)
{
  struct image base, app;
  struct registry *r = open_auth ();
  bvm_error_t err = NULL;
  char d[DIGEST_STR_LEN + 1], bd[DIGEST_STR_LEN + 1];
  char *body = NULL, *type = NULL, *cfg = NULL, *out;
  size_t len = 0, cfg_len = 0, n = 0;
  struct oci_manifest *m = NULL;
  const struct oci_descriptor *bl;
  int uploads;
  bool mounted = false;
  struct registry_stats st;
  (void) state;

  /* a base image built with our own code, pushed first */
  image_build (&base, "base", "etc", "alpine-ish 3.19\n", 0, NULL, 0, NULL, 0);
  assert_ok (push_image (r, R ("base/alpine-ish"), "3", &base, &uploads, bd, &err), &err);

  /* pull its manifest and config as the deploy does */
  assert_ok (registry_manifest_get (r, R ("base/alpine-ish"), "3", &body, &len, &type, d, &err),
             &err);
  assert_string_equal (d, bd);
  assert_ok (oci_manifest_parse (&m, body, len, type, NULL, NULL, &err), &err);
  assert_int_equal (oci_manifest_kind (m), OCI_MANIFEST_IMAGE);
  assert_ok (registry_blob_read (r, R ("base/alpine-ish"), oci_manifest_config (m)->digest,
                                 OCI_CONFIG_MAX, &cfg, &cfg_len, &err),
             &err);
  bl = oci_manifest_layers (m, &n);
  assert_int_equal (n, 1);

  image_build (&app, "onbase", "app", "on a base\n", 0, cfg, cfg_len, bl, n);
  assert_int_equal (app.n_layers, 2);
  for (size_t i = 0; i < n; i++)
    {
      assert_ok (registry_blob_mount (r, R ("apps/onbase"), R ("base/alpine-ish"), bl[i].digest,
                                      &mounted, &err),
                 &err);
      assert_true (mounted);
    }
  assert_ok (push_image (r, R ("apps/onbase"), COMMIT, &app, &uploads, d, &err), &err);
  assert_int_equal (uploads, 2); /* our layer and config; the base layer was mounted */
  registry_get_stats (r, &st);
  assert_int_equal (st.blobs_mounted, 1);

  out = skopeo_auth (false, R ("apps/onbase"), COMMIT, "[(.Layers|length), .Layers[0]]");
  {
    char want[200];
    snprintf (want, sizeof want, "[2,\"%s\"]", bl[0].digest);
    assert_string_equal (out, want);
  }
  free (out);
  out = skopeo_auth (true, R ("apps/onbase"), COMMIT,
                     "[(.rootfs.diff_ids|length), (.history|length)]");
  assert_string_equal (out, "[2,2]");
  free (out);

  /* a mount the registry declines (the source lacks the blob) is no error */
  assert_ok (registry_blob_mount (r, R ("apps/onbase2"), R ("base/nothing-here"), bl[0].digest,
                                  &mounted, &err),
             &err);
  assert_false (mounted);
  /* ... and the copy fallback gets the blob there */
  assert_ok (registry_blob_copy (r, R ("apps/onbase2"), R ("base/alpine-ish"), bl[0].digest,
                                 bl[0].size, tmp, &err),
             &err);
  {
    bool exists = false;
    assert_ok (registry_blob_exists (r, R ("apps/onbase2"), bl[0].digest, &exists, NULL, &err),
               &err);
    assert_true (exists);
  }
  /* a layer fetched for a local image layout is verified */
  {
    char dest[600];
    snprintf (dest, sizeof dest, "%s/base.layer.copy", tmp);
    assert_ok (registry_blob_get (r, R ("base/alpine-ish"), bl[0].digest, bl[0].size, dest, &err),
               &err);
    assert_int_equal (t_sh ("cmp -s %s %s", dest, base.layer_path), 0);
    unlink (dest);
    assert_fails_with (registry_blob_get (r, R ("base/alpine-ish"), bl[0].digest, bl[0].size - 1,
                                          dest, &err),
                       &err, "larger than");
    assert_int_equal (access (dest, F_OK), -1);
  }
  oci_manifest_free (m);
  free (body);
  free (type);
  free (cfg);
  registry_free (r);
  image_dispose (&base);
  image_dispose (&app);
}

static void
test_chunked_upload (void **state)
{
  struct image img;
  struct proxy px;
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry *r = NULL;
  bvm_error_t err = NULL;
  char url[128], d[DIGEST_STR_LEN + 1], dest[600];
  int uploads;
  (void) state;

  image_build (&img, "chunky", "app", "chunks\n", 2u << 20, NULL, 0, NULL, 0);
  assert_true (img.layers[0].size > (1u << 20));
  proxy_start (&px, t_service ("BUILDVM_TEST_REGISTRY_OPEN"), "chunk-proxy");
  snprintf (url, sizeof url, "http://%s", px.addr);
  o.url = url;
  o.chunk_size = 256 * 1024;
  o.backoff_ms = 20;
  assert_ok (registry_open (&r, &o, &err), &err);
  assert_ok (push_image (r, R ("apps/chunky"), COMMIT, &img, &uploads, d, &err), &err);
  /* 2 MiB of noise in 256 KiB chunks */
  assert_true (proxy_count (&px, "^PATCH .*/blobs/uploads/") >= 8);
  snprintf (dest, sizeof dest, "%s/chunky.back", tmp);
  assert_ok (registry_blob_get (r, R ("apps/chunky"), img.layers[0].digest, img.layers[0].size,
                                dest, &err),
             &err);
  assert_int_equal (t_sh ("cmp -s %s %s", dest, img.layer_path), 0);
  unlink (dest);
  assert_int_equal (t_sh ("skopeo inspect --tls-verify=false docker://%s/%s:%s >/dev/null 2>&1",
                          t_service ("BUILDVM_TEST_REGISTRY_OPEN"), R ("apps/chunky"), COMMIT),
                    0);
  registry_free (r);
  stop_bg (px.pid);
  image_dispose (&img);
}

static void
test_wrong_credentials (void **state)
{
  struct registry *r;
  bvm_error_t err = NULL;
  struct registry_stats st;
  bool up;
  char msg_url[128];
  (void) state;

  r = open_registry (t_service ("BUILDVM_TEST_REGISTRY"), "buildvm-test", "not-the-password", 5);
  snprintf (msg_url, sizeof msg_url, "authentication failed for `http://%s`",
            t_service ("BUILDVM_TEST_REGISTRY"));
  assert_int_equal (registry_ping (r, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  assert_non_null (strstr (bvm_error_msg (&err), msg_url));
  assert_null (strstr (bvm_error_msg (&err), "not-the-password"));
  bvm_error_free (&err);
  {
    char f[600];
    snprintf (f, sizeof f, "%s/empty", tmp);
    t_write (f, "");
    assert_int_equal (registry_blob_push (r, R ("apps/denied"), ABSENT, 0, f, &up, &err), -1);
    assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
    assert_false (up);
    bvm_error_free (&err);
    assert_int_equal (registry_blob_exists (r, R ("apps/denied"), ABSENT, &up, NULL, &err), -1);
    assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
    assert_non_null (strstr (bvm_error_msg (&err), "HEAD `http://"));
    assert_non_null (strstr (bvm_error_msg (&err), "returned HTTP 401"));
    bvm_error_free (&err);
  }
  /* a 401 is never retried: two requests per operation at most (anonymous
   * then with credentials), and the credentials are sent at once after */
  registry_get_stats (r, &st);
  assert_true (st.requests <= 4);
  assert_int_equal (st.retries, 0);
  registry_free (r);

  r = open_registry (t_service ("BUILDVM_TEST_REGISTRY"), NULL, NULL, 5);
  assert_fails_with (registry_ping (r, &err), &err, "requires credentials and none were given");
  registry_free (r);
}

static void
test_registry_down (void **state)
{
  char addr[64];
  struct registry *r;
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry_stats st;
  bvm_error_t err = NULL;
  bool exists;
  int64_t t0;
  char url[128];
  (void) state;

  snprintf (addr, sizeof addr, "127.0.0.1:%d", free_port ());
  r = open_registry (addr, NULL, NULL, 3);
  t0 = now_ms ();
  assert_int_equal (registry_blob_exists (r, R ("apps/down"), ABSENT, &exists, NULL, &err), -1);
  assert_true (now_ms () - t0 < 3000);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_NETWORK);
  assert_non_null (strstr (bvm_error_msg (&err), "giving up after 3 attempts"));
  assert_non_null (strstr (bvm_error_msg (&err), "Could not connect") != NULL
                       ? strstr (bvm_error_msg (&err), "Could not connect")
                       : strstr (bvm_error_msg (&err), "onnect"));
  bvm_error_free (&err);
  registry_get_stats (r, &st);
  assert_int_equal (st.requests, 3);
  assert_int_equal (st.retries, 2);
  registry_free (r);

  /* the deadline bounds the retries too */
  snprintf (url, sizeof url, "http://%s", addr);
  o.url = url;
  o.max_attempts = 100;
  o.backoff_ms = 100;
  o.deadline_ms = now_ms () + 500;
  assert_ok (registry_open (&r, &o, &err), &err);
  t0 = now_ms ();
  assert_int_equal (registry_ping (r, &err), -1);
  assert_true (now_ms () - t0 < 2000);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  bvm_error_free (&err);
  registry_free (r);

  /* a canceled job stops at once, between retries too */
  {
    static volatile sig_atomic_t stop = 1;
    o.deadline_ms = 0;
    o.cancel = &stop;
    assert_ok (registry_open (&r, &o, &err), &err);
    assert_int_equal (registry_ping (r, &err), -1);
    assert_int_equal (bvm_error_get_code (&err), BVM_E_CANCELED);
    bvm_error_free (&err);
    registry_free (r);
  }
  o.cancel = NULL;
  o.user_agent = "buildvm\r\nX-Evil: 1";
  assert_fails_with (registry_open (&r, &o, &err), &err, "control characters");
}

static void
test_faulty_proxy (void **state)
{
  struct image img;
  struct proxy px;
  struct registry *r;
  struct registry_stats st;
  bvm_error_t err = NULL;
  char d[DIGEST_STR_LEN + 1];
  int uploads;
  const char *open_reg = t_service ("BUILDVM_TEST_REGISTRY_OPEN");
  (void) state;

  proxy_start (&px, open_reg, "proxy");

  /* 500 twice, then the real 201: the push succeeds after retries */
  image_build (&img, "flaky", "app", "flaky\n", 0, NULL, 0, NULL, 0);
  r = open_registry (px.addr, NULL, NULL, 5);
  proxy_rules (&px,
               "[{\"method\":\"PUT\",\"path\":\"/blobs/uploads/\",\"status\":500,\"count\":2}]");
  assert_ok (push_image (r, R ("apps/flaky"), COMMIT, &img, &uploads, d, &err), &err);
  registry_get_stats (r, &st);
  assert_int_equal (st.retries, 2);
  /* each retry restarts the upload: a new session and the whole body */
  assert_int_equal (proxy_count (&px, "^PUT .*/blobs/uploads/"), 4);
  assert_int_equal (proxy_count (&px, "^POST .*/blobs/uploads/"), 4);
  assert_int_equal (t_sh ("skopeo inspect --tls-verify=false docker://%s/%s:%s >/dev/null 2>&1",
                          open_reg, R ("apps/flaky"), COMMIT),
                    0);
  registry_free (r);
  image_dispose (&img);

  /* dropped connections and a 429 are retried too. (curl itself re-sends
   * once when a reused connection turns out dead, so 3 drops may cost us
   * only 2 attempts: count what reached the proxy.) */
  proxy_reset (&px);
  image_build (&img, "dropped", "app", "dropped\n", 0, NULL, 0, NULL, 0);
  r = open_registry (px.addr, NULL, NULL, 5);
  proxy_rules (
      &px, "[{\"method\":\"PUT\",\"path\":\"/blobs/uploads/\",\"action\":\"drop\",\"count\":3},"
           "{\"method\":\"HEAD\",\"path\":\"/blobs/\",\"status\":429,\"count\":1,"
           "\"headers\":{\"Retry-After\":\"0\"}}]");
  assert_ok (push_image (r, R ("apps/dropped"), COMMIT, &img, &uploads, d, &err), &err);
  registry_get_stats (r, &st);
  assert_true (st.retries >= 2);
  assert_int_equal (proxy_count (&px, "^PUT .*/blobs/uploads/"), 3 + 2);
  assert_int_equal (proxy_count (&px, "^HEAD .*/blobs/"), 1 + 2);
  registry_free (r);
  image_dispose (&img);

  /* 500 forever on uploads: bounded attempts, a clear error, no tag */
  proxy_reset (&px);
  image_build (&img, "broken", "app", "broken\n", 0, NULL, 0, NULL, 0);
  r = open_registry (px.addr, NULL, NULL, 3);
  proxy_rules (&px, "[{\"method\":\"PUT\",\"path\":\"/blobs/uploads/\",\"status\":500}]");
  assert_int_equal (push_image (r, R ("apps/broken"), COMMIT, &img, &uploads, d, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_NETWORK);
  assert_non_null (strstr (bvm_error_msg (&err), "giving up after 3 attempts"));
  assert_non_null (
      strstr (bvm_error_msg (&err), "returned HTTP 500 (UNKNOWN: injected by faulty-proxy)"));
  bvm_error_free (&err);
  assert_int_equal (proxy_count (&px, "^PUT .*/blobs/uploads/"), 3);
  assert_int_equal (proxy_count (&px, "^PUT .*/manifests/"), 0);

  /* 500 forever on the manifest: blobs are there, the tag is not */
  proxy_rules (&px, "[{\"method\":\"PUT\",\"path\":\"/manifests/\",\"status\":503}]");
  assert_int_equal (push_image (r, R ("apps/broken"), COMMIT, &img, &uploads, d, &err), -1);
  {
    char want[200];
    snprintf (want, sizeof want, "pushing manifest `%s:%s`", R ("apps/broken"), COMMIT);
    assert_non_null (strstr (bvm_error_msg (&err), want));
  }
  bvm_error_free (&err);
  assert_int_equal (proxy_count (&px, "^PUT .*/manifests/"), 3);
  assert_int_not_equal (
      t_sh ("skopeo inspect --tls-verify=false docker://%s/%s:%s >/dev/null 2>&1", open_reg,
            R ("apps/broken"), COMMIT),
      0);
  registry_free (r);

  /* a 4xx is never retried */
  proxy_reset (&px);
  r = open_registry (px.addr, NULL, NULL, 5);
  proxy_rules (&px, "[{\"method\":\"POST\",\"path\":\"/blobs/uploads/\",\"status\":400,"
                    "\"code\":\"NAME_INVALID\",\"message\":\"no such name\"}]");
  assert_int_equal (registry_blob_push (r, R ("apps/fourxx"), img.layers[0].digest,
                                        img.layers[0].size, img.layer_path, NULL, &err),
                    -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  assert_non_null (strstr (bvm_error_msg (&err), "HTTP 400 (NAME_INVALID: no such name)"));
  bvm_error_free (&err);
  assert_int_equal (proxy_count (&px, "^POST .*/blobs/uploads/"), 1);
  proxy_rules (
      &px, "[{\"method\":\"PUT\",\"path\":\"/manifests/\",\"status\":403,\"code\":\"DENIED\"}]");
  assert_int_equal (registry_manifest_put (r, R ("apps/broken"), COMMIT, OCI_MEDIA_MANIFEST,
                                           img.manifest, img.manifest_len, d, &err),
                    -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  bvm_error_free (&err);
  assert_int_equal (proxy_count (&px, "^PUT .*/manifests/"), 1);
  registry_get_stats (r, &st);
  assert_int_equal (st.retries, 0);

  /* an upload location on another origin never gets our data */
  proxy_rules (&px,
               "[{\"method\":\"POST\",\"path\":\"/blobs/uploads/\",\"status\":202,\"body\":\"\","
               "\"headers\":{\"Location\":\"http://127.0.0.2:9/v2/steal\"}}]");
  assert_fails_with (registry_blob_push (r, R ("apps/fourxx"), img.layers[0].digest,
                                         img.layers[0].size, img.layer_path, NULL, &err),
                     &err, "upload location on another origin");

  /* hostile replies: a manifest whose bytes do not match the digest, a
   * manifest over the cap, a blob of the wrong content */
  proxy_rules (&px, "[{\"method\":\"GET\",\"path\":\"/manifests/\",\"status\":200,\"body\":\"{}\","
                    "\"ctype\":\"" OCI_MEDIA_MANIFEST "\"}]");
  {
    char *body = NULL, *type = NULL;
    size_t len;
    assert_fails_with (registry_manifest_get (r, R ("apps/flaky"), d, &body, &len, &type, d, &err),
                       &err, "has digest");
  }
  proxy_rules (&px, "[{\"method\":\"GET\",\"path\":\"/manifests/\",\"status\":200,\"body\":\"x\","
                    "\"repeat\":5000000}]");
  {
    char *body = NULL, *type = NULL;
    size_t len;
    assert_fails_with (registry_manifest_get (r, R ("apps/flaky"), "x", &body, &len, &type, d,
                                              &err),
                       &err, "larger than");
  }
  proxy_rules (&px,
               "[{\"method\":\"GET\",\"path\":\"/blobs/\",\"status\":200,\"body\":\"evil\"}]");
  {
    char *b = NULL;
    size_t len;
    assert_fails_with (registry_blob_read (r, R ("apps/flaky"), img.config.digest, 1 << 20, &b,
                                           &len, &err),
                       &err, "with digest");
  }
  registry_free (r);
  image_dispose (&img);
  stop_bg (px.pid);
}

/* A registry with `auth: token` and our python token server. */
struct token_registry
{
  pid_t token_pid, reg_pid;
  int token_port;
  char addr[64];
  char dir[600];
};

static void
token_registry_start (struct token_registry *t)
{
  char pf[700], log[700], cfg[700], yml[2048];
  int port = free_port ();

  snprintf (t->dir, sizeof t->dir, "%s/tokenreg", tmp);
  assert_int_equal (t_sh ("mkdir -p %s/data", t->dir), 0);
  snprintf (pf, sizeof pf, "%s/token.port", t->dir);
  snprintf (log, sizeof log, "%s/token.log", t->dir);
  {
    char *argv[] = { "python3",     "tests/lib/token-server.py",
                     "--dir",       t->dir,
                     "--port-file", pf,
                     "--user",      "tok-user",
                     "--password",  "tok-pass",
                     NULL };
    t->token_pid = spawn_bg (log, argv);
  }
  t->token_port = wait_port_file (pf);
  snprintf (yml, sizeof yml,
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            "storage:\n  filesystem: {rootdirectory: %s/data}\n"
            "http: {addr: 127.0.0.1:%d}\n"
            "auth:\n  token:\n    realm: http://127.0.0.1:%d/token\n"
            "    service: buildvm-test-registry\n    issuer: buildvm-test-issuer\n"
            "    rootcertbundle: %s/token.crt\n",
            t->dir, port, t->token_port, t->dir);
  snprintf (cfg, sizeof cfg, "%s/config.yml", t->dir);
  t_write (cfg, yml);
  snprintf (log, sizeof log, "%s/registry.log", t->dir);
  {
    char *argv[] = { "docker-registry", "serve", cfg, NULL };
    t->reg_pid = spawn_bg (log, argv);
  }
  wait_tcp (port);
  snprintf (t->addr, sizeof t->addr, "127.0.0.1:%d", port);
}

static int
token_requests (struct token_registry *t)
{
  char *s = t_sh_out ("curl -sf http://127.0.0.1:%d/__stats__ | jq .requests", t->token_port);
  int n = atoi (s);
  free (s);
  return n;
}

static void
test_bearer_token (void **state)
{
  struct token_registry t;
  struct image base, app;
  struct registry *r;
  struct registry_stats st;
  bvm_error_t err = NULL;
  char d[DIGEST_STR_LEN + 1];
  int uploads, n0;
  bool mounted = false;
  char *out;
  (void) state;

  token_registry_start (&t);
  image_build (&base, "tokbase", "etc", "token base\n", 0, NULL, 0, NULL, 0);
  image_build (&app, "tokapp", "app", "token app\n", 0, NULL, 0, NULL, 0);

  r = open_registry (t.addr, "tok-user", "tok-pass", 5);
  assert_ok (registry_ping (r, &err), &err);
  assert_ok (push_image (r, R ("base/tok"), "1", &base, &uploads, d, &err), &err);
  assert_int_equal (uploads, 2);
  /* a token per scope, cached: ping, pull,push on base/tok (the first HEAD
   * asks for pull only) */
  n0 = token_requests (&t);
  assert_true (n0 <= 4);
  /* mount needs one token for push on the target and pull on the source */
  assert_ok (registry_blob_mount (r, R ("apps/tok"), R ("base/tok"), base.layers[0].digest,
                                  &mounted, &err),
             &err);
  assert_true (mounted);
  assert_ok (push_image (r, R ("apps/tok"), COMMIT, &app, &uploads, d, &err), &err);
  registry_get_stats (r, &st);
  assert_int_equal (st.retries, 0);
  registry_free (r);

  out = t_sh_out ("skopeo inspect --tls-verify=false --creds tok-user:tok-pass docker://%s/%s:%s "
                  "| jq -r '.Labels[\"org.opencontainers.image.revision\"]'",
                  t.addr, R ("apps/tok"), COMMIT);
  assert_string_equal (out, COMMIT);
  free (out);

  /* idempotent with bearer auth too */
  r = open_registry (t.addr, "tok-user", "tok-pass", 5);
  assert_ok (push_image (r, R ("apps/tok"), COMMIT, &app, &uploads, d, &err), &err);
  assert_int_equal (uploads, 0);
  registry_free (r);

  /* wrong credentials: the token server refuses, we say so, once */
  r = open_registry (t.addr, "tok-user", "wrong-pass", 5);
  assert_int_equal (registry_blob_exists (r, R ("apps/tok"), ABSENT, &mounted, NULL, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  assert_non_null (strstr (bvm_error_msg (&err), "authentication failed for `http://"));
  assert_non_null (strstr (bvm_error_msg (&err), "wrong credentials?"));
  assert_null (strstr (bvm_error_msg (&err), "wrong-pass"));
  bvm_error_free (&err);
  registry_get_stats (r, &st);
  assert_int_equal (st.retries, 0);
  registry_free (r);

  /* no credentials: an anonymous token that grants nothing */
  r = open_registry (t.addr, NULL, NULL, 5);
  assert_int_equal (registry_blob_exists (r, R ("apps/tok"), ABSENT, &mounted, NULL, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  assert_non_null (strstr (bvm_error_msg (&err), "returned HTTP 401"));
  bvm_error_free (&err);
  registry_free (r);

  image_dispose (&base);
  image_dispose (&app);
  stop_bg (t.reg_pid);
  stop_bg (t.token_pid);
}

static void
test_credentials_file (void **state)
{
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry *r = NULL;
  bvm_error_t err = NULL;
  char f[600], url[128], json[512];
  (void) state;

  snprintf (url, sizeof url, "http://%s", t_service ("BUILDVM_TEST_REGISTRY"));
  snprintf (f, sizeof f, "%s/creds.json", tmp);
  snprintf (json, sizeof json, "{\"username\":\"%s\",\"password\":\"%s\"}",
            t_service ("BUILDVM_TEST_REGISTRY_USER"), t_service ("BUILDVM_TEST_REGISTRY_PASS"));
  t_write (f, json);
  chmod (f, 0644);
  o.url = url;
  o.credentials_file = f;
  assert_fails_with (registry_open (&r, &o, &err), &err, "accessible by group or others");
  chmod (f, 0600);
  assert_ok (registry_open (&r, &o, &err), &err);
  assert_ok (registry_ping (r, &err), &err);
  registry_free (r);

  t_write (f, "{\"username\":\"a\",\"token\":\"b\"}");
  assert_fails_with (registry_open (&r, &o, &err), &err,
                     "either username and password or a token");
  t_write (f, "{\"username\":\"a\",\"password\":\"b\",\"extra\":1}");
  assert_fails_with (registry_open (&r, &o, &err), &err, "unknown field `extra`");
  t_write (f, "{\"token\":\"has space\"}");
  assert_fails_with (registry_open (&r, &o, &err), &err, "invalid characters");
  unlink (f);
}

static void
test_validation (void **state)
{
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry *r = NULL;
  struct registry_stats st;
  bvm_error_t err = NULL;
  bool b;
  char *body, *type, d[DIGEST_STR_LEN + 1];
  size_t len;
  (void) state;

  o.url = "http://user:secret@127.0.0.1:5000";
  assert_fails_with (registry_open (&r, &o, &err), &err, "may only have a host and a port");
  o.url = "ftp://127.0.0.1";
  assert_fails_with (registry_open (&r, &o, &err), &err, "must start with http");
  o.url = "http://127.0.0.1:5000/v2/x";
  assert_fails_with (registry_open (&r, &o, &err), &err, "may only have a host and a port");
  o.url = "http://127.0.0.1:5000/";
  o.username = "u";
  assert_fails_with (registry_open (&r, &o, &err), &err, "go together");
  o.username = NULL;
  assert_ok (registry_open (&r, &o, &err), &err);

  /* nothing reaches the network with a bad name */
  assert_fails_with (registry_blob_exists (r, "Apps/X", ABSENT, &b, NULL, &err), &err,
                     "not a valid repository name");
  assert_fails_with (registry_blob_exists (r, "apps/x/../y", ABSENT, &b, NULL, &err), &err,
                     "not a valid repository name");
  assert_fails_with (registry_blob_exists (r, R ("apps/x"), "sha256:abc", &b, NULL, &err), &err,
                     "not a sha256 digest");
  assert_fails_with (registry_blob_mount (r, R ("apps/x"), "a?b=c", ABSENT, &b, &err), &err,
                     "not a valid repository name");
  assert_fails_with (registry_manifest_get (r, R ("apps/x"), "a/b", &body, &len, &type, d, &err),
                     &err, "not a valid tag or digest");
  assert_fails_with (registry_manifest_put (r, R ("apps/x"), "v1", "x\r\nEvil: 1", "{}", 2, d,
                                            &err),
                     &err, "media type is not valid");
  assert_fails_with (registry_manifest_put (r, R ("apps/x"), ABSENT, OCI_MEDIA_MANIFEST, "{}", 2,
                                            d, &err),
                     &err, "manifest has digest");
  assert_fails_with (registry_blob_push (r, R ("apps/x"), ABSENT, 5, "/dev/null", &b, &err), &err,
                     "not a regular file");
  {
    char f[600];
    snprintf (f, sizeof f, "%s/four", tmp);
    t_write (f, "four");
    assert_fails_with (registry_blob_push (r, R ("apps/x"), ABSENT, 5, f, &b, &err), &err,
                       "is 4 bytes, expected 5");
  }
  registry_get_stats (r, &st);
  assert_int_equal (st.requests, 0);
  registry_free (r);
}

static void
test_challenge_parse (void **state)
{
  static const struct
  {
    const char *h;
    int ok, scheme;
    const char *realm, *service, *scope;
  } cases[] = {
    { "Basic realm=\"registry\"", 1, 1, "registry", "", "" },
    { "basic", 1, 1, "", "", "" },
    { "Bearer realm=\"https://auth.example/token\",service=\"registry.example\","
      "scope=\"repository:apps/x:pull,push\",error=\"insufficient_scope\"",
      1, 2, "https://auth.example/token", "registry.example", "repository:apps/x:pull,push" },
    { "Bearer realm=http://a/t, service=svc", 1, 2, "http://a/t", "svc", "" },
    { "Bearer realm=\"a\\\"b\"", 1, 2, "a\"b", "", "" },
    { "Bearer service=\"x\"", 0, 0, NULL, NULL, NULL },           /* no realm */
    { "Bearer realm=\"a\",realm=\"b\"", 0, 0, NULL, NULL, NULL }, /* duplicate */
    { "Bearer realm=\"unterminated", 0, 0, NULL, NULL, NULL },
    { "Bearer realm=\"a\" junk", 0, 0, NULL, NULL, NULL },
    { "Bearer realm=\"a\", Basic realm=\"b\"", 0, 0, NULL, NULL, NULL },
    { "Negotiate abc", 0, 0, NULL, NULL, NULL },
    { "Bearer realm=\"a\x01\"", 0, 0, NULL, NULL, NULL },
    { "", 0, 0, NULL, NULL, NULL },
    { "Bearerrealm=\"a\"", 0, 0, NULL, NULL, NULL },
  };
  char realm[64], service[64], scope[64];
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      int scheme = 0;
      int r = registry__parse_challenge (cases[i].h, &scheme, realm, sizeof realm, service,
                                         sizeof service, scope, sizeof scope);
      if (!cases[i].ok)
        {
          if (r == 0)
            fail_msg ("challenge `%s` was accepted", cases[i].h);
          continue;
        }
      if (r != 0)
        fail_msg ("challenge `%s` was refused", cases[i].h);
      assert_int_equal (scheme, cases[i].scheme);
      assert_string_equal (realm, cases[i].realm);
      assert_string_equal (service, cases[i].service);
      assert_string_equal (scope, cases[i].scope);
    }
  /* a realm longer than the caller's buffer is refused, not truncated */
  {
    int scheme;
    char small[8];
    assert_int_equal (registry__parse_challenge ("Bearer realm=\"0123456789\"", &scheme, small,
                                                 sizeof small, service, sizeof service, scope,
                                                 sizeof scope),
                      -1);
  }
}

static int
setup (void **state)
{
  (void) state;
  tmp = t_tmpdir ();
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (spawned); i++)
    stop_bg (spawned[i]);
  t_tmpdir_free (tmp);
  return 0;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_challenge_parse),        cmocka_unit_test (test_validation),
    cmocka_unit_test (test_push_verify_idempotent), cmocka_unit_test (test_base_image_mount),
    cmocka_unit_test (test_chunked_upload),         cmocka_unit_test (test_wrong_credentials),
    cmocka_unit_test (test_registry_down),          cmocka_unit_test (test_faulty_proxy),
    cmocka_unit_test (test_bearer_token),           cmocka_unit_test (test_credentials_file),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
