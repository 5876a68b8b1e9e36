/* test_allocfail.c - every allocation of a parse fails in turn
 *
 * For each parser of untrusted input, and a valid and a hostile document for
 * it, run the parse with allocation N failing, for N = 1, 2, ... until a run
 * completes without reaching allocation N. Every run in which an allocation
 * failed must
 *   - return an error with an error object (never crash, never abort), or
 *     succeed with exactly the result of the clean run (a few allocations
 *     are optional, e.g. ingest's UTF-8 locale: the result must not change);
 *   - leave no allocation behind: the allocations and frees made during the
 *     run balance (checked per run, so a leak names its N), and under the
 *     ASan build LeakSanitizer checks each case as well.
 * This is curl's `runtests.pl -t` and SQLite's sqlite3_memdebug_fail applied
 * to the parsers; docs/fuzzing.md explains the method and its limits.
 *
 * The hook: this binary defines malloc, calloc, realloc, free and the other
 * allocation entry points and forwards them to the next definition in the
 * lookup order (dlsym RTLD_NEXT): libc's allocator in the plain build,
 * ASan's in the sanitizer build (gcc links libasan as a shared library
 * that comes before libc, so ASan still tracks, poisons and leak-checks
 * every block). Being in the executable, these definitions win for every
 * caller in the process: our library, jansson (its default allocation
 * functions are malloc and free, so json_set_alloc_funcs is not needed),
 * libarchive, and libc's own strdup, asprintf and tsearch. ASan intercepts
 * strdup, strndup and reallocarray itself, so those are defined here too.
 * The hook lives in this file, not in tests/unit/support/, because the
 * support objects are linked into every test binary.
 */
#include "support.h"

#include "attest.h"
#include "config.h"
#include "egress_frame.h"
#include "guest.h"
#include "ingest.h"
#include "job.h"
#include "jsonx.h"
#include "policy.h"
#include "sbom.h"
#include "spec.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <malloc.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- the allocation-failure hook -------------------------------------------- */

/* The hook runs before ASan has mapped its shadow memory (ld.so and ASan's
 * own start-up allocate through it), so it must not be instrumented. */
#define HOOK __attribute__ ((no_sanitize_address))

static void *(*real_malloc) (size_t);
static void *(*real_calloc) (size_t, size_t);
static void *(*real_realloc) (void *, size_t);
static void (*real_free) (void *);
static int (*real_posix_memalign) (void **, size_t, size_t);
static void *(*real_aligned_alloc) (size_t, size_t);
static void *(*real_memalign) (size_t, size_t);

/* dlsym may allocate (its error buffer) before the real functions are known:
 * those few blocks come from here and are never freed. */
static char boot_arena[16384] __attribute__ ((aligned (16)));
static size_t boot_used;
static int resolving;

/* Per thread: a test arms its own thread, and no other thread is touched. */
static __thread long af_fail_at; /* fail the allocation with this number, 0 = never */
static __thread long af_count;   /* allocations since af_arm */
static __thread long af_allocs, af_frees;
static __thread bool af_injected;

static __thread long af_counted; /* allocations between af_arm and af_disarm */

/* LeakSanitizer's interface, present only in the ASan build. */
int __lsan_do_recoverable_leak_check (void) __attribute__ ((weak));

HOOK static void
resolve (void)
{
  if (real_free != NULL)
    return;
  resolving = 1;
  real_malloc = (void *(*) (size_t)) dlsym (RTLD_NEXT, "malloc");
  real_calloc = (void *(*) (size_t, size_t)) dlsym (RTLD_NEXT, "calloc");
  real_realloc = (void *(*) (void *, size_t)) dlsym (RTLD_NEXT, "realloc");
  real_posix_memalign = (int (*) (void **, size_t, size_t)) dlsym (RTLD_NEXT, "posix_memalign");
  real_aligned_alloc = (void *(*) (size_t, size_t)) dlsym (RTLD_NEXT, "aligned_alloc");
  real_memalign = (void *(*) (size_t, size_t)) dlsym (RTLD_NEXT, "memalign");
  real_free = (void (*) (void *)) dlsym (RTLD_NEXT, "free");
  resolving = 0;
  if (real_malloc == NULL || real_calloc == NULL || real_realloc == NULL || real_free == NULL)
    abort ();
}

HOOK static void *
boot_alloc (size_t n)
{
  void *p;
  n = (n + 15) & ~(size_t) 15;
  if (boot_used + n > sizeof boot_arena)
    return NULL;
  p = boot_arena + boot_used;
  boot_used += n;
  return p;
}

HOOK static bool
is_boot (const void *p)
{
  return (const char *) p >= boot_arena && (const char *) p < boot_arena + sizeof boot_arena;
}

/* Code ranges whose own allocations are never failed (see af_exempt). */
static uintptr_t exempt_lo[8], exempt_hi[8];
static int n_exempt;
static bool af_trace;

HOOK static bool
is_exempt (const void *caller)
{
  for (int i = 0; i < n_exempt; i++)
    if ((uintptr_t) caller >= exempt_lo[i] && (uintptr_t) caller < exempt_hi[i])
      return true;
  return false;
}

/* Count one allocation made from `caller`; true if this one must fail. */
HOOK static bool
should_fail (const void *caller)
{
  if (n_exempt > 0 && is_exempt (caller))
    return false;
  af_count++;
  if (af_fail_at > 0 && af_count == af_fail_at)
    {
      if (af_trace)
        {
          /* BUILDVM_ALLOCFAIL_TRACE=1: say where each failed allocation
           * was made (dladdr does not allocate) */
          Dl_info di;
          if (dladdr (caller, &di) != 0)
            fprintf (stderr, "allocfail: allocation %ld failed, made at %p in %s (%s)\n", af_count,
                     caller, di.dli_fname, di.dli_sname ? di.dli_sname : "?");
        }
      af_injected = true;
      return true;
    }
  return false;
}

#define CALLER __builtin_return_address (0)

HOOK static void *
do_malloc (size_t n, const void *caller)
{
  void *p;
  if (resolving)
    return boot_alloc (n);
  resolve ();
  if (should_fail (caller))
    {
      errno = ENOMEM;
      return NULL;
    }
  p = real_malloc (n);
  if (p != NULL)
    af_allocs++;
  return p;
}

HOOK static void *
do_realloc (void *old, size_t n, const void *caller)
{
  void *p;
  resolve ();
  if (is_boot (old))
    {
      p = do_malloc (n, caller);
      if (p != NULL)
        memcpy (p, old, n < 64 ? n : 64); /* boot blocks are dlsym's tiny buffers */
      return p;
    }
  if (should_fail (caller))
    {
      errno = ENOMEM;
      return NULL;
    }
  p = real_realloc (old, n);
  if (old == NULL && p != NULL)
    af_allocs++;
  else if (old != NULL && n == 0)
    af_frees++;
  return p;
}

HOOK void *
malloc (size_t n)
{
  return do_malloc (n, CALLER);
}

HOOK void *
calloc (size_t a, size_t b)
{
  void *p;
  if (resolving)
    return b != 0 && a > SIZE_MAX / b ? NULL : boot_alloc (a * b); /* the arena is zeroed */
  resolve ();
  if (should_fail (CALLER))
    {
      errno = ENOMEM;
      return NULL;
    }
  p = real_calloc (a, b);
  if (p != NULL)
    af_allocs++;
  return p;
}

HOOK void *
realloc (void *old, size_t n)
{
  return do_realloc (old, n, CALLER);
}

HOOK void
free (void *p)
{
  if (p == NULL || is_boot (p))
    return;
  resolve ();
  af_frees++;
  real_free (p);
}

HOOK void *
reallocarray (void *old, size_t a, size_t b)
{
  if (b != 0 && a > SIZE_MAX / b)
    {
      errno = ENOMEM;
      return NULL;
    }
  return do_realloc (old, a * b, CALLER);
}

HOOK char *
strdup (const char *s)
{
  size_t n = strlen (s) + 1;
  char *p = do_malloc (n, CALLER);
  if (p != NULL)
    memcpy (p, s, n);
  return p;
}

HOOK char *
strndup (const char *s, size_t max)
{
  size_t n = strnlen (s, max);
  char *p = do_malloc (n + 1, CALLER);
  if (p != NULL)
    {
      memcpy (p, s, n);
      p[n] = '\0';
    }
  return p;
}

HOOK int
posix_memalign (void **out, size_t align, size_t n)
{
  int r;
  resolve ();
  if (should_fail (CALLER))
    return ENOMEM;
  r = real_posix_memalign (out, align, n);
  if (r == 0)
    af_allocs++;
  return r;
}

HOOK void *
aligned_alloc (size_t align, size_t n)
{
  void *p;
  resolve ();
  if (should_fail (CALLER))
    {
      errno = ENOMEM;
      return NULL;
    }
  p = real_aligned_alloc (align, n);
  if (p != NULL)
    af_allocs++;
  return p;
}

HOOK void *
memalign (size_t align, size_t n)
{
  void *p;
  resolve ();
  if (should_fail (CALLER))
    {
      errno = ENOMEM;
      return NULL;
    }
  p = real_memalign (align, n);
  if (p != NULL)
    af_allocs++;
  return p;
}

struct exempt_search
{
  const char *name;
  int found;
};

static int
exempt_cb (struct dl_phdr_info *info, size_t size, void *data)
{
  struct exempt_search *es = data;
  (void) size;
  if (info->dlpi_name == NULL || strstr (info->dlpi_name, es->name) == NULL)
    return 0;
  for (int i = 0; i < info->dlpi_phnum && n_exempt < (int) ARRAY_SIZE (exempt_lo); i++)
    if (info->dlpi_phdr[i].p_type == PT_LOAD && (info->dlpi_phdr[i].p_flags & PF_X))
      {
        exempt_lo[n_exempt] = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        exempt_hi[n_exempt] = exempt_lo[n_exempt] + info->dlpi_phdr[i].p_memsz;
        n_exempt++;
        es->found++;
      }
  return 0;
}

/* Never fail the allocations that the shared library `name` makes itself
 * (they are still counted in the leak balance). For libraries that cannot
 * survive a failed allocation: libarchive 3.6.2 calls exit(1) ("Fatal
 * Internal Error in libarchive: Out of memory") from its string functions
 * and dereferences NULL in a few places (fixed upstream since). Its
 * functions that return an error to us on ENOMEM still do: a failure of
 * libc's allocations on its behalf (iconv, locale) is still injected. */
static void
af_exempt (const char *name)
{
  struct exempt_search es = { name, 0 };
  dl_iterate_phdr (exempt_cb, &es);
  if (es.found == 0)
    fail_msg ("no loaded object named %s", name);
}

static void
af_exempt_none (void)
{
  n_exempt = 0;
}

/* gcc knows malloc and free as builtins that touch no memory of ours, so in
 * this file it may keep a counter in a register across a direct malloc()
 * call: the barriers make it store before and load after. */
#define AF_BARRIER() __asm__ __volatile__("" ::: "memory")

static void
af_arm (long n)
{
  AF_BARRIER ();
  af_count = 0;
  af_allocs = af_frees = 0;
  af_injected = false;
  af_fail_at = n;
  AF_BARRIER ();
}

/* Stop failing (counting goes on for the leak balance); true if a failure
 * was injected since af_arm. */
static bool
af_disarm (void)
{
  AF_BARRIER ();
  af_fail_at = 0;
  af_counted = af_count;
  return af_injected;
}

/* --- running a case ------------------------------------------------------------ */

struct afcase
{
  const char *name;
  /* Parse under the hook: 0 and *out, or negative with err set. */
  int (*parse) (void **out, const void *arg, bvm_error_t *err);
  /* A malloc'd text that fully describes a result (compared with the clean
   * run's), and releasing the result. */
  char *(*describe) (void *res);
  void (*release) (void *res);
  const void *arg;
  bool valid;   /* the clean run succeeds */
  bool isolate; /* run each injected failure in a child process (run_isolated) */
};

enum outcome
{
  RUN_FAILED_CLEANLY, /* allocation n failed, the parse returned an error, no leak */
  RUN_TOLERATED,      /* allocation n failed, the parse succeeded with the clean result */
  RUN_DONE,           /* the parse got past its last allocation with the clean outcome */
  RUN_BAD,            /* anything else: `why` says what */
};

/* One run with allocation n failing. Uses no cmocka assertion, so that it
 * can run in a child process. */
static enum outcome
run_once (const struct afcase *c, long n, const char *reference, char *why, size_t size)
{
  enum outcome o = RUN_FAILED_CLEANLY;
  bvm_error_t err = NULL;
  void *res = NULL;
  bool injected;
  int ret;

  af_arm (n);
  ret = c->parse (&res, c->arg, &err);
  injected = af_disarm ();
  if (!injected)
    {
      if ((ret >= 0) != c->valid)
        {
          snprintf (why, size, "%s: run %ld, with no failure injected, %s: %s", c->name, n,
                    ret >= 0 ? "succeeded" : "failed", bvm_error_msg (&err));
          o = RUN_BAD;
        }
      else
        o = RUN_DONE;
    }
  else if (ret >= 0)
    {
      /* an optional allocation: the result must be exactly the clean one */
      char *got = c->describe (res);
      if (reference == NULL || strcmp (got, reference) != 0)
        {
          snprintf (why, size,
                    "%s: allocation %ld failed and the parse succeeded with a different "
                    "result:\n%s\ninstead of\n%s",
                    c->name, n, got, reference ? reference : "(an error)");
          o = RUN_BAD;
        }
      else
        o = RUN_TOLERATED;
      free (got);
    }
  if (ret >= 0)
    c->release (res);
  /* err may still be NULL: when the failed allocation is the error object's
   * own (bvm_error_v), there is nothing to hold the message; callers then
   * get bvm_error_msg's fixed text or a made-up context from
   * bvm_error_wrap (docs/fuzzing.md, limits) */
  bvm_error_free (&err);
  if (o != RUN_BAD && af_allocs != af_frees)
    {
      snprintf (why, size,
                "%s: allocation %ld failed: %ld allocations but %ld frees (a leak on this "
                "error path)",
                c->name, n, af_allocs, af_frees);
      o = RUN_BAD;
    }
  return o;
}

/* The same in a child process, for parsers whose libraries keep global
 * state that an allocation failure can poison for the rest of the process:
 * glibc's iconv (gconv) remembers a conversion it failed to set up, so every
 * later ingest of a non-ASCII name fails ("Pathname can't be converted from
 * UTF-8"). The parent's warm state (locale data, gconv modules) is
 * inherited, each run starts from it. */
static enum outcome
run_isolated (const struct afcase *c, long n, const char *reference, char *why, size_t size)
{
  int fds[2], status = 0;
  ssize_t got = 0, r;
  pid_t pid;

  if (pipe (fds) < 0)
    fail_msg ("pipe: %s", strerror (errno));
  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    fail_msg ("fork: %s", strerror (errno));
  if (pid == 0)
    {
      enum outcome o;
      close (fds[0]);
      why[0] = '\0';
      o = run_once (c, n, reference, why, size);
      if (o == RUN_BAD && write (fds[1], why, strlen (why)) < 0)
        _exit (100);
      _exit ((int) o);
    }
  close (fds[1]);
  while (got < (ssize_t) size - 1 && (r = read (fds[0], why + got, size - 1 - (size_t) got)) > 0)
    got += r;
  why[got] = '\0';
  close (fds[0]);
  if (waitpid (pid, &status, 0) < 0)
    fail_msg ("waitpid: %s", strerror (errno));
  if (!WIFEXITED (status) || WEXITSTATUS (status) > RUN_BAD)
    {
      snprintf (why, size, "%s: allocation %ld failed: the run crashed (status %#x)", c->name, n,
                status);
      return RUN_BAD;
    }
  return (enum outcome) WEXITSTATUS (status);
}

static void
check_case (const struct afcase *c)
{
  char *reference = NULL;
  long n, total = 0, recovered = 0;

  /* clean runs first: the first fixes the reference result and does the
   * one-time set-up (locale data, jansson's hash seed, the C.UTF-8 locale)
   * outside the measured runs; the second must balance */
  for (int warm = 0; warm < 2; warm++)
    {
      bvm_error_t err = NULL;
      void *res = NULL;
      int ret;

      af_arm (0);
      ret = c->parse (&res, c->arg, &err);
      af_disarm ();
      total = af_counted;
      if (c->valid && ret < 0)
        fail_msg ("%s: the clean run failed: %s", c->name, bvm_error_msg (&err));
      if (!c->valid && ret >= 0)
        fail_msg ("%s: the clean run succeeded, expected an error", c->name);
      if (ret >= 0 && warm == 0)
        reference = c->describe (res);
      if (ret >= 0)
        c->release (res);
      bvm_error_free (&err);
      if (warm == 1 && af_allocs != af_frees)
        fail_msg ("%s: the clean run leaks: %ld allocations, %ld frees", c->name, af_allocs,
                  af_frees);
    }

  for (n = 1;; n++)
    {
      char why[8192];
      enum outcome o = c->isolate ? run_isolated (c, n, reference, why, sizeof why)
                                  : run_once (c, n, reference, why, sizeof why);
      if (o == RUN_BAD)
        fail_msg ("%s", why);
      if (o == RUN_DONE)
        break;
      if (o == RUN_TOLERATED)
        recovered++;
    }
  if (__lsan_do_recoverable_leak_check != NULL && __lsan_do_recoverable_leak_check () != 0)
    fail_msg ("%s: LeakSanitizer found leaks (see above)", c->name);
  print_message ("%-34s %4ld allocations, each failed in turn (%ld tolerated)\n", c->name, n - 1,
                 recovered);
  assert_int_equal (n - 1, total);
  free (reference);
}

static void
run_cases (const struct afcase *cases, size_t n)
{
  for (size_t i = 0; i < n; i++)
    check_case (&cases[i]);
}

/* --- json-producing results ------------------------------------------------------ */

static char *
dump_json (json_t *j)
{
  char *s;
  if (j == NULL)
    fail_msg ("could not describe a result (out of memory outside the armed run?)");
  s = json_dumps (j, JSON_SORT_KEYS | JSON_COMPACT);
  json_decref (j);
  if (s == NULL)
    fail_msg ("json_dumps failed");
  return s;
}

/* --- jsonx ---------------------------------------------------------------------- */

static const char doc_json[]
    = "{\"id\":\"x\",\"list\":[1,2,{\"k\":\"v\",\"n\":null,\"t\":true}],\"s\":\"\\u00fcber\","
      "\"nested\":{\"a\":{\"b\":{\"c\":[[],{}]}}},\"num\":-12.5e3}";
static const char doc_bad[] = "{\"a\":[1,2,{\"b\":3,\"b\":4}]}";

static int
p_jsonx (void **out, const void *arg, bvm_error_t *err)
{
  const char *s = arg;
  return jsonx_parse ((json_t **) out, s, strlen (s), 1 << 20, "document", err);
}

static char *
d_jsonx (void *res)
{
  return dump_json (json_incref (res));
}

static void
r_json (void *res)
{
  json_decref (res);
}

static void
test_jsonx (void **state)
{
  const struct afcase cases[] = {
    { "jsonx_parse", p_jsonx, d_jsonx, r_json, doc_json, true, false },
    { "jsonx_parse (duplicate key)", p_jsonx, d_jsonx, r_json, doc_bad, false, false },
  };
  (void) state;
  run_cases (cases, ARRAY_SIZE (cases));
}

/* --- job ------------------------------------------------------------------------- */

static const char job_full[]
    = "{\"id\":\"d-20261126-0042\",\"app\":\"hello\",\"repo\":\"https://git.example.com/org/"
      "hello.git\",\"commit\":\"3f786850e387550fdab836ed7e6dc881de23001b\",\"ref\":\"refs/heads/"
      "main\",\"trigger\":\"webhook\",\"delivery\":\"72d3162e-cc78-11e3-81ab-4c9367dc0958\","
      "\"requested_at\":\"2026-11-26T11:34:54Z\",\"requested_by\":\"alice\"}";
static const char job_bad[]
    = "{\"id\":\"d-1\",\"app\":\"hello\",\"repo\":\"/srv/git/hello\",\"commit\":\"HEAD~1\","
      "\"ref\":\"refs/heads/main\"}";

static int
p_job (void **out, const void *arg, bvm_error_t *err)
{
  const char *s = arg;
  return job_parse ((struct job_request **) out, s, strlen (s), err);
}

static char *
d_job (void *res)
{
  return dump_json (job_to_json (res));
}

static void
r_job (void *res)
{
  job_free (res);
}

static int
p_job_to_json (void **out, const void *arg, bvm_error_t *err)
{
  (void) err;
  *out = job_to_json (arg);
  return *out ? 0 : -1;
}

static void
test_job (void **state)
{
  bvm_error_t err = NULL;
  struct job_request *j = NULL;
  (void) state;

  assert_ok (job_parse (&j, job_full, strlen (job_full), &err), &err);
  {
    const struct afcase cases[] = {
      { "job_parse", p_job, d_job, r_job, job_full, true, false },
      { "job_parse (bad commit)", p_job, d_job, r_job, job_bad, false, false },
      { "job_to_json", p_job_to_json, d_jsonx, r_json, j, true, false },
    };
    run_cases (cases, ARRAY_SIZE (cases));
  }
  job_free (j);
}

/* --- spec ------------------------------------------------------------------------- */

static const char spec_full[]
    = "{\"version\":1,\"profile\":\"minimal\",\"steps\":[\"make\",{\"name\":\"test\",\"run\":"
      "\"make check\",\"timeout\":120}],\"env\":{\"CC\":\"gcc\",\"CFLAGS\":\"-O2\"},\"resources\":"
      "{\"vcpus\":1,\"memory_mib\":512,\"disk_mib\":1024,\"timeout\":600},\"image\":{\"base\":"
      "\"base/busybox:1.36\",\"from\":\"dist\",\"to\":\"/app\",\"entrypoint\":[\"/app/server\"],"
      "\"cmd\":[\"--port\",\"8080\"],\"env\":{\"PORT\":\"8080\"},\"workdir\":\"/app\",\"user\":"
      "\"1000:1000\",\"ports\":[\"8080/tcp\",\"53/udp\"],\"labels\":{\"org.example.team\":"
      "\"web\"}},\"artifacts\":[\"dist/*.tar.gz\",\"reports/\"],\"secrets\":[\"NPM_TOKEN\","
      "{\"name\":\"API_KEY\",\"env\":\"API_KEY\"}]}";
static const char spec_bad[] = "{\"profile\":\"minimal\",\"steps\":[\"make\",\"make check\"],"
                               "\"env\":{\"A\":\"1\"},\"artifacts\":[\"ok\",\"../escape\"]}";

static int
p_spec (void **out, const void *arg, bvm_error_t *err)
{
  const char *s = arg;
  return spec_parse ((struct build_spec **) out, s, strlen (s), err);
}

static char *
d_spec (void *res)
{
  return dump_json (spec_to_json (res));
}

static void
r_spec (void *res)
{
  spec_free (res);
}

static int
p_spec_to_json (void **out, const void *arg, bvm_error_t *err)
{
  (void) err;
  *out = spec_to_json (arg);
  return *out ? 0 : -1;
}

static void
test_spec (void **state)
{
  bvm_error_t err = NULL;
  struct build_spec *s = NULL;
  (void) state;

  assert_ok (spec_parse (&s, spec_full, strlen (spec_full), &err), &err);
  {
    const struct afcase cases[] = {
      { "spec_parse", p_spec, d_spec, r_spec, spec_full, true, false },
      { "spec_parse (artifact escapes)", p_spec, d_spec, r_spec, spec_bad, false, false },
      { "spec_to_json", p_spec_to_json, d_jsonx, r_json, s, true, false },
    };
    run_cases (cases, ARRAY_SIZE (cases));
  }
  spec_free (s);
}

/* --- the SBOM's lock files and the verifier's statement check ------------------- */

struct lock_arg
{
  const char *name, *text;
};

/* A lock file from the repository and a base image's package label into
 * an SBOM. The document is made in `describe`, outside the armed run:
 * jansson 2.14's json_dumps does not check the dump of an object's key
 * (dump.c, do_dump: dump_string's result is dropped), so an allocation
 * failing there gives a document without that key instead of an error. */
#define SBOM_TEST_DIGEST "sha256:1111111111111111111111111111111111111111111111111111111111111111"

static int
p_lockfile (void **out, const void *arg, bvm_error_t *err)
{
  const struct lock_arg *a = arg;
  struct sbom *sb = NULL;
  int ret;

  ret = sbom_new (&sb, 0, err);
  if (ret == 0)
    ret = sbom_add_lockfile (sb, a->name, a->text, strlen (a->text), err);
  if (ret == 0)
    ret = sbom_set_base (sb, "base/x:1", SBOM_TEST_DIGEST, "libc6=2.36 zlib1g=1:1.2", err);
  if (ret < 0)
    {
      sbom_free (sb);
      return ret;
    }
  *out = sb;
  return 0;
}

static char *
d_sbom (void *res)
{
  struct sbom_meta m = { "apps/a", "0123456789abcdef0123456789abcdef01234567", SBOM_TEST_DIGEST,
                         "2026-01-01T00:00:00Z", "t" };
  bvm_error_t err = NULL;
  char *text = NULL;
  size_t len = 0;
  if (sbom_to_json (&text, &len, res, &m, &err) < 0)
    fail_msg ("sbom_to_json: %s", bvm_error_msg (&err));
  return text;
}

static void
r_sbom (void *res)
{
  sbom_free (res);
}

static const char lock_npm[]
    = "{\"lockfileVersion\":3,\"packages\":{\"\":{},\"node_modules/a\":{\"version\":\"1\","
      "\"integrity\":\"sha512-AAAA\"},\"node_modules/@s/b\":{\"version\":\"2\"}}}";
static const char lock_pip[] = "a==1 \\\n --hash=sha256:"
                               "0000000000000000000000000000000000000000000000000000000000000000\n"
                               "b_c==2\n";
static const char lock_npm_bad[]
    = "{\"packages\":{\"node_modules/a\":{\"version\":\"1\",\"integrity\":\"sha512-$\"}}}";

static const char statement[]
    = "{\"_type\":\"https://in-toto.io/Statement/v1\",\"predicateType\":\"https://slsa.dev/"
      "provenance/v1\",\"subject\":[{\"name\":\"apps/a\",\"digest\":{\"sha256\":\"1111111111111111"
      "111111111111111111111111111111111111111111111111\"}}],\"predicate\":{\"buildDefinition\":{"
      "\"buildType\":\"x\",\"externalParameters\":{\"deploy\":{\"app\":\"a\"}}},"
      "\"runDetails\":{\"builder\":{\"id\":\"b\"}}}}";

static int
p_attest_check (void **out, const void *arg, bvm_error_t *err)
{
  struct attest_expect want = { .digest = SBOM_TEST_DIGEST, .app = "a", .subject_name = "apps/a" };
  return attest_check ((json_t **) out, arg, strlen (arg), &want, err);
}

static void
test_sbom_attest (void **state)
{
  static const struct lock_arg npm = { "package-lock.json", lock_npm };
  static const struct lock_arg pip = { "requirements.txt", lock_pip };
  static const struct lock_arg bad = { "package-lock.json", lock_npm_bad };
  const struct afcase cases[] = {
    { "sbom package-lock.json", p_lockfile, d_sbom, r_sbom, &npm, true, false },
    { "sbom requirements.txt", p_lockfile, d_sbom, r_sbom, &pip, true, false },
    { "sbom (bad integrity)", p_lockfile, d_sbom, r_sbom, &bad, false, false },
    { "attest_check", p_attest_check, d_jsonx, r_json, statement, true, false },
  };
  (void) state;
  run_cases (cases, ARRAY_SIZE (cases));
}

/* --- policy ------------------------------------------------------------------------ */

static const char policy_cond[]
    = "{\"Version\":\"2012-10-17\",\"Id\":\"t\",\"Statement\":[{\"Sid\":\"A\",\"Effect\":\"Allow\","
      "\"Action\":[\"registry:PushImage\",\"registry:PullImage\"],\"Resource\":[\"registry:apps/"
      "${job:App}:*\",\"registry:base/*\"],\"Condition\":{\"StringLike\":{\"job:Ref\":\"refs/"
      "heads/*\"},\"StringEqualsIfExists\":{\"req:Branch\":[\"main\",\"dev\"]},\"Null\":{"
      "\"req:Signed\":\"false\"}}},{\"Effect\":\"Deny\",\"NotAction\":\"logs:*\",\"NotResource\":"
      "\"registry:apps/${job:App}:*\"}]}";
static const char policy_bad[]
    = "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"A\",\"Effect\":\"Allow\",\"Action\":"
      "\"registry:PushImage\",\"Resource\":\"registry:apps/x:*\"},{\"Effect\":\"Allow\","
      "\"Action\":\"registry:PushImage\",\"Resource\":\"registry:apps/${job:App}*\"}]}";

static int
p_policy (void **out, const void *arg, bvm_error_t *err)
{
  const char *s = arg;
  return policy_parse ((struct policy **) out, s, strlen (s), "test.json", err);
}

static char *
d_policy (void *res)
{
  return dump_json (json_incref ((json_t *) policy_json (res)));
}

static void
r_policy (void *res)
{
  policy_free (res);
}

struct mint_arg
{
  const struct policy *tmpl, *boundary;
};

static int
p_mint (void **out, const void *arg, bvm_error_t *err)
{
  const struct mint_arg *m = arg;
  static const struct policy_vars vars = { "app1", "3f786850e387550fdab836ed7e6dc881de23001b",
                                           "refs/heads/main", "d-1" };
  return role_mint ((struct role **) out, m->tmpl, m->boundary, &vars, 4000000000, err);
}

/* The role without its random id. */
static char *
d_role (void *res)
{
  json_t *j = role_to_json (res);
  if (j != NULL)
    json_object_del (j, "id");
  return dump_json (j);
}

static void
r_role (void *res)
{
  role_free (res);
}

static void
test_policy (void **state)
{
  bvm_error_t err = NULL;
  struct policy *role = NULL, *boundary = NULL, *cond = NULL;
  size_t rlen = 0, blen = 0;
  const char *rtext = policy_builtin_role (&rlen);
  const char *btext = policy_builtin_boundary (&blen);
  (void) state;

  assert_ok (policy_load_builtin (&role, false, &err), &err);
  assert_ok (policy_load_builtin (&boundary, true, &err), &err);
  assert_ok (policy_parse (&cond, policy_cond, strlen (policy_cond), "c.json", &err), &err);
  assert_int_equal (strlen (rtext), rlen);
  assert_int_equal (strlen (btext), blen);
  {
    const struct mint_arg builtin = { role, boundary }, withcond = { cond, boundary };
    const struct afcase cases[] = {
      { "policy_parse (build-role.json)", p_policy, d_policy, r_policy, rtext, true, false },
      { "policy_parse (boundary.json)", p_policy, d_policy, r_policy, btext, true, false },
      { "policy_parse (conditions)", p_policy, d_policy, r_policy, policy_cond, true, false },
      { "policy_parse (widening variable)", p_policy, d_policy, r_policy, policy_bad, false,
        false },
      { "role_mint (builtin)", p_mint, d_role, r_role, &builtin, true, false },
      { "role_mint (conditions)", p_mint, d_role, r_role, &withcond, true, false },
    };
    run_cases (cases, ARRAY_SIZE (cases));
  }
  policy_free (cond);
  policy_free (boundary);
  policy_free (role);
}

/* --- guest result header ---------------------------------------------------------- */

static const char guest_ok[] = "buildvm-output 1\nstatus step-failed\nstep 2\nexit 2\nsignal 0\n"
                               "steps 2\nentries 3\ntar_bytes 2048\nduration_ms 1234\nstep_ms 1 "
                               "10\nstep_ms 2 20\nmessage make: *** [all] Error 2\nend\n";
static const char guest_bad[] = "buildvm-output 1\nstatus ok\nstep_ms 65 1\nend\n";

static int
p_guest (void **out, const void *arg, bvm_error_t *err)
{
  const char *s = arg;
  struct guest_result *r = calloc (1, sizeof *r);
  int ret;

  /* the result lives on the caller's stack in real use; the copy here is
   * the harness's, made before the parse's own allocations */
  if (r == NULL)
    return bvm_error (err, ENOMEM, "test result");
  ret = guest_result_parse (r, s, strlen (s), 1 << 20, err);
  if (ret < 0)
    {
      free (r);
      return ret;
    }
  *out = r;
  return 0;
}

static char *
d_guest (void *res)
{
  struct guest_result *r = res;
  char *s = NULL;
  if (asprintf (&s, "%d %u %d %d %u %llu %llu %lld %s", (int) r->status, r->step, r->exit_code,
                r->signal, r->steps_run, (unsigned long long) r->entries,
                (unsigned long long) r->tar_bytes, (long long) r->duration_ms, r->message)
      < 0)
    fail_msg ("asprintf");
  return s;
}

static void
test_guest (void **state)
{
  const struct afcase cases[] = {
    { "guest_result_parse", p_guest, d_guest, free, guest_ok, true, false },
    { "guest_result_parse (bad step_ms)", p_guest, d_guest, free, guest_bad, false, false },
  };
  (void) state;
  run_cases (cases, ARRAY_SIZE (cases));
}

/* --- egress frames ------------------------------------------------------------------ */

/* A guest's bytes: HELLO, OPEN, DATA, WINDOW, CLOSE (valid), or then a frame
 * of an unknown type (hostile). The result is the list of frames seen. */
struct egress_input
{
  bool hostile;
};

static size_t
egress_bytes (uint8_t *buf, bool hostile)
{
  uint8_t v[4], w[4];
  size_t o = 0;

  egress_proto_put32 (v, EGRESS_VERSION);
  egress_proto_put32 (w, 4096);
  o += egress_proto_encode (buf + o, 64, EGRESS_HELLO, 0, 0, v, 4, EGRESS_FROM_GUEST);
  o += egress_proto_encode (buf + o, 64, EGRESS_OPEN, EGRESS_OPEN_CONNECT, 1, "a.example:443", 13,
                            EGRESS_FROM_GUEST);
  o += egress_proto_encode (buf + o, 64, EGRESS_DATA, 0, 1, "hello", 5, EGRESS_FROM_GUEST);
  o += egress_proto_encode (buf + o, 64, EGRESS_WINDOW, 0, 1, w, 4, EGRESS_FROM_GUEST);
  o += egress_proto_encode (buf + o, 64, EGRESS_CLOSE, 0, 1, NULL, 0, EGRESS_FROM_GUEST);
  if (hostile)
    {
      egress_proto_put_header (buf + o, 0x42, 0, 1, 0);
      o += EGRESS_HEADER_LEN;
    }
  return o;
}

static int
p_egress (void **out, const void *arg, bvm_error_t *err)
{
  const struct egress_input *in = arg;
  struct egress_frame_parser p;
  uint8_t buf[512];
  size_t len = egress_bytes (buf, in->hostile), pos = 0;
  char *seen = calloc (1, 256);
  int ret;

  if (seen == NULL)
    return bvm_error (err, ENOMEM, "test result");
  ret = egress_frame_parser_init (&p, EGRESS_FROM_GUEST, err);
  if (ret < 0)
    {
      free (seen);
      return ret;
    }
  while (pos < len)
    {
      struct egress_frame f;
      size_t used;
      /* three bytes at a time: every frame is buffered */
      ret = egress_frame_feed (&p, buf + pos, len - pos < 3 ? len - pos : 3, &used, &f, err);
      if (ret < 0)
        break;
      if (ret == 1)
        snprintf (seen + strlen (seen), 256 - strlen (seen), "%s:%u:%u ",
                  egress_proto_type_name (f.type), f.stream, f.len);
      pos += used;
    }
  egress_frame_parser_dispose (&p);
  if (ret < 0)
    {
      free (seen);
      return ret;
    }
  *out = seen;
  return 0;
}

static char *
d_egress (void *res)
{
  return strdup (res);
}

static void
test_egress_frame (void **state)
{
  static const struct egress_input valid = { false }, hostile = { true };
  const struct afcase cases[] = {
    { "egress_frame_feed", p_egress, d_egress, free, &valid, true, false },
    { "egress_frame_feed (unknown type)", p_egress, d_egress, free, &hostile, false, false },
  };
  (void) state;
  run_cases (cases, ARRAY_SIZE (cases));
}

/* --- config ------------------------------------------------------------------------- */

static const char config_full[]
    = "{\"home\":\"/var/lib/buildvm\",\"artifacts\":\"dir:/var/lib/buildvm/artifacts\","
      "\"registry\":{\"url\":\"http://127.0.0.1:5000\",\"credentials\":null,\"repository\":"
      "\"apps/{app}\",\"tag\":\"{commit}\",\"extra_tags\":[\"latest\",\"{short_commit}\"]},"
      "\"images\":{\"dir\":\"/usr/local/lib/buildvm/images\",\"default_profile\":\"minimal\"},"
      "\"vm\":{\"driver\":\"qemu\",\"accel\":\"auto\",\"qemu\":\"qemu-system-x86_64\","
      "\"boot_timeout\":60},\"limits\":{\"max_vcpus\":2,\"max_memory_mib\":2048,"
      "\"max_disk_mib\":8192,\"max_build_seconds\":3600},\"defaults\":{\"vcpus\":1,"
      "\"memory_mib\":1024,\"disk_mib\":2048,\"build_seconds\":900},\"policies\":{\"role\":"
      "\"builtin\",\"boundary\":\"builtin\"},\"queue\":\"redis://127.0.0.1:6379/jobs?group=r\"}";
static const char config_bad[]
    = "{\"home\":\"/var/lib/buildvm\",\"registry\":{\"repository\":\"apps/shared\"}}";

static int
p_config (void **out, const void *arg, bvm_error_t *err)
{
  return config_load ((struct runner_config **) out, arg, err);
}

static char *
d_config (void *res)
{
  return dump_json (config_to_json (res));
}

static void
r_config (void *res)
{
  config_free (res);
}

static void
test_config (void **state)
{
  char *dir = t_tmpdir ();
  char good[4096], bad[4096];
  (void) state;

  snprintf (good, sizeof good, "%s/runner.json", dir);
  snprintf (bad, sizeof bad, "%s/bad.json", dir);
  t_write (good, config_full);
  t_write (bad, config_bad);
  {
    const struct afcase cases[] = {
      { "config_load", p_config, d_config, r_config, good, true, false },
      { "config_load (repository without {app})", p_config, d_config, r_config, bad, false,
        false },
      { "config_load (built-in defaults)", p_config, d_config, r_config, NULL, true, false },
    };
    run_cases (cases, ARRAY_SIZE (cases));
  }
  t_tmpdir_free (dir);
}

/* --- ingest -------------------------------------------------------------------------- */

struct tar_item
{
  const char *name;
  mode_t type;
  const char *data;  /* files */
  const char *link;  /* symlink target */
  const char *hlink; /* hardlink target */
};

/* Build a tar in a memfd with libarchive (outside any armed run). */
static int
make_tar (const struct tar_item *items, size_t n, size_t *len)
{
  static char buf[64 * 1024];
  /* UTF-8 names: libarchive converts through the current locale */
  locale_t utf8 = newlocale (LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
  locale_t old = uselocale (utf8);
  struct archive *a = archive_write_new ();
  size_t used = 0;
  int fd;

  assert_true (utf8 != (locale_t) 0);
  assert_non_null (a);
  assert_int_equal (archive_write_set_format_pax_restricted (a), ARCHIVE_OK);
  assert_int_equal (archive_write_open_memory (a, buf, sizeof buf, &used), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++)
    {
      struct archive_entry *e = archive_entry_new ();
      size_t dlen = items[i].data ? strlen (items[i].data) : 0;
      archive_entry_set_pathname (e, items[i].name);
      archive_entry_set_filetype (e, items[i].type);
      archive_entry_set_perm (e, items[i].type == AE_IFDIR ? 0755 : 0644);
      archive_entry_set_mtime (e, 1700000000, 0);
      archive_entry_set_size (e, (la_int64_t) dlen);
      if (items[i].link)
        archive_entry_set_symlink (e, items[i].link);
      if (items[i].hlink)
        {
          archive_entry_set_hardlink (e, items[i].hlink);
          archive_entry_set_size (e, 0);
        }
      assert_int_equal (archive_write_header (a, e), ARCHIVE_OK);
      if (dlen > 0)
        assert_int_equal (archive_write_data (a, items[i].data, dlen), (la_ssize_t) dlen);
      archive_entry_free (e);
    }
  assert_int_equal (archive_write_close (a), ARCHIVE_OK);
  archive_write_free (a);
  uselocale (old);
  freelocale (utf8);

  fd = memfd_create ("allocfail-tar", MFD_CLOEXEC);
  assert_true (fd >= 0);
  assert_int_equal (write (fd, buf, used), (ssize_t) used);
  *len = used;
  return fd;
}

struct rec
{
  char text[8192];
  size_t len;
};

static int
s_begin (void *opaque, const struct ingest_entry *e, bvm_error_t *err)
{
  struct rec *r = opaque;
  int n = snprintf (r->text + r->len, sizeof r->text - r->len, "%d %s %o %o %llu %s|",
                    (int) e->kind, e->path, (unsigned) e->type, (unsigned) e->perm,
                    (unsigned long long) e->size, e->link_target ? e->link_target : "-");
  (void) err;
  if (n > 0 && (size_t) n < sizeof r->text - r->len)
    r->len += (size_t) n;
  return 0;
}

static int
s_data (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct rec *r = opaque;
  (void) err;
  if (r->len + len < sizeof r->text)
    {
      memcpy (r->text + r->len, buf, len);
      r->len += len;
      r->text[r->len] = '\0';
    }
  return 0;
}

static int
s_end (void *opaque, bvm_error_t *err)
{
  (void) opaque;
  (void) err;
  return 0;
}

struct ingest_arg
{
  int fd;
  size_t len;
};

static int
p_ingest (void **out, const void *arg, bvm_error_t *err)
{
  const struct ingest_arg *ia = arg;
  const struct ingest_limits lim = INGEST_LIMITS_INIT;
  /* the record is the harness's, allocated before ingest's own allocations
   * would matter: a failure here is the first allocation and is reported as
   * an ordinary error */
  struct rec *r = malloc (sizeof *r);
  struct ingest_sink sink = { r, s_begin, s_data, s_end };
  struct ingest_stats st;
  int ret;

  if (r == NULL)
    return bvm_error (err, ENOMEM, "test record");
  r->len = 0;
  r->text[0] = '\0';
  ret = ingest_run (ia->fd, 0, ia->len, &lim, &sink, &st, err);
  if (ret < 0)
    {
      free (r);
      return ret;
    }
  *out = r;
  return 0;
}

static char *
d_ingest (void *res)
{
  struct rec *r = res;
  return xstrdup (r->text);
}

static void
test_ingest (void **state)
{
  const struct tar_item good[] = {
    { "image/", AE_IFDIR, NULL, NULL, NULL },
    { "image/bin/app", AE_IFREG, "#!/bin/sh\necho hi\n", NULL, NULL },
    { "image/bin/app2", AE_IFREG, NULL, NULL, "image/bin/app" },
    { "image/lib/up", AE_IFLNK, NULL, "../bin/app", NULL },
    { "image/\xc3\x9c"
      "ber.txt",
      AE_IFREG, "gr\xc3\xbc\xc3\x9f\n", NULL, NULL },
    { "artifacts/report.txt", AE_IFREG, "all good\n", NULL, NULL },
  };
  const struct tar_item bad[] = {
    { "image/d/f", AE_IFREG, "x", NULL, NULL },
    { "image/d/up", AE_IFLNK, NULL, "..", NULL },
    { "image/esc", AE_IFLNK, NULL, "d/up/../etc/passwd", NULL },
  };
  struct ingest_arg ga, ba;
  (void) state;

  ga.fd = make_tar (good, ARRAY_SIZE (good), &ga.len);
  ba.fd = make_tar (bad, ARRAY_SIZE (bad), &ba.len);
  af_exempt ("libarchive.so");
  {
    const struct afcase cases[] = {
      { "ingest_run", p_ingest, d_ingest, free, &ga, true, true },
      { "ingest_run (symlink escape)", p_ingest, d_ingest, free, &ba, false, true },
    };
    run_cases (cases, ARRAY_SIZE (cases));
  }
  af_exempt_none ();
  close (ga.fd);
  close (ba.fd);
}

/* --- the hook itself -------------------------------------------------------------------- */

static void *volatile g_keep;

static int
node_cmp (const void *a, const void *b)
{
  return strcmp (a, b);
}

static void
node_free (void *p)
{
  (void) p;
}

/* The method is only as good as its coverage of the allocators: check that
 * every library the parsers use allocates through the hook in this build
 * (plain or ASan), so a parser cannot escape the test by allocating
 * somewhere we do not see. */
static void
test_hook_sees_every_allocator (void **state)
{
  void *root = NULL;
  char *s = NULL;
  json_t *j;
  struct archive *a;
  (void) state;

  /* the results go through g_keep so the compiler cannot elide a
   * malloc/free pair (gcc does, for strdup of a constant) */
#define EXPECT_COUNTED(what, expr, undo)                                                          \
  do                                                                                              \
    {                                                                                             \
      af_arm (0);                                                                                 \
      g_keep = (expr);                                                                            \
      af_disarm ();                                                                               \
      if (af_count == 0)                                                                          \
        fail_msg ("%s does not allocate through the hook", what);                                 \
      undo;                                                                                       \
      af_arm (1);                                                                                 \
      g_keep = (expr);                                                                            \
      if (!af_disarm ())                                                                          \
        fail_msg ("%s: the first allocation was not failed", what);                               \
      undo;                                                                                       \
    }                                                                                             \
  while (0)

  EXPECT_COUNTED ("libc strdup", s = strdup ("x"), (free (s), s = NULL));
  EXPECT_COUNTED ("libc asprintf", asprintf (&s, "%d", 42) < 0 ? (s = NULL) : s,
                  (free (s), s = NULL));
  EXPECT_COUNTED ("libc tsearch", tsearch ("k", &root, node_cmp),
                  (tdestroy (root, node_free), root = NULL));
  EXPECT_COUNTED ("jansson", j = json_pack ("{s:[i,s]}", "a", 1, "b"), json_decref (j));
  EXPECT_COUNTED ("libarchive", a = archive_read_new (), archive_read_free (a));
#undef EXPECT_COUNTED

  /* and the balance sees frees */
  af_arm (0);
  g_keep = s = malloc (10);
  free (s);
  af_disarm ();
  assert_int_equal (af_allocs, 1);
  assert_int_equal (af_frees, 1);
}

int
main (void)
{
  af_trace = getenv ("BUILDVM_ALLOCFAIL_TRACE") != NULL;
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_hook_sees_every_allocator),
    cmocka_unit_test (test_jsonx),
    cmocka_unit_test (test_job),
    cmocka_unit_test (test_spec),
    cmocka_unit_test (test_policy),
    cmocka_unit_test (test_egress_frame),
    cmocka_unit_test (test_guest),
    cmocka_unit_test (test_config),
    cmocka_unit_test (test_ingest),
    cmocka_unit_test (test_sbom_attest),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
