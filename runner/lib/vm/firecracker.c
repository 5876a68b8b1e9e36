/* vm/firecracker.c - the Firecracker driver, for hosts where KVM works
 *
 * Firecracker takes its whole machine description as one JSON file
 * (--config-file) and runs without its API socket (--no-api). It has no
 * virtio-console: the agent falls back to the serial console, which
 * Firecracker writes to its stdout. Its virtio-blk devices answer
 * VIRTIO_BLK_T_GET_ID with the drive_id, which is how the agent finds its
 * disks, so the drive ids are the same names QEMU uses as serial numbers.
 *
 * Firecracker needs KVM; under TCG this driver refuses to start.
 */
#include "vm_int.h"
#include "fs.h"
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* QEMU's microvm reboots on a triple fault (reboot=t); Firecracker exits on
 * the i8042 keyboard-controller reset (reboot=k). */
static char *
firecracker_cmdline (const char *cmdline)
{
  char *s = strdup (cmdline);
  char *p;
  if (s == NULL)
    return NULL;
  p = strstr (s, "reboot=t");
  if (p != NULL)
    p[7] = 'k';
  return s;
}

int
vm_firecracker_config (char **out, const struct vm_spec *spec, bvm_error_t *err)
{
  cleanup_free char *cmdline = firecracker_cmdline (spec->cmdline);
  json_t *doc;

  if (cmdline == NULL)
    return bvm_error (err, ENOMEM, "firecracker config");
  doc = json_pack ("{s:{s:s, s:s}, s:[{s:s, s:s, s:b, s:b}, {s:s, s:s, s:b, s:b},"
                   " {s:s, s:s, s:b, s:b}, {s:s, s:s, s:b, s:b}],"
                   " s:{s:i, s:i, s:b}, s:[]}",
                   "boot-source", "kernel_image_path", spec->kernel, "boot_args", cmdline,
                   "drives", "drive_id", "rootfs", "path_on_host", spec->rootfs, "is_root_device",
                   1, "is_read_only", 1, "drive_id", "input", "path_on_host", spec->input,
                   "is_root_device", 0, "is_read_only", 1, "drive_id", "output", "path_on_host",
                   spec->output, "is_root_device", 0, "is_read_only", 0, "drive_id", "scratch",
                   "path_on_host", spec->scratch, "is_root_device", 0, "is_read_only", 0,
                   "machine-config", "vcpu_count", (int) spec->vcpus, "mem_size_mib",
                   (int) spec->memory_mib, "smt", 0, "network-interfaces");
  if (doc == NULL)
    return bvm_error (err, ENOMEM, "firecracker config");
  *out = json_dumps (doc, JSON_INDENT (2) | JSON_SORT_KEYS);
  json_decref (doc);
  return *out ? 0 : bvm_error (err, ENOMEM, "firecracker config");
}

static int
firecracker_boot (struct vm *vm, bvm_error_t *err)
{
  const struct vm_spec *spec = vm->spec;
  cleanup_free char *config = NULL;
  int ret;

  if (vm->accel != VM_ACCEL_KVM)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the firecracker driver needs KVM; use the qemu driver under TCG");
  if (spec->runtime_dir == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the firecracker driver needs a runtime_dir");
  ret = proc_which (&vm->vmm_path, spec->vmm ? spec->vmm : vm->driver->default_vmm, err);
  if (ret < 0)
    return bvm_error_wrap (err, "the firecracker driver needs the firecracker binary");
  ret = vm_firecracker_config (&config, spec, err);
  if (ret < 0)
    return ret;
  if (asprintf (&vm->driver_file, "%s/firecracker.json", spec->runtime_dir) < 0)
    {
      vm->driver_file = NULL;
      return bvm_error (err, ENOMEM, "firecracker config path");
    }
  ret = fs_write_atomic (vm->driver_file, config, strlen (config), 0600, err);
  if (ret < 0)
    return ret;
  {
    const char *argv[] = { vm->vmm_path, "--no-api", "--config-file", vm->driver_file, "--level",
                           "Error",      NULL };
    return vm__spawn (vm, argv, err);
  }
}

static void
firecracker_destroy (struct vm *vm)
{
  if (vm->driver_file)
    {
      unlink (vm->driver_file);
      free (vm->driver_file);
      vm->driver_file = NULL;
    }
}

const struct vm_driver vm_driver_firecracker = {
  .name = "firecracker",
  .default_vmm = "firecracker",
  .boot = firecracker_boot,
  .destroy = firecracker_destroy,
};
