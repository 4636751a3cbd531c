#!/usr/bin/env bash
# Fuzz /api/v1/ with schemathesis against a running hub: a bounded number of examples per operation, no 5xx,
# and every response conforms to the OpenAPI schema. Uses the database and cache of the environment
# (.ci/run exports DATABASE_URL and REDIS_URL), migrates, loads the demo, creates an API key with every
# scope, starts gunicorn on a free port, runs schemathesis, and always stops the server. Non-zero on failure.
#
# schemathesis lives in its own virtualenv (var/schemathesis-venv): it brings hypothesis and a pytest
# plugin that the hub's own test suite should not load, and its pins must not move the hub's.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
PY=.venv/bin/python
ST_VENV="${SCHEMATHESIS_VENV:-var/schemathesis-venv}"
export HUB_VAR_DIR="${HUB_VAR_DIR:-$PWD/var/schemathesis}"
mkdir -p "$HUB_VAR_DIR"

step() { printf '\n--- schemathesis: %s\n' "$*"; }

step "install schemathesis $SCHEMATHESIS_VERSION"
if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$ST_VENV/bin/schemathesis" --version

step "migrate, demo data, API key"
SETUP_LOG="$HUB_VAR_DIR/schemathesis-setup.log"
quiet() { "$@" >>"$SETUP_LOG" 2>&1 || { echo "failed: $*"; tail -40 "$SETUP_LOG"; exit 1; }; }
: >"$SETUP_LOG"
quiet "$PY" manage.py migrate --no-input
quiet "$PY" manage.py collectstatic --no-input
quiet "$PY" manage.py demo_setup
"$PY" manage.py shell -c "
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username='schemathesis', defaults={'is_staff': True})
user.is_superuser = True
user.set_unusable_password()
user.save()
"
KEY="$("$PY" manage.py create_api_key --name "schemathesis $(date -u +%Y%m%dT%H%M%S)" --owner schemathesis --scope all --expires-in-days 1)"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
LOG="$HUB_VAR_DIR/schemathesis-gunicorn.log"
step "start gunicorn on 127.0.0.1:$PORT"
# A generous budget: the fuzzer is one client making many calls on purpose.
HUB_API_RATE="100000/min" .venv/bin/gunicorn integrationhub.wsgi:application \
  --bind "127.0.0.1:$PORT" --workers 2 --timeout 60 --access-logfile - >"$LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap stop_server EXIT

for _ in $(seq 1 60); do
  if "$PY" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2)" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "gunicorn exited"; tail -50 "$LOG"; exit 1; }
  sleep 1
done

step "run (max $MAX_EXAMPLES examples per operation)"
# Excluded: the inbound webhook (signature-authenticated plain view, fuzzed by the sync suite) and
# test-connection (calls the connected system over the network on every example).
status=0
"$ST_VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/schema/" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --header "Authorization: Api-Key $KEY" \
  --exclude-path-regex '^/api/v1/inbound/' \
  --exclude-path-regex '/test-connection/$' \
  --request-timeout 30 \
  --suppress-health-check all \
  --no-color || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the last server log lines:"
  tail -40 "$LOG"
fi
exit "$status"
