/* tarin.c - extract the input disk: a tar stream written by the runner
 *
 * The runner validated every path before writing it, but the agent runs as
 * root and checks again: no absolute paths, no `..`, and every parent
 * directory is opened with O_NOFOLLOW, so no entry can be written through a
 * symlink. Supported: ustar regular files, directories and symlinks, with pax
 * extended headers for long paths, link targets and sizes.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 512
#define MAX_NAME 4096

struct in
{
  int fd;
  char buf[1 << 16];
  size_t pos, len;
  bool eof;
};

static int
in_read (struct in *r, void *dst, size_t n)
{
  char *d = dst;
  while (n > 0)
    {
      if (r->pos == r->len)
        {
          ssize_t got;
          if (r->eof)
            return -1;
          do
            got = read (r->fd, r->buf, sizeof r->buf);
          while (got < 0 && errno == EINTR);
          if (got <= 0)
            {
              r->eof = true;
              return -1;
            }
          r->pos = 0;
          r->len = (size_t) got;
        }
      size_t k = r->len - r->pos < n ? r->len - r->pos : n;
      memcpy (d, r->buf + r->pos, k);
      r->pos += k;
      d += k;
      n -= k;
    }
  return 0;
}

static int
parse_octal (const char *f, size_t n, uint64_t *out)
{
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && f[i] == ' ')
    i++;
  if (i == n || f[i] < '0' || f[i] > '7')
    return -1;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++)
    {
      if (v > (UINT64_MAX >> 3))
        return -1;
      v = (v << 3) | (uint64_t) (f[i] - '0');
    }
  for (; i < n; i++)
    if (f[i] != ' ' && f[i] != '\0')
      return -1;
  *out = v;
  return 0;
}

static bool
zero_block (const char *b)
{
  for (int i = 0; i < BLK; i++)
    if (b[i])
      return false;
  return true;
}

/* Parse "LEN key=value\n" records. */
static int
parse_pax (char *data, size_t len, char *path, char *link, uint64_t *size, bool *have_size)
{
  size_t off = 0;
  while (off < len)
    {
      char *end;
      unsigned long rec;
      char *kv, *eq;
      errno = 0;
      rec = strtoul (data + off, &end, 10);
      if (errno || *end != ' ' || rec == 0 || rec > len - off || data[off + rec - 1] != '\n')
        return -1;
      kv = end + 1;
      data[off + rec - 1] = '\0';
      eq = strchr (kv, '=');
      if (eq == NULL)
        return -1;
      *eq = '\0';
      if (strcmp (kv, "path") == 0)
        {
          if (strlen (eq + 1) >= MAX_NAME)
            return -1;
          memcpy (path, eq + 1, strlen (eq + 1) + 1);
        }
      else if (strcmp (kv, "linkpath") == 0)
        {
          if (strlen (eq + 1) >= MAX_NAME)
            return -1;
          memcpy (link, eq + 1, strlen (eq + 1) + 1);
        }
      else if (strcmp (kv, "size") == 0)
        {
          char *e2;
          errno = 0;
          *size = strtoull (eq + 1, &e2, 10);
          if (errno || *e2 != '\0')
            return -1;
          *have_size = true;
        }
      off += rec;
    }
  return 0;
}

static bool
safe_rel (const char *p)
{
  const char *c = p;
  if (*p == '\0' || *p == '/')
    return false;
  while (*c)
    {
      const char *e = strchr (c, '/');
      size_t n = e ? (size_t) (e - c) : strlen (c);
      if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return false;
      if (e == NULL)
        break;
      c = e + 1;
      if (*c == '\0')
        break; /* trailing slash */
    }
  return true;
}

/* Open the parent directory of rel below rootfd, creating missing
 * directories, never following symlinks. *leaf points into rel. */
static int
open_parent (int rootfd, char *rel, const char **leaf)
{
  int fd = dup (rootfd);
  char *c = rel;
  if (fd < 0)
    return -1;
  for (;;)
    {
      char *slash = strchr (c, '/');
      int nfd;
      if (slash == NULL || slash[1] == '\0')
        {
          if (slash)
            *slash = '\0';
          *leaf = c;
          return fd;
        }
      *slash = '\0';
      if (mkdirat (fd, c, 0755) == 0)
        {
          if (fchownat (fd, c, AGENT_BUILD_UID, AGENT_BUILD_GID, AT_SYMLINK_NOFOLLOW) < 0)
            {
              close (fd);
              return -1;
            }
        }
      else if (errno != EEXIST)
        {
          close (fd);
          return -1;
        }
      nfd = openat (fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      *slash = '/';
      close (fd);
      if (nfd < 0)
        return -1;
      fd = nfd;
      c = slash + 1;
    }
}

static int
skip (struct in *r, uint64_t n)
{
  char b[BLK];
  uint64_t padded = (n + BLK - 1) / BLK * BLK;
  while (padded > 0)
    {
      if (in_read (r, b, BLK) < 0)
        return -1;
      padded -= BLK;
    }
  return 0;
}

/* Copy `size` bytes of entry data to fd (or discard when fd < 0). */
static int
copy_data (struct in *r, int fd, uint64_t size)
{
  char b[BLK * 16];
  uint64_t left = size;
  uint64_t padded = (size + BLK - 1) / BLK * BLK;
  while (padded > 0)
    {
      size_t chunk = padded < sizeof b ? (size_t) padded : sizeof b;
      size_t use;
      if (in_read (r, b, chunk) < 0)
        return -1;
      use = left < chunk ? (size_t) left : chunk;
      if (fd >= 0 && use > 0)
        {
          const char *p = b;
          size_t k = use;
          while (k > 0)
            {
              ssize_t w = write (fd, p, k);
              if (w < 0)
                {
                  if (errno == EINTR)
                    continue;
                  return -1;
                }
              p += w;
              k -= (size_t) w;
            }
        }
      left -= use;
      padded -= chunk;
    }
  return 0;
}

int
agent_input_extract (int fd, const char *secretdir, char **control, size_t *control_len, char *msg,
                     size_t msgsz)
{
  static struct in r;
  static char path[MAX_NAME], link[MAX_NAME];
  int secfd;
  char hdr[BLK];
  bool have_control = false;
  char type = '?';

  memset (&r, 0, sizeof r);
  r.fd = fd;
  *control = NULL;
  secfd = open (secretdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (secfd < 0)
    {
      snprintf (msg, msgsz, "input: open target directories: %s", strerror (errno));
      return -1;
    }

  for (;;)
    {
      uint64_t size = 0, mode = 0, pax_size = 0;
      bool have_pax_size = false;

      path[0] = link[0] = '\0';
      if (in_read (&r, hdr, BLK) < 0)
        {
          snprintf (msg, msgsz, "input: truncated tar stream");
          goto fail;
        }
      if (zero_block (hdr))
        break;
      /* pax extended header(s) first */
      while (hdr[156] == 'x' || hdr[156] == 'g')
        {
          char *data;
          if (parse_octal (hdr + 124, 12, &size) < 0 || size > 1 << 20)
            {
              snprintf (msg, msgsz, "input: bad pax header size");
              goto fail;
            }
          data = malloc (size + 1);
          if (data == NULL)
            {
              snprintf (msg, msgsz, "input: out of memory");
              goto fail;
            }
          {
            uint64_t padded = (size + BLK - 1) / BLK * BLK;
            char *tmp = malloc (padded ? padded : 1);
            if (tmp == NULL || in_read (&r, tmp, padded) < 0)
              {
                free (tmp);
                free (data);
                snprintf (msg, msgsz, "input: truncated pax header");
                goto fail;
              }
            memcpy (data, tmp, size);
            free (tmp);
          }
          data[size] = '\0';
          if (hdr[156] == 'x' && parse_pax (data, size, path, link, &pax_size, &have_pax_size) < 0)
            {
              free (data);
              snprintf (msg, msgsz, "input: malformed pax header");
              goto fail;
            }
          free (data);
          if (in_read (&r, hdr, BLK) < 0)
            {
              snprintf (msg, msgsz, "input: truncated tar stream");
              goto fail;
            }
        }
      type = hdr[156];
      if (parse_octal (hdr + 124, 12, &size) < 0 || parse_octal (hdr + 100, 8, &mode) < 0)
        {
          snprintf (msg, msgsz, "input: bad header numbers");
          goto fail;
        }
      if (have_pax_size)
        size = pax_size;
      if (path[0] == '\0')
        {
          char name[101], prefix[156];
          memcpy (name, hdr, 100);
          name[100] = '\0';
          memcpy (prefix, hdr + 345, 155);
          prefix[155] = '\0';
          if (prefix[0])
            snprintf (path, sizeof path, "%s/%s", prefix, name);
          else
            snprintf (path, sizeof path, "%s", name);
        }
      if (link[0] == '\0')
        {
          memcpy (link, hdr + 157, 100);
          link[100] = '\0';
        }

      if (strcmp (path, PROTO_CONTROL_PATH) == 0)
        {
          if (type != '0' && type != '\0')
            goto badtype;
          if (size > AGENT_MAX_CONTROL || have_control)
            {
              snprintf (msg, msgsz, "input: control file too large or repeated");
              goto fail;
            }
          *control = malloc (size + 1);
          if (*control == NULL)
            {
              snprintf (msg, msgsz, "input: out of memory");
              goto fail;
            }
          {
            uint64_t padded = (size + BLK - 1) / BLK * BLK;
            char *tmp = malloc (padded ? padded : 1);
            if (tmp == NULL || in_read (&r, tmp, padded) < 0)
              {
                free (tmp);
                snprintf (msg, msgsz, "input: truncated control file");
                goto fail;
              }
            memcpy (*control, tmp, size);
            free (tmp);
          }
          (*control)[size] = '\0';
          *control_len = size;
          have_control = true;
          continue;
        }

      {
        int rootfd;
        char *rel;
        const char *leaf;
        int pfd, ofd;

        /* The source is not here: it is on the scratch disk, written by the
         * runner (docs/architecture.md, "Disks"); a `src/` entry is
         * unexpected like any other. */
        if (strcmp (path, ".buildvm/") == 0 || strcmp (path, ".buildvm") == 0
            || strcmp (path, ".buildvm/secrets") == 0 || strcmp (path, ".buildvm/secrets/") == 0)
          {
            /* the roots exist already */
            if (type != '5')
              goto badtype;
            continue;
          }
        else if (strncmp (path, PROTO_SECRETS_DIR "/", sizeof PROTO_SECRETS_DIR) == 0)
          {
            rootfd = secfd;
            rel = path + 17;
            if (strchr (rel, '/') != NULL || (type != '0' && type != '\0'))
              goto badtype;
          }
        else
          {
            snprintf (msg, msgsz, "input: unexpected entry `%.200s`", path);
            goto fail;
          }
        if (*rel == '\0' || !safe_rel (rel))
          {
            snprintf (msg, msgsz, "input: unsafe path `%.200s`", path);
            goto fail;
          }
        pfd = open_parent (rootfd, rel, &leaf);
        if (pfd < 0)
          {
            snprintf (msg, msgsz, "input: parent of `%.200s`: %s", path, strerror (errno));
            goto fail;
          }
        switch (type)
          {
          case '0':
          case '\0':
            {
              mode_t m = (mode & 0100) ? 0755 : 0644;
              if (rootfd == secfd)
                m = 0400;
              ofd = openat (pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
              if (ofd < 0 || fchown (ofd, AGENT_BUILD_UID, AGENT_BUILD_GID) < 0
                  || fchmod (ofd, m) < 0 || copy_data (&r, ofd, size) < 0)
                {
                  snprintf (msg, msgsz, "input: write `%.200s`: %s", path, strerror (errno));
                  if (ofd >= 0)
                    close (ofd);
                  close (pfd);
                  goto fail;
                }
              if (close (ofd) < 0)
                {
                  snprintf (msg, msgsz, "input: close `%.200s`: %s", path, strerror (errno));
                  close (pfd);
                  goto fail;
                }
              break;
            }
          case '5':
            if (mkdirat (pfd, leaf, 0755) < 0 && errno != EEXIST)
              {
                snprintf (msg, msgsz, "input: mkdir `%.200s`: %s", path, strerror (errno));
                close (pfd);
                goto fail;
              }
            if (fchownat (pfd, leaf, AGENT_BUILD_UID, AGENT_BUILD_GID, AT_SYMLINK_NOFOLLOW) < 0)
              {
                snprintf (msg, msgsz, "input: chown `%.200s`: %s", path, strerror (errno));
                close (pfd);
                goto fail;
              }
            if (skip (&r, 0) < 0)
              {
                close (pfd);
                goto trunc;
              }
            break;
          case '2':
            if (symlinkat (link, pfd, leaf) < 0
                || fchownat (pfd, leaf, AGENT_BUILD_UID, AGENT_BUILD_GID, AT_SYMLINK_NOFOLLOW) < 0)
              {
                snprintf (msg, msgsz, "input: symlink `%.200s`: %s", path, strerror (errno));
                close (pfd);
                goto fail;
              }
            break;
          default: close (pfd); goto badtype;
          }
        close (pfd);
      }
    }
  close (secfd);
  if (!have_control)
    {
      snprintf (msg, msgsz, "input: no `.buildvm/job` control file");
      return -1;
    }
  return 0;

badtype:
  snprintf (msg, msgsz, "input: unsupported entry type `%c` for `%.200s`", type, path);
  goto fail;
trunc:
  snprintf (msg, msgsz, "input: truncated tar stream at `%.200s`", path);
fail:
  close (secfd);
  free (*control);
  *control = NULL;
  return -1;
}
