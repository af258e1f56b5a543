# raywave: one command sets up and runs the main job, one sets up and runs the tests.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.raywave-installed
export OMP_NUM_THREADS ?= 2

.PHONY: setup run test test-slow bench lint clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the CPU wheel on this machine's disk; a looser spec would pull a CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)
	# the native SAC kernel, built once per machine (cached; one line and the torch path if there is no compiler)
	$(BIN)/python -m raywave.waves.backend_native

## The main job on the embedded default: the whole pipeline at small scale (`raywave demo`), each stage the
## real command: a wave sweep on Ray actors -> dataset card -> triplets -> NFP pretraining (Ray Train) ->
## transfer sweep (Ray Tune) -> report; a 4-model fly ensemble -> its view. Re-run to resume.
run: setup
	$(BIN)/raywave demo --out runs/demo

test: setup
	$(BIN)/ruff check raywave tests
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/raywave bench waves
	$(BIN)/raywave bench data

## The CLI reference docs/cli.md, generated from the Typer app (tests/test_cli_docs.py fails when it is stale).
docs: setup
	$(BIN)/python docs/gen_cli.py

lint: setup
	$(BIN)/ruff check raywave tests

clean:
	rm -rf runs .pytest_cache
