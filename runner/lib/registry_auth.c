/* registry_auth.c - who we are to a registry: credentials files, the
 * WWW-Authenticate challenge, Basic, and Bearer tokens fetched from the
 * realm and cached per scope. See registry.h and registry_int.h. */
#include "registry_int.h"
#include "buf.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_REPLY_MAX (64u << 10) /* a token server's JSON reply */
#define TOKEN_MAX 16384             /* one bearer token */
#define CREDENTIALS_MAX (64u << 10)

/* --- credentials ------------------------------------------------------------------------- */

static void
wipe_free (char *s)
{
  if (s != NULL)
    {
      mem_wipe (s, strlen (s));
      free (s);
    }
}

void
registry_credentials_free (struct registry_credentials *cr)
{
  if (cr == NULL)
    return;
  wipe_free (cr->username);
  wipe_free (cr->password);
  wipe_free (cr->token);
  free (cr);
}

/* Overwrite jansson's copy of every string in the document before it is
 * freed. jansson's API hands out const strings, but they live in memory it
 * malloc'd for the value and nothing else refers to them once we are done. */
static void
wipe_json_strings (json_t *j)
{
  const char *k;
  json_t *v;
  size_t i;

  if (json_is_string (j))
    mem_wipe ((char *) json_string_value (j), json_string_length (j));
  else if (json_is_object (j))
    {
      json_object_foreach (j, k, v)
        wipe_json_strings (v);
    }
  else if (json_is_array (j))
    {
      json_array_foreach (j, i, v)
        wipe_json_strings (v);
    }
}

static int
read_private (char **out, size_t *len, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  char *data;
  size_t used;
  int ret;

  if (fd < 0)
    return bvm_error (err, errno, "open registry credentials `%s`", path);
  if (fs_check_private_fd (&st, fd, path, NULL, err) < 0)
    return -1;
  if (st.st_size > REGISTRY_CREDENTIALS_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %d bytes", path,
                           REGISTRY_CREDENTIALS_MAX);
  /* one allocation of the final size: growing with realloc would leave
   * unwiped copies of the secret behind */
  data = malloc ((size_t) st.st_size + 2);
  if (data == NULL)
    return bvm_error (err, ENOMEM, "registry credentials");
  ret = fs_read_sized (fd, data, (size_t) st.st_size, &used);
  if (ret != 0)
    {
      int e = errno;
      mem_wipe (data, used);
      free (data);
      if (ret < 0)
        return bvm_error (err, e, "read `%s`", path);
      return bvm_error_code (err, BVM_E_IO, 0, "`%s` changed while being read", path);
    }
  data[used] = '\0';
  *out = data;
  *len = used;
  return 0;
}

static int
dup_secret (char **dst, const char *src, bvm_error_t *err)
{
  if (src == NULL)
    return 0;
  *dst = strdup (src);
  return *dst == NULL ? bvm_error (err, ENOMEM, "registry credentials") : 0;
}

int
registry_credentials_load (struct registry_credentials **out, const char *path, bvm_error_t *err)
{
  static const char *const keys[] = { "username", "password", "token", NULL };
  struct registry_credentials *cr = NULL;
  const char *user = NULL, *pass = NULL, *token = NULL;
  char *data = NULL;
  size_t len = 0;
  json_t *doc = NULL;
  char what[PATH_MAX + 8];
  int ret;

  *out = NULL;
  if (path == NULL)
    return 0;
  ret = read_private (&data, &len, path, err);
  if (ret < 0)
    return ret;
  snprintf (what, sizeof what, "`%s`", path);
  ret = jsonx_parse (&doc, data, len, REGISTRY_CREDENTIALS_MAX, what, err);
  mem_wipe (data, len);
  free (data);
  if (ret < 0)
    /* jansson's message quotes the text near the error: the secret */
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s is not a valid JSON object (details withheld: it holds secrets)",
                           what);
  if (!json_is_object (doc))
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "%s must be a JSON object", what);
  if (ret == 0)
    ret = jsonx_check_keys (doc, keys, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&user, doc, "username", false, 256, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&pass, doc, "password", false, 4096, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&token, doc, "token", false, 8192, "", err);
  if (ret < 0)
    ret = bvm_error_wrap (err, "%s", what);
  else if (!((user && pass && !token) || (!user && !pass && token)))
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "%s must have either `username` and `password`, or `token`", what);
  else if ((user && (user[0] == '\0' || text_problem (user, strlen (user)) != NULL))
           || (pass && pass[0] == '\0') || (token && token[0] == '\0'))
    ret = bvm_error_code (err, BVM_E_INVALID, 0,
                          "%s has an empty value or a user name with control characters", what);
  if (ret == 0)
    {
      cr = calloc (1, sizeof *cr);
      if (cr == NULL)
        ret = bvm_error (err, ENOMEM, "registry credentials");
      if (ret == 0)
        ret = dup_secret (&cr->username, user, err);
      if (ret == 0)
        ret = dup_secret (&cr->password, pass, err);
      if (ret == 0)
        ret = dup_secret (&cr->token, token, err);
    }
  if (doc != NULL)
    {
      wipe_json_strings (doc);
      json_decref (doc);
    }
  if (ret < 0)
    {
      registry_credentials_free (cr);
      return ret;
    }
  *out = cr;
  return 0;
}

/* registry_options.credentials_file */
int
registry__credentials_load (struct registry *r, const char *path, bvm_error_t *err)
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
    goto cleanup;
  if (!json_is_object (doc))
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "registry credentials file `%s` is not an object",
                      path);
      goto cleanup;
    }
  if (jsonx_check_keys (doc, allowed, "", err) < 0
      || jsonx_get_str (&user, doc, "username", false, 1024, "", err) < 0
      || jsonx_get_str (&pass, doc, "password", false, 4096, "", err) < 0
      || jsonx_get_str (&tok, doc, "token", false, TOKEN_MAX, "", err) < 0)
    {
      bvm_error_wrap (err, "registry credentials file `%s`", path);
      goto cleanup;
    }
  if (tok != NULL ? (user != NULL || pass != NULL) : (user == NULL || pass == NULL))
    {
      bvm_error_code (
          err, BVM_E_INVALID, 0,
          "registry credentials file `%s` needs either username and password or a token", path);
      goto cleanup;
    }
  if (tok)
    {
      for (const char *p = tok; *p; p++)
        if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
          {
            bvm_error_code (err, BVM_E_INVALID, 0,
                            "registry credentials file `%s`: the token has invalid characters",
                            path);
            goto cleanup;
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
      goto cleanup;
    }
  ret = 0;
cleanup:
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

static void
token_clear (struct token *t)
{
  free (t->scope);
  http_secret_free (&t->value);
  t->scope = NULL;
  t->expires_ms = 0;
}

void
registry__auth_dispose (struct registry *r)
{
  for (size_t i = 0; i < MAX_TOKENS; i++)
    token_clear (&r->tokens[i]);
  http_secret_free (&r->username);
  http_secret_free (&r->password);
  http_secret_free (&r->static_token);
  free (r->realm);
  free (r->service);
  r->realm = r->service = NULL;
}


/* --- challenges and tokens ------------------------------------------------------ */

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
  if (s == NULL)
    return 0;
  if (done == NULL)
    done = "";
  while (*s)
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
          for (const char *d = done; *d;)
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
  esc = curl_easy_escape (r->http.curl, r->service ? r->service : "", 0);
  if (esc == NULL || buf_adds (&u, esc) < 0)
    {
      curl_free (esc);
      return bvm_error_code (err, BVM_E_LIMIT, 0, "token request URL is too long");
    }
  curl_free (esc);
  if (add_scopes (&u, r->http.curl, scope, NULL, err) < 0
      || add_scopes (&u, r->http.curl, extra, scope, err) < 0)
    return -1;

  http_req_init (&q, &r->http, "GET", buf_cstr (&u));
  q.username = r->username; /* NULL: anonymous */
  q.password = r->password;
  q.body_max = TOKEN_REPLY_MAX;
  r->stats.token_requests++;
  ret = http_perform (&r->http, &q, retryable, err);
  if (ret < 0)
    {
      http_req_dispose (&q);
      return bvm_error_wrap (err, "getting a registry token");
    }
  if (q.status == 401 || q.status == 403)
    {
      char m[512], detail[300];
      /* the token server's reason, cleaned to one line (buildvm
       * token-server's never quotes the ticket) */
      registry__error_detail (detail, sizeof detail, &q);
      ret = bvm_error_code (
          err, BVM_E_DENIED, 0,
          "authentication failed for `%s`: the token server `%s` returned HTTP %ld "
          "(%s)%s",
          r->url, http_url_for_msg (m, sizeof m, r->realm), q.status,
          r->username ? "wrong credentials?" : "no credentials given", detail);
      http_req_dispose (&q);
      return ret;
    }
  if (q.status != 200)
    {
      registry__status_error (r, &q, retryable, err);
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
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "token reply: the token has invalid characters");
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
  http_secret_free (&q->authz);
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

  q->username = q->password = NULL;
  http_secret_free (&q->authz);
  if (r->static_token)
    return set_bearer (q, r->static_token, err);
  switch (r->scheme)
    {
    case AUTH_NONE: return 0;
    case AUTH_BASIC:
      q->username = r->username;
      q->password = r->password;
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

int
registry__request (struct registry *r, struct http_req *q, bool *retryable, bvm_error_t *err)
{
  struct challenge ch;
  char m[512];

  if (auth_prepare (r, q, NULL, retryable, err) < 0)
    return -1;
  for (int round = 0;; round++)
    {
      bool sent_auth = q->username != NULL || q->authz != NULL;
      int scheme = AUTH_NONE;

      if (http_perform (&r->http, q, retryable, err) < 0)
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
  http_url_for_msg (m, sizeof m, q->url);
  if (q->status == 401)
    {
      char detail[300];
      registry__error_detail (detail, sizeof detail, q);
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "authentication failed for `%s`: %s `%s` returned HTTP 401%s", r->url,
                             q->method, m, detail);
    }
  if (q->status == 403 || q->status == 429 || q->status >= 500)
    return registry__status_error (r, q, retryable, err);
  return 0;
}
