#!/usr/bin/env bash
# test_api_corrupt_read.sh - a stored record that no longer matches its
# checksum is never served: after flipping one byte of an assertion's value
# in its segment file, either startup refuses (naming the file and pointing
# to stemedb-fsck) or reads of it fail with 500 "corrupt" whose message
# holds no file path, and the altered bytes never appear in any response.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"

DATA="$T/data"
start_server "$DATA"
post_json /v1/assert '{"concept_path":"corrupt/x","predicate":"p","value":"needle-value-0123456789"}'
expect 201 "write the victim"
ID=$(jq -r .id "$T/body")
post_json /v1/assert '{"concept_path":"corrupt/y","predicate":"p","value":"bystander"}'
expect 201 "write a bystander"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"

files=$(grep -rl --exclude-dir=indexes "needle-value-0123456789" "$DATA/db" || true)
[ -n "$files" ] || fail "value not found in any segment under db/"
for f in $files; do
    off=$(grep -obUa "needle-value-0123456789" "$f" | head -n1 | cut -d: -f1)
    printf 'N' | dd of="$f" bs=1 seek=$((off + 7)) conv=notrunc 2>/dev/null
done
ok "flipped one byte of the value in $(echo "$files" | wc -w) segment file(s)"

LOG="$T/corrupt.log"
"$API_BIN" --data-dir "$DATA" --bind 127.0.0.1:0 --dashboard-bind off 2>"$LOG" &
SERVER_PID=$!
for i in $(seq 1 200); do
    grep -q "Startup complete, listening on" "$LOG" && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
if ! grep -q "Startup complete" "$LOG"; then
    wait "$SERVER_PID"
    rc=$?
    SERVER_PID=""
    [ "$rc" = 1 ] || fail "startup on corrupt data: exit $rc"
    grep "stemedb-api: error:" "$LOG" | grep -q "stemedb-fsck" ||
        fail "refusal does not point to stemedb-fsck: $(cat "$LOG")"
    ok "startup refuses the corrupt segment: $(grep 'stemedb-api: error:' "$LOG" | cut -c1-160)"
    echo "PASS"
    exit 0
fi
API_PORT=$(sed -n 's/.*Startup complete, listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$LOG")
BASE="http://127.0.0.1:$API_PORT"
req GET "$BASE/v1/assertions/$ID"
expect_error 500 "GET of the corrupt assertion"
assert_json '.error.code=="corrupt"' "code is corrupt"
if grep -q "$DATA\|/db/" "$T/body"; then fail "error message leaks a path: $(cat "$T/body")"; fi
ok "no path in the 500 message"
post_json /v1/query '{"concept_path":"corrupt/*"}'
if grep -q "needle-Nalue" "$T/body"; then
    fail "altered bytes served: $(cat "$T/body")"
fi
case "$STATUS" in
200 | 500) ok "query over the corrupt record -> $STATUS without altered bytes" ;;
*) fail "query over the corrupt record: $STATUS" ;;
esac
server_alive "after corrupt reads"
stop_server
echo "PASS"
