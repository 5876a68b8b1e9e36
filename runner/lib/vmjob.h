/* vmjob.h - one build in one throwaway VM: disks, boot, result
 *
 * Given an input disk (guest.h), create the output and scratch disks in the
 * job's work directory, run the VM (vm.h) and read the agent's result header.
 * Shared by `buildvm vm run` and the deploy pipeline.
 */
#ifndef BUILDVM_VMJOB_H
#define BUILDVM_VMJOB_H

#include "egress.h"
#include "guest.h"
#include "image.h"
#include "jail.h"
#include "vm.h"
#include "workdir.h"

struct vmjob_opts
{
  const struct vm_image *image;
  const char *driver; /* NULL: qemu */
  const char *vmm;    /* NULL: the driver's default binary */
  enum vm_accel accel;
  const char *name;
  unsigned vcpus;
  unsigned memory_mib;
  uint64_t disk_mib;
  uint64_t output_max; /* bytes of output tar */
  int64_t boot_timeout_ms;
  int64_t build_timeout_ms; /* the agent's own deadline for all steps */
  uint64_t console_max;
  /* The job's secrets: masked on both consoles (vm.h) and in the guest's
   * result message. NULL: none. */
  struct redactor *redact;
  vm_line_fn line;
  void *opaque;
  const volatile sig_atomic_t *cancel;
  int (*pre_exec) (void *opaque); /* unjailed VMMs only */
  void *pre_exec_opaque;
  void (*started) (void *opaque, pid_t pid);
  /* The jail around the VMM (jail.h): runner.json `jail`. NULL: the
   * defaults, i.e. jailed when the runner is root. */
  const struct jail_settings *jail;
  /* The egress channel's broker (egress.h), served for the VM's life; NULL:
   * the VM gets no channel. */
  const struct egress_opts *egress;
  /* A pool VM booted ahead for this shape (vmjob_prewarm), or NULL: a cold
   * boot. vmjob_run takes *warm (and sets it to NULL) whether it runs the
   * job in it or, when the job does not fit it, frees it and boots cold. */
  struct vmjob_warm **warm;
  /* The scratch disk, made with the source tree in it (srcfs.h), in the
   * job's work directory: the VM gets this file (a pool VM a copy of it).
   * NULL: an empty one is made (`buildvm vm run`). Removed with the VM. */
  const char *scratch;
};

/* How the job got its VM. */
enum vmjob_pool
{
  VMJOB_POOL_NONE = 0, /* no pool VM was offered: a cold boot */
  VMJOB_POOL_HIT,      /* it ran in a pool VM */
  VMJOB_POOL_MISS,     /* the pool VM offered did not fit (pool_note): a cold boot */
};

struct vmjob_result
{
  struct vm_result vm;
  struct guest_result guest;
  char *output_disk;     /* in the work directory; ingest reads the tar from it */
  int64_t disks_ms;      /* creating the output and scratch disks */
  bool jailed;           /* the VMM ran in a jail */
  uint32_t jail_uid;     /* its uid and gid */
  char jail_note[256];   /* cgroup controllers the host did not offer, and why */
  struct egress *egress; /* the stopped broker (egress_record), or NULL */
  enum vmjob_pool pool;
  char pool_note[160]; /* a miss: why the pool VM did not fit */
};

/* The runner's VM and jail settings (runner.json `vm` and `jail`, which
 * runner_config embeds) into o: driver, VMM binary, accelerator, and the
 * jail (o->jail points at `jail`, which must outlive o). */
void vmjob_opts_settings (struct vmjob_opts *o, const struct vm_settings *vm,
                          const struct jail_settings *jail);

/* A pool VM (docs/architecture.md, "The pool"): its disks in `wd` - a
 * blank, sparse input disk of input_max bytes, the output and the scratch
 * disks of the shape in `o` (vcpus, memory_mib, disk_mib, output_max) - its
 * jail, and the VM booted to its waiting agent (vm_boot). o->cancel stops
 * the boot and the wait. `o` and the image it points at must outlive it. */
struct vmjob_warm;
int vmjob_prewarm (struct vmjob_warm **out, const struct workdir *wd, const struct vmjob_opts *o,
                   uint64_t input_max, bvm_error_t *err);
/* vmjob_prewarm() in two halves (vm_boot_start, vm_boot_wait): the VMM is
 * started, and later waited for; a failed wait frees *w and sets it NULL. */
int vmjob_prewarm_start (struct vmjob_warm **out, const struct workdir *wd,
                         const struct vmjob_opts *o, uint64_t input_max, bvm_error_t *err);
int vmjob_prewarm_wait (struct vmjob_warm **w, bvm_error_t *err);
pid_t vmjob_warm_pid (const struct vmjob_warm *w);
int64_t vmjob_warm_boot_ms (const struct vmjob_warm *w);
/* vm_warm_idle (vm.h) */
int vmjob_warm_idle (struct vmjob_warm *w, int fd, int64_t until_ms, bvm_error_t *err);
/* Kill and reap the VM, release its jail, remove its disks. NULL is fine. */
void vmjob_warm_free (struct vmjob_warm *w);

int vmjob_run (struct vmjob_result *out, const struct workdir *wd, const char *input_disk,
               const struct vmjob_opts *o, bvm_error_t *err);
void vmjob_result_dispose (struct vmjob_result *r);

/* One line for humans: "ok", "step 2 failed with exit status 1",
 * "timed out after 600 s", "the VM never reached the agent: ...". The
 * guest's text in it (its message, the VMM's stderr) is redacted (vmjob_run)
 * and escaped with str_escape: printable ASCII only. */
const char *vmjob_describe (char *buf, size_t size, const struct vmjob_result *r);

/* What a finished VM run means, the one mapping of a VM outcome and a guest
 * status to a verdict (the pipeline's build phase and `buildvm vm run` both
 * take theirs from here):
 *
 *   VMJOB_OK           the agent ran every step and wrote its result
 *   VMJOB_CANCELED     the run was canceled
 *   VMJOB_STEP_FAILED  a step exited non-zero (guest.step, guest.exit_code)
 *   VMJOB_TIMEOUT      the build's deadline passed (the VM's or the agent's)
 *   VMJOB_BUILD_FAILED the build broke the contract: the agent could not
 *                      write its output, or the guest ended without a result
 *                      after the agent had started - the job's own code ran
 *                      as root in the guest, so a hostile or broken build,
 *                      which would end the same way again
 *   VMJOB_INTERNAL     the host's or the image's fault: the VM never reached
 *                      the agent, or the VMM failed or died of a signal
 */
enum vmjob_verdict
{
  VMJOB_OK,
  VMJOB_CANCELED,
  VMJOB_STEP_FAILED,
  VMJOB_TIMEOUT,
  VMJOB_BUILD_FAILED,
  VMJOB_INTERNAL,
};
enum vmjob_verdict vmjob_verdict (const struct vmjob_result *r);
/* The error code of a verdict (0 for VMJOB_OK): BVM_E_CANCELED, BVM_E_BUILD,
 * BVM_E_TIMEOUT or BVM_E_INTERNAL. */
int vmjob_verdict_code (enum vmjob_verdict v);

#endif
