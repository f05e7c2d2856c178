#!/usr/bin/env bash
# Two data nodes: a master (replication on 127.0.0.1:7600, HTTP API on http://127.0.0.1:7601, data in
# ./data/a) and a replica of it (7610 / http://127.0.0.1:7611, ./data/b), semi-sync: a write is
# acknowledged once the replica has it durably. Ctrl-C stops both cleanly.
# Try:
#   curl localhost:7601/execute -d '{"statements":[["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]]}'
#   curl localhost:7601/execute -d '{"statements":[["INSERT INTO t(id, v) VALUES(?, ?)", 1, "x"]]}'
#   curl localhost:7611/query -d '{"sql":"SELECT * FROM t","minLsn":2}'      # on the replica
#   curl localhost:7601/status; curl localhost:7611/checksum
#   # failover: stop the master (Ctrl-C kills both here), or: kill -9 <master pid>, then
#   curl localhost:7611/promote -d '{"epoch":2}'
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/DataNode -c Release -v q -nologo
NODE=src/DataNode/bin/Release/net10.0/Infra.DataNode.dll
dotnet $NODE --listen 127.0.0.1:7600 --http 127.0.0.1:7601 --data-dir ./data/a --role master "$@" &
MASTER=$!
dotnet $NODE --listen 127.0.0.1:7610 --http 127.0.0.1:7611 --data-dir ./data/b --role replica --master 127.0.0.1:7600 "$@" &
REPLICA=$!
trap 'kill $MASTER $REPLICA 2>/dev/null; wait' INT TERM EXIT
wait
