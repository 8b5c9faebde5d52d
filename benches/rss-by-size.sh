#!/usr/bin/env bash
# Peak RSS of `repo backup --stdin` and `repo restore` against stream size: the pipeline's
# memory must not grow with the stream. Incompressible, non-repeating input (/dev/urandom).
# usage: benches/rss-by-size.sh [SIZES_MiB...]   (default: 256 1024 4096); needs ~SIZE of disk.
set -euo pipefail
BIN=${REPO_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/repo}
W=$(mktemp -d /tmp/repo-rss.XXXXXX)
trap 'rm -rf "$W"' EXIT
export REPO_PASSWORD=rss REPO_CACHE_DIR=$W/cache
printf '%-10s %-22s %-22s\n' "MiB" "backup s / peak RSS" "restore s / peak RSS"
for mib in "${@:-256 1024 4096}"; do
  for m in $mib; do
    rm -rf "$W/r" "$W/cache"
    "$BIN" -q -r "$W/r" init
    b=$( { head -c $((m << 20)) /dev/urandom | /usr/bin/time -f '%e %M' "$BIN" -q -r "$W/r" backup --stdin --name s; } 2>&1 | tail -1)
    r=$( { /usr/bin/time -f '%e %M' "$BIN" -q -r "$W/r" restore latest > /dev/null; } 2>&1 | tail -1)
    printf '%-10s %-22s %-22s\n' "$m" "${b% *} s / $(( ${b#* } / 1024 )) MiB" "${r% *} s / $(( ${r#* } / 1024 )) MiB"
  done
done
