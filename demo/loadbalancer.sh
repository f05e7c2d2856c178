#!/usr/bin/env bash
# The load balancer in front of two demo backends, all on loopback:
#   proxy http://127.0.0.1:8080, admin http://127.0.0.1:8081, backends :9001 and :9002.
# Extra arguments go to the load balancer (e.g. --algorithm least-connections). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/LoadBalancer -c Release -v q -nologo
dotnet build tests/Infra.TestBackend -c Release -v q -nologo

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for port in 9001 9002; do
  dotnet tests/Infra.TestBackend/bin/Release/net10.0/Infra.TestBackend.dll --name "backend-$port" --listen "127.0.0.1:$port" &
  pids+=($!)
done

dotnet src/LoadBalancer/bin/Release/net10.0/Infra.LoadBalancer.dll \
  --listen 127.0.0.1:8080 --admin 127.0.0.1:8081 \
  --backend http://127.0.0.1:9001 --backend http://127.0.0.1:9002 "$@" &
pids+=($!)
wait "${pids[-1]}"
