/* tarout.c - write the build's declared outputs as a tar stream
 *
 * Runs after every build process has been killed, so the tree cannot change
 * under us. Nothing is followed: directories are opened with O_NOFOLLOW one
 * component at a time, symlinks are written as symlinks, anything that is not
 * a regular file, directory or symlink is skipped with a warning. Setuid,
 * setgid and sticky bits are dropped. The host re-validates all of it.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 512
#define OUTBUF (1u << 20)
#define MAX_DEPTH 128

static int
flush (struct tar_out *t)
{
  size_t done = 0;
  while (done < t->buf_len)
    {
      ssize_t n = pwrite (t->fd, t->buf + done, t->buf_len - done, (off_t) t->offset);
      if (n < 0 && errno == EINVAL && t->fd != t->fd_buffered)
        {
          /* the device refused a direct write: go on through the cache */
          t->fd = t->fd_buffered;
          continue;
        }
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      done += (size_t) n;
      t->offset += (uint64_t) n;
    }
  t->buf_len = 0;
  return 0;
}

static int
emit (struct tar_out *t, const void *data, size_t len)
{
  const char *p = data;
  if (t->offset + t->buf_len + len - t->start > t->max)
    {
      t->overflow = true;
      errno = EFBIG;
      return -1;
    }
  while (len > 0)
    {
      size_t k = OUTBUF - t->buf_len < len ? OUTBUF - t->buf_len : len;
      memcpy (t->buf + t->buf_len, p, k);
      t->buf_len += k;
      p += k;
      len -= k;
      if (t->buf_len == OUTBUF && flush (t) < 0)
        return -1;
    }
  return 0;
}

int
tarout_init (struct tar_out *t, int fd, int direct_fd, uint64_t start, uint64_t max)
{
  void *buf = NULL;
  memset (t, 0, sizeof *t);
  /* Under emulation every byte the guest copies costs: file data is read
   * straight into the staging buffer (no copy of its own) and, through
   * `direct_fd` (O_DIRECT), the buffer goes to the device without another
   * copy into the page cache - QEMU takes it from guest memory. Every
   * write is at a multiple of 512 bytes of a 4 KiB-aligned buffer: the
   * header takes the first 4 KiB, tar blocks are 512 bytes, and the
   * buffer is flushed whole until the end. */
  t->fd_buffered = fd;
  t->fd = direct_fd >= 0 ? direct_fd : fd;
  t->offset = start;
  t->start = start;
  t->max = max;
  if (posix_memalign (&buf, 4096, OUTBUF) != 0)
    return -1;
  t->buf = buf;
  return 0;
}

static void
octal (char *field, size_t width, uint64_t v)
{
  /* width includes the terminating NUL */
  field[width - 1] = '\0';
  for (size_t i = width - 1; i-- > 0;)
    {
      field[i] = (char) ('0' + (v & 7));
      v >>= 3;
    }
}

static void
checksum (char *h)
{
  unsigned sum = 0;
  memset (h + 148, ' ', 8);
  for (int i = 0; i < BLK; i++)
    sum += (unsigned char) h[i];
  octal (h + 148, 7, sum);
  h[155] = ' ';
}

static int
pax_record (char *out, size_t cap, size_t *used, const char *key, const char *val)
{
  size_t body = 1 + strlen (key) + 1 + strlen (val) + 1; /* " key=val\n" */
  size_t len = body + 1, digits;
  char num[24];
  /* the length counts its own digits */
  for (;;)
    {
      digits = (size_t) snprintf (num, sizeof num, "%zu", len);
      if (digits + body == len)
        break;
      len = digits + body;
    }
  if (*used + len > cap)
    return -1;
  snprintf (out + *used, cap - *used + 1, "%s %s=%s\n", num, key, val);
  *used += len;
  return 0;
}

static int
header (struct tar_out *t, const char *name, char type, mode_t mode, uint64_t size,
        const char *link)
{
  char h[BLK];
  bool need_pax = strlen (name) > 100 || (link && strlen (link) > 100) || size > 077777777777ULL;

  if (need_pax)
    {
      static char pax[3 * 8192];
      size_t used = 0;
      char sz[24];
      if (strlen (name) > 100 && pax_record (pax, sizeof pax - 1, &used, "path", name) < 0)
        return -1;
      if (link && strlen (link) > 100
          && pax_record (pax, sizeof pax - 1, &used, "linkpath", link) < 0)
        return -1;
      if (size > 077777777777ULL)
        {
          snprintf (sz, sizeof sz, "%llu", (unsigned long long) size);
          if (pax_record (pax, sizeof pax - 1, &used, "size", sz) < 0)
            return -1;
        }
      memset (h, 0, sizeof h);
      snprintf (h, 100, "PaxHeader/%.80s", name);
      octal (h + 100, 8, 0644);
      octal (h + 108, 8, 0);
      octal (h + 116, 8, 0);
      octal (h + 124, 12, used);
      octal (h + 136, 12, 0);
      h[156] = 'x';
      memcpy (h + 257, "ustar", 6);
      memcpy (h + 263, "00", 2);
      checksum (h);
      if (emit (t, h, BLK) < 0 || emit (t, pax, used) < 0)
        return -1;
      if (used % BLK)
        {
          static const char zeros[BLK];
          if (emit (t, zeros, BLK - used % BLK) < 0)
            return -1;
        }
    }
  memset (h, 0, sizeof h);
  memcpy (h, name, strlen (name) > 100 ? 100 : strlen (name));
  octal (h + 100, 8, mode & 0777);
  octal (h + 108, 8, 0);
  octal (h + 116, 8, 0);
  octal (h + 124, 12, size > 077777777777ULL ? 0 : size);
  octal (h + 136, 12, 0);
  h[156] = type;
  if (link)
    memcpy (h + 157, link, strlen (link) > 100 ? 100 : strlen (link));
  memcpy (h + 257, "ustar", 6);
  memcpy (h + 263, "00", 2);
  checksum (h);
  t->entries++;
  return emit (t, h, BLK);
}

static int
copy_file (struct tar_out *t, int fd, uint64_t size)
{
  uint64_t left = size;
  if (t->offset + t->buf_len + size - t->start > t->max)
    {
      t->overflow = true;
      errno = EFBIG;
      return -1;
    }
  while (left > 0)
    {
      size_t room = OUTBUF - t->buf_len;
      size_t want = left < room ? (size_t) left : room;
      ssize_t n = read (fd, t->buf + t->buf_len, want);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      if (n == 0)
        {
          /* shrank since fstat: pad with zeros to keep the header honest */
          memset (t->buf + t->buf_len, 0, want);
          n = (ssize_t) want;
        }
      t->buf_len += (size_t) n;
      left -= (uint64_t) n;
      if (t->buf_len == OUTBUF && flush (t) < 0)
        return -1;
    }
  if (size % BLK)
    {
      static const char zeros[BLK];
      return emit (t, zeros, BLK - size % BLK);
    }
  return 0;
}

static int
cmp_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Emit `name` for the object `leaf` in directory dfd, recursing into
 * directories. `emit_self` is false for the root of an image tree. */
static int
add_at (struct tar_out *t, int dfd, const char *leaf, const char *name, bool emit_self, int depth,
        char *msg, size_t msgsz)
{
  struct stat st;

  if (depth > MAX_DEPTH)
    {
      snprintf (msg, msgsz, "output: `%.200s` nests deeper than %d levels", name, MAX_DEPTH);
      return -1;
    }
  if (fstatat (dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      snprintf (msg, msgsz, "output: stat `%.200s`: %s", name, strerror (errno));
      return -1;
    }
  if (S_ISREG (st.st_mode))
    {
      int fd = openat (dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        {
          snprintf (msg, msgsz, "output: open `%.200s`: %s", name, strerror (errno));
          return -1;
        }
      if (header (t, name, '0', st.st_mode & 0777, (uint64_t) st.st_size, NULL) < 0
          || copy_file (t, fd, (uint64_t) st.st_size) < 0)
        {
          int e = errno;
          close (fd);
          snprintf (msg, msgsz, "output: write `%.200s`: %s", name,
                    t->overflow ? "the outputs exceed the output size limit" : strerror (e));
          return -1;
        }
      close (fd);
      return 0;
    }
  if (S_ISLNK (st.st_mode))
    {
      char target[4096];
      ssize_t n = readlinkat (dfd, leaf, target, sizeof target - 1);
      if (n < 0)
        {
          snprintf (msg, msgsz, "output: readlink `%.200s`: %s", name, strerror (errno));
          return -1;
        }
      target[n] = '\0';
      if (header (t, name, '2', 0777, 0, target) < 0)
        {
          snprintf (msg, msgsz, "output: write `%.200s`: %s", name,
                    t->overflow ? "the outputs exceed the output size limit" : strerror (errno));
          return -1;
        }
      return 0;
    }
  if (S_ISDIR (st.st_mode))
    {
      int sub = openat (dfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      DIR *d;
      struct dirent *de;
      char **names = NULL;
      size_t n = 0, cap = 0;
      int ret = 0;

      if (sub < 0)
        {
          snprintf (msg, msgsz, "output: open directory `%.200s`: %s", name, strerror (errno));
          return -1;
        }
      if (emit_self)
        {
          char dname[4200];
          snprintf (dname, sizeof dname, "%s/", name);
          if (header (t, dname, '5', st.st_mode & 0777, 0, NULL) < 0)
            {
              close (sub);
              snprintf (msg, msgsz, "output: write `%.200s`: %s", name,
                        t->overflow ? "the outputs exceed the output size limit"
                                    : strerror (errno));
              return -1;
            }
        }
      d = fdopendir (sub);
      if (d == NULL)
        {
          close (sub);
          snprintf (msg, msgsz, "output: read directory `%.200s`: %s", name, strerror (errno));
          return -1;
        }
      while ((de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          if (n == cap)
            {
              char **nn = realloc (names, (cap ? cap * 2 : 64) * sizeof *names);
              if (nn == NULL)
                {
                  ret = -1;
                  snprintf (msg, msgsz, "output: out of memory");
                  break;
                }
              names = nn;
              cap = cap ? cap * 2 : 64;
            }
          names[n] = strdup (de->d_name);
          if (names[n] == NULL)
            {
              ret = -1;
              snprintf (msg, msgsz, "output: out of memory");
              break;
            }
          n++;
        }
      if (ret == 0)
        qsort (names, n, sizeof *names, cmp_names);
      for (size_t i = 0; ret == 0 && i < n; i++)
        {
          char child[4200];
          if (snprintf (child, sizeof child, "%s/%s", name, names[i]) >= (int) sizeof child)
            {
              snprintf (msg, msgsz, "output: path too long under `%.200s`", name);
              ret = -1;
              break;
            }
          ret = add_at (t, dirfd (d), names[i], child, true, depth + 1, msg, msgsz);
        }
      for (size_t i = 0; i < n; i++)
        free (names[i]);
      free (names);
      closedir (d);
      return ret;
    }
  console_printf ("buildvm-agent: warning: skipping `%.200s`: not a file, directory or symlink\n",
                  name);
  return 0;
}

int
tarout_add_tree (struct tar_out *t, const char *root, const char *rel, const char *prefix,
                 char *msg, size_t msgsz)
{
  /* Walk `rel` below `root` one component at a time, never following a
   * symlink, so a build cannot point an output at the agent's own files. */
  char buf[4096], *c, *slash;
  int dfd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const char *leaf;
  char name[4200];
  bool image_root;
  int ret;

  if (dfd < 0)
    {
      snprintf (msg, msgsz, "output: open `%s`: %s", root, strerror (errno));
      return -1;
    }
  if (snprintf (buf, sizeof buf, "%s", rel) >= (int) sizeof buf)
    {
      close (dfd);
      snprintf (msg, msgsz, "output: path too long");
      return -1;
    }
  /* strip trailing slashes and leading "./" */
  for (size_t n = strlen (buf); n > 1 && buf[n - 1] == '/'; n--)
    buf[n - 1] = '\0';
  c = buf;
  while (c[0] == '.' && c[1] == '/')
    c += 2;
  /* `image` and `oci` are each one directory, the root of its tree */
  image_root = strcmp (prefix, "image") == 0 || strcmp (prefix, PROTO_OUT_OCI) == 0;
  if (strcmp (c, ".") == 0 || *c == '\0')
    {
      close (dfd);
      if (!image_root)
        {
          snprintf (msg, msgsz, "output: an artifact pattern matched the whole source tree");
          return -1;
        }
      dfd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd < 0)
        return -1;
      ret = add_at (t, dfd, ".", prefix, false, 0, msg, msgsz);
      close (dfd);
      return ret;
    }
  if (c[0] == '/')
    {
      close (dfd);
      snprintf (msg, msgsz, "output: absolute path `%.200s`", rel);
      return -1;
    }
  if (image_root)
    snprintf (name, sizeof name, "%s", prefix);
  else
    snprintf (name, sizeof name, "%s/%s", prefix, c);
  for (;;)
    {
      int nfd;
      slash = strchr (c, '/');
      if (slash == NULL)
        {
          leaf = c;
          break;
        }
      *slash = '\0';
      if (strcmp (c, "..") == 0)
        {
          close (dfd);
          snprintf (msg, msgsz, "output: `..` in `%.200s`", rel);
          return -1;
        }
      nfd = openat (dfd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      close (dfd);
      if (nfd < 0)
        {
          snprintf (msg, msgsz, "output: `%.200s`: %s (symlinks are not followed)", rel,
                    strerror (errno));
          return -1;
        }
      dfd = nfd;
      c = slash + 1;
    }
  if (strcmp (leaf, "..") == 0)
    {
      close (dfd);
      snprintf (msg, msgsz, "output: `..` in `%.200s`", rel);
      return -1;
    }
  if (image_root)
    {
      struct stat st;
      bool missing = fstatat (dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0;
      if (missing || !S_ISDIR (st.st_mode))
        {
          close (dfd);
          snprintf (msg, msgsz, "output: image directory `%.200s` %s", rel,
                    missing ? "does not exist" : "is not a directory (symlinks are not followed)");
          return -1;
        }
    }
  ret = add_at (t, dfd, leaf, name, !image_root, 0, msg, msgsz);
  close (dfd);
  return ret;
}

int
tarout_finish (struct tar_out *t, char *msg, size_t msgsz)
{
  static const char zeros[2 * BLK];
  if (emit (t, zeros, sizeof zeros) < 0 || flush (t) < 0 || fsync (t->fd_buffered) < 0)
    {
      snprintf (msg, msgsz, "output: finish: %s",
                t->overflow ? "the outputs exceed the output size limit" : strerror (errno));
      return -1;
    }
  free (t->buf);
  t->buf = NULL;
  return 0;
}
