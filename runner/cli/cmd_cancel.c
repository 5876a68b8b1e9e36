/* cmd_cancel.c - `buildvm cancel JOB` */
#include "cli.h"
#include "config.h"
#include "queue.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static void
usage_cancel (FILE *out)
{
  fprintf (out, "usage: buildvm cancel [--config FILE] JOB\n"
                "\nCancel a queued job (it is dead-lettered at once) or a running one (its\n"
                "runner stops the VM, removes its files and dead-letters it).\n");
}

int
cmd_cancel (int argc, char **argv)
{
  const char *config_path = NULL;
  bool as_json = false, was_running = false;
  struct runner_config *cfg = NULL;
  struct queue *q = NULL;
  bvm_error_t err = NULL;
  char key[JOB_KEY_MAX + 1];
  int r;

  if (cli_parse_queue_opts (argc, argv, "cancel", &config_path, &as_json, usage_cancel, &r))
    return r;
  if (optind != argc - 1)
    return cli_usage ("cancel", "expected exactly one JOB");
  if (cli_open_queue (&q, &cfg, config_path, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("cancel", &err, cli_status_for (&err));
    }
  if ((r = cli_resolve_job (key, q, cfg, argv[optind], "cancel")) != 0)
    {
      queue_close (q);
      config_free (cfg);
      if (r > 0)
        fprintf (stderr, "buildvm cancel: no job `%s` is queued or running\n", argv[optind]);
      return r < 0 ? 2 : 1;
    }
  if (queue_cancel (&was_running, q, key, &err) < 0)
    {
      queue_close (q);
      config_free (cfg);
      return cli_fail ("cancel", &err, cli_status_for (&err));
    }
  printf ("%s: %s\n", argv[optind],
          was_running ? "cancel requested: its runner stops it at its next heartbeat"
                      : "canceled (it had not started)");
  queue_close (q);
  config_free (cfg);
  return 0;
}
