#!/usr/bin/env bash
# The queue broker: native protocol on 127.0.0.1:7400, HTTP/JSON API + /healthz + /metrics on
# http://127.0.0.1:7401, data in ./data/queue, fsync before every acknowledgement (group commit).
# Extra arguments go to the broker (e.g. --fsync interval:10). Ctrl-C stops it cleanly.
# Try:
#   curl -XPOST localhost:7401/topics -d '{"name":"jobs","partitions":3}'
#   curl -XPOST 'localhost:7401/topics/jobs/messages?key=user-1' -d 'send the welcome mail'
#   curl 'localhost:7401/topics/jobs/messages?group=workers&max=10&waitMs=1000'
#   curl -XPOST localhost:7401/topics/jobs/ack -d '{"group":"workers","deliveryIds":["<id from above>"]}'
#   curl localhost:7401/topics/jobs/groups/workers
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/QueueBroker -c Release -v q -nologo
exec dotnet src/QueueBroker/bin/Release/net10.0/Infra.QueueBroker.dll \
  --listen 127.0.0.1:7400 --http 127.0.0.1:7401 --data-dir ./data/queue "$@"
