/* fuzz_egress_peek.c - the two looks the egress broker takes at a stream's
 * first bytes, both written by the build: the TLS ClientHello's SNI after a
 * CONNECT, and the first HTTP request's Host header (egress.c)
 *
 * Input: one control byte (bit 0: 0 the ClientHello reader, 1 the Host
 * check against `localhost:8080`), then the stream's first bytes.
 * Properties:
 *   - an SNI found is 1..253 printable bytes, lower case, no trailing dot;
 *   - the answer depends only on the first record / the request head: bytes
 *     after a complete one change nothing;
 *   - the Host check answers NULL or a printable one-line reason, and is
 *     only ever undecided (NULL, incomplete) below its 64 KiB head cap.
 */
#include "fuzz.h"

#include "egress.h"

static void
check_printable (const char *s)
{
  FUZZ_CHECK (s != NULL && *s != '\0');
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    FUZZ_CHECK (*p >= 0x20 && *p < 0x7f);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t *more;
  if (size < 1)
    return 0;
  bool http = data[0] & 1;
  data++, size--;
  more = malloc (size + 64);
  if (more == NULL)
    return 0;
  memcpy (more, data, size);
  memset (more + size, 'x', 64);

  if (!http)
    {
      char name[NETADDR_HOST_MAX + 2], name2[NETADDR_HOST_MAX + 2];
      int r = egress__client_hello_sni (data, size, name, sizeof name);
      FUZZ_CHECK (r >= -2 && r <= 1);
      if (r == 1)
        {
          size_t n = strlen (name);
          check_printable (name);
          FUZZ_CHECK (n <= NETADDR_HOST_MAX + 1 && name[n - 1] != '.');
          for (size_t i = 0; i < n; i++)
            FUZZ_CHECK (!(name[i] >= 'A' && name[i] <= 'Z'));
        }
      if (r != -2)
        {
          int r2 = egress__client_hello_sni (more, size + 64, name2, sizeof name2);
          FUZZ_CHECK (r2 == r);
          FUZZ_CHECK (r != 1 || strcmp (name, name2) == 0);
        }
    }
  else
    {
      struct netaddr_hostport want;
      bvm_error_t err = NULL;
      bool complete = false, complete2 = false;
      const char *why, *why2;

      if (netaddr_hostport_parse (&want, "localhost:8080", &err) < 0)
        abort ();
      why = egress__http_host_problem (data, size, &want, &complete);
      if (why != NULL)
        check_printable (why);
      else if (!complete)
        FUZZ_CHECK (size < (64u << 10));
      if (complete)
        {
          why2 = egress__http_host_problem (more, size + 64, &want, &complete2);
          FUZZ_CHECK (complete2 && why2 == why);
        }
    }
  free (more);
  return 0;
}
