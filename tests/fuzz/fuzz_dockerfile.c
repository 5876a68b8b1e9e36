/* fuzz_dockerfile.c - the Dockerfile grammar (dockerfile.h), a file from the
 * app's repository
 *
 * The first byte picks a target stage name from a short list (or none); the
 * rest is the Dockerfile. Properties checked on every Dockerfile accepted:
 *   - the counts are within the documented caps (stages, instructions,
 *     bases, secret ids and URL lengths);
 *   - the target is a stage, and every stage's base index is -1 or a base;
 *   - every base is a valid reference (dockerfile_ref_parse) and its
 *     normalized name differs from every other base's;
 *   - every secret id is non-empty, at most 255 bytes, without control
 *     characters; every URL is http(s) and at most DOCKERFILE_URL_MAX bytes;
 *   - an error is one line (fuzz_check_error).
 */
#include "fuzz.h"

#include "dockerfile.h"
#include "util.h"

#include <strings.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const targets[] = { NULL, "build", "a", "x" };
  static const struct spec_kv args[] = { { (char *) "V", (char *) "18" },
                                         { (char *) "IMG", (char *) "base/x:1" } };
  struct dockerfile *d = NULL;
  bvm_error_t err = NULL;
  const char *target;
  int ret;

  if (size == 0)
    return 0;
  target = targets[data[0] % 4];
  ret = dockerfile_parse (&d, "Dockerfile", (const char *) data + 1, size - 1, args, 2, target,
                          &err);
  if (ret < 0)
    {
      FUZZ_CHECK (d == NULL);
      fuzz_check_error (ret, &err);
      return 0;
    }
  FUZZ_CHECK (d != NULL);
  FUZZ_CHECK (d->n_stages >= 1 && d->n_stages <= DOCKERFILE_MAX_STAGES);
  FUZZ_CHECK (d->target < d->n_stages);
  FUZZ_CHECK (d->n_instructions <= DOCKERFILE_MAX_INSTRUCTIONS);
  FUZZ_CHECK (d->n_bases <= DOCKERFILE_MAX_STAGES);
  if (target != NULL)
    FUZZ_CHECK (d->stages[d->target].name != NULL
                && strcasecmp (d->stages[d->target].name, target) == 0);
  for (size_t i = 0; i < d->n_stages; i++)
    FUZZ_CHECK (d->stages[i].base >= -1 && d->stages[i].base < (long) d->n_bases);
  for (size_t i = 0; i < d->n_bases; i++)
    {
      struct dockerfile_ref a, b;
      FUZZ_CHECK (dockerfile_ref_parse (&a, d->bases[i].ref) == NULL);
      for (size_t k = 0; k < i; k++)
        {
          FUZZ_CHECK (dockerfile_ref_parse (&b, d->bases[k].ref) == NULL);
          FUZZ_CHECK (strcmp (a.name, b.name) != 0);
        }
    }
  for (size_t i = 0; i < d->n_secrets; i++)
    {
      const char *s = d->secrets[i].value;
      FUZZ_CHECK (s[0] != '\0' && strlen (s) <= DOCKERFILE_NAME_MAX && !has_control (s));
    }
  for (size_t i = 0; i < d->n_urls; i++)
    {
      const char *u = d->urls[i].value;
      FUZZ_CHECK (strlen (u) <= DOCKERFILE_URL_MAX);
      FUZZ_CHECK (strncasecmp (u, "http://", 7) == 0 || strncasecmp (u, "https://", 8) == 0);
      FUZZ_CHECK (strchr (u, '$') == NULL);
    }
  dockerfile_free (d);
  return 0;
}
