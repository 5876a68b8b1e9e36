/* error.c - error objects, see error.h */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the analyzer's view of the constructors (error.h) is for their callers */
#undef bvm_error
#undef bvm_error_code
#undef bvm_error_v
#undef bvm_error_wrap

static char *
vformat (const char *fmt, va_list ap)
{
  char *s = NULL;
  if (vasprintf (&s, fmt, ap) < 0)
    return NULL;
  return s;
}

int
bvm_error_v (bvm_error_t *err, int code, int errnum, const char *fmt, va_list ap)
{
  int ret = errnum > 0 ? -errnum : -1;
  char *msg, *full = NULL;

  if (err == NULL)
    return ret;
  bvm_error_free (err);

  msg = vformat (fmt, ap);
  if (msg != NULL && errnum > 0)
    {
      if (asprintf (&full, "%s: %s", msg, strerror (errnum)) < 0)
        full = NULL;
      free (msg);
      msg = full;
    }

  *err = calloc (1, sizeof (**err));
  if (*err == NULL)
    {
      free (msg);
      return ret;
    }
  (*err)->code = code;
  (*err)->errnum = errnum > 0 ? errnum : 0;
  (*err)->msg = msg; /* may be NULL under memory pressure; bvm_error_msg copes */
  return ret;
}

int
bvm_error (bvm_error_t *err, int errnum, const char *fmt, ...)
{
  va_list ap;
  int ret;

  va_start (ap, fmt);
  ret = bvm_error_v (err, errnum > 0 ? BVM_E_IO : BVM_E_INTERNAL, errnum, fmt, ap);
  va_end (ap);
  return ret;
}

int
bvm_error_code (bvm_error_t *err, int code, int errnum, const char *fmt, ...)
{
  va_list ap;
  int ret;

  va_start (ap, fmt);
  ret = bvm_error_v (err, code, errnum, fmt, ap);
  va_end (ap);
  return ret;
}

int
bvm_error_wrap (bvm_error_t *err, const char *fmt, ...)
{
  va_list ap;
  char *ctx, *full = NULL;
  int ret;

  if (err == NULL)
    return -1;
  if (*err == NULL)
    {
      /* Nothing to wrap: a caller forgot to set the error. Make one up rather
       * than lose the failure. */
      va_start (ap, fmt);
      ret = bvm_error_v (err, BVM_E_INTERNAL, 0, fmt, ap);
      va_end (ap);
      return ret;
    }
  ret = (*err)->errnum > 0 ? -(*err)->errnum : -1;

  va_start (ap, fmt);
  ctx = vformat (fmt, ap);
  va_end (ap);
  if (ctx == NULL)
    return ret;
  if (asprintf (&full, "%s: %s", ctx, (*err)->msg ? (*err)->msg : "(no message)") < 0)
    {
      free (ctx);
      return ret;
    }
  free (ctx);
  free ((*err)->msg);
  (*err)->msg = full;
  return ret;
}

const char *
bvm_error_msg (const bvm_error_t *err)
{
  if (err == NULL || *err == NULL)
    return "no error";
  if ((*err)->msg == NULL)
    return "out of memory while reporting an error";
  return (*err)->msg;
}

int
bvm_error_get_code (const bvm_error_t *err)
{
  if (err == NULL || *err == NULL)
    return 0;
  return (*err)->code;
}

const char *
bvm_errcode_name (int code)
{
  switch (code)
    {
    case 0: return "ok";
    case BVM_E_INTERNAL: return "internal";
    case BVM_E_USAGE: return "usage";
    case BVM_E_INVALID: return "invalid";
    case BVM_E_DENIED: return "denied";
    case BVM_E_IO: return "io";
    case BVM_E_NETWORK: return "network";
    case BVM_E_BUILD: return "build";
    case BVM_E_TIMEOUT: return "timeout";
    case BVM_E_CANCELED: return "canceled";
    case BVM_E_LIMIT: return "limit";
    case BVM_E_FENCED: return "fenced";
    }
  return "unknown";
}

void
bvm_error_free (bvm_error_t *err)
{
  if (err == NULL || *err == NULL)
    return;
  free ((*err)->msg);
  free (*err);
  *err = NULL;
}
