# The targets the README, CI (.ci/run) and the hooks call. `make demo` and `make test`
# install whatever is missing first, so they work on a fresh Debian machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
KAFKA_STAMP := infra/kafka/target/libs/.stamp
VENV_STAMP := $(VENV)/.stamp
PYTEST_ARGS ?=

.PHONY: deps system demo test check lint typecheck unit bench bench-scale clean lock

deps: system $(KAFKA_STAMP) $(VENV_STAMP)

system:
	@bash infra/install-system.sh

# Kafka broker jars from Maven Central, pinned by infra/kafka/pom.xml; cached in ~/.m2.
$(KAFKA_STAMP): infra/kafka/pom.xml
	cd infra/kafka && mvn -q -B dependency:copy-dependencies -DoutputDirectory=target/libs -DincludeScope=runtime
	touch $@

# The project and its tools in .venv, at the versions constraints.txt pins.
$(VENV_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: deps
	$(BIN)/mypy app streams projections infra tests bench

unit: deps
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Lint, type check and the whole suite (unit, functional, integration, end to end), measuring
# branch coverage in the tests and in every service process they start (pyproject's
# [tool.coverage.*]); prints the per-module report and the pages' scripts' coverage, and fails
# when streams/, projections/, app/ or app/static/*.js is under 85%.
test: lint typecheck
	rm -f .coverage .coverage.*
	$(BIN)/pytest --cov --cov-report=term-missing $(PYTEST_ARGS)
	$(BIN)/python -m tests.support.coverage_gate

check: test

demo: deps
	$(BIN)/auction-timer demo

bench: deps
	$(BIN)/python -m bench.run_all

bench-scale: deps
	$(BIN)/python -m bench.run_all scale

# Re-pin constraints.txt from a fresh resolution of pyproject's ranges.
lock:
	rm -rf /tmp/auction-timer-lock && $(PYTHON) -m venv /tmp/auction-timer-lock
	/tmp/auction-timer-lock/bin/pip install -q '.[dev]'
	/tmp/auction-timer-lock/bin/pip freeze --exclude auction-timer > constraints.txt
	rm -rf build *.egg-info

clean:
	rm -rf $(VENV) infra/kafka/target .data .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* .coverage-js
