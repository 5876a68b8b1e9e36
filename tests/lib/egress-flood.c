/* egress-flood.c - many proxy requests from inside a build VM (built
 * -static by tests/integration/t_egress.sh)
 *
 *   egress-flood N TARGET
 *
 * Opens N connections to the proxy on 127.0.0.1:3128 one after another,
 * asks each for `CONNECT TARGET`, reads the status line, and prints how many
 * answers had each status: "flood: 10000 requests: 403=10000 failed=0",
 * then the mean time from connect() to the status line, the set-up of a
 * connection through the proxy as a client sees it: " setup_us_mean=N" (a
 * mean, not a median: the build VM's clock ticks in 10 ms steps).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long
now_us (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


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
  long long total_us = 0;
  unsigned long timed = 0;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  snprintf (req, sizeof req, "CONNECT %s HTTP/1.1\r\n\r\n", argv[2]);
  for (unsigned long i = 0; i < n; i++)
    {
      char buf[64] = { 0 };
      long long t0 = now_us ();
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
      if (got >= 12)
        total_us += now_us () - t0, timed++;
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
  printf (" failed=%lu", failed);
  printf (" setup_us_mean=%lld\n", timed ? total_us / (long long) timed : -1LL);
  return 0;
}
