/*
 * test_jsonw.c - the read path's JSON writer gives byte for byte what
 * jansson's json_dumps(JSON_COMPACT) gives: escapes, integers at the int64
 * limits, reals of every magnitude, nested containers in insertion order,
 * random values; and timestamps exactly as sdb_time_format.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"
#include "stemedb/stemedb.h"
#include "testutil.h"

/* jsonw's text of v must equal jansson's. */
static void check_same(const json_t *v)
{
    struct sdb_jsonw w = {0};
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), *got;
    size_t len;

    assert_non_null(want);
    sdb_jsonw_value(&w, v);
    assert_int_equal(sdb_jsonw_finish(&w, &got, &len), 0);
    if (strcmp(want, got) != 0)
        fail_msg("jansson: %s\njsonw:   %s", want, got);
    assert_int_equal(len, strlen(want));
    free(want);
    free(got);
}

static void test_jsonw_matches_jansson_on_edge_values(void **state)
{
    static const double reals[] = {0.0,
                                   -0.0,
                                   0.75,
                                   0.1,
                                   1.0,
                                   5.0,
                                   -2.5,
                                   1e20,
                                   1e21,
                                   1e-5,
                                   1e-7,
                                   1.5e300,
                                   -1e-300,
                                   123456789.0,
                                   1e17,
                                   4.9e-324,
                                   1.7976931348623157e308,
                                   3.14159};
    static const json_int_t ints[] = {0,   1,          -1,        9,        10,
                                      -10, 1234567890, INT64_MAX, INT64_MIN};
    json_t *v;

    (void)state;
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        v = json_real(reals[i]);
        check_same(v);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        v = json_integer(ints[i]);
        check_same(v);
        json_decref(v);
    }
    static const char odd[] = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f caf\xc3\xa9 "
                              "\xf0\x9f\x98\x80 nul:\0!";
    v = json_stringn(odd, sizeof(odd) - 1);
    assert_non_null(v);
    check_same(v);
    json_decref(v);
    v = json_pack("{s:[], s:{}, s:n, s:b, s:b, s:[i,f,s], s:{s:{s:[]}}}", "z",
                  "a", "n", "t", 1, "f", 0, "arr", 1, 2.5, "x", "deep", "k\n",
                  "k2");
    check_same(v);
    json_decref(v);
}

static json_t *random_value(uint64_t *rs, int depth)
{
    uint64_t r = tu_rand(rs);
    char s[24];
    size_t n;
    json_t *v;

    switch (depth > 3 ? r % 5 : r % 7) {
    case 0:
        return json_integer((json_int_t)tu_rand(rs) >> (r >> 8) % 64);
    case 1: {
        double d;
        uint64_t bits = tu_rand(rs);
        memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d))
            d = (double)(int64_t)bits / 7.0;
        return json_real(d);
    }
    case 2:
        n = (r >> 8) % sizeof(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(tu_rand(rs) % 0x80); /* ASCII incl. controls */
        return json_stringn(s, n);
    case 3:
        return json_boolean(r & 256);
    case 4:
        return json_null();
    case 5:
        v = json_array();
        for (unsigned i = 0; i < (r >> 8) % 5; i++)
            json_array_append_new(v, random_value(rs, depth + 1));
        return v;
    default:
        v = json_object();
        for (unsigned i = 0; i < (r >> 8) % 5; i++) {
            snprintf(s, sizeof(s), "k%u\t%u", (unsigned)(tu_rand(rs) % 100), i);
            json_object_set_new(v, s, random_value(rs, depth + 1));
        }
        return v;
    }
}

static void test_jsonw_matches_jansson_on_random_values(void **state)
{
    uint64_t rs = tu_seed(0x15017);

    (void)state;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(&rs, 0);
        assert_non_null(v);
        check_same(v);
        json_decref(v);
    }
}

static void test_jsonw_time_matches_sdb_time_format(void **state)
{
    uint64_t rs = tu_seed(0x7193);
    static const int64_t fixed[] = {0,
                                    -1,
                                    1,
                                    86400LL * 1000000 - 1,
                                    951782400LL * 1000000,    /* 2000-02-29 */
                                    -62135596800LL * 1000000, /* year 1 */
                                    253402300799999999LL,     /* 9999-12-31 */
                                    253402300800000000LL,     /* 10000 */
                                    -62167219200000001LL,     /* year -1 */
                                    INT64_MAX,
                                    INT64_MIN};

    (void)state;
    for (int i = 0; i < 20000; i++) {
        int64_t us = i < (int)(sizeof(fixed) / sizeof(fixed[0]))
                         ? fixed[i]
                         : (int64_t)(tu_rand(&rs) % 400000000000000000ULL) -
                               100000000000000000LL;
        char want[40], ts[32], *got;
        struct sdb_jsonw w = {0};
        size_t len;

        sdb_time_format(us, ts);
        snprintf(want, sizeof(want), "\"%s\"", ts);
        sdb_jsonw_time(&w, us);
        assert_int_equal(sdb_jsonw_finish(&w, &got, &len), 0);
        if (strcmp(want, got) != 0)
            fail_msg("%lld: want %s got %s", (long long)us, want, got);
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonw_matches_jansson_on_edge_values),
        cmocka_unit_test(test_jsonw_matches_jansson_on_random_values),
        cmocka_unit_test(test_jsonw_time_matches_sdb_time_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
