/* sbom.c - CycloneDX 1.5 from the layer, the base image and lock files, see sbom.h */
#include "sbom.h"
#include "attest.h"
#include "buf.h"
#include "digest.h"
#include "jsonx.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_ 512 /* a package name or version longer than this is refused */

const char *const sbom_lockfiles[] = { "package-lock.json", "requirements.txt", "go.sum",
                                       "Cargo.lock", NULL };

struct sbom
{
  size_t max;
  json_t *files;    /* components of type "file" */
  json_t *packages; /* components of type "library" (lock files) */
  json_t *base;     /* the base image's component with its packages nested, or NULL */
  size_t n_base_packages;
  json_t *deps; /* ResourceDescriptors for the provenance */
};

int
sbom_new (struct sbom **out, size_t max_components, bvm_error_t *err)
{
  struct sbom *s = calloc (1, sizeof *s);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  s->max = max_components ? max_components : SBOM_COMPONENTS_MAX;
  s->files = json_array ();
  s->packages = json_array ();
  s->deps = json_array ();
  if (s->files == NULL || s->packages == NULL || s->deps == NULL)
    {
      sbom_free (s);
      return bvm_error (err, ENOMEM, "sbom");
    }
  *out = s;
  return 0;
}

void
sbom_free (struct sbom *s)
{
  if (s == NULL)
    return;
  json_decref (s->files);
  json_decref (s->packages);
  json_decref (s->base);
  json_decref (s->deps);
  free (s);
}

size_t
sbom_file_count (const struct sbom *s)
{
  return json_array_size (s->files);
}

size_t
sbom_package_count (const struct sbom *s)
{
  return json_array_size (s->packages) + s->n_base_packages;
}

json_t *
sbom_dependencies (const struct sbom *s)
{
  return s->deps;
}

static int
check_room (struct sbom *s, bvm_error_t *err)
{
  if (json_array_size (s->files) + json_array_size (s->packages) + s->n_base_packages >= s->max)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "the SBOM would list more than %zu components",
                           s->max);
  return 0;
}

int
sbom_add_file (struct sbom *s, const char *path, const char *digest, uint64_t size,
               bvm_error_t *err)
{
  json_t *c;
  int ret;

  if ((ret = check_room (s, err)) < 0)
    return ret;
  if (digest_problem (digest) != NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "sbom: bad digest for `%s`", path);
  {
    char n[32];
    snprintf (n, sizeof n, "%llu", (unsigned long long) size);
    c = json_pack ("{s:s, s:s, s:[{s:s, s:s}], s:[{s:s, s:s}]}", "type", "file", "name", path,
                   "hashes", "alg", "SHA-256", "content", digest + 7, "properties", "name",
                   "buildvm:size", "value", n);
  }
  if (c == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  if (json_array_append_new (s->files, c) < 0)
    return bvm_error (err, ENOMEM, "sbom");
  return 0;
}

/* --- purls --------------------------------------------------------------------------- */

/* percent-encode what the purl spec does not leave as it is */
static int
purl_part (struct buf *b, const char *s, size_t n, bool keep_slash)
{
  for (size_t i = 0; i < n; i++)
    {
      unsigned char c = (unsigned char) s[i];
      if (isalnum (c) || c == '.' || c == '-' || c == '_' || c == '~' || (keep_slash && c == '/'))
        {
          if (buf_add (b, &s[i], 1) < 0)
            return -1;
        }
      else if (buf_addf (b, "%%%02X", c) < 0)
        return -1;
    }
  return 0;
}

static char *
purl (const char *type, const char *ns, const char *name, size_t name_len, const char *version,
      size_t version_len, bool slash_in_name)
{
  struct buf b = BUF_INIT (4 * (NAME_MAX_ * 2) + 64);
  if (buf_addf (&b, "pkg:%s/", type) < 0 || (ns && buf_addf (&b, "%s/", ns) < 0)
      || purl_part (&b, name, name_len, slash_in_name) < 0
      || (version_len > 0
          && (buf_adds (&b, "@") < 0 || purl_part (&b, version, version_len, false) < 0)))
    {
      buf_dispose (&b);
      return NULL;
    }
  return buf_steal (&b);
}

/* A component of a lock file; `hash_alg`/`hash_hex` may be NULL. */
static int
add_package (struct sbom *s, const char *lockfile, const char *type, const char *ns,
             const char *name, size_t name_len, const char *version, size_t version_len,
             const char *hash_alg, const char *hash_hex, bool slash_in_name, bvm_error_t *err)
{
  cleanup_free char *p = NULL;
  char nm[NAME_MAX_ + 1], ver[NAME_MAX_ + 1];
  json_t *c, *d;
  int ret;

  if (name_len == 0 || name_len > NAME_MAX_ || version_len > NAME_MAX_
      || text_problem (name, name_len) != NULL
      || (version_len && text_problem (version, version_len) != NULL))
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s`: a package name or version is not valid",
                           lockfile);
  if ((ret = check_room (s, err)) < 0)
    return ret;
  memcpy (nm, name, name_len);
  nm[name_len] = '\0';
  memcpy (ver, version, version_len);
  ver[version_len] = '\0';
  if ((p = purl (type, ns, name, name_len, version, version_len, slash_in_name)) == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  c = json_pack ("{s:s, s:s, s:s, s:s, s:[{s:s, s:s}]}", "type", "library", "name", nm, "version",
                 ver, "purl", p, "properties", "name", "buildvm:lockfile", "value", lockfile);
  d = json_pack ("{s:s, s:s}", "uri", p, "name", nm);
  if (c == NULL || d == NULL)
    {
      json_decref (c);
      json_decref (d);
      return bvm_error (err, ENOMEM, "sbom");
    }
  /* SLSA's digest names: sha256, sha512, sha1 */
  if (hash_alg && hash_hex
      && (json_object_set_new (c, "hashes",
                               json_pack ("[{s:s, s:s}]", "alg", hash_alg, "content", hash_hex))
              < 0
          || json_object_set_new (d, "digest",
                                  json_pack ("{s:s}",
                                             strcmp (hash_alg, "SHA-256") == 0   ? "sha256"
                                             : strcmp (hash_alg, "SHA-512") == 0 ? "sha512"
                                                                                 : "sha1",
                                             hash_hex))
                 < 0))
    {
      json_decref (c);
      json_decref (d);
      return bvm_error (err, ENOMEM, "sbom");
    }
  if (json_array_append_new (s->packages, c) < 0 || json_array_append_new (s->deps, d) < 0)
    return bvm_error (err, ENOMEM, "sbom");
  return 0;
}

static bool
hex_ok (const char *s, size_t n, size_t want)
{
  if (n != want)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isxdigit ((unsigned char) s[i]))
      return false;
  return true;
}

/* --- the base image --------------------------------------------------------------- */

int
sbom_set_base (struct sbom *s, const char *ref, const char *digest, const char *packages,
               bvm_error_t *err)
{
  json_t *nested;
  const char *p = packages ? packages : "";

  if (digest_problem (digest) != NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "sbom: bad base digest");
  json_decref (s->base);
  s->n_base_packages = 0;
  nested = json_array ();
  s->base = json_pack ("{s:s, s:s, s:s, s:[{s:s, s:s}]}", "type", "container", "name", ref,
                       "version", digest, "hashes", "alg", "SHA-256", "content", digest + 7);
  if (s->base == NULL || nested == NULL)
    {
      json_decref (nested);
      return bvm_error (err, ENOMEM, "sbom");
    }
  if (json_object_set_new (s->base, "components", nested) < 0)
    return bvm_error (err, ENOMEM, "sbom");
  /* "name=version name=version ...": the label is the base image's, which
   * a base image's builder chose; the names are checked like a lock file's */
  while (*p)
    {
      const char *end, *eq;
      cleanup_free char *pu = NULL;
      char nm[NAME_MAX_ + 1], ver[NAME_MAX_ + 1];
      int ret;

      while (*p == ' ')
        p++;
      if (*p == '\0')
        break;
      end = strchr (p, ' ');
      if (end == NULL)
        end = p + strlen (p);
      eq = memchr (p, '=', (size_t) (end - p));
      if (eq == NULL || eq == p || eq - p > NAME_MAX_ || end - eq - 1 > NAME_MAX_
          || text_problem (p, (size_t) (end - p)) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "base image `%s`: its package label is not `name=version ...`",
                               ref);
      if ((ret = check_room (s, err)) < 0)
        return ret;
      snprintf (nm, sizeof nm, "%.*s", (int) (eq - p), p);
      snprintf (ver, sizeof ver, "%.*s", (int) (end - eq - 1), eq + 1);
      pu = purl ("deb", "debian", nm, strlen (nm), ver, strlen (ver), false);
      if (pu == NULL
          || json_array_append_new (nested, json_pack ("{s:s, s:s, s:s, s:s}", "type", "library",
                                                       "name", nm, "version", ver, "purl", pu))
                 < 0)
        return bvm_error (err, ENOMEM, "sbom");
      s->n_base_packages++;
      p = end;
    }
  return 0;
}

/* --- lock files --------------------------------------------------------------------- */

/* npm's integrity: "sha512-<base64>" (the strongest of a space-separated list) */
static int
npm_integrity (char *alg, size_t alg_size, char **hex, const char *integrity)
{
  static const struct
  {
    const char *prefix, *alg;
  } algs[] = { { "sha512-", "SHA-512" }, { "sha256-", "SHA-256" }, { "sha1-", "SHA-1" } };

  *hex = NULL;
  for (size_t a = 0; a < ARRAY_SIZE (algs) && integrity; a++)
    {
      const char *p = strstr (integrity, algs[a].prefix);
      const char *b64, *end;
      unsigned char *raw = NULL;
      size_t raw_len = 0;

      if (p == NULL)
        continue;
      b64 = p + strlen (algs[a].prefix);
      end = strchr (b64, ' ');
      if (end == NULL)
        end = b64 + strlen (b64);
      if (attest__b64_decode (&raw, &raw_len, b64, (size_t) (end - b64)) < 0)
        return -1;
      *hex = malloc (raw_len * 2 + 1);
      if (*hex == NULL)
        {
          free (raw);
          return -1;
        }
      hex_encode (*hex, raw, raw_len);
      free (raw);
      snprintf (alg, alg_size, "%s", algs[a].alg);
      return 0;
    }
  return 0;
}

static int
npm_package (struct sbom *s, const char *name, const json_t *v, bvm_error_t *err)
{
  const char *version = json_string_value (json_object_get (v, "version"));
  const char *integrity = json_string_value (json_object_get (v, "integrity"));
  cleanup_free char *hex = NULL;
  char alg[16] = "";

  if (json_is_true (json_object_get (v, "link")) || version == NULL)
    return 0; /* a workspace link or the root: not a fetched package */
  if (npm_integrity (alg, sizeof alg, &hex, integrity) < 0)
    {
      char shown[512];
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "`package-lock.json`: the integrity of `%s` is not base64",
                             str_escape (shown, sizeof shown, name, strlen (name), 200));
    }
  return add_package (s, "package-lock.json", "npm", NULL, name, strlen (name), version,
                      strlen (version), hex ? alg : NULL, hex, true, err);
}

static int
lock_npm (struct sbom *s, const char *data, size_t len, bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  const char *key;
  json_t *v, *pkgs;
  int ret;

  if (jsonx_parse_object (&doc, data, len, SBOM_LOCKFILE_MAX, "`package-lock.json`", NULL, err)
      < 0)
    return -1;
  /* lockfileVersion 2 and 3: "packages" keyed by "node_modules/<name>" */
  pkgs = json_object_get (doc, "packages");
  if (json_is_object (pkgs))
    {
      json_object_foreach (pkgs, key, v)
        {
          const char *name, *nm = strstr (key, "node_modules/");
          if (key[0] == '\0' || nm == NULL)
            continue; /* the root package, or a workspace folder */
          /* the name after the last node_modules/ (a scoped name keeps its @scope/) */
          for (const char *q = nm; (q = strstr (q, "node_modules/")) != NULL; q += 13)
            nm = q;
          name = nm + 13;
          if ((ret = npm_package (s, name, v, err)) < 0)
            return ret;
        }
      return 0;
    }
  /* lockfileVersion 1: "dependencies", top level */
  json_object_foreach (json_object_get (doc, "dependencies"), key, v)
    if ((ret = npm_package (s, key, v, err)) < 0)
      return ret;
  return 0;
}

/* The next line of [*p, end): sets *line and *n, advances *p. */
static bool
next_line (const char **p, const char *end, const char **line, size_t *n)
{
  const char *nl;
  if (*p >= end)
    return false;
  nl = memchr (*p, '\n', (size_t) (end - *p));
  *line = *p;
  *n = (size_t) ((nl ? nl : end) - *p);
  if (*n > 0 && (*line)[*n - 1] == '\r')
    (*n)--;
  *p = nl ? nl + 1 : end;
  return true;
}

static size_t
span (const char *s, size_t n, bool (*ok) (char))
{
  size_t i = 0;
  while (i < n && ok (s[i]))
    i++;
  return i;
}

static bool
is_space (char c)
{
  return c == ' ' || c == '\t';
}

static bool
is_not_space (char c)
{
  return c != ' ' && c != '\t' && c != ';' && c != '\\';
}

static bool
is_pip_name (char c)
{
  return isalnum ((unsigned char) c) || c == '-' || c == '_' || c == '.' || c == '[' || c == ']'
         || c == ',';
}

/* name==version [--hash=sha256:<hex> ...], continued over lines ending in
 * a backslash; other lines (options, comments, unpinned requirements) are
 * not pins and are not listed */
static int
lock_pip (struct sbom *s, const char *data, size_t len, bvm_error_t *err)
{
  const char *p = data, *end = data + len, *line;
  struct buf logical = BUF_INIT (64 * 1024);
  size_t n;
  int ret = 0;

  while (ret == 0 && next_line (&p, end, &line, &n))
    {
      const char *l, *hash = NULL, *h;
      size_t ln, name_len, i, ver_len;
      char pyname[NAME_MAX_ + 1] = "";

      if (buf_add (&logical, line, n) < 0)
        {
          ret = bvm_error_code (err, BVM_E_LIMIT, 0, "`requirements.txt`: a line is too long");
          break;
        }
      if (n > 0 && line[n - 1] == '\\')
        continue;
      l = buf_cstr (&logical);
      ln = logical.len;
      i = span (l, ln, is_space);
      name_len = span (l + i, ln - i, is_pip_name);
      if (name_len == 0 || i + name_len + 2 > ln || strncmp (l + i + name_len, "==", 2) != 0)
        {
          buf_reset (&logical);
          continue;
        }
      ver_len = span (l + i + name_len + 2, ln - i - name_len - 2, is_not_space);
      if ((h = strstr (l, "--hash=sha256:")) != NULL && hex_ok (h + 14, strnlen (h + 14, 64), 64))
        hash = h + 14;
      /* PEP 503: the normalized name (extras dropped) */
      {
        size_t k = 0;
        for (size_t j = 0; j < name_len && l[i + j] != '[' && k < NAME_MAX_; j++)
          pyname[k++] = (char) (l[i + j] == '_' || l[i + j] == '.'
                                    ? '-'
                                    : tolower ((unsigned char) l[i + j]));
        pyname[k] = '\0';
      }
      {
        char hex[65] = "";
        if (hash)
          snprintf (hex, sizeof hex, "%.64s", hash);
        ret = add_package (s, "requirements.txt", "pypi", NULL, pyname, strlen (pyname),
                           l + i + name_len + 2, ver_len, hash ? "SHA-256" : NULL,
                           hash ? hex : NULL, false, err);
      }
      buf_reset (&logical);
    }
  buf_dispose (&logical);
  return ret;
}

/* "<module> <version>[/go.mod] h1:<base64>": the module's own line only */
static int
lock_go (struct sbom *s, const char *data, size_t len, bvm_error_t *err)
{
  const char *p = data, *end = data + len, *line;
  size_t n;
  int ret;

  while (next_line (&p, end, &line, &n))
    {
      const char *sp1 = memchr (line, ' ', n), *sp2;
      if (n == 0)
        continue;
      if (sp1 == NULL || (sp2 = memchr (sp1 + 1, ' ', (size_t) (line + n - sp1 - 1))) == NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "`go.sum`: a line is not `module version hash`");
      if (sp2 - sp1 > 8 && memcmp (sp2 - 7, "/go.mod", 7) == 0)
        continue;
      ret = add_package (s, "go.sum", "golang", NULL, line, (size_t) (sp1 - line), sp1 + 1,
                         (size_t) (sp2 - sp1 - 1), NULL, NULL, true, err);
      if (ret < 0)
        return ret;
    }
  return 0;
}

/* `key = "value"` of a Cargo.lock line */
static bool
toml_str (const char *line, size_t n, const char *key, const char **v, size_t *vn)
{
  size_t k = strlen (key);
  const char *q, *e;
  if (n < k + 4 || strncmp (line, key, k) != 0)
    return false;
  q = line + k;
  while (q < line + n && (*q == ' ' || *q == '='))
    q++;
  if (q >= line + n || *q != '"')
    return false;
  e = memchr (q + 1, '"', (size_t) (line + n - q - 1));
  if (e == NULL)
    return false;
  *v = q + 1;
  *vn = (size_t) (e - q - 1);
  return true;
}

static int
cargo_flush (struct sbom *s, const char *name, size_t nn, const char *ver, size_t vn,
             const char *sum, size_t sn, bvm_error_t *err)
{
  char hex[65] = "";
  if (name == NULL)
    return 0;
  if (sum && hex_ok (sum, sn, 64))
    snprintf (hex, sizeof hex, "%.64s", sum);
  return add_package (s, "Cargo.lock", "cargo", NULL, name, nn, ver ? ver : "", ver ? vn : 0,
                      hex[0] ? "SHA-256" : NULL, hex[0] ? hex : NULL, false, err);
}

static int
lock_cargo (struct sbom *s, const char *data, size_t len, bvm_error_t *err)
{
  const char *p = data, *end = data + len, *line;
  const char *name = NULL, *ver = NULL, *sum = NULL, *v;
  size_t n, nn = 0, vn = 0, sn = 0, l;
  int ret;

  while (next_line (&p, end, &line, &n))
    {
      if (n >= 11 && strncmp (line, "[[package]]", 11) == 0)
        {
          if ((ret = cargo_flush (s, name, nn, ver, vn, sum, sn, err)) < 0)
            return ret;
          name = ver = sum = NULL;
        }
      else if (toml_str (line, n, "name", &v, &l))
        name = v, nn = l;
      else if (toml_str (line, n, "version", &v, &l))
        ver = v, vn = l;
      else if (toml_str (line, n, "checksum", &v, &l))
        sum = v, sn = l;
    }
  return cargo_flush (s, name, nn, ver, vn, sum, sn, err);
}

int
sbom_add_lockfile (struct sbom *s, const char *name, const char *data, size_t len,
                   bvm_error_t *err)
{
  if (len > SBOM_LOCKFILE_MAX)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %u bytes", name,
                           SBOM_LOCKFILE_MAX);
  if (strcmp (name, "package-lock.json") == 0)
    return lock_npm (s, data, len, err);
  if (strcmp (name, "requirements.txt") == 0)
    return lock_pip (s, data, len, err);
  if (strcmp (name, "go.sum") == 0)
    return lock_go (s, data, len, err);
  if (strcmp (name, "Cargo.lock") == 0)
    return lock_cargo (s, data, len, err);
  return bvm_error_code (err, BVM_E_INTERNAL, 0, "`%s` is not a lock file sbom knows", name);
}

/* --- the document ---------------------------------------------------------------------- */

int
sbom_to_json (char **out, size_t *len, const struct sbom *s, const struct sbom_meta *m,
              bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *components;
  char serial[64];
  char *text;

  if (digest_problem (m->digest) != NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "sbom without an image digest");
  /* a serial number that names this image's SBOM: a UUID made of the
   * digest's first 128 bits (version and variant bits set) */
  snprintf (serial, sizeof serial, "urn:uuid:%.8s-%.4s-5%.3s-8%.3s-%.12s", m->digest + 7,
            m->digest + 15, m->digest + 20, m->digest + 24, m->digest + 27);
  components = json_array ();
  if (components == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  if ((s->base && json_array_append (components, s->base) < 0)
      || json_array_extend (components, s->packages) < 0
      || json_array_extend (components, s->files) < 0)
    {
      json_decref (components);
      return bvm_error (err, ENOMEM, "sbom");
    }
  doc = json_pack ("{s:s, s:s, s:s, s:i, s:{s:s, s:{s:[{s:s, s:s, s:s}]}, s:{s:s, s:s, s:s, "
                   "s:s, s:[{s:s, s:s}]}}, s:o}",
                   "bomFormat", "CycloneDX", "specVersion", "1.5", "serialNumber", serial,
                   "version", 1, "metadata", "timestamp", m->timestamp, "tools", "components",
                   "type", "application", "name", "buildvm", "version",
                   m->tool_version ? m->tool_version : "", "component", "type", "container",
                   "bom-ref", "image", "name", m->name, "version", m->version ? m->version : "",
                   "hashes", "alg", "SHA-256", "content", m->digest + 7, "components", components);
  if (doc == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  text = json_dumps (doc, JSON_COMPACT | JSON_SORT_KEYS);
  if (text == NULL)
    return bvm_error (err, ENOMEM, "sbom");
  *out = text;
  *len = strlen (text);
  return 0;
}
