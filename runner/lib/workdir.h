/* workdir.h - per-job work directories that cannot outlive their owner
 *
 * Each job gets <base>/<name>.<random>/ (mode 0700) holding its disks and
 * temporary files. The owner holds an exclusive flock on <dir>/.lock for the
 * directory's whole life; a lock that can be taken means the owner is gone
 * (crashed, SIGKILLed), so workdir_reap_stale() removes the directory. This
 * needs no pid files and is immune to pid reuse. The directory is created and
 * locked under a temporary name (`.new.*`) and renamed into place, and
 * renamed away (`.rm.*`) before it is removed, so a reaper never sees a job's
 * directory without its held lock (see workdir_create).
 */
#ifndef BUILDVM_WORKDIR_H
#define BUILDVM_WORKDIR_H

#include "error.h"

struct workdir
{
  char *path;
  int lock_fd;
};

int workdir_create (struct workdir **out, const char *base, const char *name, bvm_error_t *err);
/* "<dir>/<file>" into a malloc'd string */
char *workdir_file (const struct workdir *w, const char *file);
/* Remove the directory and release the lock; frees w. Safe on NULL. */
int workdir_remove (struct workdir *w, bvm_error_t *err);
/* Remove every directory under base whose owner is gone. */
int workdir_reap_stale (const char *base, unsigned *reaped, bvm_error_t *err);

#endif
