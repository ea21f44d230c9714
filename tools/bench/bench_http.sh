#!/usr/bin/env bash
# bench_http.sh - stemedb-api throughput next to PostgreSQL 15 and SQLite, in
# one invocation, on one disk (a benchmark, not a test; docs/benchmarks.md,
# section "HTTP API").  It measures:
#   1. durable single-assertion POST /v1/assert per second at 64 connections
#      (wrk) vs pgbench single-row INSERT transactions at 64 clients on a
#      private PostgreSQL cluster (127.0.0.1, fsync=on, synchronous_commit=on);
#   2. batched POSTs of 1000 assertions per request vs SQLite 1000-row
#      transactions (build/bin/bench_core --no-appends --no-recovery);
#   3. point (exact concept_path) and subtree (prefix/*) POST /v1/query
#      throughput and p99 latency on a store preloaded with 1M assertions.
# Needs: wrk, python3, curl, postgresql-15 (initdb, pg_ctl, pgbench), a build
# with bin/stemedb-api and bin/bench_core.  Run as root (PostgreSQL runs as
# the postgres user) or as a user that can run initdb itself.
# Default run: 3-5 minutes here (cleanup included).  --help lists the flags.
set -u

usage() {
    cat <<'EOF'
usage: tools/bench/bench_http.sh [options]
  --build DIR         build directory with bin/stemedb-api, bin/bench_core (default build)
  --dir DIR           parent of the scratch directory; must not be tmpfs (default DIR of --build)
  --seconds S         measured seconds per throughput run (default 10)
  --warmup S          unmeasured run-in before each run (default 3)
  --conns N           connections/clients for single POSTs and pgbench (default 64)
  --batch N           assertions per batched POST (default 1000)
  --batch-conns LIST  connection counts for batched POSTs (default 1,16)
  --records N         assertions preloaded for the query runs (default 1000000)
  --per-concept N     assertions per concept in the preload (default 100)
  --group N           concepts per subtree in the preload (default 100)
  --query-conns N     connections for the query runs (default 64)
  --query-limit N     "limit" of each query (default 10)
  --wrk-threads N     wrk threads (default 2)
  --api-threads N     stemedb-api HTTP threads (default: the server's own default)
  --sqlite-repeat N   bench_core rounds for SQLite (default 3)
  --client-sched P    scheduling policy of the load generators, wrk and
                      pgbench alike: "other" (default) or "batch" (chrt -b:
                      their wake-ups do not preempt the servers)
  --no-pg, --no-sqlite, --no-writes, --no-query   skip a part
  --keep              keep the scratch directory
EOF
}

REPO=$(cd "$(dirname "$0")/../.." && pwd)
H=$REPO/tools/bench/http
BUILD=build DIR="" SECS=10 WARM=3 CONNS=64 BATCH=1000 BCONNS=1,16
RECORDS=1000000 PER=100 GROUP=100 QCONNS=64 QLIMIT=10 WT=2 SQREP=3 APIT=""
DO_PG=1 DO_SQ=1 DO_W=1 DO_Q=1 KEEP=0 CSCHED=other
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --warmup) WARM=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --batch) BATCH=$2; shift ;;
    --batch-conns) BCONNS=$2; shift ;;
    --records) RECORDS=$2; shift ;;
    --per-concept) PER=$2; shift ;;
    --group) GROUP=$2; shift ;;
    --query-conns) QCONNS=$2; shift ;;
    --query-limit) QLIMIT=$2; shift ;;
    --wrk-threads) WT=$2; shift ;;
    --api-threads) APIT=$2; shift ;;
    --sqlite-repeat) SQREP=$2; shift ;;
    --client-sched) CSCHED=$2; shift ;;
    --no-pg) DO_PG=0 ;;
    --no-sqlite) DO_SQ=0 ;;
    --no-query) DO_Q=0 ;;
    --no-writes) DO_W=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench_http: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

case "$CSCHED" in
other) CLIENT="" ;;
batch) CLIENT="chrt -b 0" ;;
*) echo "bench_http: --client-sched takes other or batch" >&2; exit 2 ;;
esac
B=$(cd "$BUILD" && pwd) || exit 2
[ -n "$DIR" ] || DIR=$B
API=$B/bin/stemedb-api
for t in "$API" "$B/bin/bench_core"; do
    [ -x "$t" ] || { echo "bench_http: $t not built" >&2; exit 2; }
done
for t in wrk python3 curl; do
    command -v "$t" >/dev/null || { echo "bench_http: $t not found (apt-get install $t)" >&2; exit 2; }
done
PGBIN=/usr/lib/postgresql/15/bin
if [ "$DO_PG" = 1 ] && [ ! -x "$PGBIN/initdb" ]; then
    echo "bench_http: $PGBIN/initdb not found (apt-get install postgresql-15)" >&2
    exit 2
fi

T=$(mktemp -d "$DIR/stemedb-http-bench.XXXXXX") || exit 2
chmod 755 "$T"
API_PID="" PG_UP=0
as_pg() { # run a command as the owner of the PostgreSQL cluster
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop_api() {
    if [ -n "$API_PID" ]; then
        kill -TERM "$API_PID" 2>/dev/null
        wait "$API_PID" 2>/dev/null
        API_PID=""
    fi
}
cleanup() {
    stop_api
    if [ "$PG_UP" = 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$T/pg" -m fast -w stop >/dev/null 2>&1
    fi
    if [ "$KEEP" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start_api() { # start_api DATADIR: fresh server on a free loopback port
    PORT=$(free_port)
    "$API" --data-dir="$1" --bind="127.0.0.1:$PORT" --dashboard-bind=off \
        --rate-limit-write-rps=0 --rate-limit-read-rps=0 \
        --max-connections=4096 --max-connections-per-ip=4096 \
        --log-level=warn ${APIT:+--threads="$APIT"} 2>"$1.log" &
    API_PID=$!
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/v1/health" && return 0
        kill -0 "$API_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench_http: stemedb-api did not start:" >&2
    cat "$1.log" >&2
    exit 1
}
health() { curl -s "http://127.0.0.1:$PORT/v1/health"; }
count() { health | python3 -c 'import json,sys; print(json.load(sys.stdin)["assertion_count"])'; }
pause() { sync; sleep 1; }

# CPU time (user + system, clock ticks) the server has used so far.
api_ticks() { awk '{print $14 + $15}' "/proc/$API_PID/stat" 2>/dev/null || echo 0; }

# run_wrk NAME CONNS SCRIPT ARGS...: warm-up, then a measured run; sets
# RPS (requests/s), P99 (ms), ERR (non-2xx responses + socket errors) and
# CPU_US (server CPU time per request, µs).
run_wrk() {
    local name=$1 c=$2 s=$3 out c0 c1
    shift 3
    local t=$WT
    [ "$c" -lt "$t" ] && t=$c
    $CLIENT wrk -t"$t" -c"$c" -d"${WARM}s" -s "$s" "http://127.0.0.1:$PORT" -- "$@" >/dev/null 2>&1
    c0=$(api_ticks)
    out=$($CLIENT wrk -t"$t" -c"$c" -d"${SECS}s" --timeout 10s --latency -s "$s" "http://127.0.0.1:$PORT" -- "$@" 2>&1)
    c1=$(api_ticks)
    echo "$out" >"$T/wrk-$(echo "$name" | tr -c "a-zA-Z0-9\n" _).txt"
    RPS=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    P99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}')
    ERR=$(echo "$out" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
    CPU_US=$(awk -v t="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v r="$RPS" -v s="$SECS" \
        'BEGIN {if (r > 0) printf "%.0f", t / hz * 1e6 / (r * s); else print "-"}')
    printf '  %-34s %10.0f req/s   p99 %8s ms   errors %s   server CPU %s us/req\n' \
        "$name" "$RPS" "$P99" "$ERR" "$CPU_US"
}

# ---- machine ----
FS=$(stat -f -c %T "$T")
echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)"
echo "scratch: $T ($FS, device $(df --output=source "$T" | tail -1))"
[ "$FS" = tmpfs ] && echo "WARNING: tmpfs: fsync costs nothing here, the figures mean nothing"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runs: ${WARM}s warm-up + ${SECS}s measured; wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $WT threads; load generators scheduled as SCHED_$(echo "$CSCHED" | tr a-z A-Z)"
START=$(date +%s)

# ---- 1. PostgreSQL: single-row INSERT transactions ----
PG_TPS=""
if [ "$DO_PG" = 1 ]; then
    echo
    echo "== 1a. PostgreSQL 15, pgbench single-row INSERT, $CONNS clients"
    [ "$(id -u)" = 0 ] && chown postgres "$T"
    PGPORT=$(free_port)
    as_pg "$PGBIN/initdb" -D "$T/pg" -U postgres --auth=trust -E UTF8 >"$T/initdb.log" 2>&1 ||
        { cat "$T/initdb.log" >&2; exit 1; }
    as_pg "$PGBIN/pg_ctl" -D "$T/pg" -l "$T/pg/server.log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$T/pg -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=$((CONNS + 20))" \
        start >/dev/null || { cat "$T/pg/server.log" >&2; exit 1; }
    PG_UP=1
    PSQL="$PGBIN/psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d postgres"
    $PSQL -f "$H/pg_schema.sql" || exit 1
    echo "  settings: $($PSQL -At -c "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN ('fsync','synchronous_commit','wal_sync_method','full_page_writes','shared_buffers')")"
    PGB="$CLIENT $PGBIN/pgbench -n -h 127.0.0.1 -p $PGPORT -U postgres -M prepared -c $CONNS -j $WT -f $H/pg_insert.sql postgres"
    $PGB -T "$WARM" >/dev/null 2>&1
    out=$($PGB -T "$SECS" 2>&1)
    echo "$out" >"$T/pgbench.txt"
    PG_TPS=$(echo "$out" | awk '/^tps = / {printf "%.0f", $3; exit}')
    PG_LAT=$(echo "$out" | awk '/latency average/ {print $4}')
    if echo "$out" | grep -q 'aborted\|error'; then
        echo "bench_http: pgbench reported errors:" >&2
        echo "$out" | grep 'aborted\|error' | head -3 >&2
        PG_TPS=""
    fi
    echo "  pgbench: $PG_TPS tx/s, mean latency $PG_LAT ms, rows now $($PSQL -At -c 'SELECT count(*) FROM assertions')"
    as_pg "$PGBIN/pg_ctl" -D "$T/pg" -m fast -w stop >/dev/null 2>&1
    PG_UP=0
    rm -rf "$T/pg"
    pause
fi

# ---- 1b + 2. stemedb-api writes on a fresh store (64 concepts) ----
S_RPS="" S_P99="-" S_ERR="-"
declare -A B_APS B_P99 B_ERR
if [ "$DO_W" = 1 ]; then
    echo
    echo "== 1b/2. stemedb-api writes (fresh store, concepts bench/c0000..c0063)"
    start_api "$T/w"
    run_wrk "single POST, $CONNS conns" "$CONNS" "$H/single.lua"
    S_RPS=$RPS S_P99=$P99 S_ERR=$ERR
    pause
    for c in ${BCONNS//,/ }; do
        run_wrk "batch $BATCH/POST, $c conns" "$c" "$H/batch.lua" "$BATCH"
        B_APS[$c]=$(awk -v r="$RPS" -v n="$BATCH" 'BEGIN {printf "%.0f", r * n}')
        B_P99[$c]=$P99 B_ERR[$c]=$ERR
        echo "    = ${B_APS[$c]} assertions/s"
        pause
    done
    echo "  store after the write runs: $(health)"
    stop_api
    rm -rf "$T/w"
    pause
fi

# ---- 2. SQLite 1000-row transactions (bench_core) ----
SQ_RPS=""
if [ "$DO_SQ" = 1 ]; then
    echo
    echo "== 2b. SQLite 1000-row transactions (bench_core --no-appends --no-recovery)"
    out=$(cd "$T" && "$B/bin/bench_core" --no-appends --no-recovery --dir "$T" \
        --seconds "$((SECS < 5 ? SECS : 5))" --warmup 1 --repeat "$SQREP" 2>&1)
    echo "$out" >"$T/bench_core.txt"
    echo "$out" | grep -E '^  SQLite rows/s' | sed 's/^/  /'
    SQ_RPS=$(echo "$out" | awk '/^  SQLite rows\/s, 1 thread, +1000 rows\/txn/ {print $(NF-3)}')
    pause
fi

# ---- 3. queries on a preloaded store ----
if [ "$DO_Q" = 1 ]; then
    echo
    NCON=$(((RECORDS + PER - 1) / PER))
    NG=$(((NCON + GROUP - 1) / GROUP))
    echo "== 3. queries: preloading $RECORDS assertions ($NCON concepts load/gNNNNNN/cNNNN, $PER each, $NG subtrees of $GROUP concepts)"
    start_api "$T/q"
    lo=$(python3 "$H/load.py" "$PORT" "$RECORDS" "$BATCH" "$PER" "$GROUP" 4) || exit 1
    LOAD_S=$(echo "$lo" | awk '{print $2}')
    LOAD_RATE=$(awk -v n="$RECORDS" -v s="$LOAD_S" 'BEGIN {printf "%.0f", n / s}')
    echo "  loaded in ${LOAD_S}s ($LOAD_RATE assertions/s, 4 connections); store: $(health)"
    [ "$(count)" = "$RECORDS" ] || { echo "bench_http: preload count mismatch" >&2; exit 1; }
    RSS=$(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$API_PID/status")
    echo "  server RSS: $RSS"
    # Restart on the loaded store: the clean shutdown checkpoints the
    # preload (syncfs of its segment files, the index snapshot), which
    # would otherwise land inside a measured run 30 s after the start.
    stop_api
    pause
    start_api "$T/q"
    [ "$(count)" = "$RECORDS" ] || { echo "bench_http: count mismatch after restart" >&2; exit 1; }
    echo "  restarted on the loaded store: $(health)"
    run_wrk "point query, $QCONNS conns" "$QCONNS" "$H/query.lua" point "$NCON" "$GROUP" "$QLIMIT"
    Q_RPS=$RPS Q_P99=$P99 Q_ERR=$ERR Q_CPU=$CPU_US
    run_wrk "subtree query, $QCONNS conns" "$QCONNS" "$H/query.lua" subtree "$NCON" "$GROUP" "$QLIMIT"
    T_RPS=$RPS T_P99=$P99 T_ERR=$ERR T_CPU=$CPU_US
    curl -s -X POST -H 'Content-Type: application/json' \
        -d "{\"concept_path\":\"load/g000000/*\",\"limit\":$QLIMIT}" \
        "http://127.0.0.1:$PORT/v1/query" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  sample subtree answer: %d assertions, next_cursor %s" % (d["count"], "set" if d.get("next_cursor") else "null"))'
    stop_api
fi

# ---- summary ----
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b}'; }
echo
echo "summary ($(($(date +%s) - START)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  %-66s %14s %14s %8s %s\n' measure stemedb-api other ratio target
[ "$DO_W" = 1 ] && printf '  %-66s %14.0f %14s %8s %s\n' "single POST/s, $CONNS conns vs pgbench INSERT tx/s" "$S_RPS" "${PG_TPS:-skipped}" "$(ratio "$S_RPS" "$PG_TPS")" ">= 3x"
[ "$DO_W" = 1 ] && for c in ${BCONNS//,/ }; do
    printf '  %-66s %14s %14s %8s %s\n' "batched assertions/s ($BATCH/POST, $c conns; p99 ${B_P99[$c]} ms) vs SQLite" "${B_APS[$c]}" "${SQ_RPS:-skipped}" "$(ratio "${B_APS[$c]}" "$SQ_RPS")" ">= 5x"
done
if [ "$DO_Q" = 1 ]; then
    printf '  %-66s %14.0f %14s %8s %s\n' "point queries/s at $RECORDS (p99 $Q_P99 ms, $Q_CPU us CPU/query)" "$Q_RPS" "" "" ">= 100k/s, p99 <= 5 ms"
    printf '  %-66s %14.0f %14s %8s\n' "subtree queries/s at $RECORDS (p99 $T_P99 ms, $T_CPU us CPU/query)" "$T_RPS" "" ""
fi
printf '  single POST p99 %s ms; errors: single %s' "$S_P99" "$S_ERR"
[ "$DO_W" = 1 ] && for c in ${BCONNS//,/ }; do printf ', batch/%s %s' "$c" "${B_ERR[$c]}"; done
[ "$DO_Q" = 1 ] && printf ', point %s, subtree %s' "$Q_ERR" "$T_ERR"
echo
