/*
 * test_readcache.c - the read-only descriptor cache on its own and under
 * the segment store: more files than slots, reads after eviction, pinned
 * descriptors never closed under a reader, clear, the capacity taken from
 * RLIMIT_NOFILE, no descriptor leaked, and a corrupted record read through
 * the cache still refused with its file named on stderr; mapped files: reads
 * that follow a growing file, a file truncated under its mapping (an error,
 * not a SIGBUS), and the bound on mappings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hash.h"
#include "readcache.h"
#include "segment.h"
#include "stemedb/stemedb.h"
#include "testutil.h"

#define STORE 0x5eedULL

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("rcache");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* File i holds "file-<i>" and nothing else. */
static char *make_file(int i)
{
    char *path = tu_printf("%s/f%d", dir, i), *text = tu_printf("file-%d", i);

    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    free(text);
    return path;
}

/* Read key i through the cache (opening it on a miss); check its bytes. */
static void read_through(struct sdb_readcache *rc, int i, char **paths)
{
    struct sdb_rcref ref;
    char buf[32], want[32];
    int n = snprintf(want, sizeof(want), "file-%d", i);

    if (!sdb_readcache_lookup(rc, (uint64_t)i + 1, &ref))
        assert_int_equal(
            sdb_readcache_open(rc, (uint64_t)i + 1, paths[i], &ref), 0);
    assert_true(ref.fd >= 0);
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, (size_t)n, 0), 0);
    assert_memory_equal(buf, want, (size_t)n);
    sdb_readcache_put(rc, &ref);
}

static void test_readcache_more_files_than_slots_stays_bounded(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_readcache_stats st;
    char *paths[100];
    int before = open_fds();

    (void)state;
    for (int i = 0; i < 100; i++)
        paths[i] = make_file(i);
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 8, &rc), 0);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 100; i++)
            read_through(rc, (i * 37 + round) % 100, paths);
    sdb_readcache_get_stats(rc, &st);
    assert_int_equal(st.capacity, 8);
    assert_true(st.open <= 8);
    assert_true(st.evictions >= 300 - 8 - st.hits);
    assert_true(open_fds() <= before + 8);
    /* a file read again right away is a hit */
    read_through(rc, 5, paths);
    read_through(rc, 5, paths);
    sdb_readcache_get_stats(rc, &st);
    assert_true(st.hits >= 1);
    sdb_readcache_free(rc);
    assert_int_equal(open_fds(), before);
    for (int i = 0; i < 100; i++)
        free(paths[i]);
}

static void test_readcache_never_closes_a_pinned_descriptor(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_rcref pinned, other;
    char *paths[20], buf[16];
    int before = open_fds();

    (void)state;
    for (int i = 0; i < 20; i++)
        paths[i] = make_file(i);
    /* one slot: every other file must go around the pinned one */
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 1, &rc), 0);
    assert_int_equal(sdb_readcache_open(rc, 1, paths[0], &pinned), 0);
    for (int i = 1; i < 20; i++) {
        assert_int_equal(
            sdb_readcache_open(rc, (uint64_t)i + 1, paths[i], &other), 0);
        assert_int_equal(other.shard, -1); /* private: closed by put */
        sdb_readcache_put(rc, &other);
        assert_int_equal(pread(pinned.fd, buf, 6, 0), 6);
        assert_memory_equal(buf, "file-0", 6);
    }
    /* clear drops it from the cache but the pinned fd stays usable */
    sdb_readcache_clear(rc);
    assert_int_equal(pread(pinned.fd, buf, 6, 0), 6);
    assert_false(sdb_readcache_lookup(rc, 1, &other));
    sdb_readcache_put(rc, &pinned);
    assert_int_equal(open_fds(), before);
    /* after the put the slot is free again and caches the next file */
    read_through(rc, 3, paths);
    assert_true(sdb_readcache_lookup(rc, 4, &other));
    sdb_readcache_put(rc, &other);
    sdb_readcache_free(rc);
    assert_int_equal(open_fds(), before);
    for (int i = 0; i < 20; i++)
        free(paths[i]);
}

static void test_readcache_open_of_a_missing_file_fails_cleanly(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_rcref ref;
    char *path = tu_printf("%s/absent", dir);

    (void)state;
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 4, &rc), 0);
    assert_int_equal(sdb_readcache_open(rc, 9, path, &ref), -ENOENT);
    assert_false(sdb_readcache_lookup(rc, 9, &ref));
    sdb_readcache_free(rc);
    free(path);
}

static void test_readcache_capacity_follows_the_rlimit(void **state)
{
    struct rlimit old, rl;

    (void)state;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = 1024 < old.rlim_max ? 1024 : old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur == 1024)
        assert_int_equal(sdb_readcache_capacity_for_rlimit(576), 336);
    assert_int_equal(sdb_readcache_capacity_for_rlimit(100000), 8);
    assert_true(sdb_readcache_capacity_for_rlimit(0) <= 65536);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* ---- mappings ---- */

/* How many lines of /proc/self/maps name a file under dir. */
static int maps_of_dir(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int n = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (strstr(line, dir))
            n++;
    fclose(f);
    return n;
}

static void append_bytes(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_APPEND);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Reads come from the mapping, follow the file as it grows, and stop at
 * its end like pread does. */
static void test_readcache_maps_follow_a_growing_file(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_readcache_stats st;
    struct sdb_rcref ref;
    char *path = make_file(0), buf[64];

    (void)state;
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 4, &rc), 0);
    sdb_readcache_enable_maps(rc, 1 << 20, 16);
    assert_int_equal(sdb_readcache_open(rc, 1, path, &ref), 0);
    assert_non_null(ref.map);
    assert_int_equal(ref.known, 6);
    assert_int_equal(maps_of_dir(), 1);
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, 6, 0), 0);
    assert_memory_equal(buf, "file-0", 6);
    /* appended after the mapping was made */
    append_bytes(path, "+more");
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, 5, 6), 0);
    assert_memory_equal(buf, "+more", 5);
    assert_int_equal(ref.known, 11);
    /* past the end: an error, never bytes of the mapping's zero tail */
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, 2, 10), SDB_ECORRUPT);
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, 1, 1 << 19),
                     SDB_ECORRUPT);
    /* beyond the mapping altogether: pread's answer */
    assert_int_equal(sdb_readcache_read(rc, &ref, buf, 1, 2 << 20),
                     SDB_ECORRUPT);
    sdb_readcache_put(rc, &ref);
    sdb_readcache_get_stats(rc, &st);
    assert_int_equal(st.mapped, 1);
    assert_int_equal(st.map_reads, 2);
    assert_int_equal(st.pread_reads, 1);
    /* the size seen is kept for the next reader */
    assert_true(sdb_readcache_lookup(rc, 1, &ref));
    assert_int_equal(ref.known, 11);
    sdb_readcache_put(rc, &ref);
    sdb_readcache_free(rc);
    assert_int_equal(maps_of_dir(), 0);
    free(path);
}

/* A file cut short under its mapping: the read fails, the process lives,
 * and it works again for a second file (SIGBUS is not left blocked). */
static void test_readcache_truncation_under_a_map_is_an_error(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_rcref ref;
    char big[16384], buf[64];
    char *path[2];

    (void)state;
    memset(big, 'x', sizeof(big));
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 4, &rc), 0);
    sdb_readcache_enable_maps(rc, 1 << 20, 16);
    for (int i = 0; i < 2; i++) {
        path[i] = tu_printf("%s/big%d", dir, i);
        assert_int_equal(tu_write_file(path[i], big, sizeof(big)), 0);
        assert_int_equal(sdb_readcache_open(rc, (uint64_t)i + 1, path[i], &ref),
                         0);
        assert_non_null(ref.map);
        assert_int_equal(sdb_readcache_read(rc, &ref, buf, 64, 12000), 0);
        assert_int_equal(truncate(path[i], 0), 0);
        /* the size last seen says 16 KiB are there: the copy faults */
        assert_int_equal(sdb_readcache_read(rc, &ref, buf, 64, 12000),
                         SDB_ECORRUPT);
        sdb_readcache_put(rc, &ref);
        free(path[i]);
    }
    sdb_readcache_free(rc);
}

/* At most max_maps files are mapped; the rest are read with pread, and
 * evicted files are unmapped. */
static void test_readcache_bounds_its_mappings(void **state)
{
    struct sdb_readcache *rc;
    struct sdb_readcache_stats st;
    char *paths[10];

    (void)state;
    for (int i = 0; i < 10; i++)
        paths[i] = make_file(i);
    assert_int_equal(sdb_readcache_new(sdb_io_posix(), 4, &rc), 0);
    sdb_readcache_enable_maps(rc, 1 << 16, 2);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 10; i++) {
            read_through(rc, i, paths);
            assert_true(maps_of_dir() <= 2);
        }
    sdb_readcache_get_stats(rc, &st);
    assert_true(st.mapped <= 2);
    assert_int_equal(st.mapped, (unsigned)maps_of_dir());
    assert_true(st.map_reads > 0);
    assert_true(st.pread_reads > 0);
    assert_int_equal(st.map_reads + st.pread_reads, 30);
    sdb_readcache_free(rc);
    assert_int_equal(maps_of_dir(), 0);
    for (int i = 0; i < 10; i++)
        free(paths[i]);
}

/* Append "rec-<i>" to concept c<i>; its loc into *loc. */
static void put_record(struct sdb_segstore *ss, struct sdb_seginfo *si, int i,
                       struct sdb_loc *loc)
{
    char d[32], rec[32];

    snprintf(d, sizeof(d), "c%d", i);
    snprintf(rec, sizeof(rec), "rec-%d", i);
    memset(si, 0, sizeof(*si));
    si->dir = strdup(d);
    si->chash = sdb_hash64(d, strlen(d), 0);
    si->key = (uint32_t)i + 1;
    assert_int_equal(
        sdb_segstore_append(ss, si, (uint64_t)i + 1, 1, rec, strlen(rec), loc),
        0);
}

static void
test_segstore_reads_many_concepts_and_names_a_corrupt_file(void **state)
{
    struct sdb_segstore *ss;
    struct sdb_seginfo si[50];
    struct sdb_loc loc[50];
    struct sdb_readcache_stats st;
    struct rlimit old, rl;
    char buf[32], *path, *img, *log, *logtxt;
    size_t len;
    int saved, lfd;

    (void)state;
    assert_int_equal(
        sdb_segstore_new(sdb_io_posix(), dir, STORE, 4, 1 << 20, &ss), 0);
    for (int i = 0; i < 50; i++)
        put_record(ss, &si[i], i, &loc[i]);
    assert_int_equal(sdb_segstore_sync(ss), 0);
    /* a low limit when the first read sizes the cache: 8 slots for 50
     * concepts, so the reads below keep evicting and reopening */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    rl = old;
    rl.rlim_cur = (rlim_t)open_fds() + 40 < old.rlim_max
                      ? (rlim_t)open_fds() + 40
                      : old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 50; i++) {
            char want[32];
            snprintf(want, sizeof(want), "rec-%d", i);
            assert_int_equal(sdb_segstore_read(ss, &si[i], &loc[i], buf), 0);
            assert_memory_equal(buf, want, strlen(want));
        }
    sdb_segstore_read_stats(ss, &st);
    if (rl.rlim_cur < old.rlim_max) {
        assert_int_equal(st.capacity, 8);
        assert_true(st.evictions >= 100 - 8 - st.hits);
    }
    assert_true(st.open <= st.capacity);
    assert_true(st.map_reads >= 100); /* the segment store maps its files */
    assert_int_equal(st.pread_reads, 0);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    /* a record appended after its file was mapped */
    {
        struct sdb_loc more;
        char want[] = "rec-3b";
        assert_int_equal(
            sdb_segstore_append(ss, &si[3], 1000, 1, want, strlen(want), &more),
            0);
        assert_int_equal(sdb_segstore_sync(ss), 0);
        assert_int_equal(sdb_segstore_read(ss, &si[3], &more, buf), 0);
        assert_memory_equal(buf, want, strlen(want));
    }
    /* flip a byte of c17's record: the cached descriptor sees it */
    path = tu_printf("%s/c17/@seg-000001.msgpack", dir);
    img = tu_read_file(path, &len);
    img[loc[17].off + 1] ^= 0x01;
    {
        int fd = open(path, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, img, len, 0), (ssize_t)len);
        close(fd);
    }
    log = tu_printf("%s/stderr.txt", dir);
    fflush(stderr);
    saved = dup(2);
    lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && lfd >= 0);
    dup2(lfd, 2);
    assert_int_equal(sdb_segstore_read(ss, &si[17], &loc[17], buf),
                     SDB_ECORRUPT);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(lfd);
    logtxt = tu_read_file(log, &len);
    assert_non_null(logtxt);
    assert_non_null(strstr(logtxt, "c17/@seg-000001.msgpack"));
    assert_non_null(strstr(logtxt, "checksum mismatch"));
    /* its neighbours are still served */
    assert_int_equal(sdb_segstore_read(ss, &si[16], &loc[16], buf), 0);
    assert_int_equal(sdb_segstore_read(ss, &si[18], &loc[18], buf), 0);
    sdb_segstore_free(ss);
    for (int i = 0; i < 50; i++)
        free(si[i].dir);
    free(logtxt);
    free(log);
    free(img);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_readcache_more_files_than_slots_stays_bounded, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_readcache_never_closes_a_pinned_descriptor, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_readcache_open_of_a_missing_file_fails_cleanly, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_readcache_capacity_follows_the_rlimit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_segstore_reads_many_concepts_and_names_a_corrupt_file, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_readcache_maps_follow_a_growing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_readcache_truncation_under_a_map_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readcache_bounds_its_mappings,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
