#!/usr/bin/env bash
# CPU per proxied request: the user and system CPU time a proxy spends per request
# under `wrk -t2 -cCONNECTIONS` (HTTP/1.1 keep-alive, a 64-byte answer), wharf's router
# against nginx with the same worker count (2) in front of an nginx upstream deployed
# as a wharf app, read from /proc/PID/stat around each run (every thread of the wharf
# server, which runs the router; nginx's worker processes). Requests per second say
# little on a shared 2-core machine (wrk competes for the cores); CPU per request is
# what the proxy itself costs.
#
# Usage: bench/router_cpu.sh [ROUNDS] [SECONDS] [CONNECTIONS]     (defaults 5 3 64)
#   WHARF=/path/to/wharf  the binary measured (default: builds this tree in release)
#   BASE=/path/to/wharf   also measures another build (say main's) in each round, with
#                         its own server and upstream replica, for a before/after
# Rounds run the proxies in turn (so a change of the machine's load hits all alike);
# the table gives the medians per proxy. Installs nginx and wrk with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
SECS=${2:-3}
CONNS=${3:-64}

need=()
for p in nginx wrk; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ -z ${WHARF:-} ]]; then
  cargo build -q --release -p wharf
  WHARF=$PWD/target/release/wharf
fi

work=$(mktemp -d)
pids=()
servers=()   # "binary data-dir" of each wharf server, to destroy its app at the end
cleanup() {
  for s in "${servers[@]}"; do
    read -r bin data <<<"$s"
    "$bin" --data-dir "$data" destroy upstream --yes >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

upstream_app "$work/upstream"

# start_wharf NAME BINARY: a wharf server with the upstream app deployed; sets
# PORT_<NAME>, PID_<NAME> and (for nginx's sake) UPSTREAM to its replica's address.
start_wharf() {
  local name=$1 bin=$2 port data=$work/data-$1
  port=$(free_port)
  WHARF_LOG=warn "$bin" server --data-dir "$data" --listen "127.0.0.1:$port" >"$work/$name.log" 2>&1 &
  pids+=($!)
  printf -v "PID_$name" %s "$!"
  printf -v "PORT_$name" %s "$port"
  servers+=("$bin $data")
  for _ in $(seq 100); do [[ -S $data/wharf.sock ]] && break; sleep 0.1; done
  "$bin" --data-dir "$data" deploy "$work/upstream" --app upstream >/dev/null
  UPSTREAM=$("$bin" --data-dir "$data" ps --json upstream | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
}

proxies=(wharf)
start_wharf wharf "$WHARF"
if [[ -n ${BASE:-} ]]; then
  start_wharf base "$BASE"
  proxies+=(base)
fi

# nginx in front of the first wharf server's replica.
PORT_nginx=$(free_port)
{ nginx_head "$work" 2 "$UPSTREAM"; cat <<CONF
  server {
    listen 127.0.0.1:$PORT_nginx;
    $NGINX_LOCATION
  }
}
CONF
} > "$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)
nginx_master=$!
proxies+=(nginx)
sleep 1

# The processes whose CPU counts for a proxy.
processes() {
  case $1 in
    nginx) pgrep -P "$nginx_master" | tr '\n' ' ' ;;
    *) local v="PID_$1"; echo "${!v}" ;;
  esac
}

ticks() { # pids -> "utime stime" summed, in clock ticks
  local u=0 s=0 a b p
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + a)) s=$((s + b))
  done
  echo "$u $s"
}

# measure PROXY -> "requests user_us sys_us total_us" per request
measure() {
  local port="PORT_$1" procs u0 s0 u1 s1 out n
  read -r -a procs <<<"$(processes "$1")"
  read -r u0 s0 < <(ticks "${procs[@]}")
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -H 'Host: upstream.localhost' "http://127.0.0.1:${!port}/")
  read -r u1 s1 < <(ticks "${procs[@]}")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$1: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "%d %.1f %.1f %.1f\n", n, u*1e6/hz/n, s*1e6/hz/n, (u+s)*1e6/hz/n }'
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

echo "wrk -t2 -c$CONNS -d${SECS}s, HTTP/1.1 keep-alive, 2 workers each; $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A REQ USER SYS TOTAL
for ((r = 1; r <= ROUNDS; r++)); do
  line="round $r:"
  for p in "${proxies[@]}"; do
    read -r n u s t < <(measure "$p")
    REQ[$p]+="$n " USER[$p]+="$u " SYS[$p]+="$s " TOTAL[$p]+="$t "
    line+=" $p user $u sys $s total $t us/req ($((n / SECS)) req/s);"
  done
  echo "$line"
done
echo
printf '%-6s %10s %14s %14s %14s\n' proxy 'req/s' 'user us/req' 'sys us/req' 'total us/req'
for p in "${proxies[@]}"; do
  printf '%-6s %10d %14s %14s %14s\n' "$p" $(($(median <<<"${REQ[$p]}") / SECS)) \
    "$(median <<<"${USER[$p]}")" "$(median <<<"${SYS[$p]}")" "$(median <<<"${TOTAL[$p]}")"
done
echo "medians of $ROUNDS rounds; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
