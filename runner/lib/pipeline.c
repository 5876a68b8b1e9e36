/* pipeline.c - one deploy request end to end, see pipeline.h */
/* Over 1,500 lines: every phase of the straight line lives here, each a
 * short function over the const plan (plan.c) and the modules it calls; the
 * layer sink is in oci.c, the egress broker in egress.c. Splitting the phases
 * across files would hide the one straight line this file exists to show. */
#include "pipeline.h"
#include "attest.h"
#include "attest_oci.h"
#include "digest.h"
#include "dockerfile.h"
#include "egress.h"
#include "fault.h"
#include "fs.h"
#include "gitsrc.h"
#include "guest.h"
#include "image.h"
#include "imgfs.h"
#include "ingest.h"
#include "joblog.h"
#include "jsonx.h"
#include "log.h"
#include "oci.h"
#include "ocilayout.h"
#include "plan.h"
#include "policy.h"
#include "redact.h"
#include "registry.h"
#include "regtoken.h"
#include "sbom.h"
#include "seal.h"
#include "secrets.h"
#include "spec.h"
#include "srcfs.h"
#include "steptail.h"
#include "store.h"
#include "util.h"
#include "vmjob.h"
#include "workdir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SPEC_FILE "buildvm.json"
#define SPEC_FILE_MAX (256 * 1024)
#define DOCKERFILE_DEFAULT "Dockerfile" /* at the root, when there is no buildvm.json */
#define ROLE_MARGIN_S 1800              /* checkout, ingest and push on top of boot + build */

/* Each phase's own deadline, on top of the job's (serve.job_seconds). */
#define INPUT_DEADLINE_MS (10 * 60 * 1000)    /* exporting the tree to the input disk */
#define INGEST_DEADLINE_MS (15 * 60 * 1000)   /* reading the output disk back */
#define REGISTRY_DEADLINE_MS (30 * 60 * 1000) /* every registry call of the job together */
#define TAG_LOCK_DEADLINE_MS (15 * 60 * 1000) /* the mirror lock around the tag checks */

/* The agent's share of the log: it stops forwarding LOG_AGENT_MARGIN below
 * the log's cap (half the cap when that is under LOG_AGENT_MIN), so its
 * marker line and the runner's notes after the build still fit. */
#define LOG_AGENT_MIN (256u << 10)
#define LOG_AGENT_MARGIN (64u << 10)
#define CONSOLE_MARGIN (64 * 1024)   /* the VMM's console on top of the build's log */
#define ERROR_REDACT_MAX (64 * 1024) /* a job's error message, redacted */

/* A Dockerfile job's base image (issue 17): a FROM line (or COPY --from of
 * an image) resolved to the runner's registry, pulled before the build. */
struct run_base
{
  char *from;       /* as the Dockerfile names it, ARGs substituted */
  char *name;       /* normalized (docker.io/library/node:18): tagged so in the guest */
  char *repository; /* in the runner's registry, after dockerfile.from_map */
  char *reference;  /* the tag or digest asked for */
  char digest[DIGEST_STR_LEN + 1]; /* its manifest's, recorded */
  struct oci_manifest *manifest;   /* an image manifest (linux/amd64) */
  char *manifest_json;             /* its bytes, as pulled (digest above) */
  size_t manifest_len;
  char *config; /* its config's JSON text */
  size_t config_len;
  char **layer_paths; /* layer j's blob in the work directory (base_blob_path), checked */
};

/* An early VM's shape: profile and resources */
struct early_shape
{
  char profile[64];
  uint64_t vcpus, memory_mib, disk_mib;
};

struct run
{
  const struct pipeline_opts *o;
  const struct runner_config *cfg;
  const struct job_request *job;
  json_t *record;
  json_t *phases;
  int64_t t0;
  const char *phase;
  int64_t phase_t0;
  bool denied;       /* dry-run: a planned write was denied */
  bool base_skipped; /* dry-run: the role denies pulling the base image */

  struct policy *tmpl, *boundary;
  struct role *role;
  struct joblog *log;
  char log_name[192]; /* the job id, plus ".attempt<N>" after the first */
  bvm_error_t log_err;
  struct gitsrc_repo *repo;
  char commit[GITSRC_OID_HEX + 1];
  int64_t commit_time;
  struct build_spec *spec;
  struct job_plan plan_store;  /* filled by phase_plan */
  const struct job_plan *plan; /* the same, const once the plan phase ends */

  /* secrets: read after the plan, written to the input disk, then wiped */
  struct secrets *store_secrets;             /* opened here when o->secrets is NULL */
  unsigned char seal_key[SECRETS_KEY_BYTES]; /* the app's, for encryption at rest */
  bool have_seal_key;
  struct secret_value **secret_vals;
  size_t n_secret_vals;
  struct redactor *redact;
  struct buf console_line[2]; /* the pieces of a long console line, per stream */
  struct steptail tail;       /* the last lines of the step that ran last */

  struct workdir *wd;
  /* the early VM (phase_boot): booted as the job starts, taken by the build
   * when the job fits it; its own work directory and image */
  struct workdir *early_wd;
  struct vm_image *early_img;
  struct vmjob_warm *early;
  struct vmjob_opts early_vo;    /* its boot options: the warm VM points at them */
  bool early_started;            /* it was booted for this job */
  char early_note[160];          /* why the build did not run in it */
  int64_t early_boot_ms;         /* its boot, start to agent */
  int64_t early_wait_ms;         /* what of it the build phase waited for */
  const char *early_shape;       /* whose shape it has: "defaults" or "last job" */
  struct early_shape last_shape; /* the app's, as read (last_shape_known) */
  bool last_shape_known;
  char *input_path;
  char *scratch_path; /* the scratch disk with the source tree (srcfs.h) */
  struct vmjob_result vm;
  int64_t t_first_step; /* the agent's first step line (now_ms), or 0 */
  /* egress: the broker's thread logs too, so console lines take this lock */
  pthread_mutex_t console_lock;
  struct role *egress_role;
  struct egress_opts egress;

  /* ingest state */
  struct oci_layer *layer;
  char *layer_path;
  char *to_rel; /* image.to without its leading '/', "" for "/" */
  struct store *store;
  struct store_txn *txn;
  enum ingest_kind cur_kind;
  bool cur_is_file;
  bool cur_in_store;
  uint64_t artifacts_bytes, artifacts_count;

  /* image state */
  struct registry *reg;
  char *base_config;
  size_t base_config_len;
  struct oci_manifest *base_manifest;
  struct run_base *bases; /* a Dockerfile job's, from phase_base */
  size_t n_bases;
  char *config_json;
  size_t config_len;
  struct oci_descriptor config_desc;
  struct oci_descriptor layer_desc;
  char diff_id[DIGEST_STR_LEN + 1];
  char *manifest_json;
  size_t manifest_len;
  char manifest_digest[DIGEST_STR_LEN + 1];

  /* attestation state: all of it the runner's own view of the job */
  char spec_digest[DIGEST_STR_LEN + 1]; /* buildvm.json's bytes at the commit */
  char base_digest[DIGEST_STR_LEN + 1]; /* the base image's manifest */
  char started_at[40];
  struct sbom *sbom;
  struct digest_ctx file_digest; /* the layer file being read, for the SBOM */
  bool file_hashing;
  char *file_path;
  uint64_t file_size;
  struct store_summary art_sum;
  bool have_art_sum;

  /* a Dockerfile job (issue 17): checkout, plan, base, input */
  const char *frontend_why; /* why this frontend: the plan's note and the record */
  char *dockerfile_text;    /* the Dockerfile, read from the commit */
  size_t dockerfile_len;
  /* a Dockerfile job's image (issue 17): the builder's OCI layout as
   * received (ocilayout.h), then verified into the layers the push takes */
  struct ocilayout *oci;
  struct ocilayout_image df;
  bool have_df;
};

/* --- small helpers --------------------------------------------------------- */

static void
jset (json_t *obj, const char *key, json_t *val)
{
  if (val != NULL)
    json_object_set_new (obj, key, val);
}

static json_t *
jstr_or_null (const char *s)
{
  return s ? json_string (s) : json_null ();
}

/* A progress line in the job's own log: what the runner did, for the app's
 * developers. Errors writing the log are kept, not fatal here. */
static void note (struct run *r, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
note (struct run *r, const char *fmt, ...)
{
  char line[1024];
  va_list ap;
  int n = snprintf (line, sizeof line, "[buildvm] ");
  va_start (ap, fmt);
  vsnprintf (line + n, sizeof line - (size_t) n, fmt, ap);
  va_end (ap);
  if (r->o->echo)
    {
      fprintf (r->o->echo, "%s\n", line);
      fflush (r->o->echo);
    }
  if (r->log && r->log_err == NULL)
    joblog_write (r->log, line, strlen (line), &r->log_err);
}

/* the build's steps as the guest numbers them: the spec's, or a
 * Dockerfile job's three (protocol.h) */
static unsigned
build_step_count (const struct run *r)
{
  return r->spec->dockerfile ? PROTO_DF_STEPS : (unsigned) r->spec->n_steps;
}

/* step IDX's name (from 1), "?" for a number the build does not have */
static const char *
build_step_name (const struct run *r, unsigned idx)
{
  static const char *const df[PROTO_DF_STEPS] = { PROTO_DF_STEP_1, PROTO_DF_STEP_2,
                                                  PROTO_DF_STEP_3 };
  if (idx < 1 || idx > build_step_count (r))
    return "?";
  return r->spec->dockerfile ? df[idx - 1] : r->spec->steps[idx - 1].name;
}

static void
emit_line (struct run *r, const char *line, size_t len)
{
  if (r->o->echo)
    {
      /* the guest's text: no escape sequence reaches the terminal */
      str_escape_fwrite (r->o->echo, line, len);
      fputc ('\n', r->o->echo);
    }
  if (r->log && r->log_err == NULL)
    joblog_write (r->log, line, len, &r->log_err);
}

/* A whole console line: to the log, and the agent's console (not the
 * VMM's) to the step's tail too. */
static void
console_emit (struct run *r, enum vm_stream stream, const char *line, size_t len)
{
  if (stream == VM_STREAM_CONSOLE)
    steptail_line (&r->tail, line, len);
  emit_line (r, line, len);
}

/* Console lines come redacted (vm.c), a long one in pieces: join them up to
 * a log line per stream, and mark where a longer one is split. The egress
 * broker's thread writes the log too: both go through console_lock. */
static void
on_console_locked (struct run *r, enum vm_stream stream, const char *line, size_t len, bool more)
{
  static const char cont[] = " [buildvm: line continues]";
  struct buf *b = &r->console_line[stream == VM_STREAM_STDERR];
  static const char first[] = "==> step 1/";

  /* the agent's line before the first step: the build's output can only
   * come after it, so the first such line is the agent's */
  if (r->t_first_step == 0 && stream == VM_STREAM_CONSOLE && b->len == 0 && len >= sizeof first - 1
      && memcmp (line, first, sizeof first - 1) == 0)
    r->t_first_step = now_ms ();

  if (!more && b->len == 0)
    {
      console_emit (r, stream, line, len);
      return;
    }
  if (b->len + len + sizeof cont > JOBLOG_LINE_MAX)
    {
      buf_adds (b, cont);
      console_emit (r, stream, buf_cstr (b), b->len);
      buf_reset (b);
    }
  buf_add (b, line, len);
  if (!more)
    {
      console_emit (r, stream, buf_cstr (b), b->len);
      buf_reset (b);
    }
}

static void
on_console (void *opaque, enum vm_stream stream, const char *line, size_t len, bool more)
{
  struct run *r = opaque;
  pthread_mutex_lock (&r->console_lock);
  on_console_locked (r, stream, line, len, more);
  pthread_mutex_unlock (&r->console_lock);
}

/* From the egress broker's thread: a host name is chosen by the build and
 * could carry a secret, so the line is redacted like the build's own output
 * (which vm.c redacts) before any sink sees it. */
static void
on_egress_log (void *opaque, const char *line)
{
  static const char withheld[] = "[buildvm] egress: a log line was withheld: the redactor failed";
  struct run *r = opaque;
  struct buf b = BUF_INIT (JOBLOG_LINE_MAX);
  bvm_error_t e = NULL;
  bool ok = redact_text (r->redact, &b, line, strlen (line), &e) == 0;

  bvm_error_free (&e);
  pthread_mutex_lock (&r->console_lock);
  if (ok)
    emit_line (r, buf_cstr (&b), b.len);
  else
    emit_line (r, withheld, sizeof withheld - 1);
  pthread_mutex_unlock (&r->console_lock);
  buf_dispose_wipe (&b);
}

static void
on_vm_started (void *opaque, pid_t pid)
{
  struct run *r = opaque;
  fault_point ("build");
  if (r->o->vm_started)
    r->o->vm_started (r->o->opaque, pid);
}

static void
phase_begin (struct run *r, const char *name)
{
  r->phase = name;
  r->phase_t0 = now_ms ();
  fault_point (name);
  if (r->o->phase)
    r->o->phase (r->o->opaque, name);
}

static void
phase_end (struct run *r)
{
  if (r->phase == NULL)
    return;
  jset (r->phases, r->phase, json_pack ("{s:I}", "ms", (json_int_t) (now_ms () - r->phase_t0)));
  r->phase = NULL;
}

static int
check_cancel (struct run *r, bvm_error_t *err)
{
  if (r->o->cancel && *r->o->cancel)
    return bvm_error_code (err, BVM_E_CANCELED, 0, "the job was canceled");
  return 0;
}

/* Ask the role first; a denied request is never sent. In dry-run the plan
 * records every decision, and a denial still fails the job. */
static int
authorize (struct run *r, const char *action, const char *resource, bvm_error_t *err)
{
  struct policy_decision d;

  role_decide (r->role, action, resource, NULL, &d);
  if (r->o->plan)
    json_array_append_new (r->o->plan, json_pack ("{s:s, s:s, s:s, s:s}", "action", action,
                                                  "resource", resource, "decision",
                                                  d.allowed ? "allow" : "deny", "why", d.why));
  if (d.allowed)
    return 0;
  if (r->o->dry_run)
    {
      /* the plan shows every decision; the job fails at the end */
      r->denied = true;
      note (r, "plan: DENY %s on %s (%s)", action, resource, d.why);
      return 1;
    }
  return role_authorize (r->role, action, resource, err);
}

static char *xasprintf_or_null (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static char *
xasprintf_or_null (const char *fmt, ...)
{
  va_list ap;
  char *s = NULL;
  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) < 0)
    s = NULL;
  va_end (ap);
  return s;
}

/* --- role and log ------------------------------------------------------------- */

static int
load_policy (struct policy **out, const char *which, bool boundary, bvm_error_t *err)
{
  if (which == NULL || strcmp (which, "builtin") == 0)
    return policy_load_builtin (out, boundary, err);
  return policy_load_file (out, which, err);
}

static int
phase_role (struct run *r, bvm_error_t *err)
{
  struct policy_vars vars = { r->job->app, r->job->commit, r->job->ref, r->job->id };
  /* the role expires with the job: the longest build the runner allows,
   * the boot, and a margin for checkout, ingest and push */
  int64_t expires = wall_s () + (int64_t) r->cfg->limits.max_build_seconds
                    + (int64_t) r->cfg->vm.boot_timeout + ROLE_MARGIN_S;
  int ret;

  if ((ret = load_policy (&r->tmpl, r->cfg->policies.role, false, err)) < 0
      || (ret = load_policy (&r->boundary, r->cfg->policies.boundary, true, err)) < 0)
    return bvm_error_wrap (err, "loading the role policies");
  ret = role_mint (&r->role, r->tmpl, r->boundary, &vars, expires, err);
  if (ret < 0)
    return bvm_error_wrap (err, "minting the job's role");
  jset (r->record, "role", role_to_json (r->role));
  return 0;
}

static int
phase_log (struct run *r, bvm_error_t *err)
{
  char res[512];
  int ret;

  snprintf (res, sizeof res, "logs:apps/%s/%s", r->job->app, r->job->id);
  ret = authorize (r, POLICY_ACTION_PUT_LOG_EVENTS, res, err);
  if (ret < 0)
    return ret;
  /* Each attempt has its own file, so a new attempt never waits on an older
   * one that was paused or fenced off while it still holds its log:
   * <job>.log for the first, <job>.attempt<N>.log after that. */
  if (r->o->attempt > 1)
    snprintf (r->log_name, sizeof r->log_name, "%s.attempt%u", r->job->id, r->o->attempt);
  else
    snprintf (r->log_name, sizeof r->log_name, "%s", r->job->id);
  ret = joblog_open (&r->log, r->cfg->log_dir, r->job->app, r->log_name,
                     r->cfg->limits.max_log_bytes, err);
  if (ret < 0)
    return bvm_error_wrap (err, "opening the job's log stream");
  {
    char *p = xasprintf_or_null ("%s/apps/%s/%s.log", r->cfg->log_dir, r->job->app, r->log_name);
    jset (r->record, "log", jstr_or_null (p));
    free (p);
  }
  note (r, "job %s: app %s, commit %s (%s), attempt %u", r->job->id, r->job->app, r->job->commit,
        r->job->ref, r->o->attempt);
  return 0;
}

/* --- checkout ------------------------------------------------------------------- */

/* The SBOM's packages: the lock files at the root of the commit's tree (of
 * the working tree in a worktree dry run), read by the runner before any
 * build runs, so nothing the build writes can change them. */
static int
read_lockfiles (struct run *r, bvm_error_t *err)
{
  int ret;

  if ((ret = sbom_new (&r->sbom, SBOM_COMPONENTS_MAX, err)) < 0)
    return ret;
  for (size_t i = 0; sbom_lockfiles[i]; i++)
    {
      cleanup_free char *text = NULL;
      size_t len = 0;

      if (r->o->dry_run && r->o->worktree)
        {
          char path[PATH_MAX];
          if (snprintf_checked (path, sizeof path, "%s/%s", r->o->local_dir, sbom_lockfiles[i])
              < 0)
            return bvm_error (err, ENAMETOOLONG, "lock file path");
          if (access (path, F_OK) < 0)
            continue;
          ret = fs_read_file (&text, &len, path, SBOM_LOCKFILE_MAX, err);
        }
      else
        ret = gitsrc_read_file (&text, &len, r->repo, r->commit, sbom_lockfiles[i],
                                SBOM_LOCKFILE_MAX, err);
      /* absent is the usual case; a link or a directory of that name is not
       * a lock file and is said so in the log; too large fails the job */
      if (ret < 0 && bvm_error_get_code (err) == BVM_E_INVALID)
        {
          if (strstr (bvm_error_msg (err), "has no `") == NULL)
            note (r, "sbom: `%s` not read: %s", sbom_lockfiles[i], bvm_error_msg (err));
          bvm_error_free (err);
          continue;
        }
      if (ret == 0)
        ret = sbom_add_lockfile (r->sbom, sbom_lockfiles[i], text, len, err);
      if (ret < 0)
        return bvm_error_wrap (err, "the SBOM");
    }
  return 0;
}

/* A file of the commit (of the working tree in a worktree dry run), at
 * most `max` bytes. */
static int
read_commit_file (struct run *r, char **out, size_t *len, const char *name, size_t max,
                  bvm_error_t *err)
{
  if (r->o->dry_run && r->o->worktree)
    {
      char path[PATH_MAX];
      int ret;
      if (snprintf_checked (path, sizeof path, "%s/%s", r->o->local_dir, name) < 0)
        return bvm_error (err, ENAMETOOLONG, "path of `%s`", name);
      ret = fs_read_file (out, len, path, max, err);
      if (ret < 0 && errno == ENOENT)
        return bvm_error_code (err, BVM_E_INVALID, 0, "the working tree has no `%s` at its root",
                               name);
      return ret;
    }
  return gitsrc_read_file (out, len, r->repo, r->commit, name, max, err);
}

/* read_commit_file's "there is no such file" (not a link, a directory or
 * one too large: those are the repository's mistakes, said as they are) */
static bool
is_absent (const bvm_error_t *err)
{
  return bvm_error_get_code (err) == BVM_E_INVALID && strstr (bvm_error_msg (err), "has no `")
         && strstr (bvm_error_msg (err), "at its root");
}

static int
phase_checkout (struct run *r, bvm_error_t *err)
{
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st = { 0 };
  cleanup_free char *spec_text = NULL;
  size_t spec_len = 0;
  int ret;

  lim.max_entries = r->cfg->limits.max_source_entries;
  lim.max_bytes = r->cfg->limits.max_source_bytes;
  lim.deadline_ms = now_ms () + (int64_t) r->cfg->limits.max_checkout_seconds * 1000;
  lim.allow_addresses = &r->cfg->checkout.allow_addresses;
  if (r->o->dry_run)
    {
      ret = gitsrc_open_local (&r->repo, r->o->local_dir, err);
      if (ret < 0)
        return ret;
      snprintf (r->commit, sizeof r->commit, "%s", r->job->commit);
    }
  else
    {
      ret = gitsrc_fetch (&r->repo, r->cfg->cache_dir, r->job->app, r->job->repo, r->job->ref,
                          r->job->commit, &lim, &st, err);
      if (ret < 0)
        return bvm_error_wrap (err, "fetching commit `%s` from `%s`", r->job->commit,
                               r->job->repo);
      snprintf (r->commit, sizeof r->commit, "%s", r->job->commit);
      note (r, "checkout: %s (%llu objects, %llu bytes received in %lld ms)",
            st.fetched ? "fetched" : "already in the mirror",
            (unsigned long long) st.fetch_objects, (unsigned long long) st.fetch_bytes,
            (long long) st.fetch_ms);
      if (st.repacked)
        note (r, "checkout: the mirror had %zu packs: repacked into one in %lld ms%s",
              st.repacked_packs, (long long) st.repack_ms,
              st.pruned_refs > 0 ? ", its other refs pruned" : "");
      if (st.repack_error[0])
        note (r, "checkout: repacking the mirror failed (its packs are kept): %s",
              st.repack_error);
      jset (r->record, "checkout",
            json_pack ("{s:b, s:I, s:I, s:b, s:I}", "fetched", st.fetched, "fetch_bytes",
                       (json_int_t) st.fetch_bytes, "fetch_ms", (json_int_t) st.fetch_ms,
                       "repacked", st.repacked, "repack_ms", (json_int_t) st.repack_ms));
    }
  ret = gitsrc_commit_time (&r->commit_time, r->repo, r->commit, err);
  if (ret < 0)
    return ret;

  ret = read_commit_file (r, &spec_text, &spec_len, SPEC_FILE, SPEC_FILE_MAX, err);
  if (ret < 0 && !is_absent (err))
    return bvm_error_wrap (err, "reading `%s`", SPEC_FILE);
  if (ret == 0)
    {
      ret = spec_parse (&r->spec, spec_text, spec_len, err);
      if (ret < 0)
        return ret;
      if ((ret = digest_buffer (r->spec_digest, spec_text, spec_len, err)) < 0)
        return ret;
      r->frontend_why = r->spec->dockerfile ? "buildvm.json \"dockerfile\"" : "buildvm.json";
    }
  else
    {
      /* no buildvm.json: a Dockerfile at the root is the build, with the
       * defaults; neither is the error it always was */
      cleanup_error bvm_error_t e = NULL;
      cleanup_free char *spec_err = xstrdup (bvm_error_msg (err));
      bvm_error_free (err);
      ret = read_commit_file (r, &r->dockerfile_text, &r->dockerfile_len, DOCKERFILE_DEFAULT,
                              DOCKERFILE_MAX_BYTES, &e);
      if (ret < 0 && is_absent (&e))
        return bvm_error_code (err, BVM_E_INVALID, 0, "reading `%s`: %s", SPEC_FILE, spec_err);
      if (ret < 0)
        {
          *err = steal_pointer (&e);
          return bvm_error_wrap (err, "reading `%s` (there is no `%s`)", DOCKERFILE_DEFAULT,
                                 SPEC_FILE);
        }
      if ((ret = spec_dockerfile_detected (&r->spec, err)) < 0)
        return ret;
      r->frontend_why = "Dockerfile at the root, no buildvm.json";
    }
  jset (r->record, "spec", spec_to_json (r->spec));
  jset (r->record, "frontend",
        json_pack ("{s:s, s:s}", "kind", r->spec->dockerfile ? "dockerfile" : "steps", "why",
                   r->frontend_why));
  if (r->spec->dockerfile && r->dockerfile_text == NULL)
    {
      ret = read_commit_file (r, &r->dockerfile_text, &r->dockerfile_len,
                              r->spec->dockerfile->path, DOCKERFILE_MAX_BYTES, err);
      if (ret < 0)
        return bvm_error_wrap (err, "reading the Dockerfile `%s` (`dockerfile.path`)",
                               r->spec->dockerfile->path);
    }
  if (r->spec->image)
    return read_lockfiles (r, err);
  return 0;
}

/* --- plan ---------------------------------------------------------------------- */

/* "Dockerfile:LINE: " before a role's refusal */
static int
df_wrap (struct run *r, unsigned line, const char *what, const char *subject, bvm_error_t *err)
{
  char shown[JOB__SHOW_SIZE];
  return bvm_error_wrap (err, "%s:%u: %s `%s`", r->spec->dockerfile->path, line, what,
                         job__show (shown, sizeof shown, subject));
}

/* The job's egress role: its template plus the host rules of runner.json
 * and buildvm.json, under the boundary. The plan's ADD check and the build's
 * broker (egress_prepare) decide with the same role. */
static int
egress_role_for_job (struct role **out, struct run *r, bvm_error_t *err)
{
  const struct egress_settings *es = &r->cfg->egress;
  struct policy_vars vars = { r->job->app, r->job->commit, r->job->ref, r->job->id };
  const char *rules[EGRESS_RULES_MAX];
  size_t n = 0;
  int ret;

  if (es->n_allow + r->spec->n_egress > EGRESS_RULES_MAX)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "more than %d egress rules in runner.json and buildvm.json together",
                           EGRESS_RULES_MAX);
  for (size_t i = 0; i < es->n_allow; i++)
    rules[n++] = es->allow[i];
  for (size_t i = 0; i < r->spec->n_egress; i++)
    rules[n++] = r->spec->egress[i];
  ret = egress_role_mint (out, r->tmpl, r->boundary, &vars, role_expires_at (r->role), rules, n,
                          err);
  return ret < 0 ? bvm_error_wrap (err, "minting the job's egress role") : ret;
}

/* Whether the job's egress role lets the build connect to `hp`: the
 * decision the broker makes for the connection (egress_prepare mints the
 * same role for the build), without the address checks of its lookup. */
static int
egress_would_allow (struct run *r, const struct netaddr_hostport *hp, bool *allowed, char *why,
                    size_t why_size, bvm_error_t *err)
{
  const struct egress_settings *es = &r->cfg->egress;
  struct role *role = NULL;
  struct policy_decision d;
  char res[NETADDR_HOSTPORT_STRLEN + 8];
  int ret;

  *allowed = false;
  snprintf (why, why_size, "the build has no egress rules");
  if (es->n_allow == 0 && r->spec->n_egress == 0)
    return 0;
  if ((ret = egress_role_for_job (&role, r, err)) < 0)
    return ret;
  netaddr_resource (res, sizeof res, hp);
  role_decide (role, POLICY_ACTION_NET_CONNECT, res, NULL, &d);
  *allowed = d.allowed;
  snprintf (why, why_size, "%s", d.why);
  role_free (role);
  return 0;
}

/* A Dockerfile job's plan, asked of the role: every base image is pulled
 * (registry:PullImage) and every ADD URL's host is one the build may
 * connect to (net:Connect, as the broker will decide), before any VM. */
static int
plan_dockerfile_checks (struct run *r, bvm_error_t *err)
{
  const struct job_plan *p = &r->plan_store;
  const struct spec_dockerfile *sd = r->spec->dockerfile;
  json_t *rec, *bases;
  char res[1024];
  int ret;

  for (size_t i = 0; i < p->n_bases; i++)
    {
      const struct plan_base *b = &p->bases[i];
      char shown[JOB__SHOW_SIZE];
      if (snprintf_checked (res, sizeof res, "registry:%s:%s", b->repository, b->reference) < 0)
        return bvm_error (err, ENAMETOOLONG, "base image resource");
      ret = authorize (r, POLICY_ACTION_PULL_IMAGE, res, err);
      if (ret > 0) /* dry-run: the build cannot go on without its base */
        ret = bvm_error_code (err, BVM_E_DENIED, 0, "the role denies %s on %s",
                              POLICY_ACTION_PULL_IMAGE, res);
      if (ret < 0)
        return df_wrap (r, b->line, b->how, b->from, err);
      note (r, "plan: %s %s -> %s:%s%s", b->how, job__show (shown, sizeof shown, b->from),
            b->repository, b->reference, b->mapped ? " (dockerfile.from_map)" : "");
    }
  for (size_t i = 0; i < p->n_urls; i++)
    {
      const struct plan_url *u = &p->urls[i];
      char hp[NETADDR_HOSTPORT_STRLEN], why[POLICY_DECISION_MAX + 64], shown[JOB__SHOW_SIZE];
      bool allowed = false;

      if ((ret = egress_would_allow (r, &u->hp, &allowed, why, sizeof why, err)) < 0)
        return ret;
      netaddr_hostport_format (hp, sizeof hp, &u->hp);
      if (r->o->plan)
        json_array_append_new (r->o->plan,
                               json_pack ("{s:s, s:s+, s:s, s:s}", "action",
                                          POLICY_ACTION_NET_CONNECT, "resource", "net:", hp,
                                          "decision", allowed ? "allow" : "deny", "why", why));
      if (allowed)
        continue;
      if (r->cfg->egress.mode == EGRESS_MODE_AUDIT)
        {
          note (r, "plan: ADD %s: the role would deny connecting to %s; allowed in audit mode",
                job__show (shown, sizeof shown, u->url), hp);
          continue;
        }
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "%s:%u: ADD %s: the role does not allow connecting to %s (add it to "
                             "buildvm.json `egress`)",
                             sd->path, u->line, job__show (shown, sizeof shown, u->url), hp);
    }

  rec = json_pack ("{s:s, s:s, s:o, s:I, s:I}", "path", sd->path, "context", sd->context, "target",
                   sd->target ? json_string (sd->target) : json_null (), "stages",
                   (json_int_t) p->dockerfile->n_stages, "target_stage",
                   (json_int_t) p->dockerfile->target);
  bases = json_array ();
  for (size_t i = 0; rec != NULL && bases != NULL && i < p->n_bases; i++)
    json_array_append_new (bases,
                           json_pack ("{s:s, s:s, s:s, s:s, s:I}", "from", p->bases[i].from,
                                      "name", p->bases[i].name, "repository",
                                      p->bases[i].repository, "reference", p->bases[i].reference,
                                      "line", (json_int_t) p->bases[i].line));
  if (rec != NULL && bases != NULL)
    json_object_set_new (rec, "bases", bases);
  else
    json_decref (bases);
  jset (r->record, "dockerfile", rec);
  note (r,
        "plan: Dockerfile `%s`: %zu stage%s, %zu base image%s, %zu secret mount%s, %zu ADD URL%s",
        sd->path, p->dockerfile->n_stages, p->dockerfile->n_stages == 1 ? "" : "s", p->n_bases,
        p->n_bases == 1 ? "" : "s", p->dockerfile->n_secrets,
        p->dockerfile->n_secrets == 1 ? "" : "s", p->n_urls, p->n_urls == 1 ? "" : "s");
  return 0;
}

static void shape_remember (struct run *r, const struct job_plan *p); /* below */

static int
phase_plan (struct run *r, bvm_error_t *err)
{
  struct job_plan *p = &r->plan_store;
  char res[1024];
  int ret;

  note (r, "plan: frontend: %s (%s)", r->spec->dockerfile ? "dockerfile" : "steps",
        r->frontend_why);
  ret = plan_make (p, r->cfg, r->job, r->spec, err);
  if (ret == 0 && r->spec->dockerfile)
    ret = plan_dockerfile (p, r->cfg, r->spec, r->dockerfile_text, r->dockerfile_len, err);
  if (ret < 0)
    return ret;
  jset (r->record, "resources",
        json_pack ("{s:I, s:I, s:I, s:I}", "vcpus", (json_int_t) p->res.vcpus, "memory_mib",
                   (json_int_t) p->res.memory_mib, "disk_mib", (json_int_t) p->res.disk_mib,
                   "timeout", (json_int_t) p->res.timeout));
  jset (r->record, "vm_image", image_to_json (p->img));
  shape_remember (r, p);

  /* every write the plan makes is asked of the role now, before anything runs */
  if (p->dest_repo)
    {
      snprintf (res, sizeof res, "registry:%s:%s", p->dest_repo, p->dest_tag);
      if ((ret = authorize (r, POLICY_ACTION_PUSH_IMAGE, res, err)) < 0)
        return ret;
      for (size_t i = 0; i < p->n_extra_tags; i++)
        {
          snprintf (res, sizeof res, "registry:%s:%s", p->dest_repo, p->extra_tags[i]);
          if ((ret = authorize (r, POLICY_ACTION_PUSH_IMAGE, res, err)) < 0)
            return ret;
        }
      if (r->spec->image->base)
        {
          snprintf (res, sizeof res, "registry:%s:%s", r->spec->image->base_repository,
                    r->spec->image->base_tag ? r->spec->image->base_tag
                                             : r->spec->image->base_digest);
          if ((ret = authorize (r, POLICY_ACTION_PULL_IMAGE, res, err)) < 0)
            return ret;
          if (ret > 0)
            r->base_skipped = true; /* dry-run: a denied pull is not made */
        }
    }
  if (r->spec->dockerfile && (ret = plan_dockerfile_checks (r, err)) < 0)
    return ret;
  for (size_t i = 0; i < p->n_secrets; i++)
    {
      snprintf (res, sizeof res, "secrets:apps/%s/%s", r->job->app, p->secrets[i].name);
      if ((ret = authorize (r, POLICY_ACTION_GET_SECRET, res, err)) < 0)
        return ret;
    }
  note (r, "plan: profile %s, %llu vCPU, %llu MiB memory, %llu MiB disk, %llu s; image %s%s%s",
        r->spec->profile, (unsigned long long) p->res.vcpus,
        (unsigned long long) p->res.memory_mib, (unsigned long long) p->res.disk_mib,
        (unsigned long long) p->res.timeout, p->dest_repo ? p->dest_repo : "(none)",
        p->dest_tag ? ":" : "", p->dest_tag ? p->dest_tag : "");
  r->plan = p; /* const from here on */
  return 0;
}

/* --- secrets ---------------------------------------------------------------------- */

static void
secrets_wipe (struct run *r)
{
  for (size_t i = 0; i < r->n_secret_vals; i++)
    secret_value_free (r->secret_vals[i]);
  free (r->secret_vals);
  r->secret_vals = NULL;
  r->n_secret_vals = 0;
}

/* Every secret the spec names is read now, each asked of the role first, so a
 * missing or denied one fails the job before any VM boots. The values live
 * in no-dump memory until the input disk is written, then they are wiped. */
static int
phase_secrets (struct run *r, bvm_error_t *err)
{
  struct secrets *st = r->o->secrets;
  json_t *names;
  int ret = 0;

  if (r->plan->n_secrets == 0)
    return 0;
  if (st == NULL)
    {
      ret = secrets_open (&r->store_secrets, r->cfg->secrets.dir, r->cfg->secrets.master_key, err);
      if (ret < 0 && r->o->dry_run)
        {
          note (r, "secrets: not available here (%s): the build runs without them",
                bvm_error_msg (err));
          bvm_error_free (err);
          return 0;
        }
      if (ret < 0)
        return bvm_error_wrap (err, "opening the secret store");
      st = r->store_secrets;
    }
  r->secret_vals = calloc (r->plan->n_secrets, sizeof *r->secret_vals);
  names = json_array ();
  if (r->secret_vals == NULL || names == NULL || (ret = redact_new (&r->redact, err)) < 0)
    {
      json_decref (names);
      return r->secret_vals == NULL || names == NULL ? bvm_error (err, ENOMEM, "secrets") : ret;
    }
  for (size_t i = 0; i < r->plan->n_secrets; i++)
    {
      const struct spec_secret *sp = &r->plan->secrets[i];
      unsigned version = 0;
      bool too_short = false;

      ret = secrets_get_for_job (st, r->role, r->job->app, sp->name, &r->secret_vals[i], &version,
                                 err);
      if (ret < 0)
        {
          json_decref (names);
          return bvm_error_wrap (err, "secret `%s`", sp->name);
        }
      r->n_secret_vals = i + 1;
      ret = redact_add (r->redact, r->secret_vals[i]->data, r->secret_vals[i]->len, &too_short,
                        err);
      if (ret < 0)
        {
          json_decref (names);
          return bvm_error_wrap (err, "secret `%s` cannot be masked in the log", sp->name);
        }
      if (too_short)
        note (r, "secrets: warning: `%s` is shorter than %d bytes and is NOT masked in this log",
              sp->name, REDACT_MIN_LEN);
      json_array_append_new (names, json_pack ("{s:s, s:I, s:s}", "name", sp->name, "version",
                                               (json_int_t) version, "delivery",
                                               sp->env ? "env" : "file"));
    }
  jset (r->record, "secrets", names);
  note (r, "secrets: %zu granted", r->plan->n_secrets);
  return 0;
}

/* --- input ------------------------------------------------------------------------ */

/* The control file's Dockerfile record: path, context, target, the build
 * args (not secret: plan_dockerfile refused any that look like one) and
 * each base as `b<i>` in bases/ with the name its FROM gives it. */
static int
df_guest_job (struct run *r, struct guest_dockerfile *gdf, bvm_error_t *err)
{
  const struct spec_dockerfile *sd = r->spec->dockerfile;
  struct guest_build_arg *args = calloc (sd->n_args + 1, sizeof *args);
  struct guest_base *bases = calloc (r->n_bases + 1, sizeof *bases);

  gdf->args = args;
  gdf->bases = bases;
  if (args == NULL || bases == NULL)
    return bvm_error (err, ENOMEM, "the control file");
  gdf->path = sd->path;
  gdf->context = sd->context;
  gdf->target = sd->target;
  for (size_t i = 0; i < sd->n_args; i++)
    {
      args[i].name = sd->args[i].key;
      args[i].value = sd->args[i].value;
    }
  gdf->n_args = sd->n_args;
  for (size_t i = 0; i < r->n_bases; i++)
    {
      if ((bases[i].ref = xasprintf_or_null ("b%zu", i)) == NULL)
        return bvm_error (err, ENOMEM, "the control file");
      bases[i].name = r->bases[i].name;
      gdf->n_bases = i + 1;
    }
  return 0;
}

static int
add_blob_buf (struct srcfs *sfs, const char *digest, const void *data, size_t len,
              bvm_error_t *err)
{
  char path[128];
  if (snprintf_checked (path, sizeof path, PROTO_BASES_DIR "/blobs/sha256/%s", digest + 7) < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "a blob path");
  return srcfs_add_file (sfs, path, data, len, 0644, err);
}

/* bases/ on the scratch disk: an OCI image layout of every base (one
 * index.json entry each, ref name b<i>), each blob once. The guest reads it
 * read-only as root; nothing in it comes from the repository. */
static int
write_bases_layout (struct run *r, struct srcfs *sfs, bvm_error_t *err)
{
  static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
  cleanup_json json_t *index = NULL;
  cleanup_free char *index_text = NULL;
  json_t *manifests;
  char **written = NULL;
  size_t n_written = 0, cap = 0;
  int ret = 0;

  index = json_pack ("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", OCI_MEDIA_INDEX,
                     "manifests");
  if (index == NULL)
    return bvm_error (err, ENOMEM, "bases/index.json");
  manifests = json_object_get (index, "manifests");
  if ((ret = srcfs_add_dir (sfs, PROTO_BASES_DIR, 0755, err)) < 0
      || (ret = srcfs_add_dir (sfs, PROTO_BASES_DIR "/blobs", 0755, err)) < 0
      || (ret = srcfs_add_dir (sfs, PROTO_BASES_DIR "/blobs/sha256", 0755, err)) < 0
      || (ret = srcfs_add_file (sfs, PROTO_BASES_DIR "/oci-layout", layout, sizeof layout - 1,
                                0644, err))
             < 0)
    return ret;
  for (size_t i = 0; ret == 0 && i < r->n_bases; i++)
    {
      const struct run_base *b = &r->bases[i];
      const struct oci_descriptor *cfg = oci_manifest_config (b->manifest), *layers;
      size_t n_layers = 0;
      char ref[32];
      struct
      {
        const char *digest;
        uint64_t size;
        const char *path; /* NULL: in memory */
        const char *data;
      } blobs[OCI_MAX_LAYERS + 2];
      size_t nb = 0;

      layers = oci_manifest_layers (b->manifest, &n_layers);
      if (n_layers > OCI_MAX_LAYERS)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "base image `%s` has too many layers",
                               b->from);
      blobs[nb++] = (typeof (blobs[0])){ b->digest, b->manifest_len, NULL, b->manifest_json };
      blobs[nb++] = (typeof (blobs[0])){ cfg->digest, b->config_len, NULL, b->config };
      for (size_t j = 0; j < n_layers; j++)
        blobs[nb++] = (typeof (blobs[0])){ layers[j].digest, layers[j].size, b->layer_paths[j],
                                           NULL };
      for (size_t k = 0; ret == 0 && k < nb; k++)
        {
          bool seen = false;
          for (size_t m = 0; m < n_written; m++)
            if (strcmp (written[m], blobs[k].digest) == 0)
              seen = true;
          if (seen)
            continue;
          if (n_written == cap)
            {
              size_t c = cap ? cap * 2 : 16;
              char **w = realloc (written, c * sizeof *w);
              if (w == NULL)
                {
                  ret = bvm_error (err, ENOMEM, "bases/");
                  break;
                }
              written = w;
              cap = c;
            }
          written[n_written++] = (char *) blobs[k].digest;
          if (blobs[k].path == NULL)
            ret = add_blob_buf (sfs, blobs[k].digest, blobs[k].data, (size_t) blobs[k].size, err);
          else
            {
              char path[128];
              cleanup_close int fd = open (blobs[k].path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
              struct stat st;
              if (fd < 0 || fstat (fd, &st) < 0)
                ret = bvm_error (err, errno, "open `%s`", blobs[k].path);
              else if ((uint64_t) st.st_size != blobs[k].size)
                ret = bvm_error_code (err, BVM_E_INTERNAL, 0, "`%s` is not %llu bytes",
                                      blobs[k].path, (unsigned long long) blobs[k].size);
              else if (snprintf_checked (path, sizeof path, PROTO_BASES_DIR "/blobs/sha256/%s",
                                         blobs[k].digest + 7)
                       < 0)
                ret = bvm_error_code (err, BVM_E_INTERNAL, 0, "a blob path");
              else
                ret = srcfs_add_file_from_fd (sfs, path, fd, blobs[k].size, 0644, err);
            }
        }
      snprintf (ref, sizeof ref, "b%zu", i);
      if (ret == 0
          && json_array_append_new (manifests,
                                    json_pack ("{s:s, s:s, s:I, s:{s:s}}", "mediaType",
                                               oci_manifest_media_type (b->manifest), "digest",
                                               b->digest, "size", (json_int_t) b->manifest_len,
                                               "annotations", "org.opencontainers.image.ref.name",
                                               ref))
                 < 0)
        ret = bvm_error (err, ENOMEM, "bases/index.json");
    }
  free (written);
  if (ret < 0)
    return ret;
  index_text = json_dumps (index, JSON_COMPACT | JSON_SORT_KEYS);
  if (index_text == NULL)
    return bvm_error (err, ENOMEM, "bases/index.json");
  return srcfs_add_file (sfs, PROTO_BASES_DIR "/index.json", index_text, strlen (index_text), 0644,
                         err);
}

static int
phase_input (struct run *r, bvm_error_t *err)
{
  struct guest_input *in = NULL;
  struct srcfs *sfs = NULL;
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  struct gitsrc_stats st = { 0 };
  struct guest_job gj = { 0 };
  struct guest_dockerfile gdf = { 0 };
  struct guest_step *steps = NULL;
  struct guest_secret_env *senv = NULL;
  const char **env = NULL;
  uint64_t size = 0;
  int ret;

  /* phase_base made it when a Dockerfile job pulled its bases */
  ret = r->wd ? 0 : workdir_create (&r->wd, r->cfg->work_dir, r->job->id, err);
  if (ret < 0)
    return ret;
  r->input_path = workdir_file (r->wd, "input.img");
  r->scratch_path = workdir_file (r->wd, "scratch.img");
  steps = calloc (r->spec->n_steps, sizeof *steps);
  env = calloc (r->spec->n_env + 1, sizeof *env);
  if (r->input_path == NULL || r->scratch_path == NULL || steps == NULL || env == NULL)
    {
      ret = bvm_error (err, ENOMEM, "input disk");
      goto cleanup;
    }
  for (size_t i = 0; i < r->spec->n_steps; i++)
    {
      steps[i].name = r->spec->steps[i].name;
      steps[i].cmd = r->spec->steps[i].run;
      steps[i].timeout_s = r->spec->steps[i].timeout;
    }
  for (size_t i = 0; i < r->spec->n_env; i++)
    {
      env[i] = xasprintf_or_null ("%s=%s", r->spec->env[i].key, r->spec->env[i].value);
      if (env[i] == NULL)
        {
          ret = bvm_error (err, ENOMEM, "input disk");
          goto cleanup;
        }
    }
  gj.timeout_s = r->plan->res.timeout;
  gj.log_max = r->cfg->limits.max_log_bytes > LOG_AGENT_MIN
                   ? r->cfg->limits.max_log_bytes - LOG_AGENT_MARGIN
                   : r->cfg->limits.max_log_bytes / 2;
  gj.output_max = r->cfg->limits.max_output_bytes;
  gj.steps = steps;
  gj.n_steps = r->spec->n_steps;
  gj.env = env;
  gj.n_env = r->spec->n_env;
  gj.image_from = r->spec->image ? r->spec->image->from : NULL;
  gj.artifacts = (const char *const *) r->spec->artifacts;
  gj.n_artifacts = r->spec->n_artifacts;
  if (r->spec->dockerfile)
    {
      if ((ret = df_guest_job (r, &gdf, err)) < 0)
        goto cleanup;
      gj.dockerfile = &gdf;
      gj.image_from = NULL;
    }
  if (r->n_secret_vals > 0)
    {
      senv = calloc (r->plan->n_secrets, sizeof *senv);
      if (senv == NULL)
        {
          ret = bvm_error (err, ENOMEM, "input disk");
          goto cleanup;
        }
      for (size_t i = 0; i < r->plan->n_secrets; i++)
        if (r->plan->secrets[i].env)
          {
            senv[gj.n_secret_env].var = r->plan->secrets[i].env;
            senv[gj.n_secret_env].name = r->plan->secrets[i].name;
            gj.n_secret_env++;
          }
      gj.secret_env = senv;
    }

  lim.max_entries = r->cfg->limits.max_source_entries;
  lim.max_bytes = r->cfg->limits.max_source_bytes;
  lim.deadline_ms = now_ms () + INPUT_DEADLINE_MS;
  if ((ret = guest_input_create (&in, r->input_path, err)) < 0
      || (ret = guest_input_add_control (in, &gj, err)) < 0)
    goto cleanup;
  /* The source goes straight into the scratch disk's file system, where the
   * build finds it: the guest copies nothing (srcfs.h) */
  if ((ret = srcfs_create (&sfs, r->scratch_path, r->plan->res.disk_mib, err)) < 0)
    goto cleanup;
  if (r->o->dry_run && r->o->worktree)
    ret = gitsrc_export_worktree_to (srcfs_sink (sfs), r->o->local_dir, "src/", &lim, &st, err);
  else
    ret = gitsrc_export_to (srcfs_sink (sfs), r->repo, r->commit, "src/", &lim, &st, err);
  if (ret < 0)
    {
      bvm_error_wrap (err, "exporting the source tree");
      goto cleanup;
    }
  if (r->spec->dockerfile && (ret = write_bases_layout (r, sfs, err)) < 0)
    {
      bvm_error_wrap (err, "writing the base images to the scratch disk");
      goto cleanup;
    }
  if ((ret = srcfs_finish (sfs, err)) < 0)
    {
      bvm_error_wrap (err, "exporting the source tree");
      goto cleanup;
    }
  /* the only copy of a secret on the host's disk: the input disk, which is
   * removed as soon as the VM is gone */
  for (size_t i = 0; i < r->n_secret_vals; i++)
    if ((ret = guest_input_add_secret (in, r->plan->secrets[i].name, r->secret_vals[i]->data,
                                       r->secret_vals[i]->len, err))
        < 0)
      goto cleanup;
  if ((ret = guest_input_finish (in, &size, err)) < 0)
    goto cleanup;
  /* the app's mirror is locked while we hold it: let the next job of this
   * app (or a newer attempt of this one) have it as soon as we are done */
  gitsrc_repo_free (r->repo);
  r->repo = NULL;
  jset (r->record, "source",
        json_pack ("{s:I, s:I, s:I, s:I, s:I}", "files", (json_int_t) st.files, "dirs",
                   (json_int_t) st.dirs, "symlinks", (json_int_t) st.symlinks, "bytes",
                   (json_int_t) st.bytes, "skipped", (json_int_t) st.skipped));
  note (r, "input: %llu files, %llu bytes of source", (unsigned long long) st.files,
        (unsigned long long) st.bytes);
cleanup:
  secrets_wipe (r);
  free (senv);
  free ((void *) gdf.args);
  if (gdf.bases)
    for (size_t i = 0; i < gdf.n_bases; i++)
      free ((char *) gdf.bases[i].ref);
  free ((void *) gdf.bases);
  srcfs_free (sfs);
  guest_input_free (in);
  if (env)
    for (size_t i = 0; i < r->spec->n_env; i++)
      free ((char *) env[i]);
  free (env);
  free (steps);
  return ret;
}

/* --- build ----------------------------------------------------------------------- */

/* The VM gets an egress channel only when something could be allowed: host
 * rules in runner.json or buildvm.json, or audit mode. The role that
 * decides is the job's template plus those rules, under the boundary. */
static int
egress_prepare (struct run *r, bvm_error_t *err)
{
  const struct egress_settings *es = &r->cfg->egress;
  size_t n = es->n_allow + r->spec->n_egress;
  int ret;

  if (n == 0 && es->mode != EGRESS_MODE_AUDIT)
    return 0;
  if ((ret = egress_role_for_job (&r->egress_role, r, err)) < 0)
    return ret;
  r->egress.settings = es;
  r->egress.role = r->egress_role;
  r->egress.log = on_egress_log;
  r->egress.opaque = r;
  note (r, "egress: %zu rule%s, %s mode, through the proxy at 127.0.0.1:3128 in the VM", n,
        n == 1 ? "" : "s", es->mode == EGRESS_MODE_AUDIT ? "audit" : "enforce");
  return 0;
}

static void
egress_finish (struct run *r)
{
  json_t *rec;

  if (r->vm.egress == NULL)
    return;
  rec = egress_record (r->vm.egress);
  if (rec != NULL && r->cfg->egress.mode == EGRESS_MODE_AUDIT)
    note (r,
          "egress audit: the build used %zu host:port pairs; to allow them paste the "
          "record's `egress.allowlist` into `egress`",
          json_array_size (json_object_get (rec, "allowlist")));
  if (rec != NULL)
    json_object_set_new (rec, "role", role_to_json (r->egress_role));
  /* a dry run's plan shows the egress decisions beside the writes (they are
   * not writes: a refused connection does not fail the dry run) */
  if (rec != NULL && r->o->plan)
    {
      size_t i;
      json_t *c;
      json_array_foreach (json_object_get (rec, "connections"), i, c)
        {
          const char *host = json_string_value (json_object_get (c, "host"));
          char res[NETADDR_HOSTPORT_STRLEN + 8];
          if (host == NULL || host[0] == '\0') /* refused before it was parsed */
            snprintf (res, sizeof res, "net:?");
          else
            snprintf (res, sizeof res, strchr (host, ':') ? "net:[%s]:%lld" : "net:%s:%lld", host,
                      (long long) json_integer_value (json_object_get (c, "port")));
          json_array_append_new (r->o->plan,
                                 json_pack ("{s:s, s:s, s:O, s:O}", "action",
                                            POLICY_ACTION_NET_CONNECT, "resource", res, "decision",
                                            json_object_get (c, "decision"), "why",
                                            json_object_get (c, "reason")));
        }
    }
  jset (r->record, "egress", rec);
}

/* The failed step's last lines (redacted as they came, capped by the tail)
 * and a hint when they show the missing network, in the record's
 * `failed_step` and the log. */
static void
failed_step_output (struct run *r, unsigned idx)
{
  json_t *fs = json_object_get (r->record, "failed_step");
  const char *hint = steptail_hint (&r->tail, r->egress_role != NULL);

  if (fs == NULL || r->tail.step != idx)
    return;
  jset (fs, "output_tail", steptail_to_json (&r->tail, idx));
  jset (fs, "output_lines", json_integer ((json_int_t) r->tail.total));
  if (hint != NULL)
    {
      jset (fs, "hint", json_string (hint));
      note (r, "hint: %s", hint);
    }
}

/* --- boot: the early VM ------------------------------------------------------ */

uint64_t
pipeline_input_max (const struct runner_config *cfg)
{
  /* its source with a tar header and padding per entry, the control file,
   * its secrets; sparse, it costs what the job writes into it */
  return cfg->limits.max_source_bytes + cfg->limits.max_source_entries * 1536 + GUEST_MAX_CONTROL
         + (64u << 20);
}

static void
early_vm_free (struct run *r)
{
  bvm_error_t e = NULL;
  vmjob_warm_free (r->early);
  r->early = NULL;
  if (workdir_remove (r->early_wd, &e) < 0)
    {
      log_warn ("job=%s app=%s event=cleanup.failed error=\"%s\"", r->job->id, r->job->app,
                bvm_error_msg (&e));
      bvm_error_free (&e);
    }
  r->early_wd = NULL;
  image_free (r->early_img);
  r->early_img = NULL;
}

void
pipeline_prewarm_opts (struct vmjob_opts *vo, const struct runner_config *cfg,
                       const struct vm_image *img, const char *name, unsigned vcpus,
                       unsigned memory_mib, uint64_t disk_mib, const volatile sig_atomic_t *cancel)
{
  vo->image = img;
  vmjob_opts_settings (vo, &cfg->vm, &cfg->jail);
  vo->name = name;
  vo->vcpus = vcpus;
  vo->memory_mib = memory_mib;
  vo->disk_mib = disk_mib;
  vo->output_max = cfg->limits.max_output_bytes;
  vo->boot_timeout_ms = (int64_t) cfg->vm.boot_timeout * 1000;
  vo->console_max = cfg->limits.max_log_bytes;
  vo->cancel = cancel;
}

/* --- the early VM's shape ------------------------------------------------- */

/* `<state>/jobs/<app>/.shape.json` (a job id never starts with a dot): the
 * profile and resources of the app's last planned job. The next job's
 * early VM boots of that shape, the one an app's next commit most likely
 * asks for too, instead of the runner's defaults. Written by the runner;
 * read back as untrusted all the same (capped, every field checked against
 * today's limits), and anything wrong with it only means the defaults. */
#define SHAPE_FILE ".shape.json"
#define SHAPE_FILE_MAX 1024

/* `<state>/jobs/<app>`, made if need be: the app's records and its shape */
static int
app_state_dir (char **out, const struct run *r, bvm_error_t *err)
{
  if (asprintf (out, "%s/jobs/%s", r->cfg->state_dir, r->job->app) < 0)
    {
      *out = NULL;
      return bvm_error (err, ENOMEM, "the app's state directory");
    }
  return fs_mkdir_p (*out, 0750, err);
}

static char *
shape_path (const struct run *r)
{
  char *path;
  if (asprintf (&path, "%s/jobs/%s/" SHAPE_FILE, r->cfg->state_dir, r->job->app) < 0)
    return NULL;
  return path;
}

/* After the plan: remember the job's shape for the app's next job */
static void
shape_remember (struct run *r, const struct job_plan *p)
{
  cleanup_free char *path = NULL, *dir = NULL;
  bvm_error_t e = NULL;
  json_t *doc;

  if (r->o->dry_run || !r->cfg->vm.early_boot)
    return;
  if (r->last_shape_known && strcmp (r->last_shape.profile, p->img->profile) == 0
      && r->last_shape.vcpus == p->res.vcpus && r->last_shape.memory_mib == p->res.memory_mib
      && r->last_shape.disk_mib == p->res.disk_mib)
    return; /* the same as last time: no write */
  path = shape_path (r);
  doc = json_pack ("{s:s, s:I, s:I, s:I}", "profile", p->img->profile, "vcpus",
                   (json_int_t) p->res.vcpus, "memory_mib", (json_int_t) p->res.memory_mib,
                   "disk_mib", (json_int_t) p->res.disk_mib);
  if (path == NULL || doc == NULL)
    bvm_error (&e, ENOMEM, "the app's shape");
  else if (app_state_dir (&dir, r, &e) == 0)
    jsonx_write_file (path, doc, &e);
  json_decref (doc);
  if (e != NULL)
    {
      log_warn ("job=%s app=%s event=early_vm.shape.failed error=\"%s\"", r->job->id, r->job->app,
                bvm_error_msg (&e));
      bvm_error_free (&e);
    }
}

/* The app's last shape, if there is a valid one within today's limits */
static bool
shape_recall (const struct run *r, struct early_shape *sh)
{
  static const char *const keys[] = { "profile", "vcpus", "memory_mib", "disk_mib", NULL };
  const struct config_limits *lim = &r->cfg->limits;
  cleanup_free char *path = shape_path (r);
  json_t *doc = NULL;
  bvm_error_t e = NULL;
  const char *profile = NULL;
  bool ok;

  if (path == NULL || access (path, F_OK) < 0)
    return false; /* the app's first job, or one of a runner without it */
  ok = jsonx_parse_file (&doc, path, SHAPE_FILE_MAX, &e) == 0 && json_is_object (doc)
       && jsonx_check_keys (doc, keys, SHAPE_FILE, &e) == 0
       && jsonx_get_str (&profile, doc, "profile", true, sizeof sh->profile - 1, SHAPE_FILE, &e)
              == 0
       && image_profile_problem (profile) == NULL
       && jsonx_get_u64 (&sh->vcpus, doc, "vcpus", true, 1, lim->max_vcpus, SHAPE_FILE, &e) == 0
       && jsonx_get_u64 (&sh->memory_mib, doc, "memory_mib", true, 64, lim->max_memory_mib,
                         SHAPE_FILE, &e)
              == 0
       && jsonx_get_u64 (&sh->disk_mib, doc, "disk_mib", true, 16, lim->max_disk_mib, SHAPE_FILE,
                         &e)
              == 0;
  if (ok)
    snprintf (sh->profile, sizeof sh->profile, "%s", profile);
  else
    log_warn ("job=%s app=%s event=early_vm.shape.ignored path=\"%s\" error=\"%s\"", r->job->id,
              r->job->app, path, e ? bvm_error_msg (&e) : "not a valid shape");
  bvm_error_free (&e);
  json_decref (doc);
  return ok;
}

/* A job that was offered no pool VM starts one now, of its app's last
 * shape (above) or else the runner's defaults, the way the pool does
 * (vmjob_prewarm), and does not wait for it: the VM boots while the
 * checkout, the plan and the input are made, and the build phase takes it
 * when the job fits it (its profile, resources and no egress channel),
 * else frees it and boots one of the job's shape. A failure here costs the
 * job nothing but that overlap. */
static int
phase_boot (struct run *r, bvm_error_t *err)
{
  const struct runner_config *cfg = r->cfg;
  struct vmjob_opts *vo = &r->early_vo;
  char name[JOB_ID_MAX + 8];
  struct early_shape sh = { "", cfg->defaults.vcpus, cfg->defaults.memory_mib,
                            cfg->defaults.disk_mib };
  bvm_error_t e = NULL;
  int ret = -1;

  (void) err;
  if (!cfg->vm.early_boot || (r->o->warm != NULL && *r->o->warm != NULL))
    return 0;
  snprintf (name, sizeof name, "%s-vm", r->job->id);
  r->early_shape = "defaults";
  r->last_shape_known = !r->o->dry_run && shape_recall (r, &r->last_shape);
  if (r->last_shape_known)
    {
      ret = image_load (&r->early_img, cfg->images.dir, r->last_shape.profile, &e);
      if (ret == 0)
        {
          sh = r->last_shape;
          r->early_shape = "last job";
        }
      else
        bvm_error_free (&e); /* a profile gone since: the defaults, quietly */
    }
  if (ret < 0)
    ret = image_load (&r->early_img, cfg->images.dir, cfg->images.default_profile, &e);
  if (ret == 0)
    ret = workdir_create (&r->early_wd, cfg->work_dir, name, &e);
  if (ret == 0)
    {
      pipeline_prewarm_opts (vo, cfg, r->early_img, r->job->id, (unsigned) sh.vcpus,
                             (unsigned) sh.memory_mib, sh.disk_mib, r->o->cancel);
      ret = vmjob_prewarm_start (&r->early, r->early_wd, vo, pipeline_input_max (cfg), &e);
    }
  if (ret < 0)
    {
      snprintf (r->early_note, sizeof r->early_note, "it did not start: %s", bvm_error_msg (&e));
      log_warn ("job=%s app=%s event=early_vm.failed error=\"%s\"", r->job->id, r->job->app,
                bvm_error_msg (&e));
      bvm_error_free (&e);
      early_vm_free (r);
      return 0;
    }
  r->early_started = true;
  return 0;
}

/* The early VM, once the job is ready for it: wait for its agent (the rest
 * of its boot), or give up on it. */
static void
early_vm_ready (struct run *r)
{
  bvm_error_t e = NULL;
  int64_t t0 = now_ms ();
  int ret;

  if (r->early == NULL)
    return;
  ret = vmjob_prewarm_wait (&r->early, &e);
  r->early_wait_ms = now_ms () - t0;
  if (ret == 0)
    r->early_boot_ms = vmjob_warm_boot_ms (r->early);
  else
    {
      snprintf (r->early_note, sizeof r->early_note, "it did not boot: %s", bvm_error_msg (&e));
      if (bvm_error_get_code (&e) != BVM_E_CANCELED)
        log_warn ("job=%s app=%s event=early_vm.failed error=\"%s\"", r->job->id, r->job->app,
                  bvm_error_msg (&e));
      bvm_error_free (&e);
    }
}

static int
phase_build (struct run *r, bvm_error_t *err)
{
  struct vmjob_opts vo = { 0 };
  enum vmjob_verdict v;
  char what[1024];
  json_t *steps;
  int ret, code;

  vo.image = r->plan->img;
  vmjob_opts_settings (&vo, &r->cfg->vm, &r->cfg->jail);
  vo.name = r->job->id;
  vo.vcpus = (unsigned) r->plan->res.vcpus;
  vo.memory_mib = (unsigned) r->plan->res.memory_mib;
  vo.disk_mib = r->plan->res.disk_mib;
  vo.output_max = r->cfg->limits.max_output_bytes;
  vo.boot_timeout_ms = (int64_t) r->cfg->vm.boot_timeout * 1000;
  vo.build_timeout_ms = (int64_t) r->plan->res.timeout * 1000;
  vo.console_max = r->cfg->limits.max_log_bytes + CONSOLE_MARGIN;
  vo.redact = r->redact;
  vo.line = on_console;
  vo.opaque = r;
  vo.cancel = r->o->cancel;
  vo.started = on_vm_started;
  vo.warm = r->o->warm;
  if (r->early_started)
    {
      early_vm_ready (r);
      vo.warm = &r->early; /* NULL when it did not boot: a cold boot */
    }
  vo.scratch = r->scratch_path;
  if ((ret = egress_prepare (r, err)) < 0)
    {
      unlink (r->input_path); /* it may hold secrets */
      return ret;
    }
  if (r->egress_role != NULL)
    vo.egress = &r->egress;

  ret = vmjob_run (&r->vm, r->wd, r->input_path, &vo, err);
  egress_finish (r); /* the broker's thread is gone: no more log lines from it */
  /* a line the console cap cut in the middle */
  for (size_t i = 0; i < ARRAY_SIZE (r->console_line); i++)
    if (r->console_line[i].len > 0)
      {
        console_emit (r, i == 0 ? VM_STREAM_CONSOLE : VM_STREAM_STDERR,
                      buf_cstr (&r->console_line[i]), r->console_line[i].len);
        buf_reset (&r->console_line[i]);
      }
  /* the input disk may hold secrets: gone as soon as the VM is */
  unlink (r->input_path);
  if (ret < 0)
    return bvm_error_wrap (err, "running the build VM");

  steps = json_array ();
  for (unsigned i = 0; i < r->vm.guest.steps_run && i < build_step_count (r); i++)
    json_array_append_new (steps, json_pack ("{s:s, s:I}", "name", build_step_name (r, i + 1),
                                             "ms", (json_int_t) r->vm.guest.step_ms[i]));
  jset (r->record, "build",
        json_pack ("{s:s, s:s, s:I, s:I, s:o, s:I, s:I}", "outcome",
                   vm_outcome_name (r->vm.vm.outcome), "status",
                   guest_status_name (r->vm.guest.status), "boot_ms",
                   (json_int_t) r->vm.vm.boot_ms, "vm_ms", (json_int_t) r->vm.vm.total_ms, "steps",
                   steps, "console_bytes", (json_int_t) r->vm.vm.console_bytes, "console_dropped",
                   (json_int_t) r->vm.vm.console_dropped));
  /* where the VM's time went: the disks, then the agent's own clock (from
   * its start to the result header: setup, steps, outputs) */
  json_object_set_new (json_object_get (r->record, "build"), "disks_ms",
                       json_integer (r->vm.disks_ms));
  json_object_set_new (json_object_get (r->record, "build"), "agent_ms",
                       json_integer (r->vm.guest.duration_ms));
  if (r->early_started)
    {
      /* the early VM's own key: `pool` counts the pool's hits and misses */
      if (r->vm.pool == VMJOB_POOL_MISS)
        snprintf (r->early_note, sizeof r->early_note, "%s", r->vm.pool_note);
      json_object_set_new (json_object_get (r->record, "build"), "early_vm",
                           r->vm.pool == VMJOB_POOL_HIT
                               ? json_pack ("{s:b, s:I, s:I, s:s}", "used", 1, "boot_ms",
                                            (json_int_t) r->early_boot_ms, "wait_ms",
                                            (json_int_t) r->early_wait_ms, "shape", r->early_shape)
                               : json_pack ("{s:b, s:s, s:s}", "used", 0, "why", r->early_note,
                                            "shape", r->early_shape));
    }
  else if (r->vm.pool != VMJOB_POOL_NONE)
    json_object_set_new (json_object_get (r->record, "build"), "pool",
                         r->vm.pool == VMJOB_POOL_HIT
                             ? json_pack ("{s:s}", "vm", "hit")
                             : json_pack ("{s:s, s:s}", "vm", "miss", "why", r->vm.pool_note));
  if (r->t_first_step > 0)
    jset (r->record, "first_step_ms",
          json_integer (r->t_first_step - (r->o->t_lease_ms ? r->o->t_lease_ms : r->t0)));
  jset (r->record, "accel", json_string (vm_accel_name (r->vm.vm.accel)));
  jset (r->record, "jail",
        r->vm.jailed ? json_pack ("{s:b, s:I, s:s}", "enabled", 1, "uid",
                                  (json_int_t) r->vm.jail_uid, "note", r->vm.jail_note)
                     : json_pack ("{s:b}", "enabled", 0));

  v = vmjob_verdict (&r->vm);
  code = vmjob_verdict_code (v);
  if (v != VMJOB_CANCELED && r->vm.egress != NULL && egress_denied (r->vm.egress) > 0
      && r->spec->fail_on_deny)
    {
      uint64_t denied = egress_denied (r->vm.egress);
      return bvm_error_code (err, BVM_E_DENIED, 0,
                             "%llu egress connection%s denied and buildvm.json sets "
                             "`fail_on_deny`",
                             (unsigned long long) denied, denied == 1 ? " was" : "s were");
    }
  if (v == VMJOB_OK)
    return 0;
  vmjob_describe (what, sizeof what, &r->vm);
  switch (v)
    {
    case VMJOB_CANCELED:
      return bvm_error_code (err, code, 0, "the job was canceled during the build");
    case VMJOB_STEP_FAILED:
      {
        unsigned idx = r->vm.guest.step;
        const char *name = build_step_name (r, idx);
        jset (r->record, "failed_step",
              json_pack ("{s:I, s:s, s:i}", "index", (json_int_t) idx, "name", name, "exit_code",
                         r->vm.guest.exit_code));
        failed_step_output (r, idx);
        return bvm_error_code (err, code, 0, "build step %u (`%s`) failed with exit status %d",
                               idx, name, r->vm.guest.exit_code);
      }
    case VMJOB_TIMEOUT:
      if (r->vm.guest.step >= 1 && r->vm.guest.step <= build_step_count (r))
        jset (r->record, "failed_step",
              json_pack ("{s:I, s:s, s:s}", "index", (json_int_t) r->vm.guest.step, "name",
                         build_step_name (r, r->vm.guest.step), "reason", "timeout"));
      failed_step_output (r, r->vm.guest.step);
      return bvm_error_code (err, code, 0, "the build timed out: %s", what);
    case VMJOB_BUILD_FAILED:
      if (r->vm.guest.status == GUEST_NO_RESULT)
        return bvm_error_code (err, code, 0, "the build ended without a result: %s", what);
      return bvm_error_code (err, code, 0, "%s", what);
    default: return bvm_error_code (err, code, 0, "the build VM failed: %s", what);
    }
}

/* --- ingest: hostile tar -> layer + artifact store ---------------------------- */

static int
sink_begin (void *opaque, const struct ingest_entry *e, bvm_error_t *err)
{
  struct run *r = opaque;
  r->cur_kind = e->kind;
  r->cur_is_file = false;
  r->cur_in_store = false;

  /* a Dockerfile job's image: its layout's files go to ocilayout, which
   * hashes each blob as it arrives */
  if (e->kind == INGEST_OCI)
    {
      if (e->type != S_IFREG)
        return 0;
      r->cur_is_file = true;
      return ocilayout_file_begin (r->oci, e->path, e->size, err);
    }
  if (e->kind == INGEST_IMAGE)
    {
      struct oci_layer_entry le = { 0 };
      cleanup_free char *path = NULL;
      cleanup_free char *target = NULL;

      /* nothing may land in the kernel's file systems of the final image */
      if (r->to_rel[0] == '\0')
        {
          static const char *forbidden[] = { "proc", "sys", "dev" };
          for (size_t i = 0; i < ARRAY_SIZE (forbidden); i++)
            {
              size_t n = strlen (forbidden[i]);
              if (strncmp (e->path, forbidden[i], n) == 0
                  && (e->path[n] == '\0' || e->path[n] == '/'))
                return bvm_error_code (err, BVM_E_INVALID, 0,
                                       "output `image/%s` would land in `/%s` of the image",
                                       e->path, forbidden[i]);
            }
        }
      path = r->to_rel[0] ? xasprintf_or_null ("%s/%s", r->to_rel, e->path)
                          : xasprintf_or_null ("%s", e->path);
      /* a hard link names an earlier entry of the layer, under the same prefix */
      if (e->type != S_IFLNK && e->type != S_IFDIR && e->link_target != NULL)
        target = r->to_rel[0] ? xasprintf_or_null ("%s/%s", r->to_rel, e->link_target)
                              : xasprintf_or_null ("%s", e->link_target);
      if (path == NULL || (e->type != S_IFLNK && e->type != S_IFDIR && e->link_target && !target))
        return bvm_error (err, ENOMEM, "layer entry");
      le.path = path;
      le.type = e->type == S_IFDIR || e->type == S_IFLNK ? e->type : S_IFREG;
      le.perm = e->perm;
      le.size = e->size;
      le.link = e->type == S_IFLNK ? e->link_target : target;
      le.mtime = r->commit_time;
      r->cur_is_file = le.type == S_IFREG && le.link == NULL;
      if (r->cur_is_file && r->sbom)
        {
          int ret = digest_init (&r->file_digest, err);
          if (ret < 0)
            return ret;
          r->file_hashing = true;
          r->file_size = e->size;
          free (r->file_path);
          r->file_path = steal_pointer (&path);
          le.path = r->file_path;
        }
      return oci_layer_add (r->layer, &le, err);
    }

  /* an artifact: a key under the job's own prefix, authorized one by one */
  if (e->type == S_IFDIR)
    return 0;
  {
    char key[STORE_KEY_MAX + 1], res[STORE_KEY_MAX + 32];
    int ret;
    if (snprintf_checked (key, sizeof key, "%s%s", r->plan->artifact_prefix, e->path) < 0)
      return bvm_error_code (err, BVM_E_LIMIT, 0, "artifact key for `%s` is too long", e->path);
    snprintf (res, sizeof res, "artifacts:%s", key);
    ret = authorize (r, POLICY_ACTION_PUT_OBJECT, res, err);
    if (ret < 0)
      return ret;
    if (ret > 0)
      return 0; /* dry-run: denied, planned, not written */
    if (e->type == S_IFLNK)
      return bvm_error_code (err, BVM_E_INVALID, 0, "artifact `%s` is a symlink", e->path);
    /* Counted here, before the store's list of objects grows: a build that
     * writes more fails at once with memory bounded by the cap, instead of
     * costing the runner memory and a record per artifact (issue 11). */
    if (r->artifacts_count >= r->cfg->limits.max_artifacts)
      return bvm_error_code (err, BVM_E_LIMIT, 0,
                             "the build wrote more than %llu artifacts (limits.max_artifacts)",
                             (unsigned long long) r->cfg->limits.max_artifacts);
    if (e->link_target != NULL)
      {
        char existing[STORE_KEY_MAX + 1];
        if (snprintf_checked (existing, sizeof existing, "%s%s", r->plan->artifact_prefix,
                              e->link_target)
            < 0)
          return bvm_error_code (err, BVM_E_LIMIT, 0, "artifact key too long");
        ret = store_put_link (r->txn, key, existing, err);
      }
    else
      {
        ret = store_put_begin (r->txn, key, err);
        r->cur_in_store = ret == 0;
        r->cur_is_file = ret == 0;
      }
    if (ret == 0)
      {
        r->artifacts_count++;
        r->artifacts_bytes += e->size;
      }
    return ret;
  }
}

static int
sink_data (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  struct run *r = opaque;
  if (!r->cur_is_file)
    return bvm_error (err, 0, "data for an entry that takes none");
  if (r->cur_kind == INGEST_OCI)
    return ocilayout_file_write (r->oci, buf, len, err);
  if (r->cur_kind == INGEST_IMAGE)
    {
      if (r->file_hashing)
        digest_update (&r->file_digest, buf, len);
      return oci_layer_write (r->layer, buf, len, err);
    }
  return store_put_write (r->txn, buf, len, err);
}

static int
sink_end (void *opaque, bvm_error_t *err)
{
  struct run *r = opaque;
  if (r->cur_kind == INGEST_OCI)
    {
      bool file = r->cur_is_file;
      r->cur_is_file = false;
      return file ? ocilayout_file_end (r->oci, err) : 0;
    }
  if (r->file_hashing)
    {
      char d[DIGEST_STR_LEN + 1];
      r->file_hashing = false;
      digest_final (&r->file_digest, d);
      return sbom_add_file (r->sbom, r->file_path, d, r->file_size, err);
    }
  if (r->cur_kind == INGEST_ARTIFACT && r->cur_in_store)
    {
      r->cur_in_store = false;
      return store_put_end (r->txn, err);
    }
  return 0;
}

/* Encryption at rest: artifacts and logs are sealed with the app's key from
 * the secret store, derived once per run. A host without a master key gets
 * one here, once (the operator backs it up: docs/operations.md); a
 * concurrent job that made it first is fine. */
static int
run_seal_key (struct run *r, bvm_error_t *err)
{
  struct secrets *st = r->o->secrets;
  char id[SECRETS_KEY_ID_HEX + 1];
  int ret;

  if (r->have_seal_key)
    return 0;
  if (st == NULL && r->store_secrets == NULL)
    {
      if (access (r->cfg->secrets.master_key, F_OK) < 0 && errno == ENOENT)
        {
          ret = secrets_init_master_key (r->cfg->secrets.master_key, id, err);
          if (ret == 0)
            note (r,
                  "secrets: created the master key `%s` (id %s) for encryption at rest: back "
                  "it up",
                  r->cfg->secrets.master_key, id);
          else if (access (r->cfg->secrets.master_key, F_OK) == 0)
            bvm_error_free (err);
          else
            return ret;
        }
      ret = secrets_open (&r->store_secrets, r->cfg->secrets.dir, r->cfg->secrets.master_key, err);
      if (ret < 0)
        return bvm_error_wrap (err, "opening the secret store");
    }
  if (st == NULL)
    st = r->store_secrets;
  if ((ret = secrets_derive_app_key (st, r->job->app, "seal", r->seal_key, err)) < 0)
    return ret;
  r->have_seal_key = true;
  return 0;
}

static bool
at_rest (const struct run *r)
{
  return !r->o->dry_run && r->cfg->secrets.at_rest;
}

static int
seal_artifacts (struct run *r, bvm_error_t *err)
{
  int ret = run_seal_key (r, err);
  return ret < 0 ? ret : store_txn_seal (r->txn, r->seal_key, err);
}

/* A regular file of a Dockerfile image's new layers, for the SBOM. */
static int
df_sbom_file (void *opaque, const char *path, const char *digest, uint64_t size, bvm_error_t *err)
{
  struct run *r = opaque;
  return r->sbom ? sbom_add_file (r->sbom, path, digest, size, err) : 0;
}

/* The builder's layout, received whole: verified as hostile (ocilayout.h),
 * its leading layers matched to a resolved base's. */
static int
ingest_dockerfile_image (struct run *r, bvm_error_t *err)
{
  cleanup_free struct ocilayout_base *bases = calloc (r->n_bases + 1, sizeof *bases);
  const struct ocilayout_image *d = &r->df;
  json_t *layers;
  int ret;

  if (bases == NULL)
    return bvm_error (err, ENOMEM, "bases");
  for (size_t i = 0; i < r->n_bases; i++)
    {
      bases[i].name = r->bases[i].repository;
      bases[i].manifest = r->bases[i].manifest;
      bases[i].config = r->bases[i].config;
      bases[i].config_len = r->bases[i].config_len;
      bases[i].layer_paths = r->bases[i].layer_paths;
    }
  ret = ocilayout_verify (&r->df, r->oci, bases, r->n_bases, df_sbom_file, r, err);
  if (ret < 0)
    return ret;
  r->have_df = true;
  layers = json_array ();
  for (size_t i = 0; layers != NULL && i < d->n_layers; i++)
    json_array_append_new (layers,
                           json_pack ("{s:s, s:s, s:I, s:I, s:o}", "digest",
                                      d->layers[i].desc.digest, "diff_id", d->layers[i].diff_id,
                                      "size", (json_int_t) d->layers[i].desc.size, "tar_bytes",
                                      (json_int_t) d->layers[i].tar_bytes, "base",
                                      d->layers[i].base >= 0
                                          ? json_string (r->bases[d->layers[i].base].repository)
                                          : json_null ()));
  jset (r->record, "oci_output",
        json_pack ("{s:s, s:s, s:o}", "manifest", d->manifest_digest, "config", d->config_digest,
                   "layers", layers ? layers : json_array ()));
  if (d->base >= 0)
    note (r,
          "ingest: the builder's image %s: %zu layers, %zu of them the base %s's, %llu files "
          "in the new ones",
          d->manifest_digest, d->n_layers, d->n_base_layers, r->bases[d->base].repository,
          (unsigned long long) d->files);
  else
    note (r, "ingest: the builder's image %s: %zu layers, no base's, %llu files",
          d->manifest_digest, d->n_layers, (unsigned long long) d->files);
  return 0;
}

static int
phase_ingest (struct run *r, bvm_error_t *err)
{
  struct ingest_limits lim = INGEST_LIMITS_INIT;
  struct ingest_sink sink = { r, sink_begin, sink_data, sink_end };
  struct ingest_stats st = { 0 };
  cleanup_close int fd = -1;
  const char *store_spec;
  int ret;

  if (r->spec->dockerfile)
    {
      /* the image is the builder's, under `oci/`; `image/` is refused */
      cleanup_free char *dir = workdir_file (r->wd, "oci-blobs");
      struct ocilayout_limits ol = OCILAYOUT_LIMITS_INIT;
      ol.max_entry_bytes = r->cfg->limits.max_output_bytes;
      ol.max_total_bytes = r->cfg->limits.max_output_bytes;
      ol.deadline_ms = now_ms () + INGEST_DEADLINE_MS;
      if (dir == NULL)
        return bvm_error (err, ENOMEM, "image layout");
      if ((ret = ocilayout_new (&r->oci, dir, &ol, err)) < 0)
        return ret;
      lim.roots = INGEST_ROOTS_DOCKERFILE;
    }
  else if (r->spec->image)
    {
      const char *to = r->spec->image->to;
      r->to_rel = xstrdup (to[0] == '/' ? to + 1 : to);
      r->layer_path = workdir_file (r->wd, "layer.tar.gz");
      ret = oci_layer_new (&r->layer, r->layer_path, 1, err);
      if (ret < 0)
        return ret;
      /* the destination's parents, so the layer stands on its own */
      if (r->to_rel[0])
        {
          char dir[SPEC_PATH_MAX + 1];
          for (size_t i = 0; r->to_rel[i]; i++)
            if (r->to_rel[i + 1] == '/' || r->to_rel[i + 1] == '\0')
              {
                snprintf (dir, sizeof dir, "%.*s", (int) (i + 1), r->to_rel);
                ret = oci_layer_add_dir (r->layer, dir, 0755, 0, 0, r->commit_time, err);
                if (ret < 0)
                  return ret;
              }
        }
    }
  store_spec = r->o->dry_run ? r->o->out_dir : r->cfg->artifacts;
  if (r->spec->n_artifacts > 0)
    {
      char spec[PATH_MAX];
      if (r->o->dry_run)
        snprintf (spec, sizeof spec, "dir:%s/artifacts", store_spec);
      else
        snprintf (spec, sizeof spec, "%s", store_spec);
      if ((ret = store_open (&r->store, spec, err)) < 0)
        return bvm_error_wrap (err, "opening the artifact store");
      /* a store that mints credentials per transaction (s3) makes them
       * expire with the job's role */
      if (r->role != NULL)
        store_set_expiry (r->store, (time_t) role_expires_at (r->role));
      if ((ret = store_txn_begin (&r->txn, r->store, r->plan->artifact_prefix, err)) < 0)
        return bvm_error_wrap (err, "opening the artifact store");
      if (at_rest (r) && (ret = seal_artifacts (r, err)) < 0)
        return bvm_error_wrap (err, "encryption at rest (secrets.at_rest)");
    }

  fd = open (r->vm.output_disk, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return bvm_error (err, errno, "open the output disk");
  lim.max_total_bytes = r->cfg->limits.max_output_bytes;
  lim.max_entry_bytes = r->cfg->limits.max_output_bytes;
  lim.deadline_ms = now_ms () + INGEST_DEADLINE_MS;
  ret = ingest_run (fd, GUEST_HEADER_SIZE, r->vm.guest.tar_bytes, &lim, &sink, &st, err);
  if (ret < 0)
    return bvm_error_wrap (err, "the build's outputs were refused");
  if (r->oci && (ret = ingest_dockerfile_image (r, err)) < 0)
    return bvm_error_wrap (err, "the build's outputs were refused");
  if (r->layer)
    {
      ret = oci_layer_finish (r->layer, &r->layer_desc, r->diff_id, err);
      if (ret < 0)
        return ret;
    }
  note (r, "ingest: %llu files, %llu directories, %llu symlinks, %llu bytes",
        (unsigned long long) st.files, (unsigned long long) st.dirs,
        (unsigned long long) st.symlinks, (unsigned long long) st.bytes);
  jset (r->record, "outputs",
        json_pack ("{s:I, s:I, s:I, s:I, s:I}", "entries", (json_int_t) st.entries, "files",
                   (json_int_t) st.files, "dirs", (json_int_t) st.dirs, "symlinks",
                   (json_int_t) st.symlinks, "bytes", (json_int_t) st.bytes));
  return 0;
}

/* --- image ------------------------------------------------------------------------ */

/* The job's ticket for the token server (regtoken.h): it names the job
 * and expires with its role. */
static int
mint_job_ticket (struct run *r, char **user, char **ticket, bvm_error_t *err)
{
  struct regtoken_job tj;
  unsigned char *key = NULL;
  size_t key_len = 0;
  int ret;

  memset (&tj, 0, sizeof tj);
  if (snprintf_checked (tj.app, sizeof tj.app, "%s", r->job->app) < 0
      || snprintf_checked (tj.id, sizeof tj.id, "%s", r->job->id) < 0
      || snprintf_checked (tj.commit, sizeof tj.commit, "%s", r->job->commit) < 0
      || snprintf_checked (tj.ref, sizeof tj.ref, "%s", r->job->ref ? r->job->ref : "") < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the job's fields do not fit a ticket");
  tj.expires_at = r->role ? role_expires_at (r->role) : wall_s () + ROLE_MARGIN_S;
  ret = regtoken_ticket_key_load (&key, &key_len, r->cfg->registry.job_tickets, err);
  if (ret == 0)
    ret = regtoken_ticket_mint (ticket, user, key, key_len, &tj, err);
  if (key != NULL)
    {
      mem_wipe (key, key_len);
      free (key);
    }
  return ret;
}

static int
open_registry (struct run *r, bvm_error_t *err)
{
  struct registry_options ro = REGISTRY_OPTIONS_INIT;
  struct registry_credentials *cr = NULL;
  int ret;

  cleanup_free char *user = NULL;
  char *ticket = NULL;

  if (r->reg)
    return 0;
  if (r->cfg->registry.job_tickets != NULL)
    {
      /* registry tokens scoped per job (docs/security.md, "Registry
       * tokens"): the job's ticket, not the runner's credentials, goes to
       * the token realm, and the token server grants what the job's role
       * allows */
      ret = mint_job_ticket (r, &user, &ticket, err);
      if (ret < 0)
        return bvm_error_wrap (err, "registry.job_tickets");
      ro.username = user;
      ro.password = ticket;
    }
  else
    {
      ret = registry_credentials_load (&cr, r->cfg->registry.credentials, err);
      if (ret < 0)
        return ret;
      if (cr)
        {
          ro.username = cr->username;
          ro.password = cr->password ? cr->password : cr->token;
        }
    }
  ro.url = r->cfg->registry.url;
  ro.cancel = r->o->cancel;
  ro.deadline_ms = now_ms () + REGISTRY_DEADLINE_MS;
  if (r->o->dry_run)
    ro.max_attempts = 1; /* the registry is optional here: do not wait on it */
  ret = registry_open (&r->reg, &ro, err);
  registry_credentials_free (cr);
  if (ticket != NULL)
    {
      mem_wipe (ticket, strlen (ticket));
      free (ticket);
    }
  return ret;
}

static int
fetch_base (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  const char *ref = im->base_tag ? im->base_tag : im->base_digest;
  cleanup_free char *body = NULL, *mt = NULL;
  char digest[DIGEST_STR_LEN + 1];
  size_t len = 0;
  int ret;

  ret = registry_manifest_get (r->reg, im->base_repository, ref, &body, &len, &mt, digest, err);
  if (ret < 0)
    return bvm_error_wrap (err, "base image `%s`", im->base);
  ret = oci_manifest_parse (&r->base_manifest, body, len, mt, "linux", "amd64", err);
  if (ret < 0)
    return bvm_error_wrap (err, "base image `%s`", im->base);
  if (oci_manifest_kind (r->base_manifest) == OCI_MANIFEST_INDEX)
    {
      char sel[DIGEST_STR_LEN + 1];
      snprintf (sel, sizeof sel, "%s", oci_manifest_selected (r->base_manifest)->digest);
      oci_manifest_free (r->base_manifest);
      r->base_manifest = NULL;
      free (body);
      free (mt);
      body = mt = NULL;
      ret = registry_manifest_get (r->reg, im->base_repository, sel, &body, &len, &mt, digest,
                                   err);
      if (ret == 0)
        ret = oci_manifest_parse (&r->base_manifest, body, len, mt, "linux", "amd64", err);
      if (ret == 0 && oci_manifest_kind (r->base_manifest) != OCI_MANIFEST_IMAGE)
        ret = bvm_error_code (err, BVM_E_INVALID, 0, "an index inside an index");
      if (ret < 0)
        return bvm_error_wrap (err, "base image `%s`", im->base);
    }
  ret = registry_blob_read (r->reg, im->base_repository,
                            oci_manifest_config (r->base_manifest)->digest, OCI_CONFIG_MAX,
                            &r->base_config, &r->base_config_len, err);
  if (ret < 0)
    return bvm_error_wrap (err, "base image `%s` config", im->base);
  snprintf (r->base_digest, sizeof r->base_digest, "%s", digest);
  note (r, "image: base %s (%s)", im->base, digest);
  return 0;
}

static void
bases_free (struct run *r)
{
  for (size_t i = 0; i < r->n_bases; i++)
    {
      struct run_base *b = &r->bases[i];
      free (b->from);
      free (b->name);
      free (b->repository);
      free (b->reference);
      oci_manifest_free (b->manifest);
      free (b->manifest_json);
      free (b->config);
      if (b->layer_paths)
        for (size_t j = 0; b->layer_paths[j]; j++)
          free (b->layer_paths[j]);
      free (b->layer_paths);
    }
  free (r->bases);
  r->bases = NULL;
  r->n_bases = 0;
}

/* An image manifest for linux/amd64 of repo:ref (through an index when it
 * is one), its bytes and its digest. */
static int
pull_manifest (struct run *r, struct run_base *b, bvm_error_t *err)
{
  cleanup_free char *mt = NULL;
  int ret;

  ret = registry_manifest_get (r->reg, b->repository, b->reference, &b->manifest_json,
                               &b->manifest_len, &mt, b->digest, err);
  if (ret == 0)
    ret = oci_manifest_parse (&b->manifest, b->manifest_json, b->manifest_len, mt, "linux",
                              "amd64", err);
  if (ret == 0 && oci_manifest_kind (b->manifest) == OCI_MANIFEST_INDEX)
    {
      char sel[DIGEST_STR_LEN + 1];
      snprintf (sel, sizeof sel, "%s", oci_manifest_selected (b->manifest)->digest);
      oci_manifest_free (b->manifest);
      b->manifest = NULL;
      free (b->manifest_json);
      b->manifest_json = NULL;
      free (mt);
      mt = NULL;
      ret = registry_manifest_get (r->reg, b->repository, sel, &b->manifest_json, &b->manifest_len,
                                   &mt, b->digest, err);
      if (ret == 0)
        ret = oci_manifest_parse (&b->manifest, b->manifest_json, b->manifest_len, mt, "linux",
                                  "amd64", err);
      if (ret == 0 && oci_manifest_kind (b->manifest) != OCI_MANIFEST_IMAGE)
        ret = bvm_error_code (err, BVM_E_INVALID, 0, "an index inside an index");
    }
  return ret;
}

/* A Dockerfile job's bases (plan.bases): each manifest (the digest
 * recorded), config and layer blob, digest-checked, into the work
 * directory as base<i>-<j>.blob; a layer two bases share is pulled once.
 * Together they must fit the job's scratch disk, where they go next. */
static int
pull_df_bases (struct run *r, bvm_error_t *err)
{
  const struct job_plan *p = r->plan;
  uint64_t total = 0, disk = p->res.disk_mib * 1024 * 1024;
  json_t *recbases = json_object_get (json_object_get (r->record, "dockerfile"), "bases");
  int ret;

  if (p->n_bases == 0)
    return 0;
  if (r->wd == NULL && (ret = workdir_create (&r->wd, r->cfg->work_dir, r->job->id, err)) < 0)
    return ret;
  if ((ret = open_registry (r, err)) < 0)
    return ret;
  r->bases = calloc (p->n_bases, sizeof *r->bases);
  if (r->bases == NULL)
    return bvm_error (err, ENOMEM, "base images");
  for (size_t i = 0; i < p->n_bases; i++)
    {
      const struct plan_base *pb = &p->bases[i];
      struct run_base *b = &r->bases[i];
      const struct oci_descriptor *layers;
      size_t n_layers = 0;

      r->n_bases = i + 1;
      b->from = strdup (pb->from);
      b->name = strdup (pb->name);
      b->repository = strdup (pb->repository);
      b->reference = strdup (pb->reference);
      if (b->from == NULL || b->name == NULL || b->repository == NULL || b->reference == NULL)
        return bvm_error (err, ENOMEM, "base images");
      ret = pull_manifest (r, b, err);
      if (ret == 0)
        ret = registry_blob_read (r->reg, b->repository, oci_manifest_config (b->manifest)->digest,
                                  OCI_CONFIG_MAX, &b->config, &b->config_len, err);
      if (ret < 0)
        return bvm_error_wrap (err, "base image `%s:%s` (%s)", b->repository, b->reference,
                               b->from);
      layers = oci_manifest_layers (b->manifest, &n_layers);
      b->layer_paths = calloc (n_layers + 1, sizeof *b->layer_paths);
      if (b->layer_paths == NULL)
        return bvm_error (err, ENOMEM, "base images");
      for (size_t j = 0; j < n_layers; j++)
        {
          const char *have = NULL;
          char name[64];
          /* a layer an earlier base has is that base's file */
          for (size_t k = 0; have == NULL && k <= i; k++)
            {
              size_t nk = 0;
              const struct oci_descriptor *lk;
              if (r->bases[k].manifest == NULL || r->bases[k].layer_paths == NULL)
                continue;
              lk = oci_manifest_layers (r->bases[k].manifest, &nk);
              for (size_t m = 0; have == NULL && m < nk && (k < i || m < j); m++)
                if (r->bases[k].layer_paths[m] && strcmp (lk[m].digest, layers[j].digest) == 0)
                  have = r->bases[k].layer_paths[m];
            }
          if (have != NULL)
            {
              if ((b->layer_paths[j] = strdup (have)) == NULL)
                return bvm_error (err, ENOMEM, "base images");
              continue;
            }
          total += layers[j].size;
          if (total > disk)
            return bvm_error_code (err, BVM_E_LIMIT, 0,
                                   "the base images are larger than the job's disk (%llu MiB, "
                                   "`resources.disk_mib`)",
                                   (unsigned long long) p->res.disk_mib);
          snprintf (name, sizeof name, "base%zu-%zu.blob", i, j);
          if ((b->layer_paths[j] = workdir_file (r->wd, name)) == NULL)
            return bvm_error (err, ENOMEM, "base images");
          ret = registry_blob_get (r->reg, b->repository, layers[j].digest, layers[j].size,
                                   b->layer_paths[j], err);
          if (ret < 0)
            return bvm_error_wrap (err, "base image `%s:%s` layer %zu", b->repository,
                                   b->reference, j);
        }
      if (json_array_get (recbases, i) != NULL)
        json_object_set_new (json_array_get (recbases, i), "digest", json_string (b->digest));
      note (r, "base: %s \u2192 %s%s%s@%s (%zu layer%s)", b->from, b->repository,
            strncmp (b->reference, "sha256:", 7) == 0 ? "" : ":",
            strncmp (b->reference, "sha256:", 7) == 0 ? "" : b->reference, b->digest, n_layers,
            n_layers == 1 ? "" : "s");
    }
  return 0;
}

/* The base image's manifest and config, before the build: a base that
 * cannot be pulled fails the job now, not after the whole build - in a
 * dry-run too, whose image would otherwise differ from the real run's. */
static int
phase_base (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  int ret;

  if (r->spec->dockerfile)
    return pull_df_bases (r, err);
  if (im == NULL || im->base == NULL || r->base_skipped)
    return 0;
  ret = open_registry (r, err);
  if (ret == 0)
    ret = fetch_base (r, err);
  if (ret < 0 && r->o->dry_run)
    {
      /* the cause first, then what to do about it */
      cleanup_free char *cause = xstrdup (bvm_error_msg (err));
      return bvm_error_code (err, bvm_error_get_code (err), 0,
                             "%s: a dry-run builds on the base image as a real run does: push "
                             "it to `%s` (buildvm-image/base/push-base.sh), name a registry that "
                             "has it (`registry.url`, --config), or set `image.base` to null",
                             cause, r->cfg->registry.url);
    }
  return ret;
}

/* provenance: what was built, from where, in which build VM */
static void
provenance_labels (struct run *r, json_t *labels)
{
  json_object_set_new (labels, "org.opencontainers.image.revision", json_string (r->commit));
  json_object_set_new (labels, "dev.buildvm.app", json_string (r->job->app));
  json_object_set_new (labels, "dev.buildvm.commit", json_string (r->commit));
  json_object_set_new (labels, "dev.buildvm.ref", json_string (r->job->ref));
  json_object_set_new (labels, "dev.buildvm.vm.kernel", json_string (r->plan->img->kernel_sha256));
  json_object_set_new (labels, "dev.buildvm.vm.rootfs", json_string (r->plan->img->rootfs_sha256));
  json_object_set_new (labels, "dev.buildvm.vm.profile", json_string (r->plan->img->profile));
}

/* A Dockerfile job's config and manifest: the runner's own, from the
 * builder's checked fields (ocilayout_config_build) and the verified layers:
 * the base's blobs as the base's manifest names them, the new ones as the
 * runner compressed them. */
static int
phase_image_dockerfile (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  cleanup_free struct oci_descriptor *layers = NULL;
  cleanup_free char *by = NULL;
  json_t *labels = json_object (), *ann;
  char created[40];
  int ret;

  format_rfc3339 (created, sizeof created, r->commit_time);
  by = xasprintf_or_null ("buildvm: %s@%s (%s)", r->job->app, r->commit,
                          r->spec->dockerfile->path ? r->spec->dockerfile->path : "Dockerfile");
  layers = calloc (r->df.n_layers + 1, sizeof *layers);
  if (labels == NULL || by == NULL || layers == NULL)
    {
      json_decref (labels);
      return bvm_error (err, ENOMEM, "image config");
    }
  for (size_t i = 0; im != NULL && i < im->n_labels; i++)
    json_object_set_new (labels, im->labels[i].key, json_string (im->labels[i].value));
  provenance_labels (r, labels);
  ret = ocilayout_config_build (&r->config_json, &r->config_len, &r->df, created, labels, by, err);
  json_decref (labels);
  if (ret < 0)
    return ret;
  snprintf (r->config_desc.media_type, sizeof r->config_desc.media_type, "%s", OCI_MEDIA_CONFIG);
  r->config_desc.size = r->config_len;
  if ((ret = digest_buffer (r->config_desc.digest, r->config_json, r->config_len, err)) < 0)
    return ret;
  for (size_t i = 0; i < r->df.n_layers; i++)
    layers[i] = r->df.layers[i].desc;
  ann = json_pack ("{s:s, s:s}", "org.opencontainers.image.revision", r->commit,
                   "org.opencontainers.image.created", created);
  ret = oci_manifest_build (&r->manifest_json, &r->manifest_len, &r->config_desc, layers,
                            r->df.n_layers, ann, err);
  json_decref (ann);
  if (ret < 0)
    return ret;
  if ((ret = digest_buffer (r->manifest_digest, r->manifest_json, r->manifest_len, err)) < 0)
    return ret;
  note (r, "image: %zu layers (%zu new, compressed by the runner), config %s, manifest %s",
        r->df.n_layers, r->df.n_layers - r->df.n_base_layers, r->config_desc.digest,
        r->manifest_digest);
  return 0;
}

static int
phase_image (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  struct oci_image_spec os = { 0 };
  cleanup_free struct oci_descriptor *layers = NULL;
  cleanup_free const char **env = NULL;
  json_t *labels = NULL, *ann = NULL;
  const char *diff_ids[1] = { r->diff_id };
  char created[40];
  size_t n_base = 0;
  int ret;

  if (r->spec->dockerfile)
    return phase_image_dockerfile (r, err);
  format_rfc3339 (created, sizeof created, r->commit_time);
  env = calloc (im->n_env + 1, sizeof *env);
  labels = json_object ();
  if (env == NULL || labels == NULL)
    {
      json_decref (labels);
      return bvm_error (err, ENOMEM, "image config");
    }
  for (size_t i = 0; i < im->n_env; i++)
    env[i] = xasprintf_or_null ("%s=%s", im->env[i].key, im->env[i].value);
  for (size_t i = 0; i < im->n_labels; i++)
    json_object_set_new (labels, im->labels[i].key, json_string (im->labels[i].value));
  provenance_labels (r, labels);

  os.created = created;
  os.entrypoint = (const char *const *) im->entrypoint;
  os.cmd = (const char *const *) im->cmd;
  os.env = im->n_env ? env : NULL;
  os.workdir = im->workdir;
  os.user = im->user;
  os.exposed_ports = (const char *const *) im->ports;
  os.labels = labels;
  {
    char *by = xasprintf_or_null ("buildvm: %s@%s (%zu steps)", r->job->app, r->commit,
                                  r->spec->n_steps);
    os.history_created_by = by;
    ret = oci_config_build (&r->config_json, &r->config_len, &os, r->base_config,
                            r->base_config_len, diff_ids, 1, err);
    free (by);
  }
  for (size_t i = 0; i < im->n_env; i++)
    free ((char *) env[i]);
  json_decref (labels);
  if (ret < 0)
    return ret;
  snprintf (r->config_desc.media_type, sizeof r->config_desc.media_type, "%s", OCI_MEDIA_CONFIG);
  r->config_desc.size = r->config_len;
  if ((ret = digest_buffer (r->config_desc.digest, r->config_json, r->config_len, err)) < 0)
    return ret;

  if (r->base_manifest)
    oci_manifest_layers (r->base_manifest, &n_base);
  layers = calloc (n_base + 1, sizeof *layers);
  if (layers == NULL)
    return bvm_error (err, ENOMEM, "manifest");
  if (n_base)
    memcpy (layers, oci_manifest_layers (r->base_manifest, &n_base), n_base * sizeof *layers);
  layers[n_base] = r->layer_desc;
  ann = json_pack ("{s:s, s:s}", "org.opencontainers.image.revision", r->commit,
                   "org.opencontainers.image.created", created);
  ret = oci_manifest_build (&r->manifest_json, &r->manifest_len, &r->config_desc, layers,
                            n_base + 1, ann, err);
  json_decref (ann);
  if (ret < 0)
    return ret;
  ret = digest_buffer (r->manifest_digest, r->manifest_json, r->manifest_len, err);
  if (ret < 0)
    return ret;
  note (r, "image: layer %s (%llu bytes), manifest %s", r->layer_desc.digest,
        (unsigned long long) r->layer_desc.size, r->manifest_digest);
  return 0;
}

/* --- the image can start ---------------------------------------------------------- */

/* Issue 18: an image whose program is not in it pushed fine and failed when
 * it was run. Its layers - the base's, downloaded into the work directory
 * (where the dry-run's layout takes them from), and the app's - are laid
 * out in an imgfs, and the program its config names (Entrypoint[0], else
 * Cmd[0]) must resolve there as a runtime resolves it, with what the kernel
 * needs to exec it. A failure names the missing path: nothing is pushed. */
/* The program an image config runs (Entrypoint[0], else Cmd[0]: *from_cmd
 * says which), its PATH and its working directory, as a runtime reads them;
 * *argv0 NULL when it names none. */
static void
config_program (const json_t *c, const char **argv0, const char **path_env, const char **workdir,
                bool *from_cmd)
{
  json_t *argv = json_object_get (c, "Entrypoint"), *v;
  size_t i;

  *from_cmd = json_array_size (argv) == 0;
  if (*from_cmd)
    argv = json_object_get (c, "Cmd");
  *argv0 = json_string_value (json_array_get (argv, 0));
  *path_env = NULL;
  json_array_foreach (json_object_get (c, "Env"), i, v)
    if (json_is_string (v) && strncmp (json_string_value (v), "PATH=", 5) == 0)
      *path_env = json_string_value (v) + 5;
  *workdir = json_string_value (json_object_get (c, "WorkingDir"));
  if (*workdir != NULL && (*workdir)[0] == '\0')
    *workdir = NULL;
}

/* A Dockerfile image: every layer, bottom first (the base's blobs as
 * pulled, the runner's gzip of the new ones), and the program its
 * ENTRYPOINT or CMD names. */
static int
phase_startable_dockerfile (struct run *r, bvm_error_t *err)
{
  cleanup_json json_t *cfg = json_loadb (r->config_json, r->config_len, 0, NULL);
  json_t *c = json_object_get (cfg, "config");
  const char *argv0, *path_env, *workdir, *field, *fix = NULL;
  struct imgfs *fs = NULL;
  char why[2048];
  bool from_cmd;
  size_t i;
  int ret;

  config_program (c, &argv0, &path_env, &workdir, &from_cmd);
  field = from_cmd ? "the Dockerfile's CMD[0]" : "the Dockerfile's ENTRYPOINT[0]";
  if (argv0 == NULL)
    {
      note (r, "image: names no program to run (no ENTRYPOINT or CMD): not checked");
      return 0;
    }
  if ((ret = imgfs_new (&fs, err)) < 0)
    return ret;
  for (i = 0; i < r->df.n_layers && ret == 0; i++)
    {
      char what[DIGEST_STR_LEN + 64];
      snprintf (what, sizeof what, "layer %zu (%s)", i, r->df.layers[i].desc.digest);
      ret = imgfs_add_layer (fs, r->df.layers[i].path, what, err);
    }
  if (ret == 0 && imgfs_check_start (fs, argv0, path_env, workdir, why, sizeof why, &fix) == 1)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "the image cannot start: %s (%s): %s", why, field,
                          fix);
  imgfs_free (fs);
  if (ret == 0)
    note (r, "image: `%s` (%s) resolves in the image", argv0, field);
  return ret;
}

static int
phase_startable (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  cleanup_json json_t *cfg = NULL;
  json_t *c;
  struct imgfs *fs = NULL;
  const struct oci_descriptor *base = NULL;
  const char *argv0, *path_env, *workdir, *field, *fix = NULL;
  char why[2048];
  size_t n_base = 0, i;
  bool from_cmd;
  int ret;

  if (r->spec->dockerfile)
    return phase_startable_dockerfile (r, err);
  if (im->base && r->base_skipped)
    {
      note (r, "image: not checked that it can start: the base image was not pulled");
      return 0;
    }
  cfg = json_loadb (r->config_json, r->config_len, 0, NULL);
  c = json_object_get (cfg, "config");
  config_program (c, &argv0, &path_env, &workdir, &from_cmd);
  if (from_cmd)
    field = im->cmd ? "image.cmd[0]" : "the base image's Cmd[0]";
  else
    field = im->entrypoint ? "image.entrypoint[0]" : "the base image's Entrypoint[0]";
  if (argv0 == NULL)
    {
      note (r, "image: names no program to run (no entrypoint or cmd): not checked");
      return 0;
    }

  if ((ret = imgfs_new (&fs, err)) < 0)
    return ret;
  if (r->base_manifest)
    base = oci_manifest_layers (r->base_manifest, &n_base);
  for (i = 0; i < n_base && ret == 0; i++)
    {
      char name[32], what[DIGEST_STR_LEN + 64];
      cleanup_free char *path = NULL;
      snprintf (name, sizeof name, "base-%zu.blob", i);
      snprintf (what, sizeof what, "base layer %s", base[i].digest);
      path = workdir_file (r->wd, name);
      if (path == NULL)
        ret = bvm_error (err, ENOMEM, "base layer");
      else if ((ret = open_registry (r, err)) == 0
               && (ret = registry_blob_get (r->reg, im->base_repository, base[i].digest,
                                            base[i].size, path, err))
                      == 0)
        ret = imgfs_add_layer (fs, path, what, err);
      if (ret < 0)
        bvm_error_wrap (err, "base image `%s`", im->base);
    }
  if (ret == 0)
    ret = imgfs_add_layer (fs, r->layer_path, "the app's layer", err);
  if (ret == 0 && imgfs_check_start (fs, argv0, path_env, workdir, why, sizeof why, &fix) == 1)
    ret = bvm_error_code (err, BVM_E_INVALID, 0, "the image cannot start: %s (%s): %s", why, field,
                          fix);
  imgfs_free (fs);
  if (ret == 0)
    note (r, "image: `%s` (%s) resolves in the image", argv0, field);
  return ret;
}

/* --- push ----------------------------------------------------------------------- */

/* A Dockerfile image's layers: the base's mounted from the base's
 * repository (or copied), never uploaded again; the new ones uploaded. */
static int
push_dockerfile_layers (struct run *r, bvm_error_t *err)
{
  for (size_t i = 0; i < r->df.n_layers; i++)
    {
      const struct ocilayout_layer *l = &r->df.layers[i];
      bool exists = false, mounted = false;
      int ret;

      if (l->base < 0)
        {
          ret = registry_blob_push (r->reg, r->plan->dest_repo, l->desc.digest, l->desc.size,
                                    l->path, NULL, err);
          if (ret < 0)
            return bvm_error_wrap (err, "pushing layer %zu", i);
          continue;
        }
      ret = registry_blob_exists (r->reg, r->plan->dest_repo, l->desc.digest, &exists, NULL, err);
      if (ret == 0 && !exists)
        ret = registry_blob_mount (r->reg, r->plan->dest_repo, r->bases[l->base].repository,
                                   l->desc.digest, &mounted, err);
      if (ret == 0 && !exists && !mounted)
        ret = registry_blob_copy (r->reg, r->plan->dest_repo, r->bases[l->base].repository,
                                  l->desc.digest, l->desc.size, r->wd->path, err);
      if (ret < 0)
        return bvm_error_wrap (err, "base layer %s", l->desc.digest);
    }
  return 0;
}

static int
phase_push (struct run *r, bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  cleanup_free char *config_path = workdir_file (r->wd, "config.json");
  struct registry_stats st;
  bool uploaded = false;
  size_t n_base = 0;
  const struct oci_descriptor *base_layers = NULL;
  int ret;

  if ((ret = open_registry (r, err)) < 0)
    return ret;
  if ((ret = check_cancel (r, err)) < 0)
    return ret;
  /* base layers: already there, or mounted across repositories, or copied */
  if (r->base_manifest)
    base_layers = oci_manifest_layers (r->base_manifest, &n_base);
  for (size_t i = 0; i < n_base; i++)
    {
      bool exists = false, mounted = false;
      ret = registry_blob_exists (r->reg, r->plan->dest_repo, base_layers[i].digest, &exists, NULL,
                                  err);
      if (ret == 0 && !exists)
        ret = registry_blob_mount (r->reg, r->plan->dest_repo, im->base_repository,
                                   base_layers[i].digest, &mounted, err);
      if (ret == 0 && !exists && !mounted)
        ret = registry_blob_copy (r->reg, r->plan->dest_repo, im->base_repository,
                                  base_layers[i].digest, base_layers[i].size, r->wd->path, err);
      if (ret < 0)
        return bvm_error_wrap (err, "base layer %s", base_layers[i].digest);
    }
  if (r->spec->dockerfile)
    ret = push_dockerfile_layers (r, err);
  else if ((ret = registry_blob_push (r->reg, r->plan->dest_repo, r->layer_desc.digest,
                                      r->layer_desc.size, r->layer_path, &uploaded, err))
           < 0)
    bvm_error_wrap (err, "pushing the layer");
  if (ret < 0)
    return ret;
  if ((ret = fs_write_atomic (config_path, r->config_json, r->config_len, 0600, err)) < 0)
    return ret;
  ret = registry_blob_push (r->reg, r->plan->dest_repo, r->config_desc.digest, r->config_desc.size,
                            config_path, NULL, err);
  if (ret < 0)
    return bvm_error_wrap (err, "pushing the image config");
  fault_point ("after-blobs");
  /* the manifest by digest: complete and addressable, but no tag moves yet */
  ret = registry_manifest_put (r->reg, r->plan->dest_repo, r->manifest_digest, OCI_MEDIA_MANIFEST,
                               r->manifest_json, r->manifest_len, NULL, err);
  if (ret < 0)
    return bvm_error_wrap (err, "pushing the manifest");
  fault_point ("after-manifest");
  registry_get_stats (r->reg, &st);
  note (r, "push: %llu blob(s) uploaded (%llu bytes), %llu mounted, %llu requests",
        (unsigned long long) st.blobs_uploaded, (unsigned long long) st.bytes_uploaded,
        (unsigned long long) st.blobs_mounted, (unsigned long long) st.requests);
  return 0;
}

static int
phase_artifacts (struct run *r, bvm_error_t *err)
{
  struct store_summary sum;
  int ret;

  if (r->txn == NULL)
    return 0;
  if (r->o->fence && (ret = r->o->fence (r->o->opaque, err)) < 0)
    return ret;
  ret = store_txn_commit (r->txn, &sum, NULL, err);
  r->txn = NULL; /* consumed, also on failure */
  if (ret < 0)
    return bvm_error_wrap (err, "committing the artifacts");
  /* the summary, not the index: the record stays small however many
   * artifacts there are, and the index it names is already in the store */
  jset (r->record, "artifacts", store_summary_to_json (&sum));
  r->art_sum = sum;
  r->have_art_sum = true;
  note (r, "artifacts: %llu objects, %llu bytes under %s", (unsigned long long) r->artifacts_count,
        (unsigned long long) r->artifacts_bytes, r->plan->artifact_prefix);
  return 0;
}

/* The commit and the ref the image at `tag` was built from: the
 * `dev.buildvm.commit` and `dev.buildvm.ref` labels of its config, which
 * phase_image sets after the spec's own labels (an app cannot choose them).
 * *found false: no such tag. `out` "": the tag names something buildvm did
 * not build (an index, no or a bad label). */
static int
tagged_commit (char out[GITSRC_OID_HEX + 1], char ref[JOB_REF_MAX + 1], bool *found, struct run *r,
               const char *tag, bvm_error_t *err)
{
  cleanup_free char *body = NULL, *mt = NULL, *cfg = NULL;
  char digest[DIGEST_STR_LEN + 1];
  struct oci_manifest *m = NULL;
  size_t len = 0, cfg_len = 0;
  json_t *doc = NULL, *labels;
  const char *c;
  int ret;

  out[0] = ref[0] = '\0';
  ret = registry_manifest_find (r->reg, r->plan->dest_repo, tag, found, &body, &len, &mt, digest,
                                err);
  if (ret < 0 || !*found)
    return ret;
  if (strcmp (digest, r->manifest_digest) == 0)
    {
      /* this very image: an earlier attempt of this job got this far */
      snprintf (out, GITSRC_OID_HEX + 1, "%s", r->commit);
      snprintf (ref, JOB_REF_MAX + 1, "%s", r->job->ref);
      return 0;
    }
  if (oci_manifest_parse (&m, body, len, mt, "linux", "amd64", err) < 0)
    {
      bvm_error_free (err);
      return 0;
    }
  if (oci_manifest_kind (m) == OCI_MANIFEST_IMAGE)
    ret = registry_blob_read (r->reg, r->plan->dest_repo, oci_manifest_config (m)->digest,
                              OCI_CONFIG_MAX, &cfg, &cfg_len, err);
  oci_manifest_free (m);
  if (ret < 0)
    return bvm_error_wrap (err, "reading the image at `%s:%s`", r->plan->dest_repo, tag);
  if (cfg == NULL || (doc = json_loadb (cfg, cfg_len, 0, NULL)) == NULL)
    return 0;
  labels = json_object_get (json_object_get (doc, "config"), "Labels");
  c = json_string_value (json_object_get (labels, "dev.buildvm.commit"));
  if (c != NULL && job_commit_problem (c) == NULL)
    snprintf (out, GITSRC_OID_HEX + 1, "%s", c);
  c = json_string_value (json_object_get (labels, "dev.buildvm.ref"));
  if (out[0] && c != NULL && job_ref_problem (c) == NULL)
    snprintf (ref, JOB_REF_MAX + 1, "%s", c);
  json_decref (doc);
  return 0;
}

/* Issue 11 item 6: two pushes to main build concurrently, the older commit
 * finishes last, and `latest` must not go back to it. A mutable tag moves
 * when nothing has it yet, when it names this commit or an ancestor of it,
 * or when this commit is the tip of the job's ref in the mirror and the
 * tag's image was built from that same ref (or carries no buildvm labels):
 * a force-push moves a branch backwards or sideways, and the ref's tip is
 * the authority then (which also covers a tag naming a commit the mirror
 * does not have). The tip of another branch never takes a tag back: `latest`
 * built from main does not go back to a feature branch's older tip. */
static int
tag_may_move (bool *ok, char *why, size_t why_size, struct run *r, const char *tag,
              bvm_error_t *err)
{
  char old[GITSRC_OID_HEX + 1], tip[GITSRC_OID_HEX + 1], old_ref[JOB_REF_MAX + 1];
  bool found, desc = false, has_tip;

  *ok = true;
  if (tagged_commit (old, old_ref, &found, r, tag, err) < 0)
    return -1;
  if (!found)
    return 0;
  if (old[0] && gitsrc_descends (&desc, r->repo, r->commit, old, err) < 0)
    return -1;
  if (desc)
    return 0;
  if (gitsrc_ref_tip (tip, &has_tip, r->repo, r->job->ref, err) < 0)
    return -1;
  if (has_tip && strcmp (tip, r->commit) == 0 && (!old[0] || strcmp (old_ref, r->job->ref) == 0))
    return 0;
  *ok = false;
  if (old[0] && strcmp (old_ref, r->job->ref) != 0)
    snprintf (why, why_size, "it names commit %s of %s, which %s does not descend from", old,
              old_ref[0] ? old_ref : "another ref", r->commit);
  else if (old[0])
    snprintf (
        why, why_size,
        "it names commit %s, which %s does not descend from, and %s is not the tip of %s (%s)",
        old, r->commit, r->commit, r->job->ref, has_tip ? tip : "not in the mirror");
  else
    snprintf (why, why_size,
              "it names an image without a buildvm commit label, and %s is not the tip of %s (%s)",
              r->commit, r->job->ref, has_tip ? tip : "not in the mirror");
  return 0;
}

/* Put the manifest under `tag` unless it is a mutable tag that would go
 * backwards; a tag left alone is noted in `skipped`, not an error. */
static int
put_tag (struct run *r, const char *tag, const char *tmpl, json_t *tags, json_t *skipped,
         bvm_error_t *err)
{
  char why[512];
  bool ok = true;
  int ret;

  if (config_tag_mutable (tmpl) && (ret = tag_may_move (&ok, why, sizeof why, r, tag, err)) < 0)
    return bvm_error_wrap (err, "checking `%s:%s`", r->plan->dest_repo, tag);
  if (!ok)
    {
      note (r, "tag: left `%s` where it is: %s", tag, why);
      json_array_append_new (skipped, json_pack ("{s:s, s:s}", "tag", tag, "reason", why));
      return 0;
    }
  ret = registry_manifest_put (r->reg, r->plan->dest_repo, tag, OCI_MEDIA_MANIFEST,
                               r->manifest_json, r->manifest_len, NULL, err);
  if (ret < 0)
    return bvm_error_wrap (err, "tagging `%s:%s`", r->plan->dest_repo, tag);
  json_array_append_new (tags, json_string (tag));
  return 0;
}

static int
phase_tag (struct run *r, bvm_error_t *err)
{
  struct gitsrc_limits lim = GITSRC_LIMITS_INIT;
  json_t *tags = json_array ();
  json_t *skipped = json_array ();
  const char *host;
  bool tagged;
  int ret;

  if (r->o->fence && (ret = r->o->fence (r->o->opaque, err)) < 0)
    goto cleanup;
  /* the app's mirror again (no network: the commit is in it), locked from
   * the checks to the last tag so that two jobs of the app on this runner
   * never interleave a check and a move */
  lim.deadline_ms = now_ms () + TAG_LOCK_DEADLINE_MS;
  lim.allow_addresses = &r->cfg->checkout.allow_addresses;
  ret = gitsrc_fetch (&r->repo, r->cfg->cache_dir, r->job->app, r->job->repo, NULL, r->commit,
                      &lim, NULL, err);
  if (ret < 0)
    goto cleanup;
  ret = put_tag (r, r->plan->dest_tag, r->cfg->registry.tag, tags, skipped, err);
  for (size_t i = 0; ret == 0 && i < r->plan->n_extra_tags; i++)
    ret = put_tag (r, r->plan->extra_tags[i], r->cfg->registry.extra_tags[i], tags, skipped, err);
  gitsrc_repo_free (r->repo);
  r->repo = NULL;
  if (ret < 0)
    goto cleanup;
  tagged = json_array_size (tags) > 0
           && strcmp (json_string_value (json_array_get (tags, 0)), r->plan->dest_tag) == 0;
  host = strstr (r->cfg->registry.url, "://");
  host = host ? host + 3 : r->cfg->registry.url;
  {
    char *ref = xasprintf_or_null ("%s/%s%s%s@%s", host, r->plan->dest_repo, tagged ? ":" : "",
                                   tagged ? r->plan->dest_tag : "", r->manifest_digest);
    jset (r->record, "image",
          json_pack ("{s:s, s:s, s:s, s:O, s:s, s:s, s:s}", "registry", r->cfg->registry.url,
                     "repository", r->plan->dest_repo, "tag", r->plan->dest_tag, "tags", tags,
                     "digest", r->manifest_digest, "config", r->config_desc.digest, "reference",
                     ref ? ref : ""));
    if (json_array_size (skipped) > 0)
      jset (json_object_get (r->record, "image"), "tags_skipped", json_incref (skipped));
    note (r, "tag: %s", ref ? ref : "");
    free (ref);
  }
  fault_point ("after-tag");
cleanup:
  json_decref (tags);
  json_decref (skipped);
  return ret;
}

/* --- attest ----------------------------------------------------------------------- */

/* The base image's package list: the `org.buildvm.base.packages` label of
 * its config (buildvm-image/base), or NULL. The config was fetched by
 * digest, so the label is the base image's, not the build's. */
static const char *
base_packages_label (json_t *doc)
{
  return json_string_value (
      json_object_get (json_object_get (json_object_get (doc, "config"), "Labels"),
                       "org.buildvm.base.packages"));
}

/* A base as the provenance names it: `repository:tag` or `repository@digest`. */
static char *
base_ref (const struct run_base *b)
{
  const char *ref = b->reference ? b->reference : b->digest;
  return xasprintf_or_null ("%s%s%s", b->repository, digest_problem (ref) == NULL ? "@" : ":",
                            ref);
}

/* A Dockerfile job's resolvedDependencies beyond the commit: every base
 * image its FROM lines (and COPY --from images) resolved to, by digest, then
 * the lock files' packages. */
static int
dockerfile_dependencies (json_t **out, struct run *r, const json_t *packages, bvm_error_t *err)
{
  json_t *deps = json_array (), *d;
  size_t i;

  if (deps == NULL)
    return bvm_error (err, ENOMEM, "provenance");
  for (i = 0; i < r->n_bases; i++)
    {
      const struct run_base *b = &r->bases[i];
      cleanup_free char *ref = base_ref (b);
      if (ref == NULL || digest_problem (b->digest) != NULL)
        continue;
      d = json_pack ("{s:s, s:s, s:{s:s}, s:s, s:{s:s}}", "name", "base-image", "uri", ref,
                     "digest", "sha256", b->digest + 7, "mediaType", OCI_MEDIA_MANIFEST,
                     "annotations", "from", b->from ? b->from : "");
      if (d == NULL || json_array_append_new (deps, d) < 0)
        {
          json_decref (deps);
          return bvm_error (err, ENOMEM, "provenance");
        }
    }
  json_array_foreach (packages, i, d)
    if (json_array_append_new (deps, json_deep_copy (d)) < 0)
      {
        json_decref (deps);
        return bvm_error (err, ENOMEM, "provenance");
      }
  *out = deps;
  return 0;
}

/* The SBOM and the signed statement, from the runner's state only: the
 * request, the spec read from the commit, the role, the VM image manifest,
 * the egress decisions the broker made, and digests this process computed.
 * Nothing the build printed or wrote is read here; its files appear in the
 * SBOM only as the paths and sha256s the runner hashed while ingesting. */
static int
attest_build (struct run *r, char **sbom_text, size_t *sbom_len,
              char sbom_digest[DIGEST_STR_LEN + 1], char **statement, size_t *statement_len,
              bvm_error_t *err)
{
  const struct spec_image *im = r->spec->image;
  struct sbom_meta meta = { r->plan->dest_repo, r->commit, r->manifest_digest, NULL,
                            BUILDVM_VERSION };
  bool image = r->spec->image != NULL;
  struct attest_provenance p = { 0 };
  cleanup_json json_t *base_cfg = NULL, *spec = NULL, *role = NULL, *st = NULL, *deps = NULL;
  char finished[40], art_name[STORE_KEY_MAX + 16];
  int ret;

  format_rfc3339 (finished, sizeof finished, wall_s ());
  meta.timestamp = finished;
  sbom_digest[0] = '\0';
  if (!image)
    goto statement; /* artifacts only: the SBOM is the image layer's */
  if (r->base_manifest && r->base_digest[0])
    {
      if (r->base_config)
        base_cfg = json_loadb (r->base_config, r->base_config_len, 0, NULL);
      if ((ret = sbom_set_base (r->sbom, im->base, r->base_digest, base_packages_label (base_cfg),
                                err))
          < 0)
        return bvm_error_wrap (err, "the SBOM");
    }
  else if (r->have_df && r->df.base >= 0)
    {
      /* a Dockerfile image: the base its leading layers are */
      const struct run_base *b = &r->bases[r->df.base];
      cleanup_free char *ref = base_ref (b);
      if (b->config)
        base_cfg = json_loadb (b->config, b->config_len, 0, NULL);
      if (ref == NULL)
        return bvm_error (err, ENOMEM, "the SBOM");
      if ((ret = sbom_set_base (r->sbom, ref, b->digest, base_packages_label (base_cfg), err)) < 0)
        return bvm_error_wrap (err, "the SBOM");
    }
  if ((ret = sbom_to_json (sbom_text, sbom_len, r->sbom, &meta, err)) < 0
      || (ret = digest_buffer (sbom_digest, *sbom_text, *sbom_len, err)) < 0)
    return ret;

statement:
  spec = spec_to_json (r->spec);
  role = role_to_json (r->role);
  p.builder_id = r->cfg->attest.builder_id;
  p.version = BUILDVM_VERSION;
  p.app = r->job->app;
  p.repo = r->job->repo;
  p.commit = r->commit;
  p.ref = r->job->ref;
  p.job_id = r->job->id;
  p.attempt = r->o->attempt ? r->o->attempt : 1;
  p.request = json_object_get (r->record, "request");
  p.spec = spec;
  p.spec_digest = r->spec_digest;
  p.role = role;
  p.egress = json_object_get (r->record, "egress");
  p.resources = json_object_get (r->record, "resources");
  p.profile = r->plan->img->profile;
  p.kernel = r->plan->img->kernel_sha256;
  p.rootfs = r->plan->img->rootfs_sha256;
  p.started = r->started_at;
  p.finished = finished;
  p.image_name = image ? r->plan->dest_repo : NULL;
  p.image_digest = image ? r->manifest_digest : NULL;
  if (r->have_art_sum)
    {
      snprintf (art_name, sizeof art_name, "artifacts:%s", r->art_sum.index_key);
      p.artifacts_name = art_name;
      p.artifacts_digest = r->art_sum.index_digest;
    }
  if (r->base_manifest && r->base_digest[0])
    {
      p.base_name = im->base;
      p.base_digest = r->base_digest;
    }
  p.sbom_digest = image ? sbom_digest : NULL;
  p.sbom_media_type = SBOM_MEDIA_TYPE;
  p.dependencies = image ? sbom_dependencies (r->sbom) : NULL;
  if (r->have_df && (ret = dockerfile_dependencies (&deps, r, p.dependencies, err)) < 0)
    return ret;
  if (deps != NULL)
    p.dependencies = deps;
  if ((ret = attest_statement (&st, &p, err)) < 0)
    return ret;
  if ((*statement = json_dumps (st, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
    return bvm_error (err, ENOMEM, "statement");
  *statement_len = strlen (*statement);
  /* what is signed must be what was built: jansson's json_dumps drops an
   * object key whose dump failed (an allocation; test_allocfail), and the
   * result would still be JSON */
  {
    json_t *back = json_loadb (*statement, *statement_len, 0, NULL);
    bool same = back != NULL && json_equal (back, st);
    json_decref (back);
    if (!same)
      return bvm_error (err, ENOMEM, "the statement did not serialize");
  }
  return 0;
}

/* Beside the job record: <state_dir>/jobs/<app>/<id>.<what> */
static int
write_beside_record (char **path_out, struct run *r, const char *what, const char *data,
                     size_t len, bvm_error_t *err)
{
  cleanup_free char *dir = NULL, *path = NULL;
  int ret;

  if (asprintf (&dir, "%s/jobs/%s", r->cfg->state_dir, r->job->app) < 0
      || asprintf (&path, "%s/%s.%s", dir, r->job->id, what) < 0)
    return bvm_error (err, ENOMEM, "attestation path");
  if ((ret = fs_mkdir_p (dir, 0750, err)) < 0
      || (ret = fs_write_atomic (path, data, len, 0640, err)) < 0)
    return ret;
  *path_out = steal_pointer (&path);
  return 0;
}

static int
phase_attest (struct run *r, bvm_error_t *err)
{
  cleanup_free char *sbom_text = NULL, *statement = NULL, *envelope = NULL;
  cleanup_free char *att_path = NULL, *sbom_path = NULL;
  cleanup_attest_key struct attest_key *key = NULL;
  cleanup_json json_t *ann = NULL;
  char sbom_digest[DIGEST_STR_LEN + 1], tag[ATTEST_OCI_TAG_MAX + 1], res[1024];
  struct oci_descriptor subject;
  struct attest_oci_ref refs[2] = { { .annotations = NULL }, { .annotations = NULL } };
  size_t sbom_len = 0, statement_len = 0, env_len = 0;
  bool created = false, via_api = false, image = r->spec->image != NULL;
  int ret;

  if (!image && !r->have_art_sum)
    return 0; /* nothing was made */
  if ((ret = attest_build (r, &sbom_text, &sbom_len, sbom_digest, &statement, &statement_len, err))
      < 0)
    return bvm_error_wrap (err, "the provenance");
  tag[0] = '\0';
  if (image)
    {
      if ((ret = attest_oci_fallback_tag (tag, r->manifest_digest, err)) < 0)
        return ret;
      /* the referrers tag is a write to the app's repository like any other */
      snprintf (res, sizeof res, "registry:%s:%s", r->plan->dest_repo, tag);
      if ((ret = authorize (r, POLICY_ACTION_PUSH_IMAGE, res, err)) < 0)
        return ret;
    }
  if (r->o->dry_run && !image)
    {
      char path[PATH_MAX];
      if (snprintf_checked (path, sizeof path, "%s/provenance.intoto.json", r->o->out_dir) < 0
          || fs_write_atomic (path, statement, statement_len, 0644, err) < 0)
        return bvm_error_wrap (err, "writing the provenance");
      jset (r->record, "attestation", json_pack ("{s:s}", "statement", "provenance.intoto.json"));
      note (r, "attest: would sign the provenance of the artifacts (index %s)",
            r->art_sum.index_digest);
      return 0;
    }
  if (r->o->dry_run)
    {
      /* what would be signed and attached, unsigned: no key on a
       * developer's machine signs anything */
      char path[PATH_MAX];
      if (snprintf_checked (path, sizeof path, "%s/provenance.intoto.json", r->o->out_dir) < 0
          || fs_write_atomic (path, statement, statement_len, 0644, err) < 0)
        return bvm_error_wrap (err, "writing the provenance");
      if (snprintf_checked (path, sizeof path, "%s/sbom.cdx.json", r->o->out_dir) < 0
          || fs_write_atomic (path, sbom_text, sbom_len, 0644, err) < 0)
        return bvm_error_wrap (err, "writing the SBOM");
      jset (r->record, "attestation",
            json_pack ("{s:s, s:s, s:s}", "statement", "provenance.intoto.json", "sbom",
                       "sbom.cdx.json", "referrers_tag", tag));
      note (r,
            "attest: would sign the provenance of %s and attach it and the SBOM (%zu files, "
            "%zu packages) under `%s`",
            r->manifest_digest, sbom_file_count (r->sbom), sbom_package_count (r->sbom), tag);
      return 0;
    }

  if ((ret = attest_key_load_or_create (&key, &created, r->cfg->attest.key, err)) < 0)
    return bvm_error_wrap (err, "the signing key (attest.key)");
  if (created)
    {
      note (r,
            "attest: WARNING: no signing key was configured: generated %s; publish its public "
            "key (`buildvm verify --print-key`) and keep the file safe",
            r->cfg->attest.key);
      log_warn ("event=attest.key.generated path=\"%s\" key=%s", r->cfg->attest.key,
                attest_key_id (key));
    }
  if ((ret = attest_sign (&envelope, &env_len, key, ATTEST_PAYLOAD_TYPE, statement, statement_len,
                          err))
      < 0)
    return ret;
  /* beside the record first: kept even when the registry refuses them */
  if ((ret = write_beside_record (&att_path, r, "intoto.dsse.json", envelope, env_len, err)) < 0
      || (image
          && (ret = write_beside_record (&sbom_path, r, "sbom.cdx.json", sbom_text, sbom_len, err))
                 < 0))
    return bvm_error_wrap (err, "writing the attestation beside the job record");
  if (!image)
    {
      /* artifacts only: there is no image to attach it to; the record
       * names the envelope, and `buildvm verify --envelope` checks it */
      jset (r->record, "attestation",
            json_pack ("{s:s, s:s, s:s}", "key", attest_key_id (key), "builder_id",
                       r->cfg->attest.builder_id, "path", att_path));
      note (r, "attest: provenance of the artifacts (index %s) signed with %s: %s",
            r->art_sum.index_digest, attest_key_id (key), att_path);
      return 0;
    }

  if ((ret = open_registry (r, err)) < 0)
    return ret;
  snprintf (subject.media_type, sizeof subject.media_type, "%s", OCI_MEDIA_MANIFEST);
  snprintf (subject.digest, sizeof subject.digest, "%s", r->manifest_digest);
  subject.size = r->manifest_len;
  ann = json_pack ("{s:s, s:s, s:s}", "org.opencontainers.image.created",
                   json_string_value (json_object_get (r->record, "started_at")),
                   "dev.buildvm.job", r->job->id, "in-toto.io/predicate-type",
                   ATTEST_PREDICATE_SLSA);
  if (ann == NULL)
    return bvm_error (err, ENOMEM, "annotations");
  if ((ret = attest_oci_push (&refs[0].desc, r->reg, r->plan->dest_repo, &subject, SBOM_MEDIA_TYPE,
                              SBOM_MEDIA_TYPE, sbom_text, sbom_len, NULL, r->wd->path, err))
      < 0)
    return bvm_error_wrap (err, "attaching the SBOM");
  if ((ret = attest_oci_push (&refs[1].desc, r->reg, r->plan->dest_repo, &subject,
                              ATTEST_PAYLOAD_TYPE, ATTEST_MEDIA_DSSE, envelope, env_len, ann,
                              r->wd->path, err))
      < 0)
    return bvm_error_wrap (err, "attaching the provenance");
  refs[0].artifact_type = SBOM_MEDIA_TYPE;
  refs[1].artifact_type = ATTEST_PAYLOAD_TYPE;
  refs[1].annotations = ann;
  if ((ret = attest_oci_index_add (&via_api, r->reg, r->plan->dest_repo, r->manifest_digest, refs,
                                   ARRAY_SIZE (refs), err))
      < 0)
    return bvm_error_wrap (err, "listing the provenance among the image's referrers");
  jset (r->record, "attestation",
        json_pack ("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "manifest", refs[1].desc.digest, "sbom",
                   refs[0].desc.digest, "key", attest_key_id (key), "builder_id",
                   r->cfg->attest.builder_id, "referrers", via_api ? "api" : tag, "path", att_path,
                   "sbom_path", sbom_path));
  note (r, "attest: provenance %s signed with %s, SBOM %s (%zu files, %zu packages), %s",
        refs[1].desc.digest, attest_key_id (key), refs[0].desc.digest, sbom_file_count (r->sbom),
        sbom_package_count (r->sbom),
        via_api ? "by the referrers API" : "listed under the referrers tag");
  return 0;
}

static int
layout_record (struct run *r, const char *dir)
{
  jset (r->record, "image",
        json_pack ("{s:s, s:s, s:s, s:s, s:s}", "layout", dir, "repository", r->plan->dest_repo,
                   "tag", r->plan->dest_tag, "digest", r->manifest_digest, "config",
                   r->config_desc.digest));
  note (r, "image: OCI layout %s:%s (%s)", dir, r->plan->dest_tag, r->manifest_digest);
  return 0;
}

/* A Dockerfile image's layout: every layer is in the work directory (the
 * bases' as phase_base pulled them, the new ones as the runner gzipped them) */
static int
layout_dockerfile (struct run *r, const char *dir, bvm_error_t *err)
{
  cleanup_free const char **paths = calloc (r->df.n_layers + 1, sizeof *paths);
  cleanup_free struct oci_descriptor *layers = calloc (r->df.n_layers + 1, sizeof *layers);
  int ret;

  if (paths == NULL || layers == NULL)
    return bvm_error (err, ENOMEM, "layout");
  for (size_t i = 0; i < r->df.n_layers; i++)
    {
      paths[i] = r->df.layers[i].path;
      layers[i] = r->df.layers[i].desc;
    }
  ret = oci_layout_write (dir, r->plan->dest_tag, r->manifest_json, r->manifest_len,
                          r->config_json, r->config_len, paths, layers, r->df.n_layers, err);
  if (ret < 0)
    return ret;
  return layout_record (r, dir);
}

/* dry-run: an OCI image layout instead of a push */
static int
phase_layout (struct run *r, bvm_error_t *err)
{
  char dir[PATH_MAX];
  const char *blob_paths[OCI_MAX_LAYERS];
  int ret;

  const struct oci_descriptor *base = NULL;
  struct oci_descriptor layers[OCI_MAX_LAYERS];
  char *paths[OCI_MAX_LAYERS] = { NULL };
  size_t n_base = 0;

  if (snprintf_checked (dir, sizeof dir, "%s/image", r->o->out_dir) < 0)
    return bvm_error (err, ENAMETOOLONG, "layout path");
  if (r->spec->dockerfile)
    return layout_dockerfile (r, dir, err);
  if (r->base_manifest)
    base = oci_manifest_layers (r->base_manifest, &n_base);
  if (n_base + 1 > OCI_MAX_LAYERS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "too many layers");
  ret = 0;
  for (size_t i = 0; i < n_base && ret == 0; i++)
    {
      char name[32];
      snprintf (name, sizeof name, "base-%zu.blob", i);
      paths[i] = workdir_file (r->wd, name);
      layers[i] = base[i];
      if (paths[i] == NULL)
        ret = bvm_error (err, ENOMEM, "layout");
      else if (access (paths[i], F_OK) == 0)
        ret = 0; /* phase_startable has it, checked against its digest */
      else
        ret = registry_blob_get (r->reg, r->spec->image->base_repository, base[i].digest,
                                 base[i].size, paths[i], err);
      blob_paths[i] = paths[i];
    }
  layers[n_base] = r->layer_desc;
  blob_paths[n_base] = r->layer_path;
  if (ret == 0)
    ret = oci_layout_write (dir, r->plan->dest_tag, r->manifest_json, r->manifest_len,
                            r->config_json, r->config_len, blob_paths, layers, n_base + 1, err);
  for (size_t i = 0; i < n_base; i++)
    free (paths[i]);
  if (ret < 0)
    return ret;
  return layout_record (r, dir);
}

/* --- the straight line ---------------------------------------------------------- */

#define PHASE(name, fn)                                                                           \
  do                                                                                              \
    {                                                                                             \
      int ret_;                                                                                   \
      if ((ret_ = check_cancel (r, err)) < 0)                                                     \
        return ret_;                                                                              \
      phase_begin (r, name);                                                                      \
      ret_ = fn (r, err);                                                                         \
      phase_end (r);                                                                              \
      if (ret_ < 0)                                                                               \
        return ret_;                                                                              \
    }                                                                                             \
  while (0)

static int
run_phases (struct run *r, bvm_error_t *err)
{
  PHASE ("role", phase_role);
  PHASE ("log", phase_log);
  PHASE ("boot", phase_boot);
  PHASE ("checkout", phase_checkout);
  PHASE ("plan", phase_plan);
  if (r->spec->dockerfile || (r->spec->image && r->spec->image->base))
    PHASE ("base", phase_base);
  PHASE ("secrets", phase_secrets);
  PHASE ("input", phase_input);
  PHASE ("build", phase_build);
  PHASE ("ingest", phase_ingest);
  if (r->spec->image)
    PHASE ("image", phase_image);
  if (r->spec->image)
    PHASE ("startable", phase_startable);
  if (r->o->dry_run)
    {
      if (r->spec->image)
        PHASE ("layout", phase_layout);
      PHASE ("artifacts", phase_artifacts);
      PHASE ("attest", phase_attest);
      if (r->denied)
        return bvm_error_code (err, BVM_E_DENIED, 0,
                               "the role denies some of the writes this build would make "
                               "(see the plan)");
      return 0;
    }
  if (r->spec->image)
    PHASE ("push", phase_push);
  PHASE ("artifacts", phase_artifacts);
  PHASE ("attest", phase_attest);
  if (r->spec->image)
    PHASE ("tag", phase_tag);
  return 0;
}

int
pipeline_record_path (char **out, const struct runner_config *cfg, const char *app,
                      const char *job_id, bvm_error_t *err)
{
  if (job_id_problem (job_id) != NULL || job_app_id_problem (app) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "invalid job id or app");
  if (asprintf (out, "%s/jobs/%s/%s.json", cfg->state_dir, app, job_id) < 0)
    return bvm_error (err, ENOMEM, "record path");
  return 0;
}

static int
write_record (struct run *r, bvm_error_t *err)
{
  cleanup_free char *path = NULL, *dir = NULL;
  int ret;

  if (r->o->dry_run)
    return 0;
  if ((ret = pipeline_record_path (&path, r->cfg, r->job->app, r->job->id, err)) < 0)
    return ret;
  if ((ret = app_state_dir (&dir, r, err)) < 0)
    return ret;
  jset (r->record, "record", json_string (path));
  return jsonx_write_file (path, r->record, err);
}

/* The job's error is final here, and from here it reaches every sink: the
 * record, the log's last line, the CLI, the daemon's log and the queue's
 * release reason. It may quote guest or secret-adjacent text, so the job's
 * secrets are masked in it once, here; no phase logs an error before. */
static void
redact_error (struct run *r, bvm_error_t *err)
{
  struct buf b = BUF_INIT (ERROR_REDACT_MAX);
  bvm_error_t e = NULL;
  const char *msg = bvm_error_msg (err);

  if (r->redact == NULL || *err == NULL)
    return;
  if (redact_text (r->redact, &b, msg, strlen (msg), &e) < 0)
    {
      /* never the unredacted text */
      bvm_error_free (&e);
      buf_reset (&b);
      buf_adds (&b, "the job failed; its error message could not be redacted and is withheld");
    }
  free ((*err)->msg);
  (*err)->msg = buf_steal (&b);
  buf_dispose_wipe (&b);
}

static int
fleet_sink (void *opaque, const void *buf, size_t len, bvm_error_t *err)
{
  return store_put_write (opaque, buf, len, err);
}

/* The finished log also goes to the artifact store, so any host of the fleet
 * can print it (`buildvm logs APP/JOB`): logs/apps/<app>/<log>/log.lz4, the
 * LZ4 frame, sealed by the store with the app's key like an artifact (the
 * local sealed file is opened and sealed again under the store's context). */
static int
fleet_log (struct run *r, const char *path, bvm_error_t *err)
{
  cleanup_store struct store *st = NULL;
  cleanup_store_txn struct store_txn *t = NULL;
  cleanup_seal_reader struct seal_reader *sr = NULL;
  cleanup_close int fd = -1;
  char prefix[STORE_KEY_MAX + 1], key[STORE_KEY_MAX + 1], ctx[STORE_KEY_MAX + 1];
  char b[65536];
  int ret;

  if (r->o->dry_run)
    return 0;
  if (snprintf_checked (prefix, sizeof prefix, "logs/apps/%s/%s/", r->job->app, r->log_name) < 0
      || snprintf_checked (key, sizeof key, "%slog.lz4", prefix) < 0
      || snprintf_checked (ctx, sizeof ctx, "logs/apps/%s/%s.log", r->job->app, r->log_name) < 0)
    return bvm_error (err, ENAMETOOLONG, "log key");
  fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  if ((ret = store_open (&st, r->cfg->artifacts, err)) < 0)
    return ret;
  if (r->role != NULL)
    store_set_expiry (st, (time_t) role_expires_at (r->role));
  if ((ret = store_txn_begin (&t, st, prefix, err)) < 0
      || (r->have_seal_key && (ret = store_txn_seal (t, r->seal_key, err)) < 0)
      || (ret = store_put_begin (t, key, err)) < 0)
    return ret;
  if (r->have_seal_key
      && (ret = seal_reader_new (&sr, r->seal_key, ctx, "the job's log", fleet_sink, t, err)) < 0)
    return ret;
  for (;;)
    {
      ssize_t n = read (fd, b, sizeof b);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "read `%s`", path);
      if (n == 0)
        break;
      ret = sr != NULL ? seal_reader_feed (sr, b, (size_t) n, err)
                       : store_put_write (t, b, (size_t) n, err);
      if (ret < 0)
        return ret;
    }
  if ((sr != NULL && (ret = seal_reader_finish (sr, err)) < 0)
      || (ret = store_put_end (t, err)) < 0)
    return ret;
  return store_txn_commit (steal_pointer (&t), NULL, NULL, err);
}

/* Everything a run holds, whatever phase it reached; the record is the
 * caller's. The VM, the work directory and the store transaction are
 * released earlier, right after the phases (pipeline_run). */
static void
run_dispose (struct run *r)
{
  ocilayout_image_dispose (&r->df);
  ocilayout_free (r->oci);
  secrets_wipe (r);
  if (r->file_hashing)
    digest_dispose (&r->file_digest);
  sbom_free (r->sbom);
  free (r->file_path);
  redact_free (r->redact);
  buf_dispose_wipe (&r->console_line[0]);
  buf_dispose_wipe (&r->console_line[1]);
  secrets_close (r->store_secrets);
  OPENSSL_cleanse (r->seal_key, sizeof r->seal_key);
  registry_free (r->reg);
  store_free (r->store);
  oci_manifest_free (r->base_manifest);
  free (r->base_config);
  free (r->config_json);
  free (r->manifest_json);
  free (r->layer_path);
  free (r->to_rel);
  free (r->input_path);
  free (r->scratch_path);
  bases_free (r);
  plan_dispose (&r->plan_store);
  spec_free (r->spec);
  gitsrc_repo_free (r->repo);
  role_free (r->role);
  role_free (r->egress_role);
  policy_free (r->tmpl);
  policy_free (r->boundary);
  json_decref (r->phases);
  r->record = NULL;
}

int
pipeline_run (json_t **record, const struct job_request *job, const struct pipeline_opts *o,
              bvm_error_t *err)
{
  struct run run = { .console_lock = PTHREAD_MUTEX_INITIALIZER }, *r = &run;
  char ts[40];
  int ret, ret2;
  bvm_error_t cleanup_err = NULL;

  r->o = o;
  steptail_init (&r->tail);
  r->cfg = o->cfg;
  r->job = job;
  r->t0 = now_ms ();
  r->record = json_object ();
  r->phases = json_object ();
  buf_init (&r->console_line[0], JOBLOG_LINE_MAX);
  buf_init (&r->console_line[1], JOBLOG_LINE_MAX);
  if (r->record == NULL || r->phases == NULL)
    {
      json_decref (r->record);
      run_dispose (r);
      return bvm_error (err, ENOMEM, "job record");
    }
  format_rfc3339 (ts, sizeof ts, wall_s ());
  jset (r->record, "schema", json_integer (1));
  jset (r->record, "id", json_string (job->id));
  jset (r->record, "app", json_string (job->app));
  jset (r->record, "repo", json_string (job->repo));
  jset (r->record, "commit", json_string (job->commit));
  jset (r->record, "ref", json_string (job->ref));
  jset (r->record, "attempt", json_integer (o->attempt ? o->attempt : 1));
  jset (r->record, "request", job_to_json (job));
  jset (r->record, "started_at", json_string (ts));
  snprintf (r->started_at, sizeof r->started_at, "%s", ts);
  jset (r->record, "dry_run", json_boolean (o->dry_run));

  ret = run_phases (r, err);
  phase_end (r);

  /* teardown: whatever happened above */
  if (r->txn)
    store_txn_abort (r->txn);
  r->txn = NULL;
  oci_layer_free (r->layer);
  r->layer = NULL;
  vmjob_result_dispose (&r->vm);
  early_vm_free (r); /* a job that ended before its build, or a misfit */
  if (workdir_remove (r->wd, &cleanup_err) < 0)
    {
      log_warn ("job=%s app=%s event=cleanup.failed error=\"%s\"", job->id, job->app,
                bvm_error_msg (&cleanup_err));
      bvm_error_free (&cleanup_err);
    }
  r->wd = NULL;

  format_rfc3339 (ts, sizeof ts, wall_s ());
  jset (r->record, "finished_at", json_string (ts));
  jset (r->record, "duration_ms", json_integer (now_ms () - r->t0));
  jset (r->record, "phases", json_incref (r->phases));
  if (ret < 0)
    redact_error (r, err);
  if (ret < 0)
    {
      int code = bvm_error_get_code (err);
      jset (r->record, "status",
            json_string (code == BVM_E_CANCELED ? "canceled"
                         : code == BVM_E_FENCED ? "fenced"
                                                : "failed"));
      jset (r->record, "error",
            json_pack ("{s:s, s:s}", "code", bvm_errcode_name (code), "message",
                       bvm_error_msg (err)));
      note (r, "job failed: %s", bvm_error_msg (err));
    }
  else
    {
      jset (r->record, "status", json_string ("succeeded"));
      jset (r->record, "error", json_null ());
      note (r, "job succeeded in %lld ms", (long long) (now_ms () - r->t0));
    }
  if (r->log)
    {
      if (r->log_err)
        {
          log_warn ("job=%s app=%s event=log.failed error=\"%s\"", job->id, job->app,
                    bvm_error_msg (&r->log_err));
          bvm_error_free (&r->log_err);
        }
      if (at_rest (r))
        {
          if (run_seal_key (r, &cleanup_err) == 0)
            joblog_set_seal (r->log, r->seal_key);
          else
            {
              /* the log stays plain rather than lost; the warning says why */
              log_warn ("job=%s app=%s event=log.seal.failed error=\"%s\"", job->id, job->app,
                        bvm_error_msg (&cleanup_err));
              bvm_error_free (&cleanup_err);
            }
        }
      if (joblog_close (r->log, true, &cleanup_err) < 0)
        {
          log_warn ("job=%s app=%s event=log.close.failed error=\"%s\"", job->id, job->app,
                    bvm_error_msg (&cleanup_err));
          bvm_error_free (&cleanup_err);
        }
      else
        {
          char *p = xasprintf_or_null ("%s/apps/%s/%s.log.lz4%s", r->cfg->log_dir, job->app,
                                       r->log_name, r->have_seal_key ? ".seal" : "");
          if (p && access (p, F_OK) == 0)
            {
              jset (r->record, "log", json_string (p));
              if (fleet_log (r, p, &cleanup_err) < 0)
                {
                  log_warn ("job=%s app=%s event=log.store.failed error=\"%s\"", job->id, job->app,
                            bvm_error_msg (&cleanup_err));
                  bvm_error_free (&cleanup_err);
                }
            }
          free (p);
        }
      r->log = NULL;
    }
  /* A fenced attempt writes nothing: the newer attempt owns the record. Ask
   * again now: a canceled or failed attempt may have lost its lease too. */
  if (!(ret < 0 && bvm_error_get_code (err) == BVM_E_FENCED) && o->fence)
    {
      bvm_error_t ferr = NULL;
      if (o->fence (o->opaque, &ferr) < 0 && bvm_error_get_code (&ferr) == BVM_E_FENCED)
        {
          jset (r->record, "status", json_string ("fenced"));
          if (ret == 0)
            {
              *err = steal_pointer (&ferr);
              ret = -1;
            }
        }
      bvm_error_free (&ferr);
    }
  if (!(ret < 0 && bvm_error_get_code (err) == BVM_E_FENCED)
      && strcmp (json_string_value (json_object_get (r->record, "status")), "fenced") != 0)
    {
      ret2 = write_record (r, &cleanup_err);
      if (ret2 == 0)
        fault_point ("after-record");
      if (ret2 < 0)
        {
          if (ret == 0)
            {
              bvm_error_free (err);
              *err = steal_pointer (&cleanup_err);
              ret = bvm_error_wrap (err, "writing the job record");
              jset (r->record, "status", json_string ("failed"));
            }
          else
            bvm_error_free (&cleanup_err);
        }
    }

  *record = r->record;
  run_dispose (r);
  return ret;
}

/* The failed step's last lines, as the build printed them (escaped for the
 * terminal), and the hint. */
static void
print_failed_step (FILE *out, const json_t *fs)
{
  json_t *tail = json_object_get (fs, "output_tail");
  const char *hint = json_string_value (json_object_get (fs, "hint"));
  size_t n = json_array_size (tail), i;
  long long total = json_integer_value (json_object_get (fs, "output_lines"));
  json_t *v;

  if (fs == NULL || tail == NULL)
    return;
  if (n == 0)
    fprintf (out, "  output    step %lld (`%s`) printed nothing\n",
             (long long) json_integer_value (json_object_get (fs, "index")),
             json_string_value (json_object_get (fs, "name")));
  else if ((long long) n < total)
    fprintf (out, "  output    the last %zu of %lld lines of step %lld (`%s`), all in the log:\n",
             n, total, (long long) json_integer_value (json_object_get (fs, "index")),
             json_string_value (json_object_get (fs, "name")));
  else
    fprintf (out, "  output    step %lld (`%s`) printed:\n",
             (long long) json_integer_value (json_object_get (fs, "index")),
             json_string_value (json_object_get (fs, "name")));
  json_array_foreach (tail, i, v)
    {
      fprintf (out, "            | ");
      str_escape_fwrite (out, json_string_value (v), json_string_length (v));
      fputc ('\n', out);
    }
  if (hint != NULL)
    fprintf (out, "  hint      %s\n", hint);
}

void
pipeline_print_summary (FILE *out, const json_t *rec)
{
  const char *status = json_string_value (json_object_get (rec, "status"));
  const char *commit = json_string_value (json_object_get (rec, "commit"));
  json_t *image = json_object_get (rec, "image");
  json_t *arts = json_object_get (rec, "artifacts");
  json_t *phases = json_object_get (rec, "phases");
  const char *k;
  json_t *v;

  fprintf (out, "job %s (%s @ %.12s) %s in %.1fs\n",
           json_string_value (json_object_get (rec, "id")),
           json_string_value (json_object_get (rec, "app")), commit ? commit : "?",
           status ? status : "?",
           (double) json_integer_value (json_object_get (rec, "duration_ms")) / 1000.0);
  if (json_object_get (rec, "error") && !json_is_null (json_object_get (rec, "error")))
    fprintf (out, "  error     %s\n",
             json_string_value (json_object_get (json_object_get (rec, "error"), "message")));
  print_failed_step (out, json_object_get (rec, "failed_step"));
  if (image && json_object_get (image, "reference"))
    fprintf (out, "  image     %s\n", json_string_value (json_object_get (image, "reference")));
  if (image && json_is_array (json_object_get (image, "tags_skipped")))
    {
      size_t i;
      json_array_foreach (json_object_get (image, "tags_skipped"), i, v)
        fprintf (out, "  tag left  %s: %s\n", json_string_value (json_object_get (v, "tag")),
                 json_string_value (json_object_get (v, "reason")));
    }
  else if (image && json_object_get (image, "layout"))
    fprintf (out, "  image     oci:%s:%s (%s)\n",
             json_string_value (json_object_get (image, "layout")),
             json_string_value (json_object_get (image, "tag")),
             json_string_value (json_object_get (image, "digest")));
  if (arts && json_is_object (arts))
    fprintf (out, "  artifacts %lld objects under %s\n",
             (long long) json_integer_value (json_object_get (arts, "count")),
             json_string_value (json_object_get (arts, "prefix")));
  if (json_is_string (json_object_get (json_object_get (rec, "attestation"), "manifest")))
    fprintf (out, "  signed    provenance %s, sbom %s (their OCI artifacts)\n",
             json_string_value (
                 json_object_get (json_object_get (rec, "attestation"), "manifest")),
             json_string_value (json_object_get (json_object_get (rec, "attestation"), "sbom")));
  else if (json_is_string (json_object_get (json_object_get (rec, "attestation"), "path")))
    fprintf (out, "  signed    provenance %s\n",
             json_string_value (json_object_get (json_object_get (rec, "attestation"), "path")));
  if (json_object_get (rec, "log"))
    fprintf (out, "  log       %s\n", json_string_value (json_object_get (rec, "log")));
  if (json_object_get (rec, "record"))
    fprintf (out, "  record    %s\n", json_string_value (json_object_get (rec, "record")));
  if (phases)
    {
      fprintf (out, "  phases   ");
      json_object_foreach ((json_t *) phases, k, v)
        fprintf (out, " %s=%lldms", k, (long long) json_integer_value (json_object_get (v, "ms")));
      fprintf (out, "\n");
    }
}
