/* metrics.c - Prometheus text exposition, see metrics.h */
#include "metrics.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const outcomes[] = { "succeeded", "failed", "canceled", "released",
                                        "dead",      "fenced", "crashed" };
static const char *const phases[] = { "role",  "log",    "checkout", "plan", "secrets",   "input",
                                      "build", "ingest", "image",    "push", "artifacts", "tag" };
/* seconds: a VM phase under TCG is about a second; a whole build can be an hour */
static const double buckets[] = { 0.005, 0.025, 0.1, 0.25, 0.5, 1,   2.5,
                                  5,     10,    30,  60,   300, 900, 3600 };

static const char *const egress_decisions[] = { "allow", "audit", "deny", "error" };

static const char *const miss_reasons[] = { "empty", "shape" };
#define N_POOL 8 /* CONFIG_POOL_SHAPES_MAX */
#define N_MISS ARRAY_SIZE (miss_reasons)

#define N_OUT ARRAY_SIZE (outcomes)
#define N_EG ARRAY_SIZE (egress_decisions)
#define N_PH ARRAY_SIZE (phases)
#define N_B ARRAY_SIZE (buckets)

struct metrics
{
  pthread_mutex_t lock;
  uint64_t jobs[N_OUT];
  uint64_t bucket[N_PH][N_B];
  uint64_t count[N_PH];
  double sum[N_PH];
  uint64_t queued, running_jobs, vms, vms_max;
  bool draining;
  uint64_t egress_conns[N_EG], egress_out[N_EG], egress_in[N_EG];
  char pool_label[N_POOL][96];
  uint64_t pool_booting[N_POOL], pool_ready[N_POOL];
  uint64_t pool_hits, pool_misses[N_MISS];
  uint64_t early_vms[2];                   /* [used] */
  uint64_t fs_bucket[2][N_B], fs_count[2]; /* [0] cold, [1] pool */
  double fs_sum[2];
  struct MHD_Daemon *http;
};

int
metrics_new (struct metrics **out, bvm_error_t *err)
{
  struct metrics *m = calloc (1, sizeof *m);
  if (m == NULL)
    return bvm_error (err, ENOMEM, "metrics");
  pthread_mutex_init (&m->lock, NULL);
  *out = m;
  return 0;
}

void
metrics_free (struct metrics *m)
{
  if (m == NULL)
    return;
  if (m->http)
    MHD_stop_daemon (m->http);
  pthread_mutex_destroy (&m->lock);
  free (m);
}

void
metrics_job (struct metrics *m, const char *outcome)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  for (size_t i = 0; i < N_OUT; i++)
    if (strcmp (outcomes[i], outcome) == 0)
      m->jobs[i]++;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_egress (struct metrics *m, const json_t *egress)
{
  const json_t *c;
  size_t i;

  if (m == NULL || egress == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  json_array_foreach (json_object_get (egress, "connections"), i, c)
    {
      const char *d = json_string_value (json_object_get (c, "decision"));
      for (size_t k = 0; d != NULL && k < N_EG; k++)
        if (strcmp (d, egress_decisions[k]) == 0)
          {
            m->egress_conns[k]++;
            m->egress_out[k] += (uint64_t) json_integer_value (json_object_get (c, "bytes_out"));
            m->egress_in[k] += (uint64_t) json_integer_value (json_object_get (c, "bytes_in"));
          }
    }
  pthread_mutex_unlock (&m->lock);
}

void
metrics_phase (struct metrics *m, const char *phase, double seconds)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  for (size_t i = 0; i < N_PH; i++)
    if (strcmp (phases[i], phase) == 0)
      {
        for (size_t b = 0; b < N_B; b++)
          if (seconds <= buckets[b])
            m->bucket[i][b]++;
        m->count[i]++;
        m->sum[i] += seconds;
      }
  pthread_mutex_unlock (&m->lock);
}

void
metrics_set_depth (struct metrics *m, uint64_t queued, uint64_t running)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->queued = queued;
  m->running_jobs = running;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_set_vms (struct metrics *m, uint64_t running, uint64_t max)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->vms = running;
  m->vms_max = max;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_set_pool (struct metrics *m, unsigned idx, const char *label, uint64_t booting,
                  uint64_t ready)
{
  if (m == NULL || idx >= N_POOL)
    return;
  pthread_mutex_lock (&m->lock);
  snprintf (m->pool_label[idx], sizeof m->pool_label[idx], "%s", label);
  m->pool_booting[idx] = booting;
  m->pool_ready[idx] = ready;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_pool_hit (struct metrics *m)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->pool_hits++;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_early_vm (struct metrics *m, bool used)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->early_vms[used ? 1 : 0]++;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_pool_miss (struct metrics *m, const char *reason)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  for (size_t i = 0; i < N_MISS; i++)
    if (strcmp (miss_reasons[i], reason) == 0)
      m->pool_misses[i]++;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_first_step (struct metrics *m, bool pool, double seconds)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  for (size_t b = 0; b < N_B; b++)
    if (seconds <= buckets[b])
      m->fs_bucket[pool][b]++;
  m->fs_count[pool]++;
  m->fs_sum[pool] += seconds;
  pthread_mutex_unlock (&m->lock);
}

void
metrics_set_draining (struct metrics *m, bool draining)
{
  if (m == NULL)
    return;
  pthread_mutex_lock (&m->lock);
  m->draining = draining;
  pthread_mutex_unlock (&m->lock);
}

int
metrics_render (struct metrics *m, struct buf *b)
{
  int r = 0;

  pthread_mutex_lock (&m->lock);
  r |= buf_adds (b, "# HELP buildvm_up Whether the runner daemon is up.\n"
                    "# TYPE buildvm_up gauge\nbuildvm_up 1\n");
  r |= buf_adds (b, "# HELP buildvm_jobs_total Jobs that ended, by outcome.\n"
                    "# TYPE buildvm_jobs_total counter\n");
  for (size_t i = 0; i < N_OUT; i++)
    r |= buf_addf (b, "buildvm_jobs_total{outcome=\"%s\"} %llu\n", outcomes[i],
                   (unsigned long long) m->jobs[i]);
  r |= buf_adds (b, "# HELP buildvm_phase_duration_seconds How long each job phase took.\n"
                    "# TYPE buildvm_phase_duration_seconds histogram\n");
  for (size_t i = 0; i < N_PH; i++)
    {
      for (size_t k = 0; k < N_B; k++)
        r |= buf_addf (b, "buildvm_phase_duration_seconds_bucket{phase=\"%s\",le=\"%g\"} %llu\n",
                       phases[i], buckets[k], (unsigned long long) m->bucket[i][k]);
      r |= buf_addf (b, "buildvm_phase_duration_seconds_bucket{phase=\"%s\",le=\"+Inf\"} %llu\n",
                     phases[i], (unsigned long long) m->count[i]);
      r |= buf_addf (b, "buildvm_phase_duration_seconds_sum{phase=\"%s\"} %.6f\n", phases[i],
                     m->sum[i]);
      r |= buf_addf (b, "buildvm_phase_duration_seconds_count{phase=\"%s\"} %llu\n", phases[i],
                     (unsigned long long) m->count[i]);
    }
  r |= buf_addf (b,
                 "# HELP buildvm_queue_depth Jobs on the queue, by state.\n"
                 "# TYPE buildvm_queue_depth gauge\n"
                 "buildvm_queue_depth{state=\"queued\"} %llu\n"
                 "buildvm_queue_depth{state=\"running\"} %llu\n",
                 (unsigned long long) m->queued, (unsigned long long) m->running_jobs);
  r |= buf_addf (b,
                 "# HELP buildvm_vms_running Build VMs this runner has running.\n"
                 "# TYPE buildvm_vms_running gauge\nbuildvm_vms_running %llu\n"
                 "# HELP buildvm_workers_max Jobs this runner runs at once.\n"
                 "# TYPE buildvm_workers_max gauge\nbuildvm_workers_max %llu\n",
                 (unsigned long long) m->vms, (unsigned long long) m->vms_max);
  r |= buf_adds (b, "# HELP buildvm_pool_vms VMs of the pool, booted ahead of their jobs, by "
                    "shape and state.\n# TYPE buildvm_pool_vms gauge\n");
  for (size_t i = 0; i < N_POOL; i++)
    if (m->pool_label[i][0])
      r |= buf_addf (b,
                     "buildvm_pool_vms{shape=\"%s\",state=\"booting\"} %llu\n"
                     "buildvm_pool_vms{shape=\"%s\",state=\"ready\"} %llu\n",
                     m->pool_label[i], (unsigned long long) m->pool_booting[i], m->pool_label[i],
                     (unsigned long long) m->pool_ready[i]);
  r |= buf_addf (b,
                 "# HELP buildvm_pool_hits_total Jobs that ran in a pool VM.\n"
                 "# TYPE buildvm_pool_hits_total counter\nbuildvm_pool_hits_total %llu\n"
                 "# HELP buildvm_pool_misses_total Jobs that booted cold although a pool is "
                 "configured, by reason.\n# TYPE buildvm_pool_misses_total counter\n",
                 (unsigned long long) m->pool_hits);
  for (size_t i = 0; i < N_MISS; i++)
    r |= buf_addf (b, "buildvm_pool_misses_total{reason=\"%s\"} %llu\n", miss_reasons[i],
                   (unsigned long long) m->pool_misses[i]);
  r |= buf_addf (b,
                 "# HELP buildvm_early_vms_total Jobs that booted an early VM during their "
                 "checkout, by whether their build ran in it.\n"
                 "# TYPE buildvm_early_vms_total counter\n"
                 "buildvm_early_vms_total{used=\"true\"} %llu\n"
                 "buildvm_early_vms_total{used=\"false\"} %llu\n",
                 (unsigned long long) m->early_vms[1], (unsigned long long) m->early_vms[0]);
  r |= buf_adds (b, "# HELP buildvm_lease_to_first_step_seconds From the lease to the guest "
                    "agent's first build step.\n"
                    "# TYPE buildvm_lease_to_first_step_seconds histogram\n");
  for (int p = 0; p < 2; p++)
    {
      const char *vm = p ? "pool" : "cold";
      for (size_t k = 0; k < N_B; k++)
        r |= buf_addf (b, "buildvm_lease_to_first_step_seconds_bucket{vm=\"%s\",le=\"%g\"} %llu\n",
                       vm, buckets[k], (unsigned long long) m->fs_bucket[p][k]);
      r |= buf_addf (b,
                     "buildvm_lease_to_first_step_seconds_bucket{vm=\"%s\",le=\"+Inf\"} %llu\n"
                     "buildvm_lease_to_first_step_seconds_sum{vm=\"%s\"} %.6f\n"
                     "buildvm_lease_to_first_step_seconds_count{vm=\"%s\"} %llu\n",
                     vm, (unsigned long long) m->fs_count[p], vm, m->fs_sum[p], vm,
                     (unsigned long long) m->fs_count[p]);
    }
  r |= buf_adds (b, "# HELP buildvm_egress_connections_total Build egress connections, by "
                    "decision.\n# TYPE buildvm_egress_connections_total counter\n");
  for (size_t i = 0; i < N_EG; i++)
    r |= buf_addf (b, "buildvm_egress_connections_total{decision=\"%s\"} %llu\n",
                   egress_decisions[i], (unsigned long long) m->egress_conns[i]);
  r |= buf_adds (b, "# HELP buildvm_egress_bytes_total Bytes through build egress "
                    "connections, by decision and direction.\n"
                    "# TYPE buildvm_egress_bytes_total counter\n");
  for (size_t i = 0; i < N_EG; i++)
    r |= buf_addf (b,
                   "buildvm_egress_bytes_total{decision=\"%s\",direction=\"out\"} %llu\n"
                   "buildvm_egress_bytes_total{decision=\"%s\",direction=\"in\"} %llu\n",
                   egress_decisions[i], (unsigned long long) m->egress_out[i], egress_decisions[i],
                   (unsigned long long) m->egress_in[i]);
  pthread_mutex_unlock (&m->lock);
  return r < 0 ? -1 : 0;
}

static enum MHD_Result
answer (void *cls, struct MHD_Connection *c, const char *url, const char *method,
        const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
  struct metrics *m = cls;
  struct MHD_Response *resp;
  struct buf b = BUF_INIT (1 << 20);
  unsigned status = MHD_HTTP_OK;
  const char *ctype = "text/plain; charset=utf-8";
  enum MHD_Result ret;
  bool draining;

  (void) version;
  (void) upload_data;
  (void) con_cls;
  if (*upload_size != 0)
    {
      *upload_size = 0;
      return MHD_YES;
    }
  if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
    {
      status = MHD_HTTP_METHOD_NOT_ALLOWED;
      buf_adds (&b, "method not allowed\n");
    }
  else if (strcmp (url, "/metrics") == 0)
    {
      ctype = "text/plain; version=0.0.4; charset=utf-8";
      if (metrics_render (m, &b) < 0)
        {
          status = MHD_HTTP_INTERNAL_SERVER_ERROR;
          buf_reset (&b);
        }
    }
  else if (strcmp (url, "/healthz") == 0)
    {
      pthread_mutex_lock (&m->lock);
      draining = m->draining;
      pthread_mutex_unlock (&m->lock);
      status = draining ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
      buf_adds (&b, draining ? "draining\n" : "ok\n");
    }
  else
    {
      status = MHD_HTTP_NOT_FOUND;
      buf_adds (&b, "not found\n");
    }
  resp = MHD_create_response_from_buffer (b.len, b.ptr ? b.ptr : (char *) "",
                                          MHD_RESPMEM_MUST_COPY);
  buf_dispose (&b);
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header (resp, "Content-Type", ctype);
  ret = MHD_queue_response (c, status, resp);
  MHD_destroy_response (resp);
  return ret;
}

int
metrics_listen (struct metrics *m, const char *addr, bvm_error_t *err)
{
  struct sockaddr_in sa;
  char host[64];
  const char *colon = strrchr (addr, ':');
  uint32_t port;

  if (colon == NULL || (size_t) (colon - addr) >= sizeof host)
    return bvm_error_code (err, BVM_E_INVALID, 0, "metrics address `%s` is not HOST:PORT", addr);
  memcpy (host, addr, (size_t) (colon - addr));
  host[colon - addr] = '\0';
  memset (&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  if (inet_pton (AF_INET, host, &sa.sin_addr) != 1 || parse_u32 (colon + 1, &port) < 0 || port == 0
      || port > 65535)
    return bvm_error_code (err, BVM_E_INVALID, 0, "metrics address `%s` is not IPv4-ADDRESS:PORT",
                           addr);
  sa.sin_port = htons ((uint16_t) port);
  m->http = MHD_start_daemon (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                              answer, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned) 16,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 10, MHD_OPTION_END);
  if (m->http == NULL)
    return bvm_error (err, errno ? errno : EADDRINUSE, "listen on `%s` for metrics", addr);
  return 0;
}
