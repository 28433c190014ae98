# The two commands of the README: `make up` runs the command centre, `make test` runs every test.
# Both install what they need: a virtual environment with Pusat and its extras, and for the tests
# Debian's PostgreSQL and Mosquitto (the suite starts its own throwaway servers from them).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# The TimescaleDB test tier runs in a Debian 13 root kept outside the checkout, built once.
TSDB_ROOT ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pusat/tsdb-root
# The community edition's SQL is checked on PGlite's TimescaleDB build (npm), kept there too.
PGLITE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pusat/pglite
# axe-core (npm) checks the public /city page in Chromium (tests/test_city_browser.py).
AXE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pusat/axe

# Eclipse Tahu's Sparkplug client (npm), the third-party edge node of tests/test_sparkplug.py.
SPARKPLUG_CLIENT_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pusat/sparkplug-client

.PHONY: up test lint system-deps tsdb-root pglite sparkplug-client axe clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,sim]'
	touch $(STAMP)

system-deps:
	sh deploy/system-deps.sh

tsdb-root:
	@sh deploy/timescaledb-root.sh "$(TSDB_ROOT)" || \
	  echo "warning: no TimescaleDB root; the suite reports its TimescaleDB tier as skipped"

pglite:
	@mkdir -p "$(PGLITE_DIR)" && cp deploy/pglite/package.json "$(PGLITE_DIR)/" && \
	  (cd "$(PGLITE_DIR)" && npm install --no-audit --no-fund --silent) || \
	  echo "warning: no PGlite TimescaleDB build; the suite reports its community tier as skipped"

sparkplug-client:
	@sh deploy/sparkplug-client/install.sh "$(SPARKPLUG_CLIENT_DIR)" || \
	  echo "warning: no Sparkplug client; tests/test_sparkplug.py installs it or says why not"

axe:
	@mkdir -p "$(AXE_DIR)" && cp deploy/axe/package.json "$(AXE_DIR)/" && \
	  (cd "$(AXE_DIR)" && npm install --no-audit --no-fund --silent) || \
	  echo "warning: no axe-core; the suite reports the accessibility test as skipped"

up: $(STAMP)
	$(BIN)/pusat up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: system-deps $(STAMP) lint tsdb-root pglite sparkplug-client axe
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pusat .mypy_cache .ruff_cache .pytest_cache
