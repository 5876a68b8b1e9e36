/* fuzz_jsonx.c - the strict JSON layer every untrusted document goes through
 *
 * jsonx_parse (size cap, duplicate keys, depth cap, UTF-8 and NUL checks in
 * jansson), then jsonx_check_keys (which quotes the document's own keys) and
 * the getters for a few fixed field names: each getter must either give a
 * value of its type or fail with a printable message. The getters quote
 * `where` and `key` as given: callers pass fixed names (spec.c escapes a
 * document key itself before using it in a path), so the fuzzed document
 * never supplies them here either.
 */
#include "fuzz.h"

#include "jsonx.h"

static int
depth (const json_t *j)
{
  const char *k;
  json_t *v;
  size_t i;
  int d = 0, c;

  if (json_is_object (j))
    json_object_foreach ((json_t *) j, k, v)
      if ((c = depth (v) + 1) > d)
        d = c;
  if (json_is_array (j))
    json_array_foreach (j, i, v)
      if ((c = depth (v) + 1) > d)
        d = c;
  return d;
}

static void
getters (const json_t *obj, const char *key)
{
  static const char *const allowed[] = { "a", "b", "id", "name", NULL };
  bvm_error_t err = NULL;
  const char *s = NULL;
  uint64_t u = 0;
  bool b = false;
  json_t *t = NULL;
  const char **v = NULL;
  size_t n = 0;
  int ret;

  ret = jsonx_get_str (&s, obj, key, true, 64, "doc", &err);
  if (ret == 0)
    FUZZ_CHECK (s != NULL && strlen (s) <= 64 && json_is_string (json_object_get (obj, key)));
  else
    fuzz_check_error (ret, &err);

  ret = jsonx_get_u64 (&u, obj, key, true, 1, 1000, "doc", &err);
  if (ret == 0)
    FUZZ_CHECK (u >= 1 && u <= 1000);
  else
    fuzz_check_error (ret, &err);

  ret = jsonx_get_bool (&b, obj, key, false, "", &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);

  ret = jsonx_get_typed (&t, obj, key, JSON_ARRAY, true, "", &err);
  if (ret == 0)
    FUZZ_CHECK (json_is_array (t));
  else
    fuzz_check_error (ret, &err);

  ret = jsonx_get_str_array (&v, &n, obj, key, false, 8, 16, "x.y", &err);
  if (ret == 0)
    {
      FUZZ_CHECK (n <= 8);
      for (size_t i = 0; v != NULL && i < n; i++)
        FUZZ_CHECK (v[i] != NULL && strlen (v[i]) <= 16);
      FUZZ_CHECK (v == NULL || v[n] == NULL);
      free (v);
    }
  else
    fuzz_check_error (ret, &err);

  ret = jsonx_check_keys (obj, allowed, "top", &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  json_t *doc = NULL;
  static const char *const keys[] = { "a", "b", "id", "name", "missing" };
  int ret;

  /* a cap below the input size must fail before parsing */
  if (size > 0)
    {
      ret = jsonx_parse (&doc, (const char *) data, size, size - 1, "document", &err);
      FUZZ_CHECK (ret < 0 && doc == NULL && bvm_error_get_code (&err) == BVM_E_LIMIT);
      fuzz_check_error (ret, &err);
    }

  ret = jsonx_parse (&doc, (const char *) data, size, 1 << 20, "document", &err);
  if (ret < 0)
    {
      FUZZ_CHECK (doc == NULL);
      fuzz_check_error (ret, &err);
      return 0;
    }
  FUZZ_CHECK (doc != NULL);
  FUZZ_CHECK (depth (doc) <= JSONX_MAX_DEPTH);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    getters (doc, keys[i]);
  json_decref (doc);
  return 0;
}
