/* spec.h - the app build spec: `buildvm.json` at the root of the app's repo
 *
 * It says how to build the app (rootfs profile, steps, environment,
 * resources), what image to produce from the build's output and which
 * artifacts to keep. It comes from the app's repository, so it is untrusted:
 * spec_parse() validates every field (docs/schemas.md) into an immutable plan
 * object. Resources are bounded by the runner's limits later, at plan time
 * (plan_resolve_resources), because the limits are not the spec's to know.
 */
#ifndef BUILDVM_SPEC_H
#define BUILDVM_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

#define SPEC_FILE_NAME "buildvm.json"
#define SPEC_MAX_BYTES (256 * 1024)
#define SPEC_VERSION 1

#define SPEC_PROFILE_MAX 32
#define SPEC_MAX_STEPS 64
#define SPEC_STEP_NAME_MAX 64
#define SPEC_STEP_RUN_MAX (64 * 1024)
#define SPEC_STEP_TIMEOUT_MAX (7 * 24 * 3600)
#define SPEC_MAX_ENV 256
#define SPEC_ENV_KEY_MAX 128
#define SPEC_ENV_VALUE_MAX (32 * 1024)
#define SPEC_PATH_MAX 1024 /* image.from, image.to, image.workdir, artifacts */
#define SPEC_MAX_ARGS 256  /* entrypoint, cmd */
#define SPEC_ARG_MAX (32 * 1024)
#define SPEC_MAX_PORTS 64
#define SPEC_MAX_LABELS 256
#define SPEC_LABEL_KEY_MAX 256
#define SPEC_LABEL_VALUE_MAX 4096
#define SPEC_REFERENCE_MAX 512 /* image.base */
#define SPEC_USER_MAX 65       /* "user[:group]", each part <= 32 */
#define SPEC_MAX_ARTIFACTS 256
#define SPEC_MAX_SECRETS 64

/* Bounds the spec itself enforces; the runner's limits are usually lower. */
#define SPEC_VCPUS_MAX 1024
#define SPEC_MEMORY_MIB_MIN 64
#define SPEC_MEMORY_MIB_MAX (1024 * 1024)
#define SPEC_DISK_MIB_MIN 16
#define SPEC_DISK_MIB_MAX (16 * 1024 * 1024)
#define SPEC_TIMEOUT_MAX (7 * 24 * 3600)

struct spec_kv
{
  char *key;
  char *value;
};

struct spec_step
{
  char *name;       /* given, else "step-N" (1-based) */
  char *run;        /* a shell command run in the source directory */
  uint64_t timeout; /* seconds, 0 = only the job's own timeout applies */
};

/* 0 = not given: the runner's default applies. */
struct spec_resources
{
  uint64_t vcpus;
  uint64_t memory_mib;
  uint64_t disk_mib;
  uint64_t timeout; /* seconds for the whole build */
};

struct spec_image
{
  char *base;            /* "repo:tag" or "repo@sha256:..." in the runner's registry, or NULL */
  char *base_repository; /* its parts, NULL when base is NULL */
  char *base_tag;        /* NULL when base is by digest */
  char *base_digest;     /* NULL when base is by tag */
  char *from;            /* normalized relative directory of the build ("." = the source tree) */
  char *to;              /* normalized absolute path in the image, default "/app" */
  char **entrypoint; /* NULL = not set (inherit); else a vector of n_entrypoint, NULL-terminated */
  size_t n_entrypoint;
  char **cmd; /* same */
  size_t n_cmd;
  struct spec_kv *env;
  size_t n_env;
  char *workdir; /* absolute, or NULL */
  char *user;    /* "uid[:gid]" or names, or NULL */
  char **ports;  /* normalized "8080/tcp", NULL-terminated */
  size_t n_ports;
  struct spec_kv *labels;
  size_t n_labels;
};

struct spec_secret
{
  char *name; /* ^[A-Za-z0-9_.-]{1,64}$, not starting with `.` */
  char *env;  /* deliver as this environment variable, or NULL: as a file */
};

/* `dockerfile` (issue 17): the build is the Dockerfile's, run by buildah in
 * the VM. Given in buildvm.json, or detected: no buildvm.json and a
 * `Dockerfile` at the root (defaults, `detected` set). A Dockerfile spec has
 * no steps and no `image` of its own; spec_parse() gives it a default
 * `image` (base, from and to NULL) so that the plan names a destination. */
struct spec_dockerfile
{
  char *path;           /* normalized relative path, default "Dockerfile" */
  char *context;        /* normalized relative directory, default "." */
  char *target;         /* a stage name, or NULL: the last stage */
  struct spec_kv *args; /* build args, in the order given */
  size_t n_args;
  bool detected; /* not from buildvm.json: why the plan says it was chosen */
};

struct build_spec
{
  char *profile;
  struct spec_step *steps;
  size_t n_steps;
  struct spec_kv *env;
  size_t n_env;
  struct spec_resources resources;
  struct spec_image *image; /* NULL: artifacts only, no image */
  char **artifacts;         /* relative paths or globs, NULL-terminated */
  size_t n_artifacts;
  struct spec_secret *secrets;
  size_t n_secrets;
  char **egress; /* "host:port" rules the build asks for (egress.h), NULL-terminated */
  size_t n_egress;
  bool fail_on_deny;                  /* a refused connection fails the build */
  struct spec_dockerfile *dockerfile; /* NULL: the steps */
};

/* Parse and validate `buildvm.json`. Errors are BVM_E_INVALID (BVM_E_LIMIT
 * over SPEC_MAX_BYTES) and read "`buildvm.json`: field `image.ports[1]` ...". */
int spec_parse (struct build_spec **out, const char *json, size_t len, bvm_error_t *err);
/* The normalized spec as JSON (defaults filled in); NULL on ENOMEM. */
json_t *spec_to_json (const struct build_spec *s);
void spec_free (struct build_spec *s);

DEFINE_CLEANUP_FUNC (spec_freep, struct build_spec, spec_free)
#define cleanup_spec __attribute__ ((cleanup (spec_freep)))

/* A Dockerfile job's default profile: buildah is in the debian image. */
#define SPEC_DOCKERFILE_PROFILE "debian"

/* The spec of a repository with no buildvm.json but a `Dockerfile` at its
 * root: a Dockerfile build with the defaults (`dockerfile->detected`). */
int spec_dockerfile_detected (struct build_spec **out, bvm_error_t *err);

/* Validators shared with other modules. */
/* ^[A-Za-z_][A-Za-z0-9_]*$, at most 128 bytes */
const char *spec_env_name_problem (const char *s);

#endif
