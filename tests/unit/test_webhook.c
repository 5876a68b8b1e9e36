/* test_webhook.c - signatures, payloads of every forge, routing, replays, limits
 *
 * webhook_handle() is driven with whole requests (method, path, headers,
 * body) and a real spool queue in a temporary directory; the payloads in
 * tests/data/webhook are shaped like the forges' own (every field they send,
 * not just the ones we read).
 */
#include "support.h"

#include "config.h"
#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "queue.h"
#include "util.h"
#include "webhook.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMMIT "3f786850e387550fdab836ed7e6dc881de23001b"
#define COMMIT2 "9049f1265b7d61be4a8904a9a27120d2064dab3b"
#define SECRET "s3cret-main"
#define SECRET_STAGING "s3cret-staging"
#define GITLAB_SECRET "gl-token-1"

/* --- CRYPTO_memcmp, interposed: the test binary's definition wins over
 * libcrypto's for webhook.o, so the tests can see that signatures are
 * compared with it (and over how many bytes). It is itself constant-time. */
static int memcmp_calls;
static size_t memcmp_last_len;

int
CRYPTO_memcmp (const void *in_a, const void *in_b, size_t len)
{
  const volatile unsigned char *a = in_a, *b = in_b;
  unsigned char d = 0;

  memcmp_calls++;
  memcmp_last_len = len;
  for (size_t i = 0; i < len; i++)
    d |= a[i] ^ b[i];
  return d;
}

/* --- helpers ----------------------------------------------------------------- */

static char *tmp;

static int
setup (void **state)
{
  (void) state;
  tmp = t_tmpdir ();
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  t_tmpdir_free (tmp);
  tmp = NULL;
  return 0;
}

static void
hmac_hex (char out[65], const char *secret, const char *body, size_t len)
{
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;

  assert_non_null (HMAC (EVP_sha256 (), secret, (int) strlen (secret),
                         (const unsigned char *) body, len, mac, &n));
  assert_int_equal (n, 32);
  hex_encode (out, mac, 32);
}

static char *
data_file (const char *name, size_t *len)
{
  char path[1024];
  char *exe = NULL, *data = NULL;
  bvm_error_t err = NULL;

  snprintf (path, sizeof path, "tests/data/webhook/%s", name);
  if (access (path, R_OK) != 0)
    {
      /* build/tests/test_webhook -> ../../tests/data */
      assert_ok (fs_exe_dir (&exe, &err), &err);
      snprintf (path, sizeof path, "%s/../../tests/data/webhook/%s", exe, name);
      free (exe);
    }
  assert_ok (fs_read_file (&data, len, path, 1 << 20, &err), &err);
  return data;
}

/* Every answer is short printable ASCII. */
static void
assert_printable (const char *s)
{
  assert_true (strlen (s) > 0);
  for (const char *p = s; *p; p++)
    if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
      fail_msg ("not printable: %s", s);
}

/* --- signatures ------------------------------------------------------------------ */

static void
test_signature_github (void **state)
{
  const char *body = "{\"ref\":\"refs/heads/main\"}";
  size_t len = strlen (body);
  char hex[65], sig[80], upper[80];
  bvm_error_t err = NULL;
  (void) state;

  hmac_hex (hex, SECRET, body, len);
  snprintf (sig, sizeof sig, "sha256=%s", hex);
  memcmp_calls = 0;
  assert_ok (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET), body,
                                       len, &err),
             &err);
  /* the comparison went through CRYPTO_memcmp, over the whole digest */
  assert_int_equal (memcmp_calls, 1);
  assert_int_equal (memcmp_last_len, 32);

  /* hex digits in upper case are the same MAC */
  snprintf (upper, sizeof upper, "sha256=");
  for (size_t i = 0; i < 64; i++)
    upper[7 + i] = (char) ((hex[i] >= 'a' && hex[i] <= 'f') ? hex[i] - 32 : hex[i]);
  upper[71] = '\0';
  assert_ok (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, upper, SECRET, strlen (SECRET), body,
                                       len, &err),
             &err);

  /* a wrong signature of the right form: compared, refused */
  memcmp_calls = 0;
  sig[7] = sig[7] == '0' ? '1' : '0';
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "wrong signature");
  assert_int_equal (memcmp_calls, 1);
  sig[7] = hex[0];
  /* the right signature of another body, and of the body with another secret */
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len - 1, &err),
                     &err, "wrong signature");
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET_STAGING,
                                               strlen (SECRET_STAGING), body, len, &err),
                     &err, "wrong signature");

  /* malformed: never compared */
  memcmp_calls = 0;
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, NULL, SECRET,
                                               strlen (SECRET), body, len, &err),
                     &err, "missing signature");
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, "", SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "missing signature");
  sig[70] = '\0'; /* 63 digits */
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "malformed signature");
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, hex, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "malformed signature (want sha256=");
  snprintf (sig, sizeof sig, "sha1=%.40s", hex);
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "malformed signature");
  snprintf (sig, sizeof sig, "sha256=%s ", hex);
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "malformed signature");
  snprintf (sig, sizeof sig, "sha256=%.62szz", hex);
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET),
                                               body, len, &err),
                     &err, "malformed signature");
  assert_int_equal (memcmp_calls, 0);
  /* no secret, no check */
  snprintf (sig, sizeof sig, "sha256=%s", hex);
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, "", 0, body, len, &err),
                     &err, "no secret");

  /* an empty body has a signature too */
  hmac_hex (hex, SECRET, "", 0);
  snprintf (sig, sizeof sig, "sha256=%s", hex);
  assert_ok (webhook_verify_signature (WEBHOOK_FORMAT_GITHUB, sig, SECRET, strlen (SECRET), "", 0,
                                       &err),
             &err);
}

static void
test_signature_gitea_forgejo (void **state)
{
  const char *body = "{\"a\":1}";
  char hex[65], sig[80];
  bvm_error_t err = NULL;
  enum webhook_format fs[] = { WEBHOOK_FORMAT_GITEA, WEBHOOK_FORMAT_FORGEJO };
  (void) state;

  hmac_hex (hex, SECRET, body, strlen (body));
  for (size_t i = 0; i < ARRAY_SIZE (fs); i++)
    {
      memcmp_calls = 0;
      assert_ok (webhook_verify_signature (fs[i], hex, SECRET, strlen (SECRET), body,
                                           strlen (body), &err),
                 &err);
      assert_int_equal (memcmp_calls, 1);
      /* GitHub's prefix is not theirs */
      snprintf (sig, sizeof sig, "sha256=%s", hex);
      assert_fails_with (webhook_verify_signature (fs[i], sig, SECRET, strlen (SECRET), body,
                                                   strlen (body), &err),
                         &err, "malformed signature (want 64 hex digits)");
      snprintf (sig, sizeof sig, "%s", hex);
      sig[63] = sig[63] == 'a' ? 'b' : 'a';
      assert_fails_with (webhook_verify_signature (fs[i], sig, SECRET, strlen (SECRET), body,
                                                   strlen (body), &err),
                         &err, "wrong signature");
      assert_fails_with (webhook_verify_signature (fs[i], "zz", SECRET, strlen (SECRET), body,
                                                   strlen (body), &err),
                         &err, "malformed signature");
    }
}

static void
test_signature_gitlab (void **state)
{
  bvm_error_t err = NULL;
  const char *bad[] = { "gl-token-", "gl-token-11", "GL-TOKEN-1", "gl-token-2", " gl-token-1" };
  (void) state;

  memcmp_calls = 0;
  assert_ok (webhook_verify_signature (WEBHOOK_FORMAT_GITLAB, GITLAB_SECRET, GITLAB_SECRET,
                                       strlen (GITLAB_SECRET), "x", 1, &err),
             &err);
  /* compared as digests: the same 32 bytes whatever the lengths */
  assert_int_equal (memcmp_calls, 1);
  assert_int_equal (memcmp_last_len, 32);
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      memcmp_calls = 0;
      assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITLAB, bad[i], GITLAB_SECRET,
                                                   strlen (GITLAB_SECRET), "x", 1, &err),
                         &err, "wrong token");
      assert_int_equal (memcmp_calls, 1);
      assert_int_equal (memcmp_last_len, 32);
    }
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_GITLAB, NULL, GITLAB_SECRET,
                                               strlen (GITLAB_SECRET), "x", 1, &err),
                     &err, "missing signature");
  assert_fails_with (webhook_verify_signature (WEBHOOK_FORMAT_NONE, "x", GITLAB_SECRET,
                                               strlen (GITLAB_SECRET), "x", 1, &err),
                     &err, "unknown webhook format");
}

/* --- formats ------------------------------------------------------------------------ */

static void
test_detect_format (void **state)
{
  const struct webhook_header github[] = { { "X-GitHub-Event", "push" },
                                           { "X-GitHub-Delivery", "d" } };
  /* Gitea sends GitHub's headers as well, Forgejo sends Gitea's and GitHub's */
  const struct webhook_header gitea[] = { { "X-GitHub-Event", "push" },
                                          { "X-Gitea-Event", "push" },
                                          { "X-Gogs-Event", "push" } };
  const struct webhook_header forgejo[] = { { "X-GitHub-Event", "push" },
                                            { "X-Gitea-Event", "push" },
                                            { "X-Forgejo-Event", "push" } };
  const struct webhook_header gitlab[] = { { "x-gitlab-event", "Push Hook" } };
  const struct webhook_header none[] = { { "X-Gogs-Event", "push" },
                                         { "Content-Type", "application/json" } };
  struct webhook_request r = { 0 };
  size_t n;
  (void) state;

  r.headers = github, r.n_headers = ARRAY_SIZE (github);
  assert_int_equal (webhook_detect_format (&r), WEBHOOK_FORMAT_GITHUB);
  assert_string_equal (webhook_header (&r, "x-github-delivery", &n), "d");
  assert_int_equal (n, 1);
  assert_null (webhook_header (&r, "X-Gitea-Event", &n));
  assert_int_equal (n, 0);
  r.headers = gitea, r.n_headers = ARRAY_SIZE (gitea);
  assert_int_equal (webhook_detect_format (&r), WEBHOOK_FORMAT_GITEA);
  r.headers = forgejo, r.n_headers = ARRAY_SIZE (forgejo);
  assert_int_equal (webhook_detect_format (&r), WEBHOOK_FORMAT_FORGEJO);
  r.headers = gitlab, r.n_headers = ARRAY_SIZE (gitlab);
  assert_int_equal (webhook_detect_format (&r), WEBHOOK_FORMAT_GITLAB);
  r.headers = none, r.n_headers = ARRAY_SIZE (none);
  assert_int_equal (webhook_detect_format (&r), WEBHOOK_FORMAT_NONE);
  assert_string_equal (webhook_format_name (WEBHOOK_FORMAT_FORGEJO), "forgejo");
  assert_string_equal (webhook_format_name (WEBHOOK_FORMAT_NONE), "none");
}

/* --- payloads ------------------------------------------------------------------------ */

static struct webhook_push *
parse_file (enum webhook_format f, const char *name)
{
  size_t len = 0;
  char *data = data_file (name, &len);
  struct webhook_push *p = NULL;
  bvm_error_t err = NULL;

  assert_ok (webhook_parse_push (&p, f, data, len, 1 << 20, &err), &err);
  free (data);
  return p;
}

static bool
has_name (const struct webhook_push *p, const char *name)
{
  for (size_t i = 0; i < p->n_repo_names; i++)
    if (strcmp (p->repo_names[i], name) == 0)
      return true;
  return false;
}

static void
test_parse_real_payloads (void **state)
{
  struct webhook_push *p;
  (void) state;

  p = parse_file (WEBHOOK_FORMAT_GITHUB, "github-push.json");
  assert_string_equal (p->ref, "refs/heads/main");
  assert_string_equal (p->before, COMMIT2);
  assert_string_equal (p->after, COMMIT);
  assert_false (p->deleted);
  assert_false (p->tag);
  assert_int_equal (p->n_repo_names, 3);
  assert_true (has_name (p, "https://github.com/acme/hello.git"));
  assert_true (has_name (p, "https://github.com/acme/hello"));
  assert_true (has_name (p, "acme/hello"));
  assert_string_equal (p->pusher, "alice");
  assert_string_equal (p->head_commit, COMMIT);
  webhook_push_free (p);

  p = parse_file (WEBHOOK_FORMAT_GITHUB, "github-delete.json");
  assert_true (p->deleted);
  assert_string_equal (p->ref, "refs/heads/feature/x");
  assert_null (p->head_commit); /* null in the payload */
  webhook_push_free (p);

  p = parse_file (WEBHOOK_FORMAT_GITEA, "gitea-push.json");
  assert_string_equal (p->after, COMMIT);
  assert_true (has_name (p, "https://gitea.example/acme/hello.git"));
  assert_true (has_name (p, "acme/hello"));
  assert_string_equal (p->pusher, "alice"); /* Gitea's pusher has no `name`: its login */
  webhook_push_free (p);

  p = parse_file (WEBHOOK_FORMAT_FORGEJO, "forgejo-push.json");
  assert_true (has_name (p, "https://codeberg.example/acme/hello.git"));
  assert_string_equal (p->head_commit, COMMIT);
  webhook_push_free (p);

  p = parse_file (WEBHOOK_FORMAT_GITLAB, "gitlab-push.json");
  assert_string_equal (p->ref, "refs/heads/main");
  assert_string_equal (p->after, COMMIT);
  assert_string_equal (p->head_commit, COMMIT);
  assert_true (has_name (p, "https://gitlab.example/acme/hello.git"));
  assert_true (has_name (p, "https://gitlab.example/acme/hello"));
  assert_true (has_name (p, "acme/hello"));
  assert_string_equal (p->pusher, "alice");
  assert_false (p->tag);
  webhook_push_free (p);

  p = parse_file (WEBHOOK_FORMAT_GITLAB, "gitlab-tag-push.json");
  assert_true (p->tag);
  assert_false (p->deleted);
  webhook_push_free (p);
}

struct bad_payload
{
  enum webhook_format f;
  const char *body;
  size_t len; /* 0: strlen */
  const char *needle;
};

static void
test_parse_rejects (void **state)
{
  static const char deep[] = "{\"ref\":\"refs/heads/main\",\"after\":\"" COMMIT
                             "\",\"repository\":"
                             "{\"full_name\":\"a/b\"},\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}";
#define GOOD_HEAD "{\"ref\":\"refs/heads/main\",\"after\":\"" COMMIT "\","
  /* a raw NUL after the document */
  static const char nul_body[] = GOOD_HEAD "\"repository\":{\"full_name\":\"a/b\"}}\0";
  static const struct bad_payload cases[] = {
    { WEBHOOK_FORMAT_GITHUB, "not json", 0, "push payload is not valid JSON" },
    { WEBHOOK_FORMAT_GITHUB, "", 0, "push payload is not valid JSON" },
    { WEBHOOK_FORMAT_GITHUB, "[1]", 0, "push payload must be a JSON object" },
    { WEBHOOK_FORMAT_GITHUB, "{\"ref\":\"refs/heads/main\",\"ref\":\"refs/heads/x\"}", 0,
      "duplicate" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"full_name\":\"a/\xff\"}}", 0,
      "not valid JSON" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"full_name\":\"a/b\\u0000c\"}}", 0,
      "not valid JSON" },
    { WEBHOOK_FORMAT_GITHUB, nul_body, sizeof nul_body - 1, "not valid JSON" },
    { WEBHOOK_FORMAT_GITHUB, deep, 0, "nests deeper than 32 levels" },
    { WEBHOOK_FORMAT_GITHUB, "{\"after\":\"" COMMIT "\",\"repository\":{\"full_name\":\"a/b\"}}",
      0, "field `ref` is missing" },
    { WEBHOOK_FORMAT_GITHUB, "{\"ref\":7,\"after\":\"" COMMIT "\",\"repository\":{}}", 0,
      "field `ref` must be a string, not an integer" },
    { WEBHOOK_FORMAT_GITHUB, "{\"ref\":\"refs/heads/main\",\"repository\":{}}", 0,
      "field `after` is missing" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"x\":1}", 0, "field `repository` is missing" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":\"a/b\"}", 0,
      "field `repository` must be an object" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"id\":1}}", 0,
      "push payload names no repository" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"full_name\":\"\"}}", 0,
      "push payload names no repository" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"clone_url\":[\"x\"]}}", 0,
      "field `repository.clone_url` must be a string, not an array" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"full_name\":\"a/b\"},\"deleted\":1}", 0,
      "field `deleted` must be a boolean" },
    { WEBHOOK_FORMAT_GITHUB, GOOD_HEAD "\"repository\":{\"full_name\":\"a/b\"},\"pusher\":[]}", 0,
      "field `pusher` must be an object" },
    { WEBHOOK_FORMAT_GITLAB, "{\"object_kind\":\"merge_request\",\"ref\":\"refs/heads/main\"}", 0,
      "field `object_kind` is `merge_request`, not a push" },
    { WEBHOOK_FORMAT_GITLAB, GOOD_HEAD "\"project\":{\"id\":1}}", 0,
      "push payload names no repository" },
    { WEBHOOK_FORMAT_NONE, "{}", 0, "unknown webhook format" },
  };
  bvm_error_t err = NULL;
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct webhook_push *p = NULL;
      size_t len = cases[i].len ? cases[i].len : strlen (cases[i].body);
      int r = webhook_parse_push (&p, cases[i].f, cases[i].body, len, 4096, &err);
      if (r >= 0)
        fail_msg ("case %zu parsed, expected \"%s\"", i, cases[i].needle);
      assert_null (p);
      if (strstr (bvm_error_msg (&err), cases[i].needle) == NULL)
        fail_msg ("case %zu: \"%s\" does not contain \"%s\"", i, bvm_error_msg (&err),
                  cases[i].needle);
      assert_printable (bvm_error_msg (&err));
      bvm_error_free (&err);
    }

  /* the size cap comes before parsing; a field longer than 2048 bytes is refused */
  {
    struct webhook_push *p = NULL;
    char *big = malloc (8192);
    assert_non_null (big);
    snprintf (big, 8192, GOOD_HEAD "\"repository\":{\"full_name\":\"%03000d\"}}", 0);
    assert_fails_with (webhook_parse_push (&p, WEBHOOK_FORMAT_GITHUB, big, strlen (big), 1024,
                                           &err),
                       &err, "over the limit of 1024");
    assert_fails_with (webhook_parse_push (&p, WEBHOOK_FORMAT_GITHUB, big, strlen (big), 8192,
                                           &err),
                       &err, "field `repository.full_name` is longer than 2048 bytes");
    free (big);
  }
}

/* --- listen addresses ------------------------------------------------------------------ */

static void
test_listen (void **state)
{
  struct sockaddr_storage sa;
  socklen_t len = 0;
  bvm_error_t err = NULL;
  const char *bad[] = {
    "localhost:80",  "127.0.0.1",     "127.0.0.1:",     "127.0.0.1:0",   "127.0.0.1:65536",
    "127.0.0.1:+80", "127.0.0.1:080", "127.1:80",       "0127.0.0.1:80", "::1:80",
    "[::1]",         "[::1]80",       "[127.0.0.1]:80", ":80",           "",
    "[]:80",         "127.0.0.1:80 "
  };
  (void) state;

  assert_ok (webhook_parse_listen (&sa, &len, "127.0.0.1:8585", &err), &err);
  assert_int_equal (sa.ss_family, AF_INET);
  assert_int_equal (len, sizeof (struct sockaddr_in));
  assert_int_equal (ntohs (((struct sockaddr_in *) &sa)->sin_port), 8585);
  assert_int_equal (ntohl (((struct sockaddr_in *) &sa)->sin_addr.s_addr), 0x7f000001);
  assert_ok (webhook_parse_listen (&sa, &len, "[::1]:65535", &err), &err);
  assert_int_equal (sa.ss_family, AF_INET6);
  assert_int_equal (ntohs (((struct sockaddr_in6 *) &sa)->sin6_port), 65535);
  assert_ok (webhook_parse_listen (&sa, &len, "0.0.0.0:1", &err), &err);
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      if (webhook_parse_listen (&sa, &len, bad[i], &err) == 0)
        fail_msg ("`%s` accepted", bad[i]);
      assert_non_null (strstr (bvm_error_msg (&err), "must be `IPv4:PORT` or `[IPv6]:PORT`"));
      bvm_error_free (&err);
    }
}

/* --- the handler --------------------------------------------------------------------------- */

struct env
{
  struct webhook_config *wc;
  struct webhook_replay *replay;
  struct queue *q;
  struct webhook_deps deps;
  char spool[1024];
  int calls;
  bool fail; /* the enqueue callback fails (the queue is down) */
};

static int
enqueue_cb (void *ctx, const struct job_request *job, bool *duplicate, bvm_error_t *err)
{
  struct env *e = ctx;
  enum queue_state existing = QUEUE_STATE_NONE;
  char *msg_id = NULL;

  e->calls++;
  if (e->fail)
    return bvm_error_code (err, BVM_E_NETWORK, 0, "connect to redis: refused");
  if (queue_enqueue (&msg_id, &existing, e->q, job, err) < 0)
    return -1;
  free (msg_id);
  *duplicate = existing != QUEUE_STATE_NONE;
  return 0;
}

static void
add_app (struct webhook_config *wc, const char *app, const char *repo, const char *const *match,
         const char *const *branches, const char *secret)
{
  struct config_app a = { 0 };
  bvm_error_t err = NULL;
  size_t nm = 0, nb = 0;

  while (match[nm])
    nm++;
  while (branches[nb])
    nb++;
  a.app = (char *) app;
  a.repo = (char *) repo;
  a.match = (char **) match;
  a.n_match = nm;
  a.branches = (char **) branches;
  a.n_branches = nb;
  assert_ok (webhook_config_add_app (wc, &a, secret, strlen (secret), &err), &err);
}

static void
env_init (struct env *e)
{
  static const char *const hello_match[] = { "https://github.com/acme/hello.git", "acme/hello",
                                             "https://gitlab.example/acme/hello.git", NULL };
  static const char *const main_branch[] = { "main", NULL };
  static const char *const staging_branch[] = { "staging", NULL };
  static const char *const other_match[] = { "acme/other", NULL };
  char url[1100];
  bvm_error_t err = NULL;

  memset (e, 0, sizeof *e);
  snprintf (e->spool, sizeof e->spool, "%s/spool", tmp);
  snprintf (url, sizeof url, "spool:%s", e->spool);
  assert_ok (queue_open (&e->q, url, NULL, &err), &err);
  assert_ok (webhook_config_new (&e->wc, 16384, &err), &err);
  add_app (e->wc, "hello", "file:///srv/git/hello.git", hello_match, main_branch, SECRET);
  add_app (e->wc, "hello-staging", "file:///srv/git/hello.git", hello_match, staging_branch,
           SECRET_STAGING);
  add_app (e->wc, "other", "https://git.internal/other.git", other_match, main_branch,
           GITLAB_SECRET);
  assert_ok (webhook_replay_open (&e->replay, NULL, 64, WEBHOOK_REPLAY_SPAN_S, &err), &err);
  e->deps.enqueue = enqueue_cb;
  e->deps.ctx = e;
  e->deps.replay = e->replay;
  e->deps.now = 1795692615; /* 2026-11-26T11:30:15Z */
}

static void
env_dispose (struct env *e)
{
  webhook_config_free (e->wc);
  webhook_replay_close (e->replay);
  queue_close (e->q);
}

/* how many jobs the spool holds */
static int
queued (struct env *e)
{
  char *out = t_sh_out ("ls %s/new 2>/dev/null | grep -c '\\.json$'", e->spool);
  int n = atoi (out);
  free (out);
  return n;
}

struct req
{
  const char *method, *path;
  struct webhook_header h[16];
  size_t nh;
  const char *body;
  size_t len;
  bool too_large;
};

static void
req_add (struct req *r, const char *name, const char *value)
{
  assert_true (r->nh < ARRAY_SIZE (r->h));
  r->h[r->nh].name = name;
  r->h[r->nh].value = value;
  r->nh++;
}

static char sigbuf[8][80];
static int sigi;

/* A signed GitHub push of `body`: event, delivery, content type, signature. */
static void
github_req (struct req *r, const char *delivery, const char *body, const char *secret)
{
  char hex[65];
  char *sig = sigbuf[sigi++ % 8];

  memset (r, 0, sizeof *r);
  r->method = "POST";
  r->path = "/webhook";
  r->body = body;
  r->len = strlen (body);
  hmac_hex (hex, secret, body, r->len);
  snprintf (sig, 80, "sha256=%s", hex);
  req_add (r, "X-GitHub-Event", "push");
  if (delivery)
    req_add (r, "X-GitHub-Delivery", delivery);
  req_add (r, "Content-Type", "application/json");
  req_add (r, "X-Hub-Signature-256", sig);
}

static int
handle (struct webhook_response *res, struct env *e, const struct req *r)
{
  struct webhook_request wr = { 0 };
  bvm_error_t err = NULL;
  int ret;

  wr.method = r->method;
  wr.path = r->path;
  wr.headers = r->h;
  wr.n_headers = r->nh;
  wr.body = r->body;
  wr.body_len = r->len;
  wr.body_too_large = r->too_large;
  ret = webhook_handle (res, e->wc, &wr, &e->deps, &err);
  assert_printable (res->reason);
  if (ret < 0)
    {
      assert_true (res->status >= 500);
      bvm_error_free (&err);
    }
  else
    assert_null (err);
  return ret;
}

/* Expect status and a reason containing needle, and nothing enqueued. */
static void
expect (struct env *e, const struct req *r, int status, const char *needle)
{
  struct webhook_response res;
  int before = queued (e);

  handle (&res, e, r);
  if (res.status != status || strstr (res.reason, needle) == NULL)
    fail_msg ("expected %d \"%s\", got %d \"%s\"", status, needle, res.status, res.reason);
  if (status != 202)
    assert_int_equal (queued (e), before);
}

static char *
push_body (const char *ref, const char *after, const char *repo_name, const char *pusher)
{
  char *s = NULL;
  assert_true (asprintf (&s,
                         "{\"ref\":\"%s\",\"before\":\"" COMMIT2 "\",\"after\":\"%s\","
                         "\"repository\":{\"full_name\":\"%s\",\"clone_url\":"
                         "\"https://evil.example/steal.git\"},\"pusher\":{\"name\":\"%s\"}}",
                         ref, after, repo_name, pusher)
               > 0);
  return s;
}

static void
test_handle_http_level (void **state)
{
  struct env e;
  struct req r;
  char *body = push_body ("refs/heads/main", COMMIT, "acme/hello", "alice");
  (void) state;

  env_init (&e);
  memset (&r, 0, sizeof r);
  r.method = "GET", r.path = "/healthz";
  expect (&e, &r, 200, "ok");
  r.method = "HEAD";
  expect (&e, &r, 200, "ok");
  r.method = "POST";
  expect (&e, &r, 405, "use GET");
  r.path = "/webhooks";
  expect (&e, &r, 404, "not found");
  r.path = "/";
  expect (&e, &r, 404, "not found");
  r.path = "/webhook", r.method = "GET";
  expect (&e, &r, 405, "method not allowed: use POST");

  /* size: what the server saw, and what it was given */
  github_req (&r, "d-1", body, SECRET);
  r.too_large = true;
  expect (&e, &r, 413, "payload too large: the limit is 16384 bytes");
  {
    char *big = calloc (1, 16386);
    memset (big, ' ', 16385);
    github_req (&r, "d-1", big, SECRET);
    expect (&e, &r, 413, "payload too large");
    free (big);
  }

  /* no sender headers */
  github_req (&r, "d-1", body, SECRET);
  r.h[0].name = "X-Gogs-Event";
  expect (&e, &r, 400, "unknown sender");

  /* content types */
  github_req (&r, "d-1", body, SECRET);
  r.h[2].value = "application/x-www-form-urlencoded";
  expect (&e, &r, 415, "unsupported content type: send application/json");
  r.h[2].value = "text/plain";
  expect (&e, &r, 415, "unsupported content type");
  r.h[2].value = "application/json; charset=latin1";
  expect (&e, &r, 415, "unsupported content type");
  r.h[2].value = "application/jsonx";
  expect (&e, &r, 415, "unsupported content type");
  r.h[2].name = "X-Not-Content-Type";
  expect (&e, &r, 415, "unsupported content type");
  github_req (&r, "d-1", body, SECRET);
  req_add (&r, "Content-Type", "application/json");
  expect (&e, &r, 415, "unsupported content type");

  /* events other than push: answered, nothing read */
  github_req (&r, "d-1", "{}", SECRET);
  r.h[0].value = "ping";
  expect (&e, &r, 200, "pong");
  r.h[0].value = "issues";
  expect (&e, &r, 200, "ignored: event `issues` (only push events deploy)");
  r.h[0].value = "\x1b[31mred";
  expect (&e, &r, 200, "ignored: event `\\x1b[31mred`");
  github_req (&r, "d-1", body, SECRET);
  req_add (&r, "X-GitHub-Event", "push");
  expect (&e, &r, 400, "header `X-GitHub-Event` is repeated");

  /* delivery ids */
  github_req (&r, NULL, body, SECRET);
  expect (&e, &r, 400, "missing header `X-GitHub-Delivery`");
  github_req (&r, "d-1", body, SECRET);
  req_add (&r, "X-GitHub-Delivery", "d-2");
  expect (&e, &r, 400, "header `X-GitHub-Delivery` is repeated");
  github_req (&r, "", body, SECRET);
  expect (&e, &r, 400, "header `X-GitHub-Delivery` must be 1 to 256 bytes");

  /* signatures: missing, empty, repeated, malformed, wrong */
  github_req (&r, "d-1", body, SECRET);
  r.nh--;
  expect (&e, &r, 401, "missing signature: header `X-Hub-Signature-256`");
  req_add (&r, "X-Hub-Signature", "sha1=0000000000000000000000000000000000000000");
  expect (&e, &r, 401, "missing signature");
  github_req (&r, "d-1", body, SECRET);
  r.h[3].value = "";
  expect (&e, &r, 401, "missing signature");
  github_req (&r, "d-1", body, SECRET);
  req_add (&r, "X-Hub-Signature-256", r.h[3].value);
  expect (&e, &r, 401, "header `X-Hub-Signature-256` is repeated");
  github_req (&r, "d-1", body, SECRET);
  r.h[3].value = "sha256=abc";
  expect (&e, &r, 401, "malformed signature in header `X-Hub-Signature-256`");
  github_req (&r, "d-1", body, "not the secret");
  expect (&e, &r, 401, "wrong signature");
  /* a body changed after signing */
  {
    char *tampered = strdup (body);
    github_req (&r, "d-1", body, SECRET);
    memcpy (strstr (tampered, "main"), "evil", 4);
    r.body = tampered;
    expect (&e, &r, 401, "wrong signature");
    free (tampered);
  }

  /* malformed JSON, correctly signed */
  github_req (&r, "d-1", "{\"ref\":", SECRET);
  expect (&e, &r, 400, "malformed payload: push payload is not valid JSON");
  github_req (&r, "d-1", "{\"ref\":\"refs/heads/main\",\"ref\":\"x\"}", SECRET);
  expect (&e, &r, 400, "malformed payload");
  github_req (&r, "d-1", "{\"ref\":\"refs/heads/main\",\"after\":\"\xc3\x28\"}", SECRET);
  expect (&e, &r, 400, "malformed payload");

  /* the early answer needs no body */
  {
    struct webhook_request wr = { 0 };
    struct webhook_response res;
    github_req (&r, "d-1", body, SECRET);
    wr.method = r.method, wr.path = r.path, wr.headers = r.h, wr.n_headers = r.nh;
    assert_false (webhook_answer_early (&res, e.wc, &wr));
    wr.n_headers--;
    assert_true (webhook_answer_early (&res, e.wc, &wr));
    assert_int_equal (res.status, 401);
  }
  assert_int_equal (e.calls, 0);
  assert_int_equal (queued (&e), 0);
  free (body);
  env_dispose (&e);
}

static void
test_handle_routing (void **state)
{
  struct env e;
  struct req r;
  struct webhook_response res;
  char *body;
  (void) state;

  env_init (&e);
  body = push_body ("refs/heads/main", COMMIT, "acme/unknown", "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 404, "unknown repository `https://evil.example/steal.git`");
  free (body);

  body = push_body ("refs/tags/v1.0", COMMIT, "acme/hello", "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 200, "ignored: tag push");
  free (body);
  body = push_body ("refs/heads/main", "0000000000000000000000000000000000000000", "ACME/Hello",
                    "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 200, "ignored: branch deleted");
  free (body);
  body = push_body ("refs/heads/feature/x", COMMIT, "acme/hello", "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 200, "ignored: branch `feature/x` does not deploy");
  free (body);
  body = push_body ("refs/pull/1/head", COMMIT, "acme/hello", "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 200, "ignored: ref `refs/pull/1/head` is not a branch");
  free (body);
  /* staging's secret authenticates the push, but only for staging */
  body = push_body ("refs/heads/main", COMMIT, "acme/hello", "alice");
  github_req (&r, "d-1", body, SECRET_STAGING);
  expect (&e, &r, 200, "ignored: branch `main` does not deploy");
  free (body);
  /* invalid commit and ref, authentic */
  body = push_body ("refs/heads/main", "3F786850E387550FDAB836ED7E6DC881DE23001B", "acme/hello",
                    "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 400, "field `after` must be 40 lowercase hex digits");
  free (body);
  body = push_body ("refs/heads/main", "HEAD~1", "acme/hello", "alice");
  github_req (&r, "d-1", body, SECRET);
  expect (&e, &r, 400, "field `after` must be 40 lowercase hex digits, got `HEAD~1`");
  free (body);
  assert_int_equal (e.calls, 0);

  /* staging: its own app, its own secret */
  body = push_body ("refs/heads/staging", COMMIT, "acme/hello", "alice");
  github_req (&r, "d-stage", body, SECRET_STAGING);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_string_equal (res.app, "hello-staging");
  assert_string_equal (res.job_id, "github-d-stage");
  free (body);
  assert_int_equal (queued (&e), 1);
  env_dispose (&e);
}

static void
test_handle_enqueue_and_replays (void **state)
{
  struct env e;
  struct req r;
  struct webhook_response res;
  json_t *job = NULL;
  bvm_error_t err = NULL;
  char path[1400];
  char *body, *body2;
  (void) state;

  env_init (&e);
  body = push_body ("refs/heads/main", COMMIT, "acme/hello", "alice");
  github_req (&r, "72d3162e-cc78-11e3-81ab-4c9367dc0958", body, SECRET);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_string_equal (res.reason, "enqueued");
  assert_string_equal (res.job_id, "github-72d3162e-cc78-11e3-81ab-4c9367dc0958");
  assert_string_equal (res.app, "hello");
  assert_int_equal (res.format, WEBHOOK_FORMAT_GITHUB);
  assert_int_equal (queued (&e), 1);

  /* the request: the repository is the config's, never the payload's */
  snprintf (path, sizeof path, "%s/new/%s+%s.json", e.spool, res.app, res.job_id);
  assert_ok (jsonx_parse_file (&job, path, 65536, &err), &err);
  assert_string_equal (json_string_value (json_object_get (job, "repo")),
                       "file:///srv/git/hello.git");
  assert_string_equal (json_string_value (json_object_get (job, "app")), "hello");
  assert_string_equal (json_string_value (json_object_get (job, "commit")), COMMIT);
  assert_string_equal (json_string_value (json_object_get (job, "ref")), "refs/heads/main");
  assert_string_equal (json_string_value (json_object_get (job, "trigger")), "webhook");
  assert_string_equal (json_string_value (json_object_get (job, "delivery")),
                       "72d3162e-cc78-11e3-81ab-4c9367dc0958");
  assert_string_equal (json_string_value (json_object_get (job, "requested_at")),
                       "2026-11-26T11:30:15Z");
  assert_string_equal (json_string_value (json_object_get (job, "requested_by")), "alice");
  json_decref (job);

  /* the same delivery again, and the same body under a new delivery id */
  expect (&e, &r, 200, "duplicate delivery: already received");
  github_req (&r, "another-id", body, SECRET);
  expect (&e, &r, 200, "duplicate delivery: already received");
  assert_int_equal (e.calls, 1);

  /* the replay store lost (a new one): the queue's idempotency holds */
  webhook_replay_close (e.replay);
  assert_ok (webhook_replay_open (&e.replay, NULL, 64, WEBHOOK_REPLAY_SPAN_S, &err), &err);
  e.deps.replay = e.replay;
  github_req (&r, "72d3162e-cc78-11e3-81ab-4c9367dc0958", body, SECRET);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 200);
  assert_string_equal (res.reason, "duplicate delivery: already queued");
  assert_int_equal (queued (&e), 1);
  assert_int_equal (e.calls, 2);
  free (body);

  /* the queue is down: 503, the error for the log, nothing remembered, so
   * the redelivery goes through */
  body2 = push_body ("refs/heads/main", COMMIT2, "acme/hello", "alice");
  github_req (&r, "d-2", body2, SECRET);
  e.fail = true;
  {
    struct webhook_request wr = { 0 };
    wr.method = r.method, wr.path = r.path, wr.headers = r.h, wr.n_headers = r.nh;
    wr.body = r.body, wr.body_len = r.len;
    assert_true (webhook_handle (&res, e.wc, &wr, &e.deps, &err) < 0);
    assert_int_equal (res.status, 503);
    assert_non_null (strstr (bvm_error_msg (&err), "enqueueing `github-d-2`: connect to redis"));
    bvm_error_free (&err);
  }
  e.fail = false;
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_int_equal (queued (&e), 2);
  free (body2);
  env_dispose (&e);
}

static void
test_handle_ids_and_names (void **state)
{
  struct env e;
  struct req r;
  struct webhook_response res;
  json_t *job = NULL;
  bvm_error_t err = NULL;
  char path[1400], longname[400], name_json[800];
  char *body;
  (void) state;

  env_init (&e);
  /* a delivery id outside the id grammar: a hash, with `_` after the format */
  body = push_body ("refs/heads/main", COMMIT, "acme/hello", "alice");
  github_req (&r, "a b/c", body, SECRET);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_int_equal (strncmp (res.job_id, "github_", 7), 0);
  assert_int_equal (strlen (res.job_id), 7 + 40);
  assert_null (job_id_problem (res.job_id));
  snprintf (path, sizeof path, "%s/new/%s+%s.json", e.spool, res.app, res.job_id);
  assert_ok (jsonx_parse_file (&job, path, 65536, &err), &err);
  assert_int_equal (strncmp (json_string_value (json_object_get (job, "delivery")), "sha256:", 7),
                    0);
  json_decref (job);
  free (body);

  /* `:` fits the request's delivery field but not a job id */
  body = push_body ("refs/heads/main", "2222222222222222222222222222222222222222", "acme/hello",
                    "alice");
  github_req (&r, "urn:d:1", body, SECRET);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_int_equal (strncmp (res.job_id, "github_", 7), 0);
  snprintf (path, sizeof path, "%s/new/%s+%s.json", e.spool, res.app, res.job_id);
  assert_ok (jsonx_parse_file (&job, path, 65536, &err), &err);
  assert_string_equal (json_string_value (json_object_get (job, "delivery")), "urn:d:1");
  json_decref (job);
  free (body);

  /* a pusher name with control characters and too long: cleaned and cut */
  memset (longname, 'x', 300);
  longname[300] = '\0';
  snprintf (name_json, sizeof name_json, "ev\\u001bil\\n\\u009b%s", longname);
  body = push_body ("refs/heads/main", COMMIT2, "acme/hello", name_json);
  github_req (&r, "d-names", body, SECRET);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  snprintf (path, sizeof path, "%s/new/hello+github-d-names.json", e.spool);
  assert_ok (jsonx_parse_file (&job, path, 65536, &err), &err);
  {
    const char *by = json_string_value (json_object_get (job, "requested_by"));
    assert_int_equal (strncmp (by, "ev?il??xxx", 10), 0);
    assert_int_equal (strlen (by), WEBHOOK_REQUESTED_BY_MAX);
  }
  json_decref (job);
  free (body);

  /* a multibyte character is not cut in half */
  {
    char u[600];
    size_t o = 0;
    for (int i = 0; i < 127; i++)
      u[o++] = 'a';
    strcpy (u + o, "\xc3\xa9\xc3\xa9");
    body = push_body ("refs/heads/main", "1111111111111111111111111111111111111111", "acme/hello",
                      u);
    github_req (&r, "d-utf8", body, SECRET);
    assert_int_equal (handle (&res, &e, &r), 0);
    assert_int_equal (res.status, 202);
    snprintf (path, sizeof path, "%s/new/hello+github-d-utf8.json", e.spool);
    assert_ok (jsonx_parse_file (&job, path, 65536, &err), &err);
    assert_int_equal (strlen (json_string_value (json_object_get (job, "requested_by"))), 127);
    json_decref (job);
    free (body);
  }
  env_dispose (&e);
}

static void
test_handle_gitea_forgejo_gitlab (void **state)
{
  struct env e;
  struct req r;
  struct webhook_response res;
  size_t len = 0;
  char *body;
  char hex[65];
  (void) state;

  env_init (&e);
  /* Gitea with every header it sends: its own signature header counts */
  body = data_file ("gitea-push.json", &len);
  hmac_hex (hex, SECRET, body, len);
  memset (&r, 0, sizeof r);
  r.method = "POST", r.path = "/webhook", r.body = body, r.len = len;
  req_add (&r, "Content-Type", "application/json");
  req_add (&r, "X-GitHub-Event", "push");
  req_add (&r, "X-GitHub-Delivery", "4a2e1cdf-0a36-4a7c-9a8e-4f8a1c0b7e11");
  req_add (&r, "X-Gitea-Event", "push");
  req_add (&r, "X-Gitea-Delivery", "4a2e1cdf-0a36-4a7c-9a8e-4f8a1c0b7e11");
  req_add (&r, "X-Hub-Signature-256",
           "sha256=0000000000000000000000000000000000000000000000000000000000000000");
  req_add (&r, "X-Gitea-Signature", hex);
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_string_equal (res.job_id, "gitea-4a2e1cdf-0a36-4a7c-9a8e-4f8a1c0b7e11");
  assert_int_equal (res.format, WEBHOOK_FORMAT_GITEA);
  /* without its own signature header, GitHub's is not enough */
  r.h[6].name = "X-Gitea-Signature-Old";
  r.h[4].value = "other-delivery";
  expect (&e, &r, 401, "missing signature: header `X-Gitea-Signature`");
  free (body);

  /* Forgejo (its sample pushes the same commit to the same branch as
   * Gitea's, which the replay store would refuse: a store of its own) */
  {
    bvm_error_t err = NULL;
    webhook_replay_close (e.replay);
    assert_ok (webhook_replay_open (&e.replay, NULL, 64, WEBHOOK_REPLAY_SPAN_S, &err), &err);
    e.deps.replay = e.replay;
  }
  body = data_file ("forgejo-push.json", &len);
  hmac_hex (hex, SECRET, body, len);
  memset (&r, 0, sizeof r);
  r.method = "POST", r.path = "/webhook", r.body = body, r.len = len;
  req_add (&r, "Content-Type", "application/json; charset=utf-8");
  req_add (&r, "X-Forgejo-Event", "push");
  req_add (&r, "X-Forgejo-Delivery", "f-1");
  req_add (&r, "X-Gitea-Event", "push");
  req_add (&r, "X-Forgejo-Signature", hex);
  /* codeberg.example is not in the table: the payload names acme/hello too */
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_string_equal (res.job_id, "forgejo-f-1");
  assert_int_equal (res.format, WEBHOOK_FORMAT_FORGEJO);
  assert_int_equal (queued (&e), 2);
  free (body);
  env_dispose (&e);
}

static void
test_handle_gitlab (void **state)
{
  struct env e;
  struct req r;
  struct webhook_response res;
  size_t len = 0;
  char *body;
  (void) state;

  env_init (&e);
  body = data_file ("gitlab-push.json", &len);
  memset (&r, 0, sizeof r);
  r.method = "POST", r.path = "/webhook", r.body = body, r.len = len;
  req_add (&r, "Content-Type", "application/json");
  req_add (&r, "X-Gitlab-Event", "Push Hook");
  req_add (&r, "X-Gitlab-Token", "wrong");
  /* main's secret is not GitLab's token here: wrong */
  expect (&e, &r, 401, "wrong signature");
  r.h[2].value = SECRET;
  /* no X-Gitlab-Event-UUID (older GitLab): the body's hash is the id */
  assert_int_equal (handle (&res, &e, &r), 0);
  assert_int_equal (res.status, 202);
  assert_int_equal (strncmp (res.job_id, "gitlab_", 7), 0);
  expect (&e, &r, 200, "duplicate delivery");
  free (body);

  body = data_file ("gitlab-tag-push.json", &len);
  r.body = body, r.len = len;
  req_add (&r, "X-Gitlab-Event-UUID", "7e3a1c55-0000-4000-8000-000000000001");
  expect (&e, &r, 200, "ignored: tag push");
  r.h[1].value = "Tag Push Hook";
  expect (&e, &r, 200, "ignored: tag push");
  r.h[1].value = "Merge Request Hook";
  expect (&e, &r, 200, "ignored: event `Merge Request Hook`");
  free (body);
  env_dispose (&e);
}

/* --- replays -------------------------------------------------------------------------------- */

#define SPAN WEBHOOK_REPLAY_SPAN_S
#define NOW ((int64_t) time (NULL))

static void
test_replay_memory (void **state)
{
  struct webhook_replay *r = NULL;
  bvm_error_t err = NULL;
  char key[64];
  (void) state;

  assert_ok (webhook_replay_open (&r, NULL, 16, SPAN, &err), &err);
  assert_false (webhook_replay_seen (r, "a", "github-a", NOW));
  assert_ok (webhook_replay_add (r, "a", "github-a", NOW, &err), &err);
  assert_true (webhook_replay_seen (r, "a", "github-a", NOW));
  assert_ok (webhook_replay_add (r, "a", "github-a", NOW, &err), &err); /* no second copy */
  assert_int_equal (webhook_replay_count (r), 1);
  assert_fails_with (webhook_replay_add (r, "a", "has space", NOW, &err), &err, "not valid");
  assert_false (webhook_replay_seen (r, "a", "has space", NOW));
  /* a long run through a small window: exactly the last 16 are known */
  for (int i = 0; i < 1000; i++)
    {
      snprintf (key, sizeof key, "k-%d", i);
      assert_ok (webhook_replay_add (r, "a", key, NOW, &err), &err);
    }
  assert_int_equal (webhook_replay_count (r), 16);
  for (int i = 0; i < 1000; i++)
    {
      snprintf (key, sizeof key, "k-%d", i);
      if (webhook_replay_seen (r, "a", key, NOW) != (i >= 1000 - 16))
        fail_msg ("key %s: seen %d", key, webhook_replay_seen (r, "a", key, NOW));
    }
  assert_false (webhook_replay_seen (r, "a", "github-a", NOW));
  webhook_replay_close (r);
}

static int
file_lines (const char *path)
{
  char *out = t_sh_out ("wc -l < %s", path);
  int n = atoi (out);
  free (out);
  return n;
}

static void
test_replay_file (void **state)
{
  struct webhook_replay *r = NULL, *r2 = NULL;
  bvm_error_t err = NULL;
  char path[1024], key[64];
  struct stat st;
  (void) state;

  snprintf (path, sizeof path, "%s/deliveries", tmp);
  assert_ok (webhook_replay_open (&r, path, 16, SPAN, &err), &err);
  assert_ok (webhook_replay_add (r, "a", "github-d-1", NOW, &err), &err);
  assert_ok (webhook_replay_add (r, "a", "body:abc", NOW, &err), &err);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0600);
  /* one receiver per store */
  assert_fails_with (webhook_replay_open (&r2, path, 16, SPAN, &err), &err,
                     "is in use by another buildvm webhook");
  webhook_replay_close (r);

  /* a restart remembers; a torn last line and garbage are skipped */
  /* the torn line is recent: it must be skipped for being torn, not stale */
  t_sh ("printf 'garbage\\n12 bad key\\nx1 k\\n%%s github-torn' \"$(date +%%s)\" >> %s", path);
  assert_ok (webhook_replay_open (&r, path, 16, SPAN, &err), &err);
  assert_true (webhook_replay_seen (r, "a", "github-d-1", NOW));
  assert_true (webhook_replay_seen (r, "a", "body:abc", NOW));
  assert_false (webhook_replay_seen (r, "a", "github-torn", NOW));
  assert_false (webhook_replay_seen (r, "a", "k", NOW));
  assert_int_equal (webhook_replay_count (r), 2);
  /* the torn line was closed, so the next key has a line of its own */
  assert_ok (webhook_replay_add (r, "a", "github-d-2", NOW, &err), &err);
  webhook_replay_close (r);
  assert_ok (webhook_replay_open (&r, path, 16, SPAN, &err), &err);
  assert_true (webhook_replay_seen (r, "a", "github-d-2", NOW));

  /* the file stays below twice what it holds plus slack: compacted to the
   * last 16 */
  for (int i = 0; i < 100; i++)
    {
      snprintf (key, sizeof key, "k-%d", i);
      assert_ok (webhook_replay_add (r, "a", key, NOW, &err), &err);
      assert_true (file_lines (path) <= 2 * 18 + 2 * 16 + 1); /* 16 keys of "a", 1 legacy */
    }
  webhook_replay_close (r);
  assert_ok (webhook_replay_open (&r, path, 16, SPAN, &err), &err);
  /* the last 16 of "a", and the once-torn line, closed since: an old-format
   * key, which counts for every app */
  assert_int_equal (webhook_replay_count (r), 17);
  assert_true (webhook_replay_seen (r, "zz", "github-torn", NOW));
  assert_true (webhook_replay_seen (r, "a", "k-99", NOW));
  assert_true (webhook_replay_seen (r, "a", "k-84", NOW));
  assert_false (webhook_replay_seen (r, "a", "k-83", NOW));
  assert_false (webhook_replay_seen (r, "a", "github-d-1", NOW));
  /* after compaction the lock still holds */
  assert_fails_with (webhook_replay_open (&r2, path, 16, SPAN, &err), &err, "in use");
  webhook_replay_close (r);

  /* a smaller window on reopen keeps the newest */
  assert_ok (webhook_replay_open (&r, path, 4, SPAN, &err), &err);
  assert_int_equal (webhook_replay_count (r), 4 + 1);
  assert_true (webhook_replay_seen (r, "a", "k-99", NOW));
  assert_false (webhook_replay_seen (r, "a", "k-95", NOW));
  webhook_replay_close (r);

  /* compaction's buffer is capped by the window of the longest lines: keys
   * of the maximal length compact without hitting the cap */
  assert_ok (webhook_replay_open (&r, path, 4, SPAN, &err), &err);
  for (int i = 0; i < 20; i++)
    {
      char big[WEBHOOK_REPLAY_KEY_MAX + 1];
      memset (big, 'k', WEBHOOK_REPLAY_KEY_MAX);
      big[WEBHOOK_REPLAY_KEY_MAX] = '\0';
      memcpy (big, "big-", 4);
      big[4] = (char) ('0' + i / 10);
      big[5] = (char) ('0' + i % 10);
      assert_ok (webhook_replay_add (r, "a", big, NOW, &err), &err);
      assert_true (webhook_replay_seen (r, "a", big, NOW));
    }
  assert_true ((size_t) file_lines (path)
               <= 2 * webhook_replay_count (r) + 2 * 4 + 1); /* compaction bounds it */
  webhook_replay_close (r);

  /* not a regular file */
  snprintf (path, sizeof path, "%s/dir", tmp);
  assert_int_equal (mkdir (path, 0700), 0);
  assert_true (webhook_replay_open (&r, path, 16, SPAN, &err) < 0);
  bvm_error_free (&err);
}

/* issue 11 item 8: every app has its own window, and keys expire */
static void
test_replay_per_app (void **state)
{
  struct webhook_replay *r = NULL;
  bvm_error_t err = NULL;
  char path[1024], key[64];
  const int64_t t0 = NOW; /* one clock reading: the span checks are to the second */
  (void) state;

  snprintf (path, sizeof path, "%s/per-app", tmp);
  assert_ok (webhook_replay_open (&r, path, 16, 3600, &err), &err);
  assert_ok (webhook_replay_add (r, "victim", "body:old", t0, &err), &err);
  /* another app's keys, many times its window, evict nothing of the victim's */
  for (int i = 0; i < 1000; i++)
    {
      snprintf (key, sizeof key, "body:t-%d", i);
      assert_ok (webhook_replay_add (r, "tenant", key, t0, &err), &err);
    }
  assert_true (webhook_replay_seen (r, "victim", "body:old", t0));
  assert_false (webhook_replay_seen (r, "tenant", "body:old", t0));
  assert_false (webhook_replay_seen (r, "victim", "body:t-999", t0));
  assert_true (webhook_replay_seen (r, "tenant", "body:t-999", t0));
  assert_false (webhook_replay_seen (r, "tenant", "body:t-983", t0));
  assert_int_equal (webhook_replay_count (r), 17);
  assert_fails_with (webhook_replay_add (r, "Not-An-App", "k", t0, &err), &err, "not valid");
  /* the span: an hour here */
  assert_true (webhook_replay_seen (r, "victim", "body:old", t0 + 3599));
  assert_false (webhook_replay_seen (r, "victim", "body:old", t0 + 3601));
  webhook_replay_close (r);
  /* a restart keeps each app's keys; stale lines are dropped */
  t_sh ("printf '12 victim body:ancient\\n' >> %s", path);
  assert_ok (webhook_replay_open (&r, path, 16, 3600, &err), &err);
  assert_true (webhook_replay_seen (r, "victim", "body:old", t0));
  assert_false (webhook_replay_seen (r, "victim", "body:ancient", t0));
  assert_int_equal (webhook_replay_count (r), 17);
  webhook_replay_close (r);
}

/* The attack: after many signed pushes of its own app, a tenant resends a
 * captured authentic push of another app under a fresh delivery id. */
static void
test_handle_replay_across_apps (void **state)
{
  struct env e;
  struct req r;
  char body[1024], other[1024], after[41];
  int n;
  (void) state;

  env_init (&e); /* a window of 64 keys per app */
  n = snprintf (body, sizeof body,
                "{\"ref\": \"refs/heads/main\", \"before\": \"%040d\", \"after\": \"%040d\", "
                "\"repository\": {\"full_name\": \"acme/hello\"}}",
                0, 1);
  github_req (&r, "d-victim", body, SECRET);
  assert_int_equal (n, (int) strlen (body));
  expect (&e, &r, 202, "enqueued");
  for (int i = 0; i < 200; i++)
    {
      snprintf (after, sizeof after, "%040d", 1000 + i);
      char delivery[32];
      snprintf (other, sizeof other,
                "{\"ref\": \"refs/heads/main\", \"before\": \"%040d\", \"after\": \"%s\", "
                "\"repository\": {\"full_name\": \"acme/other\"}}",
                999 + i, after);
      snprintf (delivery, sizeof delivery, "d-tenant-%d", i);
      github_req (&r, delivery, other, GITLAB_SECRET);
      expect (&e, &r, 202, "enqueued");
    }
  assert_int_equal (queued (&e), 201);
  github_req (&r, "d-victim-replayed", body, SECRET);
  expect (&e, &r, 200, "duplicate delivery: already received");
  assert_int_equal (queued (&e), 201);
  /* the same push re-serialised (a forge's redelivery, another body): the
   * branch already had that commit */
  snprintf (other, sizeof other,
            "{\"ref\":\"refs/heads/main\",\"before\":\"%040d\",\"after\":\"%040d\","
            "\"repository\":{\"full_name\":\"acme/hello\"}}",
            0, 1);
  github_req (&r, "d-victim-reformatted", other, SECRET);
  expect (&e, &r, 200, "already had commit");
  assert_int_equal (queued (&e), 201);
  env_dispose (&e);
}

/* Past the span only the newest head commit time of a branch is left: a
 * push more than the span older than it is refused; a merely older one
 * (a rebase, a merge of last month's branch) is not. */
static void
test_handle_stale_push (void **state)
{
  struct env e;
  struct req r;
  char body[1024];
  (void) state;

  env_init (&e);
#define PUSH(after, ts)                                                                           \
  snprintf (                                                                                      \
      body, sizeof body,                                                                          \
      "{\"ref\": \"refs/heads/main\", \"after\": \"%040d\", \"repository\": {\"full_name\": "     \
      "\"acme/hello\"}, \"head_commit\": {\"id\": \"%040d\", \"timestamp\": \"%s\"}}",            \
      after, after, ts)
  PUSH (1, "2026-11-20T10:00:00Z");
  github_req (&r, "s-1", body, SECRET);
  expect (&e, &r, 202, "enqueued");
  /* a week older: a rebased or merged branch, fine */
  PUSH (2, "2026-11-13T10:00:00Z");
  github_req (&r, "s-2", body, SECRET);
  expect (&e, &r, 202, "enqueued");
  /* a push from half a year before, which the store no longer knows */
  PUSH (3, "2026-05-01T10:00:00Z");
  github_req (&r, "s-3", body, SECRET);
  expect (&e, &r, 200, "more than 90 days older than the newest push");
  /* another branch of the app has its own newest */
  snprintf (body, sizeof body,
            "{\"ref\": \"refs/heads/staging\", \"after\": \"%040d\", \"repository\": "
            "{\"full_name\": \"acme/hello\"}, \"head_commit\": {\"id\": \"%040d\", "
            "\"timestamp\": \"2026-05-01T10:00:00Z\"}}",
            3, 3);
  github_req (&r, "s-4", body, SECRET_STAGING);
  expect (&e, &r, 202, "enqueued");
  /* a timestamp that is not a date is a malformed payload */
  PUSH (4, "yesterday");
  github_req (&r, "s-5", body, SECRET);
  expect (&e, &r, 400, "is not an RFC 3339 date-time");
#undef PUSH
  env_dispose (&e);
}

/* --- secrets from runner.json ------------------------------------------------------------------ */

static void
test_config_load_secrets (void **state)
{
  struct runner_config *c = NULL;
  struct webhook_config *wc = NULL;
  bvm_error_t err = NULL;
  char cfg[1024], secret[1024];
  (void) state;

  snprintf (cfg, sizeof cfg, "%s/runner.json", tmp);
  snprintf (secret, sizeof secret, "%s/hello.secret", tmp);
  setenv ("BUILDVM_HOME", tmp, 1);

  t_write (cfg, "{}");
  assert_ok (config_load (&c, cfg, &err), &err);
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "has no `apps`");
  config_free (c);

  {
    char *doc = NULL;
    assert_true (asprintf (&doc,
                           "{\"apps\":[{\"app\":\"hello\",\"repo\":\"/srv/git/hello.git\","
                           "\"match\":[\"acme/hello\"],\"secret_file\":\"%s\"}],"
                           "\"webhook\":{\"max_body_bytes\":2048}}",
                           secret)
                 > 0);
    t_write (cfg, doc);
    free (doc);
  }
  assert_ok (config_load (&c, cfg, &err), &err);
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "apps[0] (`hello`): open webhook secret");
  t_write (secret, SECRET "\n");
  assert_int_equal (chmod (secret, 0644), 0);
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "is accessible by group or others (mode 0644)");
  assert_int_equal (chmod (secret, 0600), 0);
  assert_ok (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err);

  /* the trailing newline is not part of the secret */
  {
    struct env e;
    struct req r;
    struct webhook_response res;
    char *body = push_body ("refs/heads/main", COMMIT, "acme/hello", "alice");

    env_init (&e);
    webhook_config_free (e.wc);
    e.wc = wc;
    github_req (&r, "d-file", body, SECRET);
    assert_int_equal (handle (&res, &e, &r), 0);
    assert_int_equal (res.status, 202);
    assert_string_equal (res.app, "hello");
    /* and the config's body cap applies */
    {
      char big[3000];
      memset (big, ' ', sizeof big - 1);
      big[sizeof big - 1] = '\0';
      github_req (&r, "d-big", big, SECRET);
      expect (&e, &r, 413, "the limit is 2048 bytes");
    }
    free (body);
    env_dispose (&e); /* frees wc */
  }

  t_write (secret, "\n");
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "is empty");
  {
    char *big = malloc (WEBHOOK_SECRET_MAX + 2);
    memset (big, 'k', WEBHOOK_SECRET_MAX + 1);
    big[WEBHOOK_SECRET_MAX + 1] = '\0';
    t_write (secret, big);
    free (big);
  }
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "is larger than 4096 bytes");
  unlink (secret);
  assert_int_equal (mkdir (secret, 0700), 0);
  assert_fails_with (webhook_config_load (&wc, &c->webhook, c->apps, c->n_apps, &err), &err,
                     "is not a regular file");
  config_free (c);
  unsetenv ("BUILDVM_HOME");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_signature_github),
    cmocka_unit_test (test_signature_gitea_forgejo),
    cmocka_unit_test (test_signature_gitlab),
    cmocka_unit_test (test_detect_format),
    cmocka_unit_test (test_parse_real_payloads),
    cmocka_unit_test (test_parse_rejects),
    cmocka_unit_test (test_listen),
    cmocka_unit_test_setup_teardown (test_handle_http_level, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_routing, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_enqueue_and_replays, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_ids_and_names, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_gitea_forgejo_gitlab, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_gitlab, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replay_memory, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replay_file, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replay_per_app, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_replay_across_apps, setup, teardown),
    cmocka_unit_test_setup_teardown (test_handle_stale_push, setup, teardown),
    cmocka_unit_test_setup_teardown (test_config_load_secrets, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
