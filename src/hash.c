/*
 * hash.c - XXH3-64 through libxxhash (hash.h).  Nothing else in the engine
 * includes xxhash.h, so the hash can be swapped in one place.
 */
#include "hash.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

uint64_t sdb_hash64(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

uint64_t sdb_hash64_2(const void *a, size_t na, const void *b, size_t nb,
                      uint64_t seed)
{
    XXH3_state_t st;

    /* a state on the stack must be initialised before a seeded reset, or
     * a stale seed field can make the reset skip deriving its secret */
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, seed);
    XXH3_64bits_update(&st, a, na);
    XXH3_64bits_update(&st, b, nb);
    return XXH3_64bits_digest(&st);
}
