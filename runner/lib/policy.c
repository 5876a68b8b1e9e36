/* policy.c - IAM-style policies and per-job roles, see policy.h
 *
 * A policy is kept as its JSON document plus a compiled form whose strings
 * point into that document. A template is compiled once at load (which checks
 * the grammar and the variables); role_mint copies the documents, substitutes
 * the job's values and compiles the copies again, so a role's policy is plain
 * IAM JSON with no variables left and evaluation never allocates.
 */
#include "policy.h"
#include "buf.h"
#include "fs.h"
#include "jsonx.h"
#include "netaddr.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* ------------------------------------------------------------------------ */
/* the policies compiled into the binary                                     */

/* The assembler resolves these paths relative to the directory make runs in
 * (the repository root); the Makefile makes policy.o depend on both files.
 * Each blob is followed by a NUL so it can be used as a C string. */
__asm__(".pushsection .rodata,\"a\",@progbits\n"
        ".balign 16\n"
        ".globl policy__builtin_role_start\n"
        ".hidden policy__builtin_role_start\n"
        "policy__builtin_role_start:\n"
        ".incbin \"policies/build-role.json\"\n"
        ".globl policy__builtin_role_end\n"
        ".hidden policy__builtin_role_end\n"
        "policy__builtin_role_end:\n"
        ".byte 0\n"
        ".balign 16\n"
        ".globl policy__builtin_boundary_start\n"
        ".hidden policy__builtin_boundary_start\n"
        "policy__builtin_boundary_start:\n"
        ".incbin \"policies/boundary.json\"\n"
        ".globl policy__builtin_boundary_end\n"
        ".hidden policy__builtin_boundary_end\n"
        "policy__builtin_boundary_end:\n"
        ".byte 0\n"
        ".popsection\n");

extern const char policy__builtin_role_start[] __attribute__ ((visibility ("hidden")));
extern const char policy__builtin_role_end[] __attribute__ ((visibility ("hidden")));
extern const char policy__builtin_boundary_start[] __attribute__ ((visibility ("hidden")));
extern const char policy__builtin_boundary_end[] __attribute__ ((visibility ("hidden")));

const char *
policy_builtin_role (size_t *len)
{
  if (len != NULL)
    *len = (size_t) (policy__builtin_role_end - policy__builtin_role_start);
  return policy__builtin_role_start;
}

const char *
policy_builtin_boundary (size_t *len)
{
  if (len != NULL)
    *len = (size_t) (policy__builtin_boundary_end - policy__builtin_boundary_start);
  return policy__builtin_boundary_start;
}

/* ------------------------------------------------------------------------ */
/* the vocabulary                                                            */

static const char *const known_actions[] = {
  POLICY_ACTION_PUSH_IMAGE,
  POLICY_ACTION_PULL_IMAGE,
  POLICY_ACTION_PUT_OBJECT,
  POLICY_ACTION_GET_SECRET,
  POLICY_ACTION_PUT_LOG_EVENTS,
  POLICY_ACTION_NET_CONNECT,
  NULL,
};

static const char *const known_services[] = { "registry", "artifacts", "secrets",
                                              "logs",     "net",       NULL };

enum
{
  VAR_APP,
  VAR_COMMIT,
  VAR_REF,
  VAR_ID,
  N_VARS,
};

/* The variable names double as the request context keys. */
static const char *const var_names[N_VARS] = { "job:App", "job:Commit", "job:Ref", "job:Id" };

enum cond_op
{
  OP_STRING_EQUALS,
  OP_STRING_NOT_EQUALS,
  OP_STRING_EQUALS_IGNORE_CASE,
  OP_STRING_LIKE,
  OP_STRING_NOT_LIKE,
  OP_BOOL,
  OP_NULL,
};

static const struct
{
  const char *name;
  enum cond_op op;
} operators[] = {
  { "StringEquals", OP_STRING_EQUALS },
  { "StringNotEquals", OP_STRING_NOT_EQUALS },
  { "StringEqualsIgnoreCase", OP_STRING_EQUALS_IGNORE_CASE },
  { "StringLike", OP_STRING_LIKE },
  { "StringNotLike", OP_STRING_NOT_LIKE },
  { "Bool", OP_BOOL },
  { "Null", OP_NULL },
};

static bool
op_negated (enum cond_op op)
{
  return op == OP_STRING_NOT_EQUALS || op == OP_STRING_NOT_LIKE;
}

/* ------------------------------------------------------------------------ */
/* compiled form                                                             */

struct cond_key
{
  const char *key;     /* points into the document */
  const char **values; /* each points into the document or is "true"/"false" */
  size_t nvalues;
};

struct cond
{
  enum cond_op op;
  bool if_exists;
  struct cond_key *keys;
  size_t nkeys;
};

struct stmt
{
  const char *sid; /* NULL when the statement has none */
  bool deny;
  bool not_action;
  bool not_resource;
  const char **actions;
  size_t nactions;
  const char **resources;
  size_t nresources;
  struct cond *conds;
  size_t nconds;
};

struct policy
{
  char *name;
  json_t *doc;
  bool instantiated;  /* variables substituted: `${` is plain text now */
  unsigned vars_used; /* bit i: var_names[i] appears somewhere */
  struct stmt *stmts;
  size_t nstmts;
};

struct role
{
  char *id;
  int64_t expires_at;
  char expires_str[32];
  struct policy *policy;
  struct policy *boundary; /* may be NULL */
  char *vars[N_VARS];      /* may be NULL */
};

static void
stmt_dispose (struct stmt *s)
{
  free (s->actions);
  free (s->resources);
  for (size_t i = 0; i < s->nconds; i++)
    {
      for (size_t k = 0; k < s->conds[i].nkeys; k++)
        free (s->conds[i].keys[k].values);
      free (s->conds[i].keys);
    }
  free (s->conds);
}

void
policy_free (struct policy *p)
{
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->nstmts; i++)
    stmt_dispose (&p->stmts[i]);
  free (p->stmts);
  if (p->doc != NULL)
    json_decref (p->doc);
  free (p->name);
  free (p);
}

const char *
policy_name (const struct policy *p)
{
  return p->name;
}

size_t
policy_statement_count (const struct policy *p)
{
  return p->nstmts;
}

const json_t *
policy_json (const struct policy *p)
{
  return p->doc;
}

/* ------------------------------------------------------------------------ */
/* matching                                                                  */

static inline unsigned char
fold (unsigned char c, bool icase)
{
  return (icase && c >= 'A' && c <= 'Z') ? (unsigned char) (c + ('a' - 'A')) : c;
}

/* The classic single-backtrack glob: on a mismatch after a `*`, let that star
 * swallow one more character and retry. Only the last star needs to be
 * remembered, so this is O(len(p) * len(s)) at worst with no allocation. */
bool
policy_wildcard_match (const char *pattern, const char *s, bool ignore_case)
{
  const unsigned char *p = (const unsigned char *) pattern;
  const unsigned char *t = (const unsigned char *) s;
  const unsigned char *star = NULL, *resume = NULL;

  while (*t != '\0')
    {
      if (*p == '*')
        {
          star = p++;
          resume = t;
          continue;
        }
      if (*p != '\0' && (*p == '?' || fold (*p, ignore_case) == fold (*t, ignore_case)))
        {
          p++;
          t++;
          continue;
        }
      if (star == NULL)
        return false;
      p = star + 1;
      t = ++resume;
    }
  while (*p == '*')
    p++;
  return *p == '\0';
}

static bool
any_match (const char *const *patterns, size_t n, const char *s, bool icase)
{
  for (size_t i = 0; i < n; i++)
    if (policy_wildcard_match (patterns[i], s, icase))
      return true;
  return false;
}

/* ------------------------------------------------------------------------ */
/* messages                                                                  */

/* An untrusted string for a one-line message: bytes outside printable ASCII,
 * backticks and backslashes as \xNN, cut at `max` bytes of input. */
static const char *
show (char *buf, size_t size, const char *s, size_t max)
{
  return str_escape (buf, size, s, strlen (s), max);
}

#define SHOW_SIZE 1024

/* snprintf for display strings, where cutting a long name short is the
 * intent (and gcc's truncation warning is not). */
static void line_printf (char *buf, size_t size, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
line_printf (char *buf, size_t size, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (buf, size, fmt, ap);
  va_end (ap);
}

/* "policy `name`: <message>", BVM_E_INVALID. */
static int perr (bvm_error_t *err, const struct policy *p, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
perr (bvm_error_t *err, const struct policy *p, const char *fmt, ...)
{
  cleanup_buf struct buf b = BUF_INIT (8192);
  char nm[SHOW_SIZE];
  va_list ap;

  buf_addf (&b, "policy `%s`: ", show (nm, sizeof nm, p->name, 200));
  va_start (ap, fmt);
  buf_vaddf (&b, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, BVM_E_INVALID, 0, "%s", buf_cstr (&b));
}

/* ------------------------------------------------------------------------ */
/* variables                                                                 */

static int
var_lookup (const char *name, size_t len)
{
  for (int i = 0; i < N_VARS; i++)
    if (strlen (var_names[i]) == len && strncasecmp (var_names[i], name, len) == 0)
      return i;
  return -1;
}

enum var_place
{
  VARS_FORBIDDEN,
  VARS_WHOLE_SEGMENT, /* resources: between `/` or `:` and `/`, `:` or the end */
  VARS_ANYWHERE,      /* condition values */
};

/* Check every `${...}` in a template string. A variable in a resource must be
 * a whole path segment: "apps/${job:App}/" can only ever name app X's own
 * prefix, while "apps/${job:App}*" would let app `app1` reach `app10` and
 * "apps/x${job:App}/" would let app `1` reach app `x1`. */
static int
check_vars (struct policy *p, const char *s, enum var_place place, const char *field,
            const char *where, bvm_error_t *err)
{
  char sh[SHOW_SIZE];

  for (const char *d = strstr (s, "${"); d != NULL; d = strstr (d + 2, "${"))
    {
      const char *end = strchr (d + 2, '}');
      int v;

      if (place == VARS_FORBIDDEN)
        return perr (err, p, "policy variables are not allowed in `%s` (`%s` in %s)", field,
                     show (sh, sizeof sh, s, 200), where);
      if (end == NULL)
        return perr (err, p, "unterminated policy variable in `%s` in %s",
                     show (sh, sizeof sh, s, 200), where);
      v = var_lookup (d + 2, (size_t) (end - d - 2));
      if (v < 0)
        {
          char name[SHOW_SIZE];
          size_t n = (size_t) (end - d + 1);
          cleanup_free char *raw = strndup (d, n < 200 ? n : 200);
          if (raw == NULL)
            return bvm_error (err, ENOMEM, "policy variable");
          show (name, sizeof name, raw, 200);
          return perr (err, p,
                       "unknown policy variable `%s` in %s: expected `${job:App}`, "
                       "`${job:Commit}`, `${job:Ref}` or `${job:Id}`",
                       name, where);
        }
      if (place == VARS_WHOLE_SEGMENT)
        {
          bool before_ok = d > s && (d[-1] == '/' || d[-1] == ':');
          bool after_ok = end[1] == '\0' || end[1] == '/' || end[1] == ':';
          if (!before_ok || !after_ok)
            return perr (err, p,
                         "policy variable `${%s}` in resource `%s` in %s must be a whole path "
                         "segment (after `/` or `:`, before `/`, `:` or the end) so that one "
                         "app's prefix never matches another's",
                         var_names[v], show (sh, sizeof sh, s, 200), where);
        }
      p->vars_used |= 1u << v;
      d = end - 1;
    }
  return 0;
}

/* Substitute the (already checked) variables of a template string. */
static int
subst_vars (char **out, const char *s, char *const vals[N_VARS], bvm_error_t *err)
{
  cleanup_buf struct buf b = BUF_INIT (POLICY_MAX_BYTES);
  const char *q = s;

  for (const char *d = strstr (q, "${"); d != NULL; d = strstr (q, "${"))
    {
      const char *end = strchr (d + 2, '}');
      int v = end ? var_lookup (d + 2, (size_t) (end - d - 2)) : -1;
      if (v < 0 || vals[v] == NULL)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "policy variable in `%.100s` not checked",
                               s);
      if (buf_add (&b, q, (size_t) (d - q)) < 0 || buf_adds (&b, vals[v]) < 0)
        return bvm_error_code (err, BVM_E_LIMIT, errno, "substituting policy variables");
      q = end + 1;
    }
  if (buf_adds (&b, q) < 0)
    return bvm_error_code (err, BVM_E_LIMIT, errno, "substituting policy variables");
  *out = buf_steal (&b);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* compiling a document                                                      */

/* A string or a non-empty array of strings. The vector points into the
 * document. An empty array is refused: `"NotAction": []` would silently
 * match every action. */
static int
get_list (const char ***out, size_t *n, struct policy *p, const json_t *v, const char *field,
          const char *where, bvm_error_t *err)
{
  size_t count = json_is_array (v) ? json_array_size (v) : 1;
  size_t maxlen = p->instantiated ? POLICY_MAX_BYTES : POLICY_MAX_PATTERN;
  cleanup_free const char **vec = NULL;
  char sh[SHOW_SIZE];

  if (!json_is_string (v) && !json_is_array (v))
    return perr (err, p, "`%s` in %s must be a string or an array of strings", field, where);
  if (count == 0)
    return perr (err, p, "`%s` in %s is an empty array", field, where);
  if (count > POLICY_MAX_VALUES)
    return perr (err, p, "`%s` in %s has more than %d values", field, where, POLICY_MAX_VALUES);
  vec = calloc (count, sizeof *vec);
  if (vec == NULL)
    return bvm_error (err, ENOMEM, "policy `%s`", p->name);
  for (size_t i = 0; i < count; i++)
    {
      const json_t *e = json_is_array (v) ? json_array_get (v, i) : v;
      const char *s;
      if (!json_is_string (e))
        return perr (err, p, "`%s` in %s must be a string or an array of strings", field, where);
      s = json_string_value (e);
      if (strlen (s) != json_string_length (e) || has_control (s))
        return perr (err, p, "`%s` value `%s` in %s contains a control character", field,
                     show (sh, sizeof sh, s, 200), where);
      if (*s == '\0')
        return perr (err, p, "`%s` in %s has an empty value", field, where);
      if (strlen (s) > maxlen)
        return perr (err, p, "`%s` value in %s is longer than %zu bytes", field, where, maxlen);
      vec[i] = s;
    }
  *out = steal_pointer (&vec);
  *n = count;
  return 0;
}

static int
check_action (struct policy *p, const char *a, const char *where, bvm_error_t *err)
{
  char sh[SHOW_SIZE];
  const char *colon;

  if (strcmp (a, "*") == 0)
    return 0;
  colon = strchr (a, ':');
  if (colon == NULL || colon == a || colon[1] == '\0' || strchr (a, ' ') != NULL)
    return perr (err, p, "action `%s` in %s must be `*` or `service:Action`",
                 show (sh, sizeof sh, a, 200), where);
  /* IAM would accept a typo and silently never match it; for a NotAction that
   * silently matches everything. A pattern that names no action we know is
   * almost certainly a mistake, so it is an error. */
  for (size_t i = 0; known_actions[i]; i++)
    if (policy_wildcard_match (a, known_actions[i], true))
      return 0;
  return perr (err, p,
               "action `%s` in %s matches no known action (registry:PushImage, "
               "registry:PullImage, artifacts:PutObject, secrets:GetSecret, logs:PutLogEvents, "
               "net:Connect)",
               show (sh, sizeof sh, a, 200), where);
}

/* `net:*` or `net:<host>:<port>`. The requests are built by the runner from
 * a parsed destination (netaddr_resource): a lowercase name or the canonical
 * text of an address, and a port from 1 to 65535. A pattern that can never
 * match such a request (an upper-case letter, a port `0443`, a missing port)
 * is a mistake, and for a Deny a silent one, so it is a load error. Host
 * wildcards are the language's own: `*.example.com` matches one or more
 * labels (a request host has no empty label, so never `example.com`
 * itself), and `*` crosses `.`, so `*example.com` would also match
 * `evilexample.com`. */
static int
check_net_resource (struct policy *p, const char *r, const char *where, bvm_error_t *err)
{
  const char *rest = r + 4, *colon, *why = NULL;
  char sh[SHOW_SIZE];

  if (strcmp (rest, "*") == 0)
    return 0;
  if (rest[0] == '[')
    {
      const char *close = strchr (rest, ']');
      colon = close != NULL && close[1] == ':' ? close + 1 : NULL;
    }
  else
    colon = strrchr (rest, ':');
  if (colon == NULL)
    why = "it must be `net:*` or `net:<host>:<port>`";
  else
    why = netaddr_host_pattern_problem (rest, (size_t) (colon - rest));
  if (why == NULL && strcmp (colon + 1, "*") != 0)
    {
      uint32_t port;
      if (colon[1] == '0' || parse_u32 (colon + 1, &port) < 0 || port < 1 || port > 65535)
        why = "the port must be `*` or a number from 1 to 65535";
    }
  if (why != NULL)
    return perr (err, p, "resource `%s` in %s: %s", show (sh, sizeof sh, r, 200), where, why);
  return 0;
}

static int
check_resource (struct policy *p, const char *r, const char *where, bvm_error_t *err)
{
  char sh[SHOW_SIZE];
  const char *colon;
  char svc[64];
  size_t n;

  if (strcmp (r, "*") == 0)
    return 0;
  colon = strchr (r, ':');
  n = colon ? (size_t) (colon - r) : 0;
  if (colon == NULL || n == 0 || n >= sizeof svc)
    return perr (err, p, "resource `%s` in %s must be `*` or `service:name`",
                 show (sh, sizeof sh, r, 200), where);
  memcpy (svc, r, n);
  svc[n] = '\0';
  if (strcmp (svc, "net") == 0)
    return check_net_resource (p, r, where, err);
  for (size_t i = 0; known_services[i]; i++)
    if (policy_wildcard_match (svc, known_services[i], false))
      return 0;
  return perr (err, p,
               "resource `%s` in %s names no known service (registry, artifacts, secrets, logs, "
               "net)",
               show (sh, sizeof sh, r, 200), where);
}

static int
compile_condition (struct stmt *st, struct policy *p, const json_t *c, const char *where,
                   bvm_error_t *err)
{
  const char *opname;
  json_t *block;
  char sh[SHOW_SIZE];

  if (!json_is_object (c))
    return perr (err, p, "`Condition` in %s must be an object", where);
  st->conds = calloc (json_object_size (c) ? json_object_size (c) : 1, sizeof *st->conds);
  if (st->conds == NULL)
    return bvm_error (err, ENOMEM, "policy `%s`", p->name);

  json_object_foreach ((json_t *) c, opname, block)
    {
      struct cond *cd = &st->conds[st->nconds];
      char base[64];
      size_t len = strlen (opname);
      bool found = false;
      const char *key;
      json_t *vals;

      show (sh, sizeof sh, opname, 100);
      cd->if_exists = len > 8 && strcmp (opname + len - 8, "IfExists") == 0;
      if (cd->if_exists)
        len -= 8;
      if (len < sizeof base)
        {
          memcpy (base, opname, len);
          base[len] = '\0';
          for (size_t i = 0; i < ARRAY_SIZE (operators); i++)
            if (strcmp (operators[i].name, base) == 0)
              {
                cd->op = operators[i].op;
                found = true;
              }
        }
      if (!found)
        return perr (err, p, "unknown condition operator `%s` in %s", sh, where);
      /* IAM has no NullIfExists: Null is itself the test for existence. */
      if (cd->op == OP_NULL && cd->if_exists)
        return perr (err, p,
                     "unknown condition operator `%s` in %s (`Null` already tests whether the "
                     "key exists)",
                     sh, where);
      if (!json_is_object (block))
        return perr (err, p, "condition operator `%s` in %s must map keys to values", sh, where);
      if (json_object_size (block) == 0)
        return perr (err, p, "condition operator `%s` in %s has no keys", sh, where);
      if (json_object_size (block) > POLICY_MAX_VALUES)
        return perr (err, p, "condition operator `%s` in %s has more than %d keys", sh, where,
                     POLICY_MAX_VALUES);
      cd->keys = calloc (json_object_size (block), sizeof *cd->keys);
      if (cd->keys == NULL)
        return bvm_error (err, ENOMEM, "policy `%s`", p->name);
      st->nconds++;

      json_object_foreach (block, key, vals)
        {
          /* counted before it is filled, so an error below frees its values */
          struct cond_key *ck = &cd->keys[cd->nkeys++];
          const char *colon = strchr (key, ':');
          char ksh[SHOW_SIZE];
          char field[256];

          show (ksh, sizeof ksh, key, 100);
          if (colon == NULL || colon == key || colon[1] == '\0' || strlen (key) > 128
              || strpbrk (key, "*?${} ") != NULL || has_control (key))
            return perr (err, p, "condition key `%s` in %s must look like `prefix:Name`", ksh,
                         where);
          ck->key = key;
          line_printf (field, sizeof field, "Condition.%s.%s", sh, ksh);
          if (cd->op == OP_BOOL || cd->op == OP_NULL)
            {
              /* Booleans may be JSON booleans or the strings "true"/"false",
               * as in IAM; normalize to the strings. */
              size_t count = json_is_array (vals) ? json_array_size (vals) : 1;
              if (!json_is_array (vals) && !json_is_string (vals) && !json_is_boolean (vals))
                return perr (err, p, "`%s` in %s must be `true` or `false`", field, where);
              if (count == 0)
                return perr (err, p, "`%s` in %s is an empty array", field, where);
              if (count > POLICY_MAX_VALUES)
                return perr (err, p, "`%s` in %s has more than %d values", field, where,
                             POLICY_MAX_VALUES);
              ck->values = calloc (count, sizeof *ck->values);
              if (ck->values == NULL)
                return bvm_error (err, ENOMEM, "policy `%s`", p->name);
              for (size_t i = 0; i < count; i++)
                {
                  const json_t *e = json_is_array (vals) ? json_array_get (vals, i) : vals;
                  if (json_is_true (e)
                      || (json_is_string (e) && strcmp (json_string_value (e), "true") == 0))
                    ck->values[i] = "true";
                  else if (json_is_false (e)
                           || (json_is_string (e) && strcmp (json_string_value (e), "false") == 0))
                    ck->values[i] = "false";
                  else
                    return perr (err, p, "`%s` in %s must be `true` or `false`", field, where);
                }
              ck->nvalues = count;
            }
          else
            {
              int ret = get_list (&ck->values, &ck->nvalues, p, vals, field, where, err);
              if (ret < 0)
                return ret;
              if (!p->instantiated)
                for (size_t i = 0; i < ck->nvalues; i++)
                  {
                    ret = check_vars (p, ck->values[i], VARS_ANYWHERE, field, where, err);
                    if (ret < 0)
                      return ret;
                  }
            }
        }
    }
  return 0;
}

static const char *
sid_problem (const char *s)
{
  static const char why[] = "must be 1 to 128 letters or digits";
  if (*s == '\0' || strlen (s) > 128)
    return why;
  for (; *s; s++)
    if (!is_alnum (*s))
      return why;
  return NULL;
}

/* The list in statement s under `key` or under `not_key` (exactly one of
 * them may be there; *negated when it is the second), *field its name. */
static int
get_either (const char ***out, size_t *n, bool *negated, const char **field, struct policy *p,
            const json_t *s, const char *key, const char *not_key, const char *where,
            bvm_error_t *err)
{
  const json_t *v = json_object_get (s, key), *nv = json_object_get (s, not_key);

  if (v != NULL && nv != NULL)
    return perr (err, p, "%s has both `%s` and `%s`", where, key, not_key);
  if (v == NULL && nv == NULL)
    return perr (err, p, "%s needs `%s` or `%s`", where, key, not_key);
  *negated = nv != NULL;
  *field = v ? key : not_key;
  return get_list (out, n, p, v ? v : nv, *field, where, err);
}

static int
compile_statement (struct policy *p, size_t idx, const json_t *s, const char *where,
                   bvm_error_t *err)
{
  static const char *const keys[] = { "Sid",      "Effect",      "Action",    "NotAction",
                                      "Resource", "NotResource", "Condition", NULL };
  struct stmt *st = &p->stmts[idx];
  const json_t *v, *cond;
  const char *field = NULL;
  char sh[SHOW_SIZE];
  const char *k;
  json_t *val;
  int ret;

  if (!json_is_object (s))
    return perr (err, p, "%s must be an object", where);
  json_object_foreach ((json_t *) s, k, val)
    {
      bool ok = false;
      for (size_t i = 0; keys[i]; i++)
        ok = ok || strcmp (keys[i], k) == 0;
      if (!ok)
        return perr (err, p, "unknown statement key `%s` in %s", show (sh, sizeof sh, k, 100),
                     where);
    }

  v = json_object_get (s, "Sid");
  if (v != NULL)
    {
      /* IAM's own rule (ASCII letters and digits); it also keeps the Sid
       * safe to quote in error messages and logs. */
      if (!json_is_string (v) || sid_problem (json_string_value (v)) != NULL)
        return perr (err, p, "`Sid` in %s must be 1 to 128 ASCII letters and digits", where);
      st->sid = json_string_value (v);
      for (size_t i = 0; i < idx; i++)
        if (p->stmts[i].sid != NULL && strcmp (p->stmts[i].sid, st->sid) == 0)
          return perr (err, p, "duplicate Sid `%s` in %s", st->sid, where);
    }

  v = json_object_get (s, "Effect");
  if (v == NULL)
    return perr (err, p, "missing `Effect` in %s", where);
  if (!json_is_string (v))
    return perr (err, p, "`Effect` in %s must be a string", where);
  if (strcmp (json_string_value (v), "Allow") == 0)
    st->deny = false;
  else if (strcmp (json_string_value (v), "Deny") == 0)
    st->deny = true;
  else
    return perr (err, p, "unknown effect `%s` in %s: expected `Allow` or `Deny`",
                 show (sh, sizeof sh, json_string_value (v), 100), where);

  ret = get_either (&st->actions, &st->nactions, &st->not_action, &field, p, s, "Action",
                    "NotAction", where, err);
  if (ret < 0)
    return ret;
  for (size_t i = 0; i < st->nactions; i++)
    {
      ret = check_vars (p, st->actions[i], VARS_FORBIDDEN, field, where, err);
      if (ret == 0)
        ret = check_action (p, st->actions[i], where, err);
      if (ret < 0)
        return ret;
    }

  ret = get_either (&st->resources, &st->nresources, &st->not_resource, &field, p, s, "Resource",
                    "NotResource", where, err);
  if (ret < 0)
    return ret;
  for (size_t i = 0; i < st->nresources; i++)
    {
      ret = p->instantiated
                ? 0
                : check_vars (p, st->resources[i], VARS_WHOLE_SEGMENT, field, where, err);
      if (ret == 0)
        ret = check_resource (p, st->resources[i], where, err);
      if (ret < 0)
        return ret;
    }

  cond = json_object_get (s, "Condition");
  if (cond != NULL)
    return compile_condition (st, p, cond, where, err);
  return 0;
}

/* Compile `doc` (the policy takes the reference). */
static int
compile (struct policy **out, json_t *doc, const char *name, bool instantiated, bvm_error_t *err)
{
  static const char *const top_keys[] = { "Version", "Id", "Statement", NULL };
  cleanup_policy struct policy *pol = NULL;
  const json_t *ver, *stmts, *id;
  char sh[SHOW_SIZE];
  const char *k;
  json_t *v;
  bool is_array;
  size_t n;

  pol = calloc (1, sizeof *pol);
  if (pol == NULL)
    {
      json_decref (doc);
      return bvm_error (err, ENOMEM, "policy `%s`", name);
    }
  pol->doc = doc;
  pol->instantiated = instantiated;
  pol->name = strdup (name);
  if (pol->name == NULL)
    return bvm_error (err, ENOMEM, "policy `%s`", name);

  if (!json_is_object (doc))
    return perr (err, pol, "the document must be a JSON object");
  json_object_foreach (doc, k, v)
    {
      bool ok = false;
      for (size_t i = 0; top_keys[i]; i++)
        ok = ok || strcmp (top_keys[i], k) == 0;
      if (!ok)
        return perr (err, pol, "unknown top-level key `%s`", show (sh, sizeof sh, k, 100));
    }
  ver = json_object_get (doc, "Version");
  if (ver != NULL
      && (!json_is_string (ver)
          || (strcmp (json_string_value (ver), "2012-10-17") != 0
              && strcmp (json_string_value (ver), "2008-10-17") != 0)))
    return perr (err, pol, "unsupported `Version` %s%s%s: expected `2012-10-17`",
                 json_is_string (ver) ? "`" : "",
                 json_is_string (ver) ? show (sh, sizeof sh, json_string_value (ver), 64)
                                      : "(not a string)",
                 json_is_string (ver) ? "`" : "");
  id = json_object_get (doc, "Id");
  if (id != NULL && !json_is_string (id))
    return perr (err, pol, "`Id` must be a string");

  stmts = json_object_get (doc, "Statement");
  if (stmts == NULL)
    return perr (err, pol, "missing `Statement`");
  if (!json_is_object (stmts) && !json_is_array (stmts))
    return perr (err, pol, "`Statement` must be an object or an array of objects");
  is_array = json_is_array (stmts);
  n = is_array ? json_array_size (stmts) : 1;
  if (n > POLICY_MAX_STATEMENTS)
    return perr (err, pol, "more than %d statements", POLICY_MAX_STATEMENTS);
  pol->stmts = calloc (n ? n : 1, sizeof *pol->stmts);
  if (pol->stmts == NULL)
    return bvm_error (err, ENOMEM, "policy `%s`", name);
  for (size_t i = 0; i < n; i++)
    {
      char where[48];
      int ret;
      if (is_array)
        snprintf (where, sizeof where, "Statement[%zu]", i);
      else
        snprintf (where, sizeof where, "Statement");
      pol->nstmts = i + 1;
      ret = compile_statement (pol, i, is_array ? json_array_get (stmts, i) : stmts, where, err);
      if (ret < 0)
        return ret;
    }

  /* Under the 2008-10-17 grammar (IAM's default when Version is absent)
   * IAM reads `${job:App}` as literal text; a policy written with variables
   * almost certainly meant them, so say so instead of never matching. */
  if (pol->vars_used != 0 && (ver == NULL || strcmp (json_string_value (ver), "2012-10-17") != 0))
    return perr (err, pol, "policy variables need `\"Version\": \"2012-10-17\"`");

  *out = steal_pointer (&pol);
  return 0;
}

int
policy_parse (struct policy **out, const char *json, size_t len, const char *name,
              bvm_error_t *err)
{
  cleanup_buf struct buf what = BUF_INIT (4096);
  char sh[SHOW_SIZE];
  json_t *doc = NULL;
  int ret;

  if (name == NULL)
    name = "(unnamed)";
  buf_addf (&what, "policy `%s`", show (sh, sizeof sh, name, 200));
  ret = jsonx_parse (&doc, json, len, POLICY_MAX_BYTES, buf_cstr (&what), err);
  if (ret < 0)
    return ret;
  return compile (out, doc, name, false, err);
}

int
policy_load_file (struct policy **out, const char *path, bvm_error_t *err)
{
  cleanup_free char *data = NULL;
  size_t len = 0;
  int ret;

  ret = fs_read_file (&data, &len, path, POLICY_MAX_BYTES, err);
  if (ret < 0)
    return bvm_error_wrap (err, "loading policy `%s`", path);
  return policy_parse (out, data, len, path, err);
}

int
policy_load_builtin (struct policy **out, bool boundary, bvm_error_t *err)
{
  size_t len;
  const char *text = boundary ? policy_builtin_boundary (&len) : policy_builtin_role (&len);
  return policy_parse (out, text, len,
                       boundary ? POLICY_BUILTIN_BOUNDARY_NAME : POLICY_BUILTIN_ROLE_NAME, err);
}

/* ------------------------------------------------------------------------ */
/* roles                                                                     */

/* The job's values are validated, not escaped. Escaping a `*` in an app name
 * would need an escape syntax in every pattern and in the job record, for
 * names that the deploy-request parser never produces; a value like that
 * means a bug or an attack, and refusing it fails closed. Separators are
 * refused too: an app called `a/b` would otherwise read app `a`'s secrets
 * named `b/...`, and a commit `..` would step out of its prefix. */
static bool
value_char_ok (unsigned char c)
{
  /* `{ }` could make `${` next to a literal `$`; a backtick or backslash
   * would break the quoting of error messages and the role id */
  return c > 0x20 && c < 0x7f && strchr ("*?$:{}`\\", c) == NULL;
}

static const char *
segment_value_problem (const char *s)
{
  static const char why[] = "must be one path segment of safe characters, not `.` or `..`";
  size_t n = strlen (s);
  if (n == 0 || n > POLICY_VAR_MAX || strcmp (s, ".") == 0 || strcmp (s, "..") == 0)
    return why;
  for (; *s; s++)
    if (!value_char_ok ((unsigned char) *s) || *s == '/')
      return why;
  return NULL;
}

/* A ref ("refs/heads/main") may span segments but never has an empty, `.` or
 * `..` one. */
static const char *
ref_value_problem (const char *s)
{
  static const char why[]
      = "must be `/`-separated segments of safe characters, none empty, `.` or `..`";
  size_t n = strlen (s);
  const char *seg = s;

  if (n == 0 || n > POLICY_VAR_MAX)
    return why;
  for (const char *c = s;; c++)
    {
      if (*c == '/' || *c == '\0')
        {
          size_t len = (size_t) (c - seg);
          if (len == 0 || (len == 1 && seg[0] == '.')
              || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return why;
          if (*c == '\0')
            return NULL;
          seg = c + 1;
        }
      else if (!value_char_ok ((unsigned char) *c))
        return why;
    }
}

/* Substitute the variables in a string or an array of strings, in place. */
static int
subst_node (json_t *node, char *const vals[N_VARS], const char *name, bvm_error_t *err)
{
  size_t m = json_is_array (node) ? json_array_size (node) : 1;

  for (size_t j = 0; j < m; j++)
    {
      json_t *e = json_is_array (node) ? json_array_get (node, j) : node;
      cleanup_free char *s = NULL;
      int ret;

      if (!json_is_string (e) || strstr (json_string_value (e), "${") == NULL)
        continue;
      ret = subst_vars (&s, json_string_value (e), vals, err);
      if (ret < 0)
        return ret;
      if (json_string_set (e, s) < 0)
        return bvm_error (err, ENOMEM, "policy `%s`", name);
    }
  return 0;
}

static int
instantiate (struct policy **out, const struct policy *tmpl, char *const vals[N_VARS],
             bvm_error_t *err)
{
  cleanup_json json_t *doc = NULL;
  json_t *stmts;
  size_t n;

  for (int i = 0; i < N_VARS; i++)
    if ((tmpl->vars_used & (1u << i)) && vals[i] == NULL)
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "policy `%s` uses `${%s}` but the job has no value for it",
                             tmpl->name, var_names[i]);

  doc = json_deep_copy (tmpl->doc);
  if (doc == NULL)
    return bvm_error (err, ENOMEM, "policy `%s`", tmpl->name);
  stmts = json_object_get (doc, "Statement");
  n = json_is_array (stmts) ? json_array_size (stmts) : 1;
  for (size_t i = 0; i < n; i++)
    {
      json_t *s = json_is_array (stmts) ? json_array_get (stmts, i) : stmts;
      json_t *cond = json_object_get (s, "Condition");
      const char *op, *key;
      json_t *block, *v;
      int ret = 0;

      /* exactly the places where check_vars allowed variables */
      if ((v = json_object_get (s, "Resource")) != NULL)
        ret = subst_node (v, vals, tmpl->name, err);
      if (ret == 0 && (v = json_object_get (s, "NotResource")) != NULL)
        ret = subst_node (v, vals, tmpl->name, err);
      if (ret == 0 && cond != NULL)
        json_object_foreach (cond, op, block)
          {
            json_object_foreach (block, key, v)
              {
                ret = subst_node (v, vals, tmpl->name, err);
                if (ret < 0)
                  break;
              }
            if (ret < 0)
              break;
          }
      if (ret < 0)
        return ret;
    }
  return compile (out, steal_pointer (&doc), tmpl->name, true, err);
}

void
role_free (struct role *role)
{
  if (role == NULL)
    return;
  policy_free (role->policy);
  policy_free (role->boundary);
  for (int i = 0; i < N_VARS; i++)
    free (role->vars[i]);
  free (role->id);
  free (role);
}

int
role_mint (struct role **out, const struct policy *tmpl, const struct policy *boundary,
           const struct policy_vars *vars, int64_t expires_at, bvm_error_t *err)
{
  static const struct policy_vars none = { NULL, NULL, NULL, NULL };
  cleanup_role struct role *r = NULL;
  const char *in[N_VARS];
  unsigned char rnd[4];
  char hex[9], sh[SHOW_SIZE];
  int ret;

  if (vars == NULL)
    vars = &none;
  in[VAR_APP] = vars->app;
  in[VAR_COMMIT] = vars->commit;
  in[VAR_REF] = vars->ref;
  in[VAR_ID] = vars->id;
  if (expires_at <= 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "a role needs an expiry");

  for (int i = 0; i < N_VARS; i++)
    {
      if (in[i] == NULL)
        continue;
      if (i == VAR_REF ? ref_value_problem (in[i]) != NULL : segment_value_problem (in[i]) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "minting a role: `${%s}` value `%s` is not allowed: it must be %s "
                               "of printable ASCII without spaces, backticks, backslashes or "
                               "`: * ? $ { }`",
                               var_names[i], show (sh, sizeof sh, in[i], 100),
                               i == VAR_REF ? "a path with no empty, `.` or `..` segment"
                                            : "one path segment (no `/`, not `.` or `..`)");
    }

  r = calloc (1, sizeof *r);
  if (r == NULL)
    return bvm_error (err, ENOMEM, "minting a role");
  for (int i = 0; i < N_VARS; i++)
    if (in[i] != NULL && (r->vars[i] = strdup (in[i])) == NULL)
      return bvm_error (err, ENOMEM, "minting a role");
  r->expires_at = expires_at;
  format_rfc3339 (r->expires_str, sizeof r->expires_str, expires_at);

  if (getrandom (rnd, sizeof rnd, 0) != (ssize_t) sizeof rnd)
    return bvm_error (err, errno ? errno : EIO, "minting a role: getrandom");
  hex_encode (hex, rnd, sizeof rnd);
  if (vars->id != NULL)
    ret = asprintf (&r->id, "role-%s-%s", vars->id, hex);
  else
    ret = asprintf (&r->id, "role-%s", hex);
  if (ret < 0)
    {
      r->id = NULL;
      return bvm_error (err, ENOMEM, "minting a role");
    }

  ret = instantiate (&r->policy, tmpl, r->vars, err);
  if (ret == 0 && boundary != NULL)
    ret = instantiate (&r->boundary, boundary, r->vars, err);
  if (ret < 0)
    return bvm_error_wrap (err, "minting a role");
  *out = steal_pointer (&r);
  return 0;
}

const char *
role_id (const struct role *role)
{
  return role->id;
}

int64_t
role_expires_at (const struct role *role)
{
  return role->expires_at;
}

const struct policy *
role_policy (const struct role *role)
{
  return role->policy;
}

const struct policy *
role_boundary (const struct role *role)
{
  return role->boundary;
}

json_t *
role_to_json (const struct role *role)
{
  json_t *j = json_pack ("{s:s, s:s, s:{s:s, s:O}}", "id", role->id, "expires_at",
                         role->expires_str, "policy", "name", role->policy->name, "document",
                         role->policy->doc);
  if (j != NULL && role->boundary != NULL
      && json_object_set_new (j, "boundary",
                              json_pack ("{s:s, s:O}", "name", role->boundary->name, "document",
                                         role->boundary->doc))
             < 0)
    {
      json_decref (j);
      return NULL;
    }
  return j;
}

/* ------------------------------------------------------------------------ */
/* evaluation                                                                */

struct request
{
  const struct role *role;
  const char *action;
  const char *resource;
  const struct policy_context *ctx;
};

/* Condition keys are case-insensitive, as in IAM. The job keys come from the
 * role; only when the role has no value for one (no job was given) may the
 * caller's context supply it. */
static const char *
ctx_lookup (const struct request *rq, const char *key)
{
  for (int i = 0; i < N_VARS; i++)
    if (strcasecmp (key, var_names[i]) == 0 && rq->role->vars[i] != NULL)
      return rq->role->vars[i];
  if (rq->ctx != NULL)
    for (size_t i = 0; i < rq->ctx->n; i++)
      if (rq->ctx->entries[i].key != NULL && strcasecmp (key, rq->ctx->entries[i].key) == 0)
        return rq->ctx->entries[i].value;
  return NULL;
}

static bool
value_matches (enum cond_op op, const char *pattern, const char *v)
{
  switch (op)
    {
    case OP_STRING_EQUALS:
    case OP_STRING_NOT_EQUALS: return strcmp (pattern, v) == 0;
    case OP_STRING_EQUALS_IGNORE_CASE: return strcasecmp (pattern, v) == 0;
    case OP_STRING_LIKE:
    case OP_STRING_NOT_LIKE: return policy_wildcard_match (pattern, v, false);
    case OP_BOOL: return strcasecmp (pattern, v) == 0;
    case OP_NULL: break;
    }
  return false;
}

/* One key of one operator. Several values are ORed; for a negated operator
 * the result is the negation of that OR (IAM: "does not match any").
 * A key missing from the request makes a non-negated operator false and a
 * negated one true; `...IfExists` makes it true either way. */
static bool
cond_key_true (const struct cond *c, const struct cond_key *k, const char *v)
{
  bool any = false;

  if (c->op == OP_NULL)
    {
      for (size_t i = 0; i < k->nvalues; i++)
        if ((strcmp (k->values[i], "true") == 0) == (v == NULL))
          return true;
      return false;
    }
  if (v == NULL)
    return c->if_exists || op_negated (c->op);
  for (size_t i = 0; i < k->nvalues && !any; i++)
    any = value_matches (c->op, k->values[i], v);
  return op_negated (c->op) ? !any : any;
}

static bool
stmt_matches (const struct stmt *s, const struct request *rq)
{
  if (any_match (s->actions, s->nactions, rq->action, true) == s->not_action)
    return false;
  if (any_match (s->resources, s->nresources, rq->resource, false) == s->not_resource)
    return false;
  /* operators are ANDed, and the keys within one operator too */
  for (size_t i = 0; i < s->nconds; i++)
    for (size_t k = 0; k < s->conds[i].nkeys; k++)
      if (!cond_key_true (&s->conds[i], &s->conds[i].keys[k],
                          ctx_lookup (rq, s->conds[i].keys[k].key)))
        return false;
  return true;
}

/* The first matching Deny and the first matching Allow (-1 if none). Every
 * statement is looked at, so their order cannot matter. */
static void
policy_eval (const struct policy *p, const struct request *rq, int *deny, int *allow)
{
  *deny = *allow = -1;
  for (size_t i = 0; i < p->nstmts; i++)
    {
      const struct stmt *s = &p->stmts[i];
      if (s->deny ? *deny >= 0 : *allow >= 0)
        continue;
      if (!stmt_matches (s, rq))
        continue;
      if (s->deny)
        {
          *deny = (int) i;
          return;
        }
      *allow = (int) i;
    }
}

static void
stmt_label (char *buf, size_t size, const struct policy *p, int idx)
{
  char nm[SHOW_SIZE];
  show (nm, sizeof nm, p->name, 200);
  if (p->stmts[idx].sid != NULL)
    line_printf (buf, size, "`%s` statement `%s`", nm, p->stmts[idx].sid);
  else
    line_printf (buf, size, "`%s` Statement[%d]", nm, idx);
}

/* Why a requested resource is refused before any matching, or NULL.
 * Patterns match the exact string, as in IAM, so `apps/a/../b` matches
 * `apps/a/` followed by a star; a store that resolved `..` would then write
 * under app b. No caller has a reason to send such a key, so none is ever
 * allowed. Both `/` and `:` delimit segments. */
static const char *
resource_problem (const char *r)
{
  const char *seg = r;
  size_t n = 0;

  if (*r == '\0')
    return "the resource is empty";
  for (const char *c = r;; c++, n++)
    {
      unsigned char ch = (unsigned char) *c;
      if (n > POLICY_RESOURCE_MAX)
        return "the resource is too long";
      if (ch == '/' || ch == ':' || ch == '\0')
        {
          size_t len = (size_t) (c - seg);
          if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return "the resource has a `.` or `..` path segment";
          if (ch == '/' && c[1] == '/')
            return "the resource has an empty path segment (`//`)";
          if (ch == '\0')
            return NULL;
          seg = c + 1;
        }
      else if (ch < 0x20 || ch == 0x7f)
        return "the resource contains a control character";
    }
}

static const char *
action_problem (const char *a)
{
  size_t n = 0;
  if (*a == '\0')
    return "the action is empty";
  for (; *a; a++, n++)
    {
      if (n >= POLICY_ACTION_MAX)
        return "the action is too long";
      if ((unsigned char) *a <= 0x20 || (unsigned char) *a >= 0x7f)
        return "the action contains a space, control or non-ASCII character";
    }
  return NULL;
}

void
role_decide (const struct role *role, const char *action, const char *resource,
             const struct policy_context *ctx, struct policy_decision *out)
{
  struct request rq = { role, action, resource, ctx };
  const char *problem;
  int rdeny, rallow, bdeny = -1, ballow = -1;
  char label[POLICY_DECISION_MAX];

  out->allowed = false;
  out->statement = -1;

  if (action == NULL || resource == NULL)
    {
      out->reason = POLICY_INVALID_REQUEST;
      line_printf (out->why, sizeof out->why, "explicit deny: no %s given",
                   action == NULL ? "action" : "resource");
      return;
    }

  if (wall_s () >= role->expires_at)
    {
      out->reason = POLICY_EXPIRED;
      line_printf (out->why, sizeof out->why, "role expired at %s", role->expires_str);
      return;
    }
  problem = action_problem (action);
  if (problem == NULL)
    problem = resource_problem (resource);
  if (problem != NULL)
    {
      out->reason = POLICY_INVALID_REQUEST;
      line_printf (out->why, sizeof out->why, "explicit deny: %s", problem);
      return;
    }

  policy_eval (role->policy, &rq, &rdeny, &rallow);
  if (rdeny < 0 && role->boundary != NULL)
    policy_eval (role->boundary, &rq, &bdeny, &ballow);

  if (rdeny >= 0 || bdeny >= 0)
    {
      const struct policy *p = rdeny >= 0 ? role->policy : role->boundary;
      int idx = rdeny >= 0 ? rdeny : bdeny;
      stmt_label (label, sizeof label, p, idx);
      out->reason = POLICY_EXPLICIT_DENY;
      out->statement = idx;
      line_printf (out->why, sizeof out->why, "explicit deny by %s", label);
      return;
    }
  if (rallow < 0)
    {
      out->reason = POLICY_IMPLICIT_DENY;
      line_printf (out->why, sizeof out->why, "implicit deny: no statement allows it");
      return;
    }
  if (role->boundary != NULL && ballow < 0)
    {
      char nm[SHOW_SIZE];
      out->reason = POLICY_BOUNDARY_DENY;
      line_printf (out->why, sizeof out->why, "not allowed by the permission boundary `%s`",
                   show (nm, sizeof nm, role->boundary->name, 200));
      return;
    }
  stmt_label (label, sizeof label, role->policy, rallow);
  out->allowed = true;
  out->reason = POLICY_ALLOWED;
  out->statement = rallow;
  line_printf (out->why, sizeof out->why, "allowed by %s", label);
}

int
role_authorize_ctx (const struct role *role, const char *action, const char *resource,
                    const struct policy_context *ctx, bvm_error_t *err)
{
  struct policy_decision d;
  char ash[SHOW_SIZE], rsh[SHOW_SIZE];

  role_decide (role, action, resource, ctx, &d);
  if (d.allowed)
    return 0;
  show (ash, sizeof ash, action ? action : "", 100);
  show (rsh, sizeof rsh, resource ? resource : "", 200);
  if (d.reason == POLICY_EXPIRED)
    return bvm_error_code (err, BVM_E_DENIED, 0, "role `%s` expired at %s: denies `%s` on `%s`",
                           role->id, role->expires_str, ash, rsh);
  return bvm_error_code (err, BVM_E_DENIED, 0, "role `%s` denies `%s` on `%s` (%s)", role->id, ash,
                         rsh, d.why);
}

int
role_authorize (const struct role *role, const char *action, const char *resource,
                bvm_error_t *err)
{
  return role_authorize_ctx (role, action, resource, NULL, err);
}
