# Every workflow of the course is a make target. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# Variables: `make help` lists those with a `##` comment. An unset one leaves the choice to
# the module it is passed to, whose --help gives the default.
SUBMISSIONS ?=  ## make grade: the class, laid out <dir>/<student>/<id>/<id>.ipynb
JOBS ?=  ## make grade: batches graded at a time (unset: one per core)
SHARD ?=  ## make grade: i/N grades every N-th submission only (then make grade-merge)
CELL_TIMEOUT ?=  ## make grade: seconds a cell may run (unset: nbgrader_config.py's Execute.timeout)
NOTEBOOK_TIMEOUT ?=  ## make grade: seconds all the cells of one notebook may run (unset: pipeline.grading's)
FEEDBACK_TIMEOUT ?=  ## make grade: seconds one feedback page may take (unset: pipeline.grading's)
MEMORY_GB ?=  ## make grade: address space of each grading process and kernel, GiB (0: none; unset: pipeline.grading's)
CPU_CAPABILITY ?=  ## make validate: PyTorch's CPU kernels (ATEN_CPU_CAPABILITY: default, avx2...; unset: this machine's)
FROM ?=  ## make collect: what the LMS gave (a download's zip or folder, a JupyterHub exchange's root)
LMS ?=  ## make collect, return, export: canvas, moodle, exchange or plain (collect: recognised when unset)
ASSIGNMENT ?=  ## make collect, release: one assignment id (unset: collect recognises each file's; release: all)
WORKSHEET ?=  ## make collect LMS=moodle: the assignment's grading worksheet from Moodle (CSV)
EXCHANGE ?=  ## make release: the root of a JupyterHub course's nbgrader exchange
DEST ?=  ## make student-edition: where the student repository is written
FORCE ?=  ## make student-edition: 1 to write into a non-empty DEST
LAB_ARGS ?=  ## make lab, lab-solutions, formgrader: options for jupyter lab (e.g. --port=8890)
BENCH_ARGS ?=  ## make bench, bench-grading: options for the benchmark (see bench/*.py)
NB ?=  ## make check, execute, assignments, validate: one tutorial id, e.g. 03_multi_head_attention (unset: all)

# Every command that runs course code runs in the course's environment, defined once in
# grader/pipeline/environment.py: the venv first on PATH, grader/ importable, one thread, a
# fixed hash seed. `python -m pipeline.environment CMD...` sets it and runs CMD; the only
# variable a target sets itself is validate's ATEN_CPU_CAPABILITY.
COURSE := PYTHONPATH=$(CURDIR)/grader$(if $(PYTHONPATH),:$(PYTHONPATH)) $(BIN)/python -m pipeline.environment

.PHONY: help setup setup-browser setup-sandbox demo test test-fast check assignments grade grade-merge lab lab-solutions formgrader \
        release collect return export \
        execute validate validate-gpu lint bench bench-grading clean student-edition dist

help:  ## list the targets and the variables they take
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "Variables (make TARGET NAME=value):"
	@grep -E '^[A-Z_]+ \?=.*## ' $(MAKEFILE_LIST) | awk -F' \\?=.*## ' '{printf "  %-21s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install everything (idempotent)

# The venv is this checkout's own: graded kernels, nbval and nbgrader import `helpers` from
# it, so a venv shared with another checkout would grade with that checkout's helpers.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@owner=$$($(BIN)/python -I -c 'import helpers, pathlib; print(pathlib.Path(helpers.__file__).resolve().parent.parent)' 2>/dev/null || true); \
	if [ -n "$$owner" ] && [ "$$owner" != "$$(pwd -P)" ]; then \
	  echo "$(VENV) holds the course installed from $$owner, not from this checkout ($$(pwd -P))." >&2; \
	  echo "Installing here would change that checkout's environment, and its helpers would be graded here." >&2; \
	  echo "Give this checkout a venv of its own: remove $(VENV) (a link: just the link) and run make setup." >&2; \
	  exit 1; fi
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
	$(COURSE) python -m pipeline.kernels.sandbox

demo: setup  ## run every solution, regenerate the release, grade the sample class
	$(COURSE) python -m pipeline.demo

test: setup lint  ## every test: lint, unit, hidden tests vs mutants, pipeline, drift, nbval on two CPU capabilities
	$(COURSE) python -m pytest tests
	$(MAKE) --no-print-directory validate CPU_CAPABILITY=
	$(MAKE) --no-print-directory validate CPU_CAPABILITY=default

test-fast: setup  ## unit tests only (no kernels)
	$(COURSE) python -m pytest tests -m "not slow"

# NB=<id> narrows a target to one tutorial; the topic names its checks, hidden tests and banks.
NB_TOPIC = $(shell echo "$(NB)" | sed -E 's/^[0-9]+_//')
NB_OTHERS = $(shell ls solutions | sed -E 's/\.ipynb$$//' | grep -vx "$(NB)" | paste -sd' ' | sed 's/ / or /g')
SOLUTIONS = $(if $(NB),solutions/$(NB).ipynb,solutions)

check: setup  ## one tutorial in under a minute, NB=id: its declaration, banks, hints and nbval
	@test -n "$(NB)" || { echo "usage: make check NB=<id>  (e.g. NB=03_multi_head_attention)"; exit 2; }
	@test -f "solutions/$(NB).ipynb" || { echo "no solutions/$(NB).ipynb: NB is a tutorial id, e.g. 03_multi_head_attention"; exit 2; }
	$(COURSE) python -m pytest -p no:cacheprovider -q -m "not slow" tests/test_syllabus.py \
	  tests/test_contracts.py tests/test_hints.py tests/test_notebook_files.py \
	  tests/test_hidden_$(NB_TOPIC).py tests/test_demos_$(NB_TOPIC).py -k "not ($(NB_OTHERS))"
	$(MAKE) --no-print-directory validate NB=$(NB)

assignments: setup  ## regenerate nbgrader source/release and notebooks/ from solutions/ [NB=id]
	$(COURSE) python -m pipeline.release.assignments $(NB)

student-edition: setup  ## the public student repository in DEST=dir: notebooks, helpers, licences, README
	@test -n "$(DEST)" || { echo "usage: make student-edition DEST=dir [FORCE=1]  (e.g. a clone of the public student repository)"; exit 2; }
	$(COURSE) python -m pipeline.release.student_edition "$(DEST)" $(if $(FORCE),--force)

dist: setup  ## wheel + sdist of `helpers` in dist/ (built from the student edition), twine-checked
	rm -rf build/dist-edition dist
	$(COURSE) python -m pipeline.release.student_edition build/dist-edition
	$(BIN)/python -m build --outdir dist build/dist-edition
	$(BIN)/twine check --strict dist/*

# The grading flags that were asked for; the others keep pipeline.grading's defaults.
GRADE_FLAGS = $(strip $(if $(JOBS),--jobs $(JOBS)) $(if $(SHARD),--shard $(SHARD)) \
                $(if $(CELL_TIMEOUT),--cell-timeout $(CELL_TIMEOUT)) \
                $(if $(NOTEBOOK_TIMEOUT),--timeout $(NOTEBOOK_TIMEOUT)) \
                $(if $(FEEDBACK_TIMEOUT),--feedback-timeout $(FEEDBACK_TIMEOUT)) \
                $(if $(MEMORY_GB),--memory-gb $(MEMORY_GB)))

grade: setup  ## autograde SUBMISSIONS=dir [JOBS SHARD CELL_TIMEOUT NOTEBOOK_TIMEOUT FEEDBACK_TIMEOUT MEMORY_GB]
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir  (dir/<student>/<id>/<id>.ipynb)"; exit 2; }
	$(COURSE) python -m pipeline.grading "$(SUBMISSIONS)" $(GRADE_FLAGS)

grade-merge: setup  ## merge the results of sharded `make grade SHARD=i/N` runs
	$(COURSE) python -m pipeline.grading --merge

# The term: release to a JupyterHub, collect from an LMS, return feedback, export grades
# (grader/roster.csv and grader/deadlines.csv: see pipeline/classroom/roster.py, pipeline/classroom/deadlines.py).
COLLECT_FLAGS = $(strip $(if $(LMS),--lms $(LMS)) $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT)) \
                  $(if $(WORKSHEET),--worksheet "$(WORKSHEET)") $(if $(TRUST_TIMESTAMPS),--trust-timestamps))

release: setup  ## nbgrader release_assignment into a JupyterHub's exchange EXCHANGE=dir [ASSIGNMENT=id]
	@test -n "$(EXCHANGE)" || { echo "usage: make release EXCHANGE=dir [ASSIGNMENT=id]  (nbgrader's Exchange.root)"; exit 2; }
	$(COURSE) python -m pipeline.classroom.collect "$(EXCHANGE)" --release $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT))

collect: setup  ## lay out FROM=download [LMS= ASSIGNMENT= WORKSHEET= TRUST_TIMESTAMPS=1] in grader/submitted for make grade
	@test -n "$(FROM)" || { echo "usage: make collect FROM=<zip or folder> [LMS=canvas|moodle|exchange|plain] [ASSIGNMENT=id] [WORKSHEET=csv] [TRUST_TIMESTAMPS=1]"; exit 2; }
	$(COURSE) python -m pipeline.classroom.collect "$(FROM)" $(COLLECT_FLAGS)

return: setup  ## feedback pages zipped as LMS=canvas|moodle|plain takes them back, in grader/export/
	@test -n "$(LMS)" || { echo "usage: make return LMS=canvas|moodle|plain"; exit 2; }
	$(COURSE) python -m pipeline.grading.export feedback --lms $(LMS)

export: setup  ## the gradebook file LMS=canvas|moodle imports as it is, in grader/export/ (besides grades.csv)
	@test -n "$(LMS)" || { echo "usage: make export LMS=canvas|moodle"; exit 2; }
	$(COURSE) python -m pipeline.grading.export grades --lms $(LMS)

execute: setup  ## re-execute solutions/ in place (after editing a solution notebook) [NB=id]
	$(COURSE) python -m pipeline.release.execute $(if $(NB),solutions/$(NB).ipynb,solutions/*.ipynb)

validate: setup  ## nbval on solutions/, comparing outputs (the CPU CI job) [CPU_CAPABILITY=default... NB=id]
	@echo "nbval on $(SOLUTIONS), PyTorch CPU capability: $(or $(CPU_CAPABILITY),this machine's)"
	$(if $(CPU_CAPABILITY),ATEN_CPU_CAPABILITY=$(CPU_CAPABILITY)) $(COURSE) python -m pytest -p no:cacheprovider \
	  --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env $(SOLUTIONS)

validate-gpu: setup  ## nbval on solutions/ on a CUDA machine: every cell runs, outputs compared loosely
	$(COURSE) python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env solutions

lint: setup  ## ruff over every Python file and notebook of the repository (pyproject.toml says what is generated)
	$(BIN)/ruff check .

bench: setup  ## print the benchmark tables: each notebook's run time [BENCH_ARGS="--repeat 3"]
	$(COURSE) python bench/notebook_runtime.py $(BENCH_ARGS)

bench-grading: setup  ## grading throughput: plain nbgrader against make grade [BENCH_ARGS="--students 6"]
	$(COURSE) python bench/grading_throughput.py $(BENCH_ARGS)

lab: setup  ## JupyterLab on the student notebooks, as students see them (no nbgrader menus)
	$(COURSE) python -m pipeline.lab student $(LAB_ARGS)

lab-solutions: setup  ## JupyterLab on the solutions (hidden tests importable)
	$(COURSE) python -m pipeline.lab solutions $(LAB_ARGS)

formgrader: setup  ## nbgrader's formgrader on the course's gradebook, submissions inert (grade Think! answers)
	$(COURSE) python -m pipeline.lab formgrader $(LAB_ARGS)

# What generation, grading, the demo and `make dist` write; kept: .venv, solutions/, notebooks/.
GENERATED := grader/source grader/release grader/submitted grader/gradebook.db \
             grader/sample_submissions grader/autograded grader/feedback grader/results \
             grader/grades.csv grader/summary grader/.scratch grader/lms grader/export \
             build/dist-edition dist

clean:  ## remove what generation, grading, the demo and make dist write (keeps .venv, solutions/, notebooks/)
	rm -rf $(GENERATED)
	if [ -d build ]; then rmdir --ignore-fail-on-non-empty build; fi
