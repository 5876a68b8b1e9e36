/* ingest.c - hostile output tars, see ingest.h
 *
 * The shape: libarchive parses the tar (it has seen decades of hostile input)
 * but it is given nothing to read outside the region, no filters, and every
 * entry it produces is checked against our own rules before a sink sees it.
 * Everything we remember about earlier entries lives in a tree of path
 * components (struct vnode) whose size is capped, so a hostile stream cannot
 * make us allocate without bound, and lookups are O(log n) per component
 * (tsearch's red-black tree: no hash to flood).
 */
#include "ingest.h"
#include "ocilayout.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <search.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define MAX_SYMLINK_FOLLOW 40             /* like the kernel's ELOOP limit */
#define RESOLVE_BUDGET (10 * 1000 * 1000) /* path components walked by the final symlink check */
#define EOF_MARKER_BYTES 1024             /* two zero blocks */

static const char *const root_names[] = {
  [INGEST_IMAGE] = "image", [INGEST_ARTIFACT] = "artifacts", [INGEST_OCI] = "oci"
};
#define N_ROOTS ARRAY_SIZE (root_names)

/* One path component of an accepted entry, or a directory its name implies. */
struct vnode
{
  const char *name;
  struct vnode *parent;
  void *children;       /* tsearch tree of struct vnode *, by name */
  char *target;         /* symlinks: the target as stored */
  struct vnode *origin; /* hardlinks: the regular file that carried the data */
  mode_t type;          /* S_IFDIR, S_IFREG or S_IFLNK */
  bool declared;        /* false for a directory only implied by deeper names */
};

struct ingest_ctx
{
  int fd;
  uint64_t offset, len, pos; /* pos: bytes of the region handed to libarchive */
  const struct ingest_limits *lim;
  bool timed_out;
  int read_errno;
  unsigned char *buf;
  struct vnode *roots[N_ROOTS];
  unsigned roots_allowed; /* ingest_limits.roots */
  uint64_t nodes, names_bytes, resolve_steps;
  struct vnode **symlinks;
  size_t nsymlinks, symlinks_alloc;
  char path[INGEST_PATH_MAX + 1];   /* the delivered entry's path */
  char target[INGEST_PATH_MAX + 1]; /* the delivered hardlink's target */
};

/* A name parsed by check_name(). */
struct name
{
  enum ingest_kind kind;
  const char *rel; /* into the name; not NUL-terminated when trailing_slash */
  size_t rel_len;
  size_t depth; /* components of rel */
  bool trailing_slash;
};

/* --- messages ------------------------------------------------------------- */

/* Printable ASCII for an error message: a hostile name must not put escape
 * sequences on the operator's terminal or split a log line. Long names are cut. */
static const char *
esc (char *out, size_t size, const char *s, size_t len)
{
  return str_escape (out, size, s, len, len);
}

/* "entry `<name>`: <why>" */
static int __attribute__ ((format (printf, 5, 6)))
refuse (bvm_error_t *err, int code, const char *name, size_t len, const char *fmt, ...)
{
  char e[256], why[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  return bvm_error_code (err, code, 0, "entry `%s`: %s", esc (e, sizeof e, name, len), why);
}

/* --- names ---------------------------------------------------------------- */

/* Check an archive name (`image/...`, `artifacts/...`) and split it. */
static int
check_name (const char *name, size_t max_path, struct name *out, bvm_error_t *err)
{
  size_t len = strlen (name), depth = 0;
  const char *p, *end, *why;
  bool first = true;

  memset (out, 0, sizeof *out);
  if (len == 0)
    return refuse (err, BVM_E_INVALID, name, len, "empty name");
  if (len > max_path)
    return refuse (err, BVM_E_LIMIT, name, len, "name is longer than %zu bytes", max_path);
  if ((why = text_problem (name, len)) != NULL)
    return refuse (err, BVM_E_INVALID, name, len, "%s in name", why);
  if (name[0] == '/')
    return refuse (err, BVM_E_INVALID, name, len, "absolute paths are not allowed");
  end = name + len;
  if (end[-1] == '/')
    {
      out->trailing_slash = true;
      end--;
    }
  for (p = name; p <= end;)
    {
      const char *slash = memchr (p, '/', (size_t) (end - p));
      size_t n = (size_t) ((slash ? slash : end) - p);

      if (n == 0)
        return refuse (err, BVM_E_INVALID, name, len, "empty path component (`//`)");
      if (n == 1 && p[0] == '.')
        return refuse (err, BVM_E_INVALID, name, len, "`.` components are not allowed");
      if (n == 2 && p[0] == '.' && p[1] == '.')
        return refuse (err, BVM_E_INVALID, name, len, "`..` components are not allowed");
      if (n > INGEST_NAME_MAX)
        return refuse (err, BVM_E_INVALID, name, len, "a component is longer than %d bytes",
                       INGEST_NAME_MAX);
      if (first)
        {
          if (n == 5 && memcmp (p, "image", 5) == 0)
            out->kind = INGEST_IMAGE;
          else if (n == 9 && memcmp (p, "artifacts", 9) == 0)
            out->kind = INGEST_ARTIFACT;
          else if (n == 3 && memcmp (p, "oci", 3) == 0)
            out->kind = INGEST_OCI;
          else
            return refuse (err, BVM_E_INVALID, name, len,
                           "names must start with `image/`, `artifacts/` or `oci/`");
          out->rel = slash ? slash + 1 : end;
          first = false;
        }
      else if (++depth > INGEST_MAX_DEPTH)
        return refuse (err, BVM_E_INVALID, name, len, "more than %d path components",
                       INGEST_MAX_DEPTH);
      /* In an OCI layer `.wh.x` deletes x from the layers below, and
       * `.wh..wh..opq` empties a directory: only the layer writer may say that. */
      else if (out->kind == INGEST_IMAGE && n >= 4 && memcmp (p, ".wh.", 4) == 0)
        return refuse (err, BVM_E_INVALID, name, len,
                       "`.wh.` names are OCI whiteouts and are reserved");
      if (slash == NULL)
        break;
      p = slash + 1;
    }
  out->rel_len = (size_t) (end - out->rel);
  out->depth = depth;
  return 0;
}

int
ingest_check_path (const char *path, bvm_error_t *err)
{
  struct name n;
  if (path == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "entry without a name");
  return check_name (path, INGEST_PATH_MAX, &n, err);
}

/* The lexical symlink rule: relative, and never above the root when the
 * components are applied from the link's directory (`depth` components below
 * the root). Returns why not, or NULL. */
static const char *
symlink_problem (const char *target, size_t depth, size_t max_path, int *code)
{
  size_t len = strlen (target);
  const char *p = target, *why;

  *code = BVM_E_INVALID;
  if (len == 0)
    return "empty symlink target";
  if (len > max_path)
    {
      *code = BVM_E_LIMIT;
      return "symlink target is too long";
    }
  if ((why = text_problem (target, len)) != NULL)
    return why[0] == 'c' ? "control character in symlink target"
                         : "invalid UTF-8 in symlink target";
  if (target[0] == '/')
    return "absolute symlink targets are not allowed";
  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);

      if (n == 2 && p[0] == '.' && p[1] == '.')
        {
          if (depth == 0)
            return "symlink target leaves its root";
          depth--;
        }
      else if (n > INGEST_NAME_MAX)
        return "a symlink target component is too long";
      else if (n > 0 && !(n == 1 && p[0] == '.'))
        depth++;
      if (slash == NULL)
        return NULL;
      p = slash + 1;
    }
}

/* --- the tree of accepted paths ------------------------------------------- */

static int
node_cmp (const void *a, const void *b)
{
  return strcmp (((const struct vnode *) a)->name, ((const struct vnode *) b)->name);
}

static void
node_free (void *p)
{
  struct vnode *n = p;
  if (n == NULL)
    return;
  /* recursion depth is bounded by INGEST_MAX_DEPTH */
  tdestroy (n->children, node_free);
  free (n->target);
  free (n);
}

static struct vnode *
node_child (struct vnode *dir, const char *name)
{
  struct vnode key = { .name = name };
  void *r = tfind (&key, &dir->children, node_cmp);
  return r ? *(struct vnode **) r : NULL;
}

/* Count `bytes` against the memory cap. */
static int
charge_names (struct ingest_ctx *c, uint64_t bytes, const char *name, bvm_error_t *err)
{
  if (bytes > c->lim->max_names_bytes - c->names_bytes || c->names_bytes > c->lim->max_names_bytes)
    return refuse (err, BVM_E_LIMIT, name, strlen (name),
                   "names and link targets take more than %" PRIu64 " bytes",
                   c->lim->max_names_bytes);
  c->names_bytes += bytes;
  return 0;
}

static int
node_new (struct vnode **out, struct ingest_ctx *c, struct vnode *dir, const char *comp,
          mode_t type, bool declared, const char *name, bvm_error_t *err)
{
  size_t n = strlen (comp);
  struct vnode *node;

  if (c->nodes >= c->lim->max_entries)
    return refuse (err, BVM_E_LIMIT, name, strlen (name),
                   "more than %" PRIu64 " paths (directories implied by names count)",
                   c->lim->max_entries);
  if (charge_names (c, n + 1 + sizeof *node, name, err) < 0)
    return -1;
  node = calloc (1, sizeof *node + n + 1);
  if (node == NULL)
    return bvm_error (err, ENOMEM, "ingest path tree");
  memcpy ((char *) (node + 1), comp, n + 1);
  node->name = (const char *) (node + 1);
  node->parent = dir;
  node->type = type;
  node->declared = declared;
  if (tsearch (node, &dir->children, node_cmp) == NULL)
    {
      free (node);
      return bvm_error (err, ENOMEM, "ingest path tree");
    }
  c->nodes++;
  *out = node;
  return 0;
}

/* Find the node of an existing regular file, for a hardlink target. */
static int
tree_find_file (struct vnode **out, struct vnode *root, const struct name *t, const char *name,
                const char *target, bvm_error_t *err)
{
  struct vnode *node = root;
  const char *p = t->rel, *end = t->rel + t->rel_len;
  char comp[INGEST_NAME_MAX + 1];
  char e[256];

  if (t->rel_len == 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "hardlink to the root `%s/`",
                   esc (e, sizeof e, target, strlen (target)));
  for (;;)
    {
      const char *slash = memchr (p, '/', (size_t) (end - p));
      size_t n = (size_t) ((slash ? slash : end) - p);

      memcpy (comp, p, n);
      comp[n] = '\0';
      node = node_child (node, comp);
      /* A directory on the way may be one only implied by earlier names
       * (`image/bin/app` implies `image/bin`): requiring it to be declared
       * refused `image/bin/app2` linked to `image/bin/app` in a tar without a
       * `image/bin/` entry (found by tests/unit/test_allocfail.c). The target
       * itself must be a declared regular file. */
      if (node == NULL || (slash != NULL && node->type != S_IFDIR)
          || (slash == NULL && (node->type != S_IFREG || !node->declared)))
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "hardlink target `%s` is not an earlier regular file",
                       esc (e, sizeof e, target, strlen (target)));
      if (slash == NULL)
        break;
      p = slash + 1;
    }
  *out = node->origin ? node->origin : node;
  return 0;
}

/* Add an accepted entry's path. Implied directories are created; a path seen
 * before, or a path below a symlink or a file, is refused. */
static int
tree_insert (struct vnode **out, struct ingest_ctx *c, struct vnode *root, const struct name *nm,
             const char *name, mode_t type, bvm_error_t *err)
{
  struct vnode *dir = root;
  const char *p = nm->rel, *end = nm->rel + nm->rel_len;
  char comp[INGEST_NAME_MAX + 1];
  char e[256];

  for (;;)
    {
      const char *slash = memchr (p, '/', (size_t) (end - p));
      size_t n = (size_t) ((slash ? slash : end) - p);
      struct vnode *child;

      memcpy (comp, p, n);
      comp[n] = '\0';
      child = node_child (dir, comp);
      if (slash == NULL)
        {
          if (child == NULL)
            return node_new (out, c, dir, comp, type, true, name, err);
          /* A second entry for a path could replace a checked file with a
           * symlink, or a directory with a file: refuse any repeat. */
          if (child->declared)
            return refuse (err, BVM_E_INVALID, name, strlen (name),
                           "duplicate entry (each path may appear once)");
          if (type != S_IFDIR)
            return refuse (err, BVM_E_INVALID, name, strlen (name),
                           "earlier entries use this path as a directory");
          child->declared = true;
          *out = child;
          return 0;
        }
      if (child == NULL)
        {
          if (node_new (&child, c, dir, comp, S_IFDIR, false, name, err) < 0)
            return -1;
        }
      else if (child->type != S_IFDIR)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "`%s` is a %s, not a directory",
                       esc (e, sizeof e, name, (size_t) (p + n - name)),
                       child->type == S_IFLNK ? "symlink" : "file");
      dir = child;
      p = slash + 1;
    }
}

/* The path of a node relative to its root, into buf. */
static void
node_path (char *buf, size_t size, const struct vnode *node)
{
  const struct vnode *chain[INGEST_MAX_DEPTH + 1];
  size_t n = 0, o = 0;

  for (; node != NULL && node->parent != NULL && n < ARRAY_SIZE (chain); node = node->parent)
    chain[n++] = node;
  buf[0] = '\0';
  while (n-- > 0)
    {
      size_t l = strlen (chain[n]->name);
      if (o + l + 2 > size)
        break;
      if (o > 0)
        buf[o++] = '/';
      memcpy (buf + o, chain[n]->name, l + 1);
      o += l;
    }
}

/* --- the final symlink check ---------------------------------------------- */

enum
{
  RESOLVE_OK = 0,
  RESOLVE_DEAD_END = 1, /* runs into a file or a missing path: cannot go further */
  RESOLVE_ESCAPE = -1,
  RESOLVE_LOOP = -2,
  RESOLVE_BUDGET_SPENT = -3,
};

struct rpos
{
  struct vnode *node; /* the deepest existing directory reached */
  size_t virt;        /* components below node that do not exist in the archive */
};

/* Walk `path` from pos as the kernel would, following the archive's own
 * symlinks in intermediate components (and in the last one when follow_last).
 * A lexical check of each link alone misses `x -> d/up/..` with `d/up -> ..`. */
static int
resolve (struct ingest_ctx *c, struct rpos *pos, const char *path, int follows, bool follow_last)
{
  const char *p = path;
  char comp[INGEST_NAME_MAX + 1];

  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      bool last = slash == NULL || slash[strspn (slash, "/")] == '\0';

      if (++c->resolve_steps > RESOLVE_BUDGET)
        return RESOLVE_BUDGET_SPENT;
      if (n == 0 || (n == 1 && p[0] == '.'))
        ;
      else if (n == 2 && p[0] == '.' && p[1] == '.')
        {
          if (pos->virt > 0)
            pos->virt--;
          else if (pos->node->parent == NULL)
            return RESOLVE_ESCAPE;
          else
            pos->node = pos->node->parent;
        }
      else if (pos->virt > 0)
        pos->virt++;
      else
        {
          struct vnode *child;
          memcpy (comp, p, n);
          comp[n] = '\0';
          child = node_child (pos->node, comp);
          if (child == NULL)
            pos->virt = 1;
          else if (child->type == S_IFDIR)
            pos->node = child;
          else if (child->type == S_IFLNK)
            {
              /* The last component of the link being checked is checked as a
               * link of its own. */
              if (!last || follow_last)
                {
                  int r;
                  if (follows >= MAX_SYMLINK_FOLLOW)
                    return RESOLVE_LOOP;
                  r = resolve (c, pos, child->target, follows + 1, true);
                  if (r != RESOLVE_OK)
                    return r;
                }
            }
          else if (!last || follow_last)
            return RESOLVE_DEAD_END; /* a file used as a directory: ENOTDIR */
        }
      if (slash == NULL)
        return RESOLVE_OK;
      p = slash + 1;
    }
}

static int
check_symlinks (struct ingest_ctx *c, bvm_error_t *err)
{
  for (size_t i = 0; i < c->nsymlinks; i++)
    {
      struct vnode *l = c->symlinks[i];
      struct rpos pos = { l->parent, 0 };
      int r = resolve (c, &pos, l->target, 0, false);

      const struct vnode *root = l;
      if (r >= 0)
        continue;
      while (root->parent != NULL)
        root = root->parent;
      /* symlinks exist under `image/` only */
      memcpy (c->path, root == c->roots[INGEST_IMAGE] ? "image/" : "artifacts/",
              root == c->roots[INGEST_IMAGE] ? 7 : 11);
      node_path (c->path + strlen (c->path), sizeof c->path - strlen (c->path), l);
      switch (r)
        {
        case RESOLVE_ESCAPE:
          return refuse (err, BVM_E_INVALID, c->path, strlen (c->path),
                         "symlink leaves its root through other symlinks");
        case RESOLVE_LOOP:
          return refuse (err, BVM_E_INVALID, c->path, strlen (c->path), "symlink loop");
        default:
          return refuse (err, BVM_E_LIMIT, c->path, strlen (c->path),
                         "too much work resolving symlinks");
        }
    }
  return 0;
}

/* --- reading the region --------------------------------------------------- */

static bool
deadline_passed (struct ingest_ctx *c)
{
  if (c->lim->deadline_ms > 0 && now_ms () > c->lim->deadline_ms)
    c->timed_out = true;
  return c->timed_out;
}

/* libarchive reads only through here, and never past offset+len. */
static la_ssize_t
read_cb (struct archive *a, void *opaque, const void **out)
{
  struct ingest_ctx *c = opaque;
  size_t want;
  ssize_t n;

  if (deadline_passed (c))
    {
      archive_set_error (a, ETIMEDOUT, "deadline passed");
      return -1;
    }
  if (c->pos >= c->len)
    return 0;
  want = c->len - c->pos < READ_CHUNK ? (size_t) (c->len - c->pos) : READ_CHUNK;
  do
    n = pread (c->fd, c->buf, want, (off_t) (c->offset + c->pos));
  while (n < 0 && errno == EINTR);
  if (n < 0)
    {
      c->read_errno = errno;
      archive_set_error (a, errno, "read");
      return -1;
    }
  c->pos += (uint64_t) n;
  *out = c->buf;
  return n;
}

static la_int64_t
skip_cb (struct archive *a, void *opaque, la_int64_t request)
{
  struct ingest_ctx *c = opaque;
  uint64_t left = c->len - c->pos, n;

  (void) a;
  if (request <= 0)
    return 0;
  n = (uint64_t) request < left ? (uint64_t) request : left;
  c->pos += n;
  return (la_int64_t) n;
}

/* An error from libarchive, or the deadline/read failure behind it. */
static int
archive_fail (struct ingest_ctx *c, struct archive *a, int64_t at, bvm_error_t *err)
{
  const char *msg = archive_error_string (a);
  if (c->timed_out)
    return bvm_error_code (err, BVM_E_TIMEOUT, 0, "reading the output tar: deadline passed");
  if (c->read_errno != 0)
    return bvm_error (err, c->read_errno, "reading the output tar");
  return bvm_error_code (err, BVM_E_INVALID, 0, "output tar at offset %" PRId64 ": %s", at,
                         msg ? msg : "unreadable");
}

/* --- the raw header audit ------------------------------------------------- */

/* A tar number field: octal (leading spaces, ends at a space or NUL) or GNU
 * base-256. Lenient like libarchive's, so both walk the same way. */
static int
tar_number (const unsigned char *f, size_t n, uint64_t *out)
{
  uint64_t v = 0;
  size_t i = 0;

  if (f[0] & 0x80)
    {
      if (f[0] != 0x80)
        return -1; /* negative or beyond 64 bits */
      for (i = 1; i < n; i++)
        {
          if (v >> 56)
            return -1;
          v = (v << 8) | f[i];
        }
      *out = v;
      return 0;
    }
  while (i < n && f[i] == ' ')
    i++;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++)
    {
      if (v >> 60)
        return -1;
      v = (v << 3) | (uint64_t) (f[i] - '0');
    }
  *out = v;
  return 0;
}

/* Every record of a pax extended header is well formed and has no NUL: a NUL
 * in `path=` would make libarchive keep only the part before it. */
static const char *
pax_problem (const unsigned char *body, size_t size)
{
  size_t off = 0;

  while (off < size)
    {
      size_t reclen = 0, i = off;
      const unsigned char *eq;

      while (i < size && body[i] >= '0' && body[i] <= '9' && i - off < 8)
        reclen = reclen * 10 + (size_t) (body[i++] - '0');
      if (i == off || i >= size || body[i] != ' ' || reclen == 0 || reclen > size - off
          || body[off + reclen - 1] != '\n')
        return "malformed pax extended header";
      i++;
      eq = memchr (body + i, '=', off + reclen - 1 - i);
      if (eq == NULL || eq == body + i)
        return "malformed pax extended header";
      if (memchr (body + i, '\0', off + reclen - 1 - i) != NULL)
        return "NUL byte in a pax extended header record";
      off += reclen;
    }
  return NULL;
}

/* Walk the raw header records of one entry, [start, end) of the stream as
 * libarchive consumed them, and refuse what its API cannot show us: types it
 * quietly maps to regular files ('7', 'M', 'N', 'S', unknown letters), global
 * and vendor headers, repeated extended headers, and NUL bytes that cut a
 * name short. */
static int
audit_headers (struct ingest_ctx *c, uint64_t start, uint64_t end, const char *name,
               bvm_error_t *err)
{
  cleanup_free unsigned char *raw = NULL;
  size_t len = (size_t) (end - start), off = 0;
  int seen_x = 0, seen_l = 0, seen_k = 0;
  ssize_t n;

  raw = malloc (len ? len : 1);
  if (raw == NULL)
    return bvm_error (err, ENOMEM, "ingest headers");
  do
    n = pread (c->fd, raw, len, (off_t) (c->offset + start));
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return bvm_error (err, errno, "reading the output tar");
  if ((size_t) n != len)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "short read of its headers");
  for (;;)
    {
      const unsigned char *h = raw + off;
      unsigned char t;
      uint64_t size;
      const char *why = NULL;

      if (len - off < 512)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "headers do not parse");
      t = h[156];
      if (t != 'x' && t != 'L' && t != 'K')
        {
          switch (t)
            {
            case '0':
            case '\0':
            case '1':
            case '2':
            case '5':
            case '3':
            case '4':
            case '6': /* refused later, with a clearer message */ return 0;
            default:
              if (t > 0x20 && t < 0x7f && t != '`' && t != '\\')
                return refuse (err, BVM_E_INVALID, name, strlen (name),
                               "tar entry type `%c` is not supported", t);
              return refuse (err, BVM_E_INVALID, name, strlen (name),
                             "tar entry type 0x%02x is not supported", t);
            }
        }
      if (tar_number (h + 124, 12, &size) < 0 || size > len - off - 512)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "headers do not parse");
      if ((t == 'x' && seen_x++) || (t == 'L' && seen_l++) || (t == 'K' && seen_k++))
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "repeated extended header (type `%c`)", t);
      if (t == 'x')
        why = pax_problem (h + 512, (size_t) size);
      else
        {
          /* GNU long names end with NULs; anything after a NUL is hidden */
          const unsigned char *nul = memchr (h + 512, '\0', (size_t) size);
          if (nul != NULL)
            for (const unsigned char *q = nul; q < h + 512 + size; q++)
              if (*q != '\0')
                why = "NUL byte inside a GNU long name";
        }
      if (why != NULL)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "%s", why);
      off += 512 + (size_t) ((size + 511) & ~(uint64_t) 511);
    }
}

/* --- entries -------------------------------------------------------------- */

static const char *
type_name (mode_t t)
{
  switch (t)
    {
    case AE_IFCHR: return "character device";
    case AE_IFBLK: return "block device";
    case AE_IFIFO: return "FIFO";
    case AE_IFSOCK: return "socket";
    case AE_IFDIR: return "directory";
    case AE_IFLNK: return "symlink";
    default: return "entry of unknown type";
    }
}

static int
stream_data (struct ingest_ctx *c, struct archive *a, const struct ingest_sink *sink,
             const char *name, uint64_t size, bvm_error_t *err)
{
  uint64_t got = 0;

  for (;;)
    {
      const void *buf;
      size_t n;
      la_int64_t off;
      int r = archive_read_data_block (a, &buf, &n, &off);

      if (r == ARCHIVE_EOF)
        break;
      if (c->timed_out || c->read_errno)
        return archive_fail (c, a, 0, err);
      if (r != ARCHIVE_OK)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "reading data: %s",
                       archive_error_string (a) ? archive_error_string (a) : "failed");
      if (off < 0 || (uint64_t) off != got)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "data with holes (sparse)");
      if (n > size - got)
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "more data than its header declares");
      if (n > 0 && sink->data (sink->opaque, buf, n, err) < 0)
        return bvm_error_wrap (err, "entry `%s`", name);
      got += n;
      if (deadline_passed (c))
        return archive_fail (c, a, 0, err);
    }
  if (got != size)
    return refuse (err, BVM_E_INVALID, name, strlen (name),
                   "data is truncated (%" PRIu64 " of %" PRIu64 " bytes)", got, size);
  return 0;
}

static int
take_entry (struct ingest_ctx *c, struct archive *a, struct archive_entry *ae,
            const struct ingest_sink *sink, struct ingest_stats *st, bvm_error_t *err)
{
  const char *name = archive_entry_pathname (ae);
  const char *hardlink = archive_entry_hardlink (ae), *symlink = archive_entry_symlink (ae);
  mode_t ftype = archive_entry_filetype (ae), mode = archive_entry_mode (ae), type;
  int64_t ssize = archive_entry_size_is_set (ae) ? archive_entry_size (ae) : 0;
  uint64_t size;
  struct name nm;
  struct vnode *node = NULL, *origin = NULL;
  struct ingest_entry e;
  size_t fsize = 0;
  const char *why;
  int code;

  if (name == NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "output tar: entry at offset %" PRId64 " has no usable name",
                           archive_read_header_position (a));
  if (check_name (name, c->lim->max_path, &nm, err) < 0)
    return -1;
  if (!(c->roots_allowed & INGEST_ROOT (nm.kind)))
    return refuse (err, BVM_E_INVALID, name, strlen (name), "%s",
                   nm.kind == INGEST_IMAGE
                       ? "a Dockerfile job's image is its `oci/` output (the Dockerfile "
                         "describes the image), not `image/`"
                   : nm.kind == INGEST_OCI ? "`oci/` is the output of a Dockerfile job only"
                                           : "this job has no such output");

  if (hardlink != NULL && symlink != NULL)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "both a hardlink and a symlink");
  if (hardlink != NULL)
    type = S_IFREG;
  else if (ftype == AE_IFREG || ftype == AE_IFDIR || ftype == AE_IFLNK)
    type = ftype;
  else
    return refuse (err, BVM_E_INVALID, name, strlen (name), "%ss are not allowed",
                   type_name (ftype));
  /* Refused rather than stripped: a build that asks for them is doing
   * something we did not plan for, and the operator should see it. */
  if (mode & S_ISUID)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "setuid bit (mode %04o)",
                   (unsigned) (mode & 07777));
  if (mode & S_ISGID)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "setgid bit (mode %04o)",
                   (unsigned) (mode & 07777));
  if (mode & S_ISVTX)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "sticky bit (mode %04o)",
                   (unsigned) (mode & 07777));
  /* Not delivered, but refused so nobody later adds them by accident:
   * security.capability is setuid by another name. */
  if (archive_entry_xattr_count (ae) > 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "extended attributes are not allowed");
  if (archive_entry_acl_types (ae) != 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "ACLs are not allowed");
  {
    unsigned long set = 0, clear = 0;
    archive_entry_fflags (ae, &set, &clear);
    if (set != 0 || clear != 0)
      return refuse (err, BVM_E_INVALID, name, strlen (name), "file flags are not allowed");
  }
  if (archive_entry_mac_metadata (ae, &fsize) != NULL)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "Mac metadata is not allowed");
  if (archive_entry_is_encrypted (ae))
    return refuse (err, BVM_E_INVALID, name, strlen (name), "encrypted entries are not allowed");
  /* A GNU sparse entry can claim 2^60 bytes of holes. */
  if (archive_entry_sparse_count (ae) > 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "GNU sparse files are not allowed");

  if (ssize < 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "negative size");
  size = (uint64_t) ssize;
  if ((type != S_IFREG || hardlink != NULL) && size != 0)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "a %s that carries data",
                   hardlink ? "hardlink" : type_name (type));
  if (size > c->lim->max_entry_bytes)
    return refuse (err, BVM_E_LIMIT, name, strlen (name),
                   "%" PRIu64 " bytes, over the limit of %" PRIu64, size, c->lim->max_entry_bytes);
  if (size > c->lim->max_total_bytes - st->bytes)
    return refuse (err, BVM_E_LIMIT, name, strlen (name),
                   "outputs take more than %" PRIu64 " bytes", c->lim->max_total_bytes);
  if (nm.trailing_slash && type != S_IFDIR)
    return refuse (err, BVM_E_INVALID, name, strlen (name), "a trailing `/` on a %s",
                   hardlink          ? "hardlink"
                   : type == S_IFREG ? "file"
                                     : type_name (type));

  if (nm.rel_len == 0)
    {
      /* `image/` itself: a directory entry is what tar writes first; it has
       * nothing to deliver (the roots' modes are the layer's business). */
      if (type != S_IFDIR || hardlink != NULL)
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "the root `%s/` must be a directory", root_names[nm.kind]);
      return 0;
    }
  if (nm.kind == INGEST_OCI)
    {
      /* an OCI image layout and nothing else: its names are ocilayout.c's */
      char rel[INGEST_PATH_MAX + 1];
      enum ocilayout_name k;

      memcpy (rel, nm.rel, nm.rel_len);
      rel[nm.rel_len] = '\0';
      k = ocilayout_name_kind (rel);
      if (k == OCILAYOUT_NAME_BAD)
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "not a name of an OCI image layout (oci-layout, index.json, "
                       "blobs/sha256/<64 lowercase hex>)");
      if (hardlink != NULL || type == S_IFLNK)
        return refuse (err, BVM_E_INVALID, name, strlen (name),
                       "links are not allowed under `oci/`");
      if ((k == OCILAYOUT_NAME_DIR) != (type == S_IFDIR))
        return refuse (err, BVM_E_INVALID, name, strlen (name), "must be a %s",
                       k == OCILAYOUT_NAME_DIR ? "directory" : "regular file");
    }

  if (type == S_IFLNK)
    {
      if (nm.kind == INGEST_ARTIFACT)
        return refuse (
            err, BVM_E_INVALID, name, strlen (name),
            "symlinks are not allowed under `artifacts/` (the store holds plain objects)");
      if (symlink == NULL)
        return refuse (err, BVM_E_INVALID, name, strlen (name), "symlink without a target");
      if ((why = symlink_problem (symlink, nm.depth - 1, c->lim->max_path, &code)) != NULL)
        {
          char e2[256];
          return refuse (err, code, name, strlen (name), "%s (`%s`)", why,
                         esc (e2, sizeof e2, symlink, strlen (symlink)));
        }
      if (charge_names (c, strlen (symlink) + 1, name, err) < 0)
        return -1;
    }
  if (hardlink != NULL)
    {
      struct name tn;
      if (check_name (hardlink, c->lim->max_path, &tn, err) < 0)
        return bvm_error_wrap (err, "hardlink `%s`", name);
      if (tn.kind != nm.kind || tn.trailing_slash)
        {
          char e2[256];
          return refuse (err, BVM_E_INVALID, name, strlen (name),
                         "hardlink target `%s` is not an earlier regular file",
                         esc (e2, sizeof e2, hardlink, strlen (hardlink)));
        }
      if (tree_find_file (&origin, c->roots[nm.kind], &tn, name, hardlink, err) < 0)
        return -1;
    }

  if (tree_insert (&node, c, c->roots[nm.kind], &nm, name, type, err) < 0)
    return -1;
  if (type == S_IFLNK)
    {
      if (c->nsymlinks == c->symlinks_alloc)
        {
          size_t na = c->symlinks_alloc ? c->symlinks_alloc * 2 : 64;
          struct vnode **ns = reallocarray (c->symlinks, na, sizeof *ns);
          if (ns == NULL)
            return bvm_error (err, ENOMEM, "ingest symlink list");
          c->symlinks = ns;
          c->symlinks_alloc = na;
        }
      node->target = strdup (symlink);
      if (node->target == NULL)
        return bvm_error (err, ENOMEM, "ingest symlink target");
      c->symlinks[c->nsymlinks++] = node;
    }
  node->origin = origin;

  memcpy (c->path, nm.rel, nm.rel_len);
  c->path[nm.rel_len] = '\0';
  memset (&e, 0, sizeof e);
  e.kind = nm.kind;
  e.path = c->path;
  e.type = type;
  e.perm = mode & 0777;
  e.size = hardlink ? 0 : size;
  e.mtime = archive_entry_mtime (ae);
  if (origin != NULL)
    {
      node_path (c->target, sizeof c->target, origin);
      e.link_target = c->target;
    }
  else if (type == S_IFLNK)
    e.link_target = node->target;

  if (sink->begin (sink->opaque, &e, err) < 0)
    return bvm_error_wrap (err, "entry `%s`", name);
  if (type == S_IFREG && hardlink == NULL)
    {
      if (stream_data (c, a, sink, name, size, err) < 0)
        return -1;
      st->files++;
      st->bytes += size;
    }
  else if (hardlink != NULL)
    st->hardlinks++;
  else if (type == S_IFDIR)
    st->dirs++;
  else
    st->symlinks++;
  if (sink->end (sink->opaque, err) < 0)
    return bvm_error_wrap (err, "entry `%s`", name);
  return 0;
}

/* The stream must end with two zero blocks inside the region: without them a
 * stream cut at an entry boundary would pass for a shorter, complete one. */
static int
check_end_marker (struct ingest_ctx *c, uint64_t at, struct ingest_stats *st, bvm_error_t *err)
{
  unsigned char z[EOF_MARKER_BYTES];
  ssize_t n;

  if (at > c->len || c->len - at < EOF_MARKER_BYTES)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "output tar has no end-of-archive marker (truncated stream?)");
  do
    n = pread (c->fd, z, sizeof z, (off_t) (c->offset + at));
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return bvm_error (err, errno, "reading the output tar");
  if ((size_t) n != sizeof z)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "output tar has no end-of-archive marker (truncated stream?)");
  for (size_t i = 0; i < sizeof z; i++)
    if (z[i] != 0)
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "output tar at offset %" PRIu64 ": damaged end-of-archive marker",
                             at);
  st->tar_bytes = at + EOF_MARKER_BYTES;
  return 0;
}

static int
ingest_read (struct ingest_ctx *c, const struct ingest_sink *sink, struct ingest_stats *st,
             bvm_error_t *err)
{
  struct archive *a = archive_read_new ();
  /* Our own entry for archive_read_next_header2: libarchive 3.6.2's
   * archive_read_new does not check the allocation of its internal entry,
   * and archive_read_next_header would then dereference NULL (fixed upstream
   * in libarchive#3233). Found by tests/unit/test_allocfail.c. */
  struct archive_entry *ae = archive_entry_new ();
  int ret = -1, r;

  if (a == NULL || ae == NULL)
    {
      archive_entry_free (ae);
      if (a != NULL)
        archive_read_free (a);
      return bvm_error (err, ENOMEM, "archive_read_new");
    }
  /* tar only, and no decompression filter: a compressed stream fails to bid
   * and is refused, and no decompressor ever sees guest bytes. */
  if (archive_read_support_format_tar (a) != ARCHIVE_OK
      || archive_read_set_callback_data (a, c) != ARCHIVE_OK
      || archive_read_set_read_callback (a, read_cb) != ARCHIVE_OK
      || archive_read_set_skip_callback (a, skip_cb) != ARCHIVE_OK)
    {
      bvm_error (err, 0, "setting up libarchive: %s", archive_error_string (a));
      goto cleanup;
    }
  if (archive_read_open1 (a) != ARCHIVE_OK)
    {
      if (c->timed_out || c->read_errno)
        archive_fail (c, a, 0, err);
      else
        bvm_error_code (err, BVM_E_INVALID, 0, "output is not an uncompressed tar stream: %s",
                        archive_error_string (a) ? archive_error_string (a) : "unrecognized");
      goto cleanup;
    }
  for (;;)
    {
      /* where this entry's headers start: everything before is consumed */
      int64_t hdr_start = archive_filter_bytes (a, 0), hdr_end;

      if (deadline_passed (c))
        {
          archive_fail (c, a, hdr_start, err);
          goto cleanup;
        }
      r = archive_read_next_header2 (a, ae);
      if (r == ARCHIVE_EOF && !c->timed_out && !c->read_errno)
        break;
      if (r != ARCHIVE_OK || c->timed_out || c->read_errno)
        {
          /* ARCHIVE_WARN too: libarchive warns about what it could not
           * represent (bad pax records, names it could not convert) */
          archive_fail (c, a, hdr_start, err);
          goto cleanup;
        }
      if (archive_filter_count (a) != 1 || archive_filter_code (a, 0) != ARCHIVE_FILTER_NONE)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "output tar is compressed");
          goto cleanup;
        }
      if (++st->entries > c->lim->max_entries)
        {
          bvm_error_code (err, BVM_E_LIMIT, 0, "output tar has more than %" PRIu64 " entries",
                          c->lim->max_entries);
          goto cleanup;
        }
      hdr_end = archive_filter_bytes (a, 0);
      if (hdr_end < hdr_start || (uint64_t) (hdr_end - hdr_start) > c->lim->max_header_bytes)
        {
          bvm_error_code (err, BVM_E_LIMIT, 0,
                          "output tar at offset %" PRId64 ": entry headers take %" PRId64
                          " bytes, over the limit of %zu",
                          hdr_start, hdr_end - hdr_start, c->lim->max_header_bytes);
          goto cleanup;
        }
      if (audit_headers (c, (uint64_t) hdr_start, (uint64_t) hdr_end,
                         archive_entry_pathname (ae) ? archive_entry_pathname (ae) : "?", err)
          < 0)
        goto cleanup;
      if (take_entry (c, a, ae, sink, st, err) < 0)
        goto cleanup;
      /* consume the padding, so the next header position is exact */
      if (archive_read_data_skip (a) != ARCHIVE_OK)
        {
          archive_fail (c, a, hdr_start, err);
          goto cleanup;
        }
    }
  if (check_end_marker (c, (uint64_t) archive_read_header_position (a), st, err) < 0)
    goto cleanup;
  if (check_symlinks (c, err) < 0)
    goto cleanup;
  ret = 0;
cleanup:
  archive_read_free (a);
  archive_entry_free (ae);
  return ret;
}

int
ingest_run (int fd, uint64_t offset, uint64_t len, const struct ingest_limits *lim,
            const struct ingest_sink *sink, struct ingest_stats *stats, bvm_error_t *err)
{
  struct ingest_limits defaults = INGEST_LIMITS_INIT;
  struct ingest_stats local;
  struct ingest_ctx *c;
  struct stat stbuf;
  locale_t utf8, old = (locale_t) 0;
  int ret;

  if (lim == NULL)
    lim = &defaults;
  if (stats == NULL)
    stats = &local;
  memset (stats, 0, sizeof *stats);
  if (sink == NULL || sink->begin == NULL || sink->data == NULL || sink->end == NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ingest: incomplete sink");
  if (lim->max_path == 0 || lim->max_path > INGEST_PATH_MAX)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "ingest: max_path must be 1..%d",
                           INGEST_PATH_MAX);
  if (offset > INT64_MAX || len > INT64_MAX - offset)
    return bvm_error_code (err, BVM_E_INVALID, 0, "output tar region is out of range");
  if (fstat (fd, &stbuf) < 0)
    return bvm_error (err, errno, "stat the output disk");
  if (S_ISREG (stbuf.st_mode) && (uint64_t) stbuf.st_size < offset + len)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "output tar claims %" PRIu64 " bytes but the disk holds only %" PRIu64,
                           len,
                           (uint64_t) stbuf.st_size > offset ? (uint64_t) stbuf.st_size - offset
                                                             : 0);

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return bvm_error (err, ENOMEM, "ingest");
  c->fd = fd;
  c->offset = offset;
  c->len = len;
  c->lim = lim;
  c->buf = malloc (READ_CHUNK);
  c->roots_allowed = lim->roots ? lim->roots : INGEST_ROOTS_STEPS;
  for (size_t i = 0; i < N_ROOTS; i++)
    {
      c->roots[i] = calloc (1, sizeof (struct vnode));
      if (c->roots[i] == NULL)
        break;
      c->roots[i]->type = S_IFDIR;
      c->roots[i]->name = "";
    }
  if (c->buf == NULL || c->roots[N_ROOTS - 1] == NULL)
    {
      ret = bvm_error (err, ENOMEM, "ingest");
      goto cleanup;
    }

  /* Pax names are UTF-8; in the C locale libarchive would fail to convert
   * non-ASCII ones. Switch this thread (only) to C.UTF-8 while reading. */
  utf8 = newlocale (LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
  if (utf8 != (locale_t) 0)
    old = uselocale (utf8);
  ret = ingest_read (c, sink, stats, err);
  if (utf8 != (locale_t) 0)
    {
      uselocale (old);
      freelocale (utf8);
    }
cleanup:
  for (size_t i = 0; i < N_ROOTS; i++)
    node_free (c->roots[i]);
  free (c->symlinks);
  free (c->buf);
  free (c);
  return ret;
}
