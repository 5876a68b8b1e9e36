/* queue.c - the queue interface: URL dispatch, validation shared by both
 * drivers, the lease wait loop and the release rules. See queue.h. */
#include "queue/queue_int.h"
#include "jsonx.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *
queue_state_name (enum queue_state s)
{
  switch (s)
    {
    case QUEUE_STATE_QUEUED: return "queued";
    case QUEUE_STATE_RUNNING: return "running";
    case QUEUE_STATE_DONE: return "done";
    case QUEUE_STATE_DEAD: return "dead";
    case QUEUE_STATE_NONE: break;
    }
  return "unknown";
}

int64_t
queue__wall_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *
queue__show (char *buf, size_t size, const char *s, size_t len)
{
  return str_escape (buf, size, s, len, 64);
}

const char *
queue_consumer_problem (const char *s)
{
  static const char why[] = "must match ^[A-Za-z0-9._:@-]{1,128}$";
  size_t n = strlen (s);
  if (n == 0 || n > QUEUE_CONSUMER_MAX)
    return why;
  for (size_t i = 0; i < n; i++)
    {
      char c = s[i];
      if (!(is_alnum (c) || strchr ("._:@-", c) != NULL))
        return why;
    }
  return NULL;
}

int
queue__init (struct queue *q, const struct queue_driver *drv, const struct queue_opts *o,
             bvm_error_t *err)
{
  struct queue_opts def = QUEUE_OPTS_INIT;

  if (o == NULL)
    o = &def;
  q->drv = drv;
  q->lease_ms = o->lease_ms > 0 ? o->lease_ms : def.lease_ms;
  q->max_attempts = o->max_attempts > 0 ? o->max_attempts : def.max_attempts;
  q->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : def.timeout_ms;
  q->ignored = 0;
  if (o->consumer != NULL)
    {
      if (queue_consumer_problem (o->consumer) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "queue consumer name `%s` must match ^[A-Za-z0-9._:@-]{1,128}$",
                               o->consumer);
      q->consumer = strdup (o->consumer);
    }
  else
    {
      char host[HOST_NAME_MAX + 1] = "localhost";
      char *p;
      if (gethostname (host, sizeof host) < 0)
        strcpy (host, "localhost");
      host[sizeof host - 1] = '\0';
      /* a host name may hold characters we do not allow in a consumer name */
      for (p = host; *p; p++)
        if (!(is_alnum (*p) || *p == '.' || *p == '-'))
          *p = '-';
      if (asprintf (&q->consumer, "%.100s:%d", host, (int) getpid ()) < 0)
        q->consumer = NULL;
    }
  if (q->consumer == NULL)
    return bvm_error (err, ENOMEM, "queue consumer name");
  return 0;
}

void
queue__dispose (struct queue *q)
{
  free (q->consumer);
  q->consumer = NULL;
}

static const struct queue_driver *
driver_for (const char *url)
{
  static const struct queue_driver *const drivers[] = { &queue__spool_driver,
                                                        &queue__redis_driver };
  for (size_t i = 0; i < ARRAY_SIZE (drivers); i++)
    if (strncmp (url, drivers[i]->scheme, strlen (drivers[i]->scheme)) == 0)
      return drivers[i];
  return NULL;
}

const char *
queue_url_check (const char *url)
{
  const struct queue_driver *drv;

  if (strlen (url) > QUEUE_URL_MAX)
    return "is longer than 1024 bytes";
  drv = driver_for (url);
  if (drv == NULL)
    return "must be `spool:/dir` or `redis://host:port/stream?group=name`";
  return drv->check_url (url);
}

int
queue_open (struct queue **out, const char *url, const struct queue_opts *o, bvm_error_t *err)
{
  const struct queue_driver *drv = driver_for (url);
  const char *why = queue_url_check (url);
  int ret;

  if (why != NULL)
    {
      char show[QUEUE__SHOW_SIZE];
      return bvm_error_code (err, BVM_E_INVALID, 0, "queue `%s` %s",
                             queue__show (show, sizeof show, url, strlen (url)), why);
    }
  ret = drv->open (out, url, o, err);
  if (ret < 0)
    return bvm_error_wrap (err, "queue `%s`", url);
  return 0;
}

void
queue_close (struct queue *q)
{
  if (q != NULL)
    q->drv->close (q);
}

int
queue_enqueue (char **msg_id, enum queue_state *existing, struct queue *q,
               const struct job_request *job, bvm_error_t *err)
{
  cleanup_json json_t *doc = job_to_json (job);
  cleanup_free char *body = NULL;
  cleanup_free char *id = NULL;
  enum queue_state ex = QUEUE_STATE_NONE;
  char key[JOB_KEY_MAX + 1];
  int ret;

  if (msg_id != NULL)
    *msg_id = NULL;
  if (existing != NULL)
    *existing = QUEUE_STATE_NONE;
  /* The job came through job_parse(), but this is the last gate before the
   * queue: never enqueue an id the spool could not use as a file name. */
  if (job_key (key, job->app, job->id) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "enqueue: invalid job id or app");
  if (doc == NULL || (body = json_dumps (doc, JSON_COMPACT)) == NULL)
    return bvm_error (err, ENOMEM, "enqueue `%s`", job->id);
  if (strlen (body) > JOB_REQUEST_MAX_BYTES)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "enqueue `%s`: the request is larger than %d bytes", job->id,
                           JOB_REQUEST_MAX_BYTES);
  ret = q->drv->enqueue (&id, &ex, q, key, body, strlen (body), err);
  if (ret < 0)
    return bvm_error_wrap (err, "enqueue `%s`", job->id);
  if (existing != NULL)
    *existing = ex;
  if (msg_id != NULL)
    *msg_id = steal_pointer (&id);
  return 0;
}

static int
sleep_ms (int64_t ms)
{
  struct timespec ts = { (time_t) (ms / 1000), (long) (ms % 1000) * 1000000L };
  return nanosleep (&ts, NULL);
}

int
queue_lease (struct queue_msg **out, struct queue *q, int64_t wait_ms, bvm_error_t *err)
{
  int64_t deadline = now_ms () + (wait_ms > 0 ? wait_ms : 0);

  *out = NULL;
  for (;;)
    {
      int64_t left;
      int ret = q->drv->lease (out, q, err);
      if (ret < 0)
        return bvm_error_wrap (err, "lease");
      if (*out != NULL)
        return 0;
      left = deadline - now_ms ();
      if (left <= 0)
        return 0;
      /* polling, not blocking: a daemon's stop signal interrupts the sleep */
      if (sleep_ms (left < q->drv->poll_ms ? left : q->drv->poll_ms) < 0 && errno == EINTR)
        return 0;
    }
}

int
queue_heartbeat (struct queue *q, struct queue_msg *m, bvm_error_t *err)
{
  int ret = q->drv->heartbeat (q, m, err);
  if (ret < 0)
    return bvm_error_wrap (err, "heartbeat `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

int
queue_check_fence (struct queue *q, const struct queue_msg *m, bvm_error_t *err)
{
  int ret = q->drv->check_fence (q, m, err);
  if (ret < 0)
    return bvm_error_wrap (err, "job `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

static int
dump_record (char **out, const json_t *record, bvm_error_t *err)
{
  *out = NULL;
  if (record == NULL)
    return 0;
  *out = json_dumps (record, JSON_COMPACT | JSON_ENCODE_ANY);
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "serializing the record");
  if (strlen (*out) > QUEUE_RECORD_MAX)
    {
      free (*out);
      *out = NULL;
      return bvm_error_code (err, BVM_E_LIMIT, 0, "the record is larger than %d bytes",
                             QUEUE_RECORD_MAX);
    }
  return 0;
}

int
queue_complete (struct queue *q, struct queue_msg *m, const json_t *record, bvm_error_t *err)
{
  cleanup_free char *rec = NULL;
  int ret;

  if (record == NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "complete `%s`: no record", m->job_id);
  ret = dump_record (&rec, record, err);
  if (ret == 0)
    ret = q->drv->complete (q, m, rec, err);
  if (ret < 0)
    return bvm_error_wrap (err, "complete `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

/* A reason is one line of bounded length and valid UTF-8: it comes from
 * error messages that may quote untrusted values, and it ends up in JSON
 * records and stream fields. */
char *
queue__reason (const char *reason)
{
  size_t n = reason ? strnlen (reason, QUEUE_REASON_MAX) : 0;
  char *r = malloc (n + 1);
  json_t *probe;

  if (r == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++)
    r[i] = ((unsigned char) reason[i] < 0x20 || reason[i] == 0x7f) ? ' ' : reason[i];
  r[n] = '\0';
  probe = json_string (r);
  if (probe == NULL)
    for (size_t i = 0; i < n; i++)
      if ((unsigned char) r[i] >= 0x80)
        r[i] = '?';
  json_decref (probe);
  return r;
}

int
queue_dead_letter (struct queue *q, struct queue_msg *m, const char *reason, const json_t *record,
                   bvm_error_t *err)
{
  cleanup_free char *rec = NULL;
  cleanup_free char *why = queue__reason (reason ? reason : "dead-lettered");
  int ret;

  if (why == NULL)
    return bvm_error (err, ENOMEM, "dead-letter `%s`", m->job_id);
  ret = dump_record (&rec, record, err);
  if (ret == 0)
    ret = q->drv->dead_letter (q, m, why, rec, err);
  if (ret < 0)
    return bvm_error_wrap (err, "dead-letter `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

int
queue_release (struct queue *q, struct queue_msg *m, const char *reason, bvm_error_t *err)
{
  cleanup_free char *why = queue__reason (reason ? reason : "released");
  cleanup_free char *dead = NULL;
  int ret;

  if (why == NULL)
    return bvm_error (err, ENOMEM, "release `%s`", m->job_id);
  ret = q->drv->cancel_requested (q, m, err);
  if (ret < 0)
    return bvm_error_wrap (err, "release `%s` attempt %u", m->job_id, m->attempt);
  if (ret > 0)
    {
      if (asprintf (&dead, "canceled (attempt %u was released: %s)", m->attempt, why) < 0)
        return bvm_error (err, ENOMEM, "release `%s`", m->job_id);
    }
  else if (m->attempt >= m->last_attempt)
    {
      if (asprintf (&dead, "gave up after %u attempts: %s", m->attempt, why) < 0)
        return bvm_error (err, ENOMEM, "release `%s`", m->job_id);
    }
  if (dead != NULL)
    ret = q->drv->dead_letter (q, m, dead, NULL, err);
  else
    ret = q->drv->release (q, m, why, false, err);
  if (ret < 0)
    return bvm_error_wrap (err, "release `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

int
queue_drain (struct queue *q, struct queue_msg *m, bvm_error_t *err)
{
  int ret = q->drv->cancel_requested (q, m, err);

  if (ret == 0)
    ret = q->drv->release (q, m, "the runner stopped", true, err);
  else if (ret > 0)
    ret = q->drv->dead_letter (q, m, "canceled (the runner stopped)", NULL, err);
  if (ret < 0)
    return bvm_error_wrap (err, "drain `%s` attempt %u", m->job_id, m->attempt);
  return 0;
}

/* 0 when job_id is a job key (app+id), else an error, its message after
 * `prefix`. */
static int
check_key (const char *job_id, const char *prefix, bvm_error_t *err)
{
  char show[QUEUE__SHOW_SIZE];

  if (job_key_problem (job_id) == NULL)
    return 0;
  return bvm_error_code (err, BVM_E_INVALID, 0, "%s`%s` is not a valid job key (app+id)", prefix,
                         queue__show (show, sizeof show, job_id, strlen (job_id)));
}

int
queue_cancel (bool *was_running, struct queue *q, const char *job_id, bvm_error_t *err)
{
  int ret;

  *was_running = false;
  ret = check_key (job_id, "cancel: ", err);
  if (ret < 0)
    return ret;
  ret = q->drv->cancel (was_running, q, job_id, err);
  if (ret < 0)
    return bvm_error_wrap (err, "cancel `%s`", job_id);
  return 0;
}

bool
queue_cancel_requested (struct queue *q, const struct queue_msg *m)
{
  cleanup_error bvm_error_t err = NULL;
  return q->drv->cancel_requested (q, m, &err) > 0;
}

/* The drivers know a job by its key; callers see "job" (the id), "app" and
 * "key". A dead letter without a usable key keeps its name as "job". */
static void
show_key (json_t *o)
{
  char app[JOB_APP_MAX + 1], id[JOB_ID_MAX + 1];
  const char *key = json_string_value (json_object_get (o, "job"));

  if (!json_is_object (o) || key == NULL || !job_key_split (key, app, id))
    return;
  json_object_set_new (o, "key", json_string (key)); /* before "job" is replaced */
  json_object_set_new (o, "app", json_string (app));
  json_object_set_new (o, "job", json_string (id));
}

int
queue_list (json_t **out, struct queue *q, size_t limit, bvm_error_t *err)
{
  const char *k;
  json_t *v;
  int ret;

  *out = NULL;
  ret = q->drv->list (out, q, limit > 0 ? limit : QUEUE_LIST_DEFAULT, err);
  if (ret < 0)
    return bvm_error_wrap (err, "listing the queue");
  json_object_foreach (*out, k, v)
    {
      size_t i;
      json_t *e;
      json_array_foreach (v, i, e)
        show_key (e);
    }
  return 0;
}

int
queue_get (json_t **out, struct queue *q, const char *job_id, bvm_error_t *err)
{
  int ret;

  *out = NULL;
  ret = check_key (job_id, "", err);
  if (ret < 0)
    return ret;
  ret = q->drv->get (out, q, job_id, err);
  if (ret < 0)
    return bvm_error_wrap (err, "job `%s`", job_id);
  show_key (*out);
  return 0;
}

int
queue_depth (uint64_t *queued, uint64_t *running, struct queue *q, bvm_error_t *err)
{
  int ret;

  *queued = *running = 0;
  ret = q->drv->depth (queued, running, q, err);
  if (ret < 0)
    return bvm_error_wrap (err, "queue depth");
  return 0;
}

uint64_t
queue_ignored_count (const struct queue *q)
{
  return q->ignored;
}

void
queue_msg_free (struct queue_msg *m)
{
  if (m == NULL)
    return;
  free (m->msg_id);
  free (m->job_id);
  free (m->key);
  free (m->owner);
  free (m->body);
  job_free (m->job);
  free (m);
}

int
queue__parse_body (struct queue_msg *m, const char *body, size_t len, const char *expect_key,
                   bvm_error_t *err)
{
  cleanup_job struct job_request *job = NULL;
  char a[QUEUE__SHOW_SIZE], b[QUEUE__SHOW_SIZE], key[JOB_KEY_MAX + 1];
  int ret;

  /* the cap is checked before the parser sees a byte */
  if (len > JOB_REQUEST_MAX_BYTES)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "the message is larger than %d bytes (%zu)",
                           JOB_REQUEST_MAX_BYTES, len);
  ret = job_parse (&job, body, len, err);
  if (ret < 0)
    return ret;
  if (job_key (key, job->app, job->id) < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "job key");
  if (expect_key != NULL && strcmp (key, expect_key) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the request's app and id `%s` do not match the message's job `%s`",
                           queue__show (a, sizeof a, key, strlen (key)),
                           queue__show (b, sizeof b, expect_key, strlen (expect_key)));
  m->body = malloc (len + 1);
  m->job_id = strdup (job->id);
  m->key = strdup (key);
  if (m->body == NULL || m->job_id == NULL || m->key == NULL)
    return bvm_error (err, ENOMEM, "message `%s`", job->id);
  memcpy (m->body, body, len);
  m->body[len] = '\0';
  m->len = len;
  m->job = steal_pointer (&job);
  return 0;
}
