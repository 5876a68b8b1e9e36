/* test_util.c - error objects, capped buffers, strict JSON, fs helpers */
#include "support.h"

#include "buf.h"
#include "error.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
test_error_wrap_keeps_lower_message (void **state)
{
  bvm_error_t err = NULL;
  (void) state;
  assert_int_equal (bvm_error (&err, ENOENT, "open `%s`", "/x"), -ENOENT);
  bvm_error_wrap (&err, "loading the config");
  assert_string_equal (bvm_error_msg (&err),
                       "loading the config: open `/x`: No such file or directory");
  assert_int_equal (bvm_error_get_code (&err), BVM_E_IO);
  bvm_error_free (&err);
  assert_null (err);
  bvm_error_code (&err, BVM_E_DENIED, 0, "no");
  bvm_error_wrap (&err, "push");
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  bvm_error_free (&err);
}

static void
test_buf_cap (void **state)
{
  struct buf b = BUF_INIT (8);
  (void) state;
  assert_int_equal (buf_adds (&b, "1234"), 0);
  assert_int_equal (buf_addf (&b, "%d", 5678), 0);
  assert_string_equal (buf_cstr (&b), "12345678");
  assert_int_equal (buf_adds (&b, "9"), -1);
  assert_int_equal (errno, E2BIG);
  assert_int_equal (b.len, 8);
  buf_reset (&b);
  assert_int_equal (buf_addf (&b, "%s", "0123456789"), -1);
  assert_int_equal (b.len, 0);
  buf_dispose (&b);
}

static void
test_parse_numbers (void **state)
{
  uint64_t v;
  int i;
  (void) state;
  assert_int_equal (parse_u64 ("42", &v), 0);
  assert_int_equal (v, 42);
  assert_int_equal (parse_u64 ("-1", &v), -1);
  assert_int_equal (parse_u64 ("1x", &v), -1);
  assert_int_equal (parse_u64 ("", &v), -1);
  assert_int_equal (parse_u64 ("99999999999999999999999", &v), -1);
  assert_int_equal (parse_int ("-7", &i), 0);
  assert_int_equal (i, -7);
  assert_int_equal (parse_int ("3000000000", &i), -1);
}

static void
test_json_strict (void **state)
{
  json_t *j = NULL;
  bvm_error_t err = NULL;
  const char *s = NULL;
  uint64_t n = 0;
  (void) state;

  assert_fails_with (jsonx_parse (&j, "{\"a\":1,\"a\":2}", 13, 100, "doc", &err), &err,
                     "duplicate");
  assert_fails_with (jsonx_parse (&j, "{\"a\":\"\xff\"}", 9, 100, "doc", &err), &err,
                     "not valid JSON");
  assert_fails_with (jsonx_parse (&j, "{\"a\":\"\\u0000\"}", 14, 100, "doc", &err), &err,
                     "not valid JSON");
  assert_fails_with (jsonx_parse (&j, "{\"a\":1}", 7, 3, "doc", &err), &err, "over the limit");
  {
    char deep[200];
    memset (deep, '[', 100);
    memset (deep + 100, ']', 100);
    assert_fails_with (jsonx_parse (&j, deep, 200, 1000, "doc", &err), &err, "nests deeper");
  }
  assert_ok (jsonx_parse (&j, "{\"a\":\"x\",\"n\":5}", 15, 100, "doc", &err), &err);
  assert_ok (jsonx_get_str (&s, j, "a", true, 10, "", &err), &err);
  assert_string_equal (s, "x");
  assert_fails_with (jsonx_get_str (&s, j, "n", true, 10, "spec", &err), &err,
                     "field `spec.n` must be a string, not an integer");
  assert_fails_with (jsonx_get_str (&s, j, "zz", true, 10, "", &err), &err,
                     "missing required field `zz`");
  assert_fails_with (jsonx_get_u64 (&n, j, "n", true, 6, 9, "", &err), &err, "outside the range");
  {
    static const char *const allowed[] = { "a", NULL };
    assert_fails_with (jsonx_check_keys (j, allowed, "top", &err), &err, "unknown field `top.n`");
  }
  json_decref (j);
}

static void
test_fs_atomic_and_rm (void **state)
{
  char *d = t_tmpdir ();
  char p[512], q[512];
  bvm_error_t err = NULL;
  (void) state;

  snprintf (p, sizeof p, "%s/a/b/c", d);
  assert_ok (fs_mkdir_p (p, 0755, &err), &err);
  snprintf (q, sizeof q, "%s/a/b/c/file", d);
  assert_ok (fs_write_atomic (q, "hello", 5, 0600, &err), &err);
  {
    char *s = t_read (q);
    assert_string_equal (s, "hello");
    free (s);
  }
  assert_fails_with (fs_check_private (q, &err) == 0
                         ? (chmod (q, 0640), fs_check_private (q, &err))
                         : 0,
                     &err, "accessible by group or others");
  /* a symlink to outside must be removed, not followed */
  t_write ("/tmp/buildvm-test-outside", "keep");
  snprintf (q, sizeof q, "%s/a/link", d);
  assert_int_equal (symlink ("/tmp/buildvm-test-outside", q), 0);
  snprintf (p, sizeof p, "%s/a", d);
  assert_ok (fs_rm_rf (p, &err), &err);
  assert_int_equal (access (p, F_OK), -1);
  assert_int_equal (access ("/tmp/buildvm-test-outside", F_OK), 0);
  unlink ("/tmp/buildvm-test-outside");
  t_tmpdir_free (d);
}

/* the console on an operator's terminal: text passes, escapes do not */
static void
test_str_escape_fwrite (void **state)
{
  static const char in[] = "a\tb \xe2\x9c\x93 `x\\y` \033]0;t\007\033[2J \xc2\x9b \xff\xc3";
  char *got = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&got, &len);
  (void) state;
  assert_non_null (f);
  str_escape_fwrite (f, in, sizeof in - 1);
  fclose (f);
  assert_string_equal (got,
                       "a\tb \xe2\x9c\x93 `x\\y` \\x1b]0;t\\x07\\x1b[2J \\xc2\\x9b \\xff\\xc3");
  free (got);
}

static void
test_str_escape (void **state)
{
  char out[64];
  (void) state;
  assert_string_equal (str_escape (out, sizeof out, "plain", 5, 100), "plain");
  assert_string_equal (str_escape (out, sizeof out, "a\033[2Jb`c\\", 9, 100),
                       "a\\x1b[2Jb\\x60c\\x5c");
  assert_string_equal (str_escape (out, sizeof out, "\xff\n", 2, 100), "\\xff\\x0a");
  /* cut at max input bytes, marked */
  assert_string_equal (str_escape (out, sizeof out, "abcdefgh", 8, 3), "abc...");
  /* cut where the output is full, still NUL-terminated and marked */
  str_escape (out, 16, "0123456789abcdefghij", 20, 100);
  assert_true (strlen (out) < 16);
  assert_non_null (strstr (out, "..."));
  /* a NUL inside `len` is shown, not an end */
  assert_string_equal (str_escape (out, sizeof out, "a\0b", 3, 100), "a\\x00b");
}

/* The authority of a registry, redis and git URL: one rule, the union of
 * what the copies in config.c, job.c and queue_redis.c refused. */
static void
test_hostport (void **state)
{
  static const char *const good[] = { "h",       "127.0.0.1", "a.b-c.D9",   "h:1",
                                      "h:65535", "[::1]",     "[::1]:6379", "[fe80::1.2.3.4]:80",
                                      NULL };
  static const char *const bad[][2] = {
    { "", "has no host" },
    { ":80", "has no host" },
    { "h:", "invalid port" },
    { "h:0", "invalid port" },
    { "h:65536", "invalid port" },
    { "h:080", "invalid port" },
    { "h:8a", "invalid port" },
    { "h:+80", "invalid port" },
    { "h:123456", "invalid port" },
    { "ho_st", "invalid host name" },
    { "ho st", "invalid host name" },
    { "h\x80", "invalid host name" },
    { "u@h", "invalid host name" },
    { "[::1", "unterminated IPv6" },
    { "[::1]x", "invalid host" },
    { "[::1]:", "invalid port" },
    { "[::%1]", "invalid IPv6" },
  };
  (void) state;
  for (size_t i = 0; good[i]; i++)
    assert_null (hostport_problem (good[i], strlen (good[i])));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      const char *why = hostport_problem (bad[i][0], strlen (bad[i][0]));
      if (why == NULL || strstr (why, bad[i][1]) == NULL)
        fail_msg ("`%s`: want `%s`, got `%s`", bad[i][0], bad[i][1], why ? why : "(accepted)");
    }
  /* only `n` bytes are looked at */
  assert_null (hostport_problem ("h:80/path", 4));
}

/* has_control is text_problem's rule: C0, DEL, C1 and invalid UTF-8 */
static void
test_has_control (void **state)
{
  (void) state;
  assert_false (has_control (""));
  assert_false (has_control ("plain /path-\xc3\xa9"));
  assert_true (has_control ("a\tb"));
  assert_true (has_control ("a\x7f"));
  assert_true (has_control ("a\xc2\x9b[2J"));
  assert_true (has_control ("a\xc2\x85"));
  assert_true (has_control ("\xff"));
  assert_true (has_control ("\xc0\xaf"));
}

static void
test_strv (void **state)
{
  const char *const in[] = { "a", "", "bc" };
  char **v;
  (void) state;
  v = strv_dup (in, 3);
  assert_non_null (v);
  assert_string_equal (v[0], "a");
  assert_string_equal (v[1], "");
  assert_string_equal (v[2], "bc");
  assert_null (v[3]);
  assert_true (v[0] != in[0]);
  strv_free (v);
  v = strv_dup (NULL, 0);
  assert_non_null (v);
  assert_null (v[0]);
  strv_free (v);
  strv_free (NULL);
}

static void
test_hex_and_be32 (void **state)
{
  (void) state;
  unsigned char b[4], in[3] = { 0x00, 0xab, 0xff };
  char hex[7];

  assert_int_equal (hex_digit ('0'), 0);
  assert_int_equal (hex_digit ('9'), 9);
  assert_int_equal (hex_digit ('a'), 10);
  assert_int_equal (hex_digit ('F'), 15);
  assert_int_equal (hex_digit ('g'), -1);
  assert_int_equal (hex_digit ('/'), -1);
  assert_int_equal (hex_digit (0x80 | 'a'), -1);
  hex_encode (hex, in, sizeof in);
  assert_string_equal (hex, "00abff");
  for (size_t i = 0; i < 6; i += 2)
    assert_int_equal (hex_digit (hex[i]) << 4 | hex_digit (hex[i + 1]), in[i / 2]);
  be32_put (b, 0x01020304u);
  assert_int_equal (b[0], 1);
  assert_int_equal (b[3], 4);
  assert_int_equal (be32_get (b), 0x01020304u);
  be32_put (b, 0xffffffffu);
  assert_int_equal (be32_get (b), 0xffffffffu);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_error_wrap_keeps_lower_message),
    cmocka_unit_test (test_buf_cap),
    cmocka_unit_test (test_parse_numbers),
    cmocka_unit_test (test_json_strict),
    cmocka_unit_test (test_fs_atomic_and_rm),
    cmocka_unit_test (test_str_escape),
    cmocka_unit_test (test_str_escape_fwrite),
    cmocka_unit_test (test_hostport),
    cmocka_unit_test (test_strv),
    cmocka_unit_test (test_has_control),
    cmocka_unit_test (test_hex_and_be32),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
