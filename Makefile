# Two set-up commands for a fresh machine:
#   make smoke  - CPU pretraining on the embedded default corpus (no torch needed)
#   make test   - the test suite (installs the CPU torch wheel first, then the package with [test,tf])
#   make test-fast - the suite without end-to-end training and real data (tests marked slow): a few minutes
PYTHON ?= python3
VENV := .venv
RUN_DIR ?= runs/smoke

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[test,tf]"
	touch $@

.PHONY: smoke test test-fast bench
smoke: $(VENV)/.base
	$(VENV)/bin/electra-jax pretrain --config configs/electra_smoke.yaml --run-dir $(RUN_DIR)

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

test-fast: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

bench: $(VENV)/.test
	$(VENV)/bin/python benchmarks/train_step.py --rounds 3
