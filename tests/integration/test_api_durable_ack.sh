#!/usr/bin/env bash
# test_api_durable_ack.sh - a 201 means durable: 16 concurrent writers POST
# assertions while the server is killed with SIGKILL at a random moment;
# after each restart every acknowledged id must be returned by
# GET /v1/assertions/{id} with the value that was sent, the per-writer
# queries must contain no duplicates, and stemedb-fsck -n (when built)
# must pass.  Cycles: SDB_API_DURABLE_CYCLES (default 5).
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v jq >/dev/null || fail "jq is required"

CYCLES=${SDB_API_DURABLE_CYCLES:-5}
WRITERS=16
DATA="$T/data"
SEED=${SDB_TEST_SEED:-$RANDOM}
RANDOM=$SEED
echo "seed $SEED, $CYCLES cycles, $WRITERS writers"

# writer CYCLE W: POST until the server goes away; log "id value" per 201.
writer() {
    local c=$1 w=$2 i=0 out code body
    while [ $i -lt 100000 ]; do
        i=$((i + 1))
        out=$(curl -s -w '\n%{http_code}' --max-time 10 -X POST \
            -H "Content-Type: application/json" \
            --data-binary '{"concept_path":"durable/w'"$w"'","predicate":"seq","value":'"$((c * 100000 + i))"'}' \
            "$BASE/v1/assert") || break
        code=${out##*$'\n'}
        body=${out%$'\n'*}
        if [ "$code" = 201 ]; then
            [[ $body =~ \"id\":\"([^\"]+)\" ]] || { echo "bad 201 body: $body" >&2; break; }
            echo "${BASH_REMATCH[1]} $((c * 100000 + i))" >>"$T/acked.$w"
        else
            break
        fi
    done
}

verify() {
    local all="$T/all_acked" cfg="$T/curl.cfg" bad
    cat "$T"/acked.* 2>/dev/null >"$all" || true
    local n
    n=$(wc -l <"$all")
    [ "$n" -gt 0 ] || fail "no write was acknowledged"
    : >"$cfg"
    while read -r id val; do
        printf 'url = "%s/v1/assertions/%s"\noutput = "/dev/null"\n' "$BASE" "$id" >>"$cfg"
    done <"$all"
    curl -s --max-time 120 -w '%{http_code}\n' -K "$cfg" >"$T/codes" || true
    bad=$(grep -vc '^200$' "$T/codes" || true)
    [ "$(wc -l <"$T/codes")" = "$n" ] || fail "checked $(wc -l <"$T/codes") of $n ids"
    [ "$bad" = 0 ] || fail "$bad of $n acknowledged assertions missing after kill -9"
    # values and duplicates, per writer
    local w
    for w in $(seq 1 $WRITERS); do
        [ -f "$T/acked.$w" ] || continue
        curl -s --max-time 30 -X POST -H "Content-Type: application/json" \
            -d '{"concept_path":"durable/w'"$w"'","limit":10000}' \
            "$BASE/v1/query" | jq -r '.assertions[] | "\(.id) \(.value)"' | sort >"$T/got.$w"
        sort "$T/acked.$w" >"$T/want.$w"
        [ -z "$(comm -23 "$T/want.$w" "$T/got.$w")" ] ||
            fail "writer $w: acknowledged (id value) pairs missing or changed: $(comm -23 "$T/want.$w" "$T/got.$w" | head -3)"
        [ -z "$(cut -d' ' -f1 "$T/got.$w" | uniq -d)" ] || fail "writer $w: duplicate ids"
    done
    ok "all $n acknowledged assertions present with their values"
}

start_server "$DATA" --rate-limit-write-rps=0 --rate-limit-read-rps=0
for c in $(seq 1 "$CYCLES"); do
    pids=""
    for w in $(seq 1 $WRITERS); do
        writer "$c" "$w" &
        pids="$pids $!"
    done
    EXTRA_PIDS="$pids"
    sleep "$((RANDOM % 2)).$((RANDOM % 10))"
    sleep 0.3
    kill9_server
    for p in $pids; do
        # writers end on their own once the server is gone (bounded by curl)
        wait "$p" 2>/dev/null
    done
    EXTRA_PIDS=""
    start_server "$DATA" --rate-limit-write-rps=0 --rate-limit-read-rps=0
    grep -q "Replayed [0-9]* entries from WAL" "$LOG" || fail "cycle $c: no replay log line"
    verify
    if [ -x "$SDB_BIN/stemedb-fsck" ]; then
        stop_server
        "$SDB_BIN/stemedb-fsck" -n "$DATA" >"$T/fsck.out" 2>&1 ||
            fail "cycle $c: stemedb-fsck -n failed: $(tail -5 "$T/fsck.out")"
        ok "cycle $c: stemedb-fsck -n clean"
        start_server "$DATA" --rate-limit-write-rps=0 --rate-limit-read-rps=0
    fi
    ok "cycle $c done"
done
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"
echo "PASS"
