/* guest.c - host side of the host/guest contract, see guest.h */
#include "guest.h"
#include "fs.h"
#include "proc.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- control file ---------------------------------------------------------- */

static int
put (struct buf *b, const char *s)
{
  return buf_add (b, s, strlen (s) + 1); /* with its NUL */
}

static int
put_u64 (struct buf *b, uint64_t v)
{
  char num[24];
  snprintf (num, sizeof num, "%llu", (unsigned long long) v);
  return put (b, num);
}

/* A Dockerfile job's records (PROTO_CTL_DOCKERFILE, _BUILD_ARG, _BASE),
 * checked with the agent's own rules (protocol.h): the agent refuses what
 * this would let through, so a job it would refuse fails here, on the host,
 * with the value named. */
static int
encode_dockerfile (struct buf *out, const struct guest_dockerfile *df, int *full, bvm_error_t *err)
{
  const char *why;
  int r = 0;

  if ((why = proto_df_path_problem (df->path)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the Dockerfile's path `%.200s` %s",
                           df->path ? df->path : "", why);
  if ((why = proto_df_path_problem (df->context)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the build context `%.200s` %s",
                           df->context ? df->context : "", why);
  if (df->target && df->target[0] && (why = proto_df_name_problem (df->target)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the build target `%.200s` %s", df->target, why);
  if (df->n_args > PROTO_DF_MAX_BUILD_ARGS)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%zu build args: at most %d", df->n_args,
                           PROTO_DF_MAX_BUILD_ARGS);
  if (df->n_bases > PROTO_DF_MAX_BASES)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%zu base images: at most %d", df->n_bases,
                           PROTO_DF_MAX_BASES);
  r |= put (out, PROTO_CTL_DOCKERFILE) | put (out, df->path) | put (out, df->context)
       | put (out, df->target ? df->target : "");
  for (size_t i = 0; i < df->n_args; i++)
    {
      const struct guest_build_arg *a = &df->args[i];
      if ((why = proto_df_arg_name_problem (a->name)) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "build arg `%.64s` %s",
                               a->name ? a->name : "", why);
      for (size_t k = 0; k < i; k++)
        if (strcmp (df->args[k].name, a->name) == 0)
          return bvm_error_code (err, BVM_E_INVALID, 0, "build arg `%.64s` is given twice",
                                 a->name);
      if (a->value == NULL || strlen (a->value) > PROTO_DF_ARG_VALUE_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0,
                               "the value of build arg `%.64s` is longer than %d bytes", a->name,
                               PROTO_DF_ARG_VALUE_MAX);
      r |= put (out, PROTO_CTL_BUILD_ARG) | put (out, a->name) | put (out, a->value);
    }
  for (size_t i = 0; i < df->n_bases; i++)
    {
      const struct guest_base *b = &df->bases[i];
      if ((why = proto_df_name_problem (b->ref)) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "base image ref `%.64s` %s",
                               b->ref ? b->ref : "", why);
      if ((why = proto_df_image_problem (b->name)) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "base image name `%.200s` %s",
                               b->name ? b->name : "", why);
      for (size_t k = 0; k < i; k++)
        if (strcmp (df->bases[k].ref, b->ref) == 0)
          return bvm_error_code (err, BVM_E_INVALID, 0, "base image ref `%.64s` is given twice",
                                 b->ref);
      r |= put (out, PROTO_CTL_BASE) | put (out, b->ref) | put (out, b->name);
    }
  *full |= r; /* the caller says the control file is too big */
  return 0;
}

int
guest_control_encode (struct buf *out, const struct guest_job *job, bvm_error_t *err)
{
  int r = 0, d;

  if (job->dockerfile != NULL)
    {
      /* the Dockerfile describes the build and the image */
      if (job->n_steps != 0 || job->image_from != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "a Dockerfile job has no steps and no image directory");
    }
  else if (job->n_steps == 0 || job->n_steps > GUEST_MAX_STEPS)
    return bvm_error_code (err, BVM_E_INVALID, 0, "a job needs 1 to %d steps, not %zu",
                           GUEST_MAX_STEPS, job->n_steps);
  r |= put (out, PROTO_CTL_VERSION) | put (out, PROTO_CONTROL_VERSION);
  r |= put (out, PROTO_CTL_TIMEOUT) | put_u64 (out, job->timeout_s);
  r |= put (out, PROTO_CTL_LOG_MAX) | put_u64 (out, job->log_max);
  r |= put (out, PROTO_CTL_OUTPUT_MAX) | put_u64 (out, job->output_max);
  for (size_t i = 0; i < job->n_env; i++)
    {
      if (strchr (job->env[i], '=') == NULL || job->env[i][0] == '=')
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "environment entry `%.64s` is not NAME=value", job->env[i]);
      r |= put (out, PROTO_CTL_ENV) | put (out, job->env[i]);
    }
  for (size_t i = 0; i < job->n_steps; i++)
    {
      const struct guest_step *s = &job->steps[i];
      if (s->cmd == NULL || s->name == NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "step %zu has no command", i + 1);
      r |= put (out, PROTO_CTL_STEP) | put_u64 (out, s->timeout_s) | put (out, s->name)
           | put (out, s->cmd);
    }
  if (job->image_from)
    r |= put (out, PROTO_CTL_IMAGE) | put (out, job->image_from);
  for (size_t i = 0; i < job->n_artifacts; i++)
    r |= put (out, PROTO_CTL_ARTIFACT) | put (out, job->artifacts[i]);
  for (size_t i = 0; i < job->n_secret_env; i++)
    r |= put (out, PROTO_CTL_SECRET_ENV) | put (out, job->secret_env[i].var)
         | put (out, job->secret_env[i].name);
  if (job->dockerfile != NULL && (d = encode_dockerfile (out, job->dockerfile, &r, err)) < 0)
    return d;
  if (r != 0)
    return bvm_error_code (err, BVM_E_LIMIT, errno == ENOMEM ? ENOMEM : 0,
                           "the job's control file exceeds %zu bytes", out->max);
  return 0;
}

/* --- input disk ----------------------------------------------------------------- */

struct guest_input
{
  struct archive *a;
  char *path;
  int fd;
  bool closed;
};

int
guest_input_create (struct guest_input **out, const char *path, bvm_error_t *err)
{
  struct guest_input *in = calloc (1, sizeof *in);

  if (in == NULL)
    return bvm_error (err, ENOMEM, "input disk");
  in->path = strdup (path);
  in->fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (in->path == NULL || in->fd < 0)
    {
      int e = in->path ? errno : ENOMEM;
      guest_input_free (in);
      return bvm_error (err, e, "create input disk `%s`", path);
    }
  in->a = archive_write_new ();
  if (in->a == NULL || archive_write_set_format_pax_restricted (in->a) != ARCHIVE_OK
      || archive_write_set_bytes_per_block (in->a, 64 * 1024) != ARCHIVE_OK
      || archive_write_open_fd (in->a, in->fd) != ARCHIVE_OK)
    {
      int r = bvm_error (err, 0, "input disk `%s`: %s", path,
                         in->a ? archive_error_string (in->a) : "out of memory");
      guest_input_free (in);
      return r;
    }
  *out = in;
  return 0;
}

static int
add_file (struct guest_input *in, const char *name, const void *data, size_t len, mode_t mode,
          bvm_error_t *err)
{
  struct archive_entry *e = archive_entry_new ();
  int r = 0;

  if (e == NULL)
    return bvm_error (err, ENOMEM, "input disk entry");
  archive_entry_set_pathname (e, name);
  archive_entry_set_filetype (e, AE_IFREG);
  archive_entry_set_perm (e, mode);
  archive_entry_set_size (e, (la_int64_t) len);
  if (archive_write_header (in->a, e) != ARCHIVE_OK
      || (len > 0 && archive_write_data (in->a, data, len) != (la_ssize_t) len))
    r = bvm_error (err, 0, "write `%s` to the input disk: %s", name, archive_error_string (in->a));
  archive_entry_free (e);
  return r;
}

int
guest_input_add_control (struct guest_input *in, const struct guest_job *job, bvm_error_t *err)
{
  struct buf b = BUF_INIT (GUEST_MAX_CONTROL);
  int r = guest_control_encode (&b, job, err);
  if (r == 0)
    r = add_file (in, PROTO_CONTROL_PATH, b.ptr, b.len, 0600, err);
  buf_dispose (&b);
  return r;
}

int
guest_input_add_secret (struct guest_input *in, const char *name, const void *data, size_t len,
                        bvm_error_t *err)
{
  char path[256];
  if (strchr (name, '/') || strcmp (name, ".") == 0 || strcmp (name, "..") == 0
      || snprintf_checked (path, sizeof path, PROTO_SECRETS_DIR "/%s", name) < 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "bad secret name `%.64s`", name);
  return add_file (in, path, data, len, 0400, err);
}

struct archive *
guest_input_archive (struct guest_input *in)
{
  return in->a;
}

int
guest_input_finish (struct guest_input *in, uint64_t *size, bvm_error_t *err)
{
  struct stat st;

  if (archive_write_close (in->a) != ARCHIVE_OK)
    return bvm_error (err, 0, "finish the input disk: %s", archive_error_string (in->a));
  in->closed = true;
  if (fstat (in->fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", in->path);
  /* block devices come in sectors; libarchive's 64 KiB blocks already are,
   * but be explicit about it */
  if (st.st_size % 512 != 0 && ftruncate (in->fd, (st.st_size / 512 + 1) * 512) < 0)
    return bvm_error (err, errno, "pad `%s`", in->path);
  if (size)
    *size = (uint64_t) st.st_size;
  return 0;
}

void
guest_input_free (struct guest_input *in)
{
  if (in == NULL)
    return;
  if (in->a)
    {
      if (!in->closed)
        archive_write_fail (in->a);
      archive_write_free (in->a);
    }
  if (in->fd >= 0)
    close (in->fd);
  free (in->path);
  free (in);
}

/* --- output disk ------------------------------------------------------------------- */

const char *
guest_status_name (enum guest_status s)
{
  switch (s)
    {
    case GUEST_NO_RESULT: return "no-result";
    case GUEST_OK: return PROTO_STATUS_OK;
    case GUEST_STEP_FAILED: return PROTO_STATUS_STEP_FAILED;
    case GUEST_TIMEOUT: return PROTO_STATUS_TIMEOUT;
    case GUEST_OUTPUT_ERROR: return PROTO_STATUS_OUTPUT_ERROR;
    case GUEST_AGENT_ERROR: return PROTO_STATUS_AGENT_ERROR;
    }
  return "unknown";
}

static int
bad (bvm_error_t *err, unsigned line, const char *what)
{
  return bvm_error_code (err, BVM_E_INVALID, 0, "guest result header line %u: %s", line, what);
}

static int
num_u64 (const char *s, uint64_t max, uint64_t *out)
{
  uint64_t v;
  if (parse_u64 (s, &v) < 0 || v > max)
    return -1;
  *out = v;
  return 0;
}

static int
parse_header (struct guest_result *out, const char *hdr, size_t len, uint64_t max_tar,
              bvm_error_t *err)
{
  static const char magic[] = PROTO_HEADER_MAGIC;
  char block[GUEST_HEADER_SIZE + 1];
  char *line, *save = NULL;
  unsigned lineno = 1;
  bool have_status = false, have_end = false;
  const char *why;
  uint64_t v;

  memset (out, 0, sizeof *out);
  if (len < sizeof magic - 1 || memcmp (hdr, magic, sizeof magic - 1) != 0)
    return 0; /* GUEST_NO_RESULT */
  if (len > GUEST_HEADER_SIZE)
    len = GUEST_HEADER_SIZE;
  memcpy (block, hdr, len);
  block[len] = '\0';
  if (strlen (block) != len)
    {
      /* the text ends at the first NUL; everything after it must be NUL */
      for (size_t i = strlen (block); i < len; i++)
        if (block[i] != '\0')
          return bvm_error_code (err, BVM_E_INVALID, 0,
                                 "guest result header has bytes after its end");
    }
  for (line = strtok_r (block + sizeof magic - 1, "\n", &save); line;
       line = strtok_r (NULL, "\n", &save))
    {
      char *val = strchr (line, ' ');
      lineno++;
      if (have_end)
        return bad (err, lineno, "text after `end`");
      if (strcmp (line, PROTO_HDR_END) == 0)
        {
          have_end = true;
          continue;
        }
      if (val == NULL)
        return bad (err, lineno, "no value");
      *val++ = '\0';
      /* the message goes into records (JSON: UTF-8 only) and onto terminals:
       * refuse, do not repair, what the agent never writes */
      if ((why = text_problem (val, strlen (val))) != NULL)
        return bad (err, lineno, why);
      if (strcmp (line, PROTO_HDR_STATUS) == 0)
        {
          static const struct
          {
            const char *name;
            enum guest_status s;
          } map[] = {
            { PROTO_STATUS_OK, GUEST_OK },
            { PROTO_STATUS_STEP_FAILED, GUEST_STEP_FAILED },
            { PROTO_STATUS_TIMEOUT, GUEST_TIMEOUT },
            { PROTO_STATUS_OUTPUT_ERROR, GUEST_OUTPUT_ERROR },
            { PROTO_STATUS_AGENT_ERROR, GUEST_AGENT_ERROR },
          };
          for (size_t i = 0; i < ARRAY_SIZE (map); i++)
            if (strcmp (val, map[i].name) == 0)
              {
                out->status = map[i].s;
                have_status = true;
              }
          if (!have_status)
            return bad (err, lineno, "unknown status");
        }
      else if (strcmp (line, PROTO_HDR_STEP) == 0)
        {
          if (num_u64 (val, GUEST_MAX_STEPS, &v) < 0)
            return bad (err, lineno, "bad step");
          out->step = (unsigned) v;
        }
      else if (strcmp (line, PROTO_HDR_EXIT) == 0)
        {
          if (num_u64 (val, 255 + 128, &v) < 0)
            return bad (err, lineno, "bad exit status");
          out->exit_code = (int) v;
        }
      else if (strcmp (line, PROTO_HDR_SIGNAL) == 0)
        {
          if (num_u64 (val, 128, &v) < 0)
            return bad (err, lineno, "bad signal");
          out->signal = (int) v;
        }
      else if (strcmp (line, PROTO_HDR_STEPS) == 0)
        {
          if (num_u64 (val, GUEST_MAX_STEPS, &v) < 0)
            return bad (err, lineno, "bad step count");
          out->steps_run = (unsigned) v;
        }
      else if (strcmp (line, PROTO_HDR_ENTRIES) == 0)
        {
          if (num_u64 (val, UINT32_MAX, &v) < 0)
            return bad (err, lineno, "bad entry count");
          out->entries = v;
        }
      else if (strcmp (line, PROTO_HDR_TAR_BYTES) == 0)
        {
          if (num_u64 (val, max_tar, &v) < 0)
            return bad (err, lineno, "tar_bytes is not a number within the output disk");
          out->tar_bytes = v;
        }
      else if (strcmp (line, PROTO_HDR_DURATION_MS) == 0)
        {
          if (num_u64 (val, INT32_MAX, &v) < 0)
            return bad (err, lineno, "bad duration");
          out->duration_ms = (int64_t) v;
        }
      else if (strcmp (line, PROTO_HDR_STEP_MS) == 0)
        {
          char *ms = strchr (val, ' ');
          uint64_t idx;
          if (ms == NULL)
            return bad (err, lineno, "bad step_ms");
          *ms++ = '\0';
          if (num_u64 (val, GUEST_MAX_STEPS, &idx) < 0 || idx == 0
              || num_u64 (ms, INT32_MAX, &v) < 0)
            return bad (err, lineno, "bad step_ms");
          out->step_ms[idx - 1] = (int64_t) v;
        }
      else if (strcmp (line, PROTO_HDR_MESSAGE) == 0)
        snprintf (out->message, sizeof out->message, "%s", val);
      else
        return bad (err, lineno, "unknown key");
    }
  if (!have_status || !have_end)
    {
      memset (out, 0, sizeof *out);
      return bvm_error_code (err, BVM_E_INVALID, 0, "guest result header is incomplete");
    }
  if (out->steps_run > GUEST_MAX_STEPS || out->step > out->steps_run + 1)
    {
      memset (out, 0, sizeof *out);
      return bvm_error_code (err, BVM_E_INVALID, 0, "guest result header is inconsistent");
    }
  return 0;
}

int
guest_result_parse (struct guest_result *out, const char *hdr, size_t len, uint64_t max_tar,
                    bvm_error_t *err)
{
  int ret = parse_header (out, hdr, len, max_tar, err);
  if (ret < 0)
    memset (out, 0, sizeof *out); /* a bad header claims nothing */
  return ret;
}

int
guest_result_read (struct guest_result *out, const char *output_disk, bvm_error_t *err)
{
  cleanup_close int fd = open (output_disk, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  char hdr[GUEST_HEADER_SIZE];
  struct stat st;
  ssize_t n;

  if (fd < 0)
    return bvm_error (err, errno, "open output disk `%s`", output_disk);
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "stat `%s`", output_disk);
  if (st.st_size < GUEST_HEADER_SIZE)
    return bvm_error_code (err, BVM_E_INVALID, 0, "output disk `%s` is too small", output_disk);
  n = pread (fd, hdr, sizeof hdr, 0);
  if (n != (ssize_t) sizeof hdr)
    return bvm_error (err, n < 0 ? errno : EIO, "read the output disk header");
  return guest_result_parse (out, hdr, sizeof hdr, (uint64_t) st.st_size - GUEST_HEADER_SIZE, err);
}

int
guest_output_create (const char *path, uint64_t max_tar, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  uint64_t size = GUEST_HEADER_SIZE + ((max_tar + 511) / 512) * 512;

  /* the agent needs room for two end-of-archive blocks at least */
  if (size < GUEST_HEADER_SIZE + 10240)
    size = GUEST_HEADER_SIZE + 10240;
  fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create output disk `%s`", path);
  if (ftruncate (fd, (off_t) size) < 0)
    return bvm_error (err, errno, "size output disk `%s`", path);
  return 0;
}

int
guest_scratch_create (const char *path, uint64_t mib, bvm_error_t *err)
{
  cleanup_close int fd = -1;
  struct buf out = BUF_INIT (4096);
  char size[32];
  int status = 0, r;
  /* no journal (the disk dies with the VM), no reserved blocks, lazy inode
   * tables; the root directory belongs to root, the agent makes the rest */
  const char *argv[] = { "mkfs.ext4",
                         "-q",
                         "-F",
                         "-O",
                         "^has_journal",
                         "-m",
                         "0",
                         "-E",
                         "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
                         "-L",
                         "scratch",
                         path,
                         size,
                         NULL };

  fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return bvm_error (err, errno, "create scratch disk `%s`", path);
  if (ftruncate (fd, (off_t) (mib << 20)) < 0)
    return bvm_error (err, errno, "size scratch disk `%s`", path);
  snprintf (size, sizeof size, "%lluk", (unsigned long long) mib << 10);
  r = proc_run (argv, &out, &status, 60000, err);
  if (r < 0)
    {
      buf_dispose (&out);
      return bvm_error_wrap (err, "make the scratch file system");
    }
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    {
      char st[64];
      r = bvm_error (err, 0, "mkfs.ext4 of the scratch disk %s: %.300s",
                     proc_status_str (st, sizeof st, status), buf_cstr (&out));
      buf_dispose (&out);
      return r;
    }
  buf_dispose (&out);
  return 0;
}
