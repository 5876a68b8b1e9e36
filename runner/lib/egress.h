/* egress.h - the runner's end of a build's egress channel (issue 13)
 *
 * The VM has no network device; its only way out is one byte stream to the
 * runner (docs/architecture.md, "The egress channel"), on which the guest
 * agent's proxy multiplexes the build's connections. This module is the
 * broker on the host side:
 *
 *   egress_settings_load   runner.json `egress` (mode, host rules, address
 *                          exceptions, limits), built-in defaults: nothing
 *   egress_rule_problem    the `host:port` rule grammar of runner.json and
 *                          buildvm.json (one owner)
 *   egress_role_mint       the job's role with its egress rules as one more
 *                          statement, capped by the permission boundary
 *   egress_start / _stop   a thread serving one channel for one job: every
 *                          OPEN authorized (net:Connect on net:<host>:<port>),
 *                          resolved once, every address checked (netaddr.h),
 *                          connected to the checked address, TLS SNI checked
 *                          against the CONNECT host, limits enforced, each
 *                          connection logged and recorded
 *
 * Every byte read from the channel is hostile: a protocol error ends the
 * channel (and the build's egress), never the runner; the broker never
 * buffers more than a fixed amount per stream and for the channel.
 */
#ifndef BUILDVM_EGRESS_H
#define BUILDVM_EGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "netaddr.h"

struct policy;
struct policy_vars;
struct role;

#define EGRESS_RULES_MAX 100    /* host rules, config and app together */
#define EGRESS_RULE_MAX 300     /* one "host:port" rule */
#define EGRESS_RECORDS_MAX 1000 /* connections kept in the job record */

enum egress_mode
{
  EGRESS_MODE_ENFORCE = 0, /* the default: the role decides */
  EGRESS_MODE_AUDIT,       /* allow what the role would deny, and say so */
};

struct egress_limits
{
  uint64_t connections;         /* concurrent streams */
  uint64_t connects_per_minute; /* new streams in any 60 s */
  uint64_t bytes_out;           /* guest to upstreams, the whole job */
  uint64_t bytes_in;            /* upstreams to guest, the whole job */
  uint64_t idle_seconds;        /* a connection with no byte either way */
  uint64_t connection_seconds;  /* a connection's whole life */
  uint64_t connect_seconds;     /* the TCP connect */
};

/* runner.json `egress`. Zero-initialized is not valid: use
 * egress_settings_load (NULL object: the defaults). */
struct egress_settings
{
  enum egress_mode mode;
  char **allow; /* "host:port" rules for every app, NULL-terminated */
  size_t n_allow;
  struct netaddr_allow allow_addresses; /* exceptions to the address rules */
  char **allow_addresses_text;          /* as written, for config_to_json */
  size_t n_allow_addresses;
  struct egress_limits limits;
};

/* `obj` is runner.json's `egress` member or NULL; `what` names the file in
 * errors ("`/etc/buildvm/runner.json`: field `egress.allow[2]` ..."). */
int egress_settings_load (struct egress_settings *out, const json_t *obj, const char *what,
                          bvm_error_t *err);
void egress_settings_dispose (struct egress_settings *s);
json_t *egress_settings_to_json (const struct egress_settings *s);

/* NULL when `rule` is a valid egress rule, else a static reason: `host:port`
 * where host is a name, `*.suffix`, `*`, an IPv4 literal or an IPv6 literal
 * in brackets (netaddr_host_pattern_problem), and port is 1..65535 or `*`. */
const char *egress_rule_problem (const char *rule);

/* The job's role: the template's statements, one more statement
 * `EgressRules` allowing net:Connect on net:<rule> for every rule, all
 * capped by `boundary` (role_mint). With no rules it is role_mint itself. */
int egress_role_mint (struct role **out, const struct policy *tmpl, const struct policy *boundary,
                      const struct policy_vars *vars, int64_t expires_at, const char *const *rules,
                      size_t n_rules, bvm_error_t *err);

/* Called from the broker's thread with one line for the job log (no
 * newline); the caller serializes it with its own logging. */
typedef void (*egress_log_fn) (void *opaque, const char *line);

struct egress_opts
{
  const struct egress_settings *settings;
  const struct role *role; /* decides net:Connect; must outlive the broker */
  egress_log_fn log;
  void *opaque;
};

struct egress;

/* Serve `fd` (the runner's end of the channel, a socket; owned by the
 * broker from here on, whatever is returned) in a thread of its own. */
int egress_start (struct egress **out, int fd, const struct egress_opts *o, bvm_error_t *err);
/* Stop the thread (if it runs) and close every connection. Idempotent. */
void egress_stop (struct egress *e);
/* After egress_stop: the job record's `egress` member (new reference):
 * {mode, connections: [{host, port, mode, address, decision, reason,
 * bytes_out, bytes_in, ms}], allowed, denied, audited, bytes_out, bytes_in,
 * error, allowlist: ["host:port", ...]}. */
json_t *egress_record (const struct egress *e);
/* After egress_stop: connections denied (by the role, the address rules,
 * the SNI check or a limit); with `fail_on_deny` the build fails. */
uint64_t egress_denied (const struct egress *e);
void egress_free (struct egress *e);

/* Internals, exposed for tests/fuzz/fuzz_egress_peek.c: the two looks the
 * broker takes at a stream's first bytes, both fed by the guest. */
/* The SNI of a TLS ClientHello complete at the start of b: 1 found (into
 * name, lower case, no trailing dot, printable), 0 none, -1 not a
 * ClientHello the broker accepts, -2 incomplete. */
int egress__client_hello_sni (const uint8_t *b, size_t n, char *name, size_t size);
/* NULL when the HTTP request head at the start of b may go to `want`
 * (*complete says whether the head is complete, i.e. checked), else why. */
const char *egress__http_host_problem (const uint8_t *b, size_t n,
                                       const struct netaddr_hostport *want, bool *complete);

#endif
