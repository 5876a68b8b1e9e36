/* proc.c - spawning helper processes, see proc.h */
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int
proc_which (char **out, const char *name, bvm_error_t *err)
{
  const char *path = getenv ("PATH");
  cleanup_free char *copy = NULL;
  char *save = NULL, *dir;

  if (strchr (name, '/') != NULL)
    {
      if (access (name, X_OK) < 0)
        return bvm_error (err, errno, "`%s`", name);
      *out = strdup (name);
      return *out ? 0 : bvm_error (err, ENOMEM, "which");
    }
  copy = strdup (path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
  if (copy == NULL)
    return bvm_error (err, ENOMEM, "which");
  for (dir = strtok_r (copy, ":", &save); dir; dir = strtok_r (NULL, ":", &save))
    {
      char full[PATH_MAX];
      struct stat st;
      if (snprintf_checked (full, sizeof full, "%s/%s", dir, name) < 0)
        continue;
      if (stat (full, &st) == 0 && S_ISREG (st.st_mode) && access (full, X_OK) == 0)
        {
          *out = strdup (full);
          return *out ? 0 : bvm_error (err, ENOMEM, "which");
        }
    }
  return bvm_error_code (err, BVM_E_IO, ENOENT, "`%s` is not installed or not in PATH", name);
}

void
proc_close_from (int lowfd)
{
#ifdef SYS_close_range
  if (syscall (SYS_close_range, lowfd, ~0U, 0) == 0)
    return;
#endif
  for (int fd = lowfd; fd < 65536; fd++)
    close (fd);
}

int
proc_spawn (pid_t *out, const char *const *argv, const struct proc_opts *o, bvm_error_t *err)
{
  cleanup_free char *prog = NULL;
  int ep[2];
  pid_t parent = getpid ();
  pid_t pid;
  int child_errno = 0;
  ssize_t n;
  int ret;

  ret = proc_which (&prog, argv[0], err);
  if (ret < 0)
    return ret;
  if (pipe2 (ep, O_CLOEXEC) < 0)
    return bvm_error (err, errno, "pipe");
  pid = fork ();
  if (pid < 0)
    {
      int e = errno;
      close (ep[0]);
      close (ep[1]);
      return bvm_error (err, e, "fork");
    }
  if (pid == 0)
    {
      int fds[3] = { o->stdin_fd, o->stdout_fd, o->stderr_fd };
      int null = open ("/dev/null", O_RDWR);
      sigset_t none;

      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
          signal (sig, SIG_DFL);
      if (o->die_with_parent)
        {
          if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0)
            goto fail;
          /* the parent may have died between fork and prctl */
          if (getppid () != parent)
            _exit (127);
        }
      if (o->new_session && setsid () < 0)
        goto fail;
      /* move the wanted fds out of the way first, then onto 0..2 */
      for (int i = 0; i < 3; i++)
        {
          int src = fds[i] >= 0 ? fds[i] : null;
          int tmp = fcntl (src, F_DUPFD_CLOEXEC, 10);
          if (tmp < 0)
            goto fail;
          fds[i] = tmp;
        }
      for (int i = 0; i < 3; i++)
        if (dup2 (fds[i], i) < 0)
          goto fail;
      /* keep only 0..2 and the error pipe (close-on-exec) */
      if (ep[1] != 3 && dup2 (ep[1], 3) < 0)
        goto fail;
      ep[1] = 3;
      if (fcntl (3, F_SETFD, FD_CLOEXEC) < 0)
        goto fail;
      proc_close_from (4);
      proc_lift_memory_limit ();
      if (o->pre_exec && o->pre_exec (o->opaque) < 0)
        goto fail;
      execv (prog, (char *const *) argv);
    fail:
      child_errno = errno;
      if (write (ep[1], &child_errno, sizeof child_errno) < 0)
        _exit (127);
      _exit (127);
    }
  close (ep[1]);
  do
    n = read (ep[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  close (ep[0]);
  if (n == (ssize_t) sizeof child_errno)
    {
      while (waitpid (pid, NULL, 0) < 0 && errno == EINTR)
        ;
      return bvm_error (err, child_errno, "start `%s`", prog);
    }
  *out = pid;
  return 0;
}

int
proc_run (const char *const *argv, struct buf *output, int *status, int64_t timeout_ms,
          bvm_error_t *err)
{
  struct proc_opts o = PROC_OPTS_INIT;
  cleanup_close int rd = -1;
  int p[2];
  cleanup_pid pid_t pid = -1; /* killed and reaped on every way out but a reaped exit */
  int64_t deadline = now_ms () + timeout_ms;
  int ret;

  if (pipe2 (p, O_CLOEXEC) < 0)
    return bvm_error (err, errno, "pipe");
  o.stdout_fd = p[1];
  o.stderr_fd = p[1];
  ret = proc_spawn (&pid, argv, &o, err);
  close (p[1]);
  rd = p[0];
  if (ret < 0)
    return ret;
  for (;;)
    {
      struct pollfd pfd = { rd, POLLIN, 0 };
      int64_t left = deadline - now_ms ();
      char chunk[4096];
      ssize_t n;
      int r;

      if (left <= 0)
        return bvm_error_code (err, BVM_E_TIMEOUT, 0, "`%s` did not finish within %lld ms",
                               argv[0], (long long) timeout_ms);
      r = poll (&pfd, 1, (int) (left > 1000 ? 1000 : left));
      if (r < 0 && errno != EINTR)
        return bvm_error (err, errno, "poll");
      if (r <= 0)
        continue;
      n = read (rd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      if (output && output->len < output->max)
        {
          size_t room = output->max - output->len;
          buf_add (output, chunk, (size_t) n < room ? (size_t) n : room);
        }
    }
  /* stdout closed; the process may still linger: keep to the deadline */
  for (;;)
    {
      pid_t w = waitpid (pid, status, WNOHANG);
      if (w == pid)
        {
          pid = -1; /* reaped */
          return 0;
        }
      if (w < 0 && errno != EINTR)
        return bvm_error (err, errno, "waitpid");
      if (now_ms () >= deadline)
        return bvm_error_code (err, BVM_E_TIMEOUT, 0, "`%s` did not finish within %lld ms",
                               argv[0], (long long) timeout_ms);
      usleep (2000);
    }
}

const char *
proc_status_str (char *buf, size_t size, int status)
{
  if (WIFEXITED (status))
    snprintf (buf, size, "exited with status %d", WEXITSTATUS (status));
  else if (WIFSIGNALED (status))
    snprintf (buf, size, "killed by signal %d (%s)", WTERMSIG (status),
              strsignal (WTERMSIG (status)));
  else
    snprintf (buf, size, "ended with wait status %#x", (unsigned) status);
  return buf;
}

int
proc_limit_memory (uint64_t mib, bvm_error_t *err)
{
  struct rlimit rl;

  if (mib == 0)
    return 0;
  if (getrlimit (RLIMIT_DATA, &rl) < 0)
    return bvm_error (err, errno, "getrlimit RLIMIT_DATA");
  rl.rlim_cur = (rlim_t) mib << 20;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
    rl.rlim_cur = rl.rlim_max;
  if (setrlimit (RLIMIT_DATA, &rl) < 0)
    return bvm_error (err, errno, "setrlimit RLIMIT_DATA to %llu MiB", (unsigned long long) mib);
  return 0;
}

void
proc_lift_memory_limit (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != rl.rlim_max)
    {
      rl.rlim_cur = rl.rlim_max;
      (void) setrlimit (RLIMIT_DATA, &rl);
    }
}
