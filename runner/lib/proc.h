/* proc.h - spawning helper processes (the VMM, mkfs) safely
 *
 * The child gets exactly the file descriptors it is given (everything else is
 * closed), its own session, and SIGKILL when the runner dies. An exec failure
 * is reported to the parent through a close-on-exec pipe, so "no such binary"
 * is an error from proc_spawn(), not a mysterious exit status 127.
 */
#ifndef BUILDVM_PROC_H
#define BUILDVM_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "error.h"

struct proc_opts
{
  int stdin_fd;  /* -1: /dev/null */
  int stdout_fd; /* -1: /dev/null */
  int stderr_fd; /* -1: /dev/null */
  bool new_session;
  bool die_with_parent;
  /* Called in the child after the fds are set up and before exec (the jail
   * hooks in here). Return <0 with errno set to fail the spawn. */
  int (*pre_exec) (void *opaque);
  void *opaque;
};
#define PROC_OPTS_INIT                                                                            \
  {                                                                                               \
    -1, -1, -1, true, true, NULL, NULL                                                            \
  }

/* argv[0] is looked up in PATH when it has no slash. */
int proc_spawn (pid_t *out, const char *const *argv, const struct proc_opts *o, bvm_error_t *err);

/* Run to completion, capturing stdout+stderr into `output` (may be NULL;
 * capped by its own max, excess dropped). Fails when the program cannot be
 * started or runs past timeout_ms (it is killed); otherwise *status is the
 * waitpid status. */
int proc_run (const char *const *argv, struct buf *output, int *status, int64_t timeout_ms,
              bvm_error_t *err);

/* Close every file descriptor from lowfd up (close_range, else a loop):
 * for a child between fork and exec. */
void proc_close_from (int lowfd);

/* Resolve a program name through PATH; *out is malloc'd. */
int proc_which (char **out, const char *name, bvm_error_t *err);

/* Cap the calling process's memory: the soft RLIMIT_DATA (heap and private
 * writable mappings, so an allocation past it fails with ENOMEM instead of
 * the host's OOM killer choosing a victim; read-only mappings of pack files
 * do not count). The hard limit is left as it is, so the programs the
 * process starts (the VMM needs guest memory) get it lifted again:
 * proc_spawn and the jail call proc_lift_memory_limit() before exec.
 * 0 = no cap. */
int proc_limit_memory (uint64_t mib, bvm_error_t *err);

/* Between fork and exec: the soft RLIMIT_DATA back up to the hard limit.
 * Async-signal-safe (system calls only). */
void proc_lift_memory_limit (void);

/* Describe a waitpid status: "exited with status 3", "killed by signal 9". */
const char *proc_status_str (char *buf, size_t size, int status);

#endif
