/* test_opts.c - the option table parser every verb uses (opts.c) */
#include "support.h"

#include "error.h"
#include "opts.h"

#include <stdlib.h>
#include <string.h>

struct seen
{
  const char *config;
  bool verbose, json;
  uint32_t n;
  uint64_t big;
  const char *fn_arg;
};

static int
upper_only (void *dst, char *arg, bvm_error_t *err)
{
  for (const char *p = arg; *p; p++)
    if (*p < 'A' || *p > 'Z')
      return bvm_error_code (err, BVM_E_USAGE, 0, "`%s` is not upper case", arg);
  *(const char **) dst = arg;
  return 0;
}

/* argv from a NULL-terminated list of literals, copied: getopt permutes it
 * and OPT_FN may write into it */
static int
run (struct seen *s, unsigned flags, bvm_error_t *err, char **copy, const char *const *args)
{
  const struct opt table[] = {
    OPT_STR ("config", 'c', &s->config),
    OPT_FLAG ("verbose", 'v', &s->verbose),
    OPT_FLAG ("json", 0, &s->json),
    OPT_U32 ("count", &s->n, 1, 64, "things"),
    OPT_U64 ("big", &s->big, 1024, UINT64_MAX, "bytes"),
    OPT_FN ("upper", &s->fn_arg, upper_only),
    OPT_END,
  };
  int argc = 0;
  for (; args[argc] != NULL; argc++)
    copy[argc] = strdup (args[argc]);
  copy[argc] = NULL;
  memset (s, 0, sizeof *s);
  return opts_parse (argc, copy, table, flags, err);
}

static void
free_argv (char **v)
{
  for (size_t i = 0; v[i] != NULL; i++)
    free (v[i]);
}

#define PARSE(flags, ...)                                                                         \
  ({                                                                                              \
    const char *const args_[] = { "verb", __VA_ARGS__, NULL };                                    \
    free_argv (argv);                                                                             \
    memset (argv, 0, sizeof argv);                                                                \
    run (&s, (flags), &err, argv, args_);                                                         \
  })

static void
test_opts_values_and_operands (void **state)
{
  char *argv[16] = { NULL };
  bvm_error_t err = NULL;
  struct seen s;
  (void) state;

  assert_int_equal (PARSE (0, "--config", "a.json", "-v", "job.json", "--count=7", "--big",
                           "4096"),
                    7);
  assert_string_equal (s.config, "a.json");
  assert_true (s.verbose);
  assert_false (s.json);
  assert_int_equal (s.n, 7);
  assert_int_equal (s.big, 4096);
  assert_string_equal (argv[7], "job.json"); /* permuted to the end */

  /* clusters, attached values, abbreviations, `--` */
  assert_int_equal (PARSE (0, "-vca.json", "--js", "--", "--count"), 4);
  assert_string_equal (s.config, "a.json");
  assert_true (s.verbose && s.json);
  assert_string_equal (argv[4], "--count");
  free_argv (argv);
}

static void
test_opts_in_order_stops_at_the_first_operand (void **state)
{
  char *argv[16] = { NULL };
  bvm_error_t err = NULL;
  struct seen s;
  (void) state;

  assert_int_equal (PARSE (OPTS_IN_ORDER, "-v", "ls", "--json", "-c"), 2);
  assert_true (s.verbose);
  assert_false (s.json);
  assert_string_equal (argv[2], "ls");
  assert_string_equal (argv[3], "--json");
  /* and a later parse in the default mode permutes again (optind reset) */
  assert_int_equal (PARSE (0, "x", "--json"), 2);
  assert_true (s.json);
  free_argv (argv);
}

static void
test_opts_help (void **state)
{
  char *argv[16] = { NULL };
  bvm_error_t err = NULL;
  struct seen s;
  (void) state;

  assert_int_equal (PARSE (0, "--help", "--bogus"), 0);
  assert_int_equal (PARSE (0, "-v", "-h"), 0);
  assert_null (err);
  free_argv (argv);
}

static void
test_opts_refusals_say_what (void **state)
{
  static const struct
  {
    const char *args[3];
    const char *msg;
  } cases[] = {
    { { "--bogus", NULL }, "unknown option `--bogus`" },
    { { "-vx", NULL }, "unknown option `-x`" },
    { { "--config", NULL }, "`--config` needs a value" },
    { { "-c", NULL }, "`-c` needs a value" },
    { { "--json=1", NULL }, "unknown option `--json=1`" },
    { { "--count", "0" }, "--count needs a whole number from 1 to 64 (things)" },
    { { "--count", "65" }, "--count needs a whole number from 1 to 64 (things)" },
    { { "--count", "7x" }, "--count needs a whole number from 1 to 64 (things)" },
    { { "--count=-1", NULL }, "--count needs a whole number from 1 to 64 (things)" },
    { { "--big", "1023" }, "--big needs a whole number of at least 1024 (bytes)" },
    { { "--big", "99999999999999999999" }, "--big needs a whole number of at least 1024 (bytes)" },
    { { "--upper", "abc" }, "--upper: `abc` is not upper case" },
  };
  char *argv[16] = { NULL };
  bvm_error_t err = NULL;
  struct seen s;
  (void) state;

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      const char *const *a = cases[i].args;
      int ret = a[1] != NULL ? PARSE (0, a[0], a[1]) : PARSE (0, a[0]);
      assert_int_equal (ret, -1);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_USAGE);
      assert_string_equal (bvm_error_msg (&err), cases[i].msg);
      bvm_error_free (&err);
    }
  assert_int_equal (PARSE (0, "--upper", "ABC"), 3);
  assert_string_equal (s.fn_arg, "ABC");
  free_argv (argv);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_opts_values_and_operands),
    cmocka_unit_test (test_opts_in_order_stops_at_the_first_operand),
    cmocka_unit_test (test_opts_help),
    cmocka_unit_test (test_opts_refusals_say_what),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
