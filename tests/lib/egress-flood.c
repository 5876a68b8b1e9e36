/* egress-flood.c - many proxy requests from inside a build VM (built
 * -static by tests/integration/t_egress.sh)
 *
 *   egress-flood N TARGET
 *
 * Opens N connections to the proxy on 127.0.0.1:3128 one after another,
 * asks each for `CONNECT TARGET`, reads the status line, and prints how many
 * answers had each status: "flood: 10000 requests: 403=10000".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int
main (int argc, char **argv)
{
  static unsigned long codes[1000];
  unsigned long n, failed = 0;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (3128) };
  char req[512];

  if (argc != 3)
    return 2;
  n = strtoul (argv[1], NULL, 10);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  snprintf (req, sizeof req, "CONNECT %s HTTP/1.1\r\n\r\n", argv[2]);
  for (unsigned long i = 0; i < n; i++)
    {
      char buf[64] = { 0 };
      int fd = socket (AF_INET, SOCK_STREAM, 0), code;
      ssize_t got = 0, r;
      if (fd < 0 || connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0
          || write (fd, req, strlen (req)) != (ssize_t) strlen (req))
        {
          failed++;
          if (fd >= 0)
            close (fd);
          continue;
        }
      while (got < 12 && (r = read (fd, buf + got, sizeof buf - 1 - (size_t) got)) > 0)
        got += r;
      close (fd);
      if (got >= 12 && strncmp (buf, "HTTP/1.1 ", 9) == 0 && (code = atoi (buf + 9)) > 0
          && code < 1000)
        codes[code]++;
      else
        failed++;
    }
  printf ("flood: %lu requests:", n);
  for (int c = 0; c < 1000; c++)
    if (codes[c])
      printf (" %d=%lu", c, codes[c]);
  printf (" failed=%lu\n", failed);
  return 0;
}
