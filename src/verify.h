/*
 * verify.h - internal entry points of the fsck checker (verify.c) that
 * tests and fuzz targets drive directly on in-memory images, without a
 * data directory.  The public entry point is sdb_fsck in stemedb.h.
 */
#ifndef SDB_VERIFY_H
#define SDB_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Run the WAL segment checks (header, framing, checksums, payload decoding,
 * LSN continuity, zeros after the end) on one segment image of sequence
 * number seq belonging to store_id.  newest: it is the last segment (a torn
 * tail is then a warning).  Returns the number of problems found, or a
 * negative code (SDB_ENOMEM).  Reads only buf[0..len).
 */
int sdb_verify_wal_image(const unsigned char *buf, size_t len,
                         uint64_t store_id, uint64_t seq, bool newest);

/*
 * Run the concept segment checks (idx header, every idx entry against its
 * record, msgpack decoding, the record's concept) on one .idx/.msgpack
 * image pair: segment segno of concept cpath ("" for @retractions) in
 * store_id.  Returns the number of problems found or a negative code.
 */
int sdb_verify_segment_image(const unsigned char *idx, size_t ilen,
                             const unsigned char *data, size_t dlen,
                             uint64_t store_id, const char *cpath,
                             uint32_t segno);

#endif
