#!/usr/bin/env bash
# stemedb-archive-wal.sh - ship sealed WAL segments from the local archive
# directory (STEMEDB_WAL_ARCHIVE_DIR, filled by the server) to S3-compatible
# storage with rclone.  Only "copy" is used, never "sync": nothing in the
# remote is ever deleted, and --immutable refuses to overwrite an archived
# segment whose content changed (rclone exits 6).  A one-way check follows.
#
# usage: stemedb-archive-wal.sh [--archive-dir DIR] [--remote REMOTE:PATH]
#                               [--status-file FILE]
#   --archive-dir  default $STEMEDB_WAL_ARCHIVE_DIR
#   --remote       default $STEMEDB_WAL_REMOTE (e.g. s3:bucket/stemedb/wal)
#   --status-file  write a Prometheus textfile with
#                  stemedb_wal_archive_last_success_timestamp_seconds and
#                  stemedb_wal_archive_failures_total (default
#                  $STEMEDB_ARCHIVE_STATUS_FILE; none if empty)
# rclone is run as `env -u AWS_CA_BUNDLE rclone` ($STEMEDB_RCLONE overrides
# the binary).  Exit: 0 shipped and checked, 1 rclone failed, 2 usage.
set -u
ARCHIVE=${STEMEDB_WAL_ARCHIVE_DIR:-}
REMOTE=${STEMEDB_WAL_REMOTE:-}
STATUS=${STEMEDB_ARCHIVE_STATUS_FILE:-}
RCLONE=${STEMEDB_RCLONE:-rclone}
while [ $# -gt 0 ]; do
    case "$1" in
    --archive-dir) ARCHIVE=$2; shift 2 ;;
    --remote) REMOTE=$2; shift 2 ;;
    --status-file) STATUS=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stemedb-archive-wal: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$ARCHIVE" ] && [ -n "$REMOTE" ] || {
    echo "stemedb-archive-wal: need --archive-dir and --remote" >&2; exit 2; }
[ -d "$ARCHIVE" ] || { echo "stemedb-archive-wal: $ARCHIVE is not a directory" >&2; exit 2; }

write_status() { # ok(0/1)
    [ -n "$STATUS" ] || return 0
    local last=0 fails=0
    if [ -f "$STATUS" ]; then
        last=$(sed -n 's/^stemedb_wal_archive_last_success_timestamp_seconds \([0-9]*\).*/\1/p' "$STATUS")
        fails=$(sed -n 's/^stemedb_wal_archive_failures_total \([0-9]*\).*/\1/p' "$STATUS")
    fi
    [ "$1" = 1 ] && last=$(date +%s) || fails=$((${fails:-0} + 1))
    {
        echo "# HELP stemedb_wal_archive_last_success_timestamp_seconds Unix time of the last successful WAL shipment."
        echo "# TYPE stemedb_wal_archive_last_success_timestamp_seconds gauge"
        echo "stemedb_wal_archive_last_success_timestamp_seconds ${last:-0}"
        echo "# HELP stemedb_wal_archive_failures_total Failed WAL shipments."
        echo "# TYPE stemedb_wal_archive_failures_total counter"
        echo "stemedb_wal_archive_failures_total ${fails:-0}"
    } >"$STATUS.tmp" && mv "$STATUS.tmp" "$STATUS"
}

# only sealed segments: the server writes them as *.tmp and renames
if env -u AWS_CA_BUNDLE "$RCLONE" copy --checksum --immutable --s3-no-head --fast-list \
        --include 'segment-*.wal' "$ARCHIVE" "$REMOTE" &&
   env -u AWS_CA_BUNDLE "$RCLONE" check --one-way --fast-list --include 'segment-*.wal' \
        "$ARCHIVE" "$REMOTE"; then
    write_status 1
    exit 0
fi
write_status 0
echo "stemedb-archive-wal: shipping $ARCHIVE to $REMOTE failed" >&2
exit 1
