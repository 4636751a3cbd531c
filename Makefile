# Two commands on a fresh machine: `make run` starts the hub, `make test` runs the whole suite.
# Both use DATABASE_URL / REDIS_URL when they are set, and the embedded default otherwise.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: chromium run test lint typecheck migrations-check bench clean tryton tryton-stop test-tryton

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

run: $(VENV)/.installed-runtime
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	$(PY) manage.py demo_setup
	@if [ -x .tryton/venv/bin/trytond ]; then bash tryton/start.sh; \
	  else echo "Local Tryton not installed (run 'make tryton' once): the UK entity's ERP stays offline."; fi
	$(PY) manage.py run_hub

test: $(VENV)/.installed-dev chromium
	$(BIN)/pytest $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium; install it when missing (needs root, as on CI machines).
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy
	$(BIN)/lint-imports

migrations-check: $(VENV)/.installed-dev
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf var/*.sqlite3* var/broker var/cache var/staticfiles

bench: $(VENV)/.installed-dev
	$(PY) -m bench $(BENCH)

# The local Tryton ERP (its own venv and SQLite database in .tryton/), used by the UK entity and the tryton tests.
tryton:
	bash tryton/setup.sh --start

tryton-stop:
	bash tryton/stop.sh

test-tryton: $(VENV)/.installed-dev
	$(BIN)/pytest -m tryton connectors/tests/test_tryton.py $(PYTEST_ARGS)
