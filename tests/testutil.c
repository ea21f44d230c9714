/* testutil.c - see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *tu_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

char *tu_mkdtemp(const char *tag)
{
    const char *base = getenv("SDB_TEST_TMPDIR");
    char *tmpl;

    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    tmpl = tu_printf("%s/sdb-%s-XXXXXX", base, tag);
    if (!mkdtemp(tmpl))
        abort();
    return tmpl;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void tu_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto close_f;
    buf = malloc((size_t)n + 1);
    if (!buf)
        goto close_f;
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto close_f;
    }
    buf[n] = 0;
    if (len)
        *len = (size_t)n;
close_f:
    fclose(f);
    return buf;
}

int tu_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    int rc = 0;

    if (!f)
        return -1;
    if (fwrite(buf, 1, len, f) != len)
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

long long tu_file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

uint64_t tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t tu_seed(uint64_t dflt)
{
    const char *s = getenv("SDB_TEST_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 0) : dflt;

    fprintf(stderr, "seed: %llu (set SDB_TEST_SEED to replay)\n",
            (unsigned long long)seed);
    return seed;
}

json_t *tu_json(const char *fmt, ...)
{
    char buf[8192];
    json_error_t e;
    json_t *j;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    j = json_loads(buf, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad test JSON %s: %s", buf, e.text);
    return j;
}
