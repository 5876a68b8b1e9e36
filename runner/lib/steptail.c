/* steptail.c - the last lines of a build step's output, see steptail.h */
#include "steptail.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

void
steptail_init (struct steptail *t)
{
  memset (t, 0, sizeof *t);
}

/* "==> step K/N: NAME" -> K; 0 when the line is not a start marker */
static unsigned
start_marker (const char *line, size_t len)
{
  static const char pre[] = "==> step ";
  size_t i = sizeof pre - 1;
  unsigned k = 0;
  bool slash = false;

  if (len <= i || memcmp (line, pre, i) != 0)
    return 0;
  for (; i < len && line[i] >= '0' && line[i] <= '9' && k < 100000; i++)
    k = k * 10 + (unsigned) (line[i] - '0');
  if (i < len && line[i] == '/')
    {
      slash = true;
      for (i++; i < len && line[i] >= '0' && line[i] <= '9'; i++)
        ;
    }
  return slash && i + 1 < len && line[i] == ':' && line[i + 1] == ' ' ? k : 0;
}

static bool
end_marker (const char *line, size_t len)
{
  static const char pre[] = "==> step ";
  return len > sizeof pre - 1 && memcmp (line, pre, sizeof pre - 1) == 0
         && (memmem (line, len, ") exited with status ", 21) != NULL
             || memmem (line, len, ") timed out after ", 18) != NULL);
}

void
steptail_line (struct steptail *t, const char *line, size_t len)
{
  unsigned k = start_marker (line, len);
  char *slot;

  if (k > 0)
    {
      t->first = t->n = 0;
      t->total = 0;
      t->step = k;
      t->open = true;
      return;
    }
  if (!t->open)
    return;
  if (end_marker (line, len))
    {
      t->open = false;
      return;
    }
  t->total++;
  if (t->n < STEPTAIL_LINES)
    slot = t->lines[(t->first + t->n++) % STEPTAIL_LINES];
  else
    {
      slot = t->lines[t->first];
      t->first = (t->first + 1) % STEPTAIL_LINES;
    }
  if (len > STEPTAIL_LINE_MAX)
    {
      /* cut at a character boundary: no half of a UTF-8 sequence */
      size_t cut = STEPTAIL_LINE_MAX;
      while (cut > 0 && ((unsigned char) line[cut] & 0xC0) == 0x80)
        cut--;
      snprintf (slot, STEPTAIL_LINE_MAX + 4, "%.*s...", (int) cut, line);
    }
  else
    snprintf (slot, STEPTAIL_LINE_MAX + 4, "%.*s", (int) len, line);
}

json_t *
steptail_to_json (const struct steptail *t, unsigned step)
{
  json_t *a = json_array ();
  if (a == NULL || step == 0 || step != t->step)
    return a;
  for (size_t i = 0; i < t->n; i++)
    json_array_append_new (a, json_string (t->lines[(t->first + i) % STEPTAIL_LINES]));
  return a;
}

const char *
steptail_hint (const struct steptail *t, bool egress)
{
  /* what resolvers say when there is no DNS: glibc, curl, Node.js, Python,
   * Go, git (through curl), busybox */
  static const char *const lookup[] = {
    "EAI_AGAIN",
    "getaddrinfo",
    "Could not resolve host",
    "Temporary failure in name resolution",
    "Name or service not known",
    "dial tcp: lookup ",
    "bad address '",
  };
  for (size_t i = 0; i < t->n; i++)
    for (size_t j = 0; j < ARRAY_SIZE (lookup); j++)
      if (strstr (t->lines[(t->first + i) % STEPTAIL_LINES], lookup[j]) != NULL)
        return egress ? "the build VM has no DNS: every connection goes through the egress proxy "
                        "in $HTTPS_PROXY and $HTTP_PROXY, and this tool looked a name up itself "
                        "(it ignores the proxy variables, or $NO_PROXY names the host)"
                      : "the build VM has no network: a step reaches other hosts only through the "
                        "egress proxy, and only those its role allows: ask for them in "
                        "buildvm.json (`\"egress\": [\"registry.npmjs.org:443\"]`) or in "
                        "runner.json's `egress.allow` (docs/getting-started.md, \"A build that "
                        "needs the network\")";
  return NULL;
}
