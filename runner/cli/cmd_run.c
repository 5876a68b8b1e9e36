/* cmd_run.c - `buildvm run JOB.json`: one deploy request, end to end */
#include "cli.h"
#include "config.h"
#include "job.h"
#include "log.h"
#include "proc.h"
#include "pipeline.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm run [--config FILE] [--verbose] [--json] JOB.json\n"
                "\n"
                "Run one deploy request (see docs/schemas.md): fetch the commit, build it in a\n"
                "fresh VM, push the app's image and artifacts, and write the job record.\n"
                "\n"
                "  --config FILE  runner configuration (default: built-in defaults)\n"
                "  -v, --verbose  echo the build's console to stderr as it runs\n"
                "  --json         print the job record instead of a summary\n"
                "\n"
                "exit status: 0 success; 2 invalid request or spec; 3 denied by the job's\n"
                "role; 4 the build failed; 5 timeout; 1 anything else.\n");
}

int
cmd_run (int argc, char **argv)
{
  const char *config_path = NULL;
  bool verbose = false, as_json = false;
  struct runner_config *cfg = NULL;
  struct job_request *job = NULL;
  struct pipeline_opts po = { 0 };
  json_t *record = NULL;
  bvm_error_t err = NULL;
  int ret, status;

  const struct opt opts[] = {
    OPT_STR ("config", 'c', &config_path),
    OPT_FLAG ("verbose", 'v', &verbose),
    OPT_FLAG ("json", 0, &as_json),
    OPT_END,
  };
  if (cli_parse (argc, argv, "run", opts, 0, -1, usage, &status))
    return status;
  if (optind != argc - 1)
    return cli_usage ("run", "expected exactly one deploy request file");

  if (job_load_file (&job, argv[optind], &err) < 0)
    return cli_fail ("run", &err, 2);
  if (config_load (&cfg, config_path, &err) < 0)
    {
      job_free (job);
      return cli_fail ("run", &err, 2);
    }
  /* an inflation bomb in a repository fails this job, not the host */
  if (proc_limit_memory (cfg->limits.max_worker_memory_mib, &err) < 0)
    {
      job_free (job);
      config_free (cfg);
      return cli_fail ("run", &err, 2);
    }
  cli_install_cancel ();
  po.cfg = cfg;
  po.attempt = 1;
  po.cancel = &cli_cancel_requested;
  po.echo = verbose ? stderr : NULL;
  ret = pipeline_run (&record, job, &po, &err);
  if (as_json)
    {
      json_dumpf (record, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
      printf ("\n");
    }
  else
    pipeline_print_summary (stdout, record);
  status = 0;
  if (ret < 0)
    {
      status = cli_status_for (&err);
      bvm_error_free (&err);
    }
  json_decref (record);
  job_free (job);
  config_free (cfg);
  return status;
}
