#!/usr/bin/env bash
# Proxy throughput and tail latency: wharf's router, nginx and haproxy, each with the
# same worker count in front of the same upstream (an nginx answering a fixed body),
# loaded on loopback in one run: plaintext HTTP/1.1 with keep-alive by wrk, then h2c
# (HTTP/2 with prior knowledge) by h2load with H2_STREAMS concurrent streams per
# connection (default 10); then the same two over TLS 1.3 (HTTPS with keep-alive by
# wrk, h2 by ALPN by h2load), every proxy serving the same certificate and key (an
# ECDSA P-256 one made here with openssl; wharf's from the route's `tls` files).
# Upstream connections stay plaintext HTTP/1.1 for all three. All three do the same
# header work per request (wharf's contract): X-Forwarded-For/-Proto/-Host, an
# X-Request-Id sent upstream and returned, a traceparent started (NGINX_LOCATION in
# bench/lib.sh, haproxy_fields below).
#
# Usage: bench/router.sh [SECONDS] [CONNECTIONS]      (installs nginx, haproxy, wrk and
# h2load (nghttp2-client) with apt-get when missing; builds wharf in release mode, or
# uses the binary WHARF names). PARTS="h1 h2c tls h2tls" (the default) picks the parts;
# ROUNDS (default 3) runs the three proxies that many times in turn per part and prints
# medians, since one run of each on a shared machine says little.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-10}
CONNS=${2:-64}
WORKERS=2
H2_STREAMS=${H2_STREAMS:-10}
ROUNDS=${ROUNDS:-3}   # rounds of the three proxies in turn; the table shows medians
PARTS=${PARTS:-h1 h2c tls h2tls}
part() { [[ " $PARTS " == *" $1 "* ]]; }

need=()
for p in nginx haproxy wrk; do command -v "$p" >/dev/null || need+=("$p"); done
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ -z ${WHARF:-} ]]; then   # WHARF=/path/to/wharf compares another build
  cargo build -q --release -p wharf
  WHARF=$PWD/target/release/wharf
fi

work=$(mktemp -d)
pids=()
cleanup() {
  "$WHARF" --data-dir "$work/data" destroy upstream --yes >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The certificate all three proxies serve over TLS: names the hosts wrk and h2load
# connect to (SNI `localhost`, which resolves here) and route by (`upstream.localhost`).
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,DNS:upstream.localhost' \
  -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
cat "$work/tls/cert.pem" "$work/tls/key.pem" >"$work/tls/haproxy.pem"

# The upstream (bench/lib.sh). Its route also names `localhost`, so that wharf's TLS
# listener picks the route's certificate for SNI `localhost`.
upstream_app "$work/upstream" "tls = { cert = \"$work/tls/cert.pem\", key = \"$work/tls/key.pem\" }"
router_port=$(free_port)
router_tls_port=$(free_port)
WHARF_LOG=warn "$WHARF" server --data-dir "$work/data" --listen "127.0.0.1:$router_port" \
  --listen-tls "127.0.0.1:$router_tls_port" >"$work/wharf.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/data/wharf.sock ]] && break; sleep 0.1; done
"$WHARF" --data-dir "$work/data" deploy "$work/upstream" --app upstream >/dev/null
upstream=$("$WHARF" --data-dir "$work/data" ps --json upstream | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')

nginx_port=$(free_port)
nginx_h2_port=$(free_port)
nginx_tls_port=$(free_port)
{ nginx_head "$work" "$WORKERS" "$upstream"; cat <<CONF
  server {
    listen 127.0.0.1:$nginx_port;
    $NGINX_LOCATION
  }
  # h2c with prior knowledge (nginx < 1.25: "listen ... http2" on a plaintext port)
  server {
    listen 127.0.0.1:$nginx_h2_port http2;
    http2_max_concurrent_streams 128;
    $NGINX_LOCATION
  }
  # HTTPS, TLS 1.3 only; h2 or HTTP/1.1 by ALPN
  server {
    listen 127.0.0.1:$nginx_tls_port ssl http2;
    ssl_certificate $work/tls/cert.pem;
    ssl_certificate_key $work/tls/key.pem;
    ssl_protocols TLSv1.3;
    http2_max_concurrent_streams 128;
    $NGINX_LOCATION
  }
}
CONF
} > "$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

# haproxy_fields PROTO: the header work of wharf's router (as NGINX_LOCATION in
# bench/lib.sh): X-Forwarded-Proto/-Host (X-Forwarded-For is `option forwardfor`), an
# X-Request-Id of 32 hex digits (`hex` writes a random 32-bit number as 16 digits)
# sent upstream and returned, a W3C traceparent.
haproxy_fields() {
  cat <<FIELDS
  unique-id-format %[rand(4294967295),hex]%[rand(4294967295),hex]
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto $1
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header traceparent 00-%[unique-id,lower]-%[rand(4294967295),hex,lower]-01
  http-response set-header X-Request-Id %[unique-id]
FIELDS
}

haproxy_port=$(free_port)
haproxy_h2_port=$(free_port)
haproxy_tls_port=$(free_port)
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  # Each thread on a CPU of its own, as wharf pins its router workers.
  cpu-map auto:1/1-$WORKERS 0-$((WORKERS - 1))
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend f
  bind 127.0.0.1:$haproxy_port
$(haproxy_fields http)
  default_backend b
frontend f2
  bind 127.0.0.1:$haproxy_h2_port proto h2
$(haproxy_fields http)
  default_backend b
frontend f3
  bind 127.0.0.1:$haproxy_tls_port ssl crt $work/tls/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
$(haproxy_fields https)
  default_backend b
backend b
  http-reuse always
  server s1 $upstream
CONF
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!)
sleep 1

run() { # url -> "rps p99_ms"; fails when any answer was not 2xx/3xx or a socket erred
  local out
  out=$(wrk -t"$WORKERS" -c"$CONNS" -d"${SECS}s" --latency -H "Host: upstream.localhost" "$1")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$1: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2
  fi
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}

table() { # w_rps w_p99 n_rps n_p99 h_rps h_p99
  printf '%-8s %12s %10s\n' proxy 'requests/s' 'p99 ms'
  printf '%-8s %12s %10s\n' wharf "$1" "$2" nginx "$3" "$4" haproxy "$5" "$6"
  awk -v w="$1" -v n="$3" -v h="$5" -v wp="$2" -v np="$4" 'BEGIN {
    printf "wharf / nginx requests/s: %.2f (target >= 1.10); wharf / haproxy: %.2f; p99 wharf / nginx: %.2f (target <= 1.00)\n", w/n, w/h, wp/np }'
}

run_h2() { # url -> "rps p99_ms"; p99 from h2load's per-request log
  local log
  log="$work/h2load-$(tr -c 'a-z0-9' _ <<<"$1").log"
  local out
  out=$(h2load -D "$SECS" -c "$CONNS" -m "$H2_STREAMS" -t "$WORKERS" \
    -H ':authority: upstream.localhost' --log-file="$log" "$1")
  grep -E '^requests:' <<<"$out" >&2
  if [[ $1 == https:* ]]; then grep -E '^(TLS Protocol|Cipher|Application protocol):' <<<"$out" | tr '\n' ' ' >&2; echo >&2; fi
  local rps p99
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  p99=$(awk -F'\t' '$2 == 200 {print $3}' "$log" | sort -n |
    awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", v[i]/1000}')
  echo "$rps $p99"
}

# Each TLS listener serves the certificate made above, negotiates TLS 1.3 and routes
# SNI `localhost` + Host `upstream.localhost` to the upstream (200).
check_tls() { # port
  local got
  got=$(curl -sS --cacert "$work/tls/cert.pem" --resolve "localhost:$1:127.0.0.1" -H 'Host: upstream.localhost' \
    -o /dev/null -w '%{http_code}' "https://localhost:$1/")
  [[ $got == 200 ]] || { echo "https on port $1 answered $got" >&2; exit 1; }
  openssl s_client -brief -connect "127.0.0.1:$1" -servername localhost -CAfile "$work/tls/cert.pem" \
    -verify_return_error </dev/null 2>&1 | grep -qE '^Protocol version: TLSv1.3' ||
    { echo "port $1 did not negotiate TLS 1.3 with the bench certificate" >&2; exit 1; }
}

median() { tr ' ' '\n' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# loader wharf_url nginx_url haproxy_url: ROUNDS rounds of the three in turn (so a
# change of the machine's load hits all three alike), each round's ratios, then the
# table of medians and the median of the rounds' ratios.
compare() {
  local w_rps w_p99 n_rps n_p99 h_rps h_p99 r
  local W=() WP=() N=() NP=() H=() HP=() RATIO=() P99RATIO=()
  for ((r = 1; r <= ROUNDS; r++)); do
    read -r w_rps w_p99 < <("$1" "$2")
    read -r n_rps n_p99 < <("$1" "$3")
    read -r h_rps h_p99 < <("$1" "$4")
    W+=("$w_rps") WP+=("$w_p99") N+=("$n_rps") NP+=("$n_p99") H+=("$h_rps") HP+=("$h_p99")
    RATIO+=("$(awk -v w="$w_rps" -v n="$n_rps" 'BEGIN {printf "%.3f", w/n}')")
    P99RATIO+=("$(awk -v w="$w_p99" -v n="$n_p99" 'BEGIN {printf "%.3f", w/n}')")
    if ((ROUNDS > 1)); then
      echo "round $r: wharf $w_rps req/s p99 $w_p99 ms, nginx $n_rps p99 $n_p99, haproxy $h_rps p99 $h_p99; wharf/nginx ${RATIO[-1]}, p99 ${P99RATIO[-1]}"
    fi
  done
  table "$(median <<<"${W[*]}")" "$(median <<<"${WP[*]}")" "$(median <<<"${N[*]}")" \
    "$(median <<<"${NP[*]}")" "$(median <<<"${H[*]}")" "$(median <<<"${HP[*]}")"
  if ((ROUNDS > 1)); then
    echo "median of the $ROUNDS rounds' ratios: wharf / nginx requests/s $(median <<<"${RATIO[*]}"), p99 $(median <<<"${P99RATIO[*]}")"
  fi
}

if part h1; then
  echo "wrk -t$WORKERS -c$CONNS -d${SECS}s, HTTP/1.1 keep-alive, $WORKERS workers each, upstream nginx at $upstream"
  compare run "http://127.0.0.1:$router_port/" "http://127.0.0.1:$nginx_port/" "http://127.0.0.1:$haproxy_port/"
fi

if part h2c; then
  echo
  echo "h2load -D $SECS -c $CONNS -m $H2_STREAMS -t $WORKERS, h2c prior knowledge, upstream HTTP/1.1"
  compare run_h2 "http://127.0.0.1:$router_port/" "http://127.0.0.1:$nginx_h2_port/" "http://127.0.0.1:$haproxy_h2_port/"
fi

if part tls || part h2tls; then
  for port in "$router_tls_port" "$nginx_tls_port" "$haproxy_tls_port"; do check_tls "$port"; done
fi

if part tls; then
  echo
  echo "wrk -t$WORKERS -c$CONNS -d${SECS}s, HTTPS (TLS 1.3, SNI localhost) HTTP/1.1 keep-alive, upstream HTTP/1.1"
  compare run "https://localhost:$router_tls_port/" "https://localhost:$nginx_tls_port/" "https://localhost:$haproxy_tls_port/"
fi

if part h2tls; then
  echo
  echo "h2load -D $SECS -c $CONNS -m $H2_STREAMS -t $WORKERS, h2 over TLS 1.3 (ALPN), upstream HTTP/1.1"
  compare run_h2 "https://localhost:$router_tls_port/" "https://localhost:$nginx_tls_port/" "https://localhost:$haproxy_tls_port/"
fi
