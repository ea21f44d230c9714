/*
 * stemedb.h - the public interface of libstemedb, the StemeDB engine.
 *
 * An sdb_db is one open data directory: a write-ahead log with group commit,
 * msgpack segment files in a concept tree, a checksum index and in-memory
 * indexes.  Adapters (the HTTP server, the FUSE view, the tools) include only
 * this header.  Requests and results are JSON documents (jansson json_t)
 * shaped exactly as the HTTP API documents them (docs/api.md), so every
 * adapter validates and answers the same way.
 *
 * Errors: every function returns int: 0 on success, a negative SDB_E* code
 * otherwise (or -errno passed through from the OS).  Functions that take an
 * sdb_error * fill it with a code, a message and the offending field.
 *
 * Threads: all functions may be called from any thread once sdb_db_open has
 * returned, except sdb_db_close, which must not race with any other call.
 */
#ifndef STEMEDB_H
#define STEMEDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SDB_API __attribute__((visibility("default")))
#else
#define SDB_API
#endif

#define SDB_VERSION "0.1.0"

/*
 * The error space: name, value, errno for FUSE, HTTP status, text.
 * Codes pass through -errno values from the OS unchanged.
 */
#define SDB_ERR_MAP(X)                                                         \
    X(INVAL, -1001, EINVAL, 400, "invalid input")                              \
    X(NOTFOUND, -1002, ENOENT, 404, "not found")                               \
    X(CORRUPT, -1003, EIO, 500, "stored data failed verification")            \
    X(READONLY, -1004, EROFS, 503, "store is read-only after an I/O failure")  \
    X(LOCKED, -1005, EBUSY, 409, "data directory is locked by another process") \
    X(NOMEM, -1006, ENOMEM, 500, "out of memory")                              \
    X(TOOBIG, -1007, EFBIG, 413, "input exceeds a size limit")                 \
    X(VERSION, -1008, EPROTO, 500, "unsupported on-disk format version")      \
    X(CLOSED, -1009, ESHUTDOWN, 503, "store is closing")                       \
    X(IO, -1010, EIO, 500, "I/O error")

enum sdb_err {
#define SDB_ERR_ENUM(name, value, eno, http, text) SDB_E##name = value,
    SDB_ERR_MAP(SDB_ERR_ENUM)
#undef SDB_ERR_ENUM
};

/* Text for any code (SDB_E* or -errno); never NULL. */
SDB_API const char *sdb_strerror(int rc);
/* Stable machine name for any code, e.g. "invalid_input", "not_found". */
SDB_API const char *sdb_err_name(int rc);
/* Positive errno for a code (for fuse replies). */
SDB_API int sdb_err_to_errno(int rc);
/* HTTP status for a code. */
SDB_API int sdb_err_to_http(int rc);

/* A rejection: code, human message, and the offending field ("" if none). */
typedef struct sdb_error {
    int code;
    char message[256];
    char field[128];
} sdb_error;

/* ---- limits (docs/format.md lists them all) ---- */
#define SDB_MAX_PATH_LEN       1024 /* bytes in a concept_path or source */
#define SDB_MAX_PATH_DEPTH     32   /* components in a concept_path */
#define SDB_MAX_COMPONENT_LEN  200  /* bytes in one component */
#define SDB_MAX_PREDICATE_LEN  256
#define SDB_MAX_VALUE_BYTES    65536 /* msgpack-encoded value */
#define SDB_MAX_VALUE_DEPTH    32
#define SDB_MAX_DERIVED        64
#define SDB_MAX_BATCH          1000
#define SDB_MAX_REASON_LEN     1024
#define SDB_MAX_QUERY_LIMIT    10000
#define SDB_DEFAULT_QUERY_LIMIT 100

/* ---- I/O seam (src/io.h describes the table) ---- */
typedef struct sdb_io sdb_io;
/* The default POSIX backend. */
SDB_API const sdb_io *sdb_io_posix(void);

/* ---- opening ---- */
typedef enum sdb_log_level {
    SDB_LOG_ERROR = 0,
    SDB_LOG_WARN = 1,
    SDB_LOG_INFO = 2,
    SDB_LOG_DEBUG = 3
} sdb_log_level;

typedef void (*sdb_log_fn)(void *arg, sdb_log_level level, const char *msg);

typedef enum sdb_open_flags {
    SDB_OPEN_CREATE = 1 << 0,   /* create the directory layout if missing */
    SDB_OPEN_READONLY = 1 << 1, /* no LOCK, no writes, no recovery writes */
} sdb_open_flags;

typedef struct sdb_options {
    const char *data_dir;        /* required */
    const char *wal_dir;         /* NULL: data_dir/wal */
    const char *db_dir;          /* NULL: data_dir/db */
    const char *wal_archive_dir; /* NULL: no archive */
    unsigned flags;              /* sdb_open_flags */
    uint64_t wal_segment_bytes;  /* 0: 64 MiB */
    unsigned wal_segment_timeout_ms; /* 0: 60 s; switch a non-empty segment */
    unsigned checkpoint_interval_ms; /* 0: 30 s */
    uint64_t checkpoint_wal_bytes;   /* 0: 256 MiB of WAL since checkpoint */
    unsigned fd_cache_size;          /* 0: 256 open segment files */
    const sdb_io *io;                /* NULL: sdb_io_posix() */
    sdb_log_fn log;                  /* NULL: stderr */
    void *log_arg;
    sdb_log_level log_level;         /* messages above it are dropped */
} sdb_options;

typedef struct sdb_db sdb_db;

/* Fill *opt with defaults (all zero / NULL) and data_dir. */
SDB_API void sdb_options_init(sdb_options *opt, const char *data_dir);

/*
 * Open (and recover) a data directory.  On failure *out is NULL and err, if
 * not NULL, names the cause (file and offset for corruption, the holder's
 * PID for SDB_ELOCKED).  Logs "Starting WAL recovery...", "Replayed N
 * entries from WAL", "Rebuilding indexes..." as it goes.
 */
SDB_API int sdb_db_open(const sdb_options *opt, sdb_db **out, sdb_error *err);

/*
 * Stop the writer after it has finished every queued request (each gets its
 * callback), checkpoint, release the LOCK and free everything.  NULL is ok.
 */
SDB_API int sdb_db_close(sdb_db *db);

/* ---- writing (asynchronous, group committed) ---- */

/*
 * Called exactly once per accepted request, from the writer thread, after
 * the WAL batch holding it is fdatasync'd (rc == 0, result is the JSON
 * response body) or has failed (rc < 0, result is NULL, err says why).
 * result and err are borrowed: valid only during the call.
 * The callback must not call back into the db's write functions.
 */
typedef void (*sdb_done_fn)(void *arg, int rc, json_t *result,
                            const sdb_error *err);

/*
 * Validate and queue an assertion request: one assertion object, or
 * {"assertions":[...]} (all or nothing).  Returns 0 if queued (done will be
 * called); otherwise the request was rejected, err says why and done is
 * never called.  Never blocks on I/O.  req is borrowed.
 */
SDB_API int sdb_assert(sdb_db *db, json_t *req, sdb_done_fn done, void *arg,
                       sdb_error *err);

/* Queue a retraction request (see docs/api.md); same contract as sdb_assert. */
SDB_API int sdb_retract(sdb_db *db, json_t *req, sdb_done_fn done, void *arg,
                        sdb_error *err);

/* Blocking wrappers: wait for the durable outcome; *out is a new reference. */
SDB_API int sdb_assert_sync(sdb_db *db, json_t *req, json_t **out,
                            sdb_error *err);
SDB_API int sdb_retract_sync(sdb_db *db, json_t *req, json_t **out,
                             sdb_error *err);

/* ---- reading (only durable data is ever visible) ---- */

/* Run a query request; *out is a new reference {assertions,count,next_cursor}. */
SDB_API int sdb_query(sdb_db *db, json_t *req, json_t **out, sdb_error *err);

/* One assertion by id, with "retracted" (and "retracted_by"/"retracted_at"). */
SDB_API int sdb_get(sdb_db *db, const char *id, json_t **out, sdb_error *err);

/* Direct children of a concept path ("" for the roots):
 * {"prefix":..., "concepts":[{"name","path","assertion_count","children"}]} */
SDB_API int sdb_concepts(sdb_db *db, const char *prefix, json_t **out,
                         sdb_error *err);

/* ---- state ---- */
typedef struct sdb_stats {
    bool read_only;           /* a write or sync failed: writes refused */
    int read_only_errno;      /* the errno that caused it */
    uint64_t assertion_count; /* durable assertions, retracted included */
    uint64_t retracted_count; /* durable assertions currently retracted */
    uint64_t retraction_count;
    uint64_t concept_count;
    uint64_t last_lsn;       /* highest durable LSN */
    uint64_t checkpoint_lsn;
    uint64_t wal_segments;   /* WAL segment files currently in wal/ */
    uint64_t wal_bytes_written;
    uint64_t wal_segments_archived;
    uint64_t restarts;       /* opens of this data directory */
    uint64_t replayed_on_open;
    uint64_t fsync_count;
    double fsync_seconds_sum;
    /* fdatasync latency histogram, cumulative counts per upper bound */
    uint64_t fsync_buckets[12];
    uint64_t group_commits;   /* WAL batches written */
    uint64_t group_commit_records; /* records in them */
    uint64_t group_commit_max;
    uint64_t checkpoints;
    int64_t last_checkpoint_unix;
} sdb_stats;

/* Upper bounds (seconds) of sdb_stats.fsync_buckets; the last is +Inf. */
SDB_API const double *sdb_fsync_bucket_bounds(size_t *n);

SDB_API void sdb_db_stats(sdb_db *db, sdb_stats *out);

/* Force a checkpoint now (blocks until done). */
SDB_API int sdb_checkpoint(sdb_db *db);

/* Force a WAL segment switch now (blocks until done). */
SDB_API int sdb_wal_switch(sdb_db *db);

/* The directories in use (borrowed; valid until close). */
SDB_API const char *sdb_db_data_dir(const sdb_db *db);
SDB_API const char *sdb_db_wal_dir(const sdb_db *db);
SDB_API const char *sdb_db_db_dir(const sdb_db *db);

/* ---- helpers shared by adapters ---- */

/* Format microseconds since the epoch as RFC 3339 UTC with 6 decimals. */
SDB_API void sdb_time_format(int64_t us, char out[32]);
/* Parse RFC 3339 (any offset, optional fraction) to µs; SDB_EINVAL if bad. */
SDB_API int sdb_time_parse(const char *s, int64_t *out_us);

/*
 * Validate a concept path (as the API does) and map it to its directory
 * below db/, relative, with every component escaped: never absolute, never
 * containing "." or "..".  out must hold SDB_MAX_PATH_LEN * 3 + 1 bytes.
 */
SDB_API int sdb_concept_to_dir(const char *path, char *out, size_t cap,
                               sdb_error *err);
/* Reverse: an escaped directory (relative to db/) back to its concept path. */
SDB_API int sdb_dir_to_concept(const char *dir, char *out, size_t cap);

/* ---- verification (stemedb-fsck): src/verify.c ---- */

/* ---- read-only views of a data directory (stemedb-fuse): src/view.c ---- */

/* ---- backup, restore and point-in-time recovery: src/backup.c ---- */

#ifdef __cplusplus
}
#endif
#endif /* STEMEDB_H */
