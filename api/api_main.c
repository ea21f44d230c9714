/*
 * api_main.c - stemedb-api: a staged main (docs/api.md "Startup") that
 * parses the configuration, checks TLS and directories, opens the store
 * (recovery runs inside sdb_db_open), binds both listeners, tells systemd
 * it is ready and then waits for SIGTERM/SIGINT.  Shutdown stops accepting,
 * closes the store (which drains parked writes and checkpoints) and only
 * then stops the HTTP daemons.  Every startup failure is one line on stderr
 * naming the cause and the next thing to do; the exit status is 1.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef SDB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "api_config.h"
#include "api_dashboard.h"
#include "api_http.h"
#include "api_metrics.h"
#include "api_ratelimit.h"
#include "api_server.h"
#include "api_tls.h"

#define STEPS 10

static int log_level = SDB_LOG_INFO;

static const char *level_name(sdb_log_level l)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    return (unsigned)l < 4 ? names[l] : "INFO";
}

static void vlog_line(sdb_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void vlog_line(sdb_log_level level, const char *fmt, va_list ap)
{
    char msg[1024], when[40];
    struct timespec ts;
    struct tm tm;

    if ((int)level > log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "%s.%03ldZ %-5s %s\n", when, ts.tv_nsec / 1000000,
            level_name(level), msg);
}

static void log_line(sdb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void log_line(sdb_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_line(level, fmt, ap);
    va_end(ap);
}

/* The engine's log callback: same format as ours. */
static void core_log(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    log_line(level, "%s", msg);
}

/* One actionable failure line (always printed, whatever the level). */
static void fail_line(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void fail_line(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "stemedb-api: error: %s\n", msg);
}

double api_server_uptime(const struct api_server *srv)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - srv->started.tv_sec) +
           (double)(now.tv_nsec - srv->started.tv_nsec) / 1e9;
}

static void notify(const char *state)
{
#ifdef SDB_HAVE_SYSTEMD
    if (getenv("NOTIFY_SOCKET"))
        sd_notify(0, state);
#else
    (void)state;
#endif
}

/* ---- stage 3: token file ---- */

static int load_token(struct api_server *srv)
{
    const char *path = srv->cfg.token_file;
    FILE *f;
    char buf[4096];
    size_t n;
    struct stat st;

    if (!path)
        return 0;
    f = fopen(path, "r");
    if (!f) {
        fail_line("cannot read token file %s (STEMEDB_API_TOKEN_FILE): %s",
                  path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0004))
        log_line(SDB_LOG_WARN, "token file %s is world-readable; chmod 600 it",
                 path);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                     buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    if (n == 0 || strlen(buf) != n) {
        fail_line("token file %s (STEMEDB_API_TOKEN_FILE) is empty or "
                  "contains NUL bytes",
                  path);
        return -1;
    }
    srv->token = strdup(buf);
    srv->token_len = n;
    memset(buf, 0, sizeof(buf));
    return srv->token ? 0 : -1;
}

/* ---- stage 4: directories ---- */

/* The path's parent ("." when it has none), in out. */
static void parent_of(const char *path, char *out, size_t cap)
{
    const char *slash;

    snprintf(out, cap, "%s", path);
    while (strlen(out) > 1 && out[strlen(out) - 1] == '/')
        out[strlen(out) - 1] = '\0';
    slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        out[slash - out] = '\0';
}

/*
 * An existing directory must be usable; a missing one needs a writable
 * nearest existing ancestor (the engine creates it).
 */
static int check_dir(const char *path, const char *var)
{
    char cur[4096], up[4096];
    struct stat st;

    if (!path)
        return 0;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fail_line("%s (%s) exists but is not a directory", path, var);
            return -1;
        }
        if (access(path, R_OK | W_OK | X_OK) != 0) {
            fail_line("permission denied: %s (%s) is not writable by uid "
                      "%ld; fix its owner or mode (chown/chmod)",
                      path, var, (long)getuid());
            return -1;
        }
        return 0;
    }
    snprintf(cur, sizeof(cur), "%s", path);
    for (;;) {
        parent_of(cur, up, sizeof(up));
        if (stat(up, &st) == 0 || strcmp(up, cur) == 0)
            break;
        snprintf(cur, sizeof(cur), "%s", up);
    }
    if (access(up, W_OK | X_OK) != 0) {
        fail_line("permission denied: cannot create %s (%s): %s is not "
                  "writable by uid %ld",
                  path, var, up, (long)getuid());
        return -1;
    }
    return 0;
}

/* ---- stage 5: open ---- */

static void open_failure(const struct api_config *cfg, int rc,
                         const sdb_error *err)
{
    const char *m = err->message[0] ? err->message : sdb_strerror(rc);
    char hint[512] = "";

    /* the engine's message may already say what to do: never repeat it */
    if (rc == SDB_ECORRUPT && !strstr(m, "stemedb-fsck"))
        snprintf(hint, sizeof(hint),
                 "; the data directory failed verification: run "
                 "`stemedb-fsck -n %s` to see the damage, then "
                 "`stemedb-fsck --repair %s` or restore from a backup",
                 cfg->data_dir, cfg->data_dir);
    else if (rc == SDB_ECORRUPT)
        snprintf(hint, sizeof(hint),
                 " (`stemedb-fsck -n %s` shows the damage; restore from a "
                 "backup if --repair cannot fix it)",
                 cfg->data_dir);
    else if ((rc == -EACCES || rc == -EPERM) && !strstr(m, "chown"))
        snprintf(hint, sizeof(hint),
                 "; fix the owner or mode of the data directory (running as "
                 "uid %ld)",
                 (long)getuid());
    else if ((rc == -ENOSPC || rc == -EDQUOT) && !strstr(m, "df -h"))
        snprintf(hint, sizeof(hint),
                 "; free space on the file system holding %s (df -h %s) and "
                 "start again",
                 cfg->data_dir, cfg->data_dir);
    else if (rc == SDB_ELOCKED && !strstr(m, "stop it"))
        snprintf(hint, sizeof(hint),
                 "; another stemedb process uses %s, stop it first",
                 cfg->data_dir);
    else if (rc == SDB_EVERSION)
        snprintf(hint, sizeof(hint),
                 "; this stemedb-api %s cannot read the data in %s",
                 SDB_VERSION, cfg->data_dir);
    if (rc == -EACCES || rc == -EPERM)
        fail_line("permission denied: %s%s", m, hint);
    else if (rc == -ENOSPC || rc == -EDQUOT)
        fail_line("disk full: %s%s", m, hint);
    else if (rc == SDB_ECORRUPT || rc == SDB_ELOCKED || rc == SDB_EVERSION)
        fail_line("%s%s", m, hint);
    else
        fail_line("cannot open data directory %s: %s%s", cfg->data_dir, m,
                  hint);
}

static int open_store(struct api_server *srv)
{
    const struct api_config *cfg = &srv->cfg;
    sdb_options opt;
    sdb_error err;
    sdb_stats st;
    int rc;

    sdb_options_init(&opt, cfg->data_dir);
    opt.wal_dir = cfg->wal_dir;
    opt.db_dir = cfg->db_dir;
    opt.wal_archive_dir = cfg->wal_archive_dir;
    opt.flags = SDB_OPEN_CREATE;
    opt.wal_segment_timeout_ms = cfg->wal_segment_timeout_s * 1000u;
    opt.log = core_log;
    opt.log_level = (sdb_log_level)cfg->log_level;
    memset(&err, 0, sizeof(err));
    log_line(SDB_LOG_INFO,
             "[5/%d] Opening the write-ahead log and recovering the store",
             STEPS);
    rc = sdb_db_open(&opt, &srv->db, &err);
    if (rc != 0) {
        open_failure(cfg, rc, &err);
        return -1;
    }
    sdb_db_stats(srv->db, &st);
    log_line(SDB_LOG_INFO,
             "[6/%d] Store ready: %llu assertions, last LSN %llu, %llu WAL "
             "entries replayed, %llu WAL segments",
             STEPS, (unsigned long long)st.assertion_count,
             (unsigned long long)st.last_lsn,
             (unsigned long long)st.replayed_on_open,
             (unsigned long long)st.wal_segments);
    log_line(SDB_LOG_INFO,
             "[7/%d] Group-commit writer running (WAL in %s, archive %s)",
             STEPS, sdb_db_wal_dir(srv->db),
             cfg->wal_archive_dir ? cfg->wal_archive_dir : "off");
    return 0;
}

/* ---- stages 1-4 ---- */

static int prepare(struct api_server *srv)
{
    struct api_config *cfg = &srv->cfg;
    char msg[1024];
    size_t plen;

    static const char *lower[] = {"error", "warn", "info", "debug"};

    log_line(SDB_LOG_INFO, "[1/%d] Logging to stderr at level %s", STEPS,
             lower[cfg->log_level & 3]);
    srv->metrics = api_metrics_new();
    srv->rl = api_ratelimit_new(cfg->rl_write_rps, cfg->rl_write_burst,
                                cfg->rl_read_rps, cfg->rl_read_burst);
    if (!srv->metrics || !srv->rl || api_dashboard_init() != 0) {
        fail_line("out of memory");
        return -1;
    }
    log_line(SDB_LOG_INFO, "[2/%d] Metrics registry ready (/metrics %s)", STEPS,
             cfg->meter_enabled ? "enabled" : "disabled");
    if (load_token(srv) != 0)
        return -1;
    if (cfg->tls_enabled &&
        api_tls_load(cfg->tls_cert, cfg->tls_key, &srv->tls_cert_pem,
                     &srv->tls_key_pem, msg, sizeof(msg)) != 0) {
        fail_line("%s", msg);
        return -1;
    }
    plen = strlen(cfg->data_dir) + sizeof("/backup-status.json");
    srv->backup_status_path = cfg->backup_status_file
                                  ? strdup(cfg->backup_status_file)
                                  : malloc(plen);
    if (!srv->backup_status_path) {
        fail_line("out of memory");
        return -1;
    }
    if (!cfg->backup_status_file)
        snprintf(srv->backup_status_path, plen, "%s/backup-status.json",
                 cfg->data_dir);
    log_line(SDB_LOG_INFO,
             "[3/%d] Configuration loaded: api %s, dashboard %s, data %s, "
             "TLS %s, token %s, rate limits write %.0f/s read %.0f/s",
             STEPS, cfg->bind_addr,
             cfg->dashboard_addr[0] ? cfg->dashboard_addr : "off",
             cfg->data_dir, cfg->tls_enabled ? "on" : "off",
             srv->token ? "required for writes" : "off", cfg->rl_write_rps,
             cfg->rl_read_rps);
    if (check_dir(cfg->data_dir, "STEMEDB_DATA_DIR") != 0 ||
        check_dir(cfg->wal_dir, "STEMEDB_WAL_DIR") != 0 ||
        check_dir(cfg->db_dir, "STEMEDB_DB_DIR") != 0 ||
        check_dir(cfg->wal_archive_dir, "STEMEDB_WAL_ARCHIVE_DIR") != 0)
        return -1;
    log_line(SDB_LOG_INFO,
             "[4/%d] Data directory %s usable (created if "
             "missing)",
             STEPS, cfg->data_dir);
    return 0;
}

/* ---- stages 8-10 ---- */

static bool dashboard_on(const struct api_config *cfg)
{
    return cfg->dashboard_addr[0] && strcmp(cfg->dashboard_addr, "off") != 0;
}

static int start_listeners(struct api_server *srv)
{
    const struct api_config *cfg = &srv->cfg;
    char msg[1024];

    srv->api = (struct api_listener){srv, API_LISTENER_API, NULL, -1, "", 0};
    srv->dash =
        (struct api_listener){srv, API_LISTENER_DASHBOARD, NULL, -1, "", 0};
    log_line(SDB_LOG_INFO,
             "[8/%d] Routes ready: POST /v1/assert /v1/query /v1/retract, GET "
             "/v1/assertions/{id} /v1/concepts /v1/health /metrics",
             STEPS);
    if (api_http_bind(&srv->api, cfg->bind_addr, msg, sizeof(msg)) != 0 ||
        (dashboard_on(cfg) && api_http_bind(&srv->dash, cfg->dashboard_addr,
                                            msg, sizeof(msg)) != 0)) {
        fail_line("%s", msg);
        return -1;
    }
    log_line(SDB_LOG_INFO, "[9/%d] Bound %s%s (%s)%s%s", STEPS,
             cfg->tls_enabled ? "https://" : "http://", srv->api.addr, "api",
             dashboard_on(cfg) ? ", dashboard on " : "",
             dashboard_on(cfg) ? srv->dash.addr : "");
    if (api_http_start(&srv->api, msg, sizeof(msg)) != 0 ||
        (dashboard_on(cfg) &&
         api_http_start(&srv->dash, msg, sizeof(msg)) != 0)) {
        fail_line("%s", msg);
        return -1;
    }
    log_line(SDB_LOG_INFO,
             "[10/%d] Accepting connections (%u max, %u per "
             "client, %u s idle timeout)",
             STEPS, cfg->max_connections, cfg->max_connections_per_ip,
             cfg->connection_timeout_s);
    log_line(SDB_LOG_INFO, "Startup complete, listening on %s", srv->api.addr);
    return 0;
}

/* ---- run and stop ---- */

static int wait_for_signal(const sigset_t *set)
{
    uint64_t wd_usec = 0;
    struct timespec tick = {1, 0};
    siginfo_t si;
    int sig;

#ifdef SDB_HAVE_SYSTEMD
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
        tick.tv_sec = (time_t)(wd_usec / 2000000u);
        tick.tv_nsec = (long)(wd_usec / 2 % 1000000u) * 1000;
    }
#endif
    for (;;) {
        sig = sigtimedwait(set, &si, &tick);
        if (sig == SIGTERM || sig == SIGINT)
            return sig;
        if (sig == SIGHUP)
            log_line(SDB_LOG_INFO, "SIGHUP ignored: restart the server to "
                                   "apply configuration changes");
        if (wd_usec)
            notify("WATCHDOG=1");
    }
}

/* Wait (bounded) until every in-flight request has been answered. */
static void drain_requests(struct api_server *srv, int max_ms)
{
    struct timespec ms = {0, 10 * 1000 * 1000};

    for (int waited = 0; waited < max_ms; waited += 10) {
        if (atomic_load(&srv->parked) == 0 &&
            atomic_load(&srv->live_requests) == 0)
            return;
        nanosleep(&ms, NULL);
    }
    log_line(SDB_LOG_WARN, "%ld requests still open at shutdown",
             atomic_load(&srv->live_requests));
}

static int shutdown_server(struct api_server *srv)
{
    int rc = 0;

    notify("STOPPING=1");
    api_http_quiesce(&srv->api);
    api_http_quiesce(&srv->dash);
    atomic_store(&srv->closing, true);
    pthread_rwlock_wrlock(&srv->db_lock);
    if (srv->db) {
        log_line(SDB_LOG_INFO, "Closing the store (finishing queued writes, "
                               "checkpoint)");
        rc = sdb_db_close(srv->db);
        srv->db = NULL;
    }
    pthread_rwlock_unlock(&srv->db_lock);
    drain_requests(srv, 5000);
    api_http_stop(&srv->api);
    api_http_stop(&srv->dash);
    if (rc != 0)
        log_line(SDB_LOG_ERROR, "closing the store failed: %s",
                 sdb_strerror(rc));
    return rc;
}

static void release(struct api_server *srv)
{
    api_http_stop(&srv->api);
    api_http_stop(&srv->dash);
    if (srv->db)
        sdb_db_close(srv->db);
    api_ratelimit_free(srv->rl);
    api_metrics_free(srv->metrics);
    api_dashboard_release();
    if (srv->token)
        memset(srv->token, 0, srv->token_len);
    free(srv->token);
    free(srv->tls_cert_pem);
    free(srv->tls_key_pem);
    free(srv->backup_status_path);
    pthread_rwlock_destroy(&srv->db_lock);
    api_config_release(&srv->cfg);
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit: the store sizes its
 * read-only descriptor cache from it when it opens, and every connection
 * takes a descriptor too.  A failure only leaves the limit as it was.
 */
static void raise_nofile_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_line(SDB_LOG_WARN, "cannot raise the open file limit: %s",
                 strerror(errno));
}

int main(int argc, char **argv)
{
    static struct api_server srv;
    sigset_t set;
    int rc, sig;

    srv.api.fd = srv.dash.fd = -1;
    pthread_rwlock_init(&srv.db_lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &srv.started);
    if (api_config_init(&srv.cfg) != 0)
        return 1;
    rc = api_config_parse(&srv.cfg, argc, argv);
    if (rc != API_CONFIG_OK) {
        api_config_release(&srv.cfg);
        return rc == API_CONFIG_EXIT_OK ? 0 : 2;
    }
    log_level = srv.cfg.log_level;
    raise_nofile_limit();
    /* block the stop signals before any thread exists: main waits for them */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    rc = 1;
    if (prepare(&srv) != 0 || open_store(&srv) != 0 ||
        start_listeners(&srv) != 0)
        goto release_all;
    notify("READY=1\nSTATUS=Serving requests");
    sig = wait_for_signal(&set);
    log_line(SDB_LOG_INFO, "Received %s, shutting down",
             sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rc = shutdown_server(&srv) == 0 ? 0 : 1;
    if (rc == 0)
        log_line(SDB_LOG_INFO, "Shutdown complete");
release_all:
    release(&srv);
    return rc;
}
