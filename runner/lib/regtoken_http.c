/* regtoken_http.c - the token server's HTTP server: libmicrohttpd in, see
 * regtoken_http.h
 *
 * This file only moves bytes between libmicrohttpd and regtoken_handle(),
 * which decides every answer. A token request is a GET with no body: the
 * answer is made as soon as the headers are in, and a request with a body
 * is refused before it is read. The loop, the connection deadline and the
 * log helpers are httpd.h's, shared with the webhook receiver.
 */
#include "regtoken_http.h"
#include "httpd.h"
#include "log.h"
#include "regtoken.h"
#include "util.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct server
{
  const struct regtoken_server *rs;
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
  char peer[HTTPD_PEER_MAX], path[64], why[REGTOKEN_REASON_MAX];

  if (status == 200 && strcmp (url, REGTOKEN_HEALTH_PATH) == 0)
    return;
  httpd_peer_name (peer, sizeof peer, conn);
  log_msg (status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
           "event=token peer=%s method=%.16s path=\"%s\" status=%d subject=%s result=\"%s\"", peer,
           method, httpd_log_value (path, sizeof path, url), status, subject[0] ? subject : "-",
           httpd_log_value (why, sizeof why, reason));
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

int
regtoken_serve (const struct regtoken_serve_opts *o, bvm_error_t *err)
{
  struct httpd_opts ho = { 0 };
  struct server s = { .rs = o->server };
  char start[512];

  snprintf (start, sizeof start,
            "listen=%s realm_path=%s issuer=\"%s\" service=\"%s\" alg=%s kid=%s", o->listen,
            REGTOKEN_PATH, o->issuer, o->service, o->alg, o->kid);
  ho.event = "token";
  ho.addr = o->addr;
  ho.listen = o->listen;
  ho.max_connections = o->max_connections;
  ho.timeout_seconds = o->timeout_seconds;
  ho.handler = on_request;
  ho.handler_cls = &s;
  ho.start_fields = start;
  ho.stop = o->stop;
  return httpd_serve (&ho, err);
}
