/* cmd_vm.c - `buildvm vm run`: a command in a fresh throwaway build VM
 *
 * A debugging verb: the same VM, agent and limits a deploy gets, with one
 * step - the given command, run as the build user - and no sources, image or
 * artifacts. Prints the command's output and exits with its exit status.
 */
#include "buf.h"
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "guest.h"
#include "image.h"
#include "util.h"
#include "vmjob.h"
#include "workdir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_VM_FAILED 125 /* like docker run: the runner, not the command, failed */
#define EXIT_TIMEOUT 124   /* like timeout(1) */

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm vm run [OPTIONS] -- COMMAND [ARGS...]\n"
           "\n"
           "Boot a fresh build VM, run COMMAND in it as the unprivileged build user\n"
           "(in an empty source directory, with no network), print its output and\n"
           "exit with its exit status. The VM and its disks are destroyed afterwards.\n"
           "\n"
           "options:\n"
           "  --rootfs PROFILE   build VM image profile (default: minimal)\n"
           "  --timeout SECONDS  deadline for the command (default: 600)\n"
           "  --memory MIB       guest memory (default: 512)\n"
           "  --vcpus N          guest vCPUs (default: 1)\n"
           "  --disk MIB         writable scratch disk (default: 1024)\n"
           "  --accel MODE       auto | kvm | tcg (default: auto)\n"
           "  --config FILE      runner configuration (images, work_dir, vm.qemu, vm.accel)\n"
           "  --images DIR       image directory (default: the config's)\n"
           "  --work-dir DIR     where the VM's disks live while it runs (default: the config's)\n"
           "  --qemu PATH        QEMU binary (default: the config's, qemu-system-x86_64)\n"
           "  --log-max BYTES    cap on the output kept (default: 64 MiB)\n"
           "  --boot-timeout S   deadline for the VM to reach the agent (default: 60)\n"
           "  -v, --verbose      also show the agent's and the kernel's messages\n"
           "\n"
           "exit status: the command's; 124 if it timed out; 125 if the VM failed.\n");
}

struct printer
{
  bool verbose;
};

static void
print_line (void *opaque, enum vm_stream stream, const char *line, size_t len, bool more)
{
  struct printer *p = opaque;
  if (!p->verbose
      && (stream == VM_STREAM_STDERR || (len >= 15 && memcmp (line, "buildvm-agent: ", 15) == 0)
          || (len >= 9 && memcmp (line, "==> step ", 9) == 0)))
    return;
  /* the guest's text: no escape sequence reaches the terminal */
  str_escape_fwrite (stdout, line, len);
  if (!more)
    fputc ('\n', stdout);
  fflush (stdout);
}

static int
vm_run_main (int argc, char **argv)
{
  const char *profile = "minimal", *images_opt = NULL, *qemu = NULL, *work_opt = NULL;
  const char *config_path = NULL, *accel_arg = NULL;
  struct runner_config *cfg = NULL;
  uint32_t timeout_s = 600, memory = 512, vcpus = 1, disk = 1024, boot_timeout_s = 60;
  uint64_t log_max = 64u << 20;
  enum vm_accel accel = VM_ACCEL_AUTO;
  struct printer printer = { false };
  cleanup_free char *images = NULL, *work = NULL, *input = NULL;
  struct vm_image *img = NULL;
  struct workdir *wd = NULL;
  struct guest_input *in = NULL;
  struct vmjob_result res = { 0 };
  struct vmjob_opts o = { 0 };
  bvm_error_t err = NULL;
  struct buf cmd = BUF_INIT (64 * 1024);
  char what[1024];
  int c, status = EXIT_VM_FAILED;

  const struct opt opts[] = {
    OPT_STR ("rootfs", 0, &profile),
    OPT_U32 ("timeout", &timeout_s, 1, UINT32_MAX, "seconds"),
    OPT_U32 ("memory", &memory, 64, UINT32_MAX, "MiB"),
    OPT_U32 ("vcpus", &vcpus, 1, 64, NULL),
    OPT_U32 ("disk", &disk, 16, UINT32_MAX, "MiB"),
    OPT_STR ("accel", 0, &accel_arg),
    OPT_STR ("images", 0, &images_opt),
    OPT_STR ("work-dir", 0, &work_opt),
    OPT_STR ("qemu", 0, &qemu),
    OPT_FLAG ("verbose", 'v', &printer.verbose),
    OPT_U64 ("log-max", &log_max, 1024, UINT64_MAX, "bytes"),
    OPT_U32 ("boot-timeout", &boot_timeout_s, 1, UINT32_MAX, "seconds"),
    OPT_STR ("config", 0, &config_path),
    OPT_END,
  };
  if (cli_parse (argc, argv, "vm run", opts, OPTS_IN_ORDER, -1, usage, &c))
    return c;
  if (accel_arg != NULL && vm_accel_parse (&accel, accel_arg) < 0)
    return cli_usage ("vm run", "--accel is auto, kvm or tcg");
  if (optind >= argc)
    return cli_usage ("vm run", "no command given (buildvm vm run -- COMMAND ARGS...)");

  /* exec, not a shell line: the words arrive in the guest exactly as given */
  buf_adds (&cmd, "exec");
  for (int i = optind; i < argc; i++)
    if (buf_adds (&cmd, " ") < 0 || cli_shell_quote (&cmd, argv[i]) < 0)
      return cli_usage ("vm run", "the command is longer than 64 KiB");

  if (config_load (&cfg, config_path, &err) < 0)
    goto fail;
  images = xstrdup (images_opt ? images_opt : cfg->images.dir);
  work = xstrdup (work_opt ? work_opt : cfg->work_dir);

  if (image_load (&img, images, profile, &err) < 0)
    goto fail;

  cli_install_cancel ();
  if (workdir_reap_stale (work, NULL, &err) < 0)
    bvm_error_free (&err); /* somebody else's mess: not fatal for us */
  if (workdir_create (&wd, work, "vm-run", &err) < 0)
    goto fail;
  input = workdir_file (wd, "input.img");
  {
    struct guest_step step = { "command", buf_cstr (&cmd), timeout_s };
    struct guest_job job = { 0 };
    job.timeout_s = timeout_s;
    job.log_max = log_max;
    job.output_max = 1u << 20;
    job.steps = &step;
    job.n_steps = 1;
    if (guest_input_create (&in, input, &err) < 0 || guest_input_add_control (in, &job, &err) < 0
        || guest_input_finish (in, NULL, &err) < 0)
      goto fail;
  }

  o.image = img;
  vmjob_opts_settings (&o, &cfg->vm, &cfg->jail);
  if (qemu != NULL)
    o.vmm = qemu;
  if (accel_arg != NULL)
    o.accel = accel;
  o.name = "vm-run";
  o.vcpus = vcpus;
  o.memory_mib = memory;
  o.disk_mib = disk;
  o.output_max = 1u << 20;
  o.boot_timeout_ms = (int64_t) boot_timeout_s * 1000;
  o.build_timeout_ms = (int64_t) timeout_s * 1000;
  /* the runner's cap is the backstop for a guest that ignores its own:
   * room for the agent's and the kernel's lines on top of the build's */
  o.console_max = log_max + 64 * 1024;
  o.line = print_line;
  o.opaque = &printer;
  o.cancel = &cli_cancel_requested;
  if (vmjob_run (&res, wd, input, &o, &err) < 0)
    goto fail;

  switch (vmjob_verdict (&res))
    {
    case VMJOB_OK: status = 0; break;
    case VMJOB_CANCELED:
      fprintf (stderr, "buildvm vm run: canceled\n");
      status = 130;
      break;
    case VMJOB_STEP_FAILED: status = res.guest.exit_code; break;
    case VMJOB_TIMEOUT:
      fprintf (stderr, "buildvm vm run: the command timed out after %u s\n", timeout_s);
      status = EXIT_TIMEOUT;
      break;
    default:
      fprintf (stderr, "buildvm vm run: %s\n", vmjob_describe (what, sizeof what, &res));
      status = EXIT_VM_FAILED;
      break;
    }
  goto cleanup;

fail:
  fprintf (stderr, "buildvm vm run: error: %s\n", bvm_error_msg (&err));
  bvm_error_free (&err);
  status = EXIT_VM_FAILED;
cleanup:
  guest_input_free (in);
  vmjob_result_dispose (&res);
  if (workdir_remove (wd, &err) < 0)
    {
      fprintf (stderr, "buildvm vm run: cleanup: %s\n", bvm_error_msg (&err));
      bvm_error_free (&err);
    }
  image_free (img);
  config_free (cfg);
  buf_dispose (&cmd);
  return status;
}

int
cmd_vm (int argc, char **argv)
{
  if (argc < 2 || strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0)
    {
      usage (argc < 2 ? stderr : stdout);
      return argc < 2 ? 2 : 0;
    }
  if (strcmp (argv[1], "run") == 0)
    return vm_run_main (argc - 1, argv + 1);
  return cli_usage ("vm", "unknown subcommand `%s` (try `buildvm vm run`)", argv[1]);
}
