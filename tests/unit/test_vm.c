/* test_vm.c - the VM driver layer without booting a kernel
 *
 * The QEMU and Firecracker command lines are checked field by field. The
 * supervision loop (console capture, caps, deadlines, cancel, teardown) is
 * driven with stand-in VMM scripts that behave like hostile or broken guests
 * the real agent would never produce; real boots are in the integration tests.
 */
#include "support.h"

#include "buf.h"
#include "fs.h"
#include "proc.h"
#include "redact.h"
#include "util.h"
#include "vm.h"
#include "workdir.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static bool
argv_has (char **argv, const char *s)
{
  for (char **p = argv; *p; p++)
    if (strcmp (*p, s) == 0)
      return true;
  return false;
}

static bool
argv_has_sub (char **argv, const char *s)
{
  for (char **p = argv; *p; p++)
    if (strstr (*p, s) != NULL)
      return true;
  return false;
}

static struct vm_spec
spec_for (const char *dir)
{
  static char k[512], r[512], i[512], o[512], s[512];
  struct vm_spec spec = { 0 };
  snprintf (k, sizeof k, "%s/vmlinux", dir);
  snprintf (r, sizeof r, "%s/rootfs,with,commas.ext4", dir);
  snprintf (i, sizeof i, "%s/input.img", dir);
  snprintf (o, sizeof o, "%s/output.img", dir);
  snprintf (s, sizeof s, "%s/scratch.img", dir);
  spec.kernel = k;
  spec.rootfs = r;
  spec.input = i;
  spec.output = o;
  spec.scratch = s;
  spec.cmdline = "console=ttyS0 reboot=t root=/dev/vda";
  spec.name = "job-1";
  spec.vcpus = 2;
  spec.memory_mib = 768;
  spec.boot_timeout_ms = 5000;
  spec.timeout_ms = 10000;
  spec.console_max = 1 << 20;
  spec.runtime_dir = dir;
  return spec;
}

static void
test_qemu_argv (void **state)
{
  struct vm_spec spec = spec_for ("/jobs/x");
  bvm_error_t err = NULL;
  char **argv = NULL;
  (void) state;

  assert_ok (vm_qemu_argv (&argv, &spec, VM_ACCEL_TCG, "/usr/bin/qemu-system-x86_64", &err), &err);
  assert_string_equal (argv[0], "/usr/bin/qemu-system-x86_64");
  assert_true (argv_has (argv, "microvm,acpi=off"));
  assert_true (argv_has (argv, "-nodefaults"));
  assert_true (argv_has (argv, "-no-user-config"));
  assert_true (argv_has (argv, "-no-reboot"));
  assert_true (argv_has (argv, "tcg"));
  assert_true (argv_has (argv, "768M"));
  assert_true (argv_has_sub (argv, "on,obsolete=deny,elevateprivileges=deny,spawn=deny"));
  /* no network device of any kind */
  assert_false (argv_has_sub (argv, "-net"));
  assert_false (argv_has_sub (argv, "virtio-net"));
  /* read-only rootfs and input, commas in paths escaped, disks named */
  assert_true (argv_has_sub (argv, "id=rootfs,file=/jobs/x/rootfs,,with,,commas.ext4,format=raw,"
                                   "if=none,readonly=on"));
  assert_true (
      argv_has_sub (argv, "id=input,file=/jobs/x/input.img,format=raw,if=none,readonly=on"));
  assert_true (
      argv_has_sub (argv, "id=output,file=/jobs/x/output.img,format=raw,if=none,readonly=off"));
  assert_true (argv_has_sub (argv, "id=scratch,file=/jobs/x/scratch.img,format=raw,if=none,"
                                   "readonly=off,cache=unsafe"));
  assert_true (argv_has (argv, "virtio-blk-device,drive=input,serial=input"));
  /* no egress channel unless asked for: stdin is not read as one */
  assert_false (argv_has_sub (argv, "buildvm.egress"));
  assert_true (argv_has (argv, "stdio,id=con,signal=off"));
  vm_argv_free (argv);

  /* the egress channel: the socket on fd 0, a named port, and the console
   * write-only so that nothing else reads stdin */
  spec.egress = true;
  assert_ok (vm_qemu_argv (&argv, &spec, VM_ACCEL_TCG, "qemu", &err), &err);
  assert_true (argv_has (argv, "socket,id=egress,fd=0"));
  assert_true (argv_has (argv, "virtserialport,chardev=egress,name=buildvm.egress"));
  assert_true (argv_has (argv, "file,id=con,path=/dev/stdout"));
  assert_false (argv_has (argv, "stdio,id=con,signal=off"));
  assert_false (argv_has_sub (argv, "virtio-net"));
  vm_argv_free (argv);
  spec.egress = false;

  /* a pool VM: the control port on fd 0 instead, the console write-only */
  spec.control = true;
  assert_ok (vm_qemu_argv (&argv, &spec, VM_ACCEL_TCG, "qemu", &err), &err);
  assert_true (argv_has (argv, "socket,id=control,fd=0"));
  assert_true (argv_has (argv, "virtserialport,chardev=control,name=buildvm.control"));
  assert_true (argv_has (argv, "file,id=con,path=/dev/stdout"));
  assert_false (argv_has_sub (argv, "buildvm.egress"));
  vm_argv_free (argv);
  spec.control = false;

  assert_ok (vm_qemu_argv (&argv, &spec, VM_ACCEL_KVM, "qemu", &err), &err);
  assert_true (argv_has (argv, "kvm"));
  assert_true (argv_has (argv, "host"));
  vm_argv_free (argv);
}

static void
test_firecracker_config (void **state)
{
  struct vm_spec spec = spec_for ("/jobs/x");
  bvm_error_t err = NULL;
  char *cfg = NULL;
  json_error_t jerr;
  json_t *j, *drives;
  (void) state;

  assert_ok (vm_firecracker_config (&cfg, &spec, &err), &err);
  j = json_loads (cfg, 0, &jerr);
  assert_non_null (j);
  assert_non_null (strstr (json_string_value (
                               json_object_get (json_object_get (j, "boot-source"), "boot_args")),
                           "reboot=k"));
  drives = json_object_get (j, "drives");
  assert_int_equal (json_array_size (drives), 4);
  assert_string_equal (json_string_value (
                           json_object_get (json_array_get (drives, 0), "drive_id")),
                       "rootfs");
  assert_true (json_is_true (json_object_get (json_array_get (drives, 0), "is_read_only")));
  assert_true (json_is_true (json_object_get (json_array_get (drives, 1), "is_read_only")));
  assert_true (json_is_false (json_object_get (json_array_get (drives, 2), "is_read_only")));
  assert_int_equal (json_array_size (json_object_get (j, "network-interfaces")), 0);
  assert_int_equal (json_integer_value (
                        json_object_get (json_object_get (j, "machine-config"), "vcpu_count")),
                    2);
  json_decref (j);
  free (cfg);
}

static void
test_accel_parse (void **state)
{
  enum vm_accel a;
  char why[256];
  (void) state;
  assert_int_equal (vm_accel_parse (&a, "kvm"), 0);
  assert_int_equal (a, VM_ACCEL_KVM);
  assert_int_equal (vm_accel_parse (&a, "tcg"), 0);
  assert_int_equal (vm_accel_parse (&a, "auto"), 0);
  assert_int_equal (vm_accel_parse (&a, "KVM"), -1);
  a = vm_accel_detect (why, sizeof why);
  if (access ("/sys/module/kvm_pvm", F_OK) == 0)
    {
      assert_int_equal (a, VM_ACCEL_TCG);
      assert_non_null (strstr (why, "PVM"));
    }
}

/* --- the supervision loop, with stand-in VMMs ------------------------------- */

struct capture
{
  char **lines;
  bool *more;
  enum vm_stream *stream;
  size_t n;
  pid_t pid;
};

static void
on_line (void *opaque, enum vm_stream stream, const char *line, size_t len, bool more)
{
  struct capture *c = opaque;
  c->lines = realloc (c->lines, (c->n + 1) * sizeof *c->lines);
  c->more = realloc (c->more, (c->n + 1) * sizeof *c->more);
  c->stream = realloc (c->stream, (c->n + 1) * sizeof *c->stream);
  c->more[c->n] = more;
  c->stream[c->n] = stream;
  c->lines[c->n++] = strndup (line, len);
}

static void
on_started (void *opaque, pid_t pid)
{
  ((struct capture *) opaque)->pid = pid;
}

static void
capture_free (struct capture *c)
{
  for (size_t i = 0; i < c->n; i++)
    free (c->lines[i]);
  free (c->lines);
  free (c->more);
  free (c->stream);
  memset (c, 0, sizeof *c);
}

static char *
fake_vmm (const char *dir, const char *name, const char *body)
{
  char *path = NULL;
  char *script = NULL;
  if (asprintf (&path, "%s/%s", dir, name) < 0 || asprintf (&script, "#!/bin/sh\n%s\n", body) < 0)
    abort ();
  t_write (path, script);
  chmod (path, 0755);
  free (script);
  return path;
}

static void
make_disks (const char *dir)
{
  const char *files[] = { "vmlinux", "rootfs,with,commas.ext4", "input.img", "output.img",
                          "scratch.img" };
  char p[512];
  for (size_t i = 0; i < ARRAY_SIZE (files); i++)
    {
      snprintf (p, sizeof p, "%s/%s", dir, files[i]);
      t_write (p, "x");
    }
}

static void
assert_reaped (pid_t pid)
{
  assert_true (pid > 0);
  assert_int_equal (kill (pid, 0), -1);
  assert_int_equal (errno, ESRCH);
}

/* A pool VM: booted to its agent's ready line with no job, idle (its
 * output then is nobody's), resumed with the job's console: the agent gets
 * "go" on its control port (the fake VMM's stdin) and only what it says
 * after goes to the job. One never resumed is killed and reaped. */
static void
test_warm_boot_idle_resume (void **state)
{
  char *d = t_tmpdir ();
  struct vm_spec boot, job;
  struct vm_result res;
  struct capture cap = { 0 };
  struct vm_warm *w = NULL;
  bvm_error_t err = NULL;
  int p[2];
  pid_t pid;
  char *vmm;
  (void) state;

  make_disks (d);
  boot = spec_for (d);
  vmm = fake_vmm (d, "vmm",
                  "printf 'buildvm-agent: ready\\n'; echo before-the-job; read -r go; "
                  "echo \"got $go\"; exit 0");
  boot.vmm = vmm;
  boot.accel = VM_ACCEL_TCG;
  boot.control = true;
  boot.boot_timeout_ms = 10000;
  assert_ok (vm_boot (&w, &boot, &err), &err);
  pid = vm_warm_pid (w);
  assert_true (pid > 0);
  assert_true (vm_warm_boot_ms (w) >= 0);
  assert_int_equal (pipe (p), 0);
  /* nothing on the wake fd: until the time given */
  assert_int_equal (vm_warm_idle (w, p[0], now_ms () + 300, &err), 0);
  assert_int_equal (write (p[1], "x", 1), 1);
  assert_int_equal (vm_warm_idle (w, p[0], now_ms () + 5000, &err), 1);
  job = boot;
  job.line = on_line;
  job.opaque = &cap;
  job.started = on_started;
  job.timeout_ms = 10000;
  assert_ok (vm_resume (w, &job, &res, &err), &err);
  assert_int_equal (res.outcome, VM_EXITED);
  assert_true (WIFEXITED (res.vmm_status) && WEXITSTATUS (res.vmm_status) == 0);
  assert_int_equal (res.boot_ms, 0);
  assert_int_equal (cap.pid, pid);
  assert_reaped (pid);
  assert_int_equal (cap.n, 1);
  assert_string_equal (cap.lines[0], "got go");
  capture_free (&cap);

  /* booted and dropped */
  assert_ok (vm_boot (&w, &boot, &err), &err);
  pid = vm_warm_pid (w);
  vm_warm_free (w);
  assert_reaped (pid);

  /* the boot in two halves (the early VM): started, the caller's own work,
   * then waited for; its console was not read in between */
  assert_ok (vm_boot_start (&w, &boot, &err), &err);
  pid = vm_warm_pid (w);
  assert_true (pid > 0);
  usleep (200 * 1000);
  assert_ok (vm_boot_wait (&w, &err), &err);
  assert_non_null (w);
  assert_int_equal (vm_warm_pid (w), pid);
  vm_warm_free (w);
  assert_reaped (pid);

  /* a VMM that ends while it waits */
  free (vmm);
  vmm = fake_vmm (d, "vmm2", "printf 'buildvm-agent: ready\\n'; exit 0");
  boot.vmm = vmm;
  assert_ok (vm_boot (&w, &boot, &err), &err);
  assert_fails_with (vm_warm_idle (w, -1, now_ms () + 5000, &err), &err, "ended while it waited");
  vm_warm_free (w);
  /* one that never gets ready */
  free (vmm);
  vmm = fake_vmm (d, "vmm3", "echo nope >&2; sleep 30");
  boot.vmm = vmm;
  boot.boot_timeout_ms = 300;
  assert_fails_with (vm_boot (&w, &boot, &err), &err, "did not reach the guest agent");
  /* started, never ready: the wait fails, frees the handle and kills its VMM */
  assert_ok (vm_boot_start (&w, &boot, &err), &err);
  pid = vm_warm_pid (w);
  assert_fails_with (vm_boot_wait (&w, &err), &err, "did not reach the guest agent");
  assert_null (w);
  assert_reaped (pid);
  close (p[0]);
  close (p[1]);
  free (vmm);
  t_tmpdir_free (d);
}

static void
test_run_console_and_exit (void **state)
{
  char *d = t_tmpdir ();
  struct vm_spec spec;
  struct vm_result res;
  struct capture cap = { 0 };
  bvm_error_t err = NULL;
  char *vmm;
  (void) state;

  make_disks (d);
  spec = spec_for (d);
  vmm = fake_vmm (d, "vmm",
                  "echo booting >&2; printf 'buildvm-agent: ready\\r\\nline one\\n'; "
                  "printf 'no newline at the end'; exit 0");
  spec.vmm = vmm;
  spec.accel = VM_ACCEL_TCG;
  spec.line = on_line;
  spec.opaque = &cap;
  spec.started = on_started;
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_EXITED);
  assert_true (WIFEXITED (res.vmm_status));
  assert_true (res.boot_ms >= 0);
  assert_reaped (cap.pid);
  /* "[vm] booting" comes from stderr; order across the two pipes is not fixed */
  {
    bool saw_ready = false, saw_one = false, saw_tail = false, saw_vm = false;
    for (size_t i = 0; i < cap.n; i++)
      {
        saw_ready |= strcmp (cap.lines[i], "buildvm-agent: ready") == 0;
        saw_one |= strcmp (cap.lines[i], "line one") == 0;
        saw_tail |= strcmp (cap.lines[i], "no newline at the end") == 0;
        saw_vm |= strcmp (cap.lines[i], "[vm] booting") == 0;
      }
    assert_true (saw_ready && saw_one && saw_tail && saw_vm);
  }
  assert_non_null (strstr (res.vmm_stderr, "booting"));
  capture_free (&cap);
  free (vmm);
  t_tmpdir_free (d);
}

static void
test_run_console_cap (void **state)
{
  char *d = t_tmpdir ();
  struct vm_spec spec;
  struct vm_result res;
  struct capture cap = { 0 };
  bvm_error_t err = NULL;
  char *vmm;
  size_t markers = 0, bytes = 0;
  (void) state;

  make_disks (d);
  spec = spec_for (d);
  /* 20 MB of console, and one 1 MB line without a newline */
  vmm = fake_vmm (d, "vmm",
                  "yes 'flood flood flood flood' | head -c 20000000; "
                  "head -c 1000000 /dev/zero | tr '\\0' 'x'");
  spec.vmm = vmm;
  spec.accel = VM_ACCEL_TCG;
  spec.console_max = 100000;
  spec.line = on_line;
  spec.opaque = &cap;
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_EXITED);
  for (size_t i = 0; i < cap.n; i++)
    {
      if (strstr (cap.lines[i], "console output exceeded 100000 bytes"))
        markers++;
      else
        bytes += strlen (cap.lines[i]) + 1;
      assert_true (strlen (cap.lines[i]) <= 8192);
    }
  assert_int_equal (markers, 1);
  assert_true (bytes <= 100000);
  assert_true (res.console_bytes <= 100000);
  assert_true (res.console_dropped >= 20000000);
  capture_free (&cap);
  free (vmm);
  t_tmpdir_free (d);
}

/* Whether any `w`-byte piece of v[0..n) is in text. */
static bool
has_piece (const char *text, size_t tlen, const char *v, size_t n, size_t w)
{
  for (size_t i = 0; i + w <= n; i++)
    if (memmem (text, tlen, v + i, w) != NULL)
      return true;
  return false;
}

/* Secrets are masked in the console before it is cut into lines: a secret
 * at every offset of the 8 KiB line split, a 64 KiB one, one with `\r\n`
 * inside, on the agent's console and on the VMM's stderr (and in its tail
 * for error messages). A split line comes in pieces marked `more`. */
static void
test_run_console_redacted_at_every_split (void **state)
{
  enum
  {
    SPLIT = 8192,
    BIG = 64 * 1024,
  };
  static const char small[] = "s3cr3t-value-0123456789abcdef";
  static const char crlf[] = "crlf-part-one\r\ncrlf-part-two";
  char *d = t_tmpdir ();
  struct vm_spec spec;
  struct vm_result res;
  struct capture cap = { 0 };
  struct redactor *r = NULL;
  bvm_error_t err = NULL;
  struct buf con = BUF_INIT (64u << 20), joined = BUF_INIT (64u << 20);
  char *vmm, path[512], *big = malloc (BIG + 1);
  size_t lines = 0, pieces = 0, masked = 0, expect = 0, start = 0;
  bool short_;
  (void) state;

  assert_non_null (big);
  for (size_t i = 0; i < BIG; i++)
    big[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 36) % 36];
  big[BIG] = '\0';
  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, small, strlen (small), &short_, &err), &err);
  assert_ok (redact_add (r, crlf, strlen (crlf), &short_, &err), &err);
  assert_ok (redact_add (r, big, BIG, &short_, &err), &err);

  buf_adds (&con, "buildvm-agent: ready\n");
  for (size_t k = SPLIT - strlen (small); k < SPLIT; k++)
    {
      for (size_t i = 0; i < k; i++)
        buf_add (&con, "x", 1);
      buf_addf (&con, "%s end\n", small);
      expect++;
    }
  buf_addf (&con, "a %s b\r\n", crlf);
  buf_addf (&con, "big %s end\n", big);
  make_disks (d);
  snprintf (path, sizeof path, "%s/console.txt", d);
  assert_ok (fs_write_atomic (path, con.ptr, con.len, 0600, &err), &err);
  vmm = fake_vmm (d, "vmm",
                  "cat \"$(dirname \"$0\")/console.txt\"; "
                  "cat \"$(dirname \"$0\")/console.txt\" >&2; exit 0");
  spec = spec_for (d);
  spec.vmm = vmm;
  spec.accel = VM_ACCEL_TCG;
  spec.console_max = 64u << 20;
  spec.redact = r;
  spec.line = on_line;
  spec.opaque = &cap;
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_EXITED);
  assert_true (res.boot_ms >= 0); /* the ready line was seen */

  for (int stream = 0; stream < 2; stream++)
    for (size_t i = 0; i < cap.n; i++)
      {
        if ((int) cap.stream[i] != stream)
          continue;
        buf_adds (&joined, cap.lines[i]);
        if (cap.more[i])
          {
            pieces++;
            continue;
          }
        lines++;
        if (strstr (buf_cstr (&joined) + start, "*** end") != NULL)
          masked++;
        buf_add (&joined, "\n", 1);
        start = joined.len;
      }
  assert_false (has_piece (joined.ptr, joined.len, small, strlen (small), 12));
  assert_false (has_piece (joined.ptr, joined.len, crlf, strlen (crlf), 12));
  assert_false (has_piece (joined.ptr, joined.len, big, BIG, 16));
  assert_false (has_piece (res.vmm_stderr, strlen (res.vmm_stderr), big, BIG, 16));
  assert_non_null (strstr (buf_cstr (&joined), "a *** b\n"));
  /* both streams, every printed line masked, long lines in marked pieces */
  assert_int_equal (masked, 2 * (expect + 1));
  /* "x..x*** end" is longer than a console line for the last 6 offsets */
  assert_int_equal (pieces, 2 * 6);
  assert_true (lines == 2 * (expect + 3));
  capture_free (&cap);
  buf_dispose (&con);
  buf_dispose (&joined);
  redact_free (r);
  free (big);
  free (vmm);
  t_tmpdir_free (d);
}

static void
test_run_deadlines_and_cancel (void **state)
{
  char *d = t_tmpdir ();
  struct vm_spec spec;
  struct vm_result res;
  struct capture cap = { 0 };
  bvm_error_t err = NULL;
  volatile sig_atomic_t cancel = 0;
  int64_t t0;
  char *never, *hangs;
  (void) state;

  make_disks (d);
  never = fake_vmm (d, "never", "exec sleep 1000");
  hangs = fake_vmm (d, "hangs", "echo 'buildvm-agent: ready'; exec sleep 1000");

  spec = spec_for (d);
  spec.accel = VM_ACCEL_TCG;
  spec.started = on_started;
  spec.opaque = &cap;
  spec.vmm = never;
  spec.boot_timeout_ms = 300;
  t0 = now_ms ();
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_BOOT_TIMEOUT);
  assert_true (now_ms () - t0 < 3000);
  assert_reaped (cap.pid);

  spec.vmm = hangs;
  spec.boot_timeout_ms = 5000;
  spec.timeout_ms = 500;
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_TIMEOUT);
  assert_true (res.boot_ms >= 0);
  assert_reaped (cap.pid);

  spec.timeout_ms = 60000;
  spec.cancel = &cancel;
  cancel = 1;
  assert_ok (vm_run (&spec, &res, &err), &err);
  assert_int_equal (res.outcome, VM_CANCELED);
  assert_reaped (cap.pid);

  free (never);
  free (hangs);
  t_tmpdir_free (d);
}

static void
test_run_errors (void **state)
{
  char *d = t_tmpdir ();
  struct vm_spec spec;
  struct vm_result res;
  bvm_error_t err = NULL;
  char p[512];
  (void) state;

  make_disks (d);
  spec = spec_for (d);
  spec.accel = VM_ACCEL_TCG;
  spec.vmm = "/nonexistent/qemu";
  assert_fails_with (vm_run (&spec, &res, &err), &err, "/nonexistent/qemu");

  spec.vmm = "true";
  snprintf (p, sizeof p, "%s/missing-kernel", d);
  spec.kernel = p;
  assert_fails_with (vm_run (&spec, &res, &err), &err, "kernel");

  spec = spec_for (d);
  spec.driver = "xen";
  assert_fails_with (vm_run (&spec, &res, &err), &err, "unknown VM driver");

  spec = spec_for (d);
  spec.driver = "firecracker";
  spec.accel = VM_ACCEL_TCG;
  assert_fails_with (vm_run (&spec, &res, &err), &err, "needs KVM");
  /* nothing of the driver's is left in the runtime dir */
  snprintf (p, sizeof p, "%s/firecracker.json", d);
  assert_int_equal (access (p, F_OK), -1);
  t_tmpdir_free (d);
}

/* --- work directories ------------------------------------------------------------ */

static int
count_entries (const char *dir)
{
  char *out = t_sh_out ("ls '%s' | wc -l", dir);
  int n = atoi (out);
  free (out);
  return n;
}

static void
test_workdir_reap (void **state)
{
  char *d = t_tmpdir ();
  struct workdir *mine = NULL;
  bvm_error_t err = NULL;
  unsigned reaped = 0;
  pid_t pid;
  int st;
  (void) state;

  assert_ok (workdir_create (&mine, d, "job-a", &err), &err);
  /* a child makes one and dies without cleaning up */
  pid = fork ();
  if (pid == 0)
    {
      struct workdir *w = NULL;
      bvm_error_t e = NULL;
      char *f;
      if (workdir_create (&w, d, "job-b", &e) < 0)
        _exit (1);
      f = workdir_file (w, "disk.img");
      t_write (f, "data");
      _exit (0);
    }
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_int_equal (WEXITSTATUS (st), 0);
  assert_int_equal (count_entries (d), 2);
  assert_ok (workdir_reap_stale (d, &reaped, &err), &err);
  assert_int_equal (reaped, 1);
  /* ours is alive and stays */
  assert_int_equal (access (mine->path, F_OK), 0);
  assert_ok (workdir_remove (mine, &err), &err);
  assert_int_equal (count_entries (d), 0);
  t_tmpdir_free (d);
}

/* A reaper running while jobs create their directories never removes a live
 * one (issue 11, also from reading): the directory used to appear under its
 * final name before its lock was taken, and a reaper in that window removed
 * it. A child creates, uses and removes directories in a loop while we reap. */
static void
test_workdir_reap_race (void **state)
{
  char *d = t_tmpdir ();
  bvm_error_t err = NULL;
  pid_t pid;
  int st;
  (void) state;

  pid = fork ();
  if (pid == 0)
    {
      for (int i = 0; i < 3000; i++)
        {
          struct workdir *w = NULL;
          bvm_error_t e = NULL;
          char *f;
          if (workdir_create (&w, d, "job", &e) < 0)
            _exit (10);
          f = workdir_file (w, "disk.img");
          if (f == NULL || access (w->path, F_OK) < 0)
            _exit (11);
          {
            int fd = open (f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0)
              _exit (12);
            close (fd);
          }
          free (f);
          if (workdir_remove (w, &e) < 0)
            _exit (13);
        }
      _exit (0);
    }
  for (;;)
    {
      unsigned reaped = 0;
      if (waitpid (pid, &st, WNOHANG) == pid)
        break;
      if (workdir_reap_stale (d, &reaped, &err) < 0)
        bvm_error_free (&err);
    }
  assert_true (WIFEXITED (st));
  assert_int_equal (WEXITSTATUS (st), 0);
  assert_int_equal (count_entries (d), 0);
  t_tmpdir_free (d);
}

static void
test_proc (void **state)
{
  const char *missing[] = { "/no/such/binary", NULL };
  const char *slow[] = { "sleep", "5", NULL };
  const char *echo[] = { "sh", "-c", "echo hi; echo err >&2; exit 3", NULL };
  struct buf out = BUF_INIT (1024);
  bvm_error_t err = NULL;
  pid_t pid;
  int status;
  struct proc_opts o = PROC_OPTS_INIT;
  (void) state;

  assert_fails_with (proc_spawn (&pid, missing, &o, &err), &err, "/no/such/binary");
  assert_fails_with (proc_run (slow, NULL, &status, 200, &err), &err, "did not finish");
  assert_ok (proc_run (echo, &out, &status, 5000, &err), &err);
  assert_int_equal (WEXITSTATUS (status), 3);
  assert_non_null (strstr (buf_cstr (&out), "hi"));
  assert_non_null (strstr (buf_cstr (&out), "err"));
  buf_dispose (&out);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_qemu_argv),
    cmocka_unit_test (test_firecracker_config),
    cmocka_unit_test (test_accel_parse),
    cmocka_unit_test (test_run_console_and_exit),
    cmocka_unit_test (test_warm_boot_idle_resume),
    cmocka_unit_test (test_run_console_cap),
    cmocka_unit_test (test_run_console_redacted_at_every_split),
    cmocka_unit_test (test_run_deadlines_and_cancel),
    cmocka_unit_test (test_run_errors),
    cmocka_unit_test (test_workdir_reap),
    cmocka_unit_test (test_workdir_reap_race),
    cmocka_unit_test (test_proc),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
