/* fuzz_guest.c - the guest's result header (guest.h), read back from the
 * output disk of a VM that ran an untrusted build
 *
 * The first 8 bytes of the input are the size of the output disk's tar
 * region (max_tar, little-endian), the rest is the header block. Properties:
 *   - without the magic line the result is GUEST_NO_RESULT and not an error;
 *   - a failure leaves the result zeroed ("a bad header claims nothing");
 *   - an accepted header has a known status, tar_bytes within max_tar,
 *     step <= steps_run + 1 <= GUEST_MAX_STEPS + 1, and a printable
 *     NUL-terminated message.
 */
#include "fuzz.h"

#include "guest.h"

static bool
all_zero (const void *p, size_t n)
{
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != 0)
      return false;
  return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char magic[] = "buildvm-output 1\n";
  bvm_error_t err = NULL;
  struct guest_result r;
  uint64_t max_tar = UINT64_MAX;
  uint8_t *hdr;
  size_t len;
  int ret;

  if (size >= 8)
    {
      max_tar = 0;
      for (int i = 7; i >= 0; i--)
        max_tar = (max_tar << 8) | data[i];
      data += 8;
      size -= 8;
    }
  /* an exact-size copy: a read past `len` is an ASan report */
  len = size;
  hdr = malloc (len > 0 ? len : 1);
  if (hdr == NULL)
    abort ();
  memcpy (hdr, data, len);

  memset (&r, 0xa5, sizeof r);
  ret = guest_result_parse (&r, (const char *) hdr, len, max_tar, &err);
  if (ret < 0)
    {
      FUZZ_CHECK (all_zero (&r, sizeof r));
      fuzz_check_error (ret, &err);
    }
  else if (len < sizeof magic - 1 || memcmp (hdr, magic, sizeof magic - 1) != 0)
    FUZZ_CHECK (r.status == GUEST_NO_RESULT);
  else
    {
      size_t mlen = strnlen (r.message, sizeof r.message);
      FUZZ_CHECK (r.status >= GUEST_OK && r.status <= GUEST_AGENT_ERROR);
      FUZZ_CHECK (strcmp (guest_status_name (r.status), "unknown") != 0);
      FUZZ_CHECK (r.tar_bytes <= max_tar);
      FUZZ_CHECK (r.steps_run <= GUEST_MAX_STEPS && r.step <= r.steps_run + 1);
      FUZZ_CHECK (r.exit_code >= 0 && r.signal >= 0 && r.duration_ms >= 0);
      FUZZ_CHECK (mlen < sizeof r.message);
      for (size_t i = 0; i < mlen; i++)
        FUZZ_CHECK ((unsigned char) r.message[i] >= 0x20 && r.message[i] != 0x7f);
    }
  free (hdr);
  return 0;
}
