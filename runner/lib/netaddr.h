/* netaddr.h - addresses and host names a build asks to connect to (issue 13)
 *
 * The SSRF wall of the egress channel. A build names a destination as
 * "host:port" in a CONNECT line or an absolute URI; before the runner opens
 * anything it must know which address it will really reach, and refuse the
 * ones inside the host's or the cloud's own networks:
 *
 *   netaddr_hostport_parse   "host:port" -> a normalized host (a lowercase
 *                            name, or the canonical text of an IP literal
 *                            however it was spelled) and a port in 1..65535
 *   netaddr_parse_literal    an IP literal in every spelling libc's
 *                            inet_aton and browsers (WHATWG URL) accept:
 *                            2130706433, 0x7f.1, 0177.0.0.1, 127.1,
 *                            [::ffff:7f00:1], [::ffff:127.0.0.1], ::127.0.0.1,
 *                            a trailing dot; zone ids (fe80::1%eth0) refused
 *   netaddr_problem          why an address must not be reached (loopback,
 *                            RFC 1918, link-local / metadata, CGNAT, ...,
 *                            IPv6 forms judged by the IPv4 address they
 *                            embed), unless the operator's allow-list holds it
 *   netaddr_resolve          one getaddrinfo, every answer checked, and the
 *                            checked addresses returned to connect to: no
 *                            second lookup, so no DNS rebinding between the
 *                            check and the connect
 *   netaddr_host_problem     the name grammar (LDH labels, length caps)
 *   netaddr_host_match       allow rules: `*.example.com` matches one or
 *                            more labels in front of example.com, never the
 *                            bare domain
 *   netaddr_resource         the policy resource `net:<host>:<port>`
 *
 * This module is the one owner of these grammars; the policy module, the
 * connection broker and the SNI check call it.
 */
#ifndef BUILDVM_NETADDR_H
#define BUILDVM_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define NETADDR_HOST_MAX 253   /* a DNS name without its trailing dot */
#define NETADDR_LABEL_MAX 63   /* one DNS label */
#define NETADDR_INPUT_MAX 300  /* any host as given (literals in odd spellings are longer) */
#define NETADDR_STRLEN 48      /* netaddr_format: INET6_ADDRSTRLEN and room */
#define NETADDR_ALLOW_MAX 64   /* CIDR ranges in an allow-list */
#define NETADDR_RESOLVE_MAX 16 /* addresses kept from one lookup */
/* "[" host "]" ":" port, with a NUL */
#define NETADDR_HOSTPORT_STRLEN (NETADDR_HOST_MAX + 2 + 1 + 5 + 1)

enum netaddr_family
{
  NETADDR_V4 = 4,
  NETADDR_V6 = 6,
};

/* An address in network byte order: IPv4 in b[0..3], IPv6 in b[0..15].
 * Canonical: an IPv4-mapped IPv6 address (::ffff:a.b.c.d), which reaches
 * exactly a.b.c.d through the kernel's mapping, is always held as IPv4. */
struct netaddr
{
  enum netaddr_family family;
  uint8_t b[16];
};

struct netaddr_range
{
  struct netaddr base; /* host bits zero */
  unsigned prefix;     /* 0..32 or 0..128 */
};

/* The operator's explicit exceptions (runner configuration), e.g. the
 * tests' 127.0.0.1/32. Zero-initialized is the empty list. */
struct netaddr_allow
{
  struct netaddr_range r[NETADDR_ALLOW_MAX];
  size_t n;
};

/* 1 when `host` is an IP literal (*out set, canonical), 0 when it is not
 * (a name: check it with netaddr_host_problem), and -1 when it is a
 * malformed literal: it must be taken as an address but is none (a last
 * label that is a number, as in `1.2.3.4.5`, `999.0.0.1` or `example.0x1`;
 * a bracket or colon form that is no IPv6 address; a zone id). A -1 host is
 * refused, never looked up: libc would read some of them as numbers. */
int netaddr_parse_literal (struct netaddr *out, const char *host);

/* NULL when the address may be reached, otherwise a static one-line reason:
 * "loopback address", "private address (RFC 1918)", "link-local address
 * (cloud metadata range)", ... `allow` may be NULL. An address inside a
 * range of `allow` is always allowed; an IPv6 address that embeds an IPv4
 * one (IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) is
 * refused for what the embedded address is, unless the IPv6 address itself
 * is allowed. */
const char *netaddr_problem (const struct netaddr *a, const struct netaddr_allow *allow);

/* Add a comma- or space-separated list of ranges ("10.0.0.0/8, ::1/128",
 * a bare address is a /32 or /128) to *allow. Addresses are in the strict
 * forms (dotted decimal, RFC 4291 text); a range with host bits set is an
 * error (refuse, do not repair: `10.0.0.1/8` is a typo for one of two
 * things). BVM_E_INVALID, BVM_E_LIMIT past NETADDR_ALLOW_MAX. */
int netaddr_allow_parse (struct netaddr_allow *allow, const char *list, bvm_error_t *err);
bool netaddr_allow_contains (const struct netaddr_allow *allow, const struct netaddr *a);

/* The canonical text ("127.0.0.1", "2001:db8::1", no brackets) into buf
 * (at least NETADDR_STRLEN bytes). Returns buf. */
const char *netaddr_format (char *buf, size_t size, const struct netaddr *a);

/* NULL when `host` is a valid DNS name, otherwise a static reason: LDH
 * labels (letters, digits, `-` not at either end) of 1..63 bytes, at most
 * 253 bytes without one optional trailing dot, no empty label, a last label
 * that is not all digits (that would be an IPv4 literal). Case is accepted
 * here; netaddr_hostport_parse lowercases. */
const char *netaddr_host_problem (const char *host);

/* A destination as a build names it. `host` is normalized: a name in lower
 * case without a trailing dot, or the canonical text of a literal (IPv6
 * without brackets). */
struct netaddr_hostport
{
  char host[NETADDR_HOST_MAX + 1];
  bool is_literal;
  struct netaddr addr; /* when is_literal */
  uint16_t port;
};

/* Parse "host:port" or "[ipv6]:port". The port is decimal 1..65535 with no
 * sign, space or leading zero. BVM_E_INVALID with the reason and the input
 * (escaped) in the message. */
int netaddr_hostport_parse (struct netaddr_hostport *out, const char *s, bvm_error_t *err);
/* "host:port", IPv6 in brackets; buf has NETADDR_HOSTPORT_STRLEN bytes. */
const char *netaddr_hostport_format (char *buf, size_t size, const struct netaddr_hostport *hp);
/* The policy resource `net:<host>:<port>` (policies/README.md) into buf
 * (at least NETADDR_HOSTPORT_STRLEN + 4 bytes). */
const char *netaddr_resource (char *buf, size_t size, const struct netaddr_hostport *hp);

/* Whether `host` (normalized, as from netaddr_hostport_parse) matches an
 * allow rule: an exact name (ASCII case-insensitive, a trailing dot
 * ignored), or `*.suffix`, which matches one or more labels followed by
 * `.suffix` and never `suffix` itself, nor an IP address in any spelling
 * (only an exact rule matches one). A `*` anywhere else matches nothing. */
bool netaddr_host_match (const char *pattern, const char *host);

/* NULL when `pat` (of `len` bytes) is a valid host part of a `net:` policy
 * resource pattern: `*`, a lowercase name whose characters are letters,
 * digits, `-`, `.` and the wildcards `*` `?`, or an IPv6 literal in
 * brackets; otherwise a static reason. Request hosts are normalized to
 * lower case, so an upper-case pattern could never match: it is a mistake. */
const char *netaddr_host_pattern_problem (const char *pat, size_t len);

/* The addresses to connect to for `hp`: a literal is checked as it is; a
 * name is looked up once (getaddrinfo, which blocks: call it from a thread
 * of its own) and every answer is checked. When any answer is refused the
 * whole name is refused (BVM_E_DENIED, naming the address and the reason):
 * a name that points into internal space is an attack or a mistake, and
 * connecting to its other answers would hide that. A failed lookup is
 * BVM_E_NETWORK. Connect only to out->addr[0..n-1]. */
struct netaddr_resolved
{
  struct netaddr addr[NETADDR_RESOLVE_MAX];
  size_t n;
};
int netaddr_resolve (struct netaddr_resolved *out, const struct netaddr_hostport *hp,
                     const struct netaddr_allow *allow, bvm_error_t *err);

/* A struct sockaddr_in or sockaddr_in6 for `a` and `port` into `ss` (a
 * struct sockaddr_storage); returns its length. */
struct sockaddr_storage;
unsigned netaddr_sockaddr (struct sockaddr_storage *ss, const struct netaddr *a, uint16_t port);

#endif
