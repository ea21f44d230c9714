/*
 * test_db.c - the engine through its public API: writes, reopen with and
 * without the index snapshot, queries and lenses, as_of, retraction and
 * cascades, cursors, the LOCK, group commit under concurrency.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io_sim.h"
#include "stemedb/stemedb.h"
#include "testutil.h"

struct fx {
    char *dir;
    sdb_db *db;
};

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    if (level <= SDB_LOG_WARN)
        fprintf(stderr, "[db] %s\n", msg);
}

static sdb_db *open_db(const char *dir)
{
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db = NULL;

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    if (sdb_db_open(&o, &db, &err) != 0)
        fail_msg("open %s: %s", dir, err.message);
    return db;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    f->dir = tu_mkdtemp("db");
    f->db = open_db(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    sdb_db_close(f->db);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Assert and return the new id (static buffer per call site). */
static void put(sdb_db *db, char id[32], const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void put(sdb_db *db, char id[32], const char *fmt, ...)
{
    char buf[8192];
    json_t *req, *out = NULL;
    sdb_error err = {0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    req = tu_json("%s", buf);
    if (sdb_assert_sync(db, req, &out, &err) != 0)
        fail_msg("assert %s: %s (%s)", buf, err.message, err.field);
    if (id)
        snprintf(id, 32, "%s", json_string_value(json_object_get(out, "id")));
    json_decref(out);
    json_decref(req);
}

static json_t *query(sdb_db *db, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *query(sdb_db *db, const char *fmt, ...)
{
    char buf[8192];
    json_t *req, *out = NULL;
    sdb_error err = {0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    req = tu_json("%s", buf);
    if (sdb_query(db, req, &out, &err) != 0)
        fail_msg("query %s: %s (%s)", buf, err.message, err.field);
    json_decref(req);
    return out;
}

static size_t count_of(json_t *res)
{
    return json_array_size(json_object_get(res, "assertions"));
}

static const char *nth_str(json_t *res, size_t i, const char *key)
{
    return json_string_value(json_object_get(
        json_array_get(json_object_get(res, "assertions"), i), key));
}

static void test_db_assert_then_query_returns_it(void **state)
{
    struct fx *f = *state;
    char id[32];
    json_t *r;

    put(f->db, id,
        "{\"concept_path\":\"medicine/aspirin/dosage\",\"predicate\":\"max\","
        "\"value\":{\"mg\":4000},\"confidence\":0.9,\"authority_tier\":"
        "\"expert\",\"source\":\"source/pubmed/1\"}");
    r = query(f->db, "{\"concept_path\":\"medicine/aspirin/dosage\"}");
    assert_int_equal(count_of(r), 1);
    assert_string_equal(nth_str(r, 0, "id"), id);
    assert_string_equal(nth_str(r, 0, "authority_tier"), "expert");
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_array_get(json_object_get(r, "assertions"), 0),
                            "value"),
            "mg")),
        4000);
    json_decref(r);
}

static void test_db_survives_reopen_and_index_rebuild(void **state)
{
    struct fx *f = *state;
    char ids[50][32], *snap;
    json_t *r, *g;
    sdb_error err = {0};

    for (int i = 0; i < 50; i++)
        put(f->db, ids[i],
            "{\"concept_path\":\"c/%d\",\"predicate\":\"p\",\"value\":%d}",
            i % 7, i);
    sdb_db_close(f->db);
    f->db = NULL;
    f->db = open_db(f->dir);
    r = query(f->db, "{\"concept_path\":\"*\",\"limit\":1000}");
    assert_int_equal(count_of(r), 50);
    json_decref(r);
    sdb_db_close(f->db);
    f->db = NULL;
    snap = tu_printf("%s/db/indexes/index.snap", f->dir);
    assert_int_equal(unlink(snap), 0);
    free(snap);
    f->db = open_db(f->dir);
    r = query(f->db, "{\"concept_path\":\"c/*\",\"limit\":1000}");
    assert_int_equal(count_of(r), 50);
    json_decref(r);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(sdb_get(f->db, ids[i], &g, &err), 0);
        assert_int_equal(json_integer_value(json_object_get(g, "value")), i);
        json_decref(g);
    }
}

static void test_db_second_open_is_refused_naming_the_holder(void **state)
{
    struct fx *f = *state;
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db2 = NULL;
    char pid[32];

    sdb_options_init(&o, f->dir);
    o.log = quiet;
    assert_int_equal(sdb_db_open(&o, &db2, &err), SDB_ELOCKED);
    assert_null(db2);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    assert_non_null(strstr(err.message, pid));
}

static void test_db_lenses_order_results(void **state)
{
    struct fx *f = *state;
    json_t *r;

    put(f->db, NULL,
        "{\"concept_path\":\"x\",\"predicate\":\"p\",\"value\":\"a\","
        "\"confidence\":0.5,\"authority_tier\":\"authoritative\"}");
    put(f->db, NULL,
        "{\"concept_path\":\"x\",\"predicate\":\"p\",\"value\":\"b\","
        "\"confidence\":0.9,\"authority_tier\":\"community\"}");
    put(f->db, NULL,
        "{\"concept_path\":\"x\",\"predicate\":\"p\",\"value\":\"c\","
        "\"confidence\":0.7,\"authority_tier\":\"community\"}");
    put(f->db, NULL,
        "{\"concept_path\":\"x\",\"predicate\":\"p\",\"value\":\"c\","
        "\"confidence\":0.6,\"authority_tier\":\"verified\"}");
    r = query(f->db, "{\"concept_path\":\"x\"}");
    assert_string_equal(nth_str(r, 0, "value"), "c");
    assert_string_equal(nth_str(r, 3, "value"), "a");
    json_decref(r);
    r = query(f->db, "{\"concept_path\":\"x\",\"lens\":\"confidence\"}");
    assert_string_equal(nth_str(r, 0, "value"), "b");
    assert_string_equal(nth_str(r, 3, "value"), "a");
    json_decref(r);
    r = query(f->db, "{\"concept_path\":\"x\",\"lens\":\"authority\"}");
    assert_string_equal(nth_str(r, 0, "value"), "a");
    assert_string_equal(nth_str(r, 1, "value"), "c"); /* verified */
    assert_string_equal(nth_str(r, 2, "value"), "b"); /* community, 0.9 */
    json_decref(r);
    /* consensus: a = 0.5*5 = 2.5; b = 0.9*2 = 1.8; c = 0.7*2 + 0.6*3 = 3.2 */
    r = query(f->db, "{\"concept_path\":\"x\",\"lens\":\"consensus\"}");
    assert_int_equal(count_of(r), 1);
    assert_string_equal(nth_str(r, 0, "value"), "c");
    {
        json_t *it = json_array_get(json_object_get(r, "assertions"), 0);
        assert_int_equal(json_integer_value(json_object_get(it, "count")), 2);
        assert_int_equal(json_integer_value(json_object_get(it, "total")), 4);
        assert_int_equal(json_array_size(json_object_get(it, "dissenting")), 2);
        assert_true(json_real_value(json_object_get(it, "support")) > 3.19 &&
                    json_real_value(json_object_get(it, "support")) < 3.21);
    }
    json_decref(r);
}

static void test_db_predicate_and_subtree_filters(void **state)
{
    struct fx *f = *state;
    json_t *r;

    put(f->db, NULL,
        "{\"concept_path\":\"a/b\",\"predicate\":\"p\",\"value\":1}");
    put(f->db, NULL,
        "{\"concept_path\":\"a/b/c\",\"predicate\":\"q\",\"value\":2}");
    put(f->db, NULL,
        "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":3}");
    put(f->db, NULL,
        "{\"concept_path\":\"ab\",\"predicate\":\"p\",\"value\":4}");
    r = query(f->db, "{\"concept_path\":\"a/*\"}");
    assert_int_equal(count_of(r), 3);
    json_decref(r);
    r = query(f->db, "{\"concept_path\":\"a/b/*\",\"predicate\":\"q\"}");
    assert_int_equal(count_of(r), 1);
    json_decref(r);
    r = query(f->db, "{\"concept_path\":\"a/b\"}");
    assert_int_equal(count_of(r), 1);
    json_decref(r);
    r = query(f->db, "{\"concept_path\":\"nothing/here\"}");
    assert_int_equal(count_of(r), 0);
    assert_true(json_is_null(json_object_get(r, "next_cursor")));
    json_decref(r);
}

static void test_db_retract_cascades_through_source_and_derived(void **state)
{
    struct fx *f = *state;
    char s1[32], d1[32], d2[32], other[32];
    json_t *req, *out = NULL, *r;
    sdb_error err = {0};

    put(f->db, s1,
        "{\"concept_path\":\"drug/x\",\"predicate\":\"safe\",\"value\":true,"
        "\"source\":\"source/bad/42\"}");
    put(f->db, d1,
        "{\"concept_path\":\"drug/y\",\"predicate\":\"safe\",\"value\":true,"
        "\"derived_from\":[\"%s\"]}",
        s1);
    put(f->db, d2,
        "{\"concept_path\":\"drug/z\",\"predicate\":\"safe\",\"value\":true,"
        "\"derived_from\":[\"%s\"]}",
        d1);
    put(f->db, other,
        "{\"concept_path\":\"drug/w\",\"predicate\":\"safe\",\"value\":true,"
        "\"source\":\"source/badger\"}");
    req = tu_json("{\"concept_path\":\"source/bad\",\"reason\":\"quality\","
                  "\"cascade\":true}");
    assert_int_equal(sdb_retract_sync(f->db, req, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "retracted")), 3);
    json_decref(out);
    json_decref(req);
    r = query(f->db, "{\"concept_path\":\"drug/*\"}");
    assert_int_equal(count_of(r), 1);
    assert_string_equal(nth_str(r, 0, "id"), other);
    json_decref(r);
    r = query(f->db,
              "{\"concept_path\":\"drug/*\",\"include_retracted\":true}");
    assert_int_equal(count_of(r), 4);
    json_decref(r);
    assert_int_equal(sdb_get(f->db, d2, &out, &err), 0);
    assert_true(json_is_true(json_object_get(out, "retracted")));
    assert_non_null(json_object_get(out, "retracted_by"));
    json_decref(out);
    /* the retraction survives a restart without the snapshot */
    sdb_db_close(f->db);
    f->db = NULL;
    {
        char *snap = tu_printf("%s/db/indexes/index.snap", f->dir);
        unlink(snap);
        free(snap);
    }
    f->db = open_db(f->dir);
    r = query(f->db, "{\"concept_path\":\"drug/*\"}");
    assert_int_equal(count_of(r), 1);
    json_decref(r);
}

static void test_db_as_of_sees_the_past(void **state)
{
    struct fx *f = *state;
    char id[32], t[32];
    json_t *req, *out = NULL, *r;
    sdb_error err = {0};
    int64_t mid;

    put(f->db, id, "{\"concept_path\":\"t\",\"predicate\":\"p\",\"value\":1}");
    assert_int_equal(sdb_get(f->db, id, &out, &err), 0);
    assert_int_equal(
        sdb_time_parse(json_string_value(json_object_get(out, "timestamp")),
                       &mid),
        0);
    json_decref(out);
    nanosleep(&(struct timespec){0, 2000000}, NULL);
    put(f->db, NULL,
        "{\"concept_path\":\"t\",\"predicate\":\"p\",\"value\":2}");
    req = tu_json("{\"id\":\"%s\",\"reason\":\"wrong\"}", id);
    assert_int_equal(sdb_retract_sync(f->db, req, &out, &err), 0);
    json_decref(out);
    json_decref(req);
    r = query(f->db, "{\"concept_path\":\"t\"}");
    assert_int_equal(count_of(r), 1);
    json_decref(r);
    sdb_time_format(mid, t);
    r = query(f->db, "{\"concept_path\":\"t\",\"as_of\":\"%s\"}", t);
    assert_int_equal(count_of(r), 1);
    assert_string_equal(nth_str(r, 0, "id"), id);
    json_decref(r);
    r = query(f->db,
              "{\"concept_path\":\"t\",\"as_of\":\"2000-01-01T00:00:00Z\"}");
    assert_int_equal(count_of(r), 0);
    json_decref(r);
}

static void test_db_cursor_pages_are_stable_under_writes(void **state)
{
    struct fx *f = *state;
    json_t *r, *seen = json_object();
    char cur[256] = "";
    int pages = 0, total = 0;

    for (int i = 0; i < 95; i++)
        put(f->db, NULL,
            "{\"concept_path\":\"pg\",\"predicate\":\"p\",\"value\":%d,"
            "\"confidence\":%g}",
            i, (i % 10) / 10.0);
    do {
        if (cur[0])
            r = query(f->db,
                      "{\"concept_path\":\"pg\",\"lens\":\"confidence\","
                      "\"limit\":10,\"cursor\":\"%s\"}",
                      cur);
        else
            r = query(f->db, "{\"concept_path\":\"pg\",\"lens\":"
                             "\"confidence\",\"limit\":10}");
        for (size_t i = 0; i < count_of(r); i++) {
            const char *id = nth_str(r, i, "id");
            assert_null(json_object_get(seen, id));
            json_object_set_new(seen, id, json_true());
            total++;
        }
        /* writes between pages must not shift the pages */
        put(f->db, NULL,
            "{\"concept_path\":\"pg\",\"predicate\":\"p\",\"value\":-1,"
            "\"confidence\":0.95}");
        cur[0] = 0;
        if (json_is_string(json_object_get(r, "next_cursor")))
            snprintf(cur, sizeof(cur), "%s",
                     json_string_value(json_object_get(r, "next_cursor")));
        json_decref(r);
        pages++;
    } while (cur[0] && pages < 50);
    assert_int_equal(total, 95);
    assert_int_equal(pages, 10);
    json_decref(seen);
}

static void test_db_rejects_bad_requests_with_field(void **state)
{
    struct fx *f = *state;
    json_t *req, *out = NULL;
    sdb_error err = {0};

    req = tu_json(
        "{\"concept_path\":\"../etc\",\"predicate\":\"p\",\"value\":1}");
    assert_int_equal(sdb_assert_sync(f->db, req, &out, &err), SDB_EINVAL);
    assert_string_equal(err.field, "concept_path");
    json_decref(req);
    memset(&err, 0, sizeof(err));
    req = tu_json("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                  "\"derived_from\":[\"00000000000000ff00000000\"]}");
    assert_int_equal(sdb_assert_sync(f->db, req, &out, &err), SDB_EINVAL);
    assert_string_equal(err.field, "derived_from[0]");
    json_decref(req);
    memset(&err, 0, sizeof(err));
    req = tu_json("{\"id\":\"00000000000000ff00000000\",\"reason\":\"x\"}");
    assert_int_equal(sdb_retract_sync(f->db, req, &out, &err), SDB_ENOTFOUND);
    json_decref(req);
    req = tu_json("{\"concept_path\":\"*\",\"limit\":-1}");
    assert_int_equal(sdb_query(f->db, req, &out, &err), SDB_EINVAL);
    assert_string_equal(err.field, "limit");
    json_decref(req);
    req = tu_json("{\"concept_path\":\"*\",\"cursor\":\"c1.0.ffff.0.0.0\"}");
    assert_int_equal(sdb_query(f->db, req, &out, &err), SDB_EINVAL);
    json_decref(req);
}

struct writer_arg {
    sdb_db *db;
    int n, t;
    int ok;
};

static void *writer(void *p)
{
    struct writer_arg *w = p;

    for (int i = 0; i < w->n; i++) {
        char buf[256];
        json_t *req, *out = NULL;
        sdb_error err = {0};

        snprintf(buf, sizeof(buf),
                 "{\"concept_path\":\"w/%d\",\"predicate\":\"n\","
                 "\"value\":%d}",
                 w->t, i);
        req = json_loads(buf, 0, NULL);
        if (sdb_assert_sync(w->db, req, &out, &err) == 0)
            w->ok++;
        json_decref(out);
        json_decref(req);
    }
    return NULL;
}

static void test_db_group_commit_shares_fsyncs(void **state)
{
    struct fx *f = *state;
    pthread_t th[16];
    struct writer_arg wa[16];
    sdb_stats st;

    for (int t = 0; t < 16; t++) {
        wa[t] = (struct writer_arg){f->db, 200, t, 0};
        pthread_create(&th[t], NULL, writer, &wa[t]);
    }
    for (int t = 0; t < 16; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(wa[t].ok, 200);
    }
    sdb_db_stats(f->db, &st);
    assert_int_equal(st.assertion_count, 3200);
    assert_true(st.group_commits < 3200);
    assert_int_equal(st.group_commit_records, 3200);
    sdb_db_close(f->db);
    f->db = NULL;
    f->db = open_db(f->dir);
    sdb_db_stats(f->db, &st);
    assert_int_equal(st.assertion_count, 3200);
    assert_int_equal(st.last_lsn, 3200);
}

/* ---- sdb_assert_text ---- */

struct text_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
    char *text;
    size_t len;
    bool nul; /* text[len] was the promised NUL */
};

static void text_done(void *arg, int rc, const char *text, size_t len,
                      const sdb_error *err)
{
    struct text_wait *tw = arg;

    (void)err;
    pthread_mutex_lock(&tw->lock);
    tw->rc = rc;
    tw->text = text ? strndup(text, len) : NULL;
    tw->len = len;
    tw->nul = text && text[len] == '\0';
    tw->done = true;
    pthread_cond_signal(&tw->cond);
    pthread_mutex_unlock(&tw->lock);
}

/* Submit req through sdb_assert_text and wait; returns the text. */
static char *assert_text(sdb_db *db, const char *req_text)
{
    struct text_wait tw = {.lock = PTHREAD_MUTEX_INITIALIZER,
                           .cond = PTHREAD_COND_INITIALIZER};
    json_t *req = tu_json("%s", req_text);
    sdb_error err = {0};

    if (sdb_assert_text(db, req, text_done, &tw, &err) != 0)
        fail_msg("assert_text %s: %s", req_text, err.message);
    json_decref(req);
    pthread_mutex_lock(&tw.lock);
    while (!tw.done)
        pthread_cond_wait(&tw.cond, &tw.lock);
    pthread_mutex_unlock(&tw.lock);
    assert_int_equal(tw.rc, 0);
    assert_non_null(tw.text);
    assert_true(tw.nul);
    assert_int_equal(strlen(tw.text), tw.len);
    return tw.text;
}

/* The keys of o, in order, joined by commas. */
static void key_list(json_t *o, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (void *it = json_object_iter(o); it;
         it = json_object_iter_next(o, it)) {
        strncat(buf, json_object_iter_key(it), cap - strlen(buf) - 2);
        strcat(buf, ",");
    }
}

/* text parsed; it must be jansson's compact form with keys in this order */
static json_t *parse_text(const char *text, const char *keys_want)
{
    json_t *got = json_loads(text, 0, NULL);
    char *dump, keys[256];

    assert_non_null(got);
    dump = json_dumps(got, JSON_COMPACT);
    assert_string_equal(dump, text);
    free(dump);
    key_list(got, keys, sizeof(keys));
    assert_string_equal(keys, keys_want);
    return got;
}

/* sdb_assert_text's result: exactly the bytes json_dumps(JSON_COMPACT)
 * gives for {id,timestamp,lsn} (a batch: {assertions,count,lsn}), naming
 * the stored assertions; sdb_assert hands the same result over as JSON. */
static void test_db_assert_text_gives_the_json_result(void **state)
{
    struct fx *f = *state;
    const char *one = "{\"concept_path\":\"t/one\",\"predicate\":\"p\","
                      "\"value\":1}";
    const char *two = "{\"assertions\":[{\"concept_path\":\"t/two\","
                      "\"predicate\":\"p\",\"value\":2},{\"concept_path\":"
                      "\"t/two\",\"predicate\":\"p\",\"value\":3}]}";
    json_t *ref = NULL, *req, *got;
    char *text, keys[256];
    sdb_error err = {0};

    /* through sdb_assert: the JSON form */
    req = tu_json("%s", one);
    assert_int_equal(sdb_assert_sync(f->db, req, &ref, &err), 0);
    json_decref(req);
    key_list(ref, keys, sizeof(keys));
    assert_string_equal(keys, "id,timestamp,lsn,");
    assert_int_equal(json_integer_value(json_object_get(ref, "lsn")), 1);

    /* one assertion */
    text = assert_text(f->db, one);
    got = parse_text(text, "id,timestamp,lsn,");
    assert_int_equal(json_integer_value(json_object_get(got, "lsn")), 2);
    {
        json_t *a = NULL;
        assert_int_equal(sdb_get(f->db,
                                 json_string_value(json_object_get(got, "id")),
                                 &a, &err),
                         0);
        assert_string_equal(
            json_string_value(json_object_get(a, "timestamp")),
            json_string_value(json_object_get(got, "timestamp")));
        assert_string_equal(
            json_string_value(json_object_get(a, "concept_path")), "t/one");
        json_decref(a);
    }
    free(text);
    json_decref(got);

    /* a batch */
    text = assert_text(f->db, two);
    got = parse_text(text, "assertions,count,lsn,");
    key_list(json_array_get(json_object_get(got, "assertions"), 1), keys,
             sizeof(keys));
    assert_string_equal(keys, "id,timestamp,lsn,");
    assert_int_equal(json_integer_value(json_object_get(got, "count")), 2);
    assert_int_equal(json_array_size(json_object_get(got, "assertions")), 2);
    assert_int_equal(json_integer_value(json_object_get(got, "lsn")), 3);
    for (size_t i = 0; i < 2; i++) {
        json_t *item = json_array_get(json_object_get(got, "assertions"), i),
               *a;
        assert_int_equal(sdb_get(f->db,
                                 json_string_value(json_object_get(item, "id")),
                                 &a, &err),
                         0);
        assert_int_equal(json_integer_value(json_object_get(a, "value")),
                         2 + (json_int_t)i);
        assert_int_equal(json_integer_value(json_object_get(a, "lsn")),
                         json_integer_value(json_object_get(item, "lsn")));
        json_decref(a);
    }
    free(text);
    json_decref(got);
    json_decref(ref);
}

static void test_db_concepts_lists_children(void **state)
{
    struct fx *f = *state;
    json_t *out = NULL;
    sdb_error err = {0};

    put(f->db, NULL,
        "{\"concept_path\":\"m/a\",\"predicate\":\"p\",\"value\":1}");
    put(f->db, NULL,
        "{\"concept_path\":\"m/b/c\",\"predicate\":\"p\",\"value\":1}");
    assert_int_equal(sdb_concepts(f->db, "m", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "concepts")), 2);
    json_decref(out);
    assert_int_equal(sdb_concepts(f->db, "", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "concepts")), 1);
    json_decref(out);
    assert_int_equal(sdb_concepts(f->db, "zz", &out, &err), SDB_ENOTFOUND);
    assert_int_equal(sdb_concepts(f->db, "../x", &out, &err), SDB_EINVAL);
}

/* A concept created only by a write that never became durable is not
 * listed (its node exists in the index from the moment it was staged). */
static void test_db_concepts_hides_concepts_of_failed_writes(void **state)
{
    sdb_iosim *sim = sdb_iosim_new(7);
    char *dir = tu_mkdtemp("dbc");
    json_t *req, *out = NULL;
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db = NULL;

    (void)state;
    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    o.io = sdb_iosim_io(sim);
    assert_int_equal(sdb_db_open(&o, &db, &err), 0);
    put(db, NULL,
        "{\"concept_path\":\"kept/a\",\"predicate\":\"p\",\"value\":1}");
    sdb_iosim_fail(sim, SDB_IO_FDATASYNC,
                   sdb_iosim_calls(sim, SDB_IO_FDATASYNC) + 1, true, EIO);
    req = tu_json("{\"concept_path\":\"lost/b\",\"predicate\":\"p\","
                  "\"value\":2}");
    assert_int_equal(sdb_assert_sync(db, req, &out, &err), SDB_EREADONLY);
    json_decref(req);
    req = tu_json("{\"concept_path\":\"kept/new\",\"predicate\":\"p\","
                  "\"value\":3}");
    assert_int_equal(sdb_assert_sync(db, req, &out, &err), SDB_EREADONLY);
    json_decref(req);
    assert_int_equal(sdb_concepts(db, "", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "concepts")), 1);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(out, "concepts"), 0), "name")),
        "kept");
    assert_int_equal(
        json_integer_value(json_object_get(
            json_array_get(json_object_get(out, "concepts"), 0), "children")),
        1);
    json_decref(out);
    assert_int_equal(sdb_concepts(db, "kept", &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "concepts")), 1);
    json_decref(out);
    assert_int_equal(sdb_concepts(db, "lost", &out, &err), SDB_ENOTFOUND);
    sdb_db_close(db);
    sdb_iosim_free(sim);
    tu_rmrf(dir);
    free(dir);
}

static json_t *dump_all(sdb_db *db)
{
    return query(db, "{\"concept_path\":\"*\",\"limit\":10000,"
                     "\"include_retracted\":true}");
}

static void test_db_corrupt_snapshot_is_detected_and_rebuilt(void **state)
{
    struct fx *f = *state;
    char *snap = tu_printf("%s/db/indexes/index.snap", f->dir), *img;
    json_t *live, *rebuilt, *req, *out = NULL;
    sdb_error err = {0};
    char id[32];
    size_t len;

    for (int i = 0; i < 30; i++)
        put(f->db, id,
            "{\"concept_path\":\"k/%d\",\"predicate\":\"p\",\"value\":%d,"
            "\"source\":\"src/%d\"}",
            i % 4, i, i % 3);
    req = tu_json("{\"id\":\"%s\",\"reason\":\"x\"}", id);
    assert_int_equal(sdb_retract_sync(f->db, req, &out, &err), 0);
    json_decref(out);
    json_decref(req);
    live = dump_all(f->db);
    sdb_db_close(f->db);
    f->db = NULL;
    img = tu_read_file(snap, &len);
    assert_non_null(img);
    img[len / 2] ^= 0x01;
    assert_int_equal(tu_write_file(snap, img, len), 0);
    f->db = open_db(f->dir);
    rebuilt = dump_all(f->db);
    assert_true(json_equal(live, rebuilt));
    json_decref(rebuilt);
    /* the rebuilt index was persisted again and loads cleanly */
    sdb_db_close(f->db);
    f->db = NULL;
    free(img);
    img = tu_read_file(snap, &len);
    f->db = open_db(f->dir);
    rebuilt = dump_all(f->db);
    assert_true(json_equal(live, rebuilt));
    json_decref(rebuilt);
    json_decref(live);
    free(img);
    free(snap);
}

static int count_files(const char *dir, const char *prefix)
{
    char *cmd = tu_printf("ls '%s' 2>/dev/null | grep -c '^%s'", dir, prefix);
    FILE *p = popen(cmd, "r");
    int n = -1;

    if (p && fscanf(p, "%d", &n) != 1)
        n = -1;
    if (p)
        pclose(p);
    free(cmd);
    return n;
}

static void
test_db_wal_segments_switch_on_time_and_reach_the_archive(void **state)
{
    struct fx *f = *state;
    char *arch = tu_printf("%s-archive", f->dir), *wal;
    sdb_options o;
    sdb_error err = {0};
    sdb_stats st;

    sdb_db_close(f->db);
    f->db = NULL;
    sdb_options_init(&o, f->dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    o.wal_archive_dir = arch;
    o.wal_segment_timeout_ms = 300;
    o.checkpoint_interval_ms = 200;
    assert_int_equal(sdb_db_open(&o, &f->db, &err), 0);
    put(f->db, NULL,
        "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1}");
    /* within a bounded wait the timer seals the segment and it is copied */
    for (int i = 0; i < 100 && count_files(arch, "segment-") < 2; i++)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    assert_true(count_files(arch, "segment-") >= 2);
    assert_int_equal(count_files(arch, ".*tmp"), 0);
    put(f->db, NULL,
        "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":2}");
    sdb_db_stats(f->db, &st);
    assert_true(st.wal_segments_archived >= 2);
    /* checkpoints recycle archived segments: wal/ does not grow forever */
    for (int i = 0; i < 100; i++) {
        put(f->db, NULL,
            "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":3}");
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    wal = tu_printf("%s/wal", f->dir);
    assert_true(count_files(wal, "segment-") <= 3);
    assert_true(count_files(arch, "segment-") >= 4);
    /* the archive holds every LSN: the copies are complete segments */
    sdb_db_close(f->db);
    f->db = NULL;
    f->db = open_db(f->dir);
    sdb_db_stats(f->db, &st);
    assert_int_equal(st.assertion_count, 102);
    tu_rmrf(arch);
    free(arch);
    free(wal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_db_assert_then_query_returns_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_db_survives_reopen_and_index_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_db_second_open_is_refused_naming_the_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_lenses_order_results, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_db_predicate_and_subtree_filters,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_db_retract_cascades_through_source_and_derived, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_db_as_of_sees_the_past, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_db_cursor_pages_are_stable_under_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_rejects_bad_requests_with_field,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_group_commit_shares_fsyncs,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_db_assert_text_gives_the_json_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_db_concepts_lists_children, setup,
                                        teardown),
        cmocka_unit_test(test_db_concepts_hides_concepts_of_failed_writes),
        cmocka_unit_test_setup_teardown(
            test_db_corrupt_snapshot_is_detected_and_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_db_wal_segments_switch_on_time_and_reach_the_archive, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
