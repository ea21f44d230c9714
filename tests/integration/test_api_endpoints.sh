#!/usr/bin/env bash
# test_api_endpoints.sh - every endpoint of stemedb-api and every error
# status (DESIGN.md section 3) over real HTTP on 127.0.0.1: 200/201 paths,
# 400, 401, 403, 404, 405 (+Allow), 411, 413, 414, 415, 429 (+Retry-After),
# metrics disabled, HEAD, and a clean SIGTERM exit.  503 is covered by
# test_api_readonly.sh.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"
command -v python3 >/dev/null || fail "python3 is required"

start_server "$T/data"

# ---- health ----
req GET "$BASE/v1/health"
expect 200 "GET /v1/health"
assert_json '.status=="healthy" and (.version|type=="string")
    and (.uptime_seconds|type=="number") and (.assertion_count==0)
    and (.wal_segments|type=="number") and (.last_lsn|type=="number")' \
    "health has status, version, uptime, counts"
[ "$(header Content-Type)" = "application/json" ] || fail "health content type"
req HEAD "$BASE/v1/health" -I
expect 200 "HEAD /v1/health"

# ---- keep-alive: requests without a body keep the connection ----
python3 - "$API_PORT" <<'PY' || fail "GET requests keep the connection open"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
first = None
for path, want in [("/v1/health", 200), ("/v1/health", 200),
                   ("/v1/nothing", 404), ("/v1/concepts?prefix=", 200)]:
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    if r.status != want:
        sys.exit("%s: status %d, want %d" % (path, r.status, want))
    if (r.getheader("Connection") or "").lower() == "close" or c.sock is None:
        sys.exit("%s: the server closed the connection" % path)
    port = c.sock.getsockname()[1]
    if first is None:
        first = port
    elif port != first:
        sys.exit("%s: answered on a new connection" % path)
PY
ok "GET requests (200 and 404) share one keep-alive connection"

# ---- assert ----
post_json /v1/assert '{"concept_path":"medicine/aspirin/dosage","predicate":"max_daily_mg","value":4000,"confidence":0.9,"authority_tier":"expert","source":"source/pubmed/123"}'
expect 201 "POST /v1/assert"
assert_json '(.id|type=="string") and (.timestamp|test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T.*Z$")) and (.lsn|type=="number")' \
    "assert returns id, timestamp, lsn"
ID1=$(jq -r .id "$T/body")

post_json /v1/assert '{"assertions":[{"concept_path":"medicine/aspirin/dosage","predicate":"max_daily_mg","value":3000,"confidence":0.5},{"concept_path":"medicine/ibuprofen","predicate":"class","value":"nsaid","derived_from":["'"$ID1"'"]}]}'
expect 201 "POST /v1/assert batch"

post_json /v1/assert '{"assertions":[{"concept_path":"ok/path","predicate":"p","value":1},{"concept_path":"bad//path","predicate":"p","value":1}]}'
expect_error 400 "batch with one invalid assertion is rejected whole"
post_json /v1/query '{"concept_path":"ok/path"}'
expect 200 "query after rejected batch"
assert_json '.count==0' "all-or-nothing batch stored nothing"

# ---- get ----
req GET "$BASE/v1/assertions/$ID1"
expect 200 "GET /v1/assertions/{id}"
jq -e --arg id "$ID1" '.id==$id and .predicate=="max_daily_mg" and (.retracted==false)' "$T/body" >/dev/null ||
    fail "get returns the assertion with retracted=false: $(cat "$T/body")"
ok "get returns the assertion with its retraction status"
req GET "$BASE/v1/assertions/ffffffffffffffffffffffff"
expect_error 404 "GET unknown (well-formed) id"
req GET "$BASE/v1/assertions/not-an-id"
expect_error 400 "GET malformed id"

# ---- query ----
post_json /v1/query '{"concept_path":"medicine/aspirin/dosage","lens":"recency"}'
expect 200 "POST /v1/query exact"
assert_json '.count==2 and (.assertions|length)==2 and (.assertions[0].value==3000) and has("next_cursor")' \
    "exact query returns both, newest first"
post_json /v1/query '{"concept_path":"medicine/*","lens":"confidence"}'
expect 200 "POST /v1/query subtree"
assert_json '.count==3 and .assertions[0].confidence==1' "subtree query, confidence lens"
post_json /v1/query '{"concept_path":"*","limit":1}'
expect 200 "POST /v1/query all with limit"
assert_json '(.assertions|length)==1' "limit 1 returns one"
post_json /v1/query '{"concept_path":"nothing/here"}'
expect 200 "empty query result"
assert_json '.count==0 and .assertions==[]' "empty result is 200 with no assertions"
post_json /v1/query '{"concept_path":"medicine/aspirin/dosage","lens":"consensus"}'
expect 200 "consensus lens"
post_json /v1/query '{"concept_path":"medicine/aspirin/dosage","lens":"bogus"}'
expect_error 400 "unknown lens"

# ---- concepts ----
req GET "$BASE/v1/concepts?prefix="
expect 200 "GET /v1/concepts (roots)"
assert_json '[.concepts[].name] | index("medicine") != null' "roots list medicine"
req GET "$BASE/v1/concepts?prefix=medicine"
expect 200 "GET /v1/concepts?prefix=medicine"
assert_json '[.concepts[].name] | index("aspirin") != null' "children of medicine"
req GET "$BASE/v1/concepts"
expect 200 "GET /v1/concepts without prefix"

# ---- retract ----
post_json /v1/retract '{"id":"'"$ID1"'"}'
expect_error 400 "retract without reason"
assert_json '.error.field=="reason"' "missing reason names the field"
post_json /v1/retract '{"id":"'"$ID1"'","reason":"superseded","cascade":true}'
expect 200 "POST /v1/retract"
assert_json '.retracted>=2 and (.ids|index("'"$ID1"'") != null)' \
    "cascade retracts the derived assertion too"
req GET "$BASE/v1/assertions/$ID1"
expect 200 "GET retracted id"
assert_json '.retracted==true' "retracted flag set"
post_json /v1/query '{"concept_path":"medicine/ibuprofen"}'
assert_json '.count==0' "derived assertion hidden after cascade"
post_json /v1/query '{"concept_path":"medicine/ibuprofen","include_retracted":true}'
assert_json '.count==1' "include_retracted shows it"

# ---- metrics ----
req GET "$BASE/metrics"
expect 200 "GET /metrics"
header Content-Type | grep -q '^text/plain; version=0.0.4' ||
    fail "metrics content type: $(header Content-Type)"
grep -q '^stemedb_assertions_total 3$' "$T/body" || fail "stemedb_assertions_total 3 missing"
grep -q '^wal_segments_total ' "$T/body" || fail "wal_segments_total missing"
grep -q '^wal_fsync_latency_seconds_bucket{le="+Inf"}' "$T/body" || fail "fsync histogram missing"
grep -q '^stemedb_http_requests_total{endpoint="/v1/assert",code="201"} 2$' "$T/body" ||
    fail "per-endpoint request counter missing"
grep -q '^process_resident_memory_bytes ' "$T/body" || fail "process metrics missing"
ok "metrics carry engine, HTTP and process series"

# ---- 404 / 405 ----
req GET "$BASE/v1/nope"
expect_error 404 "unknown path"
req GET "$BASE/v1/assertions/"
expect_error 404 "empty id"
req GET "$BASE/v1/assert"
expect_error 405 "GET on POST endpoint"
[ "$(header Allow)" = "POST" ] || fail "405 Allow header: '$(header Allow)'"
req DELETE "$BASE/v1/health"
expect_error 405 "DELETE on health"
[ "$(header Allow)" = "GET, HEAD" ] || fail "405 Allow header for GET endpoint"
req POST "$BASE/v1/health" -H "Content-Type: application/json" -d '{}'
expect_error 405 "POST on GET endpoint"

# ---- 400 ----
post_json /v1/assert '{"concept_path":'
expect_error 400 "truncated JSON"
assert_json '.error.code=="invalid_json"' "invalid_json code"
post_json /v1/assert '[1,2]'
expect_error 400 "array body"
post_json /v1/assert '{"concept_path":"a/b","predicate":"p","value":1,"confidence":7}'
expect_error 400 "confidence out of range"
assert_json '.error.field=="confidence"' "field names confidence"
post_json /v1/assert '{"concept_path":"a/b","predicate":"p","value":1,"id":"mine"}'
expect_error 400 "client-sent id is rejected"

# ---- 415 ----
req POST "$BASE/v1/assert" -H "Content-Type: text/plain" -d '{}'
expect_error 415 "text/plain body"
req POST "$BASE/v1/query" -d '{"concept_path":"*"}'
expect_error 415 "curl's default form content type"
post_json /v1/query '{"concept_path":"*"}' -H "Content-Type: application/json; charset=utf-8"
expect 200 "application/json with charset accepted"

# ---- 411 / 413 (raw requests: curl always sends a length) ----
printf 'POST /v1/assert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n' >"$T/raw411"
line=$(raw_http "$API_PORT" "$T/raw411")
case "$line" in *" 411 "*) ok "POST without Content-Length -> 411" ;;
*) fail "POST without Content-Length: $line" ;; esac
printf 'POST /v1/assert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{' >"$T/raw413"
line=$(raw_http "$API_PORT" "$T/raw413")
case "$line" in *" 413 "*) ok "huge Content-Length -> 413 before the body" ;;
*) fail "huge Content-Length: $line" ;; esac
head -c 9000000 /dev/zero | tr '\0' ' ' >"$T/big.json"
req POST "$BASE/v1/assert" -H "Content-Type: application/json" --data-binary @"$T/big.json"
expect_error 413 "9 MB body"
req POST "$BASE/v1/assert" -H "Content-Type: application/json" -H "Transfer-Encoding: chunked" --data-binary @"$T/big.json"
expect_error 413 "9 MB chunked body (bytes counted)"
server_alive "after 411/413"

# ---- 414 ----
long=$(head -c 5000 /dev/zero | tr '\0' a)
req GET "$BASE/v1/assertions/$long"
case "$STATUS" in 414 | 400) ok "overlong URL -> $STATUS" ;; *) fail "overlong URL: $STATUS" ;; esac

stop_server
[ "$STOP_RC" = 0 ] || fail "SIGTERM exit status $STOP_RC"
grep -q "Shutdown complete" "$LOG" || fail "no shutdown log line"
ok "SIGTERM -> exit 0"

# ---- metrics disabled ----
start_server "$T/data" --meter-enabled=false
req GET "$BASE/metrics"
expect_error 404 "/metrics with STEMEDB_METER_ENABLED=false"
req GET "$BASE/v1/health"
assert_json '.assertion_count==3' "data survives a clean restart"
stop_server

# ---- token: 401 / 403 ----
printf 's3cret-token\n' >"$T/token"
chmod 600 "$T/token"
STEMEDB_API_TOKEN_FILE="$T/token" start_server "$T/data"
post_json /v1/assert '{"concept_path":"t/a","predicate":"p","value":1}'
expect_error 401 "write without token"
[ -n "$(header WWW-Authenticate)" ] || fail "401 without WWW-Authenticate"
post_json /v1/assert '{"concept_path":"t/a","predicate":"p","value":1}' -H "Authorization: Bearer wrong"
expect_error 403 "write with wrong token"
post_json /v1/assert '{"concept_path":"t/a","predicate":"p","value":1}' -H "Authorization: Bearer s3cret-token-longer"
expect_error 403 "write with a longer token"
post_json /v1/retract '{"id":"x","reason":"r"}'
expect_error 401 "retract without token"
post_json /v1/assert '{"concept_path":"t/a","predicate":"p","value":1}' -H "Authorization: Bearer s3cret-token"
expect 201 "write with the right token"
post_json /v1/query '{"concept_path":"t/a"}'
expect 200 "reads need no token"
stop_server

# ---- 429 ----
start_server "$T/data" --rate-limit-write-rps=1 --rate-limit-write-burst=2 \
    --rate-limit-read-rps=2 --rate-limit-read-burst=3
n429=0
for i in 1 2 3 4 5; do
    post_json /v1/assert '{"concept_path":"rl/a","predicate":"p","value":'"$i"'}'
    if [ "$STATUS" = 429 ]; then
        n429=$((n429 + 1))
        ra=$(header Retry-After)
        [ -n "$ra" ] && [ "$ra" -ge 1 ] || fail "429 without Retry-After"
        jq -e '.error.code=="rate_limited"' "$T/body" >/dev/null || fail "429 body"
    fi
done
[ "$n429" -ge 2 ] || fail "expected at least two 429s from 5 quick writes, got $n429"
ok "write rate limit -> 429 with Retry-After"
req GET "$BASE/v1/health"
expect 200 "health is not rate limited"
for i in 1 2 3 4 5 6; do req GET "$BASE/v1/concepts"; done
expect_error 429 "read rate limit on /v1/concepts"
post_json /v1/query '{"concept_path":"*"}'
expect 200 "buckets are per endpoint"
sleep 2.2
post_json /v1/assert '{"concept_path":"rl/a","predicate":"p","value":9}'
expect 201 "bucket refills"
grep -q 'stemedb_http_rate_limited_total{endpoint="/v1/assert"} [1-9]' <(curl -s "$BASE/metrics") ||
    fail "rate limited counter"
stop_server
echo "PASS"
