/* http.c - one HTTP client over a reused libcurl easy handle, see http.h */
#include "http.h"
#include "fs.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define UPLOAD_BUFFER (512 * 1024)
#define DISCARD_MAX (64u << 10) /* a 2xx body we do not read */

/* --- the client ---------------------------------------------------------------- */


static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
curl_init_once (void)
{
  curl_init_result = curl_global_init (CURL_GLOBAL_DEFAULT);
}


void
http_secret_free (char **s)
{
  if (*s)
    {
      mem_wipe (*s, strlen (*s));
      free (*s);
      *s = NULL;
    }
}

int
http_client_init (struct http_client *c, const struct http_options *o, bvm_error_t *err)
{
  memset (c, 0, sizeof *c);
  pthread_once (&curl_once, curl_init_once);
  if (curl_init_result != CURLE_OK)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "curl init: %s",
                           curl_easy_strerror (curl_init_result));
  c->user_agent = strdup (o->user_agent ? o->user_agent : "buildvm");
  c->curl = curl_easy_init ();
  if (c->user_agent == NULL || c->curl == NULL
      || (o->ca_file && (c->ca_file = strdup (o->ca_file)) == NULL))
    {
      http_client_dispose (c);
      return bvm_error (err, ENOMEM, "http client");
    }
  c->max_attempts = o->max_attempts;
  c->backoff_ms = o->backoff_ms;
  c->backoff_max_ms = o->backoff_max_ms;
  c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
  c->stall_timeout_ms = o->stall_timeout_ms > 0 ? o->stall_timeout_ms : 60000;
  c->deadline_ms = o->deadline_ms;
  c->cancel = o->cancel;
  return 0;
}

void
http_client_dispose (struct http_client *c)
{
  if (c->curl)
    curl_easy_cleanup (c->curl);
  free (c->ca_file);
  free (c->user_agent);
  memset (c, 0, sizeof *c);
}

/* --- one HTTP exchange -------------------------------------------------------- */

void
http_req_init (struct http_req *q, struct http_client *c, const char *method, const char *url)
{
  memset (q, 0, sizeof *q);
  q->c = c;
  q->method = method;
  q->url = url;
  q->fd = -1;
  q->out_fd = -1;
  buf_init (&q->body, HTTP_ERR_BODY_MAX);
}

void
http_req_dispose (struct http_req *q)
{
  buf_dispose (&q->body);
  http_secret_free (&q->authz);
  bvm_error_free (&q->sink_err);
}

const char *
http_url_for_msg (char *buf, size_t size, const char *url)
{
  size_t n = strcspn (url, "?");
  if (n >= size)
    n = size - 1;
  memcpy (buf, url, n);
  buf[n] = '\0';
  return buf;
}

static void
header_store (char *dst, size_t size, const char *v, size_t n, bool *over)
{
  if (n >= size)
    {
      if (over)
        *over = true;
      dst[0] = '\0';
      return;
    }
  memcpy (dst, v, n);
  dst[n] = '\0';
}

static size_t
header_cb (char *p, size_t size, size_t nitems, void *ud)
{
  struct http_req *q = ud;
  size_t len = size * nitems, nlen, vlen;
  const char *colon, *v;

  if (len >= 5 && memcmp (p, "HTTP/", 5) == 0)
    {
      /* A new response (after a 100 or a redirect): forget the last one. */
      q->location[0] = q->docker_digest[0] = q->content_type_out[0] = '\0';
      q->range[0] = q->www_auth[0] = q->retry_after[0] = q->etag[0] = q->sse[0] = '\0';
      q->location_bad = q->www_auth_over = q->has_length = false;
      buf_reset (&q->body);
      return len;
    }
  colon = memchr (p, ':', len);
  if (colon == NULL)
    return len;
  nlen = (size_t) (colon - p);
  v = colon + 1;
  vlen = len - nlen - 1;
  while (vlen > 0 && (*v == ' ' || *v == '\t'))
    v++, vlen--;
  while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
    vlen--;
  if (memchr (v, '\0', vlen) != NULL)
    return len;
#define IS(name) (nlen == sizeof (name) - 1 && strncasecmp (p, name, nlen) == 0)
  if (IS ("location"))
    header_store (q->location, sizeof q->location, v, vlen, &q->location_bad);
  else if (IS ("docker-content-digest"))
    header_store (q->docker_digest, sizeof q->docker_digest, v, vlen, NULL);
  else if (IS ("content-type"))
    header_store (q->content_type_out, sizeof q->content_type_out, v, vlen, NULL);
  else if (IS ("range"))
    header_store (q->range, sizeof q->range, v, vlen, NULL);
  else if (IS ("x-amz-server-side-encryption"))
    header_store (q->sse, sizeof q->sse, v, vlen, NULL);
  else if (IS ("etag"))
    header_store (q->etag, sizeof q->etag, v, vlen, NULL);
  else if (IS ("retry-after"))
    header_store (q->retry_after, sizeof q->retry_after, v, vlen, NULL);
  else if (IS ("www-authenticate"))
    {
      /* Keep one challenge, preferring Bearer when several are offered. */
      if (q->www_auth[0] == '\0'
          || (strncasecmp (q->www_auth, "bearer", 6) != 0 && vlen >= 6
              && strncasecmp (v, "bearer", 6) == 0))
        header_store (q->www_auth, sizeof q->www_auth, v, vlen, &q->www_auth_over);
    }
  else if (IS ("content-length"))
    {
      char num[32];
      bool over = false;
      header_store (num, sizeof num, v, vlen, &over);
      q->has_length = !over && parse_u64 (num, &q->length) == 0;
    }
#undef IS
  return len;
}

static size_t
write_cb (char *p, size_t size, size_t nitems, void *ud)
{
  struct http_req *q = ud;
  size_t len = size * nitems;
  long status = 0;

  curl_easy_getinfo (q->c->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299)
    {
      /* An error body: keep its start for the message, drop the rest. */
      size_t room = HTTP_ERR_BODY_MAX - q->body.len;
      if (room > 0)
        buf_add (&q->body, p, len < room ? len : room);
      return len;
    }
  if (q->out_sink != NULL)
    {
      if (len > q->out_max - q->out_got)
        {
          q->body_over = true;
          return 0;
        }
      if (q->sink_err != NULL || q->out_sink (q->out_opaque, p, len, &q->sink_err) < 0)
        return 0;
      q->out_got += len;
      return len;
    }
  if (q->out_fd >= 0)
    {
      if (len > q->out_max - q->out_got)
        {
          q->body_over = true;
          return 0;
        }
      if (q->out_digest)
        digest_update (q->out_digest, p, len);
      if (fs_write_all (q->out_fd, p, len) < 0)
        {
          q->write_errno = errno;
          return 0;
        }
      q->out_got += len;
      return len;
    }
  if (q->body_max == 0)
    {
      /* a reply we have no use for ({} from GET /v2/, say): drop it, but
       * only so much of it */
      q->out_got += len;
      if (q->out_got > DISCARD_MAX)
        {
          q->body_over = true;
          return 0;
        }
      return len;
    }
  if (len > q->body_max - q->body.len || buf_add (&q->body, p, len) < 0)
    {
      if (len <= q->body_max - q->body.len && errno == ENOMEM)
        q->write_errno = ENOMEM;
      else
        q->body_over = true;
      return 0;
    }
  return len;
}

/* Upload bodies are read straight into curl's buffer: from memory, or with
 * pread() from the blob file, never loaded whole. */
static size_t
read_cb (char *p, size_t size, size_t nitems, void *ud)
{
  struct http_req *q = ud;
  size_t want = size * nitems;

  if (want > q->len - q->pos)
    want = (size_t) (q->len - q->pos);
  if (want == 0)
    return 0;
  if (q->mem)
    {
      memcpy (p, q->mem + q->pos, want);
      q->pos += want;
      return want;
    }
  for (;;)
    {
      ssize_t n = pread (q->fd, p, want, (off_t) (q->off + q->pos));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          /* the file shrank under us, or a read error: never send short */
          q->read_errno = n < 0 ? errno : EIO;
          return CURL_READFUNC_ABORT;
        }
      q->pos += (uint64_t) n;
      return (size_t) n;
    }
}

static int
seek_cb (void *ud, curl_off_t offset, int origin)
{
  struct http_req *q = ud;
  if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > q->len)
    return CURL_SEEKFUNC_FAIL;
  q->pos = (uint64_t) offset;
  return CURL_SEEKFUNC_OK;
}

bool
http_canceled (const struct http_client *c)
{
  return c->cancel != NULL && *c->cancel;
}

static int
progress_cb (void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
  struct http_req *q = ud;
  (void) dltotal;
  (void) dlnow;
  (void) ultotal;
  (void) ulnow;
  return http_canceled (q->c) ? 1 : 0;
}

static bool
curl_retryable (CURLcode c)
{
  switch (c)
    {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY: return true;
    default: return false;
    }
}

int
http_perform (struct http_client *hc, struct http_req *q, bool *retryable, bvm_error_t *err)
{
  CURL *c = hc->curl;
  struct curl_slist *hdrs = NULL, *t;
  char line[256], m[512];
  CURLcode cc;
  bool oom = false;

#define HDR(s)                                                                                    \
  do                                                                                              \
    {                                                                                             \
      t = curl_slist_append (hdrs, (s));                                                          \
      if (t == NULL)                                                                              \
        oom = true;                                                                               \
      else                                                                                        \
        hdrs = t;                                                                                 \
    }                                                                                             \
  while (0)

  if (http_canceled (hc))
    return bvm_error_code (err, BVM_E_CANCELED, 0, "%s `%s`: canceled", q->method,
                           http_url_for_msg (m, sizeof m, q->url));
  if (hc->deadline_ms > 0 && now_ms () >= hc->deadline_ms)
    return bvm_error_code (err, BVM_E_TIMEOUT, 0, "%s `%s`: the deadline has passed", q->method,
                           http_url_for_msg (m, sizeof m, q->url));

  curl_easy_reset (c); /* keeps the connection cache: keep-alive across requests */
  q->status = 0;
  q->pos = 0;
  q->body_over = false;
  q->write_errno = q->read_errno = 0;
  if (q->out_fd < 0 && q->out_sink == NULL)
    q->out_got = 0;
  /* each request sets its body's cap anew: an error body may be read even
   * where the request takes none */
  buf_dispose (&q->body);
  buf_init (&q->body, q->body_max > HTTP_ERR_BODY_MAX ? q->body_max : HTTP_ERR_BODY_MAX);
  hc->curl_err[0] = '\0';

  curl_easy_setopt (c, CURLOPT_URL, q->url);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, hc->curl_err);
  curl_easy_setopt (c, CURLOPT_USERAGENT, hc->user_agent);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT_MS, (long) hc->connect_timeout_ms);
  /* No overall timeout (blobs can be big), but a stalled transfer fails. */
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_TIME,
                    (long) (hc->stall_timeout_ms / 1000 > 0 ? hc->stall_timeout_ms / 1000 : 1));
  if (hc->deadline_ms > 0)
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, (long) (hc->deadline_ms - now_ms ()));
  if (hc->ca_file)
    curl_easy_setopt (c, CURLOPT_CAINFO, hc->ca_file);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, q);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, q);
  if (hc->cancel)
    {
      curl_easy_setopt (c, CURLOPT_XFERINFOFUNCTION, progress_cb);
      curl_easy_setopt (c, CURLOPT_XFERINFODATA, q);
      curl_easy_setopt (c, CURLOPT_NOPROGRESS, 0L);
    }
  /* Credentials never follow a redirect to another host: curl drops both
   * its own auth and a custom Authorization header then. */
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, q->follow ? 1L : 0L);
  curl_easy_setopt (c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt (c, CURLOPT_UNRESTRICTED_AUTH, 0L);
  if (q->aws_sigv4)
    {
      curl_easy_setopt (c, CURLOPT_AWS_SIGV4, q->aws_sigv4);
      curl_easy_setopt (c, CURLOPT_USERNAME, q->username);
      curl_easy_setopt (c, CURLOPT_PASSWORD, q->password);
    }
  else if (q->username)
    {
      curl_easy_setopt (c, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
      curl_easy_setopt (c, CURLOPT_USERNAME, q->username);
      curl_easy_setopt (c, CURLOPT_PASSWORD, q->password);
    }

  /* A 100-continue round trip per upload buys nothing here: auth is settled
   * by the bodyless POST that starts every upload. */
  /* (curl 7.88's SigV4 signs the empty `Expect:` that only removes the
   * header, so the server's signature differs: a signed upload keeps the
   * 100-continue, which RGW answers at once) */
  if (q->aws_sigv4 == NULL)
    HDR ("Expect:");
  if (q->authz)
    HDR (q->authz);
  for (size_t i = 0; i < HTTP_EXTRA_HEADERS && q->headers[i] != NULL; i++)
    HDR (q->headers[i]);
  if (q->accept)
    {
      snprintf (line, sizeof line, "Accept: %s", q->accept);
      HDR (line);
    }
  if (q->content_type)
    {
      snprintf (line, sizeof line, "Content-Type: %s", q->content_type);
      HDR (line);
    }
  if (q->content_range[0])
    {
      snprintf (line, sizeof line, "Content-Range: %s", q->content_range);
      HDR (line);
    }
  if (oom)
    {
      curl_slist_free_all (hdrs);
      return bvm_error (err, ENOMEM, "%s request", q->method);
    }
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, hdrs);

  if (strcmp (q->method, "HEAD") == 0)
    curl_easy_setopt (c, CURLOPT_NOBODY, 1L);
  else if (strcmp (q->method, "GET") == 0)
    curl_easy_setopt (c, CURLOPT_HTTPGET, 1L);
  else if (!q->upload && q->mem != NULL)
    {
      /* a POST of a small body in memory (curl's SigV4 signs its hash) */
      curl_easy_setopt (c, CURLOPT_POST, 1L);
      curl_easy_setopt (c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) q->len);
      curl_easy_setopt (c, CURLOPT_POSTFIELDS, q->mem);
      if (strcmp (q->method, "POST") != 0)
        curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, q->method);
    }
  else if (!q->upload)
    {
      /* a bodyless POST */
      curl_easy_setopt (c, CURLOPT_POST, 1L);
      curl_easy_setopt (c, CURLOPT_POSTFIELDS, "");
      curl_easy_setopt (c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) 0);
      if (strcmp (q->method, "POST") != 0)
        curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, q->method);
    }
  else
    {
      curl_easy_setopt (c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt (c, CURLOPT_READFUNCTION, read_cb);
      curl_easy_setopt (c, CURLOPT_READDATA, q);
      curl_easy_setopt (c, CURLOPT_SEEKFUNCTION, seek_cb);
      curl_easy_setopt (c, CURLOPT_SEEKDATA, q);
      curl_easy_setopt (c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) q->len);
      curl_easy_setopt (c, CURLOPT_UPLOAD_BUFFERSIZE, (long) UPLOAD_BUFFER);
      if (strcmp (q->method, "PUT") != 0)
        curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, q->method);
    }

  cc = curl_easy_perform (c);
  curl_slist_free_all (hdrs);
  hc->stats.requests++;
  if (q->upload && q->mem == NULL)
    {
      curl_off_t up = 0;
      curl_easy_getinfo (c, CURLINFO_SIZE_UPLOAD_T, &up);
      hc->stats.bytes_uploaded += (uint64_t) up;
    }
  http_url_for_msg (m, sizeof m, q->url);
  if (cc != CURLE_OK)
    {
      const char *why = hc->curl_err[0] ? hc->curl_err : curl_easy_strerror (cc);
      if (q->read_errno)
        return bvm_error (err, q->read_errno, "%s `%s`: reading the upload", q->method, m);
      if (q->write_errno)
        return bvm_error (err, q->write_errno, "%s `%s`: storing the reply", q->method, m);
      if (q->sink_err != NULL)
        {
          bvm_error_free (err);
          *err = steal_pointer (&q->sink_err);
          return bvm_error_wrap (err, "%s `%s`", q->method, m);
        }
      if (q->body_over)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "%s `%s`: the reply is larger than %llu bytes",
                               q->method, m,
                               (unsigned long long) (q->out_fd >= 0 ? q->out_max
                                                     : q->body_max  ? q->body_max
                                                                    : DISCARD_MAX));
      if (cc == CURLE_ABORTED_BY_CALLBACK && http_canceled (hc))
        return bvm_error_code (err, BVM_E_CANCELED, 0, "%s `%s`: canceled", q->method, m);
      if (hc->deadline_ms > 0 && now_ms () >= hc->deadline_ms)
        return bvm_error_code (err, BVM_E_TIMEOUT, 0, "%s `%s`: the deadline has passed",
                               q->method, m);
      *retryable = curl_retryable (cc);
      return bvm_error_code (err, BVM_E_NETWORK, 0, "%s `%s`: %s", q->method, m, why);
    }
  curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &q->status);
  if (q->location_bad)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s`: the Location header is too long",
                           q->method, m);
  return 0;
#undef HDR
}


/* --- retries ------------------------------------------------------------------ */

static int64_t
backoff_delay (struct http_client *c, int attempt)
{
  int64_t d = c->backoff_ms;
  uint32_t rnd;

  for (int i = 1; i < attempt && d < c->backoff_max_ms; i++)
    d *= 2;
  if (d > c->backoff_max_ms)
    d = c->backoff_max_ms;
  /* jitter: somewhere in [d/2, d], so retrying clients spread out */
  if (getrandom (&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
    rnd = (uint32_t) now_ns ();
  if (d > 1)
    d = d / 2 + (int64_t) (rnd % (uint32_t) (d / 2 + 1));
  if (c->retry_after_ms > d)
    d = c->retry_after_ms < c->backoff_max_ms ? c->retry_after_ms : c->backoff_max_ms;
  c->retry_after_ms = 0;
  return d;
}

static void
sleep_ms (struct http_client *c, int64_t ms)
{
  int64_t end = now_ms () + ms;
  for (;;)
    {
      int64_t left = end - now_ms ();
      struct timespec ts;
      if (left <= 0 || http_canceled (c))
        return;
      if (left > 100)
        left = 100; /* wake up to notice a cancel */
      ts.tv_sec = 0;
      ts.tv_nsec = (long) left * 1000000L;
      nanosleep (&ts, NULL);
    }
}

int
http_with_retries (struct http_client *c, http_op op, void *ctx, bvm_error_t *err)
{
  for (int attempt = 1;; attempt++)
    {
      bool retryable = false;
      int64_t delay;
      int ret;

      ret = op (ctx, &retryable, err);
      if (ret >= 0 || !retryable)
        return ret;
      if (attempt >= c->max_attempts)
        return bvm_error_wrap (err, "giving up after %d attempts", attempt);
      delay = backoff_delay (c, attempt);
      if (c->deadline_ms > 0 && now_ms () + delay >= c->deadline_ms)
        {
          bvm_error_wrap (err, "the deadline leaves no time to retry after %d attempts", attempt);
          if (*err)
            (*err)->code = BVM_E_TIMEOUT;
          return -1;
        }
      sleep_ms (c, delay);
      if (http_canceled (c))
        return bvm_error_code (err, BVM_E_CANCELED, 0, "canceled while waiting to retry");
      bvm_error_free (err);
      c->stats.retries++;
    }
}
