# The README's two commands. Each sets up .venv from the pinned requirements when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= production
OUT    ?= build/$(STACK)

.PHONY: render test lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## render: the whole desired state of STACK, offline, into OUT; exit 0 valid, 1 invalid, 2 bad config
render: $(VENV)/.installed
	$(BIN)/python -m render --stack $(STACK) --out $(OUT)

## test: lint, types and the whole test suite
test: lint
	$(BIN)/python -m pytest

## bench: render production and stacks with 10x and 50x its machines and services; times and critical path
bench: $(VENV)/.installed
	$(BIN)/python -m render.bench

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache .hypothesis
