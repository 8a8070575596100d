# Two commands for a fresh machine with only Python:
#   make run   serve the broker on its embedded defaults (SQLite + in-process state), in
#              development mode (a demo identity provider at /dev/signin);
#              ARGS="--port 9000" passes flags to broker serve
#   make test  every test, plus ruff and mypy (on two cores: pytest-xdist, one worker per
#              module file, so a module's fixtures and whole-surface bookkeeping stay together)
#   make fast  the inner loop: ruff and the unit tests (ARGS="tests/..." runs those instead)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test fast typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/broker serve --dev $(ARGS)

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/ruff check broker tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile

fast: $(STAMP)
	$(BIN)/ruff check broker tests benchmarks examples
	$(BIN)/python -m pytest -q $(or $(ARGS),tests/unit)

# The benchmarks also need the bench extra (moto's server); `make test` does not install it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/caller_identity.py $(ARGS)
	$(BIN)/python benchmarks/assume_role.py $(ARGS)
	$(BIN)/python benchmarks/policy_decisions.py
	$(BIN)/python benchmarks/assume_role_with_saml.py $(ARGS)
	$(BIN)/python benchmarks/assume_role_with_web_identity.py $(ARGS)
	$(BIN)/python benchmarks/in_process.py
	$(BIN)/python benchmarks/json_reader.py
	$(BIN)/python benchmarks/password_signin.py
	$(BIN)/python benchmarks/role_credentials.py $(ARGS)
	$(BIN)/python benchmarks/nested_groups.py $(ARGS)
	$(BIN)/python benchmarks/sustained_load.py
	$(BIN)/python benchmarks/estate_growth.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
