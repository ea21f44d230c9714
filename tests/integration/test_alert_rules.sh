#!/usr/bin/env bash
# test_alert_rules.sh - monitoring/alerts.yml passes `promtool check rules`
# and the unit tests in monitoring/alerts_test.yml (`promtool test rules`),
# and a deliberately broken copy fails, so the check itself is live.
# promtool: from PATH, else extracted from the Debian prometheus package
# (apt-get download + dpkg -x into a temp dir); skips visibly if neither works.
set -u
: "${SDB_SRC:?}"
: "${SDB_TEST_TMPDIR:=/tmp}"
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$SDB_TEST_TMPDIR"
T=$(mktemp -d "$SDB_TEST_TMPDIR/alerts.XXXXXX")
trap 'rm -rf "$T"' EXIT

PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ] && command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
    (cd "$T" && apt-get download prometheus >/dev/null 2>&1 && dpkg -x prometheus_*.deb "$T/pkg") &&
        PROMTOOL="$T/pkg/usr/bin/promtool"
fi
[ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ] || { echo "SKIP: promtool unavailable (install prometheus or allow apt-get download)"; exit 0; }

M="$SDB_SRC/monitoring"
"$PROMTOOL" check rules "$M/alerts.yml" || fail "promtool check rules"
(cd "$M" && "$PROMTOOL" test rules alerts_test.yml) || fail "promtool test rules"

# every alert the runbooks promise exists
for a in StemeDBDown StemeDBRestartLoop StemeDBReadOnly StemeDBFsyncLatencyHigh \
    StemeDBDiskAlmostFull StemeDBBackupMissing StemeDBBackupFailed StemeDBWalArchiveLag; do
    grep -q "alert: $a\$" "$M/alerts.yml" || fail "missing alert $a"
    grep -q "alertname: $a\$" "$M/alerts_test.yml" || fail "alert $a has no unit test"
done

# the checks can fail: a broken expression and a wrong expectation
sed 's/stemedb_read_only{job="stemedb"} == 1/stemedb_read_only{job="stemedb"} ==/' "$M/alerts.yml" >"$T/broken.yml"
"$PROMTOOL" check rules "$T/broken.yml" >/dev/null 2>&1 && fail "check rules accepted a broken expression"
cp "$M/alerts.yml" "$T/alerts.yml"
sed 's/values: .1 0 0 0 0./values: '"'"'1 1 1 1 1'"'"'/' "$M/alerts_test.yml" >"$T/alerts_test.yml"
(cd "$T" && "$PROMTOOL" test rules alerts_test.yml >/dev/null 2>&1) && fail "test rules passed a wrong expectation"
echo "ok - alert rules checked and unit-tested"
echo PASS
