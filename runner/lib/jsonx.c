/* jsonx.c - strict JSON helpers, see jsonx.h */
#include "jsonx.h"
#include "fs.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const char *
jsonx_path (char *buf, size_t size, const char *where, const char *key)
{
  if (where == NULL || *where == '\0')
    snprintf (buf, size, "%s", key);
  else
    snprintf (buf, size, "%s.%s", where, key);
  return buf;
}

static int
depth_ok (const json_t *j, int depth)
{
  const char *k;
  json_t *v;
  size_t i;

  if (depth > JSONX_MAX_DEPTH)
    return 0;
  if (json_is_object (j))
    {
      json_object_foreach ((json_t *) j, k, v)
        if (!depth_ok (v, depth + 1))
          return 0;
    }
  else if (json_is_array (j))
    {
      json_array_foreach (j, i, v)
        if (!depth_ok (v, depth + 1))
          return 0;
    }
  return 1;
}

/* Untrusted text for an error message: every byte outside printable ASCII,
 * and every byte in `also`, becomes \xNN; cut to fit `size`. Two messages
 * here quoted input verbatim, so a hostile document could put escape
 * sequences on the operator's terminal or split a log line: jansson's error
 * text ("invalid token near '<bytes>'", found by tests/fuzz/fuzz_job.c,
 * corpus/job/crash-64e5c7a3...) and an unknown key in jsonx_check_keys
 * (corpus/job/crash-unknown-field-control.json). */
static const char *
escape_text (char *out, size_t size, const char *text)
{
  return str_escape (out, size, text, strlen (text), (size_t) -1);
}

/* jansson 2.14 cannot survive a failed allocation in its lexer: lex_save()
 * ignores strbuffer_append_byte()'s result, so the saved token loses a byte
 * and the parse either succeeds with a corrupted string ("1.36" loaded as
 * "136", "build-role" as "build-ole": a resource pattern could lose a `/`
 * the same way) or trips an assert / reads past its buffer (upstream
 * akheron/jansson#362, still open). Found by tests/unit/test_allocfail.c.
 * So for the duration of a parse jansson allocates through these hooks: an
 * allocation that fails is served from a reserve taken before the parse, so
 * the lexer never sees the failure, and the document is then refused with
 * ENOMEM. Blocks from the reserve never outlive the parse. Outside a parse
 * the hooks are plain malloc and free. */
struct jansson_reserve
{
  char *base;
  size_t size, used;
  bool failed;
};
static __thread struct jansson_reserve *jansson_reserve;

static void *
jansson_malloc (size_t n)
{
  struct jansson_reserve *r = jansson_reserve;
  void *p = malloc (n);

  if (p != NULL || r == NULL)
    return p;
  r->failed = true;
  if (n > r->size - r->used || ((n + 15) & ~(size_t) 15) > r->size - r->used)
    return NULL;
  p = r->base + r->used;
  r->used += (n + 15) & ~(size_t) 15;
  return p;
}

static void
jansson_free (void *p)
{
  struct jansson_reserve *r = jansson_reserve;
  if (r != NULL && (char *) p >= r->base && (char *) p < r->base + r->size)
    return;
  free (p);
}

static void
jansson_hooks (void)
{
  json_set_alloc_funcs (jansson_malloc, jansson_free);
}

int
jsonx_parse (json_t **out, const char *data, size_t len, size_t max, const char *what,
             bvm_error_t *err)
{
  char text[4 * JSON_ERROR_TEXT_LENGTH + 1];
  static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
  struct jansson_reserve reserve = { NULL, 0, 0, false };
  json_error_t jerr;
  json_t *j;

  if (len > max)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%s is %zu bytes, over the limit of %zu", what,
                           len, max);
  /* jansson's own nesting limit is 2048; we check a much smaller one after
   * parsing, which is cheap next to the parse itself. */
  /* room for the largest single allocation a document of len bytes can
   * make jansson do (its token buffer, an array or a hash table) */
  pthread_once (&hooks_once, jansson_hooks);
  if (len > (SIZE_MAX - 65536) / 16)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%s is too large to parse", what);
  reserve.size = 16 * len + 65536;
  reserve.base = malloc (reserve.size);
  if (reserve.base == NULL)
    return bvm_error (err, ENOMEM, "parsing %s", what);
  jansson_reserve = &reserve;
  j = json_loadb (data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (reserve.failed && j != NULL)
    {
      json_decref (j); /* frees its reserve blocks as no-ops */
      j = NULL;
    }
  jansson_reserve = NULL;
  free (reserve.base);
  if (reserve.failed)
    return bvm_error (err, ENOMEM, "parsing %s", what);
  if (j == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s is not valid JSON: %s at line %d column %d",
                           what, escape_text (text, sizeof text, jerr.text), jerr.line,
                           jerr.column);
  if (!depth_ok (j, 0))
    {
      json_decref (j);
      return bvm_error_code (err, BVM_E_INVALID, 0, "%s nests deeper than %d levels", what,
                             JSONX_MAX_DEPTH);
    }
  *out = j;
  return 0;
}

int
jsonx_parse_file (json_t **out, const char *path, size_t max, bvm_error_t *err)
{
  cleanup_free char *data = NULL;
  size_t len = 0;
  char what[4200];
  int ret;

  ret = fs_read_file (&data, &len, path, max, err);
  if (ret < 0)
    return ret;
  snprintf (what, sizeof what, "`%s`", path);
  return jsonx_parse (out, data, len, max, what, err);
}

int
jsonx_parse_object (json_t **out, const char *data, size_t len, size_t max, const char *what,
                    const char *const *allowed, bvm_error_t *err)
{
  int ret;

  ret = jsonx_parse (out, data, len, max, what, err);
  if (ret < 0)
    return ret;
  if (!json_is_object (*out))
    return bvm_error_code (err, BVM_E_INVALID, 0, "%s must be a JSON object", what);
  return allowed != NULL ? jsonx_check_keys (*out, allowed, "", err) : 0;
}

int
jsonx_check_keys (const json_t *obj, const char *const *allowed, const char *where,
                  bvm_error_t *err)
{
  const char *k;
  json_t *v;
  char path[512];

  json_object_foreach ((json_t *) obj, k, v)
    {
      bool ok = false;
      for (size_t i = 0; allowed[i]; i++)
        if (strcmp (allowed[i], k) == 0)
          {
            ok = true;
            break;
          }
      if (!ok)
        {
          char shown[4 * 50 + 1];
          return bvm_error_code (err, BVM_E_INVALID, 0, "unknown field `%.200s`",
                                 jsonx_path (path, sizeof path, where,
                                             escape_text (shown, sizeof shown, k)));
        }
    }
  return 0;
}

static const char *
type_name (const json_t *j)
{
  switch (json_typeof (j))
    {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
  return "unknown";
}

static int
missing (const char *where, const char *key, bvm_error_t *err)
{
  char path[512];
  return bvm_error_code (err, BVM_E_INVALID, 0, "missing required field `%s`",
                         jsonx_path (path, sizeof path, where, key));
}

static int
wrong_type (const json_t *v, const char *expected, const char *where, const char *key,
            bvm_error_t *err)
{
  char path[512];
  return bvm_error_code (err, BVM_E_INVALID, 0, "field `%s` must be %s, not %s",
                         jsonx_path (path, sizeof path, where, key), expected, type_name (v));
}

int
jsonx_get_str (const char **out, const json_t *obj, const char *key, bool required, size_t maxlen,
               const char *where, bvm_error_t *err)
{
  json_t *v = json_object_get (obj, key);
  char path[512];

  if (v == NULL)
    return required ? missing (where, key, err) : 0;
  if (!json_is_string (v))
    return wrong_type (v, "a string", where, key, err);
  if (json_string_length (v) > maxlen)
    return bvm_error_code (err, BVM_E_INVALID, 0, "field `%s` is longer than %zu bytes",
                           jsonx_path (path, sizeof path, where, key), maxlen);
  if (strlen (json_string_value (v)) != json_string_length (v))
    return bvm_error_code (err, BVM_E_INVALID, 0, "field `%s` contains a NUL byte",
                           jsonx_path (path, sizeof path, where, key));
  *out = json_string_value (v);
  return 0;
}

int
jsonx_get_strs (const json_t *obj, const struct jsonx_str_field *fields, size_t n,
                const char *where, bvm_error_t *err)
{
  for (size_t i = 0; i < n; i++)
    {
      const struct jsonx_str_field *f = &fields[i];
      int ret = jsonx_get_str (f->out, obj, f->key, f->required, f->maxlen, where, err);
      if (ret < 0)
        return ret;
    }
  return 0;
}

int
jsonx_get_u64 (uint64_t *out, const json_t *obj, const char *key, bool required, uint64_t min,
               uint64_t max, const char *where, bvm_error_t *err)
{
  json_t *v = json_object_get (obj, key);
  char path[512];
  json_int_t n;

  if (v == NULL)
    return required ? missing (where, key, err) : 0;
  if (!json_is_integer (v))
    return wrong_type (v, "an integer", where, key, err);
  n = json_integer_value (v);
  if (n < 0 || (uint64_t) n < min || (uint64_t) n > max)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "field `%s` is %lld, outside the range %llu..%llu",
                           jsonx_path (path, sizeof path, where, key), (long long) n,
                           (unsigned long long) min, (unsigned long long) max);
  *out = (uint64_t) n;
  return 0;
}

int
jsonx_get_bool (bool *out, const json_t *obj, const char *key, bool required, const char *where,
                bvm_error_t *err)
{
  json_t *v = json_object_get (obj, key);

  if (v == NULL)
    return required ? missing (where, key, err) : 0;
  if (!json_is_boolean (v))
    return wrong_type (v, "a boolean", where, key, err);
  *out = json_is_true (v);
  return 0;
}

int
jsonx_get_typed (json_t **out, const json_t *obj, const char *key, json_type type, bool required,
                 const char *where, bvm_error_t *err)
{
  json_t *v = json_object_get (obj, key);

  if (v == NULL)
    return required ? missing (where, key, err) : 0;
  if (json_typeof (v) != type)
    return wrong_type (v, type == JSON_OBJECT ? "an object" : "an array", where, key, err);
  *out = v;
  return 0;
}

int
jsonx_get_str_array (const char ***out, size_t *n, const json_t *obj, const char *key,
                     bool required, size_t maxn, size_t maxlen, const char *where,
                     bvm_error_t *err)
{
  json_t *arr = NULL, *v;
  const char **vec;
  char path[512];
  size_t i;
  int ret;

  ret = jsonx_get_typed (&arr, obj, key, JSON_ARRAY, required, where, err);
  if (ret < 0 || arr == NULL)
    return ret;
  jsonx_path (path, sizeof path, where, key);
  if (json_array_size (arr) > maxn)
    return bvm_error_code (err, BVM_E_INVALID, 0, "field `%s` has more than %zu items", path,
                           maxn);
  vec = calloc (json_array_size (arr) + 1, sizeof *vec);
  if (vec == NULL)
    return bvm_error (err, ENOMEM, "field `%s`", path);
  json_array_foreach (arr, i, v)
    {
      if (!json_is_string (v))
        {
          free (vec);
          return bvm_error_code (err, BVM_E_INVALID, 0, "field `%s[%zu]` must be a string, not %s",
                                 path, i, type_name (v));
        }
      if (json_string_length (v) > maxlen
          || strlen (json_string_value (v)) != json_string_length (v))
        {
          free (vec);
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "field `%s[%zu]` is longer than %zu bytes or contains NUL", path,
                                 i, maxlen);
        }
      vec[i] = json_string_value (v);
    }
  *out = vec;
  *n = json_array_size (arr);
  return 0;
}

int
jsonx_write_file (const char *path, const json_t *doc, bvm_error_t *err)
{
  cleanup_free char *s = json_dumps (doc, JSON_INDENT (2) | JSON_SORT_KEYS);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "serializing `%s`", path);
  size_t len = strlen (s);
  s[len] = '\0';
  {
    /* add the trailing newline without another allocation dance */
    cleanup_free char *t = malloc (len + 2);
    if (t == NULL)
      return bvm_error (err, ENOMEM, "serializing `%s`", path);
    memcpy (t, s, len);
    t[len] = '\n';
    t[len + 1] = '\0';
    return fs_write_atomic (path, t, len + 1, 0644, err);
  }
}
