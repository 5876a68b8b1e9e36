/* main.c - buildvm guest agent: PID 1 of every build VM
 *
 * A straight line: mount the pseudo file systems, find the disks by their
 * virtio serial numbers, mount the scratch disk (the source already in it),
 * unpack the control file and secrets from the input, run each
 * build step as the unprivileged build user under a deadline while forwarding
 * its output byte for byte, write the declared outputs and a result header to
 * the output disk (fsync), reboot. Whatever happens - a failed mount, a hostile
 * build, a bug here - the VM ends: fatal() writes what it can and reboots, and
 * if the agent itself dies the kernel panics, and panic=-1 reboots.
 */
#include "agent.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define SRC_DIR "/work/src"
#define SECRET_DIR "/run/secrets"

static int con_fd = 2;
static int out_fd = -1;
static int64_t t_start;
static struct agent_result result;
static uint64_t log_max = 16u << 20, log_sent;
static bool log_capped;
static bool at_bol = true; /* the console's last byte was a newline */

static int64_t
mono_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- console --------------------------------------------------------------- */

void
console_open (void)
{
  /* virtio-console is ~4x faster than the emulated UART under TCG; fall back
   * to the kernel console (ttyS0) where there is none (Firecracker). */
  int fd = open ("/dev/hvc0", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0)
    fd = open ("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd >= 0)
    {
      struct termios tio;
      if (tcgetattr (fd, &tio) == 0)
        {
          cfmakeraw (&tio);
          tcsetattr (fd, TCSANOW, &tio); /* best effort: only affects \r\n */
        }
      con_fd = fd;
    }
}

int
console_fd (void)
{
  return con_fd;
}

void
console_write_raw (const char *data, size_t len)
{
  if (len > 0)
    at_bol = data[len - 1] == '\n';
  while (len > 0)
    {
      ssize_t n = write (con_fd, data, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return; /* nowhere left to report it */
        }
      data += n;
      len -= (size_t) n;
    }
}

void
console_printf (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n;
  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof buf)
    n = sizeof buf - 1;
  /* the agent's own lines start a line of their own */
  if (!at_bol)
    console_write_raw ("\n", 1);
  console_write_raw (buf, (size_t) n);
}

/* Forward build output as it comes, honouring the job's byte cap. Never cut
 * into lines here: the host redacts secrets in the byte stream and cuts the
 * lines after that, so a split here (a newline added at some length, a `\r`
 * dropped) would cut a secret in two and let it through unmasked. At the cap,
 * the output is cut after its last whole line where it can be. */
static void
forward_output (const char *data, size_t len)
{
  if (log_capped)
    return;
  if (len > log_max - log_sent)
    {
      size_t keep = (size_t) (log_max - log_sent);
      while (keep > 0 && data[keep - 1] != '\n')
        keep--;
      console_write_raw (data, keep);
      log_sent += keep;
      log_capped = true;
      console_printf ("[buildvm-agent: build output reached %llu bytes; "
                      "further output is dropped]\n",
                      (unsigned long long) log_max);
      return;
    }
  console_write_raw (data, len);
  log_sent += len;
}

/* --- result header and the end of the VM ----------------------------------- */

static void
write_header (void)
{
  static char h[AGENT_HEADER_SIZE];
  size_t n;

  if (out_fd < 0)
    return;
  memset (h, 0, sizeof h);
  n = (size_t) snprintf (h, sizeof h,
                         PROTO_HEADER_MAGIC /* the contract: protocol.h */
                             PROTO_HDR_STATUS
                         " %s\n" PROTO_HDR_STEP " %u\n" PROTO_HDR_EXIT " %d\n" PROTO_HDR_SIGNAL
                         " %d\n" PROTO_HDR_STEPS " %u\n" PROTO_HDR_ENTRIES
                         " %llu\n" PROTO_HDR_TAR_BYTES " %llu\n" PROTO_HDR_DURATION_MS " %lld\n",
                         result.status, result.step, result.exit_code, result.signal,
                         result.steps_run, (unsigned long long) result.entries,
                         (unsigned long long) result.tar_bytes,
                         (long long) (mono_ms () - t_start));
  for (unsigned i = 0; i < result.steps_run && n < sizeof h - 64; i++)
    n += (size_t) snprintf (h + n, sizeof h - n, PROTO_HDR_STEP_MS " %u %lld\n", i + 1,
                            (long long) result.step_ms[i]);
  if (result.message[0] && n < sizeof h - 600)
    {
      /* one line, printable ASCII only: the host refuses controls and
       * invalid UTF-8, and a name quoted here may have either */
      for (char *p = result.message; *p; p++)
        if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
          *p = '?';
      n += (size_t) snprintf (h + n, sizeof h - n, PROTO_HDR_MESSAGE " %s\n", result.message);
    }
  if (n < sizeof h - 5)
    snprintf (h + n, sizeof h - n, PROTO_HDR_END "\n");
  if (pwrite (out_fd, h, sizeof h, 0) != (ssize_t) sizeof h)
    console_printf ("buildvm-agent: writing the result header failed: %s\n", strerror (errno));
  if (fsync (out_fd) < 0)
    console_printf ("buildvm-agent: fsync of the output disk failed: %s\n", strerror (errno));
}

static void __attribute__ ((noreturn)) finish (void)
{
  write_header ();
  console_printf ("buildvm-agent: done: %s\n", result.status);
  /* no sync(): the output disk, the only one whose bytes outlive the VM,
   * is written and fsync'ed already (the tar, then the header); a sync
   * would write the build's dirty pages of the scratch disk out through
   * the emulated disk, only for the runner to delete the file */
  reboot (RB_AUTOBOOT);
  /* still here: PID 1 exiting panics the kernel, and panic=-1 reboots */
  _exit (1);
}

static void __attribute__ ((noreturn, format (printf, 1, 2))) fatal (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (result.message, sizeof result.message, fmt, ap);
  va_end (ap);
  result.status = PROTO_STATUS_AGENT_ERROR;
  console_printf ("buildvm-agent: error: %s\n", result.message);
  finish ();
}

/* --- setup ------------------------------------------------------------------ */

static void
do_mount (const char *src, const char *dst, const char *type, unsigned long flags,
          const char *data)
{
  if (mkdir (dst, 0755) < 0 && errno != EEXIST)
    fatal ("mkdir `%s`: %s", dst, strerror (errno));
  if (mount (src, dst, type, flags, data) < 0)
    fatal ("mount %s on `%s`: %s", type, dst, strerror (errno));
}

static void
setup_mounts (void)
{
  const unsigned long safe = MS_NOSUID | MS_NODEV | MS_NOEXEC;

  do_mount ("proc", "/proc", "proc", safe, NULL);
  do_mount ("sysfs", "/sys", "sysfs", safe | MS_RDONLY, NULL);
  do_mount ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755");
  do_mount ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620");
  do_mount ("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m");
  do_mount ("tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m");
  do_mount ("run", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=16m");
}

/* The kernel has user namespaces only because buildah's chroot isolation
 * reads /proc/self/uid_map (issue 17); nothing in the guest may create one
 * (a build user's way to the kernel's namespace code), buildah as root
 * needs none. A kernel without them has no such file. */
static void
no_user_namespaces (void)
{
  int fd = open ("/proc/sys/user/max_user_namespaces", O_WRONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT)
    return;
  if (fd < 0 || write (fd, "0\n", 2) != 2 || close (fd) < 0)
    fatal ("set user.max_user_namespaces to 0: %s", strerror (errno));
}

/* Find /dev/vdX whose virtio serial is `serial`; the runner names its disks. */
static int
find_disk (const char *serial, char *out, size_t outsz)
{
  for (char c = 'a'; c <= 'z'; c++)
    {
      char path[64], buf[64];
      ssize_t n;
      int fd;
      snprintf (path, sizeof path, "/sys/block/vd%c/serial", c);
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      n = read (fd, buf, sizeof buf - 1);
      close (fd);
      if (n <= 0)
        continue;
      buf[n] = '\0';
      while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
      if (strcmp (buf, serial) == 0)
        {
          snprintf (out, outsz, "/dev/vd%c", c);
          return 0;
        }
    }
  return -1;
}

int
agent_find_port (const char *name, char *dev, size_t size)
{
  DIR *d = opendir ("/sys/class/virtio-ports");
  struct dirent *de;
  size_t len = strlen (name);
  int found = -1;

  if (d == NULL)
    return -1;
  while (found < 0 && (de = readdir (d)) != NULL)
    {
      char path[512], buf[64] = { 0 };
      ssize_t n;
      int fd;
      if (de->d_name[0] == '.')
        continue;
      snprintf (path, sizeof path, "/sys/class/virtio-ports/%s/name", de->d_name);
      fd = open (path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      n = read (fd, buf, sizeof buf - 1);
      close (fd);
      if (n > 0 && strncmp (buf, name, len) == 0 && (buf[len] == '\n' || buf[len] == '\0'))
        {
          snprintf (dev, size, "/dev/%s", de->d_name);
          found = 0;
        }
    }
  closedir (d);
  return found;
}

/* A pool VM boots before its job exists (docs/architecture.md, "The pool"):
 * its input and scratch disks are blank until the runner has written the
 * job's input and its scratch file system (the source in it) into them and
 * says PROTO_GO on the control port. Blank is the contract, and checked: a
 * disk with data before the signal is not ours to run. That check (and the
 * kernel's partition scan) leave the blank blocks in the page cache, so
 * they are dropped after the signal (BLKFLSBUF): the agent must read the
 * job's bytes, not what it cached before they were written - t_pool.sh runs
 * jobs through pool VMs, which only pass if it does. A VM without the port
 * is a cold boot, whose disks were there from the start. */
static int
open_blank (const char *dev, const char *what)
{
  static char blank[4096];
  int fd = open (dev, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    fatal ("open %s disk `%s`: %s", what, dev, strerror (errno));
  /* 4 KiB: the tar's first header, the ext4 superblock at 1024 */
  if (pread (fd, blank, sizeof blank, 0) != (ssize_t) sizeof blank)
    fatal ("read %s disk `%s`: %s", what, dev, strerror (errno));
  for (size_t i = 0; i < sizeof blank; i++)
    if (blank[i] != 0)
      fatal ("the %s disk of a pool VM holds data before its job", what);
  return fd;
}

static void
wait_for_job (const char *dev_in, const char *dev_scratch)
{
  char port[300], buf[16];
  size_t have = 0;
  int in, scratch, fd;

  if (agent_find_port (PROTO_CONTROL_PORT, port, sizeof port) < 0)
    {
      console_printf (PROTO_READY_LINE "\n");
      return;
    }
  in = open_blank (dev_in, "input");
  scratch = open_blank (dev_scratch, "scratch");
  /* ready only now: the runner writes the job's disks once it reads this,
   * and the blank check above must have read them before */
  console_printf (PROTO_READY_LINE "\n");
  fd = open (port, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0)
    fatal ("open control port `%s`: %s", port, strerror (errno));
  while (have < sizeof buf && (have == 0 || buf[have - 1] != '\n'))
    {
      ssize_t n = read (fd, buf + have, sizeof buf - have);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        fatal ("the control port closed before the job came");
      have += (size_t) n;
    }
  if (have != sizeof PROTO_GO - 1 || memcmp (buf, PROTO_GO, have) != 0)
    fatal ("unexpected message on the control port");
  if (ioctl (in, BLKFLSBUF, 0) < 0)
    fatal ("drop the input disk's cache: %s", strerror (errno));
  if (ioctl (scratch, BLKFLSBUF, 0) < 0)
    fatal ("drop the scratch disk's cache: %s", strerror (errno));
  close (fd);
  close (scratch);
  close (in);
}

static void
make_build_dir (const char *path, mode_t mode)
{
  if (mkdir (path, mode) < 0 && errno != EEXIST)
    fatal ("mkdir `%s`: %s", path, strerror (errno));
  if (chown (path, AGENT_BUILD_UID, AGENT_BUILD_GID) < 0 || chmod (path, mode) < 0)
    fatal ("chown `%s`: %s", path, strerror (errno));
}

/* Start reading the source tree into the page cache, in a child that the
 * steps do not wait for. The tree is on the scratch disk (the runner wrote
 * it there) and nothing has read it yet: a build that opens its files one
 * by one waits for one small virtio request after another, each an exit to
 * QEMU under emulation. readahead(2) queues each file's reads without
 * waiting, so they overlap and merge, and the build finds most of its
 * files cached. Best effort: errors are ignored, the walk is bounded in
 * depth and never follows a symlink, and the child is gone by the end of
 * the first step (kill_all). */
static void
prefetch_walk (int dfd, unsigned depth)
{
  DIR *d = fdopendir (dfd);
  struct dirent *de;

  if (d == NULL)
    {
      close (dfd);
      return;
    }
  while ((de = readdir (d)) != NULL)
    {
      int fd;
      struct stat st;
      if (de->d_name[0] == '.'
          && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
        continue;
      if (de->d_type == DT_DIR && depth < 64)
        {
          fd = openat (dirfd (d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (fd >= 0)
            prefetch_walk (fd, depth + 1);
        }
      else if (de->d_type == DT_REG)
        {
          /* O_NONBLOCK: the build may have put a FIFO in the file's place */
          fd = openat (dirfd (d), de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
          if (fd < 0)
            continue;
          if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode) && st.st_size > 0)
            readahead (fd, 0, (size_t) st.st_size);
          close (fd);
        }
    }
  closedir (d);
}

static pid_t prefetch_pid = -1;

/* The first step's shell, and for a dynamic one its loader and libc, are
 * asked of the root disk as the agent starts: the reads are done by the
 * VMM on another host thread than the emulated CPU, while the agent
 * mounts, reads its job and sets up, so the step's exec finds them in the
 * page cache. Files a profile lacks are skipped. */
static void
prefetch_shell (void)
{
  static const char *const files[] = {
    "/bin/sh",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
    {
      int fd = open (files[i], O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        continue;
      (void) posix_fadvise (fd, 0, 0, POSIX_FADV_WILLNEED);
      close (fd);
    }
}

static void
prefetch_source (void)
{
  pid_t pid = fork ();
  if (pid > 0)
    prefetch_pid = pid;
  if (pid == 0)
    {
      setpriority (PRIO_PROCESS, 0, 0); /* not the agent's -20 */
      int fd = open (SRC_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd >= 0)
        prefetch_walk (fd, 0);
      _exit (0);
    }
}

/* --- build steps ------------------------------------------------------------- */

static char **
build_env (const struct agent_job *job, const char *step_name)
{
  static char *env[AGENT_MAX_ENV + AGENT_MAX_SECRETS + 32];
  static char step_var[512];
  size_t n = 0;

  env[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  env[n++] = "HOME=/work/home";
  env[n++] = "USER=build";
  env[n++] = "LOGNAME=build";
  env[n++] = "TMPDIR=/work/tmp";
  env[n++] = "LANG=C.UTF-8";
  env[n++] = "BUILDVM=1";
  env[n++] = "BUILDVM_SECRETS=" SECRET_DIR;
  snprintf (step_var, sizeof step_var, "BUILDVM_STEP=%s", step_name);
  env[n++] = step_var;
  if (proxy_pid > 0) /* before the app's env: a build may override them */
    {
      static char *const proxy_env[] = {
        "HTTPS_PROXY=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128",
        "https_proxy=http://127.0.0.1:3128", "http_proxy=http://127.0.0.1:3128",
        "NO_PROXY=localhost,127.0.0.1",      "no_proxy=localhost,127.0.0.1",
      };
      for (size_t i = 0; i < sizeof proxy_env / sizeof proxy_env[0]; i++)
        env[n++] = proxy_env[i];
    }
  for (size_t i = 0; i < job->n_env; i++)
    {
      /* a later assignment of the same name replaces ours (PATH, LANG) */
      size_t klen = (size_t) (strchr (job->env[i], '=') - job->env[i]) + 1;
      bool replaced = false;
      for (size_t j = 0; j < n; j++)
        if (strncmp (env[j], job->env[i], klen) == 0)
          {
            env[j] = job->env[i];
            replaced = true;
            break;
          }
      if (!replaced)
        env[n++] = job->env[i];
    }
  for (size_t i = 0; i < job->n_secret_env; i++)
    {
      static char *vals[AGENT_MAX_SECRETS];
      char path[512];
      int fd;
      struct stat st;
      snprintf (path, sizeof path, SECRET_DIR "/%s", job->secret_env[i].name);
      fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 || fstat (fd, &st) < 0 || st.st_size > (1 << 20))
        fatal ("secret `%s` is missing from the input", job->secret_env[i].name);
      free (vals[i]);
      {
        size_t cap = strlen (job->secret_env[i].var) + 1 + (size_t) st.st_size + 1;
        vals[i] = malloc (cap);
        if (vals[i] == NULL)
          fatal ("out of memory");
      }
      {
        size_t k = (size_t) snprintf (vals[i], strlen (job->secret_env[i].var) + 2,
                                      "%s=", job->secret_env[i].var);
        ssize_t r = read (fd, vals[i] + k, (size_t) st.st_size);
        if (r != st.st_size)
          fatal ("reading secret `%s`", job->secret_env[i].name);
        vals[i][k + (size_t) r] = '\0';
      }
      close (fd);
      env[n++] = vals[i];
    }
  env[n] = NULL;
  return env;
}

static void __attribute__ ((noreturn))
exec_step (const struct agent_job *job, const struct agent_step *s, int out)
{
  sigset_t all;
  struct rlimit core = { 0, 0 }, nproc = { 4096, 4096 };
  int devnull;
  char **env = build_env (job, s->name);

  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);
  for (int sig = 1; sig < NSIG; sig++)
    signal (sig, SIG_DFL);
  if (setsid () < 0)
    _exit (126);
  devnull = open ("/dev/null", O_RDONLY);
  if (devnull < 0 || dup2 (devnull, 0) < 0 || dup2 (out, 1) < 0 || dup2 (out, 2) < 0)
    _exit (126);
  if (setrlimit (RLIMIT_CORE, &core) < 0 || setrlimit (RLIMIT_NPROC, &nproc) < 0)
    _exit (126);
  /* The build runs at the lowest priority and the agent (nice -20, set in
   * main) at the highest: a fork bomb of thousands of processes on one
   * emulated vCPU must not starve the agent past the build's deadline. The
   * build has the VM to itself, so this costs it nothing otherwise. */
  if (setpriority (PRIO_PROCESS, 0, 19) < 0)
    _exit (126);
  /* the build never regains privileges: no setuid binaries, no file caps */
  if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    _exit (126);
  if (setgroups (0, NULL) < 0 || setgid (AGENT_BUILD_GID) < 0 || setuid (AGENT_BUILD_UID) < 0)
    _exit (126);
  if (setuid (0) == 0) /* paranoia: dropping privileges must be irreversible */
    _exit (126);
  if (chdir (SRC_DIR) < 0)
    _exit (126);
  umask (022);
  execve ("/bin/sh", (char *[]){ "sh", "-c", s->cmd, NULL }, env);
  _exit (127);
}

/* Kill every process but PID 1 (us) and reap them all. */
static void
kill_all (void)
{
  if (prefetch_pid > 0)
    {
      /* root's: the build's uid cannot kill it (below, with the proxy) */
      kill (prefetch_pid, SIGKILL);
      prefetch_pid = -1;
    }
  if (proxy_pid > 0)
    {
      /* spare the egress proxy (its own uid): kill(-1) from the build's
       * uid reaches every process of the build and nothing else, and the
       * build cannot change uid (no_new_privs, no setuid binaries) */
      pid_t k = fork ();
      if (k == 0)
        {
          if (setresuid (AGENT_BUILD_UID, AGENT_BUILD_UID, AGENT_BUILD_UID) == 0)
            kill (-1, SIGKILL);
          _exit (0);
        }
      if (k > 0)
        while (waitpid (k, NULL, 0) < 0 && errno == EINTR)
          ;
      while (waitpid (-1, NULL, WNOHANG) > 0)
        ;
      return;
    }
  kill (-1, SIGKILL);
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
}

enum step_outcome
{
  STEP_OK,
  STEP_FAILED,
  STEP_TIMEOUT,
};

/* Forward the output of child `pid` (read end `rfd`) until it has exited
 * and its output is drained, or the deadline passes: then everything is
 * killed. `pid` itself is killed too: a Dockerfile command is the init of a
 * PID namespace of its own, and killing it kills the namespace. Gives the
 * child's wait status in *status. */
static enum step_outcome
supervise (pid_t pid, int rfd, int64_t deadline, int sfd, int *status)
{
  bool main_done = false, eof = false, timed_out = false;
  int64_t drain_deadline = 0;

  *status = 0;
  while (!(main_done && eof))
    {
      struct pollfd fds[2];
      int nf = 0, pi = -1, si;
      int64_t now = mono_ms ();
      int64_t until = main_done ? drain_deadline : deadline;
      int timeout;
      int r;

      if (now >= until)
        {
          if (!main_done)
            {
              timed_out = true;
              kill (pid, SIGKILL);
              kill_all ();
              main_done = true;
              drain_deadline = mono_ms () + 2000;
              continue;
            }
          break; /* output still open after everyone was killed: stop reading */
        }
      timeout = (int) (until - now > 60000 ? 60000 : until - now);
      if (!eof)
        {
          pi = nf;
          fds[nf++] = (struct pollfd){ rfd, POLLIN, 0 };
        }
      si = nf;
      fds[nf++] = (struct pollfd){ sfd, POLLIN, 0 };
      r = poll (fds, (nfds_t) nf, timeout);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          fatal ("poll: %s", strerror (errno));
        }
      if (pi >= 0 && (fds[pi].revents & (POLLIN | POLLHUP | POLLERR)))
        {
          static char buf[65536];
          ssize_t n = read (rfd, buf, sizeof buf);
          if (n > 0)
            forward_output (buf, (size_t) n);
          else if (n == 0 || (errno != EINTR && errno != EAGAIN))
            eof = true;
        }
      if (fds[si].revents & POLLIN)
        {
          struct signalfd_siginfo si_buf;
          pid_t w;
          int st;
          while (read (sfd, &si_buf, sizeof si_buf) == sizeof si_buf)
            ;
          while ((w = waitpid (-1, &st, WNOHANG)) > 0)
            if (w == pid && !main_done)
              {
                *status = st;
                main_done = true;
                /* the step is over when its shell exits: whatever it left
                 * running (daemons, double forks, setsid) dies now */
                kill_all ();
                drain_deadline = mono_ms () + 2000;
              }
        }
    }
  if (!at_bol)
    console_write_raw ("\n", 1); /* an unfinished last line ends with the step */
  kill_all ();
  return timed_out ? STEP_TIMEOUT : STEP_OK;
}

/* The exit code of a wait status, into the result */
static void
set_exit (int status)
{
  if (WIFEXITED (status))
    {
      result.exit_code = WEXITSTATUS (status);
      result.signal = 0;
    }
  else if (WIFSIGNALED (status))
    {
      result.exit_code = 128 + WTERMSIG (status);
      result.signal = WTERMSIG (status);
    }
}

static enum step_outcome
run_step (const struct agent_job *job, unsigned idx, int64_t job_deadline, int sfd)
{
  const struct agent_step *s = &job->steps[idx];
  int p[2];
  pid_t pid;
  int status = 0;
  int64_t t0 = mono_ms ();
  int64_t deadline = job_deadline;
  enum step_outcome o;

  if (s->timeout_s > 0 && t0 + (int64_t) s->timeout_s * 1000 < deadline)
    deadline = t0 + (int64_t) s->timeout_s * 1000;

  console_printf ("==> step %u/%zu: %s\n", idx + 1, job->n_steps, s->name);
  if (pipe2 (p, O_CLOEXEC) < 0)
    fatal ("pipe: %s", strerror (errno));
  pid = fork ();
  if (pid < 0)
    fatal ("fork: %s", strerror (errno));
  if (pid == 0)
    {
      close (p[0]);
      /* p[1] is close-on-exec; its dup2 copies on 1 and 2 are not */
      exec_step (job, s, p[1]);
    }
  close (p[1]);
  o = supervise (pid, p[0], deadline, sfd, &status);
  close (p[0]);

  result.step_ms[idx] = mono_ms () - t0;
  result.steps_run = idx + 1;
  result.step = idx + 1;
  if (o == STEP_TIMEOUT)
    {
      console_printf ("==> step %u (%s) timed out after %.1fs\n", idx + 1, s->name,
                      (double) result.step_ms[idx] / 1000.0);
      return STEP_TIMEOUT;
    }
  set_exit (status);
  console_printf ("==> step %u (%s) exited with status %d after %.1fs\n", idx + 1, s->name,
                  result.exit_code, (double) result.step_ms[idx] / 1000.0);
  return result.exit_code == 0 ? STEP_OK : STEP_FAILED;
}

/* --- a Dockerfile job ---------------------------------------------------------
 *
 * buildah builds it, as root in the guest (the VM is the wall, and the
 * builder needs root for its overlay mounts and chroots), in three steps
 * reported like build steps (PROTO_DF_STEP_1..3): load the base images the
 * runner put on the scratch disk (an OCI layout, /work/bases) into buildah's
 * storage under the names the Dockerfile calls them by; build; export the
 * image. Every command is an argv (no shell): the job's values are single
 * arguments after `--name=`, so none can be taken for an option, and a
 * build arg's value is never in an argv at all (buildah reads it from its
 * environment: `--build-arg NAME`). Each command runs as the init of a PID
 * namespace of its own, so that everything it started (RUN's processes, as
 * root, which the end-of-step kill from the build's uid cannot reach) dies
 * with it; its output is forwarded under the job's log cap, and the job's
 * deadline applies. Storage is on the scratch disk with the overlay driver
 * (the kernel's overlayfs); the image leaves as an OCI layout with
 * uncompressed layers under the output root `oci/`. */

#define DF_BUILDAH "/usr/bin/buildah"
#define DF_STORAGE "/work/.buildah/storage"
#define DF_TMP "/work/.buildah/tmp"
#define DF_RUNROOT "/run/buildah"
#define DF_BASES "/work/" PROTO_BASES_DIR
#define DF_OUT_TAG "localhost/buildvm-out:latest"
#define DF_DIR_OUT "/work/.buildah/image" /* buildah's `dir:` export */
#define DF_DIGEST "/work/.buildah/digest" /* its manifest's digest */
#define DF_PULLED "/work/.buildah/pulled" /* a pull's image id */
#define DF_OCI_OUT_REL ".oci-out"         /* the OCI layout that is output */
#define DF_OCI_OUT "/work/" DF_OCI_OUT_REL
#define DF_MAX_ARGV (32 + 2 * PROTO_DF_MAX_BUILD_ARGS + AGENT_MAX_SECRETS)

struct df_cmd
{
  char **argv;
  char **env;
  const char *stdout_path; /* NULL: stdout goes to the log */
};

/* buildah's environment: no app env and no secret env (they would change
 * what buildah itself does); the proxy as steps get it, which buildah
 * passes on to RUN (its --http-proxy, on by default); the build args. */
static char **
df_env (const struct agent_job *job)
{
  static char *env[32 + PROTO_DF_MAX_BUILD_ARGS];
  size_t n = 0;

  env[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  env[n++] = "HOME=/root";
  env[n++] = "TMPDIR=" DF_TMP;
  env[n++] = "LANG=C.UTF-8";
  if (proxy_pid > 0)
    {
      static char *const proxy_env[] = {
        "HTTPS_PROXY=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128",
        "https_proxy=http://127.0.0.1:3128", "http_proxy=http://127.0.0.1:3128",
        "NO_PROXY=localhost,127.0.0.1",      "no_proxy=localhost,127.0.0.1",
      };
      for (size_t i = 0; i < sizeof proxy_env / sizeof proxy_env[0]; i++)
        env[n++] = proxy_env[i];
    }
  for (size_t i = 0; i < job->dockerfile.n_args; i++)
    {
      const struct agent_build_arg *a = &job->dockerfile.args[i];
      size_t len = strlen (a->name) + 1 + strlen (a->value) + 1;
      char *e = malloc (len);
      if (e == NULL)
        fatal ("out of memory");
      snprintf (e, len, "%s=%s", a->name, a->value);
      env[n++] = e;
    }
  env[n] = NULL;
  return env;
}

/* PID 1 of the command's namespace: start buildah, reap whatever is
 * orphaned to us, and exit with buildah's status, which ends the
 * namespace and kills everything still in it. */
static void __attribute__ ((noreturn)) df_child (const struct df_cmd *c, int out)
{
  sigset_t all;
  struct rlimit core = { 0, 0 };
  int devnull, so = out;
  pid_t pid;

  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);
  for (int sig = 1; sig < NSIG; sig++)
    signal (sig, SIG_DFL);
  if (setsid () < 0)
    _exit (126);
  devnull = open ("/dev/null", O_RDONLY);
  if (c->stdout_path)
    so = open (c->stdout_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (devnull < 0 || so < 0 || dup2 (devnull, 0) < 0 || dup2 (so, 1) < 0 || dup2 (out, 2) < 0)
    _exit (126);
  /* as for a step: the build at the lowest priority, the agent above it */
  if (setrlimit (RLIMIT_CORE, &core) < 0 || setpriority (PRIO_PROCESS, 0, 19) < 0)
    _exit (126);
  if (chdir ("/work") < 0)
    _exit (126);
  umask (022);
  pid = fork ();
  if (pid < 0)
    _exit (126);
  if (pid == 0)
    {
      execve (DF_BUILDAH, c->argv, c->env);
      _exit (127);
    }
  for (;;)
    {
      int st;
      pid_t w = waitpid (-1, &st, 0);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        _exit (126);
      if (w == pid)
        _exit (WIFEXITED (st) ? WEXITSTATUS (st) : 128 + WTERMSIG (st));
    }
}

/* Run one command; its exit status goes into the result. */
static enum step_outcome
df_run (const struct df_cmd *c, int64_t deadline, int sfd)
{
  int p[2], status;
  pid_t pid;
  enum step_outcome o;
  char line[1024];
  size_t n = 0;

  /* the command as it runs: names and paths, never a build arg's value */
  line[0] = '\0';
  for (char **a = c->argv; *a && n < sizeof line - 1; a++)
    n += (size_t) snprintf (line + n, sizeof line - n, "%s%s", a == c->argv ? "" : " ", *a);
  console_printf ("+ %s%s\n", line, n >= sizeof line - 1 ? " ..." : "");
  if (pipe2 (p, O_CLOEXEC) < 0)
    fatal ("pipe: %s", strerror (errno));
  /* fork() into a new PID namespace (the kernel has PID_NS): the child
   * is its init */
  pid = (pid_t) syscall (SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
  if (pid < 0)
    fatal ("clone: %s", strerror (errno));
  if (pid == 0)
    {
      close (p[0]);
      df_child (c, p[1]);
    }
  close (p[1]);
  o = supervise (pid, p[0], deadline, sfd, &status);
  close (p[0]);
  if (o == STEP_TIMEOUT)
    return o;
  set_exit (status);
  return result.exit_code == 0 ? STEP_OK : STEP_FAILED;
}

/* the global options every buildah command gets, then the subcommand */
static size_t
df_argv_start (char **argv, const char *subcommand)
{
  size_t n = 0;
  argv[n++] = "buildah";
  argv[n++] = "--root=" DF_STORAGE;
  argv[n++] = "--runroot=" DF_RUNROOT;
  argv[n++] = "--storage-driver=overlay";
  argv[n++] = (char *) subcommand;
  return n;
}

static char *
df_strdupf (const char *fmt, const char *a, const char *b)
{
  size_t len = strlen (fmt) + strlen (a) + strlen (b) + 1;
  char *s = malloc (len);
  if (s == NULL)
    fatal ("out of memory");
  snprintf (s, len, fmt, a, b);
  return s;
}

/* The 64 hex digits of an image id that `buildah pull -q` printed */
static int
df_read_id (char *id, size_t size)
{
  char buf[256];
  int fd = open (DF_PULLED, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read (fd, buf, sizeof buf - 1);
  size_t len;

  if (fd >= 0)
    close (fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  len = strspn (buf, "0123456789abcdef");
  if (len != 64 || (buf[len] != '\n' && buf[len] != '\0') || size < 65)
    return -1;
  memcpy (id, buf, 64);
  id[64] = '\0';
  return 0;
}

/* Step 1: each base into buildah's storage, tagged as the Dockerfile names
 * it (a name with a digest is tagged by its repository: buildah finds
 * `repo@sha256:...` by the manifest digest it recorded at the pull, which
 * is the runner's, byte for byte) */
static enum step_outcome
df_load_bases (const struct agent_job *job, char **env, int64_t deadline, int sfd)
{
  for (size_t i = 0; i < job->dockerfile.n_bases; i++)
    {
      const struct agent_base *b = &job->dockerfile.bases[i];
      char *argv[16], id[65], name[PROTO_DF_IMAGE_MAX + 1], *at;
      size_t n = df_argv_start (argv, "pull");
      struct df_cmd c = { argv, env, DF_PULLED };
      enum step_outcome o;

      argv[n++] = "--quiet"; /* stdout: the image id, nothing else */
      argv[n++] = df_strdupf ("oci:%s:%s", DF_BASES, b->ref);
      argv[n] = NULL;
      if ((o = df_run (&c, deadline, sfd)) != STEP_OK)
        return o;
      if (df_read_id (id, sizeof id) < 0)
        {
          console_printf ("buildvm-agent: `buildah pull` printed no image id\n");
          result.exit_code = 1;
          return STEP_FAILED;
        }
      snprintf (name, sizeof name, "%s", b->name);
      if ((at = strchr (name, '@')) != NULL)
        *at = '\0';
      n = df_argv_start (argv, "tag");
      argv[n++] = id;
      argv[n++] = name;
      argv[n] = NULL;
      c.stdout_path = NULL;
      if ((o = df_run (&c, deadline, sfd)) != STEP_OK)
        return o;
    }
  return STEP_OK;
}

/* the granted secrets: the files the input disk put in SECRET_DIR */
static size_t
df_secret_args (char **argv, size_t n, size_t max)
{
  DIR *d = opendir (SECRET_DIR);
  struct dirent *de;

  if (d == NULL)
    fatal ("open `%s`: %s", SECRET_DIR, strerror (errno));
  while ((de = readdir (d)) != NULL)
    {
      const char *s = de->d_name;
      if (s[0] == '.' || de->d_type != DT_REG)
        continue;
      /* the runner's names (^[A-Za-z0-9_.-]+$): nothing that would end the
       * `id=` value early (`,`) */
      if (s[strspn (s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")]
          != '\0')
        fatal ("secret `%.64s` has a name buildah cannot take", s);
      if (n >= max)
        fatal ("too many secrets");
      argv[n++] = df_strdupf ("--secret=id=%s,src=" SECRET_DIR "/%s", s, s);
    }
  closedir (d);
  return n;
}

/* Step 2: buildah build */
static enum step_outcome
df_build (const struct agent_job *job, char **env, int64_t deadline, int sfd)
{
  static char *argv[DF_MAX_ARGV];
  const struct agent_dockerfile *df = &job->dockerfile;
  size_t n = df_argv_start (argv, "build");
  struct df_cmd c = { argv, env, NULL };

  argv[n++] = "--pull=never";       /* the guest never reaches a registry */
  argv[n++] = "--isolation=chroot"; /* no OCI runtime in the image */
  argv[n++] = "--layers=false";
  argv[n++] = "--format=oci";
  argv[n++] = df_strdupf ("--file=" SRC_DIR "/%s%s", df->path, "");
  if (df->target[0])
    argv[n++] = df_strdupf ("--target=%s%s", df->target, "");
  for (size_t i = 0; i < df->n_args; i++)
    argv[n++] = df_strdupf ("--build-arg=%s%s", df->args[i].name, "");
  n = df_secret_args (argv, n, DF_MAX_ARGV - 4);
  argv[n++] = "--tag=" DF_OUT_TAG;
  argv[n++] = df_strdupf (SRC_DIR "/%s%s", df->context, "");
  argv[n] = NULL;
  return df_run (&c, deadline, sfd);
}

/* Step 3: export the image. An `oci:` destination compresses every layer
 * (buildah 1.28 ignores --disable-compression there), which under
 * emulation is slow and the runner does again anyway; a `dir:` one keeps
 * them as they are, and --digestfile names its manifest, so the layout is
 * made here by renaming: blobs/sha256/<hex> for each blob and for the
 * manifest, index.json naming the manifest. */
static enum step_outcome
df_export (char **env, int64_t deadline, int sfd)
{
  char *argv[16];
  size_t n = df_argv_start (argv, "push");
  struct df_cmd c = { argv, env, NULL };
  enum step_outcome o;

  argv[n++] = "--disable-compression";
  argv[n++] = "--format=oci";
  argv[n++] = "--digestfile=" DF_DIGEST;
  argv[n++] = DF_OUT_TAG;
  argv[n++] = "dir:" DF_DIR_OUT;
  argv[n] = NULL;
  if ((o = df_run (&c, deadline, sfd)) != STEP_OK)
    return o;
  return STEP_OK;
}

static void __attribute__ ((format (printf, 2, 3)))
df_write_file (const char *path, const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n, fd;

  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (n < 0 || (size_t) n >= sizeof buf || fd < 0 || write (fd, buf, (size_t) n) != n
      || close (fd) < 0)
    fatal ("write `%s`: %s", path, strerror (errno));
}

static bool
df_is_hex64 (const char *s)
{
  return strlen (s) == 64 && strspn (s, "0123456789abcdef") == 64;
}

/* buildah's `dir:` export into the OCI layout DF_OCI_OUT (renames on the
 * scratch disk: no copy). Everything buildah wrote is checked by the
 * runner; this only refuses what it would not know how to lay out. */
static int
df_make_layout (char *msg, size_t msgsz)
{
  char digest[128] = { 0 }, path[512], to[512];
  int fd = open (DF_DIGEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  ssize_t len = fd < 0 ? -1 : read (fd, digest, sizeof digest - 1);
  struct stat st;
  struct dirent *de;
  DIR *d;

  if (fd >= 0)
    close (fd);
  while (len > 0 && (digest[len - 1] == '\n' || digest[len - 1] == ' '))
    digest[--len] = '\0';
  if (len != 71 || strncmp (digest, "sha256:", 7) != 0 || !df_is_hex64 (digest + 7))
    {
      snprintf (msg, msgsz, "the image export left no manifest digest");
      return -1;
    }
  if (stat (DF_DIR_OUT "/manifest.json", &st) < 0 || !S_ISREG (st.st_mode))
    {
      snprintf (msg, msgsz, "the image export has no manifest");
      return -1;
    }
  if (mkdir (DF_OCI_OUT, 0755) < 0 || mkdir (DF_OCI_OUT "/blobs", 0755) < 0
      || mkdir (DF_OCI_OUT "/blobs/sha256", 0755) < 0)
    {
      snprintf (msg, msgsz, "mkdir `%s`: %s", DF_OCI_OUT, strerror (errno));
      return -1;
    }
  df_write_file (DF_OCI_OUT "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  df_write_file (
      DF_OCI_OUT "/index.json",
      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":"
      "\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%lld}]}",
      digest, (long long) st.st_size);
  snprintf (to, sizeof to, DF_OCI_OUT "/blobs/sha256/%s", digest + 7);
  if (rename (DF_DIR_OUT "/manifest.json", to) < 0)
    {
      snprintf (msg, msgsz, "rename the manifest: %s", strerror (errno));
      return -1;
    }
  d = opendir (DF_DIR_OUT);
  if (d == NULL)
    {
      snprintf (msg, msgsz, "open `%s`: %s", DF_DIR_OUT, strerror (errno));
      return -1;
    }
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0
          || strcmp (de->d_name, "version") == 0)
        continue;
      if (!df_is_hex64 (de->d_name))
        {
          closedir (d);
          snprintf (msg, msgsz, "the image export has a file `%.64s`", de->d_name);
          return -1;
        }
      snprintf (path, sizeof path, DF_DIR_OUT "/%s", de->d_name);
      snprintf (to, sizeof to, DF_OCI_OUT "/blobs/sha256/%s", de->d_name);
      if (rename (path, to) < 0)
        {
          closedir (d);
          snprintf (msg, msgsz, "rename blob `%.64s`: %s", de->d_name, strerror (errno));
          return -1;
        }
    }
  closedir (d);
  return 0;
}

/* Where buildah keeps state the read-only root file system cannot: the
 * short-name alias cache's lock (/var/cache/containers: without it buildah
 * resolves no short name at all, and `FROM node:18` would not find the
 * docker.io/library/node:18 it was tagged as) and the blob info cache
 * (/var/lib/containers/cache). The rootfs has the mount points. */
static void
df_setup (void)
{
  if (access (DF_BUILDAH, X_OK) < 0)
    fatal ("this image has no builder (%s): a Dockerfile job needs the debian profile",
           DF_BUILDAH);
  do_mount ("containers-cache", "/var/cache/containers", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0700,size=16m");
  do_mount ("containers-lib", "/var/lib/containers", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0700,size=64m");
  if ((mkdir ("/work/.buildah", 0700) < 0 && errno != EEXIST)
      || (mkdir (DF_TMP, 0700) < 0 && errno != EEXIST))
    fatal ("mkdir `%s`: %s", DF_TMP, strerror (errno));
}

/* Run the three steps; returns only when all succeeded. */
static void
df_run_job (const struct agent_job *job, int64_t deadline, int sfd)
{
  static const char *const names[PROTO_DF_STEPS] = { PROTO_DF_STEP_1, PROTO_DF_STEP_2,
                                                     PROTO_DF_STEP_3 };
  char **env;

  df_setup ();
  env = df_env (job);
  if (job->n_env > 0 || job->n_secret_env > 0)
    console_printf ("buildvm-agent: a Dockerfile build gets no `env` and no secret variables "
                    "(only build args and secret mounts)\n");
  for (unsigned i = 0; i < PROTO_DF_STEPS; i++)
    {
      int64_t t0 = mono_ms ();
      enum step_outcome o;
      console_printf ("==> step %u/%d: %s\n", i + 1, PROTO_DF_STEPS, names[i]);
      result.exit_code = 0;
      result.signal = 0;
      o = i == 0   ? df_load_bases (job, env, deadline, sfd)
          : i == 1 ? df_build (job, env, deadline, sfd)
                   : df_export (env, deadline, sfd);
      result.step_ms[i] = mono_ms () - t0;
      result.steps_run = i + 1;
      result.step = i + 1;
      if (o == STEP_TIMEOUT)
        {
          console_printf ("==> step %u (%s) timed out after %.1fs\n", i + 1, names[i],
                          (double) result.step_ms[i] / 1000.0);
          result.status = PROTO_STATUS_TIMEOUT;
          snprintf (result.message, sizeof result.message, "step %u (%s) timed out", i + 1,
                    names[i]);
          finish ();
        }
      console_printf ("==> step %u (%s) exited with status %d after %.1fs\n", i + 1, names[i],
                      result.exit_code, (double) result.step_ms[i] / 1000.0);
      if (o == STEP_FAILED)
        {
          result.status = PROTO_STATUS_STEP_FAILED;
          snprintf (result.message, sizeof result.message, "step %u (%s) exited with status %d",
                    i + 1, names[i], result.exit_code);
          finish ();
        }
    }
  result.exit_code = 0;
}

/* --- outputs ------------------------------------------------------------------- */

static void
write_outputs (const struct agent_job *job)
{
  struct tar_out t;
  char msg[512];

  char dev_out[32];
  int direct = -1;

  if (find_disk ("output", dev_out, sizeof dev_out) == 0)
    direct = open (dev_out, O_WRONLY | O_DIRECT | O_CLOEXEC); /* -1: buffered */
  if (tarout_init (&t, out_fd, direct, AGENT_HEADER_SIZE, job->output_max) < 0)
    fatal ("out of memory");
  if (job->image_from != NULL
      && tarout_add_tree (&t, SRC_DIR, job->image_from, "image", msg, sizeof msg) < 0)
    goto fail;
  if (job->is_dockerfile
      && (df_make_layout (msg, sizeof msg) < 0
          || tarout_add_tree (&t, "/work", DF_OCI_OUT_REL, PROTO_OUT_OCI, msg, sizeof msg) < 0))
    goto fail;
  for (size_t i = 0; i < job->n_artifacts; i++)
    {
      glob_t g;
      int r;
      if (chdir (SRC_DIR) < 0)
        fatal ("chdir: %s", strerror (errno));
      r = glob (job->artifacts[i], GLOB_NOSORT | GLOB_NOESCAPE, NULL, &g);
      if (r == GLOB_NOMATCH)
        {
          snprintf (msg, sizeof msg, "artifact pattern `%.200s` matched nothing",
                    job->artifacts[i]);
          goto fail;
        }
      if (r != 0)
        {
          snprintf (msg, sizeof msg, "artifact pattern `%.200s`: glob failed", job->artifacts[i]);
          goto fail;
        }
      for (size_t k = 0; k < g.gl_pathc; k++)
        if (tarout_add_tree (&t, SRC_DIR, g.gl_pathv[k], "artifacts", msg, sizeof msg) < 0)
          {
            globfree (&g);
            goto fail;
          }
      globfree (&g);
    }
  if (tarout_finish (&t, msg, sizeof msg) < 0)
    goto fail;
  result.tar_bytes = t.offset - t.start;
  result.entries = t.entries;
  if (direct >= 0)
    close (direct);
  return;

fail:
  result.status = PROTO_STATUS_OUTPUT_ERROR;
  snprintf (result.message, sizeof result.message, "%s", msg);
  console_printf ("buildvm-agent: %s\n", msg);
  result.tar_bytes = 0;
  finish ();
}

/* --- main ------------------------------------------------------------------------ */

int
main (void)
{
  static struct agent_job job;
  char dev_in[32], dev_out[32], dev_scratch[32], msg[512];
  char *control = NULL;
  size_t control_len = 0;
  int in_fd, sfd;
  sigset_t chld;
  int64_t job_deadline;

  t_start = mono_ms ();
  result.status = PROTO_STATUS_AGENT_ERROR;
  if (getpid () != 1)
    {
      fprintf (stderr, "buildvm-agent: must run as PID 1 inside a build VM\n");
      return 2;
    }
  if (setpriority (PRIO_PROCESS, 0, -20) < 0)
    fatal ("setpriority: %s", strerror (errno));
  prefetch_shell ();
  setup_mounts ();
  no_user_namespaces ();
  console_open ();

  if (find_disk ("output", dev_out, sizeof dev_out) < 0)
    fatal ("no output disk");
  out_fd = open (dev_out, O_RDWR | O_CLOEXEC);
  if (out_fd < 0)
    fatal ("open output disk `%s`: %s", dev_out, strerror (errno));
  if (find_disk ("input", dev_in, sizeof dev_in) < 0)
    fatal ("no input disk");
  if (find_disk ("scratch", dev_scratch, sizeof dev_scratch) < 0)
    fatal ("no scratch disk");
  wait_for_job (dev_in, dev_scratch);

  /* noinit_itable: the runner's mkfs left the inode tables lazy, and the
   * kernel's thread that would zero them in the background only takes the
   * build's emulated CPU (the disk dies with the VM; uninitialised groups
   * are marked so and never read) */
  do_mount (dev_scratch, "/work", "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable");
  if (chmod ("/work", 0755) < 0)
    fatal ("chmod /work: %s", strerror (errno));
  /* the runner wrote the source into the scratch disk: /work/src is there
   * (an empty one for `buildvm vm run`) */
  make_build_dir (SRC_DIR, 0755);
  make_build_dir ("/work/home", 0755);
  make_build_dir ("/work/tmp", 01777);
  make_build_dir (SECRET_DIR, 0500);
  prefetch_source ();

  in_fd = open (dev_in, O_RDONLY | O_CLOEXEC);
  if (in_fd < 0)
    fatal ("open input disk `%s`: %s", dev_in, strerror (errno));
  if (agent_input_extract (in_fd, SECRET_DIR, &control, &control_len, msg, sizeof msg) < 0)
    fatal ("%s", msg);
  close (in_fd);
  if (agent_control_parse (&job, control, control_len, msg, sizeof msg) < 0)
    fatal ("%s", msg);
  log_max = job.log_max;
  if (proxy_start (msg, sizeof msg) < 0)
    fatal ("egress proxy: %s", msg);

  /* SIGCHLD through a signalfd: the step loop polls it with the output pipe */
  sigemptyset (&chld);
  sigaddset (&chld, SIGCHLD);
  if (sigprocmask (SIG_BLOCK, &chld, NULL) < 0)
    fatal ("sigprocmask: %s", strerror (errno));
  sfd = signalfd (-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0)
    fatal ("signalfd: %s", strerror (errno));

  job_deadline = mono_ms () + (int64_t) job.timeout_s * 1000;
  result.status = PROTO_STATUS_OK;
  if (job.is_dockerfile)
    df_run_job (&job, job_deadline, sfd);
  for (unsigned i = 0; i < job.n_steps; i++)
    {
      enum step_outcome o = run_step (&job, i, job_deadline, sfd);
      if (o == STEP_TIMEOUT)
        {
          result.status = PROTO_STATUS_TIMEOUT;
          snprintf (result.message, sizeof result.message, "step %u (%s) timed out", i + 1,
                    job.steps[i].name);
          finish ();
        }
      if (o == STEP_FAILED)
        {
          result.status = PROTO_STATUS_STEP_FAILED;
          snprintf (result.message, sizeof result.message, "step %u (%s) exited with status %d",
                    i + 1, job.steps[i].name, result.exit_code);
          finish ();
        }
    }
  result.exit_code = 0;
  write_outputs (&job);
  finish ();
}
