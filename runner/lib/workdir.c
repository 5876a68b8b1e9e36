/* workdir.c - per-job work directories, see workdir.h */
#include "workdir.h"
#include "fs.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Directories in transition: being created (".new.") or removed (".rm.").
 * The reaper never takes one of these for a job's directory. */
#define NEW_PREFIX ".new."
#define RM_PREFIX ".rm."
#define TRANSIT_STALE_S 600

/* The directory and its lock appear together. It is made under a name the
 * reaper skips (mkdtemp: `.new.<name>.XXXXXX`), its `.lock` is created
 * (O_EXCL) and flocked there, and only then is it renamed to its final name
 * (RENAME_NOREPLACE). So no job directory is ever visible without its held
 * lock: a reaper that finds a final name whose lock it can take has found a
 * dead owner, never one between mkdir and flock (which used to be a window
 * in which a reaper removed a live job's directory, issue 11). The reaper
 * removes a `.new.` directory only when it is old and unlocked; at worst that
 * makes its (stopped) creator fail cleanly at the rename, since nothing of a
 * job is in it yet. */
int
workdir_create (struct workdir **out, const char *base, const char *name, bvm_error_t *err)
{
  unsigned char rnd[4];
  char hex[9], lock[PATH_MAX], tmp[PATH_MAX];
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
  if (snprintf_checked (tmp, sizeof tmp, "%s/" NEW_PREFIX "%s.XXXXXX", base, name) < 0
      || snprintf_checked (lock, sizeof lock, "%s/.lock", tmp) < 0)
    {
      free (w->path);
      free (w);
      return bvm_error (err, ENAMETOOLONG, "workdir");
    }
  if (mkdtemp (tmp) == NULL)
    {
      ret = bvm_error (err, errno, "mkdtemp `%s`", tmp);
      free (w->path);
      free (w);
      return ret;
    }
  /* mkdtemp replaced the XXXXXX in place: the same length, it fits */
  memcpy (lock + strlen (tmp) - 6, tmp + strlen (tmp) - 6, 6);
  w->lock_fd = open (lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (w->lock_fd < 0 || flock (w->lock_fd, LOCK_EX | LOCK_NB) < 0
      || renameat2 (AT_FDCWD, tmp, AT_FDCWD, w->path, RENAME_NOREPLACE) < 0)
    {
      bvm_error_t e = NULL;
      ret = bvm_error (err, errno, "create and lock `%s`", w->path);
      if (fs_rm_rf (tmp, &e) < 0)
        bvm_error_free (&e);
      if (w->lock_fd >= 0)
        close (w->lock_fd);
      free (w->path);
      free (w);
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
    {
      /* out of the reaper's sight first: while its files go, the directory
       * would be a final name without a lock, which the reaper would remove
       * under us */
      char dead[PATH_MAX];
      const char *slash = strrchr (w->path, '/');
      if (slash != NULL
          && snprintf_checked (dead, sizeof dead, "%.*s/" RM_PREFIX "%s", (int) (slash - w->path),
                               w->path, slash + 1)
                 == 0
          && rename (w->path, dead) == 0)
        ret = fs_rm_rf (dead, err);
      else
        ret = fs_rm_rf (w->path, err);
    }
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

      bool transit = strncmp (de->d_name, NEW_PREFIX, strlen (NEW_PREFIX)) == 0
                     || strncmp (de->d_name, RM_PREFIX, strlen (RM_PREFIX)) == 0;

      if (de->d_name[0] == '.' && !transit)
        continue;
      if (snprintf_checked (path, sizeof path, "%s/%s", base, de->d_name) < 0
          || snprintf_checked (lock, sizeof lock, "%s/.lock", path) < 0)
        continue;
      if (lstat (path, &st) < 0 || !S_ISDIR (st.st_mode))
        continue;
      /* one in transition: its owner may be between two steps; only an old
       * one is a crash's leftover (see workdir_create) */
      if (transit && time (NULL) - st.st_mtime < TRANSIT_STALE_S)
        continue;
      fd = open (lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0)
        {
          /* no lock file: a final name always has one (it is created
           * before the rename), so this is an old runner's leftover, or a
           * crash in transition */
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
