#!/usr/bin/env bash
# Stop the trytond that tryton/start.sh started (same TRYTON_HOME / TRYTON_RUN_DIR). Safe to run twice.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRYTON_HOME="${TRYTON_HOME:-$(dirname "$HERE")/.tryton}"
RUN_DIR="${TRYTON_RUN_DIR:-$TRYTON_HOME}"
PIDFILE="$RUN_DIR/trytond.pid"

if [ ! -s "$PIDFILE" ]; then
  echo "[tryton] not running (no $PIDFILE)"
  exit 0
fi
pid="$(cat "$PIDFILE")"
# Only signal the pid if it is still a trytond: pids are reused after a crash or a reboot.
if ! kill -0 "$pid" 2>/dev/null || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q trytond; then
  echo "[tryton] stale pid file ($pid is not a running trytond); removed"
  rm -f "$PIDFILE"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL "$pid"
fi
rm -f "$PIDFILE"
echo "[tryton] stopped trytond (pid $pid)"
