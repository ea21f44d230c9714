/*
 * fs_node.h - the inodes of stemedb-fuse (fs_node.c): the nodes handed to
 * the kernel, the classes of cuts that directories belong to, lookup
 * counts, and moving the data/ tree on to a new cut (fs_int.h explains
 * the caching model).
 *
 * Lock: tree_lock (fs_node.c) protects the node table, every nlookup, the
 * class list and class refs, the install of a listing, and the class,
 * attributes and listing of a directory below data/, which fs_advance may
 * change (read a class with its listing, attributes with fs_node_stat; a
 * listing or a class it replaces stays readable for GRACE_S seconds).  It is
 * taken after nothing else and the view's own mutex may be taken under it.
 * Everything else in a node is written before the node is published and
 * never changes, so handlers read it without the lock.
 */
#ifndef SDB_FS_NODE_H
#define SDB_FS_NODE_H

#include "fs_int.h"

#include <stddef.h>
#include <stdint.h>

enum fs_area { AREA_ROOT, AREA_README, AREA_HEALTH, AREA_DATA, AREA_CONCEPTS };

/* Cuts that show the same thing share a class (sdb_view_cut_class); a cut
 * of class 0 has a class of its own. */
struct fs_class {
    uint64_t key;      /* sdb_view_cut_class, 0 for a class of one cut */
    sdb_view_cut *cut; /* answers for data/ below this class; one ref */
    unsigned refs;     /* nodes of this class; protected by tree_lock */
    double used;       /* last chosen by a lookup; protected by tree_lock */
    bool retired;      /* entries invalidated; protected by tree_lock */
    struct fs_class *next;
};

/* One entry of a listing; everything owned by the listing. */
struct fs_dent {
    char *name;
    sdb_view_stat vs;
    char *text; /* assertions.json bytes (concepts/), else NULL */
    size_t len;
};

struct fs_list {
    size_t n;
    struct fs_dent *v; /* sorted by name (strcmp) */
};

struct fs_node {
    uint64_t hash;
    struct fs_node *hnext; /* protected by tree_lock */
    uint64_t nlookup;      /* protected by tree_lock */
    enum fs_area area;
    struct fs_class *cls; /* directories below data/ and concepts/;
                             data/: may change (tree_lock) */
    char *path;           /* data/: relative to the data dir ("" for data/
                             itself); concepts/: the shown path */
    char *rel;            /* files read by path: relative to the data dir */
    sdb_view_stat vs;     /* what the node shows (a directory below
                             data/: until fs_advance, under tree_lock) */
    char *text;           /* virtual file bytes, or NULL */
    size_t len;
    int fd;               /* held version (WAL, metadata.json, index.snap) */
    struct fs_list *list; /* directories: under tree_lock */
};

/* The node behind a FUSE inode number (the root has its own). */
struct fs_node *fs_node_of(fuse_ino_t ino);
fuse_ino_t fs_node_ino(const struct fs_node *n);

/*
 * The node equal to *t, created from it if there is none, with one more
 * lookup.  Ownership of t->path, t->rel, t->text and t->fd passes to the
 * call (freed or closed when an equal node exists).  For a directory
 * below data/ or concepts/, t->cls must be a class returned by
 * fs_class_get in the same critical section: call with tree_lock held via
 * fs_node_lock.  NULL on ENOMEM.
 */
struct fs_node *fs_node_ref(struct fs_node *t);

/* Drop n lookups; the node is freed at 0 (and its class with its last
 * node). */
void fs_node_forget(struct fs_node *node, uint64_t n);

/* The class of cut c (found or created; c gets another reference when a
 * class is created for it), marked used now.  Under fs_node_lock.  NULL
 * on ENOMEM. */
struct fs_class *fs_class_get(sdb_view_cut *c);

/* Mark class k (NULL: none) used now, so the reaper leaves it alone while
 * a process walks its tree from a directory it holds.  Under
 * fs_node_lock. */
void fs_class_touch(struct fs_class *k);

/* Install list, built with class built_in, as node's listing unless one
 * is there; returns the one in place (frees list if it lost), or NULL
 * (list freed) if the node has moved to another class meanwhile. */
const struct fs_list *fs_node_set_list(struct fs_node *node,
                                       struct fs_class *built_in,
                                       struct fs_list *list);
void fs_list_free(struct fs_list *l);

/* A node's attributes as they are now: fs_advance may change them for a
 * directory below data/. */
void fs_node_stat(const struct fs_node *node, sdb_view_stat *out);

/* Record that the kernel was just handed k's data/ node.  Under
 * fs_node_lock. */
void fs_class_set_main(struct fs_class *k);

/* Does cut c belong to the class fs_class_set_main named last? */
bool fs_class_is_main(sdb_view_cut *c);

/* Build the listing of directory node *dir as class dir->cls shows it
 * (called under fs_node_lock: must not take it). */
typedef int (*fs_list_build_fn)(void *arg, const struct fs_node *dir,
                                struct fs_list **out);

/*
 * Move the data/ tree that the kernel holds for the main class on to cut
 * c, in place: every directory node still there joins c's class with the
 * attributes and listing c shows, and the kernel is told to drop the
 * entries that changed (a changed file is another node) and the cached
 * listings and attributes of directories that changed; everything else
 * it keeps, pages included.  For the first cut of a process when no other
 * process is using the main class (fs_epoch.c); a newer cut then costs the
 * kernel only what changed.  Returns the notices sent, or an sdb error
 * (nothing changed then).
 */
int fs_advance(sdb_view_cut *c, fs_list_build_fn build, void *arg);

/*
 * The reaper: a thread that, every second, retires the classes whose
 * trees no lookup has reached for RETIRE_S seconds.  Retiring invalidates the
 * kernel's entries below the class's data/ and concepts/ nodes, so the kernel
 * forgets the nodes it is not using, and the class (with its cut and the
 * cut's fds) goes with the last one.  Nothing it shows changes: a process
 * still inside the tree looks its entries up again and gets the same
 * nodes.  Start after the session is mounted; stop before unmounting.
 */
int fs_reaper_start(struct fuse_session *se);
void fs_reaper_stop(void);

void fs_node_lock(void);
void fs_node_unlock(void);

#endif
