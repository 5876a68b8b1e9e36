/* metrics.h - the daemon's Prometheus endpoint
 *
 *   GET /metrics   text exposition format 0.0.4
 *   GET /healthz   200 "ok" while the daemon runs (503 "draining" once it
 *                  stops taking jobs)
 *
 * Series: buildvm_jobs_total{outcome}, buildvm_phase_duration_seconds{phase}
 * (a histogram), buildvm_queue_depth{state}, buildvm_vms_running,
 * buildvm_workers_max, buildvm_up, buildvm_egress_connections_total{decision}
 * buildvm_egress_bytes_total{decision,direction}, and for the pool of VMs
 * booted ahead (serve.c) buildvm_pool_vms{shape,state},
 * buildvm_pool_hits_total, buildvm_pool_misses_total{reason} and
 * buildvm_lease_to_first_step_seconds{vm} (a histogram), and for a job's
 * early VM (pipeline.c) buildvm_early_vms_total{used}. Updates and scrapes are serialised by one
 * mutex; the HTTP server runs in libmicrohttpd's own thread.
 */
#ifndef BUILDVM_METRICS_H
#define BUILDVM_METRICS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

struct metrics;

int metrics_new (struct metrics **out, bvm_error_t *err);
void metrics_free (struct metrics *m);

/* outcome: succeeded | failed | canceled | released | dead | fenced | crashed */
void metrics_job (struct metrics *m, const char *outcome);
void metrics_phase (struct metrics *m, const char *phase, double seconds);
void metrics_set_depth (struct metrics *m, uint64_t queued, uint64_t running);
void metrics_set_vms (struct metrics *m, uint64_t running, uint64_t max);
void metrics_set_draining (struct metrics *m, bool draining);
/* A finished job's egress: the job record's `egress` member (may be NULL);
 * counts its connections by decision (allow | audit | deny | error) and their
 * bytes each way. */
void metrics_egress (struct metrics *m, const json_t *egress);

/* The pool: shape number `idx` (below CONFIG_POOL_SHAPES_MAX, labelled
 * `label`) has this many VMs booting and ready. */
void metrics_set_pool (struct metrics *m, unsigned idx, const char *label, uint64_t booting,
                       uint64_t ready);
void metrics_pool_hit (struct metrics *m);
/* reason: empty (no ready pool VM at the lease) | shape (the one offered did
 * not fit the job) */
void metrics_pool_miss (struct metrics *m, const char *reason);
/* A job booted its early VM; used: its build ran in it (else it did not
 * fit, or did not boot). */
void metrics_early_vm (struct metrics *m, bool used);
/* From the lease to the agent's first build step; pool: in a pool VM. */
void metrics_first_step (struct metrics *m, bool pool, double seconds);

/* The exposition text. */
int metrics_render (struct metrics *m, struct buf *out);

/* Serve /metrics and /healthz on "HOST:PORT" (an IPv4 address). */
int metrics_listen (struct metrics *m, const char *addr, bvm_error_t *err);

#endif
