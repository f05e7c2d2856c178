#!/usr/bin/env bash
# Side-by-side: our queue broker (--fsync always) vs NATS JetStream (Debian nats-server -js, file
# storage). The same load generator (bench/Infra.QueueLoad) drives both, runs alternated, fresh data
# directories on the same disk each run:
#
#   produce: N concurrent producers, each with one acknowledged 100-byte message in flight, for S s
#            (N = 1, 64, 256); rate = acknowledged messages/s, p50/p99 produce latency
#   e2e:     64 producers (one process) while one consumer (another process) reads the new messages:
#            produce→consume latency of every message. Ours reads through a push subscription (the
#            broker sends committed messages; JetStream's consumer is pushed to as well); the load
#            generator's --consumer fetch reads with long-poll fetches instead
#   consume: read back everything the 64-producer run wrote
#
#   bash bench/compare/queue.sh [runs=3] [seconds=10]
#
# CONNECTIONS=n (default 4): the producers share n connections, for both brokers (round robin). Both
# do better on few connections; 64 producers on 64 connections is in bench/RESULTS.md too.
#
# The "batch" rows run the same produce phases on our broker through Infra.Client's batching producer:
# the N producers share one QueueProducer (one connection), as a Kafka producer is shared by the
# threads of a process; messages queued while its last request is in flight go out as the next
# produce request. Every message is still acknowledged to its own producer only after the fsync. The
# plain rows send one message per request, as the NATS client does (NATS 2.9 has no batched JetStream
# publish); compare the batch rows with the NATS column of the same run.
#
# Note: JetStream acknowledges a publish after writing it, before fsync (its sync_interval defaults
# to 2 minutes); ours acknowledges after fsync. Needs nats-server (installed from Debian when
# missing) and the .NET SDK.
set -euo pipefail

RUNS=${1:-3}
SECONDS_EACH=${2:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /var/tmp/infra-queue-bench.XXXXXX)
OURS=19740 OURS_HTTP=19741 NATS=19742
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v nats-server >/dev/null; then
  echo "installing nats-server ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi

dotnet build "$ROOT/src/QueueBroker" -c Release -v q -nologo >/dev/null
dotnet build "$ROOT/bench/Infra.QueueLoad" -c Release -v q -nologo >/dev/null
BROKER="$ROOT/src/QueueBroker/bin/Release/net10.0/Infra.QueueBroker.dll"
LOAD="$ROOT/bench/Infra.QueueLoad/bin/Release/net10.0/Infra.QueueLoad.dll"

wait_port() { # port
  for _ in $(seq 1 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

start_ours() {
  rm -rf "$WORK/ours"
  dotnet "$BROKER" --listen 127.0.0.1:$OURS --http 127.0.0.1:$OURS_HTTP --data-dir "$WORK/ours" --fsync always --log-level Warning >"$WORK/ours.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_port $OURS
}

start_nats() {
  rm -rf "$WORK/nats"
  nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p $NATS >"$WORK/nats.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_port $NATS
}

stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; }

CONNECTIONS=${CONNECTIONS:-4}
load() { dotnet "$LOAD" --connections "$CONNECTIONS" "$@"; }

RESULTS="$WORK/results.txt"
for run in $(seq 1 "$RUNS"); do
  for target in ours nats; do
    port=$OURS; [[ $target == nats ]] && port=$NATS
    if [[ $target == ours ]]; then
      for producers in 64 256; do
        start_ours
        dotnet "$LOAD" --connections 1 --target ours-batch --port $port --phase produce --producers $producers --seconds "$SECONDS_EACH" | tee -a "$RESULTS"
        stop_server
      done
    fi
    for producers in 1 64 256; do
      if [[ $target == ours ]]; then start_ours; else start_nats; fi
      load --target $target --port $port --phase produce --producers $producers --seconds "$SECONDS_EACH" | tee -a "$RESULTS"
      if [[ $producers == 64 ]]; then
        load --target $target --port $port --phase consume | sed "s/$/ producers=64/" | tee -a "$RESULTS"
      fi
      stop_server
    done
    if [[ $target == ours ]]; then start_ours; else start_nats; fi
    load --target $target --port $port --phase produce --producers 1 --seconds 0.2 --topic e2e >/dev/null # creates the topic/stream
    load --target $target --port $port --phase tail --producers 64 --seconds $((SECONDS_EACH + 2)) --topic e2e | tee -a "$RESULTS" &
    tail_pid=$!
    sleep 1
    load --target $target --port $port --phase produce --stamp --producers 64 --seconds "$SECONDS_EACH" --topic e2e >/dev/null
    wait $tail_pid
    stop_server
  done
done

echo
echo "medians over $RUNS runs, producers on $CONNECTIONS connections ($(nproc) cores, $(df -T "$WORK" | awk 'NR==2{print $2}') on $(df "$WORK" | awk 'NR==2{print $1}'))"
python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(p.split('=', 1) for p in line.split())
    rows[(kv['phase'], kv.get('producers', '-'), kv['target'])].append(kv)
def med(key, field):
    vals = [float(r[field]) for r in rows.get(key, []) if field in r and r[field] != 'nan']
    return statistics.median(vals) if vals else float('nan')
print(f"{'phase':8} {'producers':>9} {'ours':>10} {'nats':>10} {'ours/nats':>9}   {'ours p50/p99 ms':>16} {'nats p50/p99 ms':>16}")
for phase, producers in [('produce','1'), ('produce','64'), ('produce','256'), ('consume','64'), ('e2e','64')]:
    o, n = med((phase, producers, 'ours'), 'rate'), med((phase, producers, 'nats'), 'rate')
    lat = lambda t: f"{med((phase, producers, t), 'p50_ms'):.2f}/{med((phase, producers, t), 'p99_ms'):.2f}" if phase != 'consume' else '-'
    print(f"{phase:8} {producers:>9} {o:>10.0f} {n:>10.0f} {o/n if n else float('nan'):>9.2f}   {lat('ours'):>16} {lat('nats'):>16}")
for producers in ['64', '256']:
    b, n = med(('produce', producers, 'ours-batch'), 'rate'), med(('produce', producers, 'nats'), 'rate')
    lat = f"{med(('produce', producers, 'ours-batch'), 'p50_ms'):.2f}/{med(('produce', producers, 'ours-batch'), 'p99_ms'):.2f}"
    print(f"{'batch':8} {producers:>9} {b:>10.0f} {n:>10.0f} {b/n if n else float('nan'):>9.2f}   {lat:>16} {'(same nats)':>16}")
PY
