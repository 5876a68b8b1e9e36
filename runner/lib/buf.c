/* buf.c - capped growable buffer, see buf.h */
#include "buf.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
buf_init (struct buf *b, size_t max)
{
  assert (max > 0);
  b->ptr = NULL;
  b->len = 0;
  b->alloc = 0;
  b->max = max;
}

void
buf_move (struct buf *dst, struct buf *src)
{
  buf_dispose (dst);
  *dst = *src;
  src->ptr = NULL;
  src->len = 0;
  src->alloc = 0;
}

static int
buf_grow (struct buf *b, size_t need)
{
  size_t n;
  char *p;

  if (need > b->max || need + 1 < need)
    {
      errno = E2BIG;
      return -1;
    }
  if (need + 1 <= b->alloc)
    return 0;
  n = b->alloc ? b->alloc : 64;
  while (n < need + 1)
    {
      if (n > ((size_t) -1) / 2)
        {
          n = need + 1;
          break;
        }
      n *= 2;
    }
  if (n > b->max + 1)
    n = b->max + 1;
  p = realloc (b->ptr, n);
  if (p == NULL)
    {
      errno = ENOMEM;
      return -1;
    }
  b->ptr = p;
  b->alloc = n;
  return 0;
}

int
buf_add (struct buf *b, const void *data, size_t len)
{
  if (len > b->max - b->len || buf_grow (b, b->len + len) < 0)
    {
      if (errno != ENOMEM)
        errno = E2BIG;
      return -1;
    }
  if (len > 0)
    memcpy (b->ptr + b->len, data, len);
  b->len += len;
  b->ptr[b->len] = '\0';
  return 0;
}

int
buf_adds (struct buf *b, const char *s)
{
  return buf_add (b, s, strlen (s));
}

int
buf_vaddf (struct buf *b, const char *fmt, va_list ap)
{
  char small[256];
  va_list ap2;
  int n;

  va_copy (ap2, ap);
  n = vsnprintf (small, sizeof small, fmt, ap2);
  va_end (ap2);
  if (n < 0)
    {
      errno = EINVAL;
      return -1;
    }
  if ((size_t) n < sizeof small)
    return buf_add (b, small, (size_t) n);
  if ((size_t) n > b->max - b->len || buf_grow (b, b->len + (size_t) n) < 0)
    {
      if (errno != ENOMEM)
        errno = E2BIG;
      return -1;
    }
  vsnprintf (b->ptr + b->len, (size_t) n + 1, fmt, ap);
  b->len += (size_t) n;
  return 0;
}

int
buf_addf (struct buf *b, const char *fmt, ...)
{
  va_list ap;
  int r;
  va_start (ap, fmt);
  r = buf_vaddf (b, fmt, ap);
  va_end (ap);
  return r;
}

void
buf_reset (struct buf *b)
{
  b->len = 0;
  if (b->ptr)
    b->ptr[0] = '\0';
}

void
buf_dispose (struct buf *b)
{
  free (b->ptr);
  b->ptr = NULL;
  b->len = 0;
  b->alloc = 0;
}

void
buf_dispose_wipe (struct buf *b)
{
  if (b->ptr)
    mem_wipe (b->ptr, b->alloc);
  buf_dispose (b);
}

char *
buf_steal (struct buf *b)
{
  char *r = b->ptr;
  if (r == NULL)
    r = xstrdup ("");
  b->ptr = NULL;
  b->len = 0;
  b->alloc = 0;
  return r;
}
