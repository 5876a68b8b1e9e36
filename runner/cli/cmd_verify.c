/* cmd_verify.c - `buildvm verify IMAGE_REF`: check an image's signed provenance
 *
 * Resolves the reference to its manifest digest, finds the image's
 * attestations (the referrers API, or the `sha256-<hex>` referrers tag),
 * and accepts the image when one of them is a DSSE envelope that verifies
 * with the key, whose statement names this digest as its subject, and whose
 * provenance matches every --app/--commit/... asked. Otherwise one line on
 * stderr says why, and the exit status is 1 (3 for a refusal: a bad
 * signature, another image, another app). Works against any OCI registry.
 */
#include "attest.h"
#include "attest_oci.h"
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "registry.h"
#include "util.h"

#include <getopt.h> /* optind, which cli_parse leaves at the first operand */

#define TRIES_MAX 64 /* attestations tried per image, newest first */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm verify [--config FILE] [--key PUB.pem] [--app APP] [--commit SHA]\n"
           "                      [--repo URL] [--kernel DIGEST] [--rootfs DIGEST]\n"
           "                      [--builder-id ID] [--any-repository] [--plain-http] [--json]\n"
           "                      IMAGE_REF\n"
           "       buildvm verify --envelope FILE --subject DIGEST [--key ...] [--app ...] ...\n"
           "       buildvm verify --print-key [--config FILE]\n"
           "\n"
           "IMAGE_REF is [HOST[:PORT]/]REPOSITORY[:TAG][@DIGEST]; without a host, the\n"
           "runner's registry (registry.url). The key is --key, else the public half of\n"
           "the runner's own signing key (attest.key). --print-key prints that public\n"
           "key (creating the signing key if there is none yet). The attestation must\n"
           "name the image under REPOSITORY, unless --any-repository (a mirror under\n"
           "another name). --envelope checks a\n"
           "DSSE envelope from a file (the one beside a job record) whose subject is\n"
           "DIGEST: an image manifest's, or an artifact index's for a job without an\n"
           "image.\n");
}

struct image_ref
{
  char host[256];
  char repo[256];
  char tag[129];
  char digest[DIGEST_STR_LEN + 1];
};

/* docker's rule: the first component is a host when it has a `.` or a `:`
 * or is `localhost` */
static int
parse_ref (struct image_ref *out, const char *ref, const char *default_host)
{
  const char *slash = strchr (ref, '/'), *rest = ref, *at, *colon;
  size_t n;

  memset (out, 0, sizeof *out);
  if (slash
      && (memchr (ref, '.', (size_t) (slash - ref)) || memchr (ref, ':', (size_t) (slash - ref))
          || strncmp (ref, "localhost/", 10) == 0))
    {
      if ((size_t) (slash - ref) >= sizeof out->host)
        return -1;
      snprintf (out->host, sizeof out->host, "%.*s", (int) (slash - ref), ref);
      rest = slash + 1;
    }
  else
    snprintf (out->host, sizeof out->host, "%s", default_host);
  at = strchr (rest, '@');
  if (at)
    {
      if (strlen (at + 1) > DIGEST_STR_LEN || digest_problem (at + 1) != NULL)
        return -1;
      snprintf (out->digest, sizeof out->digest, "%s", at + 1);
    }
  n = at ? (size_t) (at - rest) : strlen (rest);
  colon = memchr (rest, ':', n);
  if (colon)
    {
      size_t tn = n - (size_t) (colon - rest) - 1;
      if (tn >= sizeof out->tag)
        return -1;
      snprintf (out->tag, sizeof out->tag, "%.*s", (int) tn, colon + 1);
      if (oci_tag_problem (out->tag) != NULL)
        return -1;
      n = (size_t) (colon - rest);
    }
  if (n == 0 || n >= sizeof out->repo)
    return -1;
  snprintf (out->repo, sizeof out->repo, "%.*s", (int) n, rest);
  if (oci_repository_problem (out->repo) != NULL)
    return -1;
  if (!out->tag[0] && !out->digest[0])
    snprintf (out->tag, sizeof out->tag, "latest");
  return 0;
}

static const char *
url_host (const char *url)
{
  const char *h = strstr (url, "://");
  return h ? h + 3 : url;
}

static int
print_key (const struct runner_config *cfg)
{
  cleanup_attest_key struct attest_key *k = NULL;
  cleanup_free char *pem = NULL;
  bvm_error_t err = NULL;
  bool created = false;

  if (attest_key_load_or_create (&k, &created, cfg->attest.key, &err) < 0
      || attest_key_public_pem (&pem, k, &err) < 0)
    return cli_fail ("verify", &err, 1);
  if (created)
    fprintf (stderr, "buildvm verify: generated a new signing key at %s\n", cfg->attest.key);
  fputs (pem, stdout);
  fprintf (stderr, "key %s\n", attest_key_id (k));
  return 0;
}

/* One attestation listed for the image: 0 when it is accepted. */
static int
try_one (json_t **statement, struct registry *reg, const char *repo, const char *digest,
         const char *att_digest, const struct attest_key *key, const struct attest_expect *want,
         bvm_error_t *err)
{
  cleanup_free char *env = NULL, *payload = NULL;
  cleanup_json json_t *m = NULL;
  size_t len = 0, plen = 0;
  int ret;

  ret = attest_oci_fetch_layer (&env, &len, &m, reg, repo, att_digest, digest, ATTEST_MEDIA_DSSE,
                                ATTEST_ENVELOPE_MAX, err);
  if (ret == 0)
    ret = attest_verify (&payload, &plen, key, env, len, ATTEST_PAYLOAD_TYPE, err);
  if (ret == 0)
    ret = attest_check (statement, payload, plen, want, err);
  return ret;
}

static void
summary (FILE *out, const char *host, const char *repo, const char *digest, const json_t *st,
         const struct attest_key *key)
{
  const char *sbom = NULL;
  size_t i;
  json_t *b;

  json_array_foreach (json_object_get (json_object_get (json_object_get (st, "predicate"),
                                                        "runDetails"),
                                       "byproducts"),
                      i, b)
    if (json_is_string (json_object_get (b, "name"))
        && strcmp (json_string_value (json_object_get (b, "name")), "sbom") == 0)
      sbom = json_string_value (json_object_get (json_object_get (b, "digest"), "sha256"));
#define F(name) (attest_field (st, name) ? attest_field (st, name) : "?")
  if (host)
    fprintf (out, "verified: %s/%s@%s\n", host, repo, digest);
  else
    fprintf (out, "verified: %s, for %s\n", repo, digest);
  fprintf (out, "  app        %s\n", F ("app"));
  fprintf (out, "  commit     %s (%s)\n", F ("commit"), F ("ref"));
  fprintf (out, "  repository %s\n", F ("repo"));
  fprintf (out, "  job        %s, finished %s\n", F ("job"), F ("finished"));
  fprintf (out, "  builder    %s\n", F ("builder"));
  fprintf (out, "  build vm   %s: kernel sha256:%s rootfs sha256:%s\n", F ("profile"),
           F ("kernel"), F ("rootfs"));
  if (sbom)
    fprintf (out, "  sbom       sha256:%s (the CycloneDX document the provenance names)\n", sbom);
  fprintf (out, "  signed by  %s\n", attest_key_id (key));
#undef F
}

/* --envelope: the same checks on an envelope from a file */
static int
verify_file (const struct runner_config *cfg, const char *key_path, const char *path,
             const struct attest_expect *want, bool as_json)
{
  cleanup_attest_key struct attest_key *key = NULL;
  cleanup_free char *env = NULL, *payload = NULL;
  cleanup_json json_t *st = NULL;
  bvm_error_t err = NULL;
  size_t len = 0, plen = 0;

  if (attest_key_load (&key, key_path ? key_path : cfg->attest.key, false, &err) < 0
      || fs_read_file (&env, &len, path, ATTEST_ENVELOPE_MAX, &err) < 0)
    return cli_fail ("verify", &err, 1);
  if (attest_verify (&payload, &plen, key, env, len, ATTEST_PAYLOAD_TYPE, &err) < 0
      || attest_check (&st, payload, plen, want, &err) < 0)
    {
      fprintf (stderr, "buildvm verify: %s: %s\n", path, bvm_error_msg (&err));
      bvm_error_free (&err);
      return 3;
    }
  if (as_json)
    {
      json_dumpf (st, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
      printf ("\n");
    }
  else
    summary (stdout, NULL, path, want->digest, st, key);
  return 0;
}

int
cmd_verify (int argc, char **argv)
{

  const char *config_path = NULL, *key_path = NULL, *envelope = NULL, *subject = NULL;
  struct attest_expect want = { 0 };
  bool plain = false, as_json = false, want_print = false, any_repo = false;
  cleanup_config struct runner_config *cfg = NULL;
  cleanup_attest_key struct attest_key *key = NULL;
  cleanup_json json_t *idx = NULL, *st = NULL;
  cleanup_free char *body = NULL, *mt = NULL, *url = NULL;
  struct registry_options ro = REGISTRY_OPTIONS_INIT;
  struct registry *reg = NULL;
  struct image_ref ref;
  char digest[DIGEST_STR_LEN + 1];
  bvm_error_t err = NULL, first = NULL;
  bool via_api = false;
  size_t len = 0, tried = 0;
  json_t *e;
  int status, ret;

  const struct opt opts[] = {
    OPT_STR ("config", 'c', &config_path),
    OPT_STR ("key", 'k', &key_path),
    OPT_STR ("app", 0, &want.app),
    OPT_STR ("commit", 0, &want.commit),
    OPT_STR ("repo", 0, &want.repo),
    OPT_STR ("kernel", 0, &want.kernel),
    OPT_STR ("rootfs", 0, &want.rootfs),
    OPT_STR ("builder-id", 0, &want.builder_id),
    OPT_STR ("envelope", 0, &envelope),
    OPT_STR ("subject", 0, &subject),
    OPT_FLAG ("any-repository", 0, &any_repo),
    OPT_FLAG ("plain-http", 0, &plain),
    OPT_FLAG ("json", 0, &as_json),
    OPT_FLAG ("print-key", 0, &want_print),
    OPT_END,
  };
  if (cli_parse (argc, argv, "verify", opts, 0, 1, usage, &status))
    return status;
  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("verify", &err, 2);
  if (want_print)
    return print_key (cfg);
  if (envelope)
    {
      if (optind != argc || subject == NULL || digest_problem (subject) != NULL)
        return cli_usage ("verify",
                          "--envelope FILE takes --subject sha256:<hex> and no IMAGE_REF");
      want.digest = subject;
      return verify_file (cfg, key_path, envelope, &want, as_json);
    }
  if (optind + 1 != argc)
    return cli_usage ("verify", "expected one IMAGE_REF");
  if (parse_ref (&ref, argv[optind], url_host (cfg->registry.url)) < 0)
    return cli_usage ("verify", "`%s` is not [HOST/]REPOSITORY[:TAG][@DIGEST]", argv[optind]);

  /* the key: --key, else the runner's own (its public half is what signs) */
  if (attest_key_load (&key, key_path ? key_path : cfg->attest.key, false, &err) < 0)
    return cli_fail ("verify", &err, 1);

  /* the runner's registry with its credentials; any other host over https
   * (or http with --plain-http), anonymously */
  if (strcmp (ref.host, url_host (cfg->registry.url)) == 0)
    {
      url = xstrdup (cfg->registry.url);
      ro.credentials_file = cfg->registry.credentials;
    }
  else if (asprintf (&url, "%s://%s", plain ? "http" : "https", ref.host) < 0)
    {
      url = NULL;
      return 1;
    }
  ro.url = url;
  ro.max_attempts = 3;
  ro.deadline_ms = now_ms () + 120 * 1000;
  if (registry_open (&reg, &ro, &err) < 0)
    return cli_fail ("verify", &err, 1);

  /* the image: what the reference names now */
  ret = registry_manifest_get (reg, ref.repo, ref.digest[0] ? ref.digest : ref.tag, &body, &len,
                               &mt, digest, &err);
  if (ret == 0 && ref.digest[0] && ref.tag[0])
    {
      /* both: the tag must still name that digest */
      char tagged[DIGEST_STR_LEN + 1];
      free (body), free (mt);
      body = mt = NULL;
      ret = registry_manifest_get (reg, ref.repo, ref.tag, &body, &len, &mt, tagged, &err);
      if (ret == 0 && strcmp (tagged, ref.digest) != 0)
        ret = bvm_error_code (&err, BVM_E_DENIED, 0, "`%s:%s` names %s, not %s", ref.repo, ref.tag,
                              tagged, ref.digest);
    }
  if (ret == 0)
    ret = attest_oci_referrers (&idx, &via_api, reg, ref.repo, digest, &err);
  if (ret < 0)
    {
      registry_free (reg);
      return cli_fail ("verify", &err, cli_status_for (&err) == 3 ? 3 : 1);
    }
  want.digest = digest;
  if (!any_repo)
    want.subject_name = ref.repo;
  /* newest first, and a bounded number of them */
  for (size_t n = json_array_size (json_object_get (idx, "manifests")); n > 0 && tried < TRIES_MAX;
       n--)
    {
      e = json_array_get (json_object_get (idx, "manifests"), n - 1);
      const char *at = json_string_value (json_object_get (e, "artifactType"));
      const char *d = json_string_value (json_object_get (e, "digest"));
      if (at == NULL || strcmp (at, ATTEST_PAYLOAD_TYPE) != 0 || d == NULL
          || digest_problem (d) != NULL)
        continue;
      tried++;
      if (try_one (&st, reg, ref.repo, digest, d, key, &want, &err) == 0)
        break;
      /* the first refusal is the reason given; the others are alike */
      if (first == NULL)
        first = steal_pointer (&err);
      bvm_error_free (&err);
    }
  registry_free (reg);
  if (st == NULL)
    {
      if (first != NULL)
        {
          fprintf (stderr, "buildvm verify: %s/%s@%s: %s\n", ref.host, ref.repo, digest,
                   bvm_error_msg (&first));
          bvm_error_free (&first);
          return 3;
        }
      fprintf (stderr, "buildvm verify: %s/%s@%s: no attestation (%s)\n", ref.host, ref.repo,
               digest,
               tried == 0 && idx == NULL ? "no referrers for the image"
                                         : "no in-toto attestation among its referrers");
      return 1;
    }
  bvm_error_free (&first);
  if (as_json)
    {
      json_dumpf (st, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
      printf ("\n");
    }
  else
    summary (stdout, ref.host, ref.repo, digest, st, key);
  return 0;
}
