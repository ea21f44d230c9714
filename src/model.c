/*
 * model.c - the data model (model.h): tiers, lenses, ids, RFC 3339 time,
 * concept path validation and the strict parsing of assert, retract and
 * query requests from JSON.  Implements DESIGN section 2 and the limits in
 * stemedb.h.  No I/O and no storage format here (codec.c owns msgpack,
 * path.c owns file names).  Every rejection names its field precisely.
 * Optional request fields (source, derived_from, predicate, cursor, as_of)
 * treat JSON null as "absent", so an API response can be sent back.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "model.h"
#include "path.h"

#define US_PER_SEC    INT64_C(1000000)
#define US_PER_DAY    (INT64_C(86400) * US_PER_SEC)
#define MAX_CURSOR    512
#define ID_HINT       "must be an assertion id (24 lowercase hex digits)"
#define CONF_HINT     "must be a number between 0.0 and 1.0"
#define NAME_MAX_BYTE 255

/* ---- errors ---- */

int sdb_error_set(sdb_error *err, int code, const char *field, const char *fmt,
                  ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- tiers and lenses ---- */

static const char *const TIER_NAMES[SDB_TIER_COUNT] = {
    "unverified", "community", "verified", "expert", "authoritative"};

static const char *const LENS_NAMES[] = {"recency", "confidence", "authority",
                                         "consensus"};
#define LENS_COUNT (int)(sizeof LENS_NAMES / sizeof LENS_NAMES[0])

const char *sdb_tier_name(int tier)
{
    return tier >= 0 && tier < SDB_TIER_COUNT ? TIER_NAMES[tier] : NULL;
}

int sdb_tier_parse(const char *s)
{
    for (int i = 0; s != NULL && i < SDB_TIER_COUNT; i++)
        if (strcmp(s, TIER_NAMES[i]) == 0)
            return i;
    return -1;
}

double sdb_tier_weight(int tier)
{
    return tier >= 0 && tier < SDB_TIER_COUNT ? (double)(tier + 1) : 0.0;
}

const char *sdb_lens_name(int lens)
{
    return lens >= 0 && lens < LENS_COUNT ? LENS_NAMES[lens] : NULL;
}

int sdb_lens_parse(const char *s)
{
    for (int i = 0; s != NULL && i < LENS_COUNT; i++)
        if (strcmp(s, LENS_NAMES[i]) == 0)
            return i;
    return -1;
}

/* ---- ids ---- */

void sdb_id_format(struct sdb_id id, char out[SDB_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    /* by hand: this runs for every record written and read */
    for (int i = 15; i >= 0; i--, id.lsn >>= 4)
        out[i] = digits[id.lsn & 15];
    for (int i = 23; i >= 16; i--, id.salt >>= 4)
        out[i] = digits[id.salt & 15];
    out[SDB_ID_LEN] = '\0';
}

static int lower_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int sdb_id_parse(const char *s, struct sdb_id *out)
{
    uint64_t lsn = 0;
    uint32_t salt = 0;

    if (s == NULL)
        return SDB_EINVAL;
    for (int i = 0; i < SDB_ID_LEN; i++) {
        int v = lower_hex(s[i]); /* stops at NUL: it is not hex */

        if (v < 0)
            return SDB_EINVAL;
        if (i < 16)
            lsn = lsn << 4 | (uint64_t)v;
        else
            salt = salt << 4 | (uint32_t)v;
    }
    if (s[SDB_ID_LEN] != '\0' || lsn == 0)
        return SDB_EINVAL;
    if (out != NULL) {
        out->lsn = lsn;
        out->salt = salt;
    }
    return 0;
}

/* ---- UTF-8 and text ---- */

/* Length of the well-formed sequence at s (table 3-7), or 0; sets *cp. */
static size_t utf8_seq(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    uint32_t v;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, v = c & 0x0Fu;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlongs */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, v = c & 0x07u;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF))
            return 0;
        v = v << 6 | (s[i] & 0x3Fu);
    }
    *cp = v;
    return n;
}

bool sdb_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i, &cp);

        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

enum text_fault { TEXT_OK, TEXT_BAD_UTF8, TEXT_NUL, TEXT_CONTROL };

/* The first problem in s: bad UTF-8, NUL, or (unless allowed) controls. */
static enum text_fault text_scan(const char *s, size_t len, bool controls_ok)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp = 0;

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i, &cp);

        if (n == 0)
            return TEXT_BAD_UTF8;
        if (cp == 0)
            return TEXT_NUL;
        if (!controls_ok && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)))
            return TEXT_CONTROL;
        i += n;
    }
    return TEXT_OK;
}

static int text_check(const char *s, size_t len, bool controls_ok,
                      const char *field, sdb_error *err)
{
    switch (text_scan(s, len, controls_ok)) {
    case TEXT_BAD_UTF8:
        return sdb_error_set(err, SDB_EINVAL, field, "must be valid UTF-8");
    case TEXT_NUL:
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must not contain NUL bytes");
    case TEXT_CONTROL:
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must not contain control characters");
    case TEXT_OK:
        break;
    }
    return 0;
}

static int bounded_text_check(const char *s, size_t len, size_t max,
                              bool controls_ok, const char *field,
                              sdb_error *err)
{
    if (s == NULL)
        return sdb_error_set(err, SDB_EINVAL, field, "is required");
    if (len == 0)
        return sdb_error_set(err, SDB_EINVAL, field, "must not be empty");
    if (len > max)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be at most %zu bytes", max);
    return text_check(s, len, controls_ok, field, err);
}

int sdb_predicate_check(const char *s, size_t len, const char *field,
                        sdb_error *err)
{
    return bounded_text_check(s, len, SDB_MAX_PREDICATE_LEN, false, field, err);
}

int sdb_reason_check(const char *s, size_t len, const char *field,
                     sdb_error *err)
{
    return bounded_text_check(s, len, SDB_MAX_REASON_LEN, true, field, err);
}

/* ---- concept paths ---- */

static int component_check(const char *c, size_t len, int idx,
                           const char *field, sdb_error *err)
{
    char esc[NAME_MAX_BYTE + 1];

    if (len == 0)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must not contain an empty component ('//')");
    if ((len == 1 && c[0] == '.') || (len == 2 && memcmp(c, "..", 2) == 0))
        return sdb_error_set(err, SDB_EINVAL, field,
                             "component %d must not be '.' or '..'", idx);
    if (len == 1 && c[0] == '*')
        return sdb_error_set(err, SDB_EINVAL, field,
                             "component %d must not be '*'", idx);
    if (len > SDB_MAX_COMPONENT_LEN)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "component %d is longer than %d bytes", idx,
                             SDB_MAX_COMPONENT_LEN);
    if (sdb_path_escape_component(c, len, idx == 1, esc, sizeof esc) < 0)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "component %d is longer than %d bytes once "
                             "escaped",
                             idx, NAME_MAX_BYTE);
    return 0;
}

static int path_shape_check(const char *path, size_t len, const char *field,
                            sdb_error *err)
{
    if (len == 0)
        return sdb_error_set(err, SDB_EINVAL, field, "must not be empty");
    if (len > SDB_MAX_PATH_LEN)
        return sdb_error_set(err, SDB_EINVAL, field, "must be at most %d bytes",
                             SDB_MAX_PATH_LEN);
    if (path[0] == '/')
        return sdb_error_set(err, SDB_EINVAL, field, "must not start with '/'");
    if (path[len - 1] == '/')
        return sdb_error_set(err, SDB_EINVAL, field, "must not end with '/'");
    return text_check(path, len, false, field, err);
}

int sdb_concept_path_check(const char *path, size_t len, const char *field,
                           sdb_error *err)
{
    size_t start = 0;
    int depth = 0;
    int rc;

    if (field == NULL)
        field = "concept_path";
    if (path == NULL)
        return sdb_error_set(err, SDB_EINVAL, field, "is required");
    rc = path_shape_check(path, len, field, err);
    for (size_t i = 0; rc == 0 && i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        if (++depth > SDB_MAX_PATH_DEPTH)
            return sdb_error_set(err, SDB_EINVAL, field,
                                 "must have at most %d components",
                                 SDB_MAX_PATH_DEPTH);
        rc = component_check(path + start, i - start, depth, field, err);
        start = i + 1;
    }
    return rc;
}

int sdb_concept_to_dir(const char *path, char *out, size_t cap, sdb_error *err)
{
    size_t len, o = 0, start = 0;
    int rc, n;

    if (path == NULL || out == NULL || cap == 0)
        return sdb_error_set(err, SDB_EINVAL, "concept_path", "is required");
    len = strlen(path);
    rc = sdb_concept_path_check(path, len, "concept_path", err);
    for (size_t i = 0; rc == 0 && i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        if (o > 0 && o + 1 < cap)
            out[o++] = '/';
        n = sdb_path_escape_component(path + start, i - start, start == 0,
                                      out + o, cap - o);
        if (n < 0)
            rc = sdb_error_set(err, SDB_ETOOBIG, "concept_path",
                               "does not fit the output buffer");
        else
            o += (size_t)n;
        start = i + 1;
    }
    return rc;
}

/* Unescape one directory name; strict: it must re-escape to itself. */
static int dir_component(const char *name, size_t len, bool top,
                         char comp[NAME_MAX_BYTE + 1], size_t *out_len)
{
    char buf[NAME_MAX_BYTE + 1], again[NAME_MAX_BYTE + 1];
    int n, m;

    if (len == 0 || len > NAME_MAX_BYTE)
        return SDB_EINVAL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    n = sdb_path_unescape_component(buf, comp, NAME_MAX_BYTE + 1);
    if (n < 0 || memchr(comp, '/', (size_t)n) != NULL)
        return SDB_EINVAL; /* "%2F" would shift component boundaries */
    m = sdb_path_escape_component(comp, (size_t)n, top, again, sizeof again);
    if (m < 0 || (size_t)m != len || memcmp(again, buf, len) != 0)
        return SDB_EINVAL;
    *out_len = (size_t)n;
    return 0;
}

int sdb_dir_to_concept(const char *dir, char *out, size_t cap)
{
    char comp[NAME_MAX_BYTE + 1];
    size_t len, o = 0, start = 0, n = 0;
    int rc = 0;

    if (dir == NULL || out == NULL || cap == 0)
        return SDB_EINVAL;
    len = strlen(dir);
    for (size_t i = 0; rc == 0 && i <= len; i++) {
        if (i < len && dir[i] != '/')
            continue;
        rc = dir_component(dir + start, i - start, start == 0, comp, &n);
        if (rc == 0 && o + (o > 0) + n + 1 > cap)
            rc = SDB_ETOOBIG;
        if (rc == 0 && o > 0)
            out[o++] = '/';
        if (rc == 0)
            memcpy(out + o, comp, n), o += n;
        start = i + 1;
    }
    if (rc == 0)
        out[o] = '\0';
    if (rc == 0 && sdb_concept_path_check(out, o, "dir", NULL) != 0)
        rc = SDB_EINVAL;
    return rc;
}

/* ---- time ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 y). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void sdb_time_format(int64_t us, char out[32])
{
    int64_t days = us / US_PER_DAY, rem = us % US_PER_DAY, y;
    int m, d;
    unsigned secs, frac;
    char tmp[80];
    size_t n;

    if (rem < 0) {
        rem += US_PER_DAY;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    secs = (unsigned)(rem / US_PER_SEC);
    frac = (unsigned)(rem % US_PER_SEC);
    if (y >= 0 && y <= 9999) { /* by hand: once per record written */
        static const char layout[] = "0000-00-00T00:00:00.000000Z";
        unsigned f[7] = {(unsigned)y,    (unsigned)m, (unsigned)d, secs / 3600,
                         secs / 60 % 60, secs % 60,   frac};
        static const unsigned char at[7] = {0, 5, 8, 11, 14, 17, 20};
        static const unsigned char width[7] = {4, 2, 2, 2, 2, 2, 6};

        memcpy(out, layout, sizeof layout);
        for (int i = 0; i < 7; i++)
            for (int j = width[i] - 1; j >= 0; j--, f[i] /= 10)
                out[at[i] + j] = (char)('0' + f[i] % 10);
        return;
    }
    /* int64 microseconds span years -290308..294247: at most 28 bytes */
    snprintf(tmp, sizeof tmp, "%04lld-%02d-%02dT%02u:%02u:%02u.%06uZ",
             (long long)y, m, d, secs / 3600 % 24, secs / 60 % 60, secs % 60,
             frac % 1000000);
    n = strlen(tmp) < 31 ? strlen(tmp) : 31;
    memcpy(out, tmp, n);
    out[n] = '\0';
}

static bool take_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i]; /* a NUL stops the loop: it is not a digit */

        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, char a, char b)
{
    if (**p != a && **p != b)
        return false;
    (*p)++;
    return true;
}

static bool leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};

    return m == 2 && leap_year(y) ? 29 : DAYS[m - 1];
}

/* ".fraction" (1..9 digits) as microseconds, truncated; none is 0. */
static bool take_fraction(const char **p, int *out_us)
{
    int n = 0, us = 0;

    *out_us = 0;
    if (**p != '.')
        return true;
    (*p)++;
    while ((*p)[0] >= '0' && (*p)[0] <= '9') {
        if (++n > 9)
            return false;
        if (n <= 6)
            us = us * 10 + ((*p)[0] - '0');
        (*p)++;
    }
    for (int i = n; i < 6; i++)
        us *= 10;
    *out_us = us;
    return n > 0;
}

/* "Z", "+HH:MM" or "-HH:MM" as minutes east of UTC. */
static bool take_offset(const char **p, int *out_min)
{
    int sign, h, m;

    if (take_char(p, 'Z', 'z')) {
        *out_min = 0;
        return true;
    }
    sign = **p == '-' ? -1 : 1;
    if (!take_char(p, '+', '-') || !take_digits(p, 2, &h) ||
        !take_char(p, ':', ':') || !take_digits(p, 2, &m) || h > 23 || m > 59)
        return false;
    *out_min = sign * (h * 60 + m);
    return true;
}

int sdb_time_parse(const char *s, int64_t *out_us)
{
    int y, mo, d, h, mi, sec, frac, off;
    const char *p = s;

    if (s == NULL || out_us == NULL)
        return SDB_EINVAL;
    if (!take_digits(&p, 4, &y) || !take_char(&p, '-', '-') ||
        !take_digits(&p, 2, &mo) || !take_char(&p, '-', '-') ||
        !take_digits(&p, 2, &d) || !take_char(&p, 'T', 't') ||
        !take_digits(&p, 2, &h) || !take_char(&p, ':', ':') ||
        !take_digits(&p, 2, &mi) || !take_char(&p, ':', ':') ||
        !take_digits(&p, 2, &sec) || !take_fraction(&p, &frac) ||
        !take_offset(&p, &off) || *p != '\0')
        return SDB_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 ||
        mi > 59 || sec > 59) /* leap seconds are not representable */
        return SDB_EINVAL;
    *out_us =
        days_from_civil(y, mo, d) * US_PER_DAY +
        ((int64_t)h * 3600 + mi * 60 + sec - (int64_t)off * 60) * US_PER_SEC +
        frac;
    return 0;
}

/* ---- request parsing: shared machinery ---- */

typedef int (*field_fn)(json_t *v, const char *field, void *ctx,
                        sdb_error *err);

struct field_rule {
    const char *name;
    field_fn fn;
    bool nullable; /* JSON null means "absent" */
};

/* "where.key" (or "key"), cut to cap - 1 bytes; on every parsed field, so
 * no snprintf. */
static void field_join(char *buf, size_t cap, const char *where,
                       const char *key)
{
    size_t w = strlen(where), k = strlen(key), n = 0;

    if (w) {
        n = w < cap - 1 ? w : cap - 1;
        memcpy(buf, where, n);
        if (n < cap - 1)
            buf[n++] = '.';
    }
    k = k < cap - 1 - n ? k : cap - 1 - n;
    memcpy(buf + n, key, k);
    buf[n + k] = '\0';
}

static int unknown_field(const char *field, const char *key, size_t klen,
                         sdb_error *err)
{
    if (strlen(key) == klen &&
        (strcmp(key, "id") == 0 || strcmp(key, "lsn") == 0 ||
         strcmp(key, "timestamp") == 0))
        return sdb_error_set(err, SDB_EINVAL, field,
                             "is assigned by the server and must not be "
                             "sent");
    return sdb_error_set(err, SDB_EINVAL, field, "unknown field");
}

/*
 * Call the rule for every key of obj; *seen gets one bit per rule that was
 * present (and not null when nullable).  Keys are unique in jansson.
 */
static int fields_dispatch(json_t *obj, const char *where,
                           const struct field_rule *rules, size_t n, void *ctx,
                           unsigned *seen, sdb_error *err)
{
    const char *key;
    size_t klen, i;
    json_t *v;
    char field[128];
    int rc = 0;

    json_object_keylen_foreach(obj, key, klen, v)
    {
        field_join(field, sizeof field, where, key);
        for (i = 0; i < n; i++)
            if (strlen(rules[i].name) == klen &&
                memcmp(rules[i].name, key, klen) == 0)
                break;
        if (i == n)
            rc = unknown_field(field, key, klen, err);
        else if (!(rules[i].nullable && json_is_null(v))) {
            *seen |= 1u << i;
            rc = rules[i].fn(v, field, ctx, err);
        }
        if (rc != 0)
            break;
    }
    return rc;
}

static int want_string(json_t *v, const char *field, const char **s,
                       size_t *len, sdb_error *err)
{
    if (!json_is_string(v))
        return sdb_error_set(err, SDB_EINVAL, field, "must be a string");
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

/* Replace *dst with a NUL-terminated copy of (s, len). */
static int set_copy(char **dst, const char *s, size_t len, const char *field,
                    sdb_error *err)
{
    char *p = malloc(len + 1);

    if (p == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    memcpy(p, s, len);
    p[len] = '\0';
    free(*dst);
    *dst = p;
    return 0;
}

static int parse_path_value(json_t *v, const char *field, char **dst,
                            sdb_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc = want_string(v, field, &s, &len, err);

    if (rc == 0)
        rc = sdb_concept_path_check(s, len, field, err);
    if (rc == 0)
        rc = set_copy(dst, s, len, field, err);
    return rc;
}

static int parse_predicate_value(json_t *v, const char *field, char **dst,
                                 sdb_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc = want_string(v, field, &s, &len, err);

    if (rc == 0)
        rc = sdb_predicate_check(s, len, field, err);
    if (rc == 0)
        rc = set_copy(dst, s, len, field, err);
    return rc;
}

/*
 * "a/b" (exact), "a/b/\*" (subtree; *path without the suffix) or, when
 * allow_all, "*" (all, *path NULL).
 */
static int parse_scoped_path(json_t *v, const char *field, bool allow_all,
                             int *scope, char **path, sdb_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc = want_string(v, field, &s, &len, err);

    if (rc != 0)
        return rc;
    if (len == 1 && s[0] == '*') {
        if (!allow_all)
            return sdb_error_set(err, SDB_EINVAL, field,
                                 "must name a concept path ('*' alone is "
                                 "not allowed here)");
        *scope = SDB_SCOPE_ALL;
        free(*path);
        *path = NULL;
        return 0;
    }
    *scope = SDB_SCOPE_EXACT;
    if (len >= 2 && s[len - 2] == '/' && s[len - 1] == '*') {
        *scope = SDB_SCOPE_SUBTREE;
        len -= 2;
    }
    rc = sdb_concept_path_check(s, len, field, err);
    if (rc == 0)
        rc = set_copy(path, s, len, field, err);
    return rc;
}

/* ---- assertions ---- */

void sdb_assertion_release(struct sdb_assertion *a)
{
    if (a == NULL)
        return;
    free(a->concept_path);
    free(a->predicate);
    json_decref(a->value);
    free(a->source);
    free(a->derived_from);
    memset(a, 0, sizeof *a);
}

static int a_concept_path(json_t *v, const char *field, void *ctx,
                          sdb_error *err)
{
    return parse_path_value(v, field,
                            &((struct sdb_assertion *)ctx)->concept_path, err);
}

static int a_predicate(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    return parse_predicate_value(
        v, field, &((struct sdb_assertion *)ctx)->predicate, err);
}

static int a_value(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_assertion *a = ctx;
    int64_t size = sdb_value_packed_size(v);

    if (size == SDB_EINVAL)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "is nested too deeply (at most %d levels)",
                             SDB_MAX_VALUE_DEPTH);
    if (size < 0)
        return sdb_error_set(err, (int)size, field, "cannot be encoded");
    if (size > SDB_MAX_VALUE_BYTES)
        return sdb_error_set(err, SDB_ETOOBIG, field,
                             "is %lld bytes encoded; at most %d allowed",
                             (long long)size, SDB_MAX_VALUE_BYTES);
    json_decref(a->value);
    a->value = json_deep_copy(v);
    if (a->value == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    return 0;
}

static int a_confidence(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_assertion *a = ctx;
    double c;

    if (json_is_integer(v) && json_integer_value(v) >= 0 &&
        json_integer_value(v) <= 1)
        c = (double)json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) >= 0.0 &&
             json_real_value(v) <= 1.0)
        c = json_real_value(v);
    else
        return sdb_error_set(err, SDB_EINVAL, field, CONF_HINT);
    a->confidence = c == 0.0 ? 0.0 : c; /* no -0.0 */
    return 0;
}

static int a_tier(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_assertion *a = ctx;
    int tier = json_is_string(v) &&
                       strlen(json_string_value(v)) == json_string_length(v)
                   ? sdb_tier_parse(json_string_value(v))
                   : -1;

    if (tier < 0)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be one of authoritative, expert, "
                             "verified, community, unverified");
    a->tier = tier;
    return 0;
}

static int a_source(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    return parse_path_value(v, field, &((struct sdb_assertion *)ctx)->source,
                            err);
}

static int parse_id_value(json_t *v, const char *field, struct sdb_id *out,
                          sdb_error *err)
{
    if (!json_is_string(v) ||
        json_string_length(v) != strlen(json_string_value(v)) ||
        sdb_id_parse(json_string_value(v), out) != 0)
        return sdb_error_set(err, SDB_EINVAL, field, ID_HINT);
    return 0;
}

static int a_derived_from(json_t *v, const char *field, void *ctx,
                          sdb_error *err)
{
    struct sdb_assertion *a = ctx;
    size_t n = json_array_size(v);
    char item[128];
    int rc = 0;

    if (!json_is_array(v))
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be an array of assertion ids");
    if (n > SDB_MAX_DERIVED)
        return sdb_error_set(err, SDB_EINVAL, field, "must have at most %d ids",
                             SDB_MAX_DERIVED);
    free(a->derived_from);
    a->derived_from = NULL;
    a->n_derived = 0;
    if (n == 0)
        return 0;
    a->derived_from = calloc(n, sizeof *a->derived_from);
    if (a->derived_from == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        snprintf(item, sizeof item, "%s[%zu]", field, i);
        rc = parse_id_value(json_array_get(v, i), item, &a->derived_from[i],
                            err);
    }
    a->n_derived = n; /* freed by release even on failure */
    return rc;
}

enum { A_PATH, A_PRED, A_VALUE };

static const struct field_rule ASSERTION_RULES[] = {
    [A_PATH] = {"concept_path", a_concept_path, false},
    [A_PRED] = {"predicate", a_predicate, false},
    [A_VALUE] = {"value", a_value, false},
    {"confidence", a_confidence, false},
    {"authority_tier", a_tier, false},
    {"source", a_source, true},
    {"derived_from", a_derived_from, true},
};

static int require(unsigned seen, unsigned bit, const char *where,
                   const char *key, sdb_error *err)
{
    char field[128];

    if (seen & (1u << bit))
        return 0;
    field_join(field, sizeof field, where, key);
    return sdb_error_set(err, SDB_EINVAL, field, "is required");
}

/* One assertion object; where is "" or "assertions[i]". */
static int parse_assertion(json_t *obj, const char *where,
                           struct sdb_assertion *a, sdb_error *err)
{
    unsigned seen = 0;
    int rc;

    memset(a, 0, sizeof *a);
    a->confidence = 1.0;
    a->tier = SDB_TIER_UNVERIFIED;
    if (!json_is_object(obj))
        return sdb_error_set(err, SDB_EINVAL, where, "must be an object");
    rc = fields_dispatch(obj, where, ASSERTION_RULES,
                         sizeof ASSERTION_RULES / sizeof ASSERTION_RULES[0], a,
                         &seen, err);
    if (rc == 0)
        rc = require(seen, A_PATH, where, "concept_path", err);
    if (rc == 0)
        rc = require(seen, A_PRED, where, "predicate", err);
    if (rc == 0)
        rc = require(seen, A_VALUE, where, "value", err);
    if (rc != 0)
        sdb_assertion_release(a);
    return rc;
}

static void free_assertions(struct sdb_assertion *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sdb_assertion_release(&arr[i]);
    free(arr);
}

static int batch_key(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    (void)v, (void)field, (void)ctx, (void)err;
    return 0; /* checked by parse_batch */
}

static const struct field_rule BATCH_RULES[] = {
    {"assertions", batch_key, false}};

static int parse_batch(json_t *req, struct sdb_assertion **out, size_t *n,
                       sdb_error *err)
{
    json_t *arr = json_object_get(req, "assertions");
    size_t count = json_array_size(arr);
    struct sdb_assertion *items;
    unsigned seen = 0;
    char where[64];
    int rc = fields_dispatch(req, "", BATCH_RULES, 1, NULL, &seen, err);

    if (rc != 0)
        return rc;
    if (!json_is_array(arr) || count == 0)
        return sdb_error_set(err, SDB_EINVAL, "assertions",
                             "must be a non-empty array of assertions");
    if (count > SDB_MAX_BATCH)
        return sdb_error_set(err, SDB_ETOOBIG, "assertions",
                             "must hold at most %d assertions", SDB_MAX_BATCH);
    items = calloc(count, sizeof *items);
    if (items == NULL)
        return sdb_error_set(err, SDB_ENOMEM, "assertions", "out of memory");
    memcpy(where, "assertions[", 11);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        size_t d = 11, k = i;
        char digits[24];
        int nd = 0;

        do
            digits[nd++] = (char)('0' + k % 10);
        while ((k /= 10) != 0);
        while (nd)
            where[d++] = digits[--nd];
        where[d++] = ']';
        where[d] = '\0';
        rc = parse_assertion(json_array_get(arr, i), where, &items[i], err);
    }
    if (rc != 0)
        goto free_items;
    *out = items;
    *n = count;
    return 0;

free_items:
    free_assertions(items, count); /* unparsed items are zeroed */
    return rc;
}

int sdb_assert_request_parse(json_t *req, struct sdb_assertion **out, size_t *n,
                             sdb_error *err)
{
    struct sdb_assertion *one;
    int rc;

    *out = NULL;
    *n = 0;
    if (!json_is_object(req))
        return sdb_error_set(err, SDB_EINVAL, "",
                             "request must be a JSON object");
    if (json_object_get(req, "assertions") != NULL)
        return parse_batch(req, out, n, err);
    one = calloc(1, sizeof *one);
    if (one == NULL)
        return sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    rc = parse_assertion(req, "", one, err);
    if (rc != 0)
        goto free_one;
    *out = one;
    *n = 1;
    return 0;

free_one:
    free(one); /* parse_assertion released its contents */
    return rc;
}

/* ---- retractions ---- */

void sdb_retraction_release(struct sdb_retraction *r)
{
    if (r == NULL)
        return;
    free(r->concept_path);
    free(r->predicate);
    free(r->reason);
    free(r->retracted);
    memset(r, 0, sizeof *r);
}

static int r_id(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_retraction *r = ctx;

    r->by_id = true;
    return parse_id_value(v, field, &r->target_id, err);
}

static int r_concept_path(json_t *v, const char *field, void *ctx,
                          sdb_error *err)
{
    struct sdb_retraction *r = ctx;

    return parse_scoped_path(v, field, false, &r->scope, &r->concept_path, err);
}

static int r_predicate(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    return parse_predicate_value(
        v, field, &((struct sdb_retraction *)ctx)->predicate, err);
}

static int r_reason(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_retraction *r = ctx;
    const char *s = NULL;
    size_t len = 0;
    int rc = want_string(v, field, &s, &len, err);

    if (rc == 0)
        rc = sdb_reason_check(s, len, field, err);
    if (rc == 0)
        rc = set_copy(&r->reason, s, len, field, err);
    return rc;
}

static int r_cascade(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    if (!json_is_boolean(v))
        return sdb_error_set(err, SDB_EINVAL, field, "must be a boolean");
    ((struct sdb_retraction *)ctx)->cascade = json_is_true(v);
    return 0;
}

enum { R_ID, R_PATH, R_PRED, R_REASON };

static const struct field_rule RETRACT_RULES[] = {
    [R_ID] = {"id", r_id, false},
    [R_PATH] = {"concept_path", r_concept_path, false},
    [R_PRED] = {"predicate", r_predicate, true},
    [R_REASON] = {"reason", r_reason, false},
    {"cascade", r_cascade, false},
};

static int retract_combination(unsigned seen, sdb_error *err)
{
    bool has_id = seen & (1u << R_ID), has_path = seen & (1u << R_PATH);

    if (has_id == has_path)
        return sdb_error_set(err, SDB_EINVAL, has_id ? "concept_path" : "id",
                             "exactly one of id or concept_path is "
                             "required");
    if (has_id && (seen & (1u << R_PRED)))
        return sdb_error_set(err, SDB_EINVAL, "predicate",
                             "is only allowed with concept_path");
    return require(seen, R_REASON, "", "reason", err);
}

int sdb_retract_request_parse(json_t *req, struct sdb_retraction *out,
                              sdb_error *err)
{
    unsigned seen = 0;
    int rc;

    memset(out, 0, sizeof *out);
    if (!json_is_object(req))
        return sdb_error_set(err, SDB_EINVAL, "",
                             "request must be a JSON object");
    rc = fields_dispatch(req, "", RETRACT_RULES,
                         sizeof RETRACT_RULES / sizeof RETRACT_RULES[0], out,
                         &seen, err);
    if (rc == 0)
        rc = retract_combination(seen, err);
    if (rc != 0)
        goto release;
    return 0;

release:
    sdb_retraction_release(out);
    return rc;
}

/* ---- queries ---- */

void sdb_query_req_release(struct sdb_query_req *q)
{
    if (q == NULL)
        return;
    free(q->concept_path);
    free(q->predicate);
    free(q->cursor);
    memset(q, 0, sizeof *q);
}

static int q_concept_path(json_t *v, const char *field, void *ctx,
                          sdb_error *err)
{
    struct sdb_query_req *q = ctx;

    return parse_scoped_path(v, field, true, &q->scope, &q->concept_path, err);
}

static int q_predicate(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    return parse_predicate_value(
        v, field, &((struct sdb_query_req *)ctx)->predicate, err);
}

static int q_lens(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    int lens = json_is_string(v) &&
                       strlen(json_string_value(v)) == json_string_length(v)
                   ? sdb_lens_parse(json_string_value(v))
                   : -1;

    if (lens < 0)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be one of recency, confidence, "
                             "authority, consensus");
    ((struct sdb_query_req *)ctx)->lens = lens;
    return 0;
}

static int q_limit(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    json_int_t n = json_integer_value(v);

    if (!json_is_integer(v) || n < 1 || n > SDB_MAX_QUERY_LIMIT)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be an integer between 1 and %d",
                             SDB_MAX_QUERY_LIMIT);
    ((struct sdb_query_req *)ctx)->limit = (int)n;
    return 0;
}

static int q_cursor(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_query_req *q = ctx;
    const char *s = NULL;
    size_t len = 0;
    int rc = want_string(v, field, &s, &len, err);

    if (rc == 0 && len > MAX_CURSOR)
        rc = sdb_error_set(err, SDB_EINVAL, field, "must be at most %d bytes",
                           MAX_CURSOR);
    if (rc == 0)
        rc = text_check(s, len, false, field, err);
    if (rc == 0 && len > 0)
        rc = set_copy(&q->cursor, s, len, field, err);
    return rc;
}

static int q_as_of(json_t *v, const char *field, void *ctx, sdb_error *err)
{
    struct sdb_query_req *q = ctx;

    if (!json_is_string(v) ||
        strlen(json_string_value(v)) != json_string_length(v) ||
        sdb_time_parse(json_string_value(v), &q->as_of_us) != 0)
        return sdb_error_set(err, SDB_EINVAL, field,
                             "must be an RFC 3339 timestamp");
    q->has_as_of = true;
    return 0;
}

static int q_include_retracted(json_t *v, const char *field, void *ctx,
                               sdb_error *err)
{
    if (!json_is_boolean(v))
        return sdb_error_set(err, SDB_EINVAL, field, "must be a boolean");
    ((struct sdb_query_req *)ctx)->include_retracted = json_is_true(v);
    return 0;
}

static const struct field_rule QUERY_RULES[] = {
    {"concept_path", q_concept_path, false},
    {"predicate", q_predicate, true},
    {"lens", q_lens, false},
    {"limit", q_limit, false},
    {"cursor", q_cursor, true},
    {"as_of", q_as_of, true},
    {"include_retracted", q_include_retracted, false},
};

int sdb_query_request_parse(json_t *req, struct sdb_query_req *out,
                            sdb_error *err)
{
    unsigned seen = 0;
    int rc = 0;

    memset(out, 0, sizeof *out);
    out->scope = SDB_SCOPE_ALL;
    out->lens = SDB_LENS_RECENCY;
    out->limit = SDB_DEFAULT_QUERY_LIMIT;
    if (req == NULL)
        return 0; /* every field has a default */
    if (!json_is_object(req))
        return sdb_error_set(err, SDB_EINVAL, "",
                             "request must be a JSON object");
    rc = fields_dispatch(req, "", QUERY_RULES,
                         sizeof QUERY_RULES / sizeof QUERY_RULES[0], out, &seen,
                         err);
    if (rc != 0)
        goto release;
    return 0;

release:
    sdb_query_req_release(out);
    return rc;
}
