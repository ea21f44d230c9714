/*
 * api_metrics.h - Prometheus text exposition (format 0.0.4) for
 * stemedb-api, written by hand (no C client library in Debian 12):
 * HTTP request counters and latency histograms per endpoint (lock-free
 * atomics), the engine's sdb_db_stats, the backup status file, and
 * process_* metrics from /proc.  docs/api.md lists every series.
 */
#ifndef API_METRICS_H
#define API_METRICS_H

#include <stddef.h>

#include "api_server.h"

#define API_METRICS_CTYPE "text/plain; version=0.0.4; charset=utf-8"

/* New zeroed registry, or NULL.  Free with api_metrics_free. */
struct api_metrics *api_metrics_new(void);
void api_metrics_free(struct api_metrics *m);

/* Count one finished request and its latency.  Thread-safe, lock-free. */
void api_metrics_observe(struct api_metrics *m, enum api_endpoint ep,
                         int status, double seconds);

/* Count one request refused by the rate limiter. */
void api_metrics_rate_limited(struct api_metrics *m, enum api_endpoint ep);

/*
 * Render every series into a new malloc'd buffer (*out, *len).  Takes
 * srv->db_lock for reading to read the engine's statistics.  0 or -ENOMEM.
 */
int api_metrics_render(struct api_server *srv, char **out, size_t *len);

/*
 * The backup status written by stemedb-backup (path in docs/api.md):
 * {"last_success_unix": N, "last_failure_unix": N, "failures_total": N}.
 * Missing file or fields read as 0.  Returns 0 if the file was read.
 */
struct api_backup_status {
    long long last_success_unix;
    long long last_failure_unix;
    long long failures_total;
};
int api_metrics_backup_status(const char *path, struct api_backup_status *out);

/* The endpoint's label as shown in metrics ("/v1/assert", ...). */
const char *api_endpoint_label(enum api_endpoint ep);

#endif
