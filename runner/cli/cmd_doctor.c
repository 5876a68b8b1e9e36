/* cmd_doctor.c - `buildvm doctor`: what this host offers a build runner
 *
 * Reports, one line per layer, what is active and why not when it is not:
 * the accelerator, the VMM, the build VM images.
 */
#include "cli.h"
#include "image.h"
#include "proc.h"
#include "util.h"
#include "vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm doctor [--accel]\n"
                "\n"
                "Report which isolation layers and components this host provides.\n"
                "  --accel   print only the accelerator `auto` picks (kvm or tcg)\n");
}

static void
line (const char *state, const char *what, const char *detail)
{
  printf ("%-5s %-24s %s\n", state, what, detail);
}

int
cmd_doctor (int argc, char **argv)
{
  char why[256], detail[1024];
  enum vm_accel accel;
  bvm_error_t err = NULL;
  cleanup_free char *qemu = NULL, *images = NULL;
  int problems = 0;

  if (argc > 1 && (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0))
    {
      usage (stdout);
      return 0;
    }
  accel = vm_accel_detect (why, sizeof why);
  if (argc > 1 && strcmp (argv[1], "--accel") == 0)
    {
      printf ("%s\n", vm_accel_name (accel));
      return 0;
    }
  if (argc > 1)
    return cli_usage ("doctor", "unknown argument `%s`", argv[1]);

  if (accel == VM_ACCEL_KVM)
    line ("ok", "accelerator", "kvm: hardware virtualization works");
  else
    {
      snprintf (detail, sizeof detail, "tcg (software emulation): %s", why);
      line ("note", "accelerator", detail);
    }

  if (proc_which (&qemu, "qemu-system-x86_64", &err) == 0)
    line ("ok", "vmm qemu", qemu);
  else
    {
      line ("FAIL", "vmm qemu", "qemu-system-x86_64 not found: install qemu-system-x86");
      bvm_error_free (&err);
      problems++;
    }

  if (image_default_dir (&images, &err) < 0)
    {
      line ("FAIL", "images", bvm_error_msg (&err));
      bvm_error_free (&err);
      problems++;
    }
  else
    {
      static const char *profiles[] = { "minimal", "debian" };
      for (size_t i = 0; i < ARRAY_SIZE (profiles); i++)
        {
          struct vm_image *img = NULL;
          char what[64];
          snprintf (what, sizeof what, "image %s", profiles[i]);
          if (image_load (&img, images, profiles[i], &err) == 0)
            {
              snprintf (detail, sizeof detail, "%s (rootfs %.19s...)", img->manifest_path,
                        img->rootfs_sha256);
              line ("ok", what, detail);
              image_free (img);
            }
          else
            {
              line (i == 0 ? "FAIL" : "note", what, bvm_error_msg (&err));
              bvm_error_free (&err);
              problems += i == 0;
            }
        }
    }
  return problems ? 1 : 0;
}
