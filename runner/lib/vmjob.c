/* vmjob.c - one build in one throwaway VM, see vmjob.h */
#include "vmjob.h"
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

int
vmjob_run (struct vmjob_result *out, const struct workdir *wd, const char *input_disk,
           const struct vmjob_opts *o, bvm_error_t *err)
{
  cleanup_free char *scratch = workdir_file (wd, "scratch.img");
  struct vm_spec spec = { 0 };
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

  spec.driver = o->driver;
  spec.vmm = o->vmm;
  spec.accel = o->accel;
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
  spec.line = o->line;
  spec.opaque = o->opaque;
  spec.cancel = o->cancel;
  spec.pre_exec = o->pre_exec;
  spec.pre_exec_opaque = o->pre_exec_opaque;
  spec.started = o->started;

  ret = vm_run (&spec, &out->vm, err);
  unlink (scratch); /* the biggest file of a job: gone as soon as possible */
  if (ret < 0)
    return ret;
  if (out->vm.outcome == VM_EXITED)
    {
      ret = guest_result_read (&out->guest, out->output_disk, err);
      if (ret < 0)
        return bvm_error_wrap (err, "reading the build result");
    }
  return 0;
}

void
vmjob_result_dispose (struct vmjob_result *r)
{
  free (r->output_disk);
  r->output_disk = NULL;
}

const char *
vmjob_describe (char *buf, size_t size, const struct vmjob_result *r)
{
  const struct guest_result *g = &r->guest;
  char st[96];

  switch (r->vm.outcome)
    {
    case VM_BOOT_TIMEOUT:
      snprintf (buf, size, "the VM did not reach the guest agent within the boot timeout%s%.300s",
                r->vm.vmm_stderr[0] ? ": " : "", r->vm.vmm_stderr);
      return buf;
    case VM_TIMEOUT:
      snprintf (buf, size, "the VM ran past its deadline and was killed");
      return buf;
    case VM_CANCELED:
      snprintf (buf, size, "canceled");
      return buf;
    case VM_EXITED:
      break;
    }
  switch (g->status)
    {
    case GUEST_OK:
      snprintf (buf, size, "ok");
      break;
    case GUEST_STEP_FAILED:
      snprintf (buf, size, "step %u failed with exit status %d%s", g->step, g->exit_code,
                g->signal ? " (killed by a signal)" : "");
      break;
    case GUEST_TIMEOUT:
      snprintf (buf, size, "step %u timed out", g->step);
      break;
    case GUEST_OUTPUT_ERROR:
      snprintf (buf, size, "collecting the outputs failed: %s", g->message);
      break;
    case GUEST_AGENT_ERROR:
      snprintf (buf, size, "the guest agent failed: %s", g->message);
      break;
    case GUEST_NO_RESULT:
      /* strip a trailing newline of QEMU's message */
      {
        char msg[512];
        size_t n;
        snprintf (msg, sizeof msg, "%.500s", r->vm.vmm_stderr);
        n = strlen (msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
          msg[--n] = '\0';
        snprintf (buf, size, "the VM ended without a result (VMM %s%s%.400s)",
                  proc_status_str (st, sizeof st, r->vm.vmm_status), msg[0] ? ": " : "", msg);
      }
      break;
    }
  return buf;
}
