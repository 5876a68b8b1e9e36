/* store.c - the artifact store: the generic layer and the "dir" backend */
#include "store.h"
#include "store_s3.h"
#include "buf.h"
#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <openssl/crypto.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEX_NAME "index.json"
#define STAGING_DIR ".staging"
#define STALE_STAGING_S 600 /* an unlocked staging dir this old is a crashed txn's */

struct store
{
  const struct store_backend *be;
  void *state;
};

struct store_txn
{
  struct store *s;
  void *bt; /* the backend's transaction */
  char *prefix;
  json_t *objects; /* key -> {"key","size","sha256"} */
  uint64_t bytes;  /* the sum of the objects' sizes */
  bool failed;     /* a put failed half way: only abort is possible */
  /* the object being written */
  char *key;
  struct digest_ctx digest;
  uint64_t size;
  /* encryption at rest (store_txn_seal) */
  bool sealed;
  unsigned char seal_key[SEAL_KEY_BYTES];
  struct seal_writer *sw; /* of the object being written */
};

#define SEAL_FORMAT "buildvm-seal-v1"

/* --- keys ----------------------------------------------------------------- */

/* The shape shared by keys and prefixes; `what` names it in messages. The
 * value is not echoed when it has control characters. */
static int
check_relpath (const char *p, bool want_trailing_slash, const char *what, bvm_error_t *err)
{
  size_t len = strlen (p);
  const char *c, *end;

  if (len == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "empty %s", what);
  if (len > STORE_KEY_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s is longer than %d bytes", what,
                           STORE_KEY_MAX);
  if (text_problem (p, len) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s has control characters or invalid UTF-8",
                           what);
  if (p[0] == '/')
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s` is absolute", what, p);
  if ((p[len - 1] == '/') != want_trailing_slash)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s` must %send with `/`", what, p,
                           want_trailing_slash ? "" : "not ");
  end = p + len - (want_trailing_slash ? 1 : 0);
  for (c = p; c <= end;)
    {
      const char *slash = memchr (c, '/', (size_t) (end - c));
      size_t n = (size_t) ((slash ? slash : end) - c);
      if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "%s `%s` has an empty, `.` or `..` component", what, p);
      if (n > 255)
        return bvm_error_code (err, BVM_E_INVALID, 0, "%s has a component over 255 bytes", what);
      if (slash == NULL)
        break;
      c = slash + 1;
    }
  return 0;
}

int
store_check_key (const char *key, const char *prefix, bvm_error_t *err)
{
  size_t pl;

  if (key == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "missing key");
  if (check_relpath (key, false, "key", err) < 0)
    return -1;
  if (prefix == NULL)
    return 0;
  pl = strlen (prefix);
  if (strncmp (key, prefix, pl) != 0 || key[pl] == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "key `%s` is outside the prefix `%s`", key,
                           prefix);
  if (strcmp (key + pl, INDEX_NAME) == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "key `%s` is reserved for the index of `%s`",
                           key, prefix);
  return 0;
}

static int
check_prefix (const char *prefix, bvm_error_t *err)
{
  if (prefix == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "missing prefix");
  if (check_relpath (prefix, true, "prefix", err) < 0)
    return -1;
  if (prefix[0] == '.')
    return bvm_error_code (err, BVM_E_INVALID, 0, "prefix `%s` may not start with `.`", prefix);
  return 0;
}

/* --- the "dir" backend ---------------------------------------------------- */

struct dir_store
{
  char *root; /* absolute, no trailing slash */
};

struct dir_txn
{
  struct dir_store *ds;
  char *prefix;
  char *stage; /* <root>/.staging/txn.XXXXXX */
  char *tree;  /* <stage>/tree: becomes <root>/<prefix> */
  int lock_fd; /* the stage directory, flock'ed while the txn lives */
  int fd;      /* the object being written */
  char *file;  /* its path */
};

static int
dir_open (void **state, const char *location, bvm_error_t *err)
{
  struct dir_store *ds;
  char real[PATH_MAX], sub[PATH_MAX];

  if (location == NULL || *location == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "empty artifact store path");
  if (fs_mkdir_p (location, 0755, err) < 0)
    return bvm_error_wrap (err, "artifact store");
  if (realpath (location, real) == NULL)
    return bvm_error (err, errno, "artifact store `%s`", location);
  if (snprintf_checked (sub, sizeof sub, "%s/%s", real, STAGING_DIR) < 0)
    return bvm_error (err, ENAMETOOLONG, "artifact store `%s`", real);
  if (mkdir (sub, 0700) < 0 && errno != EEXIST)
    return bvm_error (err, errno, "mkdir `%s`", sub);
  ds = calloc (1, sizeof *ds);
  if (ds == NULL || (ds->root = strdup (real)) == NULL)
    {
      free (ds);
      return bvm_error (err, ENOMEM, "artifact store");
    }
  *state = ds;
  return 0;
}

static void
dir_close (void *state)
{
  struct dir_store *ds = state;
  if (ds == NULL)
    return;
  free (ds->root);
  free (ds);
}

/* Remove staging directories of transactions that died: their lock is free
 * and they have not been touched for a while (the age keeps us away from a
 * directory another process has just created and not yet locked). */
static void
dir_sweep (struct dir_store *ds)
{
  char sub[PATH_MAX];
  DIR *d;
  struct dirent *de;

  if (snprintf_checked (sub, sizeof sub, "%s/%s", ds->root, STAGING_DIR) < 0)
    return;
  d = opendir (sub);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      char p[PATH_MAX];
      struct stat st;
      cleanup_close int fd = -1;
      bvm_error_t err = NULL;

      if (strncmp (de->d_name, "txn.", 4) != 0)
        continue;
      if (snprintf_checked (p, sizeof p, "%s/%s", sub, de->d_name) < 0)
        continue;
      fd = open (p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 || fstat (fd, &st) < 0 || time (NULL) - st.st_mtime < STALE_STAGING_S)
        continue;
      if (flock (fd, LOCK_EX | LOCK_NB) < 0)
        continue;
      if (fs_rm_rf (p, &err) < 0)
        bvm_error_free (&err);
    }
  closedir (d);
}

static void
dir_abort (void *txn)
{
  struct dir_txn *t = txn;
  bvm_error_t err = NULL;

  if (t == NULL)
    return;
  if (t->fd >= 0)
    close (t->fd);
  if (t->stage != NULL && fs_rm_rf (t->stage, &err) < 0)
    bvm_error_free (&err);
  if (t->lock_fd >= 0)
    close (t->lock_fd);
  free (t->file);
  free (t->tree);
  free (t->stage);
  free (t->prefix);
  free (t);
}

static int
dir_txn_begin (void **txn, void *state, const char *prefix, bvm_error_t *err)
{
  struct dir_store *ds = state;
  struct dir_txn *t;
  char tmpl[PATH_MAX];

  dir_sweep (ds);
  if (snprintf_checked (tmpl, sizeof tmpl, "%s/%s/txn.XXXXXX", ds->root, STAGING_DIR) < 0)
    return bvm_error (err, ENAMETOOLONG, "artifact store staging");
  if (mkdtemp (tmpl) == NULL)
    return bvm_error (err, errno, "mkdtemp `%s`", tmpl);
  t = calloc (1, sizeof *t);
  if (t == NULL)
    {
      rmdir (tmpl);
      return bvm_error (err, ENOMEM, "artifact store transaction");
    }
  t->ds = ds;
  t->fd = -1;
  t->lock_fd = -1;
  t->stage = strdup (tmpl);
  t->prefix = strdup (prefix);
  if (t->stage == NULL || t->prefix == NULL || asprintf (&t->tree, "%s/tree", tmpl) < 0)
    {
      t->tree = NULL;
      dir_abort (t);
      return bvm_error (err, ENOMEM, "artifact store transaction");
    }
  t->lock_fd = open (t->stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (t->lock_fd < 0 || flock (t->lock_fd, LOCK_EX) < 0 || mkdir (t->tree, 0755) < 0)
    {
      int e = errno;
      dir_abort (t);
      return bvm_error (err, e, "artifact store staging `%s`", tmpl);
    }
  *txn = t;
  return 0;
}

/* <tree>/<key without the prefix>, with its parent directories created */
static int
dir_stage_path (char **out, struct dir_txn *t, const char *key, bool mkparents, bvm_error_t *err)
{
  cleanup_free char *p = NULL;
  char *slash;

  if (asprintf (&p, "%s/%s", t->tree, key + strlen (t->prefix)) < 0)
    return bvm_error (err, ENOMEM, "artifact store");
  if (mkparents)
    {
      slash = strrchr (p, '/');
      *slash = '\0';
      /* only our own directories exist under the tree: a file where a
       * directory is needed fails with ENOTDIR */
      if (fs_mkdir_p (p, 0755, err) < 0)
        return bvm_error_wrap (err, "key `%s` conflicts with another key", key);
      *slash = '/';
    }
  *out = steal_pointer (&p);
  return 0;
}

static int
dir_put_begin (void *txn, const char *key, bvm_error_t *err)
{
  struct dir_txn *t = txn;
  cleanup_free char *p = NULL;

  if (dir_stage_path (&p, t, key, true, err) < 0)
    return -1;
  t->fd = open (p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (t->fd < 0)
    {
      if (errno == EEXIST)
        return bvm_error_code (err, BVM_E_INVALID, 0, "key `%s` conflicts with another key", key);
      return bvm_error (err, errno, "create `%s`", p);
    }
  free (t->file);
  t->file = steal_pointer (&p);
  return 0;
}

static int
dir_put_write (void *txn, const void *buf, size_t len, bvm_error_t *err)
{
  struct dir_txn *t = txn;
  if (fs_write_all (t->fd, buf, len) < 0)
    return bvm_error (err, errno, "write `%s`", t->file);
  return 0;
}

static int
dir_put_end (void *txn, bvm_error_t *err)
{
  struct dir_txn *t = txn;
  int fd = steal_fd (&t->fd);

  if (fsync (fd) < 0)
    {
      int e = errno;
      close (fd);
      return bvm_error (err, e, "fsync `%s`", t->file);
    }
  if (close (fd) < 0)
    return bvm_error (err, errno, "close `%s`", t->file);
  return 0;
}

static int
dir_put_link (void *txn, const char *key, const char *existing_key, bvm_error_t *err)
{
  struct dir_txn *t = txn;
  cleanup_free char *from = NULL, *to = NULL;

  if (dir_stage_path (&from, t, existing_key, false, err) < 0
      || dir_stage_path (&to, t, key, true, err) < 0)
    return -1;
  if (link (from, to) < 0)
    {
      if (errno == EEXIST)
        return bvm_error_code (err, BVM_E_INVALID, 0, "key `%s` conflicts with another key", key);
      return bvm_error (err, errno, "link `%s` to `%s`", to, from);
    }
  return 0;
}

/* fsync every directory of the staged tree, so the tree is durable before it
 * is renamed into place. Depth is bounded by STORE_KEY_MAX. */
static int
fsync_tree (int dirfd, int depth)
{
  DIR *d;
  struct dirent *de;
  int ret = 0;

  if (depth > STORE_KEY_MAX)
    {
      close (dirfd);
      errno = ELOOP;
      return -1;
    }
  if (fsync (dirfd) < 0)
    {
      close (dirfd);
      return -1;
    }
  d = fs_fdopendir (dirfd);
  if (d == NULL)
    return -1;
  while ((de = fs_readdir (d)) != NULL)
    {
      int sub;
      struct stat st;
      if (de->d_type == DT_UNKNOWN)
        {
          if (fstatat (dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR (st.st_mode))
            continue;
        }
      else if (de->d_type != DT_DIR)
        continue;
      sub = openat (dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0 || fsync_tree (sub, depth + 1) < 0)
        ret = -1;
    }
  if (errno != 0)
    ret = -1;
  closedir (d);
  return ret;
}

static int
dir_commit (void *txn, const char *index_key, const void *index, size_t len, bvm_error_t *err)
{
  struct dir_txn *t = txn;
  cleanup_free char *ipath = NULL, *dest = NULL;
  cleanup_close int fd = -1;
  char *slash;
  int ret = -1, dfd;

  if (dir_stage_path (&ipath, t, index_key, true, err) < 0)
    goto cleanup;
  fd = open (ipath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 || fs_write_all (fd, index, len) < 0 || fsync (fd) < 0)
    {
      bvm_error (err, errno, "write `%s`", ipath);
      goto cleanup;
    }
  dfd = open (t->tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0 || fsync_tree (dfd, 0) < 0)
    {
      bvm_error (err, errno, "fsync `%s`", t->tree);
      goto cleanup;
    }

  if (asprintf (&dest, "%s/%s", t->ds->root, t->prefix) < 0)
    {
      dest = NULL;
      bvm_error (err, ENOMEM, "artifact store");
      goto cleanup;
    }
  dest[strlen (dest) - 1] = '\0'; /* the prefix's trailing slash */
  slash = strrchr (dest, '/');
  *slash = '\0';
  if (fs_mkdir_p (dest, 0755, err) < 0)
    goto cleanup;
  *slash = '/';

  /* Swap the staged tree with whatever is there, atomically: readers see the
   * old complete prefix or the new one. */
  if (renameat2 (AT_FDCWD, t->tree, AT_FDCWD, dest, RENAME_NOREPLACE) < 0)
    {
      if (errno == EEXIST)
        {
          if (renameat2 (AT_FDCWD, t->tree, AT_FDCWD, dest, RENAME_EXCHANGE) < 0)
            {
              bvm_error (err, errno, "swap `%s` into `%s`", t->tree, dest);
              goto cleanup;
            }
        }
      else if (errno == EINVAL || errno == ENOSYS)
        {
          /* a file system without renameat2 flags: move the old tree aside
           * first (a short window where the prefix is missing, never mixed) */
          cleanup_free char *old = NULL;
          if (asprintf (&old, "%s/old", t->stage) < 0)
            {
              old = NULL;
              bvm_error (err, ENOMEM, "artifact store");
              goto cleanup;
            }
          if ((rename (dest, old) < 0 && errno != ENOENT) || rename (t->tree, dest) < 0)
            {
              bvm_error (err, errno, "rename `%s` to `%s`", t->tree, dest);
              goto cleanup;
            }
        }
      else
        {
          bvm_error (err, errno, "rename `%s` to `%s`", t->tree, dest);
          goto cleanup;
        }
    }
  *slash = '\0';
  if (fs_fsync_dir (dest, err) < 0)
    goto cleanup;
  ret = 0;
cleanup:
  dir_abort (t); /* removes the staging area, now holding the old tree if any */
  return ret;
}

static int
dir_get (void *state, const char *key, uint64_t max, store_sink_fn sink, void *opaque,
         bvm_error_t *err)
{
  struct dir_store *ds = state;
  cleanup_free char *p = NULL;
  cleanup_close int fd = -1;
  char buf[65536];
  uint64_t total = 0;
  ssize_t n;
  int ret;

  if (asprintf (&p, "%s/%s", ds->root, key) < 0)
    return bvm_error (err, ENOMEM, "artifact store");
  fd = open (p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    {
      if (errno == ENOENT)
        return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not in the artifact store", key);
      return bvm_error (err, errno, "open `%s`", p);
    }
  while ((n = read (fd, buf, sizeof buf)) != 0)
    {
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return bvm_error (err, errno, "read `%s`", p);
        }
      total += (uint64_t) n;
      if (total > max)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %llu bytes", key,
                               (unsigned long long) max);
      if ((ret = sink (opaque, buf, (size_t) n, err)) < 0)
        return ret;
    }
  return 0;
}

static const struct store_backend dir_backend = {
  .name = "dir",
  .open = dir_open,
  .close = dir_close,
  .txn_begin = dir_txn_begin,
  .put_begin = dir_put_begin,
  .put_write = dir_put_write,
  .put_end = dir_put_end,
  .put_link = dir_put_link,
  .commit = dir_commit,
  .abort = dir_abort,
  .get = dir_get,
};

static const struct store_backend *const backends[] = { &dir_backend, &store_s3_backend };

/* --- the generic layer ---------------------------------------------------- */

int
store_open (struct store **out, const char *spec, bvm_error_t *err)
{
  const struct store_backend *be = &dir_backend;
  const char *location = spec, *colon;
  struct store *s;
  size_t n;

  if (spec == NULL || *spec == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "empty artifact store spec");
  colon = strchr (spec, ':');
  n = colon ? (size_t) (colon - spec) : 0;
  /* "name:location" when what precedes the colon looks like a scheme;
   * anything else is a plain path */
  if (colon != NULL && n > 0 && strspn (spec, "abcdefghijklmnopqrstuvwxyz0123456789") == n)
    {
      be = NULL;
      for (size_t i = 0; i < ARRAY_SIZE (backends); i++)
        if (strlen (backends[i]->name) == n && strncmp (backends[i]->name, spec, n) == 0)
          be = backends[i];
      if (be == NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "unknown artifact store backend `%.*s`",
                               (int) n, spec);
      location = colon + 1;
    }
  s = calloc (1, sizeof *s);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "artifact store");
  s->be = be;
  if (be->open (&s->state, location, err) < 0)
    {
      free (s);
      return -1;
    }
  *out = s;
  return 0;
}

void
store_free (struct store *s)
{
  if (s == NULL)
    return;
  s->be->close (s->state);
  free (s);
}

void
store_set_expiry (struct store *s, time_t expires)
{
  if (s->be->set_expiry != NULL)
    s->be->set_expiry (s->state, expires);
}

int
store_txn_begin (struct store_txn **out, struct store *s, const char *prefix, bvm_error_t *err)
{
  struct store_txn *t;

  if (check_prefix (prefix, err) < 0)
    return -1;
  t = calloc (1, sizeof *t);
  if (t == NULL)
    return bvm_error (err, ENOMEM, "artifact store transaction");
  t->s = s;
  t->prefix = strdup (prefix);
  t->objects = json_object ();
  if (t->prefix == NULL || t->objects == NULL)
    {
      store_txn_abort (t);
      return bvm_error (err, ENOMEM, "artifact store transaction");
    }
  if (s->be->txn_begin (&t->bt, s->state, prefix, err) < 0)
    {
      store_txn_abort (t);
      return -1;
    }
  *out = t;
  return 0;
}

static int
txn_usable (struct store_txn *t, bool in_put, bvm_error_t *err)
{
  if (t->failed)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "artifact store transaction already failed");
  if ((t->key != NULL) != in_put)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "artifact store: put %s",
                           in_put ? "not begun" : "still open");
  return 0;
}

static int
txn_new_key (struct store_txn *t, const char *key, bvm_error_t *err)
{
  if (store_check_key (key, t->prefix, err) < 0)
    return -1;
  if (json_object_get (t->objects, key) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "duplicate key `%s`", key);
  if (json_object_size (t->objects) >= STORE_MAX_OBJECTS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "more than %d artifacts", STORE_MAX_OBJECTS);
  return 0;
}

/* the seal writer's output goes to the backend */
static int
backend_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct store_txn *t = opaque;
  return t->s->be->put_write (t->bt, buf, len, err);
}

int
store_txn_seal (struct store_txn *t, const unsigned char key[SEAL_KEY_BYTES], bvm_error_t *err)
{
  if (t->sealed || t->key != NULL || json_object_size (t->objects) > 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "artifact store: seal before the first put");
  if (t->s->be->seal != NULL && t->s->be->seal (t->bt, err) < 0)
    return -1;
  memcpy (t->seal_key, key, SEAL_KEY_BYTES);
  t->sealed = true;
  return 0;
}

int
store_put_begin (struct store_txn *t, const char *key, bvm_error_t *err)
{
  if (txn_usable (t, false, err) < 0 || txn_new_key (t, key, err) < 0)
    return -1;
  if (digest_init (&t->digest, err) < 0)
    return -1;
  if (t->s->be->put_begin (t->bt, key, err) < 0)
    {
      digest_dispose (&t->digest);
      t->failed = true;
      return -1;
    }
  t->key = strdup (key);
  if (t->key == NULL)
    {
      digest_dispose (&t->digest);
      t->failed = true;
      return bvm_error (err, ENOMEM, "artifact store");
    }
  t->size = 0;
  if (t->sealed && seal_writer_new (&t->sw, t->seal_key, t->prefix, 0, backend_sink, t, err) < 0)
    {
      t->failed = true;
      return bvm_error_wrap (err, "sealing `%s`", key);
    }
  return 0;
}

int
store_put_write (struct store_txn *t, const void *buf, size_t len, bvm_error_t *err)
{
  if (txn_usable (t, true, err) < 0)
    return -1;
  if ((t->sw != NULL ? seal_write (t->sw, buf, len, err)
                     : t->s->be->put_write (t->bt, buf, len, err))
      < 0)
    {
      t->failed = true;
      return -1;
    }
  digest_update (&t->digest, buf, len);
  t->size += len;
  return 0;
}

static int
add_object (struct store_txn *t, const char *key, uint64_t size, const char *hex, bvm_error_t *err)
{
  json_t *o = json_pack ("{s:s, s:I, s:s}", "key", key, "size", (json_int_t) size, "sha256", hex);
  if (o == NULL || json_object_set_new (t->objects, key, o) < 0)
    return bvm_error (err, ENOMEM, "artifact store index");
  t->bytes += size;
  return 0;
}

int
store_put_end (struct store_txn *t, bvm_error_t *err)
{
  char d[DIGEST_STR_LEN + 1];
  cleanup_free char *key = NULL;

  if (txn_usable (t, true, err) < 0)
    return -1;
  key = steal_pointer (&t->key);
  digest_final (&t->digest, d);
  if (t->sw != NULL)
    {
      int r = seal_writer_finish (t->sw, err);
      seal_writer_free (steal_pointer (&t->sw));
      if (r < 0)
        {
          t->failed = true;
          return -1;
        }
    }
  if (t->s->be->put_end (t->bt, err) < 0 || add_object (t, key, t->size, d + 7, err) < 0)
    {
      t->failed = true;
      return -1;
    }
  return 0;
}

int
store_put_link (struct store_txn *t, const char *key, const char *existing_key, bvm_error_t *err)
{
  json_t *src;
  char hex[DIGEST_HEX_LEN + 1];

  if (txn_usable (t, false, err) < 0 || txn_new_key (t, key, err) < 0)
    return -1;
  src = json_object_get (t->objects, existing_key ? existing_key : "");
  if (src == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "link `%s`: `%s` was not stored before", key,
                           existing_key ? existing_key : "");
  snprintf (hex, sizeof hex, "%s", json_string_value (json_object_get (src, "sha256")));
  if (t->s->be->put_link (t->bt, key, existing_key, err) < 0
      || add_object (t, key, (uint64_t) json_integer_value (json_object_get (src, "size")), hex,
                     err)
             < 0)
    {
      t->failed = true;
      return -1;
    }
  return 0;
}

static int
key_order (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

int
store_txn_commit (struct store_txn *t, struct store_summary *summary, json_t **index_out,
                  bvm_error_t *err)
{
  struct store_summary sum = { 0 };
  struct store *st;
  cleanup_json json_t *idx = NULL;
  cleanup_free const char **keys = NULL;
  cleanup_free char *index_key = NULL, *text = NULL;
  json_t *arr;
  const char *k;
  json_t *v;
  size_t n = 0;
  int r;

  if (txn_usable (t, false, err) < 0)
    {
      store_txn_abort (t);
      return -1;
    }
  /* sorted by key: the same artifacts always give the same index bytes */
  keys = calloc (json_object_size (t->objects) + 1, sizeof *keys);
  arr = json_array ();
  idx = json_pack ("{s:s, s:o}", "prefix", t->prefix, "objects", arr);
  if (idx != NULL && t->sealed
      && json_object_set_new (idx, "sealed", json_string (SEAL_FORMAT)) < 0)
    idx = (json_decref (idx), NULL);
  if (keys == NULL || idx == NULL || asprintf (&index_key, "%s%s", t->prefix, INDEX_NAME) < 0)
    {
      index_key = NULL;
      store_txn_abort (t);
      return bvm_error (err, ENOMEM, "artifact store index");
    }
  json_object_foreach (t->objects, k, v)
    keys[n++] = k;
  qsort (keys, n, sizeof *keys, key_order);
  for (size_t i = 0; i < n; i++)
    if (json_array_append (arr, json_object_get (t->objects, keys[i])) < 0)
      {
        store_txn_abort (t);
        return bvm_error (err, ENOMEM, "artifact store index");
      }
  text = json_dumps (idx, JSON_SORT_KEYS | JSON_COMPACT);
  if (text == NULL)
    {
      store_txn_abort (t);
      return bvm_error (err, ENOMEM, "artifact store index");
    }
  /* the summary describes exactly the bytes handed to the backend */
  if (snprintf_checked (sum.prefix, sizeof sum.prefix, "%s", t->prefix) < 0
      || snprintf_checked (sum.index_key, sizeof sum.index_key, "%s", index_key) < 0)
    {
      store_txn_abort (t);
      return bvm_error (err, ENAMETOOLONG, "artifact store index `%s`", index_key);
    }
  if (digest_buffer (sum.index_digest, text, strlen (text), err) < 0)
    {
      store_txn_abort (t);
      return -1;
    }
  sum.index_bytes = strlen (text);
  sum.count = n;
  sum.bytes = t->bytes;
  sum.sealed = t->sealed;
  st = t->s;
  r = st->be->commit (steal_pointer (&t->bt), index_key, text, strlen (text), err);
  store_txn_abort (t); /* frees what is left; the backend's part is gone */
  if (r < 0)
    return bvm_error_wrap (err, "committing `%s`", index_key);
  if (st->be->last_commit != NULL)
    st->be->last_commit (st->state, &sum);
  if (summary != NULL)
    *summary = sum;
  if (index_out != NULL)
    *index_out = steal_pointer (&idx);
  return 0;
}

void
store_txn_abort (struct store_txn *t)
{
  if (t == NULL)
    return;
  if (t->key != NULL)
    digest_dispose (&t->digest);
  seal_writer_free (t->sw);
  OPENSSL_cleanse (t->seal_key, sizeof t->seal_key);
  if (t->bt != NULL)
    t->s->be->abort (t->bt);
  json_decref (t->objects);
  free (t->key);
  free (t->prefix);
  free (t);
}

json_t *
store_summary_to_json (const struct store_summary *s)
{
  json_t *o = json_pack ("{s:s, s:I, s:I, s:{s:s, s:s, s:I}}", "prefix", s->prefix, "count",
                         (json_int_t) s->count, "bytes", (json_int_t) s->bytes, "index", "path",
                         s->index_key, "digest", s->index_digest, "size",
                         (json_int_t) s->index_bytes);
  if (o != NULL && s->sealed && json_object_set_new (o, "sealed", json_string (SEAL_FORMAT)) < 0)
    o = (json_decref (o), NULL);
  if (o != NULL && s->sse_requested[0]
      && json_object_set_new (o, "server_side_encryption",
                              json_pack ("{s:s, s:s?}", "requested", s->sse_requested, "confirmed",
                                         s->sse_confirmed[0] ? s->sse_confirmed : NULL))
             < 0)
    o = (json_decref (o), NULL);
  return o;
}

/* --- reading ---------------------------------------------------------------- */

static int
to_buf_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  if (buf_add (opaque, buf, len) < 0)
    return bvm_error (err, errno, "artifact store index");
  return 0;
}

struct get_ctx
{
  struct digest_ctx digest;
  uint64_t size;
  store_sink_fn sink;
  void *opaque;
  struct seal_reader *sr;
};

/* the plaintext: counted, digested, handed on */
static int
get_plain (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct get_ctx *g = opaque;
  digest_update (&g->digest, buf, len);
  g->size += len;
  return g->sink (g->opaque, buf, len, err);
}

static int
get_sealed (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct get_ctx *g = opaque;
  return seal_reader_feed (g->sr, buf, len, err);
}

int
store_get (struct store *s, const char *prefix, const char *key, const unsigned char *seal_key,
           store_sink_fn sink, void *opaque, bvm_error_t *err)
{
  cleanup_buf struct buf text = BUF_INIT (STORE_INDEX_MAX);
  cleanup_free char *index_key = NULL, *what = NULL;
  cleanup_json json_t *idx = NULL;
  cleanup_seal_reader struct seal_reader *sr = NULL;
  struct get_ctx g = { .sink = sink, .opaque = opaque };
  json_t *objs, *o, *found = NULL;
  const char *sealed, *want_hex;
  char d[DIGEST_STR_LEN + 1];
  json_error_t je;
  size_t i;
  int ret;

  if (s->be->get == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the `%s` artifact store cannot be read here",
                           s->be->name);
  if (check_prefix (prefix, err) < 0 || store_check_key (key, prefix, err) < 0)
    return -1;
  if (asprintf (&index_key, "%s%s", prefix, INDEX_NAME) < 0
      || asprintf (&what, "artifact `%s`", key) < 0)
    return bvm_error (err, ENOMEM, "artifact store");
  if ((ret = s->be->get (s->state, index_key, STORE_INDEX_MAX, to_buf_sink, &text, err)) < 0)
    return bvm_error_wrap (err, "the index of `%s`", prefix);
  idx = json_loadb (text.ptr ? text.ptr : "", text.len, JSON_REJECT_DUPLICATES, &je);
  objs = json_object_get (idx, "objects");
  if (!json_is_object (idx) || !json_is_array (objs))
    return bvm_error_code (err, BVM_E_INVALID, 0, "the index `%s` is not an artifact index",
                           index_key);
  sealed = json_string_value (json_object_get (idx, "sealed"));
  json_array_foreach (objs, i, o)
    if (json_is_string (json_object_get (o, "key"))
        && strcmp (json_string_value (json_object_get (o, "key")), key) == 0)
      found = o;
  if (found == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not in the index of `%s`", key, prefix);
  want_hex = json_string_value (json_object_get (found, "sha256"));
  if (want_hex == NULL || !json_is_integer (json_object_get (found, "size")))
    return bvm_error_code (err, BVM_E_INVALID, 0, "the index `%s` is malformed at `%s`", index_key,
                           key);
  if (json_object_get (idx, "sealed") != NULL
      && (sealed == NULL || strcmp (sealed, SEAL_FORMAT) != 0))
    return bvm_error_code (err, BVM_E_INVALID, 0, "the index `%s`: unknown encryption", index_key);
  if (sealed != NULL && seal_key == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s is encrypted and no key was given", what);
  if (sealed == NULL && seal_key != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s: the index says it is not encrypted, but encryption at rest is on",
                           what);
  if (digest_init (&g.digest, err) < 0)
    return -1;
  if (sealed != NULL)
    {
      if ((ret = seal_reader_new (&sr, seal_key, prefix, what, get_plain, &g, err)) < 0)
        {
          digest_dispose (&g.digest);
          return ret;
        }
      g.sr = sr;
      ret = s->be->get (s->state, key, UINT64_MAX, get_sealed, &g, err);
      if (ret == 0)
        ret = seal_reader_finish (sr, err);
    }
  else
    ret = s->be->get (s->state, key, UINT64_MAX, get_plain, &g, err);
  if (ret < 0)
    {
      digest_dispose (&g.digest);
      return -1;
    }
  digest_final (&g.digest, d);
  if (g.size != (uint64_t) json_integer_value (json_object_get (found, "size"))
      || strcmp (d + 7, want_hex) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s does not match the index (size or sha256): it was replaced", what);
  return 0;
}
