/* store_s3.c - the "s3" artifact store backend, see store_s3.h */
#include "store_s3.h"
#include "buf.h"
#include "digest.h"
#include "http.h"
#include "jsonx.h"
#include "util.h"

#include <openssl/crypto.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_PART_MB 8
#define DEFAULT_SESSION_MAX 3600
#define CREDENTIALS_MAX 4096
#define KEY_FIELD_MAX 256 /* an access key, a secret key */
#define ETAG_MAX 128
#define UPLOAD_ID_MAX 512
#define LINK_MAX_COUNT STORE_MAX_OBJECTS

/* --- the location ------------------------------------------------------------ */

void
s3_location_dispose (struct s3_location *l)
{
  free (l->bucket);
  free (l->root);
  free (l->endpoint);
  free (l->region);
  free (l->role);
  free (l->credentials);
  free (l->sse);
  free (l->owner);
  memset (l, 0, sizeof *l);
}

/* a query value, percent-decoded; NULL on a bad escape or a NUL */
static char *
query_decode (const char *s, size_t n)
{
  char *out = calloc (1, n + 1), *o = out;
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++)
    {
      if (s[i] == '%')
        {
          int h, lo;
          if (i + 2 >= n)
            goto bad;
          h = hex_digit ((unsigned char) s[i + 1]);
          lo = hex_digit ((unsigned char) s[i + 2]);
          if (h < 0 || lo < 0 || (h == 0 && lo == 0))
            goto bad;
          *o++ = (char) (h * 16 + lo);
          i += 2;
        }
      else
        *o++ = s[i] == '+' ? ' ' : s[i];
    }
  *o = '\0';
  return out;
bad:
  free (out);
  return NULL;
}

static bool
bucket_ok (const char *b)
{
  size_t n = strlen (b);
  if (n < 3 || n > 63)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!(islower ((unsigned char) b[i]) || isdigit ((unsigned char) b[i]) || b[i] == '-'
          || b[i] == '.'))
      return false;
  return isalnum ((unsigned char) b[0]) && isalnum ((unsigned char) b[n - 1])
         && strstr (b, "..") == NULL;
}

/* scheme://host[:port] with a sane host, no path, no user info */
static bool
endpoint_ok (const char *e)
{
  const char *h;
  if (strncmp (e, "http://", 7) == 0)
    h = e + 7;
  else if (strncmp (e, "https://", 8) == 0)
    h = e + 8;
  else
    return false;
  if (*h == '\0' || strlen (h) > 255)
    return false;
  for (; *h; h++)
    if (!(isalnum ((unsigned char) *h) || strchr ("-.:[]", *h) != NULL))
      return false;
  return true;
}

static bool
policy_safe (const char *s)
{
  return strpbrk (s, "*?$\"\\") == NULL;
}

static int
set_param (char **dst, const char *name, char *val, bvm_error_t *err)
{
  if (*dst != NULL)
    {
      free (val);
      return bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `%s` is given twice", name);
    }
  *dst = val;
  return 0;
}

int
s3_parse_location (struct s3_location *out, const char *location, bvm_error_t *err)
{
  struct s3_location l = { 0 };
  const char *p, *slash, *q, *end;
  cleanup_free char *part = NULL, *sessmax = NULL;
  bvm_error_t e2 = NULL;

  if (location == NULL || strncmp (location, "//", 2) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "s3 store: want s3://BUCKET/PREFIX?endpoint=URL&region=R&role=ARN&"
                           "credentials=FILE");
  if (text_problem (location, strlen (location)) != NULL || strlen (location) > S3_URL_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: the URL is too long or not text");
  p = location + 2;
  q = strchr (p, '?');
  end = q ? q : p + strlen (p);
  slash = memchr (p, '/', (size_t) (end - p));
  l.bucket = strndup (p, (size_t) ((slash ? slash : end) - p));
  l.root = slash ? strndup (slash + 1, (size_t) (end - slash - 1)) : strdup ("");
  if (l.bucket == NULL || l.root == NULL)
    goto oom;
  if (!bucket_ok (l.bucket))
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: bad bucket name `%s`", l.bucket);
      goto fail;
    }
  /* the root: the key rules, without trailing slashes */
  {
    size_t n = strlen (l.root);
    while (n > 0 && l.root[n - 1] == '/')
      l.root[--n] = '\0';
    if (n > 0
        && (store_check_key (l.root, NULL, &e2) < 0 || l.root[0] == '.' || !policy_safe (l.root)))
      {
        bvm_error_free (&e2);
        bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: bad prefix `%s`", l.root);
        goto fail;
      }
  }
  for (const char *a = q ? q + 1 : end; a < end + strlen (end) && *a;)
    {
      const char *amp = strchr (a, '&'), *stop = amp ? amp : a + strlen (a);
      const char *eq = memchr (a, '=', (size_t) (stop - a));
      char *val;
      size_t nl;
      if (eq == NULL)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: query item `%.*s` has no value",
                          (int) (stop - a), a);
          goto fail;
        }
      nl = (size_t) (eq - a);
      val = query_decode (eq + 1, (size_t) (stop - eq - 1));
      /* a decoded value is text too: an escaped control byte is refused
       * (values are quoted in messages) */
      if (val != NULL && text_problem (val, strlen (val)) != NULL)
        {
          free (val);
          val = NULL;
        }
      if (val == NULL)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: bad escape in `%.*s`", (int) nl, a);
          goto fail;
        }
#define PARAM(name, dst)                                                                          \
  else if (nl == sizeof (name) - 1 && strncmp (a, name, nl) == 0)                                 \
  {                                                                                               \
    if (set_param (&(dst), name, val, err) < 0)                                                   \
      goto fail;                                                                                  \
  }
      if (0)
        ;
      PARAM ("endpoint", l.endpoint)
      PARAM ("region", l.region)
      PARAM ("role", l.role)
      PARAM ("credentials", l.credentials)
      PARAM ("sse", l.sse)
      PARAM ("owner", l.owner)
      PARAM ("part_mb", part)
      PARAM ("session_max", sessmax)
      else
      {
        free (val);
        bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: unknown parameter `%.*s`", (int) nl, a);
        goto fail;
      }
#undef PARAM
      a = amp ? amp + 1 : stop;
    }
  if (l.endpoint == NULL || !endpoint_ok (l.endpoint))
    {
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "s3 store: `endpoint` must be http(s)://HOST[:PORT] without a path");
      goto fail;
    }
  if (l.region == NULL && (l.region = strdup ("us-east-1")) == NULL)
    goto oom;
  if (l.region[0] == '\0' || strlen (l.region) > 64 || strpbrk (l.region, ":/ ") != NULL)
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: bad region `%s`", l.region);
      goto fail;
    }
  if (l.role == NULL || strncmp (l.role, "arn:", 4) != 0 || strlen (l.role) > 2048)
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `role` must be the ARN of a role");
      goto fail;
    }
  if (l.credentials == NULL || l.credentials[0] != '/')
    {
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "s3 store: `credentials` must be the absolute path of the runner's key "
                      "file");
      goto fail;
    }
  /* SSE-KMS (aws:kms with its key id header) cannot be signed by curl 7.88:
   * it sorts `x-amz-server-side-encryption-aws-kms-key-id` before
   * `x-amz-server-side-encryption` (it compares whole "name:value" lines),
   * so every server computes another signature (docs/operations.md) */
  if (l.sse != NULL && strcmp (l.sse, "AES256") != 0)
    {
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "s3 store: `sse` must be AES256 (SSE-KMS cannot be signed by this curl)");
      goto fail;
    }
  if (l.owner != NULL
      && (l.owner[0] == '\0' || strlen (l.owner) > 256 || strpbrk (l.owner, ",; ") != NULL))
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: bad `owner`");
      goto fail;
    }
  l.part_size = (uint64_t) DEFAULT_PART_MB << 20;
  if (part != NULL)
    {
      uint64_t mb;
      if (parse_u64 (part, &mb) < 0 || mb < 5 || mb > 512)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `part_mb` must be 5..512");
          goto fail;
        }
      l.part_size = mb << 20;
    }
  l.session_max = DEFAULT_SESSION_MAX;
  if (sessmax != NULL)
    {
      uint64_t s;
      if (parse_u64 (sessmax, &s) < 0 || s < S3_MIN_SESSION_S || s > 43200)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `session_max` must be 900..43200");
          goto fail;
        }
      l.session_max = (int64_t) s;
    }
  *out = l;
  return 0;
oom:
  bvm_error (err, ENOMEM, "s3 store");
fail:
  s3_location_dispose (&l);
  return -1;
}

/* --- URLs, policies ------------------------------------------------------------ */

int
s3_uri_encode (struct buf *b, const char *s, bool keep_slash)
{
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *c = (const unsigned char *) s; *c; c++)
    {
      int r;
      if (isalnum (*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~'
          || (keep_slash && *c == '/'))
        r = buf_add (b, c, 1);
      else
        {
          char e[3] = { '%', hex[*c >> 4], hex[*c & 15] };
          r = buf_add (b, e, 3);
        }
      if (r < 0)
        return -1;
    }
  return 0;
}

int
s3_object_url (char **out, const struct s3_location *l, const char *key, const char *query,
               bvm_error_t *err)
{
  cleanup_buf struct buf b = BUF_INIT (S3_URL_MAX);

  if (buf_addf (&b, "%s/%s/", l->endpoint, l->bucket) < 0
      || (l->root[0] && (s3_uri_encode (&b, l->root, true) < 0 || buf_adds (&b, "/") < 0))
      || s3_uri_encode (&b, key, true) < 0 || (query && buf_addf (&b, "?%s", query) < 0))
    return bvm_error (err, errno, "s3 store: the URL of `%s`", key);
  *out = buf_steal (&b);
  return 0;
}

int
s3_sigv4_provider (char *buf, size_t size, const char *region, const char *service,
                   bvm_error_t *err)
{
  if (snprintf_checked (buf, size, "aws:amz:%s:%s", region, service) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: region `%s` is too long", region);
  return 0;
}

int
s3_session_policy (char **out, const struct s3_location *l, const char *scope,
                   const char *const *actions, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *acts, *res;
  cleanup_free char *arn = NULL;

  if (!policy_safe (scope) || text_problem (scope, strlen (scope)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "s3 store: `%s` has a character a session policy cannot hold", scope);
  if (asprintf (&arn, "arn:aws:s3:::%s/%s%s%s*", l->bucket, l->root, l->root[0] ? "/" : "", scope)
      < 0)
    {
      arn = NULL;
      return bvm_error (err, ENOMEM, "s3 store");
    }
  acts = json_array ();
  for (size_t i = 0; acts && actions[i]; i++)
    json_array_append_new (acts, json_string (actions[i]));
  res = json_pack ("[s]", arn);
  doc = json_pack ("{s:s, s:[{s:s, s:o, s:o}]}", "Version", "2012-10-17", "Statement", "Effect",
                   "Allow", "Action", acts, "Resource", res);
  if (doc == NULL || (*out = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
    return bvm_error (err, ENOMEM, "s3 store: session policy");
  return 0;
}

int
s3_key_scope (char *buf, size_t size, const char *key, bvm_error_t *err)
{
  const char *p = key;
  for (int i = 0; i < 3; i++)
    {
      p = strchr (p, '/');
      if (p == NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `%s` has no app prefix", key);
      p++;
    }
  if (snprintf_checked (buf, size, "%.*s", (int) (p - key), key) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "s3 store: `%s` is too long", key);
  return 0;
}

int64_t
s3_session_seconds (time_t expires, time_t now, int64_t max)
{
  int64_t d = expires > 0 ? (int64_t) (expires - now) : max;
  if (d > max)
    d = max;
  if (d < S3_MIN_SESSION_S)
    d = S3_MIN_SESSION_S;
  return d;
}

/* --- XML replies ---------------------------------------------------------------- */

int
s3_xml_text (char *buf, size_t size, const char *xml, size_t len, const char *tag)
{
  char open[64], close[64];
  const char *a, *b, *end = xml + len;
  size_t o = 0;

  if (snprintf_checked (open, sizeof open, "<%s>", tag) < 0
      || snprintf_checked (close, sizeof close, "</%s>", tag) < 0 || size == 0)
    return -1;
  a = memmem (xml, len, open, strlen (open));
  if (a == NULL)
    return -1;
  a += strlen (open);
  b = memmem (a, (size_t) (end - a), close, strlen (close));
  if (b == NULL)
    return -1;
  while (a < b)
    {
      char c = *a;
      if (c == '<')
        return -1; /* an element inside: not a text value */
      if (c == '&')
        {
          static const struct
          {
            const char *ent;
            char c;
          } ents[] = { { "&amp;", '&' },
                       { "&lt;", '<' },
                       { "&gt;", '>' },
                       { "&quot;", '"' },
                       { "&apos;", '\'' } };
          size_t i;
          for (i = 0; i < ARRAY_SIZE (ents); i++)
            if ((size_t) (b - a) >= strlen (ents[i].ent)
                && memcmp (a, ents[i].ent, strlen (ents[i].ent)) == 0)
              break;
          if (i == ARRAY_SIZE (ents))
            return -1;
          c = ents[i].c;
          a += strlen (ents[i].ent);
        }
      else
        a++;
      if ((unsigned char) c < 0x20 || (unsigned char) c >= 0x7f)
        return -1;
      if (o + 1 >= size)
        return -1;
      buf[o++] = c;
    }
  buf[o] = '\0';
  return 0;
}

void
s3_creds_dispose (struct s3_creds *c)
{
  http_secret_free (&c->access_key);
  http_secret_free (&c->secret_key);
  http_secret_free (&c->token);
  c->expiration = 0;
}

static int
parse_iso8601 (time_t *out, const char *s)
{
  struct tm tm = { 0 };
  const char *rest = strptime (s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == NULL)
    return -1;
  *out = timegm (&tm);
  return 0;
}

int
s3_parse_assume_role (struct s3_creds *out, const char *xml, size_t len, bvm_error_t *err)
{
  const char *c = memmem (xml, len, "<Credentials>", 13), *ce;
  char ak[KEY_FIELD_MAX], exp[64];
  struct s3_creds r = { 0 };
  char *sk = NULL, *tok = NULL;
  int ret = -1;

  ce = c ? memmem (c, len - (size_t) (c - xml), "</Credentials>", 14) : NULL;
  if (c == NULL || ce == NULL)
    return bvm_error_code (err, BVM_E_NETWORK, 0, "STS: the AssumeRole reply has no credentials");
  len = (size_t) (ce - c);
  sk = malloc (KEY_FIELD_MAX);
  tok = malloc (S3_TOKEN_MAX);
  if (sk == NULL || tok == NULL)
    {
      bvm_error (err, ENOMEM, "STS");
      goto out;
    }
  if (s3_xml_text (ak, sizeof ak, c, len, "AccessKeyId") < 0 || ak[0] == '\0'
      || s3_xml_text (sk, KEY_FIELD_MAX, c, len, "SecretAccessKey") < 0 || sk[0] == '\0'
      || s3_xml_text (tok, S3_TOKEN_MAX, c, len, "SessionToken") < 0 || tok[0] == '\0')
    {
      bvm_error_code (err, BVM_E_NETWORK, 0,
                      "STS: the AssumeRole reply's credentials are missing, too long or not "
                      "printable");
      goto out;
    }
  if (s3_xml_text (exp, sizeof exp, c, len, "Expiration") == 0
      && parse_iso8601 (&r.expiration, exp) < 0)
    {
      bvm_error_code (err, BVM_E_NETWORK, 0, "STS: bad Expiration `%s`", exp);
      goto out;
    }
  r.access_key = strdup (ak);
  r.secret_key = strdup (sk);
  r.token = strdup (tok);
  if (r.access_key == NULL || r.secret_key == NULL || r.token == NULL)
    {
      s3_creds_dispose (&r);
      bvm_error (err, ENOMEM, "STS");
      goto out;
    }
  *out = r;
  ret = 0;
out:
  if (sk)
    OPENSSL_cleanse (sk, KEY_FIELD_MAX);
  if (tok)
    OPENSSL_cleanse (tok, S3_TOKEN_MAX);
  free (sk);
  free (tok);
  return ret;
}

int
s3_load_credentials (struct s3_creds *out, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  cleanup_json json_t *doc = NULL;
  cleanup_buf struct buf b = BUF_INIT (CREDENTIALS_MAX);
  const char *ak, *sk;
  struct stat st;
  char chunk[1024];
  ssize_t n;

  if (fd < 0 || fstat (fd, &st) < 0)
    return bvm_error (err, errno, "s3 store: the key file `%s`", path);
  if ((st.st_mode & 077) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "s3 store: the key file `%s` is readable by others (chmod 600)", path);
  while ((n = read (fd, chunk, sizeof chunk)) != 0)
    {
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 || buf_add (&b, chunk, (size_t) n) < 0)
        {
          int e = errno;
          mem_wipe (chunk, sizeof chunk);
          buf_dispose_wipe (&b);
          return bvm_error (err, e, "s3 store: reading `%s`", path);
        }
    }
  mem_wipe (chunk, sizeof chunk);
  static const char *const keys[] = { "access_key_id", "secret_access_key", NULL };
  if (jsonx_parse_object (&doc, b.ptr ? b.ptr : "", b.len, CREDENTIALS_MAX, path, keys, err) < 0)
    {
      buf_dispose_wipe (&b);
      return -1;
    }
  buf_dispose_wipe (&b);
  ak = json_string_value (json_object_get (doc, "access_key_id"));
  sk = json_string_value (json_object_get (doc, "secret_access_key"));
  if (ak == NULL || sk == NULL || ak[0] == '\0' || sk[0] == '\0' || strlen (ak) >= KEY_FIELD_MAX
      || strlen (sk) >= KEY_FIELD_MAX || text_problem (ak, strlen (ak)) != NULL
      || text_problem (sk, strlen (sk)) != NULL || strchr (ak, ':') != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "s3 store: `%s` must hold access_key_id and secret_access_key", path);
  out->access_key = strdup (ak);
  out->secret_key = strdup (sk);
  out->token = NULL;
  out->expiration = 0;
  /* the parsed document holds the secret too */
  mem_wipe ((char *) sk, strlen (sk));
  if (out->access_key == NULL || out->secret_key == NULL)
    {
      s3_creds_dispose (out);
      return bvm_error (err, ENOMEM, "s3 store");
    }
  return 0;
}

/* --- requests ---------------------------------------------------------------------- */

struct s3_call
{
  struct http_client *c;
  const struct s3_creds *cr;
  const char *provider;
  const char *method;
  const char *url;
  const void *body; /* PUT body or POST form */
  size_t len;
  bool post;
  const char *hdrs[3];
  size_t body_max;
  store_sink_fn sink;
  void *opaque;
  uint64_t out_max;
  struct http_req q;
  bool have_q;
  char code[64]; /* the S3 error code of the last failure */
};

static void
call_dispose (struct s3_call *k)
{
  if (k->have_q)
    http_req_dispose (&k->q);
  k->have_q = false;
}

static int
status_code (long status)
{
  if (status == 401 || status == 403)
    return BVM_E_DENIED;
  if (status >= 500 || status == 429)
    return BVM_E_NETWORK;
  return BVM_E_INVALID;
}

static int
call_once (void *ctx, bool *retryable, bvm_error_t *err)
{
  struct s3_call *k = ctx;
  cleanup_free char *tok = NULL;
  char m[512], msg[256] = "";
  size_t h = 0;
  int ret;

  call_dispose (k);
  http_req_init (&k->q, k->c, k->method, k->url);
  k->have_q = true;
  k->code[0] = '\0';
  k->q.aws_sigv4 = k->provider;
  k->q.username = k->cr->access_key;
  k->q.password = k->cr->secret_key;
  if (k->cr->token != NULL)
    {
      if (asprintf (&tok, "x-amz-security-token: %s", k->cr->token) < 0)
        {
          tok = NULL;
          return bvm_error (err, ENOMEM, "s3 request");
        }
      k->q.headers[h++] = tok;
    }
  if (!k->post)
    k->q.headers[h++] = "x-amz-content-sha256: UNSIGNED-PAYLOAD";
  for (size_t i = 0; i < ARRAY_SIZE (k->hdrs) && k->hdrs[i] && h + 1 < HTTP_EXTRA_HEADERS; i++)
    k->q.headers[h++] = k->hdrs[i];
  if (k->body != NULL)
    {
      k->q.mem = k->body;
      k->q.len = k->len;
      k->q.upload = !k->post;
      if (k->post)
        k->q.content_type = "application/x-www-form-urlencoded";
    }
  else if (strcmp (k->method, "PUT") == 0)
    {
      k->q.upload = true;
      k->q.mem = "";
      k->q.len = 0;
    }
  k->q.body_max = k->body_max;
  if (k->sink != NULL)
    {
      k->q.out_sink = k->sink;
      k->q.out_opaque = k->opaque;
      k->q.out_max = k->out_max;
    }
  ret = http_perform (k->c, &k->q, retryable, err);
  if (tok != NULL)
    mem_wipe (tok, strlen (tok));
  if (ret < 0)
    {
      /* bytes already handed to a sink cannot be taken back */
      if (k->q.out_got > 0)
        *retryable = false;
      return ret;
    }
  http_url_for_msg (m, sizeof m, k->url);
  if (k->q.status >= 200 && k->q.status <= 299)
    {
      /* CompleteMultipartUpload may fail with a 200 and an <Error> body */
      if (k->q.body.len > 0 && memmem (k->q.body.ptr, k->q.body.len, "<Error>", 7) != NULL)
        {
          s3_xml_text (k->code, sizeof k->code, k->q.body.ptr, k->q.body.len, "Code");
          *retryable = strcmp (k->code, "InternalError") == 0 || strcmp (k->code, "SlowDown") == 0;
          return bvm_error_code (err, BVM_E_NETWORK, 0, "%s `%s`: %s in a 200 reply", k->method, m,
                                 k->code[0] ? k->code : "an error");
        }
      return 0;
    }
  if (k->q.body.len > 0)
    {
      s3_xml_text (k->code, sizeof k->code, k->q.body.ptr, k->q.body.len, "Code");
      s3_xml_text (msg, sizeof msg, k->q.body.ptr, k->q.body.len, "Message");
    }
  /* 501 Not Implemented will not change on a retry */
  *retryable = (k->q.status >= 500 && k->q.status != 501) || k->q.status == 429;
  return bvm_error_code (err, status_code (k->q.status), 0, "%s `%s`: HTTP %ld%s%s%s%s", k->method,
                         m, k->q.status, k->code[0] ? " " : "", k->code, msg[0] ? ": " : "", msg);
}

/* --- STS -------------------------------------------------------------------------- */

struct s3_client
{
  struct http_client http;
  bool ready;
};

static int
client_init (struct http_client *c, time_t expires, bvm_error_t *err)
{
  struct http_options o = {
    .user_agent = "buildvm/" BUILDVM_VERSION,
    .max_attempts = 5,
    .backoff_ms = 200,
    .backoff_max_ms = 5000,
    .connect_timeout_ms = 10000,
    .stall_timeout_ms = 60000,
  };
  /* never past the job's end; a little slack for the last request */
  if (expires > 0)
    o.deadline_ms = ((int64_t) expires + 60) * 1000 - ((int64_t) time (NULL) * 1000 - now_ms ());
  return http_client_init (c, &o, err);
}

static void
session_name (char *buf, size_t size, const char *scope)
{
  uint32_t rnd = 0;
  size_t o;
  if (getrandom (&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
    rnd = (uint32_t) now_ms ();
  o = (size_t) snprintf (buf, size, "buildvm-%08x-", rnd);
  for (const char *s = scope; *s && o + 1 < size && o < 64; s++)
    buf[o++] = (isalnum ((unsigned char) *s) || strchr ("+=,.@-", *s)) ? *s : '-';
  while (o > 0 && buf[o - 1] == '-')
    o--;
  buf[o] = '\0';
}

static int
assume_with (struct s3_creds *out, struct http_client *hc, const struct s3_location *l,
             const struct s3_creds *runner, const char *scope, const char *const *actions,
             time_t expires, bvm_error_t *err)
{
  cleanup_buf struct buf form = BUF_INIT (64 * 1024);
  cleanup_free char *policy = NULL;
  struct s3_call k = { 0 };
  char provider[128], name[80];
  int ret;

  if (s3_sigv4_provider (provider, sizeof provider, l->region, "sts", err) < 0
      || s3_session_policy (&policy, l, scope, actions, err) < 0)
    return -1;
  session_name (name, sizeof name, scope);
  if (buf_adds (&form, "Action=AssumeRole&DurationSeconds=") < 0
      || buf_addf (&form, "%lld",
                   (long long) s3_session_seconds (expires, time (NULL), l->session_max))
             < 0
      || buf_adds (&form, "&Policy=") < 0 || s3_uri_encode (&form, policy, false) < 0
      || buf_adds (&form, "&RoleArn=") < 0 || s3_uri_encode (&form, l->role, false) < 0
      || buf_adds (&form, "&RoleSessionName=") < 0 || s3_uri_encode (&form, name, false) < 0
      || buf_adds (&form, "&Version=2011-06-15") < 0)
    return bvm_error (err, errno, "STS request");
  k.c = hc;
  k.cr = runner;
  k.provider = provider;
  k.method = "POST";
  k.url = l->endpoint;
  k.body = form.ptr;
  k.len = form.len;
  k.post = true;
  k.body_max = S3_REPLY_MAX;
  ret = http_with_retries (hc, call_once, &k, err);
  if (ret == 0)
    ret = s3_parse_assume_role (out, k.q.body.ptr ? k.q.body.ptr : "", k.q.body.len, err);
  if (k.have_q)
    buf_dispose_wipe (&k.q.body);
  call_dispose (&k);
  if (ret < 0)
    return bvm_error_wrap (err, "STS AssumeRole `%s` for `%s`", l->role, scope);
  return 0;
}

int
s3_assume (struct s3_creds *out, const struct s3_location *l, const char *scope,
           const char *const *actions, time_t expires, bvm_error_t *err)
{
  struct http_client hc;
  struct s3_creds runner = { 0 };
  int ret;

  if (s3_load_credentials (&runner, l->credentials, err) < 0)
    return -1;
  if (client_init (&hc, 0, err) < 0)
    {
      s3_creds_dispose (&runner);
      return -1;
    }
  ret = assume_with (out, &hc, l, &runner, scope, actions, expires, err);
  http_client_dispose (&hc);
  s3_creds_dispose (&runner);
  return ret;
}

/* --- the backend ---------------------------------------------------------------- */

static const char *const write_actions[] = { "s3:PutObject", "s3:AbortMultipartUpload", NULL };
static const char *const link_actions[] = { "s3:PutObject", "s3:GetObject", NULL };
static const char *const read_actions[] = { "s3:GetObject", NULL };

struct s3_store
{
  struct s3_location l;
  struct s3_creds runner;
  time_t expires; /* store_set_expiry; 0: none */
  /* the last commit's server-side encryption (store_summary) */
  char sse_requested[16];
  char sse_confirmed[16];
};

struct s3_upload
{
  char *key;
  char *upload_id;
  char **etags; /* per part */
  size_t n_parts;
};

struct s3_txn
{
  struct s3_store *st;
  struct http_client http;
  struct s3_creds cr;
  char *prefix;
  char provider[128];
  bool sse;
  bool sse_unconfirmed; /* an object's reply lacked the SSE header */
  struct s3_upload *ups;
  size_t n_ups, cap_ups;
  char *(*links)[2]; /* {key, existing key}, copied at commit */
  size_t n_links, cap_links;
  /* the object being written */
  struct s3_upload cur;
  bool in_put;
  unsigned char *part;
  size_t part_len;
};

static int
s3_open (void **state, const char *location, bvm_error_t *err)
{
  struct s3_store *st = calloc (1, sizeof *st);
  if (st == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  if (s3_parse_location (&st->l, location, err) < 0)
    {
      free (st);
      return -1;
    }
  if (s3_load_credentials (&st->runner, st->l.credentials, err) < 0)
    {
      s3_location_dispose (&st->l);
      free (st);
      return -1;
    }
  *state = st;
  return 0;
}

static void
s3_close (void *state)
{
  struct s3_store *st = state;
  if (st == NULL)
    return;
  s3_creds_dispose (&st->runner);
  s3_location_dispose (&st->l);
  free (st);
}

static void
s3_last_commit (void *state, struct store_summary *sum)
{
  struct s3_store *st = state;
  memcpy (sum->sse_requested, st->sse_requested, sizeof sum->sse_requested);
  memcpy (sum->sse_confirmed, st->sse_confirmed, sizeof sum->sse_confirmed);
}

static void
s3_set_expiry (void *state, time_t expires)
{
  ((struct s3_store *) state)->expires = expires;
}

static void
upload_dispose (struct s3_upload *u)
{
  for (size_t i = 0; i < u->n_parts; i++)
    free (u->etags[i]);
  free (u->etags);
  free (u->key);
  free (u->upload_id);
  memset (u, 0, sizeof *u);
}

/* one request with the transaction's session; an expired session is
 * renewed once */
static int
txn_call (struct s3_txn *t, struct s3_call *k, const char *const *actions, bvm_error_t *err)
{
  int ret;
  k->c = &t->http;
  k->cr = &t->cr;
  k->provider = t->provider;
  ret = http_with_retries (&t->http, call_once, k, err);
  if (ret < 0 && k->have_q && (k->q.status == 400 || k->q.status == 403)
      && strcmp (k->code, "ExpiredToken") == 0)
    {
      struct s3_creds fresh = { 0 };
      bvm_error_free (err);
      if (assume_with (&fresh, &t->http, &t->st->l, &t->st->runner, t->prefix, actions,
                       t->st->expires, err)
          < 0)
        return bvm_error_wrap (err, "renewing the expired session");
      s3_creds_dispose (&t->cr);
      t->cr = fresh;
      ret = http_with_retries (&t->http, call_once, k, err);
    }
  return ret;
}

static void
abort_upload (struct s3_txn *t, struct s3_upload *u)
{
  cleanup_free char *url = NULL;
  cleanup_buf struct buf qb = BUF_INIT (UPLOAD_ID_MAX * 3 + 16);
  struct s3_call k = { 0 };
  bvm_error_t err = NULL;

  if (u->upload_id == NULL)
    return;
  if (buf_adds (&qb, "uploadId=") < 0 || s3_uri_encode (&qb, u->upload_id, false) < 0
      || s3_object_url (&url, &t->st->l, u->key, buf_cstr (&qb), &err) < 0)
    {
      bvm_error_free (&err);
      return;
    }
  k.method = "DELETE";
  k.url = url;
  if (txn_call (t, &k, write_actions, &err) < 0)
    bvm_error_free (&err);
  call_dispose (&k);
}

static void
s3_abort (void *txn)
{
  struct s3_txn *t = txn;
  if (t == NULL)
    return;
  if (t->in_put)
    {
      abort_upload (t, &t->cur);
      upload_dispose (&t->cur);
    }
  for (size_t i = 0; i < t->n_ups; i++)
    {
      abort_upload (t, &t->ups[i]);
      upload_dispose (&t->ups[i]);
    }
  free (t->ups);
  for (size_t i = 0; i < t->n_links; i++)
    {
      free (t->links[i][0]);
      free (t->links[i][1]);
    }
  free (t->links);
  free (t->part);
  s3_creds_dispose (&t->cr);
  http_client_dispose (&t->http);
  free (t->prefix);
  free (t);
}

static int
s3_txn_begin (void **txn, void *state, const char *prefix, bvm_error_t *err)
{
  struct s3_store *st = state;
  struct s3_txn *t = calloc (1, sizeof *t);

  if (t == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  t->st = st;
  if ((t->prefix = strdup (prefix)) == NULL)
    {
      free (t);
      return bvm_error (err, ENOMEM, "s3 store");
    }
  if (client_init (&t->http, st->expires, err) < 0)
    {
      free (t->prefix);
      free (t);
      return -1;
    }
  if (s3_sigv4_provider (t->provider, sizeof t->provider, st->l.region, "s3", err) < 0
      || assume_with (&t->cr, &t->http, &st->l, &st->runner, prefix, write_actions, st->expires,
                      err)
             < 0)
    {
      s3_abort (t);
      return -1;
    }
  *txn = t;
  return 0;
}

static int
s3_seal (void *txn, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  (void) err;
  t->sse = t->st->l.sse != NULL;
  return 0;
}

static int
s3_put_begin (void *txn, const char *key, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  if (t->part == NULL && (t->part = malloc (t->st->l.part_size)) == NULL)
    return bvm_error (err, ENOMEM, "s3 store: a part buffer");
  memset (&t->cur, 0, sizeof t->cur);
  if ((t->cur.key = strdup (key)) == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  t->in_put = true;
  t->part_len = 0;
  return 0;
}

/* the headers of a new object: who may read it, how it is encrypted */
static void
object_headers (struct s3_txn *t, struct s3_call *k, char *acl, size_t acl_size)
{
  size_t h = 0;
  if (t->st->l.owner != NULL)
    snprintf (acl, acl_size, "x-amz-grant-full-control: id=%s", t->st->l.owner);
  else
    snprintf (acl, acl_size, "x-amz-acl: bucket-owner-full-control");
  k->hdrs[h++] = acl;
  if (t->sse)
    k->hdrs[h++] = "x-amz-server-side-encryption: AES256";
}

static int
start_upload (struct s3_txn *t, bvm_error_t *err)
{
  cleanup_free char *url = NULL;
  struct s3_call k = { 0 };
  char acl[400], id[UPLOAD_ID_MAX];
  int ret;

  if (s3_object_url (&url, &t->st->l, t->cur.key, "uploads=", err) < 0)
    return -1;
  k.method = "POST";
  k.url = url;
  k.body_max = S3_REPLY_MAX;
  object_headers (t, &k, acl, sizeof acl);
  ret = txn_call (t, &k, write_actions, err);
  if (ret == 0
      && s3_xml_text (id, sizeof id, k.q.body.ptr ? k.q.body.ptr : "", k.q.body.len, "UploadId")
             < 0)
    ret = bvm_error_code (err, BVM_E_NETWORK, 0, "s3 store: no usable UploadId for `%s`",
                          t->cur.key);
  call_dispose (&k);
  if (ret < 0)
    return bvm_error_wrap (err, "starting the upload of `%s`", t->cur.key);
  if ((t->cur.upload_id = strdup (id)) == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  return 0;
}

static int
flush_part (struct s3_txn *t, bvm_error_t *err)
{
  cleanup_free char *url = NULL;
  cleanup_buf struct buf qb = BUF_INIT (UPLOAD_ID_MAX * 3 + 64);
  struct s3_call k = { 0 };
  char **etags;
  int ret;

  if (t->cur.upload_id == NULL && start_upload (t, err) < 0)
    return -1;
  if (t->cur.n_parts >= S3_MAX_PARTS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "s3 store: `%s` needs more than %d parts",
                           t->cur.key, S3_MAX_PARTS);
  if (buf_addf (&qb, "partNumber=%zu&uploadId=", t->cur.n_parts + 1) < 0
      || s3_uri_encode (&qb, t->cur.upload_id, false) < 0
      || s3_object_url (&url, &t->st->l, t->cur.key, buf_cstr (&qb), err) < 0)
    return bvm_error (err, ENOMEM, "s3 store");
  etags = realloc (t->cur.etags, (t->cur.n_parts + 1) * sizeof *etags);
  if (etags == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  t->cur.etags = etags;
  k.method = "PUT";
  k.url = url;
  k.body = t->part;
  k.len = t->part_len;
  ret = txn_call (t, &k, write_actions, err);
  if (ret == 0
      && (k.q.etag[0] == '\0' || strlen (k.q.etag) >= ETAG_MAX
          || strpbrk (k.q.etag, "<&") != NULL))
    ret = bvm_error_code (err, BVM_E_NETWORK, 0, "s3 store: no usable ETag for a part of `%s`",
                          t->cur.key);
  if (ret == 0 && (etags[t->cur.n_parts] = strdup (k.q.etag)) == NULL)
    ret = bvm_error (err, ENOMEM, "s3 store");
  call_dispose (&k);
  if (ret < 0)
    return bvm_error_wrap (err, "uploading part %zu of `%s`", t->cur.n_parts + 1, t->cur.key);
  t->cur.n_parts++;
  t->part_len = 0;
  return 0;
}

static int
s3_put_write (void *txn, const void *buf, size_t len, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  const unsigned char *p = buf;
  while (len > 0)
    {
      size_t room = t->st->l.part_size - t->part_len, n = len < room ? len : room;
      memcpy (t->part + t->part_len, p, n);
      t->part_len += n;
      p += n;
      len -= n;
      if (t->part_len == t->st->l.part_size && flush_part (t, err) < 0)
        return -1;
    }
  return 0;
}

static int
s3_put_end (void *txn, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  struct s3_upload *ups;

  /* the last part (any size; the only one of a small object) */
  if ((t->part_len > 0 || t->cur.n_parts == 0) && flush_part (t, err) < 0)
    return -1;
  if (t->n_ups == t->cap_ups)
    {
      size_t cap = t->cap_ups ? t->cap_ups * 2 : 16;
      ups = realloc (t->ups, cap * sizeof *ups);
      if (ups == NULL)
        return bvm_error (err, ENOMEM, "s3 store");
      t->ups = ups;
      t->cap_ups = cap;
    }
  t->ups[t->n_ups++] = t->cur;
  memset (&t->cur, 0, sizeof t->cur);
  t->in_put = false;
  return 0;
}

static int
s3_put_link (void *txn, const char *key, const char *existing_key, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  if (t->n_links == t->cap_links)
    {
      size_t cap = t->cap_links ? t->cap_links * 2 : 8;
      void *n = cap <= 2 * LINK_MAX_COUNT ? realloc (t->links, cap * sizeof *t->links) : NULL;
      if (n == NULL)
        return bvm_error (err, ENOMEM, "s3 store");
      t->links = n;
      t->cap_links = cap;
    }
  t->links[t->n_links][0] = strdup (key);
  t->links[t->n_links][1] = strdup (existing_key);
  t->n_links++; /* freed by abort even when a strdup failed */
  if (t->links[t->n_links - 1][0] == NULL || t->links[t->n_links - 1][1] == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  return 0;
}

/* whether the store said it encrypted an object we asked it to */
static void
note_sse (struct s3_txn *t, const struct s3_call *k)
{
  if (t->sse && (!k->have_q || strcmp (k->q.sse, t->st->l.sse) != 0))
    t->sse_unconfirmed = true;
}

static int
complete_upload (struct s3_txn *t, struct s3_upload *u, bvm_error_t *err)
{
  cleanup_free char *url = NULL;
  cleanup_buf struct buf qb = BUF_INIT (UPLOAD_ID_MAX * 3 + 16);
  cleanup_buf struct buf body = BUF_INIT ((size_t) S3_MAX_PARTS * (ETAG_MAX + 64) + 128);
  struct s3_call k = { 0 };
  int ret;

  if (buf_adds (&qb, "uploadId=") < 0 || s3_uri_encode (&qb, u->upload_id, false) < 0
      || s3_object_url (&url, &t->st->l, u->key, buf_cstr (&qb), err) < 0
      || buf_adds (&body, "<CompleteMultipartUpload>") < 0)
    return bvm_error (err, ENOMEM, "s3 store");
  for (size_t i = 0; i < u->n_parts; i++)
    if (buf_addf (&body, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag></Part>", i + 1,
                  u->etags[i])
        < 0)
      return bvm_error (err, ENOMEM, "s3 store");
  if (buf_adds (&body, "</CompleteMultipartUpload>") < 0)
    return bvm_error (err, ENOMEM, "s3 store");
  /* a POST with a body goes through curl's upload path as a custom method */
  k.method = "POST";
  k.url = url;
  k.body = body.ptr;
  k.len = body.len;
  k.body_max = S3_REPLY_MAX;
  ret = txn_call (t, &k, write_actions, err);
  note_sse (t, &k);
  call_dispose (&k);
  if (ret < 0)
    return bvm_error_wrap (err, "completing the upload of `%s`", u->key);
  free (u->upload_id);
  u->upload_id = NULL; /* nothing left to abort */
  return 0;
}

static int s3_put_begin (void *txn, const char *key, bvm_error_t *err);
static int s3_put_write (void *txn, const void *buf, size_t len, bvm_error_t *err);
static int s3_put_end (void *txn, bvm_error_t *err);

static int
link_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  return s3_put_write (opaque, buf, len, err);
}

/* A store that cannot copy (RGW 16 refuses CopyObject of an object it
 * encrypted at rest, 501): the link's bytes are read back and uploaded
 * again, part by part, then completed at once. */
static int
reupload_link (struct s3_txn *t, const char *key, const char *from, bvm_error_t *err)
{
  cleanup_free char *url = NULL;
  struct http_client rd;
  struct s3_call k = { 0 };
  int ret;

  if (s3_object_url (&url, &t->st->l, from, NULL, err) < 0 || s3_put_begin (t, key, err) < 0)
    return -1;
  /* a connection of its own: the sink uploads on the transaction's */
  if (client_init (&rd, t->st->expires, err) < 0)
    return -1;
  k.c = &rd;
  k.cr = &t->cr;
  k.provider = t->provider;
  k.method = "GET";
  k.url = url;
  k.sink = link_sink;
  k.opaque = t;
  k.out_max = UINT64_MAX;
  ret = http_with_retries (&rd, call_once, &k, err);
  call_dispose (&k);
  http_client_dispose (&rd);
  if (ret == 0)
    ret = s3_put_end (t, err);
  if (ret == 0)
    ret = complete_upload (t, &t->ups[t->n_ups - 1], err);
  return ret < 0 ? bvm_error_wrap (err, "writing the hard link `%s` of `%s`", key, from) : 0;
}

static int
copy_link (struct s3_txn *t, const char *key, const char *from, bvm_error_t *err)
{
  cleanup_free char *url = NULL, *src = NULL;
  cleanup_buf struct buf sb = BUF_INIT (S3_URL_MAX);
  struct s3_call k = { 0 };
  char acl[400];
  int ret;

  if (buf_addf (&sb, "x-amz-copy-source: /%s/", t->st->l.bucket) < 0
      || (t->st->l.root[0]
          && (s3_uri_encode (&sb, t->st->l.root, true) < 0 || buf_adds (&sb, "/") < 0))
      || s3_uri_encode (&sb, from, true) < 0)
    return bvm_error (err, ENOMEM, "s3 store");
  if (s3_object_url (&url, &t->st->l, key, NULL, err) < 0)
    return -1;
  src = buf_steal (&sb);
  k.method = "PUT";
  k.url = url;
  k.body_max = S3_REPLY_MAX;
  object_headers (t, &k, acl, sizeof acl);
  /* no SSE header on a copy: RGW 16 answers it with 501 NotImplemented; the
   * copy is of an object that was written with it, and the record's
   * `confirmed` says what the store did */
  k.hdrs[1] = k.hdrs[0];
  k.hdrs[0] = src;
  k.hdrs[2] = NULL;
  ret = txn_call (t, &k, link_actions, err);
  if (t->sse && k.have_q && strcmp (k.q.sse, t->st->l.sse) != 0)
    t->sse_unconfirmed = true;
  if (ret < 0 && k.have_q && k.q.status == 501)
    {
      call_dispose (&k);
      bvm_error_free (err);
      return reupload_link (t, key, from, err);
    }
  call_dispose (&k);
  if (ret < 0)
    return bvm_error_wrap (err, "copying `%s` to its hard link `%s`", from, key);
  return 0;
}

static int
put_small (struct s3_txn *t, const char *key, const void *data, size_t len, bvm_error_t *err)
{
  cleanup_free char *url = NULL;
  struct s3_call k = { 0 };
  char acl[400];
  int ret;

  if (s3_object_url (&url, &t->st->l, key, NULL, err) < 0)
    return -1;
  k.method = "PUT";
  k.url = url;
  k.body = data;
  k.len = len;
  object_headers (t, &k, acl, sizeof acl);
  ret = txn_call (t, &k, write_actions, err);
  note_sse (t, &k);
  call_dispose (&k);
  return ret < 0 ? bvm_error_wrap (err, "writing `%s`", key) : 0;
}

static int
s3_commit (void *txn, const char *index_key, const void *index, size_t len, bvm_error_t *err)
{
  struct s3_txn *t = txn;
  int ret = 0;

  /* every object becomes visible ... */
  for (size_t i = 0; ret == 0 && i < t->n_ups; i++)
    ret = complete_upload (t, &t->ups[i], err);
  if (ret == 0 && t->n_links > 0)
    {
      /* a session that may also read the prefix, for the copies */
      struct s3_creds lc = { 0 };
      ret = assume_with (&lc, &t->http, &t->st->l, &t->st->runner, t->prefix, link_actions,
                         t->st->expires, err);
      if (ret == 0)
        {
          s3_creds_dispose (&t->cr);
          t->cr = lc;
        }
      for (size_t i = 0; ret == 0 && i < t->n_links; i++)
        ret = copy_link (t, t->links[i][0], t->links[i][1], err);
    }
  /* ... then the index, last */
  if (ret == 0)
    ret = put_small (t, index_key, index, len, err);
  t->st->sse_requested[0] = t->st->sse_confirmed[0] = '\0';
  if (ret == 0 && t->sse)
    {
      snprintf (t->st->sse_requested, sizeof t->st->sse_requested, "%s", t->st->l.sse);
      if (!t->sse_unconfirmed)
        snprintf (t->st->sse_confirmed, sizeof t->st->sse_confirmed, "%s", t->st->l.sse);
    }
  s3_abort (t);
  return ret;
}

struct get_ctx
{
  store_sink_fn sink;
  void *opaque;
};

static int
s3_get (void *state, const char *key, uint64_t max, store_sink_fn sink, void *opaque,
        bvm_error_t *err)
{
  struct s3_store *st = state;
  struct s3_txn t = { .st = st };
  cleanup_free char *url = NULL;
  char scope[STORE_KEY_MAX + 1];
  struct s3_call k = { 0 };
  int ret;

  if (s3_key_scope (scope, sizeof scope, key, err) < 0
      || s3_object_url (&url, &st->l, key, NULL, err) < 0)
    return -1;
  if ((t.prefix = strdup (scope)) == NULL)
    return bvm_error (err, ENOMEM, "s3 store");
  if (client_init (&t.http, st->expires, err) < 0)
    {
      free (t.prefix);
      return -1;
    }
  ret = s3_sigv4_provider (t.provider, sizeof t.provider, st->l.region, "s3", err);
  if (ret == 0)
    ret = assume_with (&t.cr, &t.http, &st->l, &st->runner, scope, read_actions, st->expires, err);
  if (ret == 0)
    {
      k.method = "GET";
      k.url = url;
      k.sink = sink;
      k.opaque = opaque;
      k.out_max = max;
      ret = txn_call (&t, &k, read_actions, err);
      if (ret < 0 && k.have_q && k.q.status == 404)
        {
          bvm_error_free (err);
          ret = bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not in the artifact store", key);
        }
      call_dispose (&k);
    }
  s3_creds_dispose (&t.cr);
  http_client_dispose (&t.http);
  free (t.prefix);
  return ret;
}

const struct store_backend store_s3_backend = {
  .name = "s3",
  .open = s3_open,
  .close = s3_close,
  .txn_begin = s3_txn_begin,
  .put_begin = s3_put_begin,
  .put_write = s3_put_write,
  .put_end = s3_put_end,
  .put_link = s3_put_link,
  .commit = s3_commit,
  .abort = s3_abort,
  .seal = s3_seal,
  .get = s3_get,
  .set_expiry = s3_set_expiry,
  .last_commit = s3_last_commit,
};
