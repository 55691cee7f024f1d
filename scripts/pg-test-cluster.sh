#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests (the store's tests on their second backend, the e2e
# tests of `database_url = "postgres://..."`). No Docker: the Debian package's binaries
# (apt-get install postgresql), initdb into a fresh temporary directory, the server on
# 127.0.0.1:PORT only, trust authentication for the role `hookflash`.
#
# Usage: scripts/pg-test-cluster.sh PORT
#   Prints `postgres://hookflash@127.0.0.1:PORT/postgres` on one line once the server accepts
#   connections, then keeps the cluster until its standard input closes (the process that
#   started it ended or closed the pipe), then stops the server and deletes the directory.
#
# PostgreSQL refuses to run as root: as root (CI runs as root on a fresh Debian 12) the server
# runs as the `postgres` user the package created. Fast and not durable on purpose (fsync off).
set -euo pipefail

port=${1:?usage: pg-test-cluster.sh PORT}
bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "pg-test-cluster: no PostgreSQL server binaries (apt-get install postgresql, or set PG_BINDIR)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/hf-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

"${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -U hookflash -A trust -E UTF8 --no-locale \
  >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
  start >/dev/null || {
  cat "$dir/server.log" >&2
  exit 1
}
echo "postgres://hookflash@127.0.0.1:$port/postgres"
# Until the starter goes away.
cat >/dev/null || true
