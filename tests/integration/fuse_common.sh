# fuse_common.sh - sourced by the test_fuse_*.sh scripts (not a test):
# where the binaries are, a visible SKIP when FUSE cannot run here, and a
# scratch directory.  Sets SDB_BIN, WRITER and skip(); fuse_scratch NAME
# sets T (new directory), MNT and D; fuse_mount starts the daemon;
# fuse_writer_stop and fuse_teardown are for the EXIT traps.
SDB_BIN=${SDB_BIN:-$(pwd)/build/bin}
WRITER=$SDB_BIN/../tests/fuse_writer
skip() { echo "SKIP: $*"; exit 0; }
[ -x "$SDB_BIN/stemedb-fuse" ] && [ -x "$WRITER" ] ||
    skip "stemedb-fuse or fuse_writer not built (libfuse3-dev missing?)"
[ -e /dev/fuse ] && command -v fusermount3 >/dev/null ||
    skip "/dev/fuse or fusermount3 missing"
fuse_scratch() {
    mkdir -p "${SDB_TEST_TMPDIR:-/tmp}"
    T=$(mktemp -d "${SDB_TEST_TMPDIR:-/tmp}/$1.XXXXXX")
    MNT=$T/mnt
    D=$T/data
}
mounted() { grep -q " $MNT fuse.stemedb " /proc/mounts; }
# fuse_mount [-d] [ENV=VALUE...]: start stemedb-fuse on $D at $MNT in the
# background (PID), its output in $T/fuse.log (-d: with FUSE's request
# log), and wait for the mount.
fuse_mount() {
    local mode=-f
    [ "${1:-}" = -d ] && { mode=-d; shift; }
    mkdir -p "$MNT"
    env "$@" "$SDB_BIN/stemedb-fuse" "$mode" --data-dir "$D" "$MNT" >"$T/fuse.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do mounted && return 0; sleep 0.1; done
    echo "FAIL: mount did not appear: $(tail -5 "$T/fuse.log")"
    exit 1
}
# For the tests' EXIT traps: stop the writer started as WP (it stops at
# $T/cnt.stop), then the daemon PID, and unmount whatever is left.
fuse_writer_stop() {
    touch "$T/cnt.stop"
    [ -n "${WP:-}" ] && wait "$WP" 2>/dev/null
}
fuse_teardown() {
    [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    grep -q " $MNT " /proc/mounts && fusermount3 -u "$MNT" 2>/dev/null
}
