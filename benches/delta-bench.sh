#!/usr/bin/env bash
# Delta blobs against the previous release on the shared workload (../shared/bench):
# hourly `pg_dump -Fc -Z0` dumps of two databases backed up in order, repository size after
# each hour, backup time per hour, and restore time of the newest bench dump.
# Usage: [INIT_ARGS="--chunk-avg 65536"] BINS="old=/tmp/repo-old new=target/release/repo" [WL=/tmp/wl] [HOURS=6] bash benches/delta-bench.sh
# Peers: with RESTIC=1 the same series is run with restic (same password, default settings),
# with BORG=1 with borg (repokey encryption, --compression zstd,3 as its docs advise for speed),
# with RUSTIC=1 with rustic (`cargo install rustic-rs --locked`; default settings, but --force:
# without it rustic 0.11.4 keeps the previous stream of the same name, see ../shared/bench/tools.sh).
set -euo pipefail
WL=${WL:-/tmp/wl}
HOURS=${HOURS:-6}
OUT=${OUT:-/tmp/delta-bench}
BINS=${BINS:?set BINS="label=/path/to/repo ..."}
export REPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
mkdir -p "$OUT"
now() { date +%s.%N; }
size() { du -sb "$1" | cut -f1; }
printf 'tool\thour\tbackup_s\trepo_bytes\n' > "$OUT/series.tsv"
run_series() { # label init backup restore
  local label=$1 init=$2 bk=$3 rs=$4 repo=$OUT/repo-$1
  rm -rf "$repo" "$OUT/cache-$label"; eval "$init" >/dev/null
  for h in $(seq -w 1 "$HOURS"); do
    local t0; t0=$(now)
    for db in bench docs; do eval "$bk" < "$WL/dumps/fc0/h$(printf %02d $((10#$h)))-$db.dump" >/dev/null; done
    printf '%s\t%s\t%.2f\t%s\n' "$label" "$h" "$(echo "$(now) - $t0" | bc)" "$(size "$repo")" >> "$OUT/series.tsv"
  done
  for i in 1 2 3; do
    local t0; t0=$(now); eval "$rs" > /dev/null
    printf '%s\trestore\t%.2f\n' "$label" "$(echo "$(now) - $t0" | bc)" >> "$OUT/restore.tsv"
  done
}
: > "$OUT/restore.tsv"
# every tool reads the dumps from the page cache: the first series would otherwise pay the disk
cat "$WL"/dumps/fc0/h*.dump > /dev/null
for b in $BINS; do
  label=${b%%=*}; bin=${b#*=}
  export REPO_CACHE_DIR=$OUT/cache-$label
  run_series "$label" "\"$bin\" -q -r $OUT/repo-$label init ${INIT_ARGS:-}" \
    "\"$bin\" -q -r $OUT/repo-$label backup --stdin --name \$db" \
    "\"$bin\" -q -r $OUT/repo-$label restore latest --name bench"
done
if [ "${RESTIC:-0}" = 1 ]; then
  run_series restic "restic -q init -r $OUT/repo-restic" \
    "restic -q -r $OUT/repo-restic backup --stdin --stdin-filename \$db.dump" \
    "restic -q -r $OUT/repo-restic dump --path /bench.dump latest /bench.dump"
fi
if [ "${RUSTIC:-0}" = 1 ]; then
  run_series rustic "rustic -r $OUT/repo-rustic init" \
    "rustic -r $OUT/repo-rustic backup --force --stdin-filename \$db.dump -" \
    "rustic -r $OUT/repo-rustic dump --archive content --filter-paths-exact bench.dump latest:bench.dump"
fi
if [ "${BORG:-0}" = 1 ]; then
  run_series borg "borg init -e repokey $OUT/repo-borg" \
    "borg create --compression zstd,3 $OUT/repo-borg::\$db-\$h-\$(date +%s%N) - " \
    "borg extract --stdout $OUT/repo-borg::\$(borg list --short --glob-archives 'bench-*' $OUT/repo-borg | tail -1)"
fi
cat "$OUT/series.tsv" "$OUT/restore.tsv"
