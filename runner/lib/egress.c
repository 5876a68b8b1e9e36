/* egress.c - the connection broker of the egress channel (egress.h)
 *
 * One thread per job, one poll loop: the channel socket, a wake pipe, and
 * one upstream socket per stream. Memory is bounded whatever the guest does:
 *
 *   - guest to upstream: a stream's buffer is EGRESS_WINDOW_INITIAL bytes,
 *     and the guest may only send what it has credit for; credit comes back
 *     (WINDOW) only as the upstream socket takes the bytes;
 *   - upstream to guest: an upstream socket is read only while we hold the
 *     guest's credit and the channel's output buffer has room, so a guest
 *     that stops reading the channel stops every download, nothing piles up;
 *   - the channel is read only while the output buffer has room for the
 *     replies the frames just read could need.
 *
 * Name resolution (netaddr_resolve, getaddrinfo) blocks this thread, and
 * only it: a slow resolver slows this job's egress, never the runner.
 */
#include "egress.h"
#include "egress_frame.h"
#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_CAP (2u << 20)       /* the channel's output buffer */
#define OUT_RESERVE (768u << 10) /* room kept for replies to frames being read */
#define READ_CHUNK (16u << 10)   /* channel bytes parsed per round */
#define CONNECTIONS_HARD_MAX 1024
#define TLS_RECORD_MAX (16384 + 5)
#define EGRESS_HTTP_HEAD_MAX (64u << 10)

/* --- settings ------------------------------------------------------------------- */

static const struct egress_limits default_limits = {
  .connections = 32,
  .connects_per_minute = 600,
  .bytes_out = UINT64_C (1) << 30,
  .bytes_in = UINT64_C (4) << 30,
  .idle_seconds = 120,
  .connection_seconds = 3600,
  .connect_seconds = 15,
};

const char *
egress_rule_problem (const char *rule)
{
  const char *colon = strrchr (rule, ':');
  const char *port, *hp;
  size_t hlen;

  if (strlen (rule) > EGRESS_RULE_MAX)
    return "is longer than 300 bytes";
  if (colon == NULL || colon == rule)
    return "must be `host:port`";
  port = colon + 1;
  if (strcmp (port, "*") != 0)
    {
      unsigned long v = 0;
      if (*port == '\0' || *port == '0' || strlen (port) > 5)
        return "has a port that is not 1 to 65535 or `*`";
      for (const char *p = port; *p; p++)
        {
          if (*p < '0' || *p > '9')
            return "has a port that is not 1 to 65535 or `*`";
          v = v * 10 + (unsigned long) (*p - '0');
        }
      if (v > 65535)
        return "has a port that is not 1 to 65535 or `*`";
    }
  hlen = (size_t) (colon - rule);
  hp = netaddr_host_pattern_problem (rule, hlen);
  return hp;
}

void
egress_settings_dispose (struct egress_settings *s)
{
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->n_allow; i++)
    free (s->allow[i]);
  free (s->allow);
  for (size_t i = 0; i < s->n_allow_addresses; i++)
    free (s->allow_addresses_text[i]);
  free (s->allow_addresses_text);
  memset (s, 0, sizeof *s);
}

static int
load_strv (char ***out, size_t *n, const json_t *obj, const char *key, size_t maxn, size_t maxlen,
           bvm_error_t *err)
{
  cleanup_free const char **v = NULL;
  char **copy;
  size_t k = 0;
  int ret;

  ret = jsonx_get_str_array (&v, &k, obj, key, false, maxn, maxlen, "egress", err);
  if (ret < 0)
    return ret;
  copy = calloc (k + 1, sizeof *copy);
  if (copy == NULL)
    return bvm_error (err, ENOMEM, "egress settings");
  for (size_t i = 0; i < k; i++)
    if ((copy[i] = strdup (v[i])) == NULL)
      {
        for (size_t j = 0; j < i; j++)
          free (copy[j]);
        free (copy);
        return bvm_error (err, ENOMEM, "egress settings");
      }
  *out = copy;
  *n = k;
  return 0;
}

int
egress_settings_load (struct egress_settings *out, const json_t *obj, const char *what,
                      bvm_error_t *err)
{
  static const char *const keys[] = { "mode", "allow", "allow_addresses", "limits", NULL };
  static const char *const lkeys[] = { "connections",     "connects_per_minute",
                                       "bytes_out",       "bytes_in",
                                       "idle_seconds",    "connection_seconds",
                                       "connect_seconds", NULL };
  struct egress_settings s = { 0 };
  const char *mode = "enforce";
  json_t *lim = NULL;
  int ret;

  s.limits = default_limits;
  if (obj == NULL)
    obj = json_object ();
  else
    json_incref ((json_t *) obj);
  ret = jsonx_check_keys (obj, keys, "egress", err);
  if (ret == 0)
    ret = jsonx_get_str (&mode, obj, "mode", false, 64, "egress", err);
  if (ret == 0 && strcmp (mode, "enforce") != 0 && strcmp (mode, "audit") != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "field `egress.mode` must be `enforce` or `audit`");
  s.mode = strcmp (mode, "audit") == 0 ? EGRESS_MODE_AUDIT : EGRESS_MODE_ENFORCE;
  if (ret == 0)
    ret = load_strv (&s.allow, &s.n_allow, obj, "allow", EGRESS_RULES_MAX, EGRESS_RULE_MAX, err);
  for (size_t i = 0; ret == 0 && i < s.n_allow; i++)
    {
      const char *why = egress_rule_problem (s.allow[i]);
      if (why != NULL)
        ret = bvm_error_code (err, BVM_E_INVALID, 0, "field `egress.allow[%zu]` %s", i, why);
    }
  if (ret == 0)
    ret = load_strv (&s.allow_addresses_text, &s.n_allow_addresses, obj, "allow_addresses",
                     NETADDR_ALLOW_MAX, 64, err);
  for (size_t i = 0; ret == 0 && i < s.n_allow_addresses; i++)
    if ((ret = netaddr_allow_parse (&s.allow_addresses, s.allow_addresses_text[i], err)) < 0)
      bvm_error_wrap (err, "field `egress.allow_addresses[%zu]`", i);
  if (ret == 0)
    ret = jsonx_get_typed (&lim, obj, "limits", JSON_OBJECT, false, "egress", err);
  if (ret == 0 && lim != NULL)
    {
      ret = jsonx_check_keys (lim, lkeys, "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.connections, lim, "connections", false, 1,
                             CONNECTIONS_HARD_MAX, "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.connects_per_minute, lim, "connects_per_minute", false, 1,
                             1000000, "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.bytes_out, lim, "bytes_out", false, 1, UINT64_MAX >> 2,
                             "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.bytes_in, lim, "bytes_in", false, 1, UINT64_MAX >> 2,
                             "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.idle_seconds, lim, "idle_seconds", false, 1, 86400,
                             "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.connection_seconds, lim, "connection_seconds", false, 1,
                             7 * 86400, "egress.limits", err);
      if (ret == 0)
        ret = jsonx_get_u64 (&s.limits.connect_seconds, lim, "connect_seconds", false, 1, 600,
                             "egress.limits", err);
    }
  json_decref ((json_t *) obj);
  if (ret < 0)
    {
      egress_settings_dispose (&s);
      return what ? bvm_error_wrap (err, "%s", what) : ret;
    }
  *out = s;
  return 0;
}

static json_t *
strv_to_json (char *const *v, size_t n)
{
  json_t *a = json_array ();
  for (size_t i = 0; a != NULL && i < n; i++)
    json_array_append_new (a, json_string (v[i]));
  return a;
}

json_t *
egress_settings_to_json (const struct egress_settings *s)
{
  const struct egress_limits *l = &s->limits;
  return json_pack ("{s:s, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}}", "mode",
                    s->mode == EGRESS_MODE_AUDIT ? "audit" : "enforce", "allow",
                    strv_to_json (s->allow, s->n_allow), "allow_addresses",
                    strv_to_json (s->allow_addresses_text, s->n_allow_addresses), "limits",
                    "connections", (json_int_t) l->connections, "connects_per_minute",
                    (json_int_t) l->connects_per_minute, "bytes_out", (json_int_t) l->bytes_out,
                    "bytes_in", (json_int_t) l->bytes_in, "idle_seconds",
                    (json_int_t) l->idle_seconds, "connection_seconds",
                    (json_int_t) l->connection_seconds, "connect_seconds",
                    (json_int_t) l->connect_seconds);
}

/* --- the role ------------------------------------------------------------------- */

int
egress_role_mint (struct role **out, const struct policy *tmpl, const struct policy *boundary,
                  const struct policy_vars *vars, int64_t expires_at, const char *const *rules,
                  size_t n_rules, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  cleanup_free char *text = NULL;
  struct policy *p = NULL;
  json_t *stmts, *res, *st;
  char name[256];
  int ret;

  if (n_rules == 0)
    return role_mint (out, tmpl, boundary, vars, expires_at, err);
  if (n_rules > EGRESS_RULES_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "more than %d egress rules", EGRESS_RULES_MAX);
  doc = json_deep_copy (policy_json (tmpl));
  res = json_array ();
  if (doc == NULL || res == NULL)
    {
      json_decref (res);
      return bvm_error (err, ENOMEM, "egress role");
    }
  for (size_t i = 0; i < n_rules; i++)
    {
      const char *why = egress_rule_problem (rules[i]);
      char r[EGRESS_RULE_MAX + 8];
      if (why != NULL)
        {
          json_decref (res);
          return bvm_error_code (err, BVM_E_INVALID, 0, "egress rule `%.300s` %s", rules[i], why);
        }
      snprintf (r, sizeof r, "net:%s", rules[i]);
      json_array_append_new (res, json_string (r));
    }
  st = json_pack ("{s:s, s:s, s:s, s:o}", "Sid", "EgressRules", "Effect", "Allow", "Action",
                  POLICY_ACTION_NET_CONNECT, "Resource", res);
  stmts = json_object_get (doc, "Statement");
  if (st == NULL)
    return bvm_error (err, ENOMEM, "egress role");
  if (json_is_object (stmts))
    {
      json_t *a = json_array ();
      json_array_append (a, stmts);
      json_object_set_new (doc, "Statement", a);
      stmts = a;
    }
  if (!json_is_array (stmts) || json_array_append_new (stmts, st) < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "the role template has no statement list");
  text = json_dumps (doc, JSON_COMPACT);
  if (text == NULL)
    return bvm_error (err, ENOMEM, "egress role");
  snprintf (name, sizeof name, "%s+egress", policy_name (tmpl));
  ret = policy_parse (&p, text, strlen (text), name, err);
  if (ret < 0)
    return bvm_error_wrap (err, "the role with its egress rules");
  ret = role_mint (out, p, boundary, vars, expires_at, err);
  policy_free (p);
  return ret;
}

/* --- the broker ------------------------------------------------------------------ */

enum sstate
{
  S_CONNECTING,
  S_OPEN,
};

struct stream
{
  uint32_t id; /* 0: free slot */
  enum sstate state;
  int fd;
  bool connect_mode;
  bool sni_pending;  /* CONNECT: the ClientHello is not checked yet */
  bool host_pending; /* HTTP: the first request's Host header is not checked yet */
  struct netaddr_hostport hp;
  struct netaddr_resolved res;
  size_t next_addr;
  char addr[NETADDR_STRLEN];
  const char *decision; /* "allow" | "audit" */
  char reason[EGRESS_REASON_MAX + 1];
  uint8_t *up; /* guest to upstream, EGRESS_WINDOW_INITIAL bytes */
  size_t up_len;
  uint32_t guest_credit; /* what the guest may still send us */
  uint32_t our_credit;   /* what we may still send the guest */
  bool guest_closed;     /* CLOSE from the guest */
  bool up_shut;          /* shutdown(SHUT_WR) done */
  bool up_eof;           /* the upstream closed its side */
  uint64_t bytes_out, bytes_in;
  int64_t t_open, t_last, t_connect_deadline;
  int64_t connect_ms; /* OPEN to connected: authorize, resolve, connect */
};

struct egress
{
  struct egress_opts o;
  int fd;
  int wake[2];
  pthread_t thread;
  bool started, stopped;
  struct egress_frame_parser parser;
  uint8_t *out; /* bytes for the guest: out[out_off .. out_len) */
  size_t out_off, out_len;
  bool chan_dead;
  bool draining; /* after a protocol error: read and drop */
  struct stream *streams;
  size_t n_streams; /* slots */
  size_t live;
  uint64_t opens_minute_start;
  uint64_t opens_in_minute;
  /* the record */
  json_t *conns;
  json_t *allowlist; /* object used as a set: "host:port" -> true */
  uint64_t n_allowed, n_denied, n_audited, n_dropped_records, unknown_frames;
  uint64_t bytes_out, bytes_in;
  int64_t cpu_ms; /* the broker thread's CPU time */
  char error[512];
};

static void elog (struct egress *e, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
elog (struct egress *e, const char *fmt, ...)
{
  char line[1024];
  va_list ap;
  int n = snprintf (line, sizeof line, "[egress] ");
  va_start (ap, fmt);
  vsnprintf (line + n, sizeof line - (size_t) n, fmt, ap);
  va_end (ap);
  if (e->o.log)
    e->o.log (e->o.opaque, line);
}

static int64_t
mono_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Queue one frame for the guest; false when the output buffer is full (the
 * reserve makes that a bug, never the guest's doing). */
static bool
send_frame (struct egress *e, unsigned type, unsigned flags, uint32_t id, const void *p,
            uint32_t len)
{
  size_t n;
  if (e->chan_dead)
    return false;
  n = egress_proto_encode (e->out + e->out_len, OUT_CAP - e->out_len, type, flags, id, p, len,
                           EGRESS_FROM_HOST);
  if (n == 0)
    return false;
  e->out_len += n;
  return true;
}

/* A printable one-line reason of at most EGRESS_REASON_MAX bytes. */
static uint32_t
clean_reason (char *out, const char *in)
{
  size_t j = 0;
  for (size_t i = 0; in[i] && j < EGRESS_REASON_MAX; i++)
    out[j++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
  if (j == 0)
    out[j++] = '-';
  out[j] = '\0';
  return (uint32_t) j;
}

static void
record (struct egress *e, const struct netaddr_hostport *hp, bool connect_mode, const char *addr,
        const char *decision, const char *reason, uint64_t out, uint64_t in, int64_t ms,
        int64_t connect_ms)
{
  char hpbuf[NETADDR_HOSTPORT_STRLEN];
  /* what the build used: the rules an operator would paste after an audit */
  if (hp != NULL && strcmp (decision, "deny") != 0)
    json_object_set_new (e->allowlist, netaddr_hostport_format (hpbuf, sizeof hpbuf, hp),
                         json_true ());
  if (json_array_size (e->conns) >= EGRESS_RECORDS_MAX)
    {
      e->n_dropped_records++;
      return;
    }
  json_array_append_new (e->conns,
                         json_pack ("{s:s, s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "host",
                                    hp ? hp->host : "", "port", hp ? (int) hp->port : 0, "mode",
                                    connect_mode ? "connect" : "http", "address", addr ? addr : "",
                                    "decision", decision, "reason", reason ? reason : "",
                                    "bytes_out", (json_int_t) out, "bytes_in", (json_int_t) in,
                                    "ms", (json_int_t) ms, "connect_ms", (json_int_t) connect_ms));
}

static void
refuse (struct egress *e, uint32_t id, unsigned code, const struct netaddr_hostport *hp,
        bool connect_mode, const char *target, const char *why)
{
  char reason[EGRESS_REASON_MAX + 1];
  uint32_t n = clean_reason (reason, why);
  /* a refusal is a denial (fail_on_deny counts those); an upstream that
   * cannot be reached is an error of the connection, not of the build */
  bool denial = code == EGRESS_ERR_DENIED || code == EGRESS_ERR_LIMIT;
  if (denial)
    e->n_denied++;
  send_frame (e, EGRESS_OPEN_ERR, code, id, reason, n);
  elog (e, "%s %s %s: %s", denial ? "deny" : "failed", connect_mode ? "CONNECT" : "HTTP", target,
        reason);
  record (e, hp, connect_mode, NULL, denial ? "deny" : "error", reason, 0, 0, 0, 0);
}

static struct stream *
find_stream (struct egress *e, uint32_t id)
{
  for (size_t i = 0; i < e->n_streams; i++)
    if (e->streams[i].id == id)
      return &e->streams[i];
  return NULL;
}

static void
stream_end (struct egress *e, struct stream *s, const char *why)
{
  int64_t now = mono_ms ();
  char hpbuf[NETADDR_HOSTPORT_STRLEN];
  if (s->fd >= 0)
    close (s->fd);
  elog (e, "closed %s (%s): %llu bytes out, %llu bytes in, %.1f s%s%s",
        netaddr_hostport_format (hpbuf, sizeof hpbuf, &s->hp), s->addr,
        (unsigned long long) s->bytes_out, (unsigned long long) s->bytes_in,
        (double) (now - s->t_open) / 1000.0, why ? ": " : "", why ? why : "");
  record (e, &s->hp, s->connect_mode, s->addr, s->decision, why ? why : s->reason, s->bytes_out,
          s->bytes_in, now - s->t_open, s->connect_ms);
  free (s->up);
  memset (s, 0, sizeof *s);
  s->fd = -1;
  e->live--;
}

static void
stream_reset (struct egress *e, struct stream *s, const char *why)
{
  char reason[EGRESS_REASON_MAX + 1];
  uint32_t n = clean_reason (reason, why);
  send_frame (e, EGRESS_RESET, 0, s->id, reason, n);
  stream_end (e, s, why);
}

/* Try the next checked address. 0 connecting, -1 none left. */
static int
try_connect (struct stream *s)
{
  while (s->next_addr < s->res.n)
    {
      struct sockaddr_storage ss;
      const struct netaddr *a = &s->res.addr[s->next_addr++];
      unsigned len = netaddr_sockaddr (&ss, a, s->hp.port);
      int fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0)
        continue;
      netaddr_format (s->addr, sizeof s->addr, a);
      if (connect (fd, (struct sockaddr *) &ss, len) == 0 || errno == EINPROGRESS)
        {
          s->fd = fd;
          return 0;
        }
      close (fd);
    }
  return -1;
}

static void
handle_open (struct egress *e, const struct egress_frame *f)
{
  const struct egress_limits *lim = &e->o.settings->limits;
  bool connect_mode = f->flags == EGRESS_OPEN_CONNECT;
  char target[EGRESS_TARGET_MAX + 1], resource[NETADDR_HOSTPORT_STRLEN + 8];
  struct netaddr_hostport hp;
  struct policy_decision d;
  struct stream *s = NULL;
  bvm_error_t lerr = NULL;
  const char *decision = "allow";
  int64_t now = mono_ms ();
  uint64_t minute = (uint64_t) now / 60000;

  memcpy (target, f->payload, f->len);
  target[f->len] = '\0';
  if (minute != e->opens_minute_start)
    {
      e->opens_minute_start = minute;
      e->opens_in_minute = 0;
    }
  if (++e->opens_in_minute > lim->connects_per_minute)
    {
      refuse (e, f->stream, EGRESS_ERR_LIMIT, NULL, connect_mode, target,
              "too many new connections per minute (egress.limits.connects_per_minute)");
      return;
    }
  if (e->live >= lim->connections)
    {
      refuse (e, f->stream, EGRESS_ERR_LIMIT, NULL, connect_mode, target,
              "too many concurrent connections (egress.limits.connections)");
      return;
    }
  if (e->bytes_out >= lim->bytes_out || e->bytes_in >= lim->bytes_in)
    {
      refuse (e, f->stream, EGRESS_ERR_LIMIT, NULL, connect_mode, target,
              "the job's egress byte cap is spent (egress.limits)");
      return;
    }
  if (netaddr_hostport_parse (&hp, target, &lerr) < 0)
    {
      refuse (e, f->stream, EGRESS_ERR_DENIED, NULL, connect_mode, target, bvm_error_msg (&lerr));
      bvm_error_free (&lerr);
      return;
    }
  netaddr_resource (resource, sizeof resource, &hp);
  role_decide (e->o.role, POLICY_ACTION_NET_CONNECT, resource, NULL, &d);
  if (!d.allowed)
    {
      char why[POLICY_DECISION_MAX + 64];
      if (e->o.settings->mode != EGRESS_MODE_AUDIT)
        {
          snprintf (why, sizeof why, "the job's role denies %.300s (%.200s)", resource, d.why);
          refuse (e, f->stream, EGRESS_ERR_DENIED, &hp, connect_mode, target, why);
          return;
        }
      decision = "audit";
      e->n_audited++;
      elog (e, "audit: the role would deny %s (%s); allowed in audit mode", resource, d.why);
    }
  for (size_t i = 0; i < e->n_streams; i++)
    if (e->streams[i].id == 0)
      {
        s = &e->streams[i];
        break;
      }
  if (s == NULL) /* cannot happen: slots == the connection limit */
    {
      refuse (e, f->stream, EGRESS_ERR_LIMIT, &hp, connect_mode, target, "no stream slot");
      return;
    }
  memset (s, 0, sizeof *s);
  s->fd = -1;
  s->hp = hp;
  /* the one lookup: every answer checked, the checked addresses used */
  if (netaddr_resolve (&s->res, &hp, &e->o.settings->allow_addresses, &lerr) < 0)
    {
      int code = bvm_error_get_code (&lerr) == BVM_E_DENIED ? EGRESS_ERR_DENIED
                                                            : EGRESS_ERR_UNREACHABLE;
      refuse (e, f->stream, (unsigned) code, &hp, connect_mode, target, bvm_error_msg (&lerr));
      bvm_error_free (&lerr);
      return;
    }
  if (try_connect (s) < 0)
    {
      refuse (e, f->stream, EGRESS_ERR_UNREACHABLE, &hp, connect_mode, target,
              "no address of the host could be connected to");
      return;
    }
  s->up = malloc (EGRESS_WINDOW_INITIAL);
  if (s->up == NULL)
    {
      close (s->fd);
      s->fd = -1;
      refuse (e, f->stream, EGRESS_ERR_LIMIT, &hp, connect_mode, target, "out of memory");
      return;
    }
  s->id = f->stream;
  s->state = S_CONNECTING;
  s->connect_mode = connect_mode;
  s->sni_pending = connect_mode;
  s->host_pending = !connect_mode;
  s->decision = decision;
  snprintf (s->reason, sizeof s->reason, "%.200s", d.why);
  s->guest_credit = EGRESS_WINDOW_INITIAL;
  s->our_credit = EGRESS_WINDOW_INITIAL;
  s->t_open = s->t_last = now;
  s->t_connect_deadline = now + (int64_t) lim->connect_seconds * 1000;
  e->live++;
}

int
egress__client_hello_sni (const uint8_t *b, size_t n, char *name, size_t size)
{
  size_t rl, p, end, hl;
  if (n < 5)
    return -2;
  if (b[0] != 0x16 || b[1] != 0x03)
    return -1;
  rl = ((size_t) b[3] << 8) | b[4];
  if (rl > 16384 || rl < 4)
    return -1;
  if (n < 5 + rl)
    return -2;
  b += 5;
  if (b[0] != 0x01)
    return -1;
  hl = ((size_t) b[1] << 16) | ((size_t) b[2] << 8) | b[3];
  if (hl + 4 > rl)
    return -1; /* a ClientHello split over records: not from a client we know */
  end = 4 + hl;
  p = 4 + 2 + 32;
#define NEED(k)                                                                                   \
  do                                                                                              \
    if (p + (k) > end)                                                                            \
      return -1;                                                                                  \
  while (0)
  NEED (1);
  p += 1 + b[p];
  NEED (2);
  p += 2 + (((size_t) b[p] << 8) | b[p + 1]);
  NEED (1);
  p += 1 + b[p];
  if (p == end)
    return 0;
  NEED (2);
  {
    size_t el = ((size_t) b[p] << 8) | b[p + 1];
    p += 2;
    if (p + el > end)
      return -1;
    end = p + el;
  }
  while (p + 4 <= end)
    {
      unsigned type = ((unsigned) b[p] << 8) | b[p + 1];
      size_t len = ((size_t) b[p + 2] << 8) | b[p + 3];
      p += 4;
      NEED (len);
      if (type == 0)
        {
          size_t q = p, qend = p + len, ll, nl;
          if (q + 2 > qend)
            return -1;
          ll = ((size_t) b[q] << 8) | b[q + 1];
          q += 2;
          if (q + ll > qend || ll < 3 || b[q] != 0)
            return -1;
          nl = ((size_t) b[q + 1] << 8) | b[q + 2];
          q += 3;
          if (q + nl > qend || nl == 0 || nl >= size)
            return -1;
          for (size_t i = 0; i < nl; i++)
            {
              char c = (char) b[q + i];
              if (c <= 0x20 || c >= 0x7f)
                return -1;
              name[i] = (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
            }
          name[nl] = '\0';
          if (nl > 1 && name[nl - 1] == '.')
            name[--nl] = '\0';
          /* "." or "a.." is no name (found by fuzz_egress_peek) */
          if (name[nl - 1] == '.')
            return -1;
          return 1;
        }
      p += len;
    }
#undef NEED
  return 0;
}

/* After a CONNECT the first bytes must be a ClientHello naming the CONNECT
 * host: the role authorized that name, and a different SNI would reach
 * another site behind the same address (domain fronting). true when the
 * stream may go on (or must wait for more bytes). */
static bool
check_sni (struct egress *e, struct stream *s)
{
  char sni[NETADDR_HOST_MAX + 2];
  const char *why = NULL;
  int r = egress__client_hello_sni (s->up, s->up_len, sni, sizeof sni);

  if (r == -2 && s->up_len < TLS_RECORD_MAX)
    return true;
  if (r < 0)
    why = "the tunnel does not start with a TLS ClientHello";
  else if (r == 0 && !s->hp.is_literal)
    why = "the TLS ClientHello names no server (SNI)";
  else if (r == 1 && strcmp (sni, s->hp.host) != 0)
    {
      char msg[EGRESS_REASON_MAX + 1];
      snprintf (msg, sizeof msg, "the TLS SNI `%.60s` is not the CONNECT host `%.60s`", sni,
                s->hp.host);
      e->n_denied++;
      elog (e, "deny tunnel to %s: %s", s->hp.host, msg);
      s->decision = "deny";
      stream_reset (e, s, msg);
      return false;
    }
  if (why != NULL)
    {
      e->n_denied++;
      elog (e, "deny tunnel to %s: %s", s->hp.host, why);
      s->decision = "deny";
      stream_reset (e, s, why);
      return false;
    }
  s->sni_pending = false;
  return true;
}

/* The first request of a plain-HTTP stream must name the OPEN host (and
 * port, if it names one) in its Host header: otherwise a build allowed
 * `cdn.example:80` could ask the same server for any site it hosts, the
 * plain-text form of domain fronting. Requests after the first on the same
 * connection are not parsed (the proxy sends `Connection: close`). */
const char *
egress__http_host_problem (const uint8_t *b, size_t n, const struct netaddr_hostport *want,
                           bool *complete)
{
  const uint8_t *end = memmem (b, n, "\r\n\r\n", 4);
  char value[NETADDR_HOSTPORT_STRLEN + 1] = "";
  unsigned hosts = 0;

  *complete = end != NULL;
  if (end == NULL)
    return n < EGRESS_HTTP_HEAD_MAX ? NULL : "the HTTP request head is over 64 KiB";
  for (const uint8_t *l = b; l < end;)
    {
      const uint8_t *le = memmem (l, (size_t) (end + 2 - l), "\r\n", 2);
      size_t len = (size_t) (le - l);
      if (len >= 5 && strncasecmp ((const char *) l, "host:", 5) == 0)
        {
          const uint8_t *v = l + 5, *ve = le;
          while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
          while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
          if (++hosts > 1)
            return "the HTTP request has two Host headers";
          if ((size_t) (ve - v) >= sizeof value || memchr (v, '\0', (size_t) (ve - v)) != NULL)
            return "the HTTP Host header is not a valid host";
          memcpy (value, v, (size_t) (ve - v));
          value[ve - v] = '\0';
        }
      l = le + 2;
    }
  if (hosts == 1)
    {
      struct netaddr_hostport hp;
      bvm_error_t perr = NULL;
      char with_port[NETADDR_HOSTPORT_STRLEN + 8];
      /* "host" alone means the default port: check it as host:<our port> */
      bool has_port = value[0] == '[' ? strstr (value, "]:") != NULL : strchr (value, ':') != NULL;
      snprintf (with_port, sizeof with_port, has_port ? "%s" : "%s:%u", value,
                (unsigned) want->port);
      if (netaddr_hostport_parse (&hp, with_port, &perr) < 0)
        {
          bvm_error_free (&perr);
          return "the HTTP Host header is not a valid host";
        }
      if (strcmp (hp.host, want->host) != 0 || hp.port != want->port)
        return "the HTTP Host header names another host than the proxy request";
    }
  return NULL;
}

/* The first request of a plain-HTTP stream must name the OPEN host (and
 * port, if it names one) in its Host header: otherwise a build allowed
 * `cdn.example:80` could ask the same server for any site it hosts, the
 * plain-text form of domain fronting. Requests after the first on the same
 * connection are not parsed (the proxy sends `Connection: close`). */
static bool
check_http_host (struct egress *e, struct stream *s)
{
  bool complete;
  const char *why = egress__http_host_problem (s->up, s->up_len, &s->hp, &complete);

  if (why != NULL)
    {
      e->n_denied++;
      elog (e, "deny HTTP request to %s: %s", s->hp.host, why);
      s->decision = "deny";
      stream_reset (e, s, why);
      return false;
    }
  if (complete)
    s->host_pending = false;
  return true;
}

/* The guest closed a stream whose first bytes were never complete enough
 * to check (a ClientHello, an HTTP request head): nothing of it may go on,
 * and nothing more will come; without this it would wait for the idle
 * limit. */
static void
closed_unchecked (struct egress *e, struct stream *s)
{
  if (s->guest_closed && (s->sni_pending || s->host_pending))
    stream_reset (e, s, "the connection closed before its first bytes could be checked");
}

static int
handle_frame (struct egress *e, const struct egress_frame *f)
{
  struct stream *s;

  switch (f->type)
    {
    case EGRESS_HELLO: return 0;
    case EGRESS_OPEN:
      if (find_stream (e, f->stream) != NULL)
        {
          snprintf (e->error, sizeof e->error, "OPEN of stream %u, which is open",
                    (unsigned) f->stream);
          return -1;
        }
      handle_open (e, f);
      return 0;
    default: break;
    }
  s = find_stream (e, f->stream);
  if (s == NULL)
    {
      /* a stream we ended while the guest was still sending: harmless */
      e->unknown_frames++;
      return 0;
    }
  switch (f->type)
    {
    case EGRESS_DATA:
      if (s->guest_closed || egress_proto_credit_spend (&s->guest_credit, f->len) < 0)
        {
          snprintf (e->error, sizeof e->error, "DATA on stream %u beyond its credit or its CLOSE",
                    (unsigned) f->stream);
          return -1;
        }
      /* credit + buffered never exceeds the buffer: the check above bounds it */
      memcpy (s->up + s->up_len, f->payload, f->len);
      s->up_len += f->len;
      s->bytes_out += f->len;
      e->bytes_out += f->len;
      s->t_last = mono_ms ();
      if (e->bytes_out > e->o.settings->limits.bytes_out)
        {
          elog (e, "the job's egress byte cap (out) is spent");
          stream_reset (e, s, "the job's egress byte cap is spent (egress.limits.bytes_out)");
          return 0;
        }
      if (s->sni_pending && s->state == S_OPEN)
        check_sni (e, s);
      else if (s->host_pending && s->state == S_OPEN)
        check_http_host (e, s);
      return 0;
    case EGRESS_WINDOW:
      if (egress_proto_credit_grant (&s->our_credit, egress_proto_get32 (f->payload)) < 0)
        {
          snprintf (e->error, sizeof e->error, "WINDOW on stream %u past the credit cap",
                    (unsigned) f->stream);
          return -1;
        }
      return 0;
    case EGRESS_CLOSE:
      s->guest_closed = true;
      if (s->state == S_OPEN)
        closed_unchecked (e, s);
      return 0;
    case EGRESS_RESET: stream_end (e, s, "reset by the guest"); return 0;
    }
  return 0;
}

static void
chan_fail (struct egress *e, const char *why)
{
  if (e->chan_dead)
    return;
  if (e->error[0] == '\0')
    snprintf (e->error, sizeof e->error, "%s", why);
  elog (e, "channel closed: %s", e->error);
  e->chan_dead = true;
  /* whatever the guest still writes is read and dropped, and the socket
   * stays open: a guest blocked writing to a channel nobody reads (or one
   * QEMU saw close: t_egress_hostile_agent, case `garbage`) would never
   * finish, and the rest of its job - its result, its outputs - would be
   * lost with it */
  e->draining = true;
  for (size_t i = 0; i < e->n_streams; i++)
    if (e->streams[i].id != 0)
      stream_end (e, &e->streams[i], "the channel ended");
}

static void
chan_read (struct egress *e)
{
  uint8_t buf[READ_CHUNK];
  ssize_t n = read (e->fd, buf, sizeof buf);
  size_t off = 0;

  if (n == 0)
    {
      e->chan_dead = true; /* the VM is gone */
      for (size_t i = 0; i < e->n_streams; i++)
        if (e->streams[i].id != 0)
          stream_end (e, &e->streams[i], "the VM ended");
      return;
    }
  if (n < 0)
    {
      if (errno != EAGAIN && errno != EINTR)
        chan_fail (e, strerror (errno));
      return;
    }
  while (off < (size_t) n && !e->chan_dead)
    {
      struct egress_frame f;
      size_t used = 0;
      bvm_error_t perr = NULL;
      int r = egress_frame_feed (&e->parser, buf + off, (size_t) n - off, &used, &f, &perr);
      off += used;
      if (r < 0)
        {
          snprintf (e->error, sizeof e->error, "protocol error: %s", bvm_error_msg (&perr));
          bvm_error_free (&perr);
          chan_fail (e, e->error);
          return;
        }
      if (r == 1 && handle_frame (e, &f) < 0)
        {
          char m[600];
          snprintf (m, sizeof m, "protocol error: %.480s", e->error);
          snprintf (e->error, sizeof e->error, "%.500s", m);
          chan_fail (e, e->error);
          return;
        }
    }
}

/* QEMU takes the channel 4 KiB at a time (its chardev read size), so most
 * writes are partial: the written part is skipped, not moved, and the rest
 * is moved to the front only once a quarter of the buffer is behind it,
 * not after every write. The room checks use out_len, the end: they stay
 * conservative. */
static void
chan_write (struct egress *e)
{
  ssize_t n = write (e->fd, e->out + e->out_off, e->out_len - e->out_off);
  if (n > 0)
    {
      e->out_off += (size_t) n;
      if (e->out_off == e->out_len)
        e->out_off = e->out_len = 0;
      else if (e->out_off >= OUT_CAP / 4)
        {
          memmove (e->out, e->out + e->out_off, e->out_len - e->out_off);
          e->out_len -= e->out_off;
          e->out_off = 0;
        }
    }
  else if (n < 0 && errno != EAGAIN && errno != EINTR)
    chan_fail (e, strerror (errno));
}

static void
stream_io (struct egress *e, struct stream *s, short rev)
{
  if (s->state == S_CONNECTING)
    {
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      if (!(rev & (POLLOUT | POLLERR | POLLHUP)))
        return;
      if (getsockopt (s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0)
        {
          char hpbuf[NETADDR_HOSTPORT_STRLEN];
          close (s->fd);
          s->fd = -1;
          if (try_connect (s) == 0)
            return;
          /* not a stream the guest knows yet: answer OPEN_ERR, no RESET */
          netaddr_hostport_format (hpbuf, sizeof hpbuf, &s->hp);
          {
            char why[160];
            struct netaddr_hostport hp = s->hp;
            bool cm = s->connect_mode;
            uint32_t id = s->id;
            snprintf (why, sizeof why, "connecting to %s failed: %s", s->addr,
                      strerror (soerr ? soerr : errno));
            free (s->up);
            memset (s, 0, sizeof *s);
            s->fd = -1;
            e->live--;
            refuse (e, id, EGRESS_ERR_UNREACHABLE, &hp, cm, hpbuf, why);
          }
          return;
        }
      s->state = S_OPEN;
      s->connect_ms = mono_ms () - s->t_open;
      e->n_allowed++;
      {
        char hpbuf[NETADDR_HOSTPORT_STRLEN];
        elog (e, "%s %s %s (%s)", s->decision, s->connect_mode ? "CONNECT" : "HTTP",
              netaddr_hostport_format (hpbuf, sizeof hpbuf, &s->hp), s->addr);
      }
      send_frame (e, EGRESS_OPEN_OK, 0, s->id, NULL, 0);
      if (s->sni_pending && s->up_len > 0 && !check_sni (e, s))
        return;
      if (s->host_pending && s->up_len > 0 && !check_http_host (e, s))
        return;
      closed_unchecked (e, s);
      return;
    }
  if ((rev & (POLLOUT | POLLERR)) && s->up_len > 0 && !s->sni_pending && !s->host_pending)
    {
      ssize_t n = send (s->fd, s->up, s->up_len, MSG_NOSIGNAL);
      if (n > 0)
        {
          memmove (s->up, s->up + n, s->up_len - (size_t) n);
          s->up_len -= (size_t) n;
          s->t_last = mono_ms ();
          /* credit back as the upstream takes the bytes */
          send_frame (e, EGRESS_WINDOW, 0, s->id,
                      (uint8_t[4]){ (uint8_t) (n >> 24), (uint8_t) (n >> 16), (uint8_t) (n >> 8),
                                    (uint8_t) n },
                      4);
          s->guest_credit += (uint32_t) n;
        }
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        {
          stream_reset (e, s, "the upstream connection failed");
          return;
        }
    }
  if ((rev & (POLLIN | POLLHUP | POLLERR)) && !s->up_eof && s->our_credit > 0
      && e->out_len + EGRESS_HEADER_LEN + EGRESS_PAYLOAD_MAX <= OUT_CAP - OUT_RESERVE)
    {
      size_t want = s->our_credit < EGRESS_PAYLOAD_MAX ? s->our_credit : EGRESS_PAYLOAD_MAX;
      uint8_t *dst = e->out + e->out_len + EGRESS_HEADER_LEN;
      ssize_t n = recv (s->fd, dst, want, 0);
      if (n > 0)
        {
          egress_proto_put_header (e->out + e->out_len, EGRESS_DATA, 0, s->id, (uint32_t) n);
          e->out_len += EGRESS_HEADER_LEN + (size_t) n;
          s->our_credit -= (uint32_t) n;
          s->bytes_in += (uint64_t) n;
          e->bytes_in += (uint64_t) n;
          s->t_last = mono_ms ();
          if (e->bytes_in > e->o.settings->limits.bytes_in)
            {
              elog (e, "the job's egress byte cap (in) is spent");
              stream_reset (e, s, "the job's egress byte cap is spent (egress.limits.bytes_in)");
              return;
            }
        }
      else if (n == 0)
        {
          s->up_eof = true;
          send_frame (e, EGRESS_CLOSE, 0, s->id, NULL, 0);
        }
      else if (errno != EAGAIN && errno != EINTR)
        {
          stream_reset (e, s, "the upstream connection failed");
          return;
        }
    }
  if (s->guest_closed && s->up_len == 0 && !s->up_shut)
    {
      shutdown (s->fd, SHUT_WR);
      s->up_shut = true;
    }
  if (s->up_shut && s->up_eof)
    stream_end (e, s, NULL);
}

static void
check_timers (struct egress *e, int64_t now)
{
  const struct egress_limits *lim = &e->o.settings->limits;
  for (size_t i = 0; i < e->n_streams; i++)
    {
      struct stream *s = &e->streams[i];
      if (s->id == 0)
        continue;
      if (s->state == S_CONNECTING && now >= s->t_connect_deadline)
        {
          char hpbuf[NETADDR_HOSTPORT_STRLEN];
          struct netaddr_hostport hp = s->hp;
          bool cm = s->connect_mode;
          uint32_t id = s->id;
          netaddr_hostport_format (hpbuf, sizeof hpbuf, &s->hp);
          close (s->fd);
          free (s->up);
          memset (s, 0, sizeof *s);
          s->fd = -1;
          e->live--;
          refuse (e, id, EGRESS_ERR_TIMEOUT, &hp, cm, hpbuf, "connecting timed out");
          continue;
        }
      if (s->state == S_OPEN && now - s->t_last >= (int64_t) lim->idle_seconds * 1000)
        {
          elog (e, "idle for %llu s: closing", (unsigned long long) lim->idle_seconds);
          stream_reset (e, s, "idle timeout (egress.limits.idle_seconds)");
          continue;
        }
      if (now - s->t_open >= (int64_t) lim->connection_seconds * 1000)
        stream_reset (e, s, "connection time limit (egress.limits.connection_seconds)");
    }
}

static void *
broker_main (void *arg)
{
  struct egress *e = arg;
  struct pollfd *fds = calloc (e->n_streams + 2, sizeof *fds);
  size_t *map = calloc (e->n_streams + 2, sizeof *map);
  uint32_t *ids = calloc (e->n_streams + 2, sizeof *ids);

  if (fds == NULL || map == NULL || ids == NULL)
    {
      chan_fail (e, "out of memory");
      goto cleanup;
    }
  send_frame (e, EGRESS_HELLO, 0, 0, (uint8_t[4]){ 0, 0, 0, EGRESS_VERSION }, 4);
  for (;;)
    {
      nfds_t nf = 0;
      int64_t now = mono_ms ();

      fds[nf++] = (struct pollfd){ e->wake[0], POLLIN, 0 };
      if (e->chan_dead && e->draining)
        fds[nf++] = (struct pollfd){ e->fd, POLLIN, 0 };
      else if (!e->chan_dead)
        {
          short ev = 0;
          if (e->out_len <= OUT_CAP - OUT_RESERVE)
            ev |= POLLIN;
          if (e->out_len > 0)
            ev |= POLLOUT;
          fds[nf++] = (struct pollfd){ e->fd, ev, 0 };
        }
      for (size_t i = 0; i < e->n_streams && !e->chan_dead; i++)
        {
          struct stream *s = &e->streams[i];
          short ev = 0;
          if (s->id == 0)
            continue;
          if (s->state == S_CONNECTING)
            ev = POLLOUT;
          else
            {
              if (s->up_len > 0 && !s->sni_pending && !s->host_pending)
                ev |= POLLOUT;
              if (!s->up_eof && s->our_credit > 0
                  && e->out_len + EGRESS_HEADER_LEN + EGRESS_PAYLOAD_MAX <= OUT_CAP - OUT_RESERVE)
                ev |= POLLIN;
            }
          map[nf] = i;
          ids[nf] = s->id;
          /* nothing to do for it now (no credit, no room): not polled at
           * all, or a hang-up it cannot act on yet would spin this loop */
          fds[nf++] = (struct pollfd){ ev ? s->fd : -1, ev, 0 };
        }
      if (poll (fds, nf, 1000) < 0 && errno != EINTR)
        {
          chan_fail (e, strerror (errno));
          break;
        }
      if (fds[0].revents)
        break;
      if (e->chan_dead)
        {
          if (e->draining && nf > 1 && fds[1].revents)
            {
              static __thread uint8_t sink[65536];
              ssize_t n = read (e->fd, sink, sizeof sink);
              if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                e->draining = false;
            }
          continue;
        }
      if (fds[1].revents & POLLOUT)
        chan_write (e);
      if (!e->chan_dead && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
        chan_read (e);
      for (nfds_t k = 2; k < nf && !e->chan_dead; k++)
        {
          struct stream *s = &e->streams[map[k]];
          /* the slot may have been ended (or reused) by a frame just read:
           * a new stream there may even have the old descriptor's number,
           * and the old stream's events are not its own (a connect still
           * in progress would pass for done) */
          if (s->id != 0 && s->id == ids[k] && s->fd == fds[k].fd)
            stream_io (e, s, fds[k].revents);
        }
      /* what needs no socket event: a CLOSE from the guest with nothing
       * left to send ends our side now, and the stream once both are done */
      for (size_t i = 0; i < e->n_streams && !e->chan_dead; i++)
        {
          struct stream *s = &e->streams[i];
          if (s->id != 0 && s->state == S_OPEN && s->guest_closed && s->up_len == 0)
            stream_io (e, s, 0);
        }
      if (!e->chan_dead && e->out_len > 0)
        chan_write (e);
      check_timers (e, now);
    }
cleanup:
  chan_fail (e, "the build ended");
  {
    struct rusage ru;
    if (getrusage (RUSAGE_THREAD, &ru) == 0)
      e->cpu_ms = (int64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000
                  + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
  }
  free (fds);
  free (map);
  free (ids);
  return NULL;
}

int
egress_start (struct egress **out, int fd, const struct egress_opts *o, bvm_error_t *err)
{
  struct egress *e = calloc (1, sizeof *e);
  int ret;

  if (e == NULL)
    {
      close (fd);
      return bvm_error (err, ENOMEM, "egress broker");
    }
  e->o = *o;
  e->fd = fd;
  e->wake[0] = e->wake[1] = -1;
  e->n_streams = o->settings->limits.connections;
  e->streams = calloc (e->n_streams, sizeof *e->streams);
  e->out = malloc (OUT_CAP);
  e->conns = json_array ();
  e->allowlist = json_object ();
  if (e->streams == NULL || e->out == NULL || e->conns == NULL || e->allowlist == NULL)
    {
      egress_free (e);
      return bvm_error (err, ENOMEM, "egress broker");
    }
  for (size_t i = 0; i < e->n_streams; i++)
    e->streams[i].fd = -1;
  if ((ret = egress_frame_parser_init (&e->parser, EGRESS_FROM_GUEST, err)) < 0)
    {
      egress_free (e);
      return ret;
    }
  if (pipe2 (e->wake, O_CLOEXEC) < 0 || fcntl (fd, F_SETFL, O_NONBLOCK) < 0)
    {
      ret = bvm_error (err, errno, "egress broker");
      egress_free (e);
      return ret;
    }
  if ((ret = pthread_create (&e->thread, NULL, broker_main, e)) != 0)
    {
      egress_free (e);
      return bvm_error (err, ret, "egress broker thread");
    }
  e->started = true;
  *out = e;
  return 0;
}

void
egress_stop (struct egress *e)
{
  if (e == NULL || e->stopped)
    return;
  e->stopped = true;
  if (e->started)
    {
      if (write (e->wake[1], "x", 1) < 0)
        {
          /* a pipe with room: cannot fail; the thread would end at its timeout */
        }
      pthread_join (e->thread, NULL);
    }
}

json_t *
egress_record (const struct egress *e)
{
  json_t *allow = json_array ();
  const char *k;
  json_t *v;

  json_object_foreach (e->allowlist, k, v)
    {
      (void) v;
      json_array_append_new (allow, json_string (k));
    }
  return json_pack ("{s:s, s:O, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?, s:o}", "mode",
                    e->o.settings->mode == EGRESS_MODE_AUDIT ? "audit" : "enforce", "connections",
                    e->conns, "allowed", (json_int_t) e->n_allowed, "denied",
                    (json_int_t) e->n_denied, "audited", (json_int_t) e->n_audited,
                    "connections_not_recorded", (json_int_t) e->n_dropped_records, "bytes_out",
                    (json_int_t) e->bytes_out, "bytes_in", (json_int_t) e->bytes_in, "cpu_ms",
                    (json_int_t) e->cpu_ms, "error", e->error[0] ? e->error : NULL, "allowlist",
                    allow);
}

uint64_t
egress_denied (const struct egress *e)
{
  return e->n_denied;
}

void
egress_free (struct egress *e)
{
  if (e == NULL)
    return;
  egress_stop (e);
  for (size_t i = 0; e->streams && i < e->n_streams; i++)
    {
      if (e->streams[i].fd >= 0)
        close (e->streams[i].fd);
      free (e->streams[i].up);
    }
  free (e->streams);
  free (e->out);
  egress_frame_parser_dispose (&e->parser);
  if (e->fd >= 0)
    close (e->fd);
  if (e->wake[0] >= 0)
    close (e->wake[0]);
  if (e->wake[1] >= 0)
    close (e->wake[1]);
  json_decref (e->conns);
  json_decref (e->allowlist);
  free (e);
}
