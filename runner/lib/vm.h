/* vm.h - throwaway build VMs behind a driver table
 *
 * A VM is booted from a kernel and a read-only rootfs with three job disks
 * (input, output, scratch), runs until the guest agent reboots it or a
 * deadline passes, and is destroyed: the VMM process is always killed and
 * reaped, whatever path vm_run() leaves by. The disks belong to the caller
 * (they live in the job's work directory, which the caller removes).
 *
 * Drivers follow crun's custom handlers / curl's connection filters: a table
 * of function pointers, one per VMM (QEMU microvm here, Firecracker where KVM
 * works). The generic part - console capture with a byte cap, deadlines,
 * cancellation - lives in vm.c and is the same for every driver.
 */
#ifndef BUILDVM_VM_H
#define BUILDVM_VM_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

enum vm_accel
{
  VM_ACCEL_AUTO = 0,
  VM_ACCEL_KVM,
  VM_ACCEL_TCG,
};

struct jail;

struct redactor;

enum vm_stream
{
  VM_STREAM_CONSOLE = 0, /* the agent's console */
  VM_STREAM_STDERR,      /* the VMM's stderr and the kernel's console, as "[vm] " lines */
};

/* Called for every console line (without its newline, \r stripped), after
 * redaction. A line longer than the console's line buffer comes in pieces:
 * `more` says the line goes on in the next call for the same stream (the
 * other stream's lines may come in between; the "[vm] " prefix is on the
 * first piece only). */
typedef void (*vm_line_fn) (void *opaque, enum vm_stream stream, const char *line, size_t len,
                            bool more);

struct vm_spec
{
  const char *driver;  /* "qemu" (default) | "firecracker" */
  const char *vmm;     /* VMM binary; NULL: the driver's default */
  enum vm_accel accel; /* AUTO is resolved by vm_run() */
  const char *name;    /* shows in ps: a job id */
  const char *kernel;
  const char *cmdline;
  const char *rootfs;
  const char *input;       /* read-only */
  const char *output;      /* read-write, fixed size */
  const char *scratch;     /* read-write */
  const char *runtime_dir; /* where a driver may put sockets and config files */
  unsigned vcpus;
  unsigned memory_mib;
  int64_t boot_timeout_ms; /* from spawn to the agent's ready line */
  int64_t timeout_ms;      /* from spawn to VMM exit, boot included */
  uint64_t console_max;    /* bytes of console delivered to `line` */
  /* Mask these secrets in both console streams before they are cut into
   * lines (and so in vmm_stderr too); NULL: none. All patterns added. */
  struct redactor *redact;
  vm_line_fn line;
  void *opaque;
  /* Polled between events: non-zero cancels the VM (signal handlers set it). */
  const volatile sig_atomic_t *cancel;
  /* Child hook before exec (unjailed VMMs only). */
  int (*pre_exec) (void *opaque);
  void *pre_exec_opaque;
  /* Run the VMM in this jail (jail.h), prepared by the caller and destroyed
   * by it after vm_run(); NULL: unjailed. The driver exposes the kernel, the
   * rootfs and the disks in it and gives the VMM their in-jail paths. */
  struct jail *jail;
  /* Called once the VMM runs, with its pid (the daemon journals it). */
  void (*started) (void *opaque, pid_t pid);
  /* The egress channel (docs/architecture.md): when `egress`, egress_fd is
   * the VMM's end of a connected stream socket pair, which the driver hands
   * to the VMM as the guest's `buildvm.egress` port; it stays the caller's
   * (close it after vm_run). Without it the guest has no way out at all. */
  bool egress;
  int egress_fd;
  /* A pool VM (vm_boot): the guest gets its control port (PROTO_CONTROL_PORT,
   * buildvm-image/agent/protocol.h) on the VMM's stdin, a socket pair vm.c
   * makes, and its agent waits there for its job. Not with `egress`. */
  bool control;
};

enum vm_outcome
{
  VM_EXITED = 0,   /* the VMM exited on its own (normally: the guest rebooted) */
  VM_BOOT_TIMEOUT, /* the agent never said it was ready */
  VM_TIMEOUT,      /* the whole-VM deadline passed */
  VM_CANCELED,
};

struct vm_result
{
  enum vm_outcome outcome;
  int vmm_status;      /* waitpid status when VM_EXITED */
  enum vm_accel accel; /* what was used */
  int64_t boot_ms;     /* spawn to agent ready; -1 if never */
  int64_t total_ms;
  uint64_t console_bytes;   /* delivered */
  uint64_t console_dropped; /* over the cap */
  char vmm_stderr[1024];    /* the VMM's own complaints, for error messages */
};

/* The runner's VM settings: runner.json `vm`, as runner_config holds them
 * (config.c loads and checks them; vmjob_opts_settings() maps them). */
struct vm_settings
{
  char *driver; /* "qemu" */
  enum vm_accel accel;
  char *qemu;            /* command name (looked up in PATH) or absolute path */
  uint64_t boot_timeout; /* seconds */
  /* A job that gets no pool VM boots one as it starts, while its checkout
   * runs (pipeline.c, phase "boot"); default on */
  bool early_boot;
};

/* The driver interface (struct vm_driver, struct vm) is in vm/vm_int.h, for
 * vm.c and the drivers (vm/qemu.c, vm/firecracker.c) only. */

/* Parse "auto" | "kvm" | "tcg". */
int vm_accel_parse (enum vm_accel *out, const char *s);
const char *vm_accel_name (enum vm_accel a);
/* KVM only where hardware virtualization really works: the CPU has vmx or
 * svm, /dev/kvm opens read-write, and it is not the PVM nested layer
 * (/sys/module/kvm_pvm), under which standard guests hang. `why` (may be
 * NULL) says why when the answer is TCG. */
enum vm_accel vm_accel_detect (char *why, size_t whysz);

/* Boot, supervise and destroy one VM. Returns 0 whenever the VM ran and
 * ended (see res->outcome); <0 only when it could not be started. */
int vm_run (const struct vm_spec *spec, struct vm_result *res, bvm_error_t *err);

/* A VM booted ahead of its job (the pool, serve.c; docs/architecture.md,
 * "The pool"). vm_boot() starts the VMM of a spec with `control` set and
 * returns once its agent is ready and waits for its job; while it waits,
 * vm_warm_idle() drains its consoles and watches it. vm_resume() takes the
 * job's spec (its console callbacks, redactor, cancel flag, console cap and
 * timeout_ms count; the disks and the VM's shape are the boot spec's), tells
 * the agent to go, supervises the VM to its end like vm_run() and frees the
 * handle: the VMM is killed and reaped whatever happens. vm_warm_free()
 * kills and reaps a VM that never got a job. The boot spec, and the strings
 * it points at, must outlive the handle. */
struct vm_warm;
int vm_boot (struct vm_warm **out, const struct vm_spec *spec, bvm_error_t *err);
/* vm_boot() in two halves, for a boot that overlaps the caller's other
 * work (the pipeline's early VM): vm_boot_start() starts the VMM and
 * returns at once; nothing reads its consoles until vm_boot_wait(), which
 * waits for the agent (up to the spec's boot_timeout_ms from the start) and,
 * when it fails, frees the handle and sets *w to NULL. */
int vm_boot_start (struct vm_warm **out, const struct vm_spec *spec, bvm_error_t *err);
int vm_boot_wait (struct vm_warm **w, bvm_error_t *err);
pid_t vm_warm_pid (const struct vm_warm *w);
int64_t vm_warm_boot_ms (const struct vm_warm *w);
/* false once its VMM has exited (it is reaped then) */
bool vm_warm_alive (struct vm_warm *w);
/* 1 when `fd` is readable, 0 when until_ms (now_ms) passed, <0 when the VM
 * ended (BVM_E_INTERNAL) or the boot spec's cancel flag was set
 * (BVM_E_CANCELED). */
int vm_warm_idle (struct vm_warm *w, int fd, int64_t until_ms, bvm_error_t *err);
int vm_resume (struct vm_warm *w, const struct vm_spec *spec, struct vm_result *res,
               bvm_error_t *err);
void vm_warm_free (struct vm_warm *w);

/* Build the QEMU command line (exposed for tests and `buildvm doctor`).
 * *argv is a NULL-terminated malloc'd vector of malloc'd strings. */
int vm_qemu_argv (char ***argv, const struct vm_spec *spec, enum vm_accel accel, const char *qemu,
                  bvm_error_t *err);
/* Build Firecracker's --config-file JSON (exposed for tests). */
int vm_firecracker_config (char **out, const struct vm_spec *spec, bvm_error_t *err);
void vm_argv_free (char **argv);

const char *vm_outcome_name (enum vm_outcome o);

#endif
