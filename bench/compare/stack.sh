#!/usr/bin/env bash
# The whole system's first baseline: the default topology under `infra up` (1 LB, 3 web nodes,
# 1 worker, 3 caches, 1 queue, 1 router, 2 shards x master + replica), all on this machine, driven by
# wrk through the load balancer:
#
#   redirect  GET /{code} over 1000 links with a warm cache (req/s, p50, p99)
#   mixed     90 % redirects, 9 % link creation (logged in), 1 % link stats
#
# There is no peer to compare with here; the figures are the baseline later changes are held to.
# Runs alternate redirect / mixed; the medians are printed.
#
#   bash bench/compare/stack.sh [runs=3] [seconds=15] [connections=32]
set -euo pipefail

RUNS=${1:-3}
SECONDS_EACH=${2:-15}
CONNECTIONS=${3:-32}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/compare/stack"
WORK=$(mktemp -d /var/tmp/infra-stack-bench.XXXXXX)
UP_PID=""

cleanup() {
  [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "installing wrk ..." >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

dotnet build "$ROOT/src/Infra.Cli" -c Release -v q -nologo >/dev/null
dotnet "$ROOT/src/Infra.Cli/bin/Release/net10.0/Infra.Cli.dll" up --data-dir "$WORK/data" --lb-port 0 > "$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 180); do grep -q '^Open ' "$WORK/up.log" && break; sleep 1; done
LB=$(grep -o 'Open http://[0-9.:]*' "$WORK/up.log" | cut -d' ' -f2)
[[ -n "$LB" ]] || { cat "$WORK/up.log"; echo "the stack did not come up" >&2; exit 1; }
echo "stack up; load balancer at $LB"

COOKIE=$(curl -s -D - -o /dev/null "$LB/api/signup" -d '{"username":"bench","password":"bench password"}' | grep -i '^set-cookie:' | sed 's/^[^:]*: *//; s/;.*//')
export COOKIE CODES="$WORK/codes.txt"
seq 1 1000 | xargs -P 16 -I{} curl -s -H "Cookie: $COOKIE" "$LB/api/links" -d '{"url":"https://example.com/page/{}"}' \
  | grep -o '"code":"[^"]*"' | cut -d'"' -f4 > "$CODES"
echo "$(wc -l < "$CODES") links created"
while read -r code; do curl -s -o /dev/null "$LB/$code"; done < "$CODES"   # warm the cache

run() { # script -> "rps p50_ms p99_ms errors"
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -s "$HERE/$1.lua" "$LB")
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' <<< "$out")
  p50=$(awk '$1 == "50%" {print $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
  errors=$(awk '/Non-2xx or 3xx/ {print $NF} /Socket errors/ {print $0}' <<< "$out" | tr '\n' ' ')
  echo "$rps $(ms "$p50") $(ms "$p99") ${errors:-0}"
}
ms() { # wrk latency (123.45us / 1.23ms / 1.2s) -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

declare -a RED_RPS RED_P50 RED_P99 MIX_RPS MIX_P50 MIX_P99
for i in $(seq 1 "$RUNS"); do
  read -r rps p50 p99 err <<< "$(run redirect)"; RED_RPS+=("$rps"); RED_P50+=("$p50"); RED_P99+=("$p99")
  echo "run $i redirect: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors: $err"
  read -r rps p50 p99 err <<< "$(run mixed)"; MIX_RPS+=("$rps"); MIX_P50+=("$p50"); MIX_P99+=("$p99")
  echo "run $i mixed:    $rps req/s, p50 $p50 ms, p99 $p99 ms, errors: $err"
done

echo
echo "medians over $RUNS runs of ${SECONDS_EACH}s, $CONNECTIONS connections, 2 wrk threads:"
printf 'redirect (warm cache)  %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n' "$(printf '%s\n' "${RED_RPS[@]}" | median)" "$(printf '%s\n' "${RED_P50[@]}" | median)" "$(printf '%s\n' "${RED_P99[@]}" | median)"
printf 'mixed 90/9/1           %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n' "$(printf '%s\n' "${MIX_RPS[@]}" | median)" "$(printf '%s\n' "${MIX_P50[@]}" | median)" "$(printf '%s\n' "${MIX_P99[@]}" | median)"
dotnet "$ROOT/src/Infra.Cli/bin/Release/net10.0/Infra.Cli.dll" status --data-dir "$WORK/data"
