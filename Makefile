# The two commands of the README: `make run` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8090
DATA_DIR ?= data
# the tests run with the venv's bin first on PATH: the servers they start find git-lfs there
TEST_ENV := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: run test lint typecheck unit integration e2e bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

# git-lfs for the Git LFS tests, without root: the system's when installed, else Debian's
# package (`apt-get download` + `dpkg-deb -x` need no root) unpacked into the venv
$(BIN)/git-lfs: | $(BIN)/python
	@if system=$$(command -v git-lfs); then ln -sf "$$system" $@; exit 0; fi; \
	command -v apt-get >/dev/null || { echo "git-lfs is missing: install it (https://git-lfs.com)" >&2; exit 1; }; \
	target="$(abspath $@)"; tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	apt-get download -q git-lfs && dpkg-deb -x git-lfs_*.deb root && \
	install -m 755 root/usr/bin/git-lfs "$$target" && "$$target" version

# Debian's Chromium for the dashboard's browser test (tests/e2e/test_dashboard.py, driven by
# Playwright without `playwright install`): installed when missing, as root, quietly
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "$@ is missing: install Chromium there" >&2; exit 1; }
	@[ "$$(id -u)" = 0 ] || { echo "chromium is missing: run 'sudo apt-get install chromium'" >&2; exit 1; }
	@apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

## run: install and start the server on the embedded defaults (port 8090, state in ./data)
run: $(VENV)/.installed-run
	$(BIN)/forestflow serve --port $(PORT) --data-dir $(DATA_DIR)

## test: install the test dependencies, then lint, type-check and run the whole suite
test: $(VENV)/.installed-test $(BIN)/git-lfs $(CHROMIUM)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy
	$(TEST_ENV) $(BIN)/pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/unit

integration: $(VENV)/.installed-test $(BIN)/git-lfs
	$(TEST_ENV) $(BIN)/pytest -q tests/integration

e2e: $(VENV)/.installed-test $(BIN)/git-lfs $(CHROMIUM)
	$(TEST_ENV) $(BIN)/pytest -q tests/e2e

## bench: ForestFlow against bare handlers, MLServer, KServe, LitServe and MLflow (~20 min);
## writes docs/performance.md. BENCH_ARGS='--only KServe --duration 5' narrows a run.
bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

## soak: ForestFlow under full load for 5 minutes, memory sampled every 30 s (SOAK_ARGS='--log NONE')
soak: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
