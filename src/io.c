/*
 * io.c - the POSIX backend of the I/O seam (io.h) and the helpers built on
 * top of any sdb_io table: full reads and writes, directory fsync, atomic
 * file replacement and durable mkdir -p.
 *
 * Implements docs/RELIABILITY.md rules 2, 3, 8, 10 and 11.  It must never
 * retry fsync/fdatasync (after a failed sync the dirty pages may be gone, so
 * a retry could report success for lost data: rule 8) nor close (Linux has
 * released the fd even when close fails).  Every function returns -errno;
 * none leaves anything meaningful in errno for its caller.
 */
#define _GNU_SOURCE /* fallocate(2) */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

/* ---- the POSIX backend (ctx is unused) ---- */

static int px_open(void *ctx, const char *path, int flags, mode_t mode)
{
    int fd;

    (void)ctx;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

/*
 * Never retried: on Linux the descriptor is released even when close
 * reports an error, and a retry could close an fd another thread just got.
 * EINTR is reported as success for the same reason.
 */
static int px_close(void *ctx, int fd)
{
    (void)ctx;
    if (close(fd) == 0 || errno == EINTR)
        return 0;
    return -errno;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    ssize_t r;

    (void)ctx;
    r = pread(fd, buf, n, off);
    return r < 0 ? -errno : r;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t n,
                         off_t off)
{
    ssize_t r;

    (void)ctx;
    r = pwrite(fd, buf, n, off);
    return r < 0 ? -errno : r;
}

/* No retry on any error, EIO included (rule 8). */
static int px_fsync(void *ctx, int fd)
{
    (void)ctx;
    return fsync(fd) == 0 ? 0 : -errno;
}

static int px_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    return fdatasync(fd) == 0 ? 0 : -errno;
}

static int px_ftruncate(void *ctx, int fd, off_t len)
{
    int r;

    (void)ctx;
    do {
        r = ftruncate(fd, len);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

/*
 * Without fallocate support, make sure [old size, off+len) exists by
 * writing zeros.  Holes below the current size stay holes: the engine only
 * ever preallocates past the end of a file.
 */
static int zero_fill(int fd, off_t off, off_t len)
{
    static const unsigned char zeros[65536];
    struct stat st;
    off_t pos, end = off + len;
    int rc = 0;

    if (fstat(fd, &st) != 0)
        return -errno;
    for (pos = off > st.st_size ? off : st.st_size; pos < end && rc == 0;
         pos += (off_t)sizeof(zeros)) {
        off_t chunk = end - pos;

        if (chunk > (off_t)sizeof(zeros))
            chunk = (off_t)sizeof(zeros);
        rc = sdb_io_pwrite_all(sdb_io_posix(), fd, zeros, (size_t)chunk, pos);
    }
    return rc;
}

static int px_fallocate(void *ctx, int fd, off_t off, off_t len)
{
    int r;

    (void)ctx;
    do {
        r = fallocate(fd, 0, off, len);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    return zero_fill(fd, off, len);
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    return rename(from, to) == 0 ? 0 : -errno;
}

static int px_unlink(void *ctx, const char *path)
{
    (void)ctx;
    return unlink(path) == 0 ? 0 : -errno;
}

static int px_mkdir(void *ctx, const char *path, mode_t mode)
{
    (void)ctx;
    return mkdir(path, mode) == 0 ? 0 : -errno;
}

static int px_fstat(void *ctx, int fd, struct stat *st)
{
    (void)ctx;
    return fstat(fd, st) == 0 ? 0 : -errno;
}

static int px_syncfs(void *ctx, int fd)
{
    (void)ctx;
    return syncfs(fd) == 0 ? 0 : -errno;
}

static void *px_map(void *ctx, int fd, size_t len)
{
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);

    (void)ctx;
    return p == MAP_FAILED ? NULL : p;
}

static void px_unmap(void *ctx, void *p, size_t len)
{
    (void)ctx;
    munmap(p, len);
}

static const sdb_io posix_io = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fsync = px_fsync,
    .fdatasync = px_fdatasync,
    .ftruncate = px_ftruncate,
    .fallocate = px_fallocate,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .fstat = px_fstat,
    .syncfs = px_syncfs,
    .map = px_map,
    .unmap = px_unmap,
};

const sdb_io *sdb_io_posix(void)
{
    return &posix_io;
}

/* ---- helpers over any sdb_io table ---- */

int sdb_io_pwrite_all(const sdb_io *io, int fd, const void *buf, size_t n,
                      off_t off)
{
    const unsigned char *p = buf;
    size_t done = 0;

    while (done < n) {
        ssize_t r =
            io->pwrite(io->ctx, fd, p + done, n - done, off + (off_t)done);

        if (r == -EINTR)
            continue;
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO; /* no progress: the device refuses the bytes */
        done += (size_t)r;
    }
    return 0;
}

ssize_t sdb_io_pread_upto(const sdb_io *io, int fd, void *buf, size_t n,
                          off_t off)
{
    unsigned char *p = buf;
    size_t done = 0;

    while (done < n) {
        ssize_t r =
            io->pread(io->ctx, fd, p + done, n - done, off + (off_t)done);

        if (r == -EINTR)
            continue;
        if (r < 0)
            return r;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

int sdb_io_pread_all(const sdb_io *io, int fd, void *buf, size_t n, off_t off)
{
    ssize_t r = sdb_io_pread_upto(io, fd, buf, n, off);

    if (r < 0)
        return (int)r;
    return (size_t)r == n ? 0 : SDB_ECORRUPT;
}

int sdb_io_fsync_dir(const sdb_io *io, const char *dir)
{
    int fd, rc, crc;

    fd = io->open(io->ctx, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    rc = io->fsync(io->ctx, fd);
    crc = io->close(io->ctx, fd);
    return rc < 0 ? rc : crc;
}

/* The directory part of path as a malloc'd string ("." for a bare name). */
static char *dir_of(const char *path)
{
    size_t n = strlen(path);

    while (n > 1 && path[n - 1] == '/')
        n--;
    while (n > 0 && path[n - 1] != '/')
        n--;
    if (n == 0)
        return strdup(".");
    while (n > 1 && path[n - 1] == '/')
        n--;
    return strndup(path, n);
}

int sdb_io_fsync_parent(const sdb_io *io, const char *path)
{
    char *dir = dir_of(path);
    int rc;

    if (!dir)
        return SDB_ENOMEM;
    rc = sdb_io_fsync_dir(io, dir);
    free(dir);
    return rc;
}

/* a + "/" + b + suffix, malloc'd. */
static char *join3(const char *a, const char *b, const char *suffix)
{
    size_t la = strlen(a), lb = strlen(b), ls = strlen(suffix);
    char *s = malloc(la + 1 + lb + ls + 1);

    if (!s)
        return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb);
    memcpy(s + la + 1 + lb, suffix, ls + 1);
    return s;
}

/* Create (or truncate) path, write buf, fsync and close it. */
static int write_synced(const sdb_io *io, const char *path, const void *buf,
                        size_t len)
{
    int fd, rc, crc;

    fd =
        io->open(io->ctx, path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        return fd;
    rc = sdb_io_pwrite_all(io, fd, buf, len, 0);
    if (rc == 0)
        rc = io->fsync(io->ctx, fd);
    crc = io->close(io->ctx, fd);
    return rc < 0 ? rc : crc;
}

/*
 * Once the rename has succeeded there is no tmp file left to remove, so a
 * failed directory fsync returns its error with the new content in place
 * (but not known to be durable).
 */
int sdb_io_write_file_atomic(const sdb_io *io, const char *dir,
                             const char *name, const void *buf, size_t len)
{
    char *path, *tmp;
    int rc;

    path = join3(dir, name, "");
    tmp = join3(dir, name, ".tmp");
    if (!path || !tmp) {
        rc = SDB_ENOMEM;
        goto free_paths;
    }
    rc = write_synced(io, tmp, buf, len);
    if (rc < 0)
        goto unlink_tmp;
    rc = io->rename(io->ctx, tmp, path);
    if (rc < 0)
        goto unlink_tmp;
    rc = sdb_io_fsync_dir(io, dir);
    goto free_paths;

unlink_tmp:
    (void)io->unlink(io->ctx, tmp);
free_paths:
    free(tmp);
    free(path);
    return rc;
}

/*
 * Read fd from offset 0 into a malloc'd, NUL-terminated buffer.  hint is the
 * expected size; the file may grow or shrink meanwhile, so the loop reads
 * until EOF and fails once more than max bytes have been seen.
 */
static int read_bounded(const sdb_io *io, int fd, size_t hint, size_t max,
                        char **out, size_t *out_len)
{
    size_t cap, used = 0;
    char *buf, *nbuf;
    ssize_t r;

    if (max > SIZE_MAX - 2)
        max = SIZE_MAX - 2;
    cap = (hint < max ? hint : max) + 1; /* +1 probes for EOF */
    buf = malloc(cap + 1);
    if (!buf)
        return SDB_ENOMEM;
    for (;;) {
        r = sdb_io_pread_upto(io, fd, buf + used, cap - used, (off_t)used);
        if (r < 0)
            goto free_buf;
        used += (size_t)r;
        if (used < cap)
            break;
        r = SDB_ETOOBIG;
        if (used > max)
            goto free_buf;
        cap = cap > max / 2 ? max + 1 : cap * 2;
        r = SDB_ENOMEM;
        nbuf = realloc(buf, cap + 1);
        if (!nbuf)
            goto free_buf;
        buf = nbuf;
    }
    buf[used] = '\0';
    *out = buf;
    *out_len = used;
    return 0;

free_buf:
    free(buf);
    return (int)r;
}

int sdb_io_read_file(const sdb_io *io, const char *path, size_t max, char **out,
                     size_t *len)
{
    struct stat st;
    size_t n = 0;
    int fd, rc;

    *out = NULL;
    fd = io->open(io->ctx, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    rc = io->fstat(io->ctx, fd, &st);
    if (rc < 0)
        goto close_fd;
    rc = SDB_ETOOBIG;
    if ((uintmax_t)st.st_size > (uintmax_t)max)
        goto close_fd;
    rc = read_bounded(io, fd, (size_t)st.st_size, max, out, &n);
    if (rc == 0 && len)
        *len = n;

close_fd:
    (void)io->close(io->ctx, fd); /* read-only: nothing to lose */
    return rc;
}

/* Every component of rel must be a real name: not "", "." or "..". */
static int check_rel(const char *rel)
{
    const char *p = rel;

    for (;;) {
        size_t n = strcspn(p, "/");

        if (n == 0 || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.'))
            return SDB_EINVAL;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/* mkdir one directory; if it was created, make its name durable. */
static int mkdir_one(const sdb_io *io, const char *path)
{
    struct stat st;
    int rc = io->mkdir(io->ctx, path, 0755);

    if (rc == 0)
        return sdb_io_fsync_parent(io, path);
    if (rc != -EEXIST)
        return rc;
    /* stat is not part of the seam: it cannot lose data */
    if (stat(path, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/*
 * base itself must exist already (it is the durable anchor); rel is split
 * at '/' and each prefix base/c1, base/c1/c2, ... is created in turn.
 */
int sdb_io_mkdirs(const sdb_io *io, const char *base, const char *rel)
{
    size_t blen;
    char *path, *p;
    int rc;

    if (!base[0] || check_rel(rel) < 0)
        return SDB_EINVAL;
    path = join3(base, rel, "");
    if (!path)
        return SDB_ENOMEM;
    blen = strlen(base) + 1;
    p = path + blen;
    do {
        p += strcspn(p, "/");
        if (*p == '/') {
            *p = '\0';
            rc = mkdir_one(io, path);
            *p++ = '/';
        } else {
            rc = mkdir_one(io, path);
            break;
        }
    } while (rc == 0);
    free(path);
    return rc;
}
