/* regtoken.c - job tickets, the token server's decisions and its JWTs; see
 * regtoken.h. The HTTP side is regtoken_http.c. */
#include "regtoken.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICKET_LABEL "bvt1"
#define TICKET_PAYLOAD_MAX 1024 /* decoded JSON */
#define SIGNING_KEY_FILE_MAX (64 * 1024)
#define RSA_MIN_BITS 2048
#define ES256_HALF 32
#define MAC_B64_LEN 43 /* 32 bytes, base64url, no padding */

void
regtoken_settings_dispose (struct regtoken_settings *s)
{
  free (s->listen);
  free (s->signing_key);
  free (s->ticket_key);
  free (s->issuer);
  free (s->service);
  memset (s, 0, sizeof *s);
}

/* --- base64url ------------------------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int
regtoken__b64url_encode (char **out, const void *data, size_t len)
{
  const unsigned char *in = data;
  size_t o = 0;
  char *s;

  if (len > SIZE_MAX / 2)
    return -1;
  s = malloc ((len + 2) / 3 * 4 + 1);
  if (s == NULL)
    return -1;
  for (size_t i = 0; i < len; i += 3)
    {
      uint32_t v = (uint32_t) in[i] << 16;
      size_t n = len - i < 3 ? len - i : 3;
      if (n > 1)
        v |= (uint32_t) in[i + 1] << 8;
      if (n > 2)
        v |= in[i + 2];
      s[o++] = b64url[(v >> 18) & 63];
      s[o++] = b64url[(v >> 12) & 63];
      if (n > 1)
        s[o++] = b64url[(v >> 6) & 63];
      if (n > 2)
        s[o++] = b64url[v & 63];
    }
  s[o] = '\0';
  *out = s;
  return 0;
}

static int
b64_value (unsigned char c, bool url)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == (url ? '-' : '+'))
    return 62;
  if (c == (url ? '_' : '/'))
    return 63;
  return -1;
}

/* Strict: the alphabet only, no length of 4n+1, zero trailing bits, so
 * that one byte string has exactly one encoding. */
static int
b64_decode (unsigned char **out, size_t *out_len, const char *s, size_t len, size_t max, bool url)
{
  unsigned char *d;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;

  if (len % 4 == 1 || len / 4 * 3 + 3 > max + 3)
    return -1;
  if ((d = malloc (len / 4 * 3 + 4)) == NULL)
    return -1;
  for (size_t i = 0; i < len; i++)
    {
      int v = b64_value ((unsigned char) s[i], url);
      if (v < 0)
        {
          mem_wipe (d, o); /* an Authorization header's bytes */
          free (d);
          return -1;
        }
      acc = (acc << 6) | (uint32_t) v;
      bits += 6;
      if (bits >= 8)
        {
          bits -= 8;
          d[o++] = (unsigned char) (acc >> bits);
          acc &= (1u << bits) - 1;
        }
    }
  if (acc != 0 || o > max)
    {
      mem_wipe (d, o);
      free (d);
      return -1;
    }
  d[o] = '\0';
  *out = d;
  *out_len = o;
  return 0;
}

int
regtoken__b64url_decode (unsigned char **out, size_t *out_len, const char *s, size_t len,
                         size_t max)
{
  return b64_decode (out, out_len, s, len, max, true);
}

/* --- tickets --------------------------------------------------------------------------- */

int
regtoken_ticket_key_load (unsigned char **out, size_t *len, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  unsigned char *key;
  struct stat st;
  size_t used = 0;
  int ret;

  if (fd < 0)
    return bvm_error (err, errno, "open the ticket key `%s`", path);
  if (fs_check_private_fd (&st, fd, path, "ticket key", err) < 0)
    return -1;
  if (st.st_size < REGTOKEN_TICKET_KEY_MIN || st.st_size > REGTOKEN_TICKET_KEY_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the ticket key `%s` must be %d to %d bytes (it has %lld): "
                           "`head -c 32 /dev/urandom`",
                           path, REGTOKEN_TICKET_KEY_MIN, REGTOKEN_TICKET_KEY_MAX,
                           (long long) st.st_size);
  if ((key = malloc ((size_t) st.st_size)) == NULL)
    return bvm_error (err, ENOMEM, "ticket key");
  ret = fs_read_sized (fd, (char *) key, (size_t) st.st_size, &used);
  if (ret != 0)
    {
      int e = errno;
      mem_wipe (key, used);
      free (key);
      if (ret < 0)
        return bvm_error (err, e, "read `%s`", path);
      return bvm_error_code (err, BVM_E_IO, 0, "`%s` changed while being read", path);
    }
  *out = key;
  *len = used;
  return 0;
}

static int
ticket_mac (char out[MAC_B64_LEN + 1], const unsigned char *key, size_t key_len, const char *text,
            size_t len)
{
  unsigned char mac[SHA256_DIGEST_LENGTH];
  unsigned int mlen = 0;
  char *enc = NULL;

  if (key_len > INT_MAX
      || HMAC (EVP_sha256 (), key, (int) key_len, (const unsigned char *) text, len, mac, &mlen)
             == NULL
      || mlen != sizeof mac || regtoken__b64url_encode (&enc, mac, sizeof mac) < 0)
    return -1;
  memcpy (out, enc, MAC_B64_LEN + 1);
  free (enc);
  return 0;
}

static const char *
job_problem (const struct regtoken_job *job)
{
  const char *why;

  if ((why = job_app_id_problem (job->app)) != NULL)
    return "app";
  if ((why = job_id_problem (job->id)) != NULL)
    return "job";
  if ((why = job_commit_problem (job->commit)) != NULL)
    return "commit";
  if ((why = job_ref_problem (job->ref)) != NULL)
    return "ref";
  if (job->expires_at <= 0)
    return "exp";
  return NULL;
}

int
regtoken_ticket_mint (char **ticket, char **user, const unsigned char *key, size_t key_len,
                      const struct regtoken_job *job, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  cleanup_free char *json = NULL, *payload = NULL, *signed_part = NULL;
  char mac[MAC_B64_LEN + 1];
  const char *bad;

  *ticket = *user = NULL;
  if ((bad = job_problem (job)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "a job ticket: invalid `%s`", bad);
  doc = json_pack ("{s:s, s:s, s:s, s:s, s:I}", "app", job->app, "job", job->id, "commit",
                   job->commit, "ref", job->ref, "exp", (json_int_t) job->expires_at);
  if (doc == NULL || (json = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS)) == NULL
      || regtoken__b64url_encode (&payload, json, strlen (json)) < 0
      || asprintf (&signed_part, TICKET_LABEL ".%s", payload) < 0)
    {
      signed_part = NULL;
      return bvm_error (err, ENOMEM, "job ticket");
    }
  if (ticket_mac (mac, key, key_len, signed_part, strlen (signed_part)) < 0)
    return bvm_error_code (err, BVM_E_IO, 0, "a job ticket: HMAC failed");
  if (asprintf (ticket, "%s.%s", signed_part, mac) < 0)
    {
      *ticket = NULL;
      return bvm_error (err, ENOMEM, "job ticket");
    }
  if (strlen (*ticket) > REGTOKEN_TICKET_MAX || asprintf (user, "%s/%s", job->app, job->id) < 0)
    {
      *user = NULL;
      free (*ticket);
      *ticket = NULL;
      return bvm_error_code (err, BVM_E_LIMIT, 0, "a job ticket is over %d bytes",
                             REGTOKEN_TICKET_MAX);
    }
  return 0;
}

static int
denied (bvm_error_t *err, const char *why)
{
  return bvm_error_code (err, BVM_E_DENIED, 0, "job ticket refused: %s", why);
}

static int
copy_field (char *dst, size_t size, const json_t *doc, const char *key)
{
  const json_t *v = json_object_get (doc, key);
  size_t n;

  if (!json_is_string (v) || (n = json_string_length (v)) >= size)
    return -1;
  memcpy (dst, json_string_value (v), n + 1);
  return strlen (dst) == n ? 0 : -1; /* no NUL inside */
}

int
regtoken_ticket_verify (struct regtoken_job *out, const unsigned char *key, size_t key_len,
                        const char *user, const char *ticket, int64_t now, bvm_error_t *err)
{
  static const char *const keys[] = { "app", "job", "commit", "ref", "exp", NULL };
  cleanup_json json_t *doc = NULL;
  unsigned char *json = NULL;
  size_t n, json_len = 0, plen;
  const char *payload, *dot;
  char mac[MAC_B64_LEN + 1];
  const json_t *exp;
  struct regtoken_job job;
  bool ok;

  memset (out, 0, sizeof *out);
  n = strnlen (ticket, REGTOKEN_TICKET_MAX + 1);
  if (n > REGTOKEN_TICKET_MAX)
    return denied (err, "over the size cap");
  if (strncmp (ticket, TICKET_LABEL ".", sizeof TICKET_LABEL) != 0)
    return denied (err, "not a buildvm job ticket");
  payload = ticket + sizeof TICKET_LABEL;
  dot = strchr (payload, '.');
  if (dot == NULL || strlen (dot + 1) != MAC_B64_LEN)
    return denied (err, "malformed");
  /* the mac first: nothing of a payload is parsed before we know we made it */
  if (ticket_mac (mac, key, key_len, ticket, (size_t) (dot - ticket)) < 0)
    return bvm_error_code (err, BVM_E_IO, 0, "job ticket: HMAC failed");
  ok = mem_equal_ct (mac, dot + 1, MAC_B64_LEN);
  mem_wipe (mac, sizeof mac);
  if (!ok)
    return denied (err, "wrong mac");
  plen = (size_t) (dot - payload);
  if (regtoken__b64url_decode (&json, &json_len, payload, plen, TICKET_PAYLOAD_MAX) < 0)
    return denied (err, "the payload is not base64url");
  if (jsonx_parse_object (&doc, (const char *) json, json_len, TICKET_PAYLOAD_MAX, "job ticket",
                          keys, err)
      < 0)
    {
      free (json);
      bvm_error_free (err);
      return denied (err, "the payload is not a ticket");
    }
  free (json);
  memset (&job, 0, sizeof job);
  exp = json_object_get (doc, "exp");
  if (copy_field (job.app, sizeof job.app, doc, "app") < 0
      || copy_field (job.id, sizeof job.id, doc, "job") < 0
      || copy_field (job.commit, sizeof job.commit, doc, "commit") < 0
      || copy_field (job.ref, sizeof job.ref, doc, "ref") < 0 || !json_is_integer (exp))
    return denied (err, "the payload is not a ticket");
  job.expires_at = (int64_t) json_integer_value (exp);
  if (job_problem (&job) != NULL)
    return denied (err, "the payload is not a ticket");
  {
    char want[REGTOKEN_USER_MAX + 2];
    snprintf (want, sizeof want, "%s/%s", job.app, job.id);
    if (user == NULL || strcmp (user, want) != 0)
      return denied (err, "the user does not name the ticket's job");
  }
  if (job.expires_at <= now)
    return denied (err, "expired");
  *out = job;
  return 0;
}

/* --- the signing key ------------------------------------------------------------------- */

struct regtoken_signer
{
  EVP_PKEY *pkey;
  bool es256;
  char kid[REGTOKEN_KID_LEN + 1];
};

/* libtrust's keyIDFromCryptoKey (docker/libtrust util.go, which
 * distribution 2.8's registry/auth/token uses for `kid`): sha256 of the DER
 * SubjectPublicKeyInfo, truncated to 30 bytes, base32 (RFC 4648, no
 * padding: 48 characters), in groups of 4 joined by `:`. */
static int
libtrust_kid (char out[REGTOKEN_KID_LEN + 1], EVP_PKEY *pkey)
{
  static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  unsigned char *der = NULL, md[SHA256_DIGEST_LENGTH];
  char enc[49];
  int n = i2d_PUBKEY (pkey, &der);
  size_t o = 0;

  if (n <= 0)
    return -1;
  SHA256 (der, (size_t) n, md);
  OPENSSL_free (der);
  /* 30 bytes = 240 bits = 48 groups of 5 bits */
  for (size_t i = 0; i < 30; i += 5)
    {
      uint64_t v = 0;
      for (size_t k = 0; k < 5; k++)
        v = (v << 8) | md[i + k];
      for (int k = 7; k >= 0; k--)
        enc[o++] = b32[(v >> (k * 5)) & 31];
    }
  enc[48] = '\0';
  o = 0;
  for (size_t i = 0; i < 48; i += 4)
    {
      if (i > 0)
        out[o++] = ':';
      memcpy (out + o, enc + i, 4);
      o += 4;
    }
  out[o] = '\0';
  return 0;
}

int
regtoken_signer_from_pem (struct regtoken_signer **out, const char *pem, size_t len,
                          bvm_error_t *err)
{
  struct regtoken_signer *s;
  EVP_PKEY *pkey;
  BIO *b;
  bool es256;

  if (len > SIGNING_KEY_FILE_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "a signing key is larger than %d bytes",
                           SIGNING_KEY_FILE_MAX);
  if ((b = BIO_new_mem_buf (pem, (int) len)) == NULL)
    return bvm_error (err, ENOMEM, "signing key");
  pkey = PEM_read_bio_PrivateKey (b, NULL, NULL, NULL);
  BIO_free (b);
  if (pkey == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "not a PEM private key");
  if (EVP_PKEY_get_id (pkey) == EVP_PKEY_EC)
    {
      char group[64];
      size_t glen = 0;
      if (EVP_PKEY_get_utf8_string_param (pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                          &glen)
              != 1
          || strcmp (group, "prime256v1") != 0)
        {
          EVP_PKEY_free (pkey);
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "an EC signing key must be on P-256 (ES256)");
        }
      es256 = true;
    }
  else if (EVP_PKEY_get_id (pkey) == EVP_PKEY_RSA)
    {
      if (EVP_PKEY_get_bits (pkey) < RSA_MIN_BITS)
        {
          EVP_PKEY_free (pkey);
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "an RSA signing key must have at least %d bits", RSA_MIN_BITS);
        }
      es256 = false;
    }
  else
    {
      EVP_PKEY_free (pkey);
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "the signing key must be RSA (RS256) or EC P-256 (ES256)");
    }
  if ((s = calloc (1, sizeof *s)) == NULL)
    {
      EVP_PKEY_free (pkey);
      return bvm_error (err, ENOMEM, "signing key");
    }
  s->pkey = pkey;
  s->es256 = es256;
  if (libtrust_kid (s->kid, pkey) < 0)
    {
      regtoken_signer_free (s);
      return bvm_error_code (err, BVM_E_INVALID, 0, "cannot encode the signing key's public key");
    }
  *out = s;
  return 0;
}

int
regtoken_signer_load (struct regtoken_signer **out, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  cleanup_free char *pem = NULL;
  struct stat st;
  size_t len = 0;
  int ret;

  if (fd < 0)
    return bvm_error (err, errno, "open the signing key `%s`", path);
  if (fs_check_private_fd (&st, fd, path, "signing key", err) < 0)
    return -1;
  ret = fs_read_fd (&pem, &len, fd, SIGNING_KEY_FILE_MAX, path, err);
  if (ret == 0)
    ret = regtoken_signer_from_pem (out, pem, len, err);
  if (pem)
    mem_wipe (pem, len);
  if (ret < 0)
    return bvm_error_wrap (err, "signing key `%s`", path);
  return 0;
}

void
regtoken_signer_free (struct regtoken_signer *s)
{
  if (s == NULL)
    return;
  EVP_PKEY_free (s->pkey);
  free (s);
}

const char *
regtoken_signer_alg (const struct regtoken_signer *s)
{
  return s->es256 ? "ES256" : "RS256";
}

const char *
regtoken_signer_kid (const struct regtoken_signer *s)
{
  return s->kid;
}

/* JWS (RFC 7515) signature bytes: PKCS#1 v1.5 for RS256; for ES256 the
 * raw r || s, 32 bytes each (RFC 7518 3.4), not OpenSSL's DER, which
 * libtrust refuses by its length. */
static int
jws_signature (unsigned char **sig, size_t *sig_len, const struct regtoken_signer *s,
               const char *input, size_t len)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  unsigned char *der = NULL;
  size_t der_len = 0;
  int ret = -1;

  *sig = NULL;
  if (md == NULL || EVP_DigestSignInit (md, NULL, EVP_sha256 (), NULL, s->pkey) != 1
      || EVP_DigestSign (md, NULL, &der_len, (const unsigned char *) input, len) != 1
      || (der = malloc (der_len)) == NULL
      || EVP_DigestSign (md, der, &der_len, (const unsigned char *) input, len) != 1)
    goto done;
  if (!s->es256)
    {
      *sig = steal_pointer (&der);
      *sig_len = der_len;
      ret = 0;
      goto done;
    }
  {
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG (NULL, &p, (long) der_len);
    const BIGNUM *r, *sv;
    unsigned char *raw = malloc (2 * ES256_HALF);

    if (es == NULL || raw == NULL)
      {
        ECDSA_SIG_free (es);
        free (raw);
        goto done;
      }
    ECDSA_SIG_get0 (es, &r, &sv);
    if (BN_bn2binpad (r, raw, ES256_HALF) != ES256_HALF
        || BN_bn2binpad (sv, raw + ES256_HALF, ES256_HALF) != ES256_HALF)
      {
        ECDSA_SIG_free (es);
        free (raw);
        goto done;
      }
    ECDSA_SIG_free (es);
    *sig = raw;
    *sig_len = 2 * ES256_HALF;
    ret = 0;
  }
done:
  free (der);
  EVP_MD_CTX_free (md);
  return ret;
}

int
regtoken_jwt_sign (char **out, const struct regtoken_signer *s, const json_t *claims,
                   bvm_error_t *err)
{
  cleanup_json json_t *hdr = json_pack ("{s:s, s:s, s:s}", "typ", "JWT", "alg",
                                        regtoken_signer_alg (s), "kid", s->kid);
  cleanup_free char *h = NULL, *c = NULL, *h64 = NULL, *c64 = NULL, *input = NULL, *s64 = NULL;
  cleanup_free unsigned char *sig = NULL;
  size_t sig_len = 0;

  *out = NULL;
  if (hdr == NULL || (h = json_dumps (hdr, JSON_COMPACT)) == NULL
      || (c = json_dumps (claims, JSON_COMPACT)) == NULL
      || regtoken__b64url_encode (&h64, h, strlen (h)) < 0
      || regtoken__b64url_encode (&c64, c, strlen (c)) < 0
      || asprintf (&input, "%s.%s", h64, c64) < 0)
    {
      input = NULL;
      return bvm_error (err, ENOMEM, "token");
    }
  if (jws_signature (&sig, &sig_len, s, input, strlen (input)) < 0)
    return bvm_error_code (err, BVM_E_IO, 0, "signing a token with the %s key failed",
                           regtoken_signer_alg (s));
  if (regtoken__b64url_encode (&s64, sig, sig_len) < 0 || asprintf (out, "%s.%s", input, s64) < 0)
    {
      *out = NULL;
      return bvm_error (err, ENOMEM, "token");
    }
  return 0;
}

/* --- scopes ---------------------------------------------------------------------------- */

const char *
regtoken_scope_problem (struct regtoken_scope *out, const char *s)
{
  const char *c1, *c2;
  size_t n = strnlen (s, REGTOKEN_SCOPE_MAX + 1), tlen, nlen;
  const char *a;
  int n_actions = 0;

  memset (out, 0, sizeof *out);
  if (n == 0 || n > REGTOKEN_SCOPE_MAX)
    return "a scope must be 1 to 512 bytes";
  c1 = strchr (s, ':');
  c2 = strrchr (s, ':');
  if (c1 == NULL || c1 == c2)
    return "a scope is `type:name:actions`";
  tlen = (size_t) (c1 - s);
  nlen = (size_t) (c2 - c1 - 1);
  if (tlen == 0 || tlen >= sizeof out->type || nlen == 0 || nlen >= sizeof out->name)
    return "a scope's type or name is empty or too long";
  for (size_t i = 0; i < tlen; i++)
    if (!(s[i] >= 'a' && s[i] <= 'z'))
      return "a scope's type is lowercase letters";
  memcpy (out->type, s, tlen);
  memcpy (out->name, c1 + 1, nlen);
  if (strcmp (out->type, "repository") == 0 && oci_repository_problem (out->name) != NULL)
    return "a repository scope must name an OCI repository";
  /* other types (`registry:catalog:*`) keep whatever name they have, but
   * it is still one printable word */
  for (size_t i = 0; i < nlen; i++)
    if ((unsigned char) out->name[i] <= 0x20 || (unsigned char) out->name[i] >= 0x7f)
      return "a scope's name has a space or a control character";
  a = c2 + 1;
  for (;;)
    {
      size_t k = strcspn (a, ",");
      if (k == 0 || k > 8 || ++n_actions > 8)
        return "a scope's actions are 1 to 8 words of 1 to 8 of [a-z*]";
      for (size_t i = 0; i < k; i++)
        if (!((a[i] >= 'a' && a[i] <= 'z') || a[i] == '*'))
          return "a scope's actions are 1 to 8 words of 1 to 8 of [a-z*]";
      if (k == 4 && strncmp (a, "pull", 4) == 0)
        out->pull = true;
      else if (k == 4 && strncmp (a, "push", 4) == 0)
        out->push = true;
      else
        out->other = true;
      if (a[k] == '\0')
        break;
      a += k + 1;
    }
  return NULL;
}

/* --- the server ------------------------------------------------------------------------ */

struct regtoken_server
{
  struct regtoken_server_opts o;
};

int
regtoken_server_new (struct regtoken_server **out, const struct regtoken_server_opts *o,
                     bvm_error_t *err)
{
  struct regtoken_server *s;

  if (o->settings == NULL || o->signer == NULL || o->ticket_key == NULL || o->role_template == NULL
      || o->settings->issuer == NULL || o->settings->service == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the token server needs a signing key, a ticket key, the role "
                           "policy, an issuer and a service");
  if ((s = calloc (1, sizeof *s)) == NULL)
    return bvm_error (err, ENOMEM, "token server");
  s->o = *o;
  *out = s;
  return 0;
}

void
regtoken_server_free (struct regtoken_server *s)
{
  free (s);
}

void
regtoken_response_dispose (struct regtoken_response *res)
{
  if (res->body)
    mem_wipe (res->body, strlen (res->body));
  free (res->body);
  res->body = NULL;
}

static int refuse (struct regtoken_response *res, int status, const char *code, const char *fmt,
                   ...) __attribute__ ((format (printf, 4, 5)));

static int
refuse (struct regtoken_response *res, int status, const char *code, const char *fmt, ...)
{
  json_t *doc;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (res->reason, sizeof res->reason, fmt, ap);
  va_end (ap);
  res->status = status;
  doc = json_pack ("{s:[{s:s, s:s}]}", "errors", "code", code, "message", res->reason);
  res->body = doc ? json_dumps (doc, JSON_COMPACT) : NULL;
  json_decref (doc);
  return res->body == NULL ? -1 : 0;
}

/* Authorization: Basic base64(user:password) */
static int
parse_basic (char **user, char **pass, const char *h)
{
  unsigned char *dec = NULL;
  size_t len = 0, n;
  char *colon;

  *user = *pass = NULL;
  if (h == NULL || strncasecmp (h, "Basic ", 6) != 0)
    return -1;
  h += 6;
  while (*h == ' ')
    h++;
  n = strnlen (h, REGTOKEN_AUTHZ_MAX + 1);
  if (n > REGTOKEN_AUTHZ_MAX)
    return -1;
  while (n > 0 && h[n - 1] == '=')
    n--; /* the standard alphabet, padded: we decode it unpadded */
  if (b64_decode (&dec, &len, h, n, REGTOKEN_AUTHZ_MAX, false) < 0)
    return -1;
  if (strlen ((char *) dec) != len || (colon = strchr ((char *) dec, ':')) == NULL)
    {
      mem_wipe (dec, len);
      free (dec);
      return -1;
    }
  *colon = '\0';
  *user = strdup ((char *) dec);
  *pass = strdup (colon + 1);
  mem_wipe (dec, len);
  free (dec);
  if (*user == NULL || *pass == NULL)
    {
      free (*user);
      if (*pass)
        mem_wipe (*pass, strlen (*pass));
      free (*pass);
      *user = *pass = NULL;
      return -2;
    }
  return 0;
}

struct grant
{
  char name[REGTOKEN_SCOPE_MAX];
  bool pull, push, other;
};

static bool
role_allows (const struct role *role, const char *action, const char *repo)
{
  char res[REGTOKEN_SCOPE_MAX + 32];
  struct policy_decision d;

  /* a token grants the whole repository, so the role must allow every tag:
   * `registry:<repo>:*` is matched as a literal, and a role that allows
   * only some tags of a repository gets no token for it */
  if (snprintf_checked (res, sizeof res, "registry:%s:*", repo) < 0)
    return false;
  role_decide (role, action, res, NULL, &d);
  return d.allowed;
}

/* "name:pull,push[,other]" appended to a log note, cut at its size */
static void
note_scope (char *dst, size_t size, const char *name, bool pull, bool push, bool other)
{
  size_t used = strlen (dst);
  int n;

  if (used + 1 >= size)
    return;
  n = snprintf (dst + used, size - used, "%s%s:%s%s%s%s%s", used ? " " : "", name,
                pull ? "pull" : "", pull && push ? "," : "", push ? "push" : "",
                other && (pull || push) ? "," : "", other ? "other" : "");
  if (n < 0 || (size_t) n >= size - used)
    dst[used] = '\0'; /* a note that does not fit is left out whole */
}

int
regtoken_handle (struct regtoken_response *res, const struct regtoken_server *s,
                 const struct regtoken_request *rq, bvm_error_t *err)
{
  const struct regtoken_settings *st = s->o.settings;
  struct grant grants[REGTOKEN_SCOPES_MAX];
  size_t n_grants = 0, n_scopes = 0;
  cleanup_free char *user = NULL, *pass = NULL, *jwt = NULL;
  cleanup_role struct role *role = NULL;
  cleanup_json json_t *claims = NULL, *access = NULL, *reply = NULL;
  struct regtoken_job job;
  struct policy_vars vars;
  bvm_error_t e2 = NULL;
  char granted[REGTOKEN_REASON_MAX / 2 - 32] = "", left[REGTOKEN_REASON_MAX / 2 - 32] = "";
  char issued[40], jti[33];
  unsigned char rnd[16];
  int64_t exp;
  int ret;

  memset (res, 0, sizeof *res);
  if (rq->service == NULL || strcmp (rq->service, st->service) != 0)
    return refuse (res, 400, "INVALID_REQUEST", "unknown service (this server is `%s`)",
                   st->service);

  /* every scope is checked before the credentials: a malformed request is
   * refused the same for everyone */
  for (size_t i = 0; i < rq->n_scopes; i++)
    {
      const char *p = rq->scopes[i];
      while (*p)
        {
          char one[REGTOKEN_SCOPE_MAX + 1];
          struct regtoken_scope sc;
          const char *why;
          size_t k = strcspn (p, " ");
          size_t g;

          if (k == 0)
            {
              p++;
              continue;
            }
          if (++n_scopes > REGTOKEN_SCOPES_MAX)
            return refuse (res, 400, "INVALID_REQUEST", "more than %d scopes",
                           REGTOKEN_SCOPES_MAX);
          if (k > REGTOKEN_SCOPE_MAX)
            return refuse (res, 400, "INVALID_REQUEST", "a scope is over %d bytes",
                           REGTOKEN_SCOPE_MAX);
          memcpy (one, p, k);
          one[k] = '\0';
          p += k;
          if ((why = regtoken_scope_problem (&sc, one)) != NULL)
            return refuse (res, 400, "INVALID_REQUEST", "%s", why);
          if (strcmp (sc.type, "repository") != 0)
            continue; /* never granted; nothing to decide */
          for (g = 0; g < n_grants; g++)
            if (strcmp (grants[g].name, sc.name) == 0)
              break;
          if (g == n_grants)
            {
              memset (&grants[g], 0, sizeof grants[g]);
              snprintf (grants[g].name, sizeof grants[g].name, "%s", sc.name);
              n_grants++;
            }
          grants[g].pull |= sc.pull;
          grants[g].push |= sc.push;
          grants[g].other |= sc.other;
        }
    }

  ret = parse_basic (&user, &pass, rq->authorization);
  if (ret == -2)
    return bvm_error (err, ENOMEM, "token request");
  if (ret < 0)
    return refuse (res, 401, "UNAUTHORIZED",
                   "a job ticket is needed: HTTP Basic `<app>/<job>` and the ticket");
  ret = regtoken_ticket_verify (&job, s->o.ticket_key, s->o.ticket_key_len, user, pass, rq->now,
                                &e2);
  mem_wipe (pass, strlen (pass));
  if (ret < 0)
    {
      ret = refuse (res, 401, "UNAUTHORIZED", "%s", bvm_error_msg (&e2));
      bvm_error_free (&e2);
      return ret;
    }
  snprintf (res->subject, sizeof res->subject, "job:%s/%s", job.app, job.id);

  /* the job's role, minted here from the same policies as the runner's */
  vars.app = job.app;
  vars.commit = job.commit;
  vars.ref = job.ref;
  vars.id = job.id;
  if (role_mint (&role, s->o.role_template, s->o.boundary, &vars, job.expires_at, &e2) < 0)
    {
      ret = refuse (res, 401, "DENIED", "no role for the job: %s", bvm_error_msg (&e2));
      bvm_error_free (&e2);
      return ret;
    }

  if ((access = json_array ()) == NULL)
    return bvm_error (err, ENOMEM, "token");
  for (size_t g = 0; g < n_grants; g++)
    {
      bool pull = grants[g].pull && role_allows (role, POLICY_ACTION_PULL_IMAGE, grants[g].name);
      bool push = grants[g].push && role_allows (role, POLICY_ACTION_PUSH_IMAGE, grants[g].name);
      if ((grants[g].pull && !pull) || (grants[g].push && !push) || grants[g].other)
        {
          note_scope (left, sizeof left, grants[g].name, grants[g].pull && !pull,
                      grants[g].push && !push, grants[g].other);
        }
      if (!pull && !push)
        continue;
      if (json_array_append_new (access, json_pack ("{s:s, s:s, s:[s*s*]}", "type", "repository",
                                                    "name", grants[g].name, "actions",
                                                    pull ? "pull" : NULL, push ? "push" : NULL))
          < 0)
        return bvm_error (err, ENOMEM, "token");
      note_scope (granted, sizeof granted, grants[g].name, pull, push, false);
    }

  exp = rq->now + (int64_t) st->token_seconds;
  if (job.expires_at < exp)
    exp = job.expires_at; /* the token dies with the job */
  if (RAND_bytes (rnd, sizeof rnd) != 1)
    return bvm_error_code (err, BVM_E_IO, 0, "no random bytes for a token id");
  hex_encode (jti, rnd, sizeof rnd);
  claims = json_pack ("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:O}", "iss", st->issuer, "sub",
                      res->subject, "aud", st->service, "exp", (json_int_t) exp, "nbf",
                      (json_int_t) rq->now, "iat", (json_int_t) rq->now, "jti", jti, "access",
                      access);
  if (claims == NULL)
    return bvm_error (err, ENOMEM, "token");
  if (regtoken_jwt_sign (&jwt, s->o.signer, claims, err) < 0)
    return -1;
  format_rfc3339 (issued, sizeof issued, rq->now);
  reply = json_pack ("{s:s, s:s, s:I, s:s}", "token", jwt, "access_token", jwt, "expires_in",
                     (json_int_t) (exp - rq->now), "issued_at", issued);
  if (reply == NULL || (res->body = json_dumps (reply, JSON_COMPACT)) == NULL)
    return bvm_error (err, ENOMEM, "token");
  mem_wipe (jwt, strlen (jwt));
  res->status = 200;
  snprintf (res->reason, sizeof res->reason, "granted [%s] left out [%s] expires_in %lld", granted,
            left, (long long) (exp - rq->now));
  return 0;
}
