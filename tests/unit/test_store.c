/* test_store.c - the artifact store: transactions, index, keys, crash safety */
#include "support.h"

#include "buf.h"
#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PREFIX "apps/hello/c0ffee/"

static void
put (struct store_txn *t, const char *key, const char *content)
{
  bvm_error_t err = NULL;
  size_t n = strlen (content), half = n / 2;
  assert_ok (store_put_begin (t, key, &err), &err);
  /* in two writes: the digest covers the whole stream */
  assert_ok (store_put_write (t, content, half, &err), &err);
  assert_ok (store_put_write (t, content + half, n - half, &err), &err);
  assert_ok (store_put_end (t, &err), &err);
}

static char *
hexof (const char *s)
{
  char d[DIGEST_STR_LEN + 1];
  bvm_error_t err = NULL;
  assert_ok (digest_buffer (d, s, strlen (s), &err), &err);
  return strdup (d + 7);
}

static bool
exists (const char *dir, const char *rel)
{
  char p[PATH_MAX];
  snprintf (p, sizeof p, "%s/%s", dir, rel);
  return access (p, F_OK) == 0;
}

static char *
read_rel (const char *dir, const char *rel)
{
  char p[PATH_MAX];
  snprintf (p, sizeof p, "%s/%s", dir, rel);
  return t_read (p);
}

static bool
staging_empty (const char *dir)
{
  return t_sh ("test -z \"$(ls -A '%s/.staging')\"", dir) == 0;
}

static void
test_commit_and_index (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL;
  json_t *idx = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *ha = hexof ("alpha\n"), *hb = hexof ("bravo bravo\n"), *expect = NULL;
  cleanup_free char *text = NULL;
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  put (t, PREFIX "z/b.txt", "bravo bravo\n");
  put (t, PREFIX "a.txt", "alpha\n");
  assert_ok (store_put_link (t, PREFIX "copy/of/a", PREFIX "a.txt", &err), &err);
  /* nothing is visible before commit */
  assert_false (exists (d, "apps"));
  assert_ok (store_txn_commit (steal_pointer (&t), NULL, &idx, &err), &err);

  text = read_rel (d, PREFIX "a.txt");
  assert_string_equal (text, "alpha\n");
  free (text);
  text = read_rel (d, PREFIX "copy/of/a");
  assert_string_equal (text, "alpha\n");
  free (text);
  text = read_rel (d, PREFIX "z/b.txt");
  assert_string_equal (text, "bravo bravo\n");
  free (text);

  /* the index: sorted, sizes and sha256s, byte-exact */
  text = read_rel (d, PREFIX "index.json");
  if (asprintf (&expect,
                "{\"objects\":[{\"key\":\"" PREFIX "a.txt\",\"sha256\":\"%s\",\"size\":6},"
                "{\"key\":\"" PREFIX "copy/of/a\",\"sha256\":\"%s\",\"size\":6},"
                "{\"key\":\"" PREFIX "z/b.txt\",\"sha256\":\"%s\",\"size\":12}],"
                "\"prefix\":\"" PREFIX "\"}",
                ha, ha, hb)
      < 0)
    abort ();
  assert_string_equal (text, expect);
  free (text);
  text = json_dumps (idx, JSON_SORT_KEYS | JSON_COMPACT);
  assert_string_equal (text, expect);
  json_decref (idx);
  {
    struct stat st;
    char p[PATH_MAX];
    snprintf (p, sizeof p, "%s/" PREFIX "a.txt", d);
    assert_int_equal (stat (p, &st), 0);
    assert_int_equal (st.st_mode & 0777, 0644);
  }
  assert_true (staging_empty (d));
  t_tmpdir_free (d);
}

/* The record holds this summary, not the index (issue 11, item 5): with
 * thousands of objects it stays a few hundred bytes and names the index by
 * its key and digest, which match the bytes the store wrote. */
static void
test_commit_summary (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL;
  struct store_summary sum;
  bvm_error_t err = NULL;
  cleanup_free char *text = NULL, *dumped = NULL;
  char want[DIGEST_STR_LEN + 1], key[128];
  json_t *j;
  uint64_t bytes = 0;
  const unsigned n = 3000;
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  for (unsigned i = 0; i < n; i++)
    {
      char body[32];
      snprintf (key, sizeof key, PREFIX "out/report-part-%u.txt", i);
      snprintf (body, sizeof body, "%u\n", i);
      put (t, key, body);
      bytes += strlen (body);
    }
  /* a link counts as an object of its own, with the size of its target */
  assert_ok (store_put_link (t, PREFIX "copy", PREFIX "out/report-part-10.txt", &err), &err);
  bytes += 3;
  memset (&sum, 0x55, sizeof sum);
  assert_ok (store_txn_commit (steal_pointer (&t), &sum, NULL, &err), &err);

  assert_string_equal (sum.prefix, PREFIX);
  assert_string_equal (sum.index_key, PREFIX "index.json");
  assert_int_equal (sum.count, n + 1);
  assert_int_equal (sum.bytes, bytes);
  text = read_rel (d, PREFIX "index.json");
  assert_int_equal (sum.index_bytes, strlen (text));
  assert_ok (digest_buffer (want, text, strlen (text), &err), &err);
  assert_string_equal (sum.index_digest, want);

  j = store_summary_to_json (&sum);
  assert_non_null (j);
  dumped = json_dumps (j, JSON_SORT_KEYS | JSON_COMPACT);
  json_decref (j);
  assert_true (strlen (dumped) < 512);
  {
    char *expect = NULL;
    if (asprintf (&expect,
                  "{\"bytes\":%llu,\"count\":%u,\"index\":{\"digest\":\"%s\",\"path\":\"" PREFIX
                  "index.json\",\"size\":%zu},\"prefix\":\"" PREFIX "\"}",
                  (unsigned long long) bytes, n + 1, want, strlen (text))
        < 0)
      abort ();
    assert_string_equal (dumped, expect);
    free (expect);
  }
  t_tmpdir_free (d);
}

static void
test_abort_leaves_nothing (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  put (t, PREFIX "a", "x");
  assert_ok (store_put_begin (t, PREFIX "half", &err), &err);
  assert_ok (store_put_write (t, "par", 3, &err), &err);
  store_txn_abort (t); /* mid-object */
  assert_false (exists (d, "apps"));
  assert_true (staging_empty (d));

  /* cleanup attribute */
  {
    cleanup_store_txn struct store_txn *t2 = NULL;
    assert_ok (store_txn_begin (&t2, s, PREFIX, &err), &err);
    put (t2, PREFIX "b", "y");
  }
  assert_false (exists (d, "apps"));
  assert_true (staging_empty (d));
  t_tmpdir_free (d);
}

/* A process that dies mid-transaction leaves nothing visible; its staging
 * area is swept by a later transaction once its lock is free and it is old. */
static void
test_crash_leaves_nothing_visible (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *live = NULL, *t = NULL;
  bvm_error_t err = NULL;
  pid_t pid;
  int st;
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      struct store_txn *ct = NULL;
      bvm_error_t cerr = NULL;
      if (store_txn_begin (&ct, s, PREFIX, &cerr) < 0
          || store_put_begin (ct, PREFIX "a", &cerr) < 0
          || store_put_write (ct, "partial", 7, &cerr) < 0)
        _exit (1);
      _exit (0); /* "crash": no abort, no commit */
    }
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_int_equal (WEXITSTATUS (st), 0);
  assert_false (exists (d, "apps"));
  assert_false (staging_empty (d));

  /* a live transaction, also made to look old: its lock keeps it */
  assert_ok (store_txn_begin (&live, s, "apps/other/1/", &err), &err);
  assert_int_equal (t_sh ("touch -d '2 hours ago' '%s'/.staging/txn.*", d), 0);
  /* a recent dead one would be kept too; this one is old: swept */
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  {
    cleanup_free char *n = t_sh_out ("ls '%s/.staging' | wc -l", d);
    assert_string_equal (n, "2"); /* live + t */
  }
  put (live, "apps/other/1/x", "x");
  assert_ok (store_txn_commit (steal_pointer (&live), NULL, NULL, &err), &err);
  store_txn_abort (t);
  assert_true (exists (d, "apps/other/1/x"));
  assert_false (exists (d, PREFIX));
  assert_true (staging_empty (d));
  t_tmpdir_free (d);
}

static void
commit_set (struct store *s, const char *const *kv, char **index_text)
{
  struct store_txn *t = NULL;
  json_t *idx = NULL;
  bvm_error_t err = NULL;
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  for (size_t i = 0; kv[i]; i += 2)
    put (t, kv[i], kv[i + 1]);
  assert_ok (store_txn_commit (steal_pointer (&t), NULL, &idx, &err), &err);
  *index_text = json_dumps (idx, JSON_SORT_KEYS | JSON_COMPACT);
  json_decref (idx);
}

static void
test_rerun_idempotent_and_replacing (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  static const char *const run1[] = { PREFIX "bin/app", "v1", PREFIX "old.txt", "gone soon",
                                      NULL };
  static const char *const run3[] = { PREFIX "bin/app", "v2", NULL };
  cleanup_free char *i1 = NULL, *i2 = NULL, *i3 = NULL, *f1 = NULL, *f2 = NULL;
  struct store_txn *t = NULL;
  bvm_error_t err = NULL;
  (void) state;

  {
    char spec[PATH_MAX];
    snprintf (spec, sizeof spec, "dir:%s", d);
    assert_ok (store_open (&s, spec, &err), &err);
  }
  commit_set (s, run1, &i1);
  f1 = read_rel (d, PREFIX "index.json");
  commit_set (s, run1, &i2);
  f2 = read_rel (d, PREFIX "index.json");
  assert_string_equal (i1, i2);
  assert_string_equal (f1, f2);
  assert_true (exists (d, PREFIX "old.txt"));

  /* while a new run is staged, readers still see the previous one whole */
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  put (t, PREFIX "bin/app", "v2");
  {
    cleanup_free char *v = read_rel (d, PREFIX "bin/app");
    assert_string_equal (v, "v1");
  }
  store_txn_abort (t);

  /* a different run replaces the prefix: no stale objects outlive the index */
  commit_set (s, run3, &i3);
  assert_string_not_equal (i1, i3);
  assert_false (exists (d, PREFIX "old.txt"));
  {
    cleanup_free char *v = read_rel (d, PREFIX "bin/app");
    assert_string_equal (v, "v2");
  }
  assert_true (staging_empty (d));
  t_tmpdir_free (d);
}

static void
test_keys_refused (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL, *t2 = NULL;
  bvm_error_t err = NULL;
  char longkey[STORE_KEY_MAX + 20];
  static const struct
  {
    const char *key, *needle;
  } bad[] = {
    { "apps/other/x", "outside the prefix" },
    { "apps/hello/c0ffee", "outside the prefix" },
    { PREFIX, "must not end with `/`" },
    { "apps/hello/c0ffeeX/a", "outside the prefix" },
    { PREFIX "../../../etc/passwd", "`..` component" },
    { PREFIX "./a", "`.` or `..` component" },
    { PREFIX "a//b", "empty, `.` or `..`" },
    { "/" PREFIX "a", "is absolute" },
    { PREFIX "a\nb", "control characters" },
    { PREFIX "a\x1b[2J", "control characters" },
    { PREFIX "\xff", "invalid UTF-8" },
    { PREFIX "index.json", "reserved for the index" },
    { PREFIX "dir/", "must not end with `/`" },
    { "", "empty key" },
  };
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      if (store_put_begin (t, bad[i].key, &err) == 0)
        fail_msg ("key `%s` was accepted", bad[i].key);
      if (strstr (bvm_error_msg (&err), bad[i].needle) == NULL)
        fail_msg ("key #%zu: \"%s\" does not contain \"%s\"", i, bvm_error_msg (&err),
                  bad[i].needle);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      bvm_error_free (&err);
    }
  memset (longkey, 'k', sizeof longkey - 1);
  memcpy (longkey, PREFIX, strlen (PREFIX));
  longkey[sizeof longkey - 1] = '\0';
  assert_fails_with (store_put_begin (t, longkey, &err), &err, "longer than 1024 bytes");
  /* refused keys do not poison the transaction */
  put (t, PREFIX "ok", "fine");
  assert_fails_with (store_put_begin (t, PREFIX "ok", &err), &err, "duplicate key");
  assert_fails_with (store_put_link (t, PREFIX "l", PREFIX "missing", &err), &err,
                     "was not stored before");
  assert_fails_with (store_put_write (t, "x", 1, &err), &err, "put not begun");
  assert_ok (store_txn_commit (steal_pointer (&t), NULL, NULL, &err), &err);
  assert_true (exists (d, PREFIX "ok"));

  /* prefixes */
  assert_fails_with (store_txn_begin (&t2, s, "apps/hello", &err), &err, "must end with `/`");
  assert_fails_with (store_txn_begin (&t2, s, ".staging/", &err), &err, "may not start with `.`");
  assert_fails_with (store_txn_begin (&t2, s, "/apps/", &err), &err, "is absolute");
  assert_fails_with (store_txn_begin (&t2, s, "apps/../../", &err), &err, "`..` component");
  assert_null (t2);
  t_tmpdir_free (d);
}

/* A key that needs a file to be a directory fails the transaction; nothing
 * becomes visible. */
static void
test_conflicting_keys_fail_txn (void **state)
{
  char *d = t_tmpdir ();
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (store_open (&s, d, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  put (t, PREFIX "a", "file");
  assert_fails_with (store_put_begin (t, PREFIX "a/b", &err), &err, "conflicts with another key");
  assert_fails_with (store_put_begin (t, PREFIX "c", &err), &err, "already failed");
  assert_fails_with (store_txn_commit (steal_pointer (&t), NULL, NULL, &err), &err,
                     "already failed");
  assert_false (exists (d, "apps"));
  assert_true (staging_empty (d));
  t_tmpdir_free (d);
}

static void
test_open_specs (void **state)
{
  char *d = t_tmpdir ();
  struct store *s = NULL;
  bvm_error_t err = NULL;
  char p[PATH_MAX];
  (void) state;

  assert_fails_with (store_open (&s, "gcs:bucket/x", &err), &err,
                     "unknown artifact store backend `gcs`");
  /* s3: is the s3 backend's (test_store_s3.c) */
  assert_fails_with (store_open (&s, "s3:bucket/x", &err), &err, "want s3://BUCKET");
  assert_fails_with (store_open (&s, "", &err), &err, "empty artifact store spec");
  /* a colon after a non-scheme character is part of a plain path */
  snprintf (p, sizeof p, "%s/with:colon", d);
  assert_ok (store_open (&s, p, &err), &err);
  store_free (s);
  snprintf (p, sizeof p, "%s/with:colon/.staging", d);
  assert_int_equal (access (p, F_OK), 0);
  store_free (NULL);
  store_txn_abort (NULL);
  t_tmpdir_free (d);
}

/* --- encryption at rest -------------------------------------------------------------- */

static const unsigned char key_a[SEAL_KEY_BYTES] = { 7 };
static const unsigned char key_b[SEAL_KEY_BYTES] = { 8 };

static int
get_sink (void *opaque, const void *p, size_t len, bvm_error_t *err)
{
  (void) err;
  return buf_add (opaque, p, len) < 0 ? -1 : 0;
}

/* 0 and the bytes in *out (caller frees), or -1 with the error */
static int
get_one (char **out, struct store *s, const char *key, const unsigned char *k, bvm_error_t *err)
{
  struct buf b = BUF_INIT (1 << 20);
  int ret = store_get (s, PREFIX, key, k, get_sink, &b, err);
  *out = buf_steal (&b);
  return ret;
}

static void
expect_get_fails (struct store *s, const char *key, const unsigned char *k, const char *what)
{
  bvm_error_t err = NULL;
  cleanup_free char *got = NULL;
  assert_int_equal (get_one (&got, s, key, k, &err), -1);
  if (strstr (bvm_error_msg (&err), what) == NULL)
    fail_msg ("expected `%s` in: %s", what, bvm_error_msg (&err));
  bvm_error_free (&err);
}

static void
test_sealed (void **state)
{
  char *d = t_tmpdir ();
  cleanup_free char *spec = NULL, *raw = NULL, *got = NULL, *idx = NULL, *p1 = NULL, *p2 = NULL,
                    *tmp = NULL;
  struct store *s = NULL;
  struct store_txn *t = NULL;
  struct store_summary sum;
  bvm_error_t err = NULL;
  size_t n;
  (void) state;

  assert_true (asprintf (&spec, "dir:%s", d) > 0);
  assert_ok (store_open (&s, spec, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  assert_ok (store_txn_seal (t, key_a, &err), &err);
  put (t, PREFIX "bin/app", "the secret binary of hello");
  put (t, PREFIX "bin/other", "another object, same size!");
  assert_ok (store_put_link (t, PREFIX "bin/link", PREFIX "bin/app", &err), &err);
  assert_ok (store_txn_commit (t, &sum, NULL, &err), &err);
  assert_true (sum.sealed);

  /* on disk: sealed, no plaintext; the index says so */
  assert_true (asprintf (&p1, "%s/" PREFIX "bin/app", d) > 0);
  assert_true (asprintf (&p2, "%s/" PREFIX "bin/other", d) > 0);
  assert_ok (fs_read_file (&raw, &n, p1, 1 << 20, &err), &err);
  assert_true (seal_is_sealed (raw, n));
  assert_null (memmem (raw, n, "secret binary", 13));
  assert_true (asprintf (&tmp, "%s/" PREFIX "index.json", d) > 0);
  assert_ok (fs_read_file (&idx, &n, tmp, 1 << 20, &err), &err);
  assert_non_null (strstr (idx, "\"sealed\":\"buildvm-seal-v1\""));

  /* read back: the key opens it, links too */
  assert_ok (get_one (&got, s, PREFIX "bin/app", key_a, &err), &err);
  assert_string_equal (got, "the secret binary of hello");
  free (got);
  assert_ok (get_one (&got, s, PREFIX "bin/link", key_a, &err), &err);
  assert_string_equal (got, "the secret binary of hello");

  /* another app's key, no key, a missing name */
  expect_get_fails (s, PREFIX "bin/app", key_b, "wrong app or key");
  expect_get_fails (s, PREFIX "bin/app", NULL, "no key was given");
  expect_get_fails (s, PREFIX "bin/nope", key_a, "not in the index");

  /* two objects of the same commit swapped: each opens, the index catches it */
  free (tmp);
  assert_true (asprintf (&tmp, "%s/swap", d) > 0);
  assert_int_equal (rename (p1, tmp), 0);
  assert_int_equal (rename (p2, p1), 0);
  assert_int_equal (rename (tmp, p2), 0);
  expect_get_fails (s, PREFIX "bin/app", key_a, "does not match the index");

  /* a bit flipped on disk */
  {
    int fd = open (p2, O_RDWR);
    unsigned char c;
    assert_true (fd >= 0);
    assert_int_equal (pread (fd, &c, 1, 100), 1);
    c ^= 1;
    assert_int_equal (pwrite (fd, &c, 1, 100), 1);
    close (fd);
    expect_get_fails (s, PREFIX "bin/other", key_a, "tampered");
  }
  store_free (s);
  t_tmpdir_free (d);
}

static void
test_plain_refused_when_sealing (void **state)
{
  char *d = t_tmpdir ();
  cleanup_free char *spec = NULL, *got = NULL;
  struct store *s = NULL;
  struct store_txn *t = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_true (asprintf (&spec, "dir:%s", d) > 0);
  assert_ok (store_open (&s, spec, &err), &err);
  assert_ok (store_txn_begin (&t, s, PREFIX, &err), &err);
  put (t, PREFIX "a", "plain");
  assert_ok (store_txn_commit (t, NULL, NULL, &err), &err);
  assert_ok (get_one (&got, s, PREFIX "a", NULL, &err), &err);
  assert_string_equal (got, "plain");
  /* a reader that expects encryption refuses a plain prefix */
  expect_get_fails (s, PREFIX "a", key_a, "not encrypted");
  store_free (s);
  t_tmpdir_free (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_sealed),
    cmocka_unit_test (test_plain_refused_when_sealing),
    cmocka_unit_test (test_commit_and_index),
    cmocka_unit_test (test_commit_summary),
    cmocka_unit_test (test_abort_leaves_nothing),
    cmocka_unit_test (test_crash_leaves_nothing_visible),
    cmocka_unit_test (test_rerun_idempotent_and_replacing),
    cmocka_unit_test (test_keys_refused),
    cmocka_unit_test (test_conflicting_keys_fail_txn),
    cmocka_unit_test (test_open_specs),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
