/* regtoken.h - registry tokens scoped per job: the token server of the
 * distribution registry's `auth: token` (docs/security.md, "Registry tokens")
 *
 * Two credentials, each narrower than the one before:
 *
 *   job ticket  runner -> token server. Minted by the runner for one job,
 *               from the ticket key it shares with the token server
 *               (`registry.job_tickets`, `token_server.ticket_key`):
 *               "bvt1.<payload>.<mac>", the payload base64url (no padding)
 *               of the JSON {"app","job","commit","ref","exp"} (exp: the
 *               role's expiry, the job's deadline, unix seconds), the mac
 *               base64url of HMAC-SHA256(key, "bvt1.<payload>"). Sent as
 *               HTTP Basic to the realm, user `<app>/<job>`, password the
 *               ticket. It holds no grant: the token server mints the job's
 *               role itself, from the same policies, and decides every scope
 *               with it.
 *   token       token server -> registry. A JWT (RS256 for an RSA key, ES256
 *               for a P-256 key) with `kid` the libtrust fingerprint of the
 *               signing key, which docker-registry 2.8 looks up among the
 *               public keys of the certificates in its `rootcertbundle`;
 *               iss, aud (the registry's `issuer` and `service`), sub
 *               `job:<app>/<job>`, exp the earlier of now + token_seconds and
 *               the ticket's exp, and `access`: exactly the requested actions
 *               the role allows (`pull` by registry:PullImage, `push` by
 *               registry:PushImage, on `registry:<repository>:*`), nothing
 *               else (no `*`, no `delete`, no catalog).
 *
 * A scope the role does not allow is left out of the token rather than
 * refused (the token spec's rule): the registry then refuses the request
 * itself.
 */
#ifndef BUILDVM_REGTOKEN_H
#define BUILDVM_REGTOKEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.h"
#include "util.h"

#define REGTOKEN_TICKET_KEY_MIN 32 /* bytes of the shared ticket key */
#define REGTOKEN_TICKET_KEY_MAX 1024
#define REGTOKEN_TICKET_MAX 2048 /* a ticket, as text */
#define REGTOKEN_USER_MAX (JOB_APP_MAX + 1 + JOB_ID_MAX)
#define REGTOKEN_AUTHZ_MAX 4096 /* the Authorization header */
#define REGTOKEN_SCOPES_MAX 16  /* scopes in one token request, all parameters together */
#define REGTOKEN_SCOPE_MAX 512  /* one scope */
#define REGTOKEN_REASON_MAX 512
#define REGTOKEN_KID_LEN 59 /* 12 groups of 4, 11 colons */
#define REGTOKEN_PATH "/token"
#define REGTOKEN_HEALTH_PATH "/healthz"

/* `token_server` in runner.json (docs/schemas.md); loaded by config.c. */
struct regtoken_settings
{
  char *listen;      /* "127.0.0.1:8586" */
  char *signing_key; /* PEM private key (RSA >= 2048 bits or P-256), private file; NULL: none */
  char *ticket_key;  /* the shared ticket key; NULL: registry.job_tickets */
  char *issuer;      /* the registry's auth.token.issuer */
  char *service;     /* the registry's auth.token.service */
  uint64_t token_seconds;
  uint64_t max_connections;
  uint64_t timeout_seconds;
};

void regtoken_settings_dispose (struct regtoken_settings *s);

/* The shared ticket key: a private file (fs_check_private_fd) of
 * REGTOKEN_TICKET_KEY_MIN..MAX bytes. *out is malloc'd; wipe it. */
int regtoken_ticket_key_load (unsigned char **out, size_t *len, const char *path,
                              bvm_error_t *err);

/* What a ticket says. */
struct regtoken_job
{
  char app[JOB_APP_MAX + 1];
  char id[JOB_ID_MAX + 1];
  char commit[JOB_COMMIT_LEN + 1];
  char ref[JOB_REF_MAX + 1];
  int64_t expires_at; /* unix seconds */
};

/* A ticket for job (its fields validated) and its Basic user `<app>/<id>`:
 * *ticket and *user are malloc'd. */
int regtoken_ticket_mint (char **ticket, char **user, const unsigned char *key, size_t key_len,
                          const struct regtoken_job *job, bvm_error_t *err);
/* Check a ticket (hostile input): its size, its mac, its payload's grammar,
 * that user names its job and that it has not expired at `now`.
 * BVM_E_DENIED otherwise, with a reason that never quotes the ticket. */
int regtoken_ticket_verify (struct regtoken_job *out, const unsigned char *key, size_t key_len,
                            const char *user, const char *ticket, int64_t now, bvm_error_t *err);

/* --- the signing key ------------------------------------------------------------------- */

struct regtoken_signer;

/* A PEM private key from a private file: RSA of at least 2048 bits (RS256)
 * or EC P-256 (ES256). */
int regtoken_signer_load (struct regtoken_signer **out, const char *path, bvm_error_t *err);
/* The same from PEM text (the tests). */
int regtoken_signer_from_pem (struct regtoken_signer **out, const char *pem, size_t len,
                              bvm_error_t *err);
void regtoken_signer_free (struct regtoken_signer *s);
const char *regtoken_signer_alg (const struct regtoken_signer *s); /* "RS256" | "ES256" */
/* The libtrust fingerprint of the public key: base32 of the first 240 bits
 * of the sha256 of its DER SubjectPublicKeyInfo, in 12 groups of 4
 * separated by `:` (what docker-registry 2.8 matches `kid` with). */
const char *regtoken_signer_kid (const struct regtoken_signer *s);
/* A compact JWS of claims: header {"alg","kid","typ":"JWT"}. */
int regtoken_jwt_sign (char **out, const struct regtoken_signer *s, const json_t *claims,
                       bvm_error_t *err);

/* base64url without padding, the JOSE form; exposed for the tests. The
 * decoder is strict: only the alphabet, no padding, no length of 4n+1,
 * zero trailing bits; *out is NUL-terminated. */
int regtoken__b64url_encode (char **out, const void *data, size_t len);
int regtoken__b64url_decode (unsigned char **out, size_t *out_len, const char *s, size_t len,
                             size_t max);

/* --- scopes ---------------------------------------------------------------------------- */

/* One scope of the token spec, `repository:<name>:<action>[,<action>...]`.
 * The owner of that grammar: the name must be an OCI repository
 * (oci_repository_problem), actions are 1..8 of [a-z*] each, at most 8. A
 * scope of another type (`registry:catalog:*`) parses, and is never
 * granted. */
struct regtoken_scope
{
  char type[32];
  char name[REGTOKEN_SCOPE_MAX];
  bool pull, push; /* the actions we know */
  bool other;      /* an action we never grant (`*`, `delete`, ...) */
};
/* NULL, or why `s` is not a scope (a static string). */
const char *regtoken_scope_problem (struct regtoken_scope *out, const char *s);

/* --- the server ------------------------------------------------------------------------ */

struct regtoken_server;
struct policy;

struct regtoken_server_opts
{
  const struct regtoken_settings *settings;
  const struct regtoken_signer *signer; /* borrowed */
  const unsigned char *ticket_key;      /* borrowed */
  size_t ticket_key_len;
  const struct policy *role_template; /* borrowed */
  const struct policy *boundary;      /* borrowed, may be NULL */
};
int regtoken_server_new (struct regtoken_server **out, const struct regtoken_server_opts *o,
                         bvm_error_t *err);
void regtoken_server_free (struct regtoken_server *s);

/* One GET of the realm. */
struct regtoken_request
{
  const char *service;       /* the `service` parameter, NULL if absent */
  const char *const *scopes; /* every `scope` parameter (each may hold several, space-separated) */
  size_t n_scopes;
  const char *authorization; /* the Authorization header, NULL if absent */
  int64_t now;               /* unix seconds */
};

struct regtoken_response
{
  int status;                       /* 200, 400 or 401 */
  char *body;                       /* malloc'd JSON; the token reply on 200, {"errors":..} else */
  char reason[REGTOKEN_REASON_MAX]; /* for the log: what was granted or why not */
  char subject[REGTOKEN_USER_MAX + 8];
};

/* Decide and answer. <0 only on ENOMEM or a signing failure (then answer
 * 500); a refusal is a response. */
int regtoken_handle (struct regtoken_response *res, const struct regtoken_server *s,
                     const struct regtoken_request *rq, bvm_error_t *err);
void regtoken_response_dispose (struct regtoken_response *res);

DEFINE_CLEANUP_FUNC (regtoken_signer_freep, struct regtoken_signer, regtoken_signer_free)
DEFINE_CLEANUP_FUNC (regtoken_server_freep, struct regtoken_server, regtoken_server_free)
#define cleanup_regtoken_signer __attribute__ ((cleanup (regtoken_signer_freep)))
#define cleanup_regtoken_server __attribute__ ((cleanup (regtoken_server_freep)))

#endif
