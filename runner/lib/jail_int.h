/* jail_int.h - what the parts of the jail share: struct jail and the calls
 * between jail.c (plan, root, child), jail_cgroup.c, jail_seccomp.c and
 * jail_probe.c (doctor). Not for the callers of jail.h.
 */
#ifndef BUILDVM_JAIL_INT_H
#define BUILDVM_JAIL_INT_H

#include "jail.h"

#include <linux/filter.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JAIL_NS_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)
#define JAIL_OPS_MAX 64
#define JAIL_FILES_MAX 16
#define JAIL_CG_MAX 4
#define MIB (UINT64_C (1) << 20)
#define CPU_PERIOD_US 100000u

/* --- the plan: what the child does between clone and exec ------------------- */

enum op_kind
{
  OP_MKDIR,
  OP_SYMLINK,
  OP_BIND,
  OP_MKNOD,
  OP_TMPFS,
  OP_PROC,
};

struct op
{
  enum op_kind kind;
  char *src;           /* OP_BIND: host path; OP_SYMLINK: the link's target */
  char *dst;           /* absolute host path under the jail's root (before pivot_root) */
  const char *in_jail; /* dst without the root's prefix, for messages */
  unsigned long flags; /* OP_BIND: flags of the bind remount; OP_TMPFS: mount flags */
  mode_t mode;         /* OP_MKDIR, OP_MKNOD */
  dev_t rdev;          /* OP_MKNOD */
  bool file;           /* OP_BIND: the mount point is a file */
  bool own;            /* OP_MKNOD: owned by the job's uid/gid */
};

struct exposed
{
  char *host;
  char *in_jail;
};

struct jail
{
  char *name;
  char *dir;
  bool dir_made;
  bool spawned;
  uid_t uid;
  gid_t gid;
  int lock_fd;
  char *lock_path;
  uint32_t uid_first, uid_count; /* the range, for reaping stale cgroups */
  char *lock_dir;
  uint64_t pids_max;
  uint64_t fsize; /* RLIMIT_FSIZE */
  struct op ops[JAIL_OPS_MAX];
  size_t n_ops;
  struct exposed files[JAIL_FILES_MAX];
  size_t n_files;
  char *cg[JAIL_CG_MAX + 1];    /* leaf cgroups, NULL-terminated */
  char *cg_up[JAIL_CG_MAX + 1]; /* their `buildvm` parents, removed when empty */
  size_t n_cg;
  char cg_note[512];
  struct sock_filter *bpf;
  unsigned short bpf_len;
  unsigned n_denied;
};

/* jail.c: the settings with their defaults filled in */
void jail__settings_resolve (struct jail_settings *out, const struct jail_settings *s);
/* jail.c: take the lock of `uid` when it is free: 1 taken (*fd_out set), 0
 * held by a live job, <0 an error (errno). Also how stale cgroups are reaped. */
int jail__uid_try (int *fd_out, char *path, size_t size, const char *lock_dir, uint32_t uid);

/* jail_cgroup.c. Best effort: every controller the host offers gets a
 * cgroup; what is missing is recorded in j->cg_note. */
void jail__cg_setup (struct jail *j, const struct jail_opts *o);
int jail__cg_attach (struct jail *j, pid_t pid, bvm_error_t *err);
void jail__cg_remove (struct jail *j);
/* The job cgroup of controller `ctrl`, or NULL (doctor). */
const char *jail__cg_for (const struct jail *j, const char *ctrl);

/* jail_seccomp.c: the child's filter into j->bpf, j->bpf_len, j->n_denied */
int jail__filter_build (struct jail *j, bvm_error_t *err);

#endif
