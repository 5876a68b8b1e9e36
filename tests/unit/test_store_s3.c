/* test_store_s3.c - the s3 backend's pure parts: the URL, object keys, the
 * SigV4 configuration, session policies and durations, STS replies, the key
 * file. (Requests against a real RADOS Gateway: tests/integration/t_s3_store.sh.) */
#include "support.h"

#include "buf.h"
#include "store.h"
#include "store_s3.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BASE                                                                                      \
  "//bkt/root/sub?endpoint=http://127.0.0.1:7480&region=eu-1&role=arn:aws:iam:::role/r&credentials=/etc/k"

static void
test_parse_location (void **state)
{
  struct s3_location l;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (s3_parse_location (&l, BASE, &err), &err);
  assert_string_equal (l.bucket, "bkt");
  assert_string_equal (l.root, "root/sub");
  assert_string_equal (l.endpoint, "http://127.0.0.1:7480");
  assert_string_equal (l.region, "eu-1");
  assert_string_equal (l.role, "arn:aws:iam:::role/r");
  assert_string_equal (l.credentials, "/etc/k");
  assert_null (l.sse);
  assert_int_equal (l.part_size, 8u << 20);
  assert_int_equal (l.session_max, 3600);
  s3_location_dispose (&l);

  /* no root, defaults, escapes, options */
  assert_ok (s3_parse_location (&l,
                                "//bkt?endpoint=https%3A%2F%2Fs3.example&role=arn:x&credentials=/k"
                                "&sse=AES256&owner=own&part_mb=16&session_max=900",
                                &err),
             &err);
  assert_string_equal (l.root, "");
  assert_string_equal (l.endpoint, "https://s3.example");
  assert_string_equal (l.region, "us-east-1");
  assert_string_equal (l.sse, "AES256");
  assert_string_equal (l.owner, "own");
  assert_int_equal (l.part_size, 16u << 20);
  assert_int_equal (l.session_max, 900);
  s3_location_dispose (&l);
  /* a trailing slash on the root is dropped */
  assert_ok (s3_parse_location (&l, "//bkt/r/?endpoint=http://h&role=arn:x&credentials=/k", &err),
             &err);
  assert_string_equal (l.root, "r");
  s3_location_dispose (&l);
}

static void
test_parse_location_refused (void **state)
{
  static const struct
  {
    const char *url, *needle;
  } bad[] = {
    { "bkt/x?endpoint=http://h&role=arn:x&credentials=/k", "want s3://" },
    { "//B_K?endpoint=http://h&role=arn:x&credentials=/k", "bad bucket" },
    { "//ab?endpoint=http://h&role=arn:x&credentials=/k", "bad bucket" },
    { "//bkt/../x?endpoint=http://h&role=arn:x&credentials=/k", "bad prefix" },
    { "//bkt/a//b?endpoint=http://h&role=arn:x&credentials=/k", "bad prefix" },
    { "//bkt/.staging?endpoint=http://h&role=arn:x&credentials=/k", "bad prefix" },
    { "//bkt/a*?endpoint=http://h&role=arn:x&credentials=/k", "bad prefix" },
    { "//bkt?role=arn:x&credentials=/k", "endpoint" },
    { "//bkt?endpoint=ftp://h&role=arn:x&credentials=/k", "endpoint" },
    { "//bkt?endpoint=http://u@h&role=arn:x&credentials=/k", "endpoint" },
    { "//bkt?endpoint=http://h/path&role=arn:x&credentials=/k", "endpoint" },
    { "//bkt?endpoint=http://h&credentials=/k", "role" },
    { "//bkt?endpoint=http://h&role=arn:x", "credentials" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=rel", "credentials" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&sse=md5", "sse" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&sse=aws:kms", "cannot be signed" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&owner=", "owner" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&part_mb=4", "part_mb" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&session_max=60", "session_max" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&bogus=1", "unknown parameter" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k&role=arn:y", "twice" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k%00x", "bad escape" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials=/k%2", "bad escape" },
    { "//bkt?endpoint=http://h&region=a%0Ab&role=arn:x&credentials=/k", "bad escape" },
    { "//bkt?endpoint=http://h&region=a%1Bb&role=arn:x&credentials=/k", "bad escape" },
    { "//bkt?endpoint=http://h&role=arn:x&credentials", "no value" },
    { "//bkt?endpoint=http://h&region=a:b&role=arn:x&credentials=/k", "region" },
  };
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct s3_location l;
      bvm_error_t err = NULL;
      if (s3_parse_location (&l, bad[i].url, &err) == 0)
        fail_msg ("`%s` was accepted", bad[i].url);
      if (strstr (bvm_error_msg (&err), bad[i].needle) == NULL)
        fail_msg ("`%s`: `%s` lacks `%s`", bad[i].url, bvm_error_msg (&err), bad[i].needle);
      bvm_error_free (&err);
    }
}

/* the store's spec goes to the s3 backend, which loads its key file */
static void
test_open_spec (void **state)
{
  struct store *s = NULL;
  bvm_error_t err = NULL;
  (void) state;
  assert_fails_with (store_open (&s,
                                 "s3://bkt?endpoint=http://h&role=arn:x&credentials=/nonexistent",
                                 &err),
                     &err, "/nonexistent");
  assert_fails_with (store_open (&s, "s3://bkt?endpoint=http://h", &err), &err, "role");
}

static void
test_object_url (void **state)
{
  struct s3_location l;
  bvm_error_t err = NULL;
  char *url;
  (void) state;

  assert_ok (s3_parse_location (&l, BASE, &err), &err);
  assert_ok (s3_object_url (&url, &l, "apps/a/c/bin/x", NULL, &err), &err);
  assert_string_equal (url, "http://127.0.0.1:7480/bkt/root/sub/apps/a/c/bin/x");
  free (url);
  /* hostile names: every byte that is not unreserved is escaped, so the
   * server sees literal characters, never a dot segment or a query */
  assert_ok (s3_object_url (&url, &l, "apps/a/c/%2e%2e/%2F..x/a b+c&d?e#f", "uploads=", &err),
             &err);
  assert_string_equal (url, "http://127.0.0.1:7480/bkt/root/sub/apps/a/c/%252e%252e/%252F..x/"
                            "a%20b%2Bc%26d%3Fe%23f?uploads=");
  free (url);
  /* unicode confusables of `..` (U+2024 twice, fullwidth full stops) stay bytes */
  assert_ok (s3_object_url (&url, &l, "apps/a/c/\xe2\x80\xa4\xe2\x80\xa4/\xef\xbc\x8e\xef\xbc\x8e",
                            NULL, &err),
             &err);
  assert_string_equal (url, "http://127.0.0.1:7480/bkt/root/sub/apps/a/c/%E2%80%A4%E2%80%A4/"
                            "%EF%BC%8E%EF%BC%8E");
  free (url);
  s3_location_dispose (&l);

  assert_ok (s3_parse_location (&l, "//bkt?endpoint=http://h&role=arn:x&credentials=/k", &err),
             &err);
  assert_ok (s3_object_url (&url, &l, "k", NULL, &err), &err);
  assert_string_equal (url, "http://h/bkt/k");
  free (url);
  s3_location_dispose (&l);
}

static void
test_uri_encode (void **state)
{
  struct buf b = BUF_INIT (64);
  (void) state;
  assert_int_equal (s3_uri_encode (&b, "a/b:c=~", false), 0);
  assert_string_equal (buf_cstr (&b), "a%2Fb%3Ac%3D~");
  buf_reset (&b);
  assert_int_equal (s3_uri_encode (&b, "a/b", true), 0);
  assert_string_equal (buf_cstr (&b), "a/b");
  buf_reset (&b);
  /* the cap holds */
  assert_int_equal (s3_uri_encode (&b,
                                   "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
                                   "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01",
                                   false),
                    -1);
  buf_dispose (&b);
}

static void
test_sigv4_provider (void **state)
{
  char p[64];
  bvm_error_t err = NULL;
  (void) state;
  assert_ok (s3_sigv4_provider (p, sizeof p, "eu-1", "s3", &err), &err);
  assert_string_equal (p, "aws:amz:eu-1:s3");
  assert_ok (s3_sigv4_provider (p, sizeof p, "default", "sts", &err), &err);
  assert_string_equal (p, "aws:amz:default:sts");
  assert_fails_with (s3_sigv4_provider (p, 10, "a-long-region", "s3", &err), &err, "too long");
}

static void
test_session_policy (void **state)
{
  static const char *const acts[] = { "s3:PutObject", "s3:AbortMultipartUpload", NULL };
  struct s3_location l;
  bvm_error_t err = NULL;
  char *p;
  (void) state;

  assert_ok (s3_parse_location (&l, BASE, &err), &err);
  assert_ok (s3_session_policy (&p, &l, "apps/hello/c0ffee/", acts, &err), &err);
  assert_string_equal (
      p, "{\"Statement\":[{\"Action\":[\"s3:PutObject\",\"s3:AbortMultipartUpload\"],"
         "\"Effect\":\"Allow\",\"Resource\":[\"arn:aws:s3:::bkt/root/sub/apps/"
         "hello/c0ffee/*\"]}],\"Version\":\"2012-10-17\"}");
  free (p);
  /* a scope that would widen the resource or inject into the JSON */
  assert_fails_with (s3_session_policy (&p, &l, "apps/*/", acts, &err), &err, "cannot hold");
  assert_fails_with (s3_session_policy (&p, &l, "apps/${aws:username}/", acts, &err), &err,
                     "cannot hold");
  assert_fails_with (s3_session_policy (&p, &l, "apps/a?/", acts, &err), &err, "cannot hold");
  assert_fails_with (s3_session_policy (&p, &l, "apps/\"/", acts, &err), &err, "cannot hold");
  s3_location_dispose (&l);

  assert_ok (s3_parse_location (&l, "//bkt?endpoint=http://h&role=arn:x&credentials=/k", &err),
             &err);
  assert_ok (s3_session_policy (&p, &l, "logs/apps/a/j/", acts + 1, &err), &err);
  assert_non_null (strstr (p, "\"arn:aws:s3:::bkt/logs/apps/a/j/*\""));
  assert_null (strstr (p, "PutObject"));
  free (p);
  s3_location_dispose (&l);
}

static void
test_key_scope (void **state)
{
  char s[64];
  bvm_error_t err = NULL;
  (void) state;
  assert_ok (s3_key_scope (s, sizeof s, "apps/a/c/bin/x", &err), &err);
  assert_string_equal (s, "apps/a/c/");
  assert_ok (s3_key_scope (s, sizeof s, "apps/a/c/index.json", &err), &err);
  assert_string_equal (s, "apps/a/c/");
  assert_ok (s3_key_scope (s, sizeof s, "logs/apps/a/j/log.lz4", &err), &err);
  assert_string_equal (s, "logs/apps/a/");
  assert_fails_with (s3_key_scope (s, sizeof s, "apps/a", &err), &err, "no app prefix");
  assert_fails_with (s3_key_scope (s, 4, "apps/a/c/x", &err), &err, "too long");
}

static void
test_session_seconds (void **state)
{
  (void) state;
  /* bounded by the job's end, never under STS's minimum, never over the role's */
  assert_int_equal (s3_session_seconds (1000 + 1800, 1000, 3600), 1800);
  assert_int_equal (s3_session_seconds (1000 + 60, 1000, 3600), 900);
  assert_int_equal (s3_session_seconds (500, 1000, 3600), 900);
  assert_int_equal (s3_session_seconds (1000 + 100000, 1000, 3600), 3600);
  assert_int_equal (s3_session_seconds (0, 1000, 7200), 7200);
}

#define CREDS(ak, sk, tok, exp)                                                                   \
  "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>"    \
  "<AssumedRoleUser><Arn>arn:aws:sts:::assumed-role/r/s</Arn></AssumedRoleUser>"                  \
  "<Credentials><AccessKeyId>" ak "</AccessKeyId><Expiration>" exp "</Expiration>"                \
  "<SecretAccessKey>" sk "</SecretAccessKey><SessionToken>" tok "</SessionToken></Credentials>"   \
  "</AssumeRoleResult></AssumeRoleResponse>"

static void
test_parse_assume_role (void **state)
{
  struct s3_creds c = { 0 };
  bvm_error_t err = NULL;
  const char *x = CREDS ("AKID", "se&amp;cret", "tok+/=", "2026-12-03T08:00:00.123Z");
  char *big;
  (void) state;

  assert_ok (s3_parse_assume_role (&c, x, strlen (x), &err), &err);
  assert_string_equal (c.access_key, "AKID");
  assert_string_equal (c.secret_key, "se&cret");
  assert_string_equal (c.token, "tok+/=");
  assert_int_equal (c.expiration, 1796284800);
  s3_creds_dispose (&c);
  assert_null (c.token);

  x = "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>";
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "no credentials");
  x = CREDS ("AKID", "s", "", "2026-12-03T08:00:00Z");
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "missing");
  x = CREDS ("AK\x01", "s", "t", "2026-12-03T08:00:00Z");
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "not printable");
  x = CREDS ("AK", "s&bogus;", "t", "2026-12-03T08:00:00Z");
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "not printable");
  x = CREDS ("AK", "s", "t", "yesterday");
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "Expiration");
  /* a token over the cap */
  {
    const char *head = "<Credentials><AccessKeyId>a</AccessKeyId><SecretAccessKey>s"
                       "</SecretAccessKey><SessionToken>";
    size_t pre = strlen (head);
    big = malloc (pre + S3_TOKEN_MAX + 64);
    assert_non_null (big);
    memcpy (big, head, pre);
    memset (big + pre, 'x', S3_TOKEN_MAX);
    strcpy (big + pre + S3_TOKEN_MAX, "</SessionToken></Credentials>");
  }
  assert_fails_with (s3_parse_assume_role (&c, big, strlen (big), &err), &err, "too long");
  free (big);
  /* an unterminated element */
  x = "<Credentials><AccessKeyId>a</AccessKeyId><SecretAccessKey>s";
  assert_fails_with (s3_parse_assume_role (&c, x, strlen (x), &err), &err, "no credentials");
}

static void
test_xml_text (void **state)
{
  char b[16];
  const char *x = "<Error><Code>SlowDown</Code><Message>a &lt;b&gt;</Message></Error>";
  (void) state;
  assert_int_equal (s3_xml_text (b, sizeof b, x, strlen (x), "Code"), 0);
  assert_string_equal (b, "SlowDown");
  assert_int_equal (s3_xml_text (b, sizeof b, x, strlen (x), "Message"), 0);
  assert_string_equal (b, "a <b>");
  assert_int_equal (s3_xml_text (b, sizeof b, x, strlen (x), "Missing"), -1);
  assert_int_equal (s3_xml_text (b, 4, x, strlen (x), "Code"), -1);
  /* the length bounds the search: no reading past it */
  assert_int_equal (s3_xml_text (b, sizeof b, x, 20, "Code"), -1);
}

static void
test_load_credentials (void **state)
{
  char *dir = t_tmpdir (), path[512];
  struct s3_creds c = { 0 };
  bvm_error_t err = NULL;
  (void) state;

  snprintf (path, sizeof path, "%s/k", dir);
  t_write (path, "{\"access_key_id\":\"AK\",\"secret_access_key\":\"SK\"}");
  chmod (path, 0644);
  assert_fails_with (s3_load_credentials (&c, path, &err), &err, "readable by others");
  chmod (path, 0600);
  assert_ok (s3_load_credentials (&c, path, &err), &err);
  assert_string_equal (c.access_key, "AK");
  assert_string_equal (c.secret_key, "SK");
  assert_null (c.token);
  s3_creds_dispose (&c);
  t_write (path, "{\"access_key_id\":\"AK\"}");
  chmod (path, 0600);
  assert_fails_with (s3_load_credentials (&c, path, &err), &err, "must hold");
  t_write (path, "{\"access_key_id\":\"A:K\",\"secret_access_key\":\"SK\"}");
  chmod (path, 0600);
  assert_fails_with (s3_load_credentials (&c, path, &err), &err, "must hold");
  t_write (path, "{\"access_key_id\":\"AK\",\"secret_access_key\":\"SK\",\"x\":1}");
  chmod (path, 0600);
  assert_fails_with (s3_load_credentials (&c, path, &err), &err, "x");
  t_tmpdir_free (dir);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_parse_location),  cmocka_unit_test (test_parse_location_refused),
    cmocka_unit_test (test_open_spec),       cmocka_unit_test (test_object_url),
    cmocka_unit_test (test_uri_encode),      cmocka_unit_test (test_sigv4_provider),
    cmocka_unit_test (test_session_policy),  cmocka_unit_test (test_key_scope),
    cmocka_unit_test (test_session_seconds), cmocka_unit_test (test_parse_assume_role),
    cmocka_unit_test (test_xml_text),        cmocka_unit_test (test_load_credentials),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
