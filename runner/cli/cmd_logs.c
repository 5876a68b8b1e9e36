/* cmd_logs.c - `buildvm logs [-f] JOB`: print a job's console log */
#include "cli.h"
#include "joblog.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm logs [--log-dir DIR] [-f|--follow] JOB\n"
                "\n"
                "Print the console log of job JOB (plain or LZ4-compressed).\n"
                "\n"
                "  -f, --follow         keep printing while the job runs; stop when its\n"
                "                       log is closed\n"
                "      --log-dir DIR    the log directory (default: $BUILDVM_HOME/logs, where\n"
                "                       BUILDVM_HOME is /var/lib/buildvm as root and\n"
                "                       ~/.local/state/buildvm otherwise)\n"
                "  -h, --help           this help\n");
}

/* The log directory: --log-dir, else the default. When the config module
 * lands, the config's value goes between the two. */
static int
logs_dir (char **out, const char *opt_dir, bvm_error_t *err)
{
  if (opt_dir != NULL)
    {
      *out = xstrdup (opt_dir);
      return 0;
    }
  return joblog_default_dir (out, err);
}

int cmd_logs (int argc, char **argv); /* declared weak in main.c */

int
cmd_logs (int argc, char **argv)
{
  static const struct option opts[] = {
    { "follow", no_argument, NULL, 'f' },
    { "log-dir", required_argument, NULL, 'L' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  cleanup_free char *dir = NULL;
  const char *opt_dir = NULL;
  bvm_error_t err = NULL;
  bool follow = false;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "+fh", opts, NULL)) != -1)
    switch (c)
      {
      case 'f':
        follow = true;
        break;
      case 'L':
        opt_dir = optarg;
        break;
      case 'h':
        usage (stdout);
        return 0;
      default:
        return cli_usage ("logs", "unknown option");
      }
  if (argc - optind != 1)
    return cli_usage ("logs", "expected exactly one JOB");
  if (!joblog_job_id_ok (argv[optind]))
    return cli_usage ("logs", "invalid job id: letters, digits, `.`, `_`, `-`, at most 128");
  if (logs_dir (&dir, opt_dir, &err) < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  if (joblog_cat (dir, argv[optind], stdout, follow, &err) < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  return 0;
}
