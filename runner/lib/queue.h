/* queue.h - the job queue: one interface, two drivers (spool and redis)
 *
 * A producer (`buildvm enqueue`, the webhook) puts a validated deploy request
 * on the queue; a runner leases one job at a time, extends its lease with
 * heartbeats while the job runs, and finishes it with exactly one of
 * complete (terminal record, then ack), release (another attempt later) or
 * dead_letter (never again). See docs/queue.md for the on-disk and in-redis
 * layout and for what an operator can inspect with ls and redis-cli.
 *
 *   spool:/abs/dir                          the embedded default, one host
 *   redis://host[:port][/STREAM][?group=G]  a Redis Stream with a consumer
 *                                           group, for a fleet
 *
 * Fencing: every lease carries an attempt number, 1-based, that grows each
 * time the job is handed to a runner again (after a release or a drain, or
 * when a runner's lease expired and another runner took the job over). Only the
 * holder of the current attempt may heartbeat, complete, release or
 * dead-letter the job; any older attempt gets BVM_E_FENCED and changes
 * nothing. Before a side effect the queue cannot undo (tagging an image),
 * the runner calls queue_heartbeat() and then queue_check_fence().
 *
 * A handle is NOT thread-safe: use one handle per thread (a heartbeat thread
 * opens its own). Any handle may act on any message: the message carries its
 * owner. Open handles after fork(), never before (the spool's lock and the
 * redis connection would be shared with the child).
 */
#ifndef BUILDVM_QUEUE_H
#define BUILDVM_QUEUE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.h"
#include "util.h"

#define QUEUE_CONSUMER_MAX 128 /* ^[A-Za-z0-9._:@-]{1,128}$ */
#define QUEUE_REASON_MAX 1024  /* longer reasons are cut */
#define QUEUE_URL_MAX 1024
#define QUEUE_RECORD_MAX (1024 * 1024)
#define QUEUE_LIST_DEFAULT 100

struct queue_opts
{
  /* The runner's identity, recorded as the lease owner. NULL: "HOST:PID".
   * With redis, a runner that restarts under the same name re-reads its own
   * pending entries first, so give each runner instance a stable name
   * ("HOST-1"); two live handles must never lease under one name. */
  const char *consumer;
  int64_t lease_ms;      /* a lease lasts this long after a heartbeat; every runner
                            on one queue must use the same value */
  unsigned max_attempts; /* a job is dead-lettered instead of starting attempt N+1 */
  int64_t timeout_ms;    /* redis: connect and per-command timeout; spool: the
                            longest wait for the spool lock */
};

#define QUEUE_OPTS_INIT                                                                           \
  {                                                                                               \
    NULL, 60000, 3, 10000                                                                         \
  }

enum queue_state
{
  QUEUE_STATE_NONE,    /* unknown to the queue */
  QUEUE_STATE_QUEUED,  /* waiting for a runner (again, after a release) */
  QUEUE_STATE_RUNNING, /* leased */
  QUEUE_STATE_DONE,    /* a terminal record was written (success or failure) */
  QUEUE_STATE_DEAD,    /* dead-lettered: poison, too many attempts, canceled */
};

const char *queue_state_name (enum queue_state s);

/* One leased job. Everything here is owned by the message. */
struct queue_msg
{
  char *msg_id; /* spool: "<key>.json"; redis: the stream entry id */
  char *job_id; /* the request's id */
  char *key;    /* the job's key "<app>+<id>" (job_key): ids are unique
                              only per app, so the queue knows jobs by app and id */
  char *owner;  /* the consumer that holds the lease */
  char *body;   /* the deploy request as JSON (job_to_json) */
  size_t len;
  struct job_request *job; /* body, parsed and validated by job_parse() */
  unsigned attempt;        /* 1-based; the fencing token */
  unsigned last_attempt;   /* the last attempt the job may have: max_attempts
                              plus the attempts given back by queue_drain */
  int64_t lease_until_ms;  /* wall clock, ms since the epoch */
  bool redelivered;        /* attempt > 1: an earlier attempt may have pushed */
};

struct queue;

/* The one grammar of a queue URL: "spool:/abs/dir" or
 * "redis://host[:port][/STREAM][?group=GROUP]", each checked by its driver's
 * check_url. Nothing is opened. Returns NULL, or why not. */
const char *queue_url_check (const char *url);

/* A consumer name (the daemon's `serve.name`): ^[A-Za-z0-9._:@-]{1,128}$.
 * NULL, or why not. */
const char *queue_consumer_problem (const char *s);

/* Open (and create: spool directories, the redis consumer group) a queue
 * from the config's `queue` string. `o` may be NULL for the defaults. A
 * redis server that cannot be reached is BVM_E_NETWORK. */
int queue_open (struct queue **out, const char *url, const struct queue_opts *o, bvm_error_t *err);
void queue_close (struct queue *q);

/* Put a validated request on the queue (the body is job_to_json(job)).
 * *msg_id (may be NULL) gets the driver's id. Enqueueing is idempotent per
 * job key (app and id: another app's job of the same id is another job):
 * when the key is already queued, running or done, nothing is added,
 * *existing (may be NULL) says where it is and *msg_id is the existing
 * entry; otherwise *existing is QUEUE_STATE_NONE. A dead job may be enqueued
 * again (its dead-letter record is archived). */
int queue_enqueue (char **msg_id, enum queue_state *existing, struct queue *q,
                   const struct job_request *job, bvm_error_t *err);

/* Lease one job, waiting up to wait_ms (0: just look). Returns 0 with *out
 * NULL when there is none, also when a signal interrupted the wait.
 *   redis: first (once per handle) this consumer's own pending entries, left
 *          by a crashed predecessor of the same name; then entries whose
 *          holder stopped heartbeating for lease_ms (XAUTOCLAIM), including
 *          released ones; then new entries.
 *   spool: expired leases first (taken over in place with attempt+1), then
 *          new/ oldest first.
 * A message that is not a valid deploy request, a duplicate of a job that is
 * already queued, running or done, a canceled job, or one whose next attempt
 * would exceed max_attempts is dead-lettered here with the reason and never
 * returned. */
int queue_lease (struct queue_msg **out, struct queue *q, int64_t wait_ms, bvm_error_t *err);

/* Extend the lease by lease_ms. BVM_E_FENCED when m's attempt no longer owns
 * the job (it was taken over, canceled and dead-lettered, or finished). A
 * holder whose lease expired but was not yet taken over gets it back. */
int queue_heartbeat (struct queue *q, struct queue_msg *m, bvm_error_t *err);

/* 0 when m's attempt owns the job and its lease has not expired, else
 * BVM_E_FENCED. Call right before a side effect the queue cannot undo. */
int queue_check_fence (struct queue *q, const struct queue_msg *m, bvm_error_t *err);

/* Terminal: write `record` (the job's terminal record, any status) durably,
 * then acknowledge the message, in that order: after a crash in between, the
 * redelivered message finds the record and is acknowledged without running.
 *   spool: done/<job>.json (temp, fsync, rename, fsync dir), then the lease
 *          files go;
 *   redis: the job hash and the results stream, then XACK and XDEL, all in
 *          one script.
 * A fenced attempt gets BVM_E_FENCED and writes nothing. m stays owned by the
 * caller (free it with queue_msg_free). */
int queue_complete (struct queue *q, struct queue_msg *m, const json_t *record, bvm_error_t *err);

/* Give the job back for another attempt (a retryable failure, or draining at
 * shutdown); it is leasable again at once. When m->attempt has reached
 * max_attempts, or a cancel was requested, the job is dead-lettered instead. */
int queue_release (struct queue *q, struct queue_msg *m, const char *reason, bvm_error_t *err);

/* The runner is stopping: give the job back without spending one of its
 * attempts (the next attempt still gets a new, higher fencing token, but the
 * job's budget grows by one), so that rolling restarts never dead-letter a
 * job. A canceled job is dead-lettered instead. */
int queue_drain (struct queue *q, struct queue_msg *m, bvm_error_t *err);

/* Never retry: the job goes to the dead letters with `reason` and, if not
 * NULL, the record. Fenced attempts get BVM_E_FENCED. */
int queue_dead_letter (struct queue *q, struct queue_msg *m, const char *reason,
                       const json_t *record, bvm_error_t *err);

/* queue_cancel and queue_get take a job key (job_key). queue_list and
 * queue_get report each job as "job" (its id), "app" and "key". */

/* A queued job is dead-lettered as canceled at once (*was_running false); a
 * running one gets a cancel flag that its runner sees through
 * queue_cancel_requested() (*was_running true). A job that already finished
 * or that is unknown is a BVM_E_INVALID error. */
int queue_cancel (bool *was_running, struct queue *q, const char *job_id, bvm_error_t *err);

/* Whether a cancel was requested for m's job. Polled by the runner next to
 * its heartbeats; a failure to ask counts as no. */
bool queue_cancel_requested (struct queue *q, const struct queue_msg *m);

/* {"queued":  [{"job", "msg", "attempts", "enqueued_at"}],   oldest first
 *  "running": [{"job", "msg", "attempt", "owner", "started_at", "lease_until", "cancel"}],
 *  "done":    [{"job", "attempt", "finished_at", "record"}],   newest first
 *  "dead":    [{"job", "reason", "attempt", "at"}]}            newest first
 * each at most `limit` long (0: QUEUE_LIST_DEFAULT); drivers may add keys.
 * Times are ms since the epoch; "started_at" is when the running attempt was
 * leased (absent when the driver cannot tell). */
int queue_list (json_t **out, struct queue *q, size_t limit, bvm_error_t *err);

/* One job: {"job", "state", "attempt", "owner", "request"} and, by state,
 * "lease_until" and "cancel" (running), "record" (done, dead), "reason"
 * (dead); drivers add more (spool: "history" of every attempt). *out is NULL
 * (and 0 returned) when the queue does not know the id. */
int queue_get (json_t **out, struct queue *q, const char *job_id, bvm_error_t *err);

/* For metrics: jobs waiting (including released ones) and jobs leased. */
int queue_depth (uint64_t *queued, uint64_t *running, struct queue *q, bvm_error_t *err);

/* Spool: how many entries the last queue_lease() pass skipped because they
 * are not regular files owned by us (symlinks, fifos, another user's files;
 * they are never read, moved or removed). The library cannot log: the daemon
 * may report it when it changes. Always 0 for redis. */
uint64_t queue_ignored_count (const struct queue *q);

void queue_msg_free (struct queue_msg *m);

DEFINE_CLEANUP_FUNC (queue_msg_freep, struct queue_msg, queue_msg_free)
DEFINE_CLEANUP_FUNC (queue_closep, struct queue, queue_close)
#define cleanup_queue_msg __attribute__ ((cleanup (queue_msg_freep)))
#define cleanup_queue __attribute__ ((cleanup (queue_closep)))

/* The driver interface is in queue/queue_int.h, for queue.c and the drivers
 * (queue/spool.c, queue/redis.c) only. */

#endif
