#!/usr/bin/env bash
# HTTP load test: voxgate's POST /v1/check against a bare axum handler that returns a fixed
# 200, both driven by wrk in the same run on the same machine. Prints throughput, p50/p99
# latency and voxgate's throughput as a ratio of the baseline's.
#
#   bench/http-load.sh [seconds per run, default 10] [connections, default 32] [rounds, default 3]
#
# Needs wrk (installed from Debian's packages if missing). Builds in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-32}
ROUNDS=${3:-3}
VOX_PORT=18180
BARE_PORT=18181

if ! command -v wrk >/dev/null; then
  echo "installing wrk..." >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

echo "building release binaries..." >&2
cargo build --release -q -p voxgate-server --bin voxgate --example bare

DATA=$(mktemp -d)
cleanup() { kill "${VOX_PID:-}" "${BARE_PID:-}" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

VOXGATE_LOG=warn ./target/release/voxgate serve --listen 127.0.0.1:$VOX_PORT --grpc-listen 127.0.0.1:0 --data-dir "$DATA" \
  --config bench/bench-catalogue.toml >/dev/null &
VOX_PID=$!
./target/release/examples/bare 127.0.0.1:$BARE_PORT >/dev/null &
BARE_PID=$!
for port in $VOX_PORT $BARE_PORT; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

run() { # name port
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s bench/check.lua "http://127.0.0.1:$2" | grep '^RESULT' | sed "s/^RESULT/$1/"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds (alternating)"
for round in $(seq "$ROUNDS"); do
  b=$(run bare $BARE_PORT); v=$(run voxgate $VOX_PORT)
  echo "$b"; echo "$v"
  brps=$(echo "$b" | sed -E 's/.*rps=([0-9]+).*/\1/'); vrps=$(echo "$v" | sed -E 's/.*rps=([0-9]+).*/\1/')
  awk -v r="$round" -v v="$vrps" -v b="$brps" 'BEGIN { printf "round %d: voxgate/bare throughput = %.2f\n", r, v / b }'
done
