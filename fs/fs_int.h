/*
 * fs_int.h - shared state of the stemedb-fuse adapter (docs/fuse.md).
 * fs/ is a thin adapter: it maps FUSE inodes onto the read-only views of
 * src/view.c and includes only stemedb.h and the libfuse headers.
 *
 * Caching model (why the kernel may cache everything below data/ and
 * concepts/): nothing the daemon hands out changes behind the kernel's
 * back.  A file inode is one version of one path (its size, mtime and
 * bytes never change); a directory inode belongs to one "class" of cuts
 * at a time and lists what that class showed.  The only answers that
 * depend on who asks are the root's entries "data" and "concepts" (entry
 * timeout 0): each lookup of them picks the class of the asking process's
 * cut (fs_epoch.c).  When a process's first cut finds no other live
 * process on the class whose data/ tree the kernel holds, that tree is
 * moved on to the new cut in place and the kernel told what changed
 * (fs_advance, fs_node.h); otherwise the new class gets a tree of its
 * own.  Files are opened and directories listed without a request
 * (zero-message open/opendir), so a warm rsync of an unchanged store
 * costs a handful of requests, and one after a few writes little more.
 */
#ifndef SDB_FS_INT_H
#define SDB_FS_INT_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <sys/types.h>

#include "stemedb/stemedb.h"

/* The mount: set up by main before the session, read-only afterwards. */
struct fs_ctx {
    const char *data_dir; /* absolute */
    sdb_view *view;       /* caches are behind the view's own mutex */
    sdb_view_cut *live;   /* live cut for concepts/ (never changes) */
    struct timespec started;
    bool debug; /* SDB_FS_DEBUG: log new cuts and classes */
};

extern const struct fuse_lowlevel_ops sdb_fs_ops;

/*
 * The cut that process `tid` (a thread id from fuse_req_ctx) sees in
 * data/: one per process, so one backup run copies a single consistent
 * cut while the server writes.  A cut is taken at the process's first
 * data/ access; a process idle for 10 s or gone loses its cut.  *out is a
 * new reference.
 */
int fs_epoch_get(struct fs_ctx *fx, pid_t tid, sdb_view_cut **out);
/* Drop every epoch (at unmount). */
void fs_epoch_clear(void);

/*
 * Called once for each new process cut c, before it is used: if a class
 * of c's class already exists but the directories its cut looked at have
 * changed since (sdb_view_cut_unchanged), that class is retired, so c
 * and later cuts get a class of their own.  Takes the node lock.
 */
void fs_class_check(sdb_view_cut *c);

/* fs_advance (fs_node.h) with the listings of fs_ops.c. */
int fs_advance_cut(struct fs_ctx *fx, sdb_view_cut *c);

/* Free every node and class (at unmount, after the session ended). */
void fs_nodes_clear(void);

#endif
