/* cmd_jobs.c - `buildvm jobs`: what is on the queue */
#include "cli.h"
#include "config.h"
#include "jsonx.h"
#include "queue.h"
#include "util.h"

#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static void
usage_jobs (FILE *out)
{
  fprintf (out, "usage: buildvm jobs [--config FILE] [--json]\n"
                "\nWhat is queued, running, done and dead on the configured queue.\n");
}

/* "APP/ID", or the name of a dead letter that has no key */
static const char *
job_name (char *buf, size_t size, const json_t *v)
{
  const char *app = json_string_value (json_object_get (v, "app"));
  const char *id = json_string_value (json_object_get (v, "job"));
  if (app != NULL)
    snprintf (buf, size, "%s/%s", app, id ? id : "?");
  else
    snprintf (buf, size, "%s", id ? id : "?");
  return buf;
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
  char name[JOB_APP_MAX + JOB_ID_MAX + 8];
  size_t i;
  int r;

  if (cli_parse_queue_opts (argc, argv, "jobs", &config_path, &as_json, usage_jobs, &r))
    return r;
  if (optind != argc)
    return cli_usage ("jobs", "unexpected argument");
  if (cli_open_queue (&q, &cfg, config_path, &err) < 0 || queue_list (&list, q, 0, &err) < 0)
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
          printf ("%-8s %-40s %-8lld ", "queued", job_name (name, sizeof name, v),
                  (long long) json_integer_value (json_object_get (v, "attempts")));
          print_time (json_object_get (v, "enqueued_at"));
          printf ("\n");
        }
      json_array_foreach (json_object_get (list, "running"), i, v)
        {
          printf ("%-8s %-40s %-8lld ", "running", job_name (name, sizeof name, v),
                  (long long) json_integer_value (json_object_get (v, "attempt")));
          print_time (json_object_get (v, "lease_until"));
          printf (" owner %s%s\n", json_string_value (json_object_get (v, "owner")),
                  json_is_true (json_object_get (v, "cancel")) ? " (cancel requested)" : "");
        }
      json_array_foreach (json_object_get (list, "done"), i, v)
        {
          json_t *rec = json_object_get (v, "record");
          printf ("%-8s %-40s %-8lld ", "done", job_name (name, sizeof name, v),
                  (long long) json_integer_value (json_object_get (v, "attempt")));
          print_time (json_object_get (v, "finished_at"));
          printf (" %s\n", rec ? json_string_value (json_object_get (rec, "status")) : "");
        }
      json_array_foreach (json_object_get (list, "dead"), i, v)
        {
          printf ("%-8s %-40s %-8lld ", "dead", job_name (name, sizeof name, v),
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
