# The two commands of the README: `make up` runs the command centre, `make test` runs every test.
# Both install what they need: a virtual environment with Pusat and its extras, and for the tests
# Debian's PostgreSQL and Mosquitto (the suite starts its own throwaway servers from them).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: up test lint check system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,sim]'
	touch $(STAMP)

system-deps:
	sh deploy/system-deps.sh

up: $(STAMP)
	$(BIN)/pusat up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: system-deps $(STAMP) lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pusat .mypy_cache .ruff_cache .pytest_cache
