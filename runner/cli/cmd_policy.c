/* cmd_policy.c - `buildvm policy eval|check`: evaluate and validate role policies */
#include "cli.h"
#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_CONTEXT 64
#define JOB_FILE_MAX (64 * 1024)

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm policy eval --policy FILE [--boundary FILE] [--job JOB.json]\n"
                "                           --action ACTION --resource RESOURCE\n"
                "                           [--context KEY=VALUE]...\n"
                "       buildvm policy check FILE...\n"
                "\n"
                "eval   decide one request against a role policy (and a permission boundary)\n"
                "       as the runner would; prints `allow` or `deny` on the first line and the\n"
                "       deciding statement (or `implicit deny`) on the second. Exit status 0\n"
                "       for either decision, 2 for a usage or policy error.\n"
                "  --policy FILE      the role template, e.g. policies/build-role.json\n"
                "  --boundary FILE    the permission boundary, e.g. policies/boundary.json\n"
                "  --job JOB.json     a deploy request: its id, app, commit and ref give the\n"
                "                     ${job:*} variables and the job:* context keys\n"
                "  --action ACTION    e.g. registry:PushImage\n"
                "  --resource RES     e.g. registry:apps/hello:latest\n"
                "  --context K=V      an extra request context key (repeatable)\n"
                "check  validate policy files: grammar, actions, resources, variables\n");
}

/* The job's values for the policy variables. Kept small and separate so that
 * job_parse() can replace it: reads only id, app, commit and ref. */
struct job_vars
{
  json_t *doc;
  struct policy_vars vars;
};

static int
read_job_vars (struct job_vars *jv, const char *path, bvm_error_t *err)
{
  int ret = jsonx_parse_file (&jv->doc, path, JOB_FILE_MAX, err);
  if (ret == 0 && !json_is_object (jv->doc))
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "job `%s` must be a JSON object", path);
  if (ret == 0)
    ret = jsonx_get_str (&jv->vars.id, jv->doc, "id", true, POLICY_VAR_MAX, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&jv->vars.app, jv->doc, "app", true, POLICY_VAR_MAX, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&jv->vars.commit, jv->doc, "commit", true, POLICY_VAR_MAX, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&jv->vars.ref, jv->doc, "ref", false, POLICY_VAR_MAX, "", err);
  if (ret < 0)
    return bvm_error_wrap (err, "job `%s`", path);
  return 0;
}

static int
load (struct policy **out, const char *path)
{
  cleanup_error bvm_error_t err = NULL;
  if (policy_load_file (out, path, &err) < 0)
    return cli_fail ("policy", &err, 2);
  return 0;
}

struct context_opts
{
  struct policy_context_entry entries[MAX_CONTEXT];
  size_t n;
};

/* --context KEY=VALUE, KEY like `prefix:Name`: split in place */
static int
context_opt (void *dst, char *arg, bvm_error_t *err)
{
  struct context_opts *ctx = dst;
  char *eq = strchr (arg, '='), *colon = strchr (arg, ':');

  if (ctx->n >= MAX_CONTEXT)
    return bvm_error_code (err, BVM_E_USAGE, 0, "more than %d of them", MAX_CONTEXT);
  if (eq == NULL || eq == arg || colon == NULL || colon > eq)
    return bvm_error_code (err, BVM_E_USAGE, 0,
                           "`%s` must be KEY=VALUE with KEY like `prefix:Name`", arg);
  *eq = '\0';
  for (size_t i = 0; i < ctx->n; i++)
    if (strcasecmp (ctx->entries[i].key, arg) == 0)
      return bvm_error_code (err, BVM_E_USAGE, 0, "context key `%s` given twice", arg);
  ctx->entries[ctx->n].key = arg;
  ctx->entries[ctx->n].value = eq + 1;
  ctx->n++;
  return 0;
}

static int
cmd_eval (int argc, char **argv)
{
  const char *policy_path = NULL, *boundary_path = NULL, *job_path = NULL;
  const char *action = NULL, *resource = NULL;
  struct context_opts co = { .n = 0 };
  struct policy_context ctx;
  cleanup_policy struct policy *tmpl = NULL;
  cleanup_policy struct policy *boundary = NULL;
  cleanup_role struct role *role = NULL;
  cleanup_error bvm_error_t err = NULL;
  struct job_vars jv = { NULL, { NULL, NULL, NULL, NULL } };
  cleanup_json json_t *job_doc = NULL;
  struct policy_decision d;
  int c, ret;

  const struct opt opts[] = {
    OPT_STR ("policy", 0, &policy_path),
    OPT_STR ("boundary", 0, &boundary_path),
    OPT_STR ("job", 0, &job_path),
    OPT_STR ("action", 0, &action),
    OPT_STR ("resource", 0, &resource),
    OPT_FN ("context", &co, context_opt),
    OPT_END,
  };
  if (cli_parse (argc, argv, "policy", opts, 0, 0, usage, &c))
    return c;
  ctx = (struct policy_context){ co.entries, co.n };
  if (policy_path == NULL)
    return cli_usage ("policy", "eval needs --policy FILE");
  if (action == NULL || resource == NULL)
    return cli_usage ("policy", "eval needs --action and --resource");
  if (job_path != NULL)
    for (size_t i = 0; i < ctx.n; i++)
      if (strncasecmp (co.entries[i].key, "job:", 4) == 0)
        return cli_usage ("policy", "context key `%s` comes from --job", co.entries[i].key);

  if ((ret = load (&tmpl, policy_path)) != 0)
    return ret;
  if (boundary_path != NULL && (ret = load (&boundary, boundary_path)) != 0)
    return ret;
  if (job_path != NULL)
    {
      ret = read_job_vars (&jv, job_path, &err);
      job_doc = jv.doc; /* owns the strings in jv.vars */
      if (ret < 0)
        return cli_fail ("policy", &err, 2);
    }
  /* The role lives only for this one decision. */
  if (role_mint (&role, tmpl, boundary, &jv.vars, wall_s () + 3600, &err) < 0)
    {
      if (job_path == NULL)
        bvm_error_wrap (&err, "no --job given");
      return cli_fail ("policy", &err, 2);
    }
  role_decide (role, action, resource, &ctx, &d);
  printf ("%s\n%s\n", d.allowed ? "allow" : "deny", d.why);
  return 0;
}

static int
cmd_check (int argc, char **argv)
{
  int c, status = 0;

  const struct opt opts[] = { OPT_END };
  if (cli_parse (argc, argv, "policy", opts, 0, -1, usage, &c))
    return c;
  if (optind >= argc)
    return cli_usage ("policy", "check needs a FILE");
  for (int i = optind; i < argc; i++)
    {
      cleanup_policy struct policy *p = NULL;
      cleanup_error bvm_error_t err = NULL;
      if (policy_load_file (&p, argv[i], &err) < 0)
        {
          status = cli_fail ("policy", &err, 2);
          continue;
        }
      printf ("%s: ok (%zu statement%s)\n", argv[i], policy_statement_count (p),
              policy_statement_count (p) == 1 ? "" : "s");
    }
  return status;
}

int cmd_policy (int argc, char **argv);

int
cmd_policy (int argc, char **argv)
{
  int ret = cli_help_or_missing (argc, argv, usage);
  if (ret >= 0)
    return ret;
  if (strcmp (argv[1], "eval") == 0)
    return cmd_eval (argc - 1, argv + 1);
  if (strcmp (argv[1], "check") == 0)
    return cmd_check (argc - 1, argv + 1);
  return cli_usage ("policy", "unknown command `%s`: expected `eval` or `check`", argv[1]);
}
