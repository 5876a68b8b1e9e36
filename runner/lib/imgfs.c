/* imgfs.c - the file tree of an image's layers, see imgfs.h */
#include "imgfs.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LINKS 40 /* symlinks followed in one lookup, as Linux's MAXSYMLINKS */
#define MAX_INTERP 4 /* `#!` interpreters in a row, as Linux's binfmt_script allows */
#define WALK_MAX (2 * PATH_MAX)

enum ent_type
{
  T_REG,
  T_DIR,
  T_LNK,
  T_OTHER, /* devices, fifos, sockets: there, but nothing to exec */
};

enum interp_kind
{
  I_NONE,
  I_ELF,     /* PT_INTERP */
  I_SCRIPT,  /* #! */
  I_UNKNOWN, /* an ELF file whose program headers lie past the bytes read */
};

struct ent
{
  char *path; /* normalized: no leading or trailing '/', no `.` or `..` */
  char *link; /* a symlink's target */
  char *interp;
  uint32_t layer;
  uint16_t perm;
  uint8_t type;
  uint8_t interp_kind;
  bool gone; /* hidden by a whiteout, or replaced by a file above */
};

struct imgfs
{
  struct ent *ents;
  size_t n, cap;
  uint32_t *slots; /* open addressing: index + 1, 0 empty */
  size_t n_slots;
  size_t name_bytes;
  uint32_t layer;
};

/* --- the table ------------------------------------------------------------------ */

static uint64_t
hash (const char *s, size_t len)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char) s[i]) * 1099511628211ULL;
  return h;
}

static ssize_t
lookup (const struct imgfs *fs, const char *path, size_t len)
{
  size_t mask = fs->n_slots - 1;
  for (size_t i = hash (path, len) & mask;; i = (i + 1) & mask)
    {
      uint32_t s = fs->slots[i];
      if (s == 0)
        return -1;
      if (strncmp (fs->ents[s - 1].path, path, len) == 0 && fs->ents[s - 1].path[len] == '\0')
        return (ssize_t) (s - 1);
    }
}

static const struct ent *
find (const struct imgfs *fs, const char *path, size_t len)
{
  ssize_t i = lookup (fs, path, len);
  return i < 0 || fs->ents[i].gone ? NULL : &fs->ents[i];
}

static int
grow (struct imgfs *fs, bvm_error_t *err)
{
  if (fs->n >= IMGFS_MAX_ENTRIES)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "the image has more than %u entries",
                           IMGFS_MAX_ENTRIES);
  if (fs->n == fs->cap)
    {
      size_t cap = fs->cap ? fs->cap * 2 : 1024;
      struct ent *e = reallocarray (fs->ents, cap, sizeof *e);
      if (e == NULL)
        return bvm_error (err, ENOMEM, "image entries");
      fs->ents = e;
      fs->cap = cap;
    }
  if ((fs->n + 1) * 2 > fs->n_slots)
    {
      size_t n_slots = fs->n_slots * 2;
      uint32_t *slots = calloc (n_slots, sizeof *slots);
      if (slots == NULL)
        return bvm_error (err, ENOMEM, "image entries");
      for (size_t i = 0; i < fs->n; i++)
        {
          size_t j = hash (fs->ents[i].path, strlen (fs->ents[i].path)) & (n_slots - 1);
          while (slots[j] != 0)
            j = (j + 1) & (n_slots - 1);
          slots[j] = (uint32_t) (i + 1);
        }
      free (fs->slots);
      fs->slots = slots;
      fs->n_slots = n_slots;
    }
  return 0;
}

static int
dup_name (char **out, const char *s, size_t len, struct imgfs *fs, bvm_error_t *err)
{
  if (fs->name_bytes + len + 1 > IMGFS_MAX_NAMES)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "the image's names are over %u bytes",
                           IMGFS_MAX_NAMES);
  *out = strndup (s, len);
  if (*out == NULL)
    return bvm_error (err, ENOMEM, "image entries");
  fs->name_bytes += len + 1;
  return 0;
}

/* The entry for `path`: the one there (also when gone), or a new one. */
static int
slot_for (struct ent **out, struct imgfs *fs, const char *path, size_t len, bvm_error_t *err)
{
  ssize_t i = lookup (fs, path, len);
  size_t j;
  int ret;

  if (i >= 0)
    {
      *out = &fs->ents[i];
      return 0;
    }
  if ((ret = grow (fs, err)) < 0)
    return ret;
  fs->ents[fs->n] = (struct ent){ 0 };
  if ((ret = dup_name (&fs->ents[fs->n].path, path, len, fs, err)) < 0)
    return ret;
  j = hash (path, len) & (fs->n_slots - 1);
  while (fs->slots[j] != 0)
    j = (j + 1) & (fs->n_slots - 1);
  fs->slots[j] = (uint32_t) (fs->n + 1);
  *out = &fs->ents[fs->n++];
  return 0;
}

static void
ent_clear (struct imgfs *fs, struct ent *e)
{
  if (e->link)
    fs->name_bytes -= strlen (e->link) + 1;
  if (e->interp)
    fs->name_bytes -= strlen (e->interp) + 1;
  free (e->link);
  free (e->interp);
  e->link = e->interp = NULL;
  e->interp_kind = I_NONE;
}

/* Hide `prefix` itself (when `self`) and everything under it that a layer
 * below the current one has. A linear scan: whiteouts are rare. */
static void
hide_below (struct imgfs *fs, const char *prefix, size_t len, bool self)
{
  for (size_t i = 0; i < fs->n; i++)
    {
      struct ent *e = &fs->ents[i];
      if (e->gone || e->layer >= fs->layer)
        continue;
      if (len == 0 ? !self
                   : strncmp (e->path, prefix, len) == 0
                         && ((self && e->path[len] == '\0') || e->path[len] == '/'))
        e->gone = true;
    }
}

/* --- adding entries ------------------------------------------------------------- */

int
imgfs_new (struct imgfs **out, bvm_error_t *err)
{
  struct imgfs *fs = calloc (1, sizeof *fs);
  if (fs == NULL || (fs->slots = calloc (2048, sizeof *fs->slots)) == NULL)
    {
      free (fs);
      return bvm_error (err, ENOMEM, "image entries");
    }
  fs->n_slots = 2048;
  *out = fs;
  return 0;
}

void
imgfs_free (struct imgfs *fs)
{
  if (fs == NULL)
    return;
  for (size_t i = 0; i < fs->n; i++)
    {
      free (fs->ents[i].path);
      free (fs->ents[i].link);
      free (fs->ents[i].interp);
    }
  free (fs->ents);
  free (fs->slots);
  free (fs);
}

void
imgfs_next_layer (struct imgfs *fs)
{
  fs->layer++;
}

/* `./a//b/` -> `a/b` into out; 1 for the root itself, -1 for `..` or a
 * path too long */
static int
normalize (char out[PATH_MAX], const char *p)
{
  size_t o = 0;
  while (*p)
    {
      const char *c;
      size_t n;
      while (*p == '/')
        p++;
      c = p;
      while (*p && *p != '/')
        p++;
      n = (size_t) (p - c);
      if (n == 0 || (n == 1 && c[0] == '.'))
        continue;
      if (n == 2 && c[0] == '.' && c[1] == '.')
        return -1;
      if (o + n + 2 > PATH_MAX)
        return -1;
      if (o)
        out[o++] = '/';
      memcpy (out + o, c, n);
      o += n;
    }
  out[o] = '\0';
  return o == 0 ? 1 : 0;
}

int
imgfs_elf_interp (char *out, size_t size, const void *head, size_t len)
{
  const unsigned char *h = head;
  uint64_t phoff, off, filesz;
  unsigned phentsize, phnum;
  bool is64;

  if (len < 4 || memcmp (h, "\177ELF", 4) != 0)
    return 0;
  if (len < 52 || (h[4] != 1 && h[4] != 2) || h[5] != 1)
    return -1; /* little-endian ELF32 or ELF64 only: what x86-64 runs */
  is64 = h[4] == 2;
#define U16(p) ((unsigned) (p)[0] | (unsigned) (p)[1] << 8)
#define U32(p) ((uint32_t) U16 (p) | (uint32_t) U16 ((p) + 2) << 16)
#define U64(p) ((uint64_t) U32 (p) | (uint64_t) U32 ((p) + 4) << 32)
  if (is64 && len < 64)
    return -1;
  phoff = is64 ? U64 (h + 32) : U32 (h + 28);
  phentsize = is64 ? U16 (h + 54) : U16 (h + 42);
  phnum = is64 ? U16 (h + 56) : U16 (h + 44);
  if (phentsize < (is64 ? 56u : 32u))
    return phnum == 0 ? 0 : -1;
  for (unsigned i = 0; i < phnum; i++)
    {
      const unsigned char *ph;
      if (phoff > len || (uint64_t) (i + 1) * phentsize > len - phoff)
        return -1;
      ph = h + phoff + (uint64_t) i * phentsize;
      if (U32 (ph) != 3) /* PT_INTERP */
        continue;
      off = is64 ? U64 (ph + 8) : U32 (ph + 4);
      filesz = is64 ? U64 (ph + 32) : U32 (ph + 16);
      if (filesz == 0 || filesz >= size || off > len || filesz > len - off)
        return -1;
      memcpy (out, h + off, filesz);
      out[filesz] = '\0';
      out[strnlen (out, filesz)] = '\0'; /* it ends in a NUL */
      return out[0] ? 1 : -1;
    }
#undef U64
#undef U32
#undef U16
  return 0;
}

int
imgfs_shebang (char *out, size_t size, const void *head, size_t len)
{
  const char *h = head;
  size_t i = 2, j;

  if (len < 2 || h[0] != '#' || h[1] != '!')
    return 0;
  if (len > 256)
    len = 256; /* what the kernel reads (BINPRM_BUF_SIZE) */
  while (i < len && (h[i] == ' ' || h[i] == '\t'))
    i++;
  for (j = i; j < len && h[j] != ' ' && h[j] != '\t' && h[j] != '\n' && h[j] != '\0'; j++)
    ;
  if (j == i || j - i >= size)
    return 0; /* `#!` alone: not a script the kernel runs */
  memcpy (out, h + i, j - i);
  out[j - i] = '\0';
  return 1;
}

int
imgfs_add (struct imgfs *fs, const char *path, mode_t type, mode_t perm, const char *link,
           const void *head, size_t head_len, bvm_error_t *err)
{
  char p[PATH_MAX], interp[PATH_MAX];
  const char *base;
  struct ent *e;
  size_t len;
  int ret, k;

  k = normalize (p, path);
  if (k < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "layer entry `%.200s` leaves the image", path);
  if (k == 1)
    return 0; /* the root */
  len = strlen (p);
  base = strrchr (p, '/');
  base = base ? base + 1 : p;
  if (strncmp (base, ".wh.", 4) == 0)
    {
      size_t dir_len = base == p ? 0 : (size_t) (base - p - 1);
      if (strcmp (base, ".wh..wh..opq") == 0)
        hide_below (fs, p, dir_len, false);
      else
        {
          /* `dir/.wh.name` hides `dir/name` */
          memmove ((char *) base, base + 4, strlen (base + 4) + 1);
          hide_below (fs, p, strlen (p), true);
        }
      return 0;
    }
  /* the parents, as directories, where no layer has them */
  for (size_t i = 0; i < len; i++)
    if (p[i] == '/')
      {
        const struct ent *d = find (fs, p, i);
        if (d == NULL)
          {
            if ((ret = slot_for (&e, fs, p, i, err)) < 0)
              return ret;
            ent_clear (fs, e);
            e->type = T_DIR;
            e->perm = 0755;
            e->layer = fs->layer;
            e->gone = false;
          }
      }
  if ((ret = slot_for (&e, fs, p, len, err)) < 0)
    return ret;
  if (!e->gone && e->type == T_DIR && type != S_IFDIR)
    hide_below (fs, p, len, false); /* a file over a directory hides what was in it */
  ent_clear (fs, e);
  e->gone = false;
  e->layer = fs->layer;
  e->perm = (uint16_t) (perm & 07777);
  if (type == 0)
    {
      /* a hard link: the file it names, with this entry's mode */
      char t[PATH_MAX];
      const struct ent *target = link != NULL && normalize (t, link) == 0
                                     ? find (fs, t, strlen (t))
                                     : NULL;
      e->type = target ? target->type : T_REG;
      if (target && target->interp
          && (ret = dup_name (&e->interp, target->interp, strlen (target->interp), fs, err)) < 0)
        return ret;
      if (target)
        e->interp_kind = target->interp_kind;
      return 0;
    }
  e->type = type == S_IFDIR ? T_DIR : type == S_IFLNK ? T_LNK : type == S_IFREG ? T_REG : T_OTHER;
  if (e->type == T_LNK && link != NULL)
    return dup_name (&e->link, link, strlen (link), fs, err);
  if (e->type != T_REG || head == NULL)
    return 0;
  k = imgfs_elf_interp (interp, sizeof interp, head, head_len);
  if (k < 0)
    {
      e->interp_kind = I_UNKNOWN;
      return 0;
    }
  if (k == 1)
    e->interp_kind = I_ELF;
  else if (imgfs_shebang (interp, sizeof interp, head, head_len) == 1)
    e->interp_kind = I_SCRIPT;
  else
    return 0;
  return dup_name (&e->interp, interp, strlen (interp), fs, err);
}

int
imgfs_add_layer (struct imgfs *fs, const char *path, const char *what, bvm_error_t *err)
{
  struct archive *a = archive_read_new ();
  struct archive_entry *ae;
  cleanup_free unsigned char *head = malloc (IMGFS_HEAD_MAX);
  int ret = 0, r;

  if (a == NULL || head == NULL)
    {
      if (a != NULL)
        archive_read_free (a);
      return bvm_error (err, ENOMEM, "reading %s", what);
    }
  imgfs_next_layer (fs);
  if (archive_read_support_filter_gzip (a) != ARCHIVE_OK
      || archive_read_support_filter_zstd (a) != ARCHIVE_OK
      || archive_read_support_format_tar (a) != ARCHIVE_OK
      || archive_read_open_filename (a, path, 64 * 1024) != ARCHIVE_OK)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "%s is not a tar layer: %s", what,
                            archive_error_string (a) ? archive_error_string (a) : "?");
      goto cleanup;
    }
  while ((r = archive_read_next_header (a, &ae)) == ARCHIVE_OK)
    {
      const char *name = archive_entry_pathname (ae);
      const char *hard = archive_entry_hardlink (ae);
      mode_t type = archive_entry_filetype (ae), perm = archive_entry_perm (ae);
      size_t head_len = 0;

      if (name == NULL)
        continue;
      if (hard != NULL)
        type = 0;
      else if (type == AE_IFREG && (perm & 0111) != 0)
        {
          /* an executable: its first bytes, for its interpreter */
          while (head_len < IMGFS_HEAD_MAX)
            {
              la_ssize_t n = archive_read_data (a, head + head_len, IMGFS_HEAD_MAX - head_len);
              if (n < 0)
                {
                  ret = bvm_error_code (err, BVM_E_INVALID, 0, "%s: reading `%.200s`: %s", what,
                                        name, archive_error_string (a));
                  goto cleanup;
                }
              if (n == 0)
                break;
              head_len += (size_t) n;
            }
        }
      ret = imgfs_add (fs, name, type, perm, hard ? hard : archive_entry_symlink (ae),
                       type == AE_IFREG && (perm & 0111) != 0 ? head : NULL, head_len, err);
      if (ret < 0)
        {
          bvm_error_wrap (err, "%s", what);
          goto cleanup;
        }
    }
  if (r != ARCHIVE_EOF)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "%s: %s", what,
                          archive_error_string (a) ? archive_error_string (a) : "a bad tar");
cleanup:
  archive_read_free (a);
  return ret;
}

/* --- resolving -------------------------------------------------------------------- */

/* `path` (absolute, or relative to the directory `cwd`) in the image, every
 * symlink followed inside it: 0 with *out and the canonical path in
 * `canon`; 1 when it does not resolve, `why` saying where it stops. */
static int
resolve (const struct ent **out, char canon[PATH_MAX], const struct imgfs *fs, const char *path,
         const char *cwd, char *why, size_t why_size)
{
  char rest[WALK_MAX], tmp[WALK_MAX];
  char cur[PATH_MAX] = "";
  const struct ent *e = NULL;
  size_t pos = 0;
  unsigned links = 0;

  if (snprintf_checked (rest, sizeof rest, "%s%s%s", path[0] == '/' ? "" : (cwd ? cwd : "/"),
                        path[0] == '/' ? "" : "/", path)
      < 0)
    {
      snprintf (why, why_size, "`%.200s` is too long", path);
      return 1;
    }
  while (rest[pos])
    {
      const char *c;
      size_t n, cl = strlen (cur);
      while (rest[pos] == '/')
        pos++;
      c = rest + pos;
      while (rest[pos] && rest[pos] != '/')
        pos++;
      n = (size_t) (rest + pos - c);
      if (n == 0 || (n == 1 && c[0] == '.'))
        continue;
      if (n == 2 && c[0] == '.' && c[1] == '.')
        {
          char *slash = strrchr (cur, '/');
          if (slash)
            *slash = '\0';
          else
            cur[0] = '\0'; /* `..` of the root is the root */
          e = NULL;
          continue;
        }
      if (cl + n + 2 > PATH_MAX)
        {
          snprintf (why, why_size, "`%.200s` is too long", path);
          return 1;
        }
      if (cl)
        cur[cl++] = '/';
      memcpy (cur + cl, c, n);
      cur[cl + n] = '\0';
      e = find (fs, cur, cl + n);
      if (e == NULL)
        {
          snprintf (why, why_size, "`/%s` does not exist", cur);
          return 1;
        }
      if (e->type == T_LNK)
        {
          if (++links > MAX_LINKS || e->link == NULL || e->link[0] == '\0')
            {
              snprintf (why, why_size, "`/%s` is a symlink loop", cur);
              return 1;
            }
          /* the target, then what was left: absolute from the image's
           * root, relative from the link's directory */
          if (snprintf_checked (tmp, sizeof tmp, "%s%s", e->link, rest + pos) < 0)
            {
              snprintf (why, why_size, "`%.200s` is too long", path);
              return 1;
            }
          memcpy (rest, tmp, strlen (tmp) + 1);
          pos = 0;
          if (e->link[0] == '/')
            cur[0] = '\0';
          else
            cur[cl ? cl - 1 : 0] = '\0';
          e = NULL;
          continue;
        }
      if (e->type != T_DIR)
        {
          /* only slashes left: fine for a file only without any */
          size_t k = pos;
          while (rest[k] == '/')
            k++;
          if (rest[k] != '\0' || k != pos)
            {
              snprintf (why, why_size, "`/%s` is not a directory", cur);
              return 1;
            }
        }
    }
  canon[0] = '/'; /* cur is at most PATH_MAX - 2 bytes (above) */
  memcpy (canon + 1, cur, strlen (cur) + 1);
  *out = e; /* NULL: the root */
  return 0;
}

static int cannot (char *why, size_t why_size, const char **fix, const char *f, const char *fmt,
                   ...) __attribute__ ((format (printf, 5, 6)));

static int
cannot (char *why, size_t why_size, const char **fix, const char *f, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (why, why_size, fmt, ap);
  va_end (ap);
  *fix = f;
  return 1;
}

#define FIX_MISSING                                                                               \
  "put it in the app's layer (`image.from`) or build on a base image that has it "                \
  "(`image.base`)"
#define FIX_INTERP                                                                                \
  "link it statically, or build on a base image with the C library it was linked against "        \
  "(`image.base`, such as `base/debian:12`)"
#define FIX_EXEC "make it executable in the build (`chmod +x`)"

int
imgfs_check_start (const struct imgfs *fs, const char *argv0, const char *path_env,
                   const char *workdir, char *why, size_t why_size, const char **fix)
{
  char canon[PATH_MAX], what[PATH_MAX + 64], inner[512];
  const struct ent *e = NULL;

  *fix = NULL;
  if (argv0 == NULL || argv0[0] == '\0')
    return cannot (why, why_size, fix, "give `image.entrypoint` or `image.cmd`",
                   "the image names no program to run");
  if (strchr (argv0, '/') == NULL)
    {
      /* a bare name: the first PATH directory with an executable file of
       * that name, as runtimes look it up */
      const char *p = path_env ? path_env : IMGFS_DEFAULT_PATH;
      bool found = false;
      while (!found)
        {
          const char *colon = strchr (p, ':');
          size_t n = colon ? (size_t) (colon - p) : strlen (p);
          char cand[PATH_MAX];
          if (snprintf_checked (cand, sizeof cand, "%.*s/%s", (int) n, n ? p : ".", argv0) >= 0
              && resolve (&e, canon, fs, cand, workdir, inner, sizeof inner) == 0 && e != NULL
              && e->type == T_REG && (e->perm & 0111) != 0)
            found = true;
          if (colon == NULL)
            break;
          p = colon + 1;
        }
      if (!found)
        return cannot (why, why_size, fix, FIX_MISSING,
                       "`%.200s` is in none of the image's PATH directories (%.1024s)", argv0,
                       path_env ? path_env : IMGFS_DEFAULT_PATH);
    }
  else if (resolve (&e, canon, fs, argv0, workdir, inner, sizeof inner) != 0)
    return cannot (why, why_size, fix, FIX_MISSING, "`%.200s` is not in the image: %s", argv0,
                   inner);
  snprintf (what, sizeof what, "`%s`", canon);
  for (unsigned level = 0;; level++)
    {
      const char *interp;
      const struct ent *ie = NULL;
      char icanon[PATH_MAX];

      if (e == NULL || e->type == T_DIR)
        return cannot (why, why_size, fix, FIX_MISSING, "%s is a directory", what);
      if (e->type != T_REG)
        return cannot (why, why_size, fix, FIX_MISSING, "%s is not a regular file", what);
      if ((e->perm & 0111) == 0)
        return cannot (why, why_size, fix, FIX_EXEC, "%s is not executable (mode %04o)", what,
                       e->perm);
      if (e->interp_kind != I_ELF && e->interp_kind != I_SCRIPT)
        return 0;
      interp = e->interp;
      if (resolve (&ie, icanon, fs, interp, workdir, inner, sizeof inner) != 0 || ie == NULL
          || ie->type != T_REG)
        {
          if (e->interp_kind == I_ELF)
            return cannot (why, why_size, fix, FIX_INTERP,
                           "%s is dynamically linked, and its interpreter `%.200s` is not in "
                           "the image: %s",
                           what, interp, ie && ie->type != T_REG ? "not a file" : inner);
          return cannot (why, why_size, fix, FIX_MISSING,
                         "%s starts with `#!%.200s`, which is not in the image: %s", what, interp,
                         ie && ie->type != T_REG ? "not a file" : inner);
        }
      if (e->interp_kind == I_ELF)
        return 0; /* the dynamic loader itself is static */
      if (level + 1 >= MAX_INTERP)
        return cannot (why, why_size, fix, FIX_MISSING, "%s: too many `#!` interpreters", what);
      e = ie;
      snprintf (what, sizeof what, "`%s` (the `#!` interpreter)", icanon);
    }
}
