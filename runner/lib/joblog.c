/* joblog.c - per-job console logs, see joblog.h */
#include "joblog.h"
#include "fs.h"
#include "job.h"
#include "seal.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lz4frame.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define MARKER_WIDTH 112 /* the marker line is padded to this, so it can be rewritten in place */
#define CHUNK (64 * 1024)
/* What is dropped past the cap still ends in the log: its last lines (the
 * error of a late step), up to a quarter of the cap, at least 4 KiB, at most
 * 1 MiB, kept in memory and written after the marker when the log closes. */
#define TAIL_MIN (4 * 1024)
#define TAIL_MAX (1024 * 1024)
#define FOLLOW_POLL_MS 200
#define LOCK_TRIES 20 /* x 50 ms: a follower holds a shared lock only for an instant */

struct joblog
{
  int fd;
  char *dir;  /* <log_dir>/apps/<app> */
  char *path; /* <dir>/<job>.log */
  char *job;
  uint64_t max_bytes;
  uint64_t written; /* bytes of lines in the file, without the marker */
  bool truncated;
  uint64_t dropped_bytes, dropped_lines;
  unsigned char *tail; /* a ring of the last dropped bytes, escaped as in the log */
  size_t tail_cap, tail_len, tail_next;
  joblog_filter_fn filter;
  void *filter_opaque;
  struct buf fbuf;
  bool sealed; /* joblog_set_seal */
  unsigned char seal_key[SEAL_KEY_BYTES];
  char *context; /* logs/apps/<app>/<job>.log */
};

#define SEALED_SUFFIX ".lz4.seal"

/* --- ids ------------------------------------------------------------------ */

const char *
joblog_job_id_problem (const char *s)
{
  static const char why[]
      = "must be a job id, with `.attempt<N>` for a retry (^[A-Za-z0-9][A-Za-z0-9._-]{0,147}$)";
  size_t n;
  if (s == NULL
      || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')
           || (s[0] >= '0' && s[0] <= '9')))
    return why;
  n = strlen (s);
  /* a job id (at most 128) plus the pipeline's ".attempt<N>" for retries */
  if (n > 128 + 20
      || strspn (s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
    return why;
  return NULL;
}

static int
check_job_id (const char *job_id, bvm_error_t *err)
{
  char shown[64];
  if (joblog_job_id_problem (job_id) == NULL)
    return 0;
  /* do not echo control characters from an untrusted argument */
  snprintf (shown, sizeof shown, "%s", job_id ? job_id : "");
  for (char *p = shown; *p; p++)
    if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f || *p == '`')
      *p = '?';
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "invalid job id `%s`: letters, digits, `.`, `_`, `-`, at most 128",
                         shown);
}

/* --- writing -------------------------------------------------------------- */

/* Length of the valid, printable UTF-8 sequence at s (0: escape s[0]). */
static size_t
printable_seq (const unsigned char *s, size_t len)
{
  uint32_t cp;
  size_t n = utf8_decode ((const char *) s, len, &cp);

  if (n == 0 || (cp < 0x20 && cp != '\t') || (cp >= 0x7f && cp <= 0x9f))
    return 0;
  return n;
}

/* Escape into out (NULL: just count). Returns the escaped length. */
static size_t
escape_line (char *out, const char *line, size_t len)
{
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *) line;
  size_t o = 0;

  for (size_t i = 0; i < len;)
    {
      size_t n = printable_seq (s + i, len - i);
      if (n > 0)
        {
          if (out)
            memcpy (out + o, s + i, n);
          o += n;
          i += n;
          continue;
        }
      if (out)
        {
          out[o] = '\\';
          out[o + 1] = 'x';
          out[o + 2] = hex[s[i] >> 4];
          out[o + 3] = hex[s[i] & 15];
        }
      o += 4;
      i++;
    }
  return o;
}

static void
tail_put (struct joblog *l, const void *data, size_t n)
{
  const unsigned char *p = data;
  if (n >= l->tail_cap)
    {
      memcpy (l->tail, p + n - l->tail_cap, l->tail_cap);
      l->tail_next = 0;
      l->tail_len = l->tail_cap;
      return;
    }
  while (n > 0)
    {
      size_t take = l->tail_cap - l->tail_next < n ? l->tail_cap - l->tail_next : n;
      memcpy (l->tail + l->tail_next, p, take);
      l->tail_next = (l->tail_next + take) % l->tail_cap;
      l->tail_len = l->tail_len + take > l->tail_cap ? l->tail_cap : l->tail_len + take;
      p += take;
      n -= take;
    }
}

/* A dropped line, escaped as it would have been written, into the tail
 * ring (none when its memory cannot be had: the head and the marker stay). */
static void
tail_keep (struct joblog *l, const char *line, size_t len, const char *cut, size_t cut_len)
{
  char chunk[CHUNK + 4];

  if (l->tail == NULL)
    {
      l->tail_cap = l->max_bytes / 4 < TAIL_MIN   ? TAIL_MIN
                    : l->max_bytes / 4 > TAIL_MAX ? TAIL_MAX
                                                  : (size_t) (l->max_bytes / 4);
      if ((l->tail = malloc (l->tail_cap)) == NULL)
        return;
    }
  for (size_t i = 0; i < len;)
    {
      size_t take = len - i < CHUNK / 4 ? len - i : CHUNK / 4;
      while (take < len - i && take > 0 && (((unsigned char) line[i + take]) & 0xc0) == 0x80)
        take--; /* never split a UTF-8 sequence, as joblog_write does not */
      if (take == 0)
        take = len - i < CHUNK / 4 ? len - i : CHUNK / 4;
      tail_put (l, chunk, escape_line (chunk, line + i, take));
      i += take;
    }
  tail_put (l, cut, cut_len);
  tail_put (l, "\n", 1);
}

static int
pwrite_all (struct joblog *l, const void *data, size_t n, uint64_t off, bvm_error_t *err)
{
  const char *p = data;
  for (size_t done = 0; done < n;)
    {
      ssize_t w = pwrite (l->fd, p + done, n - done, (off_t) (off + done));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return bvm_error (err, errno, "write `%s`", l->path);
      done += (size_t) w;
    }
  return 0;
}

/* After the marker: the tail of what was dropped, from its first whole line. */
static int
write_tail (struct joblog *l, bvm_error_t *err)
{
  uint64_t off = l->written + MARKER_WIDTH + 1;
  size_t start = (l->tail_next + l->tail_cap - l->tail_len) % l->tail_cap, n = l->tail_len;
  char head[128];
  int hn;

  if (l->tail == NULL || n == 0)
    return 0;
  if (l->tail_len == l->tail_cap) /* wrapped: the oldest line may be a part */
    while (n > 0)
      {
        unsigned char c = l->tail[start];
        start = (start + 1) % l->tail_cap;
        n--;
        if (c == '\n')
          break;
      }
  hn = snprintf (head, sizeof head, "[buildvm: the last %zu bytes of what was dropped follow]\n",
                 n);
  if (pwrite_all (l, head, (size_t) hn, off, err) < 0)
    return -1;
  off += (uint64_t) hn;
  if (start + n > l->tail_cap)
    {
      size_t first = l->tail_cap - start;
      if (pwrite_all (l, l->tail + start, first, off, err) < 0)
        return -1;
      return pwrite_all (l, l->tail, n - first, off + first, err);
    }
  return pwrite_all (l, l->tail + start, n, off, err);
}

static int
write_marker (struct joblog *l, bvm_error_t *err)
{
  char m[MARKER_WIDTH + 2];
  int n = snprintf (m, sizeof m,
                    "[buildvm: log truncated at %" PRIu64 " bytes; %" PRIu64
                    " more bytes (%" PRIu64 " lines) dropped]",
                    l->written, l->dropped_bytes, l->dropped_lines);
  if (n < 0 || n > MARKER_WIDTH)
    n = MARKER_WIDTH;
  memset (m + n, ' ', (size_t) (MARKER_WIDTH - n));
  m[MARKER_WIDTH] = '\n';
  for (size_t done = 0; done < MARKER_WIDTH + 1;)
    {
      ssize_t w = pwrite (l->fd, m + done, MARKER_WIDTH + 1 - done, (off_t) (l->written + done));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return bvm_error (err, errno, "write `%s`", l->path);
      done += (size_t) w;
    }
  return 0;
}

void
joblog_set_filter (struct joblog *l, joblog_filter_fn fn, void *opaque)
{
  l->filter = fn;
  l->filter_opaque = opaque;
}

static void
joblog_free (struct joblog *l)
{
  if (l == NULL)
    return;
  if (l->fd >= 0)
    close (l->fd); /* releases the writer's lock */
  buf_dispose (&l->fbuf);
  free (l->tail);
  OPENSSL_cleanse (l->seal_key, sizeof l->seal_key);
  free (l->context);
  free (l->dir);
  free (l->path);
  free (l->job);
  free (l);
}

int
joblog_open (struct joblog **out, const char *log_dir, const char *app, const char *job_id,
             uint64_t max_bytes, bvm_error_t *err)
{
  struct joblog *l;
  char lz[PATH_MAX];
  int tries = 0;

  if (check_job_id (job_id, err) < 0)
    return -1;
  if (job_app_id_problem (app) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "invalid app id for job `%s`", job_id);
  if (log_dir == NULL || *log_dir == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "empty log directory");
  l = calloc (1, sizeof *l);
  if (l == NULL)
    return bvm_error (err, ENOMEM, "job log");
  l->fd = -1;
  l->max_bytes = max_bytes;
  buf_init (&l->fbuf, 2 * JOBLOG_LINE_MAX);
  if (asprintf (&l->dir, "%s/apps/%s", log_dir, app) < 0)
    l->dir = NULL;
  else if (asprintf (&l->path, "%s/%s.log", l->dir, job_id) < 0)
    l->path = NULL;
  l->job = strdup (job_id);
  if (l->dir == NULL || l->path == NULL || l->job == NULL)
    {
      joblog_free (l);
      return bvm_error (err, ENOMEM, "job log");
    }
  if (fs_mkdir_p (l->dir, 0750, err) < 0)
    {
      joblog_free (l);
      return bvm_error_wrap (err, "log directory");
    }
  /* not O_TRUNC before the lock: another live writer's log must stay intact */
  /* read-write: compression reads the finished log back */
  l->fd = open (l->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0640);
  if (l->fd < 0)
    {
      int e = errno;
      joblog_free (l);
      return bvm_error (err, e, "open `%s/%s.log`", log_dir, job_id);
    }
  while (flock (l->fd, LOCK_EX | LOCK_NB) < 0)
    {
      struct timespec ts = { 0, 50 * 1000 * 1000 };
      if ((errno != EWOULDBLOCK && errno != EINTR) || ++tries >= LOCK_TRIES)
        {
          int e = errno;
          joblog_free (l);
          if (e == EWOULDBLOCK)
            return bvm_error_code (err, BVM_E_IO, 0, "log of job `%s` is held by another writer",
                                   job_id);
          return bvm_error (err, e, "lock the log of job `%s`", job_id);
        }
      nanosleep (&ts, NULL);
    }
  if (ftruncate (l->fd, 0) < 0)
    {
      int e = errno;
      joblog_free (l);
      return bvm_error (err, e, "truncate the log of job `%s`", job_id);
    }
  /* a compressed log of an earlier run of this job would shadow this one */
  if (snprintf_checked (lz, sizeof lz, "%s.lz4", l->path) < 0
      || (unlink (lz) < 0 && errno != ENOENT)
      || snprintf_checked (lz, sizeof lz, "%s%s", l->path, SEALED_SUFFIX) < 0
      || (unlink (lz) < 0 && errno != ENOENT))
    {
      int e = errno;
      joblog_free (l);
      return bvm_error (err, e, "remove the old compressed log of job `%s`", job_id);
    }
  if (asprintf (&l->context, "logs/apps/%s/%s.log", app, job_id) < 0)
    {
      l->context = NULL;
      joblog_free (l);
      return bvm_error (err, ENOMEM, "job log");
    }
  *out = l;
  return 0;
}

void
joblog_set_seal (struct joblog *l, const unsigned char key[SEAL_KEY_BYTES])
{
  memcpy (l->seal_key, key, SEAL_KEY_BYTES);
  l->sealed = true;
}

const char *
joblog__context (const struct joblog *l)
{
  return l->context;
}

int
joblog_write (struct joblog *l, const char *line, size_t len, bvm_error_t *err)
{
  static const char cut[] = " [buildvm: line cut]";
  char chunk[CHUNK + 4];
  bool was_cut = false;
  size_t elen, i = 0;

  if (len > JOBLOG_LINE_MAX)
    {
      len = JOBLOG_LINE_MAX;
      was_cut = true;
    }
  if (l->filter != NULL)
    {
      buf_reset (&l->fbuf);
      if (l->filter (l->filter_opaque, line, len, &l->fbuf, err) < 0)
        return bvm_error_wrap (err, "filtering the log of job `%s`", l->job);
      line = buf_cstr (&l->fbuf);
      len = l->fbuf.len;
    }
  elen = escape_line (NULL, line, len) + (was_cut ? sizeof cut - 1 : 0) + 1;
  if (l->truncated || elen > l->max_bytes - l->written || l->written > l->max_bytes)
    {
      l->dropped_bytes += elen;
      l->dropped_lines++;
      tail_keep (l, line, len, cut, was_cut ? sizeof cut - 1 : 0);
      if (l->truncated)
        return 0;
      l->truncated = true;
      return write_marker (l, err);
    }
  /* escape piecewise: the escaped form of up to CHUNK/4 bytes fits a chunk */
  while (i < len)
    {
      size_t take = len - i < CHUNK / 4 ? len - i : CHUNK / 4, o;
      /* never split a UTF-8 sequence between chunks */
      while (take < len - i && take > 0 && (((unsigned char) line[i + take]) & 0xc0) == 0x80)
        take--;
      if (take == 0)
        take = len - i < CHUNK / 4 ? len - i : CHUNK / 4;
      o = escape_line (chunk, line + i, take);
      if (fs_write_all (l->fd, chunk, o) < 0)
        return bvm_error (err, errno, "write `%s`", l->path);
      i += take;
    }
  if ((was_cut && fs_write_all (l->fd, cut, sizeof cut - 1) < 0)
      || fs_write_all (l->fd, "\n", 1) < 0)
    return bvm_error (err, errno, "write `%s`", l->path);
  l->written += elen;
  return 0;
}

static int
fd_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  if (fs_write_all (*(int *) opaque, buf, len) < 0)
    return bvm_error (err, errno, "write the compressed log");
  return 0;
}

/* The compressed bytes: to the file, through the seal when sealing */
static int
out_write (int fd, struct seal_writer *sw, const void *buf, size_t n)
{
  bvm_error_t e = NULL;
  if (sw == NULL)
    return fs_write_all (fd, buf, n);
  if (seal_write (sw, buf, n, &e) < 0)
    {
      bvm_error_free (&e);
      errno = EIO;
      return -1;
    }
  return 0;
}

/* Compress the finished log into one LZ4 frame next to it (sealed into
 * <job>.log.lz4.seal with joblog_set_seal). */
static int
compress_log (struct joblog *l, bvm_error_t *err)
{
  LZ4F_preferences_t prefs = LZ4F_INIT_PREFERENCES;
  LZ4F_cctx *cctx = NULL;
  cleanup_free char *tmp = NULL, *dst = NULL, *in = NULL, *outb = NULL;
  cleanup_seal_writer struct seal_writer *sw = NULL;
  cleanup_close int fd = -1;
  size_t cap, n;
  uint64_t off = 0;
  int ret = -1;
  struct stat st;
  const char *suffix = l->sealed ? SEALED_SUFFIX : ".lz4";

  if (asprintf (&tmp, "%s%s.tmp", l->path, suffix) < 0
      || asprintf (&dst, "%s%s", l->path, suffix) < 0)
    return bvm_error (err, ENOMEM, "compress log");
  if (fstat (l->fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", l->path);
  prefs.frameInfo.blockSizeID = LZ4F_max256KB;
  prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
  prefs.frameInfo.contentSize = (unsigned long long) st.st_size;
  cap = LZ4F_compressBound (CHUNK, &prefs);
  in = malloc (CHUNK);
  outb = malloc (cap);
  if (in == NULL || outb == NULL)
    return bvm_error (err, ENOMEM, "compress log");
  if (LZ4F_isError (LZ4F_createCompressionContext (&cctx, LZ4F_VERSION)))
    return bvm_error (err, ENOMEM, "lz4 context");
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0)
    {
      bvm_error (err, errno, "create `%s`", tmp);
      goto cleanup;
    }
  if (l->sealed && seal_writer_new (&sw, l->seal_key, l->context, 0, fd_sink, &fd, err) < 0)
    goto cleanup;
  n = LZ4F_compressBegin (cctx, outb, cap, &prefs);
  if (LZ4F_isError (n))
    goto lz4_fail;
  if (out_write (fd, sw, outb, n) < 0)
    goto write_fail;
  for (;;)
    {
      ssize_t r = pread (l->fd, in, CHUNK, (off_t) off);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        {
          bvm_error (err, errno, "read `%s`", l->path);
          goto cleanup;
        }
      if (r == 0)
        break;
      off += (uint64_t) r;
      n = LZ4F_compressUpdate (cctx, outb, cap, in, (size_t) r, NULL);
      if (LZ4F_isError (n))
        goto lz4_fail;
      if (out_write (fd, sw, outb, n) < 0)
        goto write_fail;
    }
  n = LZ4F_compressEnd (cctx, outb, cap, NULL);
  if (LZ4F_isError (n))
    goto lz4_fail;
  if (out_write (fd, sw, outb, n) < 0)
    goto write_fail;
  if (sw != NULL && seal_writer_finish (sw, err) < 0)
    goto cleanup;
  if (fsync (fd) < 0)
    goto write_fail;
  if (rename (tmp, dst) < 0)
    {
      bvm_error (err, errno, "rename `%s`", tmp);
      goto cleanup;
    }
  /* the .lz4 is complete and durable before the .log goes */
  if (unlink (l->path) < 0 || fs_fsync_dir (l->dir, err) < 0)
    {
      if (errno != 0)
        bvm_error (err, errno, "remove `%s`", l->path);
      goto cleanup;
    }
  ret = 0;
  goto cleanup;
lz4_fail:
  bvm_error (err, 0, "lz4: %s", LZ4F_getErrorName (n));
  goto cleanup;
write_fail:
  bvm_error (err, errno, "write `%s`", tmp);
cleanup:
  LZ4F_freeCompressionContext (cctx);
  if (ret < 0)
    unlink (tmp);
  return ret;
}

int
joblog_close (struct joblog *l, bool compress, bvm_error_t *err)
{
  int ret = 0;

  if (l == NULL)
    return 0;
  if (l->truncated)
    ret = write_marker (l, err);
  if (ret == 0 && l->truncated)
    ret = write_tail (l, err);
  if (ret == 0 && fsync (l->fd) < 0)
    ret = bvm_error (err, errno, "fsync `%s`", l->path);
  if (ret == 0 && compress)
    ret = compress_log (l, err);
  joblog_free (l);
  return ret;
}

/* --- reading -------------------------------------------------------------- */

enum log_kind
{
  LOG_PLAIN,
  LOG_LZ4,
  LOG_SEALED
};

/* Find <log_dir>/apps/<app>/<job>.log{.lz4.seal,.lz4,}: *kind says which,
 * app (JOB_APP_MAX + 1 bytes) whose. */
static int
find_log (char **out, enum log_kind *kind, char *app, const char *log_dir, const char *job_id,
          bvm_error_t *err)
{
  static const char *const suffixes[] = { SEALED_SUFFIX, ".lz4", "" };
  static const enum log_kind kinds[] = { LOG_SEALED, LOG_LZ4, LOG_PLAIN };
  cleanup_free char *apps = NULL;
  char found[PATH_MAX] = "";
  DIR *d;
  struct dirent *de;
  int matches = 0;

  if (asprintf (&apps, "%s/apps", log_dir) < 0)
    return bvm_error (err, ENOMEM, "log directory");
  d = opendir (apps);
  if (d == NULL)
    {
      if (errno == ENOENT)
        return bvm_error (err, ENOENT, "no log for job `%s` in `%s`", job_id, log_dir);
      return bvm_error (err, errno, "open `%s`", apps);
    }
  while ((de = readdir (d)) != NULL)
    {
      char p[PATH_MAX];
      struct stat st;

      if (job_app_id_problem (de->d_name) != NULL)
        continue;
      /* prefer the compressed: both exist only between compress and unlink,
       * when it is already complete */
      for (size_t i = 0; i < ARRAY_SIZE (suffixes); i++)
        if (snprintf_checked (p, sizeof p, "%s/%s/%s.log%s", apps, de->d_name, job_id, suffixes[i])
                >= 0
            && lstat (p, &st) == 0 && S_ISREG (st.st_mode))
          {
            matches++;
            *kind = kinds[i];
            memcpy (found, p, sizeof found);
            snprintf (app, JOB_APP_MAX + 1, "%.*s", JOB_APP_MAX, de->d_name);
            break;
          }
    }
  closedir (d);
  if (matches == 0)
    return bvm_error (err, ENOENT, "no log for job `%s` in `%s`", job_id, log_dir);
  if (matches > 1)
    return bvm_error_code (err, BVM_E_INVALID, 0, "job `%s` has logs under several apps", job_id);
  *out = strdup (found);
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "log path");
  return 0;
}

static int
put_out (FILE *out, const void *p, size_t n, bvm_error_t *err)
{
  if (n > 0 && fwrite (p, 1, n, out) != n)
    return bvm_error (err, errno ? errno : EIO, "write the log");
  return 0;
}

/* Decompress the LZ4 frame in fd (owned) to out; path names it. */
int
joblog_cat_lz4_fd (int fd_in, const char *path, FILE *out, bvm_error_t *err)
{
  cleanup_close int fd = fd_in;
  cleanup_free char *in = malloc (CHUNK), *ob = malloc (CHUNK);
  LZ4F_dctx *dctx = NULL;
  size_t hint = 1;
  int ret = -1;

  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  if (in == NULL || ob == NULL
      || LZ4F_isError (LZ4F_createDecompressionContext (&dctx, LZ4F_VERSION)))
    return bvm_error (err, ENOMEM, "lz4 context");
  for (;;)
    {
      ssize_t r = read (fd, in, CHUNK);
      size_t pos = 0;

      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        {
          bvm_error (err, errno, "read `%s`", path);
          goto cleanup;
        }
      if (r == 0)
        break;
      if (hint == 0)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: data after the lz4 frame", path);
          goto cleanup;
        }
      while (pos < (size_t) r)
        {
          size_t isz = (size_t) r - pos, osz = CHUNK;
          hint = LZ4F_decompress (dctx, ob, &osz, in + pos, &isz, NULL);
          if (LZ4F_isError (hint))
            {
              bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: lz4: %s", path,
                              LZ4F_getErrorName (hint));
              goto cleanup;
            }
          if (put_out (out, ob, osz, err) < 0)
            goto cleanup;
          pos += isz;
          if (hint == 0 && pos < (size_t) r)
            {
              bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: data after the lz4 frame", path);
              goto cleanup;
            }
          if (isz == 0 && osz == 0)
            break;
        }
    }
  /* flush what the context still holds */
  for (;;)
    {
      size_t isz = 0, osz = CHUNK;
      if (hint == 0)
        break;
      hint = LZ4F_decompress (dctx, ob, &osz, NULL, &isz, NULL);
      if (LZ4F_isError (hint) || osz == 0)
        break;
      if (put_out (out, ob, osz, err) < 0)
        goto cleanup;
    }
  if (hint != 0)
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: truncated lz4 frame", path);
      goto cleanup;
    }
  ret = 0;
cleanup:
  LZ4F_freeDecompressionContext (dctx);
  return ret;
}

static int
cat_lz4 (const char *path, FILE *out, bvm_error_t *err)
{
  return joblog_cat_lz4_fd (open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), path, out, err);
}

/* A sealed log: opened into anonymous memory (the LZ4 frame), then
 * decompressed. Nothing is printed unless the whole file authenticates. */
static int
cat_sealed (const char *path, const char *app, const char *job_id, FILE *out, joblog_key_fn key_fn,
            void *opaque, bvm_error_t *err)
{
  cleanup_close int fd = -1, mem = -1;
  cleanup_seal_reader struct seal_reader *sr = NULL;
  cleanup_free char *context = NULL, *what = NULL;
  unsigned char key[SEAL_KEY_BYTES];
  char b[CHUNK];
  int ret;

  if (key_fn == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the log of job `%s` is encrypted and no key is available", job_id);
  if (asprintf (&context, "logs/apps/%s/%s.log", app, job_id) < 0
      || asprintf (&what, "the log of job `%s`", job_id) < 0)
    return bvm_error (err, ENOMEM, "log");
  fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  mem = memfd_create ("buildvm-log", MFD_CLOEXEC);
  if (mem < 0)
    return bvm_error (err, errno, "memfd_create");
  if ((ret = key_fn (opaque, app, key, err)) < 0)
    return ret;
  ret = seal_reader_new (&sr, key, context, what, fd_sink, &mem, err);
  OPENSSL_cleanse (key, sizeof key);
  if (ret < 0)
    return ret;
  for (;;)
    {
      ssize_t r = read (fd, b, sizeof b);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return bvm_error (err, errno, "read `%s`", path);
      if (r == 0)
        break;
      if (seal_reader_feed (sr, b, (size_t) r, err) < 0)
        return -1;
    }
  if (seal_reader_finish (sr, err) < 0)
    return -1;
  if (lseek (mem, 0, SEEK_SET) < 0)
    return bvm_error (err, errno, "lseek");
  return joblog_cat_lz4_fd (steal_fd (&mem), path, out, err);
}

/* Copy what fd has now; returns bytes copied or -1. */
static int64_t
drain (int fd, FILE *out, const char *path, bvm_error_t *err)
{
  char b[CHUNK];
  int64_t total = 0;
  for (;;)
    {
      ssize_t r = read (fd, b, sizeof b);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return bvm_error (err, errno, "read `%s`", path);
      if (r == 0)
        return total;
      if (put_out (out, b, (size_t) r, err) < 0)
        return -1;
      total += r;
    }
}

int
joblog_cat (const char *log_dir, const char *job_id, FILE *out, bool follow, joblog_key_fn key_fn,
            void *opaque, bvm_error_t *err)
{
  cleanup_free char *path = NULL;
  cleanup_close int fd = -1;
  enum log_kind kind = LOG_PLAIN;
  char app[JOB_APP_MAX + 1] = "";

  if (check_job_id (job_id, err) < 0)
    return -1;
  for (int attempt = 0; fd < 0; attempt++)
    {
      free (path);
      path = NULL;
      if (find_log (&path, &kind, app, log_dir, job_id, err) < 0)
        return -1;
      if (kind == LOG_SEALED)
        return cat_sealed (path, app, job_id, out, key_fn, opaque, err);
      if (kind == LOG_LZ4)
        return cat_lz4 (path, out, err);
      fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
      /* compressed and removed between find and open: look again */
      if (fd < 0 && (errno != ENOENT || attempt >= 2))
        return bvm_error (err, errno, "open `%s`", path);
    }
  for (;;)
    {
      struct timespec ts = { 0, FOLLOW_POLL_MS * 1000 * 1000 };
      if (drain (fd, out, path, err) < 0)
        return -1;
      if (!follow)
        break;
      fflush (out);
      /* The writer holds LOCK_EX while it may still write. Once we get the
       * lock, everything is in the file (or the writer died). */
      if (flock (fd, LOCK_SH | LOCK_NB) == 0)
        {
          flock (fd, LOCK_UN);
          if (drain (fd, out, path, err) < 0)
            return -1;
          break;
        }
      if (errno != EWOULDBLOCK && errno != EINTR)
        return bvm_error (err, errno, "lock `%s`", path);
      nanosleep (&ts, NULL);
    }
  if (fflush (out) != 0)
    return bvm_error (err, errno, "write the log");
  return 0;
}
