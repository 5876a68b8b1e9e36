/* proxy.c - the build's HTTP proxy on 127.0.0.1:3128 (issue 13)
 *
 * The VM has no network device. When the runner gives it an egress channel
 * (a virtio-serial port named `buildvm.egress`), the agent forks this proxy
 * before the first step: it listens on 127.0.0.1:3128, takes CONNECT
 * requests (TLS, carried end to end: never terminated here) and
 * absolute-URI requests for plain HTTP (rewritten to origin-form with
 * `Connection: close`), and carries every client connection as one stream
 * of the channel (egress_proto.h). The runner decides; a refusal comes back
 * as OPEN_ERR and the client gets 403 / 502 / 429 / 504 with its reason.
 *
 * It runs as its own uid (not the build's), so the build can neither signal
 * nor trace it, and the end-of-step kill (kill_all, which spares it) leaves
 * it running from one step to the next. Memory is bounded: at most
 * PROXY_CLIENTS clients, each with a request buffer and a download buffer of
 * the credit the runner may use (EGRESS_WINDOW_INITIAL).
 */
#include "agent.h"
#include "egress_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROXY_PORT 3128
#define PROXY_UID 999
#define PROXY_CLIENTS 64
#define REQ_MAX (16u << 10)
#define OUT_CAP (1u << 20)

pid_t proxy_pid = -1;

enum cstate
{
  C_FREE = 0,
  C_REQ,  /* reading the request head */
  C_WAIT, /* OPEN sent */
  C_OPEN, /* streaming */
};

struct client
{
  enum cstate st;
  int fd;
  uint32_t id;
  bool connect_mode;
  char req[REQ_MAX + 1];
  size_t req_len;
  uint8_t *pend; /* bytes for the runner once the stream is open */
  size_t pend_len;
  uint8_t *down; /* from the runner, for the client */
  size_t down_len;
  uint32_t send_credit; /* what we may send the runner */
  bool eof_sent;        /* CLOSE sent: the client finished sending */
  bool host_closed;     /* CLOSE received */
  bool shut;            /* shutdown(SHUT_WR) of the client done */
  bool delivered;       /* a byte of the upstream's answer reached the client */
};

static struct client clients[PROXY_CLIENTS];
static int chan = -1;
static uint8_t out[OUT_CAP];
static size_t out_len;
static uint8_t in[EGRESS_FRAME_MAX];
static size_t in_len;
static bool hello_seen;
static uint32_t next_id = 1;

static bool
queue_frame (unsigned type, unsigned flags, uint32_t id, const void *p, uint32_t len)
{
  size_t n = egress_proto_encode (out + out_len, sizeof out - out_len, type, flags, id, p, len,
                                  EGRESS_FROM_GUEST);
  if (n == 0)
    return false;
  out_len += n;
  return true;
}

static void
client_free (struct client *c)
{
  if (c->fd >= 0)
    close (c->fd);
  free (c->pend);
  free (c->down);
  memset (c, 0, sizeof *c);
  c->fd = -1;
}

/* A complete answer of our own, then the connection ends. */
static void
client_answer (struct client *c, int status, const char *text, const char *reason)
{
  char buf[512];
  int n = snprintf (buf, sizeof buf,
                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\nbuildvm egress: %s\n",
                    status, text, strlen ("buildvm egress: ") + strlen (reason) + 1, reason);
  if (n > 0 && write (c->fd, buf, (size_t) n) < 0)
    {
      /* the client is gone: nothing to tell */
    }
  client_free (c);
}

static bool
header_is (const char *line, size_t len, const char *name)
{
  size_t k = strlen (name);
  return len > k && line[k] == ':' && strncasecmp (line, name, k) == 0;
}

/* The request head is complete in c->req (ends at `end`, after CRLFCRLF):
 * decide the target, build what goes to the runner first, send OPEN. */
static void
client_request (struct client *c, size_t end)
{
  char *sp1, *sp2, *eol;
  char target[EGRESS_TARGET_MAX + 1];
  size_t tlen;
  char *p;

  c->req[c->req_len] = '\0';
  eol = strstr (c->req, "\r\n");
  sp1 = memchr (c->req, ' ', (size_t) (eol - c->req));
  sp2 = sp1 ? memchr (sp1 + 1, ' ', (size_t) (eol - sp1 - 1)) : NULL;
  if (sp1 == NULL || sp2 == NULL)
    {
      client_answer (c, 400, "Bad Request", "malformed request line");
      return;
    }
  c->pend = malloc (REQ_MAX + 64);
  if (c->pend == NULL)
    {
      client_answer (c, 503, "Service Unavailable", "out of memory");
      return;
    }
  if ((size_t) (sp1 - c->req) == 7 && memcmp (c->req, "CONNECT", 7) == 0)
    {
      tlen = (size_t) (sp2 - sp1 - 1);
      if (tlen == 0 || tlen > EGRESS_TARGET_MAX)
        {
          client_answer (c, 400, "Bad Request", "bad CONNECT target");
          return;
        }
      memcpy (target, sp1 + 1, tlen);
      target[tlen] = '\0';
      c->connect_mode = true;
      /* bytes the client sent after its head are the tunnel's first */
      c->pend_len = c->req_len - end;
      memcpy (c->pend, c->req + end, c->pend_len);
    }
  else
    {
      const char *uri = sp1 + 1, *auth, *slash;
      size_t alen, plen, o = 0;
      bool has_port = false;

      if ((size_t) (sp2 - uri) < 7 || strncasecmp (uri, "http://", 7) != 0)
        {
          client_answer (c, 400, "Bad Request",
                         strncasecmp (uri, "https://", 8) == 0
                             ? "https:// through the proxy needs CONNECT"
                             : "only CONNECT and absolute http:// URIs are proxied");
          return;
        }
      auth = uri + 7;
      slash = auth;
      while (slash < sp2 && *slash != '/' && *slash != '?')
        slash++;
      alen = (size_t) (slash - auth);
      if (alen == 0 || alen + 6 > EGRESS_TARGET_MAX || memchr (auth, '@', alen) != NULL)
        {
          client_answer (c, 400, "Bad Request", "bad host in the URI");
          return;
        }
      memcpy (target, auth, alen);
      target[alen] = '\0';
      /* a port after the host, or after an IPv6 literal's bracket */
      p = strrchr (target, ':');
      if (p != NULL && (target[0] != '[' || p > strchr (target, ']')))
        has_port = true;
      if (!has_port)
        strcat (target, ":80");
      c->connect_mode = false;
      /* METHOD origin-form VERSION, then the headers minus hop-by-hop ones */
      plen = (size_t) (sp2 - slash);
      memcpy (c->pend + o, c->req, (size_t) (sp1 - c->req) + 1);
      o += (size_t) (sp1 - c->req) + 1;
      if (plen == 0 || *slash == '?')
        c->pend[o++] = '/';
      memcpy (c->pend + o, slash, plen);
      o += plen;
      memcpy (c->pend + o, sp2, (size_t) (eol - sp2) + 2);
      o += (size_t) (eol - sp2) + 2;
      for (char *l = eol + 2; l < c->req + end - 2;)
        {
          char *le = strstr (l, "\r\n");
          size_t ll = (size_t) (le - l);
          if (!header_is (l, ll, "Proxy-Connection") && !header_is (l, ll, "Proxy-Authorization")
              && !header_is (l, ll, "Connection") && !header_is (l, ll, "Keep-Alive"))
            {
              memcpy (c->pend + o, l, ll + 2);
              o += ll + 2;
            }
          l = le + 2;
        }
      memcpy (c->pend + o, "Connection: close\r\n\r\n", 21);
      o += 21;
      memcpy (c->pend + o, c->req + end, c->req_len - end);
      o += c->req_len - end;
      c->pend_len = o;
    }
  for (size_t i = 0; target[i]; i++)
    if (target[i] <= 0x20 || target[i] >= 0x7f)
      {
        client_answer (c, 400, "Bad Request", "bad target");
        return;
      }
  if (next_id > EGRESS_STREAM_ID_MAX)
    {
      client_answer (c, 503, "Service Unavailable", "stream ids exhausted");
      return;
    }
  c->id = next_id++;
  if (!queue_frame (EGRESS_OPEN, c->connect_mode ? EGRESS_OPEN_CONNECT : EGRESS_OPEN_HTTP, c->id,
                    target, (uint32_t) strlen (target)))
    {
      client_answer (c, 503, "Service Unavailable", "the channel is busy");
      return;
    }
  c->st = C_WAIT;
}

static void
client_read_head (struct client *c)
{
  ssize_t n = read (c->fd, c->req + c->req_len, REQ_MAX - c->req_len);
  char *end;
  if (n <= 0)
    {
      if (n == 0 || (errno != EAGAIN && errno != EINTR))
        client_free (c);
      return;
    }
  c->req_len += (size_t) n;
  c->req[c->req_len] = '\0';
  end = strstr (c->req, "\r\n\r\n");
  if (end != NULL)
    client_request (c, (size_t) (end + 4 - c->req));
  else if (c->req_len == REQ_MAX)
    client_answer (c, 431, "Request Header Fields Too Large", "request head over 16 KiB");
}

/* n bytes from the runner reached the client: their credit goes back. */
static void
client_delivered (struct client *c, uint32_t n)
{
  uint8_t inc[4];
  c->delivered = true;
  egress_proto_put32 (inc, n);
  queue_frame (EGRESS_WINDOW, 0, c->id, inc, 4);
}

static struct client *
by_id (uint32_t id)
{
  for (int i = 0; i < PROXY_CLIENTS; i++)
    if (clients[i].st != C_FREE && clients[i].id == id && clients[i].st != C_REQ)
      return &clients[i];
  return NULL;
}

static void
send_pending (struct client *c)
{
  while (c->pend_len > 0 && c->send_credit > 0)
    {
      uint32_t k = (uint32_t) (c->pend_len < EGRESS_PAYLOAD_MAX ? c->pend_len
                                                                : EGRESS_PAYLOAD_MAX);
      if (k > c->send_credit)
        k = c->send_credit;
      if (!queue_frame (EGRESS_DATA, 0, c->id, c->pend, k))
        return;
      c->send_credit -= k;
      memmove (c->pend, c->pend + k, c->pend_len - k);
      c->pend_len -= k;
    }
}

/* A frame from the runner; false: the channel broke a rule. */
static bool
handle_frame (unsigned type, unsigned flags, uint32_t id, const uint8_t *p, uint32_t len)
{
  struct client *c;
  static const struct
  {
    int status;
    const char *text;
  } errs[] = { { 0, "" },
               { 403, "Forbidden" },
               { 502, "Bad Gateway" },
               { 429, "Too Many Requests" },
               { 504, "Gateway Timeout" } };

  if (type == EGRESS_HELLO)
    {
      if (hello_seen)
        return false;
      hello_seen = true;
      return true;
    }
  if (!hello_seen)
    return false;
  c = by_id (id);
  if (c == NULL)
    return true; /* a stream we closed meanwhile */
  switch (type)
    {
    case EGRESS_OPEN_OK:
      if (c->st != C_WAIT)
        return false;
      c->down = malloc (EGRESS_WINDOW_INITIAL);
      if (c->down == NULL)
        {
          queue_frame (EGRESS_RESET, 0, c->id, "out of memory", 13);
          client_free (c);
          return true;
        }
      c->st = C_OPEN;
      c->send_credit = EGRESS_WINDOW_INITIAL;
      if (c->connect_mode)
        {
          static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
          if (write (c->fd, ok, sizeof ok - 1) != (ssize_t) sizeof ok - 1)
            {
              queue_frame (EGRESS_RESET, 0, c->id, NULL, 0);
              client_free (c);
              return true;
            }
        }
      send_pending (c);
      return true;
    case EGRESS_OPEN_ERR:
      {
        char reason[EGRESS_REASON_MAX + 1];
        if (c->st != C_WAIT)
          return false;
        memcpy (reason, p, len);
        reason[len] = '\0';
        client_answer (c, errs[flags].status, errs[flags].text, reason);
        return true;
      }
    case EGRESS_DATA:
      if (c->st != C_OPEN || c->host_closed || c->down_len + len > EGRESS_WINDOW_INITIAL)
        return false;
      /* nothing queued for the client: straight to its socket, and only
       * what it does not take now is copied (bench/egress.sh: a copy and
       * a poll round less per frame, under TCG where the guest's CPU is
       * what the download waits for) */
      if (c->down_len == 0)
        {
          ssize_t n = write (c->fd, p, len);
          if (n > 0)
            {
              client_delivered (c, (uint32_t) n);
              p += n;
              len -= (uint32_t) n;
            }
        }
      memcpy (c->down + c->down_len, p, len);
      c->down_len += len;
      return true;
    case EGRESS_WINDOW:
      if (c->st != C_OPEN
          || egress_proto_credit_grant (&c->send_credit, egress_proto_get32 (p)) < 0)
        return false;
      send_pending (c);
      return true;
    case EGRESS_CLOSE: c->host_closed = true; return true;
    case EGRESS_RESET:
      if (c->st == C_WAIT)
        {
          client_answer (c, 502, "Bad Gateway", "the runner reset the connection");
          return true;
        }
      if (!c->connect_mode && !c->delivered && len > 0)
        {
          /* refused on the first request (its Host header): say why */
          char reason[EGRESS_REASON_MAX + 1];
          if (len > EGRESS_REASON_MAX)
            len = EGRESS_REASON_MAX;
          memcpy (reason, p, len);
          reason[len] = '\0';
          client_answer (c, 403, "Forbidden", reason);
          return true;
        }
      client_free (c);
      return true;
    }
  return false;
}

/* One read of the channel and the frames it completes: 1 read something,
 * 0 nothing to read now, -1 the channel is gone or broke a rule. */
static int
chan_read (void)
{
  ssize_t n = read (chan, in + in_len, sizeof in - in_len);
  size_t off = 0;

  if (n <= 0)
    return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
  in_len += (size_t) n;
  while (in_len - off >= EGRESS_HEADER_LEN)
    {
      unsigned type, flags, reserved;
      uint32_t id, len;
      egress_proto_get_header (in + off, &type, &flags, &reserved, &id, &len);
      if (egress_proto_header_problem (type, flags, reserved, id, len, EGRESS_FROM_HOST) != NULL)
        return -1;
      if (in_len - off < EGRESS_HEADER_LEN + len)
        break;
      if (egress_proto_payload_problem (type, in + off + EGRESS_HEADER_LEN, len) != NULL
          || !handle_frame (type, flags, id, in + off + EGRESS_HEADER_LEN, len))
        return -1;
      off += EGRESS_HEADER_LEN + len;
    }
  /* only when a frame was taken: a 64 KiB frame comes in 4 KiB reads, and
   * moving the growing partial frame onto itself after each one copied
   * eight times the data (bench/egress.sh) */
  if (off > 0)
    {
      memmove (in, in + off, in_len - off);
      in_len -= off;
    }
  return 1;
}

/* The runner's CLOSE is a half-close: once every byte before it has reached
 * the client, the client sees EOF (shutdown(SHUT_WR)), and the stream ends
 * when the client has finished sending too. Called after a client's I/O and
 * after every round of frames, because the CLOSE may arrive when the data
 * before it is long delivered: then no event of the client's socket would
 * ever come to finish it (a client reading to EOF waited for ever). */
static void
client_settle (struct client *c)
{
  if (c->st != C_OPEN)
    return;
  if (c->host_closed && c->down_len == 0 && !c->shut)
    {
      shutdown (c->fd, SHUT_WR);
      c->shut = true;
    }
  if (c->shut && c->eof_sent)
    client_free (c);
}

/* Write what is queued for the runner, as far as the port takes it. */
static void
chan_flush (void)
{
  ssize_t n = write (chan, out, out_len);
  if (n > 0)
    {
      memmove (out, out + n, out_len - (size_t) n);
      out_len -= (size_t) n;
    }
}

static void
client_io (struct client *c, short rev)
{
  if (c->st == C_REQ)
    {
      if (rev & (POLLIN | POLLHUP | POLLERR))
        client_read_head (c);
      return;
    }
  if (c->st != C_OPEN)
    {
      if (rev & (POLLHUP | POLLERR))
        {
          /* gave up waiting; the OPEN_OK or OPEN_ERR that comes is dropped */
          queue_frame (EGRESS_RESET, 0, c->id, NULL, 0);
          client_free (c);
        }
      return;
    }
  if ((rev & POLLOUT) && c->down_len > 0)
    {
      ssize_t n = write (c->fd, c->down, c->down_len);
      if (n > 0)
        {
          memmove (c->down, c->down + n, c->down_len - (size_t) n);
          c->down_len -= (size_t) n;
          client_delivered (c, (uint32_t) n);
        }
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        {
          queue_frame (EGRESS_RESET, 0, c->id, NULL, 0);
          client_free (c);
          return;
        }
    }
  if ((rev & (POLLIN | POLLHUP | POLLERR)) && !c->eof_sent && c->pend_len == 0
      && c->send_credit > 0 && out_len + EGRESS_FRAME_MAX <= sizeof out)
    {
      static uint8_t buf[EGRESS_PAYLOAD_MAX];
      size_t want = c->send_credit < sizeof buf ? c->send_credit : sizeof buf;
      ssize_t n = read (c->fd, buf, want);
      if (n > 0)
        {
          queue_frame (EGRESS_DATA, 0, c->id, buf, (uint32_t) n);
          c->send_credit -= (uint32_t) n;
        }
      else if (n == 0)
        {
          queue_frame (EGRESS_CLOSE, 0, c->id, NULL, 0);
          c->eof_sent = true;
        }
      else if (errno != EAGAIN && errno != EINTR)
        {
          queue_frame (EGRESS_RESET, 0, c->id, NULL, 0);
          client_free (c);
          return;
        }
    }
  client_settle (c);
}

static void __attribute__ ((noreturn)) proxy_main (int lfd)
{
  static struct pollfd fds[PROXY_CLIENTS + 2];
  static int map[PROXY_CLIENTS + 2];
  uint8_t v[4];

  for (int i = 0; i < PROXY_CLIENTS; i++)
    clients[i].fd = -1;
  egress_proto_put32 (v, EGRESS_VERSION);
  queue_frame (EGRESS_HELLO, 0, 0, v, 4);
  for (;;)
    {
      nfds_t nf = 0;
      bool room = out_len + EGRESS_FRAME_MAX <= sizeof out;
      fds[nf++] = (struct pollfd){ chan, (short) ((room ? POLLIN : 0) | (out_len ? POLLOUT : 0)),
                                   0 };
      fds[nf++] = (struct pollfd){ lfd, POLLIN, 0 };
      for (int i = 0; i < PROXY_CLIENTS; i++)
        {
          struct client *c = &clients[i];
          short ev = 0;
          if (c->st == C_FREE)
            continue;
          if (c->st == C_REQ)
            ev = POLLIN;
          else if (c->st == C_OPEN)
            {
              if (c->down_len > 0)
                ev |= POLLOUT;
              if (!c->eof_sent && c->pend_len == 0 && c->send_credit > 0 && room)
                ev |= POLLIN;
            }
          map[nf] = i;
          /* an open stream with nothing to do now is not polled: its
           * hang-up would spin the loop until credit comes */
          fds[nf++] = (struct pollfd){ (ev || c->st != C_OPEN) ? c->fd : -1, ev, 0 };
        }
      if (poll (fds, nf, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          _exit (1);
        }
      if (fds[0].revents & POLLOUT)
        chan_flush ();
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
        {
          int r;
          /* a virtio-serial read returns one 4 KiB buffer of the port:
           * drain what is there (while the replies fit) before polling
           * again, a poll less per 4 KiB */
          for (int k = 0; k < 64; k++)
            {
              r = chan_read ();
              /* the credit for what the clients took goes back now, not
               * after the loop: the runner would wait for it */
              if (out_len > 0)
                chan_flush ();
              if (r <= 0 || out_len + EGRESS_FRAME_MAX > sizeof out)
                break;
            }
          if (r < 0)
            {
              console_printf (
                  "buildvm-agent: the egress channel broke its protocol; egress ends\n");
              _exit (1);
            }
          for (int i = 0; i < PROXY_CLIENTS; i++)
            client_settle (&clients[i]);
        }
      if (fds[1].revents & POLLIN)
        {
          /* accept4 takes NULL for an address it need not return; cppcheck's
           * posix library says otherwise */
          /* cppcheck-suppress nullPointer */
          int cfd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd >= 0)
            {
              int i;
              for (i = 0; i < PROXY_CLIENTS && clients[i].st != C_FREE; i++)
                ;
              if (i == PROXY_CLIENTS)
                {
                  static const char busy[]
                      = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n";
                  if (write (cfd, busy, sizeof busy - 1) < 0)
                    {
                    }
                  close (cfd);
                }
              else
                {
                  memset (&clients[i], 0, sizeof clients[i]);
                  clients[i].fd = cfd;
                  clients[i].st = C_REQ;
                }
            }
        }
      for (nfds_t k = 2; k < nf; k++)
        {
          struct client *c = &clients[map[k]];
          if (c->st != C_FREE && c->fd == fds[k].fd && fds[k].revents)
            client_io (c, fds[k].revents);
        }
    }
}

/* Bring up `lo`: the kernel leaves it down, and the proxy listens on it. */
static int
loopback_up (void)
{
  struct ifreq ifr;
  int s = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int ret = -1;
  if (s < 0)
    return -1;
  memset (&ifr, 0, sizeof ifr);
  strcpy (ifr.ifr_name, "lo");
  if (ioctl (s, SIOCGIFFLAGS, &ifr) == 0)
    {
      ifr.ifr_flags |= IFF_UP;
      ret = ioctl (s, SIOCSIFFLAGS, &ifr);
    }
  close (s);
  return ret;
}

int
proxy_start (char *msg, size_t msgsz)
{
  char dev[300];
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (PROXY_PORT) };
  int one = 1, lfd;
  pid_t pid;

  if (agent_find_port (PROTO_EGRESS_PORT, dev, sizeof dev) < 0)
    return 0; /* no channel: the build has no egress */
  if (loopback_up () < 0)
    {
      snprintf (msg, msgsz, "bringing up lo: %s", strerror (errno));
      return -1;
    }
  chan = open (dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (chan < 0)
    {
      snprintf (msg, msgsz, "open the egress port `%s`: %s", dev, strerror (errno));
      return -1;
    }
  lfd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (lfd < 0 || setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
      || bind (lfd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (lfd, 128) < 0)
    {
      snprintf (msg, msgsz, "listen on 127.0.0.1:%d: %s", PROXY_PORT, strerror (errno));
      return -1;
    }
  pid = fork ();
  if (pid < 0)
    {
      snprintf (msg, msgsz, "fork the proxy: %s", strerror (errno));
      return -1;
    }
  if (pid == 0)
    {
      sigset_t none;
      int keep = console_fd ();
      /* nothing of the agent's but the console: not the output disk */
      for (int fd = 3; fd < 1024; fd++)
        if (fd != chan && fd != lfd && fd != keep)
          close (fd);
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      signal (SIGPIPE, SIG_IGN);
      /* its own uid: the build (uid 1000) cannot signal or trace it */
      if (setgroups (0, NULL) < 0 || setresgid (PROXY_UID, PROXY_UID, PROXY_UID) < 0
          || setresuid (PROXY_UID, PROXY_UID, PROXY_UID) < 0
          || prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        _exit (1);
      proxy_main (lfd);
    }
  close (lfd);
  close (chan);
  chan = -1;
  proxy_pid = pid;
  return 1;
}
