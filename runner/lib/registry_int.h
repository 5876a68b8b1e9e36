/* registry_int.h - what registry.c (the operations) and registry_auth.c
 * (credentials, challenges, tokens) share. Not for the callers of registry.h.
 */
#ifndef BUILDVM_REGISTRY_INT_H
#define BUILDVM_REGISTRY_INT_H

#include "http.h"
#include "registry.h"

#define MAX_TOKENS 16

enum auth_scheme
{
  AUTH_NONE,
  AUTH_BASIC,
  AUTH_BEARER,
};

struct token
{
  char *scope; /* the cache key: the scope string of the requests it serves */
  char *value;
  int64_t expires_ms;
};

struct registry
{
  struct http_client http; /* the transport: curl handle, timeouts, deadline, retries */
  char *url;               /* scheme://host[:port], no trailing slash */
  bool https;
  uint64_t chunk_size;

  /* auth (registry_auth.c) */
  char *username;
  char *password;
  char *static_token;
  enum auth_scheme scheme;
  char *realm;
  char *service;
  struct token tokens[MAX_TOKENS];
  size_t next_token; /* round-robin eviction */

  struct registry_stats stats; /* requests, retries and bytes_uploaded are http.stats' */
};

/* registry_auth.c: read registry_options.credentials_file into r. */
int registry__credentials_load (struct registry *r, const char *path, bvm_error_t *err);
/* registry_auth.c: wipe and free the credentials, tokens and realm. */
void registry__auth_dispose (struct registry *r);
/* registry_auth.c: the request with auth: anonymous (or what we learned
 * before) first; on a 401, follow the challenge once. 0 with q->status for
 * any status but 401, 403, 429 and 5xx, which are errors (the last two
 * retryable). */
int registry__request (struct registry *r, struct http_req *q, bool *retryable, bvm_error_t *err);

/* registry.c: an error for an unexpected status. 5xx and 429 are retryable. */
int registry__status_error (struct registry *r, const struct http_req *q, bool *retryable,
                            bvm_error_t *err);
/* registry.c: " (CODE: message)" from a distribution error body, cleaned
 * for a one-line message; "" when there is none. */
void registry__error_detail (char *out, size_t size, const struct http_req *q);

#endif
