/* vm/qemu.c - the QEMU `microvm` driver
 *
 * A PVH vmlinux booted directly (no firmware, no PCI, no ACPI), virtio-mmio
 * devices only and no network device at all. The rootfs and input disks are
 * read-only; the console is virtio-console muxed with the kernel's ttyS0 onto
 * QEMU's stdout, which is a pipe the runner reads. QEMU's own seccomp sandbox
 * is on, denying obsolete syscalls, privilege changes, spawning processes and
 * resource-control calls.
 *
 * With a jail (jail.h), QEMU runs in it: the kernel and the rootfs are bound
 * read-only, the job's disks are handed to the jail's uid, and the command
 * line names them by their in-jail paths (/vm/...).
 */
#include "vm_int.h"
#include "guest.h"
#include "jail.h"
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct argv_builder
{
  char **v;
  size_t n, cap;
  bool failed;
};

static void add (struct argv_builder *b, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
add (struct argv_builder *b, const char *fmt, ...)
{
  va_list ap;
  char *s = NULL;

  if (b->failed)
    return;
  if (b->n + 2 > b->cap)
    {
      size_t ncap = b->cap ? b->cap * 2 : 64;
      char **nv = realloc (b->v, ncap * sizeof *nv);
      if (nv == NULL)
        {
          b->failed = true;
          return;
        }
      b->v = nv;
      b->cap = ncap;
    }
  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) < 0)
    s = NULL;
  va_end (ap);
  if (s == NULL)
    {
      b->failed = true;
      return;
    }
  b->v[b->n++] = s;
  b->v[b->n] = NULL;
}

/* QEMU's -drive option parser splits on commas; a path with a comma must
 * have it doubled. */
static int
escape_commas (char *out, size_t size, const char *path)
{
  size_t j = 0;
  for (size_t i = 0; path[i]; i++)
    {
      if (j + 3 >= size)
        return -1;
      out[j++] = path[i];
      if (path[i] == ',')
        out[j++] = ',';
    }
  out[j] = '\0';
  return 0;
}

static void
add_disk (struct argv_builder *b, const char *id, const char *path, bool readonly,
          const char *cache)
{
  char esc[8192];
  if (escape_commas (esc, sizeof esc, path) < 0)
    {
      b->failed = true;
      return;
    }
  add (b, "-drive");
  add (b, "id=%s,file=%s,format=raw,if=none,readonly=%s,cache=%s,discard=ignore", id, esc,
       readonly ? "on" : "off", cache);
  add (b, "-device");
  /* the serial number is how the agent tells the disks apart */
  add (b, "virtio-blk-device,drive=%s,serial=%s", id, id);
}

int
vm_qemu_argv (char ***argv, const struct vm_spec *spec, enum vm_accel accel, const char *qemu,
              bvm_error_t *err)
{
  struct argv_builder b = { 0 };

  add (&b, "%s", qemu);
  add (&b, "-name");
  add (&b, "buildvm-%s,process=buildvm-%s", spec->name ? spec->name : "vm",
       spec->name ? spec->name : "vm");
  add (&b, "-M");
  add (&b, "microvm,acpi=off");
  add (&b, "-accel");
  add (&b, "%s", accel == VM_ACCEL_KVM ? "kvm" : "tcg");
  add (&b, "-cpu");
  add (&b, "%s", accel == VM_ACCEL_KVM ? "host" : "max");
  add (&b, "-smp");
  add (&b, "%u", spec->vcpus);
  add (&b, "-m");
  add (&b, "%uM", spec->memory_mib);
  add (&b, "-nodefaults");
  add (&b, "-no-user-config");
  add (&b, "-display");
  add (&b, "none");
  add (&b, "-no-reboot");
  add (&b, "-sandbox");
  add (&b, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
  add (&b, "-kernel");
  add (&b, "%s", spec->kernel);
  add (&b, "-append");
  add (&b, "%s", spec->cmdline);
  /* The agent's stream (virtio console) is QEMU's stdout; the kernel's
   * console (the UART) joins QEMU's own messages on stderr, so kernel text
   * never splits a build's output line. stdin is /dev/null. */
  add (&b, "-chardev");
  /* With an egress channel stdin is its socket (fd 0: the jail passes
   * exactly 0, 1 and 2, and the VMM's network namespace stays empty), so
   * the console is write-only on stdout and nothing else reads stdin. */
  if (spec->egress || spec->control)
    add (&b, "file,id=con,path=/dev/stdout");
  else
    add (&b, "stdio,id=con,signal=off");
  add (&b, "-chardev");
  add (&b, "file,id=kcon,path=/dev/stderr");
  add (&b, "-serial");
  add (&b, "chardev:kcon");
  add (&b, "-device");
  add (&b, "virtio-serial-device");
  add (&b, "-device");
  add (&b, "virtconsole,chardev=con");
  if (spec->egress)
    {
      /* the guest finds it by its name in /sys/class/virtio-ports */
      add (&b, "-chardev");
      add (&b, "socket,id=egress,fd=0");
      add (&b, "-device");
      add (&b, "virtserialport,chardev=egress,name=%s", GUEST_EGRESS_PORT);
    }
  else if (spec->control)
    {
      /* a pool VM: the agent waits on this port for its job (vm_resume) */
      add (&b, "-chardev");
      add (&b, "socket,id=control,fd=0");
      add (&b, "-device");
      add (&b, "virtserialport,chardev=control,name=%s", GUEST_CONTROL_PORT);
    }
  add (&b, "-object");
  add (&b, "rng-random,filename=/dev/urandom,id=rng");
  add (&b, "-device");
  add (&b, "virtio-rng-device,rng=rng");
  add_disk (&b, "rootfs", spec->rootfs, true, "writeback");
  add_disk (&b, "input", spec->input, true, "writeback");
  add_disk (&b, "output", spec->output, false, "writeback");
  /* the scratch disk dies with the VM: never wait for its flushes */
  add_disk (&b, "scratch", spec->scratch, false, "unsafe");
  if (b.failed)
    {
      vm_argv_free (b.v);
      return bvm_error (err, ENOMEM, "building the QEMU command line");
    }
  *argv = b.v;
  return 0;
}

/* Put the VM's files into the jail and point a copy of the spec at their
 * in-jail paths. The kernel and the rootfs are shared by every job: bound
 * read-only, never handed over. The disks are the job's own. */
static int
qemu_jail_files (struct vm_spec *js, const struct vm_spec *spec, enum vm_accel accel,
                 bvm_error_t *err)
{
  struct jail *j = spec->jail;
  int ret;

  if ((ret = jail_expose (j, spec->kernel, "vmlinux", JAIL_RO, err)) < 0
      || (ret = jail_expose (j, spec->rootfs, "rootfs.ext4", JAIL_RO, err)) < 0
      || (ret = jail_expose (j, spec->input, "input.img", JAIL_RO | JAIL_CHOWN, err)) < 0
      || (ret = jail_expose (j, spec->output, "output.img", JAIL_RW | JAIL_CHOWN, err)) < 0
      || (ret = jail_expose (j, spec->scratch, "scratch.img", JAIL_RW | JAIL_CHOWN, err)) < 0)
    return bvm_error_wrap (err, "preparing the VMM's jail");
  /* /dev/kvm is usually 0660 root:kvm: a private node owned by the job */
  if (accel == VM_ACCEL_KVM
      && (ret = jail_expose (j, "/dev/kvm", "kvm", JAIL_RW | JAIL_CHOWN, err)) < 0)
    return bvm_error_wrap (err, "preparing the VMM's jail");
  *js = *spec;
  js->kernel = jail_path (j, spec->kernel);
  js->rootfs = jail_path (j, spec->rootfs);
  js->input = jail_path (j, spec->input);
  js->output = jail_path (j, spec->output);
  js->scratch = jail_path (j, spec->scratch);
  return 0;
}

static int
qemu_boot (struct vm *vm, bvm_error_t *err)
{
  const struct vm_spec *spec = vm->spec;
  struct vm_spec jailed;
  char **argv = NULL;
  int ret;

  ret = proc_which (&vm->vmm_path, spec->vmm ? spec->vmm : vm->driver->default_vmm, err);
  if (ret < 0)
    return bvm_error_wrap (err, "QEMU is needed to run build VMs (Debian package "
                                "qemu-system-x86; `make deps`)");
  if (spec->jail != NULL)
    {
      ret = qemu_jail_files (&jailed, spec, vm->accel, err);
      if (ret < 0)
        return ret;
      spec = &jailed;
    }
  ret = vm_qemu_argv (&argv, spec, vm->accel, vm->vmm_path, err);
  if (ret < 0)
    return ret;
  ret = vm__spawn (vm, (const char *const *) argv, err);
  vm_argv_free (argv);
  return ret;
}

static int
qemu_attach_channel (struct vm *vm, bvm_error_t *err)
{
  (void) err;
  vm->stdin_fd = vm->channel_fd; /* still the caller's: vm__spawn dups it */
  return 0;
}

static void
qemu_destroy (struct vm *vm)
{
  (void) vm; /* QEMU leaves nothing behind but its process */
}

const struct vm_driver vm_driver_qemu = {
  .name = "qemu",
  .default_vmm = "qemu-system-x86_64",
  .boot = qemu_boot,
  .attach_channel = qemu_attach_channel,
  .destroy = qemu_destroy,
};
