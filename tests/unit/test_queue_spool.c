/* test_queue_spool.c - the `spool:DIR` queue driver: full cycle, two real
 * processes on one spool, lease expiry and fencing, a paused runner, poison
 * messages, attempts, cancel, crash recovery, files that are not ours */
#include "support.h"

#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "queue/queue_int.h" /* queue__wall_ms */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static json_t *g_empty; /* an empty record */

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

struct fixture
{
  char *dir;
  char *url;
};

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  f->dir = t_tmpdir ();
  if (asprintf (&f->url, "spool:%s/spool", f->dir) < 0)
    abort ();
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;
  t_tmpdir_free (f->dir);
  free (f->url);
  free (f);
  return 0;
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

static void
enqueue (struct queue *q, const char *id)
{
  struct job_request *j = mkjob (id);
  enum queue_state ex;
  bvm_error_t err = NULL;
  char *mid = NULL;

  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  free (mid);
  job_free (j);
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

static size_t
count_files (const char *dir, const char *suffix)
{
  char *out = t_sh_out ("ls -A '%s' | grep -c -- '%s$' || true", dir, suffix);
  size_t n = (size_t) strtoul (out, NULL, 10);
  free (out);
  return n;
}

static void
test_full_cycle (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "runner-1", 0, 0);
  struct queue_msg *m;
  bvm_error_t err = NULL;
  json_t *doc, *rec;
  uint64_t queued, running;
  char path[4096];

  enqueue (q, "d-1");
  snprintf (path, sizeof path, "%s/spool/new/app1+d-1.json", f->dir);
  assert_int_equal (access (path, F_OK), 0);
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued, 1);
  assert_int_equal (running, 0);
  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "queued");
  json_decref (doc);

  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "d-1");
  assert_string_equal (m->msg_id, "app1+d-1.json");
  assert_string_equal (m->owner, "runner-1");
  assert_string_equal (m->job->commit, COMMIT);
  assert_int_equal (m->attempt, 1);
  assert_false (m->redelivered);
  assert_true (m->lease_until_ms > queue__wall_ms ());
  assert_null (lease (q, 0)); /* nothing else */
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued, 0);
  assert_int_equal (running, 1);
  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "running");
  assert_string_equal (jstr (doc, "owner"), "runner-1");
  assert_int_equal (jint (doc, "attempt"), 1);
  json_decref (doc);

  assert_ok (queue_heartbeat (q, m, &err), &err);
  assert_ok (queue_check_fence (q, m, &err), &err);
  assert_false (queue_cancel_requested (q, m));
  rec = json_pack ("{s:s,s:s}", "job", "d-1", "status", "success");
  assert_ok (queue_complete (q, m, rec, &err), &err);
  json_decref (rec);
  /* a second complete of the same attempt is fenced: it no longer holds the job */
  assert_fails_with (queue_complete (q, m, g_empty, &err), &err, "no longer leased");
  queue_msg_free (m);

  doc = get (q, "d-1");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_int_equal (jint (doc, "attempt"), 1);
  assert_string_equal (jstr (json_object_get (doc, "record"), "status"), "success");
  assert_string_equal (jstr (json_object_get (doc, "request"), "commit"), COMMIT);
  json_decref (doc);
  snprintf (path, sizeof path, "%s/spool/cur", f->dir);
  assert_int_equal (count_files (path, ""), 0);
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued + running, 0);
  assert_ok (queue_list (&doc, q, 0, &err), &err);
  assert_int_equal (json_array_size (json_object_get (doc, "done")), 1);
  assert_string_equal (jstr (json_array_get (json_object_get (doc, "done"), 0), "job"), "d-1");
  json_decref (doc);
  assert_null (get (q, "nope"));
  assert_fails_with (queue_get (&doc, q, "../x", &err), &err, "not a valid job key");
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
  struct queue_msg *m;
  enum queue_state ex;
  bvm_error_t err = NULL;
  char *mid = NULL;
  json_t *doc;

  enqueue (q, "d-2");
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_QUEUED);
  assert_string_equal (mid, "app1+d-2.json");
  free (mid);
  m = lease (q, 0);
  assert_non_null (m);
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_RUNNING);
  free (mid);
  assert_null (lease (q, 0));
  assert_ok (queue_dead_letter (q, m, "broken beyond repair", NULL, &err), &err);
  queue_msg_free (m);
  doc = get (q, "d-2");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "broken beyond repair");
  json_decref (doc);
  /* a dead job may come back; its old dead letter is archived */
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_NONE);
  free (mid);
  m = lease (q, 0);
  assert_non_null (m);
  assert_int_equal (m->attempt, 1);
  assert_ok (queue_complete (q, m, g_empty, &err), &err);
  queue_msg_free (m);
  assert_ok (queue_enqueue (&mid, &ex, q, j, &err), &err);
  assert_int_equal (ex, QUEUE_STATE_DONE);
  free (mid);
  {
    char *out = t_sh_out ("ls '%s/spool/dead' | grep -c '^app1+d-2~'", f->dir);
    assert_string_equal (out, "2"); /* the .json and the .msg, archived */
    free (out);
  }
  job_free (j);
  queue_close (q);
}

/* --- workers in real processes ----------------------------------------- */

/* Lease and complete until the queue is empty. Each run holds an O_EXCL
 * marker file, so two holders of one job at once are caught; each completion
 * is appended to `log`. Exit status: 0 fine, 3 two holders, 4 queue error. */
static int
worker (const char *url, const char *consumer, const char *marks, const char *log,
        int64_t lease_ms)
{
  struct queue_opts o = QUEUE_OPTS_INIT;
  struct queue *q = NULL;
  bvm_error_t err = NULL;
  int64_t give_up = now_ms () + 30000;
  int status = 0;

  o.consumer = consumer;
  o.lease_ms = lease_ms;
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
      rec = json_pack ("{s:s,s:i,s:i,s:s}", "job", m->job_id, "pid", (int) getpid (), "attempt",
                       (int) m->attempt, "consumer", consumer);
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

/* Run two workers in two processes and check every job finished exactly
 * once, by one of them, with attempt `want_attempt`. */
static void
run_two_workers (struct fixture *f, struct queue *q, int njobs, int64_t lease_ms,
                 unsigned want_attempt)
{
  char marks[4096], log[4096];
  pid_t pids[2];
  int done_by[2] = { 0, 0 };

  snprintf (marks, sizeof marks, "%s/marks", f->dir);
  snprintf (log, sizeof log, "%s/completions", f->dir);
  mkdir (marks, 0700);
  unlink (log);
  for (int w = 0; w < 2; w++)
    {
      char consumer[32];
      snprintf (consumer, sizeof consumer, "worker-%d", w);
      pids[w] = fork ();
      assert_true (pids[w] >= 0);
      if (pids[w] == 0)
        _exit (worker (f->url, consumer, marks, log, lease_ms));
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
  for (int i = 0; i < njobs; i++)
    {
      char id[32], *n;
      json_t *doc, *rec;
      snprintf (id, sizeof id, "job-%02d", i);
      n = t_sh_out ("grep -c '^%s ' '%s' || true", id, log);
      if (strcmp (n, "1") != 0)
        fail_msg ("job %s completed %s times", id, n);
      free (n);
      doc = get (q, id);
      assert_non_null (doc);
      assert_string_equal (jstr (doc, "state"), "done");
      assert_int_equal (jint (doc, "attempt"), want_attempt);
      rec = json_object_get (doc, "record");
      assert_int_equal (jint (rec, "attempt"), want_attempt);
      if (jint (rec, "pid") == pids[0])
        done_by[0]++;
      else if (jint (rec, "pid") == pids[1])
        done_by[1]++;
      else
        fail_msg ("job %s was completed by pid %d, not a worker", id, (int) jint (rec, "pid"));
      json_decref (doc);
    }
  assert_int_equal (done_by[0] + done_by[1], njobs);
}

static void
test_two_processes_twenty_jobs (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "producer", 0, 0);
  bvm_error_t err = NULL;
  uint64_t queued, running;

  for (int i = 0; i < 20; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "job-%02d", i);
      enqueue (q, id);
    }
  run_two_workers (f, q, 20, 60000, 1);
  assert_ok (queue_depth (&queued, &running, q, &err), &err);
  assert_int_equal (queued + running, 0);
  queue_close (q);
}

/* Ten jobs whose holder died: two processes race to take the expired leases
 * over; each job must go to exactly one of them, as attempt 2. */
static void
test_takeover_race_two_processes (void **state)
{
  struct fixture *f = *state;
  /* leases long enough that none expires while the ten are taken, even on
   * a loaded machine (an expired one would be taken again, as attempt 2) */
  struct queue *dead = open_q (f->url, "dies", 1500, 0);

  for (int i = 0; i < 10; i++)
    {
      char id[32];
      snprintf (id, sizeof id, "job-%02d", i);
      enqueue (dead, id);
    }
  for (int i = 0; i < 10; i++)
    {
      struct queue_msg *m = lease (dead, 0);
      assert_non_null (m);
      queue_msg_free (m); /* never completed: the holder "dies" */
    }
  queue_close (dead);
  sleep_ms (1600);
  dead = open_q (f->url, "checker", 60000, 0);
  run_two_workers (f, dead, 10, 60000, 2);
  queue_close (dead);
}

static void
test_lease_expiry_fences_the_old_holder (void **state)
{
  struct fixture *f = *state;
  struct queue *a = open_q (f->url, "host-a", 1000, 0);
  struct queue *b = open_q (f->url, "host-b", 1000, 0);
  struct queue_msg *ma, *mb;
  bvm_error_t err = NULL;
  json_t *doc, *hist;

  enqueue (a, "d-3");
  ma = lease (a, 0);
  assert_non_null (ma);
  /* expired, nobody took it yet: not safe to push, but a heartbeat wins it back */
  sleep_ms (1100);
  assert_fails_with (queue_check_fence (a, ma, &err), &err, "expired");
  assert_ok (queue_heartbeat (a, ma, &err), &err);
  assert_ok (queue_check_fence (a, ma, &err), &err);
  assert_null (lease (b, 0));

  sleep_ms (1100); /* a stops heartbeating */
  mb = lease (b, 0);
  assert_non_null (mb);
  assert_string_equal (mb->job_id, "d-3");
  assert_int_equal (mb->attempt, 2);
  assert_true (mb->redelivered);
  assert_string_equal (mb->owner, "host-b");

  assert_fails_with (queue_check_fence (a, ma, &err), &err, "attempt 2 (`host-b`) holds the job");
  assert_int_equal (queue_heartbeat (a, ma, &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_FENCED);
  bvm_error_free (&err);
  assert_int_equal (queue_complete (a, ma, g_empty, &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_FENCED);
  bvm_error_free (&err);
  assert_int_equal (queue_release (a, ma, "x", &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_FENCED);
  bvm_error_free (&err);
  assert_int_equal (queue_dead_letter (a, ma, "x", NULL, &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_FENCED);
  bvm_error_free (&err);

  assert_ok (queue_check_fence (b, mb, &err), &err);
  {
    json_t *rec = json_pack ("{s:s}", "status", "success");
    assert_ok (queue_complete (b, mb, rec, &err), &err);
    json_decref (rec);
  }
  doc = get (a, "d-3");
  assert_string_equal (jstr (doc, "state"), "done");
  assert_int_equal (jint (doc, "attempt"), 2);
  assert_string_equal (jstr (doc, "owner"), "host-b");
  hist = json_object_get (doc, "history");
  assert_int_equal (json_array_size (hist), 2);
  assert_string_equal (jstr (json_array_get (hist, 0), "outcome"), "lease expired");
  assert_string_equal (jstr (json_array_get (hist, 0), "owner"), "host-a");
  assert_string_equal (jstr (json_array_get (hist, 1), "outcome"), "done");
  json_decref (doc);
  queue_msg_free (ma);
  queue_msg_free (mb);
  queue_close (a);
  queue_close (b);
}

/* A runner stopped (SIGSTOP) past its lease: when it wakes up, its
 * heartbeat and its complete are fenced off and the newer attempt wins. */
static void
paused_runner (const char *url)
{
  int ready[2];
  pid_t pid;
  char c;
  struct queue *b;
  struct queue_msg *mb;
  bvm_error_t err = NULL;
  json_t *doc, *rec;
  int st;

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
      if (queue_open (&q, url, &o, &err) < 0 || queue_lease (&m, q, 1000, &err) < 0 || m == NULL)
        _exit (10);
      if (write (ready[1], "x", 1) != 1)
        _exit (11);
      end = now_ms () + 5000;
      while (now_ms () < end)
        {
          sleep_ms (50);
          if (queue_heartbeat (q, m, &err) < 0)
            {
              json_t *r = json_pack ("{s:s}", "status", "success");
              if (bvm_error_get_code (&err) != BVM_E_FENCED)
                _exit (12);
              bvm_error_free (&err);
              /* the late push: must be refused */
              if (queue_check_fence (q, m, &err) == 0)
                _exit (13);
              bvm_error_free (&err);
              if (queue_complete (q, m, r, &err) == 0 || bvm_error_get_code (&err) != BVM_E_FENCED)
                _exit (14);
              _exit (0);
            }
        }
      _exit (15); /* never fenced */
    }
  close (ready[1]);
  assert_int_equal (read (ready[0], &c, 1), 1);
  close (ready[0]);
  kill (pid, SIGSTOP);
  b = open_q (url, "awake", 300, 0);
  mb = lease (b, 2000);
  assert_non_null (mb);
  assert_int_equal (mb->attempt, 2);
  kill (pid, SIGCONT);
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st));
  if (WEXITSTATUS (st) != 0)
    fail_msg ("the paused runner exited %d (see the child's checks)", WEXITSTATUS (st));
  rec = json_pack ("{s:s}", "status", "success");
  assert_ok (queue_complete (b, mb, rec, &err), &err);
  json_decref (rec);
  doc = get (b, mb->job_id);
  assert_int_equal (jint (doc, "attempt"), 2);
  assert_string_equal (jstr (doc, "owner"), "awake");
  json_decref (doc);
  queue_msg_free (mb);
  queue_close (b);
}

static void
test_paused_runner_is_fenced (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "producer", 0, 0);
  enqueue (q, "d-4");
  queue_close (q);
  paused_runner (f->url);
}

static void
write_new (struct fixture *f, const char *name, const char *content)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/spool/new/%s", f->dir, name);
  t_write (path, content);
  chmod (path, 0600);
}

static json_t *
dead_record (struct fixture *f, const char *file)
{
  char path[4096];
  json_t *doc = NULL;
  bvm_error_t err = NULL;
  snprintf (path, sizeof path, "%s/spool/dead/%s", f->dir, file);
  assert_ok (jsonx_parse_file (&doc, path, 1 << 20, &err), &err);
  return doc;
}

static void
test_poison_messages_are_dead_lettered (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_msg *m;
  char *big, *other, *out;
  json_t *doc, *list;
  size_t n;
  bvm_error_t err = NULL;

  write_new (f, "app1+badjson.json", "{\"id\": \"badjson\", ");
  write_new (f, "app1+badfield.json",
             "{\"id\":\"badfield\",\"app\":\"app1\",\"repo\":\"file:///srv/a.git\","
             "\"commit\":\"abc\",\"ref\":\"refs/heads/main\"}");
  big = calloc (1, 70 * 1024 + 1);
  memset (big, ' ', 70 * 1024);
  write_new (f, "app1+big.json", big);
  free (big);
  other = request_text ("someone-else");
  write_new (f, "app1+mismatch.json", other);
  free (other);
  write_new (f, "bad name!", "{}");
  sleep_ms (20);
  enqueue (q, "good");

  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "good");
  assert_null (lease (q, 0));
  queue_msg_free (m);

  doc = dead_record (f, "app1+badjson.json");
  assert_non_null (strstr (jstr (doc, "reason"), "not valid JSON"));
  assert_string_equal (jstr (doc, "state"), "dead");
  json_decref (doc);
  doc = dead_record (f, "app1+badfield.json");
  assert_non_null (strstr (jstr (doc, "reason"), "commit"));
  json_decref (doc);
  doc = dead_record (f, "app1+big.json");
  assert_non_null (strstr (jstr (doc, "reason"), "larger than 65536 bytes"));
  json_decref (doc);
  doc = dead_record (f, "app1+mismatch.json");
  assert_non_null (strstr (jstr (doc, "reason"), "do not match"));
  json_decref (doc);
  /* the message files are kept as they were, next to the reason */
  out = t_sh_out ("cat '%s/spool/dead/app1+badjson.msg'", f->dir);
  assert_string_equal (out, "{\"id\": \"badjson\", ");
  free (out);
  /* a name that is no job id gets a generated one */
  out = t_sh_out ("grep -l 'is not `<app>+<job id>.json`' '%s'/spool/dead/~*.json | wc -l",
                  f->dir);
  assert_string_equal (out, "1");
  free (out);
  doc = get (q, "badfield");
  assert_string_equal (jstr (doc, "state"), "dead");
  json_decref (doc);
  assert_ok (queue_list (&list, q, 0, &err), &err);
  n = json_array_size (json_object_get (list, "dead"));
  assert_int_equal (n, 5);
  json_decref (list);
  queue_close (q);
}

static void
test_released_job_dies_after_max_attempts (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 3);
  bvm_error_t err = NULL;
  json_t *doc;

  enqueue (q, "d-5");
  for (unsigned i = 1; i <= 3; i++)
    {
      struct queue_msg *m = lease (q, 0);
      assert_non_null (m);
      assert_int_equal (m->attempt, i);
      assert_int_equal (m->redelivered, i > 1);
      assert_ok (queue_release (q, m, "registry unreachable", &err), &err);
      queue_msg_free (m);
      doc = get (q, "d-5");
      assert_string_equal (jstr (doc, "state"), i < 3 ? "queued" : "dead");
      json_decref (doc);
    }
  assert_null (lease (q, 0));
  doc = get (q, "d-5");
  assert_string_equal (jstr (doc, "reason"), "gave up after 3 attempts: registry unreachable");
  assert_int_equal (json_array_size (json_object_get (doc, "history")), 3);
  json_decref (doc);
  queue_close (q);
}

static void
test_expired_job_dies_after_max_attempts (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 150, 2);
  struct queue_msg *m;
  json_t *doc;

  enqueue (q, "d-6");
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

  enqueue (q, "d-10");
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
  enqueue (q, "d-11");
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

  enqueue (q, "queued-1");
  assert_ok (queue_cancel (&was_running, q, "app1+queued-1", &err), &err);
  assert_false (was_running);
  assert_null (lease (q, 0));
  doc = get (q, "queued-1");
  assert_string_equal (jstr (doc, "state"), "dead");
  assert_string_equal (jstr (doc, "reason"), "canceled before it ran");
  json_decref (doc);

  enqueue (q, "running-1");
  m = lease (q, 0);
  assert_non_null (m);
  assert_false (queue_cancel_requested (q, m));
  assert_ok (queue_cancel (&was_running, q, "app1+running-1", &err), &err);
  assert_true (was_running);
  assert_true (queue_cancel_requested (q, m));
  doc = get (q, "running-1");
  assert_true (json_is_true (json_object_get (doc, "cancel")));
  json_decref (doc);
  /* the runner stops and gives the job back: it is not retried */
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

/* A holder that died (a real process that exits without finishing) loses
 * its lease after lease_ms, not before. */
static void
test_restart_recovery (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 1000, 0);
  struct queue_msg *m;
  pid_t pid;
  int st;

  enqueue (q, "d-7");
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      struct queue_opts o = QUEUE_OPTS_INIT;
      struct queue *c = NULL;
      struct queue_msg *cm = NULL;
      bvm_error_t err = NULL;
      o.consumer = "crasher";
      o.lease_ms = 1000;
      if (queue_open (&c, f->url, &o, &err) < 0 || queue_lease (&cm, c, 0, &err) < 0 || cm == NULL)
        _exit (1);
      _exit (0); /* "crash" holding the lease */
    }
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_int_equal (WEXITSTATUS (st), 0);
  assert_null (lease (q, 0)); /* still leased */
  m = lease (q, 3000);
  assert_non_null (m);
  assert_int_equal (m->attempt, 2);
  queue_msg_free (m);
  queue_close (q);
}

/* The terminal record was written and the runner died before the ack: the
 * job is acknowledged on the next pass and never runs again. */
static void
test_record_without_ack_is_not_rerun (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 150, 0);
  struct queue_msg *m;
  char path[4096];
  json_t *doc;

  enqueue (q, "d-8");
  m = lease (q, 0);
  assert_non_null (m);
  snprintf (path, sizeof path, "%s/spool/done/app1+d-8.json", f->dir);
  t_write (
      path,
      "{\"job\":\"d-8\",\"state\":\"done\",\"attempt\":1,\"record\":{\"status\":\"success\"}}");
  chmod (path, 0600);
  queue_msg_free (m);
  sleep_ms (200);
  assert_null (lease (q, 0));
  snprintf (path, sizeof path, "%s/spool/cur", f->dir);
  assert_int_equal (count_files (path, ""), 0);
  doc = get (q, "d-8");
  assert_string_equal (jstr (doc, "state"), "done");
  json_decref (doc);
  queue_close (q);
}

static void
test_ignores_links_foreign_files_and_fifos (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  char path[4096], target[4096];
  char *req = request_text ("linked");
  struct queue_msg *m;

  snprintf (target, sizeof target, "%s/outside.json", f->dir);
  t_write (target, req);
  free (req);
  snprintf (path, sizeof path, "%s/spool/new/linked.json", f->dir);
  assert_int_equal (symlink (target, path), 0);
  snprintf (path, sizeof path, "%s/spool/new/fifo.json", f->dir);
  assert_int_equal (mkfifo (path, 0600), 0);
  req = request_text ("foreign");
  write_new (f, "foreign.json", req);
  free (req);
  snprintf (path, sizeof path, "%s/spool/new/foreign.json", f->dir);
  if (geteuid () == 0)
    assert_int_equal (chown (path, 65534, 65534), 0);
  else
    unlink (path);

  assert_null (lease (q, 0));
  assert_int_equal (queue_ignored_count (q), geteuid () == 0 ? 3 : 2);
  /* the count is per pass, not a running total */
  assert_null (lease (q, 0));
  assert_int_equal (queue_ignored_count (q), geteuid () == 0 ? 3 : 2);
  /* untouched */
  snprintf (path, sizeof path, "%s/spool/new/linked.json", f->dir);
  {
    struct stat st;
    assert_int_equal (lstat (path, &st), 0);
    assert_true (S_ISLNK (st.st_mode));
  }
  if (geteuid () == 0)
    {
      snprintf (path, sizeof path, "%s/spool/new/foreign.json", f->dir);
      assert_int_equal (access (path, F_OK), 0);
    }
  assert_int_equal (access (target, F_OK), 0);
  snprintf (path, sizeof path, "%s/spool/dead", f->dir);
  assert_int_equal (count_files (path, ""), 0);

  /* a real job next to them still runs */
  enqueue (q, "real");
  m = lease (q, 0);
  assert_non_null (m);
  assert_string_equal (m->job_id, "real");
  queue_msg_free (m);
  queue_close (q);
}

static void
test_open_refuses_shared_directories (void **state)
{
  struct fixture *f = *state;
  struct queue *q = open_q (f->url, "r", 0, 0);
  struct queue_opts o = QUEUE_OPTS_INIT;
  bvm_error_t err = NULL;
  char path[4096], *url = NULL;

  queue_close (q);
  snprintf (path, sizeof path, "%s/spool/new", f->dir);
  chmod (path, 0777);
  assert_fails_with (queue_open (&q, f->url, NULL, &err), &err, "group and others cannot write");
  chmod (path, 0700);
  q = open_q (f->url, "r", 0, 0);
  queue_close (q);
  assert_fails_with (queue_open (&q, "spool:relative/dir", NULL, &err), &err, "absolute");
  assert_fails_with (queue_open (&q, "amqp://x", NULL, &err), &err, "must be `spool:/dir`");
  /* the config refused control characters in the directory, the driver did not */
  assert_fails_with (queue_open (&q, "spool:/tmp/a\nb", NULL, &err), &err, "absolute directory");
  assert_null (queue_url_check ("spool:/var/lib/buildvm/spool"));
  assert_null (queue_url_check ("spool:/"));
  assert_non_null (strstr (queue_url_check ("spool:"), "absolute directory"));
  assert_non_null (strstr (queue_url_check ("spool:rel"), "absolute directory"));
  assert_non_null (strstr (queue_url_check ("spool:/a\x7f"), "absolute directory"));
  assert_non_null (strstr (queue_url_check ("spool:/a\xc2\x9b"), "absolute directory"));
  assert_non_null (strstr (queue_url_check ("spool"), "must be `spool:/dir`"));
  o.consumer = "has space";
  assert_fails_with (queue_open (&q, f->url, &o, &err), &err, "consumer name");
  if (asprintf (&url, "spool:%s/spool/lock/x", f->dir) < 0)
    abort ();
  assert_int_equal (queue_open (&q, url, NULL, &err) < 0, 1);
  bvm_error_free (&err);
  free (url);
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

  enqueue (q, "a-1");
  sleep_ms (15);
  enqueue (q, "a-2");
  sleep_ms (15);
  enqueue (q, "a-3");
  t0 = queue__wall_ms ();
  m = lease (q, 0);
  assert_string_equal (m->job_id, "a-1"); /* oldest first */
  assert_ok (queue_depth (&queued, &nrun, q, &err), &err);
  assert_int_equal (queued, 2);
  assert_int_equal (nrun, 1);
  assert_ok (queue_list (&doc, q, 0, &err), &err);
  assert_int_equal (json_array_size (json_object_get (doc, "queued")), 2);
  assert_string_equal (jstr (json_array_get (json_object_get (doc, "queued"), 0), "job"), "a-2");
  running = json_array_get (json_object_get (doc, "running"), 0);
  assert_string_equal (jstr (running, "job"), "a-1");
  assert_string_equal (jstr (running, "owner"), "lister");
  assert_int_equal (jint (running, "attempt"), 1);
  assert_true (jint (running, "lease_until") > queue__wall_ms ());
  /* when the attempt began, not when its lease ends */
  assert_true (jint (running, "started_at") >= t0);
  assert_true (jint (running, "started_at") <= queue__wall_ms ());
  json_decref (doc);
  assert_ok (queue_list (&doc, q, 1, &err), &err);
  assert_int_equal (json_array_size (json_object_get (doc, "queued")), 1);
  json_decref (doc);
  queue_msg_free (m);
  queue_close (q);
}

/* queue__show is str_escape with the queue's 64-byte cut */
static void
test_show (void **state)
{
  char buf[QUEUE__SHOW_SIZE], long_name[100];
  (void) state;
  assert_string_equal (queue__show (buf, sizeof buf, "a`b\\\n\x9b", 6), "a\\x60b\\x5c\\x0a\\x9b");
  memset (long_name, 'x', sizeof long_name);
  queue__show (buf, sizeof buf, long_name, sizeof long_name);
  assert_int_equal (strlen (buf), 64 + 3);
  assert_string_equal (buf + 64, "...");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_full_cycle, setup, teardown),
    cmocka_unit_test_setup_teardown (test_enqueue_idempotent, setup, teardown),
    cmocka_unit_test_setup_teardown (test_same_id_two_apps, setup, teardown),
    cmocka_unit_test_setup_teardown (test_two_processes_twenty_jobs, setup, teardown),
    cmocka_unit_test_setup_teardown (test_takeover_race_two_processes, setup, teardown),
    cmocka_unit_test_setup_teardown (test_lease_expiry_fences_the_old_holder, setup, teardown),
    cmocka_unit_test_setup_teardown (test_paused_runner_is_fenced, setup, teardown),
    cmocka_unit_test_setup_teardown (test_poison_messages_are_dead_lettered, setup, teardown),
    cmocka_unit_test_setup_teardown (test_released_job_dies_after_max_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_expired_job_dies_after_max_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_drain_does_not_spend_attempts, setup, teardown),
    cmocka_unit_test_setup_teardown (test_cancel, setup, teardown),
    cmocka_unit_test_setup_teardown (test_restart_recovery, setup, teardown),
    cmocka_unit_test_setup_teardown (test_record_without_ack_is_not_rerun, setup, teardown),
    cmocka_unit_test_setup_teardown (test_ignores_links_foreign_files_and_fifos, setup, teardown),
    cmocka_unit_test_setup_teardown (test_open_refuses_shared_directories, setup, teardown),
    cmocka_unit_test_setup_teardown (test_list_and_depth, setup, teardown),
    cmocka_unit_test (test_show),
  };
  int ret;

  g_empty = json_object ();
  ret = cmocka_run_group_tests (tests, NULL, NULL);
  json_decref (g_empty);
  return ret;
}
