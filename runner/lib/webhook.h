/* webhook.h - git push webhooks in, deploy requests out (docs/webhooks.md)
 *
 * The HTTP server (`buildvm webhook`, runner/lib/webhook_http.c) only moves
 * bytes: it hands every request to webhook_handle(), which decides the answer.
 * So the whole decision (routing, the signature check, the payload parser, the
 * app table, replays, what gets enqueued) is unit-tested and fuzzed without a
 * socket.
 *
 * The request is untrusted from its first byte. webhook_handle() checks, in
 * this order, and stops at the first failure:
 *
 *   path and method         404 / 405   (GET /healthz is 200)
 *   body size               413
 *   format (headers)        400         GitHub, Gitea, Forgejo or GitLab
 *   content type            415         application/json only
 *   event                   200         anything but a push is ignored
 *   signature header        401         present, once, well formed
 *   payload                 400         strict JSON, capped, required fields typed
 *   repository -> apps      404         the apps table of runner.json
 *   signature               401         HMAC-SHA256 / token of a matching app
 *   tag, deletion, branch   200         ignored, nothing enqueued
 *   replay                  200         delivery id, body or the branch's commit
 *                                       seen before for this app
 *   enqueue                 202         with the job id (200 when the queue
 *                                       already had it, 503 when it failed)
 *
 * The payload only selects the app: the deploy request's repository is the
 * app's `repo` from the config, never a URL from the payload.
 */
#ifndef BUILDVM_WEBHOOK_H
#define BUILDVM_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "error.h"
#include "job.h"
#include "util.h"

#define WEBHOOK_PATH "/webhook"
#define WEBHOOK_HEALTH_PATH "/healthz"
#define WEBHOOK_MAX_HEADERS 100      /* the server answers 431 past this */
#define WEBHOOK_SECRET_MAX 4096      /* bytes of a secret file */
#define WEBHOOK_REASON_MAX 200       /* the answer's message */
#define WEBHOOK_FIELD_MAX 2048       /* any string read from a payload */
#define WEBHOOK_REQUESTED_BY_MAX 128 /* pusher names are cut to this */
#define WEBHOOK_MAX_REPO_NAMES 8     /* names of the repository a payload carries */

/* The webhook receiver's settings: runner.json `webhook`, which config.c
 * loads and runner_config embeds. */
struct config_webhook
{
  char *listen;             /* "IPv4:PORT" or "[IPv6]:PORT" */
  uint64_t max_body_bytes;  /* a larger body is refused with 413, unread */
  uint64_t max_connections; /* at once; more are refused */
  uint64_t timeout_seconds; /* an idle connection is closed, a request must be in by then */
  uint64_t replay_window;   /* delivery ids remembered */
};

/* One entry of runner.json `apps` (config.c loads and checks them): which
 * pushes deploy which app. The payload of a push
 * only selects the entry; the deploy request's repository is `repo`. */
struct config_app
{
  char *app;    /* the app id */
  char *repo;   /* the clone URL the runner fetches (a valid deploy request repo) */
  char **match; /* clone URLs or full names a payload may carry, NULL-terminated */
  size_t n_match;
  char **branches; /* branch names without refs/heads/, NULL-terminated */
  size_t n_branches;
  char *secret_file; /* absolute path; only the webhook reads it (webhook_config_load) */
};

enum webhook_format
{
  WEBHOOK_FORMAT_NONE,
  WEBHOOK_FORMAT_GITHUB,  /* X-GitHub-Event, X-Hub-Signature-256: sha256=<hex> */
  WEBHOOK_FORMAT_GITEA,   /* X-Gitea-Event, X-Gitea-Signature: <hex> */
  WEBHOOK_FORMAT_FORGEJO, /* X-Forgejo-Event, X-Forgejo-Signature: <hex> */
  WEBHOOK_FORMAT_GITLAB,  /* X-Gitlab-Event, X-Gitlab-Token: <secret> */
};

/* "github", "gitea", "forgejo", "gitlab" (also the job id prefix), "none" */
const char *webhook_format_name (enum webhook_format f);

struct webhook_header
{
  const char *name; /* compared case-insensitively */
  const char *value;
};

/* One HTTP request as the server received it. Nothing here is trusted. */
struct webhook_request
{
  const char *method;
  const char *path; /* without the query string */
  const struct webhook_header *headers;
  size_t n_headers;
  const char *body; /* the raw bytes, exactly as received; need not be NUL-terminated */
  size_t body_len;
  bool body_too_large; /* the server stopped reading past the cap (413) */
};

/* The answer. `reason` is short printable ASCII for the client and the log. */
struct webhook_response
{
  int status;
  char reason[WEBHOOK_REASON_MAX + 1];
  char job_id[JOB_ID_MAX + 1];         /* 202 and duplicates, else "" */
  char app[JOB_APP_MAX + 1];           /* once known, else "" */
  char delivery[JOB_DELIVERY_MAX + 1]; /* shown escaped and cut, else "" */
  enum webhook_format format;
  char warning[WEBHOOK_REASON_MAX + 1]; /* for the log only, else "" */
};

/* --- the app table with the secrets loaded ----------------------------------------------- */

struct webhook_config;

/* An empty table; bodies above max_body_bytes are refused with 413. */
int webhook_config_new (struct webhook_config **out, size_t max_body_bytes, bvm_error_t *err);
/* Add one app (validated by config_load) with its secret (copied; the copy
 * is wiped when the table is freed). */
int webhook_config_add_app (struct webhook_config *wc, const struct config_app *app,
                            const void *secret, size_t secret_len, bvm_error_t *err);
/* The table of runner.json (`webhook`, `apps`): every app's secret_file is
 * read after checking, on the open file, that it is a regular file of ours or
 * root's that group and others cannot access. A trailing newline is dropped;
 * an empty secret is an error. Fails when the config has no apps. */
int webhook_config_load (struct webhook_config **out, const struct config_webhook *w,
                         const struct config_app *apps, size_t n_apps, bvm_error_t *err);
void webhook_config_free (struct webhook_config *wc);

/* --- replays ------------------------------------------------------------------------------- */

/* The deliveries seen, per app: for each app at most `window` keys, each
 * for `span_s` seconds after it was added, in memory and, with a path, in
 * an append-only file ("<time> <app> <key>" lines) that is read back when
 * the store opens (so a restart remembers) and rewritten when it grows past
 * twice what it holds. The file is locked: two receivers cannot share it.
 * An app's keys are added only for deliveries that app's secret
 * authenticated, so no app can push another app's keys out of the window.
 * Lines of the older "<time> <key>" format count for every app. */
struct webhook_replay;

#define WEBHOOK_REPLAY_KEY_MAX 160 /* keys are [A-Za-z0-9._:-] */
#define WEBHOOK_REPLAY_SPAN_S (90 * 24 * 3600)

int webhook_replay_open (struct webhook_replay **out, const char *path, size_t window,
                         int64_t span_s, bvm_error_t *err);
/* Whether `app` has `key`, added less than the span before `now`. */
bool webhook_replay_seen (const struct webhook_replay *r, const char *app, const char *key,
                          int64_t now);
/* Remember `key` for `app` as of `now` (evicting that app's oldest past the
 * window) and append it to the file (fsync'd). The key is remembered in
 * memory even when the write fails. */
int webhook_replay_add (struct webhook_replay *r, const char *app, const char *key, int64_t now,
                        bvm_error_t *err);
/* The largest N of the keys "<prefix>N" that `app` holds (unexpired), 0
 * when none: the newest head commit time of a branch. */
int64_t webhook_replay_newest (const struct webhook_replay *r, const char *app, const char *prefix,
                               int64_t now);
/* Keys held, all apps together. */
size_t webhook_replay_count (const struct webhook_replay *r);
void webhook_replay_close (struct webhook_replay *r);

/* --- handling a request -------------------------------------------------------------------- */

struct webhook_deps
{
  /* Put a validated request on the queue; *duplicate when the queue already
   * has that job id (queued, running or done). Required for pushes. */
  int (*enqueue) (void *ctx, const struct job_request *job, bool *duplicate, bvm_error_t *err);
  void *ctx;
  struct webhook_replay *replay; /* NULL: the queue's idempotency is the only wall */
  int64_t now;                   /* requested_at, seconds since the epoch; 0 = the clock */
};

/* Decide the answer to one request. Returns 0 with out filled for every
 * answer that is the client's doing (2xx, 4xx); returns negative with err
 * set, and out still filled (500 or 503), when the fault is ours (the queue
 * failed). Never logs: the caller logs out and err. */
int webhook_handle (struct webhook_response *out, const struct webhook_config *wc,
                    const struct webhook_request *req, const struct webhook_deps *deps,
                    bvm_error_t *err);

/* The checks that need neither the body nor a secret (path, method, size,
 * format, content type, event, delivery and signature headers): true when
 * out holds the answer already, so the server need not read the body. A
 * request that passes still goes through webhook_handle() whole. */
bool webhook_answer_early (struct webhook_response *out, const struct webhook_config *wc,
                           const struct webhook_request *req);

/* --- the pieces, exported for tests and the fuzzer ------------------------------------------- */

/* The first value of header `name` and how many times it occurs. */
const char *webhook_header (const struct webhook_request *req, const char *name, size_t *count);

/* Which forge sent it, from the event header (Forgejo and Gitea also send
 * GitHub's headers, so they are looked for first). */
enum webhook_format webhook_detect_format (const struct webhook_request *req);

/* Check `sig` (the header value; NULL when absent) against the body:
 *   github            "sha256=" + 64 hex digits of HMAC-SHA256(secret, body)
 *   gitea, forgejo    64 hex digits of the same
 *   gitlab            the secret itself
 * Hex may be either case. Compared in constant time with CRYPTO_memcmp (the
 * token through SHA-256 first, so its length does not leak either).
 * 0 when it matches; BVM_E_DENIED with a short reason otherwise. */
int webhook_verify_signature (enum webhook_format f, const char *sig, const void *secret,
                              size_t secret_len, const void *body, size_t body_len,
                              bvm_error_t *err);

/* The parts of a push event that matter. Strings are NULL when absent. */
struct webhook_push
{
  char *ref; /* required */
  char *before;
  char *after;                              /* required */
  bool deleted;                             /* `deleted` true or after all zeros */
  bool tag;                                 /* GitLab tag_push or a refs/tags/ ref */
  char *repo_names[WEBHOOK_MAX_REPO_NAMES]; /* clone and web URLs, full name */
  size_t n_repo_names;
  char *pusher; /* the name as sent (not yet cut) */
  char *head_commit;
  int64_t head_time; /* the head commit's timestamp (seconds
                                                * since the epoch), 0 when not sent */
};

/* Parse a push payload of `len` bytes (at most `max`): strict JSON (no
 * duplicate keys, valid UTF-8, no NUL, nesting capped), unknown fields
 * allowed, a known field of the wrong type refused. BVM_E_INVALID (or
 * BVM_E_LIMIT) with a short message that quotes nothing unescaped. */
int webhook_parse_push (struct webhook_push **out, enum webhook_format f, const char *body,
                        size_t len, size_t max, bvm_error_t *err);
void webhook_push_free (struct webhook_push *p);

/* "IPv4:PORT" or "[IPv6]:PORT", port 1-65535: no host names, so there is no
 * lookup and the address bound is exactly the one written. */
int webhook_parse_listen (struct sockaddr_storage *out, socklen_t *len, const char *s,
                          bvm_error_t *err);

DEFINE_CLEANUP_FUNC (webhook_config_freep, struct webhook_config, webhook_config_free)
DEFINE_CLEANUP_FUNC (webhook_replay_closep, struct webhook_replay, webhook_replay_close)
DEFINE_CLEANUP_FUNC (webhook_push_freep, struct webhook_push, webhook_push_free)
#define cleanup_webhook_config __attribute__ ((cleanup (webhook_config_freep)))
#define cleanup_webhook_replay __attribute__ ((cleanup (webhook_replay_closep)))
#define cleanup_webhook_push __attribute__ ((cleanup (webhook_push_freep)))

#endif
