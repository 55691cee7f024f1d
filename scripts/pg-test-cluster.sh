#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests (the store's tests on their second backend, the e2e
# tests of `database_url = "postgres://..."`). No Docker: the Debian package's binaries
# (apt-get install postgresql), initdb into a fresh temporary directory, the server on
# 127.0.0.1:PORT only, trust authentication for the role `hookflash`.
#
# Usage: scripts/pg-test-cluster.sh PORT
#   Prints `postgres://hookflash@127.0.0.1:PORT/postgres` on one line once the server accepts
#   connections, and on a second line `ca=PATH`: the certificate of a throwaway CA that signed
#   the server's TLS certificate (for 127.0.0.1 and localhost; `ca=` and no TLS without
#   openssl). Then keeps the cluster until its standard input closes (the process that started
#   it ended or closed the pipe), then stops the server and deletes the directory.
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
ssl_opts=""
ca=""
# A throwaway CA and a server certificate it signs (webpki refuses a self-signed leaf).
if command -v openssl >/dev/null 2>&1 &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hookflash test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1 &&
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1 &&
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf" &&
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/data/server.crt" >/dev/null 2>&1; then
  chmod 0644 "$dir/ca.crt"
  chmod 0600 "$dir/data/server.key"
  if [ ${#as_pg[@]} -gt 0 ]; then chown postgres: "$dir/data/server.key" "$dir/data/server.crt"; fi
  ssl_opts="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
  ca="$dir/ca.crt"
fi
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 $ssl_opts" \
  start >/dev/null || {
  cat "$dir/server.log" >&2
  exit 1
}
echo "postgres://hookflash@127.0.0.1:$port/postgres"
echo "ca=$ca"
# Until the starter goes away.
cat >/dev/null || true
