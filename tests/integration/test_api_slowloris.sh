#!/usr/bin/env bash
# test_api_slowloris.sh - idle and half-sent connections cannot starve
# clients: (1) 300 half-open connections while a normal client keeps getting
# answers in well under a second; the idle ones are cut at the configured
# timeout; (2) more connections than the per-IP cap: the extra ones are
# closed at once, and the legitimate client is served again once the
# timeout has cut the idle ones.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v python3 >/dev/null || fail "python3 is required"

TIMEOUT=3
start_server "$T/data" --connection-timeout "$TIMEOUT" \
    --max-connections 1000 --max-connections-per-ip 400

# slow.py PORT N HOLD OUT: open N connections, send half a request, report
# how many the server closed and when (seconds after opening).
cat >"$T/slow.py" <<'PY'
import select, socket, sys, time
port, n, hold, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
socks, t0 = [], time.time()
for i in range(n):
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=2)
        s.sendall(b'GET /v1/health HTTP/1.1\r\nHost: x\r\n')
        s.setblocking(False)
        socks.append(s)
    except OSError:
        pass
opened = time.time()
with open(out + '.opened', 'w') as f:
    f.write('%d\n' % len(socks))
closed, last = {}, 0.0
while time.time() - opened < hold and len(closed) < len(socks):
    live = [s for s in socks if s.fileno() not in closed]
    r, _, _ = select.select(live, [], [], 0.2)
    for s in r:
        try:
            data = s.recv(4096)
        except OSError:
            data = b''
        if not data:
            closed[s.fileno()] = time.time() - opened
            last = max(last, closed[s.fileno()])
with open(out, 'w') as f:
    f.write('%d %d %.2f\n' % (len(socks), len(closed), last))
PY

# phase 1: 300 half-open connections
python3 "$T/slow.py" "$API_PORT" 300 $((TIMEOUT + 5)) "$T/p1" &
SLOW=$!
EXTRA_PIDS="$SLOW"
for i in $(seq 1 100); do [ -f "$T/p1.opened" ] && break; sleep 0.1; done
[ -f "$T/p1.opened" ] || fail "slow client did not open its connections"
opened=$(cat "$T/p1.opened")
[ "$opened" -ge 250 ] || fail "only $opened slow connections opened"
worst=0
for i in $(seq 1 20); do
    t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 2 "$BASE/v1/health") ||
        fail "legitimate request $i failed during the attack"
    code=${t% *}
    [ "$code" = 200 ] || fail "legitimate request $i: HTTP $code"
    worst=$(echo "$worst ${t#* }" | awk '{print ($2 > $1) ? $2 : $1}')
    sleep 0.05
done
awk -v w="$worst" 'BEGIN { exit !(w < 1.0) }' || fail "slowest legitimate request took ${worst}s"
ok "20 legitimate requests answered during $opened idle connections (worst ${worst}s)"
wait "$SLOW"
EXTRA_PIDS=""
read -r n closed last <"$T/p1"
[ "$closed" = "$n" ] || fail "only $closed of $n idle connections were cut within $((TIMEOUT + 5))s"
awk -v l="$last" -v t="$TIMEOUT" 'BEGIN { exit !(l >= t - 1 && l <= t + 3) }' ||
    fail "idle connections were cut after ${last}s, timeout is ${TIMEOUT}s"
ok "all $n idle connections cut after ${last}s (timeout ${TIMEOUT}s)"
server_alive "after phase 1"

# phase 2: beyond the per-IP cap
python3 "$T/slow.py" "$API_PORT" 500 $((TIMEOUT + 5)) "$T/p2" &
SLOW=$!
EXTRA_PIDS="$SLOW"
for i in $(seq 1 100); do [ -f "$T/p2.opened" ] && break; sleep 0.1; done
served=0
for i in $(seq 1 $(((TIMEOUT + 4) * 5))); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/v1/health") || code=000
    if [ "$code" = 200 ]; then
        served=1
        break
    fi
    sleep 0.2
done
[ "$served" = 1 ] || fail "legitimate client not served within the timeout window"
ok "legitimate client served again within the timeout window with the per-IP cap hit"
wait "$SLOW"
EXTRA_PIDS=""
read -r n closed last <"$T/p2"
[ "$closed" = "$n" ] || fail "phase 2: $closed of $n connections closed"
ok "phase 2: every connection over the cap or idle was closed"
grep -q "connection limit\|Server reached" "$LOG" && ok "server logged the limit"
server_alive "after phase 2"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"
echo "PASS"
