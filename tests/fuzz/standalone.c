/* standalone.c - run a fuzz target over files, without libFuzzer
 *
 *   fuzz_<name> PATH...
 *
 * Each PATH is a file or a directory; a directory's regular files are run in
 * name order (its subdirectories too, recursively). Like libgit2's
 * standalone_driver.c and crun's fuzzer mode: the same LLVMFuzzerTestOneInput
 * that libFuzzer drives, built with gcc and the sanitizers, so CI can replay
 * every checked-in corpus on every run (`make fuzz-corpus`). A crash or a
 * failed invariant aborts with the sanitizer's report and the name of the
 * input; otherwise the exit status is 0 and one line says how many inputs ran.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));
/* Present when built with a sanitizer; lets us name the input in a report. */
void __sanitizer_set_death_callback (void (*cb) (void)) __attribute__ ((weak));

#define INPUT_MAX_BYTES (16u << 20)

static const char *g_current; /* the input being run, for crash reports */
static unsigned long g_inputs;

static void
say_current (void)
{
  if (g_current != NULL)
    {
      /* async-signal-safe: this also runs from the SIGABRT handler */
      static const char pre[] = "standalone: while running input ";
      ssize_t r;
      r = write (STDERR_FILENO, pre, sizeof pre - 1);
      r = write (STDERR_FILENO, g_current, strlen (g_current));
      r = write (STDERR_FILENO, "\n", 1);
      (void) r;
    }
}

static void
on_abort (int sig)
{
  say_current ();
  signal (sig, SIG_DFL);
  raise (sig);
}

static int
run_file (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  uint8_t *data;
  size_t len = 0;

  if (fd < 0 || fstat (fd, &st) < 0)
    {
      fprintf (stderr, "standalone: %s: %s\n", path, strerror (errno));
      return -1;
    }
  if (st.st_size > (off_t) INPUT_MAX_BYTES)
    {
      fprintf (stderr, "standalone: %s: larger than %u bytes\n", path, INPUT_MAX_BYTES);
      close (fd);
      return -1;
    }
  /* an exact-size heap copy, so ASan sees a read one byte past the input */
  data = malloc (st.st_size > 0 ? (size_t) st.st_size : 1);
  if (data == NULL)
    abort ();
  while (len < (size_t) st.st_size)
    {
      ssize_t n = read (fd, data + len, (size_t) st.st_size - len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          fprintf (stderr, "standalone: %s: short read\n", path);
          free (data);
          close (fd);
          return -1;
        }
      len += (size_t) n;
    }
  close (fd);
  g_current = path;
  LLVMFuzzerTestOneInput (data, len);
  g_current = NULL;
  free (data);
  g_inputs++;
  return 0;
}

static int
cmp_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static int
run_path (const char *path)
{
  struct stat st;
  DIR *d;
  struct dirent *de;
  char **names = NULL;
  size_t n = 0, cap = 0;
  int ret = 0;

  if (stat (path, &st) < 0)
    {
      fprintf (stderr, "standalone: %s: %s\n", path, strerror (errno));
      return -1;
    }
  if (!S_ISDIR (st.st_mode))
    return run_file (path);

  d = opendir (path);
  if (d == NULL)
    {
      fprintf (stderr, "standalone: %s: %s\n", path, strerror (errno));
      return -1;
    }
  while ((de = readdir (d)) != NULL)
    {
      char *full;
      if (de->d_name[0] == '.')
        continue;
      if (asprintf (&full, "%s/%s", path, de->d_name) < 0)
        abort ();
      if (n == cap)
        {
          cap = cap ? cap * 2 : 64;
          names = realloc (names, cap * sizeof *names);
          if (names == NULL)
            abort ();
        }
      names[n++] = full;
    }
  closedir (d);
  if (n > 0)
    qsort (names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++)
    {
      if (run_path (names[i]) < 0)
        ret = -1;
      free (names[i]);
    }
  free (names);
  return ret;
}

int
main (int argc, char **argv)
{
  const char *prog = strrchr (argv[0], '/') ? strrchr (argv[0], '/') + 1 : argv[0];
  int ret = 0;

  if (argc < 2 || strcmp (argv[1], "--help") == 0)
    {
      printf ("usage: %s FILE-OR-DIRECTORY...\n"
              "Run the fuzz target over every input file (directories recursively).\n",
              prog);
      return argc < 2 ? 2 : 0;
    }
  signal (SIGABRT, on_abort);
  if (__sanitizer_set_death_callback != NULL)
    __sanitizer_set_death_callback (say_current);
  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize (&argc, &argv);

  for (int i = 1; i < argc; i++)
    if (run_path (argv[i]) < 0)
      ret = 1;
  if (g_inputs == 0)
    {
      fprintf (stderr, "%s: no inputs found: an empty corpus tests nothing\n", prog);
      return 1;
    }
  printf ("%s: %lu inputs ran without a crash\n", prog, g_inputs);
  return ret;
}
