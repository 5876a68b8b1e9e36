/* test_queue_redis.c - the redis queue driver against a real redis-server
 * (tests/with-services.sh): full cycle, two real processes on one stream,
 * takeover and fencing, a paused runner, poison entries, attempts through
 * release and expiry, cancel, restart recovery, reconnect, raw producers.
 * Every test uses its own stream, so tests never see each other's jobs. */
#include "support.h"

#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "queue/queue_int.h" /* queue__wall_ms */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static json_t *g_empty;
static unsigned g_seq;

struct fixture
{
  char *dir;
  char *url;
  char stream[64];
  redisContext *raw; /* for looking behind the driver's back */
};

static char *
request_text (const char *id)
{
  char *s = NULL;
  if (asprintf (&s,
                "{\"id\":\"%s\",\"app\":\"app1\",\"repo\":\"file:///srv/app1.git\","
                "\"commit\":\"" COMMIT "\",\"ref\":\"refs/heads/main\"}",
                id)
      < 0)
    abort ();
  return s;
}

static struct job_request *
mkjob (const char *id)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  char *s = request_text (id);
  if (job_parse (&j, s, strlen (s), &err) < 0)
    fail_msg ("job_parse: %s", bvm_error_msg (&err));
  free (s);
  return j;
}

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  const char *addr = t_service ("BUILDVM_TEST_REDIS");
  char host[64];
  const char *colon = strrchr (addr, ':');

  f->dir = t_tmpdir ();
  snprintf (f->stream, sizeof f->stream, "t%d-%u", (int) getpid (), ++g_seq);
  if (asprintf (&f->url, "redis://%s/%s?group=runners", addr, f->stream) < 0)
    abort ();
  snprintf (host, sizeof host, "%.*s", (int) (colon - addr), addr);
  f->raw = redisConnect (host, atoi (colon + 1));
  if (f->raw == NULL || f->raw->err)
    fail_msg ("connect to redis at %s", addr);
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;
  /* the stream, its :dead and :results streams and every job hash */
  redisReply *r = redisCommand (f->raw, "EVAL %s 0 %s*",
                                "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                "redis.call('DEL', k) end",
                                f->stream);
  if (r != NULL)
    freeReplyObject (r);
  redisFree (f->raw);
  t_tmpdir_free (f->dir);
  free (f->url);
  free (f);
  return 0;
}

static redisReply *
raw (struct fixture *f, const char *fmt, ...)
{
  va_list ap;
  redisReply *r;
  va_start (ap, fmt);
  r = redisvCommand (f->raw, fmt, ap);
  va_end (ap);
  if (r == NULL)
    fail_msg ("redis: %s", f->raw->errstr);
  if (r->type == REDIS_REPLY_ERROR)
    fail_msg ("redis: %s", r->str);
  return r;
}

static long long
raw_int (struct fixture *f, const char *fmt, ...)
{
  va_list ap;
  redisReply *r;
  long long v;
  va_start (ap, fmt);
  r = redisvCommand (f->raw, fmt, ap);
  va_end (ap);
  if (r == NULL || r->type != REDIS_REPLY_INTEGER)
    fail_msg ("redis: expected an integer");
  v = r->integer;
  freeReplyObject (r);
  return v;
}

/* The delivery count and owner of a pending entry, from XPENDING. */
static long long
deliveries (struct fixture *f, const char *id, char *owner, size_t owner_size)
{
  redisReply *r = raw (f, "XPENDING %s runners %s %s 1", f->stream, id, id);
  long long n = -1;
  if (r->elements == 1)
    {
      n = r->element[0]->element[3]->integer;
      if (owner != NULL)
        snprintf (owner, owner_size, "%s", r->element[0]->element[1]->str);
    }
  freeReplyObject (r);
  return n;
}

static struct queue *
open_q (const char *url, const char *consumer, int64_t lease_ms, unsigned max_attempts)
{
  struct queue_opts o = QUEUE_OPTS_INIT;
  struct queue *q = NULL;
  bvm_error_t err = NULL;

  o.consumer = consumer;
  if (lease_ms > 0)
    o.lease_ms = lease_ms;
  if (max_attempts > 0)
    o.max_attempts = max_attempts;
  assert_ok (queue_open (&q, url, &o, &err), &err);
  return q;
}

static char *
enqueue (struct queue *q, const char *id)
{
  struct job_request *j = mkjob (id);
  enum queue_state ex;
  bvm_error_t err = NULL;
  char *mid = NULL;

  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  job_free (j);
  return mid;
}

static struct queue_msg *
lease (struct queue *q, int64_t wait_ms)
{
  struct queue_msg *m = NULL;
  bvm_error_t err = NULL;
  assert_ok (queue_lease (&m, q, wait_ms, &err), &err);
  return m;
}

/* the queue's key of a test job: app1's, unless the id names its app */
static const char *
key_of (char buf[JOB_KEY_MAX + 1], const char *id)
{
  if (strchr (id, JOB_KEY_SEP) != NULL)
    snprintf (buf, JOB_KEY_MAX + 1, "%s", id);
  else
    snprintf (buf, JOB_KEY_MAX + 1, "app1%c%s", JOB_KEY_SEP, id);
  return buf;
}

static json_t *
get (struct queue *q, const char *id)
{
  json_t *doc = NULL;
  bvm_error_t err = NULL;
  char key[JOB_KEY_MAX + 1];
  assert_ok (queue_get (&doc, q, key_of (key, id), &err), &err);
  return doc;
}

static const char *
jstr (const json_t *o, const char *key)
{
  const char *s = json_string_value (json_object_get (o, key));
  return s ? s : "";
}

static json_int_t
jint (const json_t *o, const char *key)
{
  return json_integer_value (json_object_get (o, key));
}

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

static void
expect_fenced (int ret, bvm_error_t *err)
{
  if (ret >= 0)
    fail_msg ("expected BVM_E_FENCED, got success");
  if (bvm_error_get_code (err) != BVM_E_FENCED)
    fail_msg ("expected BVM_E_FENCED, got: %s", bvm_error_msg (err));
  bvm_error_free (err);
}

static void
test_full_cycle (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "runner-1", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  uint64_t queued, running;
  json_t *doc, *rec, *list;
  char *mid = enqueue (q, "d-1");
  redisReply *r;
  char owner[64];

  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 1);
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued, 1);
  assert_int_equal (running, 0);
  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "queued");
  assert_string_equal (jstr (doc, "msg"), mid);
  json_decref (doc);

  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->msg_id, mid);
  assert_string_equal (m->job_id, "d-1");
  assert_string_equal (m->owner, "runner-1");
  assert_string_equal (m->job->commit, COMMIT);
  assert_int_equal (m->attempt, 1);
  assert_false (m->redelivered);
  assert_null (lease (q, 0));
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued, 0);
  assert_int_equal (running, 1);

  /* heartbeats (XCLAIM ... JUSTID) do not count as deliveries */
  for (int i = 0; i < 3; i++)
    assert_ok (queue_heartbeat (q, m, &err), &err);
  assert_int_equal (deliveries (f, mid, owner, sizeof owner), 1);
  assert_string_equal (owner, "runner-1");
  assert_ok (queue_check_fence (q, m, &err), &err);
  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "running");
  assert_int_equal (jint (doc, "attempt"), 1);
  json_decref (doc);

  rec = json_pack ("{s:s,s:s}", "job", "d-1", "status", "success");
  assert_ok (queue_complete (q, m, rec, &err), &err);
  json_decref (rec);
  expect_fenced (queue_check_fence (q, m, &err), &err);
  queue_msg_free (m);

  /* acknowledged and deleted; the record and the result are kept */
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 0);
  assert_int_equal (raw_int (f, "XLEN %s:results", f->stream), 1);
  r = raw (f, "XRANGE %s:results - +", f->stream);
  {
    redisReply *fields = r->element[0]->element[1];
    bool saw_job = false, saw_state = false;
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
      {
        if (strcmp (fields->element[i]->str, "job") == 0)
          saw_job = strcmp (fields->element[i + 1]->str, "app1+d-1") == 0;
        if (strcmp (fields->element[i]->str, "state") == 0)
          saw_state = strcmp (fields->element[i + 1]->str, "done") == 0;
      }
    assert_true (saw_job && saw_state);
  }
  freeReplyObject (r);
  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_string_equal (jstr (json_object_get (doc, "record"), "status"), "success");
  assert_string_equal (jstr (json_object_get (doc, "request"), "commit"), COMMIT);
  json_decref (doc);
  assert_ok (queue_list (&list, q, 0, &err), &err);
  assert_int_equal (json_array_size (json_object_get (list, "done")), 1);
  assert_string_equal (jstr (json_array_get (json_object_get (list, "done"), 0), "job"), "d-1");
  assert_true (jint (json_array_get (json_object_get (list, "done"), 0), "finished_at") > 0);
  assert_string_equal (jstr (json_object_get (json_array_get (json_object_get (list, "done"), 0),
                                              "record"),
                             "status"),
                       "success");
  assert_int_equal (json_array_size (json_object_get (list, "queued")), 0);
  assert_int_equal (json_array_size (json_object_get (list, "running")), 0);
  json_decref (list);
  assert_null (get (q, "never"));
  free (mid);
  queue_close (q);
}

/* Job ids are unique per app only: another app's job of the same id is
 * another job, not a duplicate (issue 11: keyed by the id alone, one app's
 * id shadowed another's). */
static void
test_same_id_two_apps (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct job_request *j1 = mkjob ("same-1"), *j2 = NULL;
  struct queue_msg *m1, *m2;
  enum queue_state ex;
  bvm_error_t err = NULL;
  char *mid = NULL;
  const char *req2 = "{\"id\":\"same-1\",\"app\":\"app2\",\"repo\":\"file:///srv/app2.git\","
                     "\"commit\":\"" COMMIT "\",\"ref\":\"refs/heads/main\"}";
  json_t *doc;

  assert_ok (job_parse (&j2, req2, strlen (req2), &err), &err);
  assert_ok (queue_enqueue (&mid, &ex, q, j1, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  free (mid);
  m1 = lease (q, 0);
  assert_non_null (m1);
  assert_ok (queue_complete (q, m1, g_empty, &err), &err);
  /* app1's job is done; app2's of the same id is new, not "already done" */
  assert_ok (queue_enqueue (&mid, &ex, q, j2, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  free (mid);
  m2 = lease (q, 0);
  assert_non_null (m2);
  assert_string_equal (m2->job->app, "app2");
  assert_string_equal (m2->key, "app2+same-1");
  doc = get (q, "app1+same-1");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_string_equal (jstr (doc, "app"), "app1");
  assert_string_equal (jstr (doc, "job"), "same-1");
  json_decref (doc);
  doc = get (q, "app2+same-1");
  assert_string_equal (jstr (doc, "state"), "running");
  json_decref (doc);
  assert_ok (queue_complete (q, m2, g_empty, &err), &err);
  queue_msg_free (m1);
  queue_msg_free (m2);
  job_free (j1);
  job_free (j2);
  queue_close (q);
}

static void
test_enqueue_idempotent (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct job_request *j = mkjob ("d-2");
  char *first = enqueue (q, "d-2"), *mid = NULL;
  struct queue_msg *m;
  enum queue_state ex;
  bvm_error_t err = NULL;
  json_t *doc;

  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_QUEUED);
  assert_string_equal (mid, first);
  free (mid);
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 1);
  m = lease (q, 0);
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_RUNNING);
  free (mid);
  assert_ok (queue_dead_letter (q, m, "broken beyond repair", NULL, &err), &err);
  queue_msg_free (m);
  doc = get (q, "d-2");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "broken beyond repair");
  json_decref (doc);
  assert_int_equal (raw_int (f, "XLEN %s:dead", f->stream), 1);
  /* dead ids may come back */
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  assert_string_not_equal (mid, first);
  free (mid);
  m = lease (q, 0);
  assert_non_null (m);
  assert_int_equal (m->attempt, 1);
  assert_ok (queue_complete (q, m, g_empty, &err), &err);
  queue_msg_free (m);
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_DONE);
  free (mid);
  free (first);
  job_free (j);
  queue_close (q);
}

/* --- workers in real processes ----------------------------------------- */

static int
worker (const char *url, const char *consumer, const char *marks, const char *log)
{
  struct queue_opts o = QUEUE_OPTS_INIT;
  struct queue *q = NULL;
  bvm_error_t err = NULL;
  int64_t give_up = now_ms () + 30000;
  int status = 0;

  o.consumer = consumer;
  if (queue_open (&q, url, &o, &err) < 0)
    return 4;
  while (now_ms () < give_up)
    {
      struct queue_msg *m = NULL;
      uint64_t queued = 0, running = 0;
      char mark[8192], line[256];
      json_t *rec;
      int fd;

      if (queue_lease (&m, q, 100, &err) < 0)
        {
          status = 4;
          break;
        }
      if (m == NULL)
        {
          if (queue_depth (&queued, &running, q, &err) < 0)
            {
              status = 4;
              break;
            }
          if (queued == 0 && running == 0)
            break;
          continue;
        }
      snprintf (mark, sizeof mark, "%s/%s", marks, m->job_id);
      fd = open (mark, O_WRONLY | O_CREAT | O_EXCL, 0600);
      if (fd < 0)
        {
          status = 3;
          queue_msg_free (m);
          break;
        }
      close (fd);
      sleep_ms (5);
      if (queue_heartbeat (q, m, &err) < 0 || queue_check_fence (q, m, &err) < 0)
        {
          status = 4;
          queue_msg_free (m);
          break;
        }
      unlink (mark);
      rec = json_pack ("{s:s,s:i,s:i}", "job", m->job_id, "pid", (int) getpid (), "attempt",
                       (int) m->attempt);
      if (queue_complete (q, m, rec, &err) < 0)
        status = 4;
      json_decref (rec);
      snprintf (line, sizeof line, "%s %u\n", m->job_id, m->attempt);
      fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0)
        {
          fs_write_all (fd, line, strlen (line));
          close (fd);
        }
      queue_msg_free (m);
      if (status != 0)
        break;
    }
  bvm_error_free (&err);
  queue_close (q);
  return status;
}

static void
test_two_processes_twenty_jobs (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "producer", 0, 0);
  char marks[4096], log[4096];
  pid_t pids[2];
  uint64_t queued, running;
  bvm_error_t err = NULL;

  for (int i = 0; i < 20; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "job-%02d", i);
      free (enqueue (q, id));
    }
  snprintf (marks, sizeof marks, "%s/marks", f->dir);
  snprintf (log, sizeof log, "%s/completions", f->dir);
  mkdir (marks, 0700);
  for (int w = 0; w < 2; w++)
    {
      char consumer[64];
      snprintf (consumer, sizeof consumer, "worker-%d-%d", (int) getpid (), w);
      pids[w] = fork ();
      assert_true (pids[w] >= 0);
      if (pids[w] == 0)
        _exit (worker (f->url, consumer, marks, log));
    }
  for (int w = 0; w < 2; w++)
    {
      int st;
      assert_int_equal (waitpid (pids[w], &st, 0), pids[w]);
      assert_true (WIFEXITED (st));
      if (WEXITSTATUS (st) == 3)
        fail_msg ("worker %d found a job held by two runners at once", w);
      assert_int_equal (WEXITSTATUS (st), 0);
    }
  for (int i = 0; i < 20; i++)
    {
      char id[32], *n;
      json_t *doc, *rec;
      snprintf (id, sizeof id, "job-%02d", i);
      n = t_sh_out ("grep -c '^%s ' '%s' || true", id, log);
      if (strcmp (n, "1") != 0)
        fail_msg ("job %s completed %s times", id, n);
      free (n);
      doc = get (q, id);
      assert_string_equal (jstr (doc, "state"), "done");
      assert_int_equal (jint (doc, "attempt"), 1);
      rec = json_object_get (doc, "record");
      assert_true (jint (rec, "pid") == pids[0] || jint (rec, "pid") == pids[1]);
      json_decref (doc);
    }
  assert_int_equal (raw_int (f, "XLEN %s:results", f->stream), 20);
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 0);
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued + running, 0);
  queue_close (q);
}

static void
test_takeover_and_fencing (void **state)
{
  struct fixture *f = *state;
  struct queue *a = open_q (f->url, "host-a", 1000, 0);
  struct queue *b = open_q (f->url, "host-b", 1000, 0);
  struct queue_msg *ma, *mb;
  bvm_error_t err = NULL;
  char *mid = enqueue (a, "d-3"), owner[64];
  json_t *doc;

  ma = lease (a, 0);
  assert_non_null (ma);
  sleep_ms (1100);
  /* expired, not yet taken: not safe to push, but a heartbeat wins it back */
  assert_fails_with (queue_check_fence (a, ma, &err), &err, "no heartbeat");
  assert_ok (queue_heartbeat (a, ma, &err), &err);
  assert_ok (queue_check_fence (a, ma, &err), &err);
  assert_null (lease (b, 0));
  assert_int_equal (deliveries (f, mid, NULL, 0), 1);

  sleep_ms (1100);
  mb = lease (b, 0);
  assert_non_null (mb);
  assert_string_equal (mb->msg_id, mid);
  /* XAUTOCLAIM counts as a delivery: the fencing token moved on */
  assert_int_equal (mb->attempt, 2);
  assert_true (mb->redelivered);
  assert_int_equal (deliveries (f, mid, owner, sizeof owner), 2);
  assert_string_equal (owner, "host-b");

  assert_fails_with (queue_check_fence (a, ma, &err), &err, "attempt 2 (`host-b`) holds the job");
  expect_fenced (queue_heartbeat (a, ma, &err), &err);
  expect_fenced (queue_complete (a, ma, g_empty, &err), &err);
  expect_fenced (queue_release (a, ma, "x", &err), &err);
  expect_fenced (queue_dead_letter (a, ma, "x", NULL, &err), &err);
  /* the fenced calls changed nothing */
  assert_int_equal (deliveries (f, mid, owner, sizeof owner), 2);
  assert_string_equal (owner, "host-b");

  assert_ok (queue_check_fence (b, mb, &err), &err);
  assert_ok (queue_complete (b, mb, g_empty, &err), &err);
  doc = get (a, "d-3");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_int_equal (jint (doc, "attempt"), 2);
  assert_string_equal (jstr (doc, "owner"), "host-b");
  json_decref (doc);
  assert_int_equal (raw_int (f, "XLEN %s:results", f->stream), 1);
  free (mid);
  queue_msg_free (ma);
  queue_msg_free (mb);
  queue_close (a);
  queue_close (b);
}

static void
test_paused_runner_is_fenced (void **state)
{
  struct fixture *f = *state;
  struct queue *b = open_q (f->url, "awake", 300, 0);
  struct queue_msg *mb;
  bvm_error_t err = NULL;
  int ready[2], st;
  pid_t pid;
  char c;
  json_t *doc;

  free (enqueue (b, "d-4"));
  assert_int_equal (pipe (ready), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      struct queue_opts o = QUEUE_OPTS_INIT;
      struct queue *q = NULL;
      struct queue_msg *m = NULL;
      int64_t end;

      o.consumer = "sleepy";
      o.lease_ms = 300;
      close (ready[0]);
      if (queue_open (&q, f->url, &o, &err) < 0 || queue_lease (&m, q, 1000, &err) < 0
          || m == NULL)
        _exit (10);
      if (write (ready[1], "x", 1) != 1)
        _exit (11);
      end = now_ms () + 5000;
      while (now_ms () < end)
        {
          sleep_ms (50);
          if (queue_heartbeat (q, m, &err) < 0)
            {
              if (bvm_error_get_code (&err) != BVM_E_FENCED)
                _exit (12);
              bvm_error_free (&err);
              if (queue_check_fence (q, m, &err) == 0)
                _exit (13);
              bvm_error_free (&err);
              if (queue_complete (q, m, g_empty, &err) == 0
                  || bvm_error_get_code (&err) != BVM_E_FENCED)
                _exit (14);
              _exit (0);
            }
        }
      _exit (15);
    }
  close (ready[1]);
  assert_int_equal (read (ready[0], &c, 1), 1);
  close (ready[0]);
  kill (pid, SIGSTOP);
  mb = lease (b, 2000);
  assert_non_null (mb);
  assert_int_equal (mb->attempt, 2);
  kill (pid, SIGCONT);
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st));
  if (WEXITSTATUS (st) != 0)
    fail_msg ("the paused runner exited %d (see the child's checks)", WEXITSTATUS (st));
  assert_ok (queue_complete (b, mb, g_empty, &err), &err);
  doc = get (b, "d-4");
  assert_int_equal (jint (doc, "attempt"), 2);
  assert_string_equal (jstr (doc, "owner"), "awake");
  json_decref (doc);
  queue_msg_free (mb);
  queue_close (b);
}

static void
xadd (struct fixture *f, const char *job, const char *body, size_t len)
{
  redisReply *r;
  if (body == NULL)
    r = raw (f, "XADD %s * job %s", f->stream, job);
  else
    r = raw (f, "XADD %s * job %s body %b", f->stream, job, body, len);
  freeReplyObject (r);
}

static void
test_poison_entries_are_dead_lettered (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  char *big, *other, *s;
  json_t *list, *dead, *doc;
  static const char *const want[] = {
    "not valid JSON",
    "commit",
    "larger than 65536 bytes",
    "do not match",
    "exactly the fields `job` and `body`",
    "is not a valid job key",
  };

  s = strdup ("{\"id\": ");
  xadd (f, "app1+p-json", s, strlen (s));
  free (s);
  s = strdup ("{\"id\":\"p-field\",\"app\":\"app1\",\"repo\":\"file:///srv/a.git\","
              "\"commit\":\"abc\",\"ref\":\"refs/heads/main\"}");
  xadd (f, "app1+p-field", s, strlen (s));
  free (s);
  big = calloc (1, 70 * 1024 + 1);
  memset (big, ' ', 70 * 1024);
  xadd (f, "app1+p-big", big, strlen (big));
  free (big);
  other = request_text ("someone-else");
  xadd (f, "app1+p-mis", other, strlen (other));
  free (other);
  xadd (f, "app1+p-nobody", NULL, 0);
  s = request_text ("x");
  xadd (f, "../x", s, strlen (s));
  free (s);
  free (enqueue (q, "good"));

  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "good");
  assert_null (lease (q, 0));
  queue_msg_free (m);
  assert_int_equal (raw_int (f, "XLEN %s:dead", f->stream), 6);
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 1); /* only `good` is left */

  assert_ok (queue_list (&list, q, 0, &err), &err);
  dead = json_object_get (list, "dead");
  assert_int_equal (json_array_size (dead), 6);
  for (size_t i = 0; i < ARRAY_SIZE (want); i++)
    {
      /* newest first */
      const char *reason = jstr (json_array_get (dead, 5 - i), "reason");
      if (strstr (reason, want[i]) == NULL)
        fail_msg ("dead letter %zu: reason \"%s\" lacks \"%s\"", i, reason, want[i]);
    }
  json_decref (list);
  doc = get (q, "p-field");
  assert_string_equal (jstr (doc, "state"), "dead");
  json_decref (doc);
  queue_close (q);
}

static void
test_released_job_dies_after_max_attempts (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 3);
  bvm_error_t err = NULL;
  char *mid = enqueue (q, "d-5");
  uint64_t queued, running;
  json_t *doc;

  for (unsigned i = 1; i <= 3; i++)
    {
      struct queue_msg *m = lease (q, 0);
      assert_non_null (m);
      assert_string_equal (m->msg_id, mid);
      assert_int_equal (m->attempt, i);
      assert_ok (queue_release (q, m, "registry unreachable", &err), &err);
      queue_msg_free (m);
      if (i < 3)
        {
          /* parked: queued again, not running */
          assert_ok (queue_depth (&queued, &running, q, &err), &err);
          assert_int_equal (queued, 1);
          assert_int_equal (running, 0);
          doc = get (q, "d-5");
          assert_string_equal (jstr (doc, "state"), "queued");
          json_decref (doc);
        }
    }
  assert_null (lease (q, 0));
  doc = get (q, "d-5");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "gave up after 3 attempts: registry unreachable");
  json_decref (doc);
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 0);
  free (mid);
  queue_close (q);
}

static void
test_expired_job_dies_after_max_attempts (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 150, 2);
  struct queue_msg *m;
  json_t *doc;

  free (enqueue (q, "d-6"));
  m = lease (q, 0);
  assert_int_equal (m->attempt, 1);
  queue_msg_free (m);
  sleep_ms (200);
  m = lease (q, 0);
  assert_non_null (m);
  assert_int_equal (m->attempt, 2);
  queue_msg_free (m);
  sleep_ms (200);
  assert_null (lease (q, 0));
  doc = get (q, "d-6");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_non_null (
      strstr (jstr (doc, "reason"), "gave up after 2 attempts: the lease of attempt 2"));
  json_decref (doc);
  queue_close (q);
}

/* Draining (a runner stopping) gives the job back without spending one of
 * its attempts; the fencing token still grows. */
static void
test_drain_does_not_spend_attempts (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 2);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  bool was_running;
  json_t *doc;

  free (enqueue (q, "d-10"));
  for (unsigned i = 1; i <= 3; i++)
    {
      m = lease (q, 0);
      assert_non_null (m);
      assert_int_equal (m->attempt, i);
      assert_int_equal (m->last_attempt, 2 + i - 1);
      assert_ok (queue_drain (q, m, &err), &err);
      queue_msg_free (m);
    }
  m = lease (q, 0);
  assert_non_null (m);
  assert_int_equal (m->attempt, 4);
  assert_ok (queue_release (q, m, "flaky", &err), &err);
  queue_msg_free (m);
  m = lease (q, 0);
  assert_non_null (m);
  assert_int_equal (m->attempt, 5);
  assert_ok (queue_release (q, m, "flaky", &err), &err);
  queue_msg_free (m);
  assert_null (lease (q, 0));
  doc = get (q, "d-10");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "gave up after 5 attempts: flaky");
  json_decref (doc);

  /* a canceled job is not handed back */
  free (enqueue (q, "d-11"));
  m = lease (q, 0);
  assert_ok (queue_cancel (&was_running, q, "app1+d-11", &err), &err);
  assert_ok (queue_drain (q, m, &err), &err);
  queue_msg_free (m);
  assert_null (lease (q, 0));
  doc = get (q, "d-11");
  assert_string_equal (jstr (doc, "state"), "dead");
  json_decref (doc);
  queue_close (q);
}

static void
test_cancel (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  bool was_running = true;
  json_t *doc;

  free (enqueue (q, "queued-1"));
  assert_ok (queue_cancel (&was_running, q, "app1+queued-1", &err), &err);
  assert_false (was_running);
  assert_null (lease (q, 0));
  doc = get (q, "queued-1");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "canceled before it ran");
  json_decref (doc);
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 0);

  free (enqueue (q, "running-1"));
  m = lease (q, 0);
  assert_non_null (m);
  assert_false (queue_cancel_requested (q, m));
  assert_ok (queue_cancel (&was_running, q, "app1+running-1", &err), &err);
  assert_true (was_running);
  assert_true (queue_cancel_requested (q, m));
  assert_ok (queue_release (q, m, "stopped", &err), &err);
  queue_msg_free (m);
  doc = get (q, "running-1");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_non_null (strstr (jstr (doc, "reason"), "canceled"));
  json_decref (doc);
  assert_null (lease (q, 0));

  assert_fails_with (queue_cancel (&was_running, q, "app1+running-1", &err), &err,
                     "already finished");
  assert_fails_with (queue_cancel (&was_running, q, "app1+never-seen", &err), &err,
                     "no such job is queued or running");
  queue_close (q);
}

/* A runner that restarts under its stable name first re-reads the entries
 * it held when it died, as a new attempt; nobody else gets them meanwhile. */
static void
test_restart_rereads_own_pending (void **state)
{
  struct fixture *f = *state;
  char me[64];
  struct queue *q, *other;
  struct queue_msg *m;
  char *mid;

  snprintf (me, sizeof me, "host-1-%d", (int) getpid ());
  q = open_q (f->url, me, 60000, 0);
  mid = enqueue (q, "d-7");
  m = lease (q, 0);
  assert_non_null (m);
  queue_msg_free (m);
  queue_close (q); /* "crash" */

  other = open_q (f->url, "host-2", 60000, 0);
  assert_null (lease (other, 0));
  queue_close (other);

  q = open_q (f->url, me, 60000, 0);
  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->msg_id, mid);
  assert_int_equal (m->attempt, 2);
  assert_true (m->redelivered);
  assert_null (lease (q, 0)); /* recovered once, not again */
  queue_msg_free (m);
  free (mid);
  queue_close (q);
}

static void
test_reconnects_after_a_broken_connection (void **state)
{
  struct fixture *f = *state;
  char me[64], *mid;
  struct queue *q;
  redisReply *r;
  long long id = -1;
  char *line, *save = NULL, needle[96];

  snprintf (me, sizeof me, "reconnect-%d", (int) getpid ());
  q = open_q (f->url, me, 0, 0);
  r = raw (f, "CLIENT LIST");
  snprintf (needle, sizeof needle, "name=buildvm:%s ", me);
  for (line = strtok_r (r->str, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
    if (strstr (line, needle) != NULL)
      id = strtoll (line + 3, NULL, 10); /* "id=N ..." */
  freeReplyObject (r);
  assert_true (id > 0);
  assert_int_equal (raw_int (f, "CLIENT KILL ID %lld", id), 1);
  mid = enqueue (q, "d-8");
  assert_non_null (mid);
  free (mid);
  queue_close (q);
}

static void
test_unreachable_and_bad_urls (void **state)
{
  struct queue *q = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_int_equal (queue_open (&q, "redis://127.0.0.1:1/s", NULL, &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_NETWORK);
  assert_non_null (strstr (bvm_error_msg (&err), "connect to redis `127.0.0.1:1`"));
  bvm_error_free (&err);
  assert_fails_with (queue_open (&q, "redis://u:p@127.0.0.1/s", NULL, &err), &err, "credentials");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1:99999/s", NULL, &err), &err,
                     "invalid port");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1/a:b", NULL, &err), &err, "stream name");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1/s?x=1", NULL, &err), &err, "?group=NAME");
  /* the config refused these and the driver took them: one rule now, the
   * stricter, checked before any connection is made */
  assert_fails_with (queue_open (&q, "redis://ho_st/s", NULL, &err), &err, "invalid host name");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1:06379/s", NULL, &err), &err,
                     "invalid port");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1/", NULL, &err), &err, "stream name");
  assert_fails_with (queue_open (&q, "redis://127.0.0.1/?group=g", NULL, &err), &err,
                     "stream name");
}

/* The one grammar of a redis queue URL (queue_url_check, the driver's
 * check_url): what the config's copy and the driver's copy refused. */
static void
test_url_grammar (void **state)
{
  static const char *const good[] = {
    "redis://127.0.0.1",
    "redis://h:6379",
    "redis://h/s",
    "redis://[::1]:6379/s.t_u-v",
    "redis://h/s?group=g",
    "redis://redis.example-1.org:1/S?group=A.b_c-9",
    NULL,
  };
  static const char *const bad[][2] = {
    { "redis://", "has no host" },
    { "redis://:6379/s", "has no host" },
    { "redis://u:p@h/s", "credentials" },
    { "redis://h:0", "invalid port" },
    { "redis://h:70000", "invalid port" },
    { "redis://h:99999/s", "invalid port" },
    { "redis://h:/s", "invalid port" },
    { "redis://h:8a/s", "invalid port" },
    { "redis://h:06379/s", "invalid port" },
    { "redis://ho_st/s", "invalid host name" },
    { "redis://ho st/s", "invalid host name" },
    { "redis://[::1/s", "unterminated IPv6" },
    { "redis://[::1]x/s", "invalid host" },
    { "redis://[::g%1]/s", "invalid IPv6" },
    { "redis://h/", "stream name" },
    { "redis://h/a/b", "stream name" },
    { "redis://h/a:b", "stream name" },
    { "redis://h/?group=g", "stream name" },
    { "redis://h/s?x=1", "?group=NAME" },
    { "redis://h/s?group=", "?group=NAME" },
    { "redis://h/s?group=a b", "?group=NAME" },
    { "redis://h/s#x", "trailing characters" },
    { "amqp://x", "must be `spool:/dir` or `redis://" },
    { "", "must be `spool:/dir` or `redis://" },
  };
  char longurl[1100];
  (void) state;

  for (size_t i = 0; good[i]; i++)
    if (queue_url_check (good[i]) != NULL)
      fail_msg ("`%s` refused: %s", good[i], queue_url_check (good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      const char *why = queue_url_check (bad[i][0]);
      if (why == NULL || strstr (why, bad[i][1]) == NULL)
        fail_msg ("`%s`: want `%s`, got `%s`", bad[i][0], bad[i][1], why ? why : "(accepted)");
    }
  memset (longurl, 'a', sizeof longurl - 1);
  longurl[sizeof longurl - 1] = '\0';
  memcpy (longurl, "redis://h/", 10);
  assert_non_null (strstr (queue_url_check (longurl), "longer than"));
}

/* Producers that XADD by hand: a valid entry is adopted; a second entry for
 * a job that is already running is a duplicate and dead-lettered. */
static void
test_raw_producers (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  char *s = request_text ("raw-1");
  json_t *doc, *list;

  xadd (f, "app1+raw-1", s, strlen (s));
  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "raw-1");
  xadd (f, "app1+raw-1", s, strlen (s));
  assert_null (lease (q, 0));
  assert_ok (queue_list (&list, q, 0, &err), &err);
  assert_non_null (strstr (jstr (json_array_get (json_object_get (list, "dead"), 0), "reason"),
                           "duplicate: job `app1+raw-1` is already running"));
  json_decref (list);
  assert_ok (queue_complete (q, m, g_empty, &err), &err);
  queue_msg_free (m);
  doc = get (q, "raw-1");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_string_equal (jstr (json_object_get (doc, "request"), "id"), "raw-1");
  json_decref (doc);
  /* the duplicate published no result: the job finished once */
  assert_int_equal (raw_int (f, "XLEN %s:results", f->stream), 1);
  free (s);
  queue_close (q);
}

/* The job's hash says it finished but its entry is still pending (written
 * by hand here; the driver itself writes both in one script): the entry is
 * acknowledged when it comes around again, never run a second time. */
static void
test_finished_entry_is_only_acknowledged (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 150, 0);
  struct queue_msg *m;
  char *mid = enqueue (q, "d-9");

  m = lease (q, 0);
  assert_non_null (m);
  freeReplyObject (raw (f, "HSET %s:job:app1+d-9 state done", f->stream));
  queue_msg_free (m);
  sleep_ms (200);
  assert_null (lease (q, 0));
  assert_int_equal (raw_int (f, "XLEN %s", f->stream), 0);
  assert_int_equal (deliveries (f, mid, NULL, 0), -1);
  free (mid);
  queue_close (q);
}

/* An operator deleted the stream (and with it the group) under a running
 * handle: the group is created again and the queue keeps working. */
static void
test_stream_deleted_under_the_handle (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_msg *m;

  free (enqueue (q, "gone-1"));
  freeReplyObject (raw (f, "DEL %s %s:job:app1+gone-1", f->stream, f->stream));
  assert_null (lease (q, 0));
  free (enqueue (q, "gone-2"));
  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "gone-2");
  queue_msg_free (m);
  queue_close (q);
}

static void
test_list_and_depth (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "lister", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  json_t *doc, *running;
  uint64_t queued, nrun;
  int64_t t0;
  bool was_running = false;

  free (enqueue (q, "a-1"));
  free (enqueue (q, "a-2"));
  free (enqueue (q, "a-3"));
  t0 = queue__wall_ms ();
  m = lease (q, 0);
  assert_string_equal (m->job_id, "a-1");
  assert_ok (queue_depth (&queued, &nrun, q, &err), &err);
  assert_int_equal (queued, 2);
  assert_int_equal (nrun, 1);
  assert_ok (queue_list (&doc, q, 0, &err), &err);
  assert_int_equal (json_array_size (json_object_get (doc, "queued")), 2);
  assert_string_equal (jstr (json_array_get (json_object_get (doc, "queued"), 0), "job"), "a-2");
  assert_true (jint (json_array_get (json_object_get (doc, "queued"), 0), "enqueued_at")
               > queue__wall_ms () - 60000);
  running = json_array_get (json_object_get (doc, "running"), 0);
  assert_string_equal (jstr (running, "job"), "a-1");
  assert_string_equal (jstr (running, "owner"), "lister");
  assert_int_equal (jint (running, "attempt"), 1);
  assert_true (jint (running, "lease_until") > queue__wall_ms ());
  /* when the attempt began, not when its lease ends */
  assert_true (jint (running, "started_at") >= t0);
  assert_true (jint (running, "started_at") <= queue__wall_ms ());
  assert_false (json_is_true (json_object_get (running, "cancel")));
  json_decref (doc);
  /* a cancel requested of the running job shows (the script looked its
   * hash up by a job id pattern that refused every APP+ID key) */
  assert_ok (queue_cancel (&was_running, q, m->key, &err), &err);
  assert_true (was_running);
  assert_ok (queue_list (&doc, q, 0, &err), &err);
  running = json_array_get (json_object_get (doc, "running"), 0);
  assert_true (json_is_true (json_object_get (running, "cancel")));
  json_decref (doc);
  assert_ok (queue_list (&doc, q, 1, &err), &err);
  assert_int_equal (json_array_size (json_object_get (doc, "queued")), 1);
  json_decref (doc);
  queue_msg_free (m);
  queue_close (q);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_full_cycle, setup, teardown),
    cmocka_unit_test_setup_teardown (test_enqueue_idempotent, setup, teardown),
    cmocka_unit_test_setup_teardown (test_same_id_two_apps, setup, teardown),
    cmocka_unit_test_setup_teardown (test_two_processes_twenty_jobs, setup, teardown),
    cmocka_unit_test_setup_teardown (test_takeover_and_fencing, setup, teardown),
    cmocka_unit_test_setup_teardown (test_paused_runner_is_fenced, setup, teardown),
    cmocka_unit_test_setup_teardown (test_poison_entries_are_dead_lettered, setup, teardown),
    cmocka_unit_test_setup_teardown (test_released_job_dies_after_max_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_expired_job_dies_after_max_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_drain_does_not_spend_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_cancel, setup, teardown),
    cmocka_unit_test_setup_teardown (test_restart_rereads_own_pending, setup, teardown),
    cmocka_unit_test_setup_teardown (test_reconnects_after_a_broken_connection, setup, teardown),
    cmocka_unit_test (test_unreachable_and_bad_urls),
    cmocka_unit_test_setup_teardown (test_raw_producers, setup, teardown),
    cmocka_unit_test_setup_teardown (test_finished_entry_is_only_acknowledged, setup, teardown),
    cmocka_unit_test_setup_teardown (test_stream_deleted_under_the_handle, setup, teardown),
    cmocka_unit_test_setup_teardown (test_list_and_depth, setup, teardown),
    cmocka_unit_test (test_url_grammar),
  };
  int ret;

  g_empty = json_object ();
  ret = cmocka_run_group_tests (tests, NULL, NULL);
  json_decref (g_empty);
  return ret;
}
