/* pipeline.h - one deploy request, from a commit to a pushed image
 *
 * A straight line of phases (nsjail's containProc style; run_phases in
 * pipeline.c), each timed and recorded:
 *
 *   role      mint the job's role from the policy template and boundary
 *   log       open the app's log stream (authorized)
 *   checkout  fetch the exact commit into the app's mirror, read buildvm.json
 *   plan      validate the spec, resolve resources, load the VM image,
 *             compute every destination from the job and authorize it
 *   secrets   read every secret the spec names, each asked of the role
 *   input     write the input disk: control file, source tree, secrets
 *   build     boot a fresh VM, run the steps, collect the outputs
 *   ingest    stream the hostile output tar into the layer and the store
 *   image     base image, layer, config, manifest (a spec with an image)
 *   push      blobs, config, manifest by digest (every write authorized)
 *   artifacts commit the staged artifacts and their index
 *   attest    the SBOM and the signed SLSA provenance (attest.h), written
 *             beside the record and attached to the image (every write
 *             authorized); before the tag, so a tagged image has them
 *             (artifacts only: the statement of the index, beside the record)
 *   tag       check the fencing token, then tag: the single commit point
 *
 * A dry run stops after ingest and image with `layout` (an OCI image layout
 * instead of the push), `artifacts` and `attest` (the statement and the
 * SBOM it would attach, unsigned, in the output directory). The terminal job record is written
 * durably after the phases, whatever they returned.
 *
 * Whatever happens, the VM is gone, the work directory is removed and a
 * record exists when pipeline_run() returns.
 */
#ifndef BUILDVM_PIPELINE_H
#define BUILDVM_PIPELINE_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>

#include "config.h"
#include "error.h"
#include "job.h"

struct secrets;
struct vmjob_warm;

struct pipeline_opts
{
  const struct runner_config *cfg;
  unsigned attempt; /* 1-based delivery attempt (the queue's fencing token) */
  const volatile sig_atomic_t *cancel;
  /* Called right before anything becomes visible (artifacts, tags): fails
   * with BVM_E_FENCED when a newer attempt owns the job. May be NULL. */
  int (*fence) (void *opaque, bvm_error_t *err);
  /* Called as each phase starts (the daemon heartbeats and journals here).
   * May be NULL. */
  void (*phase) (void *opaque, const char *name);
  /* Called with the VMM's pid once it runs (the daemon journals it). */
  void (*vm_started) (void *opaque, pid_t pid);
  void *opaque;
  /* Every console line also goes to this stream (e.g. stderr), or NULL. */
  FILE *echo;
  /* A pool VM for the build (serve.c), or NULL: a cold boot. The build
   * phase takes *warm (vmjob_opts.warm); the caller frees what is left
   * (vmjob_warm_free) when the job ended before its build. */
  struct vmjob_warm **warm;
  /* When the job was leased (now_ms), for the record's `first_step_ms`;
   * 0: the pipeline's start. */
  int64_t t_lease_ms;
  /* The per-app secret store for `secrets` in buildvm.json, or NULL. */
  struct secrets *secrets;

  /* dry-run: build a local directory instead of a fetched commit, and write
   * an OCI image layout and the artifacts under out_dir instead of pushing. */
  bool dry_run;
  const char *local_dir; /* the app's working copy */
  bool worktree;         /* its working tree as it is, not HEAD */
  const char *out_dir;
  /* dry-run: the plan, printed as it is decided ("allow"/"deny" per write) */
  json_t *plan; /* an array the pipeline appends to; may be NULL */
};

/* Run one job. *record (always set, even on failure) is the terminal job
 * record; the return value is 0 on success or the job's error. */
int pipeline_run (json_t **record, const struct job_request *job, const struct pipeline_opts *o,
                  bvm_error_t *err);

/* The largest input disk a job can need under cfg's limits (its source
 * tar, the control message and room for secrets): the size of the blank,
 * sparse input disk of a VM booted before its job (a pool VM, the early VM). */
uint64_t pipeline_input_max (const struct runner_config *cfg);

struct vmjob_opts;
struct vm_image;
/* The boot options of a VM booted before its job (vmjob_prewarm): cfg's
 * VM, jail and limits, the image and shape given. `cancel` stops its boot
 * and its wait. */
void pipeline_prewarm_opts (struct vmjob_opts *vo, const struct runner_config *cfg,
                            const struct vm_image *img, const char *name, unsigned vcpus,
                            unsigned memory_mib, uint64_t disk_mib,
                            const volatile sig_atomic_t *cancel);

/* Where a job's record lives: <state_dir>/jobs/<app>/<id>.json (ids are
 * unique per app only: keyed by the id alone, one app's record replaced
 * another's). */
int pipeline_record_path (char **out, const struct runner_config *cfg, const char *app,
                          const char *job_id, bvm_error_t *err);

/* A short summary of a record for humans (several lines). */
void pipeline_print_summary (FILE *out, const json_t *record);

#endif
