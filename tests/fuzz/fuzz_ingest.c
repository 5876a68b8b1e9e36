/* fuzz_ingest.c - the output-tar ingest (ingest.h): a tar stream written by
 * an untrusted build VM
 *
 * The input is the tar region, in a memfd at offset 0. It is ingested twice:
 * with the production limits (INGEST_LIMITS_INIT), and with tight limits and
 * a sink that fails on its fourth entry, so the cap and sink-failure paths
 * are fuzzed as well. The sink keeps nothing but checks, for every delivered
 * entry, the invariants ingest.h promises a sink:
 *   - the path is relative, not empty, has no `.`, `..` or empty component
 *     and no trailing `/`, no control character, at most max_path bytes;
 *   - types are regular file, directory or symlink; symlinks only under
 *     image/, with a relative target; a hardlink names an earlier delivered
 *     regular file of the same root and carries no data;
 *   - no path is delivered twice; no perm bits beyond 0777;
 *   - data() comes only between begin() and end() of a regular file, and
 *     adds up to exactly the entry's size;
 *   - on success, the stats agree with what the sink saw.
 */
#include "fuzz.h"

#include "ingest.h"

#include <sys/stat.h>

#define SEEN_MAX 4096

static volatile unsigned char g_sink;

struct seen
{
  enum ingest_kind kind;
  mode_t type;
  bool hardlink;
  char *path;
};

struct fsink
{
  struct seen seen[SEEN_MAX];
  size_t nseen;
  bool open;
  bool want_data;
  uint64_t size, got;
  size_t max_path;
  unsigned fail_at; /* fail begin() of this entry (1-based), 0 = never */
  struct ingest_stats mine;
};

static void
check_rel_path (const char *p, size_t max_path)
{
  size_t n = strlen (p);
  const char *c = p;

  FUZZ_CHECK (n > 0 && n <= max_path);
  FUZZ_CHECK (p[0] != '/' && p[n - 1] != '/');
  for (const unsigned char *u = (const unsigned char *) p; *u; u++)
    FUZZ_CHECK (*u >= 0x20 && *u != 0x7f);
  while (*c)
    {
      size_t len = strcspn (c, "/");
      FUZZ_CHECK (len > 0);
      FUZZ_CHECK (!(len == 1 && c[0] == '.'));
      FUZZ_CHECK (!(len == 2 && c[0] == '.' && c[1] == '.'));
      FUZZ_CHECK (len <= INGEST_NAME_MAX);
      c += len;
      if (*c == '/')
        c++;
    }
}

static struct seen *
find (struct fsink *s, enum ingest_kind kind, const char *path)
{
  for (size_t i = 0; i < s->nseen; i++)
    if (s->seen[i].kind == kind && strcmp (s->seen[i].path, path) == 0)
      return &s->seen[i];
  return NULL;
}

static int
s_begin (void *opaque, const struct ingest_entry *e, bvm_error_t *err)
{
  struct fsink *s = opaque;
  struct seen *link;

  FUZZ_CHECK (!s->open);
  FUZZ_CHECK (e->kind == INGEST_IMAGE || e->kind == INGEST_ARTIFACT);
  check_rel_path (e->path, s->max_path);
  FUZZ_CHECK ((e->perm & ~(mode_t) 0777) == 0);
  FUZZ_CHECK (find (s, e->kind, e->path) == NULL);
  s->want_data = false;
  switch (e->type)
    {
    case S_IFREG:
      if (e->link_target != NULL)
        {
          check_rel_path (e->link_target, s->max_path);
          link = find (s, e->kind, e->link_target);
          FUZZ_CHECK (link != NULL && link->type == S_IFREG && !link->hardlink);
          FUZZ_CHECK (e->size == 0);
          s->mine.hardlinks++;
        }
      else
        {
          s->want_data = true;
          s->mine.files++;
        }
      break;
    case S_IFDIR:
      FUZZ_CHECK (e->size == 0 && e->link_target == NULL);
      s->mine.dirs++;
      break;
    case S_IFLNK:
      FUZZ_CHECK (e->kind == INGEST_IMAGE);
      FUZZ_CHECK (e->size == 0 && e->link_target != NULL);
      FUZZ_CHECK (e->link_target[0] != '\0' && e->link_target[0] != '/');
      s->mine.symlinks++;
      break;
    default: fuzz_fail (__FILE__, __LINE__, "entry type is a file, a directory or a symlink");
    }
  if (s->nseen < SEEN_MAX)
    {
      struct seen *n = &s->seen[s->nseen++];
      n->kind = e->kind;
      n->type = e->type;
      n->hardlink = e->link_target != NULL;
      n->path = strdup (e->path);
      if (n->path == NULL)
        abort ();
    }
  s->open = true;
  s->size = e->size;
  s->got = 0;
  if (s->fail_at != 0 && s->nseen == s->fail_at)
    return bvm_error_code (err, BVM_E_IO, 0, "the sink failed on purpose at entry %u", s->fail_at);
  return 0;
}

static int
s_data (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct fsink *s = opaque;

  (void) err;
  FUZZ_CHECK (s->open && s->want_data);
  FUZZ_CHECK (len > 0 && s->got + len <= s->size);
  /* touch every byte: ASan reports a chunk that points outside its buffer */
  for (size_t i = 0; i < len; i++)
    g_sink += ((const unsigned char *) buf)[i];
  s->got += len;
  s->mine.bytes += len;
  return 0;
}

static int
s_end (void *opaque, bvm_error_t *err)
{
  struct fsink *s = opaque;

  (void) err;
  FUZZ_CHECK (s->open);
  FUZZ_CHECK (s->got == (s->want_data ? s->size : 0));
  s->open = false;
  return 0;
}

static void
run (int fd, size_t size, const struct ingest_limits *lim, unsigned fail_at)
{
  static struct fsink s; /* large: keep it off the stack */
  struct ingest_sink sink = { &s, s_begin, s_data, s_end };
  struct ingest_stats st;
  bvm_error_t err = NULL;
  int ret;

  memset (&s, 0, sizeof s);
  s.max_path = lim->max_path;
  s.fail_at = fail_at;
  memset (&st, 0, sizeof st);
  ret = ingest_run (fd, 0, size, lim, &sink, &st, &err);
  if (ret < 0)
    fuzz_check_error (ret, &err);
  else
    {
      FUZZ_CHECK (!s.open);
      FUZZ_CHECK (fail_at == 0 || s.nseen < fail_at);
      FUZZ_CHECK (st.files == s.mine.files && st.dirs == s.mine.dirs);
      FUZZ_CHECK (st.symlinks == s.mine.symlinks && st.hardlinks == s.mine.hardlinks);
      FUZZ_CHECK (st.bytes == s.mine.bytes && st.bytes <= lim->max_total_bytes);
      FUZZ_CHECK (st.entries <= lim->max_entries);
      FUZZ_CHECK (st.tar_bytes <= size);
    }
  for (size_t i = 0; i < s.nseen && i < SEEN_MAX; i++)
    free (s.seen[i].path);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const struct ingest_limits prod = INGEST_LIMITS_INIT;
  const struct ingest_limits tight = {
    .max_entries = 8,
    .max_entry_bytes = 700,
    .max_total_bytes = 2000,
    .max_names_bytes = 300,
    .max_path = 100,
    .max_header_bytes = 1536,
    .deadline_ms = 0,
  };
  int fd = fuzz_memfd (data, size);

  run (fd, size, &prod, 0);
  run (fd, size, &tight, 4);
  return 0;
}
