/*
 * model.h - the data model: assertions, retractions, query requests, ids
 * and authority tiers, and their validation from JSON requests.
 *
 * Every rejection fills an sdb_error with SDB_EINVAL (or SDB_ETOOBIG), a
 * message that says what is wrong, and the field ("assertions[3].value").
 * Implements DESIGN section 2 and the limits in stemedb.h (docs/api.md).
 * No I/O here.
 */
#ifndef SDB_MODEL_H
#define SDB_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "stemedb/stemedb.h"

/* Ordered: a higher number is a higher authority. */
enum sdb_tier {
    SDB_TIER_UNVERIFIED = 0,
    SDB_TIER_COMMUNITY = 1,
    SDB_TIER_VERIFIED = 2,
    SDB_TIER_EXPERT = 3,
    SDB_TIER_AUTHORITATIVE = 4,
    SDB_TIER_COUNT = 5
};

/* "unverified" ... "authoritative"; NULL for an out-of-range tier. */
const char *sdb_tier_name(int tier);
/* The tier named by s, or -1. */
int sdb_tier_parse(const char *s);
/* Weight used by the consensus lens: unverified 1 ... authoritative 5. */
double sdb_tier_weight(int tier);

enum sdb_lens {
    SDB_LENS_RECENCY = 0,
    SDB_LENS_CONFIDENCE,
    SDB_LENS_AUTHORITY,
    SDB_LENS_CONSENSUS
};
const char *sdb_lens_name(int lens);
int sdb_lens_parse(const char *s); /* -1 if unknown */

/*
 * An id: the LSN of the record plus a random salt chosen at commit, so ids
 * from diverged histories of one store never collide.  Text form: 24
 * lowercase hex digits, 16 for the LSN then 8 for the salt.
 */
struct sdb_id {
    uint64_t lsn;
    uint32_t salt;
};
#define SDB_ID_LEN 24
void sdb_id_format(struct sdb_id id, char out[SDB_ID_LEN + 1]);
/* 0, or SDB_EINVAL unless s is exactly 24 lowercase hex digits, lsn != 0. */
int sdb_id_parse(const char *s, struct sdb_id *out);

struct sdb_assertion {
    char *concept_path; /* owned */
    char *predicate;    /* owned */
    json_t *value;      /* owned reference */
    double confidence;
    int tier;
    char *source;                /* owned; NULL when absent */
    struct sdb_id *derived_from; /* owned array; NULL when n_derived == 0 */
    size_t n_derived;
    /* assigned at commit */
    struct sdb_id id;
    int64_t ts_us;
};

/* Free what *a owns and zero it. */
void sdb_assertion_release(struct sdb_assertion *a);

enum sdb_scope {
    SDB_SCOPE_EXACT = 0, /* one concept path */
    SDB_SCOPE_SUBTREE,   /* "prefix/\*": the prefix and everything below */
    SDB_SCOPE_ALL        /* "*" */
};

struct sdb_retraction {
    bool by_id;
    struct sdb_id target_id; /* when by_id */
    char *concept_path;      /* owned; when !by_id (without any "/\*") */
    int scope;               /* SDB_SCOPE_EXACT or SDB_SCOPE_SUBTREE */
    char *predicate;         /* owned; optional (NULL) */
    char *reason;            /* owned; required */
    bool cascade;
    /* assigned at commit */
    struct sdb_id id;
    int64_t ts_us;
    uint64_t *retracted; /* owned; LSNs of assertions retracted by it */
    size_t n_retracted;
};

void sdb_retraction_release(struct sdb_retraction *r);

struct sdb_query_req {
    int scope;
    char *concept_path; /* owned; NULL for SDB_SCOPE_ALL; no "/\*" suffix */
    char *predicate;    /* owned; optional */
    int lens;
    int limit;    /* 1 .. SDB_MAX_QUERY_LIMIT */
    char *cursor; /* owned; optional, opaque */
    bool has_as_of;
    int64_t as_of_us;
    bool include_retracted;
};

void sdb_query_req_release(struct sdb_query_req *q);

/*
 * Validate a concept path (DESIGN section 2): 1..SDB_MAX_PATH_DEPTH
 * non-empty components separated by single '/', no leading/trailing '/',
 * each component valid UTF-8, no control characters (C0, DEL, C1), not "."
 * or "..", not "*", at most SDB_MAX_COMPONENT_LEN bytes and at most 255
 * bytes once escaped (path.h); the whole at most SDB_MAX_PATH_LEN bytes.
 * field names the field for the error.
 */
int sdb_concept_path_check(const char *path, size_t len, const char *field,
                           sdb_error *err);

/*
 * True if s[0..len) is well-formed UTF-8 (Unicode table 3-7: no overlong
 * forms, no surrogates, nothing above U+10FFFF).  NUL bytes are well-formed.
 */
bool sdb_utf8_valid(const char *s, size_t len);

/*
 * Validate a predicate: 1..SDB_MAX_PREDICATE_LEN bytes of UTF-8 without
 * control characters (C0, DEL, C1).  SDB_EINVAL naming field otherwise.
 */
int sdb_predicate_check(const char *s, size_t len, const char *field,
                        sdb_error *err);

/*
 * Validate a retraction reason: 1..SDB_MAX_REASON_LEN bytes of UTF-8
 * without NUL (newlines and tabs are allowed).  SDB_EINVAL otherwise.
 */
int sdb_reason_check(const char *s, size_t len, const char *field,
                     sdb_error *err);

/*
 * Parse an assert request: one assertion object, or {"assertions":[...]}
 * with 1..SDB_MAX_BATCH objects.  Client-sent id, lsn or timestamp, unknown
 * fields and wrong types are rejected.  On success *out is a malloc'd array
 * of *n assertions (free each with sdb_assertion_release, then free()).
 */
int sdb_assert_request_parse(json_t *req, struct sdb_assertion **out, size_t *n,
                             sdb_error *err);

/*
 * Parse a retract request: {"id": ...} or {"concept_path": "a/b" | "a/\*",
 * "predicate"?}, plus "reason" (required, non-empty) and "cascade" (bool,
 * default false).  Exactly one of id / concept_path.
 */
int sdb_retract_request_parse(json_t *req, struct sdb_retraction *out,
                              sdb_error *err);

/*
 * Parse a query request: concept_path ("a/b", "a/\*" or "*"; default "*"),
 * predicate, lens (default recency), limit (default 100, 1..10000),
 * cursor (string), as_of (RFC 3339), include_retracted (bool).
 */
int sdb_query_request_parse(json_t *req, struct sdb_query_req *out,
                            sdb_error *err);

/* Fill err (if not NULL) with code, field and a printf-style message. */
int sdb_error_set(sdb_error *err, int code, const char *field, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

#endif
