/*
 * hash.h - checksums.  The only module that includes xxhash.h; everything
 * on disk is protected by XXH3-64 (docs/format.md, "Checksums").
 */
#ifndef SDB_HASH_H
#define SDB_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-64 of one buffer with a seed. */
uint64_t sdb_hash64(const void *p, size_t n, uint64_t seed);
/* XXH3-64 of the concatenation a ++ b with a seed (streaming). */
uint64_t sdb_hash64_2(const void *a, size_t na, const void *b, size_t nb,
                      uint64_t seed);

/* Little-endian fixed-width load/store used by every on-disk format. */
static inline void sdb_put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void sdb_put_u64(unsigned char *p, uint64_t v)
{
    sdb_put_u32(p, (uint32_t)v);
    sdb_put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t sdb_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t sdb_get_u64(const unsigned char *p)
{
    return (uint64_t)sdb_get_u32(p) | (uint64_t)sdb_get_u32(p + 4) << 32;
}

#endif
