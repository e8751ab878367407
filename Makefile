# fedge: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedge-installed
PACKAGES := edge_client aggregator models tools

.PHONY: demo test lint typecheck pytest bench mosquitto clean help test-aarch64

help:
	@echo "make demo   - create .venv, install fedge, run the seed demo on an embedded broker"
	@echo "make test   - install what tests need (incl. mosquitto when root), ruff, mypy --strict, pytest"
	@echo "make bench  - run every benchmark and write docs/results.md"
	@echo "make test-aarch64 - the edge client on an emulated 64-bit ARM Debian 12 (qemu-user): install, train, one round"

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

# Not part of `make test`: builds a Debian arm64 userland under build/aarch64-SUITE (Debian's
# own packages, a private apt state), installs fedge[edge] there from aarch64 wheels, and runs
# the edge client under qemu-user against the x86 aggregator (tests/aarch64/). Cached: a second
# run reuses the sysroot, the wheels and the venv. AARCH64_SUITE=trixie: Debian 13, Python 3.13.
AARCH64_SUITE ?= bookworm
AARCH64_CACHE ?= build/aarch64-$(AARCH64_SUITE)

test-aarch64: $(STAMP) mosquitto
	@start=$$(date +%s); \
	PYTHONPATH=tests$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m aarch64.target --suite $(AARCH64_SUITE) --cache $(AARCH64_CACHE) && \
	FEDGE_AARCH64_TARGET=$(abspath $(AARCH64_CACHE))/target.json TF_CPP_MIN_LOG_LEVEL=2 \
		$(VENV)/bin/pytest tests/aarch64 -W "ignore::UserWarning:tensorflow.lite.python.interpreter"; \
	code=$$?; \
	echo "make test-aarch64: $$([ $$code = 0 ] && echo passed || echo FAILED) in $$(( $$(date +%s) - start )) s"; \
	exit $$code

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
