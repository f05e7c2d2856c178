#!/usr/bin/env bash
# Side-by-side: keyed requests through the shard router (2 shards x master + replica, semi-sync) vs
# the same requests straight to one data node vs PostgreSQL 15, same machine, runs alternated:
#
#   read    point SELECT by key: router /db/query (replica consistency) vs the replica's /query vs pgbench
#   write   single-row INSERT OR REPLACE: router /db/execute vs the master's /execute vs pgbench
#   at 1 client (p50 latency: router overhead = router p50 - direct p50) and 16 clients (rate), plus
#   the router's own CPU time per request (from /proc) — what one router costs per request, the
#   figure that says how far it scales on a bigger machine.
#   hop     the 1-client p50s again over one shard with every process (nodes, router, HAProxy, client)
#           pinned to one core, plus HAProxy (HTTP mode, one thread) in front of the replica (reads)
#           and the master (writes) as the yardstick for one proxy hop. On a KVM guest without guest
#           halt-polling, waking a thread on the other, idle vCPU costs tens of µs, and whether the
#           client and the server land on the same vCPU changes the direct p50 between ~20 and ~95 µs
#           from run to run; unpinned overheads compare runs in different placements. Pinned, each
#           figure has one placement: what the hop costs. The client is router/hop.py (Python, HTTP
#           and MessagePack built by hand): wrk's 1-connection write p50s were bimodal here.
#   failover  SIGKILL a shard master under a write loop, time to the first acknowledged write (N runs)
#
#   bash bench/compare/router.sh [runs=3] [seconds=10] [failovers=10]   WARMUP=3: seconds of the
#   same load before each figure, not measured (both systems)
set -euo pipefail

RUNS=${1:-3}
SECONDS_EACH=${2:-10}
FAILOVERS=${3:-10}
WARMUP=${WARMUP:-3}   # seconds of the same load, not measured, before each figure (JIT tiers, caches)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/compare/router"
WORK=$(mktemp -d /var/tmp/infra-router-bench.XXXXXX)
chmod 755 "$WORK"
BASE=19800 PG=19890 HAP=19895 ROWS=10000
PIN_CPU=${PIN_CPU:-$(( $(nproc) - 1 ))}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [[ -d "$WORK/pg" ]] && su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v pgbench >/dev/null || missing+=(postgresql)
command -v haproxy >/dev/null || missing+=(haproxy)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

dotnet build "$ROOT/src/DataNode" -c Release -v q -nologo >/dev/null
dotnet build "$ROOT/src/ShardRouter" -c Release -v q -nologo >/dev/null
NODE="$ROOT/src/DataNode/bin/Release/net10.0/Infra.DataNode.dll"
ROUTER="$ROOT/src/ShardRouter/bin/Release/net10.0/Infra.ShardRouter.dll"

wait_http() {
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

# Ports: shard i master listen/http = BASE+20i, +1; replica = +10, +11. Router = BASE+80, +81.
start_stack() { # shards [rows]
  local rows=${2:-$ROWS}
  rm -rf "$WORK/stack"; mkdir -p "$WORK/stack"
  local json="" i
  for ((i = 0; i < $1; i++)); do
    local m=$((BASE + 20 * i)) r=$((BASE + 20 * i + 10))
    dotnet "$NODE" --listen 127.0.0.1:$m --http 127.0.0.1:$((m + 1)) --data-dir "$WORK/stack/m$i" --role master --log-level Warning >"$WORK/stack/m$i.log" 2>&1 &
    PIDS+=($!); eval "MASTER_$i=$!"
    dotnet "$NODE" --listen 127.0.0.1:$r --http 127.0.0.1:$((r + 1)) --data-dir "$WORK/stack/r$i" --role replica --master 127.0.0.1:$m --log-level Warning >"$WORK/stack/r$i.log" 2>&1 &
    PIDS+=($!)
    json+="${json:+,}{\"id\":\"s$i\",\"master\":\"127.0.0.1:$m\",\"replicas\":[\"127.0.0.1:$r\"]}"
  done
  echo "{\"shards\":[$json]}" >"$WORK/stack/shards.json"
  for ((i = 0; i < $1; i++)); do wait_http http://127.0.0.1:$((BASE + 20 * i + 1))/healthz; wait_http http://127.0.0.1:$((BASE + 20 * i + 11))/healthz; done
  dotnet "$ROUTER" --listen 127.0.0.1:$((BASE + 80)) --http 127.0.0.1:$((BASE + 81)) --shards "$WORK/stack/shards.json" --data-dir "$WORK/stack/router" --log-level Warning >"$WORK/stack/router.log" 2>&1 &
  PIDS+=($!); ROUTER_PID=$!
  wait_http http://127.0.0.1:$((BASE + 81))/healthz
  curl -sf http://127.0.0.1:$((BASE + 81))/db/schema -d '{"statements":["CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"],"tables":[{"name":"kv","shardKey":"k"}]}' >/dev/null
  python3 - $((BASE + 81)) "$rows" <<'PY'
import json, sys, urllib.request
port, rows = int(sys.argv[1]), int(sys.argv[2])
for i in range(1, rows + 1):
    body = json.dumps({"key": f"k{i}", "statements": [["INSERT INTO kv(k, v) VALUES(?, ?)", f"k{i}", i]]}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/db/execute", body, {"Content-Type": "application/json"})).read()
PY
  sleep 1 # the replicas are in rotation after a probe or two
}

stop_stack() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk at $3 clients on $1 (path $2, body $4) -> "rate p50_us errors"
wrk_run() {
  local threads=$(( $3 < 2 ? 1 : 2 ))
  local out; out=$(ROWS=$ROWS REQ_PATH="$2" BODY="$4" wrk -t$threads -c"$3" -d"${SECONDS_EACH}s" --latency -s "$HERE/req.lua" "$1")
  local rate p50 errors
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000}}' <<<"$out")
  errors=$(awk '/Non-2xx/{print $5}' <<<"$out"); errors=${errors:-0}
  echo "$rate $p50 $errors"
}

READ_ROUTER='{"key":"KEY","sql":"SELECT v FROM kv WHERE k = ?","params":["KEY"]}'
READ_DIRECT='{"sql":"SELECT v FROM kv WHERE k = ?","params":["KEY"]}'
WRITE_ROUTER='{"key":"KEY","statements":[["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)","KEY",NUM]]}'
WRITE_DIRECT='{"statements":[["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)","KEY",NUM]]}'

RESULTS="$WORK/results.txt"
measure() { # test target url path body (uses $clients); through the router it also records router CPU per request
  local before ticks extra=""
  if ((WARMUP > 0)); then
    ROWS=$ROWS REQ_PATH="$4" BODY="$5" wrk -t$(( clients < 2 ? 1 : 2 )) -c$clients -d"${WARMUP}s" -s "$HERE/req.lua" "$3" >/dev/null
  fi
  before=$(cpu_ticks $ROUTER_PID)
  read -r rate p50 errors < <(wrk_run "$3" "$4" $clients "$5")
  if [[ $2 == router* ]]; then
    ticks=$(( $(cpu_ticks $ROUTER_PID) - before ))
    extra=" router_cpu_us=$(python3 -c "print(round($ticks * 1e6 / $(getconf CLK_TCK) / max(1, $rate * $SECONDS_EACH), 1))")"
  fi
  echo "test=$1 clients=$clients target=$2 rate=$rate p50=$p50 errors=$errors$extra" | tee -a "$RESULTS"
}

for run in $(seq 1 "$RUNS"); do
  start_stack 2
  R=http://127.0.0.1:$((BASE + 81))
  for clients in 1 16; do
    measure read router $R /db/query "$READ_ROUTER"
    measure read direct http://127.0.0.1:$((BASE + 11)) /query "$READ_DIRECT"
    measure write router $R /db/execute "$WRITE_ROUTER"
    measure write direct http://127.0.0.1:$((BASE + 1)) /execute "$WRITE_DIRECT"
  done
  stop_stack

  # The hop: one shard behind the router (so "direct" is the very node the router calls; with two,
  # writes alternating between two masters cost ~150 µs more each than writes to one, router or
  # not), everything on one core, HAProxy in front of the replica (reads) and of the master (writes)
  # as the yardstick.
  start_stack 1
  cat >"$WORK/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  http-reuse always
  server replica 127.0.0.1:$((BASE + 11))
frontend fw
  bind 127.0.0.1:$((HAP + 1))
  default_backend bw
backend bw
  http-reuse always
  server master 127.0.0.1:$((BASE + 1))
frontend ft
  mode tcp
  bind 127.0.0.1:$((HAP + 2))
  default_backend bt
backend bt
  mode tcp
  server replica 127.0.0.1:$((BASE + 10))
frontend ftw
  mode tcp
  bind 127.0.0.1:$((HAP + 3))
  default_backend btw
backend btw
  mode tcp
  server master 127.0.0.1:$BASE
CFG
  haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
  PIDS+=("$(cat "$WORK/haproxy.pid")")
  for pid in "${PIDS[@]}"; do taskset -a -p -c "$PIN_CPU" "$pid" >/dev/null; done
  # A Python client on the same core: over HTTP to the node, through HAProxy and through the router,
  # and over MessagePack to the node and through the router (router/hop.py), alternated.
  HOP_ROUNDS=$(( RUNS < 3 ? 3 : RUNS ))
  taskset -c "$PIN_CPU" python3 "$HERE/hop.py" read $((BASE + 10)):$((BASE + 11)) $((BASE + 80)):$((BASE + 81)) $((HAP + 2)):$HAP 3000 $HOP_ROUNDS "$ROWS" | tee -a "$RESULTS"
  taskset -c "$PIN_CPU" python3 "$HERE/hop.py" write $BASE:$((BASE + 1)) $((BASE + 80)):$((BASE + 81)) $((HAP + 3)):$((HAP + 1)) 3000 $HOP_ROUNDS "$ROWS" | tee -a "$RESULTS"
  stop_stack

  rm -rf "$WORK/pg"; mkdir -p "$WORK/pg"; chown postgres "$WORK/pg"
  su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg/log -o '-p $PG -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on' -w start" >/dev/null
  psql -h 127.0.0.1 -p $PG -U postgres -q -c "CREATE TABLE kv(k text PRIMARY KEY, v bigint NOT NULL)" -c "INSERT INTO kv SELECT 'k' || i, i FROM generate_series(1, $ROWS) i" -c "VACUUM ANALYZE kv"
  for clients in 1 16; do
    for test in read write; do
      if ((WARMUP > 0)); then
        pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c $clients -j $(( clients < 2 ? 1 : 2 )) -T "$WARMUP" -D rows=$ROWS -f "$HERE/pg-$test.sql" postgres >/dev/null 2>&1
      fi
      out=$(pgbench -h 127.0.0.1 -p $PG -U postgres -n -M prepared -c $clients -j $(( clients < 2 ? 1 : 2 )) -T "$SECONDS_EACH" -D rows=$ROWS -f "$HERE/pg-$test.sql" postgres 2>/dev/null)
      rate=$(awk '/^tps/{print $3; exit}' <<<"$out"); lat=$(awk '/latency average/{print $4 * 1000}' <<<"$out")
      echo "test=$test clients=$clients target=pg rate=$rate p50=$lat errors=0" | tee -a "$RESULTS"
    done
  done
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m fast -w stop" >/dev/null
done

# Failover: one shard (master + replica) behind the router, a write loop, SIGKILL the master.
FAILS="$WORK/failover.txt"; : >"$FAILS"
for run in $(seq 1 "$FAILOVERS"); do
  start_stack 1 100 >/dev/null
  python3 - $((BASE + 81)) "$MASTER_0" >>"$FAILS" <<'PY'
import json, os, signal, sys, time, urllib.request, urllib.error
port, master = int(sys.argv[1]), int(sys.argv[2])
def write(n):
    body = json.dumps({"key": f"f{n}", "statements": [["INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)", f"f{n}", n]]}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/db/execute", body, {"Content-Type": "application/json"}), timeout=10).read()
        return True
    except (urllib.error.URLError, OSError):
        return False
for n in range(50):
    write(n)
os.kill(master, signal.SIGKILL)
killed = time.monotonic()
n = 1000
while not write(n):
    n += 1
    time.sleep(0.005)
print(f"failover_ms={(time.monotonic() - killed) * 1000:.0f}")
PY
  tail -1 "$FAILS"
  stop_stack
done

echo
echo "medians over $RUNS runs, ${SECONDS_EACH}s each ($(nproc) cores); p50 in microseconds (PostgreSQL: pgbench latency average)"
python3 - "$RESULTS" "$FAILS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    kv = dict(p.split('=', 1) for p in line.split())
    for metric in ('rate', 'p50', 'mean', 'router_cpu_us'):
        if metric in kv and kv[metric] not in ('', 'nan'):
            rows[(kv['test'], kv['clients'], kv['target'])][metric].append(float(kv[metric]))
med = lambda k, m: statistics.median(rows[k][m]) if rows.get(k) and rows[k].get(m) else float('nan')
print(f"{'test':6} {'clients':>7} {'router/s':>9} {'direct/s':>9} {'pg/s':>9} {'router/pg':>9} {'p50 router':>10} {'p50 direct':>10} {'overhead':>9} {'router cpu/req':>14}")
for test in ('read', 'write'):
    for c in ('1', '16'):
        r, d, p = (test, c, 'router'), (test, c, 'direct'), (test, c, 'pg')
        print(f"{test:6} {c:>7} {med(r,'rate'):9.0f} {med(d,'rate'):9.0f} {med(p,'rate'):9.0f} {med(r,'rate')/med(p,'rate'):9.2f} {med(r,'p50'):10.0f} {med(d,'p50'):10.0f} {med(r,'p50')-med(d,'p50'):9.0f} {med(r,'router_cpu_us'):13.1f}us")
pin = lambda t, target, m='p50': med((t, '1', target + '-pinned'), m)
print()
print("1 client, every process pinned to one core, a Python client (router/hop.py): p50 µs (mean), and what each hop adds to the direct p50")
print(f"{'test':6} {'protocol':9} {'direct':>11} {'haproxy':>11} {'router':>11} {'haproxy adds':>13} {'router adds':>12}")
for test in ('read', 'write'):
    for proto in ('http', 'native'):
        d, h, r = (pin(test, f'{t}-{proto}') for t in ('direct', 'haproxy', 'router'))
        dm, hm, rm = (pin(test, f'{t}-{proto}', 'mean') for t in ('direct', 'haproxy', 'router'))
        cell = lambda p, m: f"{p:.0f} ({m:.0f})" if p == p else "-"
        print(f"{test:6} {proto if proto == 'http' else 'msgpack':9} {cell(d, dm):>11} {cell(h, hm):>11} {cell(r, rm):>11} {(f'{h - d:.0f}' if h == h else '-'):>13} {r - d:12.0f}")
print("(the router reaches the node over MessagePack whatever the client speaks: its http row is measured against the")
print(" node's HTTP path, which is slower for writes; like for like: router on the msgpack row. HAProxy's msgpack row is")
print(" HAProxy in TCP mode, a layer-4 relay that only copies bytes: what any hop costs here, the floor for a proxy)")
def rounds(test, target):
    return rows.get((test, '1', target + '-pinned'), {}).get('p50', [])
print("median of the per-round differences to direct (rounds pair up in order): ", end="")
parts = []
for test in ('read', 'write'):
    for target, proto in (('haproxy', 'http'), ('haproxy', 'native'), ('router', 'native')):
        d, x = rounds(test, f'direct-{proto}'), rounds(test, f'{target}-{proto}')
        if d and x:
            parts.append(f"{test} {target}{' tcp' if proto == 'native' and target == 'haproxy' else ''}{'' if proto == 'native' else ' http'} +{statistics.median(b - a for a, b in zip(d, x)):.1f}")
print(", ".join(parts))
fails = [float(l.split('=')[1]) for l in open(sys.argv[2]) if l.startswith('failover_ms=')]
if fails:
    print(f"failover (SIGKILL -> first acknowledged write), {len(fails)} runs: median {statistics.median(fails):.0f} ms, min {min(fails):.0f}, max {max(fails):.0f}")
PY
