/* queue/spool.c - the `spool:DIR` queue driver: a Maildir-style directory
 *
 *   DIR/lock              flock(2)ed around every state change
 *   DIR/tmp/              files being written; renamed into place when whole
 *   DIR/new/<job>.json    queued requests, leased oldest (mtime) first
 *   DIR/new/<job>.lease   the last lease of a released job: its attempt count
 *   DIR/cur/<job>.json    leased requests
 *   DIR/cur/<job>.lease   the lease: owner, attempt, lease_until, history
 *   DIR/cur/<job>.cancel  a cancel request for the running job
 *   DIR/done/<job>.json   terminal: request, record, attempt, history
 *   DIR/dead/<name>.json  dead letters: reason, request, record, history, and
 *   DIR/dead/<name>.msg   the message file as it was
 *
 * <job> is the job's key, `<app>+<id>` (job_key): ids are unique per app only.
 *
 * Concurrency: every transition (lease, takeover, heartbeat, complete,
 * release, dead-letter, cancel, enqueue) runs under an exclusive flock on
 * DIR/lock and is a short sequence of renames and atomic writes. That makes
 * the checks "is this id queued, running or done" and "has this lease
 * expired, and is it still the one I read" exact, so two runners can never
 * take over the same expired lease and a duplicate enqueue cannot slip in
 * while a job moves between directories. The lock is held for milliseconds,
 * never while a job runs; the kernel drops it when a holder dies. A holder
 * stopped with SIGSTOP inside a transition blocks the others, who give up
 * with BVM_E_TIMEOUT after timeout_ms instead of hanging.
 *
 * Crash safety: every step is ordered so that a crash between two steps
 * leaves a state the next lease pass repairs: a cur/ lease without its
 * request is removed; a cur/ request whose done/ or dead/ record exists is
 * acknowledged (removed) without running again; a request without a lease is
 * treated as an expired lease.
 *
 * Untrusted files: everything is opened relative to directory descriptors
 * with O_NOFOLLOW; anything that is not a regular file owned by our uid
 * (symlinks, fifos, another user's files) is skipped and counted in
 * q->ignored, never read, moved or removed. The directories are created 0700
 * and refused when group or others can write them.
 *
 * Over 1,500 lines: one driver, every state change a rename under one lock;
 * the sections below are the seams to split along.
 */
#include "queue_int.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_SCAN_MAX 100000 /* directory entries looked at per pass */
#define SPOOL_LEASE_MAX (64 * 1024)
#define SPOOL_RECORD_FILE_MAX (QUEUE_RECORD_MAX + 2 * JOB_REQUEST_MAX_BYTES + 256 * 1024)
#define SPOOL_HISTORY_MAX 32
#define SPOOL_TMP_STALE_MS (3600 * 1000)
#define NAME_BUF (JOB_KEY_MAX + 64)

enum spool_dir
{
  D_TMP,
  D_NEW,
  D_CUR,
  D_DONE,
  D_DEAD,
  D_N,
};

static const char *const dir_names[D_N] = { "tmp", "new", "cur", "done", "dead" };

struct spool
{
  struct queue q;
  char *root;
  int root_fd;
  int dfd[D_N];
  int lock_fd;
  uid_t uid;
  bool counting; /* a lease pass is counting skipped files into q.ignored */
  char host[HOST_NAME_MAX + 1];
};

/* What reading a file in the spool found. */
enum spool_read
{
  SR_OK,
  SR_ABSENT,
  SR_IGNORED, /* not a regular file owned by us: never touched */
  SR_TOOBIG,
};

static struct spool *
S (struct queue *q)
{
  return (struct spool *) q;
}

/* --- the lock ------------------------------------------------------------- */

static int
spool_lock (struct spool *s, bvm_error_t *err)
{
  int64_t deadline = now_ms () + s->q.timeout_ms;
  long nap_us = 200;

  for (;;)
    {
      struct timespec ts;
      if (flock (s->lock_fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
      if (errno == EINTR)
        continue;
      if (errno != EWOULDBLOCK)
        return bvm_error (err, errno, "lock the spool `%s`", s->root);
      if (now_ms () >= deadline)
        return bvm_error_code (err, BVM_E_TIMEOUT, 0,
                               "the spool `%s` has been locked by another process for %lld ms",
                               s->root, (long long) s->q.timeout_ms);
      ts.tv_sec = 0;
      ts.tv_nsec = nap_us * 1000;
      nanosleep (&ts, NULL);
      if (nap_us < 20000)
        nap_us *= 2;
    }
}

static void
spool_unlockp (struct spool **s)
{
  if (*s != NULL)
    flock ((*s)->lock_fd, LOCK_UN);
}
#define cleanup_spool_lock __attribute__ ((cleanup (spool_unlockp)))

/* --- names ---------------------------------------------------------------- */

static int
name_of (char *buf, const char *id, const char *ext)
{
  return snprintf_checked (buf, NAME_BUF, "%s.%s", id, ext);
}

/* "<key>.<ext>" with a valid job key (app+id): copy the key into `id` and return the
 * extension, else NULL. */
static const char *
split_name (char id[JOB_KEY_MAX + 1], const char *name)
{
  const char *dot = strrchr (name, '.');
  size_t n;

  if (dot == NULL || dot == name)
    return NULL;
  n = (size_t) (dot - name);
  if (n > JOB_KEY_MAX)
    return NULL;
  memcpy (id, name, n);
  id[n] = '\0';
  if (job_key_problem (id) != NULL)
    return NULL;
  return dot + 1;
}

static bool
exists_at (int dfd, const char *name)
{
  struct stat st;
  return fstatat (dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool
job_file_exists (struct spool *s, enum spool_dir d, const char *id, const char *ext)
{
  char n[NAME_BUF];
  struct stat st;
  if (name_of (n, id, ext) < 0)
    return false;
  if (fstatat (s->dfd[d], n, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return false;
  return S_ISREG (st.st_mode) && st.st_uid == s->uid;
}

static void
unlink_job_file (struct spool *s, enum spool_dir d, const char *id, const char *ext)
{
  char n[NAME_BUF];
  if (name_of (n, id, ext) >= 0)
    unlinkat (s->dfd[d], n, 0);
}

/* --- reading and writing files -------------------------------------------- */

static int
spool_read (char **data, size_t *len, struct stat *st_out, struct spool *s, enum spool_dir d,
            const char *name, size_t max, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  struct stat st;
  int ret;

  *data = NULL;
  *len = 0;
  /* O_NONBLOCK: a fifo planted in the spool must not hang the runner */
  fd = openat (s->dfd[d], name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    {
      if (errno == ENOENT)
        return SR_ABSENT;
      if (errno == ELOOP || errno == ENXIO || errno == EACCES || errno == EPERM)
        {
          s->q.ignored += s->counting;
          return SR_IGNORED;
        }
      return bvm_error (err, errno, "open `%s/%s/%s`", s->root, dir_names[d], name);
    }
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s/%s/%s`", s->root, dir_names[d], name);
  if (!S_ISREG (st.st_mode) || st.st_uid != s->uid)
    {
      s->q.ignored += s->counting;
      return SR_IGNORED;
    }
  if (st_out != NULL)
    *st_out = st;
  if ((uint64_t) st.st_size > max)
    {
      *len = (size_t) st.st_size;
      return SR_TOOBIG;
    }
  ret = fs_read_fd (data, len, fd, max, name, err);
  if (ret < 0 && bvm_error_get_code (err) == BVM_E_LIMIT)
    {
      bvm_error_free (err);
      return SR_TOOBIG;
    }
  if (ret < 0)
    return ret;
  return SR_OK;
}

/* A JSON document we wrote ourselves (lease, record). *out NULL when the file
 * is absent, ignored, too big or not valid JSON: the caller decides. */
static int
spool_read_json (json_t **out, struct spool *s, enum spool_dir d, const char *name, size_t max,
                 bvm_error_t *err)
{
  cleanup_free char *data = NULL;
  cleanup_error bvm_error_t perr = NULL;
  size_t len;
  int ret;

  *out = NULL;
  ret = spool_read (&data, &len, NULL, s, d, name, max, err);
  if (ret < 0)
    return ret;
  if (ret == SR_OK && jsonx_parse (out, data, len, max, name, &perr) == 0
      && !json_is_object (*out))
    {
      json_decref (*out);
      *out = NULL;
    }
  return ret;
}

static unsigned long spool_seq;

/* Write `name` in directory d atomically: a new file in tmp/, then rename.
 * `durable`: fsync the file before and the directory after the rename. */
static int
spool_write (struct spool *s, enum spool_dir d, const char *name, const char *data, size_t len,
             bool durable, bvm_error_t *err)
{
  char tmp[NAME_BUF];
  cleanup_close int fd = -1;

  if (snprintf_checked (tmp, sizeof tmp, ".w.%d.%lu", (int) getpid (),
                        __atomic_add_fetch (&spool_seq, 1, __ATOMIC_RELAXED))
      < 0)
    return bvm_error (err, ENAMETOOLONG, "temporary name");
  fd = openat (s->dfd[D_TMP], tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s/tmp/%s`", s->root, tmp);
  if (fs_write_all (fd, data, len) < 0 || (durable && fsync (fd) < 0))
    {
      int e = errno;
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return bvm_error (err, e, "write `%s/tmp/%s`", s->root, tmp);
    }
  if (close (steal_fd (&fd)) < 0)
    {
      int e = errno;
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return bvm_error (err, e, "close `%s/tmp/%s`", s->root, tmp);
    }
  if (renameat (s->dfd[D_TMP], tmp, s->dfd[d], name) < 0)
    {
      int e = errno;
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return bvm_error (err, e, "rename into `%s/%s/%s`", s->root, dir_names[d], name);
    }
  if (durable && fsync (s->dfd[d]) < 0)
    return bvm_error (err, errno, "fsync `%s/%s`", s->root, dir_names[d]);
  return 0;
}

static int
spool_write_json (struct spool *s, enum spool_dir d, const char *name, const json_t *doc,
                  bool durable, bvm_error_t *err)
{
  cleanup_free char *text = json_dumps (doc, JSON_INDENT (2) | JSON_SORT_KEYS);
  if (text == NULL)
    return bvm_error (err, ENOMEM, "serializing `%s`", name);
  return spool_write (s, d, name, text, strlen (text), durable, err);
}

/* --- directory scans ------------------------------------------------------ */

struct ent
{
  char *name;
  int64_t mtime_ms;
};

static void
ents_free (struct ent *e, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (e[i].name);
  free (e);
}

/* Order by time, then by name. */
static int
time_name_cmp (int64_t t1, const char *n1, int64_t t2, const char *n2)
{
  if (t1 != t2)
    return t1 < t2 ? -1 : 1;
  return strcmp (n1, n2);
}

static int
ent_older (const void *a, const void *b)
{
  const struct ent *x = a, *y = b;
  return time_name_cmp (x->mtime_ms, x->name, y->mtime_ms, y->name);
}

static int
ent_newer (const void *a, const void *b)
{
  return ent_older (b, a);
}

/* The regular files of ours in directory d whose name ends in `.ext` (NULL:
 * every name not starting with `.`). Anything else is skipped; foreign files
 * and links are counted as ignored. */
static int
spool_scan (struct ent **out, size_t *n, struct spool *s, enum spool_dir d, const char *ext,
            bvm_error_t *err)
{
  int fd = openat (s->dfd[d], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct ent *e = NULL;
  size_t used = 0, alloc = 0;
  struct dirent *de;
  DIR *dir;

  *out = NULL;
  *n = 0;
  if (fd < 0)
    return bvm_error (err, errno, "open `%s/%s`", s->root, dir_names[d]);
  dir = fdopendir (fd);
  if (dir == NULL)
    {
      int e0 = errno;
      close (fd);
      return bvm_error (err, e0, "open `%s/%s`", s->root, dir_names[d]);
    }
  while ((de = readdir (dir)) != NULL && used < SPOOL_SCAN_MAX)
    {
      struct stat st;
      const char *dot;
      if (de->d_name[0] == '.')
        continue;
      dot = strrchr (de->d_name, '.');
      if (ext != NULL && (dot == NULL || strcmp (dot + 1, ext) != 0))
        continue;
      if (fstatat (fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        continue;
      if (!S_ISREG (st.st_mode) || st.st_uid != s->uid)
        {
          s->q.ignored += s->counting;
          continue;
        }
      if (used == alloc)
        {
          size_t na = alloc ? alloc * 2 : 64;
          struct ent *ne = realloc (e, na * sizeof *e);
          if (ne == NULL)
            break;
          e = ne;
          alloc = na;
        }
      e[used].name = strdup (de->d_name);
      if (e[used].name == NULL)
        break;
      e[used].mtime_ms = (int64_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
      used++;
    }
  closedir (dir);
  if (de != NULL && used < SPOOL_SCAN_MAX)
    {
      ents_free (e, used);
      return bvm_error (err, ENOMEM, "scanning `%s/%s`", s->root, dir_names[d]);
    }
  *out = e;
  *n = used;
  return 0;
}

/* --- lease documents ------------------------------------------------------ */

struct lease_view
{
  unsigned attempt;
  const char *owner;
  int64_t until;
  unsigned drained; /* attempts given back by a stopping runner: not counted */
};

static bool
lease_view (struct lease_view *v, const json_t *lease)
{
  json_t *a = json_object_get (lease, "attempt"), *o = json_object_get (lease, "owner");
  json_t *u = json_object_get (lease, "lease_until");
  json_t *d = json_object_get (lease, "drained");

  if (!json_is_integer (a) || !json_is_string (o) || !json_is_integer (u)
      || json_integer_value (a) < 0 || json_integer_value (a) > 1000000)
    return false;
  v->attempt = (unsigned) json_integer_value (a);
  v->owner = json_string_value (o);
  v->until = json_integer_value (u);
  v->drained = 0;
  if (json_is_integer (d) && json_integer_value (d) > 0 && json_integer_value (d) <= 1000000)
    v->drained = (unsigned) json_integer_value (d);
  return true;
}

/* The lease file `ln` in d (*lease NULL when there is none, or it is not
 * JSON) and, when it reads as a lease, what it says in v. */
static int
read_lease (json_t **lease, struct lease_view *v, struct spool *s, enum spool_dir d,
            const char *ln, bvm_error_t *err)
{
  int ret = spool_read_json (lease, s, d, ln, SPOOL_LEASE_MAX, err);
  if (ret >= 0 && *lease != NULL)
    lease_view (v, *lease);
  return ret;
}

/* The lease's history plus one entry for the attempt the lease describes. */
static json_t *
history_with (const json_t *lease, const char *outcome, int64_t now)
{
  json_t *old = lease ? json_object_get (lease, "history") : NULL;
  json_t *h = json_array (), *e;
  size_t i;
  json_t *v;

  if (h == NULL)
    return NULL;
  if (json_is_array (old))
    json_array_foreach (old, i, v)
      json_array_append (h, v);
  if (lease != NULL)
    {
      e = json_pack ("{s:O?,s:O?,s:O?,s:O?,s:O?,s:I,s:s}", "attempt",
                     json_object_get (lease, "attempt"), "owner", json_object_get (lease, "owner"),
                     "host", json_object_get (lease, "host"), "pid",
                     json_object_get (lease, "pid"), "leased_at",
                     json_object_get (lease, "leased_at"), "ended_at", (json_int_t) now, "outcome",
                     outcome);
      if (e == NULL || json_array_append_new (h, e) < 0)
        {
          json_decref (h);
          return NULL;
        }
    }
  while (json_array_size (h) > SPOOL_HISTORY_MAX)
    json_array_remove (h, 0);
  return h;
}

static json_t *
new_lease (struct spool *s, const char *id, unsigned attempt, unsigned drained, json_t *history,
           int64_t now)
{
  return json_pack ("{s:s,s:s,s:i,s:i,s:s,s:i,s:I,s:I,s:o}", "job", id, "owner", s->q.consumer,
                    "attempt", (int) attempt, "drained", (int) drained, "host", s->host, "pid",
                    (int) getpid (), "leased_at", (json_int_t) now, "lease_until",
                    (json_int_t) now + s->q.lease_ms, "history",
                    history ? history : json_array ());
}

/* --- dead letters --------------------------------------------------------- */

struct burial
{
  const char *id; /* a valid job id, or NULL when the message has none */
  bool unique;    /* never take dead/<id>.json: a duplicate of a live job */
  const char *reason;
  unsigned attempt;  /* 0 when it never ran */
  const char *owner; /* the last holder, or NULL */
  json_t *history;   /* borrowed, may be NULL */
  const char *body;  /* the request text, may be NULL */
  size_t body_len;
  const char *record; /* JSON text, may be NULL */
  enum spool_dir msg_dir;
  const char *msg_name; /* the message file, kept as dead/<base>.msg; may be NULL */
};

/* Keep an older dead letter of the same job under a name no job can have. */
static int
archive_dead (struct spool *s, const char *id, bvm_error_t *err)
{
  char from[NAME_BUF], to[NAME_BUF];
  int64_t now = queue__wall_ms ();
  static const char *const exts[] = { "json", "msg" };

  for (size_t i = 0; i < ARRAY_SIZE (exts); i++)
    {
      if (name_of (from, id, exts[i]) < 0
          || snprintf_checked (to, sizeof to, "%s~%lld.%s", id, (long long) now, exts[i]) < 0)
        return bvm_error (err, ENAMETOOLONG, "dead letter name");
      if (!exists_at (s->dfd[D_DEAD], from))
        continue;
      if (renameat (s->dfd[D_DEAD], from, s->dfd[D_DEAD], to) < 0)
        return bvm_error (err, errno, "archive `%s/dead/%s`", s->root, from);
    }
  return 0;
}

static int
spool_bury (struct spool *s, const struct burial *b, bvm_error_t *err)
{
  char base[NAME_BUF], name[NAME_BUF], show[QUEUE__SHOW_SIZE];
  cleanup_json json_t *doc = NULL;
  cleanup_error bvm_error_t perr = NULL;
  json_t *request = NULL, *record = NULL;
  int64_t now = queue__wall_ms ();
  int ret;

  if (b->id != NULL && !b->unique)
    {
      ret = archive_dead (s, b->id, err);
      if (ret < 0)
        return ret;
      snprintf (base, sizeof base, "%s", b->id);
    }
  else if (snprintf_checked (base, sizeof base, "~%lld-%d-%lu", (long long) now, (int) getpid (),
                             __atomic_add_fetch (&spool_seq, 1, __ATOMIC_RELAXED))
           < 0)
    return bvm_error (err, ENAMETOOLONG, "dead letter name");

  if (b->body != NULL
      && jsonx_parse (&request, b->body, b->body_len, JOB_REQUEST_MAX_BYTES, "request", &perr) < 0)
    request = NULL;
  if (b->record != NULL)
    record = json_loads (b->record, JSON_DECODE_ANY, NULL);
  doc = json_pack ("{s:s?,s:s,s:s,s:i,s:s?,s:I,s:s?,s:o?,s:o?,s:O?}", "job", b->id, "state",
                   "dead", "reason", b->reason, "attempt", (int) b->attempt, "owner", b->owner,
                   "at", (json_int_t) now, "file",
                   b->msg_name ? queue__show (show, sizeof show, b->msg_name, strlen (b->msg_name))
                               : NULL,
                   "request", request, "record", record, "history", b->history);
  if (doc == NULL)
    return bvm_error (err, ENOMEM, "dead letter");
  if (name_of (name, base, "json") < 0)
    return bvm_error (err, ENAMETOOLONG, "dead letter name");
  ret = spool_write_json (s, D_DEAD, name, doc, true, err);
  if (ret < 0)
    return ret;
  if (b->msg_name != NULL)
    {
      if (name_of (name, base, "msg") < 0)
        return bvm_error (err, ENAMETOOLONG, "dead letter name");
      if (renameat (s->dfd[b->msg_dir], b->msg_name, s->dfd[D_DEAD], name) < 0 && errno != ENOENT)
        return bvm_error (err, errno, "move `%s/%s/%s` to dead/", s->root, dir_names[b->msg_dir],
                          b->msg_name);
      fsync (s->dfd[b->msg_dir]);
      fsync (s->dfd[D_DEAD]);
    }
  return 0;
}

/* --- open / close --------------------------------------------------------- */

static int
check_dir (struct spool *s, int fd, const char *what, bvm_error_t *err)
{
  struct stat st;
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", what);
  /* Someone else who can write here could plant, swap or remove jobs: the
   * spool is a single user's. */
  if (!S_ISDIR (st.st_mode) || st.st_uid != s->uid || (st.st_mode & 022) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`%s` must be a directory owned by uid %d that group and others "
                           "cannot write",
                           what, (int) s->uid);
  return 0;
}

static void
clean_tmp (struct spool *s)
{
  struct ent *e = NULL;
  size_t n = 0;
  cleanup_error bvm_error_t err = NULL;
  int64_t now = queue__wall_ms ();
  int fd = s->dfd[D_TMP];

  /* a producer that died mid-write leaves a file behind; an hour is far
   * longer than any write takes */
  if (spool_scan (&e, &n, s, D_TMP, NULL, &err) < 0)
    return;
  for (size_t i = 0; i < n; i++)
    if (now - e[i].mtime_ms > SPOOL_TMP_STALE_MS)
      unlinkat (fd, e[i].name, 0);
  ents_free (e, n);
  {
    /* our own temporary names start with a dot, which the scan skips */
    DIR *d;
    struct dirent *de;
    int fd2 = openat (fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd2 < 0 || (d = fdopendir (fd2)) == NULL)
      {
        if (fd2 >= 0)
          close (fd2);
        return;
      }
    while ((de = readdir (d)) != NULL)
      {
        struct stat st;
        if (strncmp (de->d_name, ".w.", 3) != 0
            || fstatat (fd2, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode)
            || st.st_uid != s->uid)
          continue;
        if (now - ((int64_t) st.st_mtim.tv_sec * 1000) > SPOOL_TMP_STALE_MS)
          unlinkat (fd2, de->d_name, 0);
      }
    closedir (d);
  }
}

static void
spool_close (struct queue *q)
{
  struct spool *s = S (q);
  if (s == NULL)
    return;
  for (int i = 0; i < D_N; i++)
    if (s->dfd[i] >= 0)
      close (s->dfd[i]);
  if (s->root_fd >= 0)
    close (s->root_fd);
  if (s->lock_fd >= 0)
    close (s->lock_fd);
  free (s->root);
  queue__dispose (&s->q);
  free (s);
}

/* "spool:" and an absolute directory, as text (no control characters: the
 * path is shown in messages and logs). */
static const char *
spool_check_url (const char *url)
{
  const char *path = url + strlen ("spool:");

  if (path[0] != '/' || text_problem (path, strlen (path)) != NULL)
    return "must be `spool:` followed by an absolute directory";
  return NULL;
}

static int
spool_open (struct queue **out, const char *url, const struct queue_opts *o, bvm_error_t *err)
{
  struct spool *s = calloc (1, sizeof *s);
  struct queue *guard;
  const char *path = url + strlen ("spool:");
  struct stat st;
  int ret;

  if (s == NULL)
    return bvm_error (err, ENOMEM, "spool");
  s->root_fd = s->lock_fd = -1;
  for (int i = 0; i < D_N; i++)
    s->dfd[i] = -1;
  guard = &s->q;
  s->q.drv = &queue__spool_driver;
  ret = queue__init (&s->q, &queue__spool_driver, o, err);
  if (ret < 0)
    goto fail;
  s->uid = geteuid ();
  if (gethostname (s->host, sizeof s->host - 1) < 0)
    strcpy (s->host, "localhost");
  s->root = strdup (path); /* checked by spool_check_url */
  if (s->root == NULL)
    {
      ret = bvm_error (err, ENOMEM, "spool");
      goto fail;
    }
  ret = fs_mkdir_p (path, 0700, err);
  if (ret < 0)
    goto fail;
  s->root_fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->root_fd < 0)
    {
      ret = bvm_error (err, errno, "open `%s`", path);
      goto fail;
    }
  ret = check_dir (s, s->root_fd, path, err);
  if (ret < 0)
    goto fail;
  for (int i = 0; i < D_N; i++)
    {
      char what[PATH_MAX];
      snprintf (what, sizeof what, "%s/%s", path, dir_names[i]);
      if (mkdirat (s->root_fd, dir_names[i], 0700) < 0 && errno != EEXIST)
        {
          ret = bvm_error (err, errno, "mkdir `%s`", what);
          goto fail;
        }
      s->dfd[i] = openat (s->root_fd, dir_names[i],
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (s->dfd[i] < 0)
        {
          ret = bvm_error (err, errno, "open `%s`", what);
          goto fail;
        }
      ret = check_dir (s, s->dfd[i], what, err);
      if (ret < 0)
        goto fail;
    }
  s->lock_fd = openat (s->root_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (s->lock_fd < 0)
    {
      ret = bvm_error (err, errno, "open `%s/lock`", path);
      goto fail;
    }
  if (fstat (s->lock_fd, &st) < 0 || !S_ISREG (st.st_mode) || st.st_uid != s->uid)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "`%s/lock` must be a regular file of ours",
                            path);
      goto fail;
    }
  clean_tmp (s);
  *out = steal_pointer (&guard);
  return 0;

fail:
  spool_close (guard);
  return ret;
}

/* --- lease ---------------------------------------------------------------- */

static int
make_msg (struct queue_msg **out, struct spool *s, const char *id, json_t *lease,
          struct queue_msg *m)
{
  struct lease_view v;
  char n[NAME_BUF];

  if (!lease_view (&v, lease) || name_of (n, id, "json") < 0)
    return -1;
  m->msg_id = strdup (n);
  m->owner = strdup (s->q.consumer);
  if (m->msg_id == NULL || m->owner == NULL)
    return -1;
  m->attempt = v.attempt;
  m->last_attempt = s->q.max_attempts + v.drained;
  m->lease_until_ms = v.until;
  m->redelivered = v.attempt > 1;
  *out = m;
  return 0;
}

/* Read and validate the request `name` in directory d for job `id`. Returns
 * SR_* and, for SR_OK, a message with the request filled in; *why is the
 * dead-letter reason when the request is poison (then *m is NULL). */
static int
load_request (struct queue_msg **m, char **why, char **raw, size_t *raw_len, struct spool *s,
              enum spool_dir d, const char *name, const char *id, bvm_error_t *err)
{
  cleanup_error bvm_error_t perr = NULL;
  struct queue_msg *msg;
  size_t len;
  int ret;

  *m = NULL;
  *why = NULL;
  *raw = NULL;
  *raw_len = 0;
  ret = spool_read (raw, &len, NULL, s, d, name, JOB_REQUEST_MAX_BYTES, err);
  if (ret < 0 || ret == SR_ABSENT || ret == SR_IGNORED)
    return ret;
  if (ret == SR_TOOBIG)
    {
      if (asprintf (why, "the message is larger than %d bytes (%zu)", JOB_REQUEST_MAX_BYTES, len)
          < 0)
        return bvm_error (err, ENOMEM, "dead letter");
      return SR_OK;
    }
  *raw_len = len;
  msg = calloc (1, sizeof *msg);
  if (msg == NULL)
    return bvm_error (err, ENOMEM, "message");
  if (queue__parse_body (msg, *raw, len, id, &perr) < 0)
    {
      queue_msg_free (msg);
      if (bvm_error_get_code (&perr) != BVM_E_INVALID && bvm_error_get_code (&perr) != BVM_E_LIMIT)
        return bvm_error (err, ENOMEM, "message `%s`", name);
      *why = queue__reason (bvm_error_msg (&perr));
      if (*why == NULL)
        return bvm_error (err, ENOMEM, "dead letter");
      return SR_OK;
    }
  *m = msg;
  return SR_OK;
}

/* Remove what is left in cur/ of a job that is finished or gone. */
static void
ack_cur (struct spool *s, const char *id)
{
  unlink_job_file (s, D_CUR, id, "json");
  unlink_job_file (s, D_CUR, id, "lease");
  unlink_job_file (s, D_CUR, id, "cancel");
}

struct cand
{
  char id[JOB_KEY_MAX + 1];
  int64_t until;
  json_t *lease; /* NULL: no lease file (a crash between steps) */
};

static int
cand_cmp (const void *a, const void *b)
{
  const struct cand *x = a, *y = b;
  return time_name_cmp (x->until, x->id, y->until, y->id);
}

/* Remove the sidecars in directory d (from a scan of it) whose request,
 * <id>.json, is gone: every sidecar, or only those with extension `only`. */
static void
sweep_orphans (struct spool *s, int d, const struct ent *e, size_t n, const char *only)
{
  for (size_t i = 0; i < n; i++)
    {
      char id[JOB_KEY_MAX + 1];
      const char *ext = split_name (id, e[i].name);
      if (ext == NULL || strcmp (ext, "json") == 0 || (only && strcmp (ext, only) != 0))
        continue;
      if (!job_file_exists (s, d, id, "json"))
        unlinkat (s->dfd[d], e[i].name, 0);
    }
}

/* Take over one expired lease in cur/, under the lock. */
static int
take_over_expired (struct queue_msg **out, struct spool *s, bvm_error_t *err)
{
  struct ent *e = NULL;
  struct cand *c = NULL;
  size_t n = 0, nc = 0;
  int64_t now = queue__wall_ms ();
  int ret;

  /* orphans first: a lease or cancel flag whose request is gone */
  ret = spool_scan (&e, &n, s, D_CUR, NULL, err);
  if (ret < 0)
    return ret;
  sweep_orphans (s, D_CUR, e, n, NULL);
  c = calloc (n ? n : 1, sizeof *c);
  if (c == NULL)
    {
      ents_free (e, n);
      return bvm_error (err, ENOMEM, "lease");
    }
  for (size_t i = 0; i < n; i++)
    {
      char id[JOB_KEY_MAX + 1], ln[NAME_BUF];
      const char *ext = split_name (id, e[i].name);
      json_t *lease = NULL;
      struct lease_view v;

      if (ext == NULL || strcmp (ext, "json") != 0)
        continue;
      if (job_file_exists (s, D_DONE, id, "json") || job_file_exists (s, D_DEAD, id, "json"))
        {
          /* the terminal record was written, the ack was not: finish it */
          ack_cur (s, id);
          continue;
        }
      name_of (ln, id, "lease");
      ret = spool_read_json (&lease, s, D_CUR, ln, SPOOL_LEASE_MAX, err);
      if (ret < 0)
        goto cleanup;
      if (ret == SR_IGNORED)
        continue;
      if ((ret == SR_OK && (lease == NULL || !lease_view (&v, lease))) || ret == SR_TOOBIG)
        {
          json_decref (lease);
          /* a lease we cannot read: nobody can prove they own this job, so
           * nobody may run it again */
          struct burial b = { .id = id,
                              .reason = "the lease file is corrupt",
                              .msg_dir = D_CUR,
                              .msg_name = e[i].name };
          ret = spool_bury (s, &b, err);
          if (ret < 0)
            goto cleanup;
          ack_cur (s, id);
          continue;
        }
      if (lease != NULL && v.until >= now)
        {
          json_decref (lease);
          continue;
        }
      snprintf (c[nc].id, sizeof c[nc].id, "%s", id);
      c[nc].until = lease ? v.until : 0;
      c[nc].lease = lease;
      nc++;
    }
  if (nc > 1)
    qsort (c, nc, sizeof *c, cand_cmp);
  ret = 0;
  for (size_t i = 0; i < nc && *out == NULL; i++)
    {
      struct lease_view v = { 0, "(unknown)", 0, 0 };
      cleanup_free char *why = NULL, *raw = NULL, *reason = NULL;
      cleanup_json json_t *hist = NULL, *lease = NULL;
      struct queue_msg *m = NULL;
      char jn[NAME_BUF], ln[NAME_BUF];
      size_t raw_len;
      unsigned next;

      if (c[i].lease != NULL)
        lease_view (&v, c[i].lease);
      name_of (jn, c[i].id, "json");
      name_of (ln, c[i].id, "lease");
      hist = history_with (c[i].lease, "lease expired", now);
      if (hist == NULL)
        {
          ret = bvm_error (err, ENOMEM, "lease history");
          break;
        }
      next = v.attempt + 1;
      ret = load_request (&m, &why, &raw, &raw_len, s, D_CUR, jn, c[i].id, err);
      if (ret < 0)
        break;
      if (ret != SR_OK)
        continue;
      if (why == NULL && job_file_exists (s, D_CUR, c[i].id, "cancel"))
        why = strdup ("canceled");
      if (why == NULL && next > s->q.max_attempts + v.drained)
        {
          if (asprintf (&reason,
                        "gave up after %u attempts: the lease of attempt %u (`%s`) expired",
                        v.attempt, v.attempt, v.owner)
              < 0)
            reason = NULL;
          why = steal_pointer (&reason);
        }
      if (why != NULL)
        {
          struct burial b = { .id = c[i].id,
                              .reason = why,
                              .attempt = v.attempt,
                              .owner = v.owner,
                              .history = hist,
                              .body = raw,
                              .body_len = raw_len,
                              .msg_dir = D_CUR,
                              .msg_name = jn };
          queue_msg_free (m);
          ret = spool_bury (s, &b, err);
          if (ret < 0)
            break;
          ack_cur (s, c[i].id);
          continue;
        }
      lease = new_lease (s, c[i].id, next, v.drained, steal_pointer (&hist), now);
      if (lease == NULL)
        {
          queue_msg_free (m);
          ret = bvm_error (err, ENOMEM, "lease");
          break;
        }
      ret = spool_write_json (s, D_CUR, ln, lease, true, err);
      if (ret < 0 || make_msg (out, s, c[i].id, lease, m) < 0)
        {
          queue_msg_free (m);
          if (ret == 0)
            ret = bvm_error (err, ENOMEM, "lease");
          break;
        }
    }
cleanup:
  for (size_t i = 0; i < nc; i++)
    json_decref (c[i].lease);
  free (c);
  ents_free (e, n);
  return ret < 0 ? ret : 0;
}

/* Lease the oldest request in new/, under the lock. */
static int
lease_new (struct queue_msg **out, struct spool *s, bvm_error_t *err)
{
  struct ent *e = NULL;
  size_t n = 0;
  int64_t now = queue__wall_ms ();
  int ret;

  ret = spool_scan (&e, &n, s, D_NEW, NULL, err);
  if (ret < 0)
    return ret;
  /* sidecars of released jobs whose request is gone */
  sweep_orphans (s, D_NEW, e, n, "lease");
  if (n > 1)
    qsort (e, n, sizeof *e, ent_older);
  for (size_t i = 0; i < n && *out == NULL; i++)
    {
      char id[JOB_KEY_MAX + 1], ln[NAME_BUF], show[QUEUE__SHOW_SIZE];
      const char *ext = split_name (id, e[i].name);
      cleanup_free char *why = NULL, *raw = NULL;
      cleanup_json json_t *side = NULL, *hist = NULL, *lease = NULL;
      struct queue_msg *m = NULL;
      struct lease_view v = { 0, NULL, 0, 0 };
      bool valid_name = ext != NULL && strcmp (ext, "json") == 0;
      bool unique = false;
      size_t raw_len = 0;

      if (ext != NULL && strcmp (ext, "lease") == 0)
        continue;
      if (valid_name
          && (job_file_exists (s, D_CUR, id, "json") || job_file_exists (s, D_DONE, id, "json")))
        {
          /* a second copy dropped in by hand: the first one wins */
          unique = true;
          if (asprintf (&why, "duplicate: job `%s` is already %s", id,
                        job_file_exists (s, D_CUR, id, "json") ? "running" : "done")
              < 0)
            why = NULL;
        }
      else if (!valid_name)
        {
          if (asprintf (&why, "the file name `%s` is not `<app>+<job id>.json`",
                        queue__show (show, sizeof show, e[i].name, strlen (e[i].name)))
              < 0)
            why = NULL;
        }
      else
        {
          ret = load_request (&m, &why, &raw, &raw_len, s, D_NEW, e[i].name, id, err);
          if (ret < 0)
            break;
          if (ret != SR_OK)
            continue;
        }
      if (valid_name && !unique)
        {
          name_of (ln, id, "lease");
          ret = spool_read_json (&side, s, D_NEW, ln, SPOOL_LEASE_MAX, err);
          if (ret < 0)
            {
              queue_msg_free (m);
              break;
            }
          if (side != NULL)
            lease_view (&v, side);
        }
      if (why == NULL && v.attempt + 1 > s->q.max_attempts + v.drained)
        {
          if (asprintf (&why, "gave up after %u attempts", v.attempt) < 0)
            why = NULL;
        }
      if (why == NULL && m == NULL)
        {
          ret = bvm_error (err, ENOMEM, "lease");
          break;
        }
      if (why != NULL)
        {
          struct burial b = { .id = valid_name ? id : NULL,
                              .unique = unique,
                              .reason = why,
                              .attempt = v.attempt,
                              .owner = v.owner,
                              .history = side ? json_object_get (side, "history") : NULL,
                              .body = raw,
                              .body_len = raw_len,
                              .msg_dir = D_NEW,
                              .msg_name = e[i].name };
          queue_msg_free (m);
          ret = spool_bury (s, &b, err);
          if (ret < 0)
            break;
          if (valid_name && !unique)
            unlink_job_file (s, D_NEW, id, "lease");
          continue;
        }
      hist = side ? json_incref (json_object_get (side, "history")) : NULL;
      if (hist == NULL)
        hist = json_array ();
      /* the lease first, then the move: a crash in between leaves a lease
       * without a request in cur/, which the next pass removes */
      lease = new_lease (s, id, v.attempt + 1, v.drained, json_deep_copy (hist), now);
      name_of (ln, id, "lease");
      if (lease == NULL)
        ret = bvm_error (err, ENOMEM, "lease");
      else
        ret = spool_write_json (s, D_CUR, ln, lease, true, err);
      if (ret == 0 && renameat (s->dfd[D_NEW], e[i].name, s->dfd[D_CUR], e[i].name) < 0)
        ret = bvm_error (err, errno, "move `%s` to cur/", e[i].name);
      if (ret < 0)
        {
          unlink_job_file (s, D_CUR, id, "lease");
          queue_msg_free (m);
          break;
        }
      fsync (s->dfd[D_NEW]);
      fsync (s->dfd[D_CUR]);
      unlink_job_file (s, D_NEW, id, "lease");
      if (make_msg (out, s, id, lease, m) < 0)
        {
          queue_msg_free (m);
          ret = bvm_error (err, ENOMEM, "lease");
          break;
        }
    }
  ents_free (e, n);
  return ret < 0 ? ret : 0;
}

static int
spool_lease (struct queue_msg **out, struct queue *q, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  int ret;

  *out = NULL;
  ret = spool_lock (s, err);
  if (ret < 0)
    return ret;
  locked = s;
  /* q.ignored: what this pass skipped, so that a daemon can report a
   * change without being flooded by the same file on every look */
  s->q.ignored = 0;
  s->counting = true;
  ret = take_over_expired (out, s, err);
  if (ret == 0 && *out == NULL)
    ret = lease_new (out, s, err);
  s->counting = false;
  return ret;
}

/* --- the holder's operations ---------------------------------------------- */

static bool
msg_id_ok (const struct queue_msg *m)
{
  return m != NULL && m->key != NULL && job_key_problem (m->key) == NULL && m->owner != NULL;
}

/* The current lease of m's job when m's attempt holds it, else BVM_E_FENCED. */
static int
fence (json_t **lease_out, struct spool *s, const struct queue_msg *m, bool check_expiry,
       bvm_error_t *err)
{
  cleanup_json json_t *lease = NULL;
  char ln[NAME_BUF];
  struct lease_view v;
  int ret;

  if (lease_out != NULL)
    *lease_out = NULL;
  if (!msg_id_ok (m))
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "not a leased message");
  if (!job_file_exists (s, D_CUR, m->key, "json"))
    return bvm_error_code (err, BVM_E_FENCED, 0, "fenced off: the job is no longer leased");
  name_of (ln, m->key, "lease");
  ret = spool_read_json (&lease, s, D_CUR, ln, SPOOL_LEASE_MAX, err);
  if (ret < 0)
    return ret;
  if (lease == NULL || !lease_view (&v, lease))
    return bvm_error_code (err, BVM_E_FENCED, 0, "fenced off: the job has no readable lease");
  if (v.attempt != m->attempt || strcmp (v.owner, m->owner) != 0)
    return bvm_error_code (err, BVM_E_FENCED, 0, "fenced off: attempt %u (`%s`) holds the job now",
                           v.attempt, v.owner);
  if (check_expiry && v.until < queue__wall_ms ())
    return bvm_error_code (err, BVM_E_FENCED, 0,
                           "fenced off: the lease expired %lld ms ago and may be taken over",
                           (long long) (queue__wall_ms () - v.until));
  if (lease_out != NULL)
    *lease_out = steal_pointer (&lease);
  return 0;
}

/* Take the spool's lock (*locked set, for its cleanup) and check that m's
 * holder still holds it: *lease its lease. */
static int
lock_fenced (struct spool **locked, json_t **lease, struct spool *s, const struct queue_msg *m,
             bvm_error_t *err)
{
  int ret = spool_lock (s, err);
  if (ret < 0)
    return ret;
  *locked = s;
  return fence (lease, s, m, false, err);
}

static int
spool_heartbeat (struct queue *q, struct queue_msg *m, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  cleanup_json json_t *lease = NULL;
  char ln[NAME_BUF];
  int64_t until = queue__wall_ms () + q->lease_ms;
  int ret;

  ret = lock_fenced (&locked, &lease, s, m, err);
  if (ret < 0)
    return ret;
  if (json_object_set_new (lease, "lease_until", json_integer (until)) < 0)
    return bvm_error (err, ENOMEM, "heartbeat");
  name_of (ln, m->key, "lease");
  /* not fsynced: after a machine crash every holder is gone anyway, and an
   * older deadline only lets the job be taken over sooner */
  ret = spool_write_json (s, D_CUR, ln, lease, false, err);
  if (ret < 0)
    return ret;
  m->lease_until_ms = until;
  return 0;
}

static int
spool_check_fence (struct queue *q, const struct queue_msg *m, bvm_error_t *err)
{
  /* No lock: the lease file is replaced atomically, so a read sees either
   * the old or the new lease, and a takeover needs an expired lease, which
   * this check refuses as well. */
  return fence (NULL, S (q), m, true, err);
}

static int
spool_complete (struct queue *q, struct queue_msg *m, const char *record, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  cleanup_json json_t *lease = NULL, *doc = NULL, *hist = NULL;
  json_t *rec, *req;
  char dn[NAME_BUF];
  int64_t now = queue__wall_ms ();
  int ret;

  ret = lock_fenced (&locked, &lease, s, m, err);
  if (ret < 0)
    return ret;
  hist = history_with (lease, "done", now);
  rec = json_loads (record, JSON_DECODE_ANY, NULL);
  req = json_loadb (m->body, m->len, 0, NULL);
  doc = json_pack ("{s:s,s:s,s:i,s:s,s:s,s:i,s:O?,s:I,s:o?,s:o?,s:O?}", "job", m->key, "state",
                   "done", "attempt", (int) m->attempt, "owner", m->owner, "host", s->host, "pid",
                   (int) getpid (), "leased_at", json_object_get (lease, "leased_at"),
                   "finished_at", (json_int_t) now, "request", req, "record", rec, "history",
                   hist);
  if (doc == NULL || rec == NULL)
    return bvm_error (err, ENOMEM, "done record");
  name_of (dn, m->key, "json");
  /* the record, durably, and only then the ack */
  ret = spool_write_json (s, D_DONE, dn, doc, true, err);
  if (ret < 0)
    return ret;
  ack_cur (s, m->key);
  fsync (s->dfd[D_CUR]);
  return 0;
}

static int
spool_release (struct queue *q, struct queue_msg *m, const char *reason, bool drain,
               bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  cleanup_json json_t *lease = NULL, *side = NULL, *hist = NULL;
  cleanup_free char *outcome = NULL;
  struct lease_view v = { 0, NULL, 0, 0 };
  char jn[NAME_BUF], ln[NAME_BUF];
  int64_t now = queue__wall_ms ();
  int ret;

  ret = lock_fenced (&locked, &lease, s, m, err);
  if (ret < 0)
    return ret;
  if (asprintf (&outcome, "%s: %s", drain ? "drained" : "released", reason) < 0)
    return bvm_error (err, ENOMEM, "release");
  lease_view (&v, lease);
  hist = history_with (lease, outcome, now);
  side = json_pack ("{s:s,s:i,s:i,s:s,s:I,s:s,s:I,s:O}", "job", m->key, "attempt",
                    (int) m->attempt, "drained", (int) (v.drained + (drain ? 1 : 0)), "owner",
                    m->owner, "lease_until", (json_int_t) 0, "reason", reason, "released_at",
                    (json_int_t) now, "history", hist ? hist : json_null ());
  if (side == NULL)
    return bvm_error (err, ENOMEM, "release");
  name_of (jn, m->key, "json");
  name_of (ln, m->key, "lease");
  /* the attempt count first, then the request: a crash in between leaves
   * the job in cur/ with its old lease, which simply expires */
  ret = spool_write_json (s, D_NEW, ln, side, true, err);
  if (ret < 0)
    return ret;
  if (renameat (s->dfd[D_CUR], jn, s->dfd[D_NEW], jn) < 0)
    {
      int e = errno;
      unlinkat (s->dfd[D_NEW], ln, 0);
      return bvm_error (err, e, "move `%s` back to new/", jn);
    }
  fsync (s->dfd[D_NEW]);
  ack_cur (s, m->key);
  return 0;
}

static int
spool_dead_letter (struct queue *q, struct queue_msg *m, const char *reason, const char *record,
                   bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  cleanup_json json_t *lease = NULL, *hist = NULL;
  char jn[NAME_BUF];
  int ret;

  ret = lock_fenced (&locked, &lease, s, m, err);
  if (ret < 0)
    return ret;
  hist = history_with (lease, "dead", queue__wall_ms ());
  name_of (jn, m->key, "json");
  {
    struct burial b = { .id = m->key,
                        .reason = reason,
                        .attempt = m->attempt,
                        .owner = m->owner,
                        .history = hist,
                        .body = m->body,
                        .body_len = m->len,
                        .record = record,
                        .msg_dir = D_CUR,
                        .msg_name = jn };
    ret = spool_bury (s, &b, err);
  }
  if (ret < 0)
    return ret;
  ack_cur (s, m->key);
  return 0;
}

/* --- operator's operations ------------------------------------------------ */

static int
spool_cancel (bool *was_running, struct queue *q, const char *job_id, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  char n[NAME_BUF];
  int ret;

  ret = spool_lock (s, err);
  if (ret < 0)
    return ret;
  locked = s;
  if (job_file_exists (s, D_CUR, job_id, "json"))
    {
      int fd;
      name_of (n, job_id, "cancel");
      fd = openat (s->dfd[D_CUR], n, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0)
        return bvm_error (err, errno, "create `%s/cur/%s`", s->root, n);
      close (fd);
      *was_running = true;
      return 0;
    }
  if (job_file_exists (s, D_NEW, job_id, "json"))
    {
      cleanup_free char *raw = NULL;
      cleanup_json json_t *side = NULL;
      struct lease_view v = { 0, NULL, 0, 0 };
      char ln[NAME_BUF];
      size_t len = 0;

      name_of (n, job_id, "json");
      name_of (ln, job_id, "lease");
      ret = spool_read (&raw, &len, NULL, s, D_NEW, n, JOB_REQUEST_MAX_BYTES, err);
      if (ret < 0)
        return ret;
      ret = read_lease (&side, &v, s, D_NEW, ln, err);
      if (ret < 0)
        return ret;
      {
        struct burial b = { .id = job_id,
                            .reason = "canceled before it ran",
                            .attempt = v.attempt,
                            .owner = v.owner,
                            .history = side ? json_object_get (side, "history") : NULL,
                            .body = raw,
                            .body_len = len,
                            .msg_dir = D_NEW,
                            .msg_name = n };
        ret = spool_bury (s, &b, err);
      }
      if (ret < 0)
        return ret;
      unlinkat (s->dfd[D_NEW], ln, 0);
      *was_running = false;
      return 0;
    }
  if (job_file_exists (s, D_DONE, job_id, "json") || job_file_exists (s, D_DEAD, job_id, "json"))
    return bvm_error_code (err, BVM_E_INVALID, 0, "the job has already finished (%s)",
                           job_file_exists (s, D_DONE, job_id, "json") ? "done" : "dead");
  return bvm_error_code (err, BVM_E_INVALID, 0, "no such job is queued or running");
}

static int
spool_cancel_requested (struct queue *q, const struct queue_msg *m, bvm_error_t *err)
{
  (void) err;
  if (!msg_id_ok (m))
    return 0;
  return job_file_exists (S (q), D_CUR, m->key, "cancel") ? 1 : 0;
}

static int
spool_enqueue (char **msg_id, enum queue_state *existing, struct queue *q, const char *key,
               const char *body, size_t len, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  char tmp[NAME_BUF], jn[NAME_BUF];
  cleanup_close int fd = -1;
  int ret;

  if (name_of (jn, key, "json") < 0
      || snprintf_checked (tmp, sizeof tmp, ".e.%d.%lu", (int) getpid (),
                           __atomic_add_fetch (&spool_seq, 1, __ATOMIC_RELAXED))
             < 0)
    return bvm_error (err, ENAMETOOLONG, "job file name");
  if ((*msg_id = strdup (jn)) == NULL)
    return bvm_error (err, ENOMEM, "enqueue");
  /* written and synced outside the lock: only the link below needs it */
  fd = openat (s->dfd[D_TMP], tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s/tmp/%s`", s->root, tmp);
  if (fs_write_all (fd, body, len) < 0 || fsync (fd) < 0)
    {
      int e = errno;
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return bvm_error (err, e, "write `%s/tmp/%s`", s->root, tmp);
    }
  ret = spool_lock (s, err);
  if (ret < 0)
    {
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return ret;
    }
  locked = s;
  *existing = job_file_exists (s, D_CUR, key, "json")    ? QUEUE_STATE_RUNNING
              : exists_at (s->dfd[D_NEW], jn)            ? QUEUE_STATE_QUEUED
              : job_file_exists (s, D_DONE, key, "json") ? QUEUE_STATE_DONE
                                                         : QUEUE_STATE_NONE;
  if (*existing != QUEUE_STATE_NONE)
    {
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return 0;
    }
  ret = archive_dead (s, key, err);
  if (ret < 0)
    {
      unlinkat (s->dfd[D_TMP], tmp, 0);
      return ret;
    }
  unlink_job_file (s, D_NEW, key, "lease");
  /* link, not rename: a file a producer dropped into new/ without the lock
   * in the meantime is never overwritten */
  if (linkat (s->dfd[D_TMP], tmp, s->dfd[D_NEW], jn, 0) < 0)
    {
      int e = errno;
      unlinkat (s->dfd[D_TMP], tmp, 0);
      if (e == EEXIST)
        {
          *existing = QUEUE_STATE_QUEUED;
          return 0;
        }
      return bvm_error (err, e, "link `%s` into new/", jn);
    }
  unlinkat (s->dfd[D_TMP], tmp, 0);
  if (fsync (s->dfd[D_NEW]) < 0)
    return bvm_error (err, errno, "fsync `%s/new`", s->root);
  return 0;
}

/* A JSON view of a request file for get/list: the parsed object, or null. */
static json_t *
request_json (struct spool *s, enum spool_dir d, const char *name)
{
  cleanup_free char *raw = NULL;
  cleanup_error bvm_error_t err = NULL;
  json_t *doc = NULL;
  size_t len;

  if (spool_read (&raw, &len, NULL, s, d, name, JOB_REQUEST_MAX_BYTES, &err) != SR_OK)
    return json_null ();
  if (jsonx_parse (&doc, raw, len, JOB_REQUEST_MAX_BYTES, "request", &err) < 0)
    return json_null ();
  return doc;
}

static int
spool_get (json_t **out, struct queue *q, const char *job_id, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_spool_lock struct spool *locked = NULL;
  cleanup_json json_t *lease = NULL;
  char jn[NAME_BUF], ln[NAME_BUF];
  struct stat st;
  int ret;

  name_of (jn, job_id, "json");
  name_of (ln, job_id, "lease");
  ret = spool_lock (s, err);
  if (ret < 0)
    return ret;
  locked = s;
  if (job_file_exists (s, D_CUR, job_id, "json"))
    {
      struct lease_view v = { 0, NULL, 0, 0 };
      ret = read_lease (&lease, &v, s, D_CUR, ln, err);
      if (ret < 0)
        return ret;
      *out = json_pack ("{s:s,s:s,s:i,s:s?,s:O?,s:O?,s:I,s:b,s:o,s:O?}", "job", job_id, "state",
                        "running", "attempt", (int) v.attempt, "owner", v.owner, "host",
                        lease ? json_object_get (lease, "host") : NULL, "leased_at",
                        lease ? json_object_get (lease, "leased_at") : NULL, "lease_until",
                        (json_int_t) v.until, "cancel",
                        job_file_exists (s, D_CUR, job_id, "cancel"), "request",
                        request_json (s, D_CUR, jn), "history",
                        lease ? json_object_get (lease, "history") : NULL);
    }
  else if (job_file_exists (s, D_NEW, job_id, "json")
           && fstatat (s->dfd[D_NEW], jn, &st, AT_SYMLINK_NOFOLLOW) == 0)
    {
      struct lease_view v = { 0, NULL, 0, 0 };
      ret = read_lease (&lease, &v, s, D_NEW, ln, err);
      if (ret < 0)
        return ret;
      *out = json_pack ("{s:s,s:s,s:i,s:I,s:o,s:O?}", "job", job_id, "state", "queued", "attempt",
                        (int) v.attempt, "enqueued_at",
                        (json_int_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000,
                        "request", request_json (s, D_NEW, jn), "history",
                        lease ? json_object_get (lease, "history") : NULL);
    }
  else
    {
      enum spool_dir d = job_file_exists (s, D_DONE, job_id, "json") ? D_DONE : D_DEAD;
      ret = spool_read_json (out, s, d, jn, SPOOL_RECORD_FILE_MAX, err);
      if (ret < 0)
        return ret;
      return 0; /* NULL: unknown */
    }
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "job `%s`", job_id);
  return 0;
}

static int
list_dir (json_t *arr, struct spool *s, enum spool_dir d, size_t limit, bvm_error_t *err)
{
  struct ent *e = NULL;
  size_t n = 0;
  int ret = spool_scan (&e, &n, s, d, d == D_DEAD ? "json" : NULL, err);

  if (ret < 0)
    return ret;
  if (n > 1)
    qsort (e, n, sizeof *e, d == D_NEW ? ent_older : ent_newer);
  for (size_t i = 0; i < n && json_array_size (arr) < limit; i++)
    {
      char id[JOB_KEY_MAX + 1], ln[NAME_BUF];
      const char *ext = split_name (id, e[i].name);
      cleanup_json json_t *doc = NULL;
      struct lease_view v = { 0, NULL, 0, 0 };
      json_t *item = NULL;

      if (d == D_DEAD)
        {
          ret = spool_read_json (&doc, s, d, e[i].name, SPOOL_RECORD_FILE_MAX, err);
          if (ret < 0)
            break;
          if (doc == NULL)
            continue;
          item = json_pack ("{s:O?,s:O?,s:O?,s:O?,s:s}", "job", json_object_get (doc, "job"),
                            "reason", json_object_get (doc, "reason"), "attempt",
                            json_object_get (doc, "attempt"), "at", json_object_get (doc, "at"),
                            "file", e[i].name);
        }
      else if (ext == NULL || strcmp (ext, "json") != 0)
        continue;
      else if (d == D_DONE)
        {
          ret = spool_read_json (&doc, s, d, e[i].name, SPOOL_RECORD_FILE_MAX, err);
          if (ret < 0)
            break;
          if (doc == NULL)
            continue;
          item = json_pack ("{s:s,s:O?,s:O?,s:O?}", "job", id, "attempt",
                            json_object_get (doc, "attempt"), "finished_at",
                            json_object_get (doc, "finished_at"), "record",
                            json_object_get (doc, "record"));
        }
      else
        {
          name_of (ln, id, "lease");
          ret = read_lease (&doc, &v, s, d, ln, err);
          if (ret < 0)
            break;
          if (d == D_NEW)
            item = json_pack ("{s:s,s:s,s:i,s:I}", "job", id, "msg", e[i].name, "attempts",
                              (int) v.attempt, "enqueued_at", (json_int_t) e[i].mtime_ms);
          else
            item = json_pack ("{s:s,s:s,s:i,s:s?,s:O?,s:I,s:b}", "job", id, "msg", e[i].name,
                              "attempt", (int) v.attempt, "owner", v.owner, "started_at",
                              doc ? json_object_get (doc, "leased_at") : NULL, "lease_until",
                              (json_int_t) v.until, "cancel",
                              job_file_exists (s, D_CUR, id, "cancel"));
        }
      if (item == NULL || json_array_append_new (arr, item) < 0)
        {
          ret = bvm_error (err, ENOMEM, "listing");
          break;
        }
    }
  ents_free (e, n);
  return ret < 0 ? ret : 0;
}

static int
spool_list (json_t **out, struct queue *q, size_t limit, bvm_error_t *err)
{
  struct spool *s = S (q);
  cleanup_json json_t *doc = json_pack ("{s:[],s:[],s:[],s:[]}", "queued", "running", "done",
                                        "dead");
  static const struct
  {
    const char *key;
    enum spool_dir d;
  } parts[] = {
    { "queued", D_NEW }, { "running", D_CUR }, { "done", D_DONE }, { "dead", D_DEAD }
  };

  if (doc == NULL)
    return bvm_error (err, ENOMEM, "listing");
  for (size_t i = 0; i < ARRAY_SIZE (parts); i++)
    {
      int ret = list_dir (json_object_get (doc, parts[i].key), s, parts[i].d, limit, err);
      if (ret < 0)
        return ret;
    }
  *out = steal_pointer (&doc);
  return 0;
}

static int
spool_depth (uint64_t *queued, uint64_t *running, struct queue *q, bvm_error_t *err)
{
  struct spool *s = S (q);
  struct ent *e = NULL;
  size_t n = 0;
  int ret;

  ret = spool_scan (&e, &n, s, D_NEW, "json", err);
  if (ret < 0)
    return ret;
  *queued = n;
  ents_free (e, n);
  ret = spool_scan (&e, &n, s, D_CUR, "json", err);
  if (ret < 0)
    return ret;
  *running = n;
  ents_free (e, n);
  return 0;
}

const struct queue_driver queue__spool_driver = {
  .scheme = "spool:",
  .poll_ms = 100,
  .check_url = spool_check_url,
  .open = spool_open,
  .enqueue = spool_enqueue,
  .lease = spool_lease,
  .heartbeat = spool_heartbeat,
  .check_fence = spool_check_fence,
  .complete = spool_complete,
  .release = spool_release,
  .dead_letter = spool_dead_letter,
  .cancel = spool_cancel,
  .cancel_requested = spool_cancel_requested,
  .list = spool_list,
  .get = spool_get,
  .depth = spool_depth,
  .close = spool_close,
};
