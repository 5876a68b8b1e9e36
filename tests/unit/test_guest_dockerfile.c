/* test_guest_dockerfile.c - a Dockerfile job's control records (issue 17)
 *
 * guest.c encodes the `dockerfile`, `build_arg` and `base` records; the
 * agent's own decoder (compiled in from buildvm-image/agent/control.c)
 * reads them back. Both sides check the values with the same rules
 * (protocol.h): what the encoder refuses, the agent would refuse too, and
 * what reaches buildah can be neither an option nor a variable buildah
 * itself reads.
 */
#include "support.h"

#include "buf.h"
#include "guest.h"
#include "util.h"

#include "../../buildvm-image/agent/agent.h"
#include "../../buildvm-image/agent/control.c"

#include <stdlib.h>
#include <string.h>

static struct guest_build_arg args[] = {
  { "NODE_ENV", "production" },
  { "EMPTY", "" },
  { "odd_value", "a=b\nsecond line; $(not a shell) `x` -f" },
};
static struct guest_base bases[] = {
  { "b0", "docker.io/library/node:18" },
  { "b1", "docker.io/library/debian@sha256:"
          "0e29084fa5865930cccf8ac3b9277f048d1ad36d3843c8503ff56d3ef304ca06" },
};

static void
df_job (struct guest_job *job, struct guest_dockerfile *df)
{
  memset (job, 0, sizeof *job);
  memset (df, 0, sizeof *df);
  df->path = "docker/Dockerfile.prod";
  df->context = "app";
  df->target = "runtime";
  df->args = args;
  df->n_args = 3;
  df->bases = bases;
  df->n_bases = 2;
  job->timeout_s = 600;
  job->log_max = 1000;
  job->output_max = 1 << 30;
  job->dockerfile = df;
}

static void
test_dockerfile_roundtrip (void **state)
{
  struct guest_job job;
  struct guest_dockerfile df;
  struct guest_secret_env se[] = { { "NPM_TOKEN", "npm-token" } };
  struct buf b = BUF_INIT (1 << 20);
  static struct agent_job aj;
  bvm_error_t err = NULL;
  char msg[256];
  (void) state;

  df_job (&job, &df);
  job.secret_env = se; /* allowed: the agent does not pass it to buildah */
  job.n_secret_env = 1;
  assert_ok (guest_control_encode (&b, &job, &err), &err);
  assert_int_equal (agent_control_parse (&aj, b.ptr, b.len, msg, sizeof msg), 0);
  assert_true (aj.is_dockerfile);
  assert_int_equal (aj.n_steps, 0);
  assert_string_equal (aj.dockerfile.path, "docker/Dockerfile.prod");
  assert_string_equal (aj.dockerfile.context, "app");
  assert_string_equal (aj.dockerfile.target, "runtime");
  assert_int_equal (aj.dockerfile.n_args, 3);
  assert_string_equal (aj.dockerfile.args[0].name, "NODE_ENV");
  assert_string_equal (aj.dockerfile.args[0].value, "production");
  assert_string_equal (aj.dockerfile.args[1].value, "");
  assert_string_equal (aj.dockerfile.args[2].value, args[2].value);
  assert_int_equal (aj.dockerfile.n_bases, 2);
  assert_string_equal (aj.dockerfile.bases[0].ref, "b0");
  assert_string_equal (aj.dockerfile.bases[0].name, "docker.io/library/node:18");
  assert_string_equal (aj.dockerfile.bases[1].name, bases[1].name);
  assert_int_equal (aj.timeout_s, 600);

  /* no target, no args, no bases (FROM scratch): target "" */
  df.target = NULL;
  df.n_args = 0;
  df.n_bases = 0;
  df.context = ".";
  buf_reset (&b);
  assert_ok (guest_control_encode (&b, &job, &err), &err);
  assert_int_equal (agent_control_parse (&aj, b.ptr, b.len, msg, sizeof msg), 0);
  assert_true (aj.is_dockerfile);
  assert_string_equal (aj.dockerfile.target, "");
  assert_string_equal (aj.dockerfile.context, ".");

  /* a steps job is not a Dockerfile job */
  {
    struct guest_step step = { "s", "true", 0 };
    job.dockerfile = NULL;
    job.steps = &step;
    job.n_steps = 1;
    buf_reset (&b);
    assert_ok (guest_control_encode (&b, &job, &err), &err);
    assert_int_equal (agent_control_parse (&aj, b.ptr, b.len, msg, sizeof msg), 0);
    assert_false (aj.is_dockerfile);
  }
  buf_dispose (&b);
}

/* the encoder's refusal of one changed value */
#define REFUSED(needle)                                                                           \
  do                                                                                              \
    {                                                                                             \
      buf_reset (&b);                                                                             \
      assert_fails_with (guest_control_encode (&b, &job, &err), &err, needle);                    \
    }                                                                                             \
  while (0)

static void
test_dockerfile_refused (void **state)
{
  struct guest_job job;
  struct guest_dockerfile df;
  struct guest_step step = { "s", "true", 0 };
  struct guest_build_arg one[1], many[PROTO_DF_MAX_BUILD_ARGS + 1];
  struct guest_base base[2], many_bases[PROTO_DF_MAX_BASES + 1];
  struct buf b = BUF_INIT (1 << 20);
  bvm_error_t err = NULL;
  char *big;
  (void) state;

  /* the Dockerfile describes the build: no steps, no image directory */
  df_job (&job, &df);
  job.steps = &step;
  job.n_steps = 1;
  REFUSED ("no steps and no image directory");
  df_job (&job, &df);
  job.image_from = "dist";
  REFUSED ("no steps and no image directory");

  /* paths stay inside the source tree and are never options */
  static const char *const bad_paths[][2] = {
    { "/etc/passwd", "is absolute" },  { "../Dockerfile", "`..` component" },
    { "a/../../b", "`..` component" }, { "a/..", "`..` component" },
    { "-f", "starts with `-`" },       { "", "is empty" },
    { "a\nb", "control character" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (bad_paths); i++)
    {
      df_job (&job, &df);
      df.path = bad_paths[i][0];
      REFUSED (bad_paths[i][1]);
      df_job (&job, &df);
      df.context = bad_paths[i][0];
      REFUSED (bad_paths[i][1]);
    }
  df_job (&job, &df);
  df.path = NULL;
  REFUSED ("is empty");
  df_job (&job, &df);
  df.path = "..foo/Dockerfile..x"; /* not a `..` component */
  buf_reset (&b);
  assert_ok (guest_control_encode (&b, &job, &err), &err);

  df_job (&job, &df);
  df.target = "--no-cache";
  REFUSED ("the build target `--no-cache` starts with");
  df.target = "a stage";
  REFUSED ("letters, digits");

  /* build arg names: environment variable names, none that buildah, its
   * libraries or Go read, none of the proxy's */
  static const char *const bad_names[][2] = {
    { "PATH", "the builder itself reads" },
    { "home", "the builder itself reads" },
    { "TMPDIR", "the builder itself reads" },
    { "BUILDAH_ISOLATION", "the builder itself reads" },
    { "CONTAINERS_REGISTRIES_CONF", "the builder itself reads" },
    { "_CONTAINERS_USERNS_CONFIGURED", "the builder itself reads" },
    { "STORAGE_DRIVER", "the builder itself reads" },
    { "ld_preload", "the builder itself reads" },
    { "GODEBUG", "the builder itself reads" },
    { "XDG_CONFIG_HOME", "the builder itself reads" },
    { "BUILDVM_STEP", "the builder itself reads" },
    { "HTTP_PROXY", "proxy variable" },
    { "no_proxy", "proxy variable" },
    { "ALL_PROXY", "proxy variable" },
    { "1X", "starts with a digit" },
    { "A-B", "letters, digits and `_`" },
    { "A=B", "letters, digits and `_`" },
    { "", "is empty" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (bad_names); i++)
    {
      df_job (&job, &df);
      one[0].name = bad_names[i][0];
      one[0].value = "v";
      df.args = one;
      df.n_args = 1;
      REFUSED (bad_names[i][1]);
    }
  /* names that only look like reserved ones are fine */
  static const char *const good_names[] = { "PATHS", "GOOS", "MY_HOME", "PROXY", "_x1" };
  for (size_t i = 0; i < ARRAY_SIZE (good_names); i++)
    {
      df_job (&job, &df);
      one[0].name = good_names[i];
      one[0].value = "v";
      df.args = one;
      df.n_args = 1;
      buf_reset (&b);
      assert_ok (guest_control_encode (&b, &job, &err), &err);
    }
  df_job (&job, &df);
  many[0] = (struct guest_build_arg){ "A", "1" };
  many[1] = (struct guest_build_arg){ "A", "2" };
  df.args = many;
  df.n_args = 2;
  REFUSED ("build arg `A` is given twice");
  big = malloc (PROTO_DF_ARG_VALUE_MAX + 2);
  assert_non_null (big);
  memset (big, 'v', PROTO_DF_ARG_VALUE_MAX + 1);
  big[PROTO_DF_ARG_VALUE_MAX + 1] = '\0';
  one[0] = (struct guest_build_arg){ "BIG", big };
  df.args = one;
  df.n_args = 1;
  REFUSED ("longer than 8192 bytes");
  big[PROTO_DF_ARG_VALUE_MAX] = '\0'; /* exactly the cap */
  buf_reset (&b);
  assert_ok (guest_control_encode (&b, &job, &err), &err);
  free (big);
  for (size_t i = 0; i < ARRAY_SIZE (many); i++)
    {
      char *name = malloc (16);
      assert_non_null (name);
      snprintf (name, 16, "ARG%zu", i);
      many[i] = (struct guest_build_arg){ name, "v" };
    }
  df.args = many;
  df.n_args = ARRAY_SIZE (many);
  REFUSED ("build args: at most 128");
  for (size_t i = 0; i < ARRAY_SIZE (many); i++)
    free ((char *) many[i].name);

  /* base images: a ref name, an image reference, each once */
  df_job (&job, &df);
  base[0] = (struct guest_base){ "b0", "docker.io/library/node:18" };
  base[1] = (struct guest_base){ "b0", "docker.io/library/node:18-slim" };
  df.bases = base;
  df.n_bases = 2;
  REFUSED ("base image ref `b0` is given twice");
  base[1] = (struct guest_base){ "b1", "-node:18" };
  REFUSED ("starts with `-`");
  base[1] = (struct guest_base){ "b1", "node 18" };
  REFUSED ("is not an image reference");
  base[1] = (struct guest_base){ "../b1", "node:18" };
  REFUSED ("starts with `-` or `.`");
  base[1] = (struct guest_base){ "b/1", "node:18" };
  REFUSED ("letters, digits");
  for (size_t i = 0; i < ARRAY_SIZE (many_bases); i++)
    many_bases[i] = (struct guest_base){ "b0", "node:18" };
  df.bases = many_bases;
  df.n_bases = ARRAY_SIZE (many_bases);
  REFUSED ("base images: at most 64");

  /* the whole file within the control file's cap */
  {
    struct buf small = BUF_INIT (64);
    df_job (&job, &df);
    assert_fails_with (guest_control_encode (&small, &job, &err), &err, "exceeds");
    buf_dispose (&small);
  }
  buf_dispose (&b);
}

/* the agent's parser on records no honest runner writes */
static void
test_dockerfile_agent_strict (void **state)
{
  static struct agent_job aj;
  char msg[256];
  (void) state;
#define PARSE(lit) agent_control_parse (&aj, (char *) (lit), sizeof (lit) - 1, msg, sizeof msg)
  static const char ok[] = "version\0"
                           "1\0dockerfile\0Dockerfile\0.\0\0base\0b0\0docker.io/library/x:1\0";
  assert_int_equal (PARSE (ok), 0);
  assert_true (aj.is_dockerfile);

  static const char twice[] = "version\0"
                              "1\0dockerfile\0Dockerfile\0.\0\0dockerfile\0D\0.\0\0";
  assert_int_equal (PARSE (twice), -1);
  assert_non_null (strstr (msg, "more than one `dockerfile`"));

  static const char with_step[] = "version\0"
                                  "1\0dockerfile\0Dockerfile\0.\0\0step\0"
                                  "0\0s\0true\0";
  assert_int_equal (PARSE (with_step), -1);
  assert_non_null (strstr (msg, "with steps"));

  static const char arg_alone[] = "version\0"
                                  "1\0step\0"
                                  "0\0s\0true\0build_arg\0A\0v\0";
  assert_int_equal (PARSE (arg_alone), -1);
  assert_non_null (strstr (msg, "without a `dockerfile` record"));

  static const char base_alone[] = "version\0"
                                   "1\0base\0b0\0x:1\0";
  assert_int_equal (PARSE (base_alone), -1);
  assert_non_null (strstr (msg, "without a `dockerfile` record"));

  static const char abs_path[] = "version\0"
                                 "1\0dockerfile\0/etc/shadow\0.\0\0";
  assert_int_equal (PARSE (abs_path), -1);
  assert_non_null (strstr (msg, "is absolute"));

  static const char opt_target[] = "version\0"
                                   "1\0dockerfile\0Dockerfile\0.\0--squash\0";
  assert_int_equal (PARSE (opt_target), -1);

  static const char bad_arg[] = "version\0"
                                "1\0dockerfile\0Dockerfile\0.\0\0build_arg\0LD_PRELOAD\0/x.so\0";
  assert_int_equal (PARSE (bad_arg), -1);
  assert_non_null (strstr (msg, "LD_PRELOAD"));

  static const char dup_arg[]
      = "version\0"
        "1\0dockerfile\0Dockerfile\0.\0\0build_arg\0A\0v\0build_arg\0A\0w\0";
  assert_int_equal (PARSE (dup_arg), -1);
  assert_non_null (strstr (msg, "twice"));

  static const char bad_base[] = "version\0"
                                 "1\0dockerfile\0Dockerfile\0.\0\0base\0b0\0--all\0";
  assert_int_equal (PARSE (bad_base), -1);

  static const char truncated[] = "version\0"
                                  "1\0dockerfile\0Dockerfile\0.\0";
  assert_int_equal (PARSE (truncated), -1);
  assert_non_null (strstr (msg, "truncated"));

  static const char truncated_base[] = "version\0"
                                       "1\0dockerfile\0Dockerfile\0.\0\0base\0b0\0";
  assert_int_equal (PARSE (truncated_base), -1);
  assert_non_null (strstr (msg, "truncated"));
#undef PARSE
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_dockerfile_roundtrip),
    cmocka_unit_test (test_dockerfile_refused),
    cmocka_unit_test (test_dockerfile_agent_strict),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
