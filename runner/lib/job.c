/* job.c - deploy requests, see job.h and docs/schemas.md */
#include "job.h"
#include "fs.h"
#include "jsonx.h"
#include "caps.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHAT "deploy request"

const char *
job__show (char *buf, size_t size, const char *s)
{
  return str_escape (buf, size, s, strlen (s), 48);
}

static bool
is_hex_lower (char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool
is_digit (char c)
{
  return c >= '0' && c <= '9';
}

const char *
job_app_id_problem (const char *s)
{
  static const char why[] = "must match ^[a-z0-9][a-z0-9-]{0,62}$";
  size_t i;

  if (s == NULL || !is_lower_alnum (s[0]))
    return why;
  for (i = 1; s[i] != '\0'; i++)
    if (i >= JOB_APP_MAX || !(is_lower_alnum (s[i]) || s[i] == '-'))
      return why;
  return NULL;
}

const char *
job_id_problem (const char *s)
{
  static const char why[] = "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";
  size_t i;

  if (s == NULL || !is_alnum (s[0]))
    return why;
  for (i = 1; s[i] != '\0'; i++)
    if (i >= JOB_ID_MAX || !(is_alnum (s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
      return why;
  return NULL;
}

int
job_key (char buf[JOB_KEY_MAX + 1], const char *app, const char *id)
{
  buf[0] = '\0';
  if (job_app_id_problem (app) != NULL || job_id_problem (id) != NULL)
    return -1;
  snprintf (buf, JOB_KEY_MAX + 1, "%s%c%s", app, JOB_KEY_SEP, id);
  return 0;
}

bool
job_key_split (const char *key, char app[JOB_APP_MAX + 1], char id[JOB_ID_MAX + 1])
{
  char a[JOB_APP_MAX + 1];
  const char *sep;
  size_t n;

  if (key == NULL || (sep = strchr (key, JOB_KEY_SEP)) == NULL)
    return false;
  n = (size_t) (sep - key);
  if (n == 0 || n > JOB_APP_MAX)
    return false;
  memcpy (a, key, n);
  a[n] = '\0';
  if (job_app_id_problem (a) != NULL || job_id_problem (sep + 1) != NULL)
    return false;
  if (app != NULL)
    memcpy (app, a, n + 1);
  if (id != NULL)
    snprintf (id, JOB_ID_MAX + 1, "%s", sep + 1);
  return true;
}

const char *
job_key_problem (const char *s)
{
  return job_key_split (s, NULL, NULL) ? NULL : "must be `<app>+<id>`";
}

const char *
job_commit_problem (const char *s)
{
  static const char why[] = "must be 40 lowercase hex digits";
  size_t i;

  if (s == NULL)
    return why;
  for (i = 0; s[i] != '\0'; i++)
    if (i >= JOB_COMMIT_LEN || !is_hex_lower (s[i]))
      return why;
  return i == JOB_COMMIT_LEN ? NULL : why;
}

/* git-check-ref-format(1), plus our own "refs/" prefix and length cap. The
 * ref is passed to libgit2 and shown in logs, so anything git itself would
 * refuse is refused here, before it reaches either. */
static const char *
ref_problem (const char *s)
{
  size_t len = strlen (s);
  const char *comp;

  if (len > JOB_REF_MAX)
    return "is longer than 255 bytes";
  if (strncmp (s, "refs/", 5) != 0)
    return "must start with `refs/` (a full ref name such as `refs/heads/main`)";
  if (len == 5)
    return "names no ref after `refs/`";
  if (s[len - 1] == '/')
    return "must not end with `/`";
  if (s[len - 1] == '.')
    return "must not end with `.`";
  if (strstr (s, "//") != NULL)
    return "must not contain `//`";
  if (strstr (s, "..") != NULL)
    return "must not contain `..`";
  if (strstr (s, "@{") != NULL)
    return "must not contain `@{`";
  for (const char *p = s; *p; p++)
    {
      unsigned char c = (unsigned char) *p;
      if (c < 0x20 || c == 0x7f)
        return "must not contain control characters";
      if (strchr (" ~^:?*[\\", c) != NULL)
        return "must not contain space or any of ~ ^ : ? * [ \\";
      /* Stricter than git: the ref becomes ${job:Ref} in the job's role, and
       * role_mint refuses these bytes in a variable value (policies/README.md,
       * "Values are validated, not escaped"). Accepting them here let a valid
       * request fail only at lease time; found by tests/fuzz/fuzz_job.c
       * (corpus/job/crash-75f0191f...). */
      if (c >= 0x80 || strchr ("$`{}", c) != NULL)
        return "must be ASCII without any of $ { } or backticks (role policies refuse them)";
    }
  for (comp = s; comp != NULL;)
    {
      const char *slash = strchr (comp, '/');
      size_t n = slash ? (size_t) (slash - comp) : strlen (comp);
      if (comp[0] == '.')
        return "has a component starting with `.`";
      if (n >= 5 && memcmp (comp + n - 5, ".lock", 5) == 0)
        return "has a component ending with `.lock`";
      if (n == 1 && comp[0] == '@')
        return "has a component `@`";
      comp = slash ? slash + 1 : NULL;
    }
  return NULL;
}

const char *
job_ref_problem (const char *s)
{
  return s != NULL ? ref_problem (s) : "is missing";
}

static bool
digits_in (const char *s, size_t n, int min, int max, int *out)
{
  int v = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (!is_digit (s[i]))
        return false;
      v = v * 10 + (s[i] - '0');
    }
  if (v < min || v > max)
    return false;
  if (out)
    *out = v;
  return true;
}

const char *
job_rfc3339_problem (const char *s)
{
  static const char why[] = "must be an RFC 3339 date-time";
  static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
  int year, month, day;
  const char *p;

  if (s == NULL || strlen (s) > JOB_REQUESTED_AT_MAX || strlen (s) < 20)
    return why;
  /* YYYY-MM-DDTHH:MM:SS */
  if (!digits_in (s, 4, 0, 9999, &year) || s[4] != '-' || !digits_in (s + 5, 2, 1, 12, &month)
      || s[7] != '-' || !digits_in (s + 8, 2, 1, 31, &day) || (s[10] != 'T' && s[10] != 't')
      || !digits_in (s + 11, 2, 0, 23, NULL) || s[13] != ':' || !digits_in (s + 14, 2, 0, 59, NULL)
      || s[16] != ':' || !digits_in (s + 17, 2, 0, 60, NULL))
    return why;
  if (day > mdays[month - 1])
    return why;
  if (month == 2 && day == 29 && !((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
    return why;
  p = s + 19;
  if (*p == '.')
    {
      size_t n = 0;
      for (p++; is_digit (*p); p++)
        n++;
      if (n == 0 || n > 9)
        return why;
    }
  if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
    return NULL;
  if ((*p == '+' || *p == '-') && strlen (p) == 6 && digits_in (p + 1, 2, 0, 23, NULL)
      && p[3] == ':' && digits_in (p + 4, 2, 0, 59, NULL))
    return NULL;
  return why;
}

/* The repository URL reaches libgit2, which understands many transports. We
 * accept only local paths and plain http(s): ssh would need keys we do not
 * hand out, `ext::` runs commands, and credentials in a URL end up in logs
 * and job records. Refusing non-ASCII and backslashes keeps URL parsers
 * (ours, libgit2's, curl's) from disagreeing about where the host is. */
static const char *
repo_problem (const char *s)
{
  const char *path = NULL;
  size_t len = strlen (s);

  if (len == 0)
    return "must not be empty";
  if (len > JOB_REPO_MAX)
    return "is longer than 2048 bytes";
  for (const char *p = s; *p; p++)
    {
      unsigned char c = (unsigned char) *p;
      if (c < 0x20 || c == 0x7f)
        return "must not contain control characters";
      if (c == ' ')
        return "must not contain whitespace";
      if (c >= 0x80)
        return "must be ASCII (percent-encode other characters)";
      if (c == '\\')
        return "must not contain `\\`";
    }
  if (s[0] == '/')
    path = s;
  else if (strncmp (s, "file://", 7) == 0)
    {
      if (s[7] != '/')
        return "must be `file:///absolute/path` (no host in file URLs)";
      /* libgit2 percent-decodes file URLs; refusing `%` keeps the `..`
       * check below meaningful */
      if (strchr (s, '%') != NULL)
        return "must not use percent-encoding in a file URL";
      path = s + 7;
    }
  else if (strncmp (s, "http://", 7) == 0 || strncmp (s, "https://", 8) == 0)
    {
      const char *host = strstr (s, "://") + 3;
      size_t alen = strcspn (host, "/?#");

      if (memchr (host, '@', alen) != NULL)
        return "must not contain credentials (`user:password@`): configure them on the runner";
      return hostport_problem (host, alen);
    }
  else
    return "must be an absolute path, a `file:///` URL or an `http://` or `https://` URL "
           "(other transports such as ssh, git and ext:: are refused)";

  /* local paths: absolute and without `..`, so an allowlist of local roots
   * checked by prefix cannot be escaped */
  for (const char *comp = path; comp != NULL;)
    {
      const char *slash = strchr (comp, '/');
      size_t n = slash ? (size_t) (slash - comp) : strlen (comp);
      if (n == 2 && comp[0] == '.' && comp[1] == '.')
        return "must not contain `..` path components";
      comp = slash ? slash + 1 : NULL;
    }
  return NULL;
}

const char *
job_delivery_problem (const char *s)
{
  static const char why[] = "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";
  size_t i;
  if (!is_alnum (s[0]))
    return why;
  for (i = 1; s[i] != '\0'; i++)
    if (i >= JOB_DELIVERY_MAX
        || !(is_alnum (s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-' || s[i] == ':'))
      return why;
  return NULL;
}

static bool
printable_text (const char *s)
{
  /* UTF-8 is already valid (jansson checks); refuse only control bytes */
  for (; *s; s++)
    if ((unsigned char) *s < 0x20 || *s == 0x7f)
      return false;
  return true;
}

static int
invalid (bvm_error_t *err, const char *field, const char *why, const char *value)
{
  char shown[JOB__SHOW_SIZE];
  return bvm_error_code (err, BVM_E_INVALID, 0, WHAT ": field `%s` %s, got `%s`", field, why,
                         job__show (shown, sizeof shown, value));
}

void
job_free (struct job_request *j)
{
  if (j == NULL)
    return;
  free (j->id);
  free (j->app);
  free (j->repo);
  free (j->commit);
  free (j->ref);
  free (j->trigger);
  free (j->delivery);
  free (j->requested_at);
  free (j->requested_by);
  free (j);
}

static int
dup_field (char **dst, const char *src, bvm_error_t *err)
{
  if (src == NULL)
    return 0;
  *dst = strdup (src);
  if (*dst == NULL)
    return bvm_error (err, ENOMEM, WHAT);
  return 0;
}

int
job_parse (struct job_request **out, const char *json, size_t len, bvm_error_t *err)
{
  static const char *const keys[] = {
    "id",      "app",      "repo",         "commit",       "ref",
    "trigger", "delivery", "requested_at", "requested_by", NULL
  };
  cleanup_json json_t *doc = NULL;
  cleanup_job struct job_request *j = NULL;
  const char *id = NULL, *app = NULL, *repo = NULL, *commit = NULL, *ref = NULL;
  const char *trigger = "manual", *delivery = NULL, *at = NULL, *by = NULL;
  const char *why;
  int ret;

  ret = jsonx_parse_object (&doc, json, len, JOB_REQUEST_MAX_BYTES, WHAT, NULL, err);
  if (ret < 0)
    return ret;
  ret = jsonx_check_keys (doc, keys, "", err);
  if (ret == 0)
    {
      const struct jsonx_str_field fields[] = {
        { &id, "id", true, CAP_FIELD_READ },
        { &app, "app", true, CAP_FIELD_READ },
        { &repo, "repo", true, CAP_TEXT_READ },
        { &commit, "commit", true, CAP_FIELD_READ },
        { &ref, "ref", true, CAP_TEXT_READ },
        { &trigger, "trigger", false, CAP_FIELD_READ },
        { &delivery, "delivery", false, CAP_FIELD_READ },
        { &at, "requested_at", false, CAP_FIELD_READ },
        { &by, "requested_by", false, CAP_TEXT_READ },
      };
      ret = jsonx_get_strs (doc, fields, ARRAY_SIZE (fields), "", err);
    }
  if (ret < 0)
    return bvm_error_wrap (err, WHAT);

  if (job_id_problem (id) != NULL)
    return invalid (err, "id", "must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", id);
  if (job_app_id_problem (app) != NULL)
    return invalid (err, "app", "must match ^[a-z0-9][a-z0-9-]{0,62}$", app);
  if ((why = repo_problem (repo)) != NULL)
    return invalid (err, "repo", why, repo);
  if (job_commit_problem (commit) != NULL)
    {
      bool upper = strlen (commit) == JOB_COMMIT_LEN;
      for (size_t i = 0; upper && i < JOB_COMMIT_LEN; i++)
        if (!(is_hex_lower (commit[i]) || (commit[i] >= 'A' && commit[i] <= 'F')))
          upper = false;
      return invalid (err, "commit",
                      upper ? "must be 40 lowercase hex digits (write the commit id in lowercase)"
                            : "must be 40 lowercase hex digits (a full commit id)",
                      commit);
    }
  if ((why = ref_problem (ref)) != NULL)
    return invalid (err, "ref", why, ref);
  if (strcmp (trigger, "manual") != 0 && strcmp (trigger, "webhook") != 0
      && strcmp (trigger, "api") != 0)
    return invalid (err, "trigger", "must be one of `manual`, `webhook`, `api`", trigger);
  if (delivery != NULL && job_delivery_problem (delivery) != NULL)
    return invalid (err, "delivery", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", delivery);
  if (at != NULL && job_rfc3339_problem (at) != NULL)
    return invalid (err, "requested_at", "must be an RFC 3339 date-time", at);
  if (by != NULL
      && (strlen (by) == 0 || strlen (by) > JOB_REQUESTED_BY_MAX || !printable_text (by)))
    return invalid (err, "requested_by",
                    "must be 1 to 256 bytes of text without control characters", by);

  j = calloc (1, sizeof *j);
  if (j == NULL)
    return bvm_error (err, ENOMEM, WHAT);
  if (dup_field (&j->id, id, err) < 0 || dup_field (&j->app, app, err) < 0
      || dup_field (&j->repo, repo, err) < 0 || dup_field (&j->commit, commit, err) < 0
      || dup_field (&j->ref, ref, err) < 0 || dup_field (&j->trigger, trigger, err) < 0
      || dup_field (&j->delivery, delivery, err) < 0 || dup_field (&j->requested_at, at, err) < 0
      || dup_field (&j->requested_by, by, err) < 0)
    return -ENOMEM;
  *out = steal_pointer (&j);
  return 0;
}

int
job_load_file (struct job_request **out, const char *path, bvm_error_t *err)
{
  cleanup_free char *data = NULL;
  size_t len = 0;
  int ret;

  ret = fs_read_file (&data, &len, path, JOB_REQUEST_MAX_BYTES, err);
  if (ret < 0)
    return ret;
  ret = job_parse (out, data, len, err);
  if (ret < 0)
    return bvm_error_wrap (err, "`%s`", path);
  return 0;
}

static int
set_str (json_t *o, const char *key, const char *v)
{
  if (v == NULL)
    return 0;
  return json_object_set_new (o, key, json_string (v));
}

json_t *
job_to_json (const struct job_request *j)
{
  json_t *o = json_object ();

  if (o == NULL)
    return NULL;
  if (set_str (o, "id", j->id) < 0 || set_str (o, "app", j->app) < 0
      || set_str (o, "repo", j->repo) < 0 || set_str (o, "commit", j->commit) < 0
      || set_str (o, "ref", j->ref) < 0 || set_str (o, "trigger", j->trigger) < 0
      || set_str (o, "delivery", j->delivery) < 0
      || set_str (o, "requested_at", j->requested_at) < 0
      || set_str (o, "requested_by", j->requested_by) < 0)
    {
      json_decref (o);
      return NULL;
    }
  return o;
}

bool
job_rfc3339_epoch (const char *s, int64_t *out)
{
  int y = 0, mo = 1, d = 1, h = 0, mi = 0, sec = 0, oh = 0, om = 0;
  const char *p;
  int64_t days, era, yoe, doy, doe;

  if (job_rfc3339_problem (s) != NULL)
    return false;
  digits_in (s, 4, 0, 9999, &y);
  digits_in (s + 5, 2, 1, 12, &mo);
  digits_in (s + 8, 2, 1, 31, &d);
  digits_in (s + 11, 2, 0, 23, &h);
  digits_in (s + 14, 2, 0, 59, &mi);
  digits_in (s + 17, 2, 0, 60, &sec);
  for (p = s + 19; *p == '.' || is_digit (*p); p++)
    ;
  if (*p == '+' || *p == '-')
    {
      digits_in (p + 1, 2, 0, 23, &oh);
      digits_in (p + 4, 2, 0, 59, &om);
      if (*p == '-')
        oh = -oh, om = -om;
    }
  /* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
   * days_from_civil) */
  y -= mo <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  days = era * 146097 + doe - 719468;
  *out = days * 86400 + h * 3600 + mi * 60 + sec - (oh * 3600 + om * 60);
  return true;
}
