/* digest.c - sha256 with OpenSSL's EVP interface */
#include "digest.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>

int
digest_init (struct digest_ctx *d, bvm_error_t *err)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new ();

  d->md = NULL; /* digest_dispose() of a failed init is a no-op */
  d->bytes = 0;
  if (md == NULL || EVP_DigestInit_ex (md, EVP_sha256 (), NULL) != 1)
    {
      EVP_MD_CTX_free (md);
      return bvm_error (err, ENOMEM, "sha256 init");
    }
  d->md = md;
  return 0;
}

void
digest_update (struct digest_ctx *d, const void *data, size_t len)
{
  if (len == 0)
    return;
  EVP_DigestUpdate (d->md, data, len);
  d->bytes += len;
}

void
digest_final (struct digest_ctx *d, char out[DIGEST_STR_LEN + 1])
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;

  EVP_DigestFinal_ex (d->md, md, &n);
  memcpy (out, "sha256:", sizeof "sha256:");
  hex_encode (out + 7, md, 32);
  digest_dispose (d);
}

void
digest_dispose (struct digest_ctx *d)
{
  EVP_MD_CTX_free (d->md);
  d->md = NULL;
}

int
digest_buffer (char out[DIGEST_STR_LEN + 1], const void *data, size_t len, bvm_error_t *err)
{
  struct digest_ctx d;
  if (digest_init (&d, err) < 0)
    return -1;
  digest_update (&d, data, len);
  digest_final (&d, out);
  return 0;
}

int
digest_file (char out[DIGEST_STR_LEN + 1], uint64_t *size, const char *path, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct digest_ctx d;
  static __thread char buf[1 << 16];

  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  if (digest_init (&d, err) < 0)
    return -1;
  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          int e = errno;
          digest_dispose (&d);
          return bvm_error (err, e, "read `%s`", path);
        }
      if (n == 0)
        break;
      digest_update (&d, buf, (size_t) n);
    }
  if (size)
    *size = d.bytes;
  digest_final (&d, out);
  return 0;
}

const char *
digest_problem (const char *s)
{
  static const char why[] = "must be `sha256:` and 64 lowercase hex digits";
  if (s == NULL || strncmp (s, "sha256:", 7) != 0 || strlen (s) != DIGEST_STR_LEN)
    return why;
  for (const char *p = s + 7; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return why;
  return NULL;
}
