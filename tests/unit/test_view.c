/*
 * test_view.c - unit tests for src/view.c: shown names of concept
 * directories (round trip, no collisions), cuts that stop at committed
 * records (torn WAL and idx tails hidden, later records excluded, recycled
 * WAL files still readable), the classes of cuts and their check against
 * segments changed by hand, assertions.json contents and health.json.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "path.h"
#include "stemedb/stemedb.h"
#include "testutil.h"

struct fx {
    char *dir;
    sdb_db *db;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    sdb_options o;

    f->dir = tu_mkdtemp("view");
    sdb_options_init(&o, f->dir);
    o.flags = SDB_OPEN_CREATE;
    o.wal_segment_bytes = 64u << 10;
    o.checkpoint_interval_ms = 3600000;
    o.log_level = SDB_LOG_ERROR;
    assert_int_equal(sdb_db_open(&o, &f->db, NULL), 0);
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

static char *put(sdb_db *db, const char *path, const char *pred, int v)
{
    json_t *req = json_pack("{s:s, s:s, s:i}", "concept_path", path,
                            "predicate", pred, "value", v),
           *res = NULL;
    char *id;

    assert_int_equal(sdb_assert_sync(db, req, &res, NULL), 0);
    id = strdup(json_string_value(json_object_get(res, "id")));
    json_decref(req);
    json_decref(res);
    return id;
}

static uint64_t stat_size(sdb_view_cut *c, const char *rel)
{
    sdb_view_stat st;

    assert_int_equal(sdb_view_stat_path(c, rel, &st), 0);
    return st.size;
}

/* The name of the only (or newest) WAL file. */
static char *wal_rel(const char *dir)
{
    char *wd = tu_printf("%s/wal", dir), *best = NULL;
    FILE *p;
    char cmd[4300], line[256];

    snprintf(cmd, sizeof(cmd), "ls %s | tail -1", wd);
    p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\n")] = 0;
        best = tu_printf("wal/%s", line);
    }
    pclose(p);
    free(wd);
    assert_non_null(best);
    return best;
}

static void append_bytes(const char *path, const char *bytes, size_t n,
                         long long at)
{
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, (off_t)at), (ssize_t)n);
    close(fd);
}

static void expect_shown(const char *escaped, bool top, const char *want)
{
    char out[256];

    assert_int_equal(sdb_view_shown_name(escaped, top, out, sizeof(out)), 0);
    assert_string_equal(out, want);
}

static void expect_resolve(const char *shown, int rc, const char *want)
{
    char out[1100];

    assert_int_equal(sdb_view_concept_resolve(shown, out, sizeof(out)), rc);
    if (rc == 0)
        assert_string_equal(out, want);
}

static void test_view_shown_names_unescape_plain_names_only(void **state)
{
    (void)state;
    expect_shown("aspirin", true, "aspirin");
    expect_shown("has%20space", false, "has space");
    expect_shown("x%3Ay", false, "x:y");
    expect_shown("caf\xc3\xa9", true, "caf\xc3\xa9");
    expect_shown("%69ndexes", true, "indexes");
    expect_shown("%40at", true, "%40at");
    expect_shown("pct%2541", true, "pct%2541");
    expect_shown("assertions.json", false, "%61ssertions.json");
    expect_shown("%2E", false, "%2E");
    expect_shown("%2E.", false, "%2E.");
    char out[64];
    assert_int_equal(sdb_view_shown_name("bad%zz", false, out, sizeof out),
                     SDB_EINVAL);
    assert_int_equal(
        sdb_view_shown_name("@seg-000001.idx", false, out, sizeof out),
        SDB_EINVAL);
}

static void test_view_resolve_inverts_shown_names(void **state)
{
    (void)state;
    expect_resolve("has space/x:y", 0, "has space/x:y");
    expect_resolve("pct%2541", 0, "pct%41");
    expect_resolve("%61ssertions.json", 0, "assertions.json");
    expect_resolve("%40at/b", 0, "@at/b");
    expect_resolve("indexes", 0, "indexes");
    expect_resolve("assertions.json", SDB_ENOTFOUND, NULL);
    expect_resolve("pct%41", SDB_ENOTFOUND, NULL); /* shown as pctA */
    expect_resolve("a%2Fb", SDB_ENOTFOUND, NULL);
    expect_resolve("%ZZ", SDB_ENOTFOUND, NULL);
    expect_resolve("%", SDB_ENOTFOUND, NULL);
    expect_resolve("@at", SDB_ENOTFOUND, NULL);
    expect_resolve("", SDB_ENOTFOUND, NULL);
}

/* Random components: shown -> resolve is the identity, shown names differ. */
static void test_view_shown_names_round_trip_randomly(void **state)
{
    uint64_t seed = tu_seed(42);
    const char alphabet[] = "aZ09_-.%@: ~!#\xc3\xa9/";

    (void)state;
    for (int i = 0; i < 5000; i++) {
        char comp[16], esc[256], shown[256], back[1100], again[256];
        size_t n = 1 + tu_rand(&seed) % 8;
        for (size_t k = 0; k < n; k++)
            comp[k] = alphabet[tu_rand(&seed) % (sizeof(alphabet) - 1)];
        comp[n] = 0;
        if (strchr(comp, '/') ||
            sdb_path_escape_component(comp, n, true, esc, sizeof(esc)) < 0 ||
            sdb_view_shown_name(esc, true, shown, sizeof(shown)) < 0)
            continue; /* not a valid component (e.g. broken UTF-8) */
        assert_null(strchr(shown, '/'));
        assert_true(strcmp(shown, "assertions.json") && shown[0] != '@');
        assert_int_equal(sdb_view_concept_resolve(shown, back, sizeof(back)),
                         0);
        assert_string_equal(back, comp);
        assert_int_equal(sdb_path_escape_component(back, strlen(back), true,
                                                   again, sizeof(again)),
                         (int)strlen(esc));
    }
}

static void test_view_wal_is_cut_at_its_last_valid_record(void **state)
{
    struct fx *f = *state;
    char *rel, *path, *seg;
    uint64_t len, len2, seglen;

    free(put(f->db, "m/a", "p", 1));
    free(put(f->db, "m/a", "q", 2));
    assert_int_equal(sdb_db_close(f->db), 0);
    f->db = NULL;
    rel = wal_rel(f->dir);
    path = tu_printf("%s/%s", f->dir, rel);
    assert_int_equal(sdb_view_committed_length(f->dir, rel, &len), 0);
    assert_true(len >= 64 && (long long)len < tu_file_size(path));
    /* a torn record after it is not committed */
    append_bytes(path, "SMDR\x01\0\0\0\x10\0\0\0", 12, (long long)len);
    assert_int_equal(sdb_view_committed_length(f->dir, rel, &len2), 0);
    assert_int_equal(len2, len);
    /* nor is a torn idx entry or record of a segment */
    seg = tu_printf("%s/db/m/a/@seg-000001.idx", f->dir);
    assert_int_equal(
        sdb_view_committed_length(f->dir, "db/m/a/@seg-000001.idx", &seglen),
        0);
    assert_int_equal((long long)seglen, tu_file_size(seg));
    append_bytes(seg, "garbage-entry", 13, tu_file_size(seg));
    assert_int_equal(
        sdb_view_committed_length(f->dir, "db/m/a/@seg-000001.idx", &len2), 0);
    assert_int_equal(len2, seglen);
    assert_int_equal(sdb_view_committed_length(f->dir, "LOCK", &len2),
                     SDB_ENOTFOUND);
    free(seg);
    free(path);
    free(rel);
}

static void test_view_cut_excludes_later_records(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    sdb_view_cut *c, *c2;
    const char *seg = "db/m/a/@seg-000001.msgpack";
    uint64_t s1, w1;
    char *rel;

    free(put(f->db, "m/a", "p", 1));
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c), 0);
    rel = wal_rel(f->dir);
    s1 = stat_size(c, seg);
    w1 = stat_size(c, rel);
    assert_true(s1 > 0);
    free(put(f->db, "m/a", "p", 2));
    free(put(f->db, "m/a", "p", 3));
    assert_int_equal(stat_size(c, seg), s1); /* still the old cut */
    assert_int_equal(stat_size(c, rel), w1);
    assert_int_equal(sdb_view_cut_new(v, false, &c2), 0);
    assert_true(stat_size(c2, seg) > s1);
    assert_true(sdb_view_cut_lsn(c2) == sdb_view_cut_lsn(c) + 2);
    sdb_view_cut_unref(c2);
    sdb_view_cut_unref(c);
    sdb_view_close(v);
    free(rel);
}

static void
test_view_cut_class_needs_a_checkpoint_at_the_last_record(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    sdb_view_cut *c[5];

    free(put(f->db, "m/a", "p", 1));
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, true, &c[0]), 0);
    assert_int_equal(sdb_view_cut_class(c[0]), 0); /* live */
    assert_int_equal(sdb_view_cut_new(v, false, &c[1]), 0);
    assert_int_equal(sdb_view_cut_class(c[1]), 0); /* past the checkpoint */
    assert_int_equal(sdb_checkpoint(f->db), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c[2]), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c[3]), 0);
    assert_true(sdb_view_cut_class(c[2]) != 0);
    assert_true(sdb_view_cut_class(c[2]) == sdb_view_cut_class(c[3]));
    free(put(f->db, "m/a", "p", 2));
    assert_int_equal(sdb_checkpoint(f->db), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c[4]), 0);
    assert_true(sdb_view_cut_class(c[4]) != 0);
    assert_true(sdb_view_cut_class(c[4]) != sdb_view_cut_class(c[2]));
    for (int i = 0; i < 5; i++)
        sdb_view_cut_unref(c[i]);
    sdb_view_close(v);
}

static void test_view_cut_unchanged_sees_segments_changed_by_hand(void **state)
{
    struct fx *f = *state;
    const char *seg = "db/m/a/@seg-000001.msgpack";
    sdb_view *v;
    sdb_view_cut *c;
    char *path;

    free(put(f->db, "m/a", "p", 1));
    free(put(f->db, "m/b", "p", 1));
    assert_int_equal(sdb_checkpoint(f->db), 0);
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c), 0);
    assert_true(stat_size(c, seg) > 0); /* the first look pins m/a */
    assert_true(sdb_view_cut_unchanged(c));
    path = tu_printf("%s/db/m/b/@seg-000001.msgpack", f->dir);
    assert_int_equal(truncate(path, 0), 0); /* never looked at */
    assert_true(sdb_view_cut_unchanged(c));
    free(path);
    path = tu_printf("%s/%s", f->dir, seg);
    assert_int_equal(truncate(path, 0), 0);
    assert_false(sdb_view_cut_unchanged(c));
    free(path);
    sdb_view_cut_unref(c);
    sdb_view_close(v);
}

static int count_cb(void *arg, const char *name, const sdb_view_stat *st)
{
    (void)name;
    (void)st;
    (*(int *)arg)++;
    return 0;
}

/* List rel in c (which pins a concept directory). */
static void look(sdb_view_cut *c, const char *rel)
{
    int n = 0;

    assert_int_equal(sdb_view_list(c, rel, count_cb, &n), 0);
}

/* Carry old into c; the carried paths joined by spaces. */
static char *carry(sdb_view_cut *old, sdb_view_cut *c)
{
    char **dirs, *out = strdup("");
    size_t n;

    assert_int_equal(sdb_view_cut_carry(old, c, &dirs, &n), 0);
    for (size_t i = 0; i < n; i++) {
        char *t = tu_printf("%s%s%s", out, i ? " " : "", dirs[i]);
        free(out);
        free(dirs[i]);
        out = t;
    }
    free(dirs);
    return out;
}

static void look_all(sdb_view_cut *c)
{
    const char *dirs[] = {"db/m", "db/m/a", "db/m/b", "db/m/c", "db/m/c/d"};

    for (size_t i = 0; i < sizeof(dirs) / sizeof(*dirs); i++)
        look(c, dirs[i]);
}

static void test_view_carry_keeps_only_unchanged_subtrees(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    sdb_view_cut *c1, *c2, *c3, *c4, *c5, *c6;
    char *got;

    free(put(f->db, "m/a", "p", 1));
    free(put(f->db, "m/b", "p", 1));
    free(put(f->db, "m/c/d", "p", 1));
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c1), 0);
    look_all(c1);
    /* nothing changed: everything c1 looked at is carried */
    assert_int_equal(sdb_view_cut_new(v, false, &c2), 0);
    got = carry(c1, c2);
    assert_string_equal(got, "db/m db/m/a db/m/b db/m/c db/m/c/d");
    free(got);
    /* a record for m/a: m/a and its parent m go, the rest stays */
    free(put(f->db, "m/a", "p", 2));
    assert_int_equal(sdb_view_cut_new(v, false, &c3), 0);
    got = carry(c2, c3);
    assert_string_equal(got, "db/m/b db/m/c db/m/c/d");
    free(got);
    /* what was carried shows as before; m/a shows its new record */
    assert_int_equal(stat_size(c3, "db/m/b/@seg-000001.msgpack"),
                     stat_size(c1, "db/m/b/@seg-000001.msgpack"));
    assert_true(stat_size(c3, "db/m/a/@seg-000001.msgpack") >
                stat_size(c1, "db/m/a/@seg-000001.msgpack"));
    look_all(c3);
    /* a new concept below m/c: m/c's names changed, m/c/d did not */
    free(put(f->db, "m/c/e", "p", 1));
    assert_int_equal(sdb_view_cut_new(v, false, &c4), 0);
    got = carry(c3, c4);
    assert_string_equal(got, "db/m/a db/m/b db/m/c/d");
    free(got);
    /* a record landing after c5 was taken, before c5's first look at m/b:
     * c5 shows m/b without it, so m/b is not carried even though its files
     * have not changed since that look */
    assert_int_equal(sdb_view_cut_new(v, false, &c5), 0);
    free(put(f->db, "m/b", "p", 2));
    look_all(c5);
    look(c5, "db/m/c/e");
    assert_int_equal(sdb_view_cut_new(v, false, &c6), 0);
    got = carry(c5, c6);
    assert_null(strstr(got, "db/m/b"));
    assert_non_null(strstr(got, "db/m/c/d"));
    free(got);
    /* a later cut is never carried into an earlier one */
    got = carry(c6, c4);
    assert_string_equal(got, "");
    free(got);
    sdb_view_cut_unref(c1);
    sdb_view_cut_unref(c2);
    sdb_view_cut_unref(c3);
    sdb_view_cut_unref(c4);
    sdb_view_cut_unref(c5);
    sdb_view_cut_unref(c6);
    sdb_view_close(v);
}

/* Enough directories for the two-thread probe (sdb_view_cut_carry). */
static void test_view_carry_many_directories(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    sdb_view_cut *c1, *c2;
    char **dirs, path[32];
    size_t n;

    for (int i = 0; i < 600; i++) {
        snprintf(path, sizeof(path), "w/c%03d", i);
        free(put(f->db, path, "p", i));
    }
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c1), 0);
    look(c1, "db/w");
    for (int i = 0; i < 600; i++) {
        snprintf(path, sizeof(path), "db/w/c%03d", i);
        look(c1, path);
    }
    free(put(f->db, "w/c007", "p", 1));
    assert_int_equal(sdb_view_cut_new(v, false, &c2), 0);
    assert_int_equal(sdb_view_cut_carry(c1, c2, &dirs, &n), 0);
    assert_int_equal(n, 599); /* all but db/w and db/w/c007 */
    for (size_t i = 0; i < n; i++) {
        assert_string_not_equal(dirs[i], "db/w");
        assert_string_not_equal(dirs[i], "db/w/c007");
        assert_int_equal(strncmp(dirs[i], "db/w/c", 6), 0);
        free(dirs[i]);
    }
    free(dirs);
    sdb_view_cut_unref(c1);
    sdb_view_cut_unref(c2);
    sdb_view_close(v);
}

static void test_view_cut_keeps_recycled_wal_readable(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    sdb_view_cut *c;
    sdb_view_stat st;
    char *rel, *path, buf[8];
    int fd;

    free(put(f->db, "m/b", "p", 1));
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_cut_new(v, false, &c), 0);
    rel = wal_rel(f->dir);
    path = tu_printf("%s/%s", f->dir, rel);
    assert_int_equal(sdb_wal_switch(f->db), 0);
    free(put(f->db, "m/b", "p", 2));
    assert_int_equal(sdb_checkpoint(f->db), 0);
    assert_int_equal(access(path, F_OK), -1); /* recycled */
    assert_int_equal(sdb_view_open_file(c, rel, &fd, &st), 0);
    assert_true(st.size > 64);
    assert_int_equal(pread(fd, buf, 8, 0), 8);
    assert_memory_equal(buf, "STMDBWAL", 8);
    close(fd);
    sdb_view_cut_unref(c);
    sdb_view_close(v);
    free(path);
    free(rel);
}

static void test_view_concept_json_skips_retracted(void **state)
{
    struct fx *f = *state;
    json_t *doc, *req, *res = NULL;
    sdb_view *v;
    char *id1 = put(f->db, "x/y", "p", 1), *id2 = put(f->db, "x/y", "p", 2),
         *id3 = put(f->db, "x/y", "p", 3), *text;
    size_t len;

    req = json_pack("{s:s, s:s}", "id", id2, "reason", "test");
    assert_int_equal(sdb_retract_sync(f->db, req, &res, NULL), 0);
    json_decref(req);
    json_decref(res);
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_concept_json(v, "x/y", &doc), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "count")), 2);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(doc, "assertions"), 0), "id")),
        id3);
    assert_true(json_is_false(json_object_get(
        json_array_get(json_object_get(doc, "assertions"), 1), "retracted")));
    json_decref(doc);
    assert_int_equal(sdb_view_concept_text(v, "x", &text, &len), 0);
    assert_non_null(strstr(text, "\"count\": 0"));
    assert_int_equal(text[len - 1], '\n');
    free(text);
    assert_int_equal(sdb_view_concept_json(v, "nope", &doc), SDB_ENOTFOUND);
    sdb_view_close(v);
    free(id1);
    free(id2);
    free(id3);
}

static void test_view_health_reports_the_lock(void **state)
{
    struct fx *f = *state;
    sdb_view *v;
    json_t *h;

    free(put(f->db, "h", "p", 1));
    assert_int_equal(sdb_view_open(f->dir, &v), 0);
    assert_int_equal(sdb_view_health(v, &h), 0);
    assert_true(json_is_true(json_object_get(h, "lock_held")));
    assert_int_equal(json_integer_value(json_object_get(h, "server_pid")),
                     getpid());
    assert_int_equal(json_integer_value(json_object_get(h, "wal_last_lsn")), 1);
    json_decref(h);
    assert_int_equal(sdb_db_close(f->db), 0);
    f->db = NULL;
    assert_int_equal(sdb_view_health(v, &h), 0);
    assert_true(json_is_false(json_object_get(h, "lock_held")));
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(h, "metadata"), "assertion_count")),
                     1);
    json_decref(h);
    sdb_view_close(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_shown_names_unescape_plain_names_only),
        cmocka_unit_test(test_view_resolve_inverts_shown_names),
        cmocka_unit_test(test_view_shown_names_round_trip_randomly),
        cmocka_unit_test_setup_teardown(
            test_view_wal_is_cut_at_its_last_valid_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_cut_excludes_later_records,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_view_cut_keeps_recycled_wal_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_view_cut_class_needs_a_checkpoint_at_the_last_record, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_view_cut_unchanged_sees_segments_changed_by_hand, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_view_carry_keeps_only_unchanged_subtrees, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_carry_many_directories, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_view_concept_json_skips_retracted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_health_reports_the_lock,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
