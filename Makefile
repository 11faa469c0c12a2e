# Two commands for a fresh machine: `make demo` runs the main job, `make test` the tests.
# Each builds its own virtual environment (.venv) first. torch is pinned here to the CPU
# build this project's machines install from a local file; the package accepts a range.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output

.PHONY: demo test test-all lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/caloforge simulate --geometry clic-25 --n 2000 --energy 2:500 --seed 1 -o $(DEMO_DIR)/showers.h5
	@echo "demo output: $(DEMO_DIR)/showers.h5"

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/simulate.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
