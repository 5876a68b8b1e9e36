/* cmd_jobs.c - `buildvm jobs`, `buildvm status JOB`, `buildvm cancel JOB` */
#include "cli.h"
#include "config.h"
#include "jsonx.h"
#include "pipeline.h"
#include "queue.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static int
open_queue (struct queue **q, struct runner_config **cfg, const char *config_path,
            bvm_error_t *err)
{
  if (config_load (cfg, config_path, err) < 0)
    return -1;
  return queue_open (q, (*cfg)->queue, NULL, err);
}

/* common option parsing: [--config FILE] [--json] ARGS... */
static int
parse_common (int argc, char **argv, const char *verb, const char **config_path, bool *as_json,
              void (*usage) (FILE *))
{
  static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                        { "json", no_argument, NULL, 'j' },
                                        { "help", no_argument, NULL, 'h' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1)
    switch (c)
      {
      case 'c': *config_path = optarg; break;
      case 'j': *as_json = true; break;
      case 'h': usage (stdout); return 1;
      default: return cli_usage (verb, "unknown option");
      }
  return 0;
}

static void
usage_jobs (FILE *out)
{
  fprintf (out, "usage: buildvm jobs [--config FILE] [--json]\n"
                "\nWhat is queued, running, done and dead on the configured queue.\n");
}

static void
print_time (const json_t *ms)
{
  char ts[40];
  if (json_is_integer (ms))
    {
      format_rfc3339 (ts, sizeof ts, json_integer_value (ms) / 1000);
      printf ("%s", ts);
    }
  else
    printf ("-");
}

int
cmd_jobs (int argc, char **argv)
{
  const char *config_path = NULL;
  bool as_json = false;
  struct runner_config *cfg = NULL;
  struct queue *q = NULL;
  json_t *list = NULL, *v;
  bvm_error_t err = NULL;
  size_t i;
  int r;

  if ((r = parse_common (argc, argv, "jobs", &config_path, &as_json, usage_jobs)) != 0)
    return r == 1 ? 0 : r;
  if (optind != argc)
    return cli_usage ("jobs", "unexpected argument");
  if (open_queue (&q, &cfg, config_path, &err) < 0
      || queue_list (&list, q, 0, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("jobs", &err, 1);
    }
  if (as_json)
    {
      json_dumpf (list, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
      printf ("\n");
    }
  else
    {
      printf ("%-8s %-40s %-8s %-24s %s\n", "STATE", "JOB", "ATTEMPT", "SINCE", "DETAIL");
      json_array_foreach (json_object_get (list, "queued"), i, v)
        {
          printf ("%-8s %-40s %-8lld ", "queued", json_string_value (json_object_get (v, "job")),
                  (long long) json_integer_value (json_object_get (v, "attempts")));
          print_time (json_object_get (v, "enqueued_at"));
          printf ("\n");
        }
      json_array_foreach (json_object_get (list, "running"), i, v)
        {
          printf ("%-8s %-40s %-8lld ", "running", json_string_value (json_object_get (v, "job")),
                  (long long) json_integer_value (json_object_get (v, "attempt")));
          print_time (json_object_get (v, "lease_until"));
          printf (" owner %s%s\n", json_string_value (json_object_get (v, "owner")),
                  json_is_true (json_object_get (v, "cancel")) ? " (cancel requested)" : "");
        }
      json_array_foreach (json_object_get (list, "done"), i, v)
        {
          json_t *rec = json_object_get (v, "record");
          printf ("%-8s %-40s %-8lld ", "done", json_string_value (json_object_get (v, "job")),
                  (long long) json_integer_value (json_object_get (v, "attempt")));
          print_time (json_object_get (v, "finished_at"));
          printf (" %s\n", rec ? json_string_value (json_object_get (rec, "status")) : "");
        }
      json_array_foreach (json_object_get (list, "dead"), i, v)
        {
          printf ("%-8s %-40s %-8lld ", "dead", json_string_value (json_object_get (v, "job")),
                  (long long) json_integer_value (json_object_get (v, "attempt")));
          print_time (json_object_get (v, "at"));
          printf (" %s\n", json_string_value (json_object_get (v, "reason")));
        }
    }
  json_decref (list);
  queue_close (q);
  config_free (cfg);
  return 0;
}

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
  bvm_error_t err = NULL;
  int r;

  if ((r = parse_common (argc, argv, "status", &config_path, &as_json, usage_status)) != 0)
    return r == 1 ? 0 : r;
  if (optind != argc - 1)
    return cli_usage ("status", "expected exactly one JOB");
  if (job_id_problem (argv[optind]) != NULL)
    return cli_usage ("status", "`%.64s` is not a valid job id", argv[optind]);
  if (open_queue (&q, &cfg, config_path, &err) < 0
      || queue_get (&st, q, argv[optind], &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("status", &err, 1);
    }
  /* the pipeline's own record (also for `buildvm run`, which has no queue) */
  if (pipeline_record_path (&path, cfg, argv[optind], &err) == 0
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

static void
usage_cancel (FILE *out)
{
  fprintf (out, "usage: buildvm cancel [--config FILE] JOB\n"
                "\nCancel a queued job (it is dead-lettered at once) or a running one (its\n"
                "runner stops the VM, removes its files and dead-letters it).\n");
}

int
cmd_cancel (int argc, char **argv)
{
  const char *config_path = NULL;
  bool as_json = false, was_running = false;
  struct runner_config *cfg = NULL;
  struct queue *q = NULL;
  bvm_error_t err = NULL;
  int r;

  if ((r = parse_common (argc, argv, "cancel", &config_path, &as_json, usage_cancel)) != 0)
    return r == 1 ? 0 : r;
  if (optind != argc - 1)
    return cli_usage ("cancel", "expected exactly one JOB");
  if (job_id_problem (argv[optind]) != NULL)
    return cli_usage ("cancel", "`%.64s` is not a valid job id", argv[optind]);
  if (open_queue (&q, &cfg, config_path, &err) < 0
      || queue_cancel (&was_running, q, argv[optind], &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("cancel", &err, cli_status_for (&err));
    }
  printf ("%s: %s\n", argv[optind],
          was_running ? "cancel requested: its runner stops it at its next heartbeat"
                      : "canceled (it had not started)");
  queue_close (q);
  config_free (cfg);
  return 0;
}
