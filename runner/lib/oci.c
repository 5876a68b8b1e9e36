/* oci.c - OCI layers, image config, manifests and image layouts, see oci.h */
#define ZLIB_CONST
#include "oci.h"
#include "fs.h"
#include "jsonx.h"
#include "caps.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* --- names ------------------------------------------------------------------ */

/* One path component `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: the end of it, or
 * NULL when it does not match. */
static const char *
repo_component_end (const char *p)
{
  if (!is_lower_alnum (*p))
    return NULL;
  while (is_lower_alnum (*p))
    p++;
  for (;;)
    {
      const char *q = p;
      if (*q == '.')
        q++;
      else if (*q == '_')
        q += q[1] == '_' ? 2 : 1;
      else if (*q == '-')
        while (*q == '-')
          q++;
      else
        return p;
      if (!is_lower_alnum (*q))
        return NULL;
      while (is_lower_alnum (*q))
        q++;
      p = q;
    }
}

const char *
oci_repository_problem (const char *name)
{
  static const char why[] = "must be a repository name of the OCI distribution spec (lowercase "
                            "components such as `apps/hello`, at most 255 bytes)";
  const char *p = name;

  if (name == NULL || strlen (name) > 255)
    return why;
  for (;;)
    {
      p = repo_component_end (p);
      if (p == NULL)
        return why;
      if (*p == '\0')
        return NULL;
      if (*p != '/')
        return why;
      p++;
    }
}

const char *
oci_tag_problem (const char *tag)
{
  static const char why[] = "must match ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";
  size_t n;

  if (tag == NULL)
    return why;
  n = strlen (tag);
  if (n == 0 || n > 128)
    return why;
  for (size_t i = 0; i < n; i++)
    {
      char c = tag[i];
      bool ok = is_alnum (c) || c == '_' || (i > 0 && (c == '.' || c == '-'));
      if (!ok)
        return why;
    }
  return NULL;
}

const char *
oci_reference_problem (const char *ref)
{
  if (oci_tag_problem (ref) == NULL || digest_problem (ref) == NULL)
    return NULL;
  return "must be a tag or a `sha256:` digest";
}

/* --- layers ----------------------------------------------------------------- */

/* The tar stream is compressed in blocks of LAYER_BLOCK bytes, each on its
 * own, the way pigz does: raw deflate primed with the last 32 KiB of the
 * block before it (deflateSetDictionary), ended with a sync flush (byte
 * aligned, not final), the last block with Z_FINISH. Written in order after
 * a gzip header, with the CRC-32 and the length after them, the blocks are
 * one gzip member that any inflater reads as one stream. Where the blocks
 * end and what primes them depends only on the bytes, never on the threads'
 * timing, so the same tar always gives the same blob.
 *
 * Up to LAYER_WORKERS threads compress while the caller's thread goes on
 * reading, checking and hashing the next bytes: compression is most of a
 * layer's cost, and the host's other core is idle once the VM is gone.
 * With no thread (oci_layer_set_threads (0), or pthread_create failing)
 * the blocks are compressed in the caller's thread: the same bytes. Memory
 * is bounded by LAYER_SLOTS blocks in flight. */
#define LAYER_BLOCK (1u << 20)
#define LAYER_DICT 32768u
#define LAYER_SLOTS 4
#define LAYER_WORKERS 2
/* a block's deflate output at most: zlib's bound for incompressible data
 * (stored blocks), with room for the sync flush's empty stored block */
#define LAYER_OUT_CAP (LAYER_BLOCK + (LAYER_BLOCK >> 12) + (LAYER_BLOCK >> 14) + 1024)

enum slot_state
{
  SLOT_FILLING, /* the caller's thread is filling it */
  SLOT_QUEUED,
  SLOT_BUSY,
  SLOT_DONE,
};

struct layer_slot
{
  unsigned char *in; /* the dictionary (dict_len bytes), then the block */
  size_t dict_len, in_len;
  unsigned char *out;
  size_t out_len;
  bool last;
  bool failed; /* deflate said no */
  enum slot_state state;
};

struct layer_worker
{
  struct oci_layer *l;
  z_stream z;
  bool z_ready;
  pthread_t thread;
  bool running;
};

struct oci_layer
{
  struct archive *a;
  char *path;
  int fd;
  int level;
  struct digest_ctx diff; /* the uncompressed tar: the diffID */
  struct digest_ctx blob; /* the gzip bytes: the blob digest */
  uLong crc;              /* the gzip trailer's CRC-32 of the tar */
  struct layer_slot slot[LAYER_SLOTS];
  uint64_t filled;  /* blocks handed to the compressors */
  uint64_t written; /* blocks written to the file, in order */
  pthread_mutex_t mu;
  pthread_cond_t work; /* a block is queued, or stop */
  pthread_cond_t done; /* a block is compressed */
  bool stop;
  struct layer_worker worker[LAYER_WORKERS];
  struct layer_worker inline_z; /* the caller's own, when no thread runs */
  unsigned n_workers;
  uint64_t tar_bytes;
  uint64_t blob_bytes;
  bool finished; /* the blob is complete: keep the file */
  bool discard;  /* being freed: drop whatever libarchive still writes */
};

static unsigned layer_threads = LAYER_WORKERS;

void
oci_layer_set_threads (unsigned n)
{
  layer_threads = n > LAYER_WORKERS ? LAYER_WORKERS : n;
}

/* Compress slot `s` with `w`'s stream (either thread's: no shared state) */
static void
layer_compress (struct layer_worker *w, struct layer_slot *s)
{
  z_stream *z = &w->z;
  int want = s->last ? Z_STREAM_END : Z_OK;
  int zr;

  s->failed = true;
  if (deflateReset (z) != Z_OK
      || (s->dict_len > 0 && deflateSetDictionary (z, s->in, (uInt) s->dict_len) != Z_OK))
    return;
  z->next_in = s->in + s->dict_len;
  z->avail_in = (uInt) s->in_len;
  z->next_out = s->out;
  z->avail_out = LAYER_OUT_CAP;
  zr = deflate (z, s->last ? Z_FINISH : Z_SYNC_FLUSH);
  /* all in, and the flush complete (room left after it) */
  if (zr != want || z->avail_in != 0 || z->avail_out == 0)
    return;
  s->out_len = LAYER_OUT_CAP - z->avail_out;
  s->failed = false;
}

static struct layer_slot *
queued_slot (struct oci_layer *l)
{
  for (unsigned i = 0; i < LAYER_SLOTS; i++)
    if (l->slot[i].state == SLOT_QUEUED)
      return &l->slot[i];
  return NULL;
}

static void *
layer_worker_main (void *arg)
{
  struct layer_worker *w = arg;
  struct oci_layer *l = w->l;

  pthread_mutex_lock (&l->mu);
  for (;;)
    {
      struct layer_slot *s;
      while (!l->stop && (s = queued_slot (l)) == NULL)
        pthread_cond_wait (&l->work, &l->mu);
      if (l->stop)
        break;
      s->state = SLOT_BUSY;
      pthread_mutex_unlock (&l->mu);
      layer_compress (w, s);
      pthread_mutex_lock (&l->mu);
      s->state = SLOT_DONE;
      pthread_cond_broadcast (&l->done);
    }
  pthread_mutex_unlock (&l->mu);
  return NULL;
}

static int
layer_stream_init (struct layer_worker *w, int level)
{
  /* raw deflate (windowBits -15): the gzip wrapper is ours */
  if (deflateInit2 (&w->z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return -1;
  w->z_ready = true;
  return 0;
}

/* Start up to layer_threads compressors; none is fine (inline) */
static void
layer_start_workers (struct oci_layer *l)
{
  sigset_t all, old;

  if (layer_threads == 0)
    return;
  /* signals stay the caller's thread's: the workers block them all */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  for (unsigned i = 0; i < layer_threads; i++)
    {
      struct layer_worker *w = &l->worker[i];
      w->l = l;
      if (layer_stream_init (w, l->level) < 0)
        break;
      if (pthread_create (&w->thread, NULL, layer_worker_main, w) != 0)
        {
          deflateEnd (&w->z);
          w->z_ready = false;
          break;
        }
      w->running = true;
      l->n_workers++;
    }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
}

static void
layer_stop_workers (struct oci_layer *l)
{
  if (l->n_workers == 0)
    return;
  pthread_mutex_lock (&l->mu);
  l->stop = true;
  pthread_cond_broadcast (&l->work);
  pthread_mutex_unlock (&l->mu);
  for (unsigned i = 0; i < LAYER_WORKERS; i++)
    if (l->worker[i].running)
      {
        pthread_join (l->worker[i].thread, NULL);
        l->worker[i].running = false;
      }
  l->n_workers = 0;
}

static int
layer_put (struct oci_layer *l, const void *p, size_t n)
{
  digest_update (&l->blob, p, n);
  if (fs_write_all (l->fd, p, n) < 0)
    return -1;
  l->blob_bytes += n;
  return 0;
}

static bool
layer_block_done (struct oci_layer *l, uint64_t seq)
{
  struct layer_slot *s = &l->slot[seq % LAYER_SLOTS];
  bool done;

  if (l->n_workers == 0)
    return s->state == SLOT_DONE;
  pthread_mutex_lock (&l->mu);
  done = s->state == SLOT_DONE;
  pthread_mutex_unlock (&l->mu);
  return done;
}

/* Write the oldest block in flight once it is compressed; -1 with errno */
static int
layer_write_oldest (struct oci_layer *l)
{
  struct layer_slot *s = &l->slot[l->written % LAYER_SLOTS];

  if (l->n_workers > 0)
    {
      pthread_mutex_lock (&l->mu);
      while (s->state != SLOT_DONE)
        pthread_cond_wait (&l->done, &l->mu);
      pthread_mutex_unlock (&l->mu);
    }
  if (s->failed)
    {
      errno = EIO;
      return -1;
    }
  if (layer_put (l, s->out, s->out_len) < 0)
    return -1;
  /* free for the caller's thread to fill again (the workers look at every
   * slot's state: changed under the lock) */
  if (l->n_workers > 0)
    pthread_mutex_lock (&l->mu);
  s->state = SLOT_FILLING;
  if (l->n_workers > 0)
    pthread_mutex_unlock (&l->mu);
  l->written++;
  return 0;
}

/* Hand the block being filled to the compressors and start the next one,
 * primed with this one's last 32 KiB. -1 with errno. */
static int
layer_submit (struct oci_layer *l, bool last)
{
  struct layer_slot *s = &l->slot[l->filled % LAYER_SLOTS], *next;

  s->last = last;
  if (l->n_workers == 0)
    {
      layer_compress (&l->inline_z, s);
      s->state = SLOT_DONE;
    }
  else
    {
      pthread_mutex_lock (&l->mu);
      s->state = SLOT_QUEUED;
      pthread_cond_signal (&l->work);
      pthread_mutex_unlock (&l->mu);
    }
  l->filled++;
  if (last)
    return 0;
  /* the next slot holds the block LAYER_SLOTS before: written first */
  if (l->filled - l->written >= LAYER_SLOTS && layer_write_oldest (l) < 0)
    return -1;
  /* and whatever is compressed already goes out now: a write error (disk
   * full) is reported within a few blocks of where it happened */
  while (l->written < l->filled && layer_block_done (l, l->written))
    if (layer_write_oldest (l) < 0)
      return -1;
  next = &l->slot[l->filled % LAYER_SLOTS];
  /* s is full (only the last block is short); the workers only read it */
  memcpy (next->in, s->in + s->dict_len + LAYER_BLOCK - LAYER_DICT, LAYER_DICT);
  next->dict_len = LAYER_DICT;
  next->in_len = 0; /* its state is SLOT_FILLING: new, or written */
  return 0;
}

/* libarchive's output callback. Blocking is disabled (bytes_per_block 0), so
 * this sees the caller's own data buffers; they are copied into the block
 * being filled. */
static la_ssize_t
layer_write_cb (struct archive *a, void *client_data, const void *buffer, size_t length)
{
  struct oci_layer *l = client_data;
  const unsigned char *p = buffer;
  size_t left;

  if (l->discard)
    return (la_ssize_t) length;
  if (length > SSIZE_MAX)
    length = SSIZE_MAX;
  digest_update (&l->diff, buffer, length);
  l->crc = crc32_z (l->crc, buffer, length);
  for (left = length; left > 0;)
    {
      struct layer_slot *s = &l->slot[l->filled % LAYER_SLOTS];
      size_t n = LAYER_BLOCK - s->in_len;
      if (n > left)
        n = left;
      memcpy (s->in + s->dict_len + s->in_len, p, n);
      s->in_len += n;
      p += n;
      left -= n;
      if (s->in_len == LAYER_BLOCK && layer_submit (l, false) < 0)
        {
          archive_set_error (a, errno, "writing layer blob `%s`: %s", l->path, strerror (errno));
          return -1;
        }
    }
  l->tar_bytes += length;
  return (la_ssize_t) length;
}

int
oci_layer_new (struct oci_layer **out, const char *blob_path, int gzip_level, bvm_error_t *err)
{
  struct oci_layer *l;
  struct stat st;

  if (gzip_level < 0 || gzip_level > 9)
    return bvm_error_code (err, BVM_E_INVALID, 0, "gzip level %d is outside 0..9", gzip_level);
  l = calloc (1, sizeof *l);
  if (l == NULL)
    return bvm_error (err, ENOMEM, "layer `%s`", blob_path);
  l->fd = -1;
  l->mu = (pthread_mutex_t) PTHREAD_MUTEX_INITIALIZER;
  l->work = (pthread_cond_t) PTHREAD_COND_INITIALIZER;
  l->done = (pthread_cond_t) PTHREAD_COND_INITIALIZER;
  l->level = gzip_level;
  l->crc = crc32_z (0, NULL, 0);
  l->path = strdup (blob_path);
  if (l->path == NULL)
    {
      oci_layer_free (l);
      return bvm_error (err, ENOMEM, "layer `%s`", blob_path);
    }
  for (unsigned i = 0; i < LAYER_SLOTS; i++)
    if ((l->slot[i].in = malloc (LAYER_DICT + LAYER_BLOCK)) == NULL
        || (l->slot[i].out = malloc (LAYER_OUT_CAP)) == NULL)
      {
        oci_layer_free (l);
        return bvm_error (err, ENOMEM, "layer `%s`", blob_path);
      }
  if (digest_init (&l->diff, err) < 0)
    {
      oci_layer_free (l);
      return -1;
    }
  if (digest_init (&l->blob, err) < 0)
    {
      oci_layer_free (l);
      return -1;
    }
  if (layer_stream_init (&l->inline_z, gzip_level) < 0)
    {
      oci_layer_free (l);
      return bvm_error (err, ENOMEM, "deflate init for `%s`", blob_path);
    }

  /* O_NONBLOCK and no O_TRUNC until we know it is a regular file: a FIFO
   * must not block us and a device must not be truncated (or later unlinked
   * by oci_layer_free). */
  l->fd = open (blob_path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
  if (l->fd < 0 || fstat (l->fd, &st) < 0 || !S_ISREG (st.st_mode) || ftruncate (l->fd, 0) < 0)
    {
      int e = l->fd >= 0 && !S_ISREG (st.st_mode) ? 0 : errno;
      free (l->path);
      l->path = NULL; /* not ours: never unlink what we could not create */
      oci_layer_free (l);
      if (e == 0)
        return bvm_error_code (err, BVM_E_INVALID, 0, "layer blob `%s` is not a regular file",
                               blob_path);
      return bvm_error (err, e, "create layer blob `%s`", blob_path);
    }
  {
    /* the gzip header as zlib writes it: no name, mtime 0, the level's
     * flag, OS Unix; the same tar gives the same blob */
    const unsigned char hdr[10] = {
      0x1f, 0x8b, 8, 0, 0, 0, 0, 0, gzip_level == 9 ? 2 : gzip_level < 2 ? 4 : 0, 3,
    };
    if (layer_put (l, hdr, sizeof hdr) < 0)
      {
        int r = bvm_error (err, errno, "write layer blob `%s`", blob_path);
        oci_layer_free (l);
        return r;
      }
  }
  layer_start_workers (l);

  l->a = archive_write_new ();
  if (l->a == NULL)
    {
      oci_layer_free (l);
      return bvm_error (err, ENOMEM, "tar writer for `%s`", blob_path);
    }
  /* pax restricted: plain ustar headers unless an entry needs more (long
   * names, big ids, non-ASCII), which is what image tools expect. */
  if (archive_write_set_format_pax_restricted (l->a) != ARCHIVE_OK
      || archive_write_set_bytes_per_block (l->a, 0) != ARCHIVE_OK
      || archive_write_open (l->a, l, NULL, layer_write_cb, NULL) != ARCHIVE_OK)
    {
      int r = bvm_error (err, 0, "tar writer for `%s`: %s", blob_path,
                         archive_error_string (l->a) ? archive_error_string (l->a)
                                                     : "unknown error");
      oci_layer_free (l);
      return r;
    }
  *out = l;
  return 0;
}

struct archive *
oci_layer_archive (struct oci_layer *l)
{
  return l->a;
}

uint64_t
oci_layer_tar_size (const struct oci_layer *l)
{
  return l->tar_bytes;
}

static const char *
layer_path_problem (const char *path)
{
  static const char why[]
      = "must be a relative path without `.` or `..` components, at most 4096 bytes";
  const char *p = path;

  if (*p == '\0' || *p == '/' || strlen (path) > 4096)
    return why;
  while (*p)
    {
      const char *e = strchrnul (p, '/');
      if ((e - p == 2 && p[0] == '.' && p[1] == '.') || (e - p == 1 && p[0] == '.'))
        return why;
      p = *e ? e + 1 : e;
    }
  return NULL;
}

int
oci_layer_add_dir (struct oci_layer *l, const char *path, mode_t mode, uid_t uid, gid_t gid,
                   int64_t mtime, bvm_error_t *err)
{
  struct archive_entry *e;
  int r;

  if (layer_path_problem (path) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "layer path `%.200s` must be relative and without `.` or `..`", path);
  e = archive_entry_new ();
  if (e == NULL)
    return bvm_error (err, ENOMEM, "layer entry `%s`", path);
  archive_entry_set_pathname (e, path);
  archive_entry_set_filetype (e, AE_IFDIR);
  archive_entry_set_perm (e, mode & 07777);
  archive_entry_set_uid (e, uid);
  archive_entry_set_gid (e, gid);
  archive_entry_set_mtime (e, mtime, 0);
  r = archive_write_header (l->a, e);
  archive_entry_free (e);
  if (r != ARCHIVE_OK)
    return bvm_error (err, archive_errno (l->a) > 0 ? archive_errno (l->a) : 0,
                      "layer directory `%s`: %s", path,
                      archive_error_string (l->a) ? archive_error_string (l->a) : "unknown error");
  return 0;
}

int
oci_layer_add (struct oci_layer *l, const struct oci_layer_entry *e, bvm_error_t *err)
{
  struct archive_entry *ae = archive_entry_new ();
  int r;

  if (ae == NULL)
    return bvm_error (err, ENOMEM, "layer entry `%s`", e->path);
  archive_entry_set_pathname (ae, e->path);
  archive_entry_set_uid (ae, 0);
  archive_entry_set_gid (ae, 0);
  archive_entry_set_mtime (ae, e->mtime, 0);
  archive_entry_set_perm (ae, e->perm & 07777);
  if (e->type == S_IFDIR)
    archive_entry_set_filetype (ae, AE_IFDIR);
  else if (e->type == S_IFLNK)
    {
      archive_entry_set_filetype (ae, AE_IFLNK);
      archive_entry_set_symlink (ae, e->link);
    }
  else if (e->link != NULL)
    {
      archive_entry_set_filetype (ae, AE_IFREG);
      archive_entry_set_hardlink (ae, e->link);
      archive_entry_set_size (ae, 0);
    }
  else
    {
      archive_entry_set_filetype (ae, AE_IFREG);
      archive_entry_set_size (ae, (la_int64_t) e->size);
    }
  r = archive_write_header (l->a, ae);
  archive_entry_free (ae);
  if (r != ARCHIVE_OK)
    return bvm_error (err, 0, "writing `%s` to the image layer: %s", e->path,
                      archive_error_string (l->a) ? archive_error_string (l->a) : "unknown error");
  return 0;
}

int
oci_layer_write (struct oci_layer *l, const void *buf, size_t len, bvm_error_t *err)
{
  if (archive_write_data (l->a, buf, len) != (la_ssize_t) len)
    return bvm_error (err, 0, "writing the image layer: %s",
                      archive_error_string (l->a) ? archive_error_string (l->a) : "unknown error");
  return 0;
}

int
oci_layer_finish (struct oci_layer *l, struct oci_descriptor *blob,
                  char diff_id[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  if (l->finished)
    return bvm_error (err, 0, "layer `%s` is already finished", l->path);
  /* The tar trailer goes through the callback, so close before flushing. */
  if (archive_write_close (l->a) != ARCHIVE_OK)
    return bvm_error (err, archive_errno (l->a) > 0 ? archive_errno (l->a) : 0,
                      "closing the tar stream of `%s`: %s", l->path,
                      archive_error_string (l->a) ? archive_error_string (l->a) : "unknown error");
  if (layer_submit (l, true) < 0)
    return bvm_error (err, errno, "write layer blob `%s`", l->path);
  while (l->written < l->filled)
    if (layer_write_oldest (l) < 0)
      return bvm_error (err, errno, "%s layer blob `%s`", errno == EIO ? "compress" : "write",
                        l->path);
  layer_stop_workers (l);
  {
    /* the gzip trailer: CRC-32 and length mod 2^32, little-endian */
    unsigned char t[8];
    for (int i = 0; i < 4; i++)
      {
        t[i] = (unsigned char) (l->crc >> (8 * i));
        t[4 + i] = (unsigned char) (l->tar_bytes >> (8 * i));
      }
    if (layer_put (l, t, sizeof t) < 0)
      return bvm_error (err, errno, "write layer blob `%s`", l->path);
  }
  /* close(2) can report a deferred write error (NFS, quota). */
  {
    int fd = steal_fd (&l->fd);
    if (close (fd) < 0)
      return bvm_error (err, errno, "close layer blob `%s`", l->path);
  }
  digest_final (&l->diff, diff_id);
  memset (blob, 0, sizeof *blob);
  snprintf (blob->media_type, sizeof blob->media_type, "%s", OCI_MEDIA_LAYER_GZIP);
  digest_final (&l->blob, blob->digest);
  blob->size = l->blob_bytes;
  l->finished = true;
  return 0;
}

void
oci_layer_free (struct oci_layer *l)
{
  if (l == NULL)
    return;
  l->discard = true;
  if (l->a)
    archive_write_free (l->a);
  layer_stop_workers (l);
  for (unsigned i = 0; i < LAYER_WORKERS; i++)
    if (l->worker[i].z_ready)
      deflateEnd (&l->worker[i].z);
  if (l->inline_z.z_ready)
    deflateEnd (&l->inline_z.z);
  pthread_cond_destroy (&l->done);
  pthread_cond_destroy (&l->work);
  pthread_mutex_destroy (&l->mu);
  for (unsigned i = 0; i < LAYER_SLOTS; i++)
    {
      free (l->slot[i].in);
      free (l->slot[i].out);
    }
  digest_dispose (&l->diff);
  digest_dispose (&l->blob);
  if (l->fd >= 0)
    close (l->fd);
  if (!l->finished && l->path != NULL)
    unlink (l->path);
  free (l->path);
  free (l);
}

/* --- JSON helpers ----------------------------------------------------------- */

static int
nomem (bvm_error_t *err, const char *what)
{
  return bvm_error (err, ENOMEM, "building %s", what);
}

/* json_string() refuses invalid UTF-8; say which field it was. */
static int
set_str (json_t *obj, const char *key, const char *value, const char *what, bvm_error_t *err)
{
  json_t *s = json_string (value);
  if (s == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s` is not valid UTF-8", what, key);
  if (json_object_set_new (obj, key, s) < 0)
    return nomem (err, what);
  return 0;
}

static int
str_array (json_t **out, const char *const *v, const char *what, bvm_error_t *err)
{
  json_t *a = json_array ();

  if (a == NULL)
    return nomem (err, what);
  for (size_t i = 0; v[i]; i++)
    {
      json_t *s = json_string (v[i]);
      if (s == NULL)
        {
          json_decref (a);
          return bvm_error_code (err, BVM_E_INVALID, 0, "%s[%zu] is not valid UTF-8", what, i);
        }
      if (json_array_append_new (a, s) < 0)
        {
          json_decref (a);
          return nomem (err, what);
        }
    }
  *out = a;
  return 0;
}

/* Canonical serialization: compact, keys sorted, so equal documents are
 * equal bytes and give equal digests. */
static int
dump_canonical (char **out, size_t *len, const json_t *doc, const char *what, bvm_error_t *err)
{
  char *s = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS);
  if (s == NULL)
    return nomem (err, what);
  *len = strlen (s);
  *out = s;
  return 0;
}

static bool
printable_ascii (const char *s)
{
  for (; *s; s++)
    if ((unsigned char) *s < 0x21 || (unsigned char) *s > 0x7e)
      return false;
  return true;
}

/* --- image config ------------------------------------------------------------ */

/* Replace the entry of env whose key is kv's, or append kv. */
static int
env_set (json_t *env, const char *kv, bvm_error_t *err)
{
  const char *eq = strchr (kv, '=');
  size_t klen, i;
  json_t *v, *s;

  if (eq == NULL || eq == kv)
    return bvm_error_code (err, BVM_E_INVALID, 0, "env entry `%.100s` is not KEY=VALUE", kv);
  klen = (size_t) (eq - kv);
  s = json_string (kv);
  if (s == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "env entry `%.100s` is not valid UTF-8", kv);
  json_array_foreach (env, i, v)
    {
      const char *b = json_string_value (v);
      if (b != NULL && strncmp (b, kv, klen) == 0 && b[klen] == '=')
        {
          if (json_array_set_new (env, i, s) < 0)
            return nomem (err, "the image config");
          return 0;
        }
    }
  if (json_array_append_new (env, s) < 0)
    return nomem (err, "the image config");
  return 0;
}

/* "8080/tcp", "53/udp", "9/sctp" or "8080" (tcp) into its canonical form. */
static int
port_normalize (char *out, size_t size, const char *p, bvm_error_t *err)
{
  char num[8];
  const char *slash = strchr (p, '/');
  const char *proto = slash ? slash + 1 : "tcp";
  size_t n = slash ? (size_t) (slash - p) : strlen (p);
  uint32_t port;

  if (n == 0 || n >= sizeof num)
    return bvm_error_code (err, BVM_E_INVALID, 0, "exposed port `%.40s` is not PORT[/PROTO]", p);
  memcpy (num, p, n);
  num[n] = '\0';
  if (parse_u32 (num, &port) < 0 || port == 0 || port > 65535 || num[0] == '0' || num[0] == '+')
    return bvm_error_code (err, BVM_E_INVALID, 0, "exposed port `%.40s` is not PORT[/PROTO]", p);
  if (strcmp (proto, "tcp") != 0 && strcmp (proto, "udp") != 0 && strcmp (proto, "sctp") != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "exposed port `%.40s` has a protocol other than tcp, udp, sctp", p);
  if (snprintf_checked (out, size, "%u/%s", port, proto) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "exposed port `%.40s` is too long", p);
  return 0;
}

/* The parts of a base config we merge, after type checks. Other fields of
 * base.config (StopSignal, Volumes, Healthcheck ...) pass through as they are. */
static int
base_config_check (const json_t *base, bvm_error_t *err)
{
  static const char *const str_fields[] = { "architecture", "os", "variant", "os.version" };
  static const char *const cfg_arrays[] = { "Env", "Entrypoint", "Cmd" };
  json_t *rootfs = NULL, *cfg = NULL, *ids = NULL, *hist = NULL, *v;
  const char *type = NULL;
  size_t i;

  if (!json_is_object (base))
    return bvm_error_code (err, BVM_E_INVALID, 0, "base image config is not an object");
  for (i = 0; i < ARRAY_SIZE (str_fields); i++)
    {
      const char *s = NULL;
      if (jsonx_get_str (&s, base, str_fields[i], false, 256, "", err) < 0)
        return -1;
    }
  if (jsonx_get_typed (&rootfs, base, "rootfs", JSON_OBJECT, true, "", err) < 0
      || jsonx_get_str (&type, rootfs, "type", true, 64, "rootfs", err) < 0
      || jsonx_get_typed (&ids, rootfs, "diff_ids", JSON_ARRAY, true, "rootfs", err) < 0)
    return -1;
  if (strcmp (type, "layers") != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "base image config has rootfs type `%.40s`",
                           type);
  if (json_array_size (ids) > OCI_MAX_LAYERS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "base image has more than %d layers",
                           OCI_MAX_LAYERS);
  json_array_foreach (ids, i, v)
    if (digest_problem (json_string_value (v)) != NULL)
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "base image config: `rootfs.diff_ids[%zu]` is not a sha256 digest",
                             i);
  if (jsonx_get_typed (&hist, base, "history", JSON_ARRAY, false, "", err) < 0)
    return -1;
  if (hist)
    json_array_foreach (hist, i, v)
      if (!json_is_object (v))
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "base image config: `history[%zu]` is not an object", i);
  if (jsonx_get_typed (&cfg, base, "config", JSON_OBJECT, false, "", err) < 0)
    return -1;
  if (cfg == NULL)
    return 0;
  for (i = 0; i < ARRAY_SIZE (cfg_arrays); i++)
    {
      json_t *a = json_object_get (cfg, cfg_arrays[i]);
      size_t j;
      if (a == NULL || json_is_null (a))
        continue;
      if (!json_is_array (a))
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "base image config: `config.%s` is not an array", cfg_arrays[i]);
      json_array_foreach (a, j, v)
        if (!json_is_string (v))
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "base image config: `config.%s[%zu]` is not a string",
                                 cfg_arrays[i], j);
    }
  {
    const char *s = NULL;
    json_t *o = NULL;
    const char *k;
    if (jsonx_get_str (&s, cfg, "WorkingDir", false, CAP_FIELD_READ, "config", err) < 0
        || jsonx_get_str (&s, cfg, "User", false, 256, "config", err) < 0)
      return -1;
    v = json_object_get (cfg, "Labels");
    if (v != NULL && !json_is_null (v))
      {
        if (jsonx_get_typed (&o, cfg, "Labels", JSON_OBJECT, false, "config", err) < 0)
          return -1;
        json_object_foreach (o, k, v)
          if (!json_is_string (v))
            return bvm_error_code (err, BVM_E_INVALID, 0,
                                   "base image config: label `%.100s` is not a string", k);
      }
    v = json_object_get (cfg, "ExposedPorts");
    if (v != NULL && !json_is_null (v)
        && jsonx_get_typed (&o, cfg, "ExposedPorts", JSON_OBJECT, false, "config", err) < 0)
      return -1;
  }
  return 0;
}

/* The object `key` of `cfg`, created when absent or null. */
static json_t *
object_member (json_t *cfg, const char *key)
{
  json_t *o = json_object_get (cfg, key);
  if (json_is_object (o))
    return o;
  o = json_object ();
  if (o == NULL || json_object_set_new (cfg, key, o) < 0)
    return NULL;
  return o;
}

static int
config_merge_fields (json_t *cfg, const struct oci_image_spec *spec, bvm_error_t *err)
{
  json_t *a = NULL;
  const char *k;
  json_t *v;

  if (spec->env)
    {
      json_t *env = json_object_get (cfg, "Env");
      if (!json_is_array (env))
        {
          env = json_array ();
          if (env == NULL || json_object_set_new (cfg, "Env", env) < 0)
            return nomem (err, "the image config");
        }
      for (size_t i = 0; spec->env[i]; i++)
        if (env_set (env, spec->env[i], err) < 0)
          return -1;
    }
  if (spec->entrypoint)
    {
      if (str_array (&a, spec->entrypoint, "entrypoint", err) < 0)
        return -1;
      if (json_object_set_new (cfg, "Entrypoint", a) < 0)
        return nomem (err, "the image config");
      /* Docker semantics: a new ENTRYPOINT resets the inherited CMD, which
       * was written for the base's entrypoint. */
      if (spec->cmd == NULL)
        json_object_del (cfg, "Cmd");
    }
  if (spec->cmd)
    {
      if (str_array (&a, spec->cmd, "cmd", err) < 0)
        return -1;
      if (json_object_set_new (cfg, "Cmd", a) < 0)
        return nomem (err, "the image config");
    }
  if (spec->workdir && set_str (cfg, "WorkingDir", spec->workdir, "config", err) < 0)
    return -1;
  if (spec->user && set_str (cfg, "User", spec->user, "config", err) < 0)
    return -1;
  if (spec->exposed_ports)
    {
      json_t *ports = object_member (cfg, "ExposedPorts");
      if (ports == NULL)
        return nomem (err, "the image config");
      for (size_t i = 0; spec->exposed_ports[i]; i++)
        {
          char p[32];
          json_t *empty;
          if (port_normalize (p, sizeof p, spec->exposed_ports[i], err) < 0)
            return -1;
          empty = json_object ();
          if (empty == NULL || json_object_set_new (ports, p, empty) < 0)
            return nomem (err, "the image config");
        }
    }
  if (spec->labels)
    {
      json_t *labels;
      if (!json_is_object (spec->labels))
        return bvm_error_code (err, BVM_E_INVALID, 0, "image labels are not an object");
      labels = object_member (cfg, "Labels");
      if (labels == NULL)
        return nomem (err, "the image config");
      json_object_foreach (spec->labels, k, v)
        {
          if (!json_is_string (v))
            return bvm_error_code (err, BVM_E_INVALID, 0, "image label `%.100s` is not a string",
                                   k);
          if (json_object_set (labels, k, v) < 0)
            return nomem (err, "the image config");
        }
    }
  return 0;
}

int
oci_config_build (char **out, size_t *len, const struct oci_image_spec *spec,
                  const char *base_config, size_t base_len, const char *const *diff_ids,
                  size_t n_diff_ids, bvm_error_t *err)
{
  cleanup_json json_t *base = NULL;
  cleanup_json json_t *doc = json_object ();
  json_t *cfg = NULL, *rootfs, *ids, *hist, *entry, *v;
  const char *arch = spec->architecture, *os = spec->os;
  size_t i;

  if (doc == NULL)
    return nomem (err, "the image config");
  if (base_config != NULL)
    {
      const char *base_arch = NULL, *base_os = NULL;
      if (jsonx_parse (&base, base_config, base_len, OCI_CONFIG_MAX, "base image config", err) < 0
          || base_config_check (base, err) < 0)
        return -1;
      jsonx_get_str (&base_arch, base, "architecture", false, 256, "", err);
      jsonx_get_str (&base_os, base, "os", false, 256, "", err);
      /* A base for another platform would give an image that cannot run. */
      if (arch && base_arch && strcmp (arch, base_arch) != 0)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "base image is for architecture `%.40s`, not `%.40s`", base_arch,
                               arch);
      if (os && base_os && strcmp (os, base_os) != 0)
        return bvm_error_code (err, BVM_E_INVALID, 0, "base image is for os `%.40s`, not `%.40s`",
                               base_os, os);
      arch = arch ? arch : base_arch;
      os = os ? os : base_os;
      v = json_object_get (base, "config");
      if (v != NULL)
        {
          cfg = json_deep_copy (v);
          if (cfg == NULL)
            return nomem (err, "the image config");
        }
      for (i = 0; i < 2; i++)
        {
          static const char *const carry[] = { "variant", "os.version" };
          v = json_object_get (base, carry[i]);
          if (v != NULL && json_object_set (doc, carry[i], v) < 0)
            {
              json_decref (cfg);
              return nomem (err, "the image config");
            }
        }
    }
  if (cfg == NULL)
    cfg = json_object ();
  if (cfg == NULL || json_object_set_new (doc, "config", cfg) < 0)
    return nomem (err, "the image config");
  if (config_merge_fields (cfg, spec, err) < 0)
    return -1;

  if (set_str (doc, "architecture", arch ? arch : "amd64", "config", err) < 0
      || set_str (doc, "os", os ? os : "linux", "config", err) < 0)
    return -1;
  if (spec->created && set_str (doc, "created", spec->created, "config", err) < 0)
    return -1;

  rootfs = json_object ();
  if (rootfs == NULL || json_object_set_new (doc, "rootfs", rootfs) < 0)
    return nomem (err, "the image config");
  ids = base ? json_deep_copy (json_object_get (json_object_get (base, "rootfs"), "diff_ids"))
             : json_array ();
  if (ids == NULL || json_object_set_new (rootfs, "diff_ids", ids) < 0
      || json_object_set_new (rootfs, "type", json_string ("layers")) < 0)
    return nomem (err, "the image config");
  for (i = 0; i < n_diff_ids; i++)
    {
      if (digest_problem (diff_ids[i]) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "diff_id `%.80s` is not a sha256 digest",
                               diff_ids[i]);
      if (json_array_append_new (ids, json_string (diff_ids[i])) < 0)
        return nomem (err, "the image config");
    }
  if (json_array_size (ids) > OCI_MAX_LAYERS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "image would have more than %d layers",
                           OCI_MAX_LAYERS);

  v = base ? json_object_get (base, "history") : NULL;
  hist = v ? json_deep_copy (v) : json_array ();
  if (hist == NULL || json_object_set_new (doc, "history", hist) < 0)
    return nomem (err, "the image config");
  entry = json_object ();
  if (entry == NULL || json_array_append_new (hist, entry) < 0)
    return nomem (err, "the image config");
  if (spec->created && set_str (entry, "created", spec->created, "history", err) < 0)
    return -1;
  if (set_str (entry, "created_by",
               spec->history_created_by ? spec->history_created_by : "buildvm", "history", err)
      < 0)
    return -1;

  return dump_canonical (out, len, doc, "the image config", err);
}

/* --- manifests ---------------------------------------------------------------- */

static json_t *
descriptor_json (const struct oci_descriptor *d)
{
  return json_pack ("{s:s, s:s, s:I}", "mediaType", d->media_type, "digest", d->digest, "size",
                    (json_int_t) d->size);
}

static int
descriptor_check (const struct oci_descriptor *d, const char *what, bvm_error_t *err)
{
  if (digest_problem (d->digest) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s digest `%.80s` is not a sha256 digest", what,
                           d->digest);
  if (d->media_type[0] == '\0' || !printable_ascii (d->media_type))
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s has no valid media type", what);
  if (d->size > (uint64_t) INT64_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s size is out of range", what);
  return 0;
}

int
oci_manifest_build (char **out, size_t *len, const struct oci_descriptor *config,
                    const struct oci_descriptor *layers, size_t n_layers,
                    const json_t *annotations, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *arr, *d;

  if (descriptor_check (config, "config", err) < 0)
    return -1;
  if (n_layers > OCI_MAX_LAYERS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "image would have more than %d layers",
                           OCI_MAX_LAYERS);
  doc = json_pack ("{s:i, s:s, s:o, s:[]}", "schemaVersion", 2, "mediaType", OCI_MEDIA_MANIFEST,
                   "config", descriptor_json (config), "layers");
  if (doc == NULL)
    return nomem (err, "the image manifest");
  arr = json_object_get (doc, "layers");
  for (size_t i = 0; i < n_layers; i++)
    {
      if (descriptor_check (&layers[i], "layer", err) < 0)
        return -1;
      d = descriptor_json (&layers[i]);
      if (d == NULL || json_array_append_new (arr, d) < 0)
        return nomem (err, "the image manifest");
    }
  if (annotations != NULL)
    {
      const char *k;
      json_t *v;
      if (!json_is_object (annotations))
        return bvm_error_code (err, BVM_E_INVALID, 0, "manifest annotations are not an object");
      json_object_foreach ((json_t *) annotations, k, v)
        if (!json_is_string (v))
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "manifest annotation `%.100s` is not a string", k);
      if (json_object_size (annotations) > 0
          && json_object_set_new (doc, "annotations", json_deep_copy (annotations)) < 0)
        return nomem (err, "the image manifest");
    }
  return dump_canonical (out, len, doc, "the image manifest", err);
}

struct oci_manifest
{
  enum oci_manifest_kind kind;
  char media_type[OCI_MEDIA_TYPE_MAX + 1];
  struct oci_descriptor config;
  struct oci_descriptor selected;
  struct oci_descriptor *layers;
  size_t n_layers;
};

static int
descriptor_parse (struct oci_descriptor *d, const json_t *j, const char *where, bvm_error_t *err)
{
  const char *mt = NULL, *dg = NULL;
  uint64_t size = 0;

  if (!json_is_object (j))
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest: `%s` is not an object", where);
  if (jsonx_get_str (&mt, j, "mediaType", true, OCI_MEDIA_TYPE_MAX, where, err) < 0
      || jsonx_get_str (&dg, j, "digest", true, DIGEST_STR_LEN + 64, where, err) < 0
      || jsonx_get_u64 (&size, j, "size", true, 0, (uint64_t) INT64_MAX, where, err) < 0)
    return bvm_error_wrap (err, "manifest");
  if (!printable_ascii (mt))
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest: `%s.mediaType` is not a media type",
                           where);
  if (digest_problem (dg) != NULL)
    return bvm_error_code (
        err, BVM_E_INVALID, 0,
        "manifest: `%s.digest` is not a sha256 digest (only sha256 is supported)", where);
  snprintf (d->media_type, sizeof d->media_type, "%s", mt);
  snprintf (d->digest, sizeof d->digest, "%s", dg);
  d->size = size;
  return 0;
}

/* The media type of a Content-Type header value, without parameters. */
static void
media_type_of (char *out, size_t size, const char *ct)
{
  size_t n = 0;

  out[0] = '\0';
  if (ct == NULL)
    return;
  while (*ct == ' ' || *ct == '\t')
    ct++;
  while (ct[n] && ct[n] != ';' && ct[n] != ' ' && ct[n] != '\t')
    n++;
  if (n >= size)
    {
      /* too long to be a type we know: make it one that matches nothing */
      snprintf (out, size, "%s", "(overlong)");
      return;
    }
  memcpy (out, ct, n);
  out[n] = '\0';
}

static int
manifest_parse_image (struct oci_manifest *m, const json_t *doc, bvm_error_t *err)
{
  json_t *cfg = NULL, *layers = NULL, *v;
  size_t i;

  if (jsonx_get_typed (&cfg, doc, "config", JSON_OBJECT, true, "", err) < 0
      || jsonx_get_typed (&layers, doc, "layers", JSON_ARRAY, true, "", err) < 0)
    return bvm_error_wrap (err, "manifest");
  if (descriptor_parse (&m->config, cfg, "config", err) < 0)
    return -1;
  if (strcmp (m->config.media_type, OCI_MEDIA_CONFIG) != 0
      && strcmp (m->config.media_type, DOCKER_MEDIA_CONFIG) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "manifest: config media type `%s` is not a container image config",
                           m->config.media_type);
  if (json_array_size (layers) > OCI_MAX_LAYERS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "manifest has more than %d layers",
                           OCI_MAX_LAYERS);
  m->layers = calloc (json_array_size (layers) + 1, sizeof *m->layers);
  if (m->layers == NULL)
    return bvm_error (err, ENOMEM, "manifest layers");
  json_array_foreach (layers, i, v)
    {
      struct oci_descriptor *d = &m->layers[i];
      char where[32];
      snprintf (where, sizeof where, "layers[%zu]", i);
      if (descriptor_parse (d, v, where, err) < 0)
        return -1;
      /* Docker's gzip layer is byte for byte an OCI gzip layer. Foreign
       * (non-distributable) layers cannot be mounted or copied: refuse. */
      if (strcmp (d->media_type, DOCKER_MEDIA_LAYER_GZIP) == 0)
        snprintf (d->media_type, sizeof d->media_type, "%s", OCI_MEDIA_LAYER_GZIP);
      else if (strcmp (d->media_type, OCI_MEDIA_LAYER_GZIP) != 0
               && strcmp (d->media_type, OCI_MEDIA_LAYER_ZSTD) != 0
               && strcmp (d->media_type, OCI_MEDIA_LAYER_TAR) != 0)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "manifest: `%s` has unsupported media type `%s`", where,
                               d->media_type);
      m->n_layers++;
    }
  return 0;
}

static int
manifest_parse_index (struct oci_manifest *m, const json_t *doc, const char *os, const char *arch,
                      bvm_error_t *err)
{
  json_t *list = NULL, *v;
  size_t i;

  if (jsonx_get_typed (&list, doc, "manifests", JSON_ARRAY, true, "", err) < 0)
    return bvm_error_wrap (err, "manifest index");
  if (json_array_size (list) > 1024)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "manifest index has more than 1024 entries");
  json_array_foreach (list, i, v)
    {
      struct oci_descriptor d;
      json_t *plat = NULL;
      const char *pos = NULL, *parch = NULL;
      char where[32];

      snprintf (where, sizeof where, "manifests[%zu]", i);
      if (descriptor_parse (&d, v, where, err) < 0)
        return -1;
      if (jsonx_get_typed (&plat, v, "platform", JSON_OBJECT, false, where, err) < 0)
        return bvm_error_wrap (err, "manifest index");
      if (plat == NULL)
        continue;
      if (jsonx_get_str (&pos, plat, "os", false, 64, where, err) < 0
          || jsonx_get_str (&parch, plat, "architecture", false, 64, where, err) < 0)
        return bvm_error_wrap (err, "manifest index");
      if (pos == NULL || parch == NULL || strcmp (pos, os) != 0 || strcmp (parch, arch) != 0)
        continue;
      if (strcmp (d.media_type, OCI_MEDIA_MANIFEST) != 0
          && strcmp (d.media_type, DOCKER_MEDIA_MANIFEST) != 0)
        continue; /* a nested index: we follow one level only */
      m->selected = d;
      return 0;
    }
  return bvm_error_code (err, BVM_E_INVALID, 0, "manifest index has no `%s/%s` image", os, arch);
}

int
oci_manifest_parse (struct oci_manifest **out, const char *body, size_t len,
                    const char *media_type, const char *os, const char *arch, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  struct oci_manifest *m;
  const char *body_mt = NULL;
  char header_mt[OCI_MEDIA_TYPE_MAX + 1];
  const char *mt;
  uint64_t version = 0;
  int ret;

  if (jsonx_parse (&doc, body, len, OCI_MANIFEST_MAX, "manifest", err) < 0)
    return -1;
  if (!json_is_object (doc))
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest is not a JSON object");
  if (jsonx_get_u64 (&version, doc, "schemaVersion", true, 0, 100, "", err) < 0)
    return bvm_error_wrap (err, "manifest");
  if (jsonx_get_str (&body_mt, doc, "mediaType", false, OCI_MEDIA_TYPE_MAX, "", err) < 0)
    return bvm_error_wrap (err, "manifest");
  media_type_of (header_mt, sizeof header_mt, media_type);
  /* Registries serve untyped content as application/json or octet-stream:
   * then the body decides. */
  if (strcmp (header_mt, "application/json") == 0
      || strcmp (header_mt, "application/octet-stream") == 0
      || strcmp (header_mt, "text/plain") == 0)
    header_mt[0] = '\0';
  if (body_mt && header_mt[0] && strcmp (body_mt, header_mt) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "manifest says media type `%s` but was served as `%s`", body_mt,
                           header_mt);
  mt = body_mt ? body_mt : header_mt[0] ? header_mt : NULL;
  if (mt == NULL)
    mt = json_object_get (doc, "manifests") ? OCI_MEDIA_INDEX : OCI_MEDIA_MANIFEST;
  if (strncmp (mt, "application/vnd.docker.distribution.manifest.v1", 47) == 0 || version == 1)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "manifest is Docker schema 1, which is not supported");
  if (version != 2)
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest has schemaVersion %llu, not 2",
                           (unsigned long long) version);

  m = calloc (1, sizeof *m);
  if (m == NULL)
    return bvm_error (err, ENOMEM, "manifest");
  snprintf (m->media_type, sizeof m->media_type, "%s", mt);
  if (strcmp (mt, OCI_MEDIA_MANIFEST) == 0 || strcmp (mt, DOCKER_MEDIA_MANIFEST) == 0)
    {
      m->kind = OCI_MANIFEST_IMAGE;
      ret = manifest_parse_image (m, doc, err);
    }
  else if (strcmp (mt, OCI_MEDIA_INDEX) == 0 || strcmp (mt, DOCKER_MEDIA_LIST) == 0)
    {
      m->kind = OCI_MANIFEST_INDEX;
      ret = manifest_parse_index (m, doc, os ? os : "linux", arch ? arch : "amd64", err);
    }
  else
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "manifest media type `%.100s` is not supported",
                          mt);
  if (ret < 0)
    {
      oci_manifest_free (m);
      return ret;
    }
  *out = m;
  return 0;
}

enum oci_manifest_kind
oci_manifest_kind (const struct oci_manifest *m)
{
  return m->kind;
}

const char *
oci_manifest_media_type (const struct oci_manifest *m)
{
  return m->media_type;
}

const struct oci_descriptor *
oci_manifest_config (const struct oci_manifest *m)
{
  return m->kind == OCI_MANIFEST_IMAGE ? &m->config : NULL;
}

const struct oci_descriptor *
oci_manifest_layers (const struct oci_manifest *m, size_t *n)
{
  *n = m->kind == OCI_MANIFEST_IMAGE ? m->n_layers : 0;
  return m->kind == OCI_MANIFEST_IMAGE ? m->layers : NULL;
}

const struct oci_descriptor *
oci_manifest_selected (const struct oci_manifest *m)
{
  return m->kind == OCI_MANIFEST_INDEX ? &m->selected : NULL;
}

void
oci_manifest_free (struct oci_manifest *m)
{
  if (m == NULL)
    return;
  free (m->layers);
  free (m);
}

/* --- image layout ---------------------------------------------------------- */

#define COPY_BUF_SIZE (1u << 20)

static int
copy_file (const char *src, const char *dst, bvm_error_t *err)
{
  cleanup_close int in = open (src, O_RDONLY | O_CLOEXEC);
  cleanup_close int outfd = -1;
  cleanup_free char *buf = NULL;

  if (in < 0)
    return bvm_error (err, errno, "open `%s`", src);
  outfd = open (dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (outfd < 0)
    return bvm_error (err, errno, "create `%s`", dst);
  buf = malloc (COPY_BUF_SIZE);
  if (buf == NULL)
    return bvm_error (err, ENOMEM, "copy `%s`", src);
  for (;;)
    {
      ssize_t n = read (in, buf, COPY_BUF_SIZE);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "read `%s`", src);
      if (n == 0)
        break;
      if (fs_write_all (outfd, buf, (size_t) n) < 0)
        return bvm_error (err, errno, "write `%s`", dst);
    }
  if (fsync (outfd) < 0)
    return bvm_error (err, errno, "fsync `%s`", dst);
  return 0;
}

/* Put the layer blob at blobs/sha256/<hex>: a hard link when src and dir
 * share a file system, else a copy to a temporary name and a rename, so a
 * reader never sees a partial blob. */
static int
layout_put_blob (const char *blobdir, const struct oci_descriptor *d, const char *src,
                 bvm_error_t *err)
{
  char dst[PATH_MAX], tmp[PATH_MAX];
  struct stat st;

  if (snprintf_checked (dst, sizeof dst, "%s/%s", blobdir, d->digest + 7) < 0
      || snprintf_checked (tmp, sizeof tmp, "%s/.tmp-%s", blobdir, d->digest + 7) < 0)
    return bvm_error (err, ENAMETOOLONG, "layout blob in `%s`", blobdir);
  if (stat (src, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", src);
  if ((uint64_t) st.st_size != d->size)
    return bvm_error_code (err, BVM_E_INVALID, 0, "layer blob `%s` is %llu bytes, expected %llu",
                           src, (unsigned long long) st.st_size, (unsigned long long) d->size);
  if (lstat (dst, &st) == 0 && S_ISREG (st.st_mode) && (uint64_t) st.st_size == d->size)
    return 0; /* content addressed: same name, same bytes */
  unlink (tmp);
  if (link (src, tmp) < 0 && copy_file (src, tmp, err) < 0)
    {
      unlink (tmp);
      return -1;
    }
  if (rename (tmp, dst) < 0)
    {
      int e = errno;
      unlink (tmp);
      return bvm_error (err, e, "rename `%s`", dst);
    }
  return 0;
}

static int
layout_put_data (const char *blobdir, const char *digest, const char *data, size_t len,
                 bvm_error_t *err)
{
  char dst[PATH_MAX];
  if (snprintf_checked (dst, sizeof dst, "%s/%s", blobdir, digest + 7) < 0)
    return bvm_error (err, ENAMETOOLONG, "layout blob in `%s`", blobdir);
  return fs_write_atomic (dst, data, len, 0644, err);
}

/* index.json: our manifest under `tag`, and the entries of an existing
 * index.json for other tags. */
static int
layout_index (json_t **out, const char *path, const char *tag, const char *digest, size_t len,
              bvm_error_t *err)
{
  cleanup_json json_t *old = NULL;
  cleanup_json json_t *doc = NULL;
  json_t *list, *entry, *v;
  size_t i;

  doc = json_pack ("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", OCI_MEDIA_INDEX,
                   "manifests");
  if (doc == NULL)
    return nomem (err, "index.json");
  list = json_object_get (doc, "manifests");
  if (access (path, F_OK) == 0)
    {
      json_t *old_list = NULL;
      if (jsonx_parse_file (&old, path, OCI_MANIFEST_MAX, err) < 0
          || jsonx_get_typed (&old_list, old, "manifests", JSON_ARRAY, true, "", err) < 0)
        return bvm_error_wrap (err, "existing image layout");
      json_array_foreach (old_list, i, v)
        {
          const char *name = json_string_value (
              json_object_get (json_object_get (v, "annotations"),
                               "org.opencontainers.image.ref.name"));
          if (name != NULL && strcmp (name, tag) == 0)
            continue;
          if (json_array_append (list, v) < 0)
            return nomem (err, "index.json");
        }
    }
  entry = json_pack ("{s:s, s:s, s:I, s:{s:s}}", "mediaType", OCI_MEDIA_MANIFEST, "digest", digest,
                     "size", (json_int_t) len, "annotations", "org.opencontainers.image.ref.name",
                     tag);
  if (entry == NULL || json_array_append_new (list, entry) < 0)
    return nomem (err, "index.json");
  *out = steal_pointer (&doc);
  return 0;
}

int
oci_layout_write (const char *dir, const char *tag, const char *manifest, size_t manifest_len,
                  const char *config, size_t config_len, const char *const *blob_paths,
                  const struct oci_descriptor *layers, size_t n_layers, bvm_error_t *err)
{
  static const char layout_file[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
  struct oci_manifest *m = NULL;
  cleanup_json json_t *index = NULL;
  char blobdir[PATH_MAX], path[PATH_MAX];
  char mdigest[DIGEST_STR_LEN + 1], cdigest[DIGEST_STR_LEN + 1];
  const struct oci_descriptor *ml;
  size_t n;

  if (oci_tag_problem (tag) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.200s` is not a valid tag", tag);
  if (digest_buffer (mdigest, manifest, manifest_len, err) < 0
      || digest_buffer (cdigest, config, config_len, err) < 0)
    return -1;
  /* The layout must be self-consistent: check that the manifest describes
   * exactly what we are about to write. */
  if (oci_manifest_parse (&m, manifest, manifest_len, OCI_MEDIA_MANIFEST, NULL, NULL, err) < 0)
    return bvm_error_wrap (err, "image layout `%s`", dir);
  ml = oci_manifest_layers (m, &n);
  if (oci_manifest_kind (m) != OCI_MANIFEST_IMAGE || oci_manifest_config (m) == NULL
      || strcmp (oci_manifest_config (m)->digest, cdigest) != 0
      || oci_manifest_config (m)->size != config_len || n != n_layers)
    {
      oci_manifest_free (m);
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "image layout `%s`: the manifest does not describe the given config "
                             "and layers",
                             dir);
    }
  for (size_t i = 0; i < n; i++)
    if (strcmp (ml[i].digest, layers[i].digest) != 0 || ml[i].size != layers[i].size)
      {
        oci_manifest_free (m);
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "image layout `%s`: manifest layer %zu is not the given layer", dir,
                               i);
      }
  oci_manifest_free (m);

  if (snprintf_checked (blobdir, sizeof blobdir, "%s/blobs/sha256", dir) < 0)
    return bvm_error (err, ENAMETOOLONG, "image layout `%s`", dir);
  if (fs_mkdir_p (blobdir, 0755, err) < 0)
    return bvm_error_wrap (err, "image layout `%s`", dir);
  for (size_t i = 0; i < n_layers; i++)
    {
      if (blob_paths[i] == NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "image layout `%s`: layer `%s` is not available locally", dir,
                               layers[i].digest);
      if (layout_put_blob (blobdir, &layers[i], blob_paths[i], err) < 0)
        return bvm_error_wrap (err, "image layout `%s`", dir);
    }
  if (layout_put_data (blobdir, cdigest, config, config_len, err) < 0
      || layout_put_data (blobdir, mdigest, manifest, manifest_len, err) < 0)
    return bvm_error_wrap (err, "image layout `%s`", dir);
  if (snprintf_checked (path, sizeof path, "%s/oci-layout", dir) < 0)
    return bvm_error (err, ENAMETOOLONG, "image layout `%s`", dir);
  if (fs_write_atomic (path, layout_file, sizeof layout_file - 1, 0644, err) < 0)
    return -1;
  /* index.json last: it is what makes the image visible. */
  if (snprintf_checked (path, sizeof path, "%s/index.json", dir) < 0)
    return bvm_error (err, ENAMETOOLONG, "image layout `%s`", dir);
  if (layout_index (&index, path, tag, mdigest, manifest_len, err) < 0)
    return -1;
  {
    cleanup_free char *s = NULL;
    size_t len = 0;
    if (dump_canonical (&s, &len, index, "index.json", err) < 0)
      return -1;
    return fs_write_atomic (path, s, len, 0644, err);
  }
}
