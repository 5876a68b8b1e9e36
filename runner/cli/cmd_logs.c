/* cmd_logs.c - `buildvm logs [-f] JOB`: print a job's console log */
#include "cli.h"
#include "config.h"
#include "fs.h"
#include "joblog.h"
#include "job.h"
#include "secrets.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRY_RUN_PREFIX "dry-run-"       /* cmd_dry_run.c's job ids */
#define DRY_RUN_LOGS "buildvm-out/logs" /* and its default --out */

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm logs [--config FILE] [--log-dir DIR] [-f|--follow] [APP/]JOB\n"
                "\n"
                "Print the console log of job JOB (plain, LZ4-compressed, or encrypted at\n"
                "rest: then opened with the app's key from the secret store). With APP/JOB,\n"
                "a job that ran on another host of the fleet is read from the artifact\n"
                "store (logs/apps/APP/JOB/log.lz4). A dry-run's log (JOB `dry-run-...`)\n"
                "is also looked for in ./buildvm-out/logs.\n"
                "\n"
                "  -f, --follow         keep printing while the job runs; stop when its\n"
                "                       log is closed\n"
                "      --config FILE    runner configuration: its `log_dir`\n"
                "      --log-dir DIR    the log directory (default: the config's, else\n"
                "                       $BUILDVM_HOME/logs, where BUILDVM_HOME is\n"
                "                       /var/lib/buildvm as root and ~/.local/state/buildvm\n"
                "                       otherwise)\n"
                "  -h, --help           this help\n");
}

static int
fd_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  if (fs_write_all (*(int *) opaque, buf, len) < 0)
    return bvm_error (err, errno, "write");
  return 0;
}

/* The log directory: --log-dir, else the config's (which applies
 * BUILDVM_HOME and the built-in default itself). */
static int
logs_dir (char **out, const char *opt_dir, const char *config_path, bvm_error_t *err)
{
  struct runner_config *cfg = NULL;

  if (opt_dir != NULL)
    {
      *out = xstrdup (opt_dir);
      return 0;
    }
  if (config_load (&cfg, config_path, err) < 0)
    return -1;
  *out = xstrdup (cfg->log_dir);
  config_free (cfg);
  return 0;
}

/* Sealed logs are opened with the app's key from the secret store */
struct keys
{
  const char *config_path;
  struct runner_config *cfg;
  struct secrets *sec;
};

static int
key_for_app (void *opaque, const char *app, unsigned char key[32], bvm_error_t *err)
{
  struct keys *k = opaque;
  if (k->cfg == NULL && config_load (&k->cfg, k->config_path, err) < 0)
    return -1;
  if (k->sec == NULL
      && secrets_open (&k->sec, k->cfg->secrets.dir, k->cfg->secrets.master_key, err) < 0)
    return bvm_error_wrap (err, "the log is encrypted at rest: opening the secret store");
  return secrets_derive_app_key (k->sec, app, "seal", key, err);
}

static void
keys_dispose (struct keys *k)
{
  secrets_close (k->sec);
  config_free (k->cfg);
}

/* The fleet copy: logs/apps/<app>/<job>/log.lz4 in the artifact store */
static int
cat_from_store (struct keys *k, const char *app, const char *job, bvm_error_t *err)
{
  cleanup_store struct store *st = NULL;
  cleanup_close int mem = -1;
  char prefix[STORE_KEY_MAX + 1], key[STORE_KEY_MAX + 1];
  unsigned char sk[32];
  const unsigned char *skp = NULL;
  int ret;

  if (k->cfg == NULL && config_load (&k->cfg, k->config_path, err) < 0)
    return -1;
  if (snprintf_checked (prefix, sizeof prefix, "logs/apps/%s/%s/", app, job) < 0
      || snprintf_checked (key, sizeof key, "%slog.lz4", prefix) < 0)
    return bvm_error (err, ENAMETOOLONG, "log of `%s`", job);
  if (store_open (&st, k->cfg->artifacts, err) < 0)
    return -1;
  if (k->cfg->secrets.at_rest)
    {
      if (key_for_app (k, app, sk, err) < 0)
        return -1;
      skp = sk;
    }
  mem = memfd_create ("buildvm-log", MFD_CLOEXEC);
  if (mem < 0)
    return bvm_error (err, errno, "memfd_create");
  ret = store_get (st, prefix, key, skp, fd_sink, &mem, err);
  OPENSSL_cleanse (sk, sizeof sk);
  if (ret < 0)
    return ret;
  if (lseek (mem, 0, SEEK_SET) < 0)
    return bvm_error (err, errno, "lseek");
  return joblog_cat_lz4_fd (steal_fd (&mem), key, stdout, err);
}

int
cmd_logs (int argc, char **argv)
{
  cleanup_free char *dir = NULL;
  const char *opt_dir = NULL, *config_path = NULL;
  bvm_error_t err = NULL;
  bool follow = false;
  struct keys keys = { 0 };
  const char *slash;
  char app[JOB_APP_MAX + 1];
  int c, ret;

  const struct opt opts[] = {
    OPT_FLAG ("follow", 'f', &follow),
    OPT_STR ("log-dir", 0, &opt_dir),
    OPT_STR ("config", 0, &config_path),
    OPT_END,
  };
  if (cli_parse (argc, argv, "logs", opts, OPTS_IN_ORDER, -1, usage, &c))
    return c;
  if (argc - optind != 1)
    return cli_usage ("logs", "expected exactly one JOB");
  keys.config_path = config_path;
  slash = strchr (argv[optind], '/');
  if (slash != NULL)
    {
      /* APP/JOB: the local log, else the fleet's copy in the artifact store */
      snprintf (app, sizeof app, "%.*s", (int) (slash - argv[optind]), argv[optind]);
      if ((size_t) (slash - argv[optind]) > JOB_APP_MAX || job_app_id_problem (app) != NULL)
        return cli_usage ("logs", "invalid app id in `%s`", argv[optind]);
      argv[optind] = (char *) slash + 1;
    }
  if (joblog_job_id_problem (argv[optind]) != NULL)
    return cli_usage ("logs", "invalid job id: letters, digits, `.`, `_`, `-`, at most 128");
  if (logs_dir (&dir, opt_dir, config_path, &err) < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  /* the latest attempt's log: <job>.attempt<N> after the first (pipeline.c) */
  {
    char name[192];
    int latest = 0;
    for (int n = 2; n <= 1000; n++)
      {
        glob_t g;
        char pat[PATH_MAX];
        bool found;
        snprintf (pat, sizeof pat, "%s/apps/*/%s.attempt%d.log*", dir, argv[optind], n);
        found = glob (pat, GLOB_NOSORT, NULL, &g) == 0;
        globfree (&g);
        if (!found)
          break;
        latest = n;
      }
    if (latest > 0)
      {
        snprintf (name, sizeof name, "%s.attempt%d", argv[optind], latest);
        fprintf (stderr, "buildvm logs: attempt %d of job `%s`\n", latest, argv[optind]);
        ret = joblog_cat (dir, name, stdout, follow, key_for_app, &keys, &err);
        goto done;
      }
  }
  ret = joblog_cat (dir, argv[optind], stdout, follow, key_for_app, &keys, &err);
  if (ret < 0 && slash != NULL && err != NULL && err->errnum == ENOENT)
    {
      bvm_error_free (&err);
      ret = cat_from_store (&keys, app, argv[optind], &err);
    }
  /* A dry-run keeps its log with its other results, in its --out
   * directory: the default one of the current directory, else say where */
  if (ret < 0 && err != NULL && err->errnum == ENOENT && opt_dir == NULL
      && strncmp (argv[optind], DRY_RUN_PREFIX, strlen (DRY_RUN_PREFIX)) == 0)
    {
      bvm_error_t err2 = NULL;
      ret = joblog_cat (DRY_RUN_LOGS, argv[optind], stdout, follow, key_for_app, &keys, &err2);
      if (ret == 0)
        bvm_error_free (&err);
      else
        {
          bvm_error_free (&err2);
          bvm_error_wrap (&err,
                          "a dry-run's log is in its output directory (`--out`, default "
                          "`buildvm-out`), and not in `%s` either: `buildvm logs --log-dir "
                          "OUT/logs %s`",
                          DRY_RUN_LOGS, argv[optind]);
        }
    }
done:
  keys_dispose (&keys);
  if (ret < 0)
    return cli_fail ("logs", &err, cli_status_for (&err));
  return 0;
}
