#!/usr/bin/env bash
# test_api_seed_runbooks.sh - the curl calls, environment variables and log
# lines of the seed runbooks (000 disaster recovery, 001 restore from
# backup, 004 server won't start) run as written, with only the port
# replaced by the test's own.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"

DATA="$T/data"
mkdir -p "$T/wal" "$T/db"

# 004: the documented variables (plus a data dir); port 0 picks a free port.
LOG="$T/env.log"
STEMEDB_BIND_ADDR=127.0.0.1:0 STEMEDB_DASHBOARD_ADDR=127.0.0.1:0 \
    STEMEDB_DATA_DIR="$DATA" STEMEDB_WAL_DIR="$T/wal" STEMEDB_DB_DIR="$T/db" \
    STEMEDB_TLS_ENABLED=false STEMEDB_METER_ENABLED=true \
    "$API_BIN" 2>"$LOG" &
SERVER_PID=$!
for i in $(seq 1 200); do
    grep -q "Startup complete, listening on" "$LOG" && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited: $(cat "$LOG")"
    sleep 0.05
done
P=$(sed -n 's/.*Startup complete, listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$LOG")
[ -n "$P" ] || fail "no 'Startup complete, listening on' line"
ok "env-configured server is listening on $P"
for n in 1 2 3 4 5 6 7 8 9 10; do
    grep -q "\[$n/10\]" "$LOG" || fail "startup step [$n/10] not logged"
done
ok "startup logs the ten steps"

# 004 §Validation
curl http://localhost:$P/v1/health >"$T/h" || fail "curl health"
jq -e '.status=="healthy"' "$T/h" >/dev/null || fail "health not healthy"
ok "curl http://localhost:PORT/v1/health"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{"concept_path":"test/health","lens":"recency"}')
[ "$code" = 200 ] || fail "004 test query: $code"
ok "004 query test/health -> 200"
curl -s http://localhost:$P/metrics | head -20 | grep -q '^# HELP' || fail "metrics head"
ok "004 curl /metrics | head -20"
if command -v lsof >/dev/null; then
    lsof -i :$P | grep -q LISTEN || fail "lsof does not show the listener"
    ok "lsof -i :PORT shows the listener"
fi

# 000 step 6: ingestion and queries
code=$(curl -s -o "$T/a" -w '%{http_code}' -X POST http://localhost:$P/v1/assert \
    -H "Content-Type: application/json" \
    -d '{
"concept_path": "test/dr_validation",
"predicate": "restored",
"value": true,
"confidence": 1.0,
"authority_tier": "expert"
}')
[ "$code" = 201 ] || fail "000 test ingestion: $code $(cat "$T/a")"
ok "000 POST /v1/assert -> 201 Created"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{
"concept_path": "test/dr",
"predicate": "recovered",
"lens": "recency"
}')
[ "$code" = 200 ] || fail "000 test query: $code"
ok "000 query test/dr (empty) -> 200"
# 001 validation ingestion
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://localhost:$P/v1/assert \
    -H "Content-Type: application/json" \
    -d '{ "concept_path": "test/restore_validation", "predicate": "restored", "value": true, "confidence": 0.95 }')
[ "$code" = 201 ] || fail "001 ingestion: $code"
ok "001 POST /v1/assert -> 201"
# 001 §3: bad data from a known source, then retraction by source
curl -s -o /dev/null -X POST http://localhost:$P/v1/assert \
    -H "Content-Type: application/json" \
    -d '{"concept_path":"bad/data/path","predicate":"level","value":99,"source":"source/bad_source"}'
TS=$(curl http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{"concept_path": "bad/data/path", "lens": "recency"}' | jq '.assertions[0].timestamp')
[ "$TS" != null ] || fail "001 bad data timestamp"
ok "001 query bad/data/path | jq .assertions[0].timestamp = $TS"
code=$(curl -s -o "$T/r" -w '%{http_code}' -X POST http://localhost:$P/v1/retract \
    -H "Content-Type: application/json" \
    -d '{
"concept_path": "source/bad_source",
"reason": "data_quality_issue",
"cascade": true
}')
[ "$code" = 200 ] || fail "001 retract: $code $(cat "$T/r")"
jq -e '.retracted>=1' "$T/r" >/dev/null || fail "001 retract did not retract the sourced assertion: $(cat "$T/r")"
n=$(curl -s -X POST http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{"concept_path": "bad/data/path", "lens": "recency"}' | jq '.assertions|length')
[ "$n" = 0 ] || fail "001 bad data still visible after cascade retraction"
ok "001 retract by source with cascade hides the bad data"

# 000 §2: last assertion timestamp
LAST_ASSERTION_TS=$(curl -s http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{"concept_path": "*", "lens": "recency", "limit": 1}' |
    jq -r '.assertions[0].timestamp')
case "$LAST_ASSERTION_TS" in 20*Z) ok "000 last assertion timestamp $LAST_ASSERTION_TS" ;;
*) fail "000 last assertion timestamp: $LAST_ASSERTION_TS" ;; esac
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://localhost:$P/v1/query \
    -H "Content-Type: application/json" \
    -d '{"concept_path": "test", "lens": "recency"}')
[ "$code" = 200 ] || fail "000 checklist query: $code"
curl -s http://localhost:$P/metrics | grep -q stemedb_ || fail "000 metrics grep stemedb_"
curl -s http://localhost:$P/metrics | grep -q '^wal_segments_total ' || fail "001 wal_segments_total"
curl -s http://localhost:$P/metrics | grep -q '^wal_fsync_latency_seconds' || fail "001 wal_fsync_latency_seconds"
ok "metrics | grep stemedb_ / wal_"
COUNT=$(curl -s http://localhost:$P/v1/health | jq .assertion_count)
[ "$COUNT" -ge 3 ] || fail "health assertion_count $COUNT"
[ -n "$(ls -A "$T/wal")" ] || fail "STEMEDB_WAL_DIR was not used"
ok "STEMEDB_WAL_DIR / STEMEDB_DB_DIR honoured"

# crash, then the recovery log lines of 000/001
kill9_server
LOG="$T/restart.log"
STEMEDB_BIND_ADDR=127.0.0.1:0 STEMEDB_DASHBOARD_ADDR=off \
    STEMEDB_DATA_DIR="$DATA" STEMEDB_WAL_DIR="$T/wal" STEMEDB_DB_DIR="$T/db" \
    "$API_BIN" 2>"$LOG" &
SERVER_PID=$!
for i in $(seq 1 200); do
    grep -q "Startup complete, listening on" "$LOG" && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "restart failed: $(cat "$LOG")"
    sleep 0.05
done
for line in "Starting WAL recovery..." "Replayed [0-9]* entries from WAL" \
    "Rebuilding indexes..." "Startup complete, listening on"; do
    grep -q "$line" "$LOG" || fail "log line '$line' missing after crash"
done
ok "recovery logs Starting WAL recovery / Replayed N entries / Rebuilding indexes"
P=$(sed -n 's/.*Startup complete, listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$LOG")
ACTUAL_COUNT=$(curl -s http://localhost:$P/v1/health | jq .assertion_count)
[ "$ACTUAL_COUNT" = "$COUNT" ] || fail "count after crash $ACTUAL_COUNT != $COUNT"
ok "assertion_count survives kill -9 ($COUNT)"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"

# 001 §4: indexes removed -> rebuilt with the same count
rm -rf "$T/db/indexes"
start_server "$DATA" --wal-dir "$T/wal" --db-dir "$T/db"
HEALTH_COUNT=$(curl -s http://localhost:$API_PORT/v1/health | jq '.assertion_count')
[ "$HEALTH_COUNT" = "$COUNT" ] || fail "count after index rebuild $HEALTH_COUNT != $COUNT"
ok "001 index rebuild keeps assertion_count"
stop_server
if [ -f "$DATA/metadata.json" ]; then
    METADATA_COUNT=$(jq '.assertion_count' "$DATA/metadata.json")
    [ "$METADATA_COUNT" = "$COUNT" ] || fail "metadata.json assertion_count $METADATA_COUNT != $COUNT"
    ok "001 metadata.json assertion_count matches health"
fi
echo "PASS"
