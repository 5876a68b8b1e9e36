/* guest.h - the host side of the host/guest contract
 *
 * The runner and the guest agent (buildvm-image/agent) talk through three
 * disks and the console; docs/architecture.md is the contract. This module
 * writes the input disk (a tar stream: the control file `.buildvm/job`, the
 * source tree under `src/`, secrets under `.buildvm/secrets/`) and parses the
 * result header the agent leaves at the start of the output disk. Everything
 * read back from the guest is hostile.
 */
#ifndef BUILDVM_GUEST_H
#define BUILDVM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#include "../../buildvm-image/agent/protocol.h"

struct archive;

/* the contract's numbers, from the header the agent is built with */
#define GUEST_HEADER_SIZE PROTO_HEADER_SIZE
#define GUEST_MAX_STEPS PROTO_MAX_STEPS
#define GUEST_MAX_CONTROL PROTO_MAX_CONTROL
#define GUEST_READY_LINE PROTO_READY_LINE
#define GUEST_CONTROL_PORT PROTO_CONTROL_PORT
#define GUEST_EGRESS_PORT PROTO_EGRESS_PORT
#define GUEST_GO PROTO_GO

struct guest_step
{
  const char *name;
  const char *cmd;
  uint64_t timeout_s; /* 0: only the job's deadline applies */
};

struct guest_secret_env
{
  const char *var;
  const char *name;
};

struct guest_build_arg
{
  const char *name;
  const char *value;
};

/* a base image in the scratch disk's bases/ layout, and the name the
 * Dockerfile's FROM calls it by (tagged so in the guest's storage) */
struct guest_base
{
  const char *ref;  /* its index.json ref name */
  const char *name; /* a normalized image name, e.g. docker.io/library/node:18 */
};

/* A Dockerfile job (PROTO_CTL_DOCKERFILE): built by the agent with buildah */
struct guest_dockerfile
{
  const char *path;    /* relative to the source tree */
  const char *context; /* relative, "." = the source tree */
  const char *target;  /* NULL or "": the last stage */
  const struct guest_build_arg *args;
  size_t n_args;
  const struct guest_base *bases;
  size_t n_bases;
};

struct guest_job
{
  uint64_t timeout_s;  /* all steps together */
  uint64_t log_max;    /* bytes of build output the agent forwards */
  uint64_t output_max; /* bytes of output tar the agent may write */
  const struct guest_step *steps;
  size_t n_steps;
  const char *const *env; /* "NAME=value" */
  size_t n_env;
  const char *image_from; /* NULL: no image layer */
  const char *const *artifacts;
  size_t n_artifacts;
  const struct guest_secret_env *secret_env;
  size_t n_secret_env;
  const struct guest_dockerfile *dockerfile; /* NULL: the steps; else no steps */
};

/* Encode the control file (NUL-separated records). */
int guest_control_encode (struct buf *out, const struct guest_job *job, bvm_error_t *err);

/* The input disk: a pax tar stream written to `path`. */
struct guest_input;
int guest_input_create (struct guest_input **out, const char *path, bvm_error_t *err);
/* The control file is written first so the agent can size its work. */
int guest_input_add_control (struct guest_input *in, const struct guest_job *job,
                             bvm_error_t *err);
/* Add a secret file `.buildvm/secrets/<name>` (readable only by the build user
 * in the guest). The caller wipes `data` afterwards. */
int guest_input_add_secret (struct guest_input *in, const char *name, const void *data, size_t len,
                            bvm_error_t *err);
/* The writer, for gitsrc_export() of the source tree under "src/". */
struct archive *guest_input_archive (struct guest_input *in);
/* Close the stream and pad the file to a whole number of sectors. */
int guest_input_finish (struct guest_input *in, uint64_t *size, bvm_error_t *err);
void guest_input_free (struct guest_input *in);

enum guest_status
{
  GUEST_NO_RESULT = 0, /* no valid header: the agent never finished */
  GUEST_OK,
  GUEST_STEP_FAILED,
  GUEST_TIMEOUT,
  GUEST_OUTPUT_ERROR,
  GUEST_AGENT_ERROR,
};

struct guest_result
{
  enum guest_status status;
  unsigned step; /* 1-based: the failing step, or the last one run */
  int exit_code;
  int signal;
  unsigned steps_run;
  uint64_t entries;
  uint64_t tar_bytes;
  int64_t duration_ms;
  int64_t step_ms[GUEST_MAX_STEPS];
  char message[512]; /* valid UTF-8 without controls, from the guest: escape it */
};

/* Parse a header block. A block that does not start with the magic line is
 * not an error: it gives GUEST_NO_RESULT. A block that starts with it but is
 * malformed in any way is BVM_E_INVALID. `max_tar` bounds tar_bytes. */
int guest_result_parse (struct guest_result *out, const char *hdr, size_t len, uint64_t max_tar,
                        bvm_error_t *err);
/* Read and parse the header of an output disk file. */
int guest_result_read (struct guest_result *out, const char *output_disk, bvm_error_t *err);

const char *guest_status_name (enum guest_status s);

/* Create the output disk: a sparse file of GUEST_HEADER_SIZE + max_tar bytes,
 * rounded up to a sector, with a zeroed header. */
int guest_output_create (const char *path, uint64_t max_tar, bvm_error_t *err);
/* Create the scratch disk: a sparse ext4 file system of `mib` MiB made with
 * mkfs.ext4 (no journal: the disk dies with the VM). */
int guest_scratch_create (const char *path, uint64_t mib, bvm_error_t *err);

#endif
