#!/usr/bin/env bash
# Proxy throughput and tail latency: wharf's router, nginx and haproxy, each with the
# same worker count in front of the same upstream (an nginx answering a fixed body),
# plaintext HTTP/1.1 with keep-alive, loaded by wrk on loopback, in one run.
#
# Usage: bench/router.sh [SECONDS] [CONNECTIONS]      (installs nginx, haproxy and wrk
# with apt-get when missing; builds wharf in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
WORKERS=2

need=()
for p in nginx haproxy wrk; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build -q --release -p wharf
WHARF=$PWD/target/release/wharf

work=$(mktemp -d)
pids=()
cleanup() {
  "$WHARF" --data-dir "$work/data" destroy upstream --yes >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The upstream: nginx answering 64 bytes, deployed as a wharf app so that all three
# proxies reach the very same replica.
mkdir -p "$work/upstream"
cat > "$work/upstream/Procfile" <<'PROC'
web: sh -c 'sed "s/@PORT@/$PORT/" upstream.conf.in > /tmp/upstream.conf && exec nginx -p /tmp -c /tmp/upstream.conf'
PROC
cat > "$work/upstream/upstream.conf.in" <<'CONF'
daemon off;
worker_processes 1;
pid /tmp/upstream.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path /tmp; proxy_temp_path /tmp; fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp;
  server { listen 127.0.0.1:@PORT@; location / { return 200 "0123456789012345678901234567890123456789012345678901234567890123"; } }
}
CONF
router_port=$(free_port)
WHARF_LOG=warn "$WHARF" server --data-dir "$work/data" --listen "127.0.0.1:$router_port" >"$work/wharf.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/data/wharf.sock ]] && break; sleep 0.1; done
"$WHARF" --data-dir "$work/data" deploy "$work/upstream" --app upstream >/dev/null
upstream=$("$WHARF" --data-dir "$work/data" ps --json upstream | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')

nginx_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
daemon off;
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  upstream app { server $upstream; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

haproxy_port=$(free_port)
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend f
  bind 127.0.0.1:$haproxy_port
  default_backend b
backend b
  http-reuse always
  server s1 $upstream
CONF
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!)
sleep 1

run() { # name port -> "rps p99_ms"
  local out
  out=$(wrk -t"$WORKERS" -c"$CONNS" -d"${SECS}s" --latency -H "Host: upstream.localhost" "http://127.0.0.1:$2/")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}

echo "wrk -t$WORKERS -c$CONNS -d${SECS}s, HTTP/1.1 keep-alive, $WORKERS workers each, upstream nginx at $upstream"
read -r w_rps w_p99 < <(run wharf "$router_port")
read -r n_rps n_p99 < <(run nginx "$nginx_port")
read -r h_rps h_p99 < <(run haproxy "$haproxy_port")
printf '%-8s %12s %10s\n' proxy 'requests/s' 'p99 ms'
printf '%-8s %12s %10s\n' wharf "$w_rps" "$w_p99" nginx "$n_rps" "$n_p99" haproxy "$h_rps" "$h_p99"
awk -v w="$w_rps" -v n="$n_rps" -v h="$h_rps" -v wp="$w_p99" -v np="$n_p99" 'BEGIN {
  printf "wharf / nginx requests/s: %.2f (target >= 1.10); wharf / haproxy: %.2f; p99 wharf / nginx: %.2f (target <= 1.00)\n", w/n, w/h, wp/np }'
