/* buf.h - a growable byte buffer with a mandatory size cap
 *
 * Modelled on curl's dynbuf: the cap is set at init and going over it is an
 * error (E2BIG), never a silent realloc. Every buffer that untrusted input can
 * grow is one of these. The content is always NUL-terminated.
 */
#ifndef BUILDVM_BUF_H
#define BUILDVM_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf
{
  char *ptr;
  size_t len;
  size_t alloc;
  size_t max; /* the content may never exceed this many bytes */
};

/* The cap must be set, and is never widened later: a zero cap is a bug
 * (buf_init asserts it). */
#define BUF_INIT(max_)                                                                            \
  {                                                                                               \
    NULL, 0, 0, (max_)                                                                            \
  }

void buf_init (struct buf *b, size_t max);
/* Hand `src`'s contents and cap over to `dst` (disposed first); `src` is left
 * empty, keeping its cap. */
void buf_move (struct buf *dst, struct buf *src);
/* Append; -1 with errno E2BIG past the cap or ENOMEM. */
int buf_add (struct buf *b, const void *data, size_t len);
int buf_adds (struct buf *b, const char *s);
int buf_addf (struct buf *b, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
int buf_vaddf (struct buf *b, const char *fmt, va_list ap);
void buf_reset (struct buf *b);
/* Free the contents; the struct may be reused after buf_init. */
void buf_dispose (struct buf *b);
/* Wipe the contents before freeing (for secrets). */
void buf_dispose_wipe (struct buf *b);
/* Take the NUL-terminated string; the buffer is left empty. Never NULL. */
char *buf_steal (struct buf *b);
static inline const char *
buf_cstr (const struct buf *b)
{
  return b->ptr ? b->ptr : "";
}

#define cleanup_buf __attribute__ ((cleanup (buf_dispose)))

#endif
