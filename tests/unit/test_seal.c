/* test_seal.c - the chunked AES-256-GCM envelope: round trips at every size
 * around chunk boundaries, and every tampering the format promises to detect:
 * a bit flip at every position, a cut at every byte, chunks swapped,
 * dropped or duplicated, another app's key, another context */
#include "support.h"

#include "buf.h"
#include "seal.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK 16
#define CTX "apps/hello/c0ffee/"

static const unsigned char key_a[SEAL_KEY_BYTES] = { 1, 2, 3 };
static const unsigned char key_b[SEAL_KEY_BYTES] = { 1, 2, 4 };

static int
to_buf (void *opaque, const void *p, size_t len, bvm_error_t *err)
{
  (void) err;
  return buf_add (opaque, p, len) < 0 ? -1 : 0;
}

static void
seal_bytes (struct buf *out, const void *pt, size_t len, size_t chunk, size_t step)
{
  bvm_error_t err = NULL;
  struct seal_writer *w = NULL;
  const unsigned char *p = pt;

  buf_init (out, 1 << 24);
  assert_ok (seal_writer_new (&w, key_a, CTX, chunk, to_buf, out, &err), &err);
  for (size_t i = 0; i < len; i += step)
    assert_ok (seal_write (w, p + i, len - i < step ? len - i : step, &err), &err);
  assert_ok (seal_writer_finish (w, &err), &err);
  seal_writer_free (w);
}

/* 0 and the plaintext in out, or -1 and the error in *err */
static int
open_bytes (struct buf *out, const unsigned char *key, const char *ctx, const void *ct, size_t len,
            size_t step, bvm_error_t *err)
{
  struct seal_reader *r = NULL;
  const unsigned char *p = ct;
  int ret = 0;

  buf_init (out, 1 << 24);
  if (seal_reader_new (&r, key, ctx, "artifact `x`", to_buf, out, err) < 0)
    return -1;
  for (size_t i = 0; i < len && ret == 0; i += step)
    ret = seal_reader_feed (r, p + i, len - i < step ? len - i : step, err);
  if (ret == 0)
    ret = seal_reader_finish (r, err);
  seal_reader_free (r);
  return ret;
}

static void
expect_refused (const unsigned char *key, const char *ctx, const void *ct, size_t len,
                const char *why)
{
  bvm_error_t err = NULL;
  struct buf pt;
  int ret = open_bytes (&pt, key, ctx, ct, len, 7, &err);
  if (ret == 0)
    fail_msg ("accepted: %s", why);
  assert_non_null (strstr (bvm_error_msg (&err), "artifact `x`"));
  bvm_error_free (&err);
  buf_dispose (&pt);
}

static void
test_round_trip (void **state)
{
  unsigned char data[5 * CHUNK + 3];
  (void) state;
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (unsigned char) (i * 7);
  for (size_t len = 0; len <= sizeof data; len++)
    for (size_t step = 1; step <= CHUNK + 1; step += CHUNK / 2)
      {
        struct buf ct, pt;
        bvm_error_t err = NULL;
        seal_bytes (&ct, data, len, CHUNK, step);
        assert_int_equal (ct.len, seal_sealed_size (len, CHUNK));
        assert_true (seal_is_sealed (ct.ptr, ct.len));
        assert_ok (open_bytes (&pt, key_a, CTX, ct.ptr, ct.len, step, &err), &err);
        assert_int_equal (pt.len, len);
        assert_memory_equal (pt.ptr ? pt.ptr : "", data, len);
        buf_dispose (&ct);
        buf_dispose (&pt);
      }
}

static void
test_default_chunk (void **state)
{
  size_t len = 3 * SEAL_CHUNK_DEFAULT + 11;
  unsigned char *data = malloc (len);
  struct buf ct, pt;
  bvm_error_t err = NULL;
  (void) state;
  for (size_t i = 0; i < len; i++)
    data[i] = (unsigned char) (i >> 3);
  seal_bytes (&ct, data, len, 0, 10000);
  assert_int_equal (ct.len, seal_sealed_size (len, 0));
  assert_ok (open_bytes (&pt, key_a, CTX, ct.ptr, ct.len, 4096, &err), &err);
  assert_int_equal (pt.len, len);
  assert_memory_equal (pt.ptr, data, len);
  buf_dispose (&ct);
  buf_dispose (&pt);
  free (data);
}

static void
test_bit_flip_everywhere (void **state)
{
  const char *msg = "a small object of a few chunks, sealed";
  struct buf ct;
  (void) state;
  seal_bytes (&ct, msg, strlen (msg), CHUNK, 5);
  for (size_t i = 0; i < ct.len; i++)
    for (int bit = 0; bit < 8; bit++)
      {
        ct.ptr[i] ^= (char) (1 << bit);
        expect_refused (key_a, CTX, ct.ptr, ct.len, "a flipped bit");
        ct.ptr[i] ^= (char) (1 << bit);
      }
  buf_dispose (&ct);
}

static void
test_truncation_everywhere (void **state)
{
  const char *msg = "forty-eight bytes: exactly three full chunks!!!";
  struct buf ct;
  (void) state;
  assert_int_equal (strlen (msg), 3 * CHUNK - 1);
  seal_bytes (&ct, msg, strlen (msg), CHUNK, 100);
  /* every cut, chunk boundaries included, is refused */
  for (size_t n = 0; n < ct.len; n++)
    expect_refused (key_a, CTX, ct.ptr, n, "a truncated object");
  buf_dispose (&ct);

  /* a multiple of the chunk: an empty last chunk follows the full ones, so
   * cutting after the last full chunk is detected too */
  seal_bytes (&ct, "0123456789abcdef0123456789abcdef", 2 * CHUNK, CHUNK, 3);
  assert_int_equal (ct.len, SEAL_HEADER_BYTES + 3 * SEAL_CHUNK_OVERHEAD + 2 * CHUNK);
  expect_refused (key_a, CTX, ct.ptr, ct.len - SEAL_CHUNK_OVERHEAD, "the empty last chunk cut");
  buf_dispose (&ct);
}

static void
test_swap_drop_duplicate (void **state)
{
  char msg[4 * CHUNK];
  size_t c = CHUNK + SEAL_CHUNK_OVERHEAD, h = SEAL_HEADER_BYTES;
  struct buf ct;
  char *copy;
  (void) state;
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (char) ('a' + i % 26);
  seal_bytes (&ct, msg, sizeof msg - 1, CHUNK, 9); /* chunks 0..2 full, 3 last (15 bytes) */
  copy = malloc (ct.len + c);

  /* swap chunks 0 and 1 */
  memcpy (copy, ct.ptr, ct.len);
  memcpy (copy + h, ct.ptr + h + c, c);
  memcpy (copy + h + c, ct.ptr + h, c);
  expect_refused (key_a, CTX, copy, ct.len, "chunks swapped");
  /* drop chunk 1 */
  memcpy (copy, ct.ptr, h + c);
  memcpy (copy + h + c, ct.ptr + h + 2 * c, ct.len - h - 2 * c);
  expect_refused (key_a, CTX, copy, ct.len - c, "a chunk dropped");
  /* duplicate chunk 0 */
  memcpy (copy, ct.ptr, h + c);
  memcpy (copy + h + c, ct.ptr + h, ct.len - h);
  expect_refused (key_a, CTX, copy, ct.len + c, "a chunk duplicated");
  /* trailing garbage after the last chunk */
  memcpy (copy, ct.ptr, ct.len);
  copy[ct.len] = 0;
  expect_refused (key_a, CTX, copy, ct.len + 1, "trailing data");
  free (copy);
  buf_dispose (&ct);
}

static void
test_chunks_of_another_object (void **state)
{
  struct buf one, two;
  size_t h = SEAL_HEADER_BYTES;
  char *mix;
  (void) state;
  seal_bytes (&one, "the first object", 16, CHUNK, 16);
  seal_bytes (&two, "the other object", 16, CHUNK, 16);
  assert_int_equal (one.len, two.len);
  /* the header of one with the chunks of two */
  mix = malloc (one.len);
  memcpy (mix, one.ptr, h);
  memcpy (mix + h, two.ptr + h, one.len - h);
  expect_refused (key_a, CTX, mix, one.len, "chunks of another object");
  free (mix);
  buf_dispose (&one);
  buf_dispose (&two);
}

static void
test_wrong_key_or_context (void **state)
{
  struct buf ct;
  bvm_error_t err = NULL;
  struct buf pt;
  (void) state;
  seal_bytes (&ct, "app a's artifact", 16, CHUNK, 4);
  expect_refused (key_b, CTX, ct.ptr, ct.len, "another app's key");
  expect_refused (key_a, "apps/other/c0ffee/", ct.ptr, ct.len, "another context");
  expect_refused (key_a, CTX, "plain text, not sealed at all, long enough for a header.........",
                  64, "plain text");
  assert_int_equal (open_bytes (&pt, key_b, CTX, ct.ptr, ct.len, 1000, &err), -1);
  assert_non_null (strstr (bvm_error_msg (&err), "wrong app or key"));
  bvm_error_free (&err);
  buf_dispose (&pt);
  buf_dispose (&ct);
}

static int
failing_sink (void *opaque, const void *p, size_t len, bvm_error_t *err)
{
  (void) opaque, (void) p, (void) len;
  return bvm_error_code (err, BVM_E_INVALID, 0, "the disk is full");
}

static void
test_sink_failure (void **state)
{
  struct seal_writer *w = NULL;
  bvm_error_t err = NULL;
  (void) state;
  assert_int_equal (seal_writer_new (&w, key_a, CTX, CHUNK, failing_sink, NULL, &err), -1);
  assert_null (w);
  assert_non_null (strstr (bvm_error_msg (&err), "disk is full"));
  bvm_error_free (&err);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_round_trip),           cmocka_unit_test (test_default_chunk),
    cmocka_unit_test (test_bit_flip_everywhere),  cmocka_unit_test (test_truncation_everywhere),
    cmocka_unit_test (test_swap_drop_duplicate),  cmocka_unit_test (test_chunks_of_another_object),
    cmocka_unit_test (test_wrong_key_or_context), cmocka_unit_test (test_sink_failure),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
