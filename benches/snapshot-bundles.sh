#!/usr/bin/env bash
# snapshot-bundles.sh - a fresh pod (empty cache) at thousands of snapshots on S3: listing,
# `restore latest` and `backup` before and after a snapshot bundle exists (format-spec/
# snapshot.md), on moto_server at 127.0.0.1.
#
# A repository with one 1 MiB stream `db` is given N-1 more snapshots of it through the library
# (examples/many_snapshots.rs). BASE (a build without bundles) and NEW are timed with an empty
# cache each run; NEW's first cold backup stores the bundle that later cold runs read.
# Needs moto_server (scripts/test.sh installs it).
# Usage: [N=10000] bash benches/snapshot-bundles.sh BASE_BIN NEW_BIN
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1 NEW=$2 N=${N:-10000}
OUT=${OUT:-/tmp/snapshot-bundles}
rm -rf "$OUT"; mkdir -p "$OUT"
. benches/moto.sh
start_moto 'rm -rf "$OUT"'
export REPO_PASSWORD=bench
cargo build -q --release --example many_snapshots
head -c 1048576 /dev/urandom > "$OUT/stream"
"$NEW" -q -r "$URL" init --kdf-memory 1024 >/dev/null
"$NEW" -q -r "$URL" --cache-dir "$OUT/c0" backup --stdin --name db < "$OUT/stream"
target/release/examples/many_snapshots "$URL" db $((N - 1)) >/dev/null
timed() { # label cmd...: an empty cache each time
  local label=$1; shift
  rm -rf "$OUT/cache"
  measure "$@"
  printf "| %s | %.2f s | %s MB |\n" "$label" "$secs" "$rss_mb"
}
run() { # label bin
  timed "$1: snapshots --name db" "$2" -q -r "$URL" --cache-dir "$OUT/cache" snapshots --name db
  timed "$1: restore latest --name db" "$2" -q -r "$URL" --cache-dir "$OUT/cache" restore latest --name db
}
echo "snapshots: $N"
for i in 1 2; do run "base, no bundle ($i)" "$BASE"; done
timed "new: backup --stdin (stores the bundle)" \
  sh -c '"$0" -q -r "$1" --cache-dir "$2" backup --stdin --name db < "$3"' "$NEW" "$URL" "$OUT/cache" "$OUT/stream"
echo "bundles: $(env -u AWS_CA_BUNDLE rclone lsf moto:bench/repo/bundles | wc -l)"
for i in 1 2; do
  run "new, with the bundle ($i)" "$NEW"
  timed "new: backup --stdin, with the bundle ($i)" \
    sh -c '"$0" -q -r "$1" --cache-dir "$2" backup --stdin --name db < "$3"' "$NEW" "$URL" "$OUT/cache" "$OUT/stream"
done
