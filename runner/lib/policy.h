/* policy.h - IAM-style policies and the per-job roles minted from them
 *
 * Every write a job makes (registry push, base-image pull, artifact, secret
 * read, log stream) is authorized by a role minted for that job at lease time
 * from a template policy (policies/build-role.json) and capped by a permission
 * boundary (policies/boundary.json). The policy language is the JSON grammar
 * of AWS IAM identity policies with IAM's evaluation semantics: default deny,
 * an explicit Deny anywhere wins, statement order never matters. The full
 * grammar, the actions and resources and worked examples are in
 * policies/README.md.
 *
 *   policy_load_file / policy_parse   text -> checked template (variables are
 *                                     validated here, substituted at mint)
 *   role_mint                         template + boundary + job -> role
 *   role_authorize / role_decide      (action, resource) -> allow | deny
 *
 * A role is immutable after role_mint and may be shared between threads.
 * role_decide does not allocate.
 */
#ifndef BUILDVM_POLICY_H
#define BUILDVM_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

#define POLICY_MAX_BYTES (64 * 1024) /* a policy document */
#define POLICY_MAX_STATEMENTS 100
#define POLICY_MAX_VALUES 100    /* items in one Action/Resource/condition list */
#define POLICY_MAX_PATTERN 1024  /* one action, resource or condition value */
#define POLICY_VAR_MAX 255       /* one variable value at mint time */
#define POLICY_ACTION_MAX 256    /* a requested action */
#define POLICY_RESOURCE_MAX 4096 /* a requested resource */
#define POLICY_DECISION_MAX 512

/* The actions the runner asks about (see the table in policies/README.md). */
#define POLICY_ACTION_PUSH_IMAGE "registry:PushImage"
#define POLICY_ACTION_PULL_IMAGE "registry:PullImage"
#define POLICY_ACTION_PUT_OBJECT "artifacts:PutObject"
#define POLICY_ACTION_GET_SECRET "secrets:GetSecret"
#define POLICY_ACTION_PUT_LOG_EVENTS "logs:PutLogEvents"
/* one outgoing connection of a build, resource `net:<host>:<port>` as made by
 * netaddr_resource (netaddr.h) */
#define POLICY_ACTION_NET_CONNECT "net:Connect"

struct policy;
struct role;

/* The job's values for ${job:App}, ${job:Commit}, ${job:Ref}, ${job:Id}; they
 * are also the request context keys job:App ... job:Id. NULL means unset: a
 * policy that uses an unset variable fails to mint, and the context key is
 * missing (which conditions treat as IAM does). */
struct policy_vars
{
  const char *app;
  const char *commit;
  const char *ref;
  const char *id;
};

/* Extra request context keys (beyond the job keys), looked up
 * case-insensitively like IAM condition keys. The job keys always come from
 * the role: a context entry cannot override them. */
struct policy_context_entry
{
  const char *key;
  const char *value;
};
struct policy_context
{
  const struct policy_context_entry *entries;
  size_t n;
};

enum policy_reason
{
  POLICY_ALLOWED = 0,     /* a role statement allows it and the boundary does too */
  POLICY_IMPLICIT_DENY,   /* no role statement allows it */
  POLICY_EXPLICIT_DENY,   /* a Deny statement in the role or the boundary matches */
  POLICY_BOUNDARY_DENY,   /* the role allows it, the boundary does not */
  POLICY_EXPIRED,         /* the role is past its expiry */
  POLICY_INVALID_REQUEST, /* the resource or action is malformed (see role_decide) */
};

struct policy_decision
{
  bool allowed;
  enum policy_reason reason;
  /* The deciding statement's index in its policy, -1 if no statement decided. */
  int statement;
  /* Printable, one line: "allowed by `build-role.json` statement `PushOwnImage`",
   * "explicit deny by `boundary.json` Statement[3]", "implicit deny: no statement
   * allows it", "not allowed by the permission boundary `boundary.json`",
   * "role expired at 2026-...Z", "invalid resource: ...". */
  char why[POLICY_DECISION_MAX];
};

/* Parse a policy. `name` is used in errors, e.g. "policy `build-role.json`:
 * unknown statement key `Foo` in Statement[1]"; every failure is BVM_E_INVALID
 * (BVM_E_LIMIT when the text is over POLICY_MAX_BYTES). */
int policy_parse (struct policy **out, const char *json, size_t len, const char *name,
                  bvm_error_t *err);
/* Same for a file; the path as given names the policy in errors. */
int policy_load_file (struct policy **out, const char *path, bvm_error_t *err);

/* The defaults compiled into the binary, so the runner works with no policy
 * files on disk: the text of policies/build-role.json and policies/boundary.json
 * as they were at build time. *len (if not NULL) gets the length; the text is
 * NUL-terminated. */
const char *policy_builtin_role (size_t *len);
const char *policy_builtin_boundary (size_t *len);
#define POLICY_BUILTIN_ROLE_NAME "build-role.json"
#define POLICY_BUILTIN_BOUNDARY_NAME "boundary.json"
/* Parse one of them: `boundary` false for the role template, true for the
 * boundary. Named "build-role.json" / "boundary.json" in errors and decisions. */
int policy_load_builtin (struct policy **out, bool boundary, bvm_error_t *err);

const char *policy_name (const struct policy *p);
size_t policy_statement_count (const struct policy *p);
/* The policy document as loaded (borrowed reference). */
const json_t *policy_json (const struct policy *p);
void policy_free (struct policy *p);

/* IAM wildcard match over the exact strings: `*` is any run of characters
 * (including none, crossing `/` and `:`), `?` is exactly one character.
 * The match is literal: "apps/a/../b" is under the prefix "apps/a/" here;
 * role_decide refuses such resources before matching. */
bool policy_wildcard_match (const char *pattern, const char *s, bool ignore_case);

/* Mint a role for a job: instantiate the template (and the boundary, which
 * may be NULL) with `vars`, give it an id "role-<job id>-<8 random hex>" and
 * an expiry (unix seconds, > 0; the job's deadline). Variable values are
 * validated, never escaped: app, commit and id must be one path segment of
 * printable ASCII without spaces or `/ : * ? $ { }`, backticks or
 * backslashes, and not "." or ".."; ref follows the same rules but may
 * contain `/` between segments that are not empty, "." or "..". A value that could widen or shift a
 * pattern is refused with BVM_E_INVALID (see policies/README.md for why). */
int role_mint (struct role **out, const struct policy *tmpl, const struct policy *boundary,
               const struct policy_vars *vars, int64_t expires_at, bvm_error_t *err);

/* Decide one request. `ctx` may be NULL (the job keys always come from the
 * role). Refuses outright, as an explicit deny, a resource or action that is
 * empty, too long, or contains control characters, and a resource with a
 * `.` or `..` segment or `//`, so that a key which would escape its prefix
 * can never be allowed by a literal match. Does not allocate. */
void role_decide (const struct role *role, const char *action, const char *resource,
                  const struct policy_context *ctx, struct policy_decision *out);

/* 0 if allowed, else a BVM_E_DENIED error naming the role, the action, the
 * resource and the deciding statement: "role `role-j1-ab12cd34` denies
 * `registry:PushImage` on `registry:apps/other:abc` (implicit deny: no
 * statement allows it)"; an expired role: "role `...` expired at ...: denies
 * ...". */
int role_authorize (const struct role *role, const char *action, const char *resource,
                    bvm_error_t *err);
/* The same with extra context keys. */
int role_authorize_ctx (const struct role *role, const char *action, const char *resource,
                        const struct policy_context *ctx, bvm_error_t *err);

const char *role_id (const struct role *role);
int64_t role_expires_at (const struct role *role);
/* The instantiated policy (and boundary, NULL if none). */
const struct policy *role_policy (const struct role *role);
const struct policy *role_boundary (const struct role *role);

/* For the job record: {"id", "expires_at" (RFC 3339), "policy": {"name",
 * "document"}, "boundary": {"name", "document"} (absent without one)} with the
 * instantiated documents. NULL on ENOMEM. */
json_t *role_to_json (const struct role *role);
void role_free (struct role *role);

DEFINE_CLEANUP_FUNC (policy_freep, struct policy, policy_free)
DEFINE_CLEANUP_FUNC (role_freep, struct role, role_free)
#define cleanup_policy __attribute__ ((cleanup (policy_freep)))
#define cleanup_role __attribute__ ((cleanup (role_freep)))

#endif
