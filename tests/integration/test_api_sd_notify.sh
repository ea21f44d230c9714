#!/usr/bin/env bash
# test_api_sd_notify.sh - systemd integration without systemd: a datagram
# socket stands in for NOTIFY_SOCKET and must receive READY=1 after startup,
# WATCHDOG=1 at half of WATCHDOG_USEC from the main loop, and STOPPING=1 on
# SIGTERM (followed by exit status 0).
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v python3 >/dev/null || fail "python3 is required"

SOCK="$T/notify.sock"
cat >"$T/listen.py" <<'PY'
import os, socket, sys, time
path, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(0.2)
open(out + '.ready', 'w').close()
end = time.time() + secs
with open(out, 'w') as f:
    while time.time() < end:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            continue
        f.write('%.2f %s\n' % (time.time(), msg.replace('\n', ' ')))
        f.flush()
        if 'STOPPING=1' in msg:
            break
PY
python3 "$T/listen.py" "$SOCK" "$T/notify.log" 30 &
LISTENER=$!
EXTRA_PIDS="$LISTENER"
for i in $(seq 1 50); do [ -f "$T/notify.log.ready" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || fail "listener socket not created"

NOTIFY_SOCKET="$SOCK" WATCHDOG_USEC=1000000 start_server "$T/data"
grep -q "READY=1" "$T/notify.log" || { sleep 1; grep -q "READY=1" "$T/notify.log"; } ||
    fail "no READY=1: $(cat "$T/notify.log")"
ok "READY=1 sent after startup"
sleep 2.2
n=$(grep -c "WATCHDOG=1" "$T/notify.log")
[ "$n" -ge 3 ] || fail "expected >= 3 WATCHDOG=1 in 2.2 s at WATCHDOG_USEC=1s, got $n"
ok "WATCHDOG=1 sent every half interval ($n in 2.2 s)"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"
wait "$LISTENER"
EXTRA_PIDS=""
grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1: $(cat "$T/notify.log")"
ok "STOPPING=1 sent on SIGTERM"
echo "PASS"
