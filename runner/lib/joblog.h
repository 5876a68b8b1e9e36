/* joblog.h - a job's console stream: <log_dir>/apps/<app>/<job>.log
 *
 * The build's console output is untrusted text. Each line is written with
 * control characters (other than tab), C1 controls and invalid UTF-8 escaped
 * as `\xNN`, so printing a log cannot drive the reader's terminal. The file is
 * capped: past max_bytes one marker line
 *
 *   [buildvm: log truncated at N bytes; M more bytes (L lines) dropped]
 *
 * is written (padded with spaces to a fixed width, and rewritten in place with
 * the final counts at close) and everything else is dropped.
 *
 * Following a running log: the writer holds an exclusive flock(2) on the
 * .log file from joblog_open() until joblog_close() (or until it dies: the
 * kernel drops the lock). A reader that finds the lock free knows no more
 * bytes will come, reads to the end and stops; there is no in-band end marker
 * a build could print to stop a follower early. A finished log may be
 * compressed to one LZ4 frame in <job>.log.lz4 (written to a temporary name,
 * renamed into place, then the .log is removed; a follower keeps reading the
 * removed .log through its open descriptor).
 *
 * Ids are checked where they enter (a CLI argument is untrusted):
 *   job ids ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$, app ids ^[a-z0-9][a-z0-9-]{0,62}$.
 * Job ids are unique per host, so a reader finds a log by job id alone.
 * A job run again with the same id starts its log afresh.
 */
#ifndef BUILDVM_JOBLOG_H
#define BUILDVM_JOBLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "error.h"

#define JOBLOG_LINE_MAX (256 * 1024) /* longer lines are cut and marked */

struct joblog;

const char *joblog_job_id_problem (const char *job_id);

/* Create (or start afresh) the log of job_id for app. Directories are created
 * 0750, the file 0640. Fails if another writer holds the log. */
int joblog_open (struct joblog **out, const char *log_dir, const char *app, const char *job_id,
                 uint64_t max_bytes, bvm_error_t *err);

/* A hook to rewrite each line before it is escaped and written (secret
 * redaction). It appends the rewritten line to out (empty, capped at
 * 2 * JOBLOG_LINE_MAX) and returns 0, or fails the write. */
typedef int (*joblog_filter_fn) (void *opaque, const char *line, size_t len, struct buf *out,
                                 bvm_error_t *err);
void joblog_set_filter (struct joblog *l, joblog_filter_fn fn, void *opaque);

/* Append one line (without its newline: the writer adds it). Bytes past the
 * cap are counted, not written, and that is not an error. */
int joblog_write (struct joblog *l, const char *line, size_t len, bvm_error_t *err);

/* Finish the log: final marker counts, fsync, optionally compress to
 * <job>.log.lz4 (replacing the .log), then release the writer's lock. Always
 * frees l; on a compression failure the plain .log stays. */
int joblog_close (struct joblog *l, bool compress, bvm_error_t *err);

/* Decompress the LZ4 frame in fd (taken over) to out; what names it. */
int joblog_cat_lz4_fd (int fd, const char *what, FILE *out, bvm_error_t *err);

/* Encryption at rest: joblog_close seals the compressed log with key (the
 * app's, seal.h) into <job>.log.lz4.seal, with the context
 * "logs/apps/<app>/<job>.log", instead of writing <job>.log.lz4. The live
 * .log stays plain while the job runs (so `logs -f` works) and is removed
 * once the sealed file is durable. key is copied. */
void joblog_set_seal (struct joblog *l, const unsigned char key[32]);
/* The seal context of the log (for the fleet copy in the artifact store). */
const char *joblog__context (const struct joblog *l);

/* The key of an app, for reading sealed logs: 0 or a negative error. */
typedef int (*joblog_key_fn) (void *opaque, const char *app, unsigned char key[32],
                              bvm_error_t *err);

/* Print the log of job_id (plain, .lz4 or .lz4.seal) to out. follow: keep
 * printing while the writer holds the log, and return once it has closed it
 * (or died). A sealed log needs key_fn (NULL: refused with a clear error);
 * it is printed only once all of it has authenticated. */
int joblog_cat (const char *log_dir, const char *job_id, FILE *out, bool follow,
                joblog_key_fn key_fn, void *opaque, bvm_error_t *err);

#endif
