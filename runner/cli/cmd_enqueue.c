/* cmd_enqueue.c - `buildvm enqueue [--config FILE] JOB.json`: validate a
 * deploy request and put it on the configured queue */
#include "cli.h"
#include "config.h"
#include "job.h"
#include "queue.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm enqueue [--config FILE] JOB.json\n"
                "\n"
                "Validate a deploy request and put it on the runner's queue (the `queue`\n"
                "field of runner.json: `spool:/dir` or `redis://host:port/stream`). Prints\n"
                "the job id. Enqueueing is idempotent per job id: when the id is already\n"
                "queued, running or done, nothing is added, a note goes to stderr and the\n"
                "exit status is still 0. A dead-lettered id may be enqueued again.\n"
                "\n"
                "  --config FILE   runner.json (default: built-in defaults)\n"
                "\n"
                "exit status: 0 enqueued (or already there), 2 usage error or invalid request,\n"
                "1 the queue failed\n");
}

int
cmd_enqueue (int argc, char **argv)
{
  const char *config_path = NULL;
  cleanup_job struct job_request *job = NULL;
  cleanup_config struct runner_config *cfg = NULL;
  cleanup_queue struct queue *q = NULL;
  cleanup_error bvm_error_t err = NULL;
  cleanup_free char *msg_id = NULL;
  enum queue_state existing = QUEUE_STATE_NONE;
  int c;

  const struct opt opts[] = {
    OPT_STR ("config", 'c', &config_path),
    OPT_END,
  };
  if (cli_parse (argc, argv, "enqueue", opts, 0, 1, usage, &c))
    return c;
  if (optind >= argc)
    return cli_usage ("enqueue", "missing JOB.json");

  /* the request first: an invalid one is refused before anything connects */
  if (job_load_file (&job, argv[optind], &err) < 0)
    return cli_fail ("enqueue", &err, 2);
  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("enqueue", &err, 2);
  if (queue_open (&q, cfg->queue, NULL, &err) < 0)
    return cli_fail ("enqueue", &err, cli_status_for (&err) == 2 ? 2 : 1);
  if (queue_enqueue (&msg_id, &existing, q, job, &err) < 0)
    return cli_fail ("enqueue", &err, cli_status_for (&err) == 2 ? 2 : 1);
  printf ("%s\n", job->id);
  if (existing != QUEUE_STATE_NONE)
    fprintf (stderr, "buildvm enqueue: job `%s` is already %s (%s): not enqueued again\n", job->id,
             queue_state_name (existing), msg_id);
  return 0;
}
