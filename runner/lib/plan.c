/* plan.c - a job's plan, see plan.h */
#include "plan.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
    ret = resolve_one (&res.disk_mib, r->disk_mib, c->defaults.disk_mib, c->limits.max_disk_mib,
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
