/* srcfs.h - the source tree as the scratch disk's file system
 *
 * The guest used to unpack the source from a tar on its input disk onto its
 * scratch disk: every byte read, parsed and written again under emulation
 * (about a second for 24 MB in 2,000 files under TCG, docs/performance.md).
 * Instead, the runner makes the scratch disk's ext4 (guest_scratch_create)
 * and writes the tree into it with libext2fs, straight from the exporter
 * (gitsrc.h: a gitsrc_sink), so the build finds its source in place at
 * /work/src when the agent mounts the disk. Still no working tree on the
 * host: nothing is mounted, the image is a file the runner writes and never
 * reads back (the guest owns it once the VM starts, and it is removed after).
 *
 * The tree: directories 0755, files 0644 or 0755, symlinks with their target
 * verbatim, everything owned by the build user (uid/gid 1000), mtime as the
 * exporter gives it. Names are the exporter's, already checked (gitsrc.c);
 * this writer only refuses what ext4 cannot hold (a component over 255
 * bytes) and never follows a symlink to find a parent directory.
 */
#ifndef BUILDVM_SRCFS_H
#define BUILDVM_SRCFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "gitsrc.h"

/* the build user in the guest (buildvm-image/agent/agent.h) */
#define SRCFS_UID 1000
#define SRCFS_GID 1000

struct srcfs;

/* Make the scratch disk `path` (a new file: `mib` MiB, sparse, ext4 made by
 * mkfs.ext4) and open it to write the tree into. */
int srcfs_create (struct srcfs **out, const char *path, uint64_t mib, bvm_error_t *err);
/* The sink to hand gitsrc_export_to(): entries under the prefix it is given
 * ("src/") land at that path from the file system's root. */
const struct gitsrc_sink *srcfs_sink (struct srcfs *fs);
/* What the runner itself adds beside the tree (a Dockerfile job's bases/
 * layout): a directory, or a regular file from a buffer or from `size`
 * bytes read from `fd`, at `path` from the root (its parent must exist),
 * owned by root, mtime 0. Never a name the source tree has: the tree is
 * under "src/". */
int srcfs_add_dir (struct srcfs *fs, const char *path, mode_t mode, bvm_error_t *err);
int srcfs_add_file (struct srcfs *fs, const char *path, const void *data, size_t len, mode_t mode,
                    bvm_error_t *err);
int srcfs_add_file_from_fd (struct srcfs *fs, const char *path, int fd, uint64_t size, mode_t mode,
                            bvm_error_t *err);
/* Write the bitmaps, inode tables and superblock and close the file system.
 * Until this returns 0 the image is not valid. */
int srcfs_finish (struct srcfs *fs, bvm_error_t *err);
/* Closes without flushing when not finished; the caller removes the file. */
void srcfs_free (struct srcfs *fs);

#endif
