/*
 * meta.c - metadata.json (meta.h).  jansson builds and parses it; the
 * checksum is XXH3-64 of the compact, key-sorted JSON of every other
 * field, so a reader can check it with any JSON library.
 */
#define _GNU_SOURCE
#include "meta.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hash.h"
#include "model.h"

static const char *const meta_u64_keys[] = {
    "last_lsn",         "checkpoint_lsn", "assertion_count",
    "retraction_count", "concept_count",  "restarts"};

static uint64_t *meta_field(struct sdb_meta *m, size_t i)
{
    uint64_t *f[] = {&m->last_lsn,        &m->checkpoint_lsn,
                     &m->assertion_count, &m->retraction_count,
                     &m->concept_count,   &m->restarts};
    return f[i];
}

static uint64_t doc_checksum(json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = s ? sdb_hash64(s, strlen(s), 0) : 0;

    free(s);
    return h;
}

int sdb_meta_write(const sdb_io *io, const char *data_dir,
                   const struct sdb_meta *m)
{
    struct sdb_meta copy = *m;
    char hex[17], created[32], *text;
    json_t *doc = json_object();
    int rc = SDB_ENOMEM;

    if (!doc)
        return SDB_ENOMEM;
    sdb_time_format(m->created_us, created);
    snprintf(hex, sizeof(hex), "%016" PRIx64, m->store_id);
    json_object_set_new(doc, "format_version",
                        json_integer(SDB_FORMAT_VERSION));
    json_object_set_new(doc, "store_id", json_string(hex));
    json_object_set_new(doc, "created", json_string(created));
    json_object_set_new(doc, "version", json_string(SDB_VERSION));
    for (size_t i = 0; i < 6; i++)
        json_object_set_new(doc, meta_u64_keys[i],
                            json_integer((json_int_t)*meta_field(&copy, i)));
    snprintf(hex, sizeof(hex), "%016" PRIx64, doc_checksum(doc));
    json_object_set_new(doc, "checksum", json_string(hex));
    text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text) {
        size_t n = strlen(text);
        text[n] = '\n';
        rc = sdb_io_write_file_atomic(io, data_dir, "metadata.json", text,
                                      n + 1);
        free(text);
    }
    json_decref(doc);
    return rc;
}

static int parse_hex64(json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);
    char *end;

    if (!s || strlen(s) != 16 || strspn(s, "0123456789abcdef") != 16)
        return -1; /* lowercase only: one spelling per value */
    *out = strtoull(s, &end, 16);
    return *end ? -1 : 0;
}

int sdb_meta_parse(const char *buf, size_t len, struct sdb_meta *m,
                   sdb_error *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr), *v;
    uint64_t sum = 0;
    int rc = SDB_ECORRUPT;

    memset(m, 0, sizeof(*m));
    if (!doc || !json_is_object(doc))
        goto bad;
    v = json_object_get(doc, "format_version");
    if (!json_is_integer(v))
        goto bad;
    if (json_integer_value(v) != SDB_FORMAT_VERSION) {
        rc = SDB_EVERSION;
        goto bad;
    }
    if (parse_hex64(json_object_get(doc, "checksum"), &sum) < 0)
        goto bad;
    json_object_del(doc, "checksum");
    if (doc_checksum(doc) != sum ||
        parse_hex64(json_object_get(doc, "store_id"), &m->store_id) < 0 ||
        sdb_time_parse(json_string_value(json_object_get(doc, "created"))
                           ? json_string_value(json_object_get(doc, "created"))
                           : "",
                       &m->created_us) < 0)
        goto bad;
    for (size_t i = 0; i < 6; i++) {
        v = json_object_get(doc, meta_u64_keys[i]);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            goto bad;
        *meta_field(m, i) = (uint64_t)json_integer_value(v);
    }
    if (m->checkpoint_lsn > m->last_lsn)
        goto bad;
    rc = 0;
bad:
    if (rc < 0)
        sdb_error_set(err, rc, "metadata", "metadata.json: %s",
                      rc == SDB_EVERSION ? "unsupported format version"
                      : !doc             ? jerr.text
                                         : "checksum or field mismatch");
    json_decref(doc);
    return rc;
}

int sdb_meta_read(const sdb_io *io, const char *data_dir, struct sdb_meta *m,
                  sdb_error *err)
{
    char *path = NULL, *buf = NULL;
    size_t len = 0;
    int rc;

    if (asprintf(&path, "%s/metadata.json", data_dir) < 0)
        return SDB_ENOMEM;
    rc = sdb_io_read_file(io, path, 1 << 20, &buf, &len);
    if (rc == 0)
        rc = sdb_meta_parse(buf, len, m, err);
    else if (rc != -ENOENT)
        sdb_error_set(err, rc, "metadata", "cannot read %s: %s", path,
                      sdb_strerror(rc));
    free(buf);
    free(path);
    return rc;
}
