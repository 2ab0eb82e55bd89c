# Two commands: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The whole dependency tree, pinned with hashes; `make lock` refreshes it from requirements*.txt.
LOCK := requirements.lock

.PHONY: run test format lint bench soak lock clean

# Reinstall only when the lock changes. --require-hashes: nothing outside the lock, nothing altered.
# The robot client library is a package of its own (clients/python), installed editable and without
# dependencies or build isolation (its dependency and setuptools are in the lock) so that the simulator and `python -m fleet_client` use the
# checkout; it is not in the lock, which pins PyPI.
$(STAMP): $(LOCK) clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e clients/python
	$(BIN)/python -m pip check
	touch $@

# Local use: debug on unless DJANGO_DEBUG says otherwise (it is off by default everywhere else).
run bench soak: export DJANGO_DEBUG ?= 1

run: $(STAMP)
	$(BIN)/python manage.py runfleet $(ARGS)

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

# Resolve requirements-dev.txt (which includes requirements.txt) into the hashed lock.
lock: $(STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
		--strip-extras --no-emit-find-links --no-emit-index-url --output-file $(LOCK) requirements-dev.txt

clean:
	rm -rf $(VENV) var
