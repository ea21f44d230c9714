/*
 * fs_epoch.c - which cut of the data directory each reading process sees
 * (fs_int.h).  A table of at most EPOCH_MAX cuts keyed by thread-group id;
 * protected by epoch_lock.  Taking a cut happens under the lock, so two
 * processes starting at once wait for each other (a cut takes
 * milliseconds: a few opens and the new WAL bytes since the last one).
 */
#include "fs_node.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EPOCH_MAX    32
#define EPOCH_IDLE_S 10.0

struct epoch {
    pid_t tgid;        /* 0: free slot */
    sdb_view_cut *cut; /* one reference held by the table */
    double used;
};

#define TGID_SLOTS 256
#define TGID_TTL_S 2.0

/* tid -> tgid answers from /proc, kept briefly (rendering
 * /proc/TID/status costs more than the rest of a request). */
struct tgid_slot {
    pid_t tid, tgid;
    double at;
};

static pthread_mutex_t epoch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct epoch epochs[EPOCH_MAX];     /* protected by epoch_lock */
static struct tgid_slot tgids[TGID_SLOTS]; /* protected by epoch_lock */
static double last_sweep;                  /* protected by epoch_lock */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The process (thread group) a thread belongs to; tid itself if unknown. */
static pid_t tgid_read(pid_t tid)
{
    char path[64], line[128];
    pid_t tgid = tid;
    FILE *f;

    if (tid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)tid);
    if (!(f = fopen(path, "r")))
        return tid;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "Tgid:", 5) == 0) {
            tgid = (pid_t)strtol(line + 5, NULL, 10);
            break;
        }
    fclose(f);
    return tgid;
}

/* tgid_read through the cache.  Under epoch_lock. */
static pid_t tgid_of(pid_t tid, double now)
{
    struct tgid_slot *s = &tgids[(unsigned)tid % TGID_SLOTS];

    if (s->tid != tid || now - s->at > TGID_TTL_S) {
        s->tid = tid;
        s->tgid = tgid_read(tid);
        s->at = now;
    }
    return s->tgid;
}

static void drop(struct epoch *e)
{
    sdb_view_cut_unref(e->cut);
    memset(e, 0, sizeof(*e));
}

/* Has e's process gone, or been idle long enough to lose its cut? */
static bool stale(const struct epoch *e, double now)
{
    return now - e->used > EPOCH_IDLE_S ||
           (e->tgid > 0 && kill(e->tgid, 0) < 0 && errno == ESRCH);
}

/* Drop epochs whose process is gone or idle (at most every 0.5 s).
 * Under epoch_lock. */
static void sweep(double now)
{
    if (now - last_sweep < 0.5)
        return;
    last_sweep = now;
    for (size_t i = 0; i < EPOCH_MAX; i++)
        if (epochs[i].cut && stale(&epochs[i], now))
            drop(&epochs[i]);
}

/* The slot for tgid: its own, a free one, or the least recently used. */
static struct epoch *slot_for(pid_t tgid)
{
    struct epoch *lru = &epochs[0];

    for (size_t i = 0; i < EPOCH_MAX; i++)
        if (epochs[i].cut && epochs[i].tgid == tgid)
            return &epochs[i];
    for (size_t i = 0; i < EPOCH_MAX; i++) {
        if (!epochs[i].cut)
            return &epochs[i];
        if (epochs[i].used < lru->used)
            lru = &epochs[i];
    }
    return lru;
}

/* Does a live process other than self's see the main class in data/?
 * Under epoch_lock. */
static bool main_in_use(const struct epoch *self, double now)
{
    for (size_t i = 0; i < EPOCH_MAX; i++) {
        const struct epoch *e = &epochs[i];
        if (e != self && e->cut && !stale(e, now) && fs_class_is_main(e->cut))
            return true;
    }
    return false;
}

int fs_epoch_get(struct fs_ctx *fx, pid_t tid, sdb_view_cut **out)
{
    double now = now_s();
    struct epoch *e;
    pid_t tgid;
    int rc = 0;

    pthread_mutex_lock(&epoch_lock);
    tgid = tgid_of(tid, now);
    sweep(now);
    e = slot_for(tgid);
    if (e->cut && e->tgid != tgid)
        drop(e);
    if (!e->cut) {
        rc = sdb_view_cut_new(fx->view, false, &e->cut);
        if (rc == 0)
            fs_class_check(e->cut);
        if (rc == 0 && !fs_class_is_main(e->cut) && !main_in_use(e, now)) {
            double t0 = now_s();
            int n = fs_advance_cut(fx, e->cut);
            if (fx->debug)
                fprintf(stderr,
                        "stemedb-fuse: data/ tree moved on to the "
                        "new cut: %d notices, %.1f ms\n",
                        n, (now_s() - t0) * 1e3);
        }
        e->tgid = tgid;
        if (rc == 0 && fx->debug)
            fprintf(stderr,
                    "stemedb-fuse: new cut for pid %ld (tid %ld) at "
                    "LSN %llu, class %016llx\n",
                    (long)tgid, (long)tid,
                    (unsigned long long)sdb_view_cut_lsn(e->cut),
                    (unsigned long long)sdb_view_cut_class(e->cut));
    }
    if (rc == 0) {
        e->used = now;
        *out = sdb_view_cut_ref(e->cut);
    } else {
        memset(e, 0, sizeof(*e));
    }
    pthread_mutex_unlock(&epoch_lock);
    return rc;
}

void fs_epoch_clear(void)
{
    pthread_mutex_lock(&epoch_lock);
    for (size_t i = 0; i < EPOCH_MAX; i++)
        if (epochs[i].cut)
            drop(&epochs[i]);
    pthread_mutex_unlock(&epoch_lock);
}
