/* fuzz.h - shared by the fuzz targets in tests/fuzz (docs/fuzzing.md)
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput and links either with
 * libFuzzer (clang -fsanitize=fuzzer, `make fuzz`) or with standalone.c, which
 * runs it over files and directories given on the command line (`make
 * fuzz-corpus`, run by `make check`).
 *
 * A target never returns early on a crash-worthy condition: the sanitizers
 * report memory errors, and FUZZ_CHECK aborts when an invariant the module
 * documents does not hold for an input it accepted (a property failure is as
 * much a bug as an overflow).
 */
#ifndef BUILDVM_FUZZ_H
#define BUILDVM_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static inline void __attribute__ ((noreturn))
fuzz_fail (const char *file, int line, const char *what)
{
  fprintf (stderr, "%s:%d: fuzz invariant failed: %s\n", file, line, what);
  abort ();
}

#define FUZZ_CHECK(cond)                                                                          \
  do                                                                                              \
    {                                                                                             \
      if (!(cond))                                                                                \
        fuzz_fail (__FILE__, __LINE__, #cond);                                                    \
    }                                                                                             \
  while (0)

/* Every failure must come with an error object whose message is one line of
 * printable ASCII: messages quote untrusted values and end up in logs and
 * terminals, so an unescaped byte from the input (ESC, a newline, a UTF-8 C1
 * control such as U+009B CSI) would be a log-injection bug. docs/schemas.md:
 * "any byte outside printable ASCII ... becomes \xNN". `allow_utf8` is for
 * the operator's own files (runner.json), whose paths may be quoted as
 * written; control characters are never allowed. (A NULL message is the
 * documented out-of-memory case and reads as a fixed text.) */
static inline void
fuzz_check_error_ex (int ret, bvm_error_t *err, bool allow_utf8)
{
  const char *msg;

  FUZZ_CHECK (ret < 0);
  FUZZ_CHECK (*err != NULL);
  msg = bvm_error_msg (err);
  for (const unsigned char *p = (const unsigned char *) msg; *p; p++)
    if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && !allow_utf8))
      {
        fprintf (stderr, "error message with a byte outside printable ASCII: %s\n", msg);
        fuzz_fail (__FILE__, __LINE__, "error message is printable");
      }
  bvm_error_free (err);
}

static inline void
fuzz_check_error (int ret, bvm_error_t *err)
{
  fuzz_check_error_ex (ret, err, false);
}

/* The input as a NUL-terminated string (cut at an embedded NUL). */
static inline char *
fuzz_cstr (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1);
  if (s == NULL)
    abort ();
  memcpy (s, data, size);
  s[size] = '\0';
  return s;
}

/* A process-wide memfd holding exactly `size` bytes of `data` at offset 0.
 * One descriptor for all runs: libFuzzer runs millions of inputs in one
 * process and a fresh memfd each time would only cost syscalls. */
static inline int
fuzz_memfd (const uint8_t *data, size_t size)
{
  static int fd = -1;
  size_t off = 0;

  if (fd < 0)
    {
      fd = memfd_create ("buildvm-fuzz", MFD_CLOEXEC);
      if (fd < 0)
        {
          perror ("memfd_create");
          abort ();
        }
    }
  if (ftruncate (fd, 0) < 0)
    abort ();
  while (off < size)
    {
      ssize_t n = pwrite (fd, data + off, size - off, (off_t) off);
      if (n <= 0)
        abort ();
      off += (size_t) n;
    }
  return fd;
}

#endif
