#!/usr/bin/env bash
# Classic files, measured on the twelve-hour workload of ../shared/bench (WL, default /tmp/wl):
#  1. export throughput: the newest dump of each database exported as .dump.gz by
#     `repo export` (restore + parallel gzip -6) beside `gzip -6` and `pigz -6` of the same
#     file (read from the page cache), three runs each; output sizes;
#  2. import: the twelve-hour series as the sites keep it, `pg_dump -Fc | gzip` files
#     (postgres/<db>-YYYYmmdd-HHMMSS.dump.gz, from the `fc` dumps), and the same series taken
#     with -Z0 (`fc0` dumps gzipped), each imported into a new repository: repository size
#     beside the files' own size; every snapshot restored and compared with `gunzip -c`.
# Needs target/release/repo, gzip, pigz. Writes tables to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${WL:-/tmp/wl}
OUT=${OUT:-/tmp/export-bench}
BIN=$PWD/target/release/repo
rm -rf "$OUT"; mkdir -p "$OUT"
export REPO_PASSWORD=bench REPO_CACHE_DIR=$OUT/cache
now() { date +%s.%N; }
secs() { echo "$2-$1" | bc -l; }

"$BIN" -q -r "$OUT/repo" init
for db in bench docs; do
  "$BIN" -q -r "$OUT/repo" backup --stdin --name "postgres/$db" --time 2026-02-14T02:00:00Z < "$WL/dumps/fc0/h12-$db.dump"
done
echo "| input | tool | s (3 runs) | output MB |"
echo "|---|---|---|---:|"
for db in bench docs; do
  in=$WL/dumps/fc0/h12-$db.dump
  cat "$in" > /dev/null
  mb=$(echo "$(stat -c %s "$in")/1000000" | bc -l | xargs printf %.0f)
  for tool in repo gzip pigz; do
    times=()
    for _ in 1 2 3; do
      rm -rf "$OUT/x"; mkdir -p "$OUT/x"
      t0=$(now)
      case $tool in
        repo) "$BIN" -q -r "$OUT/repo" export "$OUT/x" --name "postgres/$db"; f=$OUT/x/postgres/$db-20260214-020000.dump.gz ;;
        gzip) gzip -6 -c "$in" > "$OUT/x/o.gz"; f=$OUT/x/o.gz ;;
        pigz) pigz -6 -c "$in" > "$OUT/x/o.gz"; f=$OUT/x/o.gz ;;
      esac
      t1=$(now)
      times+=("$(printf %.2f "$(secs "$t0" "$t1")")")
    done
    gunzip -c "$f" | cmp -s - "$in" || { echo "$tool output does not gunzip to the input" >&2; exit 1; }
    printf "| %s (%s MB) | %s | %s | %.2f |\n" "$db h12" "$mb" "$tool" "${times[*]}" "$(echo "$(stat -c %s "$f")/1000000" | bc -l)"
  done
done
echo

mkdir -p "$OUT/classic/postgres" "$OUT/classic-z0/postgres"
for h in $(seq -w 1 12); do
  for db in bench docs; do
    ts="20260214-$(printf %02d $((10#$h)))0000"
    pigz -6 -c "$WL/dumps/fc/h$h-$db.dump" > "$OUT/classic/postgres/$db-$ts.dump.gz"
    pigz -6 -c "$WL/dumps/fc0/h$h-$db.dump" > "$OUT/classic-z0/postgres/$db-$ts.dump.gz"
  done
done
echo "| series (24 files) | files MB | repository MB | ratio | import s |"
echo "|---|---:|---:|---:|---:|"
for series in classic classic-z0; do
  r=$OUT/repo-$series
  "$BIN" -q -r "$r" init
  t0=$(now)
  "$BIN" -q -r "$r" import "$OUT/$series"/postgres/*.dump.gz
  t1=$(now)
  again=$("$BIN" --json -r "$r" import "$OUT/$series"/postgres/*.dump.gz | python3 -c 'import json,sys; print(json.load(sys.stdin)["imported"])')
  [ "$again" = 0 ] || { echo "second import stored $again snapshots" >&2; exit 1; }
  for f in "$OUT/$series"/postgres/*.dump.gz; do
    b=$(basename "$f" .dump.gz); name=postgres/${b%-*-*}; t=${b: -15}
    id=$("$BIN" --json -r "$r" snapshots --name "$name" | python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin) if s['time']=='${t:0:4}-${t:4:2}-${t:6:2}T${t:9:2}:${t:11:2}:${t:13:2}Z'][0])")
    "$BIN" -r "$r" restore "$id" | cmp -s - <(gunzip -c "$f") || { echo "$f does not restore byte-identical" >&2; exit 1; }
  done
  files=$(du -cb "$OUT/$series"/postgres/*.dump.gz | tail -1 | cut -f1)
  repo=$(du -sb "$r" | cut -f1)
  printf "| %s | %.1f | %.1f | %.2f | %.1f |\n" "$series" "$(echo "$files/1000000" | bc -l)" "$(echo "$repo/1000000" | bc -l)" "$(echo "$files/$repo" | bc -l)" "$(secs "$t0" "$t1")"
done
echo "(every snapshot restored byte-identical to gunzip -c of its file; a second import stored nothing)"
