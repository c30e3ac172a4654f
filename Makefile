# Two commands for a new user (see README):
#   make run    set up .venv and run the whole series (notebooks 01 -> 05) on the bundled data
#   make test   set up .venv and run the tests (unit tests + every notebook under nbval, quick mode)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup test-fast lint icevision lock web mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs from the committed lock (pip-compile of pyproject.toml's `all` extra for CPython 3.11 on Linux
# x86_64), every package pinned with its sha256 hashes, pip and setuptools included; then the project
# itself, editable, without dependencies and without a build environment (setuptools is in the lock), so
# nothing is installed that the lock does not name. Editing the lock (or pyproject.toml) reinstalls.
LOCK := requirements.lock

$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Regenerate the lock after editing [project.optional-dependencies] (commit both; tests/test_project.py
# checks they agree). Pins already in the lock are kept where the ranges allow; `make lock ARGS=--upgrade`
# takes the newest releases the ranges allow, `ARGS="--upgrade-package NAME"` one of them. Hashes come
# from the index for every file of the pinned release (hashing the local torch wheels takes a while).
# Resolved by the venv's pip, on Python 3.11, Linux x86_64: on another platform, lock on this one.
lock: $(VENV)/.installed
	cp $(LOCK) $(LOCK).tmp
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra lambda --extra train --extra deploy --extra dev --generate-hashes \
		--allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links \
		--output-file $(LOCK).tmp $(ARGS) pyproject.toml
	{ printf '# %s\n' \
		'requirements.lock: every package that pyproject.toml'"'"'s `all` extra needs, pinned with sha256 hashes,' \
		'for CPython 3.11 on Linux x86_64 (glibc), where it was resolved: markers for other platforms were' \
		'not evaluated, and torch is the Linux x86_64 CUDA build (the nvidia-* pins are its libraries).' \
		'Install: pip install --require-hashes -r requirements.lock' \
		'         pip install --no-deps --no-build-isolation -e .      (make setup does both)' \
		'Regenerate with `make lock` after editing pyproject.toml, never by hand; tests/test_project.py' \
		'checks that it satisfies every requirement of the extras.'; \
	  cat $(LOCK).tmp; } > $(LOCK)
	rm $(LOCK).tmp

# The C letterbox kernel the runtime uses when it is built (helpers.build.native; rebuilt when its source changes).
setup: $(VENV)/.installed
	$(BIN)/python -m helpers native

run: setup
	$(BIN)/python -m helpers run-all $(ARGS)

# Tests in a random order (pytest-randomly: none may depend on another's state) over WORKERS processes
# (pytest-xdist; the tests of the trained model share a worker: tests/conftest.py), then the IceVision
# lane on its own (beside the other tests its Python 3.8 training died of SIGBUS once: decisions.md),
# then the notebooks, whose cells run in order.
WORKERS ?= 2
test: setup web
	HELPERS_QUICK=1 $(BIN)/python -m pytest tests -m "not icevision" -n $(WORKERS) --dist loadgroup $(ARGS)
	HELPERS_QUICK=1 $(BIN)/python -m pytest tests -m icevision $(ARGS)
	HELPERS_QUICK=1 $(BIN)/python -m pytest notebooks --nbval-lax -p no:randomly $(ARGS)

# ONNX Runtime Web for the in-browser detector (python -m helpers web), from web/package-lock.json
# (pinned, with integrity hashes) into web/node_modules; reinstalled when the lock changes.
web: web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund --ignore-scripts

# The development loop (not one of the two user commands): no training, no zip builds, no notebooks,
# no lane, no browser; under two minutes on 2 CPUs.
test-fast: setup
	HELPERS_QUICK=1 $(BIN)/python -m pytest tests -m "not slow and not icevision" -n $(WORKERS) -q $(ARGS)

# The mutation score of the runtime's decision code (not one of the two user commands, not part of
# `make test`; about 25 minutes on 2 CPUs): mutmut mutates the modules [tool.mutmut] in pyproject.toml
# names, in a copy under mutants/, and runs for each mutant the fast tests that reach the mutated
# function. Lists every mutant not killed, then fails below 90% killed (a timeout counts as killed: the
# tests noticed). `make mutation JOBS=4` on a bigger machine.
JOBS ?= 2
mutation: setup
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(JOBS)
	$(BIN)/mutmut results
	$(BIN)/mutmut export-cicd-stats > /dev/null
	$(BIN)/python -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); k = s["killed"] + s["timeout"]; \
		print("mutation score: %d of %d mutants killed (%.1f%%; %d timeouts, %d survived, %d without tests)" % (k, s["total"], 100 * k / s["total"], s["timeout"], s["survived"], s["no_tests"])); \
		raise SystemExit(k < 0.9 * s["total"])'

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
