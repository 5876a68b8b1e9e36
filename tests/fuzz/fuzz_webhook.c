/* fuzz_webhook.c - the webhook receiver: signature check, payload parser, routing
 * (webhook.h, docs/webhooks.md)
 *
 * An input is an HTTP request without its request line: header lines
 * ("Name: value", CRLF or LF), an empty line, then the raw body. Without an
 * empty line the whole input is the body and the request has no headers. It
 * goes to POST /webhook with Content-Type application/json unless it names
 * its own content type. The table has two apps on one repository
 * (`org/hello`, https://git.example/org/hello.git): `hello` deploys main with
 * the secret "buildvm-fuzz-secret", `hello-dev` deploys dev with
 * "buildvm-fuzz-secret-dev" (the corpus in tests/fuzz/corpus/webhook is signed
 * with the first).
 *
 * A mutated body no longer matches its signature, so the fuzzer alone would
 * hardly ever get past the check. A signature header whose value is RESIGN
 * (or RESIGN-DEV) is therefore replaced here with the right one for the body
 * as it is (main's secret, or dev's): inputs of that form explore the
 * parser and the routing behind the check.
 *
 * Properties checked on every input:
 *   - every answer has a status the docs list and a printable one-line reason;
 *   - a job is enqueued only with 202 (or a 200 the queue called a
 *     duplicate), and then: the signature header is, by an independent
 *     computation here, the HMAC-SHA256 of the exact body with that app's
 *     secret (the token itself for GitLab); the app deploys the pushed branch;
 *     the repository is the app's configured one, never the payload's; the
 *     commit is the payload's `after`; the request passes job_parse again;
 *   - the same request a second time enqueues nothing (the replay store);
 *   - an early answer (before the body) is the answer webhook_handle gives;
 *   - webhook_verify_signature agrees with the independent check;
 *   - webhook_parse_push either fails with a printable message or gives a
 *     ref, an `after` and at least one repository name, for every format.
 */
#include "fuzz.h"

#include "config.h"
#include "job.h"
#include "jsonx.h"
#include "util.h"
#include "webhook.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <strings.h>

#define SECRET_MAIN "buildvm-fuzz-secret"
#define SECRET_DEV "buildvm-fuzz-secret-dev"
#define REPO "https://git.example/org/hello.git"
#define CONFIG_REPO "file:///srv/git/hello.git"
#define MAX_HEADERS 32
#define MAX_BODY (64 * 1024)

static struct webhook_config *g_wc;

static void
add_app (const char *app, const char *branch, const char *secret)
{
  static char *match[] = { (char *) "org/hello", (char *) REPO, NULL };
  char *branches[] = { (char *) branch, NULL };
  struct config_app a = { .app = (char *) app,
                          .repo = (char *) CONFIG_REPO,
                          .match = match,
                          .n_match = 2,
                          .branches = branches,
                          .n_branches = 1 };
  bvm_error_t err = NULL;

  if (webhook_config_add_app (g_wc, &a, secret, strlen (secret), &err) < 0)
    {
      fprintf (stderr, "fuzz_webhook: set-up: %s\n", bvm_error_msg (&err));
      abort ();
    }
}

static void
init_once (void)
{
  bvm_error_t err = NULL;

  if (g_wc != NULL)
    return;
  if (webhook_config_new (&g_wc, MAX_BODY, &err) < 0)
    abort ();
  add_app ("hello", "main", SECRET_MAIN);
  add_app ("hello-dev", "dev", SECRET_DEV);
}

struct recorder
{
  int calls;
  char *last; /* the job as JSON */
};

static int
record (void *ctx, const struct job_request *job, bool *duplicate, bvm_error_t *err)
{
  struct recorder *r = ctx;
  json_t *doc = job_to_json (job);

  (void) err;
  FUZZ_CHECK (doc != NULL);
  free (r->last);
  r->last = json_dumps (doc, JSON_COMPACT);
  json_decref (doc);
  r->calls++;
  *duplicate = false;
  return 0;
}

/* The request as the server would hand it over. Header names and values
 * point into `text` (modified in place). */
struct parsed
{
  struct webhook_header h[MAX_HEADERS + 1];
  size_t n;
  const char *body;
  size_t body_len;
};

/* The signature of body in the form the header `name` wants, into out. */
static bool
resign (char *out, size_t size, const char *name, const char *secret, const void *body, size_t len)
{
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  char hex[65];

  if (strcasecmp (name, "X-Gitlab-Token") == 0)
    {
      snprintf (out, size, "%s", secret);
      return true;
    }
  if (strcasecmp (name, "X-Hub-Signature-256") != 0 && strcasecmp (name, "X-Gitea-Signature") != 0
      && strcasecmp (name, "X-Forgejo-Signature") != 0)
    return false;
  FUZZ_CHECK (HMAC (EVP_sha256 (), secret, (int) strlen (secret), body, len, mac, &n) != NULL);
  hex_encode (hex, mac, 32);
  snprintf (out, size, "%s%s", strcasecmp (name, "X-Hub-Signature-256") == 0 ? "sha256=" : "",
            hex);
  return true;
}

static void
parse_input (struct parsed *p, char *text, size_t size)
{
  char *end = NULL, *line;
  bool has_ct = false;

  memset (p, 0, sizeof *p);
  for (size_t i = 0; i + 1 < size && end == NULL; i++)
    if (text[i] == '\n'
        && (text[i + 1] == '\n' || (text[i + 1] == '\r' && i + 2 < size && text[i + 2] == '\n')))
      end = text + i;
  if (end == NULL)
    {
      p->body = text;
      p->body_len = size;
    }
  else
    {
      char *b = end + 1;
      if (*b == '\r')
        b++;
      b++;
      p->body = b;
      p->body_len = size - (size_t) (b - text);
      *end = '\0';
      for (line = text; line != NULL && p->n < MAX_HEADERS;)
        {
          char *nl = strchr (line, '\n'), *colon;
          size_t n;
          if (nl != NULL)
            *nl = '\0';
          n = strlen (line);
          if (n > 0 && line[n - 1] == '\r')
            line[n - 1] = '\0';
          colon = strchr (line, ':');
          if (colon != NULL)
            {
              *colon = '\0';
              p->h[p->n].name = line;
              p->h[p->n].value = colon[1] == ' ' ? colon + 2 : colon + 1;
              if (strcasecmp (line, "Content-Type") == 0)
                has_ct = true;
              p->n++;
            }
          line = nl ? nl + 1 : NULL;
        }
    }
  for (size_t i = 0; i < p->n; i++)
    {
      static char sigs[MAX_HEADERS][80];
      const char *v = p->h[i].value;
      if ((strcmp (v, "RESIGN") == 0 || strcmp (v, "RESIGN-DEV") == 0)
          && resign (sigs[i], sizeof sigs[i], p->h[i].name,
                     strcmp (v, "RESIGN") == 0 ? SECRET_MAIN : SECRET_DEV, p->body, p->body_len))
        p->h[i].value = sigs[i];
    }
  if (!has_ct)
    {
      p->h[p->n].name = "Content-Type";
      p->h[p->n].value = "application/json";
      p->n++;
    }
}

static void
check_printable (const char *s)
{
  FUZZ_CHECK (s[0] != '\0');
  for (const unsigned char *q = (const unsigned char *) s; *q; q++)
    FUZZ_CHECK (*q >= 0x20 && *q < 0x7f);
}

/* The independent check: is `sig` the right signature of body for secret? */
static bool
signature_ok (enum webhook_format f, const char *sig, const char *secret, const void *body,
              size_t len)
{
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  char hex[65];

  if (sig == NULL)
    return false;
  if (f == WEBHOOK_FORMAT_GITLAB)
    return strcmp (sig, secret) == 0;
  FUZZ_CHECK (HMAC (EVP_sha256 (), secret, (int) strlen (secret), body, len, mac, &n) != NULL);
  hex_encode (hex, mac, 32);
  if (f == WEBHOOK_FORMAT_GITHUB)
    {
      if (strncmp (sig, "sha256=", 7) != 0)
        return false;
      sig += 7;
    }
  return strlen (sig) == 64 && strncasecmp (sig, hex, 64) == 0;
}

static const char *
signature_header (enum webhook_format f)
{
  switch (f)
    {
    case WEBHOOK_FORMAT_GITHUB: return "X-Hub-Signature-256";
    case WEBHOOK_FORMAT_GITEA: return "X-Gitea-Signature";
    case WEBHOOK_FORMAT_FORGEJO: return "X-Forgejo-Signature";
    case WEBHOOK_FORMAT_GITLAB: return "X-Gitlab-Token";
    default: return NULL;
    }
}

static void
check_parsers (const struct parsed *p)
{
  static const enum webhook_format all[] = { WEBHOOK_FORMAT_GITHUB, WEBHOOK_FORMAT_GITEA,
                                             WEBHOOK_FORMAT_FORGEJO, WEBHOOK_FORMAT_GITLAB };
  for (size_t i = 0; i < ARRAY_SIZE (all); i++)
    {
      struct webhook_push *push = NULL;
      bvm_error_t err = NULL;
      int ret = webhook_parse_push (&push, all[i], p->body, p->body_len, MAX_BODY, &err);
      if (ret < 0)
        {
          FUZZ_CHECK (push == NULL);
          fuzz_check_error (ret, &err);
          continue;
        }
      FUZZ_CHECK (push->ref != NULL && push->after != NULL);
      FUZZ_CHECK (push->n_repo_names >= 1 && push->n_repo_names <= WEBHOOK_MAX_REPO_NAMES);
      for (size_t k = 0; k < push->n_repo_names; k++)
        FUZZ_CHECK (push->repo_names[k][0] != '\0');
      webhook_push_free (push);
    }
}

static void
check_verify (const struct webhook_request *req, enum webhook_format f)
{
  const char *name = signature_header (f);
  const char *sig = name ? webhook_header (req, name, NULL) : NULL;
  bvm_error_t err = NULL;
  int ret;

  if (name == NULL)
    return;
  ret = webhook_verify_signature (f, sig, SECRET_MAIN, strlen (SECRET_MAIN), req->body,
                                  req->body_len, &err);
  FUZZ_CHECK ((ret == 0) == signature_ok (f, sig, SECRET_MAIN, req->body, req->body_len));
  if (ret < 0)
    fuzz_check_error (ret, &err);
}

static void
check_job (const struct recorder *rec, const struct webhook_request *req,
           const struct webhook_response *res, enum webhook_format f)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  const char *sig = webhook_header (req, signature_header (f), NULL);
  const char *secret;
  struct webhook_push *push = NULL;

  FUZZ_CHECK (rec->last != NULL);
  if (job_parse (&j, rec->last, strlen (rec->last), &err) < 0)
    {
      fprintf (stderr, "enqueued an invalid request %s: %s\n", rec->last, bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "the enqueued request parses");
    }
  FUZZ_CHECK (strcmp (j->id, res->job_id) == 0);
  FUZZ_CHECK (strcmp (j->app, res->app) == 0);
  FUZZ_CHECK (strcmp (j->repo, CONFIG_REPO) == 0);
  FUZZ_CHECK (strcmp (j->trigger, "webhook") == 0);
  FUZZ_CHECK (strncmp (j->id, webhook_format_name (f), strlen (webhook_format_name (f))) == 0);
  if (strcmp (j->app, "hello") == 0)
    {
      FUZZ_CHECK (strcmp (j->ref, "refs/heads/main") == 0);
      secret = SECRET_MAIN;
    }
  else
    {
      FUZZ_CHECK (strcmp (j->app, "hello-dev") == 0 && strcmp (j->ref, "refs/heads/dev") == 0);
      secret = SECRET_DEV;
    }
  FUZZ_CHECK (signature_ok (f, sig, secret, req->body, req->body_len));
  FUZZ_CHECK (webhook_parse_push (&push, f, req->body, req->body_len, MAX_BODY, &err) == 0);
  FUZZ_CHECK (strcmp (push->after, j->commit) == 0 && !push->deleted && !push->tag);
  webhook_push_free (push);
  job_free (j);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const int statuses[] = { 200, 202, 400, 401, 404, 405, 413, 415 };
  struct recorder rec = { 0, NULL };
  struct webhook_deps deps = { record, &rec, NULL, 1795692615 };
  struct webhook_request req = { "POST", WEBHOOK_PATH, NULL, 0, NULL, 0, false };
  struct webhook_response res, again, early;
  struct webhook_replay *replay = NULL;
  struct parsed p;
  bvm_error_t err = NULL;
  char *text;
  bool listed = false, answered_early;
  int ret;

  init_once ();
  text = fuzz_cstr (data, size);
  parse_input (&p, text, size);
  req.headers = p.h;
  req.n_headers = p.n;
  req.body = p.body;
  req.body_len = p.body_len;

  check_parsers (&p);
  check_verify (&req, webhook_detect_format (&req));

  FUZZ_CHECK (webhook_replay_open (&replay, NULL, 16, WEBHOOK_REPLAY_SPAN_S, &err) == 0);
  deps.replay = replay;
  answered_early = webhook_answer_early (&early, g_wc, &req);
  ret = webhook_handle (&res, g_wc, &req, &deps, &err);
  FUZZ_CHECK (ret == 0 && err == NULL);
  for (size_t i = 0; i < ARRAY_SIZE (statuses); i++)
    listed |= res.status == statuses[i];
  FUZZ_CHECK (listed);
  check_printable (res.reason);
  /* for looking at what a corpus exercises */
  if (getenv ("FUZZ_WEBHOOK_VERBOSE") != NULL)
    fprintf (stderr, "%d %s %s %s\n", res.status, res.app, res.job_id, res.reason);
  if (answered_early)
    FUZZ_CHECK (early.status == res.status && strcmp (early.reason, res.reason) == 0
                && rec.calls == 0);
  if (res.status == 202)
    {
      FUZZ_CHECK (rec.calls == 1);
      check_job (&rec, &req, &res, res.format);
      /* the same request again is a replay */
      ret = webhook_handle (&again, g_wc, &req, &deps, &err);
      FUZZ_CHECK (ret == 0 && again.status == 200 && rec.calls == 1);
      FUZZ_CHECK (strstr (again.reason, "duplicate") != NULL);
    }
  else
    FUZZ_CHECK (rec.calls == 0);

  webhook_replay_close (replay);
  free (rec.last);
  free (text);
  return 0;
}
