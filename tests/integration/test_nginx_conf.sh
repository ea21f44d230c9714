#!/usr/bin/env bash
# test_nginx_conf.sh - deploy/nginx/stemedb.conf passes `nginx -t` inside a
# minimal main configuration (temporary prefix, pid and logs; the TLS paths
# point at a throw-away self-signed certificate), a broken copy fails, and
# a live nginx on 127.0.0.1 routes writes to the primary, reads to the
# replicas, and keeps serving reads when a replica is down (passive health
# check).  Skips visibly without nginx.
set -u
: "${SDB_SRC:?}"
: "${SDB_TEST_TMPDIR:=/tmp}"
fail() { echo "FAIL: $*"; exit 1; }
NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
[ -n "$NGINX" ] || { echo "SKIP: nginx not installed (apt-get install nginx-light)"; exit 0; }
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 0; }
mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/nginx.XXXXXX")
PIDS=""
cleanup() {
    local rc=$?
    [ -f "$T/nginx.pid" ] && kill -TERM "$(cat "$T/nginx.pid")" 2>/dev/null
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    sleep 0.2
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=stemedb.test \
    -keyout "$T/privkey.pem" -out "$T/fullchain.pem" >/dev/null 2>&1 || fail "openssl"
mkdir -p "$T/logs" "$T/tmp"

# main config around the http-context file
main_conf() { # SITE_FILE OUT
    cat >"$2" <<EOF
worker_processes 1;
pid $T/nginx.pid;
error_log $T/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $T/tmp/body;
    proxy_temp_path $T/tmp/proxy;
    fastcgi_temp_path $T/tmp/fastcgi;
    uwsgi_temp_path $T/tmp/uwsgi;
    scgi_temp_path $T/tmp/scgi;
    include $1;
}
EOF
}
site() { # SRC OUT [extra sed]
    sed -e "s|/etc/ssl/stemedb/|$T/|g" -e "s|/var/www/letsencrypt|$T/www|g" "$@"
}

site "$SDB_SRC/deploy/nginx/stemedb.conf" >"$T/site.conf"
main_conf "$T/site.conf" "$T/nginx.conf"
"$NGINX" -t -q -p "$T" -c "$T/nginx.conf" -g "user $(id -un);" 2>"$T/t.err" ||
    { cat "$T/t.err"; fail "nginx -t rejected deploy/nginx/stemedb.conf"; }
echo "ok - nginx -t accepts the example"

sed 's/least_conn;/least_conn/' "$T/site.conf" >"$T/broken.conf"
main_conf "$T/broken.conf" "$T/nginx-broken.conf"
"$NGINX" -t -q -p "$T" -c "$T/nginx-broken.conf" -g "user $(id -un);" >/dev/null 2>&1 &&
    fail "nginx -t accepted a broken copy"
echo "ok - nginx -t rejects a broken copy"

# live routing with stand-in backends that name themselves
command -v python3 >/dev/null && command -v curl >/dev/null || { echo "SKIP: live routing needs python3 and curl"; echo PASS; exit 0; }
cat >"$T/backend.py" <<'EOF'
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def reply(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = reply
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF
declare -A PORT
for b in primary r1 r2; do
    python3 "$T/backend.py" "$b" >"$T/$b.port" &
    PIDS="$PIDS $!"
done
for b in primary r1 r2; do
    for i in $(seq 1 50); do [ -s "$T/$b.port" ] && break; sleep 0.1; done
    PORT[$b]=$(cat "$T/$b.port")
done
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
P80=$(freeport) P443=$(freeport)
site "$SDB_SRC/deploy/nginx/stemedb.conf" \
    -e "s|10.0.0.10:18180|127.0.0.1:${PORT[primary]}|g" \
    -e "s|10.0.0.11:18180|127.0.0.1:${PORT[r1]}|g" \
    -e "s|10.0.0.12:18180|127.0.0.1:${PORT[r2]}|g" \
    -e "s|listen 80;|listen 127.0.0.1:$P80;|; s|listen \[::\]:80;||; s|listen \[::\]:443 ssl http2;||" \
    -e "s|listen 443 ssl http2;|listen 127.0.0.1:$P443 ssl http2;|" >"$T/live.conf"
main_conf "$T/live.conf" "$T/live-nginx.conf"
"$NGINX" -p "$T" -c "$T/live-nginx.conf" -g "user $(id -un);" 2>"$T/start.err" ||
    { echo "SKIP: cannot start nginx here: $(head -n1 "$T/start.err")"; echo PASS; exit 0; }
U=https://127.0.0.1:$P443
for i in $(seq 1 50); do curl -sk -o /dev/null "$U/healthz" && break; sleep 0.1; done
[ "$(curl -sk "$U/healthz")" = ok ] || fail "/healthz"
w=$(curl -sk -X POST -d '{}' "$U/v1/assert")
[ "$w" = primary ] || fail "a write went to '$w', not the primary"
q=$(curl -sk -X POST -d '{}' "$U/v1/query")
case "$q" in r1|r2) ;; *) fail "POST /v1/query went to '$q', not a replica" ;; esac
g=$(curl -sk "$U/v1/assertions/0000000000000001aaaaaaaa")
case "$g" in r1|r2) ;; *) fail "a GET went to '$g', not a replica" ;; esac
# replica r1 dies: reads keep working through r2
kill -TERM "$(echo $PIDS | awk '{print $2}')"
sleep 0.3
for i in $(seq 1 6); do
    g=$(curl -sk "$U/v1/concepts")
    [ "$g" = r2 ] || fail "read $i after r1 died went to '$g'"
done
echo "ok - live routing: writes -> primary, reads -> replicas, failover on a dead replica"
echo PASS
