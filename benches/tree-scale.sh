#!/usr/bin/env bash
# tree-scale.sh - tree commands against the number of files: seconds and peak RSS of the
# first backup, an unchanged re-backup, a re-backup after one file changed, `ls`, `export`
# of the tree as a .tar.zst, and `restore --target`.
#
# The files (one line each, 1,000 per directory) live on a loop-mounted ext4 image with inline
# data, so a million files fit in about 300 MB and the host disk's state does not decide the
# restore time. Needs root (mount). Each binary gets its own repository and the same tree.
#
# Usage: FILES="100000 1000000" bash benches/tree-scale.sh [BIN ...]
#        RESTIC=1 adds restic's backup and unchanged re-backup of the same tree.
set -euo pipefail
FILES=${FILES:-"100000 300000"}
OUT=${OUT:-/tmp/tree-scale}
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$(cd "$(dirname "$0")/.." && pwd)/target/release/repo")
export REPO_PASSWORD=bench RESTIC_PASSWORD=bench
t() { local label=$1; shift; /usr/bin/time -f "$label %e s %M KB" "$@" 2>&1 >/dev/null | tail -1; }

cleanup() { umount "$OUT/fs" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
rm -rf "$OUT"; mkdir -p "$OUT/fs"
truncate -s 6G "$OUT/fs.img"
mkfs.ext4 -q -F -O inline_data -I 256 -N 4000000 "$OUT/fs.img"
mount -o loop,noatime "$OUT/fs.img" "$OUT/fs"
FS=$OUT/fs

for n in $FILES; do
  echo "== $n files"
  SRC=$FS/src-$n
  python3 - "$SRC" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, "f%04d" % (i % 1000)), "w") as f:
        f.write("file %d of the tree\n" % i)
PY
  for bin in "${BINS[@]}"; do
    tag=$(basename "$bin")
    R=$OUT/repo-$tag-$n
    "$bin" -q -r "$R" init --kdf-memory 1024 >/dev/null
    # every binary reads the tree from a cold page cache (the first one would find it warm)
    sync; echo 3 > /proc/sys/vm/drop_caches
    t "$tag $n backup" "$bin" -q -r "$R" backup --name t --root "$SRC" .
    t "$tag $n re-backup unchanged" "$bin" -q -r "$R" backup --name t --root "$SRC" .
    echo changed >> "$SRC/d0000/f0000"
    t "$tag $n re-backup one changed" "$bin" -q -r "$R" backup --name t --root "$SRC" .
    t "$tag $n ls" "$bin" -q -r "$R" ls latest --name t
    t "$tag $n export tar.zst" "$bin" -q -r "$R" export --name t --latest 1 --format zst "$OUT/export"
    rm -rf "$OUT/export"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t "$tag $n restore" "$bin" -q -r "$R" restore latest --name t --target "$FS/out"
    [ "$(find "$FS/out" -type f | wc -l)" = "$n" ] || echo "$tag $n: restore count differs"
    rm -rf "$FS/out" "$R"
  done
  if [ "${RESTIC:-}" = 1 ]; then
    restic -q -r "$OUT/restic-$n" init >/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches
    t "restic $n backup" restic -q -r "$OUT/restic-$n" backup "$SRC"
    t "restic $n re-backup unchanged" restic -q -r "$OUT/restic-$n" backup "$SRC"
    rm -rf "$OUT/restic-$n"
  fi
  rm -rf "$SRC"
done
