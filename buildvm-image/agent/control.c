/* control.c - parse the job control file written by the runner
 *
 * Format: a sequence of NUL-terminated strings. Each record is a key followed
 * by a fixed number of values for that key (see docs/architecture.md). NUL
 * separation means commands and environment values need no quoting at all.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reader
{
  char *p, *end;
};

static char *
next (struct reader *r)
{
  char *s = r->p, *nul;
  if (r->p >= r->end)
    return NULL;
  nul = memchr (r->p, '\0', (size_t) (r->end - r->p));
  if (nul == NULL)
    return NULL;
  r->p = nul + 1;
  return s;
}

static int
parse_num (const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

int
agent_control_parse (struct agent_job *job, char *data, size_t len, char *msg, size_t msgsz)
{
  struct reader r = { data, data + len };
  bool have_version = false;
  char *key;

  memset (job, 0, sizeof *job);
  job->timeout_s = 3600;
  job->log_max = 16u << 20;
  job->output_max = 0;

  while ((key = next (&r)) != NULL)
    {
      char *v1 = NULL, *v2 = NULL, *v3 = NULL;
#define NEED(var)                                                                                 \
  do                                                                                              \
    {                                                                                             \
      if ((var = next (&r)) == NULL)                                                              \
        {                                                                                         \
          snprintf (msg, msgsz, "control: record `%s` is truncated", key);                        \
          return -1;                                                                              \
        }                                                                                         \
    }                                                                                             \
  while (0)
      if (strcmp (key, PROTO_CTL_VERSION) == 0)
        {
          NEED (v1);
          if (strcmp (v1, PROTO_CONTROL_VERSION) != 0)
            {
              snprintf (msg, msgsz, "control: unsupported version `%.16s`", v1);
              return -1;
            }
          have_version = true;
        }
      else if (strcmp (key, PROTO_CTL_TIMEOUT) == 0 || strcmp (key, PROTO_CTL_LOG_MAX) == 0
               || strcmp (key, PROTO_CTL_OUTPUT_MAX) == 0)
        {
          uint64_t n;
          NEED (v1);
          if (parse_num (v1, &n) < 0)
            {
              snprintf (msg, msgsz, "control: `%s` is not a number", key);
              return -1;
            }
          if (strcmp (key, PROTO_CTL_TIMEOUT) == 0)
            job->timeout_s = n;
          else if (strcmp (key, PROTO_CTL_LOG_MAX) == 0)
            job->log_max = n;
          else
            job->output_max = n;
        }
      else if (strcmp (key, PROTO_CTL_ENV) == 0)
        {
          NEED (v1);
          if (strchr (v1, '=') == NULL || v1[0] == '=' || job->n_env >= AGENT_MAX_ENV)
            {
              snprintf (msg, msgsz, "control: bad or too many `env` records");
              return -1;
            }
          job->env[job->n_env++] = v1;
        }
      else if (strcmp (key, PROTO_CTL_STEP) == 0)
        {
          struct agent_step *s;
          NEED (v1);
          NEED (v2);
          NEED (v3);
          if (job->n_steps >= AGENT_MAX_STEPS)
            {
              snprintf (msg, msgsz, "control: more than %d steps", AGENT_MAX_STEPS);
              return -1;
            }
          s = &job->steps[job->n_steps++];
          if (parse_num (v1, &s->timeout_s) < 0)
            {
              snprintf (msg, msgsz, "control: step timeout is not a number");
              return -1;
            }
          s->name = v2;
          s->cmd = v3;
        }
      else if (strcmp (key, PROTO_CTL_IMAGE) == 0)
        {
          NEED (v1);
          job->image_from = v1;
        }
      else if (strcmp (key, PROTO_CTL_ARTIFACT) == 0)
        {
          NEED (v1);
          if (job->n_artifacts >= AGENT_MAX_OUTPUTS)
            {
              snprintf (msg, msgsz, "control: too many artifact patterns");
              return -1;
            }
          job->artifacts[job->n_artifacts++] = v1;
        }
      else if (strcmp (key, PROTO_CTL_SECRET_ENV) == 0)
        {
          NEED (v1);
          NEED (v2);
          if (job->n_secret_env >= AGENT_MAX_SECRETS)
            {
              snprintf (msg, msgsz, "control: too many secret_env records");
              return -1;
            }
          job->secret_env[job->n_secret_env].var = v1;
          job->secret_env[job->n_secret_env].name = v2;
          job->n_secret_env++;
        }
      else if (strcmp (key, PROTO_CTL_DOCKERFILE) == 0)
        {
          const char *why;
          NEED (v1);
          NEED (v2);
          NEED (v3);
          if (job->is_dockerfile)
            {
              snprintf (msg, msgsz, "control: more than one `dockerfile` record");
              return -1;
            }
          if ((why = proto_df_path_problem (v1)) != NULL
              || (why = proto_df_path_problem (v2)) != NULL
              || (v3[0] && (why = proto_df_name_problem (v3)) != NULL))
            {
              snprintf (msg, msgsz, "control: `dockerfile` record: a value %s", why);
              return -1;
            }
          job->is_dockerfile = true;
          job->dockerfile.path = v1;
          job->dockerfile.context = v2;
          job->dockerfile.target = v3;
        }
      else if (strcmp (key, PROTO_CTL_BUILD_ARG) == 0)
        {
          struct agent_dockerfile *df = &job->dockerfile;
          const char *why;
          NEED (v1);
          NEED (v2);
          if (df->n_args >= PROTO_DF_MAX_BUILD_ARGS)
            {
              snprintf (msg, msgsz, "control: more than %d build args", PROTO_DF_MAX_BUILD_ARGS);
              return -1;
            }
          if ((why = proto_df_arg_name_problem (v1)) != NULL)
            {
              snprintf (msg, msgsz, "control: build arg `%.64s` %s", v1, why);
              return -1;
            }
          if (strlen (v2) > PROTO_DF_ARG_VALUE_MAX)
            {
              snprintf (msg, msgsz, "control: build arg `%.64s` is too long", v1);
              return -1;
            }
          for (size_t i = 0; i < df->n_args; i++)
            if (strcmp (df->args[i].name, v1) == 0)
              {
                snprintf (msg, msgsz, "control: build arg `%.64s` is given twice", v1);
                return -1;
              }
          df->args[df->n_args].name = v1;
          df->args[df->n_args].value = v2;
          df->n_args++;
        }
      else if (strcmp (key, PROTO_CTL_BASE) == 0)
        {
          struct agent_dockerfile *df = &job->dockerfile;
          const char *why;
          NEED (v1);
          NEED (v2);
          if (df->n_bases >= PROTO_DF_MAX_BASES)
            {
              snprintf (msg, msgsz, "control: more than %d base images", PROTO_DF_MAX_BASES);
              return -1;
            }
          if ((why = proto_df_name_problem (v1)) != NULL
              || (why = proto_df_image_problem (v2)) != NULL)
            {
              snprintf (msg, msgsz, "control: base image `%.64s`: a value %s", v1, why);
              return -1;
            }
          for (size_t i = 0; i < df->n_bases; i++)
            if (strcmp (df->bases[i].ref, v1) == 0)
              {
                snprintf (msg, msgsz, "control: base image `%.64s` is given twice", v1);
                return -1;
              }
          df->bases[df->n_bases].ref = v1;
          df->bases[df->n_bases].name = v2;
          df->n_bases++;
        }
      else
        {
          snprintf (msg, msgsz, "control: unknown record `%.32s`", key);
          return -1;
        }
#undef NEED
    }
  if (r.p != r.end)
    {
      snprintf (msg, msgsz, "control: trailing bytes without a terminating NUL");
      return -1;
    }
  if (!have_version)
    {
      snprintf (msg, msgsz, "control: no version record");
      return -1;
    }
  /* a Dockerfile job is that and nothing else; a steps job has none of it */
  if (job->is_dockerfile && (job->n_steps > 0 || job->image_from != NULL))
    {
      snprintf (msg, msgsz, "control: a Dockerfile job with steps or an image directory");
      return -1;
    }
  if (!job->is_dockerfile && (job->dockerfile.n_args > 0 || job->dockerfile.n_bases > 0))
    {
      snprintf (msg, msgsz, "control: build args or base images without a `dockerfile` record");
      return -1;
    }
  return 0;
}
