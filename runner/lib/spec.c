/* spec.c - the app build spec `buildvm.json`, see spec.h and docs/schemas.md */
#include "spec.h"
#include "digest.h"
#include "image.h"
#include "egress.h"
#include "job.h"
#include "jsonx.h"
#include "oci.h"
#include "secrets.h"
#include "caps.h"
#include "util.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WHAT "`buildvm.json`"

/* --- errors ----------------------------------------------------------------- */

static int bad (bvm_error_t *err, const char *field, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* "`buildvm.json`: field `image.ports[1]` <why>" */
static int
bad (bvm_error_t *err, const char *field, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, BVM_E_INVALID, 0, WHAT ": field `%s` %s", field, msg);
}

static int
bad_value (bvm_error_t *err, const char *field, const char *why, const char *value)
{
  char shown[JOB__SHOW_SIZE];
  return bad (err, field, "%s, got `%s`", why, job__show (shown, sizeof shown, value));
}

static int
wrapped (int ret, bvm_error_t *err)
{
  return ret < 0 ? bvm_error_wrap (err, WHAT) : ret;
}

static int
nomem (bvm_error_t *err)
{
  return bvm_error (err, ENOMEM, "parsing " WHAT);
}

/* --- character classes and validators ----------------------------------------- */

const char *
spec_env_name_problem (const char *s)
{
  static const char why[]
      = "is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$, at most 128 bytes)";
  size_t i;
  if (s == NULL || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
    return why;
  for (i = 1; s[i]; i++)
    if (i >= SPEC_ENV_KEY_MAX || !(is_alnum (s[i]) || s[i] == '_'))
      return why;
  return NULL;
}

/* A relative path inside the source tree: never absolute, never `..`, no
 * empty or `.` components (except the whole path being "."), so it cannot
 * name anything outside the tree however it is joined. With `glob`, a
 * component must also not be able to match `.` or `..` (".*" would, through
 * readdir), `\` is refused (an escape for fnmatch) and brackets must close. */
static const char *
rel_path_problem (const char *s, bool glob)
{
  size_t len = strlen (s);
  char comp[SPEC_PATH_MAX + 1];

  if (len == 0)
    return "must not be empty";
  if (len > SPEC_PATH_MAX)
    return "is longer than 1024 bytes";
  if (has_control (s))
    return "must not contain control characters";
  if (s[0] == '/')
    return "must be relative to the source tree, not absolute";
  if (strcmp (s, ".") == 0 || strcmp (s, "./") == 0)
    return NULL;
  if (glob && strchr (s, '\\') != NULL)
    return "must not contain `\\`";
  for (const char *c = s; c != NULL && *c;)
    {
      const char *slash = strchr (c, '/');
      size_t n = slash ? (size_t) (slash - c) : strlen (c);
      if (n == 0)
        return "must not contain `//`";
      memcpy (comp, c, n);
      comp[n] = '\0';
      if (strcmp (comp, "..") == 0)
        return "must not contain `..` (it must stay inside the source tree)";
      if (strcmp (comp, ".") == 0)
        return "must not contain `.` components";
      if (glob)
        {
          int depth = 0;
          /* with glob(3)'s rule that a leading `.` is matched only by a
           * literal `.` (FNM_PERIOD), "*" cannot match `.` but ".*" and ".?"
           * can match `..`; a leading bracket like "[.]" is refused too, as
           * it is clearly meant to match a dot */
          if (fnmatch (comp, ".", FNM_PERIOD) == 0 || fnmatch (comp, "..", FNM_PERIOD) == 0
              || (comp[0] == '[' && (fnmatch (comp, ".", 0) == 0 || fnmatch (comp, "..", 0) == 0)))
            return "has a pattern that matches `.` or `..`";
          for (size_t i = 0; i < n; i++)
            {
              if (comp[i] == '[')
                depth = 1;
              else if (comp[i] == ']')
                depth = 0;
            }
          if (depth != 0)
            return "has an unterminated `[`";
        }
      c = slash ? slash + 1 : NULL;
    }
  return NULL;
}

/* An absolute path in the image: normalized (no empty, `.` or `..`
 * components, no trailing `/` except "/" itself) so that what is checked is
 * what is used. */
static const char *
abs_path_problem (const char *s)
{
  size_t len = strlen (s);

  if (len == 0)
    return "must not be empty";
  if (len > SPEC_PATH_MAX)
    return "is longer than 1024 bytes";
  if (has_control (s))
    return "must not contain control characters";
  if (s[0] != '/')
    return "must be an absolute path";
  if (len == 1)
    return NULL;
  if (s[len - 1] == '/')
    return "must not end with `/`";
  for (const char *c = s + 1; c != NULL;)
    {
      const char *slash = strchr (c, '/');
      size_t n = slash ? (size_t) (slash - c) : strlen (c);
      if (n == 0)
        return "must not contain `//`";
      if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return "must be normalized (no `.` or `..` components)";
      c = slash ? slash + 1 : NULL;
    }
  return NULL;
}

static bool
path_is_under (const char *s, const char *dir)
{
  size_t n = strlen (dir);
  return strncmp (s, dir, n) == 0 && (s[n] == '\0' || s[n] == '/');
}

/* --- owned copies ------------------------------------------------------------ */

static void
kv_free (struct spec_kv *kv, size_t n)
{
  if (kv == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    {
      free (kv[i].key);
      free (kv[i].value);
    }
  free (kv);
}

static int
dup_to (char **dst, const char *src, bvm_error_t *err)
{
  *dst = strdup (src);
  return *dst == NULL ? nomem (err) : 0;
}

/* --- pieces -------------------------------------------------------------------- */

/* Names the build agent sets itself: a spec must not be able to point HOME
 * somewhere else or impersonate the agent's own variables. */
static const char *
build_env_key_problem (const char *k)
{
  if (spec_env_name_problem (k) != NULL)
    return "is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$, at most 128 bytes)";
  if (strcmp (k, "HOME") == 0 || strcmp (k, "USER") == 0 || strncmp (k, "BUILDVM_", 8) == 0)
    return "is reserved (HOME, USER and BUILDVM_* are set by the build agent)";
  return NULL;
}

static const char *
image_env_key_problem (const char *k)
{
  if (spec_env_name_problem (k) != NULL)
    return "is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$, at most 128 bytes)";
  return NULL;
}

static const char *
label_key_problem (const char *k)
{
  size_t len = strlen (k);
  if (len == 0 || len > SPEC_LABEL_KEY_MAX)
    return "must be 1 to 256 bytes";
  if (!is_alnum (k[0]))
    return "must start with a letter or digit";
  for (const char *p = k; *p; p++)
    if (!(is_alnum (*p) || *p == '.' || *p == '-' || *p == '_' || *p == '/'))
      return "may contain only letters, digits, `.`, `-`, `_` and `/`";
  /* our own labels say which job, commit and runner built the image; an
   * app must not be able to forge them */
  if (strncmp (k, "dev.buildvm.", 12) == 0)
    return "is reserved (labels under `dev.buildvm.` are set by the runner)";
  return NULL;
}

/* A JSON object of strings into key/value pairs. */
static int
parse_map (struct spec_kv **out, size_t *n_out, const json_t *parent, const char *key,
           const char *where, size_t maxn, size_t maxval, bool no_control,
           const char *(*key_problem) (const char *), bvm_error_t *err)
{
  json_t *obj = NULL, *v;
  char path[512], item[1024], shown[JOB__SHOW_SIZE];
  struct spec_kv *kv;
  const char *k, *why;
  size_t n = 0;
  int ret;

  ret = jsonx_get_typed (&obj, parent, key, JSON_OBJECT, false, where, err);
  if (ret < 0 || obj == NULL)
    return wrapped (ret, err);
  jsonx_path (path, sizeof path, where, key);
  if (json_object_size (obj) > maxn)
    return bad (err, path, "has more than %zu entries", maxn);
  kv = calloc (json_object_size (obj) + 1, sizeof *kv);
  if (kv == NULL)
    return nomem (err);
  json_object_foreach ((json_t *) obj, k, v)
    {
      snprintf (item, sizeof item, "%s.%s", path, job__show (shown, sizeof shown, k));
      if ((why = key_problem (k)) != NULL)
        ret = bad (err, item, "%s", why);
      else if (!json_is_string (v))
        ret = bad (err, item, "must be a string");
      else if (json_string_length (v) > maxval)
        ret = bad (err, item, "is longer than %zu bytes", maxval);
      else if (no_control && has_control (json_string_value (v)))
        ret = bad (err, item, "must not contain control characters");
      if (ret == 0
          && ((kv[n].key = strdup (k)) == NULL
              || (kv[n].value = strdup (json_string_value (v))) == NULL))
        ret = nomem (err);
      if (kv[n].key != NULL)
        n++;
      if (ret < 0)
        {
          kv_free (kv, n);
          return ret;
        }
    }
  *out = kv;
  *n_out = n;
  return 0;
}

/* An array of strings, copied. */
static int
parse_strv (char ***out, size_t *n_out, const json_t *parent, const char *key, const char *where,
            size_t maxn, size_t maxlen, bvm_error_t *err)
{
  cleanup_free const char **vec = NULL;
  size_t n = 0;
  int ret;

  ret = jsonx_get_str_array (&vec, &n, parent, key, false, maxn, maxlen, where, err);
  if (ret < 0 || vec == NULL)
    return wrapped (ret, err);
  if ((*out = strv_dup (vec, n)) == NULL)
    return nomem (err);
  *n_out = n;
  return 0;
}

static int
parse_steps (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  static const char *const keys[] = { "name", "run", "timeout", NULL };
  json_t *arr = NULL, *v;
  char where[64];
  size_t i;
  int ret;

  ret = jsonx_get_typed (&arr, doc, "steps", JSON_ARRAY, true, "", err);
  if (ret < 0)
    return wrapped (ret, err);
  if (json_array_size (arr) == 0)
    return bad (err, "steps", "must have at least one step");
  if (json_array_size (arr) > SPEC_MAX_STEPS)
    return bad (err, "steps", "has more than %d steps", SPEC_MAX_STEPS);
  s->steps = calloc (json_array_size (arr), sizeof *s->steps);
  if (s->steps == NULL)
    return nomem (err);
  json_array_foreach (arr, i, v)
    {
      struct spec_step *st = &s->steps[i];
      const char *name = NULL, *run = NULL;
      uint64_t timeout = 0;
      char field[96];

      snprintf (where, sizeof where, "steps[%zu]", i);
      if (json_is_string (v))
        {
          run = json_string_value (v);
          if (json_string_length (v) > SPEC_STEP_RUN_MAX)
            return bad (err, where, "is longer than %d bytes", SPEC_STEP_RUN_MAX);
          snprintf (field, sizeof field, "%s", where);
        }
      else if (json_is_object (v))
        {
          ret = jsonx_check_keys (v, keys, where, err);
          if (ret == 0)
            ret = jsonx_get_str (&name, v, "name", false, CAP_FIELD_READ, where, err);
          if (ret == 0)
            ret = jsonx_get_str (&run, v, "run", true, SPEC_STEP_RUN_MAX, where, err);
          if (ret == 0)
            ret = jsonx_get_u64 (&timeout, v, "timeout", false, 1, SPEC_STEP_TIMEOUT_MAX, where,
                                 err);
          if (ret < 0)
            return wrapped (ret, err);
          snprintf (field, sizeof field, "%s.run", where);
        }
      else
        return bad (err, where, "must be a string or an object with `run`");

      if (strspn (run, " \t\r\n") == strlen (run))
        return bad (err, field, "must not be empty");
      if (name != NULL)
        {
          snprintf (field, sizeof field, "%s.name", where);
          if (strlen (name) == 0 || strlen (name) > SPEC_STEP_NAME_MAX || has_control (name))
            return bad_value (err, field, "must be 1 to 64 bytes without control characters",
                              name);
        }
      if (name != NULL)
        ret = dup_to (&st->name, name, err);
      else
        ret = asprintf (&st->name, "step-%zu", i + 1) < 0 ? (st->name = NULL, nomem (err)) : 0;
      if (ret == 0)
        ret = dup_to (&st->run, run, err);
      s->n_steps = i + 1;
      if (ret < 0)
        return ret;
      st->timeout = timeout;
    }
  return 0;
}

static int
parse_resources (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  static const char *const keys[] = { "vcpus", "memory_mib", "disk_mib", "timeout", NULL };
  json_t *r = NULL;
  int ret;

  ret = jsonx_get_typed (&r, doc, "resources", JSON_OBJECT, false, "", err);
  if (ret < 0 || r == NULL)
    return wrapped (ret, err);
  ret = jsonx_check_keys (r, keys, "resources", err);
  if (ret == 0)
    ret = jsonx_get_u64 (&s->resources.vcpus, r, "vcpus", false, 1, SPEC_VCPUS_MAX, "resources",
                         err);
  if (ret == 0)
    ret = jsonx_get_u64 (&s->resources.memory_mib, r, "memory_mib", false, SPEC_MEMORY_MIB_MIN,
                         SPEC_MEMORY_MIB_MAX, "resources", err);
  if (ret == 0)
    ret = jsonx_get_u64 (&s->resources.disk_mib, r, "disk_mib", false, SPEC_DISK_MIB_MIN,
                         SPEC_DISK_MIB_MAX, "resources", err);
  if (ret == 0)
    ret = jsonx_get_u64 (&s->resources.timeout, r, "timeout", false, 1, SPEC_TIMEOUT_MAX,
                         "resources", err);
  return wrapped (ret, err);
}

/* "repo:tag" or "repo@sha256:<hex>", the repository in the runner's own
 * registry: a host part would let a spec pull from anywhere. */
static int
parse_base (struct spec_image *im, const char *base, bvm_error_t *err)
{
  const char *field = "image.base";
  cleanup_free char *repo = NULL;
  const char *at, *colon, *slash;

  if (strlen (base) > SPEC_REFERENCE_MAX)
    return bad (err, field, "is longer than %d bytes", SPEC_REFERENCE_MAX);
  at = strchr (base, '@');
  slash = strrchr (base, '/');
  colon = strrchr (base, ':');
  if (at != NULL)
    {
      if (digest_problem (at + 1) != NULL)
        return bad_value (err, field, "must end in `@sha256:` and 64 lowercase hex digits", base);
      repo = strndup (base, (size_t) (at - base));
      if (repo == NULL || dup_to (&im->base_digest, at + 1, err) < 0)
        return nomem (err);
    }
  else if (colon != NULL && (slash == NULL || colon > slash))
    {
      if (oci_tag_problem (colon + 1) != NULL)
        return bad_value (err, field, "has an invalid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})",
                          base);
      repo = strndup (base, (size_t) (colon - base));
      if (repo == NULL || dup_to (&im->base_tag, colon + 1, err) < 0)
        return nomem (err);
    }
  else
    return bad_value (err, field, "must have a `:tag` or an `@sha256:` digest", base);

  slash = strchr (repo, '/');
  if (strchr (repo, ':') != NULL || strcmp (repo, "localhost") == 0
      || (slash != NULL
          && (memchr (repo, '.', (size_t) (slash - repo)) != NULL
              || strncmp (repo, "localhost/", 10) == 0)))
    return bad_value (err, field,
                      "must name a repository in the runner's registry, without a host", base);
  if (oci_repository_problem (repo) != NULL)
    return bad_value (err, field,
                      "has an invalid repository name (lowercase components such as "
                      "`base/busybox`)",
                      base);
  im->base_repository = steal_pointer (&repo);
  return dup_to (&im->base, base, err);
}

static int
parse_port (char **out, const char *p, const char *field, bvm_error_t *err)
{
  const char *slash = strchr (p, '/');
  const char *proto = slash ? slash + 1 : "tcp";
  size_t n = slash ? (size_t) (slash - p) : strlen (p);
  char num[8];
  uint32_t port;

  if (n == 0 || n > 5 || p[0] == '0')
    return bad_value (err, field, "must be `PORT` or `PORT/tcp|udp|sctp` with PORT 1..65535", p);
  memcpy (num, p, n);
  num[n] = '\0';
  if (parse_u32 (num, &port) < 0 || port < 1 || port > 65535)
    return bad_value (err, field, "must be `PORT` or `PORT/tcp|udp|sctp` with PORT 1..65535", p);
  if (strcmp (proto, "tcp") != 0 && strcmp (proto, "udp") != 0 && strcmp (proto, "sctp") != 0)
    return bad_value (err, field, "has a protocol other than `tcp`, `udp` or `sctp`", p);
  if (asprintf (out, "%u/%s", port, proto) < 0)
    {
      *out = NULL;
      return nomem (err);
    }
  return 0;
}

static const char *
user_part_problem (const char *s, size_t n)
{
  static const char why[]
      = "must be a name ([A-Za-z0-9_][A-Za-z0-9_.-]{0,31}) or a numeric id below 4294967295";
  if (n == 0 || n > 32 || !(is_alnum (s[0]) || s[0] == '_'))
    return why;
  for (size_t i = 0; i < n; i++)
    if (!(is_alnum (s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
      return why;
  /* all digits: a numeric id that must fit */
  if (strspn (s, "0123456789") >= n)
    {
      char num[40];
      uint32_t v;
      memcpy (num, s, n);
      num[n] = '\0';
      if (parse_u32 (num, &v) < 0 || v == UINT32_MAX)
        return why;
    }
  return NULL;
}

static int
parse_image (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  static const char *const keys[] = { "base",    "from", "to",    "entrypoint", "cmd", "env",
                                      "workdir", "user", "ports", "labels",     NULL };
  json_t *o = NULL, *basev;
  struct spec_image *im;
  const char *from = NULL, *to = "/app", *workdir = NULL, *user = NULL, *why;
  cleanup_free const char **ports = NULL;
  size_t n_ports = 0;
  int ret;

  ret = jsonx_get_typed (&o, doc, "image", JSON_OBJECT, false, "", err);
  if (ret < 0 || o == NULL)
    return wrapped (ret, err);
  im = s->image = calloc (1, sizeof *im);
  if (im == NULL)
    return nomem (err);
  ret = jsonx_check_keys (o, keys, "image", err);
  if (ret == 0)
    {
      const struct jsonx_str_field fields[] = {
        { &from, "from", true, CAP_TEXT_READ },
        { &to, "to", false, CAP_TEXT_READ },
        { &workdir, "workdir", false, CAP_TEXT_READ },
        { &user, "user", false, CAP_FIELD_READ },
      };
      ret = jsonx_get_strs (o, fields, ARRAY_SIZE (fields), "image", err);
    }
  if (ret < 0)
    return wrapped (ret, err);

  basev = json_object_get (o, "base");
  if (basev != NULL && !json_is_null (basev))
    {
      if (!json_is_string (basev))
        return bad (err, "image.base", "must be a string or null");
      ret = parse_base (im, json_string_value (basev), err);
      if (ret < 0)
        return ret;
    }

  if ((why = rel_path_problem (from, false)) != NULL)
    return bad_value (err, "image.from", why, from);
  ret = dup_to (&im->from, from, err);
  if (ret < 0)
    return ret;
  {
    /* "dist/" and "dist" are the same directory; keep one spelling */
    size_t n = strlen (im->from);
    if (n > 1 && im->from[n - 1] == '/')
      im->from[n - 1] = '\0';
    if (strcmp (im->from, "./") == 0)
      im->from[1] = '\0';
  }

  if ((why = abs_path_problem (to)) != NULL)
    return bad_value (err, "image.to", why, to);
  /* the layer would be hidden by (or write into) the kernel's file systems */
  if (path_is_under (to, "/proc") || path_is_under (to, "/sys") || path_is_under (to, "/dev"))
    return bad_value (err, "image.to", "must not be under /proc, /sys or /dev", to);
  ret = dup_to (&im->to, to, err);
  if (ret < 0)
    return ret;

  if (workdir != NULL)
    {
      if ((why = abs_path_problem (workdir)) != NULL)
        return bad_value (err, "image.workdir", why, workdir);
      if ((ret = dup_to (&im->workdir, workdir, err)) < 0)
        return ret;
    }
  if (user != NULL)
    {
      const char *colon = strchr (user, ':');
      size_t n1 = colon ? (size_t) (colon - user) : strlen (user);
      if (user_part_problem (user, n1) != NULL
          || (colon != NULL && user_part_problem (colon + 1, strlen (colon + 1)) != NULL))
        return bad_value (err, "image.user",
                          "must be `user` or `user:group`, names or numeric ids", user);
      if ((ret = dup_to (&im->user, user, err)) < 0)
        return ret;
    }

  ret = parse_strv (&im->entrypoint, &im->n_entrypoint, o, "entrypoint", "image", SPEC_MAX_ARGS,
                    SPEC_ARG_MAX, err);
  if (ret == 0)
    ret = parse_strv (&im->cmd, &im->n_cmd, o, "cmd", "image", SPEC_MAX_ARGS, SPEC_ARG_MAX, err);
  if (ret == 0)
    ret = parse_map (&im->env, &im->n_env, o, "env", "image", SPEC_MAX_ENV, SPEC_ENV_VALUE_MAX,
                     false, image_env_key_problem, err);
  if (ret == 0)
    ret = parse_map (&im->labels, &im->n_labels, o, "labels", "image", SPEC_MAX_LABELS,
                     SPEC_LABEL_VALUE_MAX, true, label_key_problem, err);
  if (ret < 0)
    return ret;

  ret = jsonx_get_str_array (&ports, &n_ports, o, "ports", false, SPEC_MAX_PORTS, 16, "image",
                             err);
  if (ret < 0)
    return wrapped (ret, err);
  if (ports != NULL)
    {
      im->ports = calloc (n_ports + 1, sizeof *im->ports);
      if (im->ports == NULL)
        return nomem (err);
      for (size_t i = 0; i < n_ports; i++)
        {
          char field[64];
          snprintf (field, sizeof field, "image.ports[%zu]", i);
          ret = parse_port (&im->ports[i], ports[i], field, err);
          if (ret < 0)
            return ret;
          im->n_ports = i + 1;
          for (size_t k = 0; k < i; k++)
            if (strcmp (im->ports[k], im->ports[i]) == 0)
              return bad_value (err, field, "repeats a port", ports[i]);
        }
    }
  return 0;
}

static int
parse_artifacts (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  const char *why;
  int ret;

  ret = parse_strv (&s->artifacts, &s->n_artifacts, doc, "artifacts", "", SPEC_MAX_ARTIFACTS,
                    CAP_TEXT_READ, err);
  if (ret < 0)
    return ret;
  for (size_t i = 0; i < s->n_artifacts; i++)
    if ((why = rel_path_problem (s->artifacts[i], true)) != NULL)
      {
        char field[64];
        snprintf (field, sizeof field, "artifacts[%zu]", i);
        return bad_value (err, field, why, s->artifacts[i]);
      }
  return 0;
}

/* The rules' grammar is egress.c's; the role minted from them is capped
 * by the permission boundary, so asking is all a spec can do. */
static int
parse_egress (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  const char *why;
  int ret;

  ret = parse_strv (&s->egress, &s->n_egress, doc, "egress", "", EGRESS_RULES_MAX, EGRESS_RULE_MAX,
                    err);
  if (ret == 0)
    ret = wrapped (jsonx_get_bool (&s->fail_on_deny, doc, "fail_on_deny", false, "", err), err);
  if (ret < 0)
    return ret;
  for (size_t i = 0; i < s->n_egress; i++)
    if ((why = egress_rule_problem (s->egress[i])) != NULL)
      {
        char field[64];
        snprintf (field, sizeof field, "egress[%zu]", i);
        return bad_value (err, field, why, s->egress[i]);
      }
  return 0;
}

static int
parse_secrets (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  static const char *const keys[] = { "name", "env", NULL };
  json_t *arr = NULL, *v;
  size_t i;
  int ret;

  ret = jsonx_get_typed (&arr, doc, "secrets", JSON_ARRAY, false, "", err);
  if (ret < 0 || arr == NULL)
    return wrapped (ret, err);
  if (json_array_size (arr) > SPEC_MAX_SECRETS)
    return bad (err, "secrets", "has more than %d items", SPEC_MAX_SECRETS);
  s->secrets = calloc (json_array_size (arr) + 1, sizeof *s->secrets);
  if (s->secrets == NULL)
    return nomem (err);
  json_array_foreach (arr, i, v)
    {
      const char *name = NULL, *env = NULL, *why;
      char where[64], field[96];

      snprintf (where, sizeof where, "secrets[%zu]", i);
      snprintf (field, sizeof field, "%s", where);
      if (json_is_string (v))
        name = json_string_value (v);
      else if (json_is_object (v))
        {
          ret = jsonx_check_keys (v, keys, where, err);
          if (ret == 0)
            ret = jsonx_get_str (&name, v, "name", true, CAP_FIELD_READ, where, err);
          if (ret == 0)
            ret = jsonx_get_str (&env, v, "env", false, CAP_FIELD_READ, where, err);
          if (ret < 0)
            return wrapped (ret, err);
          snprintf (field, sizeof field, "%s.name", where);
        }
      else
        return bad (err, where, "must be a string or an object with `name`");
      if (secrets_name_problem (name) != NULL)
        return bad_value (err, field, "must match ^[A-Za-z0-9_.-]{1,64}$ and not start with `.`",
                          name);
      for (size_t k = 0; k < i; k++)
        if (strcmp (s->secrets[k].name, name) == 0)
          return bad_value (err, field, "repeats a secret", name);
      if (env != NULL)
        {
          snprintf (field, sizeof field, "%s.env", where);
          if ((why = build_env_key_problem (env)) != NULL)
            return bad_value (err, field, why, env);
          for (size_t k = 0; k < s->n_env; k++)
            if (strcmp (s->env[k].key, env) == 0)
              return bad_value (err, field, "is also set in `env`", env);
          for (size_t k = 0; k < i; k++)
            if (s->secrets[k].env != NULL && strcmp (s->secrets[k].env, env) == 0)
              return bad_value (err, field, "is used by another secret", env);
        }
      ret = dup_to (&s->secrets[i].name, name, err);
      s->n_secrets = i + 1;
      if (ret == 0 && env != NULL)
        ret = dup_to (&s->secrets[i].env, env, err);
      if (ret < 0)
        return ret;
    }
  return 0;
}

/* A build arg's name: passed to buildah by name from the agent's
 * environment (its value never in an argv), so it must be a variable name
 * that is not one of the variables the agent sets for buildah itself. */
static const char *
build_arg_key_problem (const char *k)
{
  static const char *const reserved[] = { "PATH",       "HOME",        "TMPDIR",   "USER",
                                          "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                                          "FTP_PROXY",  NULL };
  if (spec_env_name_problem (k) != NULL)
    return "is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$, at most 128 bytes)";
  for (size_t i = 0; reserved[i]; i++)
    if (strcasecmp (k, reserved[i]) == 0)
      return "is reserved (PATH, HOME, TMPDIR, USER and the proxy variables are set by the build "
             "agent)";
  if (strncmp (k, "BUILDVM_", 8) == 0)
    return "is reserved (BUILDVM_* are set by the build agent)";
  return NULL;
}

/* A Dockerfile stage name as --target names it (BuildKit's grammar, any case). */
static const char *
target_problem (const char *t)
{
  size_t n = strlen (t);
  if (n == 0 || n > 255 || !((t[0] >= 'a' && t[0] <= 'z') || (t[0] >= 'A' && t[0] <= 'Z')))
    return "must be a stage name (^[a-z][a-z0-9._-]*$, at most 255 bytes)";
  for (size_t i = 1; i < n; i++)
    if (!(is_alnum (t[i]) || t[i] == '.' || t[i] == '_' || t[i] == '-'))
      return "must be a stage name (^[a-z][a-z0-9._-]*$, at most 255 bytes)";
  return NULL;
}

static void
dockerfile_spec_free (struct spec_dockerfile *d)
{
  if (d == NULL)
    return;
  free (d->path);
  free (d->context);
  free (d->target);
  kv_free (d->args, d->n_args);
  free (d);
}

/* "dist/" and "./" spelled once: no trailing slash, "." for the tree */
static void
dir_normalize (char *d)
{
  size_t n = strlen (d);
  if (n > 1 && d[n - 1] == '/')
    d[n - 1] = '\0';
  if (strcmp (d, "./") == 0)
    d[1] = '\0';
}

/* A Dockerfile spec's own defaults: the image it describes, and the
 * destination the plan names for it (spec_image with no base, from, to). */
static int
dockerfile_defaults (struct build_spec *s, bvm_error_t *err)
{
  if (s->profile == NULL && dup_to (&s->profile, SPEC_DOCKERFILE_PROFILE, err) < 0)
    return -1;
  if (s->dockerfile->path == NULL && dup_to (&s->dockerfile->path, "Dockerfile", err) < 0)
    return -1;
  if (s->dockerfile->context == NULL && dup_to (&s->dockerfile->context, ".", err) < 0)
    return -1;
  if (s->image == NULL && (s->image = calloc (1, sizeof *s->image)) == NULL)
    return nomem (err);
  return 0;
}

/* [] or {}: said, but nothing */
static bool
empty_value (const json_t *v)
{
  return (json_is_array (v) && json_array_size (v) == 0)
         || (json_is_object (v) && json_object_size (v) == 0);
}

/* `dockerfile`: true (the defaults), false or null (absent), or
 * {path, context, target, args}. With it, the Dockerfile is the build and
 * the image: `steps`, `image`, `env` and `artifacts` have nothing to say. */
static int
parse_dockerfile (struct build_spec *s, const json_t *doc, bvm_error_t *err)
{
  static const char *const keys[] = { "path", "context", "target", "args", NULL };
  static const char *const others[] = { "steps", "image", "env", "artifacts", NULL };
  json_t *v = json_object_get (doc, "dockerfile"), *t;
  const char *path = NULL, *context = NULL, *why;
  struct spec_dockerfile *d;
  int ret = 0;

  if (v == NULL || json_is_null (v) || json_is_false (v))
    return 0;
  if (!json_is_true (v) && !json_is_object (v))
    return bad (err, "dockerfile", "must be true or an object");
  for (size_t i = 0; others[i]; i++)
    if (json_object_get (doc, others[i]) != NULL
        && !empty_value (json_object_get (doc, others[i])))
      return bad (err, others[i],
                  "must be absent in a Dockerfile build: the Dockerfile describes the build "
                  "and the image");
  d = s->dockerfile = calloc (1, sizeof *d);
  if (d == NULL)
    return nomem (err);
  if (json_is_object (v))
    {
      const struct jsonx_str_field fields[] = {
        { &path, "path", false, SPEC_PATH_MAX },
        { &context, "context", false, SPEC_PATH_MAX },
      };
      ret = jsonx_check_keys (v, keys, "dockerfile", err);
      if (ret == 0)
        ret = jsonx_get_strs (v, fields, ARRAY_SIZE (fields), "dockerfile", err);
      if (ret < 0)
        return wrapped (ret, err);
      if (path != NULL)
        {
          size_t n = strlen (path);
          if ((why = rel_path_problem (path, false)) != NULL)
            return bad_value (err, "dockerfile.path", why, path);
          if (strcmp (path, ".") == 0 || strcmp (path, "./") == 0 || path[n - 1] == '/')
            return bad_value (err, "dockerfile.path", "must name a file", path);
          if ((ret = dup_to (&d->path, path, err)) < 0)
            return ret;
        }
      if (context != NULL)
        {
          if ((why = rel_path_problem (context, false)) != NULL)
            return bad_value (err, "dockerfile.context", why, context);
          if ((ret = dup_to (&d->context, context, err)) < 0)
            return ret;
          dir_normalize (d->context);
        }
      t = json_object_get (v, "target");
      if (t != NULL && !json_is_null (t))
        {
          if (!json_is_string (t))
            return bad (err, "dockerfile.target", "must be a string or null");
          if ((why = target_problem (json_string_value (t))) != NULL)
            return bad_value (err, "dockerfile.target", why, json_string_value (t));
          if ((ret = dup_to (&d->target, json_string_value (t), err)) < 0)
            return ret;
        }
      ret = parse_map (&d->args, &d->n_args, v, "args", "dockerfile", SPEC_MAX_ENV,
                       SPEC_ENV_VALUE_MAX, true, build_arg_key_problem, err);
      if (ret < 0)
        return ret;
    }
  return dockerfile_defaults (s, err);
}

int
spec_dockerfile_detected (struct build_spec **out, bvm_error_t *err)
{
  cleanup_spec struct build_spec *s = calloc (1, sizeof *s);

  if (s == NULL || (s->dockerfile = calloc (1, sizeof *s->dockerfile)) == NULL)
    return nomem (err);
  s->dockerfile->detected = true;
  if (dockerfile_defaults (s, err) < 0)
    return -1;
  *out = steal_pointer (&s);
  return 0;
}

/* --- the document ---------------------------------------------------------------- */

void
spec_free (struct build_spec *s)
{
  if (s == NULL)
    return;
  free (s->profile);
  for (size_t i = 0; i < s->n_steps; i++)
    {
      free (s->steps[i].name);
      free (s->steps[i].run);
    }
  free (s->steps);
  kv_free (s->env, s->n_env);
  if (s->image != NULL)
    {
      struct spec_image *im = s->image;
      free (im->base);
      free (im->base_repository);
      free (im->base_tag);
      free (im->base_digest);
      free (im->from);
      free (im->to);
      strv_free (im->entrypoint);
      strv_free (im->cmd);
      kv_free (im->env, im->n_env);
      free (im->workdir);
      free (im->user);
      strv_free (im->ports);
      kv_free (im->labels, im->n_labels);
      free (im);
    }
  strv_free (s->artifacts);
  strv_free (s->egress);
  for (size_t i = 0; i < s->n_secrets; i++)
    {
      free (s->secrets[i].name);
      free (s->secrets[i].env);
    }
  free (s->secrets);
  dockerfile_spec_free (s->dockerfile);
  free (s);
}

/* `dockerfile` given and not false/null (parse_dockerfile checks its type):
 * `profile` has a default then */
static bool
spec__wants_dockerfile (const json_t *doc)
{
  const json_t *v = json_object_get (doc, "dockerfile");
  return v != NULL && !json_is_null (v) && !json_is_false (v);
}

int
spec_parse (struct build_spec **out, const char *json, size_t len, bvm_error_t *err)
{
  static const char *const keys[] = { "version",   "profile",      "steps",      "env",
                                      "resources", "image",        "artifacts",  "secrets",
                                      "egress",    "fail_on_deny", "dockerfile", NULL };
  cleanup_json json_t *doc = NULL;
  cleanup_spec struct build_spec *s = NULL;
  const char *profile = NULL;
  uint64_t version = SPEC_VERSION;
  bool df;
  int ret;

  ret = jsonx_parse_object (&doc, json, len, SPEC_MAX_BYTES, WHAT, NULL, err);
  if (ret < 0)
    return ret;
  df = spec__wants_dockerfile (doc);
  ret = jsonx_check_keys (doc, keys, "", err);
  if (ret == 0)
    ret = jsonx_get_u64 (&version, doc, "version", false, SPEC_VERSION, SPEC_VERSION, "", err);
  if (ret == 0)
    ret = jsonx_get_str (&profile, doc, "profile", !df, CAP_FIELD_READ, "", err);
  if (ret < 0)
    return wrapped (ret, err);
  if (profile != NULL && image_profile_problem (profile) != NULL)
    return bad_value (err, "profile", "must match ^[a-z0-9][a-z0-9-]{0,31}$", profile);

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return nomem (err);
  ret = profile != NULL ? dup_to (&s->profile, profile, err) : 0;
  /* a Dockerfile build: steps, env, image and artifacts must be absent,
   * which parse_dockerfile says, first */
  if (ret == 0 && df)
    ret = parse_dockerfile (s, doc, err);
  if (ret == 0 && !df)
    ret = parse_steps (s, doc, err);
  if (ret == 0 && !df)
    ret = parse_map (&s->env, &s->n_env, doc, "env", "", SPEC_MAX_ENV, SPEC_ENV_VALUE_MAX, false,
                     build_env_key_problem, err);
  if (ret == 0)
    ret = parse_resources (s, doc, err);
  if (ret == 0 && !df)
    ret = parse_image (s, doc, err);
  if (ret == 0 && !df)
    ret = parse_artifacts (s, doc, err);
  if (ret == 0)
    ret = parse_secrets (s, doc, err);
  if (ret == 0)
    ret = parse_egress (s, doc, err);
  if (ret < 0)
    return ret;
  *out = steal_pointer (&s);
  return 0;
}

/* --- serialization ----------------------------------------------------------------- */

static json_t *
strv_json (char *const *v, size_t n)
{
  json_t *a = json_array ();
  for (size_t i = 0; a != NULL && i < n; i++)
    if (json_array_append_new (a, json_string (v[i])) < 0)
      {
        json_decref (a);
        return NULL;
      }
  return a;
}

static json_t *
kv_json (const struct spec_kv *kv, size_t n)
{
  json_t *o = json_object ();
  for (size_t i = 0; o != NULL && i < n; i++)
    if (json_object_set_new (o, kv[i].key, json_string (kv[i].value)) < 0)
      {
        json_decref (o);
        return NULL;
      }
  return o;
}

/* json_object_set_new fails on a NULL value, so a failed allocation below
 * surfaces as a failed set. */
json_t *
spec_to_json (const struct build_spec *s)
{
  cleanup_json json_t *o = json_object ();
  json_t *steps, *secrets;
  int r = 0;

  if (o == NULL)
    return NULL;
  r |= json_object_set_new (o, "version", json_integer (SPEC_VERSION));
  r |= json_object_set_new (o, "profile", json_string (s->profile));
  steps = json_array ();
  r |= json_object_set_new (o, "steps", steps);
  for (size_t i = 0; r == 0 && i < s->n_steps; i++)
    {
      json_t *st = json_object ();
      r |= json_array_append_new (steps, st);
      if (r == 0)
        {
          r |= json_object_set_new (st, "name", json_string (s->steps[i].name));
          r |= json_object_set_new (st, "run", json_string (s->steps[i].run));
          if (s->steps[i].timeout > 0)
            r |= json_object_set_new (st, "timeout",
                                      json_integer ((json_int_t) s->steps[i].timeout));
        }
    }
  r |= json_object_set_new (o, "env", kv_json (s->env, s->n_env));
  {
    json_t *res = json_object ();
    r |= json_object_set_new (o, "resources", res);
    if (r == 0 && s->resources.vcpus)
      r |= json_object_set_new (res, "vcpus", json_integer ((json_int_t) s->resources.vcpus));
    if (r == 0 && s->resources.memory_mib)
      r |= json_object_set_new (res, "memory_mib",
                                json_integer ((json_int_t) s->resources.memory_mib));
    if (r == 0 && s->resources.disk_mib)
      r |= json_object_set_new (res, "disk_mib",
                                json_integer ((json_int_t) s->resources.disk_mib));
    if (r == 0 && s->resources.timeout)
      r |= json_object_set_new (res, "timeout", json_integer ((json_int_t) s->resources.timeout));
  }
  if (r == 0 && s->image != NULL)
    {
      const struct spec_image *im = s->image;
      json_t *img = json_object ();
      r |= json_object_set_new (o, "image", img);
      if (r == 0)
        {
          r |= json_object_set_new (img, "base", im->base ? json_string (im->base) : json_null ());
          r |= json_object_set_new (img, "from", im->from ? json_string (im->from) : json_null ());
          r |= json_object_set_new (img, "to", im->to ? json_string (im->to) : json_null ());
          if (im->entrypoint)
            r |= json_object_set_new (img, "entrypoint",
                                      strv_json (im->entrypoint, im->n_entrypoint));
          if (im->cmd)
            r |= json_object_set_new (img, "cmd", strv_json (im->cmd, im->n_cmd));
          r |= json_object_set_new (img, "env", kv_json (im->env, im->n_env));
          if (im->workdir)
            r |= json_object_set_new (img, "workdir", json_string (im->workdir));
          if (im->user)
            r |= json_object_set_new (img, "user", json_string (im->user));
          r |= json_object_set_new (img, "ports", strv_json (im->ports, im->n_ports));
          r |= json_object_set_new (img, "labels", kv_json (im->labels, im->n_labels));
        }
    }
  r |= json_object_set_new (o, "artifacts", strv_json (s->artifacts, s->n_artifacts));
  r |= json_object_set_new (o, "egress", strv_json (s->egress, s->n_egress));
  r |= json_object_set_new (o, "fail_on_deny", json_boolean (s->fail_on_deny));
  secrets = json_array ();
  r |= json_object_set_new (o, "secrets", secrets);
  for (size_t i = 0; r == 0 && i < s->n_secrets; i++)
    {
      json_t *sec = json_object ();
      r |= json_array_append_new (secrets, sec);
      if (r == 0)
        {
          r |= json_object_set_new (sec, "name", json_string (s->secrets[i].name));
          if (s->secrets[i].env)
            r |= json_object_set_new (sec, "env", json_string (s->secrets[i].env));
        }
    }
  if (r == 0 && s->dockerfile != NULL)
    {
      const struct spec_dockerfile *d = s->dockerfile;
      r |= json_object_set_new (o, "dockerfile",
                                json_pack ("{s:s, s:s, s:o, s:o, s:b}", "path", d->path, "context",
                                           d->context, "target",
                                           d->target ? json_string (d->target) : json_null (),
                                           "args", kv_json (d->args, d->n_args), "detected",
                                           d->detected));
    }
  if (r != 0)
    return NULL;
  return steal_pointer (&o);
}
