/* workdir.c - per-job work directories, see workdir.h */
#include "workdir.h"
#include "fs.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int
workdir_create (struct workdir **out, const char *base, const char *name, bvm_error_t *err)
{
  unsigned char rnd[4];
  char hex[9], lock[PATH_MAX];
  struct workdir *w;
  int ret;

  ret = fs_mkdir_p (base, 0700, err);
  if (ret < 0)
    return ret;
  if (getrandom (rnd, sizeof rnd, 0) != (ssize_t) sizeof rnd)
    return bvm_error (err, errno, "getrandom");
  hex_encode (hex, rnd, sizeof rnd);
  w = calloc (1, sizeof *w);
  if (w == NULL)
    return bvm_error (err, ENOMEM, "workdir");
  w->lock_fd = -1;
  if (asprintf (&w->path, "%s/%s.%s", base, name, hex) < 0)
    {
      free (w);
      return bvm_error (err, ENOMEM, "workdir");
    }
  if (mkdir (w->path, 0700) < 0)
    {
      ret = bvm_error (err, errno, "mkdir `%s`", w->path);
      free (w->path);
      free (w);
      return ret;
    }
  if (snprintf_checked (lock, sizeof lock, "%s/.lock", w->path) < 0)
    {
      workdir_remove (w, NULL);
      return bvm_error (err, ENAMETOOLONG, "workdir");
    }
  w->lock_fd = open (lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (w->lock_fd < 0 || flock (w->lock_fd, LOCK_EX | LOCK_NB) < 0)
    {
      ret = bvm_error (err, errno, "lock `%s`", lock);
      workdir_remove (w, NULL);
      return ret;
    }
  *out = w;
  return 0;
}

char *
workdir_file (const struct workdir *w, const char *file)
{
  char *s = NULL;
  if (asprintf (&s, "%s/%s", w->path, file) < 0)
    return NULL;
  return s;
}

int
workdir_remove (struct workdir *w, bvm_error_t *err)
{
  int ret = 0;
  if (w == NULL)
    return 0;
  if (w->path)
    ret = fs_rm_rf (w->path, err);
  /* the lock goes last: until the directory is gone, nobody reaps it */
  if (w->lock_fd >= 0)
    close (w->lock_fd);
  free (w->path);
  free (w);
  return ret;
}

int
workdir_reap_stale (const char *base, unsigned *reaped, bvm_error_t *err)
{
  DIR *d = opendir (base);
  struct dirent *de;
  int ret = 0;

  if (reaped)
    *reaped = 0;
  if (d == NULL)
    return errno == ENOENT ? 0 : bvm_error (err, errno, "open `%s`", base);
  while ((de = readdir (d)) != NULL)
    {
      char path[PATH_MAX], lock[PATH_MAX];
      struct stat st;
      int fd;

      if (de->d_name[0] == '.')
        continue;
      if (snprintf_checked (path, sizeof path, "%s/%s", base, de->d_name) < 0
          || snprintf_checked (lock, sizeof lock, "%s/.lock", path) < 0)
        continue;
      if (lstat (path, &st) < 0 || !S_ISDIR (st.st_mode))
        continue;
      fd = open (lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0)
        {
          /* no lock file: a directory that died between mkdir and lock */
          if (errno != ENOENT)
            continue;
        }
      else if (flock (fd, LOCK_EX | LOCK_NB) < 0)
        {
          close (fd); /* alive */
          continue;
        }
      if (fs_rm_rf (path, err) < 0)
        ret = -1;
      else if (reaped)
        (*reaped)++;
      if (fd >= 0)
        close (fd);
    }
  closedir (d);
  return ret;
}
