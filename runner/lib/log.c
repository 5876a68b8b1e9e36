/* log.c - event log, see log.h */
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level min_level = LOG_LEVEL_INFO;

void
log_set_level (enum log_level level)
{
  min_level = level;
}

enum log_level
log_get_level (void)
{
  return min_level;
}

int
log_parse_level (const char *s)
{
  static const char *names[] = { "debug", "info", "warn", "error" };
  for (size_t i = 0; i < ARRAY_SIZE (names); i++)
    if (strcmp (s, names[i]) == 0)
      return (int) i;
  return -1;
}

void
log_msg (enum log_level level, const char *fmt, ...)
{
  static const char *names[] = { "debug", "info", "warn", "error" };
  char line[4096], ts[40];
  va_list ap;
  int n, m;

  if (level < min_level)
    return;
  format_rfc3339 (ts, sizeof ts, wall_s ());
  n = snprintf (line, sizeof line, "%s %s ", ts, names[level]);
  va_start (ap, fmt);
  m = vsnprintf (line + n, sizeof line - (size_t) n - 1, fmt, ap);
  va_end (ap);
  if (m < 0)
    m = 0;
  n += m;
  if ((size_t) n > sizeof line - 2)
    n = sizeof line - 2;
  /* one event, one line: newlines inside a message would forge events */
  for (int i = 0; i < n; i++)
    if (line[i] == '\n' || line[i] == '\r')
      line[i] = ' ';
  line[n++] = '\n';
  /* a single write keeps lines from concurrent workers whole */
  if (write (STDERR_FILENO, line, (size_t) n) < 0)
    return;
}
