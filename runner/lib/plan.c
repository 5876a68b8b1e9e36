/* plan.c - a job's plan, see plan.h */
#include "plan.h"
#include "buf.h"
#include "job.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A Dockerfile job's scratch disk holds the base images' layers and the
 * builder's storage besides the source: at least this much unless the
 * spec says (it is sparse: only what is written takes space). */
#define PLAN_DOCKERFILE_DISK_MIB 4096

/* --- resources ----------------------------------------------------------------------- */

static int
resolve_one (uint64_t *out, uint64_t asked, uint64_t def, uint64_t limit, const char *field,
             const char *limit_name, bvm_error_t *err)
{
  if (asked == 0)
    {
      *out = def;
      return 0;
    }
  if (asked > limit)
    return bvm_error_code (
        err, BVM_E_INVALID, 0,
        "`buildvm.json`: %s %llu exceeds the runner limit of %llu (`limits.%s`)", field,
        (unsigned long long) asked, (unsigned long long) limit, limit_name);
  *out = asked;
  return 0;
}

/* A Dockerfile job's default disk: the configured default, at least
 * PLAN_DOCKERFILE_DISK_MIB, never above the limit */
static uint64_t
default_disk (const struct runner_config *c, const struct build_spec *s)
{
  uint64_t d = c->defaults.disk_mib;
  if (s != NULL && s->dockerfile != NULL && d < PLAN_DOCKERFILE_DISK_MIB)
    d = PLAN_DOCKERFILE_DISK_MIB < c->limits.max_disk_mib ? PLAN_DOCKERFILE_DISK_MIB
                                                          : c->limits.max_disk_mib;
  return d;
}

int
plan_resolve_resources (struct job_resources *out, const struct runner_config *c,
                        const struct build_spec *s, bvm_error_t *err)
{
  static const struct spec_resources none = { 0, 0, 0, 0 };
  const struct spec_resources *r = s ? &s->resources : &none;
  struct job_resources res;
  int ret;

  ret = resolve_one (&res.vcpus, r->vcpus, c->defaults.vcpus, c->limits.max_vcpus,
                     "resources.vcpus", "max_vcpus", err);
  if (ret == 0)
    ret = resolve_one (&res.memory_mib, r->memory_mib, c->defaults.memory_mib,
                       c->limits.max_memory_mib, "resources.memory_mib", "max_memory_mib", err);
  if (ret == 0)
    ret = resolve_one (&res.disk_mib, r->disk_mib, default_disk (c, s), c->limits.max_disk_mib,
                       "resources.disk_mib", "max_disk_mib", err);
  if (ret == 0)
    ret = resolve_one (&res.timeout, r->timeout, c->defaults.build_seconds,
                       c->limits.max_build_seconds, "resources.timeout", "max_build_seconds", err);
  for (size_t i = 0; ret == 0 && s != NULL && i < s->n_steps; i++)
    if (s->steps[i].timeout > c->limits.max_build_seconds)
      {
        char field[64];
        uint64_t ignored;
        snprintf (field, sizeof field, "steps[%zu].timeout", i);
        ret = resolve_one (&ignored, s->steps[i].timeout, 0, c->limits.max_build_seconds, field,
                           "max_build_seconds", err);
      }
  if (ret < 0)
    return ret;
  *out = res;
  return 0;
}

/* --- the plan ------------------------------------------------------------------------- */

void
plan_dispose (struct job_plan *p)
{
  if (p == NULL)
    return;
  image_free (p->img);
  for (size_t i = 0; i < p->n_bases; i++)
    {
      free (p->bases[i].name);
      free (p->bases[i].repository);
      free (p->bases[i].reference);
    }
  free (p->bases);
  free (p->urls);
  dockerfile_free (p->dockerfile);
  free (p->dest_repo);
  free (p->dest_tag);
  config_strv_free (p->extra_tags);
  memset (p, 0, sizeof *p);
}

int
plan_make (struct job_plan *out, const struct runner_config *cfg, const struct job_request *job,
           const struct build_spec *spec, bvm_error_t *err)
{
  struct job_plan p = { 0 };
  int ret;

  ret = plan_resolve_resources (&p.res, cfg, spec, err);
  if (ret == 0)
    {
      ret = image_load (&p.img, cfg->images.dir, spec->profile, err);
      /* a profile no image has is the spec's mistake: say which field */
      if (ret < 0 && bvm_error_get_code (err) == BVM_E_INVALID
          && !image_present (cfg->images.dir, spec->profile))
        bvm_error_wrap (err, "`buildvm.json`: field `profile`");
    }
  /* Destinations come from the job and the runner's config, never from
   * anything the build produces; the role is the second wall behind that. */
  if (ret == 0 && spec->image)
    ret = config_expand_destination (&p.dest_repo, &p.dest_tag, cfg, job, err);
  if (ret == 0 && spec->image)
    ret = config_expand_extra_tags (&p.extra_tags, &p.n_extra_tags, cfg, job, err);
  if (ret == 0
      && snprintf_checked (p.artifact_prefix, sizeof p.artifact_prefix, "apps/%s/%s/", job->app,
                           job->commit)
             < 0)
    ret = bvm_error (err, ENAMETOOLONG, "artifact prefix");
  if (ret < 0)
    {
      plan_dispose (&p);
      return ret;
    }
  p.secrets = spec->secrets;
  p.n_secrets = spec->n_secrets;
  *out = p;
  return 0;
}

/* --- a Dockerfile job ----------------------------------------------------------------- */

static const char *const secret_words[] = { "TOKEN",      "SECRET",     "PASSWORD",
                                            "PASSWD",     "API_KEY",    "PRIVATE_KEY",
                                            "ACCESS_KEY", "CREDENTIAL", NULL };

bool
plan_name_looks_secret (const char *text)
{
  for (size_t i = 0; secret_words[i]; i++)
    if (strcasestr (text, secret_words[i]) != NULL)
      return true;
  return false;
}

static int dfail (bvm_error_t *err, int code, const struct build_spec *spec, unsigned line,
                  const char *fmt, ...) __attribute__ ((format (printf, 5, 6)));

/* "Dockerfile:LINE: ..." as the Dockerfile's parser says it */
static int
dfail (bvm_error_t *err, int code, const struct build_spec *spec, unsigned line, const char *fmt,
       ...)
{
  char msg[1024], shown[JOB__SHOW_SIZE];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, code, 0, "%s:%u: %s",
                         job__show (shown, sizeof shown, spec->dockerfile->path), line, msg);
}

/* The host[:port] of registry.url ("http://127.0.0.1:5000" -> "127.0.0.1:5000") */
static const char *
registry_host (const struct runner_config *cfg, char *buf, size_t size)
{
  const char *u = cfg->registry.url ? cfg->registry.url : "";
  const char *p = strstr (u, "://");
  size_t n;

  p = p ? p + 3 : u;
  n = strcspn (p, "/");
  snprintf (buf, size, "%.*s", (int) n, p);
  return buf;
}

/* what the map maps, for the error message: "node:18, node:18-slim, ..." */
static void
map_keys (char *out, size_t size, const struct runner_config *cfg)
{
  size_t at = 0;

  out[0] = '\0';
  for (size_t i = 0; i < cfg->dockerfile.n_from_map; i++)
    {
      const char *k = cfg->dockerfile.from_map[i].key;
      int n;
      if (at + strlen (k) + 8 >= size)
        {
          snprintf (out + at, size - at, ", ...");
          return;
        }
      n = snprintf (out + at, size - at, "%s%s", i ? ", " : "", k);
      at += (size_t) n;
    }
  if (cfg->dockerfile.n_from_map == 0)
    snprintf (out, size, "nothing");
}

int
plan_resolve_base (struct plan_base *out, const struct runner_config *cfg, const char *ref,
                   bvm_error_t *err)
{
  const struct config_dockerfile *dc = &cfg->dockerfile;
  const struct config_from_map_entry *hit = NULL;
  struct dockerfile_ref r;
  char host[CONFIG_URL_MAX + 1], shown[JOB__SHOW_SIZE], keys[512];
  const char *why = dockerfile_ref_parse (&r, ref), *repo = NULL, *reference = NULL;
  bool local = false;

  if (why != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: the image reference %s",
                           job__show (shown, sizeof shown, ref), why);
  /* already in the runner's registry: the role decides, no mapping */
  if (r.domain_given && strcasecmp (r.domain, registry_host (cfg, host, sizeof host)) == 0)
    local = true;
  for (size_t i = 0;
       !local && !r.domain_given && strchr (ref, '/') != NULL && i < dc->n_local_prefixes; i++)
    if (strncmp (r.path, dc->local_prefixes[i], strlen (dc->local_prefixes[i])) == 0)
      local = true;
  if (local)
    {
      repo = r.path;
      reference = r.digest[0] ? r.digest : r.tag;
    }
  else
    {
      /* an exact key first, then a `name:*` one */
      char bare[sizeof r.name];
      if (snprintf_checked (bare, sizeof bare, "%s/%s:latest", r.domain, r.path) < 0)
        bare[0] = '\0';
      for (size_t i = 0; hit == NULL && r.digest[0] == '\0' && i < dc->n_from_map; i++)
        if (!dc->from_map[i].any_tag && strcmp (dc->from_map[i].name, r.name) == 0)
          hit = &dc->from_map[i];
      for (size_t i = 0; hit == NULL && r.digest[0] == '\0' && i < dc->n_from_map; i++)
        if (dc->from_map[i].any_tag && strcmp (dc->from_map[i].name, bare) == 0)
          hit = &dc->from_map[i];
      if (hit == NULL)
        {
          map_keys (keys, sizeof keys, cfg);
          if (r.digest[0] != '\0')
            return bvm_error_code (
                err, BVM_E_INVALID, 0,
                "`%s` is not an image this runner provides: a digest of another registry's "
                "image cannot be mapped (name a tag that dockerfile.from_map maps: %s)",
                job__show (shown, sizeof shown, ref), keys);
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "`%s` is not an image this runner provides "
                                 "(dockerfile.from_map maps %s)",
                                 job__show (shown, sizeof shown, ref), keys);
        }
      repo = hit->repository;
      reference = hit->tag ? hit->tag : r.tag;
    }
  memset (out, 0, sizeof *out);
  out->mapped = !local;
  if ((out->name = strdup (r.name)) == NULL || (out->repository = strdup (repo)) == NULL
      || (out->reference = strdup (reference)) == NULL)
    {
      free (out->name), free (out->repository), free (out->reference);
      memset (out, 0, sizeof *out);
      return bvm_error (err, ENOMEM, "resolving a base image");
    }
  return 0;
}

/* http(s)://host[:port]/... -> host and port (80, 443 by default) */
static int
parse_url (struct plan_url *u, const struct build_spec *spec, bvm_error_t *err)
{
  const char *url = u->url;
  bool https = strncasecmp (url, "https://", 8) == 0;
  const char *a = url + (https ? 8 : 7);
  size_t n = strcspn (a, "/?#");
  const char *colon = NULL;
  char hostport[NETADDR_HOSTPORT_STRLEN + 16], shown[JOB__SHOW_SIZE];
  cleanup_error bvm_error_t e = NULL;

  if (n > NETADDR_HOSTPORT_STRLEN)
    return dfail (err, BVM_E_INVALID, spec, u->line, "ADD %s: the host is too long",
                  job__show (shown, sizeof shown, url));
  if (a[0] == '[')
    {
      const char *close = memchr (a, ']', n);
      if (close != NULL && close + 1 < a + n && close[1] == ':')
        colon = close + 1;
    }
  else
    colon = memchr (a, ':', n);
  if (colon != NULL)
    snprintf (hostport, sizeof hostport, "%.*s", (int) n, a);
  else
    snprintf (hostport, sizeof hostport, "%.*s:%d", (int) n, a, https ? 443 : 80);
  if (netaddr_hostport_parse (&u->hp, hostport, &e) < 0)
    return dfail (err, BVM_E_INVALID, spec, u->line, "ADD %s: %s",
                  job__show (shown, sizeof shown, url), bvm_error_msg (&e));
  return 0;
}

static int
check_build_args (const struct build_spec *spec, bvm_error_t *err)
{
  const struct spec_dockerfile *d = spec->dockerfile;
  char shown[JOB__SHOW_SIZE];

  for (size_t i = 0; i < d->n_args; i++)
    {
      const char *k = d->args[i].key;
      for (size_t j = 0; j < spec->n_secrets; j++)
        if (strcasecmp (k, spec->secrets[j].name) == 0
            || (spec->secrets[j].env && strcasecmp (k, spec->secrets[j].env) == 0))
          return bvm_error_code (
              err, BVM_E_INVALID, 0,
              "`buildvm.json`: field `dockerfile.args`: build arg `%s` is the name of the secret "
              "`%s`: build args end up in the image's history; use "
              "RUN --mount=type=secret,id=%s",
              job__show (shown, sizeof shown, k), spec->secrets[j].name, spec->secrets[j].name);
      if (plan_name_looks_secret (k))
        return bvm_error_code (
            err, BVM_E_INVALID, 0,
            "`buildvm.json`: field `dockerfile.args`: build arg `%s` looks like a secret: build "
            "args end up in the image's history; grant it as a secret and use "
            "RUN --mount=type=secret,id=...",
            job__show (shown, sizeof shown, k));
    }
  return 0;
}

int
plan_dockerfile (struct job_plan *p, const struct runner_config *cfg,
                 const struct build_spec *spec, const char *text, size_t len, bvm_error_t *err)
{
  const struct spec_dockerfile *sd = spec->dockerfile;
  struct dockerfile *d = NULL;
  char shown[JOB__SHOW_SIZE];
  int ret;

  if ((ret = check_build_args (spec, err)) < 0)
    return ret;
  ret = dockerfile_parse (&d, sd->path, text, len, sd->args, sd->n_args, sd->target, err);
  if (ret < 0)
    return ret;
  p->dockerfile = d; /* owned by the plan from here on */
  p->bases = calloc (d->n_bases + 1, sizeof *p->bases);
  p->urls = calloc (d->n_urls + 1, sizeof *p->urls);
  if (p->bases == NULL || p->urls == NULL)
    return bvm_error (err, ENOMEM, "the Dockerfile's plan");
  for (size_t i = 0; i < d->n_bases; i++)
    {
      const struct dockerfile_base *b = &d->bases[i];
      ret = plan_resolve_base (&p->bases[i], cfg, b->ref, err);
      if (ret < 0)
        return dfail (err, bvm_error_get_code (err), spec, b->line, "%s %s", b->how,
                      bvm_error_msg (err));
      p->bases[i].from = b->ref;
      p->bases[i].line = b->line;
      p->bases[i].how = b->how;
      p->n_bases = i + 1;
    }
  for (size_t i = 0; i < d->n_secrets; i++)
    {
      const struct dockerfile_item *s = &d->secrets[i];
      bool granted = false;
      for (size_t j = 0; j < spec->n_secrets; j++)
        if (strcmp (spec->secrets[j].name, s->value) == 0)
          granted = true;
      if (!granted)
        return dfail (err, BVM_E_INVALID, spec, s->line,
                      "RUN --mount=type=secret,id=%s: secret `%s` is not granted (name it in "
                      "buildvm.json `secrets`)",
                      job__show (shown, sizeof shown, s->value), shown);
    }
  for (size_t i = 0; i < d->n_urls; i++)
    {
      p->urls[i].url = d->urls[i].value;
      p->urls[i].line = d->urls[i].line;
      if ((ret = parse_url (&p->urls[i], spec, err)) < 0)
        return ret;
      p->n_urls = i + 1;
    }
  return 0;
}
