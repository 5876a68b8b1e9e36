/* fuzz_seal.c - the sealed-object parser (seal.h), the reader of artifacts
 * and logs an attacker with write access to the store controls
 *
 * The first byte picks the split of the rest into feeds (1..256 bytes); the
 * rest is opened with a fixed key. Properties:
 *   - an input that opens gives at most its own length in plaintext, and
 *     sealing that plaintext again opens to the same bytes;
 *   - an input that fails has a one-line message naming the object;
 *   - any input whose first byte is 0 is instead sealed and must open to
 *     itself (the writer and the reader agree at every size).
 */
#include "fuzz.h"

#include "buf.h"
#include "seal.h"

static const unsigned char key[SEAL_KEY_BYTES] = { 42 };

static int
to_buf (void *opaque, const void *p, size_t len, bvm_error_t *err)
{
  (void) err;
  return buf_add (opaque, p, len) < 0 ? -1 : 0;
}

static int
open_all (struct buf *pt, const uint8_t *data, size_t size, size_t step, bvm_error_t *err)
{
  struct seal_reader *r = NULL;
  int ret = 0;
  if (seal_reader_new (&r, key, "ctx", "artifact `f`", to_buf, pt, err) < 0)
    return -1;
  for (size_t i = 0; i < size && ret == 0; i += step)
    ret = seal_reader_feed (r, data + i, size - i < step ? size - i : step, err);
  if (ret == 0)
    ret = seal_reader_finish (r, err);
  seal_reader_free (r);
  return ret;
}

static void
reseal (const uint8_t *data, size_t size, size_t step)
{
  struct buf ct = BUF_INIT (1 << 26), pt = BUF_INIT (1 << 26);
  struct seal_writer *w = NULL;
  bvm_error_t err = NULL;

  FUZZ_CHECK (seal_writer_new (&w, key, "ctx", 1 + step % 64, to_buf, &ct, &err) == 0);
  FUZZ_CHECK (seal_write (w, data, size, &err) == 0);
  FUZZ_CHECK (seal_writer_finish (w, &err) == 0);
  seal_writer_free (w);
  FUZZ_CHECK (open_all (&pt, (const uint8_t *) ct.ptr, ct.len, step, &err) == 0);
  FUZZ_CHECK (pt.len == size && (size == 0 || memcmp (pt.ptr, data, size) == 0));
  buf_dispose (&ct);
  buf_dispose (&pt);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct buf pt = BUF_INIT (1 << 26);
  bvm_error_t err = NULL;
  size_t step;

  if (size == 0)
    return 0;
  step = (size_t) data[0] + 1;
  if (data[0] == 0)
    {
      reseal (data + 1, size - 1, 17);
      return 0;
    }
  if (open_all (&pt, data + 1, size - 1, step, &err) == 0)
    {
      FUZZ_CHECK (pt.len <= size);
      reseal ((const uint8_t *) pt.ptr, pt.len, step);
    }
  else
    {
      const char *m = bvm_error_msg (&err);
      FUZZ_CHECK (strstr (m, "artifact `f`") != NULL || strstr (m, "seal") != NULL);
      FUZZ_CHECK (strchr (m, '\n') == NULL);
      bvm_error_free (&err);
    }
  buf_dispose (&pt);
  return 0;
}
