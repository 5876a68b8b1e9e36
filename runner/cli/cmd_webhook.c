/* cmd_webhook.c - `buildvm webhook [--config FILE] [--listen ADDR:PORT]`: receive git
 * push webhooks and enqueue deploy requests (docs/webhooks.md)
 *
 * The server itself (libmicrohttpd, one thread) is webhook_serve() in
 * runner/lib/webhook_http.c; this file reads the config and opens the
 * queue and the replay store for it.
 */
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "queue.h"
#include "util.h"
#include "webhook.h"
#include "webhook_http.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_TIMEOUT_MS 5000

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm webhook [--config FILE] [--listen ADDR:PORT]\n"
                "\n"
                "Receive git push webhooks (GitHub, Gitea, Forgejo, GitLab) and put a deploy\n"
                "request on the runner's queue for each authentic push to a branch that the\n"
                "`apps` table of runner.json deploys. Endpoints:\n"
                "\n"
                "  POST " WEBHOOK_PATH "   a push event: 202 with the job id when enqueued\n"
                "  GET  " WEBHOOK_HEALTH_PATH "   200 while the server runs\n"
                "\n"
                "  --config FILE       runner.json (its `webhook`, `apps` and `queue` sections)\n"
                "  --listen ADDR:PORT  `IPv4:PORT` or `[IPv6]:PORT` (default: `webhook.listen`,\n"
                "                      127.0.0.1:8585); put TLS in a reverse proxy in front\n"
                "\n"
                "Runs until SIGTERM or SIGINT. One log line per request on stderr.\n"
                "See docs/webhooks.md.\n"
                "\n"
                "exit status: 0 stopped by a signal, 2 usage error or invalid config,\n"
                "1 the server could not start\n");
}

int
cmd_webhook (int argc, char **argv)
{
  const char *config_path = NULL, *listen_addr = NULL;
  cleanup_config struct runner_config *cfg = NULL;
  cleanup_webhook_config struct webhook_config *wc = NULL;
  cleanup_webhook_replay struct webhook_replay *replay = NULL;
  cleanup_queue struct queue *q = NULL;
  cleanup_error bvm_error_t err = NULL;
  cleanup_free char *dir = NULL, *store = NULL;
  struct queue_opts qo = QUEUE_OPTS_INIT;
  struct sockaddr_storage sa;
  socklen_t salen = 0;
  struct webhook_serve_opts wo = { 0 };
  int c;

  const struct opt opts[] = {
    OPT_STR ("config", 'c', &config_path),
    OPT_STR ("listen", 'l', &listen_addr),
    OPT_END,
  };
  if (cli_parse (argc, argv, "webhook", opts, 0, 0, usage, &c))
    return c;

  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("webhook", &err, 2);
  if (listen_addr == NULL)
    listen_addr = cfg->webhook.listen;
  if (webhook_parse_listen (&sa, &salen, listen_addr, &err) < 0)
    return cli_fail ("webhook", &err, 2);
  if (webhook_config_load (&wc, &cfg->webhook, cfg->apps, cfg->n_apps, &err) < 0)
    return cli_fail ("webhook", &err, 2);

  /* the replay store lives with the runner's state, private to us */
  if (asprintf (&dir, "%s/webhook", cfg->state_dir) < 0
      || asprintf (&store, "%s/deliveries", dir) < 0)
    {
      dir = store = NULL;
      bvm_error (&err, ENOMEM, "webhook");
      return cli_fail ("webhook", &err, 1);
    }
  if (fs_mkdir_p (dir, 0700, &err) < 0
      || webhook_replay_open (&replay, store, cfg->webhook.replay_window, WEBHOOK_REPLAY_SPAN_S,
                              &err)
             < 0)
    return cli_fail ("webhook", &err, 1);

  /* a redis that stalls holds the server's one thread: not for long */
  qo.timeout_ms = QUEUE_TIMEOUT_MS;
  if (queue_open (&q, cfg->queue, &qo, &err) < 0)
    return cli_fail ("webhook", &err, cli_status_for (&err) == 2 ? 2 : 1);

  wo.wc = wc;
  wo.replay = replay;
  wo.queue = q;
  wo.addr = &sa;
  wo.listen = listen_addr;
  wo.max_body_bytes = cfg->webhook.max_body_bytes;
  wo.max_connections = cfg->webhook.max_connections;
  wo.timeout_seconds = cfg->webhook.timeout_seconds;
  wo.n_apps = cfg->n_apps;
  wo.queue_url = cfg->queue;
  wo.replay_store = store;
  wo.stop = &cli_cancel_requested;

  /* SIGINT/SIGTERM set cli_cancel_requested and interrupt the wait */
  cli_install_cancel ();
  signal (SIGPIPE, SIG_IGN);

  if (webhook_serve (&wo, &err) < 0)
    return cli_fail ("webhook", &err, 1);
  return 0;
}
