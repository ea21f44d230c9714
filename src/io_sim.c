/*
 * io_sim.c - the fault-injecting, crash- and power-loss-simulating I/O
 * backend for tests (io_sim.h); implements docs/RELIABILITY.md M3 and M5.
 * Test-only: it keeps removed files and overwritten bytes in memory.
 *
 * Every call passes sim_enter(), which counts it and applies a scheduled
 * fault or the crash; otherwise it reaches the POSIX backend.  To make a
 * later power loss possible, mutating calls are journalled:
 *  - per file (keyed by st_dev/st_ino, with its current path): each pwrite,
 *    ftruncate, fallocate and O_TRUNC open since the last successful
 *    fsync/fdatasync of the file on any fd, with the size and the bytes it
 *    replaced (read with pread just before the call);
 *  - globally: each create, mkdir, rename and unlink since the fsync of the
 *    parent directory (an fsync/fdatasync of an fd opened on it), with a
 *    copy of any file the operation removed.
 * A rename is durable only once the parents of both its source and its
 * destination have been fsync'd after it (one fsync if they are the same
 * directory); until then power loss moves it back as a whole.
 *
 * sdb_iosim_power_loss() reverts the directory journal newest-first
 * (updating the paths of the files involved), then undoes each remaining
 * file's journal newest-first, choosing per entry among the allowed modes.
 * Bytes a later surviving (kept or garbled) write covers are never touched
 * when an earlier entry is dropped or garbled.  Afterwards the journals are
 * empty and the crash is cleared, so the simulator can be used again.
 *
 * Locking: sim->lock protects every field after it.  It is held across a
 * journalled call (preimage read, the call, the record) so the preimage is
 * exact even with several threads, but never across fsync/fdatasync: a sync
 * covers the entries that existed when it started (by sequence number).
 * The sdb_io_* helpers called here always get the POSIX table, never the
 * simulator's, so nothing re-enters the lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_sim.h"

#define SIM_HASH  1024
#define SIM_CHUNK 65536

enum jent_kind { JENT_WRITE, JENT_SIZE };

/* One unsynced data change of a file. */
struct jent {
    uint64_t seq;
    enum jent_kind kind;
    uint64_t off, len; /* JENT_WRITE: the range written */
    uint64_t old_size, new_size;
    uint64_t pre_off; /* pre holds the old bytes at [pre_off, +pre_len) */
    size_t pre_len;
    unsigned char *pre;
};

/* A regular file the simulator has seen opened. */
struct simfile {
    dev_t dev;
    ino_t ino;
    char *path;  /* current name; NULL once removed */
    bool hashed; /* reachable by dev/ino (false once its name is gone) */
    struct simfile *hnext, *next; /* hash chain; list of all files */
    struct jent *ents;            /* unsynced entries, in seq order */
    size_t n, cap;
};

struct dirid {
    bool valid;
    dev_t dev;
    ino_t ino;
};

enum dop_kind { DOP_CREATE, DOP_MKDIR, DOP_RENAME, DOP_UNLINK };

/* One directory operation whose parent(s) were not fsync'd since. */
struct dirop {
    uint64_t seq;
    enum dop_kind kind;
    struct dirid parent[2]; /* of path; of path2 (RENAME only) */
    bool synced[2];
    char *path;             /* CREATE/MKDIR/UNLINK: the name; RENAME: from */
    char *path2;            /* RENAME: to */
    bool is_dir;            /* RENAME of a directory */
    struct simfile *file;   /* CREATE: created; RENAME: moved; UNLINK: gone */
    struct simfile *victim; /* RENAME: the replaced target's record */
    int saved_kind;         /* 0 none, 1 a regular file, 2 an empty dir */
    unsigned char *saved;   /* contents of the removed file */
    size_t saved_len;
    mode_t saved_mode;
};

struct simfd {
    bool used, is_dir, readable;
    dev_t dev;
    ino_t ino;
    struct simfile *file; /* NULL: not journalled */
};

struct sim_fault {
    uint64_t nth; /* 0: none */
    bool forever;
    int err;
};

struct sdb_iosim {
    sdb_io io;
    const sdb_io *real;
    pthread_mutex_t lock;
    /* everything below is protected by lock */
    uint64_t rng;
    uint64_t calls[SDB_IO_OP_COUNT];
    struct sim_fault fault[SDB_IO_OP_COUNT];
    uint64_t mutations;
    bool crash_armed, crashed;
    uint64_t crash_left;
    uint64_t seq; /* last journal sequence number handed out */
    struct simfd *fds;
    size_t nfds;
    struct simfile *hash[SIM_HASH];
    struct simfile *files;
    struct dirop **dops; /* in seq order */
    size_t ndops, capdops;
};

/* ---- small helpers ---- */

static uint64_t sim_rand(sdb_iosim *sim)
{
    uint64_t z = (sim->rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *p;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* The parent directory's identity; invalid if it cannot be stat'ed. */
static struct dirid parent_of(const char *path)
{
    struct dirid id = {0};
    const char *slash = strrchr(path, '/');
    struct stat st;
    char *dir;

    if (!slash)
        dir = strdup(".");
    else
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir && stat(dir, &st) == 0) {
        id.valid = true;
        id.dev = st.st_dev;
        id.ino = st.st_ino;
    }
    free(dir);
    return id;
}

/* Replace *p by a copy of s (keeps the old value if out of memory). */
static void set_path(char **p, const char *s)
{
    char *n = s ? strdup(s) : NULL;

    if (s && !n)
        return;
    free(*p);
    *p = n;
}

/* If *p lies below directory from, move it below to. */
static void rebase(char **p, const char *from, const char *to)
{
    size_t lf = strlen(from), lt = strlen(to);
    char *n;

    if (!*p || strncmp(*p, from, lf) != 0 || (*p)[lf] != '/')
        return;
    n = malloc(lt + strlen(*p + lf) + 1);
    if (!n)
        return;
    memcpy(n, to, lt);
    strcpy(n + lt, *p + lf);
    free(*p);
    *p = n;
}

/* ---- file records ---- */

static size_t hslot(dev_t dev, ino_t ino)
{
    return (size_t)(((uint64_t)dev * 1000003u + (uint64_t)ino) % SIM_HASH);
}

static struct simfile *file_find(sdb_iosim *sim, dev_t dev, ino_t ino)
{
    struct simfile *f;

    for (f = sim->hash[hslot(dev, ino)]; f; f = f->hnext)
        if (f->dev == dev && f->ino == ino)
            return f;
    return NULL;
}

static struct simfile *file_get(sdb_iosim *sim, const struct stat *st,
                                const char *path)
{
    struct simfile *f = file_find(sim, st->st_dev, st->st_ino);
    size_t h;

    if (f) {
        if (!f->path || strcmp(f->path, path) != 0)
            set_path(&f->path, path);
        return f;
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->path = strdup(path);
    if (!f->path) {
        free(f);
        return NULL;
    }
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    h = hslot(f->dev, f->ino);
    f->hnext = sim->hash[h];
    sim->hash[h] = f;
    f->hashed = true;
    f->next = sim->files;
    sim->files = f;
    return f;
}

/* The file lost its name: a new file may reuse its inode number. */
static void file_unhash(sdb_iosim *sim, struct simfile *f)
{
    struct simfile **pp;

    if (!f->hashed)
        return;
    for (pp = &sim->hash[hslot(f->dev, f->ino)]; *pp; pp = &(*pp)->hnext)
        if (*pp == f) {
            *pp = f->hnext;
            break;
        }
    f->hashed = false;
    set_path(&f->path, NULL);
}

static void file_clear(struct simfile *f)
{
    size_t i;

    for (i = 0; i < f->n; i++)
        free(f->ents[i].pre);
    f->n = 0;
}

/* Make room for one more entry before the call it describes is made. */
static int file_reserve(struct simfile *f)
{
    return grow((void **)&f->ents, &f->cap, f->n + 1, sizeof(*f->ents));
}

static void file_push(sdb_iosim *sim, struct simfile *f, struct jent *e)
{
    e->seq = ++sim->seq;
    f->ents[f->n++] = *e;
}

/* A sync that started at sequence snap succeeded: forget what it covers. */
static void file_synced(struct simfile *f, uint64_t snap)
{
    size_t k = 0, i;

    while (k < f->n && f->ents[k].seq <= snap)
        k++;
    for (i = 0; i < k; i++)
        free(f->ents[i].pre);
    memmove(f->ents, f->ents + k, (f->n - k) * sizeof(*f->ents));
    f->n -= k;
}

/* ---- directory operations ---- */

/* Directory from was renamed to: move every remembered path below it. */
static void rebase_all(sdb_iosim *sim, const char *from, const char *to)
{
    struct simfile *f;
    size_t i;

    for (f = sim->files; f; f = f->next)
        rebase(&f->path, from, to);
    for (i = 0; i < sim->ndops; i++) {
        rebase(&sim->dops[i]->path, from, to);
        rebase(&sim->dops[i]->path2, from, to);
    }
}

static void dop_free(struct dirop *d)
{
    if (!d)
        return;
    free(d->path);
    free(d->path2);
    free(d->saved);
    free(d);
}

static int dop_reserve(sdb_iosim *sim)
{
    return grow((void **)&sim->dops, &sim->capdops, sim->ndops + 1,
                sizeof(*sim->dops));
}

static void dop_push(sdb_iosim *sim, struct dirop *d)
{
    d->seq = ++sim->seq;
    sim->dops[sim->ndops++] = d;
}

static bool dirid_eq(const struct dirid *id, dev_t dev, ino_t ino)
{
    return id->valid && id->dev == dev && id->ino == ino;
}

/* Directory dev/ino was fsync'd by a sync that started at snap. */
static void dir_synced(sdb_iosim *sim, dev_t dev, ino_t ino, uint64_t snap)
{
    size_t i, kept = 0;

    for (i = 0; i < sim->ndops; i++) {
        struct dirop *d = sim->dops[i];
        int p;

        for (p = 0; p < 2 && d->seq <= snap; p++)
            if (dirid_eq(&d->parent[p], dev, ino))
                d->synced[p] = true;
        if ((d->synced[0] || !d->parent[0].valid) &&
            (d->synced[1] || !d->parent[1].valid))
            dop_free(d);
        else
            sim->dops[kept++] = d;
    }
    sim->ndops = kept;
}

/* ---- the fd table ---- */

static struct simfd *fd_slot(sdb_iosim *sim, int fd)
{
    if (fd < 0 || (size_t)fd >= sim->nfds || !sim->fds[fd].used)
        return NULL;
    return &sim->fds[fd];
}

static int fd_table_fit(sdb_iosim *sim, int fd)
{
    size_t need = (size_t)fd + 1, old = sim->nfds;
    int rc;

    rc = grow((void **)&sim->fds, &sim->nfds, need, sizeof(*sim->fds));
    if (rc == 0 && sim->nfds > old)
        memset(sim->fds + old, 0, (sim->nfds - old) * sizeof(*sim->fds));
    return rc;
}

/* ---- entry: counting, faults and the crash ---- */

static int sim_enter(sdb_iosim *sim, enum sdb_io_op op, bool mutating)
{
    const struct sim_fault *f = &sim->fault[op];
    uint64_t n = ++sim->calls[op];

    if (sim->crashed)
        return -EIO;
    if (f->nth && (n == f->nth || (f->forever && n > f->nth)))
        return -f->err;
    if (!mutating)
        return 0;
    sim->mutations++;
    if (sim->crash_armed && --sim->crash_left == 0) {
        sim->crash_armed = false;
        sim->crashed = true; /* this call still happens; none after it */
    }
    return 0;
}

/* ---- reading old contents ---- */

static int read_path(sdb_iosim *sim, const char *path, unsigned char **out,
                     size_t *len)
{
    char *buf = NULL;
    int rc = sdb_io_read_file(sim->real, path, SIZE_MAX, &buf, len);

    *out = (unsigned char *)buf;
    return rc;
}

/* Read [off, off+n) of fd, through a second descriptor if fd is O_WRONLY. */
static int read_pre(sdb_iosim *sim, const struct simfd *s, int fd, void *buf,
                    size_t n, off_t off)
{
    char proc[64];
    int rfd, rc;

    if (s->readable)
        return sdb_io_pread_all(sim->real, fd, buf, n, off);
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    rfd = sim->real->open(sim->real->ctx, proc, O_RDONLY | O_CLOEXEC, 0);
    if (rfd < 0)
        return rfd;
    rc = sdb_io_pread_all(sim->real, rfd, buf, n, off);
    (void)sim->real->close(sim->real->ctx, rfd);
    return rc;
}

/* Fill e->pre with the bytes of [off, off+n) that lie below size. */
static int take_pre(sdb_iosim *sim, const struct simfd *s, int fd,
                    struct jent *e, uint64_t off, uint64_t n, uint64_t size)
{
    uint64_t end = off + n < size ? off + n : size;

    e->pre_off = off;
    e->pre_len = 0;
    e->pre = NULL;
    if (off >= end)
        return 0;
    e->pre = malloc((size_t)(end - off));
    if (!e->pre)
        return -ENOMEM;
    e->pre_len = (size_t)(end - off);
    return read_pre(sim, s, fd, e->pre, e->pre_len, (off_t)off);
}

static int fd_size(sdb_iosim *sim, int fd, uint64_t *out)
{
    struct stat st;
    int rc = sim->real->fstat(sim->real->ctx, fd, &st);

    if (rc == 0)
        *out = (uint64_t)st.st_size;
    return rc;
}

/* ---- the table's functions ---- */

/* Register a freshly opened fd; journal its creation or truncation. */
static int track_fd(sdb_iosim *sim, int fd, const char *path, int flags,
                    bool created, struct jent *trunc)
{
    struct simfd *s;
    struct stat st;
    struct dirop *d;
    int rc;

    rc = sim->real->fstat(sim->real->ctx, fd, &st);
    if (rc == 0)
        rc = fd_table_fit(sim, fd);
    if (rc < 0)
        return rc;
    s = &sim->fds[fd];
    memset(s, 0, sizeof(*s));
    s->used = true;
    s->is_dir = S_ISDIR(st.st_mode);
    s->readable = (flags & O_ACCMODE) != O_WRONLY;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    if (!S_ISREG(st.st_mode))
        return 0;
    s->file = file_get(sim, &st, path);
    if (!s->file || file_reserve(s->file) < 0 || dop_reserve(sim) < 0)
        return -ENOMEM;
    if (trunc->pre_len > 0) {
        file_push(sim, s->file, trunc);
        trunc->pre = NULL;
    }
    if (!created)
        return 0;
    d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->kind = DOP_CREATE;
    d->parent[0] = parent_of(path);
    d->file = s->file;
    dop_push(sim, d);
    return 0;
}

static int open_tracked(sdb_iosim *sim, const char *path, int flags,
                        mode_t mode)
{
    struct jent trunc = {.kind = JENT_SIZE};
    struct stat st;
    bool existed = lstat(path, &st) == 0;
    int fd, rc = 0;

    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && existed &&
        S_ISREG(st.st_mode) && st.st_size > 0) {
        rc = read_path(sim, path, &trunc.pre, &trunc.pre_len);
        trunc.old_size = trunc.pre_len;
    }
    if (rc < 0)
        return rc;
    fd = sim->real->open(sim->real->ctx, path, flags, mode);
    if (fd < 0) {
        rc = fd;
        goto free_pre;
    }
    rc = track_fd(sim, fd, path, flags, !existed && (flags & O_CREAT), &trunc);
    if (rc < 0) {
        if ((size_t)fd < sim->nfds)
            memset(&sim->fds[fd], 0, sizeof(sim->fds[fd]));
        (void)sim->real->close(sim->real->ctx, fd);
        goto free_pre;
    }
    rc = fd;

free_pre:
    free(trunc.pre);
    return rc;
}

static int sim_open(void *ctx, const char *path, int flags, mode_t mode)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_OPEN, (flags & (O_CREAT | O_TRUNC)) != 0);
    if (rc == 0)
        rc = open_tracked(sim, path, flags, mode);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

/* Always closes the real fd (Linux semantics), even when failing it. */
static int sim_close(void *ctx, int fd)
{
    sdb_iosim *sim = ctx;
    struct simfd *s;
    int rc, crc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_CLOSE, false);
    if (rc == -EIO && sim->crashed)
        rc = 0;
    s = fd_slot(sim, fd);
    if (s)
        memset(s, 0, sizeof(*s));
    crc = sim->real->close(sim->real->ctx, fd);
    pthread_mutex_unlock(&sim->lock);
    return rc < 0 ? rc : crc;
}

static ssize_t sim_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_PREAD, false);
    pthread_mutex_unlock(&sim->lock);
    if (rc < 0)
        return rc;
    return sim->real->pread(sim->real->ctx, fd, buf, n, off);
}

static ssize_t pwrite_tracked(sdb_iosim *sim, int fd, const void *buf, size_t n,
                              off_t off)
{
    const struct simfd *s = fd_slot(sim, fd);
    struct jent e = {.kind = JENT_WRITE, .off = (uint64_t)off};
    ssize_t r;
    int rc;

    if (!s || !s->file || n == 0 || off < 0)
        return sim->real->pwrite(sim->real->ctx, fd, buf, n, off);
    rc = fd_size(sim, fd, &e.old_size);
    if (rc == 0)
        rc = file_reserve(s->file);
    if (rc == 0)
        rc = take_pre(sim, s, fd, &e, e.off, n, e.old_size);
    r = rc;
    if (rc == 0)
        r = sim->real->pwrite(sim->real->ctx, fd, buf, n, off);
    if (r <= 0) {
        free(e.pre);
        return r;
    }
    e.len = (uint64_t)r;
    if (e.pre_len > (size_t)r)
        e.pre_len = (size_t)r;
    e.new_size = e.off + e.len > e.old_size ? e.off + e.len : e.old_size;
    file_push(sim, s->file, &e);
    return r;
}

static ssize_t sim_pwrite(void *ctx, int fd, const void *buf, size_t n,
                          off_t off)
{
    sdb_iosim *sim = ctx;
    ssize_t r;

    pthread_mutex_lock(&sim->lock);
    r = sim_enter(sim, SDB_IO_PWRITE, true);
    if (r == 0)
        r = pwrite_tracked(sim, fd, buf, n, off);
    pthread_mutex_unlock(&sim->lock);
    return r;
}

/* fsync and fdatasync: the lock is not held during the sync itself. */
static int sim_sync(sdb_iosim *sim, enum sdb_io_op op, int fd)
{
    struct simfd s = {0};
    const struct simfd *sp;
    uint64_t snap;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, op, true);
    sp = fd_slot(sim, fd);
    if (sp)
        s = *sp;
    snap = sim->seq;
    pthread_mutex_unlock(&sim->lock);
    if (rc < 0)
        return rc;
    if (op == SDB_IO_FSYNC)
        rc = sim->real->fsync(sim->real->ctx, fd);
    else
        rc = sim->real->fdatasync(sim->real->ctx, fd);
    if (rc < 0 || !s.used)
        return rc;
    pthread_mutex_lock(&sim->lock);
    if (s.is_dir)
        dir_synced(sim, s.dev, s.ino, snap);
    else if (s.file)
        file_synced(s.file, snap);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

static int sim_fsync(void *ctx, int fd)
{
    return sim_sync(ctx, SDB_IO_FSYNC, fd);
}

static int sim_fdatasync(void *ctx, int fd)
{
    return sim_sync(ctx, SDB_IO_FDATASYNC, fd);
}

static int ftruncate_tracked(sdb_iosim *sim, int fd, off_t len)
{
    const struct simfd *s = fd_slot(sim, fd);
    struct jent e = {.kind = JENT_SIZE, .new_size = (uint64_t)len};
    int rc;

    if (!s || !s->file || len < 0)
        return sim->real->ftruncate(sim->real->ctx, fd, len);
    rc = fd_size(sim, fd, &e.old_size);
    if (rc == 0)
        rc = file_reserve(s->file);
    if (rc == 0 && e.new_size < e.old_size)
        rc = take_pre(sim, s, fd, &e, e.new_size, e.old_size - e.new_size,
                      e.old_size);
    if (rc == 0)
        rc = sim->real->ftruncate(sim->real->ctx, fd, len);
    if (rc < 0 || e.old_size == e.new_size) {
        free(e.pre);
        return rc;
    }
    file_push(sim, s->file, &e);
    return 0;
}

static int sim_ftruncate(void *ctx, int fd, off_t len)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_FTRUNCATE, true);
    if (rc == 0)
        rc = ftruncate_tracked(sim, fd, len);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

/* Mode 0 fallocate only ever grows the file: no bytes to remember. */
static int fallocate_tracked(sdb_iosim *sim, int fd, off_t off, off_t len)
{
    const struct simfd *s = fd_slot(sim, fd);
    struct jent e = {.kind = JENT_SIZE};
    int rc;

    if (!s || !s->file)
        return sim->real->fallocate(sim->real->ctx, fd, off, len);
    rc = fd_size(sim, fd, &e.old_size);
    if (rc == 0)
        rc = file_reserve(s->file);
    if (rc == 0)
        rc = sim->real->fallocate(sim->real->ctx, fd, off, len);
    if (rc == 0)
        rc = fd_size(sim, fd, &e.new_size);
    if (rc == 0 && e.new_size != e.old_size)
        file_push(sim, s->file, &e);
    return rc;
}

static int sim_fallocate(void *ctx, int fd, off_t off, off_t len)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_FALLOCATE, true);
    if (rc == 0)
        rc = fallocate_tracked(sim, fd, off, len);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

/* Remember what a rename or unlink is about to remove at path. */
static int save_removed(sdb_iosim *sim, struct dirop *d, const char *path,
                        const struct stat *st)
{
    d->saved_mode = st->st_mode & 07777;
    if (S_ISDIR(st->st_mode)) {
        d->saved_kind = 2;
        return 0;
    }
    if (!S_ISREG(st->st_mode))
        return 0; /* symlinks etc. are not restored */
    d->saved_kind = 1;
    return read_path(sim, path, &d->saved, &d->saved_len);
}

static int rename_tracked(sdb_iosim *sim, const char *from, const char *to)
{
    struct stat sst, tst;
    struct dirop *d;
    int rc;

    if (lstat(from, &sst) != 0)
        return sim->real->rename(sim->real->ctx, from, to);
    if (lstat(to, &tst) == 0 && tst.st_dev == sst.st_dev &&
        tst.st_ino == sst.st_ino)
        return sim->real->rename(sim->real->ctx, from, to); /* a no-op */
    d = dop_reserve(sim) < 0 ? NULL : calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->kind = DOP_RENAME;
    d->is_dir = S_ISDIR(sst.st_mode);
    d->path = strdup(from);
    d->path2 = strdup(to);
    rc = d->path && d->path2 ? 0 : -ENOMEM;
    if (rc == 0 && lstat(to, &tst) == 0) {
        d->victim = file_find(sim, tst.st_dev, tst.st_ino);
        rc = save_removed(sim, d, to, &tst);
    }
    if (rc == 0)
        rc = sim->real->rename(sim->real->ctx, from, to);
    if (rc < 0)
        goto free_dop;
    d->parent[0] = parent_of(from);
    d->parent[1] = parent_of(to);
    if (d->victim)
        file_unhash(sim, d->victim);
    d->file = file_find(sim, sst.st_dev, sst.st_ino);
    if (d->file)
        set_path(&d->file->path, to);
    if (d->is_dir)
        rebase_all(sim, from, to);
    dop_push(sim, d);
    return 0;

free_dop:
    dop_free(d);
    return rc;
}

static int sim_rename(void *ctx, const char *from, const char *to)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_RENAME, true);
    if (rc == 0)
        rc = rename_tracked(sim, from, to);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

static int unlink_tracked(sdb_iosim *sim, const char *path)
{
    struct stat st;
    struct dirop *d;
    int rc;

    if (lstat(path, &st) != 0 || S_ISDIR(st.st_mode))
        return sim->real->unlink(sim->real->ctx, path); /* fails */
    d = dop_reserve(sim) < 0 ? NULL : calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->kind = DOP_UNLINK;
    d->path = strdup(path);
    rc = d->path ? save_removed(sim, d, path, &st) : -ENOMEM;
    if (rc == 0)
        rc = sim->real->unlink(sim->real->ctx, path);
    if (rc < 0)
        goto free_dop;
    d->parent[0] = parent_of(path);
    d->file = file_find(sim, st.st_dev, st.st_ino);
    if (d->file && st.st_nlink <= 1)
        file_unhash(sim, d->file);
    dop_push(sim, d);
    return 0;

free_dop:
    dop_free(d);
    return rc;
}

static int sim_unlink(void *ctx, const char *path)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_UNLINK, true);
    if (rc == 0)
        rc = unlink_tracked(sim, path);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

static int mkdir_tracked(sdb_iosim *sim, const char *path, mode_t mode)
{
    struct dirop *d;
    int rc;

    d = dop_reserve(sim) < 0 ? NULL : calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->kind = DOP_MKDIR;
    d->path = strdup(path);
    rc = d->path ? sim->real->mkdir(sim->real->ctx, path, mode) : -ENOMEM;
    if (rc < 0) {
        dop_free(d);
        return rc;
    }
    d->parent[0] = parent_of(path);
    dop_push(sim, d);
    return 0;
}

static int sim_mkdir(void *ctx, const char *path, mode_t mode)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_MKDIR, true);
    if (rc == 0)
        rc = mkdir_tracked(sim, path, mode);
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

/* syncfs: everything tracked before it started becomes durable. */
static int sim_syncfs(void *ctx, int fd)
{
    sdb_iosim *sim = ctx;
    struct simfile *f;
    uint64_t snap;
    size_t i, kept = 0;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_SYNCFS, true);
    snap = sim->seq;
    pthread_mutex_unlock(&sim->lock);
    if (rc < 0)
        return rc;
    rc = sim->real->syncfs(sim->real->ctx, fd);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&sim->lock);
    for (f = sim->files; f; f = f->next)
        file_synced(f, snap);
    for (i = 0; i < sim->ndops; i++) {
        if (sim->dops[i]->seq <= snap)
            dop_free(sim->dops[i]);
        else
            sim->dops[kept++] = sim->dops[i];
    }
    sim->ndops = kept;
    pthread_mutex_unlock(&sim->lock);
    return rc;
}

static int sim_fstat(void *ctx, int fd, struct stat *st)
{
    sdb_iosim *sim = ctx;
    int rc;

    pthread_mutex_lock(&sim->lock);
    rc = sim_enter(sim, SDB_IO_FSTAT, false);
    pthread_mutex_unlock(&sim->lock);
    if (rc < 0)
        return rc;
    return sim->real->fstat(sim->real->ctx, fd, st);
}

/* ---- lifecycle and control ---- */

sdb_iosim *sdb_iosim_new(uint64_t seed)
{
    sdb_iosim *sim = calloc(1, sizeof(*sim));

    if (!sim)
        return NULL;
    if (pthread_mutex_init(&sim->lock, NULL) != 0) {
        free(sim);
        return NULL;
    }
    sim->rng = seed;
    sim->real = sdb_io_posix();
    sim->io = (sdb_io){
        .ctx = sim,
        .open = sim_open,
        .close = sim_close,
        .pread = sim_pread,
        .pwrite = sim_pwrite,
        .fsync = sim_fsync,
        .fdatasync = sim_fdatasync,
        .ftruncate = sim_ftruncate,
        .fallocate = sim_fallocate,
        .rename = sim_rename,
        .unlink = sim_unlink,
        .mkdir = sim_mkdir,
        .fstat = sim_fstat,
        .syncfs = sim_syncfs,
    };
    return sim;
}

/* Forget every journal entry and file record (lock held). */
static void sim_reset(sdb_iosim *sim)
{
    struct simfile *f, *next;
    size_t i;

    for (i = 0; i < sim->ndops; i++)
        dop_free(sim->dops[i]);
    sim->ndops = 0;
    for (f = sim->files; f; f = next) {
        next = f->next;
        file_clear(f);
        free(f->ents);
        free(f->path);
        free(f);
    }
    sim->files = NULL;
    memset(sim->hash, 0, sizeof(sim->hash));
    if (sim->fds)
        memset(sim->fds, 0, sim->nfds * sizeof(*sim->fds));
}

void sdb_iosim_free(sdb_iosim *sim)
{
    if (!sim)
        return;
    sim_reset(sim);
    free(sim->dops);
    free(sim->fds);
    pthread_mutex_destroy(&sim->lock);
    free(sim);
}

const sdb_io *sdb_iosim_io(sdb_iosim *sim)
{
    return &sim->io;
}

void sdb_iosim_fail(sdb_iosim *sim, enum sdb_io_op op, uint64_t nth,
                    bool forever, int err)
{
    if ((unsigned)op >= SDB_IO_OP_COUNT)
        return;
    pthread_mutex_lock(&sim->lock);
    sim->fault[op] = (struct sim_fault){nth, forever, err};
    pthread_mutex_unlock(&sim->lock);
}

uint64_t sdb_iosim_calls(sdb_iosim *sim, enum sdb_io_op op)
{
    uint64_t n = 0;

    if ((unsigned)op >= SDB_IO_OP_COUNT)
        return 0;
    pthread_mutex_lock(&sim->lock);
    n = sim->calls[op];
    pthread_mutex_unlock(&sim->lock);
    return n;
}

uint64_t sdb_iosim_mutations(sdb_iosim *sim)
{
    uint64_t n;

    pthread_mutex_lock(&sim->lock);
    n = sim->mutations;
    pthread_mutex_unlock(&sim->lock);
    return n;
}

void sdb_iosim_crash_after(sdb_iosim *sim, uint64_t n)
{
    pthread_mutex_lock(&sim->lock);
    sim->crash_armed = n > 0;
    sim->crash_left = n;
    if (n == 0)
        sim->crashed = true;
    pthread_mutex_unlock(&sim->lock);
}

bool sdb_iosim_crashed(sdb_iosim *sim)
{
    bool c;

    pthread_mutex_lock(&sim->lock);
    c = sim->crashed;
    pthread_mutex_unlock(&sim->lock);
    return c;
}

/* ---- power loss: the directory journal ---- */

static int rmrf(const char *path)
{
    struct stat st;
    struct dirent *de;
    DIR *dir;
    int rc = 0;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 ? 0 : -errno;
    dir = opendir(path);
    if (!dir)
        return -errno;
    while (rc == 0 && (de = readdir(dir)) != NULL) {
        size_t n = strlen(path) + strlen(de->d_name) + 2;
        char *child;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        child = malloc(n);
        if (!child) {
            rc = -ENOMEM;
            break;
        }
        snprintf(child, n, "%s/%s", path, de->d_name);
        rc = rmrf(child);
        free(child);
    }
    closedir(dir);
    if (rc == 0 && rmdir(path) != 0)
        rc = -errno;
    return rc;
}

static int write_path(sdb_iosim *sim, const char *path, const void *buf,
                      size_t len, mode_t mode)
{
    const sdb_io *io = sim->real;
    int fd, rc, crc;

    fd = io->open(io->ctx, path, O_CREAT | O_TRUNC | O_WRONLY, mode);
    if (fd < 0)
        return fd;
    rc = sdb_io_pwrite_all(io, fd, buf, len, 0);
    crc = io->close(io->ctx, fd);
    return rc < 0 ? rc : crc;
}

/* Put back what a rename or unlink removed at path. */
static int restore_removed(sdb_iosim *sim, const struct dirop *d,
                           const char *path)
{
    int rc = 0;

    if (d->saved_kind == 1)
        rc = write_path(sim, path, d->saved, d->saved_len, d->saved_mode);
    else if (d->saved_kind == 2 && mkdir(path, d->saved_mode) != 0)
        rc = -errno;
    return rc;
}

static int ignore_enoent(int rc)
{
    return rc == -ENOENT ? 0 : rc;
}

static int revert_rename(sdb_iosim *sim, struct dirop *d)
{
    int rc;

    rc = ignore_enoent(sim->real->rename(sim->real->ctx, d->path2, d->path));
    if (d->file)
        set_path(&d->file->path, d->path);
    if (d->is_dir)
        rebase_all(sim, d->path2, d->path);
    if (rc == 0)
        rc = restore_removed(sim, d, d->path2);
    if (d->victim)
        set_path(&d->victim->path, d->path2);
    return rc;
}

static int revert_dirop(sdb_iosim *sim, struct dirop *d)
{
    int rc = 0;

    switch (d->kind) {
    case DOP_CREATE:
        if (d->file->path)
            rc =
                ignore_enoent(sim->real->unlink(sim->real->ctx, d->file->path));
        set_path(&d->file->path, NULL);
        break;
    case DOP_MKDIR:
        rc = rmrf(d->path);
        break;
    case DOP_RENAME:
        rc = revert_rename(sim, d);
        break;
    case DOP_UNLINK:
        rc = restore_removed(sim, d, d->path);
        if (d->file)
            set_path(&d->file->path, d->path);
        break;
    }
    return rc;
}

/* ---- power loss: file contents ---- */

/* Disjoint, non-adjacent [lo, hi) ranges, sorted by lo descending (entries
 * are visited newest-first, so appends land at the end of the array). */
struct ivset {
    struct iv {
        uint64_t lo, hi;
    } * v;
    size_t n, cap;
};

/* First index whose interval satisfies lo <= bound (or lo < bound). */
static size_t iv_first(const struct ivset *s, uint64_t bound, bool strict)
{
    size_t a = 0, b = s->n;

    while (a < b) {
        size_t m = a + (b - a) / 2;
        bool ok = strict ? s->v[m].lo < bound : s->v[m].lo <= bound;

        if (ok)
            b = m;
        else
            a = m + 1;
    }
    return a;
}

static int iv_add(struct ivset *s, uint64_t lo, uint64_t hi)
{
    size_t i = iv_first(s, hi, false), j = i;

    if (lo >= hi)
        return 0;
    while (j < s->n && s->v[j].hi >= lo) {
        lo = s->v[j].lo < lo ? s->v[j].lo : lo;
        hi = s->v[j].hi > hi ? s->v[j].hi : hi;
        j++;
    }
    if (j == i) {
        if (grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)) < 0)
            return -ENOMEM;
        memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof(*s->v));
        s->n++;
    } else {
        memmove(s->v + i + 1, s->v + j, (s->n - j) * sizeof(*s->v));
        s->n -= j - i - 1;
    }
    s->v[i].lo = lo;
    s->v[i].hi = hi;
    return 0;
}

/* What undo_piece writes over an uncovered piece. */
struct undo {
    sdb_iosim *sim;
    unsigned char *buf; /* SIM_CHUNK bytes of scratch */
    int fd;
    const struct jent *e;
    bool garble;
    uint64_t size; /* current file size: pieces are clipped to it */
};

/* Overwrite [lo, hi) with old bytes (zeros beyond them) or garbage. */
static int undo_piece(struct undo *u, uint64_t lo, uint64_t hi)
{
    unsigned char *buf = u->buf;
    const struct jent *e = u->e;
    int rc = 0;

    if (hi > u->size)
        hi = u->size;
    while (lo < hi && rc == 0) {
        size_t i, n = hi - lo > SIM_CHUNK ? SIM_CHUNK : (size_t)(hi - lo);

        for (i = 0; i < n; i++) {
            uint64_t p = lo + i;

            if (u->garble)
                buf[i] = (unsigned char)sim_rand(u->sim);
            else if (p >= e->pre_off && p < e->pre_off + e->pre_len)
                buf[i] = e->pre[p - e->pre_off];
            else
                buf[i] = 0;
        }
        rc = sdb_io_pwrite_all(u->sim->real, u->fd, buf, n, (off_t)lo);
        lo += n;
    }
    return rc;
}

/* Call undo_piece on every part of [lo, hi) that cov does not cover. */
static int undo_gaps(struct undo *u, const struct ivset *cov, uint64_t lo,
                     uint64_t hi)
{
    uint64_t cur = hi;
    size_t i;
    int rc = 0;

    for (i = iv_first(cov, hi, true); i < cov->n && cur > lo && rc == 0; i++) {
        if (cov->v[i].hi <= lo)
            break;
        if (cov->v[i].hi < cur)
            rc = undo_piece(u, cov->v[i].hi, cur);
        cur = cov->v[i].lo;
    }
    if (rc == 0 && cur > lo)
        rc = undo_piece(u, lo, cur);
    return rc;
}

static unsigned pick_mode(sdb_iosim *sim, unsigned mode)
{
    unsigned bits[3] = {0}, n = 0, b;

    for (b = 1; b <= SDB_IOSIM_GARBLE; b <<= 1)
        if (mode & b)
            bits[n++] = b;
    return n ? bits[sim_rand(sim) % n] : SDB_IOSIM_KEEP;
}

/* Revert an entry's size change, unless a later surviving entry moved it. */
static int undo_size(struct undo *u, const struct ivset *cov)
{
    const struct jent *e = u->e;
    uint64_t target = e->old_size;
    int rc;

    if (u->size != e->new_size || e->old_size == e->new_size)
        return 0;
    if (e->new_size > e->old_size) {
        uint64_t kept_end = cov->n ? cov->v[0].hi : 0;

        target = kept_end > target ? kept_end : target;
        target = target > u->size ? u->size : target;
    }
    rc = u->sim->real->ftruncate(u->sim->real->ctx, u->fd, (off_t)target);
    if (rc == 0)
        u->size = target;
    return rc;
}

static int undo_entry(struct undo *u, struct ivset *cov, unsigned mode)
{
    const struct jent *e = u->e;
    unsigned m;
    int rc = 0;

    /* a size change cannot be garbled: it survives or it does not */
    if (e->kind == JENT_SIZE)
        mode &= SDB_IOSIM_KEEP | SDB_IOSIM_DROP;
    m = pick_mode(u->sim, mode);
    if (m == SDB_IOSIM_DROP) {
        rc = undo_size(u, cov);
        u->garble = false;
        if (rc == 0 && e->kind == JENT_WRITE)
            rc = undo_gaps(u, cov, e->off, e->off + e->len);
        else if (rc == 0 && e->pre_len > 0)
            rc = undo_gaps(u, cov, e->pre_off, e->pre_off + e->pre_len);
        return rc;
    }
    if (e->kind != JENT_WRITE)
        return 0;
    if (m == SDB_IOSIM_GARBLE) {
        u->garble = true;
        rc = undo_gaps(u, cov, e->off, e->off + e->len);
    }
    return rc == 0 ? iv_add(cov, e->off, e->off + e->len) : rc;
}

static int undo_file(sdb_iosim *sim, struct simfile *f, unsigned mode)
{
    struct undo u = {.sim = sim};
    struct ivset cov = {0};
    size_t i;
    int rc;

    u.fd = sim->real->open(sim->real->ctx, f->path, O_RDWR, 0);
    if (u.fd == -ENOENT || u.fd == -EISDIR || u.fd == -ENOTDIR)
        return 0; /* gone with a reverted directory operation */
    if (u.fd < 0)
        return u.fd;
    u.buf = malloc(SIM_CHUNK);
    rc = u.buf ? fd_size(sim, u.fd, &u.size) : -ENOMEM;
    for (i = f->n; i-- > 0 && rc == 0;) {
        u.e = &f->ents[i];
        rc = undo_entry(&u, &cov, mode);
    }
    free(cov.v);
    free(u.buf);
    (void)sim->real->close(sim->real->ctx, u.fd);
    return rc;
}

int sdb_iosim_power_loss(sdb_iosim *sim, unsigned mode)
{
    struct simfile *f;
    size_t i;
    int rc = 0, r;

    mode &= SDB_IOSIM_ALL;
    if (!mode)
        return -EINVAL;
    pthread_mutex_lock(&sim->lock);
    for (i = sim->ndops; i-- > 0;) {
        r = revert_dirop(sim, sim->dops[i]);
        rc = rc < 0 ? rc : r;
    }
    for (f = sim->files; f; f = f->next) {
        if (!f->path || f->n == 0)
            continue;
        r = undo_file(sim, f, mode);
        rc = rc < 0 ? rc : r;
    }
    sim_reset(sim);
    sim->crashed = false;
    sim->crash_armed = false;
    pthread_mutex_unlock(&sim->lock);
    return rc;
}
