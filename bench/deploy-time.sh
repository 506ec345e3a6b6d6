#!/usr/bin/env bash
# Time from `wharf deploy` to 100% of traffic on the new release, for 3 replicas of the
# book's Node.js sample app, with the rolling and blue-green strategies.
#
# `wharf deploy` exits 0 only once the new release serves all traffic (the old replicas
# are out of the route table), so the command's wall time is the measure. Each strategy
# alternates v1/v2 RUNS times; the median is compared with the 1.5 s target.
#
# Usage: bench/deploy-time.sh [RUNS]     (PROFILE=release for an optimized build)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
PROFILE=${PROFILE:-debug}
flag=(); [[ $PROFILE == release ]] && flag=(--release)
cargo build -q -p wharf "${flag[@]}"
WHARF=$PWD/target/$PROFILE/wharf

work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && "$WHARF" --data-dir "$work/data" destroy sample --yes >/dev/null 2>&1 || true
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for v in 1 2; do
  mkdir -p "$work/v$v/sample"
  cp examples/sample-app/app.js "$work/v$v/sample/"
  cat > "$work/v$v/sample/wharf.toml" <<TOML
app = "sample"
[env]
VERSION = "$v"
[process.web]
command = "node app.js"
replicas = 3
[process.web.readiness]
http = "/"
interval = "1s"
[process.web.deploy]
keep_previous = "1s"
TOML
done

"$WHARF" server --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [[ -S $work/data/wharf.sock ]] && break; sleep 0.1; done
w() { "$WHARF" --data-dir "$work/data" "$@"; }
w deploy "$work/v1/sample" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "deploy to 100% traffic, 3 replicas of the Node sample app, $RUNS runs each ($PROFILE build)"
for strategy in rolling blue-green; do
  times=()
  for i in $(seq "$RUNS"); do
    v=$(( (i % 2) + 1 ))
    start=$(date +%s%N)
    w deploy "$work/v$v/sample" --strategy "$strategy" >/dev/null
    end=$(date +%s%N)
    times+=( $(( (end - start) / 1000000 )) )
  done
  med=$(printf '%s\n' "${times[@]}" | median)
  ratio=$(awk -v m="$med" 'BEGIN { printf "%.2f", m / 1500 }')
  echo "$strategy: median ${med} ms (runs: ${times[*]} ms); ratio to the 1.5 s target: $ratio"
done
