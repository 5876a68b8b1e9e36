/* vm.c - the driver-independent half of a VM's life: see vm.h */
#include "vm/vm_int.h"
#include "guest.h"
#include "jail.h"
#include "proc.h"
#include "redact.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONSOLE_LINE_MAX 8192
#define CANCEL_TICK_MS 100

const struct vm_driver *
vm_driver_find (const char *name)
{
  static const struct vm_driver *drivers[] = { &vm_driver_qemu, &vm_driver_firecracker };
  if (name == NULL || *name == '\0')
    name = "qemu";
  for (size_t i = 0; i < ARRAY_SIZE (drivers); i++)
    if (strcmp (drivers[i]->name, name) == 0)
      return drivers[i];
  return NULL;
}

int
vm_accel_parse (enum vm_accel *out, const char *s)
{
  if (strcmp (s, "auto") == 0)
    *out = VM_ACCEL_AUTO;
  else if (strcmp (s, "kvm") == 0)
    *out = VM_ACCEL_KVM;
  else if (strcmp (s, "tcg") == 0)
    *out = VM_ACCEL_TCG;
  else
    return -1;
  return 0;
}

const char *
vm_accel_name (enum vm_accel a)
{
  switch (a)
    {
    case VM_ACCEL_AUTO: return "auto";
    case VM_ACCEL_KVM: return "kvm";
    case VM_ACCEL_TCG: return "tcg";
    }
  return "?";
}

const char *
vm_outcome_name (enum vm_outcome o)
{
  switch (o)
    {
    case VM_EXITED: return "exited";
    case VM_BOOT_TIMEOUT: return "boot-timeout";
    case VM_TIMEOUT: return "timeout";
    case VM_CANCELED: return "canceled";
    }
  return "?";
}

static bool
cpu_has_virt_flag (void)
{
  FILE *f = fopen ("/proc/cpuinfo", "re");
  char line[8192];
  bool found = false;

  if (f == NULL)
    return false;
  while (!found && fgets (line, sizeof line, f))
    {
      char *tok, *save = NULL;
      if (strncmp (line, "flags", 5) != 0)
        continue;
      for (tok = strtok_r (line, " \t\n", &save); tok; tok = strtok_r (NULL, " \t\n", &save))
        if (strcmp (tok, "vmx") == 0 || strcmp (tok, "svm") == 0)
          {
            found = true;
            break;
          }
      break; /* the first CPU speaks for all */
    }
  fclose (f);
  return found;
}

enum vm_accel
vm_accel_detect (char *why, size_t whysz)
{
  struct stat st;
  int fd;

  if (why && whysz)
    why[0] = '\0';
  if (stat ("/sys/module/kvm_pvm", &st) == 0)
    {
      if (why)
        snprintf (why, whysz,
                  "/dev/kvm is the PVM nested layer (kvm_pvm), under which "
                  "standard guests hang");
      return VM_ACCEL_TCG;
    }
  if (!cpu_has_virt_flag ())
    {
      if (why)
        snprintf (why, whysz, "the CPU reports no vmx/svm");
      return VM_ACCEL_TCG;
    }
  fd = open ("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    {
      if (why)
        snprintf (why, whysz, "/dev/kvm: %s", strerror (errno));
      return VM_ACCEL_TCG;
    }
  close (fd);
  return VM_ACCEL_KVM;
}

void
vm_argv_free (char **argv)
{
  if (argv == NULL)
    return;
  for (char **p = argv; *p; p++)
    free (*p);
  free (argv);
}

/* --- console: redaction, lines, a byte cap, the ready marker ------------------ */

/* Shared by both streams: the cap is per VM, not per stream. */
struct console_state
{
  const struct vm_spec *spec;
  struct vm_result *res;
  bool capped;
  bool ready;
  int64_t t0;
};

/* One stream (the agent's console or the VMM's stderr, which carries the
 * kernel's console). The raw bytes go through the job's redactor first and
 * are cut into lines after it: a secret is masked wherever the line splits
 * fall, and a split is delivered as a piece with `more` set, never as two
 * lines. Each stream has its own redaction state: interleaving the two in
 * one would cut a secret in two at a chunk boundary. */
struct console
{
  struct console_state *st;
  const char *prefix; /* "" for the agent's console, "[vm] " for the VMM's stderr */
  bool is_stderr;
  struct redact_stream *rs; /* NULL: nothing to redact */
  bool redact_failed;
  char raw[32]; /* the start of the current raw line, for the ready marker */
  size_t raw_len;
  bool raw_long;
  char line[CONSOLE_LINE_MAX];
  size_t len;
  bool mid; /* the last piece delivered was not the end of its line */
};

static void
emit (struct console *c, const char *line, size_t len, bool more)
{
  struct console_state *st = c->st;
  char buf[CONSOLE_LINE_MAX + 16];
  /* the prefix marks a line, not each of its pieces */
  const char *prefix = c->mid ? "" : c->prefix;
  size_t plen = strlen (prefix);
  enum vm_stream stream = c->is_stderr ? VM_STREAM_STDERR : VM_STREAM_CONSOLE;

  c->mid = more;
  if (st->capped)
    {
      st->res->console_dropped += plen + len + 1;
      return;
    }
  if (st->res->console_bytes + plen + len + 1 > st->spec->console_max)
    {
      char marker[160];
      int n = snprintf (marker, sizeof marker,
                        "[buildvm: console output exceeded %llu bytes; the rest is dropped]",
                        (unsigned long long) st->spec->console_max);
      st->capped = true;
      st->res->console_dropped += plen + len + 1;
      if (st->spec->line)
        st->spec->line (st->spec->opaque, stream, marker, (size_t) n, false);
      return;
    }
  st->res->console_bytes += plen + len + 1;
  if (st->spec->line == NULL)
    return;
  if (plen == 0)
    {
      st->spec->line (st->spec->opaque, stream, line, len, more);
      return;
    }
  memcpy (buf, prefix, plen);
  memcpy (buf + plen, line, len);
  st->spec->line (st->spec->opaque, stream, buf, plen + len, more);
}

static void
deliver (struct console *c, const char *line, size_t len, bool more)
{
  struct console_state *st = c->st;
  if (c->is_stderr)
    {
      /* keep the tail of the VMM's own output for error messages: it is
       * cut from the redacted stream, so it holds no secret, whole or part */
      size_t have = strlen (st->res->vmm_stderr), room = sizeof st->res->vmm_stderr - 1;
      size_t tl = len; /* the whole line still goes to emit() */
      if (tl + 1 > room)
        tl = room - 1;
      if (have + tl + 1 > room)
        {
          size_t drop = have + tl + 1 - room;
          memmove (st->res->vmm_stderr, st->res->vmm_stderr + drop, have - drop + 1);
          have -= drop;
        }
      memcpy (st->res->vmm_stderr + have, line + (len - tl), tl);
      st->res->vmm_stderr[have + tl] = '\n';
      st->res->vmm_stderr[have + tl + 1] = '\0';
    }
  emit (c, line, len, more);
}

/* Redacted bytes, in any pieces: cut them into lines. */
static void
cut_lines (void *opaque, const char *data, size_t n)
{
  struct console *c = opaque;
  for (size_t i = 0; i < n; i++)
    {
      char ch = data[i];
      if (ch == '\n')
        {
          size_t len = c->len;
          if (len > 0 && c->line[len - 1] == '\r')
            len--;
          deliver (c, c->line, len, false);
          c->len = 0;
          continue;
        }
      if (c->len == sizeof c->line)
        {
          deliver (c, c->line, c->len, true);
          c->len = 0;
        }
      c->line[c->len++] = ch;
    }
}

/* The agent's ready line, looked for in the raw stream: a secret that
 * happens to spell part of it must not keep the VM from booting. */
static void
watch_ready (struct console *c, const char *data, size_t n)
{
  static const size_t rlen = sizeof GUEST_READY_LINE - 1;
  for (size_t i = 0; i < n && !c->st->ready; i++)
    {
      if (data[i] == '\n')
        {
          size_t len = c->raw_len;
          if (len > 0 && c->raw[len - 1] == '\r')
            len--;
          if (!c->raw_long && len == rlen && memcmp (c->raw, GUEST_READY_LINE, rlen) == 0)
            {
              c->st->ready = true;
              c->st->res->boot_ms = now_ms () - c->st->t0;
            }
          c->raw_len = 0;
          c->raw_long = false;
        }
      else if (c->raw_len < sizeof c->raw)
        c->raw[c->raw_len++] = data[i];
      else
        c->raw_long = true;
    }
}

static void
console_feed (struct console *c, const char *data, size_t n)
{
  bvm_error_t e = NULL;

  if (!c->is_stderr)
    watch_ready (c, data, n);
  if (c->rs == NULL)
    {
      cut_lines (c, data, n);
      return;
    }
  if (c->redact_failed)
    return;
  /* A redactor that fails (out of memory) would pass secrets: drop the
   * rest of the stream instead. */
  if (redact_stream_feed (c->rs, data, n, cut_lines, c, &e) < 0)
    {
      static const char dropped[]
          = "[buildvm: the redactor failed; the rest of this stream is dropped]";
      bvm_error_free (&e);
      c->redact_failed = true;
      deliver (c, dropped, sizeof dropped - 1, false);
    }
}

/* End of the stream: what the redactor held back, then the last line. */
static void
console_end (struct console *c)
{
  bvm_error_t e = NULL;
  if (c->rs != NULL && !c->redact_failed && redact_stream_flush (c->rs, cut_lines, c, &e) < 0)
    bvm_error_free (&e);
  if (c->len > 0)
    deliver (c, c->line, c->len, false);
  c->len = 0;
}

/* Read what is there; false at EOF or error. Never blocks (O_NONBLOCK). */
static bool
pump_console (struct console *c, int fd)
{
  static __thread char buf[65536];
  for (int rounds = 0; rounds < 64; rounds++)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n > 0)
        {
          console_feed (c, buf, (size_t) n);
          continue;
        }
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
      return false;
    }
  return true;
}

int
vm__spawn (struct vm *vm, const char *const *argv, bvm_error_t *err)
{
  const struct vm_spec *spec = vm->spec;
  struct proc_opts o = PROC_OPTS_INIT;
  int con[2] = { -1, -1 }, errp[2] = { -1, -1 };
  int ret;

  if (pipe2 (con, O_CLOEXEC) < 0 || pipe2 (errp, O_CLOEXEC) < 0)
    {
      ret = bvm_error (err, errno, "pipe");
      goto cleanup;
    }
  o.stdin_fd = vm->stdin_fd;
  o.stdout_fd = con[1];
  o.stderr_fd = errp[1];
  if (spec->jail != NULL)
    ret = jail_spawn (&vm->pid, spec->jail, argv, &o, err);
  else
    {
      o.pre_exec = spec->pre_exec;
      o.opaque = spec->pre_exec_opaque;
      ret = proc_spawn (&vm->pid, argv, &o, err);
    }
  if (ret < 0)
    {
      bvm_error_wrap (err, "start %s", vm->driver->name);
      goto cleanup;
    }
  vm->console_fd = steal_fd (&con[0]);
  vm->stderr_fd = steal_fd (&errp[0]);
  if (fcntl (vm->console_fd, F_SETFL, O_NONBLOCK) < 0
      || fcntl (vm->stderr_fd, F_SETFL, O_NONBLOCK) < 0)
    ret = bvm_error (err, errno, "fcntl");
cleanup:
  for (int i = 0; i < 2; i++)
    {
      if (con[i] >= 0)
        close (con[i]);
      if (errp[i] >= 0)
        close (errp[i]);
    }
  return ret;
}

static int
check_file (const char *what, const char *path, bvm_error_t *err)
{
  struct stat st;
  if (path == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "no %s given", what);
  if (stat (path, &st) < 0)
    return bvm_error (err, errno, "%s `%s`", what, path);
  if (!S_ISREG (st.st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s` is not a regular file", what, path);
  return 0;
}

static void
kill_and_reap (struct vm *vm, int *status)
{
  if (vm->pid <= 0)
    return;
  kill (vm->pid, SIGKILL);
  while (waitpid (vm->pid, status, 0) < 0 && errno == EINTR)
    ;
  vm->pid = -1;
}

/* One VM's supervision state: on vm_run()'s stack for a VM that runs its
 * job from boot to end, on the heap (vm_boot) for a pool VM that boots, waits
 * for its job and is resumed with it. */
struct vm_warm
{
  struct vm vm;
  struct console_state cst;
  struct console con, kcon;
  int pidfd;
  int ctl_fd; /* the runner's end of the control port (spec->control), or -1 */
  int64_t t0;
  bool console_open, stderr_open, exited;
  int status;
  struct vm_result boot_res; /* a pool VM's boot, until vm_resume */
};

/* Redactors for the spec's secrets on both console streams, fresh line state. */
static int
console_reset (struct vm_warm *w, const struct vm_spec *spec, struct vm_result *res,
               bvm_error_t *err)
{
  struct console *cs[2] = { &w->con, &w->kcon };
  for (int i = 0; i < 2; i++)
    {
      redact_stream_free (cs[i]->rs);
      cs[i]->rs = NULL;
      cs[i]->redact_failed = false;
      cs[i]->len = 0;
      cs[i]->mid = false;
      if (spec->redact != NULL && redact_stream_new (&cs[i]->rs, spec->redact, err) < 0)
        return -1;
    }
  w->cst.spec = spec;
  w->cst.res = res;
  w->cst.capped = false;
  w->con.st = &w->cst;
  w->con.prefix = "";
  w->kcon.st = &w->cst;
  w->kcon.prefix = "[vm] ";
  w->kcon.is_stderr = true;
  return 0;
}

/* Spawn the VMM; on error everything is released (w stays reusable for
 * vm__end, which is then a no-op but for the driver). */
static int
vm__start (struct vm_warm *w, const struct vm_spec *spec, struct vm_result *res, bvm_error_t *err)
{
  const struct vm_driver *drv = vm_driver_find (spec->driver);
  int sv[2] = { -1, -1 };
  int ret;

  memset (res, 0, sizeof *res);
  res->boot_ms = -1;
  w->pidfd = -1;
  w->ctl_fd = -1;
  w->vm.pid = -1;
  w->vm.console_fd = -1;
  w->vm.stderr_fd = -1;
  w->vm.stdin_fd = -1;
  w->vm.channel_fd = -1;
  if (drv == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "unknown VM driver `%s`", spec->driver);
  if ((ret = check_file ("kernel", spec->kernel, err)) < 0
      || (ret = check_file ("rootfs", spec->rootfs, err)) < 0
      || (ret = check_file ("input disk", spec->input, err)) < 0
      || (ret = check_file ("output disk", spec->output, err)) < 0
      || (ret = check_file ("scratch disk", spec->scratch, err)) < 0)
    return ret;
  if (spec->vcpus == 0 || spec->memory_mib < 64)
    return bvm_error_code (err, BVM_E_INVALID, 0, "a VM needs at least 1 vCPU and 64 MiB");
  if (spec->egress && spec->control)
    return bvm_error_code (err, BVM_E_INTERNAL, 0,
                           "a pool VM has no egress channel (both would be its stdin)");
  if ((spec->egress || spec->control) && drv->attach_channel == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the `%s` VM driver has no %s yet", drv->name,
                           spec->egress ? "egress channel" : "control port (a pool VM)");

  w->vm.driver = drv;
  w->vm.spec = spec;
  w->vm.accel = spec->accel == VM_ACCEL_AUTO ? vm_accel_detect (NULL, 0) : spec->accel;
  res->accel = w->vm.accel;
  if ((ret = console_reset (w, spec, res, err)) < 0)
    return ret;

  if (spec->control)
    {
      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return bvm_error (err, errno, "the control port");
      w->ctl_fd = sv[0];
      w->vm.channel_fd = sv[1];
    }
  else if (spec->egress)
    w->vm.channel_fd = spec->egress_fd;
  if (w->vm.channel_fd >= 0 && (ret = drv->attach_channel (&w->vm, err)) < 0)
    goto fail;

  w->t0 = now_ms ();
  ret = drv->boot (&w->vm, err);
  if (sv[1] >= 0)
    close (sv[1]); /* the VMM has its copy (vm__spawn dups it) */
  sv[1] = -1;
  if (ret < 0)
    goto fail;
  if (spec->started)
    spec->started (spec->opaque, w->vm.pid);
  w->pidfd = (int) syscall (SYS_pidfd_open, w->vm.pid, 0);
  w->cst.t0 = w->t0;
  w->console_open = w->stderr_open = true;
  return 0;

fail:
  if (sv[1] >= 0)
    close (sv[1]);
  return ret;
}

/* Supervise until the VMM exits, the spec's cancel flag is set, a deadline
 * passes (res->outcome says which), or - with until_ready - the agent is
 * ready, or `wake_fd` is readable (*woke set). */
static int
vm__loop (struct vm_warm *w, const struct vm_spec *spec, struct vm_result *res, int64_t deadline,
          int64_t boot_deadline, bool until_ready, int wake_fd, bool *woke, bvm_error_t *err)
{
  res->outcome = VM_EXITED;
  while (!w->exited)
    {
      struct pollfd fds[4];
      int nf = 0, ci = -1, si = -1, pi = -1, wi = -1;
      int64_t now = now_ms ();
      int64_t until = deadline;
      int timeout;

      if (until_ready && w->cst.ready)
        return 0;
      if (spec->cancel && *spec->cancel)
        {
          res->outcome = VM_CANCELED;
          return 0;
        }
      if (!w->cst.ready && boot_deadline < until)
        until = boot_deadline;
      if (now >= until)
        {
          res->outcome = (!w->cst.ready && now >= boot_deadline) ? VM_BOOT_TIMEOUT : VM_TIMEOUT;
          return 0;
        }
      timeout = (int) (until - now);
      if (spec->cancel && timeout > CANCEL_TICK_MS)
        timeout = CANCEL_TICK_MS;
      if (w->pidfd < 0 && timeout > 20)
        timeout = 20; /* no pidfd: poll the child */
      if (w->console_open)
        {
          ci = nf;
          fds[nf++] = (struct pollfd){ w->vm.console_fd, POLLIN, 0 };
        }
      if (w->stderr_open)
        {
          si = nf;
          fds[nf++] = (struct pollfd){ w->vm.stderr_fd, POLLIN, 0 };
        }
      if (w->pidfd >= 0)
        {
          pi = nf;
          fds[nf++] = (struct pollfd){ w->pidfd, POLLIN, 0 };
        }
      if (wake_fd >= 0)
        {
          wi = nf;
          fds[nf++] = (struct pollfd){ wake_fd, POLLIN, 0 };
        }
      if (poll (fds, (nfds_t) nf, timeout) < 0)
        {
          if (errno == EINTR)
            continue;
          return bvm_error (err, errno, "poll");
        }
      if (ci >= 0 && fds[ci].revents)
        w->console_open = pump_console (&w->con, w->vm.console_fd);
      if (si >= 0 && fds[si].revents)
        w->stderr_open = pump_console (&w->kcon, w->vm.stderr_fd);
      if (pi < 0 || fds[pi].revents)
        {
          pid_t r = waitpid (w->vm.pid, &w->status, WNOHANG);
          if (r == w->vm.pid)
            {
              w->vm.pid = -1;
              w->exited = true;
            }
        }
      if (!w->exited && wi >= 0 && fds[wi].revents)
        {
          *woke = true;
          return 0;
        }
    }
  return 0;
}

/* The VMM is killed (unless it exited) and reaped, the consoles drained,
 * everything released. */
static void
vm__end (struct vm_warm *w, struct vm_result *res)
{
  if (w->exited)
    {
      /* the VMM is gone, so are the write ends: read what is left */
      int64_t drain_until = now_ms () + 2000;
      while ((w->console_open || w->stderr_open) && now_ms () < drain_until)
        {
          struct pollfd fds[2] = { { w->console_open ? w->vm.console_fd : -1, POLLIN, 0 },
                                   { w->stderr_open ? w->vm.stderr_fd : -1, POLLIN, 0 } };
          if (poll (fds, 2, 100) < 0 && errno != EINTR)
            break;
          if (w->console_open && fds[0].revents)
            w->console_open = pump_console (&w->con, w->vm.console_fd);
          if (w->stderr_open && fds[1].revents)
            w->stderr_open = pump_console (&w->kcon, w->vm.stderr_fd);
        }
      res->vmm_status = w->status;
    }
  else
    kill_and_reap (&w->vm, &res->vmm_status);
  if (w->cst.spec != NULL)
    {
      console_end (&w->con);
      console_end (&w->kcon);
    }
  redact_stream_free (w->con.rs);
  redact_stream_free (w->kcon.rs);
  w->con.rs = w->kcon.rs = NULL;
  res->total_ms = now_ms () - w->t0;
  if (w->vm.console_fd >= 0)
    close (w->vm.console_fd);
  if (w->vm.stderr_fd >= 0)
    close (w->vm.stderr_fd);
  if (w->pidfd >= 0)
    close (w->pidfd);
  if (w->ctl_fd >= 0)
    close (w->ctl_fd);
  w->vm.console_fd = w->vm.stderr_fd = w->pidfd = w->ctl_fd = -1;
  if (w->vm.driver != NULL)
    w->vm.driver->destroy (&w->vm);
  free (w->vm.vmm_path);
  w->vm.vmm_path = NULL;
}

int
vm_run (const struct vm_spec *spec, struct vm_result *res, bvm_error_t *err)
{
  struct vm_warm w = { 0 };
  bool woke = false;
  int ret;

  ret = vm__start (&w, spec, res, err);
  if (ret == 0)
    ret = vm__loop (&w, spec, res, w.t0 + spec->timeout_ms, w.t0 + spec->boot_timeout_ms, false,
                    -1, &woke, err);
  vm__end (&w, res);
  return ret < 0 ? ret : 0;
}

/* --- a pool VM: booted ahead, resumed with its job ------------------------------ */

int
vm_boot_start (struct vm_warm **out, const struct vm_spec *spec, bvm_error_t *err)
{
  struct vm_warm *w = calloc (1, sizeof *w);
  int ret;

  if (w == NULL)
    return bvm_error (err, ENOMEM, "pool VM");
  if (!spec->control)
    {
      free (w); /* nothing started: its fds are not set yet */
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "a pool VM needs its control port");
    }
  if ((ret = vm__start (w, spec, &w->boot_res, err)) < 0)
    {
      vm__end (w, &w->boot_res);
      free (w);
      return ret;
    }
  *out = w;
  return 0;
}

int
vm_boot_wait (struct vm_warm **wp, bvm_error_t *err)
{
  struct vm_warm *w = *wp;
  const struct vm_spec *spec = w->vm.spec;
  struct vm_result *res = &w->boot_res;
  bool woke = false;
  int ret;

  ret = vm__loop (w, spec, res, w->t0 + spec->boot_timeout_ms, w->t0 + spec->boot_timeout_ms, true,
                  -1, &woke, err);
  if (ret == 0 && !w->cst.ready)
    {
      char tail[4 * 300 + 8];
      size_t n = strlen (res->vmm_stderr);
      vm__end (w, res);
      str_escape (tail, sizeof tail, res->vmm_stderr + (n > 300 ? n - 300 : 0), n > 300 ? 300 : n,
                  300);
      ret = bvm_error_code (err, BVM_E_INTERNAL, 0,
                            "the pool VM did not reach the guest agent (%s)%s%s",
                            vm_outcome_name (res->outcome), n ? ": " : "", tail);
    }
  else if (ret < 0)
    vm__end (w, res);
  if (ret < 0)
    {
      free (w);
      *wp = NULL;
    }
  return ret;
}

int
vm_boot (struct vm_warm **out, const struct vm_spec *spec, bvm_error_t *err)
{
  struct vm_warm *w = NULL;
  int ret = vm_boot_start (&w, spec, err);

  if (ret == 0)
    ret = vm_boot_wait (&w, err);
  if (ret == 0)
    *out = w;
  return ret;
}

pid_t
vm_warm_pid (const struct vm_warm *w)
{
  return w->vm.pid;
}

int64_t
vm_warm_boot_ms (const struct vm_warm *w)
{
  return w->boot_res.boot_ms;
}

bool
vm_warm_alive (struct vm_warm *w)
{
  if (!w->exited && waitpid (w->vm.pid, &w->status, WNOHANG) == w->vm.pid)
    {
      w->vm.pid = -1;
      w->exited = true;
    }
  return !w->exited;
}

int
vm_warm_idle (struct vm_warm *w, int fd, int64_t until_ms, bvm_error_t *err)
{
  bool woke = false;
  int ret = vm__loop (w, w->vm.spec, &w->boot_res, until_ms, until_ms, false, fd, &woke, err);
  if (ret < 0)
    return ret;
  if (woke)
    return 1;
  if (w->exited)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "the pool VM ended while it waited for a job");
  if (w->boot_res.outcome == VM_CANCELED)
    return bvm_error_code (err, BVM_E_CANCELED, 0, "the pool VM was stopped");
  return 0;
}

int
vm_resume (struct vm_warm *w, const struct vm_spec *spec, struct vm_result *res, bvm_error_t *err)
{
  static const char go[] = GUEST_GO;
  bool woke = false;
  int64_t t;
  int ret;

  memset (res, 0, sizeof *res);
  res->accel = w->vm.accel;
  res->boot_ms = 0; /* booted before the job: it waited for no boot */
  memcpy (res->vmm_stderr, w->boot_res.vmm_stderr, sizeof res->vmm_stderr);
  ret = console_reset (w, spec, res, err);
  t = now_ms ();
  if (ret == 0 && send (w->ctl_fd, go, sizeof go - 1, MSG_NOSIGNAL) != (ssize_t) (sizeof go - 1))
    ret = bvm_error (err, errno, "signal the pool VM's agent");
  if (ret == 0)
    {
      if (spec->started)
        spec->started (spec->opaque, w->vm.pid);
      ret = vm__loop (w, spec, res, t + spec->timeout_ms, t + spec->timeout_ms, false, -1, &woke,
                      err);
    }
  vm__end (w, res);
  res->total_ms = now_ms () - t;
  free (w);
  return ret < 0 ? ret : 0;
}

void
vm_warm_free (struct vm_warm *w)
{
  if (w == NULL)
    return;
  vm__end (w, &w->boot_res);
  free (w);
}
