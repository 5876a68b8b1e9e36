/* cmd_status.c - `buildvm status JOB`: one job's queue state and record */
#include "cli.h"
#include "config.h"
#include "jsonx.h"
#include "pipeline.h"
#include "queue.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static void
usage_status (FILE *out)
{
  fprintf (out, "usage: buildvm status [--config FILE] [--json] JOB\n"
                "\nOne job: its state on the queue and, once it ran, its job record.\n");
}

int
cmd_status (int argc, char **argv)
{
  const char *config_path = NULL;
  bool as_json = false;
  struct runner_config *cfg = NULL;
  struct queue *q = NULL;
  json_t *st = NULL, *rec = NULL;
  cleanup_free char *path = NULL;
  char key[JOB_KEY_MAX + 1], app[JOB_APP_MAX + 1], id[JOB_ID_MAX + 1];
  bvm_error_t err = NULL;
  int r, found;

  if (cli_parse_queue_opts (argc, argv, "status", &config_path, &as_json, usage_status, &r))
    return r;
  if (optind != argc - 1)
    return cli_usage ("status", "expected exactly one JOB");
  if (cli_open_queue (&q, &cfg, config_path, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("status", &err, 1);
    }
  found = cli_resolve_job (key, q, cfg, argv[optind], "status");
  if (found < 0)
    {
      queue_close (q);
      config_free (cfg);
      return 2;
    }
  if (found == 0 && queue_get (&st, q, key, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("status", &err, 1);
    }
  /* the pipeline's own record (also for `buildvm run`, which has no queue) */
  if (found == 0 && job_key_split (key, app, id)
      && pipeline_record_path (&path, cfg, app, id, &err) == 0
      && jsonx_parse_file (&rec, path, 16 << 20, &err) < 0)
    bvm_error_free (&err);
  bvm_error_free (&err);
  if (st == NULL && rec == NULL)
    {
      queue_close (q);
      config_free (cfg);
      fprintf (stderr, "buildvm status: no job `%s`\n", argv[optind]);
      return 1;
    }
  if (as_json)
    {
      json_t *out = json_pack ("{s:O?, s:O?}", "queue", st, "record", rec);
      json_dumpf (out, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
      printf ("\n");
      json_decref (out);
    }
  else
    {
      if (st)
        printf ("job %s: %s (attempt %lld%s%s)\n", argv[optind],
                json_string_value (json_object_get (st, "state")),
                (long long) json_integer_value (json_object_get (st, "attempt")),
                json_object_get (st, "reason") ? ", " : "",
                json_object_get (st, "reason") ? json_string_value (json_object_get (st, "reason"))
                                               : "");
      if (rec)
        pipeline_print_summary (stdout, rec);
    }
  json_decref (st);
  json_decref (rec);
  queue_close (q);
  config_free (cfg);
  return 0;
}
