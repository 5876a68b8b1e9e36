/* cmd_jobs.c - `buildvm jobs`: what is on the queue, and what this host ran */
#include "cli.h"
#include "config.h"
#include "jsonx.h"
#include "queue.h"
#include "util.h"

#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORDS_LISTED QUEUE_LIST_DEFAULT /* the newest records shown */

static void
usage_jobs (FILE *out)
{
  fprintf (out,
           "usage: buildvm jobs [--config FILE] [--json]\n"
           "\nWhat is queued, running, done and dead on the configured queue, and the\n"
           "jobs this host ran (its job records under state_dir, `buildvm run` jobs too;\n"
           "the newest %d).\n",
           RECORDS_LISTED);
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

struct rec_ent
{
  char *path;
  struct timespec mtime;
};

static int
rec_newer (const void *a, const void *b)
{
  const struct rec_ent *x = a, *y = b;
  if (x->mtime.tv_sec != y->mtime.tv_sec)
    return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
  if (x->mtime.tv_nsec != y->mtime.tv_nsec)
    return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
  return strcmp (x->path, y->path);
}

/* The newest job records of this host (<state_dir>/jobs/APP/ID.json), newest
 * first: [{"app", "job", "attempt", "status", "started_at", "finished_at"}].
 * A record that does not parse is listed with status "unreadable". */
static json_t *
list_records (const struct runner_config *cfg)
{
  char pat[PATH_MAX];
  json_t *out = json_array ();
  struct rec_ent *e;
  size_t i, n = 0;
  glob_t g;

  if (out == NULL || snprintf_checked (pat, sizeof pat, "%s/jobs/*/*.json", cfg->state_dir) < 0
      || glob (pat, GLOB_NOSORT, NULL, &g) != 0)
    return out;
  e = calloc (g.gl_pathc, sizeof *e);
  for (i = 0; e != NULL && i < g.gl_pathc; i++)
    {
      struct stat st;
      if (lstat (g.gl_pathv[i], &st) == 0 && S_ISREG (st.st_mode))
        e[n++] = (struct rec_ent){ g.gl_pathv[i], st.st_mtim };
    }
  if (n > 1)
    qsort (e, n, sizeof *e, rec_newer);
  for (i = 0; i < n && i < RECORDS_LISTED; i++)
    {
      char app[JOB_APP_MAX + 1], id[JOB_ID_MAX + 1];
      const char *base = strrchr (e[i].path, '/'), *dir;
      json_t *rec = NULL, *item;
      bvm_error_t err = NULL;
      size_t len;

      /* the names come from the path: APP/ID.json */
      if (base == NULL || base == e[i].path)
        continue;
      for (dir = base - 1; dir > e[i].path && dir[-1] != '/'; dir--)
        ;
      len = strlen (base + 1) - strlen (".json");
      if ((size_t) (base - dir) > JOB_APP_MAX || len > JOB_ID_MAX)
        continue;
      snprintf (app, sizeof app, "%.*s", (int) (base - dir), dir);
      snprintf (id, sizeof id, "%.*s", (int) len, base + 1);
      if (job_app_id_problem (app) != NULL || job_id_problem (id) != NULL)
        continue;
      if (jsonx_parse_file (&rec, e[i].path, QUEUE_RECORD_MAX * 16, &err) < 0
          || !json_is_object (rec))
        {
          bvm_error_free (&err);
          item = json_pack ("{s:s, s:s, s:s}", "app", app, "job", id, "status", "unreadable");
        }
      else
        item = json_pack ("{s:s, s:s, s:O?, s:O?, s:O?, s:O?}", "app", app, "job", id, "attempt",
                          json_object_get (rec, "attempt"), "status",
                          json_object_get (rec, "status"), "started_at",
                          json_object_get (rec, "started_at"), "finished_at",
                          json_object_get (rec, "finished_at"));
      json_decref (rec);
      if (item != NULL)
        json_array_append_new (out, item);
    }
  free (e);
  globfree (&g);
  return out;
}

/* Whether the queue's listing already has APP/ID (a record of a job that
 * went through the queue is shown there). */
static bool
listed (const json_t *list, const char *app, const char *id)
{
  const char *k;
  const json_t *arr, *v;
  size_t i;

  json_object_foreach ((json_t *) list, k, arr)
    {
      if (strcmp (k, "records") == 0)
        continue;
      json_array_foreach (arr, i, v)
        {
          const char *a = json_string_value (json_object_get (v, "app"));
          const char *j = json_string_value (json_object_get (v, "job"));
          if (a && j && strcmp (a, app) == 0 && strcmp (j, id) == 0)
            return true;
        }
    }
  return false;
}

static const char *
str_or (const json_t *v, const char *dflt)
{
  const char *s = json_string_value (v);
  return s ? s : dflt;
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
  json_object_set_new (list, "records", list_records (cfg));
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
          /* since the attempt began (its lease is renewed while it runs) */
          print_time (json_object_get (v, "started_at"));
          printf (" owner %s%s\n", str_or (json_object_get (v, "owner"), "?"),
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
      /* what this host ran that the queue does not show: `buildvm run`
       * jobs, and queue entries gone from its lists */
      json_array_foreach (json_object_get (list, "records"), i, v)
        {
          const char *app = json_string_value (json_object_get (v, "app"));
          const char *id = json_string_value (json_object_get (v, "job"));
          if (listed (list, app, id))
            continue;
          printf ("%-8s %-40s %-8lld %-24s %s\n", "ran", job_name (name, sizeof name, v),
                  (long long) json_integer_value (json_object_get (v, "attempt")),
                  str_or (json_object_get (v, "finished_at"), "-"),
                  str_or (json_object_get (v, "status"), "?"));
        }
    }
  json_decref (list);
  queue_close (q);
  config_free (cfg);
  return 0;
}
