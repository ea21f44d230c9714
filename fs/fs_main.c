/*
 * fs_main.c - stemedb-fuse: mount a read-only view of a StemeDB data
 * directory (docs/fuse.md).  Staged main: options, data directory, view,
 * the FUSE session (SIGTERM/SIGINT/SIGHUP end it and unmount), cleanup.
 */
#define _GNU_SOURCE
#include "fs_node.h"

#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#define MOUNT_OPTS "ro,default_permissions,fsname=stemedb,subtype=stemedb"

static void usage(FILE *f, const char *argv0)
{
    fprintf(
        f,
        "Usage: %s [-f] [-d] [--data-dir DIR] [-o OPT[,OPT...]] "
        "MOUNTPOINT\n"
        "\n"
        "Mount a read-only view of a StemeDB data directory (the server\n"
        "may be running, stopped, or DIR may be a backup):\n"
        "  concepts/    the concept tree; assertions.json per concept\n"
        "  data/        metadata.json, wal/, db/ cut at the last committed\n"
        "               record: `rsync -a MOUNT/data/ COPY/` is a "
        "consistent backup\n"
        "  health.json  LOCK holder, metadata counts, last WAL LSN\n"
        "\n"
        "Options:\n"
        "  --data-dir DIR  data directory (default $STEMEDB_DATA_DIR or "
        "./data)\n"
        "  -f              stay in the foreground\n"
        "  -d              FUSE debug output (implies -f)\n"
        "  -o OPT          extra mount options (e.g. allow_other)\n"
        "  -h, --help      this text;  -V, --version  the version\n"
        "\n"
        "Always mounted with -o " MOUNT_OPTS ".\n"
        "Unmount with `fusermount3 -u MOUNTPOINT` or SIGTERM.\n",
        argv0);
}

struct opts {
    const char *data_dir;
    const char *mountpoint;
    const char *extra[16];
    int n_extra;
    bool foreground, debug;
};

/* 0 ok, 1 exit 0 (help/version), -1 usage error. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    o->data_dir = getenv("STEMEDB_DATA_DIR");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, argv[0]);
            return 1;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("stemedb-fuse %s\n", SDB_VERSION);
            return 1;
        } else if (!strcmp(a, "-f")) {
            o->foreground = true;
        } else if (!strcmp(a, "-d")) {
            o->debug = true;
        } else if (!strcmp(a, "--data-dir") && i + 1 < argc) {
            o->data_dir = argv[++i];
        } else if (!strncmp(a, "--data-dir=", 11)) {
            o->data_dir = a + 11;
        } else if (!strcmp(a, "-o") && i + 1 < argc && o->n_extra < 16) {
            o->extra[o->n_extra++] = argv[++i];
        } else if (a[0] != '-' && !o->mountpoint) {
            o->mountpoint = a;
        } else {
            fprintf(stderr, "stemedb-fuse: unexpected argument '%s'\n", a);
            return -1;
        }
    }
    if (!o->mountpoint) {
        fprintf(stderr, "stemedb-fuse: MOUNTPOINT is required\n");
        return -1;
    }
    if (!o->data_dir || !*o->data_dir)
        o->data_dir = "data";
    return 0;
}

/*
 * The FUSE session, staged (libfuse hello_ll.c): an exit caused by
 * SIGTERM/SIGINT/SIGHUP, which unmounts cleanly, returns 0, and the
 * thread count is set explicitly.
 */
static int run_fuse(int argc, char **argv, struct fs_ctx *fx)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts opts = {0};
    struct fuse_loop_config *lc = NULL;
    struct fuse_session *se;
    int rc = 1, res;

    if (fuse_parse_cmdline(&args, &opts) != 0 || !opts.mountpoint)
        goto free_args;
    se = fuse_session_new(&args, &sdb_fs_ops, sizeof(sdb_fs_ops), fx);
    if (!se)
        goto free_args;
    if (fuse_set_signal_handlers(se) != 0)
        goto destroy;
    if (fuse_session_mount(se, opts.mountpoint) != 0)
        goto remove_handlers;
    if (fuse_daemonize(opts.foreground) != 0)
        goto unmount;
    lc = fuse_loop_cfg_create();
    if (!lc)
        goto unmount;
    fuse_loop_cfg_set_max_threads(lc, 16);
    fuse_loop_cfg_set_idle_threads(lc, 4);
    if (fs_reaper_start(se) != 0)
        fprintf(stderr, "stemedb-fuse: no reaper thread: idle cuts stay "
                        "open until the kernel forgets them\n");
    res = fuse_session_loop_mt(se, lc);
    fs_reaper_stop();
    rc = res == 0 || res == SIGTERM || res == SIGINT || res == SIGHUP ? 0 : 1;
    if (rc)
        fprintf(stderr, "stemedb-fuse: session ended: %s\n", strerror(-res));
    fuse_loop_cfg_destroy(lc);
unmount:
    fuse_session_unmount(se);
remove_handlers:
    fuse_remove_signal_handlers(se);
destroy:
    fuse_session_destroy(se);
free_args:
    free(opts.mountpoint);
    fuse_opt_free_args(&args);
    return rc;
}

/* Readers of many files at once (rclone) need fds for the held versions. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    struct fs_ctx fx = {0};
    char *fargv[40], dir[PATH_MAX];
    struct stat st;
    int fargc = 0, rc = parse_args(argc, argv, &o);

    if (rc != 0) {
        if (rc < 0)
            usage(stderr, argv[0]);
        return rc < 0 ? 2 : 0;
    }
    if (!realpath(o.data_dir, dir) || stat(dir, &st) < 0 ||
        !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "stemedb-fuse: data directory %s: %s\n", o.data_dir,
                errno ? strerror(errno) : "not a directory");
        return 1;
    }
    fx.data_dir = dir;
    fx.debug = getenv("SDB_FS_DEBUG") && *getenv("SDB_FS_DEBUG");
    raise_nofile();
    clock_gettime(CLOCK_REALTIME, &fx.started);
    rc = sdb_view_open(dir, &fx.view);
    if (rc == 0)
        rc = sdb_view_cut_new(fx.view, true, &fx.live);
    if (rc < 0) {
        fprintf(stderr, "stemedb-fuse: %s: %s\n", dir, sdb_strerror(rc));
        goto close_view;
    }
    fargv[fargc++] = argv[0];
    fargv[fargc++] = (char *)o.mountpoint;
    fargv[fargc++] = (char *)"-o";
    fargv[fargc++] = (char *)MOUNT_OPTS;
    for (int i = 0; i < o.n_extra; i++) {
        fargv[fargc++] = (char *)"-o";
        fargv[fargc++] = (char *)o.extra[i];
    }
    if (o.foreground)
        fargv[fargc++] = (char *)"-f";
    if (o.debug)
        fargv[fargc++] = (char *)"-d";
    fargv[fargc] = NULL;
    rc = run_fuse(fargc, fargv, &fx);
    fs_nodes_clear();
    fs_epoch_clear();
close_view:
    sdb_view_cut_unref(fx.live);
    sdb_view_close(fx.view);
    return rc == 0 ? 0 : 1;
}
