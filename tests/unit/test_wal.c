/*
 * test_wal.c - the WAL module on its own: segment creation and headers,
 * framing and checksums, the recovery scan (records handed back in order,
 * only past the checkpoint), rotation, recycling, archiving, and bad input
 * (garbage, wrong store, bad magic, a version from the future).
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
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "testutil.h"
#include "wal.h"

#define STORE 0x1122334455667788ULL

struct seen {
    uint64_t lsn[64];
    uint32_t cnt[64];
    char first[64];
    int n;
};

static int collect(void *arg, uint64_t lsn, uint32_t count,
                   const unsigned char *payload, size_t len)
{
    struct seen *s = arg;

    s->lsn[s->n] = lsn;
    s->cnt[s->n] = count;
    s->first[s->n] = len ? (char)payload[0] : 0;
    s->n++;
    return 0;
}

static struct sdb_wal_config cfg(const char *dir, const char *arch)
{
    struct sdb_wal_config c = {0};

    c.io = sdb_io_posix();
    c.dir = dir;
    c.archive_dir = arch;
    c.store_id = STORE;
    c.segment_bytes = 4096;
    return c;
}

/* A WAL with records 1..n (one per append, payload "A" + i). */
static char *make_wal(int n)
{
    char *dir = tu_mkdtemp("wal");
    struct sdb_wal_config c = cfg(dir, NULL);
    struct sdb_wal *w;
    sdb_error err = {0};
    uint64_t last;

    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     0);
    assert_int_equal(sdb_wal_rotate(w, 1), 0);
    for (int i = 1; i <= n; i++) {
        char p[8] = {(char)('A' + i), 'x', 'y'};
        assert_int_equal(sdb_wal_append(w, (uint64_t)i, 1, p, 3, NULL), 0);
    }
    sdb_wal_close(w);
    return dir;
}

static void test_wal_scan_returns_records_past_the_checkpoint(void **state)
{
    char *dir = make_wal(10);
    struct sdb_wal_config c = cfg(dir, NULL);
    struct sdb_wal *w;
    struct seen s = {0};
    sdb_error err = {0};
    uint64_t last;

    (void)state;
    assert_int_equal(sdb_wal_open(&c, false, 4, collect, &s, &w, &last, &err),
                     0);
    assert_int_equal(last, 10);
    assert_int_equal(s.n, 6);
    assert_int_equal(s.lsn[0], 5);
    assert_int_equal(s.first[0], 'A' + 5);
    assert_int_equal(s.lsn[5], 10);
    sdb_wal_close(w);
    tu_rmrf(dir);
    free(dir);
}

static void test_wal_rotates_when_full_and_keeps_lsn_order(void **state)
{
    char *dir = tu_mkdtemp("walrot");
    struct sdb_wal_config c = cfg(dir, NULL);
    struct sdb_wal *w;
    struct sdb_wal_stats st;
    struct seen s = {0};
    sdb_error err = {0};
    unsigned char big[1500];
    uint64_t last;

    (void)state;
    memset(big, 'z', sizeof(big));
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     0);
    assert_int_equal(sdb_wal_rotate(w, 1), 0);
    for (uint64_t i = 1; i <= 8; i++)
        assert_int_equal(sdb_wal_append(w, i, 1, big, sizeof(big), NULL), 0);
    /* an LSN out of order is refused */
    assert_int_equal(sdb_wal_append(w, 20, 1, big, 10, NULL), SDB_EINVAL);
    sdb_wal_get_stats(w, &st);
    assert_true(st.segments >= 4);
    sdb_wal_close(w);
    assert_int_equal(sdb_wal_open(&c, false, 0, collect, &s, &w, &last, &err),
                     0);
    assert_int_equal(s.n, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(s.lsn[i], (uint64_t)i + 1);
    /* recycle everything sealed up to LSN 8: only the newest stays */
    assert_true(sdb_wal_recycle(w, 8) >= 3);
    sdb_wal_get_stats(w, &st);
    assert_int_equal(st.segments, 1);
    sdb_wal_close(w);
    tu_rmrf(dir);
    free(dir);
}

static void test_wal_archives_sealed_segments_before_recycling(void **state)
{
    char *dir = tu_mkdtemp("walarc"), *arch = tu_printf("%s/arch", dir);
    char *wd = tu_printf("%s/wal", dir), *copy;
    struct sdb_wal_config c;
    struct sdb_wal *w;
    struct sdb_wal_stats st;
    sdb_error err = {0};
    uint64_t last;
    size_t len;

    (void)state;
    mkdir(wd, 0755);
    mkdir(arch, 0755);
    c = cfg(wd, arch);
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     0);
    assert_int_equal(sdb_wal_rotate(w, 1), 0);
    assert_int_equal(sdb_wal_append(w, 1, 1, "abc", 3, NULL), 0);
    assert_int_equal(sdb_wal_rotate(w, 2), 0);
    /* not archived yet: recycling must keep it */
    assert_int_equal(sdb_wal_recycle(w, 1), 0);
    assert_int_equal(sdb_wal_archive_pending(w), 1);
    copy = tu_printf("%s/segment-0000000000000001.wal", arch);
    assert_true(tu_file_size(copy) == SDB_WAL_HEADER_SIZE + 32 + 3);
    (void)len;
    assert_int_equal(sdb_wal_recycle(w, 1), 1);
    sdb_wal_get_stats(w, &st);
    assert_int_equal(st.segments, 1);
    assert_int_equal(st.archived, 1);
    sdb_wal_close(w);
    tu_rmrf(dir);
    free(dir);
    free(arch);
    free(wd);
    free(copy);
}

static void test_wal_check_record_rejects_garbage(void **state)
{
    unsigned char buf[256];
    uint64_t seed = sdb_wal_seed(STORE, 1), rng = tu_seed(7), lsn;
    uint32_t cnt;
    size_t rl;

    (void)state;
    memset(buf, 0, sizeof(buf));
    assert_int_equal(
        sdb_wal_check_record(buf, sizeof(buf), 0, seed, &rl, &lsn, &cnt), 0);
    for (int i = 0; i < 20000; i++) {
        for (size_t j = 0; j < sizeof(buf); j++)
            buf[j] = (unsigned char)tu_rand(&rng);
        sdb_put_u32(buf, SDB_WAL_REC_MAGIC); /* the worst case */
        buf[4] = 1;
        assert_int_equal(
            sdb_wal_check_record(buf, sizeof(buf), 0, seed, &rl, &lsn, &cnt),
            0);
    }
    /* past the end of the buffer */
    assert_int_equal(
        sdb_wal_check_record(buf, sizeof(buf), 250, seed, &rl, &lsn, &cnt), 0);
    assert_int_equal(
        sdb_wal_check_record(buf, sizeof(buf), 9999, seed, &rl, &lsn, &cnt), 0);
}

static void test_wal_open_refuses_foreign_and_future_segments(void **state)
{
    char *dir = make_wal(3), *seg, *img;
    struct sdb_wal_config c = cfg(dir, NULL);
    struct sdb_wal *w = NULL;
    sdb_error err = {0};
    uint64_t last;
    size_t len;

    (void)state;
    seg = tu_printf("%s/segment-0000000000000001.wal", dir);
    /* another store's segment */
    c.store_id = STORE + 1;
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     SDB_ECORRUPT);
    assert_non_null(strstr(err.message, "stale or misplaced"));
    c.store_id = STORE;
    /* a format version from the future, header checksum intact */
    img = tu_read_file(seg, &len);
    sdb_put_u32((unsigned char *)img + 8, 99);
    sdb_put_u64((unsigned char *)img + 56, sdb_hash64(img, 56, 0));
    assert_int_equal(tu_write_file(seg, img, len), 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     SDB_EVERSION);
    assert_true(tu_file_size(seg) > 0); /* never deleted */
    /* bad magic */
    img[0] = 'X';
    assert_int_equal(tu_write_file(seg, img, len), 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     SDB_ECORRUPT);
    assert_non_null(strstr(err.message, "magic"));
    free(img);
    free(seg);
    tu_rmrf(dir);
    free(dir);
}

static void test_wal_zeroes_a_torn_tail_of_the_newest_segment(void **state)
{
    char *dir = make_wal(3), *seg, *img;
    struct sdb_wal_config c = cfg(dir, NULL);
    struct sdb_wal *w;
    struct seen s = {0};
    sdb_error err = {0};
    uint64_t last;
    size_t len, end = SDB_WAL_HEADER_SIZE + 3 * (32 + 3);

    (void)state;
    seg = tu_printf("%s/segment-0000000000000001.wal", dir);
    img = tu_read_file(seg, &len);
    memcpy(img + end, "SMDR\x01garbage", 12); /* a torn fourth record */
    assert_int_equal(tu_write_file(seg, img, len), 0);
    assert_int_equal(sdb_wal_open(&c, false, 0, collect, &s, &w, &last, &err),
                     0);
    assert_int_equal(s.n, 3);
    assert_int_equal(last, 3);
    sdb_wal_close(w);
    free(img);
    img = tu_read_file(seg, &len);
    for (size_t i = end; i < len; i++)
        assert_int_equal(img[i], 0);
    free(img);
    free(seg);
    tu_rmrf(dir);
    free(dir);
}

/* ---- zeros written ahead of the records (zero_ahead in wal.c) ---- */

#define MIB (1u << 20)

/* The pwrites of one run: [off, off + len) and whether all were zeros. */
struct wlog {
    struct {
        uint64_t off, len;
        bool zeros;
    } v[256];
    int n;
};
static struct wlog wlog;

static ssize_t rec_pwrite(void *ctx, int fd, const void *buf, size_t n,
                          off_t off)
{
    const unsigned char *b = buf;
    bool z = true;

    for (size_t i = 0; z && i < n; i++)
        z = b[i] == 0;
    if (wlog.n < (int)(sizeof(wlog.v) / sizeof(wlog.v[0]))) {
        wlog.v[wlog.n].off = (uint64_t)off;
        wlog.v[wlog.n].len = n;
        wlog.v[wlog.n].zeros = z;
        wlog.n++;
    }
    return sdb_io_posix()->pwrite(ctx, fd, buf, n, off);
}

/* Does the file system call [off, off + len) of path written (not an
 * unwritten preallocated extent)?  -1 if it cannot tell (no FIEMAP). */
static int extent_written(const char *path, uint64_t off, uint64_t len)
{
    union {
        struct fiemap fm;
        unsigned char
            raw[sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent)];
    } q;
    int fd = open(path, O_RDONLY), rc = 1;

    if (fd < 0)
        return -1;
    memset(&q, 0, sizeof(q));
    q.fm.fm_start = off;
    q.fm.fm_length = len;
    q.fm.fm_flags = FIEMAP_FLAG_SYNC;
    q.fm.fm_extent_count = 64;
    if (ioctl(fd, FS_IOC_FIEMAP, &q.fm) < 0 || q.fm.fm_mapped_extents == 0)
        rc = -1;
    for (unsigned i = 0; rc == 1 && i < q.fm.fm_mapped_extents; i++)
        if (q.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            rc = 0;
    close(fd);
    return rc;
}

static void test_wal_writes_zeros_a_step_ahead_of_the_records(void **state)
{
    char *dir = tu_mkdtemp("walzero");
    struct sdb_wal_config c = cfg(dir, NULL);
    sdb_io io = *sdb_io_posix();
    struct sdb_wal *w;
    sdb_error err = {0};
    unsigned char rec[100000];
    uint64_t last, used = 64, lsn = 1;
    char name[40], *seg;
    int fiemap;

    (void)state;
    memset(rec, 'r', sizeof(rec));
    io.pwrite = rec_pwrite;
    c.io = &io;
    c.segment_bytes = 2 * MIB + MIB / 2;
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     0);
    assert_int_equal(sdb_wal_rotate(w, 1), 0);
    sdb_wal_segment_name(1, name);
    seg = tu_printf("%s/%s", dir, name);
    memset(&wlog, 0, sizeof(wlog));
    /* the first record: zeros from the header to 1 MiB go first */
    assert_int_equal(sdb_wal_append(w, lsn++, 1, rec, 1000, NULL), 0);
    assert_int_equal(wlog.n, 3);
    assert_true(wlog.v[0].zeros);
    assert_int_equal(wlog.v[0].off, 64);
    assert_int_equal(wlog.v[0].off + wlog.v[0].len, MIB);
    fiemap = extent_written(seg, 0, MIB);
    if (fiemap >= 0) { /* ext4, XFS: the step is written, the rest not */
        assert_int_equal(fiemap, 1);
        assert_int_equal(extent_written(seg, MIB, MIB), 0);
    } else {
        print_message("no FIEMAP here: checked by the write log only\n");
    }
    used += 32 + 1000;
    /* records up to the end of the segment: one step of zeros each time a
     * record crosses a MiB boundary, never over a record, never past the
     * preallocated size */
    int steps = 0;
    while (used + 32 + sizeof(rec) <= c.segment_bytes) {
        memset(&wlog, 0, sizeof(wlog));
        assert_int_equal(sdb_wal_append(w, lsn++, 1, rec, sizeof(rec), NULL),
                         0);
        for (int i = 0; i < wlog.n; i++) {
            if (!wlog.v[i].zeros)
                continue;
            steps++;
            assert_true(wlog.v[i].off >= used);
            assert_true(wlog.v[i].off + wlog.v[i].len <= c.segment_bytes);
            assert_int_equal(wlog.v[i].off % MIB, 0);
        }
        used += 32 + sizeof(rec);
    }
    assert_int_equal(steps, 2); /* [1, 2) MiB and [2, 2.5) MiB */
    if (fiemap >= 0)
        assert_int_equal(extent_written(seg, MIB, MIB), 1);
    sdb_wal_close(w);
    /* the records read back; the zeros are no torn tail */
    c.io = sdb_io_posix();
    assert_int_equal(sdb_wal_open(&c, false, 0, NULL, NULL, &w, &last, &err),
                     0);
    assert_int_equal(last, lsn - 1);
    sdb_wal_close(w);
    free(seg);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wal_scan_returns_records_past_the_checkpoint),
        cmocka_unit_test(test_wal_rotates_when_full_and_keeps_lsn_order),
        cmocka_unit_test(test_wal_archives_sealed_segments_before_recycling),
        cmocka_unit_test(test_wal_check_record_rejects_garbage),
        cmocka_unit_test(test_wal_open_refuses_foreign_and_future_segments),
        cmocka_unit_test(test_wal_zeroes_a_torn_tail_of_the_newest_segment),
        cmocka_unit_test(test_wal_writes_zeros_a_step_ahead_of_the_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
