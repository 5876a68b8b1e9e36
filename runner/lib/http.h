/* http.h - one HTTP client over a reused libcurl easy handle
 *
 * The transport under registry.c and registry_auth.c, and under whatever
 * else speaks HTTP to a service later (a token server, an object store).
 * It knows nothing of registries:
 *   - one `struct http_client` is one curl handle (keep-alive across
 *     requests), a user agent, a CA bundle, connect and stall timeouts, an
 *     absolute deadline and a cancel flag;
 *   - one `struct http_req` is one request: a method, a URL, a few headers,
 *     an upload from memory or read with pread() from a file, and a reply
 *     buffered up to a cap (body_max), streamed into a file up to a cap
 *     (out_max), or discarded up to a cap; error bodies are kept to
 *     HTTP_ERR_BODY_MAX bytes;
 *   - http_with_retries() re-runs an operation while it fails retryably,
 *     with exponential backoff and jitter, Retry-After, the deadline and
 *     the cancel flag.
 * Redirects are followed only when a request asks (q->follow), and then
 * curl never sends credentials to another host.
 */
#ifndef BUILDVM_HTTP_H
#define BUILDVM_HTTP_H

#include <curl/curl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "digest.h"
#include "error.h"
#include "oci.h"

#define HTTP_ERR_BODY_MAX 4096 /* what we keep of an error reply */
#define HTTP_EXTRA_HEADERS 6   /* q->headers */
#define HTTP_LOCATION_MAX 4096

struct http_options
{
  const char *user_agent; /* no control characters (checked by the caller) */
  const char *ca_file;    /* extra CA bundle for https, or NULL for the system's */
  int max_attempts;       /* tries per operation, >= 1 */
  int64_t backoff_ms;     /* first retry delay; doubled each retry, with jitter */
  int64_t backoff_max_ms; /* cap of one delay */
  int64_t connect_timeout_ms;
  int64_t stall_timeout_ms; /* a transfer that moves nothing for this long fails */
  int64_t deadline_ms;      /* absolute, on the now_ms() clock; 0: none */
  const volatile sig_atomic_t *cancel;
};

struct http_stats
{
  uint64_t requests;       /* requests sent */
  uint64_t retries;        /* operations re-run after a retryable failure */
  uint64_t bytes_uploaded; /* file-backed upload bytes sent, retries included */
};

struct http_client
{
  CURL *curl;
  char *user_agent;
  char *ca_file;
  int max_attempts;
  int64_t backoff_ms;
  int64_t backoff_max_ms;
  int64_t connect_timeout_ms;
  int64_t stall_timeout_ms;
  int64_t deadline_ms;
  const volatile sig_atomic_t *cancel;
  int64_t retry_after_ms; /* from the last 429/503, used by the next backoff */
  struct http_stats stats;
  char curl_err[CURL_ERROR_SIZE];
};

struct http_req
{
  /* request */
  const char *method; /* GET HEAD POST PUT PATCH */
  const char *url;
  const char *scope; /* not the transport's: the auth layer's bearer scopes, space separated */
  const char *accept;
  const char *content_type;
  char content_range[64];
  bool follow;          /* follow redirects: blob downloads may go to a storage backend */
  const char *username; /* Basic credentials (set by the auth layer), or NULL */
  const char *password;
  char *authz; /* "Authorization: ..." header (set by the auth layer), wiped */
  /* AWS Signature V4 by curl (CURLOPT_AWS_SIGV4, "aws:amz:REGION:SERVICE"),
   * with username/password as the access key and secret; NULL: none */
  const char *aws_sigv4;
  const char *headers[HTTP_EXTRA_HEADERS]; /* more "Name: value" lines, NULL-ended */
  bool upload; /* PUT/PATCH body: mem, or fd from off, len bytes; without
                * upload, a POST sends mem (len bytes) as its body */
  const char *mem;
  int fd;
  uint64_t off, len, pos;
  size_t body_max;               /* a 2xx body is buffered up to this */
  int out_fd;                    /* or streamed into this fd ... */
  struct digest_ctx *out_digest; /* ... and digested */
  uint64_t out_max, out_got;
  /* or handed to this sink (up to out_max); its error lands in sink_err */
  int (*out_sink) (void *opaque, const void *buf, size_t len, bvm_error_t *err);
  void *out_opaque;
  bvm_error_t sink_err;

  /* response */
  struct http_client *c;
  long status;
  struct buf body; /* a 2xx body, or the start of an error body */
  bool body_over;
  int write_errno;
  int read_errno;
  char location[HTTP_LOCATION_MAX];
  bool location_bad;
  char docker_digest[DIGEST_STR_LEN + 1];
  char content_type_out[OCI_MEDIA_TYPE_MAX + 64];
  char range[64];
  char www_auth[2048];
  bool www_auth_over;
  char retry_after[32];
  char etag[130];
  char sse[32]; /* x-amz-server-side-encryption of the reply */
  bool has_length;
  uint64_t length;
};

/* Copies the options' strings; no network traffic. */
int http_client_init (struct http_client *c, const struct http_options *o, bvm_error_t *err);
void http_client_dispose (struct http_client *c);
bool http_canceled (const struct http_client *c);

void http_req_init (struct http_req *q, struct http_client *c, const char *method,
                    const char *url);
void http_req_dispose (struct http_req *q);

/* Set up and run one request. 0 with q->status when a reply arrived (any
 * status); <0 on a transport failure, *retryable set when another attempt
 * may do better. */
int http_perform (struct http_client *c, struct http_req *q, bool *retryable, bvm_error_t *err);

/* One attempt of an operation: <0 with *retryable set to be tried again. */
typedef int (*http_op) (void *ctx, bool *retryable, bvm_error_t *err);
/* Run op until it succeeds, fails for good, or max_attempts, the deadline
 * or the cancel flag stop it. */
int http_with_retries (struct http_client *c, http_op op, void *ctx, bvm_error_t *err);

/* The URL without its query (upload URLs carry opaque state), for messages. */
const char *http_url_for_msg (char *buf, size_t size, const char *url);

/* Wipe and free a secret string; *s becomes NULL. */
void http_secret_free (char **s);

#endif
