/* cmd_logs.c - `buildvm logs [-f] JOB`: print a job's console log */
#include "cli.h"
#include "config.h"
#include "joblog.h"
#include "util.h"

#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm logs [--config FILE] [--log-dir DIR] [-f|--follow] JOB\n"
                "\n"
                "Print the console log of job JOB (plain or LZ4-compressed).\n"
                "\n"
                "  -f, --follow         keep printing while the job runs; stop when its\n"
                "                       log is closed\n"
                "      --config FILE    runner configuration: its `log_dir`\n"
                "      --log-dir DIR    the log directory (default: the config's, else\n"
                "                       $BUILDVM_HOME/logs, where BUILDVM_HOME is\n"
                "                       /var/lib/buildvm as root and ~/.local/state/buildvm\n"
                "                       otherwise)\n"
                "  -h, --help           this help\n");
}

/* The log directory: --log-dir, else the config's (which applies
 * BUILDVM_HOME and the built-in default itself). */
static int
logs_dir (char **out, const char *opt_dir, const char *config_path, bvm_error_t *err)
{
  struct runner_config *cfg = NULL;

  if (opt_dir != NULL)
    {
      *out = xstrdup (opt_dir);
      return 0;
    }
  if (config_load (&cfg, config_path, err) < 0)
    return -1;
  *out = xstrdup (cfg->log_dir);
  config_free (cfg);
  return 0;
}

int
cmd_logs (int argc, char **argv)
{
  cleanup_free char *dir = NULL;
  const char *opt_dir = NULL, *config_path = NULL;
  bvm_error_t err = NULL;
  bool follow = false;
  int c;

  const struct opt opts[] = {
    OPT_FLAG ("follow", 'f', &follow),
    OPT_STR ("log-dir", 0, &opt_dir),
    OPT_STR ("config", 0, &config_path),
    OPT_END,
  };
  if (cli_parse (argc, argv, "logs", opts, OPTS_IN_ORDER, -1, usage, &c))
    return c;
  if (argc - optind != 1)
    return cli_usage ("logs", "expected exactly one JOB");
  if (joblog_job_id_problem (argv[optind]) != NULL)
    return cli_usage ("logs", "invalid job id: letters, digits, `.`, `_`, `-`, at most 128");
  if (logs_dir (&dir, opt_dir, config_path, &err) < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  /* the latest attempt's log: <job>.attempt<N> after the first (pipeline.c) */
  {
    char name[192];
    int latest = 0;
    for (int n = 2; n <= 1000; n++)
      {
        glob_t g;
        char pat[PATH_MAX];
        bool found;
        snprintf (pat, sizeof pat, "%s/apps/*/%s.attempt%d.log*", dir, argv[optind], n);
        found = glob (pat, GLOB_NOSORT, NULL, &g) == 0;
        globfree (&g);
        if (!found)
          break;
        latest = n;
      }
    if (latest > 0)
      {
        snprintf (name, sizeof name, "%s.attempt%d", argv[optind], latest);
        fprintf (stderr, "buildvm logs: attempt %d of job `%s`\n", latest, argv[optind]);
        if (joblog_cat (dir, name, stdout, follow, &err) < 0)
          return cli_fail ("logs", &err, cli_status_for (&err));
        return 0;
      }
  }
  if (joblog_cat (dir, argv[optind], stdout, follow, &err) < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  return 0;
}
