/*
 * fuse_writer.c - test helper for tests/integration/test_fuse_*.sh: writes
 * to and checks data directories through the engine's public API.
 *
 *   fuse_writer DIR fixture          escaped names, a deep path, retractions
 *   fuse_writer DIR assert N [C]     N assertions in batches of 10, spread
 *                                    over C concepts (default 37)
 *   fuse_writer DIR loop SECS FILE   write until SECS pass or FILE.stop
 *                                    exists; after every committed batch
 *                                    FILE holds the count
 *   fuse_writer DIR count            open (recovery included), print the
 *                                    assertion count; exit 1 if it fails
 *   fuse_writer DIR query PATH       print the current assertions at PATH
 *   fuse_writer DIR clean            (no open) every file of DIR ends exactly
 *                                    at a committed record and nothing else
 *                                    is there; exit 1 naming each offender
 *
 * Stores are opened with a small WAL segment size and short checkpoint and
 * segment intervals, so checkpoints, WAL switches and recycling happen
 * during the tests.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

static sdb_db *open_db(const char *dir)
{
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db = NULL;

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.wal_segment_bytes = 256u << 10;
    o.wal_segment_timeout_ms = 500;
    o.checkpoint_interval_ms = 300;
    o.log_level = SDB_LOG_WARN;
    if (sdb_db_open(&o, &db, &err) < 0) {
        fprintf(stderr, "fuse_writer: open %s: %s\n", dir, err.message);
        return NULL;
    }
    return db;
}

static int assert_one(sdb_db *db, const char *path, const char *pred,
                      json_t *value, char *id_out)
{
    json_t *req = json_pack("{s:s, s:s, s:o}", "concept_path", path,
                            "predicate", pred, "value", value),
           *res = NULL;
    sdb_error err = {0};
    int rc = sdb_assert_sync(db, req, &res, &err);

    if (rc < 0)
        fprintf(stderr, "fuse_writer: assert %s: %s\n", path, err.message);
    else if (id_out)
        snprintf(id_out, 32, "%s",
                 json_string_value(json_object_get(res, "id")));
    json_decref(req);
    json_decref(res);
    return rc;
}

static int retract(sdb_db *db, json_t *req)
{
    json_t *res = NULL;
    sdb_error err = {0};
    int rc = sdb_retract_sync(db, req, &res, &err);

    if (rc < 0)
        fprintf(stderr, "fuse_writer: retract: %s\n", err.message);
    json_decref(req);
    json_decref(res);
    return rc;
}

/* The data the mount tests browse (test_fuse_mount.sh knows it). */
static int fixture(sdb_db *db)
{
    char id[32];
    int rc = 0;

    rc |= assert_one(db, "medicine/aspirin/dosage", "max_daily_mg",
                     json_integer(4000), NULL);
    rc |= assert_one(db, "medicine/aspirin/dosage", "min_age", json_integer(16),
                     NULL);
    rc |= assert_one(db, "medicine/aspirin/dosage", "bad_claim",
                     json_string("retract me"), id);
    rc |= retract(db, json_pack("{s:s, s:s}", "id", id, "reason", "wrong"));
    rc |= assert_one(db, "medicine/ibuprofen", "max_daily_mg",
                     json_integer(3200), NULL);
    rc |= assert_one(db, "medicine/ibuprofen", "gone", json_true(), NULL);
    rc |= retract(db, json_pack("{s:s, s:s, s:s}", "concept_path",
                                "medicine/ibuprofen", "predicate", "gone",
                                "reason", "test"));
    rc |= assert_one(db, "a/b/c/d/e/f/g/h", "deep", json_integer(8), NULL);
    rc |= assert_one(db, "indexes", "reserved_top", json_integer(1), NULL);
    rc |= assert_one(db, "has space/x:y", "odd", json_string("chars"), NULL);
    rc |= assert_one(db, "pct%41", "percent", json_integer(41), NULL);
    rc |= assert_one(db, "assertions.json", "clash", json_integer(2), NULL);
    rc |= assert_one(db, "@at", "leading_at", json_integer(9), NULL);
    rc |= assert_one(db, ".hidden", "dot", json_integer(0), NULL);
    rc |= assert_one(db, "caf\xc3\xa9", "utf8", json_string("ok"), NULL);
    return rc ? 1 : 0;
}

static int n_concepts = 37;

static int assert_batch(sdb_db *db, int n, int seq)
{
    json_t *list = json_array(), *req, *res = NULL;
    char path[64];
    sdb_error err = {0};
    int rc;

    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "load/c%02d/x", (seq + i) % n_concepts);
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:i, s:s}", "concept_path",
                                        path, "predicate", "n", "value",
                                        seq + i, "source", "source/test"));
    }
    req = json_pack("{s:o}", "assertions", list);
    rc = sdb_assert_sync(db, req, &res, &err);
    if (rc < 0)
        fprintf(stderr, "fuse_writer: batch: %s\n", err.message);
    json_decref(req);
    json_decref(res);
    return rc;
}

static int write_count(const char *file, long count)
{
    char tmp[4200];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    if (!(f = fopen(tmp, "w")))
        return -1;
    fprintf(f, "%ld\n", count);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, file);
}

static int loop(sdb_db *db, double secs, const char *file)
{
    struct timespec t0, t;
    long total = 0;
    sdb_stats st;
    char stop[4200];

    sdb_db_stats(db, &st);
    total = (long)st.assertion_count;
    snprintf(stop, sizeof(stop), "%s.stop", file);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int seq = 0; access(stop, F_OK) != 0; seq += 10) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) +
                (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >
            secs)
            break;
        if (assert_batch(db, 10, seq) < 0)
            return 1;
        total += 10;
        if (write_count(file, total) < 0)
            return 1;
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    return 0;
}

static int query(sdb_db *db, const char *path)
{
    json_t *req = json_pack("{s:s, s:i}", "concept_path", path, "limit", 1000),
           *res = NULL;
    sdb_error err = {0};
    int rc = sdb_query(db, req, &res, &err);

    if (rc == 0)
        json_dumpf(res, stdout, JSON_COMPACT), putchar('\n');
    else
        fprintf(stderr, "fuse_writer: query: %s\n", err.message);
    json_decref(req);
    json_decref(res);
    return rc < 0;
}

/* ---- clean: compare a copy's files with the view's committed cut ---- */

struct walk {
    sdb_view_cut *cut;
    const char *root;
    long shown, bad;
};

static int walk_cb(void *arg, const char *name, const sdb_view_stat *vs);

static int walk_dir(struct walk *w, const char *rel)
{
    return sdb_view_list(w->cut, rel, walk_cb, w);
}

static __thread const char *walk_rel;

static int walk_cb(void *arg, const char *name, const sdb_view_stat *vs)
{
    struct walk *w = arg;
    char rel[4200], path[8400];
    const char *parent = walk_rel;
    struct stat st;

    snprintf(rel, sizeof(rel), "%s%s%s", parent, *parent ? "/" : "", name);
    if (vs->is_dir) {
        int rc;
        walk_rel = rel;
        rc = walk_dir(w, rel);
        walk_rel = parent;
        return rc;
    }
    snprintf(path, sizeof(path), "%s/%s", w->root, rel);
    w->shown++;
    if (stat(path, &st) < 0 || (uint64_t)st.st_size != vs->size) {
        printf("not clean: %s is %lld bytes, committed %" PRIu64 "\n", rel,
               (long long)st.st_size, vs->size);
        w->bad++;
    }
    return 0;
}

static long n_files;
static int count_file(const char *p, const struct stat *st, int flag,
                      struct FTW *f)
{
    (void)p, (void)st, (void)f;
    n_files += flag == FTW_F;
    return 0;
}

static int clean(const char *dir)
{
    struct walk w = {NULL, dir, 0, 0};
    sdb_view *v;
    int rc = sdb_view_open(dir, &v);

    if (rc == 0)
        rc = sdb_view_cut_new(v, false, &w.cut);
    walk_rel = "";
    if (rc == 0)
        rc = walk_dir(&w, "");
    if (rc == 0 && nftw(dir, count_file, 16, FTW_PHYS) != 0)
        rc = -1;
    if (rc == 0 && n_files != w.shown) {
        printf("not clean: %ld files but %ld committed ones\n", n_files,
               w.shown);
        w.bad++;
    }
    sdb_view_cut_unref(w.cut);
    sdb_view_close(v);
    if (rc < 0)
        fprintf(stderr, "fuse_writer: clean %s: %s\n", dir, sdb_strerror(rc));
    return rc < 0 || w.bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    sdb_db *db;
    sdb_stats st;
    int rc = 2;

    if (argc >= 3 && !strcmp(argv[2], "clean"))
        return clean(argv[1]);

    if (argc < 3) {
        fprintf(stderr, "usage: fuse_writer DIR fixture|assert N|loop SECS "
                        "FILE|count|query PATH\n");
        return 2;
    }
    if (!(db = open_db(argv[1])))
        return 1;
    if (!strcmp(argv[2], "fixture")) {
        rc = fixture(db);
    } else if (!strcmp(argv[2], "assert") && argc > 3) {
        int n = atoi(argv[3]);
        if (argc > 4 && atoi(argv[4]) > 0)
            n_concepts = atoi(argv[4]);
        rc = 0;
        for (int i = 0; rc == 0 && i < n; i += 10)
            rc = assert_batch(db, n - i < 10 ? n - i : 10, i) < 0;
    } else if (!strcmp(argv[2], "loop") && argc > 4) {
        rc = loop(db, atof(argv[3]), argv[4]);
    } else if (!strcmp(argv[2], "count")) {
        sdb_db_stats(db, &st);
        printf("%" PRIu64 "\n", st.assertion_count);
        rc = 0;
    } else if (!strcmp(argv[2], "query") && argc > 3) {
        rc = query(db, argv[3]);
    }
    if (sdb_db_close(db) < 0)
        rc = 1;
    return rc;
}
