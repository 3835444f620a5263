# Every workflow of the course is a make target. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
IDS := $(basename $(notdir $(wildcard solutions/*.ipynb)))
SUBMISSIONS ?=
SHARD ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# nbgrader shells out to alembic and starts kernels: the venv must come first on PATH.
export PATH := $(BIN):$(PATH)
# The pipeline (and, for the solutions, the hidden tests) are importable from grader/: only
# the commands below that need it get it, and graded kernels never (their environment is
# whitelisted, see grader/pipeline/sandbox.py).
WITH_GRADER := PYTHONPATH=$(CURDIR)/grader$(if $(PYTHONPATH),:$(PYTHONPATH))
export PYTHONHASHSEED := 0
# The course's models are tiny: one thread is faster and gives the same numbers every run.
export OMP_NUM_THREADS := 1

.PHONY: help setup setup-browser setup-sandbox demo test test-fast assignments grade grade-merge lab lab-solutions formgrader \
        execute validate validate-gpu lint bench clean student-edition dist

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install everything (idempotent)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

setup-browser: setup  ## Debian's chromium + playwright, for the widget test in a real browser
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,browser]"

setup-sandbox: setup  ## bubblewrap, for the student-kernel sandbox (apt-get install, as root)
	@if command -v bwrap >/dev/null; then echo "bubblewrap: $$(bwrap --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	else echo "WARNING: bubblewrap is not installed and cannot be installed here (root and apt-get" \
	  "needed): kernels are graded without it, the sandbox report below names what is off"; fi
	$(WITH_GRADER) $(BIN)/python -m pipeline.sandbox

demo: setup  ## run every solution, regenerate the release, grade the sample class
	$(WITH_GRADER) $(BIN)/python -m pipeline.demo

test: setup  ## every test: lint, unit, hidden tests vs mutants, pipeline, drift, nbval
	$(BIN)/ruff check helpers grader/pipeline grader/hidden_tests grader/sample_mistakes tests bench solutions
	$(WITH_GRADER) $(BIN)/python -m pytest tests
	$(WITH_GRADER) $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env solutions

test-fast: setup  ## unit tests only (no kernels)
	$(WITH_GRADER) $(BIN)/python -m pytest tests -m "not slow"

assignments: setup  ## regenerate nbgrader source/release and notebooks/ from solutions/
	$(WITH_GRADER) $(BIN)/python -m pipeline.assignments

student-edition: setup  ## the public student repository in DEST=dir: notebooks, helpers, licences, README
	@test -n "$(DEST)" || { echo "usage: make student-edition DEST=dir [FORCE=1]  (e.g. a clone of the public student repository)"; exit 2; }
	$(WITH_GRADER) $(BIN)/python -m pipeline.student_edition "$(DEST)" $(if $(FORCE),--force)

dist: setup  ## wheel + sdist of `helpers` in dist/ (built from the student edition), twine-checked
	rm -rf build/dist-edition dist
	$(WITH_GRADER) $(BIN)/python -m pipeline.student_edition build/dist-edition
	$(BIN)/python -m build --outdir dist build/dist-edition
	$(BIN)/twine check --strict dist/*

grade: setup  ## autograde SUBMISSIONS=dir [JOBS=n] [SHARD=i/N]: feedback, grades.csv
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir  (dir/<student>/<id>/<id>.ipynb)"; exit 2; }
	$(WITH_GRADER) $(BIN)/python -m pipeline.grading "$(SUBMISSIONS)" --jobs $(JOBS) $(if $(SHARD),--shard $(SHARD))

grade-merge: setup  ## merge the results of sharded `make grade SHARD=i/N` runs
	$(WITH_GRADER) $(BIN)/python -m pipeline.grading --merge

execute: setup  ## re-execute solutions/ in place (after editing a solution notebook)
	$(WITH_GRADER) $(BIN)/python -m pipeline.execute solutions/*.ipynb

validate: setup  ## nbval on solutions/, comparing outputs (the CPU CI job)
	$(WITH_GRADER) $(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env solutions

validate-gpu: setup  ## nbval on solutions/ on a CUDA machine: every cell runs, outputs compared loosely
	$(WITH_GRADER) $(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env solutions

lint: setup  ## ruff over the code and the notebooks
	$(BIN)/ruff check helpers grader/pipeline grader/hidden_tests grader/sample_mistakes tests bench solutions

bench: setup  ## print the benchmark tables
	$(WITH_GRADER) $(BIN)/python bench/notebook_runtime.py

lab: setup  ## JupyterLab on the student notebooks, as students see them (no nbgrader menus)
	$(WITH_GRADER) $(BIN)/python -m pipeline.lab student $(LAB_ARGS)

lab-solutions: setup  ## JupyterLab on the solutions (hidden tests importable)
	$(WITH_GRADER) $(BIN)/python -m pipeline.lab solutions $(LAB_ARGS)

formgrader: setup  ## JupyterLab in grader/ with nbgrader's formgrader (grade Think! answers)
	$(WITH_GRADER) $(BIN)/python -m pipeline.lab formgrader $(LAB_ARGS)

clean:  ## remove nbgrader working folders (keeps .venv)
	rm -rf grader/source grader/release grader/submitted grader/autograded grader/feedback \
	       grader/gradebook.db grader/grades.csv grader/summary grader/.scratch
