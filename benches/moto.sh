# moto.sh - sourced by the S3 benchmarks (s3-restore.sh, cold-open-s3.sh).
# measure CMD...: runs CMD (its stdout discarded) and sets `secs` (wall time) and `rss_mb`
# (peak RSS, from /usr/bin/time).
# start_moto [CLEANUP]: starts moto_server on 127.0.0.1 (log in $OUT/moto.log) with a bucket
# `bench`; sets EP, URL (a repository in that bucket) and moto_pid, configures rclone's
# `moto:` remote, and on exit stops the server and runs CLEANUP.
start_moto() {
  local moto=${REPO_TEST_MOTO_SERVER:-$PWD/target/test-tools/venv/bin/moto_server}
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
  "$moto" -H 127.0.0.1 -p 0 2>"$OUT/moto.log" >/dev/null &
  moto_pid=$!
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "kill $moto_pid 2>/dev/null; ${1:-}" EXIT
  for _ in $(seq 100); do grep -q "Running on http://" "$OUT/moto.log" && break; sleep 0.2; done
  EP=$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT/moto.log" | head -1)
  curl -sf -X PUT "$EP/bench" >/dev/null
  URL="s3://bench/repo?endpoint=$EP&region=us-east-1"
  export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other \
    RCLONE_CONFIG_MOTO_ENDPOINT=$EP RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench \
    RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench-secret RCLONE_CONFIG_MOTO_REGION=us-east-1
}

measure() {
  local t0 kb
  t0=$(date +%s.%N)
  kb=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
  secs=$(echo "$(date +%s.%N) - $t0" | bc -l)
  rss_mb=$((kb / 1024))
}
