/*
 * fuzz_fsck_decoders.c - libFuzzer target for the decoders stemedb-fsck
 * runs on untrusted bytes (RELIABILITY.md M8): the WAL segment checker
 * (header, framing, payload records, zeros after the end), the concept
 * segment checker (idx header and entries against their records),
 * sdb_codec_unpack and sdb_meta_parse.
 *
 * The first input byte picks the target.  Checksums stop a fuzzer at the
 * framing, so two modes wrap the input in valid frames (WAL records with
 * correct checksums; idx entries with correct hashes) to reach the record
 * decoding behind them.  Built only with -DSDB_FUZZ=ON and clang.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "hash.h"
#include "meta.h"
#include "segment.h"
#include "verify.h"
#include "wal.h"

#define STORE 0x0123456789abcdefULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_unpack(const uint8_t *p, size_t n)
{
    size_t off = 0, used;

    while (off < n) {
        struct sdb_record rec;
        sdb_error err = {0};

        if (sdb_codec_unpack(p + off, n - off, &used, &rec, &err) < 0)
            break;
        sdb_record_release(&rec);
        if (used == 0)
            break;
        off += used;
    }
}

static void fuzz_meta(const uint8_t *p, size_t n)
{
    struct sdb_meta m;
    sdb_error err = {0};

    (void)sdb_meta_parse((const char *)p, n, &m, &err);
}

/* Split the input at a position taken from its first two bytes. */
static void split(const uint8_t *p, size_t n, const uint8_t **a, size_t *na,
                  const uint8_t **b, size_t *nb)
{
    size_t cut = n >= 2 ? ((size_t)p[0] | (size_t)p[1] << 8) : 0;

    p += n >= 2 ? 2 : n;
    n -= n >= 2 ? 2 : n;
    if (cut > n)
        cut = n;
    *a = p;
    *na = cut;
    *b = p + cut;
    *nb = n - cut;
}

/* A WAL image: valid header, then the input cut into checksummed frames
 * (each chunk: 1 byte length unit, 1 byte count, payload). */
static void fuzz_wal_framed(const uint8_t *p, size_t n)
{
    size_t cap = SDB_WAL_HEADER_SIZE + n * 40 + 256, len, pos = 0;
    unsigned char *img = calloc(1, cap), *h = img;
    uint64_t lsn = 1, seed = sdb_wal_seed(STORE, 1);

    if (!img)
        return;
    memcpy(h, "STMDBWAL", 8);
    sdb_put_u32(h + 8, SDB_WAL_VERSION);
    sdb_put_u32(h + 12, SDB_WAL_HEADER_SIZE);
    sdb_put_u64(h + 16, STORE);
    sdb_put_u64(h + 24, 1);
    sdb_put_u64(h + 32, 1);
    sdb_put_u64(h + 56, sdb_hash64(h, 56, 0));
    len = SDB_WAL_HEADER_SIZE;
    while (pos + 2 <= n) {
        size_t plen = (size_t)p[pos] + 1;
        uint32_t cnt = (uint32_t)(p[pos + 1] % 4) + 1;
        unsigned char *r = img + len;

        pos += 2;
        if (plen > n - pos)
            plen = n - pos;
        if (plen == 0 || len + SDB_WAL_REC_HEADER + plen > cap - 64)
            break;
        memset(r, 0, SDB_WAL_REC_HEADER);
        sdb_put_u32(r, SDB_WAL_REC_MAGIC);
        r[4] = 1;
        sdb_put_u32(r + 8, (uint32_t)plen);
        sdb_put_u32(r + 12, cnt);
        sdb_put_u64(r + 16, lsn);
        memcpy(r + SDB_WAL_REC_HEADER, p + pos, plen);
        sdb_put_u64(r + 24,
                    sdb_hash64_2(r, 24, r + SDB_WAL_REC_HEADER, plen, seed));
        len += SDB_WAL_REC_HEADER + plen;
        lsn += cnt;
        pos += plen;
    }
    len += 64; /* zeros after the end */
    (void)sdb_verify_wal_image(img, len, STORE, 1, true);
    free(img);
}

/* A segment pair: the input is the .msgpack; entries cut it into records
 * with correct hashes at lengths taken from its own bytes. */
static void fuzz_segment_framed(const uint8_t *p, size_t n, const char *cp)
{
    uint64_t chash =
        *cp ? sdb_hash64(cp, strlen(cp), 0)
            : sdb_hash64(SDB_RETRACTIONS_DIR, strlen(SDB_RETRACTIONS_DIR), 0);
    uint64_t seed = sdb_seg_seed(STORE, chash, 1);
    size_t cap = SDB_IDX_HEADER_SIZE + (n + 1) * SDB_IDX_ENTRY_SIZE;
    unsigned char *idx = malloc(cap);
    size_t ilen = SDB_IDX_HEADER_SIZE, off = 0;
    uint64_t lsn = 1;

    if (!idx)
        return;
    sdb_idx_header_encode(idx, STORE, chash, 1);
    while (off < n) {
        size_t len = (size_t)p[off] % 64 + 1;
        unsigned char *e = idx + ilen;

        if (len > n - off)
            len = n - off;
        sdb_put_u64(e, lsn++);
        sdb_put_u64(e + 8, off);
        sdb_put_u32(e + 16, (uint32_t)len);
        sdb_put_u32(e + 20, *cp ? 1 : 2);
        sdb_put_u64(e + 24, sdb_hash64(p + off, len, seed));
        ilen += SDB_IDX_ENTRY_SIZE;
        off += len;
    }
    (void)sdb_verify_segment_image(idx, ilen, p, n, STORE, cp, 1);
    free(idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *a, *b;
    size_t na, nb;

    if (size < 1)
        return 0;
    switch (data[0] % 7) {
    case 0:
        (void)sdb_verify_wal_image(data + 1, size - 1, STORE, 1,
                                   size > 1 && data[1] & 1);
        break;
    case 1:
        split(data + 1, size - 1, &a, &na, &b, &nb);
        (void)sdb_verify_segment_image(a, na, b, nb, STORE, "a/b", 1);
        break;
    case 2:
        fuzz_unpack(data + 1, size - 1);
        break;
    case 3:
        fuzz_meta(data + 1, size - 1);
        break;
    case 4:
        fuzz_wal_framed(data + 1, size - 1);
        break;
    case 5:
        fuzz_segment_framed(data + 1, size - 1, "a/b");
        break;
    default:
        fuzz_segment_framed(data + 1, size - 1, "");
        break;
    }
    return 0;
}
