#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start a stopped one, or fail clearly.
set -u
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it."
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start 2>&1 || true
  for _ in $(seq 20); do pg_up && break; sleep 0.5; done
  pg_up || { echo "ERROR: PostgreSQL could not be started. Install and start it (trust auth for 127.0.0.1), or set PG_URL."; exit 1; }
fi
if ! redis_up; then
  echo "Redis is not answering on 127.0.0.1:6379; starting it."
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log 2>&1 || true
  for _ in $(seq 20); do redis_up && break; sleep 0.5; done
  redis_up || { echo "ERROR: Redis could not be started. Install and start it, or set REDIS_URL."; exit 1; }
fi
echo "PostgreSQL and Redis are up."
