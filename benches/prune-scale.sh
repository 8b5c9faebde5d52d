#!/usr/bin/env bash
# Time and peak RSS of the commands whose memory could grow with the repository, on a
# synthetic repository of about 2 million chunks: two 1.1 GiB snapshots of random data with
# 1 KiB average chunks. Reports the backups, a cold-cache open (a fresh pod), check,
# check --read-data, then forget of one snapshot and prune, and check again.
# Usage: benches/prune-scale.sh [MiB per snapshot]   (needs ~3 GB of disk; REPO_BIN to compare
# another build)
set -euo pipefail
BIN=${REPO_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/repo}
MIB=${1:-1100}
W=$(mktemp -d /tmp/repo-prune-scale.XXXXXX)
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=scale REPO_CACHE_DIR=$W/cache REPO_REPOSITORY=$W/r
t() { local what=$1; shift; /usr/bin/time -f "$what: %e s, peak RSS %M KB" "$@"; }
"$BIN" -q init --chunk-avg 1024
for s in a b; do
  head -c $((MIB << 20)) /dev/urandom | t "backup $s" "$BIN" -q backup --stdin --name "$s"
done
"$BIN" --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("chunks (blobs):", s["blobs"], " packs:", s["packs"], " stored bytes:", s["pack_bytes"])'
rm -rf "$W/cache"
t "snapshots with an empty cache" "$BIN" -q snapshots >/dev/null
t "check" "$BIN" -q check
t "check --read-data" "$BIN" -q check --read-data
"$BIN" -q forget $("$BIN" --json snapshots --name a | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
t "prune" "$BIN" -q prune
t "check after prune" "$BIN" -q check
