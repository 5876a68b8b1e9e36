/* bench/store_write.c - the cost of encryption at rest: the same bytes put
 * into the same `dir:` store, plain and sealed (store_txn_seal), in one
 * process, runs interleaved so both see the same machine.
 *
 *   store-write DIR MIB OBJECTS RUNS
 *
 * Puts OBJECTS objects of MIB/OBJECTS MiB each (pseudo-random bytes, made
 * once, in memory) through store_put_* in 64 KiB writes, as ingest does, and
 * commits, RUNS times each way; prints the median milliseconds of each:
 *
 *   plain_ms N
 *   sealed_ms N
 *
 * Only the store is timed: making the bytes is not, so the ratio is the
 * seal's own cost on the write path (bench/pipeline.sh reports it). */
#include "store.h"
#include "util.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PIECE (64 * 1024)
#define RUNS_MAX 100

static int
one_run (const char *spec, const unsigned char *data, size_t each, unsigned objects,
         const unsigned char *key, unsigned run, int64_t *ms, bvm_error_t *err)
{
  cleanup_store struct store *s = NULL;
  struct store_txn *t = NULL;
  char prefix[64], name[128];
  int64_t t0;

  if (store_open (&s, spec, err) < 0)
    return -1;
  snprintf (prefix, sizeof prefix, "apps/bench/%s%u/", key ? "sealed" : "plain", run);
  t0 = now_ms ();
  if (store_txn_begin (&t, s, prefix, err) < 0)
    return -1;
  if (key != NULL && store_txn_seal (t, key, err) < 0)
    goto fail;
  for (unsigned i = 0; i < objects; i++)
    {
      snprintf (name, sizeof name, "%so%05u.bin", prefix, i);
      if (store_put_begin (t, name, err) < 0)
        goto fail;
      for (size_t off = 0; off < each; off += PIECE)
        if (store_put_write (t, data + off, each - off < PIECE ? each - off : PIECE, err) < 0)
          goto fail;
      if (store_put_end (t, err) < 0)
        goto fail;
    }
  if (store_txn_commit (t, NULL, NULL, err) < 0)
    return -1;
  *ms = now_ms () - t0;
  return 0;
fail:
  store_txn_abort (t);
  return -1;
}

static int
cmp_i64 (const void *a, const void *b)
{
  int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
  return x < y ? -1 : x > y;
}

static int64_t
median (int64_t *v, unsigned n)
{
  qsort (v, n, sizeof *v, cmp_i64);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int
main (int argc, char **argv)
{
  cleanup_error bvm_error_t err = NULL;
  uint64_t mib, objects, runs;
  unsigned char key[SEAL_KEY_BYTES];
  int64_t plain[RUNS_MAX], sealed[RUNS_MAX];
  cleanup_free unsigned char *data = NULL;
  char spec[4096];
  size_t each;

  if (argc != 5 || parse_u64 (argv[2], &mib) < 0 || parse_u64 (argv[3], &objects) < 0
      || parse_u64 (argv[4], &runs) < 0 || mib == 0 || mib > 4096 || objects == 0
      || objects > 10000 || runs == 0 || runs > RUNS_MAX)
    {
      fprintf (stderr, "usage: store-write DIR MIB OBJECTS RUNS\n");
      return 2;
    }
  each = (size_t) (mib << 20) / objects;
  if ((data = malloc (each)) == NULL || RAND_bytes (data, (int) each) != 1
      || RAND_bytes (key, sizeof key) != 1)
    {
      fprintf (stderr, "store-write: cannot make the data\n");
      return 1;
    }
  snprintf (spec, sizeof spec, "dir:%s", argv[1]);
  /* a warm-up of each, not counted */
  for (unsigned r = 0; r <= runs; r++)
    {
      int64_t p, s;
      if (one_run (spec, data, each, (unsigned) objects, NULL, r, &p, &err) < 0
          || one_run (spec, data, each, (unsigned) objects, key, r, &s, &err) < 0)
        {
          fprintf (stderr, "store-write: %s\n", bvm_error_msg (&err));
          return 1;
        }
      if (r > 0)
        plain[r - 1] = p, sealed[r - 1] = s;
    }
  printf ("plain_ms %lld\nsealed_ms %lld\n", (long long) median (plain, (unsigned) runs),
          (long long) median (sealed, (unsigned) runs));
  return 0;
}
