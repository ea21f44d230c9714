/*
 * test_verify.c - sdb_fsck (src/verify.c) against stores built by the real
 * engine and then damaged on purpose: single-bit flips in every kind of
 * file (>= 10,000 in all, every one detected and the file named), zeroed
 * 512 B and 4 KiB blocks, truncation at every offset of the last three WAL
 * records, appended garbage, deleted, duplicated and swapped files, a
 * stale-epoch WAL segment; repairs (-p, -y) that leave a store the engine
 * opens with every intact record; the LOCK; cancellation.
 *
 * Two fixtures are built once: "closed" (cleanly closed: one WAL segment,
 * everything checkpointed) and "live" (a copy taken while the store was
 * open: three WAL segments, records past the checkpoint).  Mutation tests
 * flip bytes in place and restore them, so a flip costs one fsck run.
 */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "stemedb/stemedb.h"
#include "testutil.h"
#include "wal.h"

#define N_A     30 /* batch A: before the checkpoint */
#define N_B     21 /* batch B: after it, in groups of 3 */
#define N_C     15 /* batch C: one per WAL record */
#define N_TOTAL (N_A + N_B + N_C)
#define UBER                                                                   \
    "db/\xc3\xbc"                                                              \
    "ber/alles"

static char *root, *closed_dir, *live_dir;
static uint64_t rng;

/* ---- running fsck ---- */

struct found {
    int id;
    int sev;
    char file[512];
    int64_t off;
    bool repaired;
};

struct run {
    struct found v[256];
    int n;
    sdb_fsck_report rep;
    int rc;
};

static int collect(void *arg, const sdb_fsck_problem *p,
                   const sdb_fsck_report *rep)
{
    struct run *r = arg;

    (void)rep;
    if (p && r->n < 256) {
        struct found *f = &r->v[r->n++];
        f->id = p->id;
        f->sev = p->severity;
        snprintf(f->file, sizeof(f->file), "%s", p->file);
        f->off = p->offset;
        f->repaired = p->repaired;
    }
    return 0;
}

static void run_fsck(const char *dir, unsigned flags, struct run *r)
{
    memset(r, 0, sizeof(*r));
    r->rc = sdb_fsck(dir, flags, collect, r, &r->rep);
}

static void dump(const struct run *r)
{
    for (int i = 0; i < r->n; i++)
        fprintf(stderr, "  %s in %s @%lld%s\n", sdb_fsck_msg_name(r->v[i].id),
                r->v[i].file, (long long)r->v[i].off,
                r->v[i].repaired ? " (repaired)" : "");
}

/* Some problem with this id (any if id < 0) in file (any if NULL). */
static const struct found *has(const struct run *r, int id, const char *file)
{
    for (int i = 0; i < r->n; i++)
        if ((id < 0 || r->v[i].id == id) &&
            (!file || !strcmp(r->v[i].file, file)))
            return &r->v[i];
    return NULL;
}

static bool has_error(const struct run *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->v[i].sev == SDB_FSCK_ERROR)
            return true;
    return false;
}

static void expect_clean(const char *dir)
{
    struct run r;

    run_fsck(dir, 0, &r);
    if (r.rc != 0 || r.rep.unrepaired || r.rep.errors || r.rep.warnings) {
        dump(&r);
        fail_msg("%s is not clean (rc %d)", dir, r.rc);
    }
}

/* ---- building stores ---- */

static void quiet(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

static sdb_db *open_store(const char *dir, bool create)
{
    sdb_options o;
    sdb_error err = {0};
    sdb_db *db = NULL;

    sdb_options_init(&o, dir);
    o.flags = create ? SDB_OPEN_CREATE : 0;
    o.wal_segment_bytes = 128 << 10;
    o.wal_segment_timeout_ms = 3600000;
    o.checkpoint_interval_ms = 3600000;
    o.log = quiet;
    if (sdb_db_open(&o, &db, &err) != 0) {
        fprintf(stderr, "open %s: %s\n", dir, err.message);
        return NULL;
    }
    return db;
}

static const char *const paths[] = {"drug/aspirin", "drug/ibuprofen",
                                    "gene/BRCA1",   "a b/c.d",
                                    "indexes/x",    "\303\274ber/alles"};

static json_t *one(int i)
{
    return json_pack("{s:s, s:s, s:i, s:f, s:s}", "concept_path", paths[i % 6],
                     "predicate", i % 2 ? "dose_mg" : "note", "value", i * 7,
                     "confidence", 0.5 + (i % 5) / 10.0, "source",
                     "test/fixture");
}

static void assert_one(sdb_db *db, json_t *req, char *id_out)
{
    sdb_error err = {0};
    json_t *out = NULL;

    assert_int_equal(sdb_assert_sync(db, req, &out, &err), 0);
    if (id_out)
        snprintf(id_out, 64, "%s",
                 json_string_value(json_object_get(out, "id")));
    json_decref(out);
    json_decref(req);
}

static void build(void)
{
    char *orig = tu_printf("%s/orig", root), id[64] = "", *cmd;
    sdb_db *db = open_store(orig, true);
    sdb_error err = {0};
    json_t *out = NULL, *req;

    assert_non_null(db);
    for (int i = 0; i < N_A; i++)
        assert_one(db, one(i), i == 3 ? id : NULL);
    req = json_pack("{s:s, s:s}", "id", id, "reason", "fixture");
    assert_int_equal(sdb_retract_sync(db, req, &out, &err), 0);
    json_decref(out);
    json_decref(req);
    assert_int_equal(sdb_checkpoint(db), 0);
    assert_int_equal(sdb_wal_switch(db), 0);
    for (int i = 0; i < N_B; i += 3) {
        req = json_pack("{s:[o,o,o]}", "assertions", one(100 + i), one(101 + i),
                        one(102 + i));
        assert_one(db, req, NULL);
    }
    assert_int_equal(sdb_wal_switch(db), 0);
    for (int i = 0; i < N_C; i++)
        assert_one(db, one(200 + i), NULL);
    cmd = tu_printf("cp -a '%s' '%s'", orig, live_dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    assert_int_equal(sdb_db_close(db), 0);
    cmd = tu_printf("cp -a '%s' '%s'", orig, closed_dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    cmd = tu_printf("%s/LOCK", live_dir);
    unlink(cmd); /* a plain copy */
    free(cmd);
    free(orig);
}

static uint64_t stored_assertions(const char *dir)
{
    sdb_db *db = open_store(dir, false);
    sdb_stats st;

    if (!db)
        return UINT64_MAX;
    sdb_db_stats(db, &st);
    sdb_db_close(db);
    return st.assertion_count;
}

static int group_setup(void **state)
{
    (void)state;
    rng = tu_seed(0x5eed);
    root = tu_mkdtemp("verify");
    closed_dir = tu_printf("%s/closed", root);
    live_dir = tu_printf("%s/live", root);
    build();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!getenv("SDB_KEEP_TMP"))
        tu_rmrf(root);
    free(root);
    free(closed_dir);
    free(live_dir);
    return 0;
}

/* A scratch copy of a fixture (removed by the caller with tu_rmrf). */
static char *scratch(const char *fixture)
{
    char *dir =
        tu_printf("%s/scratch-%llx", root, (unsigned long long)tu_rand(&rng));
    char *cmd = tu_printf("cp -a '%s' '%s'", fixture, dir);

    assert_int_equal(system(cmd), 0);
    free(cmd);
    return dir;
}

/* ---- the files of a fixture ---- */

enum kind { K_WAL, K_DATA, K_IDX, K_SNAP, K_META, K_COUNT };
static const char *const kind_name[] = {"wal", "msgpack", "idx", "snapshot",
                                        "metadata"};

struct file {
    char rel[512];
    enum kind kind;
    unsigned char *orig;
    size_t len;
    size_t used; /* WAL: end of the last record */
};

static struct file files[64];
static int n_files;
static const char *files_dir;

static int add_file(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    const char *rel = path + strlen(files_dir) + 1;
    struct file *f;
    size_t n;

    (void)st;
    (void)ftw;
    if (type != FTW_F || n_files == 64)
        return 0;
    n = strlen(rel);
    f = &files[n_files];
    if (!strncmp(rel, "wal/", 4))
        f->kind = K_WAL;
    else if (n > 8 && !strcmp(rel + n - 8, ".msgpack"))
        f->kind = K_DATA;
    else if (n > 4 && !strcmp(rel + n - 4, ".idx"))
        f->kind = K_IDX;
    else if (!strcmp(rel, "db/indexes/index.snap"))
        f->kind = K_SNAP;
    else if (!strcmp(rel, "metadata.json"))
        f->kind = K_META;
    else
        return 0;
    snprintf(f->rel, sizeof(f->rel), "%s", rel);
    n_files++;
    return 0;
}

static void load_files(const char *dir)
{
    for (int i = 0; i < n_files; i++)
        free(files[i].orig);
    n_files = 0;
    files_dir = dir;
    assert_int_equal(nftw(dir, add_file, 16, FTW_PHYS), 0);
    for (int i = 0; i < n_files; i++) {
        struct file *f = &files[i];
        char *p = tu_printf("%s/%s", dir, f->rel);
        f->orig = (unsigned char *)tu_read_file(p, &f->len);
        assert_non_null(f->orig);
        f->used = f->len;
        if (f->kind == K_WAL)
            while (f->used > 0 && f->orig[f->used - 1] == 0)
                f->used--;
        free(p);
    }
}

static void put_byte(const char *dir, const struct file *f, size_t off,
                     unsigned char b)
{
    char *p = tu_printf("%s/%s", dir, f->rel);
    int fd = open(p, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
    free(p);
}

static void restore(const char *dir, const struct file *f)
{
    char *p = tu_printf("%s/%s", dir, f->rel);

    assert_int_equal(tu_write_file(p, f->orig, f->len), 0);
    free(p);
}

/* The record (offset) of a .msgpack byte, from its .idx original. */
static int64_t record_start(const struct file *data, size_t off)
{
    char irel[512];
    size_t n = strlen(data->rel);

    snprintf(irel, sizeof(irel), "%.*s.idx", (int)(n - 8), data->rel);
    for (int i = 0; i < n_files; i++) {
        const struct file *f = &files[i];
        if (strcmp(f->rel, irel))
            continue;
        for (size_t p = 64; p + 32 <= f->len; p += 32) {
            uint64_t o = sdb_get_u64(f->orig + p + 8);
            uint32_t l = sdb_get_u32(f->orig + p + 16);
            if (off >= o && off < o + l)
                return (int64_t)o;
        }
    }
    return -1;
}

/* ---- tests ---- */

static void test_fsck_clean_stores_report_nothing(void **state)
{
    struct run r;

    (void)state;
    expect_clean(closed_dir);
    expect_clean(live_dir);
    run_fsck(live_dir, 0, &r);
    assert_int_equal(r.rep.records, N_TOTAL + 1);
    assert_true(r.rep.wal_records >= N_B + N_C);
    assert_true(r.rep.files >= 10);
}

/* Flip single bits; every flip must give an ERROR naming the file, and a
 * flip in a record or in the zeros after the log its exact offset. */
static void flip_fixture(const char *dir, int per_kind)
{
    int done[K_COUNT] = {0};

    load_files(dir);
    for (int k = 0; k < K_COUNT; k++) {
        int cand[64] = {0}, nc = 0;
        for (int i = 0; i < n_files; i++)
            if (files[i].kind == (enum kind)k)
                cand[nc++] = i;
        assert_true(nc > 0);
        for (int t = 0; t < per_kind; t++) {
            const struct file *f = &files[cand[tu_rand(&rng) % nc]];
            size_t span = f->kind == K_WAL && t % 2 ? f->used : f->len;
            size_t off = (size_t)(tu_rand(&rng) % span);
            unsigned char bit = (unsigned char)(1u << (tu_rand(&rng) % 8));
            const struct found *hit;
            struct run r;

            put_byte(dir, f, off, f->orig[off] ^ bit);
            run_fsck(dir, 0, &r);
            put_byte(dir, f, off, f->orig[off]);
            hit = has(&r, -1, f->rel);
            if (r.rc != 0 || !has_error(&r) || !hit || !r.rep.unrepaired) {
                dump(&r);
                fail_msg("%s: flip of bit %02x at %zu not detected (rc %d)",
                         f->rel, bit, off, r.rc);
            }
            if (f->kind == K_WAL && off >= f->used) {
                const struct found *g =
                    has(&r, SDB_FSCK_TRAILING_GARBAGE, f->rel);
                if (!g || g->off != (int64_t)off) {
                    dump(&r);
                    fail_msg("%s: flip at %zu not located", f->rel, off);
                }
            }
            if (f->kind == K_DATA) {
                const struct found *b = has(&r, SDB_FSCK_BAD_CHECKSUM, f->rel);
                if (!b || b->off != record_start(f, off)) {
                    dump(&r);
                    fail_msg("%s: flip at %zu: record not named", f->rel, off);
                }
            }
            done[k]++;
        }
    }
    for (int k = 0; k < K_COUNT; k++)
        print_message("%d flips in %s files\n", done[k], kind_name[k]);
    expect_clean(dir);
}

static void test_fsck_detects_every_single_bit_flip(void **state)
{
    const char *env = getenv("SDB_FSCK_FLIPS");
    int total = env ? atoi(env) : 10000;
    int per = total / (2 * K_COUNT) + 1;

    (void)state;
    flip_fixture(live_dir, per);
    flip_fixture(closed_dir, per);
}

static void test_fsck_detects_zeroed_blocks(void **state)
{
    (void)state;
    load_files(live_dir);
    for (int i = 0; i < n_files; i++) {
        const struct file *f = &files[i];
        for (size_t bs = 512; bs <= 4096; bs *= 8) {
            size_t span = f->kind == K_WAL ? f->used : f->len;
            for (size_t off = 0; off < span; off += bs) {
                size_t n = off + bs > f->len ? f->len - off : bs;
                char *p = tu_printf("%s/%s", live_dir, f->rel);
                unsigned char *m = malloc(f->len);
                struct run r;

                memcpy(m, f->orig, f->len);
                memset(m + off, 0, n);
                if (!memcmp(m, f->orig, f->len)) {
                    free(m);
                    free(p);
                    continue;
                }
                assert_int_equal(tu_write_file(p, m, f->len), 0);
                run_fsck(live_dir, 0, &r);
                restore(live_dir, f);
                if (!has_error(&r) || !has(&r, -1, f->rel)) {
                    dump(&r);
                    fail_msg("%s: zeroed %zu bytes at %zu not detected", f->rel,
                             bs, off);
                }
                free(m);
                free(p);
            }
        }
    }
    expect_clean(live_dir);
}

/* Offsets of the records of a WAL image. */
static size_t wal_records(const struct file *f, size_t *offs, size_t cap)
{
    uint64_t seq, store, first, lsn;
    uint32_t cnt;
    size_t off = 64, rl, n = 0;

    assert_int_equal(sdb_wal_parse_header(f->orig, &seq, &store, &first), 0);
    while (n < cap &&
           sdb_wal_check_record(f->orig, f->len, off, sdb_wal_seed(store, seq),
                                &rl, &lsn, &cnt)) {
        offs[n++] = off;
        off += rl;
    }
    offs[n] = off;
    return n;
}

static void test_fsck_truncated_wal_tail_is_torn_and_p_repairs_it(void **st)
{
    size_t offs[4096], n;
    const struct file *w = NULL;
    int repaired = 0;

    (void)st;
    load_files(closed_dir);
    for (int i = 0; i < n_files; i++)
        if (files[i].kind == K_WAL && (!w || strcmp(files[i].rel, w->rel) > 0))
            w = &files[i]; /* the newest */
    assert_non_null(w);
    n = wal_records(w, offs, 4000);
    assert_true(n >= 3);
    for (size_t t = offs[n - 3]; t < offs[n]; t++) {
        char *p = tu_printf("%s/%s", closed_dir, w->rel);
        struct run r;

        assert_int_equal(truncate(p, (off_t)t), 0);
        run_fsck(closed_dir, 0, &r);
        restore(closed_dir, w);
        if (r.rc != 0 || !r.rep.unrepaired ||
            !(has(&r, SDB_FSCK_TORN_TAIL, w->rel) ||
              (has(&r, SDB_FSCK_WAL_TRUNCATED, w->rel) &&
               (t == offs[n - 3] || t == offs[n - 2] || t == offs[n - 1]))) ||
            has_error(&r)) {
            dump(&r);
            fail_msg("truncation at %zu: expected a torn tail", t);
        }
        if (t % 97 == 0 || t == offs[n - 2] + 5 || t == offs[n] - 1) {
            char *dir = scratch(closed_dir), *q;
            q = tu_printf("%s/%s", dir, w->rel);
            assert_int_equal(truncate(q, (off_t)t), 0);
            run_fsck(dir, SDB_FSCK_REPAIR_SAFE, &r);
            if (r.rc != 0 || !r.rep.repaired || r.rep.unrepaired) {
                dump(&r);
                fail_msg("-p after truncation at %zu", t);
            }
            expect_clean(dir);
            assert_int_equal(stored_assertions(dir), N_TOTAL);
            expect_clean(dir);
            tu_rmrf(dir);
            free(dir);
            free(q);
            repaired++;
        }
        free(p);
    }
    print_message("%zu truncations, %d repaired and reopened\n",
                  offs[n] - offs[n - 3], repaired);
    assert_true(repaired >= 3);

    /* an older segment cut short is corruption, not a torn tail */
    load_files(live_dir);
    w = NULL;
    int n_wal = 0;
    for (int i = 0; i < n_files; i++)
        if (files[i].kind == K_WAL && files[i].used > 64 && ++n_wal &&
            (!w || strcmp(files[i].rel, w->rel) < 0))
            w = &files[i]; /* the oldest */
    assert_true(n_wal >= 2);
    assert_non_null(w);
    n = wal_records(w, offs, 4000);
    assert_true(n >= 1);
    for (size_t t = offs[n - 1]; t < offs[n]; t += 7) {
        char *p = tu_printf("%s/%s", live_dir, w->rel);
        struct run r;

        assert_int_equal(truncate(p, (off_t)t), 0);
        run_fsck(live_dir, 0, &r);
        restore(live_dir, w);
        if (!has_error(&r) || has(&r, SDB_FSCK_TORN_TAIL, NULL)) {
            dump(&r);
            fail_msg("older segment %s cut at %zu: expected an error", w->rel,
                     t);
        }
        free(p);
    }
    expect_clean(live_dir);
}

static void append_garbage(const char *dir, const struct file *f, size_t n)
{
    char *p = tu_printf("%s/%s", dir, f->rel);
    unsigned char g[64] = {0};
    FILE *fp = fopen(p, "ab");

    for (size_t i = 0; i < n; i++)
        g[i] = (unsigned char)(tu_rand(&rng) | 1);
    assert_non_null(fp);
    assert_int_equal(fwrite(g, 1, n, fp), n);
    fclose(fp);
    free(p);
}

static void test_fsck_detects_appended_garbage(void **state)
{
    (void)state;
    load_files(live_dir);
    for (int i = 0; i < n_files; i++) {
        for (size_t n = 7; n <= 64; n += 57) {
            struct run r;
            append_garbage(live_dir, &files[i], n);
            run_fsck(live_dir, 0, &r);
            restore(live_dir, &files[i]);
            if (!r.rep.unrepaired || !has(&r, -1, files[i].rel)) {
                dump(&r);
                fail_msg("%zu bytes appended to %s not detected", n,
                         files[i].rel);
            }
        }
    }
    expect_clean(live_dir);
}

/* Run fsck on a scratch copy after cmd (a shell snippet run in it). */
static void mutate(const char *fixture, const char *cmd, int id,
                   const char *file, bool error)
{
    char *dir = scratch(fixture), *sh = tu_printf("cd '%s' && %s", dir, cmd);
    struct run r;

    assert_int_equal(system(sh), 0);
    run_fsck(dir, 0, &r);
    if (r.rc != 0 || !has(&r, id, file) || (error && !has_error(&r)) ||
        (sdb_fsck_msg_severity(id) > SDB_FSCK_INFO && !r.rep.unrepaired)) {
        dump(&r);
        fail_msg("`%s`: expected %s in %s", cmd, sdb_fsck_msg_name(id),
                 file ? file : "(any)");
    }
    tu_rmrf(dir);
    free(dir);
    free(sh);
}

static void test_fsck_detects_deleted_duplicated_swapped_files(void **st)
{
    (void)st;
    /* deleted */
    mutate(live_dir, "rm db/drug/aspirin/@seg-000001.msgpack",
           SDB_FSCK_MISSING_FILE, "db/drug/aspirin/@seg-000001.msgpack", true);
    mutate(live_dir, "rm db/drug/aspirin/@seg-000001.idx",
           SDB_FSCK_MISSING_FILE, "db/drug/aspirin/@seg-000001.idx", true);
    mutate(closed_dir, "rm db/gene/BRCA1/@seg-*", SDB_FSCK_MISSING_RECORD, NULL,
           true);
    mutate(live_dir, "rm metadata.json", SDB_FSCK_MISSING_FILE, "metadata.json",
           true);
    mutate(live_dir, "rm db/indexes/index.snap", SDB_FSCK_NO_SNAPSHOT,
           "db/indexes/index.snap", false);
    mutate(live_dir, "rm \"$(ls wal/*.wal | sed -n 2p)\"",
           SDB_FSCK_MISSING_FILE, NULL, true);
    /* duplicated */
    mutate(live_dir,
           "cd db/drug/aspirin && cp @seg-000001.msgpack @seg-000002.msgpack "
           "&& cp @seg-000001.idx @seg-000002.idx",
           SDB_FSCK_MISPLACED_FILE, "db/drug/aspirin/@seg-000002.idx", true);
    mutate(live_dir, "cp -a db/drug/aspirin db/drug/aspirin2",
           SDB_FSCK_MISPLACED_FILE, "db/drug/aspirin2/@seg-000001.idx", true);
    mutate(
        live_dir,
        "f=$(ls wal/*.wal | tail -1); cp $f wal/segment-00000000000000ff.wal",
        SDB_FSCK_MISPLACED_FILE, "wal/segment-00000000000000ff.wal", true);
    mutate(live_dir, "cp db/indexes/index.snap db/indexes/index.snap.bak",
           SDB_FSCK_ORPHAN_FILE, "db/indexes/index.snap.bak", false);
    mutate(live_dir, "echo hi > db/drug/notes.txt", SDB_FSCK_ORPHAN_FILE,
           "db/drug/notes.txt", false);
    mutate(live_dir, "mkdir db/drug/Bad%zz", SDB_FSCK_BAD_NAME,
           "db/drug/Bad%zz", true);
    /* swapped */
    mutate(live_dir,
           "cd db/drug && for x in msgpack idx; do "
           "mv aspirin/@seg-000001.$x t && "
           "mv ibuprofen/@seg-000001.$x aspirin/@seg-000001.$x && "
           "mv t ibuprofen/@seg-000001.$x; done",
           SDB_FSCK_MISPLACED_FILE, "db/drug/aspirin/@seg-000001.idx", true);
    mutate(live_dir,
           "cd wal && a=$(ls | sed -n 1p) && b=$(ls | sed -n 2p) && "
           "mv $a t && mv $b $a && mv t $b",
           SDB_FSCK_MISPLACED_FILE, NULL, true);
}

static void test_fsck_detects_a_stale_epoch_wal_segment(void **state)
{
    char *dir = scratch(live_dir), *p;
    const struct file *w = NULL;
    unsigned char h[64];
    struct run r;

    (void)state;
    load_files(dir);
    for (int i = 0; i < n_files; i++)
        if (files[i].kind == K_WAL)
            w = &files[i];
    assert_non_null(w);
    memcpy(h, w->orig, 64);
    sdb_put_u64(h + 16, sdb_get_u64(h + 16) ^ 0x1234);
    sdb_put_u64(h + 56, sdb_hash64(h, 56, 0));
    p = tu_printf("%s/%s", dir, w->rel);
    {
        int fd = open(p, O_WRONLY);
        assert_int_equal(pwrite(fd, h, 64, 0), 64);
        close(fd);
    }
    run_fsck(dir, 0, &r);
    if (!has(&r, SDB_FSCK_STALE_SEGMENT, w->rel) || !has_error(&r)) {
        dump(&r);
        fail_msg("stale segment not reported");
    }
    assert_int_equal(has(&r, SDB_FSCK_STALE_SEGMENT, w->rel)->off, 16);
    tu_rmrf(dir);
    free(dir);
    free(p);
}

/* Flip a byte of the record with this LSN range in a concept's segment. */
static void corrupt_record(const char *dir, const char *rel, int which)
{
    char *ip = tu_printf("%s/%s.idx", dir, rel);
    char *dp = tu_printf("%s/%s.msgpack", dir, rel);
    size_t ilen;
    unsigned char *idx = (unsigned char *)tu_read_file(ip, &ilen);
    uint64_t off;
    int fd;
    unsigned char b;

    assert_non_null(idx);
    assert_true(64 + 32 * (size_t)(which + 1) <= ilen);
    off = sdb_get_u64(idx + 64 + 32 * which + 8) + 5;
    fd = open(dp, O_RDWR);
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
    free(idx);
    free(ip);
    free(dp);
}

static void test_fsck_y_drops_only_the_corrupt_record(void **state)
{
    char *dir = scratch(closed_dir);
    struct run r;

    (void)state;
    /* the first aspirin record is from batch A: no WAL copy is left */
    corrupt_record(dir, "db/drug/aspirin/@seg-000001", 0);
    run_fsck(dir, SDB_FSCK_REPAIR_SAFE, &r);
    assert_int_equal(r.rc, 0);
    assert_true(r.rep.unrepaired > 0); /* -p may not lose a record */
    run_fsck(dir, SDB_FSCK_REPAIR_ALL, &r);
    if (r.rc != 0 || !r.rep.repaired || r.rep.unrepaired ||
        r.rep.records_lost != 1 || !has(&r, SDB_FSCK_RECORD_LOST, NULL)) {
        dump(&r);
        fail_msg("-y repair");
    }
    expect_clean(dir);
    assert_int_equal(stored_assertions(dir), N_TOTAL - 1);
    expect_clean(dir);
    tu_rmrf(dir);
    free(dir);
}

static void test_fsck_p_recovers_a_record_from_the_wal(void **state)
{
    char *dir = scratch(closed_dir), *lf;
    struct run r;
    struct stat st;

    (void)state;
    /* the last record of "über/alles" is from batch C, still in the WAL */
    {
        char *ip = tu_printf("%s/" UBER "/@seg-000001.idx", dir);
        long long sz = tu_file_size(ip);
        assert_true(sz > 96);
        corrupt_record(dir, UBER "/@seg-000001", (int)((sz - 64) / 32) - 1);
        free(ip);
    }
    run_fsck(dir, 0, &r);
    assert_non_null(
        has(&r, SDB_FSCK_BAD_CHECKSUM, UBER "/@seg-000001.msgpack"));
    run_fsck(dir, SDB_FSCK_REPAIR_SAFE, &r);
    if (r.rc != 0 || !r.rep.repaired || r.rep.unrepaired ||
        r.rep.records_lost) {
        dump(&r);
        fail_msg("-p repair from the WAL");
    }
    lf = tu_printf("%s/lost+found", dir);
    assert_int_equal(stat(lf, &st), 0);
    expect_clean(dir);
    assert_int_equal(stored_assertions(dir), N_TOTAL);
    tu_rmrf(dir);
    free(dir);
    free(lf);
}

static void test_fsck_p_sets_aside_a_corrupt_snapshot(void **state)
{
    char *dir = scratch(live_dir);
    const struct file *s = NULL;
    struct run r;

    (void)state;
    load_files(dir);
    for (int i = 0; i < n_files; i++)
        if (files[i].kind == K_SNAP)
            s = &files[i];
    assert_non_null(s);
    put_byte(dir, s, s->len / 2, s->orig[s->len / 2] ^ 4);
    run_fsck(dir, SDB_FSCK_REPAIR_SAFE, &r);
    if (r.rc != 0 || !r.rep.repaired || r.rep.unrepaired ||
        !has(&r, SDB_FSCK_BAD_CHECKSUM, "db/indexes/index.snap")->repaired) {
        dump(&r);
        fail_msg("-p on a corrupt snapshot");
    }
    expect_clean(dir);
    assert_int_equal(stored_assertions(dir), N_TOTAL);
    tu_rmrf(dir);
    free(dir);
}

static void test_fsck_y_repairs_every_mutation_kind(void **state)
{
    static const char *const cmds[] = {
        "rm db/drug/aspirin/@seg-000001.idx",
        "cp -a db/drug/aspirin db/drug/aspirin2",
        "echo junk >> db/gene/BRCA1/@seg-000001.msgpack",
        "printf 'xx' >> wal/$(ls wal | tail -1)",
        "echo '{' > metadata.json",
        "mkdir db/drug/Bad%zz",
        "rm \"$(ls wal/*.wal | sed -n 2p)\"",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(*cmds); i++) {
        char *dir = scratch(live_dir),
             *sh = tu_printf("cd '%s' && %s", dir, cmds[i]);
        struct run r;
        uint64_t n;

        assert_int_equal(system(sh), 0);
        run_fsck(dir, SDB_FSCK_REPAIR_ALL, &r);
        if (r.rc != 0 || r.rep.unrepaired || !r.rep.repaired) {
            dump(&r);
            fail_msg("-y after `%s`: rc %d, %llu left", cmds[i], r.rc,
                     (unsigned long long)r.rep.unrepaired);
        }
        expect_clean(dir);
        n = stored_assertions(dir);
        if (n == UINT64_MAX || n + r.rep.records_lost < N_TOTAL)
            fail_msg("after `%s`: %llu assertions, %llu reported lost", cmds[i],
                     (unsigned long long)n,
                     (unsigned long long)r.rep.records_lost);
        expect_clean(dir);
        tu_rmrf(dir);
        free(dir);
        free(sh);
    }
}

static void test_fsck_refuses_to_repair_a_locked_store(void **state)
{
    char *dir = scratch(closed_dir);
    sdb_db *db = open_store(dir, false);
    struct run r;

    (void)state;
    assert_non_null(db);
    run_fsck(dir, SDB_FSCK_REPAIR_SAFE, &r);
    assert_int_equal(r.rc, SDB_ELOCKED);
    assert_int_equal(r.rep.lock_pid, (long)getpid());
    run_fsck(dir, 0, &r);
    assert_int_equal(r.rc, 0);
    assert_non_null(has(&r, SDB_FSCK_LIVE_STORE, "LOCK"));
    assert_int_equal(r.rep.unrepaired, 0);
    sdb_db_close(db);
    tu_rmrf(dir);
    free(dir);
}

static int cancel_at_first_tick(void *arg, const sdb_fsck_problem *p,
                                const sdb_fsck_report *rep)
{
    (void)arg;
    (void)rep;
    return p == NULL;
}

static void test_fsck_cancel_and_operational_errors(void **state)
{
    sdb_fsck_report rep;
    char *missing = tu_printf("%s/no-such-dir", root);

    (void)state;
    assert_int_equal(sdb_fsck(closed_dir, 0, cancel_at_first_tick, NULL, &rep),
                     -ECANCELED);
    assert_true(rep.cancelled);
    assert_int_equal(sdb_fsck(missing, 0, NULL, NULL, &rep), -ENOENT);
    free(missing);
    for (int id = 0; id < SDB_FSCK_MSG_COUNT; id++) {
        assert_non_null(sdb_fsck_msg_name(id));
        assert_true(sdb_fsck_msg_severity(id) >= 0);
    }
    assert_null(sdb_fsck_msg_name(SDB_FSCK_MSG_COUNT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsck_clean_stores_report_nothing),
        cmocka_unit_test(test_fsck_detects_every_single_bit_flip),
        cmocka_unit_test(test_fsck_detects_zeroed_blocks),
        cmocka_unit_test(test_fsck_truncated_wal_tail_is_torn_and_p_repairs_it),
        cmocka_unit_test(test_fsck_detects_appended_garbage),
        cmocka_unit_test(test_fsck_detects_deleted_duplicated_swapped_files),
        cmocka_unit_test(test_fsck_detects_a_stale_epoch_wal_segment),
        cmocka_unit_test(test_fsck_y_drops_only_the_corrupt_record),
        cmocka_unit_test(test_fsck_p_recovers_a_record_from_the_wal),
        cmocka_unit_test(test_fsck_p_sets_aside_a_corrupt_snapshot),
        cmocka_unit_test(test_fsck_y_repairs_every_mutation_kind),
        cmocka_unit_test(test_fsck_refuses_to_repair_a_locked_store),
        cmocka_unit_test(test_fsck_cancel_and_operational_errors),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
