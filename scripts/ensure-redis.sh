#!/usr/bin/env bash
# Make sure a Redis server answers at REDIS_URL (default redis://127.0.0.1:6379); when
# none does and the URL is local, start one (installing redis-server from the system's
# packages first if it is missing). Used by `make test`, and by `make up` when REDIS_URL is
# set. `--install-only`: only make sure redis-server is installed (`make up` without
# REDIS_URL: `gpt4video up` then runs its own, with an append-only file under DATA_DIR).
set -euo pipefail

install_redis() {
  command -v redis-server >/dev/null && return 0
  echo "redis-server not found: installing it from the system packages" >&2
  sudo_cmd=""; [[ "$(id -u)" -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq redis-server >/dev/null
}
if [[ "${1:-}" == "--install-only" ]]; then install_redis; exit 0; fi

url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
[[ "$port" == "$hostport" ]] && port=6379

answers() {
  { exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && IFS= read -r -t 2 reply <&3 \
    && [[ "$reply" == +PONG* ]]; } 2>/dev/null
  local ok=$?; exec 3>&- 2>/dev/null || true; return $ok
}

if answers; then exit 0; fi
case "$host" in
  127.0.0.1|localhost|::1) ;;
  *) echo "Redis at $url does not answer, and it is not local: start it, or set REDIS_URL" >&2; exit 1 ;;
esac
install_redis
echo "starting redis-server on $host:$port" >&2
redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
  --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/gpt4video-redis.log"
for _ in $(seq 1 50); do answers && exit 0; sleep 0.1; done
echo "redis-server did not come up; see ${TMPDIR:-/tmp}/gpt4video-redis.log" >&2
exit 1
