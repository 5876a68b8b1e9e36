/* cli_queue.c - what the queue verbs (jobs, status, cancel) share */
#include "cli.h"
#include "config.h"
#include "job.h"
#include "queue.h"
#include "util.h"

#include <glob.h>
#include <limits.h>
#include <string.h>

#include <stdio.h>

int
cli_open_queue (struct queue **q, struct runner_config **cfg, const char *config_path,
                bvm_error_t *err)
{
  if (config_load (cfg, config_path, err) < 0)
    return -1;
  return queue_open (q, (*cfg)->queue, NULL, err);
}

int
cli_parse_queue_opts (int argc, char **argv, const char *verb, const char **config_path,
                      bool *as_json, void (*usage) (FILE *), int *status)
{
  const struct opt opts[] = {
    OPT_STR ("config", 0, config_path),
    OPT_FLAG ("json", 0, as_json),
    OPT_END,
  };
  return cli_parse (argc, argv, verb, opts, 0, -1, usage, status);
}

/* A job is named `APP/ID` (or its key `APP+ID`), or by its id alone when
 * only one app has a job of that id, in the queue or among the records: job
 * ids are unique per app only. 0 with *key set, 1 when no app has it, -1
 * (with a message printed) when the argument is invalid or ambiguous. */
int
cli_resolve_job (char key[JOB_KEY_MAX + 1], struct queue *q, const struct runner_config *cfg,
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
  if (job_key_problem (arg) == NULL)
    {
      snprintf (key, JOB_KEY_MAX + 1, "%s", arg);
      return 0;
    }
  if (job_id_problem (arg) != NULL)
    return cli_usage (verb, "`%.64s` is not a valid job id", arg), -1;

#define ADD_APP(a)                                                                                \
  do                                                                                              \
    {                                                                                             \
      bool seen_ = false;                                                                         \
      for (size_t j_ = 0; j_ < n_apps; j_++)                                                      \
        seen_ |= strcmp (apps[j_], (a)) == 0;                                                     \
      if (!seen_ && n_apps < ARRAY_SIZE (apps) && job_app_id_problem (a) == NULL)                 \
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
