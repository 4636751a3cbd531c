#!/usr/bin/env bash
# Build the hub's local Tryton 8.2: its own venv and a prepared SQLite template database.
#
#   bash tryton/setup.sh            # venv + template db (idempotent: a second run takes about a second)
#   bash tryton/setup.sh --start    # the same, then tryton/start.sh (a working copy `hub`, server on :8011)
#   bash tryton/setup.sh --rebuild  # throw the template away and build it again
#
# Environment: TRYTON_HOME (default <repo>/.tryton), TRYTON_PYTHON (an interpreter >= 3.10; default
# python3.11, then python3). Everything it writes stays under TRYTON_HOME:
#   venv/            trytond + modules from tryton/requirements.txt
#   admin.pass       the admin password (generated, mode 600)   hub.pass  the `hub` user's password
#   setup.conf       the trytond.conf used to build the template
#   db/hub_template.sqlite  the prepared database; start.sh copies it, nobody serves it
#   db/hub_template.ready   marker: the requirements stamp it was built with
#   ids.json         the ids setup_accounting.py created (company, product, employee, ...)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
TRYTON_HOME="${TRYTON_HOME:-$REPO/.tryton}"
TEMPLATE_DB="hub_template"
MODULES=(project_invoice project_revenue timesheet_cost sale_opportunity timesheet)
VENV="$TRYTON_HOME/venv"
DB_DIR="$TRYTON_HOME/db"
CONF="$TRYTON_HOME/setup.conf"

start_after=0
rebuild=0
for arg in "$@"; do
  case "$arg" in
    --start) start_after=1 ;;
    --rebuild) rebuild=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

now() { date +%s.%N; }
T0="$(now)"
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '[tryton] %s\n' "$*"; }

mkdir -p "$TRYTON_HOME" "$DB_DIR"
# The folder holds passwords and databases: it ignores itself, whatever the repo's .gitignore says.
[ -f "$TRYTON_HOME/.gitignore" ] || echo '*' >"$TRYTON_HOME/.gitignore"
# One setup at a time: `make tryton` and a test session may both get here on a fresh checkout.
exec 9>"$TRYTON_HOME/setup.lock"
flock 9

pick_python() {
  local candidate
  for candidate in "${TRYTON_PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "setup.sh: no Python >= 3.10 found (set TRYTON_PYTHON)" >&2
  return 1
}

# --- 1. the venv -------------------------------------------------------------------------------------
PY_BASE="$(pick_python)"
STAMP="$(cat "$HERE/requirements.txt" <("$PY_BASE" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.installed" 2>/dev/null || true)" != "$STAMP" ]; then
  t="$(now)"
  say "creating $VENV with $PY_BASE"
  rm -rf "$VENV"
  "$PY_BASE" -m venv "$VENV"
  # pip's output goes to a log: this machine's pip config warns once per package about a missing local index.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" \
    >"$TRYTON_HOME/pip.log" 2>&1 || { tail -n 40 "$TRYTON_HOME/pip.log" >&2; exit 1; }
  echo "$STAMP" >"$VENV/.installed"
  say "venv ready in $(elapsed "$t") s"
  rebuild=1
fi
PY="$VENV/bin/python"

# --- 2. secrets and configuration --------------------------------------------------------------------
make_secret() {
  local file="$1"
  if [ ! -s "$file" ]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$file")
    rebuild=1
  fi
}
make_secret "$TRYTON_HOME/admin.pass"
make_secret "$TRYTON_HOME/hub.pass"
sed -e "s#@DB_PATH@#$DB_DIR#" -e "s#@LISTEN@#127.0.0.1:0#" "$HERE/trytond.conf.template" >"$CONF"

# --- 3. the template database ------------------------------------------------------------------------
template_ready() {
  [ -s "$DB_DIR/$TEMPLATE_DB.sqlite" ] || return 1
  [ -s "$TRYTON_HOME/ids.json" ] || return 1
  [ "$(cat "$DB_DIR/$TEMPLATE_DB.ready" 2>/dev/null || true)" = "$STAMP" ] || return 1
  # The marker alone could survive a half-copied file: ask ir_module too, and check that the fiscal
  # years still cover today (a template built last year cannot post this year's invoices).
  "$PY" - "$DB_DIR/$TEMPLATE_DB.sqlite" "$TRYTON_HOME/ids.json" "${MODULES[@]}" <<'EOF'
import datetime, json, sqlite3, sys
path, ids_path, *modules = sys.argv[1:]
con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
marks = ",".join("?" * len(modules))
(count,) = con.execute(
    f"SELECT count(*) FROM ir_module WHERE state = 'activated' AND name IN ({marks})", modules
).fetchone()
ids = json.load(open(ids_path))
covered = ids["fiscal_coverage"][1] >= datetime.date.today().isoformat()
sys.exit(0 if count == len(modules) and covered else 1)
EOF
}

if [ "$rebuild" = 0 ] && template_ready; then
  say "template database $TEMPLATE_DB is ready (nothing to do)"
else
  say "building template database $TEMPLATE_DB"
  rm -f "$DB_DIR/$TEMPLATE_DB.sqlite" "$DB_DIR/$TEMPLATE_DB.sqlite-journal" "$DB_DIR/$TEMPLATE_DB.ready" "$DB_DIR/$TEMPLATE_DB.companies" \
    "$TRYTON_HOME/ids.json"
  : >"$DB_DIR/$TEMPLATE_DB.sqlite" # trytond-admin refuses an SQLite database whose file does not exist
  t="$(now)"
  # --email answers the first-init prompt, TRYTONPASSFILE the password prompt: no stdin needed.
  TRYTONPASSFILE="$TRYTON_HOME/admin.pass" "$VENV/bin/trytond-admin" -c "$CONF" -d "$TEMPLATE_DB" \
    --all -u "${MODULES[@]}" --activate-dependencies --email admin@hub.localhost \
    >"$TRYTON_HOME/setup.log" 2>&1 || { tail -n 40 "$TRYTON_HOME/setup.log" >&2; exit 1; }
  say "trytond-admin (modules) in $(elapsed "$t") s"
  t="$(now)"
  "$PY" "$HERE/setup_accounting.py" "$TEMPLATE_DB" "$CONF" "$TRYTON_HOME/hub.pass" "$TRYTON_HOME/ids.json.tmp" \
    >>"$TRYTON_HOME/setup.log" 2>&1 || { tail -n 40 "$TRYTON_HOME/setup.log" >&2; exit 1; }
  mv "$TRYTON_HOME/ids.json.tmp" "$TRYTON_HOME/ids.json"
  echo "$STAMP" >"$DB_DIR/$TEMPLATE_DB.ready"
  say "accounting setup in $(elapsed "$t") s; ids in $TRYTON_HOME/ids.json"
fi

# --- 4. the firm's people as employees (a separate, idempotent step) -----------------------------------
# The hub books each person's time to their own employee; the demo's PSA people are linked to these.
EMPLOYEES=("Alice Hartley" "Ben Okafor" "Chloe Martin" "Diego Alvarez" "Emma Schultz")
employees_ready() {
  "$PY" - "$TRYTON_HOME/ids.json" "${EMPLOYEES[@]}" <<'EOF'
import json, sys
ids = json.load(open(sys.argv[1]))
companies = ids.get("employees") or {}
sys.exit(0 if companies and all(set(sys.argv[2:]) <= set(people) for people in companies.values()) else 1)
EOF
}
if ! employees_ready; then
  t="$(now)"
  "$PY" "$HERE/setup_employees.py" "$TEMPLATE_DB" "$CONF" "$TRYTON_HOME/ids.json" "${EMPLOYEES[@]}" \
    >>"$TRYTON_HOME/setup.log" 2>&1 || { tail -n 40 "$TRYTON_HOME/setup.log" >&2; exit 1; }
  say "employees in $(elapsed "$t") s"
fi

# --- 4. one company per legal entity (additive) ---------------------------------------------------------
# setup_companies.py only adds what is missing, on a copy that replaces the template in one rename: a
# start.sh copying the template meanwhile gets the old or the new file, never half of one, and a running
# server's working database is never touched here (start.sh brings a stopped one up to date).
COMPANIES_STAMP="$(cat "$HERE/setup_companies.py" <(echo "$STAMP") | sha256sum | cut -c1-16)"
if [ "$(cat "$DB_DIR/$TEMPLATE_DB.companies" 2>/dev/null || true)" = "$COMPANIES_STAMP" ] \
  && grep -q '"companies"' "$TRYTON_HOME/ids.json"; then
  say "companies per legal entity are ready (nothing to do)"
else
  t="$(now)"
  NEXT_DB="${TEMPLATE_DB}_next"
  rm -f "$DB_DIR/$NEXT_DB.sqlite"
  "$PY" -c 'import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close()' \
    "$DB_DIR/$TEMPLATE_DB.sqlite" "$DB_DIR/$NEXT_DB.sqlite"
  "$PY" "$HERE/setup_companies.py" "$NEXT_DB" "$CONF" "$TRYTON_HOME/ids.json" "$TRYTON_HOME/ids.json.tmp" \
    >>"$TRYTON_HOME/setup.log" 2>&1 || { tail -n 40 "$TRYTON_HOME/setup.log" >&2; exit 1; }
  mv "$DB_DIR/$NEXT_DB.sqlite" "$DB_DIR/$TEMPLATE_DB.sqlite"
  mv "$TRYTON_HOME/ids.json.tmp" "$TRYTON_HOME/ids.json"
  echo "$COMPANIES_STAMP" >"$DB_DIR/$TEMPLATE_DB.companies"
  say "companies per legal entity added in $(elapsed "$t") s"
fi

flock -u 9
say "setup done in $(elapsed "$T0") s"

if [ "$start_after" = 1 ]; then
  TRYTON_SKIP_SETUP=1 exec bash "$HERE/start.sh"
fi
