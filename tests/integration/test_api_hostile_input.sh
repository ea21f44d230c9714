#!/usr/bin/env bash
# test_api_hostile_input.sh - hostile requests get a 4xx JSON error, never
# a 5xx, nothing is created outside the data directory, and the server stays
# up: path traversal, NUL (\u0000 and %00), overlong and deep concept paths,
# invalid / deeply nested / duplicate-key JSON, invalid UTF-8, wrong content
# type, huge bodies, negative limits, bad as_of and cursors.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"
command -v python3 >/dev/null || fail "python3 is required"

DATA="$T/d/data"
mkdir -p "$T/d"
start_server "$DATA"

# hostile BODY WHAT [PATH]: POST it, want a 4xx error body and a live server.
hostile() {
    local body=$1 what=$2 path=${3:-/v1/assert}
    printf '%s' "$body" >"$T/hostile.json"
    req POST "$BASE$path" -H "Content-Type: application/json" --data-binary @"$T/hostile.json"
    case "$STATUS" in
    4??) ;;
    *) fail "$what: expected 4xx, got $STATUS $(head -c 300 "$T/body")" ;;
    esac
    jq -e '.error.code|type=="string"' "$T/body" >/dev/null ||
        fail "$what: not a JSON error body"
    ok "$what -> $STATUS"
}

hostile '{"concept_path":"../../etc/passwd","predicate":"p","value":1}' "traversal ../"
hostile '{"concept_path":"a/../../b","predicate":"p","value":1}' "traversal in the middle"
hostile '{"concept_path":"/etc/passwd","predicate":"p","value":1}' "absolute path"
hostile '{"concept_path":"a/./b","predicate":"p","value":1}' "dot component"
hostile '{"concept_path":"a//b","predicate":"p","value":1}' "empty component"
hostile '{"concept_path":"a/b/","predicate":"p","value":1}' "trailing slash"
hostile '{"concept_path":"a\u0000b","predicate":"p","value":1}' "NUL via \\u0000 in a path"
hostile '{"concept_path":"a/b","predicate":"p\u0000q","value":1}' "NUL in a predicate"
hostile '{"concept_path":"a\nb","predicate":"p","value":1}' "control character"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"source":"../x"}' "traversal in source"
long=$(head -c 2000 /dev/zero | tr '\0' a)
hostile '{"concept_path":"'"$long"'","predicate":"p","value":1}' "overlong path"
comp=$(head -c 300 /dev/zero | tr '\0' b)
hostile '{"concept_path":"a/'"$comp"'","predicate":"p","value":1}' "overlong component"
deep=$(printf 'c/%.0s' $(seq 1 40))x
hostile '{"concept_path":"'"$deep"'","predicate":"p","value":1}' "41-deep path"
hostile '{"concept_path":"a/b","predicate":"'"$(head -c 400 /dev/zero | tr '\0' p)"'","value":1}' "overlong predicate"
hostile '{"concept_path":' "invalid JSON"
hostile '{"concept_path":"a/b","predicate":"p","value":1} trailing' "trailing garbage"
hostile "$(printf '[%.0s' $(seq 1 5000))" "5000-deep array"
hostile '{"concept_path":"a/b","predicate":"p","value":'"$(printf '[%.0s' $(seq 1 100))"'1'"$(printf ']%.0s' $(seq 1 100))"'}' "value nested 100 deep"
hostile '{"concept_path":"a/b","predicate":"p","predicate":"q","value":1}' "duplicate keys"
hostile '{"concept_path":"a/b","predicate":"p","value":NaN}' "NaN"
hostile '{"concept_path":"a/b","predicate":"p","value":18446744073709551617}' "integer overflow"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"confidence":-0.1}' "negative confidence"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"authority_tier":"god"}' "unknown tier"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"derived_from":"x"}' "derived_from not an array"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"timestamp":"2020-01-01T00:00:00Z"}' "client timestamp"
hostile '{"concept_path":"a/b","predicate":"p","value":1,"lsn":5}' "client lsn"
hostile '{"assertions":[]}' "empty batch"
hostile '{"concept_path":"*","limit":-1}' "negative limit" /v1/query
hostile '{"concept_path":"*","limit":"10"}' "string limit" /v1/query
hostile '{"concept_path":"*","as_of":"yesterday"}' "bad as_of" /v1/query
hostile '{"concept_path":"*","as_of":"2026-13-45T99:00:00Z"}' "impossible as_of" /v1/query
hostile '{"concept_path":"*","cursor":"!!!garbage!!!"}' "bad cursor" /v1/query
hostile '{"concept_path":"../*"}' "traversal in a query" /v1/query
hostile '{"concept_path":"*"}' "retract without target or reason" /v1/retract
hostile '{"concept_path":"../x","reason":"r"}' "traversal in a retraction" /v1/retract

# invalid UTF-8 (raw bytes, not escapes)
printf '{"concept_path":"a/\xff\xfe","predicate":"p","value":1}' >"$T/bad-utf8.json"
req POST "$BASE/v1/assert" -H "Content-Type: application/json" --data-binary @"$T/bad-utf8.json"
expect_error 400 "invalid UTF-8 bytes"
printf '{"concept_path":"a/\xc0\xaf","predicate":"p","value":1}' >"$T/overlong-utf8.json"
req POST "$BASE/v1/assert" -H "Content-Type: application/json" --data-binary @"$T/overlong-utf8.json"
expect_error 400 "overlong UTF-8 encoding of /"
hostile '{"concept_path":"a/\ud800","predicate":"p","value":1}' "lone surrogate"

# URLs
req GET "$BASE/v1/assertions/..%2F..%2Fetc%2Fpasswd"
case "$STATUS" in 400 | 404) ok "traversal id -> $STATUS" ;; *) fail "traversal id: $STATUS" ;; esac
req GET "$BASE/v1/assertions/abc%00def"
expect_error 400 "%00 in an id"
req GET "$BASE/v1/concepts?prefix=..%2F..%2F"
case "$STATUS" in 400 | 404) ok "traversal prefix -> $STATUS" ;; *) fail "traversal prefix: $STATUS" ;; esac
req GET "$BASE/v1/concepts?prefix=a%00b"
expect_error 400 "%00 in a query argument"
req GET "$BASE/v1/concepts?prefix=%FF%FE"
case "$STATUS" in 400 | 404) ok "invalid UTF-8 prefix -> $STATUS" ;; *) fail "invalid UTF-8 prefix: $STATUS" ;; esac
req GET "$BASE/v1/concepts?prefix=$(head -c 3000 /dev/zero | tr '\0' q)"
expect_error 400 "overlong prefix"
req GET "$BASE/v1/assertions/$(head -c 1000 /dev/zero | tr '\0' 7)"
expect_error 400 "overlong id"
req GET "$BASE/$(printf 'x/%.0s' $(seq 1 3000))"
case "$STATUS" in 404 | 414) ok "overlong deep URL -> $STATUS" ;; *) fail "overlong deep URL: $STATUS" ;; esac

# content type and size
req POST "$BASE/v1/assert" -H "Content-Type: application/x-www-form-urlencoded" -d 'a=b'
expect_error 415 "form content type"
req POST "$BASE/v1/assert" -H "Content-Type: application/jsonx" -d '{}'
expect_error 415 "application/jsonx"
head -c 20000000 /dev/zero | tr '\0' '[' >"$T/huge"
req POST "$BASE/v1/assert" -H "Content-Type: application/json" --data-binary @"$T/huge"
case "$STATUS" in 413 | curl-failed) ok "20 MB body -> $STATUS" ;; *) fail "20 MB body: $STATUS" ;; esac

# a garbage request line and binary junk
printf '\x00\x01\x02GARBAGE\r\n\r\n' >"$T/junk"
raw_http "$API_PORT" "$T/junk" >/dev/null
# headers within the documented limit (docs/api.md, Limits) are served
printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\nConnection: close\r\n\r\n' "$(head -c 12000 /dev/zero | tr '\0' h)" >"$T/okhdr"
line=$(raw_http "$API_PORT" "$T/okhdr")
case "$line" in *" 200 "*) ok "12 kB header -> 200" ;; *) fail "12 kB header: '$line'" ;; esac
printf 'GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n' "$(head -c 100000 /dev/zero | tr '\0' h)" >"$T/bighdr"
line=$(raw_http "$API_PORT" "$T/bighdr")
case "$line" in *" 4"??" "* | "") ok "100 kB header -> '${line:-closed}'" ;; *) fail "100 kB header: $line" ;; esac

server_alive "after hostile input"
# nothing escaped the data directory
[ -z "$(find "$T" -maxdepth 3 -newer "$LOG" -name passwd)" ] || fail "a passwd file appeared"
[ "$(ls "$T/d")" = "data" ] || fail "files created next to the data directory: $(ls "$T/d")"
req GET "$BASE/v1/health"
assert_json '.assertion_count==0' "no hostile assertion was stored"
req GET "$BASE/metrics"
if grep -q 'code="500"' "$T/body"; then fail "some hostile request caused a 500"; fi
ok "no 500 in the request counters"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"
echo "PASS"
