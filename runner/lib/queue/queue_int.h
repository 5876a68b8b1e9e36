/* queue_int.h - the queue driver interface: for queue.c and the drivers
 * (queue/spool.c, queue/redis.c) only, not for the callers of queue.h
 */
#ifndef BUILDVM_QUEUE_INT_H
#define BUILDVM_QUEUE_INT_H

#include "queue.h"

struct queue_driver
{
  const char *scheme; /* "spool:" or "redis://" */
  int64_t poll_ms;    /* how often queue_lease looks again while waiting */
  /* The form of a URL of this scheme, without I/O: NULL, or why not.
   * queue_open calls it before `open`. */
  const char *(*check_url) (const char *url);
  int (*open) (struct queue **out, const char *url, const struct queue_opts *o, bvm_error_t *err);
  int (*enqueue) (char **msg_id, enum queue_state *existing, struct queue *q, const char *key,
                  const char *body, size_t len, bvm_error_t *err);
  /* One look, no waiting: 0 with *out NULL when there is nothing. */
  int (*lease) (struct queue_msg **out, struct queue *q, bvm_error_t *err);
  int (*heartbeat) (struct queue *q, struct queue_msg *m, bvm_error_t *err);
  int (*check_fence) (struct queue *q, const struct queue_msg *m, bvm_error_t *err);
  int (*complete) (struct queue *q, struct queue_msg *m, const char *record, bvm_error_t *err);
  /* `drain`: the attempt does not count against max_attempts */
  int (*release) (struct queue *q, struct queue_msg *m, const char *reason, bool drain,
                  bvm_error_t *err);
  int (*dead_letter) (struct queue *q, struct queue_msg *m, const char *reason, const char *record,
                      bvm_error_t *err);
  int (*cancel) (bool *was_running, struct queue *q, const char *job_id, bvm_error_t *err);
  /* 1 requested, 0 not, negative on failure */
  int (*cancel_requested) (struct queue *q, const struct queue_msg *m, bvm_error_t *err);
  int (*list) (json_t **out, struct queue *q, size_t limit, bvm_error_t *err);
  int (*get) (json_t **out, struct queue *q, const char *job_id, bvm_error_t *err);
  int (*depth) (uint64_t *queued, uint64_t *running, struct queue *q, bvm_error_t *err);
  void (*close) (struct queue *q);
};

/* The part every driver's handle starts with. */
struct queue
{
  const struct queue_driver *drv;
  char *consumer;
  int64_t lease_ms;
  unsigned max_attempts;
  int64_t timeout_ms;
  uint64_t ignored;
};

extern const struct queue_driver queue__spool_driver;
extern const struct queue_driver queue__redis_driver;

/* Fill the common part (copies the consumer or makes "HOST:PID"). */
int queue__init (struct queue *q, const struct queue_driver *drv, const struct queue_opts *o,
                 bvm_error_t *err);
void queue__dispose (struct queue *q);

/* Validate a message body as a deploy request for the job key `expect_key`
 * (NULL: any). Fills m->job, job_id, key, body. On failure returns BVM_E_INVALID or
 * BVM_E_LIMIT with a one-line reason for the dead letter. */
int queue__parse_body (struct queue_msg *m, const char *body, size_t len, const char *expect_key,
                       bvm_error_t *err);

/* Wall clock in ms since the epoch: leases are compared across processes. */
int64_t queue__wall_ms (void);

/* Render an untrusted name for a message: str_escape of at most 64 bytes. */
const char *queue__show (char *buf, size_t size, const char *s, size_t len);
#define QUEUE__SHOW_SIZE 300


/* A reason for a record: one line, at most QUEUE_REASON_MAX bytes, valid
 * UTF-8 (bytes of an invalid sequence become `?`). NULL on ENOMEM. */
char *queue__reason (const char *reason);

#endif
