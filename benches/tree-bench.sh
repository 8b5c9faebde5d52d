#!/usr/bin/env bash
# tree-bench.sh - file trees beyond run-peers.sh's "tree" series (release build):
#  1. an unchanged re-run (same tree at the same path) with repo, restic and borg;
#  2. many small files (50k files of 1-8 KiB) against tar (uncompressed, piped) and tar czf;
#  3. restore of trees/t1: repo restore --target, restic restore, tar -xzf of tar czf's file;
#  4. a block image via --stdin (1 GiB, half of it zero regions), then a "next week" image
#     with 1% of its blocks rewritten: stored bytes for each.
# Usage: WL=/tmp/wl bash benches/tree-bench.sh   (peers: restic, borg from Debian)
set -euo pipefail
WL=${WL:-/tmp/wl}
OUT=${OUT:-/tmp/tree-bench}
BIN=${REPO_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/repo}
export REPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
rm -rf "$OUT"; mkdir -p "$OUT"
t() { local label=$1; shift; /usr/bin/time -f "$label %e s, %M KB" "$@" 2>&1 >/dev/null | tail -1; }
size() { du -sb "$1" | cut -f1; }

echo "== 1. unchanged re-run of trees/t1 (second backup of the same path)"
"$BIN" -q -r "$OUT/r" init
"$BIN" -q -r "$OUT/r" backup --name t --root "$WL/trees/t1" .
t "repo" "$BIN" -q -r "$OUT/r" backup --name t --root "$WL/trees/t1" .
restic -q -r "$OUT/rs" init --repository-version 2 >/dev/null
restic -q -r "$OUT/rs" backup "$WL/trees/t1" >/dev/null
t "restic" restic -q -r "$OUT/rs" backup "$WL/trees/t1"
borg init -e repokey "$OUT/b" 2>/dev/null
borg create --compression zstd,3 "$OUT/b::a" "$WL/trees/t1"
t "borg-zstd3" borg create --compression zstd,3 "$OUT/b::b" "$WL/trees/t1"

echo "== 3. restore of trees/t1"
tar czf "$OUT/t1.tar.gz" -C "$WL/trees" t1
t "repo restore --target" "$BIN" -q -r "$OUT/r" restore latest --name t --target "$OUT/x1"
t "restic restore" restic -q -r "$OUT/rs" restore latest --target "$OUT/x2"
mkdir -p "$OUT/x3"; t "tar -xzf" tar -xzf "$OUT/t1.tar.gz" -C "$OUT/x3"
diff -r "$WL/trees/t1" "$OUT/x1" && echo "repo restore identical to the source"
rm -rf "$OUT/x1" "$OUT/x2" "$OUT/x3" "$OUT/t1.tar.gz"

echo "== 2. many small files"
S=$OUT/small; mkdir -p "$S"
python3 - "$S" <<'PY'
import os, random, sys
root = sys.argv[1]; r = random.Random(7)
for d in range(200):
    p = os.path.join(root, f"d{d:03}"); os.makedirs(p)
    for f in range(250):
        n = r.randint(1024, 8192)
        with open(os.path.join(p, f"f{f:03}"), "wb") as fh:
            fh.write((b"row %d of table %d; " % (f, d)) * (n // 24) + os.urandom(n // 4))
PY
sync; echo "$(find "$S" -type f | wc -l) files, $(size "$S") bytes"
find "$S" -type f -exec cat {} + >/dev/null
"$BIN" -q -r "$OUT/rsmall" init
t "repo backup" "$BIN" -q -r "$OUT/rsmall" backup --name small --root "$S" .
t "tar cf - | cat" sh -c "tar cf - -C '$S' . | cat >/dev/null"
t "tar czf" tar czf "$OUT/small.tar.gz" -C "$S" .
t "repo backup, unchanged" "$BIN" -q -r "$OUT/rsmall" backup --name small --root "$S" .
echo "repo $(size "$OUT/rsmall") bytes; tar.gz $(size "$OUT/small.tar.gz") bytes"
rm -rf "$S" "$OUT/small.tar.gz"

echo "== 4. block image via --stdin"
python3 - "$OUT/img1" "$OUT/img2" <<'PY'
import os, random, sys
r = random.Random(3); mib = 1 << 20
blocks = []
for i in range(1024):                      # 1 GiB: half zero regions, half data
    blocks.append(None if (i // 16) % 2 else os.urandom(mib // 2) + bytes(mib // 2))
with open(sys.argv[1], "wb") as f:
    for b in blocks: f.write(b if b else bytes(mib))
for i in r.sample(range(1024 * 256), 1024 * 256 // 100):   # rewrite 1% of the 4 KiB blocks
    j = i // 256
    if blocks[j] is not None:
        b = bytearray(blocks[j]); o = (i % 256) * 4096; b[o:o + 4096] = os.urandom(4096); blocks[j] = bytes(b)
with open(sys.argv[2], "wb") as f:
    for b in blocks: f.write(b if b else bytes(mib))
PY
"$BIN" -q -r "$OUT/rimg" init
t "repo week 1" sh -c "'$BIN' -q -r '$OUT/rimg' backup --name images/lv --stdin < '$OUT/img1'"
a=$(size "$OUT/rimg"); echo "week 1: repo $a bytes for 1 GiB (256 MiB random data)"
t "repo week 2" sh -c "'$BIN' -q -r '$OUT/rimg' backup --name images/lv --stdin < '$OUT/img2'"
b=$(size "$OUT/rimg"); echo "week 2: +$((b - a)) bytes"
restic -q -r "$OUT/rsimg" init --repository-version 2 >/dev/null
restic -q -r "$OUT/rsimg" backup --stdin --stdin-filename img < "$OUT/img1" >/dev/null; a=$(size "$OUT/rsimg")
restic -q -r "$OUT/rsimg" backup --stdin --stdin-filename img < "$OUT/img2" >/dev/null; b=$(size "$OUT/rsimg")
echo "restic: week 1 $a bytes, week 2 +$((b - a)) bytes"
rm -rf "$OUT"
