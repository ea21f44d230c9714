/*
 * codec.h - records <-> msgpack (msgpack-c), JSON values <-> msgpack.
 *
 * A record is one msgpack map; the same bytes go into a WAL record payload
 * and into a concept's segment file (docs/format.md, "Records").  Decoding
 * trusts nothing: every read is bounded by the bytes given, nesting by
 * SDB_MAX_VALUE_DEPTH, and any unknown key, missing field or wrong type is
 * SDB_ECORRUPT.  JSON values round-trip losslessly: integers as msgpack
 * int (int64 range), reals as float64, strings, booleans, null, arrays and
 * maps with string keys.
 */
#ifndef SDB_CODEC_H
#define SDB_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <msgpack.h>

#include "model.h"

enum sdb_record_type { SDB_REC_ASSERTION = 1, SDB_REC_RETRACTION = 2 };

struct sdb_record {
    int type;                /* sdb_record_type */
    struct sdb_assertion a;  /* when type == SDB_REC_ASSERTION */
    struct sdb_retraction r; /* when type == SDB_REC_RETRACTION */
};

void sdb_record_release(struct sdb_record *rec);

/* Append the record for a (id and ts_us assigned) to sb. 0 or SDB_ENOMEM. */
int sdb_codec_pack_assertion(msgpack_sbuffer *sb,
                             const struct sdb_assertion *a);
int sdb_codec_pack_retraction(msgpack_sbuffer *sb,
                              const struct sdb_retraction *r);

/*
 * Decode exactly one record from the start of buf.  *used gets the bytes it
 * took.  0, or SDB_ECORRUPT (err says what) for anything but a complete,
 * valid record; SDB_ENOMEM.
 */
int sdb_codec_unpack(const void *buf, size_t len, size_t *used,
                     struct sdb_record *out, sdb_error *err);

/*
 * sdb_codec_unpack with flags.  SDB_UNPACK_TRUSTED skips the canonical-form
 * check (re-encoding the record and comparing bytes): for bytes whose
 * checksum was just verified against what this codec wrote (WAL replay,
 * index rebuild, reads through the index).  fsck keeps the check.
 * SDB_UNPACK_NO_VALUE leaves the assertion's value NULL (it is still
 * scanned as msgpack): for callers that only index the record.
 */
#define SDB_UNPACK_TRUSTED  1u
#define SDB_UNPACK_NO_VALUE 2u
int sdb_codec_unpack_ex(const void *buf, size_t len, size_t *used,
                        struct sdb_record *out, sdb_error *err, unsigned flags);

/* Pack a JSON value; SDB_EINVAL past SDB_MAX_VALUE_DEPTH. */
int sdb_value_pack(msgpack_packer *pk, const json_t *v, int depth);
/* The msgpack size of a JSON value, or a negative code. */
int64_t sdb_value_packed_size(const json_t *v);
/* A new JSON value from a msgpack object; NULL if not representable. */
json_t *sdb_value_unpack(const msgpack_object *o, int depth);

/*
 * The API's JSON form of an assertion: id, concept_path, predicate, value,
 * confidence, authority_tier, source (null if none), derived_from (array),
 * timestamp (RFC 3339 UTC, microseconds), lsn.  A new reference or NULL.
 */
json_t *sdb_assertion_to_json(const struct sdb_assertion *a);

#endif
