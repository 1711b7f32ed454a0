# The two commands of the README: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
# Extra pytest arguments, e.g. PYTEST_ARGS="--junitxml=test-artifacts/junit.xml" (.ci/run).
PYTEST_ARGS ?=

.PHONY: demo test test-postgres test-browser test-packaging screenshots messages lint typecheck mutation clean bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

## Run the demo on SQLite: proxy on http://127.0.0.1:8000, demo upstream on http://localhost:8001.
demo: $(VENV)/.installed
	$(PY) manage.py rundemo

## The test suite (SQLite; the browser tests run in `make test-browser`). The PostgreSQL-only
## tests (concurrency, two app servers) skip here, saying so.
test: $(VENV)/.installed
	$(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

## The same suite on PostgreSQL, where the concurrency and two-server tests run: they fail
## instead of skipping if the database turns out not to be PostgreSQL.
test-postgres: $(VENV)/.installed
	DATABASE_URL=$(POSTGRES_URL) MCP_CONSENT_REQUIRE_POSTGRES=1 $(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

## Real-browser tests: Playwright driving Debian's Chromium (apt-get install chromium).
test-browser: $(VENV)/.installed
	$(PY) -m pytest -m browser tests/browser $(PYTEST_ARGS)

## The wheel, installed in a fresh virtualenv, in a new project set up by docs/quickstart.md
## as written; one authorization and an MCP call against a GitHub-like fake.
test-packaging: $(VENV)/.installed
	$(PY) tests/packaging/run.py

## Benchmarks (docs/performance.md): mcp-consent vs FastMCP's OAuthProxy, SQLite and PostgreSQL,
## ~15 min; QUICK=1 for a ~5 min run. Prints figures, never fails on a time. FastMCP is installed
## into its own virtualenv at a pinned version, never into the project's.
FASTMCP_VERSION ?= 4.2.3
FASTMCP_VENV := benchmarks/.venv-fastmcp
BENCH_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432
$(FASTMCP_VENV)/.installed-$(FASTMCP_VERSION):
	test -x $(FASTMCP_VENV)/bin/python || $(PYTHON) -m venv $(FASTMCP_VENV)
	$(FASTMCP_VENV)/bin/python -m pip install --quiet "fastmcp==$(FASTMCP_VERSION)" "uvicorn>=0.30"
	touch $@

bench: $(VENV)/.installed $(FASTMCP_VENV)/.installed-$(FASTMCP_VERSION)
	BENCH_POSTGRES_URL=$(BENCH_POSTGRES_URL) $(PY) -m benchmarks.bench $(if $(QUICK),--quick) $(BENCH_ARGS)

## Refresh docs/screenshots/ (consent page in five languages, warnings, Connected apps).
screenshots: $(VENV)/.installed
	UPDATE_DOCS_SCREENSHOTS=1 $(PY) -m pytest -m browser tests/browser/test_accessibility.py $(PYTEST_ARGS)

## Re-extract and compile mcp_consent's catalogs (needs GNU gettext: apt-get install gettext).
## The compiled .mo files are committed: nothing needs this to run or to test.
messages: $(VENV)/.installed
	cd mcp_consent && DJANGO_SETTINGS_MODULE= ../$(VENV)/bin/django-admin makemessages -l fr -l de -l es -l ar --no-location --no-obsolete
	cd mcp_consent && DJANGO_SETTINGS_MODULE= ../$(VENV)/bin/django-admin compilemessages

## Mutation testing of the security-critical modules (docs/mutation.md): a report, not a CI
## gate (it takes long). Each module is mutated on its own, against the tests that guard it
## (tests/mutation/run.py); restrict with e.g. MUTATION_MODULES="vault audit". Prints every
## surviving mutant and the counts per module; docs/mutation.md explains each survivor.
MUTATION_MODULES ?=
MUTATION_JOBS ?= 2
mutation: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,mutation]"
	MUTATION_JOBS=$(MUTATION_JOBS) $(PY) tests/mutation/run.py $(MUTATION_MODULES)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(FASTMCP_VENV) db.sqlite3 test-artifacts .pytest_cache mutants
