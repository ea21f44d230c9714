# shellcheck shell=bash disable=SC2034
# api_test_lib.sh - shared helpers for tests/integration/test_api_*.sh.
#
# Sourced, not run.  Needs SDB_BIN (directory holding stemedb-api) and
# SDB_TEST_TMPDIR from ctest.  Every server is started on 127.0.0.1 with
# port 0 and the real port is read from its "Startup complete" log line, so
# tests never race for ports.  Only PIDs started here are ever signalled,
# and the EXIT trap stops them and removes the temporary directory (kept
# after a failure when SDB_API_KEEP_FAILED=1).

set -u

: "${SDB_BIN:?SDB_BIN must point at the bin directory of the build}"
: "${SDB_TEST_TMPDIR:=/tmp}"
API_BIN="$SDB_BIN/stemedb-api"

mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/api-test.XXXXXX")
SERVER_PID=""
API_PORT=""
DASH_PORT=""
BASE=""
DASH=""
LOG=""
EXTRA_PIDS=""

cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    for p in $EXTRA_PIDS; do
        if kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    if [ "$rc" -ne 0 ] && [ -n "$LOG" ] && [ -f "$LOG" ]; then
        echo "---- last server log ($LOG) ----"
        tail -n 40 "$LOG"
    fi
    if [ "$rc" -ne 0 ] && [ "${SDB_API_KEEP_FAILED:-0}" = 1 ]; then
        echo "kept the failed test's files in $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

ok() {
    echo "ok - $*"
}

skip_all() {
    echo "SKIP: $*"
    exit 0
}

[ -x "$API_BIN" ] || fail "no stemedb-api binary at $API_BIN"
command -v curl >/dev/null || fail "curl is required"

# start_server DATA_DIR [extra flags...]: start and wait for readiness.
# Sets SERVER_PID, API_PORT, DASH_PORT, BASE, DASH, LOG.
start_server() {
    local data=$1
    shift
    LOG="$T/server.$RANDOM.log"
    "$API_BIN" --data-dir "$data" --bind 127.0.0.1:0 \
        --dashboard-bind 127.0.0.1:0 "$@" 2>"$LOG" &
    SERVER_PID=$!
    local i
    for i in $(seq 1 200); do
        if grep -q "Startup complete, listening on" "$LOG" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$LOG"
            fail "server exited during startup"
        fi
        sleep 0.05
    done
    grep -q "Startup complete, listening on" "$LOG" ||
        fail "server did not become ready in 10 s"
    API_PORT=$(sed -n 's/.*Startup complete, listening on [0-9.]*:\([0-9]*\).*/\1/p' "$LOG" | tail -n1)
    DASH_PORT=$(sed -n 's/.*dashboard on [0-9.]*:\([0-9]*\).*/\1/p' "$LOG" | tail -n1)
    BASE="http://127.0.0.1:$API_PORT"
    DASH="http://127.0.0.1:$DASH_PORT"
    [ -n "$API_PORT" ] || fail "could not read the API port from the log"
}

# stop_server: SIGTERM, wait up to 15 s, return the exit status in STOP_RC.
stop_server() {
    STOP_RC=0
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    local i
    for i in $(seq 1 150); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
        SERVER_PID=""
        fail "server did not stop within 15 s of SIGTERM"
    fi
    wait "$SERVER_PID"
    STOP_RC=$?
    SERVER_PID=""
}

# kill9_server: SIGKILL and reap.
kill9_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}

# req METHOD URL [curl args...]: body in $T/body, headers in $T/headers,
# status in $STATUS.
req() {
    local method=$1 url=$2
    shift 2
    STATUS=$(curl -sS -o "$T/body" -D "$T/headers" -w '%{http_code}' \
        --max-time 20 -X "$method" "$url" "$@") || STATUS="curl-failed"
}

# post_json PATH JSON [curl args...]
post_json() {
    local path=$1 json=$2
    shift 2
    req POST "$BASE$path" -H "Content-Type: application/json" \
        --data-binary "$json" "$@"
}

# expect CODE WHAT: compare $STATUS.
expect() {
    [ "$STATUS" = "$1" ] ||
        fail "$2: expected HTTP $1, got $STATUS: $(head -c 400 "$T/body" 2>/dev/null)"
    ok "$2 -> $1"
}

# expect_error CODE WHAT: status plus the {"error":{code,message,field}} shape.
expect_error() {
    expect "$1" "$2"
    jq -e '.error | (.code|type=="string") and (.message|type=="string")
           and (.field|type=="string")' "$T/body" >/dev/null ||
        fail "$2: error body is not {error:{code,message,field}}: $(cat "$T/body")"
}

# header NAME: value of a response header from the last req (trimmed).
header() {
    grep -i "^$1:" "$T/headers" | head -n1 | cut -d: -f2- | tr -d '\r' |
        sed 's/^ *//'
}

# server_alive WHAT: the process runs and /v1/health answers 200.
server_alive() {
    kill -0 "$SERVER_PID" 2>/dev/null || fail "$1: server died"
    local s
    s=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$BASE/v1/health")
    [ "$s" = 200 ] || fail "$1: /v1/health answered $s"
}

# raw_http PORT FILE: send FILE's bytes verbatim, print the status line.
raw_http() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, 'rb').read()
s = socket.create_connection(('127.0.0.1', port), timeout=10)
s.sendall(data)
buf = b''
try:
    while b'\r\n' not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
except socket.timeout:
    pass
s.close()
print(buf.split(b'\r\n', 1)[0].decode('latin-1'))
PY
}

assert_json() {
    # assert_json JQ_FILTER WHAT: jq -e on the last body
    jq -e "$1" "$T/body" >/dev/null ||
        fail "$2: '$1' does not hold for $(head -c 600 "$T/body")"
    ok "$2"
}
