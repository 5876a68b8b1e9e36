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
#include "dockerfile.h"
#include "error.h"
#include "netaddr.h"
#include "image.h"
#include "job.h"
#include "spec.h"

#define PLAN_ARTIFACT_PREFIX_MAX 256

/* A Dockerfile job's base image: a FROM (or COPY --from, RUN --mount
 * from=) image resolved to the runner's registry. */
struct plan_base
{
  const char *from; /* as the Dockerfile names it (in plan.dockerfile) */
  unsigned line;
  const char *how;  /* "FROM", "COPY --from", "RUN --mount from=" */
  char *name;       /* normalized: "docker.io/library/node:18", the guest tags it so */
  char *repository; /* in the runner's registry */
  char *reference;  /* a tag or a digest */
  bool mapped;      /* through dockerfile.from_map (else a local reference) */
};

/* An ADD of a URL: the host and port the build will connect to. */
struct plan_url
{
  const char *url; /* in plan.dockerfile */
  unsigned line;
  struct netaddr_hostport hp;
};

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
  /* a Dockerfile job's (plan_dockerfile), else NULL/0 */
  struct dockerfile *dockerfile;
  struct plan_base *bases;
  size_t n_bases;
  struct plan_url *urls;
  size_t n_urls;
};

/* Resolve the plan of `job` built from `spec` under the runner's config.
 * No role is asked here: the pipeline authorizes each planned write. On
 * failure `out` holds nothing to dispose of. */
int plan_make (struct job_plan *out, const struct runner_config *cfg,
               const struct job_request *job, const struct build_spec *spec, bvm_error_t *err);
void plan_dispose (struct job_plan *p);

/* A Dockerfile job's part of the plan: parse the Dockerfile (`text`, read
 * from the commit), resolve every base image (dockerfile.from_map, or a
 * reference already in the runner's registry: registry.url's host or
 * dockerfile.local_prefixes), check that every secret mount names one of
 * the spec's secrets and that no build arg is, or looks like, a secret, and
 * parse every ADD URL's host and port. The role is not asked here: the
 * pipeline asks it about each base (registry:PullImage) and URL
 * (net:Connect). Errors are one line, "Dockerfile:LINE: ..." where the
 * Dockerfile says it. */
int plan_dockerfile (struct job_plan *p, const struct runner_config *cfg,
                     const struct build_spec *spec, const char *text, size_t len,
                     bvm_error_t *err);

/* The base image `ref` (a reference as a Dockerfile names it) resolved
 * under cfg into out's name/repository/reference/mapped (malloc'd), or
 * BVM_E_INVALID saying why not ("`alpine:3` is not an image this runner
 * provides ..."). */
int plan_resolve_base (struct plan_base *out, const struct runner_config *cfg, const char *ref,
                       bvm_error_t *err);

/* `text` looks like a secret's name: TOKEN, SECRET, PASSWORD, ... in any case */
bool plan_name_looks_secret (const char *text);

/* A job's effective resources: the spec's values where given, else the
 * runner's defaults; a spec asking for more than a limit is a BVM_E_INVALID
 * error, never silently clamped. `s` may be NULL (defaults only). Step
 * timeouts are checked against max_build_seconds too. */
int plan_resolve_resources (struct job_resources *out, const struct runner_config *c,
                            const struct build_spec *s, bvm_error_t *err);

#endif
