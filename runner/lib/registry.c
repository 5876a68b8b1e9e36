/* registry.c - the OCI distribution API: the operations, over http.c with
 * registry_auth.c's authentication. See registry.h. */
#include "registry_int.h"
#include "buf.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


/* --- the registry ------------------------------------------------------------ */

void
registry_free (struct registry *r)
{
  if (r == NULL)
    return;
  http_client_dispose (&r->http);
  registry__auth_dispose (r);
  free (r->url);
  free (r);
}

void
registry_get_stats (const struct registry *r, struct registry_stats *out)
{
  *out = r->stats;
  out->requests = r->http.stats.requests;
  out->retries = r->http.stats.retries;
  out->bytes_uploaded = r->http.stats.bytes_uploaded;
}

/* "http://host[:port]" or "https://...": no credentials, no path, no query.
 * Credentials in a URL would end up in logs and error messages. */
static int
url_check (const char *url, bool *https, bvm_error_t *err)
{
  const char *host;
  size_t n;

  if (url == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "registry URL is missing");
  if (strncmp (url, "http://", 7) == 0)
    {
      *https = false;
      host = url + 7;
    }
  else if (strncmp (url, "https://", 8) == 0)
    {
      *https = true;
      host = url + 8;
    }
  else
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "registry URL `%.200s` must start with http:// or https://", url);
  n = strlen (host);
  if (n > 0 && host[n - 1] == '/')
    n--;
  if (n == 0 || n > 255)
    return bvm_error_code (err, BVM_E_INVALID, 0, "registry URL `%.200s` has no valid host", url);
  for (size_t i = 0; i < n; i++)
    if (!(isalnum ((unsigned char) host[i]) || strchr (".-:[]", host[i]) != NULL))
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "registry URL `%.200s` may only have a host and a port "
                             "(no credentials, path or query)",
                             url);
  return 0;
}

int
registry_open (struct registry **out, const struct registry_options *o, bvm_error_t *err)
{
  struct http_options ho = {
    .user_agent = o->user_agent,
    .ca_file = o->ca_file,
    .max_attempts = o->max_attempts,
    .backoff_ms = o->backoff_ms,
    .backoff_max_ms = o->backoff_max_ms,
    .connect_timeout_ms = o->connect_timeout_ms,
    .stall_timeout_ms = o->stall_timeout_ms,
    .deadline_ms = o->deadline_ms,
    .cancel = o->cancel,
  };
  struct registry *r;
  bool https = false;
  size_t n;

  if (url_check (o->url, &https, err) < 0)
    return -1;
  if (o->max_attempts < 1 || o->max_attempts > 100 || o->backoff_ms < 0 || o->backoff_max_ms < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "registry retry options are out of range");
  if (o->user_agent)
    for (const char *p = o->user_agent; *p; p++)
      if ((unsigned char) *p < 0x20 || (unsigned char) *p == 0x7f)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "registry user agent has control characters");
  if ((o->username == NULL) != (o->password == NULL))
    return bvm_error_code (err, BVM_E_INVALID, 0, "registry username and password go together");
  if (o->username && o->credentials_file)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "give registry credentials either directly or in a file, not both");

  r = calloc (1, sizeof *r);
  if (r == NULL)
    return bvm_error (err, ENOMEM, "registry");
  if (http_client_init (&r->http, &ho, err) < 0)
    {
      free (r);
      return -1;
    }
  r->https = https;
  r->url = strdup (o->url);
  if (r->url == NULL)
    {
      registry_free (r);
      return bvm_error (err, ENOMEM, "registry");
    }
  n = strlen (r->url);
  if (r->url[n - 1] == '/')
    r->url[n - 1] = '\0';
  if (o->username)
    {
      r->username = strdup (o->username);
      r->password = strdup (o->password);
      if (r->username == NULL || r->password == NULL)
        {
          registry_free (r);
          return bvm_error (err, ENOMEM, "registry");
        }
    }
  else if (o->credentials_file && registry__credentials_load (r, o->credentials_file, err) < 0)
    {
      registry_free (r);
      return -1;
    }
  r->chunk_size = o->chunk_size;
  *out = r;
  return 0;
}

/* --- errors ------------------------------------------------------------------ */

void
registry__error_detail (char *out, size_t size, const struct http_req *q)
{
  json_t *doc = NULL, *e;
  const char *code, *msg;
  bvm_error_t ignored = NULL;

  out[0] = '\0';
  if (q->body.len == 0
      || jsonx_parse (&doc, q->body.ptr, q->body.len, HTTP_ERR_BODY_MAX, "error", &ignored) < 0)
    {
      bvm_error_free (&ignored);
      return;
    }
  e = json_array_get (json_object_get (doc, "errors"), 0);
  code = json_string_value (json_object_get (e, "code"));
  msg = json_string_value (json_object_get (e, "message"));
  if (code || msg)
    {
      snprintf (out, size, " (%.64s%s%.200s)", code ? code : "", code && msg ? ": " : "",
                msg ? msg : "");
      for (char *p = out; *p; p++)
        if ((unsigned char) *p < 0x20 || (unsigned char) *p == 0x7f)
          *p = '?';
    }
  json_decref (doc);
}

int
registry__status_error (struct registry *r, const struct http_req *q, bool *retryable,
                        bvm_error_t *err)
{
  char m[512], detail[300];
  int code;

  http_url_for_msg (m, sizeof m, q->url);
  registry__error_detail (detail, sizeof detail, q);
  if (q->status >= 500 || q->status == 429)
    {
      uint64_t secs;
      *retryable = true;
      if (q->retry_after[0] && parse_u64 (q->retry_after, &secs) == 0 && secs < 3600)
        r->http.retry_after_ms = (int64_t) secs * 1000;
      code = BVM_E_NETWORK;
    }
  else if (q->status == 401 || q->status == 403)
    code = BVM_E_DENIED;
  else
    code = BVM_E_INVALID;
  return bvm_error_code (err, code, 0, "%s `%s` returned HTTP %ld%s", q->method, m, q->status,
                         detail);
}

/* --- retries ------------------------------------------------------------------ */

typedef int (*registry_op) (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err);

struct op_call
{
  struct registry *r;
  registry_op op;
  void *ctx;
};

static int
op_call (void *ud, bool *retryable, bvm_error_t *err)
{
  struct op_call *c = ud;
  return c->op (c->r, c->ctx, retryable, err);
}

/* The policy (attempts, backoff, deadline, cancel) is the transport's. */
static int
with_retries (struct registry *r, registry_op op, void *ctx, bvm_error_t *err)
{
  struct op_call c = { .r = r, .op = op, .ctx = ctx };
  return http_with_retries (&r->http, op_call, &c, err);
}

/* --- URLs ------------------------------------------------------------------------ */

static int
check_repo (const char *repo, bvm_error_t *err)
{
  if (oci_repository_problem (repo) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.300s` is not a valid repository name", repo);
  return 0;
}

static int
check_digest (const char *digest, bvm_error_t *err)
{
  if (digest_problem (digest) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.100s` is not a sha256 digest", digest);
  return 0;
}

static char *make_url (struct registry *r, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static char *
make_url (struct registry *r, const char *fmt, ...)
{
  struct buf u = BUF_INIT (HTTP_LOCATION_MAX * 2);
  va_list ap;
  int ret;

  if (buf_adds (&u, r->url) < 0)
    return NULL;
  va_start (ap, fmt);
  ret = buf_vaddf (&u, fmt, ap);
  va_end (ap);
  if (ret < 0)
    {
      buf_dispose (&u);
      return NULL;
    }
  return buf_steal (&u);
}

/* An upload Location: relative to the registry, or absolute on the same
 * origin. Anywhere else would get our credentials, so it is refused. */
static int
resolve_location (struct registry *r, const struct http_req *q, char **out, bvm_error_t *err)
{
  const char *loc = q->location;
  size_t ulen = strlen (r->url);
  char m[512];

  if (loc[0] == '\0')
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s`: the registry sent no Location",
                           q->method, http_url_for_msg (m, sizeof m, q->url));
  for (const char *p = loc; *p; p++)
    if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
      return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s`: the Location has invalid characters",
                             q->method, http_url_for_msg (m, sizeof m, q->url));
  if (loc[0] == '/' && loc[1] != '/')
    *out = make_url (r, "%s", loc);
  else if (strncasecmp (loc, r->url, ulen) == 0 && loc[ulen] == '/')
    *out = strdup (loc);
  else
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s `%s`: the registry sent an upload location on another origin "
                           "(`%.200s`)",
                           q->method, http_url_for_msg (m, sizeof m, q->url),
                           http_url_for_msg (m, sizeof m, loc));
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "upload location");
  return 0;
}

/* "repository:<repo>:<actions>" */
static int
scope_for (char *out, size_t size, const char *repo, const char *actions, bvm_error_t *err)
{
  if (snprintf_checked (out, size, "repository:%s:%s", repo, actions) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "repository name `%.100s` is too long", repo);
  return 0;
}

#define SCOPE_MAX 400

/* The request of an operation on `repo`: METHOD on /v2/<repo>/<path>, under
 * the token scope "repository:<repo>:<actions>", which is written into
 * scope. *url is the caller's to free (a cleanup_free variable); q points
 * at both. */
static int repo_request (struct http_req *q, char **url, char scope[SCOPE_MAX], struct registry *r,
                         const char *method, const char *repo, const char *actions,
                         bvm_error_t *err, const char *path_fmt, ...)
    __attribute__ ((format (printf, 9, 10)));

static int
repo_request (struct http_req *q, char **url, char scope[SCOPE_MAX], struct registry *r,
              const char *method, const char *repo, const char *actions, bvm_error_t *err,
              const char *path_fmt, ...)
{
  struct buf u = BUF_INIT (HTTP_LOCATION_MAX * 2);
  va_list ap;
  int ret;

  ret = buf_addf (&u, "%s/v2/%s/", r->url, repo);
  if (ret == 0)
    {
      va_start (ap, path_fmt);
      ret = buf_vaddf (&u, path_fmt, ap);
      va_end (ap);
    }
  if (ret < 0)
    {
      buf_dispose (&u);
      return bvm_error (err, ENOMEM, "registry URL");
    }
  *url = buf_steal (&u);
  if (scope_for (scope, SCOPE_MAX, repo, actions, err) < 0)
    return -1;
  http_req_init (q, &r->http, method, *url);
  q->scope = scope;
  return 0;
}

/* --- operations -------------------------------------------------------------------- */

static int
ping_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  cleanup_free char *url = make_url (r, "/v2/");
  struct http_req q;
  int ret;

  (void) ctx;
  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  http_req_init (&q, &r->http, "GET", url);
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status != 200)
    ret = registry__status_error (r, &q, retryable, err);
  http_req_dispose (&q);
  return ret;
}

int
registry_ping (struct registry *r, bvm_error_t *err)
{
  if (with_retries (r, ping_op, NULL, err) < 0)
    return bvm_error_wrap (err, "checking registry `%s`", r->url);
  return 0;
}

struct blob_ctx
{
  const char *repo;
  const char *from_repo;
  const char *digest;
  uint64_t size;
  int fd;
  bool exists;
  uint64_t found_size;
  bool mounted;
  const char *dest;
  struct buf *mem; /* registry_blob_read: the body goes here instead of fd */
};

static int
exists_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct blob_ctx *b = ctx;
  cleanup_free char *url = NULL;
  char scope[SCOPE_MAX];
  struct http_req q;
  int ret;

  if (repo_request (&q, &url, scope, r, "HEAD", b->repo, "pull", err, "blobs/%s", b->digest) < 0)
    return -1;
  q.follow = true;
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0)
    {
      if (q.status == 200)
        {
          b->exists = true;
          b->found_size = q.has_length ? q.length : 0;
          if (q.docker_digest[0] && digest_problem (q.docker_digest) == NULL
              && strcmp (q.docker_digest, b->digest) != 0)
            ret = bvm_error_code (err, BVM_E_INVALID, 0,
                                  "registry answered for blob `%s` with digest `%s`", b->digest,
                                  q.docker_digest);
        }
      else if (q.status == 404)
        b->exists = false;
      else
        ret = registry__status_error (r, &q, retryable, err);
    }
  http_req_dispose (&q);
  return ret;
}

int
registry_blob_exists (struct registry *r, const char *repo, const char *digest, bool *exists,
                      uint64_t *size, bvm_error_t *err)
{
  struct blob_ctx b = { .repo = repo, .digest = digest, .fd = -1 };

  if (check_repo (repo, err) < 0 || check_digest (digest, err) < 0)
    return -1;
  if (with_retries (r, exists_op, &b, err) < 0)
    return bvm_error_wrap (err, "checking blob `%s` in `%s`", digest, repo);
  *exists = b.exists;
  if (size)
    *size = b.found_size;
  return 0;
}

/* One upload from the first byte: a new session, then one PUT or PATCH
 * chunks and a PUT. Any failure restarts all of it (after the backoff). */
static int
upload_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct blob_ctx *b = ctx;
  cleanup_free char *url = NULL;
  cleanup_free char *loc = NULL;
  cleanup_free char *put_url = NULL;
  char scope[SCOPE_MAX], *esc;
  struct http_req q;
  bool chunked = r->chunk_size > 0 && b->size > r->chunk_size;
  uint64_t off = 0;
  int ret;

  if (repo_request (&q, &url, scope, r, "POST", b->repo, "pull,push", err, "blobs/uploads/") < 0)
    return -1;
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status != 202)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0)
    ret = resolve_location (r, &q, &loc, err);
  http_req_dispose (&q);
  if (ret < 0)
    return ret;

  while (chunked && off < b->size)
    {
      uint64_t n = b->size - off < r->chunk_size ? b->size - off : r->chunk_size;
      char want[64];

      http_req_init (&q, &r->http, "PATCH", loc);
      q.scope = scope;
      q.upload = true;
      q.fd = b->fd;
      q.off = off;
      q.len = n;
      q.content_type = "application/octet-stream";
      snprintf (q.content_range, sizeof q.content_range, "%llu-%llu", (unsigned long long) off,
                (unsigned long long) (off + n - 1));
      ret = registry__request (r, &q, retryable, err);
      if (ret == 0 && q.status != 202)
        ret = registry__status_error (r, &q, retryable, err);
      snprintf (want, sizeof want, "0-%llu", (unsigned long long) (off + n - 1));
      if (ret == 0 && q.range[0] && strcmp (q.range, want) != 0)
        ret = bvm_error_code (err, BVM_E_INVALID, 0,
                              "registry has range `%.40s` of the upload, expected `%s`", q.range,
                              want);
      if (ret == 0)
        {
          free (loc);
          loc = NULL;
          ret = resolve_location (r, &q, &loc, err);
        }
      http_req_dispose (&q);
      if (ret < 0)
        return ret;
      off += n;
    }

  esc = curl_easy_escape (r->http.curl, b->digest, 0);
  if (esc == NULL)
    return bvm_error (err, ENOMEM, "upload URL");
  ret = asprintf (&put_url, "%s%cdigest=%s", loc, strchr (loc, '?') ? '&' : '?', esc);
  curl_free (esc);
  if (ret < 0)
    {
      put_url = NULL;
      return bvm_error (err, ENOMEM, "upload URL");
    }
  http_req_init (&q, &r->http, "PUT", put_url);
  q.scope = scope;
  q.upload = true;
  q.content_type = "application/octet-stream";
  if (!chunked)
    {
      q.fd = b->fd;
      q.len = b->size;
    }
  else
    q.mem = ""; /* an empty body closes a chunked upload */
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status != 201)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0 && q.docker_digest[0] && strcmp (q.docker_digest, b->digest) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "registry stored blob `%s` as `%.80s`", b->digest,
                          q.docker_digest);
  http_req_dispose (&q);
  return ret;
}

static int
blob_push_fd (struct registry *r, const char *repo, const char *digest, uint64_t size, int fd,
              bool *uploaded, bvm_error_t *err)
{
  struct blob_ctx b = { .repo = repo, .digest = digest, .size = size, .fd = fd };

  if (uploaded)
    *uploaded = false;
  if (with_retries (r, exists_op, &b, err) < 0)
    return -1;
  if (b.exists)
    {
      if (b.found_size != size)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "registry has blob `%s` with %llu bytes, expected %llu", digest,
                               (unsigned long long) b.found_size, (unsigned long long) size);
      return 0; /* idempotent: a re-run uploads nothing */
    }
  if (with_retries (r, upload_op, &b, err) < 0)
    return -1;
  r->stats.blobs_uploaded++;
  if (uploaded)
    *uploaded = true;
  return 0;
}

int
registry_blob_push (struct registry *r, const char *repo, const char *digest, uint64_t size,
                    const char *path, bool *uploaded, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  struct stat st;

  if (check_repo (repo, err) < 0 || check_digest (digest, err) < 0)
    return -1;
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open blob `%s`", path);
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat blob `%s`", path);
  if (!S_ISREG (st.st_mode))
    return bvm_error_code (err, BVM_E_INVALID, 0, "blob `%s` is not a regular file", path);
  if ((uint64_t) st.st_size != size)
    return bvm_error_code (err, BVM_E_INVALID, 0, "blob `%s` is %llu bytes, expected %llu", path,
                           (unsigned long long) st.st_size, (unsigned long long) size);
  if (blob_push_fd (r, repo, digest, size, fd, uploaded, err) < 0)
    return bvm_error_wrap (err, "pushing blob `%s` to `%s`", digest, repo);
  return 0;
}

static int
mount_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct blob_ctx *b = ctx;
  cleanup_free char *url = NULL;
  char scope[2 * SCOPE_MAX], to_scope[SCOPE_MAX], from_scope[SCOPE_MAX];
  char *ed = curl_easy_escape (r->http.curl, b->digest, 0);
  char *ef = curl_easy_escape (r->http.curl, b->from_repo, 0);
  struct http_req q;
  int ret;

  if (ed && ef)
    url = make_url (r, "/v2/%s/blobs/uploads/?mount=%s&from=%s", b->repo, ed, ef);
  curl_free (ed);
  curl_free (ef);
  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  /* push on the target and pull on the source, in one token */
  if (scope_for (to_scope, sizeof to_scope, b->repo, "pull,push", err) < 0
      || scope_for (from_scope, sizeof from_scope, b->from_repo, "pull", err) < 0)
    return -1;
  if (snprintf_checked (scope, sizeof scope, "%s %s", to_scope, from_scope) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "repository names are too long");
  http_req_init (&q, &r->http, "POST", url);
  q.scope = scope;
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0)
    {
      if (q.status == 201)
        {
          b->mounted = true;
          if (q.docker_digest[0] && strcmp (q.docker_digest, b->digest) != 0)
            ret = bvm_error_code (err, BVM_E_INVALID, 0, "registry mounted blob `%s` as `%.80s`",
                                  b->digest, q.docker_digest);
        }
      else if (q.status == 202)
        b->mounted = false; /* declined; the session it opened expires on its own */
      else
        ret = registry__status_error (r, &q, retryable, err);
    }
  http_req_dispose (&q);
  return ret;
}

int
registry_blob_mount (struct registry *r, const char *repo, const char *from_repo,
                     const char *digest, bool *mounted, bvm_error_t *err)
{
  struct blob_ctx b = { .repo = repo, .from_repo = from_repo, .digest = digest, .fd = -1 };

  if (check_repo (repo, err) < 0 || check_repo (from_repo, err) < 0
      || check_digest (digest, err) < 0)
    return -1;
  if (with_retries (r, mount_op, &b, err) < 0)
    return bvm_error_wrap (err, "mounting blob `%s` from `%s` into `%s`", digest, from_repo, repo);
  *mounted = b.mounted;
  if (b.mounted)
    r->stats.blobs_mounted++;
  return 0;
}

static int
get_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct blob_ctx *b = ctx;
  cleanup_free char *url = NULL;
  char scope[SCOPE_MAX], got[DIGEST_STR_LEN + 1];
  struct digest_ctx dg;
  struct http_req q;
  int ret;

  if (repo_request (&q, &url, scope, r, "GET", b->repo, "pull", err, "blobs/%s", b->digest) < 0)
    return -1;
  /* a retry starts the file over */
  if (b->mem == NULL && (ftruncate (b->fd, 0) < 0 || lseek (b->fd, 0, SEEK_SET) < 0))
    {
      ret = bvm_error (err, errno, "truncate `%s`", b->dest);
      http_req_dispose (&q);
      return ret;
    }
  if (digest_init (&dg, err) < 0)
    {
      http_req_dispose (&q);
      return -1;
    }
  q.follow = true;
  if (b->mem)
    q.body_max = b->size;
  else
    {
      q.out_fd = b->fd;
      q.out_digest = &dg;
      q.out_max = b->size;
    }
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status != 200)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0 && b->mem)
    {
      digest_update (&dg, q.body.ptr, q.body.len);
      q.out_got = q.body.len;
    }
  /* registry_blob_read takes up to `size`; a download to a file exactly */
  if (ret == 0 && b->mem == NULL && q.out_got != b->size)
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "registry sent %llu bytes of blob `%s`, expected %llu",
                          (unsigned long long) q.out_got, b->digest, (unsigned long long) b->size);
  if (ret == 0)
    {
      digest_final (&dg, got);
      if (strcmp (got, b->digest) != 0)
        ret = bvm_error_code (err, BVM_E_INVALID, 0, "registry sent blob `%s` with digest `%s`",
                              b->digest, got);
    }
  else
    digest_dispose (&dg);
  if (ret == 0 && b->mem)
    {
      buf_move (b->mem, &q.body); /* now owned by the caller */
    }
  http_req_dispose (&q);
  return ret;
}

int
registry_blob_read (struct registry *r, const char *repo, const char *digest, size_t max,
                    char **out, size_t *len, bvm_error_t *err)
{
  struct buf mem = BUF_INIT (max ? max : 1);
  struct blob_ctx b = { .repo = repo, .digest = digest, .size = max, .fd = -1, .mem = &mem };

  if (check_repo (repo, err) < 0 || check_digest (digest, err) < 0)
    return -1;
  if (with_retries (r, get_op, &b, err) < 0)
    {
      buf_dispose (&mem);
      return bvm_error_wrap (err, "reading blob `%s` from `%s`", digest, repo);
    }
  *len = mem.len;
  *out = buf_steal (&mem);
  return 0;
}

int
registry_blob_get (struct registry *r, const char *repo, const char *digest, uint64_t size,
                   const char *dest, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  struct blob_ctx b = { .repo = repo, .digest = digest, .size = size, .dest = dest };

  if (check_repo (repo, err) < 0 || check_digest (digest, err) < 0)
    return -1;
  fd = open (dest, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s`", dest);
  b.fd = fd;
  if (with_retries (r, get_op, &b, err) < 0)
    {
      unlink (dest);
      return bvm_error_wrap (err, "downloading blob `%s` from `%s`", digest, repo);
    }
  if (fsync (fd) < 0)
    {
      int e = errno;
      unlink (dest);
      return bvm_error (err, e, "fsync `%s`", dest);
    }
  return 0;
}

int
registry_blob_copy (struct registry *r, const char *repo, const char *from_repo,
                    const char *digest, uint64_t size, const char *tmp_dir, bvm_error_t *err)
{
  cleanup_unlink char *tmp = NULL;
  cleanup_close int fd = -1;
  bool exists = false;
  uint64_t have = 0;

  if (check_repo (repo, err) < 0 || check_repo (from_repo, err) < 0
      || check_digest (digest, err) < 0)
    return -1;
  if (registry_blob_exists (r, repo, digest, &exists, &have, err) < 0)
    return -1;
  if (exists && have == size)
    return 0;
  if (asprintf (&tmp, "%s/blob-XXXXXX", tmp_dir) < 0)
    {
      tmp = NULL;
      return bvm_error (err, ENOMEM, "temporary blob");
    }
  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd < 0)
    {
      int e = errno;
      free (tmp);
      tmp = NULL;
      return bvm_error (err, e, "create a temporary blob in `%s`", tmp_dir);
    }
  if (registry_blob_get (r, from_repo, digest, size, tmp, err) < 0)
    return bvm_error_wrap (err, "copying blob `%s` from `%s` to `%s`", digest, from_repo, repo);
  if (registry_blob_push (r, repo, digest, size, tmp, NULL, err) < 0)
    return bvm_error_wrap (err, "copying blob `%s` from `%s` to `%s`", digest, from_repo, repo);
  return 0;
}

struct manifest_ctx
{
  const char *repo;
  const char *reference;
  const char *media_type;
  const char *body;
  size_t len;
  char digest[DIGEST_STR_LEN + 1];
  struct buf got;
  char got_type[OCI_MEDIA_TYPE_MAX + 64];
  bool *found; /* registry_manifest_find: a 404 is an answer, not an error */
};

#define MANIFEST_ACCEPT                                                                           \
  OCI_MEDIA_MANIFEST ", " OCI_MEDIA_INDEX ", " DOCKER_MEDIA_MANIFEST ", " DOCKER_MEDIA_LIST

static int
manifest_get_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct manifest_ctx *mc = ctx;
  cleanup_free char *url = NULL;
  char scope[SCOPE_MAX];
  struct http_req q;
  int ret;

  if (repo_request (&q, &url, scope, r, "GET", mc->repo, "pull", err, "manifests/%s",
                    mc->reference)
      < 0)
    return -1;
  q.accept = MANIFEST_ACCEPT;
  q.body_max = OCI_MANIFEST_MAX;
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status == 404 && mc->found != NULL)
    {
      *mc->found = false;
      http_req_dispose (&q);
      return 0;
    }
  if (ret == 0 && q.status != 200)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0 && digest_buffer (mc->digest, buf_cstr (&q.body), q.body.len, err) < 0)
    ret = -1;
  /* Content addressing is what makes a base image trustworthy: the bytes
   * must hash to the digest we asked for, and to what the registry says. */
  if (ret == 0 && digest_problem (mc->reference) == NULL
      && strcmp (mc->digest, mc->reference) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "manifest `%s` has digest `%s`", mc->reference,
                          mc->digest);
  if (ret == 0 && q.docker_digest[0] && digest_problem (q.docker_digest) == NULL
      && strcmp (q.docker_digest, mc->digest) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "manifest `%s` has digest `%s` but the registry says `%s`",
                          mc->reference, mc->digest, q.docker_digest);
  if (ret == 0)
    {
      buf_move (&mc->got, &q.body); /* now owned by mc */
      snprintf (mc->got_type, sizeof mc->got_type, "%s", q.content_type_out);
    }
  http_req_dispose (&q);
  return ret;
}

static int
manifest_get (struct registry *r, const char *repo, const char *reference, bool *found,
              char **body, size_t *len, char **media_type, char digest[DIGEST_STR_LEN + 1],
              bvm_error_t *err)
{
  struct manifest_ctx mc = { .repo = repo, .reference = reference, .found = found };
  char *type;

  if (check_repo (repo, err) < 0)
    return -1;
  if (oci_reference_problem (reference) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.200s` is not a valid tag or digest",
                           reference);
  buf_init (&mc.got, OCI_MANIFEST_MAX);
  if (with_retries (r, manifest_get_op, &mc, err) < 0)
    {
      buf_dispose (&mc.got);
      return bvm_error_wrap (err, "getting manifest `%s:%s`", repo, reference);
    }
  if (found != NULL && !*found)
    {
      buf_dispose (&mc.got);
      return 0;
    }
  type = strdup (mc.got_type);
  if (type == NULL)
    {
      buf_dispose (&mc.got);
      return bvm_error (err, ENOMEM, "manifest");
    }
  *len = mc.got.len;
  *body = buf_steal (&mc.got);
  *media_type = type;
  memcpy (digest, mc.digest, DIGEST_STR_LEN + 1);
  return 0;
}

int
registry_manifest_get (struct registry *r, const char *repo, const char *reference, char **body,
                       size_t *len, char **media_type, char digest[DIGEST_STR_LEN + 1],
                       bvm_error_t *err)
{
  return manifest_get (r, repo, reference, NULL, body, len, media_type, digest, err);
}

int
registry_manifest_find (struct registry *r, const char *repo, const char *reference, bool *found,
                        char **body, size_t *len, char **media_type,
                        char digest[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  *found = true;
  *body = NULL;
  *media_type = NULL;
  *len = 0;
  return manifest_get (r, repo, reference, found, body, len, media_type, digest, err);
}

struct referrers_ctx
{
  const char *repo;
  const char *digest;
  bool *supported;
  struct buf got;
};

static int
referrers_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct referrers_ctx *rc = ctx;
  cleanup_free char *url = NULL;
  char scope[SCOPE_MAX];
  struct http_req q;
  int ret;

  if (repo_request (&q, &url, scope, r, "GET", rc->repo, "pull", err, "referrers/%s", rc->digest)
      < 0)
    return -1;
  q.accept = OCI_MEDIA_INDEX;
  q.body_max = OCI_MANIFEST_MAX;
  ret = registry__request (r, &q, retryable, err);
  /* no such route (404, or 400/405 from registries that parse the path as
   * something else), or a reply that is not the API's index */
  *rc->supported = ret == 0 && q.status == 200
                   && strncmp (q.content_type_out, OCI_MEDIA_INDEX, strlen (OCI_MEDIA_INDEX)) == 0;
  if (ret == 0 && !*rc->supported && q.status >= 500)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0 && *rc->supported)
    buf_move (&rc->got, &q.body); /* now owned by rc */
  http_req_dispose (&q);
  return ret;
}

int
registry_referrers_get (struct registry *r, const char *repo, const char *digest, bool *supported,
                        char **body, size_t *len, bvm_error_t *err)
{
  struct referrers_ctx rc = { .repo = repo, .digest = digest, .supported = supported };

  *supported = false;
  *body = NULL;
  *len = 0;
  if (check_repo (repo, err) < 0 || check_digest (digest, err) < 0)
    return -1;
  buf_init (&rc.got, OCI_MANIFEST_MAX);
  if (with_retries (r, referrers_op, &rc, err) < 0)
    {
      buf_dispose (&rc.got);
      return bvm_error_wrap (err, "getting the referrers of `%s@%s`", repo, digest);
    }
  if (!*supported)
    {
      buf_dispose (&rc.got);
      return 0;
    }
  *len = rc.got.len;
  *body = buf_steal (&rc.got);
  return 0;
}

static int
manifest_put_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct manifest_ctx *mc = ctx;
  cleanup_free char *url = NULL;
  char scope[SCOPE_MAX];
  struct http_req q;
  int ret;

  if (repo_request (&q, &url, scope, r, "PUT", mc->repo, "pull,push", err, "manifests/%s",
                    mc->reference)
      < 0)
    return -1;
  q.upload = true;
  q.mem = mc->body;
  q.len = mc->len;
  q.content_type = mc->media_type;
  ret = registry__request (r, &q, retryable, err);
  if (ret == 0 && q.status != 201)
    ret = registry__status_error (r, &q, retryable, err);
  if (ret == 0 && q.docker_digest[0] && strcmp (q.docker_digest, mc->digest) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "registry stored the manifest as `%.80s`, not `%s`", q.docker_digest,
                          mc->digest);
  http_req_dispose (&q);
  return ret;
}

int
registry_manifest_put (struct registry *r, const char *repo, const char *reference,
                       const char *media_type, const char *body, size_t len,
                       char digest[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  struct manifest_ctx mc = {
    .repo = repo,
    .reference = reference,
    .media_type = media_type,
    .body = body,
    .len = len,
  };

  if (check_repo (repo, err) < 0)
    return -1;
  if (oci_reference_problem (reference) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.200s` is not a valid tag or digest",
                           reference);
  if (media_type == NULL || strlen (media_type) > OCI_MEDIA_TYPE_MAX || strchr (media_type, '\n')
      || strchr (media_type, '\r'))
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest media type is not valid");
  if (len > OCI_MANIFEST_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "manifest is larger than %u bytes",
                           OCI_MANIFEST_MAX);
  if (digest_buffer (mc.digest, body, len, err) < 0)
    return -1;
  if (digest_problem (reference) == NULL && strcmp (reference, mc.digest) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest has digest `%s`, not `%s`", mc.digest,
                           reference);
  if (with_retries (r, manifest_put_op, &mc, err) < 0)
    return bvm_error_wrap (err, "pushing manifest `%s:%s`", repo, reference);
  if (digest)
    memcpy (digest, mc.digest, DIGEST_STR_LEN + 1);
  return 0;
}
