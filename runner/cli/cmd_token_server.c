/* cmd_token_server.c - `buildvm token-server [--config FILE] [--listen ADDR:PORT]`:
 * the registry's token server, tokens scoped per job (docs/security.md,
 * "Registry tokens"; docs/operations.md)
 *
 * The server itself (libmicrohttpd, one thread) is regtoken_serve() in
 * runner/lib/regtoken_http.c and its decisions regtoken_handle() in
 * runner/lib/regtoken.c; this file reads the config, the two keys and the
 * role policies for them.
 */
#include "cli.h"
#include "config.h"
#include "policy.h"
#include "regtoken.h"
#include "regtoken_http.h"
#include "util.h"
#include "webhook.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm token-server [--config FILE] [--listen ADDR:PORT]\n"
           "\n"
           "The token server of a distribution registry configured with `auth: token`:\n"
           "it answers GET " REGTOKEN_PATH "?service=..&scope=repository:NAME:pull,push with a\n"
           "JWT signed by `token_server.signing_key` granting exactly the actions the\n"
           "job's role allows. A runner authenticates with HTTP Basic `<app>/<job>` and\n"
           "the job's ticket (`registry.job_tickets`). Endpoints:\n"
           "\n"
           "  GET " REGTOKEN_PATH "     a token (the registry's `realm`)\n"
           "  GET " REGTOKEN_HEALTH_PATH "   200 while the server runs\n"
           "\n"
           "  --config FILE       runner.json (its `token_server`, `registry` and `policies`)\n"
           "  --listen ADDR:PORT  `IPv4:PORT` or `[IPv6]:PORT` (default: `token_server.listen`,\n"
           "                      127.0.0.1:8586); put TLS in a reverse proxy in front\n"
           "\n"
           "Runs until SIGTERM or SIGINT. One log line per request on stderr.\n"
           "See docs/operations.md, \"Registry tokens\".\n"
           "\n"
           "exit status: 0 stopped by a signal, 2 usage error or invalid config,\n"
           "1 the server could not start\n");
}

static int
load_policy (struct policy **out, const char *which, bool boundary, bvm_error_t *err)
{
  if (which == NULL || strcmp (which, "builtin") == 0)
    return policy_load_builtin (out, boundary, err);
  return policy_load_file (out, which, err);
}

int
cmd_token_server (int argc, char **argv)
{
  const char *config_path = NULL, *listen_addr = NULL;
  cleanup_config struct runner_config *cfg = NULL;
  cleanup_regtoken_signer struct regtoken_signer *signer = NULL;
  cleanup_regtoken_server struct regtoken_server *server = NULL;
  cleanup_policy struct policy *tmpl = NULL;
  cleanup_policy struct policy *boundary = NULL;
  cleanup_error bvm_error_t err = NULL;
  unsigned char *ticket_key = NULL;
  size_t ticket_key_len = 0;
  struct regtoken_server_opts so = { 0 };
  struct regtoken_serve_opts wo = { 0 };
  struct sockaddr_storage sa;
  socklen_t salen = 0;
  int c, status;

  const struct opt opts[] = {
    OPT_STR ("config", 'c', &config_path),
    OPT_STR ("listen", 'l', &listen_addr),
    OPT_END,
  };
  if (cli_parse (argc, argv, "token-server", opts, 0, 0, usage, &c))
    return c;

  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("token-server", &err, 2);
  if (listen_addr == NULL)
    listen_addr = cfg->token_server.listen;
  if (webhook_parse_listen (&sa, &salen, listen_addr, &err) < 0)
    return cli_fail ("token-server", &err, 2);
  if (cfg->token_server.signing_key == NULL)
    return cli_usage ("token-server", "no signing key: set `token_server.signing_key` in %s",
                      cfg->path ? cfg->path : "runner.json (--config)");
  if (cfg->token_server.ticket_key == NULL)
    return cli_usage ("token-server",
                      "no ticket key: set `token_server.ticket_key` or `registry.job_tickets` "
                      "in %s",
                      cfg->path ? cfg->path : "runner.json (--config)");
  if (regtoken_signer_load (&signer, cfg->token_server.signing_key, &err) < 0
      || regtoken_ticket_key_load (&ticket_key, &ticket_key_len, cfg->token_server.ticket_key,
                                   &err)
             < 0)
    return cli_fail ("token-server", &err, 2);
  if (load_policy (&tmpl, cfg->policies.role, false, &err) < 0
      || load_policy (&boundary, cfg->policies.boundary, true, &err) < 0)
    {
      bvm_error_wrap (&err, "loading the role policies");
      status = cli_fail ("token-server", &err, 2);
      goto out;
    }

  so.settings = &cfg->token_server;
  so.signer = signer;
  so.ticket_key = ticket_key;
  so.ticket_key_len = ticket_key_len;
  so.role_template = tmpl;
  so.boundary = boundary;
  if (regtoken_server_new (&server, &so, &err) < 0)
    {
      status = cli_fail ("token-server", &err, 2);
      goto out;
    }

  wo.server = server;
  wo.addr = &sa;
  wo.listen = listen_addr;
  wo.max_connections = cfg->token_server.max_connections;
  wo.timeout_seconds = cfg->token_server.timeout_seconds;
  wo.issuer = cfg->token_server.issuer;
  wo.service = cfg->token_server.service;
  wo.alg = regtoken_signer_alg (signer);
  wo.kid = regtoken_signer_kid (signer);
  wo.stop = &cli_cancel_requested;

  cli_install_cancel ();
  signal (SIGPIPE, SIG_IGN);
  status = regtoken_serve (&wo, &err) < 0 ? cli_fail ("token-server", &err, 1) : 0;
out:
  mem_wipe (ticket_key, ticket_key_len);
  free (ticket_key);
  return status;
}
