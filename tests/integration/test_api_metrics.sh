#!/usr/bin/env bash
# test_api_metrics.sh - /metrics is valid Prometheus text format 0.0.4
# (`promtool check metrics`, skipped visibly when promtool is absent), has
# the series docs/api.md promises, follows the engine's counters, and reads
# the backup status file written by stemedb-backup.
. "${SDB_SRC:?}/api/tests/api_test_lib.sh"

DATA="$T/data"
start_server "$DATA"
for i in 1 2 3; do
    post_json /v1/assert '{"concept_path":"m/a","predicate":"p","value":'"$i"'}'
    expect 201 "assert $i"
done
req GET "$BASE/v1/nope"
req GET "$BASE/metrics"
expect 200 "GET /metrics"
cp "$T/body" "$T/scrape1.txt"
[ "$(tail -c1 "$T/scrape1.txt" | od -An -c | tr -d ' ')" = '\n' ] || fail "last line not newline-terminated"
for s in stemedb_build_info stemedb_uptime_seconds stemedb_read_only \
    stemedb_assertions_total stemedb_last_lsn stemedb_wal_segments \
    wal_segments_total wal_fsync_latency_seconds_bucket \
    wal_fsync_latency_seconds_sum wal_fsync_latency_seconds_count \
    stemedb_group_commits_total stemedb_group_commit_records_total \
    stemedb_group_commit_max_records stemedb_restarts_total \
    stemedb_last_backup_timestamp_seconds stemedb_backup_failures_total \
    stemedb_http_requests_total stemedb_http_request_duration_seconds_bucket \
    stemedb_http_rate_limited_total stemedb_http_parked_writes \
    process_cpu_seconds_total process_open_fds process_max_fds \
    process_virtual_memory_bytes process_resident_memory_bytes \
    process_start_time_seconds; do
    grep -q "^${s}[ {]" "$T/scrape1.txt" || fail "series $s missing"
done
ok "all documented series present"
grep -q '^stemedb_assertions_total 3$' "$T/scrape1.txt" || fail "assertions_total != 3"
grep -q '^stemedb_read_only 0$' "$T/scrape1.txt" || fail "read_only != 0"
grep -q '^stemedb_http_requests_total{endpoint="other",code="404"} 1$' "$T/scrape1.txt" ||
    fail "404 counter"
fs=$(sed -n 's/^wal_fsync_latency_seconds_count \([0-9]*\)$/\1/p' "$T/scrape1.txt")
[ "${fs:-0}" -ge 1 ] || fail "no fsync counted after 3 durable writes"
inf=$(sed -n 's/^wal_fsync_latency_seconds_bucket{le="+Inf"} \([0-9]*\)$/\1/p' "$T/scrape1.txt")
[ "$inf" = "$fs" ] || fail "+Inf bucket $inf != count $fs"
ok "engine counters follow the writes ($fs fsyncs)"
# buckets are cumulative
awk -F' ' '/^stemedb_http_request_duration_seconds_bucket\{endpoint="\/v1\/assert"/ {
        if ($2 < prev) bad = 1; prev = $2 } END { exit bad }' "$T/scrape1.txt" ||
    fail "latency buckets not cumulative"

# backup status file
now=$(date +%s)
printf '{"last_success_unix": %d, "last_failure_unix": 0, "failures_total": 2}\n' $((now - 100)) \
    >"$DATA/backup-status.json"
req GET "$BASE/metrics"
grep -q "^stemedb_last_backup_timestamp_seconds $((now - 100))$" "$T/body" || fail "backup timestamp"
grep -q '^stemedb_backup_failures_total 2$' "$T/body" || fail "backup failures"
grep -q '^stemedb_backup_age_seconds 1[0-9][0-9]' "$T/body" || fail "backup age"
ok "backup status file read into metrics"
printf '{"last_success_unix": %d, "last_failure_unix": %d, "failures_total": 3}\n' $((now - 100)) $((now - 10)) \
    >"$DATA/backup-status.json"
req GET "$BASE/v1/health"
assert_json '.status=="degraded"' "health degraded after a failed backup"
rm -f "$DATA/backup-status.json"
req GET "$BASE/v1/health"
assert_json '.status=="healthy"' "healthy again without a failure"

if command -v promtool >/dev/null; then
    req GET "$BASE/metrics"
    promtool check metrics <"$T/body" >"$T/promtool.out" 2>&1 ||
        fail "promtool check metrics: $(cat "$T/promtool.out")"
    ok "promtool check metrics passes"
else
    echo "SKIP: promtool not installed; metrics lint not run"
fi
stop_server
start_server "$DATA"
req GET "$BASE/metrics"
grep -q '^stemedb_restarts_total [2-9]' "$T/body" || fail "restarts_total did not grow"
ok "stemedb_restarts_total counts opens"
stop_server
echo "PASS"
