/*
 * open.c - sdb_db_open and sdb_db_close: directory layout, the LOCK,
 * metadata, loading or rebuilding the indexes, WAL replay past the
 * checkpoint, the first checkpoint, and starting/stopping the threads.
 * Recovery is described in docs/architecture.md ("Recovery").
 */
#define _GNU_SOURCE
#include "db_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "hash.h"
#include "path.h"
#include "textcache.h"

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- layout and LOCK ---- */

static int make_dir(struct sdb_db *db, const char *path, sdb_error *err)
{
    int rc = db->io->mkdir(db->io->ctx, path, 0755);

    if (rc == -EEXIST)
        return 0;
    if (rc == 0)
        rc = sdb_io_fsync_parent(db->io, path);
    if (rc < 0)
        sdb_error_set(err, rc, "data_dir", "cannot create %s: %s%s", path,
                      sdb_strerror(rc),
                      rc == -EACCES ? " (permission denied: check the owner "
                                      "and mode of the directory)"
                                    : "");
    return rc;
}

static int take_lock(struct sdb_db *db, sdb_error *err)
{
    char path[4200], buf[32] = "";
    int fd, n;

    snprintf(path, sizeof(path), "%s/LOCK", db->data_dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return sdb_error_set(err, -errno, "data_dir", "cannot open %s: %s",
                             path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        n = (int)pread(fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\n")] = 0;
        close(fd);
        if (e != EWOULDBLOCK)
            return sdb_error_set(err, -e, "data_dir", "cannot lock %s: %s",
                                 path, strerror(e));
        return sdb_error_set(err, SDB_ELOCKED, "data_dir",
                             "%s is locked by another StemeDB process (pid "
                             "%s); stop it first",
                             db->data_dir, buf[0] ? buf : "unknown");
    }
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        close(fd);
        return sdb_error_set(err, -errno, "data_dir", "cannot write %s: %s",
                             path, strerror(errno));
    }
    db->lock_fd = fd;
    return 0;
}

static int dir_has_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int found = 0;

    if (!d)
        return 0;
    while (!found && (de = readdir(d)) != NULL)
        found = strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                strcmp(de->d_name, "indexes");
    closedir(d);
    return found;
}

/* Read metadata.json, or create a new store when allowed and empty. */
static int load_meta(struct sdb_db *db, sdb_error *err)
{
    int rc = sdb_meta_read(db->io, db->data_dir, &db->meta, err);

    if (rc != -ENOENT)
        return rc;
    if (!(db->opt.flags & SDB_OPEN_CREATE) || dir_has_entries(db->wal_dir) ||
        dir_has_entries(db->db_dir))
        return sdb_error_set(err, SDB_ECORRUPT, "metadata",
                             "%s/metadata.json is missing but the directory "
                             "holds data; run stemedb-fsck",
                             db->data_dir);
    memset(&db->meta, 0, sizeof(db->meta));
    while (db->meta.store_id == 0)
        if (getrandom(&db->meta.store_id, sizeof(db->meta.store_id), 0) < 0)
            return sdb_error_set(err, -errno, "", "getrandom: %s",
                                 strerror(errno));
    db->meta.created_us = sdb_now_us();
    rc = sdb_meta_write(db->io, db->data_dir, &db->meta);
    if (rc < 0)
        sdb_error_set(err, rc, "metadata", "cannot write %s/metadata.json: %s",
                      db->data_dir, sdb_strerror(rc));
    else
        sdb_db_log(db, SDB_LOG_INFO, "Created a new store in %s", db->data_dir);
    return rc;
}

/* ---- rebuilding the index from the segment files ---- */

struct rebuild {
    struct sdb_db *db;
    uint32_t concept;
    struct {
        uint64_t parent, child;
    } * pairs;
    size_t n_pairs, cap_pairs;
    struct sdb_retraction *rets;
    struct sdb_loc *ret_locs;
    size_t n_rets, cap_rets;
    uint64_t records;
    sdb_error *err;
};

static int keep_pair(struct rebuild *rb, uint64_t parent, uint64_t child)
{
    if (rb->n_pairs == rb->cap_pairs) {
        size_t cap = rb->cap_pairs ? rb->cap_pairs * 2 : 256;
        void *p = realloc(rb->pairs, cap * sizeof(*rb->pairs));
        if (!p)
            return SDB_ENOMEM;
        rb->pairs = p;
        rb->cap_pairs = cap;
    }
    rb->pairs[rb->n_pairs].parent = parent;
    rb->pairs[rb->n_pairs++].child = child;
    return 0;
}

static int keep_retraction(struct rebuild *rb, struct sdb_retraction *r,
                           const struct sdb_loc *loc)
{
    if (rb->n_rets == rb->cap_rets) {
        size_t cap = rb->cap_rets ? rb->cap_rets * 2 : 64;
        void *p = realloc(rb->rets, cap * sizeof(*rb->rets));
        void *q = p ? realloc(rb->ret_locs, cap * sizeof(*rb->ret_locs)) : NULL;
        if (p)
            rb->rets = p;
        if (!q)
            return SDB_ENOMEM;
        rb->ret_locs = q;
        rb->cap_rets = cap;
    }
    rb->ret_locs[rb->n_rets] = *loc;
    rb->rets[rb->n_rets++] = *r;
    memset(r, 0, sizeof(*r));
    return 0;
}

/* One record found while scanning a concept's segments. */
static int rebuild_record(void *arg, uint64_t lsn, int type,
                          const struct sdb_loc *loc, const unsigned char *buf)
{
    struct rebuild *rb = arg;
    struct sdb_index *ix = rb->db->ix;
    struct sdb_record rec;
    struct sdb_entry e = {0};
    size_t used;
    int rc;

    rc = sdb_codec_unpack_ex(buf, loc->len, &used, &rec, NULL,
                             SDB_UNPACK_TRUSTED | SDB_UNPACK_NO_VALUE);

    if (rc < 0 || used != loc->len || rec.type != type ||
        (type == SDB_REC_ASSERTION &&
         (rec.a.id.lsn != lsn ||
          strcmp(rec.a.concept_path, ix->concepts[rb->concept]->path))) ||
        (type == SDB_REC_RETRACTION && (rec.r.id.lsn != lsn || rb->concept)))
        rc = SDB_ECORRUPT;
    if (rc == 0 && type == SDB_REC_RETRACTION) {
        rc = keep_retraction(rb, &rec.r, loc);
    } else if (rc == 0) {
        e.lsn = lsn;
        e.ts_us = rec.a.ts_us;
        e.salt = rec.a.id.salt;
        e.concept = rb->concept;
        e.tier = (uint8_t)rec.a.tier;
        e.confidence = (float)rec.a.confidence;
        e.segno = (uint16_t)loc->segno;
        e.off = loc->off;
        e.len = loc->len;
        e.hash = loc->hash;
        rc = sdb_strtab_intern(&ix->predicates, rec.a.predicate, true,
                               &e.predicate);
        if (rc == 0 && rec.a.source)
            rc = sdb_strtab_intern(&ix->sources, rec.a.source, true, &e.source);
        for (size_t i = 0; rc == 0 && i < rec.a.n_derived; i++)
            rc = keep_pair(rb, rec.a.derived_from[i].lsn, lsn);
        if (rc == 0)
            rc = sdb_index_push_raw_unsorted(ix, &e);
    }
    sdb_record_release(&rec);
    rb->records++;
    return rc;
}

static int scan_concept(struct rebuild *rb, uint32_t cid)
{
    struct sdb_db *db = rb->db;
    struct sdb_concept *c = db->ix->concepts[cid];
    char bad[512];
    int rc;

    rb->concept = cid;
    rc = sdb_seg_scan(db->io, db->db_dir, &c->seg, db->meta.store_id,
                      rebuild_record, rb, bad, sizeof(bad));
    if (rc == SDB_ECORRUPT)
        return sdb_error_set(rb->err, rc, "db",
                             "%s/%s: a record does not decode or belongs "
                             "elsewhere; run stemedb-fsck",
                             db->db_dir, c->seg.dir);
    if (rc == 0 && bad[0])
        sdb_db_log(db, SDB_LOG_WARN,
                   "segment scan stopped at %s/%s; records after it will "
                   "come from the WAL",
                   db->db_dir, bad);
    return rc;
}

/* d_type, or fstatat where the file system does not fill it in. */
static bool is_dir(DIR *d, const struct dirent *de)
{
    struct stat st;

    if (de->d_type != DT_UNKNOWN)
        return de->d_type == DT_DIR;
    return fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISDIR(st.st_mode);
}

/* Recursively find concept directories below db/rel (concept path cpath). */
static int walk(struct rebuild *rb, const char *rel, const char *cpath)
{
    char path[4200], child_rel[4096], child_path[SDB_MAX_PATH_LEN + 1],
        comp[256];
    DIR *d;
    struct dirent *de;
    int rc = 0;

    snprintf(path, sizeof(path), "%s%s%s", rb->db->db_dir, *rel ? "/" : "",
             rel);
    if (!(d = opendir(path)))
        return sdb_error_set(rb->err, -errno, "db", "cannot read %s: %s", path,
                             strerror(errno));
    while (rc == 0 && (de = readdir(d)) != NULL) {
        uint32_t cid;
        int n;

        if (de->d_name[0] == '.' || de->d_name[0] == '@' ||
            (!*rel && strcmp(de->d_name, "indexes") == 0) || !is_dir(d, de))
            continue;
        n = sdb_path_unescape_component(de->d_name, comp, sizeof(comp));
        if (n < 0 ||
            snprintf(child_path, sizeof(child_path), "%s%s%s", cpath,
                     *cpath ? "/" : "", comp) >= (int)sizeof(child_path)) {
            sdb_db_log(rb->db, SDB_LOG_WARN,
                       "ignoring %s/%s: not a valid concept directory name",
                       path, de->d_name);
            continue;
        }
        snprintf(child_rel, sizeof(child_rel), "%s%s%s", rel, *rel ? "/" : "",
                 de->d_name);
        rc = sdb_index_concept(rb->db->ix, child_path, true, &cid);
        if (rc == 0 && strcmp(rb->db->ix->concepts[cid]->seg.dir, child_rel))
            rc = sdb_error_set(rb->err, SDB_ECORRUPT, "db",
                               "%s: directory name is not in canonical form",
                               child_rel);
        if (rc == 0)
            rc = scan_concept(rb, cid);
        if (rc == 0)
            rc = walk(rb, child_rel, child_path);
    }
    closedir(d);
    return rc;
}

static int cmp_ret(const void *a, const void *b)
{
    const struct sdb_retraction *x = a, *y = b;

    return x->id.lsn < y->id.lsn ? -1 : x->id.lsn > y->id.lsn;
}

/* Sort what the scan found and link it; apply retractions in LSN order. */
static int cmp_entry_lsn(const void *a, const void *b)
{
    const struct sdb_entry *x = a, *y = b;

    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

/* The concept's files will be cut just before the record at (segno, off). */
struct cutpoint {
    bool set;
    uint32_t segno, off, kept;
};

static void mark_cut(struct cutpoint *cp, uint32_t segno, uint32_t off)
{
    if (!cp->set) {
        cp->set = true;
        cp->segno = segno;
        cp->off = off;
    }
}

/* Set each cut concept's lengths to just before its first dropped record. */
static void apply_cuts(struct rebuild *rb, struct cutpoint *cp, uint32_t kept_n,
                       size_t kept_r)
{
    struct sdb_index *ix = rb->db->ix;

    for (uint32_t i = 0; i < kept_n; i++) {
        const struct sdb_entry *e = &ix->entries[i];
        cp[e->concept].kept +=
            cp[e->concept].set && e->segno == cp[e->concept].segno;
    }
    for (size_t i = 0; i < kept_r; i++)
        cp[0].kept +=
            cp[0].set && rb->ret_locs[rb->rets[i].scope].segno == cp[0].segno;
    for (uint32_t c = 0; c < ix->n_concepts; c++) {
        struct sdb_seginfo *si = &ix->concepts[c]->seg;

        if (!cp[c].set)
            continue;
        si->segno = cp[c].segno;
        si->data_len = cp[c].off;
        si->idx_len =
            SDB_IDX_HEADER_SIZE + (uint64_t)cp[c].kept * SDB_IDX_ENTRY_SIZE;
    }
}

/*
 * Segment files are not synced past the checkpoint, so a crash can keep a
 * later record and lose an earlier one.  Keep the records up to the first
 * hole in the LSN sequence above the checkpoint (they are valid and may
 * be the only copy); drop the rest and cut their files, so the WAL replay
 * appends them again in LSN order.  Entries must be sorted, rets too.
 */
static int drop_past_first_hole(struct rebuild *rb, size_t *kept_r)
{
    struct sdb_index *ix = rb->db->ix;
    uint64_t k = rb->db->meta.checkpoint_lsn;
    uint32_t i = 0, n;
    size_t j = 0;
    struct cutpoint *cp;

    for (;;) { /* merge the two LSN-sorted lists */
        uint64_t a = i < ix->n_entries ? ix->entries[i].lsn : UINT64_MAX;
        uint64_t b = j < rb->n_rets ? rb->rets[j].id.lsn : UINT64_MAX;
        uint64_t next = a < b ? a : b;

        if (next == UINT64_MAX || (next > k && next != k + 1))
            break;
        if (next > k)
            k = next;
        if (a < b)
            i++;
        else
            j++;
    }
    *kept_r = j;
    if (i == ix->n_entries && j == rb->n_rets)
        return 0;
    cp = calloc(ix->n_concepts, sizeof(*cp));
    if (!cp)
        return SDB_ENOMEM;
    for (n = i; n < ix->n_entries; n++)
        mark_cut(&cp[ix->entries[n].concept], ix->entries[n].segno,
                 ix->entries[n].off);
    for (size_t r = j; r < rb->n_rets; r++)
        mark_cut(&cp[0], rb->ret_locs[rb->rets[r].scope].segno,
                 rb->ret_locs[rb->rets[r].scope].off);
    apply_cuts(rb, cp, i, j);
    sdb_db_log(rb->db, SDB_LOG_INFO,
               "segment records past LSN %" PRIu64
               " are left to the WAL replay (%u records)",
               k, (ix->n_entries - i) + (unsigned)(rb->n_rets - j));
    ix->n_entries = i;
    free(cp);
    return 0;
}

/* Sort what the scan found and link it; apply retractions in LSN order. */
static int rebuild_finish(struct rebuild *rb)
{
    struct sdb_index *ix = rb->db->ix;
    size_t kept_r = 0;
    int rc;

    if (ix->n_entries)
        qsort(ix->entries, ix->n_entries, sizeof(*ix->entries), cmp_entry_lsn);
    /* sort retractions together with their locations */
    for (size_t i = 0; i < rb->n_rets; i++)
        rb->rets[i].scope = (int)i; /* remember the original slot */
    if (rb->n_rets)
        qsort(rb->rets, rb->n_rets, sizeof(*rb->rets), cmp_ret);
    rc = drop_past_first_hole(rb, &kept_r);
    if (rc == 0)
        rc = sdb_index_sort(ix);
    for (size_t i = 0; rc == 0 && i < rb->n_pairs; i++) {
        int64_t pos = sdb_index_find(ix, rb->pairs[i].child);
        if (pos < 0) /* the child was left to the replay */
            continue;
        rc = sdb_index_link_derived(ix, rb->pairs[i].parent, (uint32_t)pos);
    }
    for (size_t i = 0; rc == 0 && i < kept_r; i++) {
        struct sdb_retraction *r = &rb->rets[i];
        rc = sdb_index_add_retraction(ix, r, &rb->ret_locs[r->scope]);
        if (rc == 0)
            sdb_index_apply_retraction(ix, r->id.lsn, r->retracted,
                                       r->n_retracted);
    }
    return rc;
}

static int rebuild_index(struct sdb_db *db, sdb_error *err)
{
    struct rebuild rb = {.db = db, .err = err};
    struct timespec t0;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    sdb_db_log(db, SDB_LOG_INFO, "Rebuilding indexes...");
    sdb_index_free(db->ix);
    db->ix = NULL;
    rc = sdb_index_new(&db->ix);
    if (rc == 0)
        rc = scan_concept(&rb, 0);
    if (rc == 0)
        rc = walk(&rb, "", "");
    if (rc == 0)
        rc = rebuild_finish(&rb);
    for (size_t i = 0; i < rb.n_rets; i++)
        sdb_retraction_release(&rb.rets[i]);
    free(rb.rets);
    free(rb.ret_locs);
    free(rb.pairs);
    if (rc == 0)
        sdb_db_log(db, SDB_LOG_INFO,
                   "Index rebuild complete in %.3f s (%" PRIu64
                   " records, %" PRIu32 " concepts)",
                   elapsed_s(&t0), rb.records, db->ix->n_concepts - 1);
    else if (!err || !err->code)
        sdb_error_set(err, rc, "db", "index rebuild failed: %s",
                      sdb_strerror(rc));
    return rc;
}

/* ---- WAL replay ---- */

static void wal_log(void *arg, int level, const char *msg)
{
    sdb_db_log(arg, (sdb_log_level)level, "%s", msg);
}

struct replay {
    struct sdb_db *db;
    uint64_t after;
    uint64_t replayed;
    unsigned char *reset; /* per concept: tail already cut this recovery */
    uint32_t n_reset;
    sdb_error *err;
};

static int reset_once(struct replay *rp, uint32_t cid)
{
    struct sdb_db *db = rp->db;

    if (cid >= rp->n_reset) {
        uint32_t n = db->ix->n_concepts + 1024;
        unsigned char *p = realloc(rp->reset, n);
        if (!p)
            return SDB_ENOMEM;
        memset(p + rp->n_reset, 0, n - rp->n_reset);
        rp->reset = p;
        rp->n_reset = n;
    }
    if (rp->reset[cid] || db->opt.flags & SDB_OPEN_READONLY)
        return 0;
    rp->reset[cid] = 1;
    return sdb_segstore_reset_tail(db->ss, &db->ix->concepts[cid]->seg);
}

static int replay_assertion(struct replay *rp, struct sdb_assertion *a,
                            const unsigned char *rec, size_t len)
{
    struct sdb_db *db = rp->db;
    struct sdb_loc loc = {0};
    uint32_t cid;
    int rc;

    if (sdb_index_find(db->ix, a->id.lsn) >= 0)
        return 0; /* already in the segments */
    rc = sdb_index_concept(db->ix, a->concept_path, true, &cid);
    if (rc == 0)
        rc = reset_once(rp, cid);
    if (rc == 0)
        rc = sdb_segstore_append(db->ss, &db->ix->concepts[cid]->seg, a->id.lsn,
                                 SDB_REC_ASSERTION, rec, len, &loc);
    if (rc == 0)
        rc = sdb_index_add(db->ix, a, cid, &loc, NULL);
    return rc;
}

static int replay_retraction(struct replay *rp, struct sdb_retraction *r,
                             const unsigned char *rec, size_t len)
{
    struct sdb_db *db = rp->db;
    struct sdb_loc loc = {0};
    int rc;

    if (sdb_index_find_retraction(db->ix, r->id.lsn) >= 0)
        return 0;
    rc = reset_once(rp, 0);
    if (rc == 0)
        rc = sdb_segstore_append(db->ss, &db->ix->concepts[0]->seg, r->id.lsn,
                                 SDB_REC_RETRACTION, rec, len, &loc);
    if (rc == 0)
        rc = sdb_index_add_retraction(db->ix, r, &loc);
    if (rc == 0)
        sdb_index_apply_retraction(db->ix, r->id.lsn, r->retracted,
                                   r->n_retracted);
    return rc;
}

/* Called by the WAL scan for each record holding LSNs past the checkpoint. */
static int replay_record(void *arg, uint64_t lsn, uint32_t count,
                         const unsigned char *payload, size_t len)
{
    struct replay *rp = arg;
    size_t off = 0, used;
    int rc = 0;

    for (uint32_t i = 0; rc == 0 && i < count; i++) {
        struct sdb_record rec;
        uint64_t rlsn;

        rc = sdb_codec_unpack_ex(payload + off, len - off, &used, &rec, rp->err,
                                 SDB_UNPACK_TRUSTED | SDB_UNPACK_NO_VALUE);
        if (rc < 0)
            break;
        rlsn = rec.type == SDB_REC_ASSERTION ? rec.a.id.lsn : rec.r.id.lsn;
        if (rlsn != lsn + i) {
            rc = SDB_ECORRUPT;
        } else if (rlsn > rp->after) {
            rc = rec.type == SDB_REC_ASSERTION
                     ? replay_assertion(rp, &rec.a, payload + off, used)
                     : replay_retraction(rp, &rec.r, payload + off, used);
            rp->replayed++;
            if (rec.type == SDB_REC_ASSERTION && rec.a.ts_us > rp->db->last_ts)
                rp->db->last_ts = rec.a.ts_us;
            if (rec.type == SDB_REC_RETRACTION && rec.r.ts_us > rp->db->last_ts)
                rp->db->last_ts = rec.r.ts_us;
        }
        sdb_record_release(&rec);
        off += used;
    }
    if (rc == 0 && off != len)
        rc = SDB_ECORRUPT;
    return rc;
}

/* Records at or below the checkpoint must match what metadata.json says. */
static int check_counts(struct sdb_db *db, uint64_t ckpt, sdb_error *err)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < db->ix->n_entries; i++)
        n += db->ix->entries[i].lsn <= ckpt;
    for (uint32_t i = 0; i < db->ix->n_retractions; i++)
        n += db->ix->retractions[i].lsn <= ckpt;
    if (n == db->meta.assertion_count + db->meta.retraction_count)
        return 0;
    return sdb_error_set(
        err, SDB_ECORRUPT, "db",
        "the segment files hold %" PRIu64
        " records up to checkpoint LSN %" PRIu64
        " but metadata.json says %" PRIu64 "; run stemedb-fsck",
        n, ckpt, db->meta.assertion_count + db->meta.retraction_count);
}

/* Load or rebuild the index, then replay the WAL past the checkpoint. */
static int recover(struct sdb_db *db, sdb_error *err)
{
    struct replay rp = {.db = db, .err = err};
    struct sdb_wal_config wc = {0};
    uint64_t snap_lsn = 0, last = 0, ckpt = db->meta.checkpoint_lsn;
    sdb_error lerr = {0};
    bool rebuilt = false;
    int rc;

    sdb_db_log(db, SDB_LOG_INFO, "Starting WAL recovery...");
    rc = sdb_index_load(db->io, db->idx_dir, db->meta.store_id, &db->ix,
                        &snap_lsn, &lerr);
    if (rc == 0 && snap_lsn < ckpt) {
        sdb_index_free(db->ix);
        db->ix = NULL;
        rc = SDB_ECORRUPT;
        snprintf(lerr.message, sizeof(lerr.message),
                 "index snapshot is older than the checkpoint");
    }
    if (rc < 0 && rc != -ENOENT)
        sdb_db_log(db, SDB_LOG_WARN, "index snapshot not usable (%s)",
                   lerr.message);
    if (rc < 0 && ckpt > 0) {
        rc = rebuild_index(db, err);
        rebuilt = true;
    } else if (rc < 0) {
        rc = sdb_index_new(&db->ix);
    } else {
        ckpt = snap_lsn;
    }
    if (rc < 0)
        return rc;
    rp.after = ckpt;
    wc.io = db->io;
    wc.dir = db->wal_dir;
    wc.archive_dir = db->archive_dir;
    wc.store_id = db->meta.store_id;
    wc.segment_bytes = db->opt.wal_segment_bytes;
    wc.log = wal_log;
    wc.log_arg = db;
    rc = sdb_wal_open(&wc, db->opt.flags & SDB_OPEN_READONLY, ckpt,
                      replay_record, &rp, &db->wal, &last, err);
    free(rp.reset);
    if (rc == 0)
        rc = sdb_segstore_flush(db->ss);
    if (rc < 0)
        return rc;
    if (rebuilt)
        rc = check_counts(db, db->meta.checkpoint_lsn, err);
    sdb_db_log(db, SDB_LOG_INFO, "Replayed %" PRIu64 " entries from WAL",
               rp.replayed);
    if (!rebuilt)
        sdb_db_log(db, SDB_LOG_INFO,
                   "Rebuilding indexes... loaded the snapshot at LSN %" PRIu64
                   " and applied the WAL after it",
                   ckpt);
    if (last < db->meta.last_lsn)
        last = db->meta.last_lsn;
    db->next_lsn = last + 1;
    atomic_store(&db->visible_lsn, last);
    db->st.replayed_on_open = rp.replayed;
    return rc;
}

/* ---- open and close ---- */

static int copy_dirs(struct sdb_db *db, const sdb_options *opt)
{
    const char *dd = opt->data_dir ? opt->data_dir : "data";

    db->data_dir = strdup(dd);
    if (opt->wal_dir)
        db->wal_dir = strdup(opt->wal_dir);
    else if (asprintf(&db->wal_dir, "%s/wal", dd) < 0)
        db->wal_dir = NULL;
    if (opt->db_dir)
        db->db_dir = strdup(opt->db_dir);
    else if (asprintf(&db->db_dir, "%s/db", dd) < 0)
        db->db_dir = NULL;
    if (db->db_dir && asprintf(&db->idx_dir, "%s/indexes", db->db_dir) < 0)
        db->idx_dir = NULL;
    if (opt->wal_archive_dir && *opt->wal_archive_dir)
        db->archive_dir = strdup(opt->wal_archive_dir);
    if (!db->data_dir || !db->wal_dir || !db->db_dir || !db->idx_dir ||
        (opt->wal_archive_dir && *opt->wal_archive_dir && !db->archive_dir))
        return SDB_ENOMEM;
    return 0;
}

static void set_defaults(sdb_options *o)
{
    if (!o->wal_segment_bytes)
        o->wal_segment_bytes = 64u << 20;
    if (!o->wal_segment_timeout_ms)
        o->wal_segment_timeout_ms = 60000;
    if (!o->checkpoint_interval_ms)
        o->checkpoint_interval_ms = 30000;
    if (!o->checkpoint_wal_bytes)
        o->checkpoint_wal_bytes = 256u << 20;
    if (!o->fd_cache_size)
        o->fd_cache_size = 256;
    if (!o->io)
        o->io = sdb_io_posix();
}

static struct sdb_db *db_alloc(const sdb_options *opt)
{
    struct sdb_db *db = calloc(1, sizeof(*db));
    pthread_rwlockattr_t ra;

    if (!db)
        return NULL;
    db->opt = *opt;
    set_defaults(&db->opt);
    db->io = db->opt.io;
    db->lock_fd = -1;
    db->start_us = sdb_now_us();
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&db->ix_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&db->q_lock, NULL);
    pthread_cond_init(&db->q_cond, NULL);
    pthread_mutex_init(&db->arch_lock, NULL);
    pthread_cond_init(&db->arch_cond, NULL);
    pthread_mutex_init(&db->stats_lock, NULL);
    if (getrandom(&db->rng, sizeof(db->rng), 0) < 0)
        db->rng = (uint64_t)sdb_now_us();
    return db;
}

static void db_free(struct sdb_db *db)
{
    sdb_wal_close(db->wal);
    sdb_segstore_free(db->ss);
    sdb_textcache_free(atomic_load(&db->tcache));
    sdb_index_free(db->ix);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    pthread_rwlock_destroy(&db->ix_lock);
    pthread_mutex_destroy(&db->q_lock);
    pthread_cond_destroy(&db->q_cond);
    pthread_mutex_destroy(&db->arch_lock);
    pthread_cond_destroy(&db->arch_cond);
    pthread_mutex_destroy(&db->stats_lock);
    free(db->data_dir);
    free(db->wal_dir);
    free(db->db_dir);
    free(db->idx_dir);
    free(db->archive_dir);
    free(db);
}

static int make_layout(struct sdb_db *db, sdb_error *err)
{
    int rc = 0;

    if (db->opt.flags & SDB_OPEN_CREATE) {
        rc = make_dir(db, db->data_dir, err);
        if (rc == 0)
            rc = make_dir(db, db->wal_dir, err);
        if (rc == 0)
            rc = make_dir(db, db->db_dir, err);
        if (rc == 0)
            rc = make_dir(db, db->idx_dir, err);
        if (rc == 0 && db->archive_dir)
            rc = make_dir(db, db->archive_dir, err);
        return rc;
    }
    if (access(db->data_dir, F_OK) < 0)
        return sdb_error_set(err, -errno, "data_dir", "%s: %s", db->data_dir,
                             strerror(errno));
    return 0;
}

/* Last timestamp in the index, so new ones keep increasing. */
static void init_clock(struct sdb_db *db)
{
    struct sdb_index *ix = db->ix;

    if (ix->n_entries && ix->entries[ix->n_entries - 1].ts_us > db->last_ts)
        db->last_ts = ix->entries[ix->n_entries - 1].ts_us;
    if (ix->n_retractions &&
        ix->retractions[ix->n_retractions - 1].ts_us > db->last_ts)
        db->last_ts = ix->retractions[ix->n_retractions - 1].ts_us;
}

static int start(struct sdb_db *db, sdb_error *err)
{
    int rc;

    db->meta.restarts++;
    db->last_ckpt_ms = sdb_mono_ms();
    rc = sdb_segstore_sync(db->ss);
    if (rc == 0)
        rc = sdb_index_save(db->ix, db->io, db->idx_dir, db->meta.store_id,
                            atomic_load(&db->visible_lsn));
    if (rc == 0) {
        db->meta.last_lsn = atomic_load(&db->visible_lsn);
        db->meta.checkpoint_lsn = db->meta.last_lsn;
        db->meta.assertion_count = db->ix->n_entries;
        db->meta.retraction_count = db->ix->n_retractions;
        db->meta.concept_count = db->ix->n_concepts - 1;
        rc = sdb_meta_write(db->io, db->data_dir, &db->meta);
    }
    if (rc == 0)
        rc = sdb_wal_rotate(db->wal, db->next_lsn);
    if (rc < 0)
        return sdb_error_set(
            err, rc, "data_dir", "cannot write to %s after recovery: %s%s",
            db->data_dir, sdb_strerror(rc),
            rc == -ENOSPC ? " (disk full: free space first)" : "");
    sdb_wal_recycle(db->wal, db->meta.checkpoint_lsn);
    if (pthread_create(&db->writer, NULL, sdb_db_writer_main, db) != 0)
        return sdb_error_set(err, SDB_ENOMEM, "", "cannot start the writer");
    db->writer_running = true;
    if (pthread_create(&db->archiver, NULL, sdb_db_archiver_main, db) != 0)
        return sdb_error_set(err, SDB_ENOMEM, "", "cannot start the archiver");
    db->archiver_running = true;
    sdb_db_kick_archiver(db);
    return 0;
}

int sdb_db_open(const sdb_options *opt, sdb_db **out, sdb_error *err)
{
    struct sdb_db *db = db_alloc(opt);
    sdb_error dummy;
    int rc;

    *out = NULL;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof(*err));
    if (!db)
        return sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    rc = copy_dirs(db, opt);
    if (rc == 0 && (opt->flags & SDB_OPEN_READONLY))
        rc = sdb_error_set(err, SDB_EINVAL, "flags",
                           "read-only opens are not supported by this "
                           "function");
    if (rc == 0)
        rc = make_layout(db, err);
    if (rc == 0)
        rc = take_lock(db, err);
    if (rc == 0)
        rc = load_meta(db, err);
    if (rc == 0)
        rc = sdb_segstore_new(db->io, db->db_dir, db->meta.store_id,
                              db->opt.fd_cache_size, 64u << 20, &db->ss);
    if (rc == 0)
        rc = recover(db, err);
    if (rc == 0) {
        init_clock(db);
        rc = start(db, err);
    }
    if (rc < 0) {
        if (!err->code)
            sdb_error_set(err, rc, "", "%s", sdb_strerror(rc));
        sdb_db_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

int sdb_db_close(sdb_db *db)
{
    int rc = 0;

    if (!db)
        return 0;
    if (db->writer_running) {
        pthread_mutex_lock(&db->q_lock);
        db->stopping = true;
        pthread_cond_signal(&db->q_cond);
        pthread_mutex_unlock(&db->q_lock);
        pthread_join(db->writer, NULL);
        if (!atomic_load(&db->read_only))
            rc = sdb_db_checkpoint_now(db);
    }
    if (db->archiver_running) {
        pthread_mutex_lock(&db->arch_lock);
        db->arch_stop = true;
        pthread_cond_signal(&db->arch_cond);
        pthread_mutex_unlock(&db->arch_lock);
        pthread_join(db->archiver, NULL);
    }
    db_free(db);
    return rc;
}
