#!/usr/bin/env bash
# test_fuse_cache.sh - what the kernel caches for stemedb-fuse (docs/fuse.md
# "Caching"): a warm rsync of an unchanged store reaches the daemon only a
# few times; after writes, a new process sees the new lengths, names and
# bytes at once while a process still holding the old cut keeps seeing
# that cut (the cache never leaks one into the other); the next copy after
# writes, with nobody else reading, is asked for what changed only; a
# store changed by
# hand under the same WAL and metadata is noticed; and idle classes of cuts
# are retired, so the daemon's fds come back down.
set -u
. "$(dirname "$0")/fuse_common.sh"
command -v rsync >/dev/null || skip "rsync missing"
fuse_scratch fuse_cache
PID=
HP=
cleanup() {
    [ -n "$HP" ] && kill "$HP" 2>/dev/null && wait "$HP" 2>/dev/null
    fuse_teardown
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
umount_fs() { # SIGTERM; the exit status also carries sanitizer reports
    local rc
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    PID=
    [ "$rc" = 0 ] || fail "daemon exit $rc: $(grep -a -v 'unique:\|opcode\|^ ' "$T/fuse.log" | tail -20)"
}
requests() { grep -a -c 'opcode: ' "$T/fuse.log"; }
# the requests a reader waits for (the kernel sends FORGETs when it likes)
asks() { grep -a 'opcode: ' "$T/fuse.log" | grep -a -c -v 'FORGET'; }

mkdir -p "$MNT"
"$WRITER" "$D" assert 300 40 || fail "assert"
fuse_mount -d

# --- a warm rsync of an unchanged store: almost nothing reaches the daemon
rsync -a "$MNT/data/" "$T/c1/" || fail "rsync 1"
rm -rf "$T/c1"
rsync -a "$MNT/data/" "$T/c1/" || fail "rsync 2"
files=$(find "$T/c1" | wc -l)
r0=$(requests)
rm -rf "$T/c1"
rsync -a "$MNT/data/" "$T/c1/" || fail "rsync 3"
sleep 0.2
r=$(($(requests) - r0))
echo "warm rsync: $r requests for $files files and directories"
[ "$files" -gt 80 ] || fail "only $files entries copied"
[ "$r" -lt $((files / 8)) ] || fail "warm rsync sent $r requests for $files entries"
"$WRITER" "$T/c1" clean || fail "warm copy not clean"
[ "$("$WRITER" "$T/c1" count)" = 300 ] || fail "warm copy count"

# --- writes: a new process sees them at once, an old cut keeps its view
S=load/c03/x/@seg-000001.msgpack
python3 - "$MNT/data" "$S" "$T/hold" <<'EOF' &
import os, sys, time
mnt, seg, hold = sys.argv[1:4]
def look():
    st = os.stat(os.path.join(mnt, "db", seg))
    with open(os.path.join(mnt, "db", seg), "rb") as f:
        n = len(f.read())
    return "%d %d" % (st.st_size, n)
open(hold + ".1", "w").write(look())
while not os.path.exists(hold + ".go"):
    time.sleep(0.05)
open(hold + ".2", "w").write(look())
EOF
HP=$!
for _ in $(seq 1 100); do [ -s "$T/hold.1" ] && break; sleep 0.05; done
[ -s "$T/hold.1" ] || fail "holder did not start"
read -r s1 n1 <"$T/hold.1"
[ "$s1" = "$(stat -c %s "$D/db/$S")" ] && [ "$n1" = "$s1" ] ||
    fail "holder's first look: $(cat "$T/hold.1")"
"$WRITER" "$D" assert 100 50 || fail "assert more" # appends, 10 new concepts
real=$(stat -c %s "$D/db/$S")
[ "$real" -gt "$s1" ] || fail "the writer did not append to $S"
[ "$(stat -c %s "$MNT/data/db/$S")" = "$real" ] || fail "new process: stale size"
[ "$(wc -c <"$MNT/data/db/$S")" = "$real" ] || fail "new process: stale bytes"
cmp "$MNT/data/db/$S" "$D/db/$S" || fail "new process: wrong bytes"
[ "$(ls "$MNT/data/db/load" | wc -l)" = 50 ] || fail "new process: stale listing"
# (stat, not the shell's own test: every check here runs in a process of
# its own, as the shell's cut would keep the next copy from the fast path)
[ "$(stat -c %s "$MNT/data/db/load/c45/x/@seg-000001.msgpack")" -gt 0 ] ||
    fail "new process: new concept"
touch "$T/hold.go"
wait "$HP" || fail "holder"
HP=
[ "$(cat "$T/hold.2")" = "$(cat "$T/hold.1")" ] ||
    fail "the old cut changed under its process: $(cat "$T/hold.1") -> $(cat "$T/hold.2")"
rm -rf "$T/c2"
rsync -a "$MNT/data/" "$T/c2/" || fail "rsync after writes"
[ "$("$WRITER" "$T/c2" count)" = 400 ] || fail "copy after writes misses assertions"

# --- the next copy after more writes, no other process in data/: the
# daemon moves the tree the kernel holds on to the new cut, so only what
# changed is asked for again, and the copy has every write
"$WRITER" "$D" assert 5 50 || fail "assert 5"
r0=$(asks)
rsync -a "$MNT/data/" "$T/c3/" || fail "rsync after 5 writes"
r=$(($(asks) - r0))
n=$(find "$T/c3" | wc -l)
echo "rsync after 5 more writes: $r requests for $n files and directories"
[ "$r" -lt $((n / 4)) ] || fail "the copy after 5 writes sent $r requests for $n entries"
diff -r "$T/c3/db" "$D/db" || fail "the copy's db/ is not the store's"
cmp "$T/c3/metadata.json" "$D/metadata.json" || fail "stale metadata.json"
"$WRITER" "$T/c3" clean || fail "copy after 5 writes not clean"
[ "$("$WRITER" "$T/c3" count)" = 405 ] || fail "copy after 5 writes misses assertions"
real=$(stat -c %s "$D/db/$S") # the 5 writes may have grown it

# --- the same WAL and metadata, a segment truncated by hand: not hidden
# behind the cached class (a stopped server, e.g. a torn tail repaired)
cp "$D/db/$S" "$T/seg.keep"
idx=${S%.msgpack}.idx
cp "$D/db/$idx" "$T/idx.keep"
cat "$MNT/data/db/$S" >/dev/null
truncate -s 0 "$D/db/$S" "$D/db/$idx"
[ "$(stat -c %s "$MNT/data/db/$S" 2>/dev/null || echo gone)" != "$real" ] ||
    fail "a truncated segment still shows its cached length"
cp "$T/seg.keep" "$D/db/$S" && cp "$T/idx.keep" "$D/db/$idx"
[ "$(stat -c %s "$MNT/data/db/$S")" = "$real" ] || fail "restored segment"
umount_fs

# --- idle classes are retired: the kernel forgets their nodes, the
# daemon closes their cuts' fds
fuse_mount -d SDB_FS_RETIRE_S=2
ls "$MNT/data/wal" >/dev/null
base=$(ls "/proc/$PID/fd" | wc -l)
"$WRITER" "$D" loop 4 "$T/cnt" &
WP=$!
for i in $(seq 1 12); do # each a new process with a cut of its own
    python3 -c 'import os, sys
d = sys.argv[1]
for n in os.listdir(d + "/wal"):
    open(d + "/wal/" + n, "rb").read()
open(d + "/metadata.json").read()' "$MNT/data" || fail "read $i"
    sleep 0.2
done
busy=$(ls "/proc/$PID/fd" | wc -l)
wait "$WP" || fail "writer"
find "$MNT/data" >/dev/null # the last class, then nobody looks
sleep 1
f0=$(grep -a -c 'opcode: \(BATCH_\)\?FORGET' "$T/fuse.log")
sleep 4
f1=$(grep -a -c 'opcode: \(BATCH_\)\?FORGET' "$T/fuse.log")
echo "forget requests while idle: $((f1 - f0))"
[ "$f1" -gt "$f0" ] || fail "the idle class was not retired (no forget)"
sleep 6 # past the epochs' idle time
ls "$MNT/data/wal" >/dev/null
sleep 1
idle=$(ls "/proc/$PID/fd" | wc -l)
echo "daemon fds: $base at start, $busy during writes, $idle when idle"
[ "$busy" -gt "$base" ] || fail "no cut was held open during the writes"
[ "$idle" -le $((base + 4)) ] || fail "fds stay open: $idle (start $base)"
umount_fs
echo "PASS: test_fuse_cache"
