#!/usr/bin/env bash
# cold-open-s3.sh - a fresh pod opening a large repository on S3: `repo stats` with an empty
# cache (list and fetch every index file, build the cache, as a first backup or restore does)
# against `rclone copy` of the same index files from the same moto_server on 127.0.0.1.
#
# REPO_DIR is an existing local repository (e.g. one benches/scale.sh or
# examples/synth_repo.rs built, with OUT=… to keep it); everything but data/ is uploaded,
# since opening reads no pack. Three runs of each; several binaries may be compared.
# Needs moto_server (scripts/test.sh installs it) and rclone.
# Usage: REPO_PASSWORD=… bash benches/cold-open-s3.sh REPO_DIR [BIN ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1; shift
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$PWD/target/release/repo")
OUT=${OUT:-/tmp/cold-open-s3}
MOTO=${REPO_TEST_MOTO_SERVER:-$PWD/target/test-tools/venv/bin/moto_server}
rm -rf "$OUT"; mkdir -p "$OUT"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret

"$MOTO" -H 127.0.0.1 -p 0 2>"$OUT/moto.log" >/dev/null &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; rm -rf "$OUT"' EXIT
for _ in $(seq 100); do grep -q "Running on http://" "$OUT/moto.log" && break; sleep 0.2; done
EP=$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT/moto.log" | head -1)
curl -sf -X PUT "$EP/bench" >/dev/null
URL="s3://bench/repo?endpoint=$EP&region=us-east-1"
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_ENDPOINT=$EP \
  RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench-secret \
  RCLONE_CONFIG_MOTO_REGION=us-east-1
rc() { env -u AWS_CA_BUNDLE rclone "$@"; }
rc copy --exclude 'data/**' "$SRC" moto:bench/repo
echo "index files: $(ls "$SRC/index" | wc -l), $(du -sm "$SRC/index" | cut -f1) MB"
now() { date +%s.%N; }
timed() {
  local label=$1; shift
  local t0 t1 rss
  t0=$(now)
  rss=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
  t1=$(now)
  printf "| %s | %.2f s | %s MB |\n" "$label" "$(echo "$t1-$t0" | bc -l)" "$((rss / 1024))"
}
for i in 1 2 3; do
  for b in "${BINS[@]}"; do
    rm -rf "$OUT/cache"
    timed "$(basename "$b"): stats, empty cache ($i)" \
      "$b" -q -r "$URL" --cache-dir "$OUT/cache" stats
    timed "$(basename "$b"): stats, warm cache ($i)" \
      "$b" -q -r "$URL" --cache-dir "$OUT/cache" stats
  done
  rm -rf "$OUT/rc"
  timed "rclone copy index/ ($i)" env -u AWS_CA_BUNDLE rclone copy moto:bench/repo/index "$OUT/rc"
done
