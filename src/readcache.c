/*
 * readcache.c - the sharded read-only descriptor cache (contract in
 * readcache.h).  Must not: hold a shard lock across open or pread, close a
 * pinned descriptor, or grow past its capacity.
 *
 * Per slot: FREE -> CACHED (open) -> FREE (evicted or cleared, unpinned)
 *                   CACHED -> DROPPED (cleared while pinned) -> FREE (put)
 * Lock order: one shard lock at a time, never with another lock taken
 * after it.
 */
#define _GNU_SOURCE /* O_NOATIME */
#include "readcache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "stemedb/stemedb.h"

#define MAX_SHARDS   16
#define MIN_CAPACITY 8
#define MAX_CAPACITY 65536

enum slot_state { SLOT_FREE = 0, SLOT_CACHED, SLOT_DROPPED };

struct rc_slot {
    uint64_t key;
    int fd;
    unsigned refs;
    unsigned char state; /* enum slot_state */
    bool recent;         /* CLOCK reference bit */
    int next;            /* hash chain (CACHED) or free list (FREE) */
};

struct rc_shard {
    pthread_mutex_t lock; /* protects everything below */
    struct rc_slot *slots;
    int *buckets; /* nb heads, -1 = empty */
    unsigned n, nb, hand, open;
    int free_head;
    uint64_t hits, misses, evictions;
};

struct sdb_readcache {
    const sdb_io *io;
    unsigned n_shards, capacity;
    struct rc_shard shards[MAX_SHARDS];
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

unsigned sdb_readcache_capacity_for_rlimit(unsigned reserved_fds)
{
    struct rlimit rl;
    uint64_t soft = 1024, avail;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        soft = rl.rlim_cur == RLIM_INFINITY ? (uint64_t)MAX_CAPACITY * 2
                                            : (uint64_t)rl.rlim_cur;
    avail = soft > reserved_fds ? soft - reserved_fds : 0;
    avail = avail / 4 * 3;
    if (avail < MIN_CAPACITY)
        return MIN_CAPACITY;
    return avail > MAX_CAPACITY ? MAX_CAPACITY : (unsigned)avail;
}

static int shard_init(struct rc_shard *sh, unsigned n)
{
    sh->n = n;
    for (sh->nb = 4; sh->nb < n * 2; sh->nb *= 2)
        ;
    sh->slots = calloc(n, sizeof(*sh->slots));
    sh->buckets = malloc(sh->nb * sizeof(*sh->buckets));
    if (!sh->slots || !sh->buckets)
        return SDB_ENOMEM;
    for (unsigned i = 0; i < sh->nb; i++)
        sh->buckets[i] = -1;
    for (unsigned i = 0; i < n; i++) {
        sh->slots[i].fd = -1;
        sh->slots[i].next = i + 1 < n ? (int)i + 1 : -1;
    }
    sh->free_head = 0;
    pthread_mutex_init(&sh->lock, NULL);
    return 0;
}

int sdb_readcache_new(const sdb_io *io, unsigned capacity,
                      struct sdb_readcache **out)
{
    struct sdb_readcache *rc = calloc(1, sizeof(*rc));
    unsigned per;
    int ret = 0;

    *out = NULL;
    if (!rc)
        return SDB_ENOMEM;
    rc->io = io;
    rc->capacity = capacity ? capacity : 1;
    rc->n_shards = rc->capacity < MAX_SHARDS ? rc->capacity : MAX_SHARDS;
    per = rc->capacity / rc->n_shards;
    for (unsigned i = 0; ret == 0 && i < rc->n_shards; i++) {
        /* the first shards take the remainder */
        unsigned n = per + (i < rc->capacity % rc->n_shards);
        ret = shard_init(&rc->shards[i], n);
        if (ret < 0) {
            free(rc->shards[i].slots);
            free(rc->shards[i].buckets);
            rc->n_shards = i;
        }
    }
    if (ret < 0) {
        sdb_readcache_free(rc);
        return ret;
    }
    *out = rc;
    return 0;
}

void sdb_readcache_free(struct sdb_readcache *rc)
{
    if (!rc)
        return;
    for (unsigned s = 0; s < rc->n_shards; s++) {
        struct rc_shard *sh = &rc->shards[s];
        for (unsigned i = 0; i < sh->n; i++)
            if (sh->slots[i].state != SLOT_FREE)
                rc->io->close(rc->io->ctx, sh->slots[i].fd);
        pthread_mutex_destroy(&sh->lock);
        free(sh->slots);
        free(sh->buckets);
    }
    free(rc);
}

static struct rc_shard *shard_of(struct sdb_readcache *rc, uint64_t h)
{
    return &rc->shards[(h >> 32) % rc->n_shards];
}

/* Slot index of key in sh, or -1; caller holds sh->lock. */
static int find(const struct rc_shard *sh, uint64_t key, uint64_t h)
{
    int i = sh->buckets[h & (sh->nb - 1)];

    while (i >= 0 && sh->slots[i].key != key)
        i = sh->slots[i].next;
    return i;
}

static void unhash(struct rc_shard *sh, int i)
{
    int *p = &sh->buckets[mix(sh->slots[i].key) & (sh->nb - 1)];

    while (*p >= 0 && *p != i)
        p = &sh->slots[*p].next;
    if (*p == i)
        *p = sh->slots[i].next;
    sh->slots[i].next = -1;
    sh->slots[i].key = 0;
}

static void free_slot(struct rc_shard *sh, int i)
{
    sh->slots[i].state = SLOT_FREE;
    sh->slots[i].fd = -1;
    sh->slots[i].next = sh->free_head;
    sh->free_head = i;
    sh->open--;
}

static void pin(struct rc_shard *sh, struct sdb_readcache *rc, int i,
                struct sdb_rcref *out)
{
    sh->slots[i].refs++;
    sh->slots[i].recent = true;
    out->fd = sh->slots[i].fd;
    out->shard = (int)(sh - rc->shards);
    out->slot = i;
}

int sdb_readcache_lookup(struct sdb_readcache *rc, uint64_t key,
                         struct sdb_rcref *out)
{
    uint64_t h = mix(key);
    struct rc_shard *sh = shard_of(rc, h);
    int i;

    pthread_mutex_lock(&sh->lock);
    i = find(sh, key, h);
    if (i >= 0) {
        pin(sh, rc, i, out);
        sh->hits++;
    } else {
        sh->misses++;
    }
    pthread_mutex_unlock(&sh->lock);
    return i >= 0;
}

/*
 * A slot for a new descriptor: a free one, else the CLOCK victim (its fd
 * goes to *victim_fd for the caller to close after unlocking); -1 if every
 * slot is pinned.  Caller holds sh->lock.
 */
static int take_slot(struct rc_shard *sh, int *victim_fd)
{
    int i = sh->free_head;

    *victim_fd = -1;
    if (i >= 0) {
        sh->free_head = sh->slots[i].next;
        sh->open++;
        return i;
    }
    for (unsigned step = 0; step < sh->n * 2; step++) {
        struct rc_slot *s = &sh->slots[sh->hand];
        i = (int)sh->hand;
        sh->hand = (sh->hand + 1) % sh->n;
        if (s->state != SLOT_CACHED || s->refs)
            continue;
        if (s->recent) {
            s->recent = false;
            continue;
        }
        *victim_fd = s->fd;
        unhash(sh, i);
        sh->evictions++;
        return i;
    }
    return -1;
}

/* Close one unpinned descriptor per shard (the process ran out of fds). */
static void shed(struct sdb_readcache *rc)
{
    for (unsigned s = 0; s < rc->n_shards; s++) {
        struct rc_shard *sh = &rc->shards[s];
        int fd = -1, i;

        pthread_mutex_lock(&sh->lock);
        i = take_slot(sh, &fd);
        if (i >= 0)
            free_slot(sh, i);
        pthread_mutex_unlock(&sh->lock);
        if (fd >= 0)
            rc->io->close(rc->io->ctx, fd);
    }
}

/*
 * Open read-only; O_NOATIME spares every read an atime check, but only the
 * file's owner may ask for it (EPERM otherwise: open without).
 */
static int open_ro(struct sdb_readcache *rc, const char *path)
{
    int fd =
        rc->io->open(rc->io->ctx, path, O_RDONLY | O_CLOEXEC | O_NOATIME, 0);

    if (fd == -EPERM)
        fd = rc->io->open(rc->io->ctx, path, O_RDONLY | O_CLOEXEC, 0);
    return fd;
}

int sdb_readcache_open(struct sdb_readcache *rc, uint64_t key, const char *path,
                       struct sdb_rcref *out)
{
    uint64_t h = mix(key);
    struct rc_shard *sh = shard_of(rc, h);
    int fd = open_ro(rc, path);
    int i, victim = -1, dup_fd = -1;

    if (fd == -EMFILE || fd == -ENFILE) {
        shed(rc);
        fd = open_ro(rc, path);
    }
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&sh->lock);
    i = find(sh, key, h);
    if (i >= 0) { /* another reader opened it meanwhile */
        dup_fd = fd;
    } else if ((i = take_slot(sh, &victim)) >= 0) {
        struct rc_slot *s = &sh->slots[i];
        s->key = key;
        s->fd = fd;
        s->refs = 0;
        s->state = SLOT_CACHED;
        s->next = sh->buckets[h & (sh->nb - 1)];
        sh->buckets[h & (sh->nb - 1)] = i;
    }
    if (i >= 0)
        pin(sh, rc, i, out);
    pthread_mutex_unlock(&sh->lock);
    if (i < 0) { /* every slot pinned: a private descriptor */
        out->fd = fd;
        out->shard = out->slot = -1;
    }
    if (victim >= 0)
        rc->io->close(rc->io->ctx, victim);
    if (dup_fd >= 0)
        rc->io->close(rc->io->ctx, dup_fd);
    return 0;
}

void sdb_readcache_put(struct sdb_readcache *rc, struct sdb_rcref *ref)
{
    struct rc_shard *sh;
    struct rc_slot *s;
    int fd = -1;

    if (ref->shard < 0) {
        rc->io->close(rc->io->ctx, ref->fd);
        ref->fd = -1;
        return;
    }
    sh = &rc->shards[ref->shard];
    pthread_mutex_lock(&sh->lock);
    s = &sh->slots[ref->slot];
    s->refs--;
    if (s->state == SLOT_DROPPED && s->refs == 0) {
        fd = s->fd;
        free_slot(sh, ref->slot);
    }
    pthread_mutex_unlock(&sh->lock);
    if (fd >= 0)
        rc->io->close(rc->io->ctx, fd);
    ref->fd = -1;
}

void sdb_readcache_clear(struct sdb_readcache *rc)
{
    for (unsigned s = 0; s < rc->n_shards; s++) {
        struct rc_shard *sh = &rc->shards[s];

        /* rare (recovery): closing under the lock keeps this simple */
        pthread_mutex_lock(&sh->lock);
        for (unsigned i = 0; i < sh->n; i++) {
            struct rc_slot *sl = &sh->slots[i];
            if (sl->state != SLOT_CACHED)
                continue;
            unhash(sh, (int)i);
            if (sl->refs) {
                sl->state = SLOT_DROPPED;
                continue;
            }
            rc->io->close(rc->io->ctx, sl->fd);
            free_slot(sh, (int)i);
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

void sdb_readcache_get_stats(struct sdb_readcache *rc,
                             struct sdb_readcache_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->capacity = rc->capacity;
    for (unsigned s = 0; s < rc->n_shards; s++) {
        struct rc_shard *sh = &rc->shards[s];
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->evictions += sh->evictions;
        out->open += sh->open;
        pthread_mutex_unlock(&sh->lock);
    }
}
