#!/usr/bin/env bash
# s3-restore.sh - restore from S3 (moto_server on 127.0.0.1) beside `rclone copy` of the same
# bytes from the same server: a fresh pod's cold restore (empty cache) and a warm one.
#
# A repository on S3 gets one stream (the bench workload's dumps concatenated, default 1 GiB;
# random bytes if WL is absent); then `repo restore latest > /dev/null` with an empty cache
# and with a warm one, and `rclone copy` of the repository's data/ (every pack: the bytes the
# restore needs and a little more) to a local directory.
# Needs: target/release/repo, moto_server (scripts/test.sh installs it), rclone.
# Usage: MB=1024 WL=/tmp/wl [RUNS=3] bash benches/s3-restore.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${WL:-/tmp/wl}
MB=${MB:-1024}
OUT=${OUT:-/tmp/s3-restore}
BIN=${REPO_BIN:-$PWD/target/release/repo}
rm -rf "$OUT"; mkdir -p "$OUT"
export REPO_PASSWORD=bench
. benches/moto.sh
start_moto

if [ -d "$WL/dumps/fc0" ]; then
  src() { cat "$WL"/dumps/fc0/*.dump | head -c "$((MB << 20))"; }
else
  src() { head -c "$((MB << 20))" /dev/urandom; }
fi
src > "$OUT/stream" || true # cat ends on a closed pipe once head has enough
"$BIN" -q -r "$URL" --cache-dir "$OUT/cache" init
"$BIN" -q -r "$URL" --cache-dir "$OUT/cache" backup --stdin --name s < "$OUT/stream"
data=$(env -u AWS_CA_BUNDLE rclone size --json moto:bench/repo/data | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
echo "stream $MB MiB; packs on S3: $(echo "$data/1000000" | bc -l | xargs printf %.1f) MB"
echo "| run | s | MB/s of packs | peak RSS |"
echo "|---|---:|---:|---:|"
row() { printf "| %s | %.2f | %.0f | %s |\n" "$1" "$2" "$(echo "$data/1000000/$2" | bc -l)" "$3"; }
timed() {
  local label=$1; shift
  measure "$@"
  row "$label" "$secs" "$rss_mb MB"
}
for i in $(seq "${RUNS:-3}"); do
  rm -rf "$OUT/cold"
  timed "repo restore, empty cache ($i)" "$BIN" -q -r "$URL" --cache-dir "$OUT/cold" restore latest --name s
  timed "repo restore, warm cache ($i)" "$BIN" -q -r "$URL" --cache-dir "$OUT/cache" restore latest --name s
  rm -rf "$OUT/rc"
  timed "rclone copy data/ ($i)" env -u AWS_CA_BUNDLE rclone copy moto:bench/repo/data "$OUT/rc"
done
"$BIN" -q -r "$URL" --cache-dir "$OUT/cache" restore latest --name s | cmp - "$OUT/stream" && echo "restored bytes identical"
