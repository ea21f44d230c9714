#!/usr/bin/env bash
# test_api_startup.sh - startup and shutdown contract of stemedb-api: --help
# and --version, configuration errors (exit 2), and one actionable line with
# exit 1 for: port in use (naming the holder PID), data directory locked,
# permission denied (naming the path), WAL corruption (file named, pointing
# to stemedb-fsck), disk full (ENOSPC injected with strace); SIGINT and
# SIGTERM stop cleanly with exit 0.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"

# ---- usage ----
"$API_BIN" --help >"$T/help" || fail "--help exit status"
for f in --bind --dashboard-bind --data-dir --wal-dir --db-dir --wal-archive-dir \
    --wal-segment-timeout --tls-enabled --tls-cert --tls-key --meter-enabled \
    --token-file --rate-limit-write-rps --rate-limit-read-rps \
    --max-connections --max-connections-per-ip --connection-timeout \
    STEMEDB_BIND_ADDR STEMEDB_DASHBOARD_ADDR STEMEDB_DATA_DIR STEMEDB_WAL_DIR \
    STEMEDB_DB_DIR STEMEDB_WAL_ARCHIVE_DIR STEMEDB_WAL_SEGMENT_TIMEOUT \
    STEMEDB_TLS_ENABLED STEMEDB_TLS_CERT STEMEDB_TLS_KEY STEMEDB_METER_ENABLED \
    STEMEDB_API_TOKEN_FILE SYNOPSIS "EXIT STATUS"; do
    grep -q -- "$f" "$T/help" || fail "--help does not mention $f"
done
ok "--help documents every flag and variable"
"$API_BIN" --version | grep -q '^stemedb-api [0-9]' || fail "--version"
ok "--version"
if [ -f "${SDB_SRC}/.env.example" ]; then
    for v in $(grep -o 'STEMEDB_[A-Z_]*' "$T/help" | sort -u); do
        grep -q "^#* *$v=" "$SDB_SRC/.env.example" || fail ".env.example lacks $v"
    done
    ok ".env.example lists every variable"
fi

usage_error() {
    local what=$1 rc=0
    shift
    env "$@" >/dev/null 2>"$T/usage.err" || rc=$?
    [ "$rc" = 2 ] || fail "$what: exit $rc (want 2)"
    [ -s "$T/usage.err" ] || fail "$what: no message"
    ok "$what -> exit 2: $(head -n1 "$T/usage.err")"
}
usage_error "bad flag value" "$API_BIN" --connection-timeout=abc
usage_error "bad boolean variable" STEMEDB_METER_ENABLED=maybe "$API_BIN"
usage_error "negative rate" "$API_BIN" --rate-limit-write-rps=-5
usage_error "unknown flag" "$API_BIN" --no-such-flag
usage_error "stray argument" "$API_BIN" extra

# refuse WHAT PATTERN CMD...: exit 1, exactly one error line matching PATTERN.
refuse() {
    local what=$1 pattern=$2 rc=0
    shift 2
    timeout 30 "$@" 2>"$T/refuse.err" >/dev/null || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit $rc (want 1): $(tail -5 "$T/refuse.err")"
    [ "$(grep -c 'stemedb-api: error:' "$T/refuse.err")" = 1 ] ||
        fail "$what: want one error line: $(cat "$T/refuse.err")"
    grep 'stemedb-api: error:' "$T/refuse.err" | grep -qi -- "$pattern" ||
        fail "$what: error line does not match '$pattern': $(grep error: "$T/refuse.err")"
    ok "$what: $(grep 'stemedb-api: error:' "$T/refuse.err" | cut -c1-200)"
}

# ---- port in use, lock ----
start_server "$T/a"
HOLDER=$SERVER_PID
refuse "port in use" "already in use by PID $HOLDER" \
    "$API_BIN" --data-dir "$T/b" --bind "127.0.0.1:$API_PORT" --dashboard-bind off
refuse "dashboard port in use" "already in use" \
    "$API_BIN" --data-dir "$T/b2" --bind 127.0.0.1:0 --dashboard-bind "127.0.0.1:$DASH_PORT"
refuse "data directory locked" "lock" \
    "$API_BIN" --data-dir "$T/a" --bind 127.0.0.1:0 --dashboard-bind off
refuse "bad listen address" "invalid listen address" \
    "$API_BIN" --data-dir "$T/b3" --bind nonsense --dashboard-bind off
for i in 1 2 3; do
    post_json /v1/assert '{"concept_path":"s/a","predicate":"p","value":'"$i"'}'
    expect 201 "write $i"
done
kill -INT "$SERVER_PID"
for i in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
wait "$SERVER_PID"
rc=$?
SERVER_PID=""
[ "$rc" = 0 ] || fail "SIGINT exit status $rc"
ok "SIGINT -> exit 0"

# ---- permission denied ----
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    mkdir -p "$T/locked"
    chmod 700 "$T/locked"
    chmod 755 "$T"
    if setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$API_BIN"; then
        refuse "permission denied (existing dir)" "permission denied.*$T/locked" \
            setpriv --reuid=65534 --regid=65534 --clear-groups \
            "$API_BIN" --data-dir "$T/locked" --bind 127.0.0.1:0 --dashboard-bind off
        refuse "permission denied (cannot create)" "permission denied.*$T/locked" \
            setpriv --reuid=65534 --regid=65534 --clear-groups \
            "$API_BIN" --data-dir "$T/locked/sub/data" --bind 127.0.0.1:0 --dashboard-bind off
    else
        echo "SKIP: the binary is not executable by uid 65534; permission case not run"
    fi
else
    mkdir -p "$T/locked"
    chmod 000 "$T/locked"
    refuse "permission denied" "permission denied.*$T/locked" \
        "$API_BIN" --data-dir "$T/locked" --bind 127.0.0.1:0 --dashboard-bind off
    chmod 700 "$T/locked"
fi

# ---- disk full ----
if command -v strace >/dev/null; then
    # LeakSanitizer cannot run under ptrace: leak checks off for this one
    refuse "disk full" "disk full" \
        env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        strace -f -qq -o /dev/null -e trace=pwrite64,fallocate \
        -e inject=pwrite64,fallocate:error=ENOSPC \
        "$API_BIN" --data-dir "$T/full" --bind 127.0.0.1:0 --dashboard-bind off
else
    echo "SKIP: strace not installed; disk-full case not run"
fi

# ---- WAL corruption (records past the checkpoint: written, then kill -9) ----
start_server "$T/c"
for i in 1 2 3 4; do
    post_json /v1/assert '{"concept_path":"s/a","predicate":"p","value":'"$i"'}'
    expect 201 "pre-crash write $i"
done
kill9_server
cp -a "$T/c" "$T/corrupt-magic"
seg=$(ls "$T/corrupt-magic/wal" | sort | head -n1)
[ -n "$seg" ] || fail "no WAL segment in $T/c/wal"
printf 'XXXXXXXX' | dd of="$T/corrupt-magic/wal/$seg" bs=1 seek=0 conv=notrunc 2>/dev/null
refuse "WAL bad magic" "$seg.*stemedb-fsck" \
    "$API_BIN" --data-dir "$T/corrupt-magic" --bind 127.0.0.1:0 --dashboard-bind off
# a flipped byte in the first record, with valid records after it
cp -a "$T/c" "$T/corrupt-sum"
size=$(stat -c %s "$T/corrupt-sum/wal/$seg")
[ "$size" -gt 200 ] || fail "WAL segment too small to corrupt mid-file"
off=$(grep -obUaP 's/a' "$T/corrupt-sum/wal/$seg" 2>/dev/null | head -n1 | cut -d: -f1)
[ -n "$off" ] || off=100
printf 'Z' | dd of="$T/corrupt-sum/wal/$seg" bs=1 seek="$off" conv=notrunc 2>/dev/null
refuse "WAL checksum mismatch" "$seg.*stemedb-fsck" \
    "$API_BIN" --data-dir "$T/corrupt-sum" --bind 127.0.0.1:0 --dashboard-bind off
grep 'stemedb-api: error:' "$T/refuse.err" | grep -q '[0-9]' || fail "no offset in the corruption message"

# the intact copy still starts and has the three writes
start_server "$T/a"
req GET "$BASE/v1/health"
assert_json '.assertion_count==3' "intact data directory still starts"
stop_server
[ "$STOP_RC" = 0 ] || fail "SIGTERM exit $STOP_RC"
echo "PASS"
