/* support.h - helpers shared by the cmocka unit tests */
#ifndef BUILDVM_TEST_SUPPORT_H
#define BUILDVM_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "error.h"

/* A fresh directory under $TMPDIR, removed by t_tmpdir_free. */
char *t_tmpdir (void);
void t_tmpdir_free (char *dir);

/* Run a shell command (printf-style); returns its exit status. */
int t_sh (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* Run a shell command and capture stdout (trailing newline stripped). */
char *t_sh_out (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Write a file (creating parent directories). */
void t_write (const char *path, const char *content);
char *t_read (const char *path);

/* A service from tests/with-services.sh; fails the test when it is absent. */
const char *t_service (const char *env_name);

/* Assert no error and show its message if there is one. */
#define assert_ok(expr, errp)                                                                     \
  do                                                                                              \
    {                                                                                             \
      int r_ = (expr);                                                                            \
      if (r_ < 0)                                                                                 \
        fail_msg ("%s failed: %s", #expr, bvm_error_msg (errp));                                  \
    }                                                                                             \
  while (0)

/* Assert failure whose message contains `needle`. */
#define assert_fails_with(expr, errp, needle)                                                     \
  do                                                                                              \
    {                                                                                             \
      int r_ = (expr);                                                                            \
      if (r_ >= 0)                                                                                \
        fail_msg ("%s succeeded, expected an error containing \"%s\"", #expr, (needle));          \
      if (strstr (bvm_error_msg (errp), (needle)) == NULL)                                        \
        fail_msg ("%s: error \"%s\" does not contain \"%s\"", #expr, bvm_error_msg (errp),        \
                  (needle));                                                                      \
      bvm_error_free (errp);                                                                      \
    }                                                                                             \
  while (0)

#endif
