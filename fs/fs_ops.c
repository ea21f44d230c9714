/*
 * fs_ops.c - the FUSE operations table of stemedb-fuse (low-level API;
 * libfuse's example/hello_ll.c and passthrough_hp.cc are the models).
 *
 *   /README          static text
 *   /health.json     sdb_view_health, rendered at each lookup
 *   /concepts/...    concept tree (live cut), assertions.json per concept
 *   /data/...        the data directory, one consistent cut per process
 *
 * Every handler sends exactly one reply (or fuse_reply_none for forget),
 * decided at its entry point; workers return 0 or an sdb code, which goes
 * out through sdb_err_to_errno.  Everything that would change the tree
 * answers EROFS.  fs_int.h has the caching model: nodes are immutable
 * (fs_node.c), so attributes are cached for TTL_LONG, entries below the
 * root too; "data", "concepts" and "health.json" are looked up again each
 * time.  Callbacks run on several threads: the node table has its lock,
 * the view and fs_epoch.c theirs.
 */
#define _GNU_SOURCE
#include "fs_node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define JSON_NAME "assertions.json"
/* Inode numbers shown for virtual entries: fixed, far above real ones. */
#define INO_ROOT     ((uint64_t)1 << 62)
#define INO_README   (INO_ROOT + 1)
#define INO_HEALTH   (INO_ROOT + 2)
#define INO_CONCEPTS (INO_ROOT + 3)
#define INO_VIRT_BIT ((uint64_t)1 << 63)
/* Nodes never change, so the kernel may keep what they show this long. */
#define TTL_LONG 3600.0

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

/* Set by fs_init: the kernel opens files and directories without asking. */
static bool no_open, no_opendir;

static struct fs_ctx *ctx(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static int to_errno(int rc)
{
    return sdb_err_to_errno(rc);
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

static void virt_stat(struct fs_ctx *fx, uint64_t ino, bool dir, size_t size,
                      sdb_view_stat *vs)
{
    memset(vs, 0, sizeof(*vs));
    vs->ino = ino;
    vs->is_dir = dir;
    vs->size = size;
    vs->mtime = fx->started;
    vs->can_grow = true;
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

static int health_text(struct fs_ctx *fx, char **out, size_t *len)
{
    json_t *h;
    int rc = sdb_view_health(fx->view, &h);

    if (rc < 0)
        return rc;
    *out = json_dumps(h, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!*out)
        return SDB_ENOMEM;
    *len = strlen(*out);
    return 0;
}

static char *join(const char *dir, const char *name)
{
    char *p = NULL;

    if (asprintf(&p, "%s%s%s", dir, *dir ? "/" : "", name) < 0)
        return NULL;
    return p;
}

/* ---- listings ---- */

struct acc {
    struct fs_ctx *fx;
    const struct fs_node *dir;
    struct fs_list *l;
    size_t cap;
};

static int acc_add(struct acc *a, const char *name, const sdb_view_stat *vs,
                   char *text, size_t len)
{
    struct fs_dent *d;

    if (a->l->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void *p = realloc(a->l->v, cap * sizeof(*a->l->v));
        if (!p)
            return SDB_ENOMEM;
        a->l->v = p;
        a->cap = cap;
    }
    d = &a->l->v[a->l->n];
    if (!(d->name = strdup(name)))
        return SDB_ENOMEM;
    d->vs = *vs;
    d->text = text;
    d->len = len;
    a->l->n++;
    return 0;
}

static int data_cb(void *arg, const char *name, const sdb_view_stat *vs)
{
    return acc_add(arg, name, vs, NULL, 0);
}

/* Concept directories are shown by their shown names, with an inode
 * number of their own (the db/ directories keep the real one). */
static int concept_cb(void *arg, const char *name, const sdb_view_stat *vs)
{
    struct acc *a = arg;
    char shown[1024], concept[SDB_MAX_PATH_LEN + 1], *path;
    sdb_view_stat cv = *vs;
    bool top = !*a->dir->path;
    int rc;

    if (!vs->is_dir)
        return top ? 0 : acc_add(a, name, vs, NULL, 0);
    if (sdb_view_shown_name(name, top, shown, sizeof(shown)) < 0)
        return 0;
    if (!(path = join(a->dir->path, shown)))
        return SDB_ENOMEM;
    rc = sdb_view_concept_resolve(path, concept, sizeof(concept));
    free(path);
    if (rc < 0)
        return 0;
    cv.ino = virt_ino(concept, "");
    return acc_add(a, shown, &cv, NULL, 0);
}

static int concept_json_dent(struct acc *a)
{
    char concept[SDB_MAX_PATH_LEN + 1], *text = NULL;
    sdb_view_stat vs;
    size_t len = 0;
    int rc = sdb_view_concept_resolve(a->dir->path, concept, sizeof(concept));

    if (rc == 0)
        rc = sdb_view_concept_text(a->fx->view, concept, &text, &len);
    if (rc < 0)
        return rc == SDB_ENOTFOUND ? 0 : rc;
    virt_stat(a->fx, virt_ino(concept, "/" JSON_NAME), false, len, &vs);
    rc = acc_add(a, JSON_NAME, &vs, text, len);
    if (rc < 0)
        free(text);
    return rc;
}

static int cmp_dent(const void *x, const void *y)
{
    return strcmp(((const struct fs_dent *)x)->name,
                  ((const struct fs_dent *)y)->name);
}

/* Build a directory's listing: class k's cut for data/, the live cut
 * for concepts/ (plus assertions.json below the top). */
static int list_build(struct fs_ctx *fx, const struct fs_node *dir,
                      const struct fs_class *k, struct fs_list **out)
{
    struct acc a = {fx, dir, calloc(1, sizeof(struct fs_list)), 0};
    int rc;

    if (!a.l)
        return SDB_ENOMEM;
    if (dir->area == AREA_DATA) {
        rc = sdb_view_list(k->cut, dir->path, data_cb, &a);
    } else {
        rc = sdb_view_list(fx->live, dir->rel, concept_cb, &a);
        if (rc == 0 && *dir->path)
            rc = concept_json_dent(&a);
    }
    if (rc < 0) {
        fs_list_free(a.l);
        return rc;
    }
    if (a.l->n)
        qsort(a.l->v, a.l->n, sizeof(*a.l->v), cmp_dent);
    *out = a.l;
    return 0;
}

/* The listing of dir, built at the first use and kept with the node (a
 * listing fs_advance replaces stays readable for a while), and *k, the
 * class it belongs to. */
static int list_get(struct fs_ctx *fx, struct fs_node *dir,
                    const struct fs_list **out, struct fs_class **k)
{
    for (int tries = 0; tries < 8; tries++) {
        struct fs_list *l;
        int rc;

        fs_node_lock();
        *out = dir->list;
        *k = dir->cls;
        fs_node_unlock();
        if (*out)
            return 0;
        rc = list_build(fx, dir, *k, &l);
        if (rc < 0)
            return rc;
        if ((*out = fs_node_set_list(dir, *k, l)) != NULL)
            return 0;
    }
    return SDB_EIO; /* moved on to a new cut eight times meanwhile */
}

/* fs_advance's builder: dir is a template carrying the new class. */
static int advance_build(void *arg, const struct fs_node *dir,
                         struct fs_list **out)
{
    return list_build(arg, dir, dir->cls, out);
}

int fs_advance_cut(struct fs_ctx *fx, sdb_view_cut *c)
{
    return fs_advance(c, advance_build, fx);
}

/* ---- nodes ---- */

/* Files of data/ whose versions the server replaces or recycles: read
 * through the fd the cut holds.  Segment files only grow: read by path. */
static bool held_file(const char *path)
{
    return strcmp(path, "metadata.json") == 0 ||
           strcmp(path, "db/indexes/index.snap") == 0 ||
           strncmp(path, "wal/", 4) == 0;
}

/* "db/<escaped dir>" of the concept shown at path (below concepts/). */
static int concept_rel(const char *path, char **out)
{
    char concept[SDB_MAX_PATH_LEN + 1], cdir[SDB_MAX_PATH_LEN * 3 + 1];
    int rc = sdb_view_concept_resolve(path, concept, sizeof(concept));

    if (rc == 0)
        rc = sdb_concept_to_dir(concept, cdir, sizeof(cdir), NULL);
    if (rc < 0)
        return SDB_ENOTFOUND;
    return asprintf(out, "db/%s", cdir) < 0 ? SDB_ENOMEM : 0;
}

/* Fill the rest of template t for entry d below dir, of class k. */
static int child_tmpl(const struct fs_node *dir, struct fs_class *k,
                      const struct fs_dent *d, struct fs_node *t)
{
    sdb_view_stat vs;

    if (d->vs.is_dir) {
        t->cls = k;
        return dir->area == AREA_CONCEPTS ? concept_rel(t->path, &t->rel) : 0;
    }
    if (d->text) {
        t->len = d->len;
        t->text = malloc(d->len + 1);
        if (!t->text)
            return SDB_ENOMEM;
        memcpy(t->text, d->text, d->len + 1);
        return 0;
    }
    if (dir->area == AREA_DATA && held_file(t->path))
        return sdb_view_open_file(k->cut, t->path, &t->fd, &vs);
    t->rel = dir->area == AREA_DATA ? strdup(t->path) : join(dir->rel, d->name);
    return t->rel ? 0 : SDB_ENOMEM;
}

/* The node of entry d of dir's listing of class k, with one more lookup;
 * -EAGAIN if dir has moved on to another class since. */
static int child_node(const struct fs_node *dir, struct fs_class *k,
                      const struct fs_dent *d, struct fs_node **out)
{
    struct fs_node t;
    int rc;

    memset(&t, 0, sizeof(t));
    t.fd = -1;
    t.area = dir->area;
    t.vs = d->vs;
    if (!(t.path = join(dir->path, d->name)))
        return SDB_ENOMEM;
    rc = child_tmpl(dir, k, d, &t);
    fs_node_lock();
    if (rc == 0 && dir->cls != k)
        rc = -EAGAIN; /* dir moved on to a new cut meanwhile */
    if (rc < 0) {
        fs_node_unlock();
        free(t.path);
        free(t.rel);
        free(t.text);
        if (t.fd >= 0)
            close(t.fd);
        return rc;
    }
    *out = fs_node_ref(&t);
    fs_class_touch(k);
    fs_node_unlock();
    return *out ? 0 : SDB_ENOMEM;
}

/* data/ or concepts/ in the class of the asking process's cut. */
static int area_node(struct fs_ctx *fx, pid_t pid, enum fs_area a,
                     struct fs_node **out)
{
    struct fs_node t;
    sdb_view_cut *cut;
    int rc = fs_epoch_get(fx, pid, &cut);

    if (rc < 0)
        return rc;
    memset(&t, 0, sizeof(t));
    t.fd = -1;
    t.area = a;
    if (a == AREA_DATA)
        rc = sdb_view_stat_path(cut, "", &t.vs);
    else
        virt_stat(fx, INO_CONCEPTS, true, 0, &t.vs);
    t.path = strdup("");
    t.rel = a == AREA_CONCEPTS ? strdup("db") : NULL;
    if (rc == 0 && (!t.path || (a == AREA_CONCEPTS && !t.rel)))
        rc = SDB_ENOMEM;
    fs_node_lock();
    t.cls = rc == 0 ? fs_class_get(cut) : NULL;
    if (rc == 0 && !t.cls)
        rc = SDB_ENOMEM;
    *out = rc == 0 ? fs_node_ref(&t) : NULL;
    if (*out && a == AREA_DATA)
        fs_class_set_main(t.cls);
    fs_node_unlock();
    if (rc < 0) {
        free(t.path);
        free(t.rel);
    }
    sdb_view_cut_unref(cut);
    return rc < 0 ? rc : *out ? 0 : SDB_ENOMEM;
}

/* A node for README or health.json (its bytes rendered now). */
static int text_node(struct fs_ctx *fx, enum fs_area a, struct fs_node **out)
{
    struct fs_node t;
    int rc = 0;

    memset(&t, 0, sizeof(t));
    t.fd = -1;
    t.area = a;
    if (a == AREA_README) {
        t.len = strlen(readme_text);
        t.text = strdup(readme_text);
        t.path = strdup("README");
    } else {
        rc = health_text(fx, &t.text, &t.len);
        t.path = strdup("health.json");
    }
    if (rc == 0 && (!t.text || !t.path))
        rc = SDB_ENOMEM;
    if (rc < 0) {
        free(t.text);
        free(t.path);
        return rc;
    }
    virt_stat(fx, a == AREA_README ? INO_README : INO_HEALTH, false, t.len,
              &t.vs);
    fs_node_lock();
    *out = fs_node_ref(&t);
    fs_node_unlock();
    return *out ? 0 : SDB_ENOMEM;
}

/* An entry of the root; *ttl: how long the kernel may keep the entry. */
static int root_child(fuse_req_t req, const char *name, struct fs_node **out,
                      double *ttl)
{
    pid_t pid = fuse_req_ctx(req)->pid;

    *ttl = 0; /* depends on who asks (or, for health.json, when) */
    if (strcmp(name, "README") == 0) {
        *ttl = TTL_LONG;
        return text_node(ctx(req), AREA_README, out);
    }
    if (strcmp(name, "health.json") == 0)
        return text_node(ctx(req), AREA_HEALTH, out);
    if (strcmp(name, "concepts") == 0)
        return area_node(ctx(req), pid, AREA_CONCEPTS, out);
    if (strcmp(name, "data") == 0)
        return area_node(ctx(req), pid, AREA_DATA, out);
    return SDB_ENOTFOUND;
}

static int dir_child(fuse_req_t req, struct fs_node *dir, const char *name,
                     struct fs_node **out)
{
    const struct fs_list *l;
    struct fs_dent key = {.name = (char *)name}, *d;
    struct fs_class *k;
    int rc = -EAGAIN;

    if (!dir->vs.is_dir)
        return -ENOTDIR;
    /* again with the new listing if dir moved on to a new cut meanwhile */
    for (int tries = 0; rc == -EAGAIN && tries < 8; tries++) {
        rc = list_get(ctx(req), dir, &l, &k);
        if (rc < 0)
            return rc;
        d = l->n ? bsearch(&key, l->v, l->n, sizeof(*l->v), cmp_dent) : NULL;
        rc = d ? child_node(dir, k, d, out) : SDB_ENOTFOUND;
    }
    return rc == -EAGAIN ? SDB_EIO : rc;
}

/* ---- handlers ---- */

static void fill_entry(const struct fs_node *n, double ttl,
                       struct fuse_entry_param *e)
{
    sdb_view_stat vs;

    fs_node_stat(n, &vs);
    memset(e, 0, sizeof(*e));
    e->ino = fs_node_ino(n);
    to_stat(&vs, &e->attr);
    e->attr_timeout = TTL_LONG;
    e->entry_timeout = ttl;
}

/* Replies: the entry, or an error. */
static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs_node *dir = fs_node_of(parent), *n = NULL;
    struct fuse_entry_param e;
    double ttl = TTL_LONG;
    int rc = dir->area == AREA_ROOT ? root_child(req, name, &n, &ttl)
                                    : dir_child(req, dir, name, &n);

    if (rc < 0) {
        fuse_reply_err(req, to_errno(rc));
        return;
    }
    fill_entry(n, ttl, &e);
    if (fuse_reply_entry(req, &e) != 0)
        fs_node_forget(n, 1); /* the kernel never got it */
}

/* Replies: none. */
static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    fs_node_forget(fs_node_of(ino), nlookup);
    fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count,
                            struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        fs_node_forget(fs_node_of(forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

/* Replies: the attributes (the node's, for ever). */
static void fs_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct fs_node *n = fs_node_of(ino);
    struct stat st;
    sdb_view_stat vs;

    (void)fi;
    if (n->area == AREA_ROOT)
        virt_stat(ctx(req), INO_ROOT, true, 0, &vs);
    else
        fs_node_stat(n, &vs);
    to_stat(&vs, &st);
    fuse_reply_attr(req, &st, TTL_LONG);
}

/* Replies: ENOSYS, which makes the kernel open every file without a
 * request from now on (reads name the node; nothing to release), or,
 * where the kernel cannot do that, an open with the page cache kept. */
static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if ((fi->flags & O_ACCMODE) != O_RDONLY ||
        (fi->flags & (O_TRUNC | O_CREAT))) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (no_open) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

/* Replies: as fs_open, for directories (their listings are cached). */
static void fs_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    (void)ino;
    if (no_opendir) {
        fuse_reply_err(req, ENOSYS);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

/* Bytes [off, off + size) of file node n, cut at its size. */
static int read_node(struct fs_ctx *fx, const struct fs_node *n, char *buf,
                     size_t size, off_t off, size_t *got)
{
    ssize_t r;
    int fd;

    *got = 0;
    if (off < 0 || (uint64_t)off >= n->vs.size)
        return 0;
    if (size > n->vs.size - (uint64_t)off)
        size = (size_t)(n->vs.size - (uint64_t)off);
    if (n->text) {
        memcpy(buf, n->text + off, size);
        *got = size;
        return 0;
    }
    fd = n->fd;
    if (fd < 0) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", fx->data_dir, n->rel);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return -errno;
    }
    r = pread(fd, buf, size, off);
    if (r < 0)
        r = -errno;
    if (fd != n->fd)
        close(fd);
    if (r < 0)
        return (int)r;
    *got = (size_t)r;
    return 0;
}

/* Replies: the bytes (short at the node's size), or an error. */
static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs_node *n = fs_node_of(ino);
    char *buf;
    size_t got = 0;
    int rc;

    (void)fi;
    if (n->vs.is_dir) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (!(buf = malloc(size ? size : 1))) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc = read_node(ctx(req), n, buf, size, off, &got);
    if (rc < 0)
        fuse_reply_err(req, to_errno(rc));
    else
        fuse_reply_buf(req, buf, got);
    free(buf);
}

/* One directory entry at index i (0 ".", 1 "..", then the listing) into
 * buf; the size it needs (more than room: nothing was added). */
static size_t add_dent(fuse_req_t req, struct fs_node *dir,
                       const struct fs_list *l, struct fs_class *k, size_t i,
                       bool plus, char *buf, size_t room, int *rc)
{
    const char *name = i == 0 ? "." : i == 1 ? ".." : l->v[i - 2].name;
    struct fs_node *n = NULL;
    struct fuse_entry_param e;
    double ttl = TTL_LONG;
    size_t need;

    memset(&e, 0, sizeof(e));
    if (i >= 2 && plus)
        *rc = dir->area == AREA_ROOT ? root_child(req, name, &n, &ttl)
                                     : child_node(dir, k, &l->v[i - 2], &n);
    if (*rc == -EAGAIN) /* dir moved on to a new cut: a name only */
        *rc = 0;
    if (*rc < 0)
        return 0;
    if (n) {
        fill_entry(n, ttl, &e);
    } else if (i >= 2) {
        to_stat(&l->v[i - 2].vs, &e.attr);
    } else {
        sdb_view_stat vs;
        fs_node_stat(dir, &vs);
        to_stat(&vs, &e.attr);
    }
    need = plus
               ? fuse_add_direntry_plus(req, buf, room, name, &e, (off_t)i + 1)
               : fuse_add_direntry(req, buf, room, name, &e.attr, (off_t)i + 1);
    if (need > room && n)
        fs_node_forget(n, 1);
    return need;
}

/* The root's names, as a listing (readdirplus renders their nodes). */
static const struct fs_list *root_list(void)
{
    static const struct fs_dent d[4] = {
        {.name = (char *)"README", .vs = {.ino = INO_README}},
        {.name = (char *)"concepts", .vs = {.ino = INO_CONCEPTS, .is_dir = 1}},
        {.name = (char *)"data", .vs = {.ino = INO_ROOT + 4, .is_dir = 1}},
        {.name = (char *)"health.json", .vs = {.ino = INO_HEALTH}}};
    static const struct fs_list l = {4, (struct fs_dent *)d};

    return &l;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       bool plus)
{
    struct fs_node *dir = fs_node_of(ino);
    const struct fs_list *l = NULL;
    struct fs_class *k = NULL;
    size_t pos = 0;
    char *buf = NULL;
    int rc = dir->vs.is_dir ? 0 : -ENOTDIR;

    if (rc == 0 && dir->area == AREA_ROOT)
        l = root_list();
    else if (rc == 0)
        rc = list_get(ctx(req), dir, &l, &k);
    if (rc == 0 && !(buf = malloc(size ? size : 1)))
        rc = SDB_ENOMEM;
    if (rc < 0 || !l) {
        fuse_reply_err(req, to_errno(rc < 0 ? rc : SDB_ENOMEM));
        free(buf);
        return;
    }
    for (size_t i = off < 0 ? 0 : (size_t)off; i < l->n + 2; i++) {
        size_t need =
            add_dent(req, dir, l, k, i, plus, buf + pos, size - pos, &rc);
        if (rc < 0 || need > size - pos)
            break;
        pos += need;
    }
    if (rc < 0 && pos == 0)
        fuse_reply_err(req, to_errno(rc));
    else
        fuse_reply_buf(req, buf, pos);
    free(buf);
}

/* Replies: a buffer of entries (listing fixed for the node's life). */
static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, false);
}

/* Replies: as fs_readdir, each entry with its node (one lookup each). */
static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
                           off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, true);
}

/* Replies: the data directory's file system, read-only and full. */
static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs st;

    (void)ino;
    if (statvfs(ctx(req)->data_dir, &st) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    st.f_flag |= ST_RDONLY;
    st.f_bfree = st.f_bavail = 0;
    fuse_reply_statfs(req, &st);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
    no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
    /* a node's bytes never change: no need to compare mtimes on read */
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
}

static void fs_destroy(void *userdata)
{
    (void)userdata;
    fs_nodes_clear();
}

/* ---- everything that would write: EROFS ---- */

static void rofs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                         int to_set, struct fuse_file_info *fi)
{
    (void)ino, (void)attr, (void)to_set, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void rofs_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
                       dev_t d)
{
    (void)p, (void)n, (void)m, (void)d;
    fuse_reply_err(req, EROFS);
}
static void rofs_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
    (void)p, (void)n, (void)m;
    fuse_reply_err(req, EROFS);
}
static void rofs_name(fuse_req_t req, fuse_ino_t p, const char *n)
{
    (void)p, (void)n;
    fuse_reply_err(req, EROFS);
}
static void rofs_symlink(fuse_req_t req, const char *link, fuse_ino_t p,
                         const char *n)
{
    (void)link, (void)p, (void)n;
    fuse_reply_err(req, EROFS);
}
static void rofs_rename(fuse_req_t req, fuse_ino_t p, const char *n,
                        fuse_ino_t np, const char *nn, unsigned int flags)
{
    (void)p, (void)n, (void)np, (void)nn, (void)flags;
    fuse_reply_err(req, EROFS);
}
static void rofs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np,
                      const char *nn)
{
    (void)ino, (void)np, (void)nn;
    fuse_reply_err(req, EROFS);
}
static void rofs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
                       size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino, (void)buf, (void)size, (void)off, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void rofs_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
                        struct fuse_file_info *fi)
{
    (void)p, (void)n, (void)m, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void rofs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *n,
                          const char *v, size_t s, int f)
{
    (void)ino, (void)n, (void)v, (void)s, (void)f;
    fuse_reply_err(req, EROFS);
}
static void rofs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *n)
{
    (void)ino, (void)n;
    fuse_reply_err(req, EROFS);
}
static void rofs_fallocate(fuse_req_t req, fuse_ino_t ino, int m, off_t o,
                           off_t l, struct fuse_file_info *fi)
{
    (void)ino, (void)m, (void)o, (void)l, (void)fi;
    fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops sdb_fs_ops = {
    .init = fs_init,
    .destroy = fs_destroy,
    .lookup = fs_lookup,
    .forget = fs_forget,
    .forget_multi = fs_forget_multi,
    .getattr = fs_getattr,
    .open = fs_open,
    .read = fs_read,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .readdirplus = fs_readdirplus,
    .statfs = fs_statfs,
    .setattr = rofs_setattr,
    .mknod = rofs_mknod,
    .mkdir = rofs_mkdir,
    .unlink = rofs_name,
    .rmdir = rofs_name,
    .symlink = rofs_symlink,
    .rename = rofs_rename,
    .link = rofs_link,
    .write = rofs_write,
    .create = rofs_create,
    .setxattr = rofs_setxattr,
    .removexattr = rofs_removexattr,
    .fallocate = rofs_fallocate,
};
