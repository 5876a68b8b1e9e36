/* srcfs.c - the source tree written into the scratch disk's ext4 (srcfs.h)
 *
 * mkfs.ext4 makes the file system (guest_scratch_create: the same one a job
 * without a source gets); libext2fs, the library e2fsprogs' own `mke2fs -d`
 * is built on, adds the tree. What mke2fs 1.47.0 cannot do is take the tree
 * from anything but a directory (tar input came in 1.47.1), and a directory
 * would be a working tree on the host: so the exporter's entries are written
 * here one by one, as create_inode.c in e2fsprogs writes a directory's.
 */
#include "srcfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "guest.h"
#include "util.h"

#define NAME_MAX_EXT4 255

struct srcfs
{
  ext2_filsys fs;
  struct gitsrc_sink sink;
  /* the file being written: its bytes come in data() calls */
  ext2_file_t file;
  uint64_t left;
  /* the parent directory of the last entry, to skip the lookup for its
   * siblings (the exporter writes a directory's entries together) */
  char *dir;
  size_t dir_len, dir_cap;
  ext2_ino_t dir_ino;
  /* the owner of what is written: the build user for the source tree,
   * root for what the runner adds (srcfs_add_*) */
  uint32_t uid, gid;
};

static int
e2fail (bvm_error_t *err, errcode_t code, const char *what, const char *path)
{
  char e[256];
  int c = BVM_E_IO;

  if (code == EXT2_ET_BLOCK_ALLOC_FAIL || code == EXT2_ET_INODE_ALLOC_FAIL)
    c = BVM_E_LIMIT;
  str_escape (e, sizeof e, path, strlen (path), 200);
  return bvm_error_code (err, c, 0, "%s `%s` in the source image: %s%s", what, e,
                         error_message (code),
                         c == BVM_E_LIMIT ? " (the source does not fit the job's disk_mib)" : "");
}

int
srcfs_create (struct srcfs **out, const char *path, uint64_t mib, bvm_error_t *err)
{
  struct srcfs *s;
  errcode_t r;

  *out = NULL;
  if (guest_scratch_create (path, mib, err) < 0)
    return -1;
  s = calloc (1, sizeof *s);
  if (s == NULL)
    return bvm_error (err, ENOMEM, "source image");
  r = ext2fs_open (path, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &s->fs);
  if (r == 0)
    r = ext2fs_read_bitmaps (s->fs);
  if (r != 0)
    {
      int ret = e2fail (err, r, "opening", path);
      srcfs_free (s);
      return ret;
    }
  s->dir_ino = EXT2_ROOT_INO; /* "" is the root */
  s->uid = SRCFS_UID;
  s->gid = SRCFS_GID;
  *out = s;
  return 0;
}

/* The inode of directory `path` (`len` bytes, no trailing slash), walked
 * from the root one component at a time: a symlink on the way is not a
 * directory, and is refused, never followed. */
static int
lookup_dir (ext2_ino_t *out, struct srcfs *s, const char *path, size_t len, bvm_error_t *err)
{
  char name[NAME_MAX_EXT4 + 1];
  ext2_ino_t ino = EXT2_ROOT_INO;

  for (size_t at = 0; at < len;)
    {
      size_t n = 0;
      struct ext2_inode inode;
      errcode_t r;
      while (at + n < len && path[at + n] != '/')
        n++;
      if (n == 0 || n > NAME_MAX_EXT4)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "bad directory in the source image");
      memcpy (name, path + at, n);
      name[n] = '\0';
      r = ext2fs_lookup (s->fs, ino, name, (int) n, NULL, &ino);
      if (r == 0)
        r = ext2fs_read_inode (s->fs, ino, &inode);
      if (r != 0)
        return e2fail (err, r, "looking up", name);
      if (!LINUX_S_ISDIR (inode.i_mode))
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "`%s` in the source image is not a directory", name);
      at += n + 1;
    }
  *out = ino;
  return 0;
}

static int
close_file (struct srcfs *s, const char *path, bvm_error_t *err)
{
  errcode_t r;

  if (s->file == NULL)
    return 0;
  r = ext2fs_file_close (s->file);
  s->file = NULL;
  if (r != 0)
    return e2fail (err, r, "writing", path);
  if (s->left != 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "a file of the source image is short");
  return 0;
}

/* Link `ino` as `name` into `dir`, growing the directory when it is full. */
static errcode_t
link_in (ext2_filsys fs, ext2_ino_t dir, const char *name, ext2_ino_t ino, int type)
{
  errcode_t r = ext2fs_link (fs, dir, name, ino, type);
  if (r == EXT2_ET_DIR_NO_SPACE)
    {
      r = ext2fs_expand_dir (fs, dir);
      if (r == 0)
        r = ext2fs_link (fs, dir, name, ino, type);
    }
  return r;
}

static void
own (const struct srcfs *s, struct ext2_inode *inode, int64_t mtime)
{
  inode->i_uid = (__u16) s->uid;
  inode->i_gid = (__u16) s->gid;
  ext2fs_set_i_uid_high (*inode, 0);
  ext2fs_set_i_gid_high (*inode, 0);
  inode->i_atime = inode->i_ctime = inode->i_mtime = (__u32) mtime;
}

static int
new_file (struct srcfs *s, ext2_ino_t dir, const char *name, const char *path, mode_t perm,
          uint64_t size, int64_t mtime, bvm_error_t *err)
{
  ext2_filsys fs = s->fs;
  struct ext2_inode inode;
  ext2_ino_t ino;
  errcode_t r;

  r = ext2fs_new_inode (fs, dir, LINUX_S_IFREG | (int) perm, NULL, &ino);
  if (r == 0)
    r = link_in (fs, dir, name, ino, EXT2_FT_REG_FILE);
  if (r != 0)
    return e2fail (err, r, "creating", path);
  ext2fs_inode_alloc_stats2 (fs, ino, +1, 0);
  memset (&inode, 0, sizeof inode);
  inode.i_mode = (__u16) (LINUX_S_IFREG | perm);
  inode.i_links_count = 1;
  own (s, &inode, mtime);
  r = ext2fs_inode_size_set (fs, &inode, (ext2_off64_t) size);
  if (r == 0 && ext2fs_has_feature_extents (fs->super))
    {
      ext2_extent_handle_t h;
      r = ext2fs_extent_open2 (fs, ino, &inode, &h); /* sets up the extent header */
      if (r == 0)
        ext2fs_extent_free (h);
    }
  if (r == 0)
    r = ext2fs_write_new_inode (fs, ino, &inode);
  if (r == 0 && size > 0)
    r = ext2fs_file_open (fs, ino, EXT2_FILE_WRITE, &s->file);
  if (r != 0)
    return e2fail (err, r, "creating", path);
  s->left = size;
  return 0;
}

static int
set_owner (const struct srcfs *s, ext2_ino_t ino, int64_t mtime, const char *path,
           bvm_error_t *err)
{
  ext2_filsys fs = s->fs;
  struct ext2_inode inode;
  errcode_t r = ext2fs_read_inode (fs, ino, &inode);
  if (r == 0)
    {
      own (s, &inode, mtime);
      r = ext2fs_write_inode (fs, ino, &inode);
    }
  return r == 0 ? 0 : e2fail (err, r, "creating", path);
}

static int
sink_entry (void *ctx, const char *path, mode_t type, mode_t perm, uint64_t size,
            const char *target, int64_t mtime, bvm_error_t *err)
{
  struct srcfs *s = ctx;
  ext2_filsys fs = s->fs;
  const char *slash = strrchr (path, '/');
  const char *name = slash ? slash + 1 : path;
  size_t dlen = slash ? (size_t) (slash - path) : 0;
  ext2_ino_t dir = 0, ino = 0;
  errcode_t r;

  if (close_file (s, path, err) < 0)
    return -1;
  if (strlen (name) > NAME_MAX_EXT4)
    {
      char e[256];
      str_escape (e, sizeof e, name, strlen (name), 200);
      return bvm_error_code (err, BVM_E_INVALID, 0, "name `%s` is longer than %d bytes", e,
                             NAME_MAX_EXT4);
    }
  if (dlen == s->dir_len && (dlen == 0 || memcmp (s->dir, path, dlen) == 0))
    dir = s->dir_ino;
  else
    {
      if (lookup_dir (&dir, s, path, dlen, err) < 0)
        return -1;
      if (dlen + 1 > s->dir_cap)
        {
          char *n = realloc (s->dir, dlen + 1);
          if (n == NULL)
            return bvm_error (err, ENOMEM, "source image");
          s->dir = n;
          s->dir_cap = dlen + 1;
        }
      memcpy (s->dir, path, dlen);
      s->dir[dlen] = '\0';
      s->dir_len = dlen;
      s->dir_ino = dir;
    }

  switch (type)
    {
    case S_IFDIR:
      r = ext2fs_mkdir (fs, dir, 0, name);
      if (r == EXT2_ET_DIR_NO_SPACE)
        {
          r = ext2fs_expand_dir (fs, dir);
          if (r == 0)
            r = ext2fs_mkdir (fs, dir, 0, name);
        }
      if (r == 0)
        r = ext2fs_lookup (fs, dir, name, (int) strlen (name), NULL, &ino);
      if (r != 0)
        return e2fail (err, r, "creating directory", path);
      return set_owner (s, ino, mtime, path, err);
    case S_IFLNK:
      if (target == NULL)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "a symlink without a target");
      r = ext2fs_symlink (fs, dir, 0, name, target);
      if (r == EXT2_ET_DIR_NO_SPACE)
        {
          r = ext2fs_expand_dir (fs, dir);
          if (r == 0)
            r = ext2fs_symlink (fs, dir, 0, name, target);
        }
      if (r == 0)
        r = ext2fs_lookup (fs, dir, name, (int) strlen (name), NULL, &ino);
      if (r != 0)
        return e2fail (err, r, "creating symlink", path);
      return set_owner (s, ino, mtime, path, err);
    case S_IFREG: return new_file (s, dir, name, path, perm & 07777, size, mtime, err);
    default:
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "entry type %o in the source image",
                             (unsigned) type);
    }
}

static int
sink_data (void *ctx, const char *path, const void *data, size_t len, bvm_error_t *err)
{
  struct srcfs *s = ctx;
  const char *p = data;

  if (s->file == NULL || len > s->left)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "more data than the file's size");
  while (len > 0)
    {
      unsigned int chunk = len > (1u << 30) ? 1u << 30 : (unsigned int) len, got = 0;
      errcode_t r = ext2fs_file_write (s->file, p, chunk, &got);
      if (r != 0)
        return e2fail (err, r, "writing", path);
      if (got == 0)
        return bvm_error_code (err, BVM_E_IO, 0,
                               "writing a file of the source image: no progress");
      p += got;
      len -= got;
      s->left -= got;
    }
  return 0;
}

static const struct gitsrc_sink_ops srcfs_ops = { sink_entry, sink_data };

const struct gitsrc_sink *
srcfs_sink (struct srcfs *s)
{
  s->sink.ops = &srcfs_ops;
  s->sink.ctx = s;
  return &s->sink;
}

/* --- what the runner adds: root's, never the build user's ------------------------------ */

int
srcfs_add_dir (struct srcfs *s, const char *path, mode_t mode, bvm_error_t *err)
{
  int ret;

  s->uid = s->gid = 0;
  ret = sink_entry (s, path, S_IFDIR, mode & 07777, 0, NULL, 0, err);
  s->uid = SRCFS_UID;
  s->gid = SRCFS_GID;
  return ret;
}

int
srcfs_add_file (struct srcfs *s, const char *path, const void *data, size_t len, mode_t mode,
                bvm_error_t *err)
{
  int ret;

  s->uid = s->gid = 0;
  ret = sink_entry (s, path, S_IFREG, mode & 07777, len, NULL, 0, err);
  s->uid = SRCFS_UID;
  s->gid = SRCFS_GID;
  if (ret == 0 && len > 0)
    ret = sink_data (s, path, data, len, err);
  if (ret == 0)
    ret = close_file (s, path, err);
  return ret;
}

int
srcfs_add_file_from_fd (struct srcfs *s, const char *path, int fd, uint64_t size, mode_t mode,
                        bvm_error_t *err)
{
  static const size_t chunk = 1u << 20;
  cleanup_free char *b = malloc (chunk);
  uint64_t left = size;
  int ret;

  if (b == NULL)
    return bvm_error (err, ENOMEM, "source image");
  s->uid = s->gid = 0;
  ret = sink_entry (s, path, S_IFREG, mode & 07777, size, NULL, 0, err);
  s->uid = SRCFS_UID;
  s->gid = SRCFS_GID;
  while (ret == 0 && left > 0)
    {
      ssize_t n = read (fd, b, left < chunk ? (size_t) left : chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "reading the file for `%s` in the scratch disk", path);
      if (n == 0)
        return bvm_error_code (err, BVM_E_IO, 0,
                               "the file for `%s` in the scratch disk is shorter than %llu bytes",
                               path, (unsigned long long) size);
      ret = sink_data (s, path, b, (size_t) n, err);
      left -= (uint64_t) n;
    }
  if (ret == 0)
    ret = close_file (s, path, err);
  return ret;
}

int
srcfs_finish (struct srcfs *s, bvm_error_t *err)
{
  errcode_t r;

  if (close_file (s, "", err) < 0)
    return -1;
  r = ext2fs_close_free (&s->fs);
  if (r != 0)
    return e2fail (err, r, "closing", "/");
  return 0;
}

void
srcfs_free (struct srcfs *s)
{
  if (s == NULL)
    return;
  if (s->file)
    ext2fs_file_close (s->file);
  if (s->fs)
    {
      /* not finished: nothing more is written, the caller removes the file */
      s->fs->flags &= ~EXT2_FLAG_DIRTY;
      ext2fs_free (s->fs);
    }
  free (s->dir);
  free (s);
}
