/*
 * test_query.c - the read path's pages: sdb_query_text gives exactly
 * json_dumps(sdb_query(...)) plus a newline for every lens, scope,
 * predicate, limit, as_of and include_retracted; paging with cursors at
 * any limit walks the same items as one big page; pages are in lens order
 * and hold exactly the visible assertions; a page whose records
 * are not side by side on disk reads back intact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stemedb/stemedb.h"
#include "testutil.h"

#define N_PUT 400

static const char *const concepts[] = {"t/a", "t/b", "t/b/c", "t/b/c/d",
                                       "t/e", "u/x", "u"};
static const char *const tiers[] = {"unverified", "community", "verified",
                                    "expert", "authoritative"};
static const double confs[] = {0.1, 0.5, 0.75, 1.0, 0.3333333333333333};

struct fx {
    char *dir;
    sdb_db *db;
    char ids[N_PUT][32];
    int concept[N_PUT], pred[N_PUT];
    bool retracted[N_PUT];
    char mid_time[40]; /* a timestamp between the two halves */
};

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    if (level <= SDB_LOG_WARN)
        fprintf(stderr, "[db] %s\n", msg);
}

static void put_one(struct fx *f, int i, uint64_t *rs)
{
    uint64_t r = tu_rand(rs);
    char value[128], extra[128] = "";
    json_t *req, *out = NULL;
    sdb_error err = {0};

    f->concept[i] = (int)(r % 7);
    f->pred[i] = (int)(r >> 8) % 3;
    switch ((r >> 16) % 4) {
    case 0:
        snprintf(value, sizeof(value), "%d", (int)(r >> 24) % 1000 - 500);
        break;
    case 1:
        snprintf(value, sizeof(value), "%.3f", (double)(r >> 24 & 0xffff));
        break;
    case 2:
        snprintf(value, sizeof(value), "\"s\\n\\\"%d\\u00e9\"",
                 (int)(r >> 24) % 9);
        break;
    default:
        snprintf(value, sizeof(value), "{\"k\":[1,2.5,null,true],\"z\":%d}",
                 (int)(r >> 24) % 3);
    }
    if (i > 0 && (r >> 40) % 4 == 0)
        snprintf(extra, sizeof(extra), ",\"derived_from\":[\"%s\"]",
                 f->ids[(r >> 42) % (unsigned)i]);
    else if ((r >> 40) % 4 == 1)
        snprintf(extra, sizeof(extra), ",\"source\":\"source/s%d\"",
                 (int)(r >> 44) % 3);
    req = tu_json("{\"concept_path\":\"%s\",\"predicate\":\"p%d\",\"value\":%s,"
                  "\"confidence\":%.17g,\"authority_tier\":\"%s\"%s}",
                  concepts[f->concept[i]], f->pred[i], value,
                  confs[(r >> 50) % 5], tiers[(r >> 53) % 5], extra);
    if (sdb_assert_sync(f->db, req, &out, &err) != 0)
        fail_msg("assert: %s", err.message);
    snprintf(f->ids[i], 32, "%s",
             json_string_value(json_object_get(out, "id")));
    if (i == N_PUT / 2)
        snprintf(f->mid_time, sizeof(f->mid_time), "%s",
                 json_string_value(json_object_get(out, "timestamp")));
    json_decref(out);
    json_decref(req);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    uint64_t rs = tu_seed(0x9e77);
    sdb_options o;
    sdb_error err = {0};

    f->dir = tu_mkdtemp("query");
    sdb_options_init(&o, f->dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    if (sdb_db_open(&o, &f->db, &err) != 0)
        fail_msg("open: %s", err.message);
    for (int i = 0; i < N_PUT; i++)
        put_one(f, i, &rs);
    /* retract every 7th by id */
    for (int i = 3; i < N_PUT; i += 7) {
        json_t *req = tu_json("{\"id\":\"%s\",\"reason\":\"test\"}", f->ids[i]),
               *out = NULL;
        if (sdb_retract_sync(f->db, req, &out, &err) != 0)
            fail_msg("retract: %s", err.message);
        f->retracted[i] = true;
        json_decref(out);
        json_decref(req);
    }
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

/* Run req both ways; the text must be the tree's dump plus "\n". */
static json_t *both_ways(sdb_db *db, const char *req_text)
{
    json_t *req = tu_json("%s", req_text), *out = NULL;
    sdb_error err = {0}, err2 = {0};
    char *text = NULL, *dump;
    size_t len = 0;
    int rc = sdb_query(db, req, &out, &err);

    assert_int_equal(sdb_query_text(db, req, &text, &len, &err2), rc);
    json_decref(req);
    if (rc != 0) {
        assert_null(text);
        assert_int_equal(err.code, err2.code);
        return NULL;
    }
    dump = json_dumps(out, JSON_COMPACT);
    assert_non_null(dump);
    assert_int_equal(len, strlen(dump) + 1);
    if (strncmp(dump, text, strlen(dump)) != 0 || text[len - 1] != '\n')
        fail_msg("request %s\njson: %s\ntext: %s", req_text, dump, text);
    free(dump);
    free(text);
    return out;
}

static void test_query_text_equals_the_json_dump_everywhere(void **state)
{
    static const char *const lenses[] = {"recency", "confidence", "authority",
                                         "consensus"};
    static const char *const paths[] = {"t/a", "t/*", "*",    "t/b/*",
                                        "u",   "u/*", "nope", "t/b/c/d"};
    static const char *const preds[] = {"", ",\"predicate\":\"p1\"",
                                        ",\"predicate\":\"none\""};
    static const int limits[] = {1, 3, 10, 10000};
    struct fx *f = *state;
    char req[512], *as_of = tu_printf(",\"as_of\":\"%s\"", f->mid_time);
    int n = 0;

    for (size_t l = 0; l < 4; l++)
        for (size_t p = 0; p < 8; p++)
            for (size_t d = 0; d < 3; d++)
                for (size_t k = 0; k < 4; k++)
                    for (int inc = 0; inc < 2; inc++) {
                        snprintf(req, sizeof(req),
                                 "{\"concept_path\":\"%s\",\"lens\":\"%s\","
                                 "\"limit\":%d%s%s%s}",
                                 paths[p], lenses[l], limits[k], preds[d],
                                 inc ? ",\"include_retracted\":true" : "",
                                 k == 2 ? as_of : "");
                        json_decref(both_ways(f->db, req));
                        n++;
                    }
    assert_int_equal(n, 768);
    free(as_of);
    /* errors are the same both ways */
    assert_null(
        both_ways(f->db, "{\"concept_path\":\"t/a\",\"cursor\":\"x\"}"));
    assert_null(both_ways(f->db, "{\"concept_path\":\"../a\"}"));
}

/* Sort key of an item for a lens, larger first. */
static int item_cmp(const json_t *a, const json_t *b, const char *lens)
{
    static const char *const order[] = {"unverified", "community", "verified",
                                        "expert", "authoritative"};
    double ca = json_real_value(json_object_get(a, "confidence"));
    double cb = json_real_value(json_object_get(b, "confidence"));
    int ta = 0, tb = 0;

    for (int i = 0; i < 5; i++) {
        const char *t = order[i];
        if (!strcmp(json_string_value(json_object_get(a, "authority_tier")), t))
            ta = i;
        if (!strcmp(json_string_value(json_object_get(b, "authority_tier")), t))
            tb = i;
    }
    if (!strcmp(lens, "authority") && ta != tb)
        return ta > tb ? -1 : 1;
    if (strcmp(lens, "recency") != 0 && ca != cb)
        return ca > cb ? -1 : 1;
    return json_integer_value(json_object_get(a, "lsn")) >
                   json_integer_value(json_object_get(b, "lsn"))
               ? -1
               : 1;
}

/* How many of the stored assertions a query should see. */
static size_t expected_count(const struct fx *f, const char *path, int pred,
                             bool inc)
{
    size_t n = 0, pl = strlen(path);

    for (int i = 0; i < N_PUT; i++) {
        const char *c = concepts[f->concept[i]];
        bool in;
        if (!strcmp(path, "*"))
            in = true;
        else if (path[pl - 1] == '*')
            in = !strncmp(c, path, pl - 2) &&
                 (c[pl - 2] == 0 || c[pl - 2] == '/');
        else
            in = !strcmp(c, path);
        n +=
            in && (pred < 0 || f->pred[i] == pred) && (inc || !f->retracted[i]);
    }
    return n;
}

static void test_query_pages_chain_to_the_full_ordered_list(void **state)
{
    static const char *const lenses[] = {"recency", "confidence", "authority"};
    static const char *const paths[] = {"t/*", "*", "t/b", "u/*"};
    static const int limits[] = {1, 2, 7, 50};
    struct fx *f = *state;
    char req[512];

    for (size_t l = 0; l < 3; l++)
        for (size_t p = 0; p < 4; p++)
            for (int pred = -1; pred < 2; pred += 2) {
                char pr[32] = "";
                json_t *full, *items;
                if (pred >= 0)
                    snprintf(pr, sizeof(pr), ",\"predicate\":\"p%d\"", pred);
                snprintf(req, sizeof(req),
                         "{\"concept_path\":\"%s\",\"lens\":\"%s\","
                         "\"limit\":10000%s}",
                         paths[p], lenses[l], pr);
                full = both_ways(f->db, req);
                items = json_object_get(full, "assertions");
                assert_int_equal(json_array_size(items),
                                 expected_count(f, paths[p], pred, false));
                assert_true(json_is_null(json_object_get(full, "next_cursor")));
                for (size_t i = 1; i < json_array_size(items); i++)
                    assert_true(item_cmp(json_array_get(items, i - 1),
                                         json_array_get(items, i),
                                         lenses[l]) < 0);
                for (size_t k = 0; k < 4; k++) {
                    char cur[256] = "";
                    size_t at = 0;
                    for (int guard = 0; guard < 1000; guard++) {
                        json_t *page, *pi, *next;
                        snprintf(req, sizeof(req),
                                 "{\"concept_path\":\"%s\",\"lens\":\"%s\","
                                 "\"limit\":%d%s%s%s%s}",
                                 paths[p], lenses[l], limits[k], pr,
                                 cur[0] ? ",\"cursor\":\"" : "", cur,
                                 cur[0] ? "\"" : "");
                        page = both_ways(f->db, req);
                        pi = json_object_get(page, "assertions");
                        for (size_t i = 0; i < json_array_size(pi); i++, at++)
                            assert_string_equal(
                                json_string_value(json_object_get(
                                    json_array_get(pi, i), "id")),
                                json_string_value(json_object_get(
                                    json_array_get(items, at), "id")));
                        next = json_object_get(page, "next_cursor");
                        if (json_is_null(next)) {
                            json_decref(page);
                            break;
                        }
                        assert_int_equal(json_array_size(pi), limits[k]);
                        snprintf(cur, sizeof(cur), "%s",
                                 json_string_value(next));
                        json_decref(page);
                    }
                    assert_int_equal(at, json_array_size(items));
                }
                json_decref(full);
            }
}

static void test_query_reads_records_with_gaps_between_them(void **state)
{
    struct fx *f = *state;
    char big[3000];
    json_t *r, *items;
    sdb_error err = {0};

    /* one concept, predicates p and q in turn, records small or ~3 KiB:
     * the p records have gaps that one read bridges and gaps it must not */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    for (int i = 0; i < 40; i++) {
        json_t *a = tu_json("{\"concept_path\":\"big/a\",\"predicate\":\"%s\","
                            "\"value\":\"%d:%s\"}",
                            i % 2 ? "q" : "p", i, i % 8 < 4 ? big : "small"),
               *out = NULL;
        assert_int_equal(sdb_assert_sync(f->db, a, &out, &err), 0);
        json_decref(out);
        json_decref(a);
    }
    r = both_ways(f->db, "{\"concept_path\":\"big/a\",\"predicate\":\"p\","
                         "\"limit\":40}");
    items = json_object_get(r, "assertions");
    assert_int_equal(json_array_size(items), 20);
    for (int k = 0; k < 20; k++) {
        int i = 38 - 2 * k;
        const char *v = json_string_value(
            json_object_get(json_array_get(items, (size_t)k), "value"));
        assert_int_equal(atoi(v), i);
        assert_string_equal(strchr(v, ':') + 1, i % 8 < 4 ? big : "small");
    }
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_query_text_equals_the_json_dump_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_query_pages_chain_to_the_full_ordered_list, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_query_reads_records_with_gaps_between_them, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
