/* gitsrc.h - the checkout phase: fetch one exact commit into a per-app bare
 * mirror and export its tree straight from the object database into a tar
 *
 * No working tree is ever written on the host: gitsrc_export() reads blobs
 * from the odb and hands them to an already-open libarchive writer, so a
 * hostile tree (a `.git` in disguise, `..`, a symlink pointing at /etc) never
 * touches the host file system. Symlinks are stored as symlinks with their
 * target verbatim; only the guest ever resolves them, inside the VM.
 *
 * One mirror per app, <cache_dir>/<app>.git, guarded by an flock on
 * <cache_dir>/<app>.lock held from gitsrc_fetch() until gitsrc_repo_free():
 * two jobs of the same app take turns, different apps never share a mirror.
 *
 * libgit2 is set up once per process (gitsrc_global_init, called by every
 * entry point): the system/global/XDG git config is not read (its search
 * paths are emptied, so `url.*.insteadOf`, `http.proxy`, credential helpers
 * and a global excludes file of whoever runs buildvm do not apply).
 */
#ifndef BUILDVM_GITSRC_H
#define BUILDVM_GITSRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

struct archive;
struct gitsrc_repo;
struct netaddr_allow;

#define GITSRC_OID_HEX 40
#define GITSRC_MAX_URL 2048
#define GITSRC_MAX_SYMLINK 4095 /* PATH_MAX - 1: what the guest can create */

struct gitsrc_limits
{
  uint64_t max_entries;     /* tree entries visited (files, dirs, links, submodules) */
  uint64_t max_bytes;       /* total file and symlink-target bytes exported */
  uint64_t max_file_bytes;  /* one file */
  size_t max_path;          /* bytes of one archive path, prefix included */
  uint64_t max_fetch_bytes; /* bytes received by one fetch (pack data) */
  int64_t deadline_ms;      /* absolute, on the now_ms() clock; 0 = none */
  /* http(s) URLs: the operator's exceptions to the address rules (netaddr.h,
   * runner.json `checkout.allow_addresses`); NULL: none, so a repository
   * on loopback, RFC 1918 or link-local space is refused */
  const struct netaddr_allow *allow_addresses;
};

#define GITSRC_GIB ((uint64_t) 1 << 30)
#define GITSRC_LIMITS_INIT                                                                        \
  {                                                                                               \
    .max_entries = 100000, .max_bytes = 2 * GITSRC_GIB, .max_file_bytes = GITSRC_GIB,             \
    .max_path = 4096, .max_fetch_bytes = 4 * GITSRC_GIB, .deadline_ms = 0,                        \
    .allow_addresses = NULL                                                                       \
  }

struct gitsrc_stats
{
  uint64_t entries; /* archive entries written: files + dirs + symlinks */
  uint64_t files, dirs, symlinks;
  uint64_t skipped; /* gitlinks (submodules), nested repositories, special files */
  uint64_t bytes;   /* file data and symlink targets */
  uint64_t fetch_objects, fetch_bytes; /* received by the fetch (0 when not fetched) */
  int64_t fetch_ms, export_ms;
  bool fetched; /* false when the mirror already had the commit */
  /* the fetch left too many packs: the mirror was repacked (gitsrc.c) */
  bool repacked;
  size_t repacked_packs, pruned_refs; /* packs before the repack, refs it dropped */
  int64_t repack_ms;
  char repack_error[256]; /* "" or why a repack failed (the job goes on) */
};

/* In every function below `lim` may be NULL (GITSRC_LIMITS_INIT) and so may
 * `stats`. gitsrc_fetch() fills the fetch_* fields and `fetched`,
 * the exports every other field. */

/* Set libgit2 up once (thread-safe). Every function below calls it; callers
 * only need it to fail early. */
int gitsrc_global_init (bvm_error_t *err);

/* Open or create the bare mirror <cache_dir>/<app>.git and lock it, then make
 * sure `commit` is in it and, with a `ref`, on that ref: the ref's tip or
 * one of its ancestors (else BVM_E_INVALID, "commit X is not on `ref` (its
 * tip is Y)"). `app` must match ^[a-z0-9][a-z0-9-]{0,62}$;
 * `commit` must be 40 lowercase hex digits (never a ref or an expression);
 * `ref` is a full ref name (`refs/heads/main`, `refs/tags/v1`) or NULL; `url`
 * is file:///abs, /abs, http:// or https:// without credentials.
 *
 * A commit already in the mirror's odb and on the mirror's copy of `ref` is
 * used without touching the network. Otherwise `ref` is fetched
 * incrementally into the mirror (the mirror's refs are the "haves"); without
 * a ref (internal callers only: every job request has one), all heads and
 * tags, and any commit they reach is accepted.
 * A mirror recorded for another URL is discarded and rebuilt. The fetch
 * runs in a child process killed at lim->deadline_ms, whatever the transport
 * is blocked in (a mirror such a fetch wrote to is discarded). The caller
 * must be single-threaded (the child goes on using libgit2). Errors:
 * An http(s) URL's host is resolved once by netaddr_resolve and every
 * answer checked as the egress broker checks a build's connections (every
 * IP spelling is an address; loopback, RFC 1918, link-local and the rest
 * are refused unless lim->allow_addresses holds them); the fetch connects
 * to the checked address only. A refused host is BVM_E_DENIED. Errors:
 * BVM_E_INVALID for bad arguments and an unreachable commit, BVM_E_NETWORK
 * for transfer failures, BVM_E_TIMEOUT past lim->deadline_ms (also while
 * waiting for the lock; without a deadline both are unbounded), BVM_E_LIMIT
 * past lim->max_fetch_bytes or out of memory. */
int gitsrc_fetch (struct gitsrc_repo **out, const char *cache_dir, const char *app,
                  const char *url, const char *ref, const char *commit,
                  const struct gitsrc_limits *lim, struct gitsrc_stats *stats, bvm_error_t *err);

/* Open a local repository (`dir` is the top of its working tree or a bare
 * repository) for gitsrc_export(), without a lock: dry-run of committed HEAD. */
int gitsrc_open_local (struct gitsrc_repo **out, const char *dir, bvm_error_t *err);

/* Write the tree of `commit` (40 hex, must be in `repo`) into `w` with every
 * path under `prefix` ("" or relative, ending in '/', e.g. "src/"; its
 * directories are written too). Dirs 0755, files 0644/0755, symlinks with the
 * target verbatim, uid/gid 0, mtime = committer time; gitlinks skipped and
 * counted. Every name is checked before anything is written for it (and
 * duplicate names in one tree are refused): BVM_E_INVALID naming the path.
 * Caps: BVM_E_LIMIT; deadline: BVM_E_TIMEOUT. On error the archive holds a
 * partial tree: the caller discards it. */
int gitsrc_export (struct archive *w, struct gitsrc_repo *repo, const char *commit,
                   const char *prefix, const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                   bvm_error_t *err);

/* Where an export goes: the tar stream above (gitsrc_export), or any other
 * writer of a tree (srcfs.h: the source file system image). The exporter
 * calls `entry` once per directory, file and symlink, parents before their
 * contents, every name already checked; then `data` for a file's bytes, in
 * order, until `size` bytes were given. `path` is prefix + relative path.
 * Each returns 0 or a negative value with `err` set. */
struct gitsrc_sink_ops
{
  int (*entry) (void *ctx, const char *path, mode_t type, mode_t perm, uint64_t size,
                const char *target, int64_t mtime, bvm_error_t *err);
  int (*data) (void *ctx, const char *path, const void *data, size_t len, bvm_error_t *err);
};

struct gitsrc_sink
{
  const struct gitsrc_sink_ops *ops;
  void *ctx;
};

/* gitsrc_export() into any sink; same checks, caps and errors. */
int gitsrc_export_to (const struct gitsrc_sink *sink, struct gitsrc_repo *repo, const char *commit,
                      const char *prefix, const struct gitsrc_limits *lim,
                      struct gitsrc_stats *stats, bvm_error_t *err);

/* Releases the mirror lock. NULL is fine. */
void gitsrc_repo_free (struct gitsrc_repo *repo);

/* One path component from a tree: 0 if it may be written, else BVM_E_INVALID.
 * Refuses "", ".", "..", '/' or NUL inside, every spelling of `.git` that git
 * or libgit2 guard against (any case; trailing dots/spaces; `.git:stream`,
 * `.git\x`; NTFS short names `git~1`; HFS+ ignorable code points such as
 * U+200C anywhere in it) and, when `symlink`, every spelling of `.gitmodules`
 * (incl. `gitmod~1` and the `gi7eba~1` NTFS fallback). Exposed for fuzzing. */
int gitsrc_check_component (const char *name, size_t len, bool symlink, bvm_error_t *err);

/* dry-run: the commit HEAD points at in the repository whose working tree top
 * is `dir` (BVM_E_INVALID without commits). */
int gitsrc_head (char out[GITSRC_OID_HEX + 1], const char *dir, bvm_error_t *err);

/* dry-run --worktree: the working tree as it is, uncommitted changes
 * included: tracked files that still exist plus untracked files that are not
 * ignored (.gitignore, .git/info/exclude). Same output format, checks and
 * caps as gitsrc_export(); mtime is HEAD's committer time (0 without one).
 * Files are opened component by component with O_NOFOLLOW, so a symlinked
 * directory in the working tree is exported as a symlink, never followed. */
int gitsrc_export_worktree (struct archive *w, const char *dir, const char *prefix,
                            const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                            bvm_error_t *err);
int gitsrc_export_worktree_to (const struct gitsrc_sink *sink, const char *dir, const char *prefix,
                               const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                               bvm_error_t *err);

/* The committer time of `commit` (seconds since the epoch). */
int gitsrc_commit_time (int64_t *out, struct gitsrc_repo *repo, const char *commit,
                        bvm_error_t *err);

/* Read the regular file at `path` in the tree of `commit` (the build spec)
 * into a malloc'd NUL-terminated buffer of at most `max` bytes. A missing
 * path, a symlink or a directory is BVM_E_INVALID; over max, BVM_E_LIMIT,
 * decided from the object header before anything is inflated. */
int gitsrc_read_file (char **out, size_t *len, struct gitsrc_repo *repo, const char *commit,
                      const char *path, size_t max, bvm_error_t *err);

/* dry-run --worktree: whether `rel` (relative to the top of the working tree
 * `dir`) is ignored by its .gitignore rules. */
int gitsrc_path_ignored (bool *ignored, const char *dir, const char *rel, bvm_error_t *err);

/* dry-run without --worktree: how many paths of the working tree `dir`
 * differ from HEAD (staged, unstaged or untracked and not ignored; an
 * untracked directory counts once). Paths under `skip` (relative, ending in
 * '/', e.g. the dry-run's own output directory; NULL for none) are not
 * counted. */
int gitsrc_worktree_changes (size_t *n, const char *dir, const char *skip, bvm_error_t *err);

/* The commit `ref` names in the mirror, peeled (an annotated tag gives its
 * commit): the tip as of the last fetch of that ref. *found is false, and
 * `out` empty, when the mirror has no such ref. */
int gitsrc_ref_tip (char out[GITSRC_OID_HEX + 1], bool *found, struct gitsrc_repo *repo,
                    const char *ref, bvm_error_t *err);

/* *out: whether commit `newer` is `older` or a descendant of it (both 40 hex)
 * in the mirror's history. A commit the mirror does not have descends from
 * nothing and nothing descends from it (false, no error), unless both are
 * the same id. */
int gitsrc_descends (bool *out, struct gitsrc_repo *repo, const char *newer, const char *older,
                     bvm_error_t *err);

#endif
