/* fuzz_regtoken.c - the token server's decisions: the Authorization header,
 * the job ticket and the scopes of one token request (regtoken.h)
 *
 * An input is lines: the first is the Authorization header's value, every
 * other line one `scope` parameter (which may hold several scopes,
 * space-separated). A mutated ticket no longer matches its mac, so a first
 * line `TICKET USER PAYLOAD` is replaced here with `Basic
 * base64(USER:bvt1.<b64url PAYLOAD>.<mac>)`, the mac computed with the
 * fuzz key: inputs of that form explore the payload parser behind the mac.
 * The server runs the builtin policies; the request time is fixed.
 *
 * Properties checked on every input:
 *   - the status is 200, 400 or 401, the reason one printable line and the
 *     body JSON; a refusal carries no token;
 *   - a token is granted only with a ticket whose mac is right (an
 *     independent HMAC here) and only for its job (`sub`);
 *   - its `access` holds only `pull` and `push` on repositories, and, by an
 *     independent oracle of the builtin policies, push only on
 *     `apps/<app>`, pull only there or under `base/`, and only what a
 *     scope asked for;
 *   - it expires no later than the ticket and than token_seconds;
 *   - its signature verifies with the public key and its kid is the
 *     signer's.
 */
#include "fuzz.h"

#include "policy.h"
#include "regtoken.h"
#include "util.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#define NOW 1800000000
#define TOKEN_SECONDS 300
#define SERVICE "registry.fuzz"
#define MAX_LINES 40

static const unsigned char KEY[32] = "buildvm-fuzz-ticket-key-0123456";
static struct regtoken_settings g_st;
static struct regtoken_signer *g_signer;
static EVP_PKEY *g_pkey;
static struct policy *g_tmpl, *g_boundary;
static struct regtoken_server *g_server;

static void
setup (void)
{
  struct regtoken_server_opts o = { 0 };
  bvm_error_t err = NULL;
  BIO *b = BIO_new (BIO_s_mem ());
  char *pem;
  long n;

  g_pkey = EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-256");
  FUZZ_CHECK (g_pkey != NULL && b != NULL);
  FUZZ_CHECK (PEM_write_bio_PrivateKey (b, g_pkey, NULL, NULL, 0, NULL, NULL) == 1);
  n = BIO_get_mem_data (b, &pem);
  FUZZ_CHECK (regtoken_signer_from_pem (&g_signer, pem, (size_t) n, &err) == 0);
  BIO_free (b);
  g_st.issuer = (char *) "buildvm-fuzz";
  g_st.service = (char *) SERVICE;
  g_st.token_seconds = TOKEN_SECONDS;
  FUZZ_CHECK (policy_load_builtin (&g_tmpl, false, &err) == 0);
  FUZZ_CHECK (policy_load_builtin (&g_boundary, true, &err) == 0);
  o.settings = &g_st;
  o.signer = g_signer;
  o.ticket_key = KEY;
  o.ticket_key_len = sizeof KEY;
  o.role_template = g_tmpl;
  o.boundary = g_boundary;
  FUZZ_CHECK (regtoken_server_new (&g_server, &o, &err) == 0);
}

static char *
b64 (const void *data, size_t len, bool url)
{
  char *s = NULL;
  if (url)
    {
      FUZZ_CHECK (regtoken__b64url_encode (&s, data, len) == 0);
      return s;
    }
  s = malloc (len / 3 * 4 + 8);
  FUZZ_CHECK (s != NULL);
  EVP_EncodeBlock ((unsigned char *) s, data, (int) len);
  return s;
}

static void
mac_of (unsigned char out[32], const char *s, size_t n)
{
  unsigned int len = 0;
  FUZZ_CHECK (HMAC (EVP_sha256 (), KEY, sizeof KEY, (const unsigned char *) s, n, out, &len)
              != NULL);
}

/* `TICKET USER PAYLOAD` -> a Basic header with a right mac */
static char *
resign (const char *line)
{
  const char *user = line + 7, *sp = strchr (user, ' ');
  char *payload, *head = NULL, *m, *pair = NULL, *enc, *out = NULL;
  unsigned char mac[32];

  if (sp == NULL)
    return strdup (line);
  payload = b64 (sp + 1, strlen (sp + 1), true);
  FUZZ_CHECK (asprintf (&head, "bvt1.%s", payload) > 0);
  mac_of (mac, head, strlen (head));
  m = b64 (mac, sizeof mac, true);
  FUZZ_CHECK (asprintf (&pair, "%.*s:%s.%s", (int) (sp - user), user, head, m) > 0);
  enc = b64 (pair, strlen (pair), false);
  FUZZ_CHECK (asprintf (&out, "Basic %s", enc) > 0);
  free (payload), free (head), free (m), free (pair), free (enc);
  return out;
}

/* The ticket inside a Basic header, if its mac is right (independently of
 * regtoken.c): its user and payload JSON. */
static json_t *
ticket_payload (const char *authz, char *user, size_t usize)
{
  unsigned char dec[8192], mac[32];
  char *colon, *dot, *m;
  int n;
  json_t *j = NULL;

  if (authz == NULL || strncmp (authz, "Basic ", 6) != 0 || strlen (authz + 6) > 8000)
    return NULL;
  n = EVP_DecodeBlock (dec, (const unsigned char *) authz + 6, (int) strlen (authz + 6));
  if (n <= 0)
    return NULL;
  dec[n] = '\0';
  if ((colon = strchr ((char *) dec, ':')) == NULL)
    return NULL;
  *colon = '\0';
  if (strlen ((char *) dec) >= usize)
    return NULL;
  memcpy (user, dec, strlen ((char *) dec) + 1);
  if ((dot = strrchr (colon + 1, '.')) == NULL)
    return NULL;
  mac_of (mac, colon + 1, (size_t) (dot - colon - 1));
  m = b64 (mac, sizeof mac, true);
  if (strncmp (m, dot + 1, 43) == 0 && strncmp (colon + 1, "bvt1.", 5) == 0)
    {
      unsigned char *pl = NULL;
      size_t pl_len = 0;
      if (regtoken__b64url_decode (&pl, &pl_len, colon + 6, (size_t) (dot - colon - 6), 4096) == 0)
        {
          j = json_loadb ((const char *) pl, pl_len, 0, NULL);
          free (pl);
        }
    }
  free (m);
  return j;
}

static json_t *
jwt_part (const char *jwt, int idx)
{
  const char *p = jwt;
  unsigned char *dec = NULL;
  size_t len = 0;
  json_t *j;

  for (int i = 0; i < idx; i++)
    p = strchr (p, '.') + 1;
  FUZZ_CHECK (regtoken__b64url_decode (&dec, &len, p, strcspn (p, "."), 65536) == 0);
  j = json_loadb ((const char *) dec, len, 0, NULL);
  free (dec);
  FUZZ_CHECK (j != NULL);
  return j;
}

static bool
verifies (const char *jwt)
{
  const char *dot = strrchr (jwt, '.');
  unsigned char *sig = NULL, *der = NULL;
  size_t len = 0;
  ECDSA_SIG *es = ECDSA_SIG_new ();
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  int dlen;
  bool ok;

  FUZZ_CHECK (regtoken__b64url_decode (&sig, &len, dot + 1, strlen (dot + 1), 128) == 0);
  FUZZ_CHECK (len == 64);
  ECDSA_SIG_set0 (es, BN_bin2bn (sig, 32, NULL), BN_bin2bn (sig + 32, 32, NULL));
  dlen = i2d_ECDSA_SIG (es, &der);
  ok = EVP_DigestVerifyInit (md, NULL, EVP_sha256 (), NULL, g_pkey) == 1
       && EVP_DigestVerify (md, der, (size_t) dlen, (const unsigned char *) jwt,
                            (size_t) (dot - jwt))
              == 1;
  OPENSSL_free (der);
  ECDSA_SIG_free (es);
  EVP_MD_CTX_free (md);
  free (sig);
  return ok;
}

/* did one of the scope lines ask `action` on `name`? */
static bool
asked (char *const *lines, size_t n, const char *name, const char *action)
{
  for (size_t i = 0; i < n; i++)
    {
      const char *p = lines[i];
      while (*p)
        {
          size_t k = strcspn (p, " ");
          struct regtoken_scope sc;
          char one[REGTOKEN_SCOPE_MAX + 1];
          if (k > 0 && k <= REGTOKEN_SCOPE_MAX)
            {
              memcpy (one, p, k);
              one[k] = '\0';
              if (regtoken_scope_problem (&sc, one) == NULL && strcmp (sc.type, "repository") == 0
                  && strcmp (sc.name, name) == 0
                  && (strcmp (action, "pull") == 0 ? sc.pull : sc.push))
                return true;
            }
          p += k;
          while (*p == ' ')
            p++;
        }
    }
  return false;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static bool ready;
  char *authz = NULL, *lines[MAX_LINES];
  struct regtoken_request rq = { 0 };
  struct regtoken_response res;
  bvm_error_t err = NULL;
  size_t n = 0;
  char user[512] = "";
  json_t *ticket;

  if (!ready)
    {
      setup ();
      ready = true;
    }
  {
    char *all = fuzz_cstr (data, size), *p = all, *first = strsep (&p, "\n");
    authz = strncmp (first, "TICKET ", 7) == 0 ? resign (first) : strdup (first);
    while (p != NULL && n < MAX_LINES)
      lines[n++] = strdup (strsep (&p, "\n"));
    free (all);
  }

  rq.service = SERVICE;
  rq.scopes = (const char *const *) lines;
  rq.n_scopes = n;
  rq.authorization = authz;
  rq.now = NOW;
  if (regtoken_handle (&res, g_server, &rq, &err) < 0)
    fuzz_check_error (-1, &err);
  else
    {
      json_t *body = json_loads (res.body, 0, NULL);
      FUZZ_CHECK (body != NULL);
      FUZZ_CHECK (res.status == 200 || res.status == 400 || res.status == 401);
      for (const unsigned char *p = (const unsigned char *) res.reason; *p; p++)
        FUZZ_CHECK (*p >= 0x20 && *p < 0x7f);
      if (res.status != 200)
        FUZZ_CHECK (json_object_get (body, "token") == NULL);
      else
        {
          const char *tok = json_string_value (json_object_get (body, "token"));
          json_t *hdr, *claims, *access, *e;
          const char *app, *job;
          char sub[512], own[128];
          size_t i;

          ticket = ticket_payload (authz, user, sizeof user);
          FUZZ_CHECK (ticket != NULL); /* granted only behind a right mac */
          app = json_string_value (json_object_get (ticket, "app"));
          job = json_string_value (json_object_get (ticket, "job"));
          FUZZ_CHECK (app != NULL && job != NULL);
          FUZZ_CHECK (tok != NULL && verifies (tok));
          hdr = jwt_part (tok, 0);
          FUZZ_CHECK (strcmp (json_string_value (json_object_get (hdr, "kid")),
                              regtoken_signer_kid (g_signer))
                      == 0);
          claims = jwt_part (tok, 1);
          snprintf (sub, sizeof sub, "job:%s/%s", app, job);
          FUZZ_CHECK (strcmp (json_string_value (json_object_get (claims, "sub")), sub) == 0);
          snprintf (sub, sizeof sub, "%s/%s", app, job);
          FUZZ_CHECK (strcmp (user, sub) == 0);
          FUZZ_CHECK (json_integer_value (json_object_get (claims, "exp")) <= NOW + TOKEN_SECONDS);
          FUZZ_CHECK (json_integer_value (json_object_get (claims, "exp"))
                      <= json_integer_value (json_object_get (ticket, "exp")));
          snprintf (own, sizeof own, "apps/%s", app);
          access = json_object_get (claims, "access");
          json_array_foreach (access, i, e)
            {
              const char *name = json_string_value (json_object_get (e, "name"));
              size_t k;
              json_t *a;
              FUZZ_CHECK (strcmp (json_string_value (json_object_get (e, "type")), "repository")
                          == 0);
              json_array_foreach (json_object_get (e, "actions"), k, a)
                {
                  const char *act = json_string_value (a);
                  if (strcmp (act, "push") == 0)
                    FUZZ_CHECK (strcmp (name, own) == 0);
                  else
                    FUZZ_CHECK (strcmp (act, "pull") == 0
                                && (strcmp (name, own) == 0 || strncmp (name, "base/", 5) == 0));
                  FUZZ_CHECK (asked (lines, n, name, act));
                }
            }
          json_decref (hdr);
          json_decref (claims);
          json_decref (ticket);
        }
      json_decref (body);
    }
  regtoken_response_dispose (&res);
  /* the ticket checker on the raw first line, as a password */
  {
    struct regtoken_job j;
    int r = regtoken_ticket_verify (&j, KEY, sizeof KEY, "a/b", authz, NOW, &err);
    if (r < 0)
      fuzz_check_error (r, &err);
  }
  free (authz);
  for (size_t i = 0; i < n; i++)
    free (lines[i]);
  return 0;
}
