#!/usr/bin/env bash
# fsck_bench.sh - stemedb-fsck verify throughput (MB/s) on a generated store,
# next to `cat` of the same files, warm (page cache) and, when allowed
# (root and a writable /proc/sys/vm/drop_caches), after dropping caches.
# Not a test: it prints a small table.
#
#   tools/bench/fsck_bench.sh [--size-mb N] [--value-bytes N] [--dir DIR] [--keep]
#
# SDB_BIN (default build/bin) must hold stemedb-api and stemedb-fsck.  The
# store is written through the real server (string values of --value-bytes,
# default 65000, in requests of about 4 MB)
# into DIR/fsck-bench-data (DIR defaults to the current directory: put it on
# the disk under test, not tmpfs) and removed afterwards unless --keep.
set -u

SIZE_MB=2048
VALUE=65000
DIR=.
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --value-bytes) VALUE=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
BIN=${SDB_BIN:-build/bin}
DATA="$DIR/fsck-bench-data"
LOG="$DIR/fsck-bench-server.log"
PID=""

cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID"
        wait "$PID" 2>/dev/null
    fi
    [ "$KEEP" = 1 ] || rm -rf "$DATA" "$LOG"
}
trap cleanup EXIT

for b in stemedb-api stemedb-fsck; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b not built" >&2; exit 1; }
done
rm -rf "$DATA"

# ---- generate ----
"$BIN/stemedb-api" --data-dir "$DATA" --bind 127.0.0.1:0 \
    --dashboard-bind off 2>"$LOG" &
PID=$!
for _ in $(seq 1 400); do
    grep -q "Startup complete, listening on" "$LOG" && break
    sleep 0.05
done
PORT=$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' \
    "$LOG" | tail -n1)
[ -n "$PORT" ] || { cat "$LOG"; echo "server did not start" >&2; exit 1; }
python3 - "$PORT" "$SIZE_MB" "$VALUE" <<'EOF'
import http.client, json, sys
port, size_mb, value = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
blob = "x" * value
per = max(1, min(1000, (4 << 20) // (value + 100)))
total, n = 0, 0
while total < size_mb << 20:
    batch = [{"concept_path": "bench/c%d/d%d" % (n % 97, n % 13),
              "predicate": "p%d" % (n % 7), "value": blob + str(n)}
             for n in range(n, n + per)]
    n += per
    body = json.dumps({"assertions": batch})
    conn.request("POST", "/v1/assert", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit("assert failed: HTTP %d" % r.status)
    total += len(body)
print("wrote %d assertions" % n)
EOF
kill -TERM "$PID"
wait "$PID"
PID=""

# ---- measure ----
files() { find "$DATA/wal" "$DATA/db" "$DATA/metadata.json" -type f; }
BYTES=$(files | xargs -d '\n' stat -c %s | awk '{s += $1} END {printf "%.0f", s}')
now() { date +%s.%N; }
rate() { awk -v b="$BYTES" -v t="$1" 'BEGIN {printf "%8.0f MB/s (%.2f s)", b / 1048576 / t, t}'; }
time_cat() {
    local t0 t1
    t0=$(now)
    files | xargs -d '\n' cat >/dev/null
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}
time_fsck() {
    local t0 t1 rc
    t0=$(now)
    "$BIN/stemedb-fsck" --no-progress "$DATA" 2>/dev/null
    rc=$?
    t1=$(now)
    [ "$rc" = 0 ] || { echo "fsck exit $rc on the bench store" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}
drop() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
}

printf 'store: %s, %d MB in %d files\n' "$DATA" $((BYTES >> 20)) "$(files | wc -l)"
best3() { # the fastest of three runs of $1
    { "$1"; "$1"; "$1"; } | sort -g | head -n1
}
time_cat >/dev/null # warm the cache
printf 'warm  cat  %s (best of 3)\n' "$(rate "$(best3 time_cat)")"
printf 'warm  fsck %s (best of 3)\n' "$(rate "$(best3 time_fsck)")"
if [ -w /proc/sys/vm/drop_caches ] && drop; then
    printf 'cold  cat  %s\n' "$(rate "$(time_cat)")"
    drop
    printf 'cold  fsck %s\n' "$(rate "$(time_fsck)")"
else
    echo "cold: skipped (needs root and a writable /proc/sys/vm/drop_caches)"
fi
