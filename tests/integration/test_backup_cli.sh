#!/usr/bin/env bash
# test_backup_cli.sh - stemedb-backup / stemedb-restore from the command
# line: usage exit codes, the last stdout line is the backup path, the
# status file /metrics reads, verify catching a flipped byte, hot backup
# under write load, dry run, refusal while the server runs, restore that
# renames (never deletes), point-in-time restore by LSN through the WAL
# archive, expire, and the DR drill on a small store (RPO 0 with archive).
set -u
: "${SDB_BIN:?}" "${SDB_SRC:?}"
: "${SDB_TEST_TMPDIR:=/tmp}"
mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/backup-cli.XXXXXX")
PID=""
cleanup() {
    local rc=$?
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    [ "$rc" = 0 ] && rm -rf "$T" || echo "kept $T"
    exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok - $*"; }
BK="$SDB_BIN/stemedb-backup" RS="$SDB_BIN/stemedb-restore" API="$SDB_BIN/stemedb-api"
for b in "$BK" "$RS" "$API"; do [ -x "$b" ] || fail "missing $b"; done

start() { # DATA [flags]
    local d=$1 i
    shift
    : >"$T/server.log"
    "$API" --data-dir "$d" --bind 127.0.0.1:0 --dashboard-bind off "$@" 2>>"$T/server.log" &
    PID=$!
    for i in $(seq 1 400); do
        grep -q "Startup complete, listening on" "$T/server.log" && break
        kill -0 "$PID" 2>/dev/null || { cat "$T/server.log"; fail "server died"; }
        sleep 0.05
    done
    BASE="http://127.0.0.1:$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' "$T/server.log" | tail -n1)"
}
stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID"
    wait "$PID"
    PID=""
}
put() { # N CONCEPT -> appends "id lsn" lines to $T/acked
    local i out
    for i in $(seq 1 "$1"); do
        out=$(curl -s --max-time 10 -X POST -H 'Content-Type: application/json' \
            -d "{\"concept_path\":\"$2\",\"predicate\":\"n\",\"value\":$i}" "$BASE/v1/assert")
        echo "$out" | sed -n 's/.*"id":"\([0-9a-f]*\)".*"lsn":\([0-9]*\).*/\1 \2/p' >>"$T/acked"
    done
}
health_count() { curl -s --max-time 10 "$BASE/v1/health" | sed -n 's/.*"assertion_count":\([0-9]*\).*/\1/p'; }

# ---- usage errors ----
"$BK" --data-dir x >/dev/null 2>&1; [ $? = 2 ] || fail "backup without --dest must exit 2"
"$BK" frobnicate >/dev/null 2>&1; [ $? = 2 ] || fail "unknown command must exit 2"
"$RS" >/dev/null 2>&1; [ $? = 2 ] || fail "restore without BACKUP must exit 2"
"$RS" b --data-dir d --until yesterday >/dev/null 2>&1; [ $? = 2 ] || fail "bad --until must exit 2"
"$BK" --help | grep -q "stemedb-backup" || fail "--help"
ok "usage errors exit 2"

# ---- a store with an archive ----
D="$T/data" A="$T/archive" B="$T/backups"
mkdir -p "$A"
: >"$T/acked"
start "$D" --wal-archive-dir "$A" --wal-segment-timeout 1
put 40 cli/a

# hot backup while a writer runs
( put 60 cli/hot ) &
W=$!
sleep 0.3
"$BK" --data-dir "$D" --dest "$B" >"$T/b1.out" 2>"$T/b1.err" || { cat "$T/b1.err"; fail "hot backup failed"; }
wait "$W"
B1=$(tail -n1 "$T/b1.out")
[ -d "$B1" ] && [ -f "$B1/metadata.json" ] || fail "last stdout line '$B1' is not a backup"
case "$B1" in "$B"/stemedb-backup-[0-9]*-[0-9]*) ;; *) fail "bad backup name $B1" ;; esac
grep -q '"last_success_unix": [1-9]' "$D/backup-status.json" || fail "status file not updated"
ok "hot backup under load: $B1"
L1=$(sed -n 's/^  "lsn": \([0-9]*\).*/\1/p' "$B1/metadata.json")
[ -n "$L1" ] || fail "no lsn in metadata.json"
for k in version timestamp assertion_count wal_segment_count backup_type store_id manifest_checksum; do
    grep -q "\"$k\"" "$B1/metadata.json" || fail "metadata.json lacks $k"
done
"$BK" verify "$B1" >"$T/v.out" || { cat "$T/v.out"; fail "verify of a fresh backup"; }
ok "verify passes (lsn $L1)"

# corrupt copy fails verify
cp -a "$B1" "$T/badcopy"
f=$(ls "$T/badcopy/wal/"segment-*.wal | head -n1)
printf '\x01' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
"$BK" verify "$T/badcopy" >"$T/v2.out" 2>&1; [ $? = 1 ] || fail "verify must exit 1 on a flipped byte"
grep -q "checksum mismatch" "$T/v2.out" || fail "verify did not name the checksum mismatch"
ok "verify exits 1 on a flipped byte"

# failure is counted in the status file
cp -a "$D" "$T/broken" 2>/dev/null
echo '{}' >"$T/broken/metadata.json"
rm -f "$T/broken/LOCK"
"$BK" --data-dir "$T/broken" --dest "$B" >/dev/null 2>&1; [ $? = 1 ] || fail "backup of a broken store must exit 1"
grep -q '"failures_total": 1' "$T/broken/backup-status.json" || fail "failure not counted"
ok "failed backup exits 1 and is counted"

# more writes after the backup, then a segment switch lands them in the archive
for burst in 1 2 3; do
    put 10 cli/late
    sleep 1.5
done
sleep 1
TOTAL=$(health_count)
[ "$TOTAL" = 130 ] || fail "expected 130 assertions, server says $TOTAL"

# restore refused while the server holds the store
"$RS" "$B1" --data-dir "$D" >"$T/r0.out" 2>&1; [ $? = 1 ] || fail "restore must refuse a running store"
grep -q "in use" "$T/r0.out" || fail "refusal does not say why"
ok "restore refuses while the server runs"
stop

# dry run changes nothing
before=$(ls -R "$T")
"$RS" "$B1" --data-dir "$D" --wal-archive "$A" --dry-run >"$SDB_TEST_TMPDIR/dry.$$" || fail "dry run failed"
mv "$SDB_TEST_TMPDIR/dry.$$" "$T/dry.out"
[ "$(ls -R "$T" | grep -v '^dry.out$')" = "$before" ] || fail "dry run changed the directory"
grep -q "would restore into" "$T/dry.out" || fail "dry run prints no plan"
ok "dry run"

# point-in-time restore by LSN: target halfway between the backup and the end
LAST=$(awk '{print $2}' "$T/acked" | sort -n | tail -n1)
TGT=$(( (L1 + LAST) / 2 ))
WANT=$(awk -v t="$TGT" '$2 <= t' "$T/acked" | wc -l)
echo marker >"$D/operator-note"
"$RS" "$B1" --data-dir "$D" --wal-archive "$A" --until-lsn "$TGT" >"$T/r1.out" 2>&1 || { cat "$T/r1.out"; fail "PITR restore failed"; }
grep -q "assertions restored: $WANT" "$T/r1.out" || { cat "$T/r1.out"; fail "PITR restored count != $WANT"; }
grep -q "elapsed:" "$T/r1.out" || fail "no elapsed time printed"
moved=$(ls -d "$D".backup.* | head -n1)
[ -f "$moved/operator-note" ] || fail "old data not kept in $moved"
start "$D"
[ "$(health_count)" = "$WANT" ] || fail "server after PITR has $(health_count), want $WANT"
stop
ok "PITR to LSN $TGT restored $WANT assertions; old data in $moved"

# a gap in the archive fails the restore
# (remove the archived segment right after the backup's last one, while a
# later one exists, so the restore would have to jump over it)
cp -a "$A" "$T/gappy"
lastb=$(ls "$B1"/wal | tail -n1)
lastb=${lastb#segment-}
lastb=$((16#${lastb%.wal}))
gap="$T/gappy/$(printf 'segment-%016x.wal' $((lastb + 1)))"
after="$T/gappy/$(printf 'segment-%016x.wal' $((lastb + 2)))"
segs=$(ls "$T/gappy"/segment-*.wal | wc -l)
if [ -e "$gap" ] && [ -e "$after" ]; then
    rm "$gap"
    "$RS" "$B1" --data-dir "$T/gaptarget" --wal-archive "$T/gappy" >"$T/g.out" 2>&1; [ $? = 1 ] || fail "restore across a gap must fail"
    grep -q "gap in the WAL archive" "$T/g.out" || { cat "$T/g.out"; fail "gap not named"; }
    [ ! -e "$T/gaptarget" ] || fail "a failed restore created the data directory"
    ok "gap in the archive fails the restore"
else
    echo "SKIP: only $segs archived segments, none after the backup's; gap check not run"
fi

# expire keeps the newest; a dead backup's temporary directory is cleaned
mkdir -p "$B/.stemedb-backup-20200101-000000.tmp-999999/wal"
"$BK" --data-dir "$D" --dest "$B" >/dev/null || fail "second backup"
[ ! -e "$B/.stemedb-backup-20200101-000000.tmp-999999" ] || fail "stale temporary directory kept"
"$BK" expire --dest "$B" --keep 1 >"$T/e.out" || fail "expire"
[ "$(ls -d "$B"/stemedb-backup-* | wc -l)" = 1 ] || fail "expire kept $(ls "$B")"
ok "expire --keep 1"

# DR drill on a small store with the archive
DRILL="$SDB_SRC/tools/stemedb-dr-drill.sh"
"$DRILL" --data-dir "$D" --backup-dir "$B" --wal-archive "$T/drill-archive" --bin "$SDB_BIN" \
    --writes 10 --sample 10 >"$T/drill.out" 2>&1 || { cat "$T/drill.out"; fail "DR drill failed"; }
grep -q "^RPO_SECONDS=0$" "$T/drill.out" || { cat "$T/drill.out"; fail "RPO not 0 with archive"; }
grep "^RTO_SECONDS=" "$T/drill.out"
ok "DR drill passed"
echo "PASS"
