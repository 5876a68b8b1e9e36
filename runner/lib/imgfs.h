/* imgfs.h - the file tree of an image's layers, to check that it can start
 *
 * An image whose entrypoint is not in it pushes fine and fails only when
 * someone runs it (`exec: "/bin/httpd": stat /bin/httpd: no such file or
 * directory`, or `exec /app/darkhttpd: no such file or directory` for a
 * dynamically linked binary on a base without its C library). Before the
 * push, the pipeline lays the image's layers into an imgfs - the base's,
 * bottom first, then the app's - and asks whether the program the image
 * runs resolves in it the way an OCI runtime resolves it: argv[0] through
 * the image's PATH (or the working directory for a relative path), every
 * symlink followed inside the image, and then what the kernel needs to
 * exec it - a regular file with an execute bit, an ELF binary's
 * interpreter (PT_INTERP), a script's `#!` interpreter.
 *
 * Only names, types, modes, link targets and the first bytes of executable
 * files are kept; whiteouts (`.wh.NAME`, `.wh..wh..opq`) hide what the
 * layers below have, as the OCI image spec says. Every count and size is
 * capped: a layer past them is an error, not a larger allocation.
 */
#ifndef BUILDVM_IMGFS_H
#define BUILDVM_IMGFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define IMGFS_MAX_ENTRIES (1u << 20) /* files, directories and links of all layers */
#define IMGFS_MAX_NAMES (256u << 20) /* bytes of their paths and link targets */
#define IMGFS_HEAD_MAX (64u * 1024)  /* bytes read of an executable to find its interpreter */
#define IMGFS_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct imgfs;

int imgfs_new (struct imgfs **out, bvm_error_t *err);
void imgfs_free (struct imgfs *fs);

/* Start the next layer: entries added after this are above those before. */
void imgfs_next_layer (struct imgfs *fs);

/* One entry of the current layer, as a tar names it (`./usr/bin/node`,
 * `usr/bin/`, `app/.wh.old`). `type` is S_IFREG, S_IFDIR or S_IFLNK, or 0
 * for a hard link to `link` (a path of the image); `link` is a symlink's
 * target otherwise. `head` is the first bytes of a regular file (NULL when
 * not read). A whiteout hides what it names in the layers below. */
int imgfs_add (struct imgfs *fs, const char *path, mode_t type, mode_t perm, const char *link,
               const void *head, size_t head_len, bvm_error_t *err);

/* Every entry of the tar layer at `path` (gzip, zstd or uncompressed), as
 * a new layer; `what` names it in errors. */
int imgfs_add_layer (struct imgfs *fs, const char *path, const char *what, bvm_error_t *err);

/* Can the image start `argv0`? `path_env` is the PATH of the image's
 * environment (NULL: IMGFS_DEFAULT_PATH, what runtimes use), `workdir` its
 * working directory (NULL: /). 0 when it can; 1 when it cannot, with the
 * reason in `why` (one line naming the missing path) and what to do about
 * it in `fix`. */
int imgfs_check_start (const struct imgfs *fs, const char *argv0, const char *path_env,
                       const char *workdir, char *why, size_t why_size, const char **fix);

/* The interpreter an ELF file's program headers name (PT_INTERP), from its
 * first `len` bytes: 1 with it in `out`, 0 when it has none (static, or not
 * an ELF file), -1 when the headers lie outside `len` bytes or are bad. */
int imgfs_elf_interp (char *out, size_t size, const void *head, size_t len);

/* The interpreter of a `#!` script's first line: 1 with it in `out`, 0
 * when `head` does not start with `#!`. */
int imgfs_shebang (char *out, size_t size, const void *head, size_t len);

#endif
