/* attest_oci.c - attestations and SBOMs stored with the image, see attest_oci.h */
#include "attest_oci.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The OCI 1.1 empty descriptor: `{}` as the config of an artifact */
#define EMPTY_MEDIA "application/vnd.oci.empty.v1+json"
#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

int
attest_oci_fallback_tag (char out[ATTEST_OCI_TAG_MAX + 1], const char *digest, bvm_error_t *err)
{
  if (digest_problem (digest) != NULL)
    {
      char shown[256];
      return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is not a sha256 digest",
                             str_escape (shown, sizeof shown, digest, strlen (digest), 80));
    }
  snprintf (out, ATTEST_OCI_TAG_MAX + 1, "sha256-%s", digest + 7);
  return 0;
}

/* registry_blob_push reads a file: a scratch one in the job's work
 * directory, not synced (it only has to last until the upload) */
static int
push_mem_blob (struct registry *reg, const char *repo, const char *digest, const void *data,
               size_t len, const char *tmp_dir, bvm_error_t *err)
{
  cleanup_free char *path = NULL;
  cleanup_close int fd = -1;
  int ret;

  if (asprintf (&path, "%s/attest-blob-%.16s", tmp_dir, digest + 7) < 0)
    {
      path = NULL;
      return bvm_error (err, ENOMEM, "blob path");
    }
  unlink (path);
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create `%s`", path);
  if (fs_write_all (fd, data, len) < 0)
    {
      ret = bvm_error (err, errno, "write `%s`", path);
      unlink (path);
      return ret;
    }
  ret = registry_blob_push (reg, repo, digest, len, path, NULL, err);
  unlink (path);
  return ret;
}

int
attest_oci_push (struct oci_descriptor *out, struct registry *reg, const char *repo,
                 const struct oci_descriptor *subject, const char *artifact_type,
                 const char *layer_type, const void *data, size_t len, const json_t *annotations,
                 const char *tmp_dir, bvm_error_t *err)
{
  char layer_digest[DIGEST_STR_LEN + 1];
  cleanup_free char *manifest = NULL;
  cleanup_json json_t *m = NULL;
  size_t mlen;
  int ret;

  if ((ret = digest_buffer (layer_digest, data, len, err)) < 0)
    return ret;
  if ((ret = push_mem_blob (reg, repo, EMPTY_DIGEST, "{}", 2, tmp_dir, err)) < 0
      || (ret = push_mem_blob (reg, repo, layer_digest, data, len, tmp_dir, err)) < 0)
    return bvm_error_wrap (err, "pushing the %s blob", artifact_type);
  m = json_pack ("{s:i, s:s, s:s, s:{s:s, s:s, s:i}, s:[{s:s, s:s, s:I}], s:{s:s, s:s, s:I}}",
                 "schemaVersion", 2, "mediaType", OCI_MEDIA_MANIFEST, "artifactType",
                 artifact_type, "config", "mediaType", EMPTY_MEDIA, "digest", EMPTY_DIGEST, "size",
                 2, "layers", "mediaType", layer_type, "digest", layer_digest, "size",
                 (json_int_t) len, "subject", "mediaType", subject->media_type, "digest",
                 subject->digest, "size", (json_int_t) subject->size);
  if (m == NULL)
    return bvm_error (err, ENOMEM, "artifact manifest");
  if (annotations)
    json_object_set_new (m, "annotations", json_deep_copy (annotations));
  if ((manifest = json_dumps (m, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
    return bvm_error (err, ENOMEM, "artifact manifest");
  mlen = strlen (manifest);
  snprintf (out->media_type, sizeof out->media_type, "%s", OCI_MEDIA_MANIFEST);
  out->size = mlen;
  if ((ret = digest_buffer (out->digest, manifest, mlen, err)) < 0)
    return ret;
  ret = registry_manifest_put (reg, repo, out->digest, OCI_MEDIA_MANIFEST, manifest, mlen, NULL,
                               err);
  if (ret < 0)
    return bvm_error_wrap (err, "pushing the %s manifest", artifact_type);
  return 0;
}

int
attest_oci_referrers (json_t **out, bool *via_api, struct registry *reg, const char *repo,
                      const char *digest, bvm_error_t *err)
{
  cleanup_free char *body = NULL, *mt = NULL;
  char tag[ATTEST_OCI_TAG_MAX + 1], got[DIGEST_STR_LEN + 1];
  bool found = false;
  size_t len = 0;
  json_t *idx;
  int ret;

  *out = NULL;
  *via_api = false;
  /* the fallback tag first: one request on a registry without the API
   * (the usual case today), and on one with it an index written by a
   * fallback client is still the truth about what it pushed */
  if ((ret = attest_oci_fallback_tag (tag, digest, err)) < 0)
    return ret;
  ret = registry_manifest_find (reg, repo, tag, &found, &body, &len, &mt, got, err);
  if (ret < 0)
    return bvm_error_wrap (err, "reading the referrers tag `%s`", tag);
  if (!found)
    {
      if ((ret = registry_referrers_get (reg, repo, digest, via_api, &body, &len, err)) < 0)
        return ret;
      if (!*via_api)
        return 0;
    }
  idx = json_loadb (body, len, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object (idx) || !json_is_array (json_object_get (idx, "manifests")))
    {
      json_decref (idx);
      return bvm_error_code (err, BVM_E_INVALID, 0, "the referrers of `%s@%s` are not an index",
                             repo, digest);
    }
  *out = idx;
  return 0;
}

int
attest_oci_index_add (bool *via_api, struct registry *reg, const char *repo, const char *digest,
                      const struct attest_oci_ref *refs, size_t n, bvm_error_t *err)
{
  cleanup_json json_t *idx = NULL;
  cleanup_free char *text = NULL;
  char tag[ATTEST_OCI_TAG_MAX + 1];
  json_t *entries, *e, *d;
  size_t i, added = 0;
  int ret;

  if ((ret = attest_oci_referrers (&idx, via_api, reg, repo, digest, err)) < 0)
    return ret;
  /* a registry with the API indexes the manifests by their subject itself */
  if (*via_api)
    return 0;
  if ((ret = attest_oci_fallback_tag (tag, digest, err)) < 0)
    return ret;
  if (idx == NULL)
    idx = json_pack ("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", OCI_MEDIA_INDEX,
                     "manifests");
  if (idx == NULL)
    return bvm_error (err, ENOMEM, "referrers index");
  entries = json_object_get (idx, "manifests");
  for (size_t k = 0; k < n; k++)
    {
      bool listed = false;
      json_array_foreach (entries, i, e)
        {
          const char *have = json_string_value (json_object_get (e, "digest"));
          if (have && strcmp (have, refs[k].desc.digest) == 0)
            listed = true; /* an earlier attempt got this far */
        }
      if (listed)
        continue;
      d = json_pack ("{s:s, s:s, s:I, s:s}", "mediaType", refs[k].desc.media_type, "digest",
                     refs[k].desc.digest, "size", (json_int_t) refs[k].desc.size, "artifactType",
                     refs[k].artifact_type);
      if (d && refs[k].annotations)
        json_object_set_new (d, "annotations", json_deep_copy (refs[k].annotations));
      if (d == NULL || json_array_append_new (entries, d) < 0)
        return bvm_error (err, ENOMEM, "referrers index");
      added++;
    }
  if (added == 0)
    return 0;
  /* A commit built again makes the same image (layers are reproducible)
   * and a new attestation each time: the index keeps the newest
   * ATTEST_OCI_KEEP of the types added here, so it never outgrows a
   * manifest. The older artifacts stay in the registry by digest, and
   * beside their job records. */
  for (size_t k = 0; k < n; k++)
    {
      size_t count = 0;
      json_array_foreach (entries, i, e)
        if (json_is_string (json_object_get (e, "artifactType"))
            && strcmp (json_string_value (json_object_get (e, "artifactType")),
                       refs[k].artifact_type)
                   == 0)
          count++;
      for (i = 0; count > ATTEST_OCI_KEEP && i < json_array_size (entries);)
        {
          e = json_array_get (entries, i);
          if (json_is_string (json_object_get (e, "artifactType"))
              && strcmp (json_string_value (json_object_get (e, "artifactType")),
                         refs[k].artifact_type)
                     == 0)
            {
              json_array_remove (entries, i);
              count--;
            }
          else
            i++;
        }
    }
  if ((text = json_dumps (idx, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
    return bvm_error (err, ENOMEM, "referrers index");
  /* Read, add, write: two jobs adding to one image's index at once can
   * lose one's entries (the distribution spec's fallback has no compare
   * and swap); the job record and the files beside it keep every one. */
  ret = registry_manifest_put (reg, repo, tag, OCI_MEDIA_INDEX, text, strlen (text), NULL, err);
  if (ret < 0)
    return bvm_error_wrap (err, "updating the referrers tag `%s`", tag);
  return 0;
}

int
attest_oci_fetch_layer (char **out, size_t *len, json_t **manifest, struct registry *reg,
                        const char *repo, const char *digest, const char *subject,
                        const char *layer_type, size_t max, bvm_error_t *err)
{
  cleanup_free char *body = NULL, *mt = NULL;
  char got[DIGEST_STR_LEN + 1];
  cleanup_json json_t *m = NULL;
  const char *sd, *ld;
  json_t *layers, *l;
  size_t blen = 0;
  int ret;

  *out = NULL;
  *manifest = NULL;
  ret = registry_manifest_get (reg, repo, digest, &body, &blen, &mt, got, err);
  if (ret < 0)
    return ret;
  m = json_loadb (body, blen, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object (m))
    return bvm_error_code (err, BVM_E_DENIED, 0, "artifact `%s` is not a manifest", digest);
  sd = json_string_value (json_object_get (json_object_get (m, "subject"), "digest"));
  if (sd == NULL || strcmp (sd, subject) != 0)
    {
      char shown[256];
      if (sd == NULL)
        sd = "(none)";
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "the attestation is for another image (its subject is `%s`, not "
                             "`%s`)",
                             str_escape (shown, sizeof shown, sd, strlen (sd), 80), subject);
    }
  layers = json_object_get (m, "layers");
  if (!json_is_array (layers) || json_array_size (layers) != 1)
    return bvm_error_code (err, BVM_E_DENIED, 0, "artifact `%s` does not have one layer", digest);
  l = json_array_get (layers, 0);
  ld = json_string_value (json_object_get (l, "digest"));
  if (ld == NULL || digest_problem (ld) != NULL
      || !json_is_string (json_object_get (l, "mediaType"))
      || strcmp (json_string_value (json_object_get (l, "mediaType")), layer_type) != 0)
    return bvm_error_code (err, BVM_E_DENIED, 0, "artifact `%s` has no `%s` layer", digest,
                           layer_type);
  ret = registry_blob_read (reg, repo, ld, max, out, len, err);
  if (ret < 0)
    return bvm_error_wrap (err, "reading artifact `%s`", digest);
  *manifest = steal_pointer (&m);
  return 0;
}
