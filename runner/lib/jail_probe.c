/* jail_probe.c - `buildvm doctor`'s view of the jail: each layer, and a
 * trial jail around /usr/bin/true on this host. See jail.h (jail_probe). */
#include "jail_int.h"
#include "proc.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct jail_layer *layer (struct jail_report *r, const char *name, bool active,
                                 const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

static struct jail_layer *
layer (struct jail_report *r, const char *name, bool active, const char *fmt, ...)
{
  struct jail_layer *l;
  va_list ap;

  if (r->n == JAIL_LAYERS_MAX)
    return NULL;
  l = &r->layers[r->n++];
  l->name = name;
  l->active = active;
  va_start (ap, fmt);
  vsnprintf (l->detail, sizeof l->detail, fmt, ap);
  va_end (ap);
  return l;
}

/* An entry of /etc/subuid or /etc/subgid that shares uids with the range,
 * into `who` ("" when none does). Such uids belong to someone's user
 * namespaces: a jailed VMM would share them. */
static void
subid_overlap (char *who, size_t size, const char *file, uint32_t first, uint32_t count)
{
  FILE *f = fopen (file, "re");
  char line[512];

  who[0] = '\0';
  if (f == NULL)
    return;
  while (fgets (line, sizeof line, f))
    {
      char *c1 = strchr (line, ':'), *c2 = c1 ? strchr (c1 + 1, ':') : NULL;
      uint64_t start, n;
      size_t len;

      if (c2 == NULL)
        continue;
      *c1 = *c2 = '\0';
      len = strlen (c2 + 1);
      while (len > 0 && (c2[len] == '\n' || c2[len] == ' '))
        c2[len--] = '\0';
      if (parse_u64 (c1 + 1, &start) < 0 || parse_u64 (c2 + 1, &n) < 0)
        continue;
      if (start < (uint64_t) first + count && (uint64_t) first < start + n)
        {
          snprintf (who, size, "%s has %.64s:%llu:%llu", file, line, (unsigned long long) start,
                    (unsigned long long) n);
          break;
        }
    }
  fclose (f);
}

int
jail_probe (struct jail_report *out, const struct jail_settings *settings)
{
  static const char *const ctrls[] = { "memory", "pids", "cpu" };
  static const char *const cg_layers[] = { "cgroup memory", "cgroup pids", "cgroup cpu" };
  struct jail_settings s;
  char why[256], who[256], tmp[] = "/tmp/buildvm-jail-probe.XXXXXX", root[64];
  struct jail_opts o = JAIL_OPTS_INIT;
  struct jail *j = NULL;
  bvm_error_t err = NULL;
  bool avail, trial_ok = false;
  char trial[320] = "";
  int inactive = 0;

  memset (out, 0, sizeof *out);
  jail__settings_resolve (&s, settings);
  avail = jail_available (why, sizeof why);
  if (s.mode == JAIL_MODE_OFF)
    layer (out, "jail", false, "disabled (`jail.enabled` is `off`): VMMs run unjailed");
  else if (!avail)
    layer (out, "jail", false, "%s; %s", why,
           s.mode == JAIL_MODE_ON ? "`jail.enabled` is `on`, so every job fails"
                                  : "`jail.enabled` is `auto`, so VMMs run unjailed");
  else
    layer (out, "jail", true, "every VMM is jailed (`jail.enabled` is `%s`)",
           jail_mode_name (s.mode));

  subid_overlap (who, sizeof who, "/etc/subuid", s.uid_first, s.uid_count);
  if (who[0] == '\0')
    subid_overlap (who, sizeof who, "/etc/subgid", s.uid_first, s.uid_count);
  if (who[0] != '\0')
    layer (out, "uid range", false,
           "%u..%u overlaps user namespace ids (%s): choose another "
           "`jail.uid_range`",
           s.uid_first, s.uid_first + (s.uid_count - 1), who);
  else
    layer (out, "uid range", avail, "%u..%u (%u uids), one per live job, locks in `%s`",
           s.uid_first, s.uid_first + (s.uid_count - 1), s.uid_count, s.lock_dir);

  if (!avail)
    {
      static const char *const names[] = { "namespaces",   "root",    "capabilities",
                                           "no_new_privs", "rlimits", "descriptors",
                                           "seccomp",      "cgroups" };
      for (size_t i = 0; i < ARRAY_SIZE (names); i++)
        layer (out, names[i], false, "needs root");
      layer (out, "qemu -sandbox", true,
             "QEMU's own seccomp filter: on for every VM (obsolete, elevateprivileges, spawn, "
             "resourcecontrol denied)");
      goto count;
    }

  /* a real jail around /usr/bin/true: the whole chain, on this host */
  if (mkdtemp (tmp) == NULL)
    snprintf (trial, sizeof trial, "mkdtemp: %s", strerror (errno));
  else
    {
      const char *argv[] = { "true", NULL };
      struct proc_opts fds = PROC_OPTS_INIT;
      pid_t pid;
      int st;

      snprintf (root, sizeof root, "%s/root", tmp);
      o.name = "doctor-probe";
      o.dir = root;
      o.settings = &s;
      o.memory_max = 256 * MIB;
      o.cpus = 1;
      if (jail_prepare (&j, &o, &err) < 0 || jail_spawn (&pid, j, argv, &fds, &err) < 0)
        snprintf (trial, sizeof trial, "%s", bvm_error_msg (&err));
      else
        {
          while (waitpid (pid, &st, 0) < 0 && errno == EINTR)
            ;
          trial_ok = WIFEXITED (st) && WEXITSTATUS (st) == 0;
          if (!trial_ok)
            snprintf (trial, sizeof trial, "the trial jail's `true` %s",
                      proc_status_str (why, sizeof why, st));
        }
      bvm_error_free (&err);
    }

  if (trial_ok)
    {
      layer (out, "namespaces", true,
             "mount, pid, ipc, uts, net (loopback only), cgroup where the kernel has it");
      layer (out, "root", true,
             "pivot_root into a tmpfs: /usr read-only, /vm (the job's files), /dev (null, zero, "
             "urandom, kvm when used), /proc (subset=pid)");
      layer (out, "capabilities", true,
             "all dropped: bounding, ambient, inheritable, permitted, effective");
      layer (out, "no_new_privs", true, "set before exec");
      layer (out, "rlimits", true, "nofile %d, nproc %d, fsize largest disk + 1 MiB, core 0",
             JAIL_NOFILE, JAIL_NPROC);
      layer (out, "descriptors", true, "stdin, stdout, stderr only; environment PATH only");
      layer (
          out, "seccomp", true,
          "%u system calls refused with EPERM, namespace flags of clone refused, clone3 ENOSYS, "
          "other ABIs killed",
          j->n_denied);
    }
  else
    {
      static const char *const names[] = { "namespaces",   "root",    "capabilities",
                                           "no_new_privs", "rlimits", "descriptors",
                                           "seccomp" };
      for (size_t i = 0; i < ARRAY_SIZE (names); i++)
        layer (out, names[i], false, "the trial jail failed: %s", trial);
    }
  layer (out, "qemu -sandbox", true,
         "QEMU's own seccomp filter: on for every VM (obsolete, elevateprivileges, spawn, "
         "resourcecontrol denied)");
  for (size_t i = 0; i < ARRAY_SIZE (ctrls); i++)
    {
      const char *dir = j ? jail__cg_for (j, ctrls[i]) : NULL;
      if (dir != NULL)
        layer (out, cg_layers[i], true, "a cgroup per job, such as `%s`", dir);
      else
        layer (out, cg_layers[i], false, "%s",
               j == NULL       ? trial
               : j->cg_note[0] ? j->cg_note
                               : "not created");
    }
  if (trial_ok)
    layer (out, "trial", true, "a jail ran `true` as uid %u and was removed", (unsigned) j->uid);
  else
    layer (out, "trial", false, "%s", trial);
  jail_destroy (j);
  rmdir (tmp);

count:
  for (size_t i = 0; i < out->n; i++)
    inactive += !out->layers[i].active;
  return inactive;
}
