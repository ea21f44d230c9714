#!/usr/bin/env bash
# test_fsck_cli.sh - stemedb-fsck as operators run it (git t1450 style):
# exit codes (0 clean, 4 corrupt, 1 repaired then 0, 8 unreadable or
# locked, 16 usage), the exact problem id and file on stderr, --json, and a
# store written by the real server that the server reopens after repair.
set -u

: "${SDB_BIN:?SDB_BIN must point at the bin directory of the build}"
: "${SDB_TEST_TMPDIR:=/tmp}"
FSCK="$SDB_BIN/stemedb-fsck"
API="$SDB_BIN/stemedb-api"
mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/fsck-cli.XXXXXX")
SERVER_PID=""

cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    [ "$rc" -ne 0 ] && [ -f "$T/err" ] && { echo "--- last stderr:"; cat "$T/err"; }
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}
ok() { echo "ok - $*"; }

[ -x "$FSCK" ] || fail "$FSCK not built"
[ -x "$API" ] || fail "$API not built (needed to write a store)"
command -v jq >/dev/null || fail "jq is required"
command -v python3 >/dev/null || fail "python3 is required"

# fsck ARGS... : run, keep stderr in $T/err and stdout in $T/out, set RC.
fsck() {
    "$FSCK" "$@" >"$T/out" 2>"$T/err"
    RC=$?
}

expect_rc() {
    [ "$RC" -eq "$1" ] || fail "$2: exit $RC, expected $1"
    ok "$2 -> exit $1"
}

expect_line() {
    grep -Eq "$1" "$T/err" || fail "$2: no line matching /$1/ on stderr"
}

start_server() {
    "$API" --data-dir "$1" --bind 127.0.0.1:0 --dashboard-bind 127.0.0.1:0 \
        2>"$T/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 400); do
        grep -q "Startup complete, listening on" "$T/server.log" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$T/server.log"; fail "server exited"; }
        sleep 0.05
    done
    PORT=$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' \
        "$T/server.log" | tail -n1)
    [ -n "$PORT" ] || { cat "$T/server.log"; fail "server did not start"; }
}

stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || fail "server exit status $?"
    SERVER_PID=""
}

count() {
    curl -sS --max-time 10 -H 'Content-Type: application/json' \
        --data-binary '{"concept_path":"*","limit":1000}' \
        "http://127.0.0.1:$PORT/v1/query" | jq '.assertions|length'
}

# ---- a store written by the server ----
D="$T/data"
start_server "$D"
for i in $(seq 1 24); do
    c=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 \
        -H 'Content-Type: application/json' \
        --data-binary "{\"concept_path\":\"drug/d$((i % 4))\",\"predicate\":\"p\",\"value\":$i}" \
        "http://127.0.0.1:$PORT/v1/assert")
    [ "$c" = 201 ] || fail "assert $i: HTTP $c"
done
[ "$(count)" = 24 ] || fail "24 assertions expected"

# ---- a running server holds the LOCK ----
fsck -p "$D"
expect_rc 8 "repair of a locked directory"
expect_line "locked by a running process \(pid $SERVER_PID\)" "names the PID"
fsck -n "$D"
expect_rc 0 "read-only check of a live store"
expect_line "^info in LOCK: liveStore: " "live store noted"
stop_server
cp -a "$D" "$T/pristine"

# ---- clean ----
fsck "$D"
expect_rc 0 "clean store"
grep -q "^error in\|^warning in" "$T/err" && fail "clean store printed problems"
fsck --json "$D"
expect_rc 0 "clean store, --json"
jq -e '.summary.errors == 0 and .exit_code == 0 and .summary.records == 24
       and (.problems|type=="array")' "$T/out" >/dev/null ||
    fail "--json summary: $(cat "$T/out")"
ok "--json document"

# ---- usage and operational errors ----
fsck
expect_rc 16 "no DIR"
fsck -n -p "$D"
expect_rc 16 "-n with -p"
fsck -n --repair "$D"
expect_rc 16 "-n with --repair"
fsck --bogus "$D"
expect_rc 16 "unknown option"
fsck "$D" "$D"
expect_rc 16 "two DIRs"
fsck --help
expect_rc 0 "--help"
grep -q "EXIT STATUS" "$T/out" || fail "--help lacks EXIT STATUS"
fsck "$T/no-such-dir"
expect_rc 8 "missing directory"
fsck "$D/metadata.json"
expect_rc 8 "a file, not a directory"

# ---- a flipped record: exit 4, exact id and file, then -y ----
SEG=$(cd "$D" && find db -name '@seg-*.msgpack' | sort | head -n1)
python3 - "$D/$SEG" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[10] ^= 0x08
open(p, 'wb').write(b)
EOF
fsck "$D"
expect_rc 4 "flipped bit in a segment"
expect_line "^error in $SEG @0: badChecksum: " "badChecksum for $SEG @0"
fsck --json "$D"
jq -e --arg f "$SEG" '.exit_code == 4 and
    any(.problems[]; .id == "badChecksum" and .file == $f and .offset == 0
        and .severity == "error" and .repaired == false)' "$T/out" >/dev/null ||
    fail "--json names badChecksum: $(cat "$T/out")"
ok "--json names the problem"
# the WAL still holds a good copy of the record: -p rebuilds from it
cp -a "$D" "$T/flipped"
fsck -p "$D"
expect_rc 1 "-p rebuilds the segment from the WAL copy"
expect_line "badChecksum: .*\(repaired\)$" "repaired problem marked"
compgen -G "$D/lost+found/*.msgpack" >/dev/null ||
    fail "original not kept in lost+found"
fsck "$D"
expect_rc 0 "second run after -p"
start_server "$D"
[ "$(count)" = 24 ] || fail "the server should have all 24 records"
ok "server opens the repaired store with 24 records"
stop_server

# without the WAL the record cannot come back: -p refuses, -y drops it
rm -rf "$D"
mv "$T/flipped" "$D"
mkdir "$T/walaside"
mv "$D"/wal/*.wal "$T/walaside/"
fsck -p "$D"
expect_rc 4 "-p does not drop a record"
fsck -y "$D"
expect_rc 1 "-y corrects it"
expect_line "recordLost: " "the lost record is reported"
fsck "$D"
expect_rc 0 "second run after -y"
start_server "$D"
[ "$(count)" = 23 ] || fail "the server should keep the 23 intact records"
ok "server opens the repaired store with 23 records"
stop_server

# ---- a torn WAL tail: tornTail, -p, reopen ----
rm -rf "$D"
cp -a "$T/pristine" "$D"
W=$(cd "$D" && find wal -name 'segment-*.wal' | sort | tail -n1)
END=$(python3 - "$D/$W" <<'EOF'
import sys
b = open(sys.argv[1], 'rb').read()
print(len(b.rstrip(b'\0')))
EOF
)
truncate -s $((END - 7)) "$D/$W"
fsck "$D"
expect_rc 4 "torn WAL tail"
expect_line "^warning in $W @[0-9]+: tornTail: " "tornTail named"
fsck -p "$D"
expect_rc 1 "-p repairs the torn tail"
fsck "$D"
expect_rc 0 "second run after -p"
start_server "$D"
[ "$(count)" = 24 ] || fail "all 24 records after the torn-tail repair"
ok "server opens with every record"
stop_server

# ---- garbage after the log, a stray file ----
rm -rf "$D"
cp -a "$T/pristine" "$D"
printf 'X' | dd of="$D/$W" bs=1 seek=$((END + 100)) conv=notrunc 2>/dev/null
echo stray >"$D/db/drug/notes.txt"
fsck "$D"
expect_rc 4 "garbage and a stray file"
expect_line "^error in $W @$((END + 100)): trailingGarbage: " "trailingGarbage at its offset"
expect_line "^warning in db/drug/notes.txt: orphanFile: " "orphanFile"
fsck --repair "$D"
expect_rc 1 "--repair"
[ -f "$D/lost+found/db!drug!notes.txt" ] || fail "stray file kept in lost+found"
fsck "$D"
expect_rc 0 "second run after --repair"
# ---- a backup made by stemedb-backup (when that tool is built) ----
if [ -x "$SDB_BIN/stemedb-backup" ]; then
    rm -rf "$D"
    cp -a "$T/pristine" "$D"
    BK=$("$SDB_BIN/stemedb-backup" --data-dir "$D" --dest "$T/backups" 2>"$T/bk.err" |
        tail -n1)
    [ -d "$BK" ] || fail "stemedb-backup made no backup: $(cat "$T/bk.err")"
    fsck "$BK"
    expect_rc 0 "a fresh backup"
    BSEG=$(cd "$BK" && find db -name '@seg-*.msgpack' | sort | head -n1)
    printf '\001' | dd of="$BK/$BSEG" bs=1 seek=3 conv=notrunc 2>/dev/null
    fsck "$BK"
    expect_rc 4 "a corrupt backup"
    expect_line "^error in $BSEG @0: badChecksum: " "badChecksum in the backup"
fi
echo "all fsck CLI checks passed"
