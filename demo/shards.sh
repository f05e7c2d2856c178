#!/usr/bin/env bash
# Two shards, each a SQLite master and its semi-sync replica, behind a shard router:
#   router: MessagePack on 127.0.0.1:7700, HTTP/JSON on http://127.0.0.1:7701
#   s0: master 7600 (HTTP 7601), replica 7610 (7611)     s1: master 7620 (7621), replica 7630 (7631)
# Data in ./data/shards. Ctrl-C stops everything.
# Try:
#   curl localhost:7701/db/schema -d '{"statements":["CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)"],"tables":[{"name":"kv","shardKey":"k"}]}'
#   curl localhost:7701/db/execute -d '{"key":"alice","statements":[["INSERT INTO kv VALUES(?, ?)","alice",1]]}'
#   curl localhost:7701/db/query -d '{"key":"alice","sql":"SELECT * FROM kv WHERE k = ?","params":["alice"],"token":{"shard":"s1","lsn":2}}'
#   curl localhost:7701/db/query -d '{"sql":"SELECT * FROM kv ORDER BY v DESC","orderBy":"v DESC","limit":10}'
#   curl localhost:7701/shards
#   kill -9 <a master's pid>   # the router promotes its replica within ~2 s; writes resume
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/DataNode -c Release -v q -nologo
dotnet build src/ShardRouter -c Release -v q -nologo
NODE=src/DataNode/bin/Release/net10.0/Infra.DataNode.dll
ROUTER=src/ShardRouter/bin/Release/net10.0/Infra.ShardRouter.dll
D=./data/shards
mkdir -p $D
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait' INT TERM EXIT
for i in 0 1; do
  m=$((7600 + 20 * i)); r=$((7610 + 20 * i))
  dotnet $NODE --listen 127.0.0.1:$m --http 127.0.0.1:$((m + 1)) --data-dir $D/s$i-master --role master &
  PIDS+=($!)
  dotnet $NODE --listen 127.0.0.1:$r --http 127.0.0.1:$((r + 1)) --data-dir $D/s$i-replica --role replica --master 127.0.0.1:$m &
  PIDS+=($!)
done
cat > $D/shards.json <<'JSON'
{"shards":[{"id":"s0","master":"127.0.0.1:7600","replicas":["127.0.0.1:7610"]},
           {"id":"s1","master":"127.0.0.1:7620","replicas":["127.0.0.1:7630"]}]}
JSON
dotnet $ROUTER --listen 127.0.0.1:7700 --http 127.0.0.1:7701 --shards $D/shards.json --data-dir $D/router "$@" &
PIDS+=($!)
wait
