#!/usr/bin/env bash
# Makes sure the local services voxgate's tests may use are running: Redis 7 on
# 127.0.0.1:6379 and PostgreSQL 15 on 127.0.0.1:5432 (trust auth). Idempotent: a service
# that answers is left alone. Used by .ci/run; safe to run by hand.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if command -v redis-server >/dev/null; then
  if ! redis_up; then
    echo "starting redis..."
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  fi
  redis_up && echo "redis: up" || { echo "redis: failed to start" >&2; exit 1; }
else
  echo "redis-server not installed; installing" >&2
  apt-get install -y redis-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
  exec "$0" "$@"
fi

if command -v pg_ctlcluster >/dev/null; then
  if ! pg_up; then
    echo "starting postgresql..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  fi
  pg_up && echo "postgresql: up" || { echo "postgresql: failed to start" >&2; exit 1; }
else
  echo "postgresql not installed" >&2
  exit 1
fi
