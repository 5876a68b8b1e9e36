/* hello: `hello [NAME]` prints a greeting; `hello serve` answers every HTTP
 * request with one, on port $PORT (default 8080). Linked statically (the
 * Dockerfile's LDFLAGS=-static), it runs FROM scratch, without a C library. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int
serve (void)
{
  const char *p = getenv ("PORT");
  char *end = NULL;
  long port = p && *p ? strtol (p, &end, 10) : 8080;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_ANY) };
  int one = 1, fd;

  if ((end && *end) || port < 1 || port > 65535)
    {
      fprintf (stderr, "hello: PORT `%s` is not a port number\n", p);
      return 1;
    }
  sa.sin_port = htons ((unsigned short) port);
  signal (SIGPIPE, SIG_IGN);
  fd = socket (AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
      || bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (fd, 16) < 0)
    {
      fprintf (stderr, "hello: port %ld: %s\n", port, strerror (errno));
      return 1;
    }
  printf ("listening on %ld\n", port);
  fflush (stdout);
  for (;;)
    {
      static const char body[] = "hello, world\n";
      char req[4096], head[256];
      int c = accept (fd, NULL, NULL), n;
      if (c < 0)
        continue;
      /* one read is enough for the request line; the rest is not looked at */
      if (read (c, req, sizeof req) > 0)
        {
          n = snprintf (head, sizeof head,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        sizeof body - 1);
          if (write (c, head, (size_t) n) == n)
            (void) !write (c, body, sizeof body - 1);
        }
      close (c);
    }
}

int
main (int argc, char **argv)
{
  if (argc > 1 && strcmp (argv[1], "serve") == 0)
    return serve ();
  printf ("hello, %s\n", argc > 1 ? argv[1] : "world");
  return 0;
}
