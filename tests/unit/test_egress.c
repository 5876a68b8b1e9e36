/* test_egress.c - the connection broker (egress.h) with a socket pair
 * standing in for the VM's channel and real upstreams on 127.0.0.1 */
#include "support.h"

#include "egress.h"
#include "egress_frame.h"
#include "policy.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char role_doc[]
    = "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\", \"Action\": "
      "\"net:Connect\", \"Resource\": [\"net:127.0.0.1:*\", \"net:127.0.0.2:*\", \"net:localhost:*\", "
      "\"net:169.254.169.254:80\"]}]}";

struct fixture
{
  struct egress_settings settings;
  struct role *role;
  struct egress *e;
  int guest;    /* our end of the channel */
  int listener; /* an upstream on 127.0.0.1 */
  uint16_t port;
  char log[16384];
  size_t log_len;
  bool chan_closed; /* the broker logged "channel closed" (its thread sets it) */
};

static void
on_log (void *opaque, const char *line)
{
  struct fixture *f = opaque;
  size_t n = strlen (line);
  if (f->log_len + n + 2 < sizeof f->log)
    {
      memcpy (f->log + f->log_len, line, n);
      f->log_len += n;
      f->log[f->log_len++] = '\n';
      f->log[f->log_len] = '\0';
    }
  if (strstr (line, "channel closed") != NULL)
    __atomic_store_n (&f->chan_closed, true, __ATOMIC_RELEASE);
}

static void
setup_with (struct fixture *f, uint64_t connections)
{
  struct policy *p = NULL;
  struct policy_vars vars = { "app", "c0ffee", "refs/heads/main", "job-1" };
  struct egress_opts o = { 0 };
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t sl = sizeof sa;
  struct timeval tv = { 5, 0 };
  bvm_error_t err = NULL;
  int sv[2];

  memset (f, 0, sizeof *f);
  assert_ok (egress_settings_load (&f->settings, NULL, NULL, &err), &err);
  assert_ok (netaddr_allow_parse (&f->settings.allow_addresses, "127.0.0.1/32", &err), &err);
  f->settings.limits.connections = connections;
  assert_ok (policy_parse (&p, role_doc, strlen (role_doc), "test-role", &err), &err);
  assert_ok (role_mint (&f->role, p, NULL, &vars, wall_s () + 600, &err), &err);
  policy_free (p);

  f->listener = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  assert_int_equal (bind (f->listener, (struct sockaddr *) &sa, sizeof sa), 0);
  assert_int_equal (listen (f->listener, 16), 0);
  assert_int_equal (getsockname (f->listener, (struct sockaddr *) &sa, &sl), 0);
  f->port = ntohs (sa.sin_port);

  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  setsockopt (sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  f->guest = sv[1];
  o.settings = &f->settings;
  o.role = f->role;
  o.log = on_log;
  o.opaque = f;
  assert_ok (egress_start (&f->e, sv[0], &o, &err), &err);
}

static void
teardown_f (struct fixture *f)
{
  egress_free (f->e);
  role_free (f->role);
  egress_settings_dispose (&f->settings);
  close (f->guest);
  close (f->listener);
}

static void
send_frame (struct fixture *f, unsigned type, unsigned flags, uint32_t id, const void *p,
            uint32_t len)
{
  uint8_t buf[EGRESS_FRAME_MAX];
  size_t n = egress_proto_encode (buf, sizeof buf, type, flags, id, p, len, EGRESS_FROM_GUEST);
  assert_true (n > 0);
  assert_int_equal (write (f->guest, buf, n), (ssize_t) n);
}

static void
send_raw (struct fixture *f, const void *p, size_t n)
{
  assert_int_equal (write (f->guest, p, n), (ssize_t) n);
}

static bool
read_full (int fd, uint8_t *p, size_t n)
{
  while (n > 0)
    {
      ssize_t r = read (fd, p, n);
      if (r <= 0)
        return false;
      p += r;
      n -= (size_t) r;
    }
  return true;
}

struct rframe
{
  unsigned type, flags;
  uint32_t id, len;
  uint8_t p[EGRESS_PAYLOAD_MAX + 1];
};

/* The next frame from the runner that is not a WINDOW (those are checked
 * only where they matter); false at EOF. */
static bool
next_frame (struct fixture *f, struct rframe *r, bool skip_window)
{
  for (;;)
    {
      uint8_t h[EGRESS_HEADER_LEN];
      unsigned reserved;
      if (!read_full (f->guest, h, sizeof h))
        return false;
      egress_proto_get_header (h, &r->type, &r->flags, &reserved, &r->id, &r->len);
      assert_null (egress_proto_header_problem (r->type, r->flags, reserved, r->id, r->len,
                                                EGRESS_FROM_HOST));
      assert_true (read_full (f->guest, r->p, r->len));
      r->p[r->len] = '\0';
      if (!(skip_window && r->type == EGRESS_WINDOW))
        return true;
    }
}

static void
hello (struct fixture *f)
{
  struct rframe r;
  uint8_t v[4];
  egress_proto_put32 (v, EGRESS_VERSION);
  send_frame (f, EGRESS_HELLO, 0, 0, v, 4);
  assert_true (next_frame (f, &r, true));
  assert_int_equal (r.type, EGRESS_HELLO);
}

static void
open_target (struct fixture *f, uint32_t id, unsigned mode, const char *target)
{
  send_frame (f, EGRESS_OPEN, mode, id, target, (uint32_t) strlen (target));
}

static void
test_open_data_close (void **state)
{
  struct fixture f;
  struct rframe r;
  char target[64], buf[128], req[128];
  size_t reqlen;
  int up;
  json_t *rec, *c;
  (void) state;

  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "127.0.0.1:%u", f.port);
  open_target (&f, 1, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (up >= 0);
  {
    struct timeval tv = { 3, 0 };
    setsockopt (up, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  assert_int_equal (r.id, 1);
  /* the request names the host it was opened for: it goes through */
  snprintf (req, sizeof req, "GET / HTTP/1.1\r\nhost:  127.0.0.1:%u \r\n\r\n", f.port);
  reqlen = strlen (req);
  send_frame (&f, EGRESS_DATA, 0, 1, req, (uint32_t) reqlen);
  assert_true (read_full (up, (uint8_t *) buf, reqlen));
  assert_memory_equal (buf, req, reqlen);
  /* the bytes were taken: their credit comes back */
  assert_true (next_frame (&f, &r, false));
  assert_int_equal (r.type, EGRESS_WINDOW);
  assert_int_equal (egress_proto_get32 (r.p), reqlen);
  assert_int_equal (write (up, "pong!", 5), 5);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_DATA);
  assert_int_equal (r.len, 5);
  assert_memory_equal (r.p, "pong!", 5);
  /* half-closes both ways end the stream: the upstream's first (as an
   * HTTP server with Connection: close does), then the guest's */
  shutdown (up, SHUT_WR);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_CLOSE);
  send_frame (&f, EGRESS_CLOSE, 0, 1, NULL, 0);
  assert_int_equal (read (up, buf, sizeof buf), 0);
  close (up);
  usleep (200 * 1000);
  egress_stop (f.e);
  rec = egress_record (f.e);
  c = json_array_get (json_object_get (rec, "connections"), 0);
  assert_non_null (c);
  assert_string_equal (json_string_value (json_object_get (c, "decision")), "allow");
  assert_string_equal (json_string_value (json_object_get (c, "address")), "127.0.0.1");
  assert_int_equal (json_integer_value (json_object_get (c, "bytes_out")), (json_int_t) reqlen);
  assert_int_equal (json_integer_value (json_object_get (c, "bytes_in")), 5);
  /* it ended on the two half-closes, not when the broker stopped (a stream
   * with no socket event left used to live until the VM was gone) */
  if (strstr (json_string_value (json_object_get (c, "reason")), "ended") != NULL)
    fail_msg ("the stream ended only with the broker: `%s`",
              json_string_value (json_object_get (c, "reason")));
  assert_int_equal (egress_denied (f.e), 0);
  assert_non_null (strstr (f.log, "[egress] allow HTTP 127.0.0.1:"));
  json_decref (rec);
  teardown_f (&f);
}

/* A close is ordered both ways: every DATA before a CLOSE arrives before the
 * half-close it stands for. The guest's DATA and CLOSE come in one write
 * while the upstream is not reading yet; the upstream writes 1 MiB and
 * closes at once, while the guest holds back credit, so the FIN is there
 * long before the bytes before it are sent on. */
static void
test_close_ordered (void **state)
{
  struct fixture f;
  struct rframe r;
  char target[64], req[128];
  static uint8_t chunk[EGRESS_FRAME_MAX * 3], buf[65536];
  size_t reqlen, n = 0, got = 0, sent = 0;
  uint64_t down = 0;
  bool closed = false;
  pid_t pid;
  int up, status;
  json_t *rec, *c;
  (void) state;

  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "127.0.0.1:%u", f.port);
  open_target (&f, 1, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (up >= 0);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  /* three DATA frames (the request, then 2 x 64 KiB) and the CLOSE, one write */
  snprintf (req, sizeof req, "PUT / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", f.port);
  reqlen = strlen (req);
  n += egress_proto_encode (chunk + n, sizeof chunk - n, EGRESS_DATA, 0, 1, req, (uint32_t) reqlen,
                            EGRESS_FROM_GUEST);
  memset (buf, 'u', sizeof buf);
  for (int i = 0; i < 2; i++)
    n += egress_proto_encode (chunk + n, sizeof chunk - n, EGRESS_DATA, 0, 1, buf,
                              EGRESS_PAYLOAD_MAX, EGRESS_FROM_GUEST);
  n += egress_proto_encode (chunk + n, sizeof chunk - n, EGRESS_CLOSE, 0, 1, NULL, 0,
                            EGRESS_FROM_GUEST);
  send_raw (&f, chunk, n);
  sent = reqlen + 2 * EGRESS_PAYLOAD_MAX;
  usleep (100 * 1000);
  /* the upstream reads everything the guest sent, then EOF: nothing lost */
  {
    struct timeval tv = { 3, 0 };
    ssize_t k;
    setsockopt (up, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while ((k = read (up, buf, sizeof buf)) > 0)
      got += (size_t) k;
    assert_int_equal (k, 0);
    assert_int_equal (got, sent);
  }
  /* the upstream answers 1 MiB and closes at once */
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      memset (buf, 'd', sizeof buf);
      for (int i = 0; i < 16; i++)
        if (write (up, buf, sizeof buf) != (ssize_t) sizeof buf)
          _exit (1);
      _exit (close (up) == 0 ? 0 : 1);
    }
  close (up);
  /* read the whole first window before giving any credit back: the FIN is
   * in by then, and the CLOSE must still wait for the rest */
  while (down < EGRESS_WINDOW_INITIAL)
    {
      assert_true (next_frame (&f, &r, true));
      if (r.type != EGRESS_DATA)
        fail_msg ("frame %u after %llu bytes, before the window was spent", r.type,
                  (unsigned long long) down);
      down += r.len;
    }
  usleep (200 * 1000);
  {
    uint8_t inc[4];
    egress_proto_put32 (inc, EGRESS_WINDOW_INITIAL);
    send_frame (&f, EGRESS_WINDOW, 0, 1, inc, 4);
  }
  while (!closed)
    {
      uint8_t inc[4];
      assert_true (next_frame (&f, &r, true));
      if (r.type == EGRESS_CLOSE)
        {
          closed = true;
          break;
        }
      assert_int_equal (r.type, EGRESS_DATA);
      down += r.len;
      egress_proto_put32 (inc, r.len);
      send_frame (&f, EGRESS_WINDOW, 0, 1, inc, 4);
    }
  if (down != (uint64_t) 16 * sizeof buf)
    fail_msg ("CLOSE after %llu of %zu bytes", (unsigned long long) down, 16 * sizeof buf);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  usleep (200 * 1000);
  egress_stop (f.e);
  rec = egress_record (f.e);
  c = json_array_get (json_object_get (rec, "connections"), 0);
  assert_non_null (c);
  assert_int_equal (json_integer_value (json_object_get (c, "bytes_out")), (json_int_t) sent);
  assert_int_equal (json_integer_value (json_object_get (c, "bytes_in")), 16 * sizeof buf);
  /* both half-closes done: it ended then, not with the broker */
  if (strstr (json_string_value (json_object_get (c, "reason")), "ended") != NULL)
    fail_msg ("the stream ended only with the broker: `%s`",
              json_string_value (json_object_get (c, "reason")));
  json_decref (rec);
  teardown_f (&f);
}

static void
expect_refusal (struct fixture *f, uint32_t id, const char *target, unsigned code,
                const char *needle)
{
  struct rframe r;
  open_target (f, id, EGRESS_OPEN_HTTP, target);
  assert_true (next_frame (f, &r, true));
  if (r.type != EGRESS_OPEN_ERR || r.flags != code || strstr ((char *) r.p, needle) == NULL)
    fail_msg ("OPEN %s: frame %u flags %u `%s`, expected OPEN_ERR %u with `%s`", target, r.type,
              r.flags, (char *) r.p, code, needle);
}

static void
test_denials (void **state)
{
  struct fixture f;
  char target[64];
  (void) state;

  setup_with (&f, 8);
  hello (&f);
  expect_refusal (&f, 1, "example.com:80", EGRESS_ERR_DENIED, "role denies net:example.com:80");
  /* allowed by the role, refused by the address rules, every spelling */
  expect_refusal (&f, 2, "169.254.169.254:80", EGRESS_ERR_DENIED, "link-local");
  expect_refusal (&f, 3, "0xa9fea9fe:80", EGRESS_ERR_DENIED, "link-local");
  expect_refusal (&f, 4, "2852039166:80", EGRESS_ERR_DENIED, "link-local");
  expect_refusal (&f, 5, "[::ffff:169.254.169.254]:80", EGRESS_ERR_DENIED, "link-local");
  expect_refusal (&f, 6, "bad_host:80", EGRESS_ERR_DENIED, "");
  expect_refusal (&f, 7, "1.2.3.4.5:80", EGRESS_ERR_DENIED, "");
  /* loopback is only allowed as 127.0.0.1/32 */
  snprintf (target, sizeof target, "127.0.0.2:%u", f.port);
  expect_refusal (&f, 8, target, EGRESS_ERR_DENIED, "loopback");
  egress_stop (f.e);
  assert_int_equal (egress_denied (f.e), 8);
  teardown_f (&f);
}

static void
test_connection_limit (void **state)
{
  struct fixture f;
  struct rframe r;
  char target[64];
  int up, up2;
  int64_t t0, ms;
  json_t *rec;
  (void) state;

  setup_with (&f, 2);
  hello (&f);
  snprintf (target, sizeof target, "127.0.0.1:%u", f.port);
  open_target (&f, 1, EGRESS_OPEN_CONNECT, target);
  open_target (&f, 2, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  up2 = accept (f.listener, NULL, NULL);
  assert_true (up >= 0 && up2 >= 0);
  for (int i = 0; i < 2; i++)
    {
      assert_true (next_frame (&f, &r, true));
      assert_int_equal (r.type, EGRESS_OPEN_OK);
    }
  /* both held open by a silent upstream: the third OPEN is refused at once
   * (OPEN_ERR LIMIT, the proxy's 429), it does not wait for a slot */
  t0 = now_ms ();
  expect_refusal (&f, 3, target, EGRESS_ERR_LIMIT,
                  "too many concurrent connections (egress.limits.connections)");
  ms = now_ms () - t0;
  if (ms > 500)
    fail_msg ("the refusal took %lld ms", (long long) ms);
  if (strstr (f.log, "[egress] deny HTTP 127.0.0.1:") == NULL
      || strstr (f.log, "too many concurrent connections") == NULL)
    fail_msg ("no refusal in the log: %s", f.log);
  /* a slot freed by a RESET is usable again */
  send_frame (&f, EGRESS_RESET, 0, 1, NULL, 0);
  close (up);
  open_target (&f, 4, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (up >= 0);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  assert_int_equal (r.id, 4);
  close (up);
  close (up2);
  egress_stop (f.e);
  assert_int_equal (egress_denied (f.e), 1);
  rec = egress_record (f.e);
  assert_int_equal (json_integer_value (json_object_get (rec, "denied")), 1);
  json_decref (rec);
  teardown_f (&f);
}

/* A ClientHello with one extension, server_name = sni (NULL: none). */
static size_t
client_hello (uint8_t *b, const char *sni)
{
  size_t n = 0, hs, ext, sl = sni ? strlen (sni) : 0;
  b[n++] = 0x16, b[n++] = 0x03, b[n++] = 0x01, n += 2;
  hs = n;
  b[n++] = 0x01, n += 3;
  b[n++] = 0x03, b[n++] = 0x03;
  memset (b + n, 7, 32), n += 32;
  b[n++] = 0;                                        /* session id */
  b[n++] = 0, b[n++] = 2, b[n++] = 0x13, b[n++] = 1; /* one cipher suite */
  b[n++] = 1, b[n++] = 0;                            /* no compression */
  ext = n;
  n += 2;
  if (sni)
    {
      b[n++] = 0, b[n++] = 0;
      b[n++] = (uint8_t) ((sl + 5) >> 8), b[n++] = (uint8_t) (sl + 5);
      b[n++] = (uint8_t) ((sl + 3) >> 8), b[n++] = (uint8_t) (sl + 3);
      b[n++] = 0;
      b[n++] = (uint8_t) (sl >> 8), b[n++] = (uint8_t) sl;
      memcpy (b + n, sni, sl), n += sl;
    }
  b[ext] = (uint8_t) ((n - ext - 2) >> 8), b[ext + 1] = (uint8_t) (n - ext - 2);
  b[hs + 1] = 0, b[hs + 2] = (uint8_t) ((n - hs - 4) >> 8), b[hs + 3] = (uint8_t) (n - hs - 4);
  b[3] = (uint8_t) ((n - 5) >> 8), b[4] = (uint8_t) (n - 5);
  return n;
}

static void
test_sni (void **state)
{
  struct fixture f;
  struct rframe r;
  uint8_t ch[512], got[512];
  char target[64];
  size_t n;
  int up;
  (void) state;

  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "localhost:%u", f.port);
  /* the SNI names another host: reset before a byte reaches the upstream */
  open_target (&f, 1, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  n = client_hello (ch, "evil.example");
  send_frame (&f, EGRESS_DATA, 0, 1, ch, (uint32_t) n);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_RESET);
  assert_non_null (
      strstr ((char *) r.p, "SNI `evil.example` is not the CONNECT host `localhost`"));
  assert_int_equal (read (up, got, sizeof got), 0);
  close (up);
  /* no SNI at all, for a name */
  open_target (&f, 2, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  n = client_hello (ch, NULL);
  send_frame (&f, EGRESS_DATA, 0, 2, ch, (uint32_t) n);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_RESET);
  assert_non_null (strstr ((char *) r.p, "names no server"));
  close (up);
  /* the right SNI, sent in two pieces: the hello passes unchanged */
  open_target (&f, 3, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  n = client_hello (ch, "LocalHost.");
  send_frame (&f, EGRESS_DATA, 0, 3, ch, 7);
  send_frame (&f, EGRESS_DATA, 0, 3, ch + 7, (uint32_t) (n - 7));
  assert_true (read_full (up, got, n));
  assert_memory_equal (got, ch, n);
  close (up);
  /* half a ClientHello, then CLOSE: reset at once, nothing passed on (it
   * used to wait for the idle limit) */
  open_target (&f, 4, EGRESS_OPEN_CONNECT, target);
  up = accept (f.listener, NULL, NULL);
  do /* stream 3's CLOSE may come first */
    assert_true (next_frame (&f, &r, true));
  while (r.id != 4);
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  n = client_hello (ch, "localhost");
  send_frame (&f, EGRESS_DATA, 0, 4, ch, 7);
  send_frame (&f, EGRESS_CLOSE, 0, 4, NULL, 0);
  do
    assert_true (next_frame (&f, &r, true));
  while (r.id != 4);
  assert_int_equal (r.type, EGRESS_RESET);
  assert_int_equal (r.id, 4);
  assert_non_null (strstr ((char *) r.p, "closed before its first bytes could be checked"));
  assert_int_equal (read (up, got, sizeof got), 0);
  close (up);
  egress_stop (f.e);
  assert_int_equal (egress_denied (f.e), 2);
  teardown_f (&f);
}

/* Plain HTTP: the first request's Host header must be the OPEN host. */
static void
test_http_host (void **state)
{
  static const char *const bad[] = {
    "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: localhost:1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: bad_name\r\n\r\n",
  };
  struct fixture f;
  struct rframe r;
  char target[64], req[128];
  uint8_t got[256];
  int up;
  (void) state;

  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "localhost:%u", f.port);
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      open_target (&f, (uint32_t) i + 1, EGRESS_OPEN_HTTP, target);
      up = accept (f.listener, NULL, NULL);
      assert_true (next_frame (&f, &r, true));
      assert_int_equal (r.type, EGRESS_OPEN_OK);
      send_frame (&f, EGRESS_DATA, 0, (uint32_t) i + 1, bad[i], (uint32_t) strlen (bad[i]));
      assert_true (next_frame (&f, &r, true));
      if (r.type != EGRESS_RESET || strstr ((char *) r.p, "Host") == NULL)
        fail_msg ("request %zu: frame %u `%s`, expected a RESET about Host", i, r.type,
                  (char *) r.p);
      assert_int_equal (read (up, got, sizeof got), 0); /* not a byte reached it */
      close (up);
    }
  /* the bare name, and the name with the port, both pass; so does HTTP/1.0
   * without a Host header (there is no other site to ask for) */
  snprintf (req, sizeof req, "GET / HTTP/1.1\r\nHost: LOCALHOST.\r\n\r\n");
  open_target (&f, 10, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (next_frame (&f, &r, true));
  send_frame (&f, EGRESS_DATA, 0, 10, req, 20);
  send_frame (&f, EGRESS_DATA, 0, 10, req + 20, (uint32_t) strlen (req) - 20);
  assert_true (read_full (up, got, strlen (req)));
  close (up);
  open_target (&f, 11, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  assert_true (next_frame (&f, &r, true));
  send_frame (&f, EGRESS_DATA, 0, 11, "GET / HTTP/1.0\r\n\r\n", 18);
  assert_true (read_full (up, got, 18));
  close (up);
  egress_stop (f.e);
  assert_int_equal (egress_denied (f.e), ARRAY_SIZE (bad));
  teardown_f (&f);
}

static void
expect_channel_end (struct fixture *f, const char *needle)
{
  struct rframe r;
  struct timeval tv = { 0, 200 * 1000 };
  int64_t until = now_ms () + 30000;
  json_t *rec;
  /* the broker ends the channel (and drains it after an error: nothing more
   * comes); a loaded machine may take a while to get there, so wait for its
   * word, not for a quiet second */
  setsockopt (f->guest, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  do
    while (next_frame (f, &r, true))
      ;
  while (!__atomic_load_n (&f->chan_closed, __ATOMIC_ACQUIRE) && now_ms () < until);
  egress_stop (f->e);
  rec = egress_record (f->e);
  if (strstr (json_string_value (json_object_get (rec, "error")) ?: "", needle) == NULL)
    fail_msg ("record error `%s`, expected `%s`",
              json_string_value (json_object_get (rec, "error")), needle);
  json_decref (rec);
}

static void
test_hostile_frames (void **state)
{
  struct fixture f;
  static const uint8_t unknown[12] = { 99, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
  static const uint8_t huge[12] = { EGRESS_DATA, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff };
  static uint8_t big[EGRESS_PAYLOAD_MAX];
  struct rframe r;
  char target[64], req[128];
  uint8_t got[128];
  int up;
  (void) state;

  /* an unknown frame type ends the channel, not the runner */
  setup_with (&f, 8);
  hello (&f);
  send_raw (&f, unknown, sizeof unknown);
  expect_channel_end (&f, "protocol error");
  teardown_f (&f);

  /* a 4 GiB length is refused after 12 bytes */
  setup_with (&f, 8);
  hello (&f);
  send_raw (&f, huge, sizeof huge);
  expect_channel_end (&f, "protocol error");
  teardown_f (&f);

  /* OPEN before HELLO */
  setup_with (&f, 8);
  open_target (&f, 1, EGRESS_OPEN_HTTP, "example.com:80");
  expect_channel_end (&f, "protocol error");
  teardown_f (&f);

  /* DATA after the guest's own CLOSE */
  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "127.0.0.1:%u", f.port);
  open_target (&f, 1, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  /* a stream whose request head passed its check (a CLOSE before that
   * resets the stream at once, and DATA for an ended stream is dropped as
   * the harmless tail of a race) */
  assert_true (next_frame (&f, &r, true));
  assert_int_equal (r.type, EGRESS_OPEN_OK);
  snprintf (req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", f.port);
  send_frame (&f, EGRESS_DATA, 0, 1, req, (uint32_t) strlen (req));
  assert_true (read_full (up, got, strlen (req)));
  send_frame (&f, EGRESS_CLOSE, 0, 1, NULL, 0);
  send_frame (&f, EGRESS_DATA, 0, 1, big, 100);
  expect_channel_end (&f, "beyond its credit or its CLOSE");
  close (up);
  teardown_f (&f);

  /* the same stream id opened twice */
  setup_with (&f, 8);
  hello (&f);
  snprintf (target, sizeof target, "127.0.0.1:%u", f.port);
  open_target (&f, 1, EGRESS_OPEN_HTTP, target);
  up = accept (f.listener, NULL, NULL);
  open_target (&f, 1, EGRESS_OPEN_HTTP, target);
  expect_channel_end (&f, "which is open");
  close (up);
  teardown_f (&f);
}

static void
test_settings (void **state)
{
  struct egress_settings s;
  bvm_error_t err = NULL;
  json_t *j;
  (void) state;

  assert_ok (egress_settings_load (&s, NULL, NULL, &err), &err);
  assert_int_equal (s.mode, EGRESS_MODE_ENFORCE);
  assert_int_equal (s.n_allow, 0);
  assert_int_equal (s.allow_addresses.n, 0);
  egress_settings_dispose (&s);

  j = json_pack ("{s:s, s:[s, s, s], s:[s], s:{s:i}}", "mode", "audit", "allow",
                 "registry.npmjs.org:443", "*.example.com:*", "[2001:db8::1]:80",
                 "allow_addresses", "127.0.0.1/32", "limits", "connections", 4);
  assert_ok (egress_settings_load (&s, j, NULL, &err), &err);
  assert_int_equal (s.mode, EGRESS_MODE_AUDIT);
  assert_int_equal (s.n_allow, 3);
  assert_int_equal (s.limits.connections, 4);
  egress_settings_dispose (&s);
  json_decref (j);

  assert_null (egress_rule_problem ("example.com:443"));
  assert_null (egress_rule_problem ("*:443"));
  assert_non_null (egress_rule_problem ("example.com"));
  assert_non_null (egress_rule_problem ("example.com:0"));
  assert_non_null (egress_rule_problem ("example.com:65536"));
  assert_non_null (egress_rule_problem ("example.com:044"));
  assert_non_null (egress_rule_problem ("Example.com:443"));
  assert_non_null (egress_rule_problem ("exa mple.com:443"));
  assert_non_null (egress_rule_problem (":443"));

  j = json_pack ("{s:[s]}", "allow", "nope");
  assert_fails_with (egress_settings_load (&s, j, "`runner.json`", &err), &err, "egress.allow[0]");
  json_decref (j);
  j = json_pack ("{s:s}", "mode", "permissive");
  assert_fails_with (egress_settings_load (&s, j, NULL, &err), &err, "egress.mode");
  json_decref (j);
  j = json_pack ("{s:[s]}", "allow_addresses", "10.0.0.1/8");
  assert_fails_with (egress_settings_load (&s, j, NULL, &err), &err, "allow_addresses[0]");
  json_decref (j);
  j = json_pack ("{s:b}", "surprise", 1);
  assert_fails_with (egress_settings_load (&s, j, NULL, &err), &err, "surprise");
  json_decref (j);
}

/* The rules become one statement of the role, and the boundary caps them. */
static void
test_role_mint (void **state)
{
  static const char tmpl_doc[] = "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": "
                                 "\"Allow\", \"Action\": \"logs:PutLogEvents\", \"Resource\": "
                                 "\"logs:apps/${job:App}/*\"}]}";
  static const char bound_doc[] = "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": "
                                  "\"Allow\", \"Action\": \"*\", \"Resource\": \"logs:*\"}, "
                                  "{\"Effect\": \"Allow\", \"Action\": \"net:Connect\", "
                                  "\"Resource\": \"net:*:443\"}]}";
  const char *rules[] = { "registry.npmjs.org:443", "*.example.com:443", "evil.example:22" };
  struct policy *t = NULL, *b = NULL;
  struct role *r = NULL;
  struct policy_vars vars = { "app", "c0ffee", "refs/heads/main", "job-1" };
  struct policy_decision d;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (policy_parse (&t, tmpl_doc, strlen (tmpl_doc), "t.json", &err), &err);
  assert_ok (policy_parse (&b, bound_doc, strlen (bound_doc), "b.json", &err), &err);
  assert_ok (egress_role_mint (&r, t, b, &vars, wall_s () + 60, rules, 3, &err), &err);
  role_decide (r, "net:Connect", "net:registry.npmjs.org:443", NULL, &d);
  assert_true (d.allowed);
  role_decide (r, "net:Connect", "net:a.b.example.com:443", NULL, &d);
  assert_true (d.allowed);
  role_decide (r, "net:Connect", "net:example.com:443", NULL, &d);
  assert_false (d.allowed);
  role_decide (r, "net:Connect", "net:evil.example:22", NULL, &d); /* the boundary */
  assert_false (d.allowed);
  assert_int_equal (d.reason, POLICY_BOUNDARY_DENY);
  role_decide (r, "logs:PutLogEvents", "logs:apps/app/job-1", NULL, &d); /* the template */
  assert_true (d.allowed);
  role_free (r);
  policy_free (t);
  policy_free (b);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_open_data_close),  cmocka_unit_test (test_denials),
    cmocka_unit_test (test_connection_limit), cmocka_unit_test (test_sni),
    cmocka_unit_test (test_http_host),        cmocka_unit_test (test_hostile_frames),
    cmocka_unit_test (test_settings),         cmocka_unit_test (test_role_mint),
    cmocka_unit_test (test_close_ordered),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
