# recops: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test install lint bench-data clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the full retrain flow on the bundled synthetic dataset (or ARGS="--data PATH --format F")
run: $(STAMP)
	$(BIN)/recops run $(ARGS)

## test: the whole test suite (slow and service tests included; they skip with a reason where they cannot run)
test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

## lint: ruff (lint + format check) and mypy over components flows services (pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf .recops .pytest_cache
