# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv the first
# time, from the hashed lock files in requirements/ (`make lock` regenerates them).
# The interpreter .venv is made from: the distribution's own (/usr/bin/python3) when it is
# 3.11 or newer and can make a venv, else python3 from PATH; `make PYTHON=...` chooses.
# Distributions and the official python images build CPython with PGO and LTO; pyenv and
# asdf build it without unless asked, and tocsin then spends ~20% more CPU an event
# (docs/performance.md, "The interpreter").
SYSTEM_PYTHON := /usr/bin/python3
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell $(SYSTEM_PYTHON) -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $(SYSTEM_PYTHON) || echo python3)
endif
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
LOCKED := $(BIN)/pip install --quiet --require-hashes
SELF := $(BIN)/pip install --quiet --no-deps -e .
# The publisher library (clients/python) needs nats-py and msgspec, already in every lock.
CLIENT := $(BIN)/pip install --quiet --no-deps -e clients/python

.PHONY: run test test-fast lint schemas lock bench bench-parts soak clean

$(BIN)/python:
	@echo "making $(VENV) with $(PYTHON) (Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'))"
	$(PYTHON) -m venv $(VENV)

# Serving needs the runtime and the embedded nats-server, nothing else.
$(RUN_STAMP): requirements/run.txt pyproject.toml | $(BIN)/python
	$(LOCKED) -r requirements/run.txt
	$(SELF)
	touch $@

# Testing adds the test tools, and the Debian packages the tests drive (tests/system-packages.sh:
# chromium, prometheus-alertmanager, prometheus).
$(TEST_STAMP): requirements/test.txt pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(LOCKED) -r requirements/test.txt
	$(SELF)
	$(CLIENT)
	touch $@

$(BENCH_STAMP): requirements/bench.txt pyproject.toml | $(BIN)/python
	$(LOCKED) -r requirements/bench.txt
	$(SELF)
	touch $@

run: $(RUN_STAMP)
	$(BIN)/tocsin serve

# Every test, nothing skipped: the lint and layer contracts first, then the whole suite.
test: $(TEST_STAMP) lint
	bash tests/system-packages.sh
	$(BIN)/pytest

# The pure core alone: no broker, no files, seconds.
test-fast: $(TEST_STAMP)
	$(BIN)/pytest -q tests/core

lint: $(TEST_STAMP)
	$(BIN)/ruff check service tests bench clients
	$(BIN)/ruff format --check service tests bench clients
	$(BIN)/mypy
	$(BIN)/lint-imports

schemas: $(RUN_STAMP)
	$(BIN)/tocsin schemas --out schemas

# Re-pin every dependency with hashes after a change to pyproject.toml's dependencies.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements/service.txt pyproject.toml
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --extra embedded -o requirements/run.txt pyproject.toml
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --extra embedded --extra dev -o requirements/test.txt pyproject.toml
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --extra embedded --extra dev --extra bench -o requirements/bench.txt pyproject.toml

# tocsin vs Alertmanager, W1-W5, three alternated runs, medians and ranges (~10-20 min);
# BENCH_ARGS="--workloads w1,w5", "--runs 1", "--profile /tmp/p" etc.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The parts apart (router alone, delivery alone), every command on a 1M-event log, and
# what the router's and delivery's parts cost alone (their ceiling in Python here).
bench-parts: $(BENCH_STAMP)
	$(BIN)/python bench/router_throughput.py
	$(BIN)/python bench/log_scale.py
	$(BIN)/python bench/parts_router.py
	$(BIN)/python bench/ceiling_router.py
	$(BIN)/python bench/ceiling_delivery.py
	$(BIN)/python bench/parts_delivery.py
	$(BIN)/python bench/parts_recorder.py
	$(BIN)/python bench/ceiling_latency.py
	$(BIN)/python bench/ceiling_fold.py

# Ten minutes of mixed load while tocsin, its nats-server and its disk are made to fail,
# then every count checked (docs/reliability.md, "The soak"); SOAK_ARGS="--minutes 2" etc.
soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) tocsin-data .pytest_cache .mypy_cache .ruff_cache
