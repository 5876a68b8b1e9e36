/* test_ingest.c - hostile output tars: one case per rule, and a valid tar
 * delivered exactly.
 *
 * The fixtures are generated at test time by tests/data/ingest/gen.py. Every
 * case runs the tar, placed at offset 4096 of a fake output disk, through a
 * deliberately naive sink that extracts image entries into the job's layer
 * directory with plain mkdir/open/symlink/link and puts artifacts into a real
 * artifact store transaction, committing only on success, as the executor
 * does. A hostile case must fail with the expected error, leave nothing
 * visible in the store, and change nothing outside the job's directory.
 */
#include "support.h"

#include "digest.h"
#include "fs.h"
#include "ingest.h"
#include "jsonx.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_tmp;      /* per run */
static char *g_fixtures; /* <tmp>/fixtures */

/* --- a naive extracting sink ---------------------------------------------- */

struct rec
{
  enum ingest_kind kind;
  char path[INGEST_PATH_MAX + 1];
  mode_t type, perm;
  uint64_t size;
  char target[INGEST_PATH_MAX + 1];
  bool has_target;
  struct digest_ctx d;
  char digest[DIGEST_STR_LEN + 1];
  uint64_t got;
};

struct xsink
{
  const char *layer; /* the job's layer directory */
  struct store_txn *txn;
  const char *prefix;
  int fd;
  bool to_store;
  struct rec recs[64];
  size_t nrecs;
};

static void
joinp (char *out, size_t size, const char *a, const char *b)
{
  if (snprintf_checked (out, size, "%s/%s", a, b) < 0)
    fail_msg ("path too long");
}

static int
parent_dirs (const char *path, bvm_error_t *err)
{
  char d[PATH_MAX];
  char *slash;
  snprintf (d, sizeof d, "%s", path);
  slash = strrchr (d, '/');
  *slash = '\0';
  return fs_mkdir_p (d, 0755, err);
}

static int
x_begin (void *opaque, const struct ingest_entry *e, bvm_error_t *err)
{
  struct xsink *x = opaque;
  struct rec *r;
  char p[PATH_MAX], key[PATH_MAX];

  assert_true (x->nrecs < ARRAY_SIZE (x->recs));
  r = &x->recs[x->nrecs++];
  memset (r, 0, sizeof *r);
  r->kind = e->kind;
  snprintf (r->path, sizeof r->path, "%s", e->path);
  r->type = e->type;
  r->perm = e->perm;
  r->size = e->size;
  if (e->link_target)
    {
      r->has_target = true;
      snprintf (r->target, sizeof r->target, "%s", e->link_target);
    }
  assert_ok (digest_init (&r->d, err), err);

  /* the documented invariants of a delivered path */
  assert_true (e->path[0] != '\0' && e->path[0] != '/');
  assert_null (strstr (e->path, "//"));
  assert_true (e->path[strlen (e->path) - 1] != '/');

  x->fd = -1;
  x->to_store = false;
  if (e->kind == INGEST_IMAGE)
    {
      joinp (p, sizeof p, x->layer, e->path);
      if (e->type == S_IFDIR)
        return fs_mkdir_p (p, 0755, err);
      if (parent_dirs (p, err) < 0)
        return -1;
      if (e->type == S_IFLNK)
        return symlink (e->link_target, p) < 0 ? bvm_error (err, errno, "symlink `%s`", p) : 0;
      if (e->link_target != NULL)
        {
          char t[PATH_MAX];
          joinp (t, sizeof t, x->layer, e->link_target);
          return link (t, p) < 0 ? bvm_error (err, errno, "link `%s`", p) : 0;
        }
      x->fd = open (p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e->perm);
      return x->fd < 0 ? bvm_error (err, errno, "create `%s`", p) : 0;
    }
  if (e->type == S_IFDIR)
    return 0;
  snprintf (key, sizeof key, "%s%s", x->prefix, e->path);
  if (e->link_target != NULL)
    {
      char t[PATH_MAX];
      snprintf (t, sizeof t, "%s%s", x->prefix, e->link_target);
      return store_put_link (x->txn, key, t, err);
    }
  x->to_store = true;
  return store_put_begin (x->txn, key, err);
}

static int
x_data (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct xsink *x = opaque;
  struct rec *r = &x->recs[x->nrecs - 1];
  digest_update (&r->d, buf, len);
  r->got += len;
  if (x->to_store)
    return store_put_write (x->txn, buf, len, err);
  assert_true (x->fd >= 0);
  return fs_write_all (x->fd, buf, len) < 0 ? bvm_error (err, errno, "write") : 0;
}

static int
x_end (void *opaque, bvm_error_t *err)
{
  struct xsink *x = opaque;
  struct rec *r = &x->recs[x->nrecs - 1];
  digest_final (&r->d, r->digest);
  if (x->fd >= 0)
    close (steal_fd (&x->fd));
  if (x->to_store)
    return store_put_end (x->txn, err);
  return 0;
}

static void
xsink_dispose (struct xsink *x)
{
  /* a failure leaves the last entry's digest open */
  if (x->nrecs > 0 && x->recs[x->nrecs - 1].d.md != NULL)
    digest_dispose (&x->recs[x->nrecs - 1].d);
  if (x->fd >= 0)
    close (x->fd);
}

/* --- the fake output disk ------------------------------------------------- */

static char *
fixture (const char *name)
{
  char *p = NULL;
  if (asprintf (&p, "%s/%s.tar", g_fixtures, name) < 0)
    abort ();
  return p;
}

/* header (4096 bytes of 0xab) + tar + 4096 bytes of 0xcd; returns an fd. */
static int
make_disk (const char *tar, uint64_t *len)
{
  cleanup_free char *data = NULL;
  char disk[PATH_MAX];
  size_t n;
  bvm_error_t err = NULL;
  char pad[4096];
  int fd;

  assert_ok (fs_read_file (&data, &n, tar, 64 << 20, &err), &err);
  snprintf (disk, sizeof disk, "%s/disk.raw", g_tmp);
  fd = open (disk, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true (fd >= 0);
  memset (pad, 0xab, sizeof pad);
  assert_int_equal (fs_write_all (fd, pad, sizeof pad), 0);
  assert_int_equal (fs_write_all (fd, data, n), 0);
  memset (pad, 0xcd, sizeof pad);
  assert_int_equal (fs_write_all (fd, pad, sizeof pad), 0);
  *len = n;
  return fd;
}

/* Everything under the test directory except the job's own directory. */
static char *
snapshot (void)
{
  return t_sh_out ("cd '%s' && find . -path ./job -prune -o -path ./disk.raw -prune -o -print "
                   "| LC_ALL=C sort",
                   g_tmp);
}

struct run
{
  int ret;
  bvm_error_t err;
  struct xsink x;
  struct ingest_stats st;
  json_t *index;
};

/* Ingest a fixture into a fresh job directory and store, as the executor
 * would: commit the artifacts only on success. */
static void
run_fixture (struct run *r, const char *name, const struct ingest_limits *lim)
{
  cleanup_free char *tar = fixture (name);
  cleanup_free char *before = NULL, *after = NULL;
  cleanup_store struct store *s = NULL;
  char layer[PATH_MAX], store_dir[PATH_MAX];
  struct ingest_sink sink;
  uint64_t len;
  int fd;

  memset (r, 0, sizeof *r);
  t_sh ("rm -rf '%s/job' '%s/store'", g_tmp, g_tmp);
  snprintf (layer, sizeof layer, "%s/job/layer", g_tmp);
  snprintf (store_dir, sizeof store_dir, "%s/store", g_tmp);
  assert_ok (fs_mkdir_p (layer, 0755, &r->err), &r->err);
  assert_ok (store_open (&s, store_dir, &r->err), &r->err);
  fd = make_disk (tar, &len);
  before = snapshot ();

  r->x.layer = layer;
  r->x.prefix = "apps/hello/c0ffee/";
  r->x.fd = -1;
  assert_ok (store_txn_begin (&r->x.txn, s, r->x.prefix, &r->err), &r->err);
  sink = (struct ingest_sink){ &r->x, x_begin, x_data, x_end };
  r->ret = ingest_run (fd, 4096, len, lim, &sink, &r->st, &r->err);
  xsink_dispose (&r->x);
  if (r->ret == 0)
    {
      bvm_error_t cerr = NULL;
      assert_ok (store_txn_commit (steal_pointer (&r->x.txn), NULL, &r->index, &cerr), &cerr);
    }
  else
    {
      store_txn_abort (steal_pointer (&r->x.txn));
      after = snapshot ();
      /* nothing outside the job's directory, nothing in the store */
      assert_string_equal (before, after);
      assert_int_equal (t_sh ("test -e '%s/store/apps'", g_tmp), 1);
      assert_int_equal (t_sh ("test -z \"$(ls -A '%s/store/.staging')\"", g_tmp), 0);
    }
  close (fd);
}

/* --- hostile cases ---------------------------------------------------------- */

enum lim_tweak
{
  L_NONE,
  L_ENTRIES,
  L_ENTRY_BYTES,
  L_TOTAL_BYTES,
  L_PATH,
  L_NAMES,
  L_DEADLINE,
  L_DOCKERFILE, /* the roots of a Dockerfile job */
};

struct hcase
{
  const char *fixture;
  int code;
  const char *needle;
  enum lim_tweak tweak;
};

static const struct hcase hostile[] = {
  /* names */
  { "abs_path", BVM_E_INVALID, "entry `/etc/passwd`: absolute paths are not allowed", L_NONE },
  { "dotdot", BVM_E_INVALID, "`..` components are not allowed", L_NONE },
  { "dot", BVM_E_INVALID, "`.` components are not allowed", L_NONE },
  { "empty_component", BVM_E_INVALID, "empty path component", L_NONE },
  { "outside_roots", BVM_E_INVALID,
    "entry `etc/passwd`: names must start with `image/`, `artifacts/` or `oci/`", L_NONE },
  /* the roots a job may write: `oci/` in a Dockerfile job instead of `image/` */
  { "valid", BVM_E_INVALID,
    "a Dockerfile job's image is its `oci/` output (the Dockerfile describes the image)",
    L_DOCKERFILE },
  { "oci_ok", BVM_E_INVALID, "entry `oci/`: `oci/` is the output of a Dockerfile job only",
    L_NONE },
  { "oci_bad_name", BVM_E_INVALID, "not a name of an OCI image layout", L_DOCKERFILE },
  { "oci_symlink", BVM_E_INVALID, "entry `oci/index.json`: links are not allowed under `oci/`",
    L_DOCKERFILE },
  { "oci_hardlink", BVM_E_INVALID, "entry `oci/index.json`: links are not allowed under `oci/`",
    L_DOCKERFILE },
  { "oci_blob_dir", BVM_E_INVALID, "must be a regular file", L_DOCKERFILE },
  { "bare_name", BVM_E_INVALID, "names must start with", L_NONE },
  { "root_as_file", BVM_E_INVALID, "the root `image/` must be a directory", L_NONE },
  { "root_as_symlink", BVM_E_INVALID, "the root `artifacts/` must be a directory", L_NONE },
  { "ctrl_char", BVM_E_INVALID, "entry `image/a\\x1b[31mb`: control character in name", L_NONE },
  { "newline", BVM_E_INVALID, "entry `image/a\\x0ab`: control character", L_NONE },
  { "bad_utf8", BVM_E_INVALID, "entry `image/\\xff\\xfe`: invalid UTF-8", L_NONE },
  { "c1_control", BVM_E_INVALID, "control character in name", L_NONE },
  { "nul_in_pax_path", BVM_E_INVALID, "NUL byte in a pax extended header record", L_NONE },
  { "gnu_longname_nul", BVM_E_INVALID, "NUL byte inside a GNU long name", L_NONE },
  { "pax_path_override", BVM_E_INVALID, "entry `image/../../x`: `..` components", L_NONE },
  { "gnu_longname_dotdot", BVM_E_INVALID, "`..` components are not allowed", L_NONE },
  { "long_component", BVM_E_INVALID, "a component is longer than 255 bytes", L_NONE },
  { "too_deep", BVM_E_INVALID, "more than 256 path components", L_NONE },
  { "whiteout", BVM_E_INVALID, "entry `image/usr/.wh.lib`: `.wh.` names are OCI whiteouts",
    L_NONE },
  { "whiteout_opaque", BVM_E_INVALID, "`.wh.` names are OCI whiteouts and are reserved", L_NONE },
  { "trailing_slash_symlink", BVM_E_INVALID, "a trailing `/` on a symlink", L_NONE },
  /* types and modes */
  { "chardev", BVM_E_INVALID, "entry `image/dev/null`: character devices are not allowed",
    L_NONE },
  { "blockdev", BVM_E_INVALID, "block devices are not allowed", L_NONE },
  { "fifo", BVM_E_INVALID, "FIFOs are not allowed", L_NONE },
  { "setuid", BVM_E_INVALID, "entry `image/su`: setuid bit (mode 4755)", L_NONE },
  { "setgid", BVM_E_INVALID, "setgid bit (mode 2755)", L_NONE },
  { "sticky", BVM_E_INVALID, "sticky bit (mode 1777)", L_NONE },
  { "xattr", BVM_E_INVALID, "extended attributes are not allowed", L_NONE },
  { "xattr_binary", BVM_E_INVALID, "NUL byte in a pax extended header record", L_NONE },
  { "dir_with_data", BVM_E_INVALID, "a directory that carries data", L_NONE },
  { "hardlink_with_data", BVM_E_INVALID, "a hardlink that carries data", L_NONE },
  { "unknown_type", BVM_E_INVALID, "tar entry type `Z` is not supported", L_NONE },
  { "contiguous_type", BVM_E_INVALID, "tar entry type `7` is not supported", L_NONE },
  { "global_header", BVM_E_INVALID, "tar entry type `g` is not supported", L_NONE },
  /* duplicates and shapes */
  { "dup_file", BVM_E_INVALID, "entry `image/a`: duplicate entry", L_NONE },
  { "dup_swap_symlink", BVM_E_INVALID, "entry `image/a`: duplicate entry", L_NONE },
  { "dup_dir", BVM_E_INVALID, "duplicate entry", L_NONE },
  { "file_over_implied_dir", BVM_E_INVALID, "earlier entries use this path as a directory",
    L_NONE },
  { "below_file", BVM_E_INVALID, "`image/f` is a file, not a directory", L_NONE },
  { "below_symlink", BVM_E_INVALID, "`image/l` is a symlink, not a directory", L_NONE },
  /* symlinks */
  { "symlink_abs", BVM_E_INVALID, "absolute symlink targets are not allowed (`/etc/passwd`)",
    L_NONE },
  { "symlink_escape", BVM_E_INVALID, "entry `image/a/l`: symlink target leaves its root", L_NONE },
  { "symlink_escape_artifact_root", BVM_E_INVALID, "symlink target leaves its root", L_NONE },
  { "symlink_chain", BVM_E_INVALID,
    "entry `image/esc`: symlink leaves its root through other symlinks", L_NONE },
  { "symlink_chain_late", BVM_E_INVALID,
    "entry `image/esc`: symlink leaves its root through other", L_NONE },
  { "symlink_loop", BVM_E_INVALID, "symlink loop", L_NONE },
  { "symlink_artifact", BVM_E_INVALID, "symlinks are not allowed under `artifacts/`", L_NONE },
  { "symlink_empty", BVM_E_INVALID, "symlink without a target", L_NONE },
  { "symlink_ctrl", BVM_E_INVALID, "control character in symlink target (`a\\x1b]0;pwned\\x07`)",
    L_NONE },
  /* hardlinks */
  { "hardlink_abs", BVM_E_INVALID, "hardlink `image/h`: entry `/etc/passwd`: absolute", L_NONE },
  { "hardlink_dotdot", BVM_E_INVALID, "hardlink `image/h`: entry `image/../../etc/passwd`",
    L_NONE },
  { "hardlink_other_root", BVM_E_INVALID,
    "hardlink target `artifacts/a` is not an earlier regular file", L_NONE },
  { "hardlink_forward", BVM_E_INVALID, "hardlink target `image/later` is not an earlier", L_NONE },
  { "hardlink_dir", BVM_E_INVALID, "hardlink target `image/d` is not an earlier regular file",
    L_NONE },
  { "hardlink_symlink", BVM_E_INVALID, "hardlink target `image/s` is not an earlier", L_NONE },
  { "hardlink_bare", BVM_E_INVALID, "hardlink `image/h`: entry `a`: names must start", L_NONE },
  /* headers and framing */
  { "pax_over_cap", BVM_E_LIMIT, "entry headers take 101376 bytes, over the limit of 65536",
    L_NONE },
  { "pax_huge", BVM_E_INVALID, "Special header too large", L_NONE },
  { "pax_chain", BVM_E_INVALID, "output tar at offset 0:", L_NONE },
  { "two_pax_headers", BVM_E_INVALID, "output tar at offset 0:", L_NONE },
  { "bad_checksum", BVM_E_INVALID, "not an uncompressed tar stream", L_NONE },
  { "garbage", BVM_E_INVALID, "not an uncompressed tar stream", L_NONE },
  { "gzip", BVM_E_INVALID, "not an uncompressed tar stream", L_NONE },
  { "sparse_gnu", BVM_E_INVALID, "tar entry type `S` is not supported", L_NONE },
  { "sparse_pax", BVM_E_INVALID, "entry `image/sparse`: GNU sparse files are not allowed",
    L_NONE },
  { "sparse_huge", BVM_E_INVALID, "entry `image/huge`: GNU sparse files are not allowed", L_NONE },
  { "truncated_data", BVM_E_INVALID, "entry `image/big`: reading data: Truncated tar archive",
    L_NONE },
  { "missing_marker", BVM_E_INVALID, "no end-of-archive marker", L_NONE },
  { "one_zero_block", BVM_E_INVALID, "no end-of-archive marker", L_NONE },
  { "size_lies_short", BVM_E_INVALID, "Damaged tar archive", L_NONE },
  /* caps */
  { "many", BVM_E_LIMIT, "more than 10 entries", L_ENTRIES },
  { "implied_dirs", BVM_E_LIMIT, "more than 10 paths (directories implied by names count)",
    L_ENTRIES },
  { "big", BVM_E_LIMIT, "entry `image/big`: 2097152 bytes, over the limit of 1048576",
    L_ENTRY_BYTES },
  { "total", BVM_E_LIMIT, "entry `image/t1`: outputs take more than 1048576 bytes",
    L_TOTAL_BYTES },
  { "long_name", BVM_E_LIMIT, "name is longer than 100 bytes", L_PATH },
  { "many", BVM_E_LIMIT, "names and link targets take more than 200 bytes", L_NAMES },
  { "valid", BVM_E_TIMEOUT, "deadline passed", L_DEADLINE },
};

static void
test_hostile (void **state)
{
  const struct hcase *hc = *state;
  struct ingest_limits lim = INGEST_LIMITS_INIT;
  struct run r;

  switch (hc->tweak)
    {
    case L_ENTRIES: lim.max_entries = 10; break;
    case L_ENTRY_BYTES: lim.max_entry_bytes = 1 << 20; break;
    case L_TOTAL_BYTES: lim.max_total_bytes = 1 << 20; break;
    case L_PATH: lim.max_path = 100; break;
    case L_NAMES: lim.max_names_bytes = 200; break;
    case L_DEADLINE: lim.deadline_ms = now_ms () - 1; break;
    case L_DOCKERFILE: lim.roots = INGEST_ROOTS_DOCKERFILE; break;
    case L_NONE: break;
    }
  run_fixture (&r, hc->fixture, &lim);
  if (r.ret >= 0)
    fail_msg ("`%s` was accepted, expected \"%s\"", hc->fixture, hc->needle);
  if (strstr (bvm_error_msg (&r.err), hc->needle) == NULL)
    fail_msg ("`%s`: error \"%s\" does not contain \"%s\"", hc->fixture, bvm_error_msg (&r.err),
              hc->needle);
  if (bvm_error_get_code (&r.err) != hc->code)
    fail_msg ("`%s`: error code %s, expected %s", hc->fixture,
              bvm_errcode_name (bvm_error_get_code (&r.err)), bvm_errcode_name (hc->code));
  bvm_error_free (&r.err);
}

/* --- valid tars --------------------------------------------------------------- */

static const struct rec *
find_rec (const struct run *r, enum ingest_kind kind, const char *path)
{
  for (size_t i = 0; i < r->x.nrecs; i++)
    if (r->x.recs[i].kind == kind && strcmp (r->x.recs[i].path, path) == 0)
      return &r->x.recs[i];
  fail_msg ("`%s` was not delivered", path);
  return NULL;
}

static void
check_file (const char *layer, const char *path, mode_t perm, const char *content)
{
  char p[PATH_MAX];
  struct stat st;
  cleanup_free char *data = NULL;
  size_t n;
  bvm_error_t err = NULL;

  joinp (p, sizeof p, layer, path);
  assert_int_equal (lstat (p, &st), 0);
  assert_true (S_ISREG (st.st_mode));
  assert_int_equal (st.st_mode & 07777, perm);
  assert_ok (fs_read_file (&data, &n, p, 1 << 20, &err), &err);
  assert_int_equal (n, strlen (content));
  assert_memory_equal (data, content, n);
}

static void
test_valid_delivered_exactly (void **state)
{
  struct run r;
  const struct rec *e;
  char layer[PATH_MAX], p[PATH_MAX], q[PATH_MAX], t[256];
  struct stat st, st2;
  const char *deep = "deep00/deep01/deep02/deep03/deep04/deep05/deep06/deep07/deep08/deep09/"
                     "deep10/deep11/deep12/deep13/deep14/deep15/deep16/deep17/deep18/deep19/"
                     "file.txt";
  ssize_t n;
  (void) state;

  run_fixture (&r, "valid", NULL);
  assert_ok (r.ret, &r.err);
  /* 16 tar entries; the two root directories are not delivered */
  assert_int_equal (r.st.entries, 16);
  assert_int_equal (r.x.nrecs, 14);
  assert_int_equal (r.st.files, 8);
  assert_int_equal (r.st.dirs, 2);
  assert_int_equal (r.st.symlinks, 2);
  assert_int_equal (r.st.hardlinks, 2);
  assert_int_equal (r.st.bytes, 18 + 4 + 7 + 0 + 7 + 5 + 9 + 100000);

  e = find_rec (&r, INGEST_IMAGE, "bin");
  assert_int_equal (e->type, S_IFDIR);
  assert_int_equal (e->perm, 0755);
  e = find_rec (&r, INGEST_IMAGE, "etc");
  assert_int_equal (e->perm, 0750);
  e = find_rec (&r, INGEST_IMAGE, "bin/app");
  assert_int_equal (e->type, S_IFREG);
  assert_int_equal (e->perm, 0755);
  assert_int_equal (e->size, 18);
  assert_false (e->has_target);
  e = find_rec (&r, INGEST_IMAGE, "bin/app2");
  assert_int_equal (e->type, S_IFREG);
  assert_string_equal (e->target, "bin/app"); /* relative to the root */
  assert_int_equal (e->size, 0);
  assert_int_equal (e->got, 0);
  e = find_rec (&r, INGEST_IMAGE, "usr/lib/libx.so");
  assert_int_equal (e->type, S_IFLNK);
  assert_string_equal (e->target, "libx.so.1");
  e = find_rec (&r, INGEST_IMAGE, "usr/lib/up");
  assert_string_equal (e->target, "../../bin/app");
  e = find_rec (&r, INGEST_IMAGE, "etc/conf");
  assert_int_equal (e->perm, 0640);
  e = find_rec (&r, INGEST_IMAGE,
                "\xc3\x9c"
                "ber.txt");
  assert_int_equal (e->size, 7);
  e = find_rec (&r, INGEST_IMAGE, deep);
  assert_int_equal (e->size, 5);
  e = find_rec (&r, INGEST_ARTIFACT, "sub/data.bin");
  assert_int_equal (e->size, 100000);
  assert_int_equal (e->got, 100000);
  e = find_rec (&r, INGEST_ARTIFACT, "copy.txt");
  assert_string_equal (e->target, "report.txt");

  /* what the naive sink wrote matches */
  snprintf (layer, sizeof layer, "%s/job/layer", g_tmp);
  check_file (layer, "bin/app", 0755, "#!/bin/sh\necho hi\n");
  check_file (layer, "etc/conf", 0640, "k=v\n");
  check_file (layer, "empty", 0644, "");
  check_file (layer,
              "\xc3\x9c"
              "ber.txt",
              0644, "gr\xc3\xbc\xc3\x9f\n");
  check_file (layer, deep, 0644, "long\n");
  joinp (p, sizeof p, layer, "bin/app");
  joinp (q, sizeof q, layer, "bin/app2");
  assert_int_equal (stat (p, &st), 0);
  assert_int_equal (stat (q, &st2), 0);
  assert_int_equal (st.st_ino, st2.st_ino);
  joinp (p, sizeof p, layer, "usr/lib/libx.so");
  n = readlink (p, t, sizeof t - 1);
  assert_int_equal (n, 9);
  t[n] = '\0';
  assert_string_equal (t, "libx.so.1");

  /* the artifacts were committed with an index */
  {
    json_t *objs = json_object_get (r.index, "objects");
    char hex[DIGEST_STR_LEN + 1];
    assert_string_equal (json_string_value (json_object_get (r.index, "prefix")),
                         "apps/hello/c0ffee/");
    assert_int_equal (json_array_size (objs), 3);
    assert_string_equal (json_string_value (json_object_get (json_array_get (objs, 0), "key")),
                         "apps/hello/c0ffee/copy.txt");
    assert_string_equal (json_string_value (json_object_get (json_array_get (objs, 1), "key")),
                         "apps/hello/c0ffee/report.txt");
    assert_string_equal (json_string_value (json_object_get (json_array_get (objs, 2), "key")),
                         "apps/hello/c0ffee/sub/data.bin");
    assert_int_equal (json_integer_value (json_object_get (json_array_get (objs, 2), "size")),
                      100000);
    e = find_rec (&r, INGEST_ARTIFACT, "sub/data.bin");
    snprintf (hex, sizeof hex, "%s", e->digest + 7);
    assert_string_equal (json_string_value (json_object_get (json_array_get (objs, 2), "sha256")),
                         hex);
    snprintf (p, sizeof p, "%s/store/apps/hello/c0ffee/sub/data.bin", g_tmp);
    {
      cleanup_free char *sum = t_sh_out ("sha256sum '%s' | cut -c1-64", p);
      assert_string_equal (sum, hex);
    }
    snprintf (p, sizeof p, "%s/store/apps/hello/c0ffee/copy.txt", g_tmp);
    check_file ("/", p + 1, 0644, "all good\n");
    json_decref (r.index);
  }
}

static void
test_valid_variants (void **state)
{
  struct run r;
  (void) state;

  /* GNU long names and long link names */
  run_fixture (&r, "valid_gnu", NULL);
  assert_ok (r.ret, &r.err);
  assert_int_equal (r.x.nrecs, 2);
  assert_int_equal (strlen (r.x.recs[0].path), 150);
  assert_int_equal (strlen (r.x.recs[1].target), 150);
  json_decref (r.index);

  /* an empty tar is two zero blocks */
  run_fixture (&r, "empty", NULL);
  assert_ok (r.ret, &r.err);
  assert_int_equal (r.st.entries, 0);
  assert_int_equal (r.st.tar_bytes, 1024);
  json_decref (r.index);

  /* bytes after the end-of-archive marker are ignored */
  run_fixture (&r, "trailing_garbage", NULL);
  assert_ok (r.ret, &r.err);
  assert_int_equal (r.x.nrecs, 1);
  assert_int_equal (r.st.tar_bytes, 2048);
  json_decref (r.index);

  /* the same caps, lifted just enough, pass */
  {
    struct ingest_limits lim = INGEST_LIMITS_INIT;
    lim.max_entries = 20;
    run_fixture (&r, "many", &lim);
    assert_ok (r.ret, &r.err);
    json_decref (r.index);
  }
}

/* libarchive never sees a byte past offset+len: a stream cut short of its
 * marker fails even when a valid continuation follows on the disk. */
static void
test_reads_bounded_to_region (void **state)
{
  cleanup_free char *a = fixture ("missing_marker"), *b = fixture ("trailing_garbage");
  cleanup_free char *da = NULL, *db = NULL;
  size_t na, nb;
  bvm_error_t err = NULL;
  struct ingest_limits lim = INGEST_LIMITS_INIT;
  struct xsink x = { .fd = -1 };
  struct ingest_sink sink = { &x, x_begin, x_data, x_end };
  char layer[PATH_MAX], disk[PATH_MAX];
  cleanup_close int fd = -1;
  (void) state;

  assert_ok (fs_read_file (&da, &na, a, 1 << 20, &err), &err);
  assert_ok (fs_read_file (&db, &nb, b, 1 << 20, &err), &err);
  snprintf (disk, sizeof disk, "%s/bounded.raw", g_tmp);
  fd = open (disk, O_RDWR | O_CREAT | O_TRUNC, 0600);
  assert_true (fd >= 0);
  /* region = the first entry of missing_marker; then another valid tar */
  assert_int_equal (fs_write_all (fd, da, 1024), 0);
  assert_int_equal (fs_write_all (fd, db, nb), 0);
  t_sh ("rm -rf '%s/job'", g_tmp);
  snprintf (layer, sizeof layer, "%s/job/layer", g_tmp);
  assert_ok (fs_mkdir_p (layer, 0755, &err), &err);
  x.layer = layer;
  assert_fails_with (ingest_run (fd, 0, 1024, &lim, &sink, NULL, &err), &err,
                     "no end-of-archive marker");
  xsink_dispose (&x);
  assert_int_equal (x.nrecs, 1); /* image/ok only, never the entries past the region */

  /* a region larger than the disk is refused up front */
  assert_fails_with (ingest_run (fd, 512, 1024 + nb, &lim, &sink, NULL, &err), &err,
                     "but the disk holds only");
  assert_fails_with (ingest_run (fd, UINT64_MAX - 10, 100, &lim, &sink, NULL, &err), &err,
                     "out of range");
  unlink (disk);
}

static int
failing_begin (void *opaque, const struct ingest_entry *e, bvm_error_t *err)
{
  (void) opaque;
  return bvm_error (err, ENOSPC, "layer write `%s`", e->path);
}

static void
test_sink_failure_propagates (void **state)
{
  cleanup_free char *tar = fixture ("valid");
  struct ingest_sink sink = { NULL, failing_begin, x_data, x_end };
  bvm_error_t err = NULL;
  uint64_t len;
  int fd;
  (void) state;

  fd = make_disk (tar, &len);
  assert_true (ingest_run (fd, 4096, len, NULL, &sink, NULL, &err) < 0);
  assert_string_equal (bvm_error_msg (&err),
                       "entry `image/bin/`: layer write `bin`: No space left on device");
  assert_int_equal (bvm_error_get_code (&err), BVM_E_IO);
  bvm_error_free (&err);
  close (fd);
}

/* A Dockerfile job's `oci/` root: a layout's names, delivered as INGEST_OCI */
static void
test_oci_root (void **state)
{
  struct ingest_limits lim = INGEST_LIMITS_INIT;
  const struct rec *e;
  struct run r;

  (void) state;
  lim.roots = INGEST_ROOTS_DOCKERFILE;
  run_fixture (&r, "oci_ok", &lim);
  if (r.ret < 0)
    fail_msg ("oci_ok: %s", bvm_error_msg (&r.err));
  e = find_rec (&r, INGEST_OCI, "oci-layout");
  assert_non_null (e);
  assert_int_equal (e->type, S_IFREG);
  e = find_rec (&r, INGEST_OCI,
                "blobs/sha256/abababababababababababababababababababababababababababababababab");
  assert_non_null (e);
  assert_int_equal (e->size, 4);
  assert_non_null (find_rec (&r, INGEST_OCI, "blobs/sha256"));
  assert_non_null (find_rec (&r, INGEST_ARTIFACT, "a"));
}

static void
test_check_path (void **state)
{
  static const char *const good[] = {
    "image/a",       "image/",    "image",          "artifacts/x/y.tar.gz",    "image/a/b/",
    "image/.hidden", "image/..x", "image/\xc3\xa9", "artifacts/.wh.fine-here", NULL
  };
  static const char *const bad[] = { "",
                                     "/image/a",
                                     "image/../a",
                                     "image/./a",
                                     "image//a",
                                     "images/a",
                                     "x",
                                     "image/a\tb",
                                     "image/\x7f",
                                     "image/\xc0\xaf",
                                     "image/\xed\xa0\x80",
                                     "image/\xc2\x85",
                                     "../image/a",
                                     "image/a//",
                                     "image/d/.wh.x",
                                     NULL };
  bvm_error_t err = NULL;
  (void) state;

  for (size_t i = 0; good[i]; i++)
    assert_ok (ingest_check_path (good[i], &err), &err);
  for (size_t i = 0; bad[i]; i++)
    {
      if (ingest_check_path (bad[i], &err) == 0)
        fail_msg ("`%s` was accepted", bad[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      /* messages are printable ASCII whatever the name */
      for (const char *p = bvm_error_msg (&err); *p; p++)
        assert_true (*p >= 0x20 && *p < 0x7f);
      bvm_error_free (&err);
    }
  {
    char longp[INGEST_PATH_MAX + 10];
    memset (longp, 'a', sizeof longp - 1);
    memcpy (longp, "image/", 6);
    for (size_t i = 6 + 200; i < sizeof longp - 1; i += 200)
      longp[i] = '/';
    longp[sizeof longp - 1] = '\0';
    assert_int_equal (ingest_check_path (longp, &err) < 0, 1);
    assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
    bvm_error_free (&err);
  }
}

/* --- setup ---------------------------------------------------------------- */

static int
setup (void **state)
{
  const char *gen = "tests/data/ingest/gen.py";
  char alt[PATH_MAX];
  (void) state;

  if (access (gen, R_OK) != 0)
    {
      /* run from elsewhere: the source tree is two levels above build/tests */
      cleanup_free char *exe = NULL;
      bvm_error_t err = NULL;
      if (fs_exe_dir (&exe, &err) < 0)
        return -1;
      snprintf (alt, sizeof alt, "%s/../../tests/data/ingest/gen.py", exe);
      gen = alt;
    }
  g_tmp = t_tmpdir ();
  if (asprintf (&g_fixtures, "%s/fixtures", g_tmp) < 0)
    return -1;
  if (t_sh ("python3 '%s' '%s'", gen, g_fixtures) != 0)
    {
      print_error ("generating the fixtures with %s failed\n", gen);
      return -1;
    }
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  t_tmpdir_free (g_tmp);
  free (g_fixtures);
  return 0;
}

int
main (void)
{
  static const struct CMUnitTest fixed[] = {
    cmocka_unit_test (test_check_path),
    cmocka_unit_test (test_oci_root),
    cmocka_unit_test (test_valid_delivered_exactly),
    cmocka_unit_test (test_valid_variants),
    cmocka_unit_test (test_reads_bounded_to_region),
    cmocka_unit_test (test_sink_failure_propagates),
  };
  struct CMUnitTest tests[ARRAY_SIZE (fixed) + ARRAY_SIZE (hostile)];
  char names[ARRAY_SIZE (hostile)][80];
  size_t n = 0;

  for (size_t i = 0; i < ARRAY_SIZE (fixed); i++)
    tests[n++] = fixed[i];
  /* one test per hostile case, named after it */
  for (size_t i = 0; i < ARRAY_SIZE (hostile); i++)
    {
      snprintf (names[i], sizeof names[i], "hostile_%s%s", hostile[i].fixture,
                hostile[i].tweak != L_NONE ? "_capped" : "");
      tests[n] = (struct CMUnitTest) cmocka_unit_test_prestate (test_hostile,
                                                                (void *) &hostile[i]);
      tests[n].name = names[i];
      n++;
    }
  return _cmocka_run_group_tests ("ingest", tests, n, setup, teardown);
}
