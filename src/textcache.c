/*
 * textcache.c - rendered assertions by record checksum (contract in
 * textcache.h).  Must not: hand out text for a key it was not stored
 * under, grow past its budget, or hold a shard lock across anything but
 * memory work.  Per shard: a chained hash table and a FIFO queue (oldest
 * first) for eviction; both protected by the shard's mutex.
 */
#include "textcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "stemedb/stemedb.h"

#define TC_SHARDS 16
#define TC_GUESS  384 /* bytes per entry, to size the hash tables */

struct tc_entry {
    struct sdb_textcache_key key;
    struct tc_entry *hnext; /* hash chain */
    struct tc_entry *qnext; /* FIFO queue, towards the newest */
    size_t n;
    char text[];
};

struct tc_shard {
    pthread_mutex_t lock; /* protects everything below */
    struct tc_entry **buckets;
    size_t nb;
    struct tc_entry *oldest, *newest;
    size_t bytes, budget;
    uint64_t hits, misses, entries;
};

struct sdb_textcache {
    struct tc_shard shards[TC_SHARDS];
};

static uint64_t key_hash(const struct sdb_textcache_key *k)
{
    uint64_t x = k->hash ^ (k->lsn * 0x9e3779b97f4a7c15ULL) ^ k->len;

    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    return x ^ (x >> 29);
}

static bool key_eq(const struct sdb_textcache_key *a,
                   const struct sdb_textcache_key *b)
{
    return a->lsn == b->lsn && a->hash == b->hash && a->len == b->len;
}

int sdb_textcache_new(size_t budget, struct sdb_textcache **out)
{
    struct sdb_textcache *tc = calloc(1, sizeof(*tc));
    size_t per = budget / TC_SHARDS;

    *out = NULL;
    if (!tc)
        return SDB_ENOMEM;
    for (int s = 0; s < TC_SHARDS; s++) {
        struct tc_shard *sh = &tc->shards[s];
        for (sh->nb = 16; sh->nb < per / TC_GUESS; sh->nb *= 2)
            ;
        sh->budget = per;
        sh->buckets = calloc(sh->nb, sizeof(*sh->buckets));
        pthread_mutex_init(&sh->lock, NULL);
        if (!sh->buckets) {
            sdb_textcache_free(tc);
            return SDB_ENOMEM;
        }
    }
    *out = tc;
    return 0;
}

void sdb_textcache_free(struct sdb_textcache *tc)
{
    if (!tc)
        return;
    for (int s = 0; s < TC_SHARDS; s++) {
        struct tc_shard *sh = &tc->shards[s];
        struct tc_entry *e = sh->oldest, *next;

        for (; e; e = next) {
            next = e->qnext;
            free(e);
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(tc);
}

static struct tc_shard *shard_of(struct sdb_textcache *tc, uint64_t h)
{
    return &tc->shards[h >> 60];
}

static struct tc_entry **slot_of(struct tc_shard *sh,
                                 const struct sdb_textcache_key *k, uint64_t h)
{
    struct tc_entry **p = &sh->buckets[h & (sh->nb - 1)];

    while (*p && !key_eq(&(*p)->key, k))
        p = &(*p)->hnext;
    return p;
}

int sdb_textcache_get(struct sdb_textcache *tc,
                      const struct sdb_textcache_key *key, struct sdb_jsonw *w)
{
    uint64_t h = key_hash(key);
    struct tc_shard *sh = shard_of(tc, h);
    struct tc_entry *e;

    pthread_mutex_lock(&sh->lock);
    e = *slot_of(sh, key, h);
    if (e) {
        sdb_jsonw_raw(w, e->text, e->n);
        sh->hits++;
    } else {
        sh->misses++;
    }
    pthread_mutex_unlock(&sh->lock);
    return e != NULL;
}

void sdb_textcache_prefetch(struct sdb_textcache *tc,
                            const struct sdb_textcache_key *key)
{
    uint64_t h = key_hash(key);
    const struct tc_shard *sh = shard_of(tc, h);

    /* buckets and nb never change after sdb_textcache_new: no lock */
    __builtin_prefetch(&sh->buckets[h & (sh->nb - 1)]);
}

/* Drop the oldest entry of sh; caller holds the lock. */
static void evict_oldest(struct tc_shard *sh)
{
    struct tc_entry *e = sh->oldest;
    struct tc_entry **p = slot_of(sh, &e->key, key_hash(&e->key));

    if (*p == e)
        *p = e->hnext;
    sh->oldest = e->qnext;
    if (!sh->oldest)
        sh->newest = NULL;
    sh->bytes -= sizeof(*e) + e->n;
    sh->entries--;
    free(e);
}

void sdb_textcache_put(struct sdb_textcache *tc,
                       const struct sdb_textcache_key *key, const char *text,
                       size_t n)
{
    uint64_t h = key_hash(key);
    struct tc_shard *sh = shard_of(tc, h);
    struct tc_entry *e, **p;

    if (sizeof(*e) + n > sh->budget)
        return;
    e = malloc(sizeof(*e) + n);
    if (!e)
        return;
    e->key = *key;
    e->n = n;
    e->hnext = e->qnext = NULL;
    memcpy(e->text, text, n);
    pthread_mutex_lock(&sh->lock);
    p = slot_of(sh, key, h);
    if (*p) { /* another reader stored it first */
        pthread_mutex_unlock(&sh->lock);
        free(e);
        return;
    }
    *p = e;
    if (sh->newest)
        sh->newest->qnext = e;
    else
        sh->oldest = e;
    sh->newest = e;
    sh->bytes += sizeof(*e) + n;
    sh->entries++;
    while (sh->bytes > sh->budget && sh->oldest != e)
        evict_oldest(sh);
    pthread_mutex_unlock(&sh->lock);
}

void sdb_textcache_get_stats(struct sdb_textcache *tc,
                             struct sdb_textcache_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int s = 0; s < TC_SHARDS; s++) {
        struct tc_shard *sh = &tc->shards[s];
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->entries += sh->entries;
        out->bytes += sh->bytes;
        pthread_mutex_unlock(&sh->lock);
    }
}
