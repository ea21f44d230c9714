/*
 * backup.c - hot backups, verification, restore with point-in-time
 * recovery from the WAL archive, retention, and the backup status file.
 *
 * Backup layout (BACKUPS/stemedb-backup-YYYYMMDD-HHMMSS/):
 *   wal/segment-*.wal     WAL segments, each cut after its last valid record
 *   db/<concept dirs>/    @seg-N.msgpack/.idx cut at the backup LSN
 *   store-metadata.json   the store's metadata.json, byte for byte
 *   metadata.json         backup description + manifest, written last
 *
 * Consistency without stopping the writer: WAL segments, concept segments
 * and their idx files only grow, so a prefix read now stays valid.  The
 * store's metadata.json (checkpoint C) is read first; then the WAL is copied
 * up to its last valid record (LSN B), which must cover (C, B] (otherwise a
 * checkpoint recycled segments meanwhile and the copy starts over); then
 * every concept's segments are copied up to the last record with LSN <= P,
 * where P (C <= P <= B) is the last LSN such that the segments held every
 * record of (C, P] when they were scanned (the writer fills the segments
 * after the WAL, concept by concept, so they can lag B and have holes).
 * The index snapshot is derived data and not copied: the restore rebuilds it
 * from the segments and replays the WAL (records in (C, B]).
 *
 * File checksums in the manifest ("xxh3-64-chain-1m"): h = 0; for each
 * 1 MiB block (the last may be shorter) h = XXH3-64(block, seed h); an empty
 * file hashes as XXH3-64("", seed 0).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

#include "codec.h"
#include "hash.h"
#include "io.h"
#include "meta.h"
#include "model.h"
#include "segment.h"
#include "wal.h"

#define BLK          ((size_t)1 << 20)
#define MAX_ATTEMPTS 8
#define PATHMAX      4608

/* ---- small helpers ---- */

/* snprintf for paths: a result that does not fit becomes "" (every later
 * use then fails cleanly instead of touching a truncated path). */
static int pathf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int pathf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = 0;
        return -ENAMETOOLONG;
    }
    return n;
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void stamp(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y%m%d-%H%M%S", &tm);
}

static void hex64(uint64_t v, char out[17])
{
    pathf(out, 17, "%016" PRIx64, v);
}

static int parse_hex64(const char *s, uint64_t *out)
{
    char *end;

    if (!s || strlen(s) != 16)
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 16);
    return *end || errno ? -1 : 0;
}

static bool exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

/* "segment-<16 hex>.wal" -> seq. */
static bool wal_name_seq(const char *name, uint64_t *seq)
{
    char check[40];

    if (strlen(name) != 28 || strncmp(name, "segment-", 8) ||
        strcmp(name + 24, ".wal"))
        return false;
    for (int i = 8; i < 24; i++)
        if (!strchr("0123456789abcdef", name[i]))
            return false;
    *seq = strtoull(name + 8, NULL, 16);
    sdb_wal_segment_name(*seq, check);
    return strcmp(check, name) == 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Sorted WAL segment sequence numbers found in dir (-ENOENT if missing). */
static int list_wal(const char *dir, uint64_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t *v = NULL, seq;
    size_t cnt = 0, cap = 0;

    *out = NULL;
    *n = 0;
    if (!d)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        if (!wal_name_seq(de->d_name, &seq))
            continue;
        if (cnt == cap) {
            uint64_t *nv;
            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return SDB_ENOMEM;
            }
            v = nv;
        }
        v[cnt++] = seq;
    }
    closedir(d);
    if (cnt)
        qsort(v, cnt, sizeof(*v), cmp_u64);
    *out = v;
    *n = cnt;
    return 0;
}

/* rm -rf for directories this module created itself (tmp, scratch). */
static void rmrf(const char *path)
{
    struct stat st;
    DIR *d;

    if (lstat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    if ((d = opendir(path)) != NULL) {
        const struct dirent *de;
        char child[PATHMAX];

        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            pathf(child, sizeof(child), "%s/%s", path, de->d_name);
            rmrf(child);
        }
        closedir(d);
    }
    rmdir(path);
}

/* ---- chained file checksum ---- */

struct fhash {
    unsigned char *blk;
    size_t fill;
    uint64_t h;
    uint64_t total;
};

static void fh_feed(struct fhash *f, const unsigned char *p, size_t n)
{
    while (n) {
        size_t k = BLK - f->fill < n ? BLK - f->fill : n;
        memcpy(f->blk + f->fill, p, k);
        f->fill += k;
        f->total += k;
        p += k;
        n -= k;
        if (f->fill == BLK) {
            f->h = sdb_hash64(f->blk, BLK, f->h);
            f->fill = 0;
        }
    }
}

static uint64_t fh_final(struct fhash *f)
{
    if (f->fill || f->total == 0)
        f->h = sdb_hash64(f->blk, f->fill, f->h);
    return f->h;
}

/*
 * Copy [0, len) of src to dst (created; must not exist) when dst is not
 * NULL, hashing the bytes; fsync dst.  A source shorter than len is
 * SDB_ECORRUPT.
 */
static int copy_hash(const sdb_io *io, const char *src, const char *dst,
                     uint64_t len, uint64_t *hash)
{
    struct fhash fh = {0};
    unsigned char *buf = malloc(BLK);
    int sfd, dfd = -1, rc = 0;
    uint64_t off = 0;

    fh.blk = malloc(BLK);
    if (!buf || !fh.blk) {
        rc = SDB_ENOMEM;
        goto out;
    }
    sfd = io->open(io->ctx, src, O_RDONLY | O_CLOEXEC, 0);
    if (sfd < 0) {
        rc = sfd;
        goto out;
    }
    if (dst) {
        dfd = io->open(io->ctx, dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                       0644);
        if (dfd < 0)
            rc = dfd;
    }
    while (rc == 0 && off < len) {
        size_t n = len - off < BLK ? (size_t)(len - off) : BLK;
        rc = sdb_io_pread_all(io, sfd, buf, n, (off_t)off);
        if (rc == 0 && dfd >= 0)
            rc = sdb_io_pwrite_all(io, dfd, buf, n, (off_t)off);
        if (rc == 0)
            fh_feed(&fh, buf, n);
        off += n;
    }
    if (rc == 0 && dfd >= 0)
        rc = io->fsync(io->ctx, dfd);
    if (dfd >= 0) {
        int c = io->close(io->ctx, dfd);
        rc = rc ? rc : c;
    }
    io->close(io->ctx, sfd);
    if (rc == 0)
        *hash = fh_final(&fh);
out:
    free(buf);
    free(fh.blk);
    return rc;
}

/* Hash a whole file; *size gets its length. */
static int hash_file(const sdb_io *io, const char *path, uint64_t *size,
                     uint64_t *hash)
{
    struct stat st;
    int fd = io->open(io->ctx, path, O_RDONLY | O_CLOEXEC, 0), rc;

    if (fd < 0)
        return fd;
    rc = io->fstat(io->ctx, fd, &st);
    io->close(io->ctx, fd);
    if (rc < 0)
        return rc;
    *size = (uint64_t)st.st_size;
    return copy_hash(io, path, NULL, *size, hash);
}

/* Write a small file durably (create, write, fsync). */
static int write_small(const sdb_io *io, const char *path, const void *buf,
                       size_t len)
{
    int fd = io->open(io->ctx, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                      0644),
        rc;

    if (fd < 0)
        return fd;
    rc = sdb_io_pwrite_all(io, fd, buf, len, 0);
    if (rc == 0)
        rc = io->fsync(io->ctx, fd);
    io->close(io->ctx, fd);
    return rc;
}

/* ---- manifest ---- */

static uint64_t doc_checksum(json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = s ? sdb_hash64(s, strlen(s), 0) : 0;

    free(s);
    return h;
}

/*
 * Load and check a backup's metadata.json (manifest checksum included).
 * Returns 0 with *out a new reference, or SDB_ECORRUPT / -errno.
 */
static int load_manifest(const char *backup, json_t **out, sdb_error *err)
{
    char path[PATHMAX];
    json_error_t jerr;
    json_t *doc, *files;
    uint64_t sum;
    const char *cs;

    *out = NULL;
    pathf(path, sizeof(path), "%s/metadata.json", backup);
    if (!exists(path))
        return sdb_error_set(err, -ENOENT, "backup",
                             "%s: no metadata.json (not a complete backup)",
                             backup);
    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        return sdb_error_set(err, SDB_ECORRUPT, "backup", "%s: %s", path,
                             jerr.text);
    }
    cs = json_string_value(json_object_get(doc, "manifest_checksum"));
    files = json_object_get(doc, "files");
    if (parse_hex64(cs, &sum) < 0 || !json_is_array(files)) {
        json_decref(doc);
        return sdb_error_set(err, SDB_ECORRUPT, "backup",
                             "%s: manifest or its checksum missing", path);
    }
    json_incref(json_object_get(doc, "manifest_checksum"));
    {
        json_t *keep = json_object_get(doc, "manifest_checksum");
        json_object_del(doc, "manifest_checksum");
        if (doc_checksum(doc) != sum) {
            json_decref(keep);
            json_decref(doc);
            return sdb_error_set(err, SDB_ECORRUPT, "backup",
                                 "%s: manifest checksum mismatch (the file "
                                 "was altered or truncated)",
                                 path);
        }
        json_object_set_new(doc, "manifest_checksum", keep);
    }
    if (!json_is_integer(json_object_get(doc, "lsn")) ||
        !json_is_string(json_object_get(doc, "store_id"))) {
        json_decref(doc);
        return sdb_error_set(err, SDB_ECORRUPT, "backup",
                             "%s: lsn or store_id missing", path);
    }
    *out = doc;
    return 0;
}

static uint64_t ju64(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    return json_is_integer(v) && json_integer_value(v) > 0
               ? (uint64_t)json_integer_value(v)
               : 0;
}

/* ---- backup ---- */

struct bk {
    const sdb_io *io;
    const char *data_dir;
    char tmp[PATHMAX];
    char *meta_buf;
    size_t meta_len;
    struct sdb_meta m;
    uint64_t lsn;                 /* B */
    uint64_t db_lsn;              /* P: the concept segments are cut here */
    int64_t lsn_ts;               /* timestamp of record B (0 if unknown) */
    uint64_t first_wal_lsn;       /* header first LSN of the first segment */
    uint64_t n_assert, n_retract; /* WAL records in (C, B] */
    uint64_t wal_segments, first_seq, last_seq;
    uint64_t bytes, bytes_linked, nfiles;
    json_t *files;
    json_t *prev; /* previous manifest's files by path */
    const char *prev_dir;
    struct concept_cut *cc; /* concepts scanned by the first pass */
    size_t ncc, cccap;
    unsigned char *seen; /* one bit per LSN in (C, B] found in segments */
    sdb_error *err;
};

/* Copy [0, len) of src as tmp/rel, or hard-link it from the previous
 * backup when size and checksum match; add the manifest entry. */
static int add_file(struct bk *b, const char *rel, const char *src,
                    uint64_t len)
{
    char dst[PATHMAX];
    uint64_t h = 0;
    int rc;
    json_t *pe = b->prev ? json_object_get(b->prev, rel) : NULL;
    bool linked = false;

    pathf(dst, sizeof(dst), "%s/%s", b->tmp, rel);
    if (pe && ju64(pe, "size") == len) {
        uint64_t ph = 0;
        rc = copy_hash(b->io, src, NULL, len, &h);
        if (rc < 0)
            goto fail;
        if (parse_hex64(json_string_value(json_object_get(pe, "checksum")),
                        &ph) == 0 &&
            ph == h) {
            char from[PATHMAX];
            pathf(from, sizeof(from), "%s/%s", b->prev_dir, rel);
            linked = link(from, dst) == 0;
        }
    }
    if (!linked) {
        rc = copy_hash(b->io, src, dst, len, &h);
        if (rc < 0)
            goto fail;
    }
    {
        char hx[17];
        json_t *e;

        hex64(h, hx);
        e = json_pack("{s:s, s:I, s:s}", "path", rel, "size", (json_int_t)len,
                      "checksum", hx);
        if (!e || json_array_append_new(b->files, e) < 0)
            return SDB_ENOMEM;
    }
    b->nfiles++;
    if (linked)
        b->bytes_linked += len;
    else
        b->bytes += len;
    return 0;
fail:
    return sdb_error_set(b->err, rc, "backup", "cannot copy (%s): %s",
                         sdb_strerror(rc), src);
}

/* Count assertions/retractions with LSN > after in one WAL payload; keep
 * the timestamp of its last record. */
static int count_payload(const unsigned char *p, size_t len, uint32_t count,
                         uint64_t after, uint64_t *na, uint64_t *nr,
                         int64_t *last_ts)
{
    size_t off = 0, used;

    for (uint32_t i = 0; i < count; i++) {
        struct sdb_record rec;
        int rc = sdb_codec_unpack(p + off, len - off, &used, &rec, NULL);
        uint64_t lsn;

        if (rc < 0)
            return rc;
        lsn = rec.type == SDB_REC_ASSERTION ? rec.a.id.lsn : rec.r.id.lsn;
        *last_ts = rec.type == SDB_REC_ASSERTION ? rec.a.ts_us : rec.r.ts_us;
        if (lsn > after && rec.type == SDB_REC_ASSERTION)
            (*na)++;
        else if (lsn > after)
            (*nr)++;
        sdb_record_release(&rec);
        off += used;
    }
    return off == len ? 0 : SDB_ECORRUPT;
}

/*
 * Walk the valid records of a WAL segment file from offset 64.  For each
 * record calls fn (may be NULL).  *used gets the end of the last valid
 * record with LSN continuity from *expect (0: take the first).
 */
typedef int (*rec_fn)(void *arg, uint64_t off, const unsigned char *rec,
                      size_t rl, uint64_t lsn, uint32_t count);

static int walk_segment(const sdb_io *io, const char *path, uint64_t store,
                        uint64_t seq, uint64_t *expect, uint64_t *first_lsn,
                        uint64_t *used, uint64_t *fsize, rec_fn fn, void *arg,
                        sdb_error *err)
{
    unsigned char h[SDB_WAL_HEADER_SIZE], *rec = NULL;
    size_t cap = 0;
    uint64_t hseq, hstore, first, off = SDB_WAL_HEADER_SIZE;
    struct stat st;
    int fd = io->open(io->ctx, path, O_RDONLY | O_CLOEXEC, 0), rc;

    if (fd < 0)
        return fd;
    rc = io->fstat(io->ctx, fd, &st);
    if (rc == 0)
        rc = sdb_io_pread_all(io, fd, h, sizeof(h), 0);
    if (rc == 0 && sdb_wal_parse_header(h, &hseq, &hstore, &first) < 0)
        rc = sdb_error_set(err, SDB_ECORRUPT, "wal",
                           "bad WAL segment header @0 of %s", path);
    if (rc == 0 && (hseq != seq || hstore != store))
        rc = sdb_error_set(err, SDB_ECORRUPT, "wal",
                           "header @0 names segment %" PRIu64
                           " of store %016" PRIx64 ": %s",
                           hseq, hstore, path);
    if (rc == 0 && *expect && first != *expect)
        rc = sdb_error_set(err, SDB_ECORRUPT, "wal",
                           "LSN gap: segment starts at LSN %" PRIu64
                           " but LSN %" PRIu64 " was expected: %s",
                           first, *expect, path);
    if (rc < 0)
        goto out;
    *first_lsn = first;
    if (!*expect)
        *expect = first;
    *fsize = (uint64_t)st.st_size;
    for (;;) {
        unsigned char rh[SDB_WAL_REC_HEADER];
        uint32_t plen, cnt;
        size_t rl;
        uint64_t lsn;

        if (off + SDB_WAL_REC_HEADER > (uint64_t)st.st_size ||
            sdb_io_pread_all(io, fd, rh, sizeof(rh), (off_t)off) < 0)
            break;
        plen = sdb_get_u32(rh + 8);
        if (sdb_get_u32(rh) != SDB_WAL_REC_MAGIC || plen == 0 ||
            plen > SDB_WAL_MAX_PAYLOAD ||
            off + SDB_WAL_REC_HEADER + plen > (uint64_t)st.st_size)
            break;
        if (cap < SDB_WAL_REC_HEADER + (size_t)plen) {
            unsigned char *n = realloc(rec, SDB_WAL_REC_HEADER + plen);
            if (!n) {
                rc = SDB_ENOMEM;
                goto out;
            }
            rec = n;
            cap = SDB_WAL_REC_HEADER + plen;
        }
        memcpy(rec, rh, sizeof(rh));
        if (sdb_io_pread_all(io, fd, rec + SDB_WAL_REC_HEADER, plen,
                             (off_t)(off + SDB_WAL_REC_HEADER)) < 0)
            break;
        if (!sdb_wal_check_record(rec, SDB_WAL_REC_HEADER + plen, 0,
                                  sdb_wal_seed(store, seq), &rl, &lsn, &cnt) ||
            lsn != *expect)
            break;
        if (fn && (rc = fn(arg, off, rec, rl, lsn, cnt)) != 0)
            break;
        *expect = lsn + cnt;
        off += rl;
    }
    *used = off;
out:
    free(rec);
    io->close(io->ctx, fd);
    return rc < 0 ? rc : 0;
}

static int bk_count(void *arg, uint64_t off, const unsigned char *rec,
                    size_t rl, uint64_t lsn, uint32_t count)
{
    struct bk *b = arg;

    (void)off;
    (void)lsn;
    return count_payload(rec + SDB_WAL_REC_HEADER, rl - SDB_WAL_REC_HEADER,
                         count, b->m.checkpoint_lsn, &b->n_assert,
                         &b->n_retract, &b->lsn_ts);
}

/* Parse the header of a WAL segment file read through io. */
static int io_read_header(const sdb_io *io, const char *path)
{
    unsigned char h[SDB_WAL_HEADER_SIZE];
    uint64_t seq, store, first;
    int fd = io->open(io->ctx, path, O_RDONLY | O_CLOEXEC, 0), rc;

    if (fd < 0)
        return fd;
    rc = sdb_io_pread_all(io, fd, h, sizeof(h), 0);
    io->close(io->ctx, fd);
    /* a file shorter than a header reads as SDB_ECORRUPT too */
    return rc < 0 ? rc : sdb_wal_parse_header(h, &seq, &store, &first);
}

/* 1: copied and covers (C, B]; 0: a checkpoint raced us (retry); <0. */
static int copy_wal(struct bk *b)
{
    char dir[PATHMAX], path[PATHMAX], rel[64], name[40];
    uint64_t *seqs, expect = 0;
    size_t n;
    int rc;

    pathf(dir, sizeof(dir), "%s/wal", b->data_dir);
    rc = list_wal(dir, &seqs, &n);
    if (rc < 0)
        return sdb_error_set(b->err, rc, "data_dir", "cannot list %s: %s", dir,
                             sdb_strerror(rc));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint64_t first = 0, used = 0, fsize = 0;

        if (i && seqs[i] != seqs[i - 1] + 1) {
            /* recycled under us */
            free(seqs);
            return 0;
        }
        sdb_wal_segment_name(seqs[i], name);
        pathf(path, sizeof(path), "%s/%s", dir, name);
        if (i && i + 1 == n) {
            /* a switch creates the file before it writes the header, and
             * appends to it only after that: a newest segment without a
             * valid header yet holds no record, so the copy ends before it */
            int hr = io_read_header(b->io, path);
            if (hr == -ENOENT) {
                free(seqs);
                return 0;
            }
            if (hr == SDB_ECORRUPT)
                break;
        }
        rc = walk_segment(b->io, path, b->m.store_id, seqs[i], &expect, &first,
                          &used, &fsize, bk_count, b, b->err);
        if (rc == -ENOENT) {
            free(seqs);
            return 0;
        }
        if (rc < 0)
            break;
        if (i == 0)
            b->first_wal_lsn = first, b->first_seq = seqs[i];
        b->last_seq = seqs[i];
        pathf(rel, sizeof(rel), "wal/%s", name);
        rc = add_file(b, rel, path, used);
        if (rc == -ENOENT) {
            /* recycled by a checkpoint between the walk and the copy */
            if (b->err)
                memset(b->err, 0, sizeof(*b->err));
            free(seqs);
            return 0;
        }
        b->wal_segments++;
    }
    free(seqs);
    if (rc < 0)
        return rc;
    b->lsn = expect ? expect - 1 : 0;
    if (b->lsn < b->m.checkpoint_lsn)
        b->lsn = b->m.checkpoint_lsn;
    if (b->lsn > b->m.checkpoint_lsn &&
        (n == 0 || b->first_wal_lsn > b->m.checkpoint_lsn + 1))
        return 0;
    return 1;
}

/*
 * Cutting the concept segments.  The directories are scanned one after
 * another while the writer keeps going, and the writer puts a record into
 * its concept segment only after the WAL holds it.  A scan cut at B can
 * therefore hold record L+1 of a concept scanned late but miss record L of
 * a concept scanned early (or of a directory created during the walk).
 * A restore rebuilds the index from the segments and then replays the WAL
 * in LSN order, which needs the segments to hold every record up to some
 * LSN P and none after it; otherwise the replay of L lands behind L+1 and
 * the open fails.  So the copy takes two passes: scan every concept (records
 * <= C are always there, records in (C, B] are noted), take P = the last LSN
 * with all of (C, P] seen, then copy every concept cut at P.  The records
 * in (P, B] reach the restore through the WAL copy, which covers (C, B].
 */
struct tailrec {
    uint64_t lsn;
    uint64_t end; /* end offset of the record in its data file */
    uint32_t segno;
};

struct cut {
    uint64_t ckpt, max_lsn; /* C and B */
    unsigned char *seen;    /* shared: one bit per LSN in (C, B] */
    uint32_t nseg;
    uint64_t *data_end; /* per segno (1-based), bytes kept */
    uint64_t *count;    /* records kept */
    struct tailrec *t;  /* records in (C, B], in scan order */
    size_t nt, tcap;
};

struct concept_cut {
    char *rel;
    struct cut c;
};

static int cut_keep(struct cut *c, uint32_t segno, uint64_t end)
{
    if (segno > c->nseg) {
        uint32_t n = segno + 8;
        uint64_t *d = realloc(c->data_end, (n + 1) * sizeof(*d));
        uint64_t *k = d ? realloc(c->count, (n + 1) * sizeof(*k)) : NULL;
        if (d)
            c->data_end = d;
        if (!k)
            return SDB_ENOMEM;
        c->count = k;
        for (uint32_t i = c->nseg + 1; i <= n; i++)
            c->data_end[i] = c->count[i] = 0;
        c->nseg = n;
    }
    c->data_end[segno] = end;
    c->count[segno]++;
    return 0;
}

static int cut_record(void *arg, uint64_t lsn, int type,
                      const struct sdb_loc *loc, const unsigned char *rec)
{
    struct cut *c = arg;
    uint64_t end = (uint64_t)loc->off + loc->len, k;

    (void)type;
    (void)rec;
    if (lsn > c->max_lsn)
        return 0;
    if (lsn <= c->ckpt)
        return cut_keep(c, loc->segno, end);
    if (c->nt == c->tcap) {
        size_t n = c->tcap ? c->tcap * 2 : 16;
        struct tailrec *t = realloc(c->t, n * sizeof(*t));
        if (!t)
            return SDB_ENOMEM;
        c->t = t;
        c->tcap = n;
    }
    c->t[c->nt++] = (struct tailrec){lsn, end, loc->segno};
    k = lsn - c->ckpt - 1;
    c->seen[k / 8] |= (unsigned char)(1u << (k % 8));
    return 0;
}

static void cut_free(struct cut *c)
{
    free(c->data_end);
    free(c->count);
    free(c->t);
}

static int concept_hash(const char *rel, uint64_t *chash)
{
    char cpath[SDB_MAX_PATH_LEN + 1];

    if (!strcmp(rel, SDB_RETRACTIONS_DIR)) {
        *chash = sdb_hash64(rel, strlen(rel), 0);
        return 0;
    }
    if (sdb_dir_to_concept(rel, cpath, sizeof(cpath)) < 0)
        return SDB_EINVAL;
    *chash = sdb_hash64(cpath, strlen(cpath), 0);
    return 0;
}

/* First pass: scan one concept directory and remember its cut points. */
static int scan_concept(struct bk *b, const char *rel)
{
    char db[PATHMAX], bad[512];
    struct sdb_seginfo si = {0};
    struct concept_cut *cc;
    int rc;

    if (concept_hash(rel, &si.chash) < 0)
        return 0; /* not a concept directory: the store ignores it too */
    if (b->ncc == b->cccap) {
        size_t n = b->cccap ? b->cccap * 2 : 64;
        struct concept_cut *v = realloc(b->cc, n * sizeof(*v));
        if (!v)
            return SDB_ENOMEM;
        b->cc = v;
        b->cccap = n;
    }
    cc = &b->cc[b->ncc];
    memset(cc, 0, sizeof(*cc));
    cc->c.ckpt = b->m.checkpoint_lsn;
    cc->c.max_lsn = b->lsn;
    cc->c.seen = b->seen;
    if (!(cc->rel = strdup(rel)))
        return SDB_ENOMEM;
    b->ncc++;
    si.dir = (char *)rel;
    pathf(db, sizeof(db), "%s/db", b->data_dir);
    rc = sdb_seg_scan(b->io, db, &si, b->m.store_id, cut_record, &cc->c, bad,
                      sizeof(bad));
    if (rc < 0)
        sdb_error_set(b->err, rc, "db", "cannot scan %s/%s: %s", db, rel,
                      sdb_strerror(rc));
    return rc;
}

/* Second pass: copy one concept's segments cut at b->db_lsn (P). */
static int copy_concept(struct bk *b, struct concept_cut *cc)
{
    char src[PATHMAX], r2[PATHMAX], dname[32], iname[32], db[PATHMAX];
    struct cut *c = &cc->c;
    int rc = 0;

    for (size_t i = 0; i < c->nt && c->t[i].lsn <= b->db_lsn; i++)
        if ((rc = cut_keep(c, c->t[i].segno, c->t[i].end)) < 0)
            return rc;
    pathf(db, sizeof(db), "%s/db", b->data_dir);
    for (uint32_t s = 1; s <= c->nseg && c->count[s]; s++) {
        if (s == 1) {
            pathf(r2, sizeof(r2), "db/%s", cc->rel);
            rc = sdb_io_mkdirs(b->io, b->tmp, r2);
            if (rc < 0) {
                sdb_error_set(b->err, rc, "backup", "cannot create %s/%s",
                              b->tmp, r2);
                break;
            }
        }
        sdb_seg_file_names(s, dname, iname);
        pathf(src, sizeof(src), "%s/%s/%s", db, cc->rel, dname);
        pathf(r2, sizeof(r2), "db/%s/%s", cc->rel, dname);
        rc = add_file(b, r2, src, c->data_end[s]);
        if (rc < 0)
            break;
        pathf(src, sizeof(src), "%s/%s/%s", db, cc->rel, iname);
        pathf(r2, sizeof(r2), "db/%s/%s", cc->rel, iname);
        rc = add_file(b, r2, src,
                      SDB_IDX_HEADER_SIZE + c->count[s] * SDB_IDX_ENTRY_SIZE);
        if (rc < 0)
            break;
    }
    return rc;
}

static int walk_db(struct bk *b, const char *rel)
{
    char path[PATHMAX], child[PATHMAX];
    DIR *d;
    struct dirent *de;
    int rc = 0;

    pathf(path, sizeof(path), "%s/db%s%s", b->data_dir, *rel ? "/" : "", rel);
    if (!(d = opendir(path)))
        return errno == ENOENT && !*rel
                   ? 0
                   : sdb_error_set(b->err, -errno, "db", "cannot read %s: %s",
                                   path, strerror(errno));
    while (rc == 0 && (de = readdir(d)) != NULL) {
        struct stat st;
        char full[PATHMAX];

        if (de->d_name[0] == '.' || (!*rel && !strcmp(de->d_name, "indexes")))
            continue;
        if (de->d_name[0] == '@' &&
            (*rel || strcmp(de->d_name, SDB_RETRACTIONS_DIR)))
            continue;
        pathf(full, sizeof(full), "%s/%s", path, de->d_name);
        if (lstat(full, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        pathf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        rc = scan_concept(b, child);
        if (rc == 0 && de->d_name[0] != '@')
            rc = walk_db(b, child);
    }
    closedir(d);
    return rc;
}

/* Both passes over db/: scan, choose P, copy cut at P. */
static int copy_db(struct bk *b)
{
    uint64_t span = b->lsn - b->m.checkpoint_lsn, k;
    int rc;

    b->seen = calloc(span / 8 + 1, 1);
    if (!b->seen)
        return SDB_ENOMEM;
    rc = walk_db(b, "");
    if (rc < 0)
        return rc;
    for (k = 0; k < span && (b->seen[k / 8] >> (k % 8)) & 1; k++)
        ;
    b->db_lsn = b->m.checkpoint_lsn + k;
    for (size_t i = 0; rc == 0 && i < b->ncc; i++)
        rc = copy_concept(b, &b->cc[i]);
    return rc;
}

static void free_cuts(struct bk *b)
{
    for (size_t i = 0; i < b->ncc; i++) {
        free(b->cc[i].rel);
        cut_free(&b->cc[i].c);
    }
    free(b->cc);
    free(b->seen);
    b->cc = NULL;
    b->seen = NULL;
    b->ncc = b->cccap = 0;
}

/* fsync every directory below (and including) path. */
static int fsync_tree(const sdb_io *io, const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int rc = 0;

    if (!d)
        return -errno;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char child[PATHMAX];
        struct stat st;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        pathf(child, sizeof(child), "%s/%s", path, de->d_name);
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            rc = fsync_tree(io, child);
    }
    closedir(d);
    return rc ? rc : sdb_io_fsync_dir(io, path);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(
        json_string_value(json_object_get(*(json_t *const *)a, "path")),
        json_string_value(json_object_get(*(json_t *const *)b, "path")));
}

static json_t *sorted_files(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v = malloc((n ? n : 1) * sizeof(*v)), *out = json_array();

    if (!v || !out) {
        free(v);
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof(*v), cmp_entry);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    return out;
}

static int write_manifest(struct bk *b, const char *type, const char *parent,
                          int64_t started_us)
{
    char ts[32], lts[32], sid[17], hx[17], *s;
    json_t *doc;
    json_t *files = sorted_files(b->files);
    int rc;

    if (!files)
        return SDB_ENOMEM;
    sdb_time_format(started_us, ts);
    sdb_time_format(b->lsn_ts, lts);
    hex64(b->m.store_id, sid);
    doc = json_pack(
        "{s:s, s:i, s:s, s:s, s:I, s:s, s:o, s:s, s:I, s:o, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:I, s:s, s:o}",
        "format", "stemedb-backup", "format_version", 1, "version", SDB_VERSION,
        "timestamp", ts, "timestamp_unix", (json_int_t)(started_us / 1000000),
        "backup_type", type, "parent",
        parent ? json_string(parent) : json_null(), "store_id", sid, "lsn",
        (json_int_t)b->lsn, "lsn_timestamp",
        b->lsn_ts ? json_string(lts) : json_null(), "checkpoint_lsn",
        (json_int_t)b->m.checkpoint_lsn, "first_wal_lsn",
        (json_int_t)b->first_wal_lsn, "assertion_count",
        (json_int_t)(b->m.assertion_count + b->n_assert), "retraction_count",
        (json_int_t)(b->m.retraction_count + b->n_retract), "wal_segment_count",
        (json_int_t)b->wal_segments, "first_wal_segment",
        (json_int_t)b->first_seq, "last_wal_segment", (json_int_t)b->last_seq,
        "checksum_algorithm", "xxh3-64-chain-1m", "files", files);
    if (!doc)
        return SDB_ENOMEM;
    hex64(doc_checksum(doc), hx);
    json_object_set_new(doc, "manifest_checksum", json_string(hx));
    s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    if (!s)
        return SDB_ENOMEM;
    rc = sdb_io_write_file_atomic(b->io, b->tmp, "metadata.json", s, strlen(s));
    free(s);
    return rc;
}

static int prepare_prev(struct bk *b, const char *prev, sdb_error *err)
{
    json_t *doc, *files, *e;
    size_t i;
    int rc = load_manifest(prev, &doc, err);
    uint64_t sid = 0;

    if (rc < 0)
        return rc;
    if (parse_hex64(json_string_value(json_object_get(doc, "store_id")), &sid) <
            0 ||
        sid != b->m.store_id) {
        json_decref(doc);
        return sdb_error_set(err, SDB_EINVAL, "incremental_from",
                             "%s belongs to another store", prev);
    }
    b->prev = json_object();
    files = json_object_get(doc, "files");
    json_array_foreach(files, i, e)
    {
        const char *p = json_string_value(json_object_get(e, "path"));
        if (p)
            json_object_set(b->prev, p, e);
    }
    json_decref(doc);
    b->prev_dir = prev;
    return 0;
}

/* Remove temporary directories of backups and verifications whose process
 * is gone (killed or crashed): ".stemedb-backup-*.tmp-PID" and
 * ".stemedb-verify-PID-*".  Never touches anything else. */
static void remove_stale_tmp(const char *dest)
{
    DIR *d = opendir(dest);
    const struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        const char *p = NULL;
        char full[PATHMAX];
        long pid;

        if (!strncmp(de->d_name, ".stemedb-backup-", 16))
            p = strstr(de->d_name, ".tmp-");
        if (p)
            p += 5;
        else if (!strncmp(de->d_name, ".stemedb-verify-", 16))
            p = de->d_name + 16;
        if (!p || (pid = strtol(p, NULL, 10)) <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if (pathf(full, sizeof(full), "%s/%s", dest, de->d_name) > 0)
            rmrf(full);
    }
    closedir(d);
}

int sdb_backup_create(const sdb_backup_opts *o, json_t **out, sdb_error *err)
{
    struct bk b = {0};
    char stamp_s[32], final[PATHMAX], metapath[PATHMAX];
    int64_t started = now_us();
    double t0 = mono_s();
    int rc = 0, attempt;
    const char *type = o->incremental_from ? "incremental" : "full";

    if (out)
        *out = NULL;
    if (!o->data_dir || !o->dest)
        return sdb_error_set(err, SDB_EINVAL, "", "data_dir and dest needed");
    b.io = o->io ? o->io : sdb_io_posix();
    b.data_dir = o->data_dir;
    b.err = err;
    rc = b.io->mkdir(b.io->ctx, o->dest, 0755);
    if (rc == 0)
        rc = sdb_io_fsync_parent(b.io, o->dest);
    if (rc < 0 && rc != -EEXIST)
        return sdb_error_set(err, rc, "dest", "cannot create %s: %s", o->dest,
                             sdb_strerror(rc));
    if (!o->io)
        remove_stale_tmp(o->dest);
    stamp(stamp_s);
    pathf(final, sizeof(final), "%s/stemedb-backup-%s", o->dest, stamp_s);
    for (int i = 2; exists(final) && i < 1000; i++)
        pathf(final, sizeof(final), "%s/stemedb-backup-%s-%d", o->dest, stamp_s,
              i);
    pathf(b.tmp, sizeof(b.tmp), "%s/.stemedb-backup-%s.tmp-%ld", o->dest,
          stamp_s, (long)getpid());
    pathf(metapath, sizeof(metapath), "%s/metadata.json", o->data_dir);
    for (attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        if (attempt)
            rmrf(b.tmp);
        json_decref(b.files);
        json_decref(b.prev);
        b.prev = NULL;
        free(b.meta_buf);
        b.meta_buf = NULL;
        b.files = json_array();
        b.n_assert = b.n_retract = b.wal_segments = b.bytes = 0;
        b.bytes_linked = b.nfiles = 0;
        b.lsn_ts = 0;
        if (!b.files) {
            rc = SDB_ENOMEM;
            break;
        }
        rc =
            sdb_io_read_file(b.io, metapath, 1 << 20, &b.meta_buf, &b.meta_len);
        if (rc < 0) {
            sdb_error_set(err, rc, "data_dir", "cannot read %s: %s", metapath,
                          sdb_strerror(rc));
            break;
        }
        rc = sdb_meta_parse(b.meta_buf, b.meta_len, &b.m, err);
        if (rc < 0)
            break;
        if (o->incremental_from &&
            (rc = prepare_prev(&b, o->incremental_from, err)) < 0)
            break;
        rc = b.io->mkdir(b.io->ctx, b.tmp, 0755);
        if (rc == 0)
            rc = sdb_io_mkdirs(b.io, b.tmp, "wal");
        if (rc == 0)
            rc = sdb_io_mkdirs(b.io, b.tmp, "db");
        if (rc < 0) {
            sdb_error_set(err, rc, "dest", "cannot create %s: %s", b.tmp,
                          sdb_strerror(rc));
            break;
        }
        rc = copy_wal(&b);
        if (rc == 1)
            break;
        if (rc < 0)
            break;
    }
    if (rc == 0)
        rc = sdb_error_set(err, SDB_EIO, "data_dir",
                           "the WAL kept changing under the backup (%d "
                           "attempts); try again",
                           MAX_ATTEMPTS);
    if (rc == 1)
        rc = copy_db(&b);
    if (rc == 0) {
        char dst[PATHMAX];

        pathf(dst, sizeof(dst), "%s/store-metadata.json", b.tmp);
        rc = write_small(b.io, dst, b.meta_buf, b.meta_len);
        if (rc == 0) {
            struct fhash fh = {0};
            char hx[17];
            fh.blk = malloc(BLK);
            if (!fh.blk) {
                rc = SDB_ENOMEM;
            } else {
                fh_feed(&fh, (unsigned char *)b.meta_buf, b.meta_len);
                hex64(fh_final(&fh), hx);
                free(fh.blk);
                json_array_append_new(
                    b.files,
                    json_pack("{s:s, s:I, s:s}", "path", "store-metadata.json",
                              "size", (json_int_t)b.meta_len, "checksum", hx));
                b.nfiles++;
            }
        }
        if (rc < 0 && !err->code)
            sdb_error_set(err, rc, "backup", "cannot write %s: %s", dst,
                          sdb_strerror(rc));
    }
    if (rc == 0 && (rc = fsync_tree(b.io, b.tmp)) < 0)
        sdb_error_set(err, rc, "backup", "cannot sync %s: %s", b.tmp,
                      sdb_strerror(rc));
    if (rc == 0) {
        const char *pn = NULL;
        if (o->incremental_from) {
            pn = strrchr(o->incremental_from, '/');
            pn = pn ? pn + 1 : o->incremental_from;
        }
        rc = write_manifest(&b, type, pn, started);
        if (rc < 0)
            sdb_error_set(err, rc, "backup", "cannot write the manifest: %s",
                          sdb_strerror(rc));
    }
    if (rc == 0) {
        rc = b.io->rename(b.io->ctx, b.tmp, final);
        if (rc == 0)
            rc = sdb_io_fsync_dir(b.io, o->dest);
        if (rc < 0)
            sdb_error_set(err, rc, "backup", "cannot rename %s to %s: %s",
                          b.tmp, final, sdb_strerror(rc));
    }
    /* a failed attempt leaves nothing that looks like a backup; with a
     * caller's I/O backend (tests) the temporary directory is left to it */
    if (rc < 0 && !o->io)
        rmrf(b.tmp);
    if (rc == 0 && out) {
        *out = json_pack(
            "{s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:I}", "path", final,
            "lsn", (json_int_t)b.lsn, "assertion_count",
            (json_int_t)(b.m.assertion_count + b.n_assert), "files",
            (json_int_t)b.nfiles, "bytes", (json_int_t)b.bytes, "bytes_linked",
            (json_int_t)b.bytes_linked, "backup_type", type, "seconds",
            mono_s() - t0, "wal_segment_count", (json_int_t)b.wal_segments);
    }
    json_decref(b.files);
    json_decref(b.prev);
    free(b.meta_buf);
    free_cuts(&b);
    return rc < 0 ? rc : 0;
}

/* ---- the WAL chain: backup segments continued by archived ones ---- */

struct cseg {
    uint64_t seq;
    char path[PATHMAX];
    bool archived;
    uint64_t first_lsn, last_lsn; /* last_lsn = first - 1 if empty */
    uint64_t take;                /* bytes to copy */
    unsigned char *tail;          /* rewritten last record, or NULL */
    size_t tail_len;
};

struct chain {
    struct cseg *v;
    size_t n;
    uint64_t store;
    uint64_t backup_lsn;
    uint64_t end_lsn; /* last LSN kept */
    int64_t end_ts;
    bool reached; /* target found */
    /* target */
    bool has_lsn, has_time;
    uint64_t t_lsn;
    int64_t t_us;
    bool stop;
    size_t cur;
    sdb_error *err;
};

static void chain_free(struct chain *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].tail);
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

static int chain_push(struct chain *c, uint64_t seq, const char *path,
                      bool archived)
{
    struct cseg *n = realloc(c->v, (c->n + 1) * sizeof(*n));

    if (!n)
        return SDB_ENOMEM;
    c->v = n;
    memset(&c->v[c->n], 0, sizeof(c->v[c->n]));
    c->v[c->n].seq = seq;
    c->v[c->n].archived = archived;
    pathf(c->v[c->n].path, PATHMAX, "%s", path);
    c->n++;
    return 0;
}

/* Rewrite the record at rec to hold its first k sub-records. */
static int rewrite_record(struct chain *c, struct cseg *s,
                          const unsigned char *rec, uint32_t k)
{
    const unsigned char *p = rec + SDB_WAL_REC_HEADER;
    size_t plen = sdb_get_u32(rec + 8), off = 0, used;
    unsigned char *out;

    for (uint32_t i = 0; i < k; i++) {
        struct sdb_record r;
        if (sdb_codec_unpack(p + off, plen - off, &used, &r, NULL) < 0)
            return SDB_ECORRUPT;
        sdb_record_release(&r);
        off += used;
    }
    out = malloc(SDB_WAL_REC_HEADER + off);
    if (!out)
        return SDB_ENOMEM;
    memcpy(out, rec, SDB_WAL_REC_HEADER);
    sdb_put_u32(out + 8, (uint32_t)off);
    sdb_put_u32(out + 12, k);
    memcpy(out + SDB_WAL_REC_HEADER, p, off);
    sdb_put_u64(out + 24, sdb_hash64_2(out, 24, out + SDB_WAL_REC_HEADER, off,
                                       sdb_wal_seed(c->store, s->seq)));
    s->tail = out;
    s->tail_len = SDB_WAL_REC_HEADER + off;
    return 0;
}

/* Per record of the chain: apply the target. */
static int chain_rec(void *arg, uint64_t off, const unsigned char *rec,
                     size_t rl, uint64_t lsn, uint32_t count)
{
    struct chain *c = arg;
    struct cseg *s = &c->v[c->cur];
    uint32_t keep = count;

    if (c->stop)
        return 1;
    if (lsn + count - 1 > c->backup_lsn && (c->has_lsn || c->has_time)) {
        const unsigned char *p = rec + SDB_WAL_REC_HEADER;
        size_t plen = rl - SDB_WAL_REC_HEADER, po = 0, used;

        keep = 0;
        for (uint32_t i = 0; i < count; i++) {
            struct sdb_record r;
            uint64_t rl2;
            int64_t ts;

            if (sdb_codec_unpack(p + po, plen - po, &used, &r, NULL) < 0)
                return sdb_error_set(c->err, SDB_ECORRUPT, "wal",
                                     "a record does not decode @%" PRIu64
                                     " of %s",
                                     off, s->path);
            rl2 = r.type == SDB_REC_ASSERTION ? r.a.id.lsn : r.r.id.lsn;
            ts = r.type == SDB_REC_ASSERTION ? r.a.ts_us : r.r.ts_us;
            sdb_record_release(&r);
            po += used;
            if (rl2 <= c->backup_lsn) {
                keep = i + 1;
                continue;
            }
            if ((c->has_lsn && rl2 > c->t_lsn) ||
                (c->has_time && ts > c->t_us)) {
                c->stop = true;
                c->reached = true;
                break;
            }
            keep = i + 1;
            c->end_ts = ts;
            if (c->has_lsn && rl2 == c->t_lsn) {
                c->reached = true;
                if (i + 1 < count)
                    c->stop = true;
            }
        }
    } else {
        /* whole record kept: remember the time of its last record */
        int64_t ts = 0;
        uint64_t na = 0, nr = 0;
        if (count_payload(rec + SDB_WAL_REC_HEADER, rl - SDB_WAL_REC_HEADER,
                          count, UINT64_MAX, &na, &nr, &ts) == 0)
            c->end_ts = ts;
    }
    if (keep == 0)
        return 1; /* cut before this record */
    if (keep < count) {
        int rc = rewrite_record(c, s, rec, keep);
        if (rc < 0)
            return rc;
        s->take = off;
        c->end_lsn = lsn + keep - 1;
        s->last_lsn = c->end_lsn;
        return 1;
    }
    s->take = off + rl;
    s->last_lsn = lsn + count - 1;
    c->end_lsn = s->last_lsn;
    if (c->stop)
        return 1;
    return 0;
}

static int read_header(const char *path, uint64_t *seq, uint64_t *store,
                       uint64_t *first)
{
    unsigned char h[SDB_WAL_HEADER_SIZE];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = pread(fd, h, sizeof(h), 0);
    close(fd);
    if (n != (ssize_t)sizeof(h))
        return SDB_ECORRUPT;
    return sdb_wal_parse_header(h, seq, store, first);
}

/*
 * Build the chain for a backup (manifest doc) plus an optional archive and
 * walk it applying the target.  Gaps are errors.
 */
static int build_chain(const char *backup, const char *archive, struct chain *c,
                       json_t *notes)
{
    char dir[PATHMAX], path[PATHMAX], name[40];
    uint64_t *seqs = NULL, *aseqs = NULL, expect = 0;
    size_t n = 0, an = 0;
    int rc;

    pathf(dir, sizeof(dir), "%s/wal", backup);
    rc = list_wal(dir, &seqs, &n);
    if (rc < 0 && rc != -ENOENT)
        return sdb_error_set(c->err, rc, "backup", "cannot list %s", dir);
    rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i && seqs[i] != seqs[i - 1] + 1)
            rc = sdb_error_set(c->err, SDB_ECORRUPT, "backup",
                               "%s: WAL segment %" PRIu64 " is missing", dir,
                               seqs[i - 1] + 1);
        sdb_wal_segment_name(seqs[i], name);
        pathf(path, sizeof(path), "%s/%s", dir, name);
        if (rc == 0)
            rc = chain_push(c, seqs[i], path, false);
    }
    if (rc == 0 && archive) {
        rc = list_wal(archive, &aseqs, &an);
        if (rc < 0)
            rc = sdb_error_set(c->err, rc, "wal_archive",
                               "cannot list the WAL archive %s: %s", archive,
                               sdb_strerror(rc));
    }
    if (rc == 0 && an) {
        uint64_t last = n ? seqs[n - 1] : 0;
        size_t j = 0;

        /* skip archived segments before the backup's last one, and other
         * stores' files */
        for (; j < an; j++) {
            uint64_t hs, st, fl;
            sdb_wal_segment_name(aseqs[j], name);
            pathf(path, sizeof(path), "%s/%s", archive, name);
            if (read_header(path, &hs, &st, &fl) < 0 || st != c->store) {
                if (notes)
                    json_array_append_new(
                        notes, json_sprintf("ignored %s: not a segment of "
                                            "this store",
                                            path));
                aseqs[j] = 0;
            }
        }
        for (j = 0; rc == 0 && j < an; j++) {
            if (!aseqs[j] || aseqs[j] < last)
                continue;
            sdb_wal_segment_name(aseqs[j], name);
            pathf(path, sizeof(path), "%s/%s", archive, name);
            if (n && aseqs[j] == last) {
                /* the archive's copy of the backup's last segment is sealed
                 * and holds at least as much; a shorter one is not it */
                struct stat sa, sb;
                if (stat(path, &sa) == 0 &&
                    stat(c->v[c->n - 1].path, &sb) == 0 &&
                    sa.st_size >= sb.st_size) {
                    pathf(c->v[c->n - 1].path, PATHMAX, "%s", path);
                    c->v[c->n - 1].archived = true;
                }
                continue;
            }
            if (c->n && aseqs[j] != c->v[c->n - 1].seq + 1) {
                char nm[40];
                sdb_wal_segment_name(c->v[c->n - 1].seq + 1, nm);
                rc = sdb_error_set(c->err, SDB_ECORRUPT, "wal_archive",
                                   "gap in the WAL archive: %s/%s is missing "
                                   "(found %s after it); refusing to restore "
                                   "past a hole",
                                   archive, nm, name);
                break;
            }
            rc = chain_push(c, aseqs[j], path, true);
        }
    }
    free(seqs);
    free(aseqs);
    /* walk it */
    for (size_t i = 0; rc == 0 && i < c->n && !c->stop; i++) {
        struct cseg *s = &c->v[i];
        uint64_t first = 0, used = 0, fsize = 0;

        c->cur = i;
        s->take = SDB_WAL_HEADER_SIZE;
        rc = walk_segment(sdb_io_posix(), s->path, c->store, s->seq, &expect,
                          &first, &used, &fsize, chain_rec, c, c->err);
        if (rc < 0) {
            if (!c->err->code)
                sdb_error_set(c->err, rc, "wal", "%s: %s", sdb_strerror(rc),
                              s->path);
            break;
        }
        s->first_lsn = first;
        if (s->last_lsn == 0)
            s->last_lsn = first - 1;
        if (!c->stop && used < fsize) {
            /* bytes after the last valid record must be zeros */
            unsigned char z[4096];
            int fd = open(s->path, O_RDONLY | O_CLOEXEC);
            uint64_t o = used;
            while (fd >= 0 && rc == 0 && o < fsize) {
                ssize_t k = pread(fd, z, sizeof(z), (off_t)o);
                if (k <= 0)
                    break;
                for (ssize_t q = 0; q < k; q++)
                    if (z[q]) {
                        rc = sdb_error_set(c->err, SDB_ECORRUPT, "wal",
                                           "invalid WAL record @%" PRIu64
                                           " (expected LSN %" PRIu64 ") of %s",
                                           used, expect, s->path);
                        break;
                    }
                o += (uint64_t)k;
            }
            if (fd >= 0)
                close(fd);
            if (rc == 0 && i + 1 < c->n)
                rc = sdb_error_set(c->err, SDB_ECORRUPT, "wal",
                                   "segment ends at LSN %" PRIu64
                                   " but a later segment follows: %s",
                                   expect - 1, s->path);
        }
    }
    if (rc == 0 && c->stop) {
        /* drop everything after the cut */
        size_t keep = c->cur + 1;
        for (size_t i = keep; i < c->n; i++)
            free(c->v[i].tail);
        c->n = keep;
    }
    if (rc == 0 && !c->stop)
        c->end_lsn = expect ? expect - 1 : c->backup_lsn;
    if (c->end_lsn < c->backup_lsn)
        c->end_lsn = c->backup_lsn;
    return rc;
}

/* ---- materialise a backup (+ chain) into a directory ---- */

static int copy_tree(const sdb_io *io, const char *src, const char *dst,
                     const char *rel)
{
    char s[PATHMAX], d[PATHMAX];
    DIR *dd;
    struct dirent *de;
    int rc = 0;

    pathf(s, sizeof(s), "%s%s%s", src, *rel ? "/" : "", rel);
    if (!(dd = opendir(s)))
        return -errno;
    while (rc == 0 && (de = readdir(dd)) != NULL) {
        char cs[PATHMAX], crel[PATHMAX];
        struct stat st;
        uint64_t h;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        pathf(cs, sizeof(cs), "%s/%s", s, de->d_name);
        pathf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        if (lstat(cs, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            rc = sdb_io_mkdirs(io, dst, crel);
            if (rc == 0)
                rc = copy_tree(io, src, dst, crel);
        } else if (S_ISREG(st.st_mode)) {
            pathf(d, sizeof(d), "%s/%s", dst, crel);
            rc = copy_hash(io, cs, d, (uint64_t)st.st_size, &h);
        }
    }
    closedir(dd);
    return rc;
}

/* Copy db/, the chain's WAL and the store metadata into dir (created). */
static int materialise(const char *backup, struct chain *c, const char *dir,
                       sdb_error *err)
{
    const sdb_io *io = sdb_io_posix();
    char s[PATHMAX], d[PATHMAX], name[40];
    int rc = io->mkdir(io->ctx, dir, 0755);
    uint64_t h;

    if (rc == 0)
        rc = sdb_io_fsync_parent(io, dir);
    if (rc == 0)
        rc = sdb_io_mkdirs(io, dir, "wal");
    if (rc == 0)
        rc = sdb_io_mkdirs(io, dir, "db/indexes");
    pathf(s, sizeof(s), "%s/db", backup);
    pathf(d, sizeof(d), "%s/db", dir);
    if (rc == 0)
        rc = copy_tree(io, s, d, "");
    for (size_t i = 0; rc == 0 && i < c->n; i++) {
        const struct cseg *g = &c->v[i];

        sdb_wal_segment_name(g->seq, name);
        pathf(d, sizeof(d), "%s/wal/%s", dir, name);
        rc = copy_hash(io, g->path, d, g->take, &h);
        if (rc == 0 && g->tail) {
            int fd = io->open(io->ctx, d, O_WRONLY | O_CLOEXEC, 0);
            rc = fd < 0 ? fd
                        : sdb_io_pwrite_all(io, fd, g->tail, g->tail_len,
                                            (off_t)g->take);
            if (rc == 0)
                rc = io->fsync(io->ctx, fd);
            if (fd >= 0)
                io->close(io->ctx, fd);
        }
    }
    pathf(s, sizeof(s), "%s/store-metadata.json", backup);
    pathf(d, sizeof(d), "%s/metadata.json", dir);
    if (rc == 0) {
        char *buf = NULL;
        size_t len = 0;
        rc = sdb_io_read_file(io, s, 1 << 20, &buf, &len);
        if (rc == 0)
            rc = write_small(io, d, buf, len);
        free(buf);
    }
    if (rc == 0)
        rc = fsync_tree(io, dir);
    if (rc < 0 && !err->code)
        sdb_error_set(err, rc, "restore", "cannot assemble %s: %s", dir,
                      sdb_strerror(rc));
    return rc;
}

static void quiet_log(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

/* Open dir (replay + checkpoint on close); fill stats. */
static int trial_open(const char *dir, sdb_log_fn log, void *log_arg,
                      sdb_stats *st, sdb_error *err)
{
    sdb_options o;
    sdb_db *db = NULL;
    int rc;

    sdb_options_init(&o, dir);
    o.log = log ? log : quiet_log;
    o.log_arg = log_arg;
    rc = sdb_db_open(&o, &db, err);
    if (rc < 0)
        return rc;
    sdb_db_stats(db, st);
    rc = sdb_db_close(db);
    if (rc < 0)
        sdb_error_set(err, rc, "restore", "closing %s failed: %s", dir,
                      sdb_strerror(rc));
    return rc;
}

/* ---- verify ---- */

/* msg with every "dir/" removed in place: the engine's messages name the
 * scratch directory's files, whose long path would crowd out the reason. */
static const char *relative_to(char *msg, const char *dir)
{
    size_t dl = strlen(dir);
    char *p;

    while (dl && (p = strstr(msg, dir)) != NULL && p[dl] == '/')
        memmove(p, p + dl + 1, strlen(p + dl + 1) + 1);
    return msg;
}

static void problem(json_t *problems, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void problem(json_t *problems, const char *fmt, ...)
{
    char buf[PATHMAX + 256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    json_array_append_new(problems, json_string(buf));
}

static void find_extra(const char *root, const char *rel, json_t *byname,
                       json_t *problems)
{
    char p[PATHMAX];
    DIR *d;
    struct dirent *de;

    pathf(p, sizeof(p), "%s%s%s", root, *rel ? "/" : "", rel);
    if (!(d = opendir(p)))
        return;
    while ((de = readdir(d)) != NULL) {
        char crel[PATHMAX], full[PATHMAX];
        struct stat st;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        pathf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        pathf(full, sizeof(full), "%s/%s", root, crel);
        if (lstat(full, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            find_extra(root, crel, byname, problems);
        else if (strcmp(crel, "metadata.json") &&
                 !json_object_get(byname, crel))
            problem(problems, "extra file not in the manifest: %s", crel);
    }
    closedir(d);
}

/* stemedb-fsck's checks (read-only); its errors become problems. */
static int fsck_problem(void *arg, const sdb_fsck_problem *p,
                        const sdb_fsck_report *rep)
{
    (void)rep;
    if (p && p->severity == SDB_FSCK_ERROR)
        problem(arg, "fsck %s: %s%s%s", p->name, p->file,
                p->file[0] ? ": " : "", p->message);
    return 0;
}

static void run_fsck(const char *backup, json_t *problems)
{
    sdb_fsck_report rep;
    int rc;

    memset(&rep, 0, sizeof(rep));
    rc = sdb_fsck(backup, 0, fsck_problem, problems, &rep);
    if (rc < 0)
        problem(problems, "fsck could not check the backup: %s",
                sdb_strerror(rc));
}

static int chain_init(struct chain *c, json_t *doc, sdb_error *err)
{
    memset(c, 0, sizeof(*c));
    c->err = err;
    c->backup_lsn = ju64(doc, "lsn");
    if (parse_hex64(json_string_value(json_object_get(doc, "store_id")),
                    &c->store) < 0)
        return sdb_error_set(err, SDB_ECORRUPT, "backup", "bad store_id");
    return 0;
}

int sdb_backup_verify(const char *backup, const char *wal_archive, bool trial,
                      json_t **out, sdb_error *err)
{
    json_t *doc = NULL, *files, *e, *byname = json_object(),
           *problems = json_array(), *rep;
    size_t i;
    int rc = load_manifest(backup, &doc, err);
    uint64_t bytes = 0;
    sdb_stats st = {0};
    bool opened = false;

    if (out)
        *out = NULL;
    if (rc < 0) {
        json_decref(byname);
        json_decref(problems);
        return rc;
    }
    files = json_object_get(doc, "files");
    json_array_foreach(files, i, e)
    {
        const char *rel = json_string_value(json_object_get(e, "path"));
        uint64_t want = ju64(e, "size"), size = 0, h = 0, wh = 0;
        char p[PATHMAX];
        int r;

        if (!rel || strstr(rel, "..") || rel[0] == '/') {
            problem(problems, "manifest entry %zu has a bad path", i);
            continue;
        }
        json_object_set(byname, rel, e);
        pathf(p, sizeof(p), "%s/%s", backup, rel);
        r = hash_file(sdb_io_posix(), p, &size, &h);
        if (r == -ENOENT) {
            problem(problems, "missing file: %s", rel);
            continue;
        }
        if (r < 0) {
            problem(problems, "cannot read %s: %s", rel, sdb_strerror(r));
            continue;
        }
        bytes += size;
        if (size != want) {
            problem(problems,
                    "size mismatch: %s is %" PRIu64 " bytes, manifest says "
                    "%" PRIu64,
                    rel, size, want);
            continue;
        }
        parse_hex64(json_string_value(json_object_get(e, "checksum")), &wh);
        if (h != wh)
            problem(problems, "checksum mismatch: %s", rel);
    }
    find_extra(backup, "", byname, problems);
    if (json_array_size(problems) == 0)
        run_fsck(backup, problems);
    if (json_array_size(problems) == 0) {
        struct chain c;
        sdb_error cerr = {0};

        if (chain_init(&c, doc, &cerr) == 0 &&
            build_chain(backup, wal_archive, &c, NULL) < 0)
            problem(problems, "%s", cerr.message);
        else if (c.end_lsn < c.backup_lsn)
            problem(problems,
                    "the backup's WAL ends at LSN %" PRIu64
                    " before its LSN %" PRIu64,
                    c.end_lsn, c.backup_lsn);
        if (cerr.code && json_array_size(problems) == 0)
            problem(problems, "%s", cerr.message);
        chain_free(&c);
    }
    if (trial && json_array_size(problems) == 0) {
        char scratch[PATHMAX], *slash;
        struct chain c;
        sdb_error terr = {0};

        pathf(scratch, sizeof(scratch), "%s", backup);
        while ((slash = strrchr(scratch, '/')) && slash[1] == 0)
            *slash = 0;
        slash = strrchr(scratch, '/');
        pathf(slash ? slash + 1 : scratch,
              sizeof(scratch) - (size_t)(slash ? slash + 1 - scratch : 0),
              ".stemedb-verify-%ld-%" PRId64, (long)getpid(), now_us());
        if (chain_init(&c, doc, &terr) == 0 &&
            build_chain(backup, NULL, &c, NULL) == 0 &&
            materialise(backup, &c, scratch, &terr) == 0 &&
            trial_open(scratch, NULL, NULL, &st, &terr) == 0) {
            opened = true;
            if (st.assertion_count != ju64(doc, "assertion_count"))
                problem(problems,
                        "trial restore holds %" PRIu64
                        " assertions, the manifest says %" PRIu64,
                        st.assertion_count, ju64(doc, "assertion_count"));
        } else {
            problem(problems, "trial restore failed: %s",
                    relative_to(terr.message, scratch));
        }
        chain_free(&c);
        rmrf(scratch);
    }
    rep = json_pack("{s:s, s:b, s:I, s:I, s:I, s:o}", "backup", backup, "ok",
                    json_array_size(problems) == 0, "files",
                    (json_int_t)json_array_size(files), "bytes",
                    (json_int_t)bytes, "lsn", (json_int_t)ju64(doc, "lsn"),
                    "problems", problems);
    if (rep && opened)
        json_object_set_new(rep, "trial_assertion_count",
                            json_integer((json_int_t)st.assertion_count));
    rc = json_array_size(problems) ? SDB_ECORRUPT : 0;
    if (rc)
        sdb_error_set(err, rc, "backup", "%zu problem(s), first: %s; in %s",
                      json_array_size(problems),
                      json_string_value(json_array_get(problems, 0)), backup);
    if (out)
        *out = rep;
    else
        json_decref(rep);
    json_decref(byname);
    json_decref(doc);
    return rc;
}

/* ---- restore ---- */

static int free_space_ok(const char *dir, uint64_t need, uint64_t *avail)
{
    struct statvfs sv;
    char parent[PATHMAX], *slash;

    pathf(parent, sizeof(parent), "%s", dir);
    slash = strrchr(parent, '/');
    if (slash == parent)
        parent[1] = 0;
    else if (slash)
        *slash = 0;
    else
        pathf(parent, sizeof(parent), ".");
    if (statvfs(parent, &sv) < 0)
        return -errno;
    *avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    return *avail >= need + need / 10 ? 0 : -ENOSPC;
}

int sdb_restore(const sdb_restore_opts *o, json_t **out, sdb_error *err)
{
    json_t *doc = NULL, *rep = NULL, *notes = json_array();
    struct chain c;
    char stamp_s[32], rdir[PATHMAX], aside[PATHMAX], lockp[PATHMAX], ts[32],
        dd[PATHMAX];
    uint64_t need = 0, avail = 0;
    double t0 = mono_s();
    int rc, lock_fd = -1;
    sdb_stats st = {0};
    bool had_old;

    if (out)
        *out = NULL;
    memset(&c, 0, sizeof(c));
    if (!o->backup || !o->data_dir) {
        json_decref(notes);
        return sdb_error_set(err, SDB_EINVAL, "", "backup and data_dir needed");
    }
    pathf(dd, sizeof(dd), "%s", o->data_dir);
    while (strlen(dd) > 1 && dd[strlen(dd) - 1] == '/')
        dd[strlen(dd) - 1] = 0;
    rc = sdb_backup_verify(o->backup, NULL, false, NULL, err);
    if (rc == 0)
        rc = load_manifest(o->backup, &doc, err);
    if (rc == 0)
        rc = chain_init(&c, doc, err);
    if (rc < 0)
        goto out;
    c.has_lsn = o->has_until_lsn;
    c.t_lsn = o->until_lsn;
    c.has_time = o->has_until_time;
    c.t_us = o->until_us;
    if (c.has_lsn && c.t_lsn < c.backup_lsn) {
        rc = sdb_error_set(err, SDB_EINVAL, "until_lsn",
                           "target LSN %" PRIu64
                           " is before this backup (LSN %" PRIu64
                           "); restore from an older backup",
                           c.t_lsn, c.backup_lsn);
        goto out;
    }
    if (c.has_time) {
        int64_t bts = 0;
        const char *s =
            json_string_value(json_object_get(doc, "lsn_timestamp"));
        if (s && sdb_time_parse(s, &bts) == 0 && bts > c.t_us) {
            char t[32];
            sdb_time_format(c.t_us, t);
            rc = sdb_error_set(err, SDB_EINVAL, "until",
                               "target time %s is before this backup (its "
                               "last record is from %s); restore from an "
                               "older backup",
                               t, s);
            goto out;
        }
    }
    rc = build_chain(o->backup, o->wal_archive, &c, notes);
    if (rc < 0)
        goto out;
    if (c.has_lsn && c.end_lsn < c.t_lsn) {
        rc = sdb_error_set(err, SDB_ENOTFOUND, "until_lsn",
                           "the WAL available ends at LSN %" PRIu64
                           ", before the target LSN %" PRIu64 "%s",
                           c.end_lsn, c.t_lsn,
                           o->wal_archive ? "" : " (give --wal-archive)");
        goto out;
    }
    if (c.stop && o->wal_archive)
        json_array_append_new(
            notes, json_string("the archive holds WAL after the target: give "
                               "the restored server a new WAL archive "
                               "directory so that the abandoned history is "
                               "kept"));
    if (c.has_time && !c.reached)
        json_array_append_new(notes,
                              json_string("the WAL ends before the target "
                                          "time: restoring everything "
                                          "available"));
    /* space: the backup's db + WAL chain */
    {
        json_t *files = json_object_get(doc, "files"), *e;
        size_t i;
        json_array_foreach(files, i, e) need += ju64(e, "size");
        for (i = 0; i < c.n; i++)
            need += c.v[i].take + c.v[i].tail_len;
    }
    rc = free_space_ok(dd, need, &avail);
    if (rc < 0) {
        sdb_error_set(err, rc, "data_dir",
                      "not enough free space beside %s: need about %" PRIu64
                      " bytes (+10%%), %" PRIu64 " available",
                      dd, need, avail);
        goto out;
    }
    /* refuse while a server holds the store */
    pathf(lockp, sizeof(lockp), "%s/LOCK", dd);
    if (exists(lockp)) {
        lock_fd = open(lockp, O_RDWR | O_CLOEXEC);
        if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
            rc = sdb_error_set(err, SDB_ELOCKED, "data_dir",
                               "%s is in use by a running StemeDB process; "
                               "stop it first",
                               dd);
            goto out;
        }
    }
    stamp(stamp_s);
    pathf(rdir, sizeof(rdir), "%s.restore-%s", dd, stamp_s);
    pathf(aside, sizeof(aside), "%s.backup.%s", dd, stamp_s);
    for (int i = 2; (exists(rdir) || exists(aside)) && i < 1000; i++) {
        pathf(rdir, sizeof(rdir), "%s.restore-%s-%d", dd, stamp_s, i);
        pathf(aside, sizeof(aside), "%s.backup.%s-%d", dd, stamp_s, i);
    }
    had_old = exists(dd);
    sdb_time_format(c.end_ts, ts);
    rep = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "backup",
                    o->backup, "data_dir", dd, "backup_lsn",
                    (json_int_t)c.backup_lsn, "target_lsn_reached",
                    (json_int_t)c.end_lsn, "wal_segments", (json_int_t)c.n,
                    "bytes", (json_int_t)need, "free_bytes", (json_int_t)avail,
                    "notes", json_incref(notes), "dry_run", o->dry_run);
    if (c.end_ts)
        json_object_set_new(rep, "target_time_reached", json_string(ts));
    {
        size_t na = 0;
        for (size_t i = 0; i < c.n; i++)
            na += c.v[i].archived;
        json_object_set_new(rep, "archived_segments_used",
                            json_integer((json_int_t)na));
    }
    if (o->dry_run) {
        json_object_set_new(rep, "would_restore_into", json_string(rdir));
        if (had_old)
            json_object_set_new(rep, "would_move_existing_to",
                                json_string(aside));
        goto out;
    }
    rc = materialise(o->backup, &c, rdir, err);
    if (rc == 0)
        rc = trial_open(rdir, o->log, o->log_arg, &st, err);
    if (rc == 0 && st.last_lsn != c.end_lsn)
        rc = sdb_error_set(err, SDB_ECORRUPT, "restore",
                           "the restored store ends at LSN %" PRIu64
                           ", expected %" PRIu64,
                           st.last_lsn, c.end_lsn);
    if (rc < 0) {
        json_array_append_new(
            notes, json_sprintf("the incomplete restore was left in %s for "
                                "inspection; the data directory was not "
                                "touched",
                                rdir));
        goto out;
    }
    if (had_old) {
        const sdb_io *io = sdb_io_posix();
        rc = io->rename(io->ctx, dd, aside);
        if (rc < 0) {
            sdb_error_set(err, rc, "data_dir", "cannot rename %s to %s: %s", dd,
                          aside, sdb_strerror(rc));
            goto out;
        }
        json_object_set_new(rep, "previous_data_moved_to", json_string(aside));
    }
    {
        const sdb_io *io = sdb_io_posix();
        rc = io->rename(io->ctx, rdir, dd);
        if (rc < 0) {
            sdb_error_set(err, rc, "data_dir", "cannot rename %s to %s: %s",
                          rdir, dd, sdb_strerror(rc));
            if (had_old)
                io->rename(io->ctx, aside, dd);
            goto out;
        }
        rc = sdb_io_fsync_parent(io, dd);
    }
    json_object_set_new(rep, "assertion_count",
                        json_integer((json_int_t)st.assertion_count));
    json_object_set_new(rep, "retraction_count",
                        json_integer((json_int_t)st.retraction_count));
    json_object_set_new(rep, "replayed",
                        json_integer((json_int_t)st.replayed_on_open));
    json_object_set_new(rep, "lsn", json_integer((json_int_t)st.last_lsn));
out:
    if (rep)
        json_object_set_new(rep, "seconds", json_real(mono_s() - t0));
    if (lock_fd >= 0)
        close(lock_fd);
    chain_free(&c);
    json_decref(doc);
    json_decref(notes);
    if (out && rc == 0)
        *out = rep;
    else
        json_decref(rep);
    return rc;
}

/* ---- retention ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sdb_backup_expire(const char *dest, unsigned keep, const char *archive,
                      bool dry_run, json_t **out, sdb_error *err)
{
    DIR *d = opendir(dest);
    struct dirent *de;
    char **names = NULL, p[PATHMAX];
    size_t n = 0;
    json_t *removed = json_array(), *kept = json_array(),
           *wal_removed = json_array();
    uint64_t min_lsn = UINT64_MAX, store = 0;
    int rc = 0;

    if (out)
        *out = NULL;
    if (!d) {
        rc = sdb_error_set(err, -errno, "dest", "cannot read %s: %s", dest,
                           strerror(errno));
        goto done;
    }
    if (keep == 0) {
        closedir(d);
        rc = sdb_error_set(err, SDB_EINVAL, "keep", "--keep must be >= 1");
        goto done;
    }
    while ((de = readdir(d)) != NULL) {
        char **nn;
        if (strncmp(de->d_name, "stemedb-backup-", 15))
            continue;
        nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn)
            break;
        names = nn;
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_str);
    /* newest first: keep complete ones */
    {
        unsigned k = 0;
        for (size_t i = n; i-- > 0;) {
            json_t *doc = NULL;
            sdb_error e2 = {0};
            pathf(p, sizeof(p), "%s/%s", dest, names[i]);
            if (k < keep && load_manifest(p, &doc, &e2) == 0) {
                uint64_t l = ju64(doc, "lsn"), s = 0;
                parse_hex64(json_string_value(json_object_get(doc, "store_id")),
                            &s);
                if (!store)
                    store = s;
                if (l < min_lsn)
                    min_lsn = l;
                k++;
                json_array_append_new(kept, json_string(names[i]));
            } else if (k >= keep) {
                json_array_append_new(removed, json_string(names[i]));
                if (!dry_run)
                    rmrf(p);
            }
            json_decref(doc);
        }
    }
    if (archive && store && min_lsn != UINT64_MAX) {
        uint64_t *seqs = NULL;
        size_t an = 0;
        char name[40], nx[PATHMAX];

        rc = list_wal(archive, &seqs, &an);
        if (rc < 0) {
            sdb_error_set(err, rc, "wal_archive", "cannot list %s", archive);
            goto done;
        }
        for (size_t i = 0; i + 1 < an; i++) {
            uint64_t hs, st, fl;
            if (seqs[i + 1] != seqs[i] + 1)
                break; /* never reason across a gap */
            sdb_wal_segment_name(seqs[i + 1], name);
            pathf(nx, sizeof(nx), "%s/%s", archive, name);
            if (read_header(nx, &hs, &st, &fl) < 0 || st != store || fl == 0 ||
                fl - 1 > min_lsn)
                break;
            sdb_wal_segment_name(seqs[i], name);
            pathf(nx, sizeof(nx), "%s/%s", archive, name);
            json_array_append_new(wal_removed, json_string(name));
            if (!dry_run)
                unlink(nx);
        }
        free(seqs);
        if (!dry_run)
            sdb_io_fsync_dir(sdb_io_posix(), archive);
    }
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc == 0 && out)
        *out =
            json_pack("{s:o, s:o, s:o, s:I, s:b}", "kept", kept, "removed",
                      removed, "wal_removed", wal_removed, "oldest_needed_lsn",
                      (json_int_t)(min_lsn == UINT64_MAX ? 0 : min_lsn + 1),
                      "dry_run", dry_run);
    else {
        json_decref(kept);
        json_decref(removed);
        json_decref(wal_removed);
    }
    if (!dest)
        return rc;
    if (rc == 0 && !dry_run)
        sdb_io_fsync_dir(sdb_io_posix(), dest);
    return rc;
}

/* ---- status file ---- */

int sdb_backup_record_status(const char *data_dir, bool ok,
                             const char *backup_path, uint64_t lsn)
{
    char path[PATHMAX], *s;
    json_t *doc;
    json_error_t jerr;
    int rc;
    time_t now = time(NULL);

    pathf(path, sizeof(path), "%s/backup-status.json", data_dir);
    doc = json_load_file(path, 0, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    if (!doc)
        return SDB_ENOMEM;
    if (!json_is_integer(json_object_get(doc, "failures_total")))
        json_object_set_new(doc, "failures_total", json_integer(0));
    if (!json_is_integer(json_object_get(doc, "last_success_unix")))
        json_object_set_new(doc, "last_success_unix", json_integer(0));
    if (ok) {
        json_object_set_new(doc, "last_success_unix",
                            json_integer((json_int_t)now));
        json_object_set_new(doc, "last_backup",
                            json_string(backup_path ? backup_path : ""));
        json_object_set_new(doc, "last_lsn", json_integer((json_int_t)lsn));
    } else {
        json_object_set_new(doc, "failures_total",
                            json_integer(json_integer_value(json_object_get(
                                             doc, "failures_total")) +
                                         1));
        json_object_set_new(doc, "last_failure_unix",
                            json_integer((json_int_t)now));
    }
    s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    if (!s)
        return SDB_ENOMEM;
    rc = sdb_io_write_file_atomic(sdb_io_posix(), data_dir,
                                  "backup-status.json", s, strlen(s));
    free(s);
    return rc;
}
