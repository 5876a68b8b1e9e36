/* httpd.c - the one-thread libmicrohttpd server loop with a per-connection
 * deadline; see httpd.h */
#include "httpd.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LISTEN_BACKLOG 64
#define LOOP_WAIT_MS 250

/* Every open connection, for the deadline. */
struct conn
{
  struct conn *next, *prev;
  int fd;
  int64_t start_ms;
  bool cut;
};

struct loop
{
  const char *event;
  int64_t timeout_ms;
  struct conn conns; /* list head */
};

void
httpd_peer_name (char *out, size_t size, struct MHD_Connection *conn)
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

const char *
httpd_log_value (char *buf, size_t size, const char *s)
{
  size_t o = 0;

  for (; *s && o + 1 < size; s++)
    buf[o++] = (*s == '"' || (unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f) ? '\'' : *s;
  buf[o] = '\0';
  return buf;
}

static void
on_connection (void *cls, struct MHD_Connection *conn, void **socket_context,
               enum MHD_ConnectionNotificationCode toe)
{
  struct loop *l = cls;
  struct conn *c = *socket_context;

  if (toe == MHD_CONNECTION_NOTIFY_STARTED)
    {
      const union MHD_ConnectionInfo *ci
          = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
      if (ci == NULL || (c = calloc (1, sizeof *c)) == NULL)
        return; /* only the idle timeout applies to this one */
      c->fd = ci->connect_fd;
      c->start_ms = now_ms ();
      c->next = l->conns.next;
      c->prev = &l->conns;
      l->conns.next->prev = c;
      l->conns.next = c;
      *socket_context = c;
    }
  else if (c != NULL)
    {
      /* MHD closes the socket after this, so a listed fd is always still
       * the connection's own */
      c->prev->next = c->next;
      c->next->prev = c->prev;
      free (c);
      *socket_context = NULL;
    }
}

/* Cut every connection open for longer than the timeout: shutdown() makes
 * MHD see the end of the stream and close it on its next turn. */
static void
cut_overdue (struct loop *l)
{
  int64_t now = now_ms ();

  for (struct conn *c = l->conns.next; c != &l->conns; c = c->next)
    if (!c->cut && now - c->start_ms > l->timeout_ms)
      {
        c->cut = true;
        shutdown (c->fd, SHUT_RDWR);
        log_info ("event=%s.timeout result=\"request not in and answered within %lld s: "
                  "connection closed\"",
                  l->event, (long long) (l->timeout_ms / 1000));
      }
}

static void
on_mhd_log (void *cls, const char *fmt, va_list ap)
{
  const char *event = cls;
  char msg[512], shown[512];
  size_t n;

  vsnprintf (msg, sizeof msg, fmt, ap);
  n = strlen (msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
    msg[--n] = '\0';
  log_info ("event=%s.http message=\"%s\"", event, httpd_log_value (shown, sizeof shown, msg));
}

int
httpd_serve (const struct httpd_opts *o, bvm_error_t *err)
{
  struct MHD_Daemon *d;
  struct loop l;
  unsigned int flags;
  int ret = 0;

  memset (&l, 0, sizeof l);
  l.event = o->event;
  l.timeout_ms = (int64_t) o->timeout_seconds * 1000;
  l.conns.next = l.conns.prev = &l.conns;

  flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  if (o->addr->ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  d = MHD_start_daemon (flags, 0, NULL, NULL, o->handler, o->handler_cls,
                        /* first, so that every message of MHD's goes through our log */
                        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *) o->event,
                        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *) o->addr,
                        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) o->max_connections,
                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) o->timeout_seconds,
                        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTPD_HEADER_MEMORY,
                        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) LISTEN_BACKLOG,
                        MHD_OPTION_NOTIFY_COMPLETED, o->completed, o->completed_cls,
                        MHD_OPTION_NOTIFY_CONNECTION, on_connection, &l, MHD_OPTION_END);
  if (d == NULL)
    return bvm_error_code (err, BVM_E_IO, 0,
                           "cannot listen on `%s` (in use, or not an address of this host?)",
                           o->listen);
  log_info ("event=%s.start %s", o->event, o->start_fields ? o->start_fields : "");
  while (!*o->stop)
    {
      if (MHD_run_wait (d, LOOP_WAIT_MS) != MHD_YES && errno != EINTR)
        {
          ret = bvm_error (err, errno, "the http server failed");
          break;
        }
      cut_overdue (&l);
    }
  log_info ("event=%s.stop", o->event);
  MHD_stop_daemon (d);
  return ret;
}
