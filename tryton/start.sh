#!/usr/bin/env bash
# Start the local Tryton in the background on a working copy of the template database.
#
#   bash tryton/start.sh      # serves database `hub` on 127.0.0.1:${TRYTON_PORT:-8011}; tryton/stop.sh stops it
#
# Environment:
#   TRYTON_HOME     where setup.sh put the venv and the template (default <repo>/.tryton)
#   TRYTON_RUN_DIR  where this server keeps its databases, config, pid file and log (default TRYTON_HOME);
#                   the tests use a temporary directory, so they never touch the developer's `hub`
#   TRYTON_DB       the working database(s), space-separated (default hub); each one missing in
#                   RUN_DIR/db is copied from the template first. All are preloaded with -d, because
#                   trytond refuses logins to a database it did not preload.
#   TRYTON_PORT     default 8011
#   TRYTON_SKIP_SETUP=1  do not run setup.sh first (it is quick when everything is ready)
# Each working database's ids (the template's ids.json, or what setup_companies.py found in a database made
# before the companies per legal entity existed) are written to RUN_DIR/db/<db>.ids.json.
# Prints the base URL when the server answers common.server.version.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
TRYTON_HOME="${TRYTON_HOME:-$REPO/.tryton}"
RUN_DIR="${TRYTON_RUN_DIR:-$TRYTON_HOME}"
PORT="${TRYTON_PORT:-8011}"
read -r -a DATABASES <<<"${TRYTON_DB:-hub}"
TEMPLATE="$TRYTON_HOME/db/hub_template.sqlite"
PY="$TRYTON_HOME/venv/bin/python"
PIDFILE="$RUN_DIR/trytond.pid"
LOG="$RUN_DIR/trytond.log"
CONF="$RUN_DIR/trytond.conf"
URL="http://127.0.0.1:$PORT"

say() { printf '[tryton] %s\n' "$*"; }

if [ "${TRYTON_SKIP_SETUP:-0}" != 1 ]; then
  bash "$HERE/setup.sh"
fi
[ -s "$TEMPLATE" ] || { echo "start.sh: no template database at $TEMPLATE; run tryton/setup.sh" >&2; exit 1; }

answers() {
  "$PY" - "$1" <<'EOF'
import json, sys, urllib.request
body = json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode()
request = urllib.request.Request(sys.argv[1] + "/rpc/", body, {"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        sys.exit(0 if json.load(response).get("result") else 1)
except Exception:
    sys.exit(1)
EOF
}

alive() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if alive; then
  if answers "$URL"; then
    say "already running (pid $(cat "$PIDFILE")) at $URL"
    echo "$URL"
    exit 0
  fi
  echo "start.sh: pid $(cat "$PIDFILE") is alive but $URL does not answer; run tryton/stop.sh" >&2
  exit 1
fi

mkdir -p "$RUN_DIR/db"
sed -e "s#@DB_PATH@#$RUN_DIR/db#" -e "s#@LISTEN@#127.0.0.1:$PORT#" "$HERE/trytond.conf.template" >"$CONF"
COMPANIES_STAMP="$(cat "$TRYTON_HOME/db/hub_template.companies" 2>/dev/null || true)"
for db in "${DATABASES[@]}"; do
  target="$RUN_DIR/db/$db.sqlite"
  if [ ! -s "$target" ]; then
    # The sqlite3 backup API gives a consistent copy even if a setup is reading the template.
    "$PY" -c 'import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close()' \
      "$TEMPLATE" "$target.tmp"
    mv "$target.tmp" "$target"
    cp "$TRYTON_HOME/ids.json" "$RUN_DIR/db/$db.ids.json"
    echo "$COMPANIES_STAMP" >"$RUN_DIR/db/$db.companies"
    say "created database $db from the template"
  elif [ -n "$COMPANIES_STAMP" ] && [ "$(cat "$RUN_DIR/db/$db.companies" 2>/dev/null || true)" != "$COMPANIES_STAMP" ]; then
    # A working database made before the template had a company per legal entity: add them in place
    # (additive, nothing in it is replaced), while no server serves it. Its ids go next to it.
    say "adding the companies per legal entity to database $db"
    "$PY" "$HERE/setup_companies.py" "$db" "$CONF" "$TRYTON_HOME/ids.json" "$RUN_DIR/db/$db.ids.json" \
      >>"$LOG" 2>&1 || { echo "start.sh: setup_companies.py failed on $db; see $LOG" >&2; exit 1; }
    echo "$COMPANIES_STAMP" >"$RUN_DIR/db/$db.companies"
  fi
done
rm -f "$PIDFILE"
# setsid: the server must outlive this script and the shell or test session that ran it.
TRYTOND_LOGGING_LEVEL="${TRYTOND_LOGGING_LEVEL:-30}" setsid "$TRYTON_HOME/venv/bin/trytond" \
  -c "$CONF" -d "${DATABASES[@]}" --pidfile "$PIDFILE" >>"$LOG" 2>&1 </dev/null &
launched=$!

for _ in $(seq 1 300); do
  if answers "$URL"; then
    say "trytond running (pid $(cat "$PIDFILE" 2>/dev/null || echo "$launched")) at $URL, databases: ${DATABASES[*]}, log: $LOG"
    echo "$URL"
    exit 0
  fi
  if ! kill -0 "$launched" 2>/dev/null; then
    echo "start.sh: trytond exited; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
echo "start.sh: trytond did not answer on $URL within 60 s; see $LOG" >&2
exit 1
