/*
 * test_scale.c - 100,000 concepts: writes in batches, a checkpoint that
 * syncs every new directory, reopen from the snapshot and from a rebuild,
 * all without running out of file descriptors (the fd cache is bounded).
 * SDB_SCALE_CONCEPTS overrides the count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "stemedb/stemedb.h"
#include "testutil.h"

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

static sdb_db *open_dir(const char *dir)
{
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db = NULL;

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    o.fd_cache_size = 64;
    if (sdb_db_open(&o, &db, &err) != 0)
        fail_msg("open: %s", err.message);
    return db;
}

static double t_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void phase(const char *what, double *t)
{
    double now = t_now();

    fprintf(stderr, "%-28s %.2f s\n", what, now - *t);
    *t = now;
}

static uint64_t concepts_in(sdb_db *db)
{
    sdb_stats st;

    sdb_db_stats(db, &st);
    return st.concept_count;
}

static void test_scale_hundred_thousand_concepts(void **state)
{
    const char *env = getenv("SDB_SCALE_CONCEPTS");
    int n = env ? atoi(env) : 100000;
    char *dir = tu_mkdtemp("scale"), *snap;
    struct rlimit rl = {256, 256};
    sdb_db *db;
    sdb_stats st;

    double t = t_now();

    (void)state;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    db = open_dir(dir);
    for (int b = 0; b < n; b += 1000) {
        json_t *list = json_array(), *req, *out = NULL;
        sdb_error err = {0};

        for (int i = b; i < b + 1000 && i < n; i++) {
            char path[64];
            snprintf(path, sizeof(path), "s/%d/%d", i % 100, i);
            json_array_append_new(
                list, json_pack("{s:s, s:s, s:i}", "concept_path", path,
                                "predicate", "n", "value", i));
        }
        req = json_pack("{s:o}", "assertions", list);
        if (sdb_assert_sync(db, req, &out, &err) != 0)
            fail_msg("batch %d: %s", b, err.message);
        json_decref(out);
        json_decref(req);
    }
    phase("write", &t);
    assert_int_equal(sdb_checkpoint(db), 0);
    phase("checkpoint", &t);
    sdb_db_stats(db, &st);
    assert_int_equal(st.assertion_count, (uint64_t)n);
    assert_int_equal(concepts_in(db), (uint64_t)n + 101);
    sdb_db_close(db);
    phase("close", &t);
    db = open_dir(dir);
    phase("open from snapshot", &t);
    sdb_db_stats(db, &st);
    assert_int_equal(st.assertion_count, (uint64_t)n);
    sdb_db_close(db);
    phase("close", &t);
    snap = tu_printf("%s/db/indexes/index.snap", dir);
    assert_int_equal(unlink(snap), 0);
    db = open_dir(dir);
    phase("open with rebuild", &t);
    sdb_db_stats(db, &st);
    assert_int_equal(st.assertion_count, (uint64_t)n);
    assert_int_equal(concepts_in(db), (uint64_t)n + 101);
    {
        json_t *q = json_pack("{s:s}", "concept_path", "s/7/99907"), *r = NULL;
        sdb_error err = {0};
        assert_int_equal(sdb_query(db, q, &r, &err), 0);
        assert_int_equal(json_array_size(json_object_get(r, "assertions")),
                         n > 99907 ? 1 : 0);
        json_decref(r);
        json_decref(q);
    }
    sdb_db_close(db);
    phase("close", &t);
    free(snap);
    tu_rmrf(dir);
    phase("remove the directory", &t);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_hundred_thousand_concepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
