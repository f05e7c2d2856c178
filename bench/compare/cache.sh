#!/usr/bin/env bash
# Side-by-side: our cache server vs Redis 7 (Debian redis-server) and, when it can be installed,
# Garnet (dotnet tool garnet-server). Same redis-benchmark load on each, runs alternated:
#
#   redis-benchmark -c 50 -r 1000000 -t set,get at -P 1 and -P 16
#
# and once more at -P 1 with a two-thread client (--threads 2): at -P 1 the single-threaded client is
# what limits every server (it runs at ~97% of a core against Redis and against ours alike), so this
# column shows the servers once the client can push harder. (Its runs are longer: a threaded
# redis-benchmark spends ~0.25 s finishing, which a short run would count as time without requests.)
#
# then memory per key: a fresh process of each, 1,000,000 SETs of a 16-byte key and a 32-byte value
# through redis-cli --pipe, (RSS after - RSS before) / keys.
#
#   bash bench/compare/cache.sh [runs=3] [requests_p1=300000] [requests_p16=3000000] [requests_p1_2threads=1000000]
#
# GARNET=0 skips Garnet. OURS_ENV="NAME=value ..." sets environment variables for our server only
# (e.g. OURS_ENV=INFRA_EPOLL_THREADS=2). OURS_B_ENV="NAME=value ..." adds a second copy of our server
# with those variables, as one more server in the alternation ("ours-b"), for A/B runs. Needs redis-server, redis-tools (installed
# from Debian packages when missing), the .NET SDK.
set -euo pipefail

RUNS=${1:-3}
N1=${2:-300000}
N16=${3:-3000000}
N1T2=${4:-1000000}
KEYS=1000000
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/infra-cache-bench.XXXXXX)
REDIS=19479 OURS=19579 OURS_ADMIN=19580 OURS_B=19581 OURS_B_ADMIN=19582 GARNET_PORT=19679
GARNET_BIN=${GARNET_BIN:-$HOME/.dotnet/tools/garnet-server}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [[ ${GARNET:-1} != 0 && ! -x $GARNET_BIN ]]; then
    echo "installing garnet-server (dotnet tool) ..." >&2
    dotnet tool install --global garnet-server >/dev/null 2>&1 || echo "garnet-server could not be installed; skipping Garnet" >&2
  fi
  if [[ ${GARNET:-1} != 0 && -x $GARNET_BIN ]]; then WITH_GARNET=1; else WITH_GARNET=0; fi
}

wait_ping() { # port
  for _ in $(seq 1 200); do
    [[ $(redis-cli -p "$1" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.1
  done
  echo "nothing answers PING on $1" >&2
  return 1
}

OURS_DLL=
build_ours() {
  dotnet build "$ROOT/src/CacheServer" -c Release -v q -nologo >/dev/null
  OURS_DLL=$(find "$ROOT/src/CacheServer/bin/Release" -name Infra.CacheServer.dll | head -n 1)
}

# start NAME PORT -> sets STARTED_PID
start() {
  case $1 in
    redis)
      redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --loglevel warning \
        >"$WORK/redis-$2.log" 2>&1 &
      ;;
    ours)
      env ${OURS_ENV:-} dotnet "$OURS_DLL" --listen "127.0.0.1:$2" --admin "127.0.0.1:$OURS_ADMIN" --log-level Warning \
        >"$WORK/ours-$2.log" 2>&1 &
      ;;
    ours-b)
      env ${OURS_B_ENV:-} dotnet "$OURS_DLL" --listen "127.0.0.1:$2" --admin "127.0.0.1:$OURS_B_ADMIN" --log-level Warning \
        >"$WORK/ours-b-$2.log" 2>&1 &
      ;;
    garnet)
      "$GARNET_BIN" --port "$2" --bind 127.0.0.1 -q >"$WORK/garnet-$2.log" 2>&1 &
      ;;
  esac
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_ping "$2"
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# bench PORT CONFIG -> "set_ops get_ops"; CONFIG is 1 or 16 (the pipeline depth) or 1t2 (P1 with a
# two-thread client: redis-benchmark --threads 2)
bench() {
  local n=$N1 pipeline=${2%t2} threads=()
  [[ $pipeline -gt 1 ]] && n=$N16
  [[ $2 == *t2 ]] && n=$N1T2 threads=(--threads 2)
  local out
  out=$(redis-benchmark -h 127.0.0.1 -p "$1" -c 50 -r 1000000 -n "$n" -t set,get -P "$pipeline" "${threads[@]}" -q 2>/dev/null | tr '\r' '\n')
  local set get
  set=$(awk -F'[: ]+' '/^SET/ {print $2}' <<<"$out" | tail -n 1)
  get=$(awk -F'[: ]+' '/^GET/ {print $2}' <<<"$out" | tail -n 1)
  echo "$set $get"
}

median() { sort -g | awk '{a[NR]=$1} END { if (NR % 2) printf "%.0f\n", a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }

make_load() {
  # 16-byte keys (key:%012d) and 32-byte values, as RESP for redis-cli --pipe.
  awk -v n="$KEYS" 'BEGIN {
    v = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";
    for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$32\r\n%s\r\n", i, v }' >"$WORK/load.resp"
}

# memory NAME PORT -> bytes per key
memory() {
  start "$1" "$2"
  local pid=$STARTED_PID
  sleep 1
  local before after keys
  before=$(rss_kb "$pid")
  redis-cli -p "$2" --pipe <"$WORK/load.resp" >/dev/null
  keys=$(redis-cli -p "$2" DBSIZE)
  sleep 1
  after=$(rss_kb "$pid")
  stop "$pid"
  if [[ $keys != "$KEYS" ]]; then
    echo "$1 holds $keys keys, expected $KEYS" >&2
  fi
  awk -v a="$after" -v b="$before" -v k="$keys" 'BEGIN { printf "%.0f\n", (a - b) * 1024 / k }'
}

need
build_ours
SERVERS=(redis ours)
[[ -n ${OURS_B_ENV:-} ]] && SERVERS+=(ours-b)
((WITH_GARNET)) && SERVERS+=(garnet)
declare -A PORT=([redis]=$REDIS [ours]=$OURS [ours-b]=$OURS_B [garnet]=$GARNET_PORT)
declare -A R

for name in "${SERVERS[@]}"; do
  start "$name" "${PORT[$name]}"
  eval "PID_${name//-/_}=$STARTED_PID"
  redis-benchmark -h 127.0.0.1 -p "${PORT[$name]}" -c 50 -r 1000000 -n 200000 -t set,get -P 16 -q >/dev/null 2>&1 # warm-up
done

for i in $(seq 1 "$RUNS"); do
  echo "--- run $i/$RUNS" >&2
  for p in 1 16 1t2; do
    for name in "${SERVERS[@]}"; do
      read -r s g < <(bench "${PORT[$name]}" "$p")
      printf '%-7s P%-3s SET %10.0f  GET %10.0f ops/s\n' "$name" "$p" "$s" "$g" >&2
      R[$name,$p,set]+="$s "
      R[$name,$p,get]+="$g "
    done
  done
done

for name in "${SERVERS[@]}"; do
  pid_var=PID_${name//-/_}
  stop "${!pid_var}"
done

echo "memory per key ($KEYS keys, 16-byte key, 32-byte value) ..." >&2
make_load
declare -A MEM
for name in "${SERVERS[@]}"; do
  MEM[$name]=$(memory "$name" "${PORT[$name]}")
  echo "$name ${MEM[$name]} bytes/key" >&2
done

med() { tr ' ' '\n' <<<"${R[$1,$2,$3]}" | grep -v '^$' | median; }

echo
echo "medians of $RUNS runs (redis-benchmark -c 50 -r 1000000 -t set,get; -n $N1 at P1, $N16 at P16, $N1T2 at P1 with --threads 2; $(nproc) cores)"
printf '%-10s %12s %12s %12s %12s %12s %14s %14s\n' server "P1 SET" "P1 GET" "P16 SET" "P16 GET" "bytes/key" "P1 SET 2thr" "P1 GET 2thr"
for name in "${SERVERS[@]}"; do
  printf '%-10s %12s %12s %12s %12s %12s %14s %14s\n' "$name" "$(med "$name" 1 set)" "$(med "$name" 1 get)" "$(med "$name" 16 set)" "$(med "$name" 16 get)" "${MEM[$name]}" "$(med "$name" 1t2 set)" "$(med "$name" 1t2 get)"
done
for mine in ours ours-b; do
  [[ -n ${MEM[$mine]:-} ]] || continue
  for peer in "${SERVERS[@]}"; do
    [[ $peer == ours || $peer == ours-b ]] && continue
    awk -v a="$(med "$mine" 1 set)" -v b="$(med "$peer" 1 set)" -v c="$(med "$mine" 1 get)" -v d="$(med "$peer" 1 get)" \
        -v e="$(med "$mine" 16 set)" -v f="$(med "$peer" 16 set)" -v g="$(med "$mine" 16 get)" -v h="$(med "$peer" 16 get)" \
        -v m="${MEM[$mine]}" -v n="${MEM[$peer]}" -v i="$(med "$mine" 1t2 set)" -v j="$(med "$peer" 1t2 set)" \
        -v k="$(med "$mine" 1t2 get)" -v l="$(med "$peer" 1t2 get)" -v peer="$peer" -v mine="$mine" 'BEGIN {
      printf "%s/%s: P1 SET %.2fx, P1 GET %.2fx, P16 SET %.2fx, P16 GET %.2fx, bytes/key %.2fx; P1 with a 2-thread client: SET %.2fx, GET %.2fx\n", mine, peer, a / b, c / d, e / f, g / h, m / n, i / j, k / l }'
  done
done
