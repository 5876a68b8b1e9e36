/* httpd.h - what buildvm's one-thread libmicrohttpd servers share
 * (`buildvm webhook`: webhook_http.c; `buildvm token-server`:
 * regtoken_http.c)
 *
 * One thread runs MHD's event loop (epoll, MHD_run_wait), so every callback
 * happens on it; between two turns of the loop the connections that have
 * been open longer than the timeout are cut. MHD's own timeout only closes
 * idle connections, and a client that sends a byte now and then is never
 * idle: this way a slow client costs one connection slot for at most
 * `timeout_seconds`, whatever it trickles in. Headers are read into MHD's
 * per-connection pool, capped at HTTPD_HEADER_MEMORY (MHD answers 431 past
 * it).
 */
#ifndef BUILDVM_HTTPD_H
#define BUILDVM_HTTPD_H

#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "error.h"

#define HTTPD_HEADER_MEMORY (32 * 1024)
#define HTTPD_PEER_MAX (INET6_ADDRSTRLEN + 1) /* httpd_peer_name */

struct httpd_opts
{
  const char *event;                   /* the log's event prefix: "webhook", "token" */
  const struct sockaddr_storage *addr; /* from webhook_parse_listen */
  const char *listen;                  /* the same, as written, for messages */
  uint64_t max_connections;
  uint64_t timeout_seconds;
  MHD_AccessHandlerCallback handler;
  void *handler_cls;
  MHD_RequestCompletedCallback completed; /* may be NULL */
  void *completed_cls;
  const char *start_fields;          /* logged after `event=<event>.start` */
  const volatile sig_atomic_t *stop; /* set (by a signal handler) to stop */
};

/* Listen and answer until *stop is set. <0 when it cannot listen or the
 * event loop fails. */
int httpd_serve (const struct httpd_opts *o, bvm_error_t *err);

/* The client's address for the log ("-" when unknown). */
void httpd_peer_name (char *out, size_t size, struct MHD_Connection *conn);
/* A value for a logfmt line, cut to size: a quote would end the field
 * early, and a request's bytes are hostile, so `"`, controls and non-ASCII
 * bytes become `'`. */
const char *httpd_log_value (char *buf, size_t size, const char *s);

#endif
