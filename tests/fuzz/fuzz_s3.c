/* fuzz_s3.c - the s3 store's parsers (store_s3.h): an STS AssumeRole reply
 * (what the store's server sends), the store URL (the operator's), and the
 * object key -> URL mapping (keys from a hostile build)
 *
 * The first byte picks the parser, the rest is its input. Properties:
 *   - accepted credentials are non-empty printable ASCII within their caps;
 *   - an accepted URL has a valid bucket, an http(s) endpoint, and every
 *     object URL derived from it starts with endpoint/bucket/root/ and
 *     holds only unreserved characters, `/` and %XX escapes after that, so
 *     no key can add a dot segment, a query or a fragment;
 *   - a session policy is refused or names exactly the scope's resource;
 * Every error message is one printable line (the URL's may quote UTF-8).
 */
#include "fuzz.h"

#include "buf.h"
#include "store.h"
#include "store_s3.h"

#include <ctype.h>

static void
check_ascii (const char *s, size_t max)
{
  FUZZ_CHECK (s != NULL && *s != '\0' && strlen (s) < max);
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    FUZZ_CHECK (*p >= 0x20 && *p < 0x7f);
}

static void
sts_reply (const char *xml, size_t len)
{
  struct s3_creds c = { 0 };
  bvm_error_t err = NULL;
  int r = s3_parse_assume_role (&c, xml, len, &err);
  if (r < 0)
    {
      fuzz_check_error (r, &err);
      return;
    }
  check_ascii (c.access_key, 256);
  check_ascii (c.secret_key, 256);
  check_ascii (c.token, S3_TOKEN_MAX);
  s3_creds_dispose (&c);
}

static void
key_url (const struct s3_location *l, const char *key)
{
  cleanup_free char *url = NULL, *want = NULL, *policy = NULL;
  static const char *const acts[] = { "s3:PutObject", NULL };
  bvm_error_t err = NULL;
  const char *p;
  int r;

  if (store_check_key (key, NULL, &err) < 0)
    {
      bvm_error_free (&err);
      return;
    }
  r = s3_object_url (&url, l, key, NULL, &err);
  if (r < 0)
    {
      fuzz_check_error_ex (r, &err, true);
      return;
    }
  {
    /* the root as it goes on the wire: percent-encoded like a key */
    struct buf rb = BUF_INIT (S3_URL_MAX);
    FUZZ_CHECK (s3_uri_encode (&rb, l->root, true) == 0);
    FUZZ_CHECK (asprintf (&want, "%s/%s/%s%s", l->endpoint, l->bucket, buf_cstr (&rb),
                          l->root[0] ? "/" : "")
                > 0);
    buf_dispose (&rb);
  }
  FUZZ_CHECK (strncmp (url, want, strlen (want)) == 0);
  for (p = url + strlen (want); *p; p++)
    {
      if (*p == '%')
        {
          FUZZ_CHECK (isxdigit ((unsigned char) p[1]) && isxdigit ((unsigned char) p[2]));
          p += 2;
          continue;
        }
      FUZZ_CHECK (isalnum ((unsigned char) *p) || strchr ("-._~/", *p) != NULL);
    }
  /* no dot segment survives: store_check_key refused `.` and `..` */
  FUZZ_CHECK (strstr (url + strlen (want) - 1, "/../") == NULL);
  FUZZ_CHECK (strstr (url + strlen (want) - 1, "/./") == NULL);
  r = s3_session_policy (&policy, l, key, acts, &err);
  if (r < 0)
    fuzz_check_error_ex (r, &err, true);
  else
    {
      /* one resource: the bucket, the root, the scope (JSON-escaped), `*` */
      cleanup_free char *arn = NULL;
      FUZZ_CHECK (asprintf (&arn, "\"Resource\":[\"arn:aws:s3:::%s/", l->bucket) > 0);
      FUZZ_CHECK (strstr (policy, arn) != NULL);
      FUZZ_CHECK (strstr (policy, "*\"]}]") != NULL);
      FUZZ_CHECK (strpbrk (key, "*?$\"\\") == NULL);
    }
}

static void
location (const char *s)
{
  struct s3_location l;
  bvm_error_t err = NULL;
  const char *nl = strchr (s, '\n');
  cleanup_free char *loc = strndup (s, nl ? (size_t) (nl - s) : strlen (s));
  int r;

  if (loc == NULL)
    return;
  r = s3_parse_location (&l, loc, &err);
  if (r < 0)
    {
      fuzz_check_error_ex (r, &err, true);
      return;
    }
  FUZZ_CHECK (strlen (l.bucket) >= 3 && strlen (l.bucket) <= 63);
  FUZZ_CHECK (strncmp (l.endpoint, "http://", 7) == 0 || strncmp (l.endpoint, "https://", 8) == 0);
  FUZZ_CHECK (strpbrk (l.root, "*?$") == NULL);
  FUZZ_CHECK (l.part_size >= (5u << 20) && l.session_max >= S3_MIN_SESSION_S);
  /* the line after the URL is a key */
  key_url (&l, nl ? nl + 1 : "apps/a/c/x");
  s3_location_dispose (&l);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s;

  if (size < 1)
    return 0;
  if (data[0] % 2 == 0)
    {
      /* the reply as bytes (it may hold NULs): a copy of exactly its size */
      char *x = malloc (size);
      if (x == NULL)
        return 0;
      memcpy (x, data + 1, size - 1);
      sts_reply (x, size - 1);
      free (x);
      return 0;
    }
  s = fuzz_cstr (data + 1, size - 1);
  location (s);
  free (s);
  return 0;
}
