/*
 * view.c - read-only views of a data directory (stemedb-fuse, docs/fuse.md).
 *
 * Owns: the "cut" of a data directory that a backup copy may take while the
 * server writes, the per-concept assertions.json text, the display names of
 * concept directories and health.json.  Must not: write, lock or repair
 * anything, or hold the server's LOCK.  It reads the formats of wal.h,
 * segment.h, meta.h and snapshot.c through their own checkers.
 *
 * Why a cut is consistent (the copy opens and holds every assertion that
 * was committed when the cut was taken):
 *   1. metadata.json is captured first (an fd held open: the server replaces
 *      it by rename, so the bytes never change under us).  Its checkpoint C
 *      promises: every segment record <= C is on disk, WAL files may be
 *      deleted only when wholly <= C.
 *   2. index.snap is captured next (fd held).  The server writes it before
 *      the metadata naming its LSN S, so S >= C unless it is stale; it is
 *      shown only if its checksum holds and C <= S <= L (below).
 *   3. The WAL files are listed and opened (fds held, so a file recycled
 *      later stays readable); each is cut at the end of its last valid,
 *      checksummed record.  L = the newest LSN found.  Only a contiguous
 *      run of files ending at the newest one is shown, and its first file
 *      must start at or before C + 1.
 *   4. metadata.json is checked again: if its checkpoint moved, WAL files
 *      between the two checkpoints may have been recycled between 1 and 3,
 *      so the whole capture is retried.
 *   5. Segment and idx files are read later, whenever a copier gets to
 *      them.  At the cut's first look at a concept directory, each of its
 *      segments is pinned to its valid idx prefix whose LSNs are <= L, and
 *      the cut shows those lengths from then on.  The server appends to a
 *      segment only after the WAL record is written, so records <= L may
 *      still be arriving: the prefix read later could be longer, and an
 *      .idx and its .msgpack read at different times would disagree.  The
 *      pin holds every record <= C (checkpointed before step 1) and never
 *      a record the WAL copy lacks; what <= L it lacks is in the WAL copy.
 * Recovery on the copy then either loads index.snap (S in [C, L]: the
 * segments hold at least its lengths, the WAL holds S+1..L) or rebuilds
 * from the segments (all records <= C present, counts match metadata) and
 * replays C+1..L from the WAL.
 */
#define _GNU_SOURCE
#include "stemedb/stemedb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "codec.h"
#include "hash.h"
#include "io.h"
#include "meta.h"
#include "model.h"
#include "path.h"
#include "segment.h"
#include "wal.h"

#define SCAN_SLOTS  16384 /* concept scan cache, direct-mapped */
#define TEXT_SLOTS  256   /* assertions.json text cache */
#define MTIME_SLOTS 4096  /* mtimes remembered for cut files */
#define WAL_SLOTS   64    /* WAL valid-end cache, by sequence number */
#define META_MAX    (1u << 20)
#define SNAP_NAME   "index.snap"
#define JSON_NAME   "assertions.json"

/* One record's place: its LSN and where its bytes end in the .msgpack. */
struct rec_pos {
    uint64_t lsn;
    uint64_t data_end;
};

/* Valid records of one segment, in LSN order. */
struct seg_part {
    struct rec_pos *v;
    uint32_t n, cap;
};

/* The scan of one concept directory, valid while its files keep `sig`. */
struct dir_scan {
    char *dir;              /* escaped, relative to db/; owned */
    uint64_t sig;           /* hash of the directory's own inode, mtime and
                               link count and of the segment files' sizes
                               and inodes */
    uint32_t nsub;          /* subdirectories; NSUB_UNKNOWN if the file
                               system does not count them in st_nlink */
    uint32_t nseg;          /* segments with a valid idx header */
    uint32_t nfile;         /* segments whose idx file exists */
    struct seg_part *parts; /* [segno - 1], nfile of them */
    struct stat *idx_st;    /* [segno - 1] */
    struct stat *data_st;   /* [segno - 1]; st_ino 0 when missing */
};

struct text_slot {
    char *path; /* concept path; owned */
    uint64_t sig;
    char *text; /* owned */
    size_t len;
};

struct mtime_slot {
    uint64_t ino, len;
    struct timespec mtime;
};

/* One version of a file the server replaces by rename (metadata.json,
 * index.snap).  The inode alone does not name a version: the file system
 * hands a freed inode number to the next file created, so the versions of
 * metadata.json cycle through a few inode numbers. */
struct repl_slot {
    uint64_t ino, size;
    struct timespec real, ctime; /* st_mtim and st_ctim of that version */
    struct timespec shown;
};
#define REPL_HIST 8

struct wal_slot {
    uint64_t ino, seq, store_id;
    uint64_t end, first_lsn, last_lsn;
    uint64_t shown_end; /* the length shown_mtime goes with */
    struct timespec shown_mtime;
};

struct sdb_view {
    char *data_dir;       /* owned, as given */
    char *db_dir;         /* data_dir/db */
    pthread_mutex_t lock; /* protects everything below */
    uint64_t store_id;    /* from the last metadata.json read; 0 unknown */
    struct dir_scan *scans[SCAN_SLOTS];
    struct text_slot texts[TEXT_SLOTS];
    struct mtime_slot mtimes[MTIME_SLOTS];
    struct wal_slot wals[WAL_SLOTS];
    uint64_t ret_sig;   /* retraction set valid for this signature */
    uint64_t *ret_lsns; /* sorted retracted LSNs */
    size_t n_ret;
    struct repl_slot repl[2][REPL_HIST]; /* [0] metadata, [1] index.snap */
    unsigned repl_next[2];
    uint64_t snap_ino, snap_size, snap_lsn;
    struct timespec snap_mtime;
};

struct cut_wal {
    uint64_t seq, first_lsn, last_lsn, len;
    int fd;
    struct stat st;
    struct timespec mtime; /* shown: the same for as long as len is */
    char name[40];
};

/*
 * What a cut shows of one concept directory, fixed at the first look at
 * any of its segment files (see step 5 of the header comment).
 */
struct dir_pin {
    char *dir;      /* escaped, relative to db/; owned; NULL: a free slot */
    uint32_t n;     /* entries in k */
    uint32_t *k;    /* [segno - 1]: records shown, PIN_HIDDEN if none; owned */
    uint64_t sig;   /* the scan's signature (sizes, inodes) at the pin */
    uint32_t nfile; /* the scan's segment files at the pin */
    bool whole;     /* it shows every record the files held at the pin */
};
#define PIN_HIDDEN   UINT32_MAX
#define NSUB_UNKNOWN UINT32_MAX

struct sdb_view_cut {
    struct sdb_view *v;
    atomic_int refs;
    bool live;        /* no metadata/WAL capture; segments fully valid */
    uint64_t lsn_max; /* L */
    uint64_t store_id;
    bool has_meta;
    int meta_fd;
    char *meta_buf;
    size_t meta_len;
    struct stat meta_st;
    struct sdb_meta meta;
    int snap_fd; /* -1 when hidden */
    struct stat snap_st;
    uint64_t snap_lsn;
    struct cut_wal *wal;
    size_t n_wal;
    struct dir_pin *pins;    /* open addressing on str_hash(dir); power of 2 */
    size_t n_pins, cap_pins; /* protected by v->lock */
    uint64_t cls;            /* sdb_view_cut_class; set once at capture */
};

/* ---- small helpers ---- */

static uint64_t mix(uint64_t h, uint64_t x)
{
    return sdb_hash64(&x, sizeof(x), h);
}

static uint64_t str_hash(const char *s)
{
    return sdb_hash64(s, strlen(s), 0);
}

static void fill_stat(sdb_view_stat *out, const struct stat *st, bool dir)
{
    memset(out, 0, sizeof(*out));
    out->is_dir = dir;
    out->mode = st->st_mode & 07777 & (dir ? 07777 : 07666);
    out->uid = st->st_uid;
    out->gid = st->st_gid;
    out->ino = (uint64_t)st->st_ino;
    out->size = dir ? 0 : (uint64_t)st->st_size;
    out->mtime = st->st_mtim;
}

/* Read a whole small file through an fd (from offset 0). */
static int read_fd(int fd, size_t max, char **out, size_t *len)
{
    struct stat st;
    char *buf;
    ssize_t n;

    if (fstat(fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size > max)
        return SDB_ETOOBIG;
    buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return SDB_ENOMEM;
    n = pread(fd, buf, (size_t)st.st_size, 0);
    if (n < 0) {
        free(buf);
        return -errno;
    }
    buf[n] = 0;
    *out = buf;
    *len = (size_t)n;
    return 0;
}

/*
 * The mtime shown for a segment file cut at len bytes.  Shown whole, it
 * is the real one.  Shown shorter, it is the mtime first seen for this
 * (inode, length), so a cut that did not grow keeps its mtime while the
 * server appends past it (rsync's quick check then skips it).  The whole
 * case must not depend on that memory: the slots are direct-mapped, and
 * a first look taken while the last record was being appended may have
 * seen an older mtime, so an eviction would change what an unchanged
 * file shows.  Under v->lock.
 */
static struct timespec stable_mtime(struct sdb_view *v, uint64_t ino,
                                    uint64_t len, const struct stat *real)
{
    struct mtime_slot *s = &v->mtimes[mix(ino, len) % MTIME_SLOTS];

    if ((uint64_t)real->st_size == len || s->ino != ino || s->len != len) {
        s->ino = ino;
        s->len = len;
        s->mtime = real->st_mtim;
    }
    return s->mtime;
}

/*
 * The mtime shown for a version of a file the server replaces:
 * its real mtime, moved on to the next second when an earlier version was
 * shown with the same or a later second.  rsync's quick check compares
 * size and whole seconds, and metadata.json keeps its size across
 * checkpoints, so two versions within one second would look unchanged and
 * an incremental copy would keep the old one.  Under v->lock.
 */
static struct timespec replaced_mtime(struct sdb_view *v, int which,
                                      const struct stat *real)
{
    struct repl_slot *h = v->repl[which], *s;
    struct timespec t = real->st_mtim;

    for (size_t i = 0; i < REPL_HIST; i++)
        if (h[i].ino == (uint64_t)real->st_ino &&
            h[i].size == (uint64_t)real->st_size &&
            h[i].real.tv_sec == t.tv_sec && h[i].real.tv_nsec == t.tv_nsec &&
            h[i].ctime.tv_sec == real->st_ctim.tv_sec &&
            h[i].ctime.tv_nsec == real->st_ctim.tv_nsec)
            return h[i].shown;
    for (size_t i = 0; i < REPL_HIST; i++)
        if (h[i].ino && h[i].shown.tv_sec >= t.tv_sec)
            t.tv_sec = h[i].shown.tv_sec + 1;
    s = &h[v->repl_next[which]++ % REPL_HIST];
    s->ino = (uint64_t)real->st_ino;
    s->size = (uint64_t)real->st_size;
    s->real = real->st_mtim;
    s->ctime = real->st_ctim;
    s->shown = t;
    return t;
}

/* ---- the view ---- */

int sdb_view_open(const char *data_dir, sdb_view **out)
{
    struct sdb_view *v = calloc(1, sizeof(*v));
    int rc = SDB_ENOMEM;

    *out = NULL;
    if (!v)
        return SDB_ENOMEM;
    v->data_dir = strdup(data_dir);
    if (!v->data_dir || asprintf(&v->db_dir, "%s/db", data_dir) < 0)
        goto free_view;
    pthread_mutex_init(&v->lock, NULL);
    *out = v;
    return 0;
free_view:
    free(v->data_dir);
    free(v);
    return rc;
}

static void scan_free(struct dir_scan *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->nfile; i++)
        free(s->parts[i].v);
    free(s->parts);
    free(s->idx_st);
    free(s->data_st);
    free(s->dir);
    free(s);
}

void sdb_view_close(sdb_view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < SCAN_SLOTS; i++)
        scan_free(v->scans[i]);
    for (size_t i = 0; i < TEXT_SLOTS; i++) {
        free(v->texts[i].path);
        free(v->texts[i].text);
    }
    free(v->ret_lsns);
    pthread_mutex_destroy(&v->lock);
    free(v->db_dir);
    free(v->data_dir);
    free(v);
}

/* Store id from metadata.json (cached); 0 if there is none yet. */
static uint64_t store_id_locked(struct sdb_view *v)
{
    struct sdb_meta m;

    if (v->store_id == 0 &&
        sdb_meta_read(sdb_io_posix(), v->data_dir, &m, NULL) == 0)
        v->store_id = m.store_id;
    return v->store_id;
}

/* ---- concept directory scans ---- */

/*
 * Stat the directory, then @seg-N.idx/.msgpack for N = 1.. until an idx
 * is missing, or up to N = max if max > 0 (a caller that knows how many
 * there were: any file created since changes the directory's mtime).  The
 * directory's mtime and link count are part of the signature, so a file or
 * subdirectory created in it changes it too.
 */
static int dir_files_upto(struct sdb_view *v, const char *dir, uint32_t max,
                          struct dir_scan *s)
{
    char path[4200], dname[32], iname[32];
    struct stat dirst;

    snprintf(path, sizeof(path), "%s/%s", v->db_dir, dir);
    if (stat(path, &dirst) < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
    /* ext4 and XFS count subdirectories in st_nlink; btrfs shows 1 */
    s->nsub = dirst.st_nlink >= 2 && dirst.st_nlink - 2 < NSUB_UNKNOWN
                  ? (uint32_t)(dirst.st_nlink - 2)
                  : NSUB_UNKNOWN;
    s->sig = mix(mix(mix(mix(s->sig, (uint64_t)dirst.st_ino),
                         (uint64_t)dirst.st_mtim.tv_sec),
                     (uint64_t)dirst.st_mtim.tv_nsec),
                 (uint64_t)dirst.st_nlink);
    for (uint32_t n = 1; !max || n <= max; n++) {
        struct stat ist, dst;
        void *p, *q;

        sdb_seg_file_names(n, dname, iname);
        snprintf(path, sizeof(path), "%s/%s/%s", v->db_dir, dir, iname);
        if (stat(path, &ist) < 0)
            return errno == ENOENT ? 0 : -errno;
        snprintf(path, sizeof(path), "%s/%s/%s", v->db_dir, dir, dname);
        if (stat(path, &dst) < 0)
            memset(&dst, 0, sizeof(dst));
        p = realloc(s->idx_st, n * sizeof(struct stat));
        if (p)
            s->idx_st = p;
        q = p ? realloc(s->data_st, n * sizeof(struct stat)) : NULL;
        if (!q)
            return SDB_ENOMEM;
        s->data_st = q;
        s->idx_st[n - 1] = ist;
        s->data_st[n - 1] = dst;
        s->nfile = n;
        s->sig = mix(mix(mix(mix(s->sig, n), (uint64_t)ist.st_size),
                         (uint64_t)dst.st_size),
                     (uint64_t)ist.st_ino ^ ((uint64_t)dst.st_ino << 32));
    }
    return 0;
}

static int dir_files(struct sdb_view *v, const char *dir, struct dir_scan *s)
{
    return dir_files_upto(v, dir, 0, s);
}

static int scan_record(void *arg, uint64_t lsn, int type,
                       const struct sdb_loc *loc, const unsigned char *rec)
{
    struct dir_scan *s = arg;
    struct seg_part *p;

    (void)type;
    (void)rec;
    if (loc->segno == 0 || loc->segno > s->nfile)
        return 0; /* a file that appeared after the stat pass */
    p = &s->parts[loc->segno - 1];
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 64;
        void *nv = realloc(p->v, cap * sizeof(*p->v));
        if (!nv)
            return SDB_ENOMEM;
        p->v = nv;
        p->cap = cap;
    }
    p->v[p->n].lsn = lsn;
    p->v[p->n++].data_end = (uint64_t)loc->off + loc->len;
    return 0;
}

/* The concept hash of an escaped directory below db/. */
static int dir_chash(const char *dir, uint64_t *out)
{
    char cpath[SDB_MAX_PATH_LEN + 1];
    int rc;

    if (strcmp(dir, SDB_RETRACTIONS_DIR) == 0) {
        *out = str_hash(SDB_RETRACTIONS_DIR);
        return 0;
    }
    rc = sdb_dir_to_concept(dir, cpath, sizeof(cpath));
    if (rc == 0)
        *out = str_hash(cpath);
    return rc < 0 ? SDB_ENOTFOUND : 0;
}

/* A fresh scan of dir, or SDB_ENOTFOUND if it is not a concept directory. */
static int scan_dir(struct sdb_view *v, const char *dir, struct dir_scan **out)
{
    struct dir_scan *s = calloc(1, sizeof(*s));
    struct sdb_seginfo si = {0};
    char bad[512];
    int rc = SDB_ENOMEM;

    if (!s)
        return SDB_ENOMEM;
    s->dir = strdup(dir);
    if (!s->dir)
        goto fail;
    rc = dir_chash(dir, &si.chash);
    if (rc == 0)
        rc = dir_files(v, dir, s);
    if (rc == 0 && s->nfile &&
        !(s->parts = calloc(s->nfile, sizeof(*s->parts))))
        rc = SDB_ENOMEM;
    si.dir = s->dir;
    if (rc == 0 && s->nfile)
        rc = sdb_seg_scan(sdb_io_posix(), v->db_dir, &si, store_id_locked(v),
                          scan_record, s, bad, sizeof(bad));
    if (rc < 0)
        goto fail;
    s->nseg = si.segno < s->nfile ? si.segno : s->nfile;
    *out = s;
    return 0;
fail:
    scan_free(s);
    return rc;
}

/* The cached scan of dir, refreshed if its files changed.  Under v->lock. */
static int get_scan(struct sdb_view *v, const char *dir, struct dir_scan **out)
{
    struct dir_scan **slot = &v->scans[str_hash(dir) % SCAN_SLOTS];
    struct dir_scan probe = {0};
    int rc;

    if (*slot && strcmp((*slot)->dir, dir) == 0) {
        rc = dir_files(v, dir, &probe);
        free(probe.idx_st);
        free(probe.data_st);
        if (rc < 0)
            return rc;
        if (probe.sig == (*slot)->sig && probe.nfile == (*slot)->nfile) {
            *out = *slot;
            return 0;
        }
    }
    rc = scan_dir(v, dir, out);
    if (rc < 0)
        return rc;
    scan_free(*slot);
    *slot = *out;
    return 0;
}

/* Records of part p with LSN <= max. */
static uint32_t count_upto(const struct seg_part *p, uint64_t max)
{
    uint32_t lo = 0, hi = p->n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->v[mid].lsn <= max)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Parse "@seg-NNNNNN.msgpack" / ".idx" strictly. */
static bool seg_name(const char *name, uint32_t *segno, bool *is_idx)
{
    char d[32], i[32];
    unsigned long n;
    char *end;

    if (strncmp(name, "@seg-", 5) != 0 || name[5] < '0' || name[5] > '9')
        return false;
    n = strtoul(name + 5, &end, 10);
    if (n == 0 || n > UINT32_MAX)
        return false;
    sdb_seg_file_names((uint32_t)n, d, i);
    *segno = (uint32_t)n;
    *is_idx = strcmp(name, i) == 0;
    return *is_idx || strcmp(name, d) == 0;
}

/* Records shown of each segment of scan s in cut c, as they are now. */
static int pin_fill(const struct sdb_view_cut *c, const struct dir_scan *s,
                    struct dir_pin *p)
{
    p->n = s->nseg;
    p->k = p->n ? calloc(p->n, sizeof(*p->k)) : NULL;
    if (p->n && !p->k)
        return SDB_ENOMEM;
    p->nfile = s->nfile;
    p->whole = true;
    for (uint32_t i = 0; i < p->n; i++) {
        p->k[i] = s->data_st[i].st_ino == 0
                      ? PIN_HIDDEN
                      : count_upto(&s->parts[i], c->lsn_max);
        if (p->k[i] != PIN_HIDDEN && p->k[i] != s->parts[i].n)
            p->whole = false;
    }
    return 0;
}

/* Double the pin table of c (rehashing).  Under v->lock. */
static int pins_grow(struct sdb_view_cut *c)
{
    size_t cap = c->cap_pins ? c->cap_pins * 2 : 64;
    struct dir_pin *t = calloc(cap, sizeof(*t));

    if (!t)
        return SDB_ENOMEM;
    for (size_t i = 0; i < c->cap_pins; i++) {
        size_t j;
        if (!c->pins[i].dir)
            continue;
        for (j = str_hash(c->pins[i].dir) & (cap - 1); t[j].dir;
             j = (j + 1) & (cap - 1))
            ;
        t[j] = c->pins[i];
    }
    free(c->pins);
    c->pins = t;
    c->cap_pins = cap;
    return 0;
}

/* The slot of dir[0, len) in c's pin table, or the free slot where it
 * would go (c->cap_pins > 0).  Under v->lock. */
static size_t pin_probe(const struct sdb_view_cut *c, const char *dir,
                        size_t len)
{
    size_t j = sdb_hash64(dir, len, 0) & (c->cap_pins - 1);

    for (; c->pins[j].dir; j = (j + 1) & (c->cap_pins - 1))
        if (strncmp(c->pins[j].dir, dir, len) == 0 && !c->pins[j].dir[len])
            break;
    return j;
}

/*
 * The pin of dir in cut c, made from scan s at the first look.  Why: L
 * comes from the WAL, and the server appends a record to its segment only
 * after the WAL write, so records <= L may still be arriving in segments
 * after the cut is taken.  Reading the count <= L afresh at each stat
 * would show an .idx and its .msgpack (or one file at listing and at
 * open) at different lengths.  A pin holds every record <= C (step 1);
 * anything <= L it lacks is in the copied WAL.  Under v->lock.
 */
static int pin_get(struct sdb_view_cut *c, const char *dir,
                   const struct dir_scan *s, const struct dir_pin **out)
{
    struct dir_pin *p;
    int rc = 0;

    if (2 * (c->n_pins + 1) > c->cap_pins && (rc = pins_grow(c)) < 0)
        return rc;
    p = &c->pins[pin_probe(c, dir, strlen(dir))];
    if (p->dir) {
        *out = p;
        return 0;
    }
    p->sig = s->sig;
    rc = pin_fill(c, s, p);
    if (rc == 0 && !(p->dir = strdup(dir)))
        rc = SDB_ENOMEM;
    if (rc < 0) {
        free(p->k);
        memset(p, 0, sizeof(*p));
        return rc;
    }
    c->n_pins++;
    *out = p;
    return 0;
}

static void pins_free(struct sdb_view_cut *c)
{
    for (size_t i = 0; i < c->cap_pins; i++) {
        free(c->pins[i].dir);
        free(c->pins[i].k);
    }
    free(c->pins);
    c->pins = NULL;
    c->n_pins = c->cap_pins = 0;
}

/* Records of segment segno that cut c shows; PIN_HIDDEN if it hides it. */
static int seg_shown(struct sdb_view_cut *c, const char *dir,
                     const struct dir_scan *s, uint32_t segno, uint32_t *out)
{
    const struct dir_pin *p;
    int rc;

    *out = PIN_HIDDEN;
    if (c->live) {
        if (segno <= s->nseg && s->data_st[segno - 1].st_ino != 0)
            *out = s->parts[segno - 1].n;
        return 0;
    }
    /* pinned even when hidden: the pin remembers what the files were */
    rc = pin_get(c, dir, s, &p);
    if (rc < 0 || segno > s->nseg || s->data_st[segno - 1].st_ino == 0)
        return rc;
    if (segno <= p->n && p->k[segno - 1] != PIN_HIDDEN)
        *out = p->k[segno - 1] < s->parts[segno - 1].n ? p->k[segno - 1]
                                                       : s->parts[segno - 1].n;
    return rc;
}

/* Stat of one segment file in a cut. */
static int seg_stat(struct sdb_view_cut *c, const char *dir, uint32_t segno,
                    bool is_idx, sdb_view_stat *out)
{
    struct sdb_view *v = c->v;
    struct dir_scan *s;
    const struct seg_part *part;
    const struct stat *real;
    uint32_t k = PIN_HIDDEN;
    uint64_t len, full;
    int rc;

    pthread_mutex_lock(&v->lock);
    rc = get_scan(v, dir, &s);
    if (rc == 0)
        rc = seg_shown(c, dir, s, segno, &k);
    if (rc == 0 && k == PIN_HIDDEN)
        rc = SDB_ENOTFOUND;
    if (rc < 0)
        goto unlock;
    part = &s->parts[segno - 1];
    real = is_idx ? &s->idx_st[segno - 1] : &s->data_st[segno - 1];
    len = is_idx ? SDB_IDX_HEADER_SIZE + (uint64_t)k * SDB_IDX_ENTRY_SIZE
                 : (k ? part->v[k - 1].data_end : 0);
    full = is_idx ? SDB_IDX_HEADER_SIZE + (uint64_t)part->n * SDB_IDX_ENTRY_SIZE
                  : (part->n ? part->v[part->n - 1].data_end : 0);
    fill_stat(out, real, false);
    out->size = len;
    out->mtime = stable_mtime(v, out->ino, len, real);
    out->can_grow =
        segno == s->nseg || len != full || (uint64_t)real->st_size != len;
unlock:
    pthread_mutex_unlock(&v->lock);
    return rc;
}

/* ---- WAL capture ---- */

/* Extend st (valid prefix of one WAL file) from its cached end. */
static int wal_extend(int fd, uint64_t seed, struct wal_slot *st)
{
    unsigned char h[SDB_WAL_REC_HEADER], *buf = NULL;
    size_t cap = 0;
    int rc = 0;

    for (;;) {
        size_t rl, plen;
        uint64_t lsn;
        uint32_t cnt;
        ssize_t n = pread(fd, h, sizeof(h), (off_t)st->end);

        if (n < (ssize_t)sizeof(h))
            break;
        plen = (size_t)sdb_get_u32(h + 8);
        if (sdb_get_u32(h) != SDB_WAL_REC_MAGIC || plen == 0 ||
            plen > SDB_WAL_MAX_PAYLOAD)
            break;
        if (plen + sizeof(h) > cap) {
            void *p = realloc(buf, plen + sizeof(h));
            if (!p) {
                rc = SDB_ENOMEM;
                break;
            }
            buf = p;
            cap = plen + sizeof(h);
        }
        n = pread(fd, buf, plen + sizeof(h), (off_t)st->end);
        if (n < (ssize_t)(plen + sizeof(h)) ||
            !sdb_wal_check_record(buf, (size_t)n, 0, seed, &rl, &lsn, &cnt) ||
            lsn != st->last_lsn + 1)
            break;
        st->end += rl;
        st->last_lsn = lsn + cnt - 1;
    }
    free(buf);
    return rc;
}

/* Open, check and cut one WAL file; 1 if usable, 0 if not, < 0 on error. */
static int wal_capture(struct sdb_view_cut *c, struct cut_wal *w)
{
    struct sdb_view *v = c->v;
    unsigned char h[SDB_WAL_HEADER_SIZE];
    struct wal_slot *slot = &v->wals[w->seq % WAL_SLOTS], st;
    uint64_t seq, sid, first;
    char path[4200];
    int rc = 0;

    snprintf(path, sizeof(path), "%s/wal/%s", v->data_dir, w->name);
    w->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (w->fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if (fstat(w->fd, &w->st) < 0 ||
        pread(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        sdb_wal_parse_header(h, &seq, &sid, &first) < 0 || seq != w->seq ||
        sid != c->store_id || first == 0)
        return 0;
    pthread_mutex_lock(&v->lock);
    if (slot->ino != (uint64_t)w->st.st_ino || slot->seq != seq ||
        slot->store_id != sid) {
        slot->ino = (uint64_t)w->st.st_ino;
        slot->seq = seq;
        slot->store_id = sid;
        slot->first_lsn = first;
        slot->last_lsn = first - 1;
        slot->end = SDB_WAL_HEADER_SIZE;
        slot->shown_end = 0;
    }
    rc = wal_extend(w->fd, sdb_wal_seed(sid, seq), slot);
    if (slot->shown_end != slot->end) {
        /* A WAL file is preallocated, so it is never shown whole: keep its
         * mtime per length here (no eviction, unlike stable_mtime). */
        slot->shown_end = slot->end;
        slot->shown_mtime = w->st.st_mtim;
    }
    w->mtime = slot->shown_mtime;
    st = *slot;
    pthread_mutex_unlock(&v->lock);
    w->first_lsn = st.first_lsn;
    w->last_lsn = st.last_lsn;
    w->len = st.end;
    return rc < 0 ? rc : 1;
}

static int cmp_wal(const void *a, const void *b)
{
    const struct cut_wal *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool wal_name(const char *name, uint64_t *seq)
{
    char check[40];

    if (strlen(name) != 28 || strncmp(name, "segment-", 8) != 0)
        return false;
    *seq = strtoull(name + 8, NULL, 16);
    sdb_wal_segment_name(*seq, check);
    return strcmp(check, name) == 0;
}

/* List wal/ into c->wal (sorted, fds not yet opened). */
static int wal_list(struct sdb_view_cut *c)
{
    char path[4200];
    struct dirent *de;
    size_t cap = 0;
    uint64_t seq;
    DIR *d;

    snprintf(path, sizeof(path), "%s/wal", c->v->data_dir);
    if (!(d = opendir(path)))
        return errno == ENOENT ? 0 : -errno;
    while ((de = readdir(d)) != NULL) {
        if (!wal_name(de->d_name, &seq))
            continue;
        if (c->n_wal == cap) {
            void *p =
                realloc(c->wal, (cap = cap ? cap * 2 : 8) * sizeof(*c->wal));
            if (!p) {
                closedir(d);
                return SDB_ENOMEM;
            }
            c->wal = p;
        }
        memset(&c->wal[c->n_wal], 0, sizeof(*c->wal));
        c->wal[c->n_wal].fd = -1;
        c->wal[c->n_wal].seq = seq;
        sdb_wal_segment_name(seq, c->wal[c->n_wal++].name);
    }
    closedir(d);
    if (c->n_wal)
        qsort(c->wal, c->n_wal, sizeof(*c->wal), cmp_wal);
    return 0;
}

/* Keep the contiguous run of usable files that ends at the newest one. */
static void wal_trim(struct sdb_view_cut *c, const int *ok)
{
    size_t end = c->n_wal, start;

    while (end > 0 && !ok[end - 1])
        end--; /* a newest file whose header is not written yet */
    start = end;
    while (start > 0 && ok[start - 1] &&
           (start == end || c->wal[start - 1].seq + 1 == c->wal[start].seq) &&
           (start == end ||
            c->wal[start - 1].last_lsn + 1 == c->wal[start].first_lsn))
        start--;
    for (size_t i = 0; i < c->n_wal; i++)
        if ((i < start || i >= end) && c->wal[i].fd >= 0) {
            close(c->wal[i].fd);
            c->wal[i].fd = -1;
        }
    memmove(c->wal, c->wal + start, (end - start) * sizeof(*c->wal));
    c->n_wal = end - start;
}

static int capture_wal(struct sdb_view_cut *c)
{
    int *ok, rc = wal_list(c);

    if (rc < 0 || c->n_wal == 0)
        return rc;
    ok = calloc(c->n_wal, sizeof(*ok));
    if (!ok)
        return SDB_ENOMEM;
    for (size_t i = 0; rc == 0 && i < c->n_wal; i++) {
        rc = wal_capture(c, &c->wal[i]);
        ok[i] = rc == 1;
        rc = rc < 0 ? rc : 0;
    }
    if (rc == 0)
        wal_trim(c, ok);
    free(ok);
    return rc;
}

/* ---- metadata and snapshot capture ---- */

static int capture_meta(struct sdb_view_cut *c)
{
    char path[4200];
    int rc;

    snprintf(path, sizeof(path), "%s/metadata.json", c->v->data_dir);
    c->meta_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c->meta_fd < 0)
        return errno == ENOENT ? 0 : -errno;
    rc = fstat(c->meta_fd, &c->meta_st) < 0 ? -errno : 0;
    if (rc == 0)
        rc = read_fd(c->meta_fd, META_MAX, &c->meta_buf, &c->meta_len);
    if (rc == 0 &&
        sdb_meta_parse(c->meta_buf, c->meta_len, &c->meta, NULL) == 0) {
        c->has_meta = true;
        c->store_id = c->meta.store_id;
    }
    return rc;
}

/* Has the checkpoint moved since capture_meta?  1 yes, 0 no. */
static int meta_moved(struct sdb_view_cut *c)
{
    struct sdb_meta m;
    struct stat st;
    char path[4200];
    int rc;

    snprintf(path, sizeof(path), "%s/metadata.json", c->v->data_dir);
    if (stat(path, &st) < 0)
        return c->has_meta;
    if (c->meta_fd >= 0 && st.st_ino == c->meta_st.st_ino &&
        st.st_dev == c->meta_st.st_dev)
        return 0;
    rc = sdb_meta_read(sdb_io_posix(), c->v->data_dir, &m, NULL);
    if (rc < 0 || !c->has_meta)
        return 1;
    return m.checkpoint_lsn != c->meta.checkpoint_lsn ||
           m.store_id != c->meta.store_id;
}

/* Check index.snap's trailer checksum and header; its LSN, or 0. */
static uint64_t snap_check(int fd, uint64_t store_id)
{
    char *buf = NULL;
    size_t len = 0;
    uint64_t lsn = 0;
    const unsigned char *p;

    if (read_fd(fd, (size_t)1 << 34, &buf, &len) < 0)
        return 0;
    p = (const unsigned char *)buf;
    if (len >= 72 && sdb_hash64(buf, len - 8, 0) == sdb_get_u64(p + len - 8) &&
        memcmp(buf, "STMDBSNP", 8) == 0 && sdb_get_u32(p + 8) == 1 &&
        sdb_get_u64(p + 16) == store_id)
        lsn = sdb_get_u64(p + 24);
    free(buf);
    return lsn;
}

static void capture_snap(struct sdb_view_cut *c)
{
    struct sdb_view *v = c->v;
    char path[4200];
    uint64_t lsn;

    snprintf(path, sizeof(path), "%s/indexes/%s", v->db_dir, SNAP_NAME);
    c->snap_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c->snap_fd < 0)
        return;
    if (fstat(c->snap_fd, &c->snap_st) < 0)
        goto hide;
    pthread_mutex_lock(&v->lock);
    if (v->snap_ino != (uint64_t)c->snap_st.st_ino ||
        v->snap_size != (uint64_t)c->snap_st.st_size ||
        v->snap_mtime.tv_sec != c->snap_st.st_mtim.tv_sec ||
        v->snap_mtime.tv_nsec != c->snap_st.st_mtim.tv_nsec) {
        v->snap_ino = (uint64_t)c->snap_st.st_ino;
        v->snap_size = (uint64_t)c->snap_st.st_size;
        v->snap_mtime = c->snap_st.st_mtim;
        v->snap_lsn = snap_check(c->snap_fd, c->store_id);
    }
    lsn = v->snap_lsn;
    pthread_mutex_unlock(&v->lock);
    c->snap_lsn = lsn;
    if (lsn != 0)
        return;
hide:
    close(c->snap_fd);
    c->snap_fd = -1;
}

/* ---- cuts ---- */

static void cut_clear(struct sdb_view_cut *c)
{
    for (size_t i = 0; i < c->n_wal; i++)
        if (c->wal[i].fd >= 0)
            close(c->wal[i].fd);
    free(c->wal);
    c->wal = NULL;
    c->n_wal = 0;
    if (c->meta_fd >= 0)
        close(c->meta_fd);
    if (c->snap_fd >= 0)
        close(c->snap_fd);
    free(c->meta_buf);
    pins_free(c);
    c->meta_buf = NULL;
    c->meta_fd = c->snap_fd = -1;
    c->has_meta = false;
}

/* One attempt at steps 1-4 of the header comment; 1 if it must be redone. */
static int capture_once(struct sdb_view_cut *c)
{
    uint64_t ckpt;
    int rc = capture_meta(c);

    if (rc == 0 && c->has_meta)
        capture_snap(c);
    if (rc == 0 && c->has_meta)
        rc = capture_wal(c);
    if (rc < 0)
        return rc;
    if (meta_moved(c))
        return 1;
    if (!c->has_meta)
        return 0;
    ckpt = c->meta.checkpoint_lsn;
    if (c->n_wal && c->wal[0].first_lsn > ckpt + 1)
        return 1; /* the run does not reach back to the checkpoint */
    c->lsn_max = c->n_wal ? c->wal[c->n_wal - 1].last_lsn : 0;
    if (c->lsn_max < ckpt)
        c->lsn_max = ckpt;
    if (c->snap_fd >= 0 && (c->snap_lsn < ckpt || c->snap_lsn > c->lsn_max)) {
        close(c->snap_fd);
        c->snap_fd = -1;
    }
    return 0;
}

/*
 * The class of a captured cut: a hash of everything the capture saw, or 0.
 * Two cuts of one class show the same bytes for every path, because the
 * class is only given when the checkpoint has reached the last WAL record
 * (C == L): every record <= L is then in the segments before the capture,
 * so each pin is exactly the records <= L, whenever it is made.  Below
 * that, records <= L may still be landing, and two cuts with equal
 * captures can pin a directory at different lengths (step 5).
 */
static uint64_t cut_class(const struct sdb_view_cut *c)
{
    uint64_t h = 0x5344425643555431ULL;

    if (!c->has_meta || c->meta.checkpoint_lsn != c->lsn_max)
        return 0;
    h = mix(mix(mix(h, c->store_id), c->lsn_max), (uint64_t)c->meta_len);
    h = mix(mix(h, (uint64_t)c->meta_st.st_ino), (uint64_t)c->meta_st.st_size);
    h = mix(mix(h, (uint64_t)c->meta_st.st_mtim.tv_sec),
            (uint64_t)c->meta_st.st_mtim.tv_nsec);
    h = mix(mix(h, (uint64_t)c->meta_st.st_ctim.tv_sec),
            (uint64_t)c->meta_st.st_ctim.tv_nsec);
    h = mix(mix(h, (uint64_t)(c->snap_fd >= 0)), c->snap_lsn);
    if (c->snap_fd >= 0) {
        h = mix(mix(h, (uint64_t)c->snap_st.st_ino),
                (uint64_t)c->snap_st.st_size);
        h = mix(mix(h, (uint64_t)c->snap_st.st_mtim.tv_sec),
                (uint64_t)c->snap_st.st_mtim.tv_nsec);
    }
    h = mix(h, (uint64_t)c->n_wal);
    for (size_t i = 0; i < c->n_wal; i++) {
        const struct cut_wal *w = &c->wal[i];
        h = mix(mix(mix(h, w->seq), (uint64_t)w->st.st_ino), w->len);
        h = mix(mix(h, (uint64_t)w->mtime.tv_sec), (uint64_t)w->mtime.tv_nsec);
    }
    return h ? h : 1;
}

int sdb_view_cut_new(sdb_view *v, bool live, sdb_view_cut **out)
{
    struct sdb_view_cut *c = calloc(1, sizeof(*c));
    int rc = 0;

    *out = NULL;
    if (!c)
        return SDB_ENOMEM;
    c->v = v;
    atomic_init(&c->refs, 1);
    c->live = live;
    c->meta_fd = c->snap_fd = -1;
    if (live) {
        c->lsn_max = UINT64_MAX;
        *out = c;
        return 0;
    }
    for (int attempt = 0; attempt < 20; attempt++) {
        rc = capture_once(c);
        if (rc <= 0)
            break;
        cut_clear(c);
        usleep(1000u << (attempt < 6 ? attempt : 6));
    }
    if (rc == 0 && c->has_meta) {
        pthread_mutex_lock(&v->lock);
        v->store_id = c->store_id;
        pthread_mutex_unlock(&v->lock);
        c->cls = cut_class(c);
    }
    if (rc != 0) {
        cut_clear(c);
        free(c);
        return rc < 0 ? rc : SDB_EIO;
    }
    *out = c;
    return 0;
}

sdb_view_cut *sdb_view_cut_ref(sdb_view_cut *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void sdb_view_cut_unref(sdb_view_cut *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    cut_clear(c);
    free(c);
}

uint64_t sdb_view_cut_lsn(const sdb_view_cut *c)
{
    return c->lsn_max;
}

uint64_t sdb_view_cut_class(const sdb_view_cut *c)
{
    return c->cls;
}

bool sdb_view_cut_unchanged(sdb_view_cut *c)
{
    struct sdb_view *v = c->v;
    bool same = true;

    pthread_mutex_lock(&v->lock);
    for (size_t i = 0; same && i < c->cap_pins; i++) {
        struct dir_scan probe = {0};
        if (!c->pins[i].dir)
            continue;
        same = dir_files(v, c->pins[i].dir, &probe) == 0 &&
               probe.sig == c->pins[i].sig;
        free(probe.idx_st);
        free(probe.data_st);
    }
    pthread_mutex_unlock(&v->lock);
    return same;
}

/* ---- carrying unchanged directories into a later cut ---- */

/* The slot of dir[0, len) in c's pin table, or SIZE_MAX.  Under v->lock. */
static size_t pin_slot(const struct sdb_view_cut *c, const char *dir,
                       size_t len)
{
    size_t j;

    if (!c->cap_pins)
        return SIZE_MAX;
    j = pin_probe(c, dir, len);
    return c->pins[j].dir ? j : SIZE_MAX;
}

/* Give c a copy of pin p, unless c has one of its own: then both must
 * agree.  Under v->lock. */
static int pin_adopt(struct sdb_view_cut *c, const struct dir_pin *p)
{
    struct dir_pin *q;
    int rc;

    if (2 * (c->n_pins + 1) > c->cap_pins && (rc = pins_grow(c)) < 0)
        return rc;
    q = &c->pins[pin_probe(c, p->dir, strlen(p->dir))];
    if (q->dir)
        return q->sig == p->sig && q->n == p->n &&
                       (!p->n || !memcmp(q->k, p->k, p->n * sizeof(*p->k)))
                   ? 0
                   : SDB_EINVAL;
    q->sig = p->sig;
    q->nfile = p->nfile;
    q->whole = p->whole;
    q->n = p->n;
    q->k = p->n ? malloc(p->n * sizeof(*p->k)) : NULL;
    q->dir = strdup(p->dir);
    if ((p->n && !q->k) || !q->dir) {
        free(q->k);
        free(q->dir);
        memset(q, 0, sizeof(*q));
        return SDB_ENOMEM;
    }
    if (p->n)
        memcpy(q->k, p->k, p->n * sizeof(*p->k));
    c->n_pins++;
    return 0;
}

static size_t depth(const char *dir)
{
    size_t d = 0;

    for (; *dir; dir++)
        d += *dir == '/';
    return d;
}

static int cmp_depth(const void *a, const void *b, void *cut)
{
    const struct sdb_view_cut *c = cut;
    size_t dx = depth(c->pins[*(const size_t *)a].dir);
    size_t dy = depth(c->pins[*(const size_t *)b].dir);

    return dx != dy ? (dx < dy ? 1 : -1) : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Probe pins order[from, to) of cut c: state 1 and the subdirectory count
 * for each whose files are as they were at the pin.  Reads only the file
 * system, c's pins and v->db_dir (none of which change under v->lock). */
struct probe_job {
    struct sdb_view *v;
    const struct sdb_view_cut *c;
    const size_t *order;
    size_t from, to;
    unsigned char *state;
    uint32_t *kids;
};

static void *probe_range(void *arg)
{
    struct probe_job *pj = arg;

    for (size_t i = pj->from; i < pj->to; i++) {
        size_t j = pj->order[i];
        const struct dir_pin *p = &pj->c->pins[j];
        struct dir_scan probe = {0};

        if (p->whole && strcmp(p->dir, "indexes") != 0 &&
            dir_files_upto(pj->v, p->dir, p->nfile ? p->nfile : 1, &probe) ==
                0 &&
            probe.sig == p->sig && probe.nsub != NSUB_UNKNOWN) {
            pj->state[j] = 1;
            pj->kids[j] = probe.nsub; /* counted down by the carried ones */
        }
        free(probe.idx_st);
        free(probe.data_st);
    }
    return NULL;
}

/* probe_range over all n pins, on two threads when there are many (the
 * stats are most of a tree move's time).  Under v->lock. */
static void probe_pins(struct sdb_view *v, const struct sdb_view_cut *c,
                       const size_t *order, size_t n, unsigned char *state,
                       uint32_t *kids)
{
    struct probe_job a = {v, c, order, 0, n, state, kids}, b = a;
    pthread_t t;

    if (n >= 512) {
        a.to = b.from = n / 2;
        if (pthread_create(&t, NULL, probe_range, &b) == 0) {
            probe_range(&a);
            pthread_join(t, NULL);
            return;
        }
        a.to = n;
    }
    probe_range(&a);
}

/*
 * Why carrying is consistent.  old's pin of a directory D holds records
 * <= L_old only; `whole` says it held every record D's files had at the
 * pin, and an unchanged signature now (after c's capture) says the files
 * have had the same sizes and inodes since.  Any record of D <= C (c's
 * checkpoint) was on disk before c's capture, so it is in the pin; any
 * record of D in (C, L] that the pin lacks is in c's WAL copy; and with
 * L_old <= L nothing in it is newer than c.  The directory's mtime and
 * link count in the signature, and the rule that every subdirectory be
 * carried too, make the names below D the same as well.
 */
int sdb_view_cut_carry(sdb_view_cut *old, sdb_view_cut *c, char ***out,
                       size_t *n_out)
{
    struct sdb_view *v = c->v;
    size_t *order = NULL, n = 0, n_dirs = 0;
    uint32_t *kids = NULL;
    unsigned char *state = NULL; /* 1: whole and unchanged; 2: a bad kid */
    char **dirs = NULL;
    int rc = 0;

    *out = NULL;
    *n_out = 0;
    if (old == c || old->v != v || old->live || c->live ||
        old->lsn_max > c->lsn_max || old->store_id != c->store_id)
        return 0;
    pthread_mutex_lock(&v->lock);
    if (!old->n_pins)
        goto unlock;
    order = malloc(old->n_pins * sizeof(*order));
    kids = calloc(old->cap_pins, sizeof(*kids));
    state = calloc(old->cap_pins, 1);
    dirs = malloc(old->n_pins * sizeof(*dirs));
    if (!order || !kids || !state || !dirs) {
        rc = SDB_ENOMEM;
        goto unlock;
    }
    for (size_t j = 0; j < old->cap_pins; j++)
        if (old->pins[j].dir)
            order[n++] = j;
    probe_pins(v, old, order, n, state, kids);
    /* the deepest first, so a directory's kids are decided before it */
    qsort_r(order, n, sizeof(*order), cmp_depth, old);
    for (size_t i = 0; i < n; i++) {
        size_t j = order[i], pj;
        const char *dir = old->pins[j].dir, *slash = strrchr(dir, '/');
        bool ok = state[j] == 1 && kids[j] == 0;

        if (ok && pin_adopt(c, &old->pins[j]) < 0)
            ok = false;
        if (ok && !(dirs[n_dirs] = malloc(strlen(dir) + 4)))
            ok = false;
        if (ok)
            sprintf(dirs[n_dirs++], "db/%s", dir);
        if (!slash ||
            (pj = pin_slot(old, dir, (size_t)(slash - dir))) == SIZE_MAX)
            continue;
        if (ok && kids[pj] > 0)
            kids[pj]--;
        else
            state[pj] |= 2;
    }
unlock:
    pthread_mutex_unlock(&v->lock);
    free(order);
    free(kids);
    free(state);
    if (rc < 0) {
        for (size_t i = 0; i < n_dirs; i++)
            free(dirs[i]);
        free(dirs);
        return rc;
    }
    if (n_dirs) {
        qsort(dirs, n_dirs, sizeof(*dirs), cmp_str);
    } else {
        free(dirs);
        dirs = NULL;
    }
    *out = dirs;
    *n_out = n_dirs;
    return 0;
}

/* ---- paths inside a cut ---- */

/* A directory below db/ shown by the view: a concept or the retraction log. */
static bool shown_dir(const sdb_view_cut *c, const char *dir)
{
    char cpath[SDB_MAX_PATH_LEN + 1];

    if (strcmp(dir, SDB_RETRACTIONS_DIR) == 0)
        return !c->live;
    return sdb_dir_to_concept(dir, cpath, sizeof(cpath)) == 0;
}

static int real_dir_stat(struct sdb_view *v, const char *rel,
                         sdb_view_stat *out)
{
    char path[4200];
    struct stat st;

    snprintf(path, sizeof(path), "%s%s%s", v->data_dir, *rel ? "/" : "", rel);
    if (stat(path, &st) < 0)
        return errno == ENOENT || errno == ENOTDIR ? SDB_ENOTFOUND : -errno;
    if (!S_ISDIR(st.st_mode))
        return SDB_ENOTFOUND;
    fill_stat(out, &st, true);
    return 0;
}

/* Stat below db/: rel is relative to db/ ("" for db/ itself). */
static int db_stat(struct sdb_view_cut *c, const char *rel, sdb_view_stat *out)
{
    char dir[4200];
    const char *base = strrchr(rel, '/');
    uint32_t segno;
    bool is_idx;

    if (!*rel)
        return real_dir_stat(c->v, "db", out);
    if (!c->live && strcmp(rel, "indexes") == 0)
        return real_dir_stat(c->v, "db/indexes", out);
    if (!c->live && strcmp(rel, "indexes/" SNAP_NAME) == 0) {
        if (c->snap_fd < 0)
            return SDB_ENOTFOUND;
        fill_stat(out, &c->snap_st, false);
        out->can_grow = true; /* replaced at every checkpoint */
        pthread_mutex_lock(&c->v->lock);
        out->mtime = replaced_mtime(c->v, 1, &c->snap_st);
        pthread_mutex_unlock(&c->v->lock);
        return 0;
    }
    if (base && seg_name(base + 1, &segno, &is_idx)) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(base - rel), rel);
        if (!shown_dir(c, dir))
            return SDB_ENOTFOUND;
        return seg_stat(c, dir, segno, is_idx, out);
    }
    if (!shown_dir(c, rel))
        return SDB_ENOTFOUND;
    snprintf(dir, sizeof(dir), "db/%s", rel);
    return real_dir_stat(c->v, dir, out);
}

static int wal_find(const struct sdb_view_cut *c, const char *name)
{
    for (size_t i = 0; i < c->n_wal; i++)
        if (strcmp(c->wal[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void wal_stat(struct sdb_view_cut *c, size_t i, sdb_view_stat *out)
{
    struct cut_wal *w = &c->wal[i];

    fill_stat(out, &w->st, false);
    out->size = w->len;
    out->mtime = w->mtime;
    out->can_grow = i + 1 == c->n_wal;
}

int sdb_view_stat_path(sdb_view_cut *c, const char *rel, sdb_view_stat *out)
{
    int i;

    if (strncmp(rel, "db/", 3) == 0)
        return db_stat(c, rel + 3, out);
    if (strcmp(rel, "db") == 0)
        return db_stat(c, "", out);
    if (c->live)
        return SDB_ENOTFOUND;
    if (!*rel || strcmp(rel, "wal") == 0)
        return real_dir_stat(c->v, rel, out);
    if (strcmp(rel, "metadata.json") == 0) {
        if (!c->has_meta)
            return SDB_ENOTFOUND;
        fill_stat(out, &c->meta_st, false);
        out->size = c->meta_len;
        out->can_grow = true; /* replaced at every checkpoint */
        pthread_mutex_lock(&c->v->lock);
        out->mtime = replaced_mtime(c->v, 0, &c->meta_st);
        pthread_mutex_unlock(&c->v->lock);
        return 0;
    }
    if (strncmp(rel, "wal/", 4) == 0 && (i = wal_find(c, rel + 4)) >= 0) {
        wal_stat(c, (size_t)i, out);
        return 0;
    }
    return SDB_ENOTFOUND;
}

/* ---- listing ---- */

static int emit(struct sdb_view_cut *c, const char *dir_rel, const char *name,
                sdb_view_list_fn fn, void *arg)
{
    char rel[4200];
    sdb_view_stat st;
    int rc;

    snprintf(rel, sizeof(rel), "%s%s%s", dir_rel, *dir_rel ? "/" : "", name);
    rc = sdb_view_stat_path(c, rel, &st);
    if (rc == SDB_ENOTFOUND)
        return 0; /* vanished or hidden: not listed */
    return rc < 0 ? rc : fn(arg, name, &st);
}

/* Pin concept directory dir (below db/) of cut c, if it is one, so that
 * sdb_view_cut_unchanged notices segment files that appear in it. */
static void pin_dir(struct sdb_view_cut *c, const char *dir)
{
    struct dir_scan *s;
    const struct dir_pin *p;

    if (c->live || !shown_dir(c, dir))
        return;
    pthread_mutex_lock(&c->v->lock);
    if (get_scan(c->v, dir, &s) == 0)
        pin_get(c, dir, s, &p);
    pthread_mutex_unlock(&c->v->lock);
}

/* List a real directory below db/ (rel includes the "db" prefix). */
static int list_db(struct sdb_view_cut *c, const char *rel, sdb_view_list_fn fn,
                   void *arg)
{
    char path[4200];
    struct dirent *de;
    bool top = strcmp(rel, "db") == 0;
    int rc = 0;
    DIR *d;

    snprintf(path, sizeof(path), "%s/%s", c->v->data_dir, rel);
    if (!top)
        pin_dir(c, rel + 3);
    if (!(d = opendir(path)))
        return errno == ENOENT ? SDB_ENOTFOUND : -errno;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        uint32_t segno;
        bool is_idx;

        if (de->d_name[0] == '.')
            continue;
        if (de->d_name[0] == '@' && !seg_name(de->d_name, &segno, &is_idx) &&
            !(top && strcmp(de->d_name, SDB_RETRACTIONS_DIR) == 0))
            continue;
        if (top && de->d_name[0] == '@' && c->live)
            continue;
        if (top && strcmp(de->d_name, "indexes") == 0 && c->live)
            continue;
        rc = emit(c, rel, de->d_name, fn, arg);
    }
    closedir(d);
    return rc;
}

int sdb_view_list(sdb_view_cut *c, const char *rel, sdb_view_list_fn fn,
                  void *arg)
{
    sdb_view_stat st;
    int rc = sdb_view_stat_path(c, rel, &st);

    if (rc == 0 && !st.is_dir)
        rc = -ENOTDIR;
    if (rc < 0)
        return rc;
    if (!*rel) {
        const char *names[] = {"metadata.json", "wal", "db"};
        for (size_t i = 0; rc == 0 && i < 3; i++)
            rc = emit(c, "", names[i], fn, arg);
        return rc;
    }
    if (strcmp(rel, "wal") == 0) {
        for (size_t i = 0; rc == 0 && i < c->n_wal; i++) {
            wal_stat(c, i, &st);
            rc = fn(arg, c->wal[i].name, &st);
        }
        return rc;
    }
    if (strcmp(rel, "db/indexes") == 0)
        return emit(c, rel, SNAP_NAME, fn, arg);
    return list_db(c, rel, fn, arg);
}

int sdb_view_open_file(sdb_view_cut *c, const char *rel, int *out_fd,
                       sdb_view_stat *out)
{
    char path[4200];
    int rc = sdb_view_stat_path(c, rel, out), fd = -1, i;

    *out_fd = -1;
    if (rc == 0 && out->is_dir)
        rc = -EISDIR;
    if (rc < 0)
        return rc;
    if (strcmp(rel, "metadata.json") == 0) {
        fd = fcntl(c->meta_fd, F_DUPFD_CLOEXEC, 0);
    } else if (strcmp(rel, "db/indexes/" SNAP_NAME) == 0) {
        fd = fcntl(c->snap_fd, F_DUPFD_CLOEXEC, 0);
    } else if (strncmp(rel, "wal/", 4) == 0 &&
               (i = wal_find(c, rel + 4)) >= 0) {
        fd = fcntl(c->wal[i].fd, F_DUPFD_CLOEXEC, 0);
    } else {
        snprintf(path, sizeof(path), "%s/%s", c->v->data_dir, rel);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    *out_fd = fd;
    return 0;
}

int sdb_view_committed_length(const char *data_dir, const char *rel,
                              uint64_t *out_len)
{
    sdb_view *v;
    sdb_view_cut *c;
    sdb_view_stat st;
    int rc = sdb_view_open(data_dir, &v);

    if (rc < 0)
        return rc;
    rc = sdb_view_cut_new(v, false, &c);
    if (rc == 0) {
        rc = sdb_view_stat_path(c, rel, &st);
        if (rc == 0 && st.is_dir)
            rc = -EISDIR;
        if (rc == 0)
            *out_len = st.size;
        sdb_view_cut_unref(c);
    }
    sdb_view_close(v);
    return rc;
}

/* ---- display names of concept directories ---- */

static bool needs_escaped_form(const char *comp, size_t n)
{
    if (n == 0 || comp[0] == '@' || strcmp(comp, ".") == 0 ||
        strcmp(comp, "..") == 0 || strcmp(comp, JSON_NAME) == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)comp[i];
        if (b < 0x20 || b == 0x7F || b == '%' || b == '/')
            return true;
    }
    return false;
}

int sdb_view_shown_name(const char *escaped, bool top, char *out, size_t cap)
{
    char comp[256], again[256];
    int n = sdb_path_unescape_component(escaped, comp, sizeof(comp));

    if (n < 0 || memchr(comp, '/', (size_t)n) ||
        sdb_path_escape_component(comp, (size_t)n, top, again, sizeof(again)) <
            0 ||
        strcmp(again, escaped) != 0)
        return SDB_EINVAL;
    if (!needs_escaped_form(comp, (size_t)n)) {
        if ((size_t)n >= cap)
            return SDB_ETOOBIG;
        memcpy(out, comp, (size_t)n + 1);
        return 0;
    }
    if (strchr(escaped, '%')) {
        if (strlen(escaped) >= cap)
            return SDB_ETOOBIG;
        strcpy(out, escaped);
        return 0;
    }
    /* an escaped form without '%' ("assertions.json"): escape byte 0 too */
    if (strlen(escaped) + 3 >= cap)
        return SDB_ETOOBIG;
    snprintf(out, cap, "%%%02X%s", (unsigned char)escaped[0], escaped + 1);
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A shown name back to its component; SDB_ENOTFOUND if none shows so. */
static int shown_to_component(const char *shown, bool top, char *out,
                              size_t cap)
{
    char esc[256], again[256];
    size_t o = 0;

    for (const char *p = shown; *p; p++) {
        int hi = 0, lo = 0;
        if (*p == '%' && ((hi = hexval(p[1])) < 0 || (lo = hexval(p[2])) < 0))
            return SDB_ENOTFOUND;
        if (o + 1 >= cap)
            return SDB_ENOTFOUND;
        out[o++] = *p == '%' ? (char)(hi * 16 + lo) : *p;
        p += *p == '%' ? 2 : 0;
    }
    out[o] = 0;
    if (o == 0 || memchr(out, 0, o) ||
        sdb_path_escape_component(out, o, top, esc, sizeof(esc)) < 0 ||
        sdb_view_shown_name(esc, top, again, sizeof(again)) < 0 ||
        strcmp(again, shown) != 0)
        return SDB_ENOTFOUND;
    return 0;
}

int sdb_view_concept_resolve(const char *shown_path, char *out, size_t cap)
{
    char comp[256], buf[4200];
    size_t o = 0;
    int rc = 0;

    snprintf(buf, sizeof(buf), "%s", shown_path);
    if (!*shown_path || strlen(shown_path) >= sizeof(buf))
        return SDB_ENOTFOUND;
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok && rc == 0;
         tok = strtok_r(NULL, "/", &save)) {
        size_t n;
        rc = shown_to_component(tok, o == 0, comp, sizeof(comp));
        n = strlen(comp);
        if (rc == 0 && o + n + 2 > cap)
            rc = SDB_ETOOBIG;
        if (rc == 0 && o > 0)
            out[o++] = '/';
        if (rc == 0)
            memcpy(out + o, comp, n + 1), o += n;
    }
    return rc;
}

/* ---- assertions.json ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

struct ret_acc {
    uint64_t *v;
    size_t n, cap;
};

static int ret_record(void *arg, uint64_t lsn, int type,
                      const struct sdb_loc *loc, const unsigned char *rec)
{
    struct ret_acc *acc = arg;
    struct sdb_record r;
    size_t used;
    int rc;

    (void)lsn;
    if (type != SDB_REC_RETRACTION ||
        sdb_codec_unpack(rec, loc->len, &used, &r, NULL) < 0)
        return 0;
    rc = r.type == SDB_REC_RETRACTION ? 0 : SDB_ECORRUPT;
    for (size_t i = 0; rc == 0 && i < r.r.n_retracted; i++) {
        if (acc->n == acc->cap) {
            size_t cap = acc->cap ? acc->cap * 2 : 64;
            void *p = realloc(acc->v, cap * sizeof(*acc->v));
            if (!p) {
                rc = SDB_ENOMEM;
                break;
            }
            acc->v = p;
            acc->cap = cap;
        }
        acc->v[acc->n++] = r.r.retracted[i];
    }
    sdb_record_release(&r);
    return rc == SDB_ECORRUPT ? 0 : rc;
}

/* Refresh v->ret_lsns from db/@retractions if its files changed. */
static int retractions_locked(struct sdb_view *v)
{
    struct dir_scan probe = {0};
    struct sdb_seginfo si = {.dir = (char *)SDB_RETRACTIONS_DIR};
    struct ret_acc acc = {0};
    char bad[512];
    int rc = dir_files(v, SDB_RETRACTIONS_DIR, &probe);

    free(probe.idx_st);
    free(probe.data_st);
    if (rc < 0 || (probe.sig == v->ret_sig && v->ret_sig != 0))
        return rc;
    si.chash = str_hash(SDB_RETRACTIONS_DIR);
    rc = sdb_seg_scan(sdb_io_posix(), v->db_dir, &si, store_id_locked(v),
                      ret_record, &acc, bad, sizeof(bad));
    if (rc < 0) {
        free(acc.v);
        return rc;
    }
    if (acc.n)
        qsort(acc.v, acc.n, sizeof(*acc.v), cmp_u64);
    free(v->ret_lsns);
    v->ret_lsns = acc.v;
    v->n_ret = acc.n;
    v->ret_sig = probe.sig ? probe.sig : 1;
    return 0;
}

struct concept_acc {
    struct sdb_view *v;
    json_t *list;
};

static int concept_record(void *arg, uint64_t lsn, int type,
                          const struct sdb_loc *loc, const unsigned char *rec)
{
    struct concept_acc *acc = arg;
    struct sdb_record r;
    size_t used;
    json_t *j;
    int rc;

    if (type != SDB_REC_ASSERTION ||
        bsearch(&lsn, acc->v->ret_lsns, acc->v->n_ret, sizeof(uint64_t),
                cmp_u64))
        return 0;
    rc = sdb_codec_unpack(rec, loc->len, &used, &r, NULL);
    if (rc < 0)
        return rc == SDB_ENOMEM ? rc : 0; /* the server reports it too */
    j = r.type == SDB_REC_ASSERTION ? sdb_assertion_to_json(&r.a) : NULL;
    sdb_record_release(&r);
    if (!j)
        return SDB_ENOMEM;
    json_object_set_new(j, "retracted", json_false());
    return json_array_append_new(acc->list, j) == 0 ? 0 : SDB_ENOMEM;
}

/* Under v->lock. */
static int concept_json_locked(struct sdb_view *v, const char *concept_path,
                               json_t **out)
{
    char dir[SDB_MAX_PATH_LEN * 3 + 1], bad[512], path[4200];
    struct sdb_seginfo si = {0};
    struct concept_acc acc = {v, json_array()};
    struct stat st;
    json_t *doc, *sorted;
    int rc;

    if (!acc.list)
        return SDB_ENOMEM;
    rc = sdb_concept_to_dir(concept_path, dir, sizeof(dir), NULL);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/%s", v->db_dir, dir);
        rc = stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : SDB_ENOTFOUND;
    }
    if (rc == 0)
        rc = retractions_locked(v);
    si.dir = dir;
    si.chash = str_hash(concept_path);
    if (rc == 0)
        rc = sdb_seg_scan(sdb_io_posix(), v->db_dir, &si, store_id_locked(v),
                          concept_record, &acc, bad, sizeof(bad));
    sorted = rc == 0 ? json_array() : NULL;
    for (size_t i = json_array_size(acc.list); sorted && i > 0; i--)
        json_array_append(sorted, json_array_get(acc.list, i - 1));
    json_decref(acc.list);
    if (rc == 0 && !sorted)
        rc = SDB_ENOMEM;
    if (rc < 0)
        return rc;
    doc = json_pack("{s:s, s:I, s:o}", "concept_path", concept_path, "count",
                    (json_int_t)json_array_size(sorted), "assertions", sorted);
    *out = doc;
    return doc ? 0 : SDB_ENOMEM;
}

int sdb_view_concept_json(sdb_view *v, const char *concept_path, json_t **out)
{
    int rc;

    *out = NULL;
    pthread_mutex_lock(&v->lock);
    rc = concept_json_locked(v, concept_path, out);
    pthread_mutex_unlock(&v->lock);
    return rc;
}

int sdb_view_concept_text(sdb_view *v, const char *concept_path, char **out,
                          size_t *out_len)
{
    char dir[SDB_MAX_PATH_LEN * 3 + 1];
    struct text_slot *t = &v->texts[str_hash(concept_path) % TEXT_SLOTS];
    struct dir_scan probe = {0};
    json_t *doc = NULL;
    uint64_t sig;
    int rc = sdb_concept_to_dir(concept_path, dir, sizeof(dir), NULL);

    *out = NULL;
    if (rc < 0)
        return SDB_ENOTFOUND;
    pthread_mutex_lock(&v->lock);
    rc = dir_files(v, dir, &probe);
    free(probe.idx_st);
    free(probe.data_st);
    if (rc == 0)
        rc = retractions_locked(v);
    sig = mix(probe.sig, v->ret_sig);
    if (rc == 0 &&
        !(t->path && t->sig == sig && strcmp(t->path, concept_path) == 0)) {
        char *text = NULL, *p = NULL;
        rc = concept_json_locked(v, concept_path, &doc);
        if (rc == 0)
            text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (rc == 0 && (!text || !(p = strdup(concept_path))))
            rc = SDB_ENOMEM;
        if (rc == 0) {
            free(t->path);
            free(t->text);
            t->path = p;
            t->text = text;
            t->len = strlen(text);
            t->sig = sig;
            /* a trailing newline for cat */
            text = realloc(t->text, t->len + 2);
            if (text) {
                t->text = text;
                t->text[t->len++] = '\n';
                t->text[t->len] = 0;
            }
        } else {
            free(text);
            free(p);
        }
        json_decref(doc);
    }
    if (rc == 0 && !(*out = malloc(t->len + 1)))
        rc = SDB_ENOMEM;
    if (rc == 0) {
        memcpy(*out, t->text, t->len + 1);
        *out_len = t->len;
    }
    pthread_mutex_unlock(&v->lock);
    return rc;
}

/* ---- health ---- */

/* Is data/LOCK held (flock) by some process?  Reads /proc/locks only. */
static int lock_state(struct sdb_view *v, long *pid_out)
{
    char path[4200], line[256], *pidbuf = NULL;
    size_t plen = 0;
    struct stat st;
    long pid = 0;
    int held = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/LOCK", v->data_dir);
    if (stat(path, &st) < 0)
        return 0;
    if (sdb_io_read_file(sdb_io_posix(), path, 64, &pidbuf, &plen) == 0)
        pid = strtol(pidbuf, NULL, 10);
    free(pidbuf);
    if (!(f = fopen("/proc/locks", "r")))
        return -1;
    while (!held && fgets(line, sizeof(line), f)) {
        unsigned maj, mnr;
        unsigned long long ino;
        long lpid;
        if (strstr(line, "->") || !strstr(line, "FLOCK"))
            continue;
        if (sscanf(line, "%*s FLOCK %*s %*s %ld %x:%x:%llu", &lpid, &maj, &mnr,
                   &ino) != 4 ||
            ino != (unsigned long long)st.st_ino)
            continue;
        held =
            (maj == major(st.st_dev) && mnr == minor(st.st_dev)) || lpid == pid;
        if (held)
            *pid_out = lpid;
    }
    fclose(f);
    return held;
}

int sdb_view_health(sdb_view *v, json_t **out)
{
    sdb_view_cut *c;
    json_t *h;
    char created[32], sid[17];
    long pid = 0;
    int held = lock_state(v, &pid);
    int rc = sdb_view_cut_new(v, false, &c);

    *out = NULL;
    if (rc < 0)
        return rc;
    h = json_pack("{s:s, s:b, s:b}", "data_dir", v->data_dir, "metadata_ok",
                  c->has_meta, "index_snapshot", c->snap_fd >= 0);
    if (h && held >= 0) {
        json_object_set_new(h, "lock_held", json_boolean(held));
        json_object_set_new(h, "server_pid",
                            held ? json_integer(pid) : json_null());
    }
    if (h && c->has_meta) {
        sdb_time_format(c->meta.created_us, created);
        snprintf(sid, sizeof(sid), "%016" PRIx64, c->meta.store_id);
        json_object_set_new(h, "store_id", json_string(sid));
        json_object_set_new(h, "created", json_string(created));
        json_object_set_new(
            h, "metadata",
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "last_lsn",
                      (json_int_t)c->meta.last_lsn, "checkpoint_lsn",
                      (json_int_t)c->meta.checkpoint_lsn, "assertion_count",
                      (json_int_t)c->meta.assertion_count, "retraction_count",
                      (json_int_t)c->meta.retraction_count, "concept_count",
                      (json_int_t)c->meta.concept_count, "restarts",
                      (json_int_t)c->meta.restarts));
        json_object_set_new(h, "wal_segments",
                            json_integer((json_int_t)c->n_wal));
        json_object_set_new(h, "wal_last_lsn",
                            json_integer((json_int_t)c->lsn_max));
        json_object_set_new(h, "index_snapshot_lsn",
                            c->snap_fd >= 0
                                ? json_integer((json_int_t)c->snap_lsn)
                                : json_null());
    }
    sdb_view_cut_unref(c);
    *out = h;
    return h ? 0 : SDB_ENOMEM;
}
