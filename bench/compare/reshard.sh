#!/usr/bin/env bash
# Resharding time: two shards (master + replica each) and a router, a table kv(k, v, pad) of ROWS rows
# (100-byte pad) inserted through the router into one shard, then POST /shards for a third; prints the
# seconds until every slot it wins has moved (resharding.pendingSlots = 0) and the row counts per shard
# before and after (they must add up to ROWS).
#
#   bash bench/compare/reshard.sh [rows=100000]        ROOT=<another checkout> times that build instead
set -euo pipefail
ROWS=${1:-100000}
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
dotnet build "$ROOT/src/DataNode" -c Release -v q -nologo >/dev/null
dotnet build "$ROOT/src/ShardRouter" -c Release -v q -nologo >/dev/null
NODE=$ROOT/src/DataNode/bin/Release/net10.0/Infra.DataNode.dll
ROUTER=$ROOT/src/ShardRouter/bin/Release/net10.0/Infra.ShardRouter.dll
W=$(mktemp -d /var/tmp/infra-reshard.XXXXXX)
B=19700
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer $1"; exit 1; }
start_shard() { # i
  local m=$((B + 20 * $1)) r=$((B + 20 * $1 + 10))
  dotnet $NODE --listen 127.0.0.1:$m --http 127.0.0.1:$((m+1)) --data-dir $W/m$1 --role master --log-level Warning > $W/m$1.log 2>&1 & PIDS+=($!)
  dotnet $NODE --listen 127.0.0.1:$r --http 127.0.0.1:$((r+1)) --data-dir $W/r$1 --role replica --master 127.0.0.1:$m --log-level Warning > $W/r$1.log 2>&1 & PIDS+=($!)
  wait_http http://127.0.0.1:$((m+1))/healthz; wait_http http://127.0.0.1:$((r+1))/healthz
}
start_shard 0; start_shard 1
echo "{\"shards\":[{\"id\":\"s0\",\"master\":\"127.0.0.1:$B\",\"replicas\":[\"127.0.0.1:$((B+10))\"]},{\"id\":\"s1\",\"master\":\"127.0.0.1:$((B+20))\",\"replicas\":[\"127.0.0.1:$((B+30))\"]}]}" > $W/shards.json
dotnet $ROUTER --listen 127.0.0.1:$((B+80)) --http 127.0.0.1:$((B+81)) --shards $W/shards.json --data-dir $W/router --log-level Warning > $W/router.log 2>&1 & PIDS+=($!)
wait_http http://127.0.0.1:$((B+81))/healthz
curl -sf http://127.0.0.1:$((B+81))/db/schema -d '{"statements":["CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL, pad TEXT)"],"tables":[{"name":"kv","shardKey":"k"}]}' > /dev/null || echo schema failed
for s in a b; do
  curl -s http://127.0.0.1:$((B+81))/db/execute -d "{\"key\":\"$s\",\"statements\":[[\"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < $((ROWS/2))) INSERT INTO kv SELECT '$s'||n, n, hex(randomblob(50)) FROM c\"]]}" | head -c 200; echo
done
curl -s http://127.0.0.1:$((B+81))/db/query -d '{"sql":"SELECT count(*) FROM kv"}' | head -c 200; echo
start_shard 2
t0=$(date +%s%N)
curl -s -X POST http://127.0.0.1:$((B+81))/shards -d "{\"id\":\"s2\",\"master\":\"127.0.0.1:$((B+40))\",\"replicas\":[\"127.0.0.1:$((B+50))\"]}" | head -c 200; echo
while true; do
  p=$(curl -s http://127.0.0.1:$((B+81))/shards | python3 -c 'import sys,json; print(json.load(sys.stdin)["resharding"]["pendingSlots"])')
  [ "$p" = "0" ] && break
  sleep 1
  if (( ($(date +%s%N) - t0) / 1000000000 > 600 )); then echo "timeout, pending $p"; break; fi
done
t1=$(date +%s%N)
echo "moved in $(( (t1 - t0) / 1000000 )) ms"
curl -s http://127.0.0.1:$((B+81))/db/query -d '{"sql":"SELECT count(*) FROM kv","consistency":"strong"}' | head -c 300; echo
