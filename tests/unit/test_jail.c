/* test_jail.c - the jail around the VMM: uids, and what a jailed process is
 *
 * The uid allocation tests need no privileges. The others build real jails
 * (root only; skipped otherwise, saying so) around small programs from /usr
 * and read back from /proc/PID/... - from outside, as the kernel sees the
 * process - and from inside (the program prints what it sees) that every
 * promise of jail.h holds. Real QEMU runs in tests/integration/t_jail.sh.
 */
#include "support.h"

#include "jail.h"
#include "proc.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* a range of its own, far from the default: tests never take a real job's uid */
#define T_UID_FIRST 2100000000u

static char *tmp;
static char locks[600];

static int
setup (void **state)
{
  (void) state;
  tmp = t_tmpdir ();
  snprintf (locks, sizeof locks, "%s/locks", tmp);
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  t_tmpdir_free (tmp);
  tmp = NULL;
  return 0;
}

static bool
need_root (void)
{
  char why[256];
  if (jail_available (why, sizeof why))
    return true;
  print_message ("SKIP: %s\n", why);
  return false;
}

static struct jail *
prepare (const char *name, uint32_t count, bvm_error_t *err)
{
  struct jail_settings s = { JAIL_MODE_ON, T_UID_FIRST, count, locks };
  struct jail_opts o = JAIL_OPTS_INIT;
  struct jail *j = NULL;
  char dir[700];

  snprintf (dir, sizeof dir, "%s/%s", tmp, name);
  o.name = name;
  o.dir = dir;
  o.settings = &s;
  o.memory_max = 256u << 20;
  o.cpus = 1;
  if (jail_prepare (&j, &o, err) < 0)
    return NULL;
  return j;
}

static bool exists (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static bool
exists (const char *fmt, ...)
{
  char p[1024];
  struct stat st;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (p, sizeof p, fmt, ap);
  va_end (ap);
  return lstat (p, &st) == 0;
}

/* --- uids ------------------------------------------------------------------------ */

static void
test_uid_allocation (void **state)
{
  struct jail *a, *b, *c;
  bvm_error_t err = NULL;
  uid_t ua;
  (void) state;

  a = prepare ("a", 2, &err);
  assert_non_null (a);
  b = prepare ("b", 2, &err);
  assert_non_null (b);
  /* two holders never share a uid; uid and gid are the same number */
  assert_int_not_equal (jail_uid (a), jail_uid (b));
  assert_int_equal (jail_uid (a), jail_gid (a));
  assert_true (jail_uid (a) >= T_UID_FIRST && jail_uid (a) < T_UID_FIRST + 2);
  assert_true (jail_uid (b) >= T_UID_FIRST && jail_uid (b) < T_UID_FIRST + 2);
  assert_true (exists ("%s/%u", locks, (unsigned) jail_uid (a)));
  /* the range is exhausted */
  assert_null (prepare ("c", 2, &err));
  assert_non_null (strstr (bvm_error_msg (&err), "all 2 jail uids"));
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  bvm_error_free (&err);
  /* released: the lock file and the jail's directory are gone, the uid is free */
  ua = jail_uid (a);
  jail_destroy (a);
  assert_false (exists ("%s/%u", locks, (unsigned) ua));
  assert_false (exists ("%s/a", tmp));
  c = prepare ("c", 2, &err);
  assert_non_null (c);
  assert_int_equal (jail_uid (c), ua);
  jail_destroy (b);
  jail_destroy (c);
}

static void
test_uid_across_processes (void **state)
{
  int go[2], ready[2];
  bvm_error_t err = NULL;
  struct jail *j;
  pid_t pid;
  char ch;
  int st;
  (void) state;

  /* another process holds the only uid: we cannot have it while it lives */
  assert_int_equal (pipe (go), 0);
  assert_int_equal (pipe (ready), 0);
  pid = fork ();
  if (pid == 0)
    {
      bvm_error_t e = NULL;
      struct jail *mine = prepare ("holder", 1, &e);
      if (write (ready[1], mine ? "y" : "n", 1) != 1 || read (go[0], &ch, 1) < 0)
        _exit (2);
      _exit (0); /* dies holding it, without jail_destroy */
    }
  assert_int_equal (read (ready[0], &ch, 1), 1);
  assert_int_equal (ch, 'y');
  assert_null (prepare ("x", 1, &err));
  assert_non_null (strstr (bvm_error_msg (&err), "held by live jobs"));
  bvm_error_free (&err);
  /* its holder died without releasing: the lock is free again (the stale
   * file, and any stale cgroup of that uid, are taken over) */
  assert_int_equal (write (go[1], "x", 1), 1);
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);
  assert_true (exists ("%s/%u", locks, T_UID_FIRST));
  j = prepare ("y", 1, &err);
  if (j == NULL)
    fail_msg ("%s", bvm_error_msg (&err));
  assert_int_equal (jail_uid (j), T_UID_FIRST);
  jail_destroy (j);
  assert_false (exists ("%s/%u", locks, T_UID_FIRST));
  close (go[0]), close (go[1]), close (ready[0]), close (ready[1]);
}

/* A runner killed with its jail leaves its cgroups; the next jail of the
 * same uid range removes those whose uid lock is free. */
static void
test_stale_cgroups (void **state)
{
  bvm_error_t err = NULL;
  struct jail *p0, *p1;
  char up[700], stale[3][760];
  const char *const *cg;
  uid_t u0, u1;
  (void) state;

  if (!need_root ())
    skip ();
  p0 = prepare ("p0", 3, &err);
  assert_non_null (p0);
  cg = jail_cgroups (p0);
  if (cg[0] == NULL)
    {
      print_message ("SKIP: no cgroups here: %s\n", jail_cgroup_note (p0));
      jail_destroy (p0);
      skip ();
    }
  u0 = jail_uid (p0);
  snprintf (up, sizeof up, "%s", cg[0]);
  *strrchr (up, '/') = '\0';
  /* leftovers of dead runners for the two other uids of the range */
  for (unsigned i = 0; i < 3; i++)
    {
      snprintf (stale[i], sizeof stale[i], "%s/%u", up, T_UID_FIRST + i);
      if (T_UID_FIRST + i != u0)
        assert_int_equal (mkdir (stale[i], 0755), 0);
    }
  p1 = prepare ("p1", 3, &err);
  assert_non_null (p1);
  u1 = jail_uid (p1);
  for (unsigned i = 0; i < 3; i++)
    {
      uid_t u = T_UID_FIRST + i;
      /* ours (p0's, p1's) exist; the third was reaped */
      if (exists ("%s", stale[i]) != (u == u0 || u == u1))
        fail_msg ("cgroup `%s`: expected %s", stale[i], u == u0 || u == u1 ? "present" : "reaped");
    }
  jail_destroy (p1);
  jail_destroy (p0);
  for (unsigned i = 0; i < 3; i++)
    assert_false (exists ("%s", stale[i]));
  assert_false (exists ("%s/%u", locks, T_UID_FIRST + 0));
}

static void
test_decide (void **state)
{
  struct jail_settings s = { 0 };
  bvm_error_t err = NULL;
  bool use = true;
  pid_t pid;
  int st;
  (void) state;

  s.mode = JAIL_MODE_OFF;
  assert_ok (jail_decide (&use, &s, &err), &err);
  assert_false (use);
  if (geteuid () == 0)
    {
      assert_ok (jail_decide (&use, NULL, &err), &err);
      assert_true (use);
    }
  /* without root: auto runs unjailed, on refuses */
  pid = fork ();
  if (pid == 0)
    {
      bvm_error_t e = NULL;
      bool u = true;
      if (geteuid () == 0 && setresuid (65534, 65534, 65534) < 0)
        _exit (10);
      s.mode = JAIL_MODE_AUTO;
      if (jail_decide (&u, &s, &e) < 0 || u)
        _exit (11);
      s.mode = JAIL_MODE_ON;
      if (jail_decide (&u, &s, &e) >= 0 || strstr (bvm_error_msg (&e), "not root") == NULL)
        _exit (12);
      _exit (0);
    }
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st));
  assert_int_equal (WEXITSTATUS (st), 0);
  {
    enum jail_mode m;
    assert_int_equal (jail_mode_parse (&m, "on"), 0);
    assert_int_equal (m, JAIL_MODE_ON);
    assert_int_equal (jail_mode_parse (&m, "ON"), -1);
    assert_string_equal (jail_mode_name (JAIL_MODE_AUTO), "auto");
  }
}

/* --- a jailed process, inspected ------------------------------------------------ */

/* Read from fd until `marker` shows up (or EOF / 20 s); the text, malloc'd. */
static char *
read_until (int fd, const char *marker)
{
  size_t cap = 1 << 16, len = 0;
  char *s = calloc (1, cap + 1);
  int64_t deadline = now_ms () + 20000;

  while (strstr (s, marker) == NULL && now_ms () < deadline && len < cap)
    {
      struct pollfd p = { fd, POLLIN, 0 };
      ssize_t n;
      if (poll (&p, 1, 200) <= 0)
        continue;
      n = read (fd, s + len, cap - len);
      if (n <= 0)
        break;
      len += (size_t) n;
      s[len] = '\0';
    }
  return s;
}

static char *
status_field (pid_t pid, const char *key)
{
  char path[64], line[512];
  FILE *f;
  size_t n = strlen (key);

  snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
  f = fopen (path, "re");
  assert_non_null (f);
  while (fgets (line, sizeof line, f))
    if (strncmp (line, key, n) == 0 && line[n] == ':')
      {
        char *v = line + n + 1;
        size_t l;
        fclose (f);
        while (*v == '\t' || *v == ' ')
          v++;
        l = strlen (v);
        while (l > 0 && (v[l - 1] == '\n' || v[l - 1] == ' ' || v[l - 1] == '\t'))
          v[--l] = '\0';
        return strdup (v);
      }
  fclose (f);
  fail_msg ("no %s in %s", key, path);
  return NULL;
}

static void
assert_field (pid_t pid, const char *key, const char *want)
{
  char *v = status_field (pid, key);
  if (strcmp (v, want) != 0)
    fail_msg ("/proc/%d/status %s: expected [%s], got [%s]", (int) pid, key, want, v);
  free (v);
}

/* The names in a directory, sorted, space-separated. */
static char *listing (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static char *
listing (const char *fmt, ...)
{
  char p[1024], cmd[1200];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (p, sizeof p, fmt, ap);
  va_end (ap);
  snprintf (cmd, sizeof cmd, "ls -A '%s' | sort | tr '\\n' ' ' | sed 's/ $//'", p);
  return t_sh_out ("%s", cmd);
}

static char *
host_top_links (void)
{
  /* what the jail mirrors of the host's top level: /bin, /lib... */
  return t_sh_out ("for d in bin sbin lib lib32 lib64 libx32; do [ -e /$d ] || [ -L /$d ] && "
                   "echo $d; done | tr '\\n' ' '");
}

/* Inside the jail: what the program sees, and what the kernel lets it do. */
static const char inside[]
    = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G);"
      "echo host=$(uname -n);"
      "echo root=$(ls -A / | sort | tr '\\n' ' ');"
      "echo vm=$(ls -A /vm | sort | tr '\\n' ' ');"
      "echo proc=$(ls /proc | grep -v '^[0-9]' | sort | tr '\\n' ' ');"
      "echo pids=$(ls /proc | grep '^[0-9]' | wc -l);"
      "echo pid1=$(cat /proc/1/comm);"
      "for p in /etc /tmp /run /home /sys /root /var \"$OTHER\"; do "
      "  [ -e \"$p\" ] && echo visible=$p; done;"
      "cat /vm/input.img; echo;"
      "(echo x > /vm/input.img) 2>/dev/null || echo ro-input-refused;"
      "(echo x > /vm/shared.img) 2>/dev/null || echo ro-shared-refused;"
      "(: > /newfile) 2>/dev/null || echo root-readonly;"
      "(echo ok > /vm/output.img) && echo rw-output-ok;"
      "echo env=$(env | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_=' | sort | tr '\\n' ' ');"
      "python3 -c '\n"
      "import ctypes, threading\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"
      "def sc(*a):\n"
      "    r = libc.syscall(*[ctypes.c_long(x) for x in a])\n"
      "    return 0 if r >= 0 else ctypes.get_errno()\n"
      "print(\"clone_newuser\", sc(56, 0x10000000 | 17, 0, 0, 0, 0))\n"
      "print(\"clone_newnet\", sc(56, 0x40000000 | 17, 0, 0, 0, 0))\n"
      "print(\"clone3\", sc(435, 0, 0))\n"
      "print(\"unshare\", sc(272, 0x10000000))\n"
      "print(\"setns\", sc(308, 0, 0))\n"
      "print(\"ptrace\", sc(101, 0, 0, 0, 0))\n"
      "print(\"mount\", sc(165, 0, 0, 0, 0, 0))\n"
      "print(\"bpf\", sc(321, 0, 0, 0))\n"
      "print(\"keyctl\", sc(250, 0, 0, 0, 0, 0))\n"
      "print(\"io_uring_setup\", sc(425, 1, 0))\n"
      "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
      "print(\"thread ok\")\n"
      "';"
      "echo READY; exec sleep 60";

static void
test_spawn_inspect (void **state)
{
  char d[700], secret[800], other[800], ro[800], rw[800], shared[800], p[1024];
  struct proc_opts fds = PROC_OPTS_INIT;
  bvm_error_t err = NULL;
  struct jail *j;
  const char *argv[] = { "sh", "-c", inside, NULL };
  char *out, *v, *top, *want;
  const char *const *cg;
  int pipefd[2], st;
  uid_t uid;
  pid_t pid;
  (void) state;

  if (!need_root ())
    skip ();
  snprintf (d, sizeof d, "%s/work", tmp);
  snprintf (secret, sizeof secret, "%s/runner-secret", d);
  snprintf (other, sizeof other, "%s/other-job/output.img", d);
  snprintf (ro, sizeof ro, "%s/input.img", d);
  snprintf (rw, sizeof rw, "%s/output.img", d);
  snprintf (shared, sizeof shared, "%s/shared.img", d);
  t_write (secret, "runner secret");
  t_write (other, "another job's disk");
  t_write (ro, "the job's input");
  t_write (shared, "a shared file");
  chmod (secret, 0600);
  chmod (ro, 0600);
  chmod (shared, 0644);
  assert_int_equal (t_sh ("truncate -s 3M '%s' && chmod 600 '%s'", rw, rw), 0);

  j = prepare ("inspect", 8, &err);
  if (j == NULL)
    fail_msg ("%s", bvm_error_msg (&err));
  uid = jail_uid (j);
  assert_ok (jail_expose (j, shared, "shared.img", JAIL_RO, &err), &err);
  assert_ok (jail_expose (j, ro, "input.img", JAIL_RO | JAIL_CHOWN, &err), &err);
  assert_ok (jail_expose (j, rw, "output.img", JAIL_RW | JAIL_CHOWN, &err), &err);
  /* a device of its own, owned by the job (as /dev/kvm is) */
  assert_ok (jail_expose (j, "/dev/zero", "zero2", JAIL_RW | JAIL_CHOWN, &err), &err);
  assert_string_equal (jail_path (j, ro), "/vm/input.img");
  assert_string_equal (jail_path (j, "/dev/zero"), "/dev/zero2");
  assert_null (jail_path (j, secret));
  /* refused: a root-only file that is not the job's, a name twice, a
   * host file twice, a bad name, a directory */
  assert_fails_with (jail_expose (j, secret, "secret", JAIL_RO, &err), &err,
                     "is not readable by others");
  assert_fails_with (jail_expose (j, secret, "s2", JAIL_RW, &err), &err,
                     "is not readable and writable by others");
  assert_fails_with (jail_expose (j, secret, "input.img", JAIL_RO | JAIL_CHOWN, &err), &err,
                     "already in the jail");
  assert_fails_with (jail_expose (j, shared, "again", JAIL_RO, &err), &err, "already in the jail");
  assert_fails_with (jail_expose (j, secret, "../x", JAIL_RO, &err), &err,
                     "is not [A-Za-z0-9._-]");
  assert_fails_with (jail_expose (j, d, "dir", JAIL_RO, &err), &err, "neither a regular file");
  /* the job's own files now belong to its uid, with tight modes */
  {
    struct stat s1, s2;
    assert_int_equal (stat (ro, &s1), 0);
    assert_int_equal (stat (rw, &s2), 0);
    assert_int_equal (s1.st_uid, uid);
    assert_int_equal (s1.st_mode & 07777, 0400);
    assert_int_equal (s2.st_uid, uid);
    assert_int_equal (s2.st_mode & 07777, 0600);
  }

  assert_int_equal (pipe2 (pipefd, O_CLOEXEC), 0);
  fds.stdout_fd = pipefd[1];
  fds.stderr_fd = pipefd[1];
  setenv ("OTHER", other, 1); /* the runner's environment must not reach the jail */
  assert_ok (jail_spawn (&pid, j, argv, &fds, &err), &err);
  unsetenv ("OTHER");
  close (pipefd[1]);
  out = read_until (pipefd[0], "READY");
  if (strstr (out, "READY") == NULL)
    fail_msg ("the jailed program did not get ready:\n%s", out);

  /* from inside */
  snprintf (p, sizeof p, "uid=%u gid=%u groups=%u\n", (unsigned) uid, (unsigned) uid,
            (unsigned) uid);
  if (strstr (out, p) == NULL)
    fail_msg ("expected [%s] in:\n%s", p, out);
  /* the root: the host's top-level links (or read-only dirs) into /usr, and
   * the jail's own dirs, sorted as the jail's `ls | sort` sorts them */
  top = host_top_links ();
  want = t_sh_out ("printf '%%s\\n' %s dev proc usr vm | sort | tr '\\n' ' ' | sed 's/ $//'", top);
  snprintf (p, sizeof p, "root=%s\n", want);
  if (strstr (out, p) == NULL)
    fail_msg ("expected [%s] in:\n%s", p, out);
  free (want);
  free (top);
  assert_non_null (strstr (out, "vm=input.img output.img shared.img\n"));
  assert_non_null (strstr (out, "host=buildvm\n"));
  /* procfs of its own PID namespace, process directories only */
  assert_non_null (strstr (out, "proc=self thread-self\n"));
  {
    /* the shell is PID 1 of the namespace (the runner's pids are not there) */
    char *sh = t_sh_out ("basename \"$(readlink -f /bin/sh)\"");
    snprintf (p, sizeof p, "pid1=%.32s\n", sh);
    assert_non_null (strstr (out, p));
    free (sh);
  }
  assert_null (strstr (out, "visible="));
  assert_null (strstr (out, "another job"));
  assert_non_null (strstr (out, "the job's input\n"));
  assert_non_null (strstr (out, "ro-input-refused\n"));
  assert_non_null (strstr (out, "ro-shared-refused\n"));
  assert_non_null (strstr (out, "root-readonly\n"));
  assert_non_null (strstr (out, "rw-output-ok\n"));
  assert_non_null (strstr (out, "env=PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"));
  /* seccomp: namespaces, ptrace, mount, bpf, keys, io_uring refused (EPERM),
   * clone3 ENOSYS so that threads fall back to clone, which still works */
  assert_non_null (strstr (out, "clone_newuser 1\n"));
  assert_non_null (strstr (out, "clone_newnet 1\n"));
  assert_non_null (strstr (out, "clone3 38\n"));
  assert_non_null (strstr (out, "unshare 1\n"));
  assert_non_null (strstr (out, "setns 1\n"));
  assert_non_null (strstr (out, "ptrace 1\n"));
  assert_non_null (strstr (out, "mount 1\n"));
  assert_non_null (strstr (out, "bpf 1\n"));
  assert_non_null (strstr (out, "keyctl 1\n"));
  assert_non_null (strstr (out, "io_uring_setup 1\n"));
  assert_non_null (strstr (out, "thread ok\n"));

  /* from outside: /proc/PID of the jailed `sleep`, once the shell has
   * exec'd it (READY comes just before) */
  for (int i = 0; i < 500; i++)
    {
      v = status_field (pid, "Name");
      if (strcmp (v, "sleep") == 0)
        {
          free (v);
          break;
        }
      free (v);
      usleep (10000);
    }
  snprintf (p, sizeof p, "%u\t%u\t%u\t%u", (unsigned) uid, (unsigned) uid, (unsigned) uid,
            (unsigned) uid);
  assert_field (pid, "Uid", p);
  assert_field (pid, "Gid", p);
  assert_field (pid, "Groups", "");
  assert_field (pid, "NoNewPrivs", "1");
  assert_field (pid, "Seccomp", "2");
  assert_field (pid, "Seccomp_filters", "1");
  assert_field (pid, "CapInh", "0000000000000000");
  assert_field (pid, "CapPrm", "0000000000000000");
  assert_field (pid, "CapEff", "0000000000000000");
  assert_field (pid, "CapBnd", "0000000000000000");
  assert_field (pid, "CapAmb", "0000000000000000");
  assert_field (pid, "NSpid", (snprintf (p, sizeof p, "%d\t1", (int) pid), p));
  v = status_field (pid, "Name");
  assert_string_equal (v, "sleep");
  free (v);
  /* namespaces: new mount, pid, ipc, uts, net, cgroup; the same user ns */
  {
    static const char *const fresh[] = { "mnt", "pid", "ipc", "uts", "net", "cgroup" };
    char a[128], b[128], pa[64], pb[64];
    for (size_t i = 0; i < ARRAY_SIZE (fresh) + 1; i++)
      {
        const char *ns = i < ARRAY_SIZE (fresh) ? fresh[i] : "user";
        ssize_t na, nb;
        snprintf (pa, sizeof pa, "/proc/%d/ns/%s", (int) pid, ns);
        snprintf (pb, sizeof pb, "/proc/self/ns/%s", ns);
        na = readlink (pa, a, sizeof a - 1);
        nb = readlink (pb, b, sizeof b - 1);
        assert_true (na > 0 && nb > 0);
        a[na] = b[nb] = '\0';
        if ((strcmp (a, b) != 0) != (i < ARRAY_SIZE (fresh)))
          fail_msg ("namespace %s: jail %s, runner %s", ns, a, b);
      }
  }
  /* the network namespace has the loopback interface only */
  v = t_sh_out ("nsenter -t %d -n ip -o link | awk -F': ' '{print $2}' | tr '\\n' ' '", (int) pid);
  assert_string_equal (v, "lo ");
  free (v);
  /* rlimits: RLIMIT_FSIZE is the writable disk (3 MiB) + 1 MiB */
  v = t_sh_out ("grep -E '^Max (open files|processes|file size|core file size)' /proc/%d/limits "
                "| awk '{print $(NF-2), $(NF-1)}' | tr '\\n' ' '",
                (int) pid);
  /* the order in /proc/PID/limits: file size, core, processes, open files */
  snprintf (p, sizeof p, "%d %d 0 0 %d %d %d %d ", 4 << 20, 4 << 20, JAIL_NPROC, JAIL_NPROC,
            JAIL_NOFILE, JAIL_NOFILE);
  assert_string_equal (v, p);
  free (v);
  /* descriptors: exactly stdin, stdout, stderr */
  v = listing ("/proc/%d/fd", (int) pid);
  assert_string_equal (v, "0 1 2");
  free (v);
  /* its root: only the plan, and the job's files */
  v = listing ("/proc/%d/root/vm", (int) pid);
  assert_string_equal (v, "input.img output.img shared.img");
  free (v);
  v = listing ("/proc/%d/root/dev", (int) pid);
  assert_string_equal (v, "fd null stderr stdin stdout urandom zero zero2");
  free (v);
  {
    struct stat sb;
    snprintf (p, sizeof p, "/proc/%d/root/dev/zero2", (int) pid);
    assert_int_equal (stat (p, &sb), 0);
    assert_true (S_ISCHR (sb.st_mode));
    assert_int_equal (sb.st_uid, uid);
    assert_int_equal (sb.st_mode & 07777, 0600);
  }
  assert_false (exists ("/proc/%d/root%s", (int) pid, tmp));
  assert_false (exists ("/proc/%d/root%s", (int) pid, secret));
  assert_false (exists ("/proc/%d/root/etc", (int) pid));
  assert_false (exists ("/proc/%d/root/run/buildvm", (int) pid));
  /* cgroups: the process is in each of the job's cgroups */
  cg = jail_cgroups (j);
  if (cg[0] == NULL)
    print_message ("note: no cgroups on this host: %s\n", jail_cgroup_note (j));
  for (size_t i = 0; cg[i] != NULL; i++)
    {
      char *procs = t_sh_out ("cat '%s/cgroup.procs'", cg[i]);
      snprintf (p, sizeof p, "%d", (int) pid);
      if (strcmp (procs, p) != 0)
        fail_msg ("%s/cgroup.procs: expected [%s], got [%s]", cg[i], p, procs);
      free (procs);
      if (strstr (cg[i], "/memory/") != NULL)
        {
          v = t_sh_out ("cat '%s/memory.limit_in_bytes'", cg[i]);
          assert_string_equal (v, "268435456");
          free (v);
        }
      if (strstr (cg[i], "/pids/") != NULL)
        {
          v = t_sh_out ("cat '%s/pids.max'", cg[i]);
          snprintf (p, sizeof p, "%d", JAIL_NPROC);
          assert_string_equal (v, p);
          free (v);
        }
    }

  /* killing the host pid ends it; then everything of the jail goes */
  {
    char *dirs[JAIL_LAYERS_MAX] = { 0 };
    size_t n = 0;
    for (; cg[n] != NULL; n++)
      dirs[n] = strdup (cg[n]);
    kill (pid, SIGKILL);
    assert_int_equal (waitpid (pid, &st, 0), pid);
    assert_true (WIFSIGNALED (st) && WTERMSIG (st) == SIGKILL);
    jail_destroy (j);
    for (size_t i = 0; i < n; i++)
      {
        if (exists ("%s", dirs[i]))
          fail_msg ("cgroup `%s` left behind", dirs[i]);
        free (dirs[i]);
      }
  }
  assert_false (exists ("%s/inspect", tmp));
  assert_false (exists ("%s/%u", locks, (unsigned) uid));
  free (out);
  close (pipefd[0]);
}

/* Two jails at once: neither sees the other's files; different uids. */
static void
test_two_jobs (void **state)
{
  char fa[800], fb[800];
  const char *argv[] = { "sh", "-c", "ls -A /vm; echo READY; exec sleep 60", NULL };
  struct proc_opts fds = PROC_OPTS_INIT;
  bvm_error_t err = NULL;
  struct jail *a, *b;
  pid_t pa, pb;
  int pipefd[2];
  char *out;
  (void) state;

  if (!need_root ())
    skip ();
  snprintf (fa, sizeof fa, "%s/a.img", tmp);
  snprintf (fb, sizeof fb, "%s/b.img", tmp);
  t_write (fa, "a");
  t_write (fb, "b");
  a = prepare ("job-a", 8, &err);
  b = prepare ("job-b", 8, &err);
  assert_non_null (a);
  assert_non_null (b);
  assert_int_not_equal (jail_uid (a), jail_uid (b));
  assert_ok (jail_expose (a, fa, "disk-a.img", JAIL_RW | JAIL_CHOWN, &err), &err);
  assert_ok (jail_expose (b, fb, "disk-b.img", JAIL_RW | JAIL_CHOWN, &err), &err);
  assert_int_equal (pipe2 (pipefd, O_CLOEXEC), 0);
  fds.stdout_fd = pipefd[1];
  assert_ok (jail_spawn (&pa, a, argv, &fds, &err), &err);
  out = read_until (pipefd[0], "READY");
  assert_string_equal (out, "disk-a.img\nREADY\n");
  free (out);
  assert_ok (jail_spawn (&pb, b, argv, &fds, &err), &err);
  out = read_until (pipefd[0], "READY");
  assert_string_equal (out, "disk-b.img\nREADY\n");
  free (out);
  close (pipefd[1]);
  /* each in its own PID namespace: a cannot see b's process at all */
  out = t_sh_out ("ls /proc/%d/root/proc | grep -c '^[0-9]'", (int) pa);
  assert_string_equal (out, "1");
  free (out);
  assert_false (exists ("/proc/%d/root/vm/disk-b.img", (int) pa));
  assert_false (exists ("/proc/%d/root/vm/disk-a.img", (int) pb));
  /* one spawn per jail */
  assert_fails_with (jail_spawn (&pa, a, argv, &fds, &err), &err, "already used");
  kill (pa, SIGKILL);
  kill (pb, SIGKILL);
  waitpid (pa, NULL, 0);
  waitpid (pb, NULL, 0);
  jail_destroy (a);
  jail_destroy (b);
  close (pipefd[0]);
}

static void
test_spawn_errors (void **state)
{
  const char *missing[] = { "no-such-vmm", NULL };
  const char *sleeper[] = { "sleep", "60", NULL };
  struct proc_opts fds = PROC_OPTS_INIT;
  bvm_error_t err = NULL;
  char f[800], script[800];
  struct jail *j;
  pid_t pid;
  int st;
  (void) state;

  if (!need_root ())
    skip ();
  j = prepare ("errors", 8, &err);
  assert_non_null (j);
  assert_fails_with (jail_spawn (&pid, j, missing, &fds, &err), &err, "no-such-vmm");
  /* a file that vanishes after it was exposed: the child's step is named */
  snprintf (f, sizeof f, "%s/vanishing.img", tmp);
  t_write (f, "x");
  assert_ok (jail_expose (j, f, "vanishing.img", JAIL_RW | JAIL_CHOWN, &err), &err);
  unlink (f);
  assert_fails_with (jail_spawn (&pid, j, sleeper, &fds, &err), &err,
                     "bind mount `/vm/vanishing.img`");
  jail_destroy (j);

  j = prepare ("hook", 8, &err);
  assert_non_null (j);
  fds.pre_exec = (int (*) (void *)) abort;
  assert_fails_with (jail_spawn (&pid, j, sleeper, &fds, &err), &err, "pre_exec");
  fds.pre_exec = NULL;
  jail_destroy (j);

  /* a program outside /usr (a stand-in VMM script) is bound at /vmm/NAME */
  j = prepare ("script", 8, &err);
  assert_non_null (j);
  snprintf (script, sizeof script, "%s/fake-vmm", tmp);
  t_write (script, "#!/bin/sh\necho \"$0 as $(id -u)\"\nexit 7\n");
  chmod (script, 0755);
  {
    const char *argv[] = { script, NULL };
    int p[2];
    char *out;
    assert_int_equal (pipe2 (p, O_CLOEXEC), 0);
    fds.stdout_fd = p[1];
    assert_ok (jail_spawn (&pid, j, argv, &fds, &err), &err);
    close (p[1]);
    out = read_until (p[0], "\n");
    assert_int_equal (waitpid (pid, &st, 0), pid);
    assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 7);
    {
      char want[128];
      snprintf (want, sizeof want, "/vmm/fake-vmm as %u\n", (unsigned) jail_uid (j));
      assert_string_equal (out, want);
    }
    free (out);
    close (p[0]);
    fds.stdout_fd = -1;
  }
  jail_destroy (j);
}

/* The jailed process dies with the runner: PR_SET_PDEATHSIG survives the
 * uid change because the jail sets it again after it. */
static void
test_dies_with_runner (void **state)
{
  int p[2];
  pid_t runner, vmm = 0;
  int st;
  (void) state;

  if (!need_root ())
    skip ();
  assert_int_equal (pipe (p), 0);
  runner = fork ();
  if (runner == 0)
    {
      const char *argv[] = { "sleep", "60", NULL };
      struct proc_opts fds = PROC_OPTS_INIT;
      bvm_error_t e = NULL;
      struct jail *j = prepare ("orphan", 8, &e);
      pid_t pid = -1;
      if (j == NULL || jail_spawn (&pid, j, argv, &fds, &e) < 0)
        pid = -1;
      if (write (p[1], &pid, sizeof pid) != sizeof pid)
        _exit (3);
      pause ();
      _exit (0);
    }
  assert_int_equal (read (p[0], &vmm, sizeof vmm), (ssize_t) sizeof vmm);
  assert_true (vmm > 0);
  assert_int_equal (kill (vmm, 0), 0);
  kill (runner, SIGKILL);
  assert_int_equal (waitpid (runner, &st, 0), runner);
  /* gone (or a zombie waiting for init to reap it) within a few seconds */
  for (int i = 0; i < 300; i++)
    {
      char *state_s;
      if (kill (vmm, 0) < 0)
        break;
      state_s = t_sh_out ("awk '{print $3}' /proc/%d/stat 2>/dev/null", (int) vmm);
      if (strcmp (state_s, "Z") == 0 || state_s[0] == '\0')
        {
          free (state_s);
          vmm = 0;
          break;
        }
      free (state_s);
      usleep (10000);
    }
  if (vmm > 0 && kill (vmm, 0) == 0)
    {
      kill (vmm, SIGKILL);
      fail_msg ("the jailed process outlived its runner");
    }
  close (p[0]);
  close (p[1]);
  /* the dead runner's cgroups go with the next jail of the range */
  {
    bvm_error_t err = NULL;
    struct jail *j = prepare ("next", 8, &err);
    char ups[JAIL_LAYERS_MAX][700];
    const char *const *cg;
    size_t n = 0;

    assert_non_null (j);
    for (cg = jail_cgroups (j); cg[n] != NULL; n++)
      {
        snprintf (ups[n], sizeof ups[n], "%s", cg[n]);
        *strrchr (ups[n], '/') = '\0';
      }
    jail_destroy (j);
    for (size_t i = 0; i < n; i++)
      for (unsigned u = 0; u < 8; u++)
        if (exists ("%s/%u", ups[i], T_UID_FIRST + u))
          fail_msg ("cgroup `%s/%u` is left", ups[i], T_UID_FIRST + u);
  }
}

static void
test_probe (void **state)
{
  struct jail_settings s = { JAIL_MODE_AUTO, T_UID_FIRST, 8, NULL };
  struct jail_report r;
  int inactive;
  (void) state;

  s.lock_dir = locks;
  inactive = jail_probe (&r, &s);
  assert_true (r.n > 10);
  {
    int count = 0;
    for (size_t i = 0; i < r.n; i++)
      count += !r.layers[i].active;
    assert_int_equal (count, inactive);
  }
  if (geteuid () != 0)
    {
      assert_false (r.layers[0].active);
      assert_non_null (strstr (r.layers[0].detail, "not root"));
      return;
    }
  for (size_t i = 0; i < r.n; i++)
    {
      /* cgroups are best effort; everything else works here */
      if (!r.layers[i].active && strncmp (r.layers[i].name, "cgroup", 6) != 0)
        fail_msg ("layer %s inactive: %s", r.layers[i].name, r.layers[i].detail);
      if (strcmp (r.layers[i].name, "trial") == 0)
        assert_non_null (strstr (r.layers[i].detail, "ran `true` as uid 21000000"));
    }
  s.mode = JAIL_MODE_OFF;
  jail_probe (&r, &s);
  assert_false (r.layers[0].active);
  assert_non_null (strstr (r.layers[0].detail, "off"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_uid_allocation, setup, teardown),
    cmocka_unit_test_setup_teardown (test_uid_across_processes, setup, teardown),
    cmocka_unit_test_setup_teardown (test_stale_cgroups, setup, teardown),
    cmocka_unit_test_setup_teardown (test_decide, setup, teardown),
    cmocka_unit_test_setup_teardown (test_spawn_inspect, setup, teardown),
    cmocka_unit_test_setup_teardown (test_two_jobs, setup, teardown),
    cmocka_unit_test_setup_teardown (test_spawn_errors, setup, teardown),
    cmocka_unit_test_setup_teardown (test_dies_with_runner, setup, teardown),
    cmocka_unit_test_setup_teardown (test_probe, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
