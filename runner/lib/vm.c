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

int
vm_run (const struct vm_spec *spec, struct vm_result *res, bvm_error_t *err)
{
  const struct vm_driver *drv = vm_driver_find (spec->driver);
  struct vm vm = { 0 };
  struct console_state cst = { 0 };
  struct console con = { 0 }, kcon = { 0 };
  cleanup_close int pidfd = -1;
  int64_t t0, deadline, boot_deadline;
  bool console_open = true, stderr_open = true, exited = false;
  int status = 0;
  int ret;

  memset (res, 0, sizeof *res);
  res->boot_ms = -1;
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

  if (spec->redact != NULL
      && ((ret = redact_stream_new (&con.rs, spec->redact, err)) < 0
          || (ret = redact_stream_new (&kcon.rs, spec->redact, err)) < 0))
    {
      redact_stream_free (con.rs);
      return ret;
    }
  vm.driver = drv;
  vm.spec = spec;
  vm.pid = -1;
  vm.console_fd = -1;
  vm.stderr_fd = -1;
  vm.stdin_fd = -1;
  vm.accel = spec->accel == VM_ACCEL_AUTO ? vm_accel_detect (NULL, 0) : spec->accel;
  res->accel = vm.accel;

  if (spec->egress && drv->attach_channel == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the `%s` VM driver has no egress channel yet",
                           drv->name);
  if (spec->egress && (ret = drv->attach_channel (&vm, err)) < 0)
    return ret;

  t0 = now_ms ();
  ret = drv->boot (&vm, err);
  if (ret < 0)
    {
      drv->destroy (&vm);
      free (vm.vmm_path);
      redact_stream_free (con.rs);
      redact_stream_free (kcon.rs);
      return ret;
    }
  if (spec->started)
    spec->started (spec->opaque, vm.pid);
  pidfd = (int) syscall (SYS_pidfd_open, vm.pid, 0);

  cst.spec = spec;
  cst.res = res;
  cst.t0 = t0;
  con.st = &cst;
  con.prefix = "";
  kcon.st = &cst;
  kcon.prefix = "[vm] ";
  kcon.is_stderr = true;
  deadline = t0 + spec->timeout_ms;
  boot_deadline = t0 + spec->boot_timeout_ms;
  res->outcome = VM_EXITED;

  while (!exited)
    {
      struct pollfd fds[3];
      int nf = 0, ci = -1, si = -1, pi = -1;
      int64_t now = now_ms ();
      int64_t until = deadline;
      int timeout;

      if (spec->cancel && *spec->cancel)
        {
          res->outcome = VM_CANCELED;
          break;
        }
      if (!cst.ready && boot_deadline < until)
        until = boot_deadline;
      if (now >= until)
        {
          res->outcome = (!cst.ready && now >= boot_deadline) ? VM_BOOT_TIMEOUT : VM_TIMEOUT;
          break;
        }
      timeout = (int) (until - now);
      if (spec->cancel && timeout > CANCEL_TICK_MS)
        timeout = CANCEL_TICK_MS;
      if (pidfd < 0 && timeout > 20)
        timeout = 20; /* no pidfd: poll the child */
      if (console_open)
        {
          ci = nf;
          fds[nf++] = (struct pollfd){ vm.console_fd, POLLIN, 0 };
        }
      if (stderr_open)
        {
          si = nf;
          fds[nf++] = (struct pollfd){ vm.stderr_fd, POLLIN, 0 };
        }
      if (pidfd >= 0)
        {
          pi = nf;
          fds[nf++] = (struct pollfd){ pidfd, POLLIN, 0 };
        }
      if (poll (fds, (nfds_t) nf, timeout) < 0)
        {
          if (errno == EINTR)
            continue;
          ret = bvm_error (err, errno, "poll");
          break;
        }
      if (ci >= 0 && fds[ci].revents)
        console_open = pump_console (&con, vm.console_fd);
      if (si >= 0 && fds[si].revents)
        stderr_open = pump_console (&kcon, vm.stderr_fd);
      if (pi < 0 || fds[pi].revents)
        {
          pid_t w = waitpid (vm.pid, &status, WNOHANG);
          if (w == vm.pid)
            {
              vm.pid = -1;
              exited = true;
            }
        }
    }

  if (exited)
    {
      /* the VMM is gone, so are the write ends: read what is left */
      int64_t drain_until = now_ms () + 2000;
      while ((console_open || stderr_open) && now_ms () < drain_until)
        {
          struct pollfd fds[2] = { { console_open ? vm.console_fd : -1, POLLIN, 0 },
                                   { stderr_open ? vm.stderr_fd : -1, POLLIN, 0 } };
          if (poll (fds, 2, 100) < 0 && errno != EINTR)
            break;
          if (console_open && fds[0].revents)
            console_open = pump_console (&con, vm.console_fd);
          if (stderr_open && fds[1].revents)
            stderr_open = pump_console (&kcon, vm.stderr_fd);
        }
      res->vmm_status = status;
    }
  else
    kill_and_reap (&vm, &res->vmm_status);
  console_end (&con);
  console_end (&kcon);
  redact_stream_free (con.rs);
  redact_stream_free (kcon.rs);
  res->total_ms = now_ms () - t0;
  if (vm.console_fd >= 0)
    close (vm.console_fd);
  if (vm.stderr_fd >= 0)
    close (vm.stderr_fd);
  drv->destroy (&vm);
  free (vm.vmm_path);
  return ret < 0 ? ret : 0;
}
