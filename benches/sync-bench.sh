#!/usr/bin/env bash
# Off-site shipping, measured on the twelve-hour workload of ../shared/bench (WL, default /tmp/wl):
#  1. hourly: back up each hour's two `-Fc -Z0` dumps, then `repo sync` to S3 (moto_server on
#     127.0.0.1); bytes shipped per hour beside the classic `pg_dump -Fc | gzip` files of that
#     hour (what rsync/rclone of /mnt/backup ships: gzip -6 of the `fc` dumps);
#  2. throughput: the finished repository synced whole to an empty bucket, `repo sync` beside
#     `rclone sync` of the same directory to the same server, then a second run of each with
#     nothing new; the same local→local (disk-bound) beside rclone and cp.
# Needs: target/release/repo, moto_server (scripts/test.sh installs it into
# target/test-tools/venv), rclone and gzip. Writes a table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${WL:-/tmp/wl}
OUT=${OUT:-/tmp/sync-bench}
BIN=$PWD/target/release/repo
MOTO=${REPO_TEST_MOTO_SERVER:-$PWD/target/test-tools/venv/bin/moto_server}
rm -rf "$OUT"; mkdir -p "$OUT"
export REPO_PASSWORD=bench REPO_CACHE_DIR=$OUT/cache AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret

"$MOTO" -H 127.0.0.1 -p 0 2>"$OUT/moto.log" >/dev/null &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q "Running on http://" "$OUT/moto.log" && break; sleep 0.2; done
EP=$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT/moto.log" | head -1)
for b in hourly full rclone; do curl -sf -X PUT "$EP/$b" >/dev/null; done
s3() { echo "s3://$1/repo?endpoint=$EP&region=us-east-1"; }
now() { date +%s.%N; }

"$BIN" -q -r "$OUT/repo" init
echo "| hour | classic .dump.gz files (MB) | repo sync shipped (MB) | sync s |"
echo "|---:|---:|---:|---:|"
tc=0; tr=0
for h in $(seq -w 1 12); do
  classic=0
  for db in bench docs; do
    "$BIN" -q -r "$OUT/repo" backup --stdin --name "postgres/$db" --host bench < "$WL/dumps/fc0/h$h-$db.dump"
    n=$(gzip -6 -c "$WL/dumps/fc/h$h-$db.dump" | wc -c)
    classic=$((classic + n))
  done
  t0=$(now)
  shipped=$("$BIN" --json -r "$OUT/repo" sync "$(s3 hourly)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["copied_bytes"])')
  t1=$(now)
  tc=$((tc + classic)); tr=$((tr + shipped))
  printf "| %s | %.1f | %.1f | %.2f |\n" "$h" "$(echo "$classic/1000000" | bc -l)" "$(echo "$shipped/1000000" | bc -l)" "$(echo "$t1-$t0" | bc -l)"
done
printf "| total | %.1f | %.1f | |\n\n" "$(echo "$tc/1000000" | bc -l)" "$(echo "$tr/1000000" | bc -l)"

bytes=$(du -sb "$OUT/repo" | cut -f1)
mb() { echo "$bytes/1000000/$1" | bc -l; }
row() { printf "| %s | %.2f | %.0f |\n" "$1" "$2" "$(mb "$2")"; }
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_ENDPOINT=$EP \
  RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench-secret RCLONE_CONFIG_MOTO_REGION=us-east-1
echo "Whole repository: $(echo "$bytes/1000000" | bc -l | xargs printf %.1f) MB in $(find "$OUT/repo" -type f | wc -l) objects"
echo "| run | s | MB/s |"
echo "|---|---:|---:|"
t0=$(now); "$BIN" -q -r "$OUT/repo" sync "$(s3 full)"; t1=$(now); row "repo sync → S3 (moto), empty bucket" "$(echo "$t1-$t0" | bc -l)"
t0=$(now); env -u AWS_CA_BUNDLE rclone sync "$OUT/repo" moto:rclone/repo; t1=$(now); row "rclone sync → S3 (moto), empty bucket" "$(echo "$t1-$t0" | bc -l)"
t0=$(now); "$BIN" -q -r "$OUT/repo" sync "$(s3 full)"; t1=$(now); printf "| repo sync → S3, nothing new | %.2f | |\n" "$(echo "$t1-$t0" | bc -l)"
t0=$(now); env -u AWS_CA_BUNDLE rclone sync "$OUT/repo" moto:rclone/repo; t1=$(now); printf "| rclone sync → S3, nothing new | %.2f | |\n" "$(echo "$t1-$t0" | bc -l)"
sync; t0=$(now); "$BIN" -q -r "$OUT/repo" sync "$OUT/copy-repo"; t1=$(now); row "repo sync → local disk" "$(echo "$t1-$t0" | bc -l)"
sync; t0=$(now); rclone sync "$OUT/repo" "$OUT/copy-rclone"; sync; t1=$(now); row "rclone sync → local disk (+ sync)" "$(echo "$t1-$t0" | bc -l)"
sync; t0=$(now); cp -a "$OUT/repo" "$OUT/copy-cp"; sync; t1=$(now); row "cp -a → local disk (+ sync)" "$(echo "$t1-$t0" | bc -l)"
"$BIN" -q -r "$(s3 full)" check --read-data --cache-dir "$OUT/fresh-cache" && echo "check --read-data of the S3 copy: clean"
