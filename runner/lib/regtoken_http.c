/* regtoken_http.c - the token server's HTTP server: libmicrohttpd in, see
 * regtoken_http.h
 *
 * This file only moves bytes between libmicrohttpd and regtoken_handle(),
 * which decides every answer. A token request is a GET with no body: the
 * answer is made as soon as the headers are in, and a request with a body
 * is refused before it is read. One thread runs MHD's event loop (epoll,
 * MHD_run_wait), and between two turns of it the connections open longer
 * than the timeout are cut (MHD's own timeout only closes idle ones).
 */
#include "regtoken_http.h"
#include "log.h"
#include "regtoken.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HEADER_MEMORY_LIMIT (32 * 1024) /* MHD answers 431 past it */
#define LISTEN_BACKLOG 64
#define LOOP_WAIT_MS 250

struct conn
{
  struct conn *next, *prev;
  int fd;
  int64_t start_ms;
  bool cut;
};

struct server
{
  const struct regtoken_server *rs;
  int64_t timeout_ms;
  struct conn conns; /* list head */
};

struct params
{
  const char *service;
  const char *scopes[REGTOKEN_SCOPES_MAX + 1];
  size_t n_scopes;
  bool too_many;
};

static enum MHD_Result
collect_arg (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct params *p = cls;

  (void) kind;
  if (strcmp (key, "scope") == 0)
    {
      if (p->n_scopes == REGTOKEN_SCOPES_MAX)
        {
          p->too_many = true;
          return MHD_NO;
        }
      p->scopes[p->n_scopes++] = value ? value : "";
    }
  else if (strcmp (key, "service") == 0)
    p->service = value ? value : "";
  /* account, client_id, offline_token: nothing we decide with */
  return MHD_YES;
}

static void
peer_name (char *out, size_t size, struct MHD_Connection *conn)
{
  const union MHD_ConnectionInfo *ci
      = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  const struct sockaddr *sa = ci ? ci->client_addr : NULL;

  snprintf (out, size, "-");
  if (sa != NULL && sa->sa_family == AF_INET)
    inet_ntop (AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, out, (socklen_t) size);
  else if (sa != NULL && sa->sa_family == AF_INET6)
    inet_ntop (AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr, out, (socklen_t) size);
}

/* A value for a logfmt line: quotes inside would end the field early, and
 * the request's bytes are hostile. */
static const char *
log_value (char *buf, size_t size, const char *s)
{
  size_t o = 0;

  for (; *s && o + 1 < size; s++)
    buf[o++] = (*s == '"' || (unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f) ? '\'' : *s;
  buf[o] = '\0';
  return buf;
}

static enum MHD_Result
send_answer (struct MHD_Connection *conn, int status, const char *body, bool basic_challenge)
{
  struct MHD_Response *resp;
  enum MHD_Result ret;

  resp = MHD_create_response_from_buffer (strlen (body), (void *) body, MHD_RESPMEM_MUST_COPY);
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (basic_challenge)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                             "Basic realm=\"buildvm token server\"");
  if (status == 405)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_ALLOW, "GET");
  ret = MHD_queue_response (conn, (unsigned int) status, resp);
  MHD_destroy_response (resp);
  return ret;
}

static void
log_answer (struct MHD_Connection *conn, const char *method, const char *url, int status,
            const char *subject, const char *reason)
{
  char peer[INET6_ADDRSTRLEN + 1], path[64], why[REGTOKEN_REASON_MAX];

  if (status == 200 && strcmp (url, REGTOKEN_HEALTH_PATH) == 0)
    return;
  peer_name (peer, sizeof peer, conn);
  log_msg (status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
           "event=token peer=%s method=%.16s path=\"%s\" status=%d subject=%s result=\"%s\"", peer,
           method, log_value (path, sizeof path, url), status, subject[0] ? subject : "-",
           log_value (why, sizeof why, reason));
}

static enum MHD_Result
simple (struct MHD_Connection *conn, const char *method, const char *url, int status,
        const char *code, const char *msg)
{
  char body[512];
  snprintf (body, sizeof body, "{\"errors\":[{\"code\":\"%s\",\"message\":\"%s\"}]}", code, msg);
  log_answer (conn, method, url, status, "", msg);
  return send_answer (conn, status, body, false);
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
            const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  struct server *s = cls;
  static int first_call_marker;
  struct params p;
  struct regtoken_request rq;
  struct regtoken_response res;
  bvm_error_t err = NULL;
  enum MHD_Result ret;
  const char *cl;

  (void) version, (void) upload_data;
  if (*con_cls == NULL)
    {
      /* the headers are in: answer now, never read a body */
      *con_cls = &first_call_marker;
      cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
        return simple (conn, method, url, 405, "UNSUPPORTED", "only GET");
      if ((cl != NULL && strcmp (cl, "0") != 0)
          || MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING)
                 != NULL)
        return simple (conn, method, url, 400, "INVALID_REQUEST", "a token request has no body");
      if (strcmp (url, REGTOKEN_HEALTH_PATH) == 0)
        return send_answer (conn, 200, "{\"status\":\"ok\"}", false);
      if (strcmp (url, REGTOKEN_PATH) != 0)
        return simple (conn, method, url, 404, "NOT_FOUND", "the realm is " REGTOKEN_PATH);

      memset (&p, 0, sizeof p);
      MHD_get_connection_values (conn, MHD_GET_ARGUMENT_KIND, collect_arg, &p);
      if (p.too_many)
        return simple (conn, method, url, 400, "INVALID_REQUEST", "too many scope parameters");
      memset (&rq, 0, sizeof rq);
      rq.service = p.service;
      rq.scopes = p.scopes;
      rq.n_scopes = p.n_scopes;
      rq.authorization = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                      MHD_HTTP_HEADER_AUTHORIZATION);
      rq.now = wall_s ();
      if (regtoken_handle (&res, s->rs, &rq, &err) < 0)
        {
          log_answer (conn, method, url, 500, res.subject, bvm_error_msg (&err));
          bvm_error_free (&err);
          regtoken_response_dispose (&res);
          return send_answer (conn, 500,
                              "{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"internal "
                              "error\"}]}",
                              false);
        }
      log_answer (conn, method, url, res.status, res.subject, res.reason);
      ret = send_answer (conn, res.status, res.body, res.status == 401);
      regtoken_response_dispose (&res);
      return ret;
    }
  /* a body that came anyway (no Content-Length): the answer is queued, drop it */
  *upload_data_size = 0;
  return MHD_YES;
}

static void
on_connection (void *cls, struct MHD_Connection *conn, void **socket_context,
               enum MHD_ConnectionNotificationCode toe)
{
  struct server *s = cls;
  struct conn *c = *socket_context;

  if (toe == MHD_CONNECTION_NOTIFY_STARTED)
    {
      const union MHD_ConnectionInfo *ci
          = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
      if (ci == NULL || (c = calloc (1, sizeof *c)) == NULL)
        return; /* only the idle timeout applies to this one */
      c->fd = ci->connect_fd;
      c->start_ms = now_ms ();
      c->next = s->conns.next;
      c->prev = &s->conns;
      s->conns.next->prev = c;
      s->conns.next = c;
      *socket_context = c;
    }
  else if (c != NULL)
    {
      c->prev->next = c->next;
      c->next->prev = c->prev;
      free (c);
      *socket_context = NULL;
    }
}

static void
cut_overdue (struct server *s)
{
  int64_t now = now_ms ();

  for (struct conn *c = s->conns.next; c != &s->conns; c = c->next)
    if (!c->cut && now - c->start_ms > s->timeout_ms)
      {
        c->cut = true;
        shutdown (c->fd, SHUT_RDWR);
        log_info ("event=token.timeout result=\"request not in and answered within %lld s: "
                  "connection closed\"",
                  (long long) (s->timeout_ms / 1000));
      }
}

static void
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
  char msg[512];
  size_t n;

  (void) cls;
  vsnprintf (msg, sizeof msg, fmt, ap);
  n = strlen (msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
    msg[--n] = '\0';
  log_info ("event=token.http message=\"%s\"", msg);
}

int
regtoken_serve (const struct regtoken_serve_opts *o, bvm_error_t *err)
{
  struct MHD_Daemon *d;
  struct server s;
  unsigned int flags;
  int ret = 0;

  memset (&s, 0, sizeof s);
  s.rs = o->server;
  s.timeout_ms = (int64_t) o->timeout_seconds * 1000;
  s.conns.next = s.conns.prev = &s.conns;

  flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  if (o->addr->ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  d = MHD_start_daemon (flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER,
                        on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *) o->addr,
                        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) o->max_connections,
                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) o->timeout_seconds,
                        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HEADER_MEMORY_LIMIT,
                        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) LISTEN_BACKLOG,
                        MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s, MHD_OPTION_END);
  if (d == NULL)
    return bvm_error_code (err, BVM_E_IO, 0,
                           "cannot listen on `%s` (in use, or not an address of this host?)",
                           o->listen);
  log_info ("event=token.start listen=%s realm_path=%s issuer=\"%s\" service=\"%s\" alg=%s "
            "kid=%s",
            o->listen, REGTOKEN_PATH, o->issuer, o->service, o->alg, o->kid);
  while (!*o->stop)
    {
      if (MHD_run_wait (d, LOOP_WAIT_MS) != MHD_YES && errno != EINTR)
        {
          ret = bvm_error (err, errno, "the http server failed");
          break;
        }
      cut_overdue (&s);
    }
  log_info ("event=token.stop");
  MHD_stop_daemon (d);
  return ret;
}
