/*
 * fs_node.c - the node table of stemedb-fuse (fs_node.h).  Nodes are
 * found by what they show: a directory by (area, class, path), a file by
 * (area, path, inode, size, mtime, owner, mode, bytes of a virtual file).
 * Equal answers thus give the kernel the same inode, whose attributes and
 * page cache stay valid, and a changed answer gives it a new one.  A
 * node's address is its FUSE inode number; it lives until the kernel
 * forgets its last lookup.
 */
#include "fs_node.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HASH_SLOTS 65536
#define RETIRE_S   30.0 /* SDB_FS_RETIRE_S overrides it (tests) */

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_node *table[HASH_SLOTS]; /* protected by tree_lock */
static struct fs_class *classes;          /* protected by tree_lock */
static char root_path[1];
static struct fs_node root_node = {
    .area = AREA_ROOT, .path = root_path, .fd = -1, .vs = {.is_dir = true}};

void fs_node_lock(void)
{
    pthread_mutex_lock(&tree_lock);
}

void fs_node_unlock(void)
{
    pthread_mutex_unlock(&tree_lock);
}

struct fs_node *fs_node_of(fuse_ino_t ino)
{
    return ino == FUSE_ROOT_ID ? &root_node : (struct fs_node *)(uintptr_t)ino;
}

fuse_ino_t fs_node_ino(const struct fs_node *n)
{
    return n == &root_node ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t node_hash(const struct fs_node *t)
{
    uint64_t h = fnv(1469598103934665603ULL, &t->area, sizeof(t->area));

    h = fnv(h, t->path, strlen(t->path));
    if (t->vs.is_dir)
        return fnv(h, &t->cls, sizeof(t->cls));
    h = fnv(h, &t->vs.ino, sizeof(t->vs.ino));
    h = fnv(h, &t->vs.size, sizeof(t->vs.size));
    h = fnv(h, &t->vs.mtime.tv_sec, sizeof(t->vs.mtime.tv_sec));
    h = fnv(h, &t->vs.mtime.tv_nsec, sizeof(t->vs.mtime.tv_nsec));
    return t->text ? fnv(h, t->text, t->len) : h;
}

static bool node_equal(const struct fs_node *a, const struct fs_node *t)
{
    if (a->hash != t->hash || a->area != t->area ||
        a->vs.is_dir != t->vs.is_dir || strcmp(a->path, t->path) != 0)
        return false;
    if (t->vs.is_dir)
        return a->cls == t->cls;
    return a->vs.ino == t->vs.ino && a->vs.size == t->vs.size &&
           a->vs.mtime.tv_sec == t->vs.mtime.tv_sec &&
           a->vs.mtime.tv_nsec == t->vs.mtime.tv_nsec &&
           a->vs.mode == t->vs.mode && a->vs.uid == t->vs.uid &&
           a->vs.gid == t->vs.gid && !a->text == !t->text && a->len == t->len &&
           (!a->text || !memcmp(a->text, t->text, a->len));
}

static void tmpl_release(struct fs_node *t)
{
    free(t->path);
    free(t->rel);
    free(t->text);
    if (t->fd >= 0)
        close(t->fd);
}

struct fs_node *fs_node_ref(struct fs_node *t)
{
    struct fs_node **slot, *n;

    t->hash = node_hash(t);
    slot = &table[t->hash % HASH_SLOTS];
    for (n = *slot; n; n = n->hnext)
        if (node_equal(n, t)) {
            n->nlookup++;
            tmpl_release(t);
            return n;
        }
    if (!(n = malloc(sizeof(*n)))) {
        tmpl_release(t);
        return NULL;
    }
    *n = *t;
    n->nlookup = 1;
    n->list = NULL;
    n->hnext = *slot;
    *slot = n;
    if (n->cls)
        n->cls->refs++;
    return n;
}

static void class_put(struct fs_class *c)
{
    struct fs_class **pp;

    if (!c || --c->refs > 0)
        return;
    for (pp = &classes; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    sdb_view_cut_unref(c->cut);
    free(c);
}

void fs_list_free(struct fs_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].text);
    }
    free(l->v);
    free(l);
}

/* Unlink and free n.  Under tree_lock. */
static void node_free(struct fs_node *n)
{
    struct fs_node **pp = &table[n->hash % HASH_SLOTS];

    while (*pp && *pp != n)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = n->hnext;
    class_put(n->cls);
    fs_list_free(n->list);
    tmpl_release(n);
    free(n);
}

void fs_node_forget(struct fs_node *node, uint64_t n)
{
    if (node == &root_node)
        return;
    pthread_mutex_lock(&tree_lock);
    node->nlookup = node->nlookup > n ? node->nlookup - n : 0;
    if (node->nlookup == 0)
        node_free(node);
    pthread_mutex_unlock(&tree_lock);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct fs_class *fs_class_get(sdb_view_cut *c)
{
    uint64_t key = sdb_view_cut_class(c);
    struct fs_class *k;

    for (k = classes; k; k = k->next)
        if (key ? k->key == key : k->cut == c)
            break;
    if (!k && (k = calloc(1, sizeof(*k)))) {
        k->key = key;
        k->cut = sdb_view_cut_ref(c);
        k->next = classes;
        classes = k;
    }
    if (k) {
        k->used = now_s();
        k->retired = false;
    }
    return k;
}

void fs_class_touch(struct fs_class *k)
{
    if (k)
        k->used = now_s();
}

void fs_class_check(sdb_view_cut *c)
{
    uint64_t key = sdb_view_cut_class(c);
    sdb_view_cut *old = NULL;
    struct fs_class *k;

    if (!key)
        return;
    pthread_mutex_lock(&tree_lock);
    for (k = classes; k && !old; k = k->next)
        if (k->key == key)
            old = sdb_view_cut_ref(k->cut);
    pthread_mutex_unlock(&tree_lock);
    if (!old || sdb_view_cut_unchanged(old)) {
        sdb_view_cut_unref(old);
        return;
    }
    pthread_mutex_lock(&tree_lock);
    for (k = classes; k; k = k->next)
        if (k->key == key && k->cut == old)
            k->key = 0; /* matched by its own cut only, which nobody asks */
    pthread_mutex_unlock(&tree_lock);
    sdb_view_cut_unref(old);
}

const struct fs_list *fs_node_set_list(struct fs_node *node,
                                       struct fs_list *list)
{
    const struct fs_list *in;

    pthread_mutex_lock(&tree_lock);
    if (!node->list)
        node->list = list;
    else
        fs_list_free(list);
    in = node->list;
    pthread_mutex_unlock(&tree_lock);
    return in;
}

void fs_nodes_clear(void)
{
    pthread_mutex_lock(&tree_lock);
    for (size_t i = 0; i < HASH_SLOTS; i++)
        while (table[i])
            node_free(table[i]);
    fs_list_free(root_node.list);
    root_node.list = NULL;
    /* classes whose nodes were never created (a failed lookup) */
    while (classes) {
        struct fs_class *c = classes;
        classes = c->next;
        sdb_view_cut_unref(c->cut);
        free(c);
    }
    pthread_mutex_unlock(&tree_lock);
}

/* ---- the reaper ---- */

struct inval {
    fuse_ino_t parent;
    char *name;
};

static pthread_t reaper;
static bool reaper_on;
static pthread_mutex_t reaper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_cond = PTHREAD_COND_INITIALIZER;
static bool reaper_stop; /* protected by reaper_lock */
static double retire_s = RETIRE_S;

/* Entries to invalidate below the area nodes of classes idle since
 * `before`, which are marked retired.  Under tree_lock. */
static size_t reap_collect(double before, struct inval **out)
{
    struct inval *v = NULL;
    size_t n = 0, cap = 0;

    for (size_t i = 0; i < HASH_SLOTS; i++)
        for (struct fs_node *nd = table[i]; nd; nd = nd->hnext) {
            if (!nd->cls || nd->cls->retired || nd->cls->used > before ||
                *nd->path || !nd->list)
                continue;
            for (size_t j = 0; j < nd->list->n; j++) {
                if (n == cap) {
                    void *p =
                        realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));
                    if (!p)
                        goto out;
                    v = p;
                }
                v[n].parent = fs_node_ino(nd);
                if ((v[n].name = strdup(nd->list->v[j].name)))
                    n++;
            }
        }
out:
    for (struct fs_class *k = classes; k; k = k->next)
        if (k->used <= before)
            k->retired = true;
    *out = v;
    return n;
}

static void *reaper_main(void *arg)
{
    struct fuse_session *se = arg;
    struct timespec until;

    pthread_mutex_lock(&reaper_lock);
    while (!reaper_stop) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&reaper_cond, &reaper_lock, &until);
        if (reaper_stop)
            break;
        pthread_mutex_unlock(&reaper_lock);
        struct inval *v;
        pthread_mutex_lock(&tree_lock);
        size_t n = reap_collect(now_s() - retire_s, &v);
        pthread_mutex_unlock(&tree_lock);
        /* no lock held: the kernel may need a handler to finish first */
        for (size_t i = 0; i < n; i++) {
            fuse_lowlevel_notify_inval_entry(se, v[i].parent, v[i].name,
                                             strlen(v[i].name));
            free(v[i].name);
        }
        free(v);
        pthread_mutex_lock(&reaper_lock);
    }
    pthread_mutex_unlock(&reaper_lock);
    return NULL;
}

int fs_reaper_start(struct fuse_session *se)
{
    const char *env = getenv("SDB_FS_RETIRE_S");

    if (env && atof(env) > 0)
        retire_s = atof(env);
    reaper_stop = false;
    if (pthread_create(&reaper, NULL, reaper_main, se) != 0)
        return -1;
    reaper_on = true;
    return 0;
}

void fs_reaper_stop(void)
{
    if (!reaper_on)
        return;
    pthread_mutex_lock(&reaper_lock);
    reaper_stop = true;
    pthread_cond_signal(&reaper_cond);
    pthread_mutex_unlock(&reaper_lock);
    pthread_join(reaper, NULL);
    reaper_on = false;
}
