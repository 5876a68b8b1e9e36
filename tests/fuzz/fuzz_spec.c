/* fuzz_spec.c - the app build spec parser (spec.h), `buildvm.json` from the
 * app's repository
 *
 * Properties checked on every spec spec_parse accepts:
 *   - the counts are within the documented caps, steps are 1..64 (none in a
 *     Dockerfile build, whose path and context stay inside the tree);
 *   - paths that steer the guest stay inside their tree: artifacts and
 *     image.from are relative without `..` components, image.to and
 *     image.workdir are absolute without `..` components;
 *   - environment names are valid and never HOME, USER or BUILDVM_*;
 *   - spec_to_json gives a document spec_parse accepts again, with the same
 *     normalized content (the plan object is a fixed point);
 *   - plan_resolve_resources with the default config either fails or
 *     stays within the runner's limits.
 */
#include "fuzz.h"

#include "config.h"
#include "plan.h"
#include "image.h"
#include "jsonx.h"
#include "oci.h"
#include "spec.h"
#include "../../buildvm-image/agent/protocol.h"

static struct runner_config *g_config;

static bool
has_dotdot (const char *p)
{
  const char *c = p;
  while (*c)
    {
      size_t n = strcspn (c, "/");
      if (n == 2 && c[0] == '.' && c[1] == '.')
        return true;
      c += n;
      if (*c == '/')
        c++;
    }
  return false;
}

static void
check_env (const struct spec_kv *kv, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      FUZZ_CHECK (kv[i].key != NULL && kv[i].value != NULL);
      FUZZ_CHECK (spec_env_name_problem (kv[i].key) == NULL);
      FUZZ_CHECK (strcmp (kv[i].key, "HOME") != 0 && strcmp (kv[i].key, "USER") != 0);
      FUZZ_CHECK (strncmp (kv[i].key, "BUILDVM_", 8) != 0);
    }
}

static void
check_spec (const struct build_spec *s)
{
  FUZZ_CHECK (image_profile_problem (s->profile) == NULL);
  if (s->dockerfile != NULL)
    {
      /* the Dockerfile describes the build and the image (issue 17) */
      const struct spec_dockerfile *d = s->dockerfile;
      FUZZ_CHECK (s->n_steps == 0 && s->n_env == 0 && s->n_artifacts == 0);
      FUZZ_CHECK (s->image != NULL && s->image->from == NULL && s->image->to == NULL
                  && s->image->base == NULL);
      FUZZ_CHECK (d->path != NULL && d->path[0] != '/' && !has_dotdot (d->path));
      FUZZ_CHECK (d->context != NULL && d->context[0] != '/' && !has_dotdot (d->context));
      FUZZ_CHECK (d->n_args <= SPEC_DOCKERFILE_MAX_ARGS);
      for (size_t i = 0; i < d->n_args; i++)
        FUZZ_CHECK (proto_df_arg_name_problem (d->args[i].key) == NULL
                    && d->args[i].value != NULL);
      return;
    }
  FUZZ_CHECK (s->n_steps >= 1 && s->n_steps <= SPEC_MAX_STEPS);
  for (size_t i = 0; i < s->n_steps; i++)
    {
      FUZZ_CHECK (s->steps[i].name != NULL && s->steps[i].run != NULL);
      FUZZ_CHECK (s->steps[i].timeout <= SPEC_STEP_TIMEOUT_MAX);
    }
  FUZZ_CHECK (s->n_env <= SPEC_MAX_ENV);
  check_env (s->env, s->n_env);
  FUZZ_CHECK (s->n_artifacts <= SPEC_MAX_ARTIFACTS);
  for (size_t i = 0; i < s->n_artifacts; i++)
    {
      FUZZ_CHECK (s->artifacts[i] != NULL && s->artifacts[i][0] != '/');
      FUZZ_CHECK (!has_dotdot (s->artifacts[i]));
    }
  FUZZ_CHECK (s->artifacts == NULL || s->artifacts[s->n_artifacts] == NULL);
  FUZZ_CHECK (s->n_secrets <= SPEC_MAX_SECRETS);
  for (size_t i = 0; i < s->n_secrets; i++)
    FUZZ_CHECK (s->secrets[i].name != NULL && s->secrets[i].name[0] != '.'
                && strchr (s->secrets[i].name, '/') == NULL);
  if (s->image != NULL)
    {
      const struct spec_image *im = s->image;
      FUZZ_CHECK (im->from != NULL && im->from[0] != '/' && !has_dotdot (im->from));
      FUZZ_CHECK (im->to != NULL && im->to[0] == '/' && !has_dotdot (im->to));
      FUZZ_CHECK (im->workdir == NULL || (im->workdir[0] == '/' && !has_dotdot (im->workdir)));
      FUZZ_CHECK (im->n_ports <= SPEC_MAX_PORTS && im->n_labels <= SPEC_MAX_LABELS);
      check_env (im->env, im->n_env);
      if (im->base != NULL)
        {
          FUZZ_CHECK (im->base_repository != NULL
                      && oci_repository_problem (im->base_repository) == NULL);
          FUZZ_CHECK ((im->base_tag == NULL) != (im->base_digest == NULL));
          FUZZ_CHECK (im->base_tag == NULL || oci_tag_problem (im->base_tag) == NULL);
        }
    }
}

static void
check_resources (const struct build_spec *s)
{
  bvm_error_t err = NULL;
  struct job_resources r;
  int ret;

  ret = plan_resolve_resources (&r, g_config, s, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      return;
    }
  FUZZ_CHECK (r.vcpus >= 1 && r.vcpus <= g_config->limits.max_vcpus);
  FUZZ_CHECK (r.memory_mib <= g_config->limits.max_memory_mib);
  FUZZ_CHECK (r.disk_mib <= g_config->limits.max_disk_mib);
  FUZZ_CHECK (r.timeout >= 1 && r.timeout <= g_config->limits.max_build_seconds);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  struct build_spec *s = NULL, *s2 = NULL;
  json_t *doc, *doc2;
  char *text;
  int ret;

  if (g_config == NULL && config_load (&g_config, NULL, &err) < 0)
    {
      fprintf (stderr, "fuzz_spec: set-up: %s\n", bvm_error_msg (&err));
      abort ();
    }

  ret = spec_parse (&s, (const char *) data, size, &err);
  if (ret < 0)
    {
      FUZZ_CHECK (s == NULL);
      fuzz_check_error (ret, &err);
      return 0;
    }
  check_spec (s);
  check_resources (s);

  doc = spec_to_json (s);
  FUZZ_CHECK (doc != NULL);
  text = json_dumps (doc, JSON_COMPACT);
  FUZZ_CHECK (text != NULL);
  ret = spec_parse (&s2, text, strlen (text), &err);
  if (ret < 0)
    {
      fprintf (stderr, "re-parse of %s: %s\n", text, bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "spec_to_json output parses again");
    }
  doc2 = spec_to_json (s2);
  FUZZ_CHECK (doc2 != NULL);
  if (!json_equal (doc, doc2))
    {
      char *t2 = json_dumps (doc2, JSON_COMPACT);
      fprintf (stderr, "first:  %s\nsecond: %s\n", text, t2 ? t2 : "?");
      fuzz_fail (__FILE__, __LINE__, "spec_to_json is a fixed point");
    }
  json_decref (doc2);
  json_decref (doc);
  free (text);
  spec_free (s2);
  spec_free (s);
  return 0;
}
