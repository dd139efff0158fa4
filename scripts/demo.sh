#!/usr/bin/env bash
# pgfleet demo: starts a throwaway local PostgreSQL and the pooler with a demo tenant, then
# prints how to connect. Ctrl-C stops both and removes everything it created.
#
#   ./scripts/demo.sh            # ports 5432 (session) and 6543 (pooled) on 127.0.0.1
#   SESSION_PORT=15432 POOLED_PORT=16543 ADMIN_PORT=18080 ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SESSION_PORT=${SESSION_PORT:-5432}
POOLED_PORT=${POOLED_PORT:-6543}
ADMIN_PORT=${ADMIN_PORT:-8080}
PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)}
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
  echo "PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install postgresql) or set PG_BIN" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

echo "building pgfleet-pooler (release)..."
cargo build --release -q -p pgfleet-pooler

work=$(mktemp -d /tmp/pgfleet-demo.XXXXXX)
chmod 755 "$work"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo 55499)
pooler_pid=""
cleanup() {
  [[ -n "$pooler_pid" ]] && kill "$pooler_pid" 2>/dev/null && wait "$pooler_pid" 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/data" "$work/tenants"
[[ $(id -u) == 0 ]] && chown -R postgres "$work/data"
echo "postgres" > "$work/pw"; chmod 644 "$work/pw"
as_pg "$PG_BIN/initdb" -D "$work/data" -U postgres --pwfile="$work/pw" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work/data'
CONF
as_pg "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/data/server.log" -w start >/dev/null
"$PG_BIN/psql" -h "$work/data" -p "$pg_port" -U postgres -qX \
  -c "CREATE ROLE demo LOGIN PASSWORD 'demo'" -c "CREATE DATABASE demo OWNER demo" >/dev/null

cat > "$work/tenants/demo.yaml" <<DOC
# The demo tenant: clients connect as demo.acme. Edit this file while the demo runs:
# the pooler reloads it without dropping connections.
externalId: acme
upstream: {host: 127.0.0.1, port: $pg_port, database: demo}
mode: transaction
defaultPoolSize: 10
users:
  - {name: demo, password: demo}
DOC

./target/release/pgfleet-pooler --tenants-dir "$work/tenants" --listen 127.0.0.1 \
  --session-port "$SESSION_PORT" --pooled-port "$POOLED_PORT" --admin-port "$ADMIN_PORT" &
pooler_pid=$!
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$POOLED_PORT") 2>/dev/null && break
  kill -0 "$pooler_pid" 2>/dev/null || { echo "the pooler failed to start" >&2; exit 1; }
  sleep 0.1
done

cat <<MSG

pgfleet is running with a demo tenant "acme" (PostgreSQL $pg_port in $work).

  transaction pooling:  PGPASSWORD=demo psql "host=127.0.0.1 port=$POOLED_PORT user=demo.acme dbname=demo"
  session pooling:      PGPASSWORD=demo psql "host=127.0.0.1 port=$SESSION_PORT user=demo.acme dbname=demo"

  metrics and status:   curl http://127.0.0.1:$ADMIN_PORT/metrics   curl http://127.0.0.1:$ADMIN_PORT/status

Tenant document: $work/tenants/demo.yaml (edits are picked up live). Ctrl-C to stop.
MSG
wait "$pooler_pid"
