/* s3-tool.c - the S3 artifact store's code, driven from the tests
 *
 *   s3-tool assume SPEC SCOPE          AssumeRole as a transaction for SCOPE
 *                                      does (s3:PutObject and
 *                                      s3:AbortMultipartUpload on the scope),
 *                                      and print the temporary credentials as
 *                                      s3cmd config lines
 *   s3-tool put SPEC PREFIX KEY FILE [LINK]
 *                                      one transaction: FILE as KEY (and LINK,
 *                                      a hard link to it), commit;
 *                                      prints the summary; S3_TOOL_SEAL=1
 *                                      seals it first (a fixed test key), as
 *                                      a job's artifacts are
 *                                      S3_TOOL_EXPIRES=N: the transaction
 *                                      expires N seconds from now (a job's
 *                                      deadline; N may be negative)
 *   s3-tool get SPEC PREFIX KEY        store_get to stdout (not sealed)
 *
 * Built for the integration tests and the bench only (never installed): the
 * same STS code as the runner's, so a test can show what the store itself
 * refuses to those credentials.
 */
#include "store.h"
#include "store_s3.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct store *the_store;
static struct store_txn *the_txn;

static int
die (bvm_error_t *err)
{
  fprintf (stderr, "s3-tool: %s\n", bvm_error_msg (err));
  bvm_error_free (err);
  store_txn_abort (the_txn);
  store_free (the_store);
  return 1;
}

static int
out_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  (void) opaque;
  if (fwrite (buf, 1, len, stdout) != len)
    return bvm_error (err, errno, "stdout");
  return 0;
}

int
main (int argc, char **argv)
{
  bvm_error_t err = NULL;

  if (argc == 4 && strcmp (argv[1], "assume") == 0)
    {
      static const char *const acts[] = { "s3:PutObject", "s3:AbortMultipartUpload", NULL };
      struct s3_location l;
      struct s3_creds c = { 0 };
      if (strncmp (argv[2], "s3:", 3) != 0)
        return fprintf (stderr, "s3-tool: not an s3: spec\n"), 2;
      if (s3_parse_location (&l, argv[2] + 3, &err) < 0
          || s3_assume (&c, &l, argv[3], acts, 0, &err) < 0)
        return die (&err);
      printf ("access_key = %s\nsecret_key = %s\naccess_token = %s\n", c.access_key, c.secret_key,
              c.token);
      s3_creds_dispose (&c);
      s3_location_dispose (&l);
      return 0;
    }
  if ((argc == 6 || argc == 7) && strcmp (argv[1], "put") == 0)
    {
      struct store *s = NULL;
      struct store_txn *t = NULL;
      struct store_summary sum;
      char buf[1 << 16];
      ssize_t n;
      int fd = open (argv[5], O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return perror (argv[5]), 1;
      static const unsigned char key[SEAL_KEY_BYTES] = { 1, 2, 3 };
      const char *seal = getenv ("S3_TOOL_SEAL");
      const char *expires = getenv ("S3_TOOL_EXPIRES");
      if (store_open (&s, argv[2], &err) < 0 || ((the_store = s), 0)
          || (expires && (store_set_expiry (s, time (NULL) + atol (expires)), 0))
          || store_txn_begin (&t, s, argv[3], &err) < 0 || ((the_txn = t), 0)
          || (seal && strcmp (seal, "1") == 0 && store_txn_seal (t, key, &err) < 0)
          || store_put_begin (t, argv[4], &err) < 0)
        return die (&err);
      while ((n = read (fd, buf, sizeof buf)) > 0)
        if (store_put_write (t, buf, (size_t) n, &err) < 0)
          return die (&err);
      if (n < 0)
        return perror (argv[5]), 1;
      if (store_put_end (t, &err) < 0
          || (argc == 7 && store_put_link (t, argv[6], argv[4], &err) < 0)
          || ((the_txn = NULL), store_txn_commit (t, &sum, NULL, &err)) < 0)
        return die (&err);
      printf ("%s %llu\n", sum.index_key, (unsigned long long) sum.bytes);
      store_free (s);
      close (fd);
      return 0;
    }
  if (argc == 5 && strcmp (argv[1], "get") == 0)
    {
      struct store *s = NULL;
      if (store_open (&s, argv[2], &err) < 0 || ((the_store = s), 0)
          || store_get (s, argv[3], argv[4], NULL, out_sink, NULL, &err) < 0)
        return die (&err);
      store_free (s);
      return 0;
    }
  fprintf (stderr, "usage: s3-tool assume SPEC SCOPE | put SPEC PREFIX KEY FILE [LINK] | get SPEC "
                   "PREFIX KEY\n");
  return 2;
}
