#!/usr/bin/env bash
# Start throwaway PostgreSQL and Redis servers for the test suite, on free loopback ports,
# installing Debian's packages first when they are missing (nginx too: the e2e tests run
# the deployment's nginx configuration in front of real servers; chromium too: the browser
# client's tests drive Debian's headless Chromium). Prints `export` lines:
#   eval "$(scripts/services.sh start DIR)"   ...   scripts/services.sh stop DIR
set -euo pipefail

find_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

install_missing() {
  local need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  find_pg_bin >/dev/null || need+=(postgresql)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
}

start() {
  local dir="$1"
  install_missing
  mkdir -p "$dir"
  local pg_bin pg_port redis_port runas=()
  pg_bin=$(find_pg_bin)
  pg_port=$(free_port)
  redis_port=$(free_port)
  # PostgreSQL refuses to run as root; use its own system user when we are root.
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    runas=(runuser -u postgres --)
  fi
  "${runas[@]}" "$pg_bin/initdb" -D "$dir/pg" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  "${runas[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 start \
    -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >&2
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >&2
  for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "export REALTIME_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "export REALTIME_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0"
  echo "export REALTIME_TEST_SERVICES_DIR=$dir"
}

stop() {
  local dir="$1" pg_bin
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/pg" ] && pg_bin=$(find_pg_bin); then
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    else
      "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
