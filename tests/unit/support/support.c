/* support.c - helpers shared by the cmocka unit tests */
#include "support.h"
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *
t_tmpdir (void)
{
  const char *base = getenv ("TMPDIR");
  char *d = NULL;
  if (asprintf (&d, "%s/buildvm-test.XXXXXX", base ? base : "/tmp") < 0)
    abort ();
  if (mkdtemp (d) == NULL)
    fail_msg ("mkdtemp: %s", strerror (errno));
  return d;
}

void
t_tmpdir_free (char *dir)
{
  bvm_error_t err = NULL;
  if (dir == NULL)
    return;
  if (fs_rm_rf (dir, &err) < 0)
    {
      print_error ("removing %s: %s\n", dir, bvm_error_msg (&err));
      bvm_error_free (&err);
    }
  free (dir);
}

static char *
vfmt (const char *fmt, va_list ap)
{
  char *s = NULL;
  if (vasprintf (&s, fmt, ap) < 0)
    abort ();
  return s;
}

int
t_sh (const char *fmt, ...)
{
  va_list ap;
  char *cmd;
  int st;

  va_start (ap, fmt);
  cmd = vfmt (fmt, ap);
  va_end (ap);
  st = system (cmd);
  free (cmd);
  if (st == -1)
    return -1;
  return WEXITSTATUS (st);
}

char *
t_sh_out (const char *fmt, ...)
{
  va_list ap;
  char *cmd, *out = NULL;
  size_t cap = 0, len = 0;
  FILE *p;
  char buf[4096];
  size_t n;

  va_start (ap, fmt);
  cmd = vfmt (fmt, ap);
  va_end (ap);
  p = popen (cmd, "r");
  if (p == NULL)
    fail_msg ("popen %s", cmd);
  while ((n = fread (buf, 1, sizeof buf, p)) > 0)
    {
      if (len + n + 1 > cap)
        {
          cap = (len + n + 1) * 2;
          out = realloc (out, cap);
          if (out == NULL)
            abort ();
        }
      memcpy (out + len, buf, n);
      len += n;
    }
  pclose (p);
  free (cmd);
  if (out == NULL)
    out = strdup ("");
  else
    out[len] = '\0';
  while (len > 0 && out[len - 1] == '\n')
    out[--len] = '\0';
  return out;
}

void
t_write (const char *path, const char *content)
{
  char *dir = strdup (path), *slash;
  bvm_error_t err = NULL;
  FILE *f;

  slash = strrchr (dir, '/');
  if (slash != NULL && slash != dir)
    {
      *slash = '\0';
      if (fs_mkdir_p (dir, 0755, &err) < 0)
        fail_msg ("%s", bvm_error_msg (&err));
    }
  free (dir);
  f = fopen (path, "w");
  if (f == NULL)
    fail_msg ("fopen %s: %s", path, strerror (errno));
  fputs (content, f);
  fclose (f);
}

char *
t_read (const char *path)
{
  char *out = NULL;
  size_t len;
  bvm_error_t err = NULL;
  if (fs_read_file (&out, &len, path, 1 << 30, &err) < 0)
    fail_msg ("%s", bvm_error_msg (&err));
  return out;
}

const char *
t_service (const char *env_name)
{
  const char *v = getenv (env_name);
  if (v == NULL || *v == '\0')
    fail_msg ("%s is not set: run this test through tests/with-services.sh (make unit)", env_name);
  return v;
}
