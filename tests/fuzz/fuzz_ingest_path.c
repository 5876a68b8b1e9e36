/* fuzz_ingest_path.c - the entry-name rules of the output-tar ingest
 * (ingest_check_path), on their own: far more names per second than going
 * through tar headers
 *
 * The input is the name (cut at a NUL, as a tar name is). Properties of an
 * accepted name: it starts with `image/` or `artifacts/` (or is that root
 * itself, with or without the `/`); below the root it has no `.`, `..` or
 * empty component, no control characters (C0, DEL, the C1 range as UTF-8),
 * only valid UTF-8, components of at most INGEST_NAME_MAX bytes, and under
 * image/ no component starting with `.wh.`.
 */
#include "fuzz.h"

#include "ingest.h"

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool
utf8_ok (const unsigned char *s)
{
  while (*s)
    {
      unsigned cp, n;
      if (*s < 0x80)
        {
          s++;
          continue;
        }
      if ((*s & 0xe0) == 0xc0)
        n = 1, cp = *s & 0x1f;
      else if ((*s & 0xf0) == 0xe0)
        n = 2, cp = *s & 0x0f;
      else if ((*s & 0xf8) == 0xf0)
        n = 3, cp = *s & 0x07;
      else
        return false;
      for (unsigned i = 1; i <= n; i++)
        {
          if ((s[i] & 0xc0) != 0x80)
            return false;
          cp = (cp << 6) | (s[i] & 0x3f);
        }
      if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)
          || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return false;
      s += n + 1;
    }
  return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  char *name = fuzz_cstr (data, size);
  const char *rel, *c;
  bool image;
  int ret;

  ret = ingest_check_path (name, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      free (name);
      return 0;
    }
  FUZZ_CHECK (strlen (name) <= INGEST_PATH_MAX);
  image = strncmp (name, "image", 5) == 0 && (name[5] == '/' || name[5] == '\0');
  FUZZ_CHECK (image
              || (strncmp (name, "artifacts", 9) == 0 && (name[9] == '/' || name[9] == '\0')));
  FUZZ_CHECK (utf8_ok ((const unsigned char *) name));
  for (const unsigned char *u = (const unsigned char *) name; *u; u++)
    FUZZ_CHECK (*u >= 0x20 && *u != 0x7f);
  rel = strchr (name, '/');
  if (rel != NULL)
    {
      size_t depth = 0;
      rel++;
      for (c = rel; *c;)
        {
          size_t len = strcspn (c, "/");
          /* a trailing `/` is the caller's business (only directories) */
          FUZZ_CHECK (len > 0);
          FUZZ_CHECK (!(len == 1 && c[0] == '.') && !(len == 2 && c[0] == '.' && c[1] == '.'));
          FUZZ_CHECK (len <= INGEST_NAME_MAX);
          FUZZ_CHECK (!image || strncmp (c, ".wh.", 4) != 0);
          depth++;
          c += len;
          if (*c == '/')
            c++;
        }
      FUZZ_CHECK (depth <= INGEST_MAX_DEPTH);
    }
  free (name);
  return 0;
}
