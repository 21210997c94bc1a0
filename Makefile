# The two commands a newcomer needs:  make demo   and   make test
#   make demo  creates .venv with facefold and only what it needs, then runs the demo
#   make test  adds the test tools and every extra to the same .venv, then runs the suite
# facefold needs Python 3.11 exactly (its TensorFlow); python3.11 is used when it is on PATH.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test test-all lint clean

$(BASE): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "facefold needs Python 3.11; $(PYTHON) --version says: $$($(PYTHON) --version 2>&1)" >&2; \
	  echo "Install Python 3.11 (e.g. apt install python3.11-venv, or pyenv install 3.11)," >&2; \
	  echo "then: rm -rf $(VENV) && make $(or $(MAKECMDGOALS),demo) PYTHON=python3.11" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV): $(BASE)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BASE)  ## SYNTHETIC-face cross-validation, a few minutes on 2 CPU cores
	$(BIN)/facefold demo --out runs/demo

# One pytest worker per core (at most 4), each taking whole files, so that a file's
# module-scoped fixtures are built once. `make test` leaves out the tests marked slow (longer
# end-to-end runs) unless CI is set, as it is in CI; `make test-all` runs them too.
PYTEST := $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile
test: $(DEV)  ## the fast tests (skips real-data tests when ../shared is absent)
	$(PYTEST) $(if $(CI),,-m "not slow")

test-all: $(DEV)  ## every test, the slow end-to-end ones included (what CI runs)
	$(PYTEST)

lint: $(DEV)
	$(BIN)/ruff check facefold tests

clean:
	rm -rf $(VENV) runs
