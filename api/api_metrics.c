/*
 * api_metrics.c - the /metrics exposition (Prometheus text format 0.0.4).
 * Request counters and latency histograms are C11 atomics updated by the
 * HTTP threads; everything else is read at scrape time: sdb_db_stats, the
 * backup status file (api_metrics.h) and /proc/self for process_*.
 * Must not block on the engine's writer: sdb_db_stats only copies counters.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api_metrics.h"

/* Statuses counted separately; anything else is counted as "other". */
static const int tracked_status[] = {200, 201, 204, 400, 401, 403, 404, 405,
                                     408, 411, 413, 414, 415, 429, 500, 503};
#define NSTATUS (sizeof(tracked_status) / sizeof(tracked_status[0]) + 1)

/* Latency bucket upper bounds in seconds (+Inf is implicit). */
static const double lat_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,  0.1,    0.25,  0.5,
                                    1,      2.5,   5,      10};
#define NLAT (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

struct ep_metrics {
    atomic_ullong by_status[NSTATUS];
    atomic_ullong lat_bucket[NLAT + 1]; /* non-cumulative; last is +Inf */
    atomic_ullong lat_count;
    atomic_ullong lat_sum_us;
    atomic_ullong rate_limited;
};

struct api_metrics {
    struct ep_metrics ep[API_EP_COUNT];
};

static const char *ep_labels[] = {
#define API_EP_LABEL(name, label) label,
    API_ENDPOINT_MAP(API_EP_LABEL)
#undef API_EP_LABEL
};

const char *api_endpoint_label(enum api_endpoint ep)
{
    return ep < API_EP_COUNT ? ep_labels[ep] : "other";
}

struct api_metrics *api_metrics_new(void)
{
    struct api_metrics *m = malloc(sizeof(*m));
    if (!m)
        return NULL;
    for (size_t e = 0; e < API_EP_COUNT; e++) {
        struct ep_metrics *em = &m->ep[e];
        for (size_t i = 0; i < NSTATUS; i++)
            atomic_init(&em->by_status[i], 0);
        for (size_t i = 0; i <= NLAT; i++)
            atomic_init(&em->lat_bucket[i], 0);
        atomic_init(&em->lat_count, 0);
        atomic_init(&em->lat_sum_us, 0);
        atomic_init(&em->rate_limited, 0);
    }
    return m;
}

void api_metrics_free(struct api_metrics *m)
{
    free(m);
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < NSTATUS - 1; i++)
        if (tracked_status[i] == status)
            return i;
    return NSTATUS - 1;
}

void api_metrics_observe(struct api_metrics *m, enum api_endpoint ep,
                         int status, double seconds)
{
    struct ep_metrics *em;
    size_t b = 0;

    if (!m || ep >= API_EP_COUNT)
        return;
    em = &m->ep[ep];
    atomic_fetch_add(&em->by_status[status_index(status)], 1);
    while (b < NLAT && seconds > lat_bounds[b])
        b++;
    atomic_fetch_add(&em->lat_bucket[b], 1);
    atomic_fetch_add(&em->lat_count, 1);
    if (seconds > 0)
        atomic_fetch_add(&em->lat_sum_us,
                         (unsigned long long)(seconds * 1e6 + 0.5));
}

void api_metrics_rate_limited(struct api_metrics *m, enum api_endpoint ep)
{
    if (m && ep < API_EP_COUNT)
        atomic_fetch_add(&m->ep[ep].rate_limited, 1);
}

/* ---- a growable text buffer with a sticky out-of-memory error ---- */

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;

    if (b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        int n;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 8192;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void header(struct sbuf *b, const char *name, const char *type,
                   const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge_u(struct sbuf *b, const char *name, const char *help,
                    unsigned long long v)
{
    header(b, name, "gauge", help);
    sb_printf(b, "%s %llu\n", name, v);
}

static void counter_u(struct sbuf *b, const char *name, const char *help,
                      unsigned long long v)
{
    header(b, name, "counter", help);
    sb_printf(b, "%s %llu\n", name, v);
}

static void gauge_d(struct sbuf *b, const char *name, const char *help,
                    double v)
{
    header(b, name, "gauge", help);
    sb_printf(b, "%s %.6f\n", name, v);
}

/* ---- engine statistics ---- */

static void render_fsync(struct sbuf *b, const sdb_stats *st)
{
    size_t n = 0;
    const double *bounds = sdb_fsync_bucket_bounds(&n);
    size_t nb = sizeof(st->fsync_buckets) / sizeof(st->fsync_buckets[0]);

    if (n > nb)
        n = nb;
    header(b, "wal_fsync_latency_seconds", "histogram",
           "Latency of WAL fdatasync calls (one per group commit).");
    for (size_t i = 0; i < n; i++) {
        if (i + 1 == n)
            break; /* the last bound is +Inf, written below */
        sb_printf(b, "wal_fsync_latency_seconds_bucket{le=\"%g\"} %llu\n",
                  bounds[i], (unsigned long long)st->fsync_buckets[i]);
    }
    sb_printf(b, "wal_fsync_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)st->fsync_count);
    sb_printf(b, "wal_fsync_latency_seconds_sum %.9f\n", st->fsync_seconds_sum);
    sb_printf(b, "wal_fsync_latency_seconds_count %llu\n",
              (unsigned long long)st->fsync_count);
}

static void render_engine(struct sbuf *b, const sdb_stats *st)
{
    gauge_u(b, "stemedb_read_only",
            "1 while the store refuses writes after an I/O failure.",
            st->read_only ? 1 : 0);
    gauge_u(b, "stemedb_read_only_errno",
            "errno of the failure that made the store read-only (0: none).",
            (unsigned long long)(st->read_only ? st->read_only_errno : 0));
    counter_u(b, "stemedb_assertions_total",
              "Durable assertions, retracted ones included.",
              st->assertion_count);
    gauge_u(b, "stemedb_assertions_retracted",
            "Durable assertions currently retracted.", st->retracted_count);
    counter_u(b, "stemedb_retractions_total", "Durable retraction records.",
              st->retraction_count);
    gauge_u(b, "stemedb_concepts", "Concept paths holding assertions.",
            st->concept_count);
    gauge_u(b, "stemedb_last_lsn", "Highest durable log sequence number.",
            st->last_lsn);
    gauge_u(b, "stemedb_checkpoint_lsn", "LSN of the last checkpoint.",
            st->checkpoint_lsn);
    gauge_u(b, "stemedb_wal_segments", "WAL segment files in the WAL dir.",
            st->wal_segments);
    /* the runbooks' name; untyped because a gauge must not end in _total */
    header(b, "wal_segments_total", "untyped",
           "WAL segment files in the WAL dir (same as stemedb_wal_segments).");
    sb_printf(b, "wal_segments_total %llu\n",
              (unsigned long long)st->wal_segments);
    counter_u(b, "stemedb_wal_written_bytes_total",
              "Bytes appended to the WAL.", st->wal_bytes_written);
    counter_u(b, "stemedb_wal_segments_archived_total",
              "WAL segments copied to the archive directory.",
              st->wal_segments_archived);
    counter_u(b, "stemedb_restarts_total",
              "Times this data directory has been opened.", st->restarts);
    gauge_u(b, "stemedb_wal_replayed_entries",
            "WAL records replayed by recovery at the last open.",
            st->replayed_on_open);
    render_fsync(b, st);
    counter_u(b, "stemedb_group_commits_total",
              "WAL batches written (one fdatasync each).", st->group_commits);
    counter_u(b, "stemedb_group_commit_records_total",
              "Records written in WAL batches.", st->group_commit_records);
    gauge_u(b, "stemedb_group_commit_max_records",
            "Largest WAL batch so far, in records.", st->group_commit_max);
    counter_u(b, "stemedb_checkpoints_total", "Checkpoints completed.",
              st->checkpoints);
    gauge_u(b, "stemedb_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint (0: none).",
            (unsigned long long)(st->last_checkpoint_unix > 0
                                     ? st->last_checkpoint_unix
                                     : 0));
}

/* ---- backup status ---- */

static long long field_ll(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return 0;
}

int api_metrics_backup_status(const char *path, struct api_backup_status *out)
{
    json_error_t jerr;
    json_t *root;

    memset(out, 0, sizeof(*out));
    if (!path)
        return -ENOENT;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return -ENOENT;
    out->last_success_unix = field_ll(root, "last_success_unix");
    out->last_failure_unix = field_ll(root, "last_failure_unix");
    out->failures_total = field_ll(root, "failures_total");
    json_decref(root);
    return 0;
}

static void render_backup(struct sbuf *b, const char *path)
{
    struct api_backup_status bs;
    time_t now = time(NULL);

    api_metrics_backup_status(path, &bs);
    gauge_u(b, "stemedb_last_backup_timestamp_seconds",
            "Unix time of the last successful backup (0: none recorded).",
            (unsigned long long)(bs.last_success_unix > 0 ? bs.last_success_unix
                                                          : 0));
    if (bs.last_success_unix > 0)
        gauge_d(b, "stemedb_backup_age_seconds",
                "Seconds since the last successful backup.",
                (double)(now - (time_t)bs.last_success_unix));
    counter_u(
        b, "stemedb_backup_failures_total",
        "Failed backup runs recorded by stemedb-backup.",
        (unsigned long long)(bs.failures_total > 0 ? bs.failures_total : 0));
}

/* ---- HTTP ---- */

static void render_http_counts(struct sbuf *b, struct api_metrics *m)
{
    header(b, "stemedb_http_requests_total", "counter",
           "HTTP requests answered, by endpoint and status code.");
    for (size_t e = 0; e < API_EP_COUNT; e++) {
        for (size_t i = 0; i < NSTATUS; i++) {
            unsigned long long v = atomic_load(&m->ep[e].by_status[i]);
            if (v == 0)
                continue;
            if (i == NSTATUS - 1)
                sb_printf(b,
                          "stemedb_http_requests_total{endpoint=\"%s\","
                          "code=\"other\"} %llu\n",
                          ep_labels[e], v);
            else
                sb_printf(b,
                          "stemedb_http_requests_total{endpoint=\"%s\","
                          "code=\"%d\"} %llu\n",
                          ep_labels[e], tracked_status[i], v);
        }
    }
    header(b, "stemedb_http_rate_limited_total", "counter",
           "Requests refused with 429 by the per-client rate limiter.");
    for (size_t e = 0; e < API_EP_COUNT; e++)
        sb_printf(b, "stemedb_http_rate_limited_total{endpoint=\"%s\"} %llu\n",
                  ep_labels[e], atomic_load(&m->ep[e].rate_limited));
}

static void render_http_latency(struct sbuf *b, struct api_metrics *m)
{
    const char *n = "stemedb_http_request_duration_seconds";

    header(b, n, "histogram",
           "Time from request line to response completion, by endpoint.");
    for (size_t e = 0; e < API_EP_COUNT; e++) {
        struct ep_metrics *em = &m->ep[e];
        unsigned long long cum = 0;
        for (size_t i = 0; i < NLAT; i++) {
            cum += atomic_load(&em->lat_bucket[i]);
            sb_printf(b, "%s_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n", n,
                      ep_labels[e], lat_bounds[i], cum);
        }
        cum += atomic_load(&em->lat_bucket[NLAT]);
        sb_printf(b, "%s_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n", n,
                  ep_labels[e], cum);
        sb_printf(b, "%s_sum{endpoint=\"%s\"} %.6f\n", n, ep_labels[e],
                  (double)atomic_load(&em->lat_sum_us) / 1e6);
        sb_printf(b, "%s_count{endpoint=\"%s\"} %llu\n", n, ep_labels[e], cum);
    }
}

/* ---- process_* from /proc ---- */

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    long n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the descriptor opendir itself holds */
}

static long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    long long bt = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %lld", &bt) == 1)
            break;
    fclose(f);
    return bt;
}

static void render_process(struct sbuf *b)
{
    unsigned long utime = 0, stime = 0, vsize = 0;
    unsigned long long start = 0;
    long rss = 0;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t got = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    const char *p;
    long fds = count_fds();

    if (f)
        fclose(f);
    buf[got] = '\0';
    p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p || tck <= 0 ||
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
               "%*d %*d %*d %*d %llu %lu %ld",
               &utime, &stime, &start, &vsize, &rss) != 5)
        return;
    header(b, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    sb_printf(b, "process_cpu_seconds_total %.2f\n",
              (double)(utime + stime) / (double)tck);
    if (fds >= 0)
        gauge_u(b, "process_open_fds", "Number of open file descriptors.",
                (unsigned long long)fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge_u(b, "process_max_fds",
                "Maximum number of open file descriptors.",
                (unsigned long long)rl.rlim_cur);
    gauge_u(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
            vsize);
    gauge_u(b, "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (unsigned long long)(rss > 0 ? rss : 0) *
                (unsigned long long)(page > 0 ? page : 4096));
    gauge_d(b, "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            (double)boot_time() + (double)start / (double)tck);
}

int api_metrics_render(struct api_server *srv, char **out, size_t *len)
{
    struct sbuf b = {0};
    sdb_stats st;
    bool have_stats = false;

    *out = NULL;
    *len = 0;
    sb_printf(&b,
              "# HELP stemedb_build_info Version of stemedb-api.\n"
              "# TYPE stemedb_build_info gauge\n"
              "stemedb_build_info{version=\"%s\"} 1\n",
              SDB_VERSION);
    gauge_d(&b, "stemedb_uptime_seconds", "Seconds since stemedb-api started.",
            api_server_uptime(srv));
    if (!atomic_load(&srv->closing)) {
        pthread_rwlock_rdlock(&srv->db_lock);
        if (srv->db && !atomic_load(&srv->closing)) {
            sdb_db_stats(srv->db, &st);
            have_stats = true;
        }
        pthread_rwlock_unlock(&srv->db_lock);
    }
    gauge_u(&b, "stemedb_shutting_down", "1 while the server is stopping.",
            atomic_load(&srv->closing) ? 1 : 0);
    if (have_stats)
        render_engine(&b, &st);
    render_backup(&b, srv->backup_status_path);
    render_http_counts(&b, srv->metrics);
    render_http_latency(&b, srv->metrics);
    gauge_u(&b, "stemedb_http_parked_writes",
            "Write requests waiting for their group commit.",
            (unsigned long long)atomic_load(&srv->parked));
    gauge_u(&b, "stemedb_http_open_requests",
            "Requests received and not yet completed.",
            (unsigned long long)atomic_load(&srv->live_requests));
    render_process(&b);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
