/*
 * test_model.c - unit tests for src/model.c: tiers, lenses, ids, UTF-8,
 * concept path validation (hostile paths included), the concept <-> dir
 * mapping, RFC 3339 time, and strict parsing of assert, retract and query
 * requests, asserting the exact code, field and message of each rejection.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "testutil.h"

/* ---- helpers ---- */

static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(
        text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);

    if (v == NULL)
        fail_msg("bad test JSON: %s: %s", text, jerr.text);
    return v;
}

static void expect_err(const sdb_error *err, int rc, int code,
                       const char *field, const char *msg_part)
{
    assert_int_equal(rc, code);
    assert_int_equal(err->code, code);
    assert_string_equal(err->field, field);
    if (strstr(err->message, msg_part) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err->message, msg_part);
}

static void free_assertions(struct sdb_assertion *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sdb_assertion_release(&a[i]);
    free(a);
}

/* Parse an assert request that must fail with code/field/message. */
static void assert_req_fails(const char *text, int code, const char *field,
                             const char *msg_part)
{
    json_t *req = J(text);
    struct sdb_assertion *a = (void *)1;
    size_t n = 99;
    sdb_error err = {0};
    int rc = sdb_assert_request_parse(req, &a, &n, &err);

    expect_err(&err, rc, code, field, msg_part);
    assert_null(a);
    assert_int_equal(n, 0);
    json_decref(req);
}

/* Parse a single-assertion request that must succeed; caller releases. */
static struct sdb_assertion *assert_req_ok(const char *text)
{
    json_t *req = J(text);
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err = {0};
    int rc = sdb_assert_request_parse(req, &a, &n, &err);

    if (rc != 0)
        fail_msg("%s rejected: %s: %s", text, err.field, err.message);
    assert_int_equal(n, 1);
    json_decref(req);
    return a;
}

static void path_fails(const char *p, size_t len, const char *msg_part)
{
    sdb_error err = {0};
    int rc = sdb_concept_path_check(p, len, "concept_path", &err);

    expect_err(&err, rc, SDB_EINVAL, "concept_path", msg_part);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* "a/a/.../a" with n components. */
static char *deep_path(int n)
{
    char *s = malloc((size_t)n * 2);

    assert_non_null(s);
    for (int i = 0; i < n; i++) {
        s[2 * i] = 'a';
        s[2 * i + 1] = '/';
    }
    s[2 * n - 1] = '\0';
    return s;
}

/* ---- tiers, lenses, errors ---- */

static void test_model_tier_names_parse_and_weigh_in_order(void **state)
{
    static const char *const NAMES[] = {"unverified", "community", "verified",
                                        "expert", "authoritative"};

    (void)state;
    for (int t = 0; t < SDB_TIER_COUNT; t++) {
        assert_string_equal(sdb_tier_name(t), NAMES[t]);
        assert_int_equal(sdb_tier_parse(NAMES[t]), t);
        assert_true(sdb_tier_weight(t) == (double)(t + 1));
    }
    assert_null(sdb_tier_name(-1));
    assert_null(sdb_tier_name(SDB_TIER_COUNT));
    assert_int_equal(sdb_tier_parse("Expert"), -1);
    assert_int_equal(sdb_tier_parse(""), -1);
    assert_int_equal(sdb_tier_parse(NULL), -1);
    assert_true(sdb_tier_weight(7) == 0.0);
    assert_true(SDB_TIER_AUTHORITATIVE > SDB_TIER_EXPERT);
}

static void test_model_lens_names_parse_round_trip(void **state)
{
    (void)state;
    assert_int_equal(sdb_lens_parse("recency"), SDB_LENS_RECENCY);
    assert_int_equal(sdb_lens_parse("confidence"), SDB_LENS_CONFIDENCE);
    assert_int_equal(sdb_lens_parse("authority"), SDB_LENS_AUTHORITY);
    assert_int_equal(sdb_lens_parse("consensus"), SDB_LENS_CONSENSUS);
    for (int l = SDB_LENS_RECENCY; l <= SDB_LENS_CONSENSUS; l++)
        assert_int_equal(sdb_lens_parse(sdb_lens_name(l)), l);
    assert_int_equal(sdb_lens_parse("newest"), -1);
    assert_int_equal(sdb_lens_parse(NULL), -1);
    assert_null(sdb_lens_name(4));
    assert_null(sdb_lens_name(-1));
}

static void test_model_error_set_fills_code_field_and_message(void **state)
{
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_error_set(&err, SDB_EINVAL, "x.y", "bad %d", 7),
                     SDB_EINVAL);
    assert_int_equal(err.code, SDB_EINVAL);
    assert_string_equal(err.field, "x.y");
    assert_string_equal(err.message, "bad 7");
    assert_int_equal(sdb_error_set(&err, SDB_ETOOBIG, NULL, "z"), SDB_ETOOBIG);
    assert_string_equal(err.field, "");
    assert_int_equal(sdb_error_set(NULL, SDB_ECORRUPT, "f", "m"), SDB_ECORRUPT);
}

/* ---- ids ---- */

static void test_model_id_formats_and_parses_round_trip(void **state)
{
    struct sdb_id id = {.lsn = 0x1234abcdULL, .salt = 0xdeadbeef}, back;
    char buf[SDB_ID_LEN + 1];

    (void)state;
    sdb_id_format(id, buf);
    assert_string_equal(buf, "000000001234abcddeadbeef");
    assert_int_equal(sdb_id_parse(buf, &back), 0);
    assert_true(back.lsn == id.lsn && back.salt == id.salt);
    id.lsn = UINT64_MAX;
    id.salt = 0;
    sdb_id_format(id, buf);
    assert_string_equal(buf, "ffffffffffffffff00000000");
    assert_int_equal(sdb_id_parse(buf, &back), 0);
    assert_true(back.lsn == UINT64_MAX && back.salt == 0);
}

static void test_model_id_parse_rejects_malformed_ids(void **state)
{
    static const char *const BAD[] = {
        "",
        "000000001234abcddeadbee",   /* 23 digits */
        "000000001234abcddeadbeef0", /* 25 digits */
        "000000001234ABCDdeadbeef",  /* uppercase */
        "000000001234abcddeadbeeg",  /* not hex */
        "00000000 234abcddeadbeef",
        "-00000001234abcddeadbeef",
        "0000000000000000deadbeef", /* lsn 0 */
    };
    struct sdb_id id;

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        assert_int_equal(sdb_id_parse(BAD[i], &id), SDB_EINVAL);
    assert_int_equal(sdb_id_parse(NULL, &id), SDB_EINVAL);
}

/* ---- UTF-8 and concept paths ---- */

static void test_model_utf8_valid_accepts_well_formed_text(void **state)
{
    (void)state;
    assert_true(sdb_utf8_valid("", 0));
    assert_true(sdb_utf8_valid("plain", 5));
    assert_true(sdb_utf8_valid("caf\xc3\xa9", 5));
    assert_true(sdb_utf8_valid("\xe2\x82\xac", 3));
    assert_true(sdb_utf8_valid("\xed\x9f\xbf", 3));     /* U+D7FF */
    assert_true(sdb_utf8_valid("\xf0\x9f\x98\x80", 4)); /* U+1F600 */
    assert_true(sdb_utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
}

static void test_model_utf8_valid_rejects_malformed_text(void **state)
{
    static const char *const BAD[] = {
        "\x80",             /* lone continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf0\x80\x80\xaf", /* overlong */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80",
        "\xff",
        "\xc3", /* truncated */
        "\xe2\x82",
        "\xc3\x28",
    };

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        assert_false(sdb_utf8_valid(BAD[i], strlen(BAD[i])));
}

static void test_model_concept_path_accepts_valid_paths(void **state)
{
    char *max_comp = repeat('a', SDB_MAX_COMPONENT_LEN);
    char *deep = deep_path(SDB_MAX_PATH_DEPTH);
    const char *const OK[] = {"a",
                              "medicine/aspirin/dosage",
                              "caf\xc3\xa9/x",
                              "a.b/c-d_e",
                              "...a",
                              "a*b/x y",
                              max_comp,
                              deep};

    (void)state;
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++)
        assert_int_equal(
            sdb_concept_path_check(OK[i], strlen(OK[i]), "p", NULL), 0);
    free(max_comp);
    free(deep);
}

static void test_model_concept_path_rejects_bad_shapes(void **state)
{
    (void)state;
    path_fails("", 0, "must not be empty");
    path_fails("/a", 2, "must not start with '/'");
    path_fails("a/", 2, "must not end with '/'");
    path_fails("/", 1, "must not start with '/'");
    path_fails("a//b", 4, "empty component");
    path_fails(".", 1, "component 1 must not be '.' or '..'");
    path_fails("..", 2, "component 1 must not be '.' or '..'");
    path_fails("a/./b", 5, "component 2 must not be '.' or '..'");
    path_fails("a/../b", 6, "component 2 must not be '.' or '..'");
    path_fails("*", 1, "component 1 must not be '*'");
    path_fails("a/*", 3, "component 2 must not be '*'");
}

static void test_model_concept_path_rejects_bad_bytes(void **state)
{
    (void)state;
    path_fails("a\0b", 3, "NUL");
    path_fails("a\x01"
               "b",
               3, "control characters");
    path_fails("a\tb", 3, "control characters");
    path_fails("a\x7f", 2, "control characters");
    path_fails("a\xc2\x85", 3, "control characters"); /* C1 NEL */
    path_fails("a\xc2\x9f", 3, "control characters");
    path_fails("a\xff", 2, "valid UTF-8");
    path_fails("\xc0\xaf", 2, "valid UTF-8"); /* overlong '/' */
    path_fails("\xed\xa0\x80", 3, "valid UTF-8");
}

static void test_model_concept_path_rejects_oversized_paths(void **state)
{
    char *long_comp = repeat('a', SDB_MAX_COMPONENT_LEN + 1);
    char *esc_comp = repeat('@', 86); /* 258 bytes once escaped */
    char *too_long = deep_path(SDB_MAX_PATH_LEN / 2 + 1);
    char *too_deep = deep_path(SDB_MAX_PATH_DEPTH + 1);

    (void)state;
    path_fails(long_comp, strlen(long_comp), "longer than 200 bytes");
    path_fails(esc_comp, strlen(esc_comp), "255 bytes once escaped");
    path_fails(too_long, strlen(too_long), "at most 1024 bytes");
    path_fails(too_deep, strlen(too_deep), "at most 32 components");
    free(long_comp);
    free(esc_comp);
    free(too_long);
    free(too_deep);
}

static void test_model_concept_path_rejects_null_with_field(void **state)
{
    sdb_error err;
    int rc = sdb_concept_path_check(NULL, 0, "source", &err);

    (void)state;
    expect_err(&err, rc, SDB_EINVAL, "source", "is required");
}

/* ---- concept <-> dir ---- */

static void concept_dir_pair(const char *concept, const char *dir)
{
    char out[SDB_MAX_PATH_LEN * 3 + 1];
    sdb_error err = {0};

    assert_int_equal(sdb_concept_to_dir(concept, out, sizeof out, &err), 0);
    assert_string_equal(out, dir);
    assert_int_equal(sdb_dir_to_concept(dir, out, sizeof out), 0);
    assert_string_equal(out, concept);
}

static void test_model_concept_to_dir_escapes_each_component(void **state)
{
    (void)state;
    concept_dir_pair("medicine/aspirin/dosage", "medicine/aspirin/dosage");
    concept_dir_pair("indexes/x", "%69ndexes/x");
    concept_dir_pair("x/indexes", "x/indexes");
    concept_dir_pair(".hidden/a b/..x", "%2Ehidden/a%20b/%2E.x");
    concept_dir_pair("@wal/caf\xc3\xa9", "%40wal/caf\xc3\xa9");
}

static void test_model_concept_to_dir_rejects_invalid_paths(void **state)
{
    char out[SDB_MAX_PATH_LEN * 3 + 1];
    sdb_error err = {0};
    int rc = sdb_concept_to_dir("a/../b", out, sizeof out, &err);

    (void)state;
    expect_err(&err, rc, SDB_EINVAL, "concept_path", "'.' or '..'");
    rc = sdb_concept_to_dir("a//b", out, sizeof out, &err);
    expect_err(&err, rc, SDB_EINVAL, "concept_path", "empty component");
    rc = sdb_concept_to_dir(NULL, out, sizeof out, &err);
    assert_int_equal(rc, SDB_EINVAL);
    rc = sdb_concept_to_dir("abc/d e", out, 7, &err);
    expect_err(&err, rc, SDB_ETOOBIG, "concept_path", "output buffer");
}

static void test_model_dir_to_concept_rejects_foreign_names(void **state)
{
    static const char *const BAD[] = {
        "",      "indexes",     "indexes/a", "a//b",     "/a",
        "a/",    "..",          "a/.",       "%2e",      "@wal",
        "a/@x",  "x/%69ndexes", "a%00b",     "a%2Fb/c",  "%41",
        "a/%2A", "%C3",         "a b",       "a/%2E%2E",
    };
    char out[SDB_MAX_PATH_LEN * 3 + 1];

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        if (sdb_dir_to_concept(BAD[i], out, sizeof out) != SDB_EINVAL)
            fail_msg("dir \"%s\" was accepted", BAD[i]);
    assert_int_equal(sdb_dir_to_concept("abcdef", out, 4), SDB_ETOOBIG);
}

static void test_model_concept_dir_round_trips_random_paths(void **state)
{
    static const char ALPHABET[] = "aZ09_-.% @*~\xc3\xa9/";
    uint64_t seed = tu_seed(0x5eed0003);
    char path[64], dir[SDB_MAX_PATH_LEN * 3 + 1], back[sizeof dir];
    int accepted = 0;

    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 1 + tu_rand(&seed) % 40;

        for (size_t i = 0; i < len; i++)
            path[i] = ALPHABET[tu_rand(&seed) % (sizeof ALPHABET - 1)];
        path[len] = '\0';
        if (sdb_concept_path_check(path, len, "p", NULL) != 0) {
            assert_int_not_equal(
                sdb_concept_to_dir(path, dir, sizeof dir, NULL), 0);
            continue;
        }
        accepted++;
        assert_int_equal(sdb_concept_to_dir(path, dir, sizeof dir, NULL), 0);
        assert_null(strstr(dir, "/./"));
        assert_true(dir[0] != '/' && dir[0] != '.' && dir[0] != '@');
        assert_int_equal(sdb_dir_to_concept(dir, back, sizeof back), 0);
        assert_string_equal(back, path);
    }
    assert_true(accepted > 1000); /* the generator really exercises it */
}

/* ---- time ---- */

static void format_is(int64_t us, const char *want)
{
    char out[32];
    int64_t back = 0;

    sdb_time_format(us, out);
    assert_string_equal(out, want);
    assert_int_equal(sdb_time_parse(out, &back), 0);
    assert_int_equal(back, us);
}

static void test_model_time_format_writes_rfc3339_microseconds(void **state)
{
    (void)state;
    format_is(0, "1970-01-01T00:00:00.000000Z");
    format_is(INT64_C(1795433421123456), "2026-11-23T11:30:21.123456Z");
    format_is(INT64_C(1709251199999999), "2024-02-29T23:59:59.999999Z");
    format_is(-1, "1969-12-31T23:59:59.999999Z");
    format_is(INT64_C(-62135596800000000), "0001-01-01T00:00:00.000000Z");
    format_is(INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z");
}

static void test_model_time_format_survives_int64_extremes(void **state)
{
    char out[32];

    (void)state;
    sdb_time_format(INT64_MAX, out);
    assert_string_equal(out, "294247-01-10T04:00:54.775807Z");
    sdb_time_format(INT64_MIN, out);
    assert_true(strlen(out) < 32 && out[strlen(out) - 1] == 'Z');
    assert_true(strstr(out, "T19:59:05.224192Z") != NULL);
}

static void parse_is(const char *s, int64_t want)
{
    int64_t us = 12345;

    if (sdb_time_parse(s, &us) != 0)
        fail_msg("\"%s\" rejected", s);
    assert_int_equal(us, want);
}

static void test_model_time_parse_accepts_rfc3339_forms(void **state)
{
    const int64_t t = INT64_C(1795433421000000);

    (void)state;
    parse_is("2026-11-23T11:30:21Z", t);
    parse_is("2026-11-23t11:30:21z", t);
    parse_is("2026-11-23T11:30:21.1Z", t + 100000);
    parse_is("2026-11-23T11:30:21.123456789Z", t + 123456);
    parse_is("2026-11-23T17:00:21+05:30", t);
    parse_is("2026-11-23T03:30:21-08:00", t);
    parse_is("2026-11-23T11:30:21.5-00:00", t + 500000);
    parse_is("2026-11-24T02:30:21+15:00", t);
    parse_is("2000-02-29T00:00:00Z", INT64_C(951782400000000));
}

static void test_model_time_parse_rejects_malformed_times(void **state)
{
    static const char *const BAD[] = {
        "",
        "2026-11-23",
        "2026-11-23T11:30:21",
        "2026-11-23 11:30:21Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-11-00T00:00:00Z",
        "2026-11-31T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T23:60:00Z",
        "2026-11-23T23:59:60Z",
        "2026-11-23T11:30:21+24:00",
        "2026-11-23T11:30:21+05:60",
        "2026-11-23T11:30:21+0530",
        "2026-11-23T11:30:21.Z",
        "2026-11-23T11:30:21.1234567890Z",
        "2026-11-23T11:30:21ZZ",
        "2026-11-23T11:30:21Z ",
        "2026-1-23T11:30:21Z",
        "+2026-11-23T11:30:21Z",
        "2026-11-23T11:30:21UTC",
        "2026-11-23T1:30:21Z",
    };
    int64_t us;

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        if (sdb_time_parse(BAD[i], &us) != SDB_EINVAL)
            fail_msg("\"%s\" accepted", BAD[i]);
    assert_int_equal(sdb_time_parse(NULL, &us), SDB_EINVAL);
}

static void test_model_time_round_trips_random_instants(void **state)
{
    const int64_t lo = INT64_C(-62135596800000000);
    const uint64_t span = (uint64_t)(INT64_C(253402300799999999) - lo);
    uint64_t seed = tu_seed(0x5eed0004);
    char buf[32];

    (void)state;
    for (int i = 0; i < 100000; i++) {
        int64_t us = lo + (int64_t)(tu_rand(&seed) % span), back = 0;

        sdb_time_format(us, buf);
        assert_int_equal(strlen(buf), 27);
        assert_int_equal(sdb_time_parse(buf, &back), 0);
        assert_int_equal(back, us);
    }
}

/* ---- assert requests ---- */

static void test_model_assert_parse_applies_defaults(void **state)
{
    struct sdb_assertion *a =
        assert_req_ok("{\"concept_path\":\"m/aspirin\",\"predicate\":"
                      "\"dose\",\"value\":null}");

    (void)state;
    assert_string_equal(a->concept_path, "m/aspirin");
    assert_string_equal(a->predicate, "dose");
    assert_true(json_is_null(a->value));
    assert_true(a->confidence == 1.0);
    assert_int_equal(a->tier, SDB_TIER_UNVERIFIED);
    assert_null(a->source);
    assert_null(a->derived_from);
    assert_int_equal(a->n_derived, 0);
    free_assertions(a, 1);
}

static void test_model_assert_parse_reads_every_field(void **state)
{
    struct sdb_assertion *a = assert_req_ok(
        "{\"concept_path\":\"m/a\",\"predicate\":\"p q\",\"value\":{\"mg\":"
        "[1,2.5]},\"confidence\":0.25,\"authority_tier\":\"expert\","
        "\"source\":\"source/pubmed/123\",\"derived_from\":"
        "[\"000000000000000100000002\",\"00000000000000ff0000000a\"]}");
    json_t *want = J("{\"mg\":[1,2.5]}");

    (void)state;
    assert_true(json_equal(a->value, want));
    assert_true(a->confidence == 0.25);
    assert_int_equal(a->tier, SDB_TIER_EXPERT);
    assert_string_equal(a->source, "source/pubmed/123");
    assert_int_equal(a->n_derived, 2);
    assert_true(a->derived_from[0].lsn == 1 && a->derived_from[0].salt == 2);
    assert_true(a->derived_from[1].lsn == 255 && a->derived_from[1].salt == 10);
    json_decref(want);
    free_assertions(a, 1);
}

static void test_model_assert_parse_accepts_confidence_bounds(void **state)
{
    static const char *const OK[] = {"0",    "1",   "0.0",   "1.0",
                                     "-0.0", "0.5", "1e-300"};
    static const double WANT[] = {0, 1, 0, 1, 0, 0.5, 1e-300};
    char text[160];

    (void)state;
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        struct sdb_assertion *a;

        snprintf(text, sizeof text,
                 "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                 "\"confidence\":%s}",
                 OK[i]);
        a = assert_req_ok(text);
        assert_true(a->confidence == WANT[i]);
        assert_false(signbit(a->confidence));
        free_assertions(a, 1);
    }
}

static void test_model_assert_parse_rejects_bad_confidence(void **state)
{
    static const char *const BAD[] = {"-0.1",    "1.0000001", "2",    "-1",
                                      "\"0.5\"", "true",      "null", "[]"};
    char text[160];

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                 "\"confidence\":%s}",
                 BAD[i]);
        assert_req_fails(text, SDB_EINVAL, "confidence",
                         "must be a number between 0.0 and 1.0");
    }
}

static void test_model_assert_parse_requires_core_fields(void **state)
{
    (void)state;
    assert_req_fails("{\"predicate\":\"p\",\"value\":1}", SDB_EINVAL,
                     "concept_path", "is required");
    assert_req_fails("{\"concept_path\":\"a\",\"value\":1}", SDB_EINVAL,
                     "predicate", "is required");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\"}", SDB_EINVAL,
                     "value", "is required");
    assert_req_fails("[1]", SDB_EINVAL, "", "JSON object");
    assert_req_fails("\"x\"", SDB_EINVAL, "", "JSON object");
}

static void test_model_assert_parse_rejects_server_assigned_fields(void **s)
{
    static const char *const KEYS[] = {"id", "lsn", "timestamp"};
    char text[160];

    (void)s;
    for (size_t i = 0; i < 3; i++) {
        snprintf(text, sizeof text,
                 "{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                 "\"%s\":\"000000000000000100000002\"}",
                 KEYS[i]);
        assert_req_fails(text, SDB_EINVAL, KEYS[i], "assigned by the server");
    }
}

static void test_model_assert_parse_rejects_unknown_fields(void **state)
{
    json_t *req = J("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
                    "1}");
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;
    int rc;

    (void)state;
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
                     "1,\"color\":\"red\"}",
                     SDB_EINVAL, "color", "unknown field");
    /* a key with an embedded NUL is not "source" */
    json_object_setn_new(req, "source\0x", 8, json_string("a"));
    rc = sdb_assert_request_parse(req, &a, &n, &err);
    expect_err(&err, rc, SDB_EINVAL, "source", "unknown field");
    json_decref(req);
}

static void test_model_assert_parse_rejects_wrong_types(void **state)
{
    (void)state;
    assert_req_fails("{\"concept_path\":5,\"predicate\":\"p\",\"value\":1}",
                     SDB_EINVAL, "concept_path", "must be a string");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":true,\"value\":1}",
                     SDB_EINVAL, "predicate", "must be a string");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"authority_tier\":3}",
                     SDB_EINVAL, "authority_tier", "must be one of");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"authority_tier\":\"admin\"}",
                     SDB_EINVAL, "authority_tier", "must be one of");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"source\":7}",
                     SDB_EINVAL, "source", "must be a string");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"derived_from\":\"x\"}",
                     SDB_EINVAL, "derived_from", "array of assertion ids");
}

static void test_model_assert_parse_validates_paths_and_source(void **state)
{
    struct sdb_assertion *a;

    (void)state;
    assert_req_fails("{\"concept_path\":\"a/../b\",\"predicate\":\"p\","
                     "\"value\":1}",
                     SDB_EINVAL, "concept_path", "'.' or '..'");
    assert_req_fails("{\"concept_path\":\"a\\u0000b\",\"predicate\":\"p\","
                     "\"value\":1}",
                     SDB_EINVAL, "concept_path", "NUL");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"source\":\"s//x\"}",
                     SDB_EINVAL, "source", "empty component");
    a = assert_req_ok("{\"concept_path\":\"a\",\"predicate\":\"p\","
                      "\"value\":1,\"source\":null,\"derived_from\":null}");
    assert_null(a->source);
    assert_int_equal(a->n_derived, 0);
    free_assertions(a, 1);
}

static void test_model_assert_parse_validates_predicate(void **state)
{
    char *long_pred = repeat('p', SDB_MAX_PREDICATE_LEN + 1);
    char text[600];
    struct sdb_assertion *a;

    (void)state;
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"\",\"value\":1}",
                     SDB_EINVAL, "predicate", "must not be empty");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"a\\tb\","
                     "\"value\":1}",
                     SDB_EINVAL, "predicate", "control characters");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"a\\u0000b\","
                     "\"value\":1}",
                     SDB_EINVAL, "predicate", "NUL");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"a\\u0085\","
                     "\"value\":1}",
                     SDB_EINVAL, "predicate", "control characters");
    snprintf(text, sizeof text,
             "{\"concept_path\":\"a\",\"predicate\":\"%s\",\"value\":1}",
             long_pred);
    assert_req_fails(text, SDB_EINVAL, "predicate", "at most 256 bytes");
    long_pred[SDB_MAX_PREDICATE_LEN] = '\0';
    snprintf(text, sizeof text,
             "{\"concept_path\":\"a\",\"predicate\":\"%s\",\"value\":1}",
             long_pred);
    a = assert_req_ok(text);
    assert_int_equal(strlen(a->predicate), SDB_MAX_PREDICATE_LEN);
    free_assertions(a, 1);
    free(long_pred);
}

/* {"concept_path":"a","predicate":"p","value":[[...[inner]...]]} */
static json_t *nested_request(int containers, json_t *inner)
{
    json_t *v = inner, *req = J("{\"concept_path\":\"a\",\"predicate\":"
                                "\"p\"}");

    for (int i = 0; i < containers; i++) {
        json_t *arr = json_array();

        json_array_append_new(arr, v);
        v = arr;
    }
    json_object_set_new(req, "value", v);
    return req;
}

static void test_model_assert_parse_bounds_value_depth(void **state)
{
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;
    json_t *ok = nested_request(SDB_MAX_VALUE_DEPTH - 1, json_integer(1));
    json_t *deep = nested_request(SDB_MAX_VALUE_DEPTH, json_array());
    int rc;

    (void)state;
    assert_int_equal(sdb_assert_request_parse(ok, &a, &n, &err), 0);
    free_assertions(a, n);
    rc = sdb_assert_request_parse(deep, &a, &n, &err);
    expect_err(&err, rc, SDB_EINVAL, "value", "nested too deeply");
    json_decref(ok);
    json_decref(deep);
}

static void test_model_assert_parse_rejects_oversized_value(void **state)
{
    char *big = repeat('x', SDB_MAX_VALUE_BYTES);
    json_t *req = J("{\"concept_path\":\"a\",\"predicate\":\"p\"}");
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;
    int rc;

    (void)state;
    json_object_set_new(req, "value", json_string(big));
    rc = sdb_assert_request_parse(req, &a, &n, &err);
    expect_err(&err, rc, SDB_ETOOBIG, "value", "at most 65536");
    big[SDB_MAX_VALUE_BYTES - 5] = '\0'; /* str32 header: 5 bytes */
    json_object_set_new(req, "value", json_string(big));
    assert_int_equal(sdb_assert_request_parse(req, &a, &n, &err), 0);
    free_assertions(a, n);
    json_decref(req);
    free(big);
}

static void test_model_assert_parse_validates_derived_from(void **state)
{
    json_t *req = J("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
                    "1}");
    json_t *ids = json_array();
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;
    int rc;

    (void)state;
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"derived_from\":[\"000000000000000100000002\",1]}",
                     SDB_EINVAL, "derived_from[1]", "assertion id");
    assert_req_fails("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
                     "\"derived_from\":[\"000000000000000000000002\"]}",
                     SDB_EINVAL, "derived_from[0]", "assertion id");
    for (int i = 0; i < SDB_MAX_DERIVED; i++)
        json_array_append_new(ids, json_string("000000000000000100000002"));
    json_object_set(req, "derived_from", ids);
    assert_int_equal(sdb_assert_request_parse(req, &a, &n, &err), 0);
    assert_int_equal(a[0].n_derived, SDB_MAX_DERIVED);
    free_assertions(a, n);
    json_array_append_new(ids, json_string("000000000000000100000002"));
    rc = sdb_assert_request_parse(req, &a, &n, &err);
    expect_err(&err, rc, SDB_EINVAL, "derived_from", "at most 64");
    json_decref(ids);
    json_decref(req);
}

static void test_model_assert_parse_reads_batches(void **state)
{
    json_t *req = J("{\"assertions\":[{\"concept_path\":\"a\",\"predicate\":"
                    "\"p\",\"value\":1},{\"concept_path\":\"b/c\","
                    "\"predicate\":\"q\",\"value\":\"v\",\"confidence\":0}]}");
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_assert_request_parse(req, &a, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(a[0].concept_path, "a");
    assert_string_equal(a[1].concept_path, "b/c");
    assert_true(a[1].confidence == 0.0);
    free_assertions(a, n);
    json_decref(req);
}

static void test_model_assert_parse_names_the_failing_batch_item(void **s)
{
    (void)s;
    assert_req_fails(
        "{\"assertions\":[{\"concept_path\":\"a\",\"predicate\":\"p\","
        "\"value\":1},{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
        "1},{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1},{"
        "\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":1,"
        "\"confidence\":1.5}]}",
        SDB_EINVAL, "assertions[3].confidence",
        "must be a number between 0.0 and 1.0");
    assert_req_fails("{\"assertions\":[{\"concept_path\":\"a\",\"predicate\":"
                     "\"p\",\"value\":1},7]}",
                     SDB_EINVAL, "assertions[1]", "must be an object");
    assert_req_fails("{\"assertions\":[{\"predicate\":\"p\",\"value\":1}]}",
                     SDB_EINVAL, "assertions[0].concept_path", "is required");
    assert_req_fails("{\"assertions\":[{\"concept_path\":\"a\",\"predicate\":"
                     "\"p\",\"value\":1,\"lsn\":4}]}",
                     SDB_EINVAL, "assertions[0].lsn", "assigned by the server");
}

static void test_model_assert_parse_rejects_bad_batch_shapes(void **state)
{
    json_t *req = J("{\"assertions\":[]}");
    json_t *one = J("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
                    "1}");
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;
    int rc;

    (void)state;
    assert_req_fails("{\"assertions\":[]}", SDB_EINVAL, "assertions",
                     "non-empty array");
    assert_req_fails("{\"assertions\":{}}", SDB_EINVAL, "assertions",
                     "non-empty array");
    assert_req_fails("{\"assertions\":[{\"concept_path\":\"a\",\"predicate\":"
                     "\"p\",\"value\":1}],\"extra\":1}",
                     SDB_EINVAL, "extra", "unknown field");
    for (int i = 0; i < SDB_MAX_BATCH; i++)
        json_array_append(json_object_get(req, "assertions"), one);
    assert_int_equal(sdb_assert_request_parse(req, &a, &n, &err), 0);
    assert_int_equal(n, SDB_MAX_BATCH);
    free_assertions(a, n);
    json_array_append(json_object_get(req, "assertions"), one);
    rc = sdb_assert_request_parse(req, &a, &n, &err);
    expect_err(&err, rc, SDB_ETOOBIG, "assertions", "at most 1000");
    json_decref(one);
    json_decref(req);
}

static void test_model_assert_parse_copies_the_value(void **state)
{
    json_t *req = J("{\"concept_path\":\"a\",\"predicate\":\"p\",\"value\":"
                    "{\"k\":[1]}}");
    struct sdb_assertion *a = NULL;
    size_t n = 0;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_assert_request_parse(req, &a, &n, &err), 0);
    assert_ptr_not_equal(a->value, json_object_get(req, "value"));
    json_decref(req); /* the request may go away before the commit */
    assert_int_equal(
        json_integer_value(json_array_get(json_object_get(a->value, "k"), 0)),
        1);
    free_assertions(a, n);
}

/* ---- retract requests ---- */

static void retract_fails(const char *text, int code, const char *field,
                          const char *msg_part)
{
    json_t *req = J(text);
    struct sdb_retraction r;
    sdb_error err = {0};
    int rc = sdb_retract_request_parse(req, &r, &err);

    expect_err(&err, rc, code, field, msg_part);
    assert_null(r.reason);
    assert_null(r.concept_path);
    json_decref(req);
}

static void test_model_retract_parse_reads_id_targets(void **state)
{
    json_t *req = J("{\"id\":\"000000000000002a00000001\",\"reason\":\"wrong"
                    "\\nsee ticket\"}");
    struct sdb_retraction r;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_retract_request_parse(req, &r, &err), 0);
    assert_true(r.by_id);
    assert_true(r.target_id.lsn == 42 && r.target_id.salt == 1);
    assert_string_equal(r.reason, "wrong\nsee ticket");
    assert_false(r.cascade);
    assert_null(r.concept_path);
    sdb_retraction_release(&r);
    json_decref(req);
}

static void test_model_retract_parse_reads_path_targets(void **state)
{
    json_t *exact = J("{\"concept_path\":\"a/b\",\"predicate\":\"dose\","
                      "\"reason\":\"r\",\"cascade\":true}");
    json_t *sub = J("{\"concept_path\":\"a/b/*\",\"reason\":\"r\"}");
    struct sdb_retraction r;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_retract_request_parse(exact, &r, &err), 0);
    assert_false(r.by_id);
    assert_string_equal(r.concept_path, "a/b");
    assert_int_equal(r.scope, SDB_SCOPE_EXACT);
    assert_string_equal(r.predicate, "dose");
    assert_true(r.cascade);
    sdb_retraction_release(&r);
    assert_int_equal(sdb_retract_request_parse(sub, &r, &err), 0);
    assert_string_equal(r.concept_path, "a/b");
    assert_int_equal(r.scope, SDB_SCOPE_SUBTREE);
    assert_null(r.predicate);
    sdb_retraction_release(&r);
    json_decref(exact);
    json_decref(sub);
}

static void test_model_retract_parse_requires_exactly_one_target(void **s)
{
    (void)s;
    retract_fails("{\"reason\":\"r\"}", SDB_EINVAL, "id", "exactly one");
    retract_fails("{\"id\":\"000000000000002a00000001\",\"concept_path\":"
                  "\"a\",\"reason\":\"r\"}",
                  SDB_EINVAL, "concept_path", "exactly one");
    retract_fails("{\"id\":\"000000000000002a00000001\",\"predicate\":\"p\","
                  "\"reason\":\"r\"}",
                  SDB_EINVAL, "predicate", "only allowed with concept_path");
}

static void test_model_retract_parse_validates_reason(void **state)
{
    char *long_reason = repeat('r', SDB_MAX_REASON_LEN + 1);
    char *text =
        tu_printf("{\"concept_path\":\"a\",\"reason\":\"%s\"}", long_reason);

    (void)state;
    retract_fails("{\"concept_path\":\"a\"}", SDB_EINVAL, "reason",
                  "is required");
    retract_fails("{\"concept_path\":\"a\",\"reason\":\"\"}", SDB_EINVAL,
                  "reason", "must not be empty");
    retract_fails("{\"concept_path\":\"a\",\"reason\":5}", SDB_EINVAL, "reason",
                  "must be a string");
    retract_fails("{\"concept_path\":\"a\",\"reason\":\"a\\u0000\"}",
                  SDB_EINVAL, "reason", "NUL");
    retract_fails(text, SDB_EINVAL, "reason", "at most 1024 bytes");
    free(text);
    free(long_reason);
}

static void test_model_retract_parse_rejects_bad_fields(void **state)
{
    (void)state;
    retract_fails("{\"id\":\"000000000000002A00000001\",\"reason\":\"r\"}",
                  SDB_EINVAL, "id", "assertion id");
    retract_fails("{\"id\":42,\"reason\":\"r\"}", SDB_EINVAL, "id",
                  "assertion id");
    retract_fails("{\"concept_path\":\"*\",\"reason\":\"r\"}", SDB_EINVAL,
                  "concept_path", "'*' alone");
    retract_fails("{\"concept_path\":\"a//b/*\",\"reason\":\"r\"}", SDB_EINVAL,
                  "concept_path", "empty component");
    retract_fails("{\"concept_path\":\"a/*/*\",\"reason\":\"r\"}", SDB_EINVAL,
                  "concept_path", "must not be '*'");
    retract_fails("{\"concept_path\":\"a\",\"reason\":\"r\",\"cascade\":"
                  "\"yes\"}",
                  SDB_EINVAL, "cascade", "must be a boolean");
    retract_fails("{\"concept_path\":\"a\",\"reason\":\"r\",\"why\":1}",
                  SDB_EINVAL, "why", "unknown field");
    retract_fails("{\"concept_path\":\"a\",\"reason\":\"r\",\"timestamp\":1}",
                  SDB_EINVAL, "timestamp", "assigned by the server");
    retract_fails("{\"concept_path\":\"a\",\"predicate\":\"\",\"reason\":"
                  "\"r\"}",
                  SDB_EINVAL, "predicate", "must not be empty");
    retract_fails("[]", SDB_EINVAL, "", "JSON object");
}

/* ---- query requests ---- */

static void query_fails(const char *text, const char *field,
                        const char *msg_part)
{
    json_t *req = J(text);
    struct sdb_query_req q;
    sdb_error err = {0};
    int rc = sdb_query_request_parse(req, &q, &err);

    expect_err(&err, rc, SDB_EINVAL, field, msg_part);
    assert_null(q.concept_path);
    json_decref(req);
}

static void test_model_query_parse_applies_defaults(void **state)
{
    json_t *req = J("{}");
    struct sdb_query_req q;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_query_request_parse(req, &q, &err), 0);
    assert_int_equal(q.scope, SDB_SCOPE_ALL);
    assert_null(q.concept_path);
    assert_int_equal(q.lens, SDB_LENS_RECENCY);
    assert_int_equal(q.limit, SDB_DEFAULT_QUERY_LIMIT);
    assert_false(q.has_as_of);
    assert_false(q.include_retracted);
    assert_null(q.cursor);
    sdb_query_req_release(&q);
    assert_int_equal(sdb_query_request_parse(NULL, &q, &err), 0);
    assert_int_equal(q.limit, SDB_DEFAULT_QUERY_LIMIT);
    json_decref(req);
}

static void query_scope_is(const char *path, int scope, const char *want)
{
    json_t *req = json_pack("{s:s}", "concept_path", path);
    struct sdb_query_req q;
    sdb_error err;

    assert_int_equal(sdb_query_request_parse(req, &q, &err), 0);
    assert_int_equal(q.scope, scope);
    if (want == NULL)
        assert_null(q.concept_path);
    else
        assert_string_equal(q.concept_path, want);
    sdb_query_req_release(&q);
    json_decref(req);
}

static void test_model_query_parse_reads_scopes(void **state)
{
    (void)state;
    query_scope_is("*", SDB_SCOPE_ALL, NULL);
    query_scope_is("a/b/*", SDB_SCOPE_SUBTREE, "a/b");
    query_scope_is("a/*", SDB_SCOPE_SUBTREE, "a");
    query_scope_is("a/b", SDB_SCOPE_EXACT, "a/b");
    query_fails("{\"concept_path\":\"/*\"}", "concept_path", "empty");
    query_fails("{\"concept_path\":\"a/*/b\"}", "concept_path", "'*'");
    query_fails("{\"concept_path\":\"a/..\"}", "concept_path", "'..'");
    query_fails("{\"concept_path\":3}", "concept_path", "must be a string");
}

static void test_model_query_parse_reads_every_field(void **state)
{
    json_t *req =
        J("{\"concept_path\":\"a\",\"predicate\":\"p\",\"lens\":\"authority\","
          "\"limit\":10000,\"cursor\":\"abc\",\"as_of\":"
          "\"1970-01-01T00:00:01.5Z\",\"include_retracted\":true}");
    struct sdb_query_req q;
    sdb_error err;

    (void)state;
    assert_int_equal(sdb_query_request_parse(req, &q, &err), 0);
    assert_string_equal(q.predicate, "p");
    assert_int_equal(q.lens, SDB_LENS_AUTHORITY);
    assert_int_equal(q.limit, SDB_MAX_QUERY_LIMIT);
    assert_string_equal(q.cursor, "abc");
    assert_true(q.has_as_of);
    assert_int_equal(q.as_of_us, 1500000);
    assert_true(q.include_retracted);
    sdb_query_req_release(&q);
    json_decref(req);
}

static void test_model_query_parse_rejects_bad_limits(void **state)
{
    static const char *const BAD[] = {
        "0", "-1", "10001", "1.5", "\"10\"", "true", "null", "99999999999999"};
    char text[64];

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        snprintf(text, sizeof text, "{\"limit\":%s}", BAD[i]);
        query_fails(text, "limit", "integer between 1 and 10000");
    }
}

static void test_model_query_parse_rejects_bad_fields(void **state)
{
    char *cursor = repeat('c', 513);
    char *text = tu_printf("{\"cursor\":\"%s\"}", cursor);

    (void)state;
    query_fails("{\"lens\":\"newest\"}", "lens", "must be one of");
    query_fails("{\"lens\":1}", "lens", "must be one of");
    query_fails("{\"as_of\":\"yesterday\"}", "as_of", "RFC 3339");
    query_fails("{\"as_of\":\"2026-02-30T00:00:00Z\"}", "as_of", "RFC 3339");
    query_fails("{\"include_retracted\":1}", "include_retracted",
                "must be a boolean");
    query_fails("{\"cursor\":5}", "cursor", "must be a string");
    query_fails(text, "cursor", "at most 512 bytes");
    query_fails("{\"predicate\":\"\"}", "predicate", "must not be empty");
    query_fails("{\"sort\":\"x\"}", "sort", "unknown field");
    query_fails("[]", "", "JSON object");
    free(text);
    free(cursor);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_tier_names_parse_and_weigh_in_order),
        cmocka_unit_test(test_model_lens_names_parse_round_trip),
        cmocka_unit_test(test_model_error_set_fills_code_field_and_message),
        cmocka_unit_test(test_model_id_formats_and_parses_round_trip),
        cmocka_unit_test(test_model_id_parse_rejects_malformed_ids),
        cmocka_unit_test(test_model_utf8_valid_accepts_well_formed_text),
        cmocka_unit_test(test_model_utf8_valid_rejects_malformed_text),
        cmocka_unit_test(test_model_concept_path_accepts_valid_paths),
        cmocka_unit_test(test_model_concept_path_rejects_bad_shapes),
        cmocka_unit_test(test_model_concept_path_rejects_bad_bytes),
        cmocka_unit_test(test_model_concept_path_rejects_oversized_paths),
        cmocka_unit_test(test_model_concept_path_rejects_null_with_field),
        cmocka_unit_test(test_model_concept_to_dir_escapes_each_component),
        cmocka_unit_test(test_model_concept_to_dir_rejects_invalid_paths),
        cmocka_unit_test(test_model_dir_to_concept_rejects_foreign_names),
        cmocka_unit_test(test_model_concept_dir_round_trips_random_paths),
        cmocka_unit_test(test_model_time_format_writes_rfc3339_microseconds),
        cmocka_unit_test(test_model_time_format_survives_int64_extremes),
        cmocka_unit_test(test_model_time_parse_accepts_rfc3339_forms),
        cmocka_unit_test(test_model_time_parse_rejects_malformed_times),
        cmocka_unit_test(test_model_time_round_trips_random_instants),
        cmocka_unit_test(test_model_assert_parse_applies_defaults),
        cmocka_unit_test(test_model_assert_parse_reads_every_field),
        cmocka_unit_test(test_model_assert_parse_accepts_confidence_bounds),
        cmocka_unit_test(test_model_assert_parse_rejects_bad_confidence),
        cmocka_unit_test(test_model_assert_parse_requires_core_fields),
        cmocka_unit_test(
            test_model_assert_parse_rejects_server_assigned_fields),
        cmocka_unit_test(test_model_assert_parse_rejects_unknown_fields),
        cmocka_unit_test(test_model_assert_parse_rejects_wrong_types),
        cmocka_unit_test(test_model_assert_parse_validates_paths_and_source),
        cmocka_unit_test(test_model_assert_parse_validates_predicate),
        cmocka_unit_test(test_model_assert_parse_bounds_value_depth),
        cmocka_unit_test(test_model_assert_parse_rejects_oversized_value),
        cmocka_unit_test(test_model_assert_parse_validates_derived_from),
        cmocka_unit_test(test_model_assert_parse_reads_batches),
        cmocka_unit_test(test_model_assert_parse_names_the_failing_batch_item),
        cmocka_unit_test(test_model_assert_parse_rejects_bad_batch_shapes),
        cmocka_unit_test(test_model_assert_parse_copies_the_value),
        cmocka_unit_test(test_model_retract_parse_reads_id_targets),
        cmocka_unit_test(test_model_retract_parse_reads_path_targets),
        cmocka_unit_test(test_model_retract_parse_requires_exactly_one_target),
        cmocka_unit_test(test_model_retract_parse_validates_reason),
        cmocka_unit_test(test_model_retract_parse_rejects_bad_fields),
        cmocka_unit_test(test_model_query_parse_applies_defaults),
        cmocka_unit_test(test_model_query_parse_reads_scopes),
        cmocka_unit_test(test_model_query_parse_reads_every_field),
        cmocka_unit_test(test_model_query_parse_rejects_bad_limits),
        cmocka_unit_test(test_model_query_parse_rejects_bad_fields),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
