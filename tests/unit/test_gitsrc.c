/* test_gitsrc.c - checkout: fetch into per-app mirrors, export trees to tar
 *
 * Real repositories made with `git` in a temporary directory, a real smart
 * HTTP server (git http-backend behind tests/lib/git-http-server.py), and
 * hostile trees written straight into the object database, since git itself
 * refuses to create them. Every export is written to a tar file and read
 * back with libarchive to check the exact entries.
 */
#include "support.h"

#include "gitsrc.h"
#include "netaddr.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <errno.h>
#include <git2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* git with no user or system config and fixed identities and dates */
#define GITENV                                                                                    \
  "export HOME=%s GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com "        \
  "GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com "                                       \
  "GIT_AUTHOR_DATE='1700000000 +0000' GIT_COMMITTER_DATE='1700000000 +0000'; "
#define COMMIT_TIME 1700000000

struct fx
{
  char *tmp;
  char src[512];   /* a non-bare repository with the base tree */
  char cache[512]; /* the mirror cache */
  char tar[512];
  char c1[41]; /* its first commit */
};

static struct fx *
fx_new (void)
{
  struct fx *f = calloc (1, sizeof *f);
  char *out;

  f->tmp = t_tmpdir ();
  snprintf (f->src, sizeof f->src, "%s/src", f->tmp);
  snprintf (f->cache, sizeof f->cache, "%s/cache", f->tmp);
  snprintf (f->tar, sizeof f->tar, "%s/out.tar", f->tmp);
  assert_int_equal (t_sh (GITENV
                          "mkdir -p %s && cd %s && git init -q -b main && "
                          "printf 'hello\\n' > README && mkdir -p bin dir/sub && "
                          "printf '#!/bin/sh\\necho hi\\n' > bin/run.sh && "
                          "chmod 755 bin/run.sh && ln -s README link && "
                          "ln -s /etc/passwd abs && ln -s ../../outside up && "
                          "printf deep > dir/sub/file && git add -A && git commit -q -m one",
                          f->tmp, f->src, f->src),
                    0);
  out = t_sh_out ("git -C %s rev-parse HEAD", f->src);
  assert_int_equal (strlen (out), 40);
  memcpy (f->c1, out, 41);
  free (out);
  return f;
}

static void
fx_free (struct fx *f)
{
  t_tmpdir_free (f->tmp);
  free (f);
}

/* Add a commit to the repository at `dir` changing README; its id in out. */
static void
add_commit (const struct fx *f, const char *dir, const char *content, char out[41])
{
  char *id;
  assert_int_equal (t_sh (GITENV "cd %s && printf '%s' > README && git commit -q -am more", f->tmp,
                          dir, content),
                    0);
  id = t_sh_out ("git -C %s rev-parse HEAD", dir);
  assert_int_equal (strlen (id), 40);
  memcpy (out, id, 41);
  free (id);
}

/* --- tar helpers ----------------------------------------------------------- */

static struct archive *
tar_open (const char *path)
{
  struct archive *w = archive_write_new ();
  assert_non_null (w);
  assert_int_equal (archive_write_set_format_pax_restricted (w), ARCHIVE_OK);
  assert_int_equal (archive_write_open_filename (w, path), ARCHIVE_OK);
  return w;
}

static void
tar_close (struct archive *w)
{
  archive_write_close (w);
  archive_write_free (w);
}

struct tent
{
  char path[1024];
  mode_t type;
  mode_t perm;
  char target[1024];
  char data[256];
  int64_t size, mtime, uid, gid;
};

struct tarlist
{
  struct tent e[64];
  size_t n;
};

static void
tar_read (struct tarlist *l, const char *path)
{
  struct archive *r = archive_read_new ();
  struct archive_entry *ae;

  l->n = 0;
  archive_read_support_format_tar (r);
  assert_int_equal (archive_read_open_filename (r, path, 10240), ARCHIVE_OK);
  while (archive_read_next_header (r, &ae) == ARCHIVE_OK)
    {
      struct tent *t = &l->e[l->n++];
      const char *name;
      la_ssize_t n;
      assert_true (l->n < ARRAY_SIZE (l->e));
      memset (t, 0, sizeof *t);
      /* pathname: in the locale (C here), or as stored for UTF-8 names */
      name = archive_entry_pathname (ae);
      if (name == NULL)
        name = archive_entry_pathname_utf8 (ae);
      assert_non_null (name);
      snprintf (t->path, sizeof t->path, "%s", name);
      t->type = archive_entry_filetype (ae);
      t->perm = archive_entry_perm (ae);
      if (archive_entry_symlink (ae) != NULL)
        snprintf (t->target, sizeof t->target, "%s", archive_entry_symlink (ae));
      t->size = archive_entry_size (ae);
      t->mtime = archive_entry_mtime (ae);
      t->uid = archive_entry_uid (ae);
      t->gid = archive_entry_gid (ae);
      n = archive_read_data (r, t->data, sizeof t->data - 1);
      assert_true (n >= 0);
    }
  archive_read_free (r);
}

static const struct tent *
tar_find (const struct tarlist *l, const char *path)
{
  for (size_t i = 0; i < l->n; i++)
    if (strcmp (l->e[i].path, path) == 0)
      return &l->e[i];
  return NULL;
}

static void
assert_entry (const struct tarlist *l, const char *path, mode_t type, mode_t perm,
              const char *data)
{
  const struct tent *t = tar_find (l, path);
  if (t == NULL)
    fail_msg ("no entry `%s` in the archive", path);
  assert_int_equal (t->type, type);
  assert_int_equal (t->perm, perm);
  assert_int_equal (t->uid, 0);
  assert_int_equal (t->gid, 0);
  if (type == AE_IFLNK)
    {
      assert_string_equal (t->target, data);
      assert_int_equal (t->size, 0);
    }
  else if (data != NULL)
    {
      assert_int_equal (t->size, (int64_t) strlen (data));
      assert_string_equal (t->data, data);
    }
}

/* The exact archive of the base tree under `p` ("src/"). */
static void
assert_base_tree (const struct tarlist *l, bool with_mtime)
{
  assert_entry (l, "src/", AE_IFDIR, 0755, NULL);
  assert_entry (l, "src/README", AE_IFREG, 0644, "hello\n");
  assert_entry (l, "src/bin/", AE_IFDIR, 0755, NULL);
  assert_entry (l, "src/bin/run.sh", AE_IFREG, 0755, "#!/bin/sh\necho hi\n");
  assert_entry (l, "src/link", AE_IFLNK, 0777, "README");
  assert_entry (l, "src/abs", AE_IFLNK, 0777, "/etc/passwd");
  assert_entry (l, "src/up", AE_IFLNK, 0777, "../../outside");
  assert_entry (l, "src/dir/", AE_IFDIR, 0755, NULL);
  assert_entry (l, "src/dir/sub/", AE_IFDIR, 0755, NULL);
  assert_entry (l, "src/dir/sub/file", AE_IFREG, 0644, "deep");
  assert_int_equal (l->n, 10);
  if (with_mtime)
    for (size_t i = 0; i < l->n; i++)
      assert_int_equal (l->e[i].mtime, COMMIT_TIME);
}

static int
export_to (const char *tar, struct gitsrc_repo *repo, const char *commit,
           const struct gitsrc_limits *lim, struct gitsrc_stats *st, bvm_error_t *err)
{
  struct archive *w = tar_open (tar);
  int r = gitsrc_export (w, repo, commit, "src/", lim, st, err);
  tar_close (w);
  return r;
}

static bool
is_dir (const char *fmt, const char *a)
{
  char p[1024];
  struct stat st;
  snprintf (p, sizeof p, fmt, a);
  return stat (p, &st) == 0 && S_ISDIR (st.st_mode);
}

/* --- the component check ----------------------------------------------------- */

static void
test_check_component (void **state)
{
  static const char *const bad[] = {
    ".",
    "..",
    ".git",
    ".GIT",
    ".Git",
    ".gIT",
    ".git.",
    ".git ",
    ".git. .",
    ".git...",
    ".GIT  ",
    "git~1",
    "GIT~1",
    "Git~2",
    "git~10",
    "git~1.",
    "git~1 ",
    ".git:stream",
    ".git::$INDEX_ALLOCATION",
    ".git\\hooks",
    ".g\xe2\x80\x8cit", /* U+200C ZERO WIDTH NON-JOINER */
    ".git\xe2\x80\x8d", /* U+200D */
    "\xe2\x80\x8e.git", /* U+200E */
    ".\xe2\x80\xaegit", /* U+202E */
    ".gi\xe2\x81\xaft", /* U+206F */
    ".GIT\xef\xbb\xbf", /* U+FEFF */
    ".g\xe2\x80\x8c"
    "IT. ", /* HFS and NTFS at once */
  };
  static const char *const bad_link[] = {
    ".gitmodules", ".GITMODULES", ".gitmodules ", ".gitmodules.", ".gitmodules:x",
    "gitmod~1",    "GITMOD~4",    "gi7eba~1",     "GI7EBA~9",     ".git\xe2\x80\x8cmodules",
  };
  static const char *const good[] = {
    "a",
    ".gitignore",
    ".github",
    ".gitx",
    ".git-blame-ignore-revs",
    "git",
    "a.git",
    ".git~1",
    "git~",
    "git~0",
    "git~1.txt",
    "...",
    "..a",
    "a..",
    "x y",
    "\xff\xfe",
    "\xe2\x80\x8c",
    ".gi",
    ".gitmodules",
    "gitmod~1",
    "gi7eba~1",
    "-",
    "~",
  };
  bvm_error_t err = NULL;
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      if (gitsrc_check_component (bad[i], strlen (bad[i]), false, &err) == 0)
        fail_msg ("`%s` was accepted", bad[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      bvm_error_free (&err);
      /* a symlink with the name is refused just the same */
      assert_int_not_equal (gitsrc_check_component (bad[i], strlen (bad[i]), true, &err), 0);
      bvm_error_free (&err);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad_link); i++)
    {
      if (gitsrc_check_component (bad_link[i], strlen (bad_link[i]), true, &err) == 0)
        fail_msg ("symlink `%s` was accepted", bad_link[i]);
      assert_non_null (strstr (bvm_error_msg (&err), "`.gitmodules`"));
      bvm_error_free (&err);
    }
  for (size_t i = 0; i < ARRAY_SIZE (good); i++)
    {
      bool link = strstr (good[i], "gitmod") == NULL && strstr (good[i], "gi7eba") == NULL;
      if (gitsrc_check_component (good[i], strlen (good[i]), link, &err) < 0)
        fail_msg ("`%s` was refused: %s", good[i], bvm_error_msg (&err));
    }
  assert_fails_with (gitsrc_check_component ("", 0, false, &err), &err, "empty");
  assert_fails_with (gitsrc_check_component ("a/b", 3, false, &err), &err, "contains a slash");
  assert_fails_with (gitsrc_check_component ("/", 1, false, &err), &err, "contains a slash");
  assert_fails_with (gitsrc_check_component ("a\0b", 3, false, &err), &err, "NUL");
  /* the length is what counts, not a NUL terminator */
  assert_fails_with (gitsrc_check_component (".gitx", 4, false, &err), &err, "spelling of `.git`");
  /* untrusted bytes are escaped in the message */
  assert_fails_with (gitsrc_check_component (".g\xe2\x80\x8cit", 7, false, &err), &err,
                     "name `.g\\xe2\\x80\\x8cit` is a spelling of `.git`");
  assert_fails_with (gitsrc_check_component ("a\n`/", 4, false, &err), &err,
                     "name `a\\x0a\\x60/` contains a slash");
}

/* Random short names from an alphabet of the interesting bytes, each in an
 * allocation of exactly its length: under ASan this proves the check never
 * reads past `len` (it is not NUL-terminated), and that every verdict is a
 * clean 0 or BVM_E_INVALID. Any name refused must involve one of the rules. */
static void
test_check_component_random (void **state)
{
  static const char alphabet[] = ".gGiItT~19 :\\/a\0\xe2\x80\x8c\xef\xbb\xbf\xff";
  bvm_error_t err = NULL;
  unsigned seed = 12345;
  (void) state;

  for (int i = 0; i < 200000; i++)
    {
      size_t len = (size_t) (rand_r (&seed) % 13);
      char *name = malloc (len ? len : 1);
      bool link = rand_r (&seed) & 1;
      int r;
      for (size_t k = 0; k < len; k++)
        name[k] = alphabet[(size_t) rand_r (&seed) % (sizeof alphabet - 1)];
      r = gitsrc_check_component (name, len, link, &err);
      if (r < 0)
        {
          assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
          bvm_error_free (&err);
        }
      else
        {
          /* an accepted name is never exactly one of the basic forms */
          assert_true (len > 0);
          assert_null (memchr (name, '/', len));
          assert_null (memchr (name, '\0', len));
          assert_false (len == 4 && strncasecmp (name, ".git", 4) == 0);
          assert_false (len == 5 && strncasecmp (name, "git~1", 5) == 0);
          assert_false (len == 2 && memcmp (name, "..", 2) == 0);
        }
      free (name);
    }
}

/* --- fetch and export ---------------------------------------------------------- */

static void
test_fetch_file_url_and_export (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  struct tarlist l;
  bvm_error_t err = NULL;
  char url[600];
  (void) state;

  snprintf (url, sizeof url, "file://%s", f->src);
  memset (&st, 0xff, sizeof st);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app1", url, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  assert_true (st.fetched);
  assert_true (st.fetch_objects >= 10); /* 1 commit, 4 trees, 5 blobs */
  assert_true (is_dir ("%s/app1.git", f->cache));
  assert_true (is_dir ("%s/app1.git/objects", f->cache));
  /* bare: no working tree anywhere in the cache */
  {
    char *ls = t_sh_out ("find %s -name README -o -name run.sh | wc -l", f->cache);
    assert_string_equal (ls, "0");
    free (ls);
  }

  assert_ok (export_to (f->tar, repo, f->c1, &lim, &st, &err), &err);
  tar_read (&l, f->tar);
  assert_base_tree (&l, true);
  assert_int_equal (st.entries, 10);
  assert_int_equal (st.files, 3);
  assert_int_equal (st.dirs, 4);
  assert_int_equal (st.symlinks, 3);
  assert_int_equal (st.skipped, 0);
  assert_int_equal (st.bytes, 6 + 18 + 4 + 6 + 11 + 13);
  /* the same commit gives the same archive, byte for byte */
  {
    char tar2[600];
    snprintf (tar2, sizeof tar2, "%s/again.tar", f->tmp);
    assert_ok (export_to (tar2, repo, f->c1, &lim, NULL, &err), &err);
    assert_int_equal (t_sh ("cmp -s %s %s", f->tar, tar2), 0);
  }
  gitsrc_repo_free (repo);

  /* a second request for the same commit is served from the mirror */
  assert_ok (gitsrc_fetch (&repo, f->cache, "app1", url, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  assert_false (st.fetched);
  assert_int_equal (st.fetch_objects, 0);
  gitsrc_repo_free (repo);
  fx_free (f);
}

static void
test_fetch_plain_path_incremental_offline (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  struct tarlist l;
  bvm_error_t err = NULL;
  char c2[41];
  (void) state;

  assert_ok (gitsrc_fetch (&repo, f->cache, "app2", f->src, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  assert_true (st.fetched);
  gitsrc_repo_free (repo);

  /* the second commit changes one file: only its commit, root tree and blob
   * travel, the first fetch's objects are reused */
  add_commit (f, f->src, "changed\n", c2);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app2", f->src, "refs/heads/main", c2, &lim, &st,
                           &err),
             &err);
  assert_true (st.fetched);
  assert_int_equal (st.fetch_objects, 3);
  assert_ok (export_to (f->tar, repo, c2, &lim, NULL, &err), &err);
  tar_read (&l, f->tar);
  assert_entry (&l, "src/README", AE_IFREG, 0644, "changed\n");
  assert_entry (&l, "src/bin/run.sh", AE_IFREG, 0755, "#!/bin/sh\necho hi\n");
  gitsrc_repo_free (repo);

  /* with the source gone, both commits still check out: no network, no
   * source repository touched */
  assert_int_equal (t_sh ("rm -rf %s", f->src), 0);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app2", f->src, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  assert_false (st.fetched);
  assert_ok (export_to (f->tar, repo, f->c1, &lim, NULL, &err), &err);
  tar_read (&l, f->tar);
  assert_base_tree (&l, true);
  gitsrc_repo_free (repo);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app2", f->src, NULL, c2, &lim, &st, &err), &err);
  assert_false (st.fetched);
  gitsrc_repo_free (repo);
  /* a commit it does not have needs the source, which is gone */
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app2", f->src, "refs/heads/main",
                                   "0123456789abcdef0123456789abcdef01234567", &lim, &st, &err),
                     &err, "local repository");
  fx_free (f);
}

static void
test_commit_not_on_ref (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char url[600], side[41], dangling[41];
  char *s;
  (void) state;

  snprintf (url, sizeof url, "file://%s", f->src);
  /* issue 11 item 9: a commit only on another (unreviewed) branch is not
   * built as `refs/heads/main`, neither fetched fresh ... */
  assert_int_equal (t_sh (GITENV
                          "cd %s && git checkout -q -b other && echo x > other.txt && "
                          "git add other.txt && git commit -q -m side && git checkout -q main",
                          f->tmp, f->src),
                    0);
  s = t_sh_out ("git -C %s rev-parse other", f->src);
  memcpy (side, s, 41);
  free (s);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", side, &lim, &st,
                                   &err),
                     &err,
                     "` is not "); /* on, or reachable from, `refs/heads/main`: libgit2's local
                     * transport may send more objects than the ref needs */
  /* ... nor once the mirror has it from a job of its own branch */
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/other", side, &lim, &st, &err),
             &err);
  gitsrc_repo_free (repo);
  {
    char want[256];
    snprintf (want, sizeof want, "commit `%s` is not on `refs/heads/main` (its tip is `%s`)", side,
              f->c1);
    assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", side, &lim,
                                     &st, &err),
                       &err, want);
  }
  /* once main is fast-forwarded onto it, the mirror's stale main is fetched
   * again and the same request is fine */
  assert_int_equal (t_sh (GITENV "cd %s && git merge -q --ff-only other", f->tmp, f->src), 0);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", side, &lim, &st, &err),
             &err);
  assert_true (st.fetched);
  gitsrc_repo_free (repo);
  /* an older commit of main (a redeploy) needs no network */
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", f->c1, &lim, &st, &err),
             &err);
  assert_false (st.fetched);
  gitsrc_repo_free (repo);
  /* an annotated tag names its commit through a tag object */
  assert_int_equal (t_sh (GITENV "cd %s && git tag -a -m v1 v1 %s", f->tmp, f->src, f->c1), 0);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", url, "refs/tags/v1", f->c1, &lim, &st, &err),
             &err);
  gitsrc_repo_free (repo);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", url, "refs/tags/v1", side, &lim, &st,
                                   &err),
                     &err, "is not on `refs/tags/v1`");

  /* a commit that no ref reaches is never sent */
  s = t_sh_out (GITENV "cd %s && echo dangling | git commit-tree HEAD^{tree}", f->tmp, f->src);
  assert_int_equal (strlen (s), 40);
  memcpy (dangling, s, 41);
  free (s);
  {
    char want[1024];
    snprintf (want, sizeof want, "commit `%s` is not reachable from `refs/heads/main` in `%s`",
              dangling, url);
    assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", dangling,
                                        &lim, &st, &err),
                          0);
    assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
    if (strstr (bvm_error_msg (&err), want) == NULL)
      fail_msg ("unexpected error: %s", bvm_error_msg (&err));
    bvm_error_free (&err);
  }
  /* a ref the server does not have: said plainly, with its branches */
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/nope", dangling, &lim,
                                   &st, &err),
                     &err, "` has no ref `refs/heads/nope` (its branches: `");
  /* main asked of a repository whose branch is master (a fresh mirror) */
  assert_int_equal (t_sh ("git -C %s branch -m main master", f->src), 0);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app2", url, "refs/heads/main", f->c1, &lim,
                                   &st, &err),
                     &err, "` has no branch `main`");
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app2", url, "refs/heads/main", f->c1, &lim,
                                   &st, &err),
                     &err, "ask for `refs/heads/master`");
  assert_int_equal (t_sh ("git -C %s branch -m master main", f->src), 0);
  /* an object that is not a commit */
  s = t_sh_out ("git -C %s rev-parse HEAD:README", f->src);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", url, "refs/heads/main", s, &lim, &st,
                                   &err),
                     &err, "is a blob, not a commit");
  free (s);
  fx_free (f);
}

/* the ancestry questions the tag phase asks (issue 11 item 6) */
static void
test_descends_and_ref_tip (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char c2[41], tip[41];
  bool b, found;
  (void) state;

  add_commit (f, f->src, "two\n", c2);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", f->src, "refs/heads/main", c2, &lim, NULL,
                           &err),
             &err);
  assert_ok (gitsrc_descends (&b, repo, c2, f->c1, &err), &err);
  assert_true (b);
  assert_ok (gitsrc_descends (&b, repo, f->c1, c2, &err), &err);
  assert_false (b);
  assert_ok (gitsrc_descends (&b, repo, c2, c2, &err), &err);
  assert_true (b);
  /* unknown to the mirror: not an ancestor, not an error */
  assert_ok (gitsrc_descends (&b, repo, c2, "0123456789abcdef0123456789abcdef01234567", &err),
             &err);
  assert_false (b);
  assert_fails_with (gitsrc_descends (&b, repo, c2, "HEAD", &err), &err, "HEAD");
  assert_ok (gitsrc_ref_tip (tip, &found, repo, "refs/heads/main", &err), &err);
  assert_true (found);
  assert_string_equal (tip, c2);
  assert_ok (gitsrc_ref_tip (tip, &found, repo, "refs/heads/nope", &err), &err);
  assert_false (found);
  assert_string_equal (tip, "");
  gitsrc_repo_free (repo);
  fx_free (f);
}

static void
test_bad_arguments (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char url[600], longurl[3000];
  static const char *const bad_urls[] = {
    "ssh://host/repo.git",
    "git://host/repo.git",
    "ext::sh -c touch% /tmp/pwned",
    "relative/path",
    "./repo",
    "host:repo.git",
    "user@host:repo.git",
    "https://user:pw@host/x",
    "https://token@host/x",
    "http://host/a\nb",
    "http://host/a\x7f",
    "",
    "file://host/x",
    "file:relative",
    "HTTPS://host/x",
    "ftp://host/x",
    "http:///x",
    "/tmp/a%2e",
    "file:///tmp/%2e",
    "https://host/a b",
  };
  static const char *const bad_apps[] = {
    "",
    "A",
    "-x",
    "a_b",
    "a/b",
    "../x",
    ".x",
    "a.git",
    "a b",
    "ä",
    "0123456789012345678901234567890123456789012345678901234567890123",
  };
  static const char *const bad_commits[] = {
    "abc1234",
    "main",
    "HEAD",
    "HEAD~1",
    "refs/heads/main",
    "",
    "0123456789ABCDEF0123456789ABCDEF01234567",  /* uppercase */
    "0123456789abcdef0123456789abcdef012345678", /* 41 */
    "0123456789abcdef0123456789abcdef0123456g",
    "0123456789abcdef0123456789abcdef0123456^",
  };
  static const char *const bad_refs[] = {
    "main",
    "HEAD",
    "refs/heads/a:b",
    "refs/heads/*",
    "refs/heads/a..b",
    "+refs/heads/x",
    "refs/heads/x.lock",
    "refs/heads/ x",
    "refs/heads/a~1",
    "-refs/heads/x",
  };
  (void) state;

  snprintf (url, sizeof url, "file://%s", f->src);
  for (size_t i = 0; i < ARRAY_SIZE (bad_urls); i++)
    {
      if (gitsrc_fetch (&repo, f->cache, "app", bad_urls[i], NULL, f->c1, &lim, NULL, &err) == 0)
        fail_msg ("URL `%s` was accepted", bad_urls[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      bvm_error_free (&err);
    }
  memset (longurl, 'a', sizeof longurl - 1);
  memcpy (longurl, "https://h/", 10);
  longurl[sizeof longurl - 1] = '\0';
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", longurl, NULL, f->c1, &lim, NULL, &err),
                     &err, "longer than 2048 bytes");
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", "https://u:secret@h/x", NULL, f->c1,
                                   &lim, NULL, &err),
                     &err, "must not embed credentials");
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", "ext::sh", NULL, f->c1, &lim, NULL,
                                   &err),
                     &err, "is not allowed");

  for (size_t i = 0; i < ARRAY_SIZE (bad_apps); i++)
    {
      if (gitsrc_fetch (&repo, f->cache, bad_apps[i], url, NULL, f->c1, &lim, NULL, &err) == 0)
        fail_msg ("app `%s` was accepted", bad_apps[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      assert_non_null (strstr (bvm_error_msg (&err), "app id"));
      bvm_error_free (&err);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad_commits); i++)
    {
      if (gitsrc_fetch (&repo, f->cache, "app", url, NULL, bad_commits[i], &lim, NULL, &err) == 0)
        fail_msg ("commit `%s` was accepted", bad_commits[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      assert_non_null (strstr (bvm_error_msg (&err), "is not a full commit id"));
      bvm_error_free (&err);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad_refs); i++)
    {
      if (gitsrc_fetch (&repo, f->cache, "app", url, bad_refs[i], f->c1, &lim, NULL, &err) == 0)
        fail_msg ("ref `%s` was accepted", bad_refs[i]);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      bvm_error_free (&err);
    }
  /* nothing was created for any of them: validation comes first */
  assert_int_equal (access (f->cache, F_OK), -1);
  /* a missing local repository */
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "app", "/nonexistent/repo", NULL, f->c1, &lim,
                                   NULL, &err),
                     &err, "local repository `/nonexistent/repo`");
  /* exports check the commit string too */
  assert_ok (gitsrc_open_local (&repo, f->src, &err), &err);
  assert_fails_with (export_to (f->tar, repo, "HEAD", &lim, NULL, &err), &err,
                     "not a full commit id");
  assert_fails_with (export_to (f->tar, repo, "0123456789abcdef0123456789abcdef01234567", &lim,
                                NULL, &err),
                     &err, "commit `0123456789abcdef0123456789abcdef01234567`");
  gitsrc_repo_free (repo);
  fx_free (f);
}

static void
test_per_app_isolation (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char other[600], url[1024];
  (void) state;

  /* app `a` has c1 in its mirror */
  assert_ok (gitsrc_fetch (&repo, f->cache, "a", f->src, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  gitsrc_repo_free (repo);

  /* app `b` fetches from a repository without c1: a's mirror is not consulted */
  snprintf (other, sizeof other, "%s/other", f->tmp);
  assert_int_equal (t_sh (GITENV "mkdir %s && cd %s && git init -q -b main && echo b > b && "
                                 "git add b && git commit -q -m b",
                          f->tmp, other, other),
                    0);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "b", other, "refs/heads/main", f->c1, &lim,
                                   &st, &err),
                     &err, "is not reachable");
  assert_true (is_dir ("%s/a.git", f->cache));
  assert_true (is_dir ("%s/b.git", f->cache));
  {
    char *n = t_sh_out ("git --git-dir=%s/b.git cat-file -t %s 2>/dev/null || echo missing",
                        f->cache, f->c1);
    assert_string_equal (n, "missing");
    free (n);
  }

  /* app `b` may not name a's mirror as its repository */
  snprintf (url, sizeof url, "file://%s/a.git", f->cache);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "b", url, NULL, f->c1, &lim, &st, &err), &err,
                     "is inside the checkout cache");
  snprintf (url, sizeof url, "%s/../cache/./a.git", f->cache);
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "b", url, NULL, f->c1, &lim, &st, &err), &err,
                     "is inside the checkout cache");

  /* the same app with a new URL: the mirror is rebuilt, objects fetched from
   * the old URL do not count */
  assert_fails_with (gitsrc_fetch (&repo, f->cache, "a", other, "refs/heads/main", f->c1, &lim,
                                   &st, &err),
                     &err, "is not reachable");
  {
    char *n = t_sh_out ("git --git-dir=%s/a.git cat-file -t %s 2>/dev/null || echo missing",
                        f->cache, f->c1);
    assert_string_equal (n, "missing");
    free (n);
  }
  /* file:// and a plain path name the same repository */
  assert_ok (gitsrc_fetch (&repo, f->cache, "c", f->src, NULL, f->c1, &lim, &st, &err), &err);
  gitsrc_repo_free (repo);
  snprintf (url, sizeof url, "file://%s", f->src);
  assert_ok (gitsrc_fetch (&repo, f->cache, "c", url, NULL, f->c1, &lim, &st, &err), &err);
  assert_false (st.fetched);
  gitsrc_repo_free (repo);
  fx_free (f);
}

static void
test_lock (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *held = NULL, *repo = NULL;
  bvm_error_t err = NULL;
  int64_t t0;
  (void) state;

  assert_ok (gitsrc_fetch (&held, f->cache, "app", f->src, NULL, f->c1, &lim, NULL, &err), &err);
  /* the same app waits for the holder; here until its deadline */
  t0 = now_ms ();
  lim.deadline_ms = t0 + 200;
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "app", f->src, NULL, f->c1, &lim, NULL,
                                      &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  assert_non_null (strstr (bvm_error_msg (&err), "waiting for the lock"));
  assert_true (now_ms () - t0 >= 200);
  bvm_error_free (&err);
  lim.deadline_ms = now_ms () + 5000;
  /* another app does not wait */
  assert_ok (gitsrc_fetch (&repo, f->cache, "other", f->src, NULL, f->c1, &lim, NULL, &err), &err);
  gitsrc_repo_free (repo);
  /* released by gitsrc_repo_free */
  gitsrc_repo_free (held);
  lim.deadline_ms = now_ms () + 5000;
  assert_ok (gitsrc_fetch (&repo, f->cache, "app", f->src, NULL, f->c1, &lim, NULL, &err), &err);
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* The tests' upstreams are on 127.0.0.1, which only an exception allows. */
static const struct netaddr_allow *
loopback_allowed (void)
{
  static struct netaddr_allow allow;
  bvm_error_t err = NULL;
  if (allow.n == 0)
    assert_ok (netaddr_allow_parse (&allow, "127.0.0.1/32", &err), &err);
  return &allow;
}

/* A server that accepts the connection and never answers (issue 11): the
 * listening socket's backlog completes the handshake, nobody ever reads or
 * writes. libgit2 1.5 would wait for ever; the fetch process is killed at
 * the deadline. The same for a local repository whose ref is a FIFO (an
 * open() that never returns), and the mirror lock is free again after. */
static void
test_fetch_silent (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t slen = sizeof sa;
  bvm_error_t err = NULL;
  char url[128], fifo_repo[PATH_MAX];
  int64_t t0;
  int fd;
  (void) state;

  lim.allow_addresses = loopback_allowed ();
  fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true (fd >= 0);
  assert_int_equal (bind (fd, (struct sockaddr *) &sa, sizeof sa), 0);
  assert_int_equal (listen (fd, 16), 0);
  assert_int_equal (getsockname (fd, (struct sockaddr *) &sa, &slen), 0);
  snprintf (url, sizeof url, "http://127.0.0.1:%d/app.git", ntohs (sa.sin_port));

  t0 = now_ms ();
  lim.deadline_ms = t0 + 500;
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "silent", url, "refs/heads/main", f->c1,
                                      &lim, NULL, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  assert_non_null (strstr (bvm_error_msg (&err), "timed out after"));
  assert_non_null (strstr (bvm_error_msg (&err), "s (0 bytes received)"));
  assert_true (now_ms () - t0 < 3000);
  bvm_error_free (&err);
  close (fd);

  /* a local repository whose branch is a FIFO */
  snprintf (fifo_repo, sizeof fifo_repo, "%s/fifo.git", f->tmp);
  assert_int_equal (t_sh ("git clone -q --bare %s %s && rm %s/refs/heads/main %s/packed-refs; "
                          "mkfifo %s/refs/heads/main",
                          f->src, fifo_repo, fifo_repo, fifo_repo, fifo_repo),
                    0);
  t0 = now_ms ();
  lim.deadline_ms = t0 + 500;
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "silent", fifo_repo, "refs/heads/main",
                                      f->c1, &lim, NULL, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  assert_true (now_ms () - t0 < 3000);
  bvm_error_free (&err);

  /* the lock was released and the dropped mirror is rebuilt */
  lim.deadline_ms = now_ms () + 10000;
  assert_ok (gitsrc_fetch (&repo, f->cache, "silent", f->src, NULL, f->c1, &lim, NULL, &err),
             &err);
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* --- HTTP ----------------------------------------------------------------------- */

struct http_server
{
  pid_t pid;
  int port;
  char log[600];
};

static void
http_start (struct http_server *h, const char *tmp, const char *root)
{
  const char *srcdir = getenv ("BUILDVM_SRCDIR");
  char script[1024], portfile[600];
  int64_t until = now_ms () + 10000;

  snprintf (script, sizeof script, "%s/tests/lib/git-http-server.py", srcdir ? srcdir : ".");
  snprintf (portfile, sizeof portfile, "%s/http.port", tmp);
  snprintf (h->log, sizeof h->log, "%s/http.log", tmp);
  h->pid = fork ();
  assert_true (h->pid >= 0);
  if (h->pid == 0)
    {
      /* the server goes away with the test, even when an assertion fails */
      prctl (PR_SET_PDEATHSIG, SIGTERM);
      execlp ("python3", "python3", script, root, portfile, h->log, (char *) NULL);
      _exit (127);
    }
  /* the server renames the port file into place once it listens */
  for (;;)
    {
      if (access (portfile, F_OK) == 0)
        {
          char *s = t_read (portfile);
          int ok = parse_int (s, &h->port) == 0;
          free (s);
          assert_true (ok);
          break;
        }
      if (now_ms () > until)
        fail_msg ("the git HTTP server did not start");
      usleep (20000);
    }
}

static void
http_stop (struct http_server *h)
{
  if (h->pid > 0)
    {
      kill (h->pid, SIGTERM);
      waitpid (h->pid, NULL, 0);
      h->pid = 0;
    }
}

static int
http_requests (const struct http_server *h)
{
  char *n = t_sh_out ("cat %s 2>/dev/null | wc -l", h->log);
  int r = -1;
  assert_int_equal (parse_int (n, &r), 0);
  free (n);
  return r;
}

static void
test_fetch_http (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  struct http_server h = { 0 };
  struct tarlist l;
  bvm_error_t err = NULL;
  char root[600], url[700], slow[700], work[600], c2[41];
  int before;
  (void) state;

  snprintf (root, sizeof root, "%s/srv", f->tmp);
  snprintf (work, sizeof work, "%s/work", f->tmp);
  assert_int_equal (t_sh (GITENV "mkdir -p %s && git clone -q --bare %s %s/repo.git && "
                                 "git clone -q %s/repo.git %s",
                          f->tmp, root, f->src, root, root, work),
                    0);
  http_start (&h, f->tmp, root);
  snprintf (url, sizeof url, "http://127.0.0.1:%d/repo.git", h.port);
  snprintf (slow, sizeof slow, "http://127.0.0.1:%d/slow/repo.git", h.port);
  lim.allow_addresses = loopback_allowed ();

  assert_ok (gitsrc_fetch (&repo, f->cache, "web", url, "refs/heads/main", f->c1, &lim, &st, &err),
             &err);
  assert_true (st.fetched);
  assert_true (http_requests (&h) >= 2); /* info/refs, then upload-pack */
  assert_ok (export_to (f->tar, repo, f->c1, &lim, NULL, &err), &err);
  tar_read (&l, f->tar);
  assert_base_tree (&l, true);
  gitsrc_repo_free (repo);

  /* incremental: a pushed commit, only its new objects come over HTTP */
  add_commit (f, work, "over http\n", c2);
  assert_int_equal (t_sh (GITENV "cd %s && git push -q origin main", f->tmp, work), 0);
  assert_ok (gitsrc_fetch (&repo, f->cache, "web", url, "refs/heads/main", c2, &lim, &st, &err),
             &err);
  assert_true (st.fetched);
  assert_int_equal (st.fetch_objects, 3);
  assert_ok (export_to (f->tar, repo, c2, &lim, NULL, &err), &err);
  tar_read (&l, f->tar);
  assert_entry (&l, "src/README", AE_IFREG, 0644, "over http\n");
  gitsrc_repo_free (repo);

  /* already present: no request at all */
  before = http_requests (&h);
  assert_ok (gitsrc_fetch (&repo, f->cache, "web", url, "refs/heads/main", f->c1, &lim, &st, &err),
             &err);
  assert_false (st.fetched);
  gitsrc_repo_free (repo);
  assert_int_equal (http_requests (&h), before);

  /* a deadline that passes while the server takes its time */
  lim.deadline_ms = now_ms () + 300;
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "slow", slow, "refs/heads/main", f->c1,
                                      &lim, &st, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  assert_non_null (strstr (bvm_error_msg (&err), "timed out after"));
  bvm_error_free (&err);
  lim.deadline_ms = 0;

  /* a pack bigger than allowed */
  lim.max_fetch_bytes = 16;
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "small", url, "refs/heads/main", f->c1,
                                      &lim, &st, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  bvm_error_free (&err);
  lim.max_fetch_bytes = GITSRC_GIB;

  /* no redirect to another host, not even on the first request */
  snprintf (url, sizeof url, "http://127.0.0.1:%d/moved/repo.git", h.port);
  before = http_requests (&h);
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "moved", url, "refs/heads/main", f->c1,
                                      &lim, &st, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_NETWORK);
  if (strstr (bvm_error_msg (&err), "redirect") == NULL)
    fail_msg ("unexpected error: %s", bvm_error_msg (&err));
  bvm_error_free (&err);
  assert_int_equal (http_requests (&h), before + 1);

  /* a repository the server does not have: a network error, not a crash */
  snprintf (url, sizeof url, "http://127.0.0.1:%d/nope.git", h.port);
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "nope", url, "refs/heads/main", f->c1, &lim,
                                      &st, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_NETWORK);
  bvm_error_free (&err);

  http_stop (&h);
  fx_free (f);
}

/* A repository URL's host goes through the egress address rules (issue 13):
 * every spelling of a loopback or metadata address and a name that
 * resolves to loopback are refused before any connection is made
 * (BVM_E_DENIED, never retried, the mirror lock free again), unless the
 * operator's exception holds the address; then the checked address is the
 * one connected to. */
static void
test_fetch_address (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  struct http_server h = { 0 };
  bvm_error_t err = NULL;
  char root[600], url[700];
  static const struct
  {
    const char *host;
    const char *why;
  } refused[] = {
    { "127.0.0.1", "loopback" },
    { "2130706433", "loopback" },
    { "0x7f.1", "loopback" },
    { "0177.0.0.1", "loopback" },
    { "[::ffff:7f00:1]", "loopback" },
    { "[::1]", "loopback" },
    { "localhost", "loopback" },
    { "169.254.169.254", "link-local" },
    { "0xa9fea9fe", "link-local" },
    { "10.1.2.3", "RFC 1918" },
    { "[::ffff:10.1.2.3]", "RFC 1918" },
    { "1.2.3.4.5", "" },
  };
  int before;
  (void) state;

  snprintf (root, sizeof root, "%s/srv", f->tmp);
  assert_int_equal (t_sh (GITENV "mkdir -p %s && git clone -q --bare %s %s/repo.git", f->tmp, root,
                          f->src, root),
                    0);
  http_start (&h, f->tmp, root);
  for (size_t i = 0; i < ARRAY_SIZE (refused); i++)
    {
      int64_t t0 = now_ms ();
      before = http_requests (&h);
      snprintf (url, sizeof url, "http://%s:%d/repo.git", refused[i].host, h.port);
      lim.deadline_ms = t0 + 10000;
      assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "addr", url, "refs/heads/main", f->c1,
                                          &lim, NULL, &err),
                            0);
      if (bvm_error_get_code (&err) != BVM_E_DENIED
          || strstr (bvm_error_msg (&err), "the repository host is refused") == NULL
          || strstr (bvm_error_msg (&err), refused[i].why) == NULL
          || strstr (bvm_error_msg (&err), "checkout.allow_addresses") == NULL)
        fail_msg ("%s: code %d: %s", refused[i].host, bvm_error_get_code (&err),
                  bvm_error_msg (&err));
      bvm_error_free (&err);
      assert_true (now_ms () - t0 < 5000);
      /* nothing reached the server (only the loopback spellings could) */
      assert_int_equal (http_requests (&h), before);
    }
  /* https goes through the same check (libgit2's TLS stream is built on ours) */
  snprintf (url, sizeof url, "https://2130706433:%d/repo.git", h.port);
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "addr", url, "refs/heads/main", f->c1, &lim,
                                      NULL, &err),
                        0);
  if (bvm_error_get_code (&err) != BVM_E_DENIED
      || strstr (bvm_error_msg (&err), "loopback") == NULL)
    fail_msg ("https: code %d: %s", bvm_error_get_code (&err), bvm_error_msg (&err));
  bvm_error_free (&err);

  /* the exception: 127.0.0.1 in any spelling, and only that */
  lim.allow_addresses = loopback_allowed ();
  snprintf (url, sizeof url, "http://0x7f.1:%d/repo.git", h.port);
  assert_ok (gitsrc_fetch (&repo, f->cache, "addr", url, "refs/heads/main", f->c1, &lim, NULL,
                           &err),
             &err);
  gitsrc_repo_free (repo);
  snprintf (url, sizeof url, "http://127.0.0.2:%d/repo.git", h.port);
  assert_int_not_equal (gitsrc_fetch (&repo, f->cache, "addr2", url, "refs/heads/main", f->c1,
                                      &lim, NULL, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  bvm_error_free (&err);
  http_stop (&h);
  fx_free (f);
}

/* --- hostile trees ------------------------------------------------------------- */

struct rawent
{
  const char *mode;
  const char *name;
  size_t nlen; /* 0: strlen (name) */
  git_oid id;
};

/* A tree object written byte by byte, whatever its names. */
static git_oid
raw_tree (git_repository *repo, const struct rawent *e, size_t n)
{
  char data[4096];
  size_t len = 0;
  git_odb *odb = NULL;
  git_oid id;

  for (size_t i = 0; i < n; i++)
    {
      size_t nlen = e[i].nlen ? e[i].nlen : strlen (e[i].name);
      assert_true (len + strlen (e[i].mode) + nlen + 2 + GIT_OID_RAWSZ < sizeof data);
      memcpy (data + len, e[i].mode, strlen (e[i].mode));
      len += strlen (e[i].mode);
      data[len++] = ' ';
      memcpy (data + len, e[i].name, nlen);
      len += nlen;
      data[len++] = '\0';
      memcpy (data + len, e[i].id.id, GIT_OID_RAWSZ);
      len += GIT_OID_RAWSZ;
    }
  assert_int_equal (git_repository_odb (&odb, repo), 0);
  assert_int_equal (git_odb_write (&id, odb, data, len, GIT_OBJECT_TREE), 0);
  git_odb_free (odb);
  return id;
}

static git_oid
blob (git_repository *repo, const char *content)
{
  git_oid id;
  assert_int_equal (git_blob_create_from_buffer (&id, repo, content, strlen (content)), 0);
  return id;
}

/* A commit of `tree` (no ref: exports read the odb directly). */
static void
commit_of (char out[41], git_repository *repo, const git_oid *tree_id)
{
  git_signature *sig = NULL;
  git_tree *tree = NULL;
  git_oid id;

  assert_int_equal (git_signature_new (&sig, "t", "t@example.com", COMMIT_TIME, 0), 0);
  if (git_tree_lookup (&tree, repo, tree_id) < 0)
    fail_msg ("tree lookup: %s", git_error_last ()->message);
  assert_int_equal (git_commit_create (&id, repo, NULL, sig, sig, NULL, "evil", tree, 0, NULL), 0);
  git_oid_tostr (out, 41, &id);
  git_tree_free (tree);
  git_signature_free (sig);
}

static void
expect_refused (const struct fx *f, struct gitsrc_repo *repo, const char *commit,
                const char *needle)
{
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  bvm_error_t err = NULL;
  struct tarlist l;

  if (export_to (f->tar, repo, commit, &lim, NULL, &err) == 0)
    fail_msg ("the tree with `%s` was exported", needle);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  bvm_error_free (&err);
  /* nothing was written for the refused entry nor after it */
  tar_read (&l, f->tar);
  for (size_t i = 0; i < l.n; i++)
    assert_null (strstr (l.e[i].path, "payload"));
}

static void
test_hostile_trees (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_repo *repo = NULL;
  git_repository *g = NULL;
  bvm_error_t err = NULL;
  git_oid b, inner;
  char c[41];
  static const struct
  {
    const char *name;
    size_t nlen;
    const char *needle;
  } names[] = {
    { ".git", 0, "refusing `src/.git`: name `.git` is a spelling of `.git`" },
    { ".GIT", 0, "refusing `src/.GIT`" },
    { ".Git.", 0, "refusing `src/.Git.`" },
    { ".git  ", 0, "refusing `src/.git  `" },
    { ".git. .", 0, "spelling of `.git`" },
    { "git~1", 0, "refusing `src/git~1`" },
    { "GIT~1", 0, "refusing `src/GIT~1`" },
    { ".g\xe2\x80\x8cit", 0, "refusing `src/.g\\xe2\\x80\\x8cit`" },
    { ".git\xef\xbb\xbf", 0, "spelling of `.git`" },
    { ".git:x", 0, "spelling of `.git`" },
    { "..", 0, "refusing `src/..`: name `..` is not allowed" },
    { ".", 0, "refusing `src/.`" },
    { "a/b", 0, "contains a slash" },
    { "/etc", 0, "contains a slash" },
  };
  (void) state;

  assert_ok (gitsrc_open_local (&repo, f->src, &err), &err);
  assert_int_equal (git_repository_open (&g, f->src), 0);
  b = blob (g, "payload");

  for (size_t i = 0; i < ARRAY_SIZE (names); i++)
    {
      /* as a file at the top, and as a directory holding a file one level down */
      struct rawent top[] = { { "100644", names[i].name, names[i].nlen, b } };
      struct rawent sub[] = { { "100644", "payload", 0, b } };
      git_oid t = raw_tree (g, top, 1), st;
      commit_of (c, g, &t);
      expect_refused (f, repo, c, names[i].needle);

      st = raw_tree (g, sub, 1);
      {
        struct rawent dir[] = { { "40000", names[i].name, names[i].nlen, st } };
        git_oid d = raw_tree (g, dir, 1);
        struct rawent wrap[] = { { "40000", "lib", 0, d } };
        git_oid w = raw_tree (g, wrap, 1);
        commit_of (c, g, &w);
        expect_refused (f, repo, c, "refusing `src/lib/");
      }
    }

  /* a symlinked .gitmodules, in several spellings */
  {
    static const char *const mods[] = { ".gitmodules", ".GITMODULES.", "GITMOD~1", "gi7eba~1" };
    git_oid tgt = blob (g, "/etc/passwd");
    for (size_t i = 0; i < ARRAY_SIZE (mods); i++)
      {
        struct rawent e[] = { { "120000", mods[i], 0, tgt } };
        git_oid t = raw_tree (g, e, 1);
        commit_of (c, g, &t);
        expect_refused (f, repo, c, "is a spelling of `.gitmodules`");
      }
  }

  /* two entries with one name: a symlink `a` -> /etc and a directory `a`
   * whose file would be extracted through the link */
  {
    struct rawent in[] = { { "100644", "payload", 0, b } };
    git_oid tgt = blob (g, "/etc");
    inner = raw_tree (g, in, 1);
    {
      struct rawent e[] = { { "120000", "a", 0, tgt }, { "40000", "a", 0, inner } };
      git_oid t = raw_tree (g, e, 2);
      commit_of (c, g, &t);
      expect_refused (f, repo, c, "two entries named `a`");
    }
    {
      struct rawent e[] = { { "100644", "x", 0, b }, { "100644", "x", 0, b } };
      git_oid t = raw_tree (g, e, 2);
      commit_of (c, g, &t);
      expect_refused (f, repo, c, "two entries named `x`");
    }
  }

  /* symlink targets a file system cannot hold */
  {
    git_oid nul, empty, huge;
    char big[GITSRC_MAX_SYMLINK + 2];
    assert_int_equal (git_blob_create_from_buffer (&nul, g, "a\0/etc/passwd", 14), 0);
    assert_int_equal (git_blob_create_from_buffer (&empty, g, "", 0), 0);
    memset (big, 'x', sizeof big);
    assert_int_equal (git_blob_create_from_buffer (&huge, g, big, sizeof big), 0);
    {
      struct rawent e[] = { { "120000", "l", 0, nul } };
      git_oid t = raw_tree (g, e, 1);
      commit_of (c, g, &t);
      expect_refused (f, repo, c,
                      "symlink `src/l` has an empty, overlong or NUL-containing target");
    }
    {
      struct rawent e[] = { { "120000", "l", 0, empty } };
      git_oid t = raw_tree (g, e, 1);
      commit_of (c, g, &t);
      expect_refused (f, repo, c, "symlink `src/l`");
    }
    {
      struct rawent e[] = { { "120000", "l", 0, huge } };
      git_oid t = raw_tree (g, e, 1);
      commit_of (c, g, &t);
      expect_refused (f, repo, c, "symlink `src/l`");
    }
  }

  /* a tree entry that claims to be a tree but names a blob */
  {
    struct rawent e[] = { { "40000", "d", 0, b } };
    git_oid t = raw_tree (g, e, 1);
    commit_of (c, g, &t);
    expect_refused (f, repo, c, "`src/d`");
  }
  /* an unknown mode */
  {
    struct rawent e[] = { { "100600", "m", 0, b } };
    git_oid t = raw_tree (g, e, 1);
    git_tree *tree = NULL;
    if (git_tree_lookup (&tree, g, &t) == 0)
      {
        git_tree_free (tree);
        /* libgit2 may normalise it to a plain blob; both are fine */
        struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
        commit_of (c, g, &t);
        if (export_to (f->tar, repo, c, &lim, NULL, &err) < 0)
          {
            assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
            bvm_error_free (&err);
          }
      }
  }
  /* an empty name (libgit2 refuses to parse such a tree; either way no export) */
  {
    struct rawent e[] = { { "100644", "", 0, b } };
    git_oid t;
    char data[64];
    size_t len;
    git_odb *odb = NULL;
    (void) e;
    len = (size_t) snprintf (data, sizeof data, "100644 ");
    data[len++] = '\0';
    memcpy (data + len, b.id, GIT_OID_RAWSZ);
    len += GIT_OID_RAWSZ;
    assert_int_equal (git_repository_odb (&odb, g), 0);
    assert_int_equal (git_odb_write (&t, odb, data, len, GIT_OBJECT_TREE), 0);
    git_odb_free (odb);
    {
      git_tree *tree = NULL;
      if (git_tree_lookup (&tree, g, &t) == 0)
        {
          commit_of (c, g, &t);
          expect_refused (f, repo, c, "empty path component");
          git_tree_free (tree);
        }
    }
  }
  git_repository_free (g);
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* A hostile tree arrives by fetch like any other and is refused at export. */
static void
test_hostile_tree_fetched (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  git_repository *g = NULL;
  git_reference *ref = NULL;
  bvm_error_t err = NULL;
  git_oid b, t, id;
  char c[41];
  (void) state;

  assert_int_equal (git_repository_open (&g, f->src), 0);
  b = blob (g, "[core]\n\tfsmonitor = touch /tmp/pwned\n");
  {
    struct rawent cfg[] = { { "100644", "config", 0, b } };
    git_oid d = raw_tree (g, cfg, 1);
    struct rawent top[] = { { "40000", ".GIT", 0, d } };
    t = raw_tree (g, top, 1);
  }
  commit_of (c, g, &t);
  assert_int_equal (git_oid_fromstr (&id, c), 0);
  assert_int_equal (git_reference_create (&ref, g, "refs/heads/evil", &id, 1, NULL), 0);
  git_reference_free (ref);
  git_repository_free (g);

  assert_ok (gitsrc_fetch (&repo, f->cache, "evil", f->src, "refs/heads/evil", c, &lim, NULL,
                           &err),
             &err);
  assert_fails_with (export_to (f->tar, repo, c, &lim, NULL, &err), &err,
                     "refusing `src/.GIT`: name `.GIT` is a spelling of `.git`");
  gitsrc_repo_free (repo);
  fx_free (f);
}

static void
test_submodule_skipped (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  struct tarlist l;
  bvm_error_t err = NULL;
  char *c;
  (void) state;

  assert_int_equal (t_sh (GITENV
                          "cd %s && git update-index --add --cacheinfo "
                          "160000,0123456789abcdef0123456789abcdef01234567,vendor/lib && "
                          "printf '[submodule \"x\"]\\n\\tpath = vendor/lib\\n\\turl = /x\\n' "
                          "> .gitmodules && git add .gitmodules && git commit -q -m sub",
                          f->tmp, f->src),
                    0);
  c = t_sh_out ("git -C %s rev-parse HEAD", f->src);
  assert_ok (gitsrc_fetch (&repo, f->cache, "sub", f->src, "refs/heads/main", c, &lim, NULL, &err),
             &err);
  assert_ok (export_to (f->tar, repo, c, &lim, &st, &err), &err);
  tar_read (&l, f->tar);
  assert_int_equal (st.skipped, 1);
  assert_null (tar_find (&l, "src/vendor/lib"));
  assert_null (tar_find (&l, "src/vendor/lib/"));
  assert_entry (&l, "src/vendor/", AE_IFDIR, 0755, NULL);
  assert_non_null (tar_find (&l, "src/.gitmodules"));
  gitsrc_repo_free (repo);
  free (c);
  fx_free (f);
}

static void
test_caps (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  struct archive *w;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (gitsrc_fetch (&repo, f->cache, "caps", f->src, NULL, f->c1, &lim, NULL, &err), &err);

  /* 9 entries in the tree (the prefix directory is not counted) */
  lim.max_entries = 8;
  assert_int_not_equal (export_to (f->tar, repo, f->c1, &lim, NULL, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (strstr (bvm_error_msg (&err), "more than 8 entries"));
  bvm_error_free (&err);
  lim.max_entries = 9;
  assert_ok (export_to (f->tar, repo, f->c1, &lim, NULL, &err), &err);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;

  /* 58 bytes in all: 6 + 18 + 4 file bytes, 6 + 11 + 13 link bytes */
  lim.max_bytes = 57;
  assert_int_not_equal (export_to (f->tar, repo, f->c1, &lim, NULL, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (strstr (bvm_error_msg (&err), "over 57 bytes"));
  bvm_error_free (&err);
  lim.max_bytes = 58;
  assert_ok (export_to (f->tar, repo, f->c1, &lim, NULL, &err), &err);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;

  lim.max_file_bytes = 17;
  assert_int_not_equal (export_to (f->tar, repo, f->c1, &lim, NULL, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (strstr (bvm_error_msg (&err), "`src/bin/run.sh` is 18 bytes"));
  bvm_error_free (&err);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;

  /* the longest path is "src/dir/sub/file" (16 bytes) */
  lim.max_path = 15;
  assert_int_not_equal (export_to (f->tar, repo, f->c1, &lim, NULL, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (
      strstr (bvm_error_msg (&err), "path `src/dir/sub/file` is longer than 15 bytes"));
  bvm_error_free (&err);
  lim.max_path = 16;
  assert_ok (export_to (f->tar, repo, f->c1, &lim, NULL, &err), &err);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;

  lim.deadline_ms = now_ms () - 1;
  assert_int_not_equal (export_to (f->tar, repo, f->c1, &lim, NULL, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_TIMEOUT);
  bvm_error_free (&err);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;

  /* prefixes */
  w = tar_open (f->tar);
  assert_fails_with (gitsrc_export (w, repo, f->c1, "/abs/", &lim, NULL, &err), &err,
                     "must be relative");
  assert_fails_with (gitsrc_export (w, repo, f->c1, "src", &lim, NULL, &err), &err,
                     "end with `/`");
  assert_fails_with (gitsrc_export (w, repo, f->c1, "a/../", &lim, NULL, &err), &err, "`..`");
  assert_fails_with (gitsrc_export (w, repo, f->c1, "a//", &lim, NULL, &err), &err, "empty");
  assert_fails_with (gitsrc_export (w, repo, f->c1, ".git/", &lim, NULL, &err), &err, "spelling");
  tar_close (w);
  {
    struct tarlist l;
    w = tar_open (f->tar);
    assert_ok (gitsrc_export (w, repo, f->c1, "a/b/", &lim, NULL, &err), &err);
    tar_close (w);
    tar_read (&l, f->tar);
    assert_entry (&l, "a/", AE_IFDIR, 0755, NULL);
    assert_entry (&l, "a/b/", AE_IFDIR, 0755, NULL);
    assert_entry (&l, "a/b/link", AE_IFLNK, 0777, "README");
    assert_int_equal (l.n, 11);
    w = tar_open (f->tar);
    assert_ok (gitsrc_export (w, repo, f->c1, "", &lim, NULL, &err), &err);
    tar_close (w);
    tar_read (&l, f->tar);
    assert_entry (&l, "README", AE_IFREG, 0644, "hello\n");
    assert_int_equal (l.n, 9);
  }
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* Names that are not plain ASCII, and paths longer than ustar's 100 bytes,
 * come back from the archive byte for byte. */
static void
test_names_round_trip (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_repo *repo = NULL;
  git_repository *g = NULL;
  bvm_error_t err = NULL;
  struct tarlist l;
  git_oid b, t;
  char c[41], longname[201], want[300];
  (void) state;

  memset (longname, 'n', 200);
  longname[200] = '\0';
  assert_int_equal (git_repository_open (&g, f->src), 0);
  b = blob (g, "x");
  {
    struct rawent e[] = {
      { "100644", "caf\xc3\xa9", 0, b }, /* UTF-8 */
      { "100644", "bin\xff\xfe", 0, b }, /* not UTF-8 */
      { "100644", "new\nline", 0, b },
      { "100644", longname, 0, b },
    };
    t = raw_tree (g, e, ARRAY_SIZE (e));
  }
  commit_of (c, g, &t);
  git_repository_free (g);
  assert_ok (gitsrc_open_local (&repo, f->src, &err), &err);
  assert_ok (export_to (f->tar, repo, c, &lim, NULL, &err), &err);
  tar_read (&l, f->tar);
  assert_int_equal (l.n, 5);
  assert_entry (&l, "src/caf\xc3\xa9", AE_IFREG, 0644, "x");
  assert_entry (&l, "src/bin\xff\xfe", AE_IFREG, 0644, "x");
  assert_entry (&l, "src/new\nline", AE_IFREG, 0644, "x");
  snprintf (want, sizeof want, "src/%s", longname);
  assert_entry (&l, want, AE_IFREG, 0644, "x");
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* Many entries and a deep tree: the walk keeps working (explicit stack). */
static void
test_deep_tree (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  git_repository *g = NULL;
  bvm_error_t err = NULL;
  git_oid b, t;
  char c[41];
  (void) state;

  assert_int_equal (git_repository_open (&g, f->src), 0);
  b = blob (g, "leaf");
  {
    struct rawent e[] = { { "100644", "f", 0, b } };
    t = raw_tree (g, e, 1);
  }
  for (int i = 0; i < 1000; i++)
    {
      struct rawent e[] = { { "40000", "d", 0, t } };
      t = raw_tree (g, e, 1);
    }
  commit_of (c, g, &t);
  git_repository_free (g);
  assert_ok (gitsrc_open_local (&repo, f->src, &err), &err);
  /* 1000 x "d/" + "f" + "src/" = 2005 bytes */
  assert_ok (export_to (f->tar, repo, c, &lim, &st, &err), &err);
  assert_int_equal (st.dirs, 1001);
  assert_int_equal (st.files, 1);
  lim.max_path = 2004;
  assert_int_not_equal (export_to (f->tar, repo, c, &lim, &st, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  bvm_error_free (&err);
  gitsrc_repo_free (repo);
  fx_free (f);
}

/* A spec that inflates to 64 MiB from 64 KiB of objects is refused from its
 * object header, before git_blob_lookup would inflate it (issue 11); a
 * small one is read. (t_git_bomb measures the memory.) */
static void
test_read_file_bomb (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char *text = NULL, *c;
  size_t len = 0;
  (void) state;

  assert_int_equal (t_sh (GITENV
                          "cd %s && head -c 64M /dev/zero > buildvm.json && "
                          "printf small > small.json && git add -A && git commit -q -m bomb",
                          f->tmp, f->src),
                    0);
  c = t_sh_out ("git -C %s rev-parse HEAD", f->src);
  assert_ok (gitsrc_open_local (&repo, f->src, &err), &err);
  assert_int_not_equal (gitsrc_read_file (&text, &len, repo, c, "buildvm.json", 256 * 1024, &err),
                        0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (strstr (bvm_error_msg (&err),
                           "`buildvm.json` is 67108864 bytes, over the 262144 bytes allowed"));
  bvm_error_free (&err);
  assert_ok (gitsrc_read_file (&text, &len, repo, c, "small.json", 256 * 1024, &err), &err);
  assert_int_equal (len, 5);
  assert_string_equal (text, "small");
  free (text);
  gitsrc_repo_free (repo);
  free (c);
  fx_free (f);
}

/* --- dry-run: HEAD and the working tree -------------------------------------------- */

static void
test_head (void **state)
{
  struct fx *f = fx_new ();
  bvm_error_t err = NULL;
  char head[41], empty[600];
  (void) state;

  assert_ok (gitsrc_head (head, f->src, &err), &err);
  assert_string_equal (head, f->c1);
  snprintf (empty, sizeof empty, "%s/empty", f->tmp);
  assert_int_equal (t_sh ("git init -q %s", empty), 0);
  assert_fails_with (gitsrc_head (head, empty, &err), &err, "has no commits yet");
  assert_fails_with (gitsrc_head (head, f->tmp, &err), &err, "is not the top of a git repository");
  fx_free (f);
}

/* what dry-run without --worktree counts as not included */
static void
test_worktree_changes (void **state)
{
  struct fx *f = fx_new ();
  bvm_error_t err = NULL;
  size_t n = 99;
  (void) state;

  assert_ok (gitsrc_worktree_changes (&n, f->src, NULL, &err), &err);
  assert_int_equal (n, 0);
  assert_int_equal (t_sh (GITENV
                          "cd %s && printf 'x.log\\n' > .gitignore && git add .gitignore && "
                          "git commit -q -m ignore && echo x > x.log && mkdir -p out/a && "
                          "echo o > out/a/o",
                          f->tmp, f->src),
                    0);
  assert_ok (gitsrc_worktree_changes (&n, f->src, "out/", &err), &err);
  assert_int_equal (n, 0); /* ignored, and the skipped output directory */
  assert_ok (gitsrc_worktree_changes (&n, f->src, NULL, &err), &err);
  assert_int_equal (n, 1); /* an untracked directory counts once */
  assert_int_equal (t_sh ("cd %s && echo edited > README && echo new > new.txt && "
                          "echo staged > s.txt && git add s.txt",
                          f->src),
                    0);
  assert_ok (gitsrc_worktree_changes (&n, f->src, "out/", &err), &err);
  assert_int_equal (n, 3);
  assert_fails_with (gitsrc_worktree_changes (&n, f->tmp, NULL, &err), &err,
                     "is not the top of a git repository");
  fx_free (f);
}

static void
test_worktree (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct tarlist l;
  struct archive *w;
  bvm_error_t err = NULL;
  (void) state;

  assert_int_equal (
      t_sh (GITENV "cd %s && printf '*.log\\nbuild/\\n' > .gitignore && echo bye > gone.txt && "
                   "echo keep > kept.log && git add .gitignore gone.txt && git add -f kept.log && "
                   "git commit -q -m ignore && "
                   /* uncommitted: a change, a deletion, new files, ignored files */
                   "printf 'edited\\n' > README && rm gone.txt && echo new > new.txt && "
                   "mkdir -p d/e build && echo f > d/e/f.txt && echo x > x.log && "
                   "echo o > build/out && ln -s /etc sd && chmod 755 new.txt && "
                   "git init -q nested && echo n > nested/inner && "
                   "echo secret > private.key && "
                   "echo private.key >> .git/info/exclude",
            f->tmp, f->src),
      0);

  w = tar_open (f->tar);
  assert_ok (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err);
  tar_close (w);
  tar_read (&l, f->tar);

  assert_entry (&l, "src/", AE_IFDIR, 0755, NULL);
  assert_entry (&l, "src/README", AE_IFREG, 0644, "edited\n");
  assert_entry (&l, "src/.gitignore", AE_IFREG, 0644, "*.log\nbuild/\n");
  assert_entry (&l, "src/new.txt", AE_IFREG, 0755, "new\n");
  assert_entry (&l, "src/kept.log", AE_IFREG, 0644, "keep\n"); /* tracked wins over ignored */
  assert_entry (&l, "src/d/", AE_IFDIR, 0755, NULL);
  assert_entry (&l, "src/d/e/", AE_IFDIR, 0755, NULL);
  assert_entry (&l, "src/d/e/f.txt", AE_IFREG, 0644, "f\n");
  assert_entry (&l, "src/sd", AE_IFLNK, 0777, "/etc"); /* never followed */
  assert_entry (&l, "src/bin/run.sh", AE_IFREG, 0755, "#!/bin/sh\necho hi\n");
  assert_entry (&l, "src/link", AE_IFLNK, 0777, "README");
  assert_entry (&l, "src/abs", AE_IFLNK, 0777, "/etc/passwd");
  assert_entry (&l, "src/dir/sub/file", AE_IFREG, 0644, "deep");
  assert_null (tar_find (&l, "src/gone.txt"));
  assert_null (tar_find (&l, "src/x.log"));
  assert_null (tar_find (&l, "src/build/"));
  assert_null (tar_find (&l, "src/build/out"));
  assert_null (tar_find (&l, "src/private.key"));
  assert_null (tar_find (&l, "src/nested/"));
  assert_null (tar_find (&l, "src/nested/inner"));
  assert_int_equal (st.skipped, 1); /* the nested repository */
  for (size_t i = 0; i < l.n; i++)
    {
      assert_null (strstr (l.e[i].path, ".git/"));
      assert_int_equal (l.e[i].mtime, COMMIT_TIME);
    }
  /* src/ README .gitignore new.txt kept.log d/ d/e/ f.txt sd bin/ run.sh
   * link abs up dir/ sub/ file */
  assert_int_equal (l.n, 17);
  assert_int_equal (st.entries, 17);
  assert_int_equal (st.symlinks, 4);

  /* libgit2's status never reports a `.GIT` directory (it skips every case
   * of `.git`): it is left out, not refused */
  assert_int_equal (
      t_sh ("mkdir -p %s/sub/.GIT && echo x > %s/sub/.GIT/config && echo y > %s/sub/ok", f->src,
            f->src, f->src),
      0);
  w = tar_open (f->tar);
  assert_ok (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err);
  tar_close (w);
  tar_read (&l, f->tar);
  assert_entry (&l, "src/sub/ok", AE_IFREG, 0644, "y\n");
  for (size_t i = 0; i < l.n; i++)
    assert_null (strstr (l.e[i].path, ".GIT"));
  /* the other spellings it does report, and they are refused like in a tree */
  assert_int_equal (t_sh ("echo x > %s/sub/git~1", f->src), 0);
  w = tar_open (f->tar);
  assert_fails_with (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err,
                     "refusing `src/sub/git~1`");
  tar_close (w);
  assert_int_equal (t_sh ("rm -rf %s/sub", f->src), 0);
  assert_int_equal (t_sh ("printf x > \"%s/$(printf '.g\\342\\200\\214it')\"", f->src), 0);
  w = tar_open (f->tar);
  assert_fails_with (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err,
                     "refusing `src/.g\\xe2\\x80\\x8cit`");
  tar_close (w);
  assert_int_equal (
      t_sh ("rm \"%s/$(printf '.g\\342\\200\\214it')\" && ln -s /etc/passwd %s/.gitmodules",
            f->src, f->src),
      0);
  w = tar_open (f->tar);
  assert_fails_with (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err,
                     "symlink `.gitmodules`");
  tar_close (w);
  assert_int_equal (t_sh ("rm %s/.gitmodules", f->src), 0);

  /* caps apply as well */
  lim.max_entries = 5;
  w = tar_open (f->tar);
  assert_int_not_equal (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  bvm_error_free (&err);
  tar_close (w);
  lim = (struct gitsrc_limits) GITSRC_LIMITS_INIT;
  lim.max_file_bytes = 6;
  w = tar_open (f->tar);
  assert_fails_with (gitsrc_export_worktree (w, f->src, "src/", &lim, &st, &err), &err,
                     "bytes allowed for one file");
  tar_close (w);
  fx_free (f);
}


/* A mirror does not grow without bound: a fetch that leaves more than 8
 * packs repacks it into one of what its refs reach, and history a
 * force-push dropped goes with the old packs. */
static void
test_mirror_repack (void **state)
{
  struct fx *f = fx_new ();
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st;
  struct gitsrc_repo *repo = NULL;
  bvm_error_t err = NULL;
  char c[41], dropped[41];
  char *out;
  int repacks = 0;
  (void) state;

  assert_ok (gitsrc_fetch (&repo, f->cache, "app1", f->src, "refs/heads/main", f->c1, &lim, &st,
                           &err),
             &err);
  gitsrc_repo_free (repo);
  add_commit (f, f->src, "soon unreachable", dropped);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app1", f->src, "refs/heads/main", dropped, &lim, &st,
                           &err),
             &err);
  gitsrc_repo_free (repo);
  /* the branch is rewritten: `dropped` is on no ref any more */
  assert_int_equal (t_sh ("cd %s && git reset -q --hard %s", f->src, f->c1), 0);
  for (int i = 0; i < 9; i++)
    {
      char content[32];
      snprintf (content, sizeof content, "round %d", i);
      add_commit (f, f->src, content, c);
      assert_ok (gitsrc_fetch (&repo, f->cache, "app1", f->src, "refs/heads/main", c, &lim, &st,
                               &err),
                 &err);
      assert_true (st.fetched);
      assert_string_equal (st.repack_error, "");
      repacks += st.repacked;
      gitsrc_repo_free (repo);
    }
  assert_int_equal (repacks, 1);
  out = t_sh_out ("ls %s/app1.git/objects/pack/*.pack | wc -l", f->cache);
  assert_true (atoi (out) <= 3);
  free (out);
  /* what the ref reaches is all there, and the dropped commit is gone */
  assert_int_equal (t_sh ("git -C %s/app1.git fsck --no-dangling >/dev/null 2>&1", f->cache), 0);
  assert_int_equal (t_sh ("git -C %s/app1.git cat-file -e %s 2>/dev/null", f->cache, c), 0);
  assert_int_equal (t_sh ("git -C %s/app1.git cat-file -e %s 2>/dev/null", f->cache, f->c1), 0);
  assert_true (t_sh ("git -C %s/app1.git cat-file -e %s 2>/dev/null", f->cache, dropped) != 0);
  assert_ok (gitsrc_fetch (&repo, f->cache, "app1", f->src, "refs/heads/main", c, &lim, &st, &err),
             &err);
  assert_false (st.fetched);
  assert_ok (export_to (f->tar, repo, c, &lim, &st, &err), &err);
  gitsrc_repo_free (repo);
  fx_free (f);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_check_component),
    cmocka_unit_test (test_check_component_random),
    cmocka_unit_test (test_fetch_file_url_and_export),
    cmocka_unit_test (test_fetch_plain_path_incremental_offline),
    cmocka_unit_test (test_commit_not_on_ref),
    cmocka_unit_test (test_descends_and_ref_tip),
    cmocka_unit_test (test_bad_arguments),
    cmocka_unit_test (test_per_app_isolation),
    cmocka_unit_test (test_lock),
    cmocka_unit_test (test_fetch_silent),
    cmocka_unit_test (test_fetch_http),
    cmocka_unit_test (test_fetch_address),
    cmocka_unit_test (test_hostile_trees),
    cmocka_unit_test (test_hostile_tree_fetched),
    cmocka_unit_test (test_submodule_skipped),
    cmocka_unit_test (test_caps),
    cmocka_unit_test (test_deep_tree),
    cmocka_unit_test (test_names_round_trip),
    cmocka_unit_test (test_read_file_bomb),
    cmocka_unit_test (test_head),
    cmocka_unit_test (test_worktree_changes),
    cmocka_unit_test (test_worktree),
    cmocka_unit_test (test_mirror_repack),
  };
  bvm_error_t err = NULL;

  if (gitsrc_global_init (&err) < 0)
    {
      fprintf (stderr, "%s\n", bvm_error_msg (&err));
      return 1;
    }
  /* hostile trees are written on purpose */
  git_libgit2_opts (GIT_OPT_ENABLE_STRICT_OBJECT_CREATION, 0);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
