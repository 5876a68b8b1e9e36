/* util.h - cleanup attributes, ownership helpers and checked parsers
 *
 * Every module includes this. The cleanup attributes follow crun's utils.h:
 * a variable declared with one of them is released when it goes out of scope,
 * so an early `return` on an error path cannot leak it. Hand ownership over
 * with steal_pointer() / steal_fd().
 */
#ifndef BUILDVM_UTIL_H
#define BUILDVM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define LIKELY(x) __builtin_expect (!!(x), 1)
#define UNLIKELY(x) __builtin_expect (!!(x), 0)
#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))

void cleanup_freep (void *p);
void cleanup_closep (int *fd);
void cleanup_fclosep (FILE **f);
void cleanup_pidp (pid_t *pid); /* SIGKILL + waitpid */
void cleanup_unlinkp (char **path);

/* The cleanup function `name` for a variable of type `type *` that
 * release(), which takes NULL, releases: for a cleanup_<name> attribute. */
#define DEFINE_CLEANUP_FUNC(name, type, release)                                                  \
  static inline void name (type **p)                                                              \
  {                                                                                               \
    release (*p);                                                                                 \
  }

#define cleanup_free __attribute__ ((cleanup (cleanup_freep)))
#define cleanup_close __attribute__ ((cleanup (cleanup_closep)))
#define cleanup_fclose __attribute__ ((cleanup (cleanup_fclosep)))
#define cleanup_pid __attribute__ ((cleanup (cleanup_pidp)))
#define cleanup_unlink __attribute__ ((cleanup (cleanup_unlinkp)))

static inline void *
take_ptr (void *pp)
{
  void **p = (void **) pp;
  void *r = *p;
  *p = NULL;
  return r;
}
#define steal_pointer(pp) ((__typeof__ (*(pp))) take_ptr (pp))

static inline int
steal_fd (int *fd)
{
  int r = *fd;
  *fd = -1;
  return r;
}

/* ASCII character classes of the name grammars ([a-z0-9], [A-Za-z0-9]), not
 * <ctype.h>'s, whose answer depends on the locale. */
static inline bool
is_lower_alnum (char c)
{
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static inline bool
is_alnum (char c)
{
  return is_lower_alnum (c) || (c >= 'A' && c <= 'Z');
}

/* Allocation that never returns NULL: on exhaustion it aborts. Used only where
 * an allocation failure cannot be reported sensibly (tiny fixed-size strings in
 * the CLI). Parsers of untrusted input use plain malloc and report ENOMEM. */
char *xstrdup (const char *s);

/* A NULL-terminated copy of `n` strings, or NULL (ENOMEM). */
char **strv_dup (const char *const *v, size_t n);
/* Free a NULL-terminated vector and its strings; NULL is fine. */
void strv_free (char **v);

/* Checked number parsing: the whole string must be a number in range.
 * Return 0 or -1 (with errno set: EINVAL or ERANGE). */
int parse_u64 (const char *s, uint64_t *out);
int parse_u32 (const char *s, uint32_t *out);
int parse_int (const char *s, int *out);

/* Format into a fixed buffer; -1 (errno ENAMETOOLONG) on truncation. */
int snprintf_checked (char *buf, size_t size, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Monotonic time in milliseconds / nanoseconds, wall clock in seconds. */
int64_t now_ms (void);
int64_t now_ns (void);
int64_t wall_s (void);

/* RFC 3339 UTC timestamp of `t` into buf (at least 32 bytes). */
void format_rfc3339 (char *buf, size_t size, int64_t t);

/* Constant-time comparison of two buffers of the same length. */
bool mem_equal_ct (const void *a, const void *b, size_t n);

/* Overwrite memory in a way the compiler may not elide. */
void mem_wipe (void *p, size_t n);

/* The printable one-line form of untrusted bytes, for error and log
 * messages: every byte outside printable ASCII, the backtick and the
 * backslash become \xNN, so a hostile name can neither put escape sequences
 * on an operator's terminal, split a log line, nor end the `quoting` around
 * it. At most `max` input bytes are shown, and no more than fit in `size`
 * (at least 8); a cut is marked "...". Returns out. */
const char *str_escape (char *out, size_t size, const char *s, size_t len, size_t max);
/* All of `len` untrusted bytes to f for an operator's terminal (a guest's
 * console echoed): printable ASCII, tabs and well-formed UTF-8 pass, every
 * other byte (ESC, C0 and C1 controls, invalid UTF-8) becomes \xNN. */
void str_escape_fwrite (FILE *f, const char *s, size_t len);

/* The character at s (len > 0 bytes) into *cp: its length in bytes, or 0
 * when s does not start a well-formed UTF-8 sequence (overlong forms,
 * surrogates and code points past U+10FFFF are not). */
size_t utf8_decode (const char *s, size_t len, uint32_t *cp);

/* Whether `len` bytes are printable text for a name: valid UTF-8 (no
 * overlong forms, surrogates or code points past U+10FFFF) without C0, DEL
 * or C1 control characters (C1 0x9b is a CSI on some terminals). Returns
 * NULL, or why not: "control character" or "invalid UTF-8". */
const char *text_problem (const char *s, size_t len);

/* Whether the string is not printable text by text_problem's rule: a C0 or
 * C1 control character, DEL, or invalid UTF-8. */
static inline bool
has_control (const char *s)
{
  return text_problem (s, __builtin_strlen (s)) != NULL;
}

/* "host[:port]" of `n` bytes, the authority of a registry, redis or git URL
 * without credentials: a DNS name or IPv4 address ([A-Za-z0-9.-]+) or an
 * [IPv6] address, and a port 1-65535 without a leading zero. Returns NULL, or
 * why not ("has an invalid port"). One rule, so that the URL parsers behind
 * (curl, libgit2, hiredis) see the host we checked. */
const char *hostport_problem (const char *s, size_t n);

/* Lowercase hex of `n` bytes into out (2n+1 bytes). */
void hex_encode (char *out, const unsigned char *in, size_t n);
/* The value of one hex digit (either case), or -1. */
int hex_digit (int c);

/* Big-endian 32-bit integers in byte buffers (the sealed formats). */
static inline void
be32_put (unsigned char *p, uint32_t v)
{
  p[0] = (unsigned char) (v >> 24);
  p[1] = (unsigned char) (v >> 16);
  p[2] = (unsigned char) (v >> 8);
  p[3] = (unsigned char) v;
}

static inline uint32_t
be32_get (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

#endif
