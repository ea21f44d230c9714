/*
 * test_recovery.c - crash recovery from states a crash can leave: the WAL
 * cut at every byte of its last three records, a crash between the WAL
 * sync and the segment append, a crash in the middle of a segment append,
 * corruption before the tail (refused with file and offset), an LSN gap,
 * and replay twice giving the same state.
 *
 * Crash states are built from real stores: copy the directory after N
 * records ("before"), write three more, and graft the newer WAL onto the
 * older segments, exactly what a crash between the WAL fdatasync and the
 * segment writes leaves behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "stemedb/stemedb.h"
#include "testutil.h"
#include "wal.h"

#define BASE 20

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

static int open_dir(const char *dir, sdb_db **db, sdb_error *err)
{
    sdb_options o;

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    o.wal_segment_bytes = 1 << 20;
    o.checkpoint_interval_ms = 3600 * 1000; /* only explicit checkpoints */
    memset(err, 0, sizeof(*err));
    return sdb_db_open(&o, db, err);
}

static void put(sdb_db *db, int i)
{
    char buf[256];
    json_t *req, *out = NULL;
    sdb_error err = {0};

    snprintf(buf, sizeof(buf),
             "{\"concept_path\":\"r/%d\",\"predicate\":\"n\",\"value\":%d}",
             i % 5, i);
    req = json_loads(buf, 0, NULL);
    assert_int_equal(sdb_assert_sync(db, req, &out, &err), 0);
    json_decref(out);
    json_decref(req);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* The one WAL segment file of a data directory. */
static char *wal_file(const char *dir)
{
    char *wd = tu_printf("%s/wal", dir), *res = NULL;
    DIR *d = opendir(wd);
    struct dirent *de;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, "segment-", 8) == 0) {
            free(res);
            res = tu_printf("%s/%s", wd, de->d_name);
        }
    closedir(d);
    free(wd);
    assert_non_null(res);
    return res;
}

/* Offsets of the records in a WAL segment image. */
static size_t record_offsets(const unsigned char *buf, size_t len,
                             uint64_t seed, size_t *offs, size_t max)
{
    size_t off = SDB_WAL_HEADER_SIZE, n = 0, rl;
    uint64_t lsn;
    uint32_t cnt;

    while (n < max &&
           sdb_wal_check_record(buf, len, off, seed, &rl, &lsn, &cnt)) {
        offs[n++] = off;
        off += rl;
    }
    offs[n] = off;
    return n;
}

static uint64_t count_all(sdb_db *db)
{
    sdb_stats st;

    sdb_db_stats(db, &st);
    return st.assertion_count;
}

struct crash_fx {
    char *root, *before, *after;
};

/*
 * before: a store with BASE records, checkpointed, copied while open
 * after:  the same store with three more records (WAL only matters)
 */
static int crash_setup(void **state)
{
    struct crash_fx *f = calloc(1, sizeof(*f));
    sdb_db *db;
    sdb_error err;
    char *live;

    f->root = tu_mkdtemp("crash");
    live = tu_printf("%s/live", f->root);
    f->before = tu_printf("%s/before", f->root);
    f->after = tu_printf("%s/after", f->root);
    assert_int_equal(open_dir(live, &db, &err), 0);
    for (int i = 0; i < BASE; i++)
        put(db, i);
    assert_int_equal(sdb_checkpoint(db), 0);
    sh("cp -a '%s' '%s'", live, f->before);
    for (int i = BASE; i < BASE + 3; i++)
        put(db, i);
    sh("cp -a '%s' '%s'", live, f->after);
    sdb_db_close(db);
    free(live);
    *state = f;
    return 0;
}

static int crash_teardown(void **state)
{
    struct crash_fx *f = *state;

    tu_rmrf(f->root);
    free(f->root);
    free(f->before);
    free(f->after);
    free(f);
    return 0;
}

/* A crash state: the segments of `before` with the WAL of `after`. */
static char *graft(struct crash_fx *f, const char *name)
{
    char *dir = tu_printf("%s/%s", f->root, name);

    tu_rmrf(dir);
    sh("cp -a '%s' '%s' && rm -rf '%s/wal' && cp -a '%s/wal' '%s/wal' && "
       "rm -f '%s/LOCK'",
       f->before, dir, dir, f->after, dir, dir);
    return dir;
}

static void
test_recovery_wal_cut_at_every_offset_keeps_complete_records(void **state)
{
    struct crash_fx *f = *state;
    char *dir = graft(f, "cut"), *wf = wal_file(dir), *img;
    size_t len, offs[64], n;
    uint64_t seed;
    unsigned char *buf;

    img = tu_read_file(wf, &len);
    buf = (unsigned char *)img;
    seed = sdb_wal_seed(sdb_get_u64(buf + 16), sdb_get_u64(buf + 24));
    n = record_offsets(buf, len, seed, offs, 63);
    assert_true(n >= 3);
    for (size_t cut = offs[n - 3]; cut <= offs[n]; cut++) {
        char *d2 = graft(f, "cut2"), *w2 = wal_file(d2);
        unsigned char *copy = calloc(1, len);
        uint64_t expect = BASE;
        sdb_db *db = NULL;
        sdb_error err;

        memcpy(copy, buf, cut); /* the rest reads as zeros */
        assert_int_equal(tu_write_file(w2, copy, len), 0);
        for (size_t r = n - 3; r < n; r++)
            expect += offs[r + 1] <= cut;
        assert_int_equal(open_dir(d2, &db, &err), 0);
        if (count_all(db) != expect)
            fail_msg("cut at %zu: %llu assertions, expected %llu", cut,
                     (unsigned long long)count_all(db),
                     (unsigned long long)expect);
        sdb_db_close(db);
        free(copy);
        free(w2);
        free(d2);
    }
    free(img);
    free(wf);
    free(dir);
}

static void test_recovery_refuses_a_flipped_bit_before_the_tail(void **state)
{
    struct crash_fx *f = *state;
    char *dir = graft(f, "flip"), *wf = wal_file(dir), *img;
    size_t len, offs[64], n;
    unsigned char *buf;
    sdb_db *db = NULL;
    sdb_error err;
    char want[64];

    img = tu_read_file(wf, &len);
    buf = (unsigned char *)img;
    n = record_offsets(
        buf, len, sdb_wal_seed(sdb_get_u64(buf + 16), sdb_get_u64(buf + 24)),
        offs, 63);
    assert_true(n >= 3);
    buf[offs[n - 3] + 40] ^= 0x10; /* inside a record with two after it */
    assert_int_equal(tu_write_file(wf, buf, len), 0);
    assert_int_equal(open_dir(dir, &db, &err), SDB_ECORRUPT);
    assert_null(db);
    snprintf(want, sizeof(want), "offset %zu", offs[n - 3]);
    assert_non_null(strstr(err.message, want));
    assert_non_null(strstr(err.message, "segment-"));
    assert_non_null(strstr(err.message, "stemedb-fsck"));
    free(img);
    free(wf);
    free(dir);
}

static void test_recovery_refuses_an_lsn_gap(void **state)
{
    struct crash_fx *f = *state;
    char *dir = graft(f, "gap"), *wf = wal_file(dir), *img;
    size_t len;
    sdb_db *db = NULL;
    sdb_error err;

    /* metadata that claims a checkpoint far behind a WAL that starts late:
     * drop the WAL segment's first LSN forward by rewriting its header */
    img = tu_read_file(wf, &len);
    sdb_put_u64((unsigned char *)img + 32, 9999);
    sdb_put_u64((unsigned char *)img + 56, sdb_hash64(img, 56, 0));
    assert_int_equal(tu_write_file(wf, img, len), 0);
    assert_int_equal(open_dir(dir, &db, &err), SDB_ECORRUPT);
    assert_non_null(strstr(err.message, "LSN"));
    free(img);
    free(wf);
    free(dir);
}

static void test_recovery_between_wal_sync_and_segment_append(void **state)
{
    struct crash_fx *f = *state;
    char *dir = graft(f, "between");
    sdb_db *db = NULL;
    sdb_error err;
    json_t *q = json_pack("{s:s, s:i}", "concept_path", "*", "limit", 1000),
           *out = NULL;

    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    assert_int_equal(sdb_query(db, q, &out, &err), 0);
    assert_int_equal(json_array_size(json_object_get(out, "assertions")),
                     BASE + 3);
    json_decref(out);
    json_decref(q);
    sdb_db_close(db);
    free(dir);
}

static void test_recovery_in_the_middle_of_a_segment_append(void **state)
{
    struct crash_fx *f = *state;
    char *dir = graft(f, "middle");
    sdb_db *db = NULL;
    sdb_error err;

    /* half a record and half an idx entry at the end of concept r/0 */
    sh("cd '%s/db/r/0' && printf '\\x8b\\xa4type\\xa9asse' >> "
       "@seg-000001.msgpack && head -c 13 /dev/urandom >> @seg-000001.idx",
       dir);
    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    sdb_db_close(db);
    /* and it stays right after another restart, also when the index is
     * rebuilt from the segment files alone (no garbage left in them) */
    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    sdb_db_close(db);
    sh("rm -f '%s/db/indexes/index.snap'", dir);
    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    sdb_db_close(db);
    free(dir);
}

static json_t *dump(sdb_db *db)
{
    json_t *q = json_pack("{s:s, s:i, s:b}", "concept_path", "*", "limit",
                          10000, "include_retracted", 1),
           *out = NULL;
    sdb_error err;

    assert_int_equal(sdb_query(db, q, &out, &err), 0);
    json_decref(q);
    return out;
}

static void test_recovery_replaying_twice_gives_the_same_state(void **state)
{
    struct crash_fx *f = *state;
    char *a = graft(f, "twice_a"), *b;
    sdb_db *db = NULL;
    sdb_error err;
    json_t *first, *second, *third;

    b = tu_printf("%s/twice_b", f->root);
    sh("cp -a '%s' '%s'", a, b);
    assert_int_equal(open_dir(a, &db, &err), 0);
    first = dump(db);
    sdb_db_close(db);
    assert_int_equal(open_dir(a, &db, &err), 0);
    second = dump(db);
    sdb_db_close(db);
    /* a copy recovered without its snapshot rebuilds to the same state */
    sh("rm -f '%s/db/indexes/index.snap'", b);
    assert_int_equal(open_dir(b, &db, &err), 0);
    third = dump(db);
    sdb_db_close(db);
    assert_true(json_equal(first, second));
    assert_true(json_equal(first, third));
    assert_int_equal(json_array_size(json_object_get(first, "assertions")),
                     BASE + 3);
    json_decref(first);
    json_decref(second);
    json_decref(third);
    free(a);
    free(b);
}

/*
 * Power loss past the checkpoint kept a later record (r/1, r/2) in its
 * segment but lost an earlier one (r/0): the rebuild without a snapshot
 * must leave the records after the hole to the WAL, not trip on them.
 */
static void test_recovery_rebuild_with_a_hole_past_the_checkpoint(void **state)
{
    struct crash_fx *f = *state;
    char *dir = tu_printf("%s/hole", f->root);
    sdb_db *db = NULL;
    sdb_error err;

    tu_rmrf(dir);
    sh("cp -a '%s' '%s' && rm -f '%s/LOCK' '%s/db/indexes/index.snap' && "
       "cp '%s/db/r/0/'@seg-000001.* '%s/db/r/0/'",
       f->after, dir, dir, dir, f->before, dir);
    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    sdb_db_close(db);
    sh("rm -f '%s/db/indexes/index.snap'", dir);
    assert_int_equal(open_dir(dir, &db, &err), 0);
    assert_int_equal(count_all(db), BASE + 3);
    sdb_db_close(db);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_recovery_wal_cut_at_every_offset_keeps_complete_records),
        cmocka_unit_test(test_recovery_refuses_a_flipped_bit_before_the_tail),
        cmocka_unit_test(test_recovery_refuses_an_lsn_gap),
        cmocka_unit_test(test_recovery_between_wal_sync_and_segment_append),
        cmocka_unit_test(test_recovery_in_the_middle_of_a_segment_append),
        cmocka_unit_test(test_recovery_replaying_twice_gives_the_same_state),
        cmocka_unit_test(test_recovery_rebuild_with_a_hole_past_the_checkpoint),
    };
    return cmocka_run_group_tests(tests, crash_setup, crash_teardown);
}
