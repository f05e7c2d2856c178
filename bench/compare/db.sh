#!/usr/bin/env bash
# Side-by-side: our data node (SQLite, WAL fsynced before every ack) vs PostgreSQL 15 (Debian, fsync on,
# synchronous_commit=on, no replica), same machine, runs alternated, fresh data each run:
#
#   write async      single-row INSERT transactions/s through the master's API, one replica
#                    connected, acknowledged after the master's commit      (1 and 16 clients)
#   write semi-sync  the same, acknowledged after the replica has it durably (1 and 16 clients)
#   read replica     point SELECT by primary key/s on the replica, 100k rows (16 clients)
#   PostgreSQL       the same INSERT / SELECT through pgbench -M prepared (1 and 16 clients)
#   PostgreSQL + standby  the same INSERTs with a streaming standby on the same machine: async, and
#                    synchronous (synchronous_standby_names='*': a commit waits for the standby's
#                    flush) -- the like-for-like peers of our async and semi-sync writes
#
#   bash bench/compare/db.sh [runs=3] [seconds=10]      WARMUP=3: seconds of the same load before
#                                                        each figure, not measured (both systems)
#
# Each of our figures is taken twice on the same nodes: over HTTP/JSON with wrk ("http"), and over
# the node's MessagePack protocol (--listen) with db/nload.c ("native": C, epoll, one request in
# flight per connection -- what pgbench is to PostgreSQL's wire protocol, which pgbench speaks with
# prepared statements). Load-generator threads: 1 for 1 client, 2 for 16 (wrk -t2, pgbench -j2,
# nload 2); reads at 16 clients are also measured with 1 thread for both nload and pgbench, and the
# summary compares each system's better one (one thread suits our node, two suit PostgreSQL: the
# generator and the server share the two cores). Needs wrk, gcc and postgresql (installed from
# Debian when missing) and the .NET SDK. Runs PostgreSQL as the postgres user.
set -euo pipefail

RUNS=${1:-3}
SECONDS_EACH=${2:-10}
WARMUP=${WARMUP:-3}   # seconds of the same load, not measured, before each figure (JIT tiers, caches)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/compare/db"
WORK=$(mktemp -d /var/tmp/infra-db-bench.XXXXXX)
chmod 755 "$WORK"
M=19760 M_HTTP=19761 R=19762 R_HTTP=19763 PG=19764 PGS=19765
ROWS=100000
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -d "$WORK/pgs" ]] && su postgres -c "$PGBIN/pg_ctl -D $WORK/pgs -m immediate stop" >/dev/null 2>&1 || true
  [[ -d "$WORK/pg" ]] && su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v pgbench >/dev/null || missing+=(postgresql)
command -v gcc >/dev/null || missing+=(gcc)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

dotnet build "$ROOT/src/DataNode" -c Release -v q -nologo >/dev/null
NODE="$ROOT/src/DataNode/bin/Release/net10.0/Infra.DataNode.dll"
gcc -O2 -pthread -o "$WORK/nload" "$HERE/nload.c"

wait_http() { # url
  for _ in $(seq 1 300); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

start_nodes() { # sync mode
  rm -rf "$WORK/m" "$WORK/r"
  dotnet "$NODE" --listen 127.0.0.1:$M --http 127.0.0.1:$M_HTTP --data-dir "$WORK/m" --role master --sync "$1" --log-level Warning >"$WORK/m.log" 2>&1 &
  PIDS+=($!); MASTER=$!
  wait_http http://127.0.0.1:$M_HTTP/healthz
  dotnet "$NODE" --listen 127.0.0.1:$R --http 127.0.0.1:$R_HTTP --data-dir "$WORK/r" --role replica --master 127.0.0.1:$M --log-level Warning >"$WORK/r.log" 2>&1 &
  PIDS+=($!); REPLICA=$!
  wait_http http://127.0.0.1:$R_HTTP/healthz
  curl -sf http://127.0.0.1:$M_HTTP/execute -d '{"statements":[["CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)"]]}' >/dev/null
  for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:$M_HTTP/status | grep -q '"connected":true' && return 0
    sleep 0.1
  done
  echo "the replica did not connect" >&2; return 1
}

stop_nodes() { kill "$MASTER" "$REPLICA"; wait "$MASTER" "$REPLICA" 2>/dev/null || true; }

preload_nodes() {
  python3 - "$M_HTTP" "$ROWS" <<'PY'
import json, sys, urllib.request
port, rows = int(sys.argv[1]), int(sys.argv[2])
for start in range(1, rows + 1, 1000):
    stmts = [["INSERT INTO kv(id, v) VALUES(?, ?)", i, "x" * 100] for i in range(start, min(start + 1000, rows + 1))]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/execute", json.dumps({"statements": stmts}).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
  local lsn; lsn=$(curl -sf http://127.0.0.1:$M_HTTP/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["lsn"])')
  curl -sf http://127.0.0.1:$R_HTTP/query -d "{\"sql\":\"SELECT count(*) FROM kv\",\"minLsn\":$lsn,\"timeoutMs\":60000}" >/dev/null
}

start_pg() { # [standby: async|sync]
  rm -rf "$WORK/pg" "$WORK/pgs"; mkdir -p "$WORK/pg"; chown postgres "$WORK/pg"
  su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  [[ ${1:-} == sync ]] && echo "synchronous_standby_names = '*'" >>"$WORK/pg/postgresql.conf"
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg/log -o '-p $PG -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100 -c shared_buffers=256MB' -w start" >/dev/null
  if [[ -n ${1:-} ]]; then
    # A streaming standby from a base backup, on the same disk; writes start once it streams.
    mkdir -m 700 "$WORK/pgs"; chown postgres "$WORK/pgs"
    su postgres -c "$PGBIN/pg_basebackup -h 127.0.0.1 -p $PG -U postgres -D $WORK/pgs -R -X stream 2>&1" | { grep -v 'skipping special file' || true; } >&2
    su postgres -c "$PGBIN/pg_ctl -D $WORK/pgs -l $WORK/pgs/log -o '-p $PGS -k $WORK/pgs' -w start" >/dev/null
    local state=""
    for _ in $(seq 1 100); do
      state=$(psql -h 127.0.0.1 -p $PG -U postgres -Atc "SELECT state || '/' || sync_state FROM pg_stat_replication" 2>/dev/null || true)
      [[ $state == streaming/$1 ]] && break
      sleep 0.1
    done
    [[ $state == streaming/$1 ]] || { echo "the PostgreSQL standby is not streaming as $1 ($state)" >&2; return 1; }
  fi
  psql -h 127.0.0.1 -p $PG -U postgres -q -c "CREATE TABLE kv(id bigserial PRIMARY KEY, v text NOT NULL)"
}

stop_pg() {
  [[ -d "$WORK/pgs" ]] && su postgres -c "$PGBIN/pg_ctl -D $WORK/pgs -m fast -w stop" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m fast -w stop" >/dev/null
  rm -rf "$WORK/pgs"
}

wrk_rate() { # url script clients -> "rate errors"
  local threads=$(( $3 < 2 ? 1 : 2 ))
  ((WARMUP > 0)) && ROWS=$ROWS wrk -t$threads -c"$3" -d"${WARMUP}s" -s "$HERE/$2" "$1" >/dev/null
  local out; out=$(ROWS=$ROWS wrk -t$threads -c"$3" -d"${SECONDS_EACH}s" -s "$HERE/$2" "$1")
  local rate errors
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/{print $5}' <<<"$out"); errors=${errors:-0}
  echo "$rate $errors"
}

native_rate() { # port read|write clients threads -> "rate errors"
  local out
  out=$("$WORK/nload" 127.0.0.1 "$1" "$2" "$3" "$4" "$SECONDS_EACH" $ROWS "$WARMUP")
  sed -n 's/^rate=\([0-9.]*\) errors=\([0-9]*\)$/\1 \2/p' <<<"$out"
}

pg_rate() { # script clients [threads]
  local threads=${3:-$(( $2 < 2 ? 1 : 2 ))}
  ((WARMUP > 0)) && pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c "$2" -j $threads -T "$WARMUP" -f "$HERE/$1" postgres >/dev/null 2>&1
  pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c "$2" -j $threads -T "$SECONDS_EACH" -f "$HERE/$1" postgres 2>/dev/null \
    | awk '/^tps/{print $3; exit}'
}

RESULTS="$WORK/results.txt"
record() { # test clients target rate [errors]
  echo "test=$1 clients=$2 target=$3 rate=$4 errors=${5:-0}" | tee -a "$RESULTS"
}

for run in $(seq 1 "$RUNS"); do
  for sync in async semi-sync; do
    for clients in 1 16; do
      start_nodes $sync
      read -r rate errors < <(wrk_rate http://127.0.0.1:$M_HTTP/execute write.lua $clients)
      record write-$sync $clients http "$rate" "$errors"
      read -r rate errors < <(native_rate $M write $clients $(( clients < 2 ? 1 : 2 )))
      record write-$sync $clients native "$rate" "$errors"
      stop_nodes
    done
  done
  start_nodes semi-sync
  preload_nodes
  read -r rate errors < <(wrk_rate http://127.0.0.1:$R_HTTP/query read.lua 16)
  record read-replica 16 http "$rate" "$errors"
  for threads in 1 2; do
    read -r rate errors < <(native_rate $R read 16 $threads)
    record read-replica 16 native-t$threads "$rate" "$errors"
  done
  stop_nodes

  for clients in 1 16; do
    start_pg
    record write $clients pg "$(pg_rate pg-write.sql $clients)"
    stop_pg
    for standby in async sync; do
      start_pg $standby
      record write $clients pg-standby-$standby "$(pg_rate pg-write.sql $clients)"
      stop_pg
    done
  done
  start_pg
  psql -h 127.0.0.1 -p $PG -U postgres -q -c "INSERT INTO kv(v) SELECT repeat('x', 100) FROM generate_series(1, $ROWS)" -c "VACUUM ANALYZE kv"
  for threads in 1 2; do
    record read 16 pg-t$threads "$(pg_rate pg-read.sql 16 $threads)"
  done
  stop_pg
done

echo
echo "medians over $RUNS runs, ${SECONDS_EACH}s each ($(nproc) cores, $(df -T "$WORK" | awk 'NR==2{print $2}') on $(df "$WORK" | awk 'NR==2{print $1}'))"
python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
errors = collections.Counter()
for line in open(sys.argv[1]):
    kv = dict(p.split('=', 1) for p in line.split())
    rows[(kv['test'], kv['clients'], kv['target'])].append(float(kv['rate']))
    errors[(kv['test'], kv['clients'], kv['target'])] += int(kv.get('errors') or 0)
med = lambda k: statistics.median(rows[k]) if rows.get(k) else float('nan')
ratio = lambda a, b: a / b if b else float('nan')
print(f"{'test':18} {'clients':>7} {'http':>9} {'native':>9} {'postgres':>9} {'http/pg':>8} {'native/pg':>9} {'pg+standby':>10} {'native/pg+standby':>17}")
for test, standby in [('write-async', 'async'), ('write-semi-sync', 'sync')]:
    for clients in ['1', '16']:
        h, n, p = med((test, clients, 'http')), med((test, clients, 'native')), med(('write', clients, 'pg'))
        s = med(('write', clients, 'pg-standby-' + standby))
        print(f"{test:18} {clients:>7} {h:>9.0f} {n:>9.0f} {p:>9.0f} {ratio(h, p):>8.2f} {ratio(n, p):>9.2f} {s:>10.0f} {ratio(n, s):>17.2f}")
print("  pg+standby: PostgreSQL with a streaming standby on the same machine, async for write-async, synchronous"
      " (synchronous_standby_names='*') for write-semi-sync")
h = med(('read-replica', '16', 'http'))
n1, n2 = med(('read-replica', '16', 'native-t1')), med(('read-replica', '16', 'native-t2'))
p1, p2 = med(('read', '16', 'pg-t1')), med(('read', '16', 'pg-t2'))
n, p = max(n1, n2), max(p1, p2)
print(f"{'read-replica':18} {'16':>7} {h:>9.0f} {n:>9.0f} {p:>9.0f} {ratio(h, p):>8.2f} {ratio(n, p):>9.2f}")
print(f"  reads by load-generator threads: native 1 thread {n1:.0f}, 2 threads {n2:.0f}; pgbench -j1 {p1:.0f}, -j2 {p2:.0f}"
      f" (same thread count: 1 -> {ratio(n1, p1):.2f}, 2 -> {ratio(n2, p2):.2f}); http is wrk -t2")
bad = {k: v for k, v in errors.items() if v}
if bad:
    print("requests answered with an error: " + ", ".join(f"{t}/{c}/{g}: {v}" for (t, c, g), v in sorted(bad.items())))
PY
