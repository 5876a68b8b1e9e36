/* egress_frame.c - the incremental frame parser (egress_frame.h)
 *
 * The rules are egress_proto.h's; this file only gets the bytes together.
 * A frame that lies entirely within the caller's buffer, with nothing of it
 * buffered yet, is returned in place (no copy): the usual case for DATA read
 * in large chunks.
 */
#include "egress_frame.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int
egress_frame_parser_init (struct egress_frame_parser *p, int from, bvm_error_t *err)
{
  memset (p, 0, sizeof *p);
  if (from != EGRESS_FROM_GUEST && from != EGRESS_FROM_HOST)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "egress frame parser: bad direction");
  p->from = from;
  p->payload = malloc (EGRESS_PAYLOAD_MAX);
  if (p->payload == NULL)
    return bvm_error (err, ENOMEM, "egress frame parser");
  return 0;
}

void
egress_frame_parser_dispose (struct egress_frame_parser *p)
{
  free (p->payload);
  p->payload = NULL;
}

static int
fail (struct egress_frame_parser *p, const char *why, bvm_error_t *err)
{
  if (p->failed == NULL)
    p->failed = why;
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "egress channel protocol error at byte %llu (frame %llu): %s",
                         (unsigned long long) p->offset, (unsigned long long) p->frames + 1,
                         p->failed);
}

/* The header is complete: check it (before any payload byte is kept). */
static const char *
check_header (struct egress_frame_parser *p, unsigned *type, unsigned *flags, uint32_t *stream)
{
  unsigned reserved;
  const char *why;

  egress_proto_get_header (p->hdr, type, flags, &reserved, stream, &p->len);
  why = egress_proto_header_problem (*type, *flags, reserved, *stream, p->len, p->from);
  if (why != NULL)
    return why;
  if (!p->hello_seen && *type != EGRESS_HELLO)
    return "the first frame is not HELLO";
  if (p->hello_seen && *type == EGRESS_HELLO)
    return "a second HELLO";
  return NULL;
}

static int
finish (struct egress_frame_parser *p, const uint8_t *payload, struct egress_frame *out,
        bvm_error_t *err)
{
  unsigned type, flags, reserved;
  uint32_t stream, len;
  const char *why;

  egress_proto_get_header (p->hdr, &type, &flags, &reserved, &stream, &len);
  why = egress_proto_payload_problem (type, payload, len);
  if (why != NULL)
    return fail (p, why, err);
  if (type == EGRESS_HELLO)
    p->hello_seen = true;
  out->type = type;
  out->flags = flags;
  out->stream = stream;
  out->len = len;
  out->payload = payload;
  p->hdr_have = 0;
  p->payload_have = 0;
  p->frames++;
  return 1;
}

int
egress_frame_feed (struct egress_frame_parser *p, const uint8_t *data, size_t len, size_t *used,
                   struct egress_frame *out, bvm_error_t *err)
{
  size_t pos = 0;
  unsigned type, flags;
  uint32_t stream;
  const char *why;

  *used = 0;
  if (p->failed != NULL)
    return fail (p, p->failed, err);
  if (p->payload == NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "egress frame parser not initialized");

  if (p->hdr_have < EGRESS_HEADER_LEN)
    {
      size_t n = EGRESS_HEADER_LEN - p->hdr_have;
      if (n > len)
        n = len;
      if (n > 0)
        memcpy (p->hdr + p->hdr_have, data, n);
      p->hdr_have += n;
      pos += n;
      p->offset += n;
      *used = pos;
      if (p->hdr_have < EGRESS_HEADER_LEN)
        return 0;
      why = check_header (p, &type, &flags, &stream);
      if (why != NULL)
        return fail (p, why, err);
      /* all of it in the caller's buffer: no copy */
      if (len - pos >= p->len)
        {
          pos += p->len;
          p->offset += p->len;
          *used = pos;
          return finish (p, data + pos - p->len, out, err);
        }
    }
  {
    size_t n = p->len - p->payload_have;
    if (n > len - pos)
      n = len - pos;
    if (n > 0)
      memcpy (p->payload + p->payload_have, data + pos, n);
    p->payload_have += n;
    pos += n;
    p->offset += n;
    *used = pos;
    if (p->payload_have < p->len)
      return 0;
    return finish (p, p->payload, out, err);
  }
}

int
egress_frame_encode (uint8_t *out, size_t size, unsigned type, unsigned flags, uint32_t stream,
                     const void *payload, uint32_t len, int from, bvm_error_t *err)
{
  size_t n = egress_proto_encode (out, size, type, flags, stream, payload, len, from);
  if (n == 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0,
                           "encoding an egress %s frame for stream %u: not a valid frame",
                           egress_proto_type_name (type), stream);
  return (int) n;
}
