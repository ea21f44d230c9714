#!/usr/bin/env bash
# test_backup_s3.sh - S3 round trip against s3rver on 127.0.0.1: upload a
# backup, download it elsewhere, verify and restore it; ship the WAL archive
# with tools/stemedb-archive-wal.sh and restore through the remote archive
# (stemedb-restore --wal-archive REMOTE:PATH); a changed archived segment
# is refused (--immutable) and nothing remote is deleted.
# Skips (visibly) without node/rclone or the pinned s3rver in tests/s3/.
set -u
: "${SDB_BIN:?}" "${SDB_SRC:?}"
: "${SDB_TEST_TMPDIR:=/tmp}"
skip() { echo "SKIP: $*"; exit 0; }
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok - $*"; }
command -v rclone >/dev/null || skip "rclone not installed"
command -v node >/dev/null || skip "node not installed"
S3RVER="$SDB_SRC/tests/s3/node_modules/.bin/s3rver"
if [ ! -x "$S3RVER" ]; then
    command -v npm >/dev/null || skip "npm not installed"
    (cd "$SDB_SRC/tests/s3" && npm ci --no-audit --no-fund >/dev/null 2>&1) ||
        skip "cannot install s3rver (npm ci in tests/s3 failed)"
fi
mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/backup-s3.XXXXXX")
PID="" S3PID=""
cleanup() {
    local rc=$?
    for p in $PID $S3PID; do
        kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [ "$rc" = 0 ] && rm -rf "$T" || echo "kept $T"
    exit "$rc"
}
trap cleanup EXIT

mkdir -p "$T/s3"
"$S3RVER" -d "$T/s3" -a 127.0.0.1 -p 0 -s --configure-bucket stemedb >"$T/s3.log" 2>&1 &
S3PID=$!
for i in $(seq 1 100); do
    grep -q "listening on" "$T/s3.log" 2>/dev/null && break
    sleep 0.1
done
PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$T/s3.log")
[ -n "$PORT" ] || { cat "$T/s3.log"; fail "s3rver did not start"; }
export RCLONE_CONFIG_S3T_TYPE=s3 RCLONE_CONFIG_S3T_PROVIDER=Other \
    RCLONE_CONFIG_S3T_ENDPOINT="http://127.0.0.1:$PORT" \
    RCLONE_CONFIG_S3T_ACCESS_KEY_ID=S3RVER RCLONE_CONFIG_S3T_SECRET_ACCESS_KEY=S3RVER \
    RCLONE_CONFIG_S3T_FORCE_PATH_STYLE=true RCLONE_CONFIG=/dev/null

# a small store with a local WAL archive
D="$T/data" A="$T/archive"
mkdir -p "$A"
: >"$T/server.log"
"$SDB_BIN/stemedb-api" --data-dir "$D" --bind 127.0.0.1:0 --dashboard-bind off \
    --wal-archive-dir "$A" --wal-segment-timeout 1 2>>"$T/server.log" &
PID=$!
for i in $(seq 1 200); do grep -q "Startup complete" "$T/server.log" && break; sleep 0.05; done
BASE="http://127.0.0.1:$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' "$T/server.log")"
put() {
    local i
    for i in $(seq 1 "$1"); do
        curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
            -d "{\"concept_path\":\"s3/$2\",\"predicate\":\"n\",\"value\":$i}" "$BASE/v1/assert" || fail "assert"
    done
}
put 25 before
BK=$("$SDB_BIN/stemedb-backup" --data-dir "$D" --dest "$T/backups" | tail -n1)
put 15 after
sleep 2.5
kill -TERM "$PID"; wait "$PID"; PID=""

# backup up and down
"$SDB_BIN/stemedb-backup" upload "$BK" s3t:stemedb/backups >"$T/up.log" 2>&1 ||
    { cat "$T/up.log"; fail "upload"; }
mkdir -p "$T/fetched"
"$SDB_BIN/stemedb-backup" download "s3t:stemedb/backups/$(basename "$BK")" "$T/fetched" >"$T/down.log" 2>&1 ||
    { cat "$T/down.log"; fail "download"; }
"$SDB_BIN/stemedb-backup" verify "$T/fetched/$(basename "$BK")" >"$T/v.log" 2>&1 ||
    { cat "$T/v.log"; fail "downloaded backup does not verify"; }
ok "backup upload/download round trip verifies"

# WAL shipping, then a restore that fetches the remote archive
"$SDB_SRC/tools/stemedb-archive-wal.sh" --archive-dir "$A" --remote s3t:stemedb/wal \
    --status-file "$T/archive.prom" >"$T/ship.log" 2>&1 || { cat "$T/ship.log"; fail "WAL shipping"; }
grep -q '^stemedb_wal_archive_last_success_timestamp_seconds [1-9]' "$T/archive.prom" ||
    fail "archive status textfile not written"
N_LOCAL=$(ls "$A"/segment-*.wal | wc -l)
N_REMOTE=$(env -u AWS_CA_BUNDLE rclone lsf --fast-list s3t:stemedb/wal 2>/dev/null | grep -c '^segment-')
[ "$N_LOCAL" = "$N_REMOTE" ] || fail "remote holds $N_REMOTE of $N_LOCAL segments"
"$SDB_BIN/stemedb-restore" "$T/fetched/$(basename "$BK")" --data-dir "$T/restored" \
    --wal-archive s3t:stemedb/wal >"$T/r.log" 2>&1 || { cat "$T/r.log"; fail "restore via remote archive"; }
grep -q "assertions restored: 40" "$T/r.log" || { cat "$T/r.log"; fail "expected 40 assertions"; }
ok "restore through the remote WAL archive reached all 40 assertions"

# a modified archived segment is refused; nothing remote disappears
f=$(ls "$A"/segment-*.wal | head -n1)
printf 'X' | dd of="$f" bs=1 seek=200 conv=notrunc status=none
"$SDB_SRC/tools/stemedb-archive-wal.sh" --archive-dir "$A" --remote s3t:stemedb/wal \
    --status-file "$T/archive.prom" >"$T/ship2.log" 2>&1 && fail "a changed archived segment was overwritten"
grep -q '^stemedb_wal_archive_failures_total 1' "$T/archive.prom" || fail "failure not counted"
rm -f "$A"/segment-*.wal
"$SDB_SRC/tools/stemedb-archive-wal.sh" --archive-dir "$A" --remote s3t:stemedb/wal >/dev/null 2>&1
N_AFTER=$(env -u AWS_CA_BUNDLE rclone lsf --fast-list s3t:stemedb/wal 2>/dev/null | grep -c '^segment-')
[ "$N_AFTER" = "$N_REMOTE" ] || fail "remote segments were deleted ($N_AFTER left of $N_REMOTE)"
ok "immutable: changed segment refused, local removal deletes nothing remote"
echo PASS
