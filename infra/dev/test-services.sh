#!/usr/bin/env bash
# Run a command with the test services up: Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (trust auth). A service that is already running is used as it is; one that is
# down is started here and stopped again when the command ends, so `make test` needs no set-up.
#
#   infra/dev/test-services.sh .venv/bin/python -m pytest -q
#
# Redis keeps nothing on disk (--save "" --appendonly no). PostgreSQL is the Debian cluster
# (`pg_ctlcluster`); without the Debian packages, install them (`apt-get install redis-server
# postgresql`) or point the tests at running servers. MIREC_TEST_SERVICES=skip leaves both alone.
set -uo pipefail

REDIS_PORT=${MIREC_TEST_REDIS_PORT:-6379}
started_redis=0
started_pg=0
pg_version=""

log() { echo "test-services: $*" >&2; }

start_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  if ! command -v redis-server >/dev/null; then
    log "Redis is not running on 127.0.0.1:$REDIS_PORT and redis-server is not installed" \
      "(apt-get install redis-server); the Redis tests will fail"
    return
  fi
  local dir
  dir=$(mktemp -d)
  log "starting Redis on 127.0.0.1:$REDIS_PORT (stopped again afterwards)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$dir" --logfile "$dir/redis.log" && started_redis=1
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "Redis did not answer on 127.0.0.1:$REDIS_PORT (log: $dir/redis.log)"
}

start_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ ! -d /etc/postgresql ]; then
    log "PostgreSQL is not running on 127.0.0.1:5432 and no Debian cluster is installed" \
      "(apt-get install postgresql); the PostgreSQL tests will fail"
    return
  fi
  pg_version=$(ls /etc/postgresql | head -n 1)
  log "starting PostgreSQL $pg_version on 127.0.0.1:5432 (stopped again afterwards)"
  pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start && started_pg=1
  for _ in $(seq 100); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && return
    sleep 0.1
  done
  log "PostgreSQL did not become ready on 127.0.0.1:5432"
}

stop_started() {
  if [ "$started_redis" = 1 ]; then
    log "stopping the Redis started for the tests"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  if [ "$started_pg" = 1 ]; then
    log "stopping the PostgreSQL started for the tests"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main stop >/dev/null 2>&1 || true
  fi
}

if [ "${MIREC_TEST_SERVICES:-}" != "skip" ]; then
  trap stop_started EXIT
  start_redis
  start_postgres
fi
"$@"
