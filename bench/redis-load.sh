#!/usr/bin/env bash
# Decisions per second on Redis: voxgate's Redis store (one EVALSHA per decision, all callers
# sharing one pipelined connection) against redis-benchmark's INCR (one round trip per
# operation), both on a redis-server this script starts on a free port, in the same run.
#
#   bench/redis-load.sh [seconds, default 5] [concurrent callers, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
CALLERS=${2:-64}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "building..." >&2
cargo build --release -q -p voxgate-store --example redis_load
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /dev/null
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "# $(date -u +%FT%TZ) $(nproc) cores, redis $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $CALLERS callers, ${SECONDS_PER_RUN}s"
incr=$(redis-benchmark -p "$PORT" -t incr -c "$CALLERS" -n $((CALLERS * 4000)) -q | tr '\r' '\n' | grep "requests per second" | tail -1)
echo "redis-benchmark INCR (1 round trip each): $incr"
"${CARGO_TARGET_DIR:-target}"/release/examples/redis_load "redis://127.0.0.1:$PORT" "$CALLERS" "$SECONDS_PER_RUN" 1000 | sed 's/^RESULT/voxgate redis store, 1000 apps:/'
"${CARGO_TARGET_DIR:-target}"/release/examples/redis_load "redis://127.0.0.1:$PORT" "$CALLERS" "$SECONDS_PER_RUN" 1 | sed 's/^RESULT/voxgate redis store, 1 hot app:/'
"${CARGO_TARGET_DIR:-target}"/release/examples/redis_load "redis://127.0.0.1:$PORT" "$CALLERS" "$SECONDS_PER_RUN" 1 100 | sed 's/^RESULT/voxgate redis store, 1 hot app, local-lease 100 ms:/'
"${CARGO_TARGET_DIR:-target}"/release/examples/redis_load "redis://127.0.0.1:$PORT" "$CALLERS" "$SECONDS_PER_RUN" 1000 100 | sed 's/^RESULT/voxgate redis store, 1000 apps, local-lease 100 ms:/'
