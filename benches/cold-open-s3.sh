#!/usr/bin/env bash
# cold-open-s3.sh - a fresh pod opening a large repository on S3: `repo stats` with an empty
# cache (list and fetch every index file, build the cache, as a first backup or restore does)
# against `rclone copy` of the same index files from the same moto_server on 127.0.0.1.
#
# REPO_DIR is an existing local repository (e.g. one benches/scale.sh or
# examples/synth_repo.rs built, with OUT=… to keep it); everything but data/ is uploaded,
# since opening reads no pack. ROUNDS runs of each (3); several binaries may be compared. The
# backup of an empty stream (a snapshot named cold-open) times a fresh pod's open for backup.
# Needs moto_server (scripts/test.sh installs it) and rclone.
# Usage: REPO_PASSWORD=… bash benches/cold-open-s3.sh REPO_DIR [BIN ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1; shift
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$PWD/target/release/repo")
OUT=${OUT:-/tmp/cold-open-s3}
rm -rf "$OUT"; mkdir -p "$OUT"
. benches/moto.sh
start_moto 'rm -rf "$OUT"'
rc() { env -u AWS_CA_BUNDLE rclone "$@"; }
rc copy --exclude 'data/**' "$SRC" moto:bench/repo
echo "index files: $(ls "$SRC/index" | wc -l), $(du -sm "$SRC/index" | cut -f1) MB"
timed() {
  local label=$1; shift
  measure "$@"
  printf "| %s | %.2f s | %s MB |\n" "$label" "$secs" "$rss_mb"
}
for i in $(seq "${ROUNDS:-3}"); do
  for b in "${BINS[@]}"; do
    rm -rf "$OUT/cache"
    timed "$(basename "$b"): stats, empty cache ($i)" \
      "$b" -q -r "$URL" --cache-dir "$OUT/cache" stats
    timed "$(basename "$b"): stats, warm cache ($i)" \
      "$b" -q -r "$URL" --cache-dir "$OUT/cache" stats
    rm -rf "$OUT/cache"
    timed "$(basename "$b"): open for backup (empty stream), empty cache ($i)" \
      sh -c '"$0" -q -r "$1" --cache-dir "$2" backup --stdin --name cold-open < /dev/null' \
      "$b" "$URL" "$OUT/cache"
  done
  rm -rf "$OUT/rc"
  timed "rclone copy index/ ($i)" env -u AWS_CA_BUNDLE rclone copy moto:bench/repo/index "$OUT/rc"
done
