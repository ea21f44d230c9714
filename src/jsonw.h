/*
 * jsonw.h - a JSON text buffer for the read path: the response is built by
 * appending fragments to one growing buffer instead of building a json_t
 * tree and dumping it.  Strings, reals and values are encoded by jansson
 * (json_dumpb), so the bytes are those json_dumps(JSON_COMPACT) gives.
 *
 * Errors are sticky: after a failed allocation every call is a no-op and
 * sdb_jsonw_finish returns SDB_ENOMEM.  Not thread-safe per writer.
 */
#ifndef SDB_JSONW_H
#define SDB_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct sdb_jsonw {
    char *p;
    size_t n, cap;
    bool oom;
};

/* Make room for n more bytes up front (a hint: saves reallocations). */
void sdb_jsonw_reserve(struct sdb_jsonw *w, size_t n);
/* Raw bytes, no escaping. */
void sdb_jsonw_raw(struct sdb_jsonw *w, const char *s, size_t n);
/* A JSON string (quotes included) of n bytes of UTF-8, escaped as jansson. */
void sdb_jsonw_str(struct sdb_jsonw *w, const char *s, size_t n);
void sdb_jsonw_int(struct sdb_jsonw *w, int64_t v);
/* A real as jansson prints it ("%.17g", ".0" added, exponent trimmed). */
void sdb_jsonw_real(struct sdb_jsonw *w, double v);
/* Any JSON value (v == NULL writes null). */
void sdb_jsonw_value(struct sdb_jsonw *w, const json_t *v);
/* A timestamp as sdb_time_format writes it, quoted. */
void sdb_jsonw_time(struct sdb_jsonw *w, int64_t us);

/*
 * Hand over the text (NUL-terminated, *out_len without the NUL; the caller
 * frees it): 0, or SDB_ENOMEM (nothing to free).  Resets the writer.
 */
int sdb_jsonw_finish(struct sdb_jsonw *w, char **out, size_t *out_len);
/* Drop the text (after an error elsewhere). */
void sdb_jsonw_release(struct sdb_jsonw *w);

#endif
