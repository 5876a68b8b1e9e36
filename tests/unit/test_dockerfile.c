/* test_dockerfile.c - the Dockerfile grammar (dockerfile.c), image references,
 * runner.json `dockerfile` (config.c) and the plan's checks (plan.c) */
#include "support.h"

#include "config.h"
#include "dockerfile.h"
#include "plan.h"
#include "spec.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct dockerfile *
parse_args (const char *text, const struct spec_kv *args, size_t n_args, const char *target)
{
  struct dockerfile *d = NULL;
  bvm_error_t err = NULL;
  if (dockerfile_parse (&d, "Dockerfile", text, strlen (text), args, n_args, target, &err) < 0)
    fail_msg ("expected to parse: %s\n---\n%.600s", bvm_error_msg (&err), text);
  assert_non_null (d);
  return d;
}

static struct dockerfile *
parse (const char *text)
{
  return parse_args (text, NULL, 0, NULL);
}

static void
expect_fail_code (const char *text, size_t len, const char *target, int code, const char *needle)
{
  struct dockerfile *d = NULL;
  bvm_error_t err = NULL;
  int ret = dockerfile_parse (&d, "Dockerfile", text, len, NULL, 0, target, &err);
  if (ret == 0)
    fail_msg ("expected to fail with \"%s\": %.400s", needle, text);
  assert_null (d);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  assert_null (strchr (bvm_error_msg (&err), '\n'));
  if (code != 0)
    assert_int_equal (bvm_error_get_code (&err), code);
  bvm_error_free (&err);
}

static void
expect_fail (const char *text, const char *needle)
{
  expect_fail_code (text, strlen (text), NULL, BVM_E_INVALID, needle);
}

/* --- references -------------------------------------------------------------------------- */

static void
test_refs (void **state)
{
  struct dockerfile_ref r;
  (void) state;

  assert_null (dockerfile_ref_parse (&r, "node:18"));
  assert_string_equal (r.name, "docker.io/library/node:18");
  assert_false (r.domain_given);
  assert_string_equal (r.path, "library/node");
  assert_string_equal (r.tag, "18");
  assert_null (dockerfile_ref_parse (&r, "node"));
  assert_string_equal (r.name, "docker.io/library/node:latest");
  assert_null (dockerfile_ref_parse (&r, "docker.io/library/node:18"));
  assert_string_equal (r.name, "docker.io/library/node:18");
  assert_true (r.domain_given);
  assert_null (dockerfile_ref_parse (&r, "base/node:18"));
  assert_string_equal (r.name, "docker.io/base/node:18");
  assert_string_equal (r.path, "base/node");
  assert_null (dockerfile_ref_parse (&r, "127.0.0.1:5000/base/node:18"));
  assert_string_equal (r.domain, "127.0.0.1:5000");
  assert_string_equal (r.path, "base/node");
  assert_null (dockerfile_ref_parse (&r, "localhost/x"));
  assert_string_equal (r.domain, "localhost");
  assert_null (dockerfile_ref_parse (&r, "evil.example/x:1"));
  assert_string_equal (r.domain, "evil.example");
  assert_null (dockerfile_ref_parse (&r, "base/node@" DIGEST));
  assert_string_equal (r.digest, DIGEST);
  assert_string_equal (r.tag, "");
  assert_string_equal (r.name, "docker.io/base/node@" DIGEST);
  assert_null (dockerfile_ref_parse (&r, "base/node:18@" DIGEST));
  assert_string_equal (r.tag, "18");
  assert_string_equal (r.name, "docker.io/base/node@" DIGEST);

  assert_non_null (dockerfile_ref_parse (&r, ""));
  assert_non_null (dockerfile_ref_parse (&r, "Node:18"));
  assert_non_null (dockerfile_ref_parse (&r, "node:"));
  assert_non_null (dockerfile_ref_parse (&r, "node:-x"));
  assert_non_null (dockerfile_ref_parse (&r, "node@sha256:abc"));
  assert_non_null (dockerfile_ref_parse (&r, "node 18"));
  assert_non_null (dockerfile_ref_parse (&r, "a//b"));
  assert_non_null (dockerfile_ref_parse (&r, "-bad.example/x"));
  assert_non_null (dockerfile_ref_parse (&r, "host.example:99999999/x"));
  assert_non_null (dockerfile_ref_parse (&r, "\x01node"));
  {
    char big[DOCKERFILE_REF_MAX + 2];
    memset (big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_non_null (dockerfile_ref_parse (&r, big));
  }
}

/* --- the parser ---------------------------------------------------------------------------- */

static void
test_basic (void **state)
{
  struct dockerfile *d;
  (void) state;

  d = parse ("FROM node:18 AS build\n"
             "WORKDIR /app\n"
             "COPY package*.json ./\n"
             "RUN --mount=type=secret,id=npmrc,target=/root/.npmrc npm ci\n"
             "COPY . .\n"
             "RUN npm run build\n"
             "\n"
             "from node:18-slim\n"
             "copy --from=build /app/dist /app\n"
             "CMD [\"node\", \"/app/server.js\"]\n");
  assert_int_equal (d->n_stages, 2);
  assert_string_equal (d->stages[0].name, "build");
  assert_int_equal (d->stages[0].line, 1);
  assert_int_equal (d->stages[1].line, 8);
  assert_null (d->stages[1].name);
  assert_int_equal (d->target, 1);
  assert_int_equal (d->n_bases, 2);
  assert_string_equal (d->bases[0].ref, "node:18");
  assert_string_equal (d->bases[1].ref, "node:18-slim");
  assert_int_equal (d->bases[1].line, 8);
  assert_string_equal (d->bases[0].how, "FROM");
  assert_int_equal (d->stages[0].base, 0);
  assert_int_equal (d->stages[1].base, 1);
  assert_int_equal (d->n_secrets, 1);
  assert_string_equal (d->secrets[0].value, "npmrc");
  assert_int_equal (d->secrets[0].line, 4);
  assert_int_equal (d->n_urls, 0);
  assert_int_equal (d->n_instructions, 9);
  dockerfile_free (d);

  /* scratch and an earlier stage are no bases; the same image twice is one */
  d = parse ("FROM gcc:12 AS build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\n"
             "FROM build AS again\nFROM docker.io/library/gcc:12\n");
  assert_int_equal (d->n_stages, 4);
  assert_int_equal (d->n_bases, 1);
  assert_int_equal (d->stages[1].base, -1);
  assert_int_equal (d->stages[2].base, -1);
  assert_int_equal (d->stages[3].base, 0);
  dockerfile_free (d);
}

static void
test_continuations (void **state)
{
  struct dockerfile *d;
  (void) state;

  /* continuation lines, comments and blank lines inside them, CRLF,
   * trailing white space after the escape */
  d = parse ("# a comment\n"
             "FROM \\\n"
             "  node:18 \\  \n"
             "# inside\n"
             "\n"
             "  AS b\r\n"
             "RUN --mount=type=secret,\\\n"
             "id=tok \\\n"
             "  echo\n"
             "ADD \\\n"
             "  https://example.com/x.tgz /x\n");
  assert_int_equal (d->n_stages, 1);
  assert_string_equal (d->stages[0].name, "b");
  assert_int_equal (d->stages[0].line, 2);
  assert_string_equal (d->bases[0].ref, "node:18");
  assert_int_equal (d->n_secrets, 1);
  assert_string_equal (d->secrets[0].value, "tok");
  assert_int_equal (d->secrets[0].line, 7);
  assert_int_equal (d->n_urls, 1);
  assert_string_equal (d->urls[0].value, "https://example.com/x.tgz");
  assert_int_equal (d->urls[0].line, 10);
  dockerfile_free (d);

  /* a continuation at the end of the file ends the instruction */
  d = parse ("FROM node:18 \\");
  assert_int_equal (d->n_stages, 1);
  dockerfile_free (d);
}

static void
test_escape_directive (void **state)
{
  struct dockerfile *d;
  (void) state;

  d = parse ("# escape=`\n"
             "FROM node:18 `\n"
             "  AS win\n"
             "RUN echo c:\\path\\\n"
             "COPY a b\n");
  assert_string_equal (d->stages[0].name, "win");
  /* with ` as the escape, a trailing \ continues nothing */
  assert_int_equal (d->n_instructions, 3);
  dockerfile_free (d);

  /* directives, case-insensitive, syntax ignored */
  d = parse ("# syntax=docker/dockerfile:1\n#ESCAPE = `\nFROM a `\n AS x\n");
  assert_string_equal (d->stages[0].name, "x");
  dockerfile_free (d);

  /* after a comment or a blank line it is only a comment */
  d = parse ("# hello\n# escape=`\nFROM a \\\n AS x\n");
  assert_string_equal (d->stages[0].name, "x");
  dockerfile_free (d);
  d = parse ("\n# escape=`\nFROM a \\\n AS x\n");
  assert_string_equal (d->stages[0].name, "x");
  dockerfile_free (d);

  expect_fail ("# escape=x\nFROM a\n", "Dockerfile:1: the escape directive must be");
  expect_fail ("# escape=`\n# escape=`\nFROM a\n",
               "Dockerfile:2: the parser directive `escape` is "
               "given twice");
}

static void
test_args_in_from (void **state)
{
  const struct spec_kv args[] = { { (char *) "VERSION", (char *) "20" },
                                  { (char *) "UNDECLARED", (char *) "x" },
                                  { (char *) "TARGETARCH", (char *) "arm64" } };
  struct dockerfile *d;
  (void) state;

  d = parse ("ARG VERSION=18\nARG VARIANT\nFROM node:${VERSION}${VARIANT:+-}${VARIANT}\n"
             "FROM node:$VERSION-slim\n"
             "FROM gcc:${GCC:-12}\n"
             "FROM --platform=$BUILDPLATFORM debian:12\n"
             "FROM --platform=${TARGETPLATFORM} python:3.11\n"
             "FROM \"base/x:${TARGETARCH}\"\n");
  assert_int_equal (d->n_bases, 6);
  assert_string_equal (d->bases[0].ref, "node:18");
  assert_string_equal (d->bases[1].ref, "node:18-slim");
  assert_string_equal (d->bases[2].ref, "gcc:12");
  assert_string_equal (d->bases[3].ref, "debian:12");
  assert_string_equal (d->bases[5].ref, "base/x:amd64");
  dockerfile_free (d);

  /* build args override ARG defaults, not the platform */
  d = parse_args ("ARG VERSION=18\nARG VARIANT=slim A=b\nFROM node:${VERSION}-${VARIANT}\n"
                  "FROM base/x:$TARGETARCH\n"
                  "ARG VERSION\nFROM node:$VERSION\n",
                  args, 3, NULL);
  assert_string_equal (d->bases[0].ref, "node:20-slim");
  assert_string_equal (d->bases[1].ref, "base/x:amd64");
  assert_string_equal (d->bases[2].ref, "node:20");
  dockerfile_free (d);

  /* an escaped $ is literal; single quotes do not expand */
  expect_fail ("ARG V=1\nFROM node:\\$V\n", "Dockerfile:2: FROM `node:$V`: the image reference");
  expect_fail ("ARG V=1\nFROM 'node:$V'\n", "FROM `node:$V`");
  /* an ARG after FROM is not seen by the next FROM */
  expect_fail ("FROM a\nARG V=1\nFROM node:${V}\n", "Dockerfile:3: FROM `node:`");
  expect_fail ("ARG EMPTY\nFROM $EMPTY\n", "Dockerfile:2: FROM `$EMPTY` is empty");
  expect_fail ("FROM ${X\n", "Dockerfile:1: a `${` without its `}`");
  expect_fail ("FROM ${X#a}\n", "unsupported variable syntax");
  expect_fail ("FROM ${}\n", "without a variable name");
  expect_fail ("ARG 1A=b\nFROM a\n", "Dockerfile:1: ARG `1A=b` is not a valid name");
  expect_fail ("ARG\nFROM a\n", "ARG needs a name");
  expect_fail ("FROM --platform=linux/arm64 a\n", "this runner builds linux/amd64 only");
  expect_fail ("FROM --pull a\n", "FROM has an unknown flag `--pull`");
  expect_fail ("FROM \"a\n", "an unterminated quote");
}

static void
test_stages_and_target (void **state)
{
  struct dockerfile *d;
  (void) state;

  /* the target stops collection: later stages are not built */
  d = parse_args ("FROM node:18 AS deps\nRUN --mount=type=secret,id=a x\n"
                  "FROM deps AS Test\nADD https://a.example/x /x\n"
                  "FROM node:18-slim\nRUN --mount=type=secret,id=b x\nADD http://b.example/ /y\n",
                  NULL, 0, "TEST");
  assert_int_equal (d->n_stages, 3);
  assert_int_equal (d->target, 1);
  assert_int_equal (d->n_bases, 1);
  assert_int_equal (d->n_secrets, 1);
  assert_string_equal (d->secrets[0].value, "a");
  assert_int_equal (d->n_urls, 1);
  dockerfile_free (d);

  expect_fail_code ("FROM a AS x\n", 11, "y", BVM_E_INVALID,
                    "`Dockerfile` has no stage named `y` (`dockerfile.target`)");
  expect_fail ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2: stage name `x` is used twice");
  expect_fail ("FROM a AS 1x\n", "Dockerfile:1: stage name `1x` is not valid");
  expect_fail ("FROM a x\n", "FROM must be `FROM [--platform=...] IMAGE [AS NAME]`");
  expect_fail ("FROM a AS b c\n", "FROM must be");
  expect_fail ("RUN x\nFROM a\n", "Dockerfile:1: RUN before the first FROM");
  expect_fail ("ARG A=1\n", "the Dockerfile has no FROM instruction");
  expect_fail ("# only a comment\n", "no FROM instruction");
  expect_fail ("", "no FROM instruction");
  expect_fail ("FROM a\nFROB x\n", "Dockerfile:2: unknown instruction `FROB`");
  expect_fail ("FROM a\nRUN <<EOF\necho\nEOF\n", "Dockerfile:3: unknown instruction `echo`");
  expect_fail ("FROM a\nONBUILD FROM b\n", "ONBUILD needs an instruction");
  {
    /* ONBUILD's instruction runs in the images built from this one */
    d = parse ("FROM a\nONBUILD ADD https://x.example/ /x\n");
    assert_int_equal (d->n_urls, 0);
    dockerfile_free (d);
  }
}

static void
test_copy_from (void **state)
{
  struct dockerfile *d;
  (void) state;

  d = parse ("FROM a AS one\nFROM b\nCOPY --from=one /x /x\nCOPY --from=0 /x /x\n"
             "COPY --chown=1:1 --from=base/tools:1 /t /t\n"
             "COPY [\"--from=x\", \"/a\"]\n"
             "COPY --from=\"ONE\" /y /y\n"
             "RUN --mount=type=bind,from=base/cache:2,target=/c make\n"
             "RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t x\n");
  assert_int_equal (d->n_bases, 4);
  assert_string_equal (d->bases[2].ref, "base/tools:1");
  assert_string_equal (d->bases[2].how, "COPY --from");
  assert_int_equal (d->bases[2].line, 5);
  assert_string_equal (d->bases[3].ref, "base/cache:2");
  assert_string_equal (d->bases[3].how, "RUN --mount from=");
  dockerfile_free (d);

  expect_fail ("FROM a\nCOPY --from=0 /x /x\n", "COPY --from `0`: there is no earlier stage");
  expect_fail ("FROM a AS me\nCOPY --from=me /x /x\n", "a stage cannot copy from itself");
  expect_fail ("FROM a\nCOPY --from=$X /x /x\n", "variables are not supported here");
  expect_fail ("FROM a\nCOPY --from=Bad:1 /x /x\n",
               "Dockerfile:2: COPY --from `Bad:1`: the image");
  expect_fail ("FROM a\nCOPY --from= /x /x\n", "COPY --from needs a stage or an image");
  expect_fail ("FROM a\nCOPY --frm=a /x /x\n", "COPY has an unknown flag `--frm=a`");
  expect_fail ("FROM a\nCOPY x\n", "COPY needs a source and a destination");
}

static void
test_secret_mounts (void **state)
{
  struct dockerfile *d;
  (void) state;

  d = parse (
      "FROM a\n"
      "RUN --mount=type=secret,id=NPM_TOKEN npm ci\n"
      "RUN --mount=type=secret,target=/run/secrets/api-key x\n"
      "RUN --mount=type=secret,id=NPM_TOKEN,required=true --mount=type=secret,id=b,env=B y\n"
      "RUN --mount=\"type=secret,id=q\" --network=none --security=sandbox z\n");
  assert_int_equal (d->n_secrets, 4);
  assert_string_equal (d->secrets[0].value, "NPM_TOKEN");
  assert_string_equal (d->secrets[1].value, "api-key");
  assert_string_equal (d->secrets[2].value, "b");
  assert_string_equal (d->secrets[3].value, "q");
  dockerfile_free (d);

  expect_fail ("FROM a\nRUN --mount=type=secret x\n",
               "Dockerfile:2: RUN --mount=type=secret needs "
               "an id");
  expect_fail ("FROM a\nRUN --mount=type=secret,id=$X x\n", "id `$X` is not valid");
  expect_fail ("FROM a\nRUN --mount=type=ssh git clone\n", "the build has no SSH agent");
  expect_fail ("FROM a\nRUN --mount=type=nfs x\n", "unknown type `nfs`");
  expect_fail ("FROM a\nRUN --privileged x\n", "RUN has an unknown flag `--privileged`");
  expect_fail ("FROM a\nRUN --network=bridge x\n", "must be default, none or host");
}

static void
test_add_urls (void **state)
{
  struct dockerfile *d;
  (void) state;

  d = parse ("FROM a\nADD https://example.com/a.tgz HTTP://Example.com:8080/b /dst/\n"
             "ADD --chown=1 [\"https://x.example/c\", \"/c\"]\n"
             "ADD local.tgz /l\nADD 'https://q.example/d' /d\n"
             "COPY https://not.fetched/ /x\n");
  assert_int_equal (d->n_urls, 4);
  assert_string_equal (d->urls[0].value, "https://example.com/a.tgz");
  assert_string_equal (d->urls[1].value, "HTTP://Example.com:8080/b");
  assert_string_equal (d->urls[2].value, "https://x.example/c");
  assert_int_equal (d->urls[2].line, 3);
  assert_string_equal (d->urls[3].value, "https://q.example/d");
  dockerfile_free (d);

  expect_fail ("FROM a\nADD https://$HOST/x /x\n", "Dockerfile:2: ADD https://$HOST/x: variables");
  expect_fail ("FROM a\nADD https://u:p@h.example/x /x\n", "a URL with credentials");
  expect_fail ("FROM a\nADD https:///x /x\n", "the URL has no host");
  expect_fail ("FROM a\nADD --unpack https://a/ /x\n", "ADD has an unknown flag");
  expect_fail ("FROM a\nADD https://a.example/\n", "ADD needs a source and a destination");
}

static void
test_caps (void **state)
{
  struct buf b = BUF_INIT (8u << 20);
  (void) state;

  /* over 1 MiB */
  {
    size_t n = DOCKERFILE_MAX_BYTES + 1;
    char *big = malloc (n + 1);
    assert_non_null (big);
    memset (big, '#', n);
    memcpy (big, "FROM a\n", 7);
    big[n] = '\0';
    expect_fail_code (big, n, NULL, BVM_E_LIMIT, "is larger than 1048576 bytes");
    free (big);
  }
  /* a logical line over 64 KiB, made of continuations */
  buf_adds (&b, "FROM a\nRUN x");
  for (int i = 0; i < 9000; i++)
    buf_adds (&b, " \\\n1234567");
  buf_adds (&b, "\n");
  expect_fail_code (buf_cstr (&b), b.len, NULL, BVM_E_LIMIT,
                    "Dockerfile:2: an instruction is longer than 65536 bytes");
  /* 65 stages */
  buf_reset (&b);
  for (int i = 0; i < 65; i++)
    buf_adds (&b, "FROM scratch\n");
  expect_fail_code (buf_cstr (&b), b.len, NULL, BVM_E_LIMIT, "Dockerfile:65: more than 64 stages");
  /* 4097 instructions */
  buf_reset (&b);
  buf_adds (&b, "FROM scratch\n");
  for (int i = 0; i < 4096; i++)
    buf_adds (&b, "ENV A=b\n");
  expect_fail_code (buf_cstr (&b), b.len, NULL, BVM_E_LIMIT,
                    "Dockerfile:4097: more than 4096 instructions");
  /* a stage name over 255 bytes */
  buf_reset (&b);
  buf_adds (&b, "FROM a AS ");
  for (int i = 0; i < 256; i++)
    buf_adds (&b, "x");
  expect_fail (buf_cstr (&b), "is not valid");
  /* a NUL byte */
  expect_fail_code ("FROM a\nRUN x\0y\n", 13, NULL, BVM_E_INVALID,
                    "Dockerfile:2: the Dockerfile contains a NUL byte");
  /* hostile text in an error is escaped, one line */
  expect_fail ("FROM a\nFR\x1b[31mOM x\n", "unknown instruction");
  buf_dispose (&b);
}

/* --- runner.json `dockerfile` -------------------------------------------------------------- */

static struct runner_config *
load_config (const char *dir, const char *json)
{
  char path[512];
  struct runner_config *c = NULL;
  bvm_error_t err = NULL;

  if (json == NULL)
    {
      assert_int_equal (config_load (&c, NULL, &err), 0);
      return c;
    }
  snprintf (path, sizeof path, "%s/runner.json", dir);
  t_write (path, json);
  if (config_load (&c, path, &err) < 0)
    fail_msg ("config: %s", bvm_error_msg (&err));
  return c;
}

static void
expect_config_fail (const char *dir, const char *json, const char *needle)
{
  char path[512];
  struct runner_config *c = NULL;
  bvm_error_t err = NULL;

  snprintf (path, sizeof path, "%s/runner.json", dir);
  t_write (path, json);
  assert_int_not_equal (config_load (&c, path, &err), 0);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  bvm_error_free (&err);
}

static void
test_config (void **state)
{
  char *dir = t_tmpdir ();
  struct runner_config *c;
  json_t *j;
  (void) state;

  c = load_config (dir, NULL);
  assert_int_equal (c->dockerfile.n_from_map, 6);
  assert_string_equal (c->dockerfile.from_map[0].key, "node:18");
  assert_string_equal (c->dockerfile.from_map[0].name, "docker.io/library/node:18");
  assert_string_equal (c->dockerfile.from_map[0].repository, "base/node");
  assert_string_equal (c->dockerfile.from_map[0].tag, "18-build");
  assert_int_equal (c->dockerfile.n_local_prefixes, 2);
  assert_string_equal (c->dockerfile.local_prefixes[0], "base/");
  j = config_to_json (c);
  assert_non_null (j);
  assert_string_equal (json_string_value (
                           json_object_get (json_object_get (json_object_get (j, "dockerfile"),
                                                             "from_map"),
                                            "node:18-slim")),
                       "base/node:18");
  json_decref (j);
  config_free (c);

  c = load_config (dir,
                   "{\"dockerfile\":{\"from_map\":{\"docker.io/library/ruby:3\":\"base/ruby\","
                   "\"golang:*\":\"base/golang\"},\"local_prefixes\":[\"platform/\"]}}");
  assert_int_equal (c->dockerfile.n_from_map, 2);
  assert_null (c->dockerfile.from_map[0].tag);
  assert_true (c->dockerfile.from_map[1].any_tag);
  assert_string_equal (c->dockerfile.from_map[1].name, "docker.io/library/golang:latest");
  assert_string_equal (c->dockerfile.local_prefixes[0], "platform/");
  config_free (c);

  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"Node:18\":\"base/node\"}}}",
                      "field `dockerfile.from_map.Node:18`");
  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"node@" DIGEST "\":\"base/node\"}}}",
                      "not a digest");
  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"node:18\":\"Base/Node\"}}}",
                      "must be `repository[:tag]`");
  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"node:18\":\"base/node:\"}}}",
                      "must be `repository[:tag]`");
  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"node:18\":1}}}", "must be a string");
  expect_config_fail (dir,
                      "{\"dockerfile\":{\"from_map\":{\"node:18\":\"a/b\",\"docker.io/library/"
                      "node:18\":\"a/c\"}}}",
                      "names the same image as another key");
  expect_config_fail (dir, "{\"dockerfile\":{\"from_map\":{\"node:*\":\"base/node:1\"}}}",
                      "a `:*` key maps to a repository without a tag");
  expect_config_fail (dir, "{\"dockerfile\":{\"local_prefixes\":[\"base\"]}}",
                      "field `dockerfile.local_prefixes[0]`");
  expect_config_fail (dir, "{\"dockerfile\":{\"local_prefixes\":[\"/\"]}}",
                      "field `dockerfile.local_prefixes[0]`");
  expect_config_fail (dir, "{\"dockerfile\":{\"map\":{}}}", "map");
  t_tmpdir_free (dir);
}

/* --- the plan -------------------------------------------------------------------------------- */

static void
expect_resolve (const struct runner_config *c, const char *ref, const char *repo,
                const char *reference, bool mapped)
{
  struct plan_base b;
  bvm_error_t err = NULL;
  if (plan_resolve_base (&b, c, ref, &err) < 0)
    fail_msg ("resolving `%s`: %s", ref, bvm_error_msg (&err));
  assert_string_equal (b.repository, repo);
  assert_string_equal (b.reference, reference);
  assert_int_equal (b.mapped, mapped);
  free (b.name);
  free (b.repository);
  free (b.reference);
}

static void
expect_resolve_fail (const struct runner_config *c, const char *ref, const char *needle)
{
  struct plan_base b;
  bvm_error_t err = NULL;
  assert_int_not_equal (plan_resolve_base (&b, c, ref, &err), 0);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  bvm_error_free (&err);
}

static void
test_resolve (void **state)
{
  char *dir = t_tmpdir ();
  struct runner_config *c;
  (void) state;

  c = load_config (dir, NULL);
  expect_resolve (c, "node:18", "base/node", "18-build", true);
  expect_resolve (c, "docker.io/library/node:18", "base/node", "18-build", true);
  expect_resolve (c, "library/node:18-slim", "base/node", "18", true);
  expect_resolve (c, "debian:bookworm", "base/debian", "12", true);
  expect_resolve (c, "base/node:18", "base/node", "18", false);
  expect_resolve (c, "base/node@" DIGEST, "base/node", DIGEST, false);
  expect_resolve (c, "apps/other-app/x:1", "apps/other-app/x", "1", false);
  expect_resolve (c, "127.0.0.1:5000/base/gcc:12", "base/gcc", "12", false);
  expect_resolve_fail (c, "alpine:3",
                       "`alpine:3` is not an image this runner provides (dockerfile.from_map maps "
                       "node:18, node:18-slim, debian:12");
  expect_resolve_fail (c, "evil.example/x:1", "`evil.example/x:1` is not an image this runner");
  /* a path under a local prefix with another registry's domain is not local */
  expect_resolve_fail (c, "evil.example/base/node:18", "is not an image this runner provides");
  expect_resolve_fail (c, "node", "`node` is not an image");
  expect_resolve_fail (c, "node@" DIGEST, "a digest of another registry's image cannot be mapped");
  expect_resolve_fail (c, "Node", "the image reference");
  config_free (c);

  c = load_config (dir, "{\"registry\":{\"url\":\"https://reg.internal:5443\"},"
                        "\"dockerfile\":{\"from_map\":{\"golang:*\":\"base/golang\","
                        "\"golang:1.19\":\"base/go:119\"},\"local_prefixes\":[\"platform/\"]}}");
  expect_resolve (c, "golang:1.21", "base/golang", "1.21", true);
  expect_resolve (c, "golang:1.19", "base/go", "119", true);
  expect_resolve (c, "reg.internal:5443/base/x:1", "base/x", "1", false);
  expect_resolve (c, "platform/x:1", "platform/x", "1", false);
  expect_resolve_fail (c, "base/node:18", "(dockerfile.from_map maps golang:*, golang:1.19)");
  expect_resolve_fail (c, "127.0.0.1:5000/base/x:1", "is not an image");
  config_free (c);
  t_tmpdir_free (dir);
}

static struct build_spec *
spec_of (const char *json)
{
  struct build_spec *s = NULL;
  bvm_error_t err = NULL;
  if (spec_parse (&s, json, strlen (json), &err) < 0)
    fail_msg ("spec: %s", bvm_error_msg (&err));
  return s;
}

static int
plan_df (const char *spec_json, const char *text, bvm_error_t *err, struct job_plan *p)
{
  struct runner_config *c = NULL;
  struct build_spec *s = spec_of (spec_json);
  int ret;

  assert_int_equal (config_load (&c, NULL, err), 0);
  memset (p, 0, sizeof *p);
  ret = plan_dockerfile (p, c, s, text, strlen (text), err);
  config_free (c);
  spec_free (s);
  return ret;
}

static void
expect_plan_fail (const char *spec_json, const char *text, const char *needle)
{
  struct job_plan p;
  bvm_error_t err = NULL;

  assert_int_not_equal (plan_df (spec_json, text, &err, &p), 0);
  if (strstr (bvm_error_msg (&err), needle) == NULL)
    fail_msg ("error \"%s\" does not contain \"%s\"", bvm_error_msg (&err), needle);
  assert_null (strchr (bvm_error_msg (&err), '\n'));
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  bvm_error_free (&err);
  plan_dispose (&p);
}

static void
test_plan (void **state)
{
  struct job_plan p;
  bvm_error_t err = NULL;
  (void) state;

  assert_int_equal (
      plan_df ("{\"dockerfile\":true,\"secrets\":[\"npmrc\"]}",
               "FROM node:18 AS b\nRUN --mount=type=secret,id=npmrc npm ci\n"
               "ADD https://registry.npmjs.org/x.tgz /x\nADD http://[::1]:8080/y /y\n"
               "ADD http://h.example /z\n"
               "FROM node:18-slim\nCOPY --from=b /a /a\n",
               &err, &p),
      0);
  assert_int_equal (p.n_bases, 2);
  assert_string_equal (p.bases[0].from, "node:18");
  assert_string_equal (p.bases[0].name, "docker.io/library/node:18");
  assert_string_equal (p.bases[0].repository, "base/node");
  assert_string_equal (p.bases[0].reference, "18-build");
  assert_int_equal (p.bases[1].line, 6);
  assert_int_equal (p.n_urls, 3);
  assert_string_equal (p.urls[0].hp.host, "registry.npmjs.org");
  assert_int_equal (p.urls[0].hp.port, 443);
  assert_string_equal (p.urls[1].hp.host, "::1");
  assert_int_equal (p.urls[1].hp.port, 8080);
  assert_int_equal (p.urls[2].hp.port, 80);
  plan_dispose (&p);

  expect_plan_fail ("{\"dockerfile\":true}", "FROM node:18\nFROM alpine:3\n",
                    "Dockerfile:2: FROM `alpine:3` is not an image this runner provides "
                    "(dockerfile.from_map maps node:18, ");
  expect_plan_fail ("{\"dockerfile\":true}", "FROM evil.example/x\n",
                    "Dockerfile:1: FROM `evil.example/x` is not an image");
  expect_plan_fail ("{\"dockerfile\":true}",
                    "FROM scratch AS x\nFROM base/n:1\nCOPY --from=ruby:3 / /\n",
                    "Dockerfile:3: COPY --from `ruby:3` is not an image");
  expect_plan_fail ("{\"dockerfile\":{\"path\":\"ops/Dockerfile\"},\"secrets\":[\"A\"]}",
                    "FROM base/n:1\nRUN --mount=type=secret,id=A a\n"
                    "RUN --mount=type=secret,id=B b\n",
                    "ops/Dockerfile:3: RUN --mount=type=secret,id=B: secret `B` is not granted");
  expect_plan_fail ("{\"dockerfile\":{\"args\":{\"NPM_TOKEN\":\"x\"}}}", "FROM base/n:1\n",
                    "build arg `NPM_TOKEN` looks like a secret: build args end up in the image's "
                    "history; grant it as a secret and use RUN --mount=type=secret,id=...");
  expect_plan_fail ("{\"dockerfile\":{\"args\":{\"db_password\":\"x\"}}}", "FROM base/n:1\n",
                    "build arg `db_password` looks like a secret");
  expect_plan_fail (
      "{\"dockerfile\":{\"args\":{\"deploy_key\":\"x\"}},\"secrets\":[\"DEPLOY_KEY\"]}",
      "FROM base/n:1\n", "build arg `deploy_key` is the name of the secret `DEPLOY_KEY`");
  expect_plan_fail ("{\"dockerfile\":{\"args\":{\"GH\":\"x\"}},\"secrets\":[{\"name\":\"gh\","
                    "\"env\":\"GH\"}]}",
                    "FROM base/n:1\n", "build arg `GH` is the name of the secret `gh`");
  expect_plan_fail ("{\"dockerfile\":true}", "FROM base/n:1\nADD https://bad_host/x /x\n",
                    "Dockerfile:2: ADD https://bad_host/x: ");
  expect_plan_fail ("{\"dockerfile\":true}", "FROM base/n:1\nADD https://h.example:0/x /x\n",
                    "Dockerfile:2: ADD https://h.example:0/x: ");
  expect_plan_fail ("{\"dockerfile\":{\"target\":\"nope\"}}", "FROM base/n:1 AS a\n",
                    "has no stage named `nope`");
  assert_true (plan_name_looks_secret ("MY_API_KEY"));
  assert_true (plan_name_looks_secret ("aws_access_key_id"));
  assert_false (plan_name_looks_secret ("NODE_ENV"));
}

static void
test_resources (void **state)
{
  struct runner_config *c = NULL;
  struct build_spec *s = spec_of ("{\"dockerfile\":true}");
  struct job_resources res;
  bvm_error_t err = NULL;
  (void) state;

  assert_int_equal (config_load (&c, NULL, &err), 0);
  assert_int_equal (plan_resolve_resources (&res, c, s, &err), 0);
  assert_true (res.disk_mib >= 4096 || res.disk_mib == c->limits.max_disk_mib);
  c->limits.max_disk_mib = 2048;
  c->defaults.disk_mib = 1024;
  assert_int_equal (plan_resolve_resources (&res, c, s, &err), 0);
  assert_int_equal (res.disk_mib, 2048);
  spec_free (s);
  s = spec_of ("{\"profile\":\"a\",\"steps\":[\"x\"]}");
  assert_int_equal (plan_resolve_resources (&res, c, s, &err), 0);
  assert_int_equal (res.disk_mib, 1024);
  spec_free (s);
  config_free (c);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_refs),          cmocka_unit_test (test_basic),
    cmocka_unit_test (test_continuations), cmocka_unit_test (test_escape_directive),
    cmocka_unit_test (test_args_in_from),  cmocka_unit_test (test_stages_and_target),
    cmocka_unit_test (test_copy_from),     cmocka_unit_test (test_secret_mounts),
    cmocka_unit_test (test_add_urls),      cmocka_unit_test (test_caps),
    cmocka_unit_test (test_config),        cmocka_unit_test (test_resolve),
    cmocka_unit_test (test_plan),          cmocka_unit_test (test_resources),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
