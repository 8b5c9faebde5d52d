# Adapter for ../shared/bench/run-peers.sh (pass as EXTRA_TOOLS=benches/repo-adapter.sh).
# Config "repo": the release binary with the defaults a user gets (encrypted, default chunker).
# Configs "repo-c4k" … "repo-c1m" (average chunk size 4 KiB … 1 MiB; min = avg/4, max = 4 avg): the chunk-size experiment.
# REPO_BIN overrides the binary (default: target/release/repo beside this file).
_REPO_BIN=${REPO_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/repo}
export _REPO_BIN
_repo_env() {
  export REPO_PASSWORD=$BENCH_PASSWORD
  export REPO_CACHE_DIR=$BENCH_STATE/cache
}
_repo_backup_stdin() { exec "$_REPO_BIN" -q -r "$1" backup --stdin --name "$2" --host bench; }
_repo_restore_latest() { exec "$_REPO_BIN" -q -r "$1" restore latest --name "$2"; }

repo_version() { "$_REPO_BIN" --version; }
repo_env() { _repo_env; }
repo_init() { exec "$_REPO_BIN" -q -r "$1" init; }
repo_backup_stdin() { _repo_backup_stdin "$@"; }
repo_restore_latest() { _repo_restore_latest "$@"; }
# The tree series: DIR is stored relative to itself, as with --root on an LVM snapshot mount.
repo_backup_dir() { exec "$_REPO_BIN" -q -r "$1" backup --name tree --host bench --root "$2" .; }

for _avg in 4k:4096 8k:8192 16k:16384 32k:32768 64k:65536 256k:262144 1m:1048576; do
  _n=${_avg%%:*}; _b=${_avg#*:}
  eval "repo_c${_n}_version() { echo \"\$(\"\$_REPO_BIN\" --version) avg=${_b}\"; }"
  eval "repo_c${_n}_env() { _repo_env; }"
  eval "repo_c${_n}_init() { exec \"\$_REPO_BIN\" -q -r \"\$1\" init --chunk-avg ${_b}; }"
  eval "repo_c${_n}_backup_stdin() { _repo_backup_stdin \"\$@\"; }"
  eval "repo_c${_n}_restore_latest() { _repo_restore_latest \"\$@\"; }"
done

# Pack-size experiment: "repo-p4m", "repo-p64m" (default chunker; pack target 4 MiB / 64 MiB).
for _p in 4m:4194304 64m:67108864; do
  _n=${_p%%:*}; _b=${_p#*:}
  eval "repo_p${_n}_version() { echo \"\$(\"\$_REPO_BIN\" --version) pack=${_b}\"; }"
  eval "repo_p${_n}_env() { _repo_env; }"
  eval "repo_p${_n}_init() { exec \"\$_REPO_BIN\" -q -r \"\$1\" init --pack-size ${_b}; }"
  eval "repo_p${_n}_backup_stdin() { _repo_backup_stdin \"\$@\"; }"
  eval "repo_p${_n}_restore_latest() { _repo_restore_latest \"\$@\"; }"
done
