#!/usr/bin/env bash
# The cache server on 127.0.0.1:6379 (admin http://127.0.0.1:6380), 256 MB, adaptive eviction.
# Extra arguments go to the server (e.g. --requirepass secret). Ctrl-C stops it.
# Try: redis-cli set hello world; redis-cli get hello; redis-benchmark -t set,get -q; curl localhost:6380/metrics
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/CacheServer -c Release -v q -nologo
exec dotnet src/CacheServer/bin/Release/net10.0/Infra.CacheServer.dll \
  --listen 127.0.0.1:6379 --admin 127.0.0.1:6380 --maxmemory 256mb --maxmemory-policy allkeys-adaptive "$@"
