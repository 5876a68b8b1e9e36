/* vmjob.c - one build in one throwaway VM, see vmjob.h */
#include "vmjob.h"
#include "proc.h"
#include "redact.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The jail's memory cgroup limit is the guest's memory plus QEMU's own: its
 * heap, device state and I/O buffers, and under TCG a translation cache that
 * can grow to 1 GiB. Too little would kill healthy builds; the point is only
 * to stop a taken-over QEMU from eating the host. */
#define JAIL_QEMU_OVERHEAD_MIB 256
#define JAIL_TCG_CACHE_MIB 1024

/* Decide, and when jailed, prepare the jail in the work directory. */
static int
vmjob_jail (struct jail **out, struct vmjob_result *res, const struct workdir *wd,
            const struct vmjob_opts *o, enum vm_accel accel, bvm_error_t *err)
{
  struct jail_opts jo = JAIL_OPTS_INIT;
  cleanup_free char *dir = NULL;
  bool use = false;
  int ret;

  *out = NULL;
  ret = jail_decide (&use, o->jail, err);
  if (ret < 0 || !use)
    return ret;
  if (o->driver != NULL && strcmp (o->driver, "qemu") != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the VMM jail supports the `qemu` driver only, not `%s`", o->driver);
  dir = workdir_file (wd, "jail");
  if (dir == NULL)
    return bvm_error (err, ENOMEM, "vm job");
  jo.name = o->name ? o->name : "vm";
  jo.dir = dir;
  jo.settings = o->jail;
  jo.memory_max = ((uint64_t) o->memory_mib + JAIL_QEMU_OVERHEAD_MIB
                   + (accel == VM_ACCEL_TCG ? JAIL_TCG_CACHE_MIB : 0))
                  << 20;
  /* the vCPU threads, plus one CPU for QEMU's main loop and I/O */
  jo.cpus = o->vcpus + 1;
  ret = jail_prepare (out, &jo, err);
  if (ret < 0)
    return bvm_error_wrap (err, "jailing the VMM");
  res->jailed = true;
  res->jail_uid = (uint32_t) jail_uid (*out);
  snprintf (res->jail_note, sizeof res->jail_note, "%s", jail_cgroup_note (*out));
  return 0;
}

void
vmjob_opts_settings (struct vmjob_opts *o, const struct vm_settings *vm,
                     const struct jail_settings *jail)
{
  o->driver = vm->driver;
  o->vmm = vm->qemu;
  o->accel = vm->accel;
  o->jail = jail;
}

/* The guest's message goes into error messages, records and queue reasons:
 * mask the job's secrets in it, as on the console. */
static int
redact_message (char *msg, size_t size, struct redactor *r, bvm_error_t *err)
{
  struct buf b = BUF_INIT (4 * size);
  int ret = redact_text (r, &b, msg, strlen (msg), err);
  if (ret == 0)
    snprintf (msg, size, "%s", buf_cstr (&b));
  buf_dispose_wipe (&b);
  return ret < 0 ? bvm_error_wrap (err, "redacting the guest's message") : 0;
}

int
vmjob_run (struct vmjob_result *out, const struct workdir *wd, const char *input_disk,
           const struct vmjob_opts *o, bvm_error_t *err)
{
  cleanup_free char *scratch = workdir_file (wd, "scratch.img");
  struct vm_spec spec = { 0 };
  struct jail *jail = NULL;
  enum vm_accel accel = o->accel;
  int64_t t0 = now_ms ();
  int ret;

  memset (out, 0, sizeof *out);
  out->output_disk = workdir_file (wd, "output.img");
  if (out->output_disk == NULL || scratch == NULL)
    return bvm_error (err, ENOMEM, "vm job");
  ret = guest_output_create (out->output_disk, o->output_max, err);
  if (ret < 0)
    return ret;
  ret = guest_scratch_create (scratch, o->disk_mib, err);
  if (ret < 0)
    return ret;
  out->disks_ms = now_ms () - t0;
  /* resolved here: the jail's memory limit depends on it */
  if (accel == VM_ACCEL_AUTO)
    accel = vm_accel_detect (NULL, 0);
  ret = vmjob_jail (&jail, out, wd, o, accel, err);
  if (ret < 0)
    {
      unlink (scratch);
      return ret;
    }

  spec.driver = o->driver;
  spec.vmm = o->vmm;
  spec.accel = accel;
  spec.name = o->name;
  spec.kernel = o->image->kernel;
  spec.cmdline = o->image->cmdline;
  spec.rootfs = o->image->rootfs;
  spec.input = input_disk;
  spec.output = out->output_disk;
  spec.scratch = scratch;
  spec.runtime_dir = wd->path;
  spec.vcpus = o->vcpus;
  spec.memory_mib = o->memory_mib;
  spec.boot_timeout_ms = o->boot_timeout_ms;
  /* The agent enforces the build deadline itself and reports it; the VM
   * deadline is the backstop for a guest that stops cooperating, with room
   * for booting and for writing the outputs (at a pessimistic 50 MB/s). */
  spec.timeout_ms = o->boot_timeout_ms + o->build_timeout_ms + 30000
                    + (int64_t) (o->output_max / (50u << 20)) * 1000;
  spec.console_max = o->console_max;
  spec.redact = o->redact;
  spec.line = o->line;
  spec.opaque = o->opaque;
  spec.cancel = o->cancel;
  spec.pre_exec = o->pre_exec;
  spec.pre_exec_opaque = o->pre_exec_opaque;
  spec.started = o->started;
  spec.jail = jail;
  spec.egress_fd = -1;
  if (o->egress != NULL)
    {
      int sv[2];
      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        ret = bvm_error (err, errno, "the egress channel");
      else if ((ret = egress_start (&out->egress, sv[0], o->egress, err)) < 0)
        close (sv[1]); /* sv[0] is the broker's, even on failure */
      else
        {
          spec.egress = true;
          spec.egress_fd = sv[1];
        }
      if (ret < 0)
        {
          jail_destroy (jail);
          unlink (scratch);
          return ret;
        }
    }

  ret = vm_run (&spec, &out->vm, err);
  if (spec.egress_fd >= 0)
    close (spec.egress_fd);
  /* the VM is gone: every connection it had ends now */
  egress_stop (out->egress);
  /* the VMM is dead and reaped: its cgroups can go, and its uid */
  jail_destroy (jail);
  unlink (scratch); /* the biggest file of a job: gone as soon as possible */
  if (ret < 0)
    return ret;
  if (out->vm.outcome == VM_EXITED)
    {
      ret = guest_result_read (&out->guest, out->output_disk, err);
      if (ret < 0)
        return bvm_error_wrap (err, "reading the build result");
      if (o->redact != NULL
          && (ret = redact_message (out->guest.message, sizeof out->guest.message, o->redact, err))
                 < 0)
        return ret;
    }
  return 0;
}

void
vmjob_result_dispose (struct vmjob_result *r)
{
  free (r->output_disk);
  r->output_disk = NULL;
  egress_free (r->egress);
  r->egress = NULL;
}

const char *
vmjob_describe (char *buf, size_t size, const struct vmjob_result *r)
{
  const struct guest_result *g = &r->guest;
  char st[96], msg[4 * sizeof g->message + 8], vmm[4 * sizeof r->vm.vmm_stderr + 8];
  size_t n = strlen (r->vm.vmm_stderr);

  /* guest text: escaped, so it can drive no terminal and is valid JSON */
  str_escape (msg, sizeof msg, g->message, strlen (g->message), sizeof g->message);
  /* without QEMU's trailing newline */
  while (n > 0 && (r->vm.vmm_stderr[n - 1] == '\n' || r->vm.vmm_stderr[n - 1] == '\r'))
    n--;

  switch (r->vm.outcome)
    {
    case VM_BOOT_TIMEOUT:
      str_escape (vmm, sizeof vmm, r->vm.vmm_stderr + (n > 300 ? n - 300 : 0), n > 300 ? 300 : n,
                  300);
      snprintf (buf, size, "the VM did not reach the guest agent within the boot timeout%s%s",
                n ? ": " : "", vmm);
      return buf;
    case VM_TIMEOUT:
      snprintf (buf, size, "the VM ran past its deadline and was killed");
      return buf;
    case VM_CANCELED: snprintf (buf, size, "canceled"); return buf;
    case VM_EXITED: break;
    }
  switch (g->status)
    {
    case GUEST_OK: snprintf (buf, size, "ok"); break;
    case GUEST_STEP_FAILED:
      snprintf (buf, size, "step %u failed with exit status %d%s", g->step, g->exit_code,
                g->signal ? " (killed by a signal)" : "");
      break;
    case GUEST_TIMEOUT: snprintf (buf, size, "step %u timed out", g->step); break;
    case GUEST_OUTPUT_ERROR: snprintf (buf, size, "collecting the outputs failed: %s", msg); break;
    case GUEST_AGENT_ERROR: snprintf (buf, size, "the guest agent failed: %s", msg); break;
    case GUEST_NO_RESULT:
      /* the last 300 bytes of what the VMM and the kernel said */
      str_escape (vmm, sizeof vmm, r->vm.vmm_stderr + (n > 300 ? n - 300 : 0), n > 300 ? 300 : n,
                  300);
      snprintf (buf, size, "the VM ended without a result (VMM %s%s%s)",
                proc_status_str (st, sizeof st, r->vm.vmm_status), n ? ": " : "", vmm);
      break;
    }
  return buf;
}

enum vmjob_verdict
vmjob_verdict (const struct vmjob_result *r)
{
  if (r->vm.outcome == VM_CANCELED)
    return VMJOB_CANCELED;
  if (r->vm.outcome == VM_TIMEOUT)
    return VMJOB_TIMEOUT;
  if (r->vm.outcome != VM_EXITED)
    return VMJOB_INTERNAL;
  switch (r->guest.status)
    {
    case GUEST_OK: return VMJOB_OK;
    case GUEST_STEP_FAILED: return VMJOB_STEP_FAILED;
    case GUEST_TIMEOUT: return VMJOB_TIMEOUT;
    case GUEST_OUTPUT_ERROR: return VMJOB_BUILD_FAILED;
    case GUEST_NO_RESULT:
      /* It used to be internal and was retried: three VM runs for one
       * hostile build (issue 11). */
      if (r->vm.boot_ms >= 0 && WIFEXITED (r->vm.vmm_status)
          && WEXITSTATUS (r->vm.vmm_status) == 0)
        return VMJOB_BUILD_FAILED;
      return VMJOB_INTERNAL;
    default: return VMJOB_INTERNAL;
    }
}

int
vmjob_verdict_code (enum vmjob_verdict v)
{
  switch (v)
    {
    case VMJOB_OK: return 0;
    case VMJOB_CANCELED: return BVM_E_CANCELED;
    case VMJOB_STEP_FAILED:
    case VMJOB_BUILD_FAILED: return BVM_E_BUILD;
    case VMJOB_TIMEOUT: return BVM_E_TIMEOUT;
    case VMJOB_INTERNAL:
    default: return BVM_E_INTERNAL;
    }
}
