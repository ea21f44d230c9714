/*
 * api_config.c - defaults, STEMEDB_* environment variables and command-line
 * flags for stemedb-api, driven by one option table so that every variable
 * has a flag, a help line and a documented default (docs/api.md).
 *
 * Must not open files or sockets: api_main.c does that after parsing.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stemedb/stemedb.h"

#include "api_config.h"

enum opt_type { OPT_STR, OPT_BOOL, OPT_UINT, OPT_DOUBLE, OPT_SIZE, OPT_LEVEL };

struct opt_def {
    const char *env;  /* environment variable */
    const char *flag; /* long flag without the leading "--" */
    enum opt_type type;
    size_t off; /* offsetof(struct api_config, field) */
    const char *metavar;
    const char *help;
};

#define OFF(field) offsetof(struct api_config, field)

static const struct opt_def opts[] = {
    {"STEMEDB_BIND_ADDR", "bind", OPT_STR, OFF(bind_addr), "HOST:PORT",
     "HTTP API listen address (default " API_DEFAULT_BIND ")"},
    {"STEMEDB_DASHBOARD_ADDR", "dashboard-bind", OPT_STR, OFF(dashboard_addr),
     "HOST:PORT",
     "dashboard listen address, or \"off\" (default " API_DEFAULT_DASHBOARD
     ")"},
    {"STEMEDB_DATA_DIR", "data-dir", OPT_STR, OFF(data_dir), "DIR",
     "data directory, created if missing (default " API_DEFAULT_DATA_DIR ")"},
    {"STEMEDB_WAL_DIR", "wal-dir", OPT_STR, OFF(wal_dir), "DIR",
     "write-ahead log directory (default DATA_DIR/wal)"},
    {"STEMEDB_DB_DIR", "db-dir", OPT_STR, OFF(db_dir), "DIR",
     "concept tree directory (default DATA_DIR/db)"},
    {"STEMEDB_WAL_ARCHIVE_DIR", "wal-archive-dir", OPT_STR,
     OFF(wal_archive_dir), "DIR",
     "copy completed WAL segments here before recycling (default: none)"},
    {"STEMEDB_WAL_SEGMENT_TIMEOUT", "wal-segment-timeout", OPT_UINT,
     OFF(wal_segment_timeout_s), "SECONDS",
     "switch a non-empty WAL segment after this long (default 60)"},
    {"STEMEDB_TLS_ENABLED", "tls-enabled", OPT_BOOL, OFF(tls_enabled), "BOOL",
     "serve HTTPS on both listeners (default false)"},
    {"STEMEDB_TLS_CERT", "tls-cert", OPT_STR, OFF(tls_cert), "FILE",
     "PEM certificate (chain) for TLS"},
    {"STEMEDB_TLS_KEY", "tls-key", OPT_STR, OFF(tls_key), "FILE",
     "PEM private key for TLS"},
    {"STEMEDB_METER_ENABLED", "meter-enabled", OPT_BOOL, OFF(meter_enabled),
     "BOOL", "serve Prometheus metrics on /metrics (default true)"},
    {"STEMEDB_API_TOKEN_FILE", "token-file", OPT_STR, OFF(token_file), "FILE",
     "file holding the bearer token required by write endpoints"},
    {"STEMEDB_BACKUP_STATUS_FILE", "backup-status-file", OPT_STR,
     OFF(backup_status_file), "FILE",
     "backup status written by stemedb-backup (default "
     "DATA_DIR/backup-status.json)"},
    {"STEMEDB_RATE_LIMIT_WRITE_RPS", "rate-limit-write-rps", OPT_DOUBLE,
     OFF(rl_write_rps), "N",
     "write requests/s per client and endpoint, 0 = off (default 20000)"},
    {"STEMEDB_RATE_LIMIT_WRITE_BURST", "rate-limit-write-burst", OPT_DOUBLE,
     OFF(rl_write_burst), "N", "write burst size (default 40000)"},
    {"STEMEDB_RATE_LIMIT_READ_RPS", "rate-limit-read-rps", OPT_DOUBLE,
     OFF(rl_read_rps), "N",
     "read requests/s per client and endpoint, 0 = off (default 50000)"},
    {"STEMEDB_RATE_LIMIT_READ_BURST", "rate-limit-read-burst", OPT_DOUBLE,
     OFF(rl_read_burst), "N", "read burst size (default 100000)"},
    {"STEMEDB_MAX_CONNECTIONS", "max-connections", OPT_UINT,
     OFF(max_connections), "N",
     "concurrent connections per listener (default 1024)"},
    {"STEMEDB_MAX_CONNECTIONS_PER_IP", "max-connections-per-ip", OPT_UINT,
     OFF(max_connections_per_ip), "N",
     "concurrent connections per client address (default 256)"},
    {"STEMEDB_CONNECTION_TIMEOUT", "connection-timeout", OPT_UINT,
     OFF(connection_timeout_s), "SECONDS",
     "close a connection idle this long (default 30, minimum 1)"},
    {"STEMEDB_HTTP_THREADS", "threads", OPT_UINT, OFF(threads), "N",
     "HTTP worker threads (default: CPUs, clamped to 2..4)"},
    {"STEMEDB_MAX_BODY_BYTES", "max-body-bytes", OPT_SIZE, OFF(max_body_bytes),
     "BYTES", "largest accepted request body (default 8388608)"},
    {"STEMEDB_RETRY_AFTER", "retry-after", OPT_UINT, OFF(retry_after_s),
     "SECONDS", "Retry-After sent with 503 while read-only (default 30)"},
    {"STEMEDB_LOG_LEVEL", "log-level", OPT_LEVEL, OFF(log_level), "LEVEL",
     "error, warn, info or debug (default info)"},
};

#define NOPTS        (sizeof(opts) / sizeof(opts[0]))
#define FLAG_HELP    1000
#define FLAG_VERSION 1001

int api_config_init(struct api_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->bind_addr = strdup(API_DEFAULT_BIND);
    cfg->dashboard_addr = strdup(API_DEFAULT_DASHBOARD);
    cfg->data_dir = strdup(API_DEFAULT_DATA_DIR);
    cfg->meter_enabled = true;
    cfg->rl_write_rps = 20000;
    cfg->rl_write_burst = 40000;
    cfg->rl_read_rps = 50000;
    cfg->rl_read_burst = 100000;
    cfg->max_connections = 1024;
    cfg->max_connections_per_ip = 256;
    cfg->connection_timeout_s = 30;
    cfg->max_body_bytes = 8u << 20;
    cfg->retry_after_s = 30;
    cfg->log_level = SDB_LOG_INFO;
    if (!cfg->bind_addr || !cfg->dashboard_addr || !cfg->data_dir)
        return -ENOMEM;
    return 0;
}

void api_config_release(struct api_config *cfg)
{
    char **owned[] = {&cfg->bind_addr,  &cfg->dashboard_addr,
                      &cfg->data_dir,   &cfg->wal_dir,
                      &cfg->db_dir,     &cfg->wal_archive_dir,
                      &cfg->tls_cert,   &cfg->tls_key,
                      &cfg->token_file, &cfg->backup_status_file};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) {
        char **field = owned[i];
        free(*field);
        *field = NULL;
    }
}

static int parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_level(const char *s, int *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Store value s into the field described by o; -EINVAL if it is bad. */
static int opt_set(struct api_config *cfg, const struct opt_def *o,
                   const char *s)
{
    char *base = (char *)cfg + o->off;
    uint64_t u = 0;
    int rc = -EINVAL;

    switch (o->type) {
    case OPT_STR: {
        char **field = (char **)(void *)base;
        char *copy = strdup(s);
        if (!copy)
            return -ENOMEM;
        free(*field);
        *field = copy;
        rc = 0;
        break;
    }
    case OPT_BOOL:
        rc = parse_bool(s, (bool *)(void *)base);
        break;
    case OPT_UINT:
        rc = parse_u64(s, 1000000000u, &u);
        if (rc == 0)
            *(unsigned *)(void *)base = (unsigned)u;
        break;
    case OPT_SIZE:
        rc = parse_u64(s, (uint64_t)1 << 34, &u);
        if (rc == 0)
            *(size_t *)(void *)base = (size_t)u;
        break;
    case OPT_DOUBLE:
        rc = parse_double(s, (double *)(void *)base);
        break;
    case OPT_LEVEL:
        rc = parse_level(s, (int *)(void *)base);
        break;
    }
    return rc;
}

static int apply_env(struct api_config *cfg)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v == NULL)
            continue;
        if (opts[i].type != OPT_STR && v[0] == '\0')
            continue; /* an empty variable means "use the default" */
        if (opt_set(cfg, &opts[i], v) != 0) {
            fprintf(stderr,
                    "stemedb-api: invalid value \"%s\" for %s (expected %s)\n",
                    v, opts[i].env, opts[i].metavar);
            return API_CONFIG_EXIT_USAGE;
        }
    }
    return API_CONFIG_OK;
}

static int apply_flags(struct api_config *cfg, int argc, char **argv)
{
    struct option lo[NOPTS + 3];
    int c;

    for (size_t i = 0; i < NOPTS; i++) {
        lo[i].name = opts[i].flag;
        lo[i].has_arg = required_argument;
        lo[i].flag = NULL;
        lo[i].val = 256 + (int)i;
    }
    lo[NOPTS] = (struct option){"help", no_argument, NULL, FLAG_HELP};
    lo[NOPTS + 1] = (struct option){"version", no_argument, NULL, FLAG_VERSION};
    lo[NOPTS + 2] = (struct option){NULL, 0, NULL, 0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "hV", lo, NULL)) != -1) {
        if (c == 'h' || c == FLAG_HELP) {
            api_config_usage(argv[0]);
            return API_CONFIG_EXIT_OK;
        }
        if (c == 'V' || c == FLAG_VERSION) {
            printf("stemedb-api %s\n", SDB_VERSION);
            return API_CONFIG_EXIT_OK;
        }
        if (c < 256 || c >= 256 + (int)NOPTS) {
            fprintf(stderr, "Try '%s --help' for more information.\n", argv[0]);
            return API_CONFIG_EXIT_USAGE;
        }
        if (opt_set(cfg, &opts[c - 256], optarg) != 0) {
            fprintf(stderr,
                    "stemedb-api: invalid value \"%s\" for --%s (expected "
                    "%s)\n",
                    optarg, opts[c - 256].flag, opts[c - 256].metavar);
            return API_CONFIG_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "stemedb-api: unexpected argument \"%s\"\n",
                argv[optind]);
        return API_CONFIG_EXIT_USAGE;
    }
    return API_CONFIG_OK;
}

/* Cross-field checks after everything is applied. */
static int check(struct api_config *cfg)
{
    if (cfg->data_dir[0] == '\0') {
        fprintf(stderr, "stemedb-api: STEMEDB_DATA_DIR/--data-dir is empty\n");
        return API_CONFIG_EXIT_USAGE;
    }
    if (cfg->tls_enabled && (!cfg->tls_cert || !cfg->tls_key ||
                             !cfg->tls_cert[0] || !cfg->tls_key[0])) {
        fprintf(stderr, "stemedb-api: TLS is enabled but STEMEDB_TLS_CERT "
                        "and STEMEDB_TLS_KEY (--tls-cert, --tls-key) are not "
                        "both set\n");
        return API_CONFIG_EXIT_USAGE;
    }
    if (cfg->connection_timeout_s == 0)
        cfg->connection_timeout_s = 1;
    if (cfg->max_connections == 0)
        cfg->max_connections = 1;
    if (cfg->max_connections_per_ip == 0)
        cfg->max_connections_per_ip = cfg->max_connections;
    if (cfg->rl_write_burst < 1)
        cfg->rl_write_burst = 1;
    if (cfg->rl_read_burst < 1)
        cfg->rl_read_burst = 1;
    if (cfg->max_body_bytes < 1024)
        cfg->max_body_bytes = 1024;
    return API_CONFIG_OK;
}

int api_config_parse(struct api_config *cfg, int argc, char **argv)
{
    int rc = apply_env(cfg);
    if (rc == API_CONFIG_OK)
        rc = apply_flags(cfg, argc, argv);
    if (rc == API_CONFIG_OK)
        rc = check(cfg);
    /* empty optional paths mean "not set" */
    char **optional[] = {&cfg->wal_dir,
                         &cfg->db_dir,
                         &cfg->wal_archive_dir,
                         &cfg->token_file,
                         &cfg->backup_status_file,
                         &cfg->tls_cert,
                         &cfg->tls_key};
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++) {
        char **field = optional[i];
        if (*field && (*field)[0] == '\0') {
            free(*field);
            *field = NULL;
        }
    }
    return rc;
}

void api_config_usage(const char *prog)
{
    printf("NAME\n"
           "    stemedb-api - HTTP API server for a StemeDB data directory\n"
           "\n"
           "SYNOPSIS\n"
           "    %s [OPTION]...\n"
           "\n"
           "DESCRIPTION\n"
           "    Opens (and recovers) the data directory, then serves the JSON "
           "API, /metrics\n"
           "    and the dashboard.  Runs in the foreground, logs to stderr and "
           "stops\n"
           "    cleanly on SIGTERM or SIGINT.  A write is acknowledged (201) "
           "only after\n"
           "    its WAL record is on disk.  Every option can also be set by "
           "the\n"
           "    environment variable shown; a flag overrides the variable.\n"
           "\n"
           "OPTIONS\n",
           prog);
    for (size_t i = 0; i < NOPTS; i++) {
        printf("    --%s=%s\n        %s\n        env: %s\n", opts[i].flag,
               opts[i].metavar, opts[i].help, opts[i].env);
    }
    printf("    -h, --help\n        print this help and exit\n"
           "    -V, --version\n        print the version and exit\n"
           "\n"
           "EXIT STATUS\n"
           "    0 clean shutdown, 1 startup or runtime failure (one line on "
           "stderr\n"
           "    names the cause), 2 invalid configuration.\n"
           "\n"
           "SEE ALSO\n"
           "    docs/api.md, stemedb-fsck(1), stemedb-backup(1)\n");
}
