/* dockerfile.h - the Dockerfile grammar, as far as the host reads it (issue 17)
 *
 * A Dockerfile job is built by buildah inside the VM; the runner reads the
 * Dockerfile itself before the VM boots only to decide what the build may
 * have: the base images its FROM lines (and COPY --from / RUN --mount from=
 * of an image) name, the secrets its RUN --mount=type=secret lines ask for,
 * and the URLs its ADD lines fetch. The walls stay where they are (the guest
 * reaches no registry, gets only the granted secrets, and connects only
 * through the egress broker): this reading refuses early, with a line
 * number, what those walls would refuse late and without one.
 *
 * The text comes from the app's repository and is hostile: every size is
 * capped (DOCKERFILE_*), nothing is executed, and errors are one line,
 * "Dockerfile:LINE: ..." (the path as the spec names it).
 *
 * The grammar (BuildKit's, docs/schemas.md "Dockerfile"): parser
 * directives at the top (`# escape=` ` or \, `# syntax=` and `# check=`
 * ignored), line continuations with the escape character, comment lines
 * (also inside a continuation), instructions case-insensitive, `ARG`s before
 * the first FROM substituted (`$X`, `${X}`, `${X:-w}`, `${X:+w}`) into FROM,
 * with the predefined platform args (TARGETPLATFORM=linux/amd64 ...).
 * Heredocs (`<<EOF`) are not supported: the guest's buildah (1.28) does not
 * know them either.
 *
 * Image references: dockerfile_ref_parse() is the one owner of the Docker
 * reference grammar ([domain/]path[:tag][@sha256:...], docker.io/library/
 * for a one-component name, tag latest by default).
 */
#ifndef BUILDVM_DOCKERFILE_H
#define BUILDVM_DOCKERFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "spec.h"
#include "util.h"

#define DOCKERFILE_MAX_BYTES (1024 * 1024)
#define DOCKERFILE_MAX_STAGES 64
#define DOCKERFILE_MAX_INSTRUCTIONS 4096
#define DOCKERFILE_LINE_MAX (64 * 1024) /* a logical line, continuations joined */
#define DOCKERFILE_NAME_MAX 255         /* stage names, ARG names, secret ids */
#define DOCKERFILE_REF_MAX 512          /* an image reference */
#define DOCKERFILE_URL_MAX 2048         /* an ADD source URL */
#define DOCKERFILE_MAX_ARGS 256         /* ARG declarations before the first FROM */

/* A parsed image reference. */
struct dockerfile_ref
{
  char domain[DOCKERFILE_REF_MAX + 1]; /* "docker.io" when not given */
  bool domain_given;                   /* the reference names its domain */
  char path[DOCKERFILE_REF_MAX + 1];   /* "library/node" */
  char tag[DOCKERFILE_REF_MAX + 1];    /* "" when only a digest was given */
  char digest[DOCKERFILE_REF_MAX + 1]; /* "" or "sha256:<64 hex>" */
  /* "docker.io/library/node:18" (the digest instead of the tag when given) */
  char name[DOCKERFILE_REF_MAX + 64];
};

/* NULL when `ref` is a valid image reference (filling `out` when not NULL),
 * else a static reason. */
const char *dockerfile_ref_parse (struct dockerfile_ref *out, const char *ref);

/* A base image the build needs: one per distinct normalized name. */
struct dockerfile_base
{
  char *ref;       /* as the Dockerfile names it, ARGs substituted */
  unsigned line;   /* where it is first named */
  const char *how; /* "FROM", "COPY --from" or "RUN --mount" */
};

struct dockerfile_stage
{
  char *name;    /* lower case, or NULL */
  unsigned line; /* of its FROM */
  long base;     /* index into bases[], -1: scratch or an earlier stage */
};

/* A secret mount or an ADD URL, with its line. */
struct dockerfile_item
{
  char *value;
  unsigned line;
};

struct dockerfile
{
  struct dockerfile_stage *stages; /* up to and including the target */
  size_t n_stages;                 /* in the file */
  size_t target;                   /* the stage built: the last or the spec's target */
  struct dockerfile_base *bases;   /* needed by the stages up to the target */
  size_t n_bases;
  struct dockerfile_item *secrets; /* RUN --mount=type=secret ids, distinct */
  size_t n_secrets;
  struct dockerfile_item *urls; /* ADD http(s):// sources */
  size_t n_urls;
  size_t n_instructions;
};

/* Parse `text` (`len` bytes, from the commit) named `path` in errors, with
 * the build args `args` overriding ARG defaults, building `target` (NULL:
 * the last stage). Errors: BVM_E_INVALID ("Dockerfile:LINE: ..."), or
 * BVM_E_LIMIT past a cap. What is collected (bases, secrets, URLs) is
 * from the stages up to the target only: later stages are not built. */
int dockerfile_parse (struct dockerfile **out, const char *path, const char *text, size_t len,
                      const struct spec_kv *args, size_t n_args, const char *target,
                      bvm_error_t *err);
void dockerfile_free (struct dockerfile *d);

DEFINE_CLEANUP_FUNC (dockerfile_freep, struct dockerfile, dockerfile_free)
#define cleanup_dockerfile __attribute__ ((cleanup (dockerfile_freep)))

#endif
