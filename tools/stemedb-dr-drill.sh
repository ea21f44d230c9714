#!/usr/bin/env bash
# stemedb-dr-drill.sh - rehearse a disaster on a copy of reality and
# measure it: backup -> writes after the backup -> kill -9 -> the data
# directory is moved away (never deleted) -> restore from the backup and
# the WAL archive -> start -> validate counts and a sample of ids.
# Prints the achieved RTO (restore + restart, seconds) and RPO (seconds of
# acknowledged writes lost; 0 when the archive held everything).
#
# usage: stemedb-dr-drill.sh --data-dir DIR --backup-dir DIR
#            [--wal-archive DIR] [--bin DIR] [--writes N] [--sample N]
#            [--segment-timeout S] [--no-wait] [--keep-server]
#
# --no-wait kills the server right after the last acknowledged write
# instead of waiting for the time-based segment switch: the RPO printed
# is then the worst case of the archive (about --segment-timeout).
#
# The drill starts its own stemedb-api on 127.0.0.1 (port chosen by the
# kernel) for DIR, so DIR must not be in use.  Exit: 0 drill passed,
# 1 validation failed, 2 usage or environment problem.
set -u

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

DATA="" BACKUPS="" ARCHIVE="" BIN="" WRITES=20 SAMPLE=20 SEGTIMEOUT=1 KEEP=0 WAIT=1
while [ $# -gt 0 ]; do
    case "$1" in
    --data-dir) DATA=$2; shift 2 ;;
    --backup-dir) BACKUPS=$2; shift 2 ;;
    --wal-archive) ARCHIVE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --writes) WRITES=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --segment-timeout) SEGTIMEOUT=$2; shift 2 ;;
    --keep-server) KEEP=1; shift ;;
    --no-wait) WAIT=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "stemedb-dr-drill: unknown argument $1" >&2; usage 2 ;;
    esac
done
[ -n "$DATA" ] && [ -n "$BACKUPS" ] || usage 2
if [ -z "$BIN" ]; then
    BIN=$(dirname "$(readlink -f "$0")")
    [ -x "$BIN/stemedb-api" ] || BIN=$(dirname "$(command -v stemedb-api 2>/dev/null || echo /usr/bin/x)")
fi
for b in stemedb-api stemedb-backup stemedb-restore; do
    [ -x "$BIN/$b" ] || { echo "stemedb-dr-drill: $BIN/$b not found (use --bin)" >&2; exit 2; }
done
command -v curl >/dev/null || { echo "stemedb-dr-drill: curl is required" >&2; exit 2; }
DATA=${DATA%/}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stemedb-dr-drill.XXXXXX")
PID=""
cleanup() {
    if [ -n "$PID" ] && [ "$KEEP" = 0 ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf 'dr-drill: %s\n' "$*" >&2; }
now() { date +%s.%N; }

# start: run stemedb-api on DATA, wait for readiness, set BASE.
start() {
    local extra=() i
    [ -n "$ARCHIVE" ] && extra=(--wal-archive-dir "$ARCHIVE" --wal-segment-timeout "$SEGTIMEOUT")
    : >"$WORK/server.log"
    "$BIN/stemedb-api" --data-dir "$DATA" --bind 127.0.0.1:0 --dashboard-bind off \
        "${extra[@]}" 2>>"$WORK/server.log" &
    PID=$!
    for i in $(seq 1 600); do
        grep -q "Startup complete, listening on" "$WORK/server.log" && break
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log" >&2; return 1; }
        sleep 0.05
    done
    local port
    port=$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' "$WORK/server.log" | tail -n1)
    [ -n "$port" ] || return 1
    BASE="http://127.0.0.1:$port"
}

count() {
    curl -sf --max-time 10 "$BASE/v1/health" | sed -n 's/.*"assertion_count": *\([0-9]*\).*/\1/p'
}

# 1. the "production" store
start || { echo "stemedb-dr-drill: cannot start stemedb-api on $DATA" >&2; exit 2; }
BEFORE=$(count)
log "store $DATA holds $BEFORE assertions"
curl -sf --max-time 30 -X POST -H 'Content-Type: application/json' \
    -d "{\"concept_path\":\"*\",\"limit\":$SAMPLE}" "$BASE/v1/query" |
    grep -o '"id": *"[0-9a-f]\{24\}"' | sed 's/.*"\([0-9a-f]*\)"$/\1/' >"$WORK/sample"

# 2. backup (hot), then acknowledged writes the backup does not have
"$BIN/stemedb-backup" --data-dir "$DATA" --dest "$BACKUPS" >"$WORK/backup.out" 2>&1 ||
    { cat "$WORK/backup.out" >&2; echo "stemedb-dr-drill: backup failed" >&2; exit 1; }
BK=$(tail -n1 "$WORK/backup.out")
log "backup $BK"
: >"$WORK/acked"
for i in $(seq 1 "$WRITES"); do
    out=$(curl -s --max-time 10 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
        -d "{\"concept_path\":\"dr-drill/after-backup\",\"predicate\":\"n\",\"value\":$i}" "$BASE/v1/assert")
    [ "${out##*$'\n'}" = 201 ] || continue
    id=$(printf '%s' "${out%$'\n'*}" | grep -o '"id": *"[0-9a-f]\{24\}"' | sed 's/.*"\([0-9a-f]*\)"$/\1/')
    echo "$id $(now)" >>"$WORK/acked"
done
ACKED=$(wc -l <"$WORK/acked")
# let the time-based segment switch hand the last writes to the archive
[ -n "$ARCHIVE" ] && [ "$WAIT" = 1 ] && sleep "$((SEGTIMEOUT + 2))"

# 3. disaster: the process dies and the disk is gone
FAIL_AT=$(now)
kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=""
GONE="$DATA.destroyed-$(date -u +%Y%m%d-%H%M%S)"
mv "$DATA" "$GONE"
log "killed the server and moved $DATA to $GONE"

# 4. recovery
T0=$(now)
args=("$BK" --data-dir "$DATA")
[ -n "$ARCHIVE" ] && args+=(--wal-archive "$ARCHIVE")
"$BIN/stemedb-restore" "${args[@]}" >"$WORK/restore.out" 2>&1 ||
    { cat "$WORK/restore.out" >&2; echo "stemedb-dr-drill: restore failed" >&2; exit 1; }
start || { echo "stemedb-dr-drill: restored store does not start" >&2; exit 1; }
T1=$(now)
RTO=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b-a}')

# 5. validation
AFTER=$(count)
missing_sample=0
while read -r id; do
    [ -n "$id" ] || continue
    curl -sf -o /dev/null --max-time 10 "$BASE/v1/assertions/$id" || missing_sample=$((missing_sample + 1))
done <"$WORK/sample"
lost=0 oldest_lost=""
while read -r id t; do
    if ! curl -sf -o /dev/null --max-time 10 "$BASE/v1/assertions/$id"; then
        lost=$((lost + 1))
        [ -n "$oldest_lost" ] || oldest_lost=$t
    fi
done <"$WORK/acked"
if [ "$lost" = 0 ]; then RPO=0; else
    RPO=$(awk -v a="$oldest_lost" -v b="$FAIL_AT" 'BEGIN{printf "%.2f", b-a}')
fi
EXPECT=$((BEFORE + ACKED - lost))
echo "backup: $BK"
echo "assertions before: $BEFORE, acknowledged after the backup: $ACKED, lost: $lost"
echo "assertions after restore: $AFTER (expected $EXPECT)"
echo "sample ids checked: $(wc -l <"$WORK/sample"), missing: $missing_sample"
echo "old data kept in: $GONE"
echo "RTO_SECONDS=$RTO"
echo "RPO_SECONDS=$RPO"
status=0
[ "$AFTER" = "$EXPECT" ] || { echo "FAILED: assertion count mismatch"; status=1; }
[ "$missing_sample" = 0 ] || { echo "FAILED: sampled ids missing"; status=1; }
if [ -n "$ARCHIVE" ] && [ "$WAIT" = 1 ] && [ "$lost" != 0 ]; then
    echo "FAILED: acknowledged writes lost although a WAL archive was used"; status=1
fi
[ "$status" = 0 ] && echo "DR drill PASSED" || echo "DR drill FAILED"
if [ "$KEEP" = 1 ] && [ -n "$PID" ]; then
    echo "server left running (pid $PID) on $BASE"; PID=""
fi
exit "$status"
