/* test_netaddr.c - IP literals in every spelling, the SSRF address rules,
 * allow-lists, host names, destinations and allow-rule wildcards */
#include "support.h"

#include "netaddr.h"
#include "util.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct netaddr
addr (const char *text)
{
  struct netaddr a;
  if (netaddr_parse_literal (&a, text) != 1)
    fail_msg ("`%s` is no literal", text);
  return a;
}

/* ------------------------------------------------------------------------ */

static const struct
{
  const char *in;
  int ret;
  const char *canon; /* when ret == 1 */
} literals[] = {
  /* IPv4, every inet_aton / WHATWG spelling of 127.0.0.1 */
  { "127.0.0.1", 1, "127.0.0.1" },
  { "2130706433", 1, "127.0.0.1" },
  { "0x7f000001", 1, "127.0.0.1" },
  { "0X7F000001", 1, "127.0.0.1" },
  { "0x7f.1", 1, "127.0.0.1" },
  { "0x7F.0x0.0x0.0x1", 1, "127.0.0.1" },
  { "0177.0.0.1", 1, "127.0.0.1" },
  { "0177.1", 1, "127.0.0.1" },
  { "017700000001", 1, "127.0.0.1" },
  { "127.1", 1, "127.0.0.1" },
  { "127.0.1", 1, "127.0.0.1" },
  { "127.0.0.1.", 1, "127.0.0.1" },
  { "2130706433.", 1, "127.0.0.1" },
  { "00000000000000000000177.0.0.1", 1, "127.0.0.1" },
  /* the metadata address */
  { "169.254.169.254", 1, "169.254.169.254" },
  { "2852039166", 1, "169.254.169.254" },
  { "0xa9fea9fe", 1, "169.254.169.254" },
  { "0xA9.0xFE.0xA9.0xFE", 1, "169.254.169.254" },
  { "0251.0376.0251.0376", 1, "169.254.169.254" },
  { "169.254.43518", 1, "169.254.169.254" },
  { "169.16689662", 1, "169.254.169.254" },
  { "0", 1, "0.0.0.0" },
  { "0x", 1, "0.0.0.0" },
  { "4294967295", 1, "255.255.255.255" },
  { "8.8.8.8", 1, "8.8.8.8" },
  /* ends in a number, but no address: malformed, never a name */
  { "4294967296", -1, NULL },
  { "99999999999999999999999", -1, NULL },
  { "256.0.0.1", -1, NULL },
  { "1.2.3.256", -1, NULL },
  { "1.2.65536", -1, NULL },
  { "1.16777216", -1, NULL },
  { "1.2.3.4.5", -1, NULL },
  { "1..1", -1, NULL },
  { ".1", -1, NULL },
  { "08.0.0.1", -1, NULL },
  { "0x1.0x100.1.1", -1, NULL },
  { "example.123", -1, NULL },
  { "foo.0x10", -1, NULL },
  { "foo.0x", -1, NULL },
  /* names */
  { "example.com", 0, NULL },
  { "0x1g", 0, NULL },
  { "1a", 0, NULL },
  { "123.example", 0, NULL },
  { "1.2.3.4..", 0, NULL },
  { "", 0, NULL },
  /* IPv6 */
  { "[::1]", 1, "::1" },
  { "::1", 1, "::1" },
  { "[::]", 1, "::" },
  { "[::ffff:7f00:1]", 1, "127.0.0.1" },
  { "[::ffff:127.0.0.1]", 1, "127.0.0.1" },
  { "[::FFFF:7F00:1]", 1, "127.0.0.1" },
  { "[0:0:0:0:0:ffff:a9fe:a9fe]", 1, "169.254.169.254" },
  { "::127.0.0.1", 1, "::127.0.0.1" },
  { "[64:ff9b::7f00:1]", 1, "64:ff9b::7f00:1" },
  { "[2002:7f00:1::]", 1, "2002:7f00:1::" },
  { "[2001:DB8::1]", 1, "2001:db8::1" },
  { "[fe80::1%eth0]", -1, NULL },
  { "fe80::1%25eth0", -1, NULL },
  { "[::1", -1, NULL },
  { "[]", -1, NULL },
  { "[127.0.0.1]", -1, NULL },
  { "[::1]x", -1, NULL },
  { "::1]", -1, NULL },
  { "1:2:3:4:5:6:7:8:9", -1, NULL },
  { "[::ffff:0x7f.1]", -1, NULL },
  { "[::ffff:127.1]", -1, NULL },
};

static void
test_literals (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (literals); i++)
    {
      struct netaddr a;
      char buf[NETADDR_STRLEN];
      int ret = netaddr_parse_literal (&a, literals[i].in);
      if (ret != literals[i].ret)
        fail_msg ("`%s`: %d, expected %d", literals[i].in, ret, literals[i].ret);
      if (ret == 1 && strcmp (netaddr_format (buf, sizeof buf, &a), literals[i].canon) != 0)
        fail_msg ("`%s` is `%s`, expected `%s`", literals[i].in, buf, literals[i].canon);
    }
}

/* ------------------------------------------------------------------------ */

#define RFC1918 "private address (RFC 1918)"
#define LOOP "loopback address"
#define META "link-local address (cloud metadata range)"
#define THISNET "\"this network\" address (0.0.0.0/8)"
#define CGNAT "shared address space (CGNAT, 100.64.0.0/10)"
#define MC "multicast address"
#define DOC "reserved address (documentation)"

static const struct
{
  const char *a;
  const char *why; /* NULL: reachable */
} rules[] = {
  { "0.0.0.0", THISNET },
  { "0.255.255.255", THISNET },
  { "1.0.0.0", NULL },
  { "1.1.1.1", NULL },
  { "8.8.8.8", NULL },
  { "9.255.255.255", NULL },
  { "10.0.0.0", RFC1918 },
  { "10.255.255.255", RFC1918 },
  { "11.0.0.0", NULL },
  { "100.63.255.255", NULL },
  { "100.64.0.0", CGNAT },
  { "100.100.100.200", CGNAT }, /* Alibaba Cloud's metadata address */
  { "100.127.255.255", CGNAT },
  { "100.128.0.0", NULL },
  { "126.255.255.255", NULL },
  { "127.0.0.0", LOOP },
  { "127.0.0.1", LOOP },
  { "127.255.255.255", LOOP },
  { "128.0.0.0", NULL },
  { "169.253.255.255", NULL },
  { "169.254.0.0", META },
  { "169.254.169.254", META },
  { "169.254.255.255", META },
  { "169.255.0.0", NULL },
  { "172.15.255.255", NULL },
  { "172.16.0.0", RFC1918 },
  { "172.31.255.255", RFC1918 },
  { "172.32.0.0", NULL },
  { "192.0.0.0", "reserved address (IETF protocol assignments, 192.0.0.0/24)" },
  { "192.0.0.255", "reserved address (IETF protocol assignments, 192.0.0.0/24)" },
  { "192.0.1.0", NULL },
  { "192.0.2.1", DOC },
  { "192.167.255.255", NULL },
  { "192.168.0.0", RFC1918 },
  { "192.168.255.255", RFC1918 },
  { "192.169.0.0", NULL },
  { "198.17.255.255", NULL },
  { "198.18.0.0", "reserved address (benchmarking, 198.18.0.0/15)" },
  { "198.19.255.255", "reserved address (benchmarking, 198.18.0.0/15)" },
  { "198.20.0.0", NULL },
  { "198.51.100.7", DOC },
  { "203.0.113.9", DOC },
  { "223.255.255.255", NULL },
  { "224.0.0.0", MC },
  { "239.255.255.255", MC },
  { "240.0.0.0", "reserved address (240.0.0.0/4)" },
  { "255.255.255.254", "reserved address (240.0.0.0/4)" },
  { "255.255.255.255", "broadcast address" },
  /* IPv6 */
  { "::", "unspecified address" },
  { "::1", LOOP },
  { "::2", THISNET },      /* IPv4-compatible 0.0.0.2 */
  { "::127.0.0.1", LOOP }, /* IPv4-compatible */
  { "::169.254.169.254", META },
  { "::8.8.8.8", NULL },
  { "::ffff:127.0.0.1", LOOP }, /* IPv4-mapped */
  { "::ffff:a9fe:a9fe", META },
  { "::ffff:8.8.8.8", NULL },
  { "::ffff:0:127.0.0.1", LOOP }, /* SIIT IPv4-translated */
  { "::ffff:0:10.0.0.1", RFC1918 },
  { "64:ff9b::7f00:1", LOOP }, /* NAT64 */
  { "64:ff9b::a9fe:a9fe", META },
  { "64:ff9b::808:808", NULL },
  { "64:ff9b:1::1", "reserved address (local-use NAT64, 64:ff9b:1::/48)" },
  { "2002:7f00:1::1", LOOP }, /* 6to4 */
  { "2002:a9fe:a9fe::", META },
  { "2002:c0a8:101::1", RFC1918 },
  { "2002:808:808::1", NULL },
  { "2001::1", "reserved address (Teredo, 2001::/32)" },
  { "2001:db8::1", DOC },
  { "2001:4860:4860::8888", NULL },
  { "2606:4700::1111", NULL },
  { "100::1", "reserved address (discard-only, 100::/64)" },
  { "fbff:ffff::1", "reserved address (outside 2000::/3)" },
  { "fc00::", "unique local address (fc00::/7)" },
  { "fd00:ec2::254", "unique local address (fc00::/7)" }, /* AWS's IPv6 metadata address */
  { "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique local address (fc00::/7)" },
  { "fe7f:ffff::", "reserved address (outside 2000::/3)" },
  { "fe80::", "link-local address (fe80::/10)" },
  { "febf:ffff::", "link-local address (fe80::/10)" },
  { "fec0::1", "site-local address (fec0::/10)" },
  { "feff::1", "site-local address (fec0::/10)" },
  { "ff00::", MC },
  { "ff02::1", MC },
  { "1fff:ffff::", "reserved address (outside 2000::/3)" },
  { "2000::", NULL },
  { "3fff:ffff::", NULL },
  { "4000::", "reserved address (outside 2000::/3)" },
};

static void
test_rules (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (rules); i++)
    {
      struct netaddr a = addr (rules[i].a);
      const char *why = netaddr_problem (&a, NULL);
      if ((why == NULL) != (rules[i].why == NULL)
          || (why != NULL && strcmp (why, rules[i].why) != 0))
        fail_msg ("`%s`: `%s`, expected `%s`", rules[i].a, why ? why : "(reachable)",
                  rules[i].why ? rules[i].why : "(reachable)");
    }
}

/* The metadata address in every spelling a client might use. */
static void
test_metadata_every_spelling (void **state)
{
  static const char *const spellings[] = { "169.254.169.254",     "2852039166",
                                           "0xa9fea9fe",          "0251.0376.0251.0376",
                                           "169.254.43518",       "169.16689662",
                                           "0xa9.254.0xa9.254",   "169.254.169.254.",
                                           "[::ffff:a9fe:a9fe]",  "[::ffff:169.254.169.254]",
                                           "[::169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
                                           "[2002:a9fe:a9fe::1]" };
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (spellings); i++)
    {
      struct netaddr a = addr (spellings[i]);
      const char *why = netaddr_problem (&a, NULL);
      if (why == NULL || strcmp (why, META) != 0)
        fail_msg ("`%s`: %s", spellings[i], why ? why : "reachable");
    }
}

/* ------------------------------------------------------------------------ */

static void
test_allow (void **state)
{
  struct netaddr_allow allow = { 0 };
  bvm_error_t err = NULL;
  struct netaddr a;
  (void) state;

  assert_ok (netaddr_allow_parse (&allow, "127.0.0.1/32", &err), &err);
  assert_int_equal (allow.n, 1);
  a = addr ("127.0.0.1");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("[::ffff:127.0.0.1]");
  assert_null (netaddr_problem (&a, &allow)); /* the same address */
  a = addr ("2130706433");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("127.0.0.2");
  assert_string_equal (netaddr_problem (&a, &allow), LOOP);
  a = addr ("::1");
  assert_string_equal (netaddr_problem (&a, &allow), LOOP);
  /* a tunnel form is another destination: it needs its own range */
  a = addr ("[2002:7f00:1::]");
  assert_string_equal (netaddr_problem (&a, &allow), LOOP);
  a = addr ("[64:ff9b::7f00:1]");
  assert_string_equal (netaddr_problem (&a, &allow), LOOP);

  assert_ok (netaddr_allow_parse (&allow, " 10.0.0.0/8,::1, fd00::/8\t192.168.1.0/24 ", &err),
             &err);
  assert_int_equal (allow.n, 5);
  a = addr ("10.200.0.1");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("11.0.0.1");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("::1");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("fd12::1");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("fe80::1");
  assert_non_null (netaddr_problem (&a, &allow));
  a = addr ("192.168.1.255");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("192.168.2.0");
  assert_string_equal (netaddr_problem (&a, &allow), RFC1918);

  /* ::ffff:a.b.c.d/N is the IPv4 range */
  memset (&allow, 0, sizeof allow);
  assert_ok (netaddr_allow_parse (&allow, "::ffff:127.0.0.0/104", &err), &err);
  assert_int_equal (allow.r[0].base.family, NETADDR_V4);
  assert_int_equal (allow.r[0].prefix, 8);
  a = addr ("127.9.9.9");
  assert_null (netaddr_problem (&a, &allow));

  memset (&allow, 0, sizeof allow);
  assert_ok (netaddr_allow_parse (&allow, "0.0.0.0/0", &err), &err);
  a = addr ("169.254.169.254");
  assert_null (netaddr_problem (&a, &allow));
  a = addr ("::1");
  assert_non_null (netaddr_problem (&a, &allow));

  memset (&allow, 0, sizeof allow);
  assert_ok (netaddr_allow_parse (&allow, "", &err), &err);
  assert_int_equal (allow.n, 0);
}

static void
test_allow_errors (void **state)
{
  static const struct
  {
    const char *in, *msg;
  } bad[] = {
    { "10.0.0.1/8", "bits set past its /8 prefix" },
    { "::1/64", "bits set past its /64 prefix" },
    { "10.0.0.0/33", "bad prefix" },
    { "::/129", "bad prefix" },
    { "10.0.0.0/08", "bad prefix" },
    { "10.0.0.0/", "bad prefix" },
    { "10.0.0.0/-1", "bad prefix" },
    { "10.0.0.0/1000", "bad prefix" },
    { "/8", "no CIDR range" },
    { "0x7f.1/32", "no IPv4 or IPv6 address" },
    { "127.1", "no IPv4 or IPv6 address" },
    { "2130706433", "no IPv4 or IPv6 address" },
    { "fe80::1%eth0/128", "no IPv4 or IPv6 address" },
    { "example.com", "no IPv4 or IPv6 address" },
    { "10.0.0.0/8;rm", "bad prefix" },
  };
  bvm_error_t err = NULL;
  char many[NETADDR_ALLOW_MAX * 16 + 32];
  size_t o = 0;
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct netaddr_allow allow = { 0 };
      assert_fails_with (netaddr_allow_parse (&allow, bad[i].in, &err), &err, bad[i].msg);
    }
  /* an operator's typo is quoted escaped (fuzz_netaddr found the raw quote) */
  {
    struct netaddr_allow allow = { 0 };
    assert_true (netaddr_allow_parse (&allow, "\x1b[2J\xc3\xbc/8", &err) < 0);
    assert_null (strchr (bvm_error_msg (&err), '\x1b'));
    assert_null (strchr (bvm_error_msg (&err), '\xc3'));
    assert_non_null (strstr (bvm_error_msg (&err), "`\\x1b[2J\\xc3\\xbc` is no IPv4"));
    bvm_error_free (&err);
  }
  for (int i = 0; i <= NETADDR_ALLOW_MAX; i++)
    o += (size_t) snprintf (many + o, sizeof many - o, "10.0.%d.0/24,", i);
  {
    struct netaddr_allow allow = { 0 };
    assert_fails_with (netaddr_allow_parse (&allow, many, &err), &err, "more than 64");
  }
}

/* ------------------------------------------------------------------------ */

static void
test_host_names (void **state)
{
  static const struct
  {
    const char *in, *why;
  } names[] = {
    { "example.com", NULL },
    { "EXAMPLE.com", NULL },
    { "a", NULL },
    { "localhost", NULL },
    { "registry.npmjs.org", NULL },
    { "xn--bcher-kva.example", NULL },
    { "a-b.c-d", NULL },
    { "1a.example", NULL },
    { "123.example", NULL },
    { "example.com.", NULL },
    { "", "empty host name" },
    { ".", "empty label in host name" },
    { "..", "empty label in host name" },
    { "a..b", "empty label in host name" },
    { ".a", "empty label in host name" },
    { "a.b..", "empty label in host name" },
    { "-a.com", "label begins or ends with `-` in host name" },
    { "a-.com", "label begins or ends with `-` in host name" },
    { "a_b.com", "invalid character in host name" },
    { "a b", "invalid character in host name" },
    { "a*b", "invalid character in host name" },
    { "a:b", "invalid character in host name" },
    { "a/b", "invalid character in host name" },
    { "a\x1b[31m", "invalid character in host name" },
    { "b\xc3\xbc"
      "cher.de",
      "non-ASCII host name (use its xn-- form)" },
    { "example.123", "host name ends in a number (an IPv4 address?)" },
    { "127.0.0.1", "host name ends in a number (an IPv4 address?)" },
    { "a.0x1f", "host name ends in a number (an IPv4 address?)" },
  };
  char label[80], name[300];
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (names); i++)
    {
      const char *why = netaddr_host_problem (names[i].in);
      if ((why == NULL) != (names[i].why == NULL) || (why && strcmp (why, names[i].why) != 0))
        fail_msg ("`%s`: `%s`, expected `%s`", names[i].in, why ? why : "ok",
                  names[i].why ? names[i].why : "ok");
    }
  memset (label, 'a', 63);
  label[63] = '\0';
  assert_null (netaddr_host_problem (label));
  strcat (label, "a");
  assert_string_equal (netaddr_host_problem (label), "label longer than 63 bytes in host name");
  /* 253 bytes: 63 + 1 + 63 + 1 + 63 + 1 + 61 */
  memset (name, 'a', sizeof name);
  name[63] = name[127] = name[191] = '.';
  name[253] = '\0';
  assert_null (netaddr_host_problem (name));
  name[253] = '.';
  name[254] = '\0';
  assert_null (netaddr_host_problem (name)); /* and a trailing dot */
  name[253] = 'a';
  assert_string_equal (netaddr_host_problem (name), "host name longer than 253 bytes");
}

static void
test_hostport (void **state)
{
  static const struct
  {
    const char *in, *host;
    unsigned port;
    bool literal;
    const char *formatted;
  } good[] = {
    { "example.com:443", "example.com", 443, false, "example.com:443" },
    { "EXAMPLE.Com.:80", "example.com", 80, false, "example.com:80" },
    { "registry.npmjs.org:443", "registry.npmjs.org", 443, false, "registry.npmjs.org:443" },
    { "a:1", "a", 1, false, "a:1" },
    { "a:65535", "a", 65535, false, "a:65535" },
    { "127.0.0.1:8080", "127.0.0.1", 8080, true, "127.0.0.1:8080" },
    { "2130706433:80", "127.0.0.1", 80, true, "127.0.0.1:80" },
    { "0x7f.1:443", "127.0.0.1", 443, true, "127.0.0.1:443" },
    { "0251.0376.0251.0376:80", "169.254.169.254", 80, true, "169.254.169.254:80" },
    { "[::1]:443", "::1", 443, true, "[::1]:443" },
    { "[::ffff:7f00:1]:443", "127.0.0.1", 443, true, "127.0.0.1:443" },
    { "[2001:DB8::1]:443", "2001:db8::1", 443, true, "[2001:db8::1]:443" },
  };
  static const struct
  {
    const char *in, *msg;
  } bad[] = {
    { "example.com", "has no port" },
    { "example.com:", "the port must be a number" },
    { ":443", "has no host" },
    { "example.com:0", "the port must be a number" },
    { "example.com:65536", "the port must be a number" },
    { "example.com:99999", "the port must be a number" },
    { "example.com:123456", "the port must be a number" },
    { "example.com:0443", "the port must be a number" },
    { "example.com:+443", "the port must be a number" },
    { "example.com:-1", "the port must be a number" },
    { "example.com: 443", "the port must be a number" },
    { "example.com:44a", "the port must be a number" },
    { "example.com:443 ", "the port must be a number" },
    { "::1:443", "an IPv6 address must be in brackets" },
    { "[::1]443", "must be `[ipv6]:port`" },
    { "[::1:443", "must be `[ipv6]:port`" },
    { "[fe80::1%eth0]:443", "malformed IP address literal" },
    { "[127.0.0.1]:443", "malformed IP address literal" },
    { "1.2.3.4.5:80", "malformed IP address literal" },
    { "example.123:80", "malformed IP address literal" },
    { "a_b:80", "invalid character in host name" },
    { "a..b:80", "empty label" },
    { "b\xc3\xbc"
      "cher.de:443",
      "non-ASCII" },
    { "user@example.com:443", "invalid character" },
  };
  bvm_error_t err = NULL;
  char buf[NETADDR_HOSTPORT_STRLEN + 8], big[400];
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (good); i++)
    {
      struct netaddr_hostport hp;
      assert_ok (netaddr_hostport_parse (&hp, good[i].in, &err), &err);
      assert_string_equal (hp.host, good[i].host);
      assert_int_equal (hp.port, good[i].port);
      assert_int_equal (hp.is_literal, good[i].literal);
      assert_string_equal (netaddr_hostport_format (buf, sizeof buf, &hp), good[i].formatted);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct netaddr_hostport hp;
      assert_fails_with (netaddr_hostport_parse (&hp, bad[i].in, &err), &err, bad[i].msg);
    }
  /* the message quotes the input escaped */
  {
    struct netaddr_hostport hp;
    assert_fails_with (netaddr_hostport_parse (&hp, "\x1b[2J:443", &err), &err, "\\x1b");
  }
  memset (big, 'a', sizeof big);
  big[sizeof big - 1] = '\0';
  {
    struct netaddr_hostport hp;
    assert_fails_with (netaddr_hostport_parse (&hp, big, &err), &err, "too long");
    memcpy (big + 260, ":443", 5);
    assert_fails_with (netaddr_hostport_parse (&hp, big, &err), &err, "longer than 253");
  }
}

static void
test_resource (void **state)
{
  struct netaddr_hostport hp;
  bvm_error_t err = NULL;
  char buf[NETADDR_HOSTPORT_STRLEN + 8];
  (void) state;

  assert_ok (netaddr_hostport_parse (&hp, "Registry.NPMJS.org:443", &err), &err);
  assert_string_equal (netaddr_resource (buf, sizeof buf, &hp), "net:registry.npmjs.org:443");
  assert_ok (netaddr_hostport_parse (&hp, "[::1]:80", &err), &err);
  assert_string_equal (netaddr_resource (buf, sizeof buf, &hp), "net:[::1]:80");
  assert_ok (netaddr_hostport_parse (&hp, "0x7f.1:80", &err), &err);
  assert_string_equal (netaddr_resource (buf, sizeof buf, &hp), "net:127.0.0.1:80");
}

static void
test_host_match (void **state)
{
  static const struct
  {
    const char *pattern, *host;
    bool match;
  } cases[] = {
    { "*.example.com", "a.example.com", true },
    { "*.example.com", "a.b.example.com", true },
    { "*.example.com", "A.EXAMPLE.com", true },
    { "*.example.com", "a.example.com.", true },
    { "*.example.com.", "a.example.com", true },
    { "*.example.com", "example.com", false },
    { "*.example.com", ".example.com", false },
    { "*.example.com", "aexample.com", false },
    { "*.example.com", "a.example.com.evil", false },
    { "*.example.com", "a.example.org", false },
    { "*.com", "com", false },
    { "*.com", "example.com", true },
    { "example.com", "example.com", true },
    { "example.com", "EXAMPLE.COM.", true },
    { "example.com", "a.example.com", false },
    { "example.com", "example.co", false },
    { "*", "example.com", false },
    { "*.", "example.com", false },
    { "a.*.com", "a.b.com", false },
    { "*.*.com", "a.b.com", false },
    { "ex*.com", "example.com", false },
    /* addresses are not names: a wildcard never matches one */
    { "*.0.0.1", "127.0.0.1", false },
    { "*.1", "127.1", false },
    { "*.ffff:7f00:1", "::ffff:7f00:1", false },
    { "127.0.0.1", "127.0.0.1", true },
    { "", "", false },
    { "example.com", "", false },
  };
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    if (netaddr_host_match (cases[i].pattern, cases[i].host) != cases[i].match)
      fail_msg ("`%s` vs `%s`: expected %s", cases[i].pattern, cases[i].host,
                cases[i].match ? "a match" : "no match");
}

static void
test_host_pattern (void **state)
{
  static const struct
  {
    const char *in;
    bool ok;
  } cases[] = {
    { "*", true },
    { "*.example.com", true },
    { "registry.npmjs.org", true },
    { "registry-?.example.com", true },
    { "127.0.0.1", true },
    { "[::1]", true },
    { "[2001:db8::*]", true },
    { "", false },
    { "Example.com", false },
    { "[::1", false },
    { "[::G]", false },
    { "[2001:DB8::1]", false },
    { "a_b", false },
    { "${job:App}", false },
    { "a/b", false },
    { "a:b", false },
  };
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    if ((netaddr_host_pattern_problem (cases[i].in, strlen (cases[i].in)) == NULL) != cases[i].ok)
      fail_msg ("`%s`: expected %s", cases[i].in, cases[i].ok ? "ok" : "a problem");
}

/* ------------------------------------------------------------------------ */

static void
test_resolve (void **state)
{
  struct netaddr_allow allow = { 0 };
  struct netaddr_resolved res;
  struct netaddr_hostport hp;
  bvm_error_t err = NULL;
  char buf[NETADDR_STRLEN];
  (void) state;

  /* "localhost" comes from /etc/hosts: no query leaves the machine */
  assert_ok (netaddr_hostport_parse (&hp, "localhost:80", &err), &err);
  assert_fails_with (netaddr_resolve (&res, &hp, NULL, &err), &err, "`localhost` resolves to `");
  assert_int_equal (res.n, 0);
  assert_ok (netaddr_hostport_parse (&hp, "localhost:80", &err), &err);
  assert_true (netaddr_resolve (&res, &hp, NULL, &err) < 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  assert_non_null (strstr (bvm_error_msg (&err), "loopback address"));
  bvm_error_free (&err);

  assert_ok (netaddr_allow_parse (&allow, "127.0.0.0/8,::1/128", &err), &err);
  assert_ok (netaddr_resolve (&res, &hp, &allow, &err), &err);
  assert_true (res.n >= 1);
  for (size_t i = 0; i < res.n; i++)
    assert_null (netaddr_problem (&res.addr[i], &allow));

  /* literals are never looked up */
  assert_ok (netaddr_hostport_parse (&hp, "2130706433:80", &err), &err);
  assert_ok (netaddr_resolve (&res, &hp, &allow, &err), &err);
  assert_int_equal (res.n, 1);
  assert_string_equal (netaddr_format (buf, sizeof buf, &res.addr[0]), "127.0.0.1");
  assert_ok (netaddr_hostport_parse (&hp, "0xa9fea9fe:80", &err), &err);
  assert_fails_with (netaddr_resolve (&res, &hp, &allow, &err), &err,
                     "address `169.254.169.254` is refused: link-local address (cloud metadata "
                     "range)");
  assert_ok (netaddr_hostport_parse (&hp, "[::ffff:a9fe:a9fe]:80", &err), &err);
  assert_fails_with (netaddr_resolve (&res, &hp, NULL, &err), &err, "cloud metadata");
}

static void
test_sockaddr (void **state)
{
  struct sockaddr_storage ss;
  struct netaddr a = addr ("127.0.0.1");
  (void) state;

  assert_int_equal (netaddr_sockaddr (&ss, &a, 8080), sizeof (struct sockaddr_in));
  assert_int_equal (((struct sockaddr_in *) &ss)->sin_family, AF_INET);
  assert_int_equal (ntohs (((struct sockaddr_in *) &ss)->sin_port), 8080);
  assert_int_equal (ntohl (((struct sockaddr_in *) &ss)->sin_addr.s_addr), 0x7f000001);
  a = addr ("::1");
  assert_int_equal (netaddr_sockaddr (&ss, &a, 443), sizeof (struct sockaddr_in6));
  assert_int_equal (((struct sockaddr_in6 *) &ss)->sin6_family, AF_INET6);
  assert_int_equal (((struct sockaddr_in6 *) &ss)->sin6_addr.s6_addr[15], 1);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_literals),
    cmocka_unit_test (test_rules),
    cmocka_unit_test (test_metadata_every_spelling),
    cmocka_unit_test (test_allow),
    cmocka_unit_test (test_allow_errors),
    cmocka_unit_test (test_host_names),
    cmocka_unit_test (test_hostport),
    cmocka_unit_test (test_resource),
    cmocka_unit_test (test_host_match),
    cmocka_unit_test (test_host_pattern),
    cmocka_unit_test (test_resolve),
    cmocka_unit_test (test_sockaddr),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
