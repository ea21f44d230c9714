/*
 * test_codec.c - unit tests for src/codec.c: JSON values through msgpack
 * losslessly, the exact record layout, record round trips, rejection of
 * every kind of bad record, and fuzzing by truncation, byte flips and
 * random buffers (every outcome must be SDB_ECORRUPT or a canonical record).
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "testutil.h"

#define ID_A "000000000000002a00000007"

/* ---- helpers ---- */

static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);

    if (v == NULL)
        fail_msg("bad test JSON: %s: %s", text, jerr.text);
    return v;
}

/* Pack v, unpack it again; returns the new value (or NULL). */
static json_t *through_msgpack(const json_t *v, size_t *packed_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked res;
    json_t *back = NULL;
    size_t off = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(sdb_value_pack(&pk, v, 1), 0);
    *packed_len = sb.size;
    msgpack_unpacked_init(&res);
    assert_int_equal(msgpack_unpack_next(&res, sb.data, sb.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    back = sdb_value_unpack(&res.data, 1);
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&sb);
    return back;
}

/* v survives msgpack exactly: equal, same dump (so -0.0 keeps its sign). */
static void check_lossless(json_t *v)
{
    size_t len = 0;
    json_t *back = through_msgpack(v, &len);
    char *a, *b;

    assert_non_null(back);
    assert_true(json_equal(v, back));
    a = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    b = json_dumps(back, JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    assert_string_equal(a, b);
    assert_int_equal(json_typeof(v), json_typeof(back));
    assert_int_equal(sdb_value_packed_size(v), (int64_t)len);
    free(a);
    free(b);
    json_decref(back);
}

/* A msgpack object built by fn, decoded by sdb_value_unpack. */
static json_t *unpack_built(void (*fn)(msgpack_packer *pk))
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked res;
    json_t *v;
    size_t off = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    msgpack_unpacked_init(&res);
    assert_int_equal(msgpack_unpack_next(&res, sb.data, sb.size, &off),
                     MSGPACK_UNPACK_SUCCESS);
    v = sdb_value_unpack(&res.data, 1);
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&sb);
    return v;
}

static void init_assertion(struct sdb_assertion *a, bool full)
{
    memset(a, 0, sizeof *a);
    a->concept_path = strdup("medicine/aspirin/dosage");
    a->predicate = strdup("adult dose");
    a->value = J("{\"mg\":[325,650],\"note\":\"caf\\u00e9\",\"x\":-0.0}");
    a->confidence = 0.85;
    a->tier = SDB_TIER_EXPERT;
    a->id.lsn = 42;
    a->id.salt = 7;
    a->ts_us = INT64_C(1795433421123456);
    if (!full)
        return;
    a->source = strdup("source/pubmed/123");
    a->n_derived = 2;
    a->derived_from = calloc(2, sizeof *a->derived_from);
    a->derived_from[0] = (struct sdb_id){.lsn = 1, .salt = 0xffffffff};
    a->derived_from[1] = (struct sdb_id){.lsn = INT64_MAX, .salt = 1};
}

static void init_retraction(struct sdb_retraction *r, bool by_id)
{
    memset(r, 0, sizeof *r);
    r->by_id = by_id;
    if (by_id) {
        r->target_id = (struct sdb_id){.lsn = 42, .salt = 7};
    } else {
        r->concept_path = strdup("medicine/aspirin");
        r->scope = SDB_SCOPE_SUBTREE;
        r->predicate = strdup("adult dose");
    }
    r->reason = strdup("withdrawn by the journal");
    r->cascade = !by_id;
    r->id = (struct sdb_id){.lsn = 99, .salt = 0x1234};
    r->ts_us = -5;
    r->n_retracted = by_id ? 0 : 3;
    if (!by_id) {
        r->retracted = calloc(3, sizeof *r->retracted);
        r->retracted[0] = 42;
        r->retracted[1] = 300;
        r->retracted[2] = INT64_MAX;
    }
}

/* Decode buf; must be a clean record whose bytes re-encode identically. */
static void decode_ok(const void *buf, size_t len, struct sdb_record *rec)
{
    sdb_error err = {0};
    size_t used = 0;
    int rc = sdb_codec_unpack(buf, len, &used, rec, &err);

    if (rc != 0)
        fail_msg("decode failed: %s: %s", err.field, err.message);
    assert_int_equal(used, len);
}

static void decode_fails(const void *buf, size_t len, const char *field)
{
    struct sdb_record rec;
    sdb_error err = {0};
    size_t used = 77;
    int rc = sdb_codec_unpack(buf, len, &used, &rec, &err);

    assert_int_equal(rc, SDB_ECORRUPT);
    assert_int_equal(err.code, SDB_ECORRUPT);
    assert_int_equal(used, 0);
    assert_int_equal(rec.type, 0);
    assert_null(rec.a.value);
    if (field != NULL)
        assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
}

/* The JSON image of the canonical assertion record (keys in order). */
static json_t *assertion_image(void)
{
    return J("{\"type\":\"assertion\",\"id\":\"" ID_A "\",\"lsn\":42,"
             "\"timestamp\":1795433421123456,\"concept_path\":\"a/b\","
             "\"predicate\":\"p\",\"value\":{\"k\":[1,2.5,null,true]},"
             "\"confidence\":0.5,\"authority_tier\":\"verified\"}");
}

/* Pack a JSON image as a record (it is itself a value of depth 2). */
static void pack_image(const json_t *img, msgpack_sbuffer *sb)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(sdb_value_pack(&pk, img, 1), 0);
}

/* Set key in the image (replacing in place), pack it, expect rejection. */
static void image_fails(const char *key, json_t *v, const char *field)
{
    json_t *img = assertion_image();
    msgpack_sbuffer sb;

    if (v == NULL)
        json_object_del(img, key);
    else
        json_object_set_new(img, key, v);
    pack_image(img, &sb);
    decode_fails(sb.data, sb.size, field);
    msgpack_sbuffer_destroy(&sb);
    json_decref(img);
}

static char *find_bytes(char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* ---- values ---- */

static void test_codec_values_round_trip_losslessly(void **state)
{
    static const char *const VALUES[] = {
        "null",
        "true",
        "false",
        "0",
        "-1",
        "127",
        "128",
        "-32",
        "-33",
        "9223372036854775807",
        "-9223372036854775808",
        "9007199254740993",
        "-9007199254740993",
        "0.1",
        "-0.0",
        "0.0",
        "1e308",
        "-1e308",
        "5e-324",
        "2.2250738585072014e-308",
        "1.0",
        "\"\"",
        "\"caf\\u00e9 \\u20ac \\ud83d\\ude00\"",
        "\"a\\u0000b\"",
        "[]",
        "{}",
        "[[],{},[[]]]",
        "{\"a\":{\"b\":{\"c\":[1,\"x\",{\"\":null}]}}}",
        "{\"z\":1,\"a\":2,\"m\":3}",
        "[1,-1,1.5,\"s\",true,false,null,[1],{\"x\":1}]"};

    (void)state;
    for (size_t i = 0; i < sizeof VALUES / sizeof VALUES[0]; i++) {
        json_t *v = J(VALUES[i]);

        check_lossless(v);
        json_decref(v);
    }
}

static void test_codec_values_keep_keys_with_nul_bytes(void **state)
{
    json_t *v = json_object();
    size_t len;
    json_t *back;

    (void)state;
    json_object_setn_new(v, "k\0ey", 4, json_integer(1));
    json_object_setn_new(v, "k", 1, json_integer(2));
    back = through_msgpack(v, &len);
    assert_non_null(back);
    assert_int_equal(json_object_size(back), 2);
    assert_int_equal(json_integer_value(json_object_getn(back, "k\0ey", 4)), 1);
    assert_int_equal(json_integer_value(json_object_getn(back, "k", 1)), 2);
    assert_int_equal(sdb_value_packed_size(v), (int64_t)len);
    json_decref(v);
    json_decref(back);
}

static void test_codec_values_keep_sign_of_negative_zero(void **state)
{
    json_t *v = json_real(-0.0);
    size_t len;
    json_t *back = through_msgpack(v, &len);

    (void)state;
    assert_true(json_is_real(back));
    assert_true(signbit(json_real_value(back)));
    assert_int_equal(len, 9);
    json_decref(v);
    json_decref(back);
}

static void test_codec_values_keep_integer_extremes_exact(void **state)
{
    static const json_int_t INTS[] = {
        INT64_MIN, INT64_MAX, (INT64_C(1) << 53) + 1, -(INT64_C(1) << 53) - 1};
    size_t len;

    (void)state;
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_integer(INTS[i]);
        json_t *back = through_msgpack(v, &len);

        assert_true(json_is_integer(back));
        assert_true(json_integer_value(back) == INTS[i]);
        json_decref(v);
        json_decref(back);
    }
}

static void test_codec_packed_size_matches_msgpack_at_boundaries(void **s)
{
    static const json_int_t INTS[] = {0,
                                      127,
                                      128,
                                      255,
                                      256,
                                      65535,
                                      65536,
                                      INT64_C(4294967295),
                                      INT64_C(4294967296),
                                      -1,
                                      -32,
                                      -33,
                                      -128,
                                      -129,
                                      -32768,
                                      -32769,
                                      INT32_MIN,
                                      (json_int_t)INT32_MIN - 1,
                                      INT64_MIN,
                                      INT64_MAX};
    static const size_t LENS[] = {0, 31, 32, 255, 256, 65535, 65536};
    static const size_t COUNTS[] = {0, 15, 16, 65535, 65536};

    (void)s;
    for (size_t i = 0; i < sizeof INTS / sizeof INTS[0]; i++) {
        json_t *v = json_integer(INTS[i]);

        check_lossless(v);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof LENS / sizeof LENS[0]; i++) {
        char *str = malloc(LENS[i] + 1);
        json_t *v;

        memset(str, 'x', LENS[i]);
        str[LENS[i]] = '\0';
        v = json_string(str);
        check_lossless(v);
        json_decref(v);
        free(str);
    }
    for (size_t i = 0; i < sizeof COUNTS / sizeof COUNTS[0]; i++) {
        json_t *arr = json_array(), *obj = json_object();
        char key[24];

        for (size_t k = 0; k < COUNTS[i]; k++) {
            json_array_append_new(arr, json_integer((json_int_t)k));
            snprintf(key, sizeof key, "%zu", k);
            json_object_set_new(obj, key, json_true());
        }
        check_lossless(arr);
        check_lossless(obj);
        json_decref(arr);
        json_decref(obj);
    }
}

/* n nested arrays around a 1. */
static json_t *nested(int n)
{
    json_t *v = json_integer(1);

    for (int i = 0; i < n; i++) {
        json_t *arr = json_array();

        json_array_append_new(arr, v);
        v = arr;
    }
    return v;
}

static void test_codec_value_pack_rejects_excess_depth(void **state)
{
    json_t *ok = nested(SDB_MAX_VALUE_DEPTH - 1);
    json_t *deep = nested(SDB_MAX_VALUE_DEPTH);
    msgpack_sbuffer sb;
    msgpack_packer pk;

    (void)state;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(sdb_value_pack(&pk, ok, 1), 0);
    assert_int_equal(sdb_value_pack(&pk, ok, 0), 0); /* 0 means top too */
    assert_int_equal(sdb_value_pack(&pk, deep, 1), SDB_EINVAL);
    assert_int_equal(sdb_value_pack(&pk, ok, 2), SDB_EINVAL);
    assert_int_equal(sdb_value_pack(&pk, NULL, 1), SDB_EINVAL);
    assert_true(sdb_value_packed_size(ok) > 0);
    assert_int_equal(sdb_value_packed_size(deep), SDB_EINVAL);
    check_lossless(ok);
    msgpack_sbuffer_destroy(&sb);
    json_decref(ok);
    json_decref(deep);
}

static void build_bin(msgpack_packer *pk)
{
    msgpack_pack_bin_with_body(pk, "ab", 2);
}

static void build_ext(msgpack_packer *pk)
{
    msgpack_pack_ext_with_body(pk, "ab", 2, 5);
}

static void build_int_key_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_int(pk, 1);
    msgpack_pack_nil(pk);
}

static void build_dup_key_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "k", 1);
    msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "k", 1);
    msgpack_pack_true(pk);
}

static void build_bad_utf8(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_str_with_body(pk, "a\xff", 2);
}

static void build_bad_utf8_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "\xc0\xaf", 2);
    msgpack_pack_nil(pk);
}

static void build_huge_uint(msgpack_packer *pk)
{
    msgpack_pack_uint64(pk, (uint64_t)INT64_MAX + 1);
}

static void build_nan(msgpack_packer *pk)
{
    msgpack_pack_double(pk, NAN);
}

static void build_inf(msgpack_packer *pk)
{
    msgpack_pack_double(pk, -INFINITY);
}

static void build_too_deep(msgpack_packer *pk)
{
    for (int i = 0; i < SDB_MAX_VALUE_DEPTH; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

static void test_codec_value_unpack_rejects_unrepresentable(void **state)
{
    void (*const BUILDERS[])(msgpack_packer *) = {
        build_bin,         build_ext,      build_int_key_map,
        build_dup_key_map, build_bad_utf8, build_bad_utf8_key,
        build_huge_uint,   build_nan,      build_inf,
        build_too_deep};

    (void)state;
    for (size_t i = 0; i < sizeof BUILDERS / sizeof BUILDERS[0]; i++) {
        json_t *v = unpack_built(BUILDERS[i]);

        if (v != NULL)
            fail_msg("builder %zu was accepted", i);
    }
}

/* ---- records ---- */

static void test_codec_assertion_layout_matches_the_format(void **state)
{
    json_t *img = assertion_image();
    msgpack_sbuffer want, got;
    struct sdb_assertion a = {0};

    (void)state;
    pack_image(img, &want);
    a.concept_path = strdup("a/b");
    a.predicate = strdup("p");
    a.value = J("{\"k\":[1,2.5,null,true]}");
    a.confidence = 0.5;
    a.tier = SDB_TIER_VERIFIED;
    a.id = (struct sdb_id){.lsn = 42, .salt = 7};
    a.ts_us = INT64_C(1795433421123456);
    msgpack_sbuffer_init(&got);
    assert_int_equal(sdb_codec_pack_assertion(&got, &a), 0);
    assert_int_equal(got.size, want.size);
    assert_memory_equal(got.data, want.data, want.size);
    assert_int_equal((unsigned char)got.data[0], 0x89); /* map of 9 */
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
    sdb_assertion_release(&a);
    json_decref(img);
}

static void test_codec_retraction_layout_matches_the_format(void **state)
{
    json_t *img = J("{\"type\":\"retraction\",\"id\":\"0000000000000063000012"
                    "34\",\"lsn\":99,\"timestamp\":-5,\"target\":{"
                    "\"concept_path\":\"medicine/aspirin\",\"subtree\":true,"
                    "\"predicate\":\"adult dose\"},\"reason\":\"withdrawn by "
                    "the journal\",\"cascade\":true,\"retracted\":[42,300,"
                    "9223372036854775807]}");
    msgpack_sbuffer want, got;
    struct sdb_retraction r;

    (void)state;
    pack_image(img, &want);
    init_retraction(&r, false);
    msgpack_sbuffer_init(&got);
    assert_int_equal(sdb_codec_pack_retraction(&got, &r), 0);
    assert_int_equal(got.size, want.size);
    assert_memory_equal(got.data, want.data, want.size);
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
    sdb_retraction_release(&r);
    json_decref(img);
}

static void check_assertion_round_trip(bool full)
{
    struct sdb_assertion a;
    struct sdb_record rec;
    msgpack_sbuffer sb;

    init_assertion(&a, full);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdb_codec_pack_assertion(&sb, &a), 0);
    decode_ok(sb.data, sb.size, &rec);
    assert_int_equal(rec.type, SDB_REC_ASSERTION);
    assert_string_equal(rec.a.concept_path, a.concept_path);
    assert_string_equal(rec.a.predicate, a.predicate);
    assert_true(json_equal(rec.a.value, a.value));
    assert_true(signbit(json_real_value(json_object_get(rec.a.value, "x"))));
    assert_true(rec.a.confidence == a.confidence);
    assert_int_equal(rec.a.tier, a.tier);
    assert_true(rec.a.id.lsn == 42 && rec.a.id.salt == 7);
    assert_int_equal(rec.a.ts_us, a.ts_us);
    assert_int_equal(rec.a.n_derived, a.n_derived);
    if (full) {
        assert_string_equal(rec.a.source, a.source);
        assert_memory_equal(rec.a.derived_from, a.derived_from,
                            2 * sizeof *a.derived_from);
    } else {
        assert_null(rec.a.source);
        assert_null(rec.a.derived_from);
    }
    sdb_record_release(&rec);
    msgpack_sbuffer_destroy(&sb);
    sdb_assertion_release(&a);
}

static void test_codec_assertion_records_round_trip(void **state)
{
    (void)state;
    check_assertion_round_trip(false);
    check_assertion_round_trip(true);
}

static void check_retraction_round_trip(bool by_id)
{
    struct sdb_retraction r;
    struct sdb_record rec;
    msgpack_sbuffer sb;

    init_retraction(&r, by_id);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdb_codec_pack_retraction(&sb, &r), 0);
    decode_ok(sb.data, sb.size, &rec);
    assert_int_equal(rec.type, SDB_REC_RETRACTION);
    assert_int_equal(rec.r.by_id, by_id);
    assert_true(rec.r.id.lsn == 99 && rec.r.id.salt == 0x1234);
    assert_int_equal(rec.r.ts_us, -5);
    assert_string_equal(rec.r.reason, r.reason);
    assert_int_equal(rec.r.cascade, r.cascade);
    assert_int_equal(rec.r.n_retracted, r.n_retracted);
    if (by_id) {
        assert_true(rec.r.target_id.lsn == 42 && rec.r.target_id.salt == 7);
        assert_null(rec.r.concept_path);
        assert_null(rec.r.retracted);
    } else {
        assert_string_equal(rec.r.concept_path, r.concept_path);
        assert_int_equal(rec.r.scope, SDB_SCOPE_SUBTREE);
        assert_string_equal(rec.r.predicate, r.predicate);
        assert_memory_equal(rec.r.retracted, r.retracted,
                            3 * sizeof *r.retracted);
    }
    sdb_record_release(&rec);
    msgpack_sbuffer_destroy(&sb);
    sdb_retraction_release(&r);
}

static void test_codec_retraction_records_round_trip(void **state)
{
    (void)state;
    check_retraction_round_trip(true);
    check_retraction_round_trip(false);
}

static void test_codec_unpack_reports_used_bytes_of_a_stream(void **state)
{
    struct sdb_assertion a;
    struct sdb_retraction r;
    struct sdb_record rec;
    msgpack_sbuffer sb;
    size_t first, used = 0;

    (void)state;
    init_assertion(&a, true);
    init_retraction(&r, true);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdb_codec_pack_assertion(&sb, &a), 0);
    first = sb.size;
    assert_int_equal(sdb_codec_pack_retraction(&sb, &r), 0);
    assert_int_equal(sdb_codec_unpack(sb.data, sb.size, &used, &rec, NULL), 0);
    assert_int_equal(used, first);
    assert_int_equal(rec.type, SDB_REC_ASSERTION);
    sdb_record_release(&rec);
    assert_int_equal(
        sdb_codec_unpack(sb.data + first, sb.size - first, &used, &rec, NULL),
        0);
    assert_int_equal(used, sb.size - first);
    assert_int_equal(rec.type, SDB_REC_RETRACTION);
    sdb_record_release(&rec);
    msgpack_sbuffer_destroy(&sb);
    sdb_assertion_release(&a);
    sdb_retraction_release(&r);
}

static void test_codec_pack_failure_leaves_buffer_unchanged(void **state)
{
    struct sdb_assertion a;
    msgpack_sbuffer sb;

    (void)state;
    init_assertion(&a, false);
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, "xyz", 3);
    json_decref(a.value);
    a.value = nested(SDB_MAX_VALUE_DEPTH);
    assert_int_equal(sdb_codec_pack_assertion(&sb, &a), SDB_EINVAL);
    assert_int_equal(sb.size, 3);
    a.tier = 9;
    json_decref(a.value);
    a.value = json_null();
    assert_int_equal(sdb_codec_pack_assertion(&sb, &a), SDB_EINVAL);
    assert_int_equal(sb.size, 3);
    msgpack_sbuffer_destroy(&sb);
    sdb_assertion_release(&a);
}

static void test_codec_unpack_accepts_value_at_max_depth(void **state)
{
    struct sdb_assertion a;
    struct sdb_record rec;
    msgpack_sbuffer sb;

    (void)state;
    init_assertion(&a, false);
    json_decref(a.value);
    a.value = nested(SDB_MAX_VALUE_DEPTH - 1);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(sdb_codec_pack_assertion(&sb, &a), 0);
    decode_ok(sb.data, sb.size, &rec);
    assert_true(json_equal(rec.a.value, a.value));
    sdb_record_release(&rec);
    msgpack_sbuffer_destroy(&sb);
    sdb_assertion_release(&a);
}

static void test_codec_unpack_rejects_bad_fields(void **state)
{
    (void)state;
    image_fails("type", json_string("assertions"), "type");
    image_fails("type", NULL, "type");
    image_fails("id", NULL, "id");
    image_fails("id", json_string("000000000000002A00000007"), "id");
    image_fails("id", json_string("000000000000002b00000007"), "id");
    image_fails("lsn", json_integer(0), "lsn");
    image_fails("lsn", json_integer(-42), "lsn");
    image_fails("lsn", json_string("42"), "lsn");
    image_fails("timestamp", json_real(1.0), "timestamp");
    image_fails("timestamp", NULL, "timestamp");
    image_fails("concept_path", json_string("a//b"), "concept_path");
    image_fails("concept_path", json_string("../etc"), "concept_path");
    image_fails("concept_path", json_integer(1), "concept_path");
    image_fails("predicate", json_string(""), "predicate");
    image_fails("predicate", json_string("a\x01"), "predicate");
    image_fails("value", NULL, "value");
    image_fails("confidence", json_real(1.5), "confidence");
    image_fails("confidence", json_real(-0.25), "confidence");
    image_fails("confidence", json_integer(1), "confidence");
    image_fails("authority_tier", json_string("god"), "authority_tier");
    image_fails("authority_tier", json_string("unverified-and-more"),
                "authority_tier");
    image_fails("source", json_string("/abs"), "source");
    image_fails("derived_from", json_array(), "derived_from");
    image_fails("derived_from", J("[\"nope\"]"), "derived_from");
    image_fails("color", json_string("red"), "");
}

static void test_codec_unpack_rejects_misordered_keys(void **state)
{
    json_t *img = assertion_image();
    msgpack_sbuffer sb;

    (void)state;
    json_object_del(img, "type");
    json_object_set_new(img, "type", json_string("assertion"));
    pack_image(img, &sb);
    decode_fails(sb.data, sb.size, "");
    msgpack_sbuffer_destroy(&sb);
    json_decref(img);
}

/* Pack the canonical assertion, then let fn append one last entry. */
static void pack_with_extra(msgpack_sbuffer *sb, void (*fn)(msgpack_packer *pk))
{
    json_t *img = assertion_image();
    msgpack_packer pk;
    const char *key;
    json_t *v;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, json_object_size(img) + 1);
    json_object_foreach(img, key, v)
    {
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        assert_int_equal(sdb_value_pack(&pk, v, 2), 0);
    }
    fn(&pk);
    json_decref(img);
}

static void extra_dup_type(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, "assertion", 9);
}

static void extra_int_key(msgpack_packer *pk)
{
    msgpack_pack_int(pk, 7);
    msgpack_pack_nil(pk);
}

static void extra_bin_source(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "source", 6);
    msgpack_pack_bin_with_body(pk, "a/b", 3);
}

static void extra_ext_source(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "source", 6);
    msgpack_pack_ext_with_body(pk, "a/b", 3, 1);
}

static void extra_bad_utf8_source(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "source", 6);
    msgpack_pack_str_with_body(pk, "a/\xff", 3);
}

static void extra_nul_source(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "source", 6);
    msgpack_pack_str_with_body(pk, "a/\0b", 4);
}

static void test_codec_unpack_rejects_bad_map_entries(void **state)
{
    void (*const EXTRAS[])(msgpack_packer *) = {
        extra_dup_type,   extra_int_key,         extra_bin_source,
        extra_ext_source, extra_bad_utf8_source, extra_nul_source};
    msgpack_sbuffer sb;

    (void)state;
    for (size_t i = 0; i < sizeof EXTRAS / sizeof EXTRAS[0]; i++) {
        pack_with_extra(&sb, EXTRAS[i]);
        decode_fails(sb.data, sb.size, NULL);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void test_codec_unpack_rejects_non_canonical_numbers(void **state)
{
    json_t *img = assertion_image();
    msgpack_sbuffer sb;
    char *at;

    (void)state;
    pack_image(img, &sb);
    /* "lsn":42 is the fixint 0x2a right after the key; widen it. */
    at = find_bytes(sb.data, sb.size, "\xa3lsn\x2a", 5);
    assert_non_null(at);
    {
        size_t off = (size_t)(at - sb.data) + 4;
        char *buf = malloc(sb.size + 1);

        memcpy(buf, sb.data, off);
        buf[off] = (char)0xcc; /* uint8 42: legal msgpack, not canonical */
        memcpy(buf + off + 1, sb.data + off, sb.size - off);
        decode_fails(buf, sb.size + 1, "");
        /* trusted bytes (checksum-verified, written by this codec) skip the
         * re-encoding; everything else is still checked */
        {
            struct sdb_record rec;
            size_t used;

            assert_int_equal(sdb_codec_unpack_ex(buf, sb.size + 1, &used, &rec,
                                                 NULL, SDB_UNPACK_TRUSTED),
                             0);
            assert_int_equal(used, sb.size + 1);
            assert_int_equal(rec.a.id.lsn, 42);
            assert_non_null(rec.a.value);
            sdb_record_release(&rec);
            assert_int_equal(
                sdb_codec_unpack_ex(sb.data, sb.size, &used, &rec, NULL,
                                    SDB_UNPACK_TRUSTED | SDB_UNPACK_NO_VALUE),
                0);
            assert_null(rec.a.value);
            assert_string_equal(
                rec.a.predicate,
                json_string_value(json_object_get(img, "predicate")));
            sdb_record_release(&rec);
            buf[sb.size - 1] ^= 0x7f; /* still refused when truncated/broken */
            assert_int_equal(sdb_codec_unpack_ex(buf, sb.size - 3, &used, &rec,
                                                 NULL, SDB_UNPACK_TRUSTED),
                             SDB_ECORRUPT);
        }
        free(buf);
    }
    msgpack_sbuffer_destroy(&sb);
    json_decref(img);
}

static void test_codec_unpack_rejects_float32_confidence(void **state)
{
    json_t *img = assertion_image();
    msgpack_sbuffer sb;
    msgpack_packer pk;
    const char *key;
    json_t *v;

    (void)state;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, json_object_size(img));
    json_object_foreach(img, key, v)
    {
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        if (strcmp(key, "confidence") == 0)
            msgpack_pack_float(&pk, 0.5f);
        else
            sdb_value_pack(&pk, v, 2);
    }
    decode_fails(sb.data, sb.size, "confidence");
    msgpack_sbuffer_destroy(&sb);
    json_decref(img);
}

static void test_codec_unpack_rejects_hostile_lengths(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
    } BAD[] = {
        {"\xdd\xff\xff\xff\xff", 5},          /* array32 of 4G items */
        {"\xdf\xff\xff\xff\xff", 5},          /* map32 of 4G entries */
        {"\xdb\xff\xff\xff\xff", 5},          /* str32 of 4 GiB */
        {"\x81\xa1k\xdd\x7f\xff\xff\xff", 8}, /* nested huge array */
        {"\xde\xff\xff\xa1k", 5},             /* map16, truncated */
        {"\xc4\x01x", 3},                     /* bin */
        {"\xc7\x01\x01x", 4},                 /* ext */
        {"\xc1", 1},                          /* never used */
        {"\x91", 1},
        {"", 0},
        {"\x90", 1},     /* an array is not a record */
        {"\x80", 1},     /* an empty map lacks everything */
        {"\xa4type", 5}, /* a string */
        {"\xdc\x00", 2}, /* truncated header */
    };
    struct sdb_record rec;

    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        decode_fails(BAD[i].bytes, BAD[i].len, NULL);
    assert_int_equal(sdb_codec_unpack(NULL, 0, NULL, &rec, NULL), SDB_ECORRUPT);
}

static void test_codec_unpack_rejects_excess_nesting(void **state)
{
    unsigned char buf[200];
    size_t n = 0;

    (void)state;
    buf[n++] = 0x81; /* {"value": [[[...]]]} far past the limit */
    buf[n++] = 0xa5;
    memcpy(buf + n, "value", 5);
    n += 5;
    for (int i = 0; i < 100; i++)
        buf[n++] = 0x91;
    buf[n++] = 0xc0;
    decode_fails(buf, n, "");
}

static void test_codec_unpack_rejects_bad_retraction_targets(void **state)
{
    static const char *const TARGETS[] = {
        "{}",
        "{\"id\":\"" ID_A "\",\"concept_path\":\"a\",\"subtree\":false}",
        "{\"id\":\"" ID_A "\",\"subtree\":false}",
        "{\"concept_path\":\"a\"}",
        "{\"concept_path\":\"a\",\"subtree\":1}",
        "{\"concept_path\":\"a/*\",\"subtree\":true}",
        "{\"id\":\"" ID_A "\",\"extra\":1}",
        "[\"" ID_A "\"]",
    };

    (void)state;
    for (size_t i = 0; i < sizeof TARGETS / sizeof TARGETS[0]; i++) {
        json_t *img = J("{\"type\":\"retraction\",\"id\":\"000000000000006300"
                        "001234\",\"lsn\":99,\"timestamp\":-5}");
        msgpack_sbuffer sb;

        json_object_set_new(img, "target", J(TARGETS[i]));
        json_object_set_new(img, "reason", json_string("r"));
        json_object_set_new(img, "cascade", json_false());
        json_object_set_new(img, "retracted", json_array());
        pack_image(img, &sb);
        decode_fails(sb.data, sb.size, NULL);
        msgpack_sbuffer_destroy(&sb);
        json_decref(img);
    }
}

static void test_codec_unpack_rejects_bad_retraction_fields(void **state)
{
    static const char *const FIELDS[][2] = {
        {"reason", "\"\""},        {"reason", "7"},
        {"cascade", "\"yes\""},    {"retracted", "[0]"},
        {"retracted", "[-1]"},     {"retracted", "{}"},
        {"retracted", "[\"42\"]"}, {"timestamp", "\"now\""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
        json_t *img =
            J("{\"type\":\"retraction\",\"id\":\"0000000000000063000012"
              "34\",\"lsn\":99,\"timestamp\":-5,\"target\":{\"id\":\"" ID_A
              "\"},\"reason\":\"r\",\"cascade\":false,\"retracted\":[]}");
        msgpack_sbuffer sb;

        json_object_set_new(img, FIELDS[i][0], J(FIELDS[i][1]));
        pack_image(img, &sb);
        decode_fails(sb.data, sb.size, FIELDS[i][0]);
        msgpack_sbuffer_destroy(&sb);
        json_decref(img);
    }
}

/* ---- fuzzing ---- */

/* Whatever buf holds, the outcome is SDB_ECORRUPT or a canonical record. */
static int decode_any(const unsigned char *buf, size_t len)
{
    struct sdb_record rec;
    sdb_error err;
    msgpack_sbuffer sb;
    size_t used = 0;
    int rc = sdb_codec_unpack(buf, len, &used, &rec, &err);

    if (rc != 0) {
        assert_int_equal(rc, SDB_ECORRUPT);
        return rc;
    }
    assert_true(used > 0 && used <= len);
    msgpack_sbuffer_init(&sb);
    if (rec.type == SDB_REC_ASSERTION)
        assert_int_equal(sdb_codec_pack_assertion(&sb, &rec.a), 0);
    else
        assert_int_equal(sdb_codec_pack_retraction(&sb, &rec.r), 0);
    assert_int_equal(sb.size, used);
    assert_memory_equal(sb.data, buf, used);
    msgpack_sbuffer_destroy(&sb);
    sdb_record_release(&rec);
    return 0;
}

static void sample_records(msgpack_sbuffer *out, size_t *cut)
{
    struct sdb_assertion a;
    struct sdb_retraction r;

    init_assertion(&a, true);
    init_retraction(&r, false);
    msgpack_sbuffer_init(out);
    assert_int_equal(sdb_codec_pack_assertion(out, &a), 0);
    *cut = out->size;
    assert_int_equal(sdb_codec_pack_retraction(out, &r), 0);
    sdb_assertion_release(&a);
    sdb_retraction_release(&r);
}

static void test_codec_unpack_rejects_every_truncation(void **state)
{
    msgpack_sbuffer sb;
    size_t cut;
    const unsigned char *p;

    (void)state;
    sample_records(&sb, &cut);
    p = (const unsigned char *)sb.data;
    for (size_t len = 0; len < cut; len++)
        assert_int_equal(decode_any(p, len), SDB_ECORRUPT);
    for (size_t len = 0; len < sb.size - cut; len++)
        assert_int_equal(decode_any(p + cut, len), SDB_ECORRUPT);
    assert_int_equal(decode_any(p, cut), 0);
    assert_int_equal(decode_any(p + cut, sb.size - cut), 0);
    msgpack_sbuffer_destroy(&sb);
}

static void test_codec_unpack_survives_random_byte_flips(void **state)
{
    uint64_t seed = tu_seed(0x5eed00c0);
    msgpack_sbuffer sb;
    unsigned char *buf;
    size_t cut;
    int corrupt = 0;

    (void)state;
    sample_records(&sb, &cut);
    buf = malloc(sb.size);
    for (int iter = 0; iter < 30000; iter++) {
        size_t base = iter & 1 ? cut : 0;
        size_t len = iter & 1 ? sb.size - cut : cut;
        int flips = 1 + (int)(tu_rand(&seed) % 3);

        memcpy(buf, sb.data + base, len);
        for (int f = 0; f < flips; f++) {
            uint64_t r = tu_rand(&seed);

            buf[r % len] ^= (unsigned char)(1u << (r >> 32 & 7));
            if (r >> 40 & 1)
                buf[(r >> 8) % len] = (unsigned char)(r >> 48);
        }
        if (decode_any(buf, len) != 0)
            corrupt++;
    }
    assert_true(corrupt > 1000); /* flips really hit the structure */
    free(buf);
    msgpack_sbuffer_destroy(&sb);
}

static void test_codec_unpack_survives_random_buffers(void **state)
{
    uint64_t seed = tu_seed(0x5eed00c1);
    unsigned char buf[64];

    (void)state;
    for (int iter = 0; iter < 50000; iter++) {
        size_t len = tu_rand(&seed) % sizeof buf;

        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)tu_rand(&seed);
        if (len > 0 && iter % 3 == 0)
            buf[0] = (unsigned char)(0x80 | (buf[0] & 0x0f)); /* a map */
        assert_int_equal(decode_any(buf, len), SDB_ECORRUPT);
    }
}

/* ---- JSON form ---- */

static void test_codec_assertion_to_json_has_the_api_shape(void **state)
{
    struct sdb_assertion a;
    json_t *j, *want;

    (void)state;
    init_assertion(&a, false);
    j = sdb_assertion_to_json(&a);
    assert_non_null(j);
    want = J("{\"id\":\"000000000000002a00000007\",\"concept_path\":"
             "\"medicine/aspirin/dosage\",\"predicate\":\"adult dose\","
             "\"value\":{\"mg\":[325,650],\"note\":\"caf\\u00e9\",\"x\":-0.0},"
             "\"confidence\":0.85,\"authority_tier\":\"expert\",\"source\":"
             "null,\"derived_from\":[],\"timestamp\":"
             "\"2026-11-23T11:30:21.123456Z\",\"lsn\":42}");
    assert_true(json_equal(j, want));
    assert_int_equal(json_object_size(j), 10);
    assert_true(json_is_integer(json_object_get(j, "lsn")));
    json_decref(j);
    json_decref(want);
    sdb_assertion_release(&a);
}

static void test_codec_assertion_to_json_lists_source_and_parents(void **s)
{
    struct sdb_assertion a;
    json_t *j, *parents;

    (void)s;
    init_assertion(&a, true);
    j = sdb_assertion_to_json(&a);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "source")),
                        "source/pubmed/123");
    parents = json_object_get(j, "derived_from");
    assert_int_equal(json_array_size(parents), 2);
    assert_string_equal(json_string_value(json_array_get(parents, 0)),
                        "0000000000000001ffffffff");
    assert_string_equal(json_string_value(json_array_get(parents, 1)),
                        "7fffffffffffffff00000001");
    json_decref(j);
    sdb_assertion_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_values_round_trip_losslessly),
        cmocka_unit_test(test_codec_values_keep_keys_with_nul_bytes),
        cmocka_unit_test(test_codec_values_keep_sign_of_negative_zero),
        cmocka_unit_test(test_codec_values_keep_integer_extremes_exact),
        cmocka_unit_test(test_codec_packed_size_matches_msgpack_at_boundaries),
        cmocka_unit_test(test_codec_value_pack_rejects_excess_depth),
        cmocka_unit_test(test_codec_value_unpack_rejects_unrepresentable),
        cmocka_unit_test(test_codec_assertion_layout_matches_the_format),
        cmocka_unit_test(test_codec_retraction_layout_matches_the_format),
        cmocka_unit_test(test_codec_assertion_records_round_trip),
        cmocka_unit_test(test_codec_retraction_records_round_trip),
        cmocka_unit_test(test_codec_unpack_reports_used_bytes_of_a_stream),
        cmocka_unit_test(test_codec_pack_failure_leaves_buffer_unchanged),
        cmocka_unit_test(test_codec_unpack_accepts_value_at_max_depth),
        cmocka_unit_test(test_codec_unpack_rejects_bad_fields),
        cmocka_unit_test(test_codec_unpack_rejects_misordered_keys),
        cmocka_unit_test(test_codec_unpack_rejects_bad_map_entries),
        cmocka_unit_test(test_codec_unpack_rejects_non_canonical_numbers),
        cmocka_unit_test(test_codec_unpack_rejects_float32_confidence),
        cmocka_unit_test(test_codec_unpack_rejects_hostile_lengths),
        cmocka_unit_test(test_codec_unpack_rejects_excess_nesting),
        cmocka_unit_test(test_codec_unpack_rejects_bad_retraction_targets),
        cmocka_unit_test(test_codec_unpack_rejects_bad_retraction_fields),
        cmocka_unit_test(test_codec_unpack_rejects_every_truncation),
        cmocka_unit_test(test_codec_unpack_survives_random_byte_flips),
        cmocka_unit_test(test_codec_unpack_survives_random_buffers),
        cmocka_unit_test(test_codec_assertion_to_json_has_the_api_shape),
        cmocka_unit_test(test_codec_assertion_to_json_lists_source_and_parents),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
