#!/usr/bin/env bash
# test_fuse_s3.sh - back up the data/ view of stemedb-fuse to a local
# S3-compatible server (s3rver from tests/s3, pinned in package-lock.json,
# on 127.0.0.1) with rclone while a writer commits, twice (the second run
# incremental), restore each into an empty directory, and require that the
# restored copy is clean (fsck too when built) and opens with at least the
# assertions committed before the sync began.
set -u
SDB_SRC=${SDB_SRC:-$(pwd)}
. "$(dirname "$0")/fuse_common.sh"
S3DIR=$SDB_SRC/tests/s3
command -v rclone >/dev/null || skip "rclone missing (apt install rclone)"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm missing"
if [ ! -x "$S3DIR/node_modules/.bin/s3rver" ]; then
    (cd "$S3DIR" && npm ci --no-audit --no-fund >/dev/null 2>&1) ||
        skip "s3rver not installed and npm ci failed in $S3DIR"
fi
fuse_scratch fuse_s3
PID="" WP="" SP=""
cleanup() {
    fuse_writer_stop
    [ -n "$SP" ] && kill "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
    fuse_teardown
    [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
FSCK=
[ -x "$SDB_BIN/stemedb-fsck" ] && FSCK=$SDB_BIN/stemedb-fsck

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$T/s3" "$MNT"
"$S3DIR/node_modules/.bin/s3rver" -d "$T/s3" -a 127.0.0.1 -p "$PORT" -s \
    --configure-bucket stemedb >"$T/s3rver.log" 2>&1 &
SP=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$PORT/" || fail "s3rver: $(cat "$T/s3rver.log")"

export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
    RCLONE_CONFIG_S3_ENDPOINT=http://127.0.0.1:$PORT \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=S3RVER RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=S3RVER \
    RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true RCLONE_CONFIG_S3_REGION=us-east-1
# rclone fails outright when AWS_CA_BUNDLE is set (ECOSYSTEM.md section 7).
# --fast-list: s3rver 3.7.1 drops common prefixes from delimiter listings
# of keys with '%' or '@' in them; recursive listings are complete.
rcl() { env -u AWS_CA_BUNDLE rclone --config /dev/null --retries 1 --fast-list "$@"; }

"$WRITER" "$D" fixture || fail fixture
"$WRITER" "$D" assert 300 || fail assert
fuse_mount
"$WRITER" "$D" loop 60 "$T/cnt" &
WP=$!
for _ in $(seq 1 100); do [ -s "$T/cnt" ] && break; sleep 0.1; done

for round in 1 2; do
    c0=$(cat "$T/cnt")
    # a long run can span two cuts of the view, so a growing file may show a
    # newer size and mtime after rclone opened it; each file's bytes still
    # come from one cut, and the restore check below proves the copy sound
    rcl sync --local-no-check-updated "$MNT/data/" s3:stemedb/backup \
        >"$T/rclone.log" 2>&1 ||
        fail "rclone sync round $round: $(tail -5 "$T/rclone.log")"
    rm -rf "$T/restore"
    rcl copy s3:stemedb/backup "$T/restore" >"$T/rclone.log" 2>&1 ||
        fail "rclone restore round $round: $(tail -5 "$T/rclone.log")"
    "$WRITER" "$T/restore" clean || fail "restored copy $round is not clean"
    b=$(find "$T/restore" -type f | wc -l)
    [ "$b" -gt 20 ] || fail "restored only $b files"
    if [ -n "$FSCK" ]; then
        "$FSCK" -n "$T/restore" >"$T/fsck.out" 2>&1 || fail "fsck: $(cat "$T/fsck.out")"
    fi
    n=$("$WRITER" "$T/restore" count 2>"$T/open.err") || fail "open: $(cat "$T/open.err")"
    [ "$n" -ge "$c0" ] || fail "restored $n assertions, $c0 were committed"
    echo "round $round: $c0 committed before the sync, $n restored"
    sleep 1.1
done
echo "PASS: test_fuse_s3"
