/* util.c - cleanup helpers, checked parsers, time */
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void
cleanup_freep (void *p)
{
  void **pp = (void **) p;
  free (*pp);
}

void
cleanup_closep (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
    }
}

void
cleanup_fclosep (FILE **f)
{
  if (*f != NULL)
    fclose (*f);
}

void
cleanup_pidp (pid_t *pid)
{
  if (*pid > 0)
    {
      int saved = errno;
      kill (*pid, SIGKILL);
      while (waitpid (*pid, NULL, 0) < 0 && errno == EINTR)
        ;
      errno = saved;
    }
}

void
cleanup_unlinkp (char **path)
{
  if (*path != NULL)
    {
      int saved = errno;
      unlink (*path);
      free (*path);
      errno = saved;
    }
}

char *
xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

int
parse_u64 (const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (s == NULL || *s < '0' || *s > '9')
    {
      errno = EINVAL;
      return -1;
    }
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno != 0)
    return -1;
  if (*end != '\0')
    {
      errno = EINVAL;
      return -1;
    }
  *out = v;
  return 0;
}

char **
strv_dup (const char *const *v, size_t n)
{
  char **r = calloc (n + 1, sizeof *r);

  for (size_t i = 0; r != NULL && i < n; i++)
    if ((r[i] = strdup (v[i])) == NULL)
      {
        strv_free (r);
        return NULL;
      }
  return r;
}

void
strv_free (char **v)
{
  if (v == NULL)
    return;
  for (char **p = v; *p; p++)
    free (*p);
  free (v);
}

int
parse_u32 (const char *s, uint32_t *out)
{
  uint64_t v;
  if (parse_u64 (s, &v) < 0)
    return -1;
  if (v > UINT32_MAX)
    {
      errno = ERANGE;
      return -1;
    }
  *out = (uint32_t) v;
  return 0;
}

int
parse_int (const char *s, int *out)
{
  char *end;
  long v;

  if (s == NULL || *s == '\0')
    {
      errno = EINVAL;
      return -1;
    }
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno != 0)
    return -1;
  if (*end != '\0' || end == s)
    {
      errno = EINVAL;
      return -1;
    }
  if (v < INT_MIN || v > INT_MAX)
    {
      errno = ERANGE;
      return -1;
    }
  *out = (int) v;
  return 0;
}

int
snprintf_checked (char *buf, size_t size, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (buf, size, fmt, ap);
  va_end (ap);
  if (n < 0 || (size_t) n >= size)
    {
      errno = ENAMETOOLONG;
      return -1;
    }
  return n;
}

int64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
now_ms (void)
{
  return now_ns () / 1000000;
}

int64_t
wall_s (void)
{
  return (int64_t) time (NULL);
}

void
format_rfc3339 (char *buf, size_t size, int64_t t)
{
  struct tm tm;
  time_t tt = (time_t) t;
  gmtime_r (&tt, &tm);
  strftime (buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool
mem_equal_ct (const void *a, const void *b, size_t n)
{
  const volatile unsigned char *x = a, *y = b;
  unsigned char d = 0;
  for (size_t i = 0; i < n; i++)
    d |= x[i] ^ y[i];
  return d == 0;
}

void
mem_wipe (void *p, size_t n)
{
  if (p != NULL && n > 0)
    explicit_bzero (p, n);
}

const char *
str_escape (char *out, size_t size, const char *s, size_t len, size_t max)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, i;

  if (size < 8)
    {
      if (size > 0)
        out[0] = '\0';
      return out;
    }
  for (i = 0; i < len && i < max; i++)
    {
      unsigned char c = (unsigned char) s[i];
      if (o + 8 >= size) /* room for one escape, "..." and the NUL */
        break;
      if (c < 0x20 || c >= 0x7f || c == '`' || c == '\\')
        {
          out[o++] = '\\';
          out[o++] = 'x';
          out[o++] = hex[c >> 4];
          out[o++] = hex[c & 15];
        }
      else
        out[o++] = (char) c;
    }
  if (i < len)
    {
      memcpy (out + o, "...", 3);
      o += 3;
    }
  out[o] = '\0';
  return out;
}

void
str_escape_fwrite (FILE *f, const char *s, size_t len)
{
  const unsigned char *u = (const unsigned char *) s;
  size_t i = 0;

  /* What a terminal only displays passes: printable ASCII, a tab (it moves
   * the cursor, nothing else) and well-formed UTF-8 other than the C1
   * controls (text_problem); every other byte, ESC first of all, is \xNN. */
  while (i < len)
    {
      size_t n = u[i] < 0x80 ? 1 : u[i] >= 0xf0 ? 4 : u[i] >= 0xe0 ? 3 : 2;
      if (u[i] == '\t' || (n <= len - i && text_problem (s + i, n) == NULL))
        {
          fwrite (s + i, 1, n, f);
          i += n;
        }
      else
        {
          fprintf (f, "\\x%02x", u[i]);
          i++;
        }
    }
}

const char *
hostport_problem (const char *s, size_t n)
{
  const char *port = NULL;
  size_t hlen;

  if (n == 0)
    return "has no host";
  if (s[0] == '[')
    {
      const char *close = memchr (s, ']', n);
      if (close == NULL)
        return "has an unterminated IPv6 address";
      for (const char *p = s + 1; p < close; p++)
        if (!(is_alnum (*p) || *p == ':' || *p == '.'))
          return "has an invalid IPv6 address";
      hlen = (size_t) (close - s) + 1;
      if (hlen < n && s[hlen] != ':')
        return "has an invalid host";
      port = hlen < n ? s + hlen + 1 : NULL;
    }
  else
    {
      const char *colon = memchr (s, ':', n);
      hlen = colon ? (size_t) (colon - s) : n;
      if (hlen == 0)
        return "has no host";
      for (size_t i = 0; i < hlen; i++)
        if (!(is_alnum (s[i]) || s[i] == '.' || s[i] == '-'))
          return "has an invalid host name";
      port = colon ? colon + 1 : NULL;
    }
  if (port != NULL)
    {
      size_t plen = (size_t) (s + n - port);
      char num[8];
      uint32_t v;
      if (plen == 0 || plen > 5 || port[0] == '0')
        return "has an invalid port";
      memcpy (num, port, plen);
      num[plen] = '\0';
      if (parse_u32 (num, &v) < 0 || v < 1 || v > 65535)
        return "has an invalid port";
    }
  return NULL;
}

size_t
utf8_decode (const char *str, size_t len, uint32_t *cp)
{
  const unsigned char *s = (const unsigned char *) str;
  unsigned c = s[0];
  size_t n;

  if (c < 0x80)
    {
      *cp = c;
      return 1;
    }
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, *cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, *cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, *cp = c & 0x07;
  else
    return 0;
  if (len < n)
    return 0;
  for (size_t k = 1; k < n; k++)
    {
      if ((s[k] & 0xc0) != 0x80)
        return 0;
      *cp = (*cp << 6) | (s[k] & 0x3f);
    }
  if ((n == 3 && *cp < 0x800) || (n == 4 && (*cp < 0x10000 || *cp > 0x10ffff))
      || (*cp >= 0xd800 && *cp <= 0xdfff))
    return 0;
  return n;
}

const char *
text_problem (const char *s, size_t len)
{
  size_t i = 0;

  while (i < len)
    {
      uint32_t cp;
      size_t n = utf8_decode (s + i, len - i, &cp);

      if (n == 0)
        return "invalid UTF-8";
      if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
        return "control character";
      i += n;
    }
  return NULL;
}

void
hex_encode (char *out, const unsigned char *in, size_t n)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++)
    {
      out[2 * i] = digits[in[i] >> 4];
      out[2 * i + 1] = digits[in[i] & 15];
    }
  out[2 * n] = '\0';
}

int
hex_digit (int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}
