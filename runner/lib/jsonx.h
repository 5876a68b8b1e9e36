/* jsonx.h - strict JSON for untrusted documents, on top of jansson
 *
 * Every document buildvm reads (deploy requests, build specs, configs,
 * policies, webhook payloads) goes through jsonx_parse(): a size cap checked
 * before parsing, duplicate keys rejected, invalid UTF-8 and NUL rejected (by
 * jansson), and a nesting cap. The getters produce errors that name the field
 * with a path such as `image.ports[2]`.
 */
#ifndef BUILDVM_JSONX_H
#define BUILDVM_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define JSONX_MAX_DEPTH 32

/* `what` names the document in errors ("deploy request", "`runner.json`"). */
int jsonx_parse (json_t **out, const char *data, size_t len, size_t max, const char *what,
                 bvm_error_t *err);
int jsonx_parse_file (json_t **out, const char *path, size_t max, bvm_error_t *err);
/* jsonx_parse() of a document that must be an object ("WHAT must be a JSON
 * object") with only the keys in the NULL-terminated `allowed` (none are
 * checked when it is NULL). */
int jsonx_parse_object (json_t **out, const char *data, size_t len, size_t max, const char *what,
                        const char *const *allowed, bvm_error_t *err);

/* Fail naming the first key of `obj` that is not in the NULL-terminated
 * `allowed` list. `where` is the path of obj ("" for the top level). */
int jsonx_check_keys (const json_t *obj, const char *const *allowed, const char *where,
                      bvm_error_t *err);

/* Getters. `where` is the path of obj; errors say "field `where.key` ...".
 * A missing optional field leaves *out untouched and returns 0; a present
 * field of the wrong type is always an error. Strings may not contain NUL. */
int jsonx_get_str (const char **out, const json_t *obj, const char *key, bool required,
                   size_t maxlen, const char *where, bvm_error_t *err);
/* jsonx_get_str for each of `n` fields in turn, stopping at the first error. */
struct jsonx_str_field
{
  const char **out;
  const char *key;
  bool required;
  size_t maxlen;
};
int jsonx_get_strs (const json_t *obj, const struct jsonx_str_field *fields, size_t n,
                    const char *where, bvm_error_t *err);
int jsonx_get_u64 (uint64_t *out, const json_t *obj, const char *key, bool required, uint64_t min,
                   uint64_t max, const char *where, bvm_error_t *err);
int jsonx_get_bool (bool *out, const json_t *obj, const char *key, bool required,
                    const char *where, bvm_error_t *err);
/* An object or array member of the given type (JSON_OBJECT / JSON_ARRAY). */
int jsonx_get_typed (json_t **out, const json_t *obj, const char *key, json_type type,
                     bool required, const char *where, bvm_error_t *err);
/* An array of strings, each at most maxlen bytes, at most maxn items.
 * *out is a NULL-terminated malloc'd vector of pointers into the json (do not
 * free the strings, free only the vector). */
int jsonx_get_str_array (const char ***out, size_t *n, const json_t *obj, const char *key,
                         bool required, size_t maxn, size_t maxlen, const char *where,
                         bvm_error_t *err);

/* Serialize to a file atomically (temp, fsync, rename, fsync dir), mode 0644. */
int jsonx_write_file (const char *path, const json_t *doc, bvm_error_t *err);

/* "where.key" with where possibly empty, into buf. */
const char *jsonx_path (char *buf, size_t size, const char *where, const char *key);

static inline void
jsonx_decrefp (json_t **j)
{
  if (*j)
    json_decref (*j);
}
#define cleanup_json __attribute__ ((cleanup (jsonx_decrefp)))

#endif
