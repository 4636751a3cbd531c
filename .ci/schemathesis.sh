#!/usr/bin/env bash
# Fuzz /api/v1/ with schemathesis against a running hub: a bounded number of examples per operation, no 5xx,
# and every response conforms to the OpenAPI schema (documented status code and content type, body valid
# against its schema). Uses the database and cache of the environment (.ci/run gives it a PostgreSQL
# database and a Redis db of its own; without DATABASE_URL a fresh SQLite file under HUB_VAR_DIR), migrates,
# loads the demo firm (no counterpart is called), seeds messages, deliveries, attempts and exception items
# (.ci/schemathesis_seed.py), creates an API key with every scope, starts gunicorn on a free port, runs
# schemathesis, and always stops the server. Non-zero on failure: a 5xx, or an answer whose status code,
# content type or body the schema does not document.
#
# Settings: SCHEMATHESIS_MAX_EXAMPLES (default 10 per operation and phase), SCHEMATHESIS_PHASES (default
# all: examples, coverage, fuzzing, stateful), SCHEMATHESIS_WORKERS (default 1). The `id` of the message,
# exception-item, delivery-attempt and file-drop operations is mostly one of the seeded records (a
# generated config file binds it to them), so their real bodies are checked against the schema; the other
# ids are random and answer 404, which the schema documents.
#
# schemathesis lives in its own virtualenv (var/schemathesis-venv): it brings hypothesis and a pytest
# plugin that the hub's own test suite should not load, and its pins must not move the hub's.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-10}"
PHASES="${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}"
# One client: with two, hypothesis's lambda descriptions parse source on two threads at once and now and then
# fail with "AST constructor recursion depth mismatch", a runtime error of the fuzzer, not of the hub.
WORKERS="${SCHEMATHESIS_WORKERS:-1}"
PY=.venv/bin/python
ST_VENV="${SCHEMATHESIS_VENV:-var/schemathesis-venv}"
export HUB_VAR_DIR="${HUB_VAR_DIR:-$PWD/var/schemathesis}"
# A throwaway deployment: random keys unless given (with DATABASE_URL set and DEBUG off the hub needs real ones).
export SECRET_KEY="${SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')}"
export FIELD_ENCRYPTION_KEY="${FIELD_ENCRYPTION_KEY:-$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')}"
mkdir -p "$HUB_VAR_DIR"
if [ -z "${DATABASE_URL:-}" ]; then
  # Every run starts from the same state: what the previous run's fuzzing created must not steer this one.
  rm -f "$HUB_VAR_DIR"/hub.sqlite3 "$HUB_VAR_DIR"/hub.sqlite3-wal "$HUB_VAR_DIR"/hub.sqlite3-shm
fi

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
# The firm only: the workflow seed sends webhooks and needs a worker, which this run does not start; the
# records the API serves come from the seed script instead.
quiet "$PY" manage.py demo_setup --firm-only
ST_CONFIG="$HUB_VAR_DIR/schemathesis.toml"
"$PY" .ci/schemathesis_seed.py "$ST_CONFIG"
"$PY" manage.py shell -c "
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username='schemathesis', defaults={'is_staff': True})
user.is_superuser = True
user.set_unusable_password()
user.save()
"
KEY="$("$PY" manage.py create_api_key --name "schemathesis $(date -u +%Y%m%dT%H%M%S)" --owner schemathesis --scope all --all-entities --expires-in-days 1)"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
LOG="$HUB_VAR_DIR/schemathesis-gunicorn.log"
step "start gunicorn on 127.0.0.1:$PORT"
# A generous budget: the fuzzer is one client making many calls on purpose.
# No request-line limit: gunicorn's own 414 for a very long query string is the front server's answer, not
# the hub's, and the fuzzer sends such query strings on purpose.
HUB_API_RATE="100000/min" .venv/bin/gunicorn integrationhub.wsgi:application \
  --bind "127.0.0.1:$PORT" --workers 2 --timeout 60 --limit-request-line 0 --access-logfile - >"$LOG" 2>&1 &
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
# Excluded: test-connection (calls the connected system over the network on every example). The inbound
# webhook is in: unsigned requests must get the documented 4xx problems.
status=0
"$ST_VENV/bin/schemathesis" --config-file "$ST_CONFIG" run "http://127.0.0.1:$PORT/api/schema/" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --phases "$PHASES" \
  --workers "$WORKERS" \
  --header "Authorization: Api-Key $KEY" \
  --exclude-path-regex '/test-connection/$' \
  --request-timeout 30 \
  --suppress-health-check all \
  --no-color || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); the last server log lines:"
  tail -40 "$LOG"
fi
exit "$status"
