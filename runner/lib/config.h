/* config.h - the runner's own configuration, `runner.json`
 *
 * Every field is optional and has a built-in default, so `buildvm run` works
 * with no file at all. The file is the operator's, but it is still parsed
 * strictly (unknown fields, wrong types and out-of-range values are errors):
 * a typo in a limit must not silently leave the default in place.
 *
 * Paths: an explicit field wins over the environment (BUILDVM_HOME), which
 * wins over the built-in default; see config_default_home().
 *
 * The config also says where a job's image goes (config_expand_destination),
 * from trusted inputs only; plan.c turns a job into its whole plan.
 */
#ifndef BUILDVM_CONFIG_H
#define BUILDVM_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egress.h"
#include "error.h"
#include "jail.h"
#include "job.h"
#include "regtoken.h"
#include "spec.h"
#include "webhook.h"
#include "vm.h"
#include "util.h"

#define CONFIG_MAX_BYTES (1024 * 1024)
#define CONFIG_PATH_MAX 1024
#define CONFIG_URL_MAX 1024
#define CONFIG_TEMPLATE_MAX 255
#define CONFIG_MAX_EXTRA_TAGS 16
#define CONFIG_SHORT_COMMIT_LEN 12 /* {short_commit} */
#define CONFIG_REF_NAME_MAX 128    /* {ref_name} */
#define CONFIG_MAX_APPS 256
#define CONFIG_APP_MAX_MATCH 32
#define CONFIG_APP_MAX_BRANCHES 32

enum config_queue_kind
{
  CONFIG_QUEUE_SPOOL, /* "spool:/abs/dir" */
  CONFIG_QUEUE_REDIS, /* "redis://host[:port][/stream][?group=name]" */
};

struct config_registry
{
  char *url;         /* "http(s)://host[:port]", no path, no trailing slash */
  char *credentials; /* absolute path of a private JSON file, or NULL */
  char *job_tickets; /* the ticket key shared with the token server (regtoken.h), or NULL */
  char *repository;  /* template, e.g. "apps/{app}" */
  char *tag;         /* template, e.g. "{commit}" */
  char **extra_tags; /* templates, NULL-terminated, may be empty */
  size_t n_extra_tags;
};

struct config_images
{
  char *dir;             /* VM image manifests are <dir>/<profile>.json */
  char *default_profile; /* for commands that build without a spec profile */
};

/* Upper bounds on anything a job asks for or produces. */
struct config_limits
{
  uint64_t max_vcpus;
  uint64_t max_memory_mib;
  uint64_t max_disk_mib;
  uint64_t max_build_seconds;
  uint64_t max_output_bytes;
  uint64_t max_log_bytes;
  uint64_t max_source_bytes;
  uint64_t max_source_entries;
  uint64_t max_checkout_seconds;  /* the checkout phase: lock wait, fetch, export */
  uint64_t max_worker_memory_mib; /* RLIMIT_DATA of the process running a job; 0: none */
  uint64_t max_artifacts;         /* per job, counted while the outputs are read */
};

/* What a job gets when its spec does not say; never above the limits. */
struct config_defaults
{
  uint64_t vcpus;
  uint64_t memory_mib;
  uint64_t disk_mib;
  uint64_t build_seconds;
};

struct config_policies
{
  char *role;     /* "builtin" or an absolute path to a role policy */
  char *boundary; /* "builtin" or an absolute path to a boundary policy */
};

struct config_secrets
{
  char *dir;        /* the per-app secret store (secrets.h) */
  char *master_key; /* its master key: 32 random bytes, mode 0600 */
  bool at_rest;     /* artifacts sealed with the app's key (seal.h); default on */
};

/* Signed provenance (attest.h, docs/operations.md "The signing key") */
struct config_attest
{
  char *key;        /* the runner's private signing key (PEM, mode 0600); made at first use */
  char *builder_id; /* the runner's identity in the provenance: runDetails.builder.id */
};

/* `serve.pool[]`: VMs of one shape booted ahead of their jobs (serve.c) */
struct config_pool_shape
{
  char *profile;       /* the image profile; NULL: images.default_profile */
  uint64_t vcpus;      /* 0: defaults.vcpus */
  uint64_t memory_mib; /* 0: defaults.memory_mib */
  uint64_t size;       /* VMs kept waiting */
};

#define CONFIG_POOL_SHAPES_MAX 8

/* `buildvm serve`: the daemon's own settings */
struct config_serve
{
  struct config_pool_shape pool[CONFIG_POOL_SHAPES_MAX];
  size_t n_pool;
  uint64_t pool_max_age_seconds; /* a pool VM waiting longer is replaced */
  char *name;                    /* the runner's queue consumer name; NULL: "<host>-<uid>" */
  uint64_t concurrency;          /* jobs at once; 0: what the cores and memory allow */
  uint64_t lease_seconds;        /* every runner on one queue must agree */
  uint64_t max_attempts;         /* a job is dead-lettered rather than start attempt N+1 */
  uint64_t grace_seconds;        /* SIGTERM: how long running jobs may take to finish */
  uint64_t job_seconds; /* a worker is killed past it; 0: config_job_seconds() derives it */
  char *metrics;        /* "127.0.0.1:PORT" for /metrics and /healthz, or NULL */
};

/* `checkout`: how the runner reaches an app's repository */
struct config_checkout
{
  struct netaddr_allow allow_addresses; /* exceptions to the address rules (netaddr.h) */
  char **allow_addresses_text;          /* as written, NULL-terminated, for config_to_json */
};

/* `dockerfile` (issue 17): what a Dockerfile's FROM may name. A reference
 * already in the runner's registry (its domain is registry.url's host, or,
 * with no domain, its path starts with one of local_prefixes) is taken as
 * it is; any other must be a key of from_map, which names the repository
 * (and tag) in the runner's registry that stands for it. */
#define CONFIG_FROM_MAP_MAX 256
#define CONFIG_LOCAL_PREFIXES_MAX 16

struct config_from_map_entry
{
  char *key;        /* as written: "node:18", "docker.io/library/node:18", "node:*" */
  char *name;       /* normalized (dockerfile_ref_parse): "docker.io/library/node:18" */
  bool any_tag;     /* the key ends in `:*`: every tag of that name */
  char *repository; /* in the runner's registry: "base/node" */
  char *tag;        /* "18-build", or NULL: the FROM's own tag */
};

struct config_dockerfile
{
  struct config_from_map_entry *from_map;
  size_t n_from_map;
  char **local_prefixes; /* "base/", "apps/"; NULL-terminated */
  size_t n_local_prefixes;
};

struct runner_config
{
  char *path; /* the file it was loaded from, or NULL for defaults only */
  char *home;
  char *work_dir;
  char *log_dir;
  char *cache_dir;
  char *state_dir;
  char *artifacts;     /* "dir:/abs" or "s3://..." (store_s3.h) as written */
  char *artifacts_dir; /* dir: its directory; NULL for s3 */
  struct config_registry registry;
  struct config_images images;
  struct vm_settings vm; /* `vm` (vm.h); accel AUTO: kvm when /dev/kvm is usable, else tcg */
  struct config_limits limits;
  struct config_defaults defaults;
  struct config_policies policies;
  struct config_secrets secrets;
  struct config_attest attest;
  struct config_serve serve;
  struct jail_settings jail; /* `jail` (jail.h, docs/security.md); lock_dir is malloc'd */
  char *queue;               /* as written, validated */
  enum config_queue_kind queue_kind;
  struct config_webhook webhook;
  struct config_app *apps;
  size_t n_apps;
  struct egress_settings egress; /* `egress` (egress.h): built-in, nothing allowed */
  struct config_checkout checkout;
  struct regtoken_settings token_server; /* `token_server` (regtoken.h): buildvm token-server */
  struct config_dockerfile dockerfile;   /* `dockerfile` (issue 17) */
};

/* Load `path` (NULL = built-in defaults only). Errors name the file and the
 * field: "`/etc/buildvm/runner.json`: field `limits.max_vcpus` ...". */
int config_load (struct runner_config **out, const char *path, bvm_error_t *err);
/* The effective configuration in the schema of runner.json (never secrets). */
json_t *config_to_json (const struct runner_config *c);
void config_free (struct runner_config *c);

DEFINE_CLEANUP_FUNC (config_freep, struct runner_config, config_free)
#define cleanup_config __attribute__ ((cleanup (config_freep)))

/* The wall-clock deadline of one job under `buildvm serve`, in seconds:
 * serve.job_seconds, or when that is 0 the sum of the phase deadlines a job
 * can use: checkout + boot + build + 3600 (inputs, outputs, push). */
uint64_t config_job_seconds (const struct runner_config *c);

/* The default home: $BUILDVM_HOME (absolute), else /var/lib/buildvm as root,
 * else $XDG_STATE_HOME/buildvm (absolute), else $HOME/.local/state/buildvm. */
int config_default_home (char **out, bvm_error_t *err);


/* The image destination: the repository and tag templates expanded with the
 * job's validated fields only (never anything the guest produced). The
 * result is validated again; an app id that does not make a valid
 * repository name (such as one ending in `-`) is a BVM_E_INVALID error. */
int config_expand_destination (char **repo_out, char **tag_out, const struct runner_config *c,
                               const struct job_request *j, bvm_error_t *err);
/* Whether a tag template (registry.tag or one of registry.extra_tags) can
 * name different commits over time (`latest`, `{ref_name}`): every template
 * without `{commit}` or `{short_commit}`. The tag phase moves such a tag
 * only forwards along the ref (docs/queue.md). */
bool config_tag_mutable (const char *tmpl);
/* registry.extra_tags expanded the same way: a NULL-terminated vector. */
int config_expand_extra_tags (char ***out, size_t *n, const struct runner_config *c,
                              const struct job_request *j, bvm_error_t *err);
void config_strv_free (char **v);

/* The registry credentials file (registry.credentials) is read by
 * registry_credentials_load (registry.h). */

#endif
