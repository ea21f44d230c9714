/*
 * wal.c - the write-ahead log (format and rules in wal.h and
 * docs/format.md).  Owns wal/: segment files, their headers, record
 * framing, the recovery scan, torn-tail zeroing, segment switch, archive
 * copies and recycling.  It knows nothing of what the payload means.
 */
#define _GNU_SOURCE
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "hash.h"
#include "model.h"

static const unsigned char wal_magic[8] = {'S', 'T', 'M', 'D',
                                           'B', 'W', 'A', 'L'};

#define ZERO_STEP ((size_t)1 << 20) /* see zero_ahead */

struct wal_seg {
    uint64_t seq;
    uint64_t first_lsn;
    uint64_t last_lsn; /* first_lsn - 1 while empty */
    uint64_t used;     /* bytes up to the end of the last record */
    bool sealed;
    bool archived;
};

struct sdb_wal {
    struct sdb_wal_config cfg;
    char *dir;
    char *archive_dir;
    pthread_mutex_t lock; /* protects segs, n_segs and the counters */
    struct wal_seg *segs; /* sorted by seq; the last is active when fd>=0 */
    size_t n_segs, cap_segs;
    int fd;          /* active segment, -1 if none */
    uint64_t zeroed; /* the active segment holds written zeros (or records)
                        up to here; the rest is only preallocated */
    uint64_t active_first_write_ms;
    uint64_t bytes_written;
    uint64_t archived_total;
    uint64_t archive_failures;
};

static void wal_log(struct sdb_wal *wal, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wal_log(struct sdb_wal *wal, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!wal->cfg.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wal->cfg.log(wal->cfg.log_arg, level, msg);
}

void sdb_wal_segment_name(uint64_t seq, char out[40])
{
    snprintf(out, 40, "segment-%016" PRIx64 ".wal", seq);
}

uint64_t sdb_wal_seed(uint64_t store_id, uint64_t seq)
{
    return store_id ^ (seq * 0x9e3779b97f4a7c15ULL);
}

static void header_encode(unsigned char *h, uint64_t store_id, uint64_t seq,
                          uint64_t first_lsn)
{
    memset(h, 0, SDB_WAL_HEADER_SIZE);
    memcpy(h, wal_magic, 8);
    sdb_put_u32(h + 8, SDB_WAL_VERSION);
    sdb_put_u32(h + 12, SDB_WAL_HEADER_SIZE);
    sdb_put_u64(h + 16, store_id);
    sdb_put_u64(h + 24, seq);
    sdb_put_u64(h + 32, first_lsn);
    sdb_put_u64(h + 40, (uint64_t)sdb_now_us());
    sdb_put_u64(h + 56, sdb_hash64(h, 56, 0));
}

int sdb_wal_parse_header(const unsigned char *h, uint64_t *seq,
                         uint64_t *store_id, uint64_t *first_lsn)
{
    if (memcmp(h, wal_magic, 8) != 0)
        return SDB_ECORRUPT;
    if (sdb_get_u64(h + 56) != sdb_hash64(h, 56, 0))
        return SDB_ECORRUPT;
    if (sdb_get_u32(h + 8) != SDB_WAL_VERSION ||
        sdb_get_u32(h + 12) != SDB_WAL_HEADER_SIZE)
        return SDB_EVERSION;
    *store_id = sdb_get_u64(h + 16);
    *seq = sdb_get_u64(h + 24);
    *first_lsn = sdb_get_u64(h + 32);
    return 0;
}

int sdb_wal_check_record(const unsigned char *buf, size_t len, size_t off,
                         uint64_t seed, size_t *rec_len, uint64_t *lsn,
                         uint32_t *count)
{
    const unsigned char *r = buf + off;
    uint32_t plen;

    if (off > len || len - off < SDB_WAL_REC_HEADER)
        return 0;
    if (sdb_get_u32(r) != SDB_WAL_REC_MAGIC || r[4] != 1 || r[5] || r[6] ||
        r[7])
        return 0;
    plen = sdb_get_u32(r + 8);
    if (plen == 0 || plen > SDB_WAL_MAX_PAYLOAD ||
        plen > len - off - SDB_WAL_REC_HEADER)
        return 0;
    if (sdb_get_u32(r + 12) == 0 || sdb_get_u64(r + 16) == 0)
        return 0;
    if (sdb_hash64_2(r, 24, r + SDB_WAL_REC_HEADER, plen, seed) !=
        sdb_get_u64(r + 24))
        return 0;
    *rec_len = SDB_WAL_REC_HEADER + plen;
    *lsn = sdb_get_u64(r + 16);
    *count = sdb_get_u32(r + 12);
    return 1;
}

static int seg_push(struct sdb_wal *wal, const struct wal_seg *s)
{
    if (wal->n_segs == wal->cap_segs) {
        size_t cap = wal->cap_segs ? wal->cap_segs * 2 : 16;
        struct wal_seg *n = realloc(wal->segs, cap * sizeof(*n));

        if (!n)
            return SDB_ENOMEM;
        wal->segs = n;
        wal->cap_segs = cap;
    }
    wal->segs[wal->n_segs++] = *s;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Parse "segment-<16 hex>.wal" strictly. */
static bool parse_segment_name(const char *name, uint64_t *seq)
{
    char check[40];

    if (strlen(name) != 28 || strncmp(name, "segment-", 8) != 0)
        return false;
    if (strcmp(name + 24, ".wal") != 0)
        return false;
    for (int i = 8; i < 24; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    *seq = strtoull(name + 8, NULL, 16);
    sdb_wal_segment_name(*seq, check);
    return strcmp(check, name) == 0;
}

/* Sorted sequence numbers of the segment files in dir. */
static int list_segments(const char *dir, uint64_t **out, size_t *n,
                         sdb_error *err)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t *seqs = NULL, seq;
    size_t cnt = 0, cap = 0;

    if (!d)
        return sdb_error_set(err, -errno, "wal_dir", "cannot open %s: %s", dir,
                             strerror(errno));
    while ((de = readdir(d)) != NULL) {
        if (!parse_segment_name(de->d_name, &seq))
            continue;
        if (cnt == cap) {
            uint64_t *ns;
            cap = cap ? cap * 2 : 16;
            ns = realloc(seqs, cap * sizeof(*ns));
            if (!ns) {
                free(seqs);
                closedir(d);
                return SDB_ENOMEM;
            }
            seqs = ns;
        }
        seqs[cnt++] = seq;
    }
    closedir(d);
    if (cnt)
        qsort(seqs, cnt, sizeof(*seqs), cmp_u64);
    *out = seqs;
    *n = cnt;
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Offset of a valid record at or after from with lsn >= min_lsn, or 0. */
static size_t find_valid_after(const unsigned char *buf, size_t len,
                               size_t from, uint64_t seed, uint64_t min_lsn)
{
    const unsigned char magic[4] = {0x53, 0x4D, 0x44, 0x52};

    while (from + SDB_WAL_REC_HEADER <= len) {
        const unsigned char *p = memmem(buf + from, len - from, magic, 4);
        size_t off, rl;
        uint64_t lsn;
        uint32_t cnt;

        if (!p)
            return 0;
        off = (size_t)(p - buf);
        if (sdb_wal_check_record(buf, len, off, seed, &rl, &lsn, &cnt) &&
            lsn >= min_lsn)
            return off;
        from = off + 1;
    }
    return 0;
}

/* Zero [from, end of nonzero data) of the newest segment and sync it. */
static int zero_tail(struct sdb_wal *wal, const char *path,
                     const unsigned char *buf, size_t len, size_t from)
{
    const sdb_io *io = wal->cfg.io;
    size_t end = len;
    unsigned char *zeros;
    int fd, rc;

    while (end > from && buf[end - 1] == 0)
        end--;
    if (end <= from)
        return 0;
    zeros = calloc(1, end - from);
    if (!zeros)
        return SDB_ENOMEM;
    fd = io->open(io->ctx, path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        rc = fd;
        goto free_zeros;
    }
    rc = sdb_io_pwrite_all(io, fd, zeros, end - from, (off_t)from);
    if (rc == 0)
        rc = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    if (rc == 0)
        wal_log(wal, SDB_LOG_WARN,
                "WAL: zeroed torn tail of %s at offset %zu (%zu bytes)", path,
                from, end - from);
free_zeros:
    free(zeros);
    return rc;
}

struct scan_ctx {
    struct sdb_wal *wal;
    bool read_only;
    uint64_t after_lsn;
    uint64_t expect; /* next LSN expected, 0 before the first record */
    sdb_wal_record_fn fn;
    void *arg;
    sdb_error *err;
};

/* Scan the records of one segment image; fill s->used and s->last_lsn. */
static int scan_records(struct scan_ctx *sc, const char *path,
                        const unsigned char *buf, size_t len, bool newest,
                        struct wal_seg *s)
{
    uint64_t seed = sdb_wal_seed(sc->wal->cfg.store_id, s->seq);
    size_t off = SDB_WAL_HEADER_SIZE, rl, bad;
    uint64_t lsn;
    uint32_t cnt;
    int rc;

    while (sdb_wal_check_record(buf, len, off, seed, &rl, &lsn, &cnt) &&
           lsn == sc->expect) {
        if (lsn + cnt - 1 > sc->after_lsn && sc->fn) {
            rc = sc->fn(sc->arg, lsn, cnt, buf + off + SDB_WAL_REC_HEADER,
                        rl - SDB_WAL_REC_HEADER);
            if (rc < 0) {
                if (sc->err && sc->err->code == 0)
                    sdb_error_set(sc->err, rc, "wal",
                                  "%s @%zu: record LSN %" PRIu64
                                  " could not be applied: %s",
                                  path, off, lsn, sdb_strerror(rc));
                return rc;
            }
        }
        sc->expect = lsn + cnt;
        s->last_lsn = lsn + cnt - 1;
        off += rl;
    }
    s->used = off;
    if (off >= len || all_zero(buf + off, len - off))
        return 0;
    bad = find_valid_after(buf, len, off + 1, seed, sc->expect);
    if (!newest || bad)
        return sdb_error_set(
            sc->err, SDB_ECORRUPT, "wal",
            "WAL checksum mismatch or invalid record in %s at offset %zu "
            "(expected LSN %" PRIu64 ")%s; run stemedb-fsck",
            path, off, sc->expect, bad ? ", with valid records after it" : "");
    if (sc->read_only)
        return 0;
    return zero_tail(sc->wal, path, buf, len, off);
}

/* Read and check one segment file; the newest may have a torn header. */
static int scan_segment(struct scan_ctx *sc, uint64_t seq, bool newest)
{
    struct sdb_wal *wal = sc->wal;
    char name[40], *path = NULL, *buf = NULL;
    size_t len = 0;
    struct wal_seg s = {.seq = seq};
    uint64_t hseq, hstore, first;
    int rc;

    sdb_wal_segment_name(seq, name);
    if (asprintf(&path, "%s/%s", wal->dir, name) < 0)
        return SDB_ENOMEM;
    rc = sdb_io_read_file(wal->cfg.io, path, (size_t)1 << 31, &buf, &len);
    if (rc < 0) {
        sdb_error_set(sc->err, rc, "wal", "cannot read %s: %s", path,
                      sdb_strerror(rc));
        goto free_path;
    }
    rc = len < SDB_WAL_HEADER_SIZE
             ? SDB_ECORRUPT
             : sdb_wal_parse_header((unsigned char *)buf, &hseq, &hstore,
                                    &first);
    if (rc == SDB_ECORRUPT && newest && !sc->read_only &&
        all_zero((unsigned char *)buf + (len < 64 ? len : 64),
                 len < 64 ? 0 : len - 64)) {
        /* a switch that crashed before its header was durable */
        wal_log(wal, SDB_LOG_WARN, "WAL: removing %s: torn segment header",
                path);
        rc = wal->cfg.io->unlink(wal->cfg.io->ctx, path);
        if (rc == 0)
            rc = sdb_io_fsync_dir(wal->cfg.io, wal->dir);
        goto free_buf;
    }
    if (rc == SDB_EVERSION) {
        sdb_error_set(sc->err, rc, "wal",
                      "%s at offset 0: WAL format version not supported by "
                      "this build (%s)",
                      path, SDB_VERSION);
        goto free_buf;
    }
    if (rc < 0) {
        sdb_error_set(sc->err, rc, "wal",
                      "WAL magic byte validation failed: bad header in %s "
                      "at offset 0; run stemedb-fsck",
                      path);
        goto free_buf;
    }
    if (hseq != seq || hstore != wal->cfg.store_id) {
        rc = sdb_error_set(sc->err, SDB_ECORRUPT, "wal",
                           "%s at offset 0: header names segment %" PRIu64
                           " of store %016" PRIx64 " (stale or misplaced "
                           "file); run stemedb-fsck",
                           path, hseq, hstore);
        goto free_buf;
    }
    if (sc->expect == 0 && first > sc->after_lsn + 1)
        sc->expect = sc->after_lsn + 1; /* records after the checkpoint lost */
    else if (sc->expect == 0)
        sc->expect = first;
    if (first != sc->expect) {
        rc =
            sdb_error_set(sc->err, SDB_ECORRUPT, "wal",
                          "LSN gap: %s at offset 0 starts at LSN %" PRIu64
                          " but LSN %" PRIu64 " was expected; run stemedb-fsck",
                          path, first, sc->expect);
        goto free_buf;
    }
    s.first_lsn = first;
    s.last_lsn = first - 1;
    s.sealed = true;
    rc = scan_records(sc, path, (unsigned char *)buf, len, newest, &s);
    if (rc == 0)
        rc = seg_push(wal, &s);
free_buf:
    free(buf);
free_path:
    free(path);
    return rc;
}

static struct sdb_wal *wal_new(const struct sdb_wal_config *cfg)
{
    struct sdb_wal *wal = calloc(1, sizeof(*wal));

    if (!wal)
        return NULL;
    wal->cfg = *cfg;
    wal->fd = -1;
    wal->dir = strdup(cfg->dir);
    wal->archive_dir = cfg->archive_dir ? strdup(cfg->archive_dir) : NULL;
    if (!wal->dir || (cfg->archive_dir && !wal->archive_dir)) {
        free(wal->dir);
        free(wal->archive_dir);
        free(wal);
        return NULL;
    }
    wal->cfg.dir = wal->dir;
    wal->cfg.archive_dir = wal->archive_dir;
    pthread_mutex_init(&wal->lock, NULL);
    return wal;
}

int sdb_wal_open(const struct sdb_wal_config *cfg, bool read_only,
                 uint64_t after_lsn, sdb_wal_record_fn fn, void *arg,
                 struct sdb_wal **out, uint64_t *out_last_lsn, sdb_error *err)
{
    struct sdb_wal *wal = wal_new(cfg);
    struct scan_ctx sc = {.read_only = read_only,
                          .after_lsn = after_lsn,
                          .fn = fn,
                          .arg = arg,
                          .err = err};
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc;

    *out = NULL;
    if (!wal)
        return SDB_ENOMEM;
    sc.wal = wal;
    rc = list_segments(wal->dir, &seqs, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0 && seqs[i] != seqs[i - 1] + 1) {
            rc = sdb_error_set(err, SDB_ECORRUPT, "wal",
                               "WAL segment missing between sequence %" PRIu64
                               " and %" PRIu64 " in %s; run stemedb-fsck",
                               seqs[i - 1], seqs[i], wal->dir);
            break;
        }
        rc = scan_segment(&sc, seqs[i], i + 1 == n);
    }
    free(seqs);
    if (rc < 0) {
        sdb_wal_close(wal);
        return rc;
    }
    *out_last_lsn = sc.expect > after_lsn + 1 ? sc.expect - 1 : after_lsn;
    *out = wal;
    return 0;
}

void sdb_wal_close(struct sdb_wal *wal)
{
    if (!wal)
        return;
    if (wal->fd >= 0)
        wal->cfg.io->close(wal->cfg.io->ctx, wal->fd);
    pthread_mutex_destroy(&wal->lock);
    free(wal->segs);
    free(wal->dir);
    free(wal->archive_dir);
    free(wal);
}

/* Create, preallocate and sync a new segment file; return its fd. */
static int create_segment(struct sdb_wal *wal, uint64_t seq, uint64_t first_lsn)
{
    const sdb_io *io = wal->cfg.io;
    unsigned char h[SDB_WAL_HEADER_SIZE];
    char name[40], *path;
    int fd, rc;

    sdb_wal_segment_name(seq, name);
    if (asprintf(&path, "%s/%s", wal->dir, name) < 0)
        return SDB_ENOMEM;
    fd = io->open(io->ctx, path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = fd;
        goto free_path;
    }
    rc = io->fallocate(io->ctx, fd, 0, (off_t)wal->cfg.segment_bytes);
    header_encode(h, wal->cfg.store_id, seq, first_lsn);
    if (rc == 0)
        rc = sdb_io_pwrite_all(io, fd, h, sizeof(h), 0);
    if (rc == 0)
        rc = io->fsync(io->ctx, fd);
    if (rc == 0)
        rc = sdb_io_fsync_dir(io, wal->dir);
    if (rc < 0) {
        io->close(io->ctx, fd);
        goto free_path;
    }
    rc = fd;
free_path:
    free(path);
    return rc;
}

int sdb_wal_rotate(struct sdb_wal *wal, uint64_t next_lsn)
{
    struct wal_seg s = {0};
    int fd, rc;

    s.seq = wal->n_segs ? wal->segs[wal->n_segs - 1].seq + 1 : 1;
    fd = create_segment(wal, s.seq, next_lsn);
    if (fd < 0)
        return fd;
    s.first_lsn = next_lsn;
    s.last_lsn = next_lsn - 1;
    s.used = SDB_WAL_HEADER_SIZE;
    pthread_mutex_lock(&wal->lock);
    if (wal->n_segs)
        wal->segs[wal->n_segs - 1].sealed = true;
    rc = seg_push(wal, &s);
    pthread_mutex_unlock(&wal->lock);
    if (rc < 0) {
        wal->cfg.io->close(wal->cfg.io->ctx, fd);
        return rc;
    }
    if (wal->fd >= 0)
        wal->cfg.io->close(wal->cfg.io->ctx, wal->fd);
    wal->fd = fd;
    wal->zeroed = SDB_WAL_HEADER_SIZE;
    wal->active_first_write_ms = 0;
    return 0;
}

/*
 * Write zeros over the preallocated space of the active segment up to the
 * next ZERO_STEP boundary at or past `end` (never below wal->zeroed, which
 * is at or past the last record).  Preallocated blocks are "unwritten"
 * extents on ext4 and XFS: the first write into one makes fdatasync also
 * write the extent tree, about a fifth of its time here.  Writing a step
 * of zeros ahead costs that once per step instead of once per group
 * commit; the zeros reach the disk with the next group's fdatasync.
 */
static int zero_ahead(struct sdb_wal *wal, uint64_t end)
{
    static const unsigned char zeros[ZERO_STEP];
    uint64_t to;

    if (end <= wal->zeroed || wal->zeroed >= wal->cfg.segment_bytes)
        return 0;
    to = (end + ZERO_STEP - 1) / ZERO_STEP * ZERO_STEP;
    if (to > wal->cfg.segment_bytes)
        to = wal->cfg.segment_bytes; /* past it, the record extends the file */
    while (wal->zeroed < to) {
        size_t n = to - wal->zeroed > ZERO_STEP ? ZERO_STEP
                                                : (size_t)(to - wal->zeroed);
        int rc = sdb_io_pwrite_all(wal->cfg.io, wal->fd, zeros, n,
                                   (off_t)wal->zeroed);
        if (rc < 0)
            return rc;
        wal->zeroed += n;
    }
    return 0;
}

int sdb_wal_append(struct sdb_wal *wal, uint64_t lsn, uint32_t count,
                   const void *payload, size_t len, uint64_t *out_sync_ns)
{
    const sdb_io *io = wal->cfg.io;
    unsigned char h[SDB_WAL_REC_HEADER];
    struct wal_seg *s;
    struct timespec t0, t1;
    uint64_t off;
    int rc;

    if (len == 0 || len > SDB_WAL_MAX_PAYLOAD || count == 0)
        return SDB_EINVAL;
    s = wal->n_segs ? &wal->segs[wal->n_segs - 1] : NULL;
    if (wal->fd < 0 || !s ||
        (s->used > SDB_WAL_HEADER_SIZE &&
         s->used + SDB_WAL_REC_HEADER + len > wal->cfg.segment_bytes)) {
        rc = sdb_wal_rotate(wal, lsn);
        if (rc < 0)
            return rc;
        s = &wal->segs[wal->n_segs - 1];
    }
    if (lsn != s->last_lsn + 1)
        return SDB_EINVAL;
    memset(h, 0, sizeof(h));
    sdb_put_u32(h, SDB_WAL_REC_MAGIC);
    h[4] = 1;
    sdb_put_u32(h + 8, (uint32_t)len);
    sdb_put_u32(h + 12, count);
    sdb_put_u64(h + 16, lsn);
    sdb_put_u64(h + 24, sdb_hash64_2(h, 24, payload, len,
                                     sdb_wal_seed(wal->cfg.store_id, s->seq)));
    off = s->used;
    rc = zero_ahead(wal, off + sizeof(h) + len);
    if (rc == 0)
        rc = sdb_io_pwrite_all(io, wal->fd, h, sizeof(h), (off_t)off);
    if (rc == 0)
        rc = sdb_io_pwrite_all(io, wal->fd, payload, len,
                               (off_t)(off + sizeof(h)));
    if (rc < 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = io->fdatasync(io->ctx, wal->fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (out_sync_ns)
        *out_sync_ns = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                  (t1.tv_nsec - t0.tv_nsec));
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&wal->lock);
    s->used = off + sizeof(h) + len;
    s->last_lsn = lsn + count - 1;
    wal->bytes_written += sizeof(h) + len;
    pthread_mutex_unlock(&wal->lock);
    if (!wal->active_first_write_ms)
        wal->active_first_write_ms = sdb_mono_ms();
    return 0;
}

uint64_t sdb_wal_active_used(struct sdb_wal *wal)
{
    if (wal->fd < 0 || !wal->n_segs)
        return 0;
    return wal->segs[wal->n_segs - 1].used - SDB_WAL_HEADER_SIZE;
}

uint64_t sdb_wal_active_age_ms(struct sdb_wal *wal)
{
    if (!wal->active_first_write_ms)
        return 0;
    return sdb_mono_ms() - wal->active_first_write_ms;
}

int sdb_wal_recycle(struct sdb_wal *wal, uint64_t lsn)
{
    const sdb_io *io = wal->cfg.io;
    int removed = 0, rc = 0;
    char name[40], *path;

    pthread_mutex_lock(&wal->lock);
    while (wal->n_segs > 1 && rc == 0) {
        struct wal_seg *s = &wal->segs[0];

        if (!s->sealed || s->last_lsn > lsn ||
            (wal->archive_dir && !s->archived))
            break;
        sdb_wal_segment_name(s->seq, name);
        if (asprintf(&path, "%s/%s", wal->dir, name) < 0) {
            rc = SDB_ENOMEM;
            break;
        }
        rc = io->unlink(io->ctx, path);
        free(path);
        if (rc == -ENOENT)
            rc = 0;
        if (rc == 0) {
            memmove(wal->segs, wal->segs + 1,
                    (wal->n_segs - 1) * sizeof(*wal->segs));
            wal->n_segs--;
            removed++;
        }
    }
    pthread_mutex_unlock(&wal->lock);
    if (removed && rc == 0)
        rc = sdb_io_fsync_dir(io, wal->dir);
    return rc < 0 ? rc : removed;
}

/* Copy the used bytes of one sealed segment into the archive. */
static int archive_one(struct sdb_wal *wal, uint64_t seq, uint64_t used)
{
    const sdb_io *io = wal->cfg.io;
    char name[40], *src = NULL, *tmp = NULL, *dst = NULL;
    unsigned char *buf = NULL;
    int in = -1, out = -1, rc = SDB_ENOMEM;

    sdb_wal_segment_name(seq, name);
    if (asprintf(&src, "%s/%s", wal->dir, name) < 0 ||
        asprintf(&tmp, "%s/%s.tmp", wal->archive_dir, name) < 0 ||
        asprintf(&dst, "%s/%s", wal->archive_dir, name) < 0 ||
        !(buf = malloc(used)))
        goto out;
    rc = in = io->open(io->ctx, src, O_RDONLY | O_CLOEXEC, 0);
    if (rc < 0)
        goto out;
    rc = sdb_io_pread_all(io, in, buf, used, 0);
    if (rc < 0)
        goto out;
    rc = out =
        io->open(io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rc < 0)
        goto out;
    rc = sdb_io_pwrite_all(io, out, buf, used, 0);
    if (rc == 0)
        rc = io->fsync(io->ctx, out);
    if (rc == 0)
        rc = io->rename(io->ctx, tmp, dst);
    if (rc == 0)
        rc = sdb_io_fsync_dir(io, wal->archive_dir);
out:
    if (in >= 0)
        io->close(io->ctx, in);
    if (out >= 0)
        io->close(io->ctx, out);
    if (rc < 0 && tmp)
        io->unlink(io->ctx, tmp);
    free(buf);
    free(src);
    free(tmp);
    free(dst);
    return rc;
}

int sdb_wal_archive_pending(struct sdb_wal *wal)
{
    int copied = 0, rc = 0;

    if (!wal->archive_dir)
        return 0;
    for (;;) {
        uint64_t seq = 0, used = 0;
        bool found = false;

        pthread_mutex_lock(&wal->lock);
        for (size_t i = 0; i < wal->n_segs; i++) {
            if (wal->segs[i].sealed && !wal->segs[i].archived) {
                seq = wal->segs[i].seq;
                used = wal->segs[i].used;
                found = true;
                break;
            }
        }
        pthread_mutex_unlock(&wal->lock);
        if (!found)
            break;
        rc = archive_one(wal, seq, used);
        pthread_mutex_lock(&wal->lock);
        if (rc < 0) {
            wal->archive_failures++;
        } else {
            for (size_t i = 0; i < wal->n_segs; i++)
                if (wal->segs[i].seq == seq)
                    wal->segs[i].archived = true;
            wal->archived_total++;
        }
        pthread_mutex_unlock(&wal->lock);
        if (rc < 0) {
            wal_log(wal, SDB_LOG_ERROR,
                    "WAL archive of segment %" PRIu64 " to %s failed: %s", seq,
                    wal->archive_dir, sdb_strerror(rc));
            return rc;
        }
        wal_log(wal, SDB_LOG_INFO, "WAL: archived segment %" PRIu64 " to %s",
                seq, wal->archive_dir);
        copied++;
    }
    return copied;
}

void sdb_wal_get_stats(struct sdb_wal *wal, struct sdb_wal_stats *out)
{
    pthread_mutex_lock(&wal->lock);
    out->segments = wal->n_segs;
    out->archived = wal->archived_total;
    out->archive_failures = wal->archive_failures;
    out->bytes_written = wal->bytes_written;
    pthread_mutex_unlock(&wal->lock);
}
