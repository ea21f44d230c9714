#!/usr/bin/env bash
# test_api_tls.sh - HTTPS through libmicrohttpd/GnuTLS with a generated
# self-signed certificate (handshake, curl with the cert as CA, plain HTTP
# refused), and startup refusing a missing, expired, not-yet-valid or
# mismatched certificate with one clear line and exit status 1.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"
command -v openssl >/dev/null || fail "openssl is required"
command -v jq >/dev/null || fail "jq is required"

cd "$T" || fail "cd"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem \
    -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    2>/dev/null || fail "openssl req"
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-key.pem \
    -out other-cert.pem -days 2 -subj /CN=other 2>/dev/null || fail "openssl req 2"

# certificates with chosen dates via `openssl ca -selfsign`
mkdir -p ca && : >ca/index.txt && echo 01 >ca/serial
cat >ca.cnf <<'EOF'
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = ./ca
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
EOF
openssl req -new -newkey rsa:2048 -nodes -keyout dated-key.pem -out dated.csr \
    -subj /CN=127.0.0.1 2>/dev/null || fail "csr"
openssl ca -batch -notext -config ca.cnf -selfsign -keyfile dated-key.pem \
    -in dated.csr -out expired.pem -startdate 20200101000000Z \
    -enddate 20200102000000Z >/dev/null 2>&1 || fail "openssl ca (expired)"
openssl ca -batch -notext -config ca.cnf -selfsign -keyfile dated-key.pem \
    -in dated.csr -out future.pem -startdate 20990101000000Z \
    -enddate 20990102000000Z >/dev/null 2>&1 || fail "openssl ca (future)"

start_server "$T/data" --tls-enabled=true --tls-cert "$T/cert.pem" --tls-key "$T/key.pem"
grep -q "https://127.0.0.1:$API_PORT" "$LOG" || fail "log does not say https"
code=$(curl -s -o "$T/h" -w '%{http_code}' --max-time 10 --cacert "$T/cert.pem" \
    "https://127.0.0.1:$API_PORT/v1/health")
[ "$code" = 200 ] || fail "https health: $code"
jq -e '.status=="healthy"' "$T/h" >/dev/null || fail "https health body"
ok "HTTPS request verified against the generated certificate"
code=$(curl -s -o "$T/a" -w '%{http_code}' --max-time 10 --cacert "$T/cert.pem" \
    -X POST -H "Content-Type: application/json" \
    -d '{"concept_path":"tls/a","predicate":"p","value":1}' \
    "https://127.0.0.1:$API_PORT/v1/assert")
[ "$code" = 201 ] || fail "https assert: $code"
ok "HTTPS write -> 201"
echo | timeout 10 openssl s_client -connect "127.0.0.1:$API_PORT" \
    -CAfile "$T/cert.pem" -verify_return_error >"$T/sclient" 2>&1 ||
    fail "openssl s_client handshake failed: $(tail -5 "$T/sclient")"
grep -q "Verify return code: 0 (ok)" "$T/sclient" || fail "s_client verification"
ok "TLS handshake verifies (openssl s_client)"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$API_PORT/v1/health")
[ "$code" != 200 ] || fail "plain HTTP answered on the TLS port"
ok "plain HTTP is not served on the TLS port"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$T/cert.pem" \
    "https://127.0.0.1:$DASH_PORT/v1/health")
[ "$code" = 200 ] || fail "dashboard over https: $code"
ok "dashboard listener uses TLS too"
stop_server
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC"

# refuse_start WHAT PATTERN [flags...]: exit 1 and one line matching PATTERN.
refuse_start() {
    local what=$1 pattern=$2
    shift 2
    local log="$T/refuse.log" rc=0
    timeout 20 "$API_BIN" --data-dir "$T/data" --bind 127.0.0.1:0 \
        --dashboard-bind off "$@" 2>"$log" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit status $rc (want 1): $(cat "$log")"
    grep "stemedb-api: error:" "$log" | grep -qi -- "$pattern" ||
        fail "$what: no error line matching '$pattern': $(cat "$log")"
    [ "$(grep -c 'stemedb-api: error:' "$log")" = 1 ] || fail "$what: more than one error line"
    ok "$what: $(grep 'stemedb-api: error:' "$log" | cut -c1-160)"
}

refuse_start "missing certificate" "No such file or directory.*STEMEDB_TLS_CERT" \
    --tls-enabled=true --tls-cert "$T/nope.pem" --tls-key "$T/key.pem"
refuse_start "missing key" "No such file or directory.*STEMEDB_TLS_KEY" \
    --tls-enabled=true --tls-cert "$T/cert.pem" --tls-key "$T/nope-key.pem"
refuse_start "expired certificate" "has expired" \
    --tls-enabled=true --tls-cert "$T/expired.pem" --tls-key "$T/dated-key.pem"
refuse_start "not yet valid certificate" "not valid yet" \
    --tls-enabled=true --tls-cert "$T/future.pem" --tls-key "$T/dated-key.pem"
refuse_start "mismatched key" "does not match" \
    --tls-enabled=true --tls-cert "$T/cert.pem" --tls-key "$T/other-key.pem"
printf 'not a certificate\n' >"$T/junk.pem"
refuse_start "garbage certificate" "not a PEM" \
    --tls-enabled=true --tls-cert "$T/junk.pem" --tls-key "$T/key.pem"
rc=0
STEMEDB_TLS_ENABLED=true "$API_BIN" --data-dir "$T/data" --bind 127.0.0.1:0 \
    2>"$T/nocert.log" || rc=$?
[ "$rc" = 2 ] || fail "TLS enabled without paths: exit $rc"
grep -q STEMEDB_TLS_CERT "$T/nocert.log" || fail "TLS enabled without paths: message"
ok "TLS enabled without cert/key paths -> usage error"
echo "PASS"
