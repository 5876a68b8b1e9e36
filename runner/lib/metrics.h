/* metrics.h - the daemon's Prometheus endpoint
 *
 *   GET /metrics   text exposition format 0.0.4
 *   GET /healthz   200 "ok" while the daemon runs (503 "draining" once it
 *                  stops taking jobs)
 *
 * Series: buildvm_jobs_total{outcome}, buildvm_phase_duration_seconds{phase}
 * (a histogram), buildvm_queue_depth{state}, buildvm_vms_running,
 * buildvm_workers_max, buildvm_up, buildvm_egress_connections_total{decision}
 * and buildvm_egress_bytes_total{decision,direction}. Updates and scrapes are serialised by one
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

/* The exposition text. */
int metrics_render (struct metrics *m, struct buf *out);

/* Serve /metrics and /healthz on "HOST:PORT" (an IPv4 address). */
int metrics_listen (struct metrics *m, const char *addr, bvm_error_t *err);

#endif
