#!/usr/bin/env bash
# gRPC load test: voxgate's Envoy rate limit service (ShouldRateLimit) against a bare tonic
# server that answers OK without work (examples/rls_bare.rs), both driven in the same run on
# the same machine by examples/rls_load.rs (HTTP/2 connections with many calls in flight, as
# Envoy keeps to its rate limit cluster). Prints throughput, p50/p99 latency and voxgate's
# throughput as a ratio of the baseline's.
#
#   bench/rls-load.sh [seconds per run, default 8] [connections, default 4] [in flight, default 64] [rounds, default 3]
#
# voxgate runs with bench/bench-catalogue.toml (limits so high that every call is allowed), so
# each call is the full allowed path: descriptor mapping, snapshot lookup, four limits
# evaluated and charged, metering, one status with its binding limit and the RateLimit
# header pair. Builds in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
CONNS=${2:-4}
IN_FLIGHT=${3:-64}
ROUNDS=${4:-3}
VOX_HTTP=18280
VOX_GRPC=18281
BARE=18282

echo "building release binaries..." >&2
cargo build --release -q -p voxgate-server --bin voxgate --example rls_bare --example rls_load

DATA=$(mktemp -d)
cleanup() { kill "${VOX_PID:-}" "${BARE_PID:-}" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

VOXGATE_LOG=warn ./target/release/voxgate serve --listen 127.0.0.1:$VOX_HTTP --grpc-listen 127.0.0.1:$VOX_GRPC \
  --data-dir "$DATA" --config bench/bench-catalogue.toml >/dev/null &
VOX_PID=$!
./target/release/examples/rls_bare 127.0.0.1:$BARE >/dev/null &
BARE_PID=$!
for port in $VOX_GRPC $BARE; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

run() { # name port
  ./target/release/examples/rls_load "127.0.0.1:$2" "$DURATION" "$CONNS" "$IN_FLIGHT" | grep '^RESULT' | sed "s/^RESULT/$1/"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, rls_load ${DURATION}s x $CONNS connections x $IN_FLIGHT in flight, $ROUNDS rounds (alternating)"
for round in $(seq "$ROUNDS"); do
  b=$(run bare $BARE); v=$(run voxgate $VOX_GRPC)
  echo "$b"; echo "$v"
  brps=$(echo "$b" | sed -E 's/.*rps=([0-9]+).*/\1/'); vrps=$(echo "$v" | sed -E 's/.*rps=([0-9]+).*/\1/')
  awk -v r="$round" -v v="$vrps" -v b="$brps" 'BEGIN { printf "round %d: voxgate/bare throughput = %.2f\n", r, v / b }'
done
