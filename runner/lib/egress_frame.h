/* egress_frame.h - the runner's side of the egress channel's framing
 *
 * The wire format, its limits and its rules are defined once, in
 * buildvm-image/agent/egress_proto.h, which the static guest agent includes
 * too (docs/architecture.md, "The egress channel", quotes it). This module
 * is the host's incremental parser over the bytes read from the channel:
 *
 *   struct egress_frame_parser p;
 *   egress_frame_parser_init (&p, EGRESS_FROM_GUEST, &err);
 *   while (len > 0)
 *     {
 *       ret = egress_frame_feed (&p, data, len, &used, &frame, &err);
 *       data += used, len -= used;
 *       if (ret < 0) -> protocol error: close the channel
 *       if (ret == 1) -> handle `frame` (its payload is valid until the next feed)
 *     }
 *   egress_frame_parser_dispose (&p);
 *
 * It keeps at most one frame (EGRESS_FRAME_MAX bytes, allocated once at
 * init) whatever the peer sends, checks the header as soon as its 12 bytes
 * are in (so a length of 4 GiB is refused after 12 bytes), and an error is
 * sticky: once the peer broke a rule the channel is over.
 */
#ifndef BUILDVM_EGRESS_FRAME_H
#define BUILDVM_EGRESS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#include "../../buildvm-image/agent/egress_proto.h"

struct egress_frame
{
  unsigned type;
  unsigned flags;
  uint32_t stream;
  uint32_t len;
  const uint8_t *payload; /* len bytes; borrowed until the next feed */
};

struct egress_frame_parser
{
  int from;           /* EGRESS_FROM_GUEST: we are the runner */
  bool hello_seen;    /* the peer's first frame was its HELLO */
  const char *failed; /* the sticky protocol error, or NULL */
  uint8_t hdr[EGRESS_HEADER_LEN];
  size_t hdr_have;
  uint32_t len;     /* the payload length of the frame being read */
  uint8_t *payload; /* EGRESS_PAYLOAD_MAX bytes */
  size_t payload_have;
  uint64_t frames; /* frames returned */
  uint64_t offset; /* bytes consumed: where an error happened */
};

/* `from`: who sends the bytes this parser reads (EGRESS_FROM_GUEST on the
 * runner). Allocates the one frame buffer. */
int egress_frame_parser_init (struct egress_frame_parser *p, int from, bvm_error_t *err);
void egress_frame_parser_dispose (struct egress_frame_parser *p);

/* Consume bytes up to the end of at most one frame: *used is how many.
 * Returns 1 with *out filled when a frame is complete and valid, 0 when
 * all of `data` was consumed without completing one, and a negative value
 * (BVM_E_INVALID, the reason and the channel offset in the message) on a
 * protocol error, which every later call returns again. */
int egress_frame_feed (struct egress_frame_parser *p, const uint8_t *data, size_t len,
                       size_t *used, struct egress_frame *out, bvm_error_t *err);

/* Encode one frame for the other side (`from` is ours). Returns the bytes
 * written (EGRESS_HEADER_LEN + len) or BVM_E_INTERNAL when the frame would
 * break a rule or does not fit: the runner never sends what the agent must
 * refuse. */
int egress_frame_encode (uint8_t *out, size_t size, unsigned type, unsigned flags, uint32_t stream,
                         const void *payload, uint32_t len, int from, bvm_error_t *err);

#endif
