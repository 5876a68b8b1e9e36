/* fs.c - file system helpers, see fs.h */
#include "fs.h"
#include "util.h"

#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
fs_write_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      p += n;
      len -= (size_t) n;
    }
  return 0;
}

int
fs_read_sized (int fd, void *data, size_t size, size_t *used)
{
  *used = 0;
  for (;;)
    {
      ssize_t n = read (fd, (char *) data + *used, size + 1 - *used);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return -1;
      if (n == 0)
        return 0;
      *used += (size_t) n;
      if (*used > size)
        return 1;
    }
}

int
fs_read_fd (char **out, size_t *len, int fd, size_t max, const char *what, bvm_error_t *err)
{
  size_t alloc = 4096, used = 0;
  char *data = malloc (alloc);

  if (data == NULL)
    return bvm_error (err, ENOMEM, "reading %s", what);
  for (;;)
    {
      ssize_t n;
      if (used == alloc - 1)
        {
          size_t na = alloc * 2;
          char *nd;
          if (alloc - 1 > max)
            {
              free (data);
              return bvm_error_code (err, BVM_E_LIMIT, 0, "%s is larger than %zu bytes", what,
                                     max);
            }
          nd = realloc (data, na);
          if (nd == NULL)
            {
              free (data);
              return bvm_error (err, ENOMEM, "reading %s", what);
            }
          data = nd;
          alloc = na;
        }
      n = read (fd, data + used, alloc - 1 - used);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          int e = errno;
          free (data);
          return bvm_error (err, e, "reading %s", what);
        }
      if (n == 0)
        break;
      used += (size_t) n;
      if (used > max)
        {
          free (data);
          return bvm_error_code (err, BVM_E_LIMIT, 0, "%s is larger than %zu bytes", what, max);
        }
    }
  data[used] = '\0';
  *out = data;
  *len = used;
  return 0;
}

int
fs_read_file (char **out, size_t *len, const char *path, size_t max, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  char what[PATH_MAX + 8];

  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", path);
  if (!S_ISREG (st.st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not a regular file", path);
  snprintf (what, sizeof what, "`%s`", path);
  return fs_read_fd (out, len, fd, max, what, err);
}

int
fs_fsync_dir (const char *dir, bvm_error_t *err)
{
  cleanup_close int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open directory `%s`", dir);
  if (fsync (fd) < 0)
    return bvm_error (err, errno, "fsync directory `%s`", dir);
  return 0;
}

int
fs_write_atomic (const char *path, const void *data, size_t len, mode_t mode, bvm_error_t *err)
{
  cleanup_free char *dir = NULL;
  char tmp[PATH_MAX];
  cleanup_close int fd = -1;
  char *slash;

  if (snprintf_checked (tmp, sizeof tmp, "%s.tmp.%d", path, (int) getpid ()) < 0)
    return bvm_error (err, ENAMETOOLONG, "`%s`", path);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s`", tmp);
  if (fchmod (fd, mode) < 0 || fs_write_all (fd, data, len) < 0 || fsync (fd) < 0)
    {
      int e = errno;
      unlink (tmp);
      return bvm_error (err, e, "write `%s`", tmp);
    }
  if (close (steal_fd (&fd)) < 0)
    {
      int e = errno;
      unlink (tmp);
      return bvm_error (err, e, "close `%s`", tmp);
    }
  if (rename (tmp, path) < 0)
    {
      int e = errno;
      unlink (tmp);
      return bvm_error (err, e, "rename `%s` to `%s`", tmp, path);
    }
  dir = strdup (path);
  if (dir == NULL)
    return bvm_error (err, ENOMEM, "`%s`", path);
  slash = strrchr (dir, '/');
  if (slash == NULL)
    return fs_fsync_dir (".", err);
  if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  return fs_fsync_dir (dir, err);
}

int
fs_mkdir_p (const char *path, mode_t mode, bvm_error_t *err)
{
  char p[PATH_MAX];
  size_t n;

  if (snprintf_checked (p, sizeof p, "%s", path) < 0)
    return bvm_error (err, ENAMETOOLONG, "mkdir `%s`", path);
  n = strlen (p);
  while (n > 1 && p[n - 1] == '/')
    p[--n] = '\0';
  for (char *s = p + 1; *s; s++)
    {
      if (*s != '/')
        continue;
      *s = '\0';
      if (mkdir (p, mode) < 0 && errno != EEXIST)
        return bvm_error (err, errno, "mkdir `%s`", p);
      *s = '/';
    }
  if (mkdir (p, mode) < 0)
    {
      struct stat st;
      if (errno != EEXIST)
        return bvm_error (err, errno, "mkdir `%s`", p);
      if (stat (p, &st) < 0 || !S_ISDIR (st.st_mode))
        return bvm_error (err, ENOTDIR, "mkdir `%s`", p);
    }
  return 0;
}

DIR *
fs_fdopendir (int dirfd)
{
  DIR *d = fdopendir (dirfd);
  if (d == NULL)
    {
      int e = errno;
      close (dirfd);
      errno = e;
    }
  return d;
}

struct dirent *
fs_readdir (DIR *d)
{
  struct dirent *de;
  do
    {
      errno = 0;
      de = readdir (d);
    }
  while (de != NULL && (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0));
  return de;
}

/* Remove everything under dirfd. `dev` keeps us on one file system. */
static int
rm_rf_at (int dirfd, dev_t dev, int depth)
{
  DIR *d;
  struct dirent *de;
  int ret = 0;

  if (depth > 512)
    {
      errno = ELOOP;
      return -1;
    }
  d = fs_fdopendir (dirfd);
  if (d == NULL)
    return -1;
  while ((de = fs_readdir (d)) != NULL)
    {
      struct stat st;
      if (fstatat (dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT)
            continue;
          ret = -1;
          continue;
        }
      if (S_ISDIR (st.st_mode))
        {
          int sub;
          if (st.st_dev != dev)
            {
              errno = EXDEV;
              ret = -1;
              continue;
            }
          sub = openat (dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub < 0)
            {
              /* maybe not readable: make it so (we own it) and retry */
              if (fchmodat (dirfd, de->d_name, 0700, 0) < 0)
                {
                  ret = -1;
                  continue;
                }
              sub = openat (dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            }
          if (sub < 0 || rm_rf_at (sub, dev, depth + 1) < 0)
            ret = -1;
          if (unlinkat (dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
            ret = -1;
        }
      else if (unlinkat (dirfd, de->d_name, 0) < 0 && errno != ENOENT)
        ret = -1;
    }
  if (errno != 0)
    ret = -1;
  closedir (d);
  return ret;
}

int
fs_rm_rf (const char *path, bvm_error_t *err)
{
  struct stat st;
  int fd;

  if (lstat (path, &st) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return bvm_error (err, errno, "stat `%s`", path);
    }
  if (!S_ISDIR (st.st_mode))
    {
      if (unlink (path) < 0 && errno != ENOENT)
        return bvm_error (err, errno, "remove `%s`", path);
      return 0;
    }
  fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  if (rm_rf_at (fd, st.st_dev, 0) < 0)
    return bvm_error (err, errno, "remove the contents of `%s`", path);
  if (rmdir (path) < 0 && errno != ENOENT)
    return bvm_error (err, errno, "remove `%s`", path);
  return 0;
}

int
fs_exe_dir (char **out, bvm_error_t *err)
{
  char buf[PATH_MAX];
  ssize_t n = readlink ("/proc/self/exe", buf, sizeof buf - 1);
  char *slash;

  if (n < 0)
    return bvm_error (err, errno, "readlink `/proc/self/exe`");
  buf[n] = '\0';
  slash = strrchr (buf, '/');
  if (slash == NULL)
    return bvm_error (err, EINVAL, "odd executable path `%s`", buf);
  *slash = '\0';
  *out = strdup (buf);
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "exe dir");
  return 0;
}

/* The checks shared by the path and descriptor forms; `what` (or NULL)
 * names the file in errors: "master key `/x` is ...". */
static int
check_private_stat (const struct stat *st, const char *path, const char *what, bool owner,
                    bvm_error_t *err)
{
  const char *sp = what ? " " : "";
  if (what == NULL)
    what = "";
  if (!S_ISREG (st->st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s%s`%s` is not a regular file", what, sp,
                           path);
  if (st->st_mode & (S_IRWXG | S_IRWXO))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s%s`%s` is accessible by group or others (mode %04o): chmod 600 it",
                           what, sp, path, (unsigned) (st->st_mode & 07777));
  /* someone else's file could be rewritten under us by its owner */
  if (owner && st->st_uid != geteuid () && st->st_uid != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s%s`%s` is owned by uid %u, not by us or root",
                           what, sp, path, (unsigned) st->st_uid);
  return 0;
}

int
fs_check_private (const char *path, bvm_error_t *err)
{
  struct stat st;
  if (stat (path, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", path);
  return check_private_stat (&st, path, NULL, false, err);
}

int
fs_check_private_fd (struct stat *st, int fd, const char *path, const char *what, bvm_error_t *err)
{
  if (fstat (fd, st) < 0)
    return bvm_error (err, errno, "stat `%s`", path);
  return check_private_stat (st, path, what, true, err);
}
