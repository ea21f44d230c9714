/*
 * fs_ops.c - the FUSE operations table of stemedb-fuse (high-level,
 * path-based API; libfuse's example/passthrough.c is the model).
 *
 *   /README          static text
 *   /health.json     sdb_view_health, rendered at getattr/open
 *   /concepts/...    concept tree (live cut), assertions.json per concept
 *   /data/...        the data directory, one consistent cut per process
 *
 * Every handler answers exactly once, through its return value: 0 / bytes,
 * or -errno (sdb codes go through sdb_err_to_errno).  Everything that
 * would change the tree returns -EROFS.  Callbacks run on several threads:
 * handles are per open, and shared state lives in the view (own mutex)
 * and in fs_epoch.c (own mutex).
 */
#define _GNU_SOURCE
#include "fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define JSON_NAME "assertions.json"
/* Inode numbers of virtual entries: fixed, far above real ones. */
#define INO_ROOT     ((uint64_t)1 << 62)
#define INO_README   (INO_ROOT + 1)
#define INO_HEALTH   (INO_ROOT + 2)
#define INO_CONCEPTS (INO_ROOT + 3)
#define INO_VIRT_BIT ((uint64_t)1 << 63)
#define FILE_MAGIC   0x53444246u

static const char readme_text[] =
    "StemeDB, mounted read-only by stemedb-fuse (docs/fuse.md).\n"
    "\n"
    "concepts/     one directory per concept path; assertions.json holds the\n"
    "              current (non-retracted) assertions, newest first, as the\n"
    "              HTTP API shows them; @seg-* are the raw segment files.\n"
    "              Names that are not plain file names keep their escaped\n"
    "              form (%XX).\n"
    "data/         the data directory with every file cut at its last\n"
    "              committed record: `rsync -a MOUNT/data/ COPY/` (or an S3\n"
    "              sync) is a consistent backup.  Each process sees one cut\n"
    "              for as long as it keeps reading.\n"
    "health.json   LOCK holder, counts from metadata.json, last WAL LSN.\n";

enum area {
    AREA_NONE,
    AREA_ROOT,
    AREA_README,
    AREA_HEALTH,
    AREA_DATA,
    AREA_CONCEPTS
};

/* An open file: bytes in text, or fd cut at st.size. */
struct fs_file {
    unsigned magic; /* FILE_MAGIC; directory handles are cuts or NULL */
    sdb_view_stat st;
    int fd;
    char *text;
    sdb_view_cut *cut; /* the cut the file was opened in; one reference */
};

static struct fs_ctx *ctx(void)
{
    return fuse_get_context()->private_data;
}

static int to_errno(int rc)
{
    return rc >= 0 ? rc : -sdb_err_to_errno(rc);
}

/* Split a FUSE path into its area and the rest ("" if none). */
static enum area classify(const char *path, const char **rest)
{
    static const struct {
        const char *name;
        enum area a;
    } top[] = {{"README", AREA_README},
               {"health.json", AREA_HEALTH},
               {"data", AREA_DATA},
               {"concepts", AREA_CONCEPTS}};

    *rest = "";
    if (strcmp(path, "/") == 0)
        return AREA_ROOT;
    for (size_t i = 0; i < sizeof(top) / sizeof(top[0]); i++) {
        size_t n = strlen(top[i].name);
        if (strncmp(path + 1, top[i].name, n) != 0)
            continue;
        if (path[1 + n] == 0)
            return top[i].a;
        if (path[1 + n] == '/' && top[i].a >= AREA_DATA) {
            *rest = path + 2 + n;
            return top[i].a;
        }
    }
    return AREA_NONE;
}

static void to_stat(const sdb_view_stat *vs, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = (ino_t)vs->ino;
    /* real files keep their owner and mode, so a copy can be served from */
    st->st_mode = (vs->is_dir ? S_IFDIR : S_IFREG) | (vs->mode     ? vs->mode
                                                      : vs->is_dir ? 0555
                                                                   : 0444);
    st->st_nlink = vs->is_dir ? 2 : 1;
    st->st_uid = vs->mode ? vs->uid : getuid();
    st->st_gid = vs->mode ? vs->gid : getgid();
    st->st_size = (off_t)vs->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((vs->size + 511) / 512);
    st->st_mtim = vs->mtime;
    st->st_ctim = vs->mtime;
    st->st_atim = vs->mtime;
}

static void virt_stat(uint64_t ino, bool dir, size_t size, sdb_view_stat *vs)
{
    memset(vs, 0, sizeof(*vs));
    vs->ino = ino;
    vs->is_dir = dir;
    vs->size = size;
    vs->mtime = ctx()->started;
    vs->can_grow = true;
}

static int health_text(char **out, size_t *len)
{
    json_t *h;
    int rc = sdb_view_health(ctx()->view, &h);

    if (rc < 0)
        return rc;
    *out = json_dumps(h, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!*out)
        return SDB_ENOMEM;
    *len = strlen(*out);
    return 0;
}

/* ---- concepts/ ---- */

/* Where a path below concepts/ points. */
struct cpath {
    char concept[SDB_MAX_PATH_LEN + 1];  /* "" for concepts/ itself */
    char rel[SDB_MAX_PATH_LEN * 3 + 64]; /* "db/<dir>[/<seg file>]" */
    bool json;                           /* .../assertions.json */
};

static int concept_parse(const char *rest, struct cpath *cp)
{
    char shown[4096], dir[SDB_MAX_PATH_LEN * 3 + 1];
    const char *base = strrchr(rest, '/');
    const char *last = base ? base + 1 : rest;
    int rc;

    memset(cp, 0, sizeof(*cp));
    if (!*rest)
        return 0;
    cp->json = strcmp(last, JSON_NAME) == 0;
    if (last[0] == '@' || cp->json) {
        if (!base)
            return -ENOENT; /* no files at the top of concepts/ */
        snprintf(shown, sizeof(shown), "%.*s", (int)(base - rest), rest);
    } else {
        snprintf(shown, sizeof(shown), "%s", rest);
        last = NULL;
    }
    rc = sdb_view_concept_resolve(shown, cp->concept, sizeof(cp->concept));
    if (rc == 0)
        rc = sdb_concept_to_dir(cp->concept, dir, sizeof(dir), NULL);
    if (rc < 0)
        return -ENOENT;
    snprintf(cp->rel, sizeof(cp->rel), "db/%s%s%s", dir, last ? "/" : "",
             last && !cp->json ? last : "");
    if (cp->json)
        cp->rel[strlen(cp->rel) - 1] = 0; /* the concept dir itself */
    return 0;
}

/* A stable inode number for a virtual entry: FNV-1a of its name. */
static uint64_t virt_ino(const char *concept, const char *suffix)
{
    uint64_t h = 1469598103934665603ULL;

    for (const char *p = concept; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (const char *p = suffix; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (h >> 2) | INO_VIRT_BIT;
}

static int concept_stat(const char *rest, sdb_view_stat *vs)
{
    struct cpath cp;
    char *text = NULL;
    size_t len = 0;
    int rc = concept_parse(rest, &cp);

    if (rc < 0)
        return rc;
    if (!*rest) {
        virt_stat(INO_CONCEPTS, true, 0, vs);
        return 0;
    }
    rc = sdb_view_stat_path(ctx()->live, cp.rel, vs);
    if (rc == 0 && vs->is_dir && !cp.json)
        vs->ino = virt_ino(cp.concept, "");
    if (rc < 0 || !cp.json)
        return to_errno(rc);
    rc = sdb_view_concept_text(ctx()->view, cp.concept, &text, &len);
    free(text);
    if (rc == 0)
        virt_stat(virt_ino(cp.concept, "/" JSON_NAME), false, len, vs);
    return to_errno(rc);
}

/* ---- getattr ---- */

static int area_stat(enum area a, const char *rest, sdb_view_stat *vs)
{
    sdb_view_cut *cut;
    size_t len;
    char *text;
    int rc;

    switch (a) {
    case AREA_ROOT:
        virt_stat(INO_ROOT, true, 0, vs);
        return 0;
    case AREA_README:
        virt_stat(INO_README, false, strlen(readme_text), vs);
        return 0;
    case AREA_HEALTH:
        rc = health_text(&text, &len);
        if (rc == 0)
            free(text);
        virt_stat(INO_HEALTH, false, rc == 0 ? len : 0, vs);
        return to_errno(rc);
    case AREA_DATA:
        rc = fs_epoch_get(ctx(), fuse_get_context()->pid, false, &cut);
        if (rc == 0) {
            rc = sdb_view_stat_path(cut, rest, vs);
            sdb_view_cut_unref(cut);
        }
        return to_errno(rc);
    case AREA_CONCEPTS:
        return concept_stat(rest, vs);
    default:
        return -ENOENT;
    }
}

static int fs_getattr(const char *path, struct stat *st,
                      struct fuse_file_info *fi)
{
    struct fs_file *h = fi ? (struct fs_file *)(uintptr_t)fi->fh : NULL;
    sdb_view_stat vs;
    const char *rest = "";
    enum area a;
    int rc;

    if (h && h->magic == FILE_MAGIC) { /* fstat: what this open sees */
        to_stat(&h->st, st);
        return 0;
    }
    a = classify(path, &rest);
    rc = area_stat(a, rest, &vs);
    if (rc == 0)
        to_stat(&vs, st);
    return rc;
}

/* ---- directories ---- */

struct fill {
    void *buf;
    fuse_fill_dir_t filler;
    bool plus;
    bool concepts; /* map directory names to shown names */
    bool top;      /* listing concepts/ itself */
};

static int fill_one(struct fill *f, const char *name, const sdb_view_stat *vs)
{
    struct stat st;

    to_stat(vs, &st);
    return f->filler(f->buf, name, &st, 0,
                     f->plus ? FUSE_FILL_DIR_PLUS : (enum fuse_fill_dir_flags)0)
               ? 1
               : 0;
}

static int fill_cb(void *arg, const char *name, const sdb_view_stat *vs)
{
    struct fill *f = arg;
    char shown[1024];

    if (!f->concepts)
        return fill_one(f, name, vs);
    if (!vs->is_dir)
        return f->top ? 0 : fill_one(f, name, vs);
    if (sdb_view_shown_name(name, f->top, shown, sizeof(shown)) < 0)
        return 0;
    f->plus = false; /* concept dir inodes differ from the db/ ones */
    return fill_one(f, shown, vs);
}

static int list_root(struct fill *f)
{
    static const char *const names[] = {"README", "health.json", "concepts",
                                        "data"};
    char path[32];
    sdb_view_stat vs;
    const char *rest = "";

    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "/%s", names[i]);
        enum area a = classify(path, &rest);
        if (area_stat(a, rest, &vs) == 0 && fill_one(f, names[i], &vs))
            break;
    }
    return 0;
}

static int list_concepts(struct fill *f, const char *rest)
{
    struct cpath cp;
    sdb_view_stat vs;
    char jpath[4200];
    int rc = concept_parse(rest, &cp);

    if (rc < 0)
        return rc;
    f->concepts = true;
    f->top = !*rest;
    rc = sdb_view_list(ctx()->live, *rest ? cp.rel : "db", fill_cb, f);
    if (rc == 0 && *rest) {
        snprintf(jpath, sizeof(jpath), "%s/%s", rest, JSON_NAME);
        if (concept_stat(jpath, &vs) == 0) {
            f->plus = false;
            fill_one(f, JSON_NAME, &vs);
        }
    }
    return to_errno(rc < 0 ? rc : 0);
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
    const char *rest = "";
    sdb_view_cut *cut = NULL;
    int rc = 0;

    if (classify(path, &rest) == AREA_DATA)
        rc = fs_epoch_get(ctx(), fuse_get_context()->pid, !*rest, &cut);
    fi->fh = (uint64_t)(uintptr_t)cut;
    return to_errno(rc);
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    sdb_view_cut_unref((sdb_view_cut *)(uintptr_t)fi->fh);
    return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
                      off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    struct fill f = {buf, filler, (flags & FUSE_READDIR_PLUS) != 0, false,
                     false};
    const char *rest = "";
    enum area a = classify(path, &rest);
    int rc;

    (void)off;
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    switch (a) {
    case AREA_ROOT:
        return list_root(&f);
    case AREA_DATA:
        rc =
            sdb_view_list((sdb_view_cut *)(uintptr_t)fi->fh, rest, fill_cb, &f);
        return to_errno(rc < 0 ? rc : 0);
    case AREA_CONCEPTS:
        return list_concepts(&f, rest);
    default:
        return -ENOTDIR;
    }
}

/* ---- files ---- */

/* Render a virtual file into h (README, health.json, assertions.json). */
static int open_text(struct fs_file *h, enum area a, const char *rest)
{
    struct cpath cp;
    size_t len = 0;
    uint64_t ino = a == AREA_README ? INO_README : INO_HEALTH;
    int rc = 0;

    if (a == AREA_README) {
        h->text = strdup(readme_text);
        len = strlen(readme_text);
        rc = h->text ? 0 : SDB_ENOMEM;
    } else if (a == AREA_HEALTH) {
        rc = health_text(&h->text, &len);
    } else {
        rc = concept_parse(rest, &cp);
        if (rc == 0)
            rc = sdb_view_concept_text(ctx()->view, cp.concept, &h->text, &len);
        ino = virt_ino(cp.concept, "/" JSON_NAME);
    }
    if (rc == 0)
        virt_stat(ino, false, len, &h->st);
    h->st.can_grow = a != AREA_README; /* rendered again at each open */
    return rc;
}

static int open_in(struct fs_file *h, enum area a, const char *rest)
{
    struct cpath cp;
    int rc;

    if (a == AREA_README || a == AREA_HEALTH)
        return open_text(h, a, rest);
    if (a == AREA_DATA) {
        rc = fs_epoch_get(ctx(), fuse_get_context()->pid, false, &h->cut);
        return rc < 0 ? rc : sdb_view_open_file(h->cut, rest, &h->fd, &h->st);
    }
    if (a != AREA_CONCEPTS)
        return -ENOENT;
    rc = concept_parse(rest, &cp);
    if (rc == 0 && cp.json)
        return open_text(h, a, rest);
    h->cut = sdb_view_cut_ref(ctx()->live);
    return rc < 0 ? rc : sdb_view_open_file(h->cut, cp.rel, &h->fd, &h->st);
}

static void file_free(struct fs_file *h)
{
    if (h->fd >= 0)
        close(h->fd);
    free(h->text);
    sdb_view_cut_unref(h->cut);
    free(h);
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    struct fs_file *h;
    const char *rest = "";
    enum area a = classify(path, &rest);
    int rc;

    if ((fi->flags & O_ACCMODE) != O_RDONLY ||
        (fi->flags & (O_TRUNC | O_CREAT)))
        return -EROFS;
    if (!(h = calloc(1, sizeof(*h))))
        return -ENOMEM;
    h->fd = -1;
    h->magic = FILE_MAGIC;
    rc = open_in(h, a, rest);
    if (rc < 0) {
        file_free(h);
        return to_errno(rc);
    }
    fi->keep_cache = !h->st.can_grow;
    fi->direct_io = h->st.can_grow;
    fi->noflush = 1; /* nothing to flush: saves a request per close */
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    struct fs_file *h = (struct fs_file *)(uintptr_t)fi->fh;
    uint64_t end = h->st.size;
    ssize_t n;

    (void)path;
    if (off < 0 || (uint64_t)off >= end)
        return 0;
    if (size > end - (uint64_t)off)
        size = (size_t)(end - (uint64_t)off);
    if (h->text) {
        memcpy(buf, h->text + off, size);
        return (int)size;
    }
    n = pread(h->fd, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    file_free((struct fs_file *)(uintptr_t)fi->fh);
    return 0;
}

static int fs_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    if (statvfs(ctx()->data_dir, st) < 0)
        return -errno;
    st->f_flag |= ST_RDONLY;
    st->f_bfree = st->f_bavail = 0;
    return 0;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    /* 0: sizes are never stale after an append (ECOSYSTEM.md section 3).
     * SDB_FS_TIMEOUT overrides both, for benchmarks only. */
    cfg->entry_timeout =
        getenv("SDB_FS_TIMEOUT") ? atof(getenv("SDB_FS_TIMEOUT")) : 0;
    cfg->attr_timeout = cfg->entry_timeout;
    cfg->negative_timeout = 0;
    cfg->kernel_cache = 0;
    cfg->direct_io = 0;
    return fuse_get_context()->private_data;
}

/* ---- everything that would write: EROFS ---- */

static int rofs_path(const char *p)
{
    (void)p;
    return -EROFS;
}
static int rofs_mode(const char *p, mode_t m)
{
    (void)p, (void)m;
    return -EROFS;
}
static int rofs_two(const char *a, const char *b)
{
    (void)a, (void)b;
    return -EROFS;
}
static int rofs_rename(const char *a, const char *b, unsigned int flags)
{
    (void)a, (void)b, (void)flags;
    return -EROFS;
}
static int rofs_mknod(const char *p, mode_t m, dev_t d)
{
    (void)p, (void)m, (void)d;
    return -EROFS;
}
static int rofs_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{
    (void)p, (void)m, (void)fi;
    return -EROFS;
}
static int rofs_chown(const char *p, uid_t u, gid_t g,
                      struct fuse_file_info *fi)
{
    (void)p, (void)u, (void)g, (void)fi;
    return -EROFS;
}
static int rofs_truncate(const char *p, off_t o, struct fuse_file_info *fi)
{
    (void)p, (void)o, (void)fi;
    return -EROFS;
}
static int rofs_write(const char *p, const char *b, size_t n, off_t o,
                      struct fuse_file_info *fi)
{
    (void)p, (void)b, (void)n, (void)o, (void)fi;
    return -EROFS;
}
static int rofs_create(const char *p, mode_t m, struct fuse_file_info *fi)
{
    (void)p, (void)m, (void)fi;
    return -EROFS;
}
static int rofs_utimens(const char *p, const struct timespec tv[2],
                        struct fuse_file_info *fi)
{
    (void)p, (void)tv, (void)fi;
    return -EROFS;
}
static int rofs_setxattr(const char *p, const char *n, const char *v, size_t s,
                         int f)
{
    (void)p, (void)n, (void)v, (void)s, (void)f;
    return -EROFS;
}
static int rofs_removexattr(const char *p, const char *n)
{
    (void)p, (void)n;
    return -EROFS;
}
static int rofs_fallocate(const char *p, int m, off_t o, off_t l,
                          struct fuse_file_info *fi)
{
    (void)p, (void)m, (void)o, (void)l, (void)fi;
    return -EROFS;
}

const struct fuse_operations sdb_fs_ops = {
    .init = fs_init,
    .getattr = fs_getattr,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .releasedir = fs_releasedir,
    .open = fs_open,
    .read = fs_read,
    .release = fs_release,
    .statfs = fs_statfs,
    .mkdir = rofs_mode,
    .unlink = rofs_path,
    .rmdir = rofs_path,
    .symlink = rofs_two,
    .link = rofs_two,
    .rename = rofs_rename,
    .mknod = rofs_mknod,
    .chmod = rofs_chmod,
    .chown = rofs_chown,
    .truncate = rofs_truncate,
    .write = rofs_write,
    .create = rofs_create,
    .utimens = rofs_utimens,
    .setxattr = rofs_setxattr,
    .removexattr = rofs_removexattr,
    .fallocate = rofs_fallocate,
};
