/*
 * textcache.h - a bounded cache of assertions already rendered as JSON
 * text for the read path, so a hot record is decoded and formatted once.
 *
 * A rendering is a pure function of the record's bytes.  Entries are keyed
 * by the record's LSN, length and checksum (segment.h: XXH3-64 seeded with
 * the store, concept and segment), and a caller may use an entry only
 * after reading the record and checking it against that same checksum: a
 * hit never skips verification, only decoding.  Sharded, one mutex per
 * shard, never held across I/O.  Oldest entries go first once a shard is
 * over its share of the byte budget.
 */
#ifndef SDB_TEXTCACHE_H
#define SDB_TEXTCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "jsonw.h"

/* The budget of each store's cache (segment.c creates it on first use). */
#define SDB_TEXT_CACHE_BYTES ((size_t)64 << 20)

struct sdb_textcache;

struct sdb_textcache_key {
    uint64_t lsn;
    uint64_t hash;
    uint32_t len;
};

struct sdb_textcache_stats {
    uint64_t hits, misses, entries, bytes;
};

/* A new cache holding at most about budget bytes of text and overhead. */
int sdb_textcache_new(size_t budget, struct sdb_textcache **out);
void sdb_textcache_free(struct sdb_textcache *tc);

/* Append the cached text of key to w: 1 on a hit, 0 on a miss. */
int sdb_textcache_get(struct sdb_textcache *tc,
                      const struct sdb_textcache_key *key, struct sdb_jsonw *w);

/*
 * Hint that key will be looked up soon: starts loading its hash bucket so
 * the lookups of a page overlap their cache misses.  Reads nothing.
 */
void sdb_textcache_prefetch(struct sdb_textcache *tc,
                            const struct sdb_textcache_key *key);

/* Remember text (n bytes, copied) for key; dropped silently if no memory. */
void sdb_textcache_put(struct sdb_textcache *tc,
                       const struct sdb_textcache_key *key, const char *text,
                       size_t n);

void sdb_textcache_get_stats(struct sdb_textcache *tc,
                             struct sdb_textcache_stats *out);

#endif
