/* fuzz_config.c - the runner config parser (config.h), `runner.json`
 *
 * config_load reads a file, so the input goes into a memfd and is loaded as
 * /proc/self/fd/N: no temporary files, and the exact code path of a real
 * load (open, fstat, read with the size cap). Properties on every config it
 * accepts:
 *   - the defaults are within the limits and the limits are positive;
 *   - config_to_json gives a document config_load accepts again, with the
 *     same content (the effective config is a fixed point);
 *   - plan_resolve_resources with no spec stays within the limits;
 *   - failures have a one-line message without control characters (UTF-8 in
 *     the operator's paths may be quoted as written);
 *   - the destination templates, expanded for a fixed valid job, either fail
 *     or give a repository that contains the app id (the template must
 *     contain `{app}`: otherwise every app would share one repository).
 */
#include "fuzz.h"

#include "config.h"
#include "plan.h"
#include "job.h"
#include "jsonx.h"

static struct job_request *g_job;

static const char job_json[] = "{\"id\":\"d-1\",\"app\":\"fuzzapp\",\"repo\":\"/srv/git/x\","
                               "\"commit\":\"0123456789abcdef0123456789abcdef01234567\","
                               "\"ref\":\"refs/heads/main\"}";

static int
load_bytes (struct runner_config **out, const void *data, size_t size, bvm_error_t *err)
{
  char path[64];
  int fd = fuzz_memfd (data, size);

  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  return config_load (out, path, err);
}

static void
check_config (const struct runner_config *c)
{
  bvm_error_t err = NULL;
  struct job_resources r;
  char *repo = NULL, *tag = NULL, **extra = NULL;
  size_t n = 0;
  int ret;

  FUZZ_CHECK (c->home != NULL && c->home[0] == '/');
  FUZZ_CHECK (c->defaults.vcpus <= c->limits.max_vcpus);
  FUZZ_CHECK (c->defaults.memory_mib <= c->limits.max_memory_mib);
  FUZZ_CHECK (c->defaults.disk_mib <= c->limits.max_disk_mib);
  FUZZ_CHECK (c->defaults.build_seconds <= c->limits.max_build_seconds);
  FUZZ_CHECK (c->registry.repository != NULL && strstr (c->registry.repository, "{app}"));

  ret = plan_resolve_resources (&r, c, NULL, &err);
  if (ret < 0)
    fuzz_check_error_ex (ret, &err, true);
  else
    FUZZ_CHECK (r.vcpus <= c->limits.max_vcpus && r.memory_mib <= c->limits.max_memory_mib
                && r.disk_mib <= c->limits.max_disk_mib
                && r.timeout <= c->limits.max_build_seconds);

  ret = config_expand_destination (&repo, &tag, c, g_job, &err);
  if (ret < 0)
    fuzz_check_error_ex (ret, &err, true);
  else
    {
      FUZZ_CHECK (repo != NULL && tag != NULL && strstr (repo, g_job->app) != NULL);
      free (repo);
      free (tag);
    }
  ret = config_expand_extra_tags (&extra, &n, c, g_job, &err);
  if (ret < 0)
    fuzz_check_error_ex (ret, &err, true);
  else
    {
      FUZZ_CHECK (n <= CONFIG_MAX_EXTRA_TAGS && extra != NULL && extra[n] == NULL);
      config_strv_free (extra);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  struct runner_config *c = NULL, *c2 = NULL;
  json_t *doc, *doc2;
  char *text;
  int ret;

  if (g_job == NULL && job_parse (&g_job, job_json, strlen (job_json), &err) < 0)
    {
      fprintf (stderr, "fuzz_config: set-up: %s\n", bvm_error_msg (&err));
      abort ();
    }

  ret = load_bytes (&c, data, size, &err);
  if (ret < 0)
    {
      FUZZ_CHECK (c == NULL);
      fuzz_check_error_ex (ret, &err, true);
      return 0;
    }
  check_config (c);

  doc = config_to_json (c);
  FUZZ_CHECK (doc != NULL);
  text = json_dumps (doc, JSON_COMPACT);
  FUZZ_CHECK (text != NULL);
  ret = load_bytes (&c2, text, strlen (text), &err);
  if (ret < 0)
    {
      fprintf (stderr, "re-load of %s: %s\n", text, bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "config_to_json output loads again");
    }
  doc2 = config_to_json (c2);
  FUZZ_CHECK (doc2 != NULL && json_equal (doc, doc2));

  json_decref (doc2);
  json_decref (doc);
  free (text);
  config_free (c2);
  config_free (c);
  return 0;
}
