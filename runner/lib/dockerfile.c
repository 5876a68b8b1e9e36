/* dockerfile.c - the Dockerfile grammar the host reads, see dockerfile.h */
#include "dockerfile.h"
#include "buf.h"
#include "digest.h"
#include "job.h"
#include "jsonx.h"
#include "oci.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_WORDS 4096 /* words of one instruction */

/* --- image references ------------------------------------------------------------ */

/* A registry host as a reference's first component: letters, digits, `-`
 * and `.`, an optional `:port` of decimal digits. */
static bool
domain_ok (const char *s, size_t n)
{
  size_t i = 0, host = 0;

  while (i < n && s[i] != ':')
    {
      if (!(is_alnum (s[i]) || s[i] == '-' || s[i] == '.'))
        return false;
      i++;
      host++;
    }
  if (host == 0 || s[0] == '-' || s[0] == '.')
    return false;
  if (i < n)
    {
      size_t digits = n - i - 1;
      if (digits == 0 || digits > 5)
        return false;
      for (i++; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
          return false;
    }
  return true;
}

const char *
dockerfile_ref_parse (struct dockerfile_ref *out, const char *ref)
{
  struct dockerfile_ref r;
  char name[DOCKERFILE_REF_MAX + 1];
  const char *at, *slash, *colon, *path;
  size_t len = strlen (ref);

  memset (&r, 0, sizeof r);
  if (len == 0)
    return "is empty";
  if (len > DOCKERFILE_REF_MAX)
    return "is longer than 512 bytes";
  for (const char *p = ref; *p; p++)
    if ((unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f)
      return "has a space, control or non-ASCII character";
  at = strchr (ref, '@');
  if (at != NULL)
    {
      if (digest_problem (at + 1) != NULL)
        return "has a digest that is not `sha256:` and 64 lowercase hex digits";
      snprintf (r.digest, sizeof r.digest, "%s", at + 1);
      len = (size_t) (at - ref);
    }
  memcpy (name, ref, len);
  name[len] = '\0';
  slash = strrchr (name, '/');
  colon = strrchr (name, ':');
  if (colon != NULL && (slash == NULL || colon > slash))
    {
      if (oci_tag_problem (colon + 1) != NULL)
        return "has an invalid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})";
      snprintf (r.tag, sizeof r.tag, "%s", colon + 1);
      name[colon - name] = '\0';
    }
  else if (r.digest[0] == '\0')
    snprintf (r.tag, sizeof r.tag, "latest");
  slash = strchr (name, '/');
  path = name;
  if (slash != NULL)
    {
      size_t n = (size_t) (slash - name);
      if (memchr (name, '.', n) != NULL || memchr (name, ':', n) != NULL
          || (n == 9 && memcmp (name, "localhost", 9) == 0))
        {
          if (!domain_ok (name, n))
            return "has an invalid registry host";
          memcpy (r.domain, name, n);
          r.domain[n] = '\0';
          r.domain_given = true;
          path = slash + 1;
        }
    }
  if (!r.domain_given)
    snprintf (r.domain, sizeof r.domain, "docker.io");
  if (oci_repository_problem (path) != NULL)
    return "has an invalid repository name (lowercase components such as `library/node`)";
  if (snprintf_checked (r.path, sizeof r.path, "%s%s",
                        !r.domain_given && strchr (path, '/') == NULL ? "library/" : "", path)
          < 0
      || strlen (r.path) > 255)
    return "has a repository name longer than 255 bytes";
  if (snprintf_checked (r.name, sizeof r.name, r.digest[0] ? "%s/%s@%s" : "%s/%s:%s", r.domain,
                        r.path, r.digest[0] ? r.digest : r.tag)
      < 0)
    return "is longer than 512 bytes";
  if (out != NULL)
    *out = r;
  return NULL;
}

/* --- the parser's state ------------------------------------------------------------ */

struct var
{
  char *name;
  char *value; /* NULL: declared, unset */
  bool fixed;  /* a predefined platform arg: build args do not change it */
};

struct parser
{
  const char *path;
  const char *text;
  size_t len, pos;
  unsigned lineno; /* of the physical line read last */
  unsigned line;   /* where the instruction being parsed starts */
  char escape;     /* `\` or ` */
  const struct spec_kv *args;
  size_t n_args;
  const char *target; /* lower case, or NULL */
  bool target_seen;   /* the target stage's FROM was read: collect no more */
  struct var vars[DOCKERFILE_MAX_ARGS + 16];
  size_t n_vars;
  struct dockerfile *d;
  size_t cap_bases, cap_secrets, cap_urls;
  bvm_error_t *err;
};

static int fail (struct parser *p, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* "Dockerfile:LINE: <why>" */
static int
fail (struct parser *p, int code, const char *fmt, ...)
{
  char msg[1024], shown[JOB__SHOW_SIZE];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return bvm_error_code (p->err, code, 0, "%s:%u: %s", job__show (shown, sizeof shown, p->path),
                         p->line, msg);
}

static int
nomem (struct parser *p)
{
  return bvm_error (p->err, ENOMEM, "parsing the Dockerfile");
}

/* a hostile word, quoted and escaped for an error message */
static const char *
show (char *buf, size_t size, const char *s)
{
  return job__show (buf, size, s);
}

static bool
is_space (char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* --- lines ------------------------------------------------------------------------ */

/* The next physical line, without its newline (and a CR before it). */
static bool
next_line (struct parser *p, const char **line, size_t *n)
{
  const char *nl;

  if (p->pos >= p->len)
    return false;
  *line = p->text + p->pos;
  nl = memchr (*line, '\n', p->len - p->pos);
  *n = nl ? (size_t) (nl - *line) : p->len - p->pos;
  p->pos += *n + (nl != NULL);
  p->lineno++;
  if (*n > 0 && (*line)[*n - 1] == '\r')
    (*n)--;
  return true;
}

static bool
blank_or_comment (const char *s, size_t n)
{
  size_t i = 0;
  while (i < n && is_space (s[i]))
    i++;
  return i == n || s[i] == '#';
}

/* Parser directives: `# key=value` lines at the very top; the first line
 * that is not one ends them (BuildKit: "once a comment, empty line or
 * builder instruction has been processed, no longer looks for directives";
 * an unknown directive is a comment). */
static int
read_directives (struct parser *p)
{
  bool seen_escape = false, seen_syntax = false, seen_check = false;

  for (;;)
    {
      size_t save_pos = p->pos, n, i = 0, k0, k1, v0, v1;
      unsigned save_line = p->lineno;
      const char *s;
      bool *seen = NULL;

      if (!next_line (p, &s, &n))
        return 0;
      p->line = p->lineno;
      while (i < n && is_space (s[i]))
        i++;
      if (i == n || s[i] != '#')
        goto done;
      for (i++; i < n && is_space (s[i]); i++)
        ;
      k0 = i;
      while (i < n && (is_alnum (s[i]) || s[i] == '_'))
        i++;
      k1 = i;
      while (i < n && is_space (s[i]))
        i++;
      if (k1 == k0 || i == n || s[i] != '=')
        goto done;
      for (i++; i < n && is_space (s[i]); i++)
        ;
      v0 = i;
      v1 = n;
      while (v1 > v0 && is_space (s[v1 - 1]))
        v1--;
      if (k1 - k0 == 6 && strncasecmp (s + k0, "escape", 6) == 0)
        {
          if (v1 - v0 != 1 || (s[v0] != '\\' && s[v0] != '`'))
            return fail (p, BVM_E_INVALID, "the escape directive must be ` or \\");
          p->escape = s[v0];
          seen = &seen_escape;
        }
      else if (k1 - k0 == 6 && strncasecmp (s + k0, "syntax", 6) == 0)
        seen = &seen_syntax; /* a frontend image: buildah has one grammar */
      else if (k1 - k0 == 5 && strncasecmp (s + k0, "check", 5) == 0)
        seen = &seen_check;
      else
        {
          /* an unknown directive is a comment, and ends the directives */
          p->pos = save_pos;
          p->lineno = save_line;
          return 0;
        }
      if (*seen)
        return fail (p, BVM_E_INVALID, "the parser directive `%.*s` is given twice",
                     (int) (k1 - k0), s + k0);
      *seen = true;
      continue;
    done:
      p->pos = save_pos;
      p->lineno = save_line;
      return 0;
    }
}

/* The next logical line into `b`: comments and blank lines skipped,
 * continuations joined (a comment or blank line inside a continuation is
 * skipped, as BuildKit does). 0 at the end, 1 with a line. */
static int
next_instruction (struct parser *p, struct buf *b)
{
  const char *s;
  size_t n;
  bool cont = false;

  buf_reset (b);
  while (next_line (p, &s, &n))
    {
      size_t end = n;
      bool more = false;

      if (memchr (s, '\0', n) != NULL)
        {
          p->line = p->lineno;
          return fail (p, BVM_E_INVALID, "the Dockerfile contains a NUL byte");
        }
      if (blank_or_comment (s, n))
        continue;
      if (!cont)
        {
          p->line = p->lineno;
          while (n > 0 && is_space (*s))
            s++, n--, end--;
        }
      while (end > 0 && is_space (s[end - 1]))
        end--;
      if (end > 0 && s[end - 1] == p->escape)
        {
          more = true;
          end--;
        }
      if (b->len + end > DOCKERFILE_LINE_MAX || buf_add (b, s, end) < 0)
        {
          if (errno == ENOMEM)
            return nomem (p);
          return fail (p, BVM_E_LIMIT, "an instruction is longer than %d bytes",
                       DOCKERFILE_LINE_MAX);
        }
      if (!more)
        return 1;
      cont = true;
    }
  return cont ? 1 : 0; /* a continuation at the end ends the instruction */
}

/* --- words --------------------------------------------------------------------------- */

struct words
{
  char *v[MAX_WORDS];
  size_t n;
};

static void
words_dispose (struct words *w)
{
  for (size_t i = 0; i < w->n; i++)
    free (w->v[i]);
  w->n = 0;
}

static int
words_add (struct parser *p, struct words *w, const char *s, size_t n)
{
  if (w->n >= MAX_WORDS)
    return fail (p, BVM_E_LIMIT, "an instruction has more than %d words", MAX_WORDS);
  if ((w->v[w->n] = strndup (s, n)) == NULL)
    return nomem (p);
  w->n++;
  return 0;
}

/* Split at white space outside double quotes (a flag such as
 * --mount=type=secret,id=x,target="/a b" is one word). */
static int
split_words (struct parser *p, struct words *w, const char *s)
{
  while (*s)
    {
      const char *start;
      bool dq = false;

      while (is_space (*s))
        s++;
      if (*s == '\0')
        break;
      start = s;
      while (*s && (dq || !is_space (*s)))
        {
          if (*s == p->escape && s[1] != '\0')
            s++;
          else if (*s == '"')
            dq = !dq;
          s++;
        }
      if (words_add (p, w, start, (size_t) (s - start)) < 0)
        return -1;
    }
  return 0;
}

/* The JSON form `["a", "b"]` when the text is one, else 0 (the shell form). */
static int
json_words (struct parser *p, struct words *w, const char *s, bool *is_json)
{
  cleanup_json json_t *a = NULL;
  json_t *v;
  size_t i;

  *is_json = false;
  if (*s != '[')
    return 0;
  a = json_loads (s, JSON_REJECT_DUPLICATES, NULL);
  if (a == NULL || !json_is_array (a))
    return 0;
  json_array_foreach (a, i, v)
    if (!json_is_string (v))
      return 0;
  json_array_foreach (a, i, v)
    if (words_add (p, w, json_string_value (v), json_string_length (v)) < 0)
      return -1;
  *is_json = true;
  return 0;
}

/* Leading `--name[=value]` words of `s` into `flags`; what follows them. */
static const char *
take_flags (struct parser *p, struct words *flags, const char *s, int *ret)
{
  *ret = 0;
  for (;;)
    {
      const char *start;
      bool dq = false;

      while (is_space (*s))
        s++;
      if (strncmp (s, "--", 2) != 0 || s[2] == '\0' || is_space (s[2]))
        return s;
      start = s;
      while (*s && (dq || !is_space (*s)))
        {
          if (*s == p->escape && s[1] != '\0')
            s++;
          else if (*s == '"')
            dq = !dq;
          s++;
        }
      if ((*ret = words_add (p, flags, start, (size_t) (s - start))) < 0)
        return s;
    }
}

/* `--name=value` or `--name`: the name's length and the value (NULL when
 * there is no `=`). */
static const char *
flag_split (const char *flag, size_t *name_len)
{
  const char *eq = strchr (flag + 2, '=');
  *name_len = eq ? (size_t) (eq - flag - 2) : strlen (flag + 2);
  return eq ? eq + 1 : NULL;
}

static bool
flag_is (const char *flag, const char *name)
{
  size_t n;
  flag_split (flag, &n);
  return strlen (name) == n && strncasecmp (flag + 2, name, n) == 0;
}

/* A word with its quotes removed (no variables: the caller refuses `$`). */
static char *
unquote (const char *s, char escape)
{
  size_t n = strlen (s), j = 0;
  char *r = malloc (n + 1), q = 0;

  if (r == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++)
    {
      if (q == 0 && (s[i] == '"' || s[i] == '\''))
        q = s[i];
      else if (q != 0 && s[i] == q)
        q = 0;
      else if (q != '\'' && s[i] == escape && i + 1 < n)
        r[j++] = s[++i];
      else
        r[j++] = s[i];
    }
  r[j] = '\0';
  return r;
}

/* --- variables --------------------------------------------------------------------- */

static struct var *
var_find (struct parser *p, const char *name, size_t n)
{
  for (size_t i = 0; i < p->n_vars; i++)
    if (strlen (p->vars[i].name) == n && memcmp (p->vars[i].name, name, n) == 0)
      return &p->vars[i];
  return NULL;
}

static bool
var_name_char (char c, bool first)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'
         || (!first && c >= '0' && c <= '9');
}

static int expand (struct parser *p, struct buf *out, const char *s, size_t n, bool in_braces);

/* `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` at s (after the `$`). */
static int
expand_var (struct parser *p, struct buf *out, const char *s, size_t n, size_t *used)
{
  size_t i = 0, name0, name1;
  const struct var *v;
  bool braces = n > 0 && s[0] == '{';

  if (braces)
    i++;
  name0 = i;
  while (i < n && var_name_char (s[i], i == name0))
    i++;
  name1 = i;
  if (name1 == name0)
    {
      if (braces)
        return fail (p, BVM_E_INVALID, "a `${` without a variable name");
      *used = 0;
      return buf_adds (out, "$") < 0 ? fail (p, BVM_E_LIMIT, "a FROM line grew too long") : 0;
    }
  if (name1 - name0 > DOCKERFILE_NAME_MAX)
    return fail (p, BVM_E_INVALID, "a variable name is longer than %d bytes", DOCKERFILE_NAME_MAX);
  v = var_find (p, s + name0, name1 - name0);
  if (!braces)
    {
      *used = i;
      if (v && v->value && buf_adds (out, v->value) < 0)
        return fail (p, BVM_E_LIMIT, "a FROM line grew too long");
      return 0;
    }
  if (i >= n)
    return fail (p, BVM_E_INVALID, "a `${` without its `}`");
  if (s[i] == '}')
    {
      *used = i + 1;
      if (v && v->value && buf_adds (out, v->value) < 0)
        return fail (p, BVM_E_LIMIT, "a FROM line grew too long");
      return 0;
    }
  if (i + 1 < n && s[i] == ':' && (s[i + 1] == '-' || s[i + 1] == '+'))
    {
      bool set = v && v->value && v->value[0];
      char op = s[i + 1];
      size_t w0 = i + 2, w1 = w0;
      int depth = 0;
      while (w1 < n && (depth > 0 || s[w1] != '}'))
        {
          if (s[w1] == '{')
            depth++;
          else if (s[w1] == '}')
            depth--;
          w1++;
        }
      if (w1 >= n)
        return fail (p, BVM_E_INVALID, "a `${` without its `}`");
      *used = w1 + 1;
      if (op == '-' && set)
        return buf_adds (out, v->value) < 0 ? fail (p, BVM_E_LIMIT, "a FROM line grew too long")
                                            : 0;
      if ((op == '-' && !set) || (op == '+' && set))
        return expand (p, out, s + w0, w1 - w0, true);
      return 0;
    }
  return fail (p, BVM_E_INVALID,
               "unsupported variable syntax (only $X, ${X}, ${X:-word} and ${X:+word})");
}

/* Quote removal and variable substitution of one word (BuildKit's shell
 * lexer, the part a FROM line needs). */
static int
expand (struct parser *p, struct buf *out, const char *s, size_t n, bool in_braces)
{
  char q = 0;

  (void) in_braces;
  for (size_t i = 0; i < n; i++)
    {
      char c = s[i];
      int ret = 0;

      if (q != '\'' && c == p->escape && i + 1 < n)
        ret = buf_add (out, &s[++i], 1);
      else if (q == 0 && (c == '"' || c == '\''))
        q = c;
      else if (q != 0 && c == q)
        q = 0;
      else if (q != '\'' && c == '$')
        {
          size_t used = 0;
          if (expand_var (p, out, s + i + 1, n - i - 1, &used) < 0)
            return -1;
          i += used;
        }
      else
        ret = buf_add (out, &c, 1);
      if (ret < 0)
        return fail (p, BVM_E_LIMIT, "a FROM line grew too long");
    }
  if (q != 0)
    return fail (p, BVM_E_INVALID, "an unterminated quote");
  return 0;
}

static int
expand_word (struct parser *p, char **out, const char *s)
{
  struct buf b = BUF_INIT (DOCKERFILE_LINE_MAX);

  if (expand (p, &b, s, strlen (s), false) < 0)
    {
      buf_dispose (&b);
      return -1;
    }
  *out = buf_steal (&b);
  return 0;
}

static int
var_set (struct parser *p, const char *name, const char *value, bool fixed)
{
  struct var *v = var_find (p, name, strlen (name));

  if (v != NULL && v->fixed)
    return 0;
  if (v == NULL)
    {
      if (p->n_vars >= ARRAY_SIZE (p->vars))
        return fail (p, BVM_E_LIMIT, "more than %d ARGs before the first FROM",
                     DOCKERFILE_MAX_ARGS);
      v = &p->vars[p->n_vars];
      if ((v->name = strdup (name)) == NULL)
        return nomem (p);
      p->n_vars++;
    }
  else if (value == NULL)
    return 0; /* `ARG X` again keeps what X has */
  free (v->value);
  v->value = NULL;
  v->fixed = fixed;
  if (value != NULL && (v->value = strdup (value)) == NULL)
    return nomem (p);
  return 0;
}

static const char *
build_arg (struct parser *p, const char *name)
{
  for (size_t i = 0; i < p->n_args; i++)
    if (strcmp (p->args[i].key, name) == 0)
      return p->args[i].value;
  return NULL;
}

/* `ARG NAME[=default] ...` before the first FROM: the build arg of that
 * name wins over the default. */
static int
global_arg (struct parser *p, struct words *w)
{
  char shown[JOB__SHOW_SIZE];

  if (w->n == 0)
    return fail (p, BVM_E_INVALID, "ARG needs a name");
  for (size_t i = 0; i < w->n; i++)
    {
      char *eq = strchr (w->v[i], '=');
      cleanup_free char *def = NULL;
      const char *given;
      size_t n = eq ? (size_t) (eq - w->v[i]) : strlen (w->v[i]);

      if (n == 0 || n > DOCKERFILE_NAME_MAX || !var_name_char (w->v[i][0], true))
        return fail (p, BVM_E_INVALID, "ARG `%s` is not a valid name",
                     show (shown, sizeof shown, w->v[i]));
      for (size_t k = 1; k < n; k++)
        if (!var_name_char (w->v[i][k], false))
          return fail (p, BVM_E_INVALID, "ARG `%s` is not a valid name",
                       show (shown, sizeof shown, w->v[i]));
      if (eq)
        {
          *eq = '\0';
          if (expand_word (p, &def, eq + 1) < 0)
            return -1;
        }
      given = build_arg (p, w->v[i]);
      if (var_set (p, w->v[i], given ? given : def, false) < 0)
        return -1;
    }
  return 0;
}

/* --- what is collected --------------------------------------------------------------- */

static bool
collecting (const struct parser *p)
{
  return !p->target_seen;
}

/* grow *arr (of `size`-byte elements, *cap of them) to hold one more, up to `max` */
static int
grow (struct parser *p, void **arr, size_t n, size_t *cap, size_t size, size_t max,
      const char *what)
{
  void *a;
  size_t c;

  if (n < *cap)
    return 0;
  if (n >= max)
    return fail (p, BVM_E_LIMIT, "more than %zu %s", max, what);
  c = *cap ? *cap * 2 : 8;
  if (c > max)
    c = max;
  a = realloc (*arr, c * size);
  if (a == NULL)
    return nomem (p);
  *arr = a;
  *cap = c;
  return 0;
}

/* A base image (deduplicated by its normalized name); its index. */
static long
add_base (struct parser *p, const char *ref, const char *how)
{
  struct dockerfile *d = p->d;
  struct dockerfile_ref r, o;
  const char *why = dockerfile_ref_parse (&r, ref);
  char shown[JOB__SHOW_SIZE];

  if (why != NULL)
    return fail (p, BVM_E_INVALID, "%s `%s`: the image reference %s", how,
                 show (shown, sizeof shown, ref), why);
  for (size_t i = 0; i < d->n_bases; i++)
    if (dockerfile_ref_parse (&o, d->bases[i].ref) == NULL && strcmp (o.name, r.name) == 0)
      return (long) i;
  if (grow (p, (void **) &d->bases, d->n_bases, &p->cap_bases, sizeof *d->bases,
            DOCKERFILE_MAX_STAGES, "base images")
      < 0)
    return -1;
  memset (&d->bases[d->n_bases], 0, sizeof *d->bases);
  if ((d->bases[d->n_bases].ref = strdup (ref)) == NULL)
    return nomem (p);
  d->bases[d->n_bases].line = p->line;
  d->bases[d->n_bases].how = how;
  return (long) d->n_bases++;
}

static int
add_item (struct parser *p, struct dockerfile_item **arr, size_t *n, size_t *cap,
          const char *value, bool distinct, const char *what)
{
  if (distinct)
    for (size_t i = 0; i < *n; i++)
      if (strcmp ((*arr)[i].value, value) == 0)
        return 0;
  if (grow (p, (void **) arr, *n, cap, sizeof **arr, DOCKERFILE_MAX_INSTRUCTIONS, what) < 0)
    return -1;
  if (((*arr)[*n].value = strdup (value)) == NULL)
    return nomem (p);
  (*arr)[*n].line = p->line;
  (*n)++;
  return 0;
}

/* the stage `s` names (lower case), or -1 */
static long
stage_by_name (const struct parser *p, const char *s)
{
  for (size_t i = 0; i < p->d->n_stages; i++)
    if (p->d->stages[i].name != NULL && strcasecmp (p->d->stages[i].name, s) == 0)
      return (long) i;
  return -1;
}

/* `--from=X` of COPY or of a RUN mount: an earlier stage by name or index,
 * else an image: a base. */
static int
from_ref (struct parser *p, const char *value, const char *how)
{
  char shown[JOB__SHOW_SIZE];
  size_t cur = p->d->n_stages - 1;
  bool digits = value[0] != '\0';

  if (value[0] == '\0')
    return fail (p, BVM_E_INVALID, "%s needs a stage or an image", how);
  if (strchr (value, '$') != NULL)
    return fail (p, BVM_E_INVALID,
                 "%s `%s`: variables are not supported here (the runner resolves the images "
                 "before the build)",
                 how, show (shown, sizeof shown, value));
  for (const char *c = value; *c; c++)
    if (*c < '0' || *c > '9')
      digits = false;
  if (digits)
    {
      uint32_t idx;
      if (parse_u32 (value, &idx) < 0 || idx >= cur)
        return fail (p, BVM_E_INVALID, "%s `%s`: there is no earlier stage of that index", how,
                     show (shown, sizeof shown, value));
      return 0;
    }
  if (stage_by_name (p, value) >= 0)
    {
      if ((size_t) stage_by_name (p, value) == cur)
        return fail (p, BVM_E_INVALID, "%s `%s`: a stage cannot copy from itself", how,
                     show (shown, sizeof shown, value));
      return 0;
    }
  if (!collecting (p))
    return dockerfile_ref_parse (NULL, value) == NULL
               ? 0
               : fail (p, BVM_E_INVALID, "%s `%s`: the image reference %s", how,
                       show (shown, sizeof shown, value), dockerfile_ref_parse (NULL, value));
  return add_base (p, value, how) < 0 ? -1 : 0;
}

/* --- instructions ---------------------------------------------------------------------- */

static bool
stage_name_ok (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n > DOCKERFILE_NAME_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
    return false;
  for (size_t i = 1; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'
          || s[i] == '_' || s[i] == '.'))
      return false;
  return true;
}

static int
do_from (struct parser *p, struct words *w, struct words *flags)
{
  struct dockerfile *d = p->d;
  struct dockerfile_stage *st;
  cleanup_free char *image = NULL, *name = NULL;
  char shown[JOB__SHOW_SIZE];
  long base = -1;

  for (size_t i = 0; i < flags->n; i++)
    {
      const char *v;
      size_t n;
      cleanup_free char *plat = NULL;

      if (!flag_is (flags->v[i], "platform") || (v = flag_split (flags->v[i], &n)) == NULL)
        return fail (p, BVM_E_INVALID, "FROM has an unknown flag `%s` (only --platform=)",
                     show (shown, sizeof shown, flags->v[i]));
      if (expand_word (p, &plat, v) < 0)
        return -1;
      if (plat[0] != '\0' && strcmp (plat, "linux/amd64") != 0)
        return fail (p, BVM_E_INVALID, "FROM --platform=%s: this runner builds linux/amd64 only",
                     show (shown, sizeof shown, plat));
    }
  if (!(w->n == 1 || (w->n == 3 && strcasecmp (w->v[1], "as") == 0)))
    return fail (p, BVM_E_INVALID, "FROM must be `FROM [--platform=...] IMAGE [AS NAME]`");
  if (d->n_stages >= DOCKERFILE_MAX_STAGES)
    return fail (p, BVM_E_LIMIT, "more than %d stages", DOCKERFILE_MAX_STAGES);
  if (expand_word (p, &image, w->v[0]) < 0)
    return -1;
  if (image[0] == '\0')
    return fail (p, BVM_E_INVALID, "FROM `%s` is empty once its ARGs are substituted",
                 show (shown, sizeof shown, w->v[0]));
  if (w->n == 3)
    {
      name = strdup (w->v[2]);
      if (name == NULL)
        return nomem (p);
      for (char *c = name; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
          *c = (char) (*c - 'A' + 'a');
      if (!stage_name_ok (name))
        return fail (p, BVM_E_INVALID,
                     "stage name `%s` is not valid (^[a-z][a-z0-9._-]*$, at most %d bytes)",
                     show (shown, sizeof shown, w->v[2]), DOCKERFILE_NAME_MAX);
      if (stage_by_name (p, name) >= 0)
        return fail (p, BVM_E_INVALID, "stage name `%s` is used twice",
                     show (shown, sizeof shown, name));
    }
  /* the stage after the target is not built: nothing more is collected */
  if (p->target != NULL && d->n_stages > 0 && d->stages[d->n_stages - 1].name != NULL
      && strcmp (d->stages[d->n_stages - 1].name, p->target) == 0)
    p->target_seen = true;
  if (strcasecmp (image, "scratch") == 0 || stage_by_name (p, image) >= 0)
    base = -1;
  else if (collecting (p))
    {
      if ((base = add_base (p, image, "FROM")) < 0)
        return -1;
    }
  else if (dockerfile_ref_parse (NULL, image) != NULL)
    return fail (p, BVM_E_INVALID, "FROM `%s`: the image reference %s",
                 show (shown, sizeof shown, image), dockerfile_ref_parse (NULL, image));
  st = &d->stages[d->n_stages++];
  st->name = steal_pointer (&name);
  st->line = p->line;
  st->base = base;
  return 0;
}

static int
do_copy (struct parser *p, struct words *w, struct words *flags)
{
  static const char *const known[] = {
    "from", "chown", "chmod", "link", "parents", "exclude", NULL
  };
  char shown[JOB__SHOW_SIZE];

  for (size_t i = 0; i < flags->n; i++)
    {
      size_t k = 0;
      while (known[k] && !flag_is (flags->v[i], known[k]))
        k++;
      if (known[k] == NULL)
        return fail (p, BVM_E_INVALID, "COPY has an unknown flag `%s`",
                     show (shown, sizeof shown, flags->v[i]));
      if (k == 0)
        {
          size_t n;
          const char *v = flag_split (flags->v[i], &n);
          cleanup_free char *u = v ? unquote (v, p->escape) : NULL;
          if (v == NULL)
            return fail (p, BVM_E_INVALID, "COPY --from needs a value");
          if (u == NULL)
            return nomem (p);
          if (from_ref (p, u, "COPY --from") < 0)
            return -1;
        }
    }
  if (w->n < 2)
    return fail (p, BVM_E_INVALID, "COPY needs a source and a destination");
  return 0;
}

/* An ADD source URL: http(s) only, no user info, no variables. */
static int
add_url (struct parser *p, const char *url)
{
  char shown[JOB__SHOW_SIZE];
  const char *rest = strstr (url, "://") + 3;
  size_t auth = strcspn (rest, "/?#");

  if (strlen (url) > DOCKERFILE_URL_MAX)
    return fail (p, BVM_E_INVALID, "ADD of a URL longer than %d bytes", DOCKERFILE_URL_MAX);
  if (strchr (url, '$') != NULL)
    return fail (p, BVM_E_INVALID,
                 "ADD %s: variables are not supported in a URL (the runner checks its host "
                 "before the build)",
                 show (shown, sizeof shown, url));
  if (memchr (rest, '@', auth) != NULL)
    return fail (p, BVM_E_INVALID,
                 "ADD %s: a URL with credentials (grant a secret and use RUN "
                 "--mount=type=secret)",
                 show (shown, sizeof shown, url));
  if (auth == 0)
    return fail (p, BVM_E_INVALID, "ADD %s: the URL has no host", show (shown, sizeof shown, url));
  if (!collecting (p))
    return 0;
  return add_item (p, &p->d->urls, &p->d->n_urls, &p->cap_urls, url, false, "ADD URLs");
}

static int
do_add (struct parser *p, struct words *w, struct words *flags)
{
  static const char *const known[] = { "chown", "chmod",   "checksum", "keep-git-dir",
                                       "link",  "exclude", NULL };
  char shown[JOB__SHOW_SIZE];

  for (size_t i = 0; i < flags->n; i++)
    {
      size_t k = 0;
      while (known[k] && !flag_is (flags->v[i], known[k]))
        k++;
      if (known[k] == NULL)
        return fail (p, BVM_E_INVALID, "ADD has an unknown flag `%s`",
                     show (shown, sizeof shown, flags->v[i]));
    }
  if (w->n < 2)
    return fail (p, BVM_E_INVALID, "ADD needs a source and a destination");
  for (size_t i = 0; i + 1 < w->n; i++)
    {
      cleanup_free char *src = unquote (w->v[i], p->escape);
      if (src == NULL)
        return nomem (p);
      if (strncasecmp (src, "http://", 7) == 0 || strncasecmp (src, "https://", 8) == 0)
        if (add_url (p, src) < 0)
          return -1;
    }
  return 0;
}

/* One `--mount=` of RUN: `type=secret,id=NAME` collected, `from=` of a
 * bind or cache mount resolved like COPY --from, ssh refused. */
static int
run_mount (struct parser *p, const char *spec)
{
  cleanup_free char *s = unquote (spec, p->escape);
  char shown[JOB__SHOW_SIZE];
  const char *type = "bind", *id = NULL, *target = NULL, *from = NULL;
  char *save = NULL;

  if (s == NULL)
    return nomem (p);
  for (char *f = strtok_r (s, ",", &save); f != NULL; f = strtok_r (NULL, ",", &save))
    {
      char *eq = strchr (f, '=');
      if (eq == NULL)
        continue; /* ro, rw, readonly, required... */
      *eq = '\0';
      if (strcasecmp (f, "type") == 0)
        type = eq + 1;
      else if (strcasecmp (f, "id") == 0)
        id = eq + 1;
      else if (strcasecmp (f, "target") == 0 || strcasecmp (f, "dst") == 0
               || strcasecmp (f, "destination") == 0)
        target = eq + 1;
      else if (strcasecmp (f, "from") == 0)
        from = eq + 1;
    }
  if (strcasecmp (type, "secret") == 0)
    {
      if (id == NULL && target != NULL)
        {
          /* BuildKit: the id defaults to the target's base name */
          const char *slash = strrchr (target, '/');
          id = slash ? slash + 1 : target;
        }
      if (id == NULL || id[0] == '\0')
        return fail (p, BVM_E_INVALID, "RUN --mount=type=secret needs an id");
      if (strlen (id) > DOCKERFILE_NAME_MAX || has_control (id) || strchr (id, '$') != NULL)
        return fail (p, BVM_E_INVALID, "RUN --mount=type=secret: id `%s` is not valid",
                     show (shown, sizeof shown, id));
      if (!collecting (p))
        return 0;
      return add_item (p, &p->d->secrets, &p->d->n_secrets, &p->cap_secrets, id, true,
                       "secret mounts");
    }
  if (strcasecmp (type, "ssh") == 0)
    return fail (p, BVM_E_INVALID,
                 "RUN --mount=type=ssh: the build has no SSH agent (grant a secret and use "
                 "--mount=type=secret)");
  if (strcasecmp (type, "bind") == 0 || strcasecmp (type, "cache") == 0)
    return from != NULL ? from_ref (p, from, "RUN --mount from=") : 0;
  if (strcasecmp (type, "tmpfs") == 0)
    return 0;
  return fail (p, BVM_E_INVALID, "RUN --mount: unknown type `%s`",
               show (shown, sizeof shown, type));
}

static int
do_run (struct parser *p, struct words *flags)
{
  char shown[JOB__SHOW_SIZE];

  for (size_t i = 0; i < flags->n; i++)
    {
      size_t n;
      const char *v = flag_split (flags->v[i], &n);
      if (flag_is (flags->v[i], "mount") && v != NULL)
        {
          if (run_mount (p, v) < 0)
            return -1;
        }
      else if (flag_is (flags->v[i], "network") && v != NULL)
        {
          if (strcmp (v, "default") != 0 && strcmp (v, "none") != 0 && strcmp (v, "host") != 0)
            return fail (p, BVM_E_INVALID, "RUN --network=%s: must be default, none or host",
                         show (shown, sizeof shown, v));
        }
      else if (flag_is (flags->v[i], "security") && v != NULL)
        {
          if (strcmp (v, "sandbox") != 0 && strcmp (v, "insecure") != 0)
            return fail (p, BVM_E_INVALID, "RUN --security=%s: must be sandbox or insecure",
                         show (shown, sizeof shown, v));
        }
      else
        return fail (p, BVM_E_INVALID, "RUN has an unknown flag `%s`",
                     show (shown, sizeof shown, flags->v[i]));
    }
  return 0;
}

static const char *const instructions[] = { "from",        "run",        "cmd",     "label",
                                            "maintainer",  "expose",     "env",     "add",
                                            "copy",        "entrypoint", "volume",  "user",
                                            "workdir",     "arg",        "onbuild", "stopsignal",
                                            "healthcheck", "shell",      NULL };

static bool
known_instruction (const char *s, size_t n)
{
  for (size_t i = 0; instructions[i]; i++)
    if (strlen (instructions[i]) == n && strncasecmp (instructions[i], s, n) == 0)
      return true;
  return false;
}

static int
instruction (struct parser *p, const char *line)
{
  struct words w = { .n = 0 }, flags = { .n = 0 };
  char kw[16], shown[JOB__SHOW_SIZE];
  size_t n = 0;
  const char *rest;
  bool is_json = false;
  int ret = 0;

  while (line[n] && !is_space (line[n]))
    n++;
  rest = line + n;
  while (is_space (*rest))
    rest++;
  if (n >= sizeof kw || !known_instruction (line, n))
    {
      char word[64];
      snprintf (word, sizeof word, "%.*s", (int) (n < 40 ? n : 40), line);
      return fail (p, BVM_E_INVALID, "unknown instruction `%s`", show (shown, sizeof shown, word));
    }
  for (size_t i = 0; i < n; i++)
    kw[i] = (char) ((line[i] >= 'a' && line[i] <= 'z') ? line[i] - 'a' + 'A' : line[i]);
  kw[n] = '\0';
  if (++p->d->n_instructions > DOCKERFILE_MAX_INSTRUCTIONS)
    return fail (p, BVM_E_LIMIT, "more than %d instructions", DOCKERFILE_MAX_INSTRUCTIONS);
  if (p->d->n_stages == 0 && strcmp (kw, "FROM") != 0 && strcmp (kw, "ARG") != 0)
    return fail (p, BVM_E_INVALID, "%s before the first FROM (only ARG may come before it)", kw);

  if (strcmp (kw, "ONBUILD") == 0)
    {
      size_t m = 0;
      while (rest[m] && !is_space (rest[m]))
        m++;
      if (!known_instruction (rest, m) || (m == 7 && strncasecmp (rest, "onbuild", 7) == 0)
          || (m == 4 && strncasecmp (rest, "from", 4) == 0)
          || (m == 10 && strncasecmp (rest, "maintainer", 10) == 0))
        return fail (p, BVM_E_INVALID,
                     "ONBUILD needs an instruction other than ONBUILD, FROM "
                     "or MAINTAINER");
      return 0; /* it runs in images built from this one, not here */
    }
  if (strcmp (kw, "FROM") != 0 && strcmp (kw, "COPY") != 0 && strcmp (kw, "ADD") != 0
      && strcmp (kw, "RUN") != 0 && !(strcmp (kw, "ARG") == 0 && p->d->n_stages == 0))
    return 0;

  rest = take_flags (p, &flags, rest, &ret);
  if (ret == 0 && (strcmp (kw, "COPY") == 0 || strcmp (kw, "ADD") == 0))
    ret = json_words (p, &w, rest, &is_json);
  if (ret == 0 && !is_json)
    ret = split_words (p, &w, rest);
  if (ret == 0)
    {
      if (strcmp (kw, "FROM") == 0)
        ret = do_from (p, &w, &flags);
      else if (strcmp (kw, "ARG") == 0)
        ret = flags.n > 0 ? fail (p, BVM_E_INVALID, "ARG takes no flags") : global_arg (p, &w);
      else if (strcmp (kw, "COPY") == 0)
        ret = do_copy (p, &w, &flags);
      else if (strcmp (kw, "ADD") == 0)
        ret = do_add (p, &w, &flags);
      else
        ret = do_run (p, &flags);
    }
  words_dispose (&w);
  words_dispose (&flags);
  return ret;
}

/* --- the file ------------------------------------------------------------------------ */

void
dockerfile_free (struct dockerfile *d)
{
  if (d == NULL)
    return;
  for (size_t i = 0; i < d->n_stages; i++)
    free (d->stages[i].name);
  free (d->stages);
  for (size_t i = 0; i < d->n_bases; i++)
    free (d->bases[i].ref);
  free (d->bases);
  for (size_t i = 0; i < d->n_secrets; i++)
    free (d->secrets[i].value);
  free (d->secrets);
  for (size_t i = 0; i < d->n_urls; i++)
    free (d->urls[i].value);
  free (d->urls);
  free (d);
}

int
dockerfile_parse (struct dockerfile **out, const char *path, const char *text, size_t len,
                  const struct spec_kv *args, size_t n_args, const char *target, bvm_error_t *err)
{
  static const char *const platform[][2] = {
    { "TARGETPLATFORM", "linux/amd64" },
    { "TARGETOS", "linux" },
    { "TARGETARCH", "amd64" },
    { "TARGETVARIANT", "" },
    { "BUILDPLATFORM", "linux/amd64" },
    { "BUILDOS", "linux" },
    { "BUILDARCH", "amd64" },
    { "BUILDVARIANT", "" },
  };
  struct parser *p;
  struct buf line = BUF_INIT (DOCKERFILE_LINE_MAX);
  cleanup_free char *tgt = NULL;
  char shown[JOB__SHOW_SIZE];
  int ret = 0;

  *out = NULL;
  if (len > DOCKERFILE_MAX_BYTES)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %d bytes",
                           job__show (shown, sizeof shown, path), DOCKERFILE_MAX_BYTES);
  if (target != NULL)
    {
      if ((tgt = strdup (target)) == NULL)
        return bvm_error (err, ENOMEM, "parsing the Dockerfile");
      for (char *c = tgt; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
          *c = (char) (*c - 'A' + 'a');
    }
  p = calloc (1, sizeof *p);
  if (p == NULL)
    return bvm_error (err, ENOMEM, "parsing the Dockerfile");
  p->path = path;
  p->text = text;
  p->len = len;
  p->escape = '\\';
  p->args = args;
  p->n_args = n_args;
  p->target = tgt;
  p->err = err;
  p->d = calloc (1, sizeof *p->d);
  if (p->d == NULL
      || (p->d->stages = calloc (DOCKERFILE_MAX_STAGES, sizeof *p->d->stages)) == NULL)
    ret = nomem (p);
  for (size_t i = 0; ret == 0 && i < ARRAY_SIZE (platform); i++)
    ret = var_set (p, platform[i][0], platform[i][1], true);
  if (ret == 0)
    ret = read_directives (p);
  while (ret == 0)
    {
      ret = next_instruction (p, &line);
      if (ret <= 0)
        break;
      ret = instruction (p, buf_cstr (&line));
    }
  if (ret == 0 && p->d->n_stages == 0)
    {
      p->line = p->lineno > 0 ? p->lineno : 1;
      ret = fail (p, BVM_E_INVALID, "the Dockerfile has no FROM instruction");
    }
  if (ret == 0)
    {
      p->d->target = p->d->n_stages - 1;
      if (tgt != NULL)
        {
          long t = stage_by_name (p, tgt);
          if (t < 0)
            ret = bvm_error_code (err, BVM_E_INVALID, 0,
                                  "`%s` has no stage named `%s` (`dockerfile.target`)",
                                  job__show (shown, sizeof shown, path), tgt);
          else
            p->d->target = (size_t) t;
        }
    }
  buf_dispose (&line);
  for (size_t i = 0; i < p->n_vars; i++)
    {
      free (p->vars[i].name);
      free (p->vars[i].value);
    }
  if (ret == 0)
    *out = steal_pointer (&p->d);
  dockerfile_free (p->d);
  free (p);
  return ret < 0 ? ret : 0;
}
