# Two commands for a new user (see README):
#   make run    set up .venv and run the whole series (notebooks 01 -> 05) on the bundled data
#   make test   set up .venv and run the tests (unit tests + every notebook under nbval, quick mode)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup test-fast lint icevision

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

# The C letterbox kernel the runtime uses when it is built (helpers.build.native; rebuilt when its source changes).
setup: $(VENV)/.installed
	$(BIN)/python -m helpers native

run: setup
	$(BIN)/python -m helpers run-all $(ARGS)

# Tests in a random order (pytest-randomly: none may depend on another's state), then the notebooks,
# whose cells run in order.
test: setup
	HELPERS_QUICK=1 $(BIN)/python -m pytest tests $(ARGS)
	HELPERS_QUICK=1 $(BIN)/python -m pytest notebooks --nbval-lax -p no:randomly $(ARGS)

# The development loop (not one of the two user commands): no training, no zip builds, no notebooks,
# no lane; about a minute.
test-fast: setup
	HELPERS_QUICK=1 $(BIN)/python -m pytest tests -m "not slow and not icevision" -q $(ARGS)

# Lint, formatting and the package's layering, as CI checks them (config: [tool.ruff] and
# [tool.importlinter] in pyproject.toml).
lint: setup
	$(BIN)/ruff check helpers tests envs notebooks
	$(BIN)/ruff format --check helpers tests envs notebooks
	$(BIN)/lint-imports

# The IceVision lane (Python 3.8; not one of the two user commands): build .venv-icevision, run the
# blog's recipe, print the parity report. Its tests (marker `icevision`) are part of `make test`.
icevision: setup
	$(BIN)/python -m helpers icevision $(ARGS)
