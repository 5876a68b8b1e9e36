/* fs.h - file system helpers that never follow a link they did not expect */
#ifndef BUILDVM_FS_H
#define BUILDVM_FS_H

#include <dirent.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* Read a whole regular file (O_NOFOLLOW is not used: config paths may be
 * links; callers that must not follow use fs_read_fd). Fails with BVM_E_LIMIT
 * when the file is larger than max. *out is NUL-terminated. */
int fs_read_file (char **out, size_t *len, const char *path, size_t max, bvm_error_t *err);
int fs_read_fd (char **out, size_t *len, int fd, size_t max, const char *what, bvm_error_t *err);

/* Read fd to its end into data, which holds size + 1 bytes, for a file
 * fstat'ed at `size` bytes; reads into no other memory (a secret leaves no
 * copy to wipe). 0 with *used set; 1 when the file grew past size while
 * being read; -1 with errno set (*used bytes of data were filled). */
int fs_read_sized (int fd, void *data, size_t size, size_t *used);

/* fdopendir(3), closing dirfd when it fails. */
DIR *fs_fdopendir (int dirfd);
/* The next entry of d other than `.` and `..`: NULL at the end (errno 0)
 * or on an error (errno set). */
struct dirent *fs_readdir (DIR *d);

/* Write `path` atomically: a temporary file in the same directory, fsync,
 * rename over `path`, fsync the directory. */
int fs_write_atomic (const char *path, const void *data, size_t len, mode_t mode,
                     bvm_error_t *err);

/* mkdir -p with the given mode for created components. */
int fs_mkdir_p (const char *path, mode_t mode, bvm_error_t *err);

/* rm -rf that never follows symlinks and never crosses into another file
 * system. A missing path is not an error. */
int fs_rm_rf (const char *path, bvm_error_t *err);

int fs_fsync_dir (const char *dir, bvm_error_t *err);

/* write(2) all of it, retrying on EINTR and short writes. */
int fs_write_all (int fd, const void *data, size_t len);

/* The directory containing the running executable (no trailing slash). */
int fs_exe_dir (char **out, bvm_error_t *err);

/* Refuse a file that group or others can read or write (credentials, keys). */
int fs_check_private (const char *path, bvm_error_t *err);

/* The same on the descriptor about to be read (checking by path could be
 * raced by swapping the file in between), and the file must also be owned by
 * us or root. `what` (or NULL) prefixes the path in errors ("master key");
 * *st gets the file's stat. */
struct stat;
int fs_check_private_fd (struct stat *st, int fd, const char *path, const char *what,
                         bvm_error_t *err);

#endif
