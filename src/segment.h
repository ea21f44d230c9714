/*
 * segment.h - the concept tree on disk: per-concept append-only msgpack
 * segment files, their checksum index files, and a bounded cache of open
 * file descriptors (a million concepts never exhaust fds).
 *
 * A concept "a/b" lives in db/a/b/ (components escaped by path.h):
 *   @seg-000001.msgpack   records (codec.h), back to back, nothing else
 *   @seg-000001.idx       64-byte header, then one 32-byte entry per record:
 *
 *   idx header                         idx entry
 *     0  8 magic "STMDBIDX"              0  8 LSN of the record
 *     8  4 format version (1)            8  8 offset in the .msgpack file
 *    12  4 header size (64)             16  4 length in bytes
 *    16  8 store id                     20  4 record type (codec.h)
 *    24  8 concept hash                 24  8 XXH3-64 of the record bytes,
 *    32  4 segment number                     seed = sdb_seg_seed(...)
 *    36 20 reserved, zero
 *    56  8 XXH3-64 of bytes 0..55
 *
 * The seed binds each record to its store, concept and segment, so a file
 * copied, swapped or misplaced fails verification.  Segment files are
 * written without fsync; sdb_segstore_sync makes them durable before a
 * checkpoint.  Threads: the writer appends; readers read; the writer's fd
 * cache is protected by its own mutex.  Readers never touch it: they use a
 * separate cache of read-only descriptors (readcache.h) with its own locks.
 */
#ifndef SDB_SEGMENT_H
#define SDB_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

#define SDB_IDX_HEADER_SIZE 64
#define SDB_IDX_ENTRY_SIZE  32
#define SDB_RETRACTIONS_DIR "@retractions"

/* Per-concept segment state; lives in the index's concept node. */
struct sdb_seginfo {
    char *dir;         /* escaped directory relative to db/; owned */
    uint64_t chash;    /* sdb_hash64(concept path) */
    uint32_t key;      /* cache key: the concept id */
    uint32_t segno;    /* active segment, 0 while no file exists */
    uint64_t data_len; /* bytes of the active .msgpack file */
    uint64_t idx_len;  /* bytes of the active .idx file */
};

/* Where a record is, and its checksum. */
struct sdb_loc {
    uint32_t segno;
    uint32_t off;
    uint32_t len;
    uint64_t hash;
};

struct sdb_segstore;

uint64_t sdb_seg_seed(uint64_t store_id, uint64_t chash, uint32_t segno);
void sdb_seg_file_names(uint32_t segno, char data[32], char idx[32]);

int sdb_segstore_new(const sdb_io *io, const char *db_dir, uint64_t store_id,
                     unsigned cache_size, uint64_t segment_limit,
                     struct sdb_segstore **out);
/* Close every cached fd without syncing. */
void sdb_segstore_free(struct sdb_segstore *ss);

/*
 * Append one record for the concept (creating its directories and files as
 * needed).  Not durable until sdb_segstore_sync.  Fills *out.
 */
int sdb_segstore_append(struct sdb_segstore *ss, struct sdb_seginfo *si,
                        uint64_t lsn, int type, const void *rec, size_t len,
                        struct sdb_loc *out);

/*
 * Read the record at loc into buf (loc->len bytes) and verify its
 * checksum; SDB_ECORRUPT (logged with file and offset) on a mismatch.
 */
int sdb_segstore_read(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                      const struct sdb_loc *loc, void *buf);

/*
 * Read len raw bytes at off of segment segno of the concept into buf, with
 * no checksum check (the caller verifies each record in it with
 * sdb_segstore_verify).  Uses the read-only descriptor cache, never the
 * writer's lock.  SDB_ECORRUPT (logged) if the file is too short.
 */
int sdb_segstore_read_span(struct sdb_segstore *ss,
                           const struct sdb_seginfo *si, uint32_t segno,
                           uint64_t off, size_t len, void *buf);

/*
 * Check the bytes of the record at loc (rec, loc->len bytes) against its
 * checksum: 0, or SDB_ECORRUPT logged with the file name and offset.
 */
int sdb_segstore_verify(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                        const struct sdb_loc *loc, const void *rec);

struct sdb_readcache_stats;
/* Counters of the read descriptor cache (zeros before the first read). */
void sdb_segstore_read_stats(struct sdb_segstore *ss,
                             struct sdb_readcache_stats *out);

/*
 * Write every buffered append to its file (no fsync).  Appends are kept in
 * memory per file until this, a sync, an eviction or 8 MiB of them, so a
 * group of records costs one pwrite per file touched.  The writer calls it
 * before it makes the group visible: readers (their own descriptors, see
 * sdb_segstore_read_span) only ever read records up to the visible LSN.
 * A failure is sticky: later syncs fail with it.
 */
int sdb_segstore_flush(struct sdb_segstore *ss);

/* Flush, then fdatasync every dirty file, fsync every directory with new
 * names. */
int sdb_segstore_sync(struct sdb_segstore *ss);

/*
 * Cut the concept's files back to *si (recovery, before re-applying WAL
 * records): truncate the active files, remove any later segment files.
 */
int sdb_segstore_reset_tail(struct sdb_segstore *ss,
                            const struct sdb_seginfo *si);

/*
 * Called per valid record by sdb_seg_scan; rec is borrowed.  Return < 0 to
 * fail the scan, > 0 to end it cleanly before this record (the lengths
 * then cover only the records before it).
 */
typedef int (*sdb_seg_record_fn)(void *arg, uint64_t lsn, int type,
                                 const struct sdb_loc *loc,
                                 const unsigned char *rec);

/*
 * Read every segment of a concept directory in order, check each idx
 * entry against its record (offset, length, hash, LSN order), and call fn
 * for each valid record.  Stops at the first invalid entry: *out_si gets
 * the lengths of the valid prefix and *out_bad the file/offset of the
 * problem ("" if none).  Read-only.
 */
int sdb_seg_scan(const sdb_io *io, const char *db_dir, struct sdb_seginfo *si,
                 uint64_t store_id, sdb_seg_record_fn fn, void *arg,
                 char *out_bad, size_t bad_cap);

/* Encode / decode idx headers and entries (exposed for fsck). */
void sdb_idx_header_encode(unsigned char *h, uint64_t store_id, uint64_t chash,
                           uint32_t segno);
int sdb_idx_header_check(const unsigned char *h, uint64_t store_id,
                         uint64_t chash, uint32_t segno);

#endif
