/* test_egress_frame.c - the egress channel's frames (egress_proto.h) and the
 * runner's incremental parser (egress_frame.h): every frame type both ways,
 * every protocol error, a stream split at every byte offset */
#include "support.h"

#include "egress_frame.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define G EGRESS_FROM_GUEST
#define H EGRESS_FROM_HOST

static size_t
put (uint8_t *out, size_t size, unsigned type, unsigned flags, uint32_t stream, const void *p,
     uint32_t len, int from)
{
  bvm_error_t err = NULL;
  int n = egress_frame_encode (out, size, type, flags, stream, p, len, from, &err);
  if (n < 0)
    fail_msg ("encode: %s", bvm_error_msg (&err));
  return (size_t) n;
}

static size_t
hello (uint8_t *out, int from)
{
  uint8_t v[4];
  egress_proto_put32 (v, EGRESS_VERSION);
  return put (out, EGRESS_HEADER_LEN + 4, EGRESS_HELLO, 0, 0, v, 4, from);
}

/* A guest's stream: HELLO, two OPENs, DATA, WINDOW, CLOSE, RESET. */
static size_t
guest_stream (uint8_t *buf, size_t size)
{
  static uint8_t data[3000];
  uint8_t w[4];
  size_t o = 0;

  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t) (i * 7 + 1);
  egress_proto_put32 (w, 65536);
  o += hello (buf + o, G);
  o += put (buf + o, size - o, EGRESS_OPEN, EGRESS_OPEN_CONNECT, 1, "registry.npmjs.org:443", 22,
            G);
  o += put (buf + o, size - o, EGRESS_OPEN, EGRESS_OPEN_HTTP, 3, "[::1]:80", 8, G);
  o += put (buf + o, size - o, EGRESS_DATA, 0, 1, data, sizeof data, G);
  o += put (buf + o, size - o, EGRESS_WINDOW, 0, 1, w, 4, G);
  o += put (buf + o, size - o, EGRESS_DATA, 0, 3, "x", 1, G);
  o += put (buf + o, size - o, EGRESS_CLOSE, 0, 1, NULL, 0, G);
  o += put (buf + o, size - o, EGRESS_RESET, 0, 3, "client went away", 16, G);
  o += put (buf + o, size - o, EGRESS_RESET, 0, EGRESS_STREAM_ID_MAX, NULL, 0, G);
  return o;
}

struct seen
{
  unsigned type, flags;
  uint32_t stream, len;
  uint64_t sum; /* of the payload bytes, position-weighted */
};

static uint64_t
payload_sum (const uint8_t *p, uint32_t len)
{
  uint64_t s = len;
  for (uint32_t i = 0; i < len; i++)
    s = s * 31 + p[i];
  return s;
}

/* Feed `buf` in pieces: first `split` bytes, then chunks of `chunk`. */
static size_t
parse_all (const uint8_t *buf, size_t len, size_t split, size_t chunk, struct seen *out,
           size_t max)
{
  struct egress_frame_parser p;
  bvm_error_t err = NULL;
  size_t pos = 0, n = 0;

  assert_ok (egress_frame_parser_init (&p, G, &err), &err);
  while (pos < len)
    {
      size_t piece = pos < split ? split - pos : chunk;
      const uint8_t *d;
      uint8_t *copy;
      if (piece > len - pos)
        piece = len - pos;
      /* an exact-size copy: ASan sees any read past the piece */
      copy = malloc (piece);
      memcpy (copy, buf + pos, piece);
      d = copy;
      while (piece > 0)
        {
          struct egress_frame f;
          size_t used;
          int ret = egress_frame_feed (&p, d, piece, &used, &f, &err);
          if (ret < 0)
            fail_msg ("split %zu chunk %zu: %s", split, chunk, bvm_error_msg (&err));
          assert_true (used <= piece);
          if (ret == 0)
            assert_int_equal (used, piece);
          if (ret == 1)
            {
              assert_true (n < max);
              out[n].type = f.type;
              out[n].flags = f.flags;
              out[n].stream = f.stream;
              out[n].len = f.len;
              out[n].sum = payload_sum (f.payload, f.len);
              n++;
            }
          d += used;
          piece -= used;
          pos += used;
        }
      free (copy);
    }
  assert_int_equal (p.hdr_have, 0);
  assert_int_equal (p.payload_have, 0);
  assert_int_equal (p.offset, len);
  egress_frame_parser_dispose (&p);
  return n;
}

static void
test_split_everywhere (void **state)
{
  static uint8_t buf[8192];
  struct seen want[16], got[16];
  size_t len = guest_stream (buf, sizeof buf), n;
  (void) state;

  n = parse_all (buf, len, 0, len, want, 16);
  assert_int_equal (n, 9);
  assert_int_equal (want[0].type, EGRESS_HELLO);
  assert_int_equal (want[1].type, EGRESS_OPEN);
  assert_int_equal (want[1].flags, EGRESS_OPEN_CONNECT);
  assert_int_equal (want[1].stream, 1);
  assert_int_equal (want[1].len, 22);
  assert_int_equal (want[2].flags, EGRESS_OPEN_HTTP);
  assert_int_equal (want[3].type, EGRESS_DATA);
  assert_int_equal (want[3].len, 3000);
  assert_int_equal (want[8].stream, EGRESS_STREAM_ID_MAX);
  /* one split at every byte offset */
  for (size_t split = 1; split < len; split++)
    {
      assert_int_equal (parse_all (buf, len, split, len, got, 16), n);
      assert_memory_equal (got, want, n * sizeof *got);
    }
  /* and small chunks of every size up to a header and a half */
  for (size_t chunk = 1; chunk <= 18; chunk++)
    {
      assert_int_equal (parse_all (buf, len, 0, chunk, got, 16), n);
      assert_memory_equal (got, want, n * sizeof *got);
    }
}

/* A frame entirely in the caller's buffer is returned in place, and feed
 * stops at its end: never more than one frame is taken at a time. */
static void
test_one_frame_at_a_time (void **state)
{
  static uint8_t buf[EGRESS_HEADER_LEN * 200 + 16];
  struct egress_frame_parser p;
  bvm_error_t err = NULL;
  size_t len = 0, pos = 0, frames = 0;
  (void) state;

  len += hello (buf, G);
  for (int i = 0; i < 100; i++)
    len += put (buf + len, sizeof buf - len, EGRESS_DATA, 0, 5, "ab", 2, G);
  assert_ok (egress_frame_parser_init (&p, G, &err), &err);
  while (pos < len)
    {
      struct egress_frame f;
      size_t used;
      assert_int_equal (egress_frame_feed (&p, buf + pos, len - pos, &used, &f, &err), 1);
      assert_int_equal (used, frames == 0 ? EGRESS_HEADER_LEN + 4 : EGRESS_HEADER_LEN + 2);
      assert_ptr_equal (f.payload, buf + pos + EGRESS_HEADER_LEN);
      pos += used;
      frames++;
    }
  assert_int_equal (frames, 101);
  {
    /* an empty feed is no frame */
    struct egress_frame f;
    size_t used = 7;
    assert_int_equal (egress_frame_feed (&p, NULL, 0, &used, &f, &err), 0);
    assert_int_equal (used, 0);
  }
  assert_int_equal (p.frames, 101);
  egress_frame_parser_dispose (&p);
}

static void
test_host_to_guest (void **state)
{
  uint8_t buf[1024];
  struct egress_frame_parser p;
  bvm_error_t err = NULL;
  size_t len = 0, pos = 0;
  unsigned types[4];
  int n = 0;
  (void) state;

  len += hello (buf, H);
  len += put (buf + len, sizeof buf - len, EGRESS_OPEN_OK, 0, 1, NULL, 0, H);
  len += put (buf + len, sizeof buf - len, EGRESS_OPEN_ERR, EGRESS_ERR_DENIED, 3,
              "role denies net:Connect on net:evil.example:443", 47, H);
  len += put (buf + len, sizeof buf - len, EGRESS_OPEN_ERR, EGRESS_ERR_TIMEOUT, 5, "timed out", 9,
              H);
  /* the guest's parser (the agent would include egress_proto.h the same way) */
  assert_ok (egress_frame_parser_init (&p, H, &err), &err);
  while (pos < len)
    {
      struct egress_frame f;
      size_t used;
      int ret = egress_frame_feed (&p, buf + pos, len - pos, &used, &f, &err);
      assert_int_equal (ret, 1);
      types[n++] = f.type;
      if (f.type == EGRESS_OPEN_ERR && f.flags == EGRESS_ERR_DENIED)
        assert_memory_equal (f.payload, "role denies", 11);
      pos += used;
    }
  assert_int_equal (n, 4);
  assert_int_equal (types[1], EGRESS_OPEN_OK);
  assert_int_equal (types[3], EGRESS_OPEN_ERR);
  egress_frame_parser_dispose (&p);

  /* an OPEN from the host is refused by the guest */
  len = hello (buf, H);
  egress_proto_put_header (buf + len, EGRESS_OPEN, EGRESS_OPEN_CONNECT, 1, 3);
  memcpy (buf + len + EGRESS_HEADER_LEN, "a:1", 3);
  len += EGRESS_HEADER_LEN + 3;
  assert_ok (egress_frame_parser_init (&p, H, &err), &err);
  {
    struct egress_frame f;
    size_t used;
    assert_int_equal (egress_frame_feed (&p, buf, len, &used, &f, &err), 1);
    assert_fails_with (egress_frame_feed (&p, buf + used, len - used, &used, &f, &err), &err,
                       "OPEN from the host");
  }
  egress_frame_parser_dispose (&p);
}

/* ------------------------------------------------------------------------ */
/* every protocol error                                                      */

struct bad
{
  const char *name;
  uint8_t type, flags;
  uint16_t reserved;
  uint32_t stream, len;
  const char *payload; /* `len` bytes, or NULL for zeros */
  const char *msg;
  bool after_header; /* refused once the 12 header bytes are in */
};

static const struct bad bads[] = {
  { "type 0", 0, 0, 0, 1, 0, NULL, "unknown frame type", true },
  { "type 9", 9, 0, 0, 1, 0, NULL, "unknown frame type", true },
  { "type 255", 255, 0, 0, 1, 0, NULL, "unknown frame type", true },
  { "reserved", EGRESS_DATA, 0, 1, 1, 1, "x", "reserved header field", true },
  { "reserved high", EGRESS_DATA, 0, 0x8000, 1, 1, "x", "reserved header field", true },
  { "over the cap", EGRESS_DATA, 0, 0, 1, EGRESS_PAYLOAD_MAX + 1, NULL, "payload cap", true },
  { "4 GiB", EGRESS_DATA, 0, 0, 1, 0xffffffffu, NULL, "payload cap", true },
  { "HELLO on a stream", EGRESS_HELLO, 0, 0, 1, 4, "\0\0\0\1", "stream id out of range", true },
  { "DATA on stream 0", EGRESS_DATA, 0, 0, 0, 1, "x", "stream id out of range", true },
  { "stream id too big", EGRESS_DATA, 0, 0, EGRESS_STREAM_ID_MAX + 1, 1, "x",
    "stream id out of range", true },
  { "stream id 2^32-1", EGRESS_CLOSE, 0, 0, 0xffffffffu, 0, NULL, "stream id out of range", true },
  { "OPEN_OK from the guest", EGRESS_OPEN_OK, 0, 0, 1, 0, NULL, "from the guest", true },
  { "OPEN_ERR from the guest", EGRESS_OPEN_ERR, 1, 0, 1, 1, "x", "from the guest", true },
  { "OPEN without a mode", EGRESS_OPEN, 0, 0, 1, 3, "a:1", "exactly one mode flag", true },
  { "OPEN with both modes", EGRESS_OPEN, 3, 0, 1, 3, "a:1", "exactly one mode flag", true },
  { "OPEN with flag 0x80", EGRESS_OPEN, 0x81, 0, 1, 3, "a:1", "exactly one mode flag", true },
  { "DATA with flags", EGRESS_DATA, 1, 0, 1, 1, "x", "undefined flags", true },
  { "CLOSE with flags", EGRESS_CLOSE, 0x80, 0, 1, 0, NULL, "undefined flags", true },
  { "HELLO short", EGRESS_HELLO, 0, 0, 0, 3, "\0\0\1", "payload length wrong", true },
  { "HELLO long", EGRESS_HELLO, 0, 0, 0, 5, "\0\0\0\1\0", "payload length wrong", true },
  { "WINDOW short", EGRESS_WINDOW, 0, 0, 1, 3, "\0\0\1", "payload length wrong", true },
  { "CLOSE with payload", EGRESS_CLOSE, 0, 0, 1, 1, "x", "payload length wrong", true },
  { "empty DATA", EGRESS_DATA, 0, 0, 1, 0, NULL, "payload length wrong", true },
  { "empty OPEN", EGRESS_OPEN, 1, 0, 1, 0, NULL, "payload length wrong", true },
  { "OPEN too long", EGRESS_OPEN, 1, 0, 1, EGRESS_TARGET_MAX + 1, NULL, "payload length wrong",
    true },
  { "RESET reason too long", EGRESS_RESET, 0, 0, 1, EGRESS_REASON_MAX + 1, NULL,
    "payload length wrong", true },
  { "WINDOW 0", EGRESS_WINDOW, 0, 0, 1, 4, "\0\0\0\0", "window increment out of range", false },
  { "WINDOW too big", EGRESS_WINDOW, 0, 0, 1, 4, "\0\x40\0\1", "window increment out of range",
    false },
  { "OPEN with a space", EGRESS_OPEN, 1, 0, 1, 5, "a :80", "outside printable ASCII", false },
  { "OPEN with a NUL", EGRESS_OPEN, 1, 0, 1, 5, "a\0:80", "outside printable ASCII", false },
  { "OPEN with DEL", EGRESS_OPEN, 1, 0, 1, 5, "a\x7f:80", "outside printable ASCII", false },
  { "OPEN with UTF-8", EGRESS_OPEN, 2, 0, 1, 5, "\xc3\xbc:80", "outside printable ASCII", false },
  { "OPEN with a newline", EGRESS_OPEN, 2, 0, 1, 5, "a:80\n", "outside printable ASCII", false },
  { "RESET with ESC", EGRESS_RESET, 0, 0, 1, 4, "\x1b[2J", "outside printable ASCII", false },
};

static void
run_bad (const struct bad *b, bool with_hello)
{
  static uint8_t buf[EGRESS_HEADER_LEN + 16 + EGRESS_PAYLOAD_MAX + 64];
  struct egress_frame_parser p;
  struct egress_frame f;
  bvm_error_t err = NULL;
  size_t len = 0, used, pos = 0, hl = 0;
  int ret = 0;

  if (with_hello)
    len = hl = hello (buf, G);
  buf[len] = b->type;
  buf[len + 1] = b->flags;
  buf[len + 2] = (uint8_t) (b->reserved >> 8);
  buf[len + 3] = (uint8_t) b->reserved;
  egress_proto_put32 (buf + len + 4, b->stream);
  egress_proto_put32 (buf + len + 8, b->len);
  len += EGRESS_HEADER_LEN;
  if (b->len <= EGRESS_PAYLOAD_MAX + 16)
    {
      if (b->payload != NULL)
        memcpy (buf + len, b->payload, b->len);
      else
        memset (buf + len, 'a', b->len);
      len += b->len;
    }
  assert_ok (egress_frame_parser_init (&p, G, &err), &err);
  while (pos < len)
    {
      ret = egress_frame_feed (&p, buf + pos, len - pos, &used, &f, &err);
      pos += used;
      if (ret < 0)
        break;
    }
  if (ret >= 0)
    fail_msg ("%s: accepted", b->name);
  if (strstr (bvm_error_msg (&err), b->msg) == NULL)
    fail_msg ("%s: `%s`, expected `%s`", b->name, bvm_error_msg (&err), b->msg);
  if (b->after_header && pos != hl + EGRESS_HEADER_LEN)
    fail_msg ("%s: refused after %zu bytes, not at the end of the header", b->name, pos);
  bvm_error_free (&err);
  /* sticky: nothing more is read */
  ret = egress_frame_feed (&p, buf, len, &used, &f, &err);
  assert_true (ret < 0);
  assert_int_equal (used, 0);
  assert_non_null (strstr (bvm_error_msg (&err), b->msg));
  bvm_error_free (&err);
  egress_frame_parser_dispose (&p);
}

static void
test_errors (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (bads); i++)
    run_bad (&bads[i], true);
}

static void
test_hello_rules (void **state)
{
  static const struct bad no_hello = {
    "DATA first", EGRESS_DATA, 0, 0, 1, 1, "x", "the first frame is not HELLO", true
  };
  static const struct bad second = { "HELLO twice", EGRESS_HELLO,     0,   0, 0, 4,
                                     "\0\0\0\1",    "a second HELLO", true };
  static const struct bad version = {
    "HELLO v2", EGRESS_HELLO, 0, 0, 0, 4, "\0\0\0\2", "unsupported protocol version", false
  };
  (void) state;
  run_bad (&no_hello, false);
  run_bad (&second, true);
  run_bad (&version, false);
}

/* The error names where it happened, in printable text. */
static void
test_error_message (void **state)
{
  uint8_t buf[64];
  struct egress_frame_parser p;
  struct egress_frame f;
  bvm_error_t err = NULL;
  size_t len = hello (buf, G), used;
  (void) state;

  egress_proto_put_header (buf + len, 0x1b, 0, 1, 0);
  len += EGRESS_HEADER_LEN;
  assert_ok (egress_frame_parser_init (&p, G, &err), &err);
  assert_int_equal (egress_frame_feed (&p, buf, len, &used, &f, &err), 1);
  assert_fails_with (egress_frame_feed (&p, buf + used, len - used, &used, &f, &err), &err,
                     "egress channel protocol error at byte 28 (frame 2): unknown frame type");
  egress_frame_parser_dispose (&p);
}

static void
test_encode_refuses (void **state)
{
  uint8_t buf[EGRESS_FRAME_MAX + 8], big[EGRESS_PAYLOAD_MAX + 1];
  bvm_error_t err = NULL;
  uint8_t w[4];
  (void) state;

  memset (big, 'x', sizeof big);
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_DATA, 0, 1, "", 0, H, &err),
                     &err, "not a valid frame");
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_DATA, 0, 1, big,
                                          EGRESS_PAYLOAD_MAX + 1, H, &err),
                     &err, "not a valid frame");
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_OPEN, 1, 1, "a:1", 3, H, &err),
                     &err, "OPEN frame for stream 1");
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_OPEN_OK, 0, 1, NULL, 0, G, &err),
                     &err, "not a valid frame");
  assert_fails_with (egress_frame_encode (buf, 14, EGRESS_DATA, 0, 1, "abc", 3, G, &err), &err,
                     "not a valid frame");
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_DATA, 0, 1, NULL, 3, G, &err),
                     &err, "not a valid frame");
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_OPEN_ERR, 1, 1, "a\nb", 3, H,
                                          &err),
                     &err, "not a valid frame");
  egress_proto_put32 (w, 0);
  assert_fails_with (egress_frame_encode (buf, sizeof buf, EGRESS_WINDOW, 0, 1, w, 4, H, &err),
                     &err, "not a valid frame");
  /* the largest frame fits exactly */
  assert_int_equal (egress_frame_encode (buf, EGRESS_FRAME_MAX, EGRESS_DATA, 0, 1, big,
                                         EGRESS_PAYLOAD_MAX, H, &err),
                    EGRESS_FRAME_MAX);
}

static void
test_largest_frame_split (void **state)
{
  static uint8_t buf[EGRESS_FRAME_MAX + 16], big[EGRESS_PAYLOAD_MAX];
  struct seen got[4], want[4];
  size_t len;
  (void) state;

  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (uint8_t) (i ^ (i >> 8));
  len = hello (buf, G);
  len += put (buf + len, sizeof buf - len, EGRESS_DATA, 0, 9, big, sizeof big, G);
  assert_int_equal (parse_all (buf, len, 0, len, want, 4), 2);
  assert_int_equal (want[1].len, EGRESS_PAYLOAD_MAX);
  for (size_t split = 1; split < len; split += 997)
    {
      assert_int_equal (parse_all (buf, len, split, 4096, got, 4), 2);
      assert_memory_equal (got, want, sizeof want[0] * 2);
    }
}

static void
test_credit (void **state)
{
  uint32_t c = EGRESS_WINDOW_INITIAL;
  (void) state;

  assert_int_equal (egress_proto_credit_spend (&c, EGRESS_WINDOW_INITIAL), 0);
  assert_int_equal (c, 0);
  assert_int_equal (egress_proto_credit_spend (&c, 1), -1); /* beyond the credit */
  assert_int_equal (c, 0);
  assert_int_equal (egress_proto_credit_grant (&c, 0), -1);
  assert_int_equal (egress_proto_credit_grant (&c, EGRESS_WINDOW_MAX), 0);
  assert_int_equal (c, EGRESS_WINDOW_MAX);
  assert_int_equal (egress_proto_credit_grant (&c, 1), -1); /* past the max */
  assert_int_equal (c, EGRESS_WINDOW_MAX);
  c = 5;
  assert_int_equal (egress_proto_credit_grant (&c, 0xffffffffu), -1); /* no wrap-around */
  assert_int_equal (c, 5);
  assert_int_equal (egress_proto_credit_grant (&c, EGRESS_WINDOW_MAX - 5), 0);
  assert_int_equal (egress_proto_credit_grant (&c, 1), -1);
}

static void
test_names (void **state)
{
  (void) state;
  assert_string_equal (egress_proto_type_name (EGRESS_OPEN_ERR), "OPEN_ERR");
  assert_string_equal (egress_proto_type_name (EGRESS_RESET), "RESET");
  assert_string_equal (egress_proto_type_name (0), "unknown");
  assert_string_equal (egress_proto_type_name (99), "unknown");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_split_everywhere), cmocka_unit_test (test_one_frame_at_a_time),
    cmocka_unit_test (test_host_to_guest),    cmocka_unit_test (test_errors),
    cmocka_unit_test (test_hello_rules),      cmocka_unit_test (test_error_message),
    cmocka_unit_test (test_encode_refuses),   cmocka_unit_test (test_largest_frame_split),
    cmocka_unit_test (test_credit),           cmocka_unit_test (test_names),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
