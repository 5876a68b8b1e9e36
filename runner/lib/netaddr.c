/* netaddr.c - IP literals, the SSRF address rules, host names (netaddr.h)
 *
 * Why the literal parser is so permissive: the runner must refuse every
 * spelling of an internal address a client in the guest could use to reach
 * it. glibc's getaddrinfo() reads a "name" such as `2130706433` or `0x7f.1`
 * with inet_aton() and connects to 127.0.0.1, and browsers (the WHATWG URL
 * standard's IPv4 parser) do the same; so this parser accepts exactly what
 * they accept and turns it into one canonical address before any check. A
 * host whose last label is a number but which is no valid address
 * (`1.2.3.4.5`, `256.1.1.1`) is a malformed literal and refused, as the
 * URL standard does, rather than handed to a resolver that might guess.
 */
#include "netaddr.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static inline char
lower (char c)
{
  return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}

static inline bool
is_digit (char c)
{
  return c >= '0' && c <= '9';
}

static inline bool
is_hex (char c)
{
  c = lower (c);
  return is_digit (c) || (c >= 'a' && c <= 'f');
}

/* ------------------------------------------------------------------------ */
/* IPv4 in the inet_aton / WHATWG spellings                                  */

/* One part: decimal, 0-prefixed octal, 0x-prefixed hex ("0x" alone is 0, as
 * in the URL standard). -1 when it is no number or exceeds 32 bits. */
static int
v4_number (const char *s, size_t len, uint64_t *out)
{
  unsigned base = 10;
  uint64_t v = 0;

  if (len == 0)
    return -1;
  if (len >= 2 && s[0] == '0' && lower (s[1]) == 'x')
    {
      base = 16;
      s += 2;
      len -= 2;
    }
  else if (len >= 2 && s[0] == '0')
    {
      base = 8;
      s++;
      len--;
    }
  for (size_t i = 0; i < len; i++)
    {
      char c = lower (s[i]);
      unsigned d;
      if (is_digit (c))
        d = (unsigned) (c - '0');
      else if (base == 16 && c >= 'a' && c <= 'f')
        d = (unsigned) (c - 'a' + 10);
      else
        return -1;
      if (d >= base)
        return -1;
      v = v * base + d;
      if (v > 0xffffffffu)
        return -1; /* also bounds the loop's arithmetic: no overflow */
    }
  *out = v;
  return 0;
}

/* The URL standard's "ends in a number": the last label (after one trailing
 * dot) is all digits or a 0x-prefixed hex number. Such a host is an IPv4
 * literal or it is invalid; it is never a name. */
static bool
ends_in_number (const char *s, size_t len)
{
  const char *last;
  size_t n;
  uint64_t v;

  if (len > 0 && s[len - 1] == '.')
    len--;
  if (len == 0)
    return false;
  last = s + len;
  while (last > s && last[-1] != '.')
    last--;
  n = (size_t) (s + len - last);
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!is_digit (last[i]))
      return n >= 2 && last[0] == '0' && lower (last[1]) == 'x' && v4_number (last, n, &v) == 0;
  return true;
}

/* 1 = an IPv4 literal, 0 = not one (a name), -1 = ends in a number but
 * is no address. */
static int
parse_v4 (struct netaddr *out, const char *s, size_t len)
{
  uint64_t parts[4];
  size_t n = 0;
  const char *p = s;
  uint32_t v;

  if (!ends_in_number (s, len))
    return 0;
  if (s[len - 1] == '.')
    len--;
  while (true)
    {
      const char *dot = memchr (p, '.', (size_t) (s + len - p));
      size_t plen = dot ? (size_t) (dot - p) : (size_t) (s + len - p);
      if (n == 4 || v4_number (p, plen, &parts[n]) < 0)
        return -1;
      n++;
      if (dot == NULL)
        break;
      p = dot + 1;
    }
  for (size_t i = 0; i + 1 < n; i++)
    if (parts[i] > 255)
      return -1;
  if (parts[n - 1] >= (1ull << (8 * (5 - n))))
    return -1;
  v = (uint32_t) parts[n - 1];
  for (size_t i = 0; i + 1 < n; i++)
    v |= (uint32_t) parts[i] << (8 * (3 - i));
  memset (out, 0, sizeof *out);
  out->family = NETADDR_V4;
  out->b[0] = (uint8_t) (v >> 24);
  out->b[1] = (uint8_t) (v >> 16);
  out->b[2] = (uint8_t) (v >> 8);
  out->b[3] = (uint8_t) v;
  return 1;
}

static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* ::ffff:a.b.c.d reaches a.b.c.d: hold it as that. */
static void
canonicalize (struct netaddr *a)
{
  if (a->family == NETADDR_V6 && memcmp (a->b, mapped_prefix, 12) == 0)
    {
      uint8_t v4[4];
      memcpy (v4, a->b + 12, 4);
      memset (a->b, 0, sizeof a->b);
      memcpy (a->b, v4, 4);
      a->family = NETADDR_V4;
    }
}

/* RFC 4291 text, no zone id. -1 when it is none. */
static int
parse_v6 (struct netaddr *out, const char *s, size_t len)
{
  char tmp[64];

  if (len == 0 || len >= sizeof tmp || memchr (s, '%', len) != NULL)
    return -1;
  memcpy (tmp, s, len);
  tmp[len] = '\0';
  memset (out, 0, sizeof *out);
  if (inet_pton (AF_INET6, tmp, out->b) != 1)
    return -1;
  out->family = NETADDR_V6;
  canonicalize (out);
  return 1;
}

int
netaddr_parse_literal (struct netaddr *out, const char *host)
{
  size_t len = strlen (host);

  if (len > 0 && host[0] == '[')
    {
      if (len < 3 || host[len - 1] != ']')
        return -1;
      return parse_v6 (out, host + 1, len - 2);
    }
  if (memchr (host, ':', len) != NULL || memchr (host, ']', len) != NULL)
    return parse_v6 (out, host, len);
  return parse_v4 (out, host, len);
}

/* ------------------------------------------------------------------------ */
/* the rules                                                                 */

struct rule
{
  uint8_t b[16];
  unsigned prefix;
  const char *why;
};

static bool
in_prefix (const uint8_t *a, const uint8_t *base, unsigned prefix)
{
  unsigned full = prefix / 8, rest = prefix % 8;

  if (memcmp (a, base, full) != 0)
    return false;
  if (rest == 0)
    return true;
  return ((a[full] ^ base[full]) & (uint8_t) (0xff << (8 - rest))) == 0;
}

/* The first match decides: broadcast before 240/4. */
static const struct rule v4_rules[] = {
  { { 255, 255, 255, 255 }, 32, "broadcast address" },
  { { 0 }, 8, "\"this network\" address (0.0.0.0/8)" },
  { { 10 }, 8, "private address (RFC 1918)" },
  { { 100, 64 }, 10, "shared address space (CGNAT, 100.64.0.0/10)" },
  { { 127 }, 8, "loopback address" },
  { { 169, 254 }, 16, "link-local address (cloud metadata range)" },
  { { 172, 16 }, 12, "private address (RFC 1918)" },
  { { 192, 0, 0 }, 24, "reserved address (IETF protocol assignments, 192.0.0.0/24)" },
  { { 192, 0, 2 }, 24, "reserved address (documentation)" },
  { { 192, 168 }, 16, "private address (RFC 1918)" },
  { { 198, 18 }, 15, "reserved address (benchmarking, 198.18.0.0/15)" },
  { { 198, 51, 100 }, 24, "reserved address (documentation)" },
  { { 203, 0, 113 }, 24, "reserved address (documentation)" },
  { { 224 }, 4, "multicast address" },
  { { 240 }, 4, "reserved address (240.0.0.0/4)" },
};

enum embed
{
  EMBED_NONE,
  EMBED_LOW32, /* the last 32 bits */
  EMBED_6TO4,  /* bits 16..47 */
};

static const struct
{
  uint8_t b[16];
  unsigned prefix;
  const char *why; /* NULL: judged by the embedded IPv4 address */
  enum embed embed;
} v6_rules[] = {
  { { 0 }, 128, "unspecified address", EMBED_NONE },
  { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128, "loopback address", EMBED_NONE },
  /* IPv4-compatible (deprecated) ::a.b.c.d */
  { { 0 }, 96, NULL, EMBED_LOW32 },
  /* SIIT IPv4-translated ::ffff:0:a.b.c.d */
  { { 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0 }, 96, NULL, EMBED_LOW32 },
  /* NAT64 well-known prefix: the gateway connects to the embedded address */
  { { 0, 0x64, 0xff, 0x9b }, 96, NULL, EMBED_LOW32 },
  { { 0, 0x64, 0xff, 0x9b, 0, 1 },
    48,
    "reserved address (local-use NAT64, 64:ff9b:1::/48)",
    EMBED_NONE },
  { { 0x01 }, 64, "reserved address (discard-only, 100::/64)", EMBED_NONE },
  /* Teredo hides its IPv4 addresses (obfuscated): never reach it */
  { { 0x20, 0x01, 0, 0 }, 32, "reserved address (Teredo, 2001::/32)", EMBED_NONE },
  { { 0x20, 0x01, 0x0d, 0xb8 }, 32, "reserved address (documentation)", EMBED_NONE },
  { { 0x20, 0x02 }, 16, NULL, EMBED_6TO4 },
  { { 0xfc }, 7, "unique local address (fc00::/7)", EMBED_NONE },
  { { 0xfe, 0x80 }, 10, "link-local address (fe80::/10)", EMBED_NONE },
  { { 0xfe, 0xc0 }, 10, "site-local address (fec0::/10)", EMBED_NONE },
  { { 0xff }, 8, "multicast address", EMBED_NONE },
};

static const uint8_t global_unicast[16] = { 0x20 };

static const char *
v4_problem (const uint8_t *b)
{
  for (size_t i = 0; i < ARRAY_SIZE (v4_rules); i++)
    if (in_prefix (b, v4_rules[i].b, v4_rules[i].prefix))
      return v4_rules[i].why;
  return NULL;
}

bool
netaddr_allow_contains (const struct netaddr_allow *allow, const struct netaddr *a)
{
  if (allow == NULL)
    return false;
  for (size_t i = 0; i < allow->n && i < NETADDR_ALLOW_MAX; i++)
    if (allow->r[i].base.family == a->family
        && in_prefix (a->b, allow->r[i].base.b, allow->r[i].prefix))
      return true;
  return false;
}

const char *
netaddr_problem (const struct netaddr *addr, const struct netaddr_allow *allow)
{
  struct netaddr a = *addr;

  canonicalize (&a);
  if (netaddr_allow_contains (allow, &a))
    return NULL;
  if (a.family == NETADDR_V4)
    return v4_problem (a.b);
  if (a.family != NETADDR_V6)
    return "not an IP address";
  for (size_t i = 0; i < ARRAY_SIZE (v6_rules); i++)
    if (in_prefix (a.b, v6_rules[i].b, v6_rules[i].prefix))
      {
        if (v6_rules[i].embed == EMBED_LOW32)
          return v4_problem (a.b + 12);
        if (v6_rules[i].embed == EMBED_6TO4)
          return v4_problem (a.b + 2);
        return v6_rules[i].why;
      }
  /* IANA has allocated only 2000::/3 for global unicast; everything else
   * not listed above is reserved. Fail closed. */
  if (!in_prefix (a.b, global_unicast, 3))
    return "reserved address (outside 2000::/3)";
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* allow-lists                                                               */

static int
parse_range (struct netaddr_range *out, const char *s, size_t len, bvm_error_t *err)
{
  char tmp[80], sh[128];
  const char *slash = memchr (s, '/', len);
  size_t alen = slash ? (size_t) (slash - s) : len;
  unsigned max;
  uint32_t prefix;

  str_escape (sh, sizeof sh, s, len, 80);
  if (alen == 0 || alen >= sizeof tmp)
    return bvm_error_code (err, BVM_E_INVALID, 0, "allowed range `%s` is no CIDR range", sh);
  memcpy (tmp, s, alen);
  tmp[alen] = '\0';
  memset (out, 0, sizeof *out);
  /* the strict forms only: an operator writes 10.0.0.0/8, never 012.0/8 */
  if (inet_pton (AF_INET, tmp, out->base.b) == 1)
    out->base.family = NETADDR_V4, max = 32;
  else if (strchr (tmp, '%') == NULL && inet_pton (AF_INET6, tmp, out->base.b) == 1)
    out->base.family = NETADDR_V6, max = 128;
  else
    {
      char ash[128];
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "allowed range `%s`: `%s` is no IPv4 or IPv6 address", sh,
                             str_escape (ash, sizeof ash, tmp, alen, 80));
    }
  prefix = max;
  if (slash != NULL)
    {
      size_t plen = len - alen - 1;
      if (plen == 0 || plen > 3 || (plen > 1 && slash[1] == '0'))
        return bvm_error_code (err, BVM_E_INVALID, 0, "allowed range `%s` has a bad prefix", sh);
      memcpy (tmp, slash + 1, plen);
      tmp[plen] = '\0';
      if (parse_u32 (tmp, &prefix) < 0 || prefix > max)
        return bvm_error_code (err, BVM_E_INVALID, 0, "allowed range `%s` has a bad prefix", sh);
    }
  out->prefix = prefix;
  for (unsigned bit = prefix; bit < max; bit++)
    if (out->base.b[bit / 8] & (0x80 >> (bit % 8)))
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "allowed range `%s` has bits set past its /%u prefix", sh, prefix);
  if (out->base.family == NETADDR_V6 && prefix >= 96
      && memcmp (out->base.b, mapped_prefix, 12) == 0)
    {
      /* ::ffff:a.b.c.d/N is the IPv4 range, as the addresses are held */
      struct netaddr v = out->base;
      canonicalize (&v);
      out->base = v;
      out->prefix = prefix - 96;
    }
  return 0;
}

int
netaddr_allow_parse (struct netaddr_allow *allow, const char *list, bvm_error_t *err)
{
  const char *p = list;

  while (*p != '\0')
    {
      size_t len;
      int ret;
      if (*p == ',' || *p == ' ' || *p == '\t')
        {
          p++;
          continue;
        }
      len = strcspn (p, ", \t");
      if (allow->n >= NETADDR_ALLOW_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "more than %d allowed address ranges",
                               NETADDR_ALLOW_MAX);
      ret = parse_range (&allow->r[allow->n], p, len, err);
      if (ret < 0)
        return ret;
      allow->n++;
      p += len;
    }
  return 0;
}

const char *
netaddr_format (char *buf, size_t size, const struct netaddr *a)
{
  if (size == 0)
    return buf;
  if (inet_ntop (a->family == NETADDR_V4 ? AF_INET : AF_INET6, a->b, buf, (socklen_t) size)
      == NULL)
    snprintf (buf, size, "?");
  return buf;
}

unsigned
netaddr_sockaddr (struct sockaddr_storage *ss, const struct netaddr *a, uint16_t port)
{
  memset (ss, 0, sizeof *ss);
  if (a->family == NETADDR_V4)
    {
      struct sockaddr_in *in = (struct sockaddr_in *) ss;
      in->sin_family = AF_INET;
      in->sin_port = htons (port);
      memcpy (&in->sin_addr, a->b, 4);
      return sizeof *in;
    }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons (port);
  memcpy (&in6->sin6_addr, a->b, 16);
  return sizeof *in6;
}

/* ------------------------------------------------------------------------ */
/* names                                                                     */

const char *
netaddr_host_problem (const char *host)
{
  size_t len = strnlen (host, NETADDR_HOST_MAX + 2);
  const char *label = host;

  if (len == 0)
    return "empty host name";
  if (host[len - 1] == '.' && len > 1)
    len--;
  if (len > NETADDR_HOST_MAX)
    return "host name longer than 253 bytes";
  for (size_t i = 0;; i++)
    {
      if (i == len || host[i] == '.')
        {
          size_t n = (size_t) (host + i - label);
          if (n == 0)
            return "empty label in host name";
          if (n > NETADDR_LABEL_MAX)
            return "label longer than 63 bytes in host name";
          if (label[0] == '-' || label[n - 1] == '-')
            return "label begins or ends with `-` in host name";
          if (i == len)
            break;
          label = host + i + 1;
          continue;
        }
      unsigned char c = (unsigned char) host[i];
      if (c >= 0x80)
        return "non-ASCII host name (use its xn-- form)";
      if (!(is_digit ((char) c) || (lower ((char) c) >= 'a' && lower ((char) c) <= 'z')
            || c == '-'))
        return "invalid character in host name";
    }
  if (ends_in_number (host, len))
    return "host name ends in a number (an IPv4 address?)";
  return NULL;
}

int
netaddr_hostport_parse (struct netaddr_hostport *out, const char *s, bvm_error_t *err)
{
  char host[NETADDR_INPUT_MAX + 1], sh[128], pbuf[8];
  const char *colon, *port;
  size_t len = strnlen (s, NETADDR_INPUT_MAX + 8), hlen;
  const char *why = NULL;
  uint32_t pv;
  int lit;

  memset (out, 0, sizeof *out);
  str_escape (sh, sizeof sh, s, len, 80);
  if (len > NETADDR_INPUT_MAX + 6)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s` is too long", sh);
  if (s[0] == '[')
    {
      const char *close = memchr (s, ']', len);
      if (close == NULL || close[1] != ':')
        return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s` must be `[ipv6]:port`",
                               sh);
      colon = close + 1;
    }
  else
    {
      colon = memrchr (s, ':', len);
      if (colon != NULL && memchr (s, ':', (size_t) (colon - s)) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "destination `%s`: an IPv6 address must be in brackets", sh);
    }
  if (colon == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s` has no port", sh);
  hlen = (size_t) (colon - s);
  if (hlen == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s` has no host", sh);
  if (hlen > NETADDR_INPUT_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s`: host too long", sh);

  port = colon + 1;
  if (*port == '\0' || strlen (port) > 5 || port[0] == '0'
      || strspn (port, "0123456789") != strlen (port))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "destination `%s`: the port must be a number from 1 to 65535", sh);
  snprintf (pbuf, sizeof pbuf, "%s", port);
  if (parse_u32 (pbuf, &pv) < 0 || pv < 1 || pv > 65535)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "destination `%s`: the port must be a number from 1 to 65535", sh);
  out->port = (uint16_t) pv;

  memcpy (host, s, hlen);
  host[hlen] = '\0';
  lit = netaddr_parse_literal (&out->addr, host);
  if (lit < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s`: malformed IP address literal",
                           sh);
  if (lit == 1)
    {
      out->is_literal = true;
      netaddr_format (out->host, sizeof out->host, &out->addr);
      return 0;
    }
  why = netaddr_host_problem (host);
  if (why != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "destination `%s`: %s", sh, why);
  if (host[hlen - 1] == '.')
    hlen--;
  for (size_t i = 0; i < hlen; i++)
    out->host[i] = lower (host[i]);
  out->host[hlen] = '\0';
  return 0;
}

const char *
netaddr_hostport_format (char *buf, size_t size, const struct netaddr_hostport *hp)
{
  bool br = hp->is_literal && hp->addr.family == NETADDR_V6;
  snprintf (buf, size, "%s%s%s:%u", br ? "[" : "", hp->host, br ? "]" : "", hp->port);
  return buf;
}

const char *
netaddr_resource (char *buf, size_t size, const struct netaddr_hostport *hp)
{
  char hpbuf[NETADDR_HOSTPORT_STRLEN];
  snprintf (buf, size, "net:%s", netaddr_hostport_format (hpbuf, sizeof hpbuf, hp));
  return buf;
}

bool
netaddr_host_match (const char *pattern, const char *host)
{
  size_t pl = strlen (pattern), hl = strlen (host);

  if (pl > 0 && pattern[pl - 1] == '.')
    pl--;
  if (hl > 0 && host[hl - 1] == '.')
    hl--;
  if (pl == 0 || hl == 0)
    return false;
  if (pl >= 3 && pattern[0] == '*' && pattern[1] == '.')
    {
      struct netaddr lit;
      /* labels are a name's: `*.0.0.1` must not reach 127.0.0.1 */
      if (netaddr_parse_literal (&lit, host) != 0)
        return false;
      /* host = LABELS + ".suffix" with LABELS non-empty: a normalized host
       * has no empty label, so the byte before the suffix is no dot */
      const char *suffix = pattern + 1;
      size_t sl = pl - 1;
      if (memchr (suffix, '*', sl) != NULL || hl <= sl)
        return false;
      return strncasecmp (host + hl - sl, suffix, sl) == 0 && host[hl - sl - 1] != '.';
    }
  if (memchr (pattern, '*', pl) != NULL)
    return false;
  return pl == hl && strncasecmp (pattern, host, pl) == 0;
}

const char *
netaddr_host_pattern_problem (const char *pat, size_t len)
{
  if (len == 0)
    return "empty host";
  if (len > NETADDR_HOST_MAX + 2)
    return "host pattern longer than 255 bytes";
  if (pat[0] == '[')
    {
      if (len < 3 || pat[len - 1] != ']')
        return "unterminated `[` in an IPv6 host";
      for (size_t i = 1; i + 1 < len; i++)
        if (!(is_hex (pat[i]) || pat[i] == ':' || pat[i] == '.' || pat[i] == '*' || pat[i] == '?'))
          return "invalid character in an IPv6 host";
        else if (pat[i] >= 'A' && pat[i] <= 'F')
          return "upper-case letters in a host never match (hosts are compared in lower case)";
      return NULL;
    }
  for (size_t i = 0; i < len; i++)
    {
      char c = pat[i];
      if (c >= 'A' && c <= 'Z')
        return "upper-case letters in a host never match (hosts are compared in lower case)";
      if (!(is_digit (c) || (c >= 'a' && c <= 'z') || c == '-' || c == '.' || c == '*'
            || c == '?'))
        return "invalid character in a host";
    }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* resolving                                                                 */

int
netaddr_resolve (struct netaddr_resolved *out, const struct netaddr_hostport *hp,
                 const struct netaddr_allow *allow, bvm_error_t *err)
{
  struct addrinfo hints, *res = NULL;
  char ab[NETADDR_STRLEN];
  const char *why;
  int rc;

  memset (out, 0, sizeof *out);
  if (hp->is_literal)
    {
      why = netaddr_problem (&hp->addr, allow);
      if (why != NULL)
        return bvm_error_code (err, BVM_E_DENIED, 0, "address `%s` is refused: %s",
                               netaddr_format (ab, sizeof ab, &hp->addr), why);
      out->addr[0] = hp->addr;
      out->n = 1;
      return 0;
    }
  /* hp->host came from netaddr_hostport_parse: a checked name whose last
   * label is no number, so getaddrinfo cannot read it as a numeric address */
  if (netaddr_host_problem (hp->host) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "host name not checked");
  memset (&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = getaddrinfo (hp->host, NULL, &hints, &res);
  if (rc != 0)
    return bvm_error_code (err, BVM_E_NETWORK, 0, "resolving `%s`: %s", hp->host,
                           rc == EAI_SYSTEM ? strerror (errno) : gai_strerror (rc));
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    {
      struct netaddr a;
      memset (&a, 0, sizeof a);
      if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof (struct sockaddr_in))
        {
          a.family = NETADDR_V4;
          memcpy (a.b, &((struct sockaddr_in *) ai->ai_addr)->sin_addr, 4);
        }
      else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof (struct sockaddr_in6))
        {
          a.family = NETADDR_V6;
          memcpy (a.b, &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr, 16);
          canonicalize (&a);
        }
      else
        continue;
      why = netaddr_problem (&a, allow);
      if (why != NULL)
        {
          freeaddrinfo (res);
          memset (out, 0, sizeof *out);
          return bvm_error_code (err, BVM_E_DENIED, 0,
                                 "`%s` resolves to `%s`, which is refused: %s", hp->host,
                                 netaddr_format (ab, sizeof ab, &a), why);
        }
      bool dup = false;
      for (size_t i = 0; i < out->n && !dup; i++)
        dup = out->addr[i].family == a.family && memcmp (out->addr[i].b, a.b, 16) == 0;
      if (!dup && out->n < NETADDR_RESOLVE_MAX)
        out->addr[out->n++] = a;
    }
  freeaddrinfo (res);
  if (out->n == 0)
    return bvm_error_code (err, BVM_E_NETWORK, 0, "resolving `%s`: no address", hp->host);
  return 0;
}
