/*
 * readcache.c - the sharded read-only descriptor cache (contract in
 * readcache.h).  Must not: hold a shard lock across open or pread, close a
 * pinned descriptor, or grow past its capacity.
 *
 * Per slot: FREE -> CACHED (open) -> FREE (evicted or cleared, unpinned)
 *                   CACHED -> DROPPED (cleared while pinned) -> FREE (put)
 * Lock order: one shard lock at a time, never with another lock taken
 * after it.
 *
 * A slot may also hold a read-only shared mapping of its file, made and
 * unmade with the descriptor (outside the lock, like open and close).  A
 * mapping spans max(reserve, size) bytes, so an append-only file stays
 * covered as it grows; a read only touches bytes below the size last seen
 * by fstat.  Should the file shrink under a mapping anyway (someone
 * truncated it), the copy's SIGBUS is caught and the read fails with
 * SDB_ECORRUPT, as a short pread would.
 */
#define _GNU_SOURCE /* O_NOATIME */
#include "readcache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

#define MAX_SHARDS   16
#define MIN_CAPACITY 8
#define MAX_CAPACITY 65536

enum slot_state { SLOT_FREE = 0, SLOT_CACHED, SLOT_DROPPED };

struct rc_slot {
    uint64_t key;
    int fd;
    unsigned char *map; /* NULL: not mapped */
    size_t map_len;
    uint64_t known; /* file size last seen */
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
    uint64_t hits, misses, evictions, map_reads, pread_reads;
};

struct sdb_readcache {
    const sdb_io *io;
    unsigned n_shards, capacity;
    size_t map_reserve; /* 0: no mappings */
    unsigned map_max;
    atomic_uint mapped;
    struct rc_shard shards[MAX_SHARDS];
};

/* What leaves a slot, released after the shard lock is dropped. */
struct rc_gone {
    int fd;
    unsigned char *map;
    size_t map_len;
};

/* ---- reads from a mapping, with a SIGBUS guard ---- */

static __thread sigjmp_buf *volatile bus_env; /* set during a guarded copy */
static struct sigaction bus_old;

static void on_sigbus(int sig, siginfo_t *info, void *uc)
{
    sigjmp_buf *env = bus_env;

    if (env)
        siglongjmp(*env, 1);
    /* not one of our copies: whatever handled SIGBUS before us */
    if ((bus_old.sa_flags & SA_SIGINFO) && bus_old.sa_sigaction) {
        bus_old.sa_sigaction(sig, info, uc);
    } else if (!(bus_old.sa_flags & SA_SIGINFO) &&
               bus_old.sa_handler != SIG_DFL && bus_old.sa_handler != SIG_IGN) {
        bus_old.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGBUS, &dfl, NULL); /* the access repeats, fatally */
    }
}

/* Put on_sigbus in place unless it is already (another handler may have
 * replaced it since: then it becomes the one we pass other faults to). */
static void install_sigbus(void)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct sigaction sa, cur;

    pthread_mutex_lock(&lock);
    if (sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction == on_sigbus) {
        pthread_mutex_unlock(&lock);
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    /* NODEFER: the jump out of the handler leaves SIGBUS unblocked */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &bus_old);
    pthread_mutex_unlock(&lock);
}

static int guarded_copy(void *dst, const unsigned char *src, size_t n)
{
    sigjmp_buf env;

    if (sigsetjmp(env, 0)) {
        bus_env = NULL;
        return SDB_ECORRUPT;
    }
    bus_env = &env;
    memcpy(dst, src, n);
    bus_env = NULL;
    return 0;
}

static void release(struct sdb_readcache *rc, const struct rc_gone *g)
{
    if (g->map) {
        rc->io->unmap(rc->io->ctx, g->map, g->map_len);
        atomic_fetch_sub(&rc->mapped, 1);
    }
    if (g->fd >= 0)
        rc->io->close(rc->io->ctx, g->fd);
}

void sdb_readcache_enable_maps(struct sdb_readcache *rc, size_t reserve,
                               unsigned max_maps)
{
    if (!rc->io->map || !rc->io->unmap || !reserve || !max_maps)
        return;
    install_sigbus();
    rc->map_reserve = reserve;
    rc->map_max = max_maps;
}

/* Map fd if this cache maps and has room; g->map NULL otherwise. */
static void map_file(struct sdb_readcache *rc, int fd, struct rc_gone *g,
                     uint64_t *known)
{
    long page = sysconf(_SC_PAGESIZE);
    struct stat st;
    size_t len;

    g->map = NULL;
    g->map_len = 0;
    *known = 0;
    if (!rc->map_reserve)
        return;
    if (atomic_fetch_add(&rc->mapped, 1) >= rc->map_max)
        goto none;
    if (rc->io->fstat(rc->io->ctx, fd, &st) < 0 || st.st_size < 0)
        goto none;
    len = (uint64_t)st.st_size > rc->map_reserve ? (size_t)st.st_size
                                                 : rc->map_reserve;
    if (page > 0)
        len = (len + (size_t)page - 1) / (size_t)page * (size_t)page;
    g->map = rc->io->map(rc->io->ctx, fd, len);
    if (!g->map)
        goto none;
    g->map_len = len;
    *known = (uint64_t)st.st_size;
    return;
none:
    atomic_fetch_sub(&rc->mapped, 1);
}

int sdb_readcache_read(struct sdb_readcache *rc, struct sdb_rcref *ref,
                       void *buf, size_t len, uint64_t off)
{
    if (ref->map && len <= ref->map_len && off <= ref->map_len - len) {
        if (off + len > ref->known) { /* appended since: look again */
            struct stat st;
            int r = rc->io->fstat(rc->io->ctx, ref->fd, &st);
            if (r < 0)
                return r;
            if (st.st_size > 0 && (uint64_t)st.st_size > ref->known)
                ref->known = (uint64_t)st.st_size;
            if (off + len > ref->known)
                return SDB_ECORRUPT; /* the file is shorter than that */
        }
        ref->map_reads++;
        return guarded_copy(buf, ref->map + off, len);
    }
    ref->pread_reads++;
    return sdb_io_pread_all(rc->io, ref->fd, buf, len, (off_t)off);
}

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
        for (unsigned i = 0; i < sh->n; i++) {
            struct rc_slot *sl = &sh->slots[i];
            if (sl->state != SLOT_FREE)
                release(rc, &(struct rc_gone){sl->fd, sl->map, sl->map_len});
        }
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

/* Free slot i; what it held goes to *g (NULL: the caller took it). */
static void free_slot(struct rc_shard *sh, int i, struct rc_gone *g)
{
    if (g)
        *g = (struct rc_gone){sh->slots[i].fd, sh->slots[i].map,
                              sh->slots[i].map_len};
    sh->slots[i].state = SLOT_FREE;
    sh->slots[i].fd = -1;
    sh->slots[i].map = NULL;
    sh->slots[i].map_len = 0;
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
    out->map = sh->slots[i].map;
    out->map_len = sh->slots[i].map_len;
    out->known = sh->slots[i].known;
    out->map_reads = out->pread_reads = 0;
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
 * and mapping go to *victim for the caller to release after unlocking); -1
 * if every slot is pinned.  Caller holds sh->lock.
 */
static int take_slot(struct rc_shard *sh, struct rc_gone *victim)
{
    int i = sh->free_head;

    *victim = (struct rc_gone){-1, NULL, 0};
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
        *victim = (struct rc_gone){s->fd, s->map, s->map_len};
        s->map = NULL;
        s->map_len = 0;
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
        struct rc_gone g;
        int i;

        pthread_mutex_lock(&sh->lock);
        i = take_slot(sh, &g);
        if (i >= 0)
            free_slot(sh, i, NULL);
        pthread_mutex_unlock(&sh->lock);
        release(rc, &g);
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
    struct rc_gone victim = {-1, NULL, 0}, dup = {-1, NULL, 0}, mine;
    uint64_t known;
    int i;

    if (fd == -EMFILE || fd == -ENFILE) {
        shed(rc);
        fd = open_ro(rc, path);
    }
    if (fd < 0)
        return fd;
    map_file(rc, fd, &mine, &known);
    mine.fd = fd;
    pthread_mutex_lock(&sh->lock);
    i = find(sh, key, h);
    if (i >= 0) { /* another reader opened it meanwhile */
        dup = mine;
    } else if ((i = take_slot(sh, &victim)) >= 0) {
        struct rc_slot *s = &sh->slots[i];
        s->key = key;
        s->fd = fd;
        s->map = mine.map;
        s->map_len = mine.map_len;
        s->known = known;
        s->refs = 0;
        s->state = SLOT_CACHED;
        s->next = sh->buckets[h & (sh->nb - 1)];
        sh->buckets[h & (sh->nb - 1)] = i;
    }
    if (i >= 0)
        pin(sh, rc, i, out);
    pthread_mutex_unlock(&sh->lock);
    if (i < 0) { /* every slot pinned: a private descriptor, no map */
        memset(out, 0, sizeof(*out));
        out->fd = fd;
        out->shard = out->slot = -1;
        mine.fd = -1;
        release(rc, &mine);
    }
    release(rc, &victim);
    release(rc, &dup);
    return 0;
}

void sdb_readcache_put(struct sdb_readcache *rc, struct sdb_rcref *ref)
{
    struct rc_gone g = {-1, NULL, 0};
    struct rc_shard *sh;
    struct rc_slot *s;

    if (ref->shard < 0) {
        rc->io->close(rc->io->ctx, ref->fd);
        ref->fd = -1;
        return;
    }
    sh = &rc->shards[ref->shard];
    pthread_mutex_lock(&sh->lock);
    s = &sh->slots[ref->slot];
    s->refs--;
    if (ref->known > s->known)
        s->known = ref->known;
    sh->map_reads += ref->map_reads;
    sh->pread_reads += ref->pread_reads;
    if (s->state == SLOT_DROPPED && s->refs == 0)
        free_slot(sh, ref->slot, &g);
    pthread_mutex_unlock(&sh->lock);
    release(rc, &g);
    ref->fd = -1;
    ref->map = NULL;
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
            struct rc_gone g;
            free_slot(sh, (int)i, &g);
            release(rc, &g);
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

void sdb_readcache_get_stats(struct sdb_readcache *rc,
                             struct sdb_readcache_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->capacity = rc->capacity;
    out->mapped = atomic_load(&rc->mapped);
    for (unsigned s = 0; s < rc->n_shards; s++) {
        struct rc_shard *sh = &rc->shards[s];
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->evictions += sh->evictions;
        out->map_reads += sh->map_reads;
        out->pread_reads += sh->pread_reads;
        out->open += sh->open;
        pthread_mutex_unlock(&sh->lock);
    }
}
