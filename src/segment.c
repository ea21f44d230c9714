/*
 * segment.c - concept segment files, their checksum index, the bounded fd
 * cache and directory durability (format in segment.h, docs/format.md).
 * Must not: fsync on every append (checkpoints do that), or trust a byte
 * it reads back without checking its hash.
 */
#define _GNU_SOURCE
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "model.h"
#include "readcache.h"

static const unsigned char idx_magic[8] = {'S', 'T', 'M', 'D',
                                           'B', 'I', 'D', 'X'};

/* Bytes appended to one file but not yet written: they belong at off. */
struct wbuf {
    unsigned char *p;
    size_t len, cap;
    uint64_t off;
};

struct fd_slot {
    uint64_t key; /* concept key << 32 | segno; 0 = free */
    int data_fd;
    int idx_fd;
    bool dirty;
    bool pending;       /* on the pending list: wd or wi holds bytes */
    struct wbuf wd, wi; /* write-behind for the data and idx file */
    unsigned refs;
    int prev, next; /* LRU list, most recent at head */
    int hnext;      /* hash chain */
};

struct dirset {
    char **v;
    size_t n, cap;
    size_t *tab; /* open addressing, index+1, 0 = empty */
    size_t tcap;
};

struct sdb_segstore {
    const sdb_io *io;
    char *db_dir;
    uint64_t store_id;
    uint64_t segment_limit;
    pthread_mutex_t lock; /* protects slots, lru, buckets, dirty, error */
    struct fd_slot *slots;
    unsigned n_slots;
    int *buckets; /* n_slots * 2 heads, -1 = empty */
    int lru_head, lru_tail;
    struct dirset dirty_dirs;
    unsigned n_dirty; /* cached slots with unsynced writes */
    bool need_syncfs; /* a dirty slot was closed before it was synced */
    int sync_fd;      /* db/, opened once: syncfs and its error state */
    int error;        /* first failed sync or flush: sticky */
    int *pend;        /* slots with unwritten appends */
    unsigned n_pend;
    size_t pend_bytes;
    /* read-only descriptors for sdb_segstore_read*; created on first use */
    _Atomic(struct sdb_readcache *) rcache;
};

/* Past this many unwritten bytes an append writes everything out. */
#define FLUSH_BYTES (8u << 20)
/* A write-behind buffer larger than this is freed after its flush. */
#define WBUF_KEEP (256u << 10)

/* Past this many dirty files and directories a checkpoint uses syncfs. */
#define SYNCFS_THRESHOLD 64

uint64_t sdb_seg_seed(uint64_t store_id, uint64_t chash, uint32_t segno)
{
    return store_id ^ chash ^ ((uint64_t)segno * 0xc2b2ae3d27d4eb4fULL);
}

void sdb_seg_file_names(uint32_t segno, char data[32], char idx[32])
{
    snprintf(data, 32, "@seg-%06" PRIu32 ".msgpack", segno);
    snprintf(idx, 32, "@seg-%06" PRIu32 ".idx", segno);
}

void sdb_idx_header_encode(unsigned char *h, uint64_t store_id, uint64_t chash,
                           uint32_t segno)
{
    memset(h, 0, SDB_IDX_HEADER_SIZE);
    memcpy(h, idx_magic, 8);
    sdb_put_u32(h + 8, 1);
    sdb_put_u32(h + 12, SDB_IDX_HEADER_SIZE);
    sdb_put_u64(h + 16, store_id);
    sdb_put_u64(h + 24, chash);
    sdb_put_u32(h + 32, segno);
    sdb_put_u64(h + 56, sdb_hash64(h, 56, 0));
}

int sdb_idx_header_check(const unsigned char *h, uint64_t store_id,
                         uint64_t chash, uint32_t segno)
{
    if (memcmp(h, idx_magic, 8) != 0 ||
        sdb_get_u64(h + 56) != sdb_hash64(h, 56, 0))
        return SDB_ECORRUPT;
    if (sdb_get_u32(h + 8) != 1 || sdb_get_u32(h + 12) != SDB_IDX_HEADER_SIZE)
        return SDB_EVERSION;
    if (sdb_get_u64(h + 16) != store_id || sdb_get_u64(h + 24) != chash ||
        sdb_get_u32(h + 32) != segno)
        return SDB_ECORRUPT;
    return 0;
}

/* ---- the set of directories with un-fsynced new names ---- */

static uint64_t str_hash(const char *s)
{
    return sdb_hash64(s, strlen(s), 0);
}

static int dirset_grow(struct dirset *ds)
{
    size_t tcap = ds->tcap ? ds->tcap * 2 : 64;
    size_t *tab = calloc(tcap, sizeof(*tab));

    if (!tab)
        return SDB_ENOMEM;
    for (size_t i = 0; i < ds->n; i++) {
        size_t h = str_hash(ds->v[i]) & (tcap - 1);
        while (tab[h])
            h = (h + 1) & (tcap - 1);
        tab[h] = i + 1;
    }
    free(ds->tab);
    ds->tab = tab;
    ds->tcap = tcap;
    return 0;
}

static int dirset_add(struct dirset *ds, const char *dir)
{
    size_t h;
    char *copy;

    if ((ds->n + 1) * 2 > ds->tcap && dirset_grow(ds) < 0)
        return SDB_ENOMEM;
    h = str_hash(dir) & (ds->tcap - 1);
    while (ds->tab[h]) {
        if (strcmp(ds->v[ds->tab[h] - 1], dir) == 0)
            return 0;
        h = (h + 1) & (ds->tcap - 1);
    }
    if (ds->n == ds->cap) {
        size_t cap = ds->cap ? ds->cap * 2 : 64;
        char **v = realloc(ds->v, cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        ds->v = v;
        ds->cap = cap;
    }
    if (!(copy = strdup(dir)))
        return SDB_ENOMEM;
    ds->v[ds->n++] = copy;
    ds->tab[h] = ds->n;
    return 0;
}

static void dirset_clear(struct dirset *ds)
{
    for (size_t i = 0; i < ds->n; i++)
        free(ds->v[i]);
    ds->n = 0;
    if (ds->tab)
        memset(ds->tab, 0, ds->tcap * sizeof(*ds->tab));
}

/* ---- fd cache ---- */

static void lru_unlink(struct sdb_segstore *ss, int i)
{
    struct fd_slot *s = &ss->slots[i];

    if (s->prev >= 0)
        ss->slots[s->prev].next = s->next;
    else
        ss->lru_head = s->next;
    if (s->next >= 0)
        ss->slots[s->next].prev = s->prev;
    else
        ss->lru_tail = s->prev;
    s->prev = s->next = -1;
}

static void lru_push_head(struct sdb_segstore *ss, int i)
{
    struct fd_slot *s = &ss->slots[i];

    s->prev = -1;
    s->next = ss->lru_head;
    if (ss->lru_head >= 0)
        ss->slots[ss->lru_head].prev = i;
    ss->lru_head = i;
    if (ss->lru_tail < 0)
        ss->lru_tail = i;
}

static unsigned bucket_of(struct sdb_segstore *ss, uint64_t key)
{
    return (unsigned)(sdb_hash64(&key, sizeof(key), 0) % (ss->n_slots * 2));
}

static void bucket_remove(struct sdb_segstore *ss, int i)
{
    int *p = &ss->buckets[bucket_of(ss, ss->slots[i].key)];

    while (*p >= 0 && *p != i)
        p = &ss->slots[*p].hnext;
    if (*p == i)
        *p = ss->slots[i].hnext;
    ss->slots[i].hnext = -1;
}

/*
 * Close a slot's files; caller holds the lock.  Unsynced writes stay in the
 * page cache: the next checkpoint makes them durable with syncfs on a
 * descriptor opened before them, which also reports any writeback error
 * they hit (so closing first loses no error report).
 */
static void slot_close(struct sdb_segstore *ss, int i)
{
    struct fd_slot *s = &ss->slots[i];

    if (s->dirty) {
        ss->need_syncfs = true;
        ss->n_dirty--;
    }
    ss->io->close(ss->io->ctx, s->data_fd);
    ss->io->close(ss->io->ctx, s->idx_fd);
    bucket_remove(ss, i);
    s->key = 0;
    s->dirty = false;
    s->data_fd = s->idx_fd = -1;
}

/* ---- write-behind: appends are buffered per file, written per group ---- */

static int wbuf_add(struct wbuf *b, const void *p, size_t len, uint64_t off)
{
    if (b->len == 0)
        b->off = off;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        unsigned char *n;

        while (cap < b->len + len)
            cap *= 2;
        n = realloc(b->p, cap);
        if (!n)
            return SDB_ENOMEM;
        b->p = n;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
    return 0;
}

static int wbuf_write(struct sdb_segstore *ss, int fd, struct wbuf *b)
{
    int rc = 0;

    if (b->len)
        rc = sdb_io_pwrite_all(ss->io, fd, b->p, b->len, (off_t)b->off);
    ss->pend_bytes -= b->len;
    b->len = 0;
    if (b->cap > WBUF_KEEP) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
    return rc;
}

/*
 * Write a slot's buffered appends: the records first, then their idx
 * entries, so an idx entry never reaches the file before its record.  The
 * caller holds the lock.  A failure is sticky: the store cannot checkpoint
 * past records it failed to write.
 */
static int slot_flush(struct sdb_segstore *ss, int i)
{
    struct fd_slot *s = &ss->slots[i];
    int rc = wbuf_write(ss, s->data_fd, &s->wd);

    if (rc == 0) {
        rc = wbuf_write(ss, s->idx_fd, &s->wi);
    } else { /* entries for records that are not there: never written */
        ss->pend_bytes -= s->wi.len;
        s->wi.len = 0;
    }
    s->pending = false;
    /* from the end: flush_all takes slots from there, so O(1) for it */
    for (unsigned k = ss->n_pend; k-- > 0;) {
        if (ss->pend[k] == i) {
            ss->pend[k] = ss->pend[--ss->n_pend];
            break;
        }
    }
    if (rc < 0 && ss->error == 0)
        ss->error = rc;
    return rc;
}

static int flush_all(struct sdb_segstore *ss)
{
    int rc = 0;

    while (ss->n_pend) {
        int r = slot_flush(ss, ss->pend[ss->n_pend - 1]);
        if (rc == 0)
            rc = r;
    }
    return rc;
}

/* Flush a slot's pending bytes, then close it; caller holds the lock. */
static int slot_retire(struct sdb_segstore *ss, int i)
{
    int rc = ss->slots[i].pending ? slot_flush(ss, i) : 0;

    slot_close(ss, i);
    return rc;
}

static void mark_dirty(struct sdb_segstore *ss, int i)
{
    if (!ss->slots[i].dirty) {
        ss->slots[i].dirty = true;
        ss->n_dirty++;
    }
}

int sdb_segstore_new(const sdb_io *io, const char *db_dir, uint64_t store_id,
                     unsigned cache_size, uint64_t segment_limit,
                     struct sdb_segstore **out)
{
    struct sdb_segstore *ss = calloc(1, sizeof(*ss));

    *out = NULL;
    if (!ss)
        return SDB_ENOMEM;
    ss->io = io;
    ss->store_id = store_id;
    ss->segment_limit = segment_limit;
    ss->n_slots = cache_size < 4 ? 4 : cache_size;
    ss->sync_fd = -1;
    ss->db_dir = strdup(db_dir);
    ss->slots = calloc(ss->n_slots, sizeof(*ss->slots));
    ss->buckets = malloc(ss->n_slots * 2 * sizeof(*ss->buckets));
    ss->pend = malloc(ss->n_slots * sizeof(*ss->pend));
    if (!ss->db_dir || !ss->slots || !ss->buckets || !ss->pend) {
        sdb_segstore_free(ss);
        return SDB_ENOMEM;
    }
    for (unsigned i = 0; i < ss->n_slots * 2; i++)
        ss->buckets[i] = -1;
    ss->lru_head = ss->lru_tail = -1;
    for (unsigned i = 0; i < ss->n_slots; i++) {
        ss->slots[i].data_fd = ss->slots[i].idx_fd = -1;
        ss->slots[i].hnext = -1;
        lru_push_head(ss, (int)i);
    }
    pthread_mutex_init(&ss->lock, NULL);
    ss->sync_fd =
        io->open(io->ctx, db_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (ss->sync_fd < 0) {
        int rc = ss->sync_fd;
        sdb_segstore_free(ss);
        return rc;
    }
    *out = ss;
    return 0;
}

void sdb_segstore_free(struct sdb_segstore *ss)
{
    if (!ss)
        return;
    if (ss->slots) {
        for (unsigned i = 0; i < ss->n_slots; i++) {
            if (ss->slots[i].key) {
                ss->io->close(ss->io->ctx, ss->slots[i].data_fd);
                ss->io->close(ss->io->ctx, ss->slots[i].idx_fd);
            }
            free(ss->slots[i].wd.p);
            free(ss->slots[i].wi.p);
        }
        pthread_mutex_destroy(&ss->lock);
        if (ss->sync_fd >= 0)
            ss->io->close(ss->io->ctx, ss->sync_fd);
    }
    sdb_readcache_free(atomic_load(&ss->rcache));
    dirset_clear(&ss->dirty_dirs);
    free(ss->dirty_dirs.v);
    free(ss->dirty_dirs.tab);
    free(ss->slots);
    free(ss->pend);
    free(ss->buckets);
    free(ss->db_dir);
    free(ss);
}

static int open_pair(struct sdb_segstore *ss, const char *dir, uint32_t segno,
                     bool create, int *dfd, int *ifd)
{
    char dname[32], iname[32], path[4096 + 64];
    int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);

    sdb_seg_file_names(segno, dname, iname);
    snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, dir, dname);
    *dfd = ss->io->open(ss->io->ctx, path, flags, 0644);
    if (*dfd < 0)
        return *dfd;
    snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, dir, iname);
    *ifd = ss->io->open(ss->io->ctx, path, flags, 0644);
    if (*ifd < 0) {
        int rc = *ifd;
        ss->io->close(ss->io->ctx, *dfd);
        return rc;
    }
    return 0;
}

/*
 * Find or open the slot for (si, segno) and take a reference; the caller
 * holds the lock.  Returns the slot index or a negative code.
 */
static int slot_get(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                    uint32_t segno, bool create)
{
    uint64_t key = ((uint64_t)si->key << 32 | segno) + 1;
    int i = ss->buckets[bucket_of(ss, key)], rc, dfd, ifd;
    unsigned b;

    while (i >= 0 && ss->slots[i].key != key)
        i = ss->slots[i].hnext;
    if (i < 0) {
        for (i = ss->lru_tail; i >= 0 && ss->slots[i].refs;
             i = ss->slots[i].prev)
            ;
        if (i < 0)
            return -EMFILE;
        if (ss->slots[i].key && (rc = slot_retire(ss, i)) < 0)
            return rc;
        rc = open_pair(ss, si->dir, segno, create, &dfd, &ifd);
        if (rc < 0)
            return rc;
        ss->slots[i].key = key;
        ss->slots[i].data_fd = dfd;
        ss->slots[i].idx_fd = ifd;
        b = bucket_of(ss, key);
        ss->slots[i].hnext = ss->buckets[b];
        ss->buckets[b] = i;
    }
    lru_unlink(ss, i);
    lru_push_head(ss, i);
    ss->slots[i].refs++;
    return i;
}

/* mkdir each missing component of dir below db/, marking parents dirty. */
static int make_concept_dir(struct sdb_segstore *ss, const char *dir)
{
    char path[4096 + 64], rel[4096];
    size_t base = strlen(ss->db_dir), pos = 0, len = strlen(dir);
    int rc;

    if (base + 1 + len >= sizeof(path))
        return SDB_ETOOBIG;
    memcpy(path, ss->db_dir, base);
    path[base] = '/';
    while (pos < len) {
        const char *slash = strchr(dir + pos, '/');
        size_t end = slash ? (size_t)(slash - dir) : len;

        memcpy(path + base + 1, dir, end);
        path[base + 1 + end] = 0;
        rc = ss->io->mkdir(ss->io->ctx, path, 0755);
        if (rc == 0) {
            memcpy(rel, dir, pos ? pos - 1 : 0);
            rel[pos ? pos - 1 : 0] = 0;
            rc = dirset_add(&ss->dirty_dirs, rel);
        } else if (rc == -EEXIST) {
            rc = 0;
        }
        if (rc < 0)
            return rc;
        pos = end + 1;
    }
    return 0;
}

/* Start segment si->segno + 1: its directory, files and idx header. */
static int start_segment(struct sdb_segstore *ss, struct sdb_seginfo *si)
{
    unsigned char h[SDB_IDX_HEADER_SIZE];
    uint32_t segno = si->segno + 1;
    int i, rc = 0;

    if (si->segno == 0)
        rc = make_concept_dir(ss, si->dir);
    if (rc == 0)
        rc = dirset_add(&ss->dirty_dirs, si->dir);
    if (rc < 0)
        return rc;
    i = slot_get(ss, si, segno, true);
    if (i < 0)
        return i;
    sdb_idx_header_encode(h, ss->store_id, si->chash, segno);
    rc = ss->io->ftruncate(ss->io->ctx, ss->slots[i].data_fd, 0);
    if (rc == 0)
        rc = ss->io->ftruncate(ss->io->ctx, ss->slots[i].idx_fd, 0);
    if (rc == 0)
        rc = sdb_io_pwrite_all(ss->io, ss->slots[i].idx_fd, h, sizeof(h), 0);
    mark_dirty(ss, i);
    ss->slots[i].refs--;
    if (rc < 0)
        return rc;
    si->segno = segno;
    si->data_len = 0;
    si->idx_len = SDB_IDX_HEADER_SIZE;
    return 0;
}

int sdb_segstore_append(struct sdb_segstore *ss, struct sdb_seginfo *si,
                        uint64_t lsn, int type, const void *rec, size_t len,
                        struct sdb_loc *out)
{
    unsigned char e[SDB_IDX_ENTRY_SIZE];
    uint64_t hash;
    int i, rc = 0;

    if (len == 0 || len > UINT32_MAX / 2)
        return SDB_EINVAL;
    pthread_mutex_lock(&ss->lock);
    if (si->segno == 0 ||
        (si->data_len > 0 && si->data_len + len > ss->segment_limit))
        rc = start_segment(ss, si);
    if (rc < 0)
        goto unlock;
    rc = i = slot_get(ss, si, si->segno, false);
    if (rc < 0)
        goto unlock;
    hash =
        sdb_hash64(rec, len, sdb_seg_seed(ss->store_id, si->chash, si->segno));
    sdb_put_u64(e, lsn);
    sdb_put_u64(e + 8, si->data_len);
    sdb_put_u32(e + 16, (uint32_t)len);
    sdb_put_u32(e + 20, (uint32_t)type);
    sdb_put_u64(e + 24, hash);
    mark_dirty(ss, i);
    rc = wbuf_add(&ss->slots[i].wd, rec, len, si->data_len);
    if (rc == 0 &&
        (rc = wbuf_add(&ss->slots[i].wi, e, sizeof(e), si->idx_len)) < 0)
        ss->slots[i].wd.len -= len;
    if (rc == 0 && !ss->slots[i].pending) {
        ss->slots[i].pending = true;
        ss->pend[ss->n_pend++] = i;
    }
    ss->slots[i].refs--;
    if (rc < 0)
        goto unlock;
    ss->pend_bytes += len + sizeof(e);
    out->segno = si->segno;
    out->off = (uint32_t)si->data_len;
    out->len = (uint32_t)len;
    out->hash = hash;
    si->data_len += len;
    si->idx_len += SDB_IDX_ENTRY_SIZE;
    if (ss->pend_bytes > FLUSH_BYTES)
        rc = flush_all(ss);
unlock:
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

/*
 * ---- reads ----
 * Readers use their own cache of O_RDONLY descriptors (readcache.h), never
 * the writer's slots or ss->lock: a query never opens, closes or syncs a
 * file the writer holds, and never waits for an fdatasync.
 */

/*
 * How many segment files readers may keep mapped: a quarter of the
 * kernel's limit on mappings per process, so malloc and the rest of the
 * process keep plenty.
 */
static unsigned max_read_maps(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
    unsigned long n = 65530;

    if (f) {
        if (fscanf(f, "%lu", &n) != 1)
            n = 65530;
        fclose(f);
    }
    n /= 4;
    return n > 65536 ? 65536 : (unsigned)n;
}

static struct sdb_readcache *read_cache(struct sdb_segstore *ss)
{
    struct sdb_readcache *rc = atomic_load(&ss->rcache), *expect = NULL;

    if (rc)
        return rc;
    /* leave room for the writer's slots (two files each) and sockets */
    if (sdb_readcache_new(
            ss->io, sdb_readcache_capacity_for_rlimit(ss->n_slots * 2 + 64),
            &rc) < 0)
        return NULL;
    /* a segment file never grows much past segment_limit: one mapping of
     * that size covers it for good (reads need no syscall) */
    sdb_readcache_enable_maps(rc, (size_t)ss->segment_limit, max_read_maps());
    if (!atomic_compare_exchange_strong(&ss->rcache, &expect, rc)) {
        sdb_readcache_free(rc); /* another reader won the race */
        rc = expect;
    }
    return rc;
}

static void log_corrupt(const struct sdb_segstore *ss,
                        const struct sdb_seginfo *si, uint32_t segno,
                        uint64_t off, uint64_t len)
{
    char dname[32], iname[32];

    sdb_seg_file_names(segno, dname, iname);
    fprintf(stderr,
            "stemedb: error: checksum mismatch reading %s/%s/%s @%" PRIu64
            " (%" PRIu64 " bytes); run stemedb-fsck\n",
            ss->db_dir, si->dir, dname, off, len);
}

int sdb_segstore_read_span(struct sdb_segstore *ss,
                           const struct sdb_seginfo *si, uint32_t segno,
                           uint64_t off, size_t len, void *buf)
{
    struct sdb_readcache *rc = read_cache(ss);
    uint64_t key = ((uint64_t)si->key << 32 | segno) + 1;
    struct sdb_rcref ref;
    int ret;

    if (!rc)
        return SDB_ENOMEM;
    if (!sdb_readcache_lookup(rc, key, &ref)) {
        char dname[32], iname[32], path[4096 + 64];
        sdb_seg_file_names(segno, dname, iname);
        snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, si->dir, dname);
        ret = sdb_readcache_open(rc, key, path, &ref);
        if (ret < 0)
            return ret;
    }
    ret = sdb_readcache_read(rc, &ref, buf, len, off);
    sdb_readcache_put(rc, &ref);
    if (ret == SDB_ECORRUPT) /* the file is shorter than the index says */
        log_corrupt(ss, si, segno, off, len);
    return ret;
}

int sdb_segstore_verify(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                        const struct sdb_loc *loc, const void *rec)
{
    if (sdb_hash64(rec, loc->len,
                   sdb_seg_seed(ss->store_id, si->chash, loc->segno)) ==
        loc->hash)
        return 0;
    log_corrupt(ss, si, loc->segno, loc->off, loc->len);
    return SDB_ECORRUPT;
}

int sdb_segstore_read(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                      const struct sdb_loc *loc, void *buf)
{
    int rc =
        sdb_segstore_read_span(ss, si, loc->segno, loc->off, loc->len, buf);

    return rc == 0 ? sdb_segstore_verify(ss, si, loc, buf) : rc;
}

void sdb_segstore_read_stats(struct sdb_segstore *ss,
                             struct sdb_readcache_stats *out)
{
    struct sdb_readcache *rc = atomic_load(&ss->rcache);

    memset(out, 0, sizeof(*out));
    if (rc)
        sdb_readcache_get_stats(rc, out);
}

int sdb_segstore_flush(struct sdb_segstore *ss)
{
    int rc;

    pthread_mutex_lock(&ss->lock);
    rc = flush_all(ss);
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

/* After a successful sync of everything: nothing is dirty any more. */
static void all_clean(struct sdb_segstore *ss)
{
    for (unsigned i = 0; i < ss->n_slots; i++)
        ss->slots[i].dirty = false;
    ss->n_dirty = 0;
    ss->need_syncfs = false;
    dirset_clear(&ss->dirty_dirs);
}

/* fdatasync each dirty file, fsync each directory with new names. */
static int sync_each(struct sdb_segstore *ss)
{
    char path[4096 + 64];
    int rc = 0;

    for (unsigned i = 0; rc == 0 && i < ss->n_slots; i++) {
        struct fd_slot *s = &ss->slots[i];

        if (!s->key || !s->dirty)
            continue;
        rc = ss->io->fdatasync(ss->io->ctx, s->data_fd);
        if (rc == 0)
            rc = ss->io->fdatasync(ss->io->ctx, s->idx_fd);
    }
    for (size_t i = 0; rc == 0 && i < ss->dirty_dirs.n; i++) {
        const char *d = ss->dirty_dirs.v[i];

        snprintf(path, sizeof(path), "%s%s%s", ss->db_dir, *d ? "/" : "", d);
        rc = sdb_io_fsync_dir(ss->io, path);
    }
    return rc;
}

int sdb_segstore_sync(struct sdb_segstore *ss)
{
    int rc;

    pthread_mutex_lock(&ss->lock);
    flush_all(ss);
    rc = ss->error;
    if (rc == 0 &&
        (ss->need_syncfs || ss->n_dirty + ss->dirty_dirs.n > SYNCFS_THRESHOLD))
        rc = ss->io->syncfs(ss->io->ctx, ss->sync_fd);
    else if (rc == 0)
        rc = sync_each(ss);
    if (rc == 0)
        all_clean(ss);
    else if (ss->error == 0)
        ss->error = rc;
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

/* Close a cached slot of (si, segno) if open (recovery only). */
static int forget_slot(struct sdb_segstore *ss, const struct sdb_seginfo *si,
                       uint32_t segno)
{
    uint64_t key = ((uint64_t)si->key << 32 | segno) + 1;
    int i = ss->buckets[bucket_of(ss, key)];

    while (i >= 0 && ss->slots[i].key != key)
        i = ss->slots[i].hnext;
    return i >= 0 && ss->slots[i].refs == 0 ? slot_retire(ss, i) : 0;
}

static int truncate_file(struct sdb_segstore *ss, const char *path,
                         uint64_t len)
{
    int fd = ss->io->open(ss->io->ctx, path, O_RDWR | O_CLOEXEC, 0), rc;

    if (fd == -ENOENT && len == 0)
        return 0;
    if (fd < 0)
        return fd;
    rc = ss->io->ftruncate(ss->io->ctx, fd, (off_t)len);
    if (rc == 0)
        rc = ss->io->fdatasync(ss->io->ctx, fd);
    ss->io->close(ss->io->ctx, fd);
    return rc;
}

/*
 * A crash may have left directories created but their parents never
 * fsync'd: recovery marks the whole chain so the next checkpoint syncs it.
 */
static int mark_chain_dirty(struct sdb_segstore *ss, const char *dir)
{
    char rel[4096];
    size_t n = strlen(dir);
    int rc;

    if (n >= sizeof(rel))
        return SDB_ETOOBIG;
    memcpy(rel, dir, n + 1);
    rc = dirset_add(&ss->dirty_dirs, rel);
    while (rc == 0 && n > 0) {
        while (n > 0 && rel[n - 1] != '/')
            n--;
        rel[n > 0 ? n - 1 : 0] = 0;
        rc = dirset_add(&ss->dirty_dirs, rel);
        n = n > 0 ? n - 1 : 0;
    }
    return rc;
}

int sdb_segstore_reset_tail(struct sdb_segstore *ss,
                            const struct sdb_seginfo *si)
{
    char dname[32], iname[32], path[4096 + 64];
    int rc = 0;

    pthread_mutex_lock(&ss->lock);
    if (atomic_load(&ss->rcache)) /* later segments may be recreated */
        sdb_readcache_clear(atomic_load(&ss->rcache));
    rc = mark_chain_dirty(ss, si->dir);
    if (rc == 0 && si->segno > 0) {
        rc = forget_slot(ss, si, si->segno);
        sdb_seg_file_names(si->segno, dname, iname);
        snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, si->dir, dname);
        if (rc == 0)
            rc = truncate_file(ss, path, si->data_len);
        snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, si->dir, iname);
        if (rc == 0)
            rc = truncate_file(ss, path, si->idx_len);
    }
    for (uint32_t n = si->segno + 1; rc == 0; n++) {
        int r1, r2;

        if ((rc = forget_slot(ss, si, n)) < 0)
            break;
        sdb_seg_file_names(n, dname, iname);
        snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, si->dir, dname);
        r1 = ss->io->unlink(ss->io->ctx, path);
        snprintf(path, sizeof(path), "%s/%s/%s", ss->db_dir, si->dir, iname);
        r2 = ss->io->unlink(ss->io->ctx, path);
        if (r1 == -ENOENT && r2 == -ENOENT)
            break;
        rc = (r1 < 0 && r1 != -ENOENT)   ? r1
             : (r2 < 0 && r2 != -ENOENT) ? r2
                                         : 0;
        if (rc == 0)
            rc = dirset_add(&ss->dirty_dirs, si->dir);
    }
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

/* ---- scanning (recovery rebuild and fsck) ---- */

struct scan_state {
    const sdb_io *io;
    struct sdb_seginfo *si;
    uint64_t store_id;
    uint64_t last_lsn;
    sdb_seg_record_fn fn;
    void *arg;
    char *bad;
    size_t bad_cap;
    bool stopped; /* the callback asked to stop before a record */
};

/* Scan one segment's idx/data images; returns 1 if it ended cleanly. */
static int scan_one(struct scan_state *st, uint32_t segno,
                    const unsigned char *idx, size_t ilen,
                    const unsigned char *data, size_t dlen, const char *iname)
{
    uint64_t seed = sdb_seg_seed(st->store_id, st->si->chash, segno);
    size_t pos = SDB_IDX_HEADER_SIZE;
    uint64_t expect_off = 0;
    int rc;

    if (ilen < SDB_IDX_HEADER_SIZE ||
        sdb_idx_header_check(idx, st->store_id, st->si->chash, segno) < 0) {
        snprintf(st->bad, st->bad_cap, "%s/%s @0: bad idx header", st->si->dir,
                 iname);
        return 0;
    }
    for (; pos + SDB_IDX_ENTRY_SIZE <= ilen; pos += SDB_IDX_ENTRY_SIZE) {
        const unsigned char *e = idx + pos;
        struct sdb_loc loc = {.segno = segno};
        uint64_t lsn = sdb_get_u64(e), off = sdb_get_u64(e + 8);
        uint32_t type = sdb_get_u32(e + 20);

        loc.len = sdb_get_u32(e + 16);
        loc.hash = sdb_get_u64(e + 24);
        if (lsn <= st->last_lsn || off != expect_off || loc.len == 0 ||
            off + loc.len > dlen || (type != 1 && type != 2) ||
            sdb_hash64(data + off, loc.len, seed) != loc.hash) {
            snprintf(st->bad, st->bad_cap,
                     "%s/%s @%zu: idx entry does not match its record",
                     st->si->dir, iname, pos);
            break;
        }
        loc.off = (uint32_t)off;
        rc = st->fn ? st->fn(st->arg, lsn, (int)type, &loc, data + off) : 0;
        if (rc < 0)
            return rc;
        if (rc > 0) { /* keep the prefix before this record */
            st->stopped = true;
            break;
        }
        st->last_lsn = lsn;
        expect_off = off + loc.len;
    }
    st->si->segno = segno;
    st->si->data_len = expect_off;
    st->si->idx_len = pos;
    if (!st->bad[0] && !st->stopped && (pos != ilen || expect_off != dlen))
        snprintf(st->bad, st->bad_cap, "%s/%s @%zu: trailing bytes",
                 st->si->dir, pos != ilen ? iname : "data", pos);
    return st->bad[0] ? 0 : 1;
}

int sdb_seg_scan(const sdb_io *io, const char *db_dir, struct sdb_seginfo *si,
                 uint64_t store_id, sdb_seg_record_fn fn, void *arg,
                 char *out_bad, size_t bad_cap)
{
    struct scan_state st = {io,  si,      store_id, 0,    fn,
                            arg, out_bad, bad_cap,  false};
    char dname[32], iname[32], path[4096 + 64];
    int rc = 0;

    out_bad[0] = 0;
    si->segno = 0;
    si->data_len = si->idx_len = 0;
    for (uint32_t n = 1; rc == 0; n++) {
        char *idx = NULL, *data = NULL;
        size_t ilen = 0, dlen = 0;

        sdb_seg_file_names(n, dname, iname);
        snprintf(path, sizeof(path), "%s/%s/%s", db_dir, si->dir, iname);
        rc = sdb_io_read_file(io, path, (size_t)1 << 31, &idx, &ilen);
        if (rc == -ENOENT) {
            rc = 0;
            break;
        }
        snprintf(path, sizeof(path), "%s/%s/%s", db_dir, si->dir, dname);
        if (rc == 0)
            rc = sdb_io_read_file(io, path, (size_t)1 << 31, &data, &dlen);
        if (rc == -ENOENT) {
            snprintf(out_bad, bad_cap, "%s/%s: missing", si->dir, dname);
            rc = 0;
        } else if (rc == 0) {
            rc = scan_one(&st, n, (unsigned char *)idx, ilen,
                          (unsigned char *)data, dlen, iname);
            rc = rc < 0 ? rc : 0;
        }
        free(idx);
        free(data);
        if (out_bad[0] || st.stopped)
            break;
    }
    return rc;
}
