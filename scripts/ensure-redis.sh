#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 (the integration tests use a real one).
# Starts a throwaway, non-persistent redis-server if none answers; installs it if missing.
set -euo pipefail
ping() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found; installing it (Debian package redis-server)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
echo "starting redis-server on 127.0.0.1:6379 (no persistence)" >&2
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp >/dev/null
for _ in $(seq 1 50); do ping && exit 0; sleep 0.1; done
echo "Redis did not come up on 127.0.0.1:6379" >&2
exit 1
