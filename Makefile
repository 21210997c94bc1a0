# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/facefold: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/facefold  ## create .venv and install facefold with its test tools

demo: setup  ## SYNTHETIC-face cross-validation, a few minutes on 2 CPU cores
	$(BIN)/facefold demo --out runs/demo

test: setup  ## the whole test suite (skips real-data tests when ../shared is absent)
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check facefold tests

clean:
	rm -rf $(VENV) runs
