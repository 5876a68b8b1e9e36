/* gitsrc.c - fetch one commit into a per-app mirror, export its tree to a tar
 *
 * See gitsrc.h. The order of things matters for safety:
 *   1. every argument is validated before anything touches the disk or the
 *      network (app id, commit id, ref name, URL);
 *   2. the mirror is locked, and a commit already in it never causes a fetch;
 *   3. the export walks the tree from the odb and checks each name before
 *      writing anything for it, so a refused tree leaves at most a partial
 *      archive that the caller discards - and never a file on the host.
 *
 * Over 1,500 lines: the mirror, both tree exports and the hostile-name checks
 * share one archive writer and one set of libgit2 rules; the sections below are
 * the seams to split along.
 */
#include "gitsrc.h"

#include "buf.h"
#include "fs.h"
#include "netaddr.h"
#include "proc.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <git2/sys/stream.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ESC_MAX 256 /* bytes of escaped untrusted text in one message */
#define GITSRC_MAX_REF 1024
#define CHUNK (1 << 20) /* deadline checks between chunks of file data */

static const struct gitsrc_limits default_limits = GITSRC_LIMITS_INIT;

struct gitsrc_repo
{
  git_repository *repo;
  int lock_fd; /* flock held on <cache>/<app>.lock; -1 for gitsrc_open_local */
};

/* --- messages ------------------------------------------------------------ */

/* Printable form of untrusted bytes for a one-line message: \xNN for anything
 * outside printable ASCII and for the backtick and backslash (so the quoting
 * in a message stays unambiguous); cut with "..." past ESC_MAX bytes. */
static const char *
esc (char out[ESC_MAX + 8], const char *s, size_t len)
{
  return str_escape (out, ESC_MAX + 8, s, len, ESC_MAX);
}

/* Fail with libgit2's last message appended: "context: libgit2 message". The
 * libgit2 message may quote a remote server, so it is escaped too. */
static int git_fail (bvm_error_t *err, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
git_fail (bvm_error_t *err, int code, const char *fmt, ...)
{
  const git_error *ge = git_error_last ();
  const char *gmsg = ge != NULL && ge->message != NULL ? ge->message : "unknown libgit2 error";
  char e[ESC_MAX + 8];
  cleanup_free char *ctx = NULL;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&ctx, fmt, ap) < 0)
    ctx = NULL;
  va_end (ap);
  /* An allocation refused by the worker's memory cap (an inflation bomb):
   * a limit of this job, which would be hit again - never retried. */
  if (ge != NULL && ge->klass == GIT_ERROR_NOMEMORY)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "%s: out of memory", ctx ? ctx : "libgit2");
  return bvm_error_code (err, code, 0, "%s: %s", ctx ? ctx : "libgit2",
                         esc (e, gmsg, strlen (gmsg)));
}

/* --- the repository's address -------------------------------------------- */

/* libgit2 opens every http:// and https:// connection through the stream
 * registered for GIT_STREAM_STANDARD: its TLS streams are built on one
 * (libgit2 1.5, streams/mbedtls.c and openssl.c call git_socket_stream_new,
 * which asks the registry first). Ours is therefore the one place where a
 * repository URL's host becomes an address: netaddr resolves it once,
 * checks every answer with the egress broker's rules (docs/security.md,
 * "The address rules"), and we connect to the checked address, so neither
 * a numeric spelling (`http://2130706433/`), a name that points inside
 * (`metadata.internal`), nor a DNS answer that changes between a check and
 * a connect reaches the runner's own network. Set in the fetch child only
 * (a process of its own, single-threaded). */
static const struct netaddr_allow *fetch_allow;
static char fetch_refusal[512]; /* why the host was refused, for BVM_E_DENIED */

struct checked_stream
{
  git_stream parent;
  int fd;
  char host[NETADDR_INPUT_MAX + 1];
  char port[8];
};

static int
cs_connect (git_stream *st)
{
  struct checked_stream *s = (struct checked_stream *) st;
  char hostport[NETADDR_INPUT_MAX + 16];
  struct netaddr_hostport hp;
  struct netaddr_resolved res;
  bvm_error_t err = NULL;
  int saved = ECONNREFUSED;

  /* libgit2 hands an IPv6 literal over without its brackets */
  if (snprintf_checked (hostport, sizeof hostport, strchr (s->host, ':') ? "[%s]:%s" : "%s:%s",
                        s->host, s->port)
          < 0
      || netaddr_hostport_parse (&hp, hostport, &err) < 0
      || netaddr_resolve (&res, &hp, fetch_allow, &err) < 0)
    {
      const char *m = err ? bvm_error_msg (&err) : "the repository host is too long";
      /* a failed lookup is the network's failure; anything else a refusal */
      if (err == NULL || bvm_error_get_code (&err) != BVM_E_NETWORK)
        snprintf (fetch_refusal, sizeof fetch_refusal, "%s", m);
      git_error_set_str (GIT_ERROR_NET, m);
      bvm_error_free (&err);
      return -1;
    }
  for (size_t i = 0; i < res.n; i++)
    {
      struct sockaddr_storage ss;
      unsigned len = netaddr_sockaddr (&ss, &res.addr[i], hp.port);
      int fd = socket (ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0)
        {
          saved = errno;
          continue;
        }
      /* blocking: the fetch child is killed at the checkout deadline */
      if (connect (fd, (struct sockaddr *) &ss, len) == 0)
        {
          s->fd = fd;
          return 0;
        }
      saved = errno;
      close (fd);
    }
  git_error_set (GIT_ERROR_NET, "failed to connect to %s: %s", hostport, strerror (saved));
  return -1;
}

static ssize_t
cs_read (git_stream *st, void *data, size_t len)
{
  struct checked_stream *s = (struct checked_stream *) st;
  ssize_t n;
  do
    n = recv (s->fd, data, len, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    git_error_set (GIT_ERROR_NET, "error receiving data from socket: %s", strerror (errno));
  return n;
}

static ssize_t
cs_write (git_stream *st, const char *data, size_t len, int flags)
{
  struct checked_stream *s = (struct checked_stream *) st;
  size_t off = 0;
  (void) flags;
  while (off < len)
    {
      ssize_t n = send (s->fd, data + off, len - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          git_error_set (GIT_ERROR_NET, "error sending data: %s", strerror (errno));
          return -1;
        }
      off += (size_t) n;
    }
  return (ssize_t) off;
}

static int
cs_close (git_stream *st)
{
  struct checked_stream *s = (struct checked_stream *) st;
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
  return 0;
}

static void
cs_free (git_stream *st)
{
  cs_close (st);
  free (st);
}

static int
cs_init (git_stream **out, const char *host, const char *port)
{
  struct checked_stream *s;
  if (strlen (host) > NETADDR_INPUT_MAX || strlen (port) >= sizeof s->port)
    {
      git_error_set_str (GIT_ERROR_NET, "the repository host or port is too long");
      return -1;
    }
  s = calloc (1, sizeof *s);
  if (s == NULL)
    {
      git_error_set_oom ();
      return -1;
    }
  s->parent.version = GIT_STREAM_VERSION;
  s->parent.connect = cs_connect;
  s->parent.read = cs_read;
  s->parent.write = cs_write;
  s->parent.close = cs_close;
  s->parent.free = cs_free;
  s->fd = -1;
  snprintf (s->host, sizeof s->host, "%s", host);
  snprintf (s->port, sizeof s->port, "%s", port);
  *out = &s->parent;
  return 0;
}

/* --- one-time libgit2 setup ---------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static const char *init_failed; /* static text, NULL when libgit2 is ready */

static void
global_init_once (void)
{
  static const int levels[] = { GIT_CONFIG_LEVEL_PROGRAMDATA, GIT_CONFIG_LEVEL_SYSTEM,
                                GIT_CONFIG_LEVEL_XDG, GIT_CONFIG_LEVEL_GLOBAL };

  if (git_libgit2_init () < 0)
    {
      init_failed = "git_libgit2_init failed";
      return;
    }
  /* The runner's own ~/.gitconfig and /etc/gitconfig must not steer a fetch:
   * `url.<x>.insteadOf` could redirect an app's URL to another app's
   * repository, `http.proxy`/`http.sslVerify` weaken transport security. An
   * empty search path means no file is found at that level. (Process-wide:
   * libgit2 has no per-repository switch for it.) */
  for (size_t i = 0; i < ARRAY_SIZE (levels); i++)
    if (git_libgit2_opts (GIT_OPT_SET_SEARCH_PATH, levels[i], "") < 0)
      {
        init_failed = "cannot clear the libgit2 config search path";
        return;
      }
  /* Both default to on; say so, a distribution could change the default.
   * Strict hash verification makes a corrupted or forged loose object fail
   * the export instead of being written into the tar. */
  if (git_libgit2_opts (GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 1) < 0
      || git_libgit2_opts (GIT_OPT_SET_OWNER_VALIDATION, 1) < 0)
    {
      init_failed = "cannot set libgit2 options";
      return;
    }
  git_libgit2_opts (GIT_OPT_SET_USER_AGENT, "buildvm/" BUILDVM_VERSION);
  {
    static git_stream_registration checked = { GIT_STREAM_VERSION, cs_init, NULL };
    if (git_stream_register (GIT_STREAM_STANDARD, &checked) < 0)
      init_failed = "cannot register the checked libgit2 stream";
  }
}

int
gitsrc_global_init (bvm_error_t *err)
{
  pthread_once (&init_once, global_init_once);
  if (init_failed != NULL)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "%s", init_failed);
  return 0;
}

/* --- argument checks ----------------------------------------------------- */

static int
check_app (const char *app, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t n = app ? strlen (app) : 0;

  /* The app id becomes a file name under the cache directory: this pattern
   * keeps it one plain component (no '/', no leading '.' or '-'). */
  if (n == 0 || n > 63 || !((app[0] >= 'a' && app[0] <= 'z') || (app[0] >= '0' && app[0] <= '9')))
    goto bad;
  for (size_t i = 1; i < n; i++)
    if (!((app[i] >= 'a' && app[i] <= 'z') || (app[i] >= '0' && app[i] <= '9') || app[i] == '-'))
      goto bad;
  return 0;
bad:
  return bvm_error_code (err, BVM_E_INVALID, 0, "app id `%s` must match [a-z0-9][a-z0-9-]{0,62}",
                         app ? esc (e, app, n) : "");
}

/* Exactly 40 lowercase hex digits: never a ref name, an abbreviation or a
 * revision expression (`HEAD~1`, `main@{1}`), which rev-parse would resolve
 * to something the deploy request did not name. */
static int
check_commit (const char *commit, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t n = commit ? strlen (commit) : 0;
  bool ok = n == GITSRC_OID_HEX;

  for (size_t i = 0; ok && i < n; i++)
    ok = (commit[i] >= '0' && commit[i] <= '9') || (commit[i] >= 'a' && commit[i] <= 'f');
  if (!ok)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "commit `%s` is not a full commit id (40 lowercase hex digits)",
                           commit ? esc (e, commit, n) : "");
  return 0;
}

static int
check_ref (const char *ref, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t n;
  int valid = 0;

  if (ref == NULL)
    return 0;
  n = strlen (ref);
  /* A full name under refs/: it becomes both sides of the refspec
   * "+<ref>:<ref>", so it must not carry ':' or '*' (ref-name rules refuse
   * both) and cannot start with '+' (it starts with "refs/"). */
  if (n > GITSRC_MAX_REF || strncmp (ref, "refs/", 5) != 0
      || git_reference_name_is_valid (&valid, ref) < 0 || !valid)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "ref `%s` is not a valid full ref name (like `refs/heads/main`)",
                           esc (e, ref, n));
  return 0;
}

enum url_kind
{
  URL_LOCAL,
  URL_HTTP,
};

/* Accept file:///abs, /abs, http:// and https:// URLs; sets *local_path for
 * the local kinds (pointing into url). Everything else is refused: ssh and
 * git:// (no credentials here and no reason to open those doors), `ext::`
 * (runs a command), relative paths (depend on the cwd), scp-like host:path. */
static int
check_url (enum url_kind *kind, const char **local_path, const char *url, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t n = url ? strlen (url) : 0;

  if (n == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the repository URL is empty");
  if (n > GITSRC_MAX_URL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "repository URL `%s` is longer than %d bytes",
                           esc (e, url, n), GITSRC_MAX_URL);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char) url[i] < 0x20 || url[i] == 0x7f)
      return bvm_error_code (err, BVM_E_INVALID, 0,
                             "repository URL `%s` contains a control character", esc (e, url, n));

  if (strncmp (url, "http://", 7) == 0 || strncmp (url, "https://", 8) == 0)
    {
      const char *auth = strstr (url, "//") + 2;
      size_t alen = strcspn (auth, "/?#");

      if (alen == 0)
        return bvm_error_code (err, BVM_E_INVALID, 0, "repository URL `%s` has no host",
                               esc (e, url, n));
      /* Credentials in a URL end up in logs, job records and error messages. */
      if (memchr (auth, '@', alen) != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "repository URL `%s` must not embed credentials", esc (e, url, n));
      if (strchr (url, ' ') != NULL)
        return bvm_error_code (err, BVM_E_INVALID, 0, "repository URL `%s` contains a space",
                               esc (e, url, n));
      *kind = URL_HTTP;
      *local_path = NULL;
      return 0;
    }

  if (strncmp (url, "file://", 7) == 0)
    {
      if (url[7] != '/')
        return bvm_error_code (err, BVM_E_INVALID, 0,
                               "repository URL `%s` must be file:///absolute/path",
                               esc (e, url, n));
      *local_path = url + 7;
    }
  else if (url[0] == '/')
    *local_path = url;
  else
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "repository URL `%s` is not allowed: use https://, http://, "
                           "file:///absolute/path or /absolute/path",
                           esc (e, url, n));

  /* libgit2 percent-decodes file:// URLs; refusing '%' keeps the path we
   * check (below, against the cache) the path that is opened. */
  if (strchr (*local_path, '%') != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "local repository path `%s` must not contain `%%`", esc (e, url, n));
  *kind = URL_LOCAL;
  return 0;
}

/* --- hostile names ------------------------------------------------------- */

/* An iterator over a name as the file systems that git guards against see
 * it: HFS+ ignores some code points entirely and folds case; NTFS folds case.
 * Yields lowercase ASCII, NAME_OTHER for any other code point (or an invalid
 * UTF-8 byte) and NAME_END at the end. */
#define NAME_END (-1)
#define NAME_OTHER 0x100

struct name_iter
{
  const unsigned char *p;
  size_t len;
};

static int32_t
utf8_next (const unsigned char *p, size_t len, size_t *used)
{
  uint32_t cp, min;
  size_t n;

  if (p[0] < 0x80)
    {
      *used = 1;
      return p[0];
    }
  if ((p[0] & 0xe0) == 0xc0)
    n = 2, cp = p[0] & 0x1f, min = 0x80;
  else if ((p[0] & 0xf0) == 0xe0)
    n = 3, cp = p[0] & 0x0f, min = 0x800;
  else if ((p[0] & 0xf8) == 0xf0)
    n = 4, cp = p[0] & 0x07, min = 0x10000;
  else
    goto invalid;
  if (n > len)
    goto invalid;
  for (size_t i = 1; i < n; i++)
    {
      if ((p[i] & 0xc0) != 0x80)
        goto invalid;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    goto invalid;
  *used = n;
  return (int32_t) cp;
invalid:
  *used = 1;
  return -1;
}

/* Code points HFS+ drops when comparing names (the list git and libgit2 use):
 * ".g\u200cit" is ".git" on a Mac. */
static bool
hfs_ignorable (int32_t cp)
{
  return (cp >= 0x200c && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e)
         || (cp >= 0x206a && cp <= 0x206f) || cp == 0xfeff;
}

static int
name_next (struct name_iter *it)
{
  while (it->len > 0)
    {
      size_t used;
      int32_t cp = utf8_next (it->p, it->len, &used);
      it->p += used;
      it->len -= used;
      if (cp >= 0 && hfs_ignorable (cp))
        continue;
      if (cp < 0 || cp >= 0x80)
        return NAME_OTHER;
      return cp >= 'A' && cp <= 'Z' ? cp + ('a' - 'A') : cp;
    }
  return NAME_END;
}

static bool
name_match (struct name_iter *it, const char *s)
{
  for (; *s != '\0'; s++)
    if (name_next (it) != (unsigned char) *s)
      return false;
  return true;
}

/* NTFS drops trailing dots and spaces, and `name:stream` opens `name`. */
static bool
name_rest_is_ntfs_end (struct name_iter it)
{
  for (;;)
    {
      int c = name_next (&it);
      if (c == NAME_END || c == ':')
        return true;
      if (c != ' ' && c != '.')
        return false;
    }
}

/* "~N" (N a number without leading zero) then the end as NTFS sees it: the
 * tail of an 8.3 short name. git only ever generates ~1..~4 for the first
 * six letters, but any number is refused here: cheap, and no real project
 * names a file `git~12`. */
static bool
name_rest_is_short_tail (struct name_iter it)
{
  int c;

  if (name_next (&it) != '~')
    return false;
  c = name_next (&it);
  if (c < '1' || c > '9')
    return false;
  for (;;)
    {
      struct name_iter save = it;
      c = name_next (&it);
      if (c >= '0' && c <= '9')
        continue;
      return name_rest_is_ntfs_end (save);
    }
}

/* Is `name` an alias of ".<base>" on NTFS or HFS+ (or both at once, which is
 * stricter than either)? `hash6` is the 6-letter NTFS fallback short-name
 * prefix git computes for that file, NULL for `.git` (which always gets
 * GIT~1 as it is created first). */
static bool
is_dotfile_alias (const char *name, size_t len, const char *base, const char *hash6)
{
  const struct name_iter start = { (const unsigned char *) name, len };
  struct name_iter it = start;
  char short6[7];

  if (name_next (&it) == '.' && name_match (&it, base))
    {
      struct name_iter peek = it;
      /* ".git\foo" is "foo" inside ".git" for Windows git */
      if (name_next (&peek) == '\\' || name_rest_is_ntfs_end (it))
        return true;
    }

  snprintf (short6, sizeof short6, "%.6s", base);
  it = start;
  if (name_match (&it, short6) && name_rest_is_short_tail (it))
    return true;

  if (hash6 != NULL)
    {
      it = start;
      if (name_match (&it, hash6) && name_rest_is_short_tail (it))
        return true;
    }
  return false;
}

int
gitsrc_check_component (const char *name, size_t len, bool symlink, bvm_error_t *err)
{
  char e[ESC_MAX + 8];

  if (len == 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "empty path component");
  if (memchr (name, '\0', len) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "name `%s` contains a NUL byte",
                           esc (e, name, len));
  if (memchr (name, '/', len) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "name `%s` contains a slash",
                           esc (e, name, len));
  if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
    return bvm_error_code (err, BVM_E_INVALID, 0, "name `%s` is not allowed", esc (e, name, len));
  /* A `.git` anywhere in the source would be a repository the guest's git
   * (or a later host tool) trusts: hooks, config with core.fsmonitor ... */
  if (is_dotfile_alias (name, len, "git", NULL))
    return bvm_error_code (err, BVM_E_INVALID, 0, "name `%s` is a spelling of `.git`",
                           esc (e, name, len));
  /* git refuses a symlinked .gitmodules since CVE-2018-11235: it would make
   * git read a file from outside the tree. */
  if (symlink && is_dotfile_alias (name, len, "gitmodules", "gi7eba"))
    return bvm_error_code (err, BVM_E_INVALID, 0, "symlink `%s` is a spelling of `.gitmodules`",
                           esc (e, name, len));
  return 0;
}

/* --- the sinks: a tar stream (libarchive), or any other writer ------------ */

static int
archive_entry_cb (void *ctx, const char *path, mode_t type, mode_t perm, uint64_t size,
                  const char *target, int64_t mtime, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  struct archive *w = ctx;
  struct archive_entry *ae = archive_entry_new ();
  int r;

  if (ae == NULL)
    return bvm_error (err, ENOMEM, "archive_entry_new");
  /* Names are byte strings in git and on Linux: stored as they are. A name
   * the locale cannot convert to UTF-8 goes into the pax header with
   * hdrcharset=BINARY (ARCHIVE_WARN below). (The _utf8 setters are no way
   * round that: libarchive 3.6.2's pax writer crashes on a UTF-8-only name
   * it cannot convert to the locale.) */
  archive_entry_set_pathname (ae, path);
  archive_entry_set_filetype (ae, type);
  archive_entry_set_perm (ae, perm);
  archive_entry_set_uid (ae, 0);
  archive_entry_set_gid (ae, 0);
  archive_entry_set_mtime (ae, mtime, 0);
  archive_entry_set_size (ae, (la_int64_t) size);
  if (target != NULL)
    archive_entry_set_symlink (ae, target);
  r = archive_write_header (w, ae);
  archive_entry_free (ae);
  /* ARCHIVE_WARN: a name that is not valid in the locale, stored as binary */
  if (r < ARCHIVE_WARN)
    return bvm_error_code (err, BVM_E_IO, 0, "writing `%s` to the source archive: %s",
                           esc (e, path, strlen (path)), archive_error_string (w));
  return 0;
}

static int
archive_data_cb (void *ctx, const char *path, const void *data, size_t len, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  struct archive *w = ctx;
  la_ssize_t n = archive_write_data (w, data, len);

  if (n < 0 || (size_t) n != len)
    return bvm_error_code (err, BVM_E_IO, 0, "writing `%s` to the source archive: %s",
                           esc (e, path, strlen (path)), archive_error_string (w));
  return 0;
}

static const struct gitsrc_sink_ops archive_sink_ops = { archive_entry_cb, archive_data_cb };

/* --- the exporter shared by both exports ---------------------------------- */

struct exporter
{
  const struct gitsrc_sink *sink;
  const struct gitsrc_limits *lim;
  struct gitsrc_stats *st;
  uint64_t visited; /* entries seen, written or skipped: the entry cap */
  int64_t mtime;
  char *path;  /* the archive path being written: prefix + relative path */
  size_t plen; /* length of the prefix */
};

static int
ex_deadline (struct exporter *ex, bvm_error_t *err)
{
  if (ex->lim->deadline_ms > 0 && now_ms () >= ex->lim->deadline_ms)
    return bvm_error_code (err, BVM_E_TIMEOUT, 0,
                           "the source export passed its deadline after %" PRIu64 " entries",
                           ex->visited);
  return 0;
}

/* Count one more entry against the cap and check the clock. */
static int
ex_visit (struct exporter *ex, bvm_error_t *err)
{
  if (ex->visited >= ex->lim->max_entries)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the source tree has more than %" PRIu64 " entries",
                           ex->lim->max_entries);
  ex->visited++;
  return ex_deadline (ex, err);
}

/* Append `name` to ex->path at offset `at` (a prefix of the path ending in '/'
 * or the prefix length), after checking the name. */
static int
ex_set_name (struct exporter *ex, size_t at, const char *name, size_t len, bool symlink,
             bvm_error_t *err)
{
  char e[ESC_MAX + 8], e2[ESC_MAX + 8];

  /* the messages name the whole path; the component check names only itself */
  if (gitsrc_check_component (name, len, symlink, err) < 0)
    return bvm_error_wrap (err, "refusing `%s%s`", esc (e, ex->path, at), esc (e2, name, len));
  if (at + len > ex->lim->max_path)
    return bvm_error_code (err, BVM_E_LIMIT, 0, "path `%s%s` is longer than %zu bytes",
                           esc (e, ex->path, at), esc (e2, name, len), ex->lim->max_path);
  memcpy (ex->path + at, name, len);
  ex->path[at + len] = '\0';
  return 0;
}

static int
ex_header (struct exporter *ex, size_t pathlen, mode_t type, mode_t perm, uint64_t size,
           const char *target, bvm_error_t *err)
{
  char saved = ex->path[pathlen];
  int r;

  /* ex->path may go on past this entry (a parent directory of a longer path) */
  ex->path[pathlen] = '\0';
  r = ex->sink->ops->entry (ex->sink->ctx, ex->path, type, perm, size, target, ex->mtime, err);
  ex->path[pathlen] = saved;
  if (r < 0)
    return -1;
  ex->st->entries++;
  return 0;
}

static int
ex_dir (struct exporter *ex, size_t pathlen, bvm_error_t *err)
{
  if (ex_header (ex, pathlen, AE_IFDIR, 0755, 0, NULL, err) < 0)
    return -1;
  ex->st->dirs++;
  return 0;
}

static int
ex_account (struct exporter *ex, size_t pathlen, uint64_t size, bvm_error_t *err)
{
  char e[ESC_MAX + 8];

  if (size > ex->lim->max_file_bytes)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "`%s` is %" PRIu64 " bytes, over the %" PRIu64
                           " bytes allowed for one file",
                           esc (e, ex->path, pathlen), size, ex->lim->max_file_bytes);
  if (size > ex->lim->max_bytes || ex->st->bytes > ex->lim->max_bytes - size)
    return bvm_error_code (err, BVM_E_LIMIT, 0,
                           "the source tree is over %" PRIu64 " bytes (at `%s`)",
                           ex->lim->max_bytes, esc (e, ex->path, pathlen));
  ex->st->bytes += size;
  return 0;
}

static int
ex_symlink (struct exporter *ex, size_t pathlen, const char *target, size_t tlen, bvm_error_t *err)
{
  char e[ESC_MAX + 8];

  /* The target is kept verbatim (absolute or with `..`: the guest resolves
   * it inside the VM). It must be something a file system can hold. */
  if (tlen == 0 || tlen > GITSRC_MAX_SYMLINK || memchr (target, '\0', tlen) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "symlink `%s` has an empty, overlong or NUL-containing target",
                           esc (e, ex->path, pathlen));
  if (ex_account (ex, pathlen, tlen, err) < 0)
    return -1;
  if (ex_header (ex, pathlen, AE_IFLNK, 0777, 0, target, err) < 0)
    return -1;
  ex->st->symlinks++;
  return 0;
}

static int
ex_file_begin (struct exporter *ex, size_t pathlen, uint64_t size, bool exec, bvm_error_t *err)
{
  if (ex_account (ex, pathlen, size, err) < 0)
    return -1;
  if (ex_header (ex, pathlen, AE_IFREG, exec ? 0755 : 0644, size, NULL, err) < 0)
    return -1;
  ex->st->files++;
  return 0;
}

static int
ex_data (struct exporter *ex, size_t pathlen, const void *data, size_t len, bvm_error_t *err)
{
  const char *p = data;

  while (len > 0)
    {
      size_t n = len < CHUNK ? len : CHUNK;
      char saved = ex->path[pathlen];
      int r;
      ex->path[pathlen] = '\0';
      r = ex->sink->ops->data (ex->sink->ctx, ex->path, p, n, err);
      ex->path[pathlen] = saved;
      if (r < 0)
        return -1;
      p += n;
      len -= n;
      if (len > 0 && ex_deadline (ex, err) < 0)
        return -1;
    }
  return 0;
}

/* Validate `prefix` and write its directories. */
static int
ex_init (struct exporter *ex, const struct gitsrc_sink *sink, const char *prefix, int64_t mtime,
         const struct gitsrc_limits *lim, struct gitsrc_stats *st, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t n = prefix ? strlen (prefix) : 0;

  memset (ex, 0, sizeof *ex);
  ex->sink = sink;
  ex->mtime = mtime;
  ex->lim = lim;
  ex->st = st;
  if (lim->max_path == 0 || lim->max_path > 1 << 20)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "max_path %zu is out of range", lim->max_path);
  ex->path = malloc (lim->max_path + 2);
  if (ex->path == NULL)
    return bvm_error (err, ENOMEM, "malloc");
  ex->path[0] = '\0';
  if (n == 0)
    return 0;
  if (prefix[0] == '/' || prefix[n - 1] != '/')
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "archive prefix `%s` must be relative and end with `/`",
                           esc (e, prefix, n));
  for (size_t at = 0; at < n;)
    {
      size_t clen = strcspn (prefix + at, "/");
      if (ex_set_name (ex, at, prefix + at, clen, false, err) < 0)
        return bvm_error_wrap (err, "archive prefix");
      if (ex_dir (ex, at + clen, err) < 0)
        return -1;
      at += clen + 1;
      ex->path[at - 1] = '/';
      ex->path[at] = '\0';
    }
  ex->plen = n;
  return 0;
}

static void
ex_dispose (struct exporter *ex)
{
  free (ex->path);
  ex->path = NULL;
}

/* --- export from the odb ------------------------------------------------- */

static int
cmp_names (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Two entries with the same name in one tree are refused: extracting "a" as
 * a symlink to /etc and then "a/passwd" through it is the classic tar attack
 * (git itself never writes such a tree). */
static int
check_tree_names (struct exporter *ex, const git_tree *tree, size_t pathlen, bvm_error_t *err)
{
  char e[ESC_MAX + 8], e2[ESC_MAX + 8];
  size_t n = git_tree_entrycount (tree);
  cleanup_free const char **names = NULL;

  if (n < 2)
    return 0;
  names = calloc (n, sizeof *names);
  if (names == NULL)
    return bvm_error (err, ENOMEM, "calloc");
  for (size_t i = 0; i < n; i++)
    names[i] = git_tree_entry_name (git_tree_entry_byindex (tree, i));
  qsort (names, n, sizeof *names, cmp_names);
  for (size_t i = 1; i < n; i++)
    if (strcmp (names[i - 1], names[i]) == 0)
      return bvm_error_code (err, BVM_E_INVALID, 0, "refusing `%s`: two entries named `%s`",
                             esc (e, ex->path, pathlen), esc (e2, names[i], strlen (names[i])));
  return 0;
}

static int
export_blob (struct exporter *ex, git_repository *repo, git_odb *odb, const git_oid *id,
             size_t pathlen, bool link, bool exec, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  size_t size = 0;
  git_object_t type = GIT_OBJECT_INVALID;
  git_blob *blob = NULL;
  const void *data;
  int r;

  /* The header gives the size without inflating the object, so the caps are
   * checked before a huge blob is read into memory. */
  if (git_odb_read_header (&size, &type, odb, id) < 0)
    return git_fail (err, BVM_E_INVALID, "reading `%s`", esc (e, ex->path, pathlen));
  if (type != GIT_OBJECT_BLOB)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is a %s, not a blob",
                           esc (e, ex->path, pathlen), git_object_type2string (type));
  if (size > ex->lim->max_file_bytes)
    return ex_account (ex, pathlen, size, err);
  if (git_blob_lookup (&blob, repo, id) < 0)
    return git_fail (err, BVM_E_INVALID, "reading `%s`", esc (e, ex->path, pathlen));
  data = git_blob_rawcontent (blob);
  size = (size_t) git_blob_rawsize (blob);
  if (link)
    {
      cleanup_free char *target = NULL;
      if (size <= GITSRC_MAX_SYMLINK)
        {
          /* all `size` bytes, a NUL among them included: ex_symlink refuses it */
          target = malloc (size + 1);
          if (target == NULL)
            {
              git_blob_free (blob);
              return bvm_error (err, ENOMEM, "malloc");
            }
          memcpy (target, data, size);
          target[size] = '\0';
        }
      r = ex_symlink (ex, pathlen, target ? target : "", target ? size : 0, err);
      git_blob_free (blob);
      return r;
    }
  r = ex_file_begin (ex, pathlen, size, exec, err);
  if (r == 0)
    r = ex_data (ex, pathlen, data, size, err);
  git_blob_free (blob);
  return r;
}

struct frame
{
  git_tree *tree;
  size_t next;    /* index of the next entry */
  size_t pathlen; /* ex->path length for this tree's entries, trailing '/' included */
};

/* Walk the tree depth-first with an explicit stack: a hostile tree cannot
 * exhaust the C stack, and only the trees on the current path are held. */
static int
export_tree (struct exporter *ex, git_repository *repo, git_tree *root, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  cleanup_free struct frame *stack = NULL;
  size_t depth = 0, cap = 0;
  git_odb *odb = NULL;
  int ret = -1;

  if (git_repository_odb (&odb, repo) < 0)
    return git_fail (err, BVM_E_INTERNAL, "opening the object database");

  cap = 16;
  stack = calloc (cap, sizeof *stack);
  if (stack == NULL)
    {
      bvm_error (err, ENOMEM, "calloc");
      goto cleanup;
    }
  stack[depth++] = (struct frame){ root, 0, ex->plen }; /* the caller frees root */

  while (depth > 0)
    {
      struct frame *f = &stack[depth - 1];
      const git_tree_entry *te;
      const char *name;
      size_t nlen, at;
      git_filemode_t mode;

      if (f->next == 0)
        {
          size_t count = git_tree_entrycount (f->tree);
          /* refuse a giant tree before allocating anything for it */
          if (count > ex->lim->max_entries - ex->visited)
            {
              bvm_error_code (err, BVM_E_LIMIT, 0,
                              "the source tree has more than %" PRIu64 " entries",
                              ex->lim->max_entries);
              goto cleanup;
            }
          if (check_tree_names (ex, f->tree, f->pathlen, err) < 0)
            goto cleanup;
        }
      if (f->next >= git_tree_entrycount (f->tree))
        {
          if (depth > 1) /* the root belongs to the caller */
            git_tree_free (f->tree);
          f->tree = NULL;
          depth--;
          continue;
        }
      te = git_tree_entry_byindex (f->tree, f->next++);
      name = git_tree_entry_name (te);
      nlen = strlen (name);
      mode = git_tree_entry_filemode (te);
      at = f->pathlen;

      if (ex_visit (ex, err) < 0)
        goto cleanup;
      if (ex_set_name (ex, at, name, nlen, mode == GIT_FILEMODE_LINK, err) < 0)
        goto cleanup;

      switch (mode)
        {
        case GIT_FILEMODE_TREE:
          {
            git_tree *sub = NULL;
            if (at + nlen + 1 > ex->lim->max_path)
              {
                bvm_error_code (err, BVM_E_LIMIT, 0, "path `%s/` is longer than %zu bytes",
                                esc (e, ex->path, at + nlen), ex->lim->max_path);
                goto cleanup;
              }
            if (ex_dir (ex, at + nlen, err) < 0)
              goto cleanup;
            if (git_tree_lookup (&sub, repo, git_tree_entry_id (te)) < 0)
              {
                git_fail (err, BVM_E_INVALID, "reading tree `%s`", esc (e, ex->path, at + nlen));
                goto cleanup;
              }
            if (depth == cap)
              {
                struct frame *ns = reallocarray (stack, cap * 2, sizeof *stack);
                if (ns == NULL)
                  {
                    git_tree_free (sub);
                    bvm_error (err, ENOMEM, "reallocarray");
                    goto cleanup;
                  }
                stack = ns;
                cap *= 2;
              }
            ex->path[at + nlen] = '/';
            ex->path[at + nlen + 1] = '\0';
            stack[depth++] = (struct frame){ sub, 0, at + nlen + 1 };
            break;
          }
        case GIT_FILEMODE_BLOB:
        case GIT_FILEMODE_BLOB_EXECUTABLE:
        case GIT_FILEMODE_LINK:
          if (export_blob (ex, repo, odb, git_tree_entry_id (te), at + nlen,
                           mode == GIT_FILEMODE_LINK, mode == GIT_FILEMODE_BLOB_EXECUTABLE, err)
              < 0)
            goto cleanup;
          break;
        case GIT_FILEMODE_COMMIT:
          /* a submodule: not fetched, by design */
          ex->st->skipped++;
          break;
        default:
          bvm_error_code (err, BVM_E_INVALID, 0, "`%s` has unsupported mode %06o",
                          esc (e, ex->path, at + nlen),
                          (unsigned) git_tree_entry_filemode_raw (te));
          goto cleanup;
        }
    }
  ret = 0;

cleanup:
  while (depth > 1)
    git_tree_free (stack[--depth].tree);
  git_odb_free (odb);
  return ret;
}

static int
parse_oid (git_oid *out, const char *commit, bvm_error_t *err)
{
  if (check_commit (commit, err) < 0)
    return -1;
  if (git_oid_fromstr (out, commit) < 0)
    return git_fail (err, BVM_E_INVALID, "commit `%s`", commit);
  return 0;
}

/* An export's arguments: the export counts of stats (or of `dummy` when
 * NULL) zeroed, the fetch's kept; the default limits when lim is NULL. */
static void
export_start (struct gitsrc_stats **stats, struct gitsrc_stats *dummy,
              const struct gitsrc_limits **lim)
{
  if (*stats == NULL)
    *stats = dummy;
  if (*lim == NULL)
    *lim = &default_limits;
  (*stats)->entries = (*stats)->files = (*stats)->dirs = (*stats)->symlinks = 0;
  (*stats)->skipped = (*stats)->bytes = 0;
}

int
gitsrc_export (struct archive *w, struct gitsrc_repo *repo, const char *commit, const char *prefix,
               const struct gitsrc_limits *lim, struct gitsrc_stats *stats, bvm_error_t *err)
{
  struct gitsrc_sink sink = { &archive_sink_ops, w };
  return gitsrc_export_to (&sink, repo, commit, prefix, lim, stats, err);
}

int
gitsrc_export_to (const struct gitsrc_sink *sink, struct gitsrc_repo *repo, const char *commit,
                  const char *prefix, const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                  bvm_error_t *err)
{
  struct gitsrc_stats dummy;
  struct exporter ex;
  git_oid oid;
  git_commit *c = NULL;
  git_tree *tree = NULL;
  int64_t t0 = now_ms ();
  int ret;

  export_start (&stats, &dummy, &lim);
  if (gitsrc_global_init (err) < 0 || parse_oid (&oid, commit, err) < 0)
    return -1;
  if (git_commit_lookup (&c, repo->repo, &oid) < 0)
    return git_fail (err, BVM_E_INVALID, "commit `%s`", commit);
  if (git_commit_tree (&tree, c) < 0)
    {
      git_commit_free (c);
      return git_fail (err, BVM_E_INVALID, "tree of commit `%s`", commit);
    }

  /* committer time: the same commit always gives the same archive */
  ret = ex_init (&ex, sink, prefix, git_commit_time (c), lim, stats, err);
  if (ret == 0)
    ret = export_tree (&ex, repo->repo, tree, err);
  if (ret < 0)
    bvm_error_wrap (err, "exporting commit `%s`", commit);
  ex_dispose (&ex);
  git_tree_free (tree);
  git_commit_free (c);
  stats->export_ms = now_ms () - t0;
  return ret;
}

/* --- the mirror ---------------------------------------------------------- */

/* --- keeping a mirror's size bounded ------------------------------------- */

/* Every fetch that brings objects adds a pack to the mirror, and history a
 * force-push dropped stays in them: a mirror left alone only grows, and
 * libgit2 1.5 has no `git gc`. So once a fetch leaves more than
 * GITSRC_REPACK_PACKS packs, the mirror is repacked as `git repack -a -d`
 * would: one new pack of exactly what its refs reach (libgit2's
 * packbuilder), then every other pack and loose object removed. A mirror
 * with more than GITSRC_MAX_REFS refs first drops all but the job's: each
 * ref a job named stays until then (the haves of later fetches), so a
 * repository with many branches cannot keep unbounded history alive. The
 * caller holds the mirror's lock. The repack stops at lim->deadline_ms
 * (progress callback); then nothing was removed and the next fetch tries
 * again. */
#define GITSRC_REPACK_PACKS 8
#define GITSRC_MAX_REFS 64

static int
count_packs (size_t *out, const char *mirror)
{
  cleanup_free char *dir = NULL;
  DIR *d;
  struct dirent *de;
  size_t n = 0;

  if (asprintf (&dir, "%s/objects/pack", mirror) < 0)
    return -1;
  d = opendir (dir);
  if (d == NULL)
    return -1;
  while ((de = readdir (d)) != NULL)
    {
      size_t len = strlen (de->d_name);
      if (len > 5 && strcmp (de->d_name + len - 5, ".pack") == 0)
        n++;
    }
  closedir (d);
  *out = n;
  return 0;
}

static int
repack_progress (int stage, uint32_t current, uint32_t total, void *payload)
{
  const struct gitsrc_limits *lim = payload;
  (void) stage;
  (void) current;
  (void) total;
  return lim->deadline_ms > 0 && now_ms () >= lim->deadline_ms ? -1 : 0;
}

static int
prune_refs (git_repository *repo, const char *keep, size_t *pruned, bvm_error_t *err)
{
  git_strarray refs = { 0 };
  int ret = 0;

  if (git_reference_list (&refs, repo) < 0)
    return git_fail (err, BVM_E_IO, "listing the mirror's refs");
  if (refs.count > GITSRC_MAX_REFS)
    for (size_t i = 0; i < refs.count && ret == 0; i++)
      {
        git_reference *ref = NULL;
        if (keep != NULL && strcmp (refs.strings[i], keep) == 0)
          continue;
        if (git_reference_lookup (&ref, repo, refs.strings[i]) < 0
            || git_reference_delete (ref) < 0)
          ret = git_fail (err, BVM_E_IO, "pruning the mirror's refs");
        else
          (*pruned)++;
        git_reference_free (ref);
      }
  git_strarray_dispose (&refs);
  return ret;
}

/* Remove the packs other than `keep` ("pack-<hex>") and the loose objects. */
static void
remove_old_objects (const char *mirror, const char *keep)
{
  cleanup_free char *objects = NULL;
  DIR *d;
  struct dirent *de;

  if (asprintf (&objects, "%s/objects", mirror) < 0)
    return;
  d = opendir (objects);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      cleanup_free char *sub = NULL;
      bvm_error_t e = NULL;
      if (strlen (de->d_name) != 2 || !isxdigit ((unsigned char) de->d_name[0])
          || !isxdigit ((unsigned char) de->d_name[1]))
        continue;
      if (asprintf (&sub, "%s/%s", objects, de->d_name) >= 0 && fs_rm_rf (sub, &e) < 0)
        bvm_error_free (&e);
    }
  closedir (d);
  {
    cleanup_free char *pack = NULL;
    size_t klen = strlen (keep);
    if (asprintf (&pack, "%s/pack", objects) < 0 || (d = opendir (pack)) == NULL)
      return;
    while ((de = readdir (d)) != NULL)
      if (strncmp (de->d_name, "pack-", 5) == 0
          && !(strncmp (de->d_name, keep, klen) == 0 && de->d_name[klen] == '.'))
        unlinkat (dirfd (d), de->d_name, 0);
    closedir (d);
  }
}

static int
repack_mirror (git_repository *repo, const char *mirror, const char *keep_ref,
               const struct gitsrc_limits *lim, struct gitsrc_stats *st, bvm_error_t *err)
{
  git_packbuilder *pb = NULL;
  git_revwalk *walk = NULL;
  git_strarray refs = { 0 };
  cleanup_free char *name = NULL;
  size_t packs = 0;
  int64_t t0 = now_ms ();
  int ret = -1;

  if (count_packs (&packs, mirror) < 0 || packs <= GITSRC_REPACK_PACKS)
    return 0;
  if (prune_refs (repo, keep_ref, &st->pruned_refs, err) < 0)
    return -1;
  if (git_packbuilder_new (&pb, repo) < 0 || git_revwalk_new (&walk, repo) < 0
      || git_reference_list (&refs, repo) < 0)
    {
      git_fail (err, BVM_E_IO, "repacking the mirror");
      goto cleanup;
    }
  git_packbuilder_set_threads (pb, 1);
  for (size_t i = 0; i < refs.count; i++)
    {
      git_oid oid;
      git_object *obj = NULL;
      if (git_reference_name_to_id (&oid, repo, refs.strings[i]) < 0
          || git_object_lookup (&obj, repo, &oid, GIT_OBJECT_ANY) < 0)
        {
          git_fail (err, BVM_E_IO, "repacking the mirror: ref `%s`", refs.strings[i]);
          goto cleanup;
        }
      /* an annotated tag: the tag object itself, then its commit's history */
      if (git_object_type (obj) == GIT_OBJECT_TAG
          && git_packbuilder_insert_recur (pb, &oid, NULL) < 0)
        {
          git_object_free (obj);
          git_fail (err, BVM_E_IO, "repacking the mirror: tag `%s`", refs.strings[i]);
          goto cleanup;
        }
      git_object_free (obj);
      if (git_revwalk_push_ref (walk, refs.strings[i]) < 0)
        git_error_clear (); /* a ref to a tree or blob: inserted above or not at all */
    }
  if (git_packbuilder_insert_walk (pb, walk) < 0)
    {
      git_fail (err, BVM_E_IO, "repacking the mirror");
      goto cleanup;
    }
  git_packbuilder_set_callbacks (pb, repack_progress, (void *) lim);
  if (git_packbuilder_write (pb, NULL, 0, NULL, NULL) < 0)
    {
      git_fail (err, repack_progress (0, 0, 0, (void *) lim) ? BVM_E_TIMEOUT : BVM_E_IO,
                "repacking the mirror");
      goto cleanup;
    }
  if (asprintf (&name, "pack-%s", git_packbuilder_name (pb)) < 0)
    {
      bvm_error (err, ENOMEM, "asprintf");
      goto cleanup;
    }
  remove_old_objects (mirror, name);
  st->repacked = true;
  st->repacked_packs = packs;
  ret = 0;

cleanup:
  st->repack_ms = now_ms () - t0;
  git_strarray_dispose (&refs);
  git_revwalk_free (walk);
  git_packbuilder_free (pb);
  return ret;
}


void
gitsrc_repo_free (struct gitsrc_repo *repo)
{
  if (repo == NULL)
    return;
  git_repository_free (repo->repo);
  if (repo->lock_fd >= 0)
    close (repo->lock_fd); /* releases the flock */
  free (repo);
}

static int
lock_file (int *out, const char *path, int64_t deadline_ms, bvm_error_t *err)
{
  cleanup_close int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", path);
  for (;;)
    {
      if (flock (fd, deadline_ms > 0 ? LOCK_EX | LOCK_NB : LOCK_EX) == 0)
        break;
      if (errno == EINTR)
        continue;
      if (errno != EWOULDBLOCK)
        return bvm_error (err, errno, "flock `%s`", path);
      if (now_ms () >= deadline_ms)
        return bvm_error_code (err, BVM_E_TIMEOUT, 0, "timed out waiting for the lock `%s`", path);
      nanosleep (&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
    }
  *out = steal_fd (&fd);
  return 0;
}

static int
mirror_url_matches (git_repository *repo, const char *url)
{
  git_config *cfg = NULL;
  git_buf v = { 0 };
  int same;

  if (git_repository_config_snapshot (&cfg, repo) < 0)
    return 0;
  same = git_config_get_string_buf (&v, cfg, "buildvm.url") == 0 && strcmp (v.ptr, url) == 0;
  git_buf_dispose (&v);
  git_config_free (cfg);
  return same;
}

/* Open <path>, or (re)create it when it is missing, unreadable, or was made
 * for another URL: the mirror is a cache, and objects fetched from an app's
 * old URL must not satisfy a request naming its new one. Created under a
 * temporary name and renamed, so a crash never leaves a half-made mirror. */
static int
open_mirror (git_repository **out, const char *path, const char *url, bvm_error_t *err)
{
  const unsigned flags = GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE
                         | GIT_REPOSITORY_OPEN_NO_DOTGIT;
  git_repository_init_options io;
  git_repository *repo = NULL;
  git_config *cfg = NULL;
  cleanup_free char *tmp = NULL;
  int r;

  if (git_repository_open_ext (&repo, path, flags, NULL) == 0)
    {
      if (mirror_url_matches (repo, url))
        {
          *out = repo;
          return 0;
        }
      git_repository_free (repo);
      repo = NULL;
    }

  if (fs_rm_rf (path, err) < 0)
    return -1;
  if (asprintf (&tmp, "%s.new", path) < 0)
    return bvm_error (err, ENOMEM, "asprintf");
  if (fs_rm_rf (tmp, err) < 0)
    return -1;
  /* no EXTERNAL_TEMPLATE flag: libgit2's built-in template, no hooks copied
   * from the host */
  git_repository_init_options_init (&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
  io.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_NO_REINIT | GIT_REPOSITORY_INIT_MKDIR;
  io.mode = GIT_REPOSITORY_INIT_SHARED_UMASK;
  if (git_repository_init_ext (&repo, tmp, &io) < 0)
    return git_fail (err, BVM_E_IO, "creating the mirror `%s`", tmp);
  r = git_repository_config (&cfg, repo);
  if (r == 0)
    r = git_config_set_string (cfg, "buildvm.url", url);
  git_config_free (cfg);
  git_repository_free (repo);
  repo = NULL;
  if (r < 0)
    return git_fail (err, BVM_E_IO, "configuring the mirror `%s`", tmp);
  if (rename (tmp, path) < 0)
    return bvm_error (err, errno, "rename `%s` to `%s`", tmp, path);
  if (git_repository_open_ext (&repo, path, flags, NULL) < 0)
    return git_fail (err, BVM_E_IO, "opening the mirror `%s`", path);
  *out = repo;
  return 0;
}

/* 1 when the commit is in the mirror, 0 when not, <0 if it is some other
 * kind of object. */
static int
have_commit (git_repository *repo, const git_oid *oid, const char *commit, bvm_error_t *err)
{
  git_odb *odb = NULL;
  size_t size;
  git_object_t type;
  int r;

  if (git_repository_odb (&odb, repo) < 0)
    return git_fail (err, BVM_E_INTERNAL, "opening the object database");
  r = git_odb_read_header (&size, &type, odb, oid);
  git_odb_free (odb);
  if (r == GIT_ENOTFOUND)
    return 0;
  if (r < 0)
    return git_fail (err, BVM_E_IO, "looking up commit `%s`", commit);
  if (type != GIT_OBJECT_COMMIT)
    return bvm_error_code (err, BVM_E_INVALID, 0, "object `%s` is a %s, not a commit", commit,
                           git_object_type2string (type));
  return 1;
}

enum
{
  ABORT_NONE,
  ABORT_DEADLINE,
  ABORT_SIZE,
};

/* What a fetch child shares with its parent (a MAP_SHARED page): progress
 * while it runs, the outcome when it is done. */
struct fetch_shared
{
  volatile uint64_t objects, bytes;
  int ret, code;
  char msg[1024];
};

struct fetch_watch
{
  const struct gitsrc_limits *lim;
  int aborted;
  struct fetch_shared *sh;
};

/* The progress callbacks stop a fetch that is over its size cap or that
 * goes on past the deadline while data still flows. They are never called
 * while a server sends nothing at all: fetch_specs() bounds that case. */
static int
fetch_check (struct fetch_watch *fw, uint64_t bytes)
{
  if (fw->lim->deadline_ms > 0 && now_ms () >= fw->lim->deadline_ms)
    fw->aborted = ABORT_DEADLINE;
  else if (bytes > fw->lim->max_fetch_bytes)
    fw->aborted = ABORT_SIZE;
  return fw->aborted != ABORT_NONE ? -1 : 0;
}

static int
on_transfer (const git_indexer_progress *p, void *payload)
{
  struct fetch_watch *fw = payload;
  fw->sh->objects = p->received_objects;
  fw->sh->bytes = p->received_bytes;
  return fetch_check (fw, p->received_bytes);
}

static int
on_sideband (const char *str, int len, void *payload)
{
  (void) str;
  (void) len;
  return fetch_check (payload, 0);
}

/* After a fetch: 1 with err set when the server advertised no `ref`,
 * naming the branches it has (at most 8, the first in its order), 0 when it
 * has the ref (or its list cannot be read: the caller's checks then say the
 * commit is not reachable). */
static int
missing_ref (bvm_error_t *err, git_remote *remote, const char *ref, const char *show_url)
{
  static const char heads[] = "refs/heads/";
  const git_remote_head **refs = NULL;
  char e[ESC_MAX + 8], names[640] = "", other[16] = "";
  size_t n = 0, i, nheads = 0, used = 0;
  bool has_main = false, has_master = false;

  if (git_remote_ls (&refs, &n, remote) < 0)
    {
      git_error_clear ();
      return 0;
    }
  for (i = 0; i < n; i++)
    if (refs[i]->name != NULL && strcmp (refs[i]->name, ref) == 0)
      return 0;
  for (i = 0; i < n; i++)
    {
      const char *name = refs[i]->name;
      int w;
      if (name == NULL || strncmp (name, heads, sizeof heads - 1) != 0)
        continue;
      name += sizeof heads - 1;
      has_main |= strcmp (name, "main") == 0;
      has_master |= strcmp (name, "master") == 0;
      if (nheads++ >= 8 || used >= sizeof names)
        continue;
      w = snprintf (names + used, sizeof names - used, "%s`%s`", used ? ", " : "",
                    esc (e, name, strlen (name)));
      used = w < 0 ? sizeof names : used + (size_t) w;
    }
  if (strcmp (ref, "refs/heads/main") == 0 && has_master)
    snprintf (other, sizeof other, "master");
  else if (strcmp (ref, "refs/heads/master") == 0 && has_main)
    snprintf (other, sizeof other, "main");
  {
    char er[ESC_MAX + 8];
    const char *u = esc (e, show_url, strlen (show_url));
    esc (er, ref, strlen (ref));
    if (nheads == 0)
      bvm_error_code (err, BVM_E_INVALID, 0, "`%s` has no ref `%s`, and no branches at all", u,
                      er);
    else if (other[0] != '\0' && nheads == 1)
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "`%s` has no branch `%s`, only `%s`: ask for `refs/heads/%s`", u,
                      er + sizeof heads - 1, other, other);
    else if (other[0] != '\0')
      bvm_error_code (err, BVM_E_INVALID, 0,
                      "`%s` has no branch `%s` (its branches: %s%s): ask for `refs/heads/%s`", u,
                      er + sizeof heads - 1, names, nheads > 8 ? ", ..." : "", other);
    else
      bvm_error_code (err, BVM_E_INVALID, 0, "`%s` has no ref `%s` (its branch%s: %s%s)", u, er,
                      nheads == 1 ? "" : "es", names, nheads > 8 ? ", ..." : "");
  }
  return 1;
}

static int
fetch_here (git_repository *repo, const char *url, const char *show_url, char **specs,
            size_t nspecs, const char *what, const struct gitsrc_limits *lim,
            struct fetch_shared *st, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  /* the _INIT macros leave fields to zero-initialisation, which
   * -Wmissing-field-initializers rejects; the _init functions are equivalent */
  git_remote_create_options ro;
  git_fetch_options fo;
  git_strarray refspecs = { specs, nspecs };
  struct fetch_watch fw = { lim, ABORT_NONE, st };
  git_remote *remote = NULL;
  const git_indexer_progress *prog;
  int r;

  /* no connection at all once the deadline has passed */
  if (fetch_check (&fw, 0) < 0)
    return bvm_error_code (err, BVM_E_TIMEOUT, 0, "fetching from `%s`: the deadline passed",
                           esc (e, show_url, strlen (show_url)));

  /* An anonymous remote on the mirror, insteadOf ignored, no configured
   * fetchspecs: exactly the refspecs given here. */
  git_remote_create_options_init (&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
  git_fetch_options_init (&fo, GIT_FETCH_OPTIONS_VERSION);
  ro.repository = repo;
  ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  if (git_remote_create_with_opts (&remote, url, &ro) < 0)
    return git_fail (err, BVM_E_INVALID, "repository URL `%s`",
                     esc (e, show_url, strlen (show_url)));

  fo.callbacks.transfer_progress = on_transfer;
  fo.callbacks.sideband_progress = on_sideband;
  fo.callbacks.payload = &fw;
  /* no credentials callback: a repository that needs them fails; default
   * certificate checks (no certificate_check callback to override them) */
  fo.prune = GIT_FETCH_NO_PRUNE;
  fo.update_fetchhead = 0;
  fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  /* same-host redirects only: an allowed URL must not bounce the runner to
   * another host (an internal service, say) */
  fo.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
  fo.proxy_opts.type = GIT_PROXY_NONE;

  r = git_remote_fetch (remote, &refspecs, &fo, "buildvm: fetch");
  prog = git_remote_stats (remote);
  if (prog != NULL)
    {
      st->objects = prog->received_objects;
      st->bytes = prog->received_bytes;
    }
  /* one ref asked for that the server does not have: say so plainly, with
   * its branches (a request for main where there is only master) */
  if (r == 0 && nspecs == 1 && strchr (what, '*') == NULL)
    {
      int m = missing_ref (err, remote, what, show_url);
      if (m != 0)
        {
          git_remote_free (remote);
          return m < 0 ? m : -1;
        }
    }
  if (r < 0)
    {
      if (fw.aborted == ABORT_DEADLINE)
        bvm_error_code (err, BVM_E_TIMEOUT, 0, "fetching from `%s`: the deadline passed",
                        esc (e, show_url, strlen (show_url)));
      else if (fw.aborted == ABORT_SIZE)
        bvm_error_code (err, BVM_E_LIMIT, 0, "fetching from `%s`: over %" PRIu64 " bytes",
                        esc (e, show_url, strlen (show_url)), lim->max_fetch_bytes);
      else if (fetch_refusal[0] != '\0')
        /* the host is the job's input, not the network's failure: never
         * retried; the operator may allow a range */
        bvm_error_code (err, BVM_E_DENIED, 0,
                        "fetching from `%s`: the repository host is refused: %s "
                        "(runner.json `checkout.allow_addresses` lists the exceptions)",
                        esc (e, show_url, strlen (show_url)), fetch_refusal);
      else
        git_fail (err, BVM_E_NETWORK, "fetching `%s` from `%s`", what,
                  esc (e, show_url, strlen (show_url)));
    }
  git_remote_free (remote);
  return r < 0 ? -1 : 0;
}

/* libgit2 1.5 has no socket timeout (GIT_OPT_SET_SERVER_TIMEOUT came in
 * 1.7) and calls no callback while a server is silent, so a server that
 * accepts the connection and never answers would block git_remote_fetch()
 * for ever, holding the app's mirror lock (issue 11). The fetch runs in a
 * child process instead, killed at the deadline: that bounds every
 * transport and every blocking step alike - DNS, connect, TLS, a silent
 * HTTP server, a FIFO in a local repository. The child writes the mirror
 * itself and reports through a shared page; a killed child may have left
 * lock files or half a pack behind, so *discard tells the caller to drop
 * the mirror (it is a cache). The process is single-threaded here (the
 * daemon forks a worker per job), so the child may go on using libgit2. */
static int
fetch_specs (git_repository *repo, const char *url, const char *show_url, char **specs,
             size_t nspecs, const char *what, const struct gitsrc_limits *lim,
             struct gitsrc_stats *st, bool *discard, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  struct fetch_shared *sh;
  int64_t t0 = now_ms ();
  pid_t parent = getpid (), pid;
  int p[2], status = 0, ret = -1;
  bool timed_out = false;

  sh = mmap (NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED)
    return bvm_error (err, errno, "mmap");
  sh->ret = -1;
  sh->code = BVM_E_INTERNAL;
  snprintf (sh->msg, sizeof sh->msg, "the fetch process died");
  if (pipe2 (p, O_CLOEXEC) < 0)
    {
      bvm_error (err, errno, "pipe");
      goto cleanup;
    }
  pid = fork ();
  if (pid < 0)
    {
      bvm_error (err, errno, "fork the fetch");
      close (p[0]);
      close (p[1]);
      goto cleanup;
    }
  if (pid == 0)
    {
      bvm_error_t cerr = NULL;
      close (p[0]);
      if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid () != parent)
        _exit (127);
      fetch_allow = lim->allow_addresses;
      fetch_refusal[0] = '\0';
      sh->ret = fetch_here (repo, url, show_url, specs, nspecs, what, lim, sh, &cerr);
      if (sh->ret < 0)
        {
          sh->code = bvm_error_get_code (&cerr);
          snprintf (sh->msg, sizeof sh->msg, "%s", bvm_error_msg (&cerr));
        }
      _exit (0); /* p[1] closes: the parent wakes up */
    }
  close (p[1]);
  for (;;)
    {
      struct pollfd pfd = { p[0], POLLIN, 0 };
      int64_t left = lim->deadline_ms > 0 ? lim->deadline_ms - now_ms () : -1;
      char c;
      int n;

      if (lim->deadline_ms > 0 && left <= 0)
        {
          timed_out = true;
          break;
        }
      n = poll (&pfd, 1, left < 0 ? -1 : (int) (left < 1000 ? left : 1000));
      if (n < 0 && errno != EINTR)
        {
          timed_out = true; /* cannot watch it: do not let it run unwatched */
          break;
        }
      if (n > 0 && read (p[0], &c, 1) <= 0)
        break; /* EOF: the child is gone */
    }
  close (p[0]);
  if (timed_out)
    kill (pid, SIGKILL);
  while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
    ;
  st->fetch_objects += sh->objects;
  st->fetch_bytes += sh->bytes;
  if (timed_out)
    {
      *discard = true;
      int64_t tenths = (lim->deadline_ms - t0 + 50) / 100;
      char secs[32];
      if (tenths % 10 == 0)
        snprintf (secs, sizeof secs, "%lld", (long long) (tenths / 10));
      else
        snprintf (secs, sizeof secs, "%lld.%lld", (long long) (tenths / 10),
                  (long long) (tenths % 10));
      bvm_error_code (err, BVM_E_TIMEOUT, 0,
                      "fetch of `%s` timed out after %s s (%" PRIu64 " bytes received)",
                      esc (e, show_url, strlen (show_url)), secs, (uint64_t) sh->bytes);
    }
  else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    {
      char ps[96];
      *discard = true;
      bvm_error_code (err, BVM_E_INTERNAL, 0, "the fetch of `%s` %s",
                      esc (e, show_url, strlen (show_url)),
                      proc_status_str (ps, sizeof ps, status));
    }
  else if (sh->ret < 0)
    bvm_error_code (err, sh->code, 0, "%s", sh->msg);
  else
    ret = 0;
cleanup:
  munmap (sh, sizeof *sh);
  return ret;
}

/* A local URL must not reach into the checkout cache: app a naming
 * /var/cache/buildvm/git/b.git would read app b's mirror. */
static int
check_local_path (char **resolved, const char *path, const char *cache_dir, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  cleanup_free char *cache = NULL;
  cleanup_free char *real = NULL;
  size_t clen;

  real = realpath (path, NULL);
  if (real == NULL)
    return bvm_error_code (err, BVM_E_INVALID, errno, "local repository `%s`",
                           esc (e, path, strlen (path)));
  cache = realpath (cache_dir, NULL);
  if (cache == NULL)
    return bvm_error (err, errno, "realpath `%s`", cache_dir);
  clen = strlen (cache);
  if (strncmp (real, cache, clen) == 0 && (real[clen] == '\0' || real[clen] == '/' || clen == 1))
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "local repository `%s` is inside the checkout cache",
                           esc (e, path, strlen (path)));
  if (strchr (real, '%') != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "local repository path `%s` must not contain `%%`",
                           esc (e, real, strlen (real)));
  *resolved = steal_pointer (&real);
  return 0;
}

static int check_on_ref (git_repository *repo, const char *ref, const char *commit,
                         const char *url, bvm_error_t *err);
static int ref_is_stale (git_repository *repo, const char *ref, const char *commit,
                         bvm_error_t *err);

int
gitsrc_fetch (struct gitsrc_repo **out, const char *cache_dir, const char *app, const char *url,
              const char *ref, const char *commit, const struct gitsrc_limits *lim,
              struct gitsrc_stats *stats, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  struct gitsrc_stats dummy;
  enum url_kind kind = URL_HTTP;
  const char *local = NULL;
  cleanup_free char *resolved = NULL;
  cleanup_free char *canon = NULL; /* the URL recorded in the mirror */
  cleanup_free char *fetch_url = NULL;
  cleanup_free char *mirror = NULL;
  cleanup_free char *lock = NULL;
  cleanup_free char *spec = NULL;
  cleanup_close int lock_fd = -1;
  struct gitsrc_repo *r = NULL;
  git_repository *repo = NULL;
  git_oid oid;
  int64_t t0 = now_ms ();
  bool discard = false;
  int have;

  if (stats == NULL)
    stats = &dummy;
  if (lim == NULL)
    lim = &default_limits;
  stats->fetched = stats->repacked = false;
  stats->repacked_packs = stats->pruned_refs = 0;
  stats->repack_ms = 0;
  stats->repack_error[0] = '\0';
  stats->fetch_objects = stats->fetch_bytes = 0;
  stats->fetch_ms = 0;

  if (gitsrc_global_init (err) < 0 || check_app (app, err) < 0 || parse_oid (&oid, commit, err) < 0
      || check_ref (ref, err) < 0 || check_url (&kind, &local, url, err) < 0)
    return -1;
  if (cache_dir == NULL || cache_dir[0] != '/')
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "the checkout cache must be an absolute path");
  if (fs_mkdir_p (cache_dir, 0700, err) < 0)
    return -1;

  /* file:///x and /x are the same repository for the mirror */
  if (kind == URL_LOCAL ? asprintf (&canon, "file://%s", local) < 0
                        : (canon = strdup (url)) == NULL)
    return bvm_error (err, ENOMEM, "strdup");

  if (asprintf (&mirror, "%s/%s.git", cache_dir, app) < 0
      || asprintf (&lock, "%s/%s.lock", cache_dir, app) < 0)
    return bvm_error (err, ENOMEM, "asprintf");
  if (lock_file (&lock_fd, lock, lim->deadline_ms, err) < 0)
    return -1;
  if (open_mirror (&repo, mirror, canon, err) < 0)
    return -1;

  have = have_commit (repo, &oid, commit, err);
  if (have == 1 && ref != NULL && (have = ref_is_stale (repo, ref, commit, err)) >= 0)
    have = !have; /* on the mirror's copy of the ref: no network */
  if (have == 0)
    {
      /* First the ref the request names; the mirror's refs are the "haves"
       * of the negotiation, so only new objects travel. */
      stats->fetched = true;
      /* resolved only now: a commit in the mirror needs no source at all */
      if (kind == URL_LOCAL)
        {
          if (check_local_path (&resolved, local, cache_dir, err) < 0)
            goto fail;
          if (asprintf (&fetch_url, "file://%s", resolved) < 0)
            {
              bvm_error (err, ENOMEM, "asprintf");
              goto fail;
            }
        }
      else if ((fetch_url = strdup (url)) == NULL)
        {
          bvm_error (err, ENOMEM, "strdup");
          goto fail;
        }
      if (ref != NULL)
        {
          if (asprintf (&spec, "+%s:%s", ref, ref) < 0)
            {
              bvm_error (err, ENOMEM, "asprintf");
              goto fail;
            }
          if (fetch_specs (repo, fetch_url, url, &spec, 1, ref, lim, stats, &discard, err) < 0)
            goto fail;
          have = have_commit (repo, &oid, commit, err);
        }
      /* with a ref, only the ref: a commit that another branch reaches is
       * not on it (see check_on_ref) */
      if (have == 0 && ref == NULL)
        {
          char *all[] = { (char *) "+refs/heads/*:refs/heads/*",
                          (char *) "+refs/tags/*:refs/tags/*" };
          if (fetch_specs (repo, fetch_url, url, all, ARRAY_SIZE (all), "refs/heads/* refs/tags/*",
                           lim, stats, &discard, err)
              < 0)
            goto fail;
          have = have_commit (repo, &oid, commit, err);
        }
      if (have == 0)
        {
          bvm_error_code (err, BVM_E_INVALID, 0, "commit `%s` is not reachable from `%s` in `%s`",
                          commit, ref ? ref : "any branch or tag", esc (e, url, strlen (url)));
          goto fail;
        }
    }
  if (have < 0)
    goto fail;
  if (ref != NULL && check_on_ref (repo, ref, commit, url, err) < 0)
    goto fail;
  if (stats->fetched)
    {
      /* a failed repack costs the job nothing: the old packs are all there */
      bvm_error_t e2 = NULL;
      if (repack_mirror (repo, mirror, ref, lim, stats, &e2) < 0)
        {
          snprintf (stats->repack_error, sizeof stats->repack_error, "%s", bvm_error_msg (&e2));
          bvm_error_free (&e2);
        }
      else if (stats->repacked)
        {
          /* the packs it had open are gone: reopen on the new one */
          git_repository_free (repo);
          repo = NULL;
          if (open_mirror (&repo, mirror, canon, err) < 0)
            goto fail;
        }
    }

  r = calloc (1, sizeof *r);
  if (r == NULL)
    {
      git_repository_free (repo);
      return bvm_error (err, ENOMEM, "calloc");
    }
  r->repo = repo;
  r->lock_fd = steal_fd (&lock_fd);
  *out = r;
  stats->fetch_ms = now_ms () - t0;
  return 0;

fail:
  git_repository_free (repo);
  if (discard)
    {
      /* still under the lock: the next job rebuilds the mirror */
      bvm_error_t e2 = NULL;
      if (fs_rm_rf (mirror, &e2) < 0)
        bvm_error_free (&e2);
    }
  stats->fetch_ms = now_ms () - t0;
  return bvm_error_wrap (err, "checking out `%s` for app `%s`", commit, app);
}

/* --- local repositories (dry-run) ---------------------------------------- */

static int
open_local (git_repository **out, const char *dir, bvm_error_t *err)
{
  char e[ESC_MAX + 8];

  if (gitsrc_global_init (err) < 0)
    return -1;
  if (dir == NULL || git_repository_open_ext (out, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0)
    return git_fail (err, BVM_E_INVALID, "`%s` is not the top of a git repository",
                     dir ? esc (e, dir, strlen (dir)) : "");
  return 0;
}

int
gitsrc_open_local (struct gitsrc_repo **out, const char *dir, bvm_error_t *err)
{
  git_repository *repo = NULL;
  struct gitsrc_repo *r;

  if (open_local (&repo, dir, err) < 0)
    return -1;
  r = calloc (1, sizeof *r);
  if (r == NULL)
    {
      git_repository_free (repo);
      return bvm_error (err, ENOMEM, "calloc");
    }
  r->repo = repo;
  r->lock_fd = -1;
  *out = r;
  return 0;
}

static int
head_commit (git_commit **out, git_repository *repo, const char *dir, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  git_reference *head = NULL;
  git_object *obj = NULL;
  int r;

  r = git_repository_head (&head, repo);
  if (r == GIT_EUNBORNBRANCH || r == GIT_ENOTFOUND)
    return bvm_error_code (err, BVM_E_INVALID, 0, "repository `%s` has no commits yet",
                           esc (e, dir, strlen (dir)));
  if (r < 0)
    return git_fail (err, BVM_E_INVALID, "HEAD of `%s`", esc (e, dir, strlen (dir)));
  r = git_reference_peel (&obj, head, GIT_OBJECT_COMMIT);
  git_reference_free (head);
  if (r < 0)
    return git_fail (err, BVM_E_INVALID, "HEAD of `%s`", esc (e, dir, strlen (dir)));
  *out = (git_commit *) obj;
  return 0;
}

int
gitsrc_head (char out[GITSRC_OID_HEX + 1], const char *dir, bvm_error_t *err)
{
  git_repository *repo = NULL;
  git_commit *c = NULL;
  int r;

  if (open_local (&repo, dir, err) < 0)
    return -1;
  r = head_commit (&c, repo, dir, err);
  if (r == 0)
    git_oid_tostr (out, GITSRC_OID_HEX + 1, git_commit_id (c));
  git_commit_free (c);
  git_repository_free (repo);
  return r;
}

int
gitsrc_path_ignored (bool *ignored, const char *dir, const char *rel, bvm_error_t *err)
{
  git_repository *repo = NULL;
  int v = 0;

  if (open_local (&repo, dir, err) < 0)
    return -1;
  if (git_ignore_path_is_ignored (&v, repo, rel) < 0)
    {
      git_repository_free (repo);
      return git_fail (err, BVM_E_INVALID, "ignore rules for `%s`", rel);
    }
  git_repository_free (repo);
  *ignored = v != 0;
  return 0;
}

int
gitsrc_worktree_changes (size_t *n, const char *dir, const char *skip, bvm_error_t *err)
{
  git_repository *repo = NULL;
  git_status_list *list = NULL;
  git_status_options o;
  size_t i, count, skip_len = skip ? strlen (skip) : 0;

  *n = 0;
  if (open_local (&repo, dir, err) < 0)
    return -1;
  git_status_options_init (&o, GIT_STATUS_OPTIONS_VERSION);
  o.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
  o.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_EXCLUDE_SUBMODULES;
  if (git_status_list_new (&list, repo, &o) < 0)
    {
      git_repository_free (repo);
      return git_fail (err, BVM_E_INVALID, "the status of `%s`", dir);
    }
  count = git_status_list_entrycount (list);
  for (i = 0; i < count; i++)
    {
      const git_status_entry *e = git_status_byindex (list, i);
      const git_diff_delta *d = e->index_to_workdir ? e->index_to_workdir : e->head_to_index;
      const char *path = d && d->new_file.path ? d->new_file.path : d ? d->old_file.path : NULL;
      if (e->status == GIT_STATUS_CURRENT || (e->status & GIT_STATUS_IGNORED))
        continue;
      if (skip_len && path && strncmp (path, skip, skip_len) == 0)
        continue;
      (*n)++;
    }
  git_status_list_free (list);
  git_repository_free (repo);
  return 0;
}

/* Open the parent directory of `rel` (relative to rootfd) one component at a
 * time with O_NOFOLLOW: a directory replaced by a symlink in the working tree
 * is never traversed. *base points at the last component of rel. Returns the
 * fd, -ENOENT when some component is missing or not a directory any more
 * (the file is gone: skip it), or another negative value with err set. */
static int
open_parent (int rootfd, const char *rel, const char **base, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  char comp[NAME_MAX + 1];
  cleanup_close int fd = fcntl (rootfd, F_DUPFD_CLOEXEC, 0);
  const char *p = rel;

  if (fd < 0)
    return bvm_error (err, errno, "dup");
  for (;;)
    {
      size_t n = strcspn (p, "/");
      int next;
      if (p[n] == '\0')
        break;
      if (n > NAME_MAX)
        return bvm_error_code (err, BVM_E_LIMIT, 0, "a component of `%s` is too long",
                               esc (e, rel, strlen (rel)));
      memcpy (comp, p, n);
      comp[n] = '\0';
      next = openat (fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0)
        {
          if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return -ENOENT;
          return bvm_error (err, errno, "open `%s`", esc (e, rel, strlen (rel)));
        }
      close (fd);
      fd = next;
      p += n + 1;
    }
  *base = p;
  return steal_fd (&fd);
}

static int
export_wt_file (struct exporter *ex, int rootfd, const char *rel, size_t pathlen, bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  const char *base = NULL;
  cleanup_close int dfd = -1;
  cleanup_close int fd = -1;
  struct stat st, fst;
  cleanup_free char *buf = NULL;
  uint64_t left;

  dfd = open_parent (rootfd, rel, &base, err);
  if (dfd == -ENOENT)
    return 0;
  if (dfd < 0)
    return -1;
  if (fstatat (dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return 0; /* deleted in the working tree */
      return bvm_error (err, errno, "stat `%s`", esc (e, rel, strlen (rel)));
    }
  if (S_ISLNK (st.st_mode))
    {
      char target[GITSRC_MAX_SYMLINK + 2];
      ssize_t n;
      /* the name was checked as a file; a symlink has one more rule */
      if (gitsrc_check_component (base, strlen (base), true, err) < 0)
        return bvm_error_wrap (err, "refusing `%s`", esc (e, ex->path, pathlen));
      n = readlinkat (dfd, base, target, sizeof target - 1);
      if (n < 0)
        return bvm_error (err, errno, "readlink `%s`", esc (e, rel, strlen (rel)));
      target[n] = '\0';
      return ex_symlink (ex, pathlen, target, (size_t) n, err);
    }
  if (!S_ISREG (st.st_mode))
    {
      /* a directory where git expected a file, a socket, a fifo ... */
      ex->st->skipped++;
      return 0;
    }
  fd = openat (dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return bvm_error (err, errno, "open `%s`", esc (e, rel, strlen (rel)));
  if (fstat (fd, &fst) < 0)
    return bvm_error (err, errno, "fstat `%s`", esc (e, rel, strlen (rel)));
  if (!S_ISREG (fst.st_mode) || fst.st_ino != st.st_ino || fst.st_dev != st.st_dev)
    return bvm_error_code (err, BVM_E_IO, 0, "`%s` changed while it was exported",
                           esc (e, rel, strlen (rel)));
  if (ex_file_begin (ex, pathlen, (uint64_t) fst.st_size, (fst.st_mode & 0111) != 0, err) < 0)
    return -1;
  buf = malloc (CHUNK);
  if (buf == NULL)
    return bvm_error (err, ENOMEM, "malloc");
  /* exactly st_size bytes: the tar header already promised that many */
  for (left = (uint64_t) fst.st_size; left > 0;)
    {
      ssize_t n = read (fd, buf, left < CHUNK ? (size_t) left : CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return bvm_error (err, errno, "read `%s`", esc (e, rel, strlen (rel)));
      if (n == 0)
        return bvm_error_code (err, BVM_E_IO, 0, "`%s` shrank while it was exported",
                               esc (e, rel, strlen (rel)));
      if (ex_data (ex, pathlen, buf, (size_t) n, err) < 0 || ex_deadline (ex, err) < 0)
        return -1;
      left -= (uint64_t) n;
    }
  return 0;
}

/* Write the directories of `rel` (relative, '/'-separated, already checked)
 * that the previous entry did not have: entries come sorted, so all of one
 * directory's entries are contiguous and `last_dir` suffices. */
static int
export_wt_dirs (struct exporter *ex, const char *rel, struct buf *last_dir, bvm_error_t *err)
{
  const char *slash;

  for (const char *p = rel; (slash = strchr (p, '/')) != NULL; p = slash + 1)
    {
      size_t n = (size_t) (slash - rel);
      bool had = last_dir->len >= n && memcmp (last_dir->ptr, rel, n) == 0
                 && (last_dir->len == n || last_dir->ptr[n] == '/');
      if (had)
        continue;
      if (ex_visit (ex, err) < 0)
        return -1;
      if (ex_dir (ex, ex->plen + n, err) < 0) /* ex->path holds prefix + rel */
        return -1;
    }
  buf_reset (last_dir);
  slash = strrchr (rel, '/');
  if (slash != NULL && buf_add (last_dir, rel, (size_t) (slash - rel)) < 0)
    return bvm_error (err, errno, "directory name");
  return 0;
}

int
gitsrc_export_worktree (struct archive *w, const char *dir, const char *prefix,
                        const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                        bvm_error_t *err)
{
  struct gitsrc_sink sink = { &archive_sink_ops, w };
  return gitsrc_export_worktree_to (&sink, dir, prefix, lim, stats, err);
}

int
gitsrc_export_worktree_to (const struct gitsrc_sink *sink, const char *dir, const char *prefix,
                           const struct gitsrc_limits *lim, struct gitsrc_stats *stats,
                           bvm_error_t *err)
{
  char e[ESC_MAX + 8];
  struct gitsrc_stats dummy;
  struct exporter ex;
  git_repository *repo = NULL;
  git_status_list *list = NULL;
  git_status_options so;
  git_commit *head = NULL;
  cleanup_close int rootfd = -1;
  struct buf last_dir = BUF_INIT (1 << 20);
  int64_t t0 = now_ms ();
  size_t count;
  int ret = -1;

  export_start (&stats, &dummy, &lim);
  memset (&ex, 0, sizeof ex);
  if (open_local (&repo, dir, err) < 0)
    return -1;
  if (git_repository_is_bare (repo))
    {
      bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is a bare repository: it has no working tree",
                      esc (e, dir, strlen (dir)));
      goto cleanup;
    }
  rootfd = open (git_repository_workdir (repo), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0)
    {
      bvm_error (err, errno, "open `%s`", git_repository_workdir (repo));
      goto cleanup;
    }
  /* no HEAD yet (a fresh repository) is fine for a working-tree build */
  if (git_repository_head_unborn (repo) != 1 && head_commit (&head, repo, dir, err) < 0)
    bvm_error_free (err);
  if (ex_init (&ex, sink, prefix, head ? git_commit_time (head) : 0, lim, stats, err) < 0)
    goto cleanup;

  /* Tracked files (modified or not) and untracked files that no ignore rule
   * matches, from the working tree; deleted ones are reported and skipped. */
  git_status_options_init (&so, GIT_STATUS_OPTIONS_VERSION);
  so.show = GIT_STATUS_SHOW_WORKDIR_ONLY;
  so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS
             | GIT_STATUS_OPT_INCLUDE_UNMODIFIED | GIT_STATUS_OPT_EXCLUDE_SUBMODULES
             | GIT_STATUS_OPT_SORT_CASE_SENSITIVELY;
  if (git_status_list_new (&list, repo, &so) < 0)
    {
      git_fail (err, BVM_E_IO, "reading the status of `%s`", esc (e, dir, strlen (dir)));
      goto cleanup;
    }
  count = git_status_list_entrycount (list);
  for (size_t i = 0; i < count; i++)
    {
      const git_status_entry *s = git_status_byindex (list, i);
      const git_diff_delta *d = s->index_to_workdir;
      const char *rel;
      size_t rlen;

      if (d == NULL || (s->status & (GIT_STATUS_WT_DELETED | GIT_STATUS_IGNORED)) != 0)
        continue;
      rel = d->new_file.path;
      rlen = strlen (rel);
      if (ex_visit (&ex, err) < 0)
        goto cleanup;
      if (d->new_file.mode == GIT_FILEMODE_COMMIT || (rlen > 0 && rel[rlen - 1] == '/'))
        {
          /* a submodule or an untracked nested repository */
          stats->skipped++;
          continue;
        }
      /* check every component and build prefix + rel in ex.path */
      for (size_t at = 0; at < rlen;)
        {
          size_t clen = strcspn (rel + at, "/");
          bool last = at + clen == rlen;
          if (ex_set_name (&ex, ex.plen + at, rel + at, clen, false, err) < 0)
            goto cleanup;
          if (last)
            break;
          ex.path[ex.plen + at + clen] = '/';
          at += clen + 1;
        }
      if (rlen == 0)
        continue;
      if (export_wt_dirs (&ex, rel, &last_dir, err) < 0)
        goto cleanup;
      if (export_wt_file (&ex, rootfd, rel, ex.plen + rlen, err) < 0)
        goto cleanup;
    }
  ret = 0;

cleanup:
  if (ret < 0)
    bvm_error_wrap (err, "exporting the working tree of `%s`",
                    dir ? esc (e, dir, strlen (dir)) : "");
  buf_dispose (&last_dir);
  ex_dispose (&ex);
  git_status_list_free (list);
  git_commit_free (head);
  git_repository_free (repo);
  stats->export_ms = now_ms () - t0;
  return ret;
}

/* --- reading single files (the build spec) ---------------------------------- */

int
gitsrc_commit_time (int64_t *out, struct gitsrc_repo *repo, const char *commit, bvm_error_t *err)
{
  git_oid oid;
  git_commit *c = NULL;

  if (gitsrc_global_init (err) < 0 || parse_oid (&oid, commit, err) < 0)
    return -1;
  if (git_commit_lookup (&c, repo->repo, &oid) < 0)
    return git_fail (err, BVM_E_INVALID, "commit `%s`", commit);
  *out = (int64_t) git_commit_time (c);
  git_commit_free (c);
  return 0;
}

int
gitsrc_read_file (char **out, size_t *len, struct gitsrc_repo *repo, const char *commit,
                  const char *path, size_t max, bvm_error_t *err)
{
  git_oid oid;
  git_commit *c = NULL;
  git_tree *tree = NULL;
  git_tree_entry *te = NULL;
  git_blob *blob = NULL;
  git_odb *odb = NULL;
  git_object_t type = GIT_OBJECT_INVALID;
  size_t size = 0;
  int ret = 0;

  if (gitsrc_global_init (err) < 0 || parse_oid (&oid, commit, err) < 0)
    return -1;
  if (git_commit_lookup (&c, repo->repo, &oid) < 0)
    return git_fail (err, BVM_E_INVALID, "commit `%s`", commit);
  if (git_commit_tree (&tree, c) < 0)
    {
      ret = git_fail (err, BVM_E_INVALID, "tree of commit `%s`", commit);
      goto cleanup;
    }
  if (git_tree_entry_bypath (&te, tree, path) < 0)
    {
      git_error_clear ();
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "commit `%s` has no `%s` at its root", commit,
                            path);
      goto cleanup;
    }
  /* a symlink or a directory named like the spec is not a spec: the host
   * never follows links in a tree */
  if (git_tree_entry_filemode (te) != GIT_FILEMODE_BLOB
      && git_tree_entry_filemode (te) != GIT_FILEMODE_BLOB_EXECUTABLE)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "`%s` in commit `%s` is not a regular file",
                            path, commit);
      goto cleanup;
    }
  /* The size from the object header first, as export_blob does: a blob of
   * zeros compresses ~1000:1, and git_blob_lookup would inflate all of it
   * before its size could be checked (issue 11: 1 MB of objects, 1 GB RSS). */
  if (git_repository_odb (&odb, repo->repo) < 0)
    {
      ret = git_fail (err, BVM_E_INTERNAL, "opening the object database");
      goto cleanup;
    }
  if (git_odb_read_header (&size, &type, odb, git_tree_entry_id (te)) < 0)
    {
      ret = git_fail (err, BVM_E_INVALID, "`%s`", path);
      goto cleanup;
    }
  if (type != GIT_OBJECT_BLOB || size > max)
    {
      ret = type != GIT_OBJECT_BLOB
                ? bvm_error_code (err, BVM_E_INVALID, 0, "`%s` is a %s, not a blob", path,
                                  git_object_type2string (type))
                : bvm_error_code (err, BVM_E_LIMIT, 0,
                                  "`%s` is %zu bytes, over the %zu bytes allowed", path, size,
                                  max);
      goto cleanup;
    }
  if (git_blob_lookup (&blob, repo->repo, git_tree_entry_id (te)) < 0)
    {
      ret = git_fail (err, BVM_E_INVALID, "`%s`", path);
      goto cleanup;
    }
  if ((uint64_t) git_blob_rawsize (blob) > max)
    {
      ret = bvm_error_code (err, BVM_E_LIMIT, 0, "`%s` is larger than %zu bytes", path, max);
      goto cleanup;
    }
  *len = (size_t) git_blob_rawsize (blob);
  *out = malloc (*len + 1);
  if (*out == NULL)
    {
      ret = bvm_error (err, ENOMEM, "`%s`", path);
      goto cleanup;
    }
  memcpy (*out, git_blob_rawcontent (blob), *len);
  (*out)[*len] = '\0';
cleanup:
  git_blob_free (blob);
  git_odb_free (odb);
  git_tree_entry_free (te);
  git_tree_free (tree);
  git_commit_free (c);
  return ret;
}

/* --- ancestry (the ref check and the tag check) ----------------------------- */

int
gitsrc_ref_tip (char out[GITSRC_OID_HEX + 1], bool *found, struct gitsrc_repo *repo,
                const char *ref, bvm_error_t *err)
{
  git_reference *gref = NULL;
  git_object *obj = NULL;
  int r;

  *found = false;
  out[0] = '\0';
  if (gitsrc_global_init (err) < 0 || check_ref (ref, err) < 0)
    return -1;
  r = git_reference_lookup (&gref, repo->repo, ref);
  if (r == GIT_ENOTFOUND)
    {
      git_error_clear ();
      return 0;
    }
  if (r < 0)
    return git_fail (err, BVM_E_IO, "reading `%s` in the mirror", ref);
  /* an annotated tag names its commit through a tag object: peel it; a ref
   * to a tree or a blob has no tip commit and no commit is on it */
  r = git_reference_peel (&obj, gref, GIT_OBJECT_COMMIT);
  git_reference_free (gref);
  if (r < 0)
    return git_fail (err, BVM_E_INVALID, "`%s` does not name a commit", ref);
  git_oid_tostr (out, GITSRC_OID_HEX + 1, git_object_id (obj));
  git_object_free (obj);
  *found = true;
  return 0;
}

int
gitsrc_descends (bool *out, struct gitsrc_repo *repo, const char *newer, const char *older,
                 bvm_error_t *err)
{
  git_oid n, o;
  int r;

  *out = false;
  if (gitsrc_global_init (err) < 0 || parse_oid (&n, newer, err) < 0
      || parse_oid (&o, older, err) < 0)
    return -1;
  if (git_oid_equal (&n, &o))
    {
      *out = true;
      return 0;
    }
  /* a commit the mirror does not have is not an ancestor of anything in it;
   * asking libgit2 would fail the walk instead of answering */
  if ((r = have_commit (repo->repo, &o, older, err)) <= 0
      || (r = have_commit (repo->repo, &n, newer, err)) <= 0)
    return r;
  r = git_graph_descendant_of (repo->repo, &n, &o);
  if (r < 0)
    return git_fail (err, BVM_E_IO, "walking the history of `%s`", newer);
  *out = r == 1;
  return 0;
}

/* Issue 11, item 9: the ref is what a role condition on `job:Ref` and the
 * `{ref_name}` tag trust, so a commit that only an unreviewed branch (or no
 * branch at all) reaches must not be built as `refs/heads/main`. The
 * commit is on the ref when it is the ref's tip in the mirror or an
 * ancestor of it. `*on` false also when the mirror lacks the ref. */
static int
on_ref (bool *on, char tip[GITSRC_OID_HEX + 1], bool *found, struct gitsrc_repo *repo,
        const char *ref, const char *commit, bvm_error_t *err)
{
  *on = false;
  if (gitsrc_ref_tip (tip, found, repo, ref, err) < 0)
    return -1;
  if (!*found)
    return 0;
  return gitsrc_descends (on, repo, tip, commit, err);
}

static int
check_on_ref (git_repository *repo, const char *ref, const char *commit, const char *url,
              bvm_error_t *err)
{
  struct gitsrc_repo view = { repo, -1 };
  char tip[GITSRC_OID_HEX + 1], e[ESC_MAX + 8];
  bool on, found;

  if (on_ref (&on, tip, &found, &view, ref, commit, err) < 0)
    return -1;
  if (on)
    return 0;
  if (!found)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "commit `%s` is not on `%s` (no such ref in `%s`)", commit, ref,
                           esc (e, url, strlen (url)));
  return bvm_error_code (err, BVM_E_INVALID, 0, "commit `%s` is not on `%s` (its tip is `%s`)",
                         commit, ref, tip);
}

/* A commit already in the mirror but not on the mirror's copy of the ref:
 * the ref may have moved since the last fetch (a branch fast-forwarded onto
 * a commit fetched before through another branch). 1 when the ref must be
 * fetched again. */
static int
ref_is_stale (git_repository *repo, const char *ref, const char *commit, bvm_error_t *err)
{
  struct gitsrc_repo view = { repo, -1 };
  char tip[GITSRC_OID_HEX + 1];
  bool on, found;

  if (on_ref (&on, tip, &found, &view, ref, commit, err) < 0)
    return -1;
  return on ? 0 : 1;
}
