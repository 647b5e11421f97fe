# The README's two commands. Each sets up .venv from the pinned requirements when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= production
OUT    ?= build/$(STACK)
ENGINE := tests/e2e/engine/build.sh

.PHONY: render test lint bench clean engine apiserver e2e

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

## engine: the Pulumi CLI and the kubernetes provider, built from the Go module proxy into ~/.cache (seconds when cached)
engine:
	$(ENGINE) engine

## apiserver: kube-apiserver, kube-controller-manager and etcd, built the same way
apiserver:
	$(ENGINE) apiserver

## e2e: the Sophia layer through the real engine against a real API server on 127.0.0.1 (tests/e2e)
e2e: $(VENV)/.installed engine apiserver
	SOPHIA_E2E_BIN="$$($(ENGINE) --bin-dir)" $(BIN)/python -m pytest -m e2e tests/e2e

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache .hypothesis
