/*
 * fs_int.h - shared state of the stemedb-fuse adapter (docs/fuse.md).
 * fs/ is a thin adapter: it maps FUSE paths onto the read-only views of
 * src/view.c and includes only stemedb.h and fuse.h.
 */
#ifndef SDB_FS_INT_H
#define SDB_FS_INT_H

#define FUSE_USE_VERSION 312
#include <fuse.h>
#include <stdbool.h>
#include <sys/types.h>

#include "stemedb/stemedb.h"

/* The mount: set up by main before fuse_main, read-only afterwards. */
struct fs_ctx {
    const char *data_dir; /* absolute */
    sdb_view *view;       /* caches are behind the view's own mutex */
    sdb_view_cut *live;   /* live cut for concepts/ (never changes) */
    struct timespec started;
};

extern const struct fuse_operations sdb_fs_ops;

/*
 * The cut that process `tid` (a thread id from fuse_get_context) sees in
 * data/: one per process, so one backup run copies a single consistent
 * cut while the server writes.  A cut is taken at the process's first
 * data/ access; refresh asks for a new one (listing data/ itself does,
 * once the cut is over a second old); a process idle for 10 s or gone
 * loses its cut.  *out is a new reference.
 */
int fs_epoch_get(struct fs_ctx *fx, pid_t tid, bool refresh,
                 sdb_view_cut **out);
/* Drop every epoch (at unmount). */
void fs_epoch_clear(void);

#endif
