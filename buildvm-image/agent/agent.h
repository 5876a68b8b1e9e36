/* agent.h - the buildvm guest agent (PID 1 in every build VM)
 *
 * The agent is the guest side of the host/guest contract described in
 * docs/architecture.md. It is a static binary with no library dependencies
 * beyond libc, built like kvmtool's guest init, but unlike that init it checks
 * every system call: it supervises untrusted builds.
 */
#ifndef BUILDVM_AGENT_H
#define BUILDVM_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

#define AGENT_BUILD_UID 1000
#define AGENT_BUILD_GID 1000
#define AGENT_HEADER_SIZE PROTO_HEADER_SIZE
#define AGENT_MAX_STEPS PROTO_MAX_STEPS
#define AGENT_MAX_ENV 512
#define AGENT_MAX_OUTPUTS 256
#define AGENT_MAX_SECRETS 64
#define AGENT_MAX_CONTROL PROTO_MAX_CONTROL

struct agent_step
{
  char *name;
  char *cmd;
  uint64_t timeout_s;
};

struct agent_secret_env
{
  char *var;  /* environment variable name */
  char *name; /* secret name: /run/secrets/<name> */
};

struct agent_build_arg
{
  char *name;
  char *value; /* passed to buildah in its environment, never in an argv */
};

struct agent_base
{
  char *ref;  /* its ref name in /work/bases/index.json */
  char *name; /* the image name the Dockerfile calls it by */
};

/* A Dockerfile job (PROTO_CTL_DOCKERFILE): built with buildah, as root */
struct agent_dockerfile
{
  char *path;    /* relative to the source tree */
  char *context; /* relative to the source tree */
  char *target;  /* "": the last stage */
  struct agent_build_arg args[PROTO_DF_MAX_BUILD_ARGS];
  size_t n_args;
  struct agent_base bases[PROTO_DF_MAX_BASES];
  size_t n_bases;
};

struct agent_job
{
  uint64_t timeout_s;  /* all steps together */
  uint64_t log_max;    /* bytes of build output forwarded to the console */
  uint64_t output_max; /* bytes of output tar */
  struct agent_step steps[AGENT_MAX_STEPS];
  size_t n_steps;
  char *env[AGENT_MAX_ENV + 16];
  size_t n_env;
  char *image_from; /* directory relative to the source tree, or NULL */
  char *artifacts[AGENT_MAX_OUTPUTS];
  size_t n_artifacts;
  struct agent_secret_env secret_env[AGENT_MAX_SECRETS];
  size_t n_secret_env;
  bool is_dockerfile; /* then `dockerfile` is the build, and there are no steps */
  struct agent_dockerfile dockerfile;
};

/* Result written into the output header. */
struct agent_result
{
  const char *status; /* ok | step-failed | timeout | output-error | agent-error */
  unsigned step;      /* 1-based index of the failing (or last) step */
  int exit_code;
  int signal;
  unsigned steps_run;
  uint64_t tar_bytes;
  uint64_t entries;
  int64_t duration_ms;
  int64_t step_ms[AGENT_MAX_STEPS];
  char message[512];
};

/* control.c: parse the `.buildvm/job` control file (NUL-separated records). */
int agent_control_parse (struct agent_job *job, char *data, size_t len, char *msg, size_t msgsz);

/* tarin.c: extract the input disk's tar stream. Secrets land below
 * `secretdir`; the control file is returned in *control (malloc'd). The
 * source tree is not in it: the runner wrote it into the scratch disk. */
int agent_input_extract (int fd, const char *secretdir, char **control, size_t *control_len,
                         char *msg, size_t msgsz);

/* tarout.c: write the declared outputs as a tar stream to fd at offset. */
struct tar_out
{
  int fd;          /* where the tar goes: direct_fd, or fd_buffered */
  int fd_buffered; /* the output disk through the page cache */
  uint64_t offset; /* next write position on the device */
  uint64_t start;
  uint64_t max; /* bytes allowed after start */
  uint64_t entries;
  char *buf; /* staging buffer for block-aligned writes */
  size_t buf_len;
  bool overflow;
};
/* `direct_fd`: the same disk opened O_DIRECT, or -1. */
int tarout_init (struct tar_out *t, int fd, int direct_fd, uint64_t start, uint64_t max);
/* Add the tree at dirfd/rel (not following symlinks) under `prefix`. */
int tarout_add_tree (struct tar_out *t, const char *root, const char *rel, const char *prefix,
                     char *msg, size_t msgsz);
int tarout_finish (struct tar_out *t, char *msg, size_t msgsz);

/* proxy.c: the build's HTTP proxy on 127.0.0.1:3128 over the egress
 * channel, forked when the runner gave the VM one: 1 started, 0 no channel,
 * -1 failed (msg says why). proxy_pid is its pid, or -1. */
int proxy_start (char *msg, size_t msgsz);

/* The virtio-serial port the runner named `name`: its /dev/vportNpM into
 * dev. 0, or -1 when the VM has no such port. (main.c) */
int agent_find_port (const char *name, char *dev, size_t size);
extern pid_t proxy_pid;

/* main.c: line-oriented forwarding of build output with a byte cap. */
void console_open (void);
void console_printf (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void console_write_raw (const char *data, size_t len);
int console_fd (void);

#endif
