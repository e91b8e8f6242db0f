# sesguard: every command installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# LocalStack itself, for the compose walkthrough test: its own venv (its botocore pins differ
# from ours), on Python >= 3.12 (LocalStack 4.14 needs it; the machines here have it in pyenv).
LS_VENV   ?= .venv-localstack
LS_PYTHON ?= $(shell for p in python3.13 python3.12 $$HOME/.pyenv/versions/3.13*/bin/python3.13 \
	$$HOME/.pyenv/versions/3.12*/bin/python3.12; do "$$p" -c 'import sys; assert sys.version_info >= (3, 12)' \
	2>/dev/null && { command -v "$$p"; break; }; done)

.PHONY: demo test lint check bench clean

demo: $(VENV)/.local   ## the whole loop on an embedded AWS stand-in (no AWS account, no Docker)
	$(BIN)/sesguard demo

# Test files run side by side (most tests wait on moto, sockets and timers, not the CPU);
# each worker has its own moto server. TEST_WORKERS=0 runs them one after another.
TEST_WORKERS ?= 3
test: $(VENV)/.dev $(LS_VENV)/.installed  ## the test suite: moto over HTTP, and LocalStack itself
	$(BIN)/pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: $(VENV)/.dev     ## ruff + mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: $(VENV)/.dev    ## benchmarks: ratios against naive baselines, measured in the same run
	$(BIN)/python bench/sender.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/worker_lag.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/overshoot.py
	$(BIN)/python bench/fairness.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.local: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[local]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.local

# --no-deps: the file pins every package (no resolver work); --no-compile: no .pyc pass over
# LocalStack's 300 MB at install time (imports compile what they use).
$(LS_VENV)/.installed: tests/localstack-requirements.txt
	@if [ -z "$(LS_PYTHON)" ]; then \
		echo "note: no Python >= 3.12 found, so the LocalStack walkthrough test will be skipped"; \
		echo "      (LocalStack 4.14 needs it: make LS_PYTHON=/path/to/python3.12 test)"; \
		[ "$$SESGUARD_CI" != 1 ]; \
	else \
		set -e; rm -rf $(LS_VENV); \
		echo "$(LS_PYTHON) -m venv $(LS_VENV) && pip install -r tests/localstack-requirements.txt"; \
		$(LS_PYTHON) -m venv $(LS_VENV); \
		$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-compile \
			-r tests/localstack-requirements.txt; \
		touch $@; \
	fi

clean:
	rm -rf $(VENV) $(LS_VENV) .mypy_cache .ruff_cache .pytest_cache
