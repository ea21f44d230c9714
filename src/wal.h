/*
 * wal.h - the write-ahead log: segment files in wal/, framing, group-commit
 * writes, recovery scan, segment switch and archiving.
 *
 * Segment file wal/segment-<seq as 16 hex>.wal (docs/format.md, "WAL"):
 *
 *   header, 64 bytes, little-endian
 *     0  8  magic "STMDBWAL"
 *     8  4  format version (1)
 *    12  4  header size (64)
 *    16  8  store id
 *    24  8  segment sequence number (matches the file name)
 *    32  8  first LSN this segment may hold
 *    40  8  creation time, µs since the epoch
 *    48  8  reserved, zero
 *    56  8  XXH3-64 of bytes 0..55, seed 0
 *   records, back to back from offset 64; one record per group commit:
 *     0  4  magic 0x52444D53 ("SMDR")
 *     4  1  type (1 = batch of records)
 *     5  3  reserved, zero
 *     8  4  payload length P (1 .. SDB_WAL_MAX_PAYLOAD)
 *    12  4  count N of msgpack records in the payload
 *    16  8  LSN of the first record; the payload holds LSNs lsn .. lsn+N-1
 *    24  8  XXH3-64 of (bytes 0..23 ++ payload), seed = sdb_wal_seed()
 *    32  P  payload: N msgpack records (codec.h)
 *   then zeros (the file is preallocated) up to the file size.
 *
 * The end of the log is the first record that fails magic, length,
 * checksum or LSN continuity.  Only in the newest segment, and only when no
 * valid record follows it, is that a torn tail: it is zeroed and the log
 * goes on.  Anything else is corruption and stops the open.
 *
 * Threads: one writer thread calls append/switch; the archiver thread only
 * copies sealed segments; the segment list is protected by wal->lock.
 */
#ifndef SDB_WAL_H
#define SDB_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

#define SDB_WAL_HEADER_SIZE 64
#define SDB_WAL_REC_HEADER  32
#define SDB_WAL_MAX_PAYLOAD (256u << 20)
#define SDB_WAL_REC_MAGIC   0x52444D53u
#define SDB_WAL_VERSION     1

struct sdb_wal;

struct sdb_wal_config {
    const sdb_io *io;
    const char *dir;         /* wal/ */
    const char *archive_dir; /* NULL: none */
    uint64_t store_id;
    uint64_t segment_bytes; /* preallocation size */
    void (*log)(void *arg, int level, const char *msg);
    void *log_arg;
};

/*
 * A valid record found by the recovery scan.  payload is borrowed: valid
 * only during the callback.
 */
typedef int (*sdb_wal_record_fn)(void *arg, uint64_t lsn, uint32_t count,
                                 const unsigned char *payload, size_t len);

/*
 * Open wal/, check every segment header, scan every record in order and
 * call fn for each record holding any LSN > after_lsn.  Zeroes a torn tail
 * of the newest segment unless read_only.  On corruption returns
 * SDB_ECORRUPT with err naming the file and offset.  *out_last_lsn gets the
 * last valid LSN (after_lsn if the log holds nothing newer).
 */
int sdb_wal_open(const struct sdb_wal_config *cfg, bool read_only,
                 uint64_t after_lsn, sdb_wal_record_fn fn, void *arg,
                 struct sdb_wal **out, uint64_t *out_last_lsn, sdb_error *err);
void sdb_wal_close(struct sdb_wal *wal);

/*
 * Start a new segment whose first LSN is next_lsn (creates, preallocates,
 * writes and syncs the header, fsyncs wal/).  The previous one is sealed
 * and queued for archiving.
 */
int sdb_wal_rotate(struct sdb_wal *wal, uint64_t next_lsn);

/*
 * Write one record (lsn, count, payload) to the active segment and
 * fdatasync it.  Switches first if the segment is full.  Returns 0 only if
 * the bytes are durable; any error is final (the caller goes read-only).
 * *out_sync_ns gets the fdatasync duration.
 */
int sdb_wal_append(struct sdb_wal *wal, uint64_t lsn, uint32_t count,
                   const void *payload, size_t len, uint64_t *out_sync_ns);

/* Bytes used in the active segment and its age in ms (0 if empty). */
uint64_t sdb_wal_active_used(struct sdb_wal *wal);
uint64_t sdb_wal_active_age_ms(struct sdb_wal *wal);

/*
 * Delete sealed segments whose every LSN is <= lsn and that are archived
 * (or no archive is configured); fsync wal/.  Returns segments removed.
 */
int sdb_wal_recycle(struct sdb_wal *wal, uint64_t lsn);

/*
 * Copy sealed, unarchived segments to the archive dir (tmp, fsync, rename,
 * fsync dir).  Called by the archiver thread; returns the number copied or
 * a negative code.
 */
int sdb_wal_archive_pending(struct sdb_wal *wal);

struct sdb_wal_stats {
    uint64_t segments;
    uint64_t archived;
    uint64_t archive_failures;
    uint64_t bytes_written;
};
void sdb_wal_get_stats(struct sdb_wal *wal, struct sdb_wal_stats *out);

/* Segment file name for a sequence number: "segment-%016llx.wal". */
void sdb_wal_segment_name(uint64_t seq, char out[40]);

/*
 * Check one segment header buffer (64 bytes); fill seq, store id, first
 * LSN.  Exposed for fsck.
 */
int sdb_wal_parse_header(const unsigned char *h, uint64_t *seq,
                         uint64_t *store_id, uint64_t *first_lsn);
/*
 * Validate the record at buf[off..len): 1 if a complete valid record (its
 * total size in *rec_len, lsn and count filled), 0 if not.
 */
int sdb_wal_check_record(const unsigned char *buf, size_t len, size_t off,
                         uint64_t seed, size_t *rec_len, uint64_t *lsn,
                         uint32_t *count);
/* The checksum seed of a segment: store id ^ (seq * 0x9e3779b97f4a7c15). */
uint64_t sdb_wal_seed(uint64_t store_id, uint64_t seq);

#endif
