/*
 * verify.c - the checks and repairs behind stemedb-fsck (docs/fsck.md).
 *
 * Reads a data directory or a backup (metadata.json, wal/, db/) through
 * the io seam and the formats' own helpers (wal.h, segment.h, meta.h,
 * codec.h, index.h); trusts no length before checking it against the
 * bytes present.  It writes only when a repair flag is given, and it never
 * deletes: bytes it replaces or cannot repair move to DIR/lost+found/ with
 * a note.  tools/fsck.c only prints what this file reports.
 *
 * A run:  lock (repairs only) -> check pass -> while fixes apply: apply
 * them, check again (at most MAX_ROUNDS) -> report the first pass's
 * problems, each marked repaired when the last pass no longer finds it.
 *
 * One check pass, in order: metadata.json; the list of WAL segments (and
 * the store id, if metadata.json is unusable); db/indexes/index.snap; the
 * concept tree (every idx entry against its record); the WAL records
 * (cross-checked by LSN against the segment records); the snapshot against
 * the segments both ways; counts.
 */
#define _GNU_SOURCE
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "hash.h"
#include "index.h"
#include "io.h"
#include "meta.h"
#include "path.h"
#include "segment.h"
#include "wal.h"

#define MAX_ROUNDS    6
#define MAX_SHOWN     50 /* problems kept per id; the rest are counted */
#define REBUILD_SPLIT (1u << 30)
#define SNAP_REL      "db/indexes/index.snap"
#define LOST_FOUND    "lost+found"

static const struct {
    const char *name;
    int severity;
} msg_table[] = {
#define SDB_FSCK_ROW(id, name, sev) {#name, SDB_FSCK_##sev},
    SDB_FSCK_MSG(SDB_FSCK_ROW)
#undef SDB_FSCK_ROW
};

const char *sdb_fsck_msg_name(int id)
{
    return id >= 0 && id < SDB_FSCK_MSG_COUNT ? msg_table[id].name : NULL;
}

int sdb_fsck_msg_severity(int id)
{
    return id >= 0 && id < SDB_FSCK_MSG_COUNT ? msg_table[id].severity : -1;
}

/* ---- what a pass collects ---- */

struct prob {
    int id;
    char *file;
    int64_t off;
    char *msg;
    bool repaired;
};

enum fix_kind { FIX_MOVE, FIX_ZERO_TAIL, FIX_WAL_CUT, FIX_REBUILD, FIX_META };
enum fix_class { SAFE = 1, ALL = 2 };

struct fix {
    int kind;
    int cls;
    char *file;   /* relative to DIR (MOVE, ZERO_TAIL, WAL_CUT) */
    uint64_t off; /* ZERO_TAIL, WAL_CUT */
    size_t idx;   /* WAL_CUT: segment index; REBUILD: concept index */
};

struct cdir {
    char *rel;  /* below db/ */
    char *path; /* concept path; "" for @retractions */
    uint64_t chash;
    bool retractions;
    bool bad;   /* a file or record of it failed: rebuild it */
    bool lossy; /* the rebuild may lose records: -y only */
    uint32_t nseg;
};

struct rec {
    uint64_t lsn;
    uint64_t hash; /* from the idx entry */
    uint32_t cidx, segno, off, len;
    uint8_t type;
    uint8_t bad;    /* failed verification */
    uint8_t in_wal; /* a WAL copy matches it */
    /* a record failing its idx hash: which side is wrong is decided after
     * the WAL scan, by vote (snapshot, then WAL copy, then decoding) */
    uint8_t suspect;
    uint8_t fits;      /* the record decodes and belongs here */
    uint8_t snap_vote; /* 1: the idx entry is right, 2: the record is */
    uint8_t wal_vote;
    uint8_t len_wrong; /* the entry's length is what is wrong */
    uint32_t ipos;     /* offset of its idx entry */
    uint64_t actual;   /* hash of the bytes as they are */
};

/* A WAL copy of a record that is bad or missing in the segments. */
struct wcopy {
    uint64_t lsn;
    uint64_t off; /* file offset of the msgpack record */
    uint32_t wal; /* index in walsegs */
    uint32_t len;
    uint8_t type;
    char *cpath; /* assertion's concept path; NULL for a retraction */
};

/* A concept directory to check: has[segno] bit 1 .msgpack, bit 2 .idx. */
struct job {
    uint32_t cidx;
    uint32_t nseg;
    unsigned char *has; /* owned */
};

struct walseg {
    char *name;
    uint64_t seq;
};

struct vctx {
    const sdb_io *io;
    const char *dir;
    unsigned flags;
    sdb_fsck_fn fn;
    void *arg;
    sdb_fsck_report *rep;
    bool count_bytes;
    _Atomic int oprc; /* first operational error */
    atomic_bool cancel;
    /* Concept directories are checked by a few threads; everything they
     * share (probs, shown, fixes, recs, the report, the callback) is
     * protected by lock.  Each job owns its cdirs[cidx] flags. */
    pthread_mutex_t lock;
    struct job *jobs;
    size_t njobs, capjobs;
    atomic_size_t next_job;

    struct sdb_meta meta;
    bool have_meta;
    bool backup;           /* DIR is a stemedb-backup directory */
    const char *meta_name; /* the store's metadata file */
    uint64_t store_id;
    bool have_store;
    uint64_t ckpt;

    struct prob *probs;
    size_t np, capp;
    uint64_t shown[SDB_FSCK_MSG_COUNT];
    struct fix *fixes;
    size_t nf, capf;
    struct cdir *cdirs;
    size_t nc, capc;
    struct rec *recs;
    size_t nr, capr;
    struct wcopy *wcs;
    size_t nw, capw;
    struct walseg *wal;
    size_t nwal, capwal;
    uint64_t wal_last, wal_max;
    bool wal_known;
    size_t wal_end; /* end of the log in the newest segment */
    bool wal_cross_bad;
    struct sdb_index *snap;
    uint64_t snap_lsn;
    bool snap_bad;
};

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *np;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 16;
    np = realloc(*p, ncap * size);
    if (!np)
        return SDB_ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

/* Record the first operational error (any thread). */
static void set_oprc(struct vctx *v, int rc)
{
    int none = 0;

    atomic_compare_exchange_strong(&v->oprc, &none, rc);
}

static void oom(struct vctx *v)
{
    set_oprc(v, SDB_ENOMEM);
}

static char *fmt(struct vctx *v, const char *f, ...)
    __attribute__((format(printf, 2, 3)));
static char *fmt(struct vctx *v, const char *f, ...)
{
    char *s = NULL;
    va_list ap;
    int n;

    va_start(ap, f);
    n = vasprintf(&s, f, ap);
    va_end(ap);
    if (n < 0) {
        oom(v);
        return NULL;
    }
    return s;
}

static void add_prob(struct vctx *v, int id, const char *file, int64_t off,
                     const char *f, ...) __attribute__((format(printf, 5, 6)));
static void add_prob(struct vctx *v, int id, const char *file, int64_t off,
                     const char *f, ...)
{
    struct prob *p;
    va_list ap;
    int n;

    pthread_mutex_lock(&v->lock);
    if (v->shown[id]++ >= MAX_SHOWN ||
        grow((void **)&v->probs, &v->capp, v->np, sizeof(*p)) < 0) {
        if (v->shown[id] <= MAX_SHOWN)
            oom(v);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    p = &v->probs[v->np];
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->off = off;
    p->file = strdup(file ? file : "");
    va_start(ap, f);
    n = vasprintf(&p->msg, f, ap);
    va_end(ap);
    if (n < 0 || !p->file) {
        free(p->file);
        if (n >= 0)
            free(p->msg);
        oom(v);
    } else {
        v->np++;
    }
    pthread_mutex_unlock(&v->lock);
}

static void add_fix(struct vctx *v, int kind, int cls, const char *file,
                    uint64_t off, size_t idx)
{
    struct fix *x;

    pthread_mutex_lock(&v->lock);
    if (grow((void **)&v->fixes, &v->capf, v->nf, sizeof(*x)) < 0) {
        oom(v);
        goto unlock;
    }
    x = &v->fixes[v->nf];
    x->kind = kind;
    x->cls = cls;
    x->off = off;
    x->idx = idx;
    x->file = file ? strdup(file) : NULL;
    if (file && !x->file)
        oom(v);
    else
        v->nf++;
unlock:
    pthread_mutex_unlock(&v->lock);
}

static void tick(struct vctx *v)
{
    pthread_mutex_lock(&v->lock);
    if (v->fn && !v->cancel && v->fn(v->arg, NULL, v->rep))
        v->cancel = true;
    pthread_mutex_unlock(&v->lock);
}

static bool all_zero(const unsigned char *p, size_t n)
{
    static const unsigned char zeros[4096];

    for (; n >= sizeof(zeros); p += sizeof(zeros), n -= sizeof(zeros))
        if (memcmp(p, zeros, sizeof(zeros)) != 0)
            return false;
    return n == 0 || memcmp(p, zeros, n) == 0;
}

/* Read DIR/rel whole.  -ENOENT is the caller's; other errors are fatal. */
static int load(struct vctx *v, const char *rel, unsigned char **buf,
                size_t *len)
{
    char *path = fmt(v, "%s/%s", v->dir, rel);
    char *b = NULL;
    int rc;

    *buf = NULL;
    *len = 0;
    if (!path)
        return SDB_ENOMEM;
    rc = sdb_io_read_file(v->io, path, (size_t)1 << 36, &b, len);
    free(path);
    if (rc < 0 && rc != -ENOENT)
        set_oprc(v, rc);
    if (rc < 0)
        return rc;
    *buf = (unsigned char *)b;
    pthread_mutex_lock(&v->lock);
    v->rep->files += v->count_bytes;
    if (v->count_bytes)
        v->rep->bytes += *len;
    pthread_mutex_unlock(&v->lock);
    return 0;
}

static int cmp_rec(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;

    if (x->lsn != y->lsn)
        return x->lsn < y->lsn ? -1 : 1;
    return x->cidx < y->cidx ? -1 : x->cidx > y->cidx;
}

/* The first segment record with this LSN (recs sorted), or NULL. */
static struct rec *find_rec(struct vctx *v, uint64_t lsn)
{
    size_t lo = 0, hi = v->nr;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->recs[mid].lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < v->nr && v->recs[lo].lsn == lsn ? &v->recs[lo] : NULL;
}

/* ---- metadata.json ---- */

/* Byte offset where buf differs from how sdb_meta_write lays the document
 * out (2-space indent, sorted keys, lowercase hex, a final newline), or -1. */
static int64_t meta_noncanonical(const unsigned char *buf, size_t len,
                                 json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    size_t n = s ? strlen(s) : 0, i = 0;
    int64_t off = -1;

    if (!s)
        return -1;
    /* hex is written lowercase; strtoull alone would accept either case */
    for (int k = 0; k < 2; k++) {
        const char *hx = json_string_value(
            json_object_get(doc, k ? "store_id" : "checksum"));
        const char *at = hx ? strstr((const char *)buf, hx) : NULL;
        for (size_t j = 0; hx && hx[j]; j++)
            if (!((hx[j] >= '0' && hx[j] <= '9') ||
                  (hx[j] >= 'a' && hx[j] <= 'f'))) {
                free(s);
                return at ? (int64_t)(at - (const char *)buf + (long)j) : 0;
            }
    }
    while (i < n && i < len && (unsigned char)s[i] == buf[i])
        i++;
    if (i != n || len != n + 1 || buf[n] != '\n')
        off = (int64_t)i;
    free(s);
    return off;
}

/* Parse the store's metadata file (name) from buf. */
static void parse_meta(struct vctx *v, const char *name,
                       const unsigned char *buf, size_t len, json_t *doc)
{
    sdb_error err = {0};
    int64_t off = 0;
    int rc = sdb_meta_parse((const char *)buf, len, &v->meta, &err), id;

    if (rc == SDB_ENOMEM) {
        oom(v);
        return;
    }
    if (rc == 0 && (off = meta_noncanonical(buf, len, doc)) >= 0) {
        add_prob(v, SDB_FSCK_BAD_METADATA, name, off,
                 "not laid out byte for byte as StemeDB writes it");
    } else if (rc < 0) {
        id = rc == SDB_EVERSION                       ? SDB_FSCK_BAD_VERSION
             : doc && strstr(err.message, "checksum") ? SDB_FSCK_BAD_CHECKSUM
                                                      : SDB_FSCK_BAD_METADATA;
        add_prob(v, id, name, 0, "%s", err.message);
    }
    if (rc < 0 || off >= 0) {
        if (!v->backup)
            add_fix(v, FIX_META, ALL, NULL, 0, 0);
        return;
    }
    v->have_meta = v->have_store = true;
    v->store_id = v->meta.store_id;
    v->ckpt = v->meta.checkpoint_lsn;
    v->rep->checkpoint_lsn = v->meta.checkpoint_lsn;
    v->rep->last_lsn = v->meta.last_lsn;
}

static void check_meta(struct vctx *v)
{
    unsigned char *buf;
    json_error_t jerr;
    json_t *doc;
    size_t len;
    int rc = load(v, "metadata.json", &buf, &len);

    v->meta_name = "metadata.json";
    if (rc == -ENOENT) {
        add_prob(v, SDB_FSCK_MISSING_FILE, "metadata.json", -1,
                 "metadata.json is missing");
        add_fix(v, FIX_META, ALL, NULL, 0, 0);
    }
    if (rc < 0)
        return;
    doc = json_loadb((const char *)buf, len, 0, &jerr);
    if (!doc) {
        add_prob(v, SDB_FSCK_BAD_METADATA, "metadata.json", jerr.position,
                 "metadata.json is not valid JSON: %s", jerr.text);
        add_fix(v, FIX_META, ALL, NULL, 0, 0);
    } else if (json_is_object(doc) &&
               !strcmp(json_string_value(json_object_get(doc, "format"))
                           ? json_string_value(json_object_get(doc, "format"))
                           : "",
                       "stemedb-backup")) {
        /* a backup: its metadata.json is the manifest, the store's
         * metadata.json is kept as store-metadata.json */
        v->backup = true;
        v->meta_name = "store-metadata.json";
        json_decref(doc);
        free(buf);
        rc = load(v, v->meta_name, &buf, &len);
        if (rc == -ENOENT)
            add_prob(v, SDB_FSCK_MISSING_FILE, v->meta_name, -1,
                     "the backup has no store-metadata.json");
        if (rc < 0)
            return;
        doc = json_loadb((const char *)buf, len, 0, &jerr);
        if (!doc)
            add_prob(v, SDB_FSCK_BAD_METADATA, v->meta_name, jerr.position,
                     "not valid JSON: %s", jerr.text);
    }
    if (doc)
        parse_meta(v, v->meta_name, buf, len, doc);
    json_decref(doc);
    free(buf);
    tick(v);
}

/* ---- the top level ---- */

static int check_top(struct vctx *v)
{
    static const char *const known[] = {
        "metadata.json", "store-metadata.json", "LOCK", "wal", "db",
        LOST_FOUND};
    DIR *d = opendir(v->dir);
    struct dirent *de;
    struct stat st;

    if (!d)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        bool ok = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
        for (size_t i = 0; !ok && i < sizeof(known) / sizeof(*known); i++)
            ok = !strcmp(de->d_name, known[i]);
        if (ok)
            continue;
        if (!strcmp(de->d_name, "metadata.json.tmp")) {
            add_prob(v, SDB_FSCK_ORPHAN_FILE, de->d_name, -1,
                     "left over from an interrupted metadata update");
            add_fix(v, FIX_MOVE, ALL, de->d_name, 0, 0);
        } else {
            add_prob(v, SDB_FSCK_UNKNOWN_FILE, de->d_name, -1,
                     "not part of the store layout; left alone");
        }
    }
    closedir(d);
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "db" : "wal";
        char *p = fmt(v, "%s/%s", v->dir, name);
        if (!p)
            return SDB_ENOMEM;
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
            add_prob(v, SDB_FSCK_MISSING_FILE, name, -1,
                     "directory %s/ is missing", name);
        free(p);
    }
    return 0;
}

/* ---- WAL ---- */

static bool parse_wal_name(const char *name, uint64_t *seq)
{
    char check[40];

    if (strlen(name) != 28 || strncmp(name, "segment-", 8) != 0 ||
        strcmp(name + 24, ".wal") != 0)
        return false;
    for (int i = 8; i < 24; i++)
        if (!((name[i] >= '0' && name[i] <= '9') ||
              (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    *seq = strtoull(name + 8, NULL, 16);
    sdb_wal_segment_name(*seq, check);
    return strcmp(check, name) == 0;
}

static int cmp_walseg(const void *a, const void *b)
{
    const struct walseg *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Take the store id from the first WAL header that checks out. */
static void store_from_wal(struct vctx *v)
{
    unsigned char h[SDB_WAL_HEADER_SIZE];
    uint64_t seq, store, first;

    for (size_t i = 0; i < v->nwal && !v->have_store; i++) {
        char *path = fmt(v, "%s/wal/%s", v->dir, v->wal[i].name);
        int fd = path ? v->io->open(v->io->ctx, path, O_RDONLY, 0) : -1;

        free(path);
        if (fd < 0)
            continue;
        if (sdb_io_pread_all(v->io, fd, h, sizeof(h), 0) == 0 &&
            sdb_wal_parse_header(h, &seq, &store, &first) == 0) {
            v->store_id = store;
            v->have_store = true;
        }
        v->io->close(v->io->ctx, fd);
    }
}

static void list_wal(struct vctx *v)
{
    char *path = fmt(v, "%s/wal", v->dir);
    DIR *d = path ? opendir(path) : NULL;
    struct dirent *de;
    uint64_t seq;

    free(path);
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (parse_wal_name(de->d_name, &seq)) {
            if (grow((void **)&v->wal, &v->capwal, v->nwal, sizeof(*v->wal)) <
                    0 ||
                !(v->wal[v->nwal].name = strdup(de->d_name))) {
                oom(v);
                break;
            }
            v->wal[v->nwal++].seq = seq;
        } else {
            char *rel = fmt(v, "wal/%s", de->d_name);
            if (!rel)
                break;
            add_prob(v, SDB_FSCK_ORPHAN_FILE, rel, -1,
                     "not a WAL segment name");
            add_fix(v, FIX_MOVE, ALL, rel, 0, 0);
            free(rel);
        }
    }
    closedir(d);
    if (v->nwal)
        qsort(v->wal, v->nwal, sizeof(*v->wal), cmp_walseg);
    if (!v->have_store)
        store_from_wal(v);
}

/* Is there a valid record at or after from (LSN >= min_lsn)? */
static bool valid_after(const unsigned char *buf, size_t len, size_t from,
                        uint64_t seed, uint64_t min_lsn)
{
    static const unsigned char magic[4] = {0x53, 0x4D, 0x44, 0x52};

    while (from + SDB_WAL_REC_HEADER <= len) {
        const unsigned char *p = memmem(buf + from, len - from, magic, 4);
        size_t off, rl;
        uint64_t lsn;
        uint32_t cnt;

        if (!p)
            return false;
        off = (size_t)(p - buf);
        if (sdb_wal_check_record(buf, len, off, seed, &rl, &lsn, &cnt) &&
            lsn >= min_lsn)
            return true;
        from = off + 1;
    }
    return false;
}

static void keep_wcopy(struct vctx *v, uint64_t lsn, uint32_t wal, uint64_t off,
                       size_t len, const struct sdb_record *rec)
{
    struct wcopy *w;

    if (grow((void **)&v->wcs, &v->capw, v->nw, sizeof(*w)) < 0) {
        oom(v);
        return;
    }
    w = &v->wcs[v->nw];
    w->lsn = lsn;
    w->off = off;
    w->wal = wal;
    w->len = (uint32_t)len;
    w->type = (uint8_t)rec->type;
    w->cpath = NULL;
    if (rec->type == SDB_REC_ASSERTION &&
        !(w->cpath = strdup(rec->a.concept_path))) {
        oom(v);
        return;
    }
    v->nw++;
}

/* One msgpack record of the WAL against the segment record of its LSN. */
static void cross_check(struct vctx *v, uint32_t wi, const char *rel,
                        const struct sdb_record *rec, uint64_t lsn,
                        const unsigned char *bytes, size_t len, uint64_t foff)
{
    struct rec *r = find_rec(v, lsn);

    if (r) {
        const struct cdir *c = &v->cdirs[r->cidx];
        uint64_t seed = sdb_seg_seed(v->store_id, c->chash, r->segno);
        bool same = len == r->len && sdb_hash64(bytes, len, seed) == r->hash;

        if (same)
            r->in_wal = 1;
        if (r->suspect)
            r->wal_vote = len != r->len                               ? 2
                          : same                                      ? 1
                          : sdb_hash64(bytes, len, seed) == r->actual ? 2
                                                                      : 0;
        if (!same && !r->bad && !r->suspect) {
            add_prob(v, SDB_FSCK_RECORD_MISMATCH, rel, (int64_t)foff,
                     "the WAL copy of LSN %" PRIu64
                     " differs from its record in db/%s/@seg-%06" PRIu32
                     ".msgpack @%" PRIu32,
                     lsn, c->rel, r->segno, r->off);
            v->wal_cross_bad = true;
        }
        if (r->bad)
            keep_wcopy(v, lsn, wi, foff, len, rec);
    } else if (v->have_meta && lsn <= v->ckpt) {
        add_prob(
            v, SDB_FSCK_MISSING_RECORD, rel, (int64_t)foff,
            "LSN %" PRIu64 " (%s%s) is at or below checkpoint LSN %" PRIu64
            " but in no segment",
            lsn, rec->type == SDB_REC_ASSERTION ? "concept " : "retraction",
            rec->type == SDB_REC_ASSERTION ? rec->a.concept_path : "", v->ckpt);
        v->wal_cross_bad = true;
        keep_wcopy(v, lsn, wi, foff, len, rec);
    } else {
        /* past the checkpoint and not applied yet: the server replays it,
         * and a rebuilt segment of its concept must include it */
        keep_wcopy(v, lsn, wi, foff, len, rec);
    }
}

/* Decode the payload of one valid WAL record; 0 or -1 if it is bad. */
static int check_wal_payload(struct vctx *v, uint32_t wi, const char *rel,
                             const unsigned char *p, size_t plen, size_t foff,
                             uint64_t lsn, uint32_t cnt)
{
    size_t pos = 0, used;

    for (uint32_t k = 0; k < cnt; k++) {
        struct sdb_record rec;
        sdb_error err = {0};
        uint64_t rlsn;
        int rc = sdb_codec_unpack(p + pos, plen - pos, &used, &rec, &err);

        if (rc == SDB_ENOMEM) {
            oom(v);
            return -1;
        }
        if (rc < 0) {
            add_prob(v, SDB_FSCK_BAD_RECORD, rel, (int64_t)foff,
                     "record %" PRIu32 " of the batch at LSN %" PRIu64
                     " does not decode: %s",
                     k, lsn, err.message);
            return -1;
        }
        rlsn = rec.type == SDB_REC_ASSERTION ? rec.a.id.lsn : rec.r.id.lsn;
        if (rlsn != lsn + k) {
            add_prob(v, SDB_FSCK_BAD_RECORD, rel, (int64_t)foff,
                     "record %" PRIu32 " of the batch at LSN %" PRIu64
                     " holds LSN %" PRIu64,
                     k, lsn, rlsn);
            sdb_record_release(&rec);
            return -1;
        }
        v->rep->wal_records += v->count_bytes;
        if (v->nr || v->have_meta)
            cross_check(v, wi, rel, &rec, rlsn, p + pos, used,
                        foff + SDB_WAL_REC_HEADER + pos);
        sdb_record_release(&rec);
        pos += used;
    }
    if (pos != plen) {
        add_prob(v, SDB_FSCK_BAD_RECORD, rel, (int64_t)foff,
                 "the batch at LSN %" PRIu64 " has %zu bytes after its %" PRIu32
                 " records",
                 lsn, plen - pos, cnt);
        return -1;
    }
    return 0;
}

/* What lies after the last valid record of a segment, when not zeros. */
static void check_wal_tail(struct vctx *v, size_t wi, const char *rel,
                           const unsigned char *buf, size_t len, size_t off,
                           uint64_t seed, uint64_t expect, bool newest)
{
    const unsigned char *r = buf + off;
    size_t nz = off, left = len - off;
    bool later = valid_after(buf, len, off + 1, seed, expect);
    bool magic = left >= 4 && sdb_get_u32(r) == SDB_WAL_REC_MAGIC;
    uint32_t plen = left >= 12 ? sdb_get_u32(r + 8) : 0;

    while (nz < len && !buf[nz])
        nz++;
    if (nz > off) {
        add_prob(v, SDB_FSCK_TRAILING_GARBAGE, rel, (int64_t)nz,
                 "nonzero byte after the end of the log at offset %zu%s", off,
                 later ? ", and valid records follow" : "");
        add_fix(v, FIX_WAL_CUT, ALL, rel, off, wi);
        return;
    }
    if (newest && !later &&
        (left < SDB_WAL_REC_HEADER || (magic && plen <= SDB_WAL_MAX_PAYLOAD &&
                                       plen > left - SDB_WAL_REC_HEADER &&
                                       !(left - SDB_WAL_REC_HEADER >= 64 &&
                                         all_zero(buf + len - 64, 64))))) {
        add_prob(v, SDB_FSCK_TORN_TAIL, rel, (int64_t)off,
                 "the last record is cut short (%zu of %zu bytes present) "
                 "after LSN %" PRIu64,
                 left,
                 left < SDB_WAL_REC_HEADER ? (size_t)SDB_WAL_REC_HEADER
                                           : (size_t)plen + SDB_WAL_REC_HEADER,
                 expect - 1);
        add_fix(v, FIX_ZERO_TAIL, SAFE, rel, off, wi);
        return;
    }
    if (magic && left >= SDB_WAL_REC_HEADER && r[4] == 1 && !r[5] && !r[6] &&
        !r[7] && plen && plen <= left - SDB_WAL_REC_HEADER &&
        sdb_get_u32(r + 12) && sdb_get_u64(r + 16))
        add_prob(v, SDB_FSCK_BAD_CHECKSUM, rel, (int64_t)off,
                 "record after LSN %" PRIu64 " fails its checksum%s",
                 expect - 1, later ? ", and valid records follow" : "");
    else
        add_prob(v, SDB_FSCK_BAD_RECORD, rel, (int64_t)off,
                 "invalid record header after LSN %" PRIu64 "%s", expect - 1,
                 later ? ", and valid records follow" : "");
    add_fix(v, FIX_WAL_CUT, ALL, rel, off, wi);
}

/* The header of one segment; false if its records cannot be read. */
static bool check_wal_header(struct vctx *v, size_t wi, const char *rel,
                             const unsigned char *buf, size_t len, bool newest,
                             uint64_t *first)
{
    uint64_t hseq, hstore;
    int rc = 0;

    if (len < SDB_WAL_HEADER_SIZE ||
        (rc = sdb_wal_parse_header(buf, &hseq, &hstore, first)) < 0) {
        size_t h = len < SDB_WAL_HEADER_SIZE ? len : SDB_WAL_HEADER_SIZE;
        if (newest && all_zero(buf + h, len - h)) {
            add_prob(v, SDB_FSCK_TORN_TAIL, rel, 0,
                     "the segment header is torn and nothing follows it");
            add_fix(v, FIX_MOVE, SAFE, rel, 0, wi);
            return false;
        }
        int id = len < SDB_WAL_HEADER_SIZE    ? SDB_FSCK_BAD_HEADER
                 : memcmp(buf, "STMDBWAL", 8) ? SDB_FSCK_BAD_MAGIC
                 : rc == SDB_EVERSION         ? SDB_FSCK_BAD_VERSION
                                              : SDB_FSCK_BAD_CHECKSUM;
        add_prob(v, id, rel, 0, "bad WAL segment header (%s)",
                 len < SDB_WAL_HEADER_SIZE    ? "file too short"
                 : id == SDB_FSCK_BAD_MAGIC   ? "magic"
                 : id == SDB_FSCK_BAD_VERSION ? "format version"
                                              : "header checksum");
        add_fix(v, FIX_WAL_CUT, ALL, rel, 0, wi);
        return false;
    }
    if (hseq != v->wal[wi].seq) {
        add_prob(v, SDB_FSCK_MISPLACED_FILE, rel, 24,
                 "the header names segment %" PRIu64
                 " (renamed or swapped file)",
                 hseq);
        add_fix(v, FIX_WAL_CUT, ALL, rel, 0, wi);
        return false;
    }
    if (v->have_store && hstore != v->store_id) {
        add_prob(v, SDB_FSCK_STALE_SEGMENT, rel, 16,
                 "segment of store %016" PRIx64 ", not %016" PRIx64
                 " (stale epoch or copied from another store)",
                 hstore, v->store_id);
        add_fix(v, FIX_WAL_CUT, ALL, rel, 0, wi);
        return false;
    }
    return true;
}

static void check_wal_image(struct vctx *v, size_t wi, const char *rel,
                            const unsigned char *buf, size_t len, bool newest)
{
    uint64_t first, lsn, seed;
    size_t off = SDB_WAL_HEADER_SIZE, rl;
    uint32_t cnt;

    if (!check_wal_header(v, wi, rel, buf, len, newest, &first)) {
        v->wal_known = false;
        return;
    }
    if (!v->wal_known && wi == 0 && v->have_meta && first > v->ckpt + 1)
        add_prob(v, SDB_FSCK_LSN_GAP, rel, 32,
                 "the WAL starts at LSN %" PRIu64
                 " but LSNs after checkpoint %" PRIu64 " are missing",
                 first, v->ckpt);
    if (v->wal_known && first != v->wal_last + 1) {
        add_prob(v,
                 first > v->wal_last + 1 ? SDB_FSCK_LSN_GAP
                                         : SDB_FSCK_DUPLICATE_RECORD,
                 rel, 32,
                 "segment starts at LSN %" PRIu64 ", expected %" PRIu64, first,
                 v->wal_last + 1);
        add_fix(v, FIX_WAL_CUT, ALL, rel, 0, wi);
    }
    v->wal_known = true;
    v->wal_last = first - 1;
    seed = sdb_wal_seed(v->store_id, v->wal[wi].seq);
    while (sdb_wal_check_record(buf, len, off, seed, &rl, &lsn, &cnt)) {
        if (lsn != v->wal_last + 1) {
            add_prob(v,
                     lsn > v->wal_last + 1 ? SDB_FSCK_LSN_GAP
                                           : SDB_FSCK_DUPLICATE_RECORD,
                     rel, (int64_t)off,
                     "record holds LSN %" PRIu64 ", expected %" PRIu64, lsn,
                     v->wal_last + 1);
            add_fix(v, FIX_WAL_CUT, ALL, rel, off, wi);
        }
        if (check_wal_payload(v, (uint32_t)wi, rel,
                              buf + off + SDB_WAL_REC_HEADER,
                              rl - SDB_WAL_REC_HEADER, off, lsn, cnt) < 0)
            add_fix(v, FIX_WAL_CUT, ALL, rel, off, wi);
        v->wal_last = lsn + cnt - 1;
        if (v->wal_last > v->wal_max)
            v->wal_max = v->wal_last;
        off += rl;
    }
    v->wal_end = off;
    if (off < len && !all_zero(buf + off, len - off))
        check_wal_tail(v, wi, rel, buf, len, off, seed, v->wal_last + 1,
                       newest);
}

static void check_wal(struct vctx *v)
{
    for (size_t i = 0; i < v->nwal && !v->cancel && !v->oprc; i++) {
        char *rel = fmt(v, "wal/%s", v->wal[i].name);
        unsigned char *buf;
        size_t len;

        if (!rel)
            return;
        if (i > 0 && v->wal[i].seq != v->wal[i - 1].seq + 1) {
            char name[40];
            sdb_wal_segment_name(v->wal[i - 1].seq + 1, name);
            add_prob(v, SDB_FSCK_MISSING_FILE, rel, -1,
                     "WAL segments %s to %016" PRIx64 " are missing", name,
                     v->wal[i].seq - 1);
            add_fix(v, FIX_WAL_CUT, ALL, rel, 0, i);
        }
        if (load(v, rel, &buf, &len) == 0)
            check_wal_image(v, i, rel, buf, len, i + 1 == v->nwal);
        free(buf);
        free(rel);
        tick(v);
    }
    if (v->nwal && v->have_meta && v->wal_known &&
        v->wal_last < v->meta.last_lsn) {
        char *rel = fmt(v, "wal/%s", v->wal[v->nwal - 1].name);
        if (!rel)
            return;
        add_prob(v, SDB_FSCK_WAL_TRUNCATED, rel, (int64_t)v->wal_end,
                 "the log ends at LSN %" PRIu64
                 " but metadata.json says last_lsn %" PRIu64,
                 v->wal_last, v->meta.last_lsn);
        /* every WAL record is then a redundant copy of a segment record */
        if (v->wal_max <= v->ckpt && !v->wal_cross_bad)
            for (size_t i = 0; i < v->nwal; i++) {
                char *r = fmt(v, "wal/%s", v->wal[i].name);
                if (r)
                    add_fix(v, FIX_MOVE, SAFE, r, 0, i);
                free(r);
            }
        free(rel);
    }
}

/* ---- concept segments ---- */

static int add_cdir(struct vctx *v, const char *rel, const char *path,
                    bool retractions)
{
    struct cdir *c;

    if (grow((void **)&v->cdirs, &v->capc, v->nc, sizeof(*c)) < 0) {
        oom(v);
        return -1;
    }
    c = &v->cdirs[v->nc];
    memset(c, 0, sizeof(*c));
    c->rel = strdup(rel);
    c->path = strdup(path);
    c->retractions = retractions;
    c->chash = retractions ? sdb_hash64(SDB_RETRACTIONS_DIR,
                                        strlen(SDB_RETRACTIONS_DIR), 0)
                           : sdb_hash64(path, strlen(path), 0);
    if (!c->rel || !c->path) {
        free(c->rel);
        free(c->path);
        oom(v);
        return -1;
    }
    return (int)v->nc++;
}

static void push_rec(struct vctx *v, const struct rec *r)
{
    pthread_mutex_lock(&v->lock);
    if (grow((void **)&v->recs, &v->capr, v->nr, sizeof(*r)) < 0) {
        oom(v);
    } else {
        v->recs[v->nr++] = *r;
        v->rep->records += v->count_bytes;
    }
    pthread_mutex_unlock(&v->lock);
}

/* The snapshot's location and hash for an LSN, if it has one. */
static bool snap_loc(struct vctx *v, uint64_t lsn, int type,
                     struct sdb_loc *loc)
{
    int64_t pos;

    if (!v->snap)
        return false;
    if (type == SDB_REC_RETRACTION) {
        pos = sdb_index_find_retraction(v->snap, lsn);
        if (pos >= 0) {
            const struct sdb_rentry *e = &v->snap->retractions[pos];
            *loc = (struct sdb_loc){e->segno, e->off, e->len, e->hash};
        }
    } else {
        pos = sdb_index_find(v->snap, lsn);
        if (pos >= 0) {
            const struct sdb_entry *e = &v->snap->entries[pos];
            *loc = (struct sdb_loc){e->segno, e->off, e->len, e->hash};
        }
    }
    return pos >= 0;
}

/* Decode a record and check it against its idx entry and its directory:
 * 0 if it belongs, else the problem id, with what in *why. */
static int record_fits(const struct cdir *c, const unsigned char *p, size_t len,
                       uint64_t lsn, int type, const char **why)
{
    struct sdb_record rec;
    size_t used = 0;
    int rc = sdb_codec_unpack(p, len, &used, &rec, NULL), id = 0;

    if (rc == SDB_ENOMEM) {
        *why = "out of memory";
        return -1;
    }
    if (rc < 0 || used != len) {
        if (rc == 0)
            sdb_record_release(&rec);
        *why = "the record does not decode";
        return SDB_FSCK_BAD_RECORD;
    }
    if (rec.type != type) {
        *why = "the idx entry's record type differs from the record's";
        id = SDB_FSCK_INDEX_MISMATCH;
    } else if ((type == SDB_REC_ASSERTION ? rec.a.id.lsn : rec.r.id.lsn) !=
               lsn) {
        *why = "the idx entry's LSN differs from the record's";
        id = SDB_FSCK_INDEX_MISMATCH;
    } else if ((type == SDB_REC_RETRACTION) != c->retractions ||
               (type == SDB_REC_ASSERTION &&
                strcmp(rec.a.concept_path, c->path) != 0)) {
        *why = "the record belongs to another concept";
        id = SDB_FSCK_WRONG_CONCEPT;
    }
    sdb_record_release(&rec);
    return id;
}

struct segfiles {
    const char *irel, *drel;
    const unsigned char *idx, *data;
    size_t ilen, dlen;
};

/* The idx header; false if the entries cannot be trusted. */
static bool check_idx_header(struct vctx *v, struct cdir *c, uint32_t segno,
                             const struct segfiles *f)
{
    const unsigned char *h = f->idx;
    int id;

    if (f->ilen < SDB_IDX_HEADER_SIZE) {
        add_prob(v, SDB_FSCK_BAD_HEADER, f->irel, 0,
                 "idx file is %zu bytes, shorter than its header", f->ilen);
        return false;
    }
    if (!v->have_store && !memcmp(h, "STMDBIDX", 8) &&
        sdb_get_u64(h + 56) == sdb_hash64(h, 56, 0)) {
        v->store_id = sdb_get_u64(h + 16);
        v->have_store = true;
    }
    if (sdb_idx_header_check(h, v->store_id, c->chash, segno) == 0)
        return true;
    if (memcmp(h, "STMDBIDX", 8) != 0)
        id = SDB_FSCK_BAD_MAGIC;
    else if (sdb_get_u64(h + 56) != sdb_hash64(h, 56, 0))
        id = SDB_FSCK_BAD_CHECKSUM;
    else if (sdb_get_u32(h + 8) != 1 ||
             sdb_get_u32(h + 12) != SDB_IDX_HEADER_SIZE)
        id = SDB_FSCK_BAD_VERSION;
    else if (sdb_get_u64(h + 16) != v->store_id)
        id = SDB_FSCK_STALE_SEGMENT;
    else
        id = SDB_FSCK_MISPLACED_FILE;
    if (id == SDB_FSCK_MISPLACED_FILE)
        add_prob(v, id, f->irel, 24,
                 "the header belongs to concept hash %016" PRIx64
                 " segment %" PRIu32 " (copied, swapped or renamed file)",
                 sdb_get_u64(h + 24), sdb_get_u32(h + 32));
    else if (id == SDB_FSCK_STALE_SEGMENT)
        add_prob(v, id, f->irel, 16, "idx file of store %016" PRIx64,
                 sdb_get_u64(h + 16));
    else
        add_prob(v, id, f->irel, 0, "bad idx header");
    return false;
}

/* A record whose bytes fail the idx hash: gather the votes. */
static void suspect(struct vctx *v, const struct cdir *c,
                    const struct segfiles *f, size_t pos, struct rec *r,
                    uint64_t seed)
{
    const char *why = NULL;
    struct sdb_record rec;
    struct sdb_loc sl;
    size_t used;

    r->suspect = 1;
    r->ipos = (uint32_t)pos;
    r->actual = sdb_hash64(f->data + r->off, r->len, seed);
    if (snap_loc(v, r->lsn, r->type, &sl))
        r->snap_vote = sl.off != r->off || sl.len != r->len ? 2
                       : sl.hash == r->hash                 ? 1
                       : sl.hash == r->actual               ? 2
                                                            : 0;
    r->fits =
        record_fits(c, f->data + r->off, r->len, r->lsn, r->type, &why) == 0;
    /* a wrong length: the record as it decodes matches the stored hash */
    if (sdb_codec_unpack(f->data + r->off, f->dlen - r->off, &used, &rec,
                         NULL) == 0) {
        sdb_record_release(&rec);
        if (used != r->len &&
            sdb_hash64(f->data + r->off, used, seed) == r->hash)
            r->snap_vote = 2, r->len_wrong = 1;
    }
}

/* After the WAL scan: report each suspect record against the side the
 * votes blame. */
static void resolve_suspects(struct vctx *v)
{
    for (size_t i = 0; i < v->nr; i++) {
        const struct rec *r = &v->recs[i];
        const struct cdir *c = &v->cdirs[r->cidx];
        bool idx_wrong;
        char *f;

        if (!r->suspect)
            continue;
        idx_wrong = r->snap_vote  ? r->snap_vote == 2
                    : r->wal_vote ? r->wal_vote == 2
                                  : r->fits;
        f = fmt(v, "db/%s/@seg-%06" PRIu32 ".%s", c->rel, r->segno,
                idx_wrong ? "idx" : "msgpack");
        if (f && idx_wrong && r->len_wrong)
            add_prob(v, SDB_FSCK_INDEX_MISMATCH, f, (int64_t)r->ipos + 16,
                     "idx entry for LSN %" PRIu64
                     " has the wrong length %" PRIu32
                     " for its record (@%" PRIu32 " in the .msgpack)",
                     r->lsn, r->len, r->off);
        else if (f && idx_wrong)
            add_prob(v, SDB_FSCK_INDEX_MISMATCH, f, (int64_t)r->ipos + 24,
                     "idx entry for LSN %" PRIu64
                     " has a checksum its record (@%" PRIu32
                     " in the .msgpack) does not match",
                     r->lsn, r->off);
        else if (f)
            add_prob(v, SDB_FSCK_BAD_CHECKSUM, f, r->off,
                     "record LSN %" PRIu64 " (%" PRIu32
                     " bytes) fails its checksum (idx entry @%" PRIu32 ")",
                     r->lsn, r->len, r->ipos);
        free(f);
    }
}

/* Bytes of the .msgpack after the last indexed record. */
static void check_data_tail(struct vctx *v, struct cdir *c,
                            const struct segfiles *f, uint64_t off,
                            uint64_t last_lsn, bool last)
{
    struct sdb_record rec;
    size_t used;
    uint64_t lsn;
    bool torn = false;

    if (last && sdb_codec_unpack(f->data + off, f->dlen - off, &used, &rec,
                                 NULL) == 0) {
        lsn = rec.type == SDB_REC_ASSERTION ? rec.a.id.lsn : rec.r.id.lsn;
        torn = off + used == f->dlen && lsn > last_lsn && lsn > v->ckpt &&
               (rec.type == SDB_REC_RETRACTION) == c->retractions;
        sdb_record_release(&rec);
    }
    if (torn) {
        add_prob(v, SDB_FSCK_TORN_TAIL, f->drel, (int64_t)off,
                 "record LSN %" PRIu64
                 " past the checkpoint has no idx entry yet",
                 lsn);
    } else {
        add_prob(v, SDB_FSCK_TRAILING_GARBAGE, f->drel, (int64_t)off,
                 "%zu bytes after the last indexed record",
                 (size_t)(f->dlen - off));
        c->lossy = true;
    }
}

static void check_entry(struct vctx *v, struct cdir *c, uint32_t cidx,
                        uint32_t segno, const struct segfiles *f, size_t pos,
                        uint64_t *last_lsn, uint64_t *expect)
{
    const unsigned char *e = f->idx + pos;
    uint64_t seed = sdb_seg_seed(v->store_id, c->chash, segno);
    uint64_t off = sdb_get_u64(e + 8);
    struct rec r = {.lsn = sdb_get_u64(e),
                    .hash = sdb_get_u64(e + 24),
                    .cidx = cidx,
                    .segno = segno,
                    .len = sdb_get_u32(e + 16)};
    uint32_t type = sdb_get_u32(e + 20);
    const char *why = NULL;
    int id;

    if (r.lsn <= *last_lsn || off != *expect || r.len == 0 ||
        off + r.len > f->dlen || (type != 1 && type != 2)) {
        add_prob(v, SDB_FSCK_INDEX_MISMATCH, f->irel, (int64_t)pos,
                 "idx entry (LSN %" PRIu64 ", offset %" PRIu64
                 ", length %" PRIu32 ", type %" PRIu32
                 ") does not fit (expected offset %" PRIu64
                 " after LSN %" PRIu64 ", %zu data bytes)",
                 r.lsn, off, r.len, type, *expect, *last_lsn, f->dlen);
        c->bad = c->lossy = true;
        *expect =
            off <= f->dlen && r.len <= f->dlen - off ? off + r.len : UINT64_MAX;
        return;
    }
    r.off = (uint32_t)off;
    r.type = (uint8_t)type;
    *expect = off + r.len;
    *last_lsn = r.lsn;
    if (sdb_hash64(f->data + off, r.len, seed) != r.hash) {
        suspect(v, c, f, pos, &r, seed);
        r.bad = 1;
    } else if ((id = record_fits(c, f->data + off, r.len, r.lsn, r.type,
                                 &why)) != 0) {
        if (id < 0)
            oom(v);
        else
            add_prob(v, id, id == SDB_FSCK_INDEX_MISMATCH ? f->irel : f->drel,
                     id == SDB_FSCK_INDEX_MISMATCH ? (int64_t)pos
                                                   : (int64_t)off,
                     "LSN %" PRIu64 ": %s", r.lsn, why);
        r.bad = 1;
    }
    if (r.bad)
        c->bad = true;
    push_rec(v, &r);
}

static void check_segment(struct vctx *v, uint32_t cidx, uint32_t segno,
                          bool last, const struct segfiles *f,
                          uint64_t *last_lsn)
{
    struct cdir *c = &v->cdirs[cidx];
    uint64_t expect = 0;
    size_t pos = SDB_IDX_HEADER_SIZE;

    if (!check_idx_header(v, c, segno, f)) {
        c->bad = c->lossy = true;
        return;
    }
    for (; pos + SDB_IDX_ENTRY_SIZE <= f->ilen && expect != UINT64_MAX;
         pos += SDB_IDX_ENTRY_SIZE)
        check_entry(v, c, cidx, segno, f, pos, last_lsn, &expect);
    if (expect == UINT64_MAX)
        return;
    if (pos != f->ilen) {
        if (last) {
            add_prob(v, SDB_FSCK_TORN_TAIL, f->irel, (int64_t)pos,
                     "partial idx entry (%zu bytes) at the end", f->ilen - pos);
        } else {
            add_prob(v, SDB_FSCK_TRAILING_GARBAGE, f->irel, (int64_t)pos,
                     "%zu bytes after the last idx entry", f->ilen - pos);
            c->lossy = true;
        }
        c->bad = true;
    }
    if (expect < f->dlen) {
        check_data_tail(v, c, f, expect, *last_lsn, last);
        c->bad = true;
    }
}

/* Check segments 1..c->nseg of one concept directory. */
static void check_concept(struct vctx *v, uint32_t cidx,
                          const unsigned char *has, uint32_t nseg)
{
    uint64_t last_lsn = 0;

    v->cdirs[cidx].nseg = nseg;
    for (uint32_t n = 1; n <= nseg && !v->cancel && !v->oprc; n++) {
        struct cdir *c = &v->cdirs[cidx];
        char dname[32], iname[32];
        struct segfiles f = {0};
        unsigned char *idx = NULL, *data = NULL;
        char *irel, *drel;

        sdb_seg_file_names(n, dname, iname);
        irel = fmt(v, "db/%s/%s", c->rel, iname);
        drel = fmt(v, "db/%s/%s", c->rel, dname);
        if (irel && drel && (has[n] & 3) != 3) {
            add_prob(v, SDB_FSCK_MISSING_FILE, has[n] & 2 ? drel : irel, -1,
                     "segment %" PRIu32 " of %" PRIu32 " is missing", n, nseg);
            c->bad = c->lossy = true;
        } else if (irel && drel && load(v, irel, &idx, &f.ilen) == 0 &&
                   load(v, drel, &data, &f.dlen) == 0) {
            f.irel = irel;
            f.drel = drel;
            f.idx = idx;
            f.data = data;
            check_segment(v, cidx, n, n == nseg, &f, &last_lsn);
        }
        free(idx);
        free(data);
        free(irel);
        free(drel);
        tick(v);
    }
}

/* "@seg-NNNNNN.msgpack" (bit 1) or ".idx" (bit 2); 0 otherwise. */
static int seg_file_kind(const char *name, uint32_t *segno)
{
    char d[32], i[32];
    unsigned long n;

    if (strncmp(name, "@seg-", 5) != 0 || strlen(name) > 24)
        return 0;
    n = strtoul(name + 5, NULL, 10);
    if (n == 0 || n > 999999)
        return 0;
    sdb_seg_file_names((uint32_t)n, d, i);
    *segno = (uint32_t)n;
    return !strcmp(name, d) ? 1 : !strcmp(name, i) ? 2 : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in a directory (without . and ..); NULL and -errno. */
static char **list_dir(struct vctx *v, const char *path, size_t *n, int *err)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char **names = NULL;
    size_t cap = 0;

    *n = 0;
    *err = 0;
    if (!d) {
        *err = -errno;
        return NULL;
    }
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (grow((void **)&names, &cap, *n + 1, sizeof(*names)) < 0 ||
            !(names[*n] = strdup(de->d_name))) {
            oom(v);
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(names, *n, sizeof(*names), cmp_str);
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bool is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void stray(struct vctx *v, const char *rel, const char *why)
{
    add_prob(v, SDB_FSCK_ORPHAN_FILE, rel, -1, "%s", why);
    add_fix(v, FIX_MOVE, ALL, rel, 0, 0);
}

static void check_indexes_dir(struct vctx *v)
{
    char *path = fmt(v, "%s/db/indexes", v->dir);
    size_t n = 0;
    int err;
    char **names = path ? list_dir(v, path, &n, &err) : NULL;

    for (size_t i = 0; i < n; i++) {
        char *rel = fmt(v, "db/indexes/%s", names[i]);
        if (rel && strcmp(names[i], "index.snap") != 0)
            stray(v, rel, "not a file StemeDB writes in db/indexes/");
        free(rel);
    }
    free_names(names, n);
    free(path);
}

static void walk_db(struct vctx *v, const char *rel, const char *cpath,
                    int cidx);

/* A subdirectory name of a concept directory (or of db/). */
static void walk_child(struct vctx *v, const char *rel, const char *cpath,
                       const char *name)
{
    char comp[256], canon[SDB_MAX_PATH_LEN * 3 + 1];
    char *crel = fmt(v, "%s%s%s", rel, *rel ? "/" : "", name);
    char *child = NULL, *frel = crel ? fmt(v, "db/%s", crel) : NULL;
    int n = sdb_path_unescape_component(name, comp, sizeof(comp)), cidx;

    if (n >= 0)
        child = fmt(v, "%s%s%.*s", cpath, *cpath ? "/" : "", n, comp);
    if (!frel || (n >= 0 && !child))
        goto out;
    if (n < 0 || sdb_concept_to_dir(child, canon, sizeof(canon), NULL) < 0 ||
        strcmp(canon, crel) != 0) {
        add_prob(v, SDB_FSCK_BAD_NAME, frel, -1,
                 "not the canonical directory of a concept path");
        add_fix(v, FIX_MOVE, ALL, frel, 0, 0);
        goto out;
    }
    cidx = add_cdir(v, crel, child, false);
    if (cidx >= 0)
        walk_db(v, crel, child, cidx);
out:
    free(crel);
    free(child);
    free(frel);
}

/* One directory below db/ (rel "" is db/ itself; cidx -1 there). */
static void walk_db(struct vctx *v, const char *rel, const char *cpath,
                    int cidx)
{
    char *path = fmt(v, "%s/db%s%s", v->dir, *rel ? "/" : "", rel);
    unsigned char *has = NULL; /* has[segno]: 1 .msgpack, 2 .idx */
    uint32_t nseg = 0, segno;
    size_t n = 0, hcap = 16;
    int err, kind;
    char **names = path ? list_dir(v, path, &n, &err) : NULL;
    bool retr = cidx >= 0 && v->cdirs[cidx].retractions;

    if (path && !names && err && err != -ENOENT)
        set_oprc(v, err);
    if (cidx >= 0 && !(has = calloc(hcap, 1)))
        oom(v);
    for (size_t i = 0; i < n && !v->oprc && !v->cancel; i++) {
        char *full = fmt(v, "%s/%s", path, names[i]);
        char *frel = fmt(v, "db/%s%s%s", rel, *rel ? "/" : "", names[i]);
        bool dir = full && is_dir(full);

        if (!full || !frel) {
        } else if (!*rel && dir && !strcmp(names[i], "indexes")) {
            check_indexes_dir(v);
        } else if (!*rel && dir && !strcmp(names[i], SDB_RETRACTIONS_DIR)) {
            int r = add_cdir(v, SDB_RETRACTIONS_DIR, "", true);
            if (r >= 0)
                walk_db(v, SDB_RETRACTIONS_DIR, "", r);
        } else if (dir && !retr) {
            walk_child(v, rel, cpath, names[i]);
        } else if (!dir && has && (kind = seg_file_kind(names[i], &segno))) {
            if (segno >= hcap) {
                size_t ncap = (size_t)segno * 2;
                unsigned char *nh = realloc(has, ncap);
                if (nh) {
                    memset(nh + hcap, 0, ncap - hcap);
                    has = nh;
                    hcap = ncap;
                } else {
                    oom(v);
                }
            }
            if (segno < hcap) {
                has[segno] |= (unsigned char)kind;
                if (segno > nseg)
                    nseg = segno;
            }
        } else {
            stray(v, frel, "not a file or directory StemeDB writes here");
        }
        free(full);
        free(frel);
    }
    if (cidx >= 0 && has && !v->oprc) {
        if (grow((void **)&v->jobs, &v->capjobs, v->njobs, sizeof(*v->jobs)) ==
            0) {
            v->jobs[v->njobs++] = (struct job){(uint32_t)cidx, nseg, has};
            has = NULL;
        } else {
            oom(v);
        }
    }
    free(has);
    free_names(names, n);
    free(path);
}

/* ---- the snapshot ---- */

static void load_snapshot(struct vctx *v)
{
    char *dir = fmt(v, "%s/db/indexes", v->dir);
    sdb_error err = {0};
    char *p;
    struct stat st;
    int rc;

    if (!dir)
        return;
    rc = sdb_index_load(v->io, dir, v->store_id, &v->snap, &v->snap_lsn, &err);
    if ((p = fmt(v, "%s/%s", v->dir, SNAP_REL)) && stat(p, &st) == 0 &&
        v->count_bytes) {
        v->rep->files++;
        v->rep->bytes += (uint64_t)st.st_size;
    }
    free(p);
    if (rc == -ENOENT) {
        add_prob(v, SDB_FSCK_NO_SNAPSHOT, SNAP_REL, -1,
                 "no index snapshot: the server rebuilds it from the "
                 "segments");
    } else if (rc == SDB_ENOMEM) {
        oom(v);
    } else if (rc < 0) {
        add_prob(
            v,
            rc == SDB_EVERSION ? SDB_FSCK_BAD_VERSION : SDB_FSCK_BAD_CHECKSUM,
            SNAP_REL, 0, "the index snapshot does not load (%s)", err.message);
        add_fix(v, FIX_MOVE, SAFE, SNAP_REL, 0, 0);
        v->snap_bad = true;
    } else if (v->have_meta && v->snap_lsn < v->ckpt) {
        add_prob(v, SDB_FSCK_STALE_SNAPSHOT, SNAP_REL, 24,
                 "the snapshot is at LSN %" PRIu64
                 ", older than checkpoint %" PRIu64,
                 v->snap_lsn, v->ckpt);
        add_fix(v, FIX_MOVE, SAFE, SNAP_REL, 0, 0);
        v->snap_bad = true;
    }
    /*
     * A snapshot past metadata.json's checkpoint is a checkpoint that
     * stopped between writing the snapshot and metadata.json: the segments
     * were synced first, so the next open adopts it.  Its entries are still
     * checked against the segments below.
     */
    free(dir);
    tick(v);
}

static void snap_mismatch(struct vctx *v, uint64_t lsn, const char *what)
{
    add_prob(v, SDB_FSCK_SNAPSHOT_MISMATCH, SNAP_REL, -1, "LSN %" PRIu64 ": %s",
             lsn, what);
    add_fix(v, FIX_MOVE, SAFE, SNAP_REL, 0, 0);
}

static void snap_compare_one(struct vctx *v, uint64_t lsn, const char *path,
                             bool retraction, uint32_t segno, uint32_t off,
                             uint32_t len, uint64_t hash)
{
    struct rec *r = find_rec(v, lsn);
    const struct cdir *c;

    if (!r) {
        snap_mismatch(v, lsn, "in the snapshot but in no segment");
        return;
    }
    c = &v->cdirs[r->cidx];
    if (c->retractions != retraction || (!retraction && strcmp(c->path, path)))
        snap_mismatch(v, lsn, "the snapshot places it in another concept");
    else if (r->segno != segno || r->off != off || r->len != len ||
             r->hash != hash)
        snap_mismatch(v, lsn,
                      "the snapshot's location or checksum differs from the "
                      "segment's");
}

static void check_snapshot(struct vctx *v)
{
    const struct sdb_index *ix = v->snap;

    if (!ix || v->snap_bad)
        return;
    for (uint32_t i = 0; i < ix->n_entries; i++) {
        const struct sdb_entry *e = &ix->entries[i];
        snap_compare_one(v, e->lsn, ix->concepts[e->concept]->path, false,
                         e->segno, e->off, e->len, e->hash);
    }
    for (uint32_t i = 0; i < ix->n_retractions; i++) {
        const struct sdb_rentry *r = &ix->retractions[i];
        snap_compare_one(v, r->lsn, "", true, r->segno, r->off, r->len,
                         r->hash);
    }
    for (size_t i = 0; i < v->nr; i++) {
        const struct rec *r = &v->recs[i];
        bool found = r->type == SDB_REC_RETRACTION
                         ? sdb_index_find_retraction(ix, r->lsn) >= 0
                         : sdb_index_find(ix, r->lsn) >= 0;
        if (r->lsn <= v->snap_lsn && !found)
            snap_mismatch(v, r->lsn, "in a segment but not in the snapshot");
    }
    /* a record newer than the snapshot must come back through the WAL,
     * or the server, loading the snapshot, would never see it */
    for (size_t i = v->nr; i-- > 0;) {
        const struct rec *r = &v->recs[i];
        if (r->lsn <= v->snap_lsn || r->lsn <= v->wal_max)
            break;
        if (!r->bad) {
            snap_mismatch(v, r->lsn,
                          "newer than the snapshot and not in the WAL: "
                          "invisible unless the index is rebuilt");
            break;
        }
    }
}

/* ---- across files ---- */

static void check_duplicates(struct vctx *v)
{
    for (size_t i = 1; i < v->nr; i++) {
        const struct rec *a = &v->recs[i - 1], *b = &v->recs[i];
        if (a->lsn != b->lsn)
            continue;
        add_prob(v, SDB_FSCK_DUPLICATE_RECORD, "", -1,
                 "LSN %" PRIu64 " is in db/%s/@seg-%06" PRIu32
                 ".msgpack @%" PRIu32 " and in db/%s/@seg-%06" PRIu32
                 ".msgpack @%" PRIu32,
                 a->lsn, v->cdirs[a->cidx].rel, a->segno, a->off,
                 v->cdirs[b->cidx].rel, b->segno, b->off);
        v->cdirs[b->cidx].bad = v->cdirs[b->cidx].lossy = true;
    }
}

static void count_records(const struct vctx *v, uint64_t upto, uint64_t *na,
                          uint64_t *nr)
{
    *na = *nr = 0;
    for (size_t i = 0; i < v->nr; i++) {
        const struct rec *r = &v->recs[i];
        if (r->lsn > upto || (i && v->recs[i - 1].lsn == r->lsn))
            continue;
        if (r->type == SDB_REC_RETRACTION)
            (*nr)++;
        else
            (*na)++;
    }
}

static void check_counts(struct vctx *v)
{
    uint64_t na, nr, maxl = v->nr ? v->recs[v->nr - 1].lsn : 0;

    if (!v->have_meta)
        return;
    count_records(v, v->ckpt, &na, &nr);
    if (na != v->meta.assertion_count || nr != v->meta.retraction_count) {
        add_prob(v, SDB_FSCK_COUNT_MISMATCH, v->meta_name, -1,
                 "the segments hold %" PRIu64 " assertions and %" PRIu64
                 " retractions up to checkpoint LSN %" PRIu64
                 "; metadata.json says %" PRIu64 " and %" PRIu64,
                 na, nr, v->ckpt, v->meta.assertion_count,
                 v->meta.retraction_count);
        if (!v->backup)
            add_fix(v, FIX_META, ALL, NULL, 0, 0);
    }
    if (maxl > v->meta.last_lsn && maxl > v->wal_max) {
        add_prob(v, SDB_FSCK_METADATA_MISMATCH, v->meta_name, -1,
                 "the segments hold LSN %" PRIu64 ", past last_lsn %" PRIu64
                 " and the end of the WAL",
                 maxl, v->meta.last_lsn);
        if (!v->backup)
            add_fix(v, FIX_META, ALL, NULL, 0, 0);
    }
}

/* A concept directory for a WAL copy whose record is in no segment. */
static int cdir_for(struct vctx *v, const struct wcopy *w)
{
    char canon[SDB_MAX_PATH_LEN * 3 + 1];

    for (size_t i = 0; i < v->nc; i++)
        if (w->cpath ? !v->cdirs[i].retractions &&
                           !strcmp(v->cdirs[i].path, w->cpath)
                     : v->cdirs[i].retractions)
            return (int)i;
    if (!w->cpath)
        return add_cdir(v, SDB_RETRACTIONS_DIR, "", true);
    if (sdb_concept_to_dir(w->cpath, canon, sizeof(canon), NULL) < 0)
        return -1;
    return add_cdir(v, canon, w->cpath, false);
}

/* Decide which concepts to rebuild, and whether that loses anything. */
static void plan_rebuilds(struct vctx *v)
{
    for (size_t i = 0; i < v->nw; i++) {
        int c;
        if (find_rec(v, v->wcs[i].lsn) || v->wcs[i].lsn > v->ckpt)
            continue;
        c = cdir_for(v, &v->wcs[i]);
        if (c >= 0)
            v->cdirs[c].bad = true;
    }
    for (size_t i = 0; i < v->nr; i++) {
        const struct rec *r = &v->recs[i];
        bool copy = false;
        if (!r->bad)
            continue;
        for (size_t k = 0; k < v->nw && !copy; k++)
            copy = v->wcs[k].lsn == r->lsn;
        if (!copy)
            v->cdirs[r->cidx].lossy = true;
    }
    for (size_t i = 0; i < v->nc; i++)
        if (v->cdirs[i].bad)
            add_fix(v, FIX_REBUILD, v->cdirs[i].lossy ? ALL : SAFE, NULL, 0, i);
}

/* ---- one pass ---- */

static void *job_worker(void *arg)
{
    struct vctx *v = arg;

    for (;;) {
        size_t i = atomic_fetch_add(&v->next_job, 1);
        if (i >= v->njobs || v->cancel || v->oprc)
            break;
        check_concept(v, v->jobs[i].cidx, v->jobs[i].has, v->jobs[i].nseg);
    }
    return NULL;
}

static int cmp_prob(const void *a, const void *b)
{
    const struct prob *x = a, *y = b;
    int c = strcmp(x->file, y->file);

    if (c)
        return c;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->id - y->id;
}

/*
 * Check the queued concept directories, on a few threads once the store id
 * is known (the idx headers may have to supply it otherwise).  Problems
 * are sorted by file and offset so the report does not depend on timing.
 */
static void run_jobs(struct vctx *v)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = v->have_store && ncpu > 1 ? (size_t)ncpu : 1, first = v->np;
    pthread_t tids[8];
    size_t started = 0;

    if (nt > 8)
        nt = 8;
    if (nt > v->njobs)
        nt = v->njobs;
    atomic_store(&v->next_job, 0);
    for (size_t i = 1; i < nt; i++)
        if (pthread_create(&tids[started], NULL, job_worker, v) == 0)
            started++;
    job_worker(v);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (v->np > first)
        qsort(v->probs + first, v->np - first, sizeof(*v->probs), cmp_prob);
    for (size_t i = 0; i < v->njobs; i++)
        free(v->jobs[i].has);
    free(v->jobs);
    v->jobs = NULL;
    v->njobs = v->capjobs = 0;
}

static void run_pass(struct vctx *v)
{
    int rc = check_top(v);

    if (rc < 0) {
        set_oprc(v, rc);
        return;
    }
    check_meta(v);
    list_wal(v);
    if (v->have_store)
        load_snapshot(v);
    if (!v->oprc && !v->cancel) {
        char *db = fmt(v, "%s/db", v->dir);
        if (db && is_dir(db))
            walk_db(v, "", "", -1);
        free(db);
        run_jobs(v);
    }
    if (v->nr)
        qsort(v->recs, v->nr, sizeof(*v->recs), cmp_rec);
    if (!v->snap && !v->snap_bad && v->have_store && !v->oprc &&
        v->shown[SDB_FSCK_NO_SNAPSHOT] == 0)
        load_snapshot(v);
    if (!v->oprc && !v->cancel)
        check_wal(v);
    if (!v->oprc && !v->cancel) {
        resolve_suspects(v);
        check_snapshot(v);
        check_duplicates(v);
        check_counts(v);
        plan_rebuilds(v);
    }
}

static struct vctx *vctx_new(const char *dir, unsigned flags, sdb_fsck_fn fn,
                             void *arg, sdb_fsck_report *rep)
{
    struct vctx *v = calloc(1, sizeof(*v));

    if (!v)
        return NULL;
    v->io = sdb_io_posix();
    v->dir = dir;
    v->flags = flags;
    v->fn = fn;
    v->arg = arg;
    v->rep = rep;
    pthread_mutex_init(&v->lock, NULL);
    return v;
}

static void vctx_free(struct vctx *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->np; i++) {
        free(v->probs[i].file);
        free(v->probs[i].msg);
    }
    for (size_t i = 0; i < v->nf; i++)
        free(v->fixes[i].file);
    for (size_t i = 0; i < v->nc; i++) {
        free(v->cdirs[i].rel);
        free(v->cdirs[i].path);
    }
    for (size_t i = 0; i < v->nw; i++)
        free(v->wcs[i].cpath);
    for (size_t i = 0; i < v->nwal; i++)
        free(v->wal[i].name);
    for (size_t i = 0; i < v->njobs; i++)
        free(v->jobs[i].has);
    free(v->jobs);
    pthread_mutex_destroy(&v->lock);
    sdb_index_free(v->snap);
    free(v->probs);
    free(v->fixes);
    free(v->cdirs);
    free(v->recs);
    free(v->wcs);
    free(v->wal);
    free(v);
}

/* ---- repairs: lost+found ---- */

static char *flat_name(struct vctx *v, const char *rel, const char *suffix)
{
    char *s = fmt(v, "%s%s", rel, suffix), *p;

    for (p = s; p && *p; p++)
        if (*p == '/')
            *p = '!';
    return s;
}

/* A free name in lost+found/ for rel (+suffix); the directory exists. */
static char *lf_target(struct vctx *v, const char *rel, const char *suffix,
                       char **out_name)
{
    char *lf = fmt(v, "%s/%s", v->dir, LOST_FOUND), *base, *name, *path;
    struct stat st;
    int rc;

    if (!lf)
        return NULL;
    rc = v->io->mkdir(v->io->ctx, lf, 0700);
    if (rc == 0)
        rc = sdb_io_fsync_parent(v->io, lf);
    free(lf);
    if (rc < 0 && rc != -EEXIST) {
        set_oprc(v, rc);
        return NULL;
    }
    if (!(base = flat_name(v, rel, suffix)))
        return NULL;
    for (int k = 0;; k++) {
        name = k ? fmt(v, "%s.%d", base, k) : strdup(base);
        path = name ? fmt(v, "%s/%s/%s", v->dir, LOST_FOUND, name) : NULL;
        if (!path || lstat(path, &st) < 0)
            break;
        free(name);
        free(path);
    }
    free(base);
    if (!path)
        free(name);
    else
        *out_name = name;
    return path;
}

static int lf_note(struct vctx *v, const char *name, const char *rel,
                   const char *why)
{
    char *dir = fmt(v, "%s/%s", v->dir, LOST_FOUND);
    char *nname = fmt(v, "%s.note", name), ts[32];
    char *text;
    struct timespec now;
    int rc = SDB_ENOMEM;

    clock_gettime(CLOCK_REALTIME, &now);
    sdb_time_format((int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000, ts);
    text = fmt(v, "stemedb-fsck %s\nfrom: %s\nwhy: %s\n", ts, rel, why);
    if (dir && nname && text)
        rc = sdb_io_write_file_atomic(v->io, dir, nname, text, strlen(text));
    free(dir);
    free(nname);
    free(text);
    return rc;
}

/* Move DIR/rel into lost+found/; 0 if it is already gone. */
static int lf_move(struct vctx *v, const char *rel, const char *why)
{
    char *from = fmt(v, "%s/%s", v->dir, rel), *name = NULL, *to = NULL;
    struct stat st;
    int rc = SDB_ENOMEM;

    if (from && lstat(from, &st) < 0) {
        free(from);
        return 0;
    }
    if (from)
        to = lf_target(v, rel, "", &name);
    if (to) {
        rc = v->io->rename(v->io->ctx, from, to);
        if (rc == 0)
            rc = sdb_io_fsync_parent(v->io, to);
        if (rc == 0)
            rc = sdb_io_fsync_parent(v->io, from);
        if (rc == 0)
            rc = lf_note(v, name, rel, why);
    }
    free(from);
    free(to);
    free(name);
    return rc;
}

/* Save bytes of DIR/rel into lost+found/ under rel + suffix. */
static int lf_save(struct vctx *v, const char *rel, const char *suffix,
                   const void *buf, size_t len, const char *why)
{
    char *name = NULL, *to = lf_target(v, rel, suffix, &name);
    char *dir = fmt(v, "%s/%s", v->dir, LOST_FOUND);
    int rc = SDB_ENOMEM;

    if (to && dir)
        rc = sdb_io_write_file_atomic(v->io, dir, name, buf, len);
    if (rc == 0)
        rc = lf_note(v, name, rel, why);
    free(to);
    free(dir);
    free(name);
    return rc;
}

/* ---- repairs: the WAL ---- */

/* Keep bytes [off, end) of a WAL segment in lost+found, then zero them. */
static int wal_zero_from(struct vctx *v, const char *rel, uint64_t off,
                         bool whole_copy, const char *why)
{
    unsigned char *buf, *zeros;
    size_t len, end;
    char *path, sfx[40];
    int rc = load(v, rel, &buf, &len), fd;

    if (rc < 0)
        return rc == -ENOENT ? 0 : rc;
    end = len;
    while (end > off && buf[end - 1] == 0)
        end--;
    if (end <= off) {
        free(buf);
        return 0;
    }
    sfx[0] = 0;
    if (!whole_copy)
        snprintf(sfx, sizeof(sfx), "@%" PRIu64, off);
    rc = whole_copy ? lf_save(v, rel, sfx, buf, len, why)
                    : lf_save(v, rel, sfx, buf + off, end - off, why);
    free(buf);
    zeros = rc == 0 ? calloc(1, end - off) : NULL;
    path = zeros ? fmt(v, "%s/%s", v->dir, rel) : NULL;
    if (rc == 0 && !path)
        rc = SDB_ENOMEM;
    fd = path ? v->io->open(v->io->ctx, path, O_RDWR | O_CLOEXEC, 0) : -1;
    if (path && fd < 0)
        rc = fd;
    if (fd >= 0) {
        rc = sdb_io_pwrite_all(v->io, fd, zeros, end - off, (off_t)off);
        if (rc == 0)
            rc = v->io->fdatasync(v->io->ctx, fd);
        v->io->close(v->io->ctx, fd);
    }
    free(path);
    free(zeros);
    return rc;
}

/* Cut the log at (segment wi, off): later segments move to lost+found. */
static int wal_cut(struct vctx *v, size_t wi, uint64_t off)
{
    int rc = 0;

    for (size_t i = wi; rc == 0 && i < v->nwal; i++) {
        char *rel = fmt(v, "wal/%s", v->wal[i].name);
        if (!rel)
            return SDB_ENOMEM;
        if (i == wi && off > SDB_WAL_HEADER_SIZE)
            rc = wal_zero_from(v, rel, off, true,
                               "the WAL was cut here: a copy of the whole "
                               "segment before its tail was zeroed");
        else
            rc = lf_move(v, rel, "after the point where the WAL was cut");
        free(rel);
    }
    return rc;
}

/* ---- repairs: concepts ---- */

struct item {
    uint64_t lsn;
    unsigned char *bytes;
    uint32_t len;
    uint8_t type;
};

static int cmp_item(const void *a, const void *b)
{
    const struct item *x = a, *y = b;

    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

static int push_item(struct item **items, size_t *n, size_t *cap, uint64_t lsn,
                     const unsigned char *p, uint32_t len, int type)
{
    struct item *it;

    if (grow((void **)items, cap, *n, sizeof(**items)) < 0)
        return SDB_ENOMEM;
    it = &(*items)[*n];
    it->lsn = lsn;
    it->len = len;
    it->type = (uint8_t)type;
    if (!(it->bytes = malloc(len)))
        return SDB_ENOMEM;
    memcpy(it->bytes, p, len);
    (*n)++;
    return 0;
}

/* A WAL copy's bytes, checked to decode to the right record. */
static int read_wcopy(struct vctx *v, const struct wcopy *w,
                      const struct cdir *c, unsigned char **out)
{
    char *path = fmt(v, "%s/wal/%s", v->dir, v->wal[w->wal].name);
    unsigned char *b = malloc(w->len ? w->len : 1);
    const char *why;
    int rc = SDB_ENOMEM;

    if (path && b) {
        int fd = v->io->open(v->io->ctx, path, O_RDONLY | O_CLOEXEC, 0);
        rc =
            fd < 0 ? fd : sdb_io_pread_all(v->io, fd, b, w->len, (off_t)w->off);
        if (fd >= 0)
            v->io->close(v->io->ctx, fd);
    }
    if (rc == 0 && record_fits(c, b, w->len, w->lsn, w->type, &why) != 0)
        rc = SDB_ECORRUPT;
    free(path);
    if (rc < 0)
        free(b);
    else
        *out = b;
    return rc;
}

/* Gather the verified records of a concept plus WAL copies of the rest. */
static int gather(struct vctx *v, size_t ci, struct item **items, size_t *n)
{
    struct cdir *c = &v->cdirs[ci];
    size_t cap = 0;
    int rc = 0;

    for (uint32_t s = 1; rc == 0 && s <= c->nseg; s++) {
        char d[32], i[32], *rel;
        unsigned char *data = NULL;
        size_t dlen = 0;

        sdb_seg_file_names(s, d, i);
        if (!(rel = fmt(v, "db/%s/%s", c->rel, d)))
            return SDB_ENOMEM;
        if (load(v, rel, &data, &dlen) == 0)
            for (size_t k = 0; rc == 0 && k < v->nr; k++) {
                const struct rec *r = &v->recs[k];
                if (r->cidx == ci && r->segno == s && !r->bad &&
                    (uint64_t)r->off + r->len <= dlen)
                    rc = push_item(items, n, &cap, r->lsn, data + r->off,
                                   r->len, r->type);
            }
        free(data);
        free(rel);
    }
    for (size_t k = 0; rc == 0 && k < v->nw; k++) {
        const struct wcopy *w = &v->wcs[k];
        const struct rec *r = find_rec(v, w->lsn);
        unsigned char *b;
        bool mine = w->cpath ? !c->retractions && !strcmp(w->cpath, c->path)
                             : c->retractions;
        if (!mine || (r && !(r->bad && r->cidx == ci)))
            continue;
        if (read_wcopy(v, w, c, &b) == 0) {
            rc = push_item(items, n, &cap, w->lsn, b, w->len, w->type);
            free(b);
        }
    }
    if (*n)
        qsort(*items, *n, sizeof(**items), cmp_item);
    return rc;
}

/* Write items as segments 1.. of the concept (data first, then idx). */
static int write_segments(struct vctx *v, const struct cdir *c,
                          const struct item *items, size_t n)
{
    char *dir = fmt(v, "%s/db/%s", v->dir, c->rel);
    char *dbdir = fmt(v, "%s/db", v->dir);
    int rc = dir && dbdir ? sdb_io_mkdirs(v->io, dbdir, c->rel) : SDB_ENOMEM;
    size_t k = 0;

    for (uint32_t segno = 1; rc == 0 && k < n; segno++) {
        uint64_t seed = sdb_seg_seed(v->store_id, c->chash, segno);
        size_t start = k, dlen = 0, ilen, pos = 0;
        unsigned char *data, *idx;
        char dname[32], iname[32];

        while (k < n && (k == start || dlen + items[k].len <= REBUILD_SPLIT))
            dlen += items[k++].len;
        ilen = SDB_IDX_HEADER_SIZE + (k - start) * SDB_IDX_ENTRY_SIZE;
        data = malloc(dlen ? dlen : 1);
        idx = malloc(ilen);
        if (!data || !idx) {
            free(data);
            free(idx);
            rc = SDB_ENOMEM;
            break;
        }
        sdb_idx_header_encode(idx, v->store_id, c->chash, segno);
        for (size_t j = start; j < k; j++) {
            unsigned char *e =
                idx + SDB_IDX_HEADER_SIZE + (j - start) * SDB_IDX_ENTRY_SIZE;
            memcpy(data + pos, items[j].bytes, items[j].len);
            sdb_put_u64(e, items[j].lsn);
            sdb_put_u64(e + 8, pos);
            sdb_put_u32(e + 16, items[j].len);
            sdb_put_u32(e + 20, items[j].type);
            sdb_put_u64(e + 24, sdb_hash64(data + pos, items[j].len, seed));
            pos += items[j].len;
        }
        sdb_seg_file_names(segno, dname, iname);
        rc = sdb_io_write_file_atomic(v->io, dir, dname, data, dlen);
        if (rc == 0)
            rc = sdb_io_write_file_atomic(v->io, dir, iname, idx, ilen);
        free(data);
        free(idx);
    }
    free(dir);
    free(dbdir);
    return rc;
}

struct notes {
    struct prob *v;
    size_t n, cap;
};

static void note(struct vctx *v, struct notes *nt, int id, const char *file,
                 const char *msg)
{
    struct prob *p;

    if (grow((void **)&nt->v, &nt->cap, nt->n, sizeof(*p)) < 0) {
        oom(v);
        return;
    }
    p = &nt->v[nt->n];
    p->id = id;
    p->off = -1;
    p->repaired = true;
    p->file = strdup(file);
    p->msg = strdup(msg);
    if (!p->file || !p->msg) {
        free(p->file);
        free(p->msg);
        oom(v);
        return;
    }
    nt->n++;
}

/* Report each record of the concept that the rebuild could not keep. */
static void report_lost(struct vctx *v, size_t ci, const struct item *items,
                        size_t n, struct notes *nt)
{
    for (size_t k = 0; k < v->nr; k++) {
        const struct rec *r = &v->recs[k];
        const struct item *hit;
        struct item key = {.lsn = r->lsn};
        char *f, *m;

        if (r->cidx != ci)
            continue;
        hit = n ? bsearch(&key, items, n, sizeof(*items), cmp_item) : NULL;
        if (hit)
            continue;
        f = fmt(v, "db/%s/@seg-%06" PRIu32 ".msgpack", v->cdirs[ci].rel,
                r->segno);
        m = fmt(v,
                "LSN %" PRIu64 " @%" PRIu32
                " failed verification and has no good copy; its bytes are "
                "kept in " LOST_FOUND "/",
                r->lsn, r->off);
        if (f && m)
            note(v, nt, SDB_FSCK_RECORD_LOST, f, m);
        v->rep->records_lost++;
        free(f);
        free(m);
    }
}

static int rebuild_concept(struct vctx *v, size_t ci, struct notes *nt)
{
    struct cdir *c = &v->cdirs[ci];
    struct item *items = NULL;
    size_t n = 0;
    int rc = gather(v, ci, &items, &n);

    for (uint32_t s = 1; rc == 0 && s <= c->nseg; s++) {
        char d[32], i[32], *rd, *ri;
        sdb_seg_file_names(s, d, i);
        rd = fmt(v, "db/%s/%s", c->rel, d);
        ri = fmt(v, "db/%s/%s", c->rel, i);
        rc = rd && ri ? lf_move(v, rd, "replaced by a rebuilt segment")
                      : SDB_ENOMEM;
        if (rc == 0)
            rc = lf_move(v, ri, "replaced by a rebuilt segment");
        free(rd);
        free(ri);
    }
    if (rc == 0)
        rc = write_segments(v, c, items, n);
    if (rc == 0)
        report_lost(v, ci, items, n, nt);
    for (size_t k = 0; k < n; k++)
        free(items[k].bytes);
    free(items);
    return rc;
}

/* ---- repairs: metadata.json ---- */

static int rewrite_meta(struct vctx *v)
{
    struct sdb_meta m = v->meta;
    uint64_t maxl = v->nr ? v->recs[v->nr - 1].lsn : 0, na, nr;
    struct timespec now;
    int rc;

    if (!v->have_store)
        return 0; /* nothing to build it from */
    if (!v->have_meta) {
        memset(&m, 0, sizeof(m));
        clock_gettime(CLOCK_REALTIME, &now);
        m.store_id = v->store_id;
        m.created_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
        /* everything in the segments up to the first hole is checkpointed;
         * the WAL replays the rest */
        for (size_t i = 0; i < v->nr; i++)
            if (v->recs[i].lsn == m.checkpoint_lsn + 1)
                m.checkpoint_lsn++;
        m.last_lsn = m.checkpoint_lsn;
    }
    if (maxl > m.last_lsn && maxl > v->wal_max)
        m.last_lsn = maxl;
    v->ckpt = m.checkpoint_lsn;
    count_records(v, m.checkpoint_lsn, &na, &nr);
    m.assertion_count = na;
    m.retraction_count = nr;
    m.concept_count = 0;
    for (size_t i = 0; i < v->nc; i++)
        m.concept_count += !v->cdirs[i].retractions;
    rc = lf_move(v, "metadata.json", "replaced by a rewritten metadata.json");
    if (rc == 0)
        rc = sdb_meta_write(v->io, v->dir, &m);
    return rc;
}

/* Apply the fixes the flags allow; returns how many, or a negative code. */
static int apply_fixes(struct vctx *v, struct notes *nt)
{
    int allowed = v->flags & SDB_FSCK_REPAIR_ALL ? ALL : SAFE, done = 0, rc = 0;
    size_t cut = SIZE_MAX;
    uint64_t cut_off = 0;
    bool rebuilt = false, meta = false;

    for (size_t i = 0; i < v->nf; i++) {
        const struct fix *x = &v->fixes[i];
        if (x->kind == FIX_WAL_CUT && x->cls <= allowed &&
            (x->idx < cut || (x->idx == cut && x->off < cut_off))) {
            cut = x->idx;
            cut_off = x->off;
        }
    }
    for (size_t i = 0; rc == 0 && i < v->nf; i++) {
        const struct fix *x = &v->fixes[i];
        if (x->cls > allowed)
            continue;
        if (x->kind == FIX_MOVE)
            rc = lf_move(v, x->file, "moved aside by stemedb-fsck");
        else if (x->kind == FIX_ZERO_TAIL && x->idx < cut)
            rc = wal_zero_from(v, x->file, x->off, false,
                               "the torn tail of the WAL, zeroed");
        else if (x->kind == FIX_REBUILD)
            rc = rebuild_concept(v, x->idx, nt), rebuilt = true;
        else if (x->kind == FIX_META)
            meta = true;
        else if (x->kind != FIX_WAL_CUT)
            continue;
        done++;
    }
    if (rc == 0 && cut != SIZE_MAX)
        rc = wal_cut(v, cut, cut_off);
    if (rc == 0 && rebuilt)
        rc = lf_move(v, SNAP_REL, "derived index; segments were rebuilt");
    if (rc == 0 && meta && !rebuilt)
        rc = rewrite_meta(v);
    else if (meta && rebuilt)
        done++; /* counts are recomputed in the next round */
    return rc < 0 ? rc : done;
}

/* ---- the LOCK ---- */

static int take_lock(struct vctx *v, bool repair, int *out_fd)
{
    char *path = fmt(v, "%s/LOCK", v->dir), buf[32] = "";
    int fd, n, e;

    *out_fd = -1;
    if (!path)
        return SDB_ENOMEM;
    /* no LOCK (a backup, a copy): nothing to take, and none is created */
    fd = open(path, O_RDWR | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return repair && errno != ENOENT ? -errno : 0;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        if (repair)
            *out_fd = fd;
        else
            close(fd);
        return 0;
    }
    e = errno;
    n = (int)pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    if (e != EWOULDBLOCK)
        return repair ? -e : 0;
    v->rep->lock_pid = strtol(buf, NULL, 10);
    if (repair)
        return SDB_ELOCKED;
    add_prob(v, SDB_FSCK_LIVE_STORE, "LOCK", -1,
             "held by a running process (pid %ld): the newest WAL segment may "
             "change while it is read",
             v->rep->lock_pid);
    return 0;
}

/* ---- the entry point ---- */

static bool has_prob(const struct vctx *v, const struct prob *p)
{
    for (size_t i = 0; v && i < v->np; i++)
        if (v->probs[i].id == p->id && !strcmp(v->probs[i].file, p->file))
            return true;
    return false;
}

static bool emit(struct vctx *v, const struct prob *p, bool repaired)
{
    sdb_fsck_problem out = {.id = p->id,
                            .name = msg_table[p->id].name,
                            .severity = msg_table[p->id].severity,
                            .file = p->file,
                            .offset = p->off,
                            .message = p->msg,
                            .repaired = repaired};
    sdb_fsck_report *rep = v->rep;

    if (out.severity == SDB_FSCK_ERROR)
        rep->errors++;
    else if (out.severity == SDB_FSCK_WARN)
        rep->warnings++;
    else
        rep->infos++;
    rep->repaired += repaired;
    return v->fn && v->fn(v->arg, &out, rep);
}

static uint64_t du(const char *path)
{
    struct stat st;
    uint64_t sum = 0;
    DIR *d;
    struct dirent *de;
    char sub[8192];

    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    if (!(d = opendir(path)))
        return 0;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            strcmp(de->d_name, LOST_FOUND) &&
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) <
                (int)sizeof(sub))
            sum += du(sub);
    closedir(d);
    return sum;
}

/* Check again after repairing; the last pass decides what is left. */
static int repair_rounds(struct vctx *first, struct vctx **out_final,
                         struct notes *nt)
{
    struct vctx *cur = first, *next;
    int rc = 0;

    for (int round = 0; round < MAX_ROUNDS; round++) {
        int n = apply_fixes(cur, nt);
        if (n <= 0) {
            rc = n;
            break;
        }
        next = vctx_new(first->dir, first->flags, first->fn, first->arg,
                        first->rep);
        if (!next) {
            rc = SDB_ENOMEM;
            break;
        }
        run_pass(next);
        if (cur != first)
            vctx_free(cur);
        cur = next;
        if (cur->oprc || cur->cancel)
            break;
    }
    *out_final = cur;
    return rc;
}

int sdb_fsck(const char *dir, unsigned flags, sdb_fsck_fn fn, void *arg,
             sdb_fsck_report *rep)
{
    bool repair = flags & (SDB_FSCK_REPAIR_SAFE | SDB_FSCK_REPAIR_ALL);
    struct vctx *v, *fin = NULL;
    struct notes nt = {0};
    struct stat st;
    int rc, lock_fd = -1;
    bool stop = false;

    memset(rep, 0, sizeof(*rep));
    if (stat(dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (access(dir, R_OK | X_OK) < 0)
        return -errno;
    if (!(v = vctx_new(dir, flags, fn, arg, rep)))
        return SDB_ENOMEM;
    rc = take_lock(v, repair, &lock_fd);
    if (rc < 0)
        goto out;
    rep->bytes_total = du(dir);
    v->count_bytes = true;
    run_pass(v);
    rc = v->oprc;
    if (rc == 0 && v->cancel)
        rc = -ECANCELED;
    fin = v;
    if (rc == 0 && repair) {
        rc = repair_rounds(v, &fin, &nt);
        if (rc == 0 && fin->oprc)
            rc = fin->oprc;
        if (rc == 0 && fin->cancel)
            rc = -ECANCELED;
    }
    for (size_t i = 0; i < v->np && !stop; i++)
        stop = emit(v, &v->probs[i], fin != v && !has_prob(fin, &v->probs[i]));
    for (size_t i = 0; i < nt.n && !stop; i++)
        stop = emit(v, &nt.v[i], true);
    for (size_t i = 0; fin != v && i < fin->np && !stop; i++)
        if (!has_prob(v, &fin->probs[i]))
            stop = emit(v, &fin->probs[i], false);
    for (size_t i = 0; i < fin->np; i++)
        rep->unrepaired +=
            msg_table[fin->probs[i].id].severity >= SDB_FSCK_WARN;
    for (int id = 0; id < SDB_FSCK_MSG_COUNT; id++)
        if (fin->shown[id] > MAX_SHOWN && msg_table[id].severity)
            rep->unrepaired += fin->shown[id] - MAX_SHOWN;
    if (stop && rc == 0)
        rc = -ECANCELED;
out:
    rep->cancelled = rc == -ECANCELED;
    for (size_t i = 0; i < nt.n; i++) {
        free(nt.v[i].file);
        free(nt.v[i].msg);
    }
    free(nt.v);
    if (fin != v)
        vctx_free(fin);
    vctx_free(v);
    if (lock_fd >= 0)
        close(lock_fd);
    return rc;
}

/* ---- image entry points for tests and fuzzing (verify.h) ---- */

static int image_result(struct vctx *v)
{
    int rc = v->oprc ? v->oprc : (int)v->np;

    vctx_free(v);
    return rc;
}

int sdb_verify_wal_image(const unsigned char *buf, size_t len,
                         uint64_t store_id, uint64_t seq, bool newest)
{
    static sdb_fsck_report rep;
    struct vctx *v = vctx_new("", 0, NULL, NULL, &rep);
    struct walseg seg = {.name = NULL, .seq = seq};

    if (!v)
        return SDB_ENOMEM;
    v->store_id = store_id;
    v->have_store = true;
    v->wal = &seg;
    v->nwal = 1;
    check_wal_image(v, 0, "wal/image", buf, len, newest);
    v->wal = NULL;
    v->nwal = 0;
    return image_result(v);
}

int sdb_verify_segment_image(const unsigned char *idx, size_t ilen,
                             const unsigned char *data, size_t dlen,
                             uint64_t store_id, const char *cpath,
                             uint32_t segno)
{
    static sdb_fsck_report rep;
    struct vctx *v = vctx_new("", 0, NULL, NULL, &rep);
    struct segfiles f = {
        "db/image.idx", "db/image.msgpack", idx, data, ilen, dlen};
    uint64_t last = 0;
    int c;

    if (!v)
        return SDB_ENOMEM;
    v->store_id = store_id;
    v->have_store = true;
    c = add_cdir(v, *cpath ? cpath : SDB_RETRACTIONS_DIR, cpath, !*cpath);
    if (c >= 0)
        check_segment(v, (uint32_t)c, segno, true, &f, &last);
    return image_result(v);
}
