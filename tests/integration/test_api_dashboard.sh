#!/usr/bin/env bash
# test_api_dashboard.sh - the dashboard on STEMEDB_DASHBOARD_ADDR, loaded in
# headless Chromium: after the page's fetches resolve it shows the same
# assertion count as /v1/health, recent assertions, and counts no script
# error or CSP violation.  Skipped visibly when chromium is absent.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"

start_server "$T/data"
[ -n "$DASH_PORT" ] || fail "no dashboard port in the log"
for i in 1 2 3 4 5; do
    post_json /v1/assert '{"concept_path":"dash/c'"$i"'","predicate":"shown","value":"v'"$i"'"}'
    expect 201 "assert $i"
done

# static files and headers without a browser
req GET "$DASH/"
expect 200 "GET / on the dashboard"
header Content-Type | grep -q text/html || fail "index content type"
header Content-Security-Policy | grep -q "default-src 'self'" || fail "CSP header"
grep -q '<script src="/app.js"' "$T/body" || fail "index does not load app.js"
if grep -qi '<script>' "$T/body" || grep -q 'style=' "$T/body"; then fail "inline script/style"; fi
req GET "$DASH/app.js"
expect 200 "GET /app.js"
if grep -q innerHTML "$T/body"; then fail "app.js uses innerHTML"; fi
req GET "$DASH/v1/health"
expect 200 "dashboard answers /v1/health"
COUNT=$(jq .assertion_count "$T/body")
req GET "$DASH/v1/recent?limit=3"
expect 200 "dashboard /v1/recent"
assert_json '(.assertions|length)==3' "recent returns 3"
req GET "$DASH/v1/recent?limit=0"
expect_error 400 "recent limit 0"
req GET "$DASH/v1/stats"
expect 200 "dashboard /v1/stats"
req POST "$DASH/v1/assert" -H "Content-Type: application/json" -d '{}'
expect_error 404 "no writes on the dashboard listener"
req GET "$BASE/"
expect_error 404 "no dashboard on the API listener"

CHROME=""
for c in chromium chromium-browser google-chrome; do
    command -v "$c" >/dev/null && CHROME=$c && break
done
[ -n "$CHROME" ] || skip_all "chromium not installed; browser check not run (static checks passed)"
profile=$(mktemp -d "$T/chrome.XXXXXX")
timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu \
    --disable-background-networking --disable-component-update --disable-sync \
    --no-first-run --user-data-dir="$profile" --enable-logging=stderr --v=0 \
    --virtual-time-budget=5000 --dump-dom "$DASH/" >"$T/dom.html" 2>"$T/chrome.err" ||
    fail "chromium failed: $(tail -5 "$T/chrome.err")"
shown=$(sed -n 's/.*<p id="count" data-state="ok">\([0-9]*\)<\/p>.*/\1/p' "$T/dom.html")
[ -n "$shown" ] || fail "count not rendered: $(grep -o '<p id="count"[^<]*' "$T/dom.html")"
[ "$shown" = "$COUNT" ] || fail "dashboard shows $shown, /v1/health says $COUNT"
ok "dashboard shows assertion count $shown = /v1/health"
grep -q 'data-errors="0"' "$T/dom.html" || fail "page counted script errors: $(grep -o 'data-errors="[0-9]*"' "$T/dom.html")"
grep -q '<td>dash/c5</td>' "$T/dom.html" || fail "recent assertions not listed"
grep -q 'id="status" data-state="healthy"' "$T/dom.html" || fail "status not healthy"
grep -q 'id="fsync-count">[0-9]' "$T/dom.html" || fail "fsync figures not shown"
ok "recent assertions, status and WAL figures rendered"
if grep -E 'CONSOLE.*(Uncaught|Refused|error|Error)' "$T/chrome.err"; then
    fail "console errors in chromium"
fi
ok "no console errors"
stop_server
echo "PASS"
