/* cmd_policy.c - `buildvm policy eval|check`: evaluate and validate role policies */
#include "cli.h"
#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <getopt.h>
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

static int
cmd_eval (int argc, char **argv)
{
  static const struct option opts[] = {
    { "policy", required_argument, NULL, 'p' },   { "boundary", required_argument, NULL, 'b' },
    { "job", required_argument, NULL, 'j' },      { "action", required_argument, NULL, 'a' },
    { "resource", required_argument, NULL, 'r' }, { "context", required_argument, NULL, 'c' },
    { "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
  };
  const char *policy_path = NULL, *boundary_path = NULL, *job_path = NULL;
  const char *action = NULL, *resource = NULL;
  struct policy_context_entry entries[MAX_CONTEXT];
  struct policy_context ctx = { entries, 0 };
  cleanup_policy struct policy *tmpl = NULL;
  cleanup_policy struct policy *boundary = NULL;
  cleanup_role struct role *role = NULL;
  cleanup_error bvm_error_t err = NULL;
  struct job_vars jv = { NULL, { NULL, NULL, NULL, NULL } };
  cleanup_json json_t *job_doc = NULL;
  struct policy_decision d;
  int c, ret;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1)
    switch (c)
      {
      case 'p': policy_path = optarg; break;
      case 'b': boundary_path = optarg; break;
      case 'j': job_path = optarg; break;
      case 'a': action = optarg; break;
      case 'r': resource = optarg; break;
      case 'c':
        {
          char *eq = strchr (optarg, '='), *colon = strchr (optarg, ':');
          if (ctx.n >= MAX_CONTEXT)
            return cli_usage ("policy", "more than %d --context options", MAX_CONTEXT);
          if (eq == NULL || eq == optarg || colon == NULL || colon > eq)
            return cli_usage ("policy",
                              "--context `%s` must be KEY=VALUE with KEY like `prefix:Name`",
                              optarg);
          *eq = '\0'; /* split in place: argv strings are ours to modify */
          for (size_t i = 0; i < ctx.n; i++)
            if (strcasecmp (entries[i].key, optarg) == 0)
              return cli_usage ("policy", "context key `%s` given twice", optarg);
          entries[ctx.n].key = optarg;
          entries[ctx.n].value = eq + 1;
          ctx.n++;
          break;
        }
      case 'h': usage (stdout); return 0;
      default: return cli_usage ("policy", "unknown option");
      }
  if (optind < argc)
    return cli_usage ("policy", "unexpected argument `%s`", argv[optind]);
  if (policy_path == NULL)
    return cli_usage ("policy", "eval needs --policy FILE");
  if (action == NULL || resource == NULL)
    return cli_usage ("policy", "eval needs --action and --resource");
  if (job_path != NULL)
    for (size_t i = 0; i < ctx.n; i++)
      if (strncasecmp (entries[i].key, "job:", 4) == 0)
        return cli_usage ("policy", "context key `%s` comes from --job", entries[i].key);

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
  static const struct option opts[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c, status = 0;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1)
    switch (c)
      {
      case 'h': usage (stdout); return 0;
      default: return cli_usage ("policy", "unknown option");
      }
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
