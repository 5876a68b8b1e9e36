/* test_spec.c - buildvm.json: every field, every bound, every document-level attack */
#include "support.h"

#include "spec.h"
#include "jsonx.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const char full_doc[]
    = "{\"version\":1,\"profile\":\"minimal\","
      "\"steps\":[\"make\",{\"name\":\"test\",\"run\":\"make check\",\"timeout\":120}],"
      "\"env\":{\"CC\":\"gcc\",\"PATH\":\"/usr/bin:/bin\"},"
      "\"resources\":{\"vcpus\":1,\"memory_mib\":512,\"disk_mib\":1024,\"timeout\":600},"
      "\"image\":{\"base\":\"base/busybox:1.36\",\"from\":\"dist/\",\"to\":\"/app\","
      "\"entrypoint\":[\"/app/server\"],\"cmd\":[\"--port\",\"8080\"],\"env\":{\"PORT\":\"8080\","
      "\"HOME\":\"/app\"},\"workdir\":\"/app\",\"user\":\"1000:1000\","
      "\"ports\":[\"8080/tcp\",\"53/udp\",\"9000\"],\"labels\":{\"org.example.team\":\"web\"}},"
      "\"artifacts\":[\"dist/*.tar.gz\",\"reports/\"],"
      "\"secrets\":[\"NPM_TOKEN\",{\"name\":\"API_KEY\",\"env\":\"API_KEY\"}]}";

/* The full spec with the field at `path` ("image.ports" for a nested one)
 * replaced by v (NULL: removed). Steals v. */
static char *
with_json (const char *path, json_t *v)
{
  json_t *doc = json_loads (full_doc, 0, NULL), *parent;
  const char *dot = strchr (path, '.');
  char head[64];
  char *s;

  assert_non_null (doc);
  parent = doc;
  if (dot != NULL)
    {
      snprintf (head, sizeof head, "%.*s", (int) (dot - path), path);
      parent = json_object_get (doc, head);
      assert_non_null (parent);
      path = dot + 1;
    }
  if (v == NULL)
    json_object_del (parent, path);
  else
    json_object_set_new (parent, path, v);
  s = json_dumps (doc, JSON_COMPACT);
  json_decref (doc);
  assert_non_null (s);
  return s;
}

static char *
with (const char *path, const char *value)
{
  json_error_t jerr;
  json_t *v = NULL;
  if (value != NULL)
    {
      v = json_loads (value, JSON_DECODE_ANY, &jerr);
      if (v == NULL)
        fail_msg ("bad test value %s: %s", value, jerr.text);
    }
  return with_json (path, v);
}

static json_t *
str_n (char c, size_t n)
{
  char *s = malloc (n + 1);
  json_t *j;
  memset (s, c, n);
  s[n] = '\0';
  j = json_string (s);
  free (s);
  return j;
}

/* an array of n copies of item (item is copied, then released) */
static json_t *
array_of (json_t *item, size_t n)
{
  json_t *a = json_array ();
  for (size_t i = 0; i < n; i++)
    json_array_append_new (a, json_deep_copy (item));
  json_decref (item);
  return a;
}

static struct build_spec *
expect_ok (const char *json)
{
  struct build_spec *s = NULL;
  bvm_error_t err = NULL;
  if (spec_parse (&s, json, strlen (json), &err) < 0)
    fail_msg ("expected %.400s to parse: %s", json, bvm_error_msg (&err));
  assert_non_null (s);
  return s;
}

static void
expect_fail_len (const char *json, size_t len, const char *needle)
{
  struct build_spec *s = NULL;
  bvm_error_t err = NULL;
  if (spec_parse (&s, json, len, &err) >= 0)
    fail_msg ("expected %.400s to fail with \"%s\"", json, needle);
  assert_null (s);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\" (input %.400s)", bvm_error_msg (&err), needle,
              json);
  if (strncmp (bvm_error_msg (&err), "`buildvm.json`", 14) != 0)
    fail_msg ("error \"%s\" does not name the document", bvm_error_msg (&err));
  assert_int_equal (bvm_error_get_code (&err), len > SPEC_MAX_BYTES ? BVM_E_LIMIT : BVM_E_INVALID);
  bvm_error_free (&err);
}

static void
expect_fail (const char *json, const char *needle)
{
  expect_fail_len (json, strlen (json), needle);
}

static void
test_minimal (void **state)
{
  const char doc[] = "{\"profile\":\"minimal\",\"steps\":[\"make\"]}";
  struct build_spec *s;
  (void) state;

  s = expect_ok (doc);
  assert_string_equal (s->profile, "minimal");
  assert_int_equal (s->n_steps, 1);
  assert_string_equal (s->steps[0].name, "step-1");
  assert_string_equal (s->steps[0].run, "make");
  assert_int_equal (s->steps[0].timeout, 0);
  assert_int_equal (s->n_env, 0);
  assert_int_equal (s->resources.vcpus, 0);
  assert_int_equal (s->resources.timeout, 0);
  assert_null (s->image);
  assert_int_equal (s->n_artifacts, 0);
  assert_int_equal (s->n_secrets, 0);
  {
    json_t *j = spec_to_json (s);
    assert_non_null (j);
    assert_true (json_is_null (json_object_get (j, "image"))
                 || json_object_get (j, "image") == NULL);
    json_decref (j);
  }
  spec_free (s);
}

static void
test_full (void **state)
{
  struct build_spec *s;
  const struct spec_image *im;
  (void) state;

  s = expect_ok (full_doc);
  assert_int_equal (s->n_steps, 2);
  assert_string_equal (s->steps[0].name, "step-1");
  assert_string_equal (s->steps[1].name, "test");
  assert_string_equal (s->steps[1].run, "make check");
  assert_int_equal (s->steps[1].timeout, 120);
  assert_int_equal (s->n_env, 2);
  assert_string_equal (s->env[0].key, "CC"); /* document order is kept */
  assert_string_equal (s->env[1].key, "PATH");
  assert_int_equal (s->resources.vcpus, 1);
  assert_int_equal (s->resources.memory_mib, 512);
  assert_int_equal (s->resources.disk_mib, 1024);
  assert_int_equal (s->resources.timeout, 600);
  im = s->image;
  assert_non_null (im);
  assert_string_equal (im->base, "base/busybox:1.36");
  assert_string_equal (im->base_repository, "base/busybox");
  assert_string_equal (im->base_tag, "1.36");
  assert_null (im->base_digest);
  assert_string_equal (im->from, "dist"); /* trailing slash normalized away */
  assert_string_equal (im->to, "/app");
  assert_int_equal (im->n_entrypoint, 1);
  assert_string_equal (im->entrypoint[0], "/app/server");
  assert_null (im->entrypoint[1]);
  assert_int_equal (im->n_cmd, 2);
  assert_string_equal (im->cmd[1], "8080");
  assert_int_equal (im->n_env, 2);
  assert_string_equal (im->env[1].key, "HOME"); /* allowed in the image, not in the build */
  assert_string_equal (im->workdir, "/app");
  assert_string_equal (im->user, "1000:1000");
  assert_int_equal (im->n_ports, 3);
  assert_string_equal (im->ports[0], "8080/tcp");
  assert_string_equal (im->ports[1], "53/udp");
  assert_string_equal (im->ports[2], "9000/tcp");
  assert_int_equal (im->n_labels, 1);
  assert_string_equal (im->labels[0].key, "org.example.team");
  assert_string_equal (im->labels[0].value, "web");
  assert_int_equal (s->n_artifacts, 2);
  assert_string_equal (s->artifacts[1], "reports/");
  assert_int_equal (s->n_secrets, 2);
  assert_string_equal (s->secrets[0].name, "NPM_TOKEN");
  assert_null (s->secrets[0].env);
  assert_string_equal (s->secrets[1].env, "API_KEY");

  /* the normalized JSON parses back to the same plan */
  {
    json_t *j = spec_to_json (s);
    char *text = json_dumps (j, JSON_COMPACT);
    struct build_spec *t = expect_ok (text);
    assert_string_equal (t->image->ports[2], "9000/tcp");
    assert_string_equal (t->steps[0].name, "step-1");
    assert_string_equal (t->image->from, "dist");
    assert_int_equal (t->n_secrets, 2);
    spec_free (t);
    free (text);
    json_decref (j);
  }
  spec_free (s);
}

struct field_case
{
  const char *path;
  const char *value;
  const char *needle;
};

static const struct field_case good_values[] = {
  { "version", NULL, NULL },
  { "profile", "\"debian-12\"", NULL },
  { "steps", "[\"a\",{\"run\":\"b\"},{\"name\":\"lint it\",\"run\":\"c\\nd\",\"timeout\":1}]",
    NULL },
  { "env", "{}", NULL },
  { "env", "{\"_x\":\"\",\"LD_LIBRARY_PATH\":\"/opt\",\"PATH\":\"/bin\"}", NULL },
  { "resources", "{}", NULL },
  { "resources", "{\"vcpus\":1024,\"memory_mib\":1048576,\"disk_mib\":16,\"timeout\":604800}",
    NULL },
  { "image", NULL, NULL },
  { "image.base", "null", NULL },
  { "egress", "[]", NULL },
  { "egress", "[\"registry.npmjs.org:443\",\"*.pythonhosted.org:443\",\"[2001:db8::1]:80\"]",
    NULL },
  { "fail_on_deny", "true", NULL },
  { "image.base", NULL, NULL },
  { "image.base", "\"busybox@" DIGEST "\"", NULL },
  { "image.base", "\"a/b__c/d-e/f.g:v1.0_rc-1\"", NULL },
  { "image.base", "\"x:_\"", NULL },
  { "image.from", "\".\"", NULL },
  { "image.from", "\"./\"", NULL },
  { "image.from", "\"build/out/app.d\"", NULL },
  { "image.from", "\".output\"", NULL },
  { "image.to", "\"/\"", NULL },
  { "image.to", NULL, NULL },
  { "image.to", "\"/procfs/app\"", NULL },
  { "image.to", "\"/srv/my app\"", NULL },
  { "image.entrypoint", "[]", NULL },
  { "image.cmd", "[\"\"]", NULL },
  { "image.user", "\"root\"", NULL },
  { "image.user", "\"1000\"", NULL },
  { "image.user", "\"app:app-group\"", NULL },
  { "image.user", "\"4294967294:0\"", NULL },
  { "image.ports", "[]", NULL },
  { "image.ports", "[\"1\",\"65535/udp\",\"9/sctp\"]", NULL },
  { "image.labels", "{\"a\":\"\",\"org.opencontainers.image.title\":\"x\",\"a/b_c-d\":\"v\"}",
    NULL },
  { "artifacts", "[]", NULL },
  { "artifacts", "[\".\",\"*\",\"dist/*\",\"**/*.log\",\"a/[ab]c/?.txt\",\".hidden\",\"x/.y*\"]",
    NULL },
  { "secrets", "[]", NULL },
  { "secrets", "[\"a.b-c_D\",{\"name\":\"X\"},{\"name\":\"Y\",\"env\":\"TOKEN_Y\"}]", NULL },
};

static const struct field_case bad_values[] = {
  /* top level */
  { "stepz", "[]", "`buildvm.json`: unknown field `stepz`" },
  { "version", "2", "field `version` is 2, outside the range 1..1" },
  { "version", "\"1\"", "field `version` must be an integer, not a string" },
  /* profile */
  { "profile", NULL, "missing required field `profile`" },
  { "profile", "1", "field `profile` must be a string, not an integer" },
  { "profile", "\"\"", "field `profile` must match ^[a-z0-9][a-z0-9-]{0,31}$, got ``" },
  { "profile", "\"Minimal\"", "field `profile` must match" },
  { "profile", "\"a_b\"", "field `profile` must match" },
  { "profile", "\"../etc/passwd\"", "field `profile` must match" },
  { "profile", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "field `profile` must match" },
  /* steps */
  { "steps", NULL, "missing required field `steps`" },
  { "steps", "{}", "field `steps` must be an array, not an object" },
  { "steps", "\"make\"", "field `steps` must be an array, not a string" },
  { "steps", "[]", "field `steps` must have at least one step" },
  { "steps", "[1]", "field `steps[0]` must be a string or an object with `run`" },
  { "steps", "[\"a\",null]", "field `steps[1]` must be a string or an object" },
  { "steps", "[\"\"]", "field `steps[0]` must not be empty" },
  { "steps", "[\" \\n\"]", "field `steps[0]` must not be empty" },
  { "steps", "[{\"name\":\"x\"}]", "missing required field `steps[0].run`" },
  { "steps", "[{\"run\":\"\"}]", "field `steps[0].run` must not be empty" },
  { "steps", "[{\"run\":5}]", "field `steps[0].run` must be a string, not an integer" },
  { "steps", "[{\"run\":\"x\",\"timeout\":0}]",
    "field `steps[0].timeout` is 0, outside the range" },
  { "steps", "[{\"run\":\"x\",\"timeout\":604801}]", "field `steps[0].timeout` is 604801" },
  { "steps", "[{\"run\":\"x\",\"timeout\":-1}]", "field `steps[0].timeout` is -1" },
  { "steps", "[{\"run\":\"x\",\"timeout\":\"5\"}]",
    "field `steps[0].timeout` must be an integer" },
  { "steps", "[{\"run\":\"x\",\"timeout\":1.5}]",
    "field `steps[0].timeout` must be an integer, not a number" },
  { "steps", "[{\"run\":\"x\",\"shell\":\"bash\"}]", "unknown field `steps[0].shell`" },
  { "steps", "[{\"run\":\"x\",\"name\":\"\"}]", "field `steps[0].name` must be 1 to 64 bytes" },
  { "steps", "[{\"run\":\"x\",\"name\":\"a\\u001bb\"}]",
    "field `steps[0].name` must be 1 to 64 bytes without control" },
  { "steps", "[{\"run\":\"x\",\"name\":7}]", "field `steps[0].name` must be a string" },
  /* env */
  { "env", "[]", "field `env` must be an object, not an array" },
  { "env", "{\"HOME\":\"/root\"}", "field `env.HOME` is reserved" },
  { "env", "{\"USER\":\"root\"}", "field `env.USER` is reserved" },
  { "env", "{\"BUILDVM_JOB_ID\":\"x\"}", "field `env.BUILDVM_JOB_ID` is reserved" },
  { "env", "{\"1A\":\"x\"}", "field `env.1A` is not a valid variable name" },
  { "env", "{\"A-B\":\"x\"}", "field `env.A-B` is not a valid variable name" },
  { "env", "{\"A=B\":\"x\"}", "field `env.A=B` is not a valid variable name" },
  { "env", "{\"\":\"x\"}", "field `env.` is not a valid variable name" },
  { "env", "{\"A\":1}", "field `env.A` must be a string" },
  { "env", "{\"A\":null}", "field `env.A` must be a string" },
  /* resources */
  { "resources", "\"big\"", "field `resources` must be an object, not a string" },
  { "resources", "{\"vcpus\":0}", "field `resources.vcpus` is 0, outside the range 1..1024" },
  { "resources", "{\"vcpus\":1025}", "field `resources.vcpus` is 1025" },
  { "resources", "{\"vcpus\":\"2\"}", "field `resources.vcpus` must be an integer, not a string" },
  { "resources", "{\"vcpus\":1.5}", "field `resources.vcpus` must be an integer" },
  { "resources", "{\"vcpus\":-1}", "field `resources.vcpus` is -1" },
  { "resources", "{\"memory_mib\":63}",
    "field `resources.memory_mib` is 63, outside the range 64..1048576" },
  { "resources", "{\"disk_mib\":1099511627776}", "field `resources.disk_mib` is 1099511627776" },
  { "resources", "{\"timeout\":0}", "field `resources.timeout` is 0" },
  { "resources", "{\"gpus\":1}", "unknown field `resources.gpus`" },
  /* image */
  { "image", "\"dist\"", "field `image` must be an object, not a string" },
  { "image", "{}", "missing required field `image.from`" },
  { "image.volumes", "[]", "unknown field `image.volumes`" },
  { "image.base", "5", "field `image.base` must be a string or null" },
  { "image.base", "\"busybox\"",
    "field `image.base` must have a `:tag` or an `@sha256:` digest, got `busybox`" },
  { "image.base", "\"docker.io/library/busybox:1\"",
    "field `image.base` must name a repository in the runner's registry, without a host" },
  { "image.base", "\"localhost:5000/x:1\"", "without a host" },
  { "image.base", "\"localhost/x:1\"", "without a host" },
  { "image.base", "\"registry.example.com/x@" DIGEST "\"", "without a host" },
  { "image.base", "\"Base/x:1\"", "field `image.base` has an invalid repository name" },
  { "image.base", "\"base//x:1\"", "has an invalid repository name" },
  { "image.base", "\"base/x-:1\"", "has an invalid repository name" },
  { "image.base", "\"base/-x:1\"", "has an invalid repository name" },
  { "image.base", "\"base/x___y:1\"", "has an invalid repository name" },
  { "image.base", "\"/x:1\"", "has an invalid repository name" },
  { "image.base", "\":1\"", "has an invalid repository name" },
  { "image.base", "\"base/x:-bad\"", "field `image.base` has an invalid tag" },
  { "image.base", "\"base/x:\"", "has an invalid tag" },
  { "image.base", "\"base/x:a b\"", "has an invalid tag" },
  { "image.base", "\"base/x@sha256:abc\"", "field `image.base` must end in `@sha256:`" },
  { "image.base", "\"base/x@md5:0123456789abcdef0123456789abcdef\"", "must end in `@sha256:`" },
  { "image.from", "\"/abs\"",
    "field `image.from` must be relative to the source tree, not absolute" },
  { "image.from", "\"..\"", "field `image.from` must not contain `..`" },
  { "image.from", "\"a/../../b\"", "must not contain `..`" },
  { "image.from", "\"a//b\"", "field `image.from` must not contain `//`" },
  { "image.from", "\"./a\"", "field `image.from` must not contain `.` components" },
  { "image.from", "\"a/.\"", "must not contain `.` components" },
  { "image.from", "\"\"", "field `image.from` must not be empty" },
  { "image.from", "\"a\\nb\"", "field `image.from` must not contain control characters" },
  { "image.from", "1", "field `image.from` must be a string" },
  { "image.to", "\"app\"", "field `image.to` must be an absolute path" },
  { "image.to", "\"\"", "field `image.to` must not be empty" },
  { "image.to", "\"/proc\"", "field `image.to` must not be under /proc, /sys or /dev" },
  { "image.to", "\"/proc/self\"", "must not be under /proc" },
  { "image.to", "\"/sys/x\"", "must not be under /proc" },
  { "image.to", "\"/dev\"", "must not be under /proc" },
  { "image.to", "\"/a/../proc\"", "field `image.to` must be normalized" },
  { "image.to", "\"/a/./b\"", "must be normalized" },
  { "image.to", "\"/a/\"", "field `image.to` must not end with `/`" },
  { "image.to", "\"//a\"", "field `image.to` must not contain `//`" },
  { "image.entrypoint", "\"/app/server\"",
    "field `image.entrypoint` must be an array, not a string" },
  { "image.entrypoint", "[1]", "field `image.entrypoint[0]` must be a string, not an integer" },
  { "image.cmd", "[\"a\",null]", "field `image.cmd[1]` must be a string, not null" },
  { "image.cmd", "{}", "field `image.cmd` must be an array" },
  { "image.env", "{\"1\":\"x\"}", "field `image.env.1` is not a valid variable name" },
  { "image.env", "{\"A\":[]}", "field `image.env.A` must be a string" },
  { "image.env", "[]", "field `image.env` must be an object" },
  { "image.workdir", "\"app\"", "field `image.workdir` must be an absolute path" },
  { "image.workdir", "\"/a/..\"", "field `image.workdir` must be normalized" },
  { "image.workdir", "3", "field `image.workdir` must be a string" },
  { "image.user", "\"\"", "field `image.user` must be `user` or `user:group`" },
  { "image.user", "\"a:b:c\"", "field `image.user` must be" },
  { "image.user", "\"a:\"", "field `image.user` must be" },
  { "image.user", "\":a\"", "field `image.user` must be" },
  { "image.user", "\"-x\"", "field `image.user` must be" },
  { "image.user", "\"a b\"", "field `image.user` must be" },
  { "image.user", "\"99999999999\"", "field `image.user` must be" },
  { "image.user", "\"4294967295\"", "field `image.user` must be" },
  { "image.user", "\"0:4294967296\"", "field `image.user` must be" },
  { "image.user", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "field `image.user` must be" },
  { "image.ports", "[\"8080\",\"0\"]",
    "field `image.ports[1]` must be `PORT` or `PORT/tcp|udp|sctp` with PORT 1..65535, got `0`" },
  { "image.ports", "[\"65536\"]", "field `image.ports[0]` must be `PORT`" },
  { "image.ports", "[\"080\"]", "field `image.ports[0]` must be `PORT`" },
  { "image.ports", "[\"-1\"]", "field `image.ports[0]` must be `PORT`" },
  { "image.ports", "[\"x\"]", "field `image.ports[0]` must be `PORT`" },
  { "image.ports", "[\"/tcp\"]", "field `image.ports[0]` must be `PORT`" },
  { "image.ports", "[\"8080/http\"]", "field `image.ports[0]` has a protocol other than" },
  { "image.ports", "[\"8080/\"]", "has a protocol other than" },
  { "image.ports", "[\"8080/TCP\"]", "has a protocol other than" },
  { "image.ports", "[8080]", "field `image.ports[0]` must be a string, not an integer" },
  { "image.ports", "[\"8080\",\"8080/tcp\"]", "field `image.ports[1]` repeats a port" },
  { "image.ports", "\"8080\"", "field `image.ports` must be an array" },
  { "image.labels", "{\"dev.buildvm.job\":\"forged\"}",
    "field `image.labels.dev.buildvm.job` is reserved" },
  { "image.labels", "{\"\":\"x\"}", "field `image.labels.` must be 1 to 256 bytes" },
  { "image.labels", "{\"a b\":\"x\"}", "field `image.labels.a b` may contain only" },
  { "image.labels", "{\".a\":\"x\"}", "must start with a letter or digit" },
  { "image.labels", "{\"a\":1}", "field `image.labels.a` must be a string" },
  { "image.labels", "{\"a\":\"x\\ny\"}",
    "field `image.labels.a` must not contain control characters" },
  { "image.labels", "[]", "field `image.labels` must be an object" },
  /* artifacts */
  { "artifacts", "\"dist\"", "field `artifacts` must be an array, not a string" },
  { "artifacts", "[1]", "field `artifacts[0]` must be a string" },
  { "artifacts", "[\"a\",\"/etc/passwd\"]",
    "field `artifacts[1]` must be relative to the source tree, not absolute, got `/etc/passwd`" },
  { "artifacts", "[\"../x\"]", "field `artifacts[0]` must not contain `..`" },
  { "artifacts", "[\"a/../../x\"]", "must not contain `..`" },
  { "artifacts", "[\"a//b\"]", "must not contain `//`" },
  { "artifacts", "[\"./a\"]", "must not contain `.` components" },
  { "artifacts", "[\".*\"]", "field `artifacts[0]` has a pattern that matches `.` or `..`" },
  { "artifacts", "[\"dist/.?\"]", "has a pattern that matches `.` or `..`" },
  { "artifacts", "[\"[.][.]/etc\"]", "has a pattern that matches" },
  { "artifacts", "[\"a\\\\*\"]", "field `artifacts[0]` must not contain `\\`" },
  { "artifacts", "[\"a[bc\"]", "field `artifacts[0]` has an unterminated `[`" },
  { "artifacts", "[\"\"]", "field `artifacts[0]` must not be empty" },
  { "artifacts", "[\"a\\tb\"]", "must not contain control characters" },
  /* C1 controls too (0x9b is a CSI on some terminals): text_problem's rule */
  { "artifacts", "[\"a\\u009bb\"]", "must not contain control characters" },
  { "steps", "[{\"name\":\"a\\u0085\",\"run\":\"x\"}]", "without control characters" },
  /* egress */
  { "egress", "\"a:1\"", "field `egress` must be an array" },
  { "egress", "[\"example.com\"]", "field `egress[0]` must be `host:port`" },
  { "egress", "[\"example.com:0\"]", "field `egress[0]` has a port that is not 1 to 65535" },
  { "egress", "[\"Example.com:443\"]", "field `egress[0]`" },
  { "fail_on_deny", "1", "field `fail_on_deny`" },
  /* secrets */
  { "secrets", "\"X\"", "field `secrets` must be an array" },
  { "secrets", "[1]", "field `secrets[0]` must be a string or an object with `name`" },
  { "secrets", "[\"\"]",
    "field `secrets[0]` must match ^[A-Za-z0-9_.-]{1,64}$ and not start with `.`" },
  { "secrets", "[\"..\"]", "field `secrets[0]` must match" },
  { "secrets", "[\".env\"]", "field `secrets[0]` must match" },
  { "secrets", "[\"a/b\"]", "field `secrets[0]` must match" },
  { "secrets", "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]",
    "field `secrets[0]` must match" },
  { "secrets", "[\"A\",{\"name\":\"A\"}]", "field `secrets[1].name` repeats a secret" },
  { "secrets", "[{\"env\":\"X\"}]", "missing required field `secrets[0].name`" },
  { "secrets", "[{\"name\":\"A\",\"file\":\"/x\"}]", "unknown field `secrets[0].file`" },
  { "secrets", "[{\"name\":\"A\",\"env\":\"HOME\"}]", "field `secrets[0].env` is reserved" },
  { "secrets", "[{\"name\":\"A\",\"env\":\"BUILDVM_X\"}]", "field `secrets[0].env` is reserved" },
  { "secrets", "[{\"name\":\"A\",\"env\":\"1x\"}]",
    "field `secrets[0].env` is not a valid variable name" },
  { "secrets", "[{\"name\":\"A\",\"env\":true}]", "field `secrets[0].env` must be a string" },
  { "secrets", "[{\"name\":\"A\",\"env\":\"CC\"}]",
    "field `secrets[0].env` is also set in `env`" },
  { "secrets", "[{\"name\":\"A\",\"env\":\"T\"},{\"name\":\"B\",\"env\":\"T\"}]",
    "field `secrets[1].env` is used by another secret" },
};

static void
test_field_table (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (good_values); i++)
    {
      char *doc = with (good_values[i].path, good_values[i].value);
      spec_free (expect_ok (doc));
      free (doc);
    }
  for (size_t i = 0; i < ARRAY_SIZE (bad_values); i++)
    {
      char *doc = with (bad_values[i].path, bad_values[i].value);
      expect_fail (doc, bad_values[i].needle);
      free (doc);
    }
}

/* Every count and length bound: the limit itself passes, one more fails. */
static void
test_bounds (void **state)
{
  char *doc;
  (void) state;

#define BOUND(path, ok_value, bad_value, needle)                                                  \
  do                                                                                              \
    {                                                                                             \
      doc = with_json (path, ok_value);                                                           \
      spec_free (expect_ok (doc));                                                                \
      free (doc);                                                                                 \
      doc = with_json (path, bad_value);                                                          \
      expect_fail (doc, needle);                                                                  \
      free (doc);                                                                                 \
    }                                                                                             \
  while (0)

  BOUND ("steps", array_of (json_string ("make"), 64), array_of (json_string ("make"), 65),
         "field `steps` has more than 64 steps");
  BOUND ("steps", json_pack ("[o]", str_n ('x', 64 * 1024)),
         json_pack ("[o]", str_n ('x', 64 * 1024 + 1)), "field `steps[0]` is longer than 65536");
  BOUND ("steps", json_pack ("[{s:o}]", "run", str_n ('x', 64 * 1024)),
         json_pack ("[{s:o}]", "run", str_n ('x', 64 * 1024 + 1)),
         "field `steps[0].run` is longer than 65536");
  BOUND ("steps", json_pack ("[{s:s,s:o}]", "run", "x", "name", str_n ('n', 64)),
         json_pack ("[{s:s,s:o}]", "run", "x", "name", str_n ('n', 65)),
         "field `steps[0].name` must be 1 to 64 bytes");
  {
    json_t *ok = json_object (), *bad = json_object ();
    char k[16];
    for (int i = 0; i < 257; i++)
      {
        snprintf (k, sizeof k, "V%d", i);
        if (i < 256)
          json_object_set_new (ok, k, json_string ("x"));
        json_object_set_new (bad, k, json_string ("x"));
      }
    BOUND ("env", ok, bad, "field `env` has more than 256 entries");
  }
  {
    char k129[130];
    memset (k129, 'K', 129);
    k129[129] = '\0';
    BOUND ("env", json_pack ("{s:o}", k129 + 1, json_string ("x")),
           json_pack ("{s:o}", k129, json_string ("x")), "is not a valid variable name");
  }
  BOUND ("env", json_pack ("{s:o}", "A", str_n ('v', 32 * 1024)),
         json_pack ("{s:o}", "A", str_n ('v', 32 * 1024 + 1)),
         "field `env.A` is longer than 32768");
  BOUND ("image.entrypoint", array_of (json_string ("a"), 256), array_of (json_string ("a"), 257),
         "field `image.entrypoint` has more than 256 items");
  BOUND ("image.cmd", json_pack ("[o]", str_n ('c', 32 * 1024)),
         json_pack ("[o]", str_n ('c', 32 * 1024 + 1)),
         "field `image.cmd[0]` is longer than 32768");
  {
    json_t *ok = json_array (), *bad = json_array ();
    char p[16];
    for (int i = 1; i <= 65; i++)
      {
        snprintf (p, sizeof p, "%d", i);
        if (i <= 64)
          json_array_append_new (ok, json_string (p));
        json_array_append_new (bad, json_string (p));
      }
    BOUND ("image.ports", ok, bad, "field `image.ports` has more than 64 items");
  }
  {
    json_t *ok = json_object (), *bad = json_object ();
    char k[16];
    for (int i = 0; i < 257; i++)
      {
        snprintf (k, sizeof k, "l%d", i);
        if (i < 256)
          json_object_set_new (ok, k, json_string ("x"));
        json_object_set_new (bad, k, json_string ("x"));
      }
    BOUND ("image.labels", ok, bad, "field `image.labels` has more than 256 entries");
  }
  {
    char key[258];
    memset (key, 'k', 257);
    key[257] = '\0';
    BOUND ("image.labels", json_pack ("{s:s}", key + 1, "v"), json_pack ("{s:s}", key, "v"),
           "must be 1 to 256 bytes");
  }
  BOUND ("image.labels", json_pack ("{s:o}", "a", str_n ('v', 4096)),
         json_pack ("{s:o}", "a", str_n ('v', 4097)),
         "field `image.labels.a` is longer than 4096");
  {
    char path[1100];
    memset (path, 'p', 1025);
    path[1025] = '\0';
    BOUND ("image.from", json_string (path + 1), json_string (path),
           "field `image.from` is longer than 1024 bytes");
    BOUND ("artifacts", json_pack ("[s]", path + 1), json_pack ("[s]", path),
           "field `artifacts[0]` is longer than 1024 bytes");
    path[0] = '/';
    {
      json_t *bad = json_string (path);
      path[1024] = '\0';
      BOUND ("image.to", json_string (path), bad, "field `image.to` is longer than 1024 bytes");
    }
  }
  BOUND ("artifacts", array_of (json_string ("a"), 256), array_of (json_string ("a"), 257),
         "field `artifacts` has more than 256 items");
  {
    json_t *ok = json_array (), *bad = json_array ();
    char n[16];
    for (int i = 0; i < 65; i++)
      {
        snprintf (n, sizeof n, "S%d", i);
        if (i < 64)
          json_array_append_new (ok, json_string (n));
        json_array_append_new (bad, json_string (n));
      }
    BOUND ("secrets", ok, bad, "field `secrets` has more than 64 items");
  }
  BOUND (
      "image.base",
      json_pack (
          "s++", "b/", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:",
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
      json_pack (
          "s++", "b/", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:",
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
      "has an invalid tag");
#undef BOUND
}

static void
test_document_attacks (void **state)
{
  (void) state;

  /* duplicate keys, at the top and nested (a second `run` must not win) */
  expect_fail ("{\"profile\":\"a\",\"profile\":\"b\",\"steps\":[\"x\"]}", "duplicate");
  expect_fail ("{\"profile\":\"a\",\"steps\":[{\"run\":\"x\",\"run\":\"y\"}]}", "duplicate");
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"x\"],\"env\":{\"A\":\"1\",\"A\":\"2\"}}",
               "duplicate");
  /* invalid UTF-8 in a value and in a key */
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"\xff\"]}", "not valid JSON");
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"x\"],\"env\":{\"\xc0\xaf\":\"x\"}}",
               "not valid JSON");
  /* NUL, escaped and raw */
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"make\\u0000; rm -rf /\"]}", "not valid JSON");
  {
    const char raw[] = "{\"profile\":\"a\",\"steps\":[\"make\0x\"]}";
    expect_fail_len (raw, sizeof raw - 1, "not valid JSON");
  }
  /* oversized: one byte over the cap is refused */
  {
    size_t n = SPEC_MAX_BYTES + 1;
    char *big = malloc (n + 1);
    const char doc[] = "{\"profile\":\"a\",\"steps\":[\"x\"]}";
    memset (big, ' ', n);
    big[n] = '\0';
    memcpy (big, doc, strlen (doc));
    expect_fail_len (big, n, "`buildvm.json` is 262145 bytes, over the limit of 262144");
    big[n - 1] = '\0';
    spec_free (expect_ok (big));
    free (big);
  }
  /* deeply nested inside an otherwise valid field */
  {
    char deep[512];
    size_t o = (size_t) snprintf (deep, sizeof deep, "{\"profile\":\"a\",\"steps\":");
    for (int i = 0; i < 60; i++)
      deep[o++] = '[';
    for (int i = 0; i < 60; i++)
      deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = '\0';
    expect_fail (deep, "nests deeper than 32 levels");
  }
  /* integers jansson cannot hold */
  expect_fail (
      "{\"profile\":\"a\",\"steps\":[\"x\"],\"resources\":{\"vcpus\":18446744073709551616}}",
      "not valid JSON");
  expect_fail ("[\"profile\"]", "`buildvm.json` must be a JSON object");
  expect_fail ("", "not valid JSON");
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"x\"]} trailing", "not valid JSON");
  expect_fail ("{\"profile\":\"a\",\"steps\":[\"x\"],}", "not valid JSON");
}

static void
test_validators (void **state)
{
  (void) state;
  assert_null (spec_env_name_problem ("_A1"));
  assert_non_null (spec_env_name_problem ("A B"));
}

/* issue 17: `dockerfile` (true, an object, or absent), and the detected spec */
static void
test_dockerfile (void **state)
{
  struct build_spec *s;
  json_t *j;
  bvm_error_t err = NULL;
  (void) state;

  /* true: the defaults; the profile defaults to debian; an image with no
   * base/from/to so the plan names a destination */
  s = expect_ok ("{\"dockerfile\":true}");
  assert_non_null (s->dockerfile);
  assert_string_equal (s->profile, "debian");
  assert_string_equal (s->dockerfile->path, "Dockerfile");
  assert_string_equal (s->dockerfile->context, ".");
  assert_null (s->dockerfile->target);
  assert_false (s->dockerfile->detected);
  assert_non_null (s->image);
  assert_null (s->image->base);
  assert_null (s->image->from);
  assert_null (s->image->to);
  assert_int_equal (s->n_steps, 0);
  j = spec_to_json (s);
  assert_non_null (j);
  assert_string_equal (json_string_value (
                           json_object_get (json_object_get (j, "dockerfile"), "path")),
                       "Dockerfile");
  json_decref (j);
  spec_free (s);

  s = expect_ok ("{\"profile\":\"minimal\",\"dockerfile\":{\"path\":\"docker/Dockerfile.prod\","
                 "\"context\":\"svc/api/\",\"target\":\"Runtime\",\"args\":{\"NODE_ENV\":"
                 "\"production\",\"V\":\"1\"}},\"secrets\":[\"NPM_TOKEN\"],\"egress\":"
                 "[\"registry.npmjs.org:443\"]}");
  assert_string_equal (s->profile, "minimal");
  assert_string_equal (s->dockerfile->path, "docker/Dockerfile.prod");
  assert_string_equal (s->dockerfile->context, "svc/api");
  assert_string_equal (s->dockerfile->target, "Runtime");
  assert_int_equal (s->dockerfile->n_args, 2);
  assert_string_equal (s->dockerfile->args[0].key, "NODE_ENV");
  assert_int_equal (s->n_secrets, 1);
  spec_free (s);

  /* false / null: a steps spec as before */
  s = expect_ok ("{\"profile\":\"a\",\"steps\":[\"x\"],\"dockerfile\":false}");
  assert_null (s->dockerfile);
  spec_free (s);
  s = expect_ok ("{\"profile\":\"a\",\"steps\":[],\"dockerfile\":{}}");
  assert_non_null (s->dockerfile);
  spec_free (s);

  /* both: the Dockerfile describes the build and the image */
  expect_fail ("{\"dockerfile\":true,\"steps\":[\"make\"]}",
               "field `steps` must be absent in a Dockerfile build");
  expect_fail ("{\"dockerfile\":true,\"image\":{\"from\":\".\"}}",
               "field `image` must be absent in a Dockerfile build");
  expect_fail ("{\"dockerfile\":true,\"artifacts\":[\"x\"]}", "field `artifacts` must be absent");
  expect_fail ("{\"dockerfile\":true,\"env\":{\"A\":\"b\"}}", "field `env` must be absent");
  expect_fail ("{\"dockerfile\":1}", "field `dockerfile` must be true or an object");
  expect_fail ("{\"dockerfile\":{\"file\":\"x\"}}", "file");
  expect_fail ("{\"dockerfile\":{\"path\":\"../Dockerfile\"}}", "field `dockerfile.path`");
  expect_fail ("{\"dockerfile\":{\"path\":\"/Dockerfile\"}}", "field `dockerfile.path`");
  expect_fail ("{\"dockerfile\":{\"path\":\".\"}}", "must name a file");
  expect_fail ("{\"dockerfile\":{\"path\":\"d/\"}}", "must name a file");
  expect_fail ("{\"dockerfile\":{\"context\":\"a/../..\"}}", "field `dockerfile.context`");
  expect_fail ("{\"dockerfile\":{\"target\":\"1x\"}}", "field `dockerfile.target`");
  expect_fail ("{\"dockerfile\":{\"target\":\"a b\"}}", "field `dockerfile.target`");
  expect_fail ("{\"dockerfile\":{\"target\":3}}", "must be a string or null");
  expect_fail ("{\"dockerfile\":{\"args\":{\"A B\":\"x\"}}}", "not a valid variable name");
  expect_fail ("{\"dockerfile\":{\"args\":{\"HTTP_PROXY\":\"x\"}}}", "is reserved");
  expect_fail ("{\"dockerfile\":{\"args\":{\"https_proxy\":\"x\"}}}", "is reserved");
  expect_fail ("{\"dockerfile\":{\"args\":{\"PATH\":\"x\"}}}", "is reserved");
  expect_fail ("{\"dockerfile\":{\"args\":{\"A\":1}}}", "must be a string");
  expect_fail ("{\"dockerfile\":{\"args\":{\"A\":\"x\\ny\"}}}", "control characters");
  /* without dockerfile the profile is still required */
  expect_fail ("{\"steps\":[\"x\"]}", "profile");

  /* detected: no buildvm.json, a Dockerfile at the root */
  assert_int_equal (spec_dockerfile_detected (&s, &err), 0);
  assert_true (s->dockerfile->detected);
  assert_string_equal (s->profile, "debian");
  assert_string_equal (s->dockerfile->path, "Dockerfile");
  assert_non_null (s->image);
  j = spec_to_json (s);
  assert_non_null (j);
  assert_true (json_is_true (json_object_get (json_object_get (j, "dockerfile"), "detected")));
  json_decref (j);
  spec_free (s);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_minimal),          cmocka_unit_test (test_full),
    cmocka_unit_test (test_field_table),      cmocka_unit_test (test_bounds),
    cmocka_unit_test (test_document_attacks), cmocka_unit_test (test_validators),
    cmocka_unit_test (test_dockerfile),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
