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
/* The class whose data/ tree the kernel was handed last (fs_advance). */
static struct fs_class *main_cls; /* protected by tree_lock */

/*
 * Classes and listings that fs_advance made unreachable: a handler may
 * still be reading one it looked up just before, so they are freed by the
 * reaper a while later (or at unmount).  Protected by tree_lock.
 */
#define GRACE_S 10.0
struct grave {
    double at;
    struct fs_class *cls;
    struct fs_list *list;
    struct grave *next;
};
static struct grave *graves;
/* For fs_advance's notices; set while the reaper runs.  tree_lock. */
static struct fuse_session *session;
static char root_path[1];
static struct fs_node root_node = {
    .area = AREA_ROOT, .path = root_path, .fd = -1, .vs = {.is_dir = true}};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Bury a class or a listing (one of them).  Under tree_lock; on ENOMEM
 * the thing is leaked rather than freed early. */
static void bury(struct fs_class *c, struct fs_list *l)
{
    struct grave *g = malloc(sizeof(*g));

    if (!g)
        return;
    g->at = now_s();
    g->cls = c;
    g->list = l;
    g->next = graves;
    graves = g;
}

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

static void class_free(struct fs_class *c)
{
    sdb_view_cut_unref(c->cut);
    free(c);
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
    if (main_cls == c)
        main_cls = NULL;
    if (session)
        bury(c, NULL); /* fs_advance may have moved a node a handler is
                          reading away from it just before */
    else
        class_free(c);
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
                                       struct fs_class *built_in,
                                       struct fs_list *list)
{
    const struct fs_list *in;

    pthread_mutex_lock(&tree_lock);
    if (node->cls != built_in) { /* fs_advance moved it meanwhile */
        fs_list_free(list);
        in = NULL;
    } else {
        if (!node->list)
            node->list = list;
        else
            fs_list_free(list);
        in = node->list;
    }
    pthread_mutex_unlock(&tree_lock);
    return in;
}

void fs_node_stat(const struct fs_node *node, sdb_view_stat *out)
{
    pthread_mutex_lock(&tree_lock);
    *out = node->vs;
    pthread_mutex_unlock(&tree_lock);
}

void fs_class_set_main(struct fs_class *k)
{
    main_cls = k;
}

/* Free what was buried before `before` (all if negative).  Under
 * tree_lock. */
static void free_graves(double before)
{
    for (struct grave **pp = &graves; *pp;) {
        struct grave *g = *pp;
        if (before >= 0 && g->at > before) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        if (g->cls)
            class_free(g->cls);
        fs_list_free(g->list);
        free(g);
    }
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
        class_free(c);
    }
    main_cls = NULL;
    free_graves(-1.0);
    pthread_mutex_unlock(&tree_lock);
}

/* ---- moving the data/ tree the kernel holds on to a newer cut ---- */

struct plan {
    struct fs_node *n;
    sdb_view_stat vs;     /* what the new cut shows for it */
    struct fs_list *list; /* its new listing, if it had one */
    bool gone, attrs, names;
};

struct notice {
    fuse_ino_t ino;
    char *name; /* NULL: the inode (attributes and cached listing) */
};

struct notices {
    struct notice *v;
    size_t n, cap;
    bool oom;
};

static void notice(struct notices *ns, fuse_ino_t ino, const char *name)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        void *v = realloc(ns->v, cap * sizeof(*ns->v));
        if (!v) {
            ns->oom = true;
            return;
        }
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n].ino = ino;
    ns->v[ns->n].name = NULL;
    if (name && !(ns->v[ns->n].name = strdup(name))) {
        ns->oom = true;
        return;
    }
    ns->n++;
}

static bool stat_same(const sdb_view_stat *a, const sdb_view_stat *b)
{
    return a->is_dir == b->is_dir && a->ino == b->ino && a->size == b->size &&
           a->mode == b->mode && a->uid == b->uid && a->gid == b->gid &&
           a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static bool dent_same(const struct fs_dent *a, const struct fs_dent *b)
{
    return stat_same(&a->vs, &b->vs) && !a->text == !b->text &&
           a->len == b->len && (!a->text || !memcmp(a->text, b->text, a->len));
}

/*
 * Compare dir's listing o with the new one: entries that went or changed
 * (files: a changed file is another node) must leave the kernel's dcache;
 * a changed set of names (or inode numbers) its cached listing.
 */
static bool list_diff(const struct fs_node *dir, const struct fs_list *o,
                      const struct fs_list *nl, struct notices *ns)
{
    size_t i = 0, j = 0;
    bool names = false;

    while (i < o->n || j < nl->n) {
        int c = i < o->n && j < nl->n ? strcmp(o->v[i].name, nl->v[j].name)
                : i < o->n            ? -1
                                      : 1;
        if (c < 0) {
            notice(ns, fs_node_ino(dir), o->v[i++].name);
            names = true;
        } else if (c > 0) {
            j++;
            names = true;
        } else {
            const struct fs_dent *a = &o->v[i++], *b = &nl->v[j++];
            if (dent_same(a, b))
                continue;
            if (!(a->vs.is_dir && b->vs.is_dir)) /* a directory is moved */
                notice(ns, fs_node_ino(dir), a->name);
            if (a->vs.ino != b->vs.ino || a->vs.is_dir != b->vs.is_dir)
                names = true;
        }
    }
    return names;
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int fs_advance(sdb_view_cut *c, fs_list_build_fn build, void *arg)
{
    struct plan *pl = NULL;
    struct notices ns = {0};
    struct fuse_session *se;
    struct fs_class *m, *k;
    char **same = NULL;
    size_t n = 0, cap = 0, n_same = 0;
    bool moved = false;
    int rc = 0;

    pthread_mutex_lock(&tree_lock);
    m = main_cls;
    se = session; /* the session outlives the loop that calls us */
    if (!se || !m || m->retired) {
        pthread_mutex_unlock(&tree_lock);
        return 0;
    }
    m->refs++; /* kept until the end */
    pthread_mutex_unlock(&tree_lock);
    /* the directories nothing changed in: their listings stay (and the
     * new cut shows them as m's did), which is most of the work saved */
    if (sdb_view_cut_carry(m->cut, c, &same, &n_same) < 0)
        n_same = 0;
    pthread_mutex_lock(&tree_lock);
    k = fs_class_get(c);
    if (main_cls != m || m->retired || !k || k == m || k->refs > 0) {
        /* moved on meanwhile, or k has a tree of its own */
        rc = 0;
        goto abandon;
    }
    for (size_t i = 0; i < HASH_SLOTS; i++)
        for (struct fs_node *nd = table[i]; nd; nd = nd->hnext) {
            if (nd->cls != m || nd->area != AREA_DATA)
                continue;
            if (n == cap) {
                void *v =
                    realloc(pl, (cap = cap ? cap * 2 : 256) * sizeof(*pl));
                if (!v) {
                    rc = SDB_ENOMEM;
                    goto abandon;
                }
                pl = v;
            }
            memset(&pl[n], 0, sizeof(*pl));
            pl[n++].n = nd;
        }
    /* what the new cut shows, nothing changed yet */
    for (size_t i = 0; i < n; i++) {
        struct plan *p = &pl[i];
        struct fs_node t;

        if (n_same &&
            bsearch(&p->n->path, same, n_same, sizeof(*same), cmp_path)) {
            p->vs = p->n->vs; /* its own stat is part of "the same" */
            continue;
        }
        if (sdb_view_stat_path(c, p->n->path, &p->vs) < 0 || !p->vs.is_dir) {
            p->gone = true; /* its parent's listing drops it */
            continue;
        }
        p->attrs = !stat_same(&p->n->vs, &p->vs);
        if (!p->n->list)
            continue;
        t = *p->n;
        t.cls = k;
        t.vs = p->vs;
        rc = build(arg, &t, &p->list);
        if (rc < 0)
            goto abandon;
        p->names = list_diff(p->n, p->n->list, p->list, &ns);
    }
    /* room for every notice the move may add: none may be lost after it */
    if (!ns.oom && ns.cap < ns.n + n) {
        void *v = realloc(ns.v, (ns.n + n) * sizeof(*ns.v));
        if (v) {
            ns.v = v;
            ns.cap = ns.n + n;
        }
        ns.oom = !v;
    }
    if (ns.oom) {
        rc = SDB_ENOMEM;
        goto abandon;
    }
    /* move every directory that is still there to k, in place */
    for (size_t i = 0; i < n; i++) {
        struct plan *p = &pl[i];
        struct fs_node **pp;

        if (p->gone)
            continue;
        for (pp = &table[p->n->hash % HASH_SLOTS]; *pp != p->n;
             pp = &(*pp)->hnext)
            ;
        *pp = p->n->hnext;
        p->n->cls = k;
        k->refs++;
        m->refs--;
        p->n->vs = p->vs;
        if (p->list) {
            bury(NULL, p->n->list);
            p->n->list = p->list;
            p->list = NULL;
        }
        p->n->hash = node_hash(p->n);
        pp = &table[p->n->hash % HASH_SLOTS];
        p->n->hnext = *pp;
        *pp = p->n;
        if (p->attrs || p->names)
            notice(&ns, fs_node_ino(p->n), NULL);
    }
    main_cls = k;
    moved = true;
abandon:
    for (size_t i = 0; i < n; i++)
        fs_list_free(pl[i].list); /* the lists not installed */
    class_put(m);
    pthread_mutex_unlock(&tree_lock);
    /* no lock held: the kernel may need a handler to finish first */
    for (size_t i = 0; i < ns.n; i++) {
        if (moved && ns.v[i].name)
            fuse_lowlevel_notify_inval_entry(se, ns.v[i].ino, ns.v[i].name,
                                             strlen(ns.v[i].name));
        else if (moved)
            fuse_lowlevel_notify_inval_inode(se, ns.v[i].ino, 0, 0);
        free(ns.v[i].name);
    }
    free(ns.v);
    free(pl);
    for (size_t i = 0; i < n_same; i++)
        free(same[i]);
    free(same);
    return moved ? (int)ns.n : rc;
}

bool fs_class_is_main(sdb_view_cut *c)
{
    uint64_t key = sdb_view_cut_class(c);
    bool is;

    pthread_mutex_lock(&tree_lock);
    is = main_cls && (key ? main_cls->key == key : main_cls->cut == c);
    pthread_mutex_unlock(&tree_lock);
    return is;
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
        if (k->used <= before) {
            k->retired = true;
            if (k == main_cls)
                main_cls = NULL; /* its tree is going: nothing to advance */
        }
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
        free_graves(now_s() - GRACE_S);
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
    session = se;
    reaper_stop = false;
    if (pthread_create(&reaper, NULL, reaper_main, se) != 0)
        return -1;
    reaper_on = true;
    return 0;
}

void fs_reaper_stop(void)
{
    pthread_mutex_lock(&tree_lock);
    session = NULL;
    pthread_mutex_unlock(&tree_lock);
    if (!reaper_on)
        return;
    pthread_mutex_lock(&reaper_lock);
    reaper_stop = true;
    pthread_cond_signal(&reaper_cond);
    pthread_mutex_unlock(&reaper_lock);
    pthread_join(reaper, NULL);
    reaper_on = false;
}
