/* fuzz_egress_frame.c - the egress channel's frame parser (egress_frame.h),
 * fed what a compromised guest agent (root in the guest) can write
 *
 * Input: one control byte, then the channel's bytes. Bit 0 of the control
 * byte chooses who sent them (0: the guest, as the runner reads them; 1:
 * the host, as the agent would); the rest seeds the sizes of the pieces the
 * bytes are fed in. Properties:
 *   - fed whole or in pieces of any size, the parser returns the same frames
 *     and fails at the same channel offset with the same reason;
 *   - a returned frame passes the checks again and encodes back to exactly
 *     the bytes it came from (nothing is normalized away);
 *   - the parser never holds more than one frame: the header and payload
 *     fill levels stay within EGRESS_HEADER_LEN and the frame's length;
 *   - a feed consumes at most what it was given, and after an error nothing;
 *   - every error message is one printable line.
 */
#include "fuzz.h"

#include "egress_frame.h"

#define MAX_FRAMES 4096

struct rec
{
  unsigned type, flags;
  uint32_t stream, len;
  uint64_t hash;
  size_t at; /* channel offset of the frame's first byte */
};

struct run
{
  struct rec f[MAX_FRAMES];
  size_t n;
  bool failed;
  uint64_t fail_offset;
  char why[256];
};

static uint64_t
hash (const uint8_t *p, size_t n)
{
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static void
run_parser (struct run *r, const uint8_t *data, size_t size, int from, unsigned seed)
{
  struct egress_frame_parser p;
  bvm_error_t err = NULL;
  size_t pos = 0, frame_start = 0;
  uint32_t rng = seed * 2654435761u + 1;

  r->n = 0;
  r->failed = false;
  if (egress_frame_parser_init (&p, from, &err) < 0)
    abort ();
  while (pos < size)
    {
      size_t piece = size - pos;
      uint8_t *copy;
      const uint8_t *d;
      if (seed != 0)
        {
          rng = rng * 1103515245u + 12345u;
          piece = 1 + (rng >> 16) % (((rng >> 8) & 1) ? 16 : 70000);
          if (piece > size - pos)
            piece = size - pos;
        }
      /* an exact-size copy: a read past the piece is an ASan report */
      copy = malloc (piece);
      if (copy == NULL)
        abort ();
      memcpy (copy, data + pos, piece);
      d = copy;
      while (piece > 0)
        {
          struct egress_frame f;
          size_t used = 12345;
          int ret = egress_frame_feed (&p, d, piece, &used, &f, &err);
          FUZZ_CHECK (used <= piece);
          FUZZ_CHECK (p.hdr_have <= EGRESS_HEADER_LEN);
          FUZZ_CHECK (p.payload_have <= EGRESS_PAYLOAD_MAX);
          if (ret < 0)
            {
              const char *msg = bvm_error_msg (&err);
              snprintf (r->why, sizeof r->why, "%s", msg);
              r->failed = true;
              r->fail_offset = p.offset;
              fuzz_check_error (ret, &err);
              /* sticky */
              ret = egress_frame_feed (&p, d, piece, &used, &f, &err);
              FUZZ_CHECK (ret < 0 && used == 0);
              bvm_error_free (&err);
              free (copy);
              egress_frame_parser_dispose (&p);
              return;
            }
          FUZZ_CHECK (ret == 0 || ret == 1);
          if (ret == 0)
            FUZZ_CHECK (used == piece);
          else
            {
              uint8_t *again = malloc (EGRESS_HEADER_LEN + f.len);
              size_t n;
              FUZZ_CHECK (f.len <= EGRESS_PAYLOAD_MAX);
              FUZZ_CHECK (egress_proto_header_problem (f.type, f.flags, 0, f.stream, f.len, from)
                          == NULL);
              FUZZ_CHECK (egress_proto_payload_problem (f.type, f.payload, f.len) == NULL);
              if (again == NULL)
                abort ();
              n = egress_proto_encode (again, EGRESS_HEADER_LEN + f.len, f.type, f.flags, f.stream,
                                       f.payload, f.len, from);
              FUZZ_CHECK (n == EGRESS_HEADER_LEN + f.len);
              FUZZ_CHECK (frame_start + n == pos + used);
              FUZZ_CHECK (memcmp (again, data + frame_start, n) == 0);
              free (again);
              if (r->n < MAX_FRAMES)
                {
                  struct rec *rc = &r->f[r->n++];
                  memset (rc, 0, sizeof *rc); /* padding too: the runs are memcmp'd */
                  rc->type = f.type;
                  rc->flags = f.flags;
                  rc->stream = f.stream;
                  rc->len = f.len;
                  rc->hash = hash (f.payload, f.len);
                  rc->at = frame_start;
                }
              frame_start = pos + used;
            }
          d += used;
          piece -= used;
          pos += used;
        }
      free (copy);
    }
  FUZZ_CHECK (p.offset == size);
  egress_frame_parser_dispose (&p);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static struct run whole, pieces;
  int from;
  unsigned seed;

  if (size < 1)
    return 0;
  from = (data[0] & 1) ? EGRESS_FROM_HOST : EGRESS_FROM_GUEST;
  seed = (data[0] >> 1) + 1;
  data++;
  size--;
  run_parser (&whole, data, size, from, 0);
  run_parser (&pieces, data, size, from, seed);
  FUZZ_CHECK (whole.n == pieces.n);
  FUZZ_CHECK (memcmp (whole.f, pieces.f, whole.n * sizeof whole.f[0]) == 0);
  FUZZ_CHECK (whole.failed == pieces.failed);
  if (whole.failed)
    {
      FUZZ_CHECK (whole.fail_offset == pieces.fail_offset);
      FUZZ_CHECK (strcmp (whole.why, pieces.why) == 0);
    }
  return 0;
}
