/* test_attest.c - DSSE envelopes, keys, the provenance statement and the SBOM
 *
 * The signature checks are independent of attest.c where it matters: the
 * PAE is compared with the DSSE spec's own example, and an envelope's
 * signature is verified with the openssl command line on the PAE bytes.
 */
#include "support.h"

#include "attest.h"
#include "attest_oci.h"
#include "buf.h"
#include "registry.h"
#include "sbom.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define OTHER "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define KERNEL "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define ROOTFS "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static struct attest_key *
new_key (void)
{
  struct attest_key *k = NULL;
  bvm_error_t err = NULL;
  assert_ok (attest_key_generate (&k, &err), &err);
  return k;
}

static void
test_pae_matches_the_spec (void **state)
{
  struct buf b = BUF_INIT (1024);
  (void) state;
  /* the example of DSSE v1.0.0 protocol.md */
  assert_int_equal (attest_pae (&b, "http://example.com/HelloWorld", "hello world", 11), 0);
  assert_string_equal (buf_cstr (&b), "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  buf_reset (&b);
  assert_int_equal (attest_pae (&b, "", "", 0), 0);
  assert_string_equal (buf_cstr (&b), "DSSEv1 0  0 ");
  buf_dispose (&b);
}

static void
test_base64 (void **state)
{
  unsigned char *out = NULL;
  size_t n = 0;
  char *enc = NULL;
  (void) state;
  assert_int_equal (attest__b64_encode (&enc, "\xfb\xff", 2), 0);
  assert_string_equal (enc, "+/8=");
  assert_int_equal (attest__b64_decode (&out, &n, enc, strlen (enc)), 0);
  assert_int_equal (n, 2);
  assert_memory_equal (out, "\xfb\xff", 2);
  free (out);
  /* URL-safe, without padding: DSSE allows both */
  assert_int_equal (attest__b64_decode (&out, &n, "-_8", 3), 0);
  assert_int_equal (n, 2);
  assert_memory_equal (out, "\xfb\xff", 2);
  free (out);
  assert_int_equal (attest__b64_decode (&out, &n, "a$b=", 4), -1);
  assert_int_equal (attest__b64_decode (&out, &n, "abcde", 5), -1);
  free (enc);
}

static void
test_sign_verify (void **state)
{
  struct attest_key *k = new_key ();
  bvm_error_t err = NULL;
  char *env = NULL, *payload = NULL;
  size_t len = 0, plen = 0;
  (void) state;

  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, "{\"a\":1}", 7, &err), &err);
  assert_ok (attest_verify (&payload, &plen, k, env, len, ATTEST_PAYLOAD_TYPE, &err), &err);
  assert_int_equal (plen, 7);
  assert_string_equal (payload, "{\"a\":1}");
  free (payload);
  /* the payload type is signed too: asked for another, refused */
  assert_fails_with (attest_verify (&payload, &plen, k, env, len, "application/json", &err), &err,
                     "payloadType");
  free (env);
  attest_key_free (k);
}

/* Replace the envelope's payload with another (validly encoded) one: the
 * signature no longer matches. */
static void
test_tampered_payload_refused (void **state)
{
  struct attest_key *k = new_key ();
  bvm_error_t err = NULL;
  char *env = NULL, *payload = NULL, *b64 = NULL, *text;
  size_t len = 0, plen = 0;
  json_t *doc;
  (void) state;

  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, "{\"app\":\"a\"}", 11, &err), &err);
  doc = json_loads (env, 0, NULL);
  assert_non_null (doc);
  assert_int_equal (attest__b64_encode (&b64, "{\"app\":\"b\"}", 11), 0);
  json_object_set_new (doc, "payload", json_string (b64));
  text = json_dumps (doc, JSON_COMPACT);
  assert_fails_with (attest_verify (&payload, &plen, k, text, strlen (text), ATTEST_PAYLOAD_TYPE,
                                    &err),
                     &err, "does not verify");
  /* a changed signature byte */
  free (text);
  json_object_set_new (doc, "payload", json_string ("eyJhcHAiOiJhIn0="));
  {
    json_t *sig = json_array_get (json_object_get (doc, "signatures"), 0);
    char *s = strdup (json_string_value (json_object_get (sig, "sig")));
    s[10] = s[10] == 'A' ? 'B' : 'A';
    json_object_set_new (sig, "sig", json_string (s));
    free (s);
  }
  text = json_dumps (doc, JSON_COMPACT);
  assert_fails_with (attest_verify (&payload, &plen, k, text, strlen (text), ATTEST_PAYLOAD_TYPE,
                                    &err),
                     &err, "does not verify");
  /* not an envelope at all */
  assert_fails_with (attest_verify (&payload, &plen, k, "[1]", 3, ATTEST_PAYLOAD_TYPE, &err), &err,
                     "not a DSSE envelope");
  free (text);
  free (b64);
  json_decref (doc);
  free (env);
  attest_key_free (k);
}

static void
test_wrong_key_refused (void **state)
{
  struct attest_key *k = new_key (), *other = new_key (), *pub = NULL;
  bvm_error_t err = NULL;
  char *env = NULL, *payload = NULL, *pem = NULL;
  size_t len = 0, plen = 0;
  (void) state;

  assert_string_not_equal (attest_key_id (k), attest_key_id (other));
  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, "x", 1, &err), &err);
  assert_fails_with (attest_verify (&payload, &plen, other, env, len, ATTEST_PAYLOAD_TYPE, &err),
                     &err, attest_key_id (other));
  /* the public half verifies, and cannot sign */
  assert_ok (attest_key_public_pem (&pem, k, &err), &err);
  assert_non_null (strstr (pem, "BEGIN PUBLIC KEY"));
  assert_ok (attest_key_from_pem (&pub, pem, strlen (pem), &err), &err);
  assert_false (attest_key_is_private (pub));
  assert_string_equal (attest_key_id (pub), attest_key_id (k));
  assert_ok (attest_verify (&payload, &plen, pub, env, len, ATTEST_PAYLOAD_TYPE, &err), &err);
  free (payload);
  free (env);
  assert_fails_with (attest_sign (&env, &len, pub, ATTEST_PAYLOAD_TYPE, "x", 1, &err), &err,
                     "private key");
  free (pem);
  attest_key_free (pub);
  attest_key_free (other);
  attest_key_free (k);
}

/* openssl, not attest.c, checks the signature over the PAE bytes; an
 * Ed25519 key made by openssl signs and verifies too. */
static void
test_openssl_agrees (void **state)
{
  char *dir = t_tmpdir ();
  struct attest_key *k = NULL;
  bvm_error_t err = NULL;
  char path[512], *env = NULL, *pem = NULL, *payload = NULL;
  struct buf pae = BUF_INIT (4096);
  size_t len = 0, plen = 0;
  unsigned char *sig = NULL;
  size_t sig_len = 0;
  json_t *doc;
  bool created = false;
  FILE *f;
  (void) state;

  snprintf (path, sizeof path, "%s/keys/signing.pem", dir);
  assert_ok (attest_key_load_or_create (&k, &created, path, &err), &err);
  assert_true (created);
  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, "{}", 2, &err), &err);
  doc = json_loads (env, 0, NULL);
  assert_int_equal (
      attest__b64_decode (&sig, &sig_len,
                          json_string_value (
                              json_object_get (json_array_get (json_object_get (doc, "signatures"),
                                                               0),
                                               "sig")),
                          strlen (json_string_value (
                              json_object_get (json_array_get (json_object_get (doc, "signatures"),
                                                               0),
                                               "sig")))),
      0);
  assert_int_equal (attest_pae (&pae, ATTEST_PAYLOAD_TYPE, "{}", 2), 0);
  snprintf (path, sizeof path, "%s/pae", dir);
  f = fopen (path, "w");
  fwrite (pae.ptr, 1, pae.len, f);
  fclose (f);
  snprintf (path, sizeof path, "%s/sig", dir);
  f = fopen (path, "w");
  fwrite (sig, 1, sig_len, f);
  fclose (f);
  assert_ok (attest_key_public_pem (&pem, k, &err), &err);
  snprintf (path, sizeof path, "%s/pub.pem", dir);
  t_write (path, pem);
  assert_int_equal (t_sh ("openssl dgst -sha256 -verify %s/pub.pem -signature %s/sig %s/pae "
                          ">/dev/null",
                          dir, dir, dir),
                    0);
  free (env);
  free (sig);
  free (pem);
  json_decref (doc);
  attest_key_free (k);

  /* Ed25519 */
  assert_int_equal (t_sh ("openssl genpkey -algorithm ed25519 -out %s/ed.pem 2>/dev/null", dir),
                    0);
  snprintf (path, sizeof path, "%s/ed.pem", dir);
  chmod (path, 0600);
  assert_ok (attest_key_load (&k, path, true, &err), &err);
  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, "{}", 2, &err), &err);
  assert_ok (attest_verify (&payload, &plen, k, env, len, ATTEST_PAYLOAD_TYPE, &err), &err);
  free (payload);
  free (env);
  attest_key_free (k);
  buf_dispose (&pae);
  t_tmpdir_free (dir);
}

static void
test_key_files (void **state)
{
  char *dir = t_tmpdir ();
  struct attest_key *k = NULL, *again = NULL;
  bvm_error_t err = NULL;
  char path[512];
  struct stat st;
  bool created = true;
  (void) state;

  snprintf (path, sizeof path, "%s/k.pem", dir);
  assert_ok (attest_key_load_or_create (&k, &created, path, &err), &err);
  assert_true (created);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0600);
  assert_ok (attest_key_load_or_create (&again, &created, path, &err), &err);
  assert_false (created);
  assert_string_equal (attest_key_id (k), attest_key_id (again));
  attest_key_free (again);
  /* readable by others: refused like the registry credentials */
  chmod (path, 0644);
  assert_fails_with (attest_key_load (&again, path, true, &err), &err, "group or others");
  /* a public key is not a signing key */
  snprintf (path, sizeof path, "%s/pub.pem", dir);
  {
    char *pem = NULL;
    assert_ok (attest_key_public_pem (&pem, k, &err), &err);
    t_write (path, pem);
    free (pem);
  }
  chmod (path, 0600);
  assert_fails_with (attest_key_load (&again, path, true, &err), &err, "public key");
  assert_ok (attest_key_load (&again, path, false, &err), &err);
  attest_key_free (again);
  /* not a key; an RSA key */
  t_write (path, "hello\n");
  assert_fails_with (attest_key_load (&again, path, false, &err), &err, "not a PEM");
  assert_int_equal (t_sh ("openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024 -out "
                          "%s/rsa.pem 2>/dev/null",
                          dir),
                    0);
  snprintf (path, sizeof path, "%s/rsa.pem", dir);
  assert_fails_with (attest_key_load (&again, path, false, &err), &err, "neither");
  attest_key_free (k);
  t_tmpdir_free (dir);
}

static void
provenance (struct attest_provenance *p, json_t *deps)
{
  memset (p, 0, sizeof *p);
  p->builder_id = "https://runner.example/r1";
  p->version = "test";
  p->app = "hello";
  p->repo = "https://git.example/hello.git";
  p->commit = COMMIT;
  p->ref = "refs/heads/main";
  p->job_id = "job-1";
  p->attempt = 1;
  p->spec_digest = OTHER;
  p->profile = "minimal";
  p->kernel = KERNEL;
  p->rootfs = ROOTFS;
  p->started = "2026-01-01T00:00:00Z";
  p->finished = "2026-01-01T00:00:10Z";
  p->image_name = "apps/hello";
  p->image_digest = IMG;
  p->sbom_digest = OTHER;
  p->sbom_media_type = SBOM_MEDIA_TYPE;
  p->dependencies = deps;
}

static char *
statement_text (const struct attest_provenance *p)
{
  json_t *st = NULL;
  bvm_error_t err = NULL;
  char *s;
  assert_ok (attest_statement (&st, p, &err), &err);
  s = json_dumps (st, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref (st);
  return s;
}

static void
test_statement_layout_and_checks (void **state)
{
  struct attest_provenance p;
  struct attest_expect want = { .digest = IMG };
  json_t *st = NULL, *deps = json_pack ("[{s:s}]", "uri", "pkg:npm/x@1");
  bvm_error_t err = NULL;
  char *s;
  (void) state;

  provenance (&p, deps);
  s = statement_text (&p);
  assert_ok (attest_check (&st, s, strlen (s), &want, &err), &err);
  assert_string_equal (json_string_value (json_object_get (st, "_type")),
                       "https://in-toto.io/Statement/v1");
  assert_string_equal (json_string_value (json_object_get (st, "predicateType")),
                       "https://slsa.dev/provenance/v1");
  assert_string_equal (attest_field (st, "app"), "hello");
  assert_string_equal (attest_field (st, "commit"), COMMIT);
  assert_string_equal (attest_field (st, "kernel"), KERNEL + 7);
  assert_string_equal (attest_field (st, "builder"), "https://runner.example/r1");
  assert_non_null (strstr (s, "\"buildType\":\"" ATTEST_BUILD_TYPE "\""));
  assert_non_null (strstr (s, "\"gitCommit\":\"" COMMIT "\""));
  assert_non_null (strstr (s, "pkg:npm/x@1"));
  json_decref (st);

  /* each expectation refused with its reason */
  want.app = "hello";
  want.commit = COMMIT;
  want.kernel = KERNEL;
  want.rootfs = ROOTFS + 7; /* with or without "sha256:" */
  assert_ok (attest_check (NULL, s, strlen (s), &want, &err), &err);
  want.app = "other";
  assert_fails_with (attest_check (NULL, s, strlen (s), &want, &err), &err,
                     "names app `hello`, not `other`");
  want.app = NULL;
  want.commit = "ffffffffffffffffffffffffffffffffffffffff";
  assert_fails_with (attest_check (NULL, s, strlen (s), &want, &err), &err, "names commit");
  want.commit = NULL;
  want.kernel = OTHER;
  assert_fails_with (attest_check (NULL, s, strlen (s), &want, &err), &err, "names kernel");
  want.kernel = NULL;
  /* another image's digest */
  want.digest = OTHER;
  want.rootfs = NULL;
  assert_fails_with (attest_check (NULL, s, strlen (s), &want, &err), &err, "another image");
  free (s);

  /* the layout itself */
  want.digest = IMG;
  assert_fails_with (attest_check (NULL, "{\"_type\":\"x\"}", 13, &want, &err), &err,
                     "not an in-toto Statement v1");
  {
    const char *v = "{\"_type\":\"https://in-toto.io/Statement/v1\",\"predicateType\":"
                    "\"https://slsa.dev/provenance/v1\",\"subject\":[]}";
    assert_fails_with (attest_check (NULL, v, strlen (v), &want, &err), &err, "lacks subject");
  }
  assert_fails_with (attest_check (NULL, "nope", 4, &want, &err), &err, "not a JSON object");
  json_decref (deps);
}

/* The whole path a verifier takes: sign the statement, change one byte of
 * the payload, and the signature refuses it before any field is read. */
static void
test_signed_statement_one_byte (void **state)
{
  struct attest_provenance p;
  struct attest_key *k = new_key ();
  struct attest_expect want = { .digest = IMG, .app = "hello" };
  bvm_error_t err = NULL;
  char *s, *env = NULL, *payload = NULL, *b64 = NULL, *text;
  size_t len = 0, plen = 0;
  json_t *doc;
  (void) state;

  provenance (&p, NULL);
  s = statement_text (&p);
  assert_ok (attest_sign (&env, &len, k, ATTEST_PAYLOAD_TYPE, s, strlen (s), &err), &err);
  assert_ok (attest_verify (&payload, &plen, k, env, len, ATTEST_PAYLOAD_TYPE, &err), &err);
  assert_ok (attest_check (NULL, payload, plen, &want, &err), &err);
  free (payload);
  /* "hello" -> "hellp" inside the signed bytes */
  {
    char *at = strstr (s, "\"app\":\"hello\"");
    assert_non_null (at);
    at[11] = 'p';
  }
  doc = json_loads (env, 0, NULL);
  assert_int_equal (attest__b64_encode (&b64, s, strlen (s)), 0);
  json_object_set_new (doc, "payload", json_string (b64));
  text = json_dumps (doc, JSON_COMPACT);
  assert_fails_with (attest_verify (&payload, &plen, k, text, strlen (text), ATTEST_PAYLOAD_TYPE,
                                    &err),
                     &err, "does not verify");
  free (text);
  free (b64);
  json_decref (doc);
  free (env);
  free (s);
  attest_key_free (k);
}

/* --- the SBOM ---------------------------------------------------------------------- */

static const char npm_lock[]
    = "{\"name\":\"app\",\"lockfileVersion\":3,\"packages\":{\"\":{\"name\":\"app\"},"
      "\"node_modules/express\":{\"version\":\"4.18.2\",\"resolved\":\"https://r/express.tgz\","
      "\"integrity\":\"sha512-AAAA\"},"
      "\"node_modules/@types/node\":{\"version\":\"20.1.0\"},"
      "\"node_modules/a/node_modules/b\":{\"version\":\"1.0.0\"},"
      "\"packages/ws\":{\"link\":true}}}";

static const char pip_lock[]
    = "# pinned\n"
      "Flask==2.3.2 \\\n"
      "    --hash=sha256:77fd4e1249d8c9923de34907236b747ced06e5467ecac1a7bb7115ae0e9670b0\n"
      "zope.interface==6.0 ; python_version >= \"3.8\"\n"
      "-r other.txt\n"
      "requests>=2\n";

static const char go_sum[]
    = "github.com/pkg/errors v0.9.1 h1:FEBLx1zS214owpjy7qsBeixbURkuhQAwrK5UwLGTwt4=\n"
      "github.com/pkg/errors v0.9.1/go.mod h1:bwawxfHBFNV+L2hUp1rHADufV3IMtnDRdf1r5NINEl0=\n";

static const char cargo_lock[]
    = "version = 3\n\n[[package]]\nname = \"libc\"\nversion = \"0.2.147\"\n"
      "source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
      "checksum = "
      "\"b4668fb0ea861c1df094127ac5f1da3409a82116a4ba74fca2e58ef927159bb3\"\n"
      "\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n";

static void
test_sbom_lockfiles (void **state)
{
  struct sbom *s = NULL;
  struct sbom_meta m = { "apps/hello", COMMIT, IMG, "2026-01-01T00:00:00Z", "test" };
  bvm_error_t err = NULL;
  char *text = NULL;
  size_t len = 0;
  json_t *doc;
  (void) state;

  assert_ok (sbom_new (&s, 0, &err), &err);
  assert_ok (sbom_add_lockfile (s, "package-lock.json", npm_lock, strlen (npm_lock), &err), &err);
  assert_ok (sbom_add_lockfile (s, "requirements.txt", pip_lock, strlen (pip_lock), &err), &err);
  assert_ok (sbom_add_lockfile (s, "go.sum", go_sum, strlen (go_sum), &err), &err);
  assert_ok (sbom_add_lockfile (s, "Cargo.lock", cargo_lock, strlen (cargo_lock), &err), &err);
  assert_ok (sbom_set_base (s, "base/node:18", OTHER, "libc6=2.36-9+deb12u4 zlib1g=1:1.2.13",
                            &err),
             &err);
  assert_ok (sbom_add_file (s, "app/index.js", KERNEL, 42, &err), &err);
  /* npm: 3 (the root and the link are not packages); pip: 2 pins; go: 1;
   * cargo: 2; base: 2 */
  assert_int_equal (sbom_package_count (s), 3 + 2 + 1 + 2 + 2);
  assert_int_equal (sbom_file_count (s), 1);
  assert_ok (sbom_to_json (&text, &len, s, &m, &err), &err);
  doc = json_loads (text, 0, NULL);
  assert_non_null (doc);
  assert_string_equal (json_string_value (json_object_get (doc, "bomFormat")), "CycloneDX");
  assert_string_equal (json_string_value (json_object_get (doc, "specVersion")), "1.5");
  assert_non_null (strstr (text, "\"purl\":\"pkg:npm/express@4.18.2\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:npm/%40types/node@20.1.0\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:npm/b@1.0.0\""));
  assert_non_null (strstr (text, "\"alg\":\"SHA-512\",\"content\":\"000000\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:pypi/flask@2.3.2\""));
  assert_non_null (
      strstr (text, "77fd4e1249d8c9923de34907236b747ced06e5467ecac1a7bb7115ae0e9670b0"));
  assert_non_null (strstr (text, "\"purl\":\"pkg:pypi/zope-interface@6.0\""));
  assert_null (strstr (text, "requests"));
  assert_non_null (strstr (text, "\"purl\":\"pkg:golang/github.com/pkg/errors@v0.9.1\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:cargo/libc@0.2.147\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:deb/debian/libc6@2.36-9%2Bdeb12u4\""));
  assert_non_null (strstr (text, "\"purl\":\"pkg:deb/debian/zlib1g@1%3A1.2.13\""));
  assert_non_null (strstr (text, "\"name\":\"app/index.js\""));
  assert_int_equal (json_array_size (sbom_dependencies (s)), 8);
  json_decref (doc);
  free (text);
  sbom_free (s);
}

static void
test_sbom_caps_and_hostile_lockfiles (void **state)
{
  struct sbom *s = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (sbom_new (&s, 2, &err), &err);
  assert_fails_with (sbom_add_lockfile (s, "package-lock.json", npm_lock, strlen (npm_lock), &err),
                     &err, "more than 2 components");
  sbom_free (s);
  assert_ok (sbom_new (&s, 0, &err), &err);
  assert_fails_with (sbom_add_lockfile (s, "package-lock.json", "[1", 2, &err), &err,
                     "package-lock.json");
  assert_fails_with (sbom_add_lockfile (s, "go.sum", "nospace\n", 8, &err), &err, "go.sum");
  {
    const char *ctl = "{\"packages\":{\"node_modules/a\\u001b[31m\":{\"version\":\"1\"}}}";
    assert_fails_with (sbom_add_lockfile (s, "package-lock.json", ctl, strlen (ctl), &err), &err,
                       "not valid");
  }
  assert_fails_with (sbom_set_base (s, "base/x:1", OTHER, "no-equals-sign", &err), &err,
                     "name=version");
  sbom_free (s);
}

/* --- the registry side: a real registry (tests/with-services.sh) ----------------- */

/* Artifacts pushed with a subject, listed under the referrers tag of a
 * registry without the referrers API (distribution 2.8), read back; the
 * tag keeps the newest ATTEST_OCI_KEEP of a type; a manifest whose subject
 * is another image is refused when read for this one. */
static void
test_oci_referrers_tag (void **state)
{
  struct registry_options o = REGISTRY_OPTIONS_INIT;
  struct registry *reg = NULL;
  struct oci_descriptor subject = { .size = 100 };
  struct attest_oci_ref refs[ATTEST_OCI_KEEP + 2];
  bvm_error_t err = NULL;
  char url[128], repo[64], tag[ATTEST_OCI_TAG_MAX + 1], *dir = t_tmpdir ();
  char *data = NULL;
  size_t len = 0;
  json_t *idx = NULL, *m = NULL;
  bool via_api = true;
  (void) state;

  snprintf (url, sizeof url, "http://%s", t_service ("BUILDVM_TEST_REGISTRY_OPEN"));
  snprintf (repo, sizeof repo, "apps/attest-p%d", (int) getpid ());
  o.url = url;
  assert_ok (registry_open (&reg, &o, &err), &err);
  snprintf (subject.media_type, sizeof subject.media_type, "%s", OCI_MEDIA_MANIFEST);
  snprintf (subject.digest, sizeof subject.digest, "%s", IMG);

  /* nothing yet: no referrers, from the tag or the API */
  assert_ok (attest_oci_referrers (&idx, &via_api, reg, repo, IMG, &err), &err);
  assert_null (idx);
  assert_false (via_api);

  for (size_t i = 0; i < ARRAY_SIZE (refs); i++)
    {
      char body[64];
      snprintf (body, sizeof body, "{\"n\":%zu}", i);
      refs[i].artifact_type = i == 0 ? SBOM_MEDIA_TYPE : ATTEST_PAYLOAD_TYPE;
      refs[i].annotations = NULL;
      assert_ok (attest_oci_push (&refs[i].desc, reg, repo, &subject, refs[i].artifact_type,
                                  ATTEST_MEDIA_DSSE, body, strlen (body), NULL, dir, &err),
                 &err);
    }
  /* the first one alone, then all of them (the first is not listed twice) */
  assert_ok (attest_oci_index_add (&via_api, reg, repo, IMG, refs, 1, &err), &err);
  assert_false (via_api);
  assert_ok (attest_oci_index_add (&via_api, reg, repo, IMG, refs, ARRAY_SIZE (refs), &err), &err);
  assert_ok (attest_oci_fallback_tag (tag, IMG, &err), &err);
  assert_string_equal (tag, "sha256-"
                            "1111111111111111111111111111111111111111111111111111111111111111");
  assert_ok (attest_oci_referrers (&idx, &via_api, reg, repo, IMG, &err), &err);
  assert_non_null (idx);
  /* the SBOM, and the newest ATTEST_OCI_KEEP attestations: the oldest one dropped */
  assert_int_equal (json_array_size (json_object_get (idx, "manifests")), 1 + ATTEST_OCI_KEEP);
  assert_string_equal (json_string_value (
                           json_object_get (json_array_get (json_object_get (idx, "manifests"), 0),
                                            "digest")),
                       refs[0].desc.digest);
  assert_string_equal (json_string_value (
                           json_object_get (json_array_get (json_object_get (idx, "manifests"), 1),
                                            "digest")),
                       refs[2].desc.digest);
  json_decref (idx);

  /* read back for this image, and refused for another */
  assert_ok (attest_oci_fetch_layer (&data, &len, &m, reg, repo, refs[5].desc.digest, IMG,
                                     ATTEST_MEDIA_DSSE, 1024, &err),
             &err);
  assert_string_equal (data, "{\"n\":5}");
  free (data);
  json_decref (m);
  assert_fails_with (attest_oci_fetch_layer (&data, &len, &m, reg, repo, refs[5].desc.digest,
                                             OTHER, ATTEST_MEDIA_DSSE, 1024, &err),
                     &err, "for another image");
  assert_fails_with (attest_oci_fetch_layer (&data, &len, &m, reg, repo, refs[5].desc.digest, IMG,
                                             SBOM_MEDIA_TYPE, 1024, &err),
                     &err, "layer");
  registry_free (reg);
  t_tmpdir_free (dir);
}

static void
test_subject_name (void **state)
{
  struct attest_provenance p;
  struct attest_expect want = { .digest = IMG, .subject_name = "apps/hello" };
  bvm_error_t err = NULL;
  char *s;
  (void) state;

  provenance (&p, NULL);
  s = statement_text (&p);
  assert_ok (attest_check (NULL, s, strlen (s), &want, &err), &err);
  want.subject_name = "apps/other";
  assert_fails_with (attest_check (NULL, s, strlen (s), &want, &err), &err,
                     "is for repository `apps/hello`, not `apps/other`");
  free (s);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_pae_matches_the_spec),
    cmocka_unit_test (test_base64),
    cmocka_unit_test (test_sign_verify),
    cmocka_unit_test (test_tampered_payload_refused),
    cmocka_unit_test (test_wrong_key_refused),
    cmocka_unit_test (test_openssl_agrees),
    cmocka_unit_test (test_key_files),
    cmocka_unit_test (test_statement_layout_and_checks),
    cmocka_unit_test (test_signed_statement_one_byte),
    cmocka_unit_test (test_sbom_lockfiles),
    cmocka_unit_test (test_sbom_caps_and_hostile_lockfiles),
    cmocka_unit_test (test_subject_name),
    cmocka_unit_test (test_oci_referrers_tag),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
