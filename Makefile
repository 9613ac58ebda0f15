# Two commands do all the set-up on a fresh machine:
#   make run    create .venv if absent, install, build the default model, run the main job
#   make test   create .venv if absent, install with test extras, run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/foolbench run

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff format --check foolbench tests benchmarks
	$(BIN)/ruff check foolbench tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/peer_pyribs.py
	$(BIN)/python benchmarks/reach.py
	$(BIN)/python benchmarks/cppn_size.py
	$(BIN)/python benchmarks/readme_figures.py

clean:
	rm -rf runs .pytest_cache
