# Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-dev

.PHONY: help demo test lint format type bench bench-postgres bench-store clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(INSTALLED)  ## Chat in one process, recall in a new one (offline: local embedder, echo model).
	$(BIN)/python cookbook/demo.py

test: lint type  ## Lint, type-check and run the whole test suite.
	$(BIN)/pytest

lint: $(INSTALLED)  ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)  ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

type: $(INSTALLED)  ## mypy --strict on the package.
	$(BIN)/mypy

bench: $(INSTALLED)  ## Benchmark against langchain_community's FAISS (N=100,000).
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/bench_vectorstore.py

bench-store: $(INSTALLED)  ## PersistentMemoryStore against LangGraph's InMemoryStore and SqliteStore (about 2 minutes).
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/bench_store.py --out bench_store.json

bench-postgres: $(INSTALLED)  ## PostgreSQL + pgvector against the directory store at 1,000,000 memories (about an hour).
	$(BIN)/python benchmarks/bench_postgres.py --rows 1000000 --out bench_postgres.json

clean:  ## Remove the virtual environment and caches.
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
