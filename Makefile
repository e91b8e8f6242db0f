# sesguard: every command installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint check bench clean

demo: $(VENV)/.local   ## the whole loop on an embedded AWS stand-in (no AWS account, no Docker)
	$(BIN)/sesguard demo

test: $(VENV)/.dev     ## the test suite, against a real moto server over HTTP
	$(BIN)/pytest

lint: $(VENV)/.dev     ## ruff + mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: $(VENV)/.dev    ## benchmarks: ratios against naive baselines, measured in the same run
	$(BIN)/python bench/sender.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/recovery.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.local: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[local]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.local

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
