/*
 * stemedb-backup - hot backups of a StemeDB data directory, their
 * verification, retention and transfer to S3-compatible storage (rclone).
 *
 *   stemedb-backup [backup] --data-dir DIR --dest BACKUPS [--incremental-from
 * PREV] stemedb-backup verify BACKUP [--wal-archive DIR] [--no-trial-restore]
 *   stemedb-backup info BACKUP
 *   stemedb-backup expire --dest BACKUPS --keep N [--wal-archive DIR]
 * [--dry-run] stemedb-backup upload BACKUP REMOTE:PATH stemedb-backup download
 * REMOTE:PATH/stemedb-backup-... BACKUPS
 *
 * Exit codes: 0 success, 1 the operation failed (or verify found problems),
 * 2 usage error.  The last stdout line of a backup is the new backup's path.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2 };

static void usage(FILE *f)
{
    fputs(
        "usage: stemedb-backup [backup] --data-dir DIR --dest BACKUPS_DIR\n"
        "                      [--incremental-from PREV_BACKUP] [--json]\n"
        "                      [--no-status] [--upload REMOTE:PATH]\n"
        "       stemedb-backup verify BACKUP|--latest BACKUPS_DIR\n"
        "                      [--wal-archive DIR]\n"
        "                      [--no-trial-restore] [--json]\n"
        "       stemedb-backup info BACKUP\n"
        "       stemedb-backup expire --dest BACKUPS_DIR --keep N\n"
        "                      [--wal-archive DIR] [--dry-run] [--json]\n"
        "       stemedb-backup upload BACKUP REMOTE:PATH\n"
        "       stemedb-backup download REMOTE:PATH/BACKUP_NAME BACKUPS_DIR\n"
        "\n"
        "backup   copy a live or stopped store into\n"
        "         BACKUPS_DIR/stemedb-backup-YYYYMMDD-HHMMSS/ (wal/, db/,\n"
        "         store-metadata.json, metadata.json with a checksummed\n"
        "         manifest).  The last line of stdout is the backup's path.\n"
        "         Records the outcome in DIR/backup-status.json for\n"
        "         /metrics.  --incremental-from hard-links files that did not\n"
        "         change since PREV_BACKUP instead of copying them.\n"
        "         --upload (or $STEMEDB_BACKUP_REMOTE) copies the new backup\n"
        "         to REMOTE:PATH/<name> with rclone; a failed upload counts\n"
        "         as a failed backup.\n"
        "verify   check the manifest, every file's size and checksum, extra\n"
        "         files, WAL continuity (and the archive after the backup\n"
        "         with --wal-archive), then restore into a scratch\n"
        "         directory and compare the assertion count.\n"
        "expire   keep the newest N backups; remove older ones and the\n"
        "         archived WAL segments no kept backup needs.\n"
        "upload / download\n"
        "         rclone copy --checksum --immutable --fast-list (never\n"
        "         sync, never delete), then rclone check --one-way.\n"
        "         $STEMEDB_RCLONE\n"
        "         overrides the rclone binary; AWS_CA_BUNDLE is unset for it.\n"
        "\n"
        "Environment: STEMEDB_DATA_DIR (default for --data-dir),\n"
        "STEMEDB_BACKUP_DIR (default for --dest and --latest),\n"
        "STEMEDB_WAL_ARCHIVE_DIR (default for --wal-archive),\n"
        "STEMEDB_BACKUP_REMOTE (default for --upload).\n"
        "Exit: 0 ok, 1 failed or problems found, 2 usage.\n",
        f);
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v && *v ? v : dflt;
}

/* Run argv (rclone) with AWS_CA_BUNDLE removed; returns its exit code. */
static int run(const char *const argv[])
{
    pid_t pid;
    int st;

    fprintf(stderr, "stemedb-backup: running");
    for (int i = 0; argv[i]; i++)
        fprintf(stderr, " %s", argv[i]);
    fputc('\n', stderr);
    pid = fork();
    if (pid < 0)
        return 127;
    if (pid == 0) {
        unsetenv("AWS_CA_BUNDLE");
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "stemedb-backup: cannot run %s: %s\n", argv[0],
                strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return 127;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* rclone copy SRC DST, then check --one-way. */
static int rclone_copy(const char *src, const char *dst)
{
    const char *rclone = env_or("STEMEDB_RCLONE", "rclone");
    /* --fast-list: one recursive listing (fewer LIST calls, and s3rver
     * omits nested prefixes from delimiter listings) */
    const char *copy[] = {
        rclone,        "copy", "--checksum", "--immutable", "--s3-no-head",
        "--fast-list", src,    dst,          NULL};
    const char *check[] = {rclone, "check", "--one-way", "--fast-list",
                           src,    dst,     NULL};
    int rc = run(copy);

    if (rc == 0)
        rc = run(check);
    if (rc != 0)
        fprintf(stderr, "stemedb-backup: rclone failed (exit %d)\n", rc);
    return rc == 0 ? EX_OK : EX_FAIL;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');

    while (s && s[1] == 0 && s > p) {
        const char *q = s - 1;
        while (q > p && *q != '/')
            q--;
        return *q == '/' ? q + 1 : q;
    }
    return s ? s + 1 : p;
}

static int cmd_transfer(bool up, int argc, char **argv)
{
    char dst[4352];
    char name[256];

    if (argc != 3) {
        usage(stderr);
        return EX_USAGE;
    }
    snprintf(name, sizeof(name), "%s", base_name(argv[1]));
    name[strcspn(name, "/")] = 0;
    if (strncmp(name, "stemedb-backup-", 15) != 0) {
        fprintf(stderr,
                "stemedb-backup: %s does not name a backup "
                "(stemedb-backup-...)\n",
                argv[1]);
        return EX_USAGE;
    }
    if (up) {
        json_t *rep = NULL;
        sdb_error err = {0};

        /* only complete, intact backups leave the machine */
        if (sdb_backup_verify(argv[1], NULL, false, &rep, &err) != 0) {
            fprintf(stderr, "stemedb-backup: refusing to upload: %s\n",
                    err.message);
            json_decref(rep);
            return EX_FAIL;
        }
        json_decref(rep);
    }
    if (snprintf(dst, sizeof(dst), "%s%s%s", argv[2],
                 argv[2][strlen(argv[2]) - 1] == '/' ? "" : "/",
                 name) >= (int)sizeof(dst))
        return EX_USAGE;
    return rclone_copy(argv[1], dst);
}

static void print_json(json_t *rep)
{
    char *s = json_dumps(rep, JSON_INDENT(2) | JSON_SORT_KEYS);

    if (s)
        puts(s);
    free(s);
}

static int cmd_backup(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"dest", required_argument, NULL, 'o'},
        {"incremental-from", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},
        {"no-status", no_argument, NULL, 'n'},
        {"upload", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *upload = env_or("STEMEDB_BACKUP_REMOTE", NULL);
    sdb_backup_opts o = {0};
    bool json = false, status = true;
    json_t *rep = NULL;
    sdb_error err = {0};
    int c, rc;

    o.data_dir = env_or("STEMEDB_DATA_DIR", "data");
    o.dest = env_or("STEMEDB_BACKUP_DIR", NULL);
    while ((c = getopt_long(argc, argv, "d:o:i:jnu:h", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            o.data_dir = optarg;
            break;
        case 'u':
            upload = optarg;
            break;
        case 'o':
            o.dest = optarg;
            break;
        case 'i':
            o.incremental_from = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'n':
            status = false;
            break;
        case 'h':
            usage(stdout);
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind != argc || !o.dest) {
        fprintf(stderr, "stemedb-backup: %s\n",
                o.dest ? "unexpected argument" : "--dest is required");
        usage(stderr);
        return EX_USAGE;
    }
    rc = sdb_backup_create(&o, &rep, &err);
    if (rc < 0) {
        fprintf(stderr, "stemedb-backup: backup of %s failed: %s\n", o.data_dir,
                err.message[0] ? err.message : sdb_strerror(rc));
        if (status && sdb_backup_record_status(o.data_dir, false, NULL, 0) < 0)
            fprintf(stderr,
                    "stemedb-backup: cannot update %s/backup-status"
                    ".json\n",
                    o.data_dir);
        return EX_FAIL;
    }
    if (upload) {
        char dst[4352];
        const char *bp = json_string_value(json_object_get(rep, "path"));

        snprintf(dst, sizeof(dst), "%s%s%s", upload,
                 upload[strlen(upload) - 1] == '/' ? "" : "/", base_name(bp));
        if (rclone_copy(bp, dst) != EX_OK) {
            fprintf(stderr,
                    "stemedb-backup: %s was made but the upload to "
                    "%s failed\n",
                    bp, upload);
            if (status)
                sdb_backup_record_status(o.data_dir, false, NULL, 0);
            json_decref(rep);
            return EX_FAIL;
        }
    }
    if (status &&
        sdb_backup_record_status(
            o.data_dir, true, json_string_value(json_object_get(rep, "path")),
            (uint64_t)json_integer_value(json_object_get(rep, "lsn"))) < 0)
        fprintf(
            stderr,
            "stemedb-backup: warning: cannot update %s/backup-status.json\n",
            o.data_dir);
    if (json) {
        print_json(rep);
    } else {
        printf("backup_type: %s\nlsn: %" JSON_INTEGER_FORMAT
               "\nassertion_count: %" JSON_INTEGER_FORMAT
               "\nwal_segment_count: %" JSON_INTEGER_FORMAT
               "\nfiles: %" JSON_INTEGER_FORMAT
               "\nbytes_copied: %" JSON_INTEGER_FORMAT
               "\nbytes_linked: %" JSON_INTEGER_FORMAT "\nseconds: %.3f\n",
               json_string_value(json_object_get(rep, "backup_type")),
               json_integer_value(json_object_get(rep, "lsn")),
               json_integer_value(json_object_get(rep, "assertion_count")),
               json_integer_value(json_object_get(rep, "wal_segment_count")),
               json_integer_value(json_object_get(rep, "files")),
               json_integer_value(json_object_get(rep, "bytes")),
               json_integer_value(json_object_get(rep, "bytes_linked")),
               json_real_value(json_object_get(rep, "seconds")));
    }
    printf("%s\n", json_string_value(json_object_get(rep, "path")));
    json_decref(rep);
    return EX_OK;
}

/* The newest complete backup (by name) in dir. */
static int newest_backup(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char best[256] = "";

    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL) {
        char meta[4400];
        if (strncmp(de->d_name, "stemedb-backup-", 15) ||
            strlen(de->d_name) >= sizeof(best) || strcmp(de->d_name, best) <= 0)
            continue;
        snprintf(meta, sizeof(meta), "%s/%s/metadata.json", dir, de->d_name);
        if (access(meta, R_OK) == 0)
            snprintf(best, sizeof(best), "%s", de->d_name);
    }
    closedir(d);
    if (!best[0])
        return -1;
    snprintf(out, cap, "%s/%s", dir, best);
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option lo[] = {
        {"wal-archive", required_argument, NULL, 'a'},
        {"no-trial-restore", no_argument, NULL, 'T'},
        {"latest", no_argument, NULL, 'L'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *archive = env_or("STEMEDB_WAL_ARCHIVE_DIR", NULL);
    bool latest = false;
    char newest[4352] = "";
    bool trial = true, json = false;
    json_t *rep = NULL, *pr, *p;
    sdb_error err = {0};
    size_t i;
    int c, rc;

    while ((c = getopt_long(argc, argv, "a:TLjh", lo, NULL)) != -1) {
        switch (c) {
        case 'L':
            latest = true;
            break;
        case 'a':
            archive = optarg;
            break;
        case 'T':
            trial = false;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage(stdout);
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return EX_USAGE;
    }
    if (latest) {
        if (newest_backup(argv[optind], newest, sizeof(newest)) < 0) {
            fprintf(stderr, "stemedb-backup: no backup in %s\n", argv[optind]);
            return EX_FAIL;
        }
        argv[optind] = newest;
    }
    rc = sdb_backup_verify(argv[optind], archive, trial, &rep, &err);
    if (!rep) {
        fprintf(stderr, "stemedb-backup: cannot verify %s: %s\n", argv[optind],
                err.message);
        return EX_FAIL;
    }
    if (json) {
        print_json(rep);
    } else {
        pr = json_object_get(rep, "problems");
        json_array_foreach(pr, i, p)
            printf("PROBLEM: %s\n", json_string_value(p));
        printf("%s: %s (%" JSON_INTEGER_FORMAT
               " files, LSN %" JSON_INTEGER_FORMAT ")\n",
               argv[optind], rc == 0 ? "OK" : "FAILED",
               json_integer_value(json_object_get(rep, "files")),
               json_integer_value(json_object_get(rep, "lsn")));
    }
    json_decref(rep);
    return rc == 0 ? EX_OK : EX_FAIL;
}

static int cmd_info(int argc, char **argv)
{
    char path[4200];
    json_error_t jerr;
    json_t *doc, *files;

    if (argc != 2) {
        usage(stderr);
        return EX_USAGE;
    }
    snprintf(path, sizeof(path), "%s/metadata.json", argv[1]);
    doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "stemedb-backup: %s: %s\n", path, jerr.text);
        return EX_FAIL;
    }
    files = json_object_get(doc, "files");
    json_incref(files);
    json_object_del(doc, "files");
    json_object_set_new(doc, "file_count",
                        json_integer((json_int_t)json_array_size(files)));
    json_decref(files);
    print_json(doc);
    json_decref(doc);
    return EX_OK;
}

static int cmd_expire(int argc, char **argv)
{
    static const struct option lo[] = {
        {"dest", required_argument, NULL, 'o'},
        {"keep", required_argument, NULL, 'k'},
        {"wal-archive", required_argument, NULL, 'a'},
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *dest = env_or("STEMEDB_BACKUP_DIR", NULL),
               *archive = env_or("STEMEDB_WAL_ARCHIVE_DIR", NULL);
    long keep = -1;
    bool dry = false, json = false;
    json_t *rep = NULL, *v;
    sdb_error err = {0};
    size_t i;
    int c;

    while ((c = getopt_long(argc, argv, "o:k:a:njh", lo, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'o':
            dest = optarg;
            break;
        case 'k':
            keep = strtol(optarg, &end, 10);
            if (*end || keep < 1 || keep > 100000) {
                fprintf(stderr, "stemedb-backup: --keep wants 1..100000\n");
                return EX_USAGE;
            }
            break;
        case 'a':
            archive = optarg;
            break;
        case 'n':
            dry = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage(stdout);
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind != argc || !dest || keep < 1) {
        fprintf(stderr, "stemedb-backup: expire needs --dest and --keep\n");
        return EX_USAGE;
    }
    if (sdb_backup_expire(dest, (unsigned)keep, archive, dry, &rep, &err) < 0) {
        fprintf(stderr, "stemedb-backup: expire failed: %s\n", err.message);
        return EX_FAIL;
    }
    if (json) {
        print_json(rep);
    } else {
        json_array_foreach(json_object_get(rep, "removed"), i, v)
            printf("%s backup %s\n", dry ? "would remove" : "removed",
                   json_string_value(v));
        json_array_foreach(json_object_get(rep, "wal_removed"), i, v)
            printf("%s archived WAL %s\n", dry ? "would remove" : "removed",
                   json_string_value(v));
        printf(
            "kept %zu backup(s); oldest LSN still needed: %" JSON_INTEGER_FORMAT
            "\n",
            json_array_size(json_object_get(rep, "kept")),
            json_integer_value(json_object_get(rep, "oldest_needed_lsn")));
    }
    json_decref(rep);
    return EX_OK;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "expire"))
        return cmd_expire(argc - 1, argv + 1);
    if (!strcmp(cmd, "upload"))
        return cmd_transfer(true, argc - 1, argv + 1);
    if (!strcmp(cmd, "download"))
        return cmd_transfer(false, argc - 1, argv + 1);
    if (!strcmp(cmd, "backup"))
        return cmd_backup(argc - 1, argv + 1);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EX_OK;
    }
    if (cmd[0] && cmd[0] != '-') {
        fprintf(stderr, "stemedb-backup: unknown command '%s'\n", cmd);
        usage(stderr);
        return EX_USAGE;
    }
    return cmd_backup(argc, argv);
}
