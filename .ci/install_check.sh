#!/usr/bin/env bash
# Production install check: does requirements.txt alone run the hub as docker compose runs it?
#
# Builds a clean virtualenv with ONLY requirements.txt (none of the test requirements), migrates the PostgreSQL
# database of DATABASE_URL, collects the static files (as the Dockerfile does), configures a flow CRM -> local target
# (.ci/install_check.py setup, through the hub's services), then starts web (gunicorn), worker and beat with the
# commands of docker-compose.yml, read from it (only the bind address and the beat pidfile are changed: a free port
# and this run's var dir). It waits for /readyz to answer 200, sends one Standard-Webhooks-signed event and polls
# until the message is delivered and the local target holds the record. Every process it started is stopped on exit;
# on failure the last lines of each log are printed. Non-zero on failure.
#
# Environment: DATABASE_URL (PostgreSQL, required; .ci/run gives it a database of its own), REDIS_URL (required;
# its own db number), INSTALL_CHECK_DIR (this run's folder: the venv, the logs and the hub's var dir; default
# var/install-check; emptied first, and only when an earlier check made it), SECRET_KEY / FIELD_ENCRYPTION_KEY
# (random when unset: with DEBUG off on PostgreSQL the hub refuses to start without them),
# INSTALL_CHECK_READY_TIMEOUT (default 180 s), INSTALL_CHECK_DELIVERY_TIMEOUT (default 120 s).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL database of this check}"
: "${REDIS_URL:?set REDIS_URL to a Redis database of this check}"
case "$DATABASE_URL" in postgres://* | postgresql://*) ;; *) echo "DATABASE_URL must be PostgreSQL" >&2; exit 2 ;; esac

VAR="${INSTALL_CHECK_DIR:-$REPO/var/install-check}"
READY_TIMEOUT="${INSTALL_CHECK_READY_TIMEOUT:-180}"
DELIVERY_TIMEOUT="${INSTALL_CHECK_DELIVERY_TIMEOUT:-120}"
VENV="$VAR/venv"
LOGS="$VAR/logs"
PY="$VENV/bin/python"
HELPER="$REPO/.ci/install_check.py"

step() { printf '\n--- install check (%ss): %s\n' "$SECONDS" "$*"; }

if [ -e "$VAR" ] && [ ! -e "$VAR/.install-check" ]; then
  echo "$VAR exists and was not made by this check; set INSTALL_CHECK_DIR to a new folder" >&2
  exit 2
fi
rm -rf "$VAR"
mkdir -p "$VAR" "$LOGS"
touch "$VAR/.install-check"

# As a deployment: DEBUG off, the product's settings, keys given (random ones for this throwaway run), nothing of the
# caller's Python environment.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV DJANGO_ALLOW_ASYNC_UNSAFE CELERY_BROKER_URL
export DEBUG=false DJANGO_SETTINGS_MODULE=integrationhub.settings HUB_VAR_DIR="$VAR" LOG_LEVEL="${LOG_LEVEL:-INFO}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export SECRET_KEY="${SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')}"
export FIELD_ENCRYPTION_KEY="${FIELD_ENCRYPTION_KEY:-$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')}"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
HUB_PORT="$(free_port)"
TARGET_PORT="$(free_port)"
while [ "$TARGET_PORT" = "$HUB_PORT" ]; do TARGET_PORT="$(free_port)"; done
HUB="http://127.0.0.1:$HUB_PORT"

# --- processes: each in its own session, stopped by its id (the whole group: gunicorn's and celery's children) ----
PIDS=()
NAMES=()
start() {  # start NAME CMD...: run CMD in the background with its output in $LOGS/NAME.log
  local name="$1"
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  echo "started $name (pid $!): $*"
}
stop_all() {
  local status=$?
  trap - EXIT INT TERM
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[$i]}"
    kill -0 "$pid" 2>/dev/null && kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[$i]}"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${NAMES[$i]} (pid $pid) did not stop within 20 s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    echo
    echo "install check FAILED (exit $status) after ${SECONDS}s; the last lines of each log ($LOGS):"
    for log in "$LOGS"/*.log; do
      [ -e "$log" ] || continue
      printf '\n===== %s =====\n' "$(basename "$log")"
      tail -n 60 "$log"
    done
  else
    echo "install check passed in ${SECONDS}s"
  fi
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

quiet() {  # quiet NAME CMD...: run CMD with its output in $LOGS/NAME.log (printed on exit when the check fails)
  local name="$1"
  shift
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    echo "failed: $*"
    return 1
  fi
}

# --- a clean venv with requirements.txt only ----------------------------------------------------------------------
step "clean virtualenv with requirements.txt only ($VENV)"
python3 -m venv "$VENV"
quiet pip-upgrade "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
quiet pip-install "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
"$PY" -m pip freeze --disable-pip-version-check | wc -l | xargs printf '%s distributions installed\n'
# Nothing of the test requirements came along (they would hide a missing runtime requirement).
if "$PY" -c 'import pytest' 2>/dev/null; then echo "pytest is importable: the venv is not clean" >&2; exit 1; fi
export PATH="$VENV/bin:$PATH"

# --- the commands of docker-compose.yml ------------------------------------------------------------------------------
# Read from the file, so this check follows it: only the bind address and the beat pidfile change.
compose_command() {  # compose_command SERVICE: its `command:` array, NUL-separated
  python3 - "$1" "$HUB_PORT" "$VAR" <<'PY'
import json, re, sys
service, port, var = sys.argv[1], sys.argv[2], sys.argv[3]
current, command = None, None
for line in open("docker-compose.yml"):
    match = re.match(r"^  ([a-z][\w-]*):\s*$", line)
    if match:
        current = match.group(1)
    match = re.match(r"^\s+command:\s*(\[.*\])\s*$", line)
    if match and current == service:
        command = json.loads(match.group(1))
if command is None:
    sys.exit(f"docker-compose.yml has no command for {service}")
replacements = {"web": ("0.0.0.0:8000", f"127.0.0.1:{port}"), "beat": ("var/celerybeat.pid", f"{var}/celerybeat.pid")}
if service in replacements:
    old, new = replacements[service]
    if not any(old in part for part in command):
        sys.exit(f"docker-compose.yml's {service} command has no {old}: update .ci/install_check.sh")
    command = [part.replace(old, new) for part in command]
sys.stdout.write("\0".join(command) + "\0")
PY
}
mapfile -d '' -t WEB_CMD < <(compose_command web)
mapfile -d '' -t WORKER_CMD < <(compose_command worker)
mapfile -d '' -t BEAT_CMD < <(compose_command beat)
if [ "${#WEB_CMD[@]}" -eq 0 ] || [ "${#WORKER_CMD[@]}" -eq 0 ] || [ "${#BEAT_CMD[@]}" -eq 0 ]; then
  echo "could not read the web, worker and beat commands from docker-compose.yml" >&2
  exit 1
fi

# --- database, static files, the flow ----------------------------------------------------------------------------------
step "migrate (PostgreSQL), collectstatic"
quiet migrate "$PY" manage.py migrate --no-input
quiet collectstatic "$PY" manage.py collectstatic --no-input --verbosity 0

step "local target on 127.0.0.1:$TARGET_PORT, and a flow CRM -> target"
start target "$PY" "$HELPER" target --port "$TARGET_PORT" --out "$VAR/target-records.jsonl"
quiet setup "$PY" "$HELPER" setup --target-url "http://127.0.0.1:$TARGET_PORT" --out "$VAR/flow.json"
tail -n 1 "$LOGS/setup.log"

# --- web, worker, beat ---------------------------------------------------------------------------------------------
step "web, worker and beat as docker compose starts them (web on $HUB)"
start web "${WEB_CMD[@]}"
start worker "${WORKER_CMD[@]}"
start beat "${BEAT_CMD[@]}"

http_status() {  # http_status URL: the status code, or 0 when nothing answers
  "$PY" - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print(0)
PY
}

step "wait for /readyz (database, broker, a live worker) within ${READY_TIMEOUT}s"
deadline=$((SECONDS + READY_TIMEOUT))
ready_from=$SECONDS
while :; do
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      echo "${NAMES[$i]} exited before the hub was ready"
      exit 1
    fi
  done
  status="$(http_status "$HUB/readyz")"
  [ "$status" = 200 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "/readyz still answers $status after ${READY_TIMEOUT}s:"
    "$PY" -c "import urllib.request, sys
try: urllib.request.urlopen(sys.argv[1], timeout=10)
except Exception as e: print(getattr(e, 'read', lambda: b'')().decode()[:2000])" "$HUB/readyz" || true
    exit 1
  fi
  sleep 1
done
echo "/readyz is green after $((SECONDS - ready_from))s"

# --- one signed event, delivered ------------------------------------------------------------------------------------
step "send one signed event and wait until it is delivered (within ${DELIVERY_TIMEOUT}s)"
MESSAGE_ID="$("$PY" "$HELPER" send --hub "$HUB" --flow "$VAR/flow.json")"
echo "stored as message $MESSAGE_ID"
"$PY" "$HELPER" wait-delivered --message-id "$MESSAGE_ID" --target-log "$VAR/target-records.jsonl" \
  --timeout "$DELIVERY_TIMEOUT"
