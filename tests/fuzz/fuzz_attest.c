/* fuzz_attest.c - what `buildvm verify` reads from a registry: a DSSE
 * envelope (attest_verify) and the statement inside it (attest_check)
 *
 * The first byte picks the parser, the rest is the document. Properties:
 *   - an envelope never verifies with a key that did not sign it (the key
 *     is made here at start-up; nothing in the corpus is signed with it),
 *     and every refusal has a printable one-line message;
 *   - a statement attest_check accepts names the expected digest among its
 *     subjects and the expected app, and a refusal is printable.
 */
#include "fuzz.h"

#include "attest.h"

#include <jansson.h>

#define IMG "sha256:1111111111111111111111111111111111111111111111111111111111111111"

static struct attest_key *g_key;

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct attest_expect want = { .digest = IMG, .app = "hello" };
  bvm_error_t err = NULL;
  char *payload = NULL;
  size_t plen = 0;
  json_t *st = NULL;
  int ret;

  if (g_key == NULL)
    FUZZ_CHECK (attest_key_generate (&g_key, &err) == 0);
  if (size < 1)
    return 0;
  if (data[0] & 1)
    {
      ret = attest_verify (&payload, &plen, g_key, (const char *) data + 1, size - 1,
                           ATTEST_PAYLOAD_TYPE, &err);
      FUZZ_CHECK (ret < 0);
      fuzz_check_error (ret, &err);
      return 0;
    }
  ret = attest_check (&st, (const char *) data + 1, size - 1, &want, &err);
  if (ret < 0)
    {
      fuzz_check_error (ret, &err);
      return 0;
    }
  FUZZ_CHECK (st != NULL);
  FUZZ_CHECK (attest_field (st, "app") != NULL && strcmp (attest_field (st, "app"), "hello") == 0);
  json_decref (st);
  return 0;
}
