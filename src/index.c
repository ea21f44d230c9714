/*
 * index.c - in-memory indexes and their persisted snapshot (index.h,
 * docs/format.md "Index snapshot").  Must not: touch segment files, or
 * load a snapshot whose checksum, store id or bounds do not check out.
 */
#define _GNU_SOURCE
#include "index.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "path.h"

int sdb_u32vec_push(struct u32vec *vec, uint32_t x)
{
    if (vec->n == vec->cap) {
        uint32_t cap = vec->cap ? vec->cap * 2 : 4;
        uint32_t *v = realloc(vec->v, cap * sizeof(*v));

        if (!v)
            return SDB_ENOMEM;
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = x;
    return 0;
}

/* ---- string interning ---- */

static int strtab_grow(struct sdb_strtab *t)
{
    uint32_t tcap = t->tcap ? t->tcap * 2 : 64;
    uint32_t *tab = calloc(tcap, sizeof(*tab));

    if (!tab)
        return SDB_ENOMEM;
    for (uint32_t id = 1; id < t->n; id++) {
        uint32_t h =
            (uint32_t)sdb_hash64(t->s[id], strlen(t->s[id]), 0) & (tcap - 1);
        while (tab[h])
            h = (h + 1) & (tcap - 1);
        tab[h] = id;
    }
    free(t->tab);
    t->tab = tab;
    t->tcap = tcap;
    return 0;
}

int sdb_strtab_intern(struct sdb_strtab *t, const char *s, bool create,
                      uint32_t *out)
{
    uint32_t h;
    char *copy;

    *out = 0;
    if (t->n == 0)
        t->n = 1;
    if (t->n * 2 >= t->tcap && strtab_grow(t) < 0)
        return SDB_ENOMEM;
    h = (uint32_t)sdb_hash64(s, strlen(s), 0) & (t->tcap - 1);
    while (t->tab[h]) {
        if (strcmp(t->s[t->tab[h]], s) == 0) {
            *out = t->tab[h];
            return 0;
        }
        h = (h + 1) & (t->tcap - 1);
    }
    if (!create)
        return 0;
    if (t->n >= t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 64;
        char **v = realloc(t->s, cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        t->s = v;
        t->cap = cap;
    }
    if (!(copy = strdup(s)))
        return SDB_ENOMEM;
    t->s[t->n] = copy;
    t->tab[h] = t->n;
    *out = t->n++;
    return 0;
}

static void strtab_release(struct sdb_strtab *t)
{
    for (uint32_t i = 1; i < t->n; i++)
        free(t->s[i]);
    free(t->s);
    free(t->tab);
}

/* ---- concepts ---- */

static int concept_push(struct sdb_index *ix, struct sdb_concept *c)
{
    if (ix->n_concepts == ix->cap_concepts) {
        uint32_t cap = ix->cap_concepts ? ix->cap_concepts * 2 : 64;
        struct sdb_concept **v = realloc(ix->concepts, cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        ix->concepts = v;
        ix->cap_concepts = cap;
    }
    ix->concepts[ix->n_concepts++] = c;
    return 0;
}

static void concept_free(struct sdb_concept *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->seg.dir);
    free(c->entries.v);
    free(c);
}

/* Create concept `path` (len bytes of it) whose parent id is parent. */
static int concept_create(struct sdb_index *ix, const char *path, size_t len,
                          uint32_t parent, uint32_t *out)
{
    struct sdb_concept *c = calloc(1, sizeof(*c));
    const char *pdir = parent ? ix->concepts[parent]->seg.dir : "";
    const char *slash = memrchr(path, '/', len);
    size_t name_off = slash ? (size_t)(slash - path) + 1 : 0;
    char esc[256];
    uint32_t id;
    int n, rc = SDB_ENOMEM;

    if (!c)
        return SDB_ENOMEM;
    n = sdb_path_escape_component(path + name_off, len - name_off, parent == 0,
                                  esc, sizeof(esc));
    if (n < 0) {
        rc = SDB_EINVAL;
        goto free_c;
    }
    c->path = strndup(path, len);
    if (!c->path ||
        asprintf(&c->seg.dir, "%s%s%s", pdir, *pdir ? "/" : "", esc) < 0)
        goto free_c;
    c->name_off = (uint32_t)name_off;
    c->parent = parent;
    c->seg.chash = sdb_hash64(c->path, len, 0);
    rc = sdb_strtab_intern(&ix->concept_ids, c->path, true, &id);
    if (rc < 0)
        goto free_c;
    if (id != ix->n_concepts) { /* ids of concepts and the table agree */
        rc = SDB_EINVAL;
        goto free_c;
    }
    c->seg.key = id;
    rc = concept_push(ix, c);
    if (rc < 0)
        goto free_c;
    if (parent) {
        c->next_sibling = ix->concepts[parent]->first_child;
        ix->concepts[parent]->first_child = id;
        ix->concepts[parent]->n_children++;
    } else {
        c->next_sibling = ix->first_root;
        ix->first_root = id;
    }
    *out = id;
    return 0;
free_c:
    concept_free(c);
    return rc;
}

int sdb_index_concept(struct sdb_index *ix, const char *path, bool create,
                      uint32_t *out)
{
    size_t len = strlen(path), pos = 0;
    uint32_t id = 0, parent = 0;
    char buf[SDB_MAX_PATH_LEN + 1];
    int rc;

    *out = 0;
    rc = sdb_strtab_intern(&ix->concept_ids, path, false, &id);
    if (rc < 0 || id || !create) {
        *out = id;
        return rc;
    }
    if (len > SDB_MAX_PATH_LEN)
        return SDB_EINVAL;
    while (pos <= len) {
        const char *slash = memchr(path + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - path) : len;

        memcpy(buf, path, end);
        buf[end] = 0;
        rc = sdb_strtab_intern(&ix->concept_ids, buf, false, &id);
        if (rc == 0 && !id)
            rc = concept_create(ix, buf, end, parent, &id);
        if (rc < 0)
            return rc;
        parent = id;
        pos = end + 1;
    }
    *out = id;
    return 0;
}

int sdb_index_new(struct sdb_index **out)
{
    struct sdb_index *ix = calloc(1, sizeof(*ix));
    struct sdb_concept *log = calloc(1, sizeof(*log));

    *out = NULL;
    if (!ix || !log)
        goto fail;
    log->path = strdup("");
    log->seg.dir = strdup(SDB_RETRACTIONS_DIR);
    log->seg.chash =
        sdb_hash64(SDB_RETRACTIONS_DIR, strlen(SDB_RETRACTIONS_DIR), 0);
    if (!log->path || !log->seg.dir || concept_push(ix, log) < 0)
        goto fail;
    log = NULL;
    *out = ix;
    return 0;
fail:
    concept_free(log);
    sdb_index_free(ix);
    return SDB_ENOMEM;
}

void sdb_index_free(struct sdb_index *ix)
{
    if (!ix)
        return;
    for (uint32_t i = 0; i < ix->n_concepts; i++)
        concept_free(ix->concepts[i]);
    free(ix->concepts);
    strtab_release(&ix->concept_ids);
    strtab_release(&ix->predicates);
    strtab_release(&ix->sources);
    for (uint32_t i = 0; i < ix->cap_by_source; i++)
        free(ix->by_source[i].v);
    free(ix->by_source);
    free(ix->entries);
    free(ix->retractions);
    free(ix->dkeys);
    free(ix->dhead);
    free(ix->dpool);
    free(ix);
}

/* ---- derived_from reverse map ---- */

static int derived_grow(struct sdb_index *ix)
{
    uint32_t cap = ix->dcap ? ix->dcap * 2 : 1024;
    uint64_t *keys = calloc(cap, sizeof(*keys));
    uint32_t *head = calloc(cap, sizeof(*head));

    if (!keys || !head) {
        free(keys);
        free(head);
        return SDB_ENOMEM;
    }
    for (uint32_t i = 0; i < ix->dcap; i++) {
        uint32_t h;
        if (!ix->dkeys[i])
            continue;
        h = (uint32_t)sdb_hash64(&ix->dkeys[i], 8, 0) & (cap - 1);
        while (keys[h])
            h = (h + 1) & (cap - 1);
        keys[h] = ix->dkeys[i];
        head[h] = ix->dhead[i];
    }
    free(ix->dkeys);
    free(ix->dhead);
    ix->dkeys = keys;
    ix->dhead = head;
    ix->dcap = cap;
    return 0;
}

static uint32_t *derived_slot(struct sdb_index *ix, uint64_t parent,
                              bool create)
{
    uint32_t h;

    if (ix->dcap == 0 || (create && (ix->dcount + 1) * 2 > ix->dcap)) {
        if (!create || derived_grow(ix) < 0)
            return NULL;
    }
    h = (uint32_t)sdb_hash64(&parent, 8, 0) & (ix->dcap - 1);
    while (ix->dkeys[h] && ix->dkeys[h] != parent)
        h = (h + 1) & (ix->dcap - 1);
    if (!ix->dkeys[h]) {
        if (!create)
            return NULL;
        ix->dkeys[h] = parent;
        ix->dcount++;
    }
    return &ix->dhead[h];
}

static int derived_add(struct sdb_index *ix, uint64_t parent, uint32_t child)
{
    uint32_t *head;

    if (ix->dpool_n == ix->dpool_cap) {
        uint32_t cap = ix->dpool_cap ? ix->dpool_cap * 2 : 256;
        void *p = realloc(ix->dpool, cap * sizeof(*ix->dpool));
        if (!p)
            return SDB_ENOMEM;
        ix->dpool = p;
        ix->dpool_cap = cap;
    }
    head = derived_slot(ix, parent, true);
    if (!head)
        return SDB_ENOMEM;
    ix->dpool[ix->dpool_n].child = child;
    ix->dpool[ix->dpool_n].next = *head;
    *head = ++ix->dpool_n;
    return 0;
}

/* ---- entries ---- */

static int by_source_add(struct sdb_index *ix, uint32_t src, uint32_t pos)
{
    if (src >= ix->cap_by_source) {
        uint32_t cap = ix->cap_by_source ? ix->cap_by_source : 64;
        struct u32vec *v;
        while (cap <= src)
            cap *= 2;
        v = realloc(ix->by_source, cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        memset(v + ix->cap_by_source, 0,
               (cap - ix->cap_by_source) * sizeof(*v));
        ix->by_source = v;
        ix->cap_by_source = cap;
    }
    return sdb_u32vec_push(&ix->by_source[src], pos);
}

static int entry_push(struct sdb_index *ix, const struct sdb_entry *e)
{
    if (ix->n_entries == ix->cap_entries) {
        uint32_t cap = ix->cap_entries ? ix->cap_entries * 2 : 1024;
        struct sdb_entry *v = realloc(ix->entries, (size_t)cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        ix->entries = v;
        ix->cap_entries = cap;
    }
    ix->entries[ix->n_entries++] = *e;
    return 0;
}

/* Link entry pos into the per-concept and per-source lists. */
static int entry_link(struct sdb_index *ix, uint32_t pos)
{
    const struct sdb_entry *e = &ix->entries[pos];
    int rc = sdb_u32vec_push(&ix->concepts[e->concept]->entries, pos);

    if (rc == 0 && e->source)
        rc = by_source_add(ix, e->source, pos);
    return rc;
}

int sdb_index_add(struct sdb_index *ix, const struct sdb_assertion *a,
                  uint32_t concept, const struct sdb_loc *loc,
                  uint32_t *out_pos)
{
    struct sdb_entry e = {0};
    uint32_t pos = ix->n_entries;
    int rc;

    if (pos && ix->entries[pos - 1].lsn >= a->id.lsn)
        return SDB_EINVAL;
    e.lsn = a->id.lsn;
    e.ts_us = a->ts_us;
    e.salt = a->id.salt;
    e.concept = concept;
    e.tier = (uint8_t)a->tier;
    e.confidence = (float)a->confidence;
    if (loc) {
        e.segno = (uint16_t)loc->segno;
        e.off = loc->off;
        e.len = loc->len;
        e.hash = loc->hash;
    }
    rc = sdb_strtab_intern(&ix->predicates, a->predicate, true, &e.predicate);
    if (rc == 0 && a->source)
        rc = sdb_strtab_intern(&ix->sources, a->source, true, &e.source);
    if (rc == 0)
        rc = entry_push(ix, &e);
    if (rc == 0)
        rc = entry_link(ix, pos);
    for (size_t i = 0; rc == 0 && i < a->n_derived; i++)
        rc = derived_add(ix, a->derived_from[i].lsn, pos);
    if (rc == 0 && out_pos)
        *out_pos = pos;
    return rc;
}

int sdb_index_push_raw(struct sdb_index *ix, const struct sdb_entry *e)
{
    if (ix->n_entries && ix->entries[ix->n_entries - 1].lsn >= e->lsn)
        return SDB_EINVAL;
    return entry_push(ix, e);
}

int sdb_index_push_raw_unsorted(struct sdb_index *ix, const struct sdb_entry *e)
{
    return entry_push(ix, e);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct sdb_entry *x = a, *y = b;

    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

int sdb_index_sort(struct sdb_index *ix)
{
    if (ix->n_entries)
        qsort(ix->entries, ix->n_entries, sizeof(*ix->entries), cmp_entry);
    for (uint32_t i = 1; i < ix->n_entries; i++)
        if (ix->entries[i].lsn == ix->entries[i - 1].lsn)
            return SDB_ECORRUPT; /* the same record in two places */
    return sdb_index_relink(ix);
}

int sdb_index_link_derived(struct sdb_index *ix, uint64_t parent,
                           uint32_t child)
{
    return derived_add(ix, parent, child);
}

int sdb_index_relink(struct sdb_index *ix)
{
    int rc = 0;

    for (uint32_t pos = 0; rc == 0 && pos < ix->n_entries; pos++)
        rc = entry_link(ix, pos);
    return rc;
}

int sdb_index_add_retraction(struct sdb_index *ix,
                             const struct sdb_retraction *r,
                             const struct sdb_loc *loc)
{
    struct sdb_rentry re = {0};

    if (ix->n_retractions == ix->cap_retractions) {
        uint32_t cap = ix->cap_retractions ? ix->cap_retractions * 2 : 64;
        struct sdb_rentry *v = realloc(ix->retractions, cap * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        ix->retractions = v;
        ix->cap_retractions = cap;
    }
    re.lsn = r->id.lsn;
    re.ts_us = r->ts_us;
    re.salt = r->id.salt;
    re.n_retracted = (uint32_t)r->n_retracted;
    if (loc) {
        re.segno = loc->segno;
        re.off = loc->off;
        re.len = loc->len;
        re.hash = loc->hash;
    }
    ix->retractions[ix->n_retractions++] = re;
    return 0;
}

int64_t sdb_index_find(const struct sdb_index *ix, uint64_t lsn)
{
    uint32_t lo = 0, hi = ix->n_entries;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ix->entries[mid].lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n_entries && ix->entries[lo].lsn == lsn ? (int64_t)lo : -1;
}

int64_t sdb_index_find_id(const struct sdb_index *ix, struct sdb_id id)
{
    int64_t pos = sdb_index_find(ix, id.lsn);

    return pos >= 0 && ix->entries[pos].salt == id.salt ? pos : -1;
}

int64_t sdb_index_find_retraction(const struct sdb_index *ix, uint64_t lsn)
{
    uint32_t lo = 0, hi = ix->n_retractions;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ix->retractions[mid].lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n_retractions && ix->retractions[lo].lsn == lsn
               ? (int64_t)lo
               : -1;
}

uint64_t sdb_index_lsn_at(const struct sdb_index *ix, int64_t ts_us)
{
    uint32_t lo = 0, hi = ix->n_entries;
    uint64_t best = 0;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ix->entries[mid].ts_us <= ts_us)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo)
        best = ix->entries[lo - 1].lsn;
    lo = 0;
    hi = ix->n_retractions;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ix->retractions[mid].ts_us <= ts_us)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo && ix->retractions[lo - 1].lsn > best)
        best = ix->retractions[lo - 1].lsn;
    return best;
}

/* ---- retraction ---- */

struct resolve {
    struct sdb_index *ix;
    unsigned char *seen; /* bitmap over entry positions */
    struct u32vec work;
};

static int mark(struct resolve *rs, uint32_t pos)
{
    if (rs->seen[pos / 8] & (1u << (pos % 8)))
        return 0;
    if (rs->ix->entries[pos].retract_lsn)
        return 0;
    rs->seen[pos / 8] |= (unsigned char)(1u << (pos % 8));
    return sdb_u32vec_push(&rs->work, pos);
}

static int mark_concept(struct resolve *rs, uint32_t cid, uint32_t pred,
                        bool subtree)
{
    struct sdb_concept *c = rs->ix->concepts[cid];
    int rc = 0;

    for (uint32_t i = 0; rc == 0 && i < c->entries.n; i++) {
        uint32_t pos = c->entries.v[i];
        if (!pred || rs->ix->entries[pos].predicate == pred)
            rc = mark(rs, pos);
    }
    for (uint32_t ch = c->first_child; subtree && rc == 0 && ch;
         ch = rs->ix->concepts[ch]->next_sibling)
        rc = mark_concept(rs, ch, pred, true);
    return rc;
}

static bool path_under(const char *s, const char *p)
{
    size_t n = strlen(p);

    return strncmp(s, p, n) == 0 && (s[n] == 0 || s[n] == '/');
}

static int mark_sources(struct resolve *rs, const char *path)
{
    struct sdb_index *ix = rs->ix;
    int rc = 0;

    for (uint32_t s = 1; rc == 0 && s < ix->sources.n; s++) {
        if (!path_under(ix->sources.s[s], path) || s >= ix->cap_by_source)
            continue;
        for (uint32_t i = 0; rc == 0 && i < ix->by_source[s].n; i++)
            rc = mark(rs, ix->by_source[s].v[i]);
    }
    return rc;
}

static int resolve_targets(struct resolve *rs, const struct sdb_retraction *r)
{
    struct sdb_index *ix = rs->ix;
    uint32_t cid = 0, pred = 0;
    int64_t pos;
    int rc;

    if (r->by_id) {
        pos = sdb_index_find_id(ix, r->target_id);
        if (pos < 0)
            return SDB_ENOTFOUND;
        return mark(rs, (uint32_t)pos);
    }
    rc = sdb_index_concept(ix, r->concept_path, false, &cid);
    if (rc == 0 && r->predicate)
        rc = sdb_strtab_intern(&ix->predicates, r->predicate, false, &pred);
    if (rc < 0)
        return rc;
    if (cid && (!r->predicate || pred))
        rc = mark_concept(rs, cid, pred, r->scope == SDB_SCOPE_SUBTREE);
    if (rc == 0 && r->cascade)
        rc = mark_sources(rs, r->concept_path);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int sdb_index_resolve(struct sdb_index *ix, struct sdb_retraction *r)
{
    struct resolve rs = {.ix = ix};
    int rc;

    rs.seen = calloc(ix->n_entries / 8 + 1, 1);
    if (!rs.seen)
        return SDB_ENOMEM;
    rc = resolve_targets(&rs, r);
    for (uint32_t w = 0; rc == 0 && r->cascade && w < rs.work.n; w++) {
        uint64_t lsn = ix->entries[rs.work.v[w]].lsn;
        uint32_t *head = derived_slot(ix, lsn, false);

        for (uint32_t p = head ? *head : 0; rc == 0 && p;
             p = ix->dpool[p - 1].next)
            rc = mark(&rs, ix->dpool[p - 1].child);
    }
    if (rc == 0) {
        free(r->retracted);
        r->retracted = calloc(rs.work.n ? rs.work.n : 1, sizeof(uint64_t));
        if (!r->retracted)
            rc = SDB_ENOMEM;
    }
    if (rc == 0) {
        for (uint32_t i = 0; i < rs.work.n; i++)
            r->retracted[i] = ix->entries[rs.work.v[i]].lsn;
        r->n_retracted = rs.work.n;
        qsort(r->retracted, r->n_retracted, sizeof(uint64_t), cmp_u64);
    }
    free(rs.work.v);
    free(rs.seen);
    return rc;
}

void sdb_index_apply_retraction(struct sdb_index *ix, uint64_t rlsn,
                                const uint64_t *lsns, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int64_t pos = sdb_index_find(ix, lsns[i]);

        if (pos >= 0 && !ix->entries[pos].retract_lsn) {
            ix->entries[pos].retract_lsn = rlsn;
            ix->retracted_count++;
        }
    }
}
