/* cmd_artifacts.c - `buildvm artifacts get APP/COMMIT NAME`: read one
 * artifact back from the store, decrypted for an authorized reader */
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "job.h"
#include "secrets.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm artifacts get [--config FILE] [-o FILE] APP/COMMIT NAME\n"
                "\n"
                "Print (or write to FILE) the artifact NAME of APP at COMMIT, as the build\n"
                "stored it under apps/APP/COMMIT/NAME. Encrypted artifacts (secrets.at_rest)\n"
                "are opened with the app's key from the secret store: the reader needs the\n"
                "master key. The artifact is checked against the commit's index (size and\n"
                "sha256); a tampered, truncated or swapped one is an error, and with -o no\n"
                "file is left.\n"
                "\n"
                "  -o, --output FILE    write here (atomically) instead of stdout\n"
                "      --config FILE    runner configuration: `artifacts` and `secrets`\n"
                "  -h, --help           this help\n");
}

static int
to_fd (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  if (fs_write_all (*(int *) opaque, buf, len) < 0)
    return bvm_error (err, errno, "write");
  return 0;
}

static int
get (const struct runner_config *cfg, const char *prefix, const char *key, const char *output,
     bvm_error_t *err)
{
  cleanup_store struct store *st = NULL;
  cleanup_secrets struct secrets *sec = NULL;
  cleanup_free char *tmp = NULL;
  unsigned char k[SECRETS_KEY_BYTES];
  const unsigned char *kp = NULL;
  int fd = STDOUT_FILENO, ret;

  if (store_open (&st, cfg->artifacts, err) < 0)
    return -1;
  if (cfg->secrets.at_rest)
    {
      char app[JOB_APP_MAX + 1];
      const char *slash = strchr (prefix + 5, '/');
      snprintf (app, sizeof app, "%.*s", (int) (slash - prefix - 5), prefix + 5);
      if (secrets_open (&sec, cfg->secrets.dir, cfg->secrets.master_key, err) < 0
          || secrets_derive_app_key (sec, app, "seal", k, err) < 0)
        return bvm_error_wrap (err, "the key of `%s`", app);
      kp = k;
    }
  if (output != NULL)
    {
      if (asprintf (&tmp, "%s.tmp.XXXXXX", output) < 0)
        return bvm_error (err, ENOMEM, "artifacts");
      fd = mkostemp (tmp, O_CLOEXEC);
      if (fd < 0)
        return bvm_error (err, errno, "create `%s`", tmp);
    }
  ret = store_get (st, prefix, key, kp, to_fd, &fd, err);
  OPENSSL_cleanse (k, sizeof k);
  if (output != NULL)
    {
      if (ret == 0 && fsync (fd) < 0)
        ret = bvm_error (err, errno, "write `%s`", tmp);
      if (close (fd) < 0 && ret == 0)
        ret = bvm_error (err, errno, "write `%s`", tmp);
      if (ret == 0 && rename (tmp, output) < 0)
        ret = bvm_error (err, errno, "rename `%s` to `%s`", tmp, output);
      if (ret < 0)
        unlink (tmp);
    }
  return ret;
}

int
cmd_artifacts (int argc, char **argv)
{
  struct runner_config *cfg = NULL;
  const char *config_path = NULL, *output = NULL, *slash;
  char prefix[STORE_KEY_MAX + 1], key[STORE_KEY_MAX + 1];
  bvm_error_t err = NULL;
  int ret;

  const struct opt opts[] = {
    OPT_STR ("output", 'o', &output),
    OPT_STR ("config", 0, &config_path),
    OPT_END,
  };
  if ((ret = cli_help_or_missing (argc, argv, usage)) >= 0)
    return ret;
  if (strcmp (argv[1], "get") != 0)
    return cli_usage ("artifacts", "unknown subcommand `%s`", argv[1]);
  argc--, argv++;
  if (cli_parse (argc, argv, "artifacts", opts, 0, 2, usage, &ret))
    return ret;
  if (argc - optind != 2)
    return cli_usage ("artifacts", "expected APP/COMMIT and NAME");
  slash = strchr (argv[optind], '/');
  if (slash == NULL || slash == argv[optind] || (size_t) (slash - argv[optind]) > JOB_APP_MAX)
    return cli_usage ("artifacts", "expected APP/COMMIT, got `%s`", argv[optind]);
  {
    char app[JOB_APP_MAX + 1];
    snprintf (app, sizeof app, "%.*s", (int) (slash - argv[optind]), argv[optind]);
    if (job_app_id_problem (app) != NULL)
      return cli_usage ("artifacts", "invalid app id `%s`", app);
  }
  if (snprintf_checked (prefix, sizeof prefix, "apps/%s/", argv[optind]) < 0
      || snprintf_checked (key, sizeof key, "%s%s", prefix, argv[optind + 1]) < 0)
    return cli_usage ("artifacts", "the name is too long");
  if (config_load (&cfg, config_path, &err) < 0)
    return cli_fail ("artifacts", &err, 1);
  ret = get (cfg, prefix, key, output, &err);
  config_free (cfg);
  if (ret < 0)
    return cli_fail ("artifacts", &err, cli_status_for (&err));
  return 0;
}
