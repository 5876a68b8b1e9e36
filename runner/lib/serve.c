/* serve.c - the runner daemon, see serve.h */
#include "serve.h"
#include "fault.h"
#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "proc.h"
#include "queue.h"
#include "util.h"
#include "workdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TICK_MS 200
#define DEPTH_EVERY_MS 2000
#define MAX_WORKERS 1024

/* worker exit codes: how the job left the queue */
enum
{
  W_COMPLETED = 0, /* terminal record written and acknowledged */
  W_RELEASED = 10, /* given back for another attempt (or dead-lettered at the limit) */
  W_DEAD = 11,     /* dead-lettered (canceled) */
  W_FENCED = 12,   /* a newer attempt owns the job: nothing written */
  W_DRAINED = 13,  /* given back because the daemon is stopping */
  W_QUEUE_ERROR = 14,
  W_ACK_FAILED = 15, /* succeeded (tagged, record written), but the ack failed */
};

struct worker
{
  pid_t pid;
  struct queue_msg *m;
  int64_t started_ms;
  int64_t next_heartbeat_ms;
  int64_t deadline_ms; /* killed past it (config_job_seconds) */
  bool cancel_sent, fenced_sent, term_sent, killed;
  char journal[PATH_MAX];
};

struct serve
{
  const struct serve_opts *o;
  const struct runner_config *cfg;
  char name[QUEUE_CONSUMER_MAX + 1];
  char dir[PATH_MAX]; /* <state>/serve/<name> */
  int lock_fd;
  struct queue_opts qo;
  struct queue *q;
  struct metrics *metrics;
  struct worker workers[MAX_WORKERS];
  unsigned n_workers, max_workers;
  pid_t daemon_pid;
};

/* --- helpers ------------------------------------------------------------------ */

/* Start time of a process in clock ticks since boot (field 22 of
 * /proc/PID/stat): with the pid it identifies a process across pid reuse. */
static int
proc_start_time (pid_t pid, uint64_t *out)
{
  char path[64], buf[1024];
  const char *p;
  ssize_t n;
  int fd;

  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  /* the command name may hold spaces and parentheses: skip past the last ')' */
  p = strrchr (buf, ')');
  if (p == NULL)
    return -1;
  p++;
  for (int field = 3; field < 22 && p; field++)
    {
      p = strchr (p + 1, ' ');
    }
  if (p == NULL)
    return -1;
  {
    char num[32];
    size_t k = 0;
    p++;
    while (*p >= '0' && *p <= '9' && k < sizeof num - 1)
      num[k++] = *p++;
    num[k] = '\0';
    return parse_u64 (num, out);
  }
}

static unsigned
cpu_count (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned) n : 1;
}

static uint64_t
mem_available_mib (void)
{
  FILE *f = fopen ("/proc/meminfo", "re");
  char line[256];
  uint64_t kib = 0;
  if (f == NULL)
    return 1024;
  while (fgets (line, sizeof line, f))
    if (strncmp (line, "MemAvailable:", 13) == 0)
      {
        char *p = line + 13, num[32];
        size_t k = 0;
        while (*p == ' ')
          p++;
        while (*p >= '0' && *p <= '9' && k < sizeof num - 1)
          num[k++] = *p++;
        num[k] = '\0';
        if (parse_u64 (num, &kib) < 0)
          kib = 0;
      }
  fclose (f);
  return kib / 1024;
}

unsigned
serve_default_concurrency (const struct runner_config *cfg)
{
  /* each VM: its memory plus ~256 MiB for QEMU itself and the runner's
   * share; keep 512 MiB for the host */
  uint64_t per = cfg->defaults.memory_mib + 256;
  uint64_t avail = mem_available_mib ();
  uint64_t by_mem = avail > 512 ? (avail - 512) / per : 1;
  unsigned n = cpu_count ();
  if (by_mem < n)
    n = (unsigned) by_mem;
  return n ? n : 1;
}

/* --- the journal -------------------------------------------------------------- */

static int
journal_write (struct worker *w, pid_t vmm, bvm_error_t *err)
{
  uint64_t start = 0;
  json_t *j;
  int ret;

  if (vmm > 0 && proc_start_time (vmm, &start) < 0)
    start = 0;
  j = json_pack ("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "job", w->m->job_id, "msg_id",
                 w->m->msg_id, "owner", w->m->owner, "body", w->m->body, "attempt",
                 (json_int_t) w->m->attempt, "last_attempt", (json_int_t) w->m->last_attempt,
                 "worker", (json_int_t) w->pid, "vmm", (json_int_t) vmm, "vmm_start",
                 (json_int_t) start);
  if (j == NULL)
    return bvm_error (err, ENOMEM, "journal");
  ret = jsonx_write_file (w->journal, j, err);
  json_decref (j);
  return ret;
}

/* Kill the VMM a journal names, if it is still the process recorded there
 * (pid and start time: pids are reused). */
static bool
journal_kill_vmm (json_int_t vmm, json_int_t vmm_start)
{
  uint64_t st = 0;
  if (vmm <= 0 || proc_start_time ((pid_t) vmm, &st) < 0 || (json_int_t) st != vmm_start)
    return false;
  return kill ((pid_t) vmm, SIGKILL) == 0;
}

/* A previous instance under our name died: kill what it left running, give
 * its jobs back to the queue, remove its files. */
static int
journal_recover (struct serve *s, bvm_error_t *err)
{
  char jdir[PATH_MAX + 16];
  struct dirent *de;
  DIR *d;
  unsigned n = 0, reaped = 0;

  if (snprintf_checked (jdir, sizeof jdir, "%s/journal", s->dir) < 0)
    return bvm_error (err, ENAMETOOLONG, "journal path");
  if (fs_mkdir_p (jdir, 0700, err) < 0)
    return -1;
  d = opendir (jdir);
  if (d == NULL)
    return bvm_error (err, errno, "open `%s`", jdir);
  while ((de = readdir (d)) != NULL)
    {
      char path[PATH_MAX + 300];
      json_t *j = NULL;
      bvm_error_t e = NULL;
      struct queue_msg m = { 0 };
      json_int_t vmm = 0, vmm_start = 0, attempt = 0, last = 0;
      char key[JOB_KEY_MAX + 1];
      const char *job = NULL, *msg_id = NULL, *owner = NULL, *body = NULL;

      if (de->d_name[0] == '.' || strstr (de->d_name, ".json") == NULL
          || strstr (de->d_name, ".tmp") != NULL)
        continue;
      if (snprintf_checked (path, sizeof path, "%s/%s", jdir, de->d_name) < 0)
        continue;
      if (jsonx_parse_file (&j, path, 1 << 20, &e) < 0
          || json_unpack (j, "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "job", &job, "msg_id",
                          &msg_id, "owner", &owner, "body", &body, "attempt", &attempt,
                          "last_attempt", &last, "vmm", &vmm, "vmm_start", &vmm_start)
                 != 0)
        {
          log_warn ("event=journal.unreadable file=%s error=\"%s\"", path, bvm_error_msg (&e));
          bvm_error_free (&e);
          if (j)
            json_decref (j);
          unlink (path);
          continue;
        }
      n++;
      /* the VMM, if it is still the process we recorded */
      if (journal_kill_vmm (vmm, vmm_start))
        {
          reaped++;
          log_warn ("job=%s event=recover.vmm.killed pid=%lld", job, (long long) vmm);
        }
      /* its lease: give the job back now rather than when the lease runs out */
      m.msg_id = (char *) msg_id;
      m.job_id = (char *) job;
      m.owner = (char *) owner;
      m.body = (char *) body;
      m.len = strlen (body);
      m.attempt = (unsigned) attempt;
      m.last_attempt = (unsigned) last;
      if (job_parse (&m.job, body, m.len, &e) == 0 && job_key (key, m.job->app, m.job->id) == 0)
        {
          m.key = key;
          if (queue_release (s->q, &m, "the runner died while running it", &e) < 0)
            {
              log_info ("job=%s event=recover.release.skipped reason=\"%s\"", job,
                        bvm_error_msg (&e));
              bvm_error_free (&e);
            }
          else
            log_warn ("job=%s event=recover.released attempt=%u", job, m.attempt);
          job_free (m.job);
        }
      else
        bvm_error_free (&e);
      json_decref (j);
      unlink (path);
    }
  closedir (d);
  {
    unsigned dirs = 0;
    if (workdir_reap_stale (s->cfg->work_dir, &dirs, err) < 0)
      {
        log_warn ("event=recover.workdirs error=\"%s\"", bvm_error_msg (err));
        bvm_error_free (err);
      }
    if (n || dirs || reaped)
      log_warn ("event=recover jobs=%u vmms=%u workdirs=%u", n, reaped, dirs);
  }
  return 0;
}

/* --- the worker (a child process per job) ------------------------------------- */

static volatile sig_atomic_t w_cancel;
static int64_t w_vm_started_ms;        /* for the queue-overhead figures in the log */
static volatile sig_atomic_t w_reason; /* SIGUSR1 canceled, SIGUSR2 fenced, SIGTERM drain */

static void
w_on_signal (int sig)
{
  if (w_reason == 0)
    w_reason = sig;
  w_cancel = 1;
}

struct wctx
{
  struct serve *s;
  struct worker *w;
  struct queue *q;
};

static int
w_fence (void *opaque, bvm_error_t *err)
{
  struct wctx *c = opaque;
  if (w_reason == SIGUSR2)
    return bvm_error_code (err, BVM_E_FENCED, 0, "a newer attempt owns job `%s`", c->w->m->job_id);
  if (queue_heartbeat (c->q, c->w->m, err) < 0)
    return -1;
  return queue_check_fence (c->q, c->w->m, err);
}

static void
w_vm_started (void *opaque, pid_t pid)
{
  struct wctx *c = opaque;
  bvm_error_t e = NULL;
  w_vm_started_ms = now_ms ();
  if (journal_write (c->w, pid, &e) < 0)
    {
      log_warn ("job=%s event=journal.failed error=\"%s\"", c->w->m->job_id, bvm_error_msg (&e));
      bvm_error_free (&e);
    }
}

static void
w_phase (void *opaque, const char *name)
{
  struct wctx *c = opaque;
  log_info ("job=%s app=%s event=phase phase=%s", c->w->m->job_id, c->w->m->job->app, name);
}

static bool
retryable (const bvm_error_t *err)
{
  int code = bvm_error_get_code (err);
  /* the registry, the network or the host may be fine next time; a build,
   * a spec or a policy would fail the same way again - and so would a job
   * that ran out of its memory cap (an inflation bomb is in the commit) */
  if (*err != NULL && (*err)->errnum == ENOMEM)
    return false;
  return code == BVM_E_NETWORK || code == BVM_E_IO || code == BVM_E_INTERNAL;
}

/* A lease of a job whose earlier attempt succeeded and lost only its ack
 * (the queue refused it, or the runner died after the record): its record,
 * to acknowledge with instead of building, pushing and tagging again. NULL
 * when there is none, or it is not this very request's success. */
static json_t *
earlier_success (struct serve *s, const struct queue_msg *m)
{
  cleanup_free char *path = NULL;
  cleanup_json json_t *req = NULL;
  json_t *rec = NULL;
  const char *st;
  bvm_error_t e = NULL;

  if (m->attempt <= 1)
    return NULL;
  if (pipeline_record_path (&path, s->cfg, m->job->app, m->job->id, &e) < 0
      || jsonx_parse_file (&rec, path, QUEUE_RECORD_MAX, &e) < 0)
    {
      bvm_error_free (&e);
      return NULL;
    }
  req = job_to_json (m->job);
  st = json_string_value (json_object_get (rec, "status"));
  if (req == NULL || st == NULL || strcmp (st, "succeeded") != 0
      || !json_equal (json_object_get (rec, "request"), req))
    {
      json_decref (rec);
      return NULL;
    }
  return rec;
}

/* Once the tag has moved the job has succeeded, whatever the queue says
 * next: its outcome is never "retry" (that built, pushed and tagged the job
 * again, issue 11). Try the ack a few times, with a minimal record if the
 * queue refuses this one's size; if it still fails, the caller leaves the
 * lease to run out and the next attempt acknowledges with the record on disk
 * (earlier_success) without building. */
static int
ack_success (struct queue *q, struct queue_msg *m, const json_t *record, bvm_error_t *err)
{
  cleanup_json json_t *minimal = NULL;
  const json_t *rec = record;

  for (int i = 0; i < 3; i++)
    {
      if (queue_complete (q, m, rec, err) == 0)
        return 0;
      if (bvm_error_get_code (err) == BVM_E_FENCED)
        return -1;
      if (bvm_error_get_code (err) == BVM_E_LIMIT && minimal == NULL)
        {
          minimal = json_pack ("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:s}", "schema",
                               json_object_get (record, "schema"), "id",
                               json_object_get (record, "id"), "app",
                               json_object_get (record, "app"), "commit",
                               json_object_get (record, "commit"), "status",
                               json_object_get (record, "status"), "image",
                               json_object_get (record, "image"), "record",
                               json_object_get (record, "record"), "note",
                               "the whole record is too large for the queue: see `record`");
          if (minimal != NULL)
            rec = minimal;
        }
      else
        usleep (500 * 1000 * (useconds_t) (i + 1));
      log_warn ("job=%s app=%s event=ack.retry error=\"%s\"", m->job_id, m->job->app,
                bvm_error_msg (err));
      bvm_error_free (err);
    }
  return queue_complete (q, m, rec, err);
}

static void __attribute__ ((noreturn)) worker_main (struct serve *s, struct worker *w)
{
  struct queue *q = NULL;
  struct pipeline_opts po = { 0 };
  struct wctx c = { s, w, NULL };
  struct sigaction sa;
  json_t *record = NULL;
  bvm_error_t err = NULL, qerr = NULL;
  int ret, code, status;
  int64_t t_record, t_ack;
  const struct queue_msg *m = w->m;

  /* never outlive the daemon; a fault point takes the daemon down too */
  if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid () != s->daemon_pid)
    _exit (W_QUEUE_ERROR);
  fault_set_partner (s->daemon_pid);
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = w_on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGUSR1, &sa, NULL);
  sigaction (SIGUSR2, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  signal (SIGINT, SIG_IGN); /* the daemon decides what a ^C means */
  {
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
  }

  /* An inflation bomb or any other runaway allocation fails this job with
   * ENOMEM (not retried: retryable()) instead of taking the host down. */
  if (proc_limit_memory (s->cfg->limits.max_worker_memory_mib, &err) < 0)
    {
      log_warn ("job=%s event=worker.memory_cap error=\"%s\"", m->job_id, bvm_error_msg (&err));
      bvm_error_free (&err);
    }

  /* a handle of our own: the daemon's is not to be shared across fork */
  if (queue_open (&q, s->cfg->queue, &s->qo, &err) < 0)
    {
      log_error ("job=%s event=worker.queue error=\"%s\"", m->job_id, bvm_error_msg (&err));
      _exit (W_QUEUE_ERROR);
    }
  c.q = q;
  if (journal_write (w, 0, &err) < 0)
    {
      log_warn ("job=%s event=journal.failed error=\"%s\"", m->job_id, bvm_error_msg (&err));
      bvm_error_free (&err);
    }

  po.cfg = s->cfg;
  po.attempt = m->attempt;
  po.cancel = &w_cancel;
  po.fence = w_fence;
  po.phase = w_phase;
  po.vm_started = w_vm_started;
  po.opaque = &c;
  record = earlier_success (s, m);
  if (record != NULL)
    {
      log_warn ("job=%s app=%s event=ack.recovered attempt=%u note=\"an earlier attempt "
                "succeeded: acknowledged without building again\"",
                m->job_id, m->job->app, m->attempt);
      ret = 0;
    }
  else
    ret = pipeline_run (&record, m->job, &po, &err);
  t_record = now_ms ();
  code = ret < 0 ? bvm_error_get_code (&err) : 0;

  if (code == BVM_E_FENCED || w_reason == SIGUSR2)
    {
      log_warn ("job=%s app=%s event=fenced attempt=%u", m->job_id, m->job->app, m->attempt);
      status = W_FENCED;
    }
  else if (ret == 0)
    status = ack_success (q, w->m, record, &qerr) < 0 ? W_ACK_FAILED : W_COMPLETED;
  else if (code == BVM_E_CANCELED && w_reason == SIGUSR1)
    status = queue_dead_letter (q, w->m, "canceled by request", record, &qerr) < 0 ? W_QUEUE_ERROR
                                                                                   : W_DEAD;
  else if (code == BVM_E_CANCELED)
    status = queue_drain (q, w->m, &qerr) < 0 ? W_QUEUE_ERROR : W_DRAINED;
  else if (retryable (&err))
    status = queue_release (q, w->m, bvm_error_msg (&err), &qerr) < 0 ? W_QUEUE_ERROR : W_RELEASED;
  else
    status = queue_complete (q, w->m, record, &qerr) < 0 ? W_QUEUE_ERROR : W_COMPLETED;

  if (status == W_QUEUE_ERROR || status == W_ACK_FAILED)
    {
      /* fenced at the very end is not an error: the newer attempt decides */
      if (bvm_error_get_code (&qerr) == BVM_E_FENCED)
        status = W_FENCED;
      log_warn ("job=%s app=%s event=queue.update.failed error=\"%s\"", m->job_id, m->job->app,
                bvm_error_msg (&qerr));
    }
  t_ack = now_ms ();
  /* the queue's share of the job: lease to VM start (minus the job's own
   * checkout, plan and input work, which the record has) and record to ack */
  log_info ("job=%s app=%s event=finished status=%s attempt=%u total_ms=%lld lease_to_vm_ms=%lld "
            "record_to_ack_ms=%lld%s%s%s",
            m->job_id, m->job->app, json_string_value (json_object_get (record, "status")),
            m->attempt, (long long) (t_ack - w->started_ms),
            (long long) (w_vm_started_ms ? w_vm_started_ms - w->started_ms : -1),
            (long long) (t_ack - t_record), ret < 0 ? " error=\"" : "",
            ret < 0 ? bvm_error_msg (&err) : "", ret < 0 ? "\"" : "");
  unlink (w->journal);
  json_decref (record);
  queue_close (q);
  _exit (status);
}

/* --- the daemon --------------------------------------------------------------- */

/* A completed job's record: its outcome, and its phases into the histograms. */
static const char *
completed_outcome (struct serve *s, const struct job_request *job)
{
  cleanup_free char *path = NULL;
  const char *outcome = "failed", *st, *k;
  json_t *rec = NULL, *v;
  bvm_error_t e = NULL;

  if (pipeline_record_path (&path, s->cfg, job->app, job->id, &e) < 0
      || jsonx_parse_file (&rec, path, 16 << 20, &e) < 0)
    {
      bvm_error_free (&e);
      return outcome;
    }
  st = json_string_value (json_object_get (rec, "status"));
  if (st && strcmp (st, "succeeded") == 0)
    outcome = "succeeded";
  json_object_foreach (json_object_get (rec, "phases"), k, v)
    metrics_phase (s->metrics, k,
                   (double) json_integer_value (json_object_get (v, "ms")) / 1000.0);
  metrics_egress (s->metrics, json_object_get (rec, "egress"));
  json_decref (rec);
  return outcome;
}

/* A worker killed at its job deadline (supervise) is gone with its fetch;
 * what it started in a session of its own goes too: the VMM it named in
 * its journal (its parent-death signal has most likely done that already),
 * its work directory (the flock that guarded it died with the worker). The
 * job is dead-lettered: a job that hung this long would hang again. */
static void
worker_past_deadline (struct serve *s, struct worker *w)
{
  char reason[160];
  json_t *j = NULL;
  json_int_t vmm = 0, vmm_start = 0;
  bvm_error_t e = NULL;
  unsigned dirs = 0;

  if (jsonx_parse_file (&j, w->journal, 1 << 20, &e) == 0
      && json_unpack (j, "{s:I, s:I}", "vmm", &vmm, "vmm_start", &vmm_start) == 0
      && journal_kill_vmm (vmm, vmm_start))
    log_warn ("job=%s event=deadline.vmm.killed pid=%lld", w->m->job_id, (long long) vmm);
  bvm_error_free (&e);
  if (j != NULL)
    json_decref (j);
  unlink (w->journal);
  if (workdir_reap_stale (s->cfg->work_dir, &dirs, &e) < 0)
    bvm_error_free (&e);
  snprintf (reason, sizeof reason,
            "the job ran past its deadline of %llu s: its worker was killed",
            (unsigned long long) config_job_seconds (s->cfg));
  if (queue_dead_letter (s->q, w->m, reason, NULL, &e) < 0)
    {
      log_warn ("job=%s event=dead_letter.failed error=\"%s\"", w->m->job_id, bvm_error_msg (&e));
      bvm_error_free (&e);
    }
}

static void
reap_workers (struct serve *s)
{
  pid_t pid;
  int status;

  while ((pid = waitpid (-1, &status, WNOHANG)) > 0)
    {
      struct worker *w = NULL;
      const char *outcome = "crashed";
      for (unsigned i = 0; i < s->n_workers; i++)
        if (s->workers[i].pid == pid)
          w = &s->workers[i];
      if (w == NULL)
        continue;
      if (w->killed)
        outcome = "dead";
      else if (WIFEXITED (status))
        switch (WEXITSTATUS (status))
          {
          case W_COMPLETED: outcome = completed_outcome (s, w->m->job); break;
          case W_RELEASED: outcome = "released"; break;
          case W_DEAD: outcome = "dead"; break;
          case W_FENCED: outcome = "fenced"; break;
          case W_DRAINED: outcome = "released"; break;
          case W_ACK_FAILED:
            /* not released: that would build it again; the lease runs out
             * and the next attempt acknowledges the recorded success */
            outcome = "ack_failed";
            log_error ("job=%s app=%s event=ack.failed note=\"the job succeeded; its lease "
                       "will run out and the next attempt acknowledges it\"",
                       w->m->job_id, w->m->job->app);
            break;
          default: outcome = "crashed"; break;
          }
      if (w->killed)
        worker_past_deadline (s, w);
      else if (strcmp (outcome, "crashed") == 0)
        {
          /* the worker died without telling the queue: give the job back
           * (an attempt spent), unless a newer attempt owns it already */
          bvm_error_t e = NULL;
          char st[96];
          log_error ("job=%s app=%s event=worker.crashed status=\"%s\"", w->m->job_id,
                     w->m->job->app, proc_status_str (st, sizeof st, status));
          if (queue_release (s->q, w->m, "the job's worker process crashed", &e) < 0)
            bvm_error_free (&e);
          unlink (w->journal);
        }
      metrics_job (s->metrics, outcome);
      log_info ("job=%s app=%s event=worker.exit outcome=%s ms=%lld", w->m->job_id, w->m->job->app,
                outcome, (long long) (now_ms () - w->started_ms));
      queue_msg_free (w->m);
      *w = s->workers[--s->n_workers];
    }
}

static void
supervise (struct serve *s)
{
  int64_t now = now_ms ();
  for (unsigned i = 0; i < s->n_workers; i++)
    {
      struct worker *w = &s->workers[i];
      bvm_error_t e = NULL;
      /* Past its deadline a worker is killed, with its process group (the
       * fetch child), and gets no more heartbeats: a hung job must not keep
       * its lease, its app's mirror lock and a worker slot for ever. */
      if (now >= w->deadline_ms)
        {
          if (!w->killed)
            {
              log_warn ("job=%s app=%s event=deadline job_s=%llu attempt=%u", w->m->job_id,
                        w->m->job->app, (unsigned long long) config_job_seconds (s->cfg),
                        w->m->attempt);
              kill (-w->pid, SIGKILL);
              kill (w->pid, SIGKILL);
              w->killed = true;
            }
          continue;
        }
      if (now < w->next_heartbeat_ms)
        continue;
      w->next_heartbeat_ms = now + s->qo.lease_ms / 3;
      if (queue_heartbeat (s->q, w->m, &e) < 0)
        {
          if (bvm_error_get_code (&e) == BVM_E_FENCED && !w->fenced_sent)
            {
              log_warn ("job=%s app=%s event=lease.lost attempt=%u", w->m->job_id, w->m->job->app,
                        w->m->attempt);
              kill (w->pid, SIGUSR2);
              w->fenced_sent = true;
            }
          else
            log_warn ("job=%s event=heartbeat.failed error=\"%s\"", w->m->job_id,
                      bvm_error_msg (&e));
          bvm_error_free (&e);
          continue;
        }
      if (!w->cancel_sent && queue_cancel_requested (s->q, w->m))
        {
          log_info ("job=%s app=%s event=cancel.requested", w->m->job_id, w->m->job->app);
          kill (w->pid, SIGUSR1);
          w->cancel_sent = true;
        }
    }
}

/* With an `apps` table in the config, it is the list of apps this runner
 * deploys and of the repository each one builds from: a request for another
 * app, or for an app from another repository, is dead-lettered at once (a
 * producer that can write to the queue must not pick what an app is built
 * from). Without the table every valid app id is accepted. */
static int
check_app (struct serve *s, struct queue_msg *m)
{
  const struct runner_config *cfg = s->cfg;
  char reason[512];
  bvm_error_t e = NULL;

  if (cfg->n_apps == 0)
    return 0;
  for (size_t i = 0; i < cfg->n_apps; i++)
    if (strcmp (cfg->apps[i].app, m->job->app) == 0)
      {
        if (strcmp (cfg->apps[i].repo, m->job->repo) == 0)
          return 0;
        snprintf (reason, sizeof reason,
                  "app `%.63s` builds from `%.200s`, not from the requested repository",
                  m->job->app, cfg->apps[i].repo);
        goto dead;
      }
  snprintf (reason, sizeof reason, "unknown app `%.63s`: not in the config's `apps` table",
            m->job->app);
dead:
  log_warn ("job=%s app=%s event=refused reason=\"%s\"", m->job_id, m->job->app, reason);
  if (queue_dead_letter (s->q, m, reason, NULL, &e) < 0)
    {
      log_warn ("job=%s event=dead_letter.failed error=\"%s\"", m->job_id, bvm_error_msg (&e));
      bvm_error_free (&e);
    }
  metrics_job (s->metrics, "dead");
  return -1;
}

static int
start_worker (struct serve *s, struct queue_msg *m, bvm_error_t *err)
{
  struct worker *w = &s->workers[s->n_workers];
  pid_t pid;

  memset (w, 0, sizeof *w);
  w->m = m;
  w->started_ms = now_ms ();
  w->next_heartbeat_ms = w->started_ms + s->qo.lease_ms / 3;
  w->deadline_ms = w->started_ms + (int64_t) config_job_seconds (s->cfg) * 1000;
  if (snprintf_checked (w->journal, sizeof w->journal, "%s/journal/%s.json", s->dir, m->key) < 0)
    return bvm_error (err, ENAMETOOLONG, "journal path");
  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    return bvm_error (err, errno, "fork a worker");
  if (pid == 0)
    {
      w->pid = getpid ();
      setpgid (0, 0); /* its own group: a deadline kill takes its children too */
      worker_main (s, w);
    }
  setpgid (pid, pid); /* both sides, whichever runs first */
  w->pid = pid;
  s->n_workers++;
  log_info ("job=%s app=%s event=leased attempt=%u worker=%d", m->job_id, m->job->app, m->attempt,
            (int) pid);
  return 0;
}

int
serve_run (const struct serve_opts *o, bvm_error_t *err)
{
  struct serve *s;
  const struct runner_config *cfg = o->cfg;
  char host[64] = "localhost", lock[PATH_MAX];
  int64_t next_depth = 0, drain_started = 0;
  bool draining = false, terms_sent = false;
  int ret = 0;

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "serve");
  s->o = o;
  s->cfg = cfg;
  s->lock_fd = -1;
  s->daemon_pid = getpid ();
  s->max_workers = o->concurrency           ? o->concurrency
                   : cfg->serve.concurrency ? (unsigned) cfg->serve.concurrency
                                            : serve_default_concurrency (cfg);
  if (s->max_workers > MAX_WORKERS)
    s->max_workers = MAX_WORKERS;
  gethostname (host, sizeof host - 1);
  if (o->name)
    snprintf (s->name, sizeof s->name, "%s", o->name);
  else if (cfg->serve.name)
    snprintf (s->name, sizeof s->name, "%s", cfg->serve.name);
  else
    snprintf (s->name, sizeof s->name, "%.60s-%u", host, (unsigned) geteuid ());
  for (char *p = s->name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
          || strchr ("._:@-", *p)))
      *p = '-';

  /* one live instance per name: the name is the queue consumer, and the
   * journal under it belongs to exactly one daemon */
  if (snprintf_checked (s->dir, sizeof s->dir, "%s/serve/%s", cfg->state_dir, s->name) < 0
      || snprintf_checked (lock, sizeof lock, "%s/lock", s->dir) < 0)
    {
      ret = bvm_error (err, ENAMETOOLONG, "state path");
      goto cleanup;
    }
  if ((ret = fs_mkdir_p (s->dir, 0700, err)) < 0)
    goto cleanup;
  s->lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (s->lock_fd < 0)
    {
      ret = bvm_error (err, errno, "open `%s`", lock);
      goto cleanup;
    }
  if (flock (s->lock_fd, LOCK_EX | LOCK_NB) < 0)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0,
                            "another runner named `%s` is running on this host (it holds `%s`): "
                            "give each instance its own name (--name or serve.name)",
                            s->name, lock);
      goto cleanup;
    }

  s->qo = (struct queue_opts) QUEUE_OPTS_INIT;
  s->qo.consumer = s->name;
  s->qo.lease_ms = (int64_t) cfg->serve.lease_seconds * 1000;
  s->qo.max_attempts = (unsigned) cfg->serve.max_attempts;
  if ((ret = queue_open (&s->q, cfg->queue, &s->qo, err)) < 0)
    goto cleanup;
  if ((ret = journal_recover (s, err)) < 0)
    goto cleanup;
  if (o->metrics || cfg->serve.metrics)
    {
      if ((ret = metrics_new (&s->metrics, err)) < 0
          || (ret = metrics_listen (s->metrics, o->metrics ? o->metrics : cfg->serve.metrics, err))
                 < 0)
        goto cleanup;
    }
  metrics_set_vms (s->metrics, 0, s->max_workers);
  log_info ("event=serve.start name=%s queue=%s concurrency=%u lease_s=%llu pid=%d", s->name,
            cfg->queue, s->max_workers, (unsigned long long) cfg->serve.lease_seconds,
            (int) getpid ());

  for (;;)
    {
      reap_workers (s);
      supervise (s);
      if (!draining && o->stop && *o->stop)
        {
          draining = true;
          drain_started = now_ms ();
          metrics_set_draining (s->metrics, true);
          log_info ("event=serve.draining running=%u grace_s=%llu", s->n_workers,
                    (unsigned long long) cfg->serve.grace_seconds);
        }
      if (draining)
        {
          if (s->n_workers == 0)
            break;
          if (!terms_sent
              && ((o->abort_now && *o->abort_now)
                  || now_ms () - drain_started >= (int64_t) cfg->serve.grace_seconds * 1000))
            {
              log_warn ("event=serve.cancel_running running=%u", s->n_workers);
              for (unsigned i = 0; i < s->n_workers; i++)
                kill (s->workers[i].pid, SIGTERM);
              terms_sent = true;
            }
        }
      if (now_ms () >= next_depth)
        {
          uint64_t queued = 0, running = 0;
          bvm_error_t e = NULL;
          if (queue_depth (&queued, &running, s->q, &e) == 0)
            metrics_set_depth (s->metrics, queued, running);
          else
            bvm_error_free (&e);
          metrics_set_vms (s->metrics, s->n_workers, s->max_workers);
          next_depth = now_ms () + DEPTH_EVERY_MS;
        }
      if (!draining && s->n_workers < s->max_workers)
        {
          struct queue_msg *m = NULL;
          bvm_error_t e = NULL;
          if (queue_lease (&m, s->q, TICK_MS, &e) < 0)
            {
              log_warn ("event=lease.failed error=\"%s\"", bvm_error_msg (&e));
              bvm_error_free (&e);
              usleep (TICK_MS * 1000);
              continue;
            }
          if (m == NULL)
            continue;
          fault_point ("after-lease");
          if (check_app (s, m) < 0)
            {
              queue_msg_free (m);
              continue;
            }
          if (start_worker (s, m, &e) < 0)
            {
              log_error ("job=%s event=worker.start.failed error=\"%s\"", m->job_id,
                         bvm_error_msg (&e));
              bvm_error_free (&e);
              if (queue_release (s->q, m, "the runner could not start a worker", &e) < 0)
                bvm_error_free (&e);
              queue_msg_free (m);
            }
          continue;
        }
      usleep (TICK_MS * 1000);
    }
  log_info ("event=serve.stopped");
cleanup:
  for (unsigned i = 0; i < s->n_workers; i++)
    queue_msg_free (s->workers[i].m);
  metrics_free (s->metrics);
  queue_close (s->q);
  if (s->lock_fd >= 0)
    close (s->lock_fd);
  free (s);
  return ret;
}
