#!/usr/bin/env bash
# test_api_readonly.sh - an fdatasync failure (injected with strace:
# inject=fdatasync:error=EIO from the Nth call on) makes the store
# read-only: the failed write is not acknowledged, writes get 503 with
# Retry-After, /v1/health says read_only, /metrics says stemedb_read_only 1,
# reads keep working, and after a restart every acknowledged write is there.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"
command -v strace >/dev/null || skip_all "strace not installed; fsync fault injection not run"

DATA="$T/data"
# create the data directory first so startup does no first-time syncs
start_server "$DATA"
post_json /v1/assert '{"concept_path":"ro/a","predicate":"p","value":0}'
expect 201 "baseline write"
echo "$(jq -r .id "$T/body")" >"$T/acked"
stop_server

FAIL_FROM=${SDB_API_FAIL_FDATASYNC_FROM:-3}
LOG="$T/strace-server.log"
# LeakSanitizer cannot run under ptrace: leak checks off for this server
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -qq -o /dev/null -e trace=fdatasync \
    -e inject=fdatasync:error=EIO:when=$FAIL_FROM+ \
    "$API_BIN" --data-dir "$DATA" --bind 127.0.0.1:0 --dashboard-bind off \
    --retry-after 7 2>"$LOG" &
STRACE_PID=$!
EXTRA_PIDS="$STRACE_PID"
for i in $(seq 1 300); do
    grep -q "Startup complete, listening on" "$LOG" && break
    kill -0 "$STRACE_PID" 2>/dev/null || fail "server under strace exited: $(cat "$LOG")"
    sleep 0.05
done
API_PORT=$(sed -n 's/.*Startup complete, listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$LOG")
[ -n "$API_PORT" ] || fail "server under strace did not start"
BASE="http://127.0.0.1:$API_PORT"
SERVER_PID=$(pgrep -P "$STRACE_PID" | head -n1)
[ -n "$SERVER_PID" ] || fail "no server process under strace"

got503=0
for i in $(seq 1 30); do
    post_json /v1/assert '{"concept_path":"ro/a","predicate":"p","value":'"$i"'}'
    case "$STATUS" in
    201) jq -r .id "$T/body" >>"$T/acked" ;;
    503)
        got503=1
        [ "$(header Retry-After)" = 7 ] || fail "503 without Retry-After: 7"
        jq -e '.error.code=="read_only"' "$T/body" >/dev/null || fail "503 body: $(cat "$T/body")"
        break
        ;;
    *) fail "write $i: unexpected $STATUS $(cat "$T/body")" ;;
    esac
done
[ "$got503" = 1 ] || fail "no 503 after injecting fdatasync failures from call $FAIL_FROM"
ok "failed fdatasync -> 503 read_only with Retry-After (after $(($(wc -l <"$T/acked") - 1)) acked writes)"
post_json /v1/assert '{"concept_path":"ro/a","predicate":"p","value":"again"}'
expect_error 503 "later writes refused"
[ -n "$(header Retry-After)" ] || fail "no Retry-After on later 503"
post_json /v1/retract '{"concept_path":"ro/a","reason":"x"}'
expect_error 503 "retractions refused too"
req GET "$BASE/v1/health"
expect 200 "health while read-only"
assert_json '.status=="read_only"' "health status read_only"
post_json /v1/query '{"concept_path":"ro/a"}'
expect 200 "reads keep working"
req GET "$BASE/metrics"
grep -q '^stemedb_read_only 1$' "$T/body" || fail "metrics stemedb_read_only != 1"
grep -q '^stemedb_read_only_errno 5$' "$T/body" || fail "metrics read_only_errno != EIO"
ok "metrics show read-only (errno 5)"
kill -TERM "$SERVER_PID"
for i in $(seq 1 150); do kill -0 "$STRACE_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$STRACE_PID" 2>/dev/null && fail "read-only server did not stop on SIGTERM"
wait "$STRACE_PID" 2>/dev/null
EXTRA_PIDS=""
SERVER_PID=""

start_server "$DATA"
while read -r id; do
    req GET "$BASE/v1/assertions/$id"
    expect 200 "acked $id present after restart"
done <"$T/acked"
req GET "$BASE/v1/health"
assert_json '.status=="healthy"' "healthy after restart"
stop_server
if [ -x "$SDB_BIN/stemedb-fsck" ]; then
    "$SDB_BIN/stemedb-fsck" -n "$DATA" >"$T/fsck.out" 2>&1 || fail "fsck: $(tail -5 "$T/fsck.out")"
    ok "stemedb-fsck -n clean"
fi
echo "PASS"
