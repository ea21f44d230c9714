#!/usr/bin/env bash
# test_fuse_concurrent.sh - many readers of the data/ view at once while the
# server writes (docs/fuse.md "Caching"): rsync copies that start and end
# at different times, and short-lived `ls -R` and `cat` processes between
# them, so the daemon keeps moving the tree the kernel holds on to new cuts
# (fs_advance) and handing processes of other cuts trees of their own.
# Every copy must be clean and fsck clean, no reader may get an error, the
# tree must really have moved, and the daemon must exit cleanly (under the
# sanitizers, with no report).
set -u
. "$(dirname "$0")/fuse_common.sh"
command -v rsync >/dev/null || skip "rsync missing"
fuse_scratch fuse_concurrent
PID=
WP=
cleanup() {
    fuse_writer_stop
    fuse_teardown
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
FSCK=
[ -x "$SDB_BIN/stemedb-fsck" ] && FSCK=$SDB_BIN/stemedb-fsck

"$WRITER" "$D" fixture >/dev/null || fail fixture
"$WRITER" "$D" assert 2000 200 >/dev/null || fail assert
fuse_mount SDB_FS_DEBUG=1 SDB_FS_RETIRE_S=3
"$WRITER" "$D" loop 120 "$T/cnt" &
WP=$!
for _ in $(seq 1 300); do [ -s "$T/cnt" ] && break; sleep 0.1; done
[ -s "$T/cnt" ] || fail "the writer committed nothing in 30 s"

# copier ID ROUNDS: fresh rsync copies, each checked; problems to $T/bad
copier() {
    local id=$1 c0
    for r in $(seq 1 "$2"); do
        c0=$(cat "$T/cnt")
        rm -rf "$T/copy$id"
        rsync -a "$MNT/data/" "$T/copy$id/" 2>"$T/rsync$id.err" ||
            { echo "copier $id round $r: rsync: $(tail -2 "$T/rsync$id.err")" >>"$T/bad"; continue; }
        "$WRITER" "$T/copy$id" clean >/dev/null 2>&1 ||
            echo "copier $id round $r: not cut at committed records" >>"$T/bad"
        if [ -n "$FSCK" ]; then
            "$FSCK" -n "$T/copy$id" >/dev/null 2>&1 ||
                echo "copier $id round $r: fsck" >>"$T/bad"
        fi
        n=$("$WRITER" "$T/copy$id" count 2>/dev/null) ||
            { echo "copier $id round $r: does not open" >>"$T/bad"; continue; }
        [ "$n" -ge "$c0" ] ||
            echo "copier $id round $r: $n assertions, $c0 were committed" >>"$T/bad"
        sleep "0.$((RANDOM % 4))"
    done
}
# lister N: short-lived readers, each a process with a cut of its own
lister() {
    for _ in $(seq 1 "$1"); do
        ls -R "$MNT/data" >/dev/null 2>>"$T/ls.err" || echo "ls -R failed" >>"$T/bad"
        cat "$MNT/data/metadata.json" >/dev/null 2>>"$T/ls.err" ||
            echo "cat metadata.json failed" >>"$T/bad"
        sleep 0.05
    done
}
copier 1 5 &
A=$!
copier 2 5 &
B=$!
sleep 0.3
copier 3 4 &
C=$!
lister 80 &
L=$!
wait "$A" "$B" "$C" "$L"
touch "$T/cnt.stop"
wait "$WP" || fail "writer failed"
WP=
[ -s "$T/bad" ] && fail "$(head -5 "$T/bad")"
moves=$(grep -a -c 'data/ tree moved on to the new cut: [1-9]' "$T/fuse.log")
echo "tree moves with notices: $moves; cuts: $(grep -a -c 'new cut for pid' "$T/fuse.log")"
[ "$moves" -gt 0 ] || fail "the tree never moved on to a new cut"
kill -TERM "$PID"
wait "$PID"
rc=$?
PID=
[ "$rc" = 0 ] || fail "daemon exit $rc: $(tail -20 "$T/fuse.log")"
grep -a -q 'ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer' "$T/fuse.log" &&
    fail "sanitizer report: $(grep -a -m3 'ERROR\|runtime error' "$T/fuse.log")"
echo "PASS: test_fuse_concurrent"
