/*
 * testutil.h - helpers shared by the cmocka tests: fresh temporary
 * directories under $SDB_TEST_TMPDIR (or /tmp), recursive removal, a
 * seeded PRNG, small file helpers, and JSON from printf-style text.
 */
#ifndef SDB_TESTUTIL_H
#define SDB_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* A new empty directory; returns a malloc'd path. Aborts on failure. */
char *tu_mkdtemp(const char *tag);
/* rm -rf path (no error if missing). */
void tu_rmrf(const char *path);
/* malloc'd sprintf. */
char *tu_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whole file into malloc'd buffer; NULL if unreadable. */
char *tu_read_file(const char *path, size_t *len);
/* Write (replace) a file; 0 or -1. */
int tu_write_file(const char *path, const void *buf, size_t len);
/* File size or -1. */
long long tu_file_size(const char *path);
/* splitmix64 PRNG. */
uint64_t tu_rand(uint64_t *state);
/* Seed from $SDB_TEST_SEED or the given default; printed to stderr. */
uint64_t tu_seed(uint64_t dflt);

/* A JSON value from printf-style text; fails the test if it does not
 * parse.  A new reference. */
struct json_t;
struct json_t *tu_json(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif
