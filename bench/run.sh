#!/usr/bin/env bash
# pgfleet benchmark: pgbench -S (simple and extended protocol, transaction pooling, pool size
# 10) against a throwaway PostgreSQL directly, through pgfleet and through PgBouncer, in one
# run; then memory per idle client with IDLE_CLIENTS logged-in idle clients on each pooler.
# Prints the tables and writes them, with the machine they ran on, to $OUT. See bench/README.md.
#
#   ./bench/run.sh
#   DURATION=30 CLIENTS="10 200" PROTOCOLS=extended IDLE_CLIENTS=5000 ./bench/run.sh
#
# Exits non-zero if any measurement failed (the table marks it FAILED); everything it started
# is stopped and removed on exit.
set -euo pipefail
export LC_ALL=C

invoked_from=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-5}
# Each cell runs REPEAT times, the targets interleaved in an order that rotates with each
# repetition, and the table shows the median: on a small shared machine one run is too noisy
# to compare.
REPEAT=${REPEAT:-5}
CLIENTS=${CLIENTS:-"1 10 50 200"}
PROTOCOLS=${PROTOCOLS:-"simple extended"}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
WARMUP=${WARMUP:-3}
SCALE=${SCALE:-10}
KEEP_WORK=${KEEP_WORK:-0}
# pgfleet worker threads. PgBouncer is single-threaded; on a small machine that also runs
# PostgreSQL and pgbench, one pgfleet worker is the like-for-like comparison.
PGFLEET_WORKERS=${PGFLEET_WORKERS:-1}
if [[ -z ${OUT:-} ]]; then
  OUT=$root/bench/RESULTS.md
elif [[ $OUT != /* ]]; then
  OUT=$invoked_from/$OUT
fi
POOL_SIZE=10
MAX_CLIENTS=20000

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Knobs
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$DURATION" && ((DURATION > 0)) || die "DURATION must be a positive number of seconds, got '$DURATION'"
is_uint "$REPEAT" && ((REPEAT > 0)) || die "REPEAT must be a positive number, got '$REPEAT'"
is_uint "$WARMUP" || die "WARMUP must be a number of seconds (0 to skip), got '$WARMUP'"
is_uint "$IDLE_CLIENTS" || die "IDLE_CLIENTS must be a number (0 to skip), got '$IDLE_CLIENTS'"
is_uint "$SCALE" && ((SCALE > 0)) || die "SCALE must be a positive number, got '$SCALE'"
read -r -a client_counts <<<"$CLIENTS"
read -r -a protocols <<<"$PROTOCOLS"
((${#client_counts[@]} > 0)) || die "CLIENTS is empty"
((${#protocols[@]} > 0)) || die "PROTOCOLS is empty"
for n in "${client_counts[@]}"; do
  is_uint "$n" && ((n > 0)) || die "CLIENTS must be positive numbers, got '$n'"
done
for p in "${protocols[@]}"; do
  [[ $p == simple || $p == extended || $p == prepared ]] ||
    die "PROTOCOLS entries must be simple, extended or prepared, got '$p'"
done

# ---------------------------------------------------------------------------------------------
# Prerequisites
is_root=0
[[ $(id -u) == 0 ]] && is_root=1

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || true)}
if [[ -z $PG_BIN || ! -x $PG_BIN/initdb ]]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z $PG_BIN || ! -x $PG_BIN/initdb || ! -x $PG_BIN/pg_ctl ]]; then
  die "PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install postgresql postgresql-contrib) or set PG_BIN"
fi
find_pg_tool() {
  if [[ -x $PG_BIN/$1 ]]; then echo "$PG_BIN/$1"; else command -v "$1" || true; fi
}
PGBENCH=$(find_pg_tool pgbench)
PSQL=$(find_pg_tool psql)
[[ -n $PGBENCH ]] || die "pgbench not found (Debian/Ubuntu: apt-get install postgresql-contrib, or postgresql >= 10)"
[[ -n $PSQL ]] || die "psql not found (Debian/Ubuntu: apt-get install postgresql-client)"

find_pgbouncer() { command -v pgbouncer || { [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer; } || true; }
PGBOUNCER=$(find_pgbouncer)
if [[ -z $PGBOUNCER ]]; then
  if ((is_root)) && command -v apt-get >/dev/null; then
    log "installing pgbouncer (apt-get)..."
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >&2
    PGBOUNCER=$(find_pgbouncer)
  fi
  [[ -n $PGBOUNCER ]] || die "pgbouncer not found: install it (Debian/Ubuntu: sudo apt-get install pgbouncer) and re-run"
fi
if ((is_root)); then
  # The Debian package starts a system PgBouncer on install; this benchmark runs its own.
  systemctl stop pgbouncer >/dev/null 2>&1 || true
  service pgbouncer stop >/dev/null 2>&1 || true
  id -u postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user (created by the postgresql package) to run PostgreSQL and PgBouncer"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
for tool in getconf timeout mkfifo awk sed grep; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
CLK_TCK=$(getconf CLK_TCK)

# Every idle client is a socket in the client process and in the pooler.
need_fds=$((2 * IDLE_CLIENTS + 1000))
fd_limit=$(ulimit -n)
if [[ $fd_limit != unlimited ]] && ((fd_limit < 65536)); then
  ulimit -n 65536 2>/dev/null || {
    hard=$(ulimit -Hn)
    if [[ $hard == unlimited ]]; then ulimit -n 65536 2>/dev/null || true; else ulimit -n "$hard" 2>/dev/null || true; fi
  }
fi
fd_limit=$(ulimit -n)
if [[ $fd_limit != unlimited ]] && ((fd_limit < need_fds)); then
  die "the open-file limit is $fd_limit (hard limit $(ulimit -Hn)); IDLE_CLIENTS=$IDLE_CLIENTS needs at least $need_fds: raise it (as root, or via /etc/security/limits.conf) or lower IDLE_CLIENTS"
fi

# ---------------------------------------------------------------------------------------------
# Build
log "building pgfleet-pooler and the idle_clients example (release)..."
cargo build --release -q -p pgfleet-pooler --bin pgfleet-pooler --example idle_clients
target_dir=${CARGO_TARGET_DIR:-$root/target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
POOLER_BIN=$target_dir/release/pgfleet-pooler
IDLE_BIN=$target_dir/release/examples/idle_clients
[[ -x $POOLER_BIN && -x $IDLE_BIN ]] || die "build output not found under $target_dir/release"

# ---------------------------------------------------------------------------------------------
# Cleanup of everything started below
tmp_base=${TMPDIR:-/tmp}
((is_root)) && tmp_base=/tmp # the postgres user must reach it
work=$(mktemp -d "$tmp_base/pgfleet-bench.XXXXXX")
chmod 755 "$work"
pg_data=$work/pg/data
pgfleet_pid=""
pgbouncer_pid=""
idle_pid=""
idle_fd=""
bench_pid=""
pg_started=0

as_pg() { if ((is_root)); then runuser -u postgres -- "$@"; else "$@"; fi; }

stop_pid() { # pid [seconds]: SIGTERM, then SIGKILL if it is still there
  local pid=$1 tries=$((${2:-10} * 10))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && ((tries-- > 0)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $idle_fd ]]; then exec {idle_fd}>&-; fi
  [[ -n $bench_pid ]] && stop_pid "$bench_pid" 5
  [[ -n $idle_pid ]] && stop_pid "$idle_pid" 5
  [[ -n $pgfleet_pid ]] && stop_pid "$pgfleet_pid" 10
  [[ -n $pgbouncer_pid ]] && stop_pid "$pgbouncer_pid" 10
  if ((pg_started)); then
    as_pg "$PG_BIN/pg_ctl" -D "$pg_data" -m fast -t 30 stop >/dev/null 2>&1 ||
      { [[ -f $pg_data/postmaster.pid ]] && stop_pid "$(head -n 1 "$pg_data/postmaster.pid")" 10; }
  fi
  wait 2>/dev/null
  if [[ $KEEP_WORK == 1 ]]; then
    log "kept the work directory $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers
reserved_ports=" "
free_port() { # sets REPLY to a free loopback port not handed out before
  local port
  for _ in $(seq 1 200); do
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
      echo $((20000 + RANDOM % 40000)))
    [[ $reserved_ports == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      reserved_ports+="$port "
      REPLY=$port
      return 0
    fi
  done
  die "no free loopback port found"
}

wait_for_port() { # port pid what
  local port=$1 pid=$2 what=$3
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  log "$what is not listening on $port after 30s"
  return 1
}

check_login() { # port user: one query through the pooler, retried for up to 15s
  local port=$1 user=$2 out=""
  for _ in $(seq 1 30); do
    if out=$(PGPASSWORD=bench PGCONNECT_TIMEOUT=5 timeout 20 "$PSQL" \
      "host=127.0.0.1 port=$port user=$user dbname=bench" -qAtX -c 'select 1' 2>&1); then
      [[ $out == 1 ]] && return 0
    fi
    sleep 0.5
  done
  log "cannot run a query as $user on port $port: $out"
  return 1
}

switches() { # voluntary + involuntary context switches of a process's threads
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'
}

cpu_ticks() { # utime + stime of a process, in clock ticks; empty if it is gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  # Fields after "(comm)": state is $1, utime (field 14) is $12, stime (field 15) is $13.
  awk '{print $12 + $13}' <<<"${stat##*) }"
}

rss_kib() { # VmRSS of a process in KiB; empty if it is gone
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

calc() { awk "BEGIN { printf \"%s\", $1 }"; }

fmt() { # value decimals: "—" for an empty value
  if [[ -z $1 ]]; then printf '—'; else awk -v v="$1" -v d="$2" 'BEGIN { printf "%." d "f", v }'; fi
}

ratio() { # a b [decimals]: a/b (two decimals by default), "—" if either is missing
  if [[ -z $1 || -z $2 ]]; then
    printf '—'
  else
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%." d "f", a / b; else printf "—" }'
  fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
free_port
pg_port=$REPLY
mkdir -p "$work/pg"
((is_root)) && chown postgres: "$work/pg"
echo postgres >"$work/pg/pw"
chmod 644 "$work/pg/pw"
log "starting PostgreSQL ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$pg_port..."
as_pg "$PG_BIN/initdb" -D "$pg_data" -U postgres --pwfile="$work/pg/pw" --auth-host=scram-sha-256 \
  --auth-local=trust -E UTF8 --locale=C >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; die "initdb failed"; }
cat >>"$pg_data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work/pg'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
password_encryption = 'scram-sha-256'
CONF
pg_started=1
as_pg "$PG_BIN/pg_ctl" -D "$pg_data" -l "$work/pg/server.log" -w -t 120 start >/dev/null ||
  { tail -n 30 "$work/pg/server.log" >&2; die "PostgreSQL did not start"; }
"$PSQL" -h "$work/pg" -p "$pg_port" -U postgres -qX -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
log "initializing pgbench tables (scale $SCALE)..."
PGPASSWORD=bench "$PGBENCH" -h 127.0.0.1 -p "$pg_port" -U bench -i -s "$SCALE" -q bench \
  >"$work/pgbench-init.log" 2>&1 || { cat "$work/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------------------------------------
# pgfleet
free_port
pgfleet_session_port=$REPLY
free_port
pgfleet_port=$REPLY
mkdir -p "$work/tenants"
cat >"$work/tenants/bench.yaml" <<DOC
externalId: bench
upstream: {host: 127.0.0.1, port: $pg_port, database: bench}
mode: transaction
defaultPoolSize: $POOL_SIZE
defaultMaxClients: $MAX_CLIENTS
checkoutTimeout: 60s
users:
  - {name: bench, password: bench}
DOC
log "starting pgfleet on 127.0.0.1:$pgfleet_port..."
# In a session of its own, as PgBouncer (-d) and PostgreSQL's processes are: with the kernel's
# autogroup scheduling (sched_autogroup_enabled), a session shares its CPU as one group, so a
# pooler left in this script's session would split a share with pgbench while PgBouncer had one
# to itself. setsid execs in place here (a background job of a script leads no process group),
# so $! stays the pooler's PID.
setsid "$POOLER_BIN" --tenants-dir "$work/tenants" --listen 127.0.0.1 \
  --session-port "$pgfleet_session_port" --pooled-port "$pgfleet_port" --log warn \
  --workers "$PGFLEET_WORKERS" --admin-port 0 \
  </dev/null >"$work/pgfleet.log" 2>&1 &
pgfleet_pid=$!
if ! wait_for_port "$pgfleet_port" "$pgfleet_pid" pgfleet || ! check_login "$pgfleet_port" bench.bench; then
  tail -n 30 "$work/pgfleet.log" >&2
  die "pgfleet did not start"
fi
[[ $(cat "/proc/$pgfleet_pid/comm" 2>/dev/null) == pgfleet-pooler ]] ||
  die "process $pgfleet_pid is not the pooler (did setsid fork?): its CPU would not be measured"

# ---------------------------------------------------------------------------------------------
# PgBouncer, with the same pool settings
free_port
pgbouncer_port=$REPLY
pgb=$work/pgbouncer
mkdir -p "$pgb"
printf '"bench" "bench"\n' >"$pgb/userlist.txt"
cat >"$pgb/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $pgb/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENTS
max_db_connections = $POOL_SIZE
logfile = $pgb/pgbouncer.log
pidfile = $pgb/pgbouncer.pid
; pgfleet runs with --log warn: do not log every login either
log_connections = 0
log_disconnections = 0
INI
chmod 600 "$pgb/userlist.txt" "$pgb/pgbouncer.ini"
((is_root)) && chown -R postgres: "$pgb"
log "starting PgBouncer ($("$PGBOUNCER" --version 2>&1 | sed -n 1p)) on 127.0.0.1:$pgbouncer_port..."
# As root, PgBouncer switches to the postgres user itself (-u): going through runuser would let
# PAM reset the open-file limit raised above.
pgbouncer_user=()
((is_root)) && pgbouncer_user=(-u postgres)
"$PGBOUNCER" -d "${pgbouncer_user[@]}" "$pgb/pgbouncer.ini" >"$work/pgbouncer-start.log" 2>&1 || {
  cat "$work/pgbouncer-start.log" >&2
  tail -n 30 "$pgb/pgbouncer.log" >&2 2>/dev/null
  die "PgBouncer did not start"
}
for _ in $(seq 1 100); do
  [[ -s $pgb/pgbouncer.pid ]] && break
  sleep 0.1
done
pgbouncer_pid=$(cat "$pgb/pgbouncer.pid" 2>/dev/null || true)
if [[ -z $pgbouncer_pid ]] || ! wait_for_port "$pgbouncer_port" "$pgbouncer_pid" PgBouncer ||
  ! check_login "$pgbouncer_port" bench; then
  tail -n 30 "$pgb/pgbouncer.log" >&2 2>/dev/null
  die "PgBouncer did not start"
fi
for pid in "$pgfleet_pid" "$pgbouncer_pid"; do
  limit=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null || true)
  if [[ -n $limit && $limit != unlimited ]] && ((limit < IDLE_CLIENTS + 100)); then
    log "warning: process $pid may open only $limit files, fewer than IDLE_CLIENTS=$IDLE_CLIENTS: the idle-client measurement will fail"
  fi
done

# ---------------------------------------------------------------------------------------------
# Measurements
declare -A port_of=([direct]=$pg_port [pgfleet]=$pgfleet_port [pgbouncer]=$pgbouncer_port)
declare -A user_of=([direct]=bench [pgfleet]=bench.bench [pgbouncer]=bench)
declare -A pid_of=([direct]="" [pgfleet]=$pgfleet_pid [pgbouncer]=$pgbouncer_pid)
targets=(direct pgfleet pgbouncer)
failures=()

# ---------------------------------------------------------------------------------------------
# Memory per idle client. Measured first, on poolers that have served nothing yet: memory freed
# after the throughput runs would otherwise absorb part of the idle clients' allocations.
declare -A RSS0=() RSS1=() IDLE_BYTES=() IDLE_STATUS=()

measure_idle() { # target
  local target=$1 pid=${pid_of[$1]} fifo="$work/idle-$1.in" out="$work/idle-$1.out" err="$work/idle-$1.err"
  local deadline=$((SECONDS + 120 + IDLE_CLIENTS / 20)) ok=0 rc=0 rss0 rss1
  log "connecting $IDLE_CLIENTS idle clients to $target..."
  rss0=$(rss_kib "$pid")
  mkfifo "$fifo"
  : >"$out"
  RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$IDLE_BIN" --host 127.0.0.1 --port "${port_of[$target]}" \
    --user "${user_of[$target]}" --password bench --dbname bench --count "$IDLE_CLIENTS" --concurrency 64 \
    <"$fifo" >"$out" 2>"$err" &
  idle_pid=$!
  exec {idle_fd}>"$fifo" # holds the clients' stdin open; closing it releases them
  while ((SECONDS < deadline)); do
    if grep -q '^connected ' "$out"; then ok=1; break; fi
    kill -0 "$idle_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ((ok)); then
    sleep 2 # let the pooler settle
    rss1=$(rss_kib "$pid")
  fi
  exec {idle_fd}>&-
  idle_fd=""
  for _ in $(seq 1 300); do kill -0 "$idle_pid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$idle_pid" 5
  wait "$idle_pid" 2>/dev/null || rc=$?
  idle_pid=""
  if ((!ok)) || [[ -z $rss0 || -z ${rss1:-} ]]; then
    IDLE_STATUS[$target]=FAILED
    failures+=("idle clients/$target: $(grep -m 1 '^Error' "$err" || grep -m 1 -iE 'error|fail' "$err" ||
      tail -n 1 "$err" || echo 'no output')")
    log "FAILED: $IDLE_CLIENTS idle clients on $target (exit code $rc); idle_clients said:"
    tail -n 15 "$err" | sed 's/^/    /' >&2
    return 0
  fi
  IDLE_STATUS[$target]=ok
  RSS0[$target]=$rss0
  RSS1[$target]=$rss1
  IDLE_BYTES[$target]=$(calc "($rss1 - $rss0) * 1024 / $IDLE_CLIENTS")
  log "$(printf '%-9s  RSS %d KiB -> %d KiB with %d idle clients: %.0f bytes per client' \
    "$target" "$rss0" "$rss1" "$IDLE_CLIENTS" "${IDLE_BYTES[$target]}")"
}

if ((IDLE_CLIENTS > 0)); then
  for target in pgfleet pgbouncer; do
    measure_idle "$target"
    sleep 2
  done
fi

# ---------------------------------------------------------------------------------------------
# Throughput: pgbench -S per protocol and client count, against each target
# TPS, LAT and CPU hold each cell's median; the *_OF_RUN maps hold every run, keyed
# "protocol/clients/target/repetition".
declare -A TPS=() LAT=() CPU=() STATUS=() TPS_OF_RUN=() LAT_OF_RUN=() CPU_OF_RUN=()

median() { # values...: the middle value (the mean of the two middle ones for an even count)
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

pgbench_run() { # target protocol clients seconds output-file: fails like pgbench
  local target=$1 proto=$2 n=$3 seconds=$4 rc=0
  # In the background so that a signal to this script interrupts the wait at once.
  PGPASSWORD=bench timeout -k 10 $((seconds + 60)) "$PGBENCH" -h 127.0.0.1 -p "${port_of[$target]}" \
    -U "${user_of[$target]}" -S -n -T "$seconds" -c "$n" -j $((n < 2 ? n : 2)) -M "$proto" bench \
    </dev/null >"$5" 2>&1 &
  bench_pid=$!
  wait "$bench_pid" || rc=$?
  bench_pid=""
  return "$rc"
}

run_cell() { # protocol clients target repetition
  local proto=$1 n=$2 target=$3 key="$1/$2/$3" rep=$4 pid=${pid_of[$3]} out="" rc=0 cpu0="" cpu1=""
  local tps lat tx sw0=0 sw1=0
  [[ -n $pid ]] && cpu0=$(cpu_ticks "$pid") && sw0=$(switches "$pid")
  pgbench_run "$target" "$proto" "$n" "$DURATION" "$work/pgbench.out" || rc=$?
  out=$(<"$work/pgbench.out")
  [[ -n $pid ]] && cpu1=$(cpu_ticks "$pid") && sw1=$(switches "$pid")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' <<<"$out" | sed -n 1p)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | sed -n 1p)
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | sed -n 1p)
  if ((rc != 0)) || [[ -z $tps || -z $lat || -z $tx || $tx == 0 ]] || { [[ -n $pid ]] && [[ -z $cpu0 || -z $cpu1 ]]; }; then
    STATUS[$key]=FAILED
    failures+=("$key: pgbench exit code $rc: $(grep -m 1 -iE 'error|fatal|abort' <<<"$out" || tail -n 1 <<<"$out")")
    log "FAILED: $proto, $n clients, $target (exit code $rc); pgbench said:"
    tail -n 15 <<<"$out" | sed 's/^/    /' >&2
    return 0
  fi
  [[ ${STATUS[$key]:-} == FAILED ]] || STATUS[$key]=ok
  TPS_OF_RUN[$key/$rep]=$tps
  LAT_OF_RUN[$key/$rep]=$lat
  if [[ -n $pid ]]; then
    local cpu
    cpu=$(calc "($cpu1 - $cpu0) / $CLK_TCK / $tx * 10000")
    CPU_OF_RUN[$key/$rep]=$cpu
    log "$(printf '%-8s %4s clients  %-9s  %10.0f tps  %8.3f ms  %.3f CPU s/10k tx  %.2f switches/tx' "$proto" "$n" "$target" "$tps" "$lat" "$cpu" "$(awk -v a="$sw0" -v b="$sw1" -v t="$tx" 'BEGIN {printf "%f", (b - a) / t}')")"
  else
    log "$(printf '%-8s %4s clients  %-9s  %10.0f tps  %8.3f ms' "$proto" "$n" "$target" "$tps" "$lat")"
  fi
}

if ((WARMUP > 0)); then
  log "warming up (${WARMUP}s per target)..."
  for target in "${targets[@]}"; do
    pgbench_run "$target" simple 10 "$WARMUP" "$work/warmup-$target.log" ||
      { log "warning: warm-up against $target failed:"; tail -n 5 "$work/warmup-$target.log" >&2; }
  done
fi

for proto in "${protocols[@]}"; do
  for n in "${client_counts[@]}"; do
    for ((rep = 1; rep <= REPEAT; rep++)); do
      # The order rotates with each repetition (direct, pgfleet, PgBouncer; then pgfleet,
      # PgBouncer, direct; ...), so no target always runs right after another one's clients
      # disconnect, or always first after a change of cell.
      for ((k = 0; k < ${#targets[@]}; k++)); do
        run_cell "$proto" "$n" "${targets[(k + rep - 1) % ${#targets[@]}]}" "$rep"
        sleep 1
      done
    done
  done
done
runs_of() { # TPS|LAT|CPU key: the cell's measured runs, one per line
  local -n runs=$1_OF_RUN
  local rep
  for ((rep = 1; rep <= REPEAT; rep++)); do
    [[ -n ${runs[$2/$rep]:-} ]] && echo "${runs[$2/$rep]}"
  done
  return 0
}

for key in "${!STATUS[@]}"; do
  [[ ${STATUS[$key]} == ok ]] || continue
  # shellcheck disable=SC2046 # the runs are numbers, one per line
  TPS[$key]=$(median $(runs_of TPS "$key"))
  # shellcheck disable=SC2046
  LAT[$key]=$(median $(runs_of LAT "$key"))
  # shellcheck disable=SC2046
  [[ -n $(runs_of CPU "$key") ]] && CPU[$key]=$(median $(runs_of CPU "$key"))
done

# ---------------------------------------------------------------------------------------------
# Report
cell_status() { # key: ok, FAILED or empty
  echo "${STATUS[$1]:-}"
}

val() { # array-name key: the value or FAILED
  local -n arr=$1
  if [[ $(cell_status "$2") == FAILED ]]; then printf 'FAILED'; else printf '%s' "${arr[$2]:-}"; fi
}

num() { # value decimals: formatted, passing FAILED through
  if [[ $1 == FAILED ]]; then printf 'FAILED'; else fmt "$1" "$2"; fi
}

paired_range() { # protocol clients [TPS|CPU]: pgfleet / PgBouncer within each repetition, "min–max"
  local rep f b ratios=()
  local -n runs=${3:-TPS}_OF_RUN
  for ((rep = 1; rep <= REPEAT; rep++)); do
    f=${runs[$1/$2/pgfleet/$rep]:-} b=${runs[$1/$2/pgbouncer/$rep]:-}
    [[ -n $f && -n $b ]] && ratios+=("$(ratio "$f" "$b")")
  done
  if ((${#ratios[@]} == 0)); then printf '—'; return; fi
  printf '%s\n' "${ratios[@]}" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'
}

report_tables() {
  echo "### Throughput: pgbench -S, transaction pooling, pool size $POOL_SIZE; median of $REPEAT interleaved ${DURATION}s runs per cell"
  echo
  echo "| protocol | clients | direct TPS | pgfleet TPS | PgBouncer TPS | pgfleet / PgBouncer | same, per repetition (min–max) | pgfleet / direct | direct latency ms | pgfleet latency ms | PgBouncer latency ms | pgfleet CPU s / 10k tx | PgBouncer CPU s / 10k tx | CPU pgfleet / PgBouncer | same, per repetition (min–max) |"
  echo "|---|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|:-:|"
  local proto n d f b
  for proto in "${protocols[@]}"; do
    for n in "${client_counts[@]}"; do
      d="$proto/$n/direct" f="$proto/$n/pgfleet" b="$proto/$n/pgbouncer"
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$proto" "$n" \
        "$(num "$(val TPS "$d")" 0)" "$(num "$(val TPS "$f")" 0)" "$(num "$(val TPS "$b")" 0)" \
        "$(ratio "${TPS[$f]:-}" "${TPS[$b]:-}")" "$(paired_range "$proto" "$n")" \
        "$(ratio "${TPS[$f]:-}" "${TPS[$d]:-}")" \
        "$(num "$(val LAT "$d")" 3)" "$(num "$(val LAT "$f")" 3)" "$(num "$(val LAT "$b")" 3)" \
        "$(num "$(val CPU "$f")" 3)" "$(num "$(val CPU "$b")" 3)" \
        "$(ratio "${CPU[$f]:-}" "${CPU[$b]:-}")" "$(paired_range "$proto" "$n" CPU)"
    done
  done
  echo
  echo "TPS excludes connection setup (pgbench's \"without initial connection time\"). CPU is the pooler"
  echo "process's user + system time over the whole pgbench run (logins included) per 10,000 transactions."
  echo "The per-repetition columns divide the two poolers' TPS (and CPU) within each repetition (runs"
  echo "seconds apart): their spread is how far one comparison can move on this machine."
  echo
  if ((IDLE_CLIENTS > 0)); then
    echo "### Memory per idle client: $IDLE_CLIENTS logged-in idle clients"
    echo
    echo "| pooler | RSS before (MiB) | RSS with $IDLE_CLIENTS idle clients (MiB) | bytes per idle client | KiB per idle client |"
    echo "|---|--:|--:|--:|--:|"
    local t name
    for t in pgfleet pgbouncer; do
      name=$t
      [[ $t == pgbouncer ]] && name=PgBouncer
      if [[ ${IDLE_STATUS[$t]:-} == ok ]]; then
        printf '| %s | %s | %s | %s | %s |\n' "$name" "$(fmt "$(calc "${RSS0[$t]} / 1024")" 1)" \
          "$(fmt "$(calc "${RSS1[$t]} / 1024")" 1)" "$(fmt "${IDLE_BYTES[$t]}" 0)" \
          "$(fmt "$(calc "${IDLE_BYTES[$t]} / 1024")" 2)"
      else
        printf '| %s | FAILED | FAILED | FAILED | FAILED |\n' "$name"
      fi
    done
    echo
    echo "pgfleet / PgBouncer memory per idle client: $(ratio "${IDLE_BYTES[pgfleet]:-}" "${IDLE_BYTES[pgbouncer]:-}")."
    echo "Growth of the pooler's VmRSS while the clients are connected (logged in, no query sent), divided"
    echo "by their number; measured before the throughput runs, on freshly started poolers."
    echo
  fi
  report_targets
  if ((${#failures[@]} > 0)); then
    echo
    echo "### Failures"
    echo
    local line
    for line in "${failures[@]}"; do echo "- $line"; done
  fi
}

report_targets() {
  echo "### Targets"
  echo
  echo "A MISS lists the cells (protocol/clients) that missed, with pgfleet / PgBouncer for each."
  echo
  local proto n f b verdict misses measured
  # 1. TPS at least PgBouncer's at 10, 50 and 200 clients.
  misses=() measured=0
  for proto in "${protocols[@]}"; do
    for n in "${client_counts[@]}"; do
      [[ $n == 10 || $n == 50 || $n == 200 ]] || continue
      measured=1
      f="$proto/$n/pgfleet" b="$proto/$n/pgbouncer"
      if [[ -z ${TPS[$f]:-} || -z ${TPS[$b]:-} ]]; then
        misses+=("$proto/$n: failed")
      elif awk -v a="${TPS[$f]}" -v b="${TPS[$b]}" 'BEGIN { exit !(a < b) }'; then
        misses+=("$proto/$n: $(ratio "${TPS[$f]}" "${TPS[$b]}" 3) (per repetition $(paired_range "$proto" "$n"))")
      fi
    done
  done
  verdict=PASS
  ((measured)) || verdict="NOT MEASURED (CLIENTS has none of 10, 50, 200)"
  ((${#misses[@]} == 0)) || verdict="MISS ($(IFS=,; echo "${misses[*]}" | sed 's/,/, /g'))"
  echo "- pgfleet TPS >= PgBouncer TPS at 10, 50 and 200 clients: **$verdict**"
  # 2. CPU per transaction no more than PgBouncer's (every cell).
  misses=()
  for proto in "${protocols[@]}"; do
    for n in "${client_counts[@]}"; do
      f="$proto/$n/pgfleet" b="$proto/$n/pgbouncer"
      if [[ -z ${CPU[$f]:-} || -z ${CPU[$b]:-} ]]; then
        misses+=("$proto/$n: failed")
      elif awk -v a="${CPU[$f]}" -v b="${CPU[$b]}" 'BEGIN { exit !(a > b) }'; then
        misses+=("$proto/$n: $(ratio "${CPU[$f]}" "${CPU[$b]}" 3) (per repetition $(paired_range "$proto" "$n" CPU))")
      fi
    done
  done
  verdict=PASS
  ((${#misses[@]} == 0)) || verdict="MISS ($(IFS=,; echo "${misses[*]}" | sed 's/,/, /g'))"
  echo "- pgfleet CPU per transaction <= PgBouncer's (every cell): **$verdict**"
  # 3. At most 4 KiB per idle client.
  if ((IDLE_CLIENTS == 0)); then
    verdict="NOT MEASURED (IDLE_CLIENTS=0)"
  elif [[ ${IDLE_STATUS[pgfleet]:-} != ok ]]; then
    verdict="MISS (failed)"
  elif awk -v a="${IDLE_BYTES[pgfleet]}" 'BEGIN { exit !(a <= 4096) }'; then
    verdict="PASS ($(fmt "${IDLE_BYTES[pgfleet]}" 0) bytes)"
  else
    verdict="MISS ($(fmt "${IDLE_BYTES[pgfleet]}" 0) bytes)"
  fi
  echo "- pgfleet memory per idle client <= 4 KiB (4096 bytes): **$verdict**"
}

machine_header() {
  local cpu mem commit dirty=""
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
  [[ -n $cpu ]] || cpu=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ {print $2; exit}' || true)
  mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
  commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (with uncommitted changes)"
  echo "# pgfleet benchmark results"
  echo
  echo "Written by \`bench/run.sh\` (see bench/README.md); re-run it to replace this file."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- Machine: $(nproc) CPUs, ${cpu:-unknown CPU}, ${mem:-unknown} memory"
  echo "- Kernel: $(uname -srm)"
  echo "- PostgreSQL: $("$PG_BIN/postgres" --version)"
  echo "- PgBouncer: $("$PGBOUNCER" --version 2>&1 | sed -n 1p)"
  echo "- pgbench: $("$PGBENCH" --version)"
  echo "- pgfleet commit: $commit$dirty"
  echo "- Knobs: DURATION=$DURATION REPEAT=$REPEAT CLIENTS=\"$CLIENTS\" PROTOCOLS=\"$PROTOCOLS\" IDLE_CLIENTS=$IDLE_CLIENTS WARMUP=$WARMUP SCALE=$SCALE PGFLEET_WORKERS=$PGFLEET_WORKERS"
  echo "- Setup: everything on one machine over loopback TCP with SCRAM; pgbench -S -n -T $DURATION -j min(clients,2); pool size $POOL_SIZE (PgBouncer: default_pool_size=$POOL_SIZE, max_db_connections=$POOL_SIZE, pool_mode=transaction; pgfleet: defaultPoolSize=$POOL_SIZE, mode transaction); PostgreSQL max_connections=400, shared_buffers=128MB, fsync=off, synchronous_commit=off"
  echo
}

tables=$(report_tables)
echo
echo "$tables"
mkdir -p "$(dirname "$OUT")"
{
  machine_header
  echo "$tables"
} >"$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
log "wrote $OUT"

if ((${#failures[@]} > 0)); then
  log "${#failures[@]} measurement(s) failed"
  exit 1
fi
