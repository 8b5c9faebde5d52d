#!/usr/bin/env bash
# scale.sh - seconds and peak RSS of every command whose cost could grow with the repository,
# at several repository sizes, so growth between 1 M and 10 M chunks is visible.
#
# For each size N the repository is generated through the library (examples/synth_repo.rs:
# four snapshots of the name `db`, N/4 distinct 64-byte chunks each, written by the backup
# pipeline without the chunker) plus one real 1 MiB stream `tiny` copied to 10,000 snapshots
# (examples/many_snapshots.rs). Then, with the release binary:
#   snapshots (warm cache), snapshots and stats with an empty cache (stats builds the cache,
#   as a fresh pod's first backup or restore does),
#   backup --stdin of 1 MiB (open for backup with a warm cache), restore of the newest `db`
#   snapshot (N/4 chunks), check, check --read-data, forget of 9,976 `tiny` snapshots, forget
#   of the oldest `db` snapshot and prune (a quarter of the packs deleted), check again.
#
# Usage: SIZES="1000000 10000000" bash benches/scale.sh   (10 M chunks need about 4 GB of
# disk; REPO_BIN=… runs the commands with another build; KEEP=1 keeps the repositories, after
# the prune, under OUT=…)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-"1000000"}
(cd "$ROOT" && cargo build -q --release --bin repo --example synth_repo --example many_snapshots)
BIN=${REPO_BIN:-$ROOT/target/release/repo}
EX=$ROOT/target/release/examples
OUT=${OUT:-$(mktemp -d /tmp/repo-scale.XXXXXX)}
[ -n "${KEEP:-}" ] || trap 'rm -rf "$OUT"' EXIT
export REPO_PASSWORD=scale
t() { local what=$1; shift; /usr/bin/time -f "$what: %e s, peak RSS %M KB" "$@"; }

for n in $SIZES; do
  echo "== $n chunks"
  W=$OUT/$n
  rm -rf "$W"; mkdir -p "$W"
  export REPO_REPOSITORY=$W/r REPO_CACHE_DIR=$W/cache
  # a low KDF cost, so the figures show the commands (Argon2's default 64 MiB adds to each)
  "$BIN" -q init --kdf-memory 1024
  for s in 1 2 3 4; do
    t "generate db snapshot $s ($((n / 4)) chunks)" "$EX/synth_repo" "$W/r" db $((n / 4))
  done
  head -c 1M /dev/urandom | "$BIN" -q backup --stdin --name tiny
  "$EX/many_snapshots" "$W/r" tiny 9999 >/dev/null
  "$BIN" --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("blobs:", s["blobs"], " packs:", s["packs"], " index files:", s["index_files"], " snapshots:", s["snapshots"], " pack bytes:", s["pack_bytes"])'
  echo "repository: $(du -sm "$W/r" | cut -f1) MB, cache: $(du -sm "$W/cache" | cut -f1) MB"
  t "snapshots --name db" "$BIN" -q snapshots --name db >/dev/null
  rm -rf "$W/cache"
  t "snapshots, empty cache" "$BIN" -q snapshots >/dev/null
  t "stats, empty cache (the cache build)" "$BIN" -q stats >/dev/null
  head -c 1M /dev/urandom | t "backup --stdin 1 MiB" "$BIN" -q backup --stdin --name tiny
  t "restore latest db ($((n / 4)) chunks)" "$BIN" -q restore latest --name db >/dev/null
  t "check" "$BIN" -q check
  t "check --read-data" "$BIN" -q check --read-data
  t "forget --keep-last 24 --name tiny" "$BIN" -q forget --name tiny --keep-last 24
  oldest=$("$BIN" --json snapshots --name db | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
  "$BIN" -q forget "$oldest"
  t "prune" "$BIN" -q prune
  t "check after prune" "$BIN" -q check
  [ -n "${KEEP:-}" ] || rm -rf "$W"
done
