/* webhook_http.c - the webhook receiver's HTTP server: libmicrohttpd in, see
 * webhook_http.h
 *
 * This file only moves bytes between libmicrohttpd and webhook_handle(),
 * which decides every answer. One thread runs everything (httpd.h), so
 * every callback, hence every use of the queue handle and of the replay
 * store (neither is thread-safe), happens on it, and a connection is cut
 * once it has been open for `timeout_seconds`.
 */
#include "webhook_http.h"
#include "buf.h"
#include "httpd.h"
#include "jsonx.h"
#include "log.h"
#include "queue.h"
#include "util.h"
#include "webhook.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct server
{
  const struct webhook_config *wc;
  struct webhook_deps deps;
  struct queue *queue;
  size_t max_body; /* the body is ours, capped apart from the headers (httpd.h) */
};

/* One request, from its headers to its answer. */
struct request
{
  struct buf body;
  struct webhook_header headers[WEBHOOK_MAX_HEADERS];
  size_t n_headers;
  bool too_many_headers;
  bool too_large;
};

static int
enqueue_job (void *ctx, const struct job_request *job, bool *duplicate, bvm_error_t *err)
{
  struct server *s = ctx;
  cleanup_free char *msg_id = NULL;
  enum queue_state existing = QUEUE_STATE_NONE;

  if (queue_enqueue (&msg_id, &existing, s->queue, job, err) < 0)
    return -1;
  *duplicate = existing != QUEUE_STATE_NONE;
  return 0;
}

static enum MHD_Result
collect_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct request *r = cls;

  (void) kind;
  if (r->n_headers == WEBHOOK_MAX_HEADERS)
    {
      r->too_many_headers = true;
      return MHD_NO;
    }
  r->headers[r->n_headers].name = key;
  r->headers[r->n_headers].value = value;
  r->n_headers++;
  return MHD_YES;
}

static void
log_answer (struct MHD_Connection *conn, const char *method, const char *url,
            const struct webhook_response *res, const bvm_error_t *err)
{
  char peer[HTTPD_PEER_MAX], reason[WEBHOOK_REASON_MAX + 1], path[64];
  char delivery[JOB_DELIVERY_MAX + 1];

  httpd_peer_name (peer, sizeof peer, conn);
  /* health checks come every few seconds; they are not events */
  if (res->status == 200 && strcmp (url, WEBHOOK_HEALTH_PATH) == 0)
    return;
  log_msg (res->status >= 500 ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
           "event=webhook peer=%s method=%.16s path=\"%s\" status=%d format=%s delivery=\"%s\" "
           "app=%s job=%s result=\"%s\"%s%s",
           peer, method, httpd_log_value (path, sizeof path, url), res->status,
           webhook_format_name (res->format),
           httpd_log_value (delivery, sizeof delivery, res->delivery),
           res->app[0] ? res->app : "-", res->job_id[0] ? res->job_id : "-",
           httpd_log_value (reason, sizeof reason, res->reason), err ? " error=" : "",
           err ? bvm_error_msg (err) : "");
  if (res->warning[0])
    log_warn ("event=webhook.replay job=%s error=\"%s\"", res->job_id,
              httpd_log_value (reason, sizeof reason, res->warning));
}

static enum MHD_Result
answer (struct MHD_Connection *conn, const struct webhook_response *res)
{
  cleanup_json json_t *doc = json_pack ("{s:i, s:s}", "status", res->status, "message",
                                        res->reason);
  cleanup_free char *text = NULL;
  struct MHD_Response *resp;
  enum MHD_Result ret;

  if (doc != NULL && res->job_id[0] != '\0')
    json_object_set_new (doc, "job", json_string (res->job_id));
  if (doc == NULL || (text = json_dumps (doc, JSON_COMPACT)) == NULL)
    return MHD_NO;
  resp = MHD_create_response_from_buffer (strlen (text), text, MHD_RESPMEM_MUST_COPY);
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header (resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (res->status == 405)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_ALLOW,
                             strstr (res->reason, "GET") ? "GET, HEAD" : "POST");
  ret = MHD_queue_response (conn, (unsigned int) res->status, resp);
  MHD_destroy_response (resp);
  return ret;
}

static void
fill_request (struct webhook_request *wr, struct request *r, const char *url, const char *method)
{
  memset (wr, 0, sizeof *wr);
  wr->method = method;
  wr->path = url;
  wr->headers = r->headers;
  wr->n_headers = r->n_headers;
  wr->body = r->body.ptr ? r->body.ptr : "";
  wr->body_len = r->body.len;
  wr->body_too_large = r->too_large;
}

static enum MHD_Result
on_request (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
            const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  struct server *s = cls;
  struct request *r = *con_cls;
  struct webhook_request wr;
  struct webhook_response res;
  bvm_error_t err = NULL;
  enum MHD_Result ret;

  (void) version;
  if (r == NULL)
    {
      /* the headers are in: decide what needs no body right away, so that
       * the body of a request that is refused anyway is never read */
      const char *cl = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_LENGTH);
      uint64_t len = 0;

      if ((r = calloc (1, sizeof *r)) == NULL)
        return MHD_NO;
      *con_cls = r;
      buf_init (&r->body, s->max_body);
      MHD_get_connection_values (conn, MHD_HEADER_KIND, collect_header, r);
      if (r->too_many_headers)
        {
          memset (&res, 0, sizeof res);
          res.status = 431;
          snprintf (res.reason, sizeof res.reason, "more than %d headers", WEBHOOK_MAX_HEADERS);
          log_answer (conn, method, url, &res, NULL);
          return answer (conn, &res);
        }
      /* MHD has checked the syntax; a length over the cap is answered
       * before a byte of the body is read (nor is 100-continue sent) */
      if (cl != NULL && (parse_u64 (cl, &len) < 0 || len > s->max_body))
        r->too_large = true;
      fill_request (&wr, r, url, method);
      if (webhook_answer_early (&res, s->wc, &wr))
        {
          log_answer (conn, method, url, &res, NULL);
          return answer (conn, &res);
        }
      return MHD_YES;
    }

  if (*upload_data_size > 0)
    {
      /* MHD cannot answer in the middle of a body: a chunked body over the
       * cap closes the connection (a body with a Content-Length over the
       * cap got its 413 above, unread) */
      if (buf_add (&r->body, upload_data, *upload_data_size) < 0)
        {
          log_info ("event=webhook path=\"%s\" status=- result=\"body over %zu bytes: connection "
                    "closed\"",
                    WEBHOOK_PATH, s->max_body);
          return MHD_NO;
        }
      *upload_data_size = 0;
      return MHD_YES;
    }

  fill_request (&wr, r, url, method);
  if (webhook_handle (&res, s->wc, &wr, &s->deps, &err) < 0)
    log_answer (conn, method, url, &res, &err);
  else
    log_answer (conn, method, url, &res, NULL);
  bvm_error_free (&err);
  ret = answer (conn, &res);
  return ret;
}

static void
on_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
  struct request *r = *con_cls;

  (void) cls, (void) conn, (void) toe;
  if (r == NULL)
    return;
  buf_dispose (&r->body);
  free (r);
  *con_cls = NULL;
}

int
webhook_serve (const struct webhook_serve_opts *o, bvm_error_t *err)
{
  struct httpd_opts ho = { 0 };
  struct server s;
  char start[1024];

  memset (&s, 0, sizeof s);
  s.wc = o->wc;
  s.queue = o->queue;
  s.max_body = o->max_body_bytes;
  s.deps.enqueue = enqueue_job;
  s.deps.ctx = &s;
  s.deps.replay = o->replay;

  snprintf (start, sizeof start, "listen=%s apps=%zu queue=%s replay_store=%s remembered=%zu",
            o->listen, o->n_apps, o->queue_url, o->replay_store, webhook_replay_count (o->replay));
  ho.event = "webhook";
  ho.addr = o->addr;
  ho.listen = o->listen;
  ho.max_connections = o->max_connections;
  ho.timeout_seconds = o->timeout_seconds;
  ho.handler = on_request;
  ho.handler_cls = &s;
  ho.completed = on_completed;
  ho.completed_cls = NULL;
  ho.start_fields = start;
  ho.stop = o->stop;
  return httpd_serve (&ho, err);
}
