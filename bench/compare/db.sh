#!/usr/bin/env bash
# Side-by-side: our data node (SQLite, synchronous=FULL) vs PostgreSQL 15 (Debian, fsync on,
# synchronous_commit=on, no replica), same machine, runs alternated, fresh data each run:
#
#   write async      single-row INSERT transactions/s through the master's HTTP API, one replica
#                    connected, acknowledged after the master's commit      (1 and 16 clients)
#   write semi-sync  the same, acknowledged after the replica has it durably (1 and 16 clients)
#   read replica     point SELECT by primary key/s on the replica, 100k rows (16 clients)
#   PostgreSQL       the same INSERT / SELECT through pgbench -M prepared (1 and 16 clients)
#
#   bash bench/compare/db.sh [runs=3] [seconds=10]      WARMUP=3: seconds of the same load before
#                                                        each figure, not measured (both systems)
#
# Our load generator is wrk (HTTP/JSON, one request in flight per connection); PostgreSQL's is
# pgbench (its binary protocol, prepared statements). Needs wrk and postgresql (installed from
# Debian when missing) and the .NET SDK. Runs PostgreSQL as the postgres user.
set -euo pipefail

RUNS=${1:-3}
SECONDS_EACH=${2:-10}
WARMUP=${WARMUP:-3}   # seconds of the same load, not measured, before each figure (JIT tiers, caches)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/compare/db"
WORK=$(mktemp -d /var/tmp/infra-db-bench.XXXXXX)
chmod 755 "$WORK"
M=19760 M_HTTP=19761 R=19762 R_HTTP=19763 PG=19764
ROWS=100000
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -d "$WORK/pg" ]] && su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v pgbench >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

dotnet build "$ROOT/src/DataNode" -c Release -v q -nologo >/dev/null
NODE="$ROOT/src/DataNode/bin/Release/net10.0/Infra.DataNode.dll"

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

start_pg() {
  rm -rf "$WORK/pg"; mkdir -p "$WORK/pg"; chown postgres "$WORK/pg"
  su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg/log -o '-p $PG -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100 -c shared_buffers=256MB' -w start" >/dev/null
  psql -h 127.0.0.1 -p $PG -U postgres -q -c "CREATE TABLE kv(id bigserial PRIMARY KEY, v text NOT NULL)"
}

stop_pg() { su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m fast -w stop" >/dev/null; }

wrk_rate() { # url script clients -> "rate errors"
  local threads=$(( $3 < 2 ? 1 : 2 ))
  ((WARMUP > 0)) && ROWS=$ROWS wrk -t$threads -c"$3" -d"${WARMUP}s" -s "$HERE/$2" "$1" >/dev/null
  local out; out=$(ROWS=$ROWS wrk -t$threads -c"$3" -d"${SECONDS_EACH}s" -s "$HERE/$2" "$1")
  local rate errors
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/{print $5}' <<<"$out"); errors=${errors:-0}
  echo "$rate $errors"
}

pg_rate() { # script clients
  local threads=$(( $2 < 2 ? 1 : 2 ))
  ((WARMUP > 0)) && pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c "$2" -j $threads -T "$WARMUP" -f "$HERE/$1" postgres >/dev/null 2>&1
  pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c "$2" -j $threads -T "$SECONDS_EACH" -f "$HERE/$1" postgres 2>/dev/null \
    | awk '/^tps/{print $3; exit}'
}

RESULTS="$WORK/results.txt"
for run in $(seq 1 "$RUNS"); do
  for sync in async semi-sync; do
    for clients in 1 16; do
      start_nodes $sync
      read -r rate errors < <(wrk_rate http://127.0.0.1:$M_HTTP/execute write.lua $clients)
      echo "test=write-$sync clients=$clients target=ours rate=$rate errors=$errors" | tee -a "$RESULTS"
      stop_nodes
    done
  done
  start_nodes semi-sync
  preload_nodes
  read -r rate errors < <(wrk_rate http://127.0.0.1:$R_HTTP/query read.lua 16)
  echo "test=read-replica clients=16 target=ours rate=$rate errors=$errors" | tee -a "$RESULTS"
  stop_nodes

  for clients in 1 16; do
    start_pg
    echo "test=write clients=$clients target=pg rate=$(pg_rate pg-write.sql $clients)" | tee -a "$RESULTS"
    stop_pg
  done
  start_pg
  psql -h 127.0.0.1 -p $PG -U postgres -q -c "INSERT INTO kv(v) SELECT repeat('x', 100) FROM generate_series(1, $ROWS)" -c "VACUUM ANALYZE kv"
  echo "test=read clients=16 target=pg rate=$(pg_rate pg-read.sql 16)" | tee -a "$RESULTS"
  stop_pg
done

echo
echo "medians over $RUNS runs, ${SECONDS_EACH}s each ($(nproc) cores, $(df -T "$WORK" | awk 'NR==2{print $2}') on $(df "$WORK" | awk 'NR==2{print $1}'))"
python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(p.split('=', 1) for p in line.split())
    rows[(kv['test'], kv['clients'], kv['target'])].append(float(kv['rate']))
med = lambda k: statistics.median(rows[k]) if rows.get(k) else float('nan')
print(f"{'test':18} {'clients':>7} {'ours':>9} {'postgres':>9} {'ours/pg':>8}")
for test, peer in [('write-async', 'write'), ('write-semi-sync', 'write'), ('read-replica', 'read')]:
    for clients in ['1', '16']:
        o, p = med((test, clients, 'ours')), med((peer, clients, 'pg'))
        if o == o:
            print(f"{test:18} {clients:>7} {o:>9.0f} {p:>9.0f} {o/p if p else float('nan'):>8.2f}")
PY
