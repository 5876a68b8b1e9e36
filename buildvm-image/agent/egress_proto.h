/* egress_proto.h - the egress channel's wire format (issue 13)
 *
 * Included by both sides: the guest agent (static, libc only, built from
 * the files of buildvm-image/agent) and the runner (runner/lib/egress_frame.c, the
 * host's incremental parser). No dependencies beyond <stdint.h>, <stddef.h>
 * and <string.h>, no structs, no allocation: only the constants, the header
 * encoder and decoder, and the checks every frame must pass. Both sides
 * apply the same checks, so the rules below have one owner: this file.
 *
 * The channel is one reliable, ordered byte stream between the guest agent
 * and the runner (a virtio-serial port on a chardev the runner owns for
 * QEMU, vsock for Firecracker). Many TCP connections are multiplexed over
 * it as streams. Everything on it is a sequence of frames:
 *
 *   offset  size  field
 *   0       1     type       (below)
 *   1       1     flags      0 unless the type defines them
 *   2       2     reserved   0
 *   4       4     stream id  big-endian; 0 = the channel itself (HELLO only),
 *                            1 .. EGRESS_STREAM_ID_MAX for connections
 *   8       4     length     big-endian payload length, <= EGRESS_PAYLOAD_MAX
 *   12      len   payload
 *
 *   type          dir   stream  flags          payload
 *   1 HELLO       both  0       0              u32 version (EGRESS_VERSION); each
 *                                              side's first frame, exactly once
 *   2 OPEN        g->h  new id  mode: CONNECT  "host:port", 1..EGRESS_TARGET_MAX
 *                               (0x01) or HTTP bytes of printable ASCII without
 *                               (0x02)         spaces; the runner authorizes it
 *   3 OPEN_OK     h->g  id      0              empty: connected
 *   4 OPEN_ERR    h->g  id      why: DENIED 1, a one-line reason (1..EGRESS_
 *                               UNREACHABLE 2, REASON_MAX printable ASCII); the
 *                               LIMIT 3,       stream is gone. The proxy answers
 *                               TIMEOUT 4      403 / 502 / 429 / 504 with it
 *   5 DATA        both  id      0              1..EGRESS_PAYLOAD_MAX bytes of the
 *                                              connection, counted against credit
 *   6 WINDOW      both  id      0              u32 credit increment, 1..EGRESS_
 *                                              WINDOW_MAX
 *   7 CLOSE       both  id      0              empty: the sender sends no more
 *                                              DATA (TCP half-close, shutdown(WR))
 *   8 RESET       both  id      0              0..EGRESS_REASON_MAX printable
 *                                              ASCII: the stream is aborted both
 *                                              ways
 *
 * Flow control, per stream and per direction: a sender starts with
 * EGRESS_WINDOW_INITIAL bytes of credit, each DATA frame spends its length,
 * and the receiver returns credit with WINDOW as its consumer (the socket on
 * the host, the client in the guest) drains the data. A sender with no
 * credit waits. A DATA frame beyond the credit granted, or a WINDOW that
 * takes the credit past EGRESS_WINDOW_MAX, is a protocol error: so no peer
 * can make the other buffer more than EGRESS_WINDOW_MAX per stream, and the
 * stream count is capped by the runner's connection limit.
 *
 * Stream life: OPEN (guest) -> OPEN_OK or OPEN_ERR (runner) -> DATA and
 * WINDOW both ways -> CLOSE from each side, or RESET from either. Only the
 * guest opens streams; an id is not reused while its stream lives.
 *
 * Every frame from the guest is hostile. An unknown type, a non-zero
 * reserved field or undefined flag, a length over the cap or wrong for the
 * type, a stream id out of range or wrong for the type, a frame in the
 * wrong direction, a missing or repeated HELLO, bytes outside the allowed
 * set: each is a protocol error that ends the channel (the runner closes it
 * and fails the job's egress, logs one line, and goes on). The length is
 * checked as soon as the 12 header bytes are in, so at most one frame of
 * EGRESS_FRAME_MAX bytes is ever buffered.
 */
#ifndef BUILDVM_EGRESS_PROTO_H
#define BUILDVM_EGRESS_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EGRESS_VERSION 1u
#define EGRESS_HEADER_LEN 12u
#define EGRESS_PAYLOAD_MAX 65536u
#define EGRESS_FRAME_MAX (EGRESS_HEADER_LEN + EGRESS_PAYLOAD_MAX)
#define EGRESS_STREAM_ID_MAX 0x00ffffffu
#define EGRESS_TARGET_MAX 300u /* "host:port" in OPEN */
#define EGRESS_REASON_MAX 200u /* OPEN_ERR and RESET text */
#define EGRESS_WINDOW_INITIAL (256u * 1024u)
#define EGRESS_WINDOW_MAX (4u * 1024u * 1024u)

enum
{
  EGRESS_HELLO = 1,
  EGRESS_OPEN = 2,
  EGRESS_OPEN_OK = 3,
  EGRESS_OPEN_ERR = 4,
  EGRESS_DATA = 5,
  EGRESS_WINDOW = 6,
  EGRESS_CLOSE = 7,
  EGRESS_RESET = 8,
};

/* OPEN flags: exactly one */
#define EGRESS_OPEN_CONNECT 0x01u
#define EGRESS_OPEN_HTTP 0x02u

/* OPEN_ERR flags: exactly one value */
enum
{
  EGRESS_ERR_DENIED = 1,
  EGRESS_ERR_UNREACHABLE = 2,
  EGRESS_ERR_LIMIT = 3,
  EGRESS_ERR_TIMEOUT = 4,
};

/* Who sent the frame being checked. */
enum
{
  EGRESS_FROM_GUEST = 1,
  EGRESS_FROM_HOST = 2,
};

static inline void
egress_proto_put32 (uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t) (v >> 24);
  p[1] = (uint8_t) (v >> 16);
  p[2] = (uint8_t) (v >> 8);
  p[3] = (uint8_t) v;
}

static inline uint32_t
egress_proto_get32 (const uint8_t *p)
{
  return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static inline void
egress_proto_put_header (uint8_t *out, unsigned type, unsigned flags, uint32_t stream,
                         uint32_t len)
{
  out[0] = (uint8_t) type;
  out[1] = (uint8_t) flags;
  out[2] = 0;
  out[3] = 0;
  egress_proto_put32 (out + 4, stream);
  egress_proto_put32 (out + 8, len);
}

/* The fields of a header; *reserved is returned so the check sees it. */
static inline void
egress_proto_get_header (const uint8_t *in, unsigned *type, unsigned *flags, unsigned *reserved,
                         uint32_t *stream, uint32_t *len)
{
  *type = in[0];
  *flags = in[1];
  *reserved = ((unsigned) in[2] << 8) | in[3];
  *stream = egress_proto_get32 (in + 4);
  *len = egress_proto_get32 (in + 8);
}

static inline const char *
egress_proto_type_name (unsigned type)
{
  switch (type)
    {
    case EGRESS_HELLO: return "HELLO";
    case EGRESS_OPEN: return "OPEN";
    case EGRESS_OPEN_OK: return "OPEN_OK";
    case EGRESS_OPEN_ERR: return "OPEN_ERR";
    case EGRESS_DATA: return "DATA";
    case EGRESS_WINDOW: return "WINDOW";
    case EGRESS_CLOSE: return "CLOSE";
    case EGRESS_RESET: return "RESET";
    }
  return "unknown";
}

/* NULL when a header may be followed by its payload, else a static reason.
 * `from` is EGRESS_FROM_GUEST or EGRESS_FROM_HOST. */
static inline const char *
egress_proto_header_problem (unsigned type, unsigned flags, unsigned reserved, uint32_t stream,
                             uint32_t len, int from)
{
  uint32_t min = 0, max = 0;

  if (type < EGRESS_HELLO || type > EGRESS_RESET)
    return "unknown frame type";
  if (reserved != 0)
    return "reserved header field is not zero";
  if (len > EGRESS_PAYLOAD_MAX)
    return "frame longer than the payload cap";
  if (type == EGRESS_HELLO ? stream != 0 : (stream == 0 || stream > EGRESS_STREAM_ID_MAX))
    return "stream id out of range for the frame type";
  if (type == EGRESS_OPEN && from != EGRESS_FROM_GUEST)
    return "OPEN from the host";
  if ((type == EGRESS_OPEN_OK || type == EGRESS_OPEN_ERR) && from != EGRESS_FROM_HOST)
    return "OPEN_OK or OPEN_ERR from the guest";
  switch (type)
    {
    case EGRESS_OPEN:
      if (flags != EGRESS_OPEN_CONNECT && flags != EGRESS_OPEN_HTTP)
        return "OPEN without exactly one mode flag";
      min = 1, max = EGRESS_TARGET_MAX;
      break;
    case EGRESS_OPEN_ERR:
      if (flags < EGRESS_ERR_DENIED || flags > EGRESS_ERR_TIMEOUT)
        return "OPEN_ERR with an unknown error code";
      min = 1, max = EGRESS_REASON_MAX;
      break;
    default:
      if (flags != 0)
        return "undefined flags set";
      break;
    }
  switch (type)
    {
    case EGRESS_HELLO:
    case EGRESS_WINDOW: min = max = 4; break;
    case EGRESS_OPEN_OK:
    case EGRESS_CLOSE: min = max = 0; break;
    case EGRESS_DATA: min = 1, max = EGRESS_PAYLOAD_MAX; break;
    case EGRESS_RESET: min = 0, max = EGRESS_REASON_MAX; break;
    default: break;
    }
  if (len < min || len > max)
    return "payload length wrong for the frame type";
  return NULL;
}

/* NULL when the payload of a frame whose header passed is valid. */
static inline const char *
egress_proto_payload_problem (unsigned type, const uint8_t *p, uint32_t len)
{
  uint32_t v;

  switch (type)
    {
    case EGRESS_HELLO:
      if (egress_proto_get32 (p) != EGRESS_VERSION)
        return "unsupported protocol version";
      return NULL;
    case EGRESS_WINDOW:
      v = egress_proto_get32 (p);
      if (v == 0 || v > EGRESS_WINDOW_MAX)
        return "window increment out of range";
      return NULL;
    case EGRESS_OPEN:
      for (uint32_t i = 0; i < len; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f)
          return "OPEN target has a byte outside printable ASCII";
      return NULL;
    case EGRESS_OPEN_ERR:
    case EGRESS_RESET:
      for (uint32_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] >= 0x7f)
          return "reason has a byte outside printable ASCII";
      return NULL;
    default: return NULL;
    }
}

/* Credit accounting, one counter per stream and direction (starting at
 * EGRESS_WINDOW_INITIAL). 0, or -1 when the peer broke the rules above. */
static inline int
egress_proto_credit_spend (uint32_t *credit, uint32_t len)
{
  if (len > *credit)
    return -1;
  *credit -= len;
  return 0;
}

static inline int
egress_proto_credit_grant (uint32_t *credit, uint32_t inc)
{
  if (inc == 0 || inc > EGRESS_WINDOW_MAX || *credit > EGRESS_WINDOW_MAX - inc)
    return -1;
  *credit += inc;
  return 0;
}

/* Encode one frame into out (EGRESS_HEADER_LEN + len bytes of room).
 * Returns the bytes written, or 0 when the frame would break a rule (an
 * encoder never emits what the other side must refuse). */
static inline size_t
egress_proto_encode (uint8_t *out, size_t size, unsigned type, unsigned flags, uint32_t stream,
                     const void *payload, uint32_t len, int from)
{
  if (egress_proto_header_problem (type, flags, 0, stream, len, from) != NULL
      || (len > 0 && payload == NULL) || size < (size_t) EGRESS_HEADER_LEN + len
      || (len > 0 && egress_proto_payload_problem (type, (const uint8_t *) payload, len) != NULL))
    return 0;
  egress_proto_put_header (out, type, flags, stream, len);
  if (len > 0)
    memcpy (out + EGRESS_HEADER_LEN, payload, len);
  return (size_t) EGRESS_HEADER_LEN + len;
}

#endif
