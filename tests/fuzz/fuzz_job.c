/* fuzz_job.c - the deploy request parser and validator (job.h)
 *
 * Properties checked on every input job_parse accepts:
 *   - every field passes the exported validator for it;
 *   - job_to_json gives a document job_parse accepts again, with the same
 *     content (the plan object is a fixed point);
 *   - the builtin role can be minted for it (docs: role_mint refuses only
 *     values the deploy-request parser never produces), and that role lets
 *     the job push its own image but not another app's;
 *   - config_expand_destination either fails or gives a repository and tag.
 * And job__show, which quotes untrusted values in every message, always
 * gives a bounded printable string without backticks or backslashes except
 * in \xNN escapes.
 */
#include "fuzz.h"

#include "config.h"
#include "job.h"
#include "jsonx.h"
#include "policy.h"

static struct runner_config *g_config;
static struct policy *g_role, *g_boundary;

static void
init_once (void)
{
  bvm_error_t err = NULL;

  if (g_config != NULL)
    return;
  if (config_load (&g_config, NULL, &err) < 0 || policy_load_builtin (&g_role, false, &err) < 0
      || policy_load_builtin (&g_boundary, true, &err) < 0)
    {
      fprintf (stderr, "fuzz_job: set-up: %s\n", bvm_error_msg (&err));
      abort ();
    }
}

static void
check_show (const char *s)
{
  char buf[JOB__SHOW_SIZE];
  char small[16];
  size_t n;

  job__show (buf, sizeof buf, s);
  n = strlen (buf);
  FUZZ_CHECK (n < sizeof buf);
  for (size_t i = 0; i < n; i++)
    {
      unsigned char c = (unsigned char) buf[i];
      FUZZ_CHECK (c >= 0x20 && c < 0x7f && c != '`');
      if (c == '\\')
        {
          FUZZ_CHECK (buf[i + 1] == 'x');
          i++;
        }
    }
  job__show (small, sizeof small, s);
  FUZZ_CHECK (strlen (small) < sizeof small);
}

static void
check_role (const struct job_request *j)
{
  bvm_error_t err = NULL;
  struct role *r = NULL;
  struct policy_vars vars = { j->app, j->commit, j->ref, j->id };
  struct policy_decision d;
  char res[512];
  int ret;

  ret = role_mint (&r, g_role, g_boundary, &vars, 4000000000, &err);
  if (ret < 0)
    {
      fprintf (stderr, "role_mint refused a valid job: %s\n", bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "a parsed job mints the builtin role");
    }
  snprintf (res, sizeof res, "registry:apps/%s:%s", j->app, j->commit);
  role_decide (r, POLICY_ACTION_PUSH_IMAGE, res, NULL, &d);
  FUZZ_CHECK (d.allowed);
  snprintf (res, sizeof res, "registry:apps/%sx:%s", j->app, j->commit);
  role_decide (r, POLICY_ACTION_PUSH_IMAGE, res, NULL, &d);
  FUZZ_CHECK (!d.allowed);
  snprintf (res, sizeof res, "artifacts:apps/%s/%s/x", j->app, j->commit);
  role_decide (r, POLICY_ACTION_PUT_OBJECT, res, NULL, &d);
  FUZZ_CHECK (d.allowed);
  snprintf (res, sizeof res, "logs:apps/%s/%s", j->app, j->id);
  role_decide (r, POLICY_ACTION_PUT_LOG_EVENTS, res, NULL, &d);
  FUZZ_CHECK (d.allowed);
  role_free (r);
}

static void
check_destination (const struct job_request *j)
{
  bvm_error_t err = NULL;
  char *repo = NULL, *tag = NULL;
  int ret;

  ret = config_expand_destination (&repo, &tag, g_config, j, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      return;
    }
  FUZZ_CHECK (repo != NULL && tag != NULL);
  FUZZ_CHECK (strstr (repo, j->app) != NULL);
  free (repo);
  free (tag);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  struct job_request *j = NULL, *j2 = NULL;
  json_t *doc, *doc2;
  char *text, *cstr;
  int ret;

  init_once ();
  cstr = fuzz_cstr (data, size);
  check_show (cstr);
  free (cstr);

  ret = job_parse (&j, (const char *) data, size, &err);
  if (ret < 0)
    {
      FUZZ_CHECK (j == NULL);
      fuzz_check_error (ret, &err);
      return 0;
    }
  FUZZ_CHECK (job_id_problem (j->id) == NULL);
  FUZZ_CHECK (job_app_id_problem (j->app) == NULL);
  FUZZ_CHECK (job_commit_problem (j->commit) == NULL);
  FUZZ_CHECK (job_ref_problem (j->ref) == NULL);
  FUZZ_CHECK (j->trigger != NULL);
  FUZZ_CHECK (j->requested_at == NULL || job_rfc3339_problem (j->requested_at) == NULL);

  doc = job_to_json (j);
  FUZZ_CHECK (doc != NULL);
  text = json_dumps (doc, JSON_COMPACT);
  FUZZ_CHECK (text != NULL);
  ret = job_parse (&j2, text, strlen (text), &err);
  if (ret < 0)
    {
      fprintf (stderr, "re-parse of %s: %s\n", text, bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "job_to_json output parses again");
    }
  doc2 = job_to_json (j2);
  FUZZ_CHECK (doc2 != NULL && json_equal (doc, doc2));

  check_role (j);
  check_destination (j);

  json_decref (doc2);
  json_decref (doc);
  free (text);
  job_free (j2);
  job_free (j);
  return 0;
}
