/* plan.h - a job's plan: everything decided before anything runs
 *
 * The pipeline's plan phase turns the deploy request, the build spec read
 * from the commit and the runner's config - trusted inputs and checked
 * untrusted ones, never anything the build produces - into a `struct
 * job_plan`: the resources the VM gets, the build VM image, where the image
 * goes (repository and tags), the artifact prefix and the secrets to read.
 * The role is asked about each of them in the plan phase; once that phase
 * ends the plan is const, and every later phase reads its decisions from
 * it (bubblewrap's setup ops, built first and then executed).
 */
#ifndef BUILDVM_PLAN_H
#define BUILDVM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "image.h"
#include "job.h"
#include "spec.h"

#define PLAN_ARTIFACT_PREFIX_MAX 256

struct job_plan
{
  struct job_resources res;
  struct vm_image *img;
  /* the image's destination; all NULL when the spec builds no image */
  char *dest_repo;
  char *dest_tag;
  char **extra_tags; /* NULL-terminated */
  size_t n_extra_tags;
  char artifact_prefix[PLAN_ARTIFACT_PREFIX_MAX]; /* "apps/<app>/<commit>/" */
  /* the secrets the spec names (pointers into the spec) */
  const struct spec_secret *secrets;
  size_t n_secrets;
};

/* Resolve the plan of `job` built from `spec` under the runner's config.
 * No role is asked here: the pipeline authorizes each planned write. On
 * failure `out` holds nothing to dispose of. */
int plan_make (struct job_plan *out, const struct runner_config *cfg,
               const struct job_request *job, const struct build_spec *spec, bvm_error_t *err);
void plan_dispose (struct job_plan *p);

/* A job's effective resources: the spec's values where given, else the
 * runner's defaults; a spec asking for more than a limit is a BVM_E_INVALID
 * error, never silently clamped. `s` may be NULL (defaults only). Step
 * timeouts are checked against max_build_seconds too. */
int plan_resolve_resources (struct job_resources *out, const struct runner_config *c,
                            const struct build_spec *s, bvm_error_t *err);

#endif
