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
DOCS_STAMP := $(VENV)/.stamp-docs
CHROMIUM ?= /usr/bin/chromium

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

# The docs build serves MathJax from the site (npm mathjax@3.2.2, fetched once into the venv) and the browser tests
# drive Debian's chromium (installed here when missing and we are root, as in CI; never `playwright install`).
$(DOCS_STAMP): $(SETUP_STAMP) tools/build_docs.py tools/docs_render.py
	$(PY) tools/build_docs.py --fetch-assets >/dev/null
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "$(CHROMIUM) is missing: install Debian's chromium (apt-get install -y chromium) for the browser tests"; fi; \
	fi
	touch $@

setup: $(SETUP_STAMP) $(DOCS_STAMP)

sync: setup
	$(PY) tools/check_sync.py

# The notebooks are the test suite: nbdev_test runs them first, several pages per worker process as our users run it
# (a page that leaks global state breaks the next one). pytest then runs tests/, which executes each page once more
# through tools/nbrun.py to keep its outputs for the website.
test: setup sync
	$(BIN)/nbdev_test --n_workers 2
	$(PY) -m pytest tests/ -ra

notebooks: setup
	$(PY) tools/nbrun.py --dest _executed

# Builds the site from this run's executed notebooks (no stale output), rewrites README.md and nbs/sidebar.yml from
# the notebooks (commit them if they changed) and ends by printing the path of _docs/index.html.
docs: setup notebooks
	env -u IN_TEST $(PY) tools/build_docs.py

clean:
	rm -rf _docs _proc _sphinx _executed _artifacts build dist *.egg-info .pytest_cache
