/* test_job.c - deploy requests: every field, every rule, every document-level attack */
#include "support.h"

#include "job.h"
#include "jsonx.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
static const char base_doc[] = "{\"id\":\"d-1\",\"app\":\"hello\","
                               "\"repo\":\"https://git.example.com/org/hello.git\","
                               "\"commit\":\"" COMMIT "\",\"ref\":\"refs/heads/main\"}";

/* The base request with `field` set to the JSON text `value` (NULL: removed). */
static char *
with_field (const char *field, const char *value)
{
  json_t *doc = json_loads (base_doc, 0, NULL);
  char *s;

  assert_non_null (doc);
  if (value == NULL)
    json_object_del (doc, field);
  else
    {
      json_error_t jerr;
      json_t *v = json_loads (value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
      if (v == NULL)
        fail_msg ("bad test value %s: %s", value, jerr.text);
      json_object_set_new (doc, field, v);
    }
  s = json_dumps (doc, JSON_COMPACT);
  json_decref (doc);
  assert_non_null (s);
  return s;
}

static char *
repeat (char c, size_t n)
{
  char *s = malloc (n + 1);
  assert_non_null (s);
  memset (s, c, n);
  s[n] = '\0';
  return s;
}

static char *
quoted (const char *prefix, char c, size_t n)
{
  char *r = repeat (c, n), *s = NULL;
  assert_true (asprintf (&s, "\"%s%s\"", prefix, r) > 0);
  free (r);
  return s;
}

static void
expect_ok (const char *json)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  int r = job_parse (&j, json, strlen (json), &err);
  if (r < 0)
    fail_msg ("expected %s to parse: %s", json, bvm_error_msg (&err));
  assert_non_null (j);
  job_free (j);
}

static void
expect_fail (const char *json, size_t len, const char *needle)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  int r = job_parse (&j, json, len, &err);
  if (r >= 0)
    fail_msg ("expected %.300s to fail with \"%s\"", json, needle);
  assert_null (j);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\" (input %.300s)", bvm_error_msg (&err), needle,
              json);
  if (strncmp (bvm_error_msg (&err), "deploy request", 14) != 0)
    fail_msg ("error \"%s\" does not name the document", bvm_error_msg (&err));
  bvm_error_free (&err);
}

static void
test_minimal_and_full (void **state)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  const char full[]
      = "{\"id\":\"gh-1234.5_x\",\"app\":\"web-frontend\",\"repo\":\"file:///srv/git/web.git\","
        "\"commit\":\"" COMMIT "\",\"ref\":\"refs/tags/v1.2.3\",\"trigger\":\"webhook\","
        "\"delivery\":\"72d3162e-cc78-11e3-81ab-4c9367dc0958\","
        "\"requested_at\":\"2026-11-26T11:34:54.123+01:00\",\"requested_by\":\"Zoë <z@example.org>\"}";
  (void) state;

  assert_ok (job_parse (&j, base_doc, strlen (base_doc), &err), &err);
  assert_string_equal (j->id, "d-1");
  assert_string_equal (j->app, "hello");
  assert_string_equal (j->repo, "https://git.example.com/org/hello.git");
  assert_string_equal (j->commit, COMMIT);
  assert_string_equal (j->ref, "refs/heads/main");
  assert_string_equal (j->trigger, "manual");
  assert_null (j->delivery);
  assert_null (j->requested_at);
  assert_null (j->requested_by);
  job_free (j);

  assert_ok (job_parse (&j, full, strlen (full), &err), &err);
  assert_string_equal (j->trigger, "webhook");
  assert_string_equal (j->delivery, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
  assert_string_equal (j->requested_at, "2026-11-26T11:34:54.123+01:00");
  assert_string_equal (j->requested_by, "Zoë <z@example.org>");

  /* to_json and back gives the same request */
  {
    json_t *o = job_to_json (j);
    char *s = json_dumps (o, JSON_COMPACT);
    struct job_request *k = NULL;
    assert_ok (job_parse (&k, s, strlen (s), &err), &err);
    assert_string_equal (k->requested_by, j->requested_by);
    assert_string_equal (k->ref, j->ref);
    assert_string_equal (json_string_value (json_object_get (o, "trigger")), "webhook");
    job_free (k);
    free (s);
    json_decref (o);
  }
  job_free (j);

  /* optional fields are absent from the JSON when unset */
  assert_ok (job_parse (&j, base_doc, strlen (base_doc), &err), &err);
  {
    json_t *o = job_to_json (j);
    assert_null (json_object_get (o, "delivery"));
    assert_string_equal (json_string_value (json_object_get (o, "trigger")), "manual");
    json_decref (o);
  }
  job_free (j);
}

struct field_case
{
  const char *field;
  const char *value; /* JSON text; NULL = remove the field */
  const char *needle;
};

static const struct field_case good_values[] = {
  { "id", "\"a\"", NULL },
  { "id", "\"A.b_c-9\"", NULL },
  { "app", "\"a\"", NULL },
  { "app", "\"0-app--x\"", NULL },
  { "repo", "\"/srv/git/hello.git\"", NULL },
  { "repo", "\"/srv/git/my@repo\"", NULL },
  { "repo", "\"file:///srv/git/hello\"", NULL },
  { "repo", "\"http://127.0.0.1:8080/hello.git\"", NULL },
  { "repo", "\"https://git.example.com/org/hello.git?x=1#frag\"", NULL },
  { "repo", "\"http://[::1]:3000/hello\"", NULL },
  { "repo", "\"https://host\"", NULL },
  { "ref", "\"refs/heads/feature/x-y_z\"", NULL },
  { "ref", "\"refs/tags/v1.0\"", NULL },
  { "ref", "\"refs/pull/12/head\"", NULL },
  { "ref", "\"refs/heads/a.b\"", NULL },
  { "trigger", "\"api\"", NULL },
  { "trigger", "\"manual\"", NULL },
  { "delivery", "\"abc:123\"", NULL },
  { "requested_at", "\"2024-02-29T23:59:60Z\"", NULL },
  { "requested_at", "\"2026-01-01t00:00:00.5-05:30\"", NULL },
  { "requested_by", "\"alice\"", NULL },
};

static const struct field_case bad_values[] = {
  /* wrong types */
  { "id", "1", "field `id` must be a string, not an integer" },
  { "app", "null", "field `app` must be a string, not null" },
  { "repo", "[\"x\"]", "field `repo` must be a string, not an array" },
  { "commit", "{}", "field `commit` must be a string, not an object" },
  { "ref", "true", "field `ref` must be a string, not a boolean" },
  { "trigger", "5", "field `trigger` must be a string" },
  { "delivery", "1.5", "field `delivery` must be a string, not a number" },
  { "requested_at", "1700000000", "field `requested_at` must be a string" },
  { "requested_by", "false", "field `requested_by` must be a string" },
  /* missing */
  { "id", NULL, "missing required field `id`" },
  { "app", NULL, "missing required field `app`" },
  { "repo", NULL, "missing required field `repo`" },
  { "commit", NULL, "missing required field `commit`" },
  { "ref", NULL, "missing required field `ref`" },
  /* id */
  { "id", "\"\"", "field `id` must match" },
  { "id", "\"-x\"", "field `id` must match" },
  { "id", "\".x\"", "field `id` must match" },
  { "id", "\"a b\"", "field `id` must match" },
  { "id", "\"a/b\"", "field `id` must match" },
  { "id", "\"a\\u0000b\"", "not valid JSON" },
  /* app */
  { "app", "\"Hello\"", "field `app` must match ^[a-z0-9][a-z0-9-]{0,62}$, got `Hello`" },
  { "app", "\"-a\"", "field `app` must match" },
  { "app", "\"a_b\"", "field `app` must match" },
  { "app", "\"a.b\"", "field `app` must match" },
  { "app", "\"\"", "field `app` must match" },
  { "app", "\"../x\"", "field `app` must match" },
  /* commit */
  { "commit", "\"main\"",
    "deploy request: field `commit` must be 40 lowercase hex digits (a full commit id), got `main`" },
  { "commit", "\"0123456789ABCDEF0123456789abcdef01234567\"", "write the commit id in lowercase" },
  { "commit", "\"0123456789abcdef0123456789abcdef0123456\"",
    "field `commit` must be 40 lowercase" },
  { "commit", "\"0123456789abcdef0123456789abcdef012345678\"", "field `commit` must be 40" },
  { "commit", "\"0123456789abcdef0123456789abcdef0123456g\"", "field `commit` must be 40" },
  { "commit", "\"HEAD~1\"", "got `HEAD~1`" },
  { "commit", "\"refs/heads/main\"", "field `commit`" },
  { "commit", "\"@{upstream}\"", "field `commit`" },
  { "commit", "\"\"", "field `commit`" },
  /* ref */
  { "ref", "\"main\"", "field `ref` must start with `refs/`" },
  { "ref", "\"heads/main\"", "field `ref` must start with `refs/`" },
  { "ref", "\"refs/\"", "field `ref` names no ref" },
  { "ref", "\"refs/heads/a..b\"", "field `ref` must not contain `..`" },
  { "ref", "\"refs/heads/a@{1}\"", "field `ref` must not contain `@{`" },
  { "ref", "\"refs/heads/a b\"", "field `ref` must not contain space" },
  { "ref", "\"refs/heads/a~1\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a^\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a:b\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a?\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a*\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a[b\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a\\\\b\"", "field `ref` must not contain space or any of" },
  { "ref", "\"refs/heads/a\\u0001\"", "field `ref` must not contain control characters" },
  { "ref", "\"refs/heads/a\\u007f\"", "field `ref` must not contain control characters" },
  { "ref", "\"refs/heads/.hidden\"", "component starting with `.`" },
  { "ref", "\"refs/.x/y\"", "component starting with `.`" },
  { "ref", "\"refs/heads/x.lock\"", "ending with `.lock`" },
  { "ref", "\"refs/heads/x.lock/y\"", "ending with `.lock`" },
  { "ref", "\"refs/heads//x\"", "must not contain `//`" },
  { "ref", "\"refs/heads/x/\"", "must not end with `/`" },
  { "ref", "\"refs/heads/x.\"", "must not end with `.`" },
  { "ref", "\"refs/heads/@\"", "component `@`" },
  /* stricter than git: the ref is a role variable (fuzz_job found these) */
  { "ref", "\"refs/heads/caf\\u00e9\"", "must be ASCII without any of $ { }" },
  { "ref", "\"refs/$heads/main\"", "must be ASCII without any of $ { }" },
  { "ref", "\"refs/heads/${job:App}\"", "must be ASCII without any of $ { }" },
  { "ref", "\"refs/heads/a`b\"", "must be ASCII without any of $ { }" },
  /* repo */
  { "repo", "\"ssh://git@host/x\"", "field `repo` must be an absolute path, a `file:///` URL" },
  { "repo", "\"git://host/x\"", "other transports such as ssh, git and ext:: are refused" },
  { "repo", "\"ext::sh -c touch% /tmp/pwned\"", "field `repo` must not contain whitespace" },
  { "repo", "\"ext::sh\"", "other transports" },
  { "repo", "\"git@github.com:org/x.git\"", "other transports" },
  { "repo", "\"--upload-pack=touch /tmp/x\"", "field `repo`" },
  { "repo", "\"HTTPS://host/x\"", "other transports" },
  { "repo", "\"relative/path\"", "other transports" },
  { "repo", "\"\"", "field `repo` must not be empty" },
  { "repo", "\"https://user:pass@host/x\"", "field `repo` must not contain credentials" },
  { "repo", "\"https://token@host/x\"", "must not contain credentials" },
  { "repo", "\"http://host/x y\"", "field `repo` must not contain whitespace" },
  { "repo", "\"http://host/x\\ty\"", "field `repo` must not contain control characters" },
  { "repo", "\"http://host/x\\ny\"", "must not contain control characters" },
  { "repo", "\"https://h\\u00e9.example/x\"", "field `repo` must be ASCII" },
  { "repo", "\"https://evil.example\\\\@good.example/\"", "must not contain `\\`" },
  { "repo", "\"file://host/srv/x\"", "no host in file URLs" },
  { "repo", "\"file:///srv/%2e%2e/etc\"", "percent-encoding" },
  { "repo", "\"/srv/git/../../etc\"", "must not contain `..` path components" },
  { "repo", "\"file:///srv/..\"", "must not contain `..`" },
  { "repo", "\"https://\"", "field `repo` has no host" },
  { "repo", "\"https:///x\"", "has no host" },
  { "repo", "\"http://ho_st/x\"", "has an invalid host name" },
  { "repo", "\"http://host:0/x\"", "has an invalid port" },
  { "repo", "\"http://host:65536/x\"", "has an invalid port" },
  { "repo", "\"http://host:/x\"", "has an invalid port" },
  { "repo", "\"http://host:8a/x\"", "has an invalid port" },
  { "repo", "\"http://[::1/x\"", "unterminated IPv6" },
  { "repo", "\"http://[::1]x/\"", "has an invalid host" },
  /* optional fields */
  { "trigger", "\"cron\"",
    "field `trigger` must be one of `manual`, `webhook`, `api`, got `cron`" },
  { "trigger", "\"\"", "field `trigger` must be one of" },
  { "delivery", "\"\"", "field `delivery` must match" },
  { "delivery", "\"a b\"", "field `delivery` must match" },
  { "requested_at", "\"yesterday\"", "field `requested_at` must be an RFC 3339 date-time" },
  { "requested_at", "\"2026-13-01T00:00:00Z\"", "field `requested_at`" },
  { "requested_at", "\"2023-02-29T00:00:00Z\"", "field `requested_at`" },
  { "requested_at", "\"2026-04-31T00:00:00Z\"", "field `requested_at`" },
  { "requested_at", "\"2026-11-26 11:34:54Z\"", "field `requested_at`" },
  { "requested_at", "\"2026-11-26T11:34:54\"", "field `requested_at`" },
  { "requested_at", "\"2026-11-26T24:00:00Z\"", "field `requested_at`" },
  { "requested_at", "\"2026-11-26T11:34:54.Z\"", "field `requested_at`" },
  { "requested_at", "\"2026-11-26T11:34:54+0100\"", "field `requested_at`" },
  { "requested_by", "\"\"", "field `requested_by` must be 1 to 256 bytes" },
  { "requested_by", "\"a\\nb\"",
    "field `requested_by` must be 1 to 256 bytes of text without control" },
  /* unknown fields */
  { "branch", "\"main\"", "deploy request: unknown field `branch`" },
  { "Commit", "\"" COMMIT "\"", "unknown field `Commit`" },
};

static void
test_field_table (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (good_values); i++)
    {
      char *doc = with_field (good_values[i].field, good_values[i].value);
      expect_ok (doc);
      free (doc);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad_values); i++)
    {
      char *doc = with_field (bad_values[i].field, bad_values[i].value);
      expect_fail (doc, strlen (doc), bad_values[i].needle);
      free (doc);
    }
}

static void
test_lengths (void **state)
{
  char *v, *doc;
  (void) state;

  v = quoted ("", 'a', 128);
  doc = with_field ("id", v);
  expect_ok (doc);
  free (doc), free (v);
  v = quoted ("", 'a', 129);
  doc = with_field ("id", v);
  expect_fail (doc, strlen (doc), "field `id` must match");
  free (doc), free (v);

  v = quoted ("", 'a', 63);
  doc = with_field ("app", v);
  expect_ok (doc);
  free (doc), free (v);
  v = quoted ("", 'a', 64);
  doc = with_field ("app", v);
  expect_fail (doc, strlen (doc), "field `app` must match");
  free (doc), free (v);

  v = quoted ("refs/heads/", 'r', 255 - 11);
  doc = with_field ("ref", v);
  expect_ok (doc);
  free (doc), free (v);
  v = quoted ("refs/heads/", 'r', 256 - 11);
  doc = with_field ("ref", v);
  expect_fail (doc, strlen (doc), "field `ref` is longer than 255 bytes");
  free (doc), free (v);

  v = quoted ("https://h/", 'p', 2048 - 10);
  doc = with_field ("repo", v);
  expect_ok (doc);
  free (doc), free (v);
  v = quoted ("https://h/", 'p', 2049 - 10);
  doc = with_field ("repo", v);
  expect_fail (doc, strlen (doc), "field `repo` is longer than 2048 bytes");
  free (doc), free (v);

  v = quoted ("", 'b', 256);
  doc = with_field ("requested_by", v);
  expect_ok (doc);
  free (doc), free (v);
  v = quoted ("", 'b', 257);
  doc = with_field ("requested_by", v);
  expect_fail (doc, strlen (doc), "field `requested_by`");
  free (doc), free (v);
}

static void
test_document_attacks (void **state)
{
  char buf[256];
  (void) state;

  /* duplicate keys: the second commit must not silently win */
  snprintf (buf, sizeof buf,
            "{\"id\":\"d\",\"app\":\"a\",\"repo\":\"/r\",\"commit\":\"%s\",\"commit\":\"%s\","
            "\"ref\":\"refs/heads/m\"}",
            COMMIT, "ffffffffffffffffffffffffffffffffffffffff");
  expect_fail (buf, strlen (buf), "duplicate");
  /* invalid UTF-8 */
  {
    char *doc = with_field ("requested_by", "\"XX\"");
    char *p = strstr (doc, "XX");
    p[0] = (char) 0xc3;
    p[1] = (char) 0x28;
    expect_fail (doc, strlen (doc), "not valid JSON");
    p[0] = (char) 0xed; /* a UTF-16 surrogate encoded in UTF-8 */
    p[1] = (char) 0xa0;
    expect_fail (doc, strlen (doc), "not valid JSON");
    free (doc);
  }
  /* NUL: escaped is refused by the parser, raw is refused as a control byte */
  {
    const char esc[] = "{\"id\":\"a\\u0000b\"}";
    const char raw[] = "{\"id\":\"a\0b\"}";
    expect_fail (esc, strlen (esc), "not valid JSON");
    expect_fail (raw, sizeof raw - 1, "not valid JSON");
  }
  /* oversized: refused before parsing */
  {
    size_t n = JOB_REQUEST_MAX_BYTES + 1;
    char *big = malloc (n + 1), *v;
    memset (big, ' ', n);
    big[n] = '\0';
    memcpy (big, base_doc, strlen (base_doc));
    expect_fail (big, n, "over the limit of 65536");
    free (big);
    /* a request exactly at the cap still parses */
    v = with_field ("requested_by", "\"x\"");
    big = calloc (1, JOB_REQUEST_MAX_BYTES + 1);
    memset (big, ' ', JOB_REQUEST_MAX_BYTES);
    memcpy (big, v, strlen (v));
    expect_ok (big);
    free (big), free (v);
  }
  /* deeply nested */
  {
    char deep[256];
    size_t o = (size_t) snprintf (deep, sizeof deep, "{\"id\":");
    for (int i = 0; i < 40; i++)
      deep[o++] = '[';
    for (int i = 0; i < 40; i++)
      deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = '\0';
    expect_fail (deep, o, "nests deeper than 32");
  }
  expect_fail ("[]", 2, "must be a JSON object");
  expect_fail ("\"x\"", 3, "not valid JSON");
  expect_fail ("", 0, "not valid JSON");
  expect_fail ("{} {}", 5, "not valid JSON");
  expect_fail ("{\"id\":\"d\",}", 11, "not valid JSON");
  expect_fail ("{}", 2, "missing required field `id`");
}

static void
test_untrusted_values_are_escaped (void **state)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  char *doc;
  const char *msg;
  (void) state;

  doc = with_field ("commit", "\"`$(reboot)`\\u001b[31m\"");
  assert_int_not_equal (job_parse (&j, doc, strlen (doc), &err), 0);
  msg = bvm_error_msg (&err);
  assert_non_null (strstr (msg, "got `\\x60$(reboot)\\x60\\x1b[31m`"));
  assert_null (strchr (msg, '\x1b'));
  bvm_error_free (&err);
  free (doc);

  /* long values are cut short */
  {
    char *v = quoted ("", 'z', 1000);
    doc = with_field ("commit", v);
    assert_int_not_equal (job_parse (&j, doc, strlen (doc), &err), 0);
    msg = bvm_error_msg (&err);
    assert_non_null (strstr (msg, "zzz...`"));
    assert_true (strlen (msg) < 300);
    bvm_error_free (&err);
    free (doc), free (v);
  }
}

static void
test_validators (void **state)
{
  (void) state;
  assert_null (job_app_id_problem ("a"));
  assert_null (job_app_id_problem ("hello-world-2"));
  assert_non_null (job_app_id_problem (NULL));
  assert_non_null (job_app_id_problem ("Hello"));
  assert_non_null (job_app_id_problem ("a b"));
  /* the cases of joblog.c's copy (joblog_app_id_ok) */
  assert_non_null (job_app_id_problem (""));
  assert_non_null (job_app_id_problem ("-a"));
  assert_non_null (job_app_id_problem ("a_b"));
  assert_non_null (job_app_id_problem ("a/b"));
  assert_non_null (job_app_id_problem (".."));
  assert_null (
      job_app_id_problem ("abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc"));
  assert_non_null (
      job_app_id_problem ("abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcd"));
  /* delivery ids, also what the webhook keeps of a delivery header */
  assert_null (job_delivery_problem ("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
  assert_null (job_delivery_problem ("a:b.c_d-e"));
  assert_non_null (job_delivery_problem (""));
  assert_non_null (job_delivery_problem (":a"));
  assert_non_null (job_delivery_problem ("a b"));
  assert_non_null (job_delivery_problem ("a/b"));
  {
    char d[JOB_DELIVERY_MAX + 2];
    memset (d, 'a', sizeof d - 1);
    d[sizeof d - 1] = '\0';
    assert_non_null (job_delivery_problem (d));
    d[JOB_DELIVERY_MAX] = '\0';
    assert_null (job_delivery_problem (d));
  }
  assert_null (job_id_problem ("X.y_z-1"));
  assert_non_null (job_id_problem ("_x"));
  assert_null (job_commit_problem (COMMIT));
  assert_non_null (job_commit_problem ("0123"));
  assert_null (job_ref_problem ("refs/heads/main"));
  assert_non_null (job_ref_problem ("HEAD"));
  assert_null (job_rfc3339_problem ("2000-02-29T00:00:00Z"));
  assert_non_null (job_rfc3339_problem ("1900-02-29T00:00:00Z"));
  {
    int64_t t = -1;
    assert_true (job_rfc3339_epoch ("1970-01-01T00:00:00Z", &t));
    assert_int_equal (t, 0);
    assert_true (job_rfc3339_epoch ("2026-11-26T11:30:15Z", &t));
    assert_int_equal (t, 1795692615);
    assert_true (job_rfc3339_epoch ("2026-11-26T12:30:15.123+01:00", &t));
    assert_int_equal (t, 1795692615);
    assert_true (job_rfc3339_epoch ("2015-05-05T19:40:15-04:00", &t));
    assert_int_equal (t, 1430869215);
    assert_true (job_rfc3339_epoch ("2000-03-01T00:00:00Z", &t));
    assert_int_equal (t, 951868800);
    assert_false (job_rfc3339_epoch ("2026-11-26 11:30:15Z", &t));
  }
}

static void
test_load_file (void **state)
{
  char *d = t_tmpdir ();
  char p[512];
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  (void) state;

  snprintf (p, sizeof p, "%s/req.json", d);
  t_write (p, base_doc);
  assert_ok (job_load_file (&j, p, &err), &err);
  assert_string_equal (j->app, "hello");
  job_free (j);
  j = NULL;

  t_write (p, "{\"id\":\"d\"}");
  assert_fails_with (job_load_file (&j, p, &err), &err, "missing required field `app`");
  assert_null (j);

  snprintf (p, sizeof p, "%s/missing.json", d);
  assert_fails_with (job_load_file (&j, p, &err), &err, "No such file");

  snprintf (p, sizeof p, "%s/big.json", d);
  {
    char *big = repeat (' ', JOB_REQUEST_MAX_BYTES + 10);
    t_write (p, big);
    free (big);
  }
  assert_fails_with (job_load_file (&j, p, &err), &err, "larger than 65536");
  t_tmpdir_free (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_minimal_and_full),
    cmocka_unit_test (test_field_table),
    cmocka_unit_test (test_lengths),
    cmocka_unit_test (test_document_attacks),
    cmocka_unit_test (test_untrusted_values_are_escaped),
    cmocka_unit_test (test_validators),
    cmocka_unit_test (test_load_file),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
