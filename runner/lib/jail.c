/* jail.c - the jail around every VMM process, see jail.h and docs/security.md */
#include "jail_int.h"
#include "fs.h"
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int
jail_mode_parse (enum jail_mode *out, const char *s)
{
  if (strcmp (s, "auto") == 0)
    *out = JAIL_MODE_AUTO;
  else if (strcmp (s, "on") == 0)
    *out = JAIL_MODE_ON;
  else if (strcmp (s, "off") == 0)
    *out = JAIL_MODE_OFF;
  else
    return -1;
  return 0;
}

const char *
jail_mode_name (enum jail_mode m)
{
  switch (m)
    {
    case JAIL_MODE_AUTO: return "auto";
    case JAIL_MODE_ON: return "on";
    case JAIL_MODE_OFF: return "off";
    }
  return "?";
}

bool
jail_available (char *why, size_t whysz)
{
  if (why && whysz)
    why[0] = '\0';
  if (geteuid () != 0)
    {
      if (why)
        snprintf (why, whysz,
                  "the runner is not root (euid %u): namespaces, pivot_root, a uid of "
                  "its own and cgroups need root",
                  (unsigned) geteuid ());
      return false;
    }
  return true;
}

int
jail_decide (bool *use, const struct jail_settings *s, bvm_error_t *err)
{
  enum jail_mode m = s ? s->mode : JAIL_MODE_AUTO;
  char why[256];

  *use = false;
  if (m == JAIL_MODE_OFF)
    return 0;
  if (jail_available (why, sizeof why))
    {
      *use = true;
      return 0;
    }
  if (m == JAIL_MODE_ON)
    return bvm_error_code (err, BVM_E_INTERNAL, 0,
                           "`jail.enabled` is `on` but no jail can be built: %s", why);
  return 0;
}

static bool
name_ok (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n > 64 || strcmp (s, ".") == 0 || strcmp (s, "..") == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    {
      char c = s[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
            || c == '_' || c == '-'))
        return false;
    }
  return true;
}

void
jail__settings_resolve (struct jail_settings *out, const struct jail_settings *s)
{
  if (s != NULL)
    *out = *s;
  else
    memset (out, 0, sizeof *out);
  if (out->uid_first == 0)
    out->uid_first = JAIL_UID_FIRST_DEFAULT;
  if (out->uid_count == 0)
    out->uid_count = JAIL_UID_COUNT_DEFAULT;
  if (out->lock_dir == NULL)
    out->lock_dir = JAIL_LOCK_DIR_DEFAULT;
}

/* --- uids: one flock per uid in a host-wide directory ------------------------- */

/* Take the lock of `uid` when it is free: 1 taken (*fd set), 0 held by a
 * live job, <0 an error (errno). */
int
jail__uid_try (int *fd_out, char *path, size_t size, const char *lock_dir, uint32_t uid)
{
  struct stat a, b;
  int fd;

  if (snprintf_checked (path, size, "%s/%u", lock_dir, uid) < 0)
    return -1;
  fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return -1;
  if (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      int e = errno;
      close (fd);
      errno = e;
      return e == EWOULDBLOCK ? 0 : -1;
    }
  /* A holder unlinks its file before it lets go of the lock, so a lock
   * taken on a file that is no longer (or no longer this file) at `path`
   * holds nothing: someone else may lock the new file. */
  if (fstat (fd, &a) < 0 || lstat (path, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
    {
      close (fd);
      return 0;
    }
  *fd_out = fd;
  return 1;
}

static int
uid_take (struct jail *j, const struct jail_settings *s, bvm_error_t *err)
{
  uint32_t start = 0;
  int ret;

  if ((uint64_t) s->uid_first + s->uid_count > UINT32_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the jail uid range %u+%u goes past the largest uid", s->uid_first,
                           s->uid_count);
  ret = fs_mkdir_p (s->lock_dir, 0700, err);
  if (ret < 0)
    return bvm_error_wrap (err, "the jail's uid locks");
  /* a random start spreads concurrent runners over the range, so they
   * rarely contend for the same lock */
  if (getrandom (&start, sizeof start, 0) != (ssize_t) sizeof start)
    start = (uint32_t) getpid ();
  start %= s->uid_count;
  for (uint32_t i = 0; i < s->uid_count; i++)
    {
      uint32_t uid = s->uid_first + (start + i) % s->uid_count;
      char path[PATH_MAX];
      int fd = -1;

      ret = jail__uid_try (&fd, path, sizeof path, s->lock_dir, uid);
      if (ret < 0)
        return bvm_error (err, errno, "the jail uid lock `%s/%u`", s->lock_dir, uid);
      if (ret == 0)
        continue; /* a live job has it */
      j->lock_path = strdup (path);
      if (j->lock_path == NULL)
        {
          close (fd);
          return bvm_error (err, ENOMEM, "jail");
        }
      j->lock_fd = fd;
      j->uid = uid;
      j->gid = uid;
      return 0;
    }
  return bvm_error_code (err, BVM_E_LIMIT, 0,
                         "all %u jail uids from %u are held by live jobs (locks in `%s`)",
                         s->uid_count, s->uid_first, s->lock_dir);
}

static void
uid_release (struct jail *j)
{
  if (j->lock_fd < 0)
    return;
  /* unlink first, while still holding the lock: see uid_take */
  unlink (j->lock_path);
  close (j->lock_fd);
  j->lock_fd = -1;
}

/* --- planning the root -------------------------------------------------------- */

static struct op *
op_add (struct jail *j, enum op_kind kind, const char *in_jail, bvm_error_t *err)
{
  struct op *op;

  if (j->n_ops == JAIL_OPS_MAX)
    {
      bvm_error (err, E2BIG, "jail `%s`: too many files", j->name);
      return NULL;
    }
  op = &j->ops[j->n_ops];
  memset (op, 0, sizeof *op);
  if (asprintf (&op->dst, "%s%s", j->dir, in_jail) < 0)
    {
      op->dst = NULL;
      bvm_error (err, ENOMEM, "jail");
      return NULL;
    }
  op->kind = kind;
  op->in_jail = op->dst + strlen (j->dir);
  j->n_ops++;
  return op;
}

static int
plan_mkdir (struct jail *j, const char *in_jail, mode_t mode, bvm_error_t *err)
{
  struct op *op = op_add (j, OP_MKDIR, in_jail, err);
  if (op == NULL)
    return -1;
  op->mode = mode;
  return 0;
}

static int
plan_symlink (struct jail *j, const char *in_jail, const char *target, bvm_error_t *err)
{
  struct op *op = op_add (j, OP_SYMLINK, in_jail, err);
  if (op == NULL)
    return -1;
  op->src = strdup (target);
  return op->src ? 0 : bvm_error (err, ENOMEM, "jail");
}

static int
plan_bind (struct jail *j, const char *in_jail, const char *host, bool file, unsigned long flags,
           bvm_error_t *err)
{
  struct op *op = op_add (j, OP_BIND, in_jail, err);
  if (op == NULL)
    return -1;
  op->src = strdup (host);
  op->file = file;
  op->flags = flags;
  return op->src ? 0 : bvm_error (err, ENOMEM, "jail");
}

/* The fixed part of every root:
 *
 *   /usr          the host's, read-only, nosuid, nodev: the VMM's binary,
 *                 libraries, modules and firmware (public software)
 *   /bin /lib...  as on the host: symlinks into /usr, or read-only binds
 *   /vm           the exposed files (jail_expose)
 *   /dev          a tmpfs: null, zero, urandom, std{in,out,err} and fd links
 *                 into /proc/self, exposed devices
 *   /proc         this PID namespace's processes only (subset=pid)
 *
 * No /etc, /home, /tmp, /run, /sys, /var: nothing of the runner, of other
 * jobs or of the host's configuration. */
static int
plan_base (struct jail *j, bvm_error_t *err)
{
  static const char *const top[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32" };
  static const char *const devs[] = { "null", "zero", "urandom" };
  static const char *const links[][2] = {
    { "/dev/fd", "/proc/self/fd" },
    { "/dev/stdin", "/proc/self/fd/0" },
    { "/dev/stdout", "/proc/self/fd/1" },
    { "/dev/stderr", "/proc/self/fd/2" },
  };
  const unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV;
  struct op *op;

  if (plan_mkdir (j, "/usr", 0755, err) < 0 || plan_bind (j, "/usr", "/usr", false, ro, err) < 0)
    return -1;
  for (size_t i = 0; i < ARRAY_SIZE (top); i++)
    {
      char host[32], target[PATH_MAX];
      struct stat st;
      ssize_t n;

      snprintf (host, sizeof host, "/%s", top[i]);
      if (lstat (host, &st) < 0)
        continue;
      if (S_ISLNK (st.st_mode))
        {
          n = readlink (host, target, sizeof target - 1);
          if (n <= 0)
            continue;
          target[n] = '\0';
          if (plan_symlink (j, host, target, err) < 0)
            return -1;
        }
      else if (S_ISDIR (st.st_mode))
        {
          if (plan_mkdir (j, host, 0755, err) < 0 || plan_bind (j, host, host, false, ro, err) < 0)
            return -1;
        }
    }
  if (plan_mkdir (j, "/vm", 0755, err) < 0 || plan_mkdir (j, "/dev", 0755, err) < 0)
    return -1;
  /* not nodev: a device exposed with JAIL_CHOWN is a node made here */
  if ((op = op_add (j, OP_TMPFS, "/dev", err)) == NULL)
    return -1;
  op->flags = MS_NOSUID | MS_NOEXEC;
  for (size_t i = 0; i < ARRAY_SIZE (devs); i++)
    {
      char p[32];
      snprintf (p, sizeof p, "/dev/%s", devs[i]);
      if (plan_bind (j, p, p, true, MS_NOSUID | MS_NOEXEC, err) < 0)
        return -1;
    }
  for (size_t i = 0; i < ARRAY_SIZE (links); i++)
    if (plan_symlink (j, links[i][0], links[i][1], err) < 0)
      return -1;
  if (plan_mkdir (j, "/proc", 0555, err) < 0 || op_add (j, OP_PROC, "/proc", err) == NULL)
    return -1;
  return 0;
}

int
jail_prepare (struct jail **out, const struct jail_opts *o, bvm_error_t *err)
{
  struct jail_settings s;
  struct jail *j;
  int ret;

  jail__settings_resolve (&s, o->settings);
  if (o->dir == NULL || o->dir[0] != '/' || strlen (o->dir) > PATH_MAX / 2)
    return bvm_error_code (err, BVM_E_INVALID, 0, "a jail needs an absolute directory");
  j = calloc (1, sizeof *j);
  if (j == NULL)
    return bvm_error (err, ENOMEM, "jail");
  j->lock_fd = -1;
  j->pids_max = o->pids_max ? o->pids_max : JAIL_NPROC;
  /* the name only shows in messages: keep it short and printable */
  if (asprintf (&j->name, "%.64s", o->name && *o->name ? o->name : "vm") < 0)
    j->name = NULL;
  for (char *p = j->name; p && *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
          || *p == '.' || *p == '-'))
      *p = '_';
  j->dir = strdup (o->dir);
  if (j->name == NULL || j->dir == NULL)
    {
      ret = bvm_error (err, ENOMEM, "jail");
      goto fail;
    }
  if (mkdir (j->dir, 0700) < 0)
    {
      ret = bvm_error (err, errno, "create the jail root `%s`", j->dir);
      goto fail;
    }
  j->dir_made = true;
  j->uid_first = s.uid_first;
  j->uid_count = s.uid_count;
  j->lock_dir = strdup (s.lock_dir);
  if (j->lock_dir == NULL)
    {
      ret = bvm_error (err, ENOMEM, "jail");
      goto fail;
    }
  if ((ret = uid_take (j, &s, err)) < 0 || (ret = jail__filter_build (j, err)) < 0
      || (ret = plan_base (j, err)) < 0)
    goto fail;
  jail__cg_setup (j, o);
  *out = j;
  return 0;
fail:
  jail_destroy (j);
  return ret;
}

/* Hand a job's own file to the job's uid: opened without following links,
 * checked and changed on the descriptor. */
static int
give_to_job (const struct jail *j, const char *host, bool rw, bvm_error_t *err)
{
  cleanup_close int fd = open (host, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  struct stat st;

  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", host);
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", host);
  if (!S_ISREG (st.st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not a regular file", host);
  if (fchown (fd, j->uid, j->gid) < 0 || fchmod (fd, rw ? 0600 : 0400) < 0)
    return bvm_error (err, errno, "give `%s` to the jail's uid %u", host, (unsigned) j->uid);
  return 0;
}

int
jail_expose (struct jail *j, const char *host, const char *name, unsigned flags, bvm_error_t *err)
{
  bool rw = (flags & JAIL_RW) != 0;
  struct exposed *f;
  struct stat st;
  char in_jail[96];
  int ret;

  if (j->spawned)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "jail `%s` is already running", j->name);
  if (!name_ok (name))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "jail file name `%s` is not [A-Za-z0-9._-]{1,64}", name);
  if (j->n_files == JAIL_FILES_MAX)
    return bvm_error (err, E2BIG, "jail `%s`: too many files", j->name);
  if (stat (host, &st) < 0)
    return bvm_error (err, errno, "expose `%s` in the jail", host);
  if (S_ISREG (st.st_mode))
    snprintf (in_jail, sizeof in_jail, "/vm/%s", name);
  else if (S_ISCHR (st.st_mode))
    snprintf (in_jail, sizeof in_jail, "/dev/%s", name);
  else
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`%s` is neither a regular file nor a character device", host);
  for (size_t i = 0; i < j->n_files; i++)
    if (strcmp (j->files[i].host, host) == 0 || strcmp (j->files[i].in_jail, in_jail) == 0)
      return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is already in the jail as `%s`",
                             j->files[i].host, j->files[i].in_jail);
  for (size_t i = 0; i < j->n_ops; i++)
    if (strcmp (j->ops[i].in_jail, in_jail) == 0)
      return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is taken in the jail", in_jail);

  if (S_ISREG (st.st_mode))
    {
      if (flags & JAIL_CHOWN)
        {
          if ((ret = give_to_job (j, host, rw, err)) < 0)
            return ret;
        }
      else if (!(st.st_mode & S_IROTH) || (rw && !(st.st_mode & S_IWOTH)))
        /* a shared file (the kernel, the rootfs) is never handed over */
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "`%s` (mode %04o) is not %s by others, so not by the jail's uid",
                               host, (unsigned) (st.st_mode & 07777),
                               rw ? "readable and writable" : "readable");
      ret = plan_bind (j, in_jail, host, true,
                       MS_NOSUID | MS_NODEV | MS_NOEXEC | (rw ? 0 : MS_RDONLY), err);
      if (ret < 0)
        return ret;
      if (rw && (uint64_t) st.st_size + MIB > j->fsize)
        j->fsize = (uint64_t) st.st_size + MIB;
    }
  else if (flags & JAIL_CHOWN)
    {
      /* a node of our own, owned by the job: a 0600 root device on the
       * host (/dev/kvm) becomes usable by this job's uid, and by no other */
      struct op *op = op_add (j, OP_MKNOD, in_jail, err);
      if (op == NULL)
        return -1;
      op->mode = 0600;
      op->rdev = st.st_rdev;
      op->own = true;
    }
  else if ((ret = plan_bind (j, in_jail, host, true, MS_NOSUID | MS_NOEXEC, err)) < 0)
    return ret;

  f = &j->files[j->n_files];
  f->host = strdup (host);
  f->in_jail = strdup (in_jail);
  if (f->host == NULL || f->in_jail == NULL)
    {
      free (f->host);
      free (f->in_jail);
      f->host = f->in_jail = NULL;
      return bvm_error (err, ENOMEM, "jail");
    }
  j->n_files++;
  return 0;
}

const char *
jail_path (const struct jail *j, const char *host_path)
{
  for (size_t i = 0; i < j->n_files; i++)
    if (strcmp (j->files[i].host, host_path) == 0)
      return j->files[i].in_jail;
  return NULL;
}

uid_t
jail_uid (const struct jail *j)
{
  return j->uid;
}

gid_t
jail_gid (const struct jail *j)
{
  return j->gid;
}

const char *const *
jail_cgroups (const struct jail *j)
{
  return (const char *const *) j->cg;
}

const char *
jail_cgroup_note (const struct jail *j)
{
  return j->cg_note;
}

void
jail_destroy (struct jail *j)
{
  if (j == NULL)
    return;
  jail__cg_remove (j);
  /* only an empty mount point on the host: the root's mounts lived in the
   * child's mount namespace and went with it */
  if (j->dir_made)
    rmdir (j->dir);
  uid_release (j);
  for (size_t i = 0; i < j->n_ops; i++)
    {
      free (j->ops[i].src);
      free (j->ops[i].dst);
    }
  for (size_t i = 0; i < j->n_files; i++)
    {
      free (j->files[i].host);
      free (j->files[i].in_jail);
    }
  free (j->lock_path);
  free (j->lock_dir);
  free (j->bpf);
  free (j->name);
  free (j->dir);
  free (j);
}

/* --- the child ---------------------------------------------------------------- */

enum stage
{
  ST_SETUP,
  ST_SESSION,
  ST_CGROUPNS,
  ST_PRIVATE,
  ST_ROOT,
  ST_OP,
  ST_PIVOT,
  ST_OLDROOT,
  ST_READONLY,
  ST_HOSTNAME,
  ST_STDIO,
  ST_RLIMIT,
  ST_CAPS,
  ST_CREDS,
  ST_PDEATHSIG,
  ST_NNP,
  ST_SECCOMP,
  ST_EXEC,
};

static const char *const stage_names[] = {
  [ST_SETUP] = "setting up the child's descriptors",
  [ST_SESSION] = "setsid",
  [ST_CGROUPNS] = "entering a cgroup namespace",
  [ST_PRIVATE] = "making the mounts private",
  [ST_ROOT] = "mounting the root tmpfs",
  [ST_OP] = "",
  [ST_PIVOT] = "pivot_root",
  [ST_OLDROOT] = "detaching the old root",
  [ST_READONLY] = "making the root read-only",
  [ST_HOSTNAME] = "sethostname",
  [ST_STDIO] = "setting up stdin, stdout and stderr",
  [ST_RLIMIT] = "setrlimit",
  [ST_CAPS] = "dropping capabilities",
  [ST_CREDS] = "changing to the job's uid and gid",
  [ST_PDEATHSIG] = "PR_SET_PDEATHSIG",
  [ST_NNP] = "PR_SET_NO_NEW_PRIVS",
  [ST_SECCOMP] = "loading the seccomp filter",
  [ST_EXEC] = "exec",
};

struct child_report
{
  int stage;
  int op;
  int errnum;
};

struct child_ctx
{
  const struct jail *j;
  char *const *argv;
  const char *exec_path; /* inside the jail */
  int stdio[3];
  int err_wr, err_rd, sync_rd, sync_wr;
  bool new_session;
};

static void __attribute__ ((noreturn)) child_fail (int fd, int stage, int op)
{
  struct child_report r = { stage, op, errno };
  if (write (fd, &r, sizeof r) < 0)
    _exit (127);
  _exit (127);
}

static int
op_run (const struct op *op, uid_t uid, gid_t gid)
{
  int fd;

  switch (op->kind)
    {
    case OP_MKDIR: return mkdir (op->dst, op->mode) < 0 && errno != EEXIST ? -1 : 0;
    case OP_SYMLINK: return symlink (op->src, op->dst);
    case OP_TMPFS:
      return mount ("tmpfs", op->dst, "tmpfs", op->flags, "mode=0755,size=64k,nr_inodes=64");
    case OP_PROC:
      /* only this PID namespace's processes, and none of /proc/sys,
       * /proc/kallsyms, ...: subset=pid (Linux 5.8); hidepid=2 before */
      if (mount ("proc", op->dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "hidepid=invisible,subset=pid")
          == 0)
        return 0;
      return mount ("proc", op->dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2");
    case OP_MKNOD:
      if (mknod (op->dst, S_IFCHR | op->mode, op->rdev) < 0)
        return -1;
      return op->own ? chown (op->dst, uid, gid) : 0;
    case OP_BIND:
      if (op->file)
        {
          fd = open (op->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
          if (fd < 0)
            return -1;
          close (fd);
        }
      else if (mkdir (op->dst, 0755) < 0 && errno != EEXIST)
        return -1;
      /* not MS_REC: whatever is mounted below a source stays out */
      if (mount (op->src, op->dst, NULL, MS_BIND, NULL) < 0)
        return -1;
      /* a bind mount takes its flags only from a remount */
      return mount (NULL, op->dst, NULL, MS_REMOUNT | MS_BIND | op->flags, NULL);
    }
  errno = EINVAL;
  return -1;
}

/* Between clone and exec: system calls only (no malloc, no stdio, no locks
 * the parent's other threads might have held), in this order:
 *
 *   descriptors and signals, wait for the runner (it puts us into our
 *   cgroups), cgroup namespace, the root (tmpfs, plan, pivot_root, old root
 *   detached, read-only), hostname, stdio pipes to the job, rlimits,
 *   capabilities (bounding, ambient), groups, gid, uid, capabilities
 *   (capset: inheritable too), parent-death signal again (a uid change clears
 *   it), no_new_privs, seccomp, exec.
 */
static void __attribute__ ((noreturn)) jail_child (const struct child_ctx *c)
{
  const struct jail *j = c->j;
  int efd = c->err_wr;
  int want[5], moved[5];
  char *const env[] = { (char *) "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
  struct __user_cap_header_struct caph = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct capd[2];
  struct sock_fprog prog = { j->bpf_len, j->bpf };
  const struct rlimit lim_nofile = { JAIL_NOFILE, JAIL_NOFILE };
  const struct rlimit lim_nproc = { j->pids_max, j->pids_max };
  const struct rlimit lim_fsize = { j->fsize, j->fsize };
  const struct rlimit lim_core = { 0, 0 };
  struct sigaction dfl;
  sigset_t none;
  int null;
  char go;
  ssize_t n;

  close (c->err_rd);
  close (c->sync_wr);
  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction (sig, &dfl, NULL);
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  /* getppid() is 0 in a new PID namespace: whether the runner still lives
   * is learnt from the sync pipe below */
  if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0)
    child_fail (efd, ST_PDEATHSIG, -1);
  umask (022);

  /* stdio onto 0..2, the error pipe onto 3, the sync pipe onto 4;
   * everything out of the way first (a source may be 0..4) */
  null = open ("/dev/null", O_RDWR | O_CLOEXEC);
  for (int i = 0; i < 3; i++)
    want[i] = c->stdio[i] >= 0 ? c->stdio[i] : null;
  want[3] = efd;
  want[4] = c->sync_rd;
  for (int i = 0; i < 5; i++)
    {
      moved[i] = -1;
      if (want[i] < 0)
        continue;
      moved[i] = fcntl (want[i], F_DUPFD_CLOEXEC, 10);
      if (moved[i] < 0)
        child_fail (efd, ST_SETUP, -1);
    }
  for (int i = 0; i < 5; i++)
    if (moved[i] >= 0 && dup3 (moved[i], i, i < 3 ? 0 : O_CLOEXEC) < 0)
      child_fail (efd, ST_SETUP, -1);
  efd = 3;
  proc_close_from (5);
  if (c->new_session && setsid () < 0)
    child_fail (efd, ST_SESSION, -1);

  do
    n = read (4, &go, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1)
    _exit (127); /* the runner is gone */

  /* /proc/self/cgroup then shows "/" rather than the runner's cgroups; a
   * kernel without cgroup namespaces (EINVAL) just shows the paths */
  if (syscall (SYS_unshare, CLONE_NEWCGROUP) < 0 && errno != EINVAL)
    child_fail (efd, ST_CGROUPNS, -1);

  /* nothing we mount may propagate back to the host */
  if (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    child_fail (efd, ST_PRIVATE, -1);
  if (mount ("tmpfs", j->dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k,nr_inodes=64")
      < 0)
    child_fail (efd, ST_ROOT, -1);
  for (size_t i = 0; i < j->n_ops; i++)
    if (op_run (&j->ops[i], j->uid, j->gid) < 0)
      child_fail (efd, ST_OP, (int) i);
  /* pivot_root(".", "."): the old root ends up on top of the new one and is
   * detached right away, so no directory for it is needed */
  if (chdir (j->dir) < 0 || syscall (SYS_pivot_root, ".", ".") < 0)
    child_fail (efd, ST_PIVOT, -1);
  if (umount2 (".", MNT_DETACH) < 0 || chdir ("/") < 0)
    child_fail (efd, ST_OLDROOT, -1);
  if (mount (NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0
      || mount (NULL, "/dev", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL)
             < 0)
    child_fail (efd, ST_READONLY, -1);
  if (sethostname ("buildvm", 7) < 0)
    child_fail (efd, ST_HOSTNAME, -1);
  /* stdio that was /dev/null: the jail's own, not a reference into the host's
   * mount tree */
  for (int fd = 0; fd < 3; fd++)
    if (c->stdio[fd] < 0)
      {
        int n0 = open ("/dev/null", O_RDWR | O_CLOEXEC);
        if (n0 < 0 || dup2 (n0, fd) < 0)
          child_fail (efd, ST_STDIO, fd);
        close (n0);
      }

  /* A pipe belongs to the runner (root, 0600): reopening it through
   * /proc/self/fd/N - QEMU opens /dev/stderr for the kernel console - would
   * fail for the job's uid. The read ends stay the runner's alone. */
  for (int fd = 0; fd < 3; fd++)
    {
      struct stat st;
      if (fstat (fd, &st) == 0 && S_ISFIFO (st.st_mode) && fchown (fd, j->uid, j->gid) < 0)
        child_fail (efd, ST_STDIO, fd);
    }

  /* hard limits too, while we may still set them: the VMM cannot raise them */
  if (setrlimit (RLIMIT_NOFILE, &lim_nofile) < 0 || setrlimit (RLIMIT_NPROC, &lim_nproc) < 0
      || setrlimit (RLIMIT_FSIZE, &lim_fsize) < 0 || setrlimit (RLIMIT_CORE, &lim_core) < 0)
    child_fail (efd, ST_RLIMIT, -1);
  /* the worker's own memory cap is not the VMM's: it needs the guest's */
  proc_lift_memory_limit ();

  /* the bounding set needs CAP_SETPCAP: drop it while we are root */
  for (int cap = 0; prctl (PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
    if (prctl (PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
      child_fail (efd, ST_CAPS, cap);
  if (prctl (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    child_fail (efd, ST_CAPS, -1);
  /* raw system calls: glibc's wrappers would try to signal the runner's
   * other threads (setxid broadcast), which are not ours */
  if (syscall (SYS_setgroups, 0, NULL) < 0 || syscall (SYS_setresgid, j->gid, j->gid, j->gid) < 0
      || syscall (SYS_setresuid, j->uid, j->uid, j->uid) < 0)
    child_fail (efd, ST_CREDS, -1);
  /* the uid change cleared permitted and effective; inheritable survives it */
  memset (capd, 0, sizeof capd);
  if (syscall (SYS_capset, &caph, capd) < 0)
    child_fail (efd, ST_CAPS, -1);

  /* the uid change also cleared the parent-death signal; if the runner died
   * before it is set again, the sync pipe has lost its writer */
  if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0)
    child_fail (efd, ST_PDEATHSIG, -1);
  {
    struct pollfd p = { 4, POLLIN, 0 };
    if (poll (&p, 1, 0) < 0 || (p.revents & (POLLHUP | POLLERR)))
      _exit (127);
  }
  if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    child_fail (efd, ST_NNP, -1);
  if (prctl (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
    child_fail (efd, ST_SECCOMP, -1);
  execve (c->exec_path, c->argv, env);
  child_fail (efd, ST_EXEC, -1);
}

static int
child_error (const struct jail *j, const struct child_report *r, const char *prog,
             bvm_error_t *err)
{
  static const char *const op_names[] = {
    [OP_MKDIR] = "mkdir", [OP_SYMLINK] = "symlink",      [OP_BIND] = "bind mount",
    [OP_MKNOD] = "mknod", [OP_TMPFS] = "mount tmpfs on", [OP_PROC] = "mount proc on"
  };
  if (r->stage == ST_OP && r->op >= 0 && (size_t) r->op < j->n_ops)
    {
      const struct op *op = &j->ops[r->op];
      return bvm_error (err, r->errnum, "jail `%s`: %s `%s`%s%s", j->name, op_names[op->kind],
                        op->in_jail, op->src && op->kind == OP_BIND ? " from " : "",
                        op->src && op->kind == OP_BIND ? op->src : "");
    }
  if (r->stage == ST_EXEC)
    return bvm_error (err, r->errnum, "jail `%s`: exec `%s`", j->name, prog);
  if (r->stage >= 0 && (size_t) r->stage < ARRAY_SIZE (stage_names))
    return bvm_error (err, r->errnum, "jail `%s`: %s", j->name, stage_names[r->stage]);
  return bvm_error (err, r->errnum, "jail `%s`: the child failed", j->name);
}

int
jail_spawn (pid_t *out, struct jail *j, const char *const *argv, const struct proc_opts *fds,
            bvm_error_t *err)
{
  cleanup_free char *prog = NULL;
  cleanup_free char *real = NULL;
  struct child_ctx c;
  struct child_report rep;
  int ep[2] = { -1, -1 }, sp[2] = { -1, -1 };
  cleanup_pid pid_t pid = -1; /* the VMM: killed and reaped on every error path */
  ssize_t n;
  int ret;

  if (j->spawned)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "jail `%s` was already used", j->name);
  if (fds->pre_exec != NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "a jailed process takes no pre_exec hook");
  ret = proc_which (&prog, argv[0], err);
  if (ret < 0)
    return ret;
  real = realpath (prog, NULL);
  if (real == NULL)
    return bvm_error (err, errno, "`%s`", prog);
  memset (&c, 0, sizeof c);
  /* /usr is at the same place inside. A VMM installed elsewhere (or a
   * stand-in script in a test) is bound read-only at /vmm/NAME and run from
   * there; a script's interpreter still comes from /usr. */
  if (strncmp (real, "/usr/", 5) == 0)
    c.exec_path = real;
  else
    {
      const char *base = strrchr (real, '/') + 1;
      char in_jail[96];
      struct op *op;

      snprintf (in_jail, sizeof in_jail, "/vmm/%s", name_ok (base) ? base : "vmm");
      if (plan_mkdir (j, "/vmm", 0755, err) < 0
          || plan_bind (j, in_jail, real, true, MS_RDONLY | MS_NOSUID | MS_NODEV, err) < 0)
        return -1;
      op = &j->ops[j->n_ops - 1];
      c.exec_path = op->in_jail;
    }
  if (pipe2 (ep, O_CLOEXEC) < 0 || pipe2 (sp, O_CLOEXEC) < 0)
    {
      ret = bvm_error (err, errno, "pipe");
      for (int i = 0; i < 2; i++)
        if (ep[i] >= 0)
          close (ep[i]);
      return ret;
    }
  c.j = j;
  c.argv = (char *const *) argv;
  c.stdio[0] = fds->stdin_fd;
  c.stdio[1] = fds->stdout_fd;
  c.stdio[2] = fds->stderr_fd;
  c.err_wr = ep[1];
  c.err_rd = ep[0];
  c.sync_rd = sp[0];
  c.sync_wr = sp[1];
  c.new_session = fds->new_session;

  /* the raw system call, as bubblewrap does: fork semantics (no stack of
   * its own) with namespace flags, and the child is PID 1 of the new one */
  pid = (pid_t) syscall (SYS_clone, (unsigned long) (JAIL_NS_FLAGS | SIGCHLD), NULL, NULL, NULL,
                         NULL);
  if (pid < 0)
    {
      ret = bvm_error (err, errno, "clone the jail `%s`", j->name);
      close (ep[0]), close (ep[1]), close (sp[0]), close (sp[1]);
      return ret;
    }
  if (pid == 0)
    jail_child (&c);
  j->spawned = true;
  close (ep[1]);
  close (sp[0]);
  ret = jail__cg_attach (j, pid, err);
  if (ret == 0 && write (sp[1], "g", 1) != 1)
    ret = bvm_error (err, errno, "start the jail `%s`", j->name);
  if (ret == 0)
    {
      do
        n = read (ep[0], &rep, sizeof rep);
      while (n < 0 && errno == EINTR);
      if (n == (ssize_t) sizeof rep)
        ret = child_error (j, &rep, real, err);
      else if (n != 0)
        ret = bvm_error (err, n < 0 ? errno : EIO, "start `%s` in the jail `%s`", real, j->name);
    }
  /* held until now: its hang-up tells the child that the runner died */
  close (sp[1]);
  close (ep[0]);
  if (ret < 0)
    return ret;
  *out = pid;
  pid = -1; /* now owned by the caller */
  return 0;
}
