/* vm_int.h - the VM driver interface: for vm.c and the drivers (vm/qemu.c,
 * vm/firecracker.c) only, not for the callers of vm.h
 */
#ifndef BUILDVM_VM_INT_H
#define BUILDVM_VM_INT_H

#include "vm.h"

struct vm;

struct vm_driver
{
  const char *name;
  const char *default_vmm;
  /* Start the VMM: set vm->pid, vm->console_fd (read end of the guest's
   * console) and vm->stderr_fd. */
  int (*boot) (struct vm *vm, bvm_error_t *err);
  /* Attach the egress channel or a pool VM's control port before boot:
   * vm->channel_fd becomes the guest's egress port (spec->egress) or its
   * control port (spec->control) (QEMU: a virtio-serial port on a socket chardev;
   * Firecracker: vsock, not yet). NULL: the driver has no channel, and a
   * job that needs egress cannot run on it. */
  int (*attach_channel) (struct vm *vm, bvm_error_t *err);
  /* Release driver resources (config files, sockets). The process itself is
   * killed and reaped by vm.c before this is called. */
  void (*destroy) (struct vm *vm);
};

struct vm
{
  const struct vm_driver *driver;
  const struct vm_spec *spec;
  enum vm_accel accel;
  pid_t pid;
  int console_fd;
  int stderr_fd;
  int stdin_fd;   /* -1: /dev/null; QEMU: the egress channel's socket */
  int channel_fd; /* the VMM's end of the egress channel or control port, or -1 */
  char *vmm_path;
  char *driver_file; /* e.g. Firecracker's config file, removed by destroy */
};

/* For drivers: start the VMM with argv, its stdout (the guest's console) and
 * stderr on fresh pipes whose read ends become vm->console_fd and
 * vm->stderr_fd (non-blocking); in spec->jail when there is one, else with
 * spec->pre_exec. */
int vm__spawn (struct vm *vm, const char *const *argv, bvm_error_t *err);

extern const struct vm_driver vm_driver_qemu;
extern const struct vm_driver vm_driver_firecracker;

const struct vm_driver *vm_driver_find (const char *name);

#endif
