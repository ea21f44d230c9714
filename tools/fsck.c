/*
 * stemedb-fsck - verify (and on request repair) a StemeDB data directory or
 * backup.  All checks live in the library (sdb_fsck, src/verify.c); this
 * front end parses options, prints one line per problem, a JSON document
 * with --json, progress on a terminal, and exits with e2fsck's bitmask.
 * Problem ids are documented in docs/fsck.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "stemedb/stemedb.h"

enum {
    EXIT_CLEAN = 0,
    EXIT_CORRECTED = 1,
    EXIT_UNCORRECTED = 4,
    EXIT_OPERATIONAL = 8,
    EXIT_USAGE = 16,
    EXIT_CANCELLED = 32
};

static volatile sig_atomic_t interrupted;

struct out {
    bool json;
    bool progress;
    json_t *problems;
    struct timespec last_tick;
    bool progress_shown;
};

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fputs(
        "NAME\n"
        "    stemedb-fsck - check and repair a StemeDB data directory\n"
        "\n"
        "SYNOPSIS\n"
        "    stemedb-fsck [-n] [-p] [-y|--repair] [--json]\n"
        "                 [--progress|--no-progress] [-h|--help] DIR\n"
        "\n"
        "DESCRIPTION\n"
        "    Verifies every committed byte of DIR, a data directory or a\n"
        "    backup (metadata.json, wal/, db/): metadata.json and its\n"
        "    checksum and counts; every WAL segment (header, store, framing,\n"
        "    checksums, LSN continuity, zeros after the end); every segment\n"
        "    record against its checksum index and as a valid record of its\n"
        "    concept; WAL records at or below the checkpoint against the\n"
        "    segments; db/indexes/index.snap against the segments; stray,\n"
        "    missing, duplicated and swapped files.\n"
        "\n"
        "    Each problem is printed on stderr as\n"
        "        error in FILE @OFFSET: ID: MESSAGE\n"
        "    (\"warning in\" and \"info in\" for lower severities).  The ids\n"
        "    are listed in docs/fsck.md.\n"
        "\n"
        "OPTIONS\n"
        "    -n            Check only; change nothing (the default).\n"
        "    -p            Safe repairs only: zero a torn WAL tail, set aside\n"
        "                  redundant WAL segments, rebuild segments from the\n"
        "                  WAL when nothing is lost, remove the derived index\n"
        "                  snapshot (the server rebuilds it).\n"
        "    -y, --repair  All repairs: also rebuild segments dropping "
        "records\n"
        "                  that cannot be recovered, cut a corrupt WAL,\n"
        "                  rewrite metadata.json, move stray files.  Nothing "
        "is\n"
        "                  deleted: replaced bytes go to DIR/lost+found/.\n"
        "    --json        Print one JSON document (problems and summary) on\n"
        "                  stdout.\n"
        "    --progress    Show progress on stderr even when it is not a\n"
        "                  terminal.\n"
        "    --no-progress Never show progress (default: only on a terminal).\n"
        "    -h, --help    Show this help.\n"
        "\n"
        "    Repairs refuse to run while a server holds DIR/LOCK.\n"
        "\n"
        "EXIT STATUS\n"
        "    A sum of: 0 clean; 1 problems were corrected; 4 problems were\n"
        "    left uncorrected; 8 operational error (DIR unreadable, locked\n"
        "    for a repair, I/O error); 16 usage error; 32 cancelled.\n",
        f);
}

static double since(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) +
           (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void clear_progress(struct out *o)
{
    if (o->progress_shown) {
        fputs("\r\033[K", stderr);
        o->progress_shown = false;
    }
}

static void show_progress(struct out *o, const sdb_fsck_report *rep)
{
    double pct;

    if (since(&o->last_tick) < 0.1)
        return;
    clock_gettime(CLOCK_MONOTONIC, &o->last_tick);
    pct = rep->bytes_total
              ? 100.0 * (double)rep->bytes / (double)rep->bytes_total
              : 0.0;
    fprintf(stderr,
            "\rchecking: %5.1f%% (%" PRIu64 " files, %" PRIu64 " MB)\033[K",
            pct > 100.0 ? 100.0 : pct, rep->files, rep->bytes >> 20);
    o->progress_shown = true;
}

static const char *sev_word(sdb_fsck_severity s)
{
    return s == SDB_FSCK_ERROR  ? "error"
           : s == SDB_FSCK_WARN ? "warning"
                                : "info";
}

static int on_problem(void *arg, const sdb_fsck_problem *p,
                      const sdb_fsck_report *rep)
{
    struct out *o = arg;
    char off[32] = "";

    if (!p) {
        if (o->progress)
            show_progress(o, rep);
        return interrupted;
    }
    clear_progress(o);
    if (p->offset >= 0)
        snprintf(off, sizeof(off), " @%" PRId64, p->offset);
    fprintf(stderr, "%s in %s%s: %s: %s%s\n", sev_word(p->severity),
            *p->file ? p->file : ".", off, p->name, p->message,
            p->repaired ? " (repaired)" : "");
    if (o->json)
        json_array_append_new(
            o->problems,
            json_pack("{s:s, s:s, s:s, s:I, s:s, s:b}", "id", p->name,
                      "severity", sev_word(p->severity), "file", p->file,
                      "offset", (json_int_t)p->offset, "message", p->message,
                      "repaired", p->repaired));
    return interrupted;
}

static void print_json(struct out *o, const char *dir, int rc, int code,
                       const sdb_fsck_report *r)
{
    json_t *doc = json_pack(
        "{s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I}, s:i, s:s?}",
        "dir", dir, "problems", o->problems, "summary", "errors",
        (json_int_t)r->errors, "warnings", (json_int_t)r->warnings, "infos",
        (json_int_t)r->infos, "repaired", (json_int_t)r->repaired, "unrepaired",
        (json_int_t)r->unrepaired, "files", (json_int_t)r->files, "bytes",
        (json_int_t)r->bytes, "wal_records", (json_int_t)r->wal_records,
        "records", (json_int_t)r->records, "records_lost",
        (json_int_t)r->records_lost, "checkpoint_lsn",
        (json_int_t)r->checkpoint_lsn, "last_lsn", (json_int_t)r->last_lsn,
        "exit_code", code, "operational_error",
        rc < 0 && rc != -ECANCELED ? sdb_strerror(rc) : NULL);

    o->problems = NULL;
    if (doc) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    }
    json_decref(doc);
}

static int exit_code(int rc, const sdb_fsck_report *r)
{
    int code = 0;

    if (r->repaired)
        code |= EXIT_CORRECTED;
    if (r->unrepaired)
        code |= EXIT_UNCORRECTED;
    if (rc == -ECANCELED)
        code |= EXIT_CANCELLED;
    else if (rc < 0)
        code |= EXIT_OPERATIONAL;
    return code;
}

static void report_error(const char *dir, int rc, const sdb_fsck_report *r)
{
    if (rc == SDB_ELOCKED)
        fprintf(stderr,
                "stemedb-fsck: %s is locked by a running process (pid %ld);"
                " stop it before repairing (a check with -n is allowed)\n",
                dir, r->lock_pid);
    else if (rc == -ECANCELED)
        fprintf(stderr, "stemedb-fsck: cancelled\n");
    else if (rc < 0)
        fprintf(stderr, "stemedb-fsck: %s: %s\n", dir, sdb_strerror(rc));
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"repair", no_argument, NULL, 'y'},
        {"json", no_argument, NULL, 'j'},
        {"progress", no_argument, NULL, 'P'},
        {"no-progress", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct out o = {0};
    sdb_fsck_report rep;
    struct sigaction sa;
    unsigned flags = 0;
    bool check_only = false;
    int progress = -1, c, rc, code;
    const char *dir;

    while ((c = getopt_long(argc, argv, "npyh", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            check_only = true;
            break;
        case 'p':
            flags |= SDB_FSCK_REPAIR_SAFE;
            break;
        case 'y':
            flags |= SDB_FSCK_REPAIR_ALL;
            break;
        case 'j':
            o.json = true;
            break;
        case 'P':
            progress = 1;
            break;
        case 'N':
            progress = 0;
            break;
        case 'h':
            usage(stdout);
            return EXIT_CLEAN;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || (check_only && flags)) {
        fprintf(stderr, "stemedb-fsck: %s\n",
                check_only && flags ? "-n cannot be combined with -p or -y"
                                    : "exactly one DIR is required");
        usage(stderr);
        return EXIT_USAGE;
    }
    dir = argv[optind];
    o.progress = progress < 0 ? isatty(STDERR_FILENO) : progress;
    if (o.json && !(o.problems = json_array())) {
        fprintf(stderr, "stemedb-fsck: out of memory\n");
        return EXIT_OPERATIONAL;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rc = sdb_fsck(dir, flags, on_problem, &o, &rep);
    clear_progress(&o);
    code = exit_code(rc, &rep);
    report_error(dir, rc, &rep);
    fprintf(stderr,
            "stemedb-fsck: %s: %" PRIu64 " errors, %" PRIu64
            " warnings, %" PRIu64 " repaired, %" PRIu64 " left; %" PRIu64
            " files, %" PRIu64 " bytes checked\n",
            dir, rep.errors, rep.warnings, rep.repaired, rep.unrepaired,
            rep.files, rep.bytes);
    if (o.json)
        print_json(&o, dir, rc, code, &rep);
    json_decref(o.problems);
    return code;
}
