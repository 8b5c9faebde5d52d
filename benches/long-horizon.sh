#!/usr/bin/env bash
# long-horizon.sh - hourly growth over many hours without keeping the dumps.
#
# Runs ../shared/bench/make-workload.sh for $HOURS hours (same data and seeds as the 12-hour
# workload, so hours 1-12 are the bench's) and, as each hour's `pg_dump -Fc -Z0` dumps appear,
# backs them up into every repository of $REPOS, then deletes that hour's dump files: disk use
# stays at about two hours of dumps whatever $HOURS is. Prints one line per hour with each
# repository's size.
#
# REPOS: `name=command` entries separated by `;`, the command being how to run `repo`, e.g.
#   REPOS="new=target/release/repo; old=env SOME=1 /tmp/repo-old"
# KEEP=N: `forget --keep-last N --prune` in each repository after every PRUNE_EVERY hours
#   (default 1): retention as in production; the size printed is then after the prune.
# Usage: HOURS=72 [SKEW=1] [KEEP=24] [WL=/tmp/wl-long] [OUT=/tmp/long] REPOS=... \
#   bash benches/long-horizon.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HOURS=${HOURS:-48}
WL=${WL:-/tmp/wl-long}
OUT=${OUT:-/tmp/long}
REPOS=${REPOS:-new=$PWD/target/release/repo}
export REPO_PASSWORD=bench
rm -rf "$OUT"; mkdir -p "$OUT"

names=(); cmds=()
IFS=';' read -ra entries <<< "$REPOS"
for e in "${entries[@]}"; do
  e=$(echo "$e" | sed 's/^ *//; s/ *$//')
  [ -n "$e" ] || continue
  names+=("${e%%=*}"); cmds+=("${e#*=}")
done
for i in "${!names[@]}"; do
  # shellcheck disable=SC2086 # the command is a word list on purpose
  ${cmds[$i]} -q -r "$OUT/${names[$i]}" init --kdf-memory 1024
done

HOURS=$HOURS WL=$WL SKEW=${SKEW:-0} bash ../shared/bench/make-workload.sh \
  > "$OUT/workload.log" 2>&1 &
gen=$!
trap 'kill $gen 2>/dev/null || true' EXIT

d=$WL/dumps
printf 'hour'; printf '\t%s MB' "${names[@]}"; printf '\t%s s' "${names[@]}"; echo
for h in $(seq 1 "$HOURS"); do
  hh=$(printf '%02d' "$h")
  # the docs dump of this hour is whole once the next format's dump of it begins
  until [ -e "$d/fc/h$hh-docs.dump" ]; do
    kill -0 $gen 2>/dev/null || { echo "workload generator stopped (see $OUT/workload.log)" >&2; exit 1; }
    sleep 1
  done
  line="$h"
  secs=()
  for i in "${!names[@]}"; do
    t0=$(date +%s.%N)
    for db in bench docs; do
      # shellcheck disable=SC2086
      ${cmds[$i]} -q -r "$OUT/${names[$i]}" backup --stdin --name "$db" < "$d/fc0/h$hh-$db.dump"
    done
    if [ -n "${KEEP:-}" ] && [ $((h % ${PRUNE_EVERY:-1})) = 0 ]; then
      # shellcheck disable=SC2086
      ${cmds[$i]} -q -r "$OUT/${names[$i]}" forget --keep-last "$KEEP" --prune
    fi
    secs+=("$(echo "$(date +%s.%N) - $t0" | bc -l | xargs printf %.2f)")
    line+=$(printf '\t%.2f' "$(du -sb "$OUT/${names[$i]}" | awk '{print $1/1e6}')")
  done
  for s in "${secs[@]}"; do line+=$(printf '\t%s' "$s"); done
  echo "$line"
  # this hour's bench dumps and every older dump are whole; the docs fc and sql dumps of
  # this hour may still be written
  rm -f "$d/fc0/h$hh-"* "$d/fc/h$hh-bench.dump" "$d/sql/h$hh-bench.sql"
  if [ "$h" -gt 1 ]; then
    p=$(printf '%02d' $((h - 1)))
    rm -f "$d/fc/h$p-"* "$d/sql/h$p-"*
  fi
done
wait $gen
