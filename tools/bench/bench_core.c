/*
 * bench_core.c - the core benchmark (docs/benchmarks.md): StemeDB durable
 * appends with 1/16/64/256 concurrent appenders, SQLite 3 (WAL,
 * synchronous=FULL) on the same rows and disk, WAL replay and index rebuild
 * speed, and resident memory per indexed assertion.  Not a test: it prints
 * a table and exits 0 unless something fails.
 *
 * Every store lives in a fresh directory below --dir (default: the current
 * directory, which should be on the disk under test, not tmpfs) and is
 * removed at the end unless --keep.  Recovery figures come from forked
 * children: one writes N records and _exit()s without closing (so they stay
 * in the WAL), the next opens and times the replay, and so on; each child
 * starts with a clean heap, so its RSS figures are its own.
 */
#define _GNU_SOURCE /* sync(), statfs() */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "stemedb/stemedb.h"

#define MAX_THREADS     1024
#define MAX_REPEAT      9
#define TMPFS_MAGIC_NUM 0x01021994L

struct config {
    const char *dir;
    double seconds;           /* per throughput configuration */
    double warmup;            /* not measured, before each run */
    unsigned concepts;        /* distinct concept paths written to */
    unsigned batch;           /* assertions per StemeDB request */
    unsigned drivers;         /* event-loop threads; 0 = one per appender */
    uint64_t recovery_n;      /* records for replay/rebuild/RSS */
    uint64_t big_n;           /* second RSS point (0 = skip) */
    unsigned big_timeout_s;   /* bound for the big run */
    unsigned repeat;          /* rounds of the throughput runs */
    unsigned recovery_repeat; /* rounds of the recovery runs */
    bool keep;
    bool skip_sqlite;
    bool skip_appends;
    bool skip_recovery;
    unsigned thread_counts[8];
    unsigned n_thread_counts;
};

static struct config cfg = {
    .dir = ".",
    .seconds = 5.0,
    .warmup = 1.0,
    .repeat = 3,
    .recovery_repeat = 3,
    .concepts = 64,
    .batch = 1,
    .drivers = 2,
    .recovery_n = 1000000,
    .big_n = 0,
    .big_timeout_s = 900,
    .thread_counts = {1, 16, 64, 256},
    .n_thread_counts = 4,
};

static char base_dir[4096];

/* ---- small helpers ---- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Let writeback from the previous run finish so runs do not interfere. */
static void settle(void)
{
    sync();
    sleep_ms(1000);
}

/* Sleep until t0 + s (monotonic seconds). */
static void sleep_until(double t)
{
    while (now_s() < t)
        sleep_ms(5);
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_core: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

/* VmRSS of this process in bytes (0 if unreadable). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024u;
}

static void rm_rf(const char *path)
{
    char cmd[8400];

    if (cfg.keep || !path[0])
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_core: could not remove %s\n", path);
}

static void sub_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base_dir, name);
}

/* ---- StemeDB helpers ---- */

struct logtimes {
    double recovery_start, replayed, rebuild_start, rebuild_done;
};

static void bench_log(void *arg, sdb_log_level level, const char *msg)
{
    struct logtimes *lt = arg;
    double t = now_s();

    if (lt) {
        if (strstr(msg, "Starting WAL recovery"))
            lt->recovery_start = t;
        else if (strncmp(msg, "Replayed ", 9) == 0)
            lt->replayed = t;
        else if (strcmp(msg, "Rebuilding indexes...") == 0)
            lt->rebuild_start = t;
        else if (strncmp(msg, "Index rebuild complete", 22) == 0)
            lt->rebuild_done = t;
    }
    if (level <= SDB_LOG_WARN)
        fprintf(stderr, "stemedb: %s\n", msg);
}

static sdb_db *open_store(const char *dir, bool quiet_ckpt, struct logtimes *lt)
{
    sdb_options o;
    sdb_error e;
    sdb_db *db = NULL;

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = bench_log;
    o.log_arg = lt;
    if (quiet_ckpt) {
        /* keep everything in the WAL: no periodic checkpoint */
        o.checkpoint_interval_ms = UINT_MAX;
        o.checkpoint_wal_bytes = UINT64_MAX;
        o.wal_segment_timeout_ms = UINT_MAX;
    }
    if (sdb_db_open(&o, &db, &e) != 0)
        die("sdb_db_open", e.message);
    return db;
}

/* One request: n assertions to concept c, values starting at v. */
static json_t *make_request(unsigned c, unsigned n, json_int_t v)
{
    char path[64];
    json_t *list, *req;

    snprintf(path, sizeof(path), "bench/c%04u", c);
    if (n == 1)
        return json_pack("{s:s, s:s, s:I, s:f, s:s}", "concept_path", path,
                         "predicate", "population", "value", v, "confidence",
                         0.75, "authority_tier", "verified");
    list = json_array();
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:I, s:f, s:s}", "concept_path", path,
                      "predicate", "population", "value", v + (json_int_t)i,
                      "confidence", 0.75, "authority_tier", "verified"));
    req = json_pack("{s:o}", "assertions", list);
    return req;
}

/* ---- StemeDB appenders ---- */

struct appender {
    sdb_db *db;
    unsigned id;
    unsigned batch;
    const atomic_bool *stop;
    _Atomic uint64_t acked; /* assertions acknowledged */
    uint64_t failed;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
    pthread_t th;
};

/* Completion callbacks take the result as text, as stemedb-api does. */
static void appender_done(void *arg, int rc, const char *text, size_t len,
                          const sdb_error *err)
{
    struct appender *ap = arg;

    (void)text;
    (void)len;
    (void)err;
    pthread_mutex_lock(&ap->lock);
    ap->rc = rc;
    ap->done = true;
    pthread_cond_signal(&ap->cond);
    pthread_mutex_unlock(&ap->lock);
}

static void *appender_main(void *arg)
{
    struct appender *ap = arg;
    json_t *req = make_request(ap->id % cfg.concepts, ap->batch, 0);
    json_int_t v = 0;
    sdb_error e;

    while (!atomic_load(ap->stop)) {
        json_t *val =
            ap->batch == 1
                ? json_object_get(req, "value")
                : json_object_get(
                      json_array_get(json_object_get(req, "assertions"), 0),
                      "value");
        json_integer_set(val, v++);
        ap->done = false;
        if (sdb_assert_text(ap->db, req, appender_done, ap, &e) != 0) {
            ap->failed++;
            fprintf(stderr, "sdb_assert: %s\n", e.message);
            break;
        }
        pthread_mutex_lock(&ap->lock);
        while (!ap->done)
            pthread_cond_wait(&ap->cond, &ap->lock);
        pthread_mutex_unlock(&ap->lock);
        if (ap->rc == 0)
            atomic_fetch_add(&ap->acked, ap->batch);
        else
            ap->failed++;
    }
    json_decref(req);
    return NULL;
}

/*
 * Event-loop appenders (the default): cfg.drivers threads each keep
 * their share of the appenders' requests in flight, like the HTTP server's
 * event-loop threads.  A completion only queues the appender on its
 * driver (one wake-up per driver per group, not one per request); the
 * driver then resubmits every appender that finished.
 */
struct driver {
    sdb_db *db;
    unsigned first, n; /* appenders first .. first+n-1 */
    const atomic_bool *stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned *ready; /* appenders whose request completed */
    int *ready_rc;
    unsigned n_ready;
    bool waiting;
    json_t **req;
    json_int_t *v;
    _Atomic uint64_t acked;
    uint64_t failed;
    pthread_t th;
};

struct lapp {
    struct driver *d;
    unsigned idx; /* 0 .. d->n-1 */
};

static void lapp_done(void *arg, int rc, const char *text, size_t len,
                      const sdb_error *err)
{
    struct lapp *la = arg;
    struct driver *d = la->d;

    (void)text;
    (void)len;
    (void)err;
    pthread_mutex_lock(&d->lock);
    d->ready_rc[d->n_ready] = rc;
    d->ready[d->n_ready++] = la->idx;
    if (d->waiting)
        pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

static bool lapp_submit(struct driver *d, struct lapp *la)
{
    json_t *req = d->req[la->idx];
    json_t *val =
        cfg.batch == 1
            ? json_object_get(req, "value")
            : json_object_get(
                  json_array_get(json_object_get(req, "assertions"), 0),
                  "value");
    sdb_error e;

    json_integer_set(val, d->v[la->idx]++);
    if (sdb_assert_text(d->db, req, lapp_done, la, &e) != 0) {
        fprintf(stderr, "sdb_assert: %s\n", e.message);
        return false;
    }
    return true;
}

static void *driver_main(void *arg)
{
    struct driver *d = arg;
    struct lapp *apps = calloc(d->n, sizeof(*apps));
    unsigned *mine = malloc(d->n * sizeof(*mine));
    int *rcs = malloc(d->n * sizeof(*rcs));
    unsigned in_flight = 0;

    if (!apps || !mine || !rcs)
        die("driver", "out of memory");
    for (unsigned i = 0; i < d->n; i++) {
        apps[i].d = d;
        apps[i].idx = i;
        d->req[i] = make_request((d->first + i) % cfg.concepts, cfg.batch, 0);
    }
    for (unsigned i = 0; i < d->n; i++) {
        if (!lapp_submit(d, &apps[i])) {
            d->failed++;
            break;
        }
        in_flight++;
    }
    while (in_flight) {
        unsigned n;

        pthread_mutex_lock(&d->lock);
        while (d->n_ready == 0) {
            d->waiting = true;
            pthread_cond_wait(&d->cond, &d->lock);
            d->waiting = false;
        }
        n = d->n_ready;
        memcpy(mine, d->ready, n * sizeof(*mine));
        memcpy(rcs, d->ready_rc, n * sizeof(*rcs));
        d->n_ready = 0;
        pthread_mutex_unlock(&d->lock);
        for (unsigned k = 0; k < n; k++) {
            in_flight--;
            if (rcs[k] != 0) {
                d->failed++;
                continue;
            }
            atomic_fetch_add(&d->acked, cfg.batch);
            if (atomic_load(d->stop) || d->failed)
                continue;
            if (!lapp_submit(d, &apps[mine[k]]))
                d->failed++;
            else
                in_flight++;
        }
    }
    for (unsigned i = 0; i < d->n; i++)
        json_decref(d->req[i]);
    free(apps);
    free(mine);
    free(rcs);
    return NULL;
}

static uint64_t drivers_acked(struct driver *ds, unsigned n)
{
    uint64_t a = 0;

    for (unsigned i = 0; i < n; i++)
        a += atomic_load(&ds[i].acked);
    return a;
}

struct append_result {
    unsigned threads;
    double seconds;
    uint64_t acked;
    double per_s;
    double avg_group;
    double avg_fsync_ms;
    uint64_t fsyncs;
};

static struct append_result run_appenders(unsigned threads, unsigned batch)
{
    static struct appender aps[MAX_THREADS];
    struct append_result r = {.threads = threads};
    char dir[4200], name[64];
    atomic_bool stop = false;
    sdb_stats s0, s1;
    sdb_db *db;
    double t0, t1;
    uint64_t a0 = 0;

    snprintf(name, sizeof(name), "sdb-append-%u", threads);
    sub_dir(dir, sizeof(dir), name);
    db = open_store(dir, false, NULL);
    if (cfg.drivers) {
        unsigned nd = cfg.drivers < threads ? cfg.drivers : threads;
        struct driver *ds = calloc(nd, sizeof(*ds));
        uint64_t failed = 0;

        if (!ds)
            die("drivers", "out of memory");
        for (unsigned i = 0, first = 0; i < nd; i++) {
            struct driver *d = &ds[i];

            d->db = db;
            d->first = first;
            d->n = threads / nd + (i < threads % nd);
            first += d->n;
            d->stop = &stop;
            pthread_mutex_init(&d->lock, NULL);
            pthread_cond_init(&d->cond, NULL);
            d->ready = malloc(d->n * sizeof(*d->ready));
            d->ready_rc = malloc(d->n * sizeof(*d->ready_rc));
            d->req = calloc(d->n, sizeof(*d->req));
            d->v = calloc(d->n, sizeof(*d->v));
            if (!d->ready || !d->ready_rc || !d->req || !d->v)
                die("drivers", "out of memory");
        }
        settle();
        t0 = now_s();
        for (unsigned i = 0; i < nd; i++)
            if (pthread_create(&ds[i].th, NULL, driver_main, &ds[i]) != 0)
                die("pthread_create", strerror(errno));
        sleep_until(t0 + cfg.warmup);
        t0 = now_s();
        sdb_db_stats(db, &s0);
        a0 = drivers_acked(ds, nd);
        sleep_until(t0 + cfg.seconds);
        t1 = now_s();
        sdb_db_stats(db, &s1);
        r.acked = drivers_acked(ds, nd) - a0;
        atomic_store(&stop, true);
        for (unsigned i = 0; i < nd; i++) {
            pthread_join(ds[i].th, NULL);
            failed += ds[i].failed;
            pthread_mutex_destroy(&ds[i].lock);
            pthread_cond_destroy(&ds[i].cond);
            free(ds[i].ready);
            free(ds[i].ready_rc);
            free(ds[i].req);
            free(ds[i].v);
        }
        free(ds);
        if (failed)
            die("append", "a request failed");
        goto stats;
    }
    for (unsigned i = 0; i < threads; i++) {
        struct appender *ap = &aps[i];

        memset(ap, 0, sizeof(*ap));
        ap->db = db;
        ap->id = i;
        ap->batch = batch;
        ap->stop = &stop;
        pthread_mutex_init(&ap->lock, NULL);
        pthread_cond_init(&ap->cond, NULL);
    }
    settle();
    t0 = now_s();
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&aps[i].th, NULL, appender_main, &aps[i]) != 0)
            die("pthread_create", strerror(errno));
    sleep_until(t0 + cfg.warmup);
    t0 = now_s();
    sdb_db_stats(db, &s0);
    for (unsigned i = 0; i < threads; i++)
        a0 += atomic_load(&aps[i].acked);
    sleep_until(t0 + cfg.seconds);
    t1 = now_s();
    sdb_db_stats(db, &s1);
    for (unsigned i = 0; i < threads; i++)
        r.acked += atomic_load(&aps[i].acked);
    r.acked -= a0;
    atomic_store(&stop, true);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(aps[i].th, NULL);
    for (unsigned i = 0; i < threads; i++) {
        if (aps[i].failed)
            die("append", "a request failed");
        pthread_mutex_destroy(&aps[i].lock);
        pthread_cond_destroy(&aps[i].cond);
    }
stats:
    r.seconds = t1 - t0;
    r.per_s = (double)r.acked / r.seconds;
    r.fsyncs = s1.fsync_count - s0.fsync_count;
    if (s1.group_commits > s0.group_commits)
        r.avg_group =
            (double)(s1.group_commit_records - s0.group_commit_records) /
            (double)(s1.group_commits - s0.group_commits);
    if (r.fsyncs)
        r.avg_fsync_ms = (s1.fsync_seconds_sum - s0.fsync_seconds_sum) * 1e3 /
                         (double)r.fsyncs;
    sdb_db_close(db);
    rm_rf(dir);
    return r;
}

/* ---- SQLite ---- */

static const char *const sqlite_schema =
    "CREATE TABLE IF NOT EXISTS assertions ("
    " lsn INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL,"
    " timestamp INTEGER NOT NULL,"
    " concept_path TEXT NOT NULL,"
    " predicate TEXT NOT NULL,"
    " value TEXT NOT NULL,"
    " confidence REAL NOT NULL,"
    " authority_tier TEXT NOT NULL,"
    " source TEXT,"
    " derived_from TEXT);"
    "CREATE INDEX IF NOT EXISTS assertions_concept"
    " ON assertions(concept_path, predicate);";

static void sq_check(sqlite3 *h, int rc, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        die(what, h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
}

static sqlite3 *sq_open(const char *path)
{
    sqlite3 *h = NULL;
    int rc = sqlite3_open_v2(
        path, &h,
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);

    sq_check(h, rc, "sqlite3_open");
    sqlite3_busy_timeout(h, 60000);
    sq_check(h, sqlite3_exec(h, "PRAGMA journal_mode=WAL", NULL, NULL, NULL),
             "journal_mode");
    sq_check(h, sqlite3_exec(h, "PRAGMA synchronous=FULL", NULL, NULL, NULL),
             "synchronous");
    return h;
}

struct sq_worker {
    const char *path;
    unsigned id;
    unsigned rows_per_txn;
    const atomic_bool *stop;
    _Atomic uint64_t rows;
    pthread_t th;
};

static void *sq_main(void *arg)
{
    struct sq_worker *w = arg;
    sqlite3 *h = sq_open(w->path);
    sqlite3_stmt *ins;
    char path[64], id[32];
    int64_t v = 0;
    struct timespec ts;

    snprintf(path, sizeof(path), "bench/c%04u", w->id % cfg.concepts);
    sq_check(h,
             sqlite3_prepare_v2(h,
                                "INSERT INTO assertions(id, timestamp, "
                                "concept_path, predicate, value, confidence, "
                                "authority_tier, source, derived_from) "
                                "VALUES(?,?,?,?,?,?,?,NULL,NULL)",
                                -1, &ins, NULL),
             "prepare");
    while (!atomic_load(w->stop)) {
        if (w->rows_per_txn > 1)
            sq_check(h, sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     "begin");
        for (unsigned i = 0; i < w->rows_per_txn; i++) {
            char val[32];

            clock_gettime(CLOCK_REALTIME, &ts);
            snprintf(id, sizeof(id), "%016" PRIx64 "%08x", (uint64_t)v,
                     (unsigned)rand());
            snprintf(val, sizeof(val), "%" PRId64, v++);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(
                ins, 2, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
            sqlite3_bind_text(ins, 3, path, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 4, "population", -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 5, val, -1, SQLITE_TRANSIENT);
            sqlite3_bind_double(ins, 6, 0.75);
            sqlite3_bind_text(ins, 7, "verified", -1, SQLITE_STATIC);
            sq_check(h, sqlite3_step(ins), "insert");
            sqlite3_reset(ins);
        }
        if (w->rows_per_txn > 1)
            sq_check(h, sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), "commit");
        atomic_fetch_add(&w->rows, w->rows_per_txn);
    }
    sqlite3_finalize(ins);
    sqlite3_close(h);
    return NULL;
}

static double run_sqlite(unsigned threads, unsigned rows_per_txn,
                         uint64_t *out_rows)
{
    static struct sq_worker ws[MAX_THREADS];
    char dir[4200], path[4300], name[64];
    atomic_bool stop = false;
    sqlite3 *h;
    uint64_t rows = 0, r0 = 0;
    double t0, t1;

    snprintf(name, sizeof(name), "sqlite-%u-%u", threads, rows_per_txn);
    sub_dir(dir, sizeof(dir), name);
    if (mkdir(dir, 0755) < 0)
        die("mkdir", strerror(errno));
    snprintf(path, sizeof(path), "%s/bench.db", dir);
    h = sq_open(path);
    sq_check(h, sqlite3_exec(h, sqlite_schema, NULL, NULL, NULL), "schema");
    for (unsigned i = 0; i < threads; i++) {
        memset(&ws[i], 0, sizeof(ws[i]));
        ws[i].path = path;
        ws[i].id = i;
        ws[i].rows_per_txn = rows_per_txn;
        ws[i].stop = &stop;
    }
    settle();
    t0 = now_s();
    for (unsigned i = 0; i < threads; i++)
        if (pthread_create(&ws[i].th, NULL, sq_main, &ws[i]) != 0)
            die("pthread_create", strerror(errno));
    sleep_until(t0 + cfg.warmup);
    t0 = now_s();
    for (unsigned i = 0; i < threads; i++)
        r0 += atomic_load(&ws[i].rows);
    sleep_until(t0 + cfg.seconds);
    t1 = now_s();
    for (unsigned i = 0; i < threads; i++)
        rows += atomic_load(&ws[i].rows);
    rows -= r0;
    atomic_store(&stop, true);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(ws[i].th, NULL);
    sqlite3_close(h);
    rm_rf(dir);
    *out_rows = rows;
    return (double)rows / (t1 - t0);
}

/* ---- recovery: write, crash, replay, rebuild, RSS ---- */

struct child_result {
    int ok;
    uint64_t records;
    double seconds;      /* the phase's own time (from the log lines) */
    double open_seconds; /* the whole sdb_db_open */
    uint64_t rss_before;
    uint64_t rss_after;
    uint64_t replayed;
    uint64_t assertions;
};

/* Run fn in a forked child; its result comes back through a pipe. */
static int in_child(void (*fn)(const char *, uint64_t, struct child_result *),
                    const char *dir, uint64_t n, unsigned timeout_s,
                    struct child_result *out)
{
    int fds[2], status = 0;
    pid_t pid;
    ssize_t got;

    memset(out, 0, sizeof(*out));
    if (pipe(fds) < 0)
        die("pipe", strerror(errno));
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        die("fork", strerror(errno));
    if (pid == 0) {
        struct child_result r = {0};

        close(fds[0]);
        alarm(timeout_s);
        fn(dir, n, &r);
        r.ok = 1;
        if (write(fds[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
            _exit(2);
        _exit(0); /* no close: whatever the child opened stays as it is */
    }
    close(fds[1]);
    got = read(fds[0], out, sizeof(*out));
    close(fds[0]);
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof(*out) || !out->ok) {
        fprintf(stderr, "bench_core: child for %s failed (status %d%s)\n", dir,
                status,
                WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM
                    ? ", timed out"
                    : "");
        return -1;
    }
    return 0;
}

struct writer_arg {
    sdb_db *db;
    uint64_t first, count; /* request numbers */
    unsigned batch;
};

static void *bulk_writer(void *arg)
{
    struct writer_arg *wa = arg;
    sdb_error e;

    for (uint64_t i = wa->first; i < wa->first + wa->count; i++) {
        json_t *req = make_request((unsigned)(i % cfg.concepts), wa->batch,
                                   (json_int_t)(i * wa->batch));
        if (sdb_assert_sync(wa->db, req, NULL, &e) != 0)
            die("sdb_assert_sync", e.message);
        json_decref(req);
    }
    return NULL;
}

/* Child: write n records and leave without closing (they stay in the WAL). */
static void child_write(const char *dir, uint64_t n, struct child_result *r)
{
    enum { WRITERS = 4, BATCH = 1000 };
    struct writer_arg wa[WRITERS];
    pthread_t th[WRITERS];
    uint64_t reqs = (n + BATCH - 1) / BATCH, per = reqs / WRITERS;
    sdb_db *db = open_store(dir, true, NULL);
    double t0 = now_s();
    sdb_stats st;

    r->rss_before = rss_bytes();
    for (int i = 0; i < WRITERS; i++) {
        wa[i].db = db;
        wa[i].first = (uint64_t)i * per;
        wa[i].count = i == WRITERS - 1 ? reqs - (uint64_t)i * per : per;
        wa[i].batch = BATCH;
        pthread_create(&th[i], NULL, bulk_writer, &wa[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    r->seconds = now_s() - t0;
    r->rss_after = rss_bytes();
    sdb_db_stats(db, &st);
    r->records = st.last_lsn;
    r->assertions = st.assertion_count;
    if (st.checkpoint_lsn != 0)
        die("write", "a checkpoint ran; the WAL replay figure would be wrong");
}

/* Child: open (replays the WAL), note times and RSS, close (checkpoint). */
static void child_open(const char *dir, uint64_t n, struct child_result *r)
{
    struct logtimes lt = {0};
    sdb_stats st;
    sdb_db *db;
    double t0;

    (void)n;
    r->rss_before = rss_bytes();
    t0 = now_s();
    db = open_store(dir, false, &lt);
    r->open_seconds = now_s() - t0;
    r->rss_after = rss_bytes();
    sdb_db_stats(db, &st);
    r->replayed = st.replayed_on_open;
    r->assertions = st.assertion_count;
    r->records = st.last_lsn;
    if (lt.rebuild_done > 0)
        r->seconds = lt.rebuild_done - lt.rebuild_start;
    else if (lt.replayed > 0)
        r->seconds = lt.replayed - lt.recovery_start;
    if (sdb_db_close(db) != 0)
        die("sdb_db_close", "checkpoint failed");
}

struct recovery_result {
    uint64_t n;
    struct child_result write, replay, rebuild, load;
};

static int run_recovery(uint64_t n, unsigned timeout_s,
                        struct recovery_result *rr)
{
    char dir[4200], name[64], snap[4300];

    memset(rr, 0, sizeof(*rr));
    rr->n = n;
    snprintf(name, sizeof(name), "sdb-recovery-%" PRIu64, n);
    sub_dir(dir, sizeof(dir), name);
    settle();
    if (in_child(child_write, dir, n, timeout_s, &rr->write) < 0)
        return -1;
    settle();
    if (in_child(child_open, dir, n, timeout_s, &rr->replay) < 0)
        return -1;
    snprintf(snap, sizeof(snap), "%s/db/indexes/index.snap", dir);
    if (unlink(snap) < 0)
        die("unlink index.snap", strerror(errno));
    settle();
    if (in_child(child_open, dir, n, timeout_s, &rr->rebuild) < 0)
        return -1;
    settle();
    if (in_child(child_open, dir, n, timeout_s, &rr->load) < 0)
        return -1;
    rm_rf(dir);
    return 0;
}

/* ---- output ---- */

static void print_machine(void)
{
    struct statfs sf;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *kind = "other";

    if (statfs(base_dir, &sf) == 0) {
        if (sf.f_type == 0xEF53)
            kind = "ext2/3/4";
        else if (sf.f_type == 0x58465342)
            kind = "xfs";
        else if (sf.f_type == 0x9123683E)
            kind = "btrfs";
        else if (sf.f_type == TMPFS_MAGIC_NUM)
            kind = "tmpfs (NOT a disk: fsync is free here)";
    }
    printf("machine: %ld CPUs online; data under %s (%s); SQLite %s; "
           "StemeDB %s\n",
           cpus, base_dir, kind, sqlite3_libversion(), SDB_VERSION);
}

static void print_recovery(const struct recovery_result *rr)
{
    const struct child_result *w = &rr->write, *p = &rr->replay,
                              *b = &rr->rebuild, *l = &rr->load;

    printf("\nrecovery, %" PRIu64 " assertions (%" PRIu64 " records):\n", rr->n,
           w->records);
    printf("  %-44s %10.2f s %12.0f records/s\n",
           "bulk write (4 threads x 1000/request)", w->seconds,
           (double)w->records / w->seconds);
    printf("  %-44s %10.2f s %12.0f records/s   (whole open %.2f s, "
           "replayed %" PRIu64 ")\n",
           "WAL replay (no checkpoint since the writes)", p->seconds,
           (double)p->replayed / p->seconds, p->open_seconds, p->replayed);
    printf("  %-44s %10.2f s %12.0f records/s   (whole open %.2f s)\n",
           "index rebuild (index.snap deleted)", b->seconds,
           (double)b->records / b->seconds, b->open_seconds);
    printf("  %-44s %10.2f s %12.0f records/s\n",
           "open with index.snap (whole open)", l->open_seconds,
           (double)l->records / l->open_seconds);
    printf("  RSS per indexed assertion: %.0f B after loading index.snap, "
           "%.0f B after WAL replay, %.0f B after rebuild, %.0f B in the "
           "writer\n",
           (double)(l->rss_after - l->rss_before) / (double)l->assertions,
           (double)(p->rss_after - p->rss_before) / (double)p->assertions,
           (double)(b->rss_after - b->rss_before) / (double)b->assertions,
           (double)(w->rss_after - w->rss_before) / (double)w->assertions);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Median, min and max of n values (sorts v). */
struct spread {
    double med, min, max;
};

static struct spread spread_of(double *v, unsigned n)
{
    struct spread sp = {0, 0, 0};

    if (n == 0)
        return sp;
    qsort(v, n, sizeof(*v), cmp_double);
    sp.min = v[0];
    sp.max = v[n - 1];
    sp.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return sp;
}

static void print_spread(const char *label, struct spread sp, double ref)
{
    printf("  %-46s %10.0f  (%.0f .. %.0f)", label, sp.med, sp.min, sp.max);
    if (ref > 0)
        printf("  %6.1fx", sp.med / ref);
    printf("\n");
}

static void print_recovery_summary(const struct recovery_result *rr, unsigned n)
{
    double replay[MAX_REPEAT], rebuild[MAX_REPEAT], rss[MAX_REPEAT];
    char label[80];

    for (unsigned i = 0; i < n; i++) {
        replay[i] = (double)rr[i].replay.replayed / rr[i].replay.seconds;
        rebuild[i] = (double)rr[i].rebuild.records / rr[i].rebuild.seconds;
        rss[i] = (double)(rr[i].load.rss_after - rr[i].load.rss_before) /
                 (double)rr[i].load.assertions;
    }
    snprintf(label, sizeof(label), "WAL replay records/s (%" PRIu64 ")",
             rr[0].n);
    print_spread(label, spread_of(replay, n), 0);
    snprintf(label, sizeof(label), "index rebuild records/s (%" PRIu64 ")",
             rr[0].n);
    print_spread(label, spread_of(rebuild, n), 0);
    snprintf(label, sizeof(label),
             "RSS bytes per indexed assertion (%" PRIu64 ")", rr[0].n);
    print_spread(label, spread_of(rss, n), 0);
}

static void usage(void)
{
    printf(
        "usage: bench_core [options]\n"
        "  --dir DIR          parent of the scratch directory (default .;"
        " use the disk under test, not tmpfs)\n"
        "  --seconds S        measured duration of each throughput run "
        "(default 5)\n"
        "  --warmup S         unmeasured run-in before each (default 1)\n"
        "  --threads LIST     StemeDB appender counts (default 1,16,64,256)\n"
        "  --batch N          assertions per StemeDB request (default 1)\n"
        "  --drivers N        event-loop threads keeping the appenders'\n"
        "                     requests in flight (default 2); 0 = one\n"
        "                     thread per appender, each waiting on its own\n"
        "                     condition variable\n"
        "  --concepts N       distinct concept paths (default 64)\n"
        "  --records N        records for replay/rebuild/RSS (default "
        "1000000)\n"
        "  --big N            also measure RSS etc. at N records (e.g. "
        "10000000)\n"
        "  --big-timeout S    give up on each --big phase after S s "
        "(default 900)\n"
        "  --no-sqlite, --no-appends, --no-recovery   skip a part\n"
        "  --keep             keep the scratch directory\n");
}

static void parse_threads(const char *s)
{
    char *copy = strdup(s), *save = NULL, *tok;

    cfg.n_thread_counts = 0;
    for (tok = strtok_r(copy, ",", &save); tok && cfg.n_thread_counts < 8;
         tok = strtok_r(NULL, ",", &save)) {
        unsigned long t = strtoul(tok, NULL, 10);
        if (t < 1 || t > MAX_THREADS)
            die("--threads", "each count must be 1..1024");
        cfg.thread_counts[cfg.n_thread_counts++] = (unsigned)t;
    }
    free(copy);
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"seconds", required_argument, NULL, 's'},
        {"warmup", required_argument, NULL, 'w'},
        {"repeat", required_argument, NULL, 'r'},
        {"recovery-repeat", required_argument, NULL, 'P'},
        {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},
        {"drivers", required_argument, NULL, 'D'},
        {"concepts", required_argument, NULL, 'c'},
        {"records", required_argument, NULL, 'n'},
        {"big", required_argument, NULL, 'B'},
        {"big-timeout", required_argument, NULL, 'T'},
        {"no-sqlite", no_argument, NULL, 'Q'},
        {"no-appends", no_argument, NULL, 'A'},
        {"no-recovery", no_argument, NULL, 'R'},
        {"keep", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            cfg.dir = optarg;
            break;
        case 's':
            cfg.seconds = strtod(optarg, NULL);
            break;
        case 'w':
            cfg.warmup = strtod(optarg, NULL);
            break;
        case 'r':
            cfg.repeat = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'P':
            cfg.recovery_repeat = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            parse_threads(optarg);
            break;
        case 'b':
            cfg.batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'D':
            cfg.drivers = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            cfg.concepts = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'n':
            cfg.recovery_n = strtoull(optarg, NULL, 10);
            break;
        case 'B':
            cfg.big_n = strtoull(optarg, NULL, 10);
            break;
        case 'T':
            cfg.big_timeout_s = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'Q':
            cfg.skip_sqlite = true;
            break;
        case 'A':
            cfg.skip_appends = true;
            break;
        case 'R':
            cfg.skip_recovery = true;
            break;
        case 'k':
            cfg.keep = true;
            break;
        case 'h':
            usage();
            exit(0);
        default:
            usage();
            exit(2);
        }
    }
    if (cfg.seconds <= 0 || cfg.warmup < 0 || cfg.repeat < 1 ||
        cfg.repeat > MAX_REPEAT || cfg.recovery_repeat < 1 ||
        cfg.recovery_repeat > MAX_REPEAT || cfg.concepts == 0 ||
        cfg.batch == 0 || cfg.batch > SDB_MAX_BATCH || cfg.recovery_n == 0)
        die("options", "out of range (see --help)");
}

int main(int argc, char **argv)
{
    static double app[8][MAX_REPEAT], sq[3][MAX_REPEAT];
    static const unsigned sq_threads[3] = {1, 16, 1}, sq_rows[3] = {1, 1, 1000};
    static const char *const sq_label[3] = {"1 thread,  1 row/txn",
                                            "16 threads, 1 row/txn",
                                            "1 thread,  1000 rows/txn"};
    struct spread app_sp[8] = {{0, 0, 0}}, sq_sp[3] = {{0, 0, 0}};
    uint64_t rows;
    static struct recovery_result rr[MAX_REPEAT], big;
    unsigned have_rr = 0;
    bool have_big = false;

    parse_args(argc, argv);
    snprintf(base_dir, sizeof(base_dir), "%s/stemedb-bench-XXXXXX", cfg.dir);
    if (!mkdtemp(base_dir))
        die("mkdtemp", strerror(errno));
    print_machine();
    printf("each throughput run: %.1f s measured after %.1f s warm-up; %u "
           "round(s); %u concepts; %u assertion(s) per StemeDB request; "
           "%s\n",
           cfg.seconds, cfg.warmup, cfg.repeat, cfg.concepts, cfg.batch,
           cfg.drivers ? "appenders driven by event-loop threads (--drivers)"
                       : "one thread per appender");
    fflush(stdout);

    for (unsigned rep = 0; rep < cfg.repeat; rep++) {
        if (!cfg.skip_appends || !cfg.skip_sqlite)
            printf("\nround %u\n", rep + 1);
        for (unsigned i = 0; !cfg.skip_appends && i < cfg.n_thread_counts;
             i++) {
            struct append_result ar =
                run_appenders(cfg.thread_counts[i], cfg.batch);

            app[i][rep] = ar.per_s;
            printf("StemeDB %4u appenders: %10.0f acked assertions/s  "
                   "(%" PRIu64 " in %.1f s; %" PRIu64 " fdatasyncs, %.2f ms "
                   "avg, %.1f records/group)\n",
                   ar.threads, ar.per_s, ar.acked, ar.seconds, ar.fsyncs,
                   ar.avg_fsync_ms, ar.avg_group);
            fflush(stdout);
        }
        for (unsigned i = 0; !cfg.skip_sqlite && i < 3; i++) {
            sq[i][rep] = run_sqlite(sq_threads[i], sq_rows[i], &rows);
            printf("SQLite %-26s %10.0f rows/s (%" PRIu64 ")\n", sq_label[i],
                   sq[i][rep], rows);
            fflush(stdout);
        }
    }
    for (unsigned i = 0; i < cfg.n_thread_counts; i++)
        app_sp[i] = spread_of(app[i], cfg.skip_appends ? 0 : cfg.repeat);
    for (unsigned i = 0; i < 3; i++)
        sq_sp[i] = spread_of(sq[i], cfg.skip_sqlite ? 0 : cfg.repeat);

    if (!cfg.skip_recovery) {
        for (unsigned i = 0; i < cfg.recovery_repeat; i++) {
            if (run_recovery(cfg.recovery_n, 3600, &rr[have_rr]) < 0)
                break;
            print_recovery(&rr[have_rr++]);
            fflush(stdout);
        }
        if (cfg.big_n) {
            have_big = run_recovery(cfg.big_n, cfg.big_timeout_s, &big) == 0;
            if (have_big)
                print_recovery(&big);
            else
                printf("\nbig run (%" PRIu64 ") did not finish\n", cfg.big_n);
        }
    }

    printf("\nsummary: median of the rounds (min .. max); ratio = StemeDB vs "
           "SQLite at one row per transaction with 1 thread (1 appender) or "
           "16 threads (16+ appenders)\n");
    for (unsigned i = 0; !cfg.skip_appends && i < cfg.n_thread_counts; i++) {
        char label[80];

        snprintf(label, sizeof(label),
                 "StemeDB durable appends/s, %u appenders",
                 cfg.thread_counts[i]);
        print_spread(label, app_sp[i],
                     cfg.skip_sqlite              ? 0
                     : cfg.thread_counts[i] >= 16 ? sq_sp[1].med
                                                  : sq_sp[0].med);
    }
    for (unsigned i = 0; !cfg.skip_sqlite && i < 3; i++) {
        char label[80];

        snprintf(label, sizeof(label), "SQLite rows/s, %s", sq_label[i]);
        print_spread(label, sq_sp[i], 0);
    }
    if (have_rr)
        print_recovery_summary(rr, have_rr);
    if (have_big)
        print_recovery_summary(&big, 1);
    if (!cfg.keep)
        rmdir(base_dir);
    else
        printf("\nkept %s\n", base_dir);
    return 0;
}
