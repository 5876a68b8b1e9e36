/* test_policy.c - the policy language, roles and the default policies, as tables */
#include "support.h"

#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT "0123456789abcdef0123456789abcdef01234567"
#define OTHER_COMMIT "89abcdef0123456789abcdef0123456789abcdef"

static const struct policy_vars job1 = { "app1", COMMIT, "refs/heads/main", "j1" };

static struct policy *
parse_ok (const char *json, const char *name)
{
  struct policy *p = NULL;
  bvm_error_t err = NULL;
  if (policy_parse (&p, json, strlen (json), name, &err) < 0)
    fail_msg ("parsing %s: %s\n%s", name, bvm_error_msg (&err), json);
  return p;
}

static struct role *
mint (const char *policy, const char *boundary, const struct policy_vars *vars)
{
  cleanup_policy struct policy *p = parse_ok (policy, "t.json");
  cleanup_policy struct policy *b = boundary ? parse_ok (boundary, "b.json") : NULL;
  struct role *r = NULL;
  bvm_error_t err = NULL;
  if (role_mint (&r, p, b, vars, wall_s () + 600, &err) < 0)
    fail_msg ("minting: %s", bvm_error_msg (&err));
  return r;
}

/* "k=v;k2=v2" into entries (pointing into the copy in buf) */
static void
parse_ctx (struct policy_context *ctx, struct policy_context_entry *e, size_t max, char *buf)
{
  ctx->entries = e;
  ctx->n = 0;
  for (char *save = NULL, *tok = strtok_r (buf, ";", &save); tok;
       tok = strtok_r (NULL, ";", &save))
    {
      char *eq = strchr (tok, '=');
      assert_non_null (eq);
      assert_true (ctx->n < max);
      *eq = '\0';
      e[ctx->n].key = tok;
      e[ctx->n].value = eq + 1;
      ctx->n++;
    }
}

/* ------------------------------------------------------------------------ */
/* evaluation: one policy, one request, the expected decision                 */

struct eval_case
{
  const char *policy;
  const char *action;
  const char *resource;
  const char *ctx; /* "k=v;k=v" or NULL */
  bool allow;
  const char *why; /* a substring of the decision's `why` */
};

#define P(stmts) "{\"Version\":\"2012-10-17\",\"Statement\":[" stmts "]}"
#define ALLOW(act, res) "{\"Effect\":\"Allow\",\"Action\":" act ",\"Resource\":" res "}"
#define ALLOW_IF(act, res, cond)                                                                  \
  "{\"Effect\":\"Allow\",\"Action\":" act ",\"Resource\":" res ",\"Condition\":" cond "}"
#define ANY_ALLOW_IF(cond) ALLOW_IF ("\"*\"", "\"*\"", cond)
#define PUT "artifacts:PutObject"
#define OBJ "artifacts:apps/app1/x"

static const struct eval_case eval_cases[] = {
  /* default deny */
  { P (""), PUT, OBJ, NULL, false, "implicit deny: no statement allows it" },
  { P (ALLOW ("\"registry:PushImage\"", "\"*\"")), PUT, OBJ, NULL, false, "implicit deny" },
  /* Statement may be a single object */
  { "{\"Version\":\"2012-10-17\",\"Statement\":" ALLOW ("\"*\"", "\"*\"") "}", PUT, OBJ, NULL,
    true, "allowed by `t.json` Statement[0]" },
  /* `*` crosses `/` and `:`, matches the empty run, and alone matches everything */
  { P (ALLOW ("\"*\"", "\"artifacts:apps/*\"")), PUT, "artifacts:apps/a/b/c.tgz", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"registry:*\"")), "registry:PushImage", "registry:apps/a:v1", NULL, true,
    "" },
  { P (ALLOW ("\"*\"", "\"registry:apps/a*\"")), "registry:PushImage", "registry:apps/a:v1", NULL,
    true, "" },
  { P (ALLOW ("\"*\"", "\"registry:apps/a*\"")), "registry:PushImage", "registry:apps/a/b/c:v1",
    NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"*:apps/*\"")), PUT, OBJ, NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"artifacts:apps/x*\"")), PUT, "artifacts:apps/x", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"artifacts:apps/*/dist/*\"")), PUT, "artifacts:apps/a/c/dist/x", NULL,
    true, "" },
  { P (ALLOW ("\"*\"", "\"artifacts:apps/*/dist/*\"")), PUT, "artifacts:apps/a/c/dis/x", NULL,
    false, "implicit" },
  { P (ALLOW ("\"*\"", "\"*\"")), "logs:PutLogEvents", "logs:anything/at:all", NULL, true, "" },
  /* `?` is exactly one character */
  { P (ALLOW ("\"*\"", "\"registry:apps/app?:v1\"")), "registry:PushImage",
    "registry:apps/app1:v1", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"registry:apps/app?:v1\"")), "registry:PushImage",
    "registry:apps/app10:v1", NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "\"registry:apps/app?:v1\"")), "registry:PushImage", "registry:apps/app:v1",
    NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "\"registry:apps/a?b:v1\"")), "registry:PushImage", "registry:apps/a/b:v1",
    NULL, true, "" },
  /* action wildcards; action names match case-insensitively */
  { P (ALLOW ("\"registry:*\"", "\"*\"")), "registry:PullImage", "registry:base/x:1", NULL, true,
    "" },
  { P (ALLOW ("\"registry:*\"", "\"*\"")), PUT, OBJ, NULL, false, "implicit" },
  { P (ALLOW ("\"registry:Pu??Image\"", "\"*\"")), "registry:PushImage", "registry:x:1", NULL,
    true, "" },
  { P (ALLOW ("\"REGISTRY:pushimage\"", "\"*\"")), "registry:PushImage", "registry:x:1", NULL,
    true, "" },
  { P (ALLOW ("\"registry:PushImage\"", "\"*\"")), "Registry:PUSHIMAGE", "registry:x:1", NULL,
    true, "" },
  { P (ALLOW ("[\"logs:PutLogEvents\",\"registry:PushImage\"]", "\"*\"")), "registry:pushImage",
    "registry:x:1", NULL, true, "" },
  /* resources match case-sensitively */
  { P (ALLOW ("\"*\"", "\"registry:apps/App1:*\"")), "registry:PushImage", "registry:apps/app1:x",
    NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "[\"registry:apps/b:*\",\"registry:apps/app1:*\"]")), "registry:PushImage",
    "registry:apps/app1:x", NULL, true, "" },
  /* NotAction / NotResource */
  { P ("{\"Effect\":\"Allow\",\"NotAction\":\"registry:PushImage\",\"Resource\":\"*\"}"),
    "registry:PullImage", "registry:base/a:1", NULL, true, "" },
  { P ("{\"Effect\":\"Allow\",\"NotAction\":\"registry:PushImage\",\"Resource\":\"*\"}"),
    "registry:pushimage", "registry:base/a:1", NULL, false, "implicit" },
  { P ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"NotResource\":\"registry:base/*\"}"),
    "registry:PushImage", "registry:apps/a:1", NULL, true, "" },
  { P ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"NotResource\":\"registry:base/*\"}"),
    "registry:PushImage", "registry:base/a:1", NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "\"*\"") ",{\"Sid\":\"OnlyOwn\",\"Effect\":\"Deny\",\"Action\":\"*\","
                                "\"NotResource\":[\"artifacts:apps/app1/*\",\"logs:*\"]}"),
    PUT, "artifacts:apps/app2/x", NULL, false, "explicit deny by `t.json` statement `OnlyOwn`" },
  { P (ALLOW ("\"*\"", "\"*\"") ",{\"Sid\":\"OnlyOwn\",\"Effect\":\"Deny\",\"Action\":\"*\","
                                "\"NotResource\":[\"artifacts:apps/app1/*\",\"logs:*\"]}"),
    PUT, OBJ, NULL, true, "allowed by `t.json` Statement[0]" },
  { P (ALLOW ("\"*\"", "\"*\"") ",{\"Effect\":\"Deny\",\"NotAction\":\"logs:*\","
                                "\"Resource\":\"*\"}"),
    "logs:PutLogEvents", "logs:apps/a/j", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"*\"") ",{\"Effect\":\"Deny\",\"NotAction\":\"logs:*\","
                                "\"Resource\":\"*\"}"),
    PUT, OBJ, NULL, false, "explicit deny by `t.json` Statement[1]" },
  /* an explicit deny wins over any allow, in either order */
  { P ("{\"Sid\":\"DenyX\",\"Effect\":\"Deny\",\"Action\":\"artifacts:*\",\"Resource\":\"*\"},"
       "{\"Sid\":\"AllowAll\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}"),
    PUT, OBJ, NULL, false, "explicit deny by `t.json` statement `DenyX`" },
  { P ("{\"Sid\":\"AllowAll\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"},"
       "{\"Sid\":\"DenyX\",\"Effect\":\"Deny\",\"Action\":\"artifacts:*\",\"Resource\":\"*\"}"),
    PUT, OBJ, NULL, false, "explicit deny by `t.json` statement `DenyX`" },
  { P ("{\"Sid\":\"AllowAll\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"},"
       "{\"Sid\":\"DenyX\",\"Effect\":\"Deny\",\"Action\":\"artifacts:*\",\"Resource\":\"*\"}"),
    "logs:PutLogEvents", "logs:apps/app1/j1", NULL, true, "statement `AllowAll`" },
  /* variables are substituted at mint time, in resources and condition values */
  { P (ALLOW ("\"*\"", "\"artifacts:apps/${job:App}/${job:Commit}/*\"")), PUT,
    "artifacts:apps/app1/" COMMIT "/dist/app.tgz", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"artifacts:apps/${job:App}/${job:Commit}/*\"")), PUT,
    "artifacts:apps/app1/" OTHER_COMMIT "/dist/app.tgz", NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "\"logs:apps/${JOB:app}/${job:id}\"")), "logs:PutLogEvents",
    "logs:apps/app1/j1", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"logs:${job:Ref}/x\"")), "logs:PutLogEvents", "logs:refs/heads/main/x",
    NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:Owner\":\"${job:App}\"}}")), PUT, OBJ,
    "req:Owner=app1", true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:Owner\":\"${job:App}\"}}")), PUT, OBJ,
    "req:Owner=${job:App}", false, "implicit" },
  /* StringEquals / StringNotEquals / StringEqualsIgnoreCase on the job keys */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"job:App\":\"app1\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"job:App\":\"APP1\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEqualsIgnoreCase\":{\"job:App\":\"APP1\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringNotEquals\":{\"job:App\":\"app2\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringNotEquals\":{\"job:App\":\"app1\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"JOB:APP\":\"app1\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"job:Id\":\"j1\",\"job:Commit\":\"" COMMIT "\"}}")), PUT,
    OBJ, NULL, true, "" },
  /* the job keys come from the role, never from the caller's context */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"job:App\":\"app2\"}}")), PUT, OBJ, "job:App=app2",
    false, "implicit" },
  /* StringLike / StringNotLike */
  { P (ANY_ALLOW_IF ("{\"StringLike\":{\"job:Ref\":\"refs/heads/*\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringLike\":{\"job:Ref\":\"refs/tags/*\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringLike\":{\"job:Ref\":\"refs/heads/ma?n\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"job:Ref\":\"refs/heads/*\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotLike\":{\"job:Ref\":\"refs/tags/*\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringNotLike\":{\"job:Ref\":\"refs/*\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  /* Bool, with string or JSON boolean values; request values compare ignoring case */
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Signed\":\"true\"}}")), PUT, OBJ, "req:Signed=true", true,
    "" },
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Signed\":true}}")), PUT, OBJ, "req:Signed=TRUE", true, "" },
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Signed\":true}}")), PUT, OBJ, "req:Signed=false", false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Signed\":false}}")), PUT, OBJ, "req:Signed=false", true,
    "" },
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Signed\":true}}")), PUT, OBJ, "req:Signed=yes", false,
    "implicit" },
  /* Null */
  { P (ANY_ALLOW_IF ("{\"Null\":{\"req:Tag\":\"true\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"Null\":{\"req:Tag\":true}}")), PUT, OBJ, "req:Tag=x", false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"Null\":{\"req:Tag\":\"false\"}}")), PUT, OBJ, "req:Tag=x", true, "" },
  { P (ANY_ALLOW_IF ("{\"Null\":{\"req:Tag\":false}}")), PUT, OBJ, NULL, false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"Null\":{\"req:Tag\":[true,false]}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"Null\":{\"job:App\":\"false\"}}")), PUT, OBJ, NULL, true, "" },
  /* a key missing from the request: non-negated operators false, negated true */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEqualsIgnoreCase\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, NULL, false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringLike\":{\"req:Tag\":\"*\"}}")), PUT, OBJ, NULL, false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"Bool\":{\"req:Tag\":\"false\"}}")), PUT, OBJ, NULL, false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotEquals\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringNotLike\":{\"req:Tag\":\"*\"}}")), PUT, OBJ, NULL, true, "" },
  /* ...IfExists: true when the key is missing, the plain operator otherwise */
  { P (ANY_ALLOW_IF ("{\"StringEqualsIfExists\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringEqualsIfExists\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, "req:Tag=x",
    true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEqualsIfExists\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, "req:Tag=y",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotEqualsIfExists\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, NULL, true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringNotEqualsIfExists\":{\"req:Tag\":\"x\"}}")), PUT, OBJ, "req:Tag=x",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringLikeIfExists\":{\"req:Tag\":\"a*\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"StringLikeIfExists\":{\"req:Tag\":\"a*\"}}")), PUT, OBJ, "req:Tag=b",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotLikeIfExists\":{\"req:Tag\":\"a*\"}}")), PUT, OBJ, "req:Tag=ab",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEqualsIgnoreCaseIfExists\":{\"req:Tag\":\"X\"}}")), PUT, OBJ,
    "req:Tag=x", true, "" },
  { P (ANY_ALLOW_IF ("{\"BoolIfExists\":{\"req:Signed\":\"true\"}}")), PUT, OBJ, NULL, true, "" },
  { P (ANY_ALLOW_IF ("{\"BoolIfExists\":{\"req:Signed\":\"true\"}}")), PUT, OBJ,
    "req:Signed=false", false, "implicit" },
  /* several keys in one operator are ANDed; several operators too */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":\"1\",\"req:B\":\"2\"}}")), PUT, OBJ,
    "req:A=1;req:B=2", true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":\"1\",\"req:B\":\"2\"}}")), PUT, OBJ,
    "req:A=1;req:B=3", false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":\"1\",\"req:B\":\"2\"}}")), PUT, OBJ, "req:A=1",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":\"1\"},\"Bool\":{\"req:B\":true}}")), PUT, OBJ,
    "req:A=1;req:B=true", true, "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":\"1\"},\"Bool\":{\"req:B\":true}}")), PUT, OBJ,
    "req:A=1;req:B=false", false, "implicit" },
  /* several values for one key are ORed; negated: matches none of them */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":[\"1\",\"2\"]}}")), PUT, OBJ, "req:A=2", true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":[\"1\",\"2\"]}}")), PUT, OBJ, "req:A=3", false,
    "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotEquals\":{\"req:A\":[\"1\",\"2\"]}}")), PUT, OBJ, "req:A=2",
    false, "implicit" },
  { P (ANY_ALLOW_IF ("{\"StringNotEquals\":{\"req:A\":[\"1\",\"2\"]}}")), PUT, OBJ, "req:A=3",
    true, "" },
  { P (ANY_ALLOW_IF ("{\"StringLike\":{\"req:A\":[\"x*\",\"*y\"]}}")), PUT, OBJ, "req:A=ay", true,
    "" },
  { P (ANY_ALLOW_IF ("{\"StringNotLike\":{\"req:A\":[\"x*\",\"*y\"]}}")), PUT, OBJ, "req:A=ay",
    false, "implicit" },
  /* context keys are looked up case-insensitively */
  { P (ANY_ALLOW_IF ("{\"StringEquals\":{\"Req:Tag\":\"x\"}}")), PUT, OBJ, "req:TAG=x", true, "" },
  /* a conditional Deny */
  { P (ALLOW (
        "\"*\"",
        "\"*\"") ",{\"Sid\":\"NoProd\",\"Effect\":\"Deny\",\"Action\":\"*\","
                 "\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"req:Env\":\"prod\"}}}"),
    PUT, OBJ, "req:Env=prod", false, "explicit deny by `t.json` statement `NoProd`" },
  { P (ALLOW (
        "\"*\"",
        "\"*\"") ",{\"Sid\":\"NoProd\",\"Effect\":\"Deny\",\"Action\":\"*\","
                 "\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"req:Env\":\"prod\"}}}"),
    PUT, OBJ, "req:Env=dev", true, "" },
  { P (ALLOW (
        "\"*\"",
        "\"*\"") ",{\"Sid\":\"NoProd\",\"Effect\":\"Deny\",\"Action\":\"*\","
                 "\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{\"req:Env\":\"prod\"}}}"),
    PUT, OBJ, NULL, true, "" },
  /* requests that could escape a prefix are refused before matching */
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/../app2/x", NULL, false,
    "explicit deny: the resource has a `.` or `..` path segment" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/./x", NULL, false,
    "`..` path segment" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/x/..", NULL, false, "path segment" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:..", NULL, false, "path segment" },
  { P (ALLOW ("\"*\"", "\"*\"")), "registry:PushImage", "registry:apps/a:..", NULL, false,
    "path segment" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1//x", NULL, false, "(`//`)" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/\nx", NULL, false,
    "control character" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/\x7fx", NULL, false,
    "control character" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "", NULL, false, "the resource is empty" },
  { P (ALLOW ("\"*\"", "\"*\"")), "", OBJ, NULL, false, "the action is empty" },
  { P (ALLOW ("\"*\"", "\"*\"")), "artifacts:Put Object", OBJ, NULL, false,
    "the action contains" },
  /* names that only look like segments are fine */
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/.../x.tar.gz", NULL, true, "" },
  { P (ALLOW ("\"*\"", "\"*\"")), PUT, "artifacts:apps/app1/.hidden", NULL, true, "" },
/* net: one label wildcard, exact names, port wildcards; requests are
   * `net:<host>:<port>` as netaddr_resource makes them */
#define NET "net:Connect"
#define NET_ALLOW(res) P (ALLOW ("\"net:Connect\"", "\"" res "\""))
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:a.example.com:443", NULL, true, "" },
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:a.b.example.com:443", NULL, true, "" },
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:example.com:443", NULL, false, "implicit" },
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:evilexample.com:443", NULL, false, "implicit" },
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:a.example.com:80", NULL, false, "implicit" },
  { NET_ALLOW ("net:*.example.com:443"), NET, "net:a.example.com.evil:443", NULL, false,
    "implicit" },
  { NET_ALLOW ("net:registry.npmjs.org:443"), NET, "net:registry.npmjs.org:443", NULL, true, "" },
  { NET_ALLOW ("net:registry.npmjs.org:443"), "NET:connect", "net:registry.npmjs.org:443", NULL,
    true, "" },
  { NET_ALLOW ("net:registry.npmjs.org:443"), NET, "net:registry.npmjs.org:4430", NULL, false,
    "implicit" },
  { NET_ALLOW ("net:registry.npmjs.org:443"), NET, "net:registry.npmjs.org:44", NULL, false,
    "implicit" },
  { NET_ALLOW ("net:registry.npmjs.org:443"), NET, "net:REGISTRY.npmjs.org:443", NULL, false,
    "implicit" },
  { NET_ALLOW ("net:example.com:*"), NET, "net:example.com:8080", NULL, true, "" },
  { NET_ALLOW ("net:example.com:*"), NET, "net:example.com:1", NULL, true, "" },
  { NET_ALLOW ("net:example.com:*"), NET, "net:a.example.com:8080", NULL, false, "implicit" },
  { NET_ALLOW ("net:*:443"), NET, "net:[::1]:443", NULL, true, "" },
  { NET_ALLOW ("net:[::1]:*"), NET, "net:[::1]:8080", NULL, true, "" },
  { NET_ALLOW ("net:127.0.0.1:8080"), NET, "net:127.0.0.1:8080", NULL, true, "" },
  { NET_ALLOW ("net:*"), NET, "net:anything.example:9", NULL, true, "" },
  { NET_ALLOW ("net:*"), PUT, OBJ, NULL, false, "implicit" },
  { P (ALLOW ("\"net:*\"", "\"*\"")), NET, "net:a.example:443", NULL, true, "" },
  { P (ALLOW ("\"registry:*\"", "\"*\"")), NET, "net:a.example:443", NULL, false, "implicit" },
  { P (ALLOW ("\"*\"", "\"*\"") ",{\"Effect\":\"Deny\",\"Action\":\"net:Connect\","
                                "\"Resource\":\"net:*.internal.example:*\"}"),
    NET, "net:db.internal.example:5432", NULL, false, "explicit deny" },
  { NET_ALLOW ("net:*"), NET, "net:..:443", NULL, false, "path segment" },
};

static void
test_eval_table (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (eval_cases); i++)
    {
      const struct eval_case *c = &eval_cases[i];
      struct role *r = mint (c->policy, NULL, &job1);
      struct policy_context_entry e[8];
      struct policy_context ctx;
      struct policy_decision d;
      char buf[256] = "";

      if (c->ctx != NULL)
        snprintf (buf, sizeof buf, "%s", c->ctx);
      parse_ctx (&ctx, e, ARRAY_SIZE (e), buf);
      role_decide (r, c->action, c->resource, &ctx, &d);
      if (d.allowed != c->allow || strstr (d.why, c->why) == NULL)
        fail_msg ("case %zu: %s %s ctx=%s: got %s (%s), expected %s (%s)\npolicy: %s", i,
                  c->action, c->resource, c->ctx ? c->ctx : "-", d.allowed ? "allow" : "deny",
                  d.why, c->allow ? "allow" : "deny", c->why, c->policy);
      /* role_authorize agrees, and a denial is BVM_E_DENIED */
      if (c->ctx == NULL)
        {
          bvm_error_t err = NULL;
          int ret = role_authorize (r, c->action, c->resource, &err);
          assert_int_equal (ret == 0, c->allow);
          if (ret < 0)
            {
              assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
              assert_non_null (strstr (bvm_error_msg (&err), d.why));
            }
          bvm_error_free (&err);
        }
      role_free (r);
    }
}

/* ------------------------------------------------------------------------ */
/* load errors                                                               */

struct load_case
{
  const char *json;
  const char *needle;
};

#define S1(body)                                                                                  \
  "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"", "\"*\"") "," body "]}"

static const struct load_case load_cases[] = {
  { "{", "policy `t.json` is not valid JSON" },
  { "{\"Statement\":[],\"Statement\":[]}", "duplicate" },
  { "[]", "policy `t.json`: the document must be a JSON object" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[],\"Foo\":1}",
    "policy `t.json`: unknown top-level key `Foo`" },
  { "{\"version\":\"2012-10-17\",\"Statement\":[]}", "unknown top-level key `version`" },
  { "{\"Version\":\"2010-01-01\",\"Statement\":[]}", "unsupported `Version` `2010-01-01`" },
  { "{\"Version\":2012,\"Statement\":[]}", "unsupported `Version` (not a string)" },
  { "{\"Id\":5,\"Statement\":[]}", "`Id` must be a string" },
  { "{\"Version\":\"2012-10-17\"}", "missing `Statement`" },
  { "{\"Statement\":\"x\"}", "`Statement` must be an object or an array of objects" },
  { "{\"Statement\":[1]}", "Statement[0] must be an object" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"Foo\":1}"),
    "policy `t.json`: unknown statement key `Foo` in Statement[1]" },
  { "{\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"Foo\":1}}",
    "unknown statement key `Foo` in Statement" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"Principal\":\"*\"}"),
    "unknown statement key `Principal` in Statement[1]" },
  { S1 ("{\"Effect\":\"Allow\",\"action\":\"*\",\"Resource\":\"*\"}"),
    "unknown statement key `action` in Statement[1]" },
  { S1 ("{\"Action\":\"*\",\"Resource\":\"*\"}"), "missing `Effect` in Statement[1]" },
  { S1 ("{\"Effect\":\"Maybe\",\"Action\":\"*\",\"Resource\":\"*\"}"),
    "unknown effect `Maybe` in Statement[1]: expected `Allow` or `Deny`" },
  { S1 ("{\"Effect\":\"allow\",\"Action\":\"*\",\"Resource\":\"*\"}"), "unknown effect `allow`" },
  { S1 ("{\"Effect\":true,\"Action\":\"*\",\"Resource\":\"*\"}"),
    "`Effect` in Statement[1] must be a string" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"NotAction\":\"*\",\"Resource\":\"*\"}"),
    "Statement[1] has both `Action` and `NotAction`" },
  { S1 ("{\"Effect\":\"Allow\",\"Resource\":\"*\"}"),
    "Statement[1] needs `Action` or `NotAction`" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"NotResource\":\"*\"}"),
    "Statement[1] has both `Resource` and `NotResource`" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\"}"),
    "Statement[1] needs `Resource` or `NotResource`" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":5,\"Resource\":\"*\"}"),
    "`Action` in Statement[1] must be a string or an array of strings" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":[\"*\",5],\"Resource\":\"*\"}"),
    "`Action` in Statement[1] must be a string or an array of strings" },
  { S1 ("{\"Effect\":\"Allow\",\"NotAction\":[],\"Resource\":\"*\"}"),
    "`NotAction` in Statement[1] is an empty array" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":[]}"),
    "`Resource` in Statement[1] is an empty array" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"\"}"),
    "`Resource` in Statement[1] has an empty value" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"artifacts:a\\nb\"}"),
    "`Resource` value `artifacts:a\\x0ab` in Statement[1] contains a control character" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"PushImage\",\"Resource\":\"*\"}"),
    "action `PushImage` in Statement[1] must be `*` or `service:Action`" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"registry:PushImag\",\"Resource\":\"*\"}"),
    "action `registry:PushImag` in Statement[1] matches no known action" },
  { S1 ("{\"Effect\":\"Allow\",\"NotAction\":\"s3:*\",\"Resource\":\"*\"}"),
    "action `s3:*` in Statement[1] matches no known action" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"apps/*\"}"),
    "resource `apps/*` in Statement[1] must be `*` or `service:name`" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"s3:apps/*\"}"),
    "resource `s3:apps/*` in Statement[1] names no known service" },
  { S1 ("{\"Sid\":\"has space\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}"),
    "`Sid` in Statement[1] must be 1 to 128 ASCII letters and digits" },
  { S1 ("{\"Sid\":7,\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}"),
    "`Sid` in Statement[1] must be" },
  { "{\"Statement\":[{\"Sid\":\"A\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"},"
    "{\"Sid\":\"A\",\"Effect\":\"Deny\",\"Action\":\"*\",\"Resource\":\"*\"}]}",
    "duplicate Sid `A` in Statement[1]" },
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"Condition\":[]}"),
    "`Condition` in Statement[1] must be an object" },
  { S1 (ANY_ALLOW_IF ("{\"StringFoo\":{\"req:A\":\"x\"}}")),
    "unknown condition operator `StringFoo` in Statement[1]" },
  { S1 (ANY_ALLOW_IF ("{\"NumericEquals\":{\"req:A\":\"1\"}}")),
    "unknown condition operator `NumericEquals` in Statement[1]" },
  { S1 (ANY_ALLOW_IF ("{\"ForAnyValue:StringEquals\":{\"req:A\":\"1\"}}")),
    "unknown condition operator `ForAnyValue:StringEquals`" },
  { S1 (ANY_ALLOW_IF ("{\"stringequals\":{\"req:A\":\"1\"}}")),
    "unknown condition operator `stringequals`" },
  { S1 (ANY_ALLOW_IF ("{\"IfExists\":{\"req:A\":\"1\"}}")),
    "unknown condition operator `IfExists`" },
  { S1 (ANY_ALLOW_IF ("{\"NullIfExists\":{\"req:A\":\"true\"}}")),
    "unknown condition operator `NullIfExists` in Statement[1] (`Null` already tests" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":\"x\"}")),
    "condition operator `StringEquals` in Statement[1] must map keys to values" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{}}")),
    "condition operator `StringEquals` in Statement[1] has no keys" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{\"nokey\":\"x\"}}")),
    "condition key `nokey` in Statement[1] must look like `prefix:Name`" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:*\":\"x\"}}")), "condition key `req:*`" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:${job:App}\":\"x\"}}")),
    "condition key `req:${job:App}`" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":5}}")),
    "`Condition.StringEquals.req:A` in Statement[1] must be a string or an array of strings" },
  { S1 (ANY_ALLOW_IF ("{\"StringEquals\":{\"req:A\":[]}}")), "is an empty array" },
  { S1 (ANY_ALLOW_IF ("{\"Bool\":{\"req:A\":\"yes\"}}")),
    "`Condition.Bool.req:A` in Statement[1] must be `true` or `false`" },
  { S1 (ANY_ALLOW_IF ("{\"Null\":{\"req:A\":1}}")), "must be `true` or `false`" },
  { S1 (ANY_ALLOW_IF ("{\"Bool\":{\"req:A\":[]}}")), "is an empty array" },
  /* variables */
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/${job:Foo}/*\"") "]}",
    "unknown policy variable `${job:Foo}` in Statement[0]" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW (
        "\"*\"", "\"artifacts:apps/${aws:username}/*\"") "]}",
    "unknown policy variable `${aws:username}`" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/${*}/*\"") "]}",
    "unknown policy variable `${*}`" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ANY_ALLOW_IF (
        "{\"StringEquals\":{\"req:A\":\"${job:Nope}\"}}") "]}",
    "unknown policy variable `${job:Nope}`" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/${job:App\"") "]}",
    "unterminated policy variable in `artifacts:apps/${job:App` in Statement[0]" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"registry:${job:App}\"", "\"*\"") "]}",
    "policy variables are not allowed in `Action`" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/${job:App}*\"") "]}",
    "policy variable `${job:App}` in resource `artifacts:apps/${job:App}*` in Statement[0] must be "
    "a whole path segment" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/x${job:App}/\"") "]}",
    "must be a whole path segment" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:${job:Commit}-x\"") "]}",
    "must be a whole path segment" },
  { "{\"Statement\":[" ALLOW ("\"*\"", "\"artifacts:apps/${job:App}/*\"") "]}",
    "policy variables need `\"Version\": \"2012-10-17\"`" },
  { "{\"Version\":\"2008-10-17\",\"Statement\":[" ALLOW ("\"*\"",
                                                         "\"artifacts:apps/${job:App}/*\"") "]}",
    "policy variables need" },
  /* net: patterns that could never match a request */
  { S1 ("{\"Effect\":\"Allow\",\"Action\":\"net:Conect\",\"Resource\":\"*\"}"),
    "action `net:Conect` in Statement[1] matches no known action" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:Example.com:443\"")),
    "resource `net:Example.com:443` in Statement[1]: upper-case letters in a host never match" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com\"")),
    "resource `net:example.com` in Statement[1]: it must be `net:*` or `net:<host>:<port>`" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:0443\"")),
    "the port must be `*` or a number from 1 to 65535" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:0\"")), "the port must be" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:65536\"")), "the port must be" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:https\"")), "the port must be" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:4*\"")), "the port must be" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:example.com:\"")), "the port must be" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net::443\"")), "empty host" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:a_b.example:443\"")), "invalid character in a host" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:a/b:443\"")), "invalid character in a host" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:[::1:443\"")), "it must be `net:*` or" },
  { S1 (ALLOW ("\"net:Connect\"", "\"net:[::1]\"")), "it must be `net:*` or" },
  { "{\"Version\":\"2012-10-17\",\"Statement\":[" ALLOW ("\"*\"", "\"net:${job:App}:443\"") "]}",
    "invalid character in a host" },
};

static void
test_load_errors (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (load_cases); i++)
    {
      struct policy *p = NULL;
      bvm_error_t err = NULL;
      int ret = policy_parse (&p, load_cases[i].json, strlen (load_cases[i].json), "t.json", &err);
      if (ret >= 0)
        fail_msg ("case %zu parsed, expected \"%s\":\n%s", i, load_cases[i].needle,
                  load_cases[i].json);
      if (strstr (bvm_error_msg (&err), load_cases[i].needle) == NULL)
        fail_msg ("case %zu: \"%s\" does not contain \"%s\"", i, bvm_error_msg (&err),
                  load_cases[i].needle);
      assert_true (bvm_error_get_code (&err) == BVM_E_INVALID
                   || bvm_error_get_code (&err) == BVM_E_LIMIT);
      assert_null (p);
      bvm_error_free (&err);
    }
}

static void
test_load_limits_and_files (void **state)
{
  char *d = t_tmpdir ();
  char path[512];
  struct policy *p = NULL;
  bvm_error_t err = NULL;
  (void) state;

  /* too many statements */
  {
    cleanup_free char *big = NULL;
    size_t cap = 200 * 80, o = 0;
    big = malloc (cap);
    o += (size_t) snprintf (big + o, cap - o, "{\"Statement\":[");
    for (int i = 0; i <= POLICY_MAX_STATEMENTS; i++)
      o += (size_t) snprintf (big + o, cap - o, "%s" ALLOW ("\"*\"", "\"*\""), i ? "," : "");
    snprintf (big + o, cap - o, "]}");
    assert_fails_with (policy_parse (&p, big, strlen (big), "t.json", &err), &err,
                       "more than 100 statements");
  }
  /* a pattern over the length cap, a document over the size cap */
  {
    cleanup_free char *big = malloc (POLICY_MAX_BYTES + 100);
    int n = snprintf (big, 100,
                      "{\"Statement\":["
                      "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"artifacts:");
    memset (big + n, 'a', POLICY_MAX_PATTERN);
    strcpy (big + n + POLICY_MAX_PATTERN, "\"}]}");
    assert_fails_with (policy_parse (&p, big, strlen (big), "t.json", &err), &err,
                       "`Resource` value in Statement[0] is longer than 1024 bytes");
    memset (big, ' ', POLICY_MAX_BYTES + 1);
    assert_fails_with (policy_parse (&p, big, POLICY_MAX_BYTES + 1, "t.json", &err), &err,
                       "over the limit");
  }
  /* a file is named by its path */
  snprintf (path, sizeof path, "%s/mine.json", d);
  t_write (path,
           "{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"X\":1}]}");
  {
    char needle[600];
    snprintf (needle, sizeof needle, "policy `%s`: unknown statement key `X` in Statement[0]",
              path);
    assert_fails_with (policy_load_file (&p, path, &err), &err, needle);
  }
  snprintf (path, sizeof path, "%s/missing.json", d);
  assert_fails_with (policy_load_file (&p, path, &err), &err, "No such file");
  snprintf (path, sizeof path, "%s/ok.json", d);
  t_write (path, P (ALLOW ("\"*\"", "\"*\"") "," ALLOW ("\"*\"", "\"*\"")));
  assert_ok (policy_load_file (&p, path, &err), &err);
  assert_string_equal (policy_name (p), path);
  assert_int_equal (policy_statement_count (p), 2);
  assert_non_null (json_object_get (policy_json (p), "Statement"));
  policy_free (p);
  t_tmpdir_free (d);
}

/* ------------------------------------------------------------------------ */
/* the matcher on its own                                                    */

static void
test_wildcard_match (void **state)
{
  static const struct
  {
    const char *p, *s;
    bool icase, match;
  } cases[] = {
    { "", "", false, true },
    { "", "a", false, false },
    { "*", "", false, true },
    { "*", "a/b:c", false, true },
    { "a*", "a", false, true },
    { "a*b", "ab", false, true },
    { "a*b", "a/x:y/b", false, true },
    { "a*b", "a/x:y/bc", false, false },
    { "a*b*c", "abbbc", false, true },
    { "a*b*c", "acb", false, false },
    { "**", "x", false, true },
    { "?", "", false, false },
    { "?", "/", false, true },
    { "??", "a", false, false },
    { "a?c", "abc", false, true },
    { "a?c", "abbc", false, false },
    { "*?", "", false, false },
    { "*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false, false },
    { "ABC", "abc", false, false },
    { "ABC", "abc", true, true },
    { "a?C", "Abc", true, true },
    { "apps/app1/*", "apps/app10/x", false, false },
    { "apps/app1:*", "apps/app10:x", false, false },
    { "apps/app1*", "apps/app10/x", false, true }, /* why prefixes end in `/` or `:` */
    /* matching is literal: role_decide refuses `..` before it gets here */
    { "artifacts:apps/a/*", "artifacts:apps/a/../b", false, true },
  };
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    if (policy_wildcard_match (cases[i].p, cases[i].s, cases[i].icase) != cases[i].match)
      fail_msg ("`%s` vs `%s`: expected %d", cases[i].p, cases[i].s, cases[i].match);
}

/* ------------------------------------------------------------------------ */
/* roles                                                                     */

static void
test_role_mint (void **state)
{
  cleanup_policy struct policy *p
      = parse_ok (P (ALLOW ("\"*\"", "\"artifacts:apps/${job:App}/*\"")), "t.json");
  struct role *r = NULL, *r2 = NULL;
  bvm_error_t err = NULL;
  regex_t re;
  (void) state;

  assert_ok (role_mint (&r, p, NULL, &job1, 2000000000, &err), &err);
  assert_int_equal (regcomp (&re, "^role-j1-[0-9a-f]{8}$", REG_EXTENDED | REG_NOSUB), 0);
  assert_int_equal (regexec (&re, role_id (r), 0, NULL, 0), 0);
  assert_ok (role_mint (&r2, p, NULL, &job1, 2000000000, &err), &err);
  assert_string_not_equal (role_id (r), role_id (r2));
  assert_int_equal (role_expires_at (r), 2000000000);
  assert_null (role_boundary (r));
  assert_string_equal (policy_name (role_policy (r)), "t.json");
  regfree (&re);
  role_free (r2);
  role_free (r);

  /* no job id: still a role id */
  {
    struct policy_vars v = { "app1", NULL, NULL, NULL };
    assert_ok (role_mint (&r, p, NULL, &v, 2000000000, &err), &err);
    assert_int_equal (strncmp (role_id (r), "role-", 5), 0);
    assert_int_equal (strlen (role_id (r)), 13);
    role_free (r);
  }
  /* a variable the template uses needs a value; an unused one need not */
  {
    struct policy_vars v = { NULL, COMMIT, NULL, "j1" };
    assert_fails_with (role_mint (&r, p, NULL, &v, 2000000000, &err), &err,
                       "policy `t.json` uses `${job:App}` but the job has no value for it");
    assert_fails_with (role_mint (&r, p, NULL, NULL, 2000000000, &err), &err, "`${job:App}`");
  }
  assert_fails_with (role_mint (&r, p, NULL, &job1, 0, &err), &err, "needs an expiry");
}

static void
test_role_mint_refuses_values (void **state)
{
  static const struct
  {
    struct policy_vars v;
    const char *needle;
  } bad[] = {
    { { "a/b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `a/b` is not allowed" },
    { { "a*", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `a*`" },
    { { "*", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `*`" },
    { { "a?", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "a$b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "${job:Id}", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "a:b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "..", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `..`" },
    { { ".", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "a b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "a\nb", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `a\\x0ab`" },
    { { "a\x7f", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "caf\xc3\xa9", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "app1", "..", "refs/heads/main", "j1" }, "`${job:Commit}` value `..`" },
    { { "app1", "a/b", "refs/heads/main", "j1" }, "`${job:Commit}`" },
    { { "app1", COMMIT, "refs/../x", "j1" }, "`${job:Ref}` value `refs/../x`" },
    { { "app1", COMMIT, "refs//x", "j1" }, "`${job:Ref}`" },
    { { "app1", COMMIT, "/refs/x", "j1" }, "`${job:Ref}`" },
    { { "app1", COMMIT, "refs/x/", "j1" }, "`${job:Ref}`" },
    { { "app1", COMMIT, "refs/*", "j1" }, "`${job:Ref}`" },
    { { "a{b}", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "a`b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}` value `a\\x60b`" },
    { { "a\\b", COMMIT, "refs/heads/main", "j1" }, "`${job:App}`" },
    { { "app1", COMMIT, "refs/heads/ma in", "j1" }, "`${job:Ref}`" },
    { { "app1", COMMIT, "refs/heads/main", "j/1" }, "`${job:Id}`" },
    { { "app1", COMMIT, "refs/heads/main", "j?" }, "`${job:Id}`" },
  };
  cleanup_policy struct policy *p = NULL;
  struct role *r = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (policy_load_builtin (&p, false, &err), &err);
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      int ret = role_mint (&r, p, NULL, &bad[i].v, 2000000000, &err);
      if (ret >= 0)
        fail_msg ("case %zu minted", i);
      assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
      if (strstr (bvm_error_msg (&err), bad[i].needle) == NULL)
        fail_msg ("case %zu: \"%s\" lacks \"%s\"", i, bvm_error_msg (&err), bad[i].needle);
      bvm_error_free (&err);
    }
  /* what the deploy-request parser produces is fine */
  {
    struct policy_vars v = { "my-app-2", COMMIT, "refs/tags/v1.2.3", "d-42.retry_1" };
    assert_ok (role_mint (&r, p, NULL, &v, 2000000000, &err), &err);
    role_free (r);
  }
}

static void
test_role_authorize_messages (void **state)
{
  struct role *r;
  bvm_error_t err = NULL;
  char needle[512];
  (void) state;

  r = mint (P ("{\"Sid\":\"PushOwn\",\"Effect\":\"Allow\",\"Action\":\"registry:PushImage\","
               "\"Resource\":\"registry:apps/${job:App}:*\"},"
               "{\"Sid\":\"DenyX\",\"Effect\":\"Deny\",\"Action\":\"registry:PushImage\","
               "\"Resource\":\"registry:apps/${job:App}:x\"}," ALLOW ("\"artifacts:*\"", "\"*\"")),
            P (ALLOW ("\"registry:*\"", "\"*\"")), &job1);
  assert_ok (role_authorize (r, "registry:PushImage", "registry:apps/app1:v1", &err), &err);

  snprintf (needle, sizeof needle,
            "role `%s` denies `registry:PushImage` on `registry:apps/other:abc` (implicit deny: "
            "no statement allows it)",
            role_id (r));
  assert_fails_with (role_authorize (r, "registry:PushImage", "registry:apps/other:abc", &err),
                     &err, needle);
  snprintf (needle, sizeof needle,
            "role `%s` denies `registry:PushImage` on `registry:apps/app1:x` (explicit deny by "
            "`t.json` statement `DenyX`)",
            role_id (r));
  assert_fails_with (role_authorize (r, "registry:PushImage", "registry:apps/app1:x", &err), &err,
                     needle);
  snprintf (
      needle, sizeof needle,
      "role `%s` denies `artifacts:PutObject` on `artifacts:apps/app1/x` (not allowed by the "
      "permission boundary `b.json`)",
      role_id (r));
  assert_fails_with (role_authorize (r, PUT, "artifacts:apps/app1/x", &err), &err, needle);
  /* untrusted bytes never reach the message raw */
  snprintf (
      needle, sizeof needle,
      "denies `artifacts:PutObject` on `artifacts:a\\x0ab\\x60c` (explicit deny: the resource "
      "contains a control character)");
  assert_fails_with (role_authorize (r, PUT, "artifacts:a\nb`c", &err), &err, needle);
  assert_fails_with (role_authorize (r, PUT, NULL, &err), &err,
                     "(explicit deny: no resource given)");
  assert_fails_with (role_authorize (r, NULL, OBJ, &err), &err,
                     "(explicit deny: no action given)");
  {
    struct policy_decision d;
    role_decide (r, "registry:PushImage", "registry:apps/app1:v1", NULL, &d);
    assert_true (d.allowed);
    assert_int_equal (d.reason, POLICY_ALLOWED);
    assert_int_equal (d.statement, 0);
    assert_string_equal (d.why, "allowed by `t.json` statement `PushOwn`");
    role_decide (r, "registry:PushImage", "registry:apps/app1:x", NULL, &d);
    assert_int_equal (d.reason, POLICY_EXPLICIT_DENY);
    assert_int_equal (d.statement, 1);
    role_decide (r, PUT, "artifacts:apps/app1/x", NULL, &d);
    assert_int_equal (d.reason, POLICY_BOUNDARY_DENY);
    assert_int_equal (d.statement, -1);
    role_decide (r, PUT, "artifacts:apps/app1/../x", NULL, &d);
    assert_int_equal (d.reason, POLICY_INVALID_REQUEST);
    role_decide (r, "logs:PutLogEvents", "logs:x", NULL, &d);
    assert_int_equal (d.reason, POLICY_IMPLICIT_DENY);
  }
  role_free (r);

  /* an explicit deny in the boundary names the boundary */
  r = mint (P (ALLOW ("\"*\"", "\"*\"")),
            P (ALLOW ("\"*\"", "\"*\"") ",{\"Sid\":\"NoBase\",\"Effect\":\"Deny\","
                                        "\"Action\":\"*\",\"Resource\":\"registry:base/*\"}"),
            &job1);
  assert_fails_with (role_authorize (r, "registry:PushImage", "registry:base/x:1", &err), &err,
                     "(explicit deny by `b.json` statement `NoBase`)");
  role_free (r);
}

static void
test_role_expiry (void **state)
{
  cleanup_policy struct policy *p = parse_ok (P (ALLOW ("\"*\"", "\"*\"")), "t.json");
  struct role *r = NULL;
  bvm_error_t err = NULL;
  struct policy_decision d;
  char needle[256];
  (void) state;

  assert_ok (role_mint (&r, p, NULL, &job1, 10, &err), &err);
  snprintf (needle, sizeof needle,
            "role `%s` expired at 1970-01-01T00:00:10Z: denies `artifacts:PutObject` on "
            "`artifacts:apps/app1/x`",
            role_id (r));
  assert_int_equal (role_authorize (r, PUT, OBJ, &err), -1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_DENIED);
  assert_string_equal (bvm_error_msg (&err), needle);
  bvm_error_free (&err);
  role_decide (r, PUT, OBJ, NULL, &d);
  assert_false (d.allowed);
  assert_int_equal (d.reason, POLICY_EXPIRED);
  assert_string_equal (d.why, "role expired at 1970-01-01T00:00:10Z");
  role_free (r);

  /* the deadline itself is already too late */
  assert_ok (role_mint (&r, p, NULL, &job1, wall_s (), &err), &err);
  assert_fails_with (role_authorize (r, PUT, OBJ, &err), &err, "expired at");
  role_free (r);
  assert_ok (role_mint (&r, p, NULL, &job1, wall_s () + 60, &err), &err);
  assert_ok (role_authorize (r, PUT, OBJ, &err), &err);
  role_free (r);
}

static void
test_role_to_json (void **state)
{
  cleanup_policy struct policy *t = NULL;
  cleanup_policy struct policy *b = NULL;
  cleanup_json json_t *j = NULL;
  struct role *r = NULL;
  bvm_error_t err = NULL;
  const char *s = NULL;
  char *dump;
  (void) state;

  assert_ok (policy_load_builtin (&t, false, &err), &err);
  assert_ok (policy_load_builtin (&b, true, &err), &err);
  assert_ok (role_mint (&r, t, b, &job1, 1790000000, &err), &err);
  j = role_to_json (r);
  assert_non_null (j);
  assert_ok (jsonx_get_str (&s, j, "id", true, 300, "", &err), &err);
  assert_string_equal (s, role_id (r));
  assert_ok (jsonx_get_str (&s, j, "expires_at", true, 64, "", &err), &err);
  assert_string_equal (s, "2026-09-21T14:13:20Z");
  assert_string_equal (json_string_value (json_object_get (json_object_get (j, "policy"), "name")),
                       "build-role.json");
  assert_string_equal (json_string_value (
                           json_object_get (json_object_get (j, "boundary"), "name")),
                       "boundary.json");
  dump = json_dumps (j, JSON_COMPACT);
  assert_null (strstr (dump, "${"));
  assert_non_null (strstr (dump, "\"artifacts:apps/app1/" COMMIT "/*\""));
  assert_non_null (strstr (dump, "\"logs:apps/app1/j1\""));
  assert_non_null (strstr (dump, "\"logs:apps/app1/*\""));
  free (dump);
  /* the template itself is untouched by minting */
  dump = json_dumps (policy_json (t), JSON_COMPACT);
  assert_non_null (strstr (dump, "apps/${job:App}/${job:Commit}/*"));
  free (dump);
  role_free (r);

  /* without a boundary there is no "boundary" member; the record parses back */
  assert_ok (role_mint (&r, t, NULL, &job1, 1790000000, &err), &err);
  json_decref (j);
  j = role_to_json (r);
  assert_null (json_object_get (j, "boundary"));
  {
    struct policy *again = NULL;
    dump = json_dumps (json_object_get (j, "policy")
                           ? json_object_get (json_object_get (j, "policy"), "document")
                           : NULL,
                       JSON_COMPACT);
    assert_ok (policy_parse (&again, dump, strlen (dump), "record", &err), &err);
    assert_int_equal (policy_statement_count (again), 6);
    policy_free (again);
    free (dump);
  }
  role_free (r);
}

/* ------------------------------------------------------------------------ */
/* the default policies                                                      */

static void
test_builtin_matches_files (void **state)
{
  size_t len;
  const char *text;
  char *file;
  (void) state;

  text = policy_builtin_role (&len);
  file = t_read ("policies/build-role.json");
  assert_int_equal (len, strlen (file));
  assert_memory_equal (text, file, len);
  assert_int_equal (text[len], '\0');
  free (file);
  text = policy_builtin_boundary (&len);
  file = t_read ("policies/boundary.json");
  assert_int_equal (len, strlen (file));
  assert_string_equal (text, file);
  free (file);
}

struct tmpl_case
{
  const char *action;
  const char *resource;
  bool allow;
  const char *why;
};

/* The job: app `app1`, commit COMMIT, id `j1`; `app10` is its neighbour. */
static const struct tmpl_case tmpl_cases[] = {
  { "registry:PushImage", "registry:apps/app1:latest", true, "statement `PushOwnImage`" },
  { "registry:PushImage", "registry:apps/app1:" COMMIT, true, "" },
  { "registry:PushImage", "registry:apps/app10:latest", false, "implicit deny" },
  { "registry:PushImage", "registry:apps/app1/evil:latest", false, "implicit deny" },
  { "registry:PushImage", "registry:apps/app:latest", false, "implicit deny" },
  { "registry:PushImage", "registry:apps/app2:latest", false, "implicit deny" },
  { "registry:PushImage", "registry:base/debian:12", false,
    "explicit deny by `boundary.json` statement `NeverWriteBaseImages`" },
  { "registry:PullImage", "registry:base/debian:12", true, "statement `PullBaseImages`" },
  { "registry:PullImage", "registry:base/lib/x:1", true, "" },
  { "registry:PullImage", "registry:apps/app2:latest", false, "implicit deny" },
  /* the registry's token auth asks for pull with every push (registry/handlers/app.go:
   * POST, PUT and PATCH need pull and push), so the role allows it */
  { "registry:PullImage", "registry:apps/app1:latest", true, "statement `PullOwnImage`" },
  { "registry:PullImage", "registry:apps/app10:latest", false, "implicit deny" },
  { "registry:PullImage", "registry:base/../apps/app2:latest", false, "path segment" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT "/dist/app.tgz", true,
    "statement `PutOwnArtifacts`" },
  { "artifacts:PutObject", "artifacts:apps/app1/" OTHER_COMMIT "/dist/app.tgz", false,
    "implicit deny" },
  { "artifacts:PutObject", "artifacts:apps/app10/" COMMIT "/dist/app.tgz", false,
    "implicit deny" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT, false, "implicit deny" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT "x/a", false, "implicit deny" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT "/../../app2/" COMMIT "/x", false,
    "explicit deny: the resource has a `.` or `..` path segment" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT "//x", false, "(`//`)" },
  { "artifacts:PutObject", "artifacts:apps/app1/" COMMIT "/\x01", false, "control character" },
  { "secrets:GetSecret", "secrets:apps/app1/db-password", true, "statement `ReadOwnSecrets`" },
  { "secrets:GetSecret", "secrets:apps/app10/db-password", false, "implicit deny" },
  { "secrets:GetSecret", "secrets:apps/app1", false, "implicit deny" },
  { "secrets:GetSecret", "secrets:apps/app1/../app2/x", false, "path segment" },
  { "logs:PutLogEvents", "logs:apps/app1/j1", true, "statement `WriteOwnLogStream`" },
  { "logs:PutLogEvents", "logs:apps/app1/j2", false, "implicit deny" },
  { "logs:PutLogEvents", "logs:apps/app1/j1/x", false, "implicit deny" },
  { "logs:PutLogEvents", "logs:apps/app10/j1", false, "implicit deny" },
  /* actions that are not in the table are never granted */
  { "registry:DeleteImage", "registry:apps/app1:latest", false, "implicit deny" },
  { "artifacts:GetObject", "artifacts:apps/app1/" COMMIT "/x", false, "implicit deny" },
  { "secrets:PutSecret", "secrets:apps/app1/x", false, "implicit deny" },
  /* the template grants no egress: the runner's config and the app ask for it */
  { "net:Connect", "net:registry.npmjs.org:443", false, "implicit deny" },
  { "net:Connect", "net:127.0.0.1:80", false, "implicit deny" },
};

static void
test_builtin_template (void **state)
{
  cleanup_policy struct policy *t = NULL;
  cleanup_policy struct policy *b = NULL;
  struct role *r = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (policy_load_builtin (&t, false, &err), &err);
  assert_ok (policy_load_builtin (&b, true, &err), &err);
  assert_ok (role_mint (&r, t, b, &job1, wall_s () + 600, &err), &err);
  for (size_t i = 0; i < ARRAY_SIZE (tmpl_cases); i++)
    {
      struct policy_decision d;
      role_decide (r, tmpl_cases[i].action, tmpl_cases[i].resource, NULL, &d);
      if (d.allowed != tmpl_cases[i].allow || strstr (d.why, tmpl_cases[i].why) == NULL)
        fail_msg ("%s %s: got %s (%s)", tmpl_cases[i].action, tmpl_cases[i].resource,
                  d.allowed ? "allow" : "deny", d.why);
    }
  role_free (r);

  /* an operator's extension is still capped by the boundary */
  {
    cleanup_policy struct policy *ext
        = parse_ok (P (ALLOW ("\"artifacts:PutObject\"",
                              "\"artifacts:*\"") "," ALLOW ("\"registry:PullImage\"",
                                                            "\"registry:apps/${job:App}:*\"")),
                    "extended.json");
    struct policy_decision d;
    assert_ok (role_mint (&r, ext, b, &job1, wall_s () + 600, &err), &err);
    role_decide (r, PUT, "artifacts:apps/app1/" OTHER_COMMIT "/cache.tgz", NULL, &d);
    assert_true (d.allowed);
    role_decide (r, PUT, "artifacts:apps/app10/" COMMIT "/x", NULL, &d);
    assert_false (d.allowed);
    assert_string_equal (d.why, "not allowed by the permission boundary `boundary.json`");
    role_decide (r, "registry:PullImage", "registry:apps/app1:cache", NULL, &d);
    assert_true (d.allowed);
    role_decide (r, "registry:PullImage", "registry:apps/app10:cache", NULL, &d);
    assert_false (d.allowed);
    role_free (r);
  }

  /* egress granted by a role is capped by the boundary's web ports */
  {
    cleanup_policy struct policy *net = parse_ok (P (ALLOW ("\"net:Connect\"", "[\"net:*\"]")),
                                                  "egress.json");
    static const struct
    {
      const char *resource;
      bool allow;
      const char *why;
    } cases[] = {
      { "net:registry.npmjs.org:443", true, "allowed by `egress.json`" },
      { "net:deb.debian.org:80", true, "" },
      { "net:[2001:db8::1]:443", true, "" },
      { "net:example.com:8080", false, "not allowed by the permission boundary" },
      { "net:example.com:4430", false, "not allowed by the permission boundary" },
      { "net:example.com:44", false, "not allowed by the permission boundary" },
      { "net:example.com:8443", false, "not allowed by the permission boundary" },
    };
    assert_ok (role_mint (&r, net, b, &job1, wall_s () + 600, &err), &err);
    for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
      {
        struct policy_decision d;
        role_decide (r, "net:Connect", cases[i].resource, NULL, &d);
        if (d.allowed != cases[i].allow || strstr (d.why, cases[i].why) == NULL)
          fail_msg ("net:Connect %s: got %s (%s)", cases[i].resource, d.allowed ? "allow" : "deny",
                    d.why);
      }
    role_free (r);
  }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_eval_table),
    cmocka_unit_test (test_load_errors),
    cmocka_unit_test (test_load_limits_and_files),
    cmocka_unit_test (test_wildcard_match),
    cmocka_unit_test (test_role_mint),
    cmocka_unit_test (test_role_mint_refuses_values),
    cmocka_unit_test (test_role_authorize_messages),
    cmocka_unit_test (test_role_expiry),
    cmocka_unit_test (test_role_to_json),
    cmocka_unit_test (test_builtin_matches_files),
    cmocka_unit_test (test_builtin_template),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
