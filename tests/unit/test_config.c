/* test_config.c - runner.json: defaults, every field, templates, resources, credentials */
#include "support.h"

#include "config.h"
#include "plan.h"
#include "fs.h"
#include "job.h"
#include "jsonx.h"
#include "registry.h"
#include "spec.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static char *tmp;     /* per-test directory */
static char cfg[600]; /* tmp/runner.json */

static int
setup (void **state)
{
  (void) state;
  tmp = t_tmpdir ();
  snprintf (cfg, sizeof cfg, "%s/runner.json", tmp);
  unsetenv ("BUILDVM_HOME");
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  t_tmpdir_free (tmp);
  tmp = NULL;
  unsetenv ("BUILDVM_HOME");
  return 0;
}

static void
write_json (const char *path, json_t *doc)
{
  char *s = json_dumps (doc, JSON_INDENT (2));
  assert_non_null (s);
  t_write (path, s);
  free (s);
}

/* A config whose field at `path` ("registry.url") is the JSON text `value`,
 * written to cfg. Intermediate objects are created. */
static void
write_with (const char *path, const char *value)
{
  json_t *doc = json_object (), *parent = doc, *v;
  json_error_t jerr;
  const char *dot = strchr (path, '.');

  v = json_loads (value, JSON_DECODE_ANY, &jerr);
  if (v == NULL)
    fail_msg ("bad test value %s: %s", value, jerr.text);
  if (dot != NULL)
    {
      char head[64];
      snprintf (head, sizeof head, "%.*s", (int) (dot - path), path);
      parent = json_object ();
      json_object_set_new (doc, head, parent);
      path = dot + 1;
    }
  json_object_set_new (parent, path, v);
  write_json (cfg, doc);
  json_decref (doc);
}

static struct runner_config *
load_ok (const char *path)
{
  struct runner_config *c = NULL;
  bvm_error_t err = NULL;
  if (config_load (&c, path, &err) < 0)
    fail_msg ("config_load %s: %s", path ? path : "(defaults)", bvm_error_msg (&err));
  assert_non_null (c);
  return c;
}

static void
test_defaults_without_file (void **state)
{
  struct runner_config *c;
  char want[700];
  cleanup_free char *exe = NULL;
  bvm_error_t err = NULL;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  c = load_ok (NULL);
  assert_null (c->path);
  assert_string_equal (c->home, tmp);
  snprintf (want, sizeof want, "%s/work", tmp);
  assert_string_equal (c->work_dir, want);
  snprintf (want, sizeof want, "%s/logs", tmp);
  assert_string_equal (c->log_dir, want);
  snprintf (want, sizeof want, "%s/cache", tmp);
  assert_string_equal (c->cache_dir, want);
  snprintf (want, sizeof want, "%s/state", tmp);
  assert_string_equal (c->state_dir, want);
  snprintf (want, sizeof want, "dir:%s/artifacts", tmp);
  assert_string_equal (c->artifacts, want);
  assert_string_equal (c->artifacts_dir, want + 4);
  snprintf (want, sizeof want, "spool:%s/spool", tmp);
  assert_string_equal (c->queue, want);
  assert_int_equal (c->queue_kind, CONFIG_QUEUE_SPOOL);
  assert_string_equal (c->registry.url, "http://127.0.0.1:5000");
  assert_null (c->registry.credentials);
  assert_string_equal (c->registry.repository, "apps/{app}");
  assert_string_equal (c->registry.tag, "{commit}");
  assert_int_equal (c->registry.n_extra_tags, 0);
  assert_non_null (c->registry.extra_tags);
  assert_ok (fs_exe_dir (&exe, &err), &err);
  snprintf (want, sizeof want, "%s/images", exe);
  assert_string_equal (c->images.dir, want);
  assert_string_equal (c->images.default_profile, "minimal");
  assert_string_equal (c->vm.driver, "qemu");
  assert_int_equal (c->vm.accel, VM_ACCEL_AUTO);
  assert_string_equal (c->vm.qemu, "qemu-system-x86_64");
  assert_int_equal (c->vm.boot_timeout, 60);
  assert_true (c->vm.early_boot);
  assert_int_equal (c->limits.max_vcpus, 2);
  assert_int_equal (c->limits.max_memory_mib, 2048);
  assert_int_equal (c->limits.max_disk_mib, 8192);
  assert_int_equal (c->limits.max_build_seconds, 3600);
  assert_int_equal (c->limits.max_output_bytes, 2147483648ULL);
  assert_int_equal (c->limits.max_log_bytes, 16777216);
  assert_int_equal (c->limits.max_source_bytes, 1073741824);
  assert_int_equal (c->limits.max_source_entries, 100000);
  assert_int_equal (c->limits.max_checkout_seconds, 900);
  assert_int_equal (c->limits.max_worker_memory_mib, 4096);
  /* no serve.job_seconds: the sum of the phase deadlines */
  assert_int_equal (c->serve.job_seconds, 0);
  assert_int_equal (config_job_seconds (c), 900 + 60 + 3600 + 3600);
  assert_int_equal (c->limits.max_artifacts, 10000);
  assert_int_equal (c->defaults.vcpus, 1);
  assert_int_equal (c->defaults.memory_mib, 1024);
  assert_int_equal (c->defaults.disk_mib, 2048);
  assert_int_equal (c->defaults.build_seconds, 900);
  assert_string_equal (c->policies.role, "builtin");
  assert_string_equal (c->policies.boundary, "builtin");
  snprintf (want, sizeof want, "%s/secrets", tmp);
  assert_string_equal (c->secrets.dir, want);
  snprintf (want, sizeof want, "%s/secrets/master.key", tmp);
  assert_string_equal (c->secrets.master_key, want);
  config_free (c);

  /* the master key follows a configured secrets directory */
  t_write (cfg, "{\"secrets\":{\"dir\":\"/srv/sec/\"}}");
  c = load_ok (cfg);
  assert_string_equal (c->secrets.dir, "/srv/sec");
  assert_string_equal (c->secrets.master_key, "/srv/sec/master.key");
  assert_int_equal (c->jail.mode, JAIL_MODE_AUTO);
  assert_int_equal (c->jail.uid_first, JAIL_UID_FIRST_DEFAULT);
  assert_int_equal (c->jail.uid_count, JAIL_UID_COUNT_DEFAULT);
  assert_string_equal (c->jail.lock_dir, "/run/buildvm/jail-uids");
  config_free (c);

  /* an empty file is the same as no file */
  t_write (cfg, "{}");
  c = load_ok (cfg);
  assert_string_equal (c->path, cfg);
  assert_string_equal (c->home, tmp);
  config_free (c);
}

/* Run config_default_home as `uid` in a child with the given environment;
 * returns its result or "ERR: message" (a malloc'd string). */
static char *
default_home_as (uid_t uid, const char *home, const char *xdg)
{
  int fds[2];
  pid_t pid;
  char buf[1024];
  ssize_t n;
  size_t used = 0;
  int st;

  assert_int_equal (pipe (fds), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    {
      char *out = NULL;
      bvm_error_t err = NULL;
      close (fds[0]);
      unsetenv ("BUILDVM_HOME");
      home ? setenv ("HOME", home, 1) : unsetenv ("HOME");
      xdg ? setenv ("XDG_STATE_HOME", xdg, 1) : unsetenv ("XDG_STATE_HOME");
      if (uid != geteuid () && setuid (uid) < 0)
        _exit (3);
      if (config_default_home (&out, &err) < 0)
        dprintf (fds[1], "ERR: %s", bvm_error_msg (&err));
      else
        dprintf (fds[1], "%s", out);
      _exit (0);
    }
  close (fds[1]);
  while ((n = read (fds[0], buf + used, sizeof buf - 1 - used)) > 0)
    used += (size_t) n;
  buf[used] = '\0';
  close (fds[0]);
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st) && WEXITSTATUS (st) == 0);
  return strdup (buf);
}

static void
test_home_resolution (void **state)
{
  struct runner_config *c;
  bvm_error_t err = NULL;
  char *h;
  (void) state;

  /* BUILDVM_HOME wins over the built-in default, trailing slashes dropped */
  {
    char env[700];
    snprintf (env, sizeof env, "%s//", tmp);
    setenv ("BUILDVM_HOME", env, 1);
    c = load_ok (NULL);
    assert_string_equal (c->home, tmp);
    config_free (c);
  }
  /* ... and the config field wins over BUILDVM_HOME */
  t_write (cfg, "{\"home\":\"/srv/bvm\",\"log_dir\":\"/var/log/bvm\"}");
  c = load_ok (cfg);
  assert_string_equal (c->home, "/srv/bvm");
  assert_string_equal (c->work_dir, "/srv/bvm/work");
  assert_string_equal (c->log_dir, "/var/log/bvm");
  assert_string_equal (c->artifacts, "dir:/srv/bvm/artifacts");
  config_free (c);

  /* a relative BUILDVM_HOME is an error naming it */
  setenv ("BUILDVM_HOME", "relative/dir", 1);
  assert_fails_with (
      config_load (&c, NULL, &err), &err,
      "environment variable `BUILDVM_HOME` must be an absolute path, got `relative/dir`");
  /* but not when the config sets home itself */
  c = load_ok (cfg);
  config_free (c);
  /* an empty BUILDVM_HOME counts as unset */
  setenv ("BUILDVM_HOME", "", 1);
  c = load_ok (NULL);
  assert_string_not_equal (c->home, "");
  config_free (c);
  unsetenv ("BUILDVM_HOME");

  if (geteuid () == 0)
    {
      h = default_home_as (0, "/root", "/x/state");
      assert_string_equal (h, "/var/lib/buildvm");
      free (h);
      /* the non-root branches, as nobody */
      h = default_home_as (65534, "/home/u", "/x/state");
      assert_string_equal (h, "/x/state/buildvm");
      free (h);
      h = default_home_as (65534, "/home/u", "relative");
      assert_string_equal (h, "/home/u/.local/state/buildvm");
      free (h);
      h = default_home_as (65534, "/home/u/", NULL);
      assert_string_equal (h, "/home/u/.local/state/buildvm");
      free (h);
    }
  else
    {
      h = default_home_as (geteuid (), "/home/u", "/x/state");
      assert_string_equal (h, "/x/state/buildvm");
      free (h);
      h = default_home_as (geteuid (), "/home/u", NULL);
      assert_string_equal (h, "/home/u/.local/state/buildvm");
      free (h);
    }
}

static char *
example_path (void)
{
  char *exe = NULL, *p = NULL;
  bvm_error_t err = NULL;

  if (access ("examples/runner.json", R_OK) == 0)
    return strdup ("examples/runner.json");
  /* build/tests/test_config -> ../../examples */
  assert_ok (fs_exe_dir (&exe, &err), &err);
  assert_true (asprintf (&p, "%s/../../examples/runner.json", exe) > 0);
  free (exe);
  return p;
}

static void
test_example_loads_and_round_trips (void **state)
{
  char *path = example_path ();
  struct runner_config *c;
  json_t *file, *out;
  bvm_error_t err = NULL;
  (void) state;

  c = load_ok (path);
  assert_string_equal (c->home, "/var/lib/buildvm");
  assert_string_equal (c->registry.url, "http://127.0.0.1:5000");
  /* every field is in the example and equals the effective value */
  assert_ok (jsonx_parse_file (&file, path, CONFIG_MAX_BYTES, &err), &err);
  out = config_to_json (c);
  assert_non_null (out);
  if (!json_equal (file, out))
    {
      char *s = json_dumps (out, JSON_INDENT (2) | JSON_SORT_KEYS);
      fail_msg ("config_to_json differs from the example:\n%s", s);
    }
  /* and config_to_json output loads back to the same config */
  write_json (cfg, out);
  config_free (c);
  c = load_ok (cfg);
  {
    json_t *again = config_to_json (c);
    assert_true (json_equal (again, out));
    json_decref (again);
  }
  json_decref (out);
  json_decref (file);
  config_free (c);
  free (path);
}

struct field_case
{
  const char *path;
  const char *value;
  const char *needle; /* NULL = must load */
};

static const struct field_case cases[] = {
  /* good */
  { "home", "\"/\"", NULL },
  { "work_dir", "\"/w/\"", NULL },
  { "artifacts", "\"dir:/srv/artifacts\"", NULL },
  { "registry.url", "\"https://registry.example.com\"", NULL },
  { "registry.url", "\"http://[::1]:5000/\"", NULL },
  { "registry.credentials", "null", NULL },
  { "registry.job_tickets", "null", NULL },
  { "registry.job_tickets", "\"relative/ticket.key\"",
    "field `registry.job_tickets` must be an absolute path" },
  { "registry.job_tickets", "\"/nonexistent/ticket.key\"", "field `registry.job_tickets`" },
  /* token_server: read by `buildvm token-server` */
  { "token_server", "{}", NULL },
  { "token_server.listen", "\"[::1]:8586\"", NULL },
  { "token_server.listen", "\"0.0.0.0\"", "field `token_server.listen`" },
  { "token_server.signing_key", "\"/etc/buildvm/token.key\"", NULL },
  { "token_server.signing_key", "null", NULL },
  { "token_server.ticket_key", "\"key\"",
    "field `token_server.ticket_key` must be an absolute path" },
  { "token_server.issuer", "\"\"", "field `token_server.issuer`" },
  { "token_server.service", "\"a\\nb\"", "field `token_server.service`" },
  { "token_server.token_seconds", "59", "token_seconds" },
  { "token_server.token_seconds", "3600", NULL },
  { "token_server.max_connections", "0", "max_connections" },
  { "token_server.timeout_seconds", "301", "timeout_seconds" },
  { "token_server.realm", "\"x\"", "unknown field `token_server.realm`" },
  { "registry.repository", "\"{app}\"", NULL },
  { "registry.repository", "\"team/apps/{app}\"", NULL },
  { "registry.repository", "\"apps/{app}-{short_commit}\"", NULL },
  { "registry.repository", "\"x/{app}_{commit}\"", NULL },
  { "registry.tag", "\"{ref_name}\"", NULL },
  { "registry.tag", "\"{id}\"", NULL },
  { "registry.tag", "\"{short_commit}-{app}\"", NULL },
  { "registry.tag", "\"build-{commit}\"", NULL },
  { "registry.extra_tags", "[\"latest\",\"{ref_name}\",\"{app}.{short_commit}\"]", NULL },
  { "images.dir", "\"/opt/images\"", NULL },
  { "images.default_profile", "\"debian\"", NULL },
  { "vm.accel", "\"kvm\"", NULL },
  { "vm.accel", "\"tcg\"", NULL },
  { "vm.qemu", "\"/usr/bin/qemu-system-x86_64\"", NULL },
  { "vm.qemu", "\"qemu-kvm\"", NULL },
  { "vm.boot_timeout", "600", NULL },
  { "vm.early_boot", "false", NULL },
  { "limits.max_vcpus", "1024", NULL },
  { "limits.max_log_bytes", "4096", NULL },
  { "defaults.build_seconds", "3600", NULL },
  { "policies.role", "\"/etc/buildvm/build-role.json\"", NULL },
  { "policies.boundary", "\"builtin\"", NULL },
  { "queue", "\"redis://127.0.0.1:6379/buildvm?group=runners\"", NULL },
  { "queue", "\"redis://localhost\"", NULL },
  { "queue", "\"spool:/var/spool/buildvm\"", NULL },
  /* serve.name is a queue consumer name (queue_consumer_problem) */
  { "serve.name", "\"build-7.a_b:c@d\"", NULL },
  { "serve.name", "\"a b\"", "field `serve.name` may only hold letters, digits and ._:@-" },
  { "serve.name", "\"a/b\"", "field `serve.name` may only hold letters" },
  { "serve.name", "\"\"", "field `serve.name` is empty" },
  /* serve.pool: shapes of pre-booted VMs */
  { "serve.pool", "[]", NULL },
  { "serve.pool", "[{}]", NULL },
  { "serve.pool", "[{\"profile\": \"minimal\", \"vcpus\": 2, \"memory_mib\": 512, \"size\": 4}]",
    NULL },
  { "serve.pool", "{}", "field `serve.pool` must be an array of pool shapes" },
  { "serve.pool", "[1]", "field `serve.pool[]` must be an object" },
  { "serve.pool", "[{\"profile\": \"Bad/Name\"}]", "serve.pool[].profile" },
  { "serve.pool", "[{\"size\": 65}]", "size" },
  { "serve.pool", "[{\"vcpus\": 0}]", "vcpus" },
  { "serve.pool", "[{\"disk_mib\": 10}]", "disk_mib" },
  { "serve.pool", "[{},{},{},{},{},{},{},{},{}]", "has more than 8 shapes" },
  { "serve.pool_max_age_seconds", "60", NULL },
  { "serve.pool_max_age_seconds", "5", "pool_max_age_seconds" },
  { "secrets.dir", "\"/srv/secrets\"", NULL },
  { "secrets.master_key", "\"/run/keys/buildvm.key\"", NULL },
  { "attest.key", "\"/run/keys/buildvm-signing.pem\"", NULL },
  { "attest.builder_id", "\"https://ci.example/runners/7\"", NULL },
  { "jail.enabled", "\"on\"", NULL },
  { "jail.enabled", "\"off\"", NULL },
  { "jail.uid_range", "[1000, 64534]", NULL },
  { "jail.uid_range", "[65536, 1]", NULL },
  { "jail.uid_range", "[4294967294, 1]", NULL },
  { "jail.lock_dir", "\"/var/lib/buildvm/uids/\"", NULL },

  /* bad: top level and paths */
  { "registy", "{}", "unknown field `registy`" },
  { "home", "\"var/lib/buildvm\"",
    "field `home` must be an absolute path, got `var/lib/buildvm`" },
  { "home", "1", "field `home` must be a string, not an integer" },
  { "work_dir", "\"/a\\nb\"", "field `work_dir` must not contain control characters" },
  { "log_dir", "\"logs\"", "field `log_dir` must be an absolute path" },
  { "cache_dir", "[]", "field `cache_dir` must be a string" },
  { "state_dir", "\"\"", "field `state_dir` must be an absolute path" },
  { "artifacts", "\"s3://bucket/x\"",
    "field `artifacts` is not a usable s3 URL: s3 store: `endpoint` must be" },
  { "artifacts", "\"gcs://bucket/x\"",
    "field `artifacts` must be `dir:` followed by an absolute directory, or an `s3://` URL" },
  { "artifacts", "\"dir:relative\"", "field `artifacts` must be `dir:`" },
  { "artifacts", "\"/srv/artifacts\"", "field `artifacts` must be `dir:`" },
  /* registry */
  { "registry", "\"http://x\"", "field `registry` must be an object, not a string" },
  { "registry.mirror", "\"x\"", "unknown field `registry.mirror`" },
  { "registry.url", "\"ftp://x\"",
    "field `registry.url` must start with `http://` or `https://`" },
  { "registry.url", "\"127.0.0.1:5000\"", "field `registry.url` must start with" },
  { "registry.url", "\"http://u:p@host\"", "field `registry.url` must not contain credentials" },
  { "registry.url", "\"http://host/v2\"",
    "field `registry.url` must be `scheme://host[:port]` without a path" },
  { "registry.url", "\"http://host?x\"", "without a path" },
  { "registry.url", "\"http://host:0\"", "field `registry.url` has an invalid port" },
  { "registry.url", "\"http://host:65536\"", "has an invalid port" },
  { "registry.url", "\"http://\"", "field `registry.url` has no host" },
  { "registry.url", "\"http://ho st\"", "has an invalid host name" },
  { "registry.url", "5000", "field `registry.url` must be a string" },
  { "registry.credentials", "\"creds.json\"",
    "field `registry.credentials` must be an absolute path" },
  { "registry.credentials", "\"/nonexistent/creds.json\"",
    "field `registry.credentials`: stat `/nonexistent/creds.json`: No such file" },
  { "registry.credentials", "5", "field `registry.credentials` must be a string" },
  { "registry.repository", "\"apps\"", "field `registry.repository` must contain `{app}`" },
  { "registry.repository", "\"apps/{commit}\"", "must contain `{app}`" },
  { "registry.repository", "\"apps/{app}/{ref_name}\"",
    "field `registry.repository` `apps/{app}/{ref_name}` can expand to `apps/a/A`, which is not a valid repository name" },
  { "registry.repository", "\"apps/{app}/{id}\"", "which is not a valid repository name" },
  { "registry.repository", "\"{app}/{app}/{app}/{app}/{app}\"",
    "which is not a valid repository name" },
  { "registry.repository", "\"apps/{application}\"",
    "field `registry.repository` has an unknown placeholder" },
  { "registry.repository", "\"apps/{app\"", "has an unterminated `{`" },
  { "registry.repository", "\"apps/app}{app}\"", "has a `}` without `{`" },
  { "registry.repository", "\"Apps/{app}\"", "not a valid repository name" },
  { "registry.repository", "\"apps//{app}\"", "not a valid repository name" },
  { "registry.repository", "\"apps/{app}-\"", "not a valid repository name" },
  { "registry.repository", "\"/{app}\"", "not a valid repository name" },
  { "registry.repository", "\"\"", "field `registry.repository` must be 1 to 255 bytes" },
  { "registry.tag", "\"latest\"",
    "field `registry.tag` must contain a placeholder such as `{commit}`" },
  { "registry.tag", "\"{app}/{commit}\"",
    "field `registry.tag` `{app}/{commit}` can expand to `a/0123456789abcdef0123456789abcdef01234567`, which is not a valid tag name" },
  { "registry.tag", "\"{id}-{commit}\"", "which is not a valid tag name" },
  { "registry.tag", "\"v{ref_name}\"", "which is not a valid tag name" },
  { "registry.tag", "\".{commit}\"", "which is not a valid tag name" },
  { "registry.tag", "\"{commit}:{app}\"", "which is not a valid tag name" },
  { "registry.tag", "\"{nope}\"", "has an unknown placeholder" },
  { "registry.extra_tags", "\"latest\"", "field `registry.extra_tags` must be an array" },
  { "registry.extra_tags", "[1]", "field `registry.extra_tags[0]` must be a string" },
  { "registry.extra_tags", "[\"latest\",\"latest\"]",
    "field `registry.extra_tags[1]` repeats a tag" },
  { "registry.extra_tags", "[\"bad tag\"]",
    "field `registry.extra_tags[0]` `bad tag` can expand to `bad tag`" },
  { "registry.extra_tags",
    "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]",
    "field `registry.extra_tags` has more than 16 items" },
  /* images, vm */
  { "images.dir", "\"images\"", "field `images.dir` must be an absolute path" },
  { "images.default_profile", "\"Bad\"", "field `images.default_profile` must match" },
  { "images.kernel", "\"/x\"", "unknown field `images.kernel`" },
  { "vm.driver", "\"firecracker\"", "field `vm.driver` must be `qemu`, got `firecracker`" },
  { "vm.accel", "\"hvf\"", "field `vm.accel` must be `auto`, `kvm` or `tcg`, got `hvf`" },
  { "vm.accel", "true", "field `vm.accel` must be a string" },
  { "vm.qemu", "\"qemu system\"", "field `vm.qemu` must be a command name" },
  { "vm.qemu", "\"../bin/qemu\"", "field `vm.qemu` must be a command name" },
  { "vm.qemu", "\"-qemu\"", "field `vm.qemu` must be a command name" },
  { "vm.boot_timeout", "0", "field `vm.boot_timeout` is 0, outside the range 1..600" },
  { "vm.boot_timeout", "601", "field `vm.boot_timeout` is 601" },
  { "vm.boot_timeout", "\"60\"", "field `vm.boot_timeout` must be an integer" },
  { "vm.early_boot", "\"no\"", "field `vm.early_boot` must be" },
  { "vm.kernel_cmdline_extra", "\"init=/bin/sh\"", "unknown field `vm.kernel_cmdline_extra`" },
  /* limits, defaults */
  { "limits", "[]", "field `limits` must be an object" },
  { "limits.max_vcpus", "0", "field `limits.max_vcpus` is 0, outside the range 1..1024" },
  { "limits.max_vcpus", "1025", "field `limits.max_vcpus` is 1025" },
  { "limits.max_vcpus", "-1", "field `limits.max_vcpus` is -1" },
  { "limits.max_vcpus", "\"2\"", "field `limits.max_vcpus` must be an integer, not a string" },
  { "limits.max_vcpus", "2.0", "field `limits.max_vcpus` must be an integer, not a number" },
  { "limits.max_memory_mib", "63", "field `limits.max_memory_mib` is 63" },
  { "limits.max_disk_mib", "0", "field `limits.max_disk_mib` is 0" },
  { "limits.max_build_seconds", "604801", "field `limits.max_build_seconds` is 604801" },
  { "limits.max_output_bytes", "0", "field `limits.max_output_bytes` is 0" },
  { "limits.max_log_bytes", "100", "field `limits.max_log_bytes` is 100" },
  { "limits.max_source_bytes", "0", "field `limits.max_source_bytes` is 0" },
  { "limits.max_source_entries", "100000001", "field `limits.max_source_entries` is 100000001" },
  { "limits.max_artifacts", "100001", "field `limits.max_artifacts` is 100001" },
  { "limits.max_artifacts", "0", "field `limits.max_artifacts` is 0" },
  { "limits.max_gpus", "1", "unknown field `limits.max_gpus`" },
  { "defaults.memory_mib", "4096",
    "field `defaults.memory_mib` is 4096, above `limits.max_memory_mib` (2048)" },
  { "defaults.vcpus", "4", "field `defaults.vcpus` is 4, above `limits.max_vcpus` (2)" },
  { "defaults.disk_mib", "9000", "above `limits.max_disk_mib`" },
  { "defaults.build_seconds", "3601", "above `limits.max_build_seconds`" },
  { "defaults.vcpus", "0", "field `defaults.vcpus` is 0" },
  { "defaults.timeout", "1", "unknown field `defaults.timeout`" },
  /* policies, queue */
  { "policies.role", "\"role.json\"",
    "field `policies.role` must be `builtin` or an absolute path" },
  { "policies.boundary", "1", "field `policies.boundary` must be a string" },
  { "policies.extra", "1", "unknown field `policies.extra`" },
  { "queue", "\"amqp://x\"",
    "field `queue` must be `spool:/dir` or `redis://host:port/stream?group=name`" },
  { "queue", "\"spool:rel\"", "field `queue` must be `spool:` followed by an absolute directory" },
  { "queue", "\"redis://u:p@h:6379\"", "field `queue` must not contain credentials" },
  { "queue", "\"redis://h:70000\"", "field `queue` has an invalid port" },
  { "queue", "\"redis://h/a/b\"", "field `queue` has an invalid stream name" },
  { "queue", "\"redis://h/s?x=1\"", "field `queue` may only have the query `?group=NAME`" },
  { "queue", "\"redis://h/s?group=\"", "may only have the query" },
  { "queue", "\"redis://h/s#x\"", "has trailing characters" },
  { "queue", "{}", "field `queue` must be a string" },
  /* secrets */
  { "secrets", "\"/srv\"", "field `secrets` must be an object" },
  { "secrets.dir", "\"secrets\"", "field `secrets.dir` must be an absolute path" },
  { "secrets.master_key", "\"master.key\"",
    "field `secrets.master_key` must be an absolute path" },
  { "secrets.master_key", "null", "field `secrets.master_key` must be a string" },
  { "secrets.kms", "\"x\"", "unknown field `secrets.kms`" },
  /* attest */
  { "attest.key", "\"key.pem\"", "field `attest.key` must be an absolute path" },
  { "attest.builder_id", "\"\"", "field `attest.builder_id` is empty" },
  { "attest.builder_id", "\"a\\u001bb\"", "must not contain control characters" },
  { "attest.cosign", "true", "unknown field `attest.cosign`" },
  /* jail */
  { "jail.enabled", "\"yes\"", "field `jail.enabled` must be `auto`, `on` or `off`" },
  { "jail.enabled", "true", "field `jail.enabled` must be a string" },
  { "jail.uid_range", "[100000]", "field `jail.uid_range` must be [first, count]" },
  { "jail.uid_range", "[1, 2, 3]", "field `jail.uid_range` must be [first, count]" },
  { "jail.uid_range", "[\"1\", 2]", "field `jail.uid_range` must be [first, count]" },
  { "jail.uid_range", "{}", "field `jail.uid_range` must be an array" },
  { "jail.uid_range", "[0, 65536]", "first >= 1000" },
  { "jail.uid_range", "[999, 10]", "first >= 1000" },
  { "jail.uid_range", "[100000, 0]", "count 1 to 16777216" },
  { "jail.uid_range", "[100000, 16777217]", "count 1 to 16777216" },
  { "jail.uid_range", "[4294967295, 1]", "below 4294967295" },
  { "jail.uid_range", "[4294967290, 6]", "below 4294967295" },
  { "jail.uid_range", "[-5, 10]", "first >= 1000" },
  { "jail.uid_range", "[60000, 10000]", "must not contain 65534" },
  { "jail.uid_range", "[65535, 5]", "must not contain 65534" },
  { "jail.lock_dir", "\"run/uids\"", "field `jail.lock_dir` must be an absolute path" },
  { "jail.uids", "1", "unknown field `jail.uids`" },
  /* checkout */
  { "checkout.allow_addresses", "[\"10.0.0.0/8\", \"127.0.0.1\"]", NULL },
  { "checkout.allow_addresses", "[\"10.0.0.1/8\"]", "field `checkout.allow_addresses[0]`" },
  { "checkout.allow_addresses", "[\"git.example.com\"]", "field `checkout.allow_addresses[0]`" },
  { "checkout.allow_addresses", "\"10.0.0.0/8\"", "checkout.allow_addresses" },
  { "checkout.proxy", "\"x\"", "unknown field `checkout.proxy`" },
};

static void
test_field_table (void **state)
{
  (void) state;
  setenv ("BUILDVM_HOME", tmp, 1);
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct runner_config *c = NULL;
      bvm_error_t err = NULL;
      int r;

      write_with (cases[i].path, cases[i].value);
      r = config_load (&c, cfg, &err);
      if (cases[i].needle == NULL)
        {
          if (r < 0)
            fail_msg ("%s = %s: %s", cases[i].path, cases[i].value, bvm_error_msg (&err));
          config_free (c);
          continue;
        }
      if (r >= 0)
        fail_msg ("%s = %s loaded, expected \"%s\"", cases[i].path, cases[i].value,
                  cases[i].needle);
      assert_null (c);
      if (strstr (bvm_error_msg (&err), cases[i].needle) == NULL)
        fail_msg ("%s = %s: error \"%s\" does not contain \"%s\"", cases[i].path, cases[i].value,
                  bvm_error_msg (&err), cases[i].needle);
      /* every error names the file */
      if (strstr (bvm_error_msg (&err), cfg) == NULL)
        fail_msg ("error \"%s\" does not name the file", bvm_error_msg (&err));
      bvm_error_free (&err);
    }
}

static void
test_document_attacks (void **state)
{
  struct runner_config *c = NULL;
  bvm_error_t err = NULL;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  t_write (cfg, "{\"vm\":{\"accel\":\"kvm\",\"accel\":\"tcg\"}}");
  assert_fails_with (config_load (&c, cfg, &err), &err, "duplicate");
  t_write (cfg, "{\"home\":\"/\xff\"}");
  assert_fails_with (config_load (&c, cfg, &err), &err, "not valid JSON");
  t_write (cfg, "{\"home\":\"/a\\u0000b\"}");
  assert_fails_with (config_load (&c, cfg, &err), &err, "not valid JSON");
  t_write (cfg, "[]");
  assert_fails_with (config_load (&c, cfg, &err), &err, "must be a JSON object");
  t_write (cfg, "");
  assert_fails_with (config_load (&c, cfg, &err), &err, "not valid JSON");
  {
    char deep[200];
    size_t o = (size_t) snprintf (deep, sizeof deep, "{\"registry\":{\"extra_tags\":");
    for (int i = 0; i < 40; i++)
      deep[o++] = '[';
    for (int i = 0; i < 40; i++)
      deep[o++] = ']';
    memcpy (deep + o, "}}", 3);
    t_write (cfg, deep);
    assert_fails_with (config_load (&c, cfg, &err), &err, "nests deeper");
  }
  {
    size_t n = CONFIG_MAX_BYTES + 1;
    char *big = malloc (n + 1);
    memset (big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    t_write (cfg, big);
    assert_fails_with (config_load (&c, cfg, &err), &err, "larger than 1048576");
    /* at the cap it loads */
    big[n - 1] = ' ';
    big[n - 2] = '}';
    big[n - 1] = '\0';
    t_write (cfg, big);
    c = load_ok (cfg);
    config_free (c);
    c = NULL;
    free (big);
  }
  {
    char missing[700];
    snprintf (missing, sizeof missing, "%s/nope.json", tmp);
    assert_fails_with (config_load (&c, missing, &err), &err, "No such file");
    assert_fails_with (config_load (&c, tmp, &err), &err, "not a regular file");
  }
  assert_null (c);
}

/* --- resources ------------------------------------------------------------------- */

static struct build_spec *
spec_of (const char *json)
{
  struct build_spec *s = NULL;
  bvm_error_t err = NULL;
  assert_ok (spec_parse (&s, json, strlen (json), &err), &err);
  return s;
}

static void
test_resources (void **state)
{
  struct runner_config *c;
  struct build_spec *s;
  struct job_resources r;
  bvm_error_t err = NULL;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  c = load_ok (NULL);

  /* no spec: the defaults */
  assert_ok (plan_resolve_resources (&r, c, NULL, &err), &err);
  assert_int_equal (r.vcpus, 1);
  assert_int_equal (r.memory_mib, 1024);
  assert_int_equal (r.disk_mib, 2048);
  assert_int_equal (r.timeout, 900);

  /* a spec without resources: the defaults too */
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"make\"]}");
  assert_ok (plan_resolve_resources (&r, c, s, &err), &err);
  assert_int_equal (r.memory_mib, 1024);
  spec_free (s);

  /* some given, some defaulted, exactly at the limits */
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[{\"run\":\"x\",\"timeout\":3600}],"
               "\"resources\":{\"vcpus\":2,\"memory_mib\":2048,\"timeout\":3600}}");
  assert_ok (plan_resolve_resources (&r, c, s, &err), &err);
  assert_int_equal (r.vcpus, 2);
  assert_int_equal (r.memory_mib, 2048);
  assert_int_equal (r.disk_mib, 2048);
  assert_int_equal (r.timeout, 3600);
  spec_free (s);

  /* over any limit: a clear error, never clamped */
  r.memory_mib = 7;
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"x\"],\"resources\":{\"memory_mib\":65536}}");
  assert_fails_with (
      plan_resolve_resources (&r, c, s, &err), &err,
      "`buildvm.json`: resources.memory_mib 65536 exceeds the runner limit of 2048");
  assert_int_equal (r.memory_mib, 7); /* *out untouched on failure */
  spec_free (s);
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"x\"],\"resources\":{\"vcpus\":3}}");
  assert_fails_with (plan_resolve_resources (&r, c, s, &err), &err,
                     "resources.vcpus 3 exceeds the runner limit of 2 (`limits.max_vcpus`)");
  spec_free (s);
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"x\"],\"resources\":{\"disk_mib\":8193}}");
  assert_fails_with (plan_resolve_resources (&r, c, s, &err), &err,
                     "resources.disk_mib 8193 exceeds the runner limit of 8192");
  spec_free (s);
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"x\"],\"resources\":{\"timeout\":3601}}");
  assert_fails_with (plan_resolve_resources (&r, c, s, &err), &err,
                     "resources.timeout 3601 exceeds the runner limit of 3600");
  spec_free (s);
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"a\",{\"run\":\"x\",\"timeout\":7200}]}");
  assert_fails_with (plan_resolve_resources (&r, c, s, &err), &err,
                     "`buildvm.json`: steps[1].timeout 7200 exceeds the runner limit of 3600");
  spec_free (s);
  config_free (c);

  /* limits from the file apply */
  t_write (cfg, "{\"limits\":{\"max_vcpus\":8,\"max_memory_mib\":65536},"
                "\"defaults\":{\"vcpus\":4}}");
  c = load_ok (cfg);
  s = spec_of ("{\"profile\":\"minimal\",\"steps\":[\"x\"],\"resources\":{\"memory_mib\":65536}}");
  assert_ok (plan_resolve_resources (&r, c, s, &err), &err);
  assert_int_equal (r.memory_mib, 65536);
  assert_int_equal (r.vcpus, 4);
  spec_free (s);
  config_free (c);
}

/* --- destinations ------------------------------------------------------------------- */

static struct job_request *
job_of (const char *app, const char *ref, const char *id)
{
  struct job_request *j = NULL;
  bvm_error_t err = NULL;
  char doc[1024];
  snprintf (doc, sizeof doc,
            "{\"id\":\"%s\",\"app\":\"%s\",\"repo\":\"/srv/git/x\",\"commit\":\"" COMMIT "\","
            "\"ref\":\"%s\"}",
            id, app, ref);
  assert_ok (job_parse (&j, doc, strlen (doc), &err), &err);
  return j;
}

static void
expect_dest (const struct runner_config *c, const struct job_request *j, const char *repo,
             const char *tag)
{
  char *r = NULL, *t = NULL;
  bvm_error_t err = NULL;
  assert_ok (config_expand_destination (&r, &t, c, j, &err), &err);
  assert_string_equal (r, repo);
  assert_string_equal (t, tag);
  free (r);
  free (t);
}

static void
test_destinations (void **state)
{
  struct runner_config *c;
  struct job_request *j;
  bvm_error_t err = NULL;
  char *r = NULL, *t = NULL;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  c = load_ok (NULL);
  j = job_of ("hello", "refs/heads/main", "d-1");
  expect_dest (c, j, "apps/hello", COMMIT);
  job_free (j);

  /* an app id the app grammar allows but a repository component does not */
  j = job_of ("web-", "refs/heads/main", "d-1");
  assert_fails_with (
      config_expand_destination (&r, &t, c, j, &err), &err,
      "`registry.repository` gives `apps/web-` for app `web-`, which is not a valid "
      "repository name");
  assert_null (r);
  assert_null (t);
  job_free (j);

  /* a hand-built request is checked again: nothing unvalidated reaches a name */
  {
    struct job_request fake = { .id = (char *) "d",
                                .app = (char *) "hello",
                                .repo = (char *) "/x",
                                .commit = (char *) "main",
                                .ref = (char *) "refs/heads/main",
                                .trigger = (char *) "manual" };
    assert_fails_with (config_expand_destination (&r, &t, c, &fake, &err), &err,
                       "the job request is not valid");
    fake.commit = (char *) COMMIT;
    fake.app = (char *) "../../other";
    assert_fails_with (config_expand_destination (&r, &t, c, &fake, &err), &err,
                       "the job request is not valid");
  }
  config_free (c);

  t_write (cfg, "{\"registry\":{\"repository\":\"team/{app}\",\"tag\":\"{short_commit}\","
                "\"extra_tags\":[\"{ref_name}\",\"latest\",\"{id}\",\"{app}-{short_commit}\"]}}");
  c = load_ok (cfg);
  {
    static const struct
    {
      const char *ref, *name;
    } refs[] = {
      { "refs/heads/main", "main" },
      { "refs/heads/feature/x-y", "feature-x-y" },
      { "refs/tags/v1.0", "v1.0" },
      { "refs/pull/12/head", "pull-12-head" },
      { "refs/heads/-x", "_x" },
      /* (a non-ASCII ref such as `refs/heads/café` no longer parses: job.c
       * refuses what role_mint cannot hold) */
      { "refs/heads/a+b=c", "a-b-c" },
    };
    for (size_t i = 0; i < ARRAY_SIZE (refs); i++)
      {
        char **tags = NULL;
        size_t n = 0;
        j = job_of ("hello", refs[i].ref, "Run.42");
        expect_dest (c, j, "team/hello", "0123456789ab");
        assert_ok (config_expand_extra_tags (&tags, &n, c, j, &err), &err);
        assert_int_equal (n, 4);
        assert_string_equal (tags[0], refs[i].name);
        assert_string_equal (tags[1], "latest");
        assert_string_equal (tags[2], "Run.42");
        assert_string_equal (tags[3], "hello-0123456789ab");
        assert_null (tags[4]);
        config_strv_free (tags);
        job_free (j);
      }
  }
  /* which tags can name another commit later (the tag phase's check) */
  assert_false (config_tag_mutable ("{commit}"));
  assert_false (config_tag_mutable ("v-{short_commit}"));
  assert_false (config_tag_mutable ("{ref_name}-{commit}"));
  assert_true (config_tag_mutable ("latest"));
  assert_true (config_tag_mutable ("{ref_name}"));
  assert_true (config_tag_mutable ("{id}"));
  /* a 244-byte branch name is cut to 128 bytes */
  {
    char ref[300], **tags = NULL;
    size_t n = 0;
    snprintf (ref, sizeof ref, "refs/heads/%0244d", 0);
    j = job_of ("hello", ref, "x");
    assert_ok (config_expand_extra_tags (&tags, &n, c, j, &err), &err);
    assert_int_equal (strlen (tags[0]), 128);
    config_strv_free (tags);
    job_free (j);
  }
  config_free (c);
}

/* --- credentials --------------------------------------------------------------------- */

static void
config_with_credentials (const char *content, mode_t mode)
{
  char creds[700];
  json_t *doc;

  snprintf (creds, sizeof creds, "%s/registry.json", tmp);
  t_write (creds, content);
  assert_int_equal (chmod (creds, mode), 0);
  doc = json_pack ("{s:{s:s}}", "registry", "credentials", creds);
  write_json (cfg, doc);
  json_decref (doc);
}

/* registry.job_tickets: a private file, and the token server's ticket key
 * unless token_server.ticket_key names another */
static void
test_job_tickets (void **state)
{
  struct runner_config *c = NULL;
  bvm_error_t err = NULL;
  char key[700], other[700];
  json_t *doc;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  snprintf (key, sizeof key, "%s/ticket.key", tmp);
  snprintf (other, sizeof other, "%s/other.key", tmp);
  t_write (key, "0123456789abcdef0123456789abcdef");
  assert_int_equal (chmod (key, 0644), 0);
  doc = json_pack ("{s:{s:s}}", "registry", "job_tickets", key);
  write_json (cfg, doc);
  json_decref (doc);
  assert_int_equal (config_load (&c, cfg, &err), -1);
  assert_non_null (strstr (bvm_error_msg (&err), "group or others"));
  bvm_error_free (&err);
  assert_int_equal (chmod (key, 0600), 0);
  c = load_ok (cfg);
  assert_string_equal (c->registry.job_tickets, key);
  assert_string_equal (c->token_server.ticket_key, key);
  assert_null (c->token_server.signing_key);
  assert_string_equal (c->token_server.listen, "127.0.0.1:8586");
  assert_int_equal (c->token_server.token_seconds, 300);
  config_free (c);
  doc = json_pack ("{s:{s:s}, s:{s:s}}", "registry", "job_tickets", key, "token_server",
                   "ticket_key", other);
  write_json (cfg, doc);
  json_decref (doc);
  c = load_ok (cfg);
  assert_string_equal (c->token_server.ticket_key, other);
  config_free (c);
}

static void
test_credentials (void **state)
{
  struct runner_config *c = NULL;
  struct registry_credentials *cr = NULL;
  bvm_error_t err = NULL;
  char creds[700];
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  snprintf (creds, sizeof creds, "%s/registry.json", tmp);

  /* none configured */
  c = load_ok (NULL);
  cr = (struct registry_credentials *) 1;
  assert_ok (registry_credentials_load (&cr, c->registry.credentials, &err), &err);
  assert_null (cr);
  config_free (c);

  /* 0644 and 0640 are refused when loading the config */
  config_with_credentials ("{\"username\":\"u\",\"password\":\"p\"}", 0644);
  assert_fails_with (config_load (&c, cfg, &err), &err, "field `registry.credentials`: `");
  config_with_credentials ("{\"username\":\"u\",\"password\":\"p\"}", 0644);
  assert_fails_with (config_load (&c, cfg, &err), &err,
                     "is accessible by group or others (mode 0644): chmod 600 it");
  config_with_credentials ("{\"username\":\"u\",\"password\":\"p\"}", 0640);
  assert_fails_with (config_load (&c, cfg, &err), &err, "(mode 0640)");
  config_with_credentials ("{\"username\":\"u\",\"password\":\"p\"}", 0604);
  assert_fails_with (config_load (&c, cfg, &err), &err, "(mode 0604)");

  /* 0600 is accepted; username/password */
  config_with_credentials ("{\"username\":\"buildvm\",\"password\":\"s3cret\"}", 0600);
  c = load_ok (cfg);
  assert_string_equal (c->registry.credentials, creds);
  assert_ok (registry_credentials_load (&cr, c->registry.credentials, &err), &err);
  assert_string_equal (cr->username, "buildvm");
  assert_string_equal (cr->password, "s3cret");
  assert_null (cr->token);
  registry_credentials_free (cr);
  /* the config never shows the secrets, only the path */
  {
    json_t *j = config_to_json (c);
    char *s = json_dumps (j, 0);
    assert_null (strstr (s, "s3cret"));
    assert_non_null (strstr (s, creds));
    free (s);
    json_decref (j);
  }

  /* the mode is checked again, on the open file, when reading */
  assert_int_equal (chmod (creds, 0644), 0);
  assert_fails_with (registry_credentials_load (&cr, c->registry.credentials, &err), &err,
                     "is accessible by group or others (mode 0644)");
  assert_int_equal (chmod (creds, 0400), 0);

  /* token form */
  t_write (creds, "{\"token\":\"tok-123\"}");
  assert_ok (registry_credentials_load (&cr, c->registry.credentials, &err), &err);
  assert_null (cr->username);
  assert_string_equal (cr->token, "tok-123");
  registry_credentials_free (cr);

  /* malformed: never quote the content */
  {
    static const struct
    {
      const char *content, *needle;
    } bad[] = {
      { "{\"username\":\"u\"}", "must have either `username` and `password`, or `token`" },
      { "{\"password\":\"hunter2\"}", "must have either" },
      { "{\"username\":\"u\",\"password\":\"hunter2\",\"token\":\"t\"}", "must have either" },
      { "{}", "must have either" },
      { "{\"username\":\"u\",\"password\":\"\"}", "has an empty value" },
      { "{\"token\":\"\"}", "has an empty value" },
      { "{\"username\":\"u\\n\",\"password\":\"hunter2\"}", "control characters" },
      { "{\"user\":\"u\",\"password\":\"hunter2\"}", "unknown field `user`" },
      { "{\"username\":\"u\",\"password\":7}", "field `password` must be a string" },
      { "{\"username\":\"u\",\"password\":\"hunter2\"",
        "is not a valid JSON object (details withheld" },
      { "{\"token\":hunter2}", "details withheld" },
      { "{\"token\":\"hunter2\",\"token\":\"hunter2\"}", "details withheld" },
      { "[\"hunter2\"]", "must be a JSON object" },
    };
    for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
      {
        assert_int_equal (chmod (creds, 0600), 0);
        t_write (creds, bad[i].content);
        cr = NULL;
        if (registry_credentials_load (&cr, c->registry.credentials, &err) >= 0)
          fail_msg ("credentials %s loaded", bad[i].content);
        assert_null (cr);
        if (strstr (bvm_error_msg (&err), bad[i].needle) == NULL)
          fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), bad[i].needle);
        if (strstr (bvm_error_msg (&err), "hunter2") != NULL)
          fail_msg ("error \"%s\" shows the secret", bvm_error_msg (&err));
        bvm_error_free (&err);
      }
  }

  /* too big, not a regular file, gone */
  {
    char *big = malloc (REGISTRY_CREDENTIALS_MAX + 2);
    memset (big, ' ', REGISTRY_CREDENTIALS_MAX + 1);
    big[REGISTRY_CREDENTIALS_MAX + 1] = '\0';
    t_write (creds, big);
    free (big);
    assert_fails_with (registry_credentials_load (&cr, c->registry.credentials, &err), &err,
                       "larger than 65536");
  }
  unlink (creds);
  assert_fails_with (registry_credentials_load (&cr, c->registry.credentials, &err), &err,
                     "No such file");
  assert_int_equal (mkdir (creds, 0700), 0);
  assert_fails_with (registry_credentials_load (&cr, c->registry.credentials, &err), &err,
                     "is not a regular file");
  rmdir (creds);

  /* owned by someone else (only testable as root) */
  if (geteuid () == 0)
    {
      t_write (creds, "{\"token\":\"t\"}");
      assert_int_equal (chmod (creds, 0600), 0);
      assert_int_equal (chown (creds, 12345, 12345), 0);
      assert_fails_with (registry_credentials_load (&cr, c->registry.credentials, &err), &err,
                         "is owned by uid 12345");
    }
  config_free (c);
}

/* --- webhook and apps (docs/webhooks.md) --- */

#define APP_OK                                                                                    \
  "{\"app\":\"hello\",\"repo\":\"file:///srv/git/hello.git\",\"secret_file\":\"/etc/s\""
static const struct field_case webhook_cases[] = {
  { "webhook.listen", "\"[::1]:9000\"", NULL },
  { "webhook.listen", "\"0.0.0.0:80\"", NULL },
  { "webhook.max_body_bytes", "1024", NULL },
  { "webhook.max_connections", "1024", NULL },
  { "webhook.timeout_seconds", "300", NULL },
  { "webhook.replay_window", "16", NULL },
  { "apps", "[]", NULL },
  { "apps", "[" APP_OK "}]", NULL },
  { "apps",
    "[" APP_OK ",\"match\":[\"acme/hello\",\"https://git.example/acme/hello.git\"],"
    "\"branches\":[\"main\",\"release/1.x\"]}]",
    NULL },
  /* one repository, two apps on different branches */
  { "apps",
    "[" APP_OK ",\"match\":[\"acme/hello\"]},{\"app\":\"hello-staging\",\"repo\":"
    "\"file:///srv/git/hello.git\",\"secret_file\":\"/etc/s\",\"match\":[\"acme/hello\"],"
    "\"branches\":[\"staging\"]}]",
    NULL },

  { "webhook.listen", "\"localhost:8585\"",
    "field `webhook.listen`: listen address `localhost:8585` must be `IPv4:PORT`" },
  { "webhook.listen", "\"127.0.0.1\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"127.0.0.1:0\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"127.0.0.1:08585\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"127.0.0.1:65536\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\":8585\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"127.1:8585\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"::1:8585\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "\"[::1]8585\"", "field `webhook.listen`: listen address" },
  { "webhook.listen", "8585", "field `webhook.listen` must be a string" },
  { "webhook.max_body_bytes", "1023",
    "field `webhook.max_body_bytes` is 1023, outside the range 1024..67108864" },
  { "webhook.max_body_bytes", "67108865", "field `webhook.max_body_bytes` is 67108865" },
  { "webhook.max_connections", "0", "field `webhook.max_connections` is 0" },
  { "webhook.timeout_seconds", "301", "field `webhook.timeout_seconds` is 301" },
  { "webhook.replay_window", "15", "field `webhook.replay_window` is 15" },
  { "webhook.port", "1", "unknown field `webhook.port`" },
  { "apps", "{}", "field `apps` must be an array" },
  { "apps", "[1]", "field `apps[0]` must be an object" },
  { "apps", "[{\"app\":\"Hello\",\"repo\":\"/srv/h.git\",\"secret_file\":\"/s\"}]",
    "field `apps[0].app` must match ^[a-z0-9][a-z0-9-]{0,62}$, got `Hello`" },
  { "apps", "[{\"app\":\"hello\",\"secret_file\":\"/s\"}]",
    "missing required field `apps[0].repo`" },
  { "apps", "[{\"app\":\"hello\",\"repo\":\"ssh://git.example/h.git\",\"secret_file\":\"/s\"}]",
    "field `apps[0].repo` is not a repository a deploy request may name" },
  { "apps",
    "[{\"app\":\"hello\",\"repo\":\"https://u:p@git.example/h.git\",\"secret_file\":\"/s\"}]",
    "must not contain credentials" },
  { "apps", "[{\"app\":\"hello\",\"repo\":\"/srv/../etc\",\"secret_file\":\"/s\"}]", "`..`" },
  { "apps", "[" APP_OK ",\"match\":[]}]", "field `apps[0]` has an empty `match`" },
  { "apps", "[" APP_OK ",\"match\":[\"acme hello\"]}]",
    "field `apps[0].match[0]` must be a clone URL or a full name" },
  { "apps", "[" APP_OK ",\"match\":[\"\"]}]", "field `apps[0].match[0]`" },
  { "apps", "[" APP_OK ",\"match\":\"acme/hello\"}]", "field `apps[0].match` must be an array" },
  { "apps", "[" APP_OK ",\"branches\":[]}]", "field `apps[0]` has an empty `branches`" },
  { "apps", "[" APP_OK ",\"branches\":[\"refs/heads/main\"]}]",
    "field `apps[0].branches[0]` must be a branch name" },
  { "apps", "[" APP_OK ",\"branches\":[\"a..b\"]}]",
    "field `apps[0].branches[0]` must be a branch name" },
  { "apps", "[" APP_OK ",\"branches\":[\"x.lock\"]}]", "field `apps[0].branches[0]`" },
  { "apps", "[{\"app\":\"hello\",\"repo\":\"/srv/h.git\"}]",
    "field `apps[0]` has no `secret_file`" },
  { "apps", "[{\"app\":\"hello\",\"repo\":\"/srv/h.git\",\"secret_file\":\"s\"}]",
    "field `apps[0].secret_file` must be an absolute path" },
  { "apps", "[" APP_OK ",\"secret\":\"x\"}]", "unknown field `apps[0].secret`" },
  { "apps", "[" APP_OK ",\"match\":[\"acme/hello\",\"ACME/hello\"]}]",
    "field `apps[0]` repeats a `match` entry" },
  { "apps",
    "[" APP_OK ",\"match\":[\"acme/hello\"]},{\"app\":\"other\",\"repo\":\"/srv/o.git\","
    "\"secret_file\":\"/s\",\"match\":[\"Acme/Hello\"],\"branches\":[\"dev\",\"main\"]}]",
    "field `apps[1]` deploys a repository and branch that an earlier entry already deploys, got `Acme/Hello`" },
};

static void
test_webhook_and_apps (void **state)
{
  struct runner_config *c;
  json_t *j;
  char *s;
  (void) state;

  setenv ("BUILDVM_HOME", tmp, 1);
  for (size_t i = 0; i < ARRAY_SIZE (webhook_cases); i++)
    {
      bvm_error_t err = NULL;
      int r;

      c = NULL;
      write_with (webhook_cases[i].path, webhook_cases[i].value);
      r = config_load (&c, cfg, &err);
      if (webhook_cases[i].needle == NULL)
        {
          if (r < 0)
            fail_msg ("%s = %s: %s", webhook_cases[i].path, webhook_cases[i].value,
                      bvm_error_msg (&err));
          config_free (c);
          continue;
        }
      if (r >= 0)
        fail_msg ("%s = %s loaded, expected \"%s\"", webhook_cases[i].path, webhook_cases[i].value,
                  webhook_cases[i].needle);
      if (strstr (bvm_error_msg (&err), webhook_cases[i].needle) == NULL
          || strstr (bvm_error_msg (&err), cfg) == NULL)
        fail_msg ("%s = %s: error \"%s\" does not contain \"%s\" and the file",
                  webhook_cases[i].path, webhook_cases[i].value, bvm_error_msg (&err),
                  webhook_cases[i].needle);
      bvm_error_free (&err);
    }

  /* defaults: no webhook section, no apps */
  c = load_ok (NULL);
  assert_string_equal (c->webhook.listen, "127.0.0.1:8585");
  assert_int_equal (c->webhook.max_body_bytes, 1048576);
  assert_int_equal (c->webhook.max_connections, 32);
  assert_int_equal (c->webhook.timeout_seconds, 10);
  assert_int_equal (c->webhook.replay_window, 10000);
  assert_int_equal (c->n_apps, 0);
  config_free (c);

  /* an app's defaults: match is its own repo, branches is main; the
   * secret file is not touched by config_load (it does not exist) */
  write_with ("apps", "[" APP_OK "}]");
  c = load_ok (cfg);
  assert_int_equal (c->n_apps, 1);
  assert_string_equal (c->apps[0].app, "hello");
  assert_string_equal (c->apps[0].repo, "file:///srv/git/hello.git");
  assert_int_equal (c->apps[0].n_match, 1);
  assert_string_equal (c->apps[0].match[0], "file:///srv/git/hello.git");
  assert_null (c->apps[0].match[1]);
  assert_int_equal (c->apps[0].n_branches, 1);
  assert_string_equal (c->apps[0].branches[0], "main");
  assert_string_equal (c->apps[0].secret_file, "/etc/s");
  /* and it round-trips with the defaults written out */
  j = config_to_json (c);
  assert_non_null (j);
  s = json_dumps (json_object_get (j, "apps"), JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal (s, "[{\"app\":\"hello\",\"branches\":[\"main\"],\"match\":"
                          "[\"file:///srv/git/hello.git\"],\"repo\":\"file:///srv/git/hello.git\","
                          "\"secret_file\":\"/etc/s\"}]");
  free (s);
  write_json (cfg, j);
  json_decref (j);
  config_free (c);
  c = load_ok (cfg);
  assert_int_equal (c->n_apps, 1);
  config_free (c);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_defaults_without_file, setup, teardown),
    cmocka_unit_test_setup_teardown (test_home_resolution, setup, teardown),
    cmocka_unit_test_setup_teardown (test_example_loads_and_round_trips, setup, teardown),
    cmocka_unit_test_setup_teardown (test_field_table, setup, teardown),
    cmocka_unit_test_setup_teardown (test_document_attacks, setup, teardown),
    cmocka_unit_test_setup_teardown (test_resources, setup, teardown),
    cmocka_unit_test_setup_teardown (test_destinations, setup, teardown),
    cmocka_unit_test_setup_teardown (test_credentials, setup, teardown),
    cmocka_unit_test_setup_teardown (test_job_tickets, setup, teardown),
    cmocka_unit_test_setup_teardown (test_webhook_and_apps, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
