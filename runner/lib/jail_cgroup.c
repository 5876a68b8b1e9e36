/* jail_cgroup.c - the jail's cgroups (v1 and v2): one leaf per controller
 * under a `buildvm` parent, limits, attach, removal. See jail_int.h. */
#include "jail_int.h"
#include "fs.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool
has_word (const char *list, const char *word, char sep)
{
  size_t n = strlen (word);
  const char *p = list;
  while (*p)
    {
      const char *end = strchr (p, sep);
      size_t len = end ? (size_t) (end - p) : strlen (p);
      if (len == n && memcmp (p, word, n) == 0)
        return true;
      if (end == NULL)
        break;
      p = end + 1;
    }
  return false;
}

/* The value `match` finds in the first line of `path` that has one (lines
 * longer than 4095 bytes are read in pieces), copied into out: 0, -1 when
 * no line has it, -2 when it does not fit. */
static int
cg_scan (char *out, size_t size, const char *path, const char *ctrl,
         const char *(*match) (char *line, const char *ctrl))
{
  FILE *f = fopen (path, "re");
  char line[4096];
  int ret = -1;

  if (f == NULL)
    return -1;
  while (ret == -1 && fgets (line, sizeof line, f))
    {
      const char *v = match (line, ctrl);
      if (v != NULL)
        ret = snprintf_checked (out, size, "%s", v) < 0 ? -2 : 0;
    }
  fclose (f);
  return ret;
}

/* A /proc/self/mountinfo line's mount point when it mounts the v1 hierarchy
 * with controller `ctrl`, or the v2 hierarchy when ctrl is NULL. */
static const char *
mount_match (char *line, const char *ctrl)
{
  char *sep = strstr (line, " - "), *save = NULL, *tok, *mnt = NULL, *fstype, *opts;
  int k = 0;

  if (sep == NULL)
    return NULL;
  *sep = '\0';
  for (tok = strtok_r (line, " ", &save); tok; tok = strtok_r (NULL, " ", &save))
    if (++k == 5)
      {
        mnt = tok;
        break;
      }
  save = NULL;
  fstype = strtok_r (sep + 3, " ", &save);
  if (fstype != NULL)
    strtok_r (NULL, " ", &save); /* the source */
  opts = fstype ? strtok_r (NULL, " \n", &save) : NULL;
  /* an escaped (\040) mount point is not one of the usual cgroup mounts */
  if (mnt == NULL || fstype == NULL || strchr (mnt, '\\') != NULL)
    return NULL;
  if (ctrl == NULL ? strcmp (fstype, "cgroup2") == 0
                   : (strcmp (fstype, "cgroup") == 0 && opts && has_word (opts, ctrl, ',')))
    return mnt;
  return NULL;
}

/* The mount point of the v1 hierarchy with controller `ctrl`, or of the v2
 * hierarchy when ctrl is NULL. */
static int
cg_mount (char *out, size_t size, const char *ctrl)
{
  return cg_scan (out, size, "/proc/self/mountinfo", ctrl, mount_match);
}

/* A /proc/self/cgroup line's cgroup when it is that of the v1 hierarchy of
 * `ctrl`, or of the v2 one. */
static const char *
own_match (char *line, const char *ctrl)
{
  char *c1 = strchr (line, ':'), *c2 = c1 ? strchr (c1 + 1, ':') : NULL;
  size_t n;
  if (c2 == NULL)
    return NULL;
  *c2 = '\0';
  n = strlen (c2 + 1);
  if (n > 0 && c2[n] == '\n')
    c2[n] = '\0';
  if (ctrl == NULL ? (strcmp (line, "0:") == 0 && c1[1] == '\0') : has_word (c1 + 1, ctrl, ','))
    return c2 + 1;
  return NULL;
}

/* The runner's own cgroup in the v1 hierarchy of `ctrl`, or the v2 one. */
static int
cg_own (char *out, size_t size, const char *ctrl)
{
  return cg_scan (out, size, "/proc/self/cgroup", ctrl, own_match);
}

static int
cg_write (const char *dir, const char *file, const char *value)
{
  char path[PATH_MAX];
  int fd, e = 0;
  size_t n = strlen (value);

  if (snprintf_checked (path, sizeof path, "%s/%s", dir, file) < 0)
    return -ENAMETOOLONG;
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (write (fd, value, n) != (ssize_t) n)
    e = errno ? errno : EIO;
  close (fd);
  return -e;
}

static bool
cg_has_controller (const char *dir, const char *ctrl)
{
  char path[PATH_MAX], *data = NULL;
  size_t len;
  bool yes = false;

  if (snprintf_checked (path, sizeof path, "%s/cgroup.controllers", dir) < 0
      || fs_read_file (&data, &len, path, 4096, NULL) < 0)
    return false;
  for (char *p = data; *p; p++)
    if (*p == '\n')
      *p = ' ';
  yes = has_word (data, ctrl, ' ');
  free (data);
  return yes;
}

static void note (struct jail *j, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
note (struct jail *j, const char *fmt, ...)
{
  size_t have = strlen (j->cg_note);
  va_list ap;

  if (have > 0 && have + 2 < sizeof j->cg_note)
    {
      memcpy (j->cg_note + have, "; ", 3);
      have += 2;
    }
  va_start (ap, fmt);
  vsnprintf (j->cg_note + have, sizeof j->cg_note - have, fmt, ap);
  va_end (ap);
}

/* Remove a leaf cgroup; its processes are gone but the kernel may need a
 * moment to notice. */
static int
cg_rmdir (const char *dir)
{
  for (int i = 0; i < 100; i++)
    {
      if (rmdir (dir) == 0 || errno == ENOENT)
        return 0;
      if (errno != EBUSY)
        return -errno;
      usleep (10000);
    }
  return -EBUSY;
}

/* Remove the leaves under `up` left by runners that died (SIGKILL, power)
 * with a uid of our range: a leaf whose uid lock is free has no owner. The
 * lock is taken for the removal, so a job that takes the uid meanwhile
 * waits for us instead of losing its fresh cgroup; rmdir refuses a leaf
 * that still has processes. */
static void
cg_reap (const struct jail *j, const char *up)
{
  DIR *d = opendir (up);
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      char leaf[PATH_MAX], lock[PATH_MAX];
      uint32_t uid;
      int fd = -1;

      if (de->d_type != DT_DIR || parse_u32 (de->d_name, &uid) < 0 || uid == j->uid
          || uid < j->uid_first || uid - j->uid_first >= j->uid_count
          || snprintf_checked (leaf, sizeof leaf, "%s/%s", up, de->d_name) < 0)
        continue;
      if (jail__uid_try (&fd, lock, sizeof lock, j->lock_dir, uid) != 1)
        continue;
      rmdir (leaf);
      unlink (lock);
      close (fd);
    }
  closedir (d);
}

/* <base>/buildvm/<uid>: the job's cgroup under the runner's own, so that
 * whatever limits the runner lives under bind its VMMs too. The name is the
 * uid, which the lock makes ours: a leftover of the same name can only be a
 * crashed runner's, empty since its VMM died with it, and is removed. */
static int
cg_make (struct jail *j, const char *base, const char *ctrl, bool v2)
{
  char up[PATH_MAX], leaf[PATH_MAX];

  if (snprintf_checked (up, sizeof up, "%s/buildvm", base) < 0
      || snprintf_checked (leaf, sizeof leaf, "%s/%u", up, (unsigned) j->uid) < 0)
    {
      note (j, "%s: path too long", ctrl);
      return -1;
    }
  /* v2: children get a controller only when the parent enables it in its
   * subtree_control (refused with EBUSY for a non-root cgroup that has
   * processes of its own: doctor explains) */
  if (v2 && cg_write (base, "cgroup.subtree_control", "+memory +pids +cpu") < 0)
    {
      /* enable what we can one by one: a controller may be missing */
      static const char *const all[] = { "+memory", "+pids", "+cpu" };
      for (size_t i = 0; i < ARRAY_SIZE (all); i++)
        cg_write (base, "cgroup.subtree_control", all[i]);
    }
  /* Another runner removes `up` when its last job there ends: if that
   * happens between our two mkdirs, make it again. */
  for (int attempt = 0;; attempt++)
    {
      if (mkdir (up, 0755) < 0 && errno != EEXIST)
        {
          note (j, "%s: mkdir `%s`: %s", ctrl, up, strerror (errno));
          return -1;
        }
      if (attempt == 0)
        cg_reap (j, up);
      if (v2)
        {
          static const char *const all[] = { "+memory", "+pids", "+cpu" };
          for (size_t i = 0; i < ARRAY_SIZE (all); i++)
            cg_write (up, "cgroup.subtree_control", all[i]);
        }
      if (mkdir (leaf, 0755) == 0)
        break;
      if (errno == ENOENT && attempt < 3)
        continue;
      if (errno != EEXIST || cg_rmdir (leaf) < 0 || mkdir (leaf, 0755) < 0)
        {
          note (j, "%s: mkdir `%s`: %s", ctrl, leaf, strerror (errno));
          return -1;
        }
      break;
    }
  j->cg[j->n_cg] = strdup (leaf);
  j->cg_up[j->n_cg] = strdup (up);
  if (j->cg[j->n_cg] == NULL || j->cg_up[j->n_cg] == NULL)
    {
      rmdir (leaf);
      free (j->cg[j->n_cg]);
      free (j->cg_up[j->n_cg]);
      j->cg[j->n_cg] = j->cg_up[j->n_cg] = NULL;
      note (j, "%s: out of memory", ctrl);
      return -1;
    }
  j->n_cg++;
  return 0;
}

static void
cg_drop_last (struct jail *j)
{
  j->n_cg--;
  cg_rmdir (j->cg[j->n_cg]);
  rmdir (j->cg_up[j->n_cg]);
  free (j->cg[j->n_cg]);
  free (j->cg_up[j->n_cg]);
  j->cg[j->n_cg] = j->cg_up[j->n_cg] = NULL;
}

/* Write the limits of `ctrl` into `leaf`. On failure a v1 leaf (this
 * controller's alone) is dropped; the v2 leaf, shared by the controllers,
 * stays with the limits that did work. */
static void
cg_limit (struct jail *j, const char *leaf, const char *ctrl, bool v2, const struct jail_opts *o)
{
  char v[64];
  int r = 0;

  if (strcmp (ctrl, "memory") == 0 && o->memory_max > 0)
    {
      snprintf (v, sizeof v, "%llu", (unsigned long long) o->memory_max);
      r = cg_write (leaf, v2 ? "memory.max" : "memory.limit_in_bytes", v);
      if (r == 0 && v2)
        cg_write (leaf, "memory.swap.max", "0"); /* absent without swap accounting */
    }
  else if (strcmp (ctrl, "pids") == 0)
    {
      snprintf (v, sizeof v, "%llu", (unsigned long long) j->pids_max);
      r = cg_write (leaf, "pids.max", v);
    }
  else if (strcmp (ctrl, "cpu") == 0 && o->cpus > 0)
    {
      if (v2)
        {
          snprintf (v, sizeof v, "%llu %u", (unsigned long long) o->cpus * CPU_PERIOD_US,
                    CPU_PERIOD_US);
          r = cg_write (leaf, "cpu.max", v);
        }
      else
        {
          snprintf (v, sizeof v, "%u", CPU_PERIOD_US);
          r = cg_write (leaf, "cpu.cfs_period_us", v);
          snprintf (v, sizeof v, "%llu", (unsigned long long) o->cpus * CPU_PERIOD_US);
          if (r == 0)
            r = cg_write (leaf, "cpu.cfs_quota_us", v);
        }
    }
  if (r < 0)
    {
      note (j, "%s: setting the limit in `%s`: %s", ctrl, leaf, strerror (-r));
      if (!v2)
        cg_drop_last (j);
    }
}

/* Best effort: every controller the host offers gets a cgroup; what is
 * missing is recorded in cg_note (doctor and the job record show it). */
void
jail__cg_setup (struct jail *j, const struct jail_opts *o)
{
  static const char *const ctrls[] = { "memory", "pids", "cpu" };
  const char *v2_ctrls[ARRAY_SIZE (ctrls)];
  size_t n_v2 = 0;
  char mnt[PATH_MAX], own[PATH_MAX], base[PATH_MAX * 2];

  for (size_t i = 0; i < ARRAY_SIZE (ctrls); i++)
    {
      if (cg_mount (mnt, sizeof mnt, ctrls[i]) == 0)
        {
          if (cg_own (own, sizeof own, ctrls[i]) < 0
              || snprintf_checked (base, sizeof base, "%s%s", mnt,
                                   strcmp (own, "/") == 0 ? "" : own)
                     < 0)
            {
              note (j, "%s: cannot find the runner's own cgroup", ctrls[i]);
              continue;
            }
          if (cg_make (j, base, ctrls[i], false) == 0)
            cg_limit (j, j->cg[j->n_cg - 1], ctrls[i], false, o);
        }
      else
        v2_ctrls[n_v2++] = ctrls[i];
    }
  if (n_v2 == 0)
    return;
  if (cg_mount (mnt, sizeof mnt, NULL) < 0 || cg_own (own, sizeof own, NULL) < 0
      || snprintf_checked (base, sizeof base, "%s%s", mnt, strcmp (own, "/") == 0 ? "" : own) < 0)
    {
      for (size_t i = 0; i < n_v2; i++)
        note (j, "%s: no cgroup v1 or v2 hierarchy has this controller", v2_ctrls[i]);
      return;
    }
  {
    size_t usable = 0;
    for (size_t i = 0; i < n_v2; i++)
      if (cg_has_controller (base, v2_ctrls[i]))
        v2_ctrls[usable++] = v2_ctrls[i];
      else
        note (j, "%s: not available to the runner's cgroup `%s` (cgroup v2)", v2_ctrls[i], base);
    n_v2 = usable;
  }
  if (n_v2 == 0 || cg_make (j, base, "cgroup v2", true) < 0)
    return;
  for (size_t i = 0; i < n_v2; i++)
    {
      const char *leaf = j->cg[j->n_cg - 1];
      /* the leaf has the controller only when the runner's cgroup could
       * delegate it: that fails (EBUSY) when the runner's cgroup has
       * processes of its own and is not the root */
      if (!cg_has_controller (leaf, v2_ctrls[i]))
        {
          note (j,
                "%s: `%s` cannot delegate it (a cgroup v2 with processes cannot have "
                "controllers for its children: run the runner in a leaf of a delegated "
                "subtree)",
                v2_ctrls[i], base);
          continue;
        }
      cg_limit (j, leaf, v2_ctrls[i], true, o);
    }
}

int
jail__cg_attach (struct jail *j, pid_t pid, bvm_error_t *err)
{
  char v[32];
  snprintf (v, sizeof v, "%d\n", (int) pid);
  for (size_t i = 0; i < j->n_cg; i++)
    {
      int r = cg_write (j->cg[i], "cgroup.procs", v);
      if (r < 0)
        return bvm_error (err, -r, "move the jail into the cgroup `%s`", j->cg[i]);
    }
  return 0;
}

void
jail__cg_remove (struct jail *j)
{
  while (j->n_cg > 0)
    cg_drop_last (j);
}

/* The job cgroup of `ctrl`, or NULL: v1 has a hierarchy per controller
 * (its mount point starts the path), v2 one leaf with the controller on. */
const char *
jail__cg_for (const struct jail *j, const char *ctrl)
{
  char m[PATH_MAX];
  bool v1 = cg_mount (m, sizeof m, ctrl) == 0;

  if (!v1 && cg_mount (m, sizeof m, NULL) < 0)
    return NULL;
  for (size_t k = 0; k < j->n_cg; k++)
    {
      size_t n = strlen (m);
      if (strncmp (j->cg[k], m, n) != 0 || j->cg[k][n] != '/')
        continue;
      if (v1 || cg_has_controller (j->cg[k], ctrl))
        return j->cg[k];
    }
  return NULL;
}
