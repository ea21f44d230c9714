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

struct qctx {
    struct sdb_db *db;
    struct sdb_index *ix;
    const struct sdb_query_req *q;
    uint64_t bound;
    uint32_t pred;
    struct u32vec hits;
};

int sdb_db_read_entry(struct sdb_db *db, uint32_t pos,
                      struct sdb_assertion *out)
{
    const struct sdb_entry *e = &db->ix->entries[pos];
    struct sdb_loc loc = {e->segno, e->off, e->len, e->hash};
    struct sdb_record rec;
    unsigned char *buf = malloc(e->len ? e->len : 1);
    size_t used;
    int rc;

    if (!buf)
        return SDB_ENOMEM;
    rc = sdb_segstore_read(db->ss, &db->ix->concepts[e->concept]->seg, &loc,
                           buf);
    if (rc == 0)
        rc = sdb_codec_unpack(buf, e->len, &used, &rec, NULL);
    free(buf);
    if (rc < 0)
        return rc;
    if (rec.type != SDB_REC_ASSERTION || rec.a.id.lsn != e->lsn) {
        sdb_record_release(&rec);
        return SDB_ECORRUPT;
    }
    *out = rec.a;
    memset(&rec.a, 0, sizeof(rec.a));
    sdb_record_release(&rec);
    return 0;
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

static int ranked_page(struct qctx *qc, uint64_t after[3], bool has_cursor,
                       json_t *list, json_t **next)
{
    const struct sdb_query_req *q = qc->q;
    uint32_t start = 0, i;
    uint64_t k[3];
    int rc = 0;

    sort_entries = qc->ix->entries;
    sort_lens = q->lens;
    if (!(q->lens == SDB_LENS_RECENCY && q->scope != SDB_SCOPE_SUBTREE))
        qsort(qc->hits.v, qc->hits.n, sizeof(uint32_t), cmp_hits);
    else /* already in LSN order: newest first is the reverse */
        for (i = 0; i < qc->hits.n / 2; i++) {
            uint32_t t = qc->hits.v[i];
            qc->hits.v[i] = qc->hits.v[qc->hits.n - 1 - i];
            qc->hits.v[qc->hits.n - 1 - i] = t;
        }
    if (has_cursor) {
        while (start < qc->hits.n) {
            sort_key(&qc->ix->entries[qc->hits.v[start]], q->lens, k);
            if (key_cmp(k, after) > 0)
                break;
            start++;
        }
    }
    for (i = start; rc == 0 && i < qc->hits.n && i - start < (uint32_t)q->limit;
         i++) {
        json_t *item = NULL;
        rc = entry_json(qc, qc->hits.v[i], &item);
        if (rc == 0)
            json_array_append_new(list, item);
    }
    if (rc == 0 && i < qc->hits.n) {
        sort_key(&qc->ix->entries[qc->hits.v[i - 1]], q->lens, k);
        *next = cursor_make(q->lens, qc->bound, k);
    }
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

static int run_query(struct qctx *qc, json_t **out, sdb_error *err)
{
    const struct sdb_query_req *q = qc->q;
    uint64_t after[3] = {0}, visible_lsn = atomic_load(&qc->db->visible_lsn);
    json_t *list = json_array(), *next = NULL;
    int rc = 0;

    qc->bound = visible_lsn;
    if (q->cursor && (cursor_parse(q->cursor, q->lens, &qc->bound, after) < 0 ||
                      qc->bound > visible_lsn))
        rc = sdb_error_set(err, SDB_EINVAL, "cursor",
                           "not a cursor returned by this query");
    if (rc == 0 && q->has_as_of && !q->cursor) {
        uint64_t at = sdb_index_lsn_at(qc->ix, q->as_of_us);
        qc->bound = at < visible_lsn ? at : visible_lsn;
    }
    if (rc == 0 && q->predicate)
        rc = sdb_strtab_intern(&qc->ix->predicates, q->predicate, false,
                               &qc->pred);
    if (rc == 0 && (!q->predicate || qc->pred) && qc->bound)
        rc = collect(qc);
    if (rc == 0 && q->lens == SDB_LENS_CONSENSUS)
        rc = consensus_page(qc, q->cursor ? after[0] : 0, list, &next);
    else if (rc == 0)
        rc = ranked_page(qc, after, q->cursor != NULL, list, &next);
    if (rc == 0)
        *out = json_pack("{s:o, s:I, s:o}", "assertions", list, "count",
                         (json_int_t)json_array_size(list), "next_cursor",
                         next ? next : json_null());
    else
        json_decref(list);
    if (rc < 0 && !err->code)
        sdb_error_set(err, rc, "", "query failed: %s", sdb_strerror(rc));
    return rc;
}

int sdb_query(sdb_db *db, json_t *req, json_t **out, sdb_error *err)
{
    struct sdb_query_req q;
    struct qctx qc = {.db = db, .q = &q};
    sdb_error dummy = {0};
    int rc;

    *out = NULL;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof(*err));
    rc = sdb_query_request_parse(req, &q, err);
    if (rc < 0)
        return rc;
    pthread_rwlock_rdlock(&db->ix_lock);
    qc.ix = db->ix;
    rc = run_query(&qc, out, err);
    pthread_rwlock_unlock(&db->ix_lock);
    free(qc.hits.v);
    sdb_query_req_release(&q);
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
            char rid[SDB_ID_LEN + 1], t[32];
            if (rp >= 0) {
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
        if (rc == 0 && !cid)
            rc = sdb_error_set(err, SDB_ENOTFOUND, "prefix", "no such concept");
    }
    first = cid ? db->ix->concepts[cid]->first_child : db->ix->first_root;
    for (uint32_t ch = first; rc == 0 && ch;
         ch = db->ix->concepts[ch]->next_sibling) {
        const struct sdb_concept *c = db->ix->concepts[ch];
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:I, s:I}", "name", c->path + c->name_off,
                      "path", c->path, "assertion_count",
                      (json_int_t)visible_count(db->ix, c, bound), "children",
                      (json_int_t)c->n_children));
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
