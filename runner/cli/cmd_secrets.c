/* cmd_secrets.c - `buildvm secrets set|list|rm|init-master-key|rotate-master-key` */
#include "cli.h"
#include "config.h"
#include "job.h"
#include "jsonx.h"
#include "redact.h"
#include "secrets.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static void
usage (FILE *out)
{
  fprintf (out,
           "usage: buildvm secrets [--config FILE] set [--strip-newline] APP NAME < VALUE\n"
           "       buildvm secrets [--config FILE] list [--json] APP\n"
           "       buildvm secrets [--config FILE] rm APP NAME\n"
           "       buildvm secrets [--config FILE] init-master-key\n"
           "       buildvm secrets [--config FILE] rotate-master-key\n"
           "\n"
           "Per-app build secrets, encrypted at rest (see docs/secrets.md). A build gets\n"
           "the secrets its buildvm.json lists, if they belong to its app.\n"
           "\n"
           "set                the value comes from standard input, never from the command\n"
           "                   line (other users can read a process's arguments). It is\n"
           "                   kept byte for byte, at most 64 KiB: use `printf %%s \"$V\"`,\n"
           "                   not `echo`, or --strip-newline to drop one trailing newline.\n"
           "                   From a terminal, one line is read without echo.\n"
           "list               names, versions and update times; never values (--json: JSON)\n"
           "rm                 remove a secret\n"
           "init-master-key    create the master key file (`secrets.master_key`)\n"
           "rotate-master-key  wrap every app's key under a new master key, which\n"
           "                   replaces the old one; the old key is kept as `KEY.old`.\n"
           "                   Stop the runner first. Resumable after an interruption.\n"
           "\n"
           "APP is an app id (^[a-z0-9][a-z0-9-]{0,62}$); NAME matches ^[A-Za-z0-9_.-]{1,64}$\n"
           "and does not start with `.`.\n"
           "  --config FILE   the runner config (default: built-in defaults, BUILDVM_HOME)\n");
}

static int
fail (bvm_error_t *err)
{
  return cli_fail ("secrets", err, cli_status_for (err));
}

/* --- reading the value ----------------------------------------------------------- */

struct value
{
  unsigned char *data; /* secrets__mem_alloc, SECRETS_VALUE_MAX + 2 */
  size_t len;
};

static void
value_dispose (struct value *v)
{
  secrets__mem_free (v->data, SECRETS_VALUE_MAX + 2);
  v->data = NULL;
}

/* From a terminal: one line without echo. Otherwise everything up to EOF,
 * failing above the cap rather than storing a cut value. */
static int
read_value (struct value *v, bool *from_tty, const char *app, const char *name, bvm_error_t *err)
{
  struct termios saved, quiet;
  bool tty = isatty (STDIN_FILENO) && tcgetattr (STDIN_FILENO, &saved) == 0;
  size_t cap = SECRETS_VALUE_MAX + 1;
  int ret = 0;

  *from_tty = tty;
  v->len = 0;
  v->data = secrets__mem_alloc (SECRETS_VALUE_MAX + 2);
  if (v->data == NULL)
    return bvm_error (err, errno, "allocating locked memory for the value");
  if (tty)
    {
      fprintf (stderr, "value of secret `%s` of app `%s` (not echoed): ", name, app);
      fflush (stderr);
      quiet = saved;
      quiet.c_lflag &= (tcflag_t) ~(ECHO | ECHONL);
      quiet.c_lflag |= ICANON;
      if (tcsetattr (STDIN_FILENO, TCSAFLUSH, &quiet) < 0)
        return bvm_error (err, errno, "turning off the terminal's echo");
    }
  while (v->len < cap)
    {
      ssize_t n = read (STDIN_FILENO, v->data + v->len, tty ? 1 : cap - v->len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          ret = bvm_error (err, errno, "reading the value from standard input");
          break;
        }
      if (n == 0)
        break;
      v->len += (size_t) n;
      if (tty && v->data[v->len - 1] == '\n')
        {
          v->len--;
          break;
        }
    }
  if (tty)
    {
      tcsetattr (STDIN_FILENO, TCSAFLUSH, &saved);
      fputc ('\n', stderr);
    }
  if (ret == 0 && v->len > SECRETS_VALUE_MAX)
    ret = bvm_error_code (err, BVM_E_LIMIT, 0,
                          "the value on standard input is larger than %d bytes",
                          SECRETS_VALUE_MAX);
  if (ret == 0 && v->len == 0)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "the value on standard input is empty");
  return ret;
}

/* --- verbs ------------------------------------------------------------------------- */

static int
do_set (struct secrets *s, const char *app, const char *name, bool strip)
{
  cleanup_error bvm_error_t err = NULL;
  struct value v = { NULL, 0 };
  unsigned version = 0;
  bool tty = false;
  int ret;

  /* validate before asking for a value that would then be refused */
  if (job_app_id_problem (app) != NULL)
    return cli_usage ("secrets", "invalid app id (^[a-z0-9][a-z0-9-]{0,62}$)");
  if (secrets_name_problem (name) != NULL)
    return cli_usage ("secrets", "invalid secret name (^[A-Za-z0-9_.-]{1,64}$, no leading `.`)");
  ret = read_value (&v, &tty, app, name, &err);
  if (ret == 0 && strip && v.len > 0 && v.data[v.len - 1] == '\n')
    {
      v.len--;
      if (v.len > 0 && v.data[v.len - 1] == '\r')
        v.len--;
      if (v.len == 0)
        ret = bvm_error_code (&err, BVM_E_INVALID, 0, "the value on standard input is empty");
    }
  if (ret == 0)
    ret = secrets_set (s, app, name, v.data, v.len, &version, &err);
  if (ret == 0 && !tty && !strip && v.data[v.len - 1] == '\n')
    fprintf (stderr, "buildvm secrets: warning: the value ends with a newline, which is stored "
                     "too (use `printf %%s` or --strip-newline)\n");
  if (ret == 0 && v.len < REDACT_MIN_LEN)
    fprintf (stderr,
             "buildvm secrets: warning: values shorter than %d bytes are not masked in "
             "build logs\n",
             REDACT_MIN_LEN);
  value_dispose (&v);
  if (ret < 0)
    {
      if (strstr (bvm_error_msg (&err), "corrupt") != NULL)
        fprintf (stderr, "hint: `buildvm secrets rm %s %s` removes it; then set it again\n", app,
                 name);
      return fail (&err);
    }
  printf ("secret `%s` of app `%s`: version %u\n", name, app, version);
  return 0;
}

static int
do_list (struct secrets *s, const char *app, bool as_json)
{
  cleanup_error bvm_error_t err = NULL;
  cleanup_json json_t *list = NULL;
  size_t i, width = 4;
  json_t *e;

  if (secrets_list (s, app, &list, &err) < 0)
    return fail (&err);
  if (as_json)
    {
      char *text = json_dumps (list, JSON_INDENT (2));
      if (text == NULL)
        {
          bvm_error (&err, ENOMEM, "formatting the list");
          return fail (&err);
        }
      printf ("%s\n", text);
      free (text);
      return 0;
    }
  json_array_foreach (list, i, e)
    {
      size_t n = strlen (json_string_value (json_object_get (e, "name")));
      width = n > width ? n : width;
    }
  printf ("%-*s  %-7s  %s\n", (int) width, "NAME", "VERSION", "UPDATED");
  json_array_foreach (list, i, e)
    printf ("%-*s  %-7lld  %s\n", (int) width, json_string_value (json_object_get (e, "name")),
            (long long) json_integer_value (json_object_get (e, "version")),
            json_string_value (json_object_get (e, "updated_at")));
  return 0;
}

static int
do_rm (struct secrets *s, const char *app, const char *name)
{
  cleanup_error bvm_error_t err = NULL;
  if (secrets_remove (s, app, name, &err) < 0)
    return fail (&err);
  printf ("removed secret `%s` of app `%s`\n", name, app);
  return 0;
}

static int
do_init (const struct runner_config *c)
{
  cleanup_error bvm_error_t err = NULL;
  char id[SECRETS_KEY_ID_HEX + 1];

  if (secrets_init_master_key (c->secrets.master_key, id, &err) < 0)
    return fail (&err);
  printf ("created master key `%s` (id %s): back it up apart from `%s`\n", c->secrets.master_key,
          id, c->secrets.dir);
  return 0;
}

/* KEY.new is made (or reused, when an earlier run was interrupted), every
 * app's KEK is wrapped under it, then KEY is kept as KEY.old and KEY.new
 * takes its place by rename: at every moment KEY is a complete key file. */
static int
do_rotate (struct secrets *s, const struct runner_config *c)
{
  cleanup_error bvm_error_t err = NULL;
  cleanup_free char *fresh = NULL;
  cleanup_free char *old = NULL;
  size_t n = 0;

  if (asprintf (&fresh, "%s.new", c->secrets.master_key) < 0
      || asprintf (&old, "%s.old", c->secrets.master_key) < 0)
    {
      fresh = old = NULL;
      bvm_error (&err, ENOMEM, "rotating the master key");
      return fail (&err);
    }
  if (access (old, F_OK) == 0)
    {
      bvm_error_code (&err, BVM_E_INVALID, 0,
                      "`%s` exists from an earlier rotation: remove it first", old);
      return fail (&err);
    }
  if (access (fresh, F_OK) < 0 && secrets_init_master_key (fresh, NULL, &err) < 0)
    return fail (&err);
  if (secrets_rotate_master_key (s, fresh, &n, &err) < 0)
    return fail (&err);
  if (link (c->secrets.master_key, old) < 0)
    {
      bvm_error (&err, errno, "keeping the old key as `%s`", old);
      return fail (&err);
    }
  if (rename (fresh, c->secrets.master_key) < 0)
    {
      bvm_error (&err, errno, "rename `%s` to `%s`", fresh, c->secrets.master_key);
      return fail (&err);
    }
  printf ("re-wrapped the keys of %zu app(s); `%s` is the new master key.\n"
          "The old key is `%s`: destroy it once no backup needs it.\n",
          n, c->secrets.master_key, old);
  return 0;
}

int
cmd_secrets (int argc, char **argv)
{
  static const struct
  {
    const char *name;
    int args;
  } subs[] = {
    { "set", 2 }, { "list", 1 }, { "rm", 2 }, { "init-master-key", 0 }, { "rotate-master-key", 0 }
  };
  cleanup_config struct runner_config *c = NULL;
  cleanup_secrets struct secrets *s = NULL;
  cleanup_error bvm_error_t err = NULL;
  const char *config = NULL, *sub;
  bool strip = false, as_json = false;
  struct rlimit no_core = { 0, 0 };
  int ch, want = -1;

  /* the values pass through this process: never into a core file */
  setrlimit (RLIMIT_CORE, &no_core);

  const struct opt opts[] = {
    OPT_STR ("config", 0, &config),
    OPT_FLAG ("strip-newline", 0, &strip),
    OPT_FLAG ("json", 0, &as_json),
    OPT_END,
  };
  if (cli_parse (argc, argv, "secrets", opts, 0, -1, usage, &ch))
    return ch;
  if (optind >= argc)
    {
      usage (stderr);
      return 2;
    }
  sub = argv[optind++];
  for (size_t i = 0; i < ARRAY_SIZE (subs); i++)
    if (strcmp (sub, subs[i].name) == 0)
      want = subs[i].args;
  if (want < 0)
    return cli_usage ("secrets", "unknown command `%s`", sub);
  if (argc - optind != want)
    return cli_usage ("secrets", "`%s` takes %d argument%s", sub, want, want == 1 ? "" : "s");
  if (strip && strcmp (sub, "set") != 0)
    return cli_usage ("secrets", "--strip-newline is for `set`");
  if (as_json && strcmp (sub, "list") != 0)
    return cli_usage ("secrets", "--json is for `list`");

  if (config_load (&c, config, &err) < 0)
    return fail (&err);
  if (strcmp (sub, "init-master-key") == 0)
    return do_init (c);
  if (secrets_open (&s, c->secrets.dir, c->secrets.master_key, &err) < 0)
    return fail (&err);
  if (strcmp (sub, "set") == 0)
    return do_set (s, argv[optind], argv[optind + 1], strip);
  if (strcmp (sub, "list") == 0)
    return do_list (s, argv[optind], as_json);
  if (strcmp (sub, "rm") == 0)
    return do_rm (s, argv[optind], argv[optind + 1]);
  return do_rotate (s, c);
}
