# The README's two commands (and the rest: `make help`). Each sets up .venv from the pinned requirements when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= production
OUT    ?= build/$(STACK)
ENGINE := tests/e2e/engine/build.sh
RUNBOOKS := docs/operations.md
# make mutate: at most this long (mutmut keeps what it measured in mutants/, and a second run goes on
# from there); MUTANTS narrows it to names like 'policy.rules*' or 'components.settings*'.
MUTATE_SECONDS ?= 3600
MUTANTS ?=

.PHONY: help render test lint bench clean engine apiserver e2e promtool mutate
# Plain `make` explains itself instead of quietly building the venv.
.DEFAULT_GOAL := help

## help: this list and the runbooks (plain `make` shows it too)
help:
	@echo "usage: make <target> [STACK=<stack>] [OUT=<dir>]   stacks: $(sort $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml)))"
	@awk '/^## [a-z0-9]+: / { name = $$2; sub(/:$$/, "", name); text = $$0; sub(/^## [a-z0-9]+: /, "", text); \
		printf "  make %-9s %s\n", name, text }' $(firstword $(MAKEFILE_LIST))
	@echo "runbooks, in $(RUNBOOKS) (each a heading with numbered steps):"
	@awk '/^## / { inside = ($$0 == "## Runbooks") } inside && /^### / { sub(/^### /, ""); print "  " $$0 }' $(RUNBOOKS)

# The first run says what it installs and how long that takes, then shows pip's progress.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@if test -x $(BIN)/python; then echo "make: requirements*.txt changed: updating $(VENV) (pip's progress below)"; \
	else echo "make: first run: installing into $(VENV) the pinned Pulumi SDK and providers (kubernetes, command, random), pulumi-policy and the test tools (pytest, hypothesis, ruff, mypy, shellcheck, schema validators); about 1-3 minutes, once (pip's progress below)"; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

## render: the whole desired state of STACK, offline, into OUT; exit 0 valid, 1 invalid, 2 bad config
render: $(VENV)/.installed
	$(BIN)/python -m render --stack $(STACK) --out $(OUT)

## test: lint, types and the whole test suite (with promtool, built first and cached), on every core
test: lint promtool
	SOPHIA_PROMTOOL="$$($(ENGINE) --promtool)" $(BIN)/python -m pytest -n auto --dist worksteal

## engine: the Pulumi CLI, language host, plugins and ESC evaluator, from the module proxy and ../shared/third_party
engine:
	$(ENGINE) engine

## apiserver: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok, built the same way
apiserver:
	$(ENGINE) apiserver

## promtool: Prometheus's promtool, of the version the monitoring stack deploys, built the same way
# A built promtool is used as it is, without build.sh's lock: `make test` never waits behind an e2e build.
promtool:
	@bin="$$($(ENGINE) --promtool)"; test -f "$${bin%/bin/promtool}/ok" || $(ENGINE) promtool

## e2e: the whole program through the real engine: test machines over SSH, a real API server
e2e: $(VENV)/.installed engine apiserver
	SOPHIA_E2E_BIN="$$($(ENGINE) --bin-dir)" $(BIN)/python -m pytest -m e2e tests/e2e

## lint: ruff, ruff format and mypy (strict on components/, render/ and policy/)
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: time `make render`, render production and stacks with 10x and 50x its machines and services, and (e2e binaries built) time `up` through the real engine; write docs/benchmarks.md
bench: $(VENV)/.installed
	$(BIN)/python -m render.bench --write docs/benchmarks.md

## mutate: mutation testing (mutmut) of the settings, policies and alerts; slow, in neither CI nor make test
# SOPHIA_MUTATION_MEMO: the renders' memos a mutant cannot change (tests/mutation.py), kept with the results;
# the tests run in mutants/, from where ../shared is not the charts' folder.
mutate: $(VENV)/.installed promtool
	SOPHIA_PROMTOOL="$$($(ENGINE) --promtool)" SOPHIA_MUTATION_MEMO="$(CURDIR)/mutants/.memo" \
		SOPHIA_CHART_PACKAGES="$(abspath $(CURDIR)/../shared/third_party/charts)" \
		timeout $(MUTATE_SECONDS) nice $(BIN)/mutmut run --max-children 2 $(MUTANTS) || test $$? -eq 124
	$(BIN)/mutmut results

## clean: remove build/ and the tools' caches
clean:
	rm -rf build mutants .mypy_cache .ruff_cache .pytest_cache .hypothesis
