#!/usr/bin/env bash
# PostgreSQL for the demo, the tests, the soak and the benches: Debian's `postgresql`
# package, its default cluster, a password for the `postgres` role on 127.0.0.1, and the
# databases `outbox`, `outbox_test`, `outbox_soak` and `outbox_bench`. Idempotent: `start`
# installs, creates and starts only what is missing.
#   scripts/pg.sh start|stop|status|url
set -euo pipefail

PG_PORT="${PG_PORT:-5432}"
PG_PASSWORD="${PG_PASSWORD:-postgres}"
DATABASES=(outbox outbox_test outbox_soak outbox_bench)

log() { echo "pg: $*" >&2; }

ensure_installed() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  fi
}

pg_version() { ls /usr/lib/postgresql | sort -V | tail -n 1; }

ensure_cluster() {
  local v; v=$(pg_version)
  if ! pg_lsclusters -h | awk -v v="$v" '$1==v && $2=="main"' | grep -q .; then
    log "creating cluster $v/main"
    pg_createcluster "$v" main --port "$PG_PORT" >/dev/null
  fi
  local conf="/etc/postgresql/$v/main/conf.d/outbox-worker.conf"
  if [ ! -f "$conf" ]; then
    # Several workers, the tests and the benches connect at once.
    printf "max_connections = 300\nlisten_addresses = '127.0.0.1'\nport = %s\n" "$PG_PORT" >"$conf"
  fi
}

is_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

start() {
  ensure_installed
  ensure_cluster
  local v; v=$(pg_version)
  if ! is_up; then
    pg_ctlcluster "$v" main start
  fi
  for _ in $(seq 1 60); do is_up && break; sleep 0.5; done
  is_up || { log "PostgreSQL did not come up"; tail -n 50 "/var/log/postgresql/postgresql-$v-main.log" >&2; exit 1; }
  runuser -u postgres -- psql -q -p "$PG_PORT" -v ON_ERROR_STOP=1 \
    -c "ALTER ROLE postgres PASSWORD '$PG_PASSWORD'" >/dev/null
  for db in "${DATABASES[@]}"; do
    if ! runuser -u postgres -- psql -p "$PG_PORT" -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
      runuser -u postgres -- createdb -p "$PG_PORT" "$db"
    fi
  done
  echo "postgresql $v listening on $(url)"
}

stop() {
  local v; v=$(pg_version 2>/dev/null || true)
  [ -n "$v" ] && is_up && pg_ctlcluster "$v" main stop || true
  log "stopped"
}

# Loopback without TLS: measured here, TLS (sslmode=prefer, rustls) cut the worker's
# database path from ~14k to ~4k events/s; tests/security.rs covers the TLS modes.
url() { echo "postgres://postgres:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${1:-outbox}?sslmode=disable"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) is_up ;;
  url) url "${2:-outbox}" ;;
  *) echo "usage: $0 start|stop|status|url [db]" >&2; exit 2 ;;
esac
