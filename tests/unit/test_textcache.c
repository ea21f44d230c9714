/*
 * test_textcache.c - the cache of rendered records: a hit gives back the
 * exact text, any difference in LSN, length or checksum is a miss, the
 * byte budget holds (oldest out first), and concurrent readers and
 * writers of the same keys agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textcache.h"

static char *get_text(struct sdb_textcache *tc,
                      const struct sdb_textcache_key *k)
{
    struct sdb_jsonw w = {0};
    char *out = NULL;
    size_t n;

    if (!sdb_textcache_get(tc, k, &w)) {
        sdb_jsonw_release(&w);
        return NULL;
    }
    sdb_jsonw_raw(&w, "", 0);
    assert_int_equal(sdb_jsonw_finish(&w, &out, &n), 0);
    return out;
}

static void test_textcache_hits_only_the_exact_key(void **state)
{
    struct sdb_textcache *tc;
    struct sdb_textcache_key k = {42, 0xfeedULL, 17}, other;
    char *t;

    (void)state;
    assert_int_equal(sdb_textcache_new(1 << 20, &tc), 0);
    assert_null(get_text(tc, &k));
    sdb_textcache_put(tc, &k, "{\"id\":\"x\",\"lsn\":42", 18);
    t = get_text(tc, &k);
    assert_string_equal(t, "{\"id\":\"x\",\"lsn\":42");
    free(t);
    other = k;
    other.lsn++;
    assert_null(get_text(tc, &other));
    other = k;
    other.hash ^= 1;
    assert_null(get_text(tc, &other));
    other = k;
    other.len++;
    assert_null(get_text(tc, &other));
    /* a second put of the same key keeps the first text */
    sdb_textcache_put(tc, &k, "different", 9);
    t = get_text(tc, &k);
    assert_string_equal(t, "{\"id\":\"x\",\"lsn\":42");
    free(t);
    sdb_textcache_free(tc);
}

static void test_textcache_stays_within_its_budget(void **state)
{
    struct sdb_textcache *tc;
    struct sdb_textcache_stats st;
    char text[200];
    int kept_new = 0;

    (void)state;
    memset(text, 'a', sizeof(text));
    assert_int_equal(sdb_textcache_new(64 * 1024, &tc), 0);
    for (uint64_t i = 1; i <= 5000; i++) {
        struct sdb_textcache_key k = {i, i * 7919, 200};
        text[0] = (char)('a' + i % 26);
        sdb_textcache_put(tc, &k, text, sizeof(text));
    }
    sdb_textcache_get_stats(tc, &st);
    assert_true(st.bytes <= 64 * 1024);
    assert_true(st.entries > 100 && st.entries < 5000);
    /* the newest survive, the oldest went first */
    for (uint64_t i = 4991; i <= 5000; i++) {
        struct sdb_textcache_key k = {i, i * 7919, 200};
        char *t = get_text(tc, &k);
        if (t) {
            assert_int_equal(t[0], 'a' + i % 26);
            kept_new++;
        }
        free(t);
    }
    assert_true(kept_new >= 5);
    for (uint64_t i = 1; i <= 10; i++) {
        struct sdb_textcache_key k = {i, i * 7919, 200};
        assert_null(get_text(tc, &k));
    }
    sdb_textcache_free(tc);
}

struct worker {
    struct sdb_textcache *tc;
    int id;
    int bad;
};

static void *work(void *arg)
{
    struct worker *wk = arg;

    for (int round = 0; round < 20000; round++) {
        uint64_t i = (uint64_t)(round * 31 + wk->id) % 3000;
        struct sdb_textcache_key k = {i + 1, i * 31, 16};
        char want[17];
        char *t;

        snprintf(want, sizeof(want), "text-%010llu", (unsigned long long)i);
        t = get_text(wk->tc, &k);
        if (t && strcmp(t, want) != 0)
            wk->bad++;
        if (!t)
            sdb_textcache_put(wk->tc, &k, want, 16);
        free(t);
    }
    return NULL;
}

static void test_textcache_is_safe_across_threads(void **state)
{
    struct sdb_textcache *tc;
    struct sdb_textcache_stats st;
    struct worker wk[4];
    pthread_t th[4];

    (void)state;
    assert_int_equal(sdb_textcache_new(128 * 1024, &tc), 0);
    for (int i = 0; i < 4; i++) {
        wk[i] = (struct worker){tc, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, work, &wk[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wk[i].bad, 0);
    }
    sdb_textcache_get_stats(tc, &st);
    assert_true(st.hits > 0 && st.misses > 0);
    assert_true(st.bytes <= 128 * 1024);
    sdb_textcache_free(tc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_textcache_hits_only_the_exact_key),
        cmocka_unit_test(test_textcache_stays_within_its_budget),
        cmocka_unit_test(test_textcache_is_safe_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
