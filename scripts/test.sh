#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian machine (PostgreSQL 15
# server binaries), then runs every test. Usage: bash scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v runuser >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || { echo "no postgres user after installing PostgreSQL" >&2; exit 1; }
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH=$HOME/.cargo/bin:$PATH ;; esac
# benches must keep compiling; the tests run last so that their summary closes the output
cargo build --locked --benches
cargo test --locked "$@"
