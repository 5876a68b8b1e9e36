/* webhook_http.h - the webhook receiver's HTTP server (libmicrohttpd)
 *
 * `buildvm webhook` (runner/cli/cmd_webhook.c) opens the queue and the
 * replay store and hands them here; every request goes to webhook_handle()
 * (webhook.h), which decides the answer. Each connection is cut once it has
 * been open for timeout_seconds, whatever it trickles in.
 */
#ifndef BUILDVM_WEBHOOK_HTTP_H
#define BUILDVM_WEBHOOK_HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "error.h"

struct queue;
struct webhook_config;
struct webhook_replay;

struct webhook_serve_opts
{
  const struct webhook_config *wc;
  struct webhook_replay *replay;
  struct queue *queue;                 /* deploy requests go here */
  const struct sockaddr_storage *addr; /* from webhook_parse_listen */
  const char *listen;                  /* the same, as written, for messages */
  uint64_t max_body_bytes;
  uint64_t max_connections;
  uint64_t timeout_seconds;
  /* for the start line of the log only */
  size_t n_apps;
  const char *queue_url;
  const char *replay_store;
  const volatile sig_atomic_t *stop; /* set (by a signal handler) to stop */
};

/* Listen and answer until *stop is set. <0 when it cannot listen or the
 * event loop fails. */
int webhook_serve (const struct webhook_serve_opts *o, bvm_error_t *err);

#endif
