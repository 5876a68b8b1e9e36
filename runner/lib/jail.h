/* jail.h - the second wall: a jail around every VMM process
 *
 * The VM is the first wall between an untrusted build and the host. The jail
 * assumes that wall has fallen - the guest has taken over its QEMU - and
 * limits what that QEMU can reach (docs/security.md has the threat model):
 *
 *   - its own uid/gid, taken from a configured range and never held by two
 *     live jobs (a flock per uid in a host-wide lock directory: a lock that
 *     can be taken means its holder is gone, so stale ones free themselves);
 *   - new mount, PID, IPC, UTS and network namespaces (clone(2): the VMM is
 *     PID 1 of its namespace, so SIGKILL to its host pid ends everything in
 *     it; the network namespace has only a loopback interface, down), and a
 *     cgroup namespace rooted at its own cgroup when the kernel has one;
 *   - pivot_root into a tmpfs that holds only /usr (read-only: the VMM's own
 *     binary, libraries and firmware), the files exposed with jail_expose()
 *     under /vm, a few device nodes under /dev, and a procfs of its own PID
 *     namespace restricted to process directories (`subset=pid`);
 *   - every capability dropped (bounding, ambient, inheritable, permitted,
 *     effective), no_new_privs, rlimits (open files, processes, file size,
 *     no core dumps), only stdin/stdout/stderr open, an environment of PATH
 *     alone;
 *   - a seccomp filter (libseccomp, compiled in the runner and loaded just
 *     before exec) that refuses with EPERM the system calls a VMM never needs
 *     and that open kernel attack surface (mount, namespaces, ptrace, bpf,
 *     keys, modules, io_uring, ...); QEMU stacks its own `-sandbox` on top;
 *   - memory, pids and CPU limits in a cgroup (v1 per controller, or v2),
 *     nested under the runner's own cgroup, when the host offers them.
 *
 * Building a jail needs root (CAP_SYS_ADMIN and friends in the initial user
 * namespace): jail_available() says whether this process can.
 *
 * Life of a jail (plan, then execute - bubblewrap's SetupOps):
 *
 *     jail_prepare()   take a uid, create the cgroups, plan the root
 *     jail_expose()    add a file (bind mount) or device node to the plan
 *     jail_path()      where an exposed file appears inside (/vm/NAME)
 *     jail_spawn()     clone, carry out the plan in the child, exec
 *     ...              the caller kills and reaps the process
 *     jail_destroy()   remove the cgroups and the root, release the uid
 *
 * Library code: never prints, never exits. The child between clone and exec
 * only makes system calls (everything it needs was computed before clone),
 * so it is safe even when the runner has other threads.
 */
#ifndef BUILDVM_JAIL_H
#define BUILDVM_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "proc.h"

/* uids 2000000000..2000065535: above systemd's container range
 * (524288..1879048191) and the usual /etc/subuid ranges (from 100000), below
 * 2^31 where some tools still misbehave. `buildvm doctor` warns when the
 * configured range overlaps /etc/subuid or /etc/subgid. */
#define JAIL_UID_FIRST_DEFAULT 2000000000u
#define JAIL_UID_COUNT_DEFAULT 65536u
/* Host-wide, not per BUILDVM_HOME: two runners with different homes must not
 * hand out the same uid. /run is a tmpfs, so the files vanish at boot, as do
 * the processes they stood for. */
#define JAIL_LOCK_DIR_DEFAULT "/run/buildvm/jail-uids"

#define JAIL_NOFILE 1024 /* RLIMIT_NOFILE: QEMU needs a few dozen */
#define JAIL_NPROC                                                                                \
  256 /* RLIMIT_NPROC and pids.max: QEMU's threads (vCPUs,
                          * up to 64 I/O workers, RCU, ...), no processes */

enum jail_mode
{
  JAIL_MODE_AUTO = 0, /* jailed when the runner is root, else not (doctor says so) */
  JAIL_MODE_ON,       /* always; a job fails when the jail cannot be built */
  JAIL_MODE_OFF,      /* never (development only) */
};

/* The operator's choices (runner.json `jail`). A zeroed struct means the
 * defaults: auto, JAIL_UID_*_DEFAULT, JAIL_LOCK_DIR_DEFAULT. */
struct jail_settings
{
  enum jail_mode mode;
  uint32_t uid_first;   /* 0: default */
  uint32_t uid_count;   /* 0: default */
  const char *lock_dir; /* NULL: default */
};

int jail_mode_parse (enum jail_mode *out, const char *s);
const char *jail_mode_name (enum jail_mode m);

/* Whether this process can build jails (it must be root); if not, `why`. */
bool jail_available (char *why, size_t whysz);

/* Decide for one job: *use is true when it gets a jail. Fails when the mode
 * is `on` and the jail is unavailable. `s` may be NULL (defaults). */
int jail_decide (bool *use, const struct jail_settings *s, bvm_error_t *err);

struct jail_opts
{
  const char *name; /* for error messages (shown sanitized, at most 64 bytes) */
  const char *dir;  /* the root's mount point on the host: created (must not exist),
                       * removed by jail_destroy; put it in the job's work directory */
  const struct jail_settings *settings; /* uid range and lock directory; NULL: defaults */
  uint64_t memory_max;                  /* bytes, memory cgroup; 0: no memory limit */
  uint64_t pids_max;                    /* pids cgroup and RLIMIT_NPROC; 0: JAIL_NPROC */
  unsigned cpus;                        /* CPU quota in whole CPUs; 0: none */
};
#define JAIL_OPTS_INIT                                                                            \
  {                                                                                               \
    NULL, NULL, NULL, 0, 0, 0                                                                     \
  }

struct jail;

int jail_prepare (struct jail **out, const struct jail_opts *o, bvm_error_t *err);

enum
{
  JAIL_RO = 0,         /* read-only (the default) */
  JAIL_RW = 1u << 0,   /* read-write */
  JAIL_CHOWN = 1u << 1 /* give the host file to the job's uid/gid (mode 0600, or 0400
                        * read-only): for the job's own disks, never for shared files */
};

/* Make `host_path` visible in the jail as /vm/NAME (a regular file: bind
 * mounted nosuid, nodev, noexec, read-only unless JAIL_RW) or /dev/NAME (a
 * character device: with JAIL_CHOWN a private node owned by the job, mode
 * 0600, so a root-only /dev/kvm works for this job and no other; without, a
 * bind mount of the host node). A file that is not JAIL_CHOWN must already be
 * readable (and, if JAIL_RW, writable) by others. RLIMIT_FSIZE becomes the
 * size of the largest JAIL_RW file plus 1 MiB. */
int jail_expose (struct jail *j, const char *host_path, const char *name, unsigned flags,
                 bvm_error_t *err);

/* The in-jail path of an exposed host path ("/vm/rootfs.ext4"), or NULL. */
const char *jail_path (const struct jail *j, const char *host_path);

/* Start argv[0] (looked up in PATH) in the jail: a program under /usr runs
 * from the jail's /usr, one elsewhere is bound read-only at /vmm/NAME first
 * (its libraries, or a script's interpreter, must come from /usr). It runs
 * with stdin/stdout/stderr from fds->stdin_fd/stdout_fd/stderr_fd (-1:
 * /dev/null) and nothing else; its own session when fds->new_session. The
 * child always gets PR_SET_PDEATHSIG(SIGKILL); fds->pre_exec is not
 * supported (the jail is the pre-exec step). Errors in the child before exec
 * come back as errors from here, naming the failing step. The caller kills
 * (SIGKILL to *out) and reaps the process before jail_destroy(). One spawn
 * per jail. */
int jail_spawn (pid_t *out, struct jail *j, const char *const *argv, const struct proc_opts *fds,
                bvm_error_t *err);

uid_t jail_uid (const struct jail *j);
gid_t jail_gid (const struct jail *j);
/* The directories of the job's cgroups (NULL-terminated; empty when the host
 * offers none), and why a controller is missing ("" when none is). */
const char *const *jail_cgroups (const struct jail *j);
const char *jail_cgroup_note (const struct jail *j);

/* Remove the cgroups (the process must be gone) and the root directory,
 * release the uid. Safe on NULL. Errors are ignored: every resource also
 * frees itself once its owner is gone (stale cgroups of a uid are removed
 * when the uid is next taken, work directories by workdir_reap_stale). */
void jail_destroy (struct jail *j);

/* --- what this host offers, for `buildvm doctor` ---------------------------- */

#define JAIL_LAYERS_MAX 20

struct jail_layer
{
  const char *name;
  bool active;
  char detail[320];
};

struct jail_report
{
  size_t n;
  struct jail_layer layers[JAIL_LAYERS_MAX];
};

/* One line per layer: active or not, and why. Builds a trial jail around
 * /usr/bin/true (when root) to show that the whole chain works here.
 * Returns the number of inactive layers. */
int jail_probe (struct jail_report *out, const struct jail_settings *s);

#endif
