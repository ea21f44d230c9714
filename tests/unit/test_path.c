/*
 * test_path.c - unit tests for src/path.c: escaping concept path components
 * into file names, strict unescaping, reserved names, and a property test
 * that escape/unescape round-trip for random byte strings and random UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "path.h"
#include "testutil.h"

#define NAME_CAP 256

static void expect_escape(const char *in, bool top, const char *want)
{
    char out[NAME_CAP];
    int n = sdb_path_escape_component(in, strlen(in), top, out, sizeof out);

    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void expect_unescape(const char *name, const char *want)
{
    char out[NAME_CAP];
    int n = sdb_path_unescape_component(name, out, sizeof out);

    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void expect_unescape_fails(const char *name)
{
    char out[NAME_CAP];

    assert_int_equal(sdb_path_unescape_component(name, out, sizeof out), -1);
}

static void test_path_escape_keeps_safe_bytes(void **state)
{
    (void)state;
    expect_escape("Abc_1-2.x", false, "Abc_1-2.x");
    expect_escape("aspirin", true, "aspirin");
    expect_escape("a..b.", false, "a..b.");
}

static void test_path_escape_escapes_leading_dot(void **state)
{
    (void)state;
    expect_escape(".", false, "%2E");
    expect_escape("..", false, "%2E.");
    expect_escape(".hidden", true, "%2Ehidden");
}

static void test_path_escape_escapes_special_and_control_bytes(void **state)
{
    (void)state;
    expect_escape("a b/c%d@e", false, "a%20b%2Fc%25d%40e");
    expect_escape("@meta", true, "%40meta");
    expect_escape("\x01\x7f~*", false, "%01%7F%7E%2A");
}

static void test_path_escape_escapes_nul_byte(void **state)
{
    char out[NAME_CAP];
    int n = sdb_path_escape_component("a\0b", 3, false, out, sizeof out);

    (void)state;
    assert_int_equal(n, 5);
    assert_string_equal(out, "a%00b");
}

static void test_path_escape_keeps_high_bytes(void **state)
{
    (void)state;
    expect_escape("caf\xc3\xa9", false, "caf\xc3\xa9");
    expect_escape("\xe2\x82\xac", true, "\xe2\x82\xac");
}

static void test_path_escape_escapes_reserved_top_name(void **state)
{
    (void)state;
    expect_escape("indexes", true, "%69ndexes");
    expect_escape("indexes", false, "indexes");
    expect_escape("indexesx", true, "indexesx");
    expect_escape("Indexes", true, "Indexes");
}

static void test_path_escape_rejects_overlong_component(void **state)
{
    char in[100], out[1024];

    (void)state;
    memset(in, '@', sizeof in);
    assert_int_equal(sdb_path_escape_component(in, 85, false, out, sizeof out),
                     255);
    assert_int_equal(sdb_path_escape_component(in, 86, false, out, sizeof out),
                     -1);
    memset(in, 'a', sizeof in);
    assert_int_equal(sdb_path_escape_component(in, 100, false, out, 1024), 100);
}

static void test_path_escape_rejects_small_buffer(void **state)
{
    char out[8];

    (void)state;
    assert_int_equal(sdb_path_escape_component("abcdefg", 7, false, out, 8), 7);
    assert_int_equal(sdb_path_escape_component("abcdefgh", 8, false, out, 8),
                     -1);
    assert_int_equal(sdb_path_escape_component("ab@", 3, false, out, 5), -1);
    assert_int_equal(sdb_path_escape_component("ab", 2, false, out, 0), -1);
}

static void test_path_escape_rejects_empty_component(void **state)
{
    char out[NAME_CAP];

    (void)state;
    assert_int_equal(sdb_path_escape_component("", 0, false, out, sizeof out),
                     -1);
}

static void test_path_unescape_reverses_known_names(void **state)
{
    (void)state;
    expect_unescape("aspirin", "aspirin");
    expect_unescape("%2E", ".");
    expect_unescape("%2E.", "..");
    expect_unescape("a%20b%2Fc%25d%40e", "a b/c%d@e");
    expect_unescape("caf\xc3\xa9", "caf\xc3\xa9");
    expect_unescape("%69ndexes", "indexes");
    expect_unescape("indexes", "indexes");
}

static void test_path_unescape_rejects_bad_escapes(void **state)
{
    (void)state;
    expect_unescape_fails("%");
    expect_unescape_fails("a%2");
    expect_unescape_fails("%zz");
    expect_unescape_fails("%2e"); /* lowercase hex is not canonical */
    expect_unescape_fails("%G0");
}

static void test_path_unescape_rejects_unneeded_escapes(void **state)
{
    (void)state;
    expect_unescape_fails("%41bc");      /* 'A' needs no escape */
    expect_unescape_fails("a%2E");       /* '.' only escaped when leading */
    expect_unescape_fails("a%5F");       /* '_' */
    expect_unescape_fails("%69ndexesx"); /* not a reserved name */
    expect_unescape_fails("%69");
}

static void
test_path_unescape_rejects_raw_bytes_that_need_escaping(void **state)
{
    (void)state;
    expect_unescape_fails(".");
    expect_unescape_fails("..");
    expect_unescape_fails(".hidden");
    expect_unescape_fails("@segment");
    expect_unescape_fails("a b");
    expect_unescape_fails("a/b");
    expect_unescape_fails("a*");
    expect_unescape_fails("a\x01");
}

static void test_path_unescape_rejects_empty_and_overlong_names(void **state)
{
    char name[300];

    (void)state;
    expect_unescape_fails("");
    memset(name, 'a', sizeof name);
    name[256] = '\0';
    expect_unescape_fails(name);
    name[255] = '\0';
    expect_unescape(name, name);
    assert_int_equal(sdb_path_unescape_component(NULL, name, 10), -1);
}

static void test_path_unescape_rejects_small_buffer(void **state)
{
    char out[4];

    (void)state;
    assert_int_equal(sdb_path_unescape_component("abc", out, 4), 3);
    assert_int_equal(sdb_path_unescape_component("abcd", out, 4), -1);
    assert_int_equal(sdb_path_unescape_component("%2Eab", out, 3), -1);
}

static void test_path_reserved_top_is_only_indexes(void **state)
{
    (void)state;
    assert_true(sdb_path_is_reserved_top("indexes", 7));
    assert_false(sdb_path_is_reserved_top("indexes", 6));
    assert_false(sdb_path_is_reserved_top("indexe", 6));
    assert_false(sdb_path_is_reserved_top("wal", 3));
    assert_false(sdb_path_is_reserved_top("INDEXES", 7));
}

/* Escape, check the file-name invariants, unescape, compare. */
static void check_round_trip(const char *comp, size_t len, bool top)
{
    char name[NAME_CAP], back[NAME_CAP];
    int n = sdb_path_escape_component(comp, len, top, name, sizeof name);
    int m;

    assert_true(n >= 0); /* callers keep len small enough to always fit */
    assert_int_equal(strlen(name), (size_t)n);
    assert_true(n <= 255);
    assert_null(memchr(name, '/', (size_t)n));
    assert_true(name[0] != '@' && name[0] != '.');
    assert_true(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
    m = sdb_path_unescape_component(name, back, sizeof back);
    assert_int_equal(m, (int)len);
    assert_memory_equal(back, comp, len);
}

static void test_path_escape_round_trips_random_bytes(void **state)
{
    uint64_t seed = tu_seed(0x5eed0001);
    unsigned char comp[85]; /* 85 * 3 == 255: always fits */

    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 1 + tu_rand(&seed) % sizeof comp;

        for (size_t i = 0; i < len; i++)
            comp[i] = (unsigned char)tu_rand(&seed);
        check_round_trip((const char *)comp, len, tu_rand(&seed) & 1);
    }
    check_round_trip("indexes", 7, true);
    check_round_trip("indexes", 7, false);
}

/* Append one random code point (never '/') as UTF-8. */
static size_t put_random_char(uint64_t *seed, unsigned char *p)
{
    static const uint32_t RANGES[][2] = {{0x20, 0x7e},
                                         {0xa0, 0x7ff},
                                         {0x800, 0xd7ff},
                                         {0xe000, 0xffff},
                                         {0x10000, 0x10ffff}};
    uint64_t r = tu_rand(seed);
    const uint32_t *rg = RANGES[r % 5];
    uint32_t cp = rg[0] + (uint32_t)((r >> 8) % (rg[1] - rg[0] + 1));

    if (cp == '/')
        cp = '.';
    if (cp < 0x80)
        return p[0] = (unsigned char)cp, 1;
    if (cp < 0x800)
        return p[0] = (unsigned char)(0xc0 | cp >> 6),
               p[1] = (unsigned char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000)
        return p[0] = (unsigned char)(0xe0 | cp >> 12),
               p[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f)),
               p[2] = (unsigned char)(0x80 | (cp & 0x3f)), 3;
    p[0] = (unsigned char)(0xf0 | cp >> 18);
    p[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    p[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    p[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

static void test_path_escape_round_trips_random_utf8(void **state)
{
    uint64_t seed = tu_seed(0x5eed0002);
    unsigned char comp[200];

    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        size_t chars = 1 + tu_rand(&seed) % 40, len = 0;

        for (size_t i = 0; i < chars; i++)
            len += put_random_char(&seed, comp + len);
        check_round_trip((const char *)comp, len, tu_rand(&seed) & 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_escape_keeps_safe_bytes),
        cmocka_unit_test(test_path_escape_escapes_leading_dot),
        cmocka_unit_test(test_path_escape_escapes_special_and_control_bytes),
        cmocka_unit_test(test_path_escape_escapes_nul_byte),
        cmocka_unit_test(test_path_escape_keeps_high_bytes),
        cmocka_unit_test(test_path_escape_escapes_reserved_top_name),
        cmocka_unit_test(test_path_escape_rejects_overlong_component),
        cmocka_unit_test(test_path_escape_rejects_small_buffer),
        cmocka_unit_test(test_path_escape_rejects_empty_component),
        cmocka_unit_test(test_path_unescape_reverses_known_names),
        cmocka_unit_test(test_path_unescape_rejects_bad_escapes),
        cmocka_unit_test(test_path_unescape_rejects_unneeded_escapes),
        cmocka_unit_test(
            test_path_unescape_rejects_raw_bytes_that_need_escaping),
        cmocka_unit_test(test_path_unescape_rejects_empty_and_overlong_names),
        cmocka_unit_test(test_path_unescape_rejects_small_buffer),
        cmocka_unit_test(test_path_reserved_top_is_only_indexes),
        cmocka_unit_test(test_path_escape_round_trips_random_bytes),
        cmocka_unit_test(test_path_escape_round_trips_random_utf8),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
