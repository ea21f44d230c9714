/*
 * query.c - reads: queries with lenses, as_of, include_retracted and
 * stable cursors; one assertion by id; concept browsing.  Only LSNs up to
 * the visible (durable) one are ever shown, and every record is read back
 * through its checksum.  Holds db->ix_lock shared for the whole read.
 *
 * Cursor (opaque to clients): "c1.<lens>.<bound LSN>.<k1>.<k2>.<k3>" in
 * hex, where bound fixes the snapshot the pages come from and k1..k3 the
 * sort key of the last item returned (consensus: k1 = groups already
 * returned).  A cursor from another lens or with a bound beyond the
 * visible LSN is rejected.
 *
 * Ranked lenses keep only the best limit + 1 hits in a bounded heap (the
 * recency lens walks each concept newest first and stops early); only the
 * records returned are read, one pread per run of nearby records, and each
 * is checked against its own checksum.  sdb_query_text writes the result
 * as JSON text directly (jsonw.h), byte for byte what json_dumps of
 * sdb_query's tree would give.
 */
#define _GNU_SOURCE
#include "db_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "hash.h"
#include "jsonw.h"
#include "textcache.h"

struct qctx {
    struct sdb_db *db;
    struct sdb_index *ix;
    const struct sdb_query_req *q;
    uint64_t bound;
    uint32_t pred;
    bool has_after; /* a cursor: only items ranked after "after" */
    uint64_t after[3];
    struct u32vec hits; /* the consensus lens: every visible hit */
};

/* Decode the verified record of entry pos. */
static int decode_entry(const struct sdb_entry *e, const unsigned char *rec,
                        struct sdb_assertion *out)
{
    struct sdb_record r;
    size_t used;
    int rc =
        sdb_codec_unpack_ex(rec, e->len, &used, &r, NULL, SDB_UNPACK_TRUSTED);

    if (rc < 0)
        return rc;
    if (r.type != SDB_REC_ASSERTION || r.a.id.lsn != e->lsn) {
        sdb_record_release(&r);
        return SDB_ECORRUPT;
    }
    *out = r.a;
    memset(&r.a, 0, sizeof(r.a));
    sdb_record_release(&r);
    return 0;
}

int sdb_db_read_entry(struct sdb_db *db, uint32_t pos,
                      struct sdb_assertion *out)
{
    const struct sdb_entry *e = &db->ix->entries[pos];
    struct sdb_loc loc = {e->segno, e->off, e->len, e->hash};
    unsigned char *buf = malloc(e->len ? e->len : 1);
    int rc;

    if (!buf)
        return SDB_ENOMEM;
    rc = sdb_segstore_read(db->ss, &db->ix->concepts[e->concept]->seg, &loc,
                           buf);
    if (rc == 0)
        rc = decode_entry(e, buf, out);
    free(buf);
    return rc;
}

static bool visible(const struct qctx *qc, const struct sdb_entry *e)
{
    if (e->lsn > qc->bound)
        return false;
    if (qc->pred && e->predicate != qc->pred)
        return false;
    if (!qc->q->include_retracted && e->retract_lsn &&
        e->retract_lsn <= qc->bound)
        return false;
    return true;
}

static int collect_concept(struct qctx *qc, uint32_t cid, bool subtree)
{
    const struct sdb_concept *c = qc->ix->concepts[cid];
    int rc = 0;

    for (uint32_t i = 0; rc == 0 && i < c->entries.n; i++)
        if (visible(qc, &qc->ix->entries[c->entries.v[i]]))
            rc = sdb_u32vec_push(&qc->hits, c->entries.v[i]);
    for (uint32_t ch = c->first_child; subtree && rc == 0 && ch;
         ch = qc->ix->concepts[ch]->next_sibling)
        rc = collect_concept(qc, ch, true);
    return rc;
}

static int collect(struct qctx *qc)
{
    uint32_t cid = 0;
    int rc = 0;

    if (qc->q->scope == SDB_SCOPE_ALL) {
        for (uint32_t i = 0; rc == 0 && i < qc->ix->n_entries; i++)
            if (visible(qc, &qc->ix->entries[i]))
                rc = sdb_u32vec_push(&qc->hits, i);
        return rc;
    }
    rc = sdb_index_concept(qc->ix, qc->q->concept_path, false, &cid);
    if (rc < 0 || cid == 0)
        return rc;
    return collect_concept(qc, cid, qc->q->scope == SDB_SCOPE_SUBTREE);
}

/* Sort keys: larger first for every component. */
static void sort_key(const struct sdb_entry *e, int lens, uint64_t k[3])
{
    uint32_t conf;

    memcpy(&conf, &e->confidence, 4); /* non-negative floats order as ints */
    k[0] = lens == SDB_LENS_AUTHORITY ? e->tier : 0;
    k[1] = lens == SDB_LENS_RECENCY ? 0 : conf;
    k[2] = e->lsn;
}

static int key_cmp(const uint64_t a[3], const uint64_t b[3])
{
    for (int i = 0; i < 3; i++)
        if (a[i] != b[i])
            return a[i] > b[i] ? -1 : 1; /* descending */
    return 0;
}

static __thread const struct sdb_entry *sort_entries;
static __thread int sort_lens;

static int cmp_hits(const void *a, const void *b)
{
    uint64_t ka[3], kb[3];

    sort_key(&sort_entries[*(const uint32_t *)a], sort_lens, ka);
    sort_key(&sort_entries[*(const uint32_t *)b], sort_lens, kb);
    return key_cmp(ka, kb);
}

static int cursor_parse(const char *s, int lens, uint64_t *bound, uint64_t k[3])
{
    unsigned l;
    int n = 0;

    if (strlen(s) > 200 ||
        sscanf(s, "c1.%x.%" SCNx64 ".%" SCNx64 ".%" SCNx64 ".%" SCNx64 "%n", &l,
               bound, &k[0], &k[1], &k[2], &n) != 5 ||
        s[n] != 0 || (int)l != lens || *bound == 0)
        return SDB_EINVAL;
    return 0;
}

static json_t *cursor_make(int lens, uint64_t bound, const uint64_t k[3])
{
    char buf[128];

    snprintf(buf, sizeof(buf),
             "c1.%x.%" PRIx64 ".%" PRIx64 ".%" PRIx64 ".%" PRIx64,
             (unsigned)lens, bound, k[0], k[1], k[2]);
    return json_string(buf);
}

/* The JSON of entry pos, with its retraction state. */
static int entry_json(struct qctx *qc, uint32_t pos, json_t **out)
{
    const struct sdb_entry *e = &qc->ix->entries[pos];
    struct sdb_assertion a;
    int rc = sdb_db_read_entry(qc->db, pos, &a);
    bool retracted = e->retract_lsn && e->retract_lsn <= qc->bound;

    if (rc < 0)
        return rc;
    *out = sdb_assertion_to_json(&a);
    sdb_assertion_release(&a);
    if (!*out)
        return SDB_ENOMEM;
    json_object_set_new(*out, "retracted", json_boolean(retracted));
    return 0;
}

/*
 * ---- ranked pages: select the best limit + 1 without sorting every hit ----
 * A bounded heap whose root is the worst item kept.  The recency lens walks
 * each concept's entries newest first and stops as soon as the heap is full
 * and the next entry is older than its worst item.
 */

struct topk {
    const struct sdb_entry *es;
    int lens;
    uint32_t *v;
    uint32_t n, cap;
};

/* < 0 when entry a ranks before entry b on the page. */
static int rank_cmp(const struct topk *tk, uint32_t a, uint32_t b)
{
    uint64_t ka[3], kb[3];

    sort_key(&tk->es[a], tk->lens, ka);
    sort_key(&tk->es[b], tk->lens, kb);
    return key_cmp(ka, kb);
}

static void topk_swap(struct topk *tk, uint32_t i, uint32_t j)
{
    uint32_t t = tk->v[i];

    tk->v[i] = tk->v[j];
    tk->v[j] = t;
}

static void topk_push(struct topk *tk, uint32_t pos)
{
    uint32_t i;

    if (tk->n < tk->cap) {
        i = tk->n++;
        tk->v[i] = pos;
        while (i > 0 && rank_cmp(tk, tk->v[(i - 1) / 2], tk->v[i]) < 0) {
            topk_swap(tk, i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
        return;
    }
    if (rank_cmp(tk, pos, tk->v[0]) >= 0)
        return; /* no better than the worst kept */
    tk->v[0] = pos;
    for (i = 0;;) {
        uint32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < tk->n && rank_cmp(tk, tk->v[l], tk->v[w]) > 0)
            w = l;
        if (r < tk->n && rank_cmp(tk, tk->v[r], tk->v[w]) > 0)
            w = r;
        if (w == i)
            break;
        topk_swap(tk, i, w);
        i = w;
    }
}

/* Visible, and past the cursor when there is one. */
static bool wanted(const struct qctx *qc, uint32_t pos)
{
    uint64_t k[3];

    if (!visible(qc, &qc->ix->entries[pos]))
        return false;
    if (!qc->has_after)
        return true;
    sort_key(&qc->ix->entries[pos], qc->q->lens, k);
    return key_cmp(k, qc->after) > 0;
}

static uint32_t pos_at(const uint32_t *v, uint32_t i)
{
    return v ? v[i] : i;
}

/*
 * Offer n entry positions (v[i], or i itself when v is NULL), in LSN
 * order, to the page.
 */
static void offer(struct qctx *qc, struct topk *tk, const uint32_t *v,
                  uint32_t n)
{
    const struct sdb_entry *es = qc->ix->entries;
    uint32_t end = n;

    if (qc->q->lens != SDB_LENS_RECENCY) {
        for (uint32_t i = 0; i < n; i++)
            if (wanted(qc, pos_at(v, i)))
                topk_push(tk, pos_at(v, i));
        return;
    }
    if (qc->has_after && !qc->after[0] && !qc->after[1]) {
        /* only LSNs below the cursor's: binary search the cut */
        uint32_t lo = 0, hi = n;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (es[pos_at(v, mid)].lsn < qc->after[2])
                lo = mid + 1;
            else
                hi = mid;
        }
        end = lo;
    }
    /* the newest entries are scattered over the entry array: load the
     * ones the page may still take all at once (none once it is full:
     * then usually only the newest is looked at) */
    for (uint32_t i = end; i-- > 0 && end - i <= tk->cap - tk->n + 1;)
        __builtin_prefetch(&es[pos_at(v, i)]);
    for (uint32_t i = end; i-- > 0;) {
        uint32_t pos = pos_at(v, i);
        if (tk->n == tk->cap && es[pos].lsn < es[tk->v[0]].lsn)
            break; /* everything left is older still */
        if (wanted(qc, pos))
            topk_push(tk, pos);
    }
}

static void offer_concept(struct qctx *qc, struct topk *tk, uint32_t cid,
                          bool subtree);

/*
 * The children of a concept, in batches: first gather a batch while
 * prefetching each child's newest entry position, then prefetch those
 * entries, then offer them, so the cache misses of a batch overlap.
 */
static void offer_children(struct qctx *qc, struct topk *tk, uint32_t first)
{
    struct sdb_concept *const *cs = qc->ix->concepts;
    uint32_t ids[32], ch = first;

    while (ch) {
        unsigned k = 0;
        for (; ch && k < 32; ch = cs[ch]->next_sibling) {
            const struct u32vec *v = &cs[ch]->entries;
            ids[k++] = ch;
            if (v->n)
                __builtin_prefetch(&v->v[v->n - 1]);
        }
        for (unsigned i = 0; i < k; i++) {
            const struct u32vec *v = &cs[ids[i]]->entries;
            if (v->n)
                __builtin_prefetch(&qc->ix->entries[v->v[v->n - 1]]);
        }
        for (unsigned i = 0; i < k; i++)
            offer_concept(qc, tk, ids[i], true);
    }
}

static void offer_concept(struct qctx *qc, struct topk *tk, uint32_t cid,
                          bool subtree)
{
    const struct sdb_concept *c = qc->ix->concepts[cid];

    offer(qc, tk, c->entries.v, c->entries.n);
    if (subtree)
        offer_children(qc, tk, c->first_child);
}

/* The best limit + 1 wanted entries into tk, in page order. */
static int select_page(struct qctx *qc, struct topk *tk)
{
    uint32_t cid = 0;
    int rc = 0;

    tk->es = qc->ix->entries;
    tk->lens = qc->q->lens;
    tk->cap = (uint32_t)qc->q->limit + 1;
    tk->v = malloc(tk->cap * sizeof(*tk->v));
    if (!tk->v)
        return SDB_ENOMEM;
    if (qc->q->scope == SDB_SCOPE_ALL) {
        offer(qc, tk, NULL, qc->ix->n_entries);
    } else {
        rc = sdb_index_concept(qc->ix, qc->q->concept_path, false, &cid);
        if (rc == 0 && cid)
            offer_concept(qc, tk, cid, qc->q->scope == SDB_SCOPE_SUBTREE);
    }
    sort_entries = tk->es;
    sort_lens = tk->lens;
    qsort(tk->v, tk->n, sizeof(*tk->v), cmp_hits);
    return rc;
}

/*
 * ---- reading a page's records ----
 * The records of a page are grouped by file and read with one pread per
 * run of nearby records (a concept's newest records sit side by side at
 * the end of its segment); each returned record is then checked against
 * its own checksum.  Bytes between them are read but never used.
 */

#define SPAN_GAP 1024       /* bridge gaps up to this many bytes */
#define SPAN_MAX (1u << 20) /* read at most this much at once */

static __thread const uint32_t *ord_pos;

static int cmp_file_off(const void *a, const void *b)
{
    const struct sdb_entry *x = &sort_entries[ord_pos[*(const uint32_t *)a]],
                           *y = &sort_entries[ord_pos[*(const uint32_t *)b]];

    if (x->concept != y->concept)
    return x->concept < y->concept ? -1 : 1;
    if (x->segno != y->segno)
        return x->segno < y->segno ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The end (exclusive) of the span of ord[] starting at i, its byte range. */
static uint32_t span_of(const struct sdb_entry *es, const uint32_t *pos,
                        const uint32_t *ord, uint32_t n, uint32_t i,
                        uint64_t *start, uint64_t *len)
{
    const struct sdb_entry *f = &es[pos[ord[i]]];
    uint64_t end = (uint64_t)f->off + f->len;
    uint32_t j = i + 1;

    *start = f->off;
    for (; j < n; j++) {
        const struct sdb_entry *e = &es[pos[ord[j]]];
        uint64_t e_end = (uint64_t)e->off + e->len;
        if (e->concept != f->concept || e->segno != f->segno ||
            e->off > end + SPAN_GAP || e_end - *start > SPAN_MAX)
            break;
        if (e_end > end)
            end = e_end;
    }
    *len = end - *start;
    return j;
}

struct pagerecs {
    unsigned char *mem;
    const unsigned char **rec; /* rec[i]: the verified bytes of pos[i] */
};

static int read_spans(struct qctx *qc, const uint32_t *pos, const uint32_t *ord,
                      uint32_t n, struct pagerecs *pr)
{
    const struct sdb_entry *es = qc->ix->entries;
    uint64_t start, len, total = 0;
    size_t moff = 0;
    int rc = 0;

    for (uint32_t i = 0, j; i < n; i = j) {
        j = span_of(es, pos, ord, n, i, &start, &len);
        total += len;
    }
    pr->mem = malloc(total ? total : 1);
    if (!pr->mem)
        return SDB_ENOMEM;
    for (uint32_t i = 0, j; rc == 0 && i < n; i = j) {
        const struct sdb_entry *f = &es[pos[ord[i]]];
        const struct sdb_seginfo *si = &qc->ix->concepts[f->concept]->seg;

        j = span_of(es, pos, ord, n, i, &start, &len);
        rc = sdb_segstore_read_span(qc->db->ss, si, f->segno, start,
                                    (size_t)len, pr->mem + moff);
        for (uint32_t k = i; rc == 0 && k < j; k++) {
            const struct sdb_entry *e = &es[pos[ord[k]]];
            struct sdb_loc loc = {e->segno, e->off, e->len, e->hash};
            pr->rec[ord[k]] = pr->mem + moff + (e->off - start);
            rc = sdb_segstore_verify(qc->db->ss, si, &loc, pr->rec[ord[k]]);
        }
        moff += (size_t)len;
    }
    return rc;
}

/* Read and verify the records of pos[0..n); pr->mem/rec freed by caller. */
static int read_page(struct qctx *qc, const uint32_t *pos, uint32_t n,
                     struct pagerecs *pr)
{
    uint32_t *ord = malloc((n ? n : 1) * sizeof(*ord));
    int rc;

    pr->mem = NULL;
    pr->rec = calloc(n ? n : 1, sizeof(*pr->rec));
    if (!ord || !pr->rec) {
        free(ord);
        return SDB_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++)
        ord[i] = i;
    sort_entries = qc->ix->entries;
    ord_pos = pos;
    qsort(ord, n, sizeof(*ord), cmp_file_off);
    rc = read_spans(qc, pos, ord, n, pr);
    free(ord);
    return rc;
}

/*
 * One assertion as text, exactly as sdb_assertion_to_json, without the
 * closing brace ("retracted" follows it).
 */
static void assertion_text(struct sdb_jsonw *w, const struct sdb_assertion *a)
{
    char id[SDB_ID_LEN + 1];
    const char *tier = sdb_tier_name(a->tier);

    sdb_id_format(a->id, id);
    sdb_jsonw_raw(w, "{\"id\":\"", 7);
    sdb_jsonw_raw(w, id, SDB_ID_LEN);
    sdb_jsonw_raw(w, "\",\"concept_path\":", 17);
    sdb_jsonw_str(w, a->concept_path, strlen(a->concept_path));
    sdb_jsonw_raw(w, ",\"predicate\":", 13);
    sdb_jsonw_str(w, a->predicate, strlen(a->predicate));
    sdb_jsonw_raw(w, ",\"value\":", 9);
    sdb_jsonw_value(w, a->value);
    sdb_jsonw_raw(w, ",\"confidence\":", 14);
    sdb_jsonw_real(w, a->confidence);
    sdb_jsonw_raw(w, ",\"authority_tier\":", 18);
    sdb_jsonw_str(w, tier ? tier : "", tier ? strlen(tier) : 0);
    sdb_jsonw_raw(w, ",\"source\":", 10);
    if (a->source)
        sdb_jsonw_str(w, a->source, strlen(a->source));
    else
        sdb_jsonw_raw(w, "null", 4);
    sdb_jsonw_raw(w, ",\"derived_from\":[", 17);
    for (size_t i = 0; i < a->n_derived; i++) {
        sdb_id_format(a->derived_from[i], id);
        sdb_jsonw_raw(w, i ? ",\"" : "\"", i ? 2 : 1);
        sdb_jsonw_raw(w, id, SDB_ID_LEN);
        sdb_jsonw_raw(w, "\"", 1);
    }
    sdb_jsonw_raw(w, "],\"timestamp\":", 14);
    sdb_jsonw_time(w, a->ts_us);
    sdb_jsonw_raw(w, ",\"lsn\":", 7);
    sdb_jsonw_int(w, (int64_t)a->id.lsn);
}

/* The part of an item that depends on the snapshot, not on the record. */
static void retracted_text(struct sdb_jsonw *w, bool retracted)
{
    if (retracted)
        sdb_jsonw_raw(w, ",\"retracted\":true}", 18);
    else
        sdb_jsonw_raw(w, ",\"retracted\":false}", 19);
}

/*
 * Item e as text: from the text cache when this very record (same LSN,
 * length and just-verified checksum) was rendered before, else decoded,
 * rendered and remembered.
 */
/* The db's cache of rendered records, created on first use; NULL (no
 * caching) if it cannot be allocated. */
static struct sdb_textcache *text_cache(struct sdb_db *db)
{
    struct sdb_textcache *tc = atomic_load(&db->tcache), *expect = NULL;

    if (tc || sdb_textcache_new(SDB_TEXT_CACHE_BYTES, &tc) < 0)
        return tc;
    if (!atomic_compare_exchange_strong(&db->tcache, &expect, tc)) {
        sdb_textcache_free(tc); /* another reader won the race */
        tc = expect;
    }
    return tc;
}

static int item_text(struct qctx *qc, struct sdb_textcache *tc,
                     const struct sdb_entry *e, const unsigned char *rec,
                     struct sdb_jsonw *w)
{
    struct sdb_textcache_key key = {e->lsn, e->hash, e->len};
    bool retracted = e->retract_lsn && e->retract_lsn <= qc->bound;
    struct sdb_assertion a;
    size_t start = w->n;
    int rc;

    if (tc && sdb_textcache_get(tc, &key, w)) {
        retracted_text(w, retracted);
        return 0;
    }
    rc = decode_entry(e, rec, &a);
    if (rc < 0)
        return rc;
    assertion_text(w, &a);
    sdb_assertion_release(&a);
    if (tc && !w->oom)
        sdb_textcache_put(tc, &key, w->p + start, w->n - start);
    retracted_text(w, retracted);
    return 0;
}

/* Append the page's items: to list (JSON) or, when w is set, as text. */
static int emit_page(struct qctx *qc, const uint32_t *pos, uint32_t n,
                     json_t *list, struct sdb_jsonw *w)
{
    struct sdb_textcache *tc = w ? text_cache(qc->db) : NULL;
    struct pagerecs pr;
    int rc;

    for (uint32_t i = 0; tc && i < n; i++) { /* overlap the cache misses */
        const struct sdb_entry *e = &qc->ix->entries[pos[i]];
        struct sdb_textcache_key key = {e->lsn, e->hash, e->len};
        sdb_textcache_prefetch(tc, &key);
    }
    rc = read_page(qc, pos, n, &pr);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const struct sdb_entry *e = &qc->ix->entries[pos[i]];
        bool retracted = e->retract_lsn && e->retract_lsn <= qc->bound;
        struct sdb_assertion a;
        json_t *item;

        if (w) {
            if (i)
                sdb_jsonw_raw(w, ",", 1);
            rc = item_text(qc, tc, e, pr.rec[i], w);
            continue;
        }
        rc = decode_entry(e, pr.rec[i], &a);
        if (rc < 0)
            break;
        item = sdb_assertion_to_json(&a);
        if (item) {
            json_object_set_new(item, "retracted", json_boolean(retracted));
            json_array_append_new(list, item);
        } else {
            rc = SDB_ENOMEM;
        }
        sdb_assertion_release(&a);
    }
    free(pr.mem);
    free(pr.rec);
    return rc;
}

static int ranked_page(struct qctx *qc, json_t *list, struct sdb_jsonw *w,
                       json_t **next, uint32_t *count)
{
    struct topk tk = {0};
    int rc = select_page(qc, &tk);
    /* limit + 1 were selected: one more than the page means a next page */
    bool more = tk.n > (uint32_t)qc->q->limit;
    uint32_t n = more ? (uint32_t)qc->q->limit : tk.n;

    if (rc == 0)
        rc = emit_page(qc, tk.v, n, list, w);
    *count = n;
    if (rc == 0 && more) {
        uint64_t k[3];
        sort_key(&qc->ix->entries[tk.v[n - 1]], qc->q->lens, k);
        *next = cursor_make(qc->q->lens, qc->bound, k);
        if (!*next)
            rc = SDB_ENOMEM;
    }
    free(tk.v);
    return rc;
}

static int cmp_group(const void *a, const void *b)
{
    const struct sdb_entry *x = &sort_entries[*(const uint32_t *)a],
                           *y = &sort_entries[*(const uint32_t *)b];

    if (x->concept != y->concept)
    return x->concept < y->concept ? -1 : 1;
    if (x->predicate != y->predicate)
        return x->predicate < y->predicate ? -1 : 1;
    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

struct vgroup {
    uint64_t vhash;
    json_t *value;
    double support;
    uint32_t count;
};

/* Resolve one (concept, predicate) group of hits [b, e) by consensus. */
static int consensus_one(struct qctx *qc, uint32_t b, uint32_t e, json_t **out)
{
    struct vgroup *g = calloc(e - b, sizeof(*g));
    uint32_t ng = 0, best = 0;
    struct sdb_assertion a = {0};
    json_t *dissent = json_array();
    int rc = g && dissent ? 0 : SDB_ENOMEM;

    for (uint32_t i = b; rc == 0 && i < e; i++) {
        const struct sdb_entry *en = &qc->ix->entries[qc->hits.v[i]];
        char *txt;
        uint64_t vh;
        uint32_t j;

        rc = sdb_db_read_entry(qc->db, qc->hits.v[i], &a);
        if (rc < 0)
            break;
        txt = json_dumps(a.value,
                         JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        vh = txt ? sdb_hash64(txt, strlen(txt), 0) : 0;
        free(txt);
        for (j = 0; j < ng && g[j].vhash != vh; j++)
            ;
        if (j == ng) {
            g[ng].vhash = vh;
            g[ng++].value = json_incref(a.value);
        }
        g[j].support += (double)en->confidence * sdb_tier_weight(en->tier);
        g[j].count++;
        sdb_assertion_release(&a);
    }
    for (uint32_t j = 1; rc == 0 && j < ng; j++)
        if (g[j].support > g[best].support)
            best = j;
    for (uint32_t j = 0; rc == 0 && j < ng; j++)
        if (j != best)
            json_array_append_new(dissent,
                                  json_pack("{s:O, s:f, s:i}", "value",
                                            g[j].value, "support", g[j].support,
                                            "count", (int)g[j].count));
    if (rc == 0) {
        const struct sdb_entry *en = &qc->ix->entries[qc->hits.v[b]];
        *out = json_pack("{s:s, s:s, s:O, s:f, s:i, s:i, s:O}", "concept_path",
                         qc->ix->concepts[en->concept]->path, "predicate",
                         qc->ix->predicates.s[en->predicate], "value",
                         g[best].value, "support", g[best].support, "count",
                         (int)g[best].count, "total", (int)(e - b),
                         "dissenting", dissent);
    }
    for (uint32_t j = 0; g && j < ng; j++)
        json_decref(g[j].value);
    free(g);
    json_decref(dissent);
    return rc;
}

static int consensus_page(struct qctx *qc, uint64_t skip, json_t *list,
                          json_t **next)
{
    uint64_t group = 0, emitted = 0;
    uint32_t b = 0;
    int rc = 0;

    sort_entries = qc->ix->entries;
    if (qc->hits.n) /* hits.v is NULL when nothing matched */
        qsort(qc->hits.v, qc->hits.n, sizeof(uint32_t), cmp_group);
    while (rc == 0 && b < qc->hits.n) {
        uint32_t e = b + 1;
        const struct sdb_entry *x = &qc->ix->entries[qc->hits.v[b]];

        while (e < qc->hits.n &&
               qc->ix->entries[qc->hits.v[e]].concept == x->concept &&
               qc->ix->entries[qc->hits.v[e]].predicate == x->predicate)
            e++;
        if (group >= skip) {
            json_t *item = NULL;
            if (emitted == (uint64_t)qc->q->limit) {
                uint64_t k[3] = {group, 0, 0};
                *next = cursor_make(SDB_LENS_CONSENSUS, qc->bound, k);
                break;
            }
            rc = consensus_one(qc, b, e, &item);
            if (rc == 0)
                json_array_append_new(list, item);
            emitted++;
        }
        group++;
        b = e;
    }
    return rc;
}

/* The cursor, as_of and predicate of the request into qc. */
static int query_bounds(struct qctx *qc, sdb_error *err)
{
    const struct sdb_query_req *q = qc->q;
    uint64_t visible_lsn = atomic_load(&qc->db->visible_lsn);

    qc->bound = visible_lsn;
    qc->has_after = q->cursor != NULL;
    if (q->cursor &&
        (cursor_parse(q->cursor, q->lens, &qc->bound, qc->after) < 0 ||
         qc->bound > visible_lsn))
        return sdb_error_set(err, SDB_EINVAL, "cursor",
                             "not a cursor returned by this query");
    if (q->has_as_of && !q->cursor) {
        uint64_t at = sdb_index_lsn_at(qc->ix, q->as_of_us);
        qc->bound = at < visible_lsn ? at : visible_lsn;
    }
    if (q->predicate)
        return sdb_strtab_intern(&qc->ix->predicates, q->predicate, false,
                                 &qc->pred);
    return 0;
}

/*
 * The page of qc->q as a JSON object into *out or, when w is set, as the
 * same text json_dumps(JSON_COMPACT) would give plus a newline, into w.
 */
static int run_query(struct qctx *qc, json_t **out, struct sdb_jsonw *w,
                     sdb_error *err)
{
    const struct sdb_query_req *q = qc->q;
    bool text = w && q->lens != SDB_LENS_CONSENSUS, any;
    json_t *list = text ? NULL : json_array(), *next = NULL;
    uint32_t count = 0;
    int rc = text || list ? query_bounds(qc, err) : SDB_ENOMEM;

    /* an unknown predicate or an empty snapshot matches nothing */
    any = (!q->predicate || qc->pred) && qc->bound;
    if (rc == 0 && text)
        sdb_jsonw_raw(w, "{\"assertions\":[", 15);
    if (rc == 0 && q->lens == SDB_LENS_CONSENSUS) {
        if (any)
            rc = collect(qc);
        if (rc == 0)
            rc = consensus_page(qc, q->cursor ? qc->after[0] : 0, list, &next);
    } else if (rc == 0 && any) {
        rc = ranked_page(qc, list, text ? w : NULL, &next, &count);
    }
    if (rc == 0 && text) {
        sdb_jsonw_raw(w, "],\"count\":", 10);
        sdb_jsonw_int(w, count);
        sdb_jsonw_raw(w, ",\"next_cursor\":", 15);
        sdb_jsonw_value(w, next);
        sdb_jsonw_raw(w, "}\n", 2);
        json_decref(next);
    } else if (rc == 0) {
        *out = json_pack("{s:o, s:I, s:o}", "assertions", list, "count",
                         (json_int_t)json_array_size(list), "next_cursor",
                         next ? next : json_null());
        if (!*out)
            rc = SDB_ENOMEM;
        if (w && *out) { /* consensus as text: dump the tree */
            sdb_jsonw_value(w, *out);
            sdb_jsonw_raw(w, "\n", 1);
            json_decref(*out);
            *out = NULL;
        }
    } else {
        json_decref(list);
        json_decref(next);
    }
    if (rc < 0 && !err->code)
        sdb_error_set(err, rc, "", "query failed: %s", sdb_strerror(rc));
    return rc;
}

/* Parse req and run it under the index's read lock: the page into *out,
 * or as text into w when w is set (sized from the limit first). */
static int query_run(sdb_db *db, json_t *req, json_t **out, struct sdb_jsonw *w,
                     sdb_error *err)
{
    struct sdb_query_req q;
    struct qctx qc = {.db = db, .q = &q};
    int rc;

    memset(err, 0, sizeof(*err));
    rc = sdb_query_request_parse(req, &q, err);
    if (rc < 0)
        return rc;
    /* about 300 bytes an item: one allocation for most pages */
    if (w)
        sdb_jsonw_reserve(w, q.limit < 200 ? (size_t)q.limit * 320 + 256
                                           : (size_t)64 << 10);
    pthread_rwlock_rdlock(&db->ix_lock);
    qc.ix = db->ix;
    rc = run_query(&qc, out, w, err);
    pthread_rwlock_unlock(&db->ix_lock);
    free(qc.hits.v);
    sdb_query_req_release(&q);
    return rc;
}

int sdb_query(sdb_db *db, json_t *req, json_t **out, sdb_error *err)
{
    sdb_error dummy = {0};

    *out = NULL;
    return query_run(db, req, out, NULL, err ? err : &dummy);
}

int sdb_query_text(sdb_db *db, json_t *req, char **out, size_t *out_len,
                   sdb_error *err)
{
    struct sdb_jsonw w = {0};
    sdb_error dummy = {0};
    json_t *unused = NULL;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (!err)
        err = &dummy;
    rc = query_run(db, req, &unused, &w, err);
    if (rc == 0)
        rc = sdb_jsonw_finish(&w, out, out_len);
    else
        sdb_jsonw_release(&w);
    if (rc < 0 && !err->code)
        sdb_error_set(err, rc, "", "query failed: %s", sdb_strerror(rc));
    return rc;
}

int sdb_get(sdb_db *db, const char *id, json_t **out, sdb_error *err)
{
    struct sdb_query_req q = {.include_retracted = true};
    struct qctx qc = {.db = db, .q = &q};
    struct sdb_id sid;
    int64_t pos = -1;
    int rc;

    *out = NULL;
    if (sdb_id_parse(id, &sid) < 0)
        return sdb_error_set(err, SDB_EINVAL, "id",
                             "an id is 24 lowercase hex digits");
    pthread_rwlock_rdlock(&db->ix_lock);
    qc.ix = db->ix;
    qc.bound = atomic_load(&db->visible_lsn);
    if (sid.lsn <= qc.bound)
        pos = sdb_index_find_id(db->ix, sid);
    if (pos < 0) {
        rc = sdb_error_set(err, SDB_ENOTFOUND, "id",
                           "no assertion with this id");
    } else {
        const struct sdb_entry *e = &db->ix->entries[pos];
        rc = entry_json(&qc, (uint32_t)pos, out);
        if (rc == 0 && e->retract_lsn && e->retract_lsn <= qc.bound) {
            int64_t rp = sdb_index_find_retraction(db->ix, e->retract_lsn);
            if (rp >= 0) {
                char rid[SDB_ID_LEN + 1], t[32];
                struct sdb_id r = {e->retract_lsn,
                                   db->ix->retractions[rp].salt};
                sdb_id_format(r, rid);
                sdb_time_format(db->ix->retractions[rp].ts_us, t);
                json_object_set_new(*out, "retracted_by", json_string(rid));
                json_object_set_new(*out, "retracted_at", json_string(t));
            }
        }
        if (rc < 0)
            sdb_error_set(err, rc, "id",
                          "the stored record could not be "
                          "read back intact");
    }
    pthread_rwlock_unlock(&db->ix_lock);
    return rc;
}

/* Visible assertions at a concept (not below it). */
static uint64_t visible_count(const struct sdb_index *ix,
                              const struct sdb_concept *c, uint64_t bound)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < c->entries.n; i++)
        n += ix->entries[c->entries.v[i]].lsn <= bound;
    return n;
}

static uint32_t visible_children(const struct sdb_index *ix,
                                 const struct sdb_concept *c, uint64_t bound)
{
    uint32_t n = 0;

    for (uint32_t ch = c->first_child; ch; ch = ix->concepts[ch]->next_sibling)
        n += ix->concepts[ch]->since_lsn <= bound;
    return n;
}

int sdb_concepts(sdb_db *db, const char *prefix, json_t **out, sdb_error *err)
{
    uint64_t bound = atomic_load(&db->visible_lsn);
    json_t *list = json_array();
    uint32_t cid = 0, first;
    int rc = 0;

    *out = NULL;
    if (prefix && *prefix &&
        sdb_concept_path_check(prefix, strlen(prefix), "prefix", err) < 0) {
        json_decref(list);
        return err->code;
    }
    pthread_rwlock_rdlock(&db->ix_lock);
    if (prefix && *prefix) {
        rc = sdb_index_concept(db->ix, prefix, false, &cid);
        if (rc == 0 && (!cid || db->ix->concepts[cid]->since_lsn > bound))
            rc = sdb_error_set(err, SDB_ENOTFOUND, "prefix", "no such concept");
    }
    first = cid ? db->ix->concepts[cid]->first_child : db->ix->first_root;
    for (uint32_t ch = first; rc == 0 && ch;
         ch = db->ix->concepts[ch]->next_sibling) {
        const struct sdb_concept *c = db->ix->concepts[ch];

        if (c->since_lsn > bound)
            continue; /* created by a write not durable (yet) */
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:I, s:I}", "name", c->path + c->name_off,
                      "path", c->path, "assertion_count",
                      (json_int_t)visible_count(db->ix, c, bound), "children",
                      (json_int_t)visible_children(db->ix, c, bound)));
    }
    pthread_rwlock_unlock(&db->ix_lock);
    if (rc == 0)
        *out = json_pack("{s:s, s:o, s:I}", "prefix", prefix ? prefix : "",
                         "concepts", list, "count",
                         (json_int_t)json_array_size(list));
    else
        json_decref(list);
    return rc;
}
