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
    X(CORRUPT, -1003, EIO, 500, "stored data failed verification")             \
    X(READONLY, -1004, EROFS, 503, "store is read-only after an I/O failure")  \
    X(LOCKED, -1005, EBUSY, 409,                                               \
      "data directory is locked by another process")                           \
    X(NOMEM, -1006, ENOMEM, 500, "out of memory")                              \
    X(TOOBIG, -1007, EFBIG, 413, "input exceeds a size limit")                 \
    X(VERSION, -1008, EPROTO, 500, "unsupported on-disk format version")       \
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
#define SDB_MAX_PATH_LEN        1024 /* bytes in a concept_path or source */
#define SDB_MAX_PATH_DEPTH      32   /* components in a concept_path */
#define SDB_MAX_COMPONENT_LEN   200  /* bytes in one component */
#define SDB_MAX_PREDICATE_LEN   256
#define SDB_MAX_VALUE_BYTES     65536 /* msgpack-encoded value */
#define SDB_MAX_VALUE_DEPTH     32
#define SDB_MAX_DERIVED         64
#define SDB_MAX_BATCH           1000
#define SDB_MAX_REASON_LEN      1024
#define SDB_MAX_QUERY_LIMIT     10000
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
    const char *data_dir;            /* required */
    const char *wal_dir;             /* NULL: data_dir/wal */
    const char *db_dir;              /* NULL: data_dir/db */
    const char *wal_archive_dir;     /* NULL: no archive */
    unsigned flags;                  /* sdb_open_flags */
    uint64_t wal_segment_bytes;      /* 0: 64 MiB */
    unsigned wal_segment_timeout_ms; /* 0: 60 s; switch a non-empty segment */
    unsigned checkpoint_interval_ms; /* 0: 30 s */
    uint64_t checkpoint_wal_bytes;   /* 0: 256 MiB of WAL since checkpoint */
    unsigned fd_cache_size;          /* 0: 256 open segment files */
    const sdb_io *io;                /* NULL: sdb_io_posix() */
    sdb_log_fn log;                  /* NULL: stderr */
    void *log_arg;
    sdb_log_level log_level; /* messages above it are dropped */
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

/*
 * As sdb_done_fn, with the result already encoded: text is the JSON text
 * json_dumps(result, JSON_COMPACT) would give (len bytes plus a NUL),
 * borrowed for the call; NULL when rc < 0.
 */
typedef void (*sdb_done_text_fn)(void *arg, int rc, const char *text,
                                 size_t len, const sdb_error *err);

/*
 * sdb_assert with the result handed over as text: the writer appends each
 * record's {id,timestamp,lsn} to one buffer instead of building JSON
 * objects for the caller to encode.  Same contract otherwise.
 */
SDB_API int sdb_assert_text(sdb_db *db, json_t *req, sdb_done_text_fn done,
                            void *arg, sdb_error *err);

/* Queue a retraction request (see docs/api.md); same contract as sdb_assert. */
SDB_API int sdb_retract(sdb_db *db, json_t *req, sdb_done_fn done, void *arg,
                        sdb_error *err);

/* Blocking wrappers: wait for the durable outcome; *out is a new reference. */
SDB_API int sdb_assert_sync(sdb_db *db, json_t *req, json_t **out,
                            sdb_error *err);
SDB_API int sdb_retract_sync(sdb_db *db, json_t *req, json_t **out,
                             sdb_error *err);

/* ---- reading (only durable data is ever visible) ---- */

/* Run a query request; *out is a new reference {assertions,count,next_cursor}.
 */
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
    uint64_t last_lsn; /* highest durable LSN */
    uint64_t checkpoint_lsn;
    uint64_t wal_segments; /* WAL segment files currently in wal/ */
    uint64_t wal_bytes_written;
    uint64_t wal_segments_archived;
    uint64_t restarts; /* opens of this data directory */
    uint64_t replayed_on_open;
    uint64_t fsync_count;
    double fsync_seconds_sum;
    /* fdatasync latency histogram, cumulative counts per upper bound */
    uint64_t fsync_buckets[12];
    uint64_t group_commits;        /* WAL batches written */
    uint64_t group_commit_records; /* records in them */
    uint64_t group_commit_max;
    uint64_t checkpoints;
    int64_t last_checkpoint_unix;
} sdb_stats;

/* Upper bounds (seconds) of sdb_stats.fsync_buckets; the last is +Inf. */
SDB_API const double *sdb_fsync_bucket_bounds(size_t *n);

SDB_API void sdb_db_stats(sdb_db *db, sdb_stats *out);
/* Just sdb_stats.read_only (and read_only_errno into *out_errno unless
 * NULL), without the locks sdb_db_stats takes: for a check on every
 * write request. */
SDB_API bool sdb_db_read_only(sdb_db *db, int *out_errno);

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

/*
 * Problem severities.  ERROR: stored data failed verification.  WARN: a
 * state a crash leaves behind or a stray file; the server copes, fsck can
 * clean it up.  INFO: worth knowing, never a failure.  ERROR and WARN
 * problems left unrepaired make stemedb-fsck exit 4.
 */
typedef enum sdb_fsck_severity {
    SDB_FSCK_INFO = 0,
    SDB_FSCK_WARN = 1,
    SDB_FSCK_ERROR = 2
} sdb_fsck_severity;

/*
 * The catalogue of problem ids (docs/fsck.md keeps the same list, with the
 * meaning and the repair of each): X(ENUM, stable name, severity).
 */
#define SDB_FSCK_MSG(X)                                                        \
    X(BAD_METADATA, badMetadata, ERROR)                                        \
    X(BAD_CHECKSUM, badChecksum, ERROR)                                        \
    X(BAD_MAGIC, badMagic, ERROR)                                              \
    X(BAD_VERSION, badVersion, ERROR)                                          \
    X(BAD_HEADER, badHeader, ERROR)                                            \
    X(BAD_RECORD, badRecord, ERROR)                                            \
    X(BAD_NAME, badName, ERROR)                                                \
    X(TRAILING_GARBAGE, trailingGarbage, ERROR)                                \
    X(LSN_GAP, lsnGap, ERROR)                                                  \
    X(DUPLICATE_RECORD, duplicateRecord, ERROR)                                \
    X(STALE_SEGMENT, staleSegment, ERROR)                                      \
    X(MISPLACED_FILE, misplacedFile, ERROR)                                    \
    X(MISSING_FILE, missingFile, ERROR)                                        \
    X(INDEX_MISMATCH, indexMismatch, ERROR)                                    \
    X(WRONG_CONCEPT, wrongConcept, ERROR)                                      \
    X(MISSING_RECORD, missingRecord, ERROR)                                    \
    X(RECORD_MISMATCH, recordMismatch, ERROR)                                  \
    X(METADATA_MISMATCH, metadataMismatch, ERROR)                              \
    X(COUNT_MISMATCH, countMismatch, ERROR)                                    \
    X(SNAPSHOT_MISMATCH, snapshotMismatch, ERROR)                              \
    X(TORN_TAIL, tornTail, WARN)                                               \
    X(WAL_TRUNCATED, walTruncated, WARN)                                       \
    X(STALE_SNAPSHOT, staleSnapshot, WARN)                                     \
    X(ORPHAN_FILE, orphanFile, WARN)                                           \
    X(RECORD_LOST, recordLost, WARN)                                           \
    X(NO_SNAPSHOT, noSnapshot, INFO)                                           \
    X(UNKNOWN_FILE, unknownFile, INFO)                                         \
    X(LIVE_STORE, liveStore, INFO)

typedef enum sdb_fsck_msg_id {
#define SDB_FSCK_ENUM(id, name, sev) SDB_FSCK_##id,
    SDB_FSCK_MSG(SDB_FSCK_ENUM)
#undef SDB_FSCK_ENUM
        SDB_FSCK_MSG_COUNT
} sdb_fsck_msg_id;

/* Stable name ("badChecksum") and default severity of an id; NULL/-1 if
 * id is out of range. */
SDB_API const char *sdb_fsck_msg_name(int id);
SDB_API int sdb_fsck_msg_severity(int id);

/* One problem.  Every pointer is borrowed: valid only during the callback. */
typedef struct sdb_fsck_problem {
    int id;           /* sdb_fsck_msg_id */
    const char *name; /* its stable name */
    sdb_fsck_severity severity;
    const char *file;    /* relative to DIR ("wal/segment-…"); "" */
    int64_t offset;      /* byte offset in file; -1 if none */
    const char *message; /* one line, no trailing newline */
    bool repaired;       /* fixed by this run's repair */
} sdb_fsck_problem;

/* What a run found and did; filled as it goes. */
typedef struct sdb_fsck_report {
    uint64_t errors, warnings, infos; /* problems found, by severity */
    uint64_t repaired;                /* of those, fixed by this run */
    uint64_t unrepaired;              /* ERROR/WARN problems left */
    uint64_t files;                   /* files checked */
    uint64_t bytes;                   /* bytes checked */
    uint64_t bytes_total;             /* bytes to check (for progress) */
    uint64_t wal_records;             /* msgpack records in the WAL */
    uint64_t records;                 /* records in concept segments */
    uint64_t records_lost;            /* dropped by a repair (reported) */
    uint64_t checkpoint_lsn, last_lsn;
    long lock_pid;  /* PID in DIR/LOCK when held by another process */
    bool cancelled; /* the callback asked to stop */
} sdb_fsck_report;

/*
 * Called once per problem (p != NULL) after any repair, in the order found,
 * and with p == NULL as a progress tick after each file checked.  rep is
 * the report so far.  Return nonzero to cancel the run.
 */
typedef int (*sdb_fsck_fn)(void *arg, const sdb_fsck_problem *p,
                           const sdb_fsck_report *rep);

typedef enum sdb_fsck_flags {
    SDB_FSCK_REPAIR_SAFE = 1 << 0, /* -p: torn tails, derived index */
    SDB_FSCK_REPAIR_ALL = 1 << 1,  /* -y: also lost+found, rewrites */
} sdb_fsck_flags;

/*
 * Check a data directory or a backup (metadata.json, wal/, db/) and report
 * every problem through fn.  Without repair flags nothing is written.  With
 * them DIR/LOCK is taken first (SDB_ELOCKED, rep->lock_pid set, if a live
 * process holds it); repairs never delete: replaced or unrecoverable bytes
 * move to DIR/lost+found/ with a note.  After repairing, the directory is
 * checked again and problems still present count as unrepaired.
 * Returns 0 when the check ran to the end (problems or not: see *rep),
 * -ECANCELED if fn cancelled it, another negative code for an operational
 * error (DIR unreadable, out of memory, an I/O error while repairing).
 * fn may be NULL; rep must not be.
 */
SDB_API int sdb_fsck(const char *dir, unsigned flags, sdb_fsck_fn fn, void *arg,
                     sdb_fsck_report *rep);

/* ---- read-only views of a data directory (stemedb-fuse): src/view.c ---- */

#include <time.h> /* struct timespec in sdb_view_stat */

/*
 * A view reads a data directory (live server, stopped, or a backup) without
 * locking or writing it.  A cut is one consistent moment of it: every file
 * is shown cut at its last committed, checksummed record, so copying every
 * file of one cut (in any order, at any later time) gives a directory that
 * opens with at least the assertions committed when the cut was taken
 * (src/view.c explains why; docs/fuse.md for operators).
 * Threads: all functions may be called from any thread; a view and its
 * cuts keep their caches behind one mutex.
 */
typedef struct sdb_view sdb_view;
typedef struct sdb_view_cut sdb_view_cut;

/* What a view shows for one path. */
typedef struct sdb_view_stat {
    bool is_dir;
    uint64_t ino;          /* the underlying file's st_ino */
    uint64_t size;         /* committed length in this cut (0 for dirs) */
    struct timespec mtime; /* stable while the cut length does not change */
    bool can_grow;         /* a later cut may show it longer or different */
    unsigned mode;         /* permission bits of the underlying file, as a
                              file (execute bits dropped) or directory */
    unsigned uid, gid;     /* owner of the underlying file */
} sdb_view_stat;

/* Called once per entry by sdb_view_list; name and st are borrowed.  A
 * non-zero return stops the listing and is returned. */
typedef int (*sdb_view_list_fn)(void *arg, const char *name,
                                const sdb_view_stat *st);

/* A view of data_dir (copied).  *out is freed with sdb_view_close. */
SDB_API int sdb_view_open(const char *data_dir, sdb_view **out);
/* Free the view; every cut of it must be unreferenced first.  NULL ok. */
SDB_API void sdb_view_close(sdb_view *v);

/*
 * Take a cut now: capture metadata.json, index.snap and the WAL files
 * (their fds are held, so files the server recycles stay readable) and
 * the last committed LSN.  live: skip that capture; only db/ paths are
 * shown, each segment at its whole valid prefix (for browsing).  *out has
 * one reference; SDB_EIO if the server kept checkpointing during 20 tries.
 */
SDB_API int sdb_view_cut_new(sdb_view *v, bool live, sdb_view_cut **out);
/* Another reference to c (returns c). */
SDB_API sdb_view_cut *sdb_view_cut_ref(sdb_view_cut *c);
/* Drop one reference; the last one closes the held fds.  NULL ok. */
SDB_API void sdb_view_cut_unref(sdb_view_cut *c);
/* The last committed LSN the cut shows (UINT64_MAX for a live cut). */
SDB_API uint64_t sdb_view_cut_lsn(const sdb_view_cut *c);
/*
 * The class of a cut: two cuts of one non-zero class show the same names,
 * sizes and bytes for every path, so either of them is a consistent copy
 * for a process that asked for the other (stemedb-fuse serves one cut per
 * class and lets the kernel cache what it showed).
 * Given only when the checkpoint had reached the last committed record at
 * the capture and nothing captured differs; 0 otherwise and for a live
 * cut (such a cut is only equal to itself).
 */
SDB_API uint64_t sdb_view_cut_class(const sdb_view_cut *c);
/*
 * Do the segment files of every concept directory cut c has looked at
 * still have the sizes and inodes they had at that first look?  false:
 * records were appended since, or (with the same WAL and metadata, so the
 * same class) the files were changed behind the server's back, e.g.
 * restored or truncated by hand; a new cut of c's class would then not
 * show what c shows.  Costs a few stats per directory looked at.
 */
SDB_API bool sdb_view_cut_unchanged(sdb_view_cut *c);
/*
 * Carry into cut c, taken after cut old, every directory below db/ that
 * nothing has changed in since old looked at it: old pinned it and showed
 * every record its files held, the files and the directory still have the
 * sizes, inodes, mtime and link count they had then, and each of its
 * subdirectories is carried too.  c then shows each of them, and all
 * below it, exactly as old did (a copy of c stays consistent: see
 * view.c), so stemedb-fuse can keep their cached listings.  *out is a
 * sorted array of "db/<escaped dir>" paths, *n_out of them; the caller
 * frees each and the array.  Costs a few stats per directory old pinned.
 */
SDB_API int sdb_view_cut_carry(sdb_view_cut *old, sdb_view_cut *c, char ***out,
                               size_t *n_out);

/*
 * Stat rel, a path relative to the data directory ("" is its root;
 * "metadata.json", "wal/segment-….wal", "db/<escaped dirs>/@seg-….idx").
 * SDB_ENOTFOUND for anything the cut does not show (LOCK, temp files,
 * files whose first bytes are not committed yet, names that are not
 * concept directories).
 */
SDB_API int sdb_view_stat_path(sdb_view_cut *c, const char *rel,
                               sdb_view_stat *out);
/* List directory rel of the cut: fn once per shown entry, any order. */
SDB_API int sdb_view_list(sdb_view_cut *c, const char *rel, sdb_view_list_fn fn,
                          void *arg);
/*
 * Open file rel of the cut for reading: *out_fd is a new read-only fd the
 * caller closes; read only [0, out->size) of it (the bytes past it are not
 * part of the cut).  The fd stays readable if the server deletes the file.
 */
SDB_API int sdb_view_open_file(sdb_view_cut *c, const char *rel, int *out_fd,
                               sdb_view_stat *out);
/* Convenience: the committed length of one file in a fresh cut. */
SDB_API int sdb_view_committed_length(const char *data_dir, const char *rel,
                                      uint64_t *out_len);

/*
 * The name shown for a concept directory: the unescaped component when it
 * is a plain file name (printable, no '%', not "."/"..", not starting with
 * '@', not "assertions.json"), else its escaped form (which always holds a
 * '%').  top: first component of its path.  SDB_EINVAL if escaped is not
 * a canonical concept directory name.
 */
SDB_API int sdb_view_shown_name(const char *escaped, bool top, char *out,
                                size_t cap);
/* Shown names joined by '/' back to a concept path; SDB_ENOTFOUND if no
 * concept is shown under that name. */
SDB_API int sdb_view_concept_resolve(const char *shown_path, char *out,
                                     size_t cap);
/*
 * The current (non-retracted) assertions stored at exactly concept_path,
 * newest (highest LSN) first, each as the API shows it ("retracted":
 * false included): {"concept_path","count","assertions":[...]}.  Reads the
 * segment files and db/@retractions (cached by file sizes).  SDB_ENOTFOUND
 * if the concept has no directory.  *out is a new reference.
 */
SDB_API int sdb_view_concept_json(sdb_view *v, const char *concept_path,
                                  json_t **out);
/* The same, pretty-printed with a final newline; *out is malloc'd. */
SDB_API int sdb_view_concept_text(sdb_view *v, const char *concept_path,
                                  char **out, size_t *out_len);
/* health.json: LOCK holder, metadata counts, WAL and snapshot LSNs. */
SDB_API int sdb_view_health(sdb_view *v, json_t **out);

/* ---- backup, restore and point-in-time recovery: src/backup.c ---- */

/*
 * A backup is a directory stemedb-backup-YYYYMMDD-HHMMSS/ holding wal/, db/,
 * store-metadata.json (the store's metadata.json at the backup) and
 * metadata.json: version, timestamp, assertion_count, wal_segment_count,
 * backup_type, lsn, store_id and a manifest of every other file (size and
 * checksum), itself checksummed (docs/operations/restore-from-backup.md).
 */
typedef struct sdb_backup_opts {
    const char *data_dir;         /* required: the store (server may run) */
    const char *dest;             /* required: the backups directory */
    const char *incremental_from; /* NULL, or a previous backup to share
                                     unchanged files with (hard links) */
    const sdb_io *io;             /* NULL: sdb_io_posix() */
} sdb_backup_opts;

/*
 * Take a consistent backup of a live or stopped store at an LSN: WAL
 * segments up to their last valid record, concept segments cut at that
 * LSN, written into a temporary directory, synced, the manifest written
 * last, then renamed into place (an interrupted backup never looks
 * complete).  *out (may be NULL) gets {path, lsn, assertion_count, files,
 * bytes, bytes_linked, backup_type, seconds}.  Does not touch the status
 * file (sdb_backup_record_status).
 */
SDB_API int sdb_backup_create(const sdb_backup_opts *o, json_t **out,
                              sdb_error *err);

/*
 * Verify a backup: manifest checksum, every file's presence, size and
 * checksum, no extra files, WAL continuity; with wal_archive, that the
 * archived segments after the backup have no gap; with trial_open, a
 * restore into a scratch directory beside the backup that must open and
 * hold assertion_count assertions.  Returns 0 if clean, SDB_ECORRUPT if
 * problems were found (listed in (*out)["problems"]), another code if the
 * check itself failed.
 */
SDB_API int sdb_backup_verify(const char *backup, const char *wal_archive,
                              bool trial_open, json_t **out, sdb_error *err);

typedef struct sdb_restore_opts {
    const char *backup;      /* required */
    const char *data_dir;    /* required: replaced (renamed aside) */
    const char *wal_archive; /* NULL: only the backup's own WAL */
    bool has_until_lsn;      /* stop after this LSN */
    uint64_t until_lsn;
    bool has_until_time; /* stop after the last record at or before */
    int64_t until_us;
    bool dry_run;   /* validate and report the plan only */
    sdb_log_fn log; /* for the trial open; NULL: silent */
    void *log_arg;
} sdb_restore_opts;

/*
 * Restore a backup into DATA_DIR.restore-TIMESTAMP, add archived WAL
 * segments that continue it (a gap fails the restore), cut the WAL exactly
 * at the target, open the result (replay + checkpoint), then rename an
 * existing DATA_DIR to DATA_DIR.backup.TIMESTAMP (never deleted) and the
 * restored directory into place.  Refuses while DATA_DIR is locked by a
 * running server.  *out gets the plan and the counts reached.
 */
SDB_API int sdb_restore(const sdb_restore_opts *o, json_t **out,
                        sdb_error *err);

/*
 * Keep the newest `keep` complete backups in dest, remove older ones, and
 * remove archived WAL segments that every kept backup is past (a segment
 * is removed only if its successor exists and its last LSN is at or below
 * the oldest kept backup's LSN).  dry_run: report only.
 */
SDB_API int sdb_backup_expire(const char *dest, unsigned keep,
                              const char *wal_archive, bool dry_run,
                              json_t **out, sdb_error *err);

/*
 * Update DATA_DIR/backup-status.json atomically: on success
 * last_success_unix, last_backup and last_lsn; on failure failures_total
 * and last_failure_unix.  The HTTP server exports it in /metrics.
 */
SDB_API int sdb_backup_record_status(const char *data_dir, bool ok,
                                     const char *backup_path, uint64_t lsn);

/* ---- query results as text (stemedb-api's read path): src/query.c ---- */

/*
 * sdb_query, but the result comes back as text: exactly the bytes of
 * json_dumps(result, JSON_COMPACT) followed by a newline, written straight
 * from the records without building a json_t tree (the consensus lens
 * still builds one).  *out (NUL-terminated, *out_len bytes without the
 * NUL) is malloc'd and the caller frees it; NULL on error.  Errors as
 * sdb_query.
 */
SDB_API int sdb_query_text(sdb_db *db, json_t *req, char **out, size_t *out_len,
                           sdb_error *err);

#ifdef __cplusplus
}
#endif
#endif /* STEMEDB_H */
