/*
 * test_backup.c - hot backup, verification, point-in-time restore and
 * retention against the oracle of acknowledged writes.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

#include "hash.h"
#include "io_sim.h"
#include "segment.h"
#include "testutil.h"

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

/* ---- the oracle: every acknowledged assertion ---- */

struct ack {
    bool batch; /* written by put_batch */
    uint64_t lsn;
    int64_t ts_us;
    char id[32];
};

struct oracle {
    pthread_mutex_t lock;
    struct ack *v;
    size_t n, cap;
};

static void oracle_add(struct oracle *o, json_t *res)
{
    struct ack a = {0};
    const char *id = json_string_value(json_object_get(res, "id"));
    const char *ts = json_string_value(json_object_get(res, "timestamp"));

    assert_non_null(id);
    assert_non_null(ts);
    a.lsn = (uint64_t)json_integer_value(json_object_get(res, "lsn"));
    assert_int_equal(sdb_time_parse(ts, &a.ts_us), 0);
    snprintf(a.id, sizeof(a.id), "%s", id);
    pthread_mutex_lock(&o->lock);
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 1024;
        o->v = realloc(o->v, o->cap * sizeof(*o->v));
        assert_non_null(o->v);
    }
    o->v[o->n++] = a;
    pthread_mutex_unlock(&o->lock);
}

static size_t oracle_count(struct oracle *o, bool by_lsn, uint64_t lsn,
                           int64_t ts)
{
    size_t n = 0;

    for (size_t i = 0; i < o->n; i++)
        n += by_lsn ? o->v[i].lsn <= lsn : o->v[i].ts_us <= ts;
    return n;
}

static size_t oracle_size(struct oracle *o)
{
    size_t n;

    pthread_mutex_lock(&o->lock);
    n = o->n;
    pthread_mutex_unlock(&o->lock);
    return n;
}

static void put(sdb_db *db, struct oracle *o, const char *concept, int i)
{
    char buf[256];
    json_t *req, *out = NULL;
    sdb_error err = {0};

    snprintf(buf, sizeof(buf),
             "{\"concept_path\":\"%s\",\"predicate\":\"n\",\"value\":%d}",
             concept, i);
    req = json_loads(buf, 0, NULL);
    if (sdb_assert_sync(db, req, &out, &err) != 0)
        fail_msg("assert: %s", err.message);
    oracle_add(o, out);
    json_decref(out);
    json_decref(req);
}

/* One request with n assertions: one WAL record holding n records, so
 * point-in-time targets fall inside WAL records. */
static void put_batch(sdb_db *db, struct oracle *o, const char *concept, int n)
{
    json_t *req = json_pack("{s:[]}", "assertions"), *out = NULL, *a;
    sdb_error err = {0};
    size_t i;

    for (int k = 0; k < n; k++)
        json_array_append_new(json_object_get(req, "assertions"),
                              json_pack("{s:s, s:s, s:i}", "concept_path",
                                        concept, "predicate", "b", "value", k));
    if (sdb_assert_sync(db, req, &out, &err) != 0)
        fail_msg("batch: %s", err.message);
    json_array_foreach(json_object_get(out, "assertions"), i, a)
    {
        oracle_add(o, a);
        o->v[o->n - 1].batch = true;
    }
    assert_int_equal(i, (size_t)n);
    json_decref(out);
    json_decref(req);
}

static sdb_db *open_db(const char *dir, const char *archive)
{
    sdb_options o;
    sdb_db *db = NULL;
    sdb_error err = {0};

    sdb_options_init(&o, dir);
    o.flags = SDB_OPEN_CREATE;
    o.log = quiet;
    o.wal_archive_dir = archive;
    o.wal_segment_bytes = 256 << 10;
    o.checkpoint_interval_ms = 40;
    if (sdb_db_open(&o, &db, &err) != 0)
        fail_msg("open %s: %s", dir, err.message);
    return db;
}

static json_t *backup(const char *data, const char *dest, const char *prev)
{
    sdb_backup_opts bo = {
        .data_dir = data, .dest = dest, .incremental_from = prev};
    json_t *rep = NULL;
    sdb_error err = {0};

    if (sdb_backup_create(&bo, &rep, &err) != 0)
        fail_msg("backup: %s", err.message);
    return rep;
}

static const char *bpath(json_t *rep)
{
    return json_string_value(json_object_get(rep, "path"));
}

static uint64_t blsn(json_t *rep)
{
    return (uint64_t)json_integer_value(json_object_get(rep, "lsn"));
}

/* Restore into target (must not exist yet); returns the restored count. */
static uint64_t restore_count(const char *bk, const char *target,
                              const char *archive, bool by_lsn, uint64_t lsn,
                              int64_t ts, uint64_t *last_lsn)
{
    sdb_restore_opts ro = {
        .backup = bk, .data_dir = target, .wal_archive = archive};
    json_t *rep = NULL;
    sdb_error err = {0};
    sdb_options o;
    sdb_db *db = NULL;
    sdb_stats st;

    if (by_lsn) {
        ro.has_until_lsn = true;
        ro.until_lsn = lsn;
    } else if (ts) {
        ro.has_until_time = true;
        ro.until_us = ts;
    }
    if (sdb_restore(&ro, &rep, &err) != 0)
        fail_msg("restore %s: %s", bk, err.message);
    json_decref(rep);
    sdb_options_init(&o, target);
    o.log = quiet;
    if (sdb_db_open(&o, &db, &err) != 0)
        fail_msg("open restored %s: %s", target, err.message);
    sdb_db_stats(db, &st);
    sdb_db_close(db);
    if (last_lsn)
        *last_lsn = st.last_lsn;
    return st.assertion_count;
}

/* Mark the LSNs of every idx entry below dir (recursively) in seen[]. */
static void idx_lsns(const char *dir, unsigned char *seen, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char *p;
        size_t nl = strlen(de->d_name), len = 0;
        struct stat st;

        if (de->d_name[0] == '.')
            continue;
        p = tu_printf("%s/%s", dir, de->d_name);
        assert_int_equal(lstat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            idx_lsns(p, seen, cap);
        } else if (nl > 4 && !strcmp(de->d_name + nl - 4, ".idx")) {
            unsigned char *b = (unsigned char *)tu_read_file(p, &len);
            assert_non_null(b);
            for (size_t o = SDB_IDX_HEADER_SIZE; o + SDB_IDX_ENTRY_SIZE <= len;
                 o += SDB_IDX_ENTRY_SIZE) {
                uint64_t lsn = sdb_get_u64(b + o);
                assert_true(lsn < cap);
                assert_int_equal(seen[lsn], 0);
                seen[lsn] = 1;
            }
            free(b);
        }
        free(p);
    }
    closedir(d);
}

/* The backup's concept segments hold exactly the LSNs 1..P; returns P. */
static uint64_t backup_segments_prefix(const char *bk)
{
    unsigned char seen[4096] = {0};
    char *db = tu_printf("%s/db", bk);
    uint64_t p = 0, n = 0;

    idx_lsns(db, seen, sizeof(seen));
    for (size_t i = 1; i < sizeof(seen); i++)
        n += seen[i];
    while (p + 1 < sizeof(seen) && seen[p + 1])
        p++;
    if (n != p)
        fail_msg("%s: the segments hold %" PRIu64 " records but only LSNs "
                 "1..%" PRIu64 " without a hole",
                 db, n, p);
    free(db);
    return p;
}

/* ---- 16 writers during a hot backup ---- */

struct writer {
    sdb_db *db;
    struct oracle *o;
    int t, n;
    atomic_int *done;
};

static void *writer_main(void *p)
{
    struct writer *w = p;
    char c[64];

    for (int i = 0; i < w->n; i++) {
        snprintf(c, sizeof(c), "w%d/c%d", w->t, i % 7);
        put(w->db, w->o, c, i);
    }
    atomic_fetch_add(w->done, 1);
    return NULL;
}

static void
test_backup_during_16_writers_keeps_every_acked_assertion(void **state)
{
    char *root = tu_mkdtemp("bk16");
    char *data = tu_printf("%s/data", root), *dest = tu_printf("%s/bk", root),
         *rest = tu_printf("%s/restored", root);
    struct oracle o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[16];
    struct writer w[16];
    atomic_int done = 0;
    json_t *rep[3];
    sdb_db *db;
    size_t want;
    uint64_t B;

    (void)state;
    db = open_db(data, NULL);
    for (int t = 0; t < 16; t++) {
        w[t] = (struct writer){db, &o, t, 120, &done};
        assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
    }
    /* several backups while the writers run and checkpoints recycle WAL;
     * on a loaded machine 20 ms may pass before the first acknowledgement,
     * so wait (bounded) until some writes are in before each backup */
    for (int k = 0; k < 3; k++) {
        usleep(20000);
        for (int i = 0; i < 2500 && oracle_size(&o) < (size_t)(k + 1) * 16; i++)
            usleep(2000);
        rep[k] = backup(data, dest, NULL);
    }
    for (int t = 0; t < 16; t++)
        pthread_join(th[t], NULL);
    sdb_db_close(db);
    assert_int_equal(o.n, 16 * 120);
    for (int k = 0; k < 3; k++) {
        char *r = tu_printf("%s%d", rest, k);
        sdb_options opt;
        sdb_error err = {0};
        size_t found = 0;
        json_t *vrep = NULL;

        B = blsn(rep[k]);
        want = oracle_count(&o, true, B, 0);
        assert_true(want > 0);
        assert_int_equal(
            json_integer_value(json_object_get(rep[k], "assertion_count")),
            (json_int_t)want);
        assert_true(backup_segments_prefix(bpath(rep[k])) <= B);
        if (sdb_backup_verify(bpath(rep[k]), NULL, true, &vrep, &err) != 0) {
            /* the whole report: err.message may be cut */
            char *dump = json_dumps(vrep, JSON_INDENT(1));
            fail_msg("verify %s: %s\nreport: %s", bpath(rep[k]), err.message,
                     dump ? dump : "?");
        }
        json_decref(vrep);
        assert_int_equal(
            restore_count(bpath(rep[k]), r, NULL, false, 0, 0, NULL), want);
        /* every acknowledged id up to B is there, none after it */
        sdb_options_init(&opt, r);
        opt.log = quiet;
        assert_int_equal(sdb_db_open(&opt, &db, &err), 0);
        for (size_t i = 0; i < o.n; i++) {
            json_t *a = NULL;
            int rc = sdb_get(db, o.v[i].id, &a, &err);
            if (o.v[i].lsn <= B) {
                assert_int_equal(rc, 0);
                found++;
            } else {
                assert_int_not_equal(rc, 0);
            }
            json_decref(a);
        }
        sdb_db_close(db);
        assert_int_equal(found, want);
        json_decref(rep[k]);
        free(r);
    }
    free(o.v);
    tu_rmrf(root);
    free(data);
    free(dest);
    free(rest);
    free(root);
}

/* ---- segments caught mid-apply ---- */

/*
 * The writer puts a record into its concept segment only after the WAL
 * holds it, and a backup scans the concepts one after another.  So a
 * backup can see LSN L+1 in concept "late" while concept "early" does not
 * hold L yet.  Build exactly that picture from a live store (checkpoint C,
 * then L in "early" and L+1 in "late", with "early"'s segment files taken
 * from before L) and back it up: verification (with a trial restore) and a
 * restore must both hold every record up to the backup LSN.
 */
static void test_backup_of_segments_caught_mid_apply_restores(void **state)
{
    char *root = tu_mkdtemp("bkmid");
    char *data = tu_printf("%s/data", root), *snap = tu_printf("%s/snap", root),
         *dest = tu_printf("%s/bk", root), *early = tu_printf("%s/early", root),
         *rest = tu_printf("%s/restored", root), *cmd;
    struct oracle o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sdb_options opt;
    sdb_db *db = NULL;
    sdb_error err = {0};
    json_t *rep, *vrep = NULL;
    uint64_t last = 0;
    int nwal = 0;

    (void)state;
    sdb_options_init(&opt, data);
    opt.flags = SDB_OPEN_CREATE;
    opt.log = quiet;
    opt.checkpoint_interval_ms = 3600 * 1000; /* only explicit ones */
    opt.wal_segment_bytes = 256 << 10;
    assert_int_equal(sdb_db_open(&opt, &db, &err), 0);
    for (int i = 0; i < 10; i++)
        put(db, &o, i % 2 ? "early" : "late", i);
    assert_int_equal(sdb_checkpoint(db), 0);
    /* "early" as it was before it got LSN L */
    cmd = tu_printf("cp -a '%s/db/early' '%s'", data, early);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    put(db, &o, "early", 10); /* L */
    put(db, &o, "late", 11);  /* L+1 */
    assert_int_equal(sdb_wal_switch(db), 0);
    put(db, &o, "early", 12);
    assert_int_equal(o.v[10].lsn + 1, o.v[11].lsn);
    /* the store as a backup could catch it while the writer is busy */
    cmd = tu_printf("cp -a '%s' '%s' && rm -rf '%s/db/early' && "
                    "cp -a '%s' '%s/db/early'",
                    data, snap, snap, early, snap);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    assert_int_equal(sdb_db_close(db), 0);
    /* and a WAL switch that has created its file but not its header yet */
    {
        unsigned char zeros[4096] = {0};
        char *p = tu_printf("%s/wal", snap);
        DIR *d = opendir(p);
        struct dirent *de;
        unsigned long long seq, max = 0;

        assert_non_null(d);
        while ((de = readdir(d)) != NULL)
            if (sscanf(de->d_name, "segment-%16llx.wal", &seq) == 1) {
                max = seq > max ? seq : max;
                nwal++;
            }
        closedir(d);
        free(p);
        assert_true(nwal >= 2);
        p = tu_printf("%s/wal/segment-%016llx.wal", snap, max + 1);
        assert_int_equal(tu_write_file(p, zeros, sizeof(zeros)), 0);
        free(p);
    }

    rep = backup(snap, dest, NULL);
    assert_int_equal(
        json_integer_value(json_object_get(rep, "wal_segment_count")), nwal);
    assert_int_equal(blsn(rep), o.v[12].lsn);
    /* the segments stop before L (the WAL copy brings L and after) */
    assert_int_equal(backup_segments_prefix(bpath(rep)), o.v[9].lsn);
    assert_int_equal(
        json_integer_value(json_object_get(rep, "assertion_count")), 13);
    if (sdb_backup_verify(bpath(rep), NULL, true, &vrep, &err) != 0) {
        char *dump = json_dumps(vrep, JSON_INDENT(1));
        fail_msg("verify: %s\nreport: %s", err.message, dump ? dump : "?");
    }
    assert_int_equal(
        json_integer_value(json_object_get(vrep, "trial_assertion_count")), 13);
    json_decref(vrep);
    assert_int_equal(restore_count(bpath(rep), rest, NULL, false, 0, 0, &last),
                     13);
    assert_int_equal(last, o.v[12].lsn);
    /* every acknowledged id is there, L included */
    sdb_options_init(&opt, rest);
    opt.log = quiet;
    assert_int_equal(sdb_db_open(&opt, &db, &err), 0);
    for (size_t i = 0; i < o.n; i++) {
        json_t *a = NULL;
        assert_int_equal(sdb_get(db, o.v[i].id, &a, &err), 0);
        json_decref(a);
    }
    sdb_db_close(db);
    json_decref(rep);
    free(o.v);
    tu_rmrf(root);
    free(data);
    free(snap);
    free(dest);
    free(early);
    free(rest);
    free(root);
}

/* ---- point-in-time restore to 20 targets ---- */

struct pitr {
    char *root, *data, *dest, *arch;
    struct oracle o;
    json_t *bk;
    uint64_t max_lsn;
};

static void pitr_setup(struct pitr *p)
{
    sdb_db *db;

    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->o.lock, NULL);
    p->root = tu_mkdtemp("pitr");
    p->data = tu_printf("%s/data", p->root);
    p->dest = tu_printf("%s/bk", p->root);
    p->arch = tu_printf("%s/archive", p->root);
    assert_int_equal(mkdir(p->arch, 0755), 0);
    db = open_db(p->data, p->arch);
    for (int i = 0; i < 200; i++)
        put(db, &p->o, "a/b", i);
    p->bk = backup(p->data, p->dest, NULL);
    for (int i = 0; i < 900; i++) {
        if (i % 10 == 5)
            put_batch(db, &p->o, "batch", 7);
        else
            put(db, &p->o, i % 2 ? "a/c" : "d", i);
        if (i % 97 == 0)
            assert_int_equal(sdb_wal_switch(db), 0);
    }
    /* seal the last records so the archive holds them all */
    assert_int_equal(sdb_wal_switch(db), 0);
    assert_int_equal(sdb_db_close(db), 0);
    p->max_lsn = p->o.v[p->o.n - 1].lsn;
}

static void pitr_teardown(struct pitr *p)
{
    tu_rmrf(p->root);
    json_decref(p->bk);
    free(p->o.v);
    free(p->root);
    free(p->data);
    free(p->dest);
    free(p->arch);
}

static void test_pitr_to_20_targets_matches_the_oracle(void **state)
{
    struct pitr p;
    uint64_t seed = tu_seed(0x5eed), B;
    size_t mid = 0;

    (void)state;
    pitr_setup(&p);
    B = blsn(p.bk);
    assert_true(B < p.max_lsn);
    /* the third record of the first batch after the backup: a target
     * inside one WAL record */
    for (size_t i = 0; i < p.o.n && !mid; i++)
        if (p.o.v[i].batch && p.o.v[i].lsn > B)
            mid = i + 2;
    assert_true(mid > 0 && p.o.v[mid].batch);
    for (int k = 0; k < 20; k++) {
        char *r = tu_printf("%s/r%d", p.root, k);
        bool by_lsn = k % 2 == 0;
        uint64_t lsn = 0, last = 0;
        int64_t ts = 0;
        size_t want;

        if (by_lsn) {
            lsn = B + tu_rand(&seed) % (p.max_lsn - B + 1);
            if (k == 4)
                lsn = p.o.v[mid].lsn;
            if (k == 0)
                lsn = B;
            if (k == 2)
                lsn = p.max_lsn;
            want = oracle_count(&p.o, true, lsn, 0);
        } else {
            /* a timestamp between two acknowledged records, or on one */
            size_t i = (size_t)(tu_rand(&seed) % p.o.n);
            if (p.o.v[i].lsn < B)
                i = (size_t)B - 1;
            ts = p.o.v[i].ts_us - (int64_t)(tu_rand(&seed) % 2);
            if (ts < p.o.v[(size_t)B - 1].ts_us)
                ts = p.o.v[(size_t)B - 1].ts_us;
            if (k == 5)
                ts = p.o.v[mid].ts_us;
            want = oracle_count(&p.o, false, 0, ts);
        }
        assert_int_equal(
            restore_count(bpath(p.bk), r, p.arch, by_lsn, lsn, ts, &last),
            want);
        if (by_lsn)
            assert_int_equal(last, lsn);
        tu_rmrf(r);
        free(r);
    }
    /* no target: everything archived */
    {
        char *r = tu_printf("%s/rall", p.root);
        assert_int_equal(
            restore_count(bpath(p.bk), r, p.arch, false, 0, 0, NULL), p.o.n);
        free(r);
    }
    pitr_teardown(&p);
}

static void test_pitr_refuses_unreachable_and_gapped_targets(void **state)
{
    struct pitr p;
    sdb_restore_opts ro = {0};
    sdb_error err = {0};
    json_t *rep = NULL;
    uint64_t *seqs = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *de;
    char *victim = NULL, *r;

    (void)state;
    pitr_setup(&p);
    r = tu_printf("%s/r", p.root);
    ro.backup = bpath(p.bk);
    ro.data_dir = r;
    ro.wal_archive = p.arch;
    /* beyond the end of the archive */
    ro.has_until_lsn = true;
    ro.until_lsn = p.max_lsn + 5;
    assert_int_equal(sdb_restore(&ro, &rep, &err), SDB_ENOTFOUND);
    /* before the backup */
    ro.until_lsn = blsn(p.bk) - 1;
    assert_int_equal(sdb_restore(&ro, &rep, &err), SDB_EINVAL);
    /* a segment missing in the middle of the archive */
    d = opendir(p.arch);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (!strncmp(de->d_name, "segment-", 8)) {
            uint64_t *ns = realloc(seqs, (n + 1) * sizeof(*seqs));
            assert_non_null(ns);
            seqs = ns;
            seqs[n++] = strtoull(de->d_name + 8, NULL, 16);
        }
    closedir(d);
    assert_true(n >= 4);
    {
        uint64_t mx = 0;
        for (size_t i = 0; i < n; i++)
            mx = seqs[i] > mx ? seqs[i] : mx;
        victim = tu_printf("%s/segment-%016" PRIx64 ".wal", p.arch, mx - 1);
    }
    assert_int_equal(unlink(victim), 0);
    memset(&err, 0, sizeof(err));
    ro.until_lsn = p.max_lsn;
    assert_int_equal(sdb_restore(&ro, &rep, &err), SDB_ECORRUPT);
    assert_non_null(strstr(err.message, "gap in the WAL archive"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(sdb_backup_verify(bpath(p.bk), p.arch, false, &rep, &err),
                     SDB_ECORRUPT);
    json_decref(rep);
    assert_false(access(r, F_OK) == 0); /* nothing was created */
    free(victim);
    free(seqs);
    free(r);
    pitr_teardown(&p);
}

/* ---- verify catches tampering ---- */

static char *first_file(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char *out = NULL;

    assert_non_null(d);
    while (!out && (de = readdir(d)) != NULL)
        if (!strncmp(de->d_name, prefix, strlen(prefix)))
            out = tu_printf("%s/%s", dir, de->d_name);
    closedir(d);
    assert_non_null(out);
    return out;
}

static int verify_copy(const char *bk, const char *root, int k,
                       void (*tamper)(const char *))
{
    char *copy = tu_printf("%s/copy%d", root, k),
         *cmd = tu_printf("cp -a '%s' '%s'", bk, copy);
    json_t *rep = NULL;
    sdb_error err = {0};
    int rc;

    assert_int_equal(system(cmd), 0);
    tamper(copy);
    rc = sdb_backup_verify(copy, NULL, true, &rep, &err);
    if (rc == 0 && k > 0)
        print_error("tamper %d not detected\n", k);
    json_decref(rep);
    tu_rmrf(copy);
    free(copy);
    free(cmd);
    return rc;
}

static void t_none(const char *b)
{
    (void)b;
}

static void t_missing(const char *b)
{
    char *d = tu_printf("%s/db/a/b", b), *f = first_file(d, "@seg-000001.idx");
    assert_int_equal(unlink(f), 0);
    free(f);
    free(d);
}

static void t_extra(const char *b)
{
    char *f = tu_printf("%s/db/a/b/@seg-000002.idx", b);
    assert_int_equal(tu_write_file(f, "x", 1), 0);
    free(f);
}

static void t_resized(const char *b)
{
    char *d = tu_printf("%s/wal", b), *f = first_file(d, "segment-");
    assert_int_equal(truncate(f, tu_file_size(f) - 1), 0);
    free(f);
    free(d);
}

static void t_flipped(const char *b)
{
    char *f = tu_printf("%s/db/a/b/@seg-000001.msgpack", b);
    size_t len;
    char *buf = tu_read_file(f, &len);
    assert_non_null(buf);
    buf[len / 2] ^= 0x10;
    assert_int_equal(tu_write_file(f, buf, len), 0);
    free(buf);
    free(f);
}

static void t_manifest(const char *b)
{
    char *f = tu_printf("%s/metadata.json", b);
    size_t len;
    char *buf = tu_read_file(f, &len), *p;
    assert_non_null(buf);
    p = strstr(buf, "\"assertion_count\": ");
    assert_non_null(p);
    p += strlen("\"assertion_count\": ");
    *p = *p == '9' ? '8' : '9';
    assert_int_equal(tu_write_file(f, buf, len), 0);
    free(buf);
    free(f);
}

static void t_store_meta(const char *b)
{
    char *f = tu_printf("%s/store-metadata.json", b);
    assert_int_equal(unlink(f), 0);
    free(f);
}

static void test_verify_catches_missing_extra_resized_flipped(void **state)
{
    char *root = tu_mkdtemp("verify");
    char *data = tu_printf("%s/data", root), *dest = tu_printf("%s/bk", root);
    struct oracle o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sdb_db *db = open_db(data, NULL);
    json_t *rep;

    (void)state;
    for (int i = 0; i < 300; i++)
        put(db, &o, "a/b", i);
    assert_int_equal(sdb_checkpoint(db), 0);
    for (int i = 0; i < 50; i++)
        put(db, &o, "a/b", i);
    rep = backup(data, dest, NULL);
    sdb_db_close(db);
    assert_int_equal(verify_copy(bpath(rep), root, 0, t_none), 0);
    assert_int_equal(verify_copy(bpath(rep), root, 1, t_missing), SDB_ECORRUPT);
    assert_int_equal(verify_copy(bpath(rep), root, 2, t_extra), SDB_ECORRUPT);
    assert_int_equal(verify_copy(bpath(rep), root, 3, t_resized), SDB_ECORRUPT);
    assert_int_equal(verify_copy(bpath(rep), root, 4, t_flipped), SDB_ECORRUPT);
    assert_int_equal(verify_copy(bpath(rep), root, 5, t_manifest),
                     SDB_ECORRUPT);
    assert_int_equal(verify_copy(bpath(rep), root, 6, t_store_meta),
                     SDB_ECORRUPT);
    json_decref(rep);
    free(o.v);
    tu_rmrf(root);
    free(data);
    free(dest);
    free(root);
}

/* ---- an interrupted backup is never reported complete ---- */

static int count_backups(const char *dest, char **one)
{
    DIR *d = opendir(dest);
    struct dirent *de;
    int n = 0;

    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL)
        if (!strncmp(de->d_name, "stemedb-backup-", 15)) {
            n++;
            if (one) {
                free(*one);
                *one = tu_printf("%s/%s", dest, de->d_name);
            }
        }
    closedir(d);
    return n;
}

static void test_interrupted_backup_is_never_complete(void **state)
{
    char *root = tu_mkdtemp("intr");
    char *data = tu_printf("%s/data", root);
    struct oracle o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sdb_db *db = open_db(data, NULL);
    uint64_t seed = tu_seed(77);
    bool succeeded = false;

    (void)state;
    for (int i = 0; i < 200; i++)
        put(db, &o, i % 3 ? "x/y" : "z", i);
    sdb_db_close(db);
    for (uint64_t crash = 1; crash < 400 && !succeeded; crash += 3) {
        char *dest = tu_printf("%s/bk%" PRIu64, root, crash), *one = NULL;
        sdb_iosim *sim = sdb_iosim_new(tu_rand(&seed));
        sdb_backup_opts bo = {
            .data_dir = data, .dest = dest, .io = sdb_iosim_io(sim)};
        sdb_error err = {0};
        json_t *rep = NULL;
        int rc;

        sdb_iosim_crash_after(sim, crash);
        rc = sdb_backup_create(&bo, &rep, &err);
        if (sdb_iosim_power_loss(sim, SDB_IOSIM_ALL) != 0)
            fail_msg("power loss after %" PRIu64 " mutations failed", crash);
        sdb_iosim_free(sim);
        if (rc == 0) {
            succeeded = true;
            assert_int_equal(
                sdb_backup_verify(bpath(rep), NULL, true, NULL, &err), 0);
        } else if (count_backups(dest, &one) > 0) {
            /* it may only exist if it is whole */
            memset(&err, 0, sizeof(err));
            if (sdb_backup_verify(one, NULL, true, NULL, &err) != 0)
                fail_msg("crash after %" PRIu64
                         " mutations left an incomplete %s: %s",
                         crash, one, err.message);
        }
        json_decref(rep);
        free(one);
        free(dest);
    }
    assert_true(succeeded);
    free(o.v);
    tu_rmrf(root);
    free(data);
    free(root);
}

/* ---- restore never deletes; refuses a running store ---- */

static void
test_restore_renames_existing_data_and_refuses_live_store(void **state)
{
    char *root = tu_mkdtemp("nodel");
    char *data = tu_printf("%s/data", root), *dest = tu_printf("%s/bk", root),
         *marker = tu_printf("%s/data/operator-note.txt", root);
    struct oracle o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sdb_db *db = open_db(data, NULL);
    sdb_restore_opts ro = {0};
    sdb_error err = {0};
    json_t *rep, *res = NULL;
    const char *moved;
    char *mm;

    (void)state;
    for (int i = 0; i < 40; i++)
        put(db, &o, "k", i);
    {
        /* a retraction travels with the backup too */
        char buf[128];
        json_t *req, *r = NULL;
        snprintf(buf, sizeof(buf), "{\"id\":\"%s\",\"reason\":\"test\"}",
                 o.v[3].id);
        req = json_loads(buf, 0, NULL);
        assert_int_equal(sdb_retract_sync(db, req, &r, &err), 0);
        json_decref(req);
        json_decref(r);
    }
    rep = backup(data, dest, NULL);
    for (int i = 0; i < 10; i++)
        put(db, &o, "k", i);
    assert_int_equal(tu_write_file(marker, "keep me", 7), 0);
    ro.backup = bpath(rep);
    ro.data_dir = data;
    /* the server still holds the LOCK */
    assert_int_equal(sdb_restore(&ro, &res, &err), SDB_ELOCKED);
    assert_true(access(marker, F_OK) == 0);
    sdb_db_close(db);
    memset(&err, 0, sizeof(err));
    /* dry run changes nothing */
    ro.dry_run = true;
    assert_int_equal(sdb_restore(&ro, &res, &err), 0);
    json_decref(res);
    assert_true(access(marker, F_OK) == 0);
    ro.dry_run = false;
    assert_int_equal(sdb_restore(&ro, &res, &err), 0);
    moved = json_string_value(json_object_get(res, "previous_data_moved_to"));
    assert_non_null(moved);
    mm = tu_printf("%s/operator-note.txt", moved);
    assert_true(access(mm, F_OK) == 0);
    assert_false(access(marker, F_OK) == 0);
    assert_int_equal(
        json_integer_value(json_object_get(res, "assertion_count")), 40);
    assert_int_equal(
        json_integer_value(json_object_get(res, "retraction_count")), 1);
    json_decref(res);
    json_decref(rep);
    free(mm);
    free(o.v);
    tu_rmrf(root);
    free(data);
    free(dest);
    free(marker);
    free(root);
}

/* ---- incremental backups and retention ---- */

static void test_incremental_and_expire_keep_what_is_needed(void **state)
{
    struct pitr p;
    json_t *b2, *b3, *rep = NULL;
    sdb_error err = {0};
    sdb_db *db;
    char *r;

    (void)state;
    pitr_setup(&p);
    db = open_db(p.data, p.arch);
    for (int i = 0; i < 30; i++)
        put(db, &p.o, "late", i);
    b2 = backup(p.data, p.dest, bpath(p.bk));
    assert_true(json_integer_value(json_object_get(b2, "bytes_linked")) > 0);
    for (int i = 0; i < 30; i++)
        put(db, &p.o, "later", i);
    assert_int_equal(sdb_wal_switch(db), 0);
    b3 = backup(p.data, p.dest, bpath(b2));
    assert_int_equal(sdb_wal_switch(db), 0);
    sdb_db_close(db);
    assert_int_equal(sdb_backup_verify(bpath(b2), p.arch, true, NULL, &err), 0);
    assert_int_equal(sdb_backup_expire(p.dest, 2, p.arch, false, &rep, &err),
                     0);
    assert_int_equal(json_array_size(json_object_get(rep, "removed")), 1);
    assert_true(json_array_size(json_object_get(rep, "wal_removed")) > 0);
    json_decref(rep);
    assert_false(access(bpath(p.bk), F_OK) == 0);
    /* the oldest kept backup still rolls forward to the end */
    r = tu_printf("%s/after-expire", p.root);
    assert_int_equal(restore_count(bpath(b2), r, p.arch, false, 0, 0, NULL),
                     p.o.n);
    json_decref(b2);
    json_decref(b3);
    free(r);
    pitr_teardown(&p);
}

static void test_status_file_counts_failures_and_successes(void **state)
{
    char *root = tu_mkdtemp("status"),
         *f = tu_printf("%s/backup-status.json", root);
    json_t *doc;

    (void)state;
    assert_int_equal(sdb_backup_record_status(root, false, NULL, 0), 0);
    assert_int_equal(sdb_backup_record_status(root, false, NULL, 0), 0);
    assert_int_equal(sdb_backup_record_status(root, true, "/b/x", 42), 0);
    doc = json_load_file(f, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "failures_total")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(doc, "last_lsn")), 42);
    assert_true(json_integer_value(json_object_get(doc, "last_success_unix")) >
                1600000000);
    json_decref(doc);
    tu_rmrf(root);
    free(f);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_backup_during_16_writers_keeps_every_acked_assertion),
        cmocka_unit_test(test_backup_of_segments_caught_mid_apply_restores),
        cmocka_unit_test(test_pitr_to_20_targets_matches_the_oracle),
        cmocka_unit_test(test_pitr_refuses_unreachable_and_gapped_targets),
        cmocka_unit_test(test_verify_catches_missing_extra_resized_flipped),
        cmocka_unit_test(test_interrupted_backup_is_never_complete),
        cmocka_unit_test(
            test_restore_renames_existing_data_and_refuses_live_store),
        cmocka_unit_test(test_incremental_and_expire_keep_what_is_needed),
        cmocka_unit_test(test_status_file_counts_failures_and_successes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
