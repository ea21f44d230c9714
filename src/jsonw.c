/*
 * jsonw.c - the JSON text writer of the read path (contract in jsonw.h).
 * Every JSON encoding (string escaping, reals, whole values) is jansson's
 * own json_dumpb: this file only manages the buffer, so its output is
 * jansson's by construction (tests/unit/test_jsonw.c checks it anyway).
 * Integers and our own timestamps are plain digits.
 */
#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stemedb/stemedb.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

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

/* Append jansson's compact encoding of v (NULL: out of memory). */
static void dump(struct sdb_jsonw *w, const json_t *v)
{
    size_t room, need;

    if (v == NULL) {
        w->oom = true;
        return;
    }
    if (!reserve(w, 64))
        return;
    room = w->cap - w->n - 1;
    need = json_dumpb(v, w->p + w->n, room, DUMP_FLAGS);
    if (need > room) {
        if (!reserve(w, need))
            return;
        need = json_dumpb(v, w->p + w->n, w->cap - w->n - 1, DUMP_FLAGS);
    }
    if (need == 0) { /* jansson refused: never for values it built */
        w->oom = true;
        return;
    }
    w->n += need;
}

void sdb_jsonw_str(struct sdb_jsonw *w, const char *s, size_t n)
{
    json_t *v = json_stringn_nocheck(s, n);

    dump(w, v);
    json_decref(v);
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

void sdb_jsonw_real(struct sdb_jsonw *w, double v)
{
    /* confidences repeat a lot: remember the last one per thread */
    static __thread double last_v = -1.0;
    static __thread char last_s[64];
    static __thread size_t last_n;

    if (last_n == 0 || memcmp(&v, &last_v, sizeof(v)) != 0) {
        json_t *r = json_real(v);

        last_n = r ? json_dumpb(r, last_s, sizeof(last_s), DUMP_FLAGS) : 0;
        json_decref(r);
        if (last_n == 0 || last_n > sizeof(last_s)) {
            last_n = 0;
            w->oom = true; /* cannot happen for a finite double */
            return;
        }
        last_v = v;
    }
    sdb_jsonw_raw(w, last_s, last_n);
}

void sdb_jsonw_value(struct sdb_jsonw *w, const json_t *v)
{
    json_t *null = NULL;

    if (v == NULL)
        v = null = json_null();
    dump(w, v);
    json_decref(null);
}

void sdb_jsonw_time(struct sdb_jsonw *w, int64_t us)
{
    char buf[34];
    size_t n;

    buf[0] = '"';
    sdb_time_format(us, buf + 1);
    n = strlen(buf);
    buf[n++] = '"';
    sdb_jsonw_raw(w, buf, n);
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
