/*
 * index.h - the in-memory indexes: concept tree, interned predicates and
 * sources, one entry per assertion in LSN order (id index), per-concept and
 * per-source entry lists, the derived_from reverse map and the retraction
 * log; plus the persisted snapshot in db/indexes/ (docs/format.md).
 *
 * Everything here is derived from the segment files and can be rebuilt
 * from them.  Locking is the caller's (db.c holds db->ix_lock: readers
 * shared, the writer thread exclusive).  No I/O except snapshot save/load.
 */
#ifndef SDB_INDEX_H
#define SDB_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "model.h"
#include "segment.h"

struct u32vec {
    uint32_t *v;
    uint32_t n, cap;
};
int sdb_u32vec_push(struct u32vec *vec, uint32_t x);

/* One assertion: 64 bytes. */
struct sdb_entry {
    uint64_t lsn;
    int64_t ts_us;
    uint64_t retract_lsn; /* LSN of the retraction that hid it; 0 = none */
    uint64_t hash;        /* record checksum (segment.h) */
    uint32_t concept;
    uint32_t predicate; /* string id */
    uint32_t source;    /* string id; 0 = none */
    uint32_t salt;
    uint32_t off;
    uint32_t len;
    uint16_t segno;
    uint8_t tier;
    uint8_t flags;
    float confidence;
};

/* A retraction record (its targets live on the entries' retract_lsn). */
struct sdb_rentry {
    uint64_t lsn;
    int64_t ts_us;
    uint32_t salt;
    uint32_t n_retracted;
    uint64_t hash;
    uint32_t segno, off, len;
};

/* Concept 0 is the internal retraction log; tree concepts start at 1. */
struct sdb_concept {
    char *path;        /* owned; "" for concept 0 */
    uint32_t name_off; /* offset of the last component in path */
    uint32_t parent;   /* 0 = top level */
    uint32_t first_child;
    uint32_t next_sibling;
    uint32_t n_children;
    uint64_t since_lsn;    /* LSN of the write that created it; 0 when it
                              came from disk (durable) */
    struct u32vec entries; /* positions in ix->entries, LSN order */
    struct sdb_seginfo seg;
};

struct sdb_strtab {
    char **s;   /* s[id], id >= 1; s[0] unused */
    uint32_t n; /* ids in use + 1 */
    uint32_t cap;
    uint32_t *tab; /* open addressing: id, 0 = empty */
    uint32_t tcap;
};

struct sdb_index {
    struct sdb_entry *entries; /* LSN order */
    uint32_t n_entries, cap_entries;
    struct sdb_rentry *retractions; /* LSN order */
    uint32_t n_retractions, cap_retractions;
    struct sdb_concept **concepts; /* by id; [0] = retraction log */
    uint32_t n_concepts, cap_concepts;
    struct sdb_strtab concept_ids; /* path -> concept id */
    uint32_t first_root;
    struct sdb_strtab predicates;
    struct sdb_strtab sources;
    struct u32vec *by_source; /* by source id: entry positions */
    uint32_t cap_by_source;
    /* derived_from reverse map: parent LSN -> child positions */
    uint64_t *dkeys;
    uint32_t *dhead; /* 1-based into dpool */
    uint32_t dcap, dcount;
    struct {
        uint32_t child, next;
    } * dpool;
    uint32_t dpool_n, dpool_cap;
    uint64_t retracted_count;
};

int sdb_strtab_intern(struct sdb_strtab *t, const char *s, bool create,
                      uint32_t *out);

int sdb_index_new(struct sdb_index **out);
void sdb_index_free(struct sdb_index *ix);

/*
 * The id of a concept path, creating it and every missing ancestor when
 * create is set (dir is then computed with path.h).  0 if absent.
 */
int sdb_index_concept(struct sdb_index *ix, const char *path, bool create,
                      uint32_t *out);

/* Add an assertion (id/ts assigned) at the end; *out_pos its position. */
int sdb_index_add(struct sdb_index *ix, const struct sdb_assertion *a,
                  uint32_t concept, const struct sdb_loc *loc,
                  uint32_t *out_pos);
int sdb_index_add_retraction(struct sdb_index *ix,
                             const struct sdb_retraction *r,
                             const struct sdb_loc *loc);

/* Loading a snapshot: append a raw entry (LSN order) or derived pair, then
 * sdb_index_relink rebuilds the per-concept and per-source lists. */
int sdb_index_push_raw(struct sdb_index *ix, const struct sdb_entry *e);
int sdb_index_link_derived(struct sdb_index *ix, uint64_t parent,
                           uint32_t child);
int sdb_index_relink(struct sdb_index *ix);
/* Rebuild from segments: append in any order, then sort by LSN + relink. */
int sdb_index_push_raw_unsorted(struct sdb_index *ix,
                                const struct sdb_entry *e);
int sdb_index_sort(struct sdb_index *ix);

/* Position of the entry with this LSN, or -1. */
int64_t sdb_index_find(const struct sdb_index *ix, uint64_t lsn);
/* Position of the assertion with this id (LSN and salt), or -1. */
int64_t sdb_index_find_id(const struct sdb_index *ix, struct sdb_id id);
/* Position of the retraction with this LSN, or -1. */
int64_t sdb_index_find_retraction(const struct sdb_index *ix, uint64_t lsn);

/*
 * Work out which assertions a retraction hides, as of now: its targets
 * (not yet retracted), then with cascade every assertion whose source is
 * the retracted path or below it and, transitively, every assertion
 * derived from a retracted one.  Fills r->retracted (sorted LSNs).
 * Does not change the index.
 */
int sdb_index_resolve(struct sdb_index *ix, struct sdb_retraction *r);
/* Mark the LSNs retracted by retraction lsn (those not already hidden). */
void sdb_index_apply_retraction(struct sdb_index *ix, uint64_t rlsn,
                                const uint64_t *lsns, size_t n);

/* The highest LSN whose timestamp is <= ts_us (0 if none). */
uint64_t sdb_index_lsn_at(const struct sdb_index *ix, int64_t ts_us);

/*
 * Persist the whole index as of lsn to dir/index.snap atomically, and load
 * it back (SDB_ECORRUPT/SDB_EVERSION/-ENOENT when it cannot be used).
 */
int sdb_index_save(const struct sdb_index *ix, const sdb_io *io,
                   const char *dir, uint64_t store_id, uint64_t lsn);
int sdb_index_load(const sdb_io *io, const char *dir, uint64_t store_id,
                   struct sdb_index **out, uint64_t *out_lsn, sdb_error *err);

#endif
