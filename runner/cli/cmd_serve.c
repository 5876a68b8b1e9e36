/* cmd_serve.c - `buildvm serve`: the runner daemon */
#include "cli.h"
#include "config.h"
#include "log.h"
#include "serve.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stop_requested, abort_requested;

static void
on_term (int sig)
{
  (void) sig;
  stop_requested = 1;
}

static void
on_int (int sig)
{
  (void) sig;
  /* the first ^C drains like SIGTERM, the second cancels running jobs */
  if (stop_requested)
    abort_requested = 1;
  stop_requested = 1;
}

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm serve [--config FILE] [--concurrency N] [--metrics HOST:PORT]\n"
           "                     [--name NAME]\n"
           "\n"
           "Lease deploy requests from the configured queue (`queue` in runner.json: a spool\n"
           "directory or a Redis Stream) and run them, N at a time, each in its own worker.\n"
           "\n"
           "  --concurrency N      jobs at once (default: serve.concurrency, else what the\n"
           "                       host's cores and memory allow for the default VM size)\n"
           "  --metrics HOST:PORT  serve /metrics (Prometheus) and /healthz there\n"
           "  --name NAME          this runner's name on the queue (default: serve.name,\n"
           "                       else HOST-UID); one live instance per name\n"
           "\n"
           "SIGTERM (or one ^C): stop leasing, let running jobs finish within\n"
           "serve.grace_seconds, then cancel them and give them back to the queue; exit 0.\n"
           "A second ^C cancels running jobs at once.\n");
}

int
cmd_serve (int argc, char **argv)
{
  const char *config_path = NULL;
  struct serve_opts so = { 0 };
  struct runner_config *cfg = NULL;
  struct sigaction sa;
  bvm_error_t err = NULL;
  uint32_t n = 0;
  int c, ret;

  const struct opt opts[] = {
    OPT_STR ("config", 0, &config_path),
    OPT_U32 ("concurrency", &n, 1, 1024, NULL),
    OPT_STR ("metrics", 0, &so.metrics),
    OPT_STR ("name", 0, &so.name),
    OPT_END,
  };
  if (cli_parse (argc, argv, "serve", opts, 0, 0, usage, &c))
    return c;
  so.concurrency = n;
  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("serve", &err, 2);

  memset (&sa, 0, sizeof sa);
  sigemptyset (&sa.sa_mask);
  sa.sa_handler = on_term;
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
  sa.sa_handler = on_int;
  sigaction (SIGINT, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);

  so.cfg = cfg;
  so.stop = &stop_requested;
  so.abort_now = &abort_requested;
  ret = serve_run (&so, &err);
  config_free (cfg);
  if (ret < 0)
    return cli_fail ("serve", &err, cli_status_for (&err));
  return 0;
}
