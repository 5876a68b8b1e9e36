/* seal.h - encryption at rest for artifacts and logs: a chunked AES-256-GCM
 * envelope
 *
 * A sealed object is a header and a sequence of chunks:
 *
 *   header  "BVMSEAL" NUL, u8 version (1), u32 chunk size (BE),
 *           12-byte nonce, the object's data key (DEK, 32 bytes, fresh and
 *           random per object) wrapped with the app's key, 16-byte tag
 *   chunk   u32 (BE): the plaintext length, its top bit set on the last
 *           chunk; ciphertext; 16-byte tag
 *
 * The app's key comes from the secret store (secrets_derive_app_key, purpose
 * "seal"), so another app's key cannot unwrap the DEK. The DEK's wrapping is
 * authenticated with the fixed header and the object's context (the store
 * prefix `apps/<app>/<commit>/`, or the log's name), so an object moved to
 * another app, commit or log fails to open. Chunk i is encrypted with the DEK
 * and the nonce i (u64 BE, 4 zero bytes: a DEK never encrypts two objects),
 * its AAD is the whole header, i and the last-chunk flag: a
 * reordered, swapped, dropped or duplicated chunk fails to authenticate; an
 * object cut at a chunk boundary lacks its last chunk and is refused; bytes
 * after the last chunk are refused. Every chunk but the last is exactly the
 * chunk size; the last may be empty.
 *
 * The reader is a push parser (bytes in, authenticated plaintext out, any
 * split of the input), so files and network streams decrypt the same way.
 * Plaintext is handed out one authenticated chunk at a time: a consumer that
 * must not see a partial object (`artifacts get -o`) writes to a temporary
 * file and keeps it only when seal_reader_finish succeeds.
 */
#ifndef BUILDVM_SEAL_H
#define BUILDVM_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

#define SEAL_KEY_BYTES 32
#define SEAL_CHUNK_DEFAULT (64 * 1024)
#define SEAL_CHUNK_MAX (1024 * 1024) /* a reader refuses bigger chunks */
#define SEAL_CONTEXT_MAX 1024
#define SEAL_HEADER_BYTES (8 + 1 + 4 + 12 + 32 + 16)
#define SEAL_CHUNK_OVERHEAD (4 + 16)

/* The magic: does buf (len bytes) start like a sealed object? */
bool seal_is_sealed (const void *buf, size_t len);

/* Where bytes go: 0, or a negative error. */
typedef int (*seal_sink_fn) (void *opaque, const void *buf, size_t len, bvm_error_t *err);

struct seal_writer;

/* chunk: 0 for SEAL_CHUNK_DEFAULT, else 1..SEAL_CHUNK_MAX. The header is
 * written to sink at once. key is copied. */
int seal_writer_new (struct seal_writer **out, const unsigned char key[SEAL_KEY_BYTES],
                     const char *context, size_t chunk, seal_sink_fn sink, void *opaque,
                     bvm_error_t *err);
int seal_write (struct seal_writer *w, const void *buf, size_t len, bvm_error_t *err);
/* Write the last chunk. After it, only seal_writer_free. */
int seal_writer_finish (struct seal_writer *w, bvm_error_t *err);
/* Wipes the keys. NULL is fine. */
void seal_writer_free (struct seal_writer *w);

struct seal_reader;

/* what names the object in messages ("artifact `K`"). */
int seal_reader_new (struct seal_reader **out, const unsigned char key[SEAL_KEY_BYTES],
                     const char *context, const char *what, seal_sink_fn sink, void *opaque,
                     bvm_error_t *err);
int seal_reader_feed (struct seal_reader *r, const void *buf, size_t len, bvm_error_t *err);
/* The end of the input: an error unless the last chunk was seen. */
int seal_reader_finish (struct seal_reader *r, bvm_error_t *err);
void seal_reader_free (struct seal_reader *r);

/* The sealed size of len plaintext bytes in chunks of chunk (0: default). */
uint64_t seal_sealed_size (uint64_t len, size_t chunk);

DEFINE_CLEANUP_FUNC (seal_writer_freep, struct seal_writer, seal_writer_free)
DEFINE_CLEANUP_FUNC (seal_reader_freep, struct seal_reader, seal_reader_free)
#define cleanup_seal_writer __attribute__ ((cleanup (seal_writer_freep)))
#define cleanup_seal_reader __attribute__ ((cleanup (seal_reader_freep)))

#endif
