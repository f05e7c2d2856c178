#!/usr/bin/env bash
# Side-by-side: our load balancer vs HAProxy (and nginx as a proxy), same two nginx backends,
# same wrk load, runs alternated. Prints req/s, p99 latency and proxy CPU µs per request (from
# /proc/<pid>/stat), their medians, and the ratios ours/HAProxy.
#
#   bash bench/compare/lb.sh [runs=3] [duration=10s] [connections=64]
#
# Needs: nginx, haproxy, wrk (installed from Debian packages when missing), the .NET SDK.
set -euo pipefail

RUNS=${1:-3}
DURATION=${2:-10s}
CONNECTIONS=${3:-64}
THREADS=2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/infra-lb-bench.XXXXXX)
B1=19101 B2=19102 OURS=19180 OURS_ADMIN=19181 HAPROXY=19280 NGINX_LB=19380
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() {
  local missing=()
  for tool in nginx haproxy wrk; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1" >&2
  return 1
}

start_backend() { # port
  local dir="$WORK/nginx-$1"
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $dir/logs/error.log crit;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$1 reuseport;
    location = /healthz { return 200 "ok\n"; }
    location / { default_type text/plain; return 200 "hello from $1\n"; }
  }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" &
  PIDS+=($!)
  wait_port "$1"
}

start_haproxy() {
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /healthz
  server s1 127.0.0.1:$B1 check inter 2s
  server s2 127.0.0.1:$B2 check inter 2s
EOF
  haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 &
  PIDS+=($!)
  HAPROXY_PID=$!
  wait_port "$HAPROXY"
}

start_nginx_lb() {
  local dir="$WORK/nginx-lb"
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
daemon off;
error_log $dir/logs/error.log crit;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_LB;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" &
  PIDS+=($!)
  NGINX_LB_PID=$!
  wait_port "$NGINX_LB"
}

start_ours() {
  dotnet build "$ROOT/src/LoadBalancer" -c Release -v q -nologo >/dev/null
  local dll
  dll=$(find "$ROOT/src/LoadBalancer/bin/Release" -name Infra.LoadBalancer.dll | head -n 1)
  dotnet "$dll" --listen "127.0.0.1:$OURS" --admin "127.0.0.1:$OURS_ADMIN" \
    --backend "http://127.0.0.1:$B1" --backend "http://127.0.0.1:$B2" --log-level Warning ${OURS_ARGS:-} >"$WORK/ours.log" 2>&1 &
  PIDS+=($!)
  OURS_PID=$!
  wait_port "$OURS"
}

# CPU time (user+system) of a process and its children/threads, in clock ticks.
cpu_ticks() { # pid...
  local total=0 pid
  for pid in "$@"; do
    for stat in /proc/"$pid"/task/*/stat; do
      [[ -r $stat ]] || continue
      local fields
      read -r -a fields < <(sed 's/^.*) //' "$stat")
      total=$((total + fields[11] + fields[12]))
    done
  done
  echo "$total"
}

children_of() { pgrep -P "$1" | tr '\n' ' '; }

# run NAME PORT PID... -> "reqs p99ms cpu_us_per_req"
run() {
  local name=$1 port=$2
  shift 2
  local pids=("$@") before after out reqs p99 total
  before=$(cpu_ticks "${pids[@]}")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
  after=$(cpu_ticks "${pids[@]}")
  reqs=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  local hz
  hz=$(getconf CLK_TCK)
  local cpu_us
  cpu_us=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$total" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "nan" }')
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%-8s %10.0f req/s  p99 %7.2f ms  %6s µs CPU/req %s\n' "$name" "$reqs" "$p99" "$cpu_us" "$errors" >&2
  echo "$reqs $p99 $cpu_us"
}

median() { sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }

need
start_backend "$B1"
start_backend "$B2"
start_haproxy
start_nginx_lb
start_ours
NGINX_WORKERS=$(children_of "$NGINX_LB_PID")

echo "warm-up ..." >&2
wrk -t2 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$OURS/" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$HAPROXY/" >/dev/null

declare -a D_R H_R H_P H_C O_R O_P O_C N_R N_P N_C
read -r r _ _ < <(run direct "$B1" "$(pgrep -f "nginx-$B1" | head -n1)")
D_R+=("$r")
for i in $(seq 1 "$RUNS"); do
  echo "--- run $i/$RUNS" >&2
  read -r r p c < <(run haproxy "$HAPROXY" "$HAPROXY_PID"); H_R+=("$r"); H_P+=("$p"); H_C+=("$c")
  read -r r p c < <(run ours "$OURS" "$OURS_PID"); O_R+=("$r"); O_P+=("$p"); O_C+=("$c")
  # shellcheck disable=SC2086
  read -r r p c < <(run nginx "$NGINX_LB" $NGINX_WORKERS); N_R+=("$r"); N_P+=("$p"); N_C+=("$c")
done

hr=$(printf '%s\n' "${H_R[@]}" | median); hp=$(printf '%s\n' "${H_P[@]}" | median); hc=$(printf '%s\n' "${H_C[@]}" | median)
or=$(printf '%s\n' "${O_R[@]}" | median); op=$(printf '%s\n' "${O_P[@]}" | median); oc=$(printf '%s\n' "${O_C[@]}" | median)
nr=$(printf '%s\n' "${N_R[@]}" | median); np=$(printf '%s\n' "${N_P[@]}" | median); nc=$(printf '%s\n' "${N_C[@]}" | median)

echo
echo "medians of $RUNS runs (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 2 nginx backends, $(nproc) cores)"
printf '%-22s %10s %10s %14s\n' proxy "req/s" "p99 ms" "CPU µs/req"
printf '%-22s %10.0f %10s %14s\n' "direct to 1 backend" "${D_R[0]}" - -
printf '%-22s %10.0f %10s %14s\n' haproxy "$hr" "$hp" "$hc"
printf '%-22s %10.0f %10s %14s\n' "nginx (as LB)" "$nr" "$np" "$nc"
printf '%-22s %10.0f %10s %14s\n' "infra lb (ours)" "$or" "$op" "$oc"
awk -v or="$or" -v hr="$hr" -v oc="$oc" -v hc="$hc" -v op="$op" -v hp="$hp" 'BEGIN {
  printf "ours/haproxy: throughput %.2fx, p99 %.2fx, CPU per request %.2fx\n", or / hr, op / hp, oc / hc }'
