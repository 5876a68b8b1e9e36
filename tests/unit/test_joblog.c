/* test_joblog.c - per-job console logs: cap, escaping, lz4, cat, follow, ids */
#include "support.h"

#include "buf.h"
#include "fs.h"
#include "job.h"
#include "joblog.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_buildvm[PATH_MAX]; /* the CLI binary, for `buildvm logs -f` */

static void
wline (struct joblog *l, const char *s)
{
  bvm_error_t err = NULL;
  assert_ok (joblog_write (l, s, strlen (s), &err), &err);
}

/* joblog_cat into a string */
static char *
cat (const char *dir, const char *job)
{
  char *out = NULL;
  size_t n = 0;
  FILE *f = open_memstream (&out, &n);
  bvm_error_t err = NULL;
  assert_non_null (f);
  assert_ok (joblog_cat (dir, job, f, false, NULL, NULL, &err), &err);
  fclose (f);
  return out;
}

static char *
path_of (const char *dir, const char *app, const char *job, const char *ext)
{
  char *p = NULL;
  if (asprintf (&p, "%s/apps/%s/%s%s", dir, app, job, ext) < 0)
    abort ();
  return p;
}

static void
test_write_and_escape (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *out = NULL, *p = path_of (d, "hello", "j-1", ".log");
  struct stat st;
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "j-1", 1 << 20, &err), &err);
  wline (l, "plain line");
  wline (l, "\x1b[31mred\x1b[0m and a bell\a");
  wline (l, "tab\there, cr\rback");
  wline (l, "utf-8 caf\xc3\xa9 ok, bad \xff\xfe, c1 \xc2\x9b, overlong \xc0\xaf");
  wline (l, "");
  assert_ok (joblog_write (l, "nul\0inside", 10, &err), &err);
  assert_ok (joblog_close (l, false, &err), &err);

  out = cat (d, "j-1");
  assert_string_equal (out,
                       "plain line\n"
                       "\\x1b[31mred\\x1b[0m and a bell\\x07\n"
                       "tab\there, cr\\x0dback\n"
                       "utf-8 caf\xc3\xa9 ok, bad \\xff\\xfe, c1 \\xc2\\x9b, overlong \\xc0\\xaf\n"
                       "\n"
                       "nul\\x00inside\n");
  assert_int_equal (stat (p, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0640);
  t_tmpdir_free (d);
}

static void
test_cap_and_marker (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *out = NULL, *p = path_of (d, "hello", "capped", ".log");
  char expect[512];
  struct stat st;
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "capped", 30, &err), &err);
  wline (l, "0123456789");            /* 11 bytes */
  wline (l, "abcdefghij");            /* 22 */
  wline (l, "this one does not fit"); /* 22 bytes dropped */
  wline (l, "x");                     /* would fit, but the log is cut: 2 dropped */
  wline (l, "\x1b");                  /* escaped length counts: 5 dropped */
  assert_ok (joblog_close (l, false, &err), &err);

  out = cat (d, "capped");
  snprintf (expect, sizeof expect,
            "0123456789\nabcdefghij\n"
            "[buildvm: log truncated at 22 bytes; 29 more bytes (3 lines) dropped]%*s\n"
            "[buildvm: the last 29 bytes of what was dropped follow]\n"
            "this one does not fit\nx\n\\x1b\n",
            112 - 69, "");
  assert_string_equal (out, expect);
  assert_int_equal (stat (p, &st), 0);
  assert_int_equal (st.st_size, 22 + 113 + 56 + 29);
  t_tmpdir_free (d);
}

/* Far past the cap: the head, the marker, and the last lines whole (the
 * error of a late step), not the middle. */
static void
test_cap_keeps_the_tail (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *out = NULL;
  char line[64];
  const char *tail;
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "long-run", 1000, &err), &err);
  for (int i = 0; i < 100000; i++)
    {
      snprintf (line, sizeof line, "line %06d of the build", i);
      wline (l, line);
    }
  wline (l, "error: the last step failed");
  assert_ok (joblog_close (l, false, &err), &err);

  out = cat (d, "long-run");
  assert_non_null (strstr (out, "line 000000 of the build\n"));
  assert_non_null (strstr (out, "[buildvm: log truncated at "));
  tail = strstr (out, "[buildvm: the last ");
  assert_non_null (tail);
  /* 4 KiB of tail (the floor): whole lines only, the end exactly */
  tail = strchr (tail, '\n') + 1;
  assert_memory_equal (tail, "line ", 5);
  assert_true (strlen (tail) <= 4096);
  assert_true (strlen (tail) > 4096 - 64);
  assert_non_null (strstr (tail, "line 099999 of the build\nerror: the last step failed\n"));
  assert_string_equal (tail + strlen (tail) - 28, "error: the last step failed\n");
  assert_null (strstr (out, "line 050000 "));
  t_tmpdir_free (d);
}

static void
test_long_line_cut (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  char *big = malloc (JOBLOG_LINE_MAX + 100);
  cleanup_free char *out = NULL;
  (void) state;

  memset (big, 'y', JOBLOG_LINE_MAX + 100);
  assert_ok (joblog_open (&l, d, "hello", "long", 1 << 20, &err), &err);
  assert_ok (joblog_write (l, big, JOBLOG_LINE_MAX + 100, &err), &err);
  assert_ok (joblog_close (l, false, &err), &err);
  out = cat (d, "long");
  assert_int_equal (strlen (out), JOBLOG_LINE_MAX + strlen (" [buildvm: line cut]") + 1);
  assert_string_equal (out + JOBLOG_LINE_MAX, " [buildvm: line cut]\n");
  free (big);
  t_tmpdir_free (d);
}

static int
redact (void *opaque, const char *line, size_t len, struct buf *out, bvm_error_t *err)
{
  const char *secret = opaque;
  size_t sl = strlen (secret);
  for (size_t i = 0; i < len;)
    {
      if (len - i >= sl && memcmp (line + i, secret, sl) == 0)
        {
          if (buf_adds (out, "***") < 0)
            return bvm_error (err, errno, "redact");
          i += sl;
        }
      else if (buf_add (out, line + i++, 1) < 0)
        return bvm_error (err, errno, "redact");
    }
  return 0;
}

static void
test_filter_hook (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *out = NULL;
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "f1", 1 << 20, &err), &err);
  /* the filter sees the raw line, before escaping */
  joblog_set_filter (l, redact, (void *) "s3cr\x1bt");
  wline (l, "token=s3cr\x1bt; again s3cr\x1bt");
  wline (l, "s3cr");
  assert_ok (joblog_close (l, false, &err), &err);
  out = cat (d, "f1");
  assert_string_equal (out, "token=***; again ***\ns3cr\n");
  t_tmpdir_free (d);
}

static void
test_lz4_round_trip (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  cleanup_free char *out = NULL, *plain = NULL, *lz = NULL, *viacli = NULL;
  struct buf expect = BUF_INIT (1 << 24);
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "z1", 1 << 24, &err), &err);
  for (int i = 0; i < 50000; i++)
    {
      char line[80];
      snprintf (line, sizeof line, "line %d of a long build log, with some repetition", i);
      wline (l, line);
      assert_int_equal (buf_addf (&expect, "%s\n", line), 0);
    }
  assert_ok (joblog_close (l, true, &err), &err);

  plain = path_of (d, "hello", "z1", ".log");
  lz = path_of (d, "hello", "z1", ".log.lz4");
  assert_int_equal (access (plain, F_OK), -1);
  assert_int_equal (access (lz, F_OK), 0);
  out = cat (d, "z1");
  assert_int_equal (strlen (out), expect.len);
  assert_string_equal (out, buf_cstr (&expect));
  /* a standard LZ4 frame: the lz4 CLI reads it too */
  viacli = t_sh_out ("lz4 -d -c '%s' | sha256sum | cut -c1-64", lz);
  {
    cleanup_free char *want = NULL;
    char tmp[PATH_MAX];
    snprintf (tmp, sizeof tmp, "%s/expect", d);
    t_write (tmp, buf_cstr (&expect));
    want = t_sh_out ("sha256sum '%s' | cut -c1-64", tmp);
    assert_string_equal (viacli, want);
  }
  /* a corrupt frame is an error, not garbage output */
  assert_int_equal (t_sh ("printf 'xxxx' | dd of='%s' bs=1 seek=100 conv=notrunc 2>/dev/null", lz),
                    0);
  {
    FILE *f = fopen ("/dev/null", "w");
    assert_fails_with (joblog_cat (d, "z1", f, false, NULL, NULL, &err), &err, "lz4");
    fclose (f);
  }

  /* a later run of the same job starts afresh and drops the old .lz4 */
  assert_ok (joblog_open (&l, d, "hello", "z1", 1 << 20, &err), &err);
  assert_int_equal (access (lz, F_OK), -1);
  wline (l, "second run");
  assert_ok (joblog_close (l, false, &err), &err);
  free (out);
  out = cat (d, "z1");
  assert_string_equal (out, "second run\n");
  buf_dispose (&expect);
  t_tmpdir_free (d);
}

static void
test_bad_ids (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL;
  bvm_error_t err = NULL;
  char long_id[160];
  static const char *const bad_jobs[] = { "",    "../x", "a/b",   "-x", ".x",
                                          "a b", "a\nb", "j\x1b", "x*", NULL };
  static const char *const bad_apps[] = { "", "Hello", "-a", "a_b", "a/b", "..", NULL };
  (void) state;

  /* a job id of 128 plus ".attempt<N>" fits; longer does not */
  memset (long_id, 'a', 149);
  long_id[149] = '\0';
  for (size_t i = 0; bad_jobs[i]; i++)
    {
      assert_non_null (joblog_job_id_problem (bad_jobs[i]));
      assert_fails_with (joblog_open (&l, d, "hello", bad_jobs[i], 100, &err), &err,
                         "invalid job id");
      assert_fails_with (joblog_cat (d, bad_jobs[i], stdout, false, NULL, NULL, &err), &err,
                         "invalid job id");
    }
  assert_fails_with (joblog_open (&l, d, "hello", long_id, 100, &err), &err, "invalid job id");
  long_id[148] = '\0';
  assert_null (joblog_job_id_problem (long_id));
  assert_null (joblog_job_id_problem ("J.1_x-2"));
  for (size_t i = 0; bad_apps[i]; i++)
    {
      assert_non_null (job_app_id_problem (bad_apps[i]));
      assert_fails_with (joblog_open (&l, d, bad_apps[i], "j1", 100, &err), &err,
                         "invalid app id");
    }
  assert_null (job_app_id_problem ("hello-2"));
  /* nothing was created */
  assert_int_equal (t_sh ("test -z \"$(ls -A '%s')\"", d), 0);
  /* the CLI refuses them as usage errors */
  assert_int_equal (t_sh ("'%s' logs --log-dir '%s' '../x' 2>/dev/null", g_buildvm, d), 2);
  assert_int_equal (t_sh ("'%s' logs --log-dir '%s' nosuchjob 2>/dev/null", g_buildvm, d), 1);
  assert_int_equal (t_sh ("'%s' logs --help >/dev/null", g_buildvm), 0);
  assert_int_equal (t_sh ("'%s' logs 2>/dev/null", g_buildvm), 2);
  t_tmpdir_free (d);
}

static void
test_writer_exclusive_and_ambiguous (void **state)
{
  char *d = t_tmpdir ();
  struct joblog *l = NULL, *l2 = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (joblog_open (&l, d, "hello", "one", 100, &err), &err);
  assert_fails_with (joblog_open (&l2, d, "hello", "one", 100, &err), &err,
                     "held by another writer");
  wline (l, "still mine");
  assert_ok (joblog_close (l, false, &err), &err);

  assert_ok (joblog_open (&l, d, "other", "one", 100, &err), &err);
  assert_ok (joblog_close (l, false, &err), &err);
  assert_fails_with (joblog_cat (d, "one", stdout, false, NULL, NULL, &err), &err,
                     "logs under several apps");
  t_tmpdir_free (d);
}

/* A writer process appends while `buildvm logs -f` reads; the reader gets
 * every line and exits once the log is closed, or once the writer dies. */
static void
follow_case (bool crash, bool compress)
{
  char *d = t_tmpdir ();
  int ready[2];
  pid_t pid;
  char c;
  int st;
  cleanup_free char *out = NULL;
  int64_t t0;

  assert_int_equal (pipe (ready), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      struct joblog *l = NULL;
      bvm_error_t err = NULL;
      close (ready[0]);
      if (joblog_open (&l, d, "hello", "follow-1", 1 << 20, &err) < 0)
        _exit (1);
      joblog_write (l, "first", 5, &err);
      if (write (ready[1], "r", 1) != 1)
        _exit (1);
      for (int i = 0; i < 5; i++)
        {
          char line[32];
          usleep (150 * 1000);
          snprintf (line, sizeof line, "line %d", i);
          if (joblog_write (l, line, strlen (line), &err) < 0)
            _exit (1);
        }
      if (crash)
        _exit (0); /* dies holding the log: the kernel drops the lock */
      _exit (joblog_close (l, compress, &err) < 0 ? 1 : 0);
    }
  close (ready[1]);
  assert_int_equal (read (ready[0], &c, 1), 1);
  close (ready[0]);
  t0 = now_ms ();
  out = t_sh_out ("timeout 20 '%s' logs -f --log-dir '%s' follow-1; echo \"rc=$?\"", g_buildvm, d);
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_int_equal (WEXITSTATUS (st), 0);
  assert_string_equal (out, "first\nline 0\nline 1\nline 2\nline 3\nline 4\nrc=0");
  /* it followed the writer: the lines took ~750 ms to come */
  assert_true (now_ms () - t0 >= 600);
  t_tmpdir_free (d);
}

static void
test_follow_until_closed (void **state)
{
  (void) state;
  follow_case (false, false);
}

static void
test_follow_until_compressed (void **state)
{
  (void) state;
  follow_case (false, true);
}

static void
test_follow_until_writer_dies (void **state)
{
  (void) state;
  follow_case (true, false);
}

static int
setup (void **state)
{
  cleanup_free char *exe = NULL;
  bvm_error_t err = NULL;
  (void) state;
  if (fs_exe_dir (&exe, &err) < 0)
    return -1;
  /* build/tests/test_joblog -> build/buildvm (and build/asan-tests -> build) */
  snprintf (g_buildvm, sizeof g_buildvm, "%s/../buildvm", exe);
  if (access (g_buildvm, X_OK) != 0)
    {
      print_error ("%s is missing: make build/buildvm first\n", g_buildvm);
      return -1;
    }
  return 0;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_write_and_escape),
    cmocka_unit_test (test_cap_and_marker),
    cmocka_unit_test (test_cap_keeps_the_tail),
    cmocka_unit_test (test_long_line_cut),
    cmocka_unit_test (test_filter_hook),
    cmocka_unit_test (test_lz4_round_trip),
    cmocka_unit_test (test_bad_ids),
    cmocka_unit_test (test_writer_exclusive_and_ambiguous),
    cmocka_unit_test (test_follow_until_closed),
    cmocka_unit_test (test_follow_until_compressed),
    cmocka_unit_test (test_follow_until_writer_dies),
  };
  return cmocka_run_group_tests (tests, setup, NULL);
}
