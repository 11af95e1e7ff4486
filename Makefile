# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint schemas bench clean

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

bench: $(STAMP)
	$(BIN)/python bench/router_throughput.py
	$(BIN)/python bench/log_scale.py

clean:
	rm -rf $(VENV) tocsin-data .pytest_cache .mypy_cache .ruff_cache
