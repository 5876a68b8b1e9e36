/* fuzz_gitsrc.c - the git tree path validator (gitsrc_check_component): every
 * name in a tree of an untrusted repository passes it before it is written to
 * the guest's input tar
 *
 * The first byte's low bit says whether the entry is a symlink; the rest is
 * the name, with any bytes (a git tree entry name may hold anything but NUL
 * and `/`, and this function must refuse those too). An independent oracle
 * checks the accepted names: it must not be empty, `.` or `..`, hold a NUL or
 * a `/`, or be a spelling of `.git` (ASCII case folded, HFS+-ignorable code
 * points dropped, NTFS trailing dots and spaces and `:stream` dropped,
 * `.git\...`, the 8.3 short name `git~1`), or for a symlink a spelling of
 * `.gitmodules` (`gitmod~1`, `gi7eba~1`). The oracle is deliberately simple
 * (whole-name comparisons after folding) so it cannot share a bug with the
 * implementation's iterator.
 */
#include "fuzz.h"

#include "gitsrc.h"

/* Fold `name` as HFS+ and NTFS compare it: drop the ignorable code points
 * U+200C..U+200F, U+202A..U+202E, U+206A..U+206F and U+FEFF, lowercase ASCII;
 * any other non-ASCII character or invalid byte becomes 0x80 (it can match
 * nothing in `.git`). */
static size_t
fold (char *out, const unsigned char *s, size_t len)
{
  size_t o = 0;
  for (size_t i = 0; i < len;)
    {
      unsigned cp = s[i];
      size_t n = 1;
      if (cp >= 0x80)
        {
          n = (cp & 0xe0) == 0xc0 ? 2 : (cp & 0xf0) == 0xe0 ? 3 : (cp & 0xf8) == 0xf0 ? 4 : 0;
          if (n == 0 || i + n > len)
            {
              out[o++] = (char) 0x80;
              i++;
              continue;
            }
          cp &= 0xff >> (n + 1);
          for (size_t k = 1; k < n; k++)
            {
              if ((s[i + k] & 0xc0) != 0x80)
                {
                  n = 0;
                  break;
                }
              cp = (cp << 6) | (s[i + k] & 0x3f);
            }
          if (n == 0)
            {
              out[o++] = (char) 0x80;
              i++;
              continue;
            }
          i += n;
          if ((cp >= 0x200c && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e)
              || (cp >= 0x206a && cp <= 0x206f) || cp == 0xfeff)
            continue;
          out[o++] = (char) 0x80;
          continue;
        }
      out[o++] = (char) (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      i++;
    }
  out[o] = '\0';
  return o;
}

/* The name NTFS opens: up to the first `:`, trailing dots and spaces dropped. */
static void
ntfs_name (char *f)
{
  size_t n;
  char *colon = strchr (f, ':');
  if (colon != NULL)
    *colon = '\0';
  n = strlen (f);
  while (n > 0 && (f[n - 1] == '.' || f[n - 1] == ' '))
    f[--n] = '\0';
}

/* `base~1` with any number after the tilde (the implementation refuses ~N
 * for every N; ~1 is the one git always generates first). */
static bool
is_short (const char *f, const char *base6)
{
  size_t b = strlen (base6);
  return strncmp (f, base6, b) == 0 && strcmp (f + b, "~1") == 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  bool symlink;
  const char *name;
  size_t len;
  char *f;
  int ret;

  if (size == 0)
    return 0;
  symlink = data[0] & 1;
  name = (const char *) data + 1;
  len = size - 1;

  ret = gitsrc_check_component (name, len, symlink, &err);
  if (ret < 0)
    {
      FUZZ_CHECK (bvm_error_get_code (&err) == BVM_E_INVALID);
      fuzz_check_error (ret, &err);
      return 0;
    }
  FUZZ_CHECK (len > 0);
  FUZZ_CHECK (memchr (name, '\0', len) == NULL && memchr (name, '/', len) == NULL);
  FUZZ_CHECK (!(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.'));

  f = malloc (len + 1);
  if (f == NULL)
    abort ();
  fold (f, (const unsigned char *) name, len);
  FUZZ_CHECK (strncmp (f, ".git\\", 5) != 0);
  ntfs_name (f);
  FUZZ_CHECK (strcmp (f, ".git") != 0);
  FUZZ_CHECK (!is_short (f, "git"));
  if (symlink)
    {
      FUZZ_CHECK (strcmp (f, ".gitmodules") != 0);
      FUZZ_CHECK (!is_short (f, "gitmod") && !is_short (f, "gi7eba"));
    }
  free (f);
  return 0;
}
