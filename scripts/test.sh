#!/usr/bin/env bash
# The whole test suite: the fast tier (what `cargo test` runs) and the system tier
# (`--features system-tests`, tests/it/main.rs). Installs what the tests need on a fresh Debian machine (PostgreSQL 15
# server binaries, OpenSSH's sshd and ssh client, btrfs-progs, lvm2, attr, acl, and moto_server, an S3-compatible server,
# kubernetes-validate, a schema validator for the manifests in deploy/, and prometheus_client, whose text
# parser reads the metrics files back, into target/test-tools/venv), then runs every test. Usage: bash scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v runuser >/dev/null || need+=(util-linux)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v rclone >/dev/null || need+=(rclone)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# file trees: btrfs on a loop device, LVM metadata on a loop device, xattrs and ACLs read back
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
command -v pvcreate >/dev/null || need+=(lvm2)
command -v getfattr >/dev/null || need+=(attr)
command -v getfacl >/dev/null || need+=(acl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
venv=target/test-tools/venv
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "installing moto_server into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]==5.*'
fi
[ -x "$venv/bin/kubernetes-validate" ] || "$venv/bin/pip" install -q 'kubernetes-validate==1.*'
"$venv/bin/python" -c 'import prometheus_client' 2>/dev/null || "$venv/bin/pip" install -q 'prometheus_client==0.*'
export REPO_TEST_MOTO_SERVER=$PWD/$venv/bin/moto_server
export REPO_TEST_KUBERNETES_VALIDATE=$PWD/$venv/bin/kubernetes-validate
export REPO_TEST_PYTHON=$PWD/$venv/bin/python
id postgres >/dev/null 2>&1 || { echo "no postgres user after installing PostgreSQL" >&2; exit 1; }
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH=$HOME/.cargo/bin:$PATH ;; esac
# benches must keep compiling; the tests run last so that their summary closes the output
cargo build --locked --benches
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --lib --bins --tests --features system-tests "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# one closing line for the whole suite
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d ignored\n", p, f, s }' "$log"
exit "$rc"
