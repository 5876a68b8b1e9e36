/* seal.c - the chunked AES-256-GCM envelope of artifacts and logs (seal.h) */
#include "seal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MAGIC "BVMSEAL"
#define MAGIC_BYTES 8 /* with its NUL */
#define VERSION 1
#define FIXED_BYTES (MAGIC_BYTES + 1 + 4) /* magic, version, chunk size */
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define LAST_FLAG 0x80000000u
#define AAD_WRAP "buildvm-seal-dek-v1"

bool
seal_is_sealed (const void *buf, size_t len)
{
  return len >= MAGIC_BYTES && memcmp (buf, MAGIC, MAGIC_BYTES) == 0;
}

uint64_t
seal_sealed_size (uint64_t len, size_t chunk)
{
  uint64_t c = chunk ? chunk : SEAL_CHUNK_DEFAULT;
  /* full chunks, then a last one of len % c bytes (empty when len is a
   * multiple of c) */
  return SEAL_HEADER_BYTES + (len / c + 1) * SEAL_CHUNK_OVERHEAD + len;
}

/* One AES-256-GCM operation; enc: encrypt in -> out and write tag, else
 * decrypt and check tag. 0 or -1. key NULL: the key c was last given, whose
 * schedule OpenSSL keeps (only the nonce is set): per chunk, fetching the
 * cipher and expanding the key again cost a tenth of a sealed write
 * (bench/pipeline.sh, "encryption at rest"). */
static int
gcm (EVP_CIPHER_CTX *c, bool enc, const unsigned char *key, const unsigned char *nonce,
     const unsigned char *aad1, size_t aad1_len, const unsigned char *aad2, size_t aad2_len,
     const unsigned char *in, size_t len, unsigned char *out, unsigned char *tag)
{
  int n = 0;
  int (*init) (EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *,
               const unsigned char *)
      = enc ? EVP_EncryptInit_ex : EVP_DecryptInit_ex;
  int (*update) (EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int)
      = enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;

  if ((key != NULL
       && (init (c, EVP_aes_256_gcm (), NULL, NULL, NULL) != 1
           || EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1))
      || init (c, NULL, NULL, key, nonce) != 1 || update (c, NULL, &n, aad1, (int) aad1_len) != 1
      || (aad2_len > 0 && update (c, NULL, &n, aad2, (int) aad2_len) != 1))
    return -1;
  if (len > 0 && (update (c, out, &n, in, (int) len) != 1 || (size_t) n != len))
    return -1;
  if (enc)
    return EVP_EncryptFinal_ex (c, out + len, &n) == 1
                   && EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag) == 1
               ? 0
               : -1;
  return EVP_CIPHER_CTX_ctrl (c, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) == 1
                 && EVP_DecryptFinal_ex (c, out + len, &n) == 1
             ? 0
             : -1;
}

/* The AAD of chunk i: the header, i, the last flag */
static void
chunk_aad (unsigned char aad[9], uint64_t i, bool last)
{
  for (int b = 0; b < 8; b++)
    aad[b] = (unsigned char) (i >> (56 - 8 * b));
  aad[8] = last ? 1 : 0;
}

static void
chunk_nonce (unsigned char nonce[NONCE_BYTES], uint64_t i)
{
  memset (nonce, 0, NONCE_BYTES);
  for (int b = 0; b < 8; b++)
    nonce[b] = (unsigned char) (i >> (56 - 8 * b));
}

/* --- writer ---------------------------------------------------------------------------- */

struct seal_writer
{
  EVP_CIPHER_CTX *c;
  unsigned char dek[SEAL_KEY_BYTES];
  unsigned char header[SEAL_HEADER_BYTES];
  size_t chunk;
  unsigned char *pt; /* chunk bytes pending */
  size_t pt_len;
  unsigned char *out; /* 4 + chunk + tag */
  uint64_t index;
  bool finished, failed;
  seal_sink_fn sink;
  void *opaque;
};

void
seal_writer_free (struct seal_writer *w)
{
  if (w == NULL)
    return;
  EVP_CIPHER_CTX_free (w->c);
  OPENSSL_cleanse (w->dek, sizeof w->dek);
  if (w->pt != NULL)
    OPENSSL_cleanse (w->pt, w->chunk);
  free (w->pt);
  free (w->out);
  free (w);
}

int
seal_writer_new (struct seal_writer **out, const unsigned char key[SEAL_KEY_BYTES],
                 const char *context, size_t chunk, seal_sink_fn sink, void *opaque,
                 bvm_error_t *err)
{
  cleanup_seal_writer struct seal_writer *w = NULL;
  size_t clen = strlen (context);
  unsigned char *h;
  int ret;

  if (chunk == 0)
    chunk = SEAL_CHUNK_DEFAULT;
  if (chunk > SEAL_CHUNK_MAX || clen > SEAL_CONTEXT_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "seal: chunk size or context too large");
  w = calloc (1, sizeof *w);
  if (w == NULL || (w->pt = malloc (chunk)) == NULL
      || (w->out = malloc (4 + chunk + TAG_BYTES)) == NULL
      || (w->c = EVP_CIPHER_CTX_new ()) == NULL)
    return bvm_error (err, ENOMEM, "seal");
  w->chunk = chunk;
  w->sink = sink;
  w->opaque = opaque;
  h = w->header;
  memcpy (h, MAGIC, MAGIC_BYTES);
  h[MAGIC_BYTES] = VERSION;
  be32_put (h + MAGIC_BYTES + 1, (uint32_t) chunk);
  if (RAND_bytes (w->dek, SEAL_KEY_BYTES) != 1 || RAND_bytes (h + FIXED_BYTES, NONCE_BYTES) != 1)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: no random bytes");
  {
    /* the wrap's AAD: label, fixed header, context */
    unsigned char aad[sizeof AAD_WRAP + FIXED_BYTES + SEAL_CONTEXT_MAX];
    size_t alen = 0;
    memcpy (aad, AAD_WRAP, sizeof AAD_WRAP), alen += sizeof AAD_WRAP;
    memcpy (aad + alen, h, FIXED_BYTES), alen += FIXED_BYTES;
    memcpy (aad + alen, context, clen), alen += clen;
    if (gcm (w->c, true, key, h + FIXED_BYTES, aad, alen, NULL, 0, w->dek, SEAL_KEY_BYTES,
             h + FIXED_BYTES + NONCE_BYTES, h + FIXED_BYTES + NONCE_BYTES + SEAL_KEY_BYTES)
        < 0)
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: AES-256-GCM failed");
  }
  if ((ret = sink (opaque, h, SEAL_HEADER_BYTES, err)) < 0)
    return ret;
  *out = steal_pointer (&w);
  return 0;
}

/* Chunk w->index of n bytes from src (w->pt, or the caller's buffer when a
 * whole chunk is there: no copy). */
static int
emit_chunk (struct seal_writer *w, const unsigned char *src, size_t n, bool last, bvm_error_t *err)
{
  unsigned char nonce[NONCE_BYTES], aad[9];
  int ret;

  chunk_nonce (nonce, w->index);
  chunk_aad (aad, w->index, last);
  be32_put (w->out, (uint32_t) n | (last ? LAST_FLAG : 0));
  /* the DEK's schedule is set on the first chunk and kept */
  if (gcm (w->c, true, w->index == 0 ? w->dek : NULL, nonce, w->header, SEAL_HEADER_BYTES, aad,
           sizeof aad, src, n, w->out + 4, w->out + 4 + n)
      < 0)
    {
      w->failed = true;
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: AES-256-GCM failed");
    }
  if ((ret = w->sink (w->opaque, w->out, 4 + n + TAG_BYTES, err)) < 0)
    {
      w->failed = true;
      return ret;
    }
  w->index++;
  w->pt_len = 0;
  return 0;
}

int
seal_write (struct seal_writer *w, const void *buf, size_t len, bvm_error_t *err)
{
  const unsigned char *p = buf;

  if (w->finished || w->failed)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: write after the end or a failure");
  while (len > 0)
    {
      size_t n;

      /* a full chunk is written only once more bytes come: the last chunk
       * must carry the flag, so a full one is held back */
      if (w->pt_len == 0 && len > w->chunk)
        {
          if (emit_chunk (w, p, w->chunk, false, err) < 0)
            return -1;
          p += w->chunk, len -= w->chunk;
          continue;
        }
      n = w->chunk - w->pt_len;
      if (n > len)
        n = len;
      memcpy (w->pt + w->pt_len, p, n);
      w->pt_len += n, p += n, len -= n;
      if (len > 0 && w->pt_len == w->chunk && emit_chunk (w, w->pt, w->pt_len, false, err) < 0)
        return -1;
    }
  return 0;
}

int
seal_writer_finish (struct seal_writer *w, bvm_error_t *err)
{
  if (w->finished || w->failed)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: finish after the end or a failure");
  /* a full pending chunk goes out as a plain chunk, then an empty last one:
   * the format the size formula and the reader expect */
  if (w->pt_len == w->chunk && emit_chunk (w, w->pt, w->pt_len, false, err) < 0)
    return -1;
  if (emit_chunk (w, w->pt, w->pt_len, true, err) < 0)
    return -1;
  w->finished = true;
  return 0;
}

/* --- reader ---------------------------------------------------------------------------- */

enum rstate
{
  R_HEADER,
  R_LEN,
  R_BODY,
  R_DONE,
  R_FAILED
};

struct seal_reader
{
  EVP_CIPHER_CTX *c;
  unsigned char key[SEAL_KEY_BYTES];
  unsigned char dek[SEAL_KEY_BYTES];
  char *context, *what;
  unsigned char header[SEAL_HEADER_BYTES];
  unsigned char lenb[4];
  size_t chunk;
  unsigned char *in; /* ciphertext + tag of the current chunk */
  unsigned char *pt;
  size_t have, want; /* bytes of the current element */
  size_t body_len;
  bool last;
  uint64_t index;
  enum rstate st;
  seal_sink_fn sink;
  void *opaque;
};

void
seal_reader_free (struct seal_reader *r)
{
  if (r == NULL)
    return;
  EVP_CIPHER_CTX_free (r->c);
  OPENSSL_cleanse (r->key, sizeof r->key);
  OPENSSL_cleanse (r->dek, sizeof r->dek);
  if (r->pt != NULL)
    OPENSSL_cleanse (r->pt, r->chunk);
  free (r->pt);
  free (r->in);
  free (r->context);
  free (r->what);
  free (r);
}

int
seal_reader_new (struct seal_reader **out, const unsigned char key[SEAL_KEY_BYTES],
                 const char *context, const char *what, seal_sink_fn sink, void *opaque,
                 bvm_error_t *err)
{
  struct seal_reader *r;

  if (strlen (context) > SEAL_CONTEXT_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0, "seal: context too large");
  r = calloc (1, sizeof *r);
  if (r == NULL || (r->c = EVP_CIPHER_CTX_new ()) == NULL
      || (r->context = strdup (context)) == NULL || (r->what = strdup (what)) == NULL)
    {
      seal_reader_free (r);
      return bvm_error (err, ENOMEM, "seal");
    }
  memcpy (r->key, key, SEAL_KEY_BYTES);
  r->st = R_HEADER;
  r->want = SEAL_HEADER_BYTES;
  r->sink = sink;
  r->opaque = opaque;
  *out = r;
  return 0;
}

/* Every failure to open says the same, with the reason; never a byte of it. */
static int
bad (struct seal_reader *r, bvm_error_t *err, const char *why)
{
  r->st = R_FAILED;
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "%s: the encrypted object is corrupt, was tampered with or is not "
                         "this app's (%s)",
                         r->what, why);
}

static int
open_header (struct seal_reader *r, bvm_error_t *err)
{
  const unsigned char *h = r->header;
  unsigned char aad[sizeof AAD_WRAP + FIXED_BYTES + SEAL_CONTEXT_MAX];
  size_t alen = 0, clen = strlen (r->context);
  uint32_t chunk;

  if (memcmp (h, MAGIC, MAGIC_BYTES) != 0)
    return bad (r, err, "not a sealed object");
  if (h[MAGIC_BYTES] != VERSION)
    return bad (r, err, "unknown format version");
  chunk = be32_get (h + MAGIC_BYTES + 1);
  if (chunk == 0 || chunk > SEAL_CHUNK_MAX)
    return bad (r, err, "bad chunk size");
  memcpy (aad, AAD_WRAP, sizeof AAD_WRAP), alen += sizeof AAD_WRAP;
  memcpy (aad + alen, h, FIXED_BYTES), alen += FIXED_BYTES;
  memcpy (aad + alen, r->context, clen), alen += clen;
  {
    unsigned char tag[TAG_BYTES];
    memcpy (tag, h + FIXED_BYTES + NONCE_BYTES + SEAL_KEY_BYTES, TAG_BYTES);
    if (gcm (r->c, false, r->key, h + FIXED_BYTES, aad, alen, NULL, 0,
             h + FIXED_BYTES + NONCE_BYTES, SEAL_KEY_BYTES, r->dek, tag)
        < 0)
      return bad (r, err, "the data key does not open: wrong app or key, or a changed header");
  }
  r->chunk = chunk;
  r->in = malloc (chunk + TAG_BYTES);
  r->pt = malloc (chunk);
  if (r->in == NULL || r->pt == NULL)
    {
      r->st = R_FAILED;
      return bvm_error (err, ENOMEM, "seal");
    }
  return 0;
}

static int
open_chunk (struct seal_reader *r, bvm_error_t *err)
{
  unsigned char nonce[NONCE_BYTES], aad[9];
  int ret;

  chunk_nonce (nonce, r->index);
  chunk_aad (aad, r->index, r->last);
  if (gcm (r->c, false, r->index == 0 ? r->dek : NULL, nonce, r->header, SEAL_HEADER_BYTES, aad,
           sizeof aad, r->in, r->body_len, r->pt, r->in + r->body_len)
      < 0)
    return bad (r, err, "a chunk fails to authenticate: changed, reordered or swapped");
  r->index++;
  if (r->body_len > 0 && (ret = r->sink (r->opaque, r->pt, r->body_len, err)) < 0)
    {
      r->st = R_FAILED;
      return ret;
    }
  return 0;
}

int
seal_reader_feed (struct seal_reader *r, const void *buf, size_t len, bvm_error_t *err)
{
  const unsigned char *p = buf;

  if (r->st == R_FAILED)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: read after a failure");
  while (len > 0)
    {
      unsigned char *dst;
      size_t n;

      if (r->st == R_DONE)
        return bad (r, err, "data after the last chunk");
      dst = r->st == R_HEADER ? r->header : r->st == R_LEN ? r->lenb : r->in;
      n = r->want - r->have;
      if (n > len)
        n = len;
      memcpy (dst + r->have, p, n);
      r->have += n, p += n, len -= n;
      if (r->have < r->want)
        break;
      r->have = 0;
      switch (r->st)
        {
        case R_HEADER:
          if (open_header (r, err) < 0)
            return -1;
          r->st = R_LEN;
          r->want = 4;
          break;
        case R_LEN:
          {
            uint32_t v = be32_get (r->lenb);
            r->last = (v & LAST_FLAG) != 0;
            r->body_len = v & ~LAST_FLAG;
            if (r->body_len > r->chunk || (!r->last && r->body_len != r->chunk))
              return bad (r, err, "bad chunk length");
            if (r->index == UINT64_MAX)
              return bad (r, err, "too many chunks");
            r->st = R_BODY;
            r->want = r->body_len + TAG_BYTES;
          }
          break;
        case R_BODY:
          if (open_chunk (r, err) < 0)
            return -1;
          r->st = r->last ? R_DONE : R_LEN;
          r->want = 4;
          break;
        default: return bad (r, err, "internal state");
        }
    }
  return 0;
}

int
seal_reader_finish (struct seal_reader *r, bvm_error_t *err)
{
  if (r->st == R_DONE)
    return 0;
  if (r->st == R_FAILED)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "seal: finish after a failure");
  return bad (r, err,
              r->st == R_HEADER ? "truncated header" : "truncated: the last chunk is missing");
}
