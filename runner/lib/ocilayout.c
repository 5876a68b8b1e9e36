/* ocilayout.c - a Dockerfile build's OCI image layout, verified, see ocilayout.h
 *
 * The shape: every byte the builder wrote is hashed by us before it means
 * anything. Blobs are hashed as they arrive (their names are claims);
 * documents are parsed strictly with caps; layers are decompressed by our own
 * zlib loop, hashed (the diffID), recompressed when they are new, and only
 * the plain tar stream is shown to libarchive (tar format, no filters), whose
 * entries are checked and whose data is never written anywhere as files.
 */
#define ZLIB_CONST
#include "ocilayout.h"
#include "caps.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CHUNK (256u * 1024)
#define LAYOUT_FILE_MAX 4096
#define CONFIG_ARRAY_MAX 1024 /* Env, Entrypoint, Cmd items; labels; ports */
#define CONFIG_VOLUMES_MAX 256
#define LABEL_KEY_MAX 256
#define PROVENANCE_PREFIX "dev.buildvm."

struct blob
{
  char hex[DIGEST_HEX_LEN + 1];
  uint64_t size;
};

struct ocilayout
{
  char *dir;
  struct ocilayout_limits lim;
  struct blob *blobs;
  size_t n_blobs, blobs_alloc;
  char *layout, *index; /* the small files, NUL-terminated */
  size_t layout_len, index_len;

  /* the file being received */
  enum ocilayout_name cur;
  bool open;
  int fd;
  char *cur_path;
  char **small; /* &layout or &index */
  size_t *small_len;
  struct digest_ctx d;
  bool hashing;
  uint64_t size, got;
  char hex[DIGEST_HEX_LEN + 1];
};

/* --- names ------------------------------------------------------------------ */

static bool
is_hex64 (const char *s)
{
  size_t i;
  for (i = 0; s[i]; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return i == DIGEST_HEX_LEN;
}

enum ocilayout_name
ocilayout_name_kind (const char *path)
{
  static const char blobs[] = "blobs/sha256/";

  if (path == NULL)
    return OCILAYOUT_NAME_BAD;
  if (strcmp (path, "blobs") == 0 || strcmp (path, "blobs/sha256") == 0)
    return OCILAYOUT_NAME_DIR;
  if (strcmp (path, "oci-layout") == 0)
    return OCILAYOUT_NAME_LAYOUT;
  if (strcmp (path, "index.json") == 0)
    return OCILAYOUT_NAME_INDEX;
  if (strncmp (path, blobs, sizeof blobs - 1) == 0 && is_hex64 (path + sizeof blobs - 1))
    return OCILAYOUT_NAME_BLOB;
  return OCILAYOUT_NAME_BAD;
}

/* --- receiving the files --------------------------------------------------- */

int
ocilayout_new (struct ocilayout **out, const char *dir, const struct ocilayout_limits *lim,
               bvm_error_t *err)
{
  struct ocilayout_limits defaults = OCILAYOUT_LIMITS_INIT;
  struct ocilayout *l;

  if (lim == NULL)
    lim = &defaults;
  if (lim->gzip_level < 1 || lim->gzip_level > 9)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ocilayout: gzip level must be 1..9");
  l = calloc (1, sizeof *l);
  if (l == NULL)
    return bvm_error (err, ENOMEM, "image layout");
  l->fd = -1;
  l->lim = *lim;
  l->dir = strdup (dir);
  if (l->dir == NULL)
    {
      free (l);
      return bvm_error (err, ENOMEM, "image layout");
    }
  if (mkdir (dir, 0700) < 0 && errno != EEXIST)
    {
      int e = errno;
      ocilayout_free (l);
      return bvm_error (err, e, "create `%s`", dir);
    }
  *out = l;
  return 0;
}

static void
file_abort (struct ocilayout *l)
{
  if (l->hashing)
    digest_dispose (&l->d);
  l->hashing = false;
  if (l->fd >= 0)
    close (l->fd);
  l->fd = -1;
  if (l->cur_path != NULL)
    unlink (l->cur_path);
  free (l->cur_path);
  l->cur_path = NULL;
  l->open = false;
}

void
ocilayout_free (struct ocilayout *l)
{
  if (l == NULL)
    return;
  if (l->open)
    file_abort (l);
  free (l->dir);
  free (l->blobs);
  free (l->layout);
  free (l->index);
  free (l);
}

static const struct blob *
blob_find (const struct ocilayout *l, const char *digest)
{
  if (digest_problem (digest) != NULL)
    return NULL;
  for (size_t i = 0; i < l->n_blobs; i++)
    if (strcmp (l->blobs[i].hex, digest + 7) == 0)
      return &l->blobs[i];
  return NULL;
}

static char *
blob_path (const struct ocilayout *l, const char *hex)
{
  char *p = NULL;
  if (asprintf (&p, "%s/%s", l->dir, hex) < 0)
    return NULL;
  return p;
}

int
ocilayout_file_begin (struct ocilayout *l, const char *path, uint64_t size, bvm_error_t *err)
{
  enum ocilayout_name k = ocilayout_name_kind (path);

  if (l->open)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ocilayout: a file is already open");
  l->cur = k;
  l->size = size;
  l->got = 0;
  switch (k)
    {
    case OCILAYOUT_NAME_LAYOUT:
    case OCILAYOUT_NAME_INDEX:
      l->small = k == OCILAYOUT_NAME_LAYOUT ? &l->layout : &l->index;
      l->small_len = k == OCILAYOUT_NAME_LAYOUT ? &l->layout_len : &l->index_len;
      if (*l->small != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "`oci/%s` twice", path);
      if (size > (k == OCILAYOUT_NAME_LAYOUT ? LAYOUT_FILE_MAX : OCILAYOUT_SMALL_MAX))
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "`oci/%s` is %" PRIu64 " bytes, over the limit of %u", path, size,
                               k == OCILAYOUT_NAME_LAYOUT ? LAYOUT_FILE_MAX : OCILAYOUT_SMALL_MAX);
      *l->small = calloc (1, (size_t) size + 1);
      if (*l->small == NULL)
        return bvm_error (err, ENOMEM, "`oci/%s`", path);
      *l->small_len = (size_t) size;
      l->open = true;
      return 0;
    case OCILAYOUT_NAME_BLOB:
      {
        const char *hex = path + strlen ("blobs/sha256/");
        char digest[DIGEST_STR_LEN + 1];
        snprintf (digest, sizeof digest, "sha256:%s", hex);
        if (blob_find (l, digest) != NULL)
          return bvm_error_code (err, BVM_E_INVALID, 0, "`oci/%s` twice", path);
        if (l->n_blobs >= l->lim.max_blobs)
          return bvm_error_code (err, BVM_E_LIMIT, 0,
                                 "the image layout has more than %" PRIu64 " blobs",
                                 l->lim.max_blobs);
        snprintf (l->hex, sizeof l->hex, "%s", hex);
        l->cur_path = blob_path (l, hex);
        if (l->cur_path == NULL)
          return bvm_error (err, ENOMEM, "blob");
        l->fd = open (l->cur_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (l->fd < 0)
          {
            int e = errno;
            free (l->cur_path);
            l->cur_path = NULL;
            return bvm_error (err, e, "create the blob file for `oci/%s`", path);
          }
        if (digest_init (&l->d, err) < 0)
          {
            l->open = true;
            file_abort (l);
            return -1;
          }
        l->hashing = true;
        l->open = true;
        return 0;
      }
    default:
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "`oci/%.200s` is not a file of an OCI image layout (oci-layout, "
                             "index.json, blobs/sha256/<hex>)",
                             path ? path : "");
    }
}

int
ocilayout_file_write (struct ocilayout *l, const void *buf, size_t len, bvm_error_t *err)
{
  if (!l->open)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ocilayout: no file is open");
  if (len > l->size - l->got)
    {
      file_abort (l);
      return bvm_error_code (err, BVM_E_INVALID, 0, "more data than the file's size");
    }
  if (l->cur != OCILAYOUT_NAME_BLOB)
    memcpy (*l->small + l->got, buf, len);
  else
    {
      digest_update (&l->d, buf, len);
      if (fs_write_all (l->fd, buf, len) < 0)
        {
          int e = errno;
          file_abort (l);
          return bvm_error (err, e, "write blob `sha256:%s`", l->hex);
        }
    }
  l->got += len;
  return 0;
}

int
ocilayout_file_end (struct ocilayout *l, bvm_error_t *err)
{
  char digest[DIGEST_STR_LEN + 1];

  if (!l->open)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ocilayout: no file is open");
  if (l->got != l->size)
    {
      file_abort (l);
      return bvm_error_code (err, BVM_E_INVALID, 0, "a file of the layout is truncated");
    }
  if (l->cur != OCILAYOUT_NAME_BLOB)
    {
      l->open = false;
      return 0;
    }
  digest_final (&l->d, digest);
  l->hashing = false;
  if (close (steal_fd (&l->fd)) < 0)
    {
      int e = errno;
      file_abort (l);
      return bvm_error (err, e, "close blob `sha256:%s`", l->hex);
    }
  /* content addressing is the whole trust model of a layout: a blob whose
   * bytes are not its name could stand in for another one */
  if (strcmp (digest + 7, l->hex) != 0)
    {
      char hex[DIGEST_HEX_LEN + 1];
      snprintf (hex, sizeof hex, "%s", l->hex);
      file_abort (l);
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "blob `blobs/sha256/%s` does not match its name: its content is %s",
                             hex, digest);
    }
  if (l->n_blobs == l->blobs_alloc)
    {
      size_t na = l->blobs_alloc ? l->blobs_alloc * 2 : 16;
      struct blob *nb = reallocarray (l->blobs, na, sizeof *nb);
      if (nb == NULL)
        {
          file_abort (l);
          return bvm_error (err, ENOMEM, "blob list");
        }
      l->blobs = nb;
      l->blobs_alloc = na;
    }
  snprintf (l->blobs[l->n_blobs].hex, sizeof l->blobs[l->n_blobs].hex, "%s", l->hex);
  l->blobs[l->n_blobs].size = l->size;
  l->n_blobs++;
  free (l->cur_path);
  l->cur_path = NULL;
  l->open = false;
  return 0;
}

/* --- documents ------------------------------------------------------------- */

/* A descriptor of the layout: the blob it names is in the output, with its
 * size. */
static int
check_present (const struct ocilayout *l, const struct oci_descriptor *d, const char *what,
               bvm_error_t *err)
{
  const struct blob *b = blob_find (l, d->digest);

  if (b == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the manifest names %s %s, which is not in the build's output (an "
                           "image can only be made of the blobs the build wrote)",
                           what, d->digest);
  if (b->size != d->size)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "the manifest says %s %s is %" PRIu64 " bytes; it is %" PRIu64, what,
                           d->digest, d->size, b->size);
  return 0;
}

static int
check_layout_file (const struct ocilayout *l, bvm_error_t *err)
{
  static const char *const keys[] = { "imageLayoutVersion", NULL };
  cleanup_json json_t *doc = NULL;
  const char *v = NULL;

  if (l->layout == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the output has no `oci/oci-layout`");
  if (jsonx_parse_object (&doc, l->layout, l->layout_len, LAYOUT_FILE_MAX, "`oci/oci-layout`",
                          keys, err)
          < 0
      || jsonx_get_str (&v, doc, "imageLayoutVersion", true, 64, "oci-layout", err) < 0)
    return -1;
  if (strcmp (v, "1.0.0") != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`oci/oci-layout`: version `%.64s` is not 1.0.0",
                           v);
  return 0;
}

/* An annotations object: strings only. */
static int
check_annotations (const json_t *obj, const char *where, bvm_error_t *err)
{
  json_t *a = NULL, *v;
  const char *k;

  if (jsonx_get_typed (&a, obj, "annotations", JSON_OBJECT, false, where, err) < 0)
    return -1;
  if (a != NULL)
    json_object_foreach (a, k, v)
      if (!json_is_string (v))
        return bvm_error_code (err, BVM_E_INVALID, 0, "%s: annotation `%.100s` is not a string",
                               where, k);
  return 0;
}

/* index.json: exactly one image manifest, for linux/amd64 if it says. */
static int
read_index (struct oci_descriptor *out, const struct ocilayout *l, bvm_error_t *err)
{
  static const char *const keys[] = { "schemaVersion", "mediaType", "manifests", "annotations",
                                      NULL };
  static const char *const dkeys[] = { "mediaType",   "digest",   "size",
                                       "annotations", "platform", NULL };
  cleanup_json json_t *doc = NULL;
  json_t *list = NULL, *d, *plat = NULL;
  const char *mt = NULL, *dg = NULL, *os = NULL, *arch = NULL;
  uint64_t version = 0, size = 0;

  if (l->index == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the output has no `oci/index.json`");
  if (jsonx_parse_object (&doc, l->index, l->index_len, OCILAYOUT_SMALL_MAX, "`oci/index.json`",
                          keys, err)
          < 0
      || jsonx_get_u64 (&version, doc, "schemaVersion", true, 2, 2, "index.json", err) < 0
      || jsonx_get_str (&mt, doc, "mediaType", false, OCI_MEDIA_TYPE_MAX, "index.json", err) < 0
      || jsonx_get_typed (&list, doc, "manifests", JSON_ARRAY, true, "index.json", err) < 0
      || check_annotations (doc, "index.json", err) < 0)
    return bvm_error_wrap (err, "the image layout");
  if (mt != NULL && strcmp (mt, OCI_MEDIA_INDEX) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json` has media type `%.100s`, not an OCI index", mt);
  if (json_array_size (list) != 1)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json` names %zu manifests: the build must export exactly "
                           "one image",
                           json_array_size (list));
  d = json_array_get (list, 0);
  if (!json_is_object (d))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json`: manifests[0] is not an object");
  if (jsonx_check_keys (d, dkeys, "index.json manifests[0]", err) < 0
      || jsonx_get_str (&mt, d, "mediaType", true, OCI_MEDIA_TYPE_MAX, "manifests[0]", err) < 0
      || jsonx_get_str (&dg, d, "digest", true, DIGEST_STR_LEN, "manifests[0]", err) < 0
      || jsonx_get_u64 (&size, d, "size", true, 0, OCILAYOUT_SMALL_MAX, "manifests[0]", err) < 0
      || check_annotations (d, "index.json manifests[0]", err) < 0
      || jsonx_get_typed (&plat, d, "platform", JSON_OBJECT, false, "manifests[0]", err) < 0)
    return bvm_error_wrap (err, "`oci/index.json`");
  if (strcmp (mt, OCI_MEDIA_MANIFEST) != 0 && strcmp (mt, DOCKER_MEDIA_MANIFEST) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json` names a `%.100s`, not an image manifest", mt);
  if (digest_problem (dg) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json`: manifests[0].digest is not a sha256 digest");
  if (plat != NULL
      && (jsonx_get_str (&os, plat, "os", false, 64, "manifests[0].platform", err) < 0
          || jsonx_get_str (&arch, plat, "architecture", false, 64, "manifests[0].platform", err)
                 < 0))
    return bvm_error_wrap (err, "`oci/index.json`");
  if ((os && strcmp (os, "linux") != 0) || (arch && strcmp (arch, "amd64") != 0))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`oci/index.json` names an image for %.64s/%.64s, "
                           "not linux/amd64",
                           os ? os : "?", arch ? arch : "?");
  memset (out, 0, sizeof *out);
  snprintf (out->media_type, sizeof out->media_type, "%s", mt);
  snprintf (out->digest, sizeof out->digest, "%s", dg);
  out->size = size;
  return 0;
}

static int
read_blob (char **out, size_t *len, const struct ocilayout *l, const struct oci_descriptor *d,
           size_t max, const char *what, bvm_error_t *err)
{
  cleanup_free char *path = NULL;

  if (d->size > max)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the image's %s %s is %" PRIu64 " bytes, over the limit of %zu", what,
                           d->digest, d->size, max);
  path = blob_path (l, d->digest + 7);
  if (path == NULL)
    return bvm_error (err, ENOMEM, "%s", what);
  return fs_read_file (out, len, path, max, err);
}

/* The manifest: strict keys, then oci.c's parser for the descriptors. */
static int
read_manifest (struct oci_manifest **out, const struct ocilayout *l,
               const struct oci_descriptor *d, bvm_error_t *err)
{
  static const char *const keys[] = { "schemaVersion", "mediaType",   "config",
                                      "layers",        "annotations", NULL };
  static const char *const dkeys[] = { "mediaType", "digest", "size", "annotations", NULL };
  cleanup_free char *text = NULL;
  cleanup_json json_t *doc = NULL;
  json_t *layers, *v;
  size_t len = 0, i;

  if (check_present (l, d, "manifest", err) < 0)
    return -1;
  if (read_blob (&text, &len, l, d, OCILAYOUT_SMALL_MAX, "manifest", err) < 0)
    return -1;
  if (jsonx_parse_object (&doc, text, len, OCILAYOUT_SMALL_MAX, "the image manifest", keys, err)
          < 0
      || check_annotations (doc, "manifest", err) < 0)
    return -1;
  if (json_is_object (json_object_get (doc, "config"))
      && jsonx_check_keys (json_object_get (doc, "config"), dkeys, "manifest config", err) < 0)
    return -1;
  layers = json_object_get (doc, "layers");
  json_array_foreach (layers, i, v)
    {
      char where[48];
      snprintf (where, sizeof where, "manifest layers[%zu]", i);
      if (json_is_object (v) && jsonx_check_keys (v, dkeys, where, err) < 0)
        return -1;
    }
  if (oci_manifest_parse (out, text, len, d->media_type, "linux", "amd64", err) < 0)
    return bvm_error_wrap (err, "the image manifest");
  if (oci_manifest_kind (*out) != OCI_MANIFEST_IMAGE)
    {
      oci_manifest_free (*out);
      *out = NULL;
      return bvm_error_code (err, BVM_E_INVALID, 0, "the image manifest is an index");
    }
  return 0;
}

/* --- the builder's config -------------------------------------------------- */

static int bad (bvm_error_t *err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static int
bad (bvm_error_t *err, const char *fmt, ...)
{
  char why[512];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, BVM_E_INVALID, 0, "the image config: %s", why);
}

/* An array of strings (or null: not set), at most CONFIG_ARRAY_MAX items of
 * CAP_TEXT_READ bytes; `env` also wants KEY=VALUE. */
static int
keep_str_array (json_t *dst, const json_t *src, const char *key, bool env, bvm_error_t *err)
{
  json_t *a = json_object_get (src, key), *v;
  size_t i;

  if (a == NULL || json_is_null (a))
    return 0;
  if (!json_is_array (a))
    return bad (err, "`config.%s` is not an array", key);
  if (json_array_size (a) > CONFIG_ARRAY_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the image config: `config.%s` has more than %d "
                           "items",
                           key, CONFIG_ARRAY_MAX);
  json_array_foreach (a, i, v)
    {
      const char *s = json_string_value (v);
      if (s == NULL)
        return bad (err, "`config.%s[%zu]` is not a string", key, i);
      if (json_string_length (v) > CAP_TEXT_READ)
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "the image config: `config.%s[%zu]` is over %d bytes", key, i,
                               CAP_TEXT_READ);
      if (env && (s[0] == '=' || strchr (s, '=') == NULL))
        return bad (err, "`config.Env[%zu]` is not KEY=VALUE", i);
    }
  if (json_object_set (dst, key, a) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  return 0;
}

static int
keep_str (json_t *dst, const json_t *src, const char *key, size_t max, bvm_error_t *err)
{
  json_t *v = json_object_get (src, key);

  if (v == NULL || json_is_null (v))
    return 0;
  if (!json_is_string (v))
    return bad (err, "`config.%s` is not a string", key);
  if (json_string_length (v) > max)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "the image config: `config.%s` is over %zu bytes",
                           key, max);
  if (json_string_length (v) > 0 && text_problem (json_string_value (v), json_string_length (v)))
    return bad (err, "`config.%s` has control characters", key);
  if (json_object_set (dst, key, v) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  return 0;
}

static bool
port_key_ok (const char *k)
{
  const char *slash = strchr (k, '/');
  size_t n = slash ? (size_t) (slash - k) : strlen (k);
  uint32_t port = 0;

  if (n == 0 || n > 5 || k[0] == '0')
    return false;
  for (size_t i = 0; i < n; i++)
    {
      if (k[i] < '0' || k[i] > '9')
        return false;
      port = port * 10 + (uint32_t) (k[i] - '0');
    }
  if (port == 0 || port > 65535)
    return false;
  return slash == NULL || strcmp (slash, "/tcp") == 0 || strcmp (slash, "/udp") == 0
         || strcmp (slash, "/sctp") == 0;
}

/* ExposedPorts ("8080/tcp": {}) and Volumes ("/data": {}): keys checked,
 * values made {}. */
static int
keep_set (json_t *dst, const json_t *src, const char *key, size_t maxn, bvm_error_t *err)
{
  json_t *o = json_object_get (src, key), *v, *set;
  const char *k;

  if (o == NULL || json_is_null (o))
    return 0;
  if (!json_is_object (o))
    return bad (err, "`config.%s` is not an object", key);
  if (json_object_size (o) > maxn)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the image config: `config.%s` has more than %zu "
                           "entries",
                           key, maxn);
  set = json_object ();
  if (set == NULL || json_object_set_new (dst, key, set) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  json_object_foreach (o, k, v)
    {
      bool ok = strcmp (key, "ExposedPorts") == 0 ? port_key_ok (k)
                                                  : k[0] == '/' && strlen (k) <= OCILAYOUT_PATH_MAX
                                                        && !text_problem (k, strlen (k));
      char e[128];
      if (!ok)
        return bad (err, "`config.%s` has an invalid key `%s`", key,
                    str_escape (e, sizeof e, k, strlen (k), 64));
      if (!json_is_object (v))
        return bad (err, "`config.%s.%s` is not an object", key,
                    str_escape (e, sizeof e, k, strlen (k), 64));
      if (json_object_set_new (set, k, json_object ()) < 0)
        return bvm_error (err, ENOMEM, "the image config");
    }
  return 0;
}

static int
keep_labels (json_t *dst, const json_t *src, bvm_error_t *err)
{
  json_t *o = json_object_get (src, "Labels"), *v;
  const char *k;
  char e[128];

  if (o == NULL || json_is_null (o))
    return 0;
  if (!json_is_object (o))
    return bad (err, "`config.Labels` is not an object");
  if (json_object_size (o) > CONFIG_ARRAY_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the image config: `config.Labels` has more than %d labels",
                           CONFIG_ARRAY_MAX);
  json_object_foreach (o, k, v)
    {
      if (k[0] == '\0' || strlen (k) > LABEL_KEY_MAX || text_problem (k, strlen (k)))
        return bad (err, "label `%s` is not a valid name",
                    str_escape (e, sizeof e, k, strlen (k), 64));
      if (!json_is_string (v))
        return bad (err, "label `%s` is not a string",
                    str_escape (e, sizeof e, k, strlen (k), 64));
      if (json_string_length (v) > CAP_TEXT_READ)
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "the image config: label `%s` is over %d bytes",
                               str_escape (e, sizeof e, k, strlen (k), 64), CAP_TEXT_READ);
    }
  if (json_object_set (dst, "Labels", o) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  return 0;
}

static int
keep_stop_signal (json_t *dst, const json_t *src, bvm_error_t *err)
{
  json_t *v = json_object_get (src, "StopSignal");
  const char *s;

  if (v == NULL || json_is_null (v))
    return 0;
  s = json_string_value (v);
  if (s == NULL || json_string_length (v) == 0 || json_string_length (v) > 32)
    return bad (err, "`config.StopSignal` is not a signal name or number");
  for (const char *p = s; *p; p++)
    if (!is_alnum (*p) && *p != '+')
      return bad (err, "`config.StopSignal` is not a signal name or number");
  if (json_object_set (dst, "StopSignal", v) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  return 0;
}

/* A string of at most max bytes, cut at a UTF-8 boundary beyond it. */
static json_t *
capped_string (const char *s, size_t len, size_t max)
{
  if (len <= max)
    return json_stringn (s, len);
  while (max > 0 && ((unsigned char) s[max] & 0xc0) == 0x80)
    max--;
  return json_stringn (s, max);
}

static int
keep_history (json_t **out, const json_t *doc, size_t n_layers, bvm_error_t *err)
{
  static const struct
  {
    const char *key;
    size_t max;
  } fields[] = { { "created", 64 },
                 { "created_by", OCILAYOUT_CREATED_BY_MAX },
                 { "comment", OCILAYOUT_CREATED_BY_MAX },
                 { "author", 256 } };
  json_t *h = json_object_get (doc, "history"), *v;
  cleanup_json json_t *res = json_array ();
  size_t i, non_empty = 0;

  if (res == NULL)
    return bvm_error (err, ENOMEM, "the image config");
  if (h != NULL && !json_is_null (h))
    {
      if (!json_is_array (h))
        return bad (err, "`history` is not an array");
      if (json_array_size (h) > OCILAYOUT_HISTORY_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "the image config: `history` has more than %d entries",
                               OCILAYOUT_HISTORY_MAX);
      json_array_foreach (h, i, v)
        {
          json_t *e, *el;
          if (!json_is_object (v))
            return bad (err, "`history[%zu]` is not an object", i);
          e = json_object ();
          if (e == NULL || json_array_append_new (res, e) < 0)
            return bvm_error (err, ENOMEM, "the image config");
          for (size_t f = 0; f < ARRAY_SIZE (fields); f++)
            {
              json_t *s = json_object_get (v, fields[f].key), *c;
              if (s == NULL || json_is_null (s))
                continue;
              if (!json_is_string (s))
                return bad (err, "`history[%zu].%s` is not a string", i, fields[f].key);
              c = capped_string (json_string_value (s), json_string_length (s), fields[f].max);
              if (c == NULL || json_object_set_new (e, fields[f].key, c) < 0)
                return bvm_error (err, ENOMEM, "the image config");
            }
          el = json_object_get (v, "empty_layer");
          if (el != NULL && !json_is_null (el) && !json_is_boolean (el))
            return bad (err, "`history[%zu].empty_layer` is not a boolean", i);
          if (json_is_true (el))
            {
              if (json_object_set_new (e, "empty_layer", json_true ()) < 0)
                return bvm_error (err, ENOMEM, "the image config");
            }
          else
            non_empty++;
        }
    }
  if (json_array_size (res) > 0 && non_empty != n_layers)
    return bad (err, "`history` has %zu entries with a layer, but the image has %zu layers",
                non_empty, n_layers);
  *out = steal_pointer (&res);
  return 0;
}

/* The builder's config: platform, rootfs, the kept fields, the history. */
static int
read_config (struct ocilayout_image *img, char ***diff_ids, const char *text, size_t len,
             size_t n_layers, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *rootfs = NULL, *ids = NULL, *cfg = NULL, *v;
  const char *os = NULL, *arch = NULL, *type = NULL;
  size_t i;

  if (jsonx_parse (&doc, text, len, OCI_CONFIG_MAX, "the image config", err) < 0)
    return -1;
  if (!json_is_object (doc))
    return bad (err, "not a JSON object");
  if (jsonx_get_str (&os, doc, "os", true, 64, "config", err) < 0
      || jsonx_get_str (&arch, doc, "architecture", true, 64, "config", err) < 0
      || jsonx_get_typed (&rootfs, doc, "rootfs", JSON_OBJECT, true, "config", err) < 0
      || jsonx_get_str (&type, rootfs, "type", true, 64, "config.rootfs", err) < 0
      || jsonx_get_typed (&ids, rootfs, "diff_ids", JSON_ARRAY, true, "config.rootfs", err) < 0)
    return bvm_error_wrap (err, "the image config");
  if (strcmp (os, "linux") != 0 || strcmp (arch, "amd64") != 0)
    return bad (err, "the image is for %.64s/%.64s, not linux/amd64", os, arch);
  if (strcmp (type, "layers") != 0)
    return bad (err, "`rootfs.type` is `%.64s`, not `layers`", type);
  if (json_array_size (ids) != n_layers)
    return bad (err, "`rootfs.diff_ids` has %zu entries but the manifest has %zu layers",
                json_array_size (ids), n_layers);
  *diff_ids = calloc (n_layers + 1, sizeof **diff_ids);
  if (*diff_ids == NULL)
    return bvm_error (err, ENOMEM, "the image config");
  json_array_foreach (ids, i, v)
    {
      if (digest_problem (json_string_value (v)) != NULL)
        return bad (err, "`rootfs.diff_ids[%zu]` is not a sha256 digest", i);
      (*diff_ids)[i] = strdup (json_string_value (v));
      if ((*diff_ids)[i] == NULL)
        return bvm_error (err, ENOMEM, "the image config");
    }

  img->config = json_object ();
  if (img->config == NULL)
    return bvm_error (err, ENOMEM, "the image config");
  if (jsonx_get_typed (&cfg, doc, "config", JSON_OBJECT, false, "config", err) < 0)
    return bvm_error_wrap (err, "the image config");
  if (cfg != NULL
      && (keep_str_array (img->config, cfg, "Env", true, err) < 0
          || keep_str_array (img->config, cfg, "Entrypoint", false, err) < 0
          || keep_str_array (img->config, cfg, "Cmd", false, err) < 0
          || keep_str (img->config, cfg, "WorkingDir", OCILAYOUT_PATH_MAX, err) < 0
          || keep_str (img->config, cfg, "User", 256, err) < 0
          || keep_set (img->config, cfg, "ExposedPorts", CONFIG_ARRAY_MAX, err) < 0
          || keep_labels (img->config, cfg, err) < 0
          || keep_stop_signal (img->config, cfg, err) < 0
          || keep_set (img->config, cfg, "Volumes", CONFIG_VOLUMES_MAX, err) < 0))
    return -1;
  return keep_history (&img->history, doc, n_layers, err);
}

/* A base's diffIDs from its config (pulled by digest from the runner's
 * registry), or NULL when it does not list one per layer. */
static char **
base_diff_ids (const struct ocilayout_base *b, size_t *n)
{
  cleanup_json json_t *doc = NULL;
  bvm_error_t e = NULL;
  json_t *ids, *v;
  char **out;
  size_t i, nl = 0;

  *n = 0;
  if (b->manifest == NULL || b->config == NULL
      || jsonx_parse (&doc, b->config, b->config_len, OCI_CONFIG_MAX, "base config", &e) < 0)
    {
      bvm_error_free (&e);
      return NULL;
    }
  oci_manifest_layers (b->manifest, &nl);
  ids = json_object_get (json_object_get (doc, "rootfs"), "diff_ids");
  if (!json_is_array (ids) || json_array_size (ids) != nl || nl == 0)
    return NULL;
  out = calloc (nl + 1, sizeof *out);
  if (out == NULL)
    return NULL;
  json_array_foreach (ids, i, v)
    {
      if (digest_problem (json_string_value (v)) != NULL
          || (out[i] = strdup (json_string_value (v))) == NULL)
        {
          strv_free (out);
          return NULL;
        }
    }
  *n = nl;
  return out;
}

/* --- layers ---------------------------------------------------------------- */

struct scan
{
  const struct ocilayout *l;
  size_t index;
  int fd;
  bool gzip;
  z_stream zi;
  bool zi_ready, zi_done, in_eof;
  unsigned char *in, *out;
  struct digest_ctx diff;
  bool diff_ready;
  /* the runner's gzip of a new layer */
  int gz_fd;
  z_stream zo;
  bool zo_ready;
  struct digest_ctx blob;
  bool blob_ready;
  unsigned char *zbuf;
  uint64_t blob_bytes;
  uint64_t tar_bytes;
  uint64_t *total; /* of all layers */
  bool failed, timed_out;
  int fail_code;
  char fail[512];
};

static void scan_fail (struct scan *s, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
scan_fail (struct scan *s, int code, const char *fmt, ...)
{
  va_list ap;
  if (s->failed)
    return;
  s->failed = true;
  s->fail_code = code;
  va_start (ap, fmt);
  vsnprintf (s->fail, sizeof s->fail, fmt, ap);
  va_end (ap);
}

static int
gz_flush (struct scan *s)
{
  size_t n = CHUNK - s->zo.avail_out;
  if (n > 0)
    {
      digest_update (&s->blob, s->zbuf, n);
      if (fs_write_all (s->gz_fd, s->zbuf, n) < 0)
        {
          scan_fail (s, BVM_E_IO, "writing the compressed layer: %s", strerror (errno));
          return -1;
        }
      s->blob_bytes += n;
    }
  s->zo.next_out = s->zbuf;
  s->zo.avail_out = CHUNK;
  return 0;
}

static int
gz_feed (struct scan *s, const unsigned char *p, size_t len, int flush)
{
  int zr;

  s->zo.next_in = p;
  s->zo.avail_in = (uInt) len;
  do
    {
      if (s->zo.avail_out == 0 && gz_flush (s) < 0)
        return -1;
      zr = deflate (&s->zo, flush);
      if (zr != Z_OK && zr != Z_BUF_ERROR && zr != Z_STREAM_END)
        {
          scan_fail (s, BVM_E_INTERNAL, "gzip failed (%d)", zr);
          return -1;
        }
    }
  while (s->zo.avail_in > 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
  return 0;
}

static ssize_t
read_some (struct scan *s, unsigned char *buf, size_t len)
{
  ssize_t n;
  do
    n = read (s->fd, buf, len);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    scan_fail (s, BVM_E_IO, "reading layer %zu: %s", s->index, strerror (errno));
  return n;
}

/* The next piece of the uncompressed stream into s->out: its length, 0 at
 * the end, -1 on failure. Everything produced is hashed (the diffID) and,
 * for a new layer, compressed. */
static ssize_t
produce (struct scan *s)
{
  size_t n = 0;

  if (s->failed)
    return -1;
  if (s->l->lim.deadline_ms > 0 && now_ms () > s->l->lim.deadline_ms)
    {
      s->timed_out = true;
      scan_fail (s, BVM_E_TIMEOUT, "verifying the image's layers: deadline passed");
      return -1;
    }
  if (!s->gzip)
    {
      ssize_t r = read_some (s, s->out, CHUNK);
      if (r < 0)
        return -1;
      n = (size_t) r;
    }
  else
    {
      s->zi.next_out = s->out;
      s->zi.avail_out = CHUNK;
      while (s->zi.avail_out > 0 && !s->zi_done)
        {
          int zr;
          if (s->zi.avail_in == 0 && !s->in_eof)
            {
              ssize_t r = read_some (s, s->in, CHUNK);
              if (r < 0)
                return -1;
              if (r == 0)
                s->in_eof = true;
              s->zi.next_in = s->in;
              s->zi.avail_in = (uInt) r;
            }
          zr = inflate (&s->zi, Z_NO_FLUSH);
          if (zr == Z_STREAM_END)
            {
              /* another gzip member may follow (concatenated gzip is gzip) */
              if (s->zi.avail_in == 0 && !s->in_eof)
                {
                  ssize_t r = read_some (s, s->in, CHUNK);
                  if (r < 0)
                    return -1;
                  if (r == 0)
                    s->in_eof = true;
                  s->zi.next_in = s->in;
                  s->zi.avail_in = (uInt) r;
                }
              if (s->zi.avail_in == 0)
                s->zi_done = true;
              else if (s->zi.avail_in >= 2 && s->zi.next_in[0] == 0x1f && s->zi.next_in[1] == 0x8b)
                inflateReset (&s->zi);
              else
                {
                  scan_fail (s, BVM_E_INVALID, "layer %zu: data after the end of its gzip stream",
                             s->index);
                  return -1;
                }
            }
          else if (zr == Z_BUF_ERROR && s->zi.avail_in == 0 && s->in_eof)
            {
              scan_fail (s, BVM_E_INVALID, "layer %zu: its gzip stream is truncated", s->index);
              return -1;
            }
          else if (zr != Z_OK && zr != Z_BUF_ERROR)
            {
              scan_fail (s, BVM_E_INVALID, "layer %zu: its gzip stream is damaged (%s)", s->index,
                         s->zi.msg ? s->zi.msg : "?");
              return -1;
            }
        }
      n = CHUNK - s->zi.avail_out;
    }
  if (n == 0)
    return 0;
  if (n > s->l->lim.max_total_bytes - *s->total)
    {
      scan_fail (s, BVM_E_LIMIT,
                 "the image's layers are over %" PRIu64 " bytes uncompressed (layer %zu)",
                 s->l->lim.max_total_bytes, s->index);
      return -1;
    }
  *s->total += n;
  s->tar_bytes += n;
  digest_update (&s->diff, s->out, n);
  if (s->zo_ready && gz_feed (s, s->out, n, Z_NO_FLUSH) < 0)
    return -1;
  return (ssize_t) n;
}

static la_ssize_t
scan_read_cb (struct archive *a, void *opaque, const void **buf)
{
  struct scan *s = opaque;
  ssize_t n = produce (s);

  if (n < 0)
    {
      archive_set_error (a, EIO, "%s", s->fail);
      return -1;
    }
  *buf = s->out;
  return n;
}

static void
scan_dispose (struct scan *s)
{
  if (s->fd >= 0)
    close (s->fd);
  if (s->gz_fd >= 0)
    close (s->gz_fd);
  if (s->zi_ready)
    inflateEnd (&s->zi);
  if (s->zo_ready)
    deflateEnd (&s->zo);
  if (s->diff_ready)
    digest_dispose (&s->diff);
  if (s->blob_ready)
    digest_dispose (&s->blob);
  free (s->in);
  free (s->out);
  free (s->zbuf);
}

/* An entry name or hardlink target: relative, no `..`. Returns why not. */
static const char *
entry_name_problem (const char *name)
{
  const char *p = name;
  size_t len = strlen (name);

  if (len == 0)
    return "an empty name";
  if (len > OCILAYOUT_PATH_MAX)
    return "a name over 4096 bytes";
  if (name[0] == '/')
    return "an absolute path";
  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      if (n == 2 && p[0] == '.' && p[1] == '.')
        return "a `..` component";
      if (slash == NULL)
        return NULL;
      p = slash + 1;
    }
}

/* The path of a file in the image: without `./` and `/` in front. */
static const char *
image_path (const char *name)
{
  for (;;)
    {
      if (name[0] == '.' && name[1] == '/')
        name += 2;
      else if (name[0] == '/')
        name++;
      else
        return name;
    }
}

struct entry_ctx
{
  struct ocilayout_image *img;
  const char *what;
  uint64_t *entries, *declared;
  ocilayout_file_fn file;
  void *opaque;
};

static int
take_layer_entry (struct scan *s, struct archive *a, struct archive_entry *ae,
                  struct entry_ctx *ec, bvm_error_t *err)
{
  const struct ocilayout_limits *lim = &s->l->lim;
  const char *name = archive_entry_pathname (ae), *hl = archive_entry_hardlink (ae);
  const char *sl = archive_entry_symlink (ae), *why;
  mode_t type = archive_entry_filetype (ae);
  int64_t ssize = archive_entry_size_is_set (ae) ? archive_entry_size (ae) : 0;
  char e[256];

  if (name == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: an entry without a usable name", ec->what);
  str_escape (e, sizeof e, name, strlen (name), 200);
  if (++*ec->entries > lim->max_entries)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the image's layers have more than %" PRIu64 " entries",
                           lim->max_entries);
  if ((why = entry_name_problem (name)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s` has %s", ec->what, e, why);
  if (hl != NULL && (why = entry_name_problem (hl)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: hardlink `%s` has a target with %s",
                           ec->what, e, why);
  if (sl != NULL && strlen (sl) > OCILAYOUT_PATH_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%s: symlink `%s` has a target over 4096 bytes",
                           ec->what, e);
  /* a device node in an image is a door to the host's devices wherever the
   * runtime does not close it; the OCI whiteouts this builder writes are
   * `.wh.` files, not overlayfs' 0:0 character devices */
  if (type == AE_IFCHR || type == AE_IFBLK)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s` is a device node", ec->what, e);
  if (hl == NULL && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFIFO)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s` has an unknown type", ec->what,
                           e);
  /* the declared size first: a sparse entry claiming 2^60 bytes is refused
   * here, before libarchive is asked for any of its data */
  if (ssize < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s` has a negative size", ec->what,
                           e);
  if ((uint64_t) ssize > lim->max_entry_bytes)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "%s: entry `%s` declares %" PRId64 " bytes, over the limit of %" PRIu64,
                           ec->what, e, ssize, lim->max_entry_bytes);
  if ((uint64_t) ssize > lim->max_total_bytes - *ec->declared)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "%s: entry `%s`: the image's files are over %" PRIu64 " bytes",
                           ec->what, e, lim->max_total_bytes);
  *ec->declared += (uint64_t) ssize;
  if (archive_entry_sparse_count (ae) > 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s` is a sparse file", ec->what, e);

  if (ec->file != NULL && type == AE_IFREG && hl == NULL)
    {
      const char *base = strrchr (name, '/');
      struct digest_ctx d;
      char digest[DIGEST_STR_LEN + 1];
      uint64_t got = 0;

      base = base ? base + 1 : name;
      if (strncmp (base, ".wh.", 4) == 0)
        return archive_read_data_skip (a) == ARCHIVE_OK
                   ? 0
                   : bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s`: %s", ec->what, e,
                                     archive_error_string (a) ? archive_error_string (a)
                                                              : "unreadable");
      if (digest_init (&d, err) < 0)
        return -1;
      for (;;)
        {
          const void *buf;
          size_t n;
          la_int64_t off;
          int r = archive_read_data_block (a, &buf, &n, &off);
          if (r == ARCHIVE_EOF)
            break;
          if (r != ARCHIVE_OK || off < 0 || (uint64_t) off != got)
            {
              digest_dispose (&d);
              if (s->failed)
                return bvm_error_code (err, s->fail_code, 0, "%s", s->fail);
              return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s`: %s", ec->what, e,
                                     r != ARCHIVE_OK && archive_error_string (a)
                                         ? archive_error_string (a)
                                         : "data with holes");
            }
          digest_update (&d, buf, n);
          got += n;
        }
      digest_final (&d, digest);
      ec->img->files++;
      ec->img->bytes += got;
      return ec->file (ec->opaque, image_path (name), digest, got, err);
    }
  if (archive_read_data_skip (a) != ARCHIVE_OK)
    {
      if (s->failed)
        return bvm_error_code (err, s->fail_code, 0, "%s", s->fail);
      return bvm_error_code (err, BVM_E_INVALID, 0, "%s: entry `%s`: %s", ec->what, e,
                             archive_error_string (a) ? archive_error_string (a) : "unreadable");
    }
  return 0;
}

/* Stream layer `i` once: tar entries checked, the diffID computed and
 * compared, and (gz_path set) the runner's gzip of it written. */
static int
scan_layer (struct ocilayout_layer *out, const struct ocilayout *l, size_t i,
            const struct oci_descriptor *d, const char *diff_id, const char *gz_path,
            struct entry_ctx *ec, uint64_t *total, bvm_error_t *err)
{
  struct scan s = { .l = l, .index = i, .fd = -1, .gz_fd = -1, .total = total };
  struct archive *a = NULL;
  struct archive_entry *ae = NULL;
  cleanup_free char *path = blob_path (l, d->digest + 7);
  unsigned char magic[2] = { 0, 0 };
  char what[DIGEST_STR_LEN + 32], got[DIGEST_STR_LEN + 1];
  ssize_t n;
  int ret = -1, r;

  snprintf (what, sizeof what, "layer %zu (%s)", i, d->digest);
  ec->what = what;
  if (path == NULL)
    return bvm_error (err, ENOMEM, "layer");
  if (strcmp (d->media_type, OCI_MEDIA_LAYER_GZIP) != 0
      && strcmp (d->media_type, OCI_MEDIA_LAYER_TAR) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "%s has media type `%s`: the build's layers must be tar or tar+gzip",
                           what, d->media_type);
  s.fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (s.fd < 0)
    return bvm_error (err, errno, "open %s", what);
  do
    n = pread (s.fd, magic, sizeof magic, 0);
  while (n < 0 && errno == EINTR);
  s.gzip = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (s.gzip != (strcmp (d->media_type, OCI_MEDIA_LAYER_GZIP) == 0))
    {
      scan_dispose (&s);
      return bvm_error_code (err, BVM_E_INVALID, 0, "%s is declared `%s` but is %s", what,
                             d->media_type, s.gzip ? "gzip-compressed" : "not gzip");
    }
  s.in = malloc (CHUNK);
  s.out = malloc (CHUNK);
  if (s.in == NULL || s.out == NULL)
    {
      scan_dispose (&s);
      return bvm_error (err, ENOMEM, "layer");
    }
  if (s.gzip)
    {
      if (inflateInit2 (&s.zi, 15 + 16) != Z_OK)
        {
          scan_dispose (&s);
          return bvm_error (err, ENOMEM, "inflate");
        }
      s.zi_ready = true;
    }
  if (digest_init (&s.diff, err) < 0)
    {
      scan_dispose (&s);
      return -1;
    }
  s.diff_ready = true;
  if (gz_path != NULL)
    {
      s.zbuf = malloc (CHUNK);
      s.gz_fd = open (gz_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (s.zbuf == NULL || s.gz_fd < 0)
        {
          int e = s.zbuf == NULL ? ENOMEM : errno;
          scan_dispose (&s);
          return bvm_error (err, e, "create `%s`", gz_path);
        }
      /* windowBits 15 + 16: a gzip wrapper with mtime 0 and no name */
      if (deflateInit2 (&s.zo, l->lim.gzip_level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY)
          != Z_OK)
        {
          scan_dispose (&s);
          return bvm_error (err, ENOMEM, "deflate");
        }
      s.zo_ready = true;
      s.zo.next_out = s.zbuf;
      s.zo.avail_out = CHUNK;
      if (digest_init (&s.blob, err) < 0)
        {
          scan_dispose (&s);
          return -1;
        }
      s.blob_ready = true;
    }

  a = archive_read_new ();
  ae = archive_entry_new ();
  if (a == NULL || ae == NULL)
    {
      bvm_error (err, ENOMEM, "archive_read_new");
      goto cleanup;
    }
  /* tar only and no filter: the decompression above is ours */
  if (archive_read_support_format_tar (a) != ARCHIVE_OK
      || archive_read_open (a, &s, NULL, scan_read_cb, NULL) != ARCHIVE_OK)
    {
      if (s.failed)
        bvm_error_code (err, s.fail_code, 0, "%s", s.fail);
      else
        bvm_error_code (err, BVM_E_INVALID, 0, "%s is not a tar stream: %s", what,
                        archive_error_string (a) ? archive_error_string (a) : "unrecognized");
      goto cleanup;
    }
  for (;;)
    {
      r = archive_read_next_header2 (a, ae);
      if (r == ARCHIVE_EOF && !s.failed)
        break;
      if (r != ARCHIVE_OK || s.failed)
        {
          if (s.failed)
            bvm_error_code (err, s.fail_code, 0, "%s", s.fail);
          else
            bvm_error_code (err, BVM_E_INVALID, 0, "%s: %s", what,
                            archive_error_string (a) ? archive_error_string (a) : "unreadable");
          goto cleanup;
        }
      if (take_layer_entry (&s, a, ae, ec, err) < 0)
        goto cleanup;
    }
  /* the diffID is of the whole stream, the bytes after the end marker too */
  while ((n = produce (&s)) > 0)
    ;
  if (n < 0)
    {
      bvm_error_code (err, s.fail_code, 0, "%s", s.fail);
      goto cleanup;
    }
  digest_final (&s.diff, got);
  s.diff_ready = false;
  if (strcmp (got, diff_id) != 0)
    {
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "%s: its uncompressed content is %s, but the config's diffID for it is %s",
                      what, got, diff_id);
      goto cleanup;
    }
  out->tar_bytes = s.tar_bytes;
  snprintf (out->diff_id, sizeof out->diff_id, "%s", diff_id);
  if (gz_path != NULL)
    {
      if (gz_feed (&s, NULL, 0, Z_FINISH) < 0 || gz_flush (&s) < 0)
        {
          bvm_error_code (err, s.fail_code, 0, "%s", s.fail);
          goto cleanup;
        }
      if (close (steal_fd (&s.gz_fd)) < 0)
        {
          bvm_error (err, errno, "close `%s`", gz_path);
          goto cleanup;
        }
      memset (&out->desc, 0, sizeof out->desc);
      snprintf (out->desc.media_type, sizeof out->desc.media_type, "%s", OCI_MEDIA_LAYER_GZIP);
      digest_final (&s.blob, out->desc.digest);
      s.blob_ready = false;
      out->desc.size = s.blob_bytes;
    }
  ret = 0;
cleanup:
  if (a != NULL)
    archive_read_free (a);
  archive_entry_free (ae);
  scan_dispose (&s);
  return ret;
}

/* --- verify ---------------------------------------------------------------- */

void
ocilayout_image_dispose (struct ocilayout_image *img)
{
  if (img == NULL)
    return;
  json_decref (img->config);
  json_decref (img->history);
  for (size_t i = 0; i < img->n_layers; i++)
    free (img->layers[i].path);
  free (img->layers);
  memset (img, 0, sizeof *img);
  img->base = -1;
}

/* The base whose diffIDs, all of them, lead the image's. */
static int
match_base (size_t *n_match, const struct ocilayout_base *bases, size_t n_bases,
            char *const *diff_ids, size_t n_layers)
{
  int best = -1;

  *n_match = 0;
  for (size_t b = 0; b < n_bases; b++)
    {
      size_t n = 0;
      char **ids = base_diff_ids (&bases[b], &n);
      bool all = ids != NULL && n <= n_layers && n > *n_match;
      for (size_t j = 0; all && j < n; j++)
        all = strcmp (ids[j], diff_ids[j]) == 0;
      if (all)
        {
          best = (int) b;
          *n_match = n;
        }
      strv_free (ids);
    }
  return best;
}

static int
verify (struct ocilayout_image *img, struct ocilayout *l, const struct ocilayout_base *bases,
        size_t n_bases, ocilayout_file_fn file, void *opaque, bvm_error_t *err)
{
  struct oci_descriptor md;
  struct oci_manifest *m = NULL;
  cleanup_free char *cfg_text = NULL;
  char **diff_ids = NULL;
  const struct oci_descriptor *ld;
  size_t cfg_len = 0, n = 0;
  uint64_t total = 0, entries = 0, declared = 0;
  int ret = -1;

  if (l->open)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ocilayout: a file is still open");
  if (check_layout_file (l, err) < 0 || read_index (&md, l, err) < 0
      || read_manifest (&m, l, &md, err) < 0)
    return -1;
  snprintf (img->manifest_digest, sizeof img->manifest_digest, "%s", md.digest);
  snprintf (img->config_digest, sizeof img->config_digest, "%s", oci_manifest_config (m)->digest);
  ld = oci_manifest_layers (m, &n);
  if (check_present (l, oci_manifest_config (m), "config", err) < 0)
    goto cleanup;
  for (size_t i = 0; i < n; i++)
    {
      char what[32];
      snprintf (what, sizeof what, "layer %zu", i);
      if (check_present (l, &ld[i], what, err) < 0)
        goto cleanup;
    }
  if (read_blob (&cfg_text, &cfg_len, l, oci_manifest_config (m), OCI_CONFIG_MAX, "config", err)
          < 0
      || read_config (img, &diff_ids, cfg_text, cfg_len, n, err) < 0)
    goto cleanup;

  img->layers = calloc (n + 1, sizeof *img->layers);
  if (img->layers == NULL)
    {
      bvm_error (err, ENOMEM, "layers");
      goto cleanup;
    }
  img->base = match_base (&img->n_base_layers, bases, n_bases, diff_ids, n);
  for (size_t i = 0; i < n; i++)
    {
      struct ocilayout_layer *ly = &img->layers[i];
      struct entry_ctx ec = { img, NULL, &entries, &declared, NULL, opaque };
      cleanup_free char *gz = NULL;
      bool from_base = img->base >= 0 && i < img->n_base_layers;

      img->n_layers = i + 1;
      ly->base = -1;
      if (from_base)
        {
          const struct ocilayout_base *b = &bases[img->base];
          size_t nb = 0;
          const struct oci_descriptor *bl = oci_manifest_layers (b->manifest, &nb);
          ly->base = img->base;
          ly->desc = bl[i];
          ly->path = b->layer_paths && b->layer_paths[i] ? strdup (b->layer_paths[i]) : NULL;
          if (ly->path == NULL)
            {
              bvm_error_code (err, BVM_E_INTERNAL, 0, "base `%s` layer %zu has no local blob",
                              b->name, i);
              goto cleanup;
            }
        }
      else
        {
          ec.file = file;
          if (asprintf (&gz, "%s/layer-%zu.tar.gz", l->dir, i) < 0)
            {
              gz = NULL;
              bvm_error (err, ENOMEM, "layer path");
              goto cleanup;
            }
        }
      if (scan_layer (ly, l, i, &ld[i], diff_ids[i], gz, &ec, &total, err) < 0)
        goto cleanup;
      if (!from_base)
        ly->path = steal_pointer (&gz);
    }
  ret = 0;
cleanup:
  strv_free (diff_ids);
  oci_manifest_free (m);
  return ret;
}

int
ocilayout_verify (struct ocilayout_image *out, struct ocilayout *l,
                  const struct ocilayout_base *bases, size_t n_bases, ocilayout_file_fn file,
                  void *opaque, bvm_error_t *err)
{
  locale_t utf8, old = (locale_t) 0;
  int ret;

  memset (out, 0, sizeof *out);
  out->base = -1;
  /* pax names are UTF-8: libarchive converts them only in a UTF-8 locale
   * (as in ingest.c) */
  utf8 = newlocale (LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
  if (utf8 != (locale_t) 0)
    old = uselocale (utf8);
  ret = verify (out, l, bases, n_bases, file, opaque, err);
  if (utf8 != (locale_t) 0)
    {
      uselocale (old);
      freelocale (utf8);
    }
  if (ret < 0)
    ocilayout_image_dispose (out);
  return ret;
}

/* --- the runner's config --------------------------------------------------- */

int
ocilayout_config_build (char **out, size_t *len, const struct ocilayout_image *img,
                        const char *created, const json_t *labels, const char *history_created_by,
                        bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *cfg, *lab, *ids, *hist, *entry, *v;
  const char *k;
  void *tmp;
  char *s;

  cfg = img->config ? json_deep_copy (img->config) : json_object ();
  hist = img->history ? json_deep_copy (img->history) : json_array ();
  ids = json_array ();
  doc = json_pack ("{s:s, s:s, s:o, s:{s:s, s:o}, s:o}", "architecture", "amd64", "os", "linux",
                   "config", cfg, "rootfs", "type", "layers", "diff_ids", ids, "history", hist);
  if (doc == NULL)
    return bvm_error (err, ENOMEM, "the image config");
  if (created && json_object_set_new (doc, "created", json_string (created)) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  for (size_t i = 0; i < img->n_layers; i++)
    if (json_array_append_new (ids, json_string (img->layers[i].diff_id)) < 0)
      return bvm_error (err, ENOMEM, "the image config");
  lab = json_object_get (cfg, "Labels");
  if (!json_is_object (lab))
    {
      lab = json_object ();
      if (lab == NULL || json_object_set_new (cfg, "Labels", lab) < 0)
        return bvm_error (err, ENOMEM, "the image config");
    }
  /* the provenance labels are the runner's: phase_tag trusts
   * `dev.buildvm.commit` to decide whether a tag may move */
  json_object_foreach_safe (lab, tmp, k,
                            v) if (strncmp (k, PROVENANCE_PREFIX, sizeof PROVENANCE_PREFIX - 1)
                                   == 0) json_object_del (lab, k);
  if (labels != NULL)
    json_object_foreach ((json_t *) labels, k, v)
      {
        if (!json_is_string (v))
          return bvm_error_code (err, BVM_E_INVALID, 0, "label `%.100s` is not a string", k);
        if (json_object_set (lab, k, v) < 0)
          return bvm_error (err, ENOMEM, "the image config");
      }
  entry = json_pack ("{s:s, s:b}", "created_by",
                     history_created_by ? history_created_by : "buildvm", "empty_layer", 1);
  if (entry == NULL
      || (created && json_object_set_new (entry, "created", json_string (created)) < 0)
      || json_array_append_new (hist, entry) < 0)
    return bvm_error (err, ENOMEM, "the image config");
  s = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "the image config");
  *out = s;
  *len = strlen (s);
  return 0;
}
