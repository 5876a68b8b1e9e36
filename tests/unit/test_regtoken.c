/* test_regtoken.c - job tickets, JWTs for the registry and the token
 * server's decisions (regtoken.h)
 *
 * Independent of regtoken.c where it matters: the kid is computed with the
 * openssl and coreutils command line from libtrust's definition, signatures
 * are verified with OpenSSL's own verifier (ES256's r || s turned back into
 * DER here), and hostile tickets are made with HMAC computed here.
 */
#include "support.h"

#include "policy.h"
#include "regtoken.h"
#include "util.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define NOW 1800000000
#define SERVICE "registry.test"
#define ISSUER "buildvm-test"

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcde";

/* --- helpers --------------------------------------------------------------------------- */

static char *
pem_of (EVP_PKEY *pkey)
{
  BIO *b = BIO_new (BIO_s_mem ());
  char *data, *out;
  long n;

  assert_non_null (b);
  assert_int_equal (PEM_write_bio_PrivateKey (b, pkey, NULL, NULL, 0, NULL, NULL), 1);
  n = BIO_get_mem_data (b, &data);
  out = strndup (data, (size_t) n);
  BIO_free (b);
  return out;
}

static EVP_PKEY *
keygen (const char *type, const char *param)
{
  EVP_PKEY *k;
  if (strcmp (type, "RSA") == 0)
    k = EVP_PKEY_Q_keygen (NULL, NULL, "RSA", (size_t) atoi (param));
  else if (strcmp (type, "EC") == 0)
    k = EVP_PKEY_Q_keygen (NULL, NULL, "EC", param);
  else
    k = EVP_PKEY_Q_keygen (NULL, NULL, type);
  assert_non_null (k);
  return k;
}

static struct regtoken_signer *
signer_of (EVP_PKEY *pkey)
{
  struct regtoken_signer *s = NULL;
  bvm_error_t err = NULL;
  char *pem = pem_of (pkey);
  assert_ok (regtoken_signer_from_pem (&s, pem, strlen (pem), &err), &err);
  free (pem);
  return s;
}

static struct regtoken_job
a_job (const char *app, const char *id, int64_t exp)
{
  struct regtoken_job j;
  memset (&j, 0, sizeof j);
  snprintf (j.app, sizeof j.app, "%s", app);
  snprintf (j.id, sizeof j.id, "%s", id);
  snprintf (j.commit, sizeof j.commit, "%s", COMMIT);
  snprintf (j.ref, sizeof j.ref, "refs/heads/main");
  j.expires_at = exp;
  return j;
}

static char *
b64url (const void *data, size_t len)
{
  char *s = NULL;
  assert_int_equal (regtoken__b64url_encode (&s, data, len), 0);
  return s;
}

/* "bvt1.<payload>.<mac>" with a payload of our choosing and a right mac */
static char *
forge (const char *payload_b64)
{
  unsigned char mac[32];
  unsigned int mlen = 0;
  char *head = NULL, *m, *out = NULL;

  assert_true (asprintf (&head, "bvt1.%s", payload_b64) > 0);
  HMAC (EVP_sha256 (), KEY, sizeof KEY, (const unsigned char *) head, strlen (head), mac, &mlen);
  m = b64url (mac, mlen);
  assert_true (asprintf (&out, "%s.%s", head, m) > 0);
  free (head);
  free (m);
  return out;
}

static char *
forge_json (const char *json)
{
  char *p = b64url (json, strlen (json));
  char *t = forge (p);
  free (p);
  return t;
}

/* decode one part of a JWT */
static json_t *
jwt_part (const char *jwt, int idx)
{
  const char *p = jwt;
  unsigned char *dec = NULL;
  size_t n, len = 0;
  json_t *j;

  for (int i = 0; i < idx; i++)
    p = strchr (p, '.') + 1;
  n = strcspn (p, ".");
  assert_int_equal (regtoken__b64url_decode (&dec, &len, p, n, 65536), 0);
  j = json_loadb ((const char *) dec, len, 0, NULL);
  free (dec);
  assert_non_null (j);
  return j;
}

/* OpenSSL verifies a JWT's signature with the public half of pkey */
static bool
jwt_verifies (const char *jwt, EVP_PKEY *pkey, bool es256)
{
  const char *dot2 = strrchr (jwt, '.');
  unsigned char *sig = NULL, *der = NULL;
  size_t sig_len = 0;
  int der_len;
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  bool ok;

  assert_int_equal (regtoken__b64url_decode (&sig, &sig_len, dot2 + 1, strlen (dot2 + 1), 4096),
                    0);
  if (es256)
    {
      ECDSA_SIG *es = ECDSA_SIG_new ();
      assert_int_equal (sig_len, 64);
      ECDSA_SIG_set0 (es, BN_bin2bn (sig, 32, NULL), BN_bin2bn (sig + 32, 32, NULL));
      der_len = i2d_ECDSA_SIG (es, &der);
      ECDSA_SIG_free (es);
      free (sig);
      sig = malloc ((size_t) der_len);
      memcpy (sig, der, (size_t) der_len);
      OPENSSL_free (der);
      sig_len = (size_t) der_len;
    }
  ok = EVP_DigestVerifyInit (md, NULL, EVP_sha256 (), NULL, pkey) == 1
       && EVP_DigestVerify (md, sig, sig_len, (const unsigned char *) jwt, (size_t) (dot2 - jwt))
              == 1;
  EVP_MD_CTX_free (md);
  free (sig);
  return ok;
}

/* --- base64url ------------------------------------------------------------------------- */

static void
test_b64url_strict (void **state)
{
  unsigned char *d = NULL;
  size_t n = 0;
  char *s;
  (void) state;

  s = b64url ("\xfb\xff", 2);
  assert_string_equal (s, "-_8");
  assert_int_equal (regtoken__b64url_decode (&d, &n, s, strlen (s), 16), 0);
  assert_int_equal (n, 2);
  assert_memory_equal (d, "\xfb\xff", 2);
  free (d);
  free (s);
  /* padding, the standard alphabet, a length of 4n+1, trailing bits, a cap */
  assert_int_equal (regtoken__b64url_decode (&d, &n, "YQ==", 4, 16), -1);
  assert_int_equal (regtoken__b64url_decode (&d, &n, "+/8", 3, 16), -1);
  assert_int_equal (regtoken__b64url_decode (&d, &n, "YWJjZ", 5, 16), -1);
  assert_int_equal (regtoken__b64url_decode (&d, &n, "YR", 2, 16), -1); /* "YQ" is canonical */
  assert_int_equal (regtoken__b64url_decode (&d, &n, "YWJjZGVm", 8, 5), -1);
  assert_int_equal (regtoken__b64url_decode (&d, &n, "", 0, 5), 0);
  assert_int_equal (n, 0);
  free (d);
}

/* --- tickets --------------------------------------------------------------------------- */

static void
test_ticket_round_trip (void **state)
{
  struct regtoken_job j = a_job ("app-a", "job-1", NOW + 600), got;
  char *ticket = NULL, *user = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (regtoken_ticket_mint (&ticket, &user, KEY, sizeof KEY, &j, &err), &err);
  assert_string_equal (user, "app-a/job-1");
  assert_true (strncmp (ticket, "bvt1.", 5) == 0);
  assert_ok (regtoken_ticket_verify (&got, KEY, sizeof KEY, user, ticket, NOW, &err), &err);
  assert_string_equal (got.app, "app-a");
  assert_string_equal (got.id, "job-1");
  assert_string_equal (got.commit, COMMIT);
  assert_string_equal (got.ref, "refs/heads/main");
  assert_int_equal (got.expires_at, NOW + 600);

  /* expired at exp, not a second later */
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, user, ticket, NOW + 600, &err),
                     &err, "expired");
  /* the user must name the ticket's job */
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "app-b/job-1", ticket, NOW,
                                             &err),
                     &err, "does not name");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, NULL, ticket, NOW, &err), &err,
                     "does not name");
  /* another key */
  {
    unsigned char other[32];
    memcpy (other, KEY, sizeof other);
    other[0] ^= 1;
    assert_fails_with (regtoken_ticket_verify (&got, other, sizeof other, user, ticket, NOW, &err),
                       &err, "wrong mac");
  }
  /* one changed character of the mac, of the payload */
  {
    char *t = strdup (ticket);
    size_t n = strlen (t);
    t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
    assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, user, t, NOW, &err), &err,
                       "wrong mac");
    strcpy (t, ticket);
    t[6] = t[6] == 'A' ? 'B' : 'A';
    assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, user, t, NOW, &err), &err,
                       "wrong mac");
    free (t);
  }
  /* the message never quotes the ticket */
  regtoken_ticket_verify (&got, KEY, sizeof KEY, "app-b/job-1", ticket, NOW, &err);
  assert_null (strstr (bvm_error_msg (&err), ticket + 5));
  bvm_error_free (&err);
  free (ticket);
  free (user);
}

static void
test_ticket_hostile (void **state)
{
  struct regtoken_job got;
  bvm_error_t err = NULL;
  char big[REGTOKEN_TICKET_MAX + 16];
  char *t;
  (void) state;

  memset (big, 'A', sizeof big - 1);
  memcpy (big, "bvt1.", 5);
  big[sizeof big - 1] = '\0';
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", big, NOW, &err), &err,
                     "size cap");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", "", NOW, &err), &err,
                     "not a buildvm job ticket");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", "bvt2.e30.AAAA", NOW,
                                             &err),
                     &err, "not a buildvm job ticket");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", "bvt1.e30", NOW, &err),
                     &err, "malformed");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", "bvt1.e30.short", NOW,
                                             &err),
                     &err, "malformed");

  /* a right mac over hostile payloads: bad base64, not JSON, not a ticket */
  t = forge ("!!!!");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", t, NOW, &err), &err,
                     "not base64url");
  free (t);
  t = forge ("YWJjZ");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", t, NOW, &err), &err,
                     "not base64url");
  free (t);
  t = forge_json ("not json");
  assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", t, NOW, &err), &err,
                     "not a ticket");
  free (t);
  {
    static const char *const bad[] = {
      /* an extra key, a missing one, wrong types, fields outside their grammar */
      "{\"app\":\"a\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":1900000000,\"admin\":true}",
      "{\"app\":\"a\",\"job\":\"b\",\"commit\":\"" COMMIT "\",\"exp\":1900000000}",
      "{\"app\":\"a\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":\"1900000000\"}",
      "{\"app\":\"a/../b\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":1900000000}",
      "{\"app\":\"a*\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":1900000000}",
      "{\"app\":\"a\",\"job\":\"b\",\"commit\":\"HEAD\",\"ref\":\"refs/heads/main\",\"exp\":"
      "1900000000}",
      "{\"app\":\"a\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":0}",
      "{\"app\":\"a\",\"app\":\"b\",\"job\":\"b\",\"commit\":\"" COMMIT
      "\",\"ref\":\"refs/heads/main\",\"exp\":1900000000}",
      "[1,2,3]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
      {
        t = forge_json (bad[i]);
        assert_fails_with (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", t, NOW, &err),
                           &err, "not a ticket");
        free (t);
      }
  }
  /* and a well-formed forged one (we hold the key) passes: the mac is the gate */
  t = forge_json ("{\"app\":\"a\",\"job\":\"b\",\"commit\":\"" COMMIT
                  "\",\"ref\":\"refs/heads/main\",\"exp\":1900000000}");
  assert_ok (regtoken_ticket_verify (&got, KEY, sizeof KEY, "a/b", t, NOW, &err), &err);
  free (t);
  /* mint refuses what it would not accept */
  {
    struct regtoken_job j = a_job ("A-upper", "job-1", NOW);
    char *tk = NULL, *u = NULL;
    assert_fails_with (regtoken_ticket_mint (&tk, &u, KEY, sizeof KEY, &j, &err), &err, "`app`");
    j = a_job ("a", "job-1", 0);
    assert_fails_with (regtoken_ticket_mint (&tk, &u, KEY, sizeof KEY, &j, &err), &err, "`exp`");
    assert_null (tk);
  }
}

static void
test_ticket_key_load (void **state)
{
  char *dir = t_tmpdir (), path[4096];
  unsigned char *k = NULL;
  size_t n = 0;
  bvm_error_t err = NULL;
  (void) state;

  snprintf (path, sizeof path, "%s/ticket.key", dir);
  t_write (path, "too short");
  chmod (path, 0600);
  assert_fails_with (regtoken_ticket_key_load (&k, &n, path, &err), &err, "32 to 1024 bytes");
  t_write (path, "0123456789abcdef0123456789abcdef");
  chmod (path, 0644);
  assert_fails_with (regtoken_ticket_key_load (&k, &n, path, &err), &err, "group or others");
  chmod (path, 0600);
  assert_ok (regtoken_ticket_key_load (&k, &n, path, &err), &err);
  assert_int_equal (n, 32);
  assert_memory_equal (k, "0123456789abcdef0123456789abcdef", 32);
  free (k);
  t_tmpdir_free (dir);
}

/* --- keys and JWTs --------------------------------------------------------------------- */

static void
test_kid_is_libtrusts (void **state)
{
  static const char *const kinds[][2] = { { "EC", "P-256" }, { "RSA", "2048" } };
  char *dir = t_tmpdir (), path[4096];
  bvm_error_t err = NULL;
  (void) state;

  snprintf (path, sizeof path, "%s/key.pem", dir);
  for (size_t i = 0; i < 2; i++)
    {
      EVP_PKEY *pk = keygen (kinds[i][0], kinds[i][1]);
      char *pem = pem_of (pk), *want;
      struct regtoken_signer *s = NULL;
      const char *kid;

      t_write (path, pem);
      chmod (path, 0600);
      assert_ok (regtoken_signer_load (&s, path, &err), &err);
      assert_string_equal (regtoken_signer_alg (s), i == 0 ? "ES256" : "RS256");
      /* libtrust: sha256 of the DER SPKI, 240 bits, base32, groups of 4 */
      want = t_sh_out ("openssl pkey -in '%s' -pubout -outform DER | openssl dgst -sha256 -binary "
                       "| head -c 30 | base32 | tr -d '=\\n' | sed 's/..../&:/g; s/:$//'",
                       path);
      kid = regtoken_signer_kid (s);
      assert_string_equal (kid, want);
      assert_int_equal (strlen (kid), REGTOKEN_KID_LEN);
      free (want);
      free (pem);
      regtoken_signer_free (s);
      EVP_PKEY_free (pk);
    }
  /* a key file others can read is refused */
  chmod (path, 0644);
  {
    struct regtoken_signer *s = NULL;
    assert_fails_with (regtoken_signer_load (&s, path, &err), &err, "group or others");
  }
  t_tmpdir_free (dir);
}

static void
test_signer_refuses_weak_keys (void **state)
{
  static const char *const kinds[][2] = { { "RSA", "1024" },
                                          { "EC", "P-384" },
                                          { "ED25519", "" } };
  static const char *const why[] = { "at least 2048 bits", "P-256", "RSA (RS256) or EC P-256" };
  bvm_error_t err = NULL;
  (void) state;

  for (size_t i = 0; i < 3; i++)
    {
      EVP_PKEY *pk = keygen (kinds[i][0], kinds[i][1]);
      char *pem = pem_of (pk);
      struct regtoken_signer *s = NULL;
      assert_fails_with (regtoken_signer_from_pem (&s, pem, strlen (pem), &err), &err, why[i]);
      free (pem);
      EVP_PKEY_free (pk);
    }
  {
    struct regtoken_signer *s = NULL;
    assert_fails_with (regtoken_signer_from_pem (&s, "junk", 4, &err), &err, "not a PEM");
  }
}

static void
test_jwt_layout_and_signatures (void **state)
{
  bvm_error_t err = NULL;
  (void) state;

  for (int es = 1; es >= 0; es--)
    {
      EVP_PKEY *pk = es ? keygen ("EC", "P-256") : keygen ("RSA", "2048");
      struct regtoken_signer *s = signer_of (pk);
      json_t *claims = json_pack ("{s:s, s:i}", "sub", "x", "exp", 5);
      json_t *h, *c;
      char *jwt = NULL;

      for (int round = 0; round < 8; round++) /* r and s with leading zero bytes too */
        {
          assert_ok (regtoken_jwt_sign (&jwt, s, claims, &err), &err);
          assert_true (jwt_verifies (jwt, pk, es));
          if (round < 7)
            free (jwt);
        }
      h = jwt_part (jwt, 0);
      assert_string_equal (json_string_value (json_object_get (h, "alg")), es ? "ES256" : "RS256");
      assert_string_equal (json_string_value (json_object_get (h, "typ")), "JWT");
      assert_string_equal (json_string_value (json_object_get (h, "kid")),
                           regtoken_signer_kid (s));
      assert_int_equal (json_object_size (h), 3);
      c = jwt_part (jwt, 1);
      assert_true (json_equal (c, claims));
      /* no padding anywhere, three parts */
      assert_null (strchr (jwt, '='));
      assert_ptr_equal (strchr (strchr (strchr (jwt, '.') + 1, '.') + 1, '.'), NULL);
      /* one flipped byte of the signed part no longer verifies */
      jwt[3] = jwt[3] == 'A' ? 'B' : 'A';
      assert_false (jwt_verifies (jwt, pk, es));
      json_decref (h);
      json_decref (c);
      json_decref (claims);
      free (jwt);
      regtoken_signer_free (s);
      EVP_PKEY_free (pk);
    }
}

/* --- scopes ---------------------------------------------------------------------------- */

static void
test_scope_grammar (void **state)
{
  struct regtoken_scope sc;
  char big[REGTOKEN_SCOPE_MAX + 8];
  static const char *const bad[] = {
    "",
    "repository",
    "repository:apps/a",
    ":apps/a:pull",
    "repository::pull",
    "repository:apps/a:",
    "Repository:apps/a:pull",
    "repository(plugin):apps/a:pull",
    "repository:apps/A:pull",
    "repository:apps/../b:pull",
    "repository:apps//b:pull",
    "repository:/apps/b:pull",
    "repository:apps/a:pull,",
    "repository:apps/a:,pull",
    "repository:apps/a:PULL",
    "repository:apps/a:pullpushx",
    "repository:apps/a:a,b,c,d,e,f,g,h,i",
    "repository:apps/a:pu ll",
    "registry:cat alog:*",
  };
  (void) state;

  assert_null (regtoken_scope_problem (&sc, "repository:apps/a:push,pull"));
  assert_string_equal (sc.type, "repository");
  assert_string_equal (sc.name, "apps/a");
  assert_true (sc.pull && sc.push && !sc.other);
  assert_null (regtoken_scope_problem (&sc, "repository:base/busybox:pull"));
  assert_true (sc.pull && !sc.push && !sc.other);
  assert_null (regtoken_scope_problem (&sc, "repository:apps/a:*"));
  assert_true (!sc.pull && !sc.push && sc.other);
  assert_null (regtoken_scope_problem (&sc, "repository:apps/a:delete,pull"));
  assert_true (sc.pull && sc.other);
  /* a host:port in the name is no repository (the last colon ends the name) */
  assert_non_null (regtoken_scope_problem (&sc, "repository:127.0.0.1:5000/apps/a:pull"));
  assert_null (regtoken_scope_problem (&sc, "registry:catalog:*"));
  assert_string_equal (sc.type, "registry");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (regtoken_scope_problem (&sc, bad[i]) == NULL)
      fail_msg ("scope `%s` was accepted", bad[i]);
  memset (big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  memcpy (big, "repository:", 11);
  memcpy (big + sizeof big - 6, ":pull", 5);
  assert_non_null (regtoken_scope_problem (&sc, big));
}

/* --- the server's decisions ------------------------------------------------------------ */

struct fixture
{
  struct regtoken_settings st;
  EVP_PKEY *pk;
  struct regtoken_signer *signer;
  struct policy *tmpl, *boundary;
  struct regtoken_server *server;
};

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  struct regtoken_server_opts o;
  bvm_error_t err = NULL;

  f->st.issuer = strdup (ISSUER);
  f->st.service = strdup (SERVICE);
  f->st.token_seconds = 300;
  f->pk = keygen ("EC", "P-256");
  f->signer = signer_of (f->pk);
  assert_ok (policy_load_builtin (&f->tmpl, false, &err), &err);
  assert_ok (policy_load_builtin (&f->boundary, true, &err), &err);
  memset (&o, 0, sizeof o);
  o.settings = &f->st;
  o.signer = f->signer;
  o.ticket_key = KEY;
  o.ticket_key_len = sizeof KEY;
  o.role_template = f->tmpl;
  o.boundary = f->boundary;
  assert_ok (regtoken_server_new (&f->server, &o, &err), &err);
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;
  regtoken_server_free (f->server);
  policy_free (f->tmpl);
  policy_free (f->boundary);
  regtoken_signer_free (f->signer);
  EVP_PKEY_free (f->pk);
  regtoken_settings_dispose (&f->st);
  free (f);
  return 0;
}

/* "Basic base64(user:ticket)" for a job of app `app` expiring at exp */
static char *
basic_for (const char *app, const char *id, int64_t exp)
{
  struct regtoken_job j = a_job (app, id, exp);
  char *ticket = NULL, *user = NULL, *pair = NULL, *out = NULL;
  bvm_error_t err = NULL;
  unsigned char enc[8192];
  int n;

  assert_ok (regtoken_ticket_mint (&ticket, &user, KEY, sizeof KEY, &j, &err), &err);
  assert_true (asprintf (&pair, "%s:%s", user, ticket) > 0);
  n = EVP_EncodeBlock (enc, (const unsigned char *) pair, (int) strlen (pair));
  assert_true (asprintf (&out, "Basic %.*s", n, enc) > 0);
  free (ticket);
  free (user);
  free (pair);
  return out;
}

static struct regtoken_response
ask (struct fixture *f, const char *authz, const char *service, const char *const *scopes,
     size_t n, int64_t now)
{
  struct regtoken_request rq = { 0 };
  struct regtoken_response res;
  bvm_error_t err = NULL;

  rq.service = service;
  rq.scopes = scopes;
  rq.n_scopes = n;
  rq.authorization = authz;
  rq.now = now;
  assert_ok (regtoken_handle (&res, f->server, &rq, &err), &err);
  return res;
}

static json_t *
claims_of (struct fixture *f, const struct regtoken_response *res)
{
  json_t *reply = json_loads (res->body, 0, NULL), *c;
  const char *tok = json_string_value (json_object_get (reply, "token"));

  assert_non_null (tok);
  assert_string_equal (tok, json_string_value (json_object_get (reply, "access_token")));
  assert_true (jwt_verifies (tok, f->pk, true));
  c = jwt_part (tok, 1);
  json_object_set (c, "expires_in", json_object_get (reply, "expires_in"));
  json_object_set (c, "issued_at", json_object_get (reply, "issued_at"));
  json_decref (reply);
  return c;
}

static void
test_scopes_intersect_the_role (void **state)
{
  struct fixture *f = *state;
  char *authz = basic_for ("app-a", "job-1", NOW + 3600);
  const char *scopes[] = {
    "repository:apps/app-a:push,pull",
    "repository:apps/app-b:push,pull repository:base/busybox:pull,push,delete",
    "repository:apps/app-a10:pull registry:catalog:* repository:apps/app-a:*"
  };
  struct regtoken_response res = ask (f, authz, SERVICE, scopes, 3, NOW);
  json_t *c, *want;
  char *got;

  assert_int_equal (res.status, 200);
  c = claims_of (f, &res);
  want = json_loads ("[{\"type\":\"repository\",\"name\":\"apps/app-a\",\"actions\":[\"pull\","
                     "\"push\"]},{\"type\":\"repository\",\"name\":\"base/busybox\","
                     "\"actions\":[\"pull\"]}]",
                     0, NULL);
  got = json_dumps (json_object_get (c, "access"), JSON_COMPACT);
  if (!json_equal (want, json_object_get (c, "access")))
    fail_msg ("access: %s", got);
  assert_string_equal (json_string_value (json_object_get (c, "iss")), ISSUER);
  assert_string_equal (json_string_value (json_object_get (c, "aud")), SERVICE);
  assert_string_equal (json_string_value (json_object_get (c, "sub")), "job:app-a/job-1");
  assert_int_equal (json_integer_value (json_object_get (c, "iat")), NOW);
  assert_int_equal (json_integer_value (json_object_get (c, "nbf")), NOW);
  assert_int_equal (json_integer_value (json_object_get (c, "exp")), NOW + 300);
  assert_int_equal (json_integer_value (json_object_get (c, "expires_in")), 300);
  assert_int_equal (strlen (json_string_value (json_object_get (c, "jti"))), 32);
  if (strcmp (res.reason, "granted [apps/app-a:pull,push base/busybox:pull] left out "
                          "[apps/app-a:other apps/app-b:pull,push base/busybox:push,other "
                          "apps/app-a10:pull] expires_in 300")
      != 0)
    fail_msg ("reason: %s", res.reason);
  assert_string_equal (res.subject, "job:app-a/job-1");
  free (got);
  json_decref (want);
  json_decref (c);
  regtoken_response_dispose (&res);

  /* no scope at all (the registry's ping): a token that grants nothing */
  res = ask (f, authz, SERVICE, NULL, 0, NOW);
  assert_int_equal (res.status, 200);
  c = claims_of (f, &res);
  assert_int_equal (json_array_size (json_object_get (c, "access")), 0);
  json_decref (c);
  regtoken_response_dispose (&res);
  free (authz);
}

static void
test_token_expires_with_the_job (void **state)
{
  struct fixture *f = *state;
  char *authz = basic_for ("app-a", "job-1", NOW + 42);
  const char *scopes[] = { "repository:apps/app-a:push,pull" };
  struct regtoken_response res = ask (f, authz, SERVICE, scopes, 1, NOW);
  json_t *c;

  assert_int_equal (res.status, 200);
  c = claims_of (f, &res);
  assert_int_equal (json_integer_value (json_object_get (c, "exp")), NOW + 42);
  assert_int_equal (json_integer_value (json_object_get (c, "expires_in")), 42);
  json_decref (c);
  regtoken_response_dispose (&res);
  /* and none at all once the job's time is up */
  res = ask (f, authz, SERVICE, scopes, 1, NOW + 42);
  assert_int_equal (res.status, 401);
  assert_non_null (strstr (res.body, "expired"));
  assert_null (strstr (res.body, "token\""));
  regtoken_response_dispose (&res);
  free (authz);
}

static void
test_hostile_requests (void **state)
{
  struct fixture *f = *state;
  char *authz = basic_for ("app-a", "job-1", NOW + 3600);
  const char *one[] = { "repository:apps/app-a:pull" };
  const char *many[REGTOKEN_SCOPES_MAX + 1];
  char joined[(REGTOKEN_SCOPES_MAX + 1) * 40] = "";
  const char *joined_v[1] = { joined };
  const char *bad_scope[] = { "repository:apps/a/../b:push" };
  static const char *const bad_authz[] = {
    NULL,
    "",
    "Bearer abc",
    "Basic",
    "Basic !!!!",
    "Basic YWJj",         /* "abc": no colon */
    "Basic YQBiOmM=",     /* "a\0b:c": a NUL inside */
    "Basic YXBwLWE6eA==", /* "app-a:x" */
  };
  struct regtoken_response res;
  char *huge;
  (void) state;

  /* the service must be this server's */
  res = ask (f, authz, "other", one, 1, NOW);
  assert_int_equal (res.status, 400);
  regtoken_response_dispose (&res);
  res = ask (f, authz, NULL, one, 1, NOW);
  assert_int_equal (res.status, 400);
  regtoken_response_dispose (&res);
  /* caps on the scopes: in parameters and within one */
  for (size_t i = 0; i <= REGTOKEN_SCOPES_MAX; i++)
    {
      many[i] = "repository:apps/app-a:pull";
      strcat (joined, "repository:apps/app-a:pull ");
    }
  res = ask (f, authz, SERVICE, many, REGTOKEN_SCOPES_MAX + 1, NOW);
  assert_int_equal (res.status, 400);
  regtoken_response_dispose (&res);
  res = ask (f, authz, SERVICE, joined_v, 1, NOW);
  assert_int_equal (res.status, 400);
  assert_non_null (strstr (res.reason, "more than 16 scopes"));
  regtoken_response_dispose (&res);
  res = ask (f, authz, SERVICE, many, REGTOKEN_SCOPES_MAX, NOW);
  assert_int_equal (res.status, 200);
  regtoken_response_dispose (&res);
  res = ask (f, authz, SERVICE, bad_scope, 1, NOW);
  assert_int_equal (res.status, 400);
  regtoken_response_dispose (&res);
  /* credentials */
  for (size_t i = 0; i < sizeof bad_authz / sizeof bad_authz[0]; i++)
    {
      res = ask (f, bad_authz[i], SERVICE, one, 1, NOW);
      if (res.status != 401)
        fail_msg ("authorization `%s` got %d", bad_authz[i] ? bad_authz[i] : "(none)", res.status);
      regtoken_response_dispose (&res);
    }
  huge = malloc (REGTOKEN_AUTHZ_MAX + 32);
  memset (huge, 'A', REGTOKEN_AUTHZ_MAX + 31);
  memcpy (huge, "Basic ", 6);
  huge[REGTOKEN_AUTHZ_MAX + 31] = '\0';
  res = ask (f, huge, SERVICE, one, 1, NOW);
  assert_int_equal (res.status, 401);
  regtoken_response_dispose (&res);
  free (huge);
  /* a ticket for another app cannot be used as app-a's */
  {
    char *other = basic_for ("app-b", "job-1", NOW + 3600);
    const char *scopes[] = { "repository:apps/app-a:push,pull" };
    json_t *c;
    res = ask (f, other, SERVICE, scopes, 1, NOW);
    assert_int_equal (res.status, 200);
    c = claims_of (f, &res);
    assert_int_equal (json_array_size (json_object_get (c, "access")), 0);
    json_decref (c);
    regtoken_response_dispose (&res);
    free (other);
  }
  free (authz);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_b64url_strict),
    cmocka_unit_test (test_ticket_round_trip),
    cmocka_unit_test (test_ticket_hostile),
    cmocka_unit_test (test_ticket_key_load),
    cmocka_unit_test (test_kid_is_libtrusts),
    cmocka_unit_test (test_signer_refuses_weak_keys),
    cmocka_unit_test (test_jwt_layout_and_signatures),
    cmocka_unit_test (test_scope_grammar),
    cmocka_unit_test_setup_teardown (test_scopes_intersect_the_role, setup, teardown),
    cmocka_unit_test_setup_teardown (test_token_expires_with_the_job, setup, teardown),
    cmocka_unit_test_setup_teardown (test_hostile_requests, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
