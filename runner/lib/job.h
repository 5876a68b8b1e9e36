/* job.h - the deploy request: what the control plane asks the runner to build
 *
 *   {"id": "d-42", "app": "hello", "repo": "https://git.example/hello.git",
 *    "commit": "<40 lowercase hex>", "ref": "refs/heads/main"}
 *
 * The request is untrusted input. job_parse() validates every field (see
 * docs/schemas.md) and returns an immutable plan object: nothing downstream
 * re-validates, so nothing downstream may build a job_request by hand from
 * unchecked strings.
 */
#ifndef BUILDVM_JOB_H
#define BUILDVM_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

#define JOB_REQUEST_MAX_BYTES (64 * 1024)
#define JOB_ID_MAX 128    /* ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ */
#define JOB_APP_MAX 63    /* ^[a-z0-9][a-z0-9-]{0,62}$ */
#define JOB_COMMIT_LEN 40 /* a full SHA-1 object id, lowercase hex */
#define JOB_REF_MAX 255
#define JOB_REPO_MAX 2048
#define JOB_DELIVERY_MAX 128
#define JOB_REQUESTED_BY_MAX 256
#define JOB_REQUESTED_AT_MAX 64

struct job_request
{
  char *id;           /* the control plane's id for this deploy, unique per request */
  char *app;          /* the app id: names its repository, prefix, role and logs */
  char *repo;         /* file:///abs, /abs, http:// or https:// URL, no credentials */
  char *commit;       /* exactly 40 lowercase hex digits: never a ref or an expression */
  char *ref;          /* the ref the commit was pushed to, "refs/..." */
  char *trigger;      /* "manual" (default), "webhook" or "api" */
  char *delivery;     /* optional: the webhook delivery id, else NULL */
  char *requested_at; /* optional: RFC 3339 timestamp, else NULL */
  char *requested_by; /* optional: free text naming the requester, else NULL */
};

/* The effective resources of one job, resolved from the build spec, the
 * runner's defaults and its limits by plan_resolve_resources(). */
struct job_resources
{
  uint64_t vcpus;
  uint64_t memory_mib;
  uint64_t disk_mib;
  uint64_t timeout; /* seconds for the whole build */
};

/* Parse and validate a deploy request of `len` bytes (no NUL needed). Any
 * failure is BVM_E_INVALID (BVM_E_LIMIT when over JOB_REQUEST_MAX_BYTES) with
 * a message naming the field: "deploy request: field `commit` ...". */
int job_parse (struct job_request **out, const char *json, size_t len, bvm_error_t *err);
int job_load_file (struct job_request **out, const char *path, bvm_error_t *err);

/* The request as a JSON object (optional fields only when set); NULL on ENOMEM. */
json_t *job_to_json (const struct job_request *j);
void job_free (struct job_request *j);

DEFINE_CLEANUP_FUNC (job_freep, struct job_request, job_free)
#define cleanup_job __attribute__ ((cleanup (job_freep)))

/* Validators shared with other modules (queue, webhook, store, logs): each
 * returns NULL, or why not as a static string for a message. */
const char *job_app_id_problem (const char *s);
const char *job_id_problem (const char *s);
const char *job_commit_problem (const char *s);
const char *job_ref_problem (const char *s);
/* A webhook delivery id: ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$ */
const char *job_delivery_problem (const char *s);

/* The key of a job in the queue and the record store: "<app>+<id>". A job id
 * is the producer's and unique only within its app: keyed by the id alone,
 * one app's job could shadow another's (de-duplicated as "already done",
 * its record overwritten). `+` is in neither grammar, so a key splits one
 * way only. */
#define JOB_KEY_MAX (JOB_APP_MAX + 1 + JOB_ID_MAX)
#define JOB_KEY_SEP '+'
/* 0, or -1 when app or id is invalid (buf is then ""). */
int job_key (char buf[JOB_KEY_MAX + 1], const char *app, const char *id);
const char *job_key_problem (const char *s);
/* Split a valid key; app and id (each may be NULL) get its parts. */
bool job_key_split (const char *key, char app[JOB_APP_MAX + 1], char id[JOB_ID_MAX + 1]);
/* RFC 3339 date-time, e.g. "2026-11-26T11:34:54Z" or with .frac / +01:00. */
const char *job_rfc3339_problem (const char *s);
/* The same, as seconds since the epoch (the offset applied, the fraction
 * dropped); false when not valid. */
bool job_rfc3339_epoch (const char *s, int64_t *out);

/* Cross-module internal (job, spec, config): render an untrusted value for an
 * error message: at most ~48 bytes, every byte outside printable ASCII and
 * every backtick or backslash as \xNN, "..." when truncated. Returns buf. */
const char *job__show (char *buf, size_t size, const char *s);
#define JOB__SHOW_SIZE 256

#endif
