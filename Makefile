# recops: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# test processes (pytest-xdist): most of the suite waits on servers and subprocesses it
# starts, so two workers keep both CI cores busy; whole files go to one worker (--dist
# loadfile) so module-scoped servers are started once. TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2

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
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

## lint: ruff (lint + format check) and mypy over components flows services (pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf .recops .pytest_cache
