/* fuzz_imgfs.c - an image's file tree and the checks of whether it can
 * start (imgfs.h): the ELF and `#!` readers see the first bytes of files
 * the build wrote, and the resolver walks names and link targets it chose.
 *
 * The first byte chooses:
 *   even: the rest is a file's first bytes. An interpreter found is a
 *     NUL-terminated string shorter than its buffer, not empty, and for
 *     ELF it is bytes of the input;
 *   odd: the rest is lines `T PATH [TARGET]` (T: d directory, f file, x
 *     executable, l symlink, h hard link, n next layer, ! check PATH as a
 *     program). Every check returns 0 or 1, and a refusal is one line
 *     with a fix.
 */
#include "fuzz.h"

#include "imgfs.h"

#include <sys/stat.h>

static void
heads (const uint8_t *data, size_t size)
{
  char out[64];
  int k = imgfs_elf_interp (out, sizeof out, data, size);
  FUZZ_CHECK (k >= -1 && k <= 1);
  if (k == 1)
    {
      FUZZ_CHECK (out[0] != '\0' && strlen (out) < sizeof out);
      FUZZ_CHECK (memmem (data, size, out, strlen (out)) != NULL);
    }
  k = imgfs_shebang (out, sizeof out, data, size);
  FUZZ_CHECK (k == 0 || k == 1);
  if (k == 1)
    {
      FUZZ_CHECK (out[0] != '\0' && strlen (out) < sizeof out);
      FUZZ_CHECK (strpbrk (out, " \t\n") == NULL);
      FUZZ_CHECK (memmem (data, size < 256 ? size : 256, out, strlen (out)) != NULL);
    }
}

static void
tree (const char *text)
{
  struct imgfs *fs = NULL;
  bvm_error_t err = NULL;
  char *copy = strdup (text), *save = NULL, *line;

  if (copy == NULL || imgfs_new (&fs, &err) < 0)
    {
      free (copy);
      bvm_error_free (&err);
      return;
    }
  imgfs_next_layer (fs);
  for (line = strtok_r (copy, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
    {
      char *path = line + (line[0] && line[1] == ' ' ? 2 : 1), *target = strchr (path, ' ');
      char why[512];
      const char *fix = NULL;
      int k = 0;
      if (target)
        *target++ = '\0';
      switch (line[0])
        {
        case 'd': k = imgfs_add (fs, path, S_IFDIR, 0755, NULL, NULL, 0, &err); break;
        case 'f': k = imgfs_add (fs, path, S_IFREG, 0644, NULL, NULL, 0, &err); break;
        case 'x':
          k = imgfs_add (fs, path, S_IFREG, 0755, NULL, target, target ? strlen (target) : 0,
                         &err);
          break;
        case 'l': k = imgfs_add (fs, path, S_IFLNK, 0777, target, NULL, 0, &err); break;
        case 'h': k = imgfs_add (fs, path, 0, 0755, target, NULL, 0, &err); break;
        case 'n': imgfs_next_layer (fs); break;
        case '!':
          k = imgfs_check_start (fs, path, target, "/", why, sizeof why, &fix);
          FUZZ_CHECK (k == 0 || k == 1);
          if (k == 1)
            FUZZ_CHECK (fix != NULL && why[0] != '\0' && strchr (why, '\n') == NULL);
          k = 0;
          break;
        default: break;
        }
      if (k < 0)
        {
          FUZZ_CHECK (bvm_error_msg (&err)[0] != '\0');
          bvm_error_free (&err);
        }
    }
  imgfs_free (fs);
  free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text;

  if (size == 0)
    return 0;
  if ((data[0] & 1) == 0)
    {
      heads (data + 1, size - 1);
      return 0;
    }
  if (size > 64 * 1024)
    return 0;
  text = strndup ((const char *) data + 1, size - 1);
  if (text != NULL)
    tree (text);
  free (text);
  return 0;
}
