/* cmd_jobs.c - `buildvm jobs`, `buildvm status JOB`, `buildvm cancel JOB` */
#include "cli.h"
#include "config.h"
#include "jsonx.h"
#include "pipeline.h"
#include "queue.h"
#include "util.h"

#include <getopt.h>
#include <glob.h>
#include <limits.h>
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

/* A job is named `APP/ID` (or its key `APP+ID`), or by its id alone when
 * only one app has a job of that id, in the queue or among the records: job
 * ids are unique per app only. 0 with *key set, 1 when no app has it, -1
 * (with a message printed) when the argument is invalid or ambiguous. */
static int
resolve_job (char key[JOB_KEY_MAX + 1], struct queue *q, const struct runner_config *cfg,
             const char *arg, const char *verb)
{
  const char *slash = strchr (arg, '/');
  char apps[8][JOB_APP_MAX + 1];
  size_t n_apps = 0, i;
  json_t *list = NULL, *v, *e;
  const char *k;
  bvm_error_t err = NULL;
  char pat[PATH_MAX];
  glob_t g;

  if (slash != NULL)
    {
      char app[JOB_APP_MAX + 1];
      size_t n = (size_t) (slash - arg);
      if (n == 0 || n > JOB_APP_MAX)
        return cli_usage (verb, "`%.64s` is not APP/ID", arg), -1;
      memcpy (app, arg, n);
      app[n] = '\0';
      if (job_key (key, app, slash + 1) < 0)
        return cli_usage (verb, "`%.64s` is not APP/ID with a valid app and job id", arg), -1;
      return 0;
    }
  if (job_key_valid (arg))
    {
      snprintf (key, JOB_KEY_MAX + 1, "%s", arg);
      return 0;
    }
  if (!job_id_valid (arg))
    return cli_usage (verb, "`%.64s` is not a valid job id", arg), -1;

#define ADD_APP(a)                                                                                \
  do                                                                                              \
    {                                                                                             \
      bool seen_ = false;                                                                         \
      for (size_t j_ = 0; j_ < n_apps; j_++)                                                      \
        seen_ |= strcmp (apps[j_], (a)) == 0;                                                     \
      if (!seen_ && n_apps < ARRAY_SIZE (apps) && job_app_id_valid (a))                           \
        snprintf (apps[n_apps++], sizeof apps[0], "%s", (a));                                     \
    }                                                                                             \
  while (0)
  /* the queue: every state, every app */
  if (queue_list (&list, q, 100000, &err) == 0)
    {
      json_object_foreach (list, k, v)
        json_array_foreach (v, i, e)
        {
          const char *id = json_string_value (json_object_get (e, "job"));
          const char *app = json_string_value (json_object_get (e, "app"));
          if (id && app && strcmp (id, arg) == 0)
            ADD_APP (app);
        }
      json_decref (list);
    }
  else
    bvm_error_free (&err);
  /* the records, also of `buildvm run` jobs that never were on the queue */
  if (snprintf_checked (pat, sizeof pat, "%s/jobs/*/%s.json", cfg->state_dir, arg) == 0
      && glob (pat, GLOB_NOSORT, NULL, &g) == 0)
    {
      for (i = 0; i < g.gl_pathc; i++)
        {
          char *end = strrchr (g.gl_pathv[i], '/'), *start;
          if (end == NULL)
            continue;
          *end = '\0';
          start = strrchr (g.gl_pathv[i], '/');
          if (start != NULL)
            ADD_APP (start + 1);
        }
      globfree (&g);
    }
#undef ADD_APP
  if (n_apps == 0)
    return 1;
  if (n_apps > 1)
    {
      fprintf (stderr, "buildvm %s: job id `%s` is ambiguous: apps", verb, arg);
      for (i = 0; i < n_apps; i++)
        fprintf (stderr, "%s `%s`", i ? "," : "", apps[i]);
      fprintf (stderr, " have a job of that id; name it as APP/%s\n", arg);
      return -1;
    }
  job_key (key, apps[0], arg);
  return 0;
}

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

  if ((r = parse_common (argc, argv, "status", &config_path, &as_json, usage_status)) != 0)
    return r == 1 ? 0 : r;
  if (optind != argc - 1)
    return cli_usage ("status", "expected exactly one JOB");
  if (open_queue (&q, &cfg, config_path, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("status", &err, 1);
    }
  found = resolve_job (key, q, cfg, argv[optind], "status");
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
  char key[JOB_KEY_MAX + 1];
  int r;

  if ((r = parse_common (argc, argv, "cancel", &config_path, &as_json, usage_cancel)) != 0)
    return r == 1 ? 0 : r;
  if (optind != argc - 1)
    return cli_usage ("cancel", "expected exactly one JOB");
  if (open_queue (&q, &cfg, config_path, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("cancel", &err, cli_status_for (&err));
    }
  if ((r = resolve_job (key, q, cfg, argv[optind], "cancel")) != 0)
    {
      queue_close (q);
      config_free (cfg);
      if (r > 0)
        fprintf (stderr, "buildvm cancel: no job `%s` is queued or running\n", argv[optind]);
      return r < 0 ? 2 : 1;
    }
  if (queue_cancel (&was_running, q, key, &err) < 0)
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
