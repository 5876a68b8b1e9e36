/* fuzz_policy.c - the policy parser and evaluator (policy.h)
 *
 * Input: a policy document, optionally followed by a NUL and request lines:
 *
 *   APP COMMIT REF ID                the job's variables (`-` = unset)
 *   ACTION RESOURCE [KEY=VALUE]...   one request per line, with context keys
 *
 * (without the NUL part, fixed variables and a fixed set of requests are
 * used). The document is parsed; if it loads, a role is minted from it with
 * the builtin permission boundary, and a role is minted from the builtin
 * template with it as the boundary. Properties of every decision:
 *   - `why` is one printable line; role_authorize agrees with role_decide;
 *   - whatever the fuzzed template says, an allowed request is one the
 *     builtin boundary allows, checked by an independent oracle: the
 *     job's own image, artifact, secret and log prefixes and connections
 *     to ports 443 and 80 only, and never a
 *     push under `registry:base/`. This catches a variable value that widens
 *     a pattern, an evaluator that lets an Allow beat a Deny, and a `..`
 *     segment slipping past the resource check;
 *   - with the fuzzed document as the boundary, nothing is allowed that the
 *     builtin template alone would not allow (a boundary only narrows);
 *   - role_to_json works, and the instantiated document loads again.
 */
#include "fuzz.h"

#include "jsonx.h"
#include "policy.h"
#include "util.h"

#include <strings.h>

#define MAX_REQ 32
#define MAX_CTX 4

struct req
{
  const char *action, *resource;
  struct policy_context_entry ctx[MAX_CTX];
  size_t nctx;
};

static struct policy *g_role, *g_boundary;

static const char *const fixed[][2] = {
  { "registry:PushImage", "registry:apps/app1:v1" },
  { "registry:PushImage", "registry:apps/app2:v1" },
  { "registry:pushimage", "registry:apps/app1:latest" },
  { "registry:PushImage", "registry:base/busybox:1" },
  { "registry:PullImage", "registry:base/busybox:1" },
  { "artifacts:PutObject", "artifacts:apps/app1/0123456789abcdef0123456789abcdef01234567/x" },
  { "artifacts:PutObject", "artifacts:apps/app1/../app2/x" },
  { "artifacts:PutObject", "artifacts:apps/app1//x" },
  { "secrets:GetSecret", "secrets:apps/app1/token" },
  { "secrets:GetSecret", "secrets:apps/app10/token" },
  { "logs:PutLogEvents", "logs:apps/app1/j1" },
  { "logs:PutLogEvents", "logs:apps/app1:." },
  { "net:Connect", "net:registry.npmjs.org:443" },
  { "net:Connect", "net:example.com:8080" },
  { "net:Connect", "net:[::1]:80" },
  { "*", "*" },
};

/* The builtin boundary as plain prefix tests (policies/boundary.json). */
static bool
boundary_allows (const char *app, const char *action, const char *resource)
{
  char p[512];
  bool push = strcasecmp (action, "registry:PushImage") == 0;
  bool pull = strcasecmp (action, "registry:PullImage") == 0;

  if (push && strncmp (resource, "registry:base/", 14) == 0)
    return false;
  snprintf (p, sizeof p, "registry:apps/%s:", app);
  if ((push || pull) && strncmp (resource, p, strlen (p)) == 0)
    return true;
  if (pull && strncmp (resource, "registry:base/", 14) == 0)
    return true;
  snprintf (p, sizeof p, "artifacts:apps/%s/", app);
  if (strcasecmp (action, "artifacts:PutObject") == 0 && strncmp (resource, p, strlen (p)) == 0)
    return true;
  snprintf (p, sizeof p, "secrets:apps/%s/", app);
  if (strcasecmp (action, "secrets:GetSecret") == 0 && strncmp (resource, p, strlen (p)) == 0)
    return true;
  snprintf (p, sizeof p, "logs:apps/%s/", app);
  if (strcasecmp (action, "logs:PutLogEvents") == 0 && strncmp (resource, p, strlen (p)) == 0)
    return true;
  /* net:*:443 and net:*:80: "net:", anything, then the port */
  if (strcasecmp (action, "net:Connect") == 0 && strncmp (resource, "net:", 4) == 0)
    {
      size_t n = strlen (resource);
      if ((n >= 8 && strcmp (resource + n - 4, ":443") == 0)
          || (n >= 7 && strcmp (resource + n - 3, ":80") == 0))
        return true;
    }
  return false;
}

static bool
has_dot_segment (const char *r)
{
  const char *seg = r;
  for (const char *c = r;; c++)
    if (*c == '/' || *c == ':' || *c == '\0')
      {
        size_t n = (size_t) (c - seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
          return true;
        if (*c == '\0')
          return false;
        seg = c + 1;
      }
}

static void
check_decision (const struct role *r, const struct req *q, struct policy_decision *d)
{
  struct policy_context ctx = { q->ctx, q->nctx };
  bvm_error_t err = NULL;
  size_t n;
  int ret;

  role_decide (r, q->action, q->resource, &ctx, d);
  n = strnlen (d->why, sizeof d->why);
  FUZZ_CHECK (n < sizeof d->why);
  for (size_t i = 0; i < n; i++)
    FUZZ_CHECK ((unsigned char) d->why[i] >= 0x20 && d->why[i] != 0x7f);
  FUZZ_CHECK (d->allowed == (d->reason == POLICY_ALLOWED));
  if (d->allowed)
    {
      FUZZ_CHECK (!has_dot_segment (q->resource) && strstr (q->resource, "//") == NULL);
      FUZZ_CHECK (q->resource[0] != '\0' && q->action[0] != '\0');
    }
  if (q->nctx == 0)
    {
      ret = role_authorize (r, q->action, q->resource, &err);
      FUZZ_CHECK ((ret == 0) == d->allowed);
      if (ret < 0)
        {
          FUZZ_CHECK (bvm_error_get_code (&err) == BVM_E_DENIED);
          fuzz_check_error (ret, &err);
        }
    }
}

static void
check_role_json (const struct role *r)
{
  bvm_error_t err = NULL;
  struct policy *again = NULL;
  json_t *j = role_to_json (r);
  char *text;
  int ret;

  FUZZ_CHECK (j != NULL);
  text = json_dumps (json_object_get (json_object_get (j, "policy"), "document"), JSON_COMPACT);
  FUZZ_CHECK (text != NULL);
  ret = policy_parse (&again, text, strlen (text), "instantiated.json", &err);
  if (ret < 0)
    {
      fprintf (stderr, "instantiated %s: %s\n", text, bvm_error_msg (&err));
      fuzz_fail (__FILE__, __LINE__, "an instantiated policy loads again");
    }
  policy_free (again);
  free (text);
  json_decref (j);
}

/* Split the request part into variables and requests (in place). */
static size_t
parse_requests (char *s, struct policy_vars *vars, struct req *reqs)
{
  char *save = NULL, *line;
  size_t n = 0;

  line = strtok_r (s, "\n", &save);
  if (line != NULL)
    {
      char *f[4] = { NULL, NULL, NULL, NULL }, *s2 = NULL;
      f[0] = strtok_r (line, " ", &s2);
      for (int i = 1; i < 4 && f[i - 1] != NULL; i++)
        f[i] = strtok_r (NULL, " ", &s2);
      vars->app = f[0] && strcmp (f[0], "-") != 0 ? f[0] : NULL;
      vars->commit = f[1] && strcmp (f[1], "-") != 0 ? f[1] : NULL;
      vars->ref = f[2] && strcmp (f[2], "-") != 0 ? f[2] : NULL;
      vars->id = f[3] && strcmp (f[3], "-") != 0 ? f[3] : NULL;
    }
  while (n < MAX_REQ && (line = strtok_r (NULL, "\n", &save)) != NULL)
    {
      char *s2 = NULL, *w;
      struct req *q = &reqs[n];
      memset (q, 0, sizeof *q);
      q->action = strtok_r (line, " ", &s2);
      q->resource = strtok_r (NULL, " ", &s2);
      if (q->action == NULL || q->resource == NULL)
        continue;
      while (q->nctx < MAX_CTX && (w = strtok_r (NULL, " ", &s2)) != NULL)
        {
          char *eq = strchr (w, '=');
          if (eq == NULL)
            continue;
          *eq = '\0';
          q->ctx[q->nctx].key = w;
          q->ctx[q->nctx].value = eq + 1;
          q->nctx++;
        }
      n++;
    }
  return n;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bvm_error_t err = NULL;
  struct policy *p = NULL;
  struct role *r = NULL;
  struct policy_vars vars = { "app1", "0123456789abcdef0123456789abcdef01234567",
                              "refs/heads/main", "j1" };
  struct req reqs[MAX_REQ];
  struct policy_decision d, d2;
  const uint8_t *nul = memchr (data, '\0', size);
  size_t doclen = nul ? (size_t) (nul - data) : size, nreq = 0;
  char *rest = NULL;
  int ret;

  if (g_role == NULL
      && (policy_load_builtin (&g_role, false, &err) < 0
          || policy_load_builtin (&g_boundary, true, &err) < 0))
    {
      fprintf (stderr, "fuzz_policy: set-up: %s\n", bvm_error_msg (&err));
      abort ();
    }

  if (nul != NULL)
    {
      rest = fuzz_cstr (nul + 1, size - doclen - 1);
      nreq = parse_requests (rest, &vars, reqs);
    }
  else
    for (size_t i = 0; i < ARRAY_SIZE (fixed); i++)
      {
        memset (&reqs[nreq], 0, sizeof reqs[nreq]);
        reqs[nreq].action = fixed[i][0];
        reqs[nreq].resource = fixed[i][1];
        if (i % 3 == 1)
          {
            /* a caller's context cannot override the job keys */
            reqs[nreq].ctx[0].key = "JOB:app";
            reqs[nreq].ctx[0].value = "app2";
            reqs[nreq].ctx[1].key = "req:Signed";
            reqs[nreq].ctx[1].value = "true";
            reqs[nreq].nctx = 2;
          }
        nreq++;
      }

  /* the name has a backtick and a newline: errors must escape it */
  ret = policy_parse (&p, (const char *) data, doclen, "fu`zz\n.json", &err);
  if (ret < 0)
    {
      FUZZ_CHECK (p == NULL);
      fuzz_check_error (ret, &err);
      free (rest);
      return 0;
    }
  FUZZ_CHECK (policy_statement_count (p) <= POLICY_MAX_STATEMENTS);

  /* the fuzzed template under the builtin boundary */
  ret = role_mint (&r, p, g_boundary, &vars, 4000000000, &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);
  else
    {
      FUZZ_CHECK (vars.app != NULL);
      for (size_t i = 0; i < nreq; i++)
        {
          check_decision (r, &reqs[i], &d);
          if (d.allowed && !boundary_allows (vars.app, reqs[i].action, reqs[i].resource))
            {
              fprintf (stderr, "allowed `%s` on `%s` for app `%s`: %s\n", reqs[i].action,
                       reqs[i].resource, vars.app, d.why);
              fuzz_fail (__FILE__, __LINE__, "the builtin boundary holds");
            }
        }
      check_role_json (r);
      role_free (r);
      r = NULL;
    }

  /* the builtin template under the fuzzed boundary */
  ret = role_mint (&r, g_role, p, &vars, 4000000000, &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);
  else
    {
      struct role *alone = NULL;
      ret = role_mint (&alone, g_role, NULL, &vars, 4000000000, &err);
      if (ret < 0)
        {
          fprintf (stderr, "builtin template alone: %s\n", bvm_error_msg (&err));
          fuzz_fail (__FILE__, __LINE__, "what mints with a boundary mints without");
        }
      for (size_t i = 0; i < nreq; i++)
        {
          check_decision (r, &reqs[i], &d);
          check_decision (alone, &reqs[i], &d2);
          FUZZ_CHECK (!d.allowed || d2.allowed);
        }
      role_free (alone);
      role_free (r);
    }

  for (size_t i = 0; i < nreq; i++)
    (void) policy_wildcard_match (reqs[i].action, reqs[i].resource, i & 1);
  policy_free (p);
  free (rest);
  return 0;
}
