/*
 * meta.h - data/metadata.json: format version, store id, counts and the
 * checkpoint LSN, replaced atomically (temp, fsync, rename, dir fsync) and
 * protected by its own checksum (docs/format.md, "Metadata").
 */
#ifndef SDB_META_H
#define SDB_META_H

#include <stdint.h>

#include "io.h"

#define SDB_FORMAT_VERSION 1

struct sdb_meta {
    uint64_t store_id;
    int64_t created_us;
    uint64_t last_lsn;
    uint64_t checkpoint_lsn;
    uint64_t assertion_count;
    uint64_t retraction_count;
    uint64_t concept_count;
    uint64_t restarts;
};

/* -ENOENT if missing; SDB_ECORRUPT / SDB_EVERSION with err filled. */
int sdb_meta_read(const sdb_io *io, const char *data_dir, struct sdb_meta *m,
                  sdb_error *err);
int sdb_meta_write(const sdb_io *io, const char *data_dir,
                   const struct sdb_meta *m);
/* Parse a metadata.json image (for fsck): same checks as sdb_meta_read. */
int sdb_meta_parse(const char *buf, size_t len, struct sdb_meta *m,
                   sdb_error *err);

#endif
