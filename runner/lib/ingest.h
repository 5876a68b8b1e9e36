/* ingest.h - read a build VM's output tar, treating it as hostile
 *
 * When a build finishes, the guest agent writes the declared outputs as a tar
 * stream to the VM's output disk. The guest is untrusted, so the stream may be
 * anything. ingest_run() reads it with libarchive (tar format only, no
 * compression filter), validates every entry against the rules below BEFORE
 * handing it to a sink, and streams the data in chunks. Nothing is ever
 * extracted with archive_write_disk: the sinks write into the image layer and
 * the artifact store, which stage everything and commit only on success.
 *
 * Entry names are `image/<path>` (the app's OCI image layer) or
 * `artifacts/<path>` (artifacts to keep), or in a Dockerfile job (issue 17)
 * `oci/<path>` (the image the builder exported, an OCI image layout, see
 * ocilayout.h) instead of `image/`: which roots a job may write is
 * ingest_limits.roots. Refused, with BVM_E_INVALID naming the entry
 * (printable-escaped) and the rule:
 *   - names that are absolute, have `.`, `..` or empty (`//`) components, a
 *     NUL, control characters (C0, DEL, C1) or invalid UTF-8, a component
 *     over 255 bytes or more than INGEST_MAX_DEPTH components, a trailing
 *     `/` on anything but a directory, or (under `image/`) a component
 *     starting with `.wh.` (OCI whiteouts);
 *   - names under no root the job may write, and the roots themselves as
 *     anything but a directory (a root directory entry is accepted and not
 *     delivered);
 *   - under `oci/`: anything but the names of a layout (ocilayout_name_kind:
 *     `oci-layout`, `index.json`, `blobs/sha256/<64 hex>` as regular files,
 *     `blobs` and `blobs/sha256` as directories), symlinks and hardlinks;
 *   - device nodes, FIFOs, sockets and unknown types; setuid, setgid and
 *     sticky bits (refused, not stripped); xattrs, ACLs, file flags, Mac
 *     metadata (file capabilities live in xattrs);
 *   - a second entry for a path already seen (it could swap a checked file
 *     for a symlink), a file where earlier entries implied a directory, an
 *     entry below a symlink or below a non-directory;
 *   - symlinks whose target is absolute, or that leave their root when
 *     resolved from the link's directory (checked lexically at once, and
 *     again at the end of the stream following the archive's own symlinks,
 *     so `a -> d/up/..` with `d/up -> ..` is caught); symlink loops; any
 *     symlink under `artifacts/` (the artifact store holds plain objects);
 *   - hardlinks that do not name an earlier regular file of the same root,
 *     and hardlinks or directories that carry data;
 *   - GNU sparse entries, data that does not match the header size, a
 *     truncated stream, a damaged header, a stream without the end-of-archive
 *     marker (two zero blocks) inside the region, and compressed streams.
 * Caps (BVM_E_LIMIT): entries, bytes per entry, total bytes, name length,
 * header bytes per entry (ustar + pax/GNU long-name records), memory kept for
 * names. A passed deadline gives BVM_E_TIMEOUT.
 *
 * Reads are bounded to the region [offset, offset+len) of the fd: libarchive
 * can never see a byte outside it. Bytes after the end-of-archive marker are
 * ignored.
 */
#ifndef BUILDVM_INGEST_H
#define BUILDVM_INGEST_H

#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define INGEST_PATH_MAX 4096 /* the largest max_path accepted */
#define INGEST_NAME_MAX 255  /* bytes per path component */
#define INGEST_MAX_DEPTH 256 /* components per path */

struct ingest_limits
{
  uint64_t max_entries;     /* tar entries, and also paths (directories implied by
                               names count) */
  uint64_t max_entry_bytes; /* data bytes of one file */
  uint64_t max_total_bytes; /* data bytes of all files */
  uint64_t max_names_bytes; /* memory kept for duplicate and link checks: the
                               bytes of all path components and link targets */
  size_t max_path;          /* bytes of an entry name or link target, at most
                               INGEST_PATH_MAX */
  size_t max_header_bytes;  /* all header records of one entry, including pax
                               extended headers and GNU long names */
  int64_t deadline_ms;      /* now_ms() value after which ingest fails, 0 = none */
  unsigned roots;           /* the roots accepted (1u << enum ingest_kind), 0: image/
                               and artifacts/ (INGEST_ROOTS_STEPS) */
};

#define INGEST_ROOT(kind) (1u << (kind))
#define INGEST_ROOTS_STEPS (INGEST_ROOT (INGEST_IMAGE) | INGEST_ROOT (INGEST_ARTIFACT))
#define INGEST_ROOTS_DOCKERFILE (INGEST_ROOT (INGEST_OCI) | INGEST_ROOT (INGEST_ARTIFACT))

#define INGEST_LIMITS_INIT                                                                        \
  {                                                                                               \
    .max_entries = 100000, .max_entry_bytes = UINT64_C (1) << 30,                                 \
    .max_total_bytes = UINT64_C (4) << 30, .max_names_bytes = UINT64_C (32) << 20,                \
    .max_path = INGEST_PATH_MAX, .max_header_bytes = 64 * 1024, .deadline_ms = 0, .roots = 0,     \
  }

enum ingest_kind
{
  INGEST_IMAGE,    /* under `image/` */
  INGEST_ARTIFACT, /* under `artifacts/` */
  INGEST_OCI,      /* under `oci/`: a Dockerfile job's image, an OCI image layout */
};

/* One validated entry, valid until the sink's end() returns.
 *   type S_IFREG, link_target NULL:  a regular file; size bytes follow in data().
 *   type S_IFREG, link_target set:   a hardlink to link_target, an earlier regular
 *                                    file of the same root that was delivered with
 *                                    its data (a link to a link names the first
 *                                    file); size is 0 and no data() follows. The
 *                                    image sink can write a link entry, the
 *                                    artifact sink uses store_put_link().
 *   type S_IFDIR:                    a directory; size 0.
 *   type S_IFLNK:                    a symlink (image only); link_target is the
 *                                    relative target as stored; size 0. */
struct ingest_entry
{
  enum ingest_kind kind;
  const char *path; /* relative to its root: no leading `image/`, `artifacts/`, `oci/`,
                       no trailing `/`, never "", never absolute, no `.`, `..` or
                       empty components, valid UTF-8 without control characters */
  mode_t type;      /* S_IFREG, S_IFDIR or S_IFLNK */
  mode_t perm;      /* mode & 0777 (for a hardlink: its own header's, which a link
                       cannot apply; the target's was delivered with it) */
  uint64_t size;
  const char *link_target;
  int64_t mtime;
};

/* Each callback returns 0 or a negative value with err set; a failure stops
 * ingest (end() is not called for the failing entry). begin() and end() are
 * called for every delivered entry, data() only for regular files with data. */
struct ingest_sink
{
  void *opaque;
  int (*begin) (void *opaque, const struct ingest_entry *e, bvm_error_t *err);
  int (*data) (void *opaque, const void *buf, size_t len, bvm_error_t *err);
  int (*end) (void *opaque, bvm_error_t *err);
};

struct ingest_stats
{
  uint64_t entries; /* tar entries read, including skipped root directories */
  uint64_t files;   /* regular files delivered with data */
  uint64_t dirs;
  uint64_t symlinks;
  uint64_t hardlinks;
  uint64_t bytes;     /* file data delivered */
  uint64_t tar_bytes; /* bytes of the tar stream up to its end-of-archive marker */
};

/* Read the tar region [offset, offset+len) of fd and deliver every entry to
 * sink. Validation is all-or-nothing only from the caller's point of view:
 * entries are delivered as they pass, and a later entry (or the final symlink
 * check) can still fail the whole ingest, so the sinks must write into
 * temporary places and the caller commits only when this returns 0.
 * stats may be NULL. */
int ingest_run (int fd, uint64_t offset, uint64_t len, const struct ingest_limits *lim,
                const struct ingest_sink *sink, struct ingest_stats *stats, bvm_error_t *err);

/* Check one entry name as found in the tar (`image/...`, `artifacts/...` or
 * `oci/...`) against the name rules above, with max_path = INGEST_PATH_MAX. A trailing
 * `/` is accepted (the caller decides whether the entry is a directory).
 * Exposed for fuzzing. */
int ingest_check_path (const char *path, bvm_error_t *err);

#endif
