# Quick start: `make run` (the default experiment) and `make test` (the suite).
# Both create .venv when it is missing and install flatbench into it.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SWEEP ?= outputs/sweeps/digits/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: install run test test-long test-slow test-slurm docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/flatbench -m experiment=digits hydra.sweep.dir=$(SWEEP)
	$(BIN)/flatbench-report $(SWEEP)
	@echo "Sweep directory: $(SWEEP) (per-cell CSVs in its numbered subdirectories; the report (results.csv, table.md, table.tex, heatmap.png) in $(SWEEP)/report)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The tests of 25 s or more (tests/conftest.py: LONG): out of `make test`, run by CI after it.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m "long and not slow"

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or a page left out of nav fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Only the tests against the single-node SLURM cluster (scripts/slurm_local.sh; root, Debian).
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm

# The CPU benchmark set of docs/benchmarks.md (about 12 minutes on 2 cores); CSVs in outputs/bench/.
bench: $(STAMP)
	$(BIN)/python scripts/bench.py --model digits-cnn
	$(BIN)/python scripts/bench.py --model digits-resnet
	$(BIN)/python scripts/bench.py --model resnet18 --size 224 --batch 8 --steps 1 --search 2 4 8 16 32 --csv outputs/bench/resnet18-b8.csv
	$(BIN)/python scripts/bench.py --model resnet18 --size 224 --batch 2 --steps 1 --search 2 4 8 16 --methods pgn --csv outputs/bench/resnet18-b2.csv

clean:
	rm -rf $(VENV) outputs/runs outputs/sweeps outputs/zoo site
