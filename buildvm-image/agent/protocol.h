/* protocol.h - the host/guest contract, shared by the guest agent and the
 * runner (runner/lib/guest.c, which includes this file by path)
 *
 * docs/architecture.md describes the contract; this header is the one place
 * its sizes, names and keys are spelled, so the two sides cannot drift:
 *
 * - The input disk is a tar stream: the control file PROTO_CONTROL_PATH
 *   (NUL-separated records: a key, then its values), secrets under
 *   PROTO_SECRETS_DIR.
 * - The scratch disk is an ext4 the runner made, with the source tree in
 *   its directory PROTO_SOURCE_DIR (mounted on /work: /work/src).
 * - The agent prints PROTO_READY_LINE on its console once it is up.
 * - The output disk starts with a PROTO_HEADER_SIZE-byte result header:
 *   PROTO_HEADER_MAGIC, then "key value" lines, then "end", NUL-padded;
 *   the output tar follows it.
 *
 * Plain C with no includes: the agent is built static, with no libraries.
 */
#ifndef BUILDVM_AGENT_PROTOCOL_H
#define BUILDVM_AGENT_PROTOCOL_H

#define PROTO_HEADER_SIZE 4096
#define PROTO_MAX_STEPS 64
#define PROTO_MAX_CONTROL (8u << 20)
#define PROTO_READY_LINE "buildvm-agent: ready"

/* A pool VM (booted before its job) has a virtio-serial port of this name;
 * the agent waits on it, after its ready line, for PROTO_GO: the runner has
 * written the job's input into the input disk and its scratch disk (the
 * source in it) into the scratch disk. A VM without the port is a
 * cold boot, whose input is there from the start. */
#define PROTO_CONTROL_PORT "buildvm.control"
#define PROTO_GO "go\n"
/* The egress channel's virtio-serial port (docs/architecture.md, "Egress"). */
#define PROTO_EGRESS_PORT "buildvm.egress"

/* input disk */
#define PROTO_CONTROL_PATH ".buildvm/job"
#define PROTO_SECRETS_DIR ".buildvm/secrets"

/* scratch disk */
#define PROTO_SOURCE_DIR "src"
/* A Dockerfile job (issue 17): the base images its FROM lines resolved to,
 * pulled by the runner, as an OCI image layout (mounted on /work: /work/bases),
 * each manifest named in index.json by its `org.opencontainers.image.ref.name`
 * annotation (the `base` record's first value). */
#define PROTO_BASES_DIR "bases"

/* control file records */
#define PROTO_CONTROL_VERSION "1"
#define PROTO_CTL_VERSION "version"
#define PROTO_CTL_TIMEOUT "timeout"
#define PROTO_CTL_LOG_MAX "log_max"
#define PROTO_CTL_OUTPUT_MAX "output_max"
#define PROTO_CTL_ENV "env"
#define PROTO_CTL_STEP "step" /* timeout, name, command */
#define PROTO_CTL_IMAGE "image"
#define PROTO_CTL_ARTIFACT "artifact"
#define PROTO_CTL_SECRET_ENV "secret_env" /* variable, secret name */
/* A Dockerfile job has no `step` records but one `dockerfile` record: the
 * agent builds with buildah, as root in the guest, and reports the three
 * steps below in the result header. Paths are relative to the source
 * directory; target "" builds the last stage. */
#define PROTO_CTL_DOCKERFILE "dockerfile" /* path, context, target */
#define PROTO_CTL_BUILD_ARG "build_arg"   /* name, value */
#define PROTO_CTL_BASE "base" /* ref name in bases/index.json, image name to tag it as */

/* A Dockerfile job's caps, checked by both sides (guest.c when it encodes,
 * control.c when it parses). Build arg values reach buildah through its
 * environment (`--build-arg NAME`, the value never in an argv), so they are
 * bounded to keep the environment far below the kernel's ARG_MAX. */
#define PROTO_DF_PATH_MAX 4096  /* the Dockerfile's path, the context's */
#define PROTO_DF_NAME_MAX 255   /* a target, a build arg's name, a ref */
#define PROTO_DF_IMAGE_MAX 1024 /* a base image's name */
#define PROTO_DF_MAX_BUILD_ARGS 128
#define PROTO_DF_ARG_VALUE_MAX 8192
#define PROTO_DF_MAX_BASES 64

/* The checks both sides make of a Dockerfile job's records: each gives NULL
 * or why the value is refused. No value may start with `-` (none can be
 * taken for an option), and none has a control character. */
static inline int
proto__df_ctl (char c)
{
  return (unsigned char) c < 0x20 || c == 0x7f;
}

static inline int
proto__df_upper (char c)
{
  return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

/* `s` starts with `prefix` (upper case), ignoring case */
static inline int
proto__df_prefix (const char *s, const char *prefix)
{
  for (; *prefix; s++, prefix++)
    if (proto__df_upper (*s) != *prefix)
      return 0;
  return 1;
}

/* A path relative to the source tree: not absolute, no `..` component */
static inline const char *
proto_df_path_problem (const char *s)
{
  unsigned long n = 0;
  const char *c = s;
  if (s == 0 || s[0] == '\0')
    return "is empty";
  if (s[0] == '/')
    return "is absolute";
  if (s[0] == '-')
    return "starts with `-`";
  for (; s[n]; n++)
    if (proto__df_ctl (s[n]))
      return "has a control character";
  if (n > PROTO_DF_PATH_MAX)
    return "is too long";
  for (;;)
    {
      if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0'))
        return "has a `..` component";
      while (*c && *c != '/')
        c++;
      if (*c == '\0')
        return 0;
      c++;
    }
}

/* A stage name for `--target`, a ref name in bases/index.json */
static inline const char *
proto_df_name_problem (const char *s)
{
  unsigned long n;
  if (s == 0 || s[0] == '\0')
    return "is empty";
  if (s[0] == '-' || s[0] == '.')
    return "starts with `-` or `.`";
  for (n = 0; s[n]; n++)
    {
      char c = s[n];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
            || c == '-' || c == '.'))
        return "is not made of letters, digits, `_`, `-` and `.`";
    }
  return n > PROTO_DF_NAME_MAX ? "is too long" : 0;
}

/* A base image's name as the Dockerfile calls it (a normalized reference:
 * registry/path[:tag][@sha256:hex]) */
static inline const char *
proto_df_image_problem (const char *s)
{
  unsigned long n;
  if (s == 0 || s[0] == '\0')
    return "is empty";
  if (s[0] == '-')
    return "starts with `-`";
  for (n = 0; s[n]; n++)
    {
      char c = s[n];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
            || c == '-' || c == '.' || c == '/' || c == ':' || c == '@'))
        return "is not an image reference";
    }
  return n > PROTO_DF_IMAGE_MAX ? "is too long" : 0;
}

/* A build arg's name: an environment variable's name, and none that the
 * agent sets for buildah or that buildah, its libraries or the Go runtime
 * read themselves (the value is passed in buildah's own environment). */
static inline const char *
proto_df_arg_name_problem (const char *s)
{
  static const char *const exact[] = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "TERM",
    "TZ",
    "GODEBUG",
    "GOMAXPROCS",
    "GOGC",
    "GOMEMLIMIT",
    "GOTRACEBACK",
    "GOTMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REGISTRY_AUTH_FILE",
    0,
  };
  static const char *const prefixes[] = {
    "BUILDAH", "CONTAINERS", "_CONTAINERS", "STORAGE_", "XDG_", "DOCKER_",
    "BUILDVM", "LD_",        "LC_",         "PODMAN",   0,
  };
  unsigned long n;
  if (s == 0 || s[0] == '\0')
    return "is empty";
  if (s[0] >= '0' && s[0] <= '9')
    return "starts with a digit";
  for (n = 0; s[n]; n++)
    {
      char c = s[n];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || c == '_'))
        return "is not made of letters, digits and `_`";
    }
  if (n > PROTO_DF_NAME_MAX)
    return "is too long";
  for (int i = 0; exact[i]; i++)
    {
      const char *a = s, *b = exact[i];
      while (*a && proto__df_upper (*a) == *b)
        a++, b++;
      if (*a == '\0' && *b == '\0')
        return "is a variable the builder itself reads";
    }
  for (int i = 0; prefixes[i]; i++)
    if (proto__df_prefix (s, prefixes[i]))
      return "is a variable the builder itself reads";
  /* the proxy variables are the agent's (HTTP_PROXY, no_proxy, ...) */
  if (n >= 6 && proto__df_prefix (s + n - 6, "_PROXY"))
    return "is a proxy variable (the build's proxy is set by the runner)";
  return 0;
}

/* a Dockerfile job's steps, numbered as in the result header */
#define PROTO_DF_STEPS 3
#define PROTO_DF_STEP_1 "load the base images"
#define PROTO_DF_STEP_2 "buildah build"
#define PROTO_DF_STEP_3 "export the image"

/* output tar roots: `image/` (a build's image directory), `artifacts/`, and
 * `oci/` for a Dockerfile job: the built image as an OCI image layout
 * (oci-layout, index.json naming one manifest, blobs/sha256/<hex>), its
 * layers uncompressed tars (the runner compresses what it pushes) */
#define PROTO_OUT_OCI "oci"

/* result header */
#define PROTO_HEADER_MAGIC "buildvm-output 1\n"
#define PROTO_HDR_STATUS "status"
#define PROTO_HDR_STEP "step"
#define PROTO_HDR_EXIT "exit"
#define PROTO_HDR_SIGNAL "signal"
#define PROTO_HDR_STEPS "steps"
#define PROTO_HDR_ENTRIES "entries"
#define PROTO_HDR_TAR_BYTES "tar_bytes"
#define PROTO_HDR_DURATION_MS "duration_ms"
#define PROTO_HDR_STEP_MS "step_ms" /* step number, milliseconds */
#define PROTO_HDR_MESSAGE "message"
#define PROTO_HDR_END "end"

/* values of PROTO_HDR_STATUS */
#define PROTO_STATUS_OK "ok"
#define PROTO_STATUS_STEP_FAILED "step-failed"
#define PROTO_STATUS_TIMEOUT "timeout"
#define PROTO_STATUS_OUTPUT_ERROR "output-error"
#define PROTO_STATUS_AGENT_ERROR "agent-error"

#endif
