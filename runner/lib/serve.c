/* serve.c - the runner daemon, see serve.h */
#include "serve.h"
#include "fault.h"
#include "fs.h"
#include "guest.h"
#include "image.h"
#include "job.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "proc.h"
#include "queue.h"
#include "util.h"
#include "vmjob.h"
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TICK_MS 200
#define DEPTH_EVERY_MS 2000
#define MAX_WORKERS 1024
#define POOL_MAX 64
#define POOL_BACKOFF_MS 5000
#define POOL_JOB_MAX (4u << 20) /* the job handed to a pool VM's worker: a lease's JSON */
#define POOL_HINTS 256

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
  P_RETIRED = 20,    /* a pool VM that got no job: past its age, or stopped */
  P_FAILED = 21,     /* a pool VM that could not boot */
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

/* A VM of the pool (docs/architecture.md, "The pool"): a worker process
 * forked ahead of its job, which booted its VM and waits at the agent. The
 * daemon sends it a lease over job_fd and it becomes that job's worker. */
enum pool_state
{
  POOL_BOOTING,
  POOL_READY,
};

struct pool_vm
{
  pid_t pid;
  unsigned shape;
  int job_fd; /* the daemon's end of a socket pair: "r" comes back when ready */
  enum pool_state state;
  int64_t born_ms;
  bool term_sent;
};

/* A serve.pool[] entry with the defaults filled in */
struct pool_shape
{
  char profile[64];
  unsigned vcpus, memory_mib;
  uint64_t disk_mib;
  unsigned size;
  char label[96]; /* "profile/vcpus/memory_mib", the metrics' shape label */
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
  struct pool_shape shapes[CONFIG_POOL_SHAPES_MAX];
  unsigned n_shapes;
  struct pool_vm pool[POOL_MAX];
  unsigned n_pool, pool_seq;
  /* the shape of each app's last job (from its record): the pool shape it
   * matched, or -1 for none; a ring, the oldest forgotten first */
  struct
  {
    char app[128];
    int shape;
  } hints[POOL_HINTS];
  unsigned n_hints, next_hint;
  int64_t pool_backoff_until;
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
   * share; keep 512 MiB for the host, and what the pool's VMs take (they
   * run beside the jobs: docs/operations.md, "Sizing the pool") */
  uint64_t per = cfg->defaults.memory_mib + 256, pool = 0;
  uint64_t avail = mem_available_mib ();
  uint64_t by_mem;
  for (size_t i = 0; i < cfg->serve.n_pool; i++)
    pool += cfg->serve.pool[i].size
            * ((cfg->serve.pool[i].memory_mib ? cfg->serve.pool[i].memory_mib
                                              : cfg->defaults.memory_mib)
               + 256);
  by_mem = avail > 512 + pool + per ? (avail - 512 - pool) / per : 1;
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
      if (jsonx_parse_file (&j, path, 1 << 20, &e) == 0 && json_object_get (j, "pool") != NULL)
        {
          /* a pool VM that had no job yet */
          if (json_unpack (j, "{s:I, s:I}", "vmm", &vmm, "vmm_start", &vmm_start) == 0
              && journal_kill_vmm (vmm, vmm_start))
            {
              reaped++;
              log_warn ("event=recover.pool_vm.killed pid=%lld", (long long) vmm);
            }
          json_decref (j);
          unlink (path);
          continue;
        }
      if (j == NULL
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

/* A process of the daemon's own (a job's worker, a pool VM's keeper): it
 * never outlives the daemon (a fault point takes the daemon down too), takes
 * the daemon's signals to it, and leaves ^C to the daemon. */
static void
child_init (const struct serve *s, int fail_status)
{
  struct sigaction sa;
  sigset_t none;

  if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid () != s->daemon_pid)
    _exit (fail_status);
  fault_set_partner (s->daemon_pid);
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = w_on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGUSR1, &sa, NULL);
  sigaction (SIGUSR2, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  signal (SIGINT, SIG_IGN);
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
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

/* A job's worker; from a pool VM's process (pool_main), with the VM booted
 * for it (*warm, which the build takes) and the work directory of its disks. */
static void __attribute__ ((noreturn))
worker_main (struct serve *s, struct worker *w, struct vmjob_warm **warm, struct workdir *pool_wd)
{
  struct queue *q = NULL;
  struct pipeline_opts po = { 0 };
  struct wctx c = { s, w, NULL };
  json_t *record = NULL;
  bvm_error_t err = NULL, qerr = NULL;
  int ret, code, status;
  int64_t t_record, t_ack;
  const struct queue_msg *m = w->m;

  child_init (s, W_QUEUE_ERROR);

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
  if (journal_write (w, warm && *warm ? vmjob_warm_pid (*warm) : 0, &err) < 0)
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
  po.warm = warm;
  po.t_lease_ms = w->started_ms;
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
  /* a pool VM the job never used (it ended before its build) */
  if (warm != NULL)
    vmjob_warm_free (*warm);
  if (pool_wd != NULL)
    {
      bvm_error_t e = NULL;
      if (workdir_remove (pool_wd, &e) < 0)
        bvm_error_free (&e);
    }

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

/* --- the pool ------------------------------------------------------------------- */

static int
pool_shapes_resolve (struct serve *s, bvm_error_t *err)
{
  const struct runner_config *cfg = s->cfg;
  for (size_t i = 0; i < cfg->serve.n_pool; i++)
    {
      const struct config_pool_shape *c = &cfg->serve.pool[i];
      struct pool_shape *sh = &s->shapes[s->n_shapes];
      if (c->size == 0)
        continue;
      /* the agent's go comes on a virtio-serial port: QEMU's (vm.h) */
      if (cfg->vm.driver != NULL && strcmp (cfg->vm.driver, "qemu") != 0)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "serve.pool needs the `qemu` VM driver, not `%s`", cfg->vm.driver);
      snprintf (sh->profile, sizeof sh->profile, "%s",
                c->profile ? c->profile : cfg->images.default_profile);
      sh->vcpus = (unsigned) (c->vcpus ? c->vcpus : cfg->defaults.vcpus);
      sh->memory_mib = (unsigned) (c->memory_mib ? c->memory_mib : cfg->defaults.memory_mib);
      sh->disk_mib = cfg->defaults.disk_mib;
      sh->size = (unsigned) c->size;
      if (sh->vcpus > cfg->limits.max_vcpus || sh->memory_mib > cfg->limits.max_memory_mib)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "serve.pool[%zu]: %u vCPUs and %u MiB are above the limits "
                               "(%llu, %llu MiB)",
                               i, sh->vcpus, sh->memory_mib,
                               (unsigned long long) cfg->limits.max_vcpus,
                               (unsigned long long) cfg->limits.max_memory_mib);
      {
        char label[sizeof sh->label];
        snprintf (label, sizeof label, "%s/%u/%u", sh->profile, sh->vcpus, sh->memory_mib);
        memcpy (sh->label, label, sizeof label);
      }
      s->n_shapes++;
    }
  return 0;
}

/* The lease, for the pool VM's process: what start_worker's fork copies. */
static int
pool_send_job (struct pool_vm *pv, const struct worker *w, bvm_error_t *err)
{
  const struct queue_msg *m = w->m;
  cleanup_json json_t *j = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:I}",
                                      "msg_id", m->msg_id, "job_id", m->job_id, "key", m->key,
                                      "owner", m->owner, "body", m->body, "attempt",
                                      (json_int_t) m->attempt, "last_attempt",
                                      (json_int_t) m->last_attempt, "lease_until_ms",
                                      (json_int_t) m->lease_until_ms, "redelivered",
                                      m->redelivered, "leased_ms", (json_int_t) w->started_ms);
  cleanup_free char *text = j ? json_dumps (j, JSON_COMPACT) : NULL;
  size_t len, off = 0;

  if (text == NULL)
    return bvm_error (err, ENOMEM, "pool job");
  len = strlen (text);
  while (off < len)
    {
      ssize_t n = send (pv->job_fd, text + off, len - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return bvm_error (err, errno, "hand the job to pool VM %d", (int) pv->pid);
      off += (size_t) n;
    }
  if (shutdown (pv->job_fd, SHUT_WR) < 0)
    return bvm_error (err, errno, "hand the job to pool VM %d", (int) pv->pid);
  return 0;
}

static int
pool_read_job (struct queue_msg **out, int64_t *leased_ms, int fd, bvm_error_t *err)
{
  struct buf b = BUF_INIT (POOL_JOB_MAX);
  cleanup_json json_t *j = NULL;
  struct queue_msg *m = NULL;
  const char *msg_id, *job_id, *key, *owner, *body;
  json_int_t attempt, last, until, leased;
  int redelivered, ret = 0;

  for (;;)
    {
      char chunk[65536];
      ssize_t n = read (fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          ret = bvm_error (err, errno, "read the job");
          goto out;
        }
      if (n == 0)
        break;
      if ((ret = buf_add (&b, chunk, (size_t) n)) < 0)
        {
          ret = bvm_error (err, E2BIG, "the job is over %u bytes", POOL_JOB_MAX);
          goto out;
        }
    }
  if ((ret = jsonx_parse_object (&j, buf_cstr (&b), b.len, POOL_JOB_MAX, "the job", NULL, err))
      < 0)
    goto out;
  if (json_unpack (j, "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:I}", "msg_id", &msg_id,
                   "job_id", &job_id, "key", &key, "owner", &owner, "body", &body, "attempt",
                   &attempt, "last_attempt", &last, "lease_until_ms", &until, "redelivered",
                   &redelivered, "leased_ms", &leased)
      != 0)
    {
      ret = bvm_error_code (err, BVM_E_INTERNAL, 0, "the job handed over is malformed");
      goto out;
    }
  m = calloc (1, sizeof *m);
  if (m == NULL || (m->msg_id = strdup (msg_id)) == NULL || (m->job_id = strdup (job_id)) == NULL
      || (m->key = strdup (key)) == NULL || (m->owner = strdup (owner)) == NULL
      || (m->body = strdup (body)) == NULL)
    {
      queue_msg_free (m);
      ret = bvm_error (err, ENOMEM, "the job");
      goto out;
    }
  m->len = strlen (body);
  m->attempt = (unsigned) attempt;
  m->last_attempt = (unsigned) last;
  m->lease_until_ms = until;
  m->redelivered = redelivered != 0;
  if ((ret = job_parse (&m->job, m->body, m->len, err)) < 0)
    {
      queue_msg_free (m);
      goto out;
    }
  *leased_ms = leased;
  *out = m;
out:
  buf_dispose (&b);
  return ret;
}

static void
pool_journal_path (char *out, size_t size, const struct serve *s, pid_t pid)
{
  snprintf (out, size, "%s/journal/pool-%d.json", s->dir, (int) pid);
}

/* The process of one pool VM: boot it, wait at its agent for a job (or
 * until its age or a stop), and become that job's worker. Its VMM is its
 * child (jailed), dies with it (PR_SET_PDEATHSIG) and is journaled, like a
 * job's, for the next start to kill should both survive a crash. */
static void __attribute__ ((noreturn))
pool_main (struct serve *s, unsigned shape, unsigned seq, int fd)
{
  const struct pool_shape *sh = &s->shapes[shape];
  const struct runner_config *cfg = s->cfg;
  struct vmjob_opts vo = { 0 };
  struct vm_image *img = NULL;
  struct workdir *wd = NULL;
  struct vmjob_warm *warm = NULL;
  struct queue_msg *m = NULL;
  struct worker w;
  char name[64], journal[PATH_MAX + 32];
  bvm_error_t err = NULL;
  int64_t born = now_ms (), leased = 0;
  uint64_t start = 0;
  int ret, status = P_RETIRED;

  child_init (s, P_FAILED);
  if (proc_limit_memory (cfg->limits.max_worker_memory_mib, &err) < 0)
    bvm_error_free (&err);
  snprintf (name, sizeof name, "pool-%u", seq);
  pool_journal_path (journal, sizeof journal, s, getpid ());

  ret = image_load (&img, cfg->images.dir, sh->profile, &err);
  if (ret == 0)
    ret = workdir_create (&wd, cfg->work_dir, name, &err);
  if (ret == 0)
    {
      pipeline_prewarm_opts (&vo, cfg, img, name, sh->vcpus, sh->memory_mib, sh->disk_mib,
                             &w_cancel);
      ret = vmjob_prewarm (&warm, wd, &vo, pipeline_input_max (cfg), &err);
    }
  if (ret < 0)
    {
      if (!w_cancel)
        {
          log_warn ("event=pool.boot.failed shape=%s vm=%s error=\"%s\"", sh->label, name,
                    bvm_error_msg (&err));
          status = P_FAILED;
        }
      goto retire;
    }
  {
    cleanup_json json_t *j = NULL;
    pid_t vmm = vmjob_warm_pid (warm);
    if (proc_start_time (vmm, &start) < 0)
      start = 0;
    j = json_pack ("{s:b, s:s, s:I, s:I}", "pool", 1, "shape", sh->label, "vmm", (json_int_t) vmm,
                   "vmm_start", (json_int_t) start);
    if (j == NULL || jsonx_write_file (journal, j, &err) < 0)
      bvm_error_free (&err);
  }
  log_info ("event=pool.ready shape=%s vm=%s boot_ms=%lld", sh->label, name,
            (long long) vmjob_warm_boot_ms (warm));
  if (write (fd, "r", 1) != 1)
    goto retire;
  ret = vmjob_warm_idle (warm, fd, born + (int64_t) cfg->serve.pool_max_age_seconds * 1000, &err);
  if (ret == 0)
    log_info ("event=pool.recycled shape=%s vm=%s age_s=%lld", sh->label, name,
              (long long) ((now_ms () - born) / 1000));
  if (ret < 0 && bvm_error_get_code (&err) != BVM_E_CANCELED)
    log_warn ("event=pool.vm.lost shape=%s vm=%s error=\"%s\"", sh->label, name,
              bvm_error_msg (&err));
  bvm_error_free (&err);
  if (ret != 1)
    goto retire;
  if (pool_read_job (&m, &leased, fd, &err) < 0)
    {
      log_error ("event=pool.job.unreadable vm=%s error=\"%s\"", name, bvm_error_msg (&err));
      goto retire;
    }
  close (fd);
  memset (&w, 0, sizeof w);
  w.m = m;
  w.pid = getpid ();
  w.started_ms = leased;
  if (snprintf_checked (w.journal, sizeof w.journal, "%s/journal/%s.json", s->dir, m->key) < 0)
    goto retire;
  /* the job's journal names the VMM before the pool's goes */
  if (journal_write (&w, vmjob_warm_pid (warm), &err) < 0)
    bvm_error_free (&err);
  unlink (journal);
  log_info ("job=%s app=%s event=pool.taken shape=%s vm=%s wait_ms=%lld", m->job_id, m->job->app,
            sh->label, name, (long long) (now_ms () - born));
  worker_main (s, &w, &warm, wd);

retire:
  bvm_error_free (&err);
  vmjob_warm_free (warm);
  if (wd != NULL && workdir_remove (wd, &err) < 0)
    bvm_error_free (&err);
  unlink (journal);
  image_free (img);
  _exit (status);
}

static int
pool_start (struct serve *s, unsigned shape, bvm_error_t *err)
{
  struct pool_vm *pv = &s->pool[s->n_pool];
  unsigned seq = ++s->pool_seq;
  int sv[2];
  pid_t pid;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return bvm_error (err, errno, "a pool VM's socket");
  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    {
      close (sv[0]);
      close (sv[1]);
      return bvm_error (err, errno, "fork a pool VM");
    }
  if (pid == 0)
    {
      setpgid (0, 0);
      close (sv[0]);
      for (unsigned i = 0; i < s->n_pool; i++)
        close (s->pool[i].job_fd);
      pool_main (s, shape, seq, sv[1]);
    }
  setpgid (pid, pid);
  close (sv[1]);
  memset (pv, 0, sizeof *pv);
  pv->pid = pid;
  pv->shape = shape;
  pv->job_fd = sv[0];
  pv->state = POOL_BOOTING;
  pv->born_ms = now_ms ();
  s->n_pool++;
  log_info ("event=pool.boot shape=%s vm=pool-%u pid=%d", s->shapes[shape].label, seq, (int) pid);
  return 0;
}

/* Keep every shape at its size (not while draining; after a failed boot,
 * not for POOL_BACKOFF_MS: a missing image must not fork a VM per tick). */
static void
pool_fill (struct serve *s, bool draining)
{
  if (draining || now_ms () < s->pool_backoff_until)
    return;
  for (unsigned k = 0; k < s->n_shapes; k++)
    {
      unsigned have = 0;
      for (unsigned i = 0; i < s->n_pool; i++)
        have += s->pool[i].shape == k;
      while (have < s->shapes[k].size && s->n_pool < POOL_MAX)
        {
          bvm_error_t e = NULL;
          if (pool_start (s, k, &e) < 0)
            {
              log_warn ("event=pool.start.failed error=\"%s\"", bvm_error_msg (&e));
              bvm_error_free (&e);
              s->pool_backoff_until = now_ms () + POOL_BACKOFF_MS;
              return;
            }
          have++;
        }
    }
}

static void
pool_poll (struct serve *s)
{
  uint64_t booting[CONFIG_POOL_SHAPES_MAX] = { 0 }, ready[CONFIG_POOL_SHAPES_MAX] = { 0 };

  for (unsigned i = 0; i < s->n_pool; i++)
    {
      struct pool_vm *pv = &s->pool[i];
      char c;
      if (pv->state == POOL_BOOTING && recv (pv->job_fd, &c, 1, MSG_DONTWAIT) == 1 && c == 'r')
        pv->state = POOL_READY;
      if (pv->state == POOL_READY)
        ready[pv->shape]++;
      else
        booting[pv->shape]++;
    }
  for (unsigned k = 0; k < s->n_shapes; k++)
    metrics_set_pool (s->metrics, k, s->shapes[k].label, booting[k], ready[k]);
}

/* A pool VM's process ended without a job. */
static bool
pool_reaped (struct serve *s, pid_t pid, int status)
{
  char journal[PATH_MAX + 32], st[96];
  for (unsigned i = 0; i < s->n_pool; i++)
    if (s->pool[i].pid == pid)
      {
        struct pool_vm *pv = &s->pool[i];
        bool failed = !WIFEXITED (status) || WEXITSTATUS (status) != P_RETIRED;
        if (failed && !pv->term_sent)
          s->pool_backoff_until = now_ms () + POOL_BACKOFF_MS;
        log_info ("event=pool.vm.exit shape=%s pid=%d status=\"%s\" age_ms=%lld",
                  s->shapes[pv->shape].label, (int) pid, proc_status_str (st, sizeof st, status),
                  (long long) (now_ms () - pv->born_ms));
        /* killed before it cleaned up: its VMM died with it (PDEATHSIG) */
        pool_journal_path (journal, sizeof journal, s, pid);
        unlink (journal);
        close (pv->job_fd);
        *pv = s->pool[--s->n_pool];
        return true;
      }
  return false;
}

/* The daemon learns a job's shape only from its record (the shape is in
 * the commit's buildvm.json): remember each app's last one, so that its
 * next job is offered a VM of that shape, or none when it has no pool. */
static void
pool_hint_learn (struct serve *s, const char *app, const json_t *rec)
{
  const json_t *res = json_object_get (rec, "resources");
  const char *profile = json_string_value (
      json_object_get (json_object_get (rec, "vm_image"), "profile"));
  int shape = -1;
  unsigned i;

  if (s->n_shapes == 0 || res == NULL || profile == NULL)
    return;
  for (unsigned k = 0; k < s->n_shapes; k++)
    if (strcmp (s->shapes[k].profile, profile) == 0
        && json_integer_value (json_object_get (res, "vcpus")) == s->shapes[k].vcpus
        && json_integer_value (json_object_get (res, "memory_mib")) == s->shapes[k].memory_mib
        && (uint64_t) json_integer_value (json_object_get (res, "disk_mib"))
               == s->shapes[k].disk_mib)
      shape = (int) k;
  for (i = 0; i < s->n_hints; i++)
    if (strcmp (s->hints[i].app, app) == 0)
      break;
  if (i == s->n_hints)
    {
      if (s->n_hints < POOL_HINTS)
        i = s->n_hints++;
      else
        i = s->next_hint++ % POOL_HINTS;
      snprintf (s->hints[i].app, sizeof s->hints[i].app, "%s", app);
    }
  s->hints[i].shape = shape;
}

/* The shape an app's jobs had last time: a shape index, -1 for none of the
 * pool's, -2 when it is not known. */
static int
pool_hint (const struct serve *s, const char *app)
{
  for (unsigned i = 0; i < s->n_hints; i++)
    if (strcmp (s->hints[i].app, app) == 0)
      return s->hints[i].shape;
  return -2;
}

/* Hand a leased job to a ready pool VM: its process becomes the job's
 * worker. -1 when there is none (or it is gone): a cold worker then. A VM
 * this close to its age is left to retire rather than race it. */
static int
pool_take (struct serve *s, struct queue_msg *m)
{
  int64_t now = now_ms (), age_ms = (int64_t) s->cfg->serve.pool_max_age_seconds * 1000;
  struct worker *w = &s->workers[s->n_workers];

  int hint;

  if (s->n_shapes == 0)
    return -1;
  hint = pool_hint (s, m->job->app);
  if (hint == -1)
    {
      /* its last job had a shape of no pool: do not waste a VM on it */
      metrics_pool_miss (s->metrics, "shape");
      return -1;
    }
  for (unsigned i = 0; i < s->n_pool; i++)
    {
      struct pool_vm *pv = &s->pool[i];
      bvm_error_t e = NULL;
      if (pv->state != POOL_READY || pv->term_sent || now - pv->born_ms > age_ms - 5000
          || (hint >= 0 && pv->shape != (unsigned) hint))
        continue;
      memset (w, 0, sizeof *w);
      w->m = m;
      w->started_ms = now;
      w->next_heartbeat_ms = now + s->qo.lease_ms / 3;
      w->deadline_ms = now + (int64_t) config_job_seconds (s->cfg) * 1000;
      if (snprintf_checked (w->journal, sizeof w->journal, "%s/journal/%s.json", s->dir, m->key)
          < 0)
        return -1;
      if (pool_send_job (pv, w, &e) < 0)
        {
          log_warn ("job=%s event=pool.handoff.failed error=\"%s\"", m->job_id,
                    bvm_error_msg (&e));
          bvm_error_free (&e);
          kill (pv->pid, SIGKILL);
          pv->term_sent = true;
          continue;
        }
      w->pid = pv->pid;
      s->n_workers++;
      log_info ("job=%s app=%s event=leased attempt=%u worker=%d pool=%s", m->job_id, m->job->app,
                m->attempt, (int) pv->pid, s->shapes[pv->shape].label);
      close (pv->job_fd);
      *pv = s->pool[--s->n_pool];
      return 0;
    }
  metrics_pool_miss (s->metrics, "empty");
  return -1;
}

static void
pool_stop (struct serve *s)
{
  for (unsigned i = 0; i < s->n_pool; i++)
    if (!s->pool[i].term_sent)
      {
        kill (s->pool[i].pid, SIGTERM);
        s->pool[i].term_sent = true;
      }
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
  {
    const char *pool = json_string_value (
        json_object_get (json_object_get (json_object_get (rec, "build"), "pool"), "vm"));
    json_t *fs = json_object_get (rec, "first_step_ms");
    const json_t *early = json_object_get (json_object_get (rec, "build"), "early_vm");
    if (early != NULL)
      metrics_early_vm (s->metrics, json_is_true (json_object_get (early, "used")));
    if (pool && strcmp (pool, "hit") == 0)
      metrics_pool_hit (s->metrics);
    else if (pool)
      metrics_pool_miss (s->metrics, "shape");
    if (json_is_integer (fs))
      metrics_first_step (s->metrics, pool && strcmp (pool, "hit") == 0,
                          (double) json_integer_value (fs) / 1000.0);
  }
  pool_hint_learn (s, job->app, rec);
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
        {
          pool_reaped (s, pid, status);
          continue;
        }
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
      for (unsigned i = 0; i < s->n_pool; i++)
        close (s->pool[i].job_fd);
      worker_main (s, w, NULL, NULL);
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
  if ((ret = pool_shapes_resolve (s, err)) < 0)
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
      pool_fill (s, draining || (o->stop && *o->stop));
      pool_poll (s);
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
          /* the pool's VMs had no job: they go at once */
          pool_stop (s);
          if (s->n_workers == 0 && s->n_pool == 0)
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
          metrics_set_vms (s->metrics, s->n_workers + s->n_pool, s->max_workers);
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
          if (pool_take (s, m) == 0)
            continue;
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
  for (unsigned i = 0; i < s->n_pool; i++)
    {
      /* only on an error path: a drain waited for them */
      kill (s->pool[i].pid, SIGKILL);
      close (s->pool[i].job_fd);
    }
  metrics_free (s->metrics);
  queue_close (s->q);
  if (s->lock_fd >= 0)
    close (s->lock_fd);
  free (s);
  return ret;
}
