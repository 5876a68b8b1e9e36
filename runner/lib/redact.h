/* redact.h - mask secret values in a job's log stream
 *
 * A streaming redactor: the pipeline adds every secret value given to a job,
 * then feeds the console bytes through it; out() receives the same stream
 * with every occurrence of a secret, in any of the forms below, replaced by
 * `***`:
 *
 *   - the raw bytes, and also without a trailing newline (`\n`, `\r\n`)
 *     when the value has one
 *   - base64 (`+/`) and base64url (`-_`), each padded and unpadded
 *   - base64 of the value embedded at any offset in a longer base64 text
 *     (`base64 <<< "user:$TOKEN"`, `echo $TOKEN | base64`): the characters
 *     that depend on the value alone, for each of the three alignments and
 *     both alphabets, when that run is at least REDACT_MIN_EMBEDDED long
 *   - base64 (`+/`, padded) wrapped at 76 (`base64`) and 64 (`openssl
 *     base64`) columns with `\n`, for values long enough to wrap
 *   - hex, lowercase and uppercase
 *   - percent-encoding of every byte outside RFC 3986's unreserved set, with
 *     uppercase and with lowercase hex digits, and the form encoding
 *     (space as `+`) when the value has a space
 *
 * Matching is Aho-Corasick over all patterns at once, so the cost per byte
 * does not depend on the number of secrets, and the time is linear in the
 * input whatever it contains (a build controls its output and must not be
 * able to make the runner's redactor quadratic). Every input byte that lies
 * in any occurrence of any pattern is masked (overlapping and nested
 * occurrences included); each maximal run of masked bytes becomes one `***`.
 *
 * Hold-back: a byte is passed on as soon as no pattern occurrence can still
 * cover it: only the longest suffix of the input that is a prefix of some
 * pattern is held, so at most (longest pattern - 1) bytes and, for ordinary
 * text, nothing at all. A value split across any number of feeds is caught.
 * redact_flush ends the stream and emits what is held.
 *
 * Values shorter than REDACT_MIN_LEN bytes are not added (`too_short`): they
 * would mask ordinary text everywhere, and the caller warns the app instead.
 *
 * Limits (docs/secrets.md): a build can still print a transformed value
 * (reversed, XORed, split with other text between, mixed-case hex, another
 * encoding); redaction stops accidents, not a hostile build.
 *
 * Memory: patterns, the automaton and the held-back bytes all spell secret
 * values, so they live in secrets__mem_alloc memory (excluded from core
 * dumps) and are wiped by redact_free. Not thread-safe: redact_feed is one
 * stream; redact_stream_new makes more over the same patterns.
 */
#ifndef BUILDVM_REDACT_H
#define BUILDVM_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "error.h"
#include "util.h"

#define REDACT_MIN_LEN 4      /* shorter values are not redacted */
#define REDACT_MIN_EMBEDDED 8 /* shortest embedded-base64 run that is masked */
#define REDACT_MASK "***"
#define REDACT_MAX_BYTES (4 << 20) /* all distinct patterns together */

struct redactor;

/* Receives redacted bytes, in order. Not aligned to lines: the console
 * (vm.c) cuts lines from this stream. */
typedef void (*redact_out_fn) (void *opaque, const char *data, size_t len);

int redact_new (struct redactor **out, bvm_error_t *err);

/* Add a secret value and its encoded forms. A value shorter than
 * REDACT_MIN_LEN is not added and *too_short is set (0 is returned). Allowed
 * only at a clean point of the stream: before the first feed, after a flush,
 * or whenever nothing is held back (otherwise BVM_E_INTERNAL). More than
 * REDACT_MAX_BYTES of patterns is a BVM_E_LIMIT error and adds nothing of
 * this value: the pipeline must then fail the job rather than run it with
 * a secret it cannot mask. */
int redact_add (struct redactor *r, const void *value, size_t len, bool *too_short,
                bvm_error_t *err);

/* Feed console bytes; out() is called zero or more times. Fails only when
 * the automaton must be (re)built and memory runs out. */
int redact_feed (struct redactor *r, const void *data, size_t len, redact_out_fn out, void *opaque,
                 bvm_error_t *err);

/* End of the stream: emit everything held back. The redactor can then be
 * fed a new stream. Never flush in the middle of a stream (on a timer, say):
 * the held bytes may be the first part of a secret. */
int redact_flush (struct redactor *r, redact_out_fn out, void *opaque, bvm_error_t *err);

/* More streams over the same patterns: each has its own hold-back, so the
 * agent's console and the kernel's console are redacted each as one stream
 * (interleaving them in one would break a secret between two chunks). Create
 * streams after the last redact_add: while one is alive, redact_add fails.
 * Free every stream before the redactor. */
struct redact_stream;
int redact_stream_new (struct redact_stream **out, struct redactor *r, bvm_error_t *err);
int redact_stream_feed (struct redact_stream *s, const void *data, size_t len, redact_out_fn out,
                        void *opaque, bvm_error_t *err);
int redact_stream_flush (struct redact_stream *s, redact_out_fn out, void *opaque,
                         bvm_error_t *err);
void redact_stream_free (struct redact_stream *s);

/* One whole text (an error message) redacted on a stream of its own and
 * appended to out; r NULL: copied as it is. Going over out's cap is a
 * BVM_E_LIMIT error, and out then holds a part: do not use it. */
int redact_text (struct redactor *r, struct buf *out, const char *text, size_t len,
                 bvm_error_t *err);

/* Bytes currently held back (for tests and metrics). */
size_t redact_pending (const struct redactor *r);
/* Distinct patterns, and the longest one: the bound of the hold-back. */
size_t redact_pattern_count (const struct redactor *r);
size_t redact_max_pattern_len (const struct redactor *r);

/* Wipes every pattern and every held byte. */
void redact_free (struct redactor *r);

DEFINE_CLEANUP_FUNC (redact_freep, struct redactor, redact_free)
#define cleanup_redactor __attribute__ ((cleanup (redact_freep)))

#endif
