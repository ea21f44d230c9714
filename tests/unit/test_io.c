/*
 * test_io.c - the I/O seam: the POSIX helpers of io.c (full writes and
 * reads, atomic replace, durable mkdir -p, bounded reads) and the test
 * backend of io_sim.c (fault injection, crash, power loss).  Every check
 * reads the real bytes on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "io.h"
#include "io_sim.h"
#include "testutil.h"

struct fixture {
    char *dir;
    sdb_iosim *sim;
    const sdb_io *io; /* the simulator's table */
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    fx->dir = tu_mkdtemp("io");
    fx->sim = sdb_iosim_new(tu_seed(42));
    assert_non_null(fx->sim);
    fx->io = sdb_iosim_io(fx->sim);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    sdb_iosim_free(fx->sim);
    tu_rmrf(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

/* ---- helpers ---- */

static char *path_in(const struct fixture *fx, const char *name)
{
    return tu_printf("%s/%s", fx->dir, name);
}

static void fill(unsigned char *buf, size_t n, unsigned seed)
{
    size_t i;

    for (i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 31 + seed * 7 + 1);
}

static int open_rw(const sdb_io *io, const char *path)
{
    int fd = io->open(io->ctx, path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);

    assert_true(fd >= 0);
    return fd;
}

/* Assert that path holds exactly buf[0..n). */
static void assert_file_is(const char *path, const void *buf, size_t n)
{
    size_t len = 0;
    char *got = tu_read_file(path, &len);

    assert_non_null(got);
    assert_int_equal(len, n);
    assert_memory_equal(got, buf, n);
    free(got);
}

static bool exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

/*
 * Create path (durably: file and parent dir fsync'd) holding n bytes
 * produced by fill(seed), through io.
 */
static void make_synced(const sdb_io *io, const char *path, unsigned char *buf,
                        size_t n, unsigned seed)
{
    int fd = open_rw(io, path);

    fill(buf, n, seed);
    assert_int_equal(sdb_io_pwrite_all(io, fd, buf, n, 0), 0);
    assert_int_equal(io->fsync(io->ctx, fd), 0);
    assert_int_equal(io->close(io->ctx, fd), 0);
    assert_int_equal(sdb_io_fsync_parent(io, path), 0);
}

/* ---- a custom backend for short writes, EINTR and zero-byte writes ---- */

struct flaky {
    size_t max_chunk; /* bytes per call at most */
    int eintr_every;  /* every Nth call fails with -EINTR (0: never) */
    bool zero;        /* every call writes nothing and returns 0 */
    int calls;
};

static ssize_t flaky_pwrite(void *ctx, int fd, const void *buf, size_t n,
                            off_t off)
{
    struct flaky *fl = ctx;
    const sdb_io *px = sdb_io_posix();

    fl->calls++;
    if (fl->zero)
        return 0;
    if (fl->eintr_every && fl->calls % fl->eintr_every == 0)
        return -EINTR;
    if (n > fl->max_chunk)
        n = fl->max_chunk;
    return px->pwrite(px->ctx, fd, buf, n, off);
}

static sdb_io flaky_io(struct flaky *fl)
{
    sdb_io io = *sdb_io_posix();

    io.ctx = fl;
    io.pwrite = flaky_pwrite;
    return io;
}

static void test_pwrite_all_loops_over_short_writes(void **state)
{
    struct fixture *fx = *state;
    struct flaky fl = {.max_chunk = 7};
    sdb_io io = flaky_io(&fl);
    char *path = path_in(fx, "short");
    unsigned char buf[1000];
    int fd = open_rw(sdb_io_posix(), path);

    fill(buf, sizeof(buf), 1);
    assert_int_equal(sdb_io_pwrite_all(&io, fd, buf, sizeof(buf), 0), 0);
    assert_int_equal(fl.calls, (sizeof(buf) + 6) / 7);
    close(fd);
    assert_file_is(path, buf, sizeof(buf));
    free(path);
}

static void test_pwrite_all_retries_after_eintr(void **state)
{
    struct fixture *fx = *state;
    struct flaky fl = {.max_chunk = 100, .eintr_every = 2};
    sdb_io io = flaky_io(&fl);
    char *path = path_in(fx, "eintr");
    unsigned char buf[1000];
    int fd = open_rw(sdb_io_posix(), path);

    fill(buf, sizeof(buf), 2);
    assert_int_equal(sdb_io_pwrite_all(&io, fd, buf, sizeof(buf), 0), 0);
    assert_int_equal(fl.calls, 19); /* 10 writes, 9 EINTRs between them */
    close(fd);
    assert_file_is(path, buf, sizeof(buf));
    free(path);
}

static void test_pwrite_all_turns_a_zero_byte_write_into_eio(void **state)
{
    struct fixture *fx = *state;
    struct flaky fl = {.max_chunk = 100, .zero = true};
    sdb_io io = flaky_io(&fl);
    char *path = path_in(fx, "zero");
    unsigned char buf[10] = {0};
    int fd = open_rw(sdb_io_posix(), path);

    assert_int_equal(sdb_io_pwrite_all(&io, fd, buf, sizeof(buf), 0), -EIO);
    assert_int_equal(fl.calls, 1);
    close(fd);
    assert_int_equal(tu_file_size(path), 0);
    free(path);
}

static void test_pread_all_reports_a_short_file_as_corrupt(void **state)
{
    struct fixture *fx = *state;
    const sdb_io *px = sdb_io_posix();
    char *path = path_in(fx, "shortread");
    unsigned char buf[100], got[200];
    int fd;

    fill(buf, sizeof(buf), 3);
    assert_int_equal(tu_write_file(path, buf, sizeof(buf)), 0);
    fd = px->open(px->ctx, path, O_RDONLY, 0);
    assert_true(fd >= 0);
    assert_int_equal(sdb_io_pread_all(px, fd, got, 100, 0), 0);
    assert_memory_equal(got, buf, 100);
    assert_int_equal(sdb_io_pread_all(px, fd, got, 101, 0), SDB_ECORRUPT);
    assert_int_equal(sdb_io_pread_upto(px, fd, got, 200, 50), 50);
    assert_memory_equal(got, buf + 50, 50);
    px->close(px->ctx, fd);
    free(path);
}

/* ---- write_file_atomic ---- */

static void write_old_content(struct fixture *fx, const char *path)
{
    assert_int_equal(tu_write_file(path, "old", 3), 0);
    (void)fx;
}

static void
test_write_file_atomic_replaces_the_content_and_leaves_no_tmp(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "meta"), *tmp = path_in(fx, "meta.tmp");

    write_old_content(fx, path);
    assert_int_equal(
        sdb_io_write_file_atomic(fx->io, fx->dir, "meta", "new!", 4), 0);
    assert_file_is(path, "new!", 4);
    assert_false(exists(tmp));
    /* the tmp file and the directory were both fsync'd */
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_FSYNC), 2);
    free(path);
    free(tmp);
}

static void
test_write_file_atomic_keeps_the_old_content_if_rename_fails(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "meta"), *tmp = path_in(fx, "meta.tmp");

    write_old_content(fx, path);
    sdb_iosim_fail(fx->sim, SDB_IO_RENAME, 1, false, EIO);
    assert_int_equal(
        sdb_io_write_file_atomic(fx->io, fx->dir, "meta", "new!", 4), -EIO);
    assert_file_is(path, "old", 3);
    assert_false(exists(tmp));
    free(path);
    free(tmp);
}

static void
test_write_file_atomic_keeps_the_old_content_if_fsync_fails(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "meta"), *tmp = path_in(fx, "meta.tmp");

    write_old_content(fx, path);
    sdb_iosim_fail(fx->sim, SDB_IO_FSYNC, 1, false, EIO);
    assert_int_equal(
        sdb_io_write_file_atomic(fx->io, fx->dir, "meta", "new!", 4), -EIO);
    assert_file_is(path, "old", 3);
    assert_false(exists(tmp));
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_RENAME), 0);
    free(path);
    free(tmp);
}

static void test_write_file_atomic_reports_a_failed_dir_fsync(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "meta"), *tmp = path_in(fx, "meta.tmp");

    write_old_content(fx, path);
    sdb_iosim_fail(fx->sim, SDB_IO_FSYNC, 2, false, EIO);
    assert_int_equal(
        sdb_io_write_file_atomic(fx->io, fx->dir, "meta", "new!", 4), -EIO);
    assert_file_is(path, "new!", 4); /* renamed, but not known durable */
    assert_false(exists(tmp));
    free(path);
    free(tmp);
}

/* ---- mkdirs, read_file ---- */

static void test_mkdirs_rejects_dot_dot_and_empty_components(void **state)
{
    struct fixture *fx = *state;
    static const char *const bad[] = {"..", "a/../b", "a/..", ".", "a/./b",
                                      "",   "/a",     "a//b", "a/"};
    size_t i;
    char *a = path_in(fx, "a");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, bad[i]), SDB_EINVAL);
    assert_false(exists(a));
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_MKDIR), 0);
    free(a);
}

static void
test_mkdirs_creates_each_missing_dir_and_syncs_its_parent(void **state)
{
    struct fixture *fx = *state;
    char *abc = path_in(fx, "a/b/c"), *ab = path_in(fx, "a/b");
    char *f = path_in(fx, "a/b/file");
    struct stat st;

    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "a/b/c"), 0);
    assert_int_equal(stat(abc, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_FSYNC), 3);
    /* existing directories are fine, and cost no fsync */
    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "a/b/c"), 0);
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_FSYNC), 3);
    /* every name was made durable: power loss keeps the whole chain */
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_int_equal(stat(abc, &st), 0);
    /* a file in the way */
    assert_int_equal(tu_write_file(f, "x", 1), 0);
    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "a/b/file/d"), -ENOTDIR);
    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "a/b/file"), -ENOTDIR);
    free(abc);
    free(ab);
    free(f);
}

static void test_read_file_honours_its_size_bound(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "small"), *empty = path_in(fx, "empty");
    unsigned char buf[100];
    char *got = NULL;
    size_t len = 0;

    fill(buf, sizeof(buf), 4);
    assert_int_equal(tu_write_file(path, buf, sizeof(buf)), 0);
    assert_int_equal(sdb_io_read_file(fx->io, path, 99, &got, &len),
                     SDB_ETOOBIG);
    assert_null(got);
    assert_int_equal(sdb_io_read_file(fx->io, path, 100, &got, &len), 0);
    assert_int_equal(len, 100);
    assert_memory_equal(got, buf, 100);
    assert_int_equal(got[100], '\0');
    free(got);
    assert_int_equal(tu_write_file(empty, "", 0), 0);
    assert_int_equal(sdb_io_read_file(fx->io, empty, 0, &got, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(got[0], '\0');
    free(got);
    assert_int_equal(sdb_io_read_file(fx->io, fx->dir, 1 << 20, &got, &len),
                     -EISDIR);
    free(path);
    free(empty);
}

/* ---- fault injection and crash ---- */

static void write_three(struct fixture *fx, int fd, int expect2, int expect3)
{
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "a", 1, 0), 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "b", 1, 1), expect2);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "c", 1, 2), expect3);
}

static void test_fail_once_fails_only_the_nth_call(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "once");
    int fd = open_rw(fx->io, path);

    sdb_iosim_fail(fx->sim, SDB_IO_PWRITE, 2, false, ENOSPC);
    write_three(fx, fd, -ENOSPC, 0);
    assert_int_equal(sdb_iosim_calls(fx->sim, SDB_IO_PWRITE), 3);
    fx->io->close(fx->io->ctx, fd);
    assert_file_is(path, "a\0c", 3); /* the failed write did nothing */
    free(path);
}

static void test_fail_forever_fails_every_call_from_the_nth_on(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "forever");
    int fd = open_rw(fx->io, path);

    sdb_iosim_fail(fx->sim, SDB_IO_PWRITE, 2, true, EIO);
    write_three(fx, fd, -EIO, -EIO);
    assert_int_equal(fx->io->fsync(fx->io->ctx, fd), 0); /* other ops work */
    fx->io->close(fx->io->ctx, fd);
    assert_file_is(path, "a", 1);
    free(path);
}

static void test_crash_after_makes_every_later_call_fail(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "crash");
    char got[4];
    int fd = open_rw(fx->io, path); /* creating open: mutation 1 */

    assert_int_equal(sdb_iosim_mutations(fx->sim), 1);
    sdb_iosim_crash_after(fx->sim, 2);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "a", 1, 0), 0);
    assert_false(sdb_iosim_crashed(fx->sim));
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "b", 1, 1), 0);
    assert_true(sdb_iosim_crashed(fx->sim));
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "c", 1, 2), -EIO);
    assert_int_equal(fx->io->pread(fx->io->ctx, fd, got, 1, 0), -EIO);
    assert_int_equal(fx->io->fsync(fx->io->ctx, fd), -EIO);
    assert_int_equal(fx->io->mkdir(fx->io->ctx, path, 0755), -EIO);
    assert_int_equal(fx->io->open(fx->io->ctx, path, O_RDONLY, 0), -EIO);
    assert_int_equal(sdb_iosim_mutations(fx->sim), 3);
    assert_int_equal(fx->io->close(fx->io->ctx, fd), 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* the real fd is closed */
    assert_file_is(path, "ab", 2);
    free(path);
}

/* ---- power loss ---- */

enum { SYNCED = 8192, APPEND = 4096 };

static void test_power_loss_keeps_synced_data_in_every_mode(void **state)
{
    struct fixture *fx = *state;
    unsigned char a[SYNCED], b[APPEND];
    unsigned mode, round;

    for (mode = 1; mode <= SDB_IOSIM_ALL; mode++)
        for (round = 0; round < 8; round++) {
            char *path = tu_printf("%s/f%u-%u", fx->dir, mode, round);
            long long size;
            int fd;

            make_synced(fx->io, path, a, sizeof(a), mode);
            fd = open_rw(fx->io, path);
            fill(b, sizeof(b), 99);
            assert_int_equal(
                sdb_io_pwrite_all(fx->io, fd, b, sizeof(b), SYNCED), 0);
            assert_int_equal(
                sdb_io_pwrite_all(fx->io, fd, b, 100, SYNCED + 2 * APPEND), 0);
            fx->io->close(fx->io->ctx, fd);
            assert_int_equal(sdb_iosim_power_loss(fx->sim, mode), 0);
            size = tu_file_size(path);
            assert_true(size >= SYNCED && size <= SYNCED + 2 * APPEND + 100);
            {
                size_t len;
                char *got = tu_read_file(path, &len);

                assert_non_null(got);
                assert_memory_equal(got, a, SYNCED);
                free(got);
            }
            free(path);
        }
}

static void test_power_loss_with_drop_only_removes_unsynced_writes(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "drop");
    unsigned char a[SYNCED], b[APPEND];
    int fd;

    make_synced(fx->io, path, a, sizeof(a), 5);
    fd = open_rw(fx->io, path);
    fill(b, sizeof(b), 6);
    /* an overwrite, an append, a hole-leaving append, and a truncate */
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, 1000, 3000), 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, APPEND, SYNCED), 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, 10, SYNCED + 3 * APPEND),
                     0);
    assert_int_equal(fx->io->ftruncate(fx->io->ctx, fd, 5000), 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, 50, 4990), 0);
    assert_int_equal(fx->io->fdatasync(fx->io->ctx, fd), 0);
    /* only this one is unsynced after the fdatasync */
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, APPEND, 5040), 0);
    fx->io->close(fx->io->ctx, fd);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_DROP), 0);
    memcpy(a + 3000, b, 1000);
    memcpy(a + 4990, b, 50);
    assert_file_is(path, a, 5040);
    free(path);
}

static void
test_power_loss_with_drop_only_restores_every_overwrite(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "drop2");
    unsigned char a[SYNCED], b[APPEND];
    int fd, i;

    make_synced(fx->io, path, a, sizeof(a), 7);
    fd = open_rw(fx->io, path);
    fill(b, sizeof(b), 8);
    for (i = 0; i < 50; i++) /* overlapping overwrites and appends */
        assert_int_equal(
            sdb_io_pwrite_all(fx->io, fd, b, 300 + (size_t)i, (off_t)i * 200),
            0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, APPEND, SYNCED + 100), 0);
    assert_int_equal(fx->io->ftruncate(fx->io->ctx, fd, 100), 0);
    fx->io->close(fx->io->ctx, fd);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_DROP), 0);
    assert_file_is(path, a, SYNCED);
    free(path);
}

static void
test_power_loss_with_garble_only_scrambles_unsynced_ranges(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "garble");
    static const unsigned char zeros[APPEND];
    unsigned char a[SYNCED], b[APPEND];
    size_t len;
    char *got;
    int fd;

    make_synced(fx->io, path, a, sizeof(a), 9);
    fd = open_rw(fx->io, path);
    fill(b, sizeof(b), 10);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, 512, 1024), 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, APPEND, SYNCED), 0);
    fx->io->close(fx->io->ctx, fd);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_GARBLE), 0);
    got = tu_read_file(path, &len);
    assert_non_null(got);
    assert_int_equal(len, SYNCED + APPEND);
    assert_memory_equal(got, a, 1024);
    assert_memory_not_equal(got + 1024, b, 512);
    assert_memory_not_equal(got + 1024, a + 1024, 512);
    assert_memory_equal(got + 1536, a + 1536, SYNCED - 1536);
    assert_memory_not_equal(got + SYNCED, b, APPEND);
    assert_memory_not_equal(got + SYNCED, zeros, APPEND);
    free(got);
    free(path);
}

static void test_power_loss_with_keep_only_keeps_unsynced_writes(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "keep");
    unsigned char a[SYNCED], b[APPEND];
    int fd;

    make_synced(fx->io, path, a, sizeof(a), 11);
    fd = open_rw(fx->io, path);
    fill(b, sizeof(b), 12);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, b, APPEND, 100), 0);
    fx->io->close(fx->io->ctx, fd);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_KEEP), 0);
    memcpy(a + 100, b, APPEND);
    assert_file_is(path, a, SYNCED);
    free(path);
}

static void write_unsynced_file(const sdb_io *io, const char *path)
{
    int fd = open_rw(io, path);

    assert_int_equal(sdb_io_pwrite_all(io, fd, "data", 4, 0), 0);
    assert_int_equal(io->fsync(io->ctx, fd), 0); /* the data, not the name */
    assert_int_equal(io->close(io->ctx, fd), 0);
}

static void
test_power_loss_removes_a_created_file_without_a_dir_fsync(void **state)
{
    struct fixture *fx = *state;
    char *lost = path_in(fx, "d1/lost"), *kept = path_in(fx, "d2/kept");
    char *d3 = path_in(fx, "d3"), *d2 = path_in(fx, "d2");

    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "d1"), 0);
    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "d2"), 0);
    write_unsynced_file(fx->io, lost);
    write_unsynced_file(fx->io, kept);
    assert_int_equal(sdb_io_fsync_dir(fx->io, d2), 0);
    /* a directory made without fsyncing its parent goes too */
    assert_int_equal(fx->io->mkdir(fx->io->ctx, d3, 0755), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_false(exists(lost));
    assert_file_is(kept, "data", 4);
    assert_false(exists(d3));
    free(lost);
    free(kept);
    free(d2);
    free(d3);
}

static void test_power_loss_reverts_a_rename_without_a_dir_fsync(void **state)
{
    struct fixture *fx = *state;
    char *name = path_in(fx, "meta"), *tmp = path_in(fx, "meta.tmp");
    unsigned char old[3000];

    make_synced(fx->io, name, old, sizeof(old), 13);
    write_unsynced_file(fx->io, tmp);
    assert_int_equal(fx->io->rename(fx->io->ctx, tmp, name), 0);
    assert_file_is(name, "data", 4);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_file_is(name, old, sizeof(old));
    assert_false(exists(tmp)); /* its creation was never durable either */
    /* the full protocol survives */
    assert_int_equal(
        sdb_io_write_file_atomic(fx->io, fx->dir, "meta", "new", 3), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_file_is(name, "new", 3);
    assert_false(exists(tmp));
    free(name);
    free(tmp);
}

static void
test_power_loss_reverts_a_rename_until_both_parents_sync(void **state)
{
    struct fixture *fx = *state;
    char *from = path_in(fx, "src/f"), *to = path_in(fx, "dst/f");
    char *src = path_in(fx, "src"), *dst = path_in(fx, "dst");
    unsigned char buf[100];

    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "src"), 0);
    assert_int_equal(sdb_io_mkdirs(fx->io, fx->dir, "dst"), 0);
    make_synced(fx->io, from, buf, sizeof(buf), 14);
    assert_int_equal(fx->io->rename(fx->io->ctx, from, to), 0);
    assert_int_equal(sdb_io_fsync_dir(fx->io, dst), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_file_is(from, buf, sizeof(buf));
    assert_false(exists(to));

    assert_int_equal(fx->io->rename(fx->io->ctx, from, to), 0);
    assert_int_equal(sdb_io_fsync_dir(fx->io, dst), 0);
    assert_int_equal(sdb_io_fsync_dir(fx->io, src), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_file_is(to, buf, sizeof(buf));
    assert_false(exists(from));
    free(from);
    free(to);
    free(src);
    free(dst);
}

static void test_power_loss_reverts_an_unlink_without_a_dir_fsync(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "victim");
    unsigned char buf[5000];

    make_synced(fx->io, path, buf, sizeof(buf), 15);
    assert_int_equal(fx->io->unlink(fx->io->ctx, path), 0);
    assert_false(exists(path));
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_file_is(path, buf, sizeof(buf));

    assert_int_equal(fx->io->unlink(fx->io->ctx, path), 0);
    assert_int_equal(sdb_io_fsync_parent(fx->io, path), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    assert_false(exists(path));
    free(path);
}

static void test_power_loss_drops_an_unsynced_truncating_open(void **state)
{
    struct fixture *fx = *state;
    char *path = path_in(fx, "trunc");
    unsigned char buf[3000];
    int fd;

    make_synced(fx->io, path, buf, sizeof(buf), 16);
    fd = fx->io->open(fx->io->ctx, path, O_WRONLY | O_TRUNC, 0);
    assert_true(fd >= 0);
    assert_int_equal(sdb_io_pwrite_all(fx->io, fd, "xy", 2, 0), 0);
    fx->io->close(fx->io->ctx, fd);
    assert_int_equal(tu_file_size(path), 2);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_DROP), 0);
    assert_file_is(path, buf, sizeof(buf));
    free(path);
}

/* ---- many threads, many small writes ---- */

enum { THREADS = 4, RECORDS = 5000, RECLEN = 20, SYNC_EVERY = 97 };

struct writer {
    const sdb_io *io;
    char *path;
    int synced; /* records covered by the last fdatasync */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    unsigned char rec[RECLEN];
    int fd = open_rw(w->io, w->path), i;

    for (i = 0; i < RECORDS; i++) {
        memset(rec, 'a' + i % 26, sizeof(rec));
        if (sdb_io_pwrite_all(w->io, fd, rec, sizeof(rec), (off_t)i * RECLEN) !=
            0)
            break;
        if (i % SYNC_EVERY == 0 && w->io->fdatasync(w->io->ctx, fd) == 0)
            w->synced = i + 1;
    }
    w->io->close(w->io->ctx, fd);
    return NULL;
}

static void
test_power_loss_keeps_every_synced_prefix_of_concurrent_writers(void **state)
{
    struct fixture *fx = *state;
    struct writer w[THREADS];
    pthread_t tid[THREADS];
    int t, i;

    for (t = 0; t < THREADS; t++) {
        w[t] = (struct writer){fx->io, tu_printf("%s/w%d", fx->dir, t), 0};
        assert_int_equal(pthread_create(&tid[t], NULL, writer_main, &w[t]), 0);
    }
    for (t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(tid[t], NULL), 0);
    assert_int_equal(sdb_io_fsync_dir(fx->io, fx->dir), 0);
    assert_int_equal(sdb_iosim_power_loss(fx->sim, SDB_IOSIM_ALL), 0);
    for (t = 0; t < THREADS; t++) {
        size_t len;
        char *got = tu_read_file(w[t].path, &len);

        assert_non_null(got);
        assert_int_equal(w[t].synced,
                         (RECORDS - 1) / SYNC_EVERY * SYNC_EVERY + 1);
        assert_true(len >= (size_t)w[t].synced * RECLEN);
        for (i = 0; i < w[t].synced * RECLEN; i++)
            assert_int_equal(got[i], 'a' + i / RECLEN % 26);
        free(got);
        free(w[t].path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_pwrite_all_loops_over_short_writes),
        T(test_pwrite_all_retries_after_eintr),
        T(test_pwrite_all_turns_a_zero_byte_write_into_eio),
        T(test_pread_all_reports_a_short_file_as_corrupt),
        T(test_write_file_atomic_replaces_the_content_and_leaves_no_tmp),
        T(test_write_file_atomic_keeps_the_old_content_if_rename_fails),
        T(test_write_file_atomic_keeps_the_old_content_if_fsync_fails),
        T(test_write_file_atomic_reports_a_failed_dir_fsync),
        T(test_mkdirs_rejects_dot_dot_and_empty_components),
        T(test_mkdirs_creates_each_missing_dir_and_syncs_its_parent),
        T(test_read_file_honours_its_size_bound),
        T(test_fail_once_fails_only_the_nth_call),
        T(test_fail_forever_fails_every_call_from_the_nth_on),
        T(test_crash_after_makes_every_later_call_fail),
        T(test_power_loss_keeps_synced_data_in_every_mode),
        T(test_power_loss_with_drop_only_removes_unsynced_writes),
        T(test_power_loss_with_drop_only_restores_every_overwrite),
        T(test_power_loss_with_garble_only_scrambles_unsynced_ranges),
        T(test_power_loss_with_keep_only_keeps_unsynced_writes),
        T(test_power_loss_removes_a_created_file_without_a_dir_fsync),
        T(test_power_loss_reverts_a_rename_without_a_dir_fsync),
        T(test_power_loss_reverts_a_rename_until_both_parents_sync),
        T(test_power_loss_reverts_an_unlink_without_a_dir_fsync),
        T(test_power_loss_drops_an_unsynced_truncating_open),
        T(test_power_loss_keeps_every_synced_prefix_of_concurrent_writers),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
