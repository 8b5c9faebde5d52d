#!/usr/bin/env bash
# Prune time and peak RSS on a synthetic repository of at least 2 million chunks: two 1.1 GiB
# snapshots of random data with 1 KiB average chunks (~2.2M chunks), one forgotten, then
# `repo prune`. Usage: benches/prune-scale.sh [MiB per snapshot]   (needs ~3 GB of disk)
set -euo pipefail
BIN=${REPO_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/repo}
MIB=${1:-1100}
W=$(mktemp -d /tmp/repo-prune-scale.XXXXXX)
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=scale REPO_CACHE_DIR=$W/cache REPO_REPOSITORY=$W/r
"$BIN" -q init --chunk-avg 1024
for s in a b; do
  head -c $((MIB << 20)) /dev/urandom | /usr/bin/time -f "backup $s: %e s, peak RSS %M KB" "$BIN" -q backup --stdin --name "$s"
done
"$BIN" --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("chunks (blobs):", s["blobs"], " packs:", s["packs"], " stored bytes:", s["pack_bytes"])'
"$BIN" -q forget $("$BIN" --json snapshots --name a | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
/usr/bin/time -f "prune: %e s, peak RSS %M KB" "$BIN" prune
/usr/bin/time -f "check: %e s, peak RSS %M KB" "$BIN" -q check
