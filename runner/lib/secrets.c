/* secrets.c - the per-app secret store, see secrets.h and docs/secrets.md */
#include "secrets.h"
#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define NONCE_BYTES 12
#define TAG_BYTES 16
#define KEY_ID_BYTES 8
#define MAGIC_BYTES 8
#define FORMAT_VERSION 1

/* "BVMSEC" NUL <format>: a secret file; "BVMKEK" NUL <format>: an app's KEK */
static const unsigned char secret_magic[MAGIC_BYTES] = { 'B', 'V', 'M', 'S',
                                                         'E', 'C', 0,   FORMAT_VERSION };
static const unsigned char kek_magic[MAGIC_BYTES] = { 'B', 'V', 'M', 'K',
                                                      'E', 'K', 0,   FORMAT_VERSION };

/* Domain separation: the same header bytes authenticate the DEK wrap and the
 * payload under different labels, so one can never stand in for the other. */
#define AAD_PAYLOAD "buildvm-secret-v1"
#define AAD_DEK "buildvm-dek-v1"
#define AAD_KEK "buildvm-kek-v1"
#define KEY_ID_LABEL "buildvm master key id v1"

/* magic, version u32, updated_at u64, app_len u8, name_len u8, app, name */
#define SECRET_HDR_FIXED (MAGIC_BYTES + 4 + 8 + 1 + 1)
#define SECRET_HDR_MAX (SECRET_HDR_FIXED + 63 + SECRETS_NAME_MAX)
/* after the header: DEK nonce, wrapped DEK, DEK tag, nonce, ct_len u32, ct, tag */
#define SECRET_BODY_FIXED                                                                         \
  (NONCE_BYTES + SECRETS_KEY_BYTES + TAG_BYTES + NONCE_BYTES + 4 + TAG_BYTES)
#define SECRET_FILE_MAX (SECRET_HDR_MAX + SECRET_BODY_FIXED + SECRETS_VALUE_MAX)
/* magic, key id, app_len u8, app | nonce, wrapped KEK, tag */
#define KEK_HDR_MAX (MAGIC_BYTES + KEY_ID_BYTES + 1 + 63)
#define KEK_FILE_MAX (KEK_HDR_MAX + NONCE_BYTES + SECRETS_KEY_BYTES + TAG_BYTES)
#define AAD_MAX (32 + SECRET_HDR_MAX)

#define KEK_FILE ".kek"
#define SECRET_SUFFIX ".secret"
#define LIST_MAX 100000 /* directory entries looked at by secrets_list */

struct secrets
{
  char *dir;
  char *master_path;
  int dirfd;
  unsigned char *master; /* SECRETS_KEY_BYTES, from secrets__mem_alloc */
  char master_id[SECRETS_KEY_ID_HEX + 1];
  unsigned char master_id_raw[KEY_ID_BYTES];
};

/* --- memory for plaintext ------------------------------------------------------ */

#ifdef __SANITIZE_ADDRESS__
/* Under AddressSanitizer plain heap memory, so that the sanitizer sees every
 * overflow; the dump and lock properties are what the normal build tests. */
void *
secrets__mem_alloc (size_t n)
{
  return calloc (1, n ? n : 1);
}

void
secrets__mem_free (void *p, size_t n)
{
  if (p == NULL)
    return;
  mem_wipe (p, n);
  free (p);
}
#else
static size_t
page_round (size_t n)
{
  size_t pg = (size_t) sysconf (_SC_PAGESIZE);
  if (n == 0)
    n = 1;
  if (n > SIZE_MAX - pg)
    return 0;
  return (n + pg - 1) / pg * pg;
}

void *
secrets__mem_alloc (size_t n)
{
  size_t sz = page_round (n);
  void *p;

  if (sz == 0)
    {
      errno = ENOMEM;
      return NULL;
    }
  p = mmap (NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  /* never in a core dump: refuse the memory rather than hand out pages that
   * could end up in one */
  if (madvise (p, sz, MADV_DONTDUMP) < 0)
    {
      int e = errno;
      munmap (p, sz);
      errno = e;
      return NULL;
    }
  /* best effort: locked pages never reach swap (RLIMIT_MEMLOCK permitting).
   * Not MADV_WIPEONFORK: a forked child that used the store would silently
   * encrypt with an all-zero master key. */
  (void) mlock (p, sz);
  return p;
}

void
secrets__mem_free (void *p, size_t n)
{
  size_t sz = page_round (n);
  if (p == NULL)
    return;
  mem_wipe (p, sz);
  (void) munlock (p, sz);
  munmap (p, sz);
}
#endif

/* A SECRETS_KEY_BYTES key in plaintext memory, freed on scope exit. */
static void
key_freep (unsigned char **k)
{
  secrets__mem_free (*k, SECRETS_KEY_BYTES);
  *k = NULL;
}
#define cleanup_key __attribute__ ((cleanup (key_freep)))

void
secret_value_free (struct secret_value *v)
{
  if (v == NULL)
    return;
  secrets__mem_free (v->data, v->alloc);
  free (v);
}

static struct secret_value *
secret_value_new (size_t len)
{
  struct secret_value *v = calloc (1, sizeof *v);
  if (v == NULL)
    return NULL;
  v->alloc = len + 1; /* a NUL after the value */
  v->data = secrets__mem_alloc (v->alloc);
  if (v->data == NULL)
    {
      free (v);
      return NULL;
    }
  v->len = len;
  return v;
}

/* --- small helpers ---------------------------------------------------------------- */

static int
nomem (bvm_error_t *err)
{
  return bvm_error (err, ENOMEM, "secret store");
}

static void
put_u64 (unsigned char *p, uint64_t v)
{
  be32_put (p, (uint32_t) (v >> 32));
  be32_put (p + 4, (uint32_t) v);
}

static uint64_t
get_u64 (const unsigned char *p)
{
  return (uint64_t) be32_get (p) << 32 | be32_get (p + 4);
}

const char *
secrets_name_problem (const char *s)
{
  static const char why[] = "must match ^[A-Za-z0-9_.-]{1,64}$ and not start with `.`";
  size_t i;
  /* names become file names: no `/`, and no leading `.` so that neither `.`
   * nor `..` can be one and none collides with `.kek` or a temporary file */
  if (s == NULL || s[0] == '\0' || s[0] == '.')
    return why;
  for (i = 0; s[i]; i++)
    {
      char c = s[i];
      if (i >= SECRETS_NAME_MAX || !(is_alnum (c) || c == '_' || c == '.' || c == '-'))
        return why;
    }
  return NULL;
}

int
secrets_resource (char *buf, size_t size, const char *app, const char *name)
{
  return snprintf_checked (buf, size, "secrets:apps/%s/%s", app, name) < 0 ? -1 : 0;
}

static int
check_app_name (const char *app, const char *name, bvm_error_t *err)
{
  char shown[JOB__SHOW_SIZE];
  if (app == NULL || job_app_id_problem (app) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "invalid app id `%s`: it must match ^[a-z0-9][a-z0-9-]{0,62}$",
                           job__show (shown, sizeof shown, app ? app : ""));
  if (name != NULL && secrets_name_problem (name) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "invalid secret name `%s`: it must match ^[A-Za-z0-9_.-]{1,64}$ and "
                           "not start with `.`",
                           job__show (shown, sizeof shown, name));
  return 0;
}

/* Every failure to authenticate or parse a secret file says the same thing,
 * with the reason in parentheses; never any byte of the file. */
static int
corrupt (bvm_error_t *err, const char *app, const char *name, const char *why)
{
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "secret `%s` of app `%s`: the file is corrupt or was tampered with (%s)",
                         name, app, why);
}

static int
kek_corrupt (bvm_error_t *err, const char *app, const char *why)
{
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "the key of app `%s` (`%s`): the file is corrupt or was tampered with "
                         "(%s)",
                         app, KEK_FILE, why);
}

static int
missing (bvm_error_t *err, const char *app, const char *name)
{
  return bvm_error_code (err, BVM_E_INVALID, 0, "app `%s` has no secret `%s`", app, name);
}

/* --- AES-256-GCM --------------------------------------------------------------------- */

static int
gcm_seal (unsigned char *ct, unsigned char tag[TAG_BYTES], const unsigned char *key,
          const unsigned char nonce[NONCE_BYTES], const unsigned char *aad, size_t aad_len,
          const unsigned char *pt, size_t len)
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new ();
  int n = 0, ok = 0;

  if (c == NULL || len > INT_MAX || aad_len > INT_MAX)
    goto cleanup;
  if (EVP_EncryptInit_ex (c, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
      && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) == 1
      && EVP_EncryptInit_ex (c, NULL, NULL, key, nonce) == 1
      && EVP_EncryptUpdate (c, NULL, &n, aad, (int) aad_len) == 1
      && EVP_EncryptUpdate (c, ct, &n, pt, (int) len) == 1 && (size_t) n == len
      && EVP_EncryptFinal_ex (c, ct + n, &n) == 1
      && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag) == 1)
    ok = 1;
cleanup:
  EVP_CIPHER_CTX_free (c); /* cleanses the key schedule */
  return ok ? 0 : -1;
}

/* Decrypt into pt (len bytes). On failure pt is wiped: GCM produces
 * plaintext before the tag is checked, and none of it may survive. */
static int
gcm_open (unsigned char *pt, const unsigned char *key, const unsigned char nonce[NONCE_BYTES],
          const unsigned char *aad, size_t aad_len, const unsigned char *ct, size_t len,
          const unsigned char tag[TAG_BYTES])
{
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new ();
  unsigned char tagcopy[TAG_BYTES];
  int n = 0, ok = 0;

  memcpy (tagcopy, tag, TAG_BYTES);
  if (c == NULL || len > INT_MAX || aad_len > INT_MAX)
    goto cleanup;
  if (EVP_DecryptInit_ex (c, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
      && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) == 1
      && EVP_DecryptInit_ex (c, NULL, NULL, key, nonce) == 1
      && EVP_DecryptUpdate (c, NULL, &n, aad, (int) aad_len) == 1
      && EVP_DecryptUpdate (c, pt, &n, ct, (int) len) == 1 && (size_t) n == len
      && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tagcopy) == 1
      && EVP_DecryptFinal_ex (c, pt + n, &n) == 1)
    ok = 1;
cleanup:
  EVP_CIPHER_CTX_free (c);
  if (!ok)
    mem_wipe (pt, len);
  return ok ? 0 : -1;
}

/* label NUL header */
static size_t
make_aad (unsigned char *aad, const char *label, const unsigned char *hdr, size_t hdr_len)
{
  size_t n = strlen (label) + 1;
  memcpy (aad, label, n);
  memcpy (aad + n, hdr, hdr_len);
  return n + hdr_len;
}

static int
random_bytes (unsigned char *p, size_t n, bool priv, bvm_error_t *err)
{
  if ((priv ? RAND_priv_bytes (p, (int) n) : RAND_bytes (p, (int) n)) != 1)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "the random number generator failed");
  return 0;
}

/* A fresh key in plaintext memory. */
static int
new_key (unsigned char **out, bvm_error_t *err)
{
  unsigned char *k = secrets__mem_alloc (SECRETS_KEY_BYTES);
  if (k == NULL)
    return bvm_error (err, errno, "allocating locked memory for a key");
  if (random_bytes (k, SECRETS_KEY_BYTES, true, err) < 0)
    {
      secrets__mem_free (k, SECRETS_KEY_BYTES);
      return -1;
    }
  *out = k;
  return 0;
}

/* --- files ------------------------------------------------------------------------- */

/* Read a regular file (not a link) under dirfd, at most max bytes. *out is
 * NULL and 0 returned when it does not exist. Ciphertext only: plain heap. */
static int
read_at (unsigned char **out, size_t *len, int dirfd, const char *dirpath, const char *fname,
         size_t max, bool *too_big, bvm_error_t *err)
{
  cleanup_close int fd = openat (dirfd, fname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  unsigned char *data;
  size_t used;
  int ret;

  *out = NULL;
  *len = 0;
  *too_big = false;
  if (fd < 0 && errno == ENOENT)
    return 0;
  if (fd < 0)
    return bvm_error (err, errno, "open `%s/%s`", dirpath, fname);
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s/%s`", dirpath, fname);
  if (!S_ISREG (st.st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s/%s` is not a regular file", dirpath, fname);
  if ((uint64_t) st.st_size > max)
    {
      *too_big = true;
      return 0;
    }
  data = malloc ((size_t) st.st_size + 1);
  if (data == NULL)
    return nomem (err);
  ret = fs_read_sized (fd, data, (size_t) st.st_size, &used);
  if (ret < 0)
    {
      int e = errno;
      free (data);
      return bvm_error (err, e, "read `%s/%s`", dirpath, fname);
    }
  if (ret > 0)
    {
      /* grew while we read: only a concurrent writer not using rename */
      free (data);
      *too_big = true;
      return 0;
    }
  *out = data;
  *len = used;
  return 0;
}

/* Write `name` under dirfd atomically: a temporary file (O_EXCL, 0600),
 * fsync, then rename over `name` (replace) or link to it (no replace: fails
 * with EEXIST), then fsync the directory. A crash leaves the old file or the
 * new one, never a mix; a leftover temporary file starts with `.` and is
 * never read. */
static int
write_at (int dirfd, const char *dirpath, const char *name, const void *data, size_t len,
          bool replace, bvm_error_t *err)
{
  unsigned char rnd[8];
  char tmp[32];
  int fd, e;

  if (random_bytes (rnd, sizeof rnd, false, err) < 0)
    return -1;
  memcpy (tmp, ".tmp-", 5);
  hex_encode (tmp + 5, rnd, sizeof rnd);
  fd = openat (dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s/%s`", dirpath, tmp);
  if (fs_write_all (fd, data, len) < 0 || fsync (fd) < 0)
    {
      e = errno;
      close (fd);
      unlinkat (dirfd, tmp, 0);
      return bvm_error (err, e, "write `%s/%s`", dirpath, tmp);
    }
  if (close (fd) < 0)
    {
      e = errno;
      unlinkat (dirfd, tmp, 0);
      return bvm_error (err, e, "close `%s/%s`", dirpath, tmp);
    }
  if (replace ? renameat (dirfd, tmp, dirfd, name) < 0 : linkat (dirfd, tmp, dirfd, name, 0) < 0)
    {
      e = errno;
      unlinkat (dirfd, tmp, 0);
      return bvm_error (err, e, "%s `%s/%s`", replace ? "rename to" : "link to", dirpath, name);
    }
  if (!replace)
    unlinkat (dirfd, tmp, 0);
  if (fsync (dirfd) < 0)
    return bvm_error (err, errno, "fsync directory `%s`", dirpath);
  return 0;
}

/* Open (and with `create`, make) <dir>/apps/<app>. *fd is -1 when it does not
 * exist and create is false. `path` gets its path for messages. */
static int
app_dir_open (int *fd, char *path, size_t size, struct secrets *s, const char *app, bool create,
              bvm_error_t *err)
{
  cleanup_close int apps = -1;
  int d;

  *fd = -1;
  if (snprintf_checked (path, size, "%s/apps/%s", s->dir, app) < 0)
    return bvm_error (err, ENAMETOOLONG, "`%s/apps/%s`", s->dir, app);
  for (int round = 0; apps < 0; round++)
    {
      apps = openat (s->dirfd, "apps", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (apps >= 0)
        break;
      if (errno != ENOENT || round > 0)
        return bvm_error (err, errno, "open `%s/apps`", s->dir);
      if (!create)
        return 0;
      if (mkdirat (s->dirfd, "apps", 0700) < 0 && errno != EEXIST)
        return bvm_error (err, errno, "mkdir `%s/apps`", s->dir);
      if (fsync (s->dirfd) < 0)
        return bvm_error (err, errno, "fsync directory `%s`", s->dir);
    }
  for (int round = 0;; round++)
    {
      d = openat (apps, app, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (d >= 0)
        break;
      if (errno != ENOENT || round > 0)
        return bvm_error (err, errno, "open `%s`", path);
      if (!create)
        return 0;
      if (mkdirat (apps, app, 0700) < 0 && errno != EEXIST)
        return bvm_error (err, errno, "mkdir `%s`", path);
      if (fsync (apps) < 0)
        return bvm_error (err, errno, "fsync directory `%s/apps`", s->dir);
    }
  *fd = d;
  return 0;
}

/* Writers of one app take this lock for the whole read-modify-write, so two
 * `set`s cannot both write version n+1 and two first `set`s cannot create two
 * KEKs. Readers need none: files are only ever replaced by rename. */
static int
lock_app (int fd, const char *path, bvm_error_t *err)
{
  while (flock (fd, LOCK_EX) < 0)
    if (errno != EINTR)
      return bvm_error (err, errno, "lock `%s`", path);
  return 0;
}

/* --- the master key ------------------------------------------------------------------ */

static int
key_id (unsigned char id[KEY_ID_BYTES], const unsigned char *key, bvm_error_t *err)
{
  EVP_MD_CTX *c = EVP_MD_CTX_new ();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int ok = c != NULL && EVP_DigestInit_ex (c, EVP_sha256 (), NULL) == 1
           && EVP_DigestUpdate (c, KEY_ID_LABEL, strlen (KEY_ID_LABEL)) == 1
           && EVP_DigestUpdate (c, key, SECRETS_KEY_BYTES) == 1
           && EVP_DigestFinal_ex (c, md, &n) == 1 && n >= KEY_ID_BYTES;
  EVP_MD_CTX_free (c);
  if (!ok)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "sha256 failed");
  memcpy (id, md, KEY_ID_BYTES);
  return 0;
}

static int
load_master_key (unsigned char **out, unsigned char id[KEY_ID_BYTES], const char *path,
                 bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  unsigned char *k;
  size_t used = 0;

  if (fd < 0 && errno == ENOENT)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "master key `%s` does not exist: create one with `buildvm secrets "
                           "init-master-key`",
                           path);
  if (fd < 0)
    return bvm_error (err, errno, "open master key `%s`", path);
  if (fs_check_private_fd (&st, fd, path, "master key", err) < 0)
    return -1;
  if (st.st_size != SECRETS_KEY_BYTES)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "master key `%s` must be exactly %d bytes, not %lld", path,
                           SECRETS_KEY_BYTES, (long long) st.st_size);
  k = secrets__mem_alloc (SECRETS_KEY_BYTES + 1);
  if (k == NULL)
    return bvm_error (err, errno, "allocating locked memory for the master key");
  for (;;)
    {
      /* one byte more than expected, to notice a file that grew */
      ssize_t n = read (fd, k + used, SECRETS_KEY_BYTES + 1 - used);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int e = errno;
          secrets__mem_free (k, SECRETS_KEY_BYTES + 1);
          return bvm_error (err, e, "read master key `%s`", path);
        }
      if (n == 0 || (used += (size_t) n) > SECRETS_KEY_BYTES)
        break;
    }
  if (used != SECRETS_KEY_BYTES)
    {
      secrets__mem_free (k, SECRETS_KEY_BYTES + 1);
      return bvm_error_code (err, BVM_E_IO, 0, "master key `%s` changed while being read", path);
    }
  if (key_id (id, k, err) < 0)
    {
      secrets__mem_free (k, SECRETS_KEY_BYTES + 1);
      return -1;
    }
  *out = k;
  return 0;
}

static void
master_free (unsigned char *k)
{
  secrets__mem_free (k, SECRETS_KEY_BYTES + 1);
}

int
secrets_init_master_key (const char *path, char *id_out, bvm_error_t *err)
{
  cleanup_free char *dir = NULL;
  cleanup_key unsigned char *k = NULL;
  cleanup_close int dfd = -1;
  unsigned char id[KEY_ID_BYTES];
  const char *base;
  char *slash;
  int ret;

  if (path == NULL || path[0] != '/')
    return bvm_error_code (err, BVM_E_INVALID, 0, "the master key path must be absolute");
  dir = strdup (path);
  if (dir == NULL)
    return nomem (err);
  slash = strrchr (dir, '/');
  base = path + (slash - dir) + 1;
  if (*base == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "master key path `%s` names a directory", path);
  if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  if ((ret = fs_mkdir_p (dir, 0700, err)) < 0)
    return ret;
  dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return bvm_error (err, errno, "open `%s`", dir);
  if ((ret = new_key (&k, err)) < 0 || (ret = key_id (id, k, err)) < 0)
    return ret;
  ret = write_at (dfd, dir, base, k, SECRETS_KEY_BYTES, false, err);
  if (ret < 0)
    {
      if (ret == -EEXIST)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "master key `%s` already exists: refusing to overwrite it", path);
      return ret;
    }
  if (id_out != NULL)
    hex_encode (id_out, id, KEY_ID_BYTES);
  return 0;
}

/* --- open / close ---------------------------------------------------------------------- */

int
secrets_open (struct secrets **out, const char *dir, const char *master_key_path, bvm_error_t *err)
{
  struct secrets *s;
  struct stat st;
  int ret;

  *out = NULL;
  if (dir == NULL || dir[0] != '/' || master_key_path == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the secrets directory and master key must be absolute paths");
  s = calloc (1, sizeof *s);
  if (s == NULL)
    return nomem (err);
  s->dirfd = -1;
  s->dir = strdup (dir);
  s->master_path = strdup (master_key_path);
  if (s->dir == NULL || s->master_path == NULL)
    {
      secrets_close (s);
      return nomem (err);
    }
  ret = load_master_key (&s->master, s->master_id_raw, master_key_path, err);
  if (ret == 0)
    ret = fs_mkdir_p (dir, 0700, err);
  if (ret == 0)
    {
      s->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (s->dirfd < 0 || fstat (s->dirfd, &st) < 0)
        ret = bvm_error (err, errno, "open secrets directory `%s`", dir);
    }
  /* The files are encrypted, but their names and the number of versions are
   * not, and nobody else may be able to replace or remove them. */
  if (ret == 0 && st.st_uid != geteuid ())
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "secrets directory `%s` is owned by uid %u, not by us", dir,
                          (unsigned) st.st_uid);
  if (ret == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "secrets directory `%s` is accessible by group or others (mode %04o): "
                          "chmod 700 it",
                          dir, (unsigned) (st.st_mode & 07777));
  if (ret < 0)
    {
      secrets_close (s);
      return ret;
    }
  hex_encode (s->master_id, s->master_id_raw, KEY_ID_BYTES);
  *out = s;
  return 0;
}

void
secrets_close (struct secrets *s)
{
  if (s == NULL)
    return;
  master_free (s->master);
  if (s->dirfd >= 0)
    close (s->dirfd);
  free (s->dir);
  free (s->master_path);
  free (s);
}

const char *
secrets_master_key_id (const struct secrets *s)
{
  return s->master_id;
}

/* --- the app's key-encryption key -------------------------------------------------------- */

static size_t
kek_header (unsigned char *h, const unsigned char id[KEY_ID_BYTES], const char *app)
{
  size_t n = strlen (app);
  memcpy (h, kek_magic, MAGIC_BYTES);
  memcpy (h + MAGIC_BYTES, id, KEY_ID_BYTES);
  h[MAGIC_BYTES + KEY_ID_BYTES] = (unsigned char) n;
  memcpy (h + MAGIC_BYTES + KEY_ID_BYTES + 1, app, n);
  return MAGIC_BYTES + KEY_ID_BYTES + 1 + n;
}

/* Wrap `kek` under `master` into a KEK file image (KEK_FILE_MAX bytes). */
static int
kek_seal (unsigned char *file, size_t *len, const unsigned char *master,
          const unsigned char id[KEY_ID_BYTES], const char *app, const unsigned char *kek,
          bvm_error_t *err)
{
  unsigned char aad[AAD_MAX];
  size_t h = kek_header (file, id, app), alen = make_aad (aad, AAD_KEK, file, h);
  unsigned char *nonce = file + h, *ct = nonce + NONCE_BYTES, *tag = ct + SECRETS_KEY_BYTES;

  if (random_bytes (nonce, NONCE_BYTES, false, err) < 0)
    return -1;
  if (gcm_seal (ct, tag, master, nonce, aad, alen, kek, SECRETS_KEY_BYTES) < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "AES-256-GCM encryption failed");
  *len = h + NONCE_BYTES + SECRETS_KEY_BYTES + TAG_BYTES;
  return 0;
}

/* Unwrap a KEK file image with `master`: *out in plaintext memory. */
static int
kek_open (unsigned char **out, const unsigned char *file, size_t len, const struct secrets *s,
          const unsigned char *master, const unsigned char id[KEY_ID_BYTES], const char *app,
          bvm_error_t *err)
{
  unsigned char hdr[KEK_HDR_MAX], aad[AAD_MAX];
  size_t h = kek_header (hdr, id, app), alen;
  unsigned char *k;

  if (len < MAGIC_BYTES || memcmp (file, kek_magic, MAGIC_BYTES - 1) != 0)
    return kek_corrupt (err, app, "not a buildvm key file");
  if (file[MAGIC_BYTES - 1] != FORMAT_VERSION)
    return kek_corrupt (err, app, "unknown format version");
  if (len != h + NONCE_BYTES + SECRETS_KEY_BYTES + TAG_BYTES)
    return kek_corrupt (err, app, "wrong length");
  if (memcmp (file + MAGIC_BYTES, id, KEY_ID_BYTES) != 0)
    {
      char theirs[SECRETS_KEY_ID_HEX + 1], ours[SECRETS_KEY_ID_HEX + 1];
      hex_encode (theirs, file + MAGIC_BYTES, KEY_ID_BYTES);
      hex_encode (ours, id, KEY_ID_BYTES);
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "the key of app `%s` is wrapped with master key `%s`, not with "
                             "`%s` (id `%s`): wrong master key",
                             app, theirs, s->master_path, ours);
    }
  if (memcmp (file, hdr, h) != 0)
    return kek_corrupt (err, app, "it belongs to another app");
  alen = make_aad (aad, AAD_KEK, hdr, h);
  k = secrets__mem_alloc (SECRETS_KEY_BYTES);
  if (k == NULL)
    return bvm_error (err, errno, "allocating locked memory for a key");
  if (gcm_open (k, master, file + h, aad, alen, file + h + NONCE_BYTES, SECRETS_KEY_BYTES,
                file + h + NONCE_BYTES + SECRETS_KEY_BYTES)
      < 0)
    {
      secrets__mem_free (k, SECRETS_KEY_BYTES);
      return kek_corrupt (err, app, "authentication failed");
    }
  *out = k;
  return 0;
}

/* The app's KEK; with `create` (the caller holds the app lock) a new one is
 * made when there is none. */
static int
kek_get (unsigned char **out, struct secrets *s, int appfd, const char *apppath, const char *app,
         bool create, bvm_error_t *err)
{
  cleanup_free unsigned char *file = NULL;
  size_t len;
  bool too_big;
  int ret;

  ret = read_at (&file, &len, appfd, apppath, KEK_FILE, KEK_FILE_MAX, &too_big, err);
  if (ret < 0)
    return ret;
  if (too_big)
    return kek_corrupt (err, app, "wrong length");
  if (file != NULL)
    return kek_open (out, file, len, s, s->master, s->master_id_raw, app, err);
  if (!create)
    return kek_corrupt (err, app, "it is missing");
  {
    cleanup_key unsigned char *kek = NULL;
    unsigned char image[KEK_FILE_MAX];

    if ((ret = new_key (&kek, err)) < 0)
      return ret;
    ret = kek_seal (image, &len, s->master, s->master_id_raw, app, kek, err);
    if (ret == 0)
      ret = write_at (appfd, apppath, KEK_FILE, image, len, false, err);
    if (ret < 0)
      return ret;
    *out = steal_pointer (&kek);
    return 0;
  }
}

/* --- secret files --------------------------------------------------------------------------- */

struct secret_file
{
  uint32_t version;
  uint64_t updated_at;
  unsigned char hdr[SECRET_HDR_MAX]; /* the header we expect, not the file's */
  size_t hdr_len;
  const unsigned char *dek_nonce, *dek_ct, *dek_tag;
  const unsigned char *nonce, *ct, *tag;
  size_t ct_len;
};

static size_t
secret_header (unsigned char *h, uint32_t version, uint64_t updated_at, const char *app,
               const char *name)
{
  size_t a = strlen (app), n = strlen (name);
  memcpy (h, secret_magic, MAGIC_BYTES);
  be32_put (h + MAGIC_BYTES, version);
  put_u64 (h + MAGIC_BYTES + 4, updated_at);
  h[MAGIC_BYTES + 12] = (unsigned char) a;
  h[MAGIC_BYTES + 13] = (unsigned char) n;
  memcpy (h + SECRET_HDR_FIXED, app, a);
  memcpy (h + SECRET_HDR_FIXED + a, name, n);
  return SECRET_HDR_FIXED + a + n;
}

/* Parse and check the structure; NULL if fine, else why not. The header must
 * be exactly the one we would write for this app and name, so a file moved
 * to another app or name is refused here already; independently, f->hdr (the
 * AAD) is built from the app and name we were asked for, never taken from
 * the file. */
static const char *
secret_parse (struct secret_file *f, const unsigned char *d, size_t len, const char *app,
              const char *name)
{
  unsigned char *want = f->hdr;
  size_t h, p;

  if (len < MAGIC_BYTES || memcmp (d, secret_magic, MAGIC_BYTES - 1) != 0)
    return "not a buildvm secret file";
  if (d[MAGIC_BYTES - 1] != FORMAT_VERSION)
    return "unknown format version";
  if (len < SECRET_HDR_FIXED)
    return "truncated";
  f->version = be32_get (d + MAGIC_BYTES);
  f->updated_at = get_u64 (d + MAGIC_BYTES + 4);
  if (f->version == 0)
    return "bad header";
  h = secret_header (want, f->version, f->updated_at, app, name);
  if (len < h)
    return "truncated";
  if (memcmp (d, want, h) != 0)
    return "it belongs to another app or secret";
  f->hdr_len = h;
  if (len < h + SECRET_BODY_FIXED)
    return "truncated";
  p = h;
  f->dek_nonce = d + p, p += NONCE_BYTES;
  f->dek_ct = d + p, p += SECRETS_KEY_BYTES;
  f->dek_tag = d + p, p += TAG_BYTES;
  f->nonce = d + p, p += NONCE_BYTES;
  f->ct_len = be32_get (d + p), p += 4;
  if (f->ct_len == 0 || f->ct_len > SECRETS_VALUE_MAX)
    return "bad length";
  if (len - p < f->ct_len + TAG_BYTES)
    return "truncated";
  if (len - p > f->ct_len + TAG_BYTES)
    return "trailing data";
  f->ct = d + p;
  f->tag = d + p + f->ct_len;
  return NULL;
}

/* Read and parse a secret file. When it does not exist: with `absent`
 * non-NULL, *absent is set and 0 returned; otherwise "has no secret". */
static int
secret_read (unsigned char **file, size_t *len, struct secret_file *f, bool *absent, int appfd,
             const char *apppath, const char *app, const char *name, bvm_error_t *err)
{
  char fname[SECRETS_NAME_MAX + sizeof SECRET_SUFFIX];
  const char *why;
  bool too_big;
  int ret;

  if (absent != NULL)
    *absent = false;
  snprintf (fname, sizeof fname, "%s%s", name, SECRET_SUFFIX);
  ret = read_at (file, len, appfd, apppath, fname, SECRET_FILE_MAX, &too_big, err);
  if (ret < 0)
    return ret;
  if (too_big)
    return corrupt (err, app, name, "too large");
  if (*file == NULL && absent != NULL)
    {
      *absent = true;
      return 0;
    }
  if (*file == NULL)
    return missing (err, app, name);
  if ((why = secret_parse (f, *file, *len, app, name)) != NULL)
    {
      free (*file);
      *file = NULL;
      return corrupt (err, app, name, why);
    }
  return 0;
}

int
secrets_set (struct secrets *s, const char *app, const char *name, const void *value, size_t len,
             unsigned *version_out, bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  cleanup_key unsigned char *kek = NULL;
  cleanup_key unsigned char *dek = NULL;
  cleanup_free unsigned char *image = NULL;
  cleanup_free unsigned char *old = NULL;
  char apppath[PATH_MAX], fname[SECRETS_NAME_MAX + sizeof SECRET_SUFFIX];
  unsigned char aad[AAD_MAX];
  struct secret_file f;
  uint32_t version = 1;
  size_t h, alen, p, oldlen;
  bool absent;
  int ret;

  if ((ret = check_app_name (app, name, err)) < 0)
    return ret;
  if (len == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "secret `%s` of app `%s`: the value is empty",
                           name, app);
  if (len > SECRETS_VALUE_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "secret `%s` of app `%s`: the value is larger than %d bytes", name, app,
                           SECRETS_VALUE_MAX);
  ret = app_dir_open (&appfd, apppath, sizeof apppath, s, app, true, err);
  if (ret == 0)
    ret = lock_app (appfd, apppath, err);
  if (ret < 0)
    return ret;

  /* the next version: the current one's header is read, not decrypted (the
   * version is authenticated when the value is read) */
  ret = secret_read (&old, &oldlen, &f, &absent, appfd, apppath, app, name, err);
  if (ret < 0)
    return ret;
  if (!absent)
    {
      if (f.version == UINT32_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "secret `%s` of app `%s` has reached the last version", name, app);
      version = f.version + 1;
    }

  if ((ret = kek_get (&kek, s, appfd, apppath, app, true, err)) < 0)
    return bvm_error_wrap (err, "secret `%s` of app `%s`", name, app);
  if ((ret = new_key (&dek, err)) < 0)
    return ret;

  image = malloc (SECRET_HDR_MAX + SECRET_BODY_FIXED + len);
  if (image == NULL)
    return nomem (err);
  h = secret_header (image, version, (uint64_t) wall_s (), app, name);
  p = h;
  /* the DEK, wrapped with the app's KEK */
  alen = make_aad (aad, AAD_DEK, image, h);
  if ((ret = random_bytes (image + p, NONCE_BYTES, false, err)) < 0)
    return ret;
  if (gcm_seal (image + p + NONCE_BYTES, image + p + NONCE_BYTES + SECRETS_KEY_BYTES, kek,
                image + p, aad, alen, dek, SECRETS_KEY_BYTES)
      < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "AES-256-GCM encryption failed");
  p += NONCE_BYTES + SECRETS_KEY_BYTES + TAG_BYTES;
  /* the value, encrypted with the DEK: a fresh key for every write, so the
   * random nonce can never repeat under one key */
  alen = make_aad (aad, AAD_PAYLOAD, image, h);
  if ((ret = random_bytes (image + p, NONCE_BYTES, false, err)) < 0)
    return ret;
  be32_put (image + p + NONCE_BYTES, (uint32_t) len);
  if (gcm_seal (image + p + NONCE_BYTES + 4, image + p + NONCE_BYTES + 4 + len, dek, image + p,
                aad, alen, value, len)
      < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "AES-256-GCM encryption failed");
  p += NONCE_BYTES + 4 + len + TAG_BYTES;

  snprintf (fname, sizeof fname, "%s%s", name, SECRET_SUFFIX);
  if ((ret = write_at (appfd, apppath, fname, image, p, true, err)) < 0)
    return ret;
  if (version_out != NULL)
    *version_out = version;
  return 0;
}

/* Open the directory of app `app` to find its secret `name` in: the names
 * checked, and an error when the app has no secrets at all. */
static int
secret_dir_open (int *appfd, char apppath[PATH_MAX], struct secrets *s, const char *app,
                 const char *name, bvm_error_t *err)
{
  int ret;

  if ((ret = check_app_name (app, name, err)) < 0)
    return ret;
  if ((ret = app_dir_open (appfd, apppath, PATH_MAX, s, app, false, err)) < 0)
    return ret;
  if (*appfd < 0)
    return missing (err, app, name);
  return 0;
}

int
secrets_get (struct secrets *s, const char *app, const char *name, struct secret_value **out,
             unsigned *version_out, bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  cleanup_key unsigned char *kek = NULL;
  cleanup_key unsigned char *dek = NULL;
  cleanup_free unsigned char *file = NULL;
  char apppath[PATH_MAX];
  unsigned char aad[AAD_MAX];
  struct secret_value *v;
  struct secret_file f;
  size_t len, alen;
  int ret;

  *out = NULL;
  if ((ret = secret_dir_open (&appfd, apppath, s, app, name, err)) < 0)
    return ret;
  if ((ret = secret_read (&file, &len, &f, NULL, appfd, apppath, app, name, err)) < 0)
    return ret;
  if ((ret = kek_get (&kek, s, appfd, apppath, app, false, err)) < 0)
    return bvm_error_wrap (err, "secret `%s` of app `%s`", name, app);

  dek = secrets__mem_alloc (SECRETS_KEY_BYTES);
  if (dek == NULL)
    return bvm_error (err, errno, "allocating locked memory for a key");
  alen = make_aad (aad, AAD_DEK, f.hdr, f.hdr_len);
  if (gcm_open (dek, kek, f.dek_nonce, aad, alen, f.dek_ct, SECRETS_KEY_BYTES, f.dek_tag) < 0)
    return corrupt (err, app, name, "authentication failed");

  v = secret_value_new (f.ct_len);
  if (v == NULL)
    return bvm_error (err, errno ? errno : ENOMEM, "allocating locked memory for a secret");
  alen = make_aad (aad, AAD_PAYLOAD, f.hdr, f.hdr_len);
  if (gcm_open (v->data, dek, f.nonce, aad, alen, f.ct, f.ct_len, f.tag) < 0)
    {
      secret_value_free (v); /* gcm_open wiped it already */
      return corrupt (err, app, name, "authentication failed");
    }
  v->data[v->len] = '\0';
  if (version_out != NULL)
    *version_out = f.version;
  *out = v;
  return 0;
}

int
secrets_get_for_job (struct secrets *s, const struct role *role, const char *app, const char *name,
                     struct secret_value **out, unsigned *version_out, bvm_error_t *err)
{
  char resource[128];
  int ret;

  *out = NULL;
  if ((ret = check_app_name (app, name, err)) < 0)
    return ret;
  if (secrets_resource (resource, sizeof resource, app, name) < 0)
    return bvm_error (err, ENAMETOOLONG, "secret resource");
  /* asked before anything is read: a denied secret is never decrypted */
  if ((ret = role_authorize (role, POLICY_ACTION_GET_SECRET, resource, err)) < 0)
    return ret;
  return secrets_get (s, app, name, out, version_out, err);
}

/* --- list, remove ----------------------------------------------------------------------- */

struct list_entry
{
  char name[SECRETS_NAME_MAX + 1];
  uint32_t version;
  uint64_t updated_at;
};

static int
entry_cmp (const void *a, const void *b)
{
  return strcmp (((const struct list_entry *) a)->name, ((const struct list_entry *) b)->name);
}

int
secrets_list (struct secrets *s, const char *app, json_t **out, bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  cleanup_free struct list_entry *e = NULL;
  cleanup_json json_t *arr = NULL;
  char apppath[PATH_MAX];
  size_t n = 0, alloc = 0, seen = 0;
  struct dirent *de;
  DIR *d;
  int ret = 0, fd;

  *out = NULL;
  if ((ret = check_app_name (app, NULL, err)) < 0)
    return ret;
  if ((ret = app_dir_open (&appfd, apppath, sizeof apppath, s, app, false, err)) < 0)
    return ret;
  arr = json_array ();
  if (arr == NULL)
    return nomem (err);
  if (appfd < 0)
    {
      *out = steal_pointer (&arr);
      return 0;
    }
  fd = dup (appfd);
  if (fd < 0 || (d = fdopendir (fd)) == NULL)
    {
      int e2 = errno;
      if (fd >= 0)
        close (fd);
      return bvm_error (err, e2, "open directory `%s`", apppath);
    }
  while (ret == 0 && (errno = 0, de = readdir (d)) != NULL)
    {
      size_t nl = strlen (de->d_name), sl = strlen (SECRET_SUFFIX);
      char name[SECRETS_NAME_MAX + 1];
      unsigned char *file = NULL;
      struct secret_file f;
      bool absent;
      size_t len;

      if (++seen > LIST_MAX)
        {
          ret = bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` has more than %d entries", apppath,
                                LIST_MAX);
          break;
        }
      /* `.kek`, `.tmp-*`, and anything that is not one of our files */
      if (de->d_name[0] == '.' || nl <= sl || nl - sl > SECRETS_NAME_MAX
          || strcmp (de->d_name + nl - sl, SECRET_SUFFIX) != 0)
        continue;
      memcpy (name, de->d_name, nl - sl);
      name[nl - sl] = '\0';
      if (secrets_name_problem (name) != NULL)
        continue;
      ret = secret_read (&file, &len, &f, &absent, appfd, apppath, app, name, err);
      free (file);
      if (ret < 0)
        break;
      if (absent)
        continue; /* removed while we listed */
      if (n == alloc)
        {
          size_t na = alloc ? alloc * 2 : 16;
          struct list_entry *ne = realloc (e, na * sizeof *ne);
          if (ne == NULL)
            {
              ret = nomem (err);
              break;
            }
          e = ne;
          alloc = na;
        }
      memcpy (e[n].name, name, nl - sl + 1);
      e[n].version = f.version;
      e[n].updated_at = f.updated_at;
      n++;
    }
  if (ret == 0 && errno != 0)
    ret = bvm_error (err, errno, "read directory `%s`", apppath);
  closedir (d);
  if (ret < 0)
    return ret;
  if (n > 0)
    qsort (e, n, sizeof *e, entry_cmp);
  for (size_t i = 0; i < n; i++)
    {
      char ts[40];
      json_t *o = json_object ();
      format_rfc3339 (ts, sizeof ts,
                      e[i].updated_at > INT64_MAX ? INT64_MAX : (int64_t) e[i].updated_at);
      if (o == NULL || json_array_append_new (arr, o) < 0
          || json_object_set_new (o, "name", json_string (e[i].name)) < 0
          || json_object_set_new (o, "version", json_integer (e[i].version)) < 0
          || json_object_set_new (o, "updated_at", json_string (ts)) < 0)
        return nomem (err);
    }
  *out = steal_pointer (&arr);
  return 0;
}

int
secrets_remove (struct secrets *s, const char *app, const char *name, bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  char apppath[PATH_MAX], fname[SECRETS_NAME_MAX + sizeof SECRET_SUFFIX];
  int ret;

  if ((ret = secret_dir_open (&appfd, apppath, s, app, name, err)) < 0)
    return ret;
  if ((ret = lock_app (appfd, apppath, err)) < 0)
    return ret;
  snprintf (fname, sizeof fname, "%s%s", name, SECRET_SUFFIX);
  if (unlinkat (appfd, fname, 0) < 0)
    {
      if (errno == ENOENT)
        return missing (err, app, name);
      return bvm_error (err, errno, "remove `%s/%s`", apppath, fname);
    }
  if (fsync (appfd) < 0)
    return bvm_error (err, errno, "fsync directory `%s`", apppath);
  return 0;
}

/* --- master key rotation ---------------------------------------------------------------- */

static int
rewrap_app (bool *done, struct secrets *s, const unsigned char *new_master,
            const unsigned char new_id[KEY_ID_BYTES], const char *app, bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  cleanup_free unsigned char *file = NULL;
  cleanup_key unsigned char *kek = NULL;
  char apppath[PATH_MAX];
  unsigned char image[KEK_FILE_MAX];
  size_t len;
  bool too_big;
  int ret;

  *done = false;
  ret = app_dir_open (&appfd, apppath, sizeof apppath, s, app, false, err);
  if (ret == 0 && appfd >= 0)
    ret = lock_app (appfd, apppath, err);
  if (ret < 0 || appfd < 0)
    return ret;
  ret = read_at (&file, &len, appfd, apppath, KEK_FILE, KEK_FILE_MAX, &too_big, err);
  if (ret < 0)
    return ret;
  if (too_big)
    return kek_corrupt (err, app, "wrong length");
  if (file == NULL)
    return 0; /* an app directory without secrets yet */
  /* already under the new key: an earlier, interrupted rotation got here */
  if (len >= MAGIC_BYTES + KEY_ID_BYTES && memcmp (file + MAGIC_BYTES, new_id, KEY_ID_BYTES) == 0)
    {
      cleanup_key unsigned char *check = NULL;
      return kek_open (&check, file, len, s, new_master, new_id, app, err);
    }
  if ((ret = kek_open (&kek, file, len, s, s->master, s->master_id_raw, app, err)) < 0)
    return ret;
  ret = kek_seal (image, &len, new_master, new_id, app, kek, err);
  if (ret == 0)
    ret = write_at (appfd, apppath, KEK_FILE, image, len, true, err);
  if (ret == 0)
    *done = true;
  return ret;
}

int
secrets_rotate_master_key (struct secrets *s, const char *new_master_key_path, size_t *n_out,
                           bvm_error_t *err)
{
  unsigned char *new_master = NULL;
  unsigned char new_id[KEY_ID_BYTES];
  cleanup_close int apps = -1;
  struct dirent *de;
  size_t n = 0;
  DIR *d;
  int ret;

  if (n_out != NULL)
    *n_out = 0;
  ret = load_master_key (&new_master, new_id, new_master_key_path, err);
  if (ret < 0)
    return ret;
  if (memcmp (new_id, s->master_id_raw, KEY_ID_BYTES) == 0)
    {
      master_free (new_master);
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "`%s` is the current master key, not a new one", new_master_key_path);
    }
  apps = openat (s->dirfd, "apps", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (apps < 0)
    {
      master_free (new_master);
      if (errno == ENOENT)
        return 0;
      return bvm_error (err, errno, "open `%s/apps`", s->dir);
    }
  d = fdopendir (steal_fd (&apps));
  if (d == NULL)
    {
      master_free (new_master);
      return bvm_error (err, errno, "open `%s/apps`", s->dir);
    }
  while (ret == 0 && (errno = 0, de = readdir (d)) != NULL)
    {
      bool done = false;
      if (job_app_id_problem (de->d_name) != NULL)
        continue; /* `.`, `..` and anything that is not an app */
      ret = rewrap_app (&done, s, new_master, new_id, de->d_name, err);
      n += done;
    }
  if (ret == 0 && errno != 0)
    ret = bvm_error (err, errno, "read `%s/apps`", s->dir);
  closedir (d);
  master_free (new_master);
  if (n_out != NULL)
    *n_out = n;
  return ret;
}

/* --- keys derived for other modules (seal.h) --------------------------------------------- */

int
secrets_derive_app_key (struct secrets *s, const char *app, const char *purpose,
                        unsigned char out[SECRETS_KEY_BYTES], bvm_error_t *err)
{
  cleanup_close int appfd = -1;
  cleanup_key unsigned char *kek = NULL;
  char apppath[PATH_MAX], info[128];
  EVP_PKEY_CTX *c;
  size_t n = SECRETS_KEY_BYTES;
  int ret, ok;

  if ((ret = check_app_name (app, NULL, err)) < 0)
    return ret;
  if (snprintf_checked (info, sizeof info, "buildvm %s v1|%s", purpose, app) < 0)
    return bvm_error (err, ENAMETOOLONG, "key purpose `%s`", purpose);
  ret = app_dir_open (&appfd, apppath, sizeof apppath, s, app, true, err);
  if (ret == 0)
    ret = lock_app (appfd, apppath, err);
  if (ret == 0)
    ret = kek_get (&kek, s, appfd, apppath, app, true, err);
  if (ret < 0)
    return bvm_error_wrap (err, "the %s key of app `%s`", purpose, app);
  /* HKDF-SHA256 of the app's KEK: the KEK survives a master key rotation
   * (only its wrapping changes), so what was sealed stays readable */
  c = EVP_PKEY_CTX_new_id (EVP_PKEY_HKDF, NULL);
  ok = c != NULL && EVP_PKEY_derive_init (c) == 1
       && EVP_PKEY_CTX_set_hkdf_md (c, EVP_sha256 ()) == 1
       && EVP_PKEY_CTX_set1_hkdf_key (c, kek, SECRETS_KEY_BYTES) == 1
       && EVP_PKEY_CTX_add1_hkdf_info (c, (const unsigned char *) info, (int) strlen (info)) == 1
       && EVP_PKEY_derive (c, out, &n) == 1 && n == SECRETS_KEY_BYTES;
  EVP_PKEY_CTX_free (c);
  if (!ok)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "HKDF-SHA256 failed");
  return 0;
}
