/*
 * db_int.h - the sdb_db handle, shared by db.c (open, recovery, writer
 * thread, checkpoints) and query.c (reads).  Not installed.
 *
 * States:  OPENING --recovery ok--> WRITABLE --write/sync error--> READ_ONLY
 *          WRITABLE/READ_ONLY --sdb_db_close--> CLOSED
 * READ_ONLY is final for the handle: writes get SDB_EREADONLY, reads go on
 * up to the last durable LSN; reopening replays the WAL.
 *
 * Locks, in order: q_lock (request queue), ix_lock (indexes: readers
 * shared, the writer thread exclusive), the segment store's and WAL's own
 * mutexes, stats_lock.  Callbacks run with no lock held.
 */
#ifndef SDB_DB_INT_H
#define SDB_DB_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "index.h"
#include "io.h"
#include "meta.h"
#include "model.h"
#include "segment.h"
#include "wal.h"

#define SDB_FSYNC_BUCKETS 12

struct wreq;
struct sdb_textcache;

struct sdb_db {
    sdb_options opt;
    char *data_dir, *wal_dir, *db_dir, *idx_dir, *archive_dir;
    const sdb_io *io;
    int lock_fd;
    struct sdb_meta meta; /* as last written */
    struct sdb_wal *wal;
    struct sdb_segstore *ss;
    struct sdb_index *ix; /* protected by ix_lock */
    pthread_rwlock_t ix_lock;
    /* rendered records for queries (query.c), created on first use */
    _Atomic(struct sdb_textcache *) tcache;
    _Atomic uint64_t visible_lsn; /* highest durable, applied LSN */
    atomic_bool read_only;
    atomic_int read_only_errno;
    int64_t start_us;

    /* writer thread only */
    uint64_t next_lsn;
    int64_t last_ts;
    uint64_t rng;
    uint64_t wal_bytes_since_ckpt;
    uint64_t last_ckpt_ms;

    pthread_mutex_t q_lock; /* protects the queue and the flags below */
    pthread_cond_t q_cond;
    struct wreq *q_head, *q_tail;
    bool stopping;
    bool writer_running;
    pthread_t writer;

    pthread_mutex_t arch_lock;
    pthread_cond_t arch_cond;
    bool arch_kick, arch_stop, archiver_running;
    pthread_t archiver;

    pthread_mutex_t stats_lock; /* protects st */
    sdb_stats st;
};

void sdb_db_log(const struct sdb_db *db, sdb_log_level level, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));

/* Thread entry points and helpers shared by open.c and db.c. */
void *sdb_db_writer_main(void *arg);
void *sdb_db_archiver_main(void *arg);
void sdb_db_kick_archiver(struct sdb_db *db);
/* Checkpoint from the calling thread (writer stopped or writer thread). */
int sdb_db_checkpoint_now(struct sdb_db *db);

/* Read and decode the record of entry pos (caller holds ix_lock shared). */
int sdb_db_read_entry(struct sdb_db *db, uint32_t pos,
                      struct sdb_assertion *out);

#endif
