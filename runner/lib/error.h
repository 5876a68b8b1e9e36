/* error.h - error objects that carry context up the call stack
 *
 * Library functions return 0 on success or a negative value on failure and
 * fill a `bvm_error_t *err`. The constructor returns that negative value, so
 * failing is one line (crun's libcrun_make_error):
 *
 *     if (UNLIKELY (fd < 0))
 *       return bvm_error (err, errno, "open `%s`", path);
 *
 * and callers add context on the way up without losing the lower message:
 *
 *     if (ret < 0)
 *       return bvm_error_wrap (err, "writing the job record");
 *
 * gives "writing the job record: open `/x`: Permission denied".
 *
 * Messages are one line, lowercase, no full stop, the subject quoted.
 * Library code never prints and never exits; only the CLI does.
 */
#ifndef BUILDVM_ERROR_H
#define BUILDVM_ERROR_H

#include <stdarg.h>

/* A coarse classification that survives wrapping. The queue uses it to decide
 * between retrying a job and dead-lettering it, the CLI for exit codes. */
enum bvm_errcode
{
  BVM_E_INTERNAL = 1, /* a bug or an unexpected system failure */
  BVM_E_USAGE,        /* bad command line */
  BVM_E_INVALID,      /* untrusted input failed validation: never retry */
  BVM_E_DENIED,       /* the job's role denied an action: never retry */
  BVM_E_IO,           /* local file system or process failure */
  BVM_E_NETWORK,      /* a remote service failed or was unreachable */
  BVM_E_BUILD,        /* the app's own build failed */
  BVM_E_TIMEOUT,      /* a deadline passed */
  BVM_E_CANCELED,     /* the job was canceled or the runner is stopping */
  BVM_E_LIMIT,        /* a size or count cap was exceeded */
  BVM_E_FENCED,       /* a newer attempt owns the job */
};

struct bvm_error_s
{
  int code;   /* enum bvm_errcode */
  int errnum; /* errno of the root cause, or 0 */
  char *msg;
};
typedef struct bvm_error_s *bvm_error_t;

/* Set *err from a format; `errnum` (if non-zero) appends strerror(errnum).
 * Code is BVM_E_IO when errnum != 0, otherwise BVM_E_INTERNAL.
 * Returns -1 (or -errnum when errnum > 0). If *err is already set, the old
 * error is released first. */
int bvm_error (bvm_error_t *err, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Same with an explicit classification. */
int bvm_error_code (bvm_error_t *err, int code, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

int bvm_error_v (bvm_error_t *err, int code, int errnum, const char *fmt, va_list ap);

/* Prefix context to an existing error: "context: old message". Keeps the
 * code and errnum. Returns the same negative value as bvm_error(). */
int bvm_error_wrap (bvm_error_t *err, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

const char *bvm_error_msg (const bvm_error_t *err);
int bvm_error_get_code (const bvm_error_t *err);
const char *bvm_errcode_name (int code);
void bvm_error_free (bvm_error_t *err);

#define cleanup_error __attribute__ ((cleanup (bvm_error_free)))

#ifdef __clang_analyzer__
/* clang-tidy's analyzer sees one file at a time: without this it follows
 * `if (f () < 0) return` into paths where a constructor returned 0, and
 * reports the uninitialized outputs there. What the constructors promise
 * (a negative value), said where it can see it. */
#define BVM_ERROR_NEGATIVE_(call)                                                                 \
  __extension__({                                                                                 \
    int bvm_r_ = (call);                                                                          \
    if (bvm_r_ >= 0)                                                                              \
      __builtin_unreachable ();                                                                   \
    bvm_r_;                                                                                       \
  })
#define bvm_error(...) BVM_ERROR_NEGATIVE_ (bvm_error (__VA_ARGS__))
#define bvm_error_code(...) BVM_ERROR_NEGATIVE_ (bvm_error_code (__VA_ARGS__))
#define bvm_error_v(...) BVM_ERROR_NEGATIVE_ (bvm_error_v (__VA_ARGS__))
#define bvm_error_wrap(...) BVM_ERROR_NEGATIVE_ (bvm_error_wrap (__VA_ARGS__))
#endif

#endif
