# The two commands: `make train` (set up if needed, then the main job) and `make test` (set up if needed, then tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: setup train test bench lint

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(STAMP)

train: $(STAMP)  ## python scripts/train.py with optional ARGS="task=pickcube algo=bc ..."
	$(PY) scripts/train.py $(ARGS)

test: $(STAMP)  ## the default test suite (slow tests excluded) on 2 pytest-xdist workers; ARGS passes pytest options
	$(PY) -m pytest -q -n 2 $(ARGS)

bench: $(STAMP)  ## make bench SUITE=foundation ARGS=--quick
	$(PY) scripts/bench.py $(SUITE) $(ARGS)

lint: $(STAMP)  ## what .ci/run checks before the tests: ruff lint and ruff format
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
