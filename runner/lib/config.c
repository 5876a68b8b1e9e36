/* config.c - the runner configuration `runner.json`, see config.h and docs/schemas.md */
/* Over 1,500 lines: one loader and one serializer per section of runner.json,
 * each checking through the module that owns the grammar. Resource
 * resolution leaves for the job plan (issue 12, item 2). */
#include "config.h"
#include "dockerfile.h"
#include "image.h"
#include "buf.h"
#include "caps.h"
#include "fs.h"
#include "jsonx.h"
#include "oci.h"
#include "queue.h"
#include "store.h"
#include "store_s3.h"
#include "util.h"
#include "webhook.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_REGISTRY_URL "http://127.0.0.1:5000"
#define DEFAULT_REPOSITORY "apps/{app}"
#define DEFAULT_TAG "{commit}"
#define DEFAULT_PROFILE "minimal"
#define DEFAULT_QEMU "qemu-system-x86_64"
#define DEFAULT_BOOT_TIMEOUT 60
#define BOOT_TIMEOUT_MAX 600

/* --- errors ------------------------------------------------------------------- */

static int bad (bvm_error_t *err, const char *what, const char *field, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

/* "<what>: field `registry.url` <why>" where what is "`/path/runner.json`"
 * or "built-in defaults" */
static int
bad (bvm_error_t *err, const char *what, const char *field, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, BVM_E_INVALID, 0, "%s: field `%s` %s", what, field, msg);
}

static int
bad_value (bvm_error_t *err, const char *what, const char *field, const char *why,
           const char *value)
{
  char shown[JOB__SHOW_SIZE];
  return bad (err, what, field, "%s, got `%s`", why, job__show (shown, sizeof shown, value));
}

static int
nomem (bvm_error_t *err)
{
  return bvm_error (err, ENOMEM, "loading the runner config");
}

/* dir/name without doubling the slash of "/" or of "/home/u/" */
static char *
path_join (const char *dir, const char *name)
{
  size_t n = strlen (dir);
  char *r = NULL;

  while (n > 0 && dir[n - 1] == '/')
    n--;
  if (asprintf (&r, "%.*s/%s", (int) n, dir, name) < 0)
    return NULL;
  return r;
}

/* An absolute path without control characters; trailing slashes dropped so
 * that joining is predictable. NULL if fine, else the reason. */
static const char *
abs_path_problem (const char *s)
{
  if (s[0] != '/')
    return "must be an absolute path";
  if (strlen (s) > CONFIG_PATH_MAX)
    return "is longer than 1024 bytes";
  if (has_control (s))
    return "must not contain control characters";
  return NULL;
}

static char *
path_dup_trimmed (const char *s)
{
  char *r = strdup (s);
  if (r != NULL)
    {
      size_t n = strlen (r);
      while (n > 1 && r[n - 1] == '/')
        r[--n] = '\0';
    }
  return r;
}

/* --- home ---------------------------------------------------------------------- */

int
config_default_home (char **out, bvm_error_t *err)
{
  const char *env = getenv ("BUILDVM_HOME");
  const char *xdg, *home;

  if (env != NULL && *env != '\0')
    {
      if (abs_path_problem (env) != NULL)
        {
          char shown[JOB__SHOW_SIZE];
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "environment variable `BUILDVM_HOME` %s, got `%s`",
                                 abs_path_problem (env), job__show (shown, sizeof shown, env));
        }
      *out = path_dup_trimmed (env);
    }
  else if (geteuid () == 0)
    *out = strdup ("/var/lib/buildvm");
  else if ((xdg = getenv ("XDG_STATE_HOME")) != NULL && xdg[0] == '/'
           && abs_path_problem (xdg) == NULL)
    /* the XDG spec says to ignore a relative value */
    *out = path_join (xdg, "buildvm");
  else
    {
      home = getenv ("HOME");
      if (home == NULL || home[0] != '/' || abs_path_problem (home) != NULL)
        {
          struct passwd *pw = getpwuid (geteuid ());
          home = pw ? pw->pw_dir : NULL;
        }
      if (home == NULL || home[0] != '/')
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "cannot find a home directory for buildvm: set `BUILDVM_HOME`");
      *out = path_join (home, ".local/state/buildvm");
    }
  if (*out == NULL)
    return nomem (err);
  return 0;
}

/* --- URLs --------------------------------------------------------------------- */

/* "http(s)://host[:port]" with at most a trailing "/": the registry API
 * lives at /v2/ of the root. */
static const char *
registry_url_problem (const char *s)
{
  const char *hp;
  size_t n;

  if (strlen (s) > CONFIG_URL_MAX)
    return "is longer than 1024 bytes";
  if (strncmp (s, "http://", 7) == 0)
    hp = s + 7;
  else if (strncmp (s, "https://", 8) == 0)
    hp = s + 8;
  else
    return "must start with `http://` or `https://`";
  n = strlen (hp);
  if (n > 0 && hp[n - 1] == '/')
    n--;
  if (memchr (hp, '/', n) != NULL || memchr (hp, '?', n) != NULL || memchr (hp, '#', n) != NULL)
    return "must be `scheme://host[:port]` without a path";
  if (memchr (hp, '@', n) != NULL)
    return "must not contain credentials: use `registry.credentials`";
  return hostport_problem (hp, n);
}

/* A program looked up in PATH: [A-Za-z0-9._+-]{1,64}, no `/`. */
static const char *
command_name_problem (const char *s)
{
  static const char why[]
      = "must be a program name ([A-Za-z0-9._+-]{1,64}, not starting with `-`)";
  size_t n = strlen (s);
  if (n == 0 || n > 64 || s[0] == '-')
    return why;
  for (size_t i = 0; i < n; i++)
    if (!(is_alnum (s[i]) || strchr ("._+-", s[i]) != NULL))
      return why;
  return NULL;
}

/* "spool:/abs/dir" or "redis://host[:port][/stream][?group=name]": the
 * grammar is the queue drivers' (queue_url_check); only the form is checked
 * here, the queue module connects. */
static const char *
queue_problem (const char *s, enum config_queue_kind *kind)
{
  *kind = strncmp (s, "redis://", 8) == 0 ? CONFIG_QUEUE_REDIS : CONFIG_QUEUE_SPOOL;
  return queue_url_check (s);
}

/* --- templates --------------------------------------------------------------------- */

enum
{
  T_APP,
  T_COMMIT,
  T_SHORT_COMMIT,
  T_REF_NAME,
  T_ID,
  T_COUNT
};

static const char *const placeholders[T_COUNT] = { "app", "commit", "short_commit", "ref_name",
                                                   "id" };

/* Expand `tmpl` with vals (indexed by T_*); *used gets a bit per placeholder.
 * Returns NULL on success, else why the template is malformed. */
static const char *
tmpl_expand (struct buf *out, const char *tmpl, const char *const vals[T_COUNT], unsigned *used)
{
  const char *p = tmpl;

  *used = 0;
  while (*p)
    {
      if (*p == '{')
        {
          const char *close = strchr (p, '}');
          size_t n;
          int k;
          if (close == NULL)
            return "has an unterminated `{`";
          n = (size_t) (close - p - 1);
          for (k = 0; k < T_COUNT; k++)
            if (strlen (placeholders[k]) == n && memcmp (placeholders[k], p + 1, n) == 0)
              break;
          if (k == T_COUNT)
            return "has an unknown placeholder (use {app}, {commit}, {short_commit}, "
                   "{ref_name}, {id})";
          *used |= 1u << k;
          if (buf_adds (out, vals[k]) < 0)
            return "expands to something too long";
          p = close + 1;
        }
      else if (*p == '}')
        return "has a `}` without `{`";
      else
        {
          if (buf_add (out, p, 1) < 0)
            return "expands to something too long";
          p++;
        }
    }
  return NULL;
}

/* {ref_name}: the ref without refs/heads/ or refs/tags/ (else without
 * refs/), every byte outside [A-Za-z0-9_.-] turned into `-`, a leading `.`
 * or `-` into `_`, at most 128 bytes. So "refs/heads/feature/x" gives
 * "feature-x", always a valid tag. Distinct refs may share a name; the
 * name is for humans and moving tags, {commit} identifies the build. */
static void
ref_name (char out[CONFIG_REF_NAME_MAX + 1], const char *ref)
{
  const char *s = ref;
  size_t i;

  if (strncmp (s, "refs/heads/", 11) == 0)
    s += 11;
  else if (strncmp (s, "refs/tags/", 10) == 0)
    s += 10;
  else if (strncmp (s, "refs/", 5) == 0)
    s += 5;
  for (i = 0; s[i] && i < CONFIG_REF_NAME_MAX; i++)
    out[i] = (is_alnum (s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-') ? s[i] : '-';
  out[i] = '\0';
  if (i == 0)
    {
      out[0] = '_';
      out[1] = '\0';
    }
  if (out[0] == '.' || out[0] == '-')
    out[0] = '_';
}

enum tmpl_kind
{
  TMPL_REPOSITORY,
  TMPL_TAG,
};

static const char *
tmpl_result_problem (const char *s, enum tmpl_kind kind)
{
  return kind == TMPL_REPOSITORY ? oci_repository_problem (s) : oci_tag_problem (s);
}

/* Sample values that every placeholder can take, including the longest and
 * the most awkward: if each sample row expands to a valid name, any valid
 * job does too. The one exception is an app id ending in `-`, which the app
 * grammar allows but a repository component does not; it is caught at
 * expansion time (config_expand_destination). */
#define X63 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define X128                                                                                      \
  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"                              \
  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
static const char *const samples[][T_COUNT] = {
  { "a", "0123456789abcdef0123456789abcdef01234567", "0123456789ab", "A", "A" },
  { "0", "ffffffffffffffffffffffffffffffffffffffff", "ffffffffffff", "_x", "0" },
  { "a-b", "0000000000000000000000000000000000000000", "000000000000", "a.-b", "a.b" },
  { "ab--cd", "0123456789abcdef0123456789abcdef01234567", "0123456789ab", "a-b_C", "a_b-C" },
  { "z9", "0123456789abcdef0123456789abcdef01234567", "0123456789ab", "v1.0.", "a." },
  { "a0", "0123456789abcdef0123456789abcdef01234567", "0123456789ab", "_", "a-" },
  { X63, "0123456789abcdef0123456789abcdef01234567", "0123456789ab", X128, X128 },
};

static int
tmpl_check (const char *tmpl, enum tmpl_kind kind, bool need_placeholder, const char *what,
            const char *field, bvm_error_t *err)
{
  const char *kname = kind == TMPL_REPOSITORY ? "repository" : "tag";
  const char *why;

  if (strlen (tmpl) == 0 || strlen (tmpl) > CONFIG_TEMPLATE_MAX)
    return bad_value (err, what, field, "must be 1 to 255 bytes", tmpl);
  for (size_t k = 0; k < ARRAY_SIZE (samples); k++)
    {
      cleanup_buf struct buf b = BUF_INIT (4096);
      unsigned used = 0;

      if ((why = tmpl_expand (&b, tmpl, samples[k], &used)) != NULL)
        return bad_value (err, what, field, why, tmpl);
      /* without {app} every app would push into one repository and could
       * overwrite the others' images */
      if (kind == TMPL_REPOSITORY && !(used & (1u << T_APP)))
        return bad_value (err, what, field, "must contain `{app}`", tmpl);
      /* a constant tag is overwritten by every deploy: that is what
       * extra_tags is for */
      if (need_placeholder && used == 0)
        return bad_value (err, what, field,
                          "must contain a placeholder such as `{commit}` (use "
                          "`registry.extra_tags` for constant tags)",
                          tmpl);
      if (tmpl_result_problem (buf_cstr (&b), kind) != NULL || b.len > 255)
        {
          char shown[JOB__SHOW_SIZE], ex[JOB__SHOW_SIZE];
          return bad (err, what, field,
                      "`%s` can expand to `%s`, which is not a valid %s name (see "
                      "docs/schemas.md for what each placeholder may contain)",
                      job__show (shown, sizeof shown, tmpl),
                      job__show (ex, sizeof ex, buf_cstr (&b)), kname);
        }
    }
  return 0;
}

static int
tmpl_apply (char **out, const char *tmpl, enum tmpl_kind kind, const char *field,
            const struct job_request *j, bvm_error_t *err)
{
  cleanup_buf struct buf b = BUF_INIT (4096);
  char short_commit[CONFIG_SHORT_COMMIT_LEN + 1], rn[CONFIG_REF_NAME_MAX + 1];
  const char *vals[T_COUNT];
  unsigned used = 0;
  const char *why;

  /* the request was validated by job_parse; check again what reaches a
   * registry path in case a caller built one by hand */
  if (job_app_id_problem (j->app) != NULL || job_commit_problem (j->commit) != NULL
      || job_id_problem (j->id) != NULL || job_ref_problem (j->ref) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "expanding `%s`: the job request is not valid",
                           field);
  memcpy (short_commit, j->commit, CONFIG_SHORT_COMMIT_LEN);
  short_commit[CONFIG_SHORT_COMMIT_LEN] = '\0';
  ref_name (rn, j->ref);
  vals[T_APP] = j->app;
  vals[T_COMMIT] = j->commit;
  vals[T_SHORT_COMMIT] = short_commit;
  vals[T_REF_NAME] = rn;
  vals[T_ID] = j->id;
  if ((why = tmpl_expand (&b, tmpl, vals, &used)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "expanding `%s`: template %s", field, why);
  if (b.len > 255 || tmpl_result_problem (buf_cstr (&b), kind) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "`%s` gives `%s` for app `%s`, which is not a valid %s name", field,
                           buf_cstr (&b), j->app, kind == TMPL_REPOSITORY ? "repository" : "tag");
  *out = buf_steal (&b);
  return 0;
}

void
config_strv_free (char **v)
{
  strv_free (v);
}

int
config_expand_destination (char **repo_out, char **tag_out, const struct runner_config *c,
                           const struct job_request *j, bvm_error_t *err)
{
  cleanup_free char *repo = NULL;
  cleanup_free char *tag = NULL;
  int ret;

  ret = tmpl_apply (&repo, c->registry.repository, TMPL_REPOSITORY, "registry.repository", j, err);
  if (ret == 0)
    ret = tmpl_apply (&tag, c->registry.tag, TMPL_TAG, "registry.tag", j, err);
  if (ret < 0)
    return ret;
  *repo_out = steal_pointer (&repo);
  *tag_out = steal_pointer (&tag);
  return 0;
}

bool
config_tag_mutable (const char *tmpl)
{
  cleanup_buf struct buf b = BUF_INIT (4096);
  unsigned used = 0;

  /* a tag that names the commit is only ever pushed for that commit; every
   * other one (`latest`, `{ref_name}`, `{id}`) can be asked to name another */
  if (tmpl_expand (&b, tmpl, samples[0], &used) != NULL)
    return true;
  return !(used & ((1u << T_COMMIT) | (1u << T_SHORT_COMMIT)));
}

int
config_expand_extra_tags (char ***out, size_t *n, const struct runner_config *c,
                          const struct job_request *j, bvm_error_t *err)
{
  char **v = calloc (c->registry.n_extra_tags + 1, sizeof *v);
  int ret;

  if (v == NULL)
    return nomem (err);
  for (size_t i = 0; i < c->registry.n_extra_tags; i++)
    {
      ret = tmpl_apply (&v[i], c->registry.extra_tags[i], TMPL_TAG, "registry.extra_tags", j, err);
      if (ret < 0)
        {
          config_strv_free (v);
          return ret;
        }
    }
  *out = v;
  *n = c->registry.n_extra_tags;
  return 0;
}

/* --- loading ------------------------------------------------------------------------ */

void
config_free (struct runner_config *c)
{
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->dockerfile.n_from_map; i++)
    {
      free (c->dockerfile.from_map[i].key);
      free (c->dockerfile.from_map[i].name);
      free (c->dockerfile.from_map[i].repository);
      free (c->dockerfile.from_map[i].tag);
    }
  free (c->dockerfile.from_map);
  config_strv_free (c->dockerfile.local_prefixes);
  free (c->path);
  free (c->home);
  free (c->work_dir);
  free (c->log_dir);
  free (c->cache_dir);
  free (c->state_dir);
  free (c->artifacts);
  free (c->artifacts_dir);
  free (c->registry.url);
  free (c->registry.credentials);
  free (c->registry.job_tickets);
  free (c->registry.repository);
  free (c->registry.tag);
  config_strv_free (c->registry.extra_tags);
  free (c->images.dir);
  free (c->images.default_profile);
  free (c->vm.driver);
  free (c->vm.qemu);
  free (c->policies.role);
  free (c->policies.boundary);
  free (c->secrets.dir);
  free (c->secrets.master_key);
  free (c->attest.key);
  free (c->attest.builder_id);
  free (c->serve.name);
  free (c->serve.metrics);
  for (size_t i = 0; i < c->serve.n_pool; i++)
    free (c->serve.pool[i].profile);
  free ((char *) c->jail.lock_dir);
  free (c->queue);
  free (c->webhook.listen);
  for (size_t i = 0; i < c->n_apps; i++)
    {
      free (c->apps[i].app);
      free (c->apps[i].repo);
      config_strv_free (c->apps[i].match);
      config_strv_free (c->apps[i].branches);
      free (c->apps[i].secret_file);
    }
  free (c->apps);
  egress_settings_dispose (&c->egress);
  regtoken_settings_dispose (&c->token_server);
  config_strv_free (c->checkout.allow_addresses_text);
  free (c);
}

struct loader
{
  const char *what;  /* "`/path`" or "built-in defaults" */
  const json_t *doc; /* an empty object for defaults only */
};

static int
wrapped (int ret, const struct loader *L, bvm_error_t *err)
{
  return ret < 0 ? bvm_error_wrap (err, "%s", L->what) : ret;
}

/* An optional sub-object with only the listed keys; *out NULL if absent. */
static int
get_section (const json_t **out, const struct loader *L, const char *key, const char *const *keys,
             bvm_error_t *err)
{
  json_t *o = NULL;
  int ret = jsonx_get_typed (&o, L->doc, key, JSON_OBJECT, false, "", err);
  if (ret == 0 && o != NULL)
    ret = jsonx_check_keys (o, keys, key, err);
  *out = o;
  return wrapped (ret, L, err);
}

/* A string field of `obj` (which may be NULL): *out is a copy of it, or of
 * `def` when absent (NULL when def is NULL). */
static int
get_string (char **out, const struct loader *L, const json_t *obj, const char *where,
            const char *key, const char *def, size_t maxlen, bvm_error_t *err)
{
  const char *v = def;
  int ret = 0;

  if (obj != NULL)
    ret = jsonx_get_str (&v, obj, key, false, maxlen, where, err);
  if (ret < 0)
    return wrapped (ret, L, err);
  if (v == NULL)
    {
      *out = NULL;
      return 0;
    }
  *out = strdup (v);
  return *out == NULL ? nomem (err) : 0;
}

/* An absolute path field, or `def`. Trailing slashes are dropped. */
static int
get_path (char **out, const struct loader *L, const json_t *obj, const char *where,
          const char *key, const char *def, bvm_error_t *err)
{
  cleanup_free char *v = NULL;
  char field[128];
  const char *why;
  int ret;

  ret = get_string (&v, L, obj, where, key, def, 65536, err);
  if (ret < 0 || v == NULL)
    return ret;
  jsonx_path (field, sizeof field, where, key);
  if ((why = abs_path_problem (v)) != NULL)
    return bad_value (err, L->what, field, why, v);
  *out = path_dup_trimmed (v);
  return *out == NULL ? nomem (err) : 0;
}

/* get_path for an optional file, where null is the same as absent */
static int
get_opt_path (char **out, const struct loader *L, const json_t *obj, const char *where,
              const char *key, const char *def, bvm_error_t *err)
{
  const json_t *v = obj ? json_object_get (obj, key) : NULL;

  if (v != NULL && json_is_null (v))
    obj = NULL;
  return get_path (out, L, obj, where, key, def, err);
}

static int
load_dirs (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const struct
  {
    const char *key;
    const char *sub;
    size_t off;
  } dirs[] = {
    { "work_dir", "work", offsetof (struct runner_config, work_dir) },
    { "log_dir", "logs", offsetof (struct runner_config, log_dir) },
    { "cache_dir", "cache", offsetof (struct runner_config, cache_dir) },
    { "state_dir", "state", offsetof (struct runner_config, state_dir) },
  };
  int ret;

  /* precedence: the `home` field, then $BUILDVM_HOME, then the default */
  ret = get_path (&c->home, L, L->doc, "", "home", NULL, err);
  if (ret < 0)
    return ret;
  if (c->home == NULL && (ret = config_default_home (&c->home, err)) < 0)
    return ret;
  for (size_t i = 0; i < ARRAY_SIZE (dirs); i++)
    {
      cleanup_free char *def = path_join (c->home, dirs[i].sub);
      char **dst = (char **) ((char *) c + dirs[i].off);
      if (def == NULL)
        return nomem (err);
      ret = get_path (dst, L, L->doc, "", dirs[i].key, def, err);
      if (ret < 0)
        return ret;
    }
  return 0;
}

static int
load_artifacts_and_queue (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  cleanup_free char *def = NULL;
  const char *why;
  int ret;

  if (asprintf (&def, "dir:%s%sartifacts", c->home, strcmp (c->home, "/") ? "/" : "") < 0)
    return nomem (err);
  ret = get_string (&c->artifacts, L, L->doc, "", "artifacts", def, 65536, err);
  if (ret < 0)
    return ret;
  if (strncmp (c->artifacts, "s3:", 3) == 0)
    {
      /* the URL's grammar is the s3 backend's (store_s3.h); no I/O here */
      struct s3_location loc;
      bvm_error_t e2 = NULL;
      if (s3_parse_location (&loc, c->artifacts + 3, &e2) < 0)
        {
          ret = bad (err, L->what, "artifacts", "is not a usable s3 URL: %s", bvm_error_msg (&e2));
          bvm_error_free (&e2);
          return ret;
        }
      s3_location_dispose (&loc);
    }
  else
    {
      if (strncmp (c->artifacts, "dir:", 4) != 0 || abs_path_problem (c->artifacts + 4) != NULL)
        return bad_value (err, L->what, "artifacts",
                          "must be `dir:` followed by an absolute directory, or an `s3://` URL",
                          c->artifacts);
      c->artifacts_dir = path_dup_trimmed (c->artifacts + 4);
      if (c->artifacts_dir == NULL)
        return nomem (err);
    }

  free (def);
  if (asprintf (&def, "spool:%s%sspool", c->home, strcmp (c->home, "/") ? "/" : "") < 0)
    {
      def = NULL;
      return nomem (err);
    }
  ret = get_string (&c->queue, L, L->doc, "", "queue", def, 65536, err);
  if (ret < 0)
    return ret;
  if ((why = queue_problem (c->queue, &c->queue_kind)) != NULL)
    return bad_value (err, L->what, "queue", why, c->queue);
  return 0;
}

static int
load_registry (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "url", "credentials", "job_tickets", "repository",
                                      "tag", "extra_tags",  NULL };
  const json_t *o = NULL;
  json_t *cred;
  const char *why;
  int ret;

  ret = get_section (&o, L, "registry", keys, err);
  if (ret == 0)
    ret = get_string (&c->registry.url, L, o, "registry", "url", DEFAULT_REGISTRY_URL, 65536, err);
  if (ret < 0)
    return ret;
  if ((why = registry_url_problem (c->registry.url)) != NULL)
    return bad_value (err, L->what, "registry.url", why, c->registry.url);
  {
    size_t n = strlen (c->registry.url);
    if (c->registry.url[n - 1] == '/')
      c->registry.url[n - 1] = '\0';
  }

  /* null and absent both mean "no credentials" */
  cred = o ? json_object_get (o, "credentials") : NULL;
  if (cred != NULL && !json_is_null (cred))
    {
      ret = get_path (&c->registry.credentials, L, o, "registry", "credentials", NULL, err);
      if (ret < 0)
        return ret;
      /* fail at startup rather than at the first push; the check is done
       * again on the open file when the credentials are read */
      ret = fs_check_private (c->registry.credentials, err);
      if (ret < 0)
        return bvm_error_wrap (err, "%s: field `registry.credentials`", L->what);
    }

  /* job tickets (docs/security.md, "Registry tokens"): the key is checked
   * now and read when a job opens the registry */
  ret = get_opt_path (&c->registry.job_tickets, L, o, "registry", "job_tickets", NULL, err);
  if (ret == 0 && c->registry.job_tickets != NULL
      && fs_check_private (c->registry.job_tickets, err) < 0)
    return bvm_error_wrap (err, "%s: field `registry.job_tickets`", L->what);
  if (ret == 0)
    ret = get_string (&c->registry.repository, L, o, "registry", "repository", DEFAULT_REPOSITORY,
                      4096, err);
  if (ret == 0)
    ret = tmpl_check (c->registry.repository, TMPL_REPOSITORY, true, L->what,
                      "registry.repository", err);
  if (ret == 0)
    ret = get_string (&c->registry.tag, L, o, "registry", "tag", DEFAULT_TAG, 4096, err);
  if (ret == 0)
    ret = tmpl_check (c->registry.tag, TMPL_TAG, true, L->what, "registry.tag", err);
  if (ret < 0)
    return ret;

  {
    cleanup_free const char **tags = NULL;
    size_t n = 0;

    if (o != NULL)
      ret = jsonx_get_str_array (&tags, &n, o, "extra_tags", false, CONFIG_MAX_EXTRA_TAGS,
                                 CAP_FIELD_READ, "registry", err);
    if (ret < 0)
      return wrapped (ret, L, err);
    c->registry.extra_tags = calloc (n + 1, sizeof (char *));
    if (c->registry.extra_tags == NULL)
      return nomem (err);
    for (size_t i = 0; i < n; i++)
      {
        char field[64];
        snprintf (field, sizeof field, "registry.extra_tags[%zu]", i);
        ret = tmpl_check (tags[i], TMPL_TAG, false, L->what, field, err);
        if (ret < 0)
          return ret;
        for (size_t k = 0; k < i; k++)
          if (strcmp (tags[k], tags[i]) == 0)
            return bad_value (err, L->what, field, "repeats a tag", tags[i]);
        if ((c->registry.extra_tags[i] = strdup (tags[i])) == NULL)
          return nomem (err);
        c->registry.n_extra_tags = i + 1;
      }
  }
  return 0;
}

static int
load_images_vm (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const ikeys[] = { "dir", "default_profile", NULL };
  static const char *const vkeys[] = { "driver",       "accel",      "qemu",
                                       "boot_timeout", "early_boot", NULL };
  const json_t *o = NULL;
  cleanup_free char *accel = NULL;
  int ret;

  ret = get_section (&o, L, "images", ikeys, err);
  if (ret < 0)
    return ret;
  if (o == NULL || json_object_get (o, "dir") == NULL)
    {
      /* $BUILDVM_IMAGES (image_default_dir), else next to the executable,
       * so a build tree (build/buildvm with build/images from `make
       * images`) works without any config */
      if ((ret = image_default_dir (&c->images.dir, err)) < 0)
        return bvm_error_wrap (err, "the default `images.dir`");
    }
  else if ((ret = get_path (&c->images.dir, L, o, "images", "dir", NULL, err)) < 0)
    return ret;
  ret = get_string (&c->images.default_profile, L, o, "images", "default_profile", DEFAULT_PROFILE,
                    4096, err);
  if (ret < 0)
    return ret;
  if (image_profile_problem (c->images.default_profile) != NULL)
    return bad_value (err, L->what, "images.default_profile",
                      "must match ^[a-z0-9][a-z0-9-]{0,31}$", c->images.default_profile);

  ret = get_section (&o, L, "vm", vkeys, err);
  if (ret == 0)
    ret = get_string (&c->vm.driver, L, o, "vm", "driver", "qemu", 4096, err);
  if (ret == 0)
    ret = get_string (&accel, L, o, "vm", "accel", "auto", 4096, err);
  if (ret == 0)
    ret = get_string (&c->vm.qemu, L, o, "vm", "qemu", DEFAULT_QEMU, 65536, err);
  if (ret < 0)
    return ret;
  if (strcmp (c->vm.driver, "qemu") != 0)
    return bad_value (err, L->what, "vm.driver", "must be `qemu`", c->vm.driver);
  if (strcmp (accel, "auto") == 0)
    c->vm.accel = VM_ACCEL_AUTO;
  else if (strcmp (accel, "kvm") == 0)
    c->vm.accel = VM_ACCEL_KVM;
  else if (strcmp (accel, "tcg") == 0)
    c->vm.accel = VM_ACCEL_TCG;
  else
    return bad_value (err, L->what, "vm.accel", "must be `auto`, `kvm` or `tcg`", accel);
  if (c->vm.qemu[0] == '/')
    {
      if (abs_path_problem (c->vm.qemu) != NULL)
        return bad_value (err, L->what, "vm.qemu", abs_path_problem (c->vm.qemu), c->vm.qemu);
    }
  else if (command_name_problem (c->vm.qemu) != NULL)
    return bad_value (err, L->what, "vm.qemu",
                      "must be a command name ([A-Za-z0-9._+-]{1,64}) or an absolute path",
                      c->vm.qemu);
  c->vm.boot_timeout = DEFAULT_BOOT_TIMEOUT;
  if (o != NULL)
    ret = jsonx_get_u64 (&c->vm.boot_timeout, o, "boot_timeout", false, 1, BOOT_TIMEOUT_MAX, "vm",
                         err);
  c->vm.early_boot = true;
  if (ret == 0 && o != NULL)
    ret = jsonx_get_bool (&c->vm.early_boot, o, "early_boot", false, "vm", err);
  return wrapped (ret, L, err);
}

struct u64_field
{
  const char *key;
  size_t off;
  uint64_t min, max, def;
};

static int
load_u64_section (void *base, const struct loader *L, const char *section,
                  const struct u64_field *f, size_t n, bvm_error_t *err)
{
  const char *keys[16];
  const json_t *o = NULL;
  int ret;

  for (size_t i = 0; i < n; i++)
    keys[i] = f[i].key;
  keys[n] = NULL;
  ret = get_section (&o, L, section, keys, err);
  for (size_t i = 0; ret == 0 && i < n; i++)
    {
      uint64_t *dst = (uint64_t *) ((char *) base + f[i].off);
      *dst = f[i].def;
      if (o != NULL)
        ret = wrapped (jsonx_get_u64 (dst, o, f[i].key, false, f[i].min, f[i].max, section, err),
                       L, err);
    }
  return ret;
}

#define LIM(k, min, max, def)                                                                     \
  {                                                                                               \
#k, offsetof(struct config_limits, k), (min), (max), (def)                                    \
  }
#define DEF(k, min, max, def)                                                                     \
  {                                                                                               \
#k, offsetof(struct config_defaults, k), (min), (max), (def)                                  \
  }

static int
load_limits (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const struct u64_field limits[] = {
    LIM (max_vcpus, 1, SPEC_VCPUS_MAX, 2),
    LIM (max_memory_mib, SPEC_MEMORY_MIB_MIN, SPEC_MEMORY_MIB_MAX, 2048),
    LIM (max_disk_mib, SPEC_DISK_MIB_MIN, SPEC_DISK_MIB_MAX, 8192),
    LIM (max_build_seconds, 1, SPEC_TIMEOUT_MAX, 3600),
    LIM (max_output_bytes, 1, UINT64_C (1) << 44, UINT64_C (2) << 30),
    LIM (max_log_bytes, 4096, UINT64_C (1) << 36, UINT64_C (16) << 20),
    LIM (max_source_bytes, 1, UINT64_C (1) << 44, UINT64_C (1) << 30),
    LIM (max_source_entries, 1, 100000000, 100000),
    LIM (max_checkout_seconds, 1, 86400, 900),
    LIM (max_worker_memory_mib, 0, SPEC_MEMORY_MIB_MAX, 4096),
    LIM (max_artifacts, 1, STORE_MAX_OBJECTS, 10000),
  };
  static const struct u64_field defaults[] = {
    DEF (vcpus, 1, SPEC_VCPUS_MAX, 1),
    DEF (memory_mib, SPEC_MEMORY_MIB_MIN, SPEC_MEMORY_MIB_MAX, 1024),
    DEF (disk_mib, SPEC_DISK_MIB_MIN, SPEC_DISK_MIB_MAX, 2048),
    DEF (build_seconds, 1, SPEC_TIMEOUT_MAX, 900),
  };
  const struct config_limits *l = &c->limits;
  const struct config_defaults *d = &c->defaults;
  int ret;

  ret = load_u64_section (&c->limits, L, "limits", limits, ARRAY_SIZE (limits), err);
  if (ret == 0)
    ret = load_u64_section (&c->defaults, L, "defaults", defaults, ARRAY_SIZE (defaults), err);
  if (ret < 0)
    return ret;
    /* a default above its limit would make every spec without resources fail */
#define CHECK(dk, lk)                                                                             \
  if (d->dk > l->lk)                                                                              \
    return bad (err, L->what, "defaults." #dk, "is %llu, above `limits." #lk "` (%llu)",          \
                (unsigned long long) d->dk, (unsigned long long) l->lk);
  CHECK (vcpus, max_vcpus);
  CHECK (memory_mib, max_memory_mib);
  CHECK (disk_mib, max_disk_mib);
  CHECK (build_seconds, max_build_seconds);
#undef CHECK
  return 0;
}

static int
load_policies (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "role", "boundary", NULL };
  const json_t *o = NULL;
  int ret;

  ret = get_section (&o, L, "policies", keys, err);
  if (ret == 0)
    ret = get_string (&c->policies.role, L, o, "policies", "role", "builtin", 65536, err);
  if (ret == 0)
    ret = get_string (&c->policies.boundary, L, o, "policies", "boundary", "builtin", 65536, err);
  if (ret < 0)
    return ret;
  if (strcmp (c->policies.role, "builtin") != 0 && abs_path_problem (c->policies.role) != NULL)
    return bad_value (err, L->what, "policies.role", "must be `builtin` or an absolute path",
                      c->policies.role);
  if (strcmp (c->policies.boundary, "builtin") != 0
      && abs_path_problem (c->policies.boundary) != NULL)
    return bad_value (err, L->what, "policies.boundary", "must be `builtin` or an absolute path",
                      c->policies.boundary);
  return 0;
}

/* `checkout.allow_addresses`: the ranges a repository URL's host may be in
 * although the address rules refuse them (an internal git server on
 * RFC 1918 space, the tests' 127.0.0.1); the same grammar as
 * `egress.allow_addresses`, kept apart from it: a runner that may fetch
 * from a private network must not let builds reach it. */
static int
load_checkout (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "allow_addresses", NULL };
  cleanup_free const char **v = NULL;
  const json_t *o = NULL;
  size_t n = 0;
  int ret;

  ret = get_section (&o, L, "checkout", keys, err);
  if (ret == 0 && o != NULL)
    ret = wrapped (jsonx_get_str_array (&v, &n, o, "allow_addresses", false, NETADDR_ALLOW_MAX, 64,
                                        "checkout", err),
                   L, err);
  if (ret < 0)
    return ret;
  c->checkout.allow_addresses_text = calloc (n + 1, sizeof (char *));
  if (c->checkout.allow_addresses_text == NULL)
    return nomem (err);
  for (size_t i = 0; i < n; i++)
    {
      if ((c->checkout.allow_addresses_text[i] = strdup (v[i])) == NULL)
        return nomem (err);
      if (netaddr_allow_parse (&c->checkout.allow_addresses, v[i], err) < 0)
        return bvm_error_wrap (err, "%s: field `checkout.allow_addresses[%zu]`", L->what, i);
    }
  return 0;
}

/* `dockerfile.from_map`'s built-in default: the upstream names the
 * platform's base images stand for (buildvm-image/base/). */
static const char *const default_from_map[][2] = {
  { "node:18", "base/node:18-build" },   { "node:18-slim", "base/node:18" },
  { "debian:12", "base/debian:12" },     { "debian:bookworm", "base/debian:12" },
  { "python:3.11", "base/python:3.11" }, { "gcc:12", "base/gcc:12" },
};
static const char *const default_local_prefixes[] = { "base/", "apps/" };

static int
add_from_map (struct runner_config *c, const struct loader *L, const char *key, const char *value,
              bvm_error_t *err)
{
  struct config_from_map_entry *e = &c->dockerfile.from_map[c->dockerfile.n_from_map];
  struct dockerfile_ref ref;
  char field[600], kbuf[DOCKERFILE_REF_MAX + 16], shown[JOB__SHOW_SIZE];
  const char *colon = strrchr (value, ':'), *why;
  size_t klen = strlen (key);
  bool any = klen > 2 && strcmp (key + klen - 2, ":*") == 0;

  snprintf (field, sizeof field, "dockerfile.from_map.%s", job__show (shown, sizeof shown, key));
  if (klen > DOCKERFILE_REF_MAX)
    return bad (err, L->what, field, "is longer than %d bytes", DOCKERFILE_REF_MAX);
  /* "node:*": every tag of node, checked as "node:latest" */
  snprintf (kbuf, sizeof kbuf, "%.*s%s", (int) (any ? klen - 2 : klen), key, any ? ":latest" : "");
  if ((why = dockerfile_ref_parse (&ref, kbuf)) != NULL)
    return bad_value (err, L->what, field, why, key);
  if (ref.digest[0] != '\0')
    return bad_value (err, L->what, field, "must be a name and a tag, not a digest", key);
  if (colon != NULL && strchr (colon, '/') != NULL)
    colon = NULL;
  if (strlen (value) > DOCKERFILE_REF_MAX
      || (colon != NULL && oci_tag_problem (colon + 1) != NULL))
    return bad_value (err, L->what, field, "must be `repository[:tag]` in the runner's registry",
                      value);
  memset (e, 0, sizeof *e);
  e->any_tag = any;
  if ((e->key = strdup (key)) == NULL || (e->name = strdup (ref.name)) == NULL
      || (e->repository = colon ? strndup (value, (size_t) (colon - value)) : strdup (value))
             == NULL
      || (colon != NULL && (e->tag = strdup (colon + 1)) == NULL))
    {
      free (e->key), free (e->name), free (e->repository), free (e->tag);
      return nomem (err);
    }
  c->dockerfile.n_from_map++;
  if (oci_repository_problem (e->repository) != NULL)
    return bad_value (err, L->what, field, "must be `repository[:tag]` in the runner's registry",
                      value);
  if (any && e->tag != NULL)
    return bad_value (err, L->what, field, "a `:*` key maps to a repository without a tag", value);
  for (size_t i = 0; i + 1 < c->dockerfile.n_from_map; i++)
    if (strcmp (c->dockerfile.from_map[i].name, e->name) == 0
        && c->dockerfile.from_map[i].any_tag == any)
      return bad_value (err, L->what, field, "names the same image as another key", key);
  return 0;
}

/* `dockerfile`: from_map (replaces the built-in map when given) and
 * local_prefixes (likewise), docs/schemas.md. */
static int
load_dockerfile (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "from_map", "local_prefixes", NULL };
  cleanup_free const char **pv = NULL;
  const json_t *o = NULL;
  json_t *map = NULL, *v;
  const char *k;
  size_t n = 0;
  int ret;

  ret = get_section (&o, L, "dockerfile", keys, err);
  if (ret == 0 && o != NULL)
    ret = wrapped (jsonx_get_typed (&map, o, "from_map", JSON_OBJECT, false, "dockerfile", err), L,
                   err);
  if (ret == 0 && o != NULL)
    ret = wrapped (jsonx_get_str_array (&pv, &n, o, "local_prefixes", false,
                                        CONFIG_LOCAL_PREFIXES_MAX, 255, "dockerfile", err),
                   L, err);
  if (ret < 0)
    return ret;
  if (map != NULL && json_object_size (map) > CONFIG_FROM_MAP_MAX)
    return bad (err, L->what, "dockerfile.from_map", "has more than %d entries",
                CONFIG_FROM_MAP_MAX);
  c->dockerfile.from_map = calloc (map ? json_object_size (map) + 1
                                       : ARRAY_SIZE (default_from_map),
                                   sizeof *c->dockerfile.from_map);
  if (c->dockerfile.from_map == NULL)
    return nomem (err);
  if (map == NULL)
    for (size_t i = 0; ret == 0 && i < ARRAY_SIZE (default_from_map); i++)
      ret = add_from_map (c, L, default_from_map[i][0], default_from_map[i][1], err);
  else
    json_object_foreach (map, k, v)
      {
        char field[600], shown[JOB__SHOW_SIZE];
        if (!json_is_string (v))
          {
            snprintf (field, sizeof field, "dockerfile.from_map.%s",
                      job__show (shown, sizeof shown, k));
            return bad (err, L->what, field, "must be a string");
          }
        if ((ret = add_from_map (c, L, k, json_string_value (v), err)) < 0)
          return ret;
      }
  if (ret < 0)
    return ret;
  if (pv == NULL)
    {
      pv = calloc (ARRAY_SIZE (default_local_prefixes) + 1, sizeof *pv);
      if (pv == NULL)
        return nomem (err);
      for (n = 0; n < ARRAY_SIZE (default_local_prefixes); n++)
        pv[n] = default_local_prefixes[n];
    }
  for (size_t i = 0; i < n; i++)
    {
      char field[64], repo[256];
      size_t len = strlen (pv[i]);
      snprintf (field, sizeof field, "dockerfile.local_prefixes[%zu]", i);
      snprintf (repo, sizeof repo, "%.*s", (int) (len > 0 ? len - 1 : 0), pv[i]);
      if (len < 2 || pv[i][len - 1] != '/' || oci_repository_problem (repo) != NULL)
        return bad_value (err, L->what, field,
                          "must be a repository path ending in `/` (such as `base/`)", pv[i]);
    }
  c->dockerfile.local_prefixes = (char **) strv_dup (pv, n);
  if (c->dockerfile.local_prefixes == NULL)
    return nomem (err);
  c->dockerfile.n_local_prefixes = n;
  return 0;
}

/* The master key defaults to a file in the store's directory; see
 * docs/secrets.md for keeping it elsewhere. */
static int
load_secrets (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "dir", "master_key", "at_rest", NULL };
  cleanup_free char *def_dir = path_join (c->home, "secrets");
  cleanup_free char *def_key = NULL;
  const json_t *o = NULL;
  int ret;

  if (def_dir == NULL)
    return nomem (err);
  ret = get_section (&o, L, "secrets", keys, err);
  if (ret == 0)
    ret = get_path (&c->secrets.dir, L, o, "secrets", "dir", def_dir, err);
  if (ret < 0)
    return ret;
  if ((def_key = path_join (c->secrets.dir, "master.key")) == NULL)
    return nomem (err);
  c->secrets.at_rest = true;
  if (o != NULL
      && (ret = jsonx_get_bool (&c->secrets.at_rest, o, "at_rest", false, "secrets", err)) < 0)
    return wrapped (ret, L, err);
  return get_path (&c->secrets.master_key, L, o, "secrets", "master_key", def_key, err);
}

/* The signing key defaults to a file under the state directory, made at
 * first use (attest_key_load_or_create); the builder id to this host's
 * name, which is what a verifier pins unless the operator names the runner. */
static int
load_attest (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "key", "builder_id", NULL };
  cleanup_free char *def_key = path_join (c->state_dir, "attest/signing-key.pem");
  char host[256], def_id[320];
  const json_t *o = NULL;
  int ret;

  if (def_key == NULL)
    return nomem (err);
  if (gethostname (host, sizeof host) < 0)
    snprintf (host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  snprintf (def_id, sizeof def_id, "urn:buildvm:runner:%s", host);
  ret = get_section (&o, L, "attest", keys, err);
  if (ret == 0)
    ret = get_path (&c->attest.key, L, o, "attest", "key", def_key, err);
  if (ret == 0)
    ret = get_string (&c->attest.builder_id, L, o, "attest", "builder_id", def_id, 255, err);
  if (ret < 0)
    return ret;
  if (c->attest.builder_id[0] == '\0')
    return bad (err, L->what, "attest.builder_id", "is empty");
  if (has_control (c->attest.builder_id))
    return bad_value (err, L->what, "attest.builder_id", "must not contain control characters",
                      c->attest.builder_id);
  return 0;
}

/* --- webhook and apps (docs/webhooks.md) ------------------------------------------------ */

static int
load_webhook (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
#define WH(k, min, max, def)                                                                      \
  {                                                                                               \
#k, offsetof(struct config_webhook, k), (min), (max), (def)                                   \
  }
  static const struct u64_field fields[] = {
    WH (max_body_bytes, 1024, UINT64_C (64) << 20, UINT64_C (1) << 20),
    WH (max_connections, 1, 1024, 32),
    WH (timeout_seconds, 1, 300, 10),
    WH (replay_window, 16, 1000000, 10000),
  };
#undef WH
  static const char *const keys[] = { "listen",          "max_body_bytes", "max_connections",
                                      "timeout_seconds", "replay_window",  NULL };
  const json_t *o = NULL;
  struct sockaddr_storage sa;
  socklen_t salen;
  int ret;

  ret = get_section (&o, L, "webhook", keys, err);
  if (ret == 0)
    ret = get_string (&c->webhook.listen, L, o, "webhook", "listen", "127.0.0.1:8585", 256, err);
  for (size_t i = 0; ret == 0 && i < ARRAY_SIZE (fields); i++)
    {
      uint64_t *dst = (uint64_t *) ((char *) &c->webhook + fields[i].off);
      *dst = fields[i].def;
      if (o != NULL)
        ret = wrapped (jsonx_get_u64 (dst, o, fields[i].key, false, fields[i].min, fields[i].max,
                                      "webhook", err),
                       L, err);
    }
  if (ret < 0)
    return ret;
  if (webhook_parse_listen (&sa, &salen, c->webhook.listen, err) < 0)
    return bvm_error_wrap (err, "%s: field `webhook.listen`", L->what);
  return 0;
}

/* `token_server` (regtoken.h, docs/operations.md "Registry tokens"): read
 * by `buildvm token-server` alone, whose keys are checked when it starts */
static int
load_token_server (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
#define TS(k, min, max, def)                                                                      \
  {                                                                                               \
#k, offsetof(struct regtoken_settings, k), (min), (max), (def)                                \
  }
  static const struct u64_field fields[] = {
    TS (token_seconds, 60, 3600, 300),
    TS (max_connections, 1, 1024, 64),
    TS (timeout_seconds, 1, 300, 10),
  };
#undef TS
  static const char *const keys[] = { "listen",          "signing_key",     "ticket_key",
                                      "issuer",          "service",         "token_seconds",
                                      "max_connections", "timeout_seconds", NULL };
  struct regtoken_settings *t = &c->token_server;
  const json_t *o = NULL;
  struct sockaddr_storage sa;
  socklen_t salen;
  int ret;

  ret = get_section (&o, L, "token_server", keys, err);
  if (ret == 0)
    ret = get_string (&t->listen, L, o, "token_server", "listen", "127.0.0.1:8586", 256, err);
  if (ret == 0)
    ret = get_opt_path (&t->signing_key, L, o, "token_server", "signing_key", NULL, err);
  if (ret == 0)
    ret = get_opt_path (&t->ticket_key, L, o, "token_server", "ticket_key",
                        c->registry.job_tickets, err);
  if (ret == 0)
    ret = get_string (&t->issuer, L, o, "token_server", "issuer", "buildvm", 255, err);
  if (ret == 0)
    ret = get_string (&t->service, L, o, "token_server", "service", "buildvm-registry", 255, err);
  for (size_t i = 0; ret == 0 && i < ARRAY_SIZE (fields); i++)
    {
      uint64_t *dst = (uint64_t *) ((char *) t + fields[i].off);
      *dst = fields[i].def;
      if (o != NULL)
        ret = wrapped (jsonx_get_u64 (dst, o, fields[i].key, false, fields[i].min, fields[i].max,
                                      "token_server", err),
                       L, err);
    }
  if (ret < 0)
    return ret;
  if (t->issuer[0] == '\0' || has_control (t->issuer))
    return bad_value (err, L->what, "token_server.issuer",
                      "must be non-empty, without control characters", t->issuer);
  if (t->service[0] == '\0' || has_control (t->service))
    return bad_value (err, L->what, "token_server.service",
                      "must be non-empty, without control characters", t->service);
  if (webhook_parse_listen (&sa, &salen, t->listen, err) < 0)
    return bvm_error_wrap (err, "%s: field `token_server.listen`", L->what);
  return 0;
}

#define APP_SAMPLE_COMMIT "0000000000000000000000000000000000000000"

/* The deploy request validator is the one judge of what a runner may fetch:
 * a synthetic request with this repo goes through job_parse. */
static int
check_app_repo (const char *repo, const struct loader *L, const char *field, bvm_error_t *err)
{
  cleanup_json json_t *doc = json_pack ("{s:s, s:s, s:s, s:s, s:s}", "id", "x", "app", "x", "repo",
                                        repo, "commit", APP_SAMPLE_COMMIT, "ref",
                                        "refs/heads/main");
  cleanup_free char *text = doc ? json_dumps (doc, JSON_COMPACT) : NULL;
  cleanup_job struct job_request *j = NULL;
  cleanup_error bvm_error_t jerr = NULL;

  if (text == NULL)
    return nomem (err);
  if (job_parse (&j, text, strlen (text), &jerr) < 0)
    return bad (err, L->what, field, "is not a repository a deploy request may name (%s)",
                bvm_error_msg (&jerr));
  return 0;
}

static bool
has_space_or_control (const char *s)
{
  for (; *s; s++)
    if ((unsigned char) *s <= 0x20 || *s == 0x7f)
      return true;
  return false;
}

static int
load_app (struct config_app *a, const json_t *o, const struct loader *L, size_t idx,
          bvm_error_t *err)
{
  static const char *const keys[] = { "app", "repo", "match", "branches", "secret_file", NULL };
  static const char *const main_branch[] = { "main" };
  cleanup_free const char **match = NULL;
  cleanup_free const char **branches = NULL;
  const char *app = NULL, *repo = NULL;
  size_t n_match = 0, n_branches = 0;
  char where[32], field[64];
  int ret;

  snprintf (where, sizeof where, "apps[%zu]", idx);
  if (!json_is_object (o))
    return bad (err, L->what, where, "must be an object");
  ret = jsonx_check_keys (o, keys, where, err);
  if (ret == 0)
    ret = jsonx_get_str (&app, o, "app", true, 256, where, err);
  if (ret == 0)
    ret = jsonx_get_str (&repo, o, "repo", true, CAP_TEXT_READ, where, err);
  if (ret == 0)
    ret = jsonx_get_str_array (&match, &n_match, o, "match", false, CONFIG_APP_MAX_MATCH,
                               JOB_REPO_MAX, where, err);
  if (ret == 0)
    ret = jsonx_get_str_array (&branches, &n_branches, o, "branches", false,
                               CONFIG_APP_MAX_BRANCHES, JOB_REF_MAX, where, err);
  if (ret < 0)
    return wrapped (ret, L, err);

  snprintf (field, sizeof field, "%s.app", where);
  if (job_app_id_problem (app) != NULL)
    return bad_value (err, L->what, field, "must match ^[a-z0-9][a-z0-9-]{0,62}$", app);
  snprintf (field, sizeof field, "%s.repo", where);
  if ((ret = check_app_repo (repo, L, field, err)) < 0)
    return ret;
  if ((a->app = strdup (app)) == NULL || (a->repo = strdup (repo)) == NULL)
    return nomem (err);

  /* without `match`, the payload must name the repository the runner fetches */
  if (match == NULL)
    {
      ret = (a->match = strv_dup (&repo, 1)) != NULL ? 0 : nomem (err);
      a->n_match = 1;
    }
  else if (n_match == 0)
    return bad (err, L->what, where, "has an empty `match`: no push could select it");
  else
    {
      for (size_t i = 0; i < n_match; i++)
        if (match[i][0] == '\0' || has_space_or_control (match[i]))
          {
            snprintf (field, sizeof field, "%s.match[%zu]", where, i);
            return bad_value (err, L->what, field,
                              "must be a clone URL or a full name without spaces", match[i]);
          }
      ret = (a->match = strv_dup (match, n_match)) != NULL ? 0 : nomem (err);
      a->n_match = n_match;
    }
  if (ret < 0)
    return ret;

  if (branches == NULL)
    {
      ret = (a->branches = strv_dup (main_branch, 1)) != NULL ? 0 : nomem (err);
      a->n_branches = 1;
    }
  else if (n_branches == 0)
    return bad (err, L->what, where, "has an empty `branches`: no push could deploy it");
  else
    {
      for (size_t i = 0; i < n_branches; i++)
        {
          char ref[JOB_REF_MAX + 16];
          snprintf (field, sizeof field, "%s.branches[%zu]", where, i);
          if (strncmp (branches[i], "refs/", 5) == 0
              || snprintf_checked (ref, sizeof ref, "refs/heads/%s", branches[i]) < 0
              || job_ref_problem (ref) != NULL)
            return bad_value (err, L->what, field,
                              "must be a branch name such as `main` (without `refs/heads/`)",
                              branches[i]);
        }
      ret = (a->branches = strv_dup (branches, n_branches)) != NULL ? 0 : nomem (err);
      a->n_branches = n_branches;
    }
  if (ret < 0)
    return ret;

  /* the file is read by the webhook alone (webhook_config_load), so that
   * `run` and `serve` need no access to it */
  ret = get_path (&a->secret_file, L, o, where, "secret_file", NULL, err);
  if (ret == 0 && a->secret_file == NULL)
    ret = bad (err, L->what, where, "has no `secret_file`");
  return ret;
}

static int
load_apps (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  json_t *arr = NULL, *o;
  size_t i;
  int ret;

  ret = wrapped (jsonx_get_typed (&arr, L->doc, "apps", JSON_ARRAY, false, "", err), L, err);
  if (ret < 0 || arr == NULL)
    return ret;
  if (json_array_size (arr) > CONFIG_MAX_APPS)
    return bad (err, L->what, "apps", "has more than %d entries", CONFIG_MAX_APPS);
  c->apps = calloc (json_array_size (arr) + 1, sizeof *c->apps);
  if (c->apps == NULL)
    return nomem (err);
  json_array_foreach (arr, i, o)
    {
      struct config_app *a = &c->apps[i];

      c->n_apps = i + 1;
      if ((ret = load_app (a, o, L, i, err)) < 0)
        return ret;
      /* one push selects one app: the same repository name and branch in
       * two entries would leave the choice to the table's order */
      for (size_t k = 0; k <= i; k++)
        for (size_t m = 0; m < c->apps[k].n_match; m++)
          for (size_t n = 0; n < a->n_match; n++)
            {
              if ((k == i && m >= n) || strcasecmp (c->apps[k].match[m], a->match[n]) != 0)
                continue;
              for (size_t b = 0; b < c->apps[k].n_branches; b++)
                for (size_t d = 0; d < a->n_branches; d++)
                  if (strcmp (c->apps[k].branches[b], a->branches[d]) == 0)
                    {
                      char field[32];
                      snprintf (field, sizeof field, "apps[%zu]", i);
                      return bad_value (err, L->what, field,
                                        k == i ? "repeats a `match` entry"
                                               : "deploys a repository and branch that an "
                                                 "earlier entry already deploys",
                                        a->match[n]);
                    }
            }
    }
  return 0;
}

uint64_t
config_job_seconds (const struct runner_config *c)
{
  if (c->serve.job_seconds > 0)
    return c->serve.job_seconds;
  /* every phase has a deadline of its own; the job's is their sum, so that
   * only a worker stuck where no phase deadline reaches is ever killed */
  return c->limits.max_checkout_seconds + c->vm.boot_timeout + c->limits.max_build_seconds + 3600;
}

#define SRV(k, min, max, def)                                                                     \
  {                                                                                               \
#k, offsetof(struct config_serve, k), (min), (max), (def)                                     \
  }

/* serve.pool: [{"profile", "vcpus", "memory_mib", "size"}, ...]; a field
 * left out is the job defaults' (checked against the limits by serve.c,
 * which resolves them once the whole file is loaded) */
static int
load_pool (struct runner_config *c, const struct loader *L, const json_t *a, bvm_error_t *err)
{
  static const char *const keys[] = { "profile", "vcpus", "memory_mib", "size", NULL };
  const json_t *e;
  size_t i;

  if (!json_is_array (a))
    return bad (err, L->what, "serve.pool", "must be an array of pool shapes");
  if (json_array_size (a) > CONFIG_POOL_SHAPES_MAX)
    return bad (err, L->what, "serve.pool", "has more than %d shapes", CONFIG_POOL_SHAPES_MAX);
  json_array_foreach (a, i, e)
    {
      struct config_pool_shape *sh = &c->serve.pool[c->serve.n_pool];
      const char *s = NULL;
      int ret;

      if (!json_is_object (e))
        return bad (err, L->what, "serve.pool[]", "must be an object");
      if ((ret = wrapped (jsonx_check_keys (e, keys, "serve.pool[]", err), L, err)) < 0
          || (ret = wrapped (jsonx_get_u64 (&sh->vcpus, e, "vcpus", false, 1, 64, "serve.pool[]",
                                            err),
                             L, err))
                 < 0
          || (ret = wrapped (jsonx_get_u64 (&sh->memory_mib, e, "memory_mib", false, 64, 1u << 20,
                                            "serve.pool[]", err),
                             L, err))
                 < 0)
        return ret;
      sh->size = 1;
      if ((ret = wrapped (jsonx_get_u64 (&sh->size, e, "size", false, 0, 64, "serve.pool[]", err),
                          L, err))
          < 0)
        return ret;
      if (json_object_get (e, "profile") != NULL)
        {
          if ((ret = wrapped (jsonx_get_str (&s, e, "profile", true, 64, "serve.pool[]", err), L,
                              err))
              < 0)
            return ret;
          if (image_profile_problem (s) != NULL)
            return bad_value (err, L->what, "serve.pool[].profile",
                              "must match ^[a-z0-9][a-z0-9-]{0,31}$", s);
          if ((sh->profile = strdup (s)) == NULL)
            return nomem (err);
        }
      c->serve.n_pool++;
    }
  return 0;
}

static int
load_serve (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = {
    "name",        "concurrency", "lease_seconds", "max_attempts",         "grace_seconds",
    "job_seconds", "metrics",     "pool",          "pool_max_age_seconds", NULL
  };
  static const struct u64_field fields[] = {
    SRV (concurrency, 0, 1024, 0),
    SRV (lease_seconds, 1, 86400, 60),
    SRV (max_attempts, 1, 100, 3),
    SRV (grace_seconds, 0, SPEC_TIMEOUT_MAX, 900),
    SRV (job_seconds, 0, 4 * SPEC_TIMEOUT_MAX, 0),
    SRV (pool_max_age_seconds, 10, 86400, 600),
  };
  const json_t *o = NULL;
  const char *s = NULL;
  int ret;

  ret = get_section (&o, L, "serve", keys, err);
  for (size_t i = 0; ret == 0 && i < ARRAY_SIZE (fields); i++)
    {
      uint64_t *dst = (uint64_t *) ((char *) &c->serve + fields[i].off);
      *dst = fields[i].def;
      if (o != NULL)
        ret = wrapped (jsonx_get_u64 (dst, o, fields[i].key, false, fields[i].min, fields[i].max,
                                      "serve", err),
                       L, err);
    }
  if (ret < 0)
    return ret;
  if (o != NULL && json_object_get (o, "name") != NULL
      && !json_is_null (json_object_get (o, "name")))
    {
      ret = wrapped (jsonx_get_str (&s, o, "name", true, 128, "serve", err), L, err);
      if (ret < 0)
        return ret;
      /* the name is the queue consumer: the queue's grammar */
      if (*s == '\0')
        return bad_value (err, L->what, "serve.name", "is empty", s);
      if (queue_consumer_problem (s) != NULL)
        return bad_value (err, L->what, "serve.name", "may only hold letters, digits and ._:@-",
                          s);
      if ((c->serve.name = strdup (s)) == NULL)
        return nomem (err);
    }
  if (o != NULL && json_object_get (o, "metrics") != NULL
      && !json_is_null (json_object_get (o, "metrics")))
    {
      ret = wrapped (jsonx_get_str (&s, o, "metrics", true, 64, "serve", err), L, err);
      if (ret < 0)
        return ret;
      if (strchr (s, ':') == NULL)
        return bad_value (err, L->what, "serve.metrics", "must be HOST:PORT", s);
      if ((c->serve.metrics = strdup (s)) == NULL)
        return nomem (err);
    }
  if (o != NULL && json_object_get (o, "pool") != NULL)
    return load_pool (c, L, json_object_get (o, "pool"), err);
  return 0;
}

/* --- jail (self-contained: jail.h, docs/security.md) -------------------------------- */

#define JAIL_UID_COUNT_MAX (UINT32_C (1) << 24)

static int
load_jail (struct runner_config *c, const struct loader *L, bvm_error_t *err)
{
  static const char *const keys[] = { "enabled", "uid_range", "lock_dir", NULL };
  const json_t *o = NULL;
  json_t *range = NULL;
  cleanup_free char *mode = NULL;
  char *lock_dir = NULL;
  int ret;

  ret = get_section (&o, L, "jail", keys, err);
  if (ret == 0)
    ret = get_string (&mode, L, o, "jail", "enabled", "auto", 4096, err);
  if (ret < 0)
    return ret;
  if (jail_mode_parse (&c->jail.mode, mode) < 0)
    return bad_value (err, L->what, "jail.enabled", "must be `auto`, `on` or `off`", mode);

  c->jail.uid_first = JAIL_UID_FIRST_DEFAULT;
  c->jail.uid_count = JAIL_UID_COUNT_DEFAULT;
  if (o != NULL
      && (ret = wrapped (jsonx_get_typed (&range, o, "uid_range", JSON_ARRAY, false, "jail", err),
                         L, err))
             < 0)
    return ret;
  if (range != NULL)
    {
      json_t *f = json_array_get (range, 0), *n = json_array_get (range, 1);
      json_int_t first, count;

      if (json_array_size (range) != 2 || !json_is_integer (f) || !json_is_integer (n))
        return bad (err, L->what, "jail.uid_range", "must be [first, count]");
      first = json_integer_value (f);
      count = json_integer_value (n);
      /* below 1000 are system accounts; 65534 is `nobody`, shared by many
       * daemons; (uid_t) -1 means "no change" to setresuid */
      if (first < 1000 || count < 1 || count > (json_int_t) JAIL_UID_COUNT_MAX
          || first + count - 1 > (json_int_t) UINT32_MAX - 1)
        return bad (err, L->what, "jail.uid_range",
                    "must be [first, count] with first >= 1000, count 1 to %u, and "
                    "first + count - 1 below 4294967295",
                    (unsigned) JAIL_UID_COUNT_MAX);
      if (first <= 65535 && first + count - 1 >= 65534)
        return bad (err, L->what, "jail.uid_range", "must not contain 65534 (`nobody`) or 65535");
      c->jail.uid_first = (uint32_t) first;
      c->jail.uid_count = (uint32_t) count;
    }
  /* jail_settings' lock_dir is const for jail.c; the config owns it */
  ret = get_path (&lock_dir, L, o, "jail", "lock_dir", JAIL_LOCK_DIR_DEFAULT, err);
  c->jail.lock_dir = lock_dir;
  return ret;
}

static json_t *
jail_to_json (const struct jail_settings *j)
{
  return json_pack ("{s:s, s:[I, I], s:s}", "enabled", jail_mode_name (j->mode), "uid_range",
                    (json_int_t) j->uid_first, (json_int_t) j->uid_count, "lock_dir", j->lock_dir);
}

int
config_load (struct runner_config **out, const char *path, bvm_error_t *err)
{
  static const char *const keys[] = { "home",      "work_dir",     "log_dir",    "cache_dir",
                                      "state_dir", "artifacts",    "registry",   "images",
                                      "vm",        "limits",       "defaults",   "policies",
                                      "queue",     "secrets",      "serve",      "jail",
                                      "webhook",   "apps",         "egress",     "checkout",
                                      "attest",    "token_server", "dockerfile", NULL };
  cleanup_json json_t *doc = NULL;
  cleanup_config struct runner_config *c = NULL;
  cleanup_free char *what = NULL;
  struct loader L;
  int ret;

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return nomem (err);
  if (path != NULL)
    {
      cleanup_free char *data = NULL;
      size_t len = 0;
      char shown[JOB__SHOW_SIZE];

      if (asprintf (&what, "`%s`", job__show (shown, sizeof shown, path)) < 0)
        {
          what = NULL;
          return nomem (err);
        }
      ret = fs_read_file (&data, &len, path, CONFIG_MAX_BYTES, err);
      if (ret < 0)
        return bvm_error_wrap (err, "loading the runner config");
      ret = jsonx_parse_object (&doc, data, len, CONFIG_MAX_BYTES, what, NULL, err);
      if (ret < 0)
        return ret;
      ret = jsonx_check_keys (doc, keys, "", err);
      if (ret < 0)
        return bvm_error_wrap (err, "%s", what);
      if ((c->path = strdup (path)) == NULL)
        return nomem (err);
    }
  else
    {
      doc = json_object ();
      what = strdup ("built-in defaults");
      if (doc == NULL || what == NULL)
        return nomem (err);
    }
  L.what = what;
  L.doc = doc;

  ret = load_dirs (c, &L, err);
  if (ret == 0)
    ret = load_artifacts_and_queue (c, &L, err);
  if (ret == 0)
    ret = load_registry (c, &L, err);
  if (ret == 0)
    ret = load_images_vm (c, &L, err);
  if (ret == 0)
    ret = load_limits (c, &L, err);
  if (ret == 0)
    ret = load_policies (c, &L, err);
  if (ret == 0)
    ret = load_secrets (c, &L, err);
  if (ret == 0)
    ret = load_attest (c, &L, err);
  if (ret == 0)
    ret = load_serve (c, &L, err);
  if (ret == 0)
    ret = load_jail (c, &L, err);
  if (ret == 0)
    ret = load_webhook (c, &L, err);
  if (ret == 0)
    ret = load_token_server (c, &L, err);
  if (ret == 0)
    ret = load_apps (c, &L, err);
  if (ret == 0)
    ret = egress_settings_load (&c->egress, json_object_get (L.doc, "egress"), L.what, err);
  if (ret == 0)
    ret = load_checkout (c, &L, err);
  if (ret == 0)
    ret = load_dockerfile (c, &L, err);
  if (ret < 0)
    return ret;
  *out = steal_pointer (&c);
  return 0;
}

/* --- serialization --------------------------------------------------------------------- */

static int
set_s (json_t *o, const char *k, const char *v)
{
  return json_object_set_new (o, k, v ? json_string (v) : json_null ());
}

static int
set_u (json_t *o, const char *k, uint64_t v)
{
  return json_object_set_new (o, k, json_integer ((json_int_t) v));
}

static json_t *
strv_to_json (char *const *v, size_t n)
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

/* the `webhook` and `apps` sections into o; -1 on ENOMEM */
static int
webhook_apps_to_json (json_t *o, const struct runner_config *c)
{
  const struct config_webhook *w = &c->webhook;
  json_t *apps = json_array ();
  int r = 0;

  r |= json_object_set_new (o, "webhook",
                            json_pack ("{s:s, s:I, s:I, s:I, s:I}", "listen", w->listen,
                                       "max_body_bytes", (json_int_t) w->max_body_bytes,
                                       "max_connections", (json_int_t) w->max_connections,
                                       "timeout_seconds", (json_int_t) w->timeout_seconds,
                                       "replay_window", (json_int_t) w->replay_window));
  r |= json_object_set_new (o, "apps", apps);
  for (size_t i = 0; r == 0 && i < c->n_apps; i++)
    {
      const struct config_app *a = &c->apps[i];
      r |= json_array_append_new (apps,
                                  json_pack ("{s:s, s:s, s:o, s:o, s:s}", "app", a->app, "repo",
                                             a->repo, "match", strv_to_json (a->match, a->n_match),
                                             "branches", strv_to_json (a->branches, a->n_branches),
                                             "secret_file", a->secret_file));
    }
  return r != 0 ? -1 : 0;
}

json_t *
config_to_json (const struct runner_config *c)
{
  static const char *const accel[] = { "auto", "kvm", "tcg" };
  cleanup_json json_t *o = json_object ();
  json_t *reg = json_object (), *img = json_object (), *vm = json_object ();
  json_t *lim = json_object (), *def = json_object (), *pol = json_object ();
  json_t *sec = json_object ();
  json_t *att = json_object ();
  json_t *srv = json_object ();
  json_t *tags = json_array ();
  int r = 0;

  if (o == NULL)
    {
      json_decref (reg), json_decref (img), json_decref (vm);
      json_decref (lim), json_decref (def), json_decref (pol), json_decref (tags);
      json_decref (sec);
      json_decref (att);
      json_decref (srv);
      return NULL;
    }
  /* set_new takes the references even on failure (and fails on NULL) */
  r |= json_object_set_new (o, "registry", reg);
  r |= json_object_set_new (o, "images", img);
  r |= json_object_set_new (o, "vm", vm);
  r |= json_object_set_new (o, "limits", lim);
  r |= json_object_set_new (o, "defaults", def);
  r |= json_object_set_new (o, "policies", pol);
  r |= json_object_set_new (o, "secrets", sec);
  r |= json_object_set_new (o, "attest", att);
  r |= json_object_set_new (o, "serve", srv);
  if (reg != NULL)
    r |= json_object_set_new (reg, "extra_tags", tags);
  else
    json_decref (tags);
  if (r != 0)
    return NULL;

  r |= set_s (o, "home", c->home);
  r |= set_s (o, "work_dir", c->work_dir);
  r |= set_s (o, "log_dir", c->log_dir);
  r |= set_s (o, "cache_dir", c->cache_dir);
  r |= set_s (o, "state_dir", c->state_dir);
  r |= set_s (o, "artifacts", c->artifacts);
  r |= set_s (o, "queue", c->queue);
  r |= set_s (reg, "url", c->registry.url);
  r |= set_s (reg, "credentials", c->registry.credentials);
  r |= set_s (reg, "job_tickets", c->registry.job_tickets);
  r |= set_s (reg, "repository", c->registry.repository);
  r |= set_s (reg, "tag", c->registry.tag);
  for (size_t i = 0; i < c->registry.n_extra_tags; i++)
    r |= json_array_append_new (tags, json_string (c->registry.extra_tags[i]));
  r |= set_s (img, "dir", c->images.dir);
  r |= set_s (img, "default_profile", c->images.default_profile);
  r |= set_s (vm, "driver", c->vm.driver);
  r |= set_s (vm, "accel", accel[c->vm.accel]);
  r |= set_s (vm, "qemu", c->vm.qemu);
  r |= set_u (vm, "boot_timeout", c->vm.boot_timeout);
  r |= json_object_set_new (vm, "early_boot", json_boolean (c->vm.early_boot));
  r |= set_u (lim, "max_vcpus", c->limits.max_vcpus);
  r |= set_u (lim, "max_memory_mib", c->limits.max_memory_mib);
  r |= set_u (lim, "max_disk_mib", c->limits.max_disk_mib);
  r |= set_u (lim, "max_build_seconds", c->limits.max_build_seconds);
  r |= set_u (lim, "max_output_bytes", c->limits.max_output_bytes);
  r |= set_u (lim, "max_log_bytes", c->limits.max_log_bytes);
  r |= set_u (lim, "max_source_bytes", c->limits.max_source_bytes);
  r |= set_u (lim, "max_source_entries", c->limits.max_source_entries);
  r |= set_u (lim, "max_checkout_seconds", c->limits.max_checkout_seconds);
  r |= set_u (lim, "max_worker_memory_mib", c->limits.max_worker_memory_mib);
  r |= set_u (lim, "max_artifacts", c->limits.max_artifacts);
  r |= set_u (def, "vcpus", c->defaults.vcpus);
  r |= set_u (def, "memory_mib", c->defaults.memory_mib);
  r |= set_u (def, "disk_mib", c->defaults.disk_mib);
  r |= set_u (def, "build_seconds", c->defaults.build_seconds);
  r |= set_s (pol, "role", c->policies.role);
  r |= set_s (pol, "boundary", c->policies.boundary);
  r |= set_s (sec, "dir", c->secrets.dir);
  r |= set_s (sec, "master_key", c->secrets.master_key);
  r |= json_object_set_new (sec, "at_rest", json_boolean (c->secrets.at_rest));
  r |= set_s (att, "key", c->attest.key);
  r |= set_s (att, "builder_id", c->attest.builder_id);
  r |= json_object_set_new (srv, "name",
                            c->serve.name ? json_string (c->serve.name) : json_null ());
  r |= set_u (srv, "concurrency", c->serve.concurrency);
  r |= set_u (srv, "lease_seconds", c->serve.lease_seconds);
  r |= set_u (srv, "max_attempts", c->serve.max_attempts);
  r |= set_u (srv, "grace_seconds", c->serve.grace_seconds);
  r |= set_u (srv, "job_seconds", c->serve.job_seconds);
  r |= json_object_set_new (srv, "metrics",
                            c->serve.metrics ? json_string (c->serve.metrics) : json_null ());
  r |= set_u (srv, "pool_max_age_seconds", c->serve.pool_max_age_seconds);
  {
    json_t *pool = json_array ();
    for (size_t i = 0; pool != NULL && i < c->serve.n_pool; i++)
      {
        /* the fields left to the defaults stay out: 0 is no valid value */
        const struct config_pool_shape *sh = &c->serve.pool[i];
        json_t *e = json_pack ("{s:I}", "size", (json_int_t) sh->size);
        if (e != NULL && sh->profile)
          r |= set_s (e, "profile", sh->profile);
        if (e != NULL && sh->vcpus)
          r |= set_u (e, "vcpus", sh->vcpus);
        if (e != NULL && sh->memory_mib)
          r |= set_u (e, "memory_mib", sh->memory_mib);
        r |= json_array_append_new (pool, e);
      }
    r |= json_object_set_new (srv, "pool", pool);
  }
  r |= json_object_set_new (o, "jail", jail_to_json (&c->jail));
  r |= json_object_set_new (o, "egress", egress_settings_to_json (&c->egress));
  {
    json_t *a = json_array ();
    for (size_t i = 0;
         a != NULL && c->checkout.allow_addresses_text && c->checkout.allow_addresses_text[i]; i++)
      json_array_append_new (a, json_string (c->checkout.allow_addresses_text[i]));
    r |= json_object_set_new (o, "checkout", json_pack ("{s:o?}", "allow_addresses", a));
  }
  {
    const struct regtoken_settings *t = &c->token_server;
    r |= json_object_set_new (o, "token_server",
                              json_pack ("{s:s, s:s?, s:s?, s:s, s:s, s:I, s:I, s:I}", "listen",
                                         t->listen, "signing_key", t->signing_key, "ticket_key",
                                         t->ticket_key, "issuer", t->issuer, "service", t->service,
                                         "token_seconds", (json_int_t) t->token_seconds,
                                         "max_connections", (json_int_t) t->max_connections,
                                         "timeout_seconds", (json_int_t) t->timeout_seconds));
  }
  {
    json_t *map = json_object (), *df;
    for (size_t i = 0; map != NULL && i < c->dockerfile.n_from_map; i++)
      {
        const struct config_from_map_entry *e = &c->dockerfile.from_map[i];
        char *v = NULL;
        if (asprintf (&v, "%s%s%s", e->repository, e->tag ? ":" : "", e->tag ? e->tag : "") < 0)
          v = NULL;
        r |= json_object_set_new (map, e->key, v ? json_string (v) : NULL);
        free (v);
      }
    df = json_pack ("{s:o?, s:o?}", "from_map", map, "local_prefixes",
                    strv_to_json (c->dockerfile.local_prefixes, c->dockerfile.n_local_prefixes));
    r |= json_object_set_new (o, "dockerfile", df);
  }
  if (r != 0 || webhook_apps_to_json (o, c) < 0)
    return NULL;
  return steal_pointer (&o);
}
