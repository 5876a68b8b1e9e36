/* test_policy_prop.c - random policies against a small independent evaluator
 *
 * Each run draws at least 100,000 random (policy, action, resource, context)
 * cases and checks that policy.c agrees with the reference evaluator below,
 * which is written from the IAM rules in policies/README.md and shares no code
 * with policy.c (its glob is a dynamic program, its variables a string
 * replace). It also checks three invariants:
 *   - the default template (with the boundary) never allows anything outside
 *     the job's own app prefix (besides pulling base images);
 *   - adding a Deny statement never turns a deny into an allow;
 *   - shuffling the statements never changes a decision.
 *
 * The seed is fixed and printed; set BUILDVM_POLICY_SEED to use another one.
 */
#include "support.h"

#include "policy.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_SEED 20261126u
#define N_POLICIES 5000
#define REQS_PER_POLICY 20 /* 100,000 compared cases */
#define N_TEMPLATE_JOBS 250
#define REQS_PER_TEMPLATE_JOB 400 /* 100,000 more against the default template */

static uint64_t rng_state;

static uint64_t
rnd (void)
{
  /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static unsigned
pick (unsigned n)
{
  return (unsigned) (rnd () % n);
}

static bool
chance (unsigned percent)
{
  return pick (100) < percent;
}

#define PICK(arr) ((arr)[pick (ARRAY_SIZE (arr))])

static void
seed_rng (void)
{
  const char *env = getenv ("BUILDVM_POLICY_SEED");
  uint64_t seed = DEFAULT_SEED;
  if (env != NULL && parse_u64 (env, &seed) < 0)
    fail_msg ("BUILDVM_POLICY_SEED=`%s` is not a number", env);
  print_message ("policy property test: seed %llu (set BUILDVM_POLICY_SEED to change)\n",
                 (unsigned long long) seed);
  rng_state = seed;
}

/* ------------------------------------------------------------------------ */
/* the reference evaluator                                                   */

#define MAXS 8
#define MAXL 3
#define MAXC 2
#define STR 192

enum ref_op
{
  R_EQ,
  R_NEQ,
  R_EQ_IC,
  R_LIKE,
  R_NLIKE,
  R_BOOL,
  R_NULL,
  R_NOPS,
};
static const char *const op_names[R_NOPS] = {
  "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase",
  "StringLike",   "StringNotLike",   "Bool",
  "Null"
};

struct rcond
{
  int op;
  bool if_exists;
  int nkeys;
  char key[2][32];
  int nvals[2];
  char val[2][MAXL][STR];
  bool json_bool[2][MAXL]; /* emit as a JSON boolean */
};

struct rstmt
{
  char sid[16];
  bool deny, not_action, not_resource;
  int na, nr, nc;
  char act[MAXL][64];
  char res[MAXL][STR];
  struct rcond c[MAXC];
};

struct rpolicy
{
  int n;
  struct rstmt s[MAXS];
};

struct rjob
{
  const char *v[4]; /* app commit ref id; NULL = unset */
};
static const char *const job_keys[4] = { "job:App", "job:Commit", "job:Ref", "job:Id" };

struct rreq
{
  char action[64];
  char resource[STR];
  int nctx;
  char ckey[3][32];
  char cval[3][32];
};

static bool
ch_eq (char a, char b, bool icase)
{
  if (icase)
    {
      if (a >= 'A' && a <= 'Z')
        a = (char) (a - 'A' + 'a');
      if (b >= 'A' && b <= 'Z')
        b = (char) (b - 'A' + 'a');
    }
  return a == b;
}

/* dp[j]: the pattern so far matches the first j characters of s */
static bool
ref_glob (const char *p, const char *s, bool icase)
{
  size_t m = strlen (s);
  bool dp[STR * 4], nd[STR * 4];

  assert_true (m < ARRAY_SIZE (dp));
  memset (dp, 0, sizeof dp);
  dp[0] = true;
  for (; *p; p++)
    {
      if (*p == '*')
        {
          nd[0] = dp[0];
          for (size_t j = 1; j <= m; j++)
            nd[j] = nd[j - 1] || dp[j];
        }
      else
        {
          nd[0] = false;
          for (size_t j = 1; j <= m; j++)
            nd[j] = dp[j - 1] && (*p == '?' || ch_eq (*p, s[j - 1], icase));
        }
      memcpy (dp, nd, (m + 1) * sizeof *dp);
    }
  return dp[m];
}

/* Replace ${job:X} (any case) with the job's value. */
static void
ref_subst (char *out, size_t size, const char *in, const struct rjob *job)
{
  size_t o = 0;
  while (*in)
    {
      bool done = false;
      for (int k = 0; k < 4 && !done; k++)
        {
          char var[40];
          snprintf (var, sizeof var, "${%s}", job_keys[k]);
          if (strncasecmp (in, var, strlen (var)) == 0)
            {
              assert_non_null (job->v[k]);
              o += (size_t) snprintf (out + o, size - o, "%s", job->v[k]);
              in += strlen (var);
              done = true;
            }
        }
      if (!done)
        out[o++] = *in++;
      assert_true (o < size);
    }
  out[o] = '\0';
}

static bool
ref_resource_ok (const char *r)
{
  char copy[STR * 4];
  if (*r == '\0' || strstr (r, "//") != NULL)
    return false;
  for (const char *c = r; *c; c++)
    if ((unsigned char) *c < 0x20 || *c == 0x7f)
      return false;
  snprintf (copy, sizeof copy, "%s", r);
  for (char *save = NULL, *t = strtok_r (copy, "/:", &save); t; t = strtok_r (NULL, "/:", &save))
    if (strcmp (t, ".") == 0 || strcmp (t, "..") == 0)
      return false;
  return true;
}

static const char *
ref_lookup (const struct rreq *rq, const struct rjob *job, const char *key)
{
  for (int k = 0; k < 4; k++)
    if (strcasecmp (key, job_keys[k]) == 0 && job->v[k] != NULL)
      return job->v[k];
  for (int i = 0; i < rq->nctx; i++)
    if (strcasecmp (key, rq->ckey[i]) == 0)
      return rq->cval[i];
  return NULL;
}

static bool
ref_cond (const struct rcond *c, const struct rreq *rq, const struct rjob *job)
{
  for (int k = 0; k < c->nkeys; k++)
    {
      const char *v = ref_lookup (rq, job, c->key[k]);
      bool negated = c->op == R_NEQ || c->op == R_NLIKE;
      bool any = false;
      for (int i = 0; i < c->nvals[k]; i++)
        {
          char pat[STR * 2];
          ref_subst (pat, sizeof pat, c->val[k][i], job);
          switch (c->op)
            {
            case R_NULL: any = any || ((strcmp (pat, "true") == 0) == (v == NULL)); break;
            case R_EQ:
            case R_NEQ: any = any || (v && strcmp (pat, v) == 0); break;
            case R_EQ_IC: any = any || (v && strcasecmp (pat, v) == 0); break;
            case R_LIKE:
            case R_NLIKE: any = any || (v && ref_glob (pat, v, false)); break;
            case R_BOOL: any = any || (v && strcasecmp (pat, v) == 0); break;
            }
        }
      if (c->op == R_NULL)
        {
          if (!any)
            return false;
          continue;
        }
      if (v == NULL)
        {
          if (!(c->if_exists || negated))
            return false;
          continue;
        }
      if (negated ? any : !any)
        return false;
    }
  return true;
}

static bool
ref_stmt (const struct rstmt *s, const struct rreq *rq, const struct rjob *job)
{
  bool a = false, r = false;
  for (int i = 0; i < s->na; i++)
    a = a || ref_glob (s->act[i], rq->action, true);
  if (a == s->not_action)
    return false;
  for (int i = 0; i < s->nr; i++)
    {
      char pat[STR * 2];
      ref_subst (pat, sizeof pat, s->res[i], job);
      r = r || ref_glob (pat, rq->resource, false);
    }
  if (r == s->not_resource)
    return false;
  for (int i = 0; i < s->nc; i++)
    if (!ref_cond (&s->c[i], rq, job))
      return false;
  return true;
}

static void
ref_eval (const struct rpolicy *p, const struct rreq *rq, const struct rjob *job, bool *deny,
          bool *allow)
{
  *deny = *allow = false;
  for (int i = 0; i < p->n; i++)
    if (ref_stmt (&p->s[i], rq, job))
      {
        if (p->s[i].deny)
          *deny = true;
        else
          *allow = true;
      }
}

static enum policy_reason
ref_decide (const struct rpolicy *p, const struct rpolicy *b, const struct rreq *rq,
            const struct rjob *job)
{
  bool pd, pa, bd = false, ba = true;
  if (!ref_resource_ok (rq->resource))
    return POLICY_INVALID_REQUEST;
  ref_eval (p, rq, job, &pd, &pa);
  if (b != NULL)
    ref_eval (b, rq, job, &bd, &ba);
  if (pd || bd)
    return POLICY_EXPLICIT_DENY;
  if (!pa)
    return POLICY_IMPLICIT_DENY;
  if (!ba)
    return POLICY_BOUNDARY_DENY;
  return POLICY_ALLOWED;
}

/* ------------------------------------------------------------------------ */
/* generators                                                                */

static const char *const actions[] = {
  "registry:PushImage", "registry:PullImage", "artifacts:PutObject",
  "secrets:GetSecret",  "logs:PutLogEvents",  "net:Connect",
};
static const char *const other_actions[] = { "registry:DeleteImage", "artifacts:GetObject",
                                             "secrets:PutSecret", "logs:PutLogEvent",
                                             "net:Listen" };
static const char *const services[] = { "registry", "artifacts", "secrets", "logs", "net" };
/* net: patterns are `net:<host>:<port>` (the loader refuses other shapes),
 * requests are what netaddr_resource makes */
static const char *const net_host_pats[] = { "*",
                                             "*.example.com",
                                             "example.com",
                                             "*example.com",
                                             "a?.example.com",
                                             "registry.npmjs.org",
                                             "*.npmjs.org",
                                             "127.0.0.1",
                                             "[::1]" };
static const char *const net_port_pats[] = { "*", "443", "80", "8080" };
static const char *const net_hosts[] = { "example.com",     "a.example.com",  "a.b.example.com",
                                         "evilexample.com", "ab.example.com", "registry.npmjs.org",
                                         "npmjs.org",       "127.0.0.1",      "[::1]" };
static const char *const net_ports[] = { "443", "80", "8080", "4430", "1" };
static const char *const apps[] = { "app1", "app10", "app", "a", "hello" };
static const char *const commits[] = { "c1", "c10", "0123abcd" };
static const char *const refs[] = { "refs/heads/main", "refs/tags/v1" };
static const char *const ids[] = { "j1", "j10", "d-42" };
static const char *const segs[] = { "apps", "base", "app1", "app10", "app", "a",    "hello",
                                    "c1",   "c10",  "j1",   "d-42",  "x",   "dist", "v1" };
static const char *const pat_segs[] = { "*", "?", "app?", "app1*", "*1", "a*", "?pp*", "c?" };
static const char *const var_segs[] = { "${job:App}", "${job:Commit}", "${job:Id}",
                                        "${job:Ref}", "${JOB:app}",    "${job:id}" };
static const char *const cond_keys[] = { "job:App", "job:Commit", "job:Ref", "job:Id",
                                         "req:Tag", "req:Flag",   "JOB:APP", "Req:tag" };
static const char *const str_vals[] = { "app1",         "app10", "x", "y",
                                        "${job:App}",   "app*",  "*", "?pp1",
                                        "refs/heads/*", "true",  "X", "${job:Commit}-x",
                                        "c1",           "d-42" };

static void
mangle_case (char *s)
{
  for (; *s; s++)
    if (chance (15))
      {
        if (*s >= 'a' && *s <= 'z')
          *s = (char) (*s - 'a' + 'A');
        else if (*s >= 'A' && *s <= 'Z')
          *s = (char) (*s - 'A' + 'a');
      }
}

/* A pattern that matches at least the known action it was made from (else
 * the loader would rightly refuse it). */
static void
gen_action_pattern (char *out, size_t size)
{
  char a[64];
  size_t n;

  if (chance (8))
    {
      snprintf (out, size, "*");
      return;
    }
  snprintf (a, sizeof a, "%s", PICK (actions));
  n = strlen (a);
  if (chance (25))
    {
      size_t i = pick ((unsigned) n);
      if (a[i] != ':')
        a[i] = '?';
    }
  if (chance (25))
    {
      /* a star for a run of characters on one side of the colon: IAM wants
       * the `service:` part spelled out */
      size_t colon = (size_t) (strchr (a, ':') - a);
      size_t from = chance (30) ? pick ((unsigned) colon)
                                : colon + 1 + pick ((unsigned) (n - colon - 1));
      size_t end = from < colon ? colon : n;
      size_t len = pick ((unsigned) (end - from + 1));
      memmove (a + from + 1, a + from + len, n - from - len + 1);
      a[from] = '*';
    }
  mangle_case (a);
  snprintf (out, size, "%s", a);
}

static bool
job_has (const struct rjob *job, const char *var)
{
  for (int k = 0; k < 4; k++)
    if (strncasecmp (var + 2, job_keys[k], strlen (job_keys[k])) == 0)
      return job->v[k] != NULL;
  return false;
}

static void
gen_resource_pattern (char *out, size_t size, const struct rjob *job)
{
  size_t o;
  int nseg;

  if (chance (8))
    {
      snprintf (out, size, "*");
      return;
    }
  {
    const char *svc = chance (90) ? PICK (services) : "*";
    if (strcmp (svc, "net") == 0)
      {
        if (chance (10))
          snprintf (out, size, "net:*");
        else
          snprintf (out, size, "net:%s:%s", PICK (net_host_pats), PICK (net_port_pats));
        return;
      }
    o = (size_t) snprintf (out, size, "%s:", svc);
  }
  nseg = 1 + (int) pick (4);
  for (int i = 0; i < nseg; i++)
    {
      const char *seg;
      unsigned r = pick (10);
      if (r < 5)
        seg = PICK (segs);
      else if (r < 7)
        seg = PICK (pat_segs);
      else
        {
          seg = PICK (var_segs);
          if (!job_has (job, seg))
            seg = PICK (segs);
        }
      o += (size_t) snprintf (out + o, size - o, "%s%s", i ? (chance (75) ? "/" : ":") : "", seg);
    }
  if (chance (30))
    snprintf (out + o, size - o, "%s*", chance (50) ? "/" : ":");
}

static void
gen_cond (struct rcond *c, int op, const struct rjob *job)
{
  int k0 = (int) pick (ARRAY_SIZE (cond_keys));
  c->op = op;
  c->if_exists = op != R_NULL && chance (25);
  c->nkeys = 1 + (int) pick (2);
  for (int k = 0; k < c->nkeys; k++)
    {
      /* distinct spellings, so the JSON object keeps both */
      snprintf (c->key[k], sizeof c->key[k], "%s",
                cond_keys[(k0 + k * 3) % (int) ARRAY_SIZE (cond_keys)]);
      c->nvals[k] = 1 + (int) pick (MAXL);
      for (int i = 0; i < c->nvals[k]; i++)
        {
          c->json_bool[k][i] = false;
          if (op == R_BOOL || op == R_NULL)
            {
              snprintf (c->val[k][i], STR, "%s", chance (50) ? "true" : "false");
              c->json_bool[k][i] = chance (50);
            }
          else
            {
              const char *v = PICK (str_vals);
              if (strstr (v, "${") != NULL && !job_has (job, v))
                v = "x";
              snprintf (c->val[k][i], STR, "%s", v);
            }
        }
    }
}

static void
gen_stmt (struct rstmt *s, const struct rjob *job, int idx, bool force_deny)
{
  memset (s, 0, sizeof *s);
  if (chance (50))
    snprintf (s->sid, sizeof s->sid, "S%d", idx);
  s->deny = force_deny || chance (30);
  s->not_action = chance (15);
  s->not_resource = chance (15);
  s->na = 1 + (int) pick (MAXL);
  for (int i = 0; i < s->na; i++)
    gen_action_pattern (s->act[i], sizeof s->act[i]);
  s->nr = 1 + (int) pick (MAXL);
  for (int i = 0; i < s->nr; i++)
    gen_resource_pattern (s->res[i], sizeof s->res[i], job);
  if (chance (40))
    {
      int ops[R_NOPS];
      for (int i = 0; i < R_NOPS; i++)
        ops[i] = i;
      s->nc = 1 + (int) pick (MAXC);
      for (int i = 0; i < s->nc; i++)
        {
          int j = i + (int) pick ((unsigned) (R_NOPS - i)), t = ops[i];
          ops[i] = ops[j];
          ops[j] = t;
          gen_cond (&s->c[i], ops[i], job);
        }
    }
}

static void
gen_policy (struct rpolicy *p, const struct rjob *job, int max)
{
  p->n = (int) pick ((unsigned) max + 1);
  for (int i = 0; i < p->n; i++)
    gen_stmt (&p->s[i], job, i, false);
}

static void
gen_job (struct rjob *job)
{
  job->v[0] = PICK (apps);
  job->v[1] = PICK (commits);
  job->v[2] = chance (80) ? PICK (refs) : NULL;
  job->v[3] = PICK (ids);
}

static void
gen_request (struct rreq *rq, const struct rjob *job)
{
  size_t o;
  int nseg = 1 + (int) pick (5);

  snprintf (rq->action, sizeof rq->action, "%s",
            chance (90) ? PICK (actions) : PICK (other_actions));
  mangle_case (rq->action);
  o = (size_t) snprintf (rq->resource, sizeof rq->resource, "%s:", PICK (services));
  if (strcmp (rq->resource, "net:") == 0 && chance (80))
    {
      snprintf (rq->resource, sizeof rq->resource, "net:%s:%s", PICK (net_hosts),
                PICK (net_ports));
      nseg = 0;
    }
  for (int i = 0; i < nseg; i++)
    {
      const char *seg;
      unsigned r = pick (20);
      if (r == 0)
        seg = "..";
      else if (r == 1)
        seg = ".";
      else if (r == 2)
        seg = "";
      else if (r < 8)
        seg = job->v[pick (4)];
      else
        seg = PICK (segs);
      if (seg == NULL)
        seg = "x";
      o += (size_t) snprintf (rq->resource + o, sizeof rq->resource - o, "%s%s",
                              i ? (chance (75) ? "/" : ":") : "", seg);
    }
  if (chance (1))
    rq->resource[pick ((unsigned) strlen (rq->resource))] = '\n';
  rq->nctx = 0;
  if (chance (50))
    {
      snprintf (rq->ckey[rq->nctx], 32, "%s", chance (50) ? "req:Tag" : "REQ:TAG");
      snprintf (rq->cval[rq->nctx++], 32, "%s", PICK (str_vals));
    }
  if (chance (50))
    {
      static const char *const flags[] = { "true", "false", "TRUE", "x" };
      snprintf (rq->ckey[rq->nctx], 32, "req:Flag");
      snprintf (rq->cval[rq->nctx++], 32, "%s", PICK (flags));
    }
  if (chance (20))
    {
      /* a caller trying to supply a job key: used only if the job has none */
      snprintf (rq->ckey[rq->nctx], 32, "%s", PICK (job_keys));
      snprintf (rq->cval[rq->nctx++], 32, "%s", PICK (str_vals));
    }
}

/* ------------------------------------------------------------------------ */
/* glue                                                                      */

static json_t *
str_or_list (const char *base, int n, size_t stride)
{
  json_t *a;
  if (n == 1 && chance (50))
    return json_string (base);
  a = json_array ();
  for (int i = 0; i < n; i++)
    json_array_append_new (a, json_string (base + (size_t) i * stride));
  return a;
}

static char *
to_json (const struct rpolicy *p, const int *order)
{
  json_t *doc = json_object (), *stmts = json_array ();
  char *text;

  json_object_set_new (doc, "Version", json_string ("2012-10-17"));
  for (int ii = 0; ii < p->n; ii++)
    {
      const struct rstmt *s = &p->s[order ? order[ii] : ii];
      json_t *j = json_object ();
      if (s->sid[0])
        json_object_set_new (j, "Sid", json_string (s->sid));
      json_object_set_new (j, "Effect", json_string (s->deny ? "Deny" : "Allow"));
      json_object_set_new (j, s->not_action ? "NotAction" : "Action",
                           str_or_list (s->act[0], s->na, sizeof s->act[0]));
      json_object_set_new (j, s->not_resource ? "NotResource" : "Resource",
                           str_or_list (s->res[0], s->nr, sizeof s->res[0]));
      if (s->nc > 0)
        {
          json_t *cond = json_object ();
          for (int i = 0; i < s->nc; i++)
            {
              const struct rcond *c = &s->c[i];
              json_t *block = json_object ();
              char name[64];
              snprintf (name, sizeof name, "%s%s", op_names[c->op],
                        c->if_exists ? "IfExists" : "");
              for (int k = 0; k < c->nkeys; k++)
                {
                  json_t *vals = json_array ();
                  for (int v = 0; v < c->nvals[k]; v++)
                    json_array_append_new (vals, c->json_bool[k][v] ? json_boolean (
                                                     strcmp (c->val[k][v], "true") == 0)
                                                                    : json_string (c->val[k][v]));
                  if (c->nvals[k] == 1 && chance (50))
                    json_object_set (block, c->key[k], json_array_get (vals, 0));
                  else
                    json_object_set (block, c->key[k], vals);
                  json_decref (vals);
                }
              json_object_set_new (cond, name, block);
            }
          json_object_set_new (j, "Condition", cond);
        }
      json_array_append_new (stmts, j);
    }
  json_object_set_new (doc, "Statement", stmts);
  text = json_dumps (doc, JSON_COMPACT);
  json_decref (doc);
  return text;
}

static struct policy *
load (const struct rpolicy *p, const int *order, const char *name)
{
  struct policy *out = NULL;
  bvm_error_t err = NULL;
  char *text = to_json (p, order);
  if (policy_parse (&out, text, strlen (text), name, &err) < 0)
    fail_msg ("random policy refused: %s\n%s", bvm_error_msg (&err), text);
  free (text);
  return out;
}

static struct role *
mint (const struct policy *p, const struct policy *b, const struct rjob *job)
{
  struct policy_vars v = { job->v[0], job->v[1], job->v[2], job->v[3] };
  struct role *r = NULL;
  bvm_error_t err = NULL;
  if (role_mint (&r, p, b, &v, wall_s () + 3600, &err) < 0)
    fail_msg ("mint: %s", bvm_error_msg (&err));
  return r;
}

static void
decide (const struct role *r, const struct rreq *rq, struct policy_decision *d)
{
  struct policy_context_entry e[3];
  struct policy_context ctx = { e, (size_t) rq->nctx };
  for (int i = 0; i < rq->nctx; i++)
    {
      e[i].key = rq->ckey[i];
      e[i].value = rq->cval[i];
    }
  role_decide (r, rq->action, rq->resource, &ctx, d);
}

static void
test_agrees_with_reference (void **state)
{
  long cases = 0, allowed = 0, explicit_denies = 0, boundary_denies = 0;
  long shuffled = 0, with_deny = 0;
  (void) state;

  for (int n = 0; n < N_POLICIES; n++)
    {
      struct rjob job;
      struct rpolicy p, b, pd;
      struct rreq rq[REQS_PER_POLICY];
      bool have_b = chance (30);
      int order[MAXS];
      cleanup_policy struct policy *pp = NULL;
      cleanup_policy struct policy *bp = NULL;
      cleanup_policy struct policy *ps = NULL;
      cleanup_policy struct policy *pdp = NULL;
      struct role *r, *rs, *rd;
      bool before[REQS_PER_POLICY];

      gen_job (&job);
      gen_policy (&p, &job, MAXS - 1);
      if (have_b)
        gen_policy (&b, &job, 4);
      pp = load (&p, NULL, "p.json");
      bp = have_b ? load (&b, NULL, "b.json") : NULL;
      r = mint (pp, bp, &job);
      for (int i = 0; i < REQS_PER_POLICY; i++)
        {
          struct policy_decision d;
          enum policy_reason want;
          gen_request (&rq[i], &job);
          decide (r, &rq[i], &d);
          want = ref_decide (&p, have_b ? &b : NULL, &rq[i], &job);
          if (d.allowed != (want == POLICY_ALLOWED) || d.reason != want)
            {
              char *text = to_json (&p, NULL);
              char *btext = have_b ? to_json (&b, NULL) : strdup ("none");
              fail_msg ("disagreement: %s %s (ctx %d keys) app=%s commit=%s ref=%s id=%s:\n"
                        "policy.c: %s reason %d (%s)\nreference: reason %d\npolicy: %s\n"
                        "boundary: %s",
                        rq[i].action, rq[i].resource, rq[i].nctx, job.v[0], job.v[1],
                        job.v[2] ? job.v[2] : "-", job.v[3], d.allowed ? "allow" : "deny",
                        d.reason, d.why, want, text, btext);
            }
          before[i] = d.allowed;
          cases++;
          allowed += d.allowed;
          explicit_denies += d.reason == POLICY_EXPLICIT_DENY;
          boundary_denies += d.reason == POLICY_BOUNDARY_DENY;
        }

      /* shuffling the statements never changes a decision */
      for (int i = 0; i < p.n; i++)
        order[i] = i;
      for (int i = p.n - 1; i > 0; i--)
        {
          int j = (int) pick ((unsigned) i + 1), t = order[i];
          order[i] = order[j];
          order[j] = t;
        }
      ps = load (&p, order, "p.json");
      rs = mint (ps, bp, &job);
      for (int i = 0; i < REQS_PER_POLICY; i++)
        {
          struct policy_decision d;
          decide (rs, &rq[i], &d);
          if (d.allowed != before[i])
            fail_msg ("shuffling changed %s %s", rq[i].action, rq[i].resource);
          shuffled++;
        }

      /* adding a Deny never turns a deny into an allow */
      if (p.n < MAXS)
        {
          int at = (int) pick ((unsigned) p.n + 1);
          pd = p;
          memmove (&pd.s[at + 1], &pd.s[at], (size_t) (p.n - at) * sizeof pd.s[0]);
          gen_stmt (&pd.s[at], &job, 99, true);
          pd.n = p.n + 1;
          pdp = load (&pd, NULL, "p.json");
          rd = mint (pdp, bp, &job);
          for (int i = 0; i < REQS_PER_POLICY; i++)
            {
              struct policy_decision d;
              decide (rd, &rq[i], &d);
              if (d.allowed && !before[i])
                fail_msg ("adding a Deny allowed %s %s", rq[i].action, rq[i].resource);
              with_deny++;
            }
          role_free (rd);
        }
      role_free (rs);
      role_free (r);
    }
  print_message ("policy property test: %ld cases (%ld allowed, %ld explicit denies, %ld "
                 "boundary denies), %ld shuffled, %ld with an added Deny\n",
                 cases, allowed, explicit_denies, boundary_denies, shuffled, with_deny);
  assert_true (cases >= 100000);
  /* the generator must exercise every outcome, or agreement proves little */
  assert_true (allowed > cases / 50);
  assert_true (explicit_denies > cases / 50);
  assert_true (boundary_denies > cases / 500);
}

/* ------------------------------------------------------------------------ */
/* the default template never reaches outside the job's own app              */

static bool
starts_with (const char *s, const char *prefix)
{
  return strncmp (s, prefix, strlen (prefix)) == 0;
}

static bool
inside_own_app (const char *action, const char *resource, const char *app)
{
  char prefix[STR];
  const char *svc = NULL, *sep = "/";

  if (!ref_resource_ok (resource))
    return false;
  if (strcasecmp (action, "registry:PullImage") == 0 && starts_with (resource, "registry:base/"))
    return true; /* shared base images, by design */
  if (strcasecmp (action, "registry:PushImage") == 0
      || strcasecmp (action, "registry:PullImage") == 0)
    svc = "registry", sep = ":";
  else if (strcasecmp (action, "artifacts:PutObject") == 0)
    svc = "artifacts";
  else if (strcasecmp (action, "secrets:GetSecret") == 0)
    svc = "secrets";
  else if (strcasecmp (action, "logs:PutLogEvents") == 0)
    svc = "logs";
  if (svc == NULL)
    return false;
  snprintf (prefix, sizeof prefix, "%s:apps/%s%s", svc, app, sep);
  return starts_with (resource, prefix);
}

static void
test_template_stays_inside_own_app (void **state)
{
  static const char *const tmpl_apps[] = { "app1", "app10", "app",         "app1-x",
                                           "a",    "hello", "hello-world", "APP1" };
  static const char *const tails[] = { "",   "latest", "dist/app.tgz", "x",  "../x", "./x",
                                       "/x", "j1",     "c1/x",         "db", "c1" };
  cleanup_policy struct policy *t = NULL;
  cleanup_policy struct policy *b = NULL;
  bvm_error_t err = NULL;
  long cases = 0, allowed = 0;
  (void) state;

  assert_ok (policy_load_builtin (&t, false, &err), &err);
  assert_ok (policy_load_builtin (&b, true, &err), &err);
  for (int n = 0; n < N_TEMPLATE_JOBS; n++)
    {
      struct rjob job;
      struct role *r, *r_nob;
      job.v[0] = PICK (tmpl_apps);
      job.v[1] = chance (50) ? "c1" : "c10";
      job.v[2] = PICK (refs);
      job.v[3] = chance (50) ? "j1" : "j10";
      r = mint (t, b, &job);
      r_nob = mint (t, NULL, &job);
      for (int i = 0; i < REQS_PER_TEMPLATE_JOB; i++)
        {
          char resource[STR * 2];
          /* net:Connect and net: resources at 4%, so the allowed cases
           * stay frequent enough for the check not to be vacuous; the
           * template grants no egress at all */
          const char *action = chance (4)    ? "net:Connect"
                               : chance (95) ? actions[pick (ARRAY_SIZE (actions) - 1)]
                                             : PICK (other_actions);
          const char *svc = chance (4) ? "net" : services[pick (ARRAY_SIZE (services) - 1)];
          const char *app = chance (50) ? job.v[0] : PICK (tmpl_apps);
          struct policy_decision d, d2;
          char act[64];

          switch (pick (6))
            {
            case 0:
            case 1: /* what the pipeline would ask */
              if (strcmp (svc, "net") == 0)
                snprintf (resource, sizeof resource, "net:%s:%s", PICK (net_hosts),
                          PICK (net_ports));
              else if (strcmp (svc, "registry") == 0)
                snprintf (resource, sizeof resource, "registry:%s/%s:%s",
                          chance (70) ? "apps" : "base", app, PICK (tails));
              else if (strcmp (svc, "logs") == 0)
                snprintf (resource, sizeof resource, "logs:apps/%s/%s", app,
                          chance (50) ? job.v[3] : PICK (tails));
              else
                snprintf (resource, sizeof resource, "%s:apps/%s/%s/%s", svc, app,
                          chance (50) ? job.v[1] : "c1", PICK (tails));
              break;
            case 2: /* a shared prefix without the separator */
              snprintf (resource, sizeof resource, "%s:apps/%s%s", svc, app, PICK (tails));
              break;
            case 3: /* escaping through dot segments */
              snprintf (resource, sizeof resource, "%s:apps/%s/%s/../../%s/%s", svc, job.v[0],
                        job.v[1], PICK (tmpl_apps), PICK (tails));
              break;
            default:
              {
                struct rreq rq;
                gen_request (&rq, &job);
                snprintf (resource, sizeof resource, "%s", rq.resource);
              }
            }
          snprintf (act, sizeof act, "%s", action);
          mangle_case (act);
          role_decide (r, act, resource, NULL, &d);
          role_decide (r_nob, act, resource, NULL, &d2);
          if (d.allowed && !inside_own_app (act, resource, job.v[0]))
            fail_msg ("template allows app `%s` %s on %s (%s)", job.v[0], act, resource, d.why);
          if (d2.allowed && !inside_own_app (act, resource, job.v[0]))
            fail_msg ("template without boundary allows app `%s` %s on %s (%s)", job.v[0], act,
                      resource, d2.why);
          cases++;
          allowed += d.allowed;
        }
      role_free (r_nob);
      role_free (r);
    }
  print_message ("policy property test: %ld template cases, %ld allowed\n", cases, allowed);
  assert_true (allowed > cases / 50); /* the check must not be vacuous */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_agrees_with_reference),
    cmocka_unit_test (test_template_stays_inside_own_app),
  };
  seed_rng ();
  return cmocka_run_group_tests (tests, NULL, NULL);
}
