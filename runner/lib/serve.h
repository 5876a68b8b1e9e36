/* serve.h - the runner daemon: lease, run, report back
 *
 * One daemon process leases jobs from the queue and runs each in its own
 * worker process (fork): a crash in one job cannot take the others down, and
 * a worker can be signalled on its own. The daemon heartbeats every running
 * job's lease, passes cancel requests on, and keeps a journal of live jobs -
 * worker, VMM and work directory - so that the next instance reaps whatever
 * a crashed one left: VMM processes, disks, work directories and leases.
 *
 * Workers end each job with exactly one queue operation, after the pipeline
 * wrote its record: complete (success, or a failure that would fail again:
 * a build error, an invalid spec, a denial), release (a failure that may not
 * recur: the registry or the host), dead-letter (canceled by request), drain
 * (the daemon is stopping), or nothing at all when fenced off by a newer
 * attempt.
 */
#ifndef BUILDVM_SERVE_H
#define BUILDVM_SERVE_H

#include <signal.h>

#include "config.h"
#include "error.h"

struct serve_opts
{
  const struct runner_config *cfg;
  unsigned concurrency; /* 0: the config's, else what cores and memory allow */
  const char *metrics;  /* "HOST:PORT" or NULL: the config's */
  const char *name;     /* the runner's name on the queue; NULL: the config's */
  /* Set by the front-end's signal handlers. */
  const volatile sig_atomic_t *stop;      /* stop leasing, let running jobs finish */
  const volatile sig_atomic_t *abort_now; /* cancel running jobs now */
};

/* Run until stopped and drained. */
int serve_run (const struct serve_opts *o, bvm_error_t *err);

/* What the host's cores and memory allow for the configured VM size. */
unsigned serve_default_concurrency (const struct runner_config *cfg);

#endif
