# The two commands of the README: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: demo test test-postgres test-browser lint typecheck clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

## Run the demo on SQLite: proxy on http://127.0.0.1:8000, demo upstream on http://localhost:8001.
demo: $(VENV)/.installed
	$(PY) manage.py rundemo

## The test suite (SQLite; the browser tests run in `make test-browser`).
test: $(VENV)/.installed
	$(PY) -m pytest -m "not browser"

## The same suite on PostgreSQL (adds the concurrency tests that need real row locks).
test-postgres: $(VENV)/.installed
	DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest -m "not browser"

## Real-browser tests: Playwright driving Debian's Chromium (apt-get install chromium).
test-browser: $(VENV)/.installed
	$(PY) -m pytest -m browser tests/browser

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) db.sqlite3 test-artifacts .pytest_cache
