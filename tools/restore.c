/*
 * stemedb-restore - restore a backup, optionally rolled forward through the
 * WAL archive to a point in time or an LSN.
 *
 *   stemedb-restore BACKUP --data-dir DIR [--wal-archive DIR|REMOTE:PATH]
 *                   [--until RFC3339 | --until-lsn N] [--dry-run] [--json]
 *
 * Never deletes: the current DIR is renamed to DIR.backup.TIMESTAMP once the
 * restored copy has been assembled, replayed and synced.
 * Exit codes: 0 restored (or plan valid with --dry-run), 1 failed, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stemedb/stemedb.h"

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE = 2 };

static void usage(FILE *f)
{
    fputs("usage: stemedb-restore BACKUP --data-dir DIR\n"
          "                       [--wal-archive DIR|REMOTE:PATH]\n"
          "                       [--until RFC3339 | --until-lsn N]\n"
          "                       [--dry-run] [--json] [--verbose]\n"
          "\n"
          "Checks the backup's manifest and the free space, assembles the\n"
          "store in DIR.restore-TIMESTAMP, adds archived WAL segments that\n"
          "continue the backup (a missing segment fails the restore), stops\n"
          "exactly at the target (record LSN or record timestamp, inclusive),\n"
          "opens the result to replay and checkpoint it, then renames the\n"
          "current DIR to DIR.backup.TIMESTAMP and the restored copy into\n"
          "place.  Stop the server first.  A REMOTE:PATH archive is fetched\n"
          "with rclone into DIR.wal-archive-TIMESTAMP first.\n"
          "\n"
          "Exit: 0 restored (--dry-run: plan valid), 1 failed, 2 usage.\n",
          f);
}

static void log_stderr(void *arg, sdb_log_level level, const char *msg)
{
    (void)arg;
    if (level <= SDB_LOG_INFO)
        fprintf(stderr, "stemedb-restore: %s\n", msg);
}

/* Fetch a remote archive with rclone (copy, never sync). */
static int fetch_archive(const char *remote, const char *local)
{
    const char *rclone = getenv("STEMEDB_RCLONE");
    const char *argv[] = {rclone && *rclone ? rclone : "rclone",
                          "copy",
                          "--checksum",
                          "--s3-no-head",
                          "--fast-list",
                          remote,
                          local,
                          NULL};
    pid_t pid;
    int st;

    fprintf(stderr, "stemedb-restore: fetching WAL archive %s into %s\n",
            remote, local);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        unsetenv("AWS_CA_BUNDLE");
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Run stemedb-fsck -n DIR if it sits next to this binary. */
static void run_fsck(const char *self, const char *dir)
{
    char path[4200], cmd[8600];
    const char *slash = strrchr(self, '/');
    int rc;

    if (!slash)
        return;
    snprintf(path, sizeof(path), "%.*s/stemedb-fsck", (int)(slash - self),
             self);
    if (access(path, X_OK) != 0)
        return;
    snprintf(cmd, sizeof(cmd), "'%s' -n '%s' >&2", path, dir);
    if (strchr(dir, '\'') || strchr(path, '\''))
        return;
    rc = system(cmd);
    fprintf(stderr, "stemedb-restore: stemedb-fsck -n exit status %d%s\n",
            WIFEXITED(rc) ? WEXITSTATUS(rc) : -1,
            WIFEXITED(rc) && WEXITSTATUS(rc) == 0 ? " (clean)" : "");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"wal-archive", required_argument, NULL, 'a'},
        {"until", required_argument, NULL, 't'},
        {"until-lsn", required_argument, NULL, 'l'},
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    sdb_restore_opts o = {0};
    bool json = false, verbose = false;
    const char *archive = getenv("STEMEDB_WAL_ARCHIVE_DIR");
    char fetched[4200] = "";
    json_t *rep = NULL;
    sdb_error err = {0};
    int c, rc;

    o.data_dir = getenv("STEMEDB_DATA_DIR");
    if (archive && !*archive)
        archive = NULL;
    while ((c = getopt_long(argc, argv, "d:a:t:l:njvh", lo, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd':
            o.data_dir = optarg;
            break;
        case 'a':
            archive = optarg;
            break;
        case 't':
            if (sdb_time_parse(optarg, &o.until_us) < 0) {
                fprintf(stderr, "stemedb-restore: --until wants RFC 3339, "
                                "e.g. 2026-02-11T14:30:00Z\n");
                return EX_USAGE;
            }
            o.has_until_time = true;
            break;
        case 'l':
            errno = 0;
            o.until_lsn = strtoull(optarg, &end, 10);
            if (*end || errno || !*optarg || optarg[0] == '-') {
                fprintf(stderr, "stemedb-restore: --until-lsn wants a "
                                "number\n");
                return EX_USAGE;
            }
            o.has_until_lsn = true;
            break;
        case 'n':
            o.dry_run = true;
            break;
        case 'j':
            json = true;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            usage(stdout);
            return EX_OK;
        default:
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind + 1 != argc || !o.data_dir) {
        fprintf(stderr, "stemedb-restore: %s\n",
                !o.data_dir ? "--data-dir is required"
                            : "exactly one BACKUP is required");
        usage(stderr);
        return EX_USAGE;
    }
    if (o.has_until_lsn && o.has_until_time) {
        fprintf(stderr, "stemedb-restore: give --until or --until-lsn, not "
                        "both\n");
        return EX_USAGE;
    }
    o.backup = argv[optind];
    if (verbose)
        o.log = log_stderr;
    if (archive && strchr(archive, ':') && access(archive, F_OK) != 0) {
        char st[32];
        time_t t = time(NULL);
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(st, sizeof(st), "%Y%m%d-%H%M%S", &tm);
        snprintf(fetched, sizeof(fetched), "%s.wal-archive-%s", o.data_dir, st);
        if (mkdir(fetched, 0755) < 0 || fetch_archive(archive, fetched) < 0) {
            fprintf(stderr, "stemedb-restore: cannot fetch %s\n", archive);
            return EX_FAIL;
        }
        archive = fetched;
    }
    o.wal_archive = archive;
    rc = sdb_restore(&o, &rep, &err);
    if (rc < 0) {
        fprintf(stderr, "stemedb-restore: restore failed: %s\n",
                err.message[0] ? err.message : sdb_strerror(rc));
        return EX_FAIL;
    }
    if (!o.dry_run)
        run_fsck(argv[0], o.data_dir);
    if (json) {
        char *s = json_dumps(rep, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
    } else {
        json_t *notes = json_object_get(rep, "notes"), *n;
        size_t i;

        json_array_foreach(notes, i, n)
            printf("note: %s\n", json_string_value(n));
        printf("backup: %s (LSN %" JSON_INTEGER_FORMAT ")\n", o.backup,
               json_integer_value(json_object_get(rep, "backup_lsn")));
        printf(
            "archived WAL segments used: %" JSON_INTEGER_FORMAT "\n",
            json_integer_value(json_object_get(rep, "archived_segments_used")));
        printf("LSN reached: %" JSON_INTEGER_FORMAT "\n",
               json_integer_value(json_object_get(rep, "target_lsn_reached")));
        if (json_object_get(rep, "target_time_reached"))
            printf("time reached: %s\n", json_string_value(json_object_get(
                                             rep, "target_time_reached")));
        if (o.dry_run) {
            printf(
                "dry run: would restore into %s\n",
                json_string_value(json_object_get(rep, "would_restore_into")));
            if (json_object_get(rep, "would_move_existing_to"))
                printf("dry run: would move the current %s to %s\n", o.data_dir,
                       json_string_value(
                           json_object_get(rep, "would_move_existing_to")));
        } else {
            printf("assertions restored: %" JSON_INTEGER_FORMAT "\n",
                   json_integer_value(json_object_get(rep, "assertion_count")));
            printf(
                "retractions restored: %" JSON_INTEGER_FORMAT "\n",
                json_integer_value(json_object_get(rep, "retraction_count")));
            printf("WAL records replayed: %" JSON_INTEGER_FORMAT "\n",
                   json_integer_value(json_object_get(rep, "replayed")));
            if (json_object_get(rep, "previous_data_moved_to"))
                printf("previous data kept in: %s\n",
                       json_string_value(
                           json_object_get(rep, "previous_data_moved_to")));
            printf("restored into: %s\n", o.data_dir);
        }
        printf("elapsed: %.3f s\n",
               json_real_value(json_object_get(rep, "seconds")));
    }
    json_decref(rep);
    return EX_OK;
}
