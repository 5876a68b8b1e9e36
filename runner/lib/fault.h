/* fault.h - labelled crash points for fault tests
 *
 * `BUILDVM_FAULT=<point>` makes the process that reaches <point> die at once
 * with SIGKILL - and, in a `buildvm serve` worker, the daemon with it - so
 * the crash-safety tests can kill the runner at the worst moments:
 *
 *   after-lease     the daemon, right after leasing a job
 *   checkout        a worker, as the checkout starts
 *   build           a worker, once the VM runs
 *   after-blobs     a worker, after the layer and config blobs are pushed
 *   after-manifest  a worker, after the manifest is pushed (by digest)
 *   after-tag       a worker, after the tags are set
 *   after-record    a worker, after the job record is written, before the ack
 *
 * Without the variable a fault point costs one getenv().
 *
 * The points exist only in test builds (-DBUILDVM_FAULT_INJECTION: the unit
 * and sanitizer libraries and build/test/buildvm, which the integration tests
 * run); in the production build/buildvm they are empty inlines, so no
 * environment variable can make a production runner kill itself.
 */
#ifndef BUILDVM_FAULT_H
#define BUILDVM_FAULT_H

#include <sys/types.h>

#ifdef BUILDVM_FAULT_INJECTION
/* Also kill this pid (the daemon) when a point fires; 0: only ourselves. */
void fault_set_partner (pid_t pid);
void fault_point (const char *name);
#else
static inline void
fault_set_partner (pid_t pid)
{
  (void) pid;
}

static inline void
fault_point (const char *name)
{
  (void) name;
}
#endif

#endif
