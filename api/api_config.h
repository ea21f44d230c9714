/*
 * api_config.h - the configuration of stemedb-api: defaults, environment
 * variables (STEMEDB_*) and command-line flags, in that order of precedence.
 *
 * Owns only parsing and validation; it never opens files or sockets.
 * Implements DESIGN.md sections 3 and 8; docs/api.md has the full table and
 * .env.example lists every variable.
 */
#ifndef API_CONFIG_H
#define API_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_DEFAULT_BIND      "127.0.0.1:18180"
#define API_DEFAULT_DASHBOARD "127.0.0.1:18188"
#define API_DEFAULT_DATA_DIR  "data"

struct api_config {
    /* strings are owned by the config (api_config_release frees them) */
    char *bind_addr;      /* host:port, [v6]:port */
    char *dashboard_addr; /* "" or "off": no dashboard listener */
    char *data_dir;
    char *wal_dir;         /* NULL: data_dir/wal */
    char *db_dir;          /* NULL: data_dir/db */
    char *wal_archive_dir; /* NULL: no archive */
    char *tls_cert;
    char *tls_key;
    char *token_file;               /* NULL: no token required */
    char *backup_status_file;       /* NULL: data_dir/backup-status.json */
    unsigned wal_segment_timeout_s; /* 0: the engine's default */
    bool tls_enabled;
    bool meter_enabled;
    double rl_write_rps; /* 0 disables the write limiter */
    double rl_write_burst;
    double rl_read_rps; /* 0 disables the read limiter */
    double rl_read_burst;
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned connection_timeout_s;
    unsigned threads; /* 0: number of CPUs, clamped to 2..4 */
    size_t max_body_bytes;
    unsigned retry_after_s; /* Retry-After sent with 503 while read-only */
    int log_level;          /* sdb_log_level */
};

/* Outcome of api_config_parse beyond success. */
enum api_config_result {
    API_CONFIG_OK = 0,
    API_CONFIG_EXIT_OK = 1,    /* --help or --version printed: exit 0 */
    API_CONFIG_EXIT_USAGE = 2, /* bad value or flag, message printed */
};

/* Fill *cfg with the built-in defaults (allocates the default strings). */
int api_config_init(struct api_config *cfg);

/*
 * Apply the environment, then argv, on top of the defaults already in *cfg.
 * Prints --help/--version output to stdout and problems to stderr (one line
 * naming the variable or flag).  Returns an api_config_result.
 */
int api_config_parse(struct api_config *cfg, int argc, char **argv);

/* Free the strings owned by *cfg. */
void api_config_release(struct api_config *cfg);

/* Print the man-page-style usage to stdout. */
void api_config_usage(const char *prog);

#endif
