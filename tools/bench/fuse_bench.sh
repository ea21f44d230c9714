#!/usr/bin/env bash
# fuse_bench.sh - stemedb-fuse next to direct access, on one store, in one
# invocation (not a timed test; docs/fuse.md):
#   1. rsync -a of MOUNT/data/ vs of the raw data directory (warm cache,
#      best of 3, fresh destination each time, removed outside the timing;
#      the destination is on tmpfs when /dev/shm is there, so the disk
#      writes of the copy, the same for both, do not drown the difference:
#      set FUSE_BENCH_DEST=DIR to copy elsewhere);
#   2. one rsync of each right after 10 more assertions (the view's caches
#      start again for the new cut);
#   3. reading every concepts/**/assertions.json vs one POST /v1/query per
#      concept to stemedb-api (one keep-alive connection).
# Usage: tools/bench/fuse_bench.sh [BUILD_DIR] [ASSERTIONS] [CONCEPTS]
set -u
B=$(cd "${1:-build}" && pwd)
N=${2:-100000}
C=${3:-2000}
WRITER=$B/tests/fuse_writer
T=$(mktemp -d /tmp/fuse_bench.XXXXXX)
MNT=$T/mnt
D=$T/data
FP="" AP=""
cleanup() {
    [ -n "$AP" ] && kill "$AP" 2>/dev/null && wait "$AP" 2>/dev/null
    [ -n "$FP" ] && kill -TERM "$FP" 2>/dev/null && wait "$FP" 2>/dev/null
    rm -rf "$T" ${COPY:+"$COPY"}
    [ -n "${DEST:-}" ] && [ "$DEST" != "$T" ] && [ -z "${FUSE_BENCH_DEST:-}" ] && rmdir "$DEST" 2>/dev/null
}
trap cleanup EXIT
DEST=${FUSE_BENCH_DEST:-}
if [ -z "$DEST" ]; then
    DEST=$T
    [ -d /dev/shm ] && [ -w /dev/shm ] && DEST=$(mktemp -d /dev/shm/fuse_bench.XXXXXX)
fi
COPY=$DEST/copy
best() { # best of 3 wall-clock seconds of rsync -a "$1" COPY/, fresh COPY
    local b=999999 s e
    for _ in 1 2 3; do
        rm -rf "$COPY"
        s=$(date +%s.%N); rsync -a "$1" "$COPY/" >/dev/null 2>&1; e=$(date +%s.%N)
        b=$(echo "$e - $s" | bc -l | awk -v b="$b" '{print ($1 < b) ? $1 : b}')
    done
    echo "$b"
}

echo "building a store: $N assertions over $C concepts..."
"$WRITER" "$D" assert "$N" "$C" || exit 1
mkdir -p "$MNT"
"$B/bin/stemedb-fuse" -f --data-dir "$D" "$MNT" 2>"$T/fuse.log" &
FP=$!
for _ in $(seq 1 100); do grep -q " $MNT " /proc/mounts && break; sleep 0.1; done
echo "store: $(du -sh --apparent-size "$D" | cut -f1), $(find "$D" -type f | wc -l) files"

echo "copies go to $DEST ($(df --output=fstype "$DEST" | tail -1))"
raw=$(best "$D/")
view=$(best "$MNT/data/")
printf 'rsync -a raw directory:  %.3f s\n' "$raw"
printf 'rsync -a MOUNT/data/:    %.3f s  (%.2fx)\n' "$view" "$(echo "$view / $raw" | bc -l)"
# the first copy after a change: the view's caches start again (one run)
once() {
    local s e
    rm -rf "$COPY"
    s=$(date +%s.%N); rsync -a "$1" "$COPY/" >/dev/null 2>&1; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}
"$WRITER" "$D" assert 10 "$C" >/dev/null || exit 1
view1=$(once "$MNT/data/")
raw1=$(once "$D/")
printf 'first rsync after 10 more assertions: raw %.3f s, MOUNT/data/ %.3f s  (%.2fx)\n' \
    "$raw1" "$view1" "$(echo "$view1 / $raw1" | bc -l)"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$B/bin/stemedb-api" --data-dir="$D" --bind="127.0.0.1:$PORT" --dashboard-bind=off 2>"$T/api.log" &
AP=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v1/health" && break; sleep 0.1; done
python3 - "$MNT" "$PORT" "$C" <<'PY'
import http.client, json, os, sys, time
mnt, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = ["load/c%02d/x" % i for i in range(n)]
def files():
    total = 0
    for p in paths:
        with open(os.path.join(mnt, "concepts", p, "assertions.json"), "rb") as f:
            total += len(json.loads(f.read())["assertions"])
    return total
def api():
    c = http.client.HTTPConnection("127.0.0.1", port)
    total = 0
    for p in paths:
        c.request("POST", "/v1/query", json.dumps({"concept_path": p, "limit": 10000}),
                  {"Content-Type": "application/json"})
        total += len(json.loads(c.getresponse().read())["assertions"])
    return total
for name, fn in (("read every assertions.json", files), ("POST /v1/query per concept", api)):
    best = None
    for _ in range(3):
        t = time.perf_counter(); count = fn(); t = time.perf_counter() - t
        best = t if best is None or t < best else best
    print("%-28s %.3f s for %d concepts (%d assertions)" % (name + ":", best, n, count))
PY
