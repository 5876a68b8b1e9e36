/* attest.c - DSSE envelopes, keys and the provenance statement, see attest.h */
#include "attest.h"
#include "fs.h"
#include "jsonx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define SIGNATURES_MAX 16 /* an envelope with more is refused, not searched */

struct attest_key
{
  EVP_PKEY *pkey;
  bool private;
  char id[ATTEST_KEY_ID_MAX + 1];
};

/* --- base64 ----------------------------------------------------------------------- */

int
attest__b64_encode (char **out, const void *data, size_t len)
{
  size_t n = 4 * ((len + 2) / 3);
  char *s;

  if (len > INT_MAX / 2 || (s = malloc (n + 1)) == NULL)
    return -1;
  EVP_EncodeBlock ((unsigned char *) s, data, (int) len);
  s[n] = '\0';
  *out = s;
  return 0;
}

static int
b64_value (unsigned char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

/* A decoder of our own: EVP_DecodeBlock takes neither the URL-safe alphabet
 * nor missing padding (both of which DSSE allows), and counts padding as
 * output bytes. */
int
attest__b64_decode (unsigned char **out, size_t *out_len, const char *s, size_t len)
{
  unsigned char *o;
  uint32_t acc = 0;
  size_t n = 0, bits = 0;

  while (len > 0 && s[len - 1] == '=')
    len--;
  if (len % 4 == 1 || (o = malloc (len / 4 * 3 + 3)) == NULL)
    return -1;
  for (size_t i = 0; i < len; i++)
    {
      int v = b64_value ((unsigned char) s[i]);
      if (v < 0)
        {
          free (o);
          return -1;
        }
      acc = (acc << 6) | (uint32_t) v;
      bits += 6;
      if (bits >= 8)
        {
          bits -= 8;
          o[n++] = (unsigned char) (acc >> bits);
        }
    }
  *out = o;
  *out_len = n;
  return 0;
}

/* --- keys ------------------------------------------------------------------------- */

static int
key_wrap (struct attest_key **out, EVP_PKEY *pkey, bool priv, bvm_error_t *err)
{
  struct attest_key *k;
  unsigned char *der = NULL;
  int der_len, id;

  id = EVP_PKEY_get_id (pkey);
  if (id == EVP_PKEY_EC)
    {
      char group[64];
      size_t glen = 0;
      if (EVP_PKEY_get_utf8_string_param (pkey, "group", group, sizeof group, &glen) != 1
          || strcmp (group, "prime256v1") != 0)
        {
          EVP_PKEY_free (pkey);
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "only P-256 EC keys are used for attestations");
        }
    }
  else if (id != EVP_PKEY_ED25519)
    {
      EVP_PKEY_free (pkey);
      return bvm_error_code (err, BVM_E_INVALID, 0, "the key is neither ECDSA P-256 nor Ed25519");
    }
  k = calloc (1, sizeof *k);
  der_len = i2d_PUBKEY (pkey, &der);
  if (k == NULL || der_len <= 0)
    {
      free (k);
      OPENSSL_free (der);
      EVP_PKEY_free (pkey);
      return bvm_error (err, ENOMEM, "attestation key");
    }
  if (digest_buffer (k->id, der, (size_t) der_len, err) < 0)
    {
      free (k);
      OPENSSL_free (der);
      EVP_PKEY_free (pkey);
      return -1;
    }
  OPENSSL_free (der);
  k->pkey = pkey;
  k->private = priv;
  *out = k;
  return 0;
}

int
attest_key_generate (struct attest_key **out, bvm_error_t *err)
{
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen (NULL, NULL, "EC", "P-256");
  if (pkey == NULL)
    return bvm_error (err, 0, "generating an ECDSA P-256 key failed");
  return key_wrap (out, pkey, true, err);
}

int
attest_key_from_pem (struct attest_key **out, const char *pem, size_t len, bvm_error_t *err)
{
  EVP_PKEY *pkey;
  BIO *b;

  if (len > ATTEST_KEY_FILE_MAX || len > INT_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "a key file is larger than %d bytes",
                           ATTEST_KEY_FILE_MAX);
  if ((b = BIO_new_mem_buf (pem, (int) len)) == NULL)
    return bvm_error (err, ENOMEM, "key");
  pkey = PEM_read_bio_PrivateKey (b, NULL, NULL, NULL);
  if (pkey != NULL)
    {
      BIO_free (b);
      return key_wrap (out, pkey, true, err);
    }
  BIO_free (b);
  if ((b = BIO_new_mem_buf (pem, (int) len)) == NULL)
    return bvm_error (err, ENOMEM, "key");
  pkey = PEM_read_bio_PUBKEY (b, NULL, NULL, NULL);
  BIO_free (b);
  if (pkey == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "not a PEM private or public key");
  return key_wrap (out, pkey, false, err);
}

int
attest_key_load (struct attest_key **out, const char *path, bool want_private, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  cleanup_free char *pem = NULL;
  struct stat st;
  size_t len = 0;
  int ret;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open key `%s`", path);
  if (want_private && fs_check_private_fd (&st, fd, path, "signing key", err) < 0)
    return -1;
  ret = fs_read_fd (&pem, &len, fd, ATTEST_KEY_FILE_MAX, path, err);
  if (ret == 0)
    ret = attest_key_from_pem (out, pem, len, err);
  if (pem)
    mem_wipe (pem, len);
  if (ret < 0)
    return bvm_error_wrap (err, "key `%s`", path);
  if (want_private && !(*out)->private)
    {
      attest_key_free (*out);
      *out = NULL;
      return bvm_error_code (err, BVM_E_INVALID, 0, "key `%s` is a public key, not a private one",
                             path);
    }
  return 0;
}

static int
key_private_pem (char **out, size_t *len, const struct attest_key *k, bvm_error_t *err)
{
  BIO *b = BIO_new (BIO_s_mem ());
  char *data;
  long n;

  if (b == NULL || PEM_write_bio_PrivateKey (b, k->pkey, NULL, NULL, 0, NULL, NULL) != 1
      || (n = BIO_get_mem_data (b, &data)) <= 0 || (*out = malloc ((size_t) n + 1)) == NULL)
    {
      BIO_free (b);
      return bvm_error (err, ENOMEM, "writing the key");
    }
  memcpy (*out, data, (size_t) n);
  (*out)[n] = '\0';
  *len = (size_t) n;
  OPENSSL_cleanse (data, (size_t) n);
  BIO_free (b);
  return 0;
}

int
attest_key_load_or_create (struct attest_key **out, bool *created, const char *path,
                           bvm_error_t *err)
{
  cleanup_free char *dir = NULL, *tmp = NULL, *pem = NULL;
  cleanup_close int fd = -1;
  size_t len = 0;
  char *slash;
  int ret;

  *created = false;
  if (access (path, F_OK) == 0 || errno != ENOENT)
    return attest_key_load (out, path, true, err);
  dir = xstrdup (path);
  if ((slash = strrchr (dir, '/')) != NULL && slash != dir)
    {
      *slash = '\0';
      if ((ret = fs_mkdir_p (dir, 0700, err)) < 0)
        return ret;
    }
  if (asprintf (&tmp, "%s.new.%ld", path, (long) getpid ()) < 0)
    {
      tmp = NULL;
      return bvm_error (err, ENOMEM, "key path");
    }
  if ((ret = attest_key_generate (out, err)) < 0)
    return ret;
  if ((ret = key_private_pem (&pem, &len, *out, err)) < 0)
    goto fail;
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    {
      ret = bvm_error (err, errno, "create `%s`", tmp);
      goto fail;
    }
  if (fs_write_all (fd, pem, len) < 0 || fsync (fd) < 0)
    {
      ret = bvm_error (err, errno, "write `%s`", tmp);
      unlink (tmp);
      goto fail;
    }
  /* link, not rename: a key another runner put there first is kept, and
   * both sign with that one */
  if (link (tmp, path) < 0)
    {
      int e = errno;
      unlink (tmp);
      attest_key_free (*out);
      *out = NULL;
      if (e == EEXIST)
        return attest_key_load (out, path, true, err);
      return bvm_error (err, e, "create key `%s`", path);
    }
  unlink (tmp);
  mem_wipe (pem, len);
  *created = true;
  return 0;
fail:
  if (pem)
    mem_wipe (pem, len);
  attest_key_free (*out);
  *out = NULL;
  return ret;
}

int
attest_key_public_pem (char **out, const struct attest_key *k, bvm_error_t *err)
{
  BIO *b = BIO_new (BIO_s_mem ());
  char *data;
  long n;

  if (b == NULL || PEM_write_bio_PUBKEY (b, k->pkey) != 1 || (n = BIO_get_mem_data (b, &data)) <= 0
      || (*out = malloc ((size_t) n + 1)) == NULL)
    {
      BIO_free (b);
      return bvm_error (err, ENOMEM, "public key");
    }
  memcpy (*out, data, (size_t) n);
  (*out)[n] = '\0';
  BIO_free (b);
  return 0;
}

const char *
attest_key_id (const struct attest_key *k)
{
  return k->id;
}

bool
attest_key_is_private (const struct attest_key *k)
{
  return k->private;
}

void
attest_key_free (struct attest_key *k)
{
  if (k == NULL)
    return;
  EVP_PKEY_free (k->pkey);
  free (k);
}

/* --- DSSE ------------------------------------------------------------------------- */

int
attest_pae (struct buf *out, const char *payload_type, const void *payload, size_t len)
{
  size_t tlen = strlen (payload_type);
  if (buf_addf (out, "DSSEv1 %zu %s %zu ", tlen, payload_type, len) < 0
      || buf_add (out, payload, len) < 0)
    return -1;
  return 0;
}

/* ECDSA with SHA-256; Ed25519 signs the message itself (no digest). */
static const EVP_MD *
key_md (const struct attest_key *k)
{
  return EVP_PKEY_get_id (k->pkey) == EVP_PKEY_ED25519 ? NULL : EVP_sha256 ();
}

int
attest_sign (char **out, size_t *out_len, const struct attest_key *k, const char *payload_type,
             const void *payload, size_t len, bvm_error_t *err)
{
  struct buf pae = BUF_INIT (len + 256);
  cleanup_free unsigned char *sig = NULL;
  cleanup_free char *b64_payload = NULL, *b64_sig = NULL;
  EVP_MD_CTX *ctx = NULL;
  size_t sig_len = 0;
  json_t *env;
  int ret = -1;

  if (!k->private)
    return bvm_error_code (err, BVM_E_INVALID, 0, "signing needs a private key");
  if (attest_pae (&pae, payload_type, payload, len) < 0)
    return bvm_error (err, ENOMEM, "PAE");
  if ((ctx = EVP_MD_CTX_new ()) == NULL
      || EVP_DigestSignInit (ctx, NULL, key_md (k), NULL, k->pkey) != 1
      || EVP_DigestSign (ctx, NULL, &sig_len, (const unsigned char *) pae.ptr, pae.len) != 1
      || (sig = malloc (sig_len)) == NULL
      || EVP_DigestSign (ctx, sig, &sig_len, (const unsigned char *) pae.ptr, pae.len) != 1)
    {
      ret = bvm_error (err, 0, "signing the attestation failed");
      goto cleanup;
    }
  if (attest__b64_encode (&b64_payload, payload, len) < 0
      || attest__b64_encode (&b64_sig, sig, sig_len) < 0)
    {
      ret = bvm_error (err, ENOMEM, "envelope");
      goto cleanup;
    }
  env = json_pack ("{s:s, s:s, s:[{s:s, s:s}]}", "payloadType", payload_type, "payload",
                   b64_payload, "signatures", "keyid", k->id, "sig", b64_sig);
  *out = env ? json_dumps (env, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref (env);
  if (*out == NULL)
    {
      ret = bvm_error (err, ENOMEM, "envelope");
      goto cleanup;
    }
  *out_len = strlen (*out);
  ret = 0;
cleanup:
  EVP_MD_CTX_free (ctx);
  buf_dispose (&pae);
  return ret;
}

static bool
sig_ok (const struct attest_key *k, const struct buf *pae, const unsigned char *sig, size_t len)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  bool ok = ctx != NULL && EVP_DigestVerifyInit (ctx, NULL, key_md (k), NULL, k->pkey) == 1
            && EVP_DigestVerify (ctx, sig, len, (const unsigned char *) pae->ptr, pae->len) == 1;
  EVP_MD_CTX_free (ctx);
  return ok;
}

int
attest_verify (char **payload, size_t *payload_len, const struct attest_key *k,
               const char *envelope, size_t len, const char *payload_type, bvm_error_t *err)
{
  cleanup_json json_t *env = NULL;
  cleanup_free unsigned char *body = NULL;
  const char *type, *b64;
  json_t *sigs, *s;
  size_t body_len = 0, i;
  struct buf pae;
  bool ok = false;

  if (len > ATTEST_ENVELOPE_MAX)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the envelope is larger than %u bytes",
                           ATTEST_ENVELOPE_MAX);
  env = json_loadb (envelope, len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object (env))
    return bvm_error_code (err, BVM_E_DENIED, 0, "the attestation is not a DSSE envelope");
  type = json_string_value (json_object_get (env, "payloadType"));
  b64 = json_string_value (json_object_get (env, "payload"));
  sigs = json_object_get (env, "signatures");
  if (type == NULL || b64 == NULL || !json_is_array (sigs))
    return bvm_error_code (err, BVM_E_DENIED, 0,
                           "the envelope lacks payloadType, payload or signatures");
  if (strcmp (type, payload_type) != 0)
    {
      char shown[256];
      return bvm_error_code (err, BVM_E_DENIED, 0, "the envelope's payloadType is `%s`, not `%s`",
                             str_escape (shown, sizeof shown, type, strlen (type), 100),
                             payload_type);
    }
  if (json_array_size (sigs) == 0 || json_array_size (sigs) > SIGNATURES_MAX)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the envelope has %zu signatures",
                           json_array_size (sigs));
  if (attest__b64_decode (&body, &body_len, b64, strlen (b64)) < 0)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the envelope's payload is not base64");
  buf_init (&pae, body_len + 256);
  if (attest_pae (&pae, type, body, body_len) < 0)
    {
      buf_dispose (&pae);
      return bvm_error (err, ENOMEM, "PAE");
    }
  json_array_foreach (sigs, i, s)
    {
      const char *sb = json_string_value (json_object_get (s, "sig"));
      unsigned char *sig = NULL;
      size_t sig_len = 0;
      if (sb == NULL || attest__b64_decode (&sig, &sig_len, sb, strlen (sb)) < 0)
        continue;
      ok = sig_ok (k, &pae, sig, sig_len);
      free (sig);
      if (ok)
        break;
    }
  buf_dispose (&pae);
  if (!ok)
    return bvm_error_code (err, BVM_E_DENIED, 0,
                           "the signature does not verify with key %s (another key, or the "
                           "statement was changed)",
                           k->id);
  /* NUL-terminated for the JSON parser */
  {
    char *p = realloc (body, body_len + 1);
    if (p == NULL)
      return bvm_error (err, ENOMEM, "payload");
    p[body_len] = '\0';
    body = NULL;
    *payload = p;
    *payload_len = body_len;
  }
  return 0;
}

/* --- the statement ---------------------------------------------------------------- */

static int
set_str (json_t *o, const char *key, const char *v)
{
  return v ? json_object_set_new (o, key, json_string (v)) : 0;
}

static int
set_json (json_t *o, const char *key, const json_t *v)
{
  return v ? json_object_set_new (o, key, json_deep_copy (v)) : 0;
}

/* {"sha256": "<hex>"} from "sha256:<hex>" */
static json_t *
digest_set (const char *d)
{
  return json_pack ("{s:s}", "sha256", d + 7);
}

static int
add_descriptor (json_t *arr, const char *name, const char *uri, const char *digest,
                const char *media_type)
{
  json_t *o = json_object ();
  int r = 0;

  if (o == NULL)
    return -1;
  r |= set_str (o, "name", name);
  r |= set_str (o, "uri", uri);
  if (digest)
    r |= json_object_set_new (o, "digest", digest_set (digest));
  r |= set_str (o, "mediaType", media_type);
  r |= json_array_append_new (arr, o);
  return r;
}

static bool
digest_ok (const char *d)
{
  return d != NULL && digest_problem (d) == NULL;
}

int
attest_statement (json_t **out, const struct attest_provenance *p, bvm_error_t *err)
{
  cleanup_json json_t *st = NULL;
  json_t *subjects, *ext, *intl, *deps, *bdeps, *byp, *meta, *builder, *bdef, *run, *req, *src;
  char invocation[512];
  size_t i;
  json_t *d;
  int r = 0;

  bool image = p->image_name != NULL && digest_ok (p->image_digest);
  bool artifacts = p->artifacts_name != NULL && digest_ok (p->artifacts_digest);

  if ((!image && !artifacts) || p->app == NULL || p->commit == NULL || p->builder_id == NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "provenance without a subject or a builder");
  st = json_object ();
  subjects = json_array ();
  ext = json_object ();
  intl = json_object ();
  deps = json_array ();
  bdeps = json_array ();
  byp = json_array ();
  meta = json_object ();
  builder = json_object ();
  bdef = json_object ();
  run = json_object ();
  req = json_object ();
  src = json_object ();
  /* set_new takes the references, even on failure */
  r |= json_object_set_new (st, "_type", json_string (ATTEST_STATEMENT_TYPE));
  r |= json_object_set_new (st, "subject", subjects);
  r |= json_object_set_new (st, "predicateType", json_string (ATTEST_PREDICATE_SLSA));
  r |= json_object_set_new (st, "predicate",
                            json_pack ("{s:o, s:o}", "buildDefinition", bdef, "runDetails", run));
  if (r != 0 || ext == NULL || intl == NULL || deps == NULL || bdeps == NULL || byp == NULL
      || meta == NULL || builder == NULL || req == NULL || src == NULL)
    {
      json_decref (ext), json_decref (intl), json_decref (deps), json_decref (bdeps);
      json_decref (byp), json_decref (meta), json_decref (builder), json_decref (req);
      json_decref (src);
      return bvm_error (err, ENOMEM, "statement");
    }

  /* subjects: the image by its manifest digest, the artifact index */
  if (image)
    r |= json_array_append_new (subjects, json_pack ("{s:s, s:o}", "name", p->image_name, "digest",
                                                     digest_set (p->image_digest)));
  if (artifacts)
    r |= json_array_append_new (subjects, json_pack ("{s:s, s:o}", "name", p->artifacts_name,
                                                     "digest", digest_set (p->artifacts_digest)));

  /* buildDefinition: what was asked (external) and how the runner ran it
   * (internal) */
  r |= json_object_set_new (bdef, "buildType", json_string (ATTEST_BUILD_TYPE));
  r |= json_object_set_new (bdef, "externalParameters", ext);
  r |= json_object_set_new (bdef, "internalParameters", intl);
  r |= json_object_set_new (bdef, "resolvedDependencies", deps);
  r |= set_str (req, "app", p->app);
  r |= set_str (req, "repository", p->repo);
  r |= set_str (req, "commit", p->commit);
  r |= set_str (req, "ref", p->ref);
  r |= set_str (req, "job", p->job_id);
  r |= set_json (req, "request", p->request);
  r |= json_object_set_new (ext, "deploy", req);
  r |= set_str (src, "path", "buildvm.json");
  if (digest_ok (p->spec_digest))
    r |= json_object_set_new (src, "digest", digest_set (p->spec_digest));
  r |= set_json (src, "resolved", p->spec);
  r |= json_object_set_new (ext, "buildSpec", src);
  r |= set_json (intl, "role", p->role);
  r |= set_json (intl, "egress", p->egress);
  r |= set_json (intl, "resources", p->resources);
  r |= set_str (intl, "profile", p->profile);
  r |= json_object_set_new (intl, "attempt", json_integer (p->attempt));
  {
    json_t *git = json_pack ("{s:s, s:{s:s}}", "uri", p->repo ? p->repo : "", "digest",
                             "gitCommit", p->commit);
    if (git && p->ref)
      r |= json_object_set_new (git, "annotations", json_pack ("{s:s}", "ref", p->ref));
    r |= json_array_append_new (deps, git);
  }
  if (p->base_name && digest_ok (p->base_digest))
    r |= add_descriptor (deps, "base-image", p->base_name, p->base_digest,
                         "application/vnd.oci.image.manifest.v1+json");
  json_array_foreach (p->dependencies, i, d)
    r |= json_array_append_new (deps, json_deep_copy (d));

  /* runDetails: the builder and its own components (the build VM) */
  r |= json_object_set_new (run, "builder", builder);
  r |= json_object_set_new (run, "metadata", meta);
  r |= json_object_set_new (run, "byproducts", byp);
  r |= set_str (builder, "id", p->builder_id);
  if (p->version)
    r |= json_object_set_new (builder, "version", json_pack ("{s:s}", "buildvm", p->version));
  if (digest_ok (p->kernel))
    r |= add_descriptor (bdeps, "vm-kernel", NULL, p->kernel, NULL);
  if (digest_ok (p->rootfs))
    r |= add_descriptor (bdeps, "vm-rootfs", NULL, p->rootfs, NULL);
  r |= json_object_set_new (builder, "builderDependencies", bdeps);
  snprintf (invocation, sizeof invocation, "%s/%s#%u", p->app, p->job_id ? p->job_id : "?",
            p->attempt);
  r |= set_str (meta, "invocationId", invocation);
  r |= set_str (meta, "startedOn", p->started);
  r |= set_str (meta, "finishedOn", p->finished);
  if (digest_ok (p->sbom_digest))
    r |= add_descriptor (byp, "sbom", NULL, p->sbom_digest, p->sbom_media_type);
  if (r != 0)
    return bvm_error (err, ENOMEM, "statement");
  *out = steal_pointer (&st);
  return 0;
}

/* --- checking a statement ----------------------------------------------------------- */

static const json_t *
path_get (const json_t *o, const char *const *keys)
{
  for (; *keys && o; keys++)
    o = json_object_get (o, *keys);
  return o;
}

static const char *
dep_digest (const json_t *arr, const char *name)
{
  size_t i;
  json_t *d;
  json_array_foreach (arr, i, d)
    {
      const char *n = json_string_value (json_object_get (d, "name"));
      if (n && strcmp (n, name) == 0)
        return json_string_value (json_object_get (json_object_get (d, "digest"), "sha256"));
    }
  return NULL;
}

const char *
attest_field (const json_t *st, const char *name)
{
  static const char *const deploy[] = { "predicate", "buildDefinition", "externalParameters",
                                        "deploy", NULL };
  static const char *const builder[] = { "predicate", "runDetails", "builder", NULL };
  static const char *const meta[] = { "predicate", "runDetails", "metadata", NULL };
  static const char *const intl[] = { "predicate", "buildDefinition", "internalParameters", NULL };
  const json_t *o;

  if (strcmp (name, "app") == 0 || strcmp (name, "commit") == 0 || strcmp (name, "ref") == 0)
    return json_string_value (json_object_get (path_get (st, deploy), name));
  if (strcmp (name, "repo") == 0)
    return json_string_value (json_object_get (path_get (st, deploy), "repository"));
  if (strcmp (name, "job") == 0)
    return json_string_value (json_object_get (path_get (st, deploy), "job"));
  if (strcmp (name, "builder") == 0)
    return json_string_value (json_object_get (path_get (st, builder), "id"));
  if (strcmp (name, "finished") == 0)
    return json_string_value (json_object_get (path_get (st, meta), "finishedOn"));
  if (strcmp (name, "profile") == 0)
    return json_string_value (json_object_get (path_get (st, intl), "profile"));
  if (strcmp (name, "kernel") == 0 || strcmp (name, "rootfs") == 0)
    {
      o = json_object_get (path_get (st, builder), "builderDependencies");
      return dep_digest (o, strcmp (name, "kernel") == 0 ? "vm-kernel" : "vm-rootfs");
    }
  return NULL;
}

/* "sha256:<hex>" and "<hex>" both name the same digest */
static bool
same_digest (const char *hex, const char *want)
{
  if (hex == NULL || want == NULL)
    return false;
  if (strncmp (want, "sha256:", 7) == 0)
    want += 7;
  return strcmp (hex, want) == 0;
}

static int
expect_eq (const json_t *st, const char *field, const char *want, bvm_error_t *err)
{
  const char *got = attest_field (st, field);
  bool digest = strcmp (field, "kernel") == 0 || strcmp (field, "rootfs") == 0;

  if (want == NULL)
    return 0;
  if (got != NULL && (digest ? same_digest (got, want) : strcmp (got, want) == 0))
    return 0;
  {
    char g[512], w[512];
    if (got == NULL)
      got = "(none)";
    return bvm_error_code (err, BVM_E_DENIED, 0, "the provenance names %s `%s`, not `%s`", field,
                           str_escape (g, sizeof g, got, strlen (got), 200),
                           str_escape (w, sizeof w, want, strlen (want), 200));
  }
}

int
attest_check (json_t **statement, const char *payload, size_t len,
              const struct attest_expect *want, bvm_error_t *err)
{
  static const char *const bdef_keys[] = { "predicate", "buildDefinition", NULL };
  static const char *const run_keys[] = { "predicate", "runDetails", NULL };
  cleanup_json json_t *st = NULL;
  const json_t *subjects, *bdef, *run, *s;
  const char *name = NULL;
  bool found = false;
  size_t i;
  int ret;

  if (statement)
    *statement = NULL;
  st = json_loadb (payload, len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object (st))
    return bvm_error_code (err, BVM_E_DENIED, 0, "the signed payload is not a JSON object");
  /* the layout: in-toto Statement v1, SLSA Provenance v1 */
  if (!json_is_string (json_object_get (st, "_type"))
      || strcmp (json_string_value (json_object_get (st, "_type")), ATTEST_STATEMENT_TYPE) != 0)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the payload is not an in-toto Statement v1");
  if (!json_is_string (json_object_get (st, "predicateType"))
      || strcmp (json_string_value (json_object_get (st, "predicateType")), ATTEST_PREDICATE_SLSA)
             != 0)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the predicate is not SLSA Provenance v1");
  subjects = json_object_get (st, "subject");
  bdef = path_get (st, bdef_keys);
  run = path_get (st, run_keys);
  if (!json_is_array (subjects) || json_array_size (subjects) == 0 || !json_is_object (bdef)
      || !json_is_string (json_object_get (bdef, "buildType"))
      || !json_is_object (json_object_get (bdef, "externalParameters")) || !json_is_object (run)
      || !json_is_string (json_object_get (json_object_get (run, "builder"), "id")))
    return bvm_error_code (err, BVM_E_DENIED, 0,
                           "the statement lacks subject, buildDefinition or runDetails.builder");
  json_array_foreach (subjects, i, s)
    {
      const char *h = json_string_value (
          json_object_get (json_object_get (s, "digest"), "sha256"));
      const char *n = json_string_value (json_object_get (s, "name"));
      if (!same_digest (h, want->digest))
        continue;
      if (want->subject_name == NULL || (n && strcmp (n, want->subject_name) == 0))
        found = true;
      else if (name == NULL)
        name = n ? n : "(none)";
    }
  if (!found && name != NULL)
    {
      char shown[512];
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "the attestation is for repository `%s`, not `%s`",
                             str_escape (shown, sizeof shown, name, strlen (name), 200),
                             want->subject_name);
    }
  if (!found)
    return bvm_error_code (err, BVM_E_DENIED, 0, "the attestation is for another image, not `%s`",
                           want->digest);
  if ((ret = expect_eq (st, "app", want->app, err)) < 0
      || (ret = expect_eq (st, "repo", want->repo, err)) < 0
      || (ret = expect_eq (st, "commit", want->commit, err)) < 0
      || (ret = expect_eq (st, "kernel", want->kernel, err)) < 0
      || (ret = expect_eq (st, "rootfs", want->rootfs, err)) < 0
      || (ret = expect_eq (st, "builder", want->builder_id, err)) < 0)
    return ret;
  if (statement)
    *statement = steal_pointer (&st);
  return 0;
}
