/*
 * jsonw.c - the JSON text writer of the read path (contract in jsonw.h).
 * Must not: differ by one byte from jansson's compact output for the same
 * value (tests/unit/test_jsonw.c compares them), or call printf-family
 * functions except for reals, whose exact digits only libc gets right.
 */
#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stemedb/stemedb.h"

static bool reserve(struct sdb_jsonw *w, size_t more)
{
    size_t cap;
    char *p;

    if (w->oom)
        return false;
    if (w->n + more + 1 <= w->cap)
        return true;
    for (cap = w->cap ? w->cap : 1024; cap < w->n + more + 1; cap *= 2)
        ;
    p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

void sdb_jsonw_reserve(struct sdb_jsonw *w, size_t n)
{
    reserve(w, n);
}

void sdb_jsonw_raw(struct sdb_jsonw *w, const char *s, size_t n)
{
    if (!reserve(w, n))
        return;
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

void sdb_jsonw_str(struct sdb_jsonw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0;

    /* worst case: every byte becomes \u00XX */
    if (!reserve(w, n * 6 + 2))
        return;
    w->p[w->n++] = '"';
    while (i < n) {
        size_t run = i;
        unsigned char c;

        while (run < n && (unsigned char)s[run] >= 0x20 && s[run] != '"' &&
               s[run] != '\\')
            run++;
        memcpy(w->p + w->n, s + i, run - i);
        w->n += run - i;
        if (run == n)
            break;
        c = (unsigned char)s[run];
        w->p[w->n++] = '\\';
        switch (c) {
        case '"':
        case '\\':
            w->p[w->n++] = (char)c;
            break;
        case '\b':
            w->p[w->n++] = 'b';
            break;
        case '\f':
            w->p[w->n++] = 'f';
            break;
        case '\n':
            w->p[w->n++] = 'n';
            break;
        case '\r':
            w->p[w->n++] = 'r';
            break;
        case '\t':
            w->p[w->n++] = 't';
            break;
        default:
            memcpy(w->p + w->n, "u00", 3);
            w->p[w->n + 3] = hex[c >> 4];
            w->p[w->n + 4] = hex[c & 15];
            w->n += 5;
        }
        i = run + 1;
    }
    w->p[w->n++] = '"';
}

void sdb_jsonw_int(struct sdb_jsonw *w, int64_t v)
{
    char buf[24];
    int i = (int)sizeof(buf);
    /* the magnitude as unsigned, so INT64_MIN works too */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[--i] = '-';
    sdb_jsonw_raw(w, buf + i, sizeof(buf) - (size_t)i);
}

/* jansson's jsonp_dtostr with its default precision (17). */
static size_t dtostr(char *buf, size_t cap, double v)
{
    int n = snprintf(buf, cap, "%.17g", v);
    size_t len;
    char *e;

    if (n < 0 || (size_t)n >= cap)
        return 0;
    len = (size_t)n;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == ',') /* a locale's decimal comma */
            buf[i] = '.';
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        if (len + 3 > cap)
            return 0;
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    e = strchr(buf, 'e');
    if (e) { /* drop a '+' and leading zeros of the exponent */
        char *start = e + 1, *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - buf) + 1);
            len -= (size_t)(end - start);
        }
    }
    return len;
}

void sdb_jsonw_real(struct sdb_jsonw *w, double v)
{
    /* confidences repeat a lot: remember the last one per thread */
    static __thread double last_v = -1.0;
    static __thread char last_s[40];
    static __thread size_t last_n;

    if (last_n == 0 || memcmp(&v, &last_v, sizeof(v)) != 0) {
        last_n = dtostr(last_s, sizeof(last_s), v);
        last_v = v;
        if (last_n == 0) {
            w->oom = true; /* cannot happen for a finite double */
            return;
        }
    }
    sdb_jsonw_raw(w, last_s, last_n);
}

void sdb_jsonw_value(struct sdb_jsonw *w, const json_t *v)
{
    const char *key;
    json_t *item;
    size_t i;
    bool first = true;

    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT:
        sdb_jsonw_raw(w, "{", 1);
        json_object_foreach((json_t *)v, key, item)
        {
            if (!first)
                sdb_jsonw_raw(w, ",", 1);
            first = false;
            sdb_jsonw_str(w, key, strlen(key));
            sdb_jsonw_raw(w, ":", 1);
            sdb_jsonw_value(w, item);
        }
        sdb_jsonw_raw(w, "}", 1);
        break;
    case JSON_ARRAY:
        sdb_jsonw_raw(w, "[", 1);
        json_array_foreach(v, i, item)
        {
            if (i)
                sdb_jsonw_raw(w, ",", 1);
            sdb_jsonw_value(w, item);
        }
        sdb_jsonw_raw(w, "]", 1);
        break;
    case JSON_STRING:
        sdb_jsonw_str(w, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sdb_jsonw_int(w, (int64_t)json_integer_value(v));
        break;
    case JSON_REAL:
        sdb_jsonw_real(w, json_real_value(v));
        break;
    case JSON_TRUE:
        sdb_jsonw_raw(w, "true", 4);
        break;
    case JSON_FALSE:
        sdb_jsonw_raw(w, "false", 5);
        break;
    case JSON_NULL:
        sdb_jsonw_raw(w, "null", 4);
        break;
    }
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

void sdb_jsonw_time(struct sdb_jsonw *w, int64_t us)
{
    const int64_t per_day = 86400LL * 1000000;
    int64_t days = us / per_day, rem = us % per_day, z, era, y;
    unsigned doe, yoe, doy, mp, m, d, secs, frac;
    char buf[32];

    if (rem < 0) {
        rem += per_day;
        days--;
    }
    /* days since 1970-01-01 to a civil date (proleptic Gregorian) */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = (int64_t)yoe + era * 400 + (m <= 2);
    if (y < 0 || y > 9999) { /* rare: the general formatter */
        sdb_time_format(us, buf);
        sdb_jsonw_str(w, buf, strlen(buf));
        return;
    }
    secs = (unsigned)(rem / 1000000);
    frac = (unsigned)(rem % 1000000);
    memcpy(buf, "\"0000-00-00T00:00:00.000000Z\"", 29);
    put2(buf + 1, (unsigned)(y / 100));
    put2(buf + 3, (unsigned)(y % 100));
    put2(buf + 6, m);
    put2(buf + 9, d);
    put2(buf + 12, secs / 3600);
    put2(buf + 15, secs / 60 % 60);
    put2(buf + 18, secs % 60);
    put2(buf + 21, frac / 10000);
    put2(buf + 23, frac / 100 % 100);
    put2(buf + 25, frac % 100);
    sdb_jsonw_raw(w, buf, 29);
}

int sdb_jsonw_finish(struct sdb_jsonw *w, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!reserve(w, 0)) {
        sdb_jsonw_release(w);
        return SDB_ENOMEM;
    }
    w->p[w->n] = '\0';
    *out = w->p;
    *out_len = w->n;
    memset(w, 0, sizeof(*w));
    return 0;
}

void sdb_jsonw_release(struct sdb_jsonw *w)
{
    free(w->p);
    memset(w, 0, sizeof(*w));
}
