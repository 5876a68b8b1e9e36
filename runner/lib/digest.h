/* digest.h - sha256 digests in OCI notation ("sha256:<64 hex>") */
#ifndef BUILDVM_DIGEST_H
#define BUILDVM_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define DIGEST_HEX_LEN 64
#define DIGEST_STR_LEN (7 + DIGEST_HEX_LEN) /* "sha256:" + hex, without NUL */

struct digest_ctx
{
  void *md; /* EVP_MD_CTX */
  uint64_t bytes;
};

int digest_init (struct digest_ctx *d, bvm_error_t *err);
void digest_update (struct digest_ctx *d, const void *data, size_t len);
/* Writes "sha256:<hex>" (DIGEST_STR_LEN + 1 bytes) and releases the context. */
void digest_final (struct digest_ctx *d, char out[DIGEST_STR_LEN + 1]);
/* Release without a result (error paths). */
void digest_dispose (struct digest_ctx *d);

int digest_buffer (char out[DIGEST_STR_LEN + 1], const void *data, size_t len, bvm_error_t *err);
int digest_file (char out[DIGEST_STR_LEN + 1], uint64_t *size, const char *path, bvm_error_t *err);

/* "sha256:" followed by exactly 64 lowercase hex digits: NULL, or why not. */
const char *digest_problem (const char *s);

#endif
