/* vmjob.c - one build in one throwaway VM, see vmjob.h */
#include "vmjob.h"
#include "proc.h"
#include "redact.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* The VM is gone: read what the guest claims. */
static int
read_result (struct vmjob_result *out, const struct vmjob_opts *o, bvm_error_t *err)
{
  int ret;
  if (out->vm.outcome != VM_EXITED)
    return 0;
  ret = guest_result_read (&out->guest, out->output_disk, err);
  if (ret < 0)
    return bvm_error_wrap (err, "reading the build result");
  if (o->redact != NULL
      && (ret = redact_message (out->guest.message, sizeof out->guest.message, o->redact, err))
             < 0)
    return ret;
  return 0;
}

/* The agent enforces the build deadline itself and reports it; the VM
 * deadline is the backstop for a guest that stops cooperating, with room
 * for booting and for writing the outputs (at a pessimistic 50 MB/s). */
static int64_t
vm_deadline_ms (const struct vmjob_opts *o)
{
  return o->boot_timeout_ms + o->build_timeout_ms + 30000
         + (int64_t) (o->output_max / (50u << 20)) * 1000;
}

/* The job's side of a VM's spec: its console, secrets, cancel flag. */
static void
spec_job (struct vm_spec *spec, const struct vmjob_opts *o)
{
  spec->timeout_ms = vm_deadline_ms (o);
  spec->console_max = o->console_max;
  spec->redact = o->redact;
  spec->line = o->line;
  spec->opaque = o->opaque;
  spec->cancel = o->cancel;
  spec->started = o->started;
}

/* --- pool VMs ------------------------------------------------------------------------ */

struct vmjob_warm
{
  struct vm_warm *vm;
  struct jail *jail;
  struct vm_spec spec; /* the boot spec: vm_warm points at it */
  char *input, *output, *scratch;
  uint64_t input_max;
  unsigned vcpus, memory_mib;
  uint64_t disk_mib, output_max;
  const struct vm_image *image;
  struct vmjob_result jr; /* jailed, jail_uid, jail_note */
};

void
vmjob_warm_free (struct vmjob_warm *w)
{
  if (w == NULL)
    return;
  vm_warm_free (w->vm); /* the VMM is killed and reaped first */
  jail_destroy (w->jail);
  if (w->input)
    unlink (w->input);
  if (w->output)
    unlink (w->output);
  if (w->scratch)
    unlink (w->scratch);
  free (w->input);
  free (w->output);
  free (w->scratch);
  free (w);
}

int
vmjob_prewarm_start (struct vmjob_warm **out, const struct workdir *wd, const struct vmjob_opts *o,
                     uint64_t input_max, bvm_error_t *err)
{
  struct vmjob_warm *w = calloc (1, sizeof *w);
  enum vm_accel accel = o->accel;
  int ret;

  if (w == NULL)
    return bvm_error (err, ENOMEM, "pool VM");
  w->input = workdir_file (wd, "input.img");
  w->output = workdir_file (wd, "output.img");
  w->scratch = workdir_file (wd, "scratch.img");
  w->input_max = (input_max + 511) / 512 * 512;
  w->vcpus = o->vcpus;
  w->memory_mib = o->memory_mib;
  w->disk_mib = o->disk_mib;
  w->output_max = o->output_max;
  w->image = o->image;
  if (w->input == NULL || w->output == NULL || w->scratch == NULL)
    {
      ret = bvm_error (err, ENOMEM, "pool VM");
      goto fail;
    }
  {
    /* blank and sparse: the job's input is written into it after the lease */
    cleanup_close int fd = open (w->input, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                                 0600);
    if (fd < 0 || ftruncate (fd, (off_t) w->input_max) < 0)
      {
        ret = bvm_error (err, errno, "create input disk `%s`", w->input);
        goto fail;
      }
  }
  {
    /* blank and sparse too: the job's scratch disk, the source in it, is
     * copied in after the lease */
    cleanup_close int fd = open (w->scratch, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                                 0600);
    if (fd < 0 || ftruncate (fd, (off_t) (o->disk_mib << 20)) < 0)
      {
        ret = bvm_error (err, errno, "create scratch disk `%s`", w->scratch);
        goto fail;
      }
  }
  if ((ret = guest_output_create (w->output, o->output_max, err)) < 0)
    goto fail;
  if (accel == VM_ACCEL_AUTO)
    accel = vm_accel_detect (NULL, 0);
  if ((ret = vmjob_jail (&w->jail, &w->jr, wd, o, accel, err)) < 0)
    goto fail;
  w->spec.driver = o->driver;
  w->spec.vmm = o->vmm;
  w->spec.accel = accel;
  w->spec.name = o->name;
  w->spec.kernel = o->image->kernel;
  w->spec.cmdline = o->image->cmdline;
  w->spec.rootfs = o->image->rootfs;
  w->spec.input = w->input;
  w->spec.output = w->output;
  w->spec.scratch = w->scratch;
  w->spec.runtime_dir = wd->path;
  w->spec.vcpus = o->vcpus;
  w->spec.memory_mib = o->memory_mib;
  w->spec.boot_timeout_ms = o->boot_timeout_ms;
  w->spec.timeout_ms = o->boot_timeout_ms;
  w->spec.console_max = o->console_max;
  w->spec.cancel = o->cancel;
  w->spec.jail = w->jail;
  w->spec.egress_fd = -1;
  w->spec.control = true;
  if ((ret = vm_boot_start (&w->vm, &w->spec, err)) < 0)
    goto fail;
  *out = w;
  return 0;
fail:
  vmjob_warm_free (w);
  return ret;
}

int
vmjob_prewarm_wait (struct vmjob_warm **w, bvm_error_t *err)
{
  int ret = vm_boot_wait (&(*w)->vm, err);
  if (ret < 0)
    {
      vmjob_warm_free (*w);
      *w = NULL;
    }
  return ret;
}

int
vmjob_prewarm (struct vmjob_warm **out, const struct workdir *wd, const struct vmjob_opts *o,
               uint64_t input_max, bvm_error_t *err)
{
  int ret = vmjob_prewarm_start (out, wd, o, input_max, err);
  return ret < 0 ? ret : vmjob_prewarm_wait (out, err);
}

pid_t
vmjob_warm_pid (const struct vmjob_warm *w)
{
  return vm_warm_pid (w->vm);
}

int64_t
vmjob_warm_boot_ms (const struct vmjob_warm *w)
{
  return vm_warm_boot_ms (w->vm);
}

int
vmjob_warm_idle (struct vmjob_warm *w, int fd, int64_t until_ms, bvm_error_t *err)
{
  return vm_warm_idle (w->vm, fd, until_ms, err);
}

/* Why the job cannot run in this VM booted ahead (a pool VM, an early VM),
 * or NULL when it can. The caller says which kind (the record's `pool` or
 * `early_vm`). */
static const char *
warm_misfit (char *buf, size_t size, struct vmjob_warm *w, const struct vmjob_opts *o,
             const char *input_disk)
{
  struct stat st;
  if (!vm_warm_alive (w->vm))
    return "the VM ended before its job came";
  if (o->egress != NULL)
    return "the job has an egress channel, which a VM booted ahead has not";
  if (w->image != o->image
      && (strcmp (w->image->kernel, o->image->kernel) != 0
          || strcmp (w->image->rootfs, o->image->rootfs) != 0
          || strcmp (w->image->cmdline, o->image->cmdline) != 0))
    return "the job's image profile is not the VM's";
  if (w->vcpus != o->vcpus || w->memory_mib != o->memory_mib || w->disk_mib != o->disk_mib)
    {
      snprintf (buf, size,
                "the job's shape (%u vCPUs, %u MiB, %llu MiB disk) is not the VM's "
                "(%u, %u, %llu)",
                o->vcpus, o->memory_mib, (unsigned long long) o->disk_mib, w->vcpus, w->memory_mib,
                (unsigned long long) w->disk_mib);
      return buf;
    }
  if (w->output_max != o->output_max)
    return "the job's output size is not the VM's";
  if (stat (input_disk, &st) < 0 || (uint64_t) st.st_size > w->input_max)
    return "the job's input is larger than the VM's input disk";
  if (o->scratch == NULL || stat (o->scratch, &st) < 0
      || (uint64_t) st.st_size != (uint64_t) w->disk_mib << 20)
    return "the job has no scratch disk of the VM's size";
  return NULL;
}

/* Copy the job's input into the pool VM's blank input disk, from the start.
 * QEMU reads the file through the host's page cache (cache=writeback), so
 * it sees these bytes once written; the guest drops its own cache of the
 * blank disk when it gets its signal (the agent's wait_for_job). */
static int
fill_input (const char *dst, const char *src, bvm_error_t *err)
{
  cleanup_close int in = open (src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  cleanup_close int out = open (dst, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  loff_t off_in = 0, off_out = 0;

  if (in < 0)
    return bvm_error (err, errno, "open `%s`", src);
  if (out < 0)
    return bvm_error (err, errno, "open the pool VM's input disk `%s`", dst);
  for (;;)
    {
      ssize_t n = copy_file_range (in, &off_in, out, &off_out, 1 << 30, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "write the pool VM's input disk `%s`", dst);
      if (n == 0)
        return 0;
    }
}

/* Make the pool VM's blank scratch disk a copy of the job's (srcfs.h), in
 * place (QEMU holds the file open): emptied, then only the source image's
 * data copied, so it stays as sparse as the original. The guest has not
 * mounted it yet; it drops its cache of the device after "go", as it does
 * for the input disk. */
static int
fill_scratch (const char *dst, const char *src, bvm_error_t *err)
{
  cleanup_close int in = open (src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  cleanup_close int out = open (dst, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  struct stat st;
  off_t data = 0;

  if (in < 0 || fstat (in, &st) < 0)
    return bvm_error (err, errno, "open `%s`", src);
  if (out < 0)
    return bvm_error (err, errno, "open the pool VM's scratch disk `%s`", dst);
  if (ftruncate (out, 0) < 0 || ftruncate (out, st.st_size) < 0)
    return bvm_error (err, errno, "empty the pool VM's scratch disk `%s`", dst);
  while ((data = lseek (in, data, SEEK_DATA)) >= 0)
    {
      off_t hole = lseek (in, data, SEEK_HOLE);
      loff_t off_in = data, off_out = data;
      if (hole < 0)
        return bvm_error (err, errno, "read `%s`", src);
      while (off_in < hole)
        {
          ssize_t n = copy_file_range (in, &off_in, out, &off_out, (size_t) (hole - off_in), 0);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            return bvm_error (err, errno, "write the pool VM's scratch disk `%s`", dst);
          if (n == 0)
            return bvm_error (err, EIO, "`%s` ended early", src);
        }
      data = hole;
    }
  if (errno != ENXIO) /* ENXIO: no data after `data` */
    return bvm_error (err, errno, "read `%s`", src);
  return 0;
}

static int
run_warm (struct vmjob_result *out, struct vmjob_warm *w, const char *input_disk,
          const struct vmjob_opts *o, bvm_error_t *err)
{
  struct vm_spec spec = w->spec;
  struct vm_warm *vm = w->vm;
  int64_t t0 = now_ms ();
  int ret;

  out->pool = VMJOB_POOL_HIT;
  out->jailed = w->jr.jailed;
  out->jail_uid = w->jr.jail_uid;
  snprintf (out->jail_note, sizeof out->jail_note, "%s", w->jr.jail_note);
  out->output_disk = strdup (w->output);
  if (out->output_disk == NULL)
    ret = bvm_error (err, ENOMEM, "vm job");
  else if ((ret = fill_input (w->input, input_disk, err)) == 0)
    ret = fill_scratch (w->scratch, o->scratch, err);
  if (o->scratch != NULL)
    unlink (o->scratch); /* copied: the biggest file of a job, gone at once */
  out->disks_ms = now_ms () - t0;
  if (ret < 0)
    {
      vmjob_warm_free (w);
      return ret;
    }
  spec_job (&spec, o);
  w->vm = NULL; /* vm_resume frees it, whatever happens */
  ret = vm_resume (vm, &spec, &out->vm, err);
  /* the VMM is dead and reaped: its jail goes, and the input (it may hold
   * secrets) and the scratch disk; the output disk stays for the ingest and
   * goes with the pool VM's work directory */
  free (w->output);
  w->output = NULL;
  vmjob_warm_free (w);
  if (ret < 0)
    return ret;
  return read_result (out, o, err);
}

int
vmjob_run (struct vmjob_result *out, const struct workdir *wd, const char *input_disk,
           const struct vmjob_opts *o, bvm_error_t *err)
{
  cleanup_free char *scratch = NULL;
  struct vm_spec spec = { 0 };
  struct jail *jail = NULL;
  enum vm_accel accel = o->accel;
  int64_t t0 = now_ms ();
  int ret;

  memset (out, 0, sizeof *out);
  if (o->warm != NULL && *o->warm != NULL)
    {
      struct vmjob_warm *w = *o->warm;
      char why[sizeof out->pool_note];
      const char *misfit = warm_misfit (why, sizeof why, w, o, input_disk);

      *o->warm = NULL; /* ours now */
      if (misfit == NULL)
        {
          ret = run_warm (out, w, input_disk, o, err);
          if (ret < 0)
            return ret;
          return 0;
        }
      vmjob_warm_free (w);
      out->pool = VMJOB_POOL_MISS;
      snprintf (out->pool_note, sizeof out->pool_note, "%s", misfit);
    }
  scratch = workdir_file (wd, "scratch.img");
  out->output_disk = workdir_file (wd, "output.img");
  if (out->output_disk == NULL || scratch == NULL)
    return bvm_error (err, ENOMEM, "vm job");
  ret = guest_output_create (out->output_disk, o->output_max, err);
  if (ret < 0)
    return ret;
  if (o->scratch != NULL)
    {
      free (scratch);
      scratch = strdup (o->scratch); /* made with the source in it */
      if (scratch == NULL)
        return bvm_error (err, ENOMEM, "vm job");
    }
  else if ((ret = guest_scratch_create (scratch, o->disk_mib, err)) < 0)
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
  spec_job (&spec, o);
  spec.pre_exec = o->pre_exec;
  spec.pre_exec_opaque = o->pre_exec_opaque;
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
  return read_result (out, o, err);
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
