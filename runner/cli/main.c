/* main.c - `buildvm VERB ...`: dispatch to one file per verb */
#include "cli.h"
#include "log.h"
#include "buf.h"
#include "util.h"

#include <locale.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The verbs: one file each (cmd_<verb>.c), in the order `buildvm --help`
 * lists them. */
static const struct command
{
  const char *name;
  int (*handler) (int argc, char **argv);
  const char *help;
} commands[] = {
  { "run", cmd_run, "run one deploy request end to end" },
  { "dry-run", cmd_dry_run, "build a local working copy and show what would be pushed" },
  { "vm", cmd_vm, "boot a throwaway build VM and run a command in it" },
  { "image", cmd_image, "inspect and verify build VM images" },
  { "policy", cmd_policy, "evaluate and check role policies" },
  { "logs", cmd_logs, "print a job's log stream" },
  { "artifacts", cmd_artifacts, "read a stored artifact back (decrypted)" },
  { "enqueue", cmd_enqueue, "validate a deploy request and put it on the queue" },
  { "serve", cmd_serve, "the runner daemon: lease and run queued jobs" },
  { "jobs", cmd_jobs, "list queued, running, finished and dead jobs" },
  { "status", cmd_status, "print one job's record" },
  { "cancel", cmd_cancel, "cancel a queued or running job" },
  { "webhook", cmd_webhook, "receive git push webhooks and enqueue deploys" },
  { "token-server", cmd_token_server, "issue registry tokens scoped to each job's role" },
  { "secrets", cmd_secrets, "manage per-app build secrets" },
  { "doctor", cmd_doctor, "report which isolation layers this host provides" },
  { "verify", cmd_verify, "check an image's signed provenance (and print the public key)" },
};

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm VERB [OPTIONS] [ARGS]\n\nverbs:\n");
  for (size_t i = 0; i < ARRAY_SIZE (commands); i++)
    fprintf (out, "  %-10s %s\n", commands[i].name, commands[i].help);
  fprintf (out, "\n`buildvm VERB --help` describes each verb.\n");
}

int
cli_usage (const char *verb, const char *fmt, ...)
{
  va_list ap;
  fprintf (stderr, "buildvm %s: ", verb);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n(see `buildvm %s --help`)\n", verb);
  return 2;
}

int
cli_parse (int argc, char **argv, const char *verb, const struct opt *table, unsigned flags,
           int max_operands, void (*print_usage) (FILE *), int *status)
{
  cleanup_error bvm_error_t err = NULL;
  int first = opts_parse (argc, argv, table, flags, &err);

  if (first == 0)
    {
      print_usage (stdout);
      *status = 0;
      return 1;
    }
  if (first < 0)
    *status = cli_usage (verb, "%s", bvm_error_msg (&err));
  else if (max_operands >= 0 && argc - first > max_operands)
    *status = cli_usage (verb, "unexpected argument `%s`", argv[first + max_operands]);
  else
    return 0;
  return 1;
}

int
cli_help_or_missing (int argc, char **argv, void (*print_usage) (FILE *))
{
  if (argc < 2)
    {
      print_usage (stderr);
      return 2;
    }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0
      || strcmp (argv[1], "help") == 0)
    {
      print_usage (stdout);
      return 0;
    }
  return -1;
}

int
cli_status_for (const bvm_error_t *err)
{
  switch (bvm_error_get_code (err))
    {
    case BVM_E_USAGE:
    case BVM_E_INVALID: return 2;
    case BVM_E_DENIED: return 3;
    case BVM_E_BUILD: return 4;
    case BVM_E_TIMEOUT: return 5;
    default: return 1;
    }
}

int
cli_fail (const char *verb, bvm_error_t *err, int status)
{
  fprintf (stderr, "buildvm %s: error: %s\n", verb, bvm_error_msg (err));
  bvm_error_free (err);
  return status;
}

int
main (int argc, char **argv)
{
  const char *lvl = getenv ("BUILDVM_LOG_LEVEL");

  /* Secret values pass through this process's memory: no core dumps, ever
   * (the buffers that hold them are also excluded with MADV_DONTDUMP). */
  {
    struct rlimit no_core = { 0, 0 };
    setrlimit (RLIMIT_CORE, &no_core);
  }
  /* Paths from git trees and build outputs are UTF-8; libarchive converts
   * names through the locale's character set, so the C locale would refuse
   * every non-ASCII name. */
  if (setlocale (LC_CTYPE, "C.UTF-8") == NULL)
    setlocale (LC_CTYPE, "");
  if (lvl != NULL && log_parse_level (lvl) >= 0)
    log_set_level ((enum log_level) log_parse_level (lvl));

  int ret = cli_help_or_missing (argc, argv, usage);
  if (ret >= 0)
    return ret;
  if (strcmp (argv[1], "--version") == 0)
    {
      printf ("buildvm %s\n", BUILDVM_VERSION);
      return 0;
    }
  for (size_t i = 0; i < ARRAY_SIZE (commands); i++)
    if (strcmp (commands[i].name, argv[1]) == 0)
      return commands[i].handler (argc - 1, argv + 1);

  fprintf (stderr, "buildvm: unknown verb `%s`\n\n", argv[1]);
  usage (stderr);
  return 2;
}

volatile sig_atomic_t cli_cancel_requested;

static void
on_cancel (int sig)
{
  (void) sig;
  cli_cancel_requested = 1;
}

void
cli_install_cancel (void)
{
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_cancel;
  sigemptyset (&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
}

int
cli_shell_quote (struct buf *out, const char *word)
{
  if (buf_adds (out, "'") < 0)
    return -1;
  for (const char *p = word; *p; p++)
    if (*p == '\'' ? buf_adds (out, "'\\''") < 0 : buf_add (out, p, 1) < 0)
      return -1;
  return buf_adds (out, "'");
}
