# xreduce - the README's set-up commands and a few helpers.
#
#   make demo     create/update .venv, write a small synthetic BLISS experiment to demo_out/ and
#                 reduce it with `xreduce demo` (NeXus master files + PNG previews)
#   make test     as above, plus the system packages the tests run against (Open MPI, PoCL,
#                 Slurm + accounting, HDF5 tools), starts the single-node Slurm test cluster
#                 (`make cluster`), checks the code (`make lint`: ruff, mypy), then runs the whole
#                 test suite
#   make cluster  start (or check) the Slurm test cluster: tests/cluster/start-slurm.sh, as root
#   make lint     ruff (style, imports, likely bugs) and mypy (types), as configured in pyproject.toml
#   make bench    integration throughput (tests/benchmarks/bench_integrate.py)
#   make image    build the Apptainer image xreduce.sif (needs apptainer; docs/containers.md)
#   make clean    remove outputs and caches (keeps .venv; `make distclean` removes it too)
#
# Works on a fresh Debian 12 as root: missing apt packages are installed (only the missing
# ones, so a second run is fast), and the venv is re-installed only when pyproject.toml changes.
# Both go through containers/install.sh, the same script the Apptainer image's %post runs.
# Knobs: PYTHON=python3.12 (interpreter for the venv), PYTEST_ARGS="-x -k geometry", DEMO_OUT=dir,
#        BENCH_ARGS="--detector Pilatus1M --frames 64".

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
DEMO_OUT    ?= demo_out
PYTEST_ARGS ?=
BENCH_ARGS  ?=

VPY   := $(VENV)/bin/python
# Touched after a successful install: newer than pyproject.toml means the venv is up to date.
STAMP := $(VENV)/.xreduce-installed
INSTALL := bash containers/install.sh
IMAGE   ?= xreduce.sif

.PHONY: help demo test lint bench cluster venv system-base system-test image clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- user-facing targets
demo: venv  ## reduce a synthetic experiment with `xreduce demo`; results in demo_out/
	$(VENV)/bin/xreduce demo --out $(DEMO_OUT)

# system-test comes first so that the venv (mpi4py, pyopencl later) builds against those packages;
# cluster (the real Slurm the tests submit to) comes last, and a failure to start it stops here.
test: system-test venv cluster lint  ## install everything the tests need, run all of tests/
	$(VPY) -m pytest $(PYTEST_ARGS)

lint: venv  ## ruff and mypy (pyproject.toml's settings)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: venv  ## integration throughput, side by side with pyFAI
	$(VPY) tests/benchmarks/bench_integrate.py $(BENCH_ARGS)

clean:  ## remove outputs and caches, keep .venv
	rm -rf $(DEMO_OUT) build dist *.egg-info .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean  ## clean, and remove .venv
	rm -rf $(VENV)

# ---------------------------------------------------------------- environment
# apt packages: cheap to re-check (dpkg-query), so these always run.
system-base:  ## python3 + venv module (apt, only if missing)
	$(INSTALL) --system base

system-test:  ## base + Open MPI, PoCL, Slurm/munge/MariaDB, hdf5-tools, Lmod (apt, only if missing)
	$(INSTALL) --system test

venv: $(STAMP)  ## create/update .venv with xreduce editable + test extras

# Idempotent: ~0.3 s when the cluster is up, a few seconds from stopped (needs root to start).
# Stop it with `bash tests/cluster/stop-slurm.sh`.
cluster: system-test  ## start the single-node Slurm test cluster (munge, slurmdbd, slurmctld, slurmd)
	bash tests/cluster/start-slurm.sh

# `|` (order-only): the apt check runs first but its always-new timestamp does not force a
# re-install. install.sh re-creates a venv whose interpreter no longer runs (moved, Python upgraded).
$(STAMP): pyproject.toml | system-base
	$(INSTALL) --system none --venv $(VENV) --python $(PYTHON) --extras test --editable
	touch $@

# The image: everything of containers/xreduce.def's %post is containers/install.sh (CI runs it).
image:  ## build the Apptainer image (IMAGE=xreduce.sif) from containers/xreduce.def (needs apptainer >= 1.2)
	@command -v apptainer >/dev/null || { echo "apptainer is not installed here: build on a machine that has it (docs/containers.md)" >&2; exit 1; }
	apptainer build --build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(IMAGE) containers/xreduce.def
