/* fuzz_netaddr.c - host names, IP literals, destinations and allow-lists
 * (netaddr.h), the parsers between a build's "host:port" and a connect()
 *
 * The input, cut at its first NUL, goes through every parser. Properties:
 *   - whatever inet_aton (which getaddrinfo uses for numeric "names")
 *     reads as an address, netaddr_parse_literal reads as the same address:
 *     no spelling of 127.0.0.1 can pass as a name;
 *   - an accepted literal formats to text that parses back to itself, and
 *     every address is refused or reachable with a printable reason;
 *   - an accepted destination has a lowercase host that is a valid name no
 *     libc parser reads as a number, or the canonical text of a literal, a
 *     port in 1..65535, and formats to a string that parses back the same;
 *   - accepted allow-lists have no host bits set past their prefixes;
 *   - a wildcard allow rule never matches its bare domain, nor an address.
 * Every error message is one printable line.
 */
#include "fuzz.h"

#include "netaddr.h"

#include <arpa/inet.h>
#include <strings.h>

static void
check_printable (const char *s)
{
  FUZZ_CHECK (s != NULL && *s != '\0');
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    FUZZ_CHECK (*p >= 0x20 && *p < 0x7f);
}

static bool
has_space (const char *s)
{
  for (; *s; s++)
    if (*s == ' ' || (*s >= '\t' && *s <= '\r'))
      return true;
  return false;
}

static void
literal (const char *s)
{
  struct netaddr a, b;
  struct in_addr in;
  char buf[NETADDR_STRLEN];
  int ret = netaddr_parse_literal (&a, s);
  const char *why;

  FUZZ_CHECK (ret >= -1 && ret <= 1);
  /* inet_aton stops at white space, which no host may contain anyway */
  if (!has_space (s) && inet_aton (s, &in) == 1)
    {
      FUZZ_CHECK (ret == 1);
      FUZZ_CHECK (a.family == NETADDR_V4);
      FUZZ_CHECK (memcmp (a.b, &in, 4) == 0);
    }
  if (ret != 1)
    return;
  FUZZ_CHECK (a.family == NETADDR_V4 || a.family == NETADDR_V6);
  netaddr_format (buf, sizeof buf, &a);
  FUZZ_CHECK (netaddr_parse_literal (&b, buf) == 1);
  FUZZ_CHECK (b.family == a.family && memcmp (a.b, b.b, 16) == 0);
  why = netaddr_problem (&a, NULL);
  if (why != NULL)
    check_printable (why);
  {
    static struct netaddr_allow all;
    if (all.n == 0)
      {
        bvm_error_t err = NULL;
        if (netaddr_allow_parse (&all, "0.0.0.0/0 ::/0", &err) < 0)
          abort ();
      }
    FUZZ_CHECK (netaddr_problem (&a, &all) == NULL);
  }
}

static void
hostport (const char *s)
{
  struct netaddr_hostport hp, again;
  bvm_error_t err = NULL;
  char buf[NETADDR_HOSTPORT_STRLEN], res[NETADDR_HOSTPORT_STRLEN + 8];
  struct in_addr in;
  int ret = netaddr_hostport_parse (&hp, s, &err);

  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      return;
    }
  FUZZ_CHECK (hp.port >= 1);
  FUZZ_CHECK (hp.host[0] != '\0');
  for (const char *c = hp.host; *c; c++)
    FUZZ_CHECK (!(*c >= 'A' && *c <= 'Z') && *c > 0x20 && *c < 0x7f);
  if (!hp.is_literal)
    {
      struct netaddr a;
      FUZZ_CHECK (netaddr_host_problem (hp.host) == NULL);
      FUZZ_CHECK (netaddr_parse_literal (&a, hp.host) == 0);
      FUZZ_CHECK (inet_aton (hp.host, &in) == 0);
      FUZZ_CHECK (hp.host[strlen (hp.host) - 1] != '.');
    }
  netaddr_hostport_format (buf, sizeof buf, &hp);
  ret = netaddr_hostport_parse (&again, buf, &err);
  if (ret < 0)
    {
      fprintf (stderr, "reparse of `%s`: %s\n", buf, bvm_error_msg (&err));
      FUZZ_CHECK (ret == 0);
    }
  FUZZ_CHECK (strcmp (again.host, hp.host) == 0 && again.port == hp.port
              && again.is_literal == hp.is_literal);
  netaddr_resource (res, sizeof res, &hp);
  FUZZ_CHECK (strncmp (res, "net:", 4) == 0);
  /* the policy language takes the resource as one whose host is a pattern */
  FUZZ_CHECK (
      netaddr_host_pattern_problem (res + 4, strlen (res + 4) - strlen (strrchr (res, ':')))
      == NULL);
}

static void
allow (const char *s)
{
  struct netaddr_allow al;
  bvm_error_t err = NULL;
  int ret;

  memset (&al, 0, sizeof al);
  ret = netaddr_allow_parse (&al, s, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      FUZZ_CHECK (al.n <= NETADDR_ALLOW_MAX);
      return;
    }
  FUZZ_CHECK (al.n <= NETADDR_ALLOW_MAX);
  for (size_t i = 0; i < al.n; i++)
    {
      const struct netaddr_range *r = &al.r[i];
      unsigned max = r->base.family == NETADDR_V4 ? 32 : 128;
      FUZZ_CHECK (r->base.family == NETADDR_V4 || r->base.family == NETADDR_V6);
      FUZZ_CHECK (r->prefix <= max);
      for (unsigned bit = r->prefix; bit < max; bit++)
        FUZZ_CHECK ((r->base.b[bit / 8] & (0x80 >> (bit % 8))) == 0);
      /* a range contains its base */
      FUZZ_CHECK (netaddr_allow_contains (&al, &r->base));
    }
}

static void
match (const char *s)
{
  const char *nl = strchr (s, '\n');
  char pattern[512];
  const char *host;
  size_t pl;

  if (nl == NULL || (size_t) (nl - s) >= sizeof pattern)
    return;
  pl = (size_t) (nl - s);
  memcpy (pattern, s, pl);
  pattern[pl] = '\0';
  host = nl + 1;
  if (!netaddr_host_match (pattern, host))
    return;
  if (pattern[0] == '*')
    {
      /* `*.example.com` never matches `example.com` (or `example.com.`) */
      const char *bare = pattern + 2;
      size_t bl = strlen (bare), hl = strlen (host);
      if (bl > 0 && bare[bl - 1] == '.')
        bl--;
      if (hl > 0 && host[hl - 1] == '.')
        hl--;
      struct netaddr a;
      FUZZ_CHECK (pattern[1] == '.');
      FUZZ_CHECK (hl > bl + 1);
      FUZZ_CHECK (netaddr_parse_literal (&a, host) == 0);
    }
  else
    FUZZ_CHECK (strchr (pattern, '*') == NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = fuzz_cstr (data, size);
  const char *why;

  literal (s);
  hostport (s);
  allow (s);
  match (s);
  why = netaddr_host_problem (s);
  if (why != NULL)
    check_printable (why);
  why = netaddr_host_pattern_problem (s, strlen (s));
  if (why != NULL)
    check_printable (why);
  free (s);
  return 0;
}
