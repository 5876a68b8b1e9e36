/* test_steptail.c - the last lines of a build step's output */
#include "support.h"

#include "steptail.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void
feed (struct steptail *t, const char *line)
{
  steptail_line (t, line, strlen (line));
}

static char *
tail_json (const struct steptail *t, unsigned step)
{
  json_t *a = steptail_to_json (t, step);
  char *s = json_dumps (a, JSON_COMPACT);
  json_decref (a);
  return s;
}

static void
assert_tail (const struct steptail *t, unsigned step, const char *want)
{
  char *s = tail_json (t, step);
  assert_string_equal (s, want);
  free (s);
}

static void
test_markers (void **state)
{
  struct steptail t;
  (void) state;

  steptail_init (&t);
  feed (&t, "buildvm-agent: ready"); /* before any step: not kept */
  assert_tail (&t, 1, "[]");
  feed (&t, "==> step 1/2: test");
  feed (&t, "ok 1");
  feed (&t, "==> step 1 (test) exited with status 0 after 0.1s");
  feed (&t, "==> step 2/2: build");
  feed (&t, "cc -c x.c");
  feed (&t, "x.c:1: error: expected ';'");
  feed (&t, "==> step 2 (build) exited with status 1 after 0.3s");
  feed (&t, "buildvm-agent: done: step 2 (build) exited with status 1");
  assert_tail (&t, 2, "[\"cc -c x.c\",\"x.c:1: error: expected ';'\"]");
  assert_int_equal (t.total, 2);
  assert_tail (&t, 1, "[]"); /* step 1's lines are gone */
  assert_tail (&t, 0, "[]");

  /* a timeout ends a step too; lookalikes are the step's own lines */
  feed (&t, "==> step 3/3: hang");
  feed (&t, "==> step 3 (hang) is still running");
  feed (&t, "==> step x/3: no");
  feed (&t, "==> step 3/3 no colon");
  feed (&t, "==> step 3 (hang) timed out after 2.0s");
  feed (&t, "killed");
  assert_tail (&t, 3,
               "[\"==> step 3 (hang) is still running\",\"==> step x/3: no\","
               "\"==> step 3/3 no colon\"]");
}

static void
test_ring_and_cut (void **state)
{
  struct steptail t;
  char line[1024];
  json_t *a;
  (void) state;

  steptail_init (&t);
  feed (&t, "==> step 1/1: many");
  for (int i = 1; i <= 57; i++)
    {
      snprintf (line, sizeof line, "line %d", i);
      feed (&t, line);
    }
  assert_int_equal (t.total, 57);
  a = steptail_to_json (&t, 1);
  assert_int_equal (json_array_size (a), STEPTAIL_LINES);
  assert_string_equal (json_string_value (json_array_get (a, 0)), "line 38");
  assert_string_equal (json_string_value (json_array_get (a, STEPTAIL_LINES - 1)), "line 57");
  json_decref (a);

  /* a long line is cut at STEPTAIL_LINE_MAX, not inside a UTF-8 sequence */
  steptail_init (&t);
  feed (&t, "==> step 1/1: long");
  memset (line, 'a', sizeof line);
  memcpy (line + STEPTAIL_LINE_MAX - 1, "\xc3\xa9", 2); /* é across the cut */
  steptail_line (&t, line, sizeof line);
  a = steptail_to_json (&t, 1);
  assert_int_equal (json_string_length (json_array_get (a, 0)), STEPTAIL_LINE_MAX - 1 + 3);
  assert_memory_equal (json_string_value (json_array_get (a, 0)) + STEPTAIL_LINE_MAX - 1, "...",
                       4);
  json_decref (a);
  /* the cap holds for any input: every slot has room for the cut line */
  for (int i = 0; i < 3 * STEPTAIL_LINES; i++)
    steptail_line (&t, line, sizeof line);
  assert_int_equal (t.n, STEPTAIL_LINES);
}

static void
test_hint (void **state)
{
  static const char *const lookups[] = {
    "npm ERR! request to https://registry.npmjs.org/x failed, reason: getaddrinfo EAI_AGAIN",
    "curl: (6) Could not resolve host: example.com",
    "socket.gaierror: [Errno -3] Temporary failure in name resolution",
    "go: dial tcp: lookup proxy.golang.org on [::1]:53: read udp: connection refused",
    "wget: bad address 'deb.debian.org'",
  };
  struct steptail t;
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (lookups); i++)
    {
      steptail_init (&t);
      feed (&t, "==> step 1/1: install");
      feed (&t, lookups[i]);
      feed (&t, "exit 1");
      assert_non_null (strstr (steptail_hint (&t, false), "the build VM has no network"));
      assert_non_null (
          strstr (steptail_hint (&t, false), "\"egress\": [\"registry.npmjs.org:443\"]"));
      assert_non_null (strstr (steptail_hint (&t, true), "the egress proxy in $HTTPS_PROXY"));
    }
  steptail_init (&t);
  feed (&t, "==> step 1/1: test");
  feed (&t, "1 test failed: expected 2, got 3");
  assert_null (steptail_hint (&t, false));
  /* a lookup printed by an earlier step is not this step's */
  steptail_init (&t);
  feed (&t, "==> step 1/2: a");
  feed (&t, "getaddrinfo EAI_AGAIN");
  feed (&t, "==> step 1 (a) exited with status 0 after 0.1s");
  feed (&t, "==> step 2/2: b");
  feed (&t, "assertion failed");
  assert_null (steptail_hint (&t, false));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_markers),
    cmocka_unit_test (test_ring_and_cut),
    cmocka_unit_test (test_hint),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
