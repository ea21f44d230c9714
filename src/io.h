/*
 * io.h - the one seam every byte of file I/O in the engine goes through.
 *
 * The engine never calls open/pwrite/fsync/rename directly: it calls the
 * functions of an sdb_io table.  The POSIX backend (io.c) is the real one;
 * io_sim.c provides test backends that fail the Nth call of an operation
 * and simulate power loss (unsynced writes applied, dropped or garbled;
 * directory operations that were never dir-fsynced reverted).
 *
 * Every function returns >= 0 on success and -errno on failure; none of
 * them sets or relies on errno.  Directory listing and the LOCK use the OS
 * directly: they cannot lose data.
 */
#ifndef SDB_IO_H
#define SDB_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "stemedb/stemedb.h"

enum sdb_io_op {
    SDB_IO_OPEN,
    SDB_IO_CLOSE,
    SDB_IO_PREAD,
    SDB_IO_PWRITE,
    SDB_IO_FSYNC,
    SDB_IO_FDATASYNC,
    SDB_IO_FTRUNCATE,
    SDB_IO_FALLOCATE,
    SDB_IO_RENAME,
    SDB_IO_UNLINK,
    SDB_IO_MKDIR,
    SDB_IO_FSTAT,
    SDB_IO_SYNCFS,
    SDB_IO_OP_COUNT
};

struct sdb_io {
    void *ctx;
    /* returns an fd or -errno; O_DIRECTORY opens are used for dir fsync */
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    int (*close)(void *ctx, int fd);
    /* one call of the syscall: may be short; -errno on failure */
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(void *ctx, int fd);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    /* allocate [off, off+len) extending the size (mode 0) */
    int (*fallocate)(void *ctx, int fd, off_t off, off_t len);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path, mode_t mode);
    int (*fstat)(void *ctx, int fd, struct stat *st);
    /*
     * Flush the whole file system holding fd (data and metadata, every
     * directory) and report any writeback error on it since fd was opened
     * (Linux >= 5.8).  Used by checkpoints that touched many files.
     */
    int (*syncfs)(void *ctx, int fd);
    /*
     * Optional (NULL: readers use pread).  Map [0, len) of fd read-only and
     * shared, or return NULL; unmap undoes it.  Pages past the end of the
     * file must not be touched (SIGBUS).
     */
    void *(*map)(void *ctx, int fd, size_t len);
    void (*unmap)(void *ctx, void *p, size_t len);
};

/* Write all n bytes at off, looping on short writes and EINTR. */
int sdb_io_pwrite_all(const sdb_io *io, int fd, const void *buf, size_t n,
                      off_t off);
/* Read exactly n bytes at off; -EIO... or SDB_ECORRUPT on a short file. */
int sdb_io_pread_all(const sdb_io *io, int fd, void *buf, size_t n, off_t off);
/* Read up to n bytes (stops at EOF); returns bytes read or -errno. */
ssize_t sdb_io_pread_upto(const sdb_io *io, int fd, void *buf, size_t n,
                          off_t off);
/* open(dir, O_RDONLY|O_DIRECTORY) + fsync + close. */
int sdb_io_fsync_dir(const sdb_io *io, const char *dir);
/* The directory part of path, fsync'd (for a file just created/renamed). */
int sdb_io_fsync_parent(const sdb_io *io, const char *path);
/*
 * Replace dir/name with buf atomically: write dir/name.tmp, fsync it,
 * rename over dir/name, fsync dir.
 */
int sdb_io_write_file_atomic(const sdb_io *io, const char *dir,
                             const char *name, const void *buf, size_t len);
/*
 * Read a whole (small) file into a malloc'd buffer (NUL-terminated, *len
 * excludes the NUL).  max bounds the size (SDB_ETOOBIG beyond it).
 */
int sdb_io_read_file(const sdb_io *io, const char *path, size_t max, char **out,
                     size_t *len);
/*
 * mkdir base/rel and every missing directory between them; for each
 * directory created, fsync its parent (rule: new names need a directory
 * fsync).  Existing directories are fine.
 */
int sdb_io_mkdirs(const sdb_io *io, const char *base, const char *rel);

#endif
