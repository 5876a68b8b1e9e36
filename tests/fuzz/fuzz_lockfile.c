/* fuzz_lockfile.c - the lock file parsers of the SBOM (sbom.h): lock files
 * come from the app's repository, untrusted
 *
 * The first byte picks the lock file (package-lock.json, requirements.txt,
 * go.sum, Cargo.lock), the rest is its content. Properties on every input:
 *   - a refusal has a printable one-line message;
 *   - an accepted one stays within the component cap (a small one here, so
 *     the cap is reached), every dependency's uri is a purl, and the SBOM
 *     serializes to JSON that parses again as CycloneDX 1.5.
 */
#include "fuzz.h"

#include "sbom.h"

#include <jansson.h>

#define CAP 64
#define DIGEST "sha256:1111111111111111111111111111111111111111111111111111111111111111"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const names[] = { "package-lock.json", "requirements.txt", "go.sum",
                                       "Cargo.lock" };
  struct sbom_meta m = { "apps/fuzz", "0123456789abcdef0123456789abcdef01234567", DIGEST,
                         "2026-01-01T00:00:00Z", "fuzz" };
  struct sbom *s = NULL;
  bvm_error_t err = NULL;
  char *text = NULL;
  size_t len = 0, i;
  json_t *doc, *d;
  int ret;

  if (size < 1)
    return 0;
  FUZZ_CHECK (sbom_new (&s, CAP, &err) == 0);
  ret = sbom_add_lockfile (s, names[data[0] % 4], (const char *) data + 1, size - 1, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      sbom_free (s);
      return 0;
    }
  FUZZ_CHECK (sbom_package_count (s) <= CAP);
  json_array_foreach (sbom_dependencies (s), i, d)
    {
      const char *uri = json_string_value (json_object_get (d, "uri"));
      FUZZ_CHECK (uri != NULL && strncmp (uri, "pkg:", 4) == 0);
    }
  FUZZ_CHECK (sbom_to_json (&text, &len, s, &m, &err) == 0);
  doc = json_loadb (text, len, JSON_REJECT_DUPLICATES, NULL);
  FUZZ_CHECK (doc != NULL);
  FUZZ_CHECK (strcmp (json_string_value (json_object_get (doc, "specVersion")), "1.5") == 0);
  FUZZ_CHECK (json_array_size (json_object_get (doc, "components")) == sbom_package_count (s));
  json_decref (doc);
  free (text);
  sbom_free (s);
  return 0;
}
