#!/usr/bin/env bash
# Builds repo (release) and runs the main job on the local-filesystem default: init an
# encrypted repository, back up a PostgreSQL dump twice (deduplicated), list, restore, verify.
# Uses a throwaway PostgreSQL cluster when the server binaries are installed, else a
# generated stream standing in for a dump.  Usage: bash scripts/demo.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH=$HOME/.cargo/bin:$PATH ;; esac
cargo build --release --locked
REPO_BIN=$PWD/target/release/repo
W=${1:-$(mktemp -d /tmp/repo-demo.XXXXXX)}
mkdir -p "$W"; chmod 755 "$W"
export REPO_REPOSITORY=$W/repo REPO_PASSWORD_FILE=$W/password REPO_CACHE_DIR=$W/cache
head -c 24 /dev/urandom | base64 > "$REPO_PASSWORD_FILE"
export PGBIN=/usr/lib/postgresql/15/bin W
dump() { head -c 64000000 /dev/zero | tr '\0' 'x' | sed "s/^/$1/"; }
if [ -x $PGBIN/initdb ] && id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  chown postgres "$W"
  runuser -u postgres -- $PGBIN/initdb -D "$W/pg" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- $PGBIN/pg_ctl -D "$W/pg" -o "-c listen_addresses= -k $W -p 5433" -l "$W/pg.log" -w start >/dev/null
  trap 'runuser -u postgres -- $PGBIN/pg_ctl -D "$W/pg" -m immediate stop >/dev/null' EXIT
  runuser -u postgres -- $PGBIN/createdb -h "$W" -p 5433 -U postgres app
  runuser -u postgres -- $PGBIN/pgbench -h "$W" -p 5433 -U postgres -i -s 5 -q app 2>/dev/null
  dump() { runuser -u postgres -- $PGBIN/pg_dump -h "$W" -p 5433 -U postgres -Fc -Z0 app; }
  echo "== backing up a real pg_dump -Fc -Z0 of a pgbench database"
else
  echo "== PostgreSQL not installed: backing up a generated stream instead"
fi
"$REPO_BIN" init
dump demo | "$REPO_BIN" backup --stdin --name postgres/app --tag daily
if [ -x $PGBIN/initdb ] && id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- $PGBIN/pgbench -h "$W" -p 5433 -U postgres -t 200 app >/dev/null 2>&1
fi
"$REPO_BIN" backup --name postgres/app -- bash -c "$(declare -f dump); dump demo2"
"$REPO_BIN" snapshots
"$REPO_BIN" restore latest --name postgres/app -o "$W/restored.dump"
echo "restored $(stat -c %s "$W/restored.dump") bytes to $W/restored.dump"
"$REPO_BIN" stats
if [ -x $PGBIN/initdb ] && id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- $PGBIN/createdb -h "$W" -p 5433 -U postgres copy
  "$REPO_BIN" restore latest --name postgres/app | runuser -u postgres -- $PGBIN/pg_restore -h "$W" -p 5433 -U postgres -d copy
  echo "restored into database copy: $(runuser -u postgres -- $PGBIN/psql -h "$W" -p 5433 -U postgres -At -d copy -c 'SELECT count(*) FROM pgbench_accounts') rows in pgbench_accounts"
  "$REPO_BIN" check --read-data --verify-restore pg --name 'postgres/*' --latest 1
fi
echo "== demo repository: $W/repo"
