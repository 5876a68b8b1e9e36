/* test_guest.c - the host side of the host/guest contract
 *
 * The control file encoder is checked against the agent's own decoder
 * (compiled in from buildvm-image/agent/control.c), so the two sides cannot
 * drift apart unnoticed.
 */
#include "support.h"

#include "buf.h"
#include "guest.h"
#include "util.h"

#include "../../buildvm-image/agent/agent.h"
#include "../../buildvm-image/agent/control.c"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
test_control_roundtrip (void **state)
{
  struct guest_step steps[] = { { "build", "make -j2 && echo 'done'\nsecond line", 300 },
                                { "test", "make check", 0 } };
  const char *env[] = { "CC=gcc", "EMPTY=", "WITH_EQ=a=b" };
  const char *arts[] = { "dist/*.tar.gz", "report.txt" };
  struct guest_secret_env se[] = { { "NPM_TOKEN", "npm-token" } };
  struct guest_job job = { 0 };
  struct buf b = BUF_INIT (1 << 20);
  static struct agent_job aj;
  bvm_error_t err = NULL;
  char msg[256];
  (void) state;

  job.timeout_s = 900;
  job.log_max = 12345;
  job.output_max = 1 << 20;
  job.steps = steps;
  job.n_steps = 2;
  job.env = env;
  job.n_env = 3;
  job.image_from = "dist";
  job.artifacts = arts;
  job.n_artifacts = 2;
  job.secret_env = se;
  job.n_secret_env = 1;
  assert_ok (guest_control_encode (&b, &job, &err), &err);
  assert_int_equal (agent_control_parse (&aj, b.ptr, b.len, msg, sizeof msg), 0);
  assert_int_equal (aj.timeout_s, 900);
  assert_int_equal (aj.log_max, 12345);
  assert_int_equal (aj.output_max, 1 << 20);
  assert_int_equal (aj.n_steps, 2);
  assert_string_equal (aj.steps[0].name, "build");
  assert_string_equal (aj.steps[0].cmd, "make -j2 && echo 'done'\nsecond line");
  assert_int_equal (aj.steps[0].timeout_s, 300);
  assert_string_equal (aj.steps[1].cmd, "make check");
  assert_int_equal (aj.n_env, 3);
  assert_string_equal (aj.env[2], "WITH_EQ=a=b");
  assert_string_equal (aj.image_from, "dist");
  assert_int_equal (aj.n_artifacts, 2);
  assert_string_equal (aj.artifacts[1], "report.txt");
  assert_int_equal (aj.n_secret_env, 1);
  assert_string_equal (aj.secret_env[0].var, "NPM_TOKEN");

  /* the agent refuses a truncated file and unknown records */
  assert_int_equal (agent_control_parse (&aj, b.ptr, b.len - 3, msg, sizeof msg), -1);
  assert_int_equal (agent_control_parse (&aj,
                                         "version\0"
                                         "1\0bogus\0x\0",
                                         19, msg, sizeof msg),
                    -1);
  assert_non_null (strstr (msg, "unknown record"));
  assert_int_equal (agent_control_parse (&aj,
                                         "timeout\0"
                                         "5\0",
                                         10, msg, sizeof msg),
                    -1);
  assert_non_null (strstr (msg, "no version"));
  buf_dispose (&b);
}

static void
test_control_limits (void **state)
{
  struct guest_step step = { "s", "x", 0 };
  const char *bad_env[] = { "NOEQUALS" };
  struct guest_job job = { 0 };
  struct buf b = BUF_INIT (64);
  bvm_error_t err = NULL;
  char big[200];
  (void) state;

  assert_fails_with (guest_control_encode (&b, &job, &err), &err, "1 to 64 steps");
  job.steps = &step;
  job.n_steps = 1;
  job.env = bad_env;
  job.n_env = 1;
  buf_reset (&b);
  assert_fails_with (guest_control_encode (&b, &job, &err), &err, "not NAME=value");
  job.n_env = 0;
  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  step.cmd = big;
  buf_reset (&b);
  assert_fails_with (guest_control_encode (&b, &job, &err), &err, "exceeds");
  buf_dispose (&b);
}

static const char good_header[] = "buildvm-output 1\n"
                                  "status step-failed\n"
                                  "step 2\n"
                                  "exit 42\n"
                                  "signal 0\n"
                                  "steps 2\n"
                                  "entries 0\n"
                                  "tar_bytes 1024\n"
                                  "duration_ms 150\n"
                                  "step_ms 1 77\n"
                                  "step_ms 2 20\n"
                                  "message step 2 (test) exited with status 42\n"
                                  "end\n";

static void
test_header_parse (void **state)
{
  struct guest_result r;
  bvm_error_t err = NULL;
  char block[GUEST_HEADER_SIZE];
  (void) state;

  memset (block, 0, sizeof block);
  memcpy (block, good_header, sizeof good_header - 1);
  assert_ok (guest_result_parse (&r, block, sizeof block, 1 << 20, &err), &err);
  assert_int_equal (r.status, GUEST_STEP_FAILED);
  assert_int_equal (r.step, 2);
  assert_int_equal (r.exit_code, 42);
  assert_int_equal (r.steps_run, 2);
  assert_int_equal (r.tar_bytes, 1024);
  assert_int_equal (r.step_ms[0], 77);
  assert_string_equal (r.message, "step 2 (test) exited with status 42");

  /* all zeros: no result, not an error */
  memset (block, 0, sizeof block);
  assert_ok (guest_result_parse (&r, block, sizeof block, 1 << 20, &err), &err);
  assert_int_equal (r.status, GUEST_NO_RESULT);
}

static void
expect_bad_header (const char *text, uint64_t max_tar, const char *needle)
{
  struct guest_result r;
  bvm_error_t err = NULL;
  char block[GUEST_HEADER_SIZE];
  memset (block, 0, sizeof block);
  memcpy (block, text, strlen (text));
  assert_fails_with (guest_result_parse (&r, block, sizeof block, max_tar, &err), &err, needle);
  assert_int_equal (r.status, GUEST_NO_RESULT);
}

static void
test_header_hostile (void **state)
{
  (void) state;
  expect_bad_header ("buildvm-output 1\nstatus pwned\nend\n", 100, "unknown status");
  expect_bad_header ("buildvm-output 1\nstatus ok\nexit -1\nend\n", 100, "bad exit");
  expect_bad_header ("buildvm-output 1\nstatus ok\nexit 1x\nend\n", 100, "bad exit");
  expect_bad_header ("buildvm-output 1\nstatus ok\ntar_bytes 101\nend\n", 100, "tar_bytes");
  expect_bad_header ("buildvm-output 1\nstatus ok\ntar_bytes 99999999999999999999999\nend\n", 100,
                     "tar_bytes");
  expect_bad_header ("buildvm-output 1\nstatus ok\nsurprise 1\nend\n", 100, "unknown key");
  expect_bad_header ("buildvm-output 1\nstatus ok\nend\nstatus ok\n", 100, "after `end`");
  expect_bad_header ("buildvm-output 1\nstatus ok\n", 100, "incomplete");
  expect_bad_header ("buildvm-output 1\nend\n", 100, "incomplete");
  expect_bad_header ("buildvm-output 1\nstatus ok\nmessage a\033[2Jb\nend\n", 100,
                     "control character");
  expect_bad_header ("buildvm-output 1\nstatus ok\nstep 9\nsteps 1\nend\n", 100, "inconsistent");
  expect_bad_header ("buildvm-output 1\nstatus ok\nstep_ms 0 5\nend\n", 100, "step_ms");
  expect_bad_header ("buildvm-output 1\nstatus ok\nstep_ms 65 5\nend\n", 100, "step_ms");
  expect_bad_header ("buildvm-output 1\nstatus ok\nnovalue\nend\n", 100, "no value");
  {
    /* bytes hidden after the terminating NUL */
    struct guest_result r;
    bvm_error_t err = NULL;
    char block[GUEST_HEADER_SIZE];
    memset (block, 0, sizeof block);
    memcpy (block, good_header, sizeof good_header - 1);
    block[3000] = 'x';
    assert_fails_with (guest_result_parse (&r, block, sizeof block, 1 << 20, &err), &err,
                       "after its end");
  }
}

static void
test_header_text (void **state)
{
  struct guest_result r;
  bvm_error_t err = NULL;
  char block[GUEST_HEADER_SIZE];
  (void) state;

  /* the record is JSON and the message is printed: invalid UTF-8, C0 and C1
   * controls and escape sequences are refused, never passed on */
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage bad \xff\xfe\nend\n", 100,
                     "invalid UTF-8");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage \xc3\x28\nend\n", 100,
                     "invalid UTF-8");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage cut \xe2\x82\nend\n", 100,
                     "invalid UTF-8");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage overlong \xc0\xaf\nend\n", 100,
                     "invalid UTF-8");
  expect_bad_header (
      "buildvm-output 1\nstatus agent-error\nmessage surrogate \xed\xa0\x80 \nend\n", 100,
      "invalid UTF-8");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage c1 csi \xc2\x9b\x32J\nend\n",
                     100, "control character");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage osc \033]0;title\007\nend\n",
                     100, "control character");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage tab\there\nend\n", 100,
                     "control character");
  expect_bad_header ("buildvm-output 1\nstatus agent-error\nmessage del \x7f\nend\n", 100,
                     "control character");
  expect_bad_header ("buildvm-output 1\nstatus ok\nstep 1\xff\nend\n", 100, "invalid UTF-8");

  /* valid UTF-8 text is kept as it is */
  memset (block, 0, sizeof block);
  snprintf (block, sizeof block,
            "buildvm-output 1\nstatus agent-error\nmessage caf\xc3\xa9 \xe2\x82\xac.\nend\n");
  assert_ok (guest_result_parse (&r, block, sizeof block, 100, &err), &err);
  assert_string_equal (r.message, "caf\xc3\xa9 \xe2\x82\xac.");
}

static void
test_input_disk (void **state)
{
  char *d = t_tmpdir ();
  char path[512];
  struct guest_input *in = NULL;
  struct guest_step step = { "s", "true", 0 };
  struct guest_job job = { 0 };
  bvm_error_t err = NULL;
  uint64_t size = 0;
  struct archive *a;
  struct archive_entry *e;
  const char *names[8];
  int n = 0;
  (void) state;

  snprintf (path, sizeof path, "%s/input.img", d);
  job.steps = &step;
  job.n_steps = 1;
  assert_ok (guest_input_create (&in, path, &err), &err);
  assert_ok (guest_input_add_control (in, &job, &err), &err);
  {
    struct archive_entry *f = archive_entry_new ();
    archive_entry_set_pathname (f, "src/hello.txt");
    archive_entry_set_filetype (f, AE_IFREG);
    archive_entry_set_perm (f, 0644);
    archive_entry_set_size (f, 5);
    assert_int_equal (archive_write_header (guest_input_archive (in), f), ARCHIVE_OK);
    assert_int_equal (archive_write_data (guest_input_archive (in), "hello", 5), 5);
    archive_entry_free (f);
  }
  assert_ok (guest_input_add_secret (in, "token", "s3cret", 6, &err), &err);
  assert_fails_with (guest_input_add_secret (in, "../x", "s", 1, &err), &err, "bad secret name");
  assert_ok (guest_input_finish (in, &size, &err), &err);
  guest_input_free (in);
  assert_int_equal (size % 512, 0);

  /* refuses to overwrite an existing file */
  assert_fails_with (guest_input_create (&in, path, &err), &err, "File exists");

  a = archive_read_new ();
  archive_read_support_format_tar (a);
  assert_int_equal (archive_read_open_filename (a, path, 10240), ARCHIVE_OK);
  while (archive_read_next_header (a, &e) == ARCHIVE_OK && n < 8)
    {
      names[n] = strdup (archive_entry_pathname (e));
      if (strcmp (names[n], ".buildvm/secrets/token") == 0)
        assert_int_equal (archive_entry_perm (e), 0400);
      n++;
    }
  archive_read_free (a);
  assert_int_equal (n, 3);
  assert_string_equal (names[0], ".buildvm/job");
  assert_string_equal (names[1], "src/hello.txt");
  assert_string_equal (names[2], ".buildvm/secrets/token");
  for (int i = 0; i < n; i++)
    free ((void *) names[i]);
  t_tmpdir_free (d);
}

static void
test_output_and_scratch (void **state)
{
  char *d = t_tmpdir ();
  char out[512], scratch[512];
  struct guest_result r;
  bvm_error_t err = NULL;
  struct stat st;
  char *fs;
  (void) state;

  snprintf (out, sizeof out, "%s/output.img", d);
  assert_ok (guest_output_create (out, 1 << 20, &err), &err);
  assert_int_equal (stat (out, &st), 0);
  assert_int_equal (st.st_size, GUEST_HEADER_SIZE + (1 << 20));
  assert_true (st.st_blocks == 0); /* sparse */
  assert_ok (guest_result_read (&r, out, &err), &err);
  assert_int_equal (r.status, GUEST_NO_RESULT);
  assert_fails_with (guest_output_create (out, 1, &err), &err, "File exists");

  snprintf (scratch, sizeof scratch, "%s/scratch.img", d);
  assert_ok (guest_scratch_create (scratch, 64, &err), &err);
  assert_int_equal (stat (scratch, &st), 0);
  assert_int_equal (st.st_size, 64 << 20);
  fs = t_sh_out (
      "dumpe2fs -h '%s' 2>/dev/null | grep -E '^(Filesystem features|Reserved block count)'",
      scratch);
  assert_non_null (strstr (fs, "extent"));
  assert_null (strstr (fs, "has_journal"));
  assert_non_null (strstr (fs, "Reserved block count:     0"));
  free (fs);
  t_tmpdir_free (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_control_roundtrip),  cmocka_unit_test (test_control_limits),
    cmocka_unit_test (test_header_parse),       cmocka_unit_test (test_header_hostile),
    cmocka_unit_test (test_header_text),        cmocka_unit_test (test_input_disk),
    cmocka_unit_test (test_output_and_scratch),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
