#!/usr/bin/env bash
# test_api_truncated_read.sh - a segment file cut short while the server
# runs (truncated under the server's mapping of it) fails the reads that need
# it with 500 "corrupt" instead of killing the server with SIGBUS; the
# server logs the file, other concepts are still served, and it stops
# cleanly.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"
command -v python3 >/dev/null || fail "python3 is required"

DATA="$T/data"
start_server "$DATA"

# 40 assertions of ~3 KB on one concept: a segment file of many pages
python3 - "$T/batch.json" <<'PY'
import json, sys
big = "v" * 3000
items = [{"concept_path": "trunc/x", "predicate": "p", "value": "%s-%d" % (big, i)}
         for i in range(40)]
json.dump({"assertions": items}, open(sys.argv[1], "w"))
PY
req POST "$BASE/v1/assert" -H "Content-Type: application/json" --data-binary @"$T/batch.json"
expect 201 "write 40 large assertions"
post_json /v1/assert '{"concept_path":"bystander/y","predicate":"p","value":"still-here"}'
expect 201 "write a bystander"

# read once: the server maps the file and notes its size
post_json /v1/query '{"concept_path":"trunc/x","limit":5}'
expect 200 "query before the truncation"
assert_json '.count==5' "five assertions read"

seg=$(find "$DATA/db" -path '*trunc*' -name '@seg-*.msgpack' | head -n1)
[ -n "$seg" ] && [ "$(stat -c %s "$seg")" -gt 100000 ] ||
    fail "segment file of trunc/x not found or too small: '$seg'"
truncate -s 0 "$seg"
ok "truncated $(basename "$seg") to 0 bytes under the running server"

post_json /v1/query '{"concept_path":"trunc/x","limit":5}'
expect_error 500 "query over the truncated file"
assert_json '.error.code=="corrupt"' "code is corrupt"
server_alive "after reading a truncated mapped file"
post_json /v1/query '{"concept_path":"bystander/y"}'
expect 200 "query of another concept"
assert_json '.count==1 and .assertions[0].value=="still-here"' "the bystander is served"
grep -q "trunc" "$LOG" || fail "the server log does not name the file: $(tail -n 5 "$LOG")"
ok "the log names the file"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"
echo "PASS"
