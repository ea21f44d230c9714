/*
 * snapshot.c - the persisted index, db/indexes/index.snap (index.h).
 *
 *   header, 64 bytes, little-endian
 *     0  8 magic "STMDBSNP"         32  4 concepts (incl. the retraction log)
 *     8  4 format version (1)       36  4 predicates
 *    12  4 header size (64)         40  4 sources
 *    16  8 store id                 44  4 entries
 *    24  8 LSN it is complete up to 48  4 retractions
 *                                   52  4 derived_from pairs
 *                                   56  8 reserved, zero
 *   strings: predicates then sources, each u32 length + bytes
 *   concepts by id: u32 length + path, u32 parent, u32 segno,
 *                   u64 data_len, u64 idx_len
 *   entries: 64 bytes each; retractions: 48 bytes each;
 *   derived pairs: u64 parent LSN, u32 child position
 *   trailer: XXH3-64 of everything before it
 *
 * Everything else (lists, tree links, hashes) is recomputed on load.  Any
 * inconsistency makes the load fail so the caller rebuilds from segments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "index.h"

#define SNAP_NAME   "index.snap"
#define SNAP_ENTRY  64
#define SNAP_RENTRY 48

static const unsigned char snap_magic[8] = {'S', 'T', 'M', 'D',
                                            'B', 'S', 'N', 'P'};

struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int err;
};

static unsigned char *wb_room(struct wbuf *b, size_t n)
{
    if (b->err)
        return NULL;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        unsigned char *p;
        while (cap < b->n + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p) {
            b->err = SDB_ENOMEM;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    b->n += n;
    return b->p + b->n - n;
}

static void wb_u32(struct wbuf *b, uint32_t v)
{
    unsigned char *p = wb_room(b, 4);
    if (p)
        sdb_put_u32(p, v);
}

static void wb_u64(struct wbuf *b, uint64_t v)
{
    unsigned char *p = wb_room(b, 8);
    if (p)
        sdb_put_u64(p, v);
}

static void wb_str(struct wbuf *b, const char *s)
{
    size_t n = strlen(s);
    unsigned char *p;

    wb_u32(b, (uint32_t)n);
    p = wb_room(b, n);
    if (p)
        memcpy(p, s, n);
}

static void put_entry(struct wbuf *b, const struct sdb_entry *e)
{
    uint32_t conf;

    memcpy(&conf, &e->confidence, 4);
    wb_u64(b, e->lsn);
    wb_u64(b, (uint64_t)e->ts_us);
    wb_u64(b, e->retract_lsn);
    wb_u64(b, e->hash);
    wb_u32(b, e->concept);
    wb_u32(b, e->predicate);
    wb_u32(b, e->source);
    wb_u32(b, e->salt);
    wb_u32(b, e->off);
    wb_u32(b, e->len);
    wb_u32(b, (uint32_t)e->segno | (uint32_t)e->tier << 16 |
                  (uint32_t)e->flags << 24);
    wb_u32(b, conf);
}

static void put_rentry(struct wbuf *b, const struct sdb_rentry *r)
{
    wb_u64(b, r->lsn);
    wb_u64(b, (uint64_t)r->ts_us);
    wb_u32(b, r->salt);
    wb_u32(b, r->n_retracted);
    wb_u64(b, r->hash);
    wb_u32(b, r->segno);
    wb_u32(b, r->off);
    wb_u32(b, r->len);
    wb_u32(b, 0);
}

static void put_header(struct wbuf *b, const struct sdb_index *ix,
                       uint64_t store_id, uint64_t lsn)
{
    unsigned char *h = wb_room(b, 64);

    if (!h)
        return;
    memset(h, 0, 64);
    memcpy(h, snap_magic, 8);
    sdb_put_u32(h + 8, 1);
    sdb_put_u32(h + 12, 64);
    sdb_put_u64(h + 16, store_id);
    sdb_put_u64(h + 24, lsn);
    sdb_put_u32(h + 32, ix->n_concepts);
    sdb_put_u32(h + 36, ix->predicates.n ? ix->predicates.n - 1 : 0);
    sdb_put_u32(h + 40, ix->sources.n ? ix->sources.n - 1 : 0);
    sdb_put_u32(h + 44, ix->n_entries);
    sdb_put_u32(h + 48, ix->n_retractions);
    sdb_put_u32(h + 52, ix->dpool_n);
}

static void put_derived(struct wbuf *b, const struct sdb_index *ix)
{
    for (uint32_t i = 0; i < ix->dcap; i++) {
        if (!ix->dkeys[i])
            continue;
        for (uint32_t p = ix->dhead[i]; p; p = ix->dpool[p - 1].next) {
            wb_u64(b, ix->dkeys[i]);
            wb_u32(b, ix->dpool[p - 1].child);
        }
    }
}

int sdb_index_save(const struct sdb_index *ix, const sdb_io *io,
                   const char *dir, uint64_t store_id, uint64_t lsn)
{
    struct wbuf b = {0};
    int rc;

    put_header(&b, ix, store_id, lsn);
    for (uint32_t i = 1; i < ix->predicates.n; i++)
        wb_str(&b, ix->predicates.s[i]);
    for (uint32_t i = 1; i < ix->sources.n; i++)
        wb_str(&b, ix->sources.s[i]);
    for (uint32_t i = 0; i < ix->n_concepts; i++) {
        const struct sdb_concept *c = ix->concepts[i];
        wb_str(&b, c->path);
        wb_u32(&b, c->parent);
        wb_u32(&b, c->seg.segno);
        wb_u64(&b, c->seg.data_len);
        wb_u64(&b, c->seg.idx_len);
    }
    for (uint32_t i = 0; i < ix->n_entries; i++)
        put_entry(&b, &ix->entries[i]);
    for (uint32_t i = 0; i < ix->n_retractions; i++)
        put_rentry(&b, &ix->retractions[i]);
    put_derived(&b, ix);
    wb_u64(&b, b.err ? 0 : sdb_hash64(b.p, b.n, 0));
    rc = b.err;
    if (rc == 0)
        rc = sdb_io_write_file_atomic(io, dir, SNAP_NAME, b.p, b.n);
    free(b.p);
    return rc;
}

/* ---- loading ---- */

struct rbuf {
    const unsigned char *p;
    size_t n, pos;
    bool bad;
};

static const unsigned char *rb_take(struct rbuf *r, size_t n)
{
    if (r->bad || r->n - r->pos < n) {
        r->bad = true;
        return NULL;
    }
    r->pos += n;
    return r->p + r->pos - n;
}

static uint32_t rb_u32(struct rbuf *r)
{
    const unsigned char *p = rb_take(r, 4);
    return p ? sdb_get_u32(p) : 0;
}

static uint64_t rb_u64(struct rbuf *r)
{
    const unsigned char *p = rb_take(r, 8);
    return p ? sdb_get_u64(p) : 0;
}

/* A NUL-terminated copy of the next string (at most SDB_MAX_PATH_LEN). */
static char *rb_str(struct rbuf *r, char *buf)
{
    uint32_t n = rb_u32(r);
    const unsigned char *p;

    if (n > SDB_MAX_PATH_LEN || !(p = rb_take(r, n)) || memchr(p, 0, n)) {
        r->bad = true;
        return NULL;
    }
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

static int load_strings(struct rbuf *r, struct sdb_strtab *t, uint32_t n)
{
    char buf[SDB_MAX_PATH_LEN + 1];
    uint32_t id;

    for (uint32_t i = 0; i < n; i++) {
        if (!rb_str(r, buf))
            return SDB_ECORRUPT;
        if (sdb_strtab_intern(t, buf, true, &id) < 0)
            return SDB_ENOMEM;
        if (id != i + 1)
            return SDB_ECORRUPT; /* duplicate */
    }
    return 0;
}

static int load_concepts(struct rbuf *r, struct sdb_index *ix, uint32_t n)
{
    char buf[SDB_MAX_PATH_LEN + 1];
    uint32_t id, parent, segno;
    uint64_t dlen, ilen;
    int rc;

    for (uint32_t i = 0; i < n; i++) {
        if (!rb_str(r, buf))
            return SDB_ECORRUPT;
        parent = rb_u32(r);
        segno = rb_u32(r);
        dlen = rb_u64(r);
        ilen = rb_u64(r);
        if (r->bad || (i == 0) != (buf[0] == 0) || (i > 0 && parent >= i) ||
            segno > UINT16_MAX || dlen > UINT32_MAX || ilen > UINT32_MAX)
            return SDB_ECORRUPT;
        id = 0;
        if (i > 0) {
            rc = sdb_index_concept(ix, buf, true, &id);
            if (rc < 0 || id != i || ix->concepts[id]->parent != parent)
                return rc < 0 && rc != SDB_EINVAL ? rc : SDB_ECORRUPT;
        }
        ix->concepts[id]->seg.segno = segno;
        ix->concepts[id]->seg.data_len = dlen;
        ix->concepts[id]->seg.idx_len = ilen;
    }
    return 0;
}

static int load_entry(struct rbuf *r, struct sdb_index *ix, struct sdb_entry *e)
{
    uint32_t packed, conf;

    e->lsn = rb_u64(r);
    e->ts_us = (int64_t)rb_u64(r);
    e->retract_lsn = rb_u64(r);
    e->hash = rb_u64(r);
    e->concept = rb_u32(r);
    e->predicate = rb_u32(r);
    e->source = rb_u32(r);
    e->salt = rb_u32(r);
    e->off = rb_u32(r);
    e->len = rb_u32(r);
    packed = rb_u32(r);
    conf = rb_u32(r);
    e->segno = (uint16_t)packed;
    e->tier = (uint8_t)(packed >> 16);
    e->flags = (uint8_t)(packed >> 24);
    memcpy(&e->confidence, &conf, 4);
    if (r->bad || !e->concept || e->concept >= ix->n_concepts ||
        !e->predicate || e->predicate >= ix->predicates.n ||
        e->source >= (ix->sources.n ? ix->sources.n : 1) ||
        e->tier >= SDB_TIER_COUNT || !(e->confidence >= 0.0f) ||
        e->confidence > 1.0f)
        return SDB_ECORRUPT;
    if (ix->n_entries && ix->entries[ix->n_entries - 1].lsn >= e->lsn)
        return SDB_ECORRUPT;
    return 0;
}

static int load_records(struct rbuf *r, struct sdb_index *ix, uint32_t ne,
                        uint32_t nr, uint32_t nd)
{
    struct sdb_entry e;
    int rc;

    for (uint32_t i = 0; i < ne; i++) {
        rc = load_entry(r, ix, &e);
        if (rc < 0)
            return rc;
        rc = sdb_index_push_raw(ix, &e);
        if (rc < 0)
            return rc;
        if (e.retract_lsn)
            ix->retracted_count++;
    }
    for (uint32_t i = 0; i < nr; i++) {
        struct sdb_retraction rr = {0};
        struct sdb_loc loc;
        rr.id.lsn = rb_u64(r);
        rr.ts_us = (int64_t)rb_u64(r);
        rr.id.salt = rb_u32(r);
        rr.n_retracted = rb_u32(r);
        loc.hash = rb_u64(r);
        loc.segno = rb_u32(r);
        loc.off = rb_u32(r);
        loc.len = rb_u32(r);
        (void)rb_u32(r);
        if (r->bad)
            return SDB_ECORRUPT;
        rc = sdb_index_add_retraction(ix, &rr, &loc);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t parent = rb_u64(r);
        uint32_t child = rb_u32(r);
        if (r->bad || child >= ix->n_entries)
            return SDB_ECORRUPT;
        rc = sdb_index_link_derived(ix, parent, child);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int sdb_index_load(const sdb_io *io, const char *dir, uint64_t store_id,
                   struct sdb_index **out, uint64_t *out_lsn, sdb_error *err)
{
    struct sdb_index *ix = NULL;
    struct rbuf r = {0};
    char *path = NULL, *buf = NULL;
    const unsigned char *h;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (asprintf(&path, "%s/%s", dir, SNAP_NAME) < 0)
        return SDB_ENOMEM;
    rc = sdb_io_read_file(io, path, (size_t)1 << 34, &buf, &len);
    if (rc < 0)
        goto fail;
    r.p = (unsigned char *)buf;
    r.n = len >= 8 ? len - 8 : 0;
    rc = SDB_ECORRUPT;
    if (len < 72 || sdb_hash64(buf, len - 8, 0) != sdb_get_u64(r.p + len - 8))
        goto fail;
    h = rb_take(&r, 64);
    if (memcmp(h, snap_magic, 8) != 0 || sdb_get_u32(h + 8) != 1 ||
        sdb_get_u64(h + 16) != store_id) {
        rc = sdb_get_u32(h + 8) != 1 ? SDB_EVERSION : SDB_ECORRUPT;
        goto fail;
    }
    rc = sdb_index_new(&ix);
    if (rc == 0)
        rc = load_strings(&r, &ix->predicates, sdb_get_u32(h + 36));
    if (rc == 0)
        rc = load_strings(&r, &ix->sources, sdb_get_u32(h + 40));
    if (rc == 0)
        rc = load_concepts(&r, ix, sdb_get_u32(h + 32));
    if (rc == 0)
        rc = load_records(&r, ix, sdb_get_u32(h + 44), sdb_get_u32(h + 48),
                          sdb_get_u32(h + 52));
    if (rc == 0 && r.pos != r.n)
        rc = SDB_ECORRUPT;
    if (rc == 0)
        rc = sdb_index_relink(ix);
    if (rc < 0)
        goto fail;
    *out_lsn = sdb_get_u64(h + 24);
    *out = ix;
    ix = NULL;
fail:
    if (rc < 0 && rc != -ENOENT)
        sdb_error_set(err, rc, "index", "%s: %s", path ? path : dir,
                      rc == SDB_ECORRUPT ? "checksum or structure mismatch"
                                         : sdb_strerror(rc));
    sdb_index_free(ix);
    free(buf);
    free(path);
    return rc;
}
