/* cmd_dry_run.c - `buildvm dry-run [DIR]`: build a working copy locally
 *
 * The same build VM image, the same buildvm.json, the same limits and the
 * same role template as a real run; instead of pushing, the image becomes an
 * OCI image layout and the artifacts a directory, and the plan - every write
 * a real run would make, with the role's decision - is printed. No registry,
 * queue or config is needed.
 */
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "gitsrc.h"
#include "job.h"
#include "jsonx.h"
#include "pipeline.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm dry-run [--config FILE] [--app NAME] [--worktree] [--out DIR]\n"
           "                       [--verbose] [DIR]\n"
           "\n"
           "Build the app in DIR (default: .) exactly as the runner would, without pushing:\n"
           "the image becomes an OCI image layout in OUT/image, the artifacts go to\n"
           "OUT/artifacts, and the plan shows every tag and artifact a real run would write,\n"
           "each with the role's decision.\n"
           "\n"
           "  --app NAME    the app id (default: DIR's name, lowercased)\n"
           "  --worktree    build the working tree as it is, uncommitted changes included\n"
           "                (default: the committed HEAD)\n"
           "  --out DIR     where the results go (default: ./buildvm-out)\n"
           "  --config FILE runner configuration (default: built-in defaults)\n"
           "  -v, --verbose echo the build's console as it runs\n"
           "\n"
           "exit status: 0 when the build succeeded and every planned write is allowed.\n");
}

/* "My_App.v2" -> "my-app-v2": a default app id from a directory name */
static void
app_from_dir (char *out, size_t size, const char *dir)
{
  char abs[PATH_MAX];
  const char *base;
  size_t n = 0;

  if (realpath (dir, abs) == NULL)
    snprintf (abs, sizeof abs, "%s", dir);
  base = strrchr (abs, '/');
  base = base ? base + 1 : abs;
  for (const char *p = base; *p && n + 1 < size && n < 63; p++)
    {
      char c = (char) tolower ((unsigned char) *p);
      if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        out[n++] = c;
      else if (n > 0 && out[n - 1] != '-')
        out[n++] = '-';
    }
  while (n > 0 && out[n - 1] == '-')
    n--;
  out[n] = '\0';
  if (n == 0)
    snprintf (out, size, "app");
}

static void
print_plan (const json_t *plan)
{
  size_t i;
  json_t *d;

  printf ("plan:\n");
  json_array_foreach (plan, i, d)
    printf ("  %-5s  %-20s %s\n         %s\n", json_string_value (json_object_get (d, "decision")),
            json_string_value (json_object_get (d, "action")),
            json_string_value (json_object_get (d, "resource")),
            json_string_value (json_object_get (d, "why")));
}

int
cmd_dry_run (int argc, char **argv)
{
  const char *config_path = NULL, *app_opt = NULL, *out_opt = "buildvm-out";
  bool worktree = false, verbose = false;
  char dir[PATH_MAX], out_dir[PATH_MAX], app[64], head[GITSRC_OID_HEX + 1], id[160];
  char stamp[32], out_rel[PATH_MAX] = "";
  struct runner_config *cfg = NULL;
  struct job_request *job = NULL;
  struct pipeline_opts po = { 0 };
  json_t *record = NULL, *plan = NULL, *req = NULL;
  bvm_error_t err = NULL;
  char *req_text = NULL;
  int c, ret, status = 1;

  const struct opt opts[] = {
    OPT_STR ("config", 0, &config_path), OPT_STR ("app", 0, &app_opt),
    OPT_FLAG ("worktree", 0, &worktree), OPT_STR ("out", 0, &out_opt),
    OPT_FLAG ("verbose", 'v', &verbose), OPT_END,
  };
  if (cli_parse (argc, argv, "dry-run", opts, 0, 1, usage, &c))
    return c;
  if (realpath (optind < argc ? argv[optind] : ".", dir) == NULL)
    return cli_usage ("dry-run", "`%s`: %s", optind < argc ? argv[optind] : ".", strerror (errno));
  if (app_opt)
    snprintf (app, sizeof app, "%s", app_opt);
  else
    app_from_dir (app, sizeof app, dir);
  if (job_app_id_problem (app) != NULL)
    return cli_usage ("dry-run",
                      "`%s` is not a valid app id (^[a-z0-9][a-z0-9-]{0,62}$): "
                      "use --app",
                      app);
  if (fs_mkdir_p (out_opt, 0755, &err) < 0 || realpath (out_opt, out_dir) == NULL)
    return cli_fail ("dry-run", &err, 1);

  /* the output directory relative to the working tree, when inside it */
  {
    size_t n = strlen (dir);
    if (strncmp (out_dir, dir, n) == 0 && out_dir[n] == '/')
      snprintf (out_rel, sizeof out_rel, "%s/", out_dir + n + 1);
  }
  /* --worktree exports what is not ignored: our own output must not end up
   * in the next build's sources */
  if (worktree && out_rel[0] != '\0')
    {
      bool ignored = false;
      if (gitsrc_path_ignored (&ignored, dir, out_rel, &err) < 0)
        return cli_fail ("dry-run", &err, 2);
      if (!ignored)
        return cli_usage ("dry-run",
                          "the output directory `%s` is inside the working tree and not "
                          "ignored, so --worktree would build it into the sources: add "
                          "`%s` to .gitignore or choose another --out",
                          out_rel, out_rel);
    }
  if (gitsrc_head (head, dir, &err) < 0)
    {
      bvm_error_wrap (&err, "`%s` must be a git repository with at least one commit", dir);
      return cli_fail ("dry-run", &err, 2);
    }
  /* the committed HEAD is built: say so when the working tree differs */
  if (!worktree)
    {
      size_t changes = 0;
      if (gitsrc_worktree_changes (&changes, dir, out_rel[0] ? out_rel : NULL, &err) < 0)
        return cli_fail ("dry-run", &err, 2);
      if (changes > 0)
        fprintf (stderr,
                 "buildvm dry-run: %zu uncommitted change%s in `%s` %s not included: this "
                 "builds the committed HEAD %.12s (--worktree builds the working tree as it "
                 "is)\n",
                 changes, changes == 1 ? "" : "s", dir, changes == 1 ? "is" : "are", head);
    }
  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("dry-run", &err, 2);
  /* the job's log goes with the other results */
  free (cfg->log_dir);
  if (asprintf (&cfg->log_dir, "%s/logs", out_dir) < 0)
    abort ();

  snprintf (stamp, sizeof stamp, "%lld", (long long) wall_s ());
  snprintf (id, sizeof id, "dry-run-%s-%s", app, stamp);
  req = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", id, "app", app, "repo", dir, "commit",
                   head, "ref", "refs/heads/dry-run", "trigger", "manual");
  req_text = json_dumps (req, 0);
  json_decref (req);
  if (req_text == NULL || job_parse (&job, req_text, strlen (req_text), &err) < 0)
    {
      free (req_text);
      config_free (cfg);
      return cli_fail ("dry-run", &err, 2);
    }
  free (req_text);

  plan = json_array ();
  cli_install_cancel ();
  po.cfg = cfg;
  po.attempt = 1;
  po.cancel = &cli_cancel_requested;
  po.echo = verbose ? stderr : NULL;
  po.dry_run = true;
  po.local_dir = dir;
  po.worktree = worktree;
  po.out_dir = out_dir;
  po.plan = plan;
  ret = pipeline_run (&record, job, &po, &err);

  printf ("dry run of %s at %.12s%s\n", app, head, worktree ? " (working tree)" : "");
  print_plan (plan);
  pipeline_print_summary (stdout, record);
  {
    char path[PATH_MAX + 16];
    snprintf (path, sizeof path, "%s/record.json", out_dir);
    if (jsonx_write_file (path, record, &err) < 0)
      bvm_error_free (&err);
  }
  status = 0;
  if (ret < 0)
    {
      status = cli_status_for (&err);
      bvm_error_free (&err);
    }
  json_decref (plan);
  json_decref (record);
  job_free (job);
  config_free (cfg);
  return status;
}
