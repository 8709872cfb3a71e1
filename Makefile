# One virtual environment in .venv; torch is pinned to the CPU build this project is tested with.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: setup demo test lint bench clean

$(BIN)/dualenc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/dualenc

demo: setup
	$(BIN)/dualenc demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/dialogs_quality.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
