# Two commands for a fresh machine: `make demo` runs the main job, `make test` the linters
# (ruff, ruff format, mypy) and the tests.
# Each builds its own virtual environment (.venv) first. torch is pinned here to the CPU
# build this project's machines install from a local file; the package accepts a range.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-output

.PHONY: demo demo-geant4 test test-all lint bench geant4-reference clean

$(VENV)/.installed: pyproject.toml
	@echo "building the environment in $(VENV): torch and caloforge's dependencies (a minute or more, once)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The main job on the embedded default: simulate clic-25 showers, train 3DGAN for a few
# minutes on the CPU, generate showers with the test split's conditions and validate them
# against the simulation (part 1); then the shipped flow-match model against Geant4 showers
# made on the spot (part 2). DEMO_STEPS sets the training length, DEMO_GEANT4 the number of
# Geant4 showers.
DEMO_STEPS ?= 100
DEMO_GEANT4 ?= 500
# named in the closing list only where part 2 ran
DEMO_PART2_OUTPUTS = and geant4.h5 (Geant4 showers made now), pretrained.h5, report-pretrained/index.html (part 2)
demo: $(VENV)/.installed
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/caloforge simulate --geometry clic-25 --n 3000 --energy 10:200 --seed 1 -o $(DEMO_DIR)/showers.h5
	$(VENV)/bin/caloforge train --config gan3d --processes auto --data $(DEMO_DIR)/showers.h5 --out $(DEMO_DIR)/run \
	    training.batch_size=32 training.max_steps=$(DEMO_STEPS) training.check_every=20 training.check_showers=256
	$(VENV)/bin/caloforge simulate --geometry clic-25 --n 1000 --energy 10:200 --seed 2 -o $(DEMO_DIR)/reference.h5
	$(VENV)/bin/caloforge generate --checkpoint $(DEMO_DIR)/run --conditions-from $(DEMO_DIR)/reference.h5 --seed 3 -o $(DEMO_DIR)/generated.h5
	$(VENV)/bin/caloforge validate --reference $(DEMO_DIR)/reference.h5 --generated $(DEMO_DIR)/generated.h5 --out $(DEMO_DIR)/report
	@echo
	@echo "--- part 2: the shipped flow-match model (trained on Geant4 showers) against Geant4 ---"
	@if [ -n "$(GEANT4_FOUND)" ]; then $(MAKE) --no-print-directory demo-geant4; else \
	    echo "part 2 skipped: no Geant4 here (neither geant4-config on the PATH nor the headers"; \
	    echo "that CALOFORGE_GEANT4_INCLUDE names; see 'Geant4 inside caloforge' in README.md)"; fi
	@echo
	@echo "demo outputs in $(DEMO_DIR)/: showers.h5 (training data), run/ (checkpoints, metrics.jsonl),"
	@echo "reference.h5 (an independent simulated sample), generated.h5, report/index.html (part 1)"
	$(if $(GEANT4_FOUND),@echo "$(DEMO_PART2_OUTPUTS)")

# Part 2 alone (needs Geant4: `geant4-config` on the PATH, or calzone's libraries and the
# headers CALOFORGE_GEANT4_INCLUDE names).
demo-geant4: $(VENV)/.installed
	$(VENV)/bin/caloforge simulate --engine geant4 --geometry clic-25 --n $(DEMO_GEANT4) --energy 10:200 --seed 4 -o $(DEMO_DIR)/geant4.h5
	$(VENV)/bin/caloforge generate --checkpoint pretrained:clic25-geant4 --conditions-from $(DEMO_DIR)/geant4.h5 --seed 5 -o $(DEMO_DIR)/pretrained.h5
	$(VENV)/bin/caloforge validate --reference $(DEMO_DIR)/geant4.h5 --generated $(DEMO_DIR)/pretrained.h5 --labels Geant4,flow-match --out $(DEMO_DIR)/report-pretrained

# The tests that load OpenVINO, ONNX Runtime and Inductor run in a pytest process of their
# own: those libraries' thread pools left in the main test process crashed a later test that
# forks (a segfault seen twice in full runs, never in smaller ones).
NATIVE_TESTS = tests/unit/test_backends.py tests/unit/test_int8.py tests/integration/test_export.py
# The linters first: CI (.ci/run) runs `make test`, so lint, format and types are checked there.
test: lint
	$(PY) -m pytest -m "not slow" -q $(addprefix --ignore=,$(NATIVE_TESTS))
	$(PY) -m pytest -m "not slow" -q $(NATIVE_TESTS)

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/simulate.py

# The Geant4 engine's headers for calzone's libraries: the archive kept beside the repository
# (the tests find it themselves). The reference sets go to $CALOFORGE_DATA/geant4 (default
# ~/caloforge-data/geant4) in parts; run again to resume.
CALOFORGE_GEANT4_INCLUDE ?= $(abspath $(wildcard ../shared/geant4/geant4-11.4.0-include.tgz))
export CALOFORGE_GEANT4_INCLUDE
GEANT4_FOUND = $(strip $(CALOFORGE_GEANT4_INCLUDE)$(shell command -v geant4-config 2>/dev/null))
GEANT4_SETS ?= clic25-10-200
geant4-reference: $(VENV)/.installed
	$(PY) benchmarks/geant4_reference.py $(GEANT4_SETS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
