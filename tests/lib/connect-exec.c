/* connect-exec.c - a CONNECT client for the egress tests (built -static by
 * tests/integration/t_egress.sh and run inside the build VM)
 *
 *   connect-exec PROXY-IP:PORT TARGET CMD [ARGS...]
 *
 * Connects to the proxy, asks `CONNECT TARGET HTTP/1.1`, and when the answer
 * is 200 runs CMD with the tunnel on fd 3 (busybox `ssl_client -s 3 -n SNI`
 * then speaks TLS over it). Otherwise prints the proxy's answer and exits 22.
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
  struct sockaddr_in sa = { .sin_family = AF_INET };
  char req[512], head[4096];
  size_t have = 0;
  char *colon;
  int fd;

  if (argc < 4 || (colon = strchr (argv[1], ':')) == NULL)
    {
      fprintf (stderr, "usage: connect-exec PROXY-IP:PORT TARGET CMD [ARGS...]\n");
      return 2;
    }
  *colon = '\0';
  sa.sin_port = htons ((unsigned short) atoi (colon + 1));
  if (inet_pton (AF_INET, argv[1], &sa.sin_addr) != 1)
    return 2;
  fd = socket (AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      perror ("connect-exec: connect to the proxy");
      return 1;
    }
  snprintf (req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[2], argv[2]);
  if (write (fd, req, strlen (req)) != (ssize_t) strlen (req))
    return 1;
  /* read byte by byte: nothing of the tunnel may be consumed here */
  while (have < sizeof head - 1)
    {
      ssize_t n = read (fd, head + have, 1);
      if (n <= 0)
        break;
      have++;
      head[have] = '\0';
      if (have >= 4 && memcmp (head + have - 4, "\r\n\r\n", 4) == 0)
        break;
    }
  head[have] = '\0';
  if (strncmp (head, "HTTP/1.1 200", 12) != 0)
    {
      /* the rest of a refusal: its one-line reason */
      ssize_t n = read (fd, head + have, sizeof head - 1 - have);
      if (n > 0)
        head[have + (size_t) n] = '\0';
      fprintf (stderr, "connect-exec: the proxy answered: %s\n", head);
      return 22;
    }
  if (fd != 3 && (dup2 (fd, 3) < 0 || close (fd) < 0))
    return 1;
  execvp (argv[3], argv + 3);
  perror ("connect-exec: exec");
  return 127;
}
