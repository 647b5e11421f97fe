# The README's two commands. Each sets up .venv from the pinned requirements when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= production
OUT    ?= build/$(STACK)
ENGINE := tests/e2e/engine/build.sh
# make mutate: at most this long (mutmut keeps what it measured in mutants/, and a second run goes on
# from there); MUTANTS narrows it to names like 'policy.rules*' or 'components.settings*'.
MUTATE_SECONDS ?= 3600
MUTANTS ?=

.PHONY: help render test lint bench clean engine apiserver e2e mutate
# Plain `make` explains itself instead of quietly building the venv.
.DEFAULT_GOAL := help

## help: this list (plain `make` shows it too)
help:
	@echo "usage: make <target> [STACK=<stack>] [OUT=<dir>]   stacks: $(sort $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml)))"
	@awk '/^## [a-z0-9]+: / { name = $$2; sub(/:$$/, "", name); text = $$0; sub(/^## [a-z0-9]+: /, "", text); \
		printf "  make %-9s %s\n", name, text }' $(firstword $(MAKEFILE_LIST))

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

## engine: the Pulumi CLI and kubernetes provider from the Go module proxy, cached in ~/.cache
engine:
	$(ENGINE) engine

## apiserver: kube-apiserver, kube-controller-manager and etcd, built the same way
apiserver:
	$(ENGINE) apiserver

## e2e: the Kubernetes layer through the real engine against a real API server on 127.0.0.1
e2e: $(VENV)/.installed engine apiserver
	SOPHIA_E2E_BIN="$$($(ENGINE) --bin-dir)" $(BIN)/python -m pytest -m e2e tests/e2e

## lint: ruff, ruff format and mypy (strict on components/, render/ and policy/)
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: time `make render`, and render production and stacks with 10x and 50x its machines and services
bench: $(VENV)/.installed
	$(BIN)/python -m render.bench

## mutate: mutation testing (mutmut) of the settings, policies and alerts; slow, in neither CI nor make test
mutate: $(VENV)/.installed
	timeout $(MUTATE_SECONDS) nice $(BIN)/mutmut run --max-children 2 $(MUTANTS) || test $$? -eq 124
	$(BIN)/mutmut results

## clean: remove build/ and the tools' caches
clean:
	rm -rf build mutants .mypy_cache .ruff_cache .pytest_cache .hypothesis
