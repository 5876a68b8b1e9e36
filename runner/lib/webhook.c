/* webhook.c - git push webhooks in, deploy requests out; see webhook.h and docs/webhooks.md
 *
 * Over 1,500 lines: three forges' payload formats, the signature checks and
 * the per-app replay store are one trust decision each push goes through;
 * the HTTP server around it is webhook_http.c. */
#include "webhook.h"
#include "buf.h"
#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHA256_LEN 32
#define DELIVERY_HEADER_MAX 256
#define ZERO_COMMIT "0000000000000000000000000000000000000000"

/* --- small helpers ------------------------------------------------------------------------ */

/* Exactly 2n hex digits (either case) into n bytes. */
static bool
hex_decode (unsigned char *out, size_t n, const char *s)
{
  if (strlen (s) != 2 * n)
    return false;
  for (size_t i = 0; i < n; i++)
    {
      int hi = hex_digit (s[2 * i]), lo = hex_digit (s[2 * i + 1]);
      if (hi < 0 || lo < 0)
        return false;
      out[i] = (unsigned char) (hi << 4 | lo);
    }
  return true;
}

/* Copy an untrusted message into a fixed buffer as printable ASCII: other
 * bytes become `?`, so nothing from a request can reach a log line or a
 * terminal as a control sequence. */
static void
copy_printable (char *dst, size_t size, const char *src)
{
  size_t i;

  for (i = 0; src[i] != '\0' && i + 1 < size; i++)
    {
      unsigned char c = (unsigned char) src[i];
      dst[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char) c;
    }
  dst[i] = '\0';
}

/* A new error with the same code whose message is printable ASCII (jansson's
 * parse errors quote the text near the error, which is the client's). */
static int
error_printable (bvm_error_t *err, const char *prefix)
{
  char msg[512];
  int code = bvm_error_get_code (err);

  copy_printable (msg, sizeof msg, bvm_error_msg (err));
  return bvm_error_code (err, code ? code : BVM_E_INVALID, 0, "%s%s", prefix, msg);
}

/* --- formats and headers ------------------------------------------------------------------ */

struct format_info
{
  enum webhook_format format;
  const char *name;
  const char *event;     /* the header that names the event */
  const char *push;      /* its value for a push */
  const char *signature; /* the header with the signature or token */
  const char *delivery;  /* the header with the delivery id */
};

/* Forgejo sends Gitea's and GitHub's headers too, Gitea sends GitHub's: the
 * most specific sender is looked for first, and its own signature header is
 * the one checked. */
static const struct format_info formats[] = {
  { WEBHOOK_FORMAT_FORGEJO, "forgejo", "X-Forgejo-Event", "push", "X-Forgejo-Signature",
    "X-Forgejo-Delivery" },
  { WEBHOOK_FORMAT_GITEA, "gitea", "X-Gitea-Event", "push", "X-Gitea-Signature",
    "X-Gitea-Delivery" },
  { WEBHOOK_FORMAT_GITLAB, "gitlab", "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token",
    "X-Gitlab-Event-UUID" },
  { WEBHOOK_FORMAT_GITHUB, "github", "X-GitHub-Event", "push", "X-Hub-Signature-256",
    "X-GitHub-Delivery" },
};

static const struct format_info *
format_info (enum webhook_format f)
{
  for (size_t i = 0; i < ARRAY_SIZE (formats); i++)
    if (formats[i].format == f)
      return &formats[i];
  return NULL;
}

const char *
webhook_format_name (enum webhook_format f)
{
  const struct format_info *fi = format_info (f);
  return fi ? fi->name : "none";
}

const char *
webhook_header (const struct webhook_request *req, const char *name, size_t *count)
{
  const char *first = NULL;
  size_t n = 0;

  for (size_t i = 0; i < req->n_headers; i++)
    if (req->headers[i].name != NULL && strcasecmp (req->headers[i].name, name) == 0)
      {
        if (n++ == 0)
          first = req->headers[i].value ? req->headers[i].value : "";
      }
  if (count != NULL)
    *count = n;
  return first;
}

enum webhook_format
webhook_detect_format (const struct webhook_request *req)
{
  for (size_t i = 0; i < ARRAY_SIZE (formats); i++)
    if (webhook_header (req, formats[i].event, NULL) != NULL)
      return formats[i].format;
  return WEBHOOK_FORMAT_NONE;
}

/* "application/json", optionally with parameters; a charset other than
 * UTF-8 is refused (the payload is parsed as UTF-8). GitHub's form encoding
 * (`payload=` + URL-encoded JSON) is refused too: one more decoder in front
 * of the parser buys nothing, and every forge can send JSON. */
static const char *
content_type_problem (const char *ct)
{
  static const char why[] = "must be `application/json`, with charset utf-8 if any";
  static const char json[] = "application/json";
  const char *p;

  if (ct == NULL || strncasecmp (ct, json, sizeof json - 1) != 0)
    return why;
  p = ct + sizeof json - 1;
  while (*p == ' ' || *p == '\t')
    p++;
  while (*p == ';')
    {
      const char *name, *val;
      size_t nlen, vlen;

      p++;
      while (*p == ' ' || *p == '\t')
        p++;
      name = p;
      nlen = strcspn (p, "=; \t");
      p += nlen;
      if (*p != '=')
        return why;
      val = ++p;
      vlen = strcspn (p, "; \t");
      p += vlen;
      if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"')
        val++, vlen -= 2;
      if (nlen == 7 && strncasecmp (name, "charset", 7) == 0
          && !((vlen == 5 && strncasecmp (val, "utf-8", 5) == 0)
               || (vlen == 4 && strncasecmp (val, "utf8", 4) == 0)))
        return why;
      while (*p == ' ' || *p == '\t')
        p++;
    }
  return *p == '\0' ? NULL : why;
}

/* --- signatures ---------------------------------------------------------------------------- */

static int
denied (bvm_error_t *err, const char *why)
{
  return bvm_error_code (err, BVM_E_DENIED, 0, "%s", why);
}

/* The hex part of a signature header, or NULL when it has the wrong form. */
static const char *
signature_hex (enum webhook_format f, const char *sig)
{
  if (f == WEBHOOK_FORMAT_GITHUB)
    return strncmp (sig, "sha256=", 7) == 0 ? sig + 7 : NULL;
  return sig;
}

int
webhook_verify_signature (enum webhook_format f, const char *sig, const void *secret,
                          size_t secret_len, const void *body, size_t body_len, bvm_error_t *err)
{
  unsigned char want[EVP_MAX_MD_SIZE], got[SHA256_LEN];
  unsigned int want_len = 0;
  const char *hex;
  int ok;

  if (sig == NULL || *sig == '\0')
    return denied (err, "missing signature");
  if (secret == NULL || secret_len == 0 || secret_len > INT32_MAX)
    return denied (err, "no secret to check the signature with");

  if (f == WEBHOOK_FORMAT_GITLAB)
    {
      unsigned char a[SHA256_LEN], b[SHA256_LEN];
      size_t slen = strlen (sig);

      if (slen > WEBHOOK_SECRET_MAX)
        return denied (err, "malformed token");
      /* GitLab sends the secret itself. Comparing SHA-256 digests of both in
       * constant time hides the secret's length as well as its bytes. */
      if (EVP_Digest (sig, slen, a, NULL, EVP_sha256 (), NULL) != 1
          || EVP_Digest (secret, secret_len, b, NULL, EVP_sha256 (), NULL) != 1)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "sha256 failed");
      ok = CRYPTO_memcmp (a, b, sizeof a) == 0;
      mem_wipe (b, sizeof b);
      return ok ? 0 : denied (err, "wrong token");
    }
  if (f != WEBHOOK_FORMAT_GITHUB && f != WEBHOOK_FORMAT_GITEA && f != WEBHOOK_FORMAT_FORGEJO)
    return denied (err, "unknown webhook format");
  hex = signature_hex (f, sig);
  if (hex == NULL || !hex_decode (got, sizeof got, hex))
    return denied (err, f == WEBHOOK_FORMAT_GITHUB
                            ? "malformed signature (want sha256= and 64 hex digits)"
                            : "malformed signature (want 64 hex digits)");
  /* over the raw bytes as received: never over a re-serialization */
  if (HMAC (EVP_sha256 (), secret, (int) secret_len, body_len ? body : (const void *) "", body_len,
            want, &want_len)
          == NULL
      || want_len != SHA256_LEN)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "hmac-sha256 failed");
  ok = CRYPTO_memcmp (want, got, SHA256_LEN) == 0;
  mem_wipe (want, sizeof want);
  return ok ? 0 : denied (err, "wrong signature");
}

/* --- push payloads ------------------------------------------------------------------------- */

void
webhook_push_free (struct webhook_push *p)
{
  if (p == NULL)
    return;
  free (p->ref);
  free (p->before);
  free (p->after);
  for (size_t i = 0; i < p->n_repo_names; i++)
    free (p->repo_names[i]);
  free (p->pusher);
  free (p->head_commit);
  free (p);
}

static int
nomem (bvm_error_t *err)
{
  return bvm_error (err, ENOMEM, "push payload");
}

/* An optional string member: absent and null both leave *out NULL; any other
 * type is an error. The copy is the caller's. */
static int
get_str (char **out, const json_t *obj, const char *key, bool required, const char *where,
         bvm_error_t *err)
{
  const json_t *v = obj ? json_object_get (obj, key) : NULL;
  const char *s = NULL;
  char path[128];

  *out = NULL;
  if (v == NULL || json_is_null (v))
    {
      if (!required)
        return 0;
      return bvm_error_code (err, BVM_E_INVALID, 0, "push payload: field `%s` is missing",
                             jsonx_path (path, sizeof path, where, key));
    }
  if (jsonx_get_str (&s, obj, key, required, WEBHOOK_FIELD_MAX, where, err) < 0)
    return error_printable (err, "push payload: ");
  if ((*out = strdup (s)) == NULL)
    return nomem (err);
  return 0;
}

/* An optional object member (null counts as absent). */
static int
get_obj (const json_t **out, const json_t *obj, const char *key, bool required, bvm_error_t *err)
{
  const json_t *v = json_object_get (obj, key);

  *out = NULL;
  if ((v == NULL || json_is_null (v)) && !required)
    return 0;
  if (v == NULL || !json_is_object (v))
    return bvm_error_code (err, BVM_E_INVALID, 0, "push payload: field `%s` %s", key,
                           v == NULL || json_is_null (v) ? "is missing" : "must be an object");
  *out = v;
  return 0;
}

static int
add_repo_name (struct webhook_push *p, const json_t *obj, const char *key, const char *where,
               bvm_error_t *err)
{
  char *s = NULL;

  if (obj == NULL)
    return 0;
  if (get_str (&s, obj, key, false, where, err) < 0)
    return -1;
  if (s == NULL)
    return 0;
  if (*s == '\0' || p->n_repo_names >= WEBHOOK_MAX_REPO_NAMES)
    {
      free (s);
      return 0;
    }
  p->repo_names[p->n_repo_names++] = s;
  return 0;
}

/* The first of `keys` that is a string, as the pusher's name. */
static int
get_first_str (char **out, const json_t *obj, const char *const *keys, const char *where,
               bvm_error_t *err)
{
  *out = NULL;
  for (size_t i = 0; obj != NULL && keys[i] != NULL && *out == NULL; i++)
    if (get_str (out, obj, keys[i], false, where, err) < 0)
      return -1;
  return 0;
}

static bool
all_zeros (const char *s)
{
  if (s == NULL || *s == '\0')
    return false;
  for (; *s; s++)
    if (*s != '0')
      return false;
  return true;
}

/* An optional `timestamp` (RFC 3339) of a commit object: 0 when absent; a
 * value that is not a date is refused like any mistyped field. */
static int
get_time (int64_t *out, const json_t *commit, const char *where, bvm_error_t *err)
{
  cleanup_free char *ts = NULL;

  *out = 0;
  if (get_str (&ts, commit, "timestamp", false, where, err) < 0)
    return -1;
  if (ts != NULL && !job_rfc3339_epoch (ts, out))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "push payload: field `%s.timestamp` is not an RFC 3339 date-time",
                           where);
  return 0;
}

/* GitHub, Gitea and Forgejo share GitHub's push payload. */
static int
parse_github_like (struct webhook_push *p, const json_t *doc, bvm_error_t *err)
{
  static const char *const pusher_keys[] = { "name", "login", "username", NULL };
  const json_t *repo = NULL, *pusher = NULL, *head = NULL;
  const json_t *deleted = json_object_get (doc, "deleted");

  if (get_str (&p->ref, doc, "ref", true, "", err) < 0
      || get_str (&p->before, doc, "before", false, "", err) < 0
      || get_str (&p->after, doc, "after", true, "", err) < 0
      || get_obj (&repo, doc, "repository", true, err) < 0
      || get_obj (&pusher, doc, "pusher", false, err) < 0
      || get_obj (&head, doc, "head_commit", false, err) < 0)
    return -1;
  if (deleted != NULL && !json_is_null (deleted))
    {
      if (!json_is_boolean (deleted))
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "push payload: field `deleted` must be a boolean");
      p->deleted = json_is_true (deleted);
    }
  if (add_repo_name (p, repo, "clone_url", "repository", err) < 0
      || add_repo_name (p, repo, "html_url", "repository", err) < 0
      || add_repo_name (p, repo, "full_name", "repository", err) < 0
      || get_first_str (&p->pusher, pusher, pusher_keys, "pusher", err) < 0
      || (head != NULL && get_str (&p->head_commit, head, "id", false, "head_commit", err) < 0)
      || (head != NULL && get_time (&p->head_time, head, "head_commit", err) < 0))
    return -1;
  return 0;
}

static int
parse_gitlab (struct webhook_push *p, const json_t *doc, bvm_error_t *err)
{
  static const char *const user_keys[] = { "user_username", "user_name", NULL };
  cleanup_free char *kind = NULL;
  const json_t *project = NULL, *repo = NULL;

  if (get_str (&kind, doc, "object_kind", false, "", err) < 0)
    return -1;
  if (kind != NULL && strcmp (kind, "push") != 0 && strcmp (kind, "tag_push") != 0)
    {
      char shown[JOB__SHOW_SIZE];
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "push payload: field `object_kind` is `%s`, not a push",
                             job__show (shown, sizeof shown, kind));
    }
  p->tag = kind != NULL && strcmp (kind, "tag_push") == 0;
  if (get_str (&p->ref, doc, "ref", true, "", err) < 0
      || get_str (&p->before, doc, "before", false, "", err) < 0
      || get_str (&p->after, doc, "after", true, "", err) < 0
      || get_str (&p->head_commit, doc, "checkout_sha", false, "", err) < 0
      || get_obj (&project, doc, "project", false, err) < 0
      || get_obj (&repo, doc, "repository", false, err) < 0
      || get_first_str (&p->pusher, doc, user_keys, "", err) < 0)
    return -1;
  /* GitLab has no head_commit: the head is the commit of `commits` whose id
   * is checkout_sha */
  {
    const json_t *commits = json_object_get (doc, "commits"), *c;
    size_t i;
    if (commits != NULL && json_is_array (commits) && p->head_commit != NULL)
      json_array_foreach (commits, i, c)
        {
          const char *id = json_string_value (json_object_get (c, "id"));
          if (json_is_object (c) && id != NULL && strcmp (id, p->head_commit) == 0)
            {
              if (get_time (&p->head_time, c, "commits[]", err) < 0)
                return -1;
              break;
            }
        }
  }
  if (add_repo_name (p, project, "git_http_url", "project", err) < 0
      || add_repo_name (p, project, "web_url", "project", err) < 0
      || add_repo_name (p, project, "path_with_namespace", "project", err) < 0
      || add_repo_name (p, repo, "git_http_url", "repository", err) < 0
      || add_repo_name (p, repo, "homepage", "repository", err) < 0)
    return -1;
  return 0;
}

int
webhook_parse_push (struct webhook_push **out, enum webhook_format f, const char *body, size_t len,
                    size_t max, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  struct webhook_push *p;
  int ret;

  *out = NULL;
  if (f == WEBHOOK_FORMAT_NONE || format_info (f) == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "push payload: unknown webhook format");
  /* jsonx: the size before parsing, then strict JSON (duplicate keys,
   * invalid UTF-8 and NUL refused) and the nesting cap */
  ret = jsonx_parse (&doc, body, len, max, "push payload", err);
  if (ret < 0)
    return error_printable (err, "");
  if (!json_is_object (doc))
    return bvm_error_code (err, BVM_E_INVALID, 0, "push payload must be a JSON object");
  if ((p = calloc (1, sizeof *p)) == NULL)
    return nomem (err);
  ret = f == WEBHOOK_FORMAT_GITLAB ? parse_gitlab (p, doc, err) : parse_github_like (p, doc, err);
  if (ret == 0 && p->n_repo_names == 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "push payload names no repository");
  if (ret < 0)
    {
      webhook_push_free (p);
      return ret;
    }
  if (all_zeros (p->after))
    p->deleted = true;
  if (strncmp (p->ref, "refs/tags/", 10) == 0)
    p->tag = true;
  *out = p;
  return 0;
}

/* --- listen address ------------------------------------------------------------------------ */

int
webhook_parse_listen (struct sockaddr_storage *out, socklen_t *len, const char *s,
                      bvm_error_t *err)
{
  char host[INET6_ADDRSTRLEN + 1], shown[JOB__SHOW_SIZE];
  const char *port_s, *h = s;
  size_t hlen;
  uint32_t port;

  memset (out, 0, sizeof *out);
  if (s[0] == '[')
    {
      const char *close = strchr (s, ']');
      if (close == NULL || close[1] != ':')
        goto bad;
      h = s + 1;
      hlen = (size_t) (close - h);
      port_s = close + 2;
    }
  else
    {
      const char *colon = strrchr (s, ':');
      if (colon == NULL)
        goto bad;
      hlen = (size_t) (colon - s);
      port_s = colon + 1;
    }
  if (hlen == 0 || hlen >= sizeof host)
    goto bad;
  memcpy (host, h, hlen);
  host[hlen] = '\0';
  /* no leading zeros, no sign: exactly the digits of 1..65535 */
  if (port_s[0] < '1' || port_s[0] > '9' || strlen (port_s) > 5 || parse_u32 (port_s, &port) < 0
      || port > 65535)
    goto bad;
  if (s[0] == '[')
    {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *) out;
      if (inet_pton (AF_INET6, host, &a->sin6_addr) != 1)
        goto bad;
      a->sin6_family = AF_INET6;
      a->sin6_port = htons ((uint16_t) port);
      *len = sizeof *a;
    }
  else
    {
      struct sockaddr_in *a = (struct sockaddr_in *) out;
      /* inet_pton takes only the dotted quad: no "127.1", no octal */
      if (inet_pton (AF_INET, host, &a->sin_addr) != 1)
        goto bad;
      a->sin_family = AF_INET;
      a->sin_port = htons ((uint16_t) port);
      *len = sizeof *a;
    }
  return 0;

bad:
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "listen address `%s` must be `IPv4:PORT` or `[IPv6]:PORT` with PORT "
                         "1-65535 (no host names)",
                         job__show (shown, sizeof shown, s));
}

/* --- the app table ------------------------------------------------------------------------- */

struct webhook_app
{
  char *app;
  char *repo;
  char **match;
  size_t n_match;
  char **branches;
  size_t n_branches;
  unsigned char *secret;
  size_t secret_len;
};

struct webhook_config
{
  struct webhook_app *apps;
  size_t n_apps;
  size_t alloc;
  size_t max_body;
};

static void
app_dispose (struct webhook_app *a)
{
  free (a->app);
  free (a->repo);
  strv_free (a->match);
  strv_free (a->branches);
  if (a->secret != NULL)
    {
      mem_wipe (a->secret, a->secret_len);
      free (a->secret);
    }
  memset (a, 0, sizeof *a);
}

void
webhook_config_free (struct webhook_config *wc)
{
  if (wc == NULL)
    return;
  for (size_t i = 0; i < wc->n_apps; i++)
    app_dispose (&wc->apps[i]);
  free (wc->apps);
  free (wc);
}

int
webhook_config_new (struct webhook_config **out, size_t max_body_bytes, bvm_error_t *err)
{
  struct webhook_config *wc = calloc (1, sizeof *wc);

  if (wc == NULL)
    return bvm_error (err, ENOMEM, "webhook config");
  wc->max_body = max_body_bytes;
  *out = wc;
  return 0;
}

int
webhook_config_add_app (struct webhook_config *wc, const struct config_app *app,
                        const void *secret, size_t secret_len, bvm_error_t *err)
{
  struct webhook_app a = { 0 };

  if (secret_len == 0 || secret_len > WEBHOOK_SECRET_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "app `%s`: the secret must be 1 to %d bytes",
                           app->app, WEBHOOK_SECRET_MAX);
  if (wc->n_apps == wc->alloc)
    {
      size_t n = wc->alloc ? 2 * wc->alloc : 8;
      struct webhook_app *v = reallocarray (wc->apps, n, sizeof *v);
      if (v == NULL)
        return bvm_error (err, ENOMEM, "webhook config");
      wc->apps = v;
      wc->alloc = n;
    }
  a.app = strdup (app->app);
  a.repo = strdup (app->repo);
  a.match = strv_dup ((const char *const *) app->match, app->n_match);
  a.n_match = app->n_match;
  a.branches = strv_dup ((const char *const *) app->branches, app->n_branches);
  a.n_branches = app->n_branches;
  a.secret = malloc (secret_len);
  a.secret_len = secret_len;
  if (a.app == NULL || a.repo == NULL || a.match == NULL || a.branches == NULL || a.secret == NULL)
    {
      if (a.match == NULL)
        a.n_match = 0;
      if (a.branches == NULL)
        a.n_branches = 0;
      app_dispose (&a);
      return bvm_error (err, ENOMEM, "webhook config");
    }
  memcpy (a.secret, secret, secret_len);
  wc->apps[wc->n_apps++] = a;
  return 0;
}

/* Read a secret file after checking the open file: regular, ours or
 * root's, no access for group or others, at most WEBHOOK_SECRET_MAX bytes.
 * One trailing newline (as `echo` writes) is not part of the secret. */
static int
read_secret (unsigned char *buf, size_t *len, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  size_t used = 0;

  if (fd < 0)
    return bvm_error (err, errno, "open webhook secret `%s`", path);
  if (fs_check_private_fd (&st, fd, path, NULL, err) < 0)
    return -1;
  for (;;)
    {
      ssize_t n = read (fd, buf + used, WEBHOOK_SECRET_MAX + 1 - used);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "read `%s`", path);
      if (n == 0)
        break;
      used += (size_t) n;
      if (used > WEBHOOK_SECRET_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %d bytes", path,
                               WEBHOOK_SECRET_MAX);
    }
  if (used > 0 && buf[used - 1] == '\n')
    used--;
  if (used > 0 && buf[used - 1] == '\r')
    used--;
  if (used == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is empty", path);
  *len = used;
  return 0;
}

int
webhook_config_load (struct webhook_config **out, const struct config_webhook *w,
                     const struct config_app *apps, size_t n_apps, bvm_error_t *err)
{
  cleanup_webhook_config struct webhook_config *wc = NULL;
  int ret;

  if (n_apps == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the runner config has no `apps`: no push could deploy anything");
  ret = webhook_config_new (&wc, w->max_body_bytes, err);
  for (size_t i = 0; ret == 0 && i < n_apps; i++)
    {
      unsigned char secret[WEBHOOK_SECRET_MAX + 1];
      size_t len = 0;

      ret = read_secret (secret, &len, apps[i].secret_file, err);
      if (ret == 0)
        ret = webhook_config_add_app (wc, &apps[i], secret, len, err);
      mem_wipe (secret, sizeof secret);
      if (ret < 0)
        ret = bvm_error_wrap (err, "apps[%zu] (`%s`)", i, apps[i].app);
    }
  if (ret < 0)
    return ret;
  *out = steal_pointer (&wc);
  return 0;
}

/* --- replays ------------------------------------------------------------------------------- */

/* Issue 11 item 8: one window shared by every app let one tenant's own
 * signed pushes evict another app's keys, after which a captured authentic
 * push of that app could be sent again under a fresh (unsigned) delivery
 * id. So every app has its own ring, and only that app's authentic
 * deliveries add to it; a key also expires after the span. */

#define SLOT_EMPTY UINT32_MAX
#define LEGACY_APP "-" /* lines of the old "<time> <key>" format: checked for every app */

struct ring
{
  char app[JOB_APP_MAX + 1];
  char **keys;    /* oldest at `head` once full */
  int64_t *times; /* when each key was added */
  size_t head;    /* the next slot to write */
  size_t count;
  uint32_t *table; /* open addressing, linear probing: indices into keys */
  size_t mask;
};

struct webhook_replay
{
  struct ring *rings; /* one per app seen */
  size_t n_rings;
  size_t window;  /* keys per app */
  int64_t span_s; /* keys older than this are forgotten */
  char *path;     /* NULL: memory only */
  int fd;         /* the file, O_APPEND */
  int lock_fd;    /* <path>.lock, flock'ed for the store's life */
  size_t file_lines;
};

static uint64_t
key_hash (const char *s)
{
  uint64_t h = UINT64_C (14695981039346656037);
  for (; *s; s++)
    h = (h ^ (unsigned char) *s) * UINT64_C (1099511628211);
  return h;
}

/* The table slot holding key, or the empty slot where it would go. */
static size_t
slot_of (const struct ring *g, const char *key, bool *found)
{
  size_t i = (size_t) key_hash (key) & g->mask;

  while (g->table[i] != SLOT_EMPTY)
    {
      if (strcmp (g->keys[g->table[i]], key) == 0)
        {
          *found = true;
          return i;
        }
      i = (i + 1) & g->mask;
    }
  *found = false;
  return i;
}

/* Remove the entry at slot i, shifting later entries of its probe run back
 * (no tombstones, so lookups stay short however long the store runs). */
static void
table_delete (struct ring *g, size_t i)
{
  size_t j = i;

  g->table[i] = SLOT_EMPTY;
  for (;;)
    {
      size_t k;
      j = (j + 1) & g->mask;
      if (g->table[j] == SLOT_EMPTY)
        return;
      k = (size_t) key_hash (g->keys[g->table[j]]) & g->mask;
      /* move j back to i unless its home k lies cyclically in (i, j] */
      if ((i <= j) ? (i < k && k <= j) : (i < k || k <= j))
        continue;
      g->table[i] = g->table[j];
      g->table[j] = SLOT_EMPTY;
      i = j;
    }
}

static const char *
key_problem (const char *k)
{
  static const char why[] = "must be 1 to 160 bytes of [A-Za-z0-9._:-]";
  size_t n = strlen (k);

  if (n == 0 || n > WEBHOOK_REPLAY_KEY_MAX)
    return why;
  for (; *k; k++)
    if (!(is_alnum (*k) || *k == '.' || *k == '_' || *k == ':' || *k == '-'))
      return why;
  return NULL;
}

static const char *
replay_app_problem (const char *app)
{
  return strcmp (app, LEGACY_APP) == 0 ? NULL : job_app_id_problem (app);
}

static void
ring_dispose (struct ring *g, size_t window)
{
  for (size_t i = 0; g->keys != NULL && i < window; i++)
    free (g->keys[i]);
  free (g->keys);
  free (g->times);
  free (g->table);
}

/* The ring of `app`, made when `create`; NULL when absent (or ENOMEM). */
static struct ring *
ring_of (struct webhook_replay *r, const char *app, bool create)
{
  struct ring *rings, *g;
  size_t tsize = 16;

  for (size_t i = 0; i < r->n_rings; i++)
    if (strcmp (r->rings[i].app, app) == 0)
      return &r->rings[i];
  if (!create)
    return NULL;
  rings = realloc (r->rings, (r->n_rings + 1) * sizeof *rings);
  if (rings == NULL)
    return NULL;
  r->rings = rings;
  g = &rings[r->n_rings];
  memset (g, 0, sizeof *g);
  snprintf (g->app, sizeof g->app, "%s", app);
  while (tsize < 2 * r->window)
    tsize *= 2;
  g->mask = tsize - 1;
  g->keys = calloc (r->window, sizeof *g->keys);
  g->times = calloc (r->window, sizeof *g->times);
  g->table = malloc (tsize * sizeof *g->table);
  if (g->keys == NULL || g->times == NULL || g->table == NULL)
    {
      ring_dispose (g, r->window);
      return NULL;
    }
  memset (g->table, 0xff, tsize * sizeof *g->table);
  r->n_rings++;
  return g;
}

/* In memory only. 0, or -1 on ENOMEM. A key already there gets the newer
 * time. */
static int
remember (struct webhook_replay *r, const char *app, const char *key, int64_t t)
{
  struct ring *g = ring_of (r, app, true);
  bool found;
  size_t slot;
  char *copy;

  if (g == NULL)
    return -1;
  slot = slot_of (g, key, &found);
  if (found)
    {
      if (g->times[g->table[slot]] < t)
        g->times[g->table[slot]] = t;
      return 0;
    }
  if ((copy = strdup (key)) == NULL)
    return -1;
  if (g->count == r->window)
    {
      bool old_found;
      size_t old = slot_of (g, g->keys[g->head], &old_found);
      if (old_found)
        table_delete (g, old);
      free (g->keys[g->head]);
      g->keys[g->head] = NULL;
      g->count--;
      slot = slot_of (g, key, &found); /* the deletion may have moved the empty slot */
    }
  g->keys[g->head] = copy;
  g->times[g->head] = t;
  g->table[slot] = (uint32_t) g->head;
  g->head = (g->head + 1) % r->window;
  g->count++;
  return 0;
}

static bool
ring_seen (const struct webhook_replay *r, const char *app, const char *key, int64_t now)
{
  const struct ring *g = ring_of ((struct webhook_replay *) r, app, false);
  bool found = false;
  size_t slot;

  if (g == NULL)
    return false;
  slot = slot_of (g, key, &found);
  return found && g->times[g->table[slot]] > now - r->span_s;
}

bool
webhook_replay_seen (const struct webhook_replay *r, const char *app, const char *key, int64_t now)
{
  if (r == NULL || job_app_id_problem (app) != NULL || key_problem (key) != NULL)
    return false;
  return ring_seen (r, app, key, now) || ring_seen (r, LEGACY_APP, key, now);
}

int64_t
webhook_replay_newest (const struct webhook_replay *r, const char *app, const char *prefix,
                       int64_t now)
{
  const struct ring *g = r ? ring_of ((struct webhook_replay *) r, app, false) : NULL;
  size_t plen = strlen (prefix);
  int64_t best = 0;

  for (size_t i = 0; g != NULL && i < r->window; i++)
    {
      uint64_t v;
      if (g->keys[i] == NULL || g->times[i] <= now - r->span_s
          || strncmp (g->keys[i], prefix, plen) != 0 || parse_u64 (g->keys[i] + plen, &v) < 0
          || v > INT64_MAX)
        continue;
      if ((int64_t) v > best)
        best = (int64_t) v;
    }
  return best;
}

size_t
webhook_replay_count (const struct webhook_replay *r)
{
  size_t n = 0;

  for (size_t i = 0; r != NULL && i < r->n_rings; i++)
    n += r->rings[i].count;
  return n;
}

void
webhook_replay_close (struct webhook_replay *r)
{
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n_rings; i++)
    ring_dispose (&r->rings[i], r->window);
  free (r->rings);
  if (r->fd >= 0)
    close (r->fd);
  if (r->lock_fd >= 0)
    close (r->lock_fd);
  free (r->path);
  free (r);
}

/* "<seconds> <app> <key>\n": at most 20 digits and a sign, a space, the app,
 * a space, the key, a newline */
#define REPLAY_LINE_MAX (JOB_APP_MAX + WEBHOOK_REPLAY_KEY_MAX + 32)

static int
format_line (struct buf *b, int64_t t, const char *app, const char *key)
{
  return buf_addf (b, "%lld %s %s\n", (long long) t, app, key);
}

/* Rewrite the file with the live keys in memory, each app's oldest first. */
static int
compact (struct webhook_replay *r, int64_t now, bvm_error_t *err)
{
  /* our own windows of valid keys: count lines of at most REPLAY_LINE_MAX */
  cleanup_buf struct buf b = BUF_INIT ((webhook_replay_count (r) + 1) * REPLAY_LINE_MAX);
  size_t lines = 0;
  int fd;

  for (size_t k = 0; k < r->n_rings; k++)
    {
      const struct ring *g = &r->rings[k];
      for (size_t n = 0; n < g->count; n++)
        {
          size_t i = (g->head + r->window - g->count + n) % r->window;
          if (g->times[i] <= now - r->span_s)
            continue;
          if (format_line (&b, g->times[i], g->app, g->keys[i]) < 0)
            return bvm_error (err, errno, "compacting `%s`", r->path);
          lines++;
        }
    }
  if (fs_write_atomic (r->path, buf_cstr (&b), b.len, 0600, err) < 0)
    return bvm_error_wrap (err, "compacting the replay store");
  fd = open (r->path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", r->path);
  if (r->fd >= 0)
    close (r->fd);
  r->fd = fd;
  r->file_lines = lines;
  return 0;
}

/* Past this many lines the file is rewritten: twice what is remembered,
 * plus slack so that a small store is not rewritten on every add. */
static bool
needs_compaction (const struct webhook_replay *r)
{
  return r->file_lines > 2 * webhook_replay_count (r) + 2 * r->window;
}

/* Read the file back: "<time> <app> <key>" (and the old "<time> <key>",
 * kept under LEGACY_APP); keys past the span are dropped. A line cut by a
 * crash, or anything else malformed, is skipped. */
static int
load_file (struct webhook_replay *r, bool *needs_newline, int64_t now, bvm_error_t *err)
{
  cleanup_free char *data = NULL;
  size_t len = 0;
  char *line, *next;

  /* our own file, which compaction keeps near twice the live keys: the cap
   * only guards against a file that is not what we wrote */
  if (fs_read_fd (&data, &len, r->fd, (size_t) 1 << 30, r->path, err) < 0)
    return bvm_error_wrap (err, "reading the replay store");
  *needs_newline = len > 0 && data[len - 1] != '\n';
  for (line = data; line < data + len; line = next)
    {
      char *nl = memchr (line, '\n', (size_t) (data + len - line));
      char *sp, *sp2, *app = (char *) LEGACY_APP, *key;
      uint64_t t;

      next = nl ? nl + 1 : data + len;
      if (nl == NULL)
        break; /* torn last line */
      *nl = '\0';
      r->file_lines++;
      sp = strchr (line, ' ');
      if (sp == NULL || sp == line || strspn (line, "0123456789") != (size_t) (sp - line))
        continue;
      *sp = '\0';
      key = sp + 1;
      if ((sp2 = strchr (key, ' ')) != NULL)
        {
          *sp2 = '\0';
          app = key;
          key = sp2 + 1;
        }
      if (parse_u64 (line, &t) < 0 || t > INT64_MAX || replay_app_problem (app) != NULL
          || key_problem (key) != NULL)
        continue;
      if ((int64_t) t <= now - r->span_s)
        continue;
      if (remember (r, app, key, (int64_t) t) < 0)
        return bvm_error (err, ENOMEM, "reading the replay store");
    }
  return 0;
}

int
webhook_replay_open (struct webhook_replay **out, const char *path, size_t window, int64_t span_s,
                     bvm_error_t *err)
{
  struct webhook_replay *r;
  bool needs_newline = false;
  int64_t now = wall_s ();
  int ret = 0;

  if (window == 0 || window > UINT32_MAX / 4)
    return bvm_error_code (err, BVM_E_INVALID, 0, "replay window %zu is out of range", window);
  if (span_s <= 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "replay span %lld is out of range",
                           (long long) span_s);
  if ((r = calloc (1, sizeof *r)) == NULL)
    return bvm_error (err, ENOMEM, "replay store");
  r->fd = r->lock_fd = -1;
  r->window = window;
  r->span_s = span_s;
  if (path != NULL)
    {
      cleanup_free char *lock = NULL;
      struct stat st;

      if ((r->path = strdup (path)) == NULL || asprintf (&lock, "%s.lock", path) < 0)
        {
          lock = NULL;
          ret = bvm_error (err, ENOMEM, "replay store");
        }
      /* one receiver per store: a second one would not see the first one's
       * deliveries in memory */
      if (ret == 0
          && (r->lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        ret = bvm_error (err, errno, "open `%s`", lock);
      if (ret == 0 && flock (r->lock_fd, LOCK_EX | LOCK_NB) < 0)
        ret = errno == EWOULDBLOCK
                  ? bvm_error_code (err, BVM_E_INVALID, 0,
                                    "`%s` is in use by another buildvm webhook", path)
                  : bvm_error (err, errno, "lock `%s`", lock);
      if (ret == 0
          && (r->fd = open (path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        ret = bvm_error (err, errno, "open replay store `%s`", path);
      if (ret == 0 && fstat (r->fd, &st) < 0)
        ret = bvm_error (err, errno, "stat `%s`", path);
      if (ret == 0 && (!S_ISREG (st.st_mode) || st.st_uid != geteuid ()))
        ret = bvm_error_code (err, BVM_E_INVALID, 0,
                              "replay store `%s` is not a regular file of ours", path);
      if (ret == 0)
        ret = load_file (r, &needs_newline, now, err);
      /* a line torn by a crash must not swallow the next key */
      if (ret == 0 && needs_newline && fs_write_all (r->fd, "\n", 1) < 0)
        ret = bvm_error (err, errno, "write `%s`", path);
      if (ret == 0 && needs_compaction (r))
        ret = compact (r, now, err);
    }
  if (ret < 0)
    {
      webhook_replay_close (r);
      return ret;
    }
  *out = r;
  return 0;
}

int
webhook_replay_add (struct webhook_replay *r, const char *app, const char *key, int64_t now,
                    bvm_error_t *err)
{
  cleanup_buf struct buf line = BUF_INIT (REPLAY_LINE_MAX);

  if (job_app_id_problem (app) != NULL || key_problem (key) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "replay key is not valid");
  if (remember (r, app, key, now) < 0)
    return bvm_error (err, ENOMEM, "replay store");
  if (r->path == NULL)
    return 0;
  if (format_line (&line, now, app, key) < 0)
    return bvm_error (err, errno, "replay store");
  /* one write of a whole line to an O_APPEND file; fdatasync so that a
   * crash right after a 202 does not forget the delivery */
  if (fs_write_all (r->fd, line.ptr, line.len) < 0 || fdatasync (r->fd) < 0)
    return bvm_error (err, errno, "append to `%s`", r->path);
  r->file_lines++;
  if (needs_compaction (r))
    return compact (r, now, err);
  return 0;
}

/* --- handling a request -------------------------------------------------------------------- */

static int respond (struct webhook_response *out, int status, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Fill the status and a printable reason; returns 0 (the answer is decided). */
static int
respond (struct webhook_response *out, int status, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  out->status = status;
  copy_printable (out->reason, sizeof out->reason, msg);
  return 0;
}

static bool
app_matches_repo (const struct webhook_app *a, const struct webhook_push *p)
{
  /* forges treat owner/name case-insensitively, and so do their URLs' hosts */
  for (size_t i = 0; i < a->n_match; i++)
    for (size_t k = 0; k < p->n_repo_names; k++)
      if (strcasecmp (a->match[i], p->repo_names[k]) == 0)
        return true;
  return false;
}

static bool
app_has_branch (const struct webhook_app *a, const char *branch)
{
  for (size_t i = 0; i < a->n_branches; i++)
    if (strcmp (a->branches[i], branch) == 0)
      return true;
  return false;
}

/* sha256 hex of "<domain>\0<data>": the domain keeps a hashed delivery id
 * and a hashed body from ever naming the same thing. */
static int
hash_hex (char out[DIGEST_HEX_LEN + 1], const char *domain, const void *data, size_t len,
          bvm_error_t *err)
{
  struct digest_ctx d;
  char full[DIGEST_STR_LEN + 1];

  if (digest_init (&d, err) < 0)
    return -1;
  digest_update (&d, domain, strlen (domain) + 1);
  digest_update (&d, data, len);
  digest_final (&d, full);
  memcpy (out, full + 7, DIGEST_HEX_LEN + 1);
  return 0;
}

/* The job id: "<format>-<delivery>" when the delivery id fits the id
 * grammar, else "<format>_<40 hex of its hash>" (the `_` after the format
 * keeps the two forms apart). Without a delivery id (older GitLab), the
 * body's hash: a redelivery of the same bytes gets the same id. The job's
 * `delivery` field is the id when the request grammar takes it, else
 * "sha256:<hex>" of it, else absent. */
static int
make_ids (char *job_id, size_t id_size, char *delivery_out, size_t dsize, enum webhook_format f,
          const char *delivery, const char *body, size_t body_len, bvm_error_t *err)
{
  const char *name = webhook_format_name (f);
  char hex[DIGEST_HEX_LEN + 1];
  bool simple = delivery != NULL && is_alnum (delivery[0]);

  delivery_out[0] = '\0';
  for (const char *p = delivery; simple && *p; p++)
    if (!(is_alnum (*p) || *p == '.' || *p == '_' || *p == '-'))
      simple = false;
  if (delivery != NULL)
    {
      /* the request's own grammar for `delivery` also takes `:` */
      if (job_delivery_problem (delivery) == NULL)
        snprintf (delivery_out, dsize, "%s", delivery);
    }
  if (simple && snprintf_checked (job_id, id_size, "%s-%s", name, delivery) >= 0
      && job_id_problem (job_id) == NULL)
    return 0;
  if (delivery != NULL)
    {
      if (hash_hex (hex, "delivery", delivery, strlen (delivery), err) < 0)
        return -1;
      if (delivery_out[0] == '\0')
        snprintf (delivery_out, dsize, "sha256:%s", hex);
    }
  else if (hash_hex (hex, "body", body, body_len, err) < 0)
    return -1;
  hex[40] = '\0';
  snprintf (job_id, id_size, "%s_%s", name, hex);
  return 0;
}

/* The pusher's name for `requested_by`: control characters (C0, DEL and
 * the C1 range U+0080-U+009F, which terminals also obey) become `?`, cut to
 * WEBHOOK_REQUESTED_BY_MAX bytes on a UTF-8 boundary (jansson already
 * refused invalid UTF-8). Empty when there is nothing left. */
static void
pusher_name (char *out, size_t size, const char *s)
{
  size_t o = 0;

  for (size_t i = 0; s != NULL && s[i] != '\0' && o + 1 < size; i++)
    {
      unsigned char c = (unsigned char) s[i], next = (unsigned char) s[i + 1];
      if (c == 0xc2 && next >= 0x80 && next <= 0x9f)
        {
          out[o++] = '?';
          i++;
          continue;
        }
      out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char) c;
    }
  /* do not end inside a multibyte sequence */
  if (o > 0 && ((unsigned char) out[o - 1] & 0x80))
    {
      size_t start = o - 1, need;
      unsigned char lead;
      while (start > 0 && ((unsigned char) out[start] & 0xc0) == 0x80)
        start--;
      lead = (unsigned char) out[start];
      need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
      if (o - start < need)
        o = start;
    }
  out[o] = '\0';
}

/* The deploy request as JSON, then through job_parse: the webhook builds
 * no job_request by hand. */
static int
make_job (struct job_request **out, const struct webhook_app *a, const struct webhook_push *p,
          const char *job_id, const char *delivery, int64_t now, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  cleanup_free char *text = NULL;
  char at[40], by[WEBHOOK_REQUESTED_BY_MAX + 1];

  format_rfc3339 (at, sizeof at, now);
  pusher_name (by, sizeof by, p->pusher);
  doc = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", job_id, "app", a->app, "repo",
                   a->repo, "commit", p->after, "ref", p->ref, "trigger", "webhook",
                   "requested_at", at);
  if (doc == NULL || (delivery[0] && json_object_set_new (doc, "delivery", json_string (delivery)))
      || (by[0] && json_object_set_new (doc, "requested_by", json_string (by)))
      || (text = json_dumps (doc, JSON_COMPACT)) == NULL)
    return bvm_error (err, ENOMEM, "making the deploy request");
  return job_parse (out, text, strlen (text), err);
}

static int
check_event (struct webhook_response *out, const struct format_info *fi, const char *event)
{
  char shown[JOB__SHOW_SIZE];

  if (strcmp (event, fi->push) == 0)
    return 1;
  if (strcmp (event, "ping") == 0)
    return respond (out, 200, "pong");
  if (fi->format == WEBHOOK_FORMAT_GITLAB && strcmp (event, "Tag Push Hook") == 0)
    return respond (out, 200, "ignored: tag push");
  return respond (out, 200, "ignored: event `%s` (only push events deploy)",
                  job__show (shown, sizeof shown, event));
}

/* Everything that needs neither the body nor a secret. 1 to go on, 0 when
 * out holds the answer. */
static int
check_request (struct webhook_response *out, const struct webhook_config *wc,
               const struct webhook_request *req, const struct format_info **fip)
{
  const struct format_info *fi;
  const char *event, *ct, *sig, *delivery;
  size_t n;

  if (req->path == NULL || req->method == NULL)
    return respond (out, 400, "bad request");
  if (strcmp (req->path, WEBHOOK_HEALTH_PATH) == 0)
    {
      if (strcmp (req->method, "GET") == 0 || strcmp (req->method, "HEAD") == 0)
        return respond (out, 200, "ok");
      return respond (out, 405, "method not allowed: use GET");
    }
  if (strcmp (req->path, WEBHOOK_PATH) != 0)
    return respond (out, 404, "not found: webhooks go to " WEBHOOK_PATH);
  if (strcmp (req->method, "POST") != 0)
    return respond (out, 405, "method not allowed: use POST");
  if (req->body_too_large || req->body_len > wc->max_body)
    return respond (out, 413, "payload too large: the limit is %zu bytes", wc->max_body);

  out->format = webhook_detect_format (req);
  if ((fi = format_info (out->format)) == NULL)
    return respond (out, 400,
                    "unknown sender: no X-GitHub-Event, X-Gitea-Event, "
                    "X-Forgejo-Event or X-Gitlab-Event header");
  *fip = fi;
  ct = webhook_header (req, "Content-Type", &n);
  if (n > 1 || content_type_problem (ct) != NULL)
    return respond (out, 415, "unsupported content type: send application/json");
  event = webhook_header (req, fi->event, &n);
  if (n != 1)
    return respond (out, 400, "header `%s` is repeated", fi->event);
  if (check_event (out, fi, event) == 0)
    return 0;

  delivery = webhook_header (req, fi->delivery, &n);
  if (n > 1)
    return respond (out, 400, "header `%s` is repeated", fi->delivery);
  if (delivery == NULL && fi->format != WEBHOOK_FORMAT_GITLAB)
    return respond (out, 400, "missing header `%s`", fi->delivery);
  if (delivery != NULL)
    {
      job__show (out->delivery, sizeof out->delivery, delivery);
      if (*delivery == '\0' || strlen (delivery) > DELIVERY_HEADER_MAX)
        return respond (out, 400, "header `%s` must be 1 to %d bytes", fi->delivery,
                        DELIVERY_HEADER_MAX);
    }

  /* the signature's presence and form before the body is parsed: a
   * request that cannot be authentic costs no JSON parse */
  sig = webhook_header (req, fi->signature, &n);
  if (n == 0 || *sig == '\0')
    return respond (out, 401, "missing signature: header `%s`", fi->signature);
  if (n > 1)
    return respond (out, 401, "header `%s` is repeated", fi->signature);
  if (fi->format != WEBHOOK_FORMAT_GITLAB)
    {
      unsigned char ignored[SHA256_LEN];
      const char *hex = signature_hex (fi->format, sig);
      if (hex == NULL || !hex_decode (ignored, sizeof ignored, hex))
        return respond (out, 401, "malformed signature in header `%s`", fi->signature);
    }
  else if (strlen (sig) > WEBHOOK_SECRET_MAX)
    return respond (out, 401, "malformed token in header `%s`", fi->signature);
  return 1;
}

bool
webhook_answer_early (struct webhook_response *out, const struct webhook_config *wc,
                      const struct webhook_request *req)
{
  const struct format_info *fi = NULL;

  memset (out, 0, sizeof *out);
  return check_request (out, wc, req, &fi) == 0;
}

int
webhook_handle (struct webhook_response *out, const struct webhook_config *wc,
                const struct webhook_request *req, const struct webhook_deps *deps,
                bvm_error_t *err)
{
  const struct format_info *fi = NULL;
  cleanup_webhook_push struct webhook_push *p = NULL;
  cleanup_job struct job_request *job = NULL;
  cleanup_error bvm_error_t perr = NULL;
  const struct webhook_app *app, *authentic = NULL, *deploys = NULL;
  const char *sig, *branch;
  char shown[JOB__SHOW_SIZE], delivery[JOB_DELIVERY_MAX + 1];
  char body_key[8 + DIGEST_HEX_LEN + 1], hex[DIGEST_HEX_LEN + 1];
  char after_key[8 + 16 + 1 + JOB_COMMIT_LEN + 1], head_prefix[8 + 16 + 2];
  char head_key[8 + 16 + 2 + 24];
  int64_t now, newest;
  bool candidates = false, duplicate = false, is_branch;
  size_t n;
  int ret;

  memset (out, 0, sizeof *out);
  if (check_request (out, wc, req, &fi) == 0)
    return 0;

  if (webhook_parse_push (&p, fi->format, req->body, req->body_len, wc->max_body, &perr) < 0)
    return respond (out, 400, "malformed payload: %s", bvm_error_msg (&perr));

  /* The payload picks the candidate apps, and only a candidate's secret can
   * authenticate it. Anyone may learn whether a repository name is
   * configured (404 or 401); nothing more is answered before the check. */
  sig = webhook_header (req, fi->signature, &n);
  is_branch = strncmp (p->ref, "refs/heads/", 11) == 0;
  for (size_t i = 0; i < wc->n_apps && deploys == NULL; i++)
    {
      const struct webhook_app *a = &wc->apps[i];
      cleanup_error bvm_error_t serr = NULL;

      if (!app_matches_repo (a, p))
        continue;
      candidates = true;
      if (webhook_verify_signature (fi->format, sig, a->secret, a->secret_len, req->body,
                                    req->body_len, &serr)
          < 0)
        continue;
      if (authentic == NULL)
        authentic = a;
      if (is_branch && app_has_branch (a, p->ref + 11))
        deploys = a;
    }
  if (!candidates)
    return respond (out, 404, "unknown repository `%s`",
                    job__show (shown, sizeof shown, p->repo_names[0]));
  if (authentic == NULL)
    return respond (out, 401, "wrong signature");
  /* several entries may share a repository (one per branch): the one that
   * deploys this branch, else the first that authenticated it */
  app = deploys ? deploys : authentic;

  snprintf (out->app, sizeof out->app, "%s", app->app);
  /* what git itself would refuse is refused before it is looked at */
  if (job_ref_problem (p->ref) != NULL)
    return respond (out, 400, "field `ref` is not a valid ref, got `%s`",
                    job__show (shown, sizeof shown, p->ref));
  if (p->tag)
    return respond (out, 200, "ignored: tag push");
  if (p->deleted)
    return respond (out, 200, "ignored: branch deleted");
  if (!is_branch)
    return respond (out, 200, "ignored: ref `%s` is not a branch",
                    job__show (shown, sizeof shown, p->ref));
  branch = p->ref + 11;
  if (!app_has_branch (app, branch))
    return respond (out, 200, "ignored: branch `%s` does not deploy",
                    job__show (shown, sizeof shown, branch));
  if (job_commit_problem (p->after) != NULL)
    return respond (out, 400, "field `after` must be 40 lowercase hex digits, got `%s`",
                    job__show (shown, sizeof shown, p->after));

  ret = make_ids (out->job_id, sizeof out->job_id, delivery, sizeof delivery, fi->format,
                  webhook_header (req, fi->delivery, NULL), req->body, req->body_len, err);
  if (ret == 0)
    ret = hash_hex (hex, "body", req->body, req->body_len, err);
  if (ret < 0)
    {
      respond (out, 500, "internal error");
      return ret;
    }
  /* The delivery header is not signed: a captured body replayed under a
   * fresh delivery id is caught by the body's hash (a real push always has
   * a new body: before and after differ), and a push of a commit this
   * branch of this app already had, by the commit. Every key belongs to
   * the app that authenticated the body, so no other app's pushes can
   * evict it (issue 11 item 8). */
  snprintf (body_key, sizeof body_key, "body:%s", hex);
  if ((ret = hash_hex (hex, "ref", p->ref, strlen (p->ref), err)) < 0)
    {
      respond (out, 500, "internal error");
      return ret;
    }
  snprintf (after_key, sizeof after_key, "after:%.16s:%s", hex, p->after);
  now = deps->now ? deps->now : wall_s ();
  if (webhook_replay_seen (deps->replay, app->app, out->job_id, now)
      || webhook_replay_seen (deps->replay, app->app, body_key, now))
    return respond (out, 200, "duplicate delivery: already received");
  if (webhook_replay_seen (deps->replay, app->app, after_key, now))
    return respond (out, 200, "ignored: `%s` already had commit %.12s (a replayed push?)",
                    job__show (shown, sizeof shown, p->ref), p->after);
  /* Past the span the keys are gone; what stays is the newest head commit
   * time the branch accepted. A push whose head is older than that by more
   * than the span is an old push replayed, not a rebase or a merge of a
   * branch of last month (commit dates are the author's, so only a wide
   * margin is safe). */
  snprintf (head_prefix, sizeof head_prefix, "head:%.16s:", hex);
  newest = webhook_replay_newest (deps->replay, app->app, head_prefix, now);
  if (p->head_time > 0 && newest > 0 && p->head_time < newest - WEBHOOK_REPLAY_SPAN_S)
    return respond (out, 200,
                    "ignored: the pushed commit is more than %d days older than the newest "
                    "push of `%s` (a replayed push?)",
                    WEBHOOK_REPLAY_SPAN_S / 86400, job__show (shown, sizeof shown, p->ref));

  ret = make_job (&job, app, p, out->job_id, delivery, now, &perr);
  if (ret < 0)
    return respond (out, 400, "cannot make a deploy request: %s", bvm_error_msg (&perr));
  if (deps->enqueue == NULL)
    {
      respond (out, 500, "internal error");
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "webhook: no enqueue callback");
    }
  ret = deps->enqueue (deps->ctx, job, &duplicate, err);
  if (ret < 0)
    {
      /* 503: the sender may deliver again later, and nothing was recorded */
      respond (out, 503, "queue unavailable, try again later");
      return bvm_error_wrap (err, "enqueueing `%s`", out->job_id);
    }
  if (deps->replay != NULL)
    {
      cleanup_error bvm_error_t rerr = NULL;
      if (webhook_replay_add (deps->replay, app->app, out->job_id, now, &rerr) < 0
          || webhook_replay_add (deps->replay, app->app, body_key, now, &rerr) < 0
          || webhook_replay_add (deps->replay, app->app, after_key, now, &rerr) < 0
          || (p->head_time > 0
              && snprintf (head_key, sizeof head_key, "%s%lld", head_prefix,
                           (long long) p->head_time)
                     > 0
              && webhook_replay_add (deps->replay, app->app, head_key, now, &rerr) < 0))
        copy_printable (out->warning, sizeof out->warning, bvm_error_msg (&rerr));
    }
  if (duplicate)
    return respond (out, 200, "duplicate delivery: already queued");
  return respond (out, 202, "enqueued");
}
