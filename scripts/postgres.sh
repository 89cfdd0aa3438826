#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster for tests: start prints the admin DSN on
# stdout; stop takes the directory start made. Runs the server as the
# 'postgres' user (initdb refuses root), on 127.0.0.1 only, trust auth.
#   dir=$(mktemp -d); dsn=$(scripts/postgres.sh start "$dir"); ...; scripts/postgres.sh stop "$dir"
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?start|stop}
dir=${2:?directory}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
  [ -x "$PGBIN/initdb" ] || { echo "postgres.sh: $PGBIN/initdb missing (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$dir/data" "$dir/sock"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  chmod 700 "$dir/data"
  as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  # synchronous_commit and fsync stay at their durable defaults (on).
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  echo "$port" >"$dir/port"
  echo "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"
  ;;
stop)
  [ -d "$dir/data" ] && as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
