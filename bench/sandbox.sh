#!/usr/bin/env bash
# Sandbox start-up benchmark: wharf's sandbox vs `runc run` of a busybox bundle, both
# creating a container, running /bin/true in it and cleaning up, alternating in one run.
# Needs root. Installs runc and busybox-static from Debian when missing.
# Usage: bench/sandbox.sh [ITERATIONS]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (namespaces, cgroups)" >&2; exit 1; }

if ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc busybox-static >/dev/null
fi

work=$(mktemp -d /tmp/wharf-bench-runc-XXXXXX)
trap 'rm -rf "$work"' EXIT
bundle="$work/bundle"
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for tool in sh true; do ln -s busybox "$bundle/rootfs/bin/$tool"; done
(cd "$bundle" && runc spec)
# No terminal, run /bin/true.
python3 - "$bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"), indent=2)
PY

cargo build --release -q -p wharf
cargo build --release -q -p wharf-runtime --example sandbox_bench
echo "runc: $(runc --version | head -1); kernel $(uname -r); $(nproc) cores"
target/release/examples/sandbox_bench "$PWD/target/release/wharf" "$bundle" "${1:-50}"
