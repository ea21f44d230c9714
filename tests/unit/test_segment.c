/*
 * test_segment.c - the segment store on its own: append and read back,
 * checksum-verified reads (a flipped byte is SDB_ECORRUPT, never served),
 * the scan that checks idx entries against records, cutting a torn tail,
 * segment rollover, the bounded fd cache across many concepts, and the
 * write-behind buffers (one pwrite per file per flush; evictions and
 * syncs write pending bytes first; a failed flush is sticky).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "hash.h"
#include "io_sim.h"
#include "segment.h"
#include "testutil.h"

#define STORE 0xabcdefULL

struct fx {
    char *dir;
    struct sdb_segstore *ss;
    struct sdb_seginfo si;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    f->dir = tu_mkdtemp("seg");
    assert_int_equal(
        sdb_segstore_new(sdb_io_posix(), f->dir, STORE, 4, 256, &f->ss), 0);
    f->si.dir = strdup("a/b");
    f->si.chash = sdb_hash64("a/b", 3, 0);
    f->si.key = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    sdb_segstore_free(f->ss);
    free(f->si.dir);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static int count_cb(void *arg, uint64_t lsn, int type,
                    const struct sdb_loc *loc, const unsigned char *rec)
{
    (void)lsn;
    (void)type;
    (void)loc;
    (void)rec;
    (*(int *)arg)++;
    return 0;
}

static void test_segment_append_then_read_back_verified(void **state)
{
    struct fx *f = *state;
    struct sdb_loc loc[5];
    char buf[64], *path, *img;
    size_t len;

    for (int i = 0; i < 5; i++) {
        char rec[32];
        snprintf(rec, sizeof(rec), "record-%d", i);
        assert_int_equal(sdb_segstore_append(f->ss, &f->si, (uint64_t)i + 1, 1,
                                             rec, strlen(rec), &loc[i]),
                         0);
    }
    assert_int_equal(sdb_segstore_sync(f->ss), 0);
    assert_int_equal(sdb_segstore_read(f->ss, &f->si, &loc[3], buf), 0);
    assert_memory_equal(buf, "record-3", 8);
    /* a flipped byte on disk is refused, never served */
    path = tu_printf("%s/a/b/@seg-000001.msgpack", f->dir);
    img = tu_read_file(path, &len);
    img[loc[3].off + 2] ^= 0x20;
    assert_int_equal(tu_write_file(path, img, len), 0);
    sdb_segstore_free(f->ss);
    assert_int_equal(
        sdb_segstore_new(sdb_io_posix(), f->dir, STORE, 4, 256, &f->ss), 0);
    assert_int_equal(sdb_segstore_read(f->ss, &f->si, &loc[3], buf),
                     SDB_ECORRUPT);
    assert_int_equal(sdb_segstore_read(f->ss, &f->si, &loc[2], buf), 0);
    free(img);
    free(path);
}

static void
test_segment_scan_stops_at_a_torn_entry_and_reset_cuts_it(void **state)
{
    struct fx *f = *state;
    struct sdb_seginfo scanned = {0};
    struct sdb_loc loc;
    char bad[256], *idx;
    int n = 0;

    for (int i = 0; i < 4; i++)
        assert_int_equal(sdb_segstore_append(f->ss, &f->si, (uint64_t)i + 1, 1,
                                             "abcdef", 6, &loc),
                         0);
    assert_int_equal(sdb_segstore_sync(f->ss), 0);
    /* half an idx entry after the four good ones */
    idx = tu_printf("%s/a/b/@seg-000001.idx", f->dir);
    {
        FILE *fp = fopen(idx, "ab");
        fwrite("\x05\0\0\0\0\0\0\0\x18", 1, 9, fp);
        fclose(fp);
    }
    scanned.dir = f->si.dir;
    scanned.chash = f->si.chash;
    assert_int_equal(sdb_seg_scan(sdb_io_posix(), f->dir, &scanned, STORE,
                                  count_cb, &n, bad, sizeof(bad)),
                     0);
    assert_int_equal(n, 4);
    assert_non_null(strstr(bad, "@seg-000001.idx"));
    assert_int_equal(scanned.idx_len,
                     SDB_IDX_HEADER_SIZE + 4 * SDB_IDX_ENTRY_SIZE);
    assert_int_equal(sdb_segstore_reset_tail(f->ss, &scanned), 0);
    assert_int_equal(tu_file_size(idx),
                     SDB_IDX_HEADER_SIZE + 4 * SDB_IDX_ENTRY_SIZE);
    n = 0;
    assert_int_equal(sdb_seg_scan(sdb_io_posix(), f->dir, &scanned, STORE,
                                  count_cb, &n, bad, sizeof(bad)),
                     0);
    assert_int_equal(n, 4);
    assert_string_equal(bad, "");
    free(idx);
}

static void test_segment_rolls_over_and_scan_reads_every_segment(void **state)
{
    struct fx *f = *state;
    struct sdb_seginfo scanned = {0};
    struct sdb_loc loc;
    char rec[100], bad[256];
    int n = 0;

    memset(rec, 'r', sizeof(rec));
    for (int i = 0; i < 10; i++) /* limit 256 bytes: 2 records a segment */
        assert_int_equal(sdb_segstore_append(f->ss, &f->si, (uint64_t)i + 1, 1,
                                             rec, sizeof(rec), &loc),
                         0);
    assert_int_equal(loc.segno, 5);
    assert_int_equal(sdb_segstore_sync(f->ss), 0);
    scanned.dir = f->si.dir;
    scanned.chash = f->si.chash;
    assert_int_equal(sdb_seg_scan(sdb_io_posix(), f->dir, &scanned, STORE,
                                  count_cb, &n, bad, sizeof(bad)),
                     0);
    assert_int_equal(n, 10);
    assert_int_equal(scanned.segno, 5);
    /* a segment swapped in from another concept fails its checksum seed */
    {
        char *a = tu_printf("%s/a/b/@seg-000002.idx", f->dir);
        struct sdb_seginfo other = scanned;
        other.chash ^= 1;
        n = 0;
        assert_int_equal(sdb_seg_scan(sdb_io_posix(), f->dir, &other, STORE,
                                      count_cb, &n, bad, sizeof(bad)),
                         0);
        assert_int_equal(n, 0);
        assert_non_null(strstr(bad, "idx header"));
        free(a);
    }
}

static void test_segment_fd_cache_stays_bounded(void **state)
{
    struct fx *f = *state;
    struct rlimit rl = {64, 64};
    struct sdb_seginfo si[300];
    struct sdb_loc loc;
    char buf[16];

    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    for (int i = 0; i < 300; i++) {
        char dir[32];
        snprintf(dir, sizeof(dir), "c/%d", i);
        memset(&si[i], 0, sizeof(si[i]));
        si[i].dir = strdup(dir);
        si[i].chash = sdb_hash64(dir, strlen(dir), 0);
        si[i].key = (uint32_t)i + 10;
        assert_int_equal(sdb_segstore_append(f->ss, &si[i], (uint64_t)i + 1, 1,
                                             "v", 1, &loc),
                         0);
    }
    assert_int_equal(sdb_segstore_flush(f->ss), 0);
    /* reads of evicted files reopen them */
    for (int i = 0; i < 300; i += 37) {
        struct sdb_loc l = {
            1, 0, 1, sdb_hash64("v", 1, sdb_seg_seed(STORE, si[i].chash, 1))};
        assert_int_equal(sdb_segstore_read(f->ss, &si[i], &l, buf), 0);
        assert_int_equal(buf[0], 'v');
    }
    assert_int_equal(sdb_segstore_sync(f->ss), 0);
    for (int i = 0; i < 300; i++)
        free(si[i].dir);
}

static int scan_count(const char *dir, struct sdb_seginfo *si)
{
    struct sdb_seginfo scanned = {0};
    char bad[256];
    int n = 0;

    scanned.dir = si->dir;
    scanned.chash = si->chash;
    assert_int_equal(sdb_seg_scan(sdb_io_posix(), dir, &scanned, STORE,
                                  count_cb, &n, bad, sizeof(bad)),
                     0);
    assert_string_equal(bad, "");
    return n;
}

static void test_segment_appends_are_written_per_file_at_flush(void **state)
{
    struct fx *f = *state;
    sdb_iosim *sim = sdb_iosim_new(1);
    struct sdb_segstore *ss;
    struct sdb_loc loc;
    uint64_t before;

    assert_int_equal(
        sdb_segstore_new(sdb_iosim_io(sim), f->dir, STORE, 4, 1 << 20, &ss), 0);
    assert_int_equal(sdb_segstore_append(ss, &f->si, 1, 1, "first", 5, &loc),
                     0);
    before = sdb_iosim_calls(sim, SDB_IO_PWRITE); /* the idx header */
    for (int i = 2; i <= 100; i++)
        assert_int_equal(
            sdb_segstore_append(ss, &f->si, (uint64_t)i, 1, "abcdef", 6, &loc),
            0);
    /* nothing written yet: the files hold only the idx header */
    assert_int_equal(sdb_iosim_calls(sim, SDB_IO_PWRITE), before);
    assert_int_equal(scan_count(f->dir, &f->si), 0);
    assert_int_equal(sdb_segstore_flush(ss), 0);
    /* one pwrite for the records, one for their idx entries */
    assert_int_equal(sdb_iosim_calls(sim, SDB_IO_PWRITE), before + 2);
    assert_int_equal(scan_count(f->dir, &f->si), 100);
    assert_int_equal(sdb_segstore_flush(ss), 0); /* nothing left: no call */
    assert_int_equal(sdb_iosim_calls(sim, SDB_IO_PWRITE), before + 2);
    sdb_segstore_free(ss);
    sdb_iosim_free(sim);
}

static void
test_segment_eviction_flush_and_sync_write_pending_bytes(void **state)
{
    struct fx *f = *state;
    struct sdb_seginfo si[10];
    struct sdb_loc loc[10];
    char buf[16];

    /* 10 concepts through a 4-slot cache, no flush in between */
    for (int i = 0; i < 10; i++) {
        char dir[32], rec[16];
        snprintf(dir, sizeof(dir), "e/%d", i);
        snprintf(rec, sizeof(rec), "rec-%d", i);
        memset(&si[i], 0, sizeof(si[i]));
        si[i].dir = strdup(dir);
        si[i].chash = sdb_hash64(dir, strlen(dir), 0);
        si[i].key = (uint32_t)i + 10;
        assert_int_equal(sdb_segstore_append(f->ss, &si[i], (uint64_t)i + 1, 1,
                                             rec, strlen(rec), &loc[i]),
                         0);
    }
    /* the six evicted concepts were written out when their slot went */
    for (int i = 0; i < 6; i++)
        assert_int_equal(scan_count(f->dir, &si[i]), 1);
    assert_int_equal(scan_count(f->dir, &si[9]), 0);
    /* a flush writes the rest; readers see records once flushed */
    assert_int_equal(sdb_segstore_flush(f->ss), 0);
    assert_int_equal(scan_count(f->dir, &si[9]), 1);
    assert_int_equal(sdb_segstore_read(f->ss, &si[9], &loc[9], buf), 0);
    assert_memory_equal(buf, "rec-9", 5);
    assert_int_equal(
        sdb_segstore_append(f->ss, &si[8], 20, 1, "later", 5, &loc[8]), 0);
    /* a sync writes what is pending before it syncs */
    assert_int_equal(sdb_segstore_sync(f->ss), 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(scan_count(f->dir, &si[i]), i == 8 ? 2 : 1);
        free(si[i].dir);
    }
}

static void test_segment_failed_flush_is_sticky(void **state)
{
    struct fx *f = *state;
    sdb_iosim *sim = sdb_iosim_new(2);
    struct sdb_segstore *ss;
    struct sdb_loc loc;

    assert_int_equal(
        sdb_segstore_new(sdb_iosim_io(sim), f->dir, STORE, 4, 1 << 20, &ss), 0);
    assert_int_equal(sdb_segstore_append(ss, &f->si, 1, 1, "abc", 3, &loc), 0);
    sdb_iosim_fail(sim, SDB_IO_PWRITE, sdb_iosim_calls(sim, SDB_IO_PWRITE) + 1,
                   false, EIO);
    assert_int_equal(sdb_segstore_flush(ss), -EIO);
    /* the next pwrite would succeed, but the lost bytes are never synced
     * as if they were there */
    assert_int_equal(sdb_segstore_append(ss, &f->si, 2, 1, "def", 3, &loc), 0);
    assert_int_equal(sdb_segstore_sync(ss), -EIO);
    assert_int_equal(sdb_segstore_sync(ss), -EIO);
    sdb_segstore_free(ss);
    sdb_iosim_free(sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_segment_append_then_read_back_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_segment_scan_stops_at_a_torn_entry_and_reset_cuts_it, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_segment_rolls_over_and_scan_reads_every_segment, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_segment_fd_cache_stays_bounded,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_segment_appends_are_written_per_file_at_flush, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_segment_eviction_flush_and_sync_write_pending_bytes, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_segment_failed_flush_is_sticky,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
