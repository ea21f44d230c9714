#!/usr/bin/env bash
# test_fuse_rsync.sh - the data/ view of stemedb-fuse as a backup source
# (RELIABILITY.md M13): 20 `rsync -a MOUNT/data/ COPY/` runs taken while a
# writer commits batches; every copy must be clean (each file ends at a
# committed record; stemedb-fsck too when it is built) and open with at
# least the assertions committed before the copy began.  Then incremental
# runs: nothing transferred when nothing changed, and after more writes
# only appended bytes (old bytes are a prefix of the new ones; rsync's
# literal data is of the order of the growth).
set -u
. "$(dirname "$0")/fuse_common.sh"
command -v rsync >/dev/null || skip "rsync missing"
fuse_scratch fuse_rsync
PID=
WP=
cleanup() {
    fuse_writer_stop
    fuse_teardown
    [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
FSCK=
[ -x "$SDB_BIN/stemedb-fsck" ] && FSCK=$SDB_BIN/stemedb-fsck

# check_copy DIR MIN: clean as copied, fsck clean, opens with >= MIN.
check_copy() {
    local dir=$1 min=$2 n
    "$WRITER" "$dir" clean || fail "copy $dir is not cut at committed records"
    if [ -n "$FSCK" ]; then
        "$FSCK" -n "$dir" >"$T/fsck.out" 2>&1 || fail "fsck $dir: $(cat "$T/fsck.out")"
    fi
    n=$("$WRITER" "$dir" count 2>"$T/open.err") || fail "open $dir: $(cat "$T/open.err")"
    [ "$n" -ge "$min" ] || fail "copy $dir has $n assertions, $min were committed"
}

mkdir -p "$MNT"
"$WRITER" "$D" fixture || fail fixture
"$WRITER" "$D" assert 500 || fail "assert"
fuse_mount SDB_FS_DEBUG="${KEEP:-}"

# --- 20 copies under concurrent writes (small WAL segments, frequent
# checkpoints: WAL switches and recycling happen during the copies)
"$WRITER" "$D" loop 120 "$T/cnt" &
WP=$!
for _ in $(seq 1 300); do [ -s "$T/cnt" ] && break; sleep 0.1; done
[ -s "$T/cnt" ] || fail "the writer committed nothing in 30 s"
first=$(cat "$T/cnt")
for i in $(seq 1 20); do
    c0=$(cat "$T/cnt")
    if [ $((i % 2)) = 0 ]; then # into the previous copy: an incremental run
        rsync -a --delete "$MNT/data/" "$T/inc/" || fail "rsync $i: $?"
        rm -rf "$T/copy" && cp -a "$T/inc" "$T/copy"
    else
        rm -rf "$T/copy" "$T/inc"
        rsync -a "$MNT/data/" "$T/copy/" || fail "rsync $i: $?"
        cp -a "$T/copy" "$T/inc"
    fi
    check_copy "$T/copy" "$c0"
done
[ "$(cat "$T/cnt")" -gt $((first + 100)) ] || fail "the writer made no progress during the copies"
touch "$T/cnt.stop"
wait "$WP" || fail "writer failed"
WP=
final=$(cat "$T/cnt")
sleep 1.1
rm -rf "$T/copy" && rsync -a "$MNT/data/" "$T/copy/" || fail "final rsync"
cp -a "$T/copy" "$T/check"
check_copy "$T/check" "$final"

# --- incremental: nothing changed, nothing transferred
rsync -a --stats "$MNT/data/" "$T/copy/" >"$T/stats0" || fail "rsync stats"
grep -q '^Number of regular files transferred: 0$' "$T/stats0" ||
    fail "files transferred with no change: $(cat "$T/stats0")"
grep -q '^Total transferred file size: 0 bytes$' "$T/stats0" || fail "bytes transferred with no change"

# --- incremental after appends: old bytes are a prefix, little is sent
rm -rf "$T/old" && cp -a "$T/copy" "$T/old"
before=$(du -sb --apparent-size "$T/old" | cut -f1)
"$WRITER" "$D" assert 100 || fail "assert more"
rsync -a --no-whole-file --stats "$MNT/data/" "$T/copy/" >"$T/stats1" || fail "rsync 2"
after=$(du -sb --apparent-size "$T/copy" | cut -f1)
grow=$((after - before))
lit=$(sed -n 's/^Literal data: \([0-9,]*\) bytes$/\1/p' "$T/stats1" | tr -d ,)
tfs=$(sed -n 's/^Total transferred file size: \([0-9,]*\) bytes$/\1/p' "$T/stats1" | tr -d ,)
echo "incremental: copy grew by $grow bytes of $after; literal data $lit; transferred file size $tfs"
[ "$grow" -gt 0 ] || fail "nothing appended"
[ "$lit" -le $((2 * grow + 65536)) ] || fail "literal data $lit for $grow appended bytes"
[ "$lit" -lt $((after / 4)) ] || fail "literal data $lit is not small next to $after"
(cd "$T/old" && find . -type f \( -name '@seg-*' -o -name '*.wal' \)) | while read -r f; do
    [ -e "$T/copy/$f" ] || continue # a recycled WAL segment
    cmp -s -n "$(stat -c %s "$T/old/$f")" "$T/old/$f" "$T/copy/$f" || {
        echo "FAIL: $f changed instead of growing"
        exit 1
    }
done || exit 1
rm -rf "$T/check" && cp -a "$T/copy" "$T/check"
check_copy "$T/check" $((final + 100))
echo "PASS: test_fuse_rsync"
