/* test_redact.c - the streaming secret redactor
 *
 * The expected encodings are computed here independently of redact.c
 * (OpenSSL's EVP_EncodeBlock for base64, plain loops for hex and percent
 * encoding), so a bug in the module's encoders cannot hide itself.
 */
#include "support.h"

#include "buf.h"
#include "redact.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_MAX (64u << 20)

/* --- helpers -------------------------------------------------------------------- */

static void
collect (void *opaque, const char *data, size_t len)
{
  struct buf *b = opaque;
  assert_true (len > 0); /* never called for nothing */
  if (buf_add (b, data, len) < 0)
    fail_msg ("output larger than %u bytes", OUT_MAX);
}

static uint64_t rng_state;

static uint64_t
rng (void)
{
  /* xorshift64*: deterministic, so a failure reproduces */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static struct redactor *
new_with (const char *const *values)
{
  struct redactor *r = NULL;
  bvm_error_t err = NULL;
  bool short_;
  assert_ok (redact_new (&r, &err), &err);
  for (size_t i = 0; values[i]; i++)
    {
      assert_ok (redact_add (r, values[i], strlen (values[i]), &short_, &err), &err);
      assert_false (short_);
    }
  return r;
}

/* Feed text[0..split) and text[split..len), flush; the output in *out. */
static void
run_split (struct redactor *r, struct buf *out, const void *text, size_t len, size_t split)
{
  bvm_error_t err = NULL;
  buf_reset (out);
  assert_ok (redact_feed (r, text, split, collect, out, &err), &err);
  assert_ok (redact_feed (r, (const char *) text + split, len - split, collect, out, &err), &err);
  assert_ok (redact_flush (r, collect, out, &err), &err);
  assert_int_equal (redact_pending (r), 0);
}

static char *
run_str (struct redactor *r, const char *text)
{
  struct buf out = BUF_INIT (OUT_MAX);
  run_split (r, &out, text, strlen (text), strlen (text) / 2);
  return buf_steal (&out);
}

/* Independent encoders. Each returns the length written to out. */
static size_t
enc_b64 (char *out, const unsigned char *in, size_t n, bool url, bool pad)
{
  size_t len = (size_t) EVP_EncodeBlock ((unsigned char *) out, in, (int) n);
  if (!pad)
    while (len > 0 && out[len - 1] == '=')
      len--;
  if (url)
    for (size_t i = 0; i < len; i++)
      out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  out[len] = '\0';
  return len;
}

static size_t
enc_hex (char *out, const unsigned char *in, size_t n, bool upper)
{
  for (size_t i = 0; i < n; i++)
    snprintf (out + 2 * i, 3, upper ? "%02X" : "%02x", in[i]);
  return 2 * n;
}

static size_t
enc_url (char *out, const unsigned char *in, size_t n, bool upper)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    if (strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", in[i])
        && in[i] != 0)
      out[o++] = (char) in[i];
    else
      o += (size_t) snprintf (out + o, 4, upper ? "%%%02X" : "%%%02x", in[i]);
  return o;
}

#define N_FORMS 9
static const char *const form_names[N_FORMS] = {
  "raw", "base64", "base64-nopad", "base64url", "base64url-nopad", "hex", "HEX", "url", "url-lower"
};

static size_t
encode (char *out, int form, const unsigned char *v, size_t n)
{
  switch (form)
    {
    case 0: memcpy (out, v, n); return n;
    case 1: return enc_b64 (out, v, n, false, true);
    case 2: return enc_b64 (out, v, n, false, false);
    case 3: return enc_b64 (out, v, n, true, true);
    case 4: return enc_b64 (out, v, n, true, false);
    case 5: return enc_hex (out, v, n, false);
    case 6: return enc_hex (out, v, n, true);
    case 7: return enc_url (out, v, n, true);
    default: return enc_url (out, v, n, false);
    }
}

/* --- tests ------------------------------------------------------------------------- */

static void
test_basic (void **state)
{
  static const char *const vals[] = { "hunter2-secret", NULL };
  struct redactor *r = new_with (vals);
  char *o;
  (void) state;

  o = run_str (r, "the pass is hunter2-secret!\n");
  assert_string_equal (o, "the pass is ***!\n");
  free (o);
  o = run_str (r, "hunter2-secrethunter2-secret and hunter2-secret\nhunter2-secre\n");
  assert_string_equal (o, "*** and ***\nhunter2-secre\n");
  free (o);
  assert_true (redact_pattern_count (r) > 5);
  redact_free (r);
}

static void
test_every_form_of_a_known_value (void **state)
{
  static const char *const vals[] = { "hello world", NULL };
  static const char *const forms[] = {
    "hello world",
    "aGVsbG8gd29ybGQ=",       /* base64 */
    "aGVsbG8gd29ybGQ",        /* unpadded */
    "68656c6c6f20776f726c64", /* hex */
    "68656C6C6F20776F726C64", /* HEX */
    "hello%20world",          /* percent */
    "hello+world",            /* form */
    NULL,
  };
  struct redactor *r = new_with (vals);
  (void) state;

  for (size_t i = 0; forms[i]; i++)
    {
      char text[128], *o;
      snprintf (text, sizeof text, "x=%s;\n", forms[i]);
      o = run_str (r, text);
      if (strcmp (o, "x=***;\n") != 0)
        fail_msg ("form `%s`: got `%s`", forms[i], o);
      free (o);
    }
  redact_free (r);
}

static void
test_too_short (void **state)
{
  struct redactor *r = NULL;
  bvm_error_t err = NULL;
  bool short_ = false;
  char *o;
  (void) state;

  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, "abc", 3, &short_, &err), &err);
  assert_true (short_);
  assert_ok (redact_add (r, "", 0, &short_, &err), &err);
  assert_true (short_);
  assert_ok (redact_add (r, "abcd", 4, &short_, &err), &err);
  assert_false (short_);
  o = run_str (r, "abc ab abcd\n");
  assert_string_equal (o, "abc ab ***\n");
  free (o);
  redact_free (r);
}

/* Text without secrets comes out byte for byte, in any chunking, and plain
 * lines are not held back at all. */
static void
test_passthrough_exact (void **state)
{
  static const char *const vals[] = { "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "p@ss w0rd!",
                                      NULL };
  struct redactor *r = new_with (vals);
  struct buf out = BUF_INIT (OUT_MAX);
  bvm_error_t err = NULL;
  size_t n = 1 << 20, off = 0;
  unsigned char *text = malloc (n);
  (void) state;

  rng_state = 42;
  for (size_t i = 0; i < n; i++)
    text[i] = (unsigned char) rng ();
  while (off < n)
    {
      size_t k = 1 + rng () % 5000;
      if (k > n - off)
        k = n - off;
      assert_ok (redact_feed (r, text + off, k, collect, &out, &err), &err);
      assert_true (redact_pending (r) < redact_max_pattern_len (r));
      off += k;
    }
  assert_ok (redact_flush (r, collect, &out, &err), &err);
  assert_int_equal (out.len, n);
  assert_memory_equal (out.ptr, text, n);

  /* a line is passed on in full as soon as it is fed */
  buf_reset (&out);
  for (int i = 0; i < 100; i++)
    {
      char line[64];
      size_t before = out.len;
      snprintf (line, sizeof line, "step %d: compiling gh src/main.c p@ss\n", i);
      assert_ok (redact_feed (r, line, strlen (line), collect, &out, &err), &err);
      assert_int_equal (redact_pending (r), 0);
      assert_int_equal (out.len - before, strlen (line));
    }
  assert_ok (redact_flush (r, collect, &out, &err), &err);
  buf_dispose (&out);
  free (text);
  redact_free (r);
}

/* The brief's test: 10,000 random secrets of 4..64 random bytes (NUL,
 * newlines and all), in batches of 64 per redactor (a job's maximum), each
 * printed in every form and fed in two reads split at every position. */
static void
test_ten_thousand_split_everywhere (void **state)
{
  enum
  {
    N = 10000,
    BATCH = 64,
  };
  struct buf out = BUF_INIT (OUT_MAX);
  unsigned char vals[BATCH][64];
  size_t lens[BATCH];
  char form[256], text[260];
  size_t checked = 0;
  int64_t t0 = now_ms ();
  (void) state;

  rng_state = 0x5eed;
  for (size_t b = 0; b < N / BATCH + (N % BATCH != 0); b++)
    {
      struct redactor *r = NULL;
      bvm_error_t err = NULL;
      size_t nb = b * BATCH + BATCH <= N ? BATCH : N - b * BATCH;

      assert_ok (redact_new (&r, &err), &err);
      for (size_t i = 0; i < nb; i++)
        {
          bool short_;
          lens[i] = 4 + rng () % 61;
          for (size_t k = 0; k < lens[i]; k++)
            vals[i][k] = (unsigned char) rng ();
          assert_ok (redact_add (r, vals[i], lens[i], &short_, &err), &err);
          assert_false (short_);
        }
      for (size_t i = 0; i < nb; i++)
        for (int f = 0; f < N_FORMS; f++)
          {
            size_t fl = encode (form, f, vals[i], lens[i]), tl = fl + 3;
            text[0] = '<';
            memcpy (text + 1, form, fl);
            memcpy (text + 1 + fl, ">\n", 2);
            for (size_t split = 0; split <= tl; split++)
              {
                run_split (r, &out, text, tl, split);
                if (memmem (out.ptr, out.len, form, fl) != NULL || out.len != 6
                    || memcmp (out.ptr, "<***>\n", 6) != 0)
                  fail_msg ("secret %zu (%zu bytes), form %s, split at %zu: %zu bytes out",
                            b * BATCH + i, lens[i], form_names[f], split, out.len);
                checked++;
              }
          }
      redact_free (r);
    }
  print_message ("    %zu split feeds checked in %lld ms\n", checked,
                 (long long) (now_ms () - t0));
  buf_dispose (&out);
}

static void
test_overlapping_and_adjacent (void **state)
{
  static const char *const vals[] = { "abcdef12",         "ef12ghij", "ZZZZ9999",
                                      "nest-outer-value", "outer",    NULL };
  struct redactor *r = new_with (vals);
  static const struct
  {
    const char *in, *want;
  } cases[] = {
    { "xxabcdef12ghijyy\n", "xx***yy\n" }, /* overlapping */
    { "abcdef12ZZZZ9999.\n", "***.\n" },   /* adjacent runs are one mask */
    { "abcdef12 ZZZZ9999\n", "*** ***\n" },
    { "[nest-outer-value]\n", "[***]\n" }, /* nested: the longest wins */
    { "[outer-value]\n", "[***-value]\n" },
    /* a shorter value ends inside a partial match of a longer one */
    { "[nest-outer-X]\n", "[nest-***-X]\n" },
    { "nest-outer-valu nest-outer-value\n", "nest-***-valu ***\n" },
    { "abcdef12abcdef12abcdef1\n", "***abcdef1\n" },
    { "abcdef1ef12ghij\n", "abcdef1***\n" }, /* a near miss then a match */
  };
  (void) state;

  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct buf out = BUF_INIT (OUT_MAX);
      size_t n = strlen (cases[i].in);
      for (size_t split = 0; split <= n; split++)
        {
          run_split (r, &out, cases[i].in, n, split);
          if (strcmp (buf_cstr (&out), cases[i].want) != 0)
            fail_msg ("`%s` split at %zu: got `%s`, want `%s`", cases[i].in, split,
                      buf_cstr (&out), cases[i].want);
        }
      buf_dispose (&out);
    }
  redact_free (r);
}

/* Property test against a brute-force reference: mark every byte inside any
 * occurrence of any value, turn each maximal marked run into `***`. Over
 * the alphabet {a,b,c} only the raw values can match (every base64, hex and
 * percent form of such a value contains `Y` or digits), so the reference
 * needs no encoders. Random values, texts and chunkings. */
static void
test_matches_reference (void **state)
{
  struct buf out = BUF_INIT (OUT_MAX), want = BUF_INIT (OUT_MAX);
  (void) state;

  rng_state = 2024;
  for (int iter = 0; iter < 20000; iter++)
    {
      struct redactor *r = NULL;
      bvm_error_t err = NULL;
      char vals[6][9], text[201];
      bool mark[200];
      size_t nv = 1 + rng () % 6, tl = rng () % 201, off = 0;

      assert_ok (redact_new (&r, &err), &err);
      for (size_t i = 0; i < nv; i++)
        {
          size_t l = 4 + rng () % 5;
          bool short_;
          for (size_t k = 0; k < l; k++)
            vals[i][k] = (char) ('a' + rng () % 3);
          vals[i][l] = '\0';
          assert_ok (redact_add (r, vals[i], l, &short_, &err), &err);
        }
      for (size_t k = 0; k < tl; k++)
        text[k] = (char) ('a' + rng () % 3);
      text[tl] = '\0';
      memset (mark, 0, sizeof mark);
      for (size_t i = 0; i < nv; i++)
        for (size_t p = 0, l = strlen (vals[i]); p + l <= tl; p++)
          if (memcmp (text + p, vals[i], l) == 0)
            memset (mark + p, 1, l);
      buf_reset (&want);
      for (size_t k = 0; k < tl; k++)
        if (!mark[k])
          buf_add (&want, text + k, 1);
        else if (k == 0 || !mark[k - 1])
          buf_adds (&want, "***");

      buf_reset (&out);
      while (off < tl)
        {
          size_t n = 1 + rng () % 12;
          if (n > tl - off)
            n = tl - off;
          assert_ok (redact_feed (r, text + off, n, collect, &out, &err), &err);
          off += n;
        }
      assert_ok (redact_flush (r, collect, &out, &err), &err);
      if (strcmp (buf_cstr (&out), buf_cstr (&want)) != 0)
        fail_msg ("iteration %d, text `%s`, first value `%s`: got `%s`, want `%s`", iter, text,
                  vals[0], buf_cstr (&out), buf_cstr (&want));
      redact_free (r);
    }
  buf_dispose (&out);
  buf_dispose (&want);
}

/* One byte per feed: the hold-back carries a secret across any number of
 * reads, and is never more than the live prefix. */
static void
test_hold_back (void **state)
{
  static const char *const vals[] = { "0123456789abcdef-SECRET", NULL };
  struct redactor *r = new_with (vals);
  struct buf out = BUF_INIT (OUT_MAX);
  bvm_error_t err = NULL;
  const char *text = "log: 0123456789abcdef-SECRET; 0123456789 done\n";
  (void) state;

  for (const char *p = text; *p; p++)
    {
      assert_ok (redact_feed (r, p, 1, collect, &out, &err), &err);
      assert_true (redact_pending (r) <= redact_max_pattern_len (r) - 1);
    }
  assert_string_equal (buf_cstr (&out), "log: ***; 0123456789 done\n");
  assert_int_equal (redact_pending (r), 0);

  /* a stalled prefix is held, then let go when the text diverges */
  buf_reset (&out);
  assert_ok (redact_feed (r, "prefix 0123456789", 17, collect, &out, &err), &err);
  assert_string_equal (buf_cstr (&out), "prefix ");
  assert_int_equal (redact_pending (r), 10);
  /* adding a value while bytes are held is refused */
  {
    bool short_;
    assert_fails_with (redact_add (r, "another-one", 11, &short_, &err), &err,
                       "before the log stream or after a flush");
  }
  assert_ok (redact_feed (r, "XYZ\n", 4, collect, &out, &err), &err);
  assert_string_equal (buf_cstr (&out), "prefix 0123456789XYZ\n");
  assert_int_equal (redact_pending (r), 0);
  /* flush emits a held prefix as is */
  buf_reset (&out);
  assert_ok (redact_feed (r, "0123456789abcdef-SECRE", 22, collect, &out, &err), &err);
  assert_int_equal (out.len, 0);
  assert_ok (redact_flush (r, collect, &out, &err), &err);
  assert_string_equal (buf_cstr (&out), "0123456789abcdef-SECRE");
  /* after a flush, more values may be added */
  {
    bool short_;
    assert_ok (redact_add (r, "another-one", 11, &short_, &err), &err);
  }
  buf_dispose (&out);
  redact_free (r);
  {
    char *o;
    static const char *const v2[] = { "0123456789abcdef-SECRET", "another-one", NULL };
    r = new_with (v2);
    o = run_str (r, "another-one 0123456789abcdef-SECRET\n");
    assert_string_equal (o, "*** ***\n");
    free (o);
    redact_free (r);
  }
}

/* A value inside a longer base64 text (Basic auth, `echo $T | base64`): the
 * characters that depend on the value alone are masked, whatever its
 * alignment. What may survive: the encoding of the other bytes and at most
 * the two characters that mix them with the value at each end. */
static void
test_embedded_base64 (void **state)
{
  static const char *const vals[] = { "ghp_0123456789abcdefghijklmnopqrstuvwxyz", NULL };
  static const char *const prefixes[] = { "", "u", "us", "user:", "x-access-token:", NULL };
  static const char *const suffixes[] = { "", "\n", "\r\n", ":1", NULL };
  struct redactor *r = new_with (vals);
  (void) state;

  for (size_t i = 0; prefixes[i]; i++)
    for (size_t j = 0; suffixes[j]; j++)
      for (int url = 0; url < 2; url++)
        {
          unsigned char plain[128];
          char enc[256], text[300], *o;
          size_t pl = strlen (prefixes[i]), vl = strlen (vals[0]), sl = strlen (suffixes[j]);
          size_t n, allowed;

          memcpy (plain, prefixes[i], pl);
          memcpy (plain + pl, vals[0], vl);
          memcpy (plain + pl + vl, suffixes[j], sl);
          n = enc_b64 (enc, plain, pl + vl + sl, url, true);
          snprintf (text, sizeof text, "Authorization: Basic %s\n", enc);
          o = run_str (r, text);
          /* prefix chars + 1 mixed, mask, 1 mixed + suffix chars + padding */
          allowed = strlen ("Authorization: Basic ") + (pl * 4 + 2) / 3 + 1 + 3 + 1
                    + (sl * 4 + 2) / 3 + 2 + 1;
          if (strstr (o, "***") == NULL || strlen (o) > allowed)
            fail_msg ("prefix `%s` suffix %zu url %d: `%s` from `%s` (%zu chars)", prefixes[i], j,
                      url, o, text, n);
          free (o);
        }
  redact_free (r);
}

/* `base64` wraps at 76 columns, `openssl base64` at 64. */
static void
test_wrapped_base64 (void **state)
{
  struct redactor *r = NULL;
  bvm_error_t err = NULL;
  unsigned char v[100];
  char enc[200], text[300], *o;
  bool short_;
  (void) state;

  rng_state = 7;
  for (size_t i = 0; i < sizeof v; i++)
    v[i] = (unsigned char) (' ' + rng () % 95);
  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, v, sizeof v, &short_, &err), &err);
  for (int w = 0; w < 2; w++)
    {
      size_t width = w ? 64 : 76, n = enc_b64 (enc, v, sizeof v, false, true), o2 = 0;
      for (size_t i = 0; i < n; i++)
        {
          if (i > 0 && i % width == 0)
            text[o2++] = '\n';
          text[o2++] = enc[i];
        }
      memcpy (text + o2, "\n", 2);
      o = run_str (r, text);
      if (strcmp (o, "***\n") != 0)
        fail_msg ("wrapped at %zu: `%s`", width, o);
      free (o);
    }
  redact_free (r);
}

/* A stored value with a trailing newline is also masked without it. */
static void
test_trailing_newline (void **state)
{
  static const char *const vals[] = { "tok-123456\n", "crlf-token\r\n", NULL };
  struct redactor *r = new_with (vals);
  char *o = run_str (r, "t=tok-123456 c=crlf-token;\n");
  (void) state;
  assert_string_equal (o, "t=*** c=***;\n");
  free (o);
  redact_free (r);
}

/* Linear time on a hostile stream: a long run of one byte against a secret
 * made of it. */
static void
test_pathological_input_is_linear (void **state)
{
  struct redactor *r = NULL;
  struct buf out = BUF_INIT (OUT_MAX);
  bvm_error_t err = NULL;
  size_t vn = 4096, n = 4 << 20;
  char *v = malloc (vn), *text = malloc (n);
  int64_t t0;
  bool short_;
  (void) state;

  memset (v, 'a', vn);
  memset (text, 'a', n);
  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, v, vn, &short_, &err), &err);
  t0 = now_ms ();
  assert_ok (redact_feed (r, text, n, collect, &out, &err), &err);
  assert_ok (redact_flush (r, collect, &out, &err), &err);
  assert_string_equal (buf_cstr (&out), "***");
  /* one `b` every 4000 bytes: no full match anywhere, all passes through */
  for (size_t i = 0; i < n; i += 4000)
    text[i] = 'b';
  buf_reset (&out);
  assert_ok (redact_feed (r, text, n, collect, &out, &err), &err);
  assert_ok (redact_flush (r, collect, &out, &err), &err);
  assert_int_equal (out.len, n);
  assert_memory_equal (out.ptr, text, n);
  print_message ("    8 MiB of hostile input in %lld ms\n", (long long) (now_ms () - t0));
  assert_true (now_ms () - t0 < 20000);
  buf_dispose (&out);
  free (v);
  free (text);
  redact_free (r);
}

static void
test_limit_is_all_or_nothing (void **state)
{
  struct redactor *r = NULL;
  bvm_error_t err = NULL;
  size_t vn = 64 * 1024, count, added = 0;
  unsigned char *v = malloc (vn);
  char *o;
  bool short_;
  int ret = 0;
  (void) state;

  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, "keep-this-one", 13, &short_, &err), &err);
  rng_state = 99;
  for (int i = 0; i < 64 && ret == 0; i++)
    {
      for (size_t k = 0; k < vn; k++)
        v[k] = (unsigned char) rng ();
      count = redact_pattern_count (r);
      ret = redact_add (r, v, vn, &short_, &err);
      if (ret == 0)
        added++;
      else
        {
          assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
          assert_non_null (strstr (bvm_error_msg (&err), "bytes of redaction patterns"));
          assert_int_equal (redact_pattern_count (r), count);
          bvm_error_free (&err);
        }
    }
  assert_true (ret < 0);
  assert_true (added >= 1);
  print_message ("    %zu random 64 KiB values fit under the cap\n", added);
  o = run_str (r, "keep-this-one\n");
  assert_string_equal (o, "***\n");
  free (o);
  free (v);
  redact_free (r);
}

/* Console throughput with a job's worth of secrets: 64 tokens of 40 bytes. */
/* Feed `text` on a stream of its own in pieces of `piece` bytes (the first
 * one `first` bytes), flush; the output in *out. */
static void
run_stream (struct redact_stream *s, struct buf *out, const char *text, size_t len, size_t first,
            size_t piece)
{
  bvm_error_t err = NULL;
  size_t i = 0, n = first;
  buf_reset (out);
  while (i < len)
    {
      if (n > len - i)
        n = len - i;
      assert_ok (redact_stream_feed (s, text + i, n, collect, out, &err), &err);
      i += n;
      n = piece;
    }
  assert_ok (redact_stream_flush (s, collect, out, &err), &err);
}

/* base64 wrapped with `\n` every `wrap` columns, as base64(1) and openssl do */
static size_t
enc_b64_wrapped (char *out, const unsigned char *in, size_t n, size_t wrap)
{
  char *flat = malloc (4 * n + 8);
  size_t fl = enc_b64 (flat, in, n, false, true), o = 0;
  assert_non_null (flat);
  for (size_t i = 0; i < fl; i++)
    {
      if (i > 0 && i % wrap == 0)
        out[o++] = '\n';
      out[o++] = flat[i];
    }
  free (flat);
  return o;
}

/* The maximal secret (64 KiB, SECRETS_MAX_VALUE) in every form, in the
 * console's 8 KiB pieces, with the piece boundaries at many offsets into the
 * form: masked whole every time, nothing of it left. */
static void
test_max_size_every_form_every_piece_offset (void **state)
{
  enum
  {
    V = 64 * 1024,
    PIECE = 8192,
  };
  struct buf out = BUF_INIT (OUT_MAX);
  unsigned char *v = malloc (V);
  char *form = malloc (4 * V + 4096), *text = malloc (4 * V + 8192);
  struct redactor *r = NULL;
  struct redact_stream *s = NULL;
  bvm_error_t err = NULL;
  bool short_;
  size_t checked = 0;
  (void) state;

  assert_non_null (v);
  assert_non_null (form);
  assert_non_null (text);
  rng_state = 0xb16;
  for (size_t i = 0; i < V; i++)
    v[i] = (unsigned char) rng ();
  assert_ok (redact_new (&r, &err), &err);
  assert_ok (redact_add (r, v, V, &short_, &err), &err);
  assert_ok (redact_stream_new (&s, r, &err), &err);
  for (int f = 0; f < N_FORMS + 2; f++)
    {
      size_t fl = f < N_FORMS ? encode (form, f, v, V)
                              : enc_b64_wrapped (form, v, V, f == N_FORMS ? 76 : 64);
      memcpy (text, "<", 1);
      memcpy (text + 1, form, fl);
      memcpy (text + 1 + fl, ">\n", 2);
      for (size_t first = 1; first <= PIECE; first += 251)
        {
          run_stream (s, &out, text, fl + 3, first, PIECE);
          if (out.len != 6 || memcmp (out.ptr, "<***>\n", 6) != 0)
            fail_msg ("form %d (%zu bytes), first piece %zu: %zu bytes out", f, fl, first,
                      out.len);
          checked++;
        }
    }
  print_message ("    %zu feeds of a 64 KiB secret checked\n", checked);
  redact_stream_free (s);
  redact_free (r);
  buf_dispose (&out);
  free (v);
  free (form);
  free (text);
}

/* A value with `\r\n` inside: masked at every split, in every form. */
static void
test_crlf_inside_a_value (void **state)
{
  static const char *const vals[] = { "first-line\r\nsecond-line", NULL };
  struct redactor *r = new_with (vals);
  struct buf out = BUF_INIT (OUT_MAX);
  char form[256], text[300];
  (void) state;

  for (int f = 0; f < N_FORMS; f++)
    {
      size_t fl = encode (form, f, (const unsigned char *) vals[0], strlen (vals[0]));
      snprintf (text, sizeof text, "a %.*s b\r\n", (int) fl, form);
      for (size_t split = 0; split <= strlen (text); split++)
        {
          run_split (r, &out, text, strlen (text), split);
          if (out.len != 9 || memcmp (out.ptr, "a *** b\r\n", 9) != 0)
            fail_msg ("form %s, split at %zu: `%.*s`", form_names[f], split, (int) out.len,
                      out.ptr);
        }
    }
  buf_dispose (&out);
  redact_free (r);
}

/* Two streams over one set of patterns, fed in turns (the agent's console
 * and the kernel's): each masks its own secret across the turns; one text
 * on a stream of its own; no pattern can be added while a stream lives. */
static void
test_streams_and_text (void **state)
{
  static const char *const vals[] = { "secret-one-0123", "secret-two-4567", NULL };
  static const char a[] = "A: secret-one-0123 end\n", b[] = "B: secret-two-4567 end\n";
  struct redactor *r = new_with (vals);
  struct redact_stream *sa = NULL, *sb = NULL;
  struct buf oa = BUF_INIT (OUT_MAX), ob = BUF_INIT (OUT_MAX), t = BUF_INIT (64);
  bvm_error_t err = NULL;
  bool short_;
  (void) state;

  assert_ok (redact_stream_new (&sa, r, &err), &err);
  assert_ok (redact_stream_new (&sb, r, &err), &err);
  for (size_t i = 0; i < sizeof a - 1; i++)
    {
      assert_ok (redact_stream_feed (sa, a + i, 1, collect, &oa, &err), &err);
      assert_ok (redact_stream_feed (sb, b + i, 1, collect, &ob, &err), &err);
    }
  assert_ok (redact_stream_flush (sa, collect, &oa, &err), &err);
  assert_ok (redact_stream_flush (sb, collect, &ob, &err), &err);
  assert_string_equal (buf_cstr (&oa), "A: *** end\n");
  assert_string_equal (buf_cstr (&ob), "B: *** end\n");

  assert_int_equal (redact_add (r, "another-value", 13, &short_, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INTERNAL);
  bvm_error_free (&err);

  assert_ok (redact_text (r, &t, "failed: secret-two-4567", 23, &err), &err);
  assert_string_equal (buf_cstr (&t), "failed: ***");
  buf_reset (&t);
  /* over the cap: an error, never a cut text that could end in a prefix */
  assert_int_equal (
      redact_text (r, &t, "0123456789012345678901234567890123456789012345678901234567890123456789",
                   70, &err),
      -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  bvm_error_free (&err);
  buf_reset (&t);
  assert_ok (redact_text (NULL, &t, "as it is", 8, &err), &err);
  assert_string_equal (buf_cstr (&t), "as it is");

  redact_stream_free (sa);
  redact_stream_free (sb);
  /* with no stream left, values can be added again */
  assert_ok (redact_add (r, "another-value", 13, &short_, &err), &err);
  buf_dispose (&oa);
  buf_dispose (&ob);
  buf_dispose (&t);
  redact_free (r);
}

static void
test_throughput (void **state)
{
  struct redactor *r = NULL;
  struct buf out = BUF_INIT (OUT_MAX);
  bvm_error_t err = NULL;
  size_t total = 32 << 20, done = 0, line_n = 0;
  char *log = malloc (1 << 20);
  int64_t t0;
  double mbs;
  (void) state;

  assert_ok (redact_new (&r, &err), &err);
  rng_state = 1234;
  for (int i = 0; i < 64; i++)
    {
      char tok[41];
      bool short_;
      for (int k = 0; k < 40; k++)
        tok[k] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[rng () % 62];
      tok[40] = '\0';
      assert_ok (redact_add (r, tok, 40, &short_, &err), &err);
    }
  /* a megabyte of compiler-ish lines */
  while (line_n < (1 << 20) - 200)
    line_n += (size_t) snprintf (log + line_n, 200,
                                 "  CC src/module_%llu.c -O2 -Wall -o build/obj/module_%llu.o\n",
                                 (unsigned long long) (rng () % 100000),
                                 (unsigned long long) (rng () % 100000));
  t0 = now_ns ();
  while (done < total)
    {
      /* lines of ~60 bytes fed one by one, as the pipeline does */
      size_t off = 0;
      while (off < line_n)
        {
          const char *nl = memchr (log + off, '\n', line_n - off);
          size_t len = (size_t) (nl - (log + off)) + 1;
          assert_ok (redact_feed (r, log + off, len, collect, &out, &err), &err);
          off += len;
        }
      buf_reset (&out);
      done += line_n;
    }
  mbs = (double) done / 1e6 / ((double) (now_ns () - t0) / 1e9);
  print_message ("    %.0f MB/s with %zu patterns, line by line\n", mbs, redact_pattern_count (r));
#ifndef __SANITIZE_ADDRESS__
  assert_true (mbs >= 20.0);
#endif
  buf_dispose (&out);
  free (log);
  redact_free (r);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_basic),
    cmocka_unit_test (test_every_form_of_a_known_value),
    cmocka_unit_test (test_too_short),
    cmocka_unit_test (test_passthrough_exact),
    cmocka_unit_test (test_ten_thousand_split_everywhere),
    cmocka_unit_test (test_overlapping_and_adjacent),
    cmocka_unit_test (test_matches_reference),
    cmocka_unit_test (test_hold_back),
    cmocka_unit_test (test_embedded_base64),
    cmocka_unit_test (test_wrapped_base64),
    cmocka_unit_test (test_trailing_newline),
    cmocka_unit_test (test_pathological_input_is_linear),
    cmocka_unit_test (test_limit_is_all_or_nothing),
    cmocka_unit_test (test_max_size_every_form_every_piece_offset),
    cmocka_unit_test (test_crlf_inside_a_value),
    cmocka_unit_test (test_streams_and_text),
    cmocka_unit_test (test_throughput),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
