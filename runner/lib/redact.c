/* redact.c - streaming secret redaction, see redact.h
 *
 * Why Aho-Corasick and not a first-byte index with memcmp: a job has up to
 * 64 secrets of up to 64 KiB, each in ~20 forms, and the build controls the
 * text. With memcmp at every candidate position, a secret of 64 KiB `a`s and
 * a log of `a`s costs 64 Ki comparisons per byte. The automaton's cost is
 * amortized O(1) per byte whatever the patterns or the text; on ordinary
 * logs the state stays at or near the root, where a dense table answers.
 *
 * Representation: the trie is built from the sorted patterns in one pass,
 * then laid out with each node's children contiguous (edge_start, edge_byte,
 * edge_to; a binary search for wide nodes) plus a dense 256-entry table for
 * the root. fail[] are the usual failure links; out_len[v] is the length of
 * the longest pattern that is a suffix of the text spelled by v (0: none),
 * so each input byte yields at most one - the widest - match ending there.
 * depth[v] bounds the hold-back.
 */
#include "redact.h"
#include "secrets.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64 * 1024) /* bytes scanned between two emits */
#define MASK_LEN (sizeof REDACT_MASK - 1)

struct pattern
{
  uint32_t off, len;
};

struct interval
{
  uint64_t s, e; /* absolute stream positions, inclusive */
};

/* One stream's state: the held-back bytes and the masked runs among them. */
struct redact_stream
{
  struct redactor *r;
  uint32_t st;
  uint64_t pos;  /* bytes consumed */
  uint64_t base; /* stream position of pend[0] */
  unsigned char *pend;
  size_t pend_cap;
  struct interval *iv; /* masked runs within pend: sorted, disjoint, not adjacent */
  size_t n_iv, iv_cap;
  bool last_was_mask; /* the last thing emitted was `***` */
};

struct redactor
{
  /* the patterns: an arena of bytes and their (offset, length) */
  unsigned char *arena;
  size_t arena_len, arena_cap;
  struct pattern *pats;
  size_t n_pats, pats_cap;
  size_t max_len;
  bool dirty; /* patterns added since the automaton was built */

  /* the automaton: one plaintext-memory block */
  void *ac;
  size_t ac_size;
  size_t n_nodes;
  uint32_t *fail, *depth, *out_len, *edge_start, *edge_to;
  unsigned char *edge_byte;
  uint32_t root[256];

  struct redact_stream s0; /* the stream of redact_feed / redact_flush */
  size_t n_streams;        /* more streams (redact_stream_new) alive */
};

static int
nomem (bvm_error_t *err)
{
  return bvm_error (err, ENOMEM, "secret redaction");
}

int
redact_new (struct redactor **out, bvm_error_t *err)
{
  struct redactor *r = calloc (1, sizeof *r);
  if (r == NULL)
    return nomem (err);
  r->s0.r = r;
  *out = r;
  return 0;
}

/* The stream's buffers, which spell secret values: wiped. */
static void
stream_dispose (struct redact_stream *s)
{
  secrets__mem_free (s->pend, s->pend_cap);
  s->pend = NULL;
  s->pend_cap = 0;
  free (s->iv);
  s->iv = NULL;
  s->iv_cap = 0;
  s->n_iv = 0;
  s->st = 0;
  s->base = s->pos;
}

static void
free_automaton (struct redactor *r)
{
  secrets__mem_free (r->ac, r->ac_size);
  r->ac = NULL;
  r->ac_size = 0;
  r->n_nodes = 0;
  memset (r->root, 0, sizeof r->root);
  stream_dispose (&r->s0);
}

void
redact_free (struct redactor *r)
{
  if (r == NULL)
    return;
  free_automaton (r);
  secrets__mem_free (r->arena, r->arena_cap);
  free (r->pats);
  free (r);
}

size_t
redact_pending (const struct redactor *r)
{
  return (size_t) (r->s0.pos - r->s0.base);
}

size_t
redact_pattern_count (const struct redactor *r)
{
  return r->n_pats;
}

size_t
redact_max_pattern_len (const struct redactor *r)
{
  return r->max_len;
}

/* --- patterns ------------------------------------------------------------------ */

static int
add_pattern (struct redactor *r, const unsigned char *p, size_t len, bvm_error_t *err)
{
  for (size_t i = 0; i < r->n_pats; i++)
    if (r->pats[i].len == len && memcmp (r->arena + r->pats[i].off, p, len) == 0)
      return 0;
  if (len > REDACT_MAX_BYTES - r->arena_len)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the secrets of this job need more than %d bytes of redaction "
                           "patterns",
                           REDACT_MAX_BYTES);
  if (r->arena_len + len > r->arena_cap)
    {
      /* no realloc: the old block must be wiped, not left in the heap */
      size_t cap = r->arena_cap ? r->arena_cap : 4096;
      unsigned char *a;
      while (cap < r->arena_len + len)
        cap *= 2;
      a = secrets__mem_alloc (cap);
      if (a == NULL)
        return nomem (err);
      if (r->arena_len > 0)
        memcpy (a, r->arena, r->arena_len);
      secrets__mem_free (r->arena, r->arena_cap);
      r->arena = a;
      r->arena_cap = cap;
    }
  if (r->n_pats == r->pats_cap)
    {
      size_t cap = r->pats_cap ? r->pats_cap * 2 : 64;
      struct pattern *np = realloc (r->pats, cap * sizeof *np);
      if (np == NULL)
        return nomem (err);
      r->pats = np;
      r->pats_cap = cap;
    }
  memcpy (r->arena + r->arena_len, p, len);
  r->pats[r->n_pats].off = (uint32_t) r->arena_len;
  r->pats[r->n_pats].len = (uint32_t) len;
  r->n_pats++;
  r->arena_len += len;
  return 0;
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64 of in[0..n) into out, `wrap` > 0 inserting `\n` after every `wrap`
 * characters but the last; returns the length. */
static size_t
b64_encode (unsigned char *out, const unsigned char *in, size_t n, const char *alpha, bool pad,
            size_t wrap)
{
  size_t o = 0, col = 0;
#define PUT(ch)                                                                                   \
  do                                                                                              \
    {                                                                                             \
      if (wrap && col == wrap)                                                                    \
        {                                                                                         \
          out[o++] = '\n';                                                                        \
          col = 0;                                                                                \
        }                                                                                         \
      out[o++] = (unsigned char) (ch);                                                            \
      col++;                                                                                      \
    }                                                                                             \
  while (0)
  for (size_t i = 0; i < n; i += 3)
    {
      uint32_t v = (uint32_t) in[i] << 16;
      size_t k = n - i;
      if (k > 1)
        v |= (uint32_t) in[i + 1] << 8;
      if (k > 2)
        v |= in[i + 2];
      PUT (alpha[(v >> 18) & 63]);
      PUT (alpha[(v >> 12) & 63]);
      if (k > 1)
        PUT (alpha[(v >> 6) & 63]);
      else if (pad)
        PUT ('=');
      if (k > 2)
        PUT (alpha[v & 63]);
      else if (pad)
        PUT ('=');
    }
#undef PUT
  return o;
}

static size_t
hex_form (unsigned char *out, const unsigned char *in, size_t n, bool upper)
{
  const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  for (size_t i = 0; i < n; i++)
    {
      out[2 * i] = (unsigned char) d[in[i] >> 4];
      out[2 * i + 1] = (unsigned char) d[in[i] & 15];
    }
  return 2 * n;
}

/* RFC 3986 percent-encoding: everything but ALPHA DIGIT - . _ ~ */
static size_t
url_form (unsigned char *out, const unsigned char *in, size_t n, bool upper, bool plus)
{
  const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    {
      unsigned char c = in[i];
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
          || c == '.' || c == '_' || c == '~')
        out[o++] = c;
      else if (plus && c == ' ')
        out[o++] = '+';
      else
        {
          out[o++] = '%';
          out[o++] = (unsigned char) d[c >> 4];
          out[o++] = (unsigned char) d[c & 15];
        }
    }
  return o;
}

/* Every form of one value (see redact.h). `buf` holds 4n + 16 bytes, `tmp`
 * n + 2. */
static int
add_forms (struct redactor *r, const unsigned char *v, size_t n, unsigned char *buf,
           unsigned char *tmp, bvm_error_t *err)
{
  static const char *const alphas[] = { b64_std, b64_url };
  int ret;

#define ADD(len_)                                                                                 \
  do                                                                                              \
    {                                                                                             \
      if ((ret = add_pattern (r, buf, (len_), err)) < 0)                                          \
        return ret;                                                                               \
    }                                                                                             \
  while (0)

  if ((ret = add_pattern (r, v, n, err)) < 0)
    return ret;
  for (size_t a = 0; a < 2; a++)
    {
      ADD (b64_encode (buf, v, n, alphas[a], true, 0));
      ADD (b64_encode (buf, v, n, alphas[a], false, 0));
      /* Embedded at byte offset k (mod 3) in a longer text: characters
       * [ceil(8k/6), floor(8(k+n)/6)) of the encoding depend on v alone. */
      for (size_t k = 0; k < 3; k++)
        {
          size_t lo = (8 * k + 5) / 6, hi = (8 * (k + n)) / 6;
          memset (tmp, 0, k);
          memcpy (tmp + k, v, n);
          b64_encode (buf, tmp, n + k, alphas[a], false, 0);
          if (hi - lo >= REDACT_MIN_EMBEDDED
              && (ret = add_pattern (r, buf + lo, hi - lo, err)) < 0)
            return ret;
        }
    }
  for (size_t w = 0; w < 2; w++)
    {
      size_t wrap = w == 0 ? 76 : 64;
      if ((n + 2) / 3 * 4 > wrap)
        ADD (b64_encode (buf, v, n, b64_std, true, wrap));
    }
  ADD (hex_form (buf, v, n, false));
  ADD (hex_form (buf, v, n, true));
  ADD (url_form (buf, v, n, true, false));
  ADD (url_form (buf, v, n, false, false));
  if (memchr (v, ' ', n) != NULL)
    ADD (url_form (buf, v, n, true, true));
#undef ADD
  return 0;
}

int
redact_add (struct redactor *r, const void *value, size_t len, bool *too_short, bvm_error_t *err)
{
  const unsigned char *v = value;
  size_t saved_pats = r->n_pats, saved_len = r->arena_len, bufsz, tmpsz, trimmed = len;
  unsigned char *buf = NULL, *tmp = NULL;
  int ret = 0;

  *too_short = false;
  if (len < REDACT_MIN_LEN)
    {
      *too_short = true;
      return 0;
    }
  /* a new pattern would change the meaning of what is already held back */
  if (r->s0.st != 0 || r->s0.pos != r->s0.base || r->s0.n_iv != 0 || r->n_streams > 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0,
                           "secret values must be added before the log stream or after a flush");
  if (len > REDACT_MAX_BYTES)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the secrets of this job need more than %d bytes of redaction "
                           "patterns",
                           REDACT_MAX_BYTES);
  bufsz = 4 * len + 16;
  tmpsz = len + 2;
  buf = secrets__mem_alloc (bufsz);
  tmp = secrets__mem_alloc (tmpsz);
  if (buf == NULL || tmp == NULL)
    ret = nomem (err);
  if (ret == 0)
    ret = add_forms (r, v, len, buf, tmp, err);
  /* `echo "$TOKEN" >file` stores a newline the build's `$(cat file)` drops */
  while (trimmed > 0 && (v[trimmed - 1] == '\n' || v[trimmed - 1] == '\r'))
    trimmed--;
  if (ret == 0 && trimmed != len && trimmed >= REDACT_MIN_LEN)
    ret = add_forms (r, v, trimmed, buf, tmp, err);
  secrets__mem_free (buf, bufsz);
  secrets__mem_free (tmp, tmpsz);
  if (ret < 0)
    {
      /* all or nothing: drop this value's patterns again */
      mem_wipe (r->arena + saved_len, r->arena_len - saved_len);
      r->arena_len = saved_len;
      r->n_pats = saved_pats;
      return ret;
    }
  for (size_t i = saved_pats; i < r->n_pats; i++)
    if (r->pats[i].len > r->max_len)
      r->max_len = r->pats[i].len;
  if (r->n_pats != saved_pats)
    r->dirty = true;
  return 0;
}

/* --- the automaton ------------------------------------------------------------------ */

static int
pat_cmp (const void *a, const void *b, void *ctx)
{
  const struct redactor *r = ctx;
  const struct pattern *x = &r->pats[*(const uint32_t *) a];
  const struct pattern *y = &r->pats[*(const uint32_t *) b];
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp (r->arena + x->off, r->arena + y->off, n);
  if (c != 0)
    return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* The child of v on byte c, or 0 (the root is never a child). */
static inline uint32_t
child (const struct redactor *r, uint32_t v, unsigned char c)
{
  uint32_t lo, hi;
  if (v == 0)
    return r->root[c];
  lo = r->edge_start[v];
  hi = r->edge_start[v + 1];
  if (hi - lo <= 8)
    {
      for (uint32_t k = lo; k < hi; k++)
        if (r->edge_byte[k] == c)
          return r->edge_to[k];
      return 0;
    }
  while (lo < hi)
    {
      uint32_t mid = lo + (hi - lo) / 2;
      if (r->edge_byte[mid] == c)
        return r->edge_to[mid];
      if (r->edge_byte[mid] < c)
        lo = mid + 1;
      else
        hi = mid;
    }
  return 0;
}

static inline uint32_t
step (const struct redactor *r, uint32_t v, unsigned char c)
{
  for (;;)
    {
      uint32_t t = child (r, v, c);
      if (t != 0 || v == 0)
        return t;
      v = r->fail[v];
    }
}

static size_t
align8 (size_t n)
{
  return (n + 7) & ~(size_t) 7;
}

static int
build (struct redactor *r, bvm_error_t *err)
{
  size_t cap = r->arena_len + 1, n = 1; /* nodes: at most one per pattern byte, and the root */
  uint32_t *order = NULL, *path = NULL, *first = NULL, *last = NULL, *next = NULL, *queue = NULL;
  unsigned char *byte = NULL;
  size_t sz_u32 = align8 (cap * 4), sz_edges = align8 ((cap + 1) * 4);
  size_t ac_size, k = 0, qh = 0, qt = 0;
  unsigned char *ac;
  int ret = 0;

  free_automaton (r);
  r->dirty = false;
  if (r->n_pats == 0)
    return 0;

  ac_size = 4 * sz_u32 + sz_edges + align8 (cap);
  ac = secrets__mem_alloc (ac_size);
  byte = secrets__mem_alloc (cap);
  order = malloc (r->n_pats * sizeof *order);
  path = malloc ((r->max_len + 1) * sizeof *path);
  first = calloc (cap, sizeof *first);
  last = calloc (cap, sizeof *last);
  next = calloc (cap, sizeof *next);
  queue = malloc (cap * sizeof *queue);
  if (ac == NULL || byte == NULL || order == NULL || path == NULL || first == NULL || last == NULL
      || next == NULL || queue == NULL)
    {
      secrets__mem_free (ac, ac_size);
      ret = nomem (err);
      goto cleanup;
    }
  r->ac = ac;
  r->ac_size = ac_size;
  r->fail = (uint32_t *) ac;
  r->depth = (uint32_t *) (ac + sz_u32);
  r->out_len = (uint32_t *) (ac + 2 * sz_u32);
  r->edge_to = (uint32_t *) (ac + 3 * sz_u32);
  r->edge_start = (uint32_t *) (ac + 4 * sz_u32);
  r->edge_byte = ac + 4 * sz_u32 + sz_edges;

  /* the trie, from the sorted patterns: each shares with the previous one
   * the path of their common prefix, and children are appended in byte
   * order (first/last/next are the child lists while building) */
  for (uint32_t i = 0; i < r->n_pats; i++)
    order[i] = i;
  qsort_r (order, r->n_pats, sizeof *order, pat_cmp, r);
  path[0] = 0;
  for (size_t i = 0; i < r->n_pats; i++)
    {
      const struct pattern *p = &r->pats[order[i]];
      const unsigned char *s = r->arena + p->off;
      size_t lcp = 0;
      if (i > 0)
        {
          const struct pattern *q = &r->pats[order[i - 1]];
          const unsigned char *t = r->arena + q->off;
          while (lcp < p->len && lcp < q->len && s[lcp] == t[lcp])
            lcp++;
        }
      for (size_t j = lcp; j < p->len; j++)
        {
          uint32_t parent = path[j], v = (uint32_t) n++;
          byte[v] = s[j];
          r->depth[v] = (uint32_t) (j + 1);
          if (last[parent] == 0)
            first[parent] = v;
          else
            next[last[parent]] = v;
          last[parent] = v;
          path[j + 1] = v;
        }
      r->out_len[path[p->len]] = p->len;
    }
  r->n_nodes = n;

  /* edges, contiguous per node in node order */
  for (uint32_t v = 0; v < n; v++)
    {
      r->edge_start[v] = (uint32_t) k;
      for (uint32_t c = first[v]; c != 0; c = next[c])
        {
          r->edge_byte[k] = byte[c];
          r->edge_to[k] = c;
          k++;
        }
    }
  r->edge_start[n] = (uint32_t) k;
  for (uint32_t c = first[0]; c != 0; c = next[c])
    r->root[byte[c]] = c;

  /* failure links breadth first, so a node's fail target (shallower) is
   * complete before the node; out_len inherits the longest suffix match */
  for (uint32_t c = first[0]; c != 0; c = next[c])
    {
      r->fail[c] = 0;
      queue[qt++] = c;
    }
  while (qh < qt)
    {
      uint32_t v = queue[qh++];
      for (uint32_t c = first[v]; c != 0; c = next[c])
        {
          r->fail[c] = step (r, r->fail[v], byte[c]);
          if (r->out_len[c] == 0)
            r->out_len[c] = r->out_len[r->fail[c]];
          queue[qt++] = c;
        }
    }

cleanup:
  secrets__mem_free (byte, cap);
  free (order);
  free (path);
  free (first);
  free (last);
  free (next);
  free (queue);
  if (ret < 0)
    r->dirty = true; /* nothing was assigned: try again on the next feed */
  return ret;
}

/* --- the stream --------------------------------------------------------------------- */

/* A stream's buffers, once the automaton is built: the held-back bytes
 * (at most max_len - 1) plus one chunk. */
static int
stream_ready (struct redact_stream *s, bvm_error_t *err)
{
  struct redactor *r = s->r;
  int ret;

  if (r->dirty && (ret = build (r, err)) < 0)
    return ret;
  if (r->n_pats == 0 || s->pend != NULL)
    return 0;
  s->pend_cap = r->max_len + CHUNK;
  s->iv_cap = s->pend_cap / 2 + 2;
  s->pend = secrets__mem_alloc (s->pend_cap);
  s->iv = calloc (s->iv_cap, sizeof *s->iv);
  if (s->pend == NULL || s->iv == NULL)
    {
      stream_dispose (s);
      return nomem (err);
    }
  s->st = 0;
  s->base = s->pos;
  s->n_iv = 0;
  return 0;
}

/* Mask [b, e] (e is the newest byte, so at least every earlier end). */
static void
add_interval (struct redact_stream *r, uint64_t s, uint64_t e)
{
  if (s < r->base)
    s = r->base; /* the rest is out already, as `***` */
  while (r->n_iv > 0 && r->iv[r->n_iv - 1].e + 1 >= s)
    {
      if (r->iv[r->n_iv - 1].s < s)
        s = r->iv[r->n_iv - 1].s;
      r->n_iv--;
    }
  r->iv[r->n_iv].s = s;
  r->iv[r->n_iv].e = e;
  r->n_iv++;
}

/* Pass on every byte before stream position b (and all of a masked run
 * that starts before b). */
static void
emit (struct redact_stream *r, uint64_t b, redact_out_fn out, void *opaque)
{
  uint64_t cur = r->base;
  size_t i = 0, keep;

  while (cur < b)
    {
      if (i < r->n_iv && r->iv[i].s <= cur)
        {
          if (!r->last_was_mask)
            out (opaque, REDACT_MASK, MASK_LEN);
          r->last_was_mask = true;
          cur = r->iv[i].e + 1;
          i++;
        }
      else
        {
          uint64_t to = i < r->n_iv && r->iv[i].s < b ? r->iv[i].s : b;
          out (opaque, (const char *) r->pend + (cur - r->base), (size_t) (to - cur));
          r->last_was_mask = false;
          cur = to;
        }
    }
  if (i > 0)
    {
      memmove (r->iv, r->iv + i, (r->n_iv - i) * sizeof *r->iv);
      r->n_iv -= i;
    }
  keep = (size_t) (r->pos - cur);
  if (cur > r->base)
    {
      size_t drop = (size_t) (cur - r->base);
      memmove (r->pend, r->pend + drop, keep);
      /* the moved-out tail may be part of a secret: do not leave it behind */
      mem_wipe (r->pend + keep, drop);
      r->base = cur;
    }
}

int
redact_stream_feed (struct redact_stream *s, const void *data, size_t len, redact_out_fn out,
                    void *opaque, bvm_error_t *err)
{
  const struct redactor *r = s->r;
  const unsigned char *d = data;
  int ret;

  if ((ret = stream_ready (s, err)) < 0)
    return ret;
  if (r->n_pats == 0)
    {
      if (len > 0)
        out (opaque, data, len);
      return 0;
    }
  while (len > 0)
    {
      size_t n = len < CHUNK ? len : CHUNK;
      unsigned char *p = s->pend + (s->pos - s->base);
      uint32_t st = s->st;

      memcpy (p, d, n);
      for (size_t i = 0; i < n; i++)
        {
          uint32_t l;
          st = step (r, st, p[i]);
          l = r->out_len[st];
          if (l != 0)
            add_interval (s, s->pos + i + 1 - l, s->pos + i);
        }
      s->st = st;
      s->pos += n;
      emit (s, s->pos - r->depth[st], out, opaque);
      d += n;
      len -= n;
    }
  return 0;
}

int
redact_stream_flush (struct redact_stream *s, redact_out_fn out, void *opaque, bvm_error_t *err)
{
  int ret;
  if ((ret = stream_ready (s, err)) < 0)
    return ret;
  if (s->pend != NULL)
    emit (s, s->pos, out, opaque);
  s->st = 0;
  s->last_was_mask = false;
  return 0;
}

int
redact_feed (struct redactor *r, const void *data, size_t len, redact_out_fn out, void *opaque,
             bvm_error_t *err)
{
  return redact_stream_feed (&r->s0, data, len, out, opaque, err);
}

int
redact_flush (struct redactor *r, redact_out_fn out, void *opaque, bvm_error_t *err)
{
  return redact_stream_flush (&r->s0, out, opaque, err);
}

int
redact_stream_new (struct redact_stream **out, struct redactor *r, bvm_error_t *err)
{
  struct redact_stream *s;
  int ret;

  /* built now, so that adding a pattern later is refused, not half-seen */
  if (r->dirty && (ret = build (r, err)) < 0)
    return ret;
  s = calloc (1, sizeof *s);
  if (s == NULL)
    return nomem (err);
  s->r = r;
  r->n_streams++;
  *out = s;
  return 0;
}

void
redact_stream_free (struct redact_stream *s)
{
  if (s == NULL)
    return;
  stream_dispose (s);
  s->r->n_streams--;
  free (s);
}

struct text_out
{
  struct buf *b;
  bool full;
};

static void
text_add (void *opaque, const char *data, size_t len)
{
  struct text_out *t = opaque;
  if (!t->full && buf_add (t->b, data, len) < 0)
    t->full = true;
}

int
redact_text (struct redactor *r, struct buf *out, const char *text, size_t len, bvm_error_t *err)
{
  struct redact_stream *s = NULL;
  struct text_out t = { out, false };
  int ret;

  if (r == NULL)
    return buf_add (out, text, len) < 0 ? bvm_error (err, ENOMEM, "redacting a message") : 0;
  if ((ret = redact_stream_new (&s, r, err)) < 0)
    return ret;
  ret = redact_stream_feed (s, text, len, text_add, &t, err);
  if (ret == 0)
    ret = redact_stream_flush (s, text_add, &t, err);
  redact_stream_free (s);
  if (ret == 0 && t.full)
    ret = bvm_error_code (err, BVM_E_LIMIT, 0, "a redacted message exceeds %zu bytes", out->max);
  return ret;
}
