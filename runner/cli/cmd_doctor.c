/* cmd_doctor.c - `buildvm doctor`: what this host offers a build runner
 *
 * Reports, one line per layer, what is active and why not when it is not:
 * the accelerator, the VMM, the build VM images, and each layer of the jail
 * around the VMM (jail.h; docs/security.md).
 */
#include "cli.h"
#include "config.h"
#include "image.h"
#include "jail.h"
#include "proc.h"
#include "util.h"
#include "vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm doctor [--config FILE] [--accel]\n"
                "\n"
                "Report which isolation layers and components this host provides.\n"
                "  --config FILE  runner configuration (its `jail` section; default: built-in)\n"
                "  --accel        print only the accelerator `auto` picks (kvm or tcg)\n"
                "\n"
                "exit status: 0 when everything needed works, 1 otherwise.\n");
}

static void
line (const char *state, const char *what, const char *detail)
{
  printf ("%-5s %-22s %s\n", state, what, detail);
}

/* The jail, layer by layer. Missing layers are problems only when the jail
 * is wanted: `on`, or `auto` as root (as a non-root `auto` runner they are
 * notes: it runs VMMs unjailed, by design, and says so). */
static int
report_jail (const struct runner_config *cfg)
{
  struct jail_settings s = { 0 };
  struct jail_report rep;
  bool wanted;

  if (cfg != NULL)
    s = cfg->jail;
  wanted = s.mode == JAIL_MODE_ON || (s.mode == JAIL_MODE_AUTO && jail_available (NULL, 0));
  jail_probe (&rep, &s);
  for (size_t i = 0; i < rep.n; i++)
    {
      char what[64];
      snprintf (what, sizeof what, "jail %s", rep.layers[i].name);
      if (i == 0)
        snprintf (what, sizeof what, "jail");
      line (rep.layers[i].active ? "ok" : wanted ? "FAIL" : "note", what, rep.layers[i].detail);
    }
  /* cgroups are best effort by design: a host without them is a note */
  {
    int problems = 0;
    for (size_t i = 0; wanted && i < rep.n; i++)
      problems += !rep.layers[i].active && strncmp (rep.layers[i].name, "cgroup", 6) != 0;
    return problems;
  }
}

int
cmd_doctor (int argc, char **argv)
{
  char why[256], detail[1024];
  enum vm_accel accel;
  bvm_error_t err = NULL;
  cleanup_free char *qemu = NULL, *images = NULL;
  const char *config_path = NULL;
  struct runner_config *cfg = NULL;
  bool accel_only = false;
  int problems = 0, c;

  const struct opt opts[] = {
    OPT_STR ("config", 0, &config_path),
    OPT_FLAG ("accel", 0, &accel_only),
    OPT_END,
  };
  if (cli_parse (argc, argv, "doctor", opts, 0, 0, usage, &c))
    return c;
  accel = vm_accel_detect (why, sizeof why);
  if (accel_only)
    {
      printf ("%s\n", vm_accel_name (accel));
      return 0;
    }
  if (config_path != NULL && config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("doctor", &err, 2);

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
  problems += report_jail (cfg);
  config_free (cfg);
  return problems ? 1 : 0;
}
