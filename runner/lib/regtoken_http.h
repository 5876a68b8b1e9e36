/* regtoken_http.h - the token server's HTTP side (libmicrohttpd)
 *
 * `buildvm token-server` (runner/cli/cmd_token_server.c) loads the keys and
 * the policies and hands them here; every GET of the realm goes to
 * regtoken_handle() (regtoken.h), which decides the answer. One thread
 * (httpd.h): each connection is cut once it has been open for
 * timeout_seconds, whatever it trickles in.
 */
#ifndef BUILDVM_REGTOKEN_HTTP_H
#define BUILDVM_REGTOKEN_HTTP_H

#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "error.h"

struct regtoken_server;

struct regtoken_serve_opts
{
  const struct regtoken_server *server;
  const struct sockaddr_storage *addr; /* from webhook_parse_listen */
  const char *listen;                  /* the same, as written, for messages */
  uint64_t max_connections;
  uint64_t timeout_seconds;
  const char *issuer, *service, *alg, *kid; /* for the start line of the log */
  const volatile sig_atomic_t *stop;        /* set (by a signal handler) to stop */
};

/* Listen and answer until *stop is set. <0 when it cannot listen or the
 * event loop fails. */
int regtoken_serve (const struct regtoken_serve_opts *o, bvm_error_t *err);

#endif
