# fedge: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedge-installed
PACKAGES := edge_client aggregator models tools

.PHONY: demo test lint typecheck pytest bench mosquitto clean help

help:
	@echo "make demo   - create .venv, install fedge, run the seed demo on an embedded broker"
	@echo "make test   - install what tests need (incl. mosquitto when root), ruff, mypy --strict, pytest"
	@echo "make bench  - run every benchmark and write docs/results.md"

# Installs once; re-runs only when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	@touch $@

mosquitto:
	@if command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing mosquitto with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "error: the tests need a Mosquitto broker binary; install it (e.g. 'sudo apt-get install -y mosquitto') and run make test again" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict $(PACKAGES)

pytest: $(STAMP) mosquitto
	$(VENV)/bin/pytest

test: lint typecheck pytest

demo: $(STAMP)
	$(VENV)/bin/fedge demo

bench: $(STAMP) mosquitto
	$(VENV)/bin/fedge bench all

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
