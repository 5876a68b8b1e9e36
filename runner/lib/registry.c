/* registry.c - the OCI distribution API over libcurl, see registry.h */
#include "registry.h"
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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ERR_BODY_MAX 4096           /* what we keep of an error reply */
#define TOKEN_REPLY_MAX (64u << 10) /* a token server's JSON reply */
#define TOKEN_MAX 16384             /* one bearer token */
#define CREDENTIALS_MAX (64u << 10)
#define LOCATION_MAX 4096
#define MAX_TOKENS 16
#define UPLOAD_BUFFER (512 * 1024)
#define DISCARD_MAX (64u << 10)     /* a 2xx body we do not read */

/* --- the registry ------------------------------------------------------------ */

enum auth_scheme
{
  AUTH_NONE,
  AUTH_BASIC,
  AUTH_BEARER,
};

struct token
{
  char *scope; /* the cache key: the scope string of the requests it serves */
  char *value;
  int64_t expires_ms;
};

struct registry
{
  CURL *curl;
  char *url; /* scheme://host[:port], no trailing slash */
  bool https;
  char *username;
  char *password;
  char *static_token;
  char *ca_file;
  char *user_agent;
  int max_attempts;
  int64_t backoff_ms;
  int64_t backoff_max_ms;
  int64_t connect_timeout_ms;
  int64_t stall_timeout_ms;
  int64_t deadline_ms;
  uint64_t chunk_size;
  const volatile sig_atomic_t *cancel;

  enum auth_scheme scheme;
  char *realm;
  char *service;
  struct token tokens[MAX_TOKENS];
  size_t next_token; /* round-robin eviction */

  int64_t retry_after_ms; /* from the last 429/503, used by the next backoff */
  struct registry_stats stats;
  char curl_err[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void
curl_init_once (void)
{
  curl_init_result = curl_global_init (CURL_GLOBAL_DEFAULT);
}

static void
free_secret (char **s)
{
  if (*s)
    {
      mem_wipe (*s, strlen (*s));
      free (*s);
      *s = NULL;
    }
}

static void
token_clear (struct token *t)
{
  free (t->scope);
  free_secret (&t->value);
  t->scope = NULL;
  t->expires_ms = 0;
}

void
registry_free (struct registry *r)
{
  if (r == NULL)
    return;
  if (r->curl)
    curl_easy_cleanup (r->curl);
  for (size_t i = 0; i < MAX_TOKENS; i++)
    token_clear (&r->tokens[i]);
  free (r->url);
  free_secret (&r->username);
  free_secret (&r->password);
  free_secret (&r->static_token);
  free (r->ca_file);
  free (r->user_agent);
  free (r->realm);
  free (r->service);
  free (r);
}

void
registry_get_stats (const struct registry *r, struct registry_stats *out)
{
  *out = r->stats;
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

static int
credentials_load (struct registry *r, const char *path, bvm_error_t *err)
{
  static const char *const allowed[] = { "username", "password", "token", NULL };
  char *data = NULL;
  size_t len = 0;
  json_t *doc = NULL;
  const char *user = NULL, *pass = NULL, *tok = NULL;
  int ret = -1;

  /* A credentials file others can read is a leaked credential: refuse it
   * rather than use it. */
  if (fs_check_private (path, err) < 0)
    return bvm_error_wrap (err, "registry credentials");
  if (fs_read_file (&data, &len, path, CREDENTIALS_MAX, err) < 0)
    return bvm_error_wrap (err, "registry credentials");
  if (jsonx_parse (&doc, data, len, CREDENTIALS_MAX, "registry credentials file", err) < 0)
    goto out;
  if (!json_is_object (doc))
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "registry credentials file `%s` is not an object", path);
      goto out;
    }
  if (jsonx_check_keys (doc, allowed, "", err) < 0
      || jsonx_get_str (&user, doc, "username", false, 1024, "", err) < 0
      || jsonx_get_str (&pass, doc, "password", false, 4096, "", err) < 0
      || jsonx_get_str (&tok, doc, "token", false, TOKEN_MAX, "", err) < 0)
    {
      bvm_error_wrap (err, "registry credentials file `%s`", path);
      goto out;
    }
  if (tok != NULL ? (user != NULL || pass != NULL) : (user == NULL || pass == NULL))
    {
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "registry credentials file `%s` needs either username and password or a token",
                      path);
      goto out;
    }
  if (tok)
    {
      for (const char *p = tok; *p; p++)
        if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
          {
            bvm_error_code (err, BVM_E_INVALID, 0,
                            "registry credentials file `%s`: the token has invalid characters", path);
            goto out;
          }
      r->static_token = strdup (tok);
    }
  else
    {
      r->username = strdup (user);
      r->password = strdup (pass);
    }
  if ((tok && r->static_token == NULL) || (!tok && (r->username == NULL || r->password == NULL)))
    {
      bvm_error (err, ENOMEM, "registry credentials");
      goto out;
    }
  ret = 0;
out:
  /* wipe what we read: the file content and the strings jansson holds */
  if (doc)
    {
      const char *k;
      json_t *v;
      json_object_foreach (doc, k, v)
        if (json_is_string (v))
          mem_wipe ((char *) json_string_value (v), json_string_length (v));
      json_decref (doc);
    }
  if (data)
    {
      mem_wipe (data, len);
      free (data);
    }
  return ret;
}

int
registry_open (struct registry **out, const struct registry_options *o, bvm_error_t *err)
{
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
        return bvm_error_code (err, BVM_E_INVALID, 0, "registry user agent has control characters");
  if ((o->username == NULL) != (o->password == NULL))
    return bvm_error_code (err, BVM_E_INVALID, 0, "registry username and password go together");
  if (o->username && o->credentials_file)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "give registry credentials either directly or in a file, not both");
  pthread_once (&curl_once, curl_init_once);
  if (curl_init_result != CURLE_OK)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "curl init: %s",
                           curl_easy_strerror (curl_init_result));

  r = calloc (1, sizeof *r);
  if (r == NULL)
    return bvm_error (err, ENOMEM, "registry");
  r->https = https;
  r->url = strdup (o->url);
  r->user_agent = strdup (o->user_agent ? o->user_agent : "buildvm");
  r->curl = curl_easy_init ();
  if (r->url == NULL || r->user_agent == NULL || r->curl == NULL)
    {
      registry_free (r);
      return bvm_error (err, ENOMEM, "registry");
    }
  n = strlen (r->url);
  if (r->url[n - 1] == '/')
    r->url[n - 1] = '\0';
  if (o->ca_file && (r->ca_file = strdup (o->ca_file)) == NULL)
    {
      registry_free (r);
      return bvm_error (err, ENOMEM, "registry");
    }
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
  else if (o->credentials_file && credentials_load (r, o->credentials_file, err) < 0)
    {
      registry_free (r);
      return -1;
    }
  r->max_attempts = o->max_attempts;
  r->backoff_ms = o->backoff_ms;
  r->backoff_max_ms = o->backoff_max_ms;
  r->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
  r->stall_timeout_ms = o->stall_timeout_ms > 0 ? o->stall_timeout_ms : 60000;
  r->deadline_ms = o->deadline_ms;
  r->chunk_size = o->chunk_size;
  r->cancel = o->cancel;
  *out = r;
  return 0;
}

/* --- one HTTP exchange -------------------------------------------------------- */

struct http_req
{
  /* request */
  const char *method; /* GET HEAD POST PUT PATCH */
  const char *url;
  const char *scope; /* bearer scopes, space separated, or NULL */
  const char *accept;
  const char *content_type;
  char content_range[64];
  bool follow;   /* follow redirects: blob downloads may go to a storage backend */
  bool no_auth;  /* a token request: none of the registry's auth */
  bool basic;    /* send our username/password with Basic (set by the auth code) */
  char *authz;   /* "Authorization: ..." header (set by the auth code), wiped */
  bool upload;   /* PUT/PATCH body: mem, or fd from off, len bytes */
  const char *mem;
  int fd;
  uint64_t off, len, pos;
  size_t body_max;       /* a 2xx body is buffered up to this */
  int out_fd;            /* or streamed into this fd ... */
  struct digest_ctx *out_digest; /* ... and digested */
  uint64_t out_max, out_got;

  /* response */
  struct registry *r;
  long status;
  struct buf body; /* a 2xx body, or the start of an error body */
  bool body_over;
  int write_errno;
  int read_errno;
  char location[LOCATION_MAX];
  bool location_bad;
  char docker_digest[DIGEST_STR_LEN + 1];
  char content_type_out[OCI_MEDIA_TYPE_MAX + 64];
  char range[64];
  char www_auth[2048];
  bool www_auth_over;
  char retry_after[32];
  bool has_length;
  uint64_t length;
};

static void
http_req_init (struct http_req *q, struct registry *r, const char *method, const char *url)
{
  memset (q, 0, sizeof *q);
  q->r = r;
  q->method = method;
  q->url = url;
  q->fd = -1;
  q->out_fd = -1;
  buf_init (&q->body, ERR_BODY_MAX);
}

static void
http_req_dispose (struct http_req *q)
{
  buf_dispose (&q->body);
  free_secret (&q->authz);
}

/* The URL without its query (upload URLs carry opaque state) for messages. */
static const char *
url_for_msg (char *buf, size_t size, const char *url)
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
      q->range[0] = q->www_auth[0] = q->retry_after[0] = '\0';
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
  else if (IS ("retry-after"))
    header_store (q->retry_after, sizeof q->retry_after, v, vlen, NULL);
  else if (IS ("www-authenticate"))
    {
      /* Keep one challenge, preferring Bearer when several are offered. */
      if (q->www_auth[0] == '\0' || (strncasecmp (q->www_auth, "bearer", 6) != 0
                                     && vlen >= 6 && strncasecmp (v, "bearer", 6) == 0))
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

  curl_easy_getinfo (q->r->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299)
    {
      /* An error body: keep its start for the message, drop the rest. */
      size_t room = ERR_BODY_MAX - q->body.len;
      if (room > 0)
        buf_add (&q->body, p, len < room ? len : room);
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

static bool
canceled (const struct registry *r)
{
  return r->cancel != NULL && *r->cancel;
}

static int
progress_cb (void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
  struct http_req *q = ud;
  (void) dltotal;
  (void) dlnow;
  (void) ultotal;
  (void) ulnow;
  return canceled (q->r) ? 1 : 0;
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
    case CURLE_WEIRD_SERVER_REPLY:
      return true;
    default:
      return false;
    }
}

/* Set up and run one request. 0 with q->status when a reply arrived. */
static int
http_perform (struct registry *r, struct http_req *q, bool *retryable, bvm_error_t *err)
{
  CURL *c = r->curl;
  struct curl_slist *hdrs = NULL, *t;
  char line[256], m[512];
  CURLcode cc;
  bool oom = false;

#define HDR(s)                                                                                     \
  do                                                                                               \
    {                                                                                              \
      t = curl_slist_append (hdrs, (s));                                                           \
      if (t == NULL)                                                                               \
        oom = true;                                                                                \
      else                                                                                         \
        hdrs = t;                                                                                  \
    }                                                                                              \
  while (0)

  if (canceled (r))
    return bvm_error_code (err, BVM_E_CANCELED, 0, "%s `%s`: canceled", q->method,
                           url_for_msg (m, sizeof m, q->url));
  if (r->deadline_ms > 0 && now_ms () >= r->deadline_ms)
    return bvm_error_code (err, BVM_E_TIMEOUT, 0, "%s `%s`: the deadline has passed", q->method,
                           url_for_msg (m, sizeof m, q->url));

  curl_easy_reset (c); /* keeps the connection cache: keep-alive across requests */
  q->status = 0;
  q->pos = 0;
  q->body_over = false;
  q->write_errno = q->read_errno = 0;
  if (q->out_fd < 0)
    q->out_got = 0;
  buf_reset (&q->body);
  q->body.max = q->body_max > ERR_BODY_MAX ? q->body_max : ERR_BODY_MAX;
  r->curl_err[0] = '\0';

  curl_easy_setopt (c, CURLOPT_URL, q->url);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, r->curl_err);
  curl_easy_setopt (c, CURLOPT_USERAGENT, r->user_agent);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT_MS, (long) r->connect_timeout_ms);
  /* No overall timeout (blobs can be big), but a stalled transfer fails. */
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_TIME,
                    (long) (r->stall_timeout_ms / 1000 > 0 ? r->stall_timeout_ms / 1000 : 1));
  if (r->deadline_ms > 0)
    curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, (long) (r->deadline_ms - now_ms ()));
  if (r->ca_file)
    curl_easy_setopt (c, CURLOPT_CAINFO, r->ca_file);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, q);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, q);
  if (r->cancel)
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
  if (q->basic)
    {
      curl_easy_setopt (c, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
      curl_easy_setopt (c, CURLOPT_USERNAME, r->username);
      curl_easy_setopt (c, CURLOPT_PASSWORD, r->password);
    }

  /* A 100-continue round trip per upload buys nothing here: auth is settled
   * by the bodyless POST that starts every upload. */
  HDR ("Expect:");
  if (q->authz)
    HDR (q->authz);
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
  r->stats.requests++;
  if (q->upload && q->mem == NULL)
    {
      curl_off_t up = 0;
      curl_easy_getinfo (c, CURLINFO_SIZE_UPLOAD_T, &up);
      r->stats.bytes_uploaded += (uint64_t) up;
    }
  url_for_msg (m, sizeof m, q->url);
  if (cc != CURLE_OK)
    {
      const char *why = r->curl_err[0] ? r->curl_err : curl_easy_strerror (cc);
      if (q->read_errno)
        return bvm_error (err, q->read_errno, "%s `%s`: reading the upload", q->method, m);
      if (q->write_errno)
        return bvm_error (err, q->write_errno, "%s `%s`: storing the reply", q->method, m);
      if (q->body_over)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "%s `%s`: the reply is larger than %llu bytes",
                               q->method, m,
                               (unsigned long long) (q->out_fd >= 0  ? q->out_max
                                                     : q->body_max ? q->body_max
                                                                   : DISCARD_MAX));
      if (cc == CURLE_ABORTED_BY_CALLBACK && canceled (r))
        return bvm_error_code (err, BVM_E_CANCELED, 0, "%s `%s`: canceled", q->method, m);
      if (r->deadline_ms > 0 && now_ms () >= r->deadline_ms)
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

/* " (CODE: message)" from a distribution error body, cleaned for a one-line
 * message; "" when there is none. */
static void
registry_error_detail (char *out, size_t size, const struct http_req *q)
{
  json_t *doc = NULL, *e;
  const char *code, *msg;
  bvm_error_t ignored = NULL;

  out[0] = '\0';
  if (q->body.len == 0
      || jsonx_parse (&doc, q->body.ptr, q->body.len, ERR_BODY_MAX, "error", &ignored) < 0)
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

/* An error for an unexpected status. 5xx and 429 are retryable. */
static int
status_error (struct registry *r, const struct http_req *q, bool *retryable, bvm_error_t *err)
{
  char m[512], detail[300];
  int code;

  url_for_msg (m, sizeof m, q->url);
  registry_error_detail (detail, sizeof detail, q);
  if (q->status >= 500 || q->status == 429)
    {
      uint64_t secs;
      *retryable = true;
      if (q->retry_after[0] && parse_u64 (q->retry_after, &secs) == 0 && secs < 3600)
        r->retry_after_ms = (int64_t) secs * 1000;
      code = BVM_E_NETWORK;
    }
  else if (q->status == 401 || q->status == 403)
    code = BVM_E_DENIED;
  else
    code = BVM_E_INVALID;
  return bvm_error_code (err, code, 0, "%s `%s` returned HTTP %ld%s", q->method, m, q->status,
                         detail);
}

/* --- authentication ----------------------------------------------------------- */

struct challenge
{
  enum auth_scheme scheme;
  char realm[1024];
  char service[256];
  char scope[1024];
};

static bool
tchar (char c)
{
  return isalnum ((unsigned char) c) || (c && strchr ("!#$%&'*+-.^_`|~", c) != NULL);
}

/* WWW-Authenticate: `Basic realm="x"` or `Bearer realm="..",service="..",scope=".."`
 * (RFC 7235 auth-params; a token68 form is not accepted). Strict: a
 * duplicate or overlong parameter, or a syntax error, fails. */
int
registry__parse_challenge (const char *h, int *scheme, char *realm, size_t realm_size,
                           char *service, size_t service_size, char *scope, size_t scope_size)
{
  const char *p = h;
  size_t n = 0;
  bool seen[3] = { false, false, false };

  realm[0] = service[0] = scope[0] = '\0';
  while (*p == ' ')
    p++;
  while (tchar (p[n]))
    n++;
  if (n == 5 && strncasecmp (p, "basic", 5) == 0)
    *scheme = AUTH_BASIC;
  else if (n == 6 && strncasecmp (p, "bearer", 6) == 0)
    *scheme = AUTH_BEARER;
  else
    return -1;
  p += n;
  if (*p != '\0' && *p != ' ')
    return -1;
  for (;;)
    {
      char val[1024];
      size_t klen = 0, vlen = 0;
      const char *key;
      int idx;
      char *dst;
      size_t dsize;

      while (*p == ' ' || *p == '\t')
        p++;
      if (*p == '\0')
        break;
      key = p;
      while (tchar (p[klen]))
        klen++;
      if (klen == 0)
        return -1;
      p += klen;
      while (*p == ' ')
        p++;
      if (*p != '=')
        return -1;
      p++;
      while (*p == ' ')
        p++;
      if (*p == '"')
        {
          p++;
          while (*p != '"')
            {
              if (*p == '\0')
                return -1;
              if (*p == '\\')
                {
                  p++;
                  if (*p == '\0')
                    return -1;
                }
              if ((unsigned char) *p < 0x20 || vlen + 1 >= sizeof val)
                return -1;
              val[vlen++] = *p++;
            }
          p++;
        }
      else
        {
          while (tchar (*p) || *p == '/' || *p == ':')
            {
              if (vlen + 1 >= sizeof val)
                return -1;
              val[vlen++] = *p++;
            }
          if (vlen == 0)
            return -1;
        }
      val[vlen] = '\0';
      if (klen == 5 && strncasecmp (key, "realm", 5) == 0)
        idx = 0, dst = realm, dsize = realm_size;
      else if (klen == 7 && strncasecmp (key, "service", 7) == 0)
        idx = 1, dst = service, dsize = service_size;
      else if (klen == 5 && strncasecmp (key, "scope", 5) == 0)
        idx = 2, dst = scope, dsize = scope_size;
      else
        idx = -1, dst = NULL, dsize = 0; /* error=, error_description=: not needed */
      if (idx >= 0)
        {
          if (seen[idx] || vlen >= dsize)
            return -1;
          seen[idx] = true;
          memcpy (dst, val, vlen + 1);
        }
      while (*p == ' ' || *p == '\t')
        p++;
      if (*p == ',')
        {
          p++;
          continue;
        }
      if (*p == '\0')
        break;
      return -1; /* a second challenge or garbage: we use the first only if clean */
    }
  if (*scheme == AUTH_BEARER && realm[0] == '\0')
    return -1;
  return 0;
}

static struct token *
token_find (struct registry *r, const char *scope)
{
  const char *key = scope ? scope : "";
  for (size_t i = 0; i < MAX_TOKENS; i++)
    {
      struct token *t = &r->tokens[i];
      if (t->scope && strcmp (t->scope, key) == 0)
        {
          if (now_ms () < t->expires_ms)
            return t;
          token_clear (t);
        }
    }
  return NULL;
}

static void
token_forget (struct registry *r, const char *scope)
{
  struct token *t = token_find (r, scope);
  if (t)
    token_clear (t);
}

/* Add each space-separated scope of `s` to the query as &scope=..., once. */
static int
add_scopes (struct buf *u, CURL *c, const char *s, const char *done, bvm_error_t *err)
{
  while (s && *s)
    {
      size_t n = strcspn (s, " ");
      if (n > 0)
        {
          char one[1024];
          char *esc;
          bool dup = false;
          if (n >= sizeof one)
            return bvm_error_code (err, BVM_E_INVALID, 0, "token scope is too long");
          memcpy (one, s, n);
          one[n] = '\0';
          /* skip a scope already in `done` */
          for (const char *d = done; d && *d;)
            {
              size_t m = strcspn (d, " ");
              if (m == n && strncmp (d, one, n) == 0)
                dup = true;
              d += m;
              while (*d == ' ')
                d++;
            }
          if (!dup)
            {
              esc = curl_easy_escape (c, one, (int) n);
              if (esc == NULL || buf_addf (u, "&scope=%s", esc) < 0)
                {
                  curl_free (esc);
                  return bvm_error_code (err, BVM_E_LIMIT, 0, "token request URL is too long");
                }
              curl_free (esc);
            }
        }
      s += n;
      while (*s == ' ')
        s++;
    }
  return 0;
}

/* GET the realm for a token covering `scope` (ours) and `extra` (the
 * challenge's), with our credentials when we have some. */
static int
token_fetch (struct registry *r, const char *scope, const char *extra, const char **out,
             bool *retryable, bvm_error_t *err)
{
  cleanup_buf struct buf u = BUF_INIT (8192);
  struct http_req q;
  json_t *doc = NULL;
  const char *tok = NULL;
  uint64_t expires = 60;
  struct token *slot;
  char *esc;
  int ret;

  if (buf_addf (&u, "%s%cservice=", r->realm, strchr (r->realm, '?') ? '&' : '?') < 0)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "token realm is too long");
  esc = curl_easy_escape (r->curl, r->service ? r->service : "", 0);
  if (esc == NULL || buf_adds (&u, esc) < 0)
    {
      curl_free (esc);
      return bvm_error_code (err, BVM_E_LIMIT, 0, "token request URL is too long");
    }
  curl_free (esc);
  if (add_scopes (&u, r->curl, scope, NULL, err) < 0 || add_scopes (&u, r->curl, extra, scope, err) < 0)
    return -1;

  http_req_init (&q, r, "GET", buf_cstr (&u));
  q.no_auth = true;
  q.basic = r->username != NULL;
  q.body_max = TOKEN_REPLY_MAX;
  r->stats.token_requests++;
  ret = http_perform (r, &q, retryable, err);
  if (ret < 0)
    {
      http_req_dispose (&q);
      return bvm_error_wrap (err, "getting a registry token");
    }
  if (q.status == 401 || q.status == 403)
    {
      char m[512];
      ret = bvm_error_code (err, BVM_E_DENIED, 0,
                            "authentication failed for `%s`: the token server `%s` returned HTTP %ld "
                            "(%s)",
                            r->url, url_for_msg (m, sizeof m, r->realm), q.status,
                            r->username ? "wrong credentials?" : "no credentials given");
      http_req_dispose (&q);
      return ret;
    }
  if (q.status != 200)
    {
      status_error (r, &q, retryable, err);
      http_req_dispose (&q);
      return bvm_error_wrap (err, "getting a registry token");
    }
  ret = jsonx_parse (&doc, q.body.ptr, q.body.len, TOKEN_REPLY_MAX, "token reply", err);
  http_req_dispose (&q);
  if (ret < 0)
    return -1;
  if (!json_is_object (doc))
    {
      json_decref (doc);
      return bvm_error_code (err, BVM_E_INVALID, 0, "token reply is not an object");
    }
  if (jsonx_get_str (&tok, doc, "token", false, TOKEN_MAX, "", err) < 0
      || (tok == NULL && jsonx_get_str (&tok, doc, "access_token", true, TOKEN_MAX, "", err) < 0)
      || jsonx_get_u64 (&expires, doc, "expires_in", false, 0, 365 * 86400, "", err) < 0)
    {
      json_decref (doc);
      return bvm_error_wrap (err, "token reply");
    }
  /* The token goes into a header line: no spaces or control characters. */
  for (const char *p = tok; *p; p++)
    if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
      {
        json_decref (doc);
        return bvm_error_code (err, BVM_E_INVALID, 0, "token reply: the token has invalid characters");
      }
  if (*tok == '\0')
    {
      json_decref (doc);
      return bvm_error_code (err, BVM_E_INVALID, 0, "token reply: the token is empty");
    }
  if (expires < 60)
    expires = 60; /* the token spec: assume 60 s when less is given */
  token_forget (r, scope);
  slot = &r->tokens[r->next_token];
  r->next_token = (r->next_token + 1) % MAX_TOKENS;
  token_clear (slot);
  slot->scope = strdup (scope ? scope : "");
  slot->value = strdup (tok);
  mem_wipe ((char *) tok, strlen (tok));
  json_decref (doc);
  if (slot->scope == NULL || slot->value == NULL)
    {
      token_clear (slot);
      return bvm_error (err, ENOMEM, "registry token");
    }
  /* refresh 10 s early rather than have a long upload fail on expiry */
  slot->expires_ms = now_ms () + (int64_t) (expires - 10) * 1000;
  *out = slot->value;
  return 0;
}

static int
set_bearer (struct http_req *q, const char *token, bvm_error_t *err)
{
  free_secret (&q->authz);
  if (asprintf (&q->authz, "Authorization: Bearer %s", token) < 0)
    {
      q->authz = NULL;
      return bvm_error (err, ENOMEM, "authorization header");
    }
  return 0;
}

/* Attach what we know about the registry's auth to the request. */
static int
auth_prepare (struct registry *r, struct http_req *q, const char *extra_scope, bool *retryable,
              bvm_error_t *err)
{
  struct token *t;
  const char *tok = NULL;

  q->basic = false;
  free_secret (&q->authz);
  if (r->static_token)
    return set_bearer (q, r->static_token, err);
  switch (r->scheme)
    {
    case AUTH_NONE:
      return 0;
    case AUTH_BASIC:
      q->basic = true;
      return 0;
    case AUTH_BEARER:
      t = token_find (r, q->scope);
      if (t)
        tok = t->value;
      else if (token_fetch (r, q->scope, extra_scope, &tok, retryable, err) < 0)
        return -1;
      return set_bearer (q, tok, err);
    }
  return 0;
}

/* The request with auth: anonymous (or what we learned before) first; on a
 * 401, follow the challenge once. 0 with q->status for any status but 401,
 * 403, 429 and 5xx, which are errors (the last two retryable). */
static int
http_do (struct registry *r, struct http_req *q, bool *retryable, bvm_error_t *err)
{
  struct challenge ch;
  char m[512];

  if (auth_prepare (r, q, NULL, retryable, err) < 0)
    return -1;
  for (int round = 0;; round++)
    {
      bool sent_auth = q->basic || q->authz != NULL;
      int scheme = AUTH_NONE;

      if (http_perform (r, q, retryable, err) < 0)
        return -1;
      if (q->status != 401 || round > 0 || r->static_token)
        break;
      if (q->www_auth_over
          || registry__parse_challenge (q->www_auth, &scheme, ch.realm, sizeof ch.realm,
                                        ch.service, sizeof ch.service, ch.scope, sizeof ch.scope)
                 < 0)
        return bvm_error_code (err, BVM_E_DENIED, 0,
                               "authentication failed for `%s`: cannot use the challenge "
                               "`%.200s`",
                               r->url, q->www_auth[0] ? q->www_auth : "(none)");
      if (scheme == AUTH_BASIC)
        {
          if (r->username == NULL)
            return bvm_error_code (err, BVM_E_DENIED, 0,
                                   "authentication failed for `%s`: the registry requires "
                                   "credentials and none were given",
                                   r->url);
          if (sent_auth && r->scheme == AUTH_BASIC)
            break; /* our credentials were refused */
          r->scheme = AUTH_BASIC;
        }
      else
        {
          /* A bearer realm gets our credentials: refuse to send them in the
           * clear to a realm when the registry itself is https. */
          if (strncmp (ch.realm, "https://", 8) != 0
              && (strncmp (ch.realm, "http://", 7) != 0 || (r->https && r->username)))
            return bvm_error_code (err, BVM_E_DENIED, 0,
                                   "authentication failed for `%s`: refusing token realm `%.200s`",
                                   r->url, ch.realm);
          if (r->realm == NULL || strcmp (r->realm, ch.realm) != 0
              || strcmp (r->service ? r->service : "", ch.service) != 0)
            {
              char *realm = strdup (ch.realm), *service = strdup (ch.service);
              if (realm == NULL || service == NULL)
                {
                  free (realm);
                  free (service);
                  return bvm_error (err, ENOMEM, "registry auth");
                }
              free (r->realm);
              free (r->service);
              r->realm = realm;
              r->service = service;
            }
          r->scheme = AUTH_BEARER;
          /* the token we sent (if any) was not good enough */
          token_forget (r, q->scope);
        }
      if (auth_prepare (r, q, ch.scope[0] ? ch.scope : NULL, retryable, err) < 0)
        return -1;
    }
  url_for_msg (m, sizeof m, q->url);
  if (q->status == 401)
    {
      char detail[300];
      registry_error_detail (detail, sizeof detail, q);
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "authentication failed for `%s`: %s `%s` returned HTTP 401%s", r->url,
                             q->method, m, detail);
    }
  if (q->status == 403 || q->status == 429 || q->status >= 500)
    return status_error (r, q, retryable, err);
  return 0;
}

/* --- retries ------------------------------------------------------------------ */

typedef int (*registry_op) (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err);

static int64_t
backoff_delay (struct registry *r, int attempt)
{
  int64_t d = r->backoff_ms;
  uint32_t rnd;

  for (int i = 1; i < attempt && d < r->backoff_max_ms; i++)
    d *= 2;
  if (d > r->backoff_max_ms)
    d = r->backoff_max_ms;
  /* jitter: somewhere in [d/2, d], so retrying clients spread out */
  if (getrandom (&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
    rnd = (uint32_t) now_ns ();
  if (d > 1)
    d = d / 2 + (int64_t) (rnd % (uint32_t) (d / 2 + 1));
  if (r->retry_after_ms > d)
    d = r->retry_after_ms < r->backoff_max_ms ? r->retry_after_ms : r->backoff_max_ms;
  r->retry_after_ms = 0;
  return d;
}

static void
sleep_ms (struct registry *r, int64_t ms)
{
  int64_t end = now_ms () + ms;
  for (;;)
    {
      int64_t left = end - now_ms ();
      struct timespec ts;
      if (left <= 0 || canceled (r))
        return;
      if (left > 100)
        left = 100; /* wake up to notice a cancel */
      ts.tv_sec = 0;
      ts.tv_nsec = (long) left * 1000000L;
      nanosleep (&ts, NULL);
    }
}

static int
with_retries (struct registry *r, registry_op op, void *ctx, bvm_error_t *err)
{
  for (int attempt = 1;; attempt++)
    {
      bool retryable = false;
      int64_t delay;
      int ret;

      ret = op (r, ctx, &retryable, err);
      if (ret >= 0 || !retryable)
        return ret;
      if (attempt >= r->max_attempts)
        return bvm_error_wrap (err, "giving up after %d attempts", attempt);
      delay = backoff_delay (r, attempt);
      if (r->deadline_ms > 0 && now_ms () + delay >= r->deadline_ms)
        {
          bvm_error_wrap (err, "the deadline leaves no time to retry after %d attempts", attempt);
          if (*err)
            (*err)->code = BVM_E_TIMEOUT;
          return -1;
        }
      sleep_ms (r, delay);
      if (canceled (r))
        return bvm_error_code (err, BVM_E_CANCELED, 0, "canceled while waiting to retry");
      bvm_error_free (err);
      r->stats.retries++;
    }
}

/* --- URLs ------------------------------------------------------------------------ */

static int
check_repo (const char *repo, bvm_error_t *err)
{
  if (!oci_repository_is_valid (repo))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.300s` is not a valid repository name", repo);
  return 0;
}

static int
check_digest (const char *digest, bvm_error_t *err)
{
  if (!digest_is_valid (digest))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.100s` is not a sha256 digest", digest);
  return 0;
}

static char *
make_url (struct registry *r, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static char *
make_url (struct registry *r, const char *fmt, ...)
{
  struct buf u = BUF_INIT (LOCATION_MAX * 2);
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
                           q->method, url_for_msg (m, sizeof m, q->url));
  for (const char *p = loc; *p; p++)
    if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7f)
      return bvm_error_code (err, BVM_E_INVALID, 0, "%s `%s`: the Location has invalid characters",
                             q->method, url_for_msg (m, sizeof m, q->url));
  if (loc[0] == '/' && loc[1] != '/')
    *out = make_url (r, "%s", loc);
  else if (strncasecmp (loc, r->url, ulen) == 0 && loc[ulen] == '/')
    *out = strdup (loc);
  else
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s `%s`: the registry sent an upload location on another origin "
                           "(`%.200s`)",
                           q->method, url_for_msg (m, sizeof m, q->url), url_for_msg (m, sizeof m, loc));
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
  http_req_init (&q, r, "GET", url);
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status != 200)
    ret = status_error (r, &q, retryable, err);
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
  cleanup_free char *url = make_url (r, "/v2/%s/blobs/%s", b->repo, b->digest);
  char scope[400];
  struct http_req q;
  int ret;

  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  if (scope_for (scope, sizeof scope, b->repo, "pull", err) < 0)
    return -1;
  http_req_init (&q, r, "HEAD", url);
  q.scope = scope;
  q.follow = true;
  ret = http_do (r, &q, retryable, err);
  if (ret == 0)
    {
      if (q.status == 200)
        {
          b->exists = true;
          b->found_size = q.has_length ? q.length : 0;
          if (q.docker_digest[0] && digest_is_valid (q.docker_digest)
              && strcmp (q.docker_digest, b->digest) != 0)
            ret = bvm_error_code (err, BVM_E_INVALID, 0,
                                  "registry answered for blob `%s` with digest `%s`", b->digest,
                                  q.docker_digest);
        }
      else if (q.status == 404)
        b->exists = false;
      else
        ret = status_error (r, &q, retryable, err);
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
  cleanup_free char *url = make_url (r, "/v2/%s/blobs/uploads/", b->repo);
  cleanup_free char *loc = NULL;
  cleanup_free char *put_url = NULL;
  char scope[400], *esc;
  struct http_req q;
  bool chunked = r->chunk_size > 0 && b->size > r->chunk_size;
  uint64_t off = 0;
  int ret;

  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  if (scope_for (scope, sizeof scope, b->repo, "pull,push", err) < 0)
    return -1;

  http_req_init (&q, r, "POST", url);
  q.scope = scope;
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status != 202)
    ret = status_error (r, &q, retryable, err);
  if (ret == 0)
    ret = resolve_location (r, &q, &loc, err);
  http_req_dispose (&q);
  if (ret < 0)
    return ret;

  while (chunked && off < b->size)
    {
      uint64_t n = b->size - off < r->chunk_size ? b->size - off : r->chunk_size;
      char want[64];

      http_req_init (&q, r, "PATCH", loc);
      q.scope = scope;
      q.upload = true;
      q.fd = b->fd;
      q.off = off;
      q.len = n;
      q.content_type = "application/octet-stream";
      snprintf (q.content_range, sizeof q.content_range, "%llu-%llu", (unsigned long long) off,
                (unsigned long long) (off + n - 1));
      ret = http_do (r, &q, retryable, err);
      if (ret == 0 && q.status != 202)
        ret = status_error (r, &q, retryable, err);
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

  esc = curl_easy_escape (r->curl, b->digest, 0);
  if (esc == NULL)
    return bvm_error (err, ENOMEM, "upload URL");
  ret = asprintf (&put_url, "%s%cdigest=%s", loc, strchr (loc, '?') ? '&' : '?', esc);
  curl_free (esc);
  if (ret < 0)
    {
      put_url = NULL;
      return bvm_error (err, ENOMEM, "upload URL");
    }
  http_req_init (&q, r, "PUT", put_url);
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
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status != 201)
    ret = status_error (r, &q, retryable, err);
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
  char scope[800], to_scope[400], from_scope[400];
  char *ed = curl_easy_escape (r->curl, b->digest, 0);
  char *ef = curl_easy_escape (r->curl, b->from_repo, 0);
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
  http_req_init (&q, r, "POST", url);
  q.scope = scope;
  ret = http_do (r, &q, retryable, err);
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
        ret = status_error (r, &q, retryable, err);
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
  cleanup_free char *url = make_url (r, "/v2/%s/blobs/%s", b->repo, b->digest);
  char scope[400], got[DIGEST_STR_LEN + 1];
  struct digest_ctx dg;
  struct http_req q;
  int ret;

  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  if (scope_for (scope, sizeof scope, b->repo, "pull", err) < 0)
    return -1;
  /* a retry starts the file over */
  if (b->mem == NULL && (ftruncate (b->fd, 0) < 0 || lseek (b->fd, 0, SEEK_SET) < 0))
    return bvm_error (err, errno, "truncate `%s`", b->dest);
  if (digest_init (&dg, err) < 0)
    return -1;
  http_req_init (&q, r, "GET", url);
  q.scope = scope;
  q.follow = true;
  if (b->mem)
    q.body_max = b->size;
  else
    {
      q.out_fd = b->fd;
      q.out_digest = &dg;
      q.out_max = b->size;
    }
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status != 200)
    ret = status_error (r, &q, retryable, err);
  if (ret == 0 && b->mem)
    {
      digest_update (&dg, q.body.ptr, q.body.len);
      q.out_got = q.body.len;
    }
  /* registry_blob_read takes up to `size`; a download to a file exactly */
  if (ret == 0 && b->mem == NULL && q.out_got != b->size)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "registry sent %llu bytes of blob `%s`, expected %llu",
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
      buf_dispose (b->mem);
      *b->mem = q.body; /* now owned by the caller */
      buf_init (&q.body, 0);
    }
  http_req_dispose (&q);
  return ret;
}

int
registry_blob_read (struct registry *r, const char *repo, const char *digest, size_t max,
                    char **out, size_t *len, bvm_error_t *err)
{
  struct buf mem = BUF_INIT (0);
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

#define MANIFEST_ACCEPT                                                                            \
  OCI_MEDIA_MANIFEST ", " OCI_MEDIA_INDEX ", " DOCKER_MEDIA_MANIFEST ", " DOCKER_MEDIA_LIST

static int
manifest_get_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct manifest_ctx *mc = ctx;
  cleanup_free char *url = make_url (r, "/v2/%s/manifests/%s", mc->repo, mc->reference);
  char scope[400];
  struct http_req q;
  int ret;

  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  if (scope_for (scope, sizeof scope, mc->repo, "pull", err) < 0)
    return -1;
  http_req_init (&q, r, "GET", url);
  q.scope = scope;
  q.accept = MANIFEST_ACCEPT;
  q.body_max = OCI_MANIFEST_MAX;
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status == 404 && mc->found != NULL)
    {
      *mc->found = false;
      http_req_dispose (&q);
      return 0;
    }
  if (ret == 0 && q.status != 200)
    ret = status_error (r, &q, retryable, err);
  if (ret == 0 && digest_buffer (mc->digest, buf_cstr (&q.body), q.body.len, err) < 0)
    ret = -1;
  /* Content addressing is what makes a base image trustworthy: the bytes
   * must hash to the digest we asked for, and to what the registry says. */
  if (ret == 0 && digest_is_valid (mc->reference) && strcmp (mc->digest, mc->reference) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "manifest `%s` has digest `%s`", mc->reference,
                          mc->digest);
  if (ret == 0 && q.docker_digest[0] && digest_is_valid (q.docker_digest)
      && strcmp (q.docker_digest, mc->digest) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "manifest `%s` has digest `%s` but the registry says `%s`", mc->reference,
                          mc->digest, q.docker_digest);
  if (ret == 0)
    {
      buf_dispose (&mc->got);
      mc->got = q.body; /* now owned by mc */
      buf_init (&q.body, 0);
      snprintf (mc->got_type, sizeof mc->got_type, "%s", q.content_type_out);
    }
  http_req_dispose (&q);
  return ret;
}

static int
manifest_get (struct registry *r, const char *repo, const char *reference, bool *found, char **body,
              size_t *len, char **media_type, char digest[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  struct manifest_ctx mc = { .repo = repo, .reference = reference, .found = found };
  char *type;

  if (check_repo (repo, err) < 0)
    return -1;
  if (!oci_reference_is_valid (reference))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.200s` is not a valid tag or digest",
                           reference);
  buf_init (&mc.got, 0);
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

static int
manifest_put_op (struct registry *r, void *ctx, bool *retryable, bvm_error_t *err)
{
  struct manifest_ctx *mc = ctx;
  cleanup_free char *url = make_url (r, "/v2/%s/manifests/%s", mc->repo, mc->reference);
  char scope[400];
  struct http_req q;
  int ret;

  if (url == NULL)
    return bvm_error (err, ENOMEM, "registry URL");
  if (scope_for (scope, sizeof scope, mc->repo, "pull,push", err) < 0)
    return -1;
  http_req_init (&q, r, "PUT", url);
  q.scope = scope;
  q.upload = true;
  q.mem = mc->body;
  q.len = mc->len;
  q.content_type = mc->media_type;
  ret = http_do (r, &q, retryable, err);
  if (ret == 0 && q.status != 201)
    ret = status_error (r, &q, retryable, err);
  if (ret == 0 && q.docker_digest[0] && strcmp (q.docker_digest, mc->digest) != 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "registry stored the manifest as `%.80s`, not `%s`",
                          q.docker_digest, mc->digest);
  http_req_dispose (&q);
  return ret;
}

int
registry_manifest_put (struct registry *r, const char *repo, const char *reference,
                       const char *media_type, const char *body, size_t len,
                       char digest[DIGEST_STR_LEN + 1], bvm_error_t *err)
{
  struct manifest_ctx mc = {
    .repo = repo, .reference = reference, .media_type = media_type, .body = body, .len = len,
  };

  if (check_repo (repo, err) < 0)
    return -1;
  if (!oci_reference_is_valid (reference))
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
  if (digest_is_valid (reference) && strcmp (reference, mc.digest) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "manifest has digest `%s`, not `%s`", mc.digest,
                           reference);
  if (with_retries (r, manifest_put_op, &mc, err) < 0)
    return bvm_error_wrap (err, "pushing manifest `%s:%s`", repo, reference);
  if (digest)
    memcpy (digest, mc.digest, DIGEST_STR_LEN + 1);
  return 0;
}
